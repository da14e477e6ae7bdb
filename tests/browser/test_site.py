"""The website as its readers see it: every page loaded in headless Chromium (fixtures: conftest.py).

A page fails on a MathJax error or TeX left unrendered, a display equation or a block of code
or output (any <pre>) wider than the column, which the reader would have to scroll sideways, an
image, SVG or other resource that did not load, a console or JavaScript error, a request that
tried to leave the machine, or an internal link or cross-reference that leads nowhere; a page
made too wide on purpose proves that the sideways check can fail. The site fails when a page of
_toc.yml is missing from the navigation, a page exists outside it, or the search does not find a
term that a chapter contains. One screenshot per chapter is saved beside the site.
"""
from __future__ import annotations

import html.parser
import urllib.parse

import pytest

from browsing import PRE_SLACK_PX, VIEWPORT_WIDTH, visit

# Pages Sphinx generates besides the chapters: the root redirect, the indices, the search page.
GENERATED = {"index.html", "genindex.html", "search.html", "prf-prf.html", "py-modindex.html"}
# Terms a reader would search for, each found in at least one chapter of the book.
SEARCH_TERMS = ("GroupNorm",)


def _site_path(server, url: str) -> tuple[str, str] | None:
    """(path relative to the site, fragment) for a URL served by the test server, else None."""
    u, base = urllib.parse.urlsplit(url), urllib.parse.urlsplit(server.base)
    if (u.scheme, u.netloc) != (base.scheme, base.netloc):
        return None
    path = urllib.parse.unquote(u.path).lstrip("/")
    if path == "" or path.endswith("/"):
        path += "index.html"
    return path, urllib.parse.unquote(u.fragment)


