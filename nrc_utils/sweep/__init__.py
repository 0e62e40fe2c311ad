"""Parameter sweeps: one papermill run of a chapter per point of a grid, on a Dask cluster.

    python -m nrc_utils.sweep ci/sweeps/example.yaml                 # LocalCluster, one worker per core
    python -m nrc_utils.sweep GRID.yaml --workers 2 --out /tmp/sw    # two workers, results in /tmp/sw
    python -m nrc_utils.sweep GRID.yaml --cluster ci/sweeps/slurm_example.yaml   # SLURM (dask-jobqueue)
    python -m nrc_utils.sweep GRID.yaml --scheduler tcp://host:8786  # a running Dask scheduler

The grid file (YAML) names a chapter, a base profile and the axes::

    chapter: 05_deep_linear_networks   # a chapter of _toc.yml
    profile: ci                        # its base parameters: ci/params/ci.yaml (default: ci)
    name: example                      # default: the file's name without .yaml
    threads: 1                         # threads per point (OMP/MKL/OPENBLAS, torch); default 1
    set:                               # fixed for every point (checked like --set)
      n_seeds: 1
    axes:                              # the product of the entries (the last varies fastest)
      - lambdas: {log: [0.005, 0.04, 4], wrap: true}   # 0.005, 0.01, 0.02, 0.04, each as [value]
      - seed: {range: [0, 2]}                          # 0, 1 (Python's range)
      - depths: [[2], [3]]                             # two keys in one entry: zipped,
        lr: [0.2, 0.1]                                 # they advance together

An axis is a list of values, or ``{values: [...]}``, ``{range: [start,] stop[, step]}``,
``{linspace: [start, stop, num]}``, ``{log: [start, stop, num]}`` (geometric, both ends
included); ``wrap: true`` makes each value ``v`` the one-element list ``[v]`` (for the list
parameters of a chapter, such as ``lambdas``). ``axes`` may also be a mapping, one axis per key.

Before anything starts, the grid is expanded and every point checked as the book runner checks a
chapter (``ci/build_book.py``): the profile's types (``ci/project.py``), the parameters the
chapter's cell defines, the chapter's own rules (``PARAMETERS`` of its module in
``nrc_utils.experiments``) and the result cache folder. A refusal is one line, exit status 2.

Each point is one papermill run of the chapter (kernel ``python3``, working directory the
chapter's folder) with its thread count capped; its folder ``OUT/points/<id>/`` receives
``record.json`` (parameters, every glued number, wall time, device, status, error) and the
executed ``notebook.ipynb`` (``partial.ipynb`` for a failed or interrupted run). ``OUT`` gets
``results.parquet`` and ``results.csv``, one row per point (:func:`load_results`).

A rerun skips the points whose record is complete, ``ok`` and made with the same parameters,
threads, chapter source and code (:func:`nrc_utils.cache.code_fingerprint`). A failed point is
recorded with its one-line error and the sweep goes on; Ctrl-C (or SIGTERM) leaves the finished
points as they are and marks the running ones ``interrupted``. The last line printed says how
many points succeeded, failed and were skipped. Exit status: 0, 1 when a point failed, 2 when
refused, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import ast
import datetime as _dt
import hashlib
import importlib
import json
import logging
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
RECORD = "record.json"
NOTEBOOK = "notebook.ipynb"
PARTIAL = "partial.ipynb"
TABLE = "results.parquet"
TABLE_CSV = "results.csv"
MANIFEST = "sweep.json"
#: Fields of a record that say when, where and how fast a point ran, not what it computed.
VOLATILE = ("wall_s", "started", "finished", "host")
GRID_KEYS = ("chapter", "profile", "name", "threads", "set", "axes")
CLUSTER_KEYS = ("class", "options", "workers")
RANGE_KINDS = ("values", "range", "linspace", "log")


def _project():
    """``ci/project.py`` of this repository (as ``ci/build_book.py`` imports it)."""
    ci = REPO / "ci"
    if not (ci / "project.py").is_file():
        raise RuntimeError(f"nrc_utils.sweep needs the repository's ci/project.py, not found in {ci} "
                           "(install nrc_utils editable from a clone: pip install -e .)")
    if str(ci) not in sys.path:
        sys.path.insert(0, str(ci))
    import project  # noqa: PLC0415  (ci/project.py)

    return project


def _refuse(message: str):
    return _project().ProjectError(message)


# --------------------------------------------------------------------------------------------
# The grid
@dataclass
class Point:
    index: int  # position in the grid (0-based)
    id: str  # 12 hex digits of the SHA-256 of what it runs: chapter, profile, parameters, threads
    axes: dict[str, Any]  # the axis values as the grid gives them (before ``wrap``)
    parameters: dict[str, Any]  # every parameter of the run, ``profile`` included

    def label(self) -> str:
        return ", ".join(f"{k}={_compact(v)}" for k, v in self.axes.items())


@dataclass
class Sweep:
    name: str
    grid_path: Path
    root: Path
    chapter: Any  # project.Chapter
    profile: str
    threads: int
    fixed: dict[str, Any]
    axis_names: list[str]
    points: list[Point] = field(default_factory=list)

    @property
    def source(self) -> Path:
        return self.chapter.source(self.root)


def _compact(value) -> str:
    return json.dumps(value, separators=(",", ":")) if isinstance(value, (list, dict)) else repr(value) \
        if isinstance(value, str) else f"{value}"


def _clean_float(x: float) -> float:
    """``x`` to 12 significant digits, so that ``log: [0.005, 0.04, 4]`` gives 0.01, not 0.0099999..."""
    return float(f"{x:.12g}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def axis_values(name: str, spec, where: str) -> tuple[list, list]:
    """``(grid values, parameter values)`` of one axis (they differ only with ``wrap: true``)."""
    if isinstance(spec, list):
        values, wrap = list(spec), False
    elif isinstance(spec, dict):
        kinds = [k for k in RANGE_KINDS if k in spec]
        unknown = sorted(set(spec) - set(RANGE_KINDS) - {"wrap"}, key=str)
        if unknown or len(kinds) != 1:
            raise _refuse(f"{where}: axis {name!r}: expected a list of values or a mapping with one of "
                          f"{', '.join(RANGE_KINDS)} (and optionally wrap), got keys {', '.join(map(str, spec)) or '(none)'}")
        kind, args = kinds[0], spec[kinds[0]]
        wrap = spec.get("wrap", False)
        if not isinstance(wrap, bool):
            raise _refuse(f"{where}: axis {name!r}: wrap must be true or false, got {wrap!r}")
        values = _range_values(name, kind, args, where)
    else:
        raise _refuse(f"{where}: axis {name!r}: expected a list of values or a mapping with one of "
                      f"{', '.join(RANGE_KINDS)}, got {type(spec).__name__} {spec!r}")
    if not values:
        raise _refuse(f"{where}: axis {name!r} has no values")
    return values, ([[v] for v in values] if wrap else values)


def _range_values(name: str, kind: str, args, where: str) -> list:
    what = f"{where}: axis {name!r}: {kind}"
    if kind == "values":
        if not isinstance(args, list):
            raise _refuse(f"{what}: expected a list, got {args!r}")
        return list(args)
    if not isinstance(args, list):
        raise _refuse(f"{what}: expected a list of numbers, got {args!r}")
    if kind == "range":
        if not (1 <= len(args) <= 3 and all(_is_int(a) for a in args)):
            raise _refuse(f"{what}: expected [stop], [start, stop] or [start, stop, step] of integers, got {args!r}")
        if len(args) == 3 and args[2] == 0:
            raise _refuse(f"{what}: the step must not be 0")
        return list(range(*args))
    if not (len(args) == 3 and _is_num(args[0]) and _is_num(args[1]) and _is_int(args[2]) and args[2] >= 1):
        raise _refuse(f"{what}: expected [start, stop, num] (two finite numbers, an integer num >= 1), got {args!r}")
    start, stop, num = float(args[0]), float(args[1]), args[2]
    if kind == "log" and not (start > 0 and stop > 0):
        raise _refuse(f"{what}: start and stop must be > 0, got {args!r}")
    if num == 1:
        return [_clean_float(start)]
    if kind == "linspace":
        return [_clean_float(start + (stop - start) * i / (num - 1)) for i in range(num)]
    return [_clean_float(start * (stop / start) ** (i / (num - 1))) for i in range(num)]


def _axis_entries(axes, where: str) -> list[dict]:
    if isinstance(axes, dict):
        return [{k: v} for k, v in axes.items()]
    if isinstance(axes, list) and all(isinstance(e, dict) and e for e in axes):
        return axes
    raise _refuse(f"{where}: axes must be a mapping (one axis per key) or a list of mappings "
                  f"(one entry per axis; several keys in one entry are zipped), got {axes!r}")


def canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=True)


def point_id(chapter: str, profile: str, parameters: dict, threads: int) -> str:
    blob = canonical({"chapter": chapter, "profile": profile, "parameters": parameters, "threads": threads})
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def load_grid(path, root=None) -> Sweep:
    """Read, expand and check the grid file ``path`` (see the module docstring); raise
    ``ProjectError`` (one line, exit status 2) on any problem. Nothing runs and nothing is written."""
    project = _project()
    from nrc_utils import experiments
    from nrc_utils.params import ParameterError

    path = Path(path)
    root = Path(root).resolve() if root is not None else REPO
    where = str(path)
    if not path.is_file():
        raise project.ProjectError(f"{where}: no such grid file")
    grid = project.load_yaml(path)
    if not isinstance(grid, dict):
        raise project.ProjectError(f"{where}: a grid file is a mapping with keys {', '.join(GRID_KEYS)}, "
                                   f"got {type(grid).__name__}")
    unknown = sorted(set(map(str, grid)) - set(GRID_KEYS))
    if unknown:
        raise project.ProjectError(f"{where}: unknown key(s) {', '.join(unknown)}; a grid has {', '.join(GRID_KEYS)}")
    for key in ("chapter", "axes"):
        if key not in grid:
            raise project.ProjectError(f"{where}: no {key!r}; a grid names a chapter and its axes")
    stem, profile_name = grid["chapter"], grid.get("profile", "ci")
    name = grid.get("name", path.stem)
    threads = grid.get("threads", 1)
    fixed = grid.get("set") or {}
    if not isinstance(stem, str):
        raise project.ProjectError(f"{where}: chapter must be a chapter name such as 05_deep_linear_networks, got {stem!r}")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*", name):
        raise project.ProjectError(f"{where}: name must be letters, digits, '_', '-', '.', got {name!r}")
    if not _is_int(threads) or threads < 1:
        raise project.ProjectError(f"{where}: threads must be an integer >= 1, got {threads!r}")
    if not isinstance(fixed, dict):
        raise project.ProjectError(f"{where}: set must be a mapping of parameter: value, got {fixed!r}")

    chapters = {c.stem: c for c in project.read_toc(root)}
    if stem not in chapters:
        raise project.ProjectError(f"{where}: chapter {stem!r} is not in _toc.yml; chapters: {', '.join(chapters)}")
    chapter = chapters[stem]
    if not chapter.source(root).is_file():
        raise project.ProjectError(f"{where}: chapter {stem} has no {chapter.file}.md")
    profile = project.load_profile(root, profile_name)
    if stem not in profile:
        raise project.ProjectError(f"{where}: chapter {stem} has no section in {project.PARAMS_DIR}/{profile_name}.yaml")
    base = profile[stem]

    def known(pname, what):
        if pname == "profile":
            raise project.ProjectError(f"{where}: {what} 'profile': the base profile is the grid's 'profile' key")
        if pname not in base:
            raise project.ProjectError(f"{where}: {what} {pname!r}: {stem} has no parameter {pname!r}; "
                                       f"its parameters: {', '.join(base) or '(none)'}")

    def checked(pname, value, what):
        return project.check_type(base[pname], value, f"{where}: {what} {pname!r}")

    for k in fixed:
        known(str(k), "set")
    fixed = {str(k): checked(str(k), v, "set") for k, v in fixed.items()}
    entries = _axis_entries(grid["axes"], where)
    axes = []  # one (names, [(grid values tuple, parameter values tuple)]) per product axis
    seen: dict[str, str] = {k: "set" for k in fixed}
    for entry in entries:
        names = [str(k) for k in entry]
        columns = []
        for n in names:
            if n in seen:
                raise project.ProjectError(f"{where}: parameter {n!r} is given twice (in {seen[n]} and in axes)")
            seen[n] = "axes"
            known(n, "axis")
            shown, values = axis_values(n, entry[n], where)
            columns.append((shown, [checked(n, v, f"value {_compact(v)} of axis") for v in values]))
        lengths = {n: len(c[0]) for n, c in zip(names, columns)}
        if len(set(lengths.values())) > 1:
            raise project.ProjectError(f"{where}: zipped axes {', '.join(names)} have different lengths "
                                       f"({', '.join(f'{n}: {k}' for n, k in lengths.items())})")
        rows = [(tuple(c[0][i] for c in columns), tuple(c[1][i] for c in columns))
                for i in range(len(columns[0][0]))]
        axes.append((names, rows))

    nb = _read_chapter(chapter, root)
    declared = project.declared_parameters(nb, f"{chapter.file}.md")
    undeclared = sorted(set(base) - set(declared))
    if undeclared:
        raise project.ProjectError(f"{chapter.file}.md: its parameters cell does not define "
                                   f"{', '.join(undeclared)}, which the profile sets")

    sweep = Sweep(name=name, grid_path=path, root=root, chapter=chapter, profile=profile_name,
                  threads=threads, fixed=fixed, axis_names=[n for names, _ in axes for n in names])
    combos = [((), (), ())]
    for names, rows in axes:
        combos = [(ns + tuple(names), gs + g, ps + p) for ns, gs, ps in combos for g, p in rows]
    ids: dict[str, int] = {}
    total = len(combos)
    for i, (names, shown, values) in enumerate(combos):
        params = {"profile": profile_name, **base, **fixed, **dict(zip(names, values))}
        point = Point(index=i, id="", axes=dict(zip(names, shown)), parameters=params)
        try:
            experiments.check_parameters(stem, {k: v for k, v in params.items() if k != "profile"})
        except ParameterError as exc:
            raise project.ProjectError(f"{where}: point {i + 1} of {total} ({point.label()}): {exc}") from None
        point.id = point_id(stem, profile_name, params, threads)
        if point.id in ids:
            raise project.ProjectError(f"{where}: points {ids[point.id] + 1} and {i + 1} of {total} are the same run "
                                       f"({point.label()})")
        ids[point.id] = i
        sweep.points.append(point)
    return sweep


def _read_chapter(chapter, root: Path):
    import jupytext

    return jupytext.read(chapter.source(root))


def check_cache() -> None:
    """The result cache folder is usable (``NRC_CACHE_DIR`` or ``.cache/nrc``), as the runner checks it."""
    from nrc_utils import cache

    try:
        cache.check_cache_dir()
    except cache.CacheDirError as exc:
        raise _refuse(str(exc)) from None


def source_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# --------------------------------------------------------------------------------------------
# Reading an executed notebook
_NP_WRAP = re.compile(r"^np\.(?:float|int|uint|bool|longdouble|double)\w*\((.*)\)$", re.S)


def _number(text: str):
    """The number a glued ``text/plain`` shows (``0.5``, ``3``, ``True``, ``np.float64(0.5)``,
    ``nan``, ``inf``), or None when it shows anything else."""
    t = text.strip()
    m = _NP_WRAP.match(t)
    if m:
        t = m.group(1).strip()
    if t.lower() in ("nan", "inf", "-inf", "+inf"):
        return float(t)
    try:
        value = ast.literal_eval(t)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    if isinstance(value, bool) or isinstance(value, (int, float)):
        return value
    return None


def glued(nb) -> dict[str, dict]:
    """``{key: mime data}`` of every myst-nb ``glue`` of notebook ``nb`` (papermill keeps the data
    under the scrapbook ``mime_prefix``, removed here, as ``ci/glue_values.py`` reads it)."""
    out = {}
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            scrap = o.get("metadata", {}).get("scrapbook", {})
            name = scrap.get("name")
            if name:
                prefix = scrap.get("mime_prefix", "")
                out[name] = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in o.get("data", {}).items()}
    return out


def glued_numbers(nb) -> dict[str, Any]:
    """``{key: number}`` of every glued value that is a number (or a bool), in glue order; figures,
    sentences and tuples are left out."""
    out = {}
    for key, data in glued(nb).items():
        if "image/png" in data or "image/svg+xml" in data:
            continue
        text = data.get("text/plain")
        text = "".join(text) if isinstance(text, list) else text
        value = _number(text) if isinstance(text, str) else None
        if value is not None:
            out[key] = value
    return out


def glued_device(nb) -> str | None:
    data = glued(nb).get("device")
    if not data:
        return None
    text = data.get("text/markdown", data.get("text/plain"))
    text = "".join(text) if isinstance(text, list) else text
    return str(text).strip("'\" \n") if text else None


def failure_text(exc: BaseException) -> str:
    """One line: ``ValueError: boom (in the cell starting 'train()')``."""
    from papermill.exceptions import PapermillExecutionError

    if isinstance(exc, PapermillExecutionError):
        what = f"{exc.ename}: {exc.evalue}"
        first = next((ln.strip() for ln in (exc.source or "").splitlines() if ln.strip()), "")
        where = f" (in the cell starting {first[:50]!r})" if first else ""
    else:
        what, where = f"{type(exc).__name__}: {exc}", ""
    what = " ".join(what.split())
    if len(what) > 400:
        what = what[:400] + "..."
    return what + where


# --------------------------------------------------------------------------------------------
# What runs on a worker
def thread_environment(threads: int) -> dict[str, str]:
    """The variables a point's kernel runs with: its thread caps, no progress bars."""
    n = str(threads)
    return {"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n,
            "VECLIB_MAXIMUM_THREADS": n, "NUMEXPR_NUM_THREADS": n,
            "NRC_PROGRESS": "0", "PYDEVD_DISABLE_FILE_VALIDATION": "1"}


