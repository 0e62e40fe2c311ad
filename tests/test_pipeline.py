"""The book pipeline: profiles and overrides, the chapter runner, the HTML check.

The refusals run the real runner on this repository (they stop before executing anything);
the executing tests run it on small projects in a temporary folder (``--root``).
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest
from bs4 import BeautifulSoup

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "ci"))
import project  # noqa: E402  (ci/project.py)

RUNNER = ROOT / "ci" / "build_book.py"
CHECKER = ROOT / "ci" / "check_html.py"
HEADER = """\
---
jupytext:
  formats: md:myst,ipynb
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---
"""


def run(*args, cwd=ROOT, timeout=240):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env)
    return proc.returncode, proc.stdout, proc.stderr


def make_project(root: Path, chapters: dict[str, str], params: dict[str, dict], config=False):
    """A book project under ``root``: toc (first chapter is the root), sources, ci profile."""
    stems = list(chapters)
    toc = {"format": "jb-book", "root": f"book/{stems[0]}"}
    if len(stems) > 1:
        toc["chapters"] = [{"file": f"book/{s}"} for s in stems[1:]]
    (root / "book").mkdir(parents=True, exist_ok=True)
    (root / "ci" / "params").mkdir(parents=True, exist_ok=True)
    (root / "_toc.yml").write_text(json.dumps(toc))
    (root / "ci" / "params" / "ci.yaml").write_text(json.dumps(params))
    for stem, body in chapters.items():
        (root / "book" / f"{stem}.md").write_text(HEADER + textwrap.dedent(body))
    if config:  # the book's configuration, with what it needs: the bibliography, the local extension
        shutil.copy2(ROOT / "_config.yml", root / "_config.yml")
        shutil.copy2(ROOT / "book" / "references.bib", root / "book" / "references.bib")
        shutil.copy2(ROOT / "ci" / "sphinx_md_download.py", root / "ci" / "sphinx_md_download.py")


# --------------------------------------------------------------------------------------------
# Refusals: one line on stderr, exit status 2, nothing executed.
def _one_line(rc, out, err):
    assert rc == 2, (rc, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in out + err
    return lines[0]


def test_unknown_profile_is_refused_naming_the_choices():
    line = _one_line(*run(RUNNER, "--profile", "foo"))
    assert line == "error: unknown profile 'foo'; choose one of: ci, paper"


def test_override_of_the_wrong_type_is_refused():
    line = _one_line(*run(RUNNER, "--set", "reproducibility.records_path=3"))
    assert "reproducibility.records_path" in line and "expected str" in line


def test_override_of_an_unknown_parameter_is_refused():
    line = _one_line(*run(RUNNER, "--set", "reproducibility.no_such_parameter=1"))
    assert "no parameter 'no_such_parameter'" in line and "records_path" in line


def test_override_of_an_unknown_chapter_is_refused():
    line = _one_line(*run(RUNNER, "--set", "no_such_chapter.x=1"))
    assert "no chapter 'no_such_chapter'" in line


def test_malformed_override_is_refused():
    line = _one_line(*run(RUNNER, "--set", "reproducibility.records_path"))
    assert "STEM.name=VALUE" in line


def test_missing_chapter_source_is_named(tmp_path):
    make_project(tmp_path, {"index": "# Index\n"}, {"index": {}, "ghost": {}})
    (tmp_path / "_toc.yml").write_text(json.dumps(
        {"format": "jb-book", "root": "book/index", "chapters": [{"file": "book/ghost"}]}))
    line = _one_line(*run(RUNNER, "--root", tmp_path))
    assert line == "error: chapter ghost listed in _toc.yml has no book/ghost.md"


# --------------------------------------------------------------------------------------------
# Overrides: types follow the profile.
PROFILE = {"ch": {"lr": 0.5, "epochs": 10, "lambdas": [0.0, 1e-3], "name": "mlp", "flag": True,
                  "data_root": None}}


def test_overrides_follow_the_profile_types():
    out = project.apply_overrides(
        PROFILE, ["ch.lr=1", "ch.epochs=20", "ch.lambdas=[0, 1e-2, 0.1]", "ch.data_root=/data"], "ci")
    ch = out["ch"]
    assert ch["lr"] == 1.0 and isinstance(ch["lr"], float)  # int accepted where float expected
    assert ch["epochs"] == 20 and isinstance(ch["epochs"], int)
    assert ch["lambdas"] == [0.0, 0.01, 0.1] and all(isinstance(v, float) for v in ch["lambdas"])
    assert ch["data_root"] == "/data"
    assert PROFILE["ch"]["lr"] == 0.5  # the profile itself is untouched


@pytest.mark.parametrize("override", [
    "ch.epochs=2.5",          # float where int
    "ch.flag=1",              # int where bool
    "ch.epochs=true",         # bool where int
    "ch.name=3",              # int where str
    "ch.lr=fast",             # str where float
    "ch.lambdas=0.1",         # float where list
    "ch.lambdas=[0.1, high]",  # list with a str
])
def test_overrides_of_another_type_are_refused(override):
    with pytest.raises(project.ProjectError) as err:
        project.apply_overrides(PROFILE, [override], "ci")
    assert "\n" not in str(err.value) and "expected" in str(err.value)


def test_yaml_reads_exponent_floats_as_floats():
    assert project.load_yaml("a: 1e-3\nb: [2E5, -1e+2, 1.5]\nc: 1\nd: '1e-3'") == {
        "a": 0.001, "b": [200000.0, -100.0, 1.5], "c": 1, "d": "1e-3"}


def test_parameters_cell_values_are_replaced_keeping_comments():
    src = 'profile = "ci"\n# training\nepochs = 200  # λ-free comment\nlams = [\n    0.0,\n    1e-3,\n]  # grid\n'
    out = project.with_values(src, {"profile": "paper", "epochs": 5000, "lams": [0.0, 0.1]})
    assert project.parameter_defaults(out) == {"profile": "paper", "epochs": 5000, "lams": [0.0, 0.1]}
    assert "# training" in out and "# λ-free comment" in out and "# grid" in out


def test_parameters_cell_holds_literals_only():
    assert project.parameter_defaults('profile = "ci"\nn = 3  # samples\nlams = [0.0, 1e-3]\n') == {
        "profile": "ci", "n": 3, "lams": [0.0, 0.001]}
    with pytest.raises(project.ProjectError):
        project.parameter_defaults('profile = "ci"\nimport numpy\n')
    with pytest.raises(project.ProjectError):
        project.parameter_defaults('profile = "ci"\nn = len([1])\n')


# --------------------------------------------------------------------------------------------
# Execution on small projects.
def parameters_cell(*lines):
    """The cell tagged `parameters` of a test chapter: profile = "ci", then ``lines``."""
    body = "\n".join(['profile = "ci"', *lines])
    return f"```{{code-cell}} ipython3\n:tags: [parameters]\n\n{body}\n```\n"


BOOM = f"""\
# Boom

