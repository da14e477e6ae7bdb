"""What the browser tests share besides their fixtures: one page visit, and what it gathers.

The fixtures (the loopback server, the browser, the cache of visits) are in ``conftest.py``;
the test modules import these helpers from here, by a name no other module on the path has.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PAGE_TIMEOUT_MS = 30_000
VIEWPORT_WIDTH = 1300   # a desktop window; the text column is then about 700 px wide


def chromium_path() -> str:
    exe = os.environ.get("SDANATOMY_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    return exe


@dataclass
class Browser:
    context: object
    base: str
    root: Path
    blocked: list = field(default_factory=list)   # URLs outside loopback the pages tried to load


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
