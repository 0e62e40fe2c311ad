"""Results keyed by a hash of their configuration, so re-running a chapter does not retrain.

An entry is two files in :func:`cache_dir`:

- ``<key>.npz``: the arrays, written with ``np.savez`` (no pickle; read back with
  ``allow_pickle=False``, so loading an entry cannot execute code);
- ``<key>.json``: the metadata, the configuration, the shapes and dtypes of the arrays,
  the SHA-256 of the ``.npz`` bytes and the SHA-256 of the record itself
  (``record_sha256``, over the canonical JSON of every other field).

Each file is written to a temporary name and moved into place with ``os.replace``; the
JSON is written last and is the commit marker. An entry whose JSON is unreadable or fails
its own checksum (a truncated or hand-edited file, even one that still parses), whose
``.npz`` is missing or whose checksum does not match (a crash, a full disk, a hand edit)
is deleted and recomputed, quietly (``logging.info``).

The key (:func:`config_key`) is the SHA-256 of the configuration's canonical JSON together
with what else decides the result: ``nrc_utils.__version__``, :func:`code_fingerprint`
(the source of the modules that compute results), the torch version and
``torch.get_num_threads()`` (the thread count changes the order of floating-point sums,
and so the trained weights); training puts the device type into its configuration
(``train.cache_key``). Change a parameter, the code, torch or the thread count, and the
result is recomputed.

The folder must be writable: :func:`check_cache_dir` proves it (and training calls it
before it starts), refusing with a :class:`CacheDirError` that says what to do. A folder
that stops being writable later does not lose results: :func:`load` does not fail when a
corrupt entry cannot be deleted, and :func:`cached` (like ``train.train`` and
``ensemble.train_ensemble``) returns what it computed when the save is refused
(:func:`try_save`, logged once per folder at INFO).
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

import nrc_utils

__all__ = ["CODE_MODULES", "CacheDirError", "cache_dir", "cached", "check_cache_dir", "code_fingerprint",
           "config_key", "discard", "environment", "load", "save", "try_save"]

log = logging.getLogger(__name__)

_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")

#: The modules of ``nrc_utils`` whose source decides a cached result (:func:`code_fingerprint`):
#: training (``train``, ``ensemble``, and ``stationary``, which polishes every MLP), what it calls
#: (``models``, ``losses``, ``gradients``, ``device``), the data it is trained on (``data``), this
#: module (the format of an entry) and
#: ``__init__`` (the version). Modules that only measure or report a trained network
#: (``spectral``, ``collapse``, ``truncation``, ``report``, ...) are left out, so editing them
#: does not retrain the book; a computation cached with :func:`cached` that depends on one of
#: them puts a version of its own into its configuration.
CODE_MODULES = ("__init__.py", "cache.py", "data.py", "device.py", "ensemble.py", "gradients.py", "losses.py",
                "models.py", "stationary.py", "train.py")


class CacheDirError(ValueError):
    """The cache folder cannot be used; the one-line message says which folder, why and what to do."""


def _default_dir() -> Path:
    return Path(__file__).resolve().parents[1] / ".cache" / "nrc"


def cache_dir() -> Path:
    """The cache folder: ``$NRC_CACHE_DIR`` when set, else ``<repo>/.cache/nrc``
    (git-ignored). It is created by :func:`check_cache_dir` or on the first :func:`save`."""
    env = os.environ.get("NRC_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return _default_dir()


_checked: set[Path] = set()


def _blocking_file(folder: Path) -> Path | None:
    """The nearest existing ancestor of ``folder`` (or ``folder`` itself) when it is not a folder."""
    for p in (folder, *folder.parents):
        if p.exists() or p.is_symlink():
            return None if p.is_dir() else p
    return None


def check_cache_dir() -> Path:
    """The cache folder (:func:`cache_dir`), created if needed and proved writable; else :class:`CacheDirError`.

    Writability is proved by writing and removing a probe file, so a read-only folder or
    file system is caught whoever runs (``os.access`` says yes to root). The message is one
    line, e.g. ``NRC_CACHE_DIR=/x is a file, not a folder; point NRC_CACHE_DIR at a writable
    folder, or unset it to use <repo>/.cache/nrc``. A folder that passed is remembered for
    the rest of the process (the check costs a file write), so calling this before every
    training run is cheap. ``train.train`` and ``ensemble.train_ensemble`` call it before
    they train whenever they cache; so does :func:`cached`.
    """
    folder = cache_dir()
    if folder in _checked:
        return folder
    env = os.environ.get("NRC_CACHE_DIR")
    if env:
        what = f"NRC_CACHE_DIR={env}" + ("" if Path(env) == folder else f" ({folder})")
        fix = f"point NRC_CACHE_DIR at a writable folder, or unset it to use {_default_dir()}"
    else:
        what = f"the cache folder {folder} (the default: NRC_CACHE_DIR is unset)"
        fix = "set NRC_CACHE_DIR to a writable folder"
    blocker = _blocking_file(folder)
    if blocker is not None:
        kind = "a broken symbolic link" if not blocker.exists() else "a file, not a folder"
        if blocker == folder:
            raise CacheDirError(f"{what} is {kind}; {fix}")
        raise CacheDirError(f"{what} cannot be created: {blocker} is {kind}; {fix}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CacheDirError(f"{what} cannot be created ({_reason(err)}); {fix}") from None
    if not folder.is_dir():
        raise CacheDirError(f"{what} is not a folder; {fix}")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe.", suffix=".tmp")
    except OSError as err:
        raise CacheDirError(f"{what} is not writable ({_reason(err)}); {fix}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(b"nrc")
        os.unlink(probe)
    except OSError as err:
        raise CacheDirError(f"{what} is not writable (a file written there cannot be written or removed: "
                            f"{_reason(err)}); {fix}") from None
    _checked.add(folder)
    return folder


def _reason(err: OSError) -> str:
    """``Permission denied`` or the like, without the path (the message names the folder already)."""
    return err.strerror or (errno.errorcode.get(err.errno, "") if err.errno else "") or type(err).__name__


_PACKAGE_DIR = Path(__file__).resolve().parent
_fingerprints: dict[tuple[Path, tuple[str, ...]], str] = {}


def code_fingerprint(modules: tuple[str, ...] = CODE_MODULES) -> str:
    """SHA-256 (hex) of the source bytes of ``modules`` (file names in ``nrc_utils/``, by default
    :data:`CODE_MODULES`), each hashed with its name and length.

    It enters every cache key (:func:`config_key`), so a result computed by other training code
    is never served, whatever ``nrc_utils.__version__`` says. The files are read once per
    process (the first call), which is the code the process runs unless a module is edited and
    reloaded after that.
    """
    names = tuple(modules)
    memo = (_PACKAGE_DIR, names)
    if memo not in _fingerprints:
        h = hashlib.sha256()
        for name in names:
            source = (_PACKAGE_DIR / name).read_bytes()
            h.update(f"{name}\0{len(source)}\0".encode())
            h.update(source)
        _fingerprints[memo] = h.hexdigest()
    return _fingerprints[memo]


def environment() -> dict[str, Any]:
    """What besides the configuration decides a result and enters its key: the package version,
    :func:`code_fingerprint`, the torch version and ``torch.get_num_threads()``."""
    return {"nrc_utils": nrc_utils.__version__, "code": code_fingerprint(), "torch": torch.__version__,
            "threads": torch.get_num_threads()}


def _canonical(obj: Any, where: str) -> Any:
    """``obj`` as plain JSON data: dicts with str keys, lists, str, int, float, bool, None.

    Tuples become lists; numpy scalars and arrays, torch tensors, dtypes, devices and
    paths their Python equivalents. Floats keep their exact value (JSON writes
    ``repr(float)``, which round-trips), so ``1`` and ``1.0`` are different values.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj)
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(f"{where} has the key {k!r} of type {type(k).__name__}; use str keys")
            out[k] = _canonical(v, f"{where}.{k}")
        return out
    if isinstance(obj, (list, tuple)):
        return [_canonical(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return _canonical(obj.tolist(), where)
    if isinstance(obj, (torch.dtype, torch.device)):
        return str(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(
        f"{where} is a {type(obj).__name__}, which has no canonical JSON form; "
        "use dicts, lists, tuples, str, int, float, bool, None or numpy scalars"
    )


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def config_key(config: Mapping) -> str:
    """SHA-256 (hex) of ``{"config": config, **environment()}`` as canonical JSON: sorted keys,
    no spaces, tuples as lists, exact floats (see module docstring). :func:`environment` adds
    the package version, :func:`code_fingerprint`, the torch version and the thread count."""
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a mapping (a dict of parameters), got {type(config).__name__}")
    payload = {"config": _canonical(config, "config"), **environment()}
    return hashlib.sha256(_dumps(payload).encode("ascii")).hexdigest()


def _to_numpy(name: str, value: Any) -> np.ndarray:
    """One array to store: a numpy array (torch tensors detached and moved to the CPU)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.dtype == torch.bfloat16:
            value = value.to(torch.float32)  # numpy has no bfloat16; the widening is exact
        value = value.numpy()
    array = np.asarray(value)
    if array.dtype.hasobject:
        raise ValueError(
            f"array {name!r} has dtype {array.dtype}, which needs pickle; the cache stores numeric "
            "arrays only: convert it to a numeric array or put it in meta"
        )
    return array


def _check_name(kind: str, name: Any) -> None:
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name):
        raise ValueError(f"{kind} {name!r} is not a safe file name; use letters, digits, '_', '.' and '-'")


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then ``os.replace`` it there."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            Path(tmp).unlink(missing_ok=True)
        except OSError:
            pass  # a folder that refused the write may refuse the removal too; the error that counts is raised
        raise


def _record_sha256(record: Mapping) -> str:
    """SHA-256 of the canonical JSON of ``record`` without its ``record_sha256`` field."""
    rest = {k: v for k, v in record.items() if k != "record_sha256"}
    return hashlib.sha256(_dumps(rest).encode("ascii")).hexdigest()


def save(
    key: str,
    arrays: Mapping[str, np.ndarray | torch.Tensor],
    meta: Mapping,
    config: Mapping | None = None,
) -> None:
    """Store ``arrays`` and ``meta`` (JSON data) under ``key`` in :func:`cache_dir`.

    Writes ``<key>.npz`` then ``<key>.json`` (which holds ``meta``, ``config``, the array
    shapes and dtypes, the :func:`environment`, the SHA-256 of the ``.npz`` and the SHA-256
    of the record), each atomically. Object arrays are refused (they would need pickle). A
    folder that refuses the write raises ``OSError``; :func:`try_save` logs it instead.
    """
    _check_name("key", key)
    stored = {}
    for name, value in arrays.items():
        _check_name("array name", name)
        stored[name] = _to_numpy(name, value)
    record = {
        "key": key,
        "nrc_utils": nrc_utils.__version__,
        "environment": environment(),
        "config": None if config is None else _canonical(config, "config"),
        "meta": _canonical(meta, "meta"),
        "arrays": {n: {"shape": list(a.shape), "dtype": a.dtype.str} for n, a in stored.items()},
    }
    buffer = io.BytesIO()
    np.savez(buffer, **stored)
    blob = buffer.getvalue()
    record["npz_sha256"] = hashlib.sha256(blob).hexdigest()
    record["record_sha256"] = _record_sha256(record)
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    _write_atomic(folder / f"{key}.npz", blob)
    _write_atomic(folder / f"{key}.json", _dumps(record).encode("ascii"))


_refusing_folders: set[Path] = set()


def try_save(
    key: str,
    arrays: Mapping[str, np.ndarray | torch.Tensor],
    meta: Mapping,
    config: Mapping | None = None,
) -> bool:
    """:func:`save`, but a folder that refuses the write (any ``OSError``: permissions, a
    read-only or full file system) is logged instead of raised; returns whether it was saved.

    The first refusal in a folder is logged at INFO, later ones at DEBUG. Bad input (an
    object array, meta that is not JSON data) still raises.
    """
    try:
        save(key, arrays, meta, config=config)
        return True
    except OSError as err:
        folder = cache_dir()
        level = logging.DEBUG if folder in _refusing_folders else logging.INFO
        _refusing_folders.add(folder)
        log.log(level, "cache folder %s refused to store entry %s (%s: %s); the computed result is used "
                "without being cached", folder, key, type(err).__name__, err)
        return False


def discard(key: str) -> None:
    """Remove the entry stored under ``key``; nothing happens when there is none.

    Raises ``OSError`` when the folder refuses the removal."""
    for suffix in (".json", ".npz"):
        (cache_dir() / f"{key}{suffix}").unlink(missing_ok=True)


def _discard(key: str, reason: str) -> None:
    log.info("cache entry %s is unusable (%s); it will be recomputed", key, reason)
    try:
        discard(key)
    except OSError as err:  # a read-only folder: the entry stays, and is detected again next time
        log.info("cache entry %s could not be deleted (%s: %s); it is ignored", key, type(err).__name__, err)


def load(key: str) -> tuple[dict[str, np.ndarray], dict] | None:
    """``(arrays, meta)`` stored under ``key``, or ``None`` when there is no entry.

    A corrupt or partial entry (unreadable JSON, a JSON record whose ``record_sha256`` does
    not match it, missing ``.npz``, ``.npz`` checksum mismatch, an archive
    ``np.load(allow_pickle=False)`` cannot read) is deleted and ``None`` is returned; when
    the folder refuses the deletion the entry is left there and ``None`` is returned all the
    same. An ``.npz`` without its JSON (a save in progress or interrupted) is left alone:
    the next :func:`save` overwrites it.
    """
    _check_name("key", key)
    folder = cache_dir()
    json_path, npz_path = folder / f"{key}.json", folder / f"{key}.npz"
    try:
        text = json_path.read_text(encoding="ascii")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        _discard(key, f"JSON unreadable: {err}")
        return None
    try:
        record = json.loads(text)
        ok = (
            isinstance(record, dict)
            and record.get("key") == key
            and isinstance(record.get("npz_sha256"), str)
            and isinstance(record.get("meta"), dict)
            and isinstance(record.get("arrays"), dict)
        )
    except ValueError:
        ok = False
    if not ok:
        _discard(key, "JSON is not a cache record")
        return None
    if record.get("record_sha256") != _record_sha256(record):
        _discard(key, "JSON checksum mismatch (truncated, edited or written by an older version)")
        return None
    try:
        blob = npz_path.read_bytes()
    except OSError as err:
        _discard(key, f"npz unreadable: {err}")
        return None
    if hashlib.sha256(blob).hexdigest() != record["npz_sha256"]:
        _discard(key, "npz checksum mismatch")
        return None
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except Exception as err:  # noqa: BLE001 - any failure to read the archive means: recompute
        _discard(key, f"npz unreadable: {err}")
        return None
    if sorted(arrays) != sorted(record["arrays"]):
        _discard(key, "npz does not hold the arrays the JSON lists")
        return None
    return arrays, record["meta"]


def cached(
    config: Mapping,
    compute: Callable[[], tuple[Mapping, Mapping]],
    enabled: bool = True,
) -> tuple[dict[str, np.ndarray], dict]:
    """``(arrays, meta)`` for ``config``: loaded from the cache, or ``compute()``d and saved.

    ``compute()`` returns ``(arrays, meta)``: a mapping of numpy arrays or torch tensors
    and a mapping of JSON data. What comes back is always what :func:`load` reads, numpy
    arrays and JSON-decoded meta (tuples become lists), so a hit and a miss return
    identical values. With ``enabled=False`` nothing is read or written, and the result
    is converted the same way. The key holds :func:`environment` but not the device: put
    the device into ``config`` when ``compute()`` depends on it.

    The folder is checked first (:func:`check_cache_dir`, which raises :class:`CacheDirError`
    before anything is computed); when it refuses the save later, the computed values are
    returned all the same (:func:`try_save`).
    """
    if not enabled:
        return _as_stored(*_call(compute))
    check_cache_dir()
    key = config_key(config)
    hit = load(key)
    if hit is not None:
        log.info("cache hit %s", key)
        return hit
    arrays, meta = _call(compute)
    if not try_save(key, arrays, meta, config=config):
        return _as_stored(arrays, meta)
    hit = load(key)
    if hit is None:
        # only a concurrent save of the same key can get here; the values are the same
        log.info("cache entry %s changed while it was read back; returning the computed values", key)
        return _as_stored(arrays, meta)
    return hit


def _as_stored(arrays: Mapping, meta: Mapping) -> tuple[dict[str, np.ndarray], dict]:
    """``(arrays, meta)`` converted exactly as :func:`save` then :func:`load` would."""
    stored = {name: _to_numpy(name, value) for name, value in arrays.items()}
    return stored, json.loads(_dumps(_canonical(meta, "meta")))


def _call(compute: Callable[[], tuple[Mapping, Mapping]]) -> tuple[Mapping, Mapping]:
    result = compute()
    if not (isinstance(result, tuple) and len(result) == 2 and all(isinstance(r, Mapping) for r in result)):
        raise TypeError("compute() must return a pair (arrays, meta) of mappings")
    return result
