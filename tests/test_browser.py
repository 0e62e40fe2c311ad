"""ci/check_browser.py in headless Chromium on small HTML fixtures, served as the book is.

Each broken fixture (an image that does not load, untypeset math, an unrendered MyST directive
or role, ...) must make the check fail with its own line; a good page passes in both themes and
leaves its screenshots. Skipped only when Debian's Chromium is absent (``make test`` installs it
where apt is usable).
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "ci"))
import check_browser  # noqa: E402  (ci/check_browser.py)
from check_browser import Expect, Page  # noqa: E402

pytestmark = pytest.mark.skipif(not Path(check_browser.CHROMIUM).exists(),
                                reason=f"no {check_browser.CHROMIUM}: {check_browser.INSTALL_HINT}")
pytest.importorskip("playwright", reason="the Python package playwright is missing (pip install -e '.[test]')")

BOOK = "Fixture Book"
REPO_URL = "https://github.com/nrc-book/neural-rank-collapse"
EXPECT = Expect(book_title=BOOK, repository_url=REPO_URL, branch="main")


def mathjax_dir() -> Path:
    """MathJax as the book serves it (sphinx-mathjax-offline's copy, in the `book` extras)."""
    try:
        path = Path(importlib.metadata.distribution("sphinx-mathjax-offline")
                    .locate_file("sphinx-mathjax-offline/static/mathjax"))
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("sphinx-mathjax-offline is not installed (pip install -e '.[book]')")
    if not (path / "tex-chtml.js").is_file():
        pytest.skip(f"no MathJax in {path}")
    return path


def page(title: str, body: str, *, mathjax: bool = True, head: str = "") -> str:
    """A page shaped like the book's: the theme's head script, MathJax from _static, an article."""
    mj = ('<script>window.MathJax = {"options": {"processHtmlClass": "tex2jax_process|mathjax_process|math|output_area"}}</script>'
          '<script defer src="../_static/mathjax/tex-chtml.js"></script>') if mathjax else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title} &#8212; {BOOK}</title>
<script>
  document.documentElement.dataset.mode = localStorage.getItem("mode") || "";
  document.documentElement.dataset.theme = localStorage.getItem("theme") || "";
