#!/usr/bin/env python
"""Execute the book's chapters under a profile, then build the HTML from the executed notebooks.

    python ci/build_book.py                      # every chapter, `ci` profile, then _build/html
    python ci/build_book.py --profile paper      # full-size profile (GPU when present)
    python ci/build_book.py --only 03_neural_rank_collapse \\
        --set '03_neural_rank_collapse.seed=1'   # one chapter, one parameter changed

For each chapter of ``_toc.yml`` (in order): read ``book/<stem>.md`` with jupytext, execute it
with papermill (kernel ``python3``, working directory ``book/``) with the parameters of
``ci/params/<profile>.yaml`` plus ``profile=<name>``, write the executed notebook to
``_build/stage/book/<stem>.ipynb`` (the injected-parameters cell hidden, the visible parameters
cell showing the values of the run) and record wall time, parameters, status, device and the
SHA-256 of the source in ``_build/records.json``. Then build ``_build/stage`` with jupyter-book,
execution off, warnings as errors, into a fresh folder that replaces ``_build/html`` only when
the build succeeded.

Nothing is lost: a staged notebook is replaced only by a successful run of its chapter (a
failed, timed-out or interrupted chapter leaves the last good one staged, and its own partial
notebook in ``_build/failed/<stem>.ipynb``); the stage is never emptied.

``--only STEM`` executes STEM plus the two frame pages (``index``, which names the profile, and
``reproducibility``, which reports on the run); every other chapter is taken as staged by an
earlier run, with its record. If one of them was never executed, or was executed from another
version of its ``.md``, the HTML is not built and the runner says which chapters to re-run.

Exit status: 0 on success; 1 when a chapter raises or times out, or the HTML build fails (one
line naming the chapter and the error; details in ``_build/failed/`` or the build log); 2 when
the request is refused before anything runs (unknown profile, a profile file that is not valid
YAML, bad ``--set``, a chapter of the toc without its source or its profile section, a profile
parameter that the chapter's parameters cell does not define, a parameter value that the
chapter's rules refuse (``PARAMETERS`` in ``nrc_utils.experiments.<module>``), an unusable
result cache folder); 130 when interrupted.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import project  # noqa: E402  (ci/project.py)
from project import ProjectError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FRAME_PAGES = ("index", "reproducibility")
STAGE = Path("_build") / "stage"
RECORDS = Path("_build") / "records.json"
FAILED = Path("_build") / "failed"  # the notebooks of chapters whose last run failed, for details
BUILD_LOG = Path("_build") / "jupyter-book.log"
PACKAGES = ("torch", "numpy", "scipy", "scikit-learn", "pandas", "matplotlib", "seaborn",
            "jupyter-book", "myst-nb", "sphinx", "papermill", "jupytext", "nrc_utils")
# Files of book/ that are not copied to the stage: sources, and what a run leaves behind.
NOT_STAGED = ("*.md", "*.ipynb", "__pycache__", ".ipynb_checkpoints", ".cache", "data")


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message):  # argparse prints usage + message; we print one line
        raise ProjectError(message)


def parse_args(argv=None):
    p = _OneLineParser(description=__doc__.split("\n\n")[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    p.add_argument("--profile", default="ci", help="profile name: ci/params/<NAME>.yaml (default: ci)")
    p.add_argument("--only", action="append", default=[], metavar="STEM",
                   help="execute only this chapter (repeatable), plus index and reproducibility")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="STEM.name=VALUE",
                   help="override one parameter of the profile (VALUE is YAML; repeatable)")
    p.add_argument("--root", default=str(REPO), help="project root (default: this repository)")
    p.add_argument("--no-html", action="store_true", help="execute and stage, do not build the HTML")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="stop a chapter that runs longer than this (it fails with status 'timeout')")
    p.add_argument("--keep-going", action="store_true",
                   help="after a failed chapter, run the others (exit status 1 all the same, no HTML)")
    p.add_argument("--records", default=None, metavar="PATH",
                   help="write the run records here (default: _build/records.json)")
    return p.parse_args(argv)


# --------------------------------------------------------------------------------------------
def thread_count(profile_name: str) -> int:
    cores = os.cpu_count() or 1
    return min(cores, 2) if profile_name == "ci" else cores


def kernel_environment(profile_name: str) -> dict[str, str]:
    """Variables set for the kernels (they inherit the runner's environment)."""
    n = str(thread_count(profile_name))
    return {
        "OMP_NUM_THREADS": n,
        "MKL_NUM_THREADS": n,
        "OPENBLAS_NUM_THREADS": n,
        "NRC_PROGRESS": "0",  # nrc_utils: no tqdm bars on stderr
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",  # no debugger warning from the kernel
    }


def _run_text(cmd, cwd) -> str:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def hardware() -> dict:
    cpu = platform.processor() or platform.machine()
    ram_gb = None
    try:
        info = Path("/proc/cpuinfo").read_text()
        m = re.search(r"^model name\s*:\s*(.+)$", info, re.M)
        cpu = m.group(1).strip() if m else cpu
        mem = re.search(r"^MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
        ram_gb = round(int(mem.group(1)) / 2**20, 1) if mem else None
    except OSError:
        pass
    device = accelerator()
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gb": ram_gb,
            "platform": platform.platform(), "device": device}


def accelerator() -> str:
    """``"cuda: <GPU name>"`` or ``"cpu"``, asked in a child process so that the runner itself
    holds no CUDA context (and no GPU memory) while the chapters run."""
    probe = ("import torch; print('cuda: ' + torch.cuda.get_device_name(0) "
             "if torch.cuda.is_available() else 'cpu')")
    lines = _run_text([sys.executable, "-c", probe], None).splitlines()
    return lines[-1] if lines else "cpu"


def package_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def git_commit(root: Path) -> dict:
    commit = _run_text(["git", "rev-parse", "HEAD"], root) or None
    dirty = bool(_run_text(["git", "status", "--porcelain", "--untracked-files=no"], root)) if commit else None
    return {"commit": commit, "dirty": dirty}


def glued_text(nb, key: str):
    """The text/plain of a myst-nb ``glue(key, ...)`` output of an executed notebook, or None."""
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            scrap = out.get("metadata", {}).get("scrapbook", {})
            if scrap.get("name") == key:
                text = out.get("data", {}).get("text/plain")
                return text.strip("'\"") if isinstance(text, str) else None
    return None


# --------------------------------------------------------------------------------------------
def read_chapter(chapter, root: Path, params: dict):
    """The chapter's notebook (jupytext), refused if the profile sets a parameter that its
    parameters cell does not define (papermill would define it silently)."""
    import jupytext

    nb = jupytext.read(chapter.source(root))
    declared = project.declared_parameters(nb, f"{chapter.file}.md")
    undeclared = sorted(set(params) - set(declared))
    if undeclared:
        raise ProjectError(f"{chapter.file}.md: its parameters cell does not define "
                           f"{', '.join(undeclared)}, which the profile sets")
    return nb


def check_contents(chapters, params: dict) -> None:
    """Each chapter's parameter values by its own rules (``PARAMETERS`` of its module in
    ``nrc_utils.experiments``), before anything runs; a refusal is one line, exit status 2."""
    from nrc_utils import experiments
    from nrc_utils.params import ParameterError

    for c in chapters:
        try:
            experiments.check_parameters(c.stem, {k: v for k, v in params[c.stem].items() if k != "profile"})
        except ParameterError as exc:
            raise ProjectError(str(exc)) from None


def check_cache() -> None:
    """The result cache folder is usable (``NRC_CACHE_DIR`` or ``.cache/nrc``), before anything runs."""
    from nrc_utils import cache

    try:
        cache.check_cache_dir()
    except cache.CacheDirError as exc:
        raise ProjectError(str(exc)) from None


def execute_chapter(nb, chapter, root: Path, params: dict, out_path: Path):
    """Execute one chapter with papermill; return the executed notebook (raises on error)."""
    import papermill

    out_path.parent.mkdir(parents=True, exist_ok=True)
    return papermill.execute_notebook(
        nb, str(out_path), parameters=params, kernel_name="python3", language="python",
        cwd=str(chapter.source(root).parent), progress_bar=False, log_output=False,
        request_save_on_cell_execute=True,
        # The kernel process writes its own log (TCP warning, KeyboardInterrupt at shutdown)
        # to the runner's stderr; errors in cells still reach us through papermill.
        extra_arguments=["--IPKernelApp.log_level=CRITICAL"],
    )


def present_notebook(nb, params: dict, profile_name: str, source: str):
    """Hide papermill's injected cell and show the run's values in the parameters cell."""
    cell = project.parameters_cell(nb)
    stem, notebook = Path(source).stem, str(Path(source).with_suffix(".ipynb"))
    cell.source = (f"# The values of this run (profile {profile_name!r}); defaults in\n"
                   f"# {source}. Override one with\n"
                   f"#   python ci/build_book.py --only {stem} \\\n"
                   f"#     --set '{stem}.NAME=VALUE'\n"
                   f"# or papermill {notebook} out.ipynb -y 'NAME: VALUE'\n"
                   + project.with_values(cell.source, params))
    for c in nb.cells:
        tags = c.metadata.get("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            c.metadata["tags"] = [*tags, "remove-cell"]
    nb.metadata.pop("jupytext", None)  # a staged notebook is not paired with anything
    return nb


def failure_line(stem: str, exc: Exception, out_path: Path) -> str:
    from papermill.exceptions import PapermillExecutionError

    if isinstance(exc, PapermillExecutionError):
        what = f"{exc.ename}: {exc.evalue}"
        first = next((ln.strip() for ln in (exc.source or "").splitlines() if ln.strip()), "")
        where = f" in the cell starting {first[:50]!r}" if first else ""
    else:
        what = f"{type(exc).__name__}: {exc}"
        where = ""
    what = " ".join(what.split())
    if len(what) > 400:
        what = what[:400] + "..."
    rel = os.path.relpath(out_path)
    details = f" (details: {rel if not rel.startswith('..') else out_path})" if out_path.exists() else ""
    return f"error: chapter {stem} failed{where}: {what}{details}"


def write_records(path: Path, records: dict):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(records, indent=1, default=str))
    tmp.replace(path)


def stage_config(root: Path):
    """``_build/stage/_config.yml`` (the root config with execution off and the .ipynb as the
    documents) and ``_build/stage/_toc.yml``."""
    stage = root / STAGE
    config = project.load_yaml(root / "_config.yml") or {}
    config.setdefault("execute", {})["execute_notebooks"] = "off"
    # local extensions are found relative to the config file: point the stage's at the project's
    local = (config.get("sphinx") or {}).get("local_extensions") or {}
    for name, folder in local.items():
        local[name] = str((root / folder).resolve())
    config["exclude_patterns"] = [p for p in config.get("exclude_patterns", []) if not p.endswith(".ipynb")]
    header = "# Generated by ci/build_book.py from ../../_config.yml: execution off. Do not edit.\n"
    (stage / "_config.yml").write_text(header + yaml.safe_dump(config, sort_keys=False))
    shutil.copy2(root / "_toc.yml", stage / "_toc.yml")


def stage_assets(root: Path, chapters):
    """Copy the non-source files of every folder holding a chapter (bib, images, _static)."""
    stage = root / STAGE
    for folder in sorted({Path(c.file).parent for c in chapters}):
        src = root / folder
        for item in src.iterdir():
            if any(item.match(p) for p in NOT_STAGED):
                continue
            dest = stage / folder / item.name
            if item.is_dir():
                shutil.copytree(item, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*NOT_STAGED))
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(item, dest)
    if (root / "_static").is_dir():
        shutil.copytree(root / "_static", stage / "_static", dirs_exist_ok=True)


