"""Tests for nrc_utils.records: the run records as the Reproducibility page shows them."""

import json

import pytest

from nrc_utils import records as rr

RECORDS = {
    "profile": "ci", "date": "2026-12-01T20:00:00+00:00", "command": "python ci/build_book.py",
    "git": {"commit": "abc123", "dirty": True}, "threads": 2,
    "hardware": {"cpu": "Some CPU", "cores": 2, "ram_gb": 23.4, "device": "cpu", "platform": "Linux"},
    "packages": {"torch": "2.13.0", "numpy": "2.1"},
    "chapters": {
        "01_a": {"status": "ok", "wall_s": 10.5, "profile": "ci", "device": "cpu", "overrides": [],
                 "parameters": {"profile": "ci", "seed": 0}},
        "02_b": {"status": "ok", "wall_s": 4.0, "profile": "ci", "device": "cpu",
                 "overrides": ["02_b.seed=1"], "parameters": {"profile": "ci", "seed": 1},
                 "last_attempt": {"status": "timeout", "error": "ChapterTimeout", "started": "2026-12-01T21:00"}},
    },
}


def test_read_returns_none_without_a_file_and_refuses_a_broken_one(tmp_path):
    assert rr.read(tmp_path / "none.json") is None
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="is not a readable run record"):
        rr.read(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="is not a run record"):
        rr.read(bad)
    good = tmp_path / "good.json"
    good.write_text(json.dumps(RECORDS))
    assert rr.read(good) == RECORDS


def test_summary_sentence_both_branches():
    assert rr.summary_sentence(None, "x.json").startswith("No run records were found at `x.json`")
    assert rr.summary_sentence(RECORDS, "x.json") == (
        "Built with the `ci` profile on 2026-12-01T20:00:00+00:00 by `python ci/build_book.py`.")


def test_chapter_table_says_when_the_last_run_failed_and_sums_wall_times():
    t = rr.chapter_table(RECORDS)
    assert list(t["chapter"]) == ["01_a", "02_b"] and t.loc[0, "status"] == "ok"
    assert t.loc[1, "status"].startswith("ok (the last run, 2026-12-01T21:00, timeout with ChapterTimeout")
    assert t.loc[1, "overrides"] == "02_b.seed=1"
    assert rr.total_wall_s(RECORDS) == 14.5 and rr.total_wall_s(None) == 0.0


def test_machine_package_and_parameter_tables():
    m = dict(rr.machine_table(RECORDS).itertuples(index=False))
    assert m["git commit"] == "abc123 (with uncommitted changes)" and m["threads per kernel"] == 2
    clean = {**RECORDS, "git": {}}
    assert dict(rr.machine_table(clean).itertuples(index=False))["git commit"].startswith("unknown")
    assert list(rr.package_table(RECORDS)["package"]) == ["numpy", "torch"]
    p = rr.parameter_table(RECORDS)
    assert len(p) == 4 and p.iloc[3].tolist() == ["02_b", "seed", "1"]