_device_probe: dict[str, Any] = {}


def _start_device_probe() -> None:
    """Ask, in a child process (so that the worker holds no CUDA context), which device torch sees;
    started once per worker process, read when a point ends."""
    if "proc" in _device_probe or "value" in _device_probe:
        return
    if not (Path("/proc/driver/nvidia").exists() or any(Path("/dev").glob("nvidia[0-9]*"))
            or os.environ.get("CUDA_VISIBLE_DEVICES")):
        _device_probe["value"] = "cpu"  # no NVIDIA driver: no need to import torch to know
        return
    probe = ("import torch; print('cuda: ' + torch.cuda.get_device_name(0) "
             "if torch.cuda.is_available() else 'cpu')")
    try:
        _device_probe["proc"] = subprocess.Popen([sys.executable, "-c", probe], stdout=subprocess.PIPE,
                                                 stderr=subprocess.DEVNULL, text=True)
    except OSError:
        _device_probe["value"] = "cpu"


def _device() -> str:
    if "value" not in _device_probe:
        proc = _device_probe.pop("proc", None)
        try:
            out = proc.communicate(timeout=120)[0] if proc else ""
        except subprocess.TimeoutExpired:
            proc.kill()
            out = ""
        lines = (out or "").strip().splitlines()
        _device_probe["value"] = lines[-1] if lines else "cpu"
    return _device_probe["value"]


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def write_json(path: Path, data) -> None:
    """Write ``data`` to ``path`` atomically (a temporary file moved into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, allow_nan=True, default=str))
    os.replace(tmp, path)


def run_point(task: dict) -> dict:
    """Execute one point (on a worker): papermill into ``partial.ipynb``, then ``notebook.ipynb``
    and ``record.json`` (written last). Returns the record; never raises for a failed notebook."""
    import nbformat
    import papermill

    for name in ("papermill", "traitlets", "nbclient", "asyncio"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # the kernel client's zmq streams log a traceback ("Socket operation on non-socket") when a
    # kernel is shut down after a failed cell; the point's failure is reported by its record
    logging.getLogger("tornado").setLevel(logging.CRITICAL)
    threads = task["record"]["threads"]
    os.environ.update(thread_environment(threads))
    if "torch" in sys.modules:  # the worker's own torch, if anything imported it
        sys.modules["torch"].set_num_threads(threads)
    _start_device_probe()
    folder = Path(task["folder"])
    folder.mkdir(parents=True, exist_ok=True)
    record = {**task["record"], "status": "running", "error": None, "results": {}, "wall_s": None,
              "device": None, "started": _now(), "finished": None, "host": socket.gethostname()}
    write_json(folder / RECORD, record)
    partial, final = folder / PARTIAL, folder / NOTEBOOK
    t0 = time.perf_counter()
    try:
        nb = papermill.execute_notebook(
            nbformat.reads(task["notebook"], as_version=4), str(partial), parameters=task["parameters"],
            kernel_name="python3", language="python", cwd=task["cwd"], progress_bar=False, log_output=False,
            request_save_on_cell_execute=True, extra_arguments=["--IPKernelApp.log_level=CRITICAL"])
    except Exception as exc:  # noqa: BLE001  (a chapter may raise anything)
        record.update(status="failed", error=failure_text(exc), wall_s=round(time.perf_counter() - t0, 3),
                      device=_device(), finished=_now())
        write_json(folder / RECORD, record)
        return record
    wall = round(time.perf_counter() - t0, 3)
    tmp = folder / f".{NOTEBOOK}.tmp"
    nbformat.write(nb, str(tmp))
    os.replace(tmp, final)
    partial.unlink(missing_ok=True)
    record.update(status="ok", results=glued_numbers(nb), wall_s=wall,
                  device=glued_device(nb) or _device(), finished=_now())
    write_json(folder / RECORD, record)
    return record


# --------------------------------------------------------------------------------------------
# The driver
def read_record(folder: Path) -> dict | None:
    try:
        rec = json.loads((folder / RECORD).read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


REQUIRED = ("chapter", "profile", "point", "parameters", "threads", "code_fingerprint", "source_sha256",
            "status", "results", "wall_s", "device")


def is_done(folder: Path, base: dict) -> bool:
    """Whether the point in ``folder`` has a complete ``ok`` record of the same run as ``base``
    (parameters, threads, chapter source, code fingerprint) and its executed notebook."""
    rec = read_record(folder)
    if rec is None or any(k not in rec for k in REQUIRED) or rec["status"] != "ok":
        return False
    if not isinstance(rec["results"], dict) or not (folder / NOTEBOOK).is_file():
        return False
    same = ("chapter", "profile", "point", "threads", "code_fingerprint", "source_sha256")
    return all(rec[k] == base[k] for k in same) and canonical(rec["parameters"]) == canonical(base["parameters"])


def base_record(sweep: Sweep, point: Point, fingerprint: str, source_sha: str) -> dict:
    return {"sweep": sweep.name, "chapter": sweep.chapter.stem, "file": f"{sweep.chapter.file}.md",
            "profile": sweep.profile, "point": point.id, "index": point.index, "axes": point.axes,
            "parameters": point.parameters, "threads": sweep.threads, "code_fingerprint": fingerprint,
            "source_sha256": source_sha}


def _table_value(values: list):
    """A column's values in one type that Parquet and CSV hold (lists and mappings as JSON text)."""
    present = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if present and all(isinstance(v, bool) for v in present):
        return values, "boolean"
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        if all(isinstance(v, int) for v in present) and len(present) == len(values):
            return values, "int64"
        return [float(v) if v is not None else math.nan for v in values], "float64"
    if any(isinstance(v, (list, dict, tuple)) for v in present) or \
            len({type(v) for v in present}) > 1:
        return [None if v is None else canonical(v) if isinstance(v, (list, dict, tuple)) else str(v)
                for v in values], "string"
    return values, "string" if present else "float64"


