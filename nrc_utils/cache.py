"""Results keyed by a hash of their configuration, so re-running a chapter does not retrain.

An entry is two files in :func:`cache_dir`:

- ``<key>.npz``: the arrays, written with ``np.savez`` (no pickle; read back with
  ``allow_pickle=False``, so loading an entry cannot execute code);
- ``<key>.json``: the metadata, the configuration, the shapes and dtypes of the arrays
  and the SHA-256 of the ``.npz`` bytes.

Each file is written to a temporary name and moved into place with ``os.replace``; the
JSON is written last and is the commit marker. An entry whose JSON is unreadable, whose
``.npz`` is missing or whose checksum does not match (a crash, a full disk, a hand edit)
is deleted and recomputed, quietly (``logging.info``).

The key is the SHA-256 of the configuration's canonical JSON together with
``nrc_utils.__version__`` (:func:`config_key`): change a parameter, or release a new
version of the package, and the result is recomputed.
"""

from __future__ import annotations

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

__all__ = ["cache_dir", "config_key", "save", "load", "cached"]

log = logging.getLogger(__name__)

_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")


def cache_dir() -> Path:
    """The cache folder: ``$NRC_CACHE_DIR`` when set, else ``<repo>/.cache/nrc``
    (git-ignored). It is created on the first :func:`save`."""
    env = os.environ.get("NRC_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[1] / ".cache" / "nrc"


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
    """SHA-256 (hex) of ``{"config": config, "nrc_utils": __version__}`` as canonical
    JSON: sorted keys, no spaces, tuples as lists, exact floats (see module docstring)."""
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a mapping (a dict of parameters), got {type(config).__name__}")
    payload = {"config": _canonical(config, "config"), "nrc_utils": nrc_utils.__version__}
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
        Path(tmp).unlink(missing_ok=True)
        raise


def save(
    key: str,
    arrays: Mapping[str, np.ndarray | torch.Tensor],
    meta: Mapping,
    config: Mapping | None = None,
) -> None:
    """Store ``arrays`` and ``meta`` (JSON data) under ``key`` in :func:`cache_dir`.

    Writes ``<key>.npz`` then ``<key>.json`` (which holds ``meta``, ``config``, the array
    shapes and dtypes and the SHA-256 of the ``.npz``), each atomically. Object arrays
    are refused (they would need pickle).
    """
    _check_name("key", key)
    stored = {}
    for name, value in arrays.items():
        _check_name("array name", name)
        stored[name] = _to_numpy(name, value)
    record = {
        "key": key,
        "nrc_utils": nrc_utils.__version__,
        "config": None if config is None else _canonical(config, "config"),
        "meta": _canonical(meta, "meta"),
        "arrays": {n: {"shape": list(a.shape), "dtype": a.dtype.str} for n, a in stored.items()},
    }
    buffer = io.BytesIO()
    np.savez(buffer, **stored)
    blob = buffer.getvalue()
    record["npz_sha256"] = hashlib.sha256(blob).hexdigest()
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    _write_atomic(folder / f"{key}.npz", blob)
    _write_atomic(folder / f"{key}.json", _dumps(record).encode("ascii"))


def discard(key: str) -> None:
    """Remove the entry stored under ``key``; nothing happens when there is none."""
    for suffix in (".json", ".npz"):
        (cache_dir() / f"{key}{suffix}").unlink(missing_ok=True)


def _discard(key: str, reason: str) -> None:
    log.info("cache entry %s is unusable (%s); it will be recomputed", key, reason)
    discard(key)


def load(key: str) -> tuple[dict[str, np.ndarray], dict] | None:
    """``(arrays, meta)`` stored under ``key``, or ``None`` when there is no entry.

    A corrupt or partial entry (unreadable JSON, missing ``.npz``, checksum mismatch,
    an archive ``np.load(allow_pickle=False)`` cannot read) is deleted and ``None`` is
    returned. An ``.npz`` without its JSON (a save in progress or interrupted) is left
    alone: the next :func:`save` overwrites it.
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
    is converted the same way.
    """
    if not enabled:
        return _as_stored(*_call(compute))
    key = config_key(config)
    hit = load(key)
    if hit is not None:
        log.info("cache hit %s", key)
        return hit
    arrays, meta = _call(compute)
    save(key, arrays, meta, config=config)
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