{parameters_cell()}
```{{code-cell}} ipython3
def train():
    raise ValueError("boom")

train()
```
"""


def test_profile_parameter_missing_from_the_parameters_cell_is_refused(tmp_path):
    make_project(tmp_path, {"index": f"# Index\n\n{parameters_cell('seed = 0')}"},
                 {"index": {"seed": 0, "epochs": 3}})
    line = _one_line(*run(RUNNER, "--root", tmp_path))
    assert line == ("error: book/index.md: its parameters cell does not define epochs, "
                    "which the profile sets")
    assert not (tmp_path / "_build" / "records.json").exists()  # refused before running anything


def test_failing_chapter_fails_the_run_naming_chapter_and_error(tmp_path):
    make_project(tmp_path, {"index": f"# Index\n\n{parameters_cell()}", "02_boom": BOOM},
                 {"index": {}, "02_boom": {}})
    rc, out, err = run(RUNNER, "--root", tmp_path)
    assert rc == 1
    assert "Traceback" not in out + err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    assert "chapter 02_boom failed" in lines[0] and "ValueError: boom" in lines[0]
    partial = tmp_path / "_build" / "failed" / "02_boom.ipynb"
    assert partial.is_file() and str(partial.relative_to(tmp_path)) in lines[0]  # for details
    assert not (tmp_path / "_build" / "stage" / "book" / "02_boom.ipynb").exists()  # never staged
    records = json.loads((tmp_path / "_build" / "records.json").read_text())
    assert records["chapters"]["02_boom"]["status"] == "failed"
    assert records["chapters"]["index"]["status"] == "ok"
    assert not (tmp_path / "_build" / "html").exists()


GOOD = f"""\
# A good chapter