class _Ids(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids = set()

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k == "id" or (tag == "a" and k == "name"):
                self.ids.add(v)


def _ids(visits, server, path: str) -> set[str]:
    """The element ids of a page: from the browser's DOM for pages, parsed from the file otherwise."""
    if path.endswith(".html"):
        return set(visits(path).dom.get("ids", []))
    parser = _Ids()
    parser.feed((server.root / path).read_text(errors="replace"))
    return parser.ids


# ---------------------------------------------------------------- every page
def _redirected(v, server) -> bool:
    """The root index.html only redirects to the book's first page: check that it lands."""
    if v.final_url == server.base + v.page:
        return False
    target = _site_path(server, v.final_url)
    assert target and (server.root / target[0]).is_file(), f"{v.page} redirects nowhere: {v.final_url}"
    return True


def _wide_code(d) -> list[str]:
    """Every <pre> (code or output) that scrolls sideways, with its first line that does not fit."""
    return [f"code or output wider than its box ({VIEWPORT_WIDTH} px window, {w['width']} > "
            f"{w['room']} + {PRE_SLACK_PX} px){' at #' + w['at'] if w['at'] else ''}: {w['line']!r}"
            for w in d["wide_pre"]]


def _wide_tables(d) -> list[str]:
    """Every table wider than its box, and every formula that sticks out of its table cell."""
    return [f"{w['what']!r} wider than its box ({VIEWPORT_WIDTH} px window, {w['width']} > "
            f"{w['room']} + {PRE_SLACK_PX} px){' at #' + w['at'] if w['at'] else ''}"
            for w in d["wide_tables"]]


def test_page_renders_cleanly(page, visits, server):
    v = visits(page)
    if _redirected(v, server):
        return
    d = v.dom
    problems = [f"MathJax error: {e}" for e in d["merrors"]]
    problems += [f"math left unrendered: {t!r}" for t in d["unrendered"]]
    problems += [f"TeX source left in the text: {t!r}" for t in d["leftovers"]]
    problems += [f"equation wider than the column ({VIEWPORT_WIDTH} px window): {t!r}" for t in d["too_wide"]]
    problems += _wide_code(d)
    problems += _wide_tables(d)
    problems += [f"image did not load: {i['src']}" for i in d["images"] if not i["ok"]]
    for o in d["objects"]:
        target = _site_path(server, o["url"])
        if target is not None and not (server.root / target[0]).is_file():
            problems.append(f"<{o['tag']}> source does not exist: {o['src']}")
    problems += [f"request failed: {r}" for r in v.failed_requests]
    problems += [f"JavaScript error: {e}" for e in v.page_errors]
    problems += [f"console error: {e}" for e in v.console_errors]
    problems += [f"tried to leave the machine (blocked): {u}" for u in v.blocked]
    assert not problems, f"{page} has {len(problems)} problem(s):\n  " + "\n  ".join(problems)


# A page that scrolls sideways on purpose: one <pre> too wide for a 700 px column (in a closed
# dropdown, as the book's solutions are), one that fits. It is served under the site's own origin
# (a route of the browser, not a file in the site) and inspected by the same visit().
_PROBE = "_probe/wide_pre.html"
_PROBE_HTML = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>probe</title></head>
<body><article style="width: 700px"><section id="fits"><pre>short = 1</pre></section>
<details><summary>solution</summary><section id="too-wide"><pre>ok = 2
WIDE_LINE = [{}]
</pre></section></details></article></body></html>
""".format(", ".join(["1234567"] * 40))


def test_wide_code_is_reported(browser):
    """The sideways check can fail: it names the over-wide <pre> and its line, not the one that fits."""
    url = browser.base + _PROBE
    route = lambda r: r.fulfill(status=200, content_type="text/html; charset=utf-8", body=_PROBE_HTML)
    browser.context.route(url, route)   # the latest route is tried first
    try:
        problems = _wide_code(visit(browser, _PROBE).dom)
    finally:
        browser.context.unroute(url, route)
    assert len(problems) == 1, problems
    assert "at #too-wide: 'WIDE_LINE = [1234567, " in problems[0], problems


# A table too wide for its 700 px column, one that fits, and a formula too wide for its cell.
_PROBE_TABLES = "_probe/wide_table.html"
_PROBE_TABLES_HTML = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>probe</title></head>
<body><article style="width: 700px">
<section id="fits"><table><caption>fits</caption><tr><td>a</td><td>b</td></tr></table></section>
<section id="too-wide"><table style="width: 900px"><caption>too wide</caption><tr><td>x</td></tr>
</table></section>
<section id="cell"><table style="width: 300px; table-layout: fixed"><caption>cell</caption>
<tr><td style="width: 50%"><mjx-container style="display: inline-block; width: 400px">f(x)
</mjx-container></td><td>next</td></tr></table></section></article></body></html>
"""


def test_wide_tables_are_reported(browser):
    """The table check can fail: it names the over-wide table and the formula that sticks out."""
    url = browser.base + _PROBE_TABLES
    route = lambda r: r.fulfill(status=200, content_type="text/html; charset=utf-8",
                                body=_PROBE_TABLES_HTML)
    browser.context.route(url, route)
    try:
        problems = _wide_tables(visit(browser, _PROBE_TABLES).dom)
    finally:
        browser.context.unroute(url, route)
    assert len(problems) == 2, problems
    assert "'table too wide'" in problems[0] and "at #too-wide" in problems[0], problems
    assert "'formula f(x)" in problems[1] and "at #cell" in problems[1], problems


def test_links_lead_somewhere(page, visits, server):
    v = visits(page)
    if _redirected(v, server):
        return
    dead = []
    for link in v.dom["links"]:
        target = _site_path(server, link["url"])
        if target is None or link["raw"].startswith(("javascript:", "mailto:")):
            continue  # outside the site: not followed (the test is offline)
        path, fragment = target
        if not (server.root / path).is_file():
            dead.append(f"{link['raw']} ({link['text']!r}): no page {path}")
        elif fragment and fragment not in _ids(visits, server, path):
            dead.append(f"{link['raw']} ({link['text']!r}): {path} has no anchor #{fragment}")
    assert not dead, f"{page} has {len(dead)} link(s) that lead nowhere:\n  " + "\n  ".join(dead)


# ---------------------------------------------------------------- the site as a whole
def test_every_toc_page_is_in_the_navigation(site, toc, visits, server):
    missing = [p for p in toc if not (site / p).is_file()]
    assert not missing, f"pages of _toc.yml that were not built: {missing}"
    for page in toc:
        nav = {_site_path(server, url)[0] for url in visits(page).dom["nav"]}
        absent = [p for p in toc if p not in nav]
        assert not absent, f"the sidebar of {page} does not lead to {absent}"


def test_no_page_outside_the_toc(toc, pages):
    orphans = [p for p in pages if p not in toc and p not in GENERATED]
    assert not orphans, f"pages that no reader can reach from the navigation: {orphans}"


@pytest.mark.parametrize("term", SEARCH_TERMS)
def test_search_finds_a_chapter_term(term, toc, browser, server):
    chapters = set(toc)
    tab = browser.context.new_page()
    errors = []
    tab.on("pageerror", lambda e: errors.append(str(e)))
    try:
        tab.goto(f"{server.base}search.html?q={urllib.parse.quote(term)}", wait_until="load")
        # Sphinx's search writes its summary when the last result is shown.
        tab.wait_for_function("() => { const s = document.querySelector('#search-results .search-summary');"
                              " return s && s.textContent.trim().length > 0; }", timeout=30_000)
        hits = tab.eval_on_selector_all("#search-results ul.search li a", "as => as.map(a => a.href)")
        summary = tab.inner_text("#search-results .search-summary")
    finally:
        tab.close()
    pages = {_site_path(server, h)[0] for h in hits if _site_path(server, h)}
    assert pages & chapters, f"searching {term!r} found no chapter: {summary!r}, hits {sorted(pages)}"


def test_nothing_leaves_the_machine(pages, visits, browser):
    for page in pages:
        visits(page)
    blocked = sorted(set(browser.blocked))
    assert not blocked, f"pages tried to reach outside loopback: {blocked}"


def test_server_answered_every_request(pages, visits, server):
    for page in pages:
        visits(page)
    errors = sorted(set(server.errors))
    assert not errors, f"requests the site could not answer: {errors}"


def test_one_screenshot_per_chapter(toc, visits):
    for page in toc:
        shot = visits(page).screenshot
        assert shot is not None and shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", page


# An animation (matplotlib's to_jshtml) plays on the static site: pressing its Play button moves
# the frame slider and changes the image shown. The book has at least one (chapter 3's DDIM
# trajectory).
ANIMATION_PAGES = ["book/ch03_freedom.html"]


def _animation_state(tab, index):
    return tab.evaluate("(i) => { const a = document.querySelectorAll('div.animation')[i];"
                        " return [a.querySelector('img').src,"
                        " a.querySelector('input.anim-slider').value]; }", index)


@pytest.mark.parametrize("anim_page", ANIMATION_PAGES)
def test_animations_play(anim_page, browser, server):
    page = anim_page
    tab = browser.context.new_page()
    errors = []
    tab.on("pageerror", lambda e: errors.append(str(e)))
    try:
        tab.goto(f"{server.base}{page}", wait_until="load")
        count = tab.locator("div.animation").count()
        assert count >= 1, f"{page} shows no animation"
        for i in range(count):
            anim = tab.locator("div.animation").nth(i)
            anim.locator("button[title='First frame']").click()
            before = _animation_state(tab, i)
            anim.locator("button[title='Play']").click()
            tab.wait_for_function(
                "([i, old]) => { const a = document.querySelectorAll('div.animation')[i];"
                " return a.querySelector('input.anim-slider').value !== old; }",
                arg=[i, before[1]], timeout=10_000)
            anim.locator("button[title='Pause']").click()
            after = _animation_state(tab, i)
            assert after[0] != before[0] and after[1] != before[1], (page, i)
    finally:
        tab.close()
    assert not errors, errors
