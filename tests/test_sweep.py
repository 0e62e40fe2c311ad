"""Parameter sweeps (``python -m nrc_utils.sweep``): grids, refusals, Dask execution, resume.

The executing tests run tiny test chapters (no training) in a throw-away project (``--root``) on a
real ``distributed.LocalCluster``; the SLURM test starts a single-node SLURM (Debian's
``slurm-wlm`` with ``munge``) in a temporary folder when it can, and says why not otherwise.
"""

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "ci"))
import project  # noqa: E402  (ci/project.py)

from nrc_utils import sweep  # noqa: E402
from test_pipeline import make_project as make_book_project  # noqa: E402  (tests/test_pipeline.py)

pytest.importorskip("distributed")
pytest.importorskip("pyarrow")

TOY = """\
# Toy

```{code-cell} ipython3
:tags: [parameters]

profile = "ci"
lam = 0.1
seed = 0
items = [1]
fail = False
gate = ""
```

```{code-cell} ipython3
import os
import time
from pathlib import Path

import numpy as np
from myst_nb import glue

if gate:  # wait until the file `gate` exists (the interruption test holds a point here)
    deadline = time.time() + 300
    while not Path(gate).exists() and time.time() < deadline:
        time.sleep(0.05)
if fail:
    raise ValueError("boom")
x = float(np.random.default_rng(seed).normal() * lam)
glue("x", x, display=False)
glue("n", 3 * seed + len(items), display=False)
glue("flag", bool(seed % 2), display=False)
glue("half", np.float64(lam) / 2, display=False)
glue("threads", int(os.environ.get("OMP_NUM_THREADS", "0")), display=False)
glue("sentence", "not a number", display=False)
glue("slurm_job", int(os.environ.get("SLURM_JOB_ID", "0")), display=False)  # > 0 in a SLURM job
```
"""

TOY_PARAMS = {"lam": 0.1, "seed": 0, "items": [1], "fail": False, "gate": ""}


def make_project(root: Path, chapters: dict[str, str] | None = None, params: dict | None = None) -> Path:
    """A book project under ``root`` (toc, ``book/<stem>.md``, ``ci/params/ci.yaml``; the runner
    tests' :func:`test_pipeline.make_project`), by default with the one test chapter ``01_toy``."""
    make_book_project(root, chapters or {"01_toy": TOY}, params or {"01_toy": TOY_PARAMS})
    return root