def results_frame(records: list[dict]):
    """One row per record: ``point``, ``index``, the axes, ``status``, ``error``, ``wall_s``,
    ``device``, then every glued number (a key that is also an axis name gets the prefix ``glue:``)."""
    import pandas as pd

    axis_names: list[str] = []
    result_names: list[str] = []
    for r in records:
        axis_names += [k for k in r.get("axes", {}) if k not in axis_names]
        result_names += [k for k in (r.get("results") or {}) if k not in result_names]
    fixed = ["point", "index", *axis_names, "status", "error", "wall_s", "device"]
    columns: dict[str, list] = {}
    for name in fixed:
        if name in axis_names:
            columns[name] = [r.get("axes", {}).get(name) for r in records]
        else:
            columns[name] = [r.get(name) for r in records]
    for name in result_names:
        col = name if name not in columns else f"glue:{name}"
        columns[col] = [(r.get("results") or {}).get(name) for r in records]
    frame = {}
    for name, values in columns.items():
        if name in ("point", "status", "error", "device") and name not in axis_names:
            values, dtype = [None if v is None else str(v) for v in values], "string"
        elif name == "wall_s":
            values, dtype = [math.nan if v is None else float(v) for v in values], "float64"
        else:
            values, dtype = _table_value(values)
        frame[name] = pd.Series(values, dtype=dtype)
    return pd.DataFrame(frame)


