"""The built website in a real browser: serve ``_build/html`` on loopback, load every page once.

Run after the book is built (``make test`` builds it first)::

    pytest tests/browser --site=_build/html

(Write ``--site=DIR`` as one word: pytest reads its options before it has read this folder's
conftests, and would take a separate ``DIR`` for a path to collect from. The helpers the tests
import are in ``browsing.py``.)

Without ``--site`` every test here is skipped, so ``pytest tests`` never checks a stale build.
The browser is Debian's Chromium (``/usr/bin/chromium``, or ``$SDANATOMY_CHROMIUM``) driven by
Playwright; Playwright's own browser download is not used. Every request that does not go to
the loopback server is aborted and recorded: the website must work offline.
"""
from __future__ import annotations

import functools
import http.server
import re
import threading
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import pytest

from browsing import REPO, VIEWPORT_WIDTH, Browser, Visit, chromium_path, visit

SKIP_DIRS = ("_static", "_sources", "_images", "_downloads")  # assets, not pages



def site_dir(config) -> Path | None:
    site = config.getoption("site", default=None)
    if site is None:
        return None
    path = Path(site)
    return path if path.is_absolute() else Path(config.invocation_params.dir) / path




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
            reason="no site: run `pytest tests/browser --site=_build/html` after building the book"))])


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
        pytest.skip("no site: run `pytest tests/browser --site=_build/html` after building the book")
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


@pytest.fixture(scope="session")
def playwright_driver():
    """The session's one Playwright driver: its sync API allows only one at a time, so every
    test that starts a browser of its own (tests/browser/test_jupyterlab.py) takes this one."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(server, playwright_driver):
    exe = chromium_path()
    if not Path(exe).exists():
        pytest.fail(f"no Chromium at {exe}: install Debian's chromium or set $SDANATOMY_CHROMIUM")
    # Pages' requests are routed below; anything else the browser itself might send (updates,
    # safe browsing, …) goes to a proxy that does not exist, so nothing leaves the machine.
    chromium = playwright_driver.chromium.launch(executable_path=exe, args=[
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
