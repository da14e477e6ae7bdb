"""Shared test set-up: the whole suite runs with the network forbidden."""
import os

import pytest

from sdanatomy import offline

# Subprocesses (notebook kernels started by nbval) inherit this and arm the guard on import.
os.environ[offline.ENV_VAR] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(autouse=True, scope="session")
def _no_network():
    offline.forbid_network()
    yield