def write_table(out: Path, records: list[dict]) -> Path:
    """``results.parquet`` (pyarrow) and ``results.csv`` in ``out``, one row per point."""
    df = results_frame(records)
    parquet, csv = out / TABLE, out / TABLE_CSV
    tmp = out / f".{TABLE}.tmp"
    df.to_parquet(tmp, index=False, engine="pyarrow")
    os.replace(tmp, parquet)
    tmp = out / f".{TABLE_CSV}.tmp"
    df.to_csv(tmp, index=False)
    os.replace(tmp, csv)
    return parquet


def load_results(out) -> "Any":
    """The results table of the sweep in folder ``out`` (a pandas DataFrame, one row per point):
    ``results.parquet``, else ``results.csv``, else built from the points' records."""
    import pandas as pd

    out = Path(out)
    if (out / TABLE).is_file():
        try:
            return pd.read_parquet(out / TABLE)
        except ImportError:
            pass
    if (out / TABLE_CSV).is_file():
        return pd.read_csv(out / TABLE_CSV)
    records = load_records(out)
    if not records:
        raise FileNotFoundError(f"{out}: no sweep results (no {TABLE}, {TABLE_CSV} or point records)")
    return results_frame(records)


def load_records(out) -> list[dict]:
    """The records of the points of the last sweep run into ``out`` (its ``sweep.json``), in grid
    order; every record found under ``out/points`` when there is no manifest."""
    out = Path(out)
    try:
        ids = json.loads((out / MANIFEST).read_text())["points"]
    except (OSError, ValueError, KeyError, TypeError):
        ids = sorted(p.name for p in (out / "points").glob("*") if p.is_dir())
    records = [read_record(out / "points" / i) for i in ids]
    return [r for r in records if r is not None]


