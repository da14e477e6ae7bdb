"""The built website in a real browser: serve ``_build/html`` on loopback, load every page once.

Run after the book is built (``make test`` does it last)::

    pytest tests/browser --site _build/html

Without ``--site`` every test here is skipped, so ``pytest tests`` never checks a stale build.
The browser is Debian's Chromium (``/usr/bin/chromium``, or ``$SDANATOMY_CHROMIUM``) driven by
Playwright; Playwright's own browser download is not used. Every request that does not go to
the loopback server is aborted and recorded: the website must work offline.
"""
from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import threading
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SKIP_DIRS = ("_static", "_sources", "_images", "_downloads")  # assets, not pages
PAGE_TIMEOUT_MS = 30_000
VIEWPORT_WIDTH = 1300   # a desktop window; the text column is then about 700 px wide


def site_dir(config) -> Path | None:
    site = config.getoption("site", default=None)
    if site is None:
        return None
    path = Path(site)
    return path if path.is_absolute() else Path(config.invocation_params.dir) / path


def chromium_path() -> str:
    exe = os.environ.get("SDANATOMY_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    return exe


def html_pages(site: Path) -> list[str]:
    """Every HTML page of the site, as paths relative to its root ('book/ch02_notation.html')."""
    return sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html")
                  if p.relative_to(site).parts[0] not in SKIP_DIRS)


def book_root(site: Path) -> Path:
    """The book's source folder: the one holding _toc.yml above <root>/_build/html, else this repository."""
    root = site.parent.parent
    return root if site.parent.name == "_build" and (root / "_toc.yml").is_file() else REPO


def toc_pages(root: Path) -> list[str]:
    """The pages _toc.yml asks for, root first, as html paths ('book/index.html')."""
    import yaml

    toc = yaml.safe_load((root / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                files.append(node["file"])
            for key in ("parts", "chapters", "sections"):
                for child in node.get(key, []) or []:
                    walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(toc)
    return [str(Path(f).with_suffix("")) + ".html" for f in files]


def pytest_generate_tests(metafunc):
    if "page" in metafunc.fixturenames:
        site = site_dir(metafunc.config)
        pages = html_pages(site) if site is not None and site.is_dir() else []
        metafunc.parametrize("page", pages or [pytest.param(None, marks=pytest.mark.skip(
            reason="no site: run `pytest tests/browser --site _build/html` after building the book"))])


# ---------------------------------------------------------------- the loopback server
class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    errors: list  # set per server: (status, path) of every request the server could not answer

    def log_message(self, *args):
        pass

    def log_request(self, code="-", size="-"):
        if isinstance(code, int) and code >= 400:  # HTTPStatus is an int
            self.errors.append((int(code), urllib.parse.unquote(self.path)))


@dataclass
class Server:
    base: str
    root: Path
    errors: list


@pytest.fixture(scope="session")
def site(request) -> Path:
    path = site_dir(request.config)
    if path is None:
        pytest.skip("no site: run `pytest tests/browser --site _build/html` after building the book")
    if not (path / "index.html").is_file():
        pytest.fail(f"{path} holds no built website (no index.html): build the book first")
    return path


@pytest.fixture(scope="session")
def server(site):
    errors: list = []
    handler = type("Handler", (_QuietHandler,), {"errors": errors})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(site)))
    thread = threading.Thread(target=httpd.serve_forever, name="site-server", daemon=True)
    thread.start()
    try:
        yield Server(f"http://127.0.0.1:{httpd.server_address[1]}/", site, errors)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


# ---------------------------------------------------------------- the browser
@dataclass
class Browser:
    context: object
    base: str
    root: Path
    blocked: list = field(default_factory=list)   # URLs outside loopback the pages tried to load


@pytest.fixture(scope="session")
def browser(server):
    from playwright.sync_api import sync_playwright

    exe = chromium_path()
    if not Path(exe).exists():
        pytest.fail(f"no Chromium at {exe}: install Debian's chromium or set $SDANATOMY_CHROMIUM")
    with sync_playwright() as p:
        # Pages' requests are routed below; anything else the browser itself might send (updates,
        # safe browsing, …) goes to a proxy that does not exist, so nothing leaves the machine.
        chromium = p.chromium.launch(executable_path=exe, args=[
            "--no-sandbox", "--disable-gpu", "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=127.0.0.1"])
        context = chromium.new_context(viewport={"width": VIEWPORT_WIDTH, "height": 900}, service_workers="block")
        b = Browser(context, server.base, server.root)
        origin = urllib.parse.urlsplit(server.base)

        def only_loopback(route):
            url = urllib.parse.urlsplit(route.request.url)
            if url.scheme in ("http", "https") and url.netloc == origin.netloc:
                route.continue_()
            else:
                b.blocked.append(route.request.url)
                route.abort("blockedbyclient")

        def no_websockets(ws):
            b.blocked.append(ws.url)
            ws.close()

        context.route("**/*", only_loopback)
        context.route_web_socket(re.compile(".*"), no_websockets)
        try:
            yield b
        finally:
            context.close()
            chromium.close()


