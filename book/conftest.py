"""nbval runs the book's notebooks from here: record each one's wall time and peak memory.

The numbers go to _build/status/notebooks.json (sdanatomy.status), which the status appendix
shows; the notebooks' own outputs never depend on them.

make test runs two notebooks at a time (pytest-xdist, ``--dist loadfile``: all cells of a
notebook in one worker, in order). The workers take the notebooks in the order below, the
longest first, so that the longest one does not start last and run alone at the end.
"""
from pathlib import Path

from sdanatomy.pages import status

# Each notebook's wall time under nbval, longest first (make test on 2 cores, one thread
# each); the notebooks not named here follow in their usual order.
LONGEST_FIRST = ("ch03_freedom", "ch08_functions", "ch07_receptive_fields", "appendix_ledger")


def pytest_configure(config):
    if getattr(config.option, "nbval", False) or getattr(config.option, "nbval_lax", False):
        config.pluginmanager.register(status.notebook_recorder(), "sdanatomy-notebook-recorder")


def pytest_collection_modifyitems(items):
    """Reorder whole notebooks, never the cells within one (sorted() is stable)."""

    def rank(item):
        stem = Path(str(item.fspath)).stem
        return LONGEST_FIRST.index(stem) if stem in LONGEST_FIRST else len(LONGEST_FIRST)

    items[:] = sorted(items, key=rank)
