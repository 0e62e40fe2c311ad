#!/usr/bin/env python
"""Open every page of the book in headless Chromium and check what a reader sees:

    python ci/check_browser.py [HTML_DIR]            # default _build/html, pages of _toc.yml
    python ci/check_browser.py --page book/x.html    # only these pages (repeatable)

The HTML is served from a local HTTP server on 127.0.0.1 (a free port, started and stopped
here; MathJax comes from the book's own _static, nothing is fetched from the network). Each page
is seen in the light and in the dark theme: opened in the light theme and checked in full, then
switched to dark with the theme's own button, as a reader does; the first page is also opened in
the dark theme (pydata-sphinx-theme: localStorage "mode"/"theme" set before the page's scripts
run, and prefers-color-scheme emulated), so that a reader who chose dark gets it. On each page
it asserts:

* the title: ``<title>`` starts with the page's heading and names the book;
* every image of the article loaded, with a non-zero natural size;
* every math element typeset by MathJax, no MathJax error, no raw TeX (``$...$``, ``\\(``,
  ``\\[``, ``\\begin{``) left in the text;
* no traceback, error or stderr output, no uncaught JavaScript error, no failed request, no
  request that leaves the book;
* no unrendered MyST directive or role (````` ```{ `````, ``:::{``, ``{glue:``, ``{cite:p}``,
  ``{doc}``, ...) and no docutils system message in the text;
* theorem-like blocks (sphinx-proof) numbered on the chapter pages, and no unresolved
  cross-reference (an ``xref`` without a link, a link that reads ``???``);
* the data-theme of the page is the theme asked for;

and, on the notebook pages, the reader features: the download menu offers the ``.ipynb`` and the
``.md`` (both files exist); the Binder and Colab buttons and the repository button point at
``repository.url`` and ``repository.branch`` of ``_config.yml`` (the notebook ``book/<stem>.ipynb``);
the papermill-injected parameters cell is hidden and the visible parameters cell says where the
values come from and how to override them; every figure is opaque (its four corner pixels have
alpha 255: a transparent figure with dark text is unreadable in the dark theme).

A screenshot of each page in each theme goes to ``_build/screenshots/<stem>-<theme>.png`` (the
viewport at the top of the page, plus ``<stem>-<theme>-figure.png``, the first figure of the
page; ``--full-page`` for whole pages, slower).

Chromium: Debian's ``/usr/bin/chromium`` (``apt-get install -y chromium``), driven by the Python
``playwright`` package with that executable; playwright's own browser downloads are never used.

Prints one line per problem and exits 1 if there is any, else one summary line with the time;
exits 2 when it cannot run (no Chromium, no playwright, no HTML).
"""

from __future__ import annotations

import argparse
import functools
import http.server
import re
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

sys.path.insert(0, str(Path(__file__).resolve().parent))
import project  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
# As root, with the network closed: no sandbox (root), no GPU, and none of Chromium's own
# background traffic (without these it floods the log with refused connections).
LAUNCH_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--no-default-browser-check"]
THEMES = ("light", "dark")
VIEWPORT = {"width": 1280, "height": 900}
INSTALL_HINT = "apt-get install -y chromium chromium-driver (Debian), or pass --browser PATH"

# Uncaught JavaScript errors that come from the Jupyter Book 1.x stack itself and do no harm.
# Each entry is (pattern, why); anything else fails the check.
KNOWN_JS_ERRORS = [
    (re.compile(r"Identifier 'THEBE_JS_URL' has already been declared"),
     "jupyter-book 1.0 writes sphinx-thebe's inline config twice; thebe is off in this book"),
]


@dataclass(frozen=True)
class Page:
    path: str  # relative to the HTML folder, posix, e.g. "book/02_eigenvalue_equation.html"
    chapter: bool = False  # a numbered chapter: theorem-like blocks numbered, a parameters cell
    notebook: bool = False  # a page built from a notebook: download/launch buttons, figures

    @property
    def stem(self) -> str:
        return Path(self.path).stem