{parameters_cell("n_points = 3  # how many points to draw")}
```{{code-cell}} ipython3
import matplotlib.pyplot as plt
from myst_nb import glue

fig, ax = plt.subplots(figsize=(3, 2))
ax.plot(range(n_points))
plt.show()
glue("n_points", n_points, display=False)
```

The line has {{glue:text}}`n_points` points; see {{cite:p}}`zangrando2024neural`, and math $\\lambda W_l$.

```{{bibliography}}
```
"""


def test_good_chapter_is_executed_staged_recorded_and_built(tmp_path):
    make_project(tmp_path, {"01_good": GOOD}, {"01_good": {"n_points": 3}}, config=True)
    rc, out, err = run(RUNNER, "--root", tmp_path, "--set", "01_good.n_points=5")
    assert rc == 0, out + err
    assert err.strip() == "", err  # no warning wall: the kernels' own logs are silenced

    staged = nbformat.read(tmp_path / "_build" / "stage" / "book" / "01_good.ipynb", as_version=4)
    injected = [c for c in staged.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "remove-cell" in injected[0].metadata["tags"]
    shown = project.parameters_cell(staged).source
    assert project.parameter_defaults(shown) == {"profile": "ci", "n_points": 5}  # this run's values
    assert "# how many points to draw" in shown  # ... with the chapter's comments

    records = json.loads((tmp_path / "_build" / "records.json").read_text())
    rec = records["chapters"]["01_good"]
    assert rec["status"] == "ok" and rec["wall_s"] > 0 and rec["device"]
    assert rec["parameters"] == {"profile": "ci", "n_points": 5}
    assert records["profile"] == "ci" and records["threads"] >= 1
    assert {"cpu", "cores", "ram_gb", "device"} <= set(records["hardware"])
    assert {"python", "torch", "numpy", "papermill", "jupyter-book"} <= set(records["packages"])

    stage_cfg = project.load_yaml(tmp_path / "_build" / "stage" / "_config.yml")
    assert stage_cfg["execute"]["execute_notebooks"] == "off"
    assert not any(p.endswith(".ipynb") for p in stage_cfg["exclude_patterns"])

    page = tmp_path / "_build" / "html" / "book" / "01_good.html"
    text = " ".join(BeautifulSoup(page.read_text(), "html.parser").get_text(" ").split())
    assert "n_points = 5" in text and "has 5 points" in text
    assert "--set '01_good.NAME=VALUE'" in text  # the parameters cell says how to override a value
    md = tmp_path / "_build" / "html" / "_sources" / "book" / "01_good.md"  # the .md download
    assert md.read_text() == (tmp_path / "book" / "01_good.md").read_text()
    assert "_sources/book/01_good.md" in page.read_text()
    rc, out, err = run(CHECKER, "--root", tmp_path)
    assert rc == 0, out + err


NOISY = f"""\
# A noisy chapter