# --------------------------------------------------------------------------------------------
# Clusters
def load_cluster_spec(path) -> dict:
    """The cluster YAML: ``class`` (``dask_jobqueue.SLURMCluster``, ``SLURMCluster``, any importable
    ``module.Class``), ``options`` (its keyword arguments), ``workers`` (how many to ask for)."""
    project = _project()
    path = Path(path)
    if not path.is_file():
        raise project.ProjectError(f"{path}: no such cluster file")
    spec = project.load_yaml(path)
    if not isinstance(spec, dict):
        raise project.ProjectError(f"{path}: a cluster file is a mapping with keys {', '.join(CLUSTER_KEYS)}")
    unknown = sorted(set(map(str, spec)) - set(CLUSTER_KEYS))
    if unknown:
        raise project.ProjectError(f"{path}: unknown key(s) {', '.join(unknown)}; a cluster file has "
                                   f"{', '.join(CLUSTER_KEYS)}")
    cls = spec.get("class")
    if not isinstance(cls, str) or not cls:
        raise project.ProjectError(f"{path}: 'class' must name a cluster class, e.g. dask_jobqueue.SLURMCluster")
    options = spec.get("options") or {}
    if not isinstance(options, dict):
        raise project.ProjectError(f"{path}: 'options' must be a mapping of keyword arguments of {cls}")
    workers = spec.get("workers", 1)
    if not _is_int(workers) or workers < 1:
        raise project.ProjectError(f"{path}: 'workers' must be an integer >= 1, got {workers!r}")
    module, _, name = cls.rpartition(".")
    module = module or "dask_jobqueue"
    try:
        found = getattr(importlib.import_module(module), name)
    except ImportError as exc:
        hint = " (pip install dask-jobqueue)" if module.startswith("dask_jobqueue") else ""
        raise project.ProjectError(f"{path}: class {cls}: cannot import {module}: {exc}{hint}") from None
    except AttributeError:
        raise project.ProjectError(f"{path}: class {cls}: {module} has no {name}") from None
    return {"path": path, "class": found, "name": f"{module}.{name}", "options": dict(options), "workers": workers}