@dataclass(frozen=True)
class Expect:
    """What the reader features must say, from _config.yml."""
    book_title: str | None = None
    repository_url: str | None = None
    branch: str = "main"


def toc_pages(root: Path) -> list[Page]:
    return [Page(f"{c.file}.html", chapter=c.is_numbered, notebook=True) for c in project.read_toc(root)]


def expectations(root: Path) -> Expect:
    path = Path(root) / "_config.yml"
    if not path.is_file():
        return Expect()
    config = project.load_yaml(path) or {}
    repo = config.get("repository") or {}
    return Expect(book_title=config.get("title"), repository_url=(repo.get("url") or "").rstrip("/") or None,
                  branch=str(repo.get("branch") or "main"))


# --------------------------------------------------------------------------------------------
class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # no access log on stderr
        pass

    def send_head(self):
        # Chromium asks for /favicon.ico on its own; the book has none. Answer "no content"
        # instead of a 404 that would read as a broken asset.
        if self.path.split("?")[0] == "/favicon.ico" and not (Path(self.directory) / "favicon.ico").exists():
            self.send_response(204)
            self.end_headers()
            return None
        return super().send_head()

    def end_headers(self):
        self.send_header("Cache-Control", "no-store")
        super().end_headers()


class Server:
    """The HTML folder over HTTP on 127.0.0.1, a free port, in a thread."""

    def __init__(self, directory: Path):
        handler = functools.partial(_QuietHandler, directory=str(directory))
        self.directory = Path(directory)
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def file_of(self, url: str) -> Path | None:
        """The file that ``url`` (an absolute URL on this server) serves, or None."""
        if not url.startswith(self.base):
            return None
        path = Path(self.directory, unquote(urlparse(url).path).lstrip("/"))
        return path if path.is_file() else None

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