{parameters_cell()}
```{{code-cell}} ipython3
import warnings

warnings.warn("a warning wall starts here")
```
"""


def test_stderr_in_a_chapter_fails_the_html_build_naming_it(tmp_path):
    make_project(tmp_path, {"01_noisy": NOISY}, {"01_noisy": {}}, config=True)
    rc, out, err = run(RUNNER, "--root", tmp_path)
    assert rc == 1, out + err
    assert "01_noisy.ipynb" in err and "stderr" in err
    assert err.strip().splitlines()[-1].startswith("error: the HTML build failed")
    assert "\x1b[" not in err  # no colour codes in what the runner prints


def test_check_html_reports_missing_pages_and_figures(tmp_path):
    make_project(tmp_path, {"index": "# Index\n", "01_a": "# A\n"}, {"index": {}, "01_a": {}})
    html = tmp_path / "_build" / "html"
    (html / "book").mkdir(parents=True)
    (html / "index.html").write_text("<html><body></body></html>")
    (html / "book" / "01_a.html").write_text(
        '<html><head><script src="https://cdn.example.org/x.js"></script></head><main>'
        '<div class="output stderr"><pre>UserWarning: x</pre></div>'
        "<pre>Traceback (most recent call last):</pre></main></html>")
    rc, out, err = run(CHECKER, "--root", tmp_path)
    assert rc == 1
    problems = out.strip().splitlines()
    assert any("book/index.html: missing" in p for p in problems)
    assert any("01_a.html: chapter page without a figure" in p for p in problems)
    assert any("01_a.html: contains a Python traceback" in p for p in problems)
    assert any("01_a.html: stderr output" in p for p in problems)
    assert any("loads a script from the network: https://cdn.example.org/x.js" in p for p in problems)


def test_reproducibility_page_runs_alone_without_records(tmp_path):
    """A chapter stays usable on its own: papermill on the paired .ipynb, one parameter set."""
    out_nb = tmp_path / "out.ipynb"
    papermill = Path(sys.executable).parent / "papermill"
    proc = subprocess.run(
        [str(papermill), str(ROOT / "book" / "reproducibility.ipynb"), str(out_nb),
         "-p", "records_path", str(tmp_path / "none.json"), "--cwd", str(ROOT / "book"),
         "--no-progress-bar"],
        capture_output=True, text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    nb = nbformat.read(out_nb, as_version=4)
    text = json.dumps([c.get("outputs", []) for c in nb.cells])
    assert "No run records were found" in text


# --------------------------------------------------------------------------------------------
# Nothing brittle: YAML errors, failed and interrupted chapters, stale stages, timeouts.
def test_control_character_in_a_set_value_is_one_line():
    line = _one_line(*run(RUNNER, "--set", "03_neural_rank_collapse.seed=1\x01"))
    assert line == ("error: --set 03_neural_rank_collapse.seed: '1\\x01' is not valid YAML "
                    "(it contains the control character '\\x01')")


def test_syntax_error_in_a_profile_file_is_one_line(tmp_path):
    make_project(tmp_path, {"index": f"# Index\n\n{parameters_cell('seed = 0')}"}, {"index": {"seed": 0}})
    (tmp_path / "ci" / "params" / "ci.yaml").write_text("index:\n  seed: [0\n")
    line = _one_line(*run(RUNNER, "--root", tmp_path))
    assert line.startswith(f"error: {tmp_path / 'ci' / 'params' / 'ci.yaml'} is not valid YAML: ")
    assert "line 3" in line


FLAKY = f"""\
# Flaky

{parameters_cell("fail = False", "wait = 0.0")}
```{{code-cell}} ipython3
import time
from myst_nb import glue

time.sleep(wait)
if fail:
    raise RuntimeError("broken run")
glue("answer", 42, display=False)
```