def _glue_gaps(log: str) -> dict[str, list[str]]:
    """``{document: [glue keys it references but its notebook does not glue]}`` from a build log."""
    gaps: dict[str, list[str]] = {}
    for m in re.finditer(r"([^\s:]+?)(?:\.ipynb)?:\d*:?\s*WARNING: No key '?([^' ]+?)'? found in glue data", log):
        gaps.setdefault(Path(m.group(1)).stem, []).append(m.group(2))
    return gaps


def build_html(root: Path) -> int:
    """jupyter-book build of the stage, warnings as errors, into a fresh folder that replaces
    ``_build/html`` only when the build succeeded (a failed build leaves the last good book);
    one line per warning on failure, and one line per chapter whose notebook lacks glue keys."""
    jb = Path(sys.executable).parent / "jupyter-book"
    fresh = root / "_build" / ".html-build"
    shutil.rmtree(fresh, ignore_errors=True)
    cmd = [str(jb) if jb.exists() else "jupyter-book", "build", str(root / STAGE),
           "--path-output", str(fresh), "--all", "--warningiserror", "--nitpick", "--keep-going"]
    print(f"html: jupyter-book build {STAGE} (execution off, warnings as errors) ...", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    log = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)  # no colour codes
    (root / BUILD_LOG).write_text(log)
    built = fresh / "_build" / "html"
    if proc.returncode != 0 or not (built / "index.html").is_file():
        gaps = _glue_gaps(log)
        problems = [ln.strip() for ln in log.splitlines()
                    if re.search(r"\b(WARNING|ERROR|CRITICAL|SEVERE)\b|Error:|Exception", ln)
                    and not (gaps and "found in glue data" in ln)]
        for ln in problems[:30]:
            print(f"  {ln}", file=sys.stderr)
        for doc, keys in gaps.items():
            print(f"  {doc}: its notebook does not glue {', '.join(sorted(set(keys))[:8])}"
                  f"{' ...' if len(set(keys)) > 8 else ''}, which its text uses: glue them in the "
                  f"chapter (or re-run it with --only {doc} if its notebook is older than its text)",
                  file=sys.stderr)
        shutil.rmtree(fresh, ignore_errors=True)
        kept = " (the last good book in _build/html is kept)" if (root / "_build" / "html").is_dir() else ""
        print(f"error: the HTML build failed ({len(problems) + len(gaps)} problem(s); "
              f"full log: {BUILD_LOG}){kept}", file=sys.stderr)
        return 1
    target, old = root / "_build" / "html", root / "_build" / ".html-old"
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.replace(old)
    built.replace(target)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(fresh, ignore_errors=True)
    print(f"html: {target / 'index.html'} ({time.perf_counter() - t0:.0f} s)")
    return 0


