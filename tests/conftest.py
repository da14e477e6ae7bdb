"""Shared test set-up: the whole suite runs with the network forbidden."""
import os

import pytest

from sdanatomy import offline
from sdanatomy import sd15

# Subprocesses (notebook kernels started by nbval) inherit this and arm the guard on import.
os.environ[offline.ENV_VAR] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"


# The browser tests' options live here, not in tests/browser/conftest.py: pytest reads options
# only from the conftest files of the folders it is given and their parents, and make test
# gives it `tests` (see the top-level conftest.py).
def pytest_addoption(parser):
    parser.addoption("--site", default=None, metavar="DIR",
                     help="the built website to test in a browser (e.g. _build/html); "
                          "without it the browser tests are skipped")
    parser.addoption("--screenshots", default=None, metavar="DIR",
                     help="where to save one screenshot per chapter (default: <site>/../screenshots)")


@pytest.fixture(autouse=True, scope="session")
def _no_network():
    offline.forbid_network()
    yield


@pytest.fixture
def no_local_weights(monkeypatch, tmp_path):
    """No weights from this machine: no $SDANATOMY_WEIGHTS and an empty Hugging Face cache, so only
    the files a test makes itself are read."""
    for var in (sd15.ENV_VAR, "HUGGINGFACE_HUB_CACHE", "HF_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
