"""The GitHub Actions workflows: lint clean with actionlint, and do what the README says.

* ci.yml: every pull request runs ``make test`` (the ci book and its checks);
* pages.yml: on main, the checked ci book is deployed to GitHub Pages with the standard actions;
* paper-gpu.yml: by hand only, the paper profile on a self-hosted runner with the labels
  self-hosted, linux, gpu, and that build published;
* each fails when the HTML output is empty, and checks that Jupyter Book is 1.x.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
NAMES = ("ci.yml", "pages.yml", "paper-gpu.yml")
# actionlint knows the labels of GitHub's hosted runners; ours is self-hosted with a "gpu" label.
ACTIONLINT_CONFIG = "self-hosted-runner:\n  labels: [gpu]\n"
EMPTY_CHECK = "The HTML output is not empty"


def load(name: str) -> dict:
    wf = yaml.safe_load((WORKFLOWS / name).read_text())
    wf["on"] = wf.pop(True, wf.get("on"))  # YAML 1.1 reads the key `on` as True
    return wf


def steps(wf: dict):
    for job_name, job in wf["jobs"].items():
        for step in job.get("steps", []):
            yield job_name, step


def uses(wf: dict) -> list[str]:
    return [s["uses"].split("@")[0] for _, s in steps(wf) if "uses" in s]


def runs(wf: dict) -> str:
    return "\n".join(s.get("run", "") for _, s in steps(wf))


def actionlint() -> tuple[str, dict]:
    """The actionlint binary of the `test` extras (beside this Python), and an environment whose
    PATH has the venv's bin first, so that actionlint finds shellcheck for the `run:` scripts."""
    bin_dir = Path(sys.executable).parent
    exe = bin_dir / "actionlint"
    found = str(exe) if exe.is_file() else shutil.which("actionlint")
    if not found:
        pytest.fail("no actionlint: pip install -e '.[test]' (it ships the binary)")
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    return found, env


def lint(files: list[Path], tmp_path: Path) -> subprocess.CompletedProcess:
    exe, env = actionlint()
    config = tmp_path / "actionlint.yaml"
    config.write_text(ACTIONLINT_CONFIG)
    return subprocess.run([exe, "-no-color", "-config-file", str(config), *map(str, files)],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)


def test_the_three_workflows_exist():
    assert sorted(p.name for p in WORKFLOWS.glob("*.yml")) == sorted(NAMES)


def test_workflows_lint_clean(tmp_path):
    result = lint(sorted(WORKFLOWS.glob("*.yml")), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_the_linter_catches_a_broken_workflow(tmp_path):
    """So that a clean lint means something: an unknown key, a bad expression, an unknown
    action input and an unquoted variable (shellcheck) are each reported."""
    bad = tmp_path / "bad.yml"
    bad.write_text("""name: bad
on: push
jobs:
  build:
    runs-on: ubuntu-latest
    timeout: 5
    steps:
      - uses: actions/checkout@v5
        with:
          no-such-input: true
      - run: echo ${{ github.no_such_thing }}
      - run: |
          dir=$1
          rm -rf $dir/*
""")
    result = lint([bad], tmp_path)
    assert result.returncode == 1
    out = result.stdout
    assert "unexpected key \"timeout\"" in out
    assert "no-such-input" in out
    assert "no_such_thing" in out
    if shutil.which("shellcheck", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"):
        assert "SC2086" in out


def test_pull_requests_run_make_test():
    wf = load("ci.yml")
    assert "pull_request" in wf["on"]
    assert "pull_request_target" not in wf["on"]
    assert any(line.strip() == "make test" for line in runs(wf).splitlines())
    assert "apt-get install -y -qq chromium chromium-driver" in runs(wf)
    assert wf["permissions"] == {"contents": "read"}


def test_main_is_deployed_to_github_pages():
    wf = load("pages.yml")
    assert wf["on"]["push"]["branches"] == ["main"]
    assert wf["permissions"]["pages"] == "write" and wf["permissions"]["id-token"] == "write"
    assert {"actions/configure-pages", "actions/upload-pages-artifact", "actions/deploy-pages"} <= set(uses(wf))
    upload = next(s for _, s in steps(wf) if s.get("uses", "").startswith("actions/upload-pages-artifact"))
    assert upload["with"]["path"] == "_build/html"
    assert any(line.strip() == "make test" for line in runs(wf).splitlines())
    deploy = wf["jobs"]["deploy"]
    assert deploy["needs"] == "build" and deploy["environment"]["name"] == "github-pages"
    assert wf["concurrency"]["cancel-in-progress"] is False


def test_the_paper_book_runs_on_a_self_hosted_gpu_runner_and_is_published():
    wf = load("paper-gpu.yml")
    # never on code from pull requests (a self-hosted runner on a public repository)
    assert set(wf["on"]) == {"workflow_dispatch"}
    build = wf["jobs"]["build"]
    assert build["runs-on"] == ["self-hosted", "linux", "gpu"]
    assert "PROFILE=paper make book" in runs(wf)
    assert "download.pytorch.org/whl/$CUDA_TAG" in runs(wf)  # the input goes through env, not ${{ }}
    assert "${{ inputs" not in runs(wf)
    assert {"actions/upload-pages-artifact", "actions/deploy-pages"} <= set(uses(wf))
    deploy = wf["jobs"]["deploy"]
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert deploy["environment"]["name"] == "github-pages"
    assert wf["permissions"] == {"contents": "read"}


def test_no_workflow_runs_untrusted_code_on_a_self_hosted_runner():
    for name in NAMES:
        wf = load(name)
        assert "pull_request_target" not in wf["on"], name
        for job in wf["jobs"].values():
            labels = job["runs-on"] if isinstance(job["runs-on"], list) else [job["runs-on"]]
            if "self-hosted" in labels:
                assert set(wf["on"]) == {"workflow_dispatch"}, name


@pytest.mark.parametrize("name", NAMES)
def test_an_empty_html_output_fails_the_workflow(name, tmp_path):
    """The workflow's own check, run in a folder without a book, with an index only, and with both."""
    script = next(s["run"] for _, s in steps(load(name)) if s.get("name") == EMPTY_CHECK)
    run = lambda: subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path,  # noqa: E731
                                 capture_output=True, text=True, timeout=30)
    nothing = run()
    assert nothing.returncode == 1 and "::error::no _build/html/index.html" in nothing.stdout
    html = tmp_path / "_build" / "html"
    (html / "book").mkdir(parents=True)
    (html / "index.html").write_text('<meta http-equiv="Refresh" content="0; url=book/index.html" />')
    (html / "book" / "index.html").write_text("<h1>x</h1>")
    no_chapters = run()
    assert no_chapters.returncode == 1 and "::error::no chapter pages" in no_chapters.stdout
    (html / "book" / "01_introduction.html").write_text("<h1>x</h1>")
    book = run()
    assert book.returncode == 0, book.stdout + book.stderr
    assert book.stdout.strip() == "1 chapter pages"


@pytest.mark.parametrize("name", NAMES)
def test_every_workflow_checks_jupyter_book_is_1x(name):
    assert "is not 1.x" in runs(load(name))


def test_jupyter_book_is_pinned_below_2():
    from packaging.requirements import Requirement

    book = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["book"]
    req = next(Requirement(r) for r in book if Requirement(r).name == "jupyter-book")
    assert req.specifier.contains("1.0.4") and not req.specifier.contains("2.0.0")
    assert not req.specifier.contains("0.15.1")
