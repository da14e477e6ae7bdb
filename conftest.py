"""The order in which ``make test``'s single pytest run hands out its work to two workers.

``make test`` runs the unit tests, the notebooks under nbval and the browser tests in one
``pytest book tests`` call on two workers (pytest-xdist, one torch thread each), so that no
worker waits while the other finishes a phase alone. ``--dist loadfile`` keeps each file on one
worker: a notebook's cells run in order in one kernel, and the tests of one browser file share
one Chromium and one visit per page.

The files are handed out in the order of the items, and the hook below puts the longest first,
so that no long file starts last and runs alone at the end; the short ones fill in behind.
"""
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent

# The long files, in the order they are handed out (wall time under make test, measured
# 2026-12-08 on 2 cores, one thread each): chapter 3 about 220 s; the site's browser tests
# about 80 s, second although chapter 8 (about 100 s) is longer, because they spend half of it
# waiting on the browser, which leaves the other worker the CPU; then chapter 8, the
# decoder's tests (about 80 s), chapter 7 (about 60 s), ... The files not named follow in
# their usual order: the other notebooks, then the unit tests.
LONGEST_FIRST = ("book/ch03_freedom.ipynb", "tests/browser/test_site.py",
                 "book/ch08_functions.ipynb", "tests/test_decoder.py",
                 "book/ch07_receptive_fields.ipynb", "tests/test_models.py",
                 "tests/test_export_onnx.py", "book/appendix_sd15.ipynb",
                 "tests/browser/test_jupyterlab.py", "book/appendix_ledger.ipynb",
                 "tests/test_layout.py", "tests/test_text_to_image.py")


def _file(item) -> str:
    try:
        return Path(str(item.fspath)).resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return ""


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """Whole files, longest first; sorted() is stable, so the items within a file keep their order."""

    def rank(item):
        name = _file(item)
        if name in LONGEST_FIRST:
            return LONGEST_FIRST.index(name)
        return len(LONGEST_FIRST) + (0 if name.endswith(".ipynb") else 1)

    items[:] = sorted(items, key=rank)
