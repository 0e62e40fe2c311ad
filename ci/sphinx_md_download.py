"""Offer a notebook page's MyST-markdown source (book/<stem>.md) in the download menu of
sphinx-book-theme, beside the .ipynb.

The book is built from executed .ipynb staged by ci/build_book.py, so the theme offers only the
.ipynb. This extension finds the page's .md in the project (the first folder at or above the
Sphinx source folder holding both _toc.yml and <page>.md: the project root for the stage
build), copies it to _sources/<page>.md and adds a ".md" entry after the ".ipynb" one.
Pages built from the .md itself (jupyter-book build .) already offer both; they are left alone.
"""

from __future__ import annotations

import shutil
from pathlib import Path


def _markdown_source(app, pagename: str) -> Path | None:
    src = Path(app.srcdir).resolve()
    for folder in (src, *src.parents):
        md = folder / f"{pagename}.md"
        if md.is_file() and (folder / "_toc.yml").is_file():
            return md
    return None


def add_md_download(app, pagename, templatename, context, doctree):
    if doctree is None or not str(context.get("page_source_suffix", "")).endswith(".ipynb"):
        return
    md = _markdown_source(app, pagename)
    if md is None:
        return
    group = next((b for b in context.get("header_buttons", [])
                  if b.get("label") == "download-buttons"), None)
    if group is None:  # use_download_button: false
        return
    dest = Path(app.outdir) / "_sources" / f"{pagename}.md"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(md, dest)
    entry = {"type": "link", "url": f"{context['pathto']('_sources', 1)}/{pagename}.md", "text": ".md",
             "tooltip": "Download the MyST-markdown source", "icon": "fas fa-file-lines",
             "label": "download-md-button"}
    buttons = group["buttons"]
    at = next((i + 1 for i, b in enumerate(buttons) if b.get("text") == ".ipynb"), 0)
    buttons.insert(at, entry)


def setup(app):
    # after sphinx-book-theme's add_header_buttons (priority 501)
    app.connect("html-page-context", add_md_download, priority=502)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
