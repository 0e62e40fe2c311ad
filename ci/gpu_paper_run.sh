#!/usr/bin/env bash
# Execute the book's chapters under a profile (default: paper) on a machine that has torch &
# co. but no Jupyter stack, e.g. the lent GPU machine, in one shot.
#
#   bash ci/gpu_paper_run.sh                        # every chapter of _toc.yml but index and
#                                                   # reproducibility, in toc order
#   bash ci/gpu_paper_run.sh 03_neural_rank_collapse 02_eigenvalue_equation
#   PROFILE=ci CHAPTER_BUDGET_S=60 bash ci/gpu_paper_run.sh 01_introduction   # smoke test
#
# Run from anywhere; it works in the repository root (the folder above ci/). What it needs:
#   * a python3 (PYTHON=..., default `python3`) with torch, numpy, pandas, matplotlib, seaborn,
#     scikit-learn, scipy, pyyaml, tqdm, packaging -- nothing of the project's .venv is used;
#   * the folder .whl/ (git-ignored; carry it) with the wheels of the Jupyter stack that python
#     lacks (papermill, jupytext, ipykernel + IPython, nbformat, nbclient, myst-nb without its
#     Sphinx dependencies, docutils, ...). They are installed with pip --no-index --no-deps
#     into $NRC_SITE (default /tmp/site); .whl/fallback/ holds markdown-it-py + mdurl, installed
#     only when python's own markdown-it-py is missing or not 3.x/4.x (jupytext needs it).
#
# For each chapter: book/<stem>.md is converted with jupytext to an .ipynb, then executed with
# papermill (kernel python3, cwd book/) with the parameters of ci/params/$PROFILE.yaml for that
# stem plus profile=$PROFILE, under `timeout` (CHAPTER_BUDGET_S, default 240 s, and never past
# the run's deadline TOTAL_BUDGET_S, default 540 s, counted from the start of this script).
# Environment of the kernels: NRC_PROGRESS=0, NRC_CACHE_DIR=/tmp/nrc-cache,
# OMP/MKL/OPENBLAS_NUM_THREADS=16 (2 for PROFILE=ci, as ci/build_book.py does; NRC_THREADS
# overrides), PYDEVD_DISABLE_FILE_VALIDATION=1.
#
# Writes to $OUT (default _build/gpu_run):
#   gpu_records.json   per chapter: stem, status (ok | failed | timeout | missing | refused |
#                      skipped | interrupted), wall_s, error (last error line), device, torch, cuda, cpu_count,
#                      parameters, slowest cells; plus the machine and the setup checks.
#                      Rewritten after every chapter, so it is complete up to the last one run.
#   executed.tar.gz    the executed (or partially executed) notebooks, executed/<stem>.ipynb;
#                      chapters that finished are in the staged form of ci/build_book.py
#                      (injected-parameters cell hidden, parameters cell showing the run's values).
#                      If it is 16 MiB or more: executed_<stem>.tar.gz per chapter instead.
#   log.txt            everything this script printed (papermill's cell log with times, cell
#                      output streams unless LOG_OUTPUT=0).
# Other knobs: DRY_RUN=1 (set up, check, convert and stage parameters; execute nothing),
# NRC_WHEELS (default .whl), NRC_SITE, NRC_GPU_WORK (scratch folder, default /tmp/nrc-gpu-run), NRC_CACHE_DIR,
# NRC_CACHE_CLEAR=1 (empty the cache first: on a warm machine a rerun would reuse, or resume,
# what the last run trained), PYTHON, NRC_THREADS, LOG_OUTPUT, RESERVE_S, MIN_CHAPTER_S.
# Exit status: 0 when every selected chapter is ok, 1 otherwise, 2 when the setup failed.

