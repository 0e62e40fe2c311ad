#!/usr/bin/env python
"""Check the built book: python ci/check_html.py [--root DIR]

* every page of ``_toc.yml`` exists in ``_build/html``;
* every numbered chapter page (``01_...``, not index or reproducibility) shows at least one
  figure: an ``<img>`` in a cell output or a figure, whose file exists;
* no page shows a Python traceback, an error output or a stderr output;
* no page loads a script or stylesheet from the network, and every local one exists (the book
  renders offline: MathJax included).

Prints one line per problem and exits 1 if there is any, else prints one summary line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

sys.path.insert(0, str(Path(__file__).resolve().parent))
import project  # noqa: E402

# Output areas of myst-nb: error outputs carry the class "traceback", stderr outputs "stderr".
ERROR_OUTPUTS = "div.output.traceback, div.output.error, div.output.stderr, .cell_output .stderr"
FIGURES = "div.cell_output img, figure img, div.figure img"


def _local_target(page: Path, html_dir: Path, ref: str) -> Path | None:
    """The file a relative reference points to, or None for an external or non-file ref."""
    parsed = urlparse(ref)
    if parsed.scheme or parsed.netloc or ref.startswith("//"):
        return None
    path = unquote(parsed.path)
    if not path:
        return None
    return (html_dir / path.lstrip("/")) if path.startswith("/") else (page.parent / path)


def is_remote(ref: str) -> bool:
    parsed = urlparse(ref)
    return parsed.scheme in ("http", "https") or ref.startswith("//")


def check_page(page: Path, html_dir: Path, needs_figure: bool) -> list[str]:
    from bs4 import BeautifulSoup

    rel = page.relative_to(html_dir)
    soup = BeautifulSoup(page.read_text(encoding="utf-8"), "html.parser")
    problems = []
    main = soup.select_one("main") or soup
    if "Traceback (most recent call last)" in main.get_text():
        problems.append(f"{rel}: contains a Python traceback")
    for node in soup.select(ERROR_OUTPUTS):
        kind = "stderr" if "stderr" in node.get("class", []) else "error"
        first = " ".join(node.get_text().split())[:80]
        problems.append(f"{rel}: {kind} output: {first!r}")
    if needs_figure:
        images = [img for img in soup.select(FIGURES) if img.get("src")]
        if not images:
            problems.append(f"{rel}: chapter page without a figure")
        for img in images:
            target = _local_target(page, html_dir, img["src"])
            if target is not None and not target.is_file() and not img["src"].startswith("data:"):
                problems.append(f"{rel}: figure {img['src']} is missing")
    assets = [(s.get("src"), "script") for s in soup.find_all("script") if s.get("src")]
    assets += [(ln.get("href"), "stylesheet/preload/icon") for ln in soup.find_all("link")
               if ln.get("href") and {"stylesheet", "preload", "modulepreload", "icon"} & set(ln.get("rel") or [])]
    for ref, kind in assets:
        if is_remote(ref):
            problems.append(f"{rel}: loads a {kind} from the network: {ref}")
            continue
        target = _local_target(page, html_dir, ref)
        if target is not None and not target.is_file():
            problems.append(f"{rel}: {kind} {ref} is missing")
    return problems


def check(root: Path) -> list[str]:
    html_dir = root / "_build" / "html"
    if not html_dir.is_dir():
        return [f"{html_dir} does not exist: build the book first (make book)"]
    problems = []
    chapters = project.read_toc(root)
    for c in chapters:
        page = html_dir / f"{c.file}.html"
        if not page.is_file():
            problems.append(f"{page.relative_to(root)}: missing (chapter {c.stem} of _toc.yml)")
            continue
        problems += check_page(page, html_dir, needs_figure=c.is_numbered)
    toc_pages = {html_dir / f"{c.file}.html" for c in chapters}
    for page in sorted(html_dir.glob("*.html")):  # index.html (redirect), search, genindex
        if page not in toc_pages:
            problems += check_page(page, html_dir, needs_figure=False)
    if not (html_dir / "index.html").is_file():
        problems.append("_build/html/index.html is missing")
    return problems


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=str(Path(__file__).resolve().parents[1]),
                   help="project root (default: this repository)")
    args = p.parse_args(argv)
    root = Path(args.root).resolve()
    try:
        problems = check(root)
    except project.ProjectError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in problems:
        print(line)
    if problems:
        print(f"check_html: {len(problems)} problem(s) in {root / '_build' / 'html'}", file=sys.stderr)
        return 1
    n = len(project.read_toc(root))
    print(f"check_html: ok ({n} toc pages, offline assets, no errors, figures in every chapter)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
