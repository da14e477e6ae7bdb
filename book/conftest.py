"""nbval runs the book's notebooks from here: record each one's wall time and peak memory.

The numbers go to _build/status/notebooks.json (sdanatomy.status), which the status appendix
shows; the notebooks' own outputs never depend on them.

The order in which the notebooks run is set by the repository's top-level conftest.py.
"""
from sdanatomy.pages import status


def pytest_configure(config):
    if getattr(config.option, "nbval", False) or getattr(config.option, "nbval_lax", False):
        config.pluginmanager.register(status.notebook_recorder(), "sdanatomy-notebook-recorder")