# --------------------------------------------------------------------------------------------
# What one page says, measured in the page (one evaluate call, returns JSON-able data).
INSPECT_JS = r"""
async ({notebook, corners}) => {
  const out = {};
  const withTimeout = (p, ms) => Promise.race([p, new Promise(r => setTimeout(() => r('timeout'), ms))]);
  out.mathjax = !!(window.MathJax && MathJax.startup && MathJax.startup.promise);
  if (out.mathjax) out.mathjaxWait = await withTimeout(MathJax.startup.promise.then(() => 'ok', e => 'error: ' + e), 30000);
  const article = document.querySelector('article.bd-article') || document.querySelector('main') || document.body;
  const imgs = [...article.querySelectorAll('img')];
  await withTimeout(Promise.all(imgs.map(im => im.complete ? null :
      new Promise(r => { im.addEventListener('load', r); im.addEventListener('error', r); }))), 15000);
  await withTimeout(document.fonts.ready, 10000);
  out.theme = document.documentElement.dataset.theme || '';
  out.title = document.title;
  const h1 = article.querySelector('h1');
  out.h1 = h1 ? [...h1.childNodes].filter(n => !(n.classList && n.classList.contains('headerlink')))
                  .map(n => n.textContent).join('').replace(/\s+/g, ' ').trim() : null;
  const isFigure = im => !!im.closest('.cell_output, figure, div.figure, .output');
  out.images = imgs.map(im => ({src: im.getAttribute('src') || '', w: im.naturalWidth, h: im.naturalHeight,
                                complete: im.complete, figure: isFigure(im)}));
  out.alpha = [];
  if (corners) {
    for (const im of imgs) {
      if (!isFigure(im) || !im.naturalWidth || !im.naturalHeight) continue;
      const c = document.createElement('canvas');
      c.width = im.naturalWidth; c.height = im.naturalHeight;
      const g = c.getContext('2d', {willReadFrequently: true});
      try {
        g.drawImage(im, 0, 0);
        const W = c.width - 1, H = c.height - 1;
        const a = [[0, 0], [W, 0], [0, H], [W, H]].map(([x, y]) => g.getImageData(x, y, 1, 1).data[3]);
        out.alpha.push({src: im.getAttribute('src') || '', min: Math.min(...a)});
      } catch (e) { out.alpha.push({src: im.getAttribute('src') || '', error: String(e)}); }
    }
  }
  // math
  const maths = [...article.querySelectorAll('.math')];
  out.mathCount = maths.length;
  out.untypeset = maths.filter(m => !m.querySelector('mjx-container'))
                       .map(m => m.textContent.replace(/\s+/g, ' ').trim().slice(0, 60));
  out.mjxCount = article.querySelectorAll('mjx-container').length;
  out.mathErrors = [...new Set([...article.querySelectorAll('mjx-merror, [data-mjx-error]')]
      .map(e => (e.getAttribute('data-mjx-error') || e.textContent || '').slice(0, 80)))];
  // the text a reader reads: no code, no scripts, no typeset math
  const skip = 'pre, code, kbd, samp, script, style, textarea, mjx-container, .cell_input, .highlight, .headerlink';
  const walker = document.createTreeWalker(article, NodeFilter.SHOW_TEXT, {
    acceptNode: n => n.parentElement && n.parentElement.closest(skip) ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT});
  const parts = []; let n;
  while ((n = walker.nextNode())) parts.push(n.nodeValue);
  out.text = parts.join('');
  out.fullText = article.innerText;
  // outputs and messages
  out.errorOutputs = [...article.querySelectorAll('div.output.traceback, div.output.error, div.output.stderr, .cell_output .stderr')]
      .map(e => ({stderr: e.classList.contains('stderr'), text: e.textContent.replace(/\s+/g, ' ').trim().slice(0, 80)}));
  out.systemMessages = [...article.querySelectorAll('.system-message, .problematic')]
      .map(e => e.textContent.replace(/\s+/g, ' ').trim().slice(0, 80));
  // theorem-like blocks of sphinx-proof: <div class="proof theorem admonition">
  out.proofs = [...article.querySelectorAll('div.proof')].map(d => {
    const kinds = [...d.classList].filter(c => c !== 'proof' && c !== 'admonition');
    const num = d.querySelector(':scope > .admonition-title .caption-number');
    const title = d.querySelector(':scope > .admonition-title');
    return {kind: kinds.join(' '), id: d.id, number: num ? num.textContent.trim() : null,
            title: title ? title.textContent.replace(/\s+/g, ' ').trim().slice(0, 70) : ''};
  });
  out.unresolved = [...article.querySelectorAll('.xref')].filter(e => !e.closest('a'))
      .map(e => e.textContent.trim().slice(0, 60));
  out.badLinks = [...article.querySelectorAll('a.reference')]
      .filter(a => { const t = a.textContent.trim(); return t === '???' || (t === '' && !a.querySelector('img')); })
      .map(a => a.getAttribute('href') || '');
  if (notebook) {
    const items = sel => [...document.querySelectorAll(sel)].map(a => ({
        text: a.textContent.replace(/\s+/g, ' ').trim(), href: a.getAttribute('href') || ''}));
    out.download = items('.dropdown-download-buttons a');
    out.launch = items('.dropdown-launch-buttons a');
    out.source = items('.dropdown-source-buttons a, a.btn-source-repository-button');
    for (const d of out.download) if (d.href) d.url = new URL(d.href, location.href).href;
    const injected = [...document.querySelectorAll('.tag_injected-parameters')];
    out.injectedVisible = injected.filter(e => e.getClientRects().length > 0).length;
    out.parameters = [...article.querySelectorAll('.tag_parameters')].map(e => e.textContent);
  }
  return out;
}
"""

# The reader's theme switch: pydata-sphinx-theme's button cycles light -> dark -> auto. A page
# without it (a fixture) gets the attributes the theme would set.
SWITCH_JS = r"""
async (theme) => {
  const root = document.documentElement, btn = document.querySelector('.theme-switch-button');
  for (let i = 0; i < 3 && root.dataset.theme !== theme; i++) {
    if (btn) btn.click(); else { root.dataset.mode = theme; root.dataset.theme = theme; }
  }
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  return root.dataset.theme || '';
}
"""