</script>{mj}{head}</head>
<body><main><article class="bd-article"><section class="tex2jax_ignore mathjax_ignore">
<h1>{title}<a class="headerlink" href="#">#</a></h1>
{body}
</section></article></main></body></html>"""


FIGURE = '<figure class="align-default"><img alt="fig" src="../_images/{name}"></figure>'
MATH = '<p>The rank <span class="math notranslate nohighlight">\\(K - 1\\)</span> of <span class="math notranslate nohighlight">\\(W_l\\)</span>.</p>'
THEOREM = ('<div class="proof theorem admonition" id="thm-a"><p class="admonition-title">'
           '<span class="caption-number">Theorem {n}</span> (Title)</p><section class="theorem-content">'
           '<p>Text.</p></section></div><div class="proof admonition" id="proof"><p>Proof. Short.</p></div>'
           '<p>By <a class="reference internal" href="#thm-a">Theorem {n}</a>.</p>')
# the header buttons of sphinx-book-theme and a notebook's parameters cell, as the book renders them
BUTTONS = """
<div class="dropdown dropdown-launch-buttons"><ul class="dropdown-menu">
<li><a class="btn dropdown-item" href="https://mybinder.org/v2/gh/{slug}/main?urlpath=tree/book/{stem}.ipynb">Binder</a></li>
<li><a class="btn dropdown-item" href="https://colab.research.google.com/github/{slug}/blob/main/book/{stem}.ipynb">Colab</a></li>
</ul></div>
<div class="dropdown dropdown-source-buttons"><ul class="dropdown-menu">
<li><a class="btn btn-source-repository-button dropdown-item" href="https://github.com/{slug}">Repository</a></li></ul></div>
<div class="dropdown dropdown-download-buttons"><ul class="dropdown-menu">{downloads}</ul></div>"""
DOWNLOAD = '<li><a class="btn dropdown-item" href="../_sources/book/{file}">{suffix}</a></li>'
PARAMS = ('<div class="cell tag_parameters docutils container"><div class="cell_input docutils container">'
          '<pre>{comment}\nprofile = \'ci\'\nseed = 0</pre></div></div>')
OVERRIDE = ("# The values of this run (profile 'ci'); defaults in book/{stem}.md\n"
            "# Override: python ci/build_book.py --only {stem} --set '{stem}.seed=1'")


def notebook_page(stem: str, *, slug="nrc-book/neural-rank-collapse", suffixes=(".ipynb", ".md"),
                  comment: str | None = None, injected: bool = False) -> str:
    downloads = "".join(DOWNLOAD.format(file=f"{stem}{s}", suffix=s) for s in suffixes)
    body = (BUTTONS.format(slug=slug, stem=stem, downloads=downloads)
            + PARAMS.format(comment=comment if comment is not None else OVERRIDE.format(stem=stem))
            + ('<div class="cell tag_injected-parameters docutils container"><pre># Parameters\nseed = 1</pre></div>'
               if injected else "")
            + FIGURE.format(name="opaque.png") + MATH + THEOREM.format(n=1))
    return page(stem, body)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from PIL import Image

    html = tmp_path_factory.mktemp("browser") / "html"
    (html / "_static").mkdir(parents=True)
    (html / "_static" / "mathjax").symlink_to(mathjax_dir(), target_is_directory=True)
    (html / "_images").mkdir()
    (html / "_sources" / "book").mkdir(parents=True)
    Image.new("RGBA", (60, 40), (255, 255, 255, 255)).save(html / "_images" / "opaque.png")
    Image.new("RGBA", (60, 40), (0, 0, 0, 0)).save(html / "_images" / "transparent.png")
    (html / "_images" / "broken.png").write_bytes(b"not a png at all")
    for stem in ("ch_good", "ch_no_md", "ch_elsewhere", "ch_no_override"):
        for s in (".ipynb", ".md"):
            (html / "_sources" / "book" / f"{stem}{s}").write_text("{}")
    pages = {
        "good": page("Good", FIGURE.format(name="opaque.png") + MATH + THEOREM.format(n=1)),
        "broken_image": page("Broken image", FIGURE.format(name="missing.png")),
        "corrupt_image": page("Corrupt image", FIGURE.format(name="broken.png")),
        "transparent": page("Transparent", FIGURE.format(name="transparent.png")),
        "raw_dollar": page("Raw dollar", "<p>The loss $\\mathcal{L}_\\lambda$ was never typeset.</p>"),
        "no_mathjax": page("No MathJax", MATH, mathjax=False),
        "tex_error": page("TeX error", '<p><span class="math notranslate nohighlight">\\(x^2^3\\)</span></p>'),
        "tex_unbalanced": page("TeX unbalanced", '<p><span class="math notranslate nohighlight">\\(\\frac{1}{\\)</span></p>'),
        "directive": page("Directive", "<p>```{figure} spectra.png</p><p>:name: fig-spectra</p>"),
        "glue_role": page("Glue role", "<p>The accuracy is {glue:text}`acc:.3g` on the test set.</p>"),
        "cite_role": page("Cite role", "<p>As shown in {cite:p}`zangrando2024`.</p>"),
        "colon_fence": page("Colon fence", "<p>:::{prf:theorem} Untitled</p>"),
        "stderr": page("Stderr", '<div class="cell_output docutils container"><div class="output stderr">'
                                 '<pre>UserWarning: something</pre></div></div>'),
        "traceback": page("Traceback", "<pre>Traceback (most recent call last):\n  File x</pre>"),
        "js_error": page("JS error", "<script>undefinedFunction();</script>"),
        "unnumbered": page("Unnumbered", THEOREM.format(n="")),
        "unresolved": page("Unresolved", '<p>See <span class="xref std std-ref">sec-missing</span>.</p>'),
        "bad_title": page("Heading", "").replace("<title>Heading", "<title>Something else"),
        "external": page("External", '<img src="https://example.org/logo.png" alt="x">'),
    }
    book = html / "book"
    book.mkdir()
    for name, text in pages.items():
        (book / f"{name}.html").write_text(text, encoding="utf-8")
    (book / "ch_good.html").write_text(notebook_page("ch_good"), encoding="utf-8")
    (book / "ch_no_md.html").write_text(notebook_page("ch_no_md", suffixes=(".ipynb",)), encoding="utf-8")
    (book / "ch_elsewhere.html").write_text(notebook_page("ch_elsewhere", slug="someone/fork"), encoding="utf-8")
    (book / "ch_no_override.html").write_text(notebook_page(
        "ch_no_override", comment="# The values of this run (profile 'ci'); defaults in book/ch_no_override.md",
        injected=True), encoding="utf-8")
    return html


@pytest.fixture(scope="module")
def light(site):
    """The problems of every fixture page in the light theme, by page name (one browser run)."""
    names = sorted(p.stem for p in (site / "book").glob("*.html"))
    pages = [Page(f"book/{n}.html", chapter=n.startswith("ch_") or n == "unnumbered",
                  notebook=n.startswith("ch_")) for n in names]
    problems = check_browser.check(site, pages, EXPECT, themes=("light",), timeout_s=30)
    by_page: dict[str, list[str]] = {n: [] for n in names}
    for line in problems:
        name = line.split(" ", 1)[0].removeprefix("book/").removesuffix(".html")
        by_page[name].append(line.split(": ", 1)[1])
    return by_page


def test_good_page_passes_in_both_themes_and_leaves_screenshots(site, tmp_path):
    shots = tmp_path / "screenshots"
    problems = check_browser.check(site, [Page("book/good.html"), Page("book/ch_good.html", chapter=True, notebook=True)],
                                   EXPECT, screenshots=shots, timeout_s=30)
    assert problems == []
    names = sorted(p.name for p in shots.glob("*.png"))
    assert names == ["ch_good-dark-figure.png", "ch_good-dark.png", "ch_good-light-figure.png", "ch_good-light.png",
                     "good-dark-figure.png", "good-dark.png", "good-light-figure.png", "good-light.png"]
    assert all((shots / n).read_bytes().startswith(b"\x89PNG\r\n\x1a\n") for n in names)
    assert (shots / "good-light.png").stat().st_size > 5000  # a 1280x900 viewport, not an empty file


def test_a_broken_image_fails(light):
    assert any("image did not load: ../_images/missing.png (natural size 0x0)" in p for p in light["broken_image"])
    assert any("request failed (404)" in p and "missing.png" in p for p in light["broken_image"])
    assert any("image did not load: ../_images/broken.png" in p for p in light["corrupt_image"])


def test_a_transparent_figure_fails(light):
    assert light["transparent"] == ["figure ../_images/transparent.png is transparent (corner alpha 0): give it an "
                                    "opaque background (dark text vanishes on the dark theme)"]


def test_untypeset_math_fails(light):
    assert len(light["raw_dollar"]) == 1, light["raw_dollar"]
    assert light["raw_dollar"][0].startswith("raw TeX in the text (not typeset): ")
    assert "The loss $\\mathcal{L}_\\lambda$ was never" in light["raw_dollar"][0]
    assert "MathJax is not loaded, 2 math element(s) left as TeX" in light["no_mathjax"]
    assert any(p.startswith("2 math element(s) not typeset by MathJax, first: '\\(K - 1\\)'")
               for p in light["no_mathjax"])
    assert light["tex_error"] == ["MathJax error: 'Double exponent: use braces to clarify'"]
    assert light["tex_unbalanced"] == ["1 math element(s) not typeset by MathJax, first: '\\(\\frac{1}{\\)'",
                                       "raw TeX in the text (not typeset): 'TeX unbalanced \\(\\frac{1}{\\)'"]


def test_an_unrendered_directive_or_role_fails(light):
    for name, fragment in (("directive", "```{figure}"), ("glue_role", "{glue:text}"), ("cite_role", "{cite:p}"),
                           ("colon_fence", ":::{prf:theorem}")):
        assert len(light[name]) == 1 and light[name][0].startswith("unrendered MyST in the text:"), (name, light[name])
        assert fragment in light[name][0]


def test_errors_in_outputs_and_scripts_fail(light):
    assert light["stderr"] == ["stderr output: 'UserWarning: something'"]
    assert light["traceback"] == ["shows a Python traceback"]
    assert len(light["js_error"]) == 1 and "undefinedFunction is not defined" in light["js_error"][0]


def test_theorems_numbered_and_references_resolved(light):
    assert light["good"] == []
    assert light["unnumbered"] == ["theorem block 'thm-a' is not numbered ('Theorem (Title)')"]
    assert light["unresolved"] == ["unresolved cross-reference 'sec-missing'"]


def test_title_and_external_requests(light):
    assert light["bad_title"] == ["title 'Something else — Fixture Book' does not start with the heading 'Heading'"]
    assert light["external"] == ["requests a resource outside the book (blocked): https://example.org/logo.png",
                                 "image did not load: https://example.org/logo.png (natural size 0x0)"]


def test_reader_features(light):
    assert light["ch_good"] == []
    assert light["ch_no_md"] == ["the download menu offers no .md (it offers .ipynb)"]
    assert sorted(light["ch_elsewhere"]) == sorted([
        "the Binder button points at https://mybinder.org/v2/gh/someone/fork/main?urlpath=tree/book/ch_elsewhere.ipynb, "
        "not at nrc-book/neural-rank-collapse@main book/ch_elsewhere.ipynb (repository.url of _config.yml)",
        "the Colab button points at https://colab.research.google.com/github/someone/fork/blob/main/book/ch_elsewhere.ipynb, "
        "not at nrc-book/neural-rank-collapse@main book/ch_elsewhere.ipynb (repository.url of _config.yml)",
        "the repository button points at https://github.com/someone/fork, not https://github.com/nrc-book/neural-rank-collapse"])
    assert light["ch_no_override"] == [
        "papermill's injected-parameters cell is visible (it should be hidden)",
        "the parameters cell does not say how to override a value (\"# The values of this run (profile 'ci'); "
        "defaults in book/ch_no_override.md\")"]


def test_command_line(site, tmp_path):
    shots = tmp_path / "shots"
    ok = subprocess.run([sys.executable, str(ROOT / "ci" / "check_browser.py"), str(site), "--root", str(tmp_path),
                         "--page", "book/good.html", "--screenshots", str(shots), "--theme", "dark"],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.startswith("check_browser: ok (1 pages x dark theme in Chromium")
    assert (shots / "good-dark.png").is_file()
    bad = subprocess.run([sys.executable, str(ROOT / "ci" / "check_browser.py"), str(site), "--root", str(tmp_path),
                          "--page", "book/directive.html", "--no-screenshots", "--theme", "light"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1
    assert bad.stdout.startswith("book/directive.html [light]: unrendered MyST in the text:")
    missing = subprocess.run([sys.executable, str(ROOT / "ci" / "check_browser.py"), str(site), "--root", str(tmp_path),
                              "--browser", str(tmp_path / "no-chromium")], capture_output=True, text=True)
    assert missing.returncode == 2 and "no Chromium at" in missing.stderr
