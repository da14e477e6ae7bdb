"""The machine's floating-point peak, measured, beside the theoretical one (a report).

    python bench/peak.py [--quick] [--threads N]

The peak is what a compute-bound kernel reaches: ``bench/peak.c`` (independent AVX-512
FMA chains in registers, float32 ``vfmadd231ps`` and bf16 ``vdpbf16ps``), compiled with
the system's C compiler at bench time and run on every core (one thread each). Without a
compiler, or on a CPU without AVX-512 BF16, it falls back to the best of torch's large
matmuls (oneDNN for bf16), and says so. A large float32 ``torch.mm`` is *not* the peak:
on an AMD CPU it runs MKL's slower path (about a third of the FMA limit here).

The theoretical figure is cores × clock × FLOP per cycle. The clock is the one
/proc/cpuinfo reports (under a hypervisor the nominal one: a boosting core exceeds it).
FLOP per cycle per core assumes Zen 5's two 512-bit FMA pipes: float32 2 × 16 lanes × 2
(multiply, add) = 64; bf16 ``vdpbf16ps`` does two products per float32 lane, 128.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "peak.c"
FLOP_PER_CYCLE = {"float32": 64, "bfloat16": 128}   # per core: two 512-bit FMA pipes
ASSUMPTION = ("two 512-bit FMA pipes per core (Zen 5): float32 2 × 16 lanes × 2 = 64 "
              "FLOP per cycle, bf16 (vdpbf16ps, two products per lane) 128")


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def clock_ghz() -> float | None:
    """The clock /proc/cpuinfo reports ("cpu MHz" of the first core), in GHz."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return float(line.split(":", 1)[1]) / 1000
    except (OSError, ValueError):
        pass
    return None


def theoretical(cores: int) -> dict:
    ghz = clock_ghz()
    out = {"cores": cores, "clock_ghz": ghz, "flop_per_cycle": FLOP_PER_CYCLE,
           "assumption": ASSUMPTION}
    if ghz:
        out["gflops"] = {k: cores * ghz * v for k, v in FLOP_PER_CYCLE.items()}
    return out


def compile_kernel(folder: str) -> Path | None:
    """bench/peak.c compiled with cc (or gcc) into ``folder``; None without one."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    exe = Path(folder) / "peak"
    cmd = [cc, "-O2", "-mavx512f", "-mavx512bf16", "-pthread", str(SOURCE),
           "-o", str(exe)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        print(f"[peak] {' '.join(cmd)} failed:\n{done.stderr.strip()}")
        return None
    return exe


def _kernel_run(exe: Path, kind: str, threads: int, iters: int) -> float:
    line = subprocess.run([str(exe), kind, str(threads), str(iters)],
                          capture_output=True, text=True, check=True).stdout.split()
    return float(line[3]) * 1e9


def kernel_peak(exe: Path, threads: int, seconds: float, repeats: int) -> dict:
    """GFLOP/s of the FMA kernel, float32 and bf16: the best of ``repeats`` runs of
    about ``seconds`` each (the best, not the median: the peak is what it *can* do)."""
    out = {}
    for dtype, kind in (("float32", "f32"), ("bfloat16", "bf16")):
        flop_per_iter = threads * 24 * 16 * 2 * (2 if kind == "bf16" else 1)
        # calibrate on a run long enough to time: a run of a millisecond or less can
        # read as near zero seconds (an absurd rate, then billions of iterations)
        probe_iters = 100_000
        while True:
            probe = _kernel_run(exe, kind, threads, probe_iters)
            if flop_per_iter * probe_iters / probe >= 0.05 or probe_iters >= 10**10:
                break
            probe_iters *= 10
        iters = max(10_000, int(seconds * probe / flop_per_iter))
        runs = [_kernel_run(exe, kind, threads, iters) for _ in range(repeats)]
        out[dtype] = {"gflops": max(runs) / 1e9, "runs_gflops": [r / 1e9 for r in runs],
                      "iterations": iters}
    return out


def matmul_peak(n: int, repeats: int) -> dict:
    """GFLOP/s of n×n @ n×n through torch (oneDNN for bf16, MKL for float32): the best
    of ``repeats``."""
    out = {}
    for dtype in (torch.float32, torch.bfloat16):
        g = torch.Generator().manual_seed(0)
        a = torch.randn(n, n, generator=g).to(dtype)
        b = torch.randn(n, n, generator=g).to(dtype)
        a @ b                                                             # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - start)
        name = str(dtype).removeprefix("torch.")
        out[name] = {"gflops": 2 * n ** 3 / min(times) / 1e9, "n": n,
                     "median_gflops": 2 * n ** 3 / statistics.median(times) / 1e9}
    return out


def measure(*, threads: int | None = None, quick: bool = False) -> dict:
    """The measured peak (kernel, or matmul fallback), torch's matmuls, the theory."""
    threads = threads or os.cpu_count() or 1
    result = {"threads": threads, "theoretical": theoretical(threads)}
    flags = cpu_flags()
    with tempfile.TemporaryDirectory() as folder:
        exe = compile_kernel(folder) if {"avx512f", "avx512_bf16"} <= flags else None
        if exe is not None:
            result["method"] = ("bench/peak.c: AVX-512 FMA chains in registers (cc, "
                                "one thread per core)")
            result["measured"] = kernel_peak(exe, threads, 0.05 if quick else 1.0,
                                             2 if quick else 5)
    n = 512 if quick else 4096
    result["matmul"] = matmul_peak(n, 2 if quick else 5)
    if "measured" not in result:
        result["method"] = (f"fallback: the best of torch's {n}³ matmuls (no C "
                            "compiler or no AVX-512 BF16: the FMA kernel did not run)")
        result["measured"] = {k: {"gflops": v["gflops"]}
                              for k, v in result["matmul"].items()}
    th = result["theoretical"].get("gflops", {})
    for dtype, m in result["measured"].items():
        if dtype in th:
            m["of_theoretical"] = m["gflops"] / th[dtype]
            # the clock the measurement implies, if the kernel ran at the FMA limit
            m["implied_clock_ghz"] = m["gflops"] / (threads * FLOP_PER_CYCLE[dtype])
    return result


def report(r: dict) -> None:
    t = r["theoretical"]
    print(f"[peak] {r['method']}")
    for dtype, m in r["measured"].items():
        th = t.get("gflops", {}).get(dtype)
        print(f"[peak] {dtype:8}: measured {m['gflops']:7.0f} GFLOP/s"
              + (f"; theoretical {th:.0f} = {t['cores']} cores × "
                 f"{t['clock_ghz']:.2f} GHz × {FLOP_PER_CYCLE[dtype]} FLOP/cycle"
                 if th else ""))
    for dtype, m in r["matmul"].items():
        print(f"[peak] torch matmul {m['n']}³ {dtype}: {m['gflops']:.0f} GFLOP/s")
    print(f"[peak] FLOP/cycle assumption: {t['assumption']}")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs (development)")
    parser.add_argument("--threads", type=int, default=None, help="default: every core")
    args = parser.parse_args(argv)
    r = measure(threads=args.threads, quick=args.quick)
    report(r)
    return r


if __name__ == "__main__":
    main()
    sys.exit(0)