set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2
PROFILE="${PROFILE:-paper}"
CHAPTER_BUDGET_S="${CHAPTER_BUDGET_S:-240}"
TOTAL_BUDGET_S="${TOTAL_BUDGET_S:-540}"
RESERVE_S="${RESERVE_S:-20}"        # kept back from the deadline for packing and the summary
MIN_CHAPTER_S="${MIN_CHAPTER_S:-20}" # a chapter is skipped when less than this is left
OUT="${OUT:-$ROOT/_build/gpu_run}"
SITE="${NRC_SITE:-/tmp/site}"
WHL="${NRC_WHEELS:-.whl}"  # the wheel folder (another one for a rehearsal with another python)
WORK="${NRC_GPU_WORK:-/tmp/nrc-gpu-run}"
PYTHON="${PYTHON:-python3}"
if [ "$PROFILE" = ci ]; then THREADS="${NRC_THREADS:-2}"; else THREADS="${NRC_THREADS:-16}"; fi
export PROFILE OUT WORK ROOT CHAPTER_BUDGET_S TOTAL_BUDGET_S THREADS
START_SECONDS=$SECONDS

mkdir -p "$OUT" || exit 2
rm -f "$OUT/gpu_records.json" "$OUT"/executed*.tar.gz  # this run's files only (a local OUT is reused)
rm -rf "$WORK" && mkdir -p "$WORK"/{input,executed,result,logs,kernels} || exit 2
LOG="$OUT/log.txt"
: >"$LOG"
exec > >(tee -a "$LOG") 2>&1
TEE_PID=$!
finish() { exec 1>&- 2>&-; wait "$TEE_PID" 2>/dev/null; }
export PYTHONUNBUFFERED=1

echo "== gpu_paper_run: profile=$PROFILE chapter_budget=${CHAPTER_BUDGET_S}s total_budget=${TOTAL_BUDGET_S}s threads=$THREADS"
echo "== root=$ROOT out=$OUT site=$SITE work=$WORK date=$(date -Is)"

PY="$(command -v "$PYTHON" || true)"
if [ -z "$PY" ]; then echo "error: no $PYTHON on PATH"; finish; exit 2; fi
PY="$("$PY" -c 'import sys; print(sys.executable)')"
case "$("$PY" -c 'import sys, os; print(os.path.realpath(sys.prefix))')" in
  "$(realpath "$ROOT")/.venv"*) echo "error: $PY is the project's .venv; use the machine's python3"; finish; exit 2;;
esac
echo "== python: $PY ($("$PY" -c 'import platform; print(platform.python_version())'))"

# ------------------------------------------------------------------------------------------
# The helper: every step that needs Python. Heavy imports are done inside the subcommands.
cat >"$WORK/helper.py" <<'PYEOF'
import datetime as dt
import json
import os
import re
import signal
import sys
import time
from pathlib import Path

ROOT = Path(os.environ["ROOT"])
WORK = Path(os.environ["WORK"])
OUT = Path(os.environ["OUT"])
PROFILE = os.environ["PROFILE"]
RECORDS = OUT / "gpu_records.json"
FRAME_PAGES = ("index", "reproducibility")
sys.path.insert(0, str(ROOT / "ci"))


def now():
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")


def load_records():
    if RECORDS.is_file():
        return json.loads(RECORDS.read_text())
    return {"profile": PROFILE, "started": now(), "chapters": {}}


def save_records(rec):
    tmp = RECORDS.with_suffix(".tmp")
    tmp.write_text(json.dumps(rec, indent=1, default=str))
    tmp.replace(RECORDS)


def one_line(text, limit=400):
    text = " ".join(str(text).split())
    return text[:limit] + "..." if len(text) > limit else text


def first_line(source):
    return next((ln.strip() for ln in (source or "").splitlines() if ln.strip()), "")[:80]


