"""The book's status: what it was executed with, in which mode, how long it took and how much memory.

The status appendix shows, from this module:

* :func:`versions` — Python and the packages the book runs on;
* :func:`weights_mode` — real weights or architecture only, found the way :func:`sdanatomy.sd15.load`
  finds them, without building or reading anything;
* :func:`ledger_summary` — the ledger's rows per lecture section, matches and differs;
* :func:`notebook_table` — each notebook's wall time and peak memory from the last ``make test``;
* :func:`bench_table` — the results of ``bench/run.py``.

Measurements live in ``_build/status/`` (:func:`status_dir`): ``notebooks.json``, written by
:func:`notebook_recorder` (a pytest plugin that ``book/conftest.py`` registers when nbval runs),
``make_test.json`` (``python -m sdanatomy.pages.status finish-make-test``, the last step of ``make test``)
and ``bench.json`` (``bench/run.py``). None of them is stored in the repository: on a fresh clone
the tables say "not yet measured". Nothing here changes what a notebook prints, so nbval's
comparisons never depend on these numbers.
"""
from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

from sdanatomy.ledger.registry import Table

STATUS_ENV = "SDANATOMY_STATUS_DIR"
NOTEBOOKS_FILE, MAKE_TEST_FILE, BENCH_FILE = "notebooks.json", "make_test.json", "bench.json"
MAKE_TEST_STARTED = "make_test.started"   # `date +%s` written by the Makefile before anything else
NOT_MEASURED = "not yet measured"
PACKAGES = ("torch", "diffusers", "transformers", "safetensors", "huggingface-hub", "numpy", "torchview",
            "jupyter-book", "sphinx", "myst-nb", "nbval", "pytest", "playwright")


# ---------------------------------------------------------------- where measurements live
def book_root() -> Path | None:
    """The book's folder (the one holding _toc.yml): above the working directory, else above this package."""
    for start in (Path.cwd(), Path(__file__).resolve().parent):
        for folder in (start, *start.parents):
            if (folder / "_toc.yml").is_file():
                return folder
    return None


def status_dir() -> Path:
    """``$SDANATOMY_STATUS_DIR``, else ``<book>/_build/status`` (``./_build/status`` outside a book)."""
    if os.environ.get(STATUS_ENV):
        return Path(os.environ[STATUS_ENV])
    return (book_root() or Path.cwd()) / "_build" / "status"