def source_digest(chapter, root: Path) -> str:
    """SHA-256 of the chapter's source ``.md``: a staged notebook is current only for this text."""
    return hashlib.sha256(chapter.source(root).read_bytes()).hexdigest()


class ChapterTimeout(Exception):
    """A chapter ran past ``--timeout``."""


def _alarm(seconds: float | None):
    """Raise :class:`ChapterTimeout` in the main thread after ``seconds`` (None: never)."""
    if not seconds:
        return
    def on_alarm(_sig, _frame):
        raise ChapterTimeout(f"it ran past --timeout {seconds:g} s")
    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)


def _no_alarm():
    signal.setitimer(signal.ITIMER_REAL, 0)


def stale_chapters(chapters, root: Path, records: dict) -> list[str]:
    """The chapters whose staged notebook is missing, or whose record says it was executed from
    another version of its source (or does not say), with the reason."""
    out = []
    for c in chapters:
        if not (root / STAGE / f"{c.file}.ipynb").is_file():
            out.append(f"{c.stem} (never executed)")
        elif records["chapters"].get(c.stem, {}).get("source_sha256") != source_digest(c, root):
            out.append(f"{c.stem} (staged from an older {c.file}.md)")
    return out


# --------------------------------------------------------------------------------------------
def run(args) -> int:
    root = Path(args.root).resolve()
    profile_name = args.profile
    profile = project.load_profile(root, profile_name)
    profile = project.apply_overrides(profile, args.overrides, profile_name)
    chapters = project.read_toc(root)
    stems = [c.stem for c in chapters]
    for c in chapters:
        if not c.source(root).is_file():
            raise ProjectError(f"chapter {c.stem} listed in _toc.yml has no {c.file}.md")
        if c.stem not in profile:
            raise ProjectError(f"chapter {c.stem} has no section in {project.PARAMS_DIR}/{profile_name}.yaml")
    for stem in args.only:
        if stem not in stems:
            raise ProjectError(f"--only {stem}: not a chapter of _toc.yml; chapters: {', '.join(stems)}")
    if args.timeout is not None and not args.timeout > 0:
        raise ProjectError(f"--timeout {args.timeout:g}: must be a number of seconds > 0")
    selected = [c for c in chapters if not args.only or c.stem in args.only or c.stem in FRAME_PAGES]
    skipped = {project.parse_override(o)[0] for o in args.overrides} - {c.stem for c in selected}
    if skipped:
        raise ProjectError(f"--set for {', '.join(sorted(skipped))}, which --only does not execute")
    records_path = Path(args.records).resolve() if args.records else root / RECORDS
    params = {c.stem: {"profile": profile_name, **profile[c.stem]} for c in selected}
    if "reproducibility" in params and args.records:
        params["reproducibility"]["records_path"] = str(records_path)
    notebooks = {c.stem: read_chapter(c, root, params[c.stem]) for c in selected}
    check_contents(selected, params)
    check_cache()

    os.environ.update(kernel_environment(profile_name))
    logging.getLogger("papermill").setLevel(logging.ERROR)
    logging.getLogger("traitlets").setLevel(logging.ERROR)
    # the kernel client's zmq streams may log a traceback when a kernel is shut down after a failed
    # cell; the failure itself is reported in one line
    logging.getLogger("tornado").setLevel(logging.CRITICAL)
    import nbformat

    # The stage is never emptied: a chapter's staged notebook is replaced only by a successful
    # run of that chapter, so a failed or interrupted run leaves the last good one in place.
    stage = root / STAGE
    stage.mkdir(parents=True, exist_ok=True)
    failed_dir = root / FAILED
    previous = {}
    if records_path.is_file():
        try:
            previous = json.loads(records_path.read_text()).get("chapters", {})
        except (OSError, ValueError):
            previous = {}
    records = {
        "profile": profile_name,
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "git": git_commit(root),
        "hardware": hardware(),
        "threads": thread_count(profile_name),
        "packages": package_versions(),
        "command": " ".join(["python", "ci/build_book.py", *sys.argv[1:]]),
        "chapters": {},
    }
    # Chapters not executed by this run keep their earlier record (when their notebook is staged).
    for c in chapters:
        if c.stem in previous and (stage / f"{c.file}.ipynb").is_file():
            records["chapters"][c.stem] = previous[c.stem]

    def save_records():
        records["chapters"] = {s: records["chapters"][s] for s in stems if s in records["chapters"]}
        write_records(records_path, records)

    save_records()
    n, failures = len(selected), []
    for i, c in enumerate(selected, 1):
        out_path = stage / f"{c.file}.ipynb"
        running = failed_dir / f"{c.stem}.running.ipynb"
        print(f"[{i}/{n}] {c.stem} ({profile_name}) ...", end=" ", flush=True)
        entry = {"file": f"{c.file}.md", "profile": profile_name, "parameters": params[c.stem],
                 "overrides": [o for o in args.overrides if o.startswith(f"{c.stem}.")],
                 "source_sha256": source_digest(c, root),
                 "started": _dt.datetime.now().astimezone().isoformat(timespec="seconds")}
        t0 = time.perf_counter()
        try:
            _alarm(args.timeout)
            nb = execute_chapter(notebooks[c.stem], c, root, params[c.stem], running)
            _no_alarm()
        except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001  (a chapter may raise anything)
            _no_alarm()
            kept = f"{failed_dir / c.stem}.ipynb"
            if running.exists():
                running.replace(kept)
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else \
                "timeout" if isinstance(exc, ChapterTimeout) else "failed"
            attempt = {**entry, "status": status, "wall_s": round(time.perf_counter() - t0, 2),
                       "error": f"{getattr(exc, 'ename', type(exc).__name__)}"}
            if c.stem in records["chapters"]:  # the last good notebook stays staged, with its record
                records["chapters"][c.stem] = {**records["chapters"][c.stem], "last_attempt": attempt}
            else:
                records["chapters"][c.stem] = attempt
            save_records()
            print(status)
            print(failure_line(c.stem, exc, Path(kept)), file=sys.stderr)
            if isinstance(exc, KeyboardInterrupt):
                raise
            failures.append(c.stem)
            if args.keep_going:
                continue
            return 1
        wall = round(time.perf_counter() - t0, 2)
        nb = present_notebook(nb, params[c.stem], profile_name, f"{c.file}.md")
        out_path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, running)
        running.replace(out_path)  # atomic: the staged notebook is whole, old or new
        entry.update(status="ok", wall_s=wall,
                     device=glued_text(nb, "device") or records["hardware"]["device"])
        records["chapters"][c.stem] = entry
        save_records()
        print(f"ok ({wall:.1f} s)", flush=True)

    if failures:
        print(f"error: {len(failures)} chapter(s) failed: {', '.join(failures)}; HTML not built "
              f"(the last good notebooks stay staged; details in {FAILED}/)", file=sys.stderr)
        return 1
    stage_assets(root, chapters)
    stage_config(root)
    if args.no_html:
        print(f"staged: {stage} (no HTML: --no-html)")
        return 0
    stale = stale_chapters(chapters, root, records)
    if stale:
        print(f"staged: {stage}; HTML not built: {', '.join(stale)}: run them with --only, "
              "or the whole book without --only")
        return 0
    return build_html(root)


def main(argv=None) -> int:
    try:
        return run(parse_args(argv))
    except ProjectError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