RAW_TEX = re.compile(r"\\\(|\\\)|\\\[|\\\]|\$\$|\\begin\{|(?<![\w$])\$[^\s$][^$\n]{0,200}?\$(?![\w$])")
# MyST that did not render: a directive fence, a colon fence, a role, a substitution.
MYST_LEFT = re.compile(
    r"```\{|:::\{|\{(?:glue|cite|doc|ref|numref|eq|prf|math|term|download|abbr|sub|sup|"
    r"py|external|bibliography|figure|code-cell|admonition|note|warning)(?::[\w-]+)*\}|"
    r"\{[a-z][\w-]*(?::[\w-]+)*\}`|\{\{\s*[\w.-]+\s*\}\}")
NUMBERED_KINDS = ("theorem", "lemma", "proposition", "corollary", "definition", "remark", "conjecture",
                  "example", "axiom", "criterion", "algorithm", "assumption", "observation", "property")


def _excerpt(text: str, m: re.Match, width: int = 30) -> str:
    a, b = max(0, m.start() - width), min(len(text), m.end() + width)
    return " ".join(text[a:b].split())


def judge(page: Page, theme: str, info: dict, expect: Expect, events: dict, full: bool = True) -> list[str]:
    """The problems of one page in one theme, from what INSPECT_JS measured and the events;
    with ``full`` false only the theme, the requests and the JavaScript errors."""
    where = f"{page.path} [{theme}]"
    problems: list[str] = []
    say = lambda msg: problems.append(f"{where}: {msg}")  # noqa: E731
    if events.get("status") not in (200, 304):
        say(f"HTTP status {events.get('status')}")
    for msg in events.get("js_errors", []):
        say(f"JavaScript error: {msg[:160]}")
    for url, status in events.get("failed", []):
        say(f"request failed ({status}): {url}")
    for url in events.get("external", []):
        say(f"requests a resource outside the book (blocked): {url}")
    if info.get("theme") != theme:
        say(f"data-theme is {info.get('theme')!r}, expected {theme!r}")
    if not full:
        return problems
    # title
    title, h1 = (info.get("title") or "").strip(), info.get("h1")
    if not title:
        say("no <title>")
    if not h1:
        say("no <h1> heading in the article")
    elif title and not title.startswith(h1):
        say(f"title {title!r} does not start with the heading {h1!r}")
    if expect.book_title and title and expect.book_title not in title:
        say(f"title {title!r} does not name the book ({expect.book_title!r})")
    # figures
    for im in info.get("images", []):
        if not im["complete"] or not im["w"] or not im["h"]:
            say(f"image did not load: {im['src'][:100]} (natural size {im['w']}x{im['h']})")
    for a in info.get("alpha", []):
        if "error" in a:
            say(f"figure {a['src'][:100]} could not be read back: {a['error'][:80]}")
        elif a["min"] < 255:
            say(f"figure {a['src'][:100]} is transparent (corner alpha {a['min']}): give it an opaque "
                "background (dark text vanishes on the dark theme)")
    # math
    if info.get("mathCount") and not info.get("mathjax"):
        say(f"MathJax is not loaded, {info['mathCount']} math element(s) left as TeX")
    elif info.get("mathjax") and info.get("mathjaxWait") != "ok":
        say(f"MathJax did not finish typesetting: {info.get('mathjaxWait')}")
    if info.get("untypeset"):
        say(f"{len(info['untypeset'])} math element(s) not typeset by MathJax, first: '{info['untypeset'][0]}'")
    for e in info.get("mathErrors", []):
        say(f"MathJax error: '{e}'")
    text = info.get("text", "")
    m = RAW_TEX.search(text)
    if m:
        say(f"raw TeX in the text (not typeset): '{_excerpt(text, m)}'")
    m = MYST_LEFT.search(text)
    if m:
        say(f"unrendered MyST in the text: '{_excerpt(text, m)}'")
    for e in info.get("systemMessages", []):
        say(f"docutils system message: {e!r}")
    # outputs
    if "Traceback (most recent call last)" in info.get("fullText", ""):
        say("shows a Python traceback")
    for e in info.get("errorOutputs", []):
        say(f"{'stderr' if e['stderr'] else 'error'} output: {e['text']!r}")
    # theorem-like blocks and cross-references
    for p in info.get("proofs", []):
        if not p["kind"]:
            continue  # a proof: never numbered
        if page.chapter and p["kind"] in NUMBERED_KINDS and not re.search(r"\d", p["number"] or ""):
            say(f"{p['kind']} block {p['id'] or p['title']!r} is not numbered ({p['title']!r})")
    for t in info.get("unresolved", []):
        say(f"unresolved cross-reference {t!r}")
    for href in info.get("badLinks", []):
        say(f"cross-reference without a resolved text: href {href!r}")
    if page.notebook:
        problems += reader_features(page, where, info, expect)
    return problems


