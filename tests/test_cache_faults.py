"""An unusable cache folder, a cache folder that turns read-only, a changed code or thread count,
a hand-edited JSON record: each is detected, before training where it can be, without losing results.

The tests run as root on the project machines, where ``chmod`` does not stop a write; a
read-only folder is simulated by :func:`read_only`, which makes the file-system calls that
write, rename or remove anything inside the folder raise ``PermissionError`` as the kernel
would (reads are untouched).
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from nrc_utils import cache, data, ensemble, models, train


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("NRC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("NRC_PROGRESS", "0")
    monkeypatch.setattr(cache, "_checked", set())
    monkeypatch.setattr(cache, "_refusing_folders", set())
    return tmp_path / "cache"


def read_only(monkeypatch, folder: Path) -> None:
    """From now on, writing, renaming or removing anything inside ``folder`` raises ``PermissionError``."""
    folder = Path(folder).resolve()

    def inside(path) -> bool:
        try:
            p = Path(os.fsdecode(path)).resolve()
        except TypeError:  # a file descriptor
            return False
        return p == folder or folder in p.parents

    def refuse(path):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))

    def guard(real, *path_args):
        def wrapper(*args, **kwargs):
            if any(inside(args[i]) for i in path_args if i < len(args)):
                refuse(args[path_args[0]])
            return real(*args, **kwargs)
        return wrapper

    real_open = os.open

    def os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND) and inside(path):
            refuse(path)
        return real_open(path, flags, *args, **kwargs)

    real_builtin_open = builtins.open

    def builtin_open(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+") and not isinstance(file, int) and inside(file):
            refuse(file)
        return real_builtin_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(builtins, "open", builtin_open)
    monkeypatch.setattr(io, "open", builtin_open)  # pathlib opens files through io.open
    for name in ("unlink", "remove", "rmdir", "mkdir"):
        monkeypatch.setattr(os, name, guard(getattr(os, name), 0))
    for name in ("replace", "rename"):
        monkeypatch.setattr(os, name, guard(getattr(os, name), 0, 1))


def test_read_only_simulation_refuses_writes_and_allows_reads(tmp_path, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / "a.txt").write_text("kept")
    read_only(monkeypatch, folder)
    assert (folder / "a.txt").read_text() == "kept"
    for attempt in (lambda: (folder / "b.txt").write_text("x"), lambda: (folder / "a.txt").unlink(),
                    lambda: os.replace(folder / "a.txt", tmp_path / "moved"), lambda: (folder / "sub").mkdir(),
                    lambda: cache.save("k", {"x": np.zeros(2)}, {})):
        monkeypatch.setenv("NRC_CACHE_DIR", str(folder))
        with pytest.raises(PermissionError):
            attempt()
    assert sorted(p.name for p in folder.iterdir()) == ["a.txt"]
    (tmp_path / "elsewhere.txt").write_text("fine")  # outside the folder nothing changes


# --- check_cache_dir: an unusable folder is refused with one line ---------------------------


def refusal(monkeypatch) -> str:
    with pytest.raises(cache.CacheDirError) as err:
        cache.check_cache_dir()
    message = str(err.value)
    assert isinstance(err.value, ValueError) and "\n" not in message
    return message


def test_cache_dir_that_is_a_file_is_refused(tmp_path, monkeypatch):
    target = tmp_path / "not-a-folder"
    target.write_text("")
    monkeypatch.setenv("NRC_CACHE_DIR", str(target))
    assert refusal(monkeypatch) == (
        f"NRC_CACHE_DIR={target} is a file, not a folder; point NRC_CACHE_DIR at a writable folder, "
        f"or unset it to use {Path(cache.__file__).resolve().parents[1] / '.cache' / 'nrc'}")


def test_cache_dir_under_a_file_cannot_be_created(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    target = tmp_path / "file" / "cache"
    monkeypatch.setenv("NRC_CACHE_DIR", str(target))
    message = refusal(monkeypatch)
    assert message.startswith(f"NRC_CACHE_DIR={target} cannot be created: {tmp_path / 'file'} is a file, not a "
                              "folder; point NRC_CACHE_DIR at a writable folder, or unset it to use ")


def test_dangling_symlink_is_refused(tmp_path, monkeypatch):
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "gone")
    monkeypatch.setenv("NRC_CACHE_DIR", str(link / "cache"))
    assert refusal(monkeypatch).startswith(f"NRC_CACHE_DIR={link / 'cache'} cannot be created: {link} is a broken "
                                           "symbolic link; point NRC_CACHE_DIR at a writable folder")


def test_read_only_cache_dir_is_refused(cache_in_tmp, monkeypatch):
    cache_in_tmp.mkdir()
    read_only(monkeypatch, cache_in_tmp)
    message = refusal(monkeypatch)
    assert message.startswith(f"NRC_CACHE_DIR={cache_in_tmp} is not writable (Permission denied); point "
                              "NRC_CACHE_DIR at a writable folder")
    # a folder that does not exist yet under a read-only one cannot be created
    monkeypatch.setenv("NRC_CACHE_DIR", str(cache_in_tmp / "sub"))
    assert refusal(monkeypatch).startswith(f"NRC_CACHE_DIR={cache_in_tmp / 'sub'} cannot be created "
                                           "(Permission denied); ")


def test_default_folder_refusal_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("NRC_CACHE_DIR")
    default = tmp_path / "repo" / ".cache" / "nrc"
    default.parent.mkdir(parents=True)
    default.write_text("")
    monkeypatch.setattr(cache, "_default_dir", lambda: default)
    assert refusal(monkeypatch) == (f"the cache folder {default} (the default: NRC_CACHE_DIR is unset) is a file, "
                                    "not a folder; set NRC_CACHE_DIR to a writable folder")


def test_good_folder_is_created_checked_once_and_left_clean(cache_in_tmp, monkeypatch):
    assert cache.check_cache_dir() == cache_in_tmp and cache_in_tmp.is_dir()
    assert not list(cache_in_tmp.iterdir())  # the probe file is gone
    probes = []
    real = cache.tempfile.mkstemp
    monkeypatch.setattr(cache.tempfile, "mkstemp", lambda *a, **k: probes.append(1) or real(*a, **k))
    assert cache.check_cache_dir() == cache_in_tmp and probes == []  # remembered for this path


def test_cached_refuses_before_computing(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("NRC_CACHE_DIR", str(tmp_path / "file"))
    calls = []
    with pytest.raises(cache.CacheDirError):
        cache.cached({"a": 1}, lambda: calls.append(1) or ({}, {}))
    assert calls == []
    assert cache.cached({"a": 1}, lambda: ({"x": np.zeros(1)}, {}), enabled=False)[0]["x"].shape == (1,)


def tiny_problem():
    ds = data.gaussian_mixture(K=3, d=6, n_per_class=10, s=0.3, seed=0)
    cfg = train.TrainConfig(lam=1e-2, lr=0.1, steps=20, record_every=10)
    return ds, cfg


def test_train_refuses_an_unusable_folder_before_training(tmp_path, monkeypatch):
    ds, cfg = tiny_problem()
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("NRC_CACHE_DIR", str(tmp_path / "file"))
    steps = []
    real_sgd = train.run_sgd
    monkeypatch.setattr(train, "run_sgd", lambda *a, **k: steps.append(1) or real_sgd(*a, **k))
    with pytest.raises(cache.CacheDirError, match="is a file, not a folder"):
        train.train(models.MLP(6, [5], 3, seed=0), ds.X, ds.y, cfg)
    assert steps == [], "training started before the cache folder was checked"
    assert not train.train(models.MLP(6, [5], 3, seed=0), ds.X, ds.y, cfg, use_cache=False).from_cache


def test_ensemble_refuses_an_unusable_folder_before_training(tmp_path, monkeypatch):
    ds, cfg = tiny_problem()
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("NRC_CACHE_DIR", str(tmp_path / "file" / "cache"))
    steps = []
    real_sgd = ensemble.run_sgd_ensemble
    monkeypatch.setattr(ensemble, "run_sgd_ensemble", lambda *a, **k: steps.append(1) or real_sgd(*a, **k))
    with pytest.raises(cache.CacheDirError, match="cannot be created"):
        ensemble.train_ensemble(6, [5], 3, [1e-2, 1e-3], [0, 1], ds.X, ds.y, cfg, polish=False)
    assert steps == [], "the ensemble started training before the cache folder was checked"


# --- a folder that turns read-only: nothing crashes, nothing computed is lost -----------------


def counter():
    calls = []

    def compute():
        calls.append(1)
        return {"w": np.arange(6.0).reshape(2, 3)}, {"loss": 0.25}
    return calls, compute


def test_corrupt_entry_in_read_only_folder_is_recomputed(cache_in_tmp, monkeypatch, caplog):
    calls, compute = counter()
    config = {"what": "read-only"}
    cache.cached(config, compute)
    key = cache.config_key(config)
    npz = cache_in_tmp / f"{key}.npz"
    npz.write_bytes(npz.read_bytes()[:-7])
    read_only(monkeypatch, cache_in_tmp)
    with caplog.at_level(logging.DEBUG, logger="nrc_utils.cache"):
        assert cache.load(key) is None  # the deletion is refused, and load says "no entry" all the same
        arrays, meta = cache.cached(config, compute)
        cache.cached({"what": "another"}, compute)
    assert len(calls) == 2 + 1
    np.testing.assert_array_equal(arrays["w"], np.arange(6.0).reshape(2, 3))
    assert meta == {"loss": 0.25}
    assert npz.exists()  # still there: the folder kept it
    refused = [r for r in caplog.records if "refused to store" in r.getMessage()]
    assert len(refused) == 2 and [r.levelno for r in refused] == [logging.INFO, logging.DEBUG]  # once at INFO


def test_train_returns_its_result_when_the_folder_refuses_the_save(cache_in_tmp, monkeypatch):
    ds, cfg = tiny_problem()
    cfg = train.TrainConfig(lam=1e-2, lr=0.1, steps=20, record_every=10, polish_tol=1e-3, polish_max_iter=100,
                            polish_chunk=10)
    reference = train.train(models.MLP(6, [5], 3, seed=0), ds.X, ds.y, cfg, use_cache=False)
    cache.check_cache_dir()  # the folder was fine when the process started
    read_only(monkeypatch, cache_in_tmp)
    result = train.train(models.MLP(6, [5], 3, seed=0), ds.X, ds.y, cfg, checkpoint_seconds=0.0)
    assert not result.from_cache and result.polish_stop == reference.polish_stop
    for a, b in zip(reference.model.state_dict().values(), result.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    results = ensemble.train_ensemble(6, [5], 3, [1e-2, 2e-2], [0, 0], ds.X, ds.y, cfg, device="cpu",
                                      checkpoint_seconds=0.0)
    assert [r.from_cache for r in results] == [False, False]
    assert not list(cache_in_tmp.iterdir())


def test_corrupt_train_entry_in_read_only_folder_is_retrained(cache_in_tmp, monkeypatch):
    ds, cfg = tiny_problem()
    first = train.train(models.MLP(6, [5], 3, seed=0), ds.X, ds.y, cfg)
    (record,) = cache_in_tmp.glob("*.json")
    record.write_text(record.read_text().replace('"loss"', '"lost"', 1))
    read_only(monkeypatch, cache_in_tmp)
    again = train.train(models.MLP(6, [5], 3, seed=0), ds.X, ds.y, cfg)
    assert not again.from_cache
    for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


# --- the key: code, torch, threads, device --------------------------------------------------


def test_code_fingerprint_covers_the_training_modules(tmp_path, monkeypatch):
    fp = cache.code_fingerprint()
    assert len(fp) == 64 and int(fp, 16) >= 0 and cache.code_fingerprint() == fp
    assert {"train.py", "ensemble.py", "models.py", "losses.py", "gradients.py", "data.py",
            "cache.py", "stationary.py"} <= set(cache.CODE_MODULES)  # stationary: the polish of every MLP
    package = Path(cache.__file__).resolve().parent
    copy = tmp_path / "pkg"
    copy.mkdir()
    for name in cache.CODE_MODULES:
        (copy / name).write_bytes((package / name).read_bytes())
    monkeypatch.setattr(cache, "_PACKAGE_DIR", copy)
    assert cache.code_fingerprint() == fp  # same bytes, same fingerprint
    monkeypatch.setattr(cache, "_fingerprints", {})
    (copy / "train.py").write_bytes((package / "train.py").read_bytes() + b"\n# changed\n")
    assert cache.code_fingerprint() != fp


def test_changed_code_fingerprint_misses_the_cache(monkeypatch):
    ds, cfg = tiny_problem()
    assert not train.train(models.MLP(6, [5], 3, seed=0), ds.X, ds.y, cfg).from_cache
    assert train.train(models.MLP(6, [5], 3, seed=0), ds.X, ds.y, cfg).from_cache
    monkeypatch.setattr(cache, "code_fingerprint", lambda modules=cache.CODE_MODULES: "0" * 64)
    assert not train.train(models.MLP(6, [5], 3, seed=0), ds.X, ds.y, cfg).from_cache
    calls, compute = counter()
    cache.cached({"a": 1}, compute)
    monkeypatch.setattr(cache, "code_fingerprint", lambda modules=cache.CODE_MODULES: "1" * 64)
    cache.cached({"a": 1}, compute)
    assert len(calls) == 2


def test_thread_count_and_torch_version_enter_the_key(monkeypatch):
    ds, cfg = tiny_problem()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = cache.config_key({"a": 1})
        assert not train.train(models.MLP(6, [5], 3, seed=0), ds.X, ds.y, cfg).from_cache
        torch.set_num_threads(2)
        assert cache.config_key({"a": 1}) != one
        assert not train.train(models.MLP(6, [5], 3, seed=0), ds.X, ds.y, cfg).from_cache
        assert train.train(models.MLP(6, [5], 3, seed=0), ds.X, ds.y, cfg).from_cache
        results = ensemble.train_ensemble(6, [5], 3, [1e-2, 2e-2], [0, 0], ds.X, ds.y, cfg, device="cpu")
        assert [r.from_cache for r in results] == [True, False]  # the member shares the 2-thread single run's key
        torch.set_num_threads(1)
        results = ensemble.train_ensemble(6, [5], 3, [1e-2, 2e-2], [0, 0], ds.X, ds.y, cfg, device="cpu")
        assert [r.from_cache for r in results] == [True, False]
        monkeypatch.setattr(torch, "__version__", "0.0.1")
        assert cache.config_key({"a": 1}) != one
    finally:
        torch.set_num_threads(threads)


def test_device_type_enters_the_training_key():
    ds, cfg = tiny_problem()
    net = models.MLP(6, [5], 3, seed=0)
    key, config = train.cache_key(net, cfg, ds.X, ds.y, device="cpu")
    assert config["device"] == "cpu"
    assert train.cache_key(net, cfg, ds.X, ds.y)[0] == train.cache_key(
        net, cfg, ds.X, ds.y, device=torch.device("cuda" if torch.cuda.is_available() else "cpu"))[0]
    other = dict(config, device="cuda")
    assert cache.config_key(other) != key


# --- the JSON record is checksummed --------------------------------------------------------


def edit_meta(record):
    record["meta"]["loss"] = 0.5


def drop_config(record):
    del record["config"]


def old_format(record):
    del record["record_sha256"]


@pytest.mark.parametrize("damage", [edit_meta, drop_config, old_format])
def test_json_that_still_parses_but_was_changed_is_recomputed(cache_in_tmp, damage):
    calls, compute = counter()
    config = {"what": "json"}
    cache.cached(config, compute)
    path = cache_in_tmp / f"{cache.config_key(config)}.json"
    record = json.loads(path.read_text())
    damage(record)
    path.write_text(json.dumps(record))
    assert cache.load(cache.config_key(config)) is None
    arrays, meta = cache.cached(config, compute)
    assert len(calls) == 2 and meta == {"loss": 0.25}
    assert cache.load(cache.config_key(config)) is not None


def test_json_cut_short_where_it_still_parses_is_recomputed(cache_in_tmp):
    calls, compute = counter()
    config = {"what": "json-cut"}
    cache.cached(config, compute)
    path = cache_in_tmp / f"{cache.config_key(config)}.json"
    text = path.read_text()
    cut = text[: text.rindex(',"')] + "}"  # the last field lost, the braces closed: valid JSON
    json.loads(cut)
    path.write_text(cut)
    cache.cached(config, compute)
    assert len(calls) == 2


def test_reformatted_json_with_the_same_content_is_still_a_hit(cache_in_tmp):
    calls, compute = counter()
    config = {"what": "json-pretty"}
    cache.cached(config, compute)
    path = cache_in_tmp / f"{cache.config_key(config)}.json"
    path.write_text(json.dumps(json.loads(path.read_text()), indent=2))
    cache.cached(config, compute)
    assert len(calls) == 1
