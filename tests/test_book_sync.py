"""The book's sources agree with one another.

* every ``book/*.md`` with code cells has a paired ``.ipynb`` holding the same cells;
* every chapter is a MyST notebook (``md:myst,ipynb``, kernel ``python3``) with exactly one cell
  tagged ``parameters`` whose first statement is ``profile = "ci"``;
* ``ci/params/ci.yaml`` and ``ci/params/paper.yaml`` have the same chapters and parameter names,
  a section for every chapter of ``_toc.yml``, and each chapter's parameters cell holds the
  ``ci`` values.

When a pair is out of sync: ``make sync`` (``jupytext --sync book/*.md``).
"""

import ast
import sys
from pathlib import Path

import jupytext
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "ci"))
import project  # noqa: E402  (ci/project.py)

BOOK_MD = sorted((ROOT / "book").glob("*.md"))
TOC = project.read_toc(ROOT)


def _has_code(md: Path) -> bool:
    return any(c.cell_type == "code" for c in jupytext.read(md).cells)


NOTEBOOK_MD = [md for md in BOOK_MD if _has_code(md)]
PROFILES = {name: project.load_profile(ROOT, name) for name in project.available_profiles(ROOT)}


def _cells(nb):
    return [(c.cell_type, c.source.strip(), sorted(c.get("metadata", {}).get("tags", []))) for c in nb.cells]


def test_book_has_notebooks():
    assert NOTEBOOK_MD, "no book/*.md with code cells found"


@pytest.mark.parametrize("md", NOTEBOOK_MD, ids=lambda p: p.stem)
def test_md_and_ipynb_are_in_sync(md):
    ipynb = md.with_suffix(".ipynb")
    assert ipynb.is_file(), f"{md.name} has no paired {ipynb.name}: run `make sync`"
    assert _cells(jupytext.read(md)) == _cells(jupytext.read(ipynb)), (
        f"{md.name} and {ipynb.name} differ: run `make sync` (jupytext --sync)"
    )


@pytest.mark.parametrize("md", NOTEBOOK_MD, ids=lambda p: p.stem)
def test_chapter_is_a_paired_myst_notebook(md):
    meta = jupytext.read(md).metadata
    formats = meta.get("jupytext", {}).get("formats", "")
    assert set(formats.split(",")) == {"md:myst", "ipynb"}, f"{md.name}: formats is {formats!r}"
    assert meta.get("kernelspec", {}).get("name") == "python3", f"{md.name}: kernelspec is not python3"


@pytest.mark.parametrize("md", NOTEBOOK_MD, ids=lambda p: p.stem)
def test_one_parameters_cell_starting_with_profile_ci(md):
    cells = project.parameters_cells(jupytext.read(md))
    assert len(cells) == 1, f"{md.name}: {len(cells)} cells tagged 'parameters', expected 1"
    assert cells[0].cell_type == "code"
    first = ast.parse(cells[0].source).body[0]
    assert ast.unparse(first) == "profile = 'ci'", (
        f"{md.name}: the parameters cell must start with profile = \"ci\", not {ast.unparse(first)}"
    )


def test_profiles_exist():
    assert {"ci", "paper"} <= set(PROFILES)


def test_profiles_have_the_same_chapters_and_parameters():
    ci = PROFILES["ci"]
    for name, other in PROFILES.items():
        assert set(other) == set(ci), f"{name}.yaml and ci.yaml list different chapters"
        for stem in ci:
            assert set(other[stem]) == set(ci[stem]), (
                f"{name}.yaml and ci.yaml give {stem} different parameters"
            )
            for key, value in other[stem].items():
                # same type as the ci value (an int may stand for a float); raises otherwise
                project.check_type(ci[stem][key], value, f"{name}.yaml {stem}.{key}")


def test_every_toc_chapter_has_a_profile_section_and_a_source():
    for name, profile in PROFILES.items():
        missing = [c.stem for c in TOC if c.stem not in profile]
        assert not missing, f"{name}.yaml has no section for {missing}"
    absent = [c.file for c in TOC if not c.source(ROOT).is_file()]
    assert not absent, f"_toc.yml lists chapters without a source: {absent}"


def test_every_profile_section_is_a_chapter():
    stems = {c.stem for c in TOC} | {md.stem for md in BOOK_MD}
    stray = sorted(set(PROFILES["ci"]) - stems)
    assert not stray, f"ci/params/ci.yaml has sections for no chapter: {stray}"


@pytest.mark.parametrize("chapter", TOC, ids=lambda c: c.stem)
def test_parameters_cell_defaults_are_the_ci_profile(chapter):
    md = chapter.source(ROOT)
    if not md.is_file():
        pytest.fail(f"{chapter.file}.md (listed in _toc.yml) does not exist")
    defaults = project.declared_parameters(jupytext.read(md), md.name)
    assert defaults.pop("profile") == "ci"
    expected = PROFILES["ci"][chapter.stem]
    assert set(defaults) == set(expected), (
        f"{md.name}: parameters {sorted(defaults)} but ci.yaml has {sorted(expected)}"
    )
    for key, value in expected.items():
        assert defaults[key] == value and type(defaults[key]) is type(value), (
            f"{md.name}: {key} = {defaults[key]!r} in the parameters cell, {value!r} in ci.yaml"
        )