def reader_features(page: Page, where: str, info: dict, expect: Expect) -> list[str]:
    problems: list[str] = []
    say = lambda msg: problems.append(f"{where}: {msg}")  # noqa: E731
    notebook_rel = str(Path(page.path).with_suffix(".ipynb").as_posix())
    download = {d["text"]: d for d in info.get("download", [])}
    if download or page.chapter:
        for suffix in (".ipynb", ".md"):
            d = download.get(suffix)
            if d is None:
                offered = ", ".join(t for t in download if t) or "nothing"
                say(f"the download menu offers no {suffix} (it offers {offered})")
            elif not d.get("exists"):
                say(f"the download {suffix} ({d['href']}) is not in the book")
    if expect.repository_url:
        slug = urlparse(expect.repository_url).path.strip("/")
        launch = {d["text"]: d["href"] for d in info.get("launch", [])}
        if launch or page.chapter:
            wanted = {"Binder": f"/gh/{slug}/{expect.branch}?urlpath=tree/{notebook_rel}",
                      "Colab": f"/github/{slug}/blob/{expect.branch}/{notebook_rel}"}
            for name, tail in wanted.items():
                href = launch.get(name)
                if href is None:
                    say(f"no {name} launch button")
                elif not href.endswith(tail):
                    say(f"the {name} button points at {href}, not at {slug}@{expect.branch} {notebook_rel} "
                        "(repository.url of _config.yml)")
        sources = [d["href"].rstrip("/") for d in info.get("source", []) if d["text"] == "Repository"]
        if sources and sources[0] != expect.repository_url:
            say(f"the repository button points at {sources[0]}, not {expect.repository_url}")
    if info.get("injectedVisible"):
        say("papermill's injected-parameters cell is visible (it should be hidden)")
    params = info.get("parameters", [])
    if page.chapter and len(params) != 1:
        say(f"{len(params)} visible parameters cells, expected 1")
    for text in params[:1]:
        if "values of this run" not in text:
            say("the parameters cell does not say that it shows the values of this run")
        if "--set" not in text and " -p " not in text:
            first = text.strip().splitlines()[0] if text.strip() else ""
            say(f"the parameters cell does not say how to override a value ({first[:100]!r})")
    return problems


# --------------------------------------------------------------------------------------------
def _screenshot_name(page: Page, theme: str, taken: dict) -> str:
    stem = page.stem if page.stem != "index" or "/" not in page.path else Path(page.path).parent.name + "_index"
    key = (stem, theme)
    taken[key] = taken.get(key, 0) + 1
    return f"{stem}-{theme}" + (f"-{taken[key]}" if taken[key] > 1 else "")