def _scale_now(cluster, n: int) -> None:
    """Ask ``cluster`` for ``n`` workers and submit their jobs before returning, so that a refused
    submission (``sbatch: error: ...``) is raised here, not logged while the sweep waits for workers
    that never come. ``SpecCluster.scale`` itself only schedules the submission; this does what it
    does (one job per ``processes`` workers for dask-jobqueue) and waits for it."""
    spec = getattr(cluster, "worker_spec", None)
    if not (isinstance(spec, dict) and hasattr(cluster, "new_worker_spec") and hasattr(cluster, "_correct_state")):
        cluster.scale(n)  # not a SpecCluster: its own way
        return
    dummy = getattr(cluster, "_dummy_job", None)
    jobs = math.ceil(n / getattr(dummy, "worker_processes", 1) or 1) if dummy is not None else n
    while len(spec) < jobs:
        spec.update(cluster.new_worker_spec())
    cluster.sync(cluster._correct_state)


class _Executor:
    """A Dask client on a LocalCluster, a dask-jobqueue cluster or a running scheduler."""

    def __init__(self, args, sweep: Sweep, cluster_spec: dict | None):
        self.cluster = self.client = None
        try:
            self._start(args, sweep, cluster_spec)
        except Exception as exc:  # noqa: BLE001  (any failure to start is one line)
            self.close()
            if isinstance(exc, _project().ProjectError):
                raise
            what = " ".join(f"{type(exc).__name__}: {exc}".split())
            raise _project().ProjectError(f"the executor did not start ({self.describe}): "
                                          f"{what[:600]}", code=1) from None

    def _start(self, args, sweep: Sweep, cluster_spec: dict | None):
        from distributed import Client, LocalCluster

        env = thread_environment(sweep.threads)
        if args.scheduler:
            self.describe = f"scheduler {args.scheduler}"
            self.client = Client(args.scheduler, timeout="30s")
        elif cluster_spec is not None:
            n = args.workers or cluster_spec["workers"]
            self.describe = f"{cluster_spec['name']}, {n} worker(s) asked for"
            try:
                self.cluster = cluster_spec["class"](**cluster_spec["options"])
            except TypeError as exc:
                raise _refuse(f"{cluster_spec['path']}: {cluster_spec['name']}: {exc}") from None
            _scale_now(self.cluster, n)
            self.client = Client(self.cluster)
        else:
            cores = os.cpu_count() or 1
            n = args.workers or max(1, cores // sweep.threads)
            self.describe = f"LocalCluster, {n} worker(s)"
            self.cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                        dashboard_address="127.0.0.1:0", silence_logs=logging.CRITICAL,
                                        memory_limit=0, env=env)
            self.client = Client(self.cluster)

    def close(self):
        for thing in (self.client, self.cluster):
            if thing is None:
                continue
            try:
                thing.close(timeout=20) if thing is self.client else thing.close()
            except Exception:  # noqa: BLE001  (closing after an interrupt may complain; nothing to keep)
                pass


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="points", unit="pt", disable=not enabled, file=sys.stderr)