The answer is {{glue:text}}`answer`.
"""


def _staged(root, stem):
    return root / "_build" / "stage" / "book" / f"{stem}.ipynb"


def test_failed_chapter_keeps_the_last_good_stage_and_html(tmp_path):
    make_project(tmp_path, {"01_flaky": FLAKY}, {"01_flaky": {"fail": False, "wait": 0.0}}, config=True)
    rc, out, err = run(RUNNER, "--root", tmp_path)
    assert rc == 0, out + err
    good = _staged(tmp_path, "01_flaky").read_bytes()
    page = tmp_path / "_build" / "html" / "book" / "01_flaky.html"
    html = page.read_text()
    assert "The answer is 42" in " ".join(BeautifulSoup(html, "html.parser").get_text(" ").split())

    rc, out, err = run(RUNNER, "--root", tmp_path, "--set", "01_flaky.fail=true")
    assert rc == 1 and "RuntimeError: broken run" in err
    assert _staged(tmp_path, "01_flaky").read_bytes() == good  # the last good notebook, untouched
    assert page.read_text() == html  # and the last good book
    assert (tmp_path / "_build" / "failed" / "01_flaky.ipynb").is_file()
    rec = json.loads((tmp_path / "_build" / "records.json").read_text())["chapters"]["01_flaky"]
    assert rec["status"] == "ok" and rec["parameters"]["fail"] is False  # the record of what is staged
    assert rec["last_attempt"]["status"] == "failed" and rec["last_attempt"]["parameters"]["fail"] is True


def test_timeout_stops_a_chapter_and_keeps_going_runs_the_rest(tmp_path):
    make_project(tmp_path, {"index": f"# Index\n\n{parameters_cell()}", "02_slow": FLAKY, "03_ok": FLAKY},
                 {"index": {}, "02_slow": {"fail": False, "wait": 60.0}, "03_ok": {"fail": False, "wait": 0.0}})
    rc, out, err = run(RUNNER, "--root", tmp_path, "--timeout", "8", "--keep-going", "--no-html")
    assert rc == 1, out + err
    assert "chapter 02_slow failed" in err and "--timeout 8 s" in err
    assert "[3/3] 03_ok (ci) ... ok" in out  # kept going
    records = json.loads((tmp_path / "_build" / "records.json").read_text())["chapters"]
    assert records["02_slow"]["status"] == "timeout" and records["03_ok"]["status"] == "ok"
    assert not _staged(tmp_path, "02_slow").exists() and _staged(tmp_path, "03_ok").is_file()
    assert err.strip().splitlines()[-1].startswith("error: 1 chapter(s) failed: 02_slow")


def test_html_is_not_built_from_a_chapter_staged_from_an_older_source(tmp_path):
    make_project(tmp_path, {"index": f"# Index\n\n{parameters_cell()}", "02_a": FLAKY, "03_b": FLAKY},
                 {"index": {}, "02_a": {"fail": False, "wait": 0.0}, "03_b": {"fail": False, "wait": 0.0}},
                 config=True)
    rc, out, err = run(RUNNER, "--root", tmp_path, "--no-html")
    assert rc == 0, out + err
    src = tmp_path / "book" / "03_b.md"
    src.write_text(src.read_text().replace("The answer is", "Now the answer is"))
    rc, out, err = run(RUNNER, "--root", tmp_path, "--only", "02_a")
    assert rc == 0, out + err
    assert "HTML not built: 03_b (staged from an older book/03_b.md)" in out
    assert not (tmp_path / "_build" / "html").exists()


def test_records_option_writes_the_records_where_asked(tmp_path):
    make_project(tmp_path, {"01_ok": FLAKY}, {"01_ok": {"fail": False, "wait": 0.0}}, config=True)
    target = tmp_path / "elsewhere" / "run.json"
    rc, out, err = run(RUNNER, "--root", tmp_path, "--no-html", "--records", target)
    assert rc == 0, out + err
    assert json.loads(target.read_text())["chapters"]["01_ok"]["status"] == "ok"
    assert not (tmp_path / "_build" / "records.json").exists()
    line = _one_line(*run(RUNNER, "--root", tmp_path, "--timeout", "0"))
    assert line == "error: --timeout 0: must be a number of seconds > 0"


def test_html_build_names_the_chapter_that_lacks_glue_keys(tmp_path):
    gappy = FLAKY.replace("The answer is {glue:text}`answer`.", "The answer is {glue:text}`answer`, "
                          "then {glue:text}`missing_one` and {glue:text}`missing_two`.")
    make_project(tmp_path, {"01_gappy": gappy}, {"01_gappy": {"fail": False, "wait": 0.0}}, config=True)
    rc, out, err = run(RUNNER, "--root", tmp_path)
    assert rc == 1, out + err
    named = [ln for ln in err.splitlines() if "01_gappy: its notebook does not glue" in ln]
    assert len(named) == 1 and "missing_one, missing_two" in named[0], err
    assert "found in glue data" not in err  # no wall of the builder's own lines
    assert not (tmp_path / "_build" / "html").exists() and not (tmp_path / "_build" / ".html-build").exists()


def test_unusable_cache_folder_is_refused_before_anything_runs(tmp_path):
    make_project(tmp_path, {"01_ok": FLAKY}, {"01_ok": {"fail": False, "wait": 0.0}})
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NRC_CACHE_DIR": str(blocker)}
    proc = subprocess.run([sys.executable, str(RUNNER), "--root", str(tmp_path)], capture_output=True,
                          text=True, timeout=120, env=env)
    line = _one_line(proc.returncode, proc.stdout, proc.stderr)
    assert line.startswith(f"error: NRC_CACHE_DIR={blocker} is a file, not a folder; ")
    assert not (tmp_path / "_build").exists()  # refused before anything ran
