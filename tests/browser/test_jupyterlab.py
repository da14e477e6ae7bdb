"""`make lab` in a real browser: JupyterLab from the book's environment, a chapter's slider works.

`make lab` is started on loopback (with a token, on a free port, in a scratch copy of the
chapter so that nothing the kernel or JupyterLab writes reaches the repository). Headless
Chromium opens the chapter, runs every cell above its first slider cell and the slider cell
itself, then moves the slider with the keyboard and waits for the slider's output to change.
Like the rest of tests/browser it runs only with ``--site`` (after the book is built), and no
request may leave loopback.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from browsing import REPO, chromium_path

CHAPTER = "book/ch06_attention.ipynb"   # its first slider: the softmax temperature
SLIDER_MARK = "interact"                # the first code cell using ipywidgets' interact
START_TIMEOUT_S = 120
RUN_TIMEOUT_MS = 180_000                # the cells above the slider run first


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _slider_cell(notebook: Path) -> int:
    cells = json.loads(notebook.read_text())["cells"]
    for i, cell in enumerate(cells):
        if cell["cell_type"] == "code" and SLIDER_MARK in "".join(cell["source"]):
            return i
    raise AssertionError(f"{notebook.name} has no code cell with {SLIDER_MARK!r}")


@pytest.fixture(scope="module")
def lab(site, tmp_path_factory):
    """`make lab` serving a scratch folder with a copy of CHAPTER; yields (base URL, token)."""
    scratch = tmp_path_factory.mktemp("lab")
    shutil.copy(REPO / CHAPTER, scratch / Path(CHAPTER).name)
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(scratch / ".config"),
               JUPYTER_RUNTIME_DIR=str(scratch / ".runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(scratch / ".settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(scratch / ".workspaces"))
    args = (f"--IdentityProvider.token={token} --ServerApp.open_browser=False "
            "--LabApp.expose_app_in_browser=True")
    log = open(scratch / "lab.log", "w")
    proc = subprocess.Popen(["make", "-s", "lab", f"LAB_PORT={port}", f"LAB_ROOT={scratch}",
                             f"LAB_ARGS={args}"],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail("make lab did not start:\n" + (scratch / "lab.log").read_text())
                time.sleep(0.5)
        yield base, token, scratch
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        log.close()


# What the slider's output shows: its images' data and its text (not the markup around them).
SHOWN = ("Array.from(el.querySelectorAll('img')).map(i => i.src).join('|')"
         " + el.innerText")

RUN_TO_SLIDER = """
async (index) => {
  const app = window.jupyterapp;
  const ready = () => app.shell.currentWidget && app.shell.currentWidget.sessionContext;
  for (let i = 0; i < 600 && !ready(); i++) await new Promise(r => setTimeout(r, 100));
  const panel = app.shell.currentWidget;
  await panel.context.ready;
  await panel.sessionContext.ready;
  for (let i = 0; i < 600 && !panel.sessionContext.session?.kernel; i++)
    await new Promise(r => setTimeout(r, 100));
  panel.content.activeCellIndex = index;
  await app.commands.execute("notebook:run-all-above");
  panel.content.activeCellIndex = index;
  await app.commands.execute("notebook:run-cell");
  return panel.content.widgets.length;
}
"""


def test_make_lab_runs_a_chapter_slider(lab, playwright_driver):
    base, token, scratch = lab
    name = Path(CHAPTER).name
    index = _slider_cell(scratch / name)
    origin = urllib.parse.urlsplit(base).netloc
    left = []

    def only_loopback(route):
        url = urllib.parse.urlsplit(route.request.url)
        if url.netloc == origin and url.scheme in ("http", "https", "ws", "wss"):
            route.continue_()
        else:
            left.append(route.request.url)
            route.abort("blockedbyclient")

    browser = playwright_driver.chromium.launch(executable_path=chromium_path(), args=[
        "--no-sandbox", "--disable-gpu", "--proxy-server=http://127.0.0.1:9",
        "--proxy-bypass-list=127.0.0.1"])
    try:
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        page.route("**/*", only_loopback)
        page.goto(f"{base}/lab/tree/{name}?token={token}", timeout=RUN_TIMEOUT_MS)
        page.wait_for_function("() => window.jupyterapp !== undefined",
                               timeout=RUN_TIMEOUT_MS)
        page.evaluate(RUN_TO_SLIDER, index)
        cell = page.locator(".jp-Notebook .jp-Cell").nth(index)
        output = cell.locator(".widget-output")
        handle = cell.locator(".widget-slider .noUi-handle").first
        handle.wait_for(timeout=RUN_TIMEOUT_MS)
        output.first.wait_for(timeout=RUN_TIMEOUT_MS)
        out = output.first.element_handle()
        page.wait_for_function(f"(el) => ({SHOWN}).length > 0", arg=out,
                               timeout=RUN_TIMEOUT_MS)
        before = page.evaluate(f"(el) => {SHOWN}", out)
        handle.focus()
        for _ in range(3):
            page.keyboard.press("ArrowRight")
        page.wait_for_function(f"([el, old]) => {{ const now = {SHOWN};"
                               " return now.length > 0 && now !== old; }",
                               arg=[out, before], timeout=60_000)
        after = page.evaluate(f"(el) => {SHOWN}", out)
    finally:
        browser.close()
    assert after != before
    assert not left, f"requests left loopback: {left[:5]}"
    assert not re.search(r"Traceback|Error", after[-2000:]), after[-500:]