def write_grid(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


# The code fingerprint (nrc_utils.cache.code_fingerprint) changes whenever a module of nrc_utils is
# edited, and others edit this checkout while the tests run: the tests that compare two runs pin it
# (the unit test of is_done checks that another fingerprint is re-run).
PINNED = ("import sys; import nrc_utils.cache as c; c.code_fingerprint = lambda *a, **k: 'pinned-for-tests'; "
          "from nrc_utils.sweep import main; sys.exit(main(sys.argv[1:]))")


def command(*args, pinned=True):
    start = ["-c", PINNED] if pinned else ["-m", "nrc_utils.sweep"]
    return [sys.executable, *start, *map(str, args)]


def cli(*args, timeout=300, env=None, pinned=True):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NRC_PROGRESS": "0", **(env or {})}
    proc = subprocess.run(command(*args, pinned=pinned), capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=ROOT)
    return proc.returncode, proc.stdout, proc.stderr


def records(out: Path) -> dict[str, dict]:
    return {p.name: json.loads((p / "record.json").read_text()) for p in sorted((out / "points").iterdir())}


def without_volatile(recs: dict[str, dict]) -> dict[str, dict]:
    return {k: {f: v for f, v in r.items() if f not in sweep.VOLATILE} for k, r in recs.items()}


@pytest.fixture
def toy(tmp_path, monkeypatch):
    monkeypatch.setenv("NRC_CACHE_DIR", str(tmp_path / "cache"))
    return make_project(tmp_path / "proj")


# --------------------------------------------------------------------------------------------
# Grids: expansion, without running anything.
def test_grid_expands_products_zips_and_ranges(toy):
    grid = write_grid(toy / "g.yaml", """\
        chapter: 01_toy
        set: {items: [1, 2]}
        axes:
          - lam: {log: [0.001, 0.1, 3]}
          - seed: [0, 1]
            gate: ["a", "b"]
          - fail: [false]
        """)
    sw = sweep.load_grid(grid, toy)
    assert sw.name == "g" and sw.profile == "ci" and sw.threads == 1
    assert sw.axis_names == ["lam", "seed", "gate", "fail"]
    assert [(p.axes["lam"], p.axes["seed"], p.axes["gate"]) for p in sw.points] == [
        (0.001, 0, "a"), (0.001, 1, "b"), (0.01, 0, "a"), (0.01, 1, "b"), (0.1, 0, "a"), (0.1, 1, "b")]
    first = sw.points[0].parameters
    assert first == {"profile": "ci", "lam": 0.001, "seed": 0, "items": [1, 2], "fail": False, "gate": "a"}
    assert len({p.id for p in sw.points}) == 6 and [p.index for p in sw.points] == list(range(6))
    assert sweep.load_grid(grid, toy).points[3].id == sw.points[3].id  # ids are stable


def test_range_linspace_wrap_and_int_to_float(toy):
    grid = write_grid(toy / "g.yaml", """\
        chapter: 01_toy
        axes:
          seed: {range: [0, 6, 2]}
          lam: {linspace: [0, 1, 3]}
          items: {values: [5, 7], wrap: true}
        """)
    pts = sweep.load_grid(grid, toy).points
    assert sorted({p.parameters["seed"] for p in pts}) == [0, 2, 4]
    assert sorted({p.parameters["lam"] for p in pts}) == [0.0, 0.5, 1.0]
    assert all(isinstance(p.parameters["lam"], float) for p in pts)  # an int stands for a float
    assert sorted({tuple(p.parameters["items"]) for p in pts}) == [(5,), (7,)]  # wrapped
    assert sorted({p.axes["items"] for p in pts}) == [5, 7]  # the table shows the grid's value
    vals, _ = sweep.axis_values("lam", {"log": [0.005, 0.04, 4]}, "g")
    assert vals == [0.005, 0.01, 0.02, 0.04]


MALFORMED = [
    ("axes: {lam: [0.1]}\n", "no 'chapter'"),
    ("chapter: 01_toy\n", "no 'axes'"),
    ("chapter: 01_toy\naxes: {lam: [0.1]}\ncolour: red\n", "unknown key(s) colour"),
    ("chapter: 99_none\naxes: {lam: [0.1]}\n", "chapter '99_none' is not in _toc.yml"),
    ("chapter: 01_toy\nprofile: huge\naxes: {lam: [0.1]}\n", "unknown profile 'huge'"),
    ("chapter: 01_toy\naxes: {lr: [0.1]}\n", "01_toy has no parameter 'lr'"),
    ("chapter: 01_toy\naxes: {profile: [ci]}\n", "axis 'profile'"),
    ("chapter: 01_toy\naxes: {lam: []}\n", "axis 'lam' has no values"),
    ("chapter: 01_toy\naxes: {lam: 0.1}\n", "axis 'lam': expected a list of values"),
    ("chapter: 01_toy\naxes: {lam: [fast]}\n", "expected float, got str 'fast'"),
    ("chapter: 01_toy\naxes: {seed: [0.5]}\n", "expected int, got float 0.5"),
    ("chapter: 01_toy\naxes: {lam: {log: [0, 1, 3]}}\n", "start and stop must be > 0"),
    ("chapter: 01_toy\naxes: {seed: {range: [0, 3, 0]}}\n", "the step must not be 0"),
    ("chapter: 01_toy\naxes: {lam: {log: [0.1, 1, 3], lin: 2}}\n", "got keys log, lin"),
    ("chapter: 01_toy\naxes: [{seed: [0, 1], lam: [0.1]}]\n", "zipped axes seed, lam have different lengths"),
    ("chapter: 01_toy\nset: {seed: 1}\naxes: {seed: [0, 1]}\n", "parameter 'seed' is given twice"),
    ("chapter: 01_toy\naxes: {seed: [1, 1]}\n", "points 1 and 2 of 2 are the same run"),
    ("chapter: 01_toy\nthreads: 0\naxes: {seed: [1]}\n", "threads must be an integer >= 1"),
    ("chapter: 01_toy\naxes: {seed: [1\n", "is not valid YAML"),
]


@pytest.mark.parametrize("text,problem", MALFORMED, ids=[m[1] for m in MALFORMED])
def test_malformed_grid_is_refused_in_one_line(toy, capsys, text, problem):
    grid = toy / "bad.yaml"
    grid.write_text(text)
    rc = sweep.main([str(grid), "--root", str(toy), "--out", str(toy / "out")])
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and problem in lines[0], err
    assert not (toy / "out").exists()  # refused before anything is written


def test_refusal_is_exit_status_2_without_traceback(toy):
    grid = write_grid(toy / "bad.yaml", "chapter: 01_toy\naxes: {lr: [0.1]}\n")
    rc, out, err = cli(grid, "--root", toy, pinned=False)
    assert rc == 2 and "Traceback" not in out + err
    assert err.strip() == ("error: " + str(grid) + ": axis 'lr': 01_toy has no parameter 'lr'; "
                           "its parameters: lam, seed, items, fail, gate")


def test_chapter_rules_are_checked_for_every_point_before_anything_runs(tmp_path):
    """The real chapter 5 and its PARAMETERS rules: the third point is refused, nothing runs."""
    grid = write_grid(tmp_path / "g.yaml", """\
        chapter: 05_deep_linear_networks
        axes:
          n_per_class: [20, 10, 1]
        """)
    rc = sweep.main([str(grid), "--out", str(tmp_path / "out")])
    assert rc == 2 and not (tmp_path / "out").exists()
    with pytest.raises(project.ProjectError, match=r"point 3 of 3 \(n_per_class=1\): 05_deep_linear_networks"
                                                   r"\.n_per_class = 1: at least"):
        sweep.load_grid(grid)


def test_a_parameter_the_cell_does_not_define_is_refused(tmp_path):
    root = make_project(tmp_path, params={"01_toy": {**TOY_PARAMS, "extra": 1}})
    grid = write_grid(tmp_path / "g.yaml", "chapter: 01_toy\naxes: {extra: [1, 2]}\n")
    with pytest.raises(project.ProjectError, match="its parameters cell does not define extra"):
        sweep.load_grid(grid, root)


def test_cluster_file_is_checked(tmp_path):
    bad = write_grid(tmp_path / "c.yaml", "class: dask_jobqueue.NoSuchCluster\n")
    with pytest.raises(project.ProjectError, match="dask_jobqueue has no NoSuchCluster"):
        sweep.load_cluster_spec(bad)
    bad.write_text("class: SLURMCluster\nqueue: x\n")
    with pytest.raises(project.ProjectError, match="unknown key"):
        sweep.load_cluster_spec(bad)
    pytest.importorskip("dask_jobqueue")
    spec = sweep.load_cluster_spec(ROOT / "ci" / "sweeps" / "slurm_example.yaml")
    assert spec["name"] == "dask_jobqueue.SLURMCluster" and spec["options"]["cores"] >= 1


def test_example_grids_of_the_repository_are_valid():
    for grid in sorted((ROOT / "ci" / "sweeps").glob("*.yaml")):
        if "class" in (project.load_yaml(grid) or {}):
            continue  # a cluster file
        assert sweep.load_grid(grid).points


# --------------------------------------------------------------------------------------------
# Reading results
def _glue_output(name, data, prefix="application/papermill.record/"):
    return nbformat.v4.new_output("display_data", data={prefix + k: v for k, v in data.items()},
                                  metadata={"scrapbook": {"name": name, "mime_prefix": prefix}})


def test_glued_numbers_reads_numbers_under_the_mime_prefix():
    cell = nbformat.v4.new_code_cell("")
    cell.outputs = [
        _glue_output("a", {"text/plain": "0.25"}),
        _glue_output("b", {"text/plain": "np.float64(1.5)"}),
        _glue_output("c", {"text/plain": "True"}),
        _glue_output("d", {"text/plain": "7"}),
        _glue_output("e", {"text/plain": "nan"}),
        _glue_output("f", {"text/markdown": "4.5e-07", "text/plain": "4.5e-07"}),  # a rounded number as text
        _glue_output("s", {"text/markdown": "a sentence", "text/plain": "a sentence"}),
        _glue_output("t", {"text/plain": "(1, 2)"}),
        _glue_output("fig", {"image/png": "iVBOR", "text/plain": "<Figure size 4x4>"}),
        _glue_output("device", {"text/plain": "'cuda'"}),
    ]
    nb = nbformat.v4.new_notebook(cells=[cell])
    got = sweep.glued_numbers(nb)
    assert {k: v for k, v in got.items() if k != "e"} == {"a": 0.25, "b": 1.5, "c": True, "d": 7, "f": 4.5e-07}
    assert math.isnan(got["e"])
    assert sweep.glued_device(nb) == "cuda"


def test_is_done_needs_a_complete_matching_record(tmp_path):
    folder = tmp_path / "p"
    folder.mkdir()
    base = {"chapter": "01_toy", "profile": "ci", "point": "abc", "parameters": {"lam": 0.1}, "threads": 1,
            "code_fingerprint": "f1", "source_sha256": "s1"}
    good = {**base, "status": "ok", "results": {"x": 1.0}, "wall_s": 1.0, "device": "cpu"}
    sweep.write_json(folder / "record.json", good)
    (folder / "notebook.ipynb").write_text("{}")
    assert sweep.is_done(folder, base)
    assert not sweep.is_done(folder, {**base, "code_fingerprint": "f2"})  # other code
    assert not sweep.is_done(folder, {**base, "source_sha256": "s2"})  # other chapter text
    assert not sweep.is_done(folder, {**base, "parameters": {"lam": 0.2}})  # other parameters
    assert not sweep.is_done(folder, {**base, "threads": 2})
    sweep.write_json(folder / "record.json", {**good, "status": "failed"})
    assert not sweep.is_done(folder, base)
    sweep.write_json(folder / "record.json", {k: v for k, v in good.items() if k != "results"})
    assert not sweep.is_done(folder, base)  # incomplete
    (folder / "record.json").write_text(json.dumps(good)[:40])
    assert not sweep.is_done(folder, base)  # truncated
    sweep.write_json(folder / "record.json", good)
    (folder / "notebook.ipynb").unlink()
    assert not sweep.is_done(folder, base)  # no notebook


# --------------------------------------------------------------------------------------------
# Execution on a real LocalCluster
@pytest.mark.slow
def test_two_point_sweep_on_a_local_cluster(toy):
    grid = write_grid(toy / "two.yaml", "chapter: 01_toy\naxes:\n  seed: [1, 2]\n")
    out = toy / "out"
    rc, stdout, err = cli(grid, "--root", toy, "--out", out, "--workers", "2", "--progress", pinned=False)
    assert rc == 0, stdout + err
    assert stdout.strip().splitlines()[-1].startswith("sweep two: 2 succeeded, 0 failed, 0 skipped")
    assert "points" in err and "2/2" in err  # the progress bar, on stderr
    assert "Traceback" not in stdout + err
    recs = list(records(out).values())
    assert len(recs) == 2
    for r in recs:
        assert r["status"] == "ok" and r["error"] is None and r["wall_s"] > 0 and r["device"] == "cpu"
        assert r["threads"] == 1 and r["results"]["threads"] == 1  # the kernel ran with its cap
        assert len(r["code_fingerprint"]) == 64 and len(r["source_sha256"]) == 64
        assert r["parameters"] == {"profile": "ci", **TOY_PARAMS, "seed": r["axes"]["seed"]}
        assert set(r["results"]) == {"x", "n", "flag", "half", "threads", "slurm_job"}  # numbers only, not the sentence
        assert r["results"]["half"] == 0.05 and r["results"]["n"] == 3 * r["axes"]["seed"] + 1
        folder = out / "points" / r["point"]
        executed = nbformat.read(folder / "notebook.ipynb", as_version=4)
        assert sweep.glued_numbers(executed) == r["results"]
        assert not (folder / "partial.ipynb").exists()
    df = sweep.load_results(out)
    assert list(df["seed"]) == [1, 2] and list(df["status"]) == ["ok", "ok"]
    assert list(df["flag"]) == [True, False] and df["x"].dtype == "float64"
    assert (out / "results.csv").is_file()
    import pandas as pd

    csv = pd.read_csv(out / "results.csv")
    assert list(csv["n"]) == [4, 7]


@pytest.mark.slow
def test_one_and_two_workers_give_the_same_records(toy):
    grid = write_grid(toy / "four.yaml", """\
        chapter: 01_toy
        axes:
          - lam: {log: [0.01, 1, 2]}
          - seed: [3, 4]
        """)
    rc1, out1, err1 = cli(grid, "--root", toy, "--out", toy / "w1", "--workers", "1")
    rc2, out2, err2 = cli(grid, "--root", toy, "--out", toy / "w2", "--workers", "2")
    assert rc1 == 0 and rc2 == 0, out1 + err1 + out2 + err2
    assert "LocalCluster, 1 worker(s)" in out1 and "LocalCluster, 2 worker(s)" in out2
    r1, r2 = records(toy / "w1"), records(toy / "w2")
    assert len(r1) == 4 and without_volatile(r1) == without_volatile(r2)
    t1 = sweep.load_results(toy / "w1").drop(columns="wall_s")
    t2 = sweep.load_results(toy / "w2").drop(columns="wall_s")
    assert t1.equals(t2)


@pytest.mark.slow
def test_a_failing_point_is_recorded_and_the_sweep_goes_on(toy):
    grid = write_grid(toy / "f.yaml", "chapter: 01_toy\naxes:\n  fail: [true, false]\n")
    out = toy / "out"
    rc, stdout, err = cli(grid, "--root", toy, "--out", out, "--workers", "1")
    assert rc == 1, stdout + err
    assert stdout.strip().splitlines()[-1].startswith("sweep f: 1 succeeded, 1 failed, 0 skipped")
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "point 1 (fail=True) failed: ValueError: boom (in the cell starting" in errors[0]
    assert "Traceback" not in stdout + err
    by_fail = {r["axes"]["fail"]: r for r in records(out).values()}
    bad, good = by_fail[True], by_fail[False]
    assert bad["status"] == "failed" and bad["error"].startswith("ValueError: boom") and "\n" not in bad["error"]
    assert (out / "points" / bad["point"] / "partial.ipynb").is_file()  # the notebook up to the error
    assert not (out / "points" / bad["point"] / "notebook.ipynb").exists()
    assert good["status"] == "ok"
    df = sweep.load_results(out)
    assert list(df["status"]) == ["failed", "ok"] and df["error"].iloc[0].startswith("ValueError: boom")
    # a rerun retries the failed point only
    rc, stdout, err = cli(grid, "--root", toy, "--out", out, "--workers", "1")
    assert rc == 1 and stdout.strip().splitlines()[-1].startswith("sweep f: 0 succeeded, 1 failed, 1 skipped")


@pytest.mark.slow
def test_an_interrupted_sweep_keeps_finished_points_and_resumes(toy):
    gate = toy / "release"
    grid = write_grid(toy / "r.yaml", f"""\
        chapter: 01_toy
        axes:
          - seed: [0, 1, 2]
            gate: ["", "", "{gate}"]
        """)
    out = toy / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NRC_PROGRESS": "0"}
    proc = subprocess.Popen(command(grid, "--root", toy, "--out", out, "--workers", "1"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    sw = sweep.load_grid(grid, toy)
    first, second, held = (out / "points" / p.id / "record.json" for p in sw.points)

    def status(path):
        try:
            return json.loads(path.read_text())["status"]
        except (OSError, ValueError, KeyError):
            return None

    deadline = time.time() + 240
    while time.time() < deadline and not (status(first) == status(second) == "ok" and status(held) == "running"):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    assert status(held) == "running", (status(first), status(second), status(held))
    kept = {p: p.read_bytes() for p in (first, second)}
    proc.send_signal(signal.SIGINT)
    stdout, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, stdout + err
    assert "Traceback" not in stdout + err
    assert err.strip().splitlines()[-1] == ("sweep r interrupted: 2 succeeded, 0 failed, 0 skipped, "
                                            "1 interrupted, 0 not started (a rerun runs them)"), err
    assert all(p.read_bytes() == b for p, b in kept.items())  # finished points intact
    rec = json.loads(held.read_text())
    assert rec["status"] == "interrupted" and "interrupted" in rec["error"]
    assert (held.parent / "partial.ipynb").is_file()
    assert list(sweep.load_results(out)["status"]) == ["ok", "ok", "interrupted"]

    gate.write_text("go")
    rc, stdout, err = cli(grid, "--root", toy, "--out", out, "--workers", "1")
    assert rc == 0, stdout + err
    assert stdout.strip().splitlines()[-1].startswith("sweep r: 1 succeeded, 0 failed, 2 skipped")
    assert all(p.read_bytes() == b for p, b in kept.items())  # skipped, not re-run
    assert json.loads(held.read_text())["status"] == "ok"
    assert list(sweep.load_results(out)["status"]) == ["ok", "ok", "ok"]


@pytest.mark.slow
def test_a_changed_chapter_reruns_its_points(toy):
    grid = write_grid(toy / "c.yaml", "chapter: 01_toy\naxes:\n  seed: [0]\n")
    out = toy / "out"
    assert cli(grid, "--root", toy, "--out", out, "--workers", "1")[0] == 0
    rc, stdout, _ = cli(grid, "--root", toy, "--out", out, "--workers", "1")
    assert rc == 0 and stdout.strip().splitlines()[-1].startswith("sweep c: 0 succeeded, 0 failed, 1 skipped")
    src = toy / "book" / "01_toy.md"
    src.write_text(src.read_text().replace("# Toy", "# Toy, edited"))
    rc, stdout, _ = cli(grid, "--root", toy, "--out", out, "--workers", "1")
    assert rc == 0 and stdout.strip().splitlines()[-1].startswith("sweep c: 1 succeeded, 0 failed, 0 skipped")


@pytest.mark.slow
def test_a_refused_job_submission_is_one_line_not_a_hang(toy):
    """A fake ``sbatch`` that refuses every job: the sweep says so in one line (exit status 1)
    instead of waiting for workers that never come."""
    pytest.importorskip("dask_jobqueue")
    bin_dir = toy / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "sbatch"
    fake.write_text("#!/bin/sh\necho 'sbatch: error: Batch job submission failed: Invalid partition name "
                    "specified' >&2\nexit 1\n")
    fake.chmod(0o755)
    cluster = write_grid(toy / "c.yaml", "class: SLURMCluster\noptions: {cores: 1, memory: 1GB, queue: nope}\n")
    grid = write_grid(toy / "g.yaml", "chapter: 01_toy\naxes:\n  seed: [0]\n")
    rc, stdout, err = cli(grid, "--root", toy, "--out", toy / "out", "--cluster", cluster, timeout=120,
                          env={"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert rc == 1, stdout + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the executor did not start (dask_jobqueue.SLURMCluster")
    assert "Invalid partition name specified" in lines[0] and "Traceback" not in stdout + err


# --------------------------------------------------------------------------------------------
# SLURM: a single-node cluster (slurmctld + slurmd + munged) in a temporary folder, localhost only.
SLURM_DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 3) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return f"(no {path.name})"
    return " | ".join(lines[-n:]) or f"({path.name} is empty)"


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """``SLURM_CONF`` of a running single-node SLURM, or a skip that says exactly why not."""
    pytest.importorskip("dask_jobqueue")
    missing = [d for d in SLURM_DAEMONS if not (shutil.which(d) or shutil.which(d, path="/usr/sbin:/sbin"))]
    if missing:
        pytest.skip(f"no {', '.join(missing)} on this machine: install Debian's slurm-wlm and munge "
                    "(apt-get install -y slurm-wlm munge) to run the SLURMCluster test")
    if os.geteuid() != 0:
        pytest.skip(f"slurmd and munged are started as root here (this test runs as uid {os.geteuid()})")
    exe = {d: shutil.which(d) or shutil.which(d, path="/usr/sbin:/sbin") for d in SLURM_DAEMONS}
    d = tmp_path_factory.mktemp("slurm")
    for sub in ("munge", "state", "spool", "log"):
        (d / sub).mkdir()
    (d / "munge").chmod(0o755)  # munged wants others to be able to reach its socket
    key = d / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    sock = d / "munge" / "munge.sock"
    node = socket.gethostname()
    conf = d / "slurm.conf"
    conf.write_text(textwrap.dedent(f"""\
        ClusterName=nrcsweeptest
        SlurmctldHost=localhost(127.0.0.1)
        SlurmctldPort={_free_port()}
        SlurmdPort={_free_port()}
        SlurmUser=root
        SlurmdUser=root
        AuthType=auth/munge
        CredType=cred/munge
        AuthInfo=socket={sock}
        StateSaveLocation={d / "state"}
        SlurmdSpoolDir={d / "spool"}
        SlurmctldPidFile={d / "slurmctld.pid"}
        SlurmdPidFile={d / "slurmd.pid"}
        SlurmctldLogFile={d / "log" / "slurmctld.log"}
        SlurmdLogFile={d / "log" / "slurmd.log"}
        ProctrackType=proctrack/linuxproc
        TaskPlugin=task/none
        SwitchType=switch/none
        MpiDefault=none
        SchedulerType=sched/builtin
        SelectType=select/cons_tres
        SelectTypeParameters=CR_Core
        ReturnToService=2
        JobAcctGatherType=jobacct_gather/none
        AccountingStorageType=accounting_storage/none
        JobCompType=jobcomp/none
        InactiveLimit=0
        KillWait=5
        NodeName={node} NodeAddr=127.0.0.1 CPUs={os.cpu_count() or 1} RealMemory=1000 State=UNKNOWN
        PartitionName=sweeps Nodes=ALL Default=YES MaxTime=INFINITE State=UP
        """))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    procs: list[subprocess.Popen] = []

    def start(cmd, log):
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=open(log, "w")))
        return procs[-1]

    def stop():
        subprocess.run([exe["scancel"], "--user", "root"], env=env, capture_output=True, timeout=30)
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()

    try:
        munged = start([exe["munged"], "-F", "-f", f"--socket={sock}", f"--key-file={key}",
                        f"--log-file={d / 'log' / 'munged.log'}", f"--pid-file={d / 'munge' / 'munged.pid'}",
                        f"--seed-file={d / 'munge' / 'munged.seed'}"], d / "log" / "munged.err")
        deadline = time.time() + 15
        while not sock.exists() and munged.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        if not sock.exists():
            pytest.skip(f"munged did not start: {_tail(d / 'log' / 'munged.err')} {_tail(d / 'log' / 'munged.log')}")
        ctld = start([exe["slurmctld"], "-D", "-f", str(conf)], d / "log" / "slurmctld.err")
        time.sleep(1)
        slurmd = start([exe["slurmd"], "-D", "-f", str(conf), "-N", node], d / "log" / "slurmd.err")
        deadline, state = time.time() + 60, ""
        while time.time() < deadline and ctld.poll() is None and slurmd.poll() is None:
            state = subprocess.run([exe["sinfo"], "-h", "-N", "-o", "%t"], env=env, capture_output=True,
                                   text=True, timeout=30).stdout.strip()
            if state in ("idle", "mix", "alloc"):
                break
            time.sleep(0.5)
        else:
            pytest.skip(f"slurmctld/slurmd did not bring the node up (sinfo state {state!r}; slurmctld: "
                        f"{_tail(d / 'log' / 'slurmctld.log')}; slurmd: {_tail(d / 'log' / 'slurmd.log')})")
        yield {"conf": conf, "env": env, "dir": d}
    finally:
        stop()


@pytest.mark.slow
def test_a_sweep_through_slurmcluster_on_a_single_node_slurm(toy, slurm):
    cluster = write_grid(toy / "slurm.yaml", f"""\
        class: dask_jobqueue.SLURMCluster
        workers: 2
        options:
          queue: sweeps
          cores: 1
          processes: 1
          memory: 512MB
          walltime: "00:10:00"
          python: {sys.executable}
          log_directory: {slurm["dir"] / "jobs"}
          scheduler_options: {{host: 127.0.0.1, dashboard_address: "127.0.0.1:0"}}
        """)
    grid = write_grid(toy / "g.yaml", "chapter: 01_toy\naxes:\n  seed: [5, 6]\n")
    rc, stdout, err = cli(grid, "--root", toy, "--out", toy / "slurm-out", "--cluster", cluster,
                          env={"SLURM_CONF": str(slurm["conf"])}, timeout=300)
    assert rc == 0, stdout + err
    assert "executor: dask_jobqueue.SLURMCluster, 2 worker(s) asked for" in stdout
    assert stdout.strip().splitlines()[-1].startswith("sweep g: 2 succeeded, 0 failed, 0 skipped")
    recs = records(toy / "slurm-out")
    assert all(r["status"] == "ok" and r["results"]["slurm_job"] > 0 for r in recs.values())  # ran in jobs
    # the same records as a LocalCluster gives
    rc, stdout, err = cli(grid, "--root", toy, "--out", toy / "local-out", "--workers", "1")
    assert rc == 0, stdout + err
    strip = {k: {**r, "results": {n: v for n, v in r["results"].items() if n != "slurm_job"}}
             for k, r in without_volatile(recs).items()}
    local = {k: {**r, "results": {n: v for n, v in r["results"].items() if n != "slurm_job"}}
             for k, r in without_volatile(records(toy / "local-out")).items()}
    assert strip == local
