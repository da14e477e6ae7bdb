"""Shared test set-up: the whole suite runs with the network forbidden."""
import os

import pytest

from sdanatomy import offline
from sdanatomy import sd15

# Subprocesses (notebook kernels started by nbval) inherit this and arm the guard on import.
os.environ[offline.ENV_VAR] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"


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
