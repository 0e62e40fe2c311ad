"""ci/check_links.py: internal links and anchors of the built HTML resolve; external ones are listed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "ci"))
import check_links  # noqa: E402  (ci/check_links.py)

PAGE = """<!DOCTYPE html><html><head><title>{title}</title></head>
<body><main><h1 id="top">{title}</h1>{body}</main></body></html>"""


def site(tmp_path: Path, pages: dict[str, str]) -> Path:
    html = tmp_path / "_build" / "html"
    for rel, body in pages.items():
        f = html / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(PAGE.format(title=Path(rel).stem, body=body), encoding="utf-8")
    (html / "_static").mkdir(exist_ok=True)
    (html / "_static" / "style.css").write_text("", encoding="utf-8")
    return html


GOOD = {
    "index.html": '<meta http-equiv="Refresh" content="0; url=book/index.html" />',
    "book/index.html": ('<a href="ch1.html">one</a> <a href="ch1.html#sec-a">section</a> '
                        '<a href="#top">top</a> <a href="#">button</a> <a href="javascript:void(0)">js</a> '
                        '<a href="../_static/style.css">css</a> <a href="./">here</a> '
                        '<a href="https://arxiv.org/abs/2402.03991">paper</a> <a href="mailto:a@b.c">mail</a>'),
    "book/ch1.html": ('<section id="sec-a"><a name="legacy"></a><a href="index.html#top">back</a> '
                      '<a href="#legacy">old anchor</a> <a href="https://arxiv.org/abs/2402.03991">paper</a> '
                      '<a href="https://github.com/nrc-book/neural-rank-collapse">repo</a></section>'),
}


def test_a_good_site_passes_and_external_links_are_listed_not_fetched(tmp_path):
    html = site(tmp_path, GOOD)
    out = tmp_path / "_build" / "external_links.txt"
    problems, external = check_links.check(html, None, out)
    assert problems == []
    assert set(external) == {"https://arxiv.org/abs/2402.03991", "mailto:a@b.c",
                             "https://github.com/nrc-book/neural-rank-collapse"}
    assert external["https://arxiv.org/abs/2402.03991"] == {"book/index.html", "book/ch1.html"}
    lines = out.read_text().splitlines()
    assert len(lines) == 3 and lines[0].startswith("https://arxiv.org/abs/2402.03991\t")


def test_a_dead_anchor_on_another_page_is_caught(tmp_path):
    html = site(tmp_path, {**GOOD, "book/index.html": '<a href="ch1.html#no-such-section">x</a>'})
    problems, _ = check_links.check(html)
    assert problems == ["book/index.html: dead anchor 'ch1.html#no-such-section': no id 'no-such-section' in book/ch1.html"]


def test_a_dead_anchor_on_the_same_page_is_caught(tmp_path):
    html = site(tmp_path, {**GOOD, "book/ch1.html": '<p id="sec-a"><a href="#prop-missing">Proposition 9</a></p>'})
    problems, _ = check_links.check(html)
    assert problems == ["book/ch1.html: dead anchor '#prop-missing': no id 'prop-missing' in this page"]


def test_a_dead_page_link_is_caught(tmp_path):
    html = site(tmp_path, {**GOOD, "book/index.html": '<a href="ch9.html#top">x</a> <a href="../_images/f.png">f</a>'})
    problems, _ = check_links.check(html)
    assert problems == ["book/index.html: dead link 'ch9.html#top': no file book/ch9.html",
                        "book/index.html: dead link '../_images/f.png': no file _images/f.png"]


def test_a_dead_redirect_is_caught(tmp_path):
    html = site(tmp_path, {**GOOD, "index.html": '<meta http-equiv="refresh" content="0; url=book/intro.html">'})
    problems, _ = check_links.check(html)
    assert problems == ["index.html: dead link 'book/intro.html': no file book/intro.html"]


def test_an_empty_output_and_missing_toc_pages_fail(tmp_path):
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/index\nchapters:\n  - file: book/ch1\n")
    html = tmp_path / "_build" / "html"
    html.mkdir(parents=True)
    problems, _ = check_links.check(html, tmp_path)
    assert any("no index.html" in p for p in problems)
    assert "book/index.html: missing (page of _toc.yml)" in problems
    assert "book/ch1.html: missing (page of _toc.yml)" in problems
    assert any("no HTML pages" in p for p in problems)


def test_command_line_exit_status_and_list(tmp_path):
    html = site(tmp_path, GOOD)
    run = lambda: subprocess.run([sys.executable, str(ROOT / "ci" / "check_links.py"), str(html),  # noqa: E731
                                  "--root", str(tmp_path)], capture_output=True, text=True)
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/index\nchapters:\n  - file: book/ch1\n")
    ok = run()
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "3 external links" in ok.stdout
    assert (tmp_path / "_build" / "external_links.txt").is_file()
    (html / "book" / "ch1.html").write_text(PAGE.format(title="ch1", body='<p id="sec-a"><a href="#gone">x</a></p>'))
    bad = run()
    assert bad.returncode == 1
    assert bad.stdout.splitlines() == ["book/ch1.html: dead anchor '#gone': no id 'gone' in this page"]
