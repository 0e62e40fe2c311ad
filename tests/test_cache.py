"""Tests for nrc_utils.cache."""

import json
import math
import numpy as np
import pytest
import torch

import nrc_utils
from nrc_utils import cache


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("NRC_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


class Counter:
    """A compute() that counts its calls and returns tensors, arrays and meta."""

    def __init__(self, seed=0):
        self.calls = 0
        self.seed = seed

    def __call__(self):
        self.calls += 1
        g = torch.Generator().manual_seed(self.seed)
        arrays = {
            "W_1": torch.randn(4, 3, generator=g),
            "sv": np.linspace(0, 1, 5),
            "ranks": np.array([3, 2, 1], dtype=np.int64),
        }
        meta = {"loss": 0.123456789012345678, "steps": 10, "shape": (4, 3), "ok": True, "note": None}
        return arrays, meta


CONFIG = {"lambda": 5e-3, "widths": (64, 64, 10), "seed": 0, "activation": "tanh"}


def entry(cache_in_tmp, key, suffix):
    return cache_in_tmp / f"{key}{suffix}"


def test_miss_computes_once_and_hit_returns_identical_values(cache_in_tmp):
    compute = Counter()
    arrays, meta = cache.cached(CONFIG, compute)
    assert compute.calls == 1
    assert set(arrays) == {"W_1", "sv", "ranks"} and all(isinstance(a, np.ndarray) for a in arrays.values())
    assert arrays["W_1"].dtype == np.float32 and arrays["ranks"].dtype == np.int64
    again_arrays, again_meta = cache.cached(dict(reversed(list(CONFIG.items()))), compute)
    assert compute.calls == 1
    for name in arrays:
        assert again_arrays[name].dtype == arrays[name].dtype
        np.testing.assert_array_equal(again_arrays[name], arrays[name])
    assert again_meta == meta == {"loss": 0.123456789012345678, "steps": 10, "shape": [4, 3], "ok": True, "note": None}
    key = cache.config_key(CONFIG)
    assert entry(cache_in_tmp, key, ".npz").is_file() and entry(cache_in_tmp, key, ".json").is_file()
    record = json.loads(entry(cache_in_tmp, key, ".json").read_text())
    assert record["config"]["widths"] == [64, 64, 10] and record["nrc_utils"] == nrc_utils.__version__


def test_computed_values_equal_the_returned_ones():
    arrays, _ = cache.cached(CONFIG, Counter())
    fresh, _ = Counter()()
    np.testing.assert_array_equal(arrays["W_1"], fresh["W_1"].numpy())


def test_different_config_different_key_and_canonical_forms():
    base = cache.config_key(CONFIG)
    assert len(base) == 64 and int(base, 16) >= 0
    assert cache.config_key({**CONFIG, "lambda": 1e-2}) != base
    assert cache.config_key({**CONFIG, "lambda": np.nextafter(5e-3, 1.0)}) != base  # floats exact
    assert cache.config_key({**CONFIG, "widths": [64, 64, 10]}) == base  # tuple == list
    assert cache.config_key({**CONFIG, "seed": np.int64(0)}) == base  # numpy scalars
    assert cache.config_key({**CONFIG, "lambda": np.float64(5e-3)}) == base
    assert cache.config_key({**CONFIG, "extra": None}) != base
    assert cache.config_key({"a": {"b": 1, "c": 2}}) == cache.config_key({"a": {"c": 2, "b": 1}})
    with pytest.raises(TypeError, match="config.f"):
        cache.config_key({"f": object()})
    with pytest.raises(TypeError, match="str keys"):
        cache.config_key({1: "a"})


def test_key_depends_on_package_version(monkeypatch):
    base = cache.config_key(CONFIG)
    monkeypatch.setattr(nrc_utils, "__version__", "999.0")
    assert cache.config_key(CONFIG) != base


def corrupt_truncate(path):
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def corrupt_flip(path):
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    path.write_bytes(bytes(blob))


def corrupt_delete(path):
    path.unlink()


def corrupt_garbage(path):
    path.write_text("{not json")


@pytest.mark.parametrize(
    "suffix,damage",
    [(".npz", corrupt_truncate), (".npz", corrupt_flip), (".npz", corrupt_delete), (".json", corrupt_garbage),
     (".json", corrupt_truncate), (".json", corrupt_delete)],
)
def test_corrupt_or_partial_entry_is_recomputed(cache_in_tmp, suffix, damage):
    compute = Counter()
    first, meta = cache.cached(CONFIG, compute)
    key = cache.config_key(CONFIG)
    damage(entry(cache_in_tmp, key, suffix))
    assert cache.load(key) is None  # detected (and, unless only the JSON was lost, deleted)
    second, meta2 = cache.cached(CONFIG, compute)
    assert compute.calls == 2
    np.testing.assert_array_equal(second["W_1"], first["W_1"])
    assert meta2 == meta
    assert cache.load(key) is not None  # rewritten whole
    assert not list(cache_in_tmp.glob(".*.tmp"))


def test_load_missing_is_none_and_orphan_npz_is_kept(cache_in_tmp):
    assert cache.load("0" * 64) is None
    cache.save("abc", {"x": np.arange(3)}, {})
    entry(cache_in_tmp, "abc", ".json").unlink()  # as if the save stopped before its commit marker
    assert cache.load("abc") is None
    assert entry(cache_in_tmp, "abc", ".npz").is_file()


def test_no_pickle(cache_in_tmp):
    with pytest.raises(ValueError, match="needs pickle"):
        cache.save("k", {"bad": np.array([{"a": 1}, None], dtype=object)}, {})
    assert not list(cache_in_tmp.glob("k.*"))
    with pytest.raises(TypeError, match="meta.model"):
        cache.save("k", {}, {"model": torch.nn.Linear(2, 2)})
    # what is stored loads with allow_pickle=False
    cache.save("k", {"x": torch.arange(4.0)}, {"a": 1})
    with np.load(entry(cache_in_tmp, "k", ".npz"), allow_pickle=False) as npz:
        np.testing.assert_array_equal(npz["x"], np.arange(4.0, dtype=np.float32))


def test_unsafe_names_are_refused():
    with pytest.raises(ValueError, match="safe file name"):
        cache.save("../escape", {}, {})
    with pytest.raises(ValueError, match="safe file name"):
        cache.save("k", {"a/b": np.zeros(1)}, {})


def test_cache_dir_from_environment(cache_in_tmp, monkeypatch):
    assert cache.cache_dir() == cache_in_tmp
    monkeypatch.delenv("NRC_CACHE_DIR")
    default = cache.cache_dir()
    assert default.parts[-2:] == (".cache", "nrc") and (default.parents[1] / "nrc_utils").is_dir()


def test_disabled_cache_computes_every_time_and_writes_nothing(cache_in_tmp):
    compute = Counter()
    a, meta = cache.cached(CONFIG, compute, enabled=False)
    b, _ = cache.cached(CONFIG, compute, enabled=False)
    assert compute.calls == 2 and not cache_in_tmp.exists()
    assert isinstance(a["W_1"], np.ndarray) and meta["shape"] == [4, 3]
    np.testing.assert_array_equal(a["W_1"], b["W_1"])
    enabled, enabled_meta = cache.cached(CONFIG, compute)
    assert enabled_meta == meta and enabled["W_1"].dtype == a["W_1"].dtype


def test_special_values_survive():
    arrays, meta = cache.cached(
        {"case": "special"},
        lambda: ({"half": torch.ones(2, dtype=torch.bfloat16), "empty": np.zeros((0, 3))},
                 {"nan": float("nan"), "inf": math.inf, "np": np.float32(0.5)}),
    )
    assert arrays["half"].dtype == np.float32 and arrays["empty"].shape == (0, 3)
    assert math.isnan(meta["nan"]) and meta["inf"] == math.inf and meta["np"] == 0.5
    with pytest.raises(TypeError, match="pair"):
        cache.cached({"case": "bad"}, lambda: {"x": np.zeros(1)})


def test_read_back_race_returns_the_computed_values(monkeypatch):
    real_load = cache.load
    calls = []

    def flaky_load(key):
        calls.append(key)
        return None if len(calls) <= 2 else real_load(key)  # miss, then a lost read-back

    monkeypatch.setattr(cache, "load", flaky_load)
    arrays, meta = cache.cached(CONFIG, Counter())
    monkeypatch.setattr(cache, "load", real_load)
    hit_arrays, hit_meta = cache.cached(CONFIG, Counter())
    assert meta == hit_meta
    for name in arrays:
        assert arrays[name].dtype == hit_arrays[name].dtype
        np.testing.assert_array_equal(arrays[name], hit_arrays[name])