# ------------------------------------------------------------------------------------------
def cmd_probe():
    """Machine description (torch asked here, in a process that exits before any chapter)."""
    import platform
    import subprocess

    info = {"python": platform.python_version(), "executable": sys.executable,
            "cpu_count": os.cpu_count(), "cpu_affinity": len(os.sched_getaffinity(0)),
            "platform": platform.platform(), "hostname": platform.node()}
    try:
        m = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        info["cpu"] = m.group(1).strip() if m else platform.machine()
        m = re.search(r"^MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
        info["ram_gb"] = round(int(m.group(1)) / 2**20, 1) if m else None
    except OSError:
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.version.cuda
        info["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            info["device"] = "cuda: " + torch.cuda.get_device_name(0)
            info["device_count"] = torch.cuda.device_count()
            info["cudnn"] = torch.backends.cudnn.version()
            t0 = time.perf_counter()
            x = torch.ones(256, 256, device="cuda")
            info["cuda_smoke"] = float((x @ x).sum().item())
            torch.cuda.synchronize()
            info["cuda_smoke_s"] = round(time.perf_counter() - t0, 2)
        else:
            info["device"] = "cpu"
    except Exception as exc:  # noqa: BLE001
        info.update(torch=None, cuda=None, device="cpu", torch_error=one_line(f"{type(exc).__name__}: {exc}"))
    try:
        info["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                            text=True, timeout=20).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["git_commit"] = None
    from importlib.metadata import PackageNotFoundError, version

    pk = {}
    for name in ("torch", "numpy", "scipy", "scikit-learn", "pandas", "matplotlib", "seaborn", "pyyaml",
                 "tqdm", "papermill", "jupytext", "nbformat", "nbclient", "jupyter_client", "ipykernel",
                 "ipython", "myst-nb", "docutils", "markdown-it-py", "mdit-py-plugins", "pyzmq", "tornado",
                 "traitlets", "packaging", "typing_extensions", "python-dateutil"):
        try:
            pk[name] = version(name)
        except PackageNotFoundError:
            pk[name] = None
    info["packages"] = pk
    rec = load_records()
    rec.update(machine=info, threads=int(os.environ.get("THREADS", "0")),
               cache_dir=os.environ.get("NRC_CACHE_DIR"),
               cache_files_at_start=int(os.environ.get("NRC_CACHE_FILES_AT_START", "0")),
               chapter_budget_s=float(os.environ["CHAPTER_BUDGET_S"]),
               total_budget_s=float(os.environ["TOTAL_BUDGET_S"]))
    save_records(rec)
    for k in ("python", "torch", "cuda", "cuda_available", "device", "device_count", "cudnn", "cuda_smoke_s",
              "cpu_count", "cpu_affinity", "cpu", "ram_gb", "git_commit", "torch_error"):
        if k in info:
            print(f"   {k}: {info[k]}")
    print("   packages: " + ", ".join(f"{k}={v}" for k, v in pk.items()))


def cmd_stems():
    import project

    print(" ".join(c.stem for c in project.read_toc(ROOT) if c.stem not in FRAME_PAGES))


def cmd_check(stems):
    """Import the Jupyter stack, resolve the python3 kernelspec, check the carried wheels'
    requirements against what python has, scan the chapters' imports. Exit 1 if the stack fails."""
    import importlib
    import importlib.util

    problems = []
    for mod in ("papermill", "jupytext", "nbformat", "nbclient", "jupyter_client", "ipykernel", "IPython",
                "myst_nb", "docutils", "yaml"):
        try:
            m = importlib.import_module(mod)
            print(f"   import {mod}: ok ({Path(m.__file__).parent})")
        except Exception as exc:  # noqa: BLE001
            problems.append(f"import {mod}: {type(exc).__name__}: {exc}")
    try:
        import myst_nb.ext.glue  # what `glue(...)` imports inside a kernel  # noqa: F401
        print("   import myst_nb.ext.glue: ok")
    except Exception as exc:  # noqa: BLE001
        problems.append(f"import myst_nb.ext.glue: {type(exc).__name__}: {exc}")
    try:
        from jupyter_client.kernelspec import KernelSpecManager

        spec = KernelSpecManager().get_kernel_spec("python3")
        print(f"   kernelspec python3: {spec.resource_dir} argv={spec.argv}")
        if spec.argv[0] != sys.executable:
            problems.append(f"kernelspec python3 runs {spec.argv[0]}, not {sys.executable}")
    except Exception as exc:  # noqa: BLE001
        problems.append(f"kernelspec python3: {type(exc).__name__}: {exc}")

    # Requirements of the carried distributions, checked against everything importable.
    site = os.environ.get("SITE")
    warn = []
    try:
        from importlib.metadata import PackageNotFoundError, distributions, version

        from packaging.requirements import Requirement

        for dist in (distributions(path=[site]) if site and Path(site).is_dir() else []):
            if dist.metadata["Name"].lower().replace("_", "-") == "myst-nb":
                continue  # installed without its Sphinx side on purpose: glue() needs none of it
            for req in dist.requires or []:
                r = Requirement(req)
                if r.marker and not r.marker.evaluate({"extra": ""}):
                    continue
                try:
                    have = version(r.name)
                except PackageNotFoundError:
                    warn.append(f"{dist.metadata['Name']} needs {r}: not installed")
                    continue
                if r.specifier and not r.specifier.contains(have, prereleases=True):
                    warn.append(f"{dist.metadata['Name']} needs {r}: have {have}")
    except Exception as exc:  # noqa: BLE001
        warn.append(f"requirement check not done: {type(exc).__name__}: {exc}")
    print("   requirements of the carried wheels: " + ("all met" if not warn else f"{len(warn)} unmet"))
    for w in warn:
        print(f"   warning: {w}")

    # Modules the chapters import that this python cannot find.
    scan = {}
    try:
        import ast

        import jupytext

        for stem in stems:
            src = ROOT / "book" / f"{stem}.md"
            if not src.is_file():
                continue
            missing = set()
            for cell in jupytext.read(src).cells:
                if cell.cell_type != "code":
                    continue
                code = "\n".join(ln for ln in cell.source.splitlines() if not ln.lstrip().startswith(("%", "!")))
                try:
                    tree = ast.parse(code)
                except SyntaxError:
                    continue
                for node in ast.walk(tree):
                    names = []
                    if isinstance(node, ast.Import):
                        names = [a.name for a in node.names]
                    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                        names = [node.module]
                    for n in names:
                        top = n.split(".")[0]
                        if importlib.util.find_spec(top) is None:
                            missing.add(top)
            scan[stem] = sorted(missing)
            print(f"   {stem}: imports " + ("all found" if not missing else "MISSING " + ", ".join(sorted(missing))))
    except Exception as exc:  # noqa: BLE001
        print(f"   import scan not done: {type(exc).__name__}: {exc}")

    # Data sets on disk (the machine cannot download).
    data = {}
    try:
        from nrc_utils import data as nd

        data = {n: bool(nd.available(n)) for n in nd.NAMES}
        print(f"   data root {nd.data_root()}: " + ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in data.items()))
    except Exception as exc:  # noqa: BLE001
        print(f"   data sets not checked: {type(exc).__name__}: {one_line(exc, 200)}")

    rec = load_records()
    rec["setup"] = {"problems": problems, "requirement_warnings": warn, "missing_imports": scan, "data": data}
    save_records(rec)
    for p in problems:
        print(f"   ERROR: {p}")
    return 1 if problems else 0


def cmd_run_chapter(stem):
    """Convert, stage parameters and (unless DRY_RUN) execute one chapter; writes result/<stem>.json."""
    import logging

    import project

    src = ROOT / "book" / f"{stem}.md"
    res_path = WORK / "result" / f"{stem}.json"
    res = {"stem": stem, "started": now()}

    def done(**kw):
        res.update(kw)
        res_path.write_text(json.dumps(res, indent=1, default=str))

    if not src.is_file():
        return done(status="missing", error=f"no book/{stem}.md")
    try:
        profile = project.load_profile(ROOT, PROFILE)
    except project.ProjectError as exc:
        return done(status="refused", error=str(exc))
    if stem not in profile:
        return done(status="refused", error=f"no section {stem!r} in ci/params/{PROFILE}.yaml")
    params = {"profile": PROFILE, **profile[stem]}
    res["parameters"] = params

    import jupytext
    import nbformat

    nb = jupytext.read(src)
    try:
        project.parameters_cell(nb, f"book/{stem}.md")
    except project.ProjectError as exc:
        res["warning"] = str(exc)
        print(f"   warning: {exc}")
    in_path = WORK / "input" / f"{stem}.ipynb"
    out_path = WORK / "executed" / f"{stem}.ipynb"
    jupytext.write(nb, in_path)
    print(f"   {stem}: book/{stem}.md -> {in_path} ({len(nb.cells)} cells); parameters {params}")
    if os.environ.get("DRY_RUN") == "1":
        return done(status="dry-run")

    import papermill
    from papermill.exceptions import PapermillExecutionError

    logging.basicConfig(level=logging.INFO, format="   %(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("traitlets").setLevel(logging.ERROR)
    logging.getLogger("papermill").setLevel(logging.INFO)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    t0 = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(in_path), str(out_path), parameters=params, kernel_name="python3", language="python",
            cwd=str(src.parent), progress_bar=False, log_output=os.environ.get("LOG_OUTPUT", "1") == "1",
            request_save_on_cell_execute=True, extra_arguments=["--IPKernelApp.log_level=CRITICAL"],
        )
    except PapermillExecutionError as exc:
        where = first_line(exc.source)
        return done(status="failed", wall_s=round(time.perf_counter() - t0, 2),
                    error=one_line(f"{exc.ename}: {exc.evalue}") + (f" (in the cell starting {where!r})" if where else ""))
    except Exception as exc:  # noqa: BLE001
        return done(status="failed", wall_s=round(time.perf_counter() - t0, 2),
                    error=one_line(f"{type(exc).__name__}: {exc}"))
    wall = round(time.perf_counter() - t0, 2)
    try:  # the staged form of ci/build_book.py, so that the notebook can go to _build/stage/book/
        from build_book import present_notebook

        nb_out = nbformat.read(out_path, as_version=4)
        nbformat.write(present_notebook(nb_out, params, PROFILE, f"book/{stem}.md"), out_path)
        res["staged_form"] = True
    except Exception as exc:  # noqa: BLE001
        res["staged_form"] = f"not applied: {type(exc).__name__}: {one_line(exc, 200)}"
    return done(status="ok", wall_s=wall)


def notebook_facts(path):
    """Slowest cells, running cell, stderr outputs and the glued `device` of an executed notebook."""
    import nbformat

    facts = {}
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception:  # noqa: BLE001
        return facts
    cells, stderr = [], []
    for i, c in enumerate(nb.cells):
        pm = c.get("metadata", {}).get("papermill", {})
        if c.cell_type != "code":
            continue
        if pm.get("status") == "running":
            facts["running_cell"] = {"index": i, "first_line": first_line(c.source), "start_time": pm.get("start_time")}
        if pm.get("duration") is not None:
            cells.append((round(pm["duration"], 2), i, first_line(c.source)))
        for out in c.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                stderr.append(first_line(out.get("text", "")))
            scrap = out.get("metadata", {}).get("scrapbook", {})
            if scrap.get("name") == "device":
                text = out.get("data", {}).get("text/plain")
                if isinstance(text, str):
                    facts["chapter_device"] = text.strip("'\"")
            if out.get("output_type") == "error" and "error_cell" not in facts:
                facts["error_cell"] = {"index": i, "first_line": first_line(c.source)}
    facts["slowest_cells"] = [{"index": i, "duration_s": d, "first_line": s} for d, i, s in sorted(cells, reverse=True)[:5]]
    facts["cells_timed_s"] = round(sum(d for d, _, _ in cells), 2)
    if stderr:
        facts["stderr_outputs"] = len(stderr)
        facts["first_stderr"] = stderr[0]
    return facts


def cmd_record(stem, rc, outer, budget):
    rc, outer, budget = int(rc), float(outer), float(budget)
    res_path = WORK / "result" / f"{stem}.json"
    res = json.loads(res_path.read_text()) if res_path.is_file() else {"stem": stem}
    if rc in (124, 137) and res.get("status") in (None, "running"):
        res["status"] = "timeout"
    elif rc == 130 and "status" not in res:
        res["status"] = "interrupted"
        res["error"] = "the run was interrupted (signal) during this chapter"
    elif "status" not in res:
        res["status"] = "failed"
        log = WORK / "logs" / f"{stem}.log"
        lines = [ln.strip() for ln in (log.read_text(errors="replace").splitlines() if log.is_file() else []) if ln.strip()]
        res["error"] = one_line(lines[-1] if lines else f"exit status {rc}")
    res.update(rc=rc, wall_outer_s=round(outer, 2), budget_s=budget)
    res.setdefault("wall_s", round(outer, 2))
    out_path = WORK / "executed" / f"{stem}.ipynb"
    if out_path.is_file():
        res.update(notebook_facts(out_path))
    if res["status"] in ("timeout", "interrupted"):
        rc_ = res.get("running_cell")
        what = f"timeout after {budget:.0f} s" if res["status"] == "timeout" else f"interrupted after {outer:.0f} s"
        res["error"] = what + (f" in cell {rc_['index']} ({rc_['first_line']!r}, started {rc_['start_time']})" if rc_ else "")
    rec = load_records()
    m = rec.get("machine", {})
    res.update(device=res.get("chapter_device") or m.get("device"), torch=m.get("torch"), cuda=m.get("cuda"),
               cpu_count=m.get("cpu_count"), profile=PROFILE)
    first = ("stem", "status", "wall_s", "error", "device", "torch", "cuda", "cpu_count")
    rec["chapters"][stem] = {k: res[k] for k in (*first, *(k for k in res if k not in first)) if k in res}
    rec["updated"] = now()
    save_records(rec)


def cmd_skip(stem, reason):
    rec = load_records()
    m = rec.get("machine", {})
    rec["chapters"][stem] = {"stem": stem, "status": "skipped", "wall_s": None, "error": reason,
                             "device": m.get("device"), "torch": m.get("torch"), "cuda": m.get("cuda"),
                             "cpu_count": m.get("cpu_count"), "profile": PROFILE}
    save_records(rec)


def cmd_reap(tag):
    """End the processes (a kernel and its children) that carry NRC_GPU_RUN_TAG=<tag>, by id."""
    marker = f"NRC_GPU_RUN_TAG={tag}".encode()
    me = os.getpid()
    pids = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) == me:
            continue
        try:
            if marker in (p / "environ").read_bytes().split(b"\0"):
                pids.append(int(p.name))
        except OSError:
            continue
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = []
        for pid in pids:
            try:
                os.kill(pid, sig)
                alive.append(pid)
            except ProcessLookupError:
                pass
        if not alive:
            break
        print(f"   reaped leftover process(es) {alive} with {sig.name}")
        time.sleep(3)
        pids = alive


def cmd_summary():
    rec = load_records()
    m = rec.get("machine", {})
    print(f"== summary: profile {rec.get('profile')} | {m.get('device')} | torch {m.get('torch')} cuda {m.get('cuda')}"
          f" | {m.get('cpu_count')} CPUs | python {m.get('python')}")
    rows = [(s, c.get("status"), "" if c.get("wall_s") is None else f"{c['wall_s']:.1f}", (c.get("error") or "")[:90])
            for s, c in rec.get("chapters", {}).items()]
    w = max([len(r[0]) for r in rows] + [7])
    print(f"   {'chapter':<{w}}  {'status':<11} {'wall_s':>8}  error")
    for s, st, wall, err in rows:
        print(f"   {s:<{w}}  {st:<11} {wall:>8}  {err}")
    total = sum(c.get("wall_s") or 0 for c in rec.get("chapters", {}).values())
    print(f"   total chapter wall time: {total:.1f} s")


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    fn = {"probe": cmd_probe, "stems": cmd_stems, "check": lambda *a: sys.exit(cmd_check(list(a))),
          "run-chapter": cmd_run_chapter, "record": cmd_record, "skip": cmd_skip, "reap": cmd_reap,
          "summary": cmd_summary}[cmd]
    fn(*args)
PYEOF

helper() { "$PY" "$WORK/helper.py" "$@"; }

fail_setup() {
  echo "error: setup failed: $*"
  "$PY" - "$*" <<'EOF' || true
import json, os, sys
from pathlib import Path
p = Path(os.environ["OUT"]) / "gpu_records.json"
rec = json.loads(p.read_text()) if p.is_file() else {"profile": os.environ["PROFILE"], "chapters": {}}
rec["setup_failed"] = sys.argv[1]
p.write_text(json.dumps(rec, indent=1))
EOF
  finish
  exit 2
}

# ------------------------------------------------------------------------------------------
echo "== wheels $WHL -> $SITE"
export SITE
if compgen -G "$WHL/*.whl" >/dev/null; then
  echo "   $(ls "$WHL"/*.whl | wc -l) wheels, $(du -sh "$WHL" | cut -f1)"
  stamp="$(cd "$WHL" && ls -l ./*.whl fallback/*.whl 2>/dev/null | md5sum | cut -d' ' -f1) $PY"
  if [ -f "$SITE/.nrc-wheels" ] && [ "$(cat "$SITE/.nrc-wheels")" = "$stamp" ]; then
    echo "   already installed there by an earlier run (same wheels)"
  else
    # a folder this script filled before is replaced (faster than pip --upgrade over it)
    [ -f "$SITE/.nrc-wheels" ] && rm -rf "$SITE"
    t_pip=$SECONDS
    "$PY" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target "$SITE" "$WHL"/*.whl || fail_setup "pip install of $WHL/*.whl"
    echo "   installed in $((SECONDS - t_pip)) s"
    write_stamp=1
  fi
else
  echo "   no $WHL/*.whl here: relying on what $PY already has"
fi
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
# jupytext's mdit-py-plugins needs markdown-it-py >=3,<5: install the carried one only if needed.
if ! "$PY" -c 'import sys, markdown_it; sys.exit(0 if markdown_it.__version__.split(".")[0] in ("3", "4") else 1)' 2>/dev/null; then
  if compgen -G "$WHL/fallback/*.whl" >/dev/null; then
    echo "   markdown-it-py missing or not 3.x/4.x: installing $WHL/fallback/*.whl"
    "$PY" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target "$SITE" "$WHL"/fallback/*.whl || fail_setup "pip install of $WHL/fallback/*.whl"
  fi
fi
[ -n "${write_stamp:-}" ] && echo "$stamp" >"$SITE/.nrc-wheels"

echo "== kernelspec python3"
KDIR="$WORK/kernels/share/jupyter"
mkdir -p "$KDIR/kernels/python3"
"$PY" - "$KDIR/kernels/python3/kernel.json" <<'EOF' || fail_setup "kernelspec"
import json, os, sys
spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (ipykernel)", "language": "python",
        "env": {"PYTHONPATH": os.environ["PYTHONPATH"]}, "metadata": {"debugger": False}}
open(sys.argv[1], "w").write(json.dumps(spec, indent=1))
EOF
export JUPYTER_PATH="$KDIR" JUPYTER_PLATFORM_DIRS=1 JUPYTER_RUNTIME_DIR="$WORK/runtime"
export IPYTHONDIR="$WORK/ipython" MPLCONFIGDIR="$WORK/mpl"
export NRC_PROGRESS=0 NRC_CACHE_DIR="${NRC_CACHE_DIR:-/tmp/nrc-cache}" PYDEVD_DISABLE_FILE_VALIDATION=1
export OMP_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS" OPENBLAS_NUM_THREADS="$THREADS"
[ "${NRC_CACHE_CLEAR:-0}" = 1 ] && rm -rf "$NRC_CACHE_DIR"
mkdir -p "$NRC_CACHE_DIR"
NRC_CACHE_FILES_AT_START=$(find "$NRC_CACHE_DIR" -type f | wc -l)
export NRC_CACHE_FILES_AT_START
echo "   $KDIR/kernels/python3/kernel.json; OMP_NUM_THREADS=$OMP_NUM_THREADS"
echo "   NRC_CACHE_DIR=$NRC_CACHE_DIR ($NRC_CACHE_FILES_AT_START files already there; NRC_CACHE_CLEAR=1 empties it)"

echo "== machine"
if command -v nvidia-smi >/dev/null; then nvidia-smi -L; else echo "   no nvidia-smi"; fi
helper probe || echo "   warning: probe failed"

if [ $# -gt 0 ]; then STEMS=("$@"); else read -r -a STEMS <<<"$(helper stems)" || fail_setup "reading _toc.yml"; fi
[ ${#STEMS[@]} -gt 0 ] || fail_setup "no chapters selected"
echo "== checks (chapters: ${STEMS[*]})"
helper check "${STEMS[@]}" || fail_setup "the Jupyter stack does not work (see the ERROR lines above)"
echo "== setup took $((SECONDS - START_SECONDS)) s"

# ------------------------------------------------------------------------------------------
# Packing, after every chapter (so that a run cut short still brings its notebooks back) and at
# the end, where an archive of 16 MiB or more is split into one per chapter.
LIMIT=$((16 * 1024 * 1024 - 65536))
pack() {
  compgen -G "$WORK/executed/*.ipynb" >/dev/null || return 0
  tar -czf "$OUT/executed.tar.gz.tmp" -C "$WORK" executed && mv -f "$OUT/executed.tar.gz.tmp" "$OUT/executed.tar.gz"
  [ "${1:-}" = final ] || return 0
  if [ "$(stat -c %s "$OUT/executed.tar.gz")" -ge "$LIMIT" ]; then
    echo "   executed.tar.gz is $(stat -c %s "$OUT/executed.tar.gz") bytes (>= 16 MiB): one archive per chapter instead"
    rm -f "$OUT/executed.tar.gz"
    for f in "$WORK"/executed/*.ipynb; do
      s=$(basename "$f" .ipynb)
      tar -czf "$OUT/executed_$s.tar.gz" -C "$WORK" "executed/$s.ipynb"
      if [ "$(stat -c %s "$OUT/executed_$s.tar.gz")" -ge "$LIMIT" ]; then
        echo "   executed_$s.tar.gz too large: left out"; rm -f "$OUT/executed_$s.tar.gz"
      fi
    done
  fi
}

# ------------------------------------------------------------------------------------------
# A TERM/INT/HUP (the device tool's limit, ^C) ends the running chapter and its kernel, records
# it as interrupted and packs what there is.
CHILD=; CUR_STEM=; CUR_TAG=; CUR_T0=; CUR_BUDGET=0
on_signal() {
  trap - TERM INT HUP
  echo "== interrupted: ending ${CUR_STEM:-nothing}, packing what there is"
  if [ -n "$CHILD" ]; then kill -TERM "$CHILD" 2>/dev/null; wait "$CHILD" 2>/dev/null; fi
  if [ -n "$CUR_TAG" ]; then
    helper reap "$CUR_TAG"
    helper record "$CUR_STEM" 130 "$("$PY" -c "print(round($(date +%s.%N) - $CUR_T0, 2))")" "$CUR_BUDGET"
  fi
  pack; helper summary; finish; exit 130
}
trap on_signal TERM INT HUP

n=${#STEMS[@]}; i=0; all_ok=1
for stem in "${STEMS[@]}"; do
  i=$((i + 1))
  left=$((TOTAL_BUDGET_S - (SECONDS - START_SECONDS) - RESERVE_S))
  if [ "$left" -lt "$MIN_CHAPTER_S" ]; then
    echo "== [$i/$n] $stem: skipped (${left}s left of the run's budget)"
    helper skip "$stem" "not run: ${left}s left of TOTAL_BUDGET_S=${TOTAL_BUDGET_S}"
    all_ok=0; continue
  fi
  budget=$CHAPTER_BUDGET_S
  [ "$left" -lt "$budget" ] && budget=$left
  echo "== [$i/$n] $stem ($PROFILE, budget ${budget}s) $(date +%T)"
  tag="nrcgpu-$$-$stem"
  off=$(stat -c %s "$LOG")
  t0=$(date +%s.%N)
  CUR_STEM=$stem; CUR_TAG=$tag; CUR_T0=$t0; CUR_BUDGET=$budget
  NRC_GPU_RUN_TAG="$tag" timeout --signal=TERM --kill-after=15 "$budget" \
      "$PY" "$WORK/helper.py" run-chapter "$stem" &
  CHILD=$!
  wait "$CHILD"; rc=$?
  CHILD=
  t1=$(date +%s.%N)
  helper reap "$tag"
  CUR_TAG=; CUR_STEM=
  sleep 0.5; tail -c +$((off + 1)) "$LOG" >"$WORK/logs/$stem.log"  # for an error line of a crash
  outer=$("$PY" -c "print(round($t1 - $t0, 2))")
  helper record "$stem" "$rc" "$outer" "$budget" || echo "   warning: could not record $stem"
  status=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['chapters']['$stem']['status'])" "$OUT/gpu_records.json" 2>/dev/null)
  echo "== [$i/$n] $stem: ${status:-?} (rc $rc, ${outer}s)"
  [ "$status" = ok ] || all_ok=0
  pack
done

echo "== packing executed notebooks"
pack final
if compgen -G "$OUT/*.tar.gz" >/dev/null; then ls -l "$OUT"/*.tar.gz | sed 's/^/   /'; else echo "   no executed notebook"; fi

helper summary
echo "== done in $((SECONDS - START_SECONDS)) s"
finish
[ "$all_ok" = 1 ] && exit 0 || exit 1