# ---------------------------------------------------------------- one visit per page
@dataclass
class Visit:
    """What one page load showed: everything the tests check, gathered once."""
    page: str
    final_url: str = ""
    console_errors: list = field(default_factory=list)
    page_errors: list = field(default_factory=list)
    failed_requests: list = field(default_factory=list)
    blocked: list = field(default_factory=list)
    dom: dict = field(default_factory=dict)        # see INSPECT
    screenshot: Path | None = None


# A <pre> may be this much wider than its box before it counts as scrolling sideways: scrollWidth
# and clientWidth are rounded to whole pixels, and glyph advances add sub-pixel widths.
PRE_SLACK_PX = 2

# Runs in the page once MathJax is done: math errors and leftovers, images, links, ids, the nav,
# and what does not fit the column (display equations, code and outputs).
INSPECT = r"""
async () => {
  const PRE_SLACK_PX = __PRE_SLACK_PX__;   // set from Python below
  const imgs = Array.from(document.images);
  imgs.forEach(i => { i.loading = "eager"; });
  await Promise.all(imgs.map(i => i.complete ? null : new Promise(r => {
    i.addEventListener("load", r); i.addEventListener("error", r); setTimeout(r, 10000); })));
  const skip = new Set(["SCRIPT", "STYLE", "PRE", "CODE", "TEXTAREA", "MJX-CONTAINER", "NOSCRIPT"]);
  const leftovers = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT, {
    acceptNode(n) {
      for (let e = n.parentElement; e; e = e.parentElement) {
        if (skip.has(e.tagName) || e.classList.contains("highlight")) return NodeFilter.FILTER_REJECT;
      }
      return NodeFilter.FILTER_ACCEPT;
    }});
  const tex = /\$\$|\\\(|\\\)|\\\[|\\\]|\\begin\{|\\frac|\\mathbb|\\lec\{/;
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const m = n.textContent.match(tex);
    if (m) leftovers.push(n.textContent.slice(Math.max(0, m.index - 40), m.index + 60).trim());
  }
  // Code and outputs (every <pre>, those in closed dropdowns opened for the measurement) wider
  // than their box: the reader must scroll sideways. Each names its first line that does not fit.
  function widePre() {
    const closed = Array.from(document.querySelectorAll("details:not([open])"));
    closed.forEach(d => { d.open = true; });
    const ctx = document.createElement("canvas").getContext("2d");
    const wide = [];
    for (const pre of document.querySelectorAll("pre")) {
      if (pre.offsetParent === null || pre.clientWidth === 0) continue;   // not shown
      const column = pre.closest("article") || document.body;
      const overflows = pre.scrollWidth > pre.clientWidth + PRE_SLACK_PX
        || pre.getBoundingClientRect().right > column.getBoundingClientRect().right + PRE_SLACK_PX;
      if (!overflows) continue;
      const cs = getComputedStyle(pre);
      ctx.font = cs.font || `${cs.fontSize} ${cs.fontFamily}`;
      const room = Math.min(pre.clientWidth, column.getBoundingClientRect().right
                            - pre.getBoundingClientRect().left)
                   - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
      const lines = pre.textContent.split("\n");
      const line = lines.find(l => ctx.measureText(l).width > room + PRE_SLACK_PX)
                   || lines.reduce((a, b) => (b.length > a.length ? b : a), "");
      const at = pre.closest("[id]");
      wide.push({at: at ? at.id : "", width: pre.scrollWidth, room: pre.clientWidth,
                 line: line.slice(0, 70)});
    }
    closed.forEach(d => { d.open = false; });
    return wide;
  }
  // Tables wider than their box (the reader scrolls the table sideways), and formulas that
  // stick out of their table cell (drawn over the next column).
  function wideTables() {
    const wide = [];
    for (const t of document.querySelectorAll("article table")) {
      if (t.offsetParent === null) continue;
      const box = t.parentElement;
      const caption = (t.querySelector("caption") || {}).textContent || "";
      const at = t.closest("[id]");
      if (t.scrollWidth > box.clientWidth + PRE_SLACK_PX
          || t.getBoundingClientRect().right > box.getBoundingClientRect().right + PRE_SLACK_PX)
        wide.push({at: at ? at.id : "", what: "table " + caption.slice(0, 50),
                   width: Math.round(t.getBoundingClientRect().width), room: box.clientWidth});
      for (const m of t.querySelectorAll("td mjx-container")) {
        const td = m.closest("td"), r = m.getBoundingClientRect(), c = td.getBoundingClientRect();
        if (r.right > c.right + PRE_SLACK_PX)
          wide.push({at: at ? at.id : "", what: "formula " + m.textContent.slice(0, 50),
                     width: Math.round(r.width), room: Math.round(c.width)});
      }
    }
    return wide;
  }
  return {
    title: document.title,
    wide_tables: wideTables(),
    has_mathjax: !!window.MathJax,
    merrors: Array.from(document.querySelectorAll("mjx-merror"),
                        e => (e.getAttribute("data-mjx-error") || e.textContent).slice(0, 200)),
    unrendered: Array.from(document.querySelectorAll(".math"))
                  .filter(e => !e.querySelector("mjx-container")).map(e => e.textContent.slice(0, 120)),
    leftovers: leftovers,
    // display equations wider than the text column: cut off (or scrolled) for the reader
    too_wide: Array.from(document.querySelectorAll('mjx-container[display="true"]')).filter(e => {
      const column = e.closest("article") || document.body;
      return e.scrollWidth > e.clientWidth + 2
             || e.getBoundingClientRect().right > column.getBoundingClientRect().right + 2;
    }).map(e => { const at = e.closest("[id]"); return (at ? "#" + at.id + ": " : "") +
                  (e.getAttribute("aria-label") || e.textContent).slice(0, 80); }),
    wide_pre: widePre(),
    images: imgs.map(i => ({src: i.getAttribute("src"), url: i.currentSrc || i.src,
                            ok: i.complete && i.naturalWidth > 0})),
    objects: Array.from(document.querySelectorAll("object[data], embed[src], iframe[src]"),
                        o => ({tag: o.tagName.toLowerCase(), src: o.getAttribute("data") || o.getAttribute("src"),
                               url: o.data || o.src})),
    svg_images: Array.from(document.querySelectorAll("svg image"),
                           i => i.getAttribute("href") || i.getAttribute("xlink:href")),
    links: Array.from(document.querySelectorAll("a[href]"), a => ({raw: a.getAttribute("href"), url: a.href,
                                                                     text: a.textContent.trim().slice(0, 60)})),
    ids: Array.from(document.querySelectorAll("[id]"), e => e.id)
           .concat(Array.from(document.querySelectorAll("a[name]"), a => a.name)),
    nav: Array.from(document.querySelectorAll("nav.bd-docs-nav a[href]"), a => a.href),
  };
}
""".replace("__PRE_SLACK_PX__", str(PRE_SLACK_PX))


