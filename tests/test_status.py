"""sdanatomy.status: the status appendix's tables, the notebook recorder, and make test's total time."""
import json
import subprocess
import sys
import time

import nbformat
import pytest

from sdanatomy import ledger
from sdanatomy import sd15
from sdanatomy.pages import status


@pytest.fixture(autouse=True)
def status_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv(status.STATUS_ENV, str(tmp_path / "status"))
    for var in (sd15.ENV_VAR, "HUGGINGFACE_HUB_CACHE", "HF_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    return tmp_path / "status"


def test_formatting():
    assert status.format_seconds(None) == status.NOT_MEASURED
    assert status.format_seconds(3.14159) == "3.1 s"
    assert status.format_seconds(754) == "12 min 34 s"
    assert status.format_bytes(512) == "512 B"
    assert status.format_bytes(3 * 2 ** 30) == "3.0 GiB"


def test_fresh_clone_says_not_yet_measured(status_in_tmp):
    assert not status_in_tmp.exists()
    for table in (status.notebook_table(), status.bench_table()):
        assert status.NOT_MEASURED in repr(table) and status.NOT_MEASURED in table._repr_html_()
    assert status.make_test_seconds() is None


def test_notebook_table_shows_the_recorded_numbers(status_in_tmp):
    status.write(status.NOTEBOOKS_FILE, {"notebooks": {"book/ch02_notation.ipynb": {
        "seconds": 12.5, "peak_rss_bytes": 450 * 2 ** 20, "cells": 13, "failed_cells": 0,
        "measured_at": "2026-01-01 00:00 UTC"}}})
    text = repr(status.notebook_table())
    row = next(line for line in text.splitlines() if line.startswith("ch02_notation"))
    assert "12.5 s" in row and "450.0 MiB" in row and "passed" in row


def test_unreadable_status_file_is_not_measured(status_in_tmp):
    status_in_tmp.mkdir(parents=True)
    (status_in_tmp / status.NOTEBOOKS_FILE).write_text("{half a file")
    assert status.read(status.NOTEBOOKS_FILE) is None
    assert status.NOT_MEASURED in repr(status.notebook_table())


def test_weights_mode_without_weights_is_architecture_only():
    assert status.weights_mode()[0] == sd15.ARCHITECTURE


def test_weights_mode_follows_the_environment_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(sd15.ENV_VAR, str(tmp_path))
    mode, where = status.weights_mode()
    assert mode == sd15.REAL and str(tmp_path) in where
    monkeypatch.setenv(sd15.ENV_VAR, str(tmp_path / "missing"))
    mode, where = status.weights_mode()
    assert mode == "error" and "no such file or folder" in where


def test_ledger_summary_counts_every_row():
    rows = ledger.entries()
    table = status.ledger_summary()
    assert table.rows[-1] == ["all", str(len(rows)), str(sum(e.verdict == "matches" for e in rows)),
                              str(sum(e.verdict == "differs" for e in rows))]


def test_versions_name_the_pinned_packages():
    v = status.versions()
    assert v["torch"].startswith("2.13.0") and v["diffusers"] == "0.42.1" and v["transformers"] == "5.23.0"


def test_make_test_total_time(status_in_tmp):
    assert status.finish_make_test() is None            # no start stamp: nothing recorded
    status_in_tmp.mkdir(parents=True)
    (status_in_tmp / status.MAKE_TEST_STARTED).write_text(f"{int(time.time()) - 90}\n")
    result = status.finish_make_test()
    assert 89 <= result["seconds"] < 200 and status.make_test_seconds() == result["seconds"]
    assert "make test, total (last completed run)" in repr(status.bench_table({"make_test_seconds": 90}))


def test_recorder_writes_time_and_peak_memory_of_each_notebook(tmp_path, status_in_tmp):
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("x = bytearray(200 * 2**20)  # 200 MiB, touched\nprint(len(x) // 2**20)",
                                  execution_count=1, outputs=[nbformat.v4.new_output("stream", name="stdout", text="200\n")]),
        nbformat.v4.new_code_cell("print('done')", execution_count=2, outputs=[nbformat.v4.new_output("stream", name="stdout",
                                                                                    text="done\n")])])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "tiny.ipynb")
    (tmp_path / "conftest.py").write_text(
        "from sdanatomy.pages import status\n"
        "def pytest_configure(config):\n"
        "    config.pluginmanager.register(status.notebook_recorder(), 'recorder')\n")
    out = subprocess.run([sys.executable, "-m", "pytest", "--nbval", "--nbval-current-env", "-p", "no:cacheprovider",
                          "-q", "tiny.ipynb"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    run = json.loads((status_in_tmp / status.NOTEBOOKS_FILE).read_text())["notebooks"]["tiny.ipynb"]
    assert run["cells"] == 2 and run["failed_cells"] == 0 and 0 < run["seconds"] < 300
    if sys.platform.startswith("linux"):
        assert run["peak_rss_bytes"] > 200 * 2 ** 20    # the kernel held the 200 MiB


def test_only_the_status_appendix_is_executed_at_build_time():
    # _config.yml turns execution off; the status appendix alone asks Jupyter Book to run it
    # (notebook metadata mystnb.execution_mode), so that it shows the last make test's numbers.
    root = status.book_root()
    modes = {p.name: json.loads(p.read_text())["metadata"].get("mystnb", {}).get("execution_mode")
             for p in sorted((root / "book").glob("*.ipynb"))}
    assert modes.pop("appendix_status.ipynb") == "force"
    assert not any(modes.values()), f"other notebooks executed at build time: {modes}"