def check(html_dir: Path, pages: list[Page], expect: Expect = Expect(), *, screenshots: Path | None = None,
          browser: str = CHROMIUM, themes=THEMES, full_page: bool = False, timeout_s: float = 60.0,
          log=None) -> list[str]:
    """Open each page in each theme; return the problems (one line each)."""
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    if screenshots is not None:
        screenshots.mkdir(parents=True, exist_ok=True)
    taken: dict = {}
    events: dict = {}  # what the browser reported while the current page loaded
    with Server(html_dir) as server, tempfile.TemporaryDirectory(prefix="nrc-chromium-") as profile, \
            sync_playwright() as pw:
        # A persistent context is how playwright gives Chromium a --user-data-dir: a fresh one,
        # in a temporary folder removed at the end.
        ctx = pw.chromium.launch_persistent_context(
            profile, executable_path=browser, headless=True, args=LAUNCH_FLAGS, viewport=VIEWPORT,
            color_scheme=themes[0], service_workers="block", ignore_default_args=["--enable-automation"])
        try:
            ctx.set_default_timeout(timeout_s * 1000)
            # The theme a page starts in, as a reader who chose it: pydata-sphinx-theme reads
            # localStorage "mode"/"theme" in its first inline script. The theme wanted comes in
            # the query string (?nrc-theme=dark), set here before any script of the page runs.
            ctx.add_init_script(
                "try { const t = new URLSearchParams(location.search).get('nrc-theme');"
                " if (t) { localStorage.setItem('mode', t); localStorage.setItem('theme', t); } } catch (e) {}")

            def on_route(route):
                events.setdefault("external", []).append(route.request.url)
                route.abort()

            ctx.route(lambda url: not url.startswith(server.base) and not url.startswith("data:"), on_route)
            tab = ctx.pages[0] if ctx.pages else ctx.new_page()

            def on_error(err):
                msg = str(getattr(err, "message", err))
                if not any(p.search(msg) for p, _ in KNOWN_JS_ERRORS):
                    events.setdefault("js_errors", []).append(msg)

            def on_console(msg):
                if msg.type == "error" and not msg.text.startswith("Failed to load resource"):
                    if not any(p.search(msg.text) for p, _ in KNOWN_JS_ERRORS):
                        events.setdefault("js_errors", []).append(f"console: {msg.text}")

            def on_response(resp):
                if resp.status >= 400:
                    events.setdefault("failed", []).append((resp.url, resp.status))

            def on_failed(req):
                if req.url.startswith(server.base):
                    events.setdefault("failed", []).append((req.url, req.failure))

            tab.on("pageerror", on_error)
            tab.on("console", on_console)
            tab.on("response", on_response)
            tab.on("requestfailed", on_failed)

            def shoot(page: Page, theme: str):
                if screenshots is None:
                    return
                name = _screenshot_name(page, theme, taken)
                try:
                    tab.evaluate("window.scrollTo(0, 0)")  # the top of the page (a figure shot scrolls)
                    tab.screenshot(path=str(screenshots / f"{name}.png"), full_page=full_page, animations="disabled")
                    fig = tab.locator("article .cell_output img, article figure img").first
                    if fig.count():
                        fig.screenshot(path=str(screenshots / f"{name}-figure.png"), animations="disabled")
                except PlaywrightError as exc:
                    problems.append(f"{page.path} [{theme}]: no screenshot: {str(exc).splitlines()[0]}")

            for i, page in enumerate(pages):
                for k, theme in enumerate(themes):
                    t0 = time.perf_counter()
                    # Every page is opened in the first theme and checked in full; the first page
                    # is opened in every theme, the others are switched to the next theme in
                    # place, with the theme's own button, as a reader does (no second typesetting).
                    reload = k == 0 or i == 0
                    try:
                        if reload:
                            events.clear()
                            tab.emulate_media(color_scheme=theme)
                            resp = tab.goto(f"{server.base}{page.path}?nrc-theme={theme}", wait_until="load")
                            events["status"] = resp.status if resp else None
                            info = tab.evaluate(INSPECT_JS, {"notebook": page.notebook, "corners": k == 0})
                            for d in info.get("download", []):
                                d["exists"] = server.file_of(d.get("url", "")) is not None
                        else:
                            before = {key: list(v) for key, v in events.items() if isinstance(v, list)}
                            got = tab.evaluate(SWITCH_JS, theme)
                    except PlaywrightError as exc:
                        problems.append(f"{page.path} [{theme}]: the browser failed: {str(exc).splitlines()[0]}")
                        continue
                    if reload:
                        problems += judge(page, theme, info, expect, dict(events), full=k == 0)
                    else:
                        new = {key: v[len(before.get(key, [])):] for key, v in events.items() if isinstance(v, list)}
                        problems += judge(page, theme, {"theme": got}, expect, {"status": 200, **new}, full=False)
                    shoot(page, theme)
                    if log:
                        log(f"{page.path} [{theme}{'' if reload else ', switched'}] {time.perf_counter() - t0:.1f}s")
        finally:
            ctx.close()
    return problems


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("html_dir", nargs="?", default=None, help="the built HTML (default: ROOT/_build/html)")
    p.add_argument("--root", default=str(REPO), help="project root with _toc.yml and _config.yml (default: this repository)")
    p.add_argument("--page", action="append", default=[], metavar="REL",
                   help="check only this page, relative to HTML_DIR (repeatable; default: the pages of _toc.yml)")
    p.add_argument("--screenshots", default=None, metavar="DIR",
                   help="where the screenshots go (default: the folder beside HTML_DIR named screenshots, "
                        "i.e. _build/screenshots)")
    p.add_argument("--no-screenshots", action="store_true", help="take no screenshots")
    p.add_argument("--full-page", action="store_true", help="screenshots of whole pages (slower)")
    p.add_argument("--theme", action="append", choices=THEMES, default=[], help="only this theme (repeatable)")
    p.add_argument("--browser", default=CHROMIUM, help=f"the Chromium executable (default: {CHROMIUM})")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds for one page (default: 60)")
    p.add_argument("-v", "--verbose", action="store_true", help="one line per page and theme with its time")
    args = p.parse_args(argv)
    root = Path(args.root).resolve()
    html_dir = Path(args.html_dir).resolve() if args.html_dir else root / "_build" / "html"
    if not html_dir.is_dir() or next(html_dir.rglob("*.html"), None) is None:
        print(f"error: no HTML in {html_dir}: build the book first (make book)", file=sys.stderr)
        return 2
    if not (Path(args.browser).is_file() or shutil.which(args.browser)):
        print(f"error: no Chromium at {args.browser}: {INSTALL_HINT}", file=sys.stderr)
        return 2
    try:
        import playwright  # noqa: F401
    except ImportError:
        print("error: the Python package playwright is missing: pip install -e '.[test]'", file=sys.stderr)
        return 2
    try:
        expect = expectations(root)
        if args.page:
            toc = {pg.path: pg for pg in toc_pages(root)} if (root / "_toc.yml").is_file() else {}
            pages = [toc.get(rel, Page(rel)) for rel in args.page]
        else:
            pages = toc_pages(root)
    except project.ProjectError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    missing = [pg.path for pg in pages if not (html_dir / pg.path).is_file()]
    if missing:
        for rel in missing:
            print(f"{rel}: missing in {html_dir}")
        return 1
    shots = None if args.no_screenshots else (
        Path(args.screenshots).resolve() if args.screenshots else html_dir.parent / "screenshots")
    t0 = time.perf_counter()
    problems = check(html_dir, pages, expect, screenshots=shots, browser=args.browser,
                     themes=tuple(args.theme) or THEMES, full_page=args.full_page, timeout_s=args.timeout,
                     log=(lambda line: print(line, file=sys.stderr)) if args.verbose else None)
    took = time.perf_counter() - t0
    for line in problems:
        print(line)
    themes = "/".join(args.theme) or " and ".join(THEMES)
    if problems:
        print(f"check_browser: {len(problems)} problem(s) in {len(pages)} page(s), {themes} theme, "
              f"{took:.1f} s", file=sys.stderr)
        return 1
    where = f"; screenshots in {shots}" if shots else ""
    print(f"check_browser: ok ({len(pages)} pages x {themes} theme in Chromium, {took:.1f} s{where})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
