#!/usr/bin/env python
"""Check the links of the built book: python ci/check_links.py [HTML_DIR] [--root DIR]

* the output is not empty: ``index.html`` and every page of ``_toc.yml`` exist;
* every internal link resolves: ``href="page.html"`` to an existing file, ``href="page.html#id"``
  and ``href="#id"`` to a file with an element of that ``id`` (or an ``<a name=...>``); also
  the target of a ``<meta http-equiv="refresh">`` redirect (the root ``index.html``);
* external links (``http(s)://``, ``mailto:``, ...) are not fetched: they are counted and
  listed, one per line with the pages that use them, in ``external_links.txt`` beside HTML_DIR
  (``_build/external_links.txt``).

Pages checked: every ``.html`` under HTML_DIR except ``_static``, ``_sources`` and ``_images``.
Prints one line per problem and exits 1 if there is any, else one summary line.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from pathlib import Path
from urllib.parse import unquote, urlparse

sys.path.insert(0, str(Path(__file__).resolve().parent))
import project  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SKIP_DIRS = ("_static", "_sources", "_images", "_downloads")
# Links that are not to a place: javascript:, a bare "#" (buttons), data: URIs.
NOT_LINKS = ("javascript:", "data:")


class Site:
    """The pages of a built HTML folder, parsed once each: ids and links."""

    def __init__(self, html_dir: Path):
        self.html_dir = html_dir
        self._ids: dict[Path, set[str]] = {}

    def pages(self) -> list[Path]:
        return sorted(p for p in self.html_dir.rglob("*.html")
                      if not any(part in SKIP_DIRS for part in p.relative_to(self.html_dir).parts))

    def soup(self, page: Path):
        from bs4 import BeautifulSoup

        return BeautifulSoup(page.read_text(encoding="utf-8", errors="replace"), "html.parser")

    def ids(self, page: Path, soup=None) -> set[str]:
        """The ids a fragment can name in ``page`` (its parsed ``soup`` if at hand)."""
        if page not in self._ids:
            soup = soup if soup is not None else self.soup(page)
            ids = {el["id"] for el in soup.find_all(id=True)}
            ids |= {el["name"] for el in soup.find_all("a", attrs={"name": True})}
            self._ids[page] = ids
        return self._ids[page]


def is_external(ref: str) -> bool:
    parsed = urlparse(ref)
    return bool(parsed.scheme and parsed.scheme not in ("file",)) or ref.startswith("//")


def resolve(site: Site, page: Path, ref: str) -> str | None:
    """The problem with an internal link ``ref`` found in ``page``, or None when it resolves."""
    parsed = urlparse(ref)
    path, fragment = unquote(parsed.path), unquote(parsed.fragment)
    if not path:
        target = page
    else:
        target = (site.html_dir / path.lstrip("/")) if path.startswith("/") else (page.parent / path)
        try:
            target = target.resolve()
            target.relative_to(site.html_dir)
        except (OSError, ValueError):
            return f"link {ref!r} leaves the HTML folder"
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            return f"dead link {ref!r}: no file {target.relative_to(site.html_dir).as_posix()}"
    if fragment and target.suffix == ".html" and fragment not in site.ids(target):
        where = "this page" if target == page else target.relative_to(site.html_dir).as_posix()
        return f"dead anchor {ref!r}: no id {fragment!r} in {where}"
    return None


def links_of(soup) -> list[str]:
    refs = [a.get("href") for a in soup.find_all(["a", "area"]) if a.get("href") is not None]
    for meta in soup.find_all("meta", attrs={"http-equiv": re.compile("^refresh$", re.I)}):
        m = re.search(r"url\s*=\s*['\"]?([^'\";]+)", meta.get("content", ""), re.I)
        if m:
            refs.append(m.group(1).strip())
    return refs


def check(html_dir: Path, root: Path | None = None, external_out: Path | None = None):
    """Return (problems, external) where external maps each external URL to the pages using it."""
    html_dir = html_dir.resolve()
    problems: list[str] = []
    if not html_dir.is_dir():
        return [f"{html_dir} does not exist: build the book first (make book)"], {}
    if not (html_dir / "index.html").is_file():
        problems.append(f"{html_dir}: the output is empty or incomplete: no index.html")
    if root is not None and (Path(root) / "_toc.yml").is_file():
        for c in project.read_toc(root):
            if not (html_dir / f"{c.file}.html").is_file():
                problems.append(f"{c.file}.html: missing (page of _toc.yml)")
    site = Site(html_dir)
    external: dict[str, set[str]] = defaultdict(set)
    pages = site.pages()
    if not pages:
        problems.append(f"{html_dir}: no HTML pages")
    for page in pages:
        rel = page.relative_to(html_dir).as_posix()
        soup = site.soup(page)
        site.ids(page, soup)
        seen = set()
        for ref in links_of(soup):
            ref = ref.strip()
            if not ref or ref == "#" or ref.lower().startswith(NOT_LINKS) or ref in seen:
                continue
            seen.add(ref)
            if is_external(ref):
                external[ref].add(rel)
                continue
            problem = resolve(site, page, ref)
            if problem:
                problems.append(f"{rel}: {problem}")
    if external_out is not None:
        external_out.parent.mkdir(parents=True, exist_ok=True)
        external_out.write_text("".join(f"{url}\t{' '.join(sorted(pages_))}\n"
                                        for url, pages_ in sorted(external.items())), encoding="utf-8")
    return problems, external


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("html_dir", nargs="?", default=None, help="the built HTML (default: ROOT/_build/html)")
    p.add_argument("--root", default=str(REPO), help="project root with _toc.yml (default: this repository)")
    p.add_argument("--external-out", default=None, metavar="FILE",
                   help="where the list of external links goes (default: external_links.txt beside HTML_DIR)")
    args = p.parse_args(argv)
    root = Path(args.root).resolve()
    html_dir = Path(args.html_dir).resolve() if args.html_dir else root / "_build" / "html"
    out = Path(args.external_out) if args.external_out else html_dir.parent / "external_links.txt"
    try:
        problems, external = check(html_dir, root, out)
    except project.ProjectError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in problems:
        print(line)
    if problems:
        print(f"check_links: {len(problems)} problem(s) in {html_dir}", file=sys.stderr)
        return 1
    n_pages = len(Site(html_dir).pages())
    print(f"check_links: ok ({n_pages} pages, every internal link and anchor resolves; "
          f"{len(external)} external links, not fetched, listed in {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