def _on_sigterm(_sig, _frame):
    raise KeyboardInterrupt


def run_sweep(args, sweep: Sweep, cluster_spec: dict | None) -> int:
    import jupytext  # noqa: F401  (read below through _read_chapter)
    import nbformat

    from nrc_utils import cache

    out = Path(args.out).resolve() if args.out else sweep.root / "_build" / "sweeps" / sweep.name
    fingerprint = cache.code_fingerprint()
    source_sha = source_digest(sweep.source)
    notebook = nbformat.writes(_read_chapter(sweep.chapter, sweep.root))
    bases = {p.id: base_record(sweep, p, fingerprint, source_sha) for p in sweep.points}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / MANIFEST, {"name": sweep.name, "grid": str(sweep.grid_path.resolve()), "chapter": sweep.chapter.stem,
                                "profile": sweep.profile, "threads": sweep.threads, "axes": sweep.axis_names,
                                "points": [p.id for p in sweep.points], "written": _now()})
    done = [p for p in sweep.points if is_done(out / "points" / p.id, bases[p.id])]
    todo = [p for p in sweep.points if p not in done]
    progress = args.progress if args.progress is not None else os.environ.get("NRC_PROGRESS", "1") != "0"
    counts = {"ok": 0, "failed": 0, "interrupted": 0}
    failures: list[str] = []
    executor = None
    print(f"sweep {sweep.name}: {len(sweep.points)} point(s) of {sweep.chapter.stem} (profile {sweep.profile}, "
          f"{sweep.threads} thread(s) each), {len(done)} done already, {len(todo)} to run; results in {out}",
          flush=True)
    started_at = _now()
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _on_sigterm)
    pending: dict = {}
    counted: set[str] = set()
    bar = None
    try:
        if todo:
            from distributed import as_completed

            executor = _Executor(args, sweep, cluster_spec)
            print(f"executor: {executor.describe}", flush=True)
            cwd = str(sweep.source.parent)
            for p in todo:
                task = {"folder": str(out / "points" / p.id), "record": bases[p.id], "notebook": notebook,
                        "parameters": p.parameters, "cwd": cwd}
                fut = executor.client.submit(run_point, task, key=f"nrc-sweep-{sweep.name}-{p.id}-{time.time_ns()}",
                                             pure=False)
                pending[fut] = p
            bar = _progress(len(todo), progress)
            for fut in as_completed(list(pending)):
                p = pending[fut]
                try:
                    rec = fut.result()
                except Exception as exc:  # noqa: BLE001  (the worker died, or the task could not run)
                    rec = {**bases[p.id], "status": "failed", "error": f"the point's task failed: "
                           f"{' '.join(f'{type(exc).__name__}: {exc}'.split())[:400]}", "results": {},
                           "wall_s": None, "device": None, "started": None, "finished": _now(), "host": None}
                    write_json(out / "points" / p.id / RECORD, rec)
                counts["ok" if rec["status"] == "ok" else "failed"] += 1
                if rec["status"] != "ok":
                    failures.append(f"error: point {p.index + 1} ({p.label()}) failed: {rec['error']} "
                                    f"(details: {out / 'points' / p.id})")
                    if bar.disable:
                        print(failures[-1], file=sys.stderr, flush=True)
                    else:
                        bar.write(failures[-1], file=sys.stderr)
                counted.add(p.id)
                del pending[fut]
                bar.update(1)
    except KeyboardInterrupt:
        if executor is not None:
            try:
                executor.client.cancel(list(pending))
            except Exception:  # noqa: BLE001
                pass
        for p in [p for p in todo if p.id not in counted]:
            folder = out / "points" / p.id
            rec = read_record(folder)
            if rec is not None and rec.get("started") and is_done(folder, bases[p.id]):
                counts["ok"] += 1  # it finished before the driver collected it
            elif rec is not None and rec.get("status") == "failed" and rec.get("finished") and \
                    rec.get("code_fingerprint") == fingerprint and rec.get("started", "") >= started_at:
                counts["failed"] += 1
            elif rec is not None and rec.get("status") == "running" and rec.get("point") == p.id:
                started = rec.get("started")
                rec.update(status="interrupted", error="KeyboardInterrupt: the sweep was interrupted while this "
                           "point ran", finished=_now())
                if started:
                    rec["wall_s"] = round((_dt.datetime.now().astimezone()
                                           - _dt.datetime.fromisoformat(started)).total_seconds(), 3)
                write_json(folder / RECORD, rec)
                counts["interrupted"] += 1
        not_run = len(todo) - counts["ok"] - counts["failed"] - counts["interrupted"]
        if bar is not None:
            bar.close()
        _finish(out, sweep)
        if executor is not None:
            executor.close()
        signal.signal(signal.SIGTERM, previous)
        print(f"sweep {sweep.name} interrupted: {counts['ok']} succeeded, {counts['failed']} failed, {len(done)} "
              f"skipped, {counts['interrupted']} interrupted, {not_run} not started (a rerun runs them)",
              file=sys.stderr, flush=True)
        return 130
    if bar is not None:
        bar.close()
    table = _finish(out, sweep)
    if executor is not None:
        executor.close()
    signal.signal(signal.SIGTERM, previous)
    print(f"sweep {sweep.name}: {counts['ok']} succeeded, {counts['failed']} failed, {len(done)} skipped "
          f"({len(sweep.points)} point(s); results: {table})", flush=True)
    return 1 if counts["failed"] else 0