def _read_file(file: Path) -> dict | None:
    try:
        data = json.loads(Path(file).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_file(file: Path, data: dict) -> Path:
    """Write JSON atomically: a reader never sees half a file."""
    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(file)
    return file


def read(name: str) -> dict | None:
    """One measurement file of :func:`status_dir`, or None when it does not exist (yet) or is unreadable."""
    return _read_file(status_dir() / name)


def write(name: str, data: dict) -> Path:
    """Write one measurement file of :func:`status_dir`."""
    return _write_file(status_dir() / name, data)


def now_utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def machine() -> dict:
    """The machine the numbers were taken on, in a few fields."""
    info = {"python": platform.python_version(), "platform": platform.platform(terse=True),
            "processor": platform.machine(), "cpus": os.cpu_count()}
    try:
        import torch
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # status must render even where torch is broken
        pass
    try:
        with open("/proc/meminfo") as f:
            info["memory_bytes"] = int(f.readline().split()[1]) * 1024
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    except (OSError, ValueError, IndexError):
        pass
    return info


# ---------------------------------------------------------------- formatting
def format_seconds(s) -> str:
    if s is None:
        return NOT_MEASURED
    s = float(s)
    if s < 60:
        return f"{s:.1f} s"
    m, sec = divmod(round(s), 60)
    return f"{m} min {sec:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"


def format_bytes(n) -> str:
    if n is None:
        return NOT_MEASURED
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit in ("B", "KiB") else f"{n:.1f} {unit}"
        n /= 1024


# ---------------------------------------------------------------- what the book runs on
def versions() -> dict[str, str]:
    """Python and each package of :data:`PACKAGES`: its installed version, or "not installed"."""
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def versions_table() -> Table:
    v = versions()
    m = machine()
    notes = [f"machine: {m.get('cpu') or m.get('processor')}, {m.get('cpus')} CPUs"
             + (f", {format_bytes(m['memory_bytes'])} memory" if m.get("memory_bytes") else "")
             + (f", GPU {m['cuda']}" if m.get("cuda") else ", no GPU")]
    return Table("Versions the book was executed with", ["package", "version"], list(v.items()), notes=notes)


def weights_mode(components=None) -> tuple[str, str]:
    """(mode, where): what :func:`sdanatomy.sd15.load` would use, found without building or reading Θ.

    The same lookup, sd15.find_weights: ``$SDANATOMY_WEIGHTS``, then the local Hugging Face cache;
    without either, architecture only. A path that :func:`~sdanatomy.sd15.load` would refuse is
    reported as such (mode "error") rather than raised: the status must always render.
    """
    from sdanatomy import sd15

    components = sd15.COMPONENTS if components is None else tuple(components)
    try:
        found = sd15.find_weights(components=components)
    except sd15.WeightsError as e:
        return "error", str(e)
    if found is None:
        return sd15.ARCHITECTURE, "no SD-1.5 weights on this machine: seeded random weights"
    path, note = found
    return sd15.REAL, f"{note}: {path}"


# ---------------------------------------------------------------- the ledger, counted
def ledger_summary() -> Table:
    """The ledger's rows per lecture section (its first number): rows, matches, differs. Counts only."""
    from sdanatomy import ledger

    per: dict[str, list[int]] = {}
    for e in ledger.entries():
        n = per.setdefault(e.section.split(".")[0], [0, 0, 0])
        n[0] += 1
        n[1] += e.verdict == "matches"
        n[2] += e.verdict == "differs"
    rows = [[f"§{s}", *n] for s, n in per.items()]
    total = [sum(n[i] for n in per.values()) for i in range(3)]
    rows.append(["all", *total])
    return Table(f"Ledger: {total[0]} rows, {total[1]} matches, {total[2]} differs",
                 ["lecture section", "rows", "matches", "differs"], rows)


# ---------------------------------------------------------------- notebooks: time and memory
def notebooks_in_book() -> list[str]:
    """The book's notebooks as nbval names them ('book/ch02_notation.ipynb'), in _toc.yml's order."""
    root = book_root()
    if root is None:
        return []
    order = []
    toc = (root / "_toc.yml").read_text() if (root / "_toc.yml").is_file() else ""
    for line in toc.splitlines():
        line = line.strip()
        if line.startswith(("- file:", "file:", "root:")):
            order.append(line.split(":", 1)[1].strip() + ".ipynb")
    present = sorted(p.relative_to(root).as_posix() for p in (root / "book").glob("*.ipynb"))
    return [p for p in order if p in present] + [p for p in present if p not in order]


def notebook_table() -> Table:
    """Each notebook's wall time and its kernel's peak memory as nbval last ran it; "not yet measured" else."""
    runs = (read(NOTEBOOKS_FILE) or {}).get("notebooks", {})
    names = notebooks_in_book()
    names += [n for n in runs if n not in names]
    rows, total, peak = [], 0.0, 0
    for name in names:
        r = runs.get(name)
        if r is None:
            rows.append([_short(name), "", NOT_MEASURED, "", "", ""])
            continue
        total += r.get("seconds") or 0
        peak = max(peak, r.get("peak_rss_bytes") or 0)
        result = "passed" if not r.get("failed_cells") else f"{r['failed_cells']} cell(s) failed"
        rows.append([_short(name), r.get("cells", ""), format_seconds(r.get("seconds")),
                     format_bytes(r.get("peak_rss_bytes")), result, r.get("measured_at", "").removesuffix(" UTC")])
    measured = [r for r in rows if r[2] != NOT_MEASURED]
    notes = ["time: from the start of the notebook's kernel to its last cell (nbval, make test); "
             "peak memory: the kernel process's peak resident set (VmHWM), children not included."]
    if measured:
        notes.insert(0, f"all measured notebooks: {format_seconds(total)} in all; "
                        f"the largest peak {format_bytes(peak)}")
    else:
        notes.insert(0, f"{NOT_MEASURED}: run `make test` (or nbval on the notebooks) to fill this table")
    return Table("Notebooks: execution time and peak memory (last nbval run)",
                 ["notebook", "cells", "time", "peak memory", "result", "measured (UTC)"], rows, notes=notes)


def _short(name: str) -> str:
    """'book/ch02_notation.ipynb' -> 'ch02_notation'."""
    return Path(name).stem


def make_test_seconds() -> float | None:
    return (read(MAKE_TEST_FILE) or {}).get("seconds")


def finish_make_test() -> dict | None:
    """Called as the last step of ``make test``: the total time since the Makefile's start stamp."""
    try:
        started = float((status_dir() / MAKE_TEST_STARTED).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        print(f"sdanatomy.pages.status: no {MAKE_TEST_STARTED} stamp; make test's total time not recorded")
        return None
    result = {"started": started, "finished": time.time(), "measured_at": now_utc(), "machine": machine()}
    result["seconds"] = result["finished"] - started
    write(MAKE_TEST_FILE, result)
    print(f"make test took {format_seconds(result['seconds'])}")
    return result


# ---------------------------------------------------------------- the benchmark's results
def _bench_peak_rows(pk: dict) -> list[list[str]]:
    """The measured peak (bench/peak.py) beside the theoretical one, a row per dtype."""
    if not pk.get("measured"):
        return [["the machine's peak (FMA kernel)", pk.get("skipped", NOT_MEASURED)]]
    rows, th = [], (pk.get("theoretical") or {})
    for dtype in sorted(pk["measured"], key=lambda d: d != "float32"):  # float32 first
        m, t = pk["measured"][dtype], (th.get("gflops") or {}).get(dtype)
        theory = (f"; theoretical {t:.0f} = {th['cores']} cores × {th['clock_ghz']:.2f}"
                  f" GHz × {th['flop_per_cycle'][dtype]} FLOP/cycle" if t else "")
        if t and m["gflops"] > t and m.get("implied_clock_ghz"):
            theory += (f" at the reported clock; the measurement implies "
                       f"{m['implied_clock_ghz']:.2f} GHz (the cores boost above it)")
        rows.append([f"the machine's {dtype} peak (measured)",
                     f"{m['gflops']:.0f} GFLOP/s{theory}"])
    mm = (pk.get("matmul") or {}).get("float32")
    if mm:
        rows.append([f"float32 torch matmul {mm['n']}³ (not the peak)",
                     f"{mm['gflops']:.0f} GFLOP/s"])
    return rows


def _bench_unet_rows(u: dict, profiles: dict) -> list[list[str]]:
    """One U-Net forward, four ways: time, GFLOP/s, utilisation of the same dtype's
    peak, and the profiler's split into conv, linear/matmul, attention, norm, other."""
    if not u.get("forwards"):
        return [["U-Net forward (diffusers and the book)",
                 u.get("skipped", NOT_MEASURED)]]
    lat = u["latent"]
    rows = [[f"U-Net forward, {lat}×{lat} latent: FLOPs",
             f"{u['gflop_per_forward']:.1f} GFLOP"]]
    order = ("diffusers float32", "book float32", "diffusers bf16", "book bf16")
    groups = ("conv", "linear/matmul", "attention", "norm", "other")   # bench/run.py's
    for name in sorted(u["forwards"], key=lambda n: (order + (n,)).index(n)):
        f = u["forwards"][name]
        use = (f" = {100 * f['utilisation']:.0f} % of the measured peak"
               if "utilisation" in f else "")
        rows.append([f"  {name}", f"{format_seconds(f['median_s'])} (median of "
                                  f"{u['runs']}): {f['achieved_gflops']:.0f} GFLOP/s"
                                  + use])
        p = (profiles or {}).get(name) or {}
        if "share" in p:
            rows.append(["    where its time goes (profiler, self CPU time)", ", ".join(
                f"{g} {100 * p['share'][g]:.0f} %" for g in groups if g in p["share"])])
    return rows


def _bench_conv_rows(c: dict) -> list[list[str]]:
    """The U-Net's largest convolution alone, float32 and bf16, against each peak."""
    rows = []
    for dtype in ("float32", "bfloat16"):
        r = c.get(dtype)
        if r:
            share = (f" = {100 * r['of_peak']:.0f} % of the peak" if "of_peak" in r
                     else "")
            rows.append([f"largest convolution ({c['shape']}), {dtype}",
                         f"{r['gflops']:.0f} GFLOP/s{share}"])
    return rows


def _bench_e2e_rows(e: dict, lim: dict | None) -> list[list[str]]:
    """End to end: diffusers' float32 pipeline against the book's CPU path."""
    if "diffusers" not in e:
        return [["end to end, diffusers float32 vs the book's CPU path",
                 e.get("skipped", NOT_MEASURED)]]
    rows = []
    for path, label in (("diffusers", "diffusers' pipeline, float32"),
                        ("book", "the book's CPU path")):
        r = e[path]
        rows.append([f"{e['steps']} steps at {e['size']}², guidance {e['guidance']}: "
                     + label,
                     r.get("skipped") or f"{format_seconds(r['seconds'])}, peak memory "
                     f"{format_bytes(r['max_rss_bytes'])} ({r['precision']})"])
    if "ratio" in e:
        met = "met" if e["goal_met"] else "not met"
        rows.append(["end to end: diffusers / the book",
                     f"{e['ratio']:.2f}× (goal {e['goal_ratio']}×: {met})"])
    if "ratio_compiled" in e:
        r = e["book_compiled"]
        rows.append(["end to end: diffusers / the book with torch.compile",
                     f"{e['ratio_compiled']:.2f}× ({format_seconds(r['seconds'])} with "
                     f"the compilation, peak memory "
                     f"{format_bytes(r['max_rss_bytes'])})"])
    if lim:
        rows.append(["what limits it", lim["note"]])
    return rows


def bench_table(results: dict | None = None) -> Table:
    """bench/run.py's results (``results``, else its last ``bench.json``), or "not yet measured"."""
    b = results if results is not None else read(BENCH_FILE)
    if b is None:
        return Table("Benchmarks (bench/run.py)", ["measurement", "result"],
                     [["all", NOT_MEASURED]], notes=["run `python bench/run.py` to measure them on this machine"])
    rows = _bench_peak_rows(b.get("peak") or {})
    rows += _bench_unet_rows(b.get("unet") or {}, b.get("profiles") or {})
    rows += _bench_conv_rows(b.get("conv") or {})
    rows += _bench_e2e_rows(b.get("e2e") or {}, b.get("e2e_limits"))
    f = b.get("figures") or {}
    if "seconds" in f:
        rows.append(["regenerate all figures", f"{format_seconds(f['seconds'])} ({f.get('count', '?')} figures)"])
    mt = b.get("make_test_seconds")
    rows.append(["make test, total (last completed run)", format_seconds(mt)])
    m = b.get("machine") or {}
    load = b.get("load_average_before")
    notes = [f"measured {b.get('measured_at', '?')} on {m.get('cpu') or m.get('processor', '?')}, "
             f"{m.get('torch_threads', '?')} torch threads"
             + (f", load average {load[0]:.1f} at the start" if load else "")
             + "; timings depend on the machine and its load"]
    if b.get("quick"):
        notes.append("--quick: small sizes for development, not the benchmark")
    pk = b.get("peak") or {}
    if pk.get("method"):
        assumed = (pk.get("theoretical") or {}).get("assumption", "?")
        notes.append(f"peak: {pk['method']}; FLOP/cycle assumed: {assumed}")
    return Table("Benchmarks (bench/run.py)", ["measurement", "result"], rows, notes=notes)


# ---------------------------------------------------------------- the pytest plugin
def kernel_peak_rss(pid: int) -> int | None:
    """Peak resident set size of process ``pid`` (Linux: /proc/<pid>/status VmHWM), None where unknown."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _kernel_pid(notebook) -> int | None:
    """The pid of the kernel nbval started for ``notebook`` (its IPyNbFile), None if there is none."""
    try:
        process = notebook.kernel.km.provisioner.process
        return process.pid if process is not None else None
    except AttributeError:
        return None


def notebook_recorder(path: str | None = None):
    """A pytest plugin that records, for each notebook nbval runs, its wall time and peak memory.

    Time runs from the first cell's setup (which starts the kernel) to the last cell's teardown;
    memory is the kernel's VmHWM, read before each cell's teardown (the last one stops the kernel).
    At the end of the session the results are merged into ``notebooks.json`` (:func:`status_dir`),
    one entry per notebook, so that running one notebook updates only its own row.
    """
    import pytest

    class NotebookRecorder:
        def __init__(self):
            self.runs: dict[str, dict] = {}

        @staticmethod
        def _notebook(item):
            parent = getattr(item, "parent", None)
            if parent is not None and hasattr(parent, "kernel") and str(parent.path).endswith(".ipynb"):
                return parent
            return None

        @pytest.hookimpl(hookwrapper=True)
        def pytest_runtest_protocol(self, item, nextitem):
            nb = self._notebook(item)
            if nb is not None:
                self.runs.setdefault(nb.nodeid, {"start": time.perf_counter(), "cells": 0, "failed_cells": 0,
                                                 "peak_rss_bytes": None})
            yield
            if nb is not None:
                run = self.runs[nb.nodeid]
                run["end"] = time.perf_counter()
                run["cells"] += 1

        @pytest.hookimpl(hookwrapper=True)
        def pytest_runtest_teardown(self, item, nextitem):
            nb = self._notebook(item)
            pid = _kernel_pid(nb) if nb is not None else None
            if pid is not None:
                peak = kernel_peak_rss(pid)
                run = self.runs[nb.nodeid]
                if peak is not None:
                    run["peak_rss_bytes"] = max(peak, run["peak_rss_bytes"] or 0)
            yield

        def pytest_runtest_logreport(self, report):
            run = self.runs.get(report.nodeid.split("::")[0])
            if run is not None and report.failed:
                run["failed_cells"] += 1

        def pytest_sessionfinish(self, session):
            if not self.runs:
                return
            file = Path(path) if path is not None else status_dir() / NOTEBOOKS_FILE
            file.parent.mkdir(parents=True, exist_ok=True)
            # make test runs the notebooks in two pytest-xdist workers, each merging its own
            # rows into the one file: the lock keeps one worker from overwriting the other's.
            with open(file.with_name(f".{file.name}.lock"), "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                notebooks = (_read_file(file) or {}).get("notebooks", {})
                stamp = now_utc()
                for name, run in self.runs.items():
                    seconds = round(run.get("end", run["start"]) - run["start"], 3)
                    notebooks[name] = {"seconds": seconds, "cells": run["cells"],
                                       "peak_rss_bytes": run["peak_rss_bytes"],
                                       "failed_cells": run["failed_cells"], "measured_at": stamp}
                self.written = _write_file(file, {"notebooks": notebooks, "machine": machine()})

        def pytest_terminal_summary(self, terminalreporter):
            if getattr(self, "written", None) is not None:
                terminalreporter.write_line(f"sdanatomy: notebook times and peak memory written to {self.written}")

    return NotebookRecorder()


def main(argv=None) -> int:
    """``python -m sdanatomy.pages.status [finish-make-test]``: print the status, or record make test's end."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv == ["finish-make-test"]:
        finish_make_test()
        return 0
    if argv:
        print("usage: python -m sdanatomy.pages.status [finish-make-test]", file=sys.stderr)
        return 2
    mode, where = weights_mode()
    print(f"mode: {mode} ({where})\n")
    for table in (versions_table(), ledger_summary(), notebook_table(), bench_table()):
        print(repr(table), end="\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