def _redirects(file: Path) -> bool:
    return (file.suffix == ".html" and file.is_file()
            and 'http-equiv="refresh"' in file.read_text(errors="replace").lower())


def visit(browser: Browser, page: str, *, screenshot: Path | None = None) -> Visit:
    v = Visit(page)
    tab = browser.context.new_page()
    tab.on("console", lambda m: m.type == "error" and v.console_errors.append(m.text))
    tab.on("pageerror", lambda e: v.page_errors.append(str(e)))
    tab.on("requestfailed", lambda r: v.failed_requests.append(f"{r.url} ({r.failure})"))
    tab.on("response", lambda r: r.status >= 400 and v.failed_requests.append(f"{r.url} (HTTP {r.status})"))
    before = len(browser.blocked)
    try:
        tab.goto(browser.base + page, wait_until="load", timeout=PAGE_TIMEOUT_MS)
        if _redirects(browser.root / page):  # the root index.html: <meta http-equiv="Refresh">
            tab.wait_for_url(lambda url: url != browser.base + page, timeout=PAGE_TIMEOUT_MS)
            tab.wait_for_load_state("load", timeout=PAGE_TIMEOUT_MS)
        v.final_url = tab.url
        if tab.evaluate("() => !!document.querySelector('script[src*=\"mathjax\" i]')"):
            # MathJax typesets after load; startup.promise settles when the first typeset is done.
            tab.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise",
                                  timeout=PAGE_TIMEOUT_MS)
            tab.evaluate("() => MathJax.startup.promise")
        tab.wait_for_load_state("networkidle", timeout=PAGE_TIMEOUT_MS)
        v.dom = tab.evaluate(INSPECT)
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            tab.screenshot(path=str(screenshot), full_page=True)
            v.screenshot = screenshot
    finally:
        tab.close()
    v.blocked = browser.blocked[before:]
    # Requests this test aborted itself are reported as blocked, not as failures of the page.
    v.failed_requests = [f for f in v.failed_requests if not any(f.startswith(u + " ") for u in v.blocked)]
    return v


@pytest.fixture(scope="session")
def toc(site) -> list[str]:
    """The pages of _toc.yml, root first, as html paths relative to the site."""
    return toc_pages(book_root(site))


@pytest.fixture(scope="session")
def pages(site) -> list[str]:
    """Every HTML page of the built site."""
    return html_pages(site)


@pytest.fixture(scope="session")
def visits(request, site, browser, toc):
    """{page: Visit}, each page loaded once and on demand; chapters get their screenshot."""
    chapters = set(toc)
    shots = request.config.getoption("screenshots", default=None)
    shots = Path(shots) if shots else site.parent / "screenshots"
    cache: dict[str, Visit] = {}

    def get(page: str) -> Visit:
        if page not in cache:
            shot = shots / (Path(page).stem + ".png") if page in chapters else None
            cache[page] = visit(browser, page, screenshot=shot)
        return cache[page]

    return get