def _finish(out: Path, sweep: Sweep) -> Path:
    """The results table of this grid's points (a point reused from another grid of the same
    folder gets this grid's index and axes in its row)."""
    rows = []
    for p in sweep.points:
        rec = read_record(out / "points" / p.id)
        if rec is not None:
            rows.append({**rec, "index": p.index, "axes": p.axes})
    return write_table(out, rows)


# --------------------------------------------------------------------------------------------
class _OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        raise _refuse(message)


@dataclass
class ExampleRun:
    """A sweep run through the command line, as a reader runs it (the Sweeps page)."""

    results: Any  # pandas DataFrame, one row per point (load_results)
    summary: str  # the command's last line: "sweep NAME: k succeeded, f failed, s skipped"
    wall_s: float  # wall time of the whole command, cluster start included


def run_example(grid, out, workers: int = 0) -> ExampleRun:
    """``python -m nrc_utils.sweep GRID --out OUT [--workers N] --no-progress`` in a subprocess
    (``workers = 0``: one per core), then its results table; a failed sweep is refused with one
    line holding the command's last lines."""
    command = [sys.executable, "-m", "nrc_utils.sweep", str(grid), "--out", str(out), "--no-progress"]
    if workers:
        command += ["--workers", str(workers)]
    t0 = time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if run.returncode != 0:
        tail = " | ".join((run.stdout + run.stderr).strip().splitlines()[-5:])
        raise RuntimeError(f"the example sweep failed (exit status {run.returncode}): {tail}")
    return ExampleRun(load_results(out), run.stdout.strip().splitlines()[-1], wall)


def file_block(path, language: str = "yaml"):
    """A file of the repository as a Markdown code block (:class:`nrc_utils.report.Markdown`)."""
    from ..report import markdown

    return markdown(f"```{language}\n{Path(path).read_text().rstrip()}\n```")


def parse_args(argv=None):
    p = _OneLineParser(prog="python -m nrc_utils.sweep", description=__doc__.split("\n\n")[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    p.add_argument("grid", help="the grid file (YAML)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="workers: of the LocalCluster (default: cores // threads) or asked of --cluster")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help="run on the workers of a running Dask scheduler, e.g. tcp://host:8786")
    where.add_argument("--cluster", default=None, metavar="CLUSTER.yaml",
                       help="a cluster file naming a dask-jobqueue class and its options (see ci/sweeps/)")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: _build/sweeps/<name>)")
    p.add_argument("--root", default=str(REPO), help="project root (default: this repository)")
    p.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="show the progress bar (default: unless NRC_PROGRESS=0)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return p.parse_args(argv)


def main(argv=None) -> int:
    project = _project()
    try:
        args = parse_args(argv)
        if args.workers is not None and args.workers < 1:
            raise project.ProjectError(f"--workers {args.workers}: must be at least 1")
        if args.workers is not None and args.scheduler:
            raise project.ProjectError("--workers: a running scheduler (--scheduler) has its own workers")
        sweep = load_grid(args.grid, args.root)
        check_cache()
        spec = load_cluster_spec(args.cluster) if args.cluster else None
        for name in ("distributed", "tornado", "asyncio", "papermill", "traitlets"):
            logging.getLogger(name).setLevel(logging.ERROR)
        # a failed job submission is reported by the sweep itself, in one line
        logging.getLogger("tornado.application").setLevel(logging.CRITICAL)
        return run_sweep(args, sweep, spec)
    except project.ProjectError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


__all__ = ["ExampleRun", "Point", "Sweep", "file_block", "run_example", "axis_values", "glued_numbers", "is_done", "load_cluster_spec", "load_grid",
           "load_records", "load_results", "main", "results_frame", "run_point", "write_table"]
