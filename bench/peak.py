"""The machine's floating-point peak, measured, beside the theoretical one (a report).

    python bench/peak.py [--quick] [--threads N]

The peak is what a compute-bound kernel reaches: ``bench/peak.c`` (independent AVX-512
FMA chains in registers, float32 ``vfmadd231ps`` and bf16 ``vdpbf16ps``), compiled with
the system's C compiler at bench time and run on every core (one thread each). Without a
compiler, or on a CPU without AVX-512 BF16, it falls back to the best of torch's large
matmuls (oneDNN for bf16), and says so. A large float32 ``torch.mm`` is *not* the peak:
on an AMD CPU it runs MKL's slower path (about a third of the FMA limit here).

The theoretical figure is cores × clock × FLOP per cycle. The clock is the one
/proc/cpuinfo reports ("cpu MHz" of the first core; under a hypervisor the nominal
clock: a boosting core exceeds it, and the report gives the clock the measurement
implies). FLOP per cycle per core comes from the core that /proc/cpuinfo's "cpu family"
and "model" name (:func:`flop_per_cycle`): two FMA pipes, each 16 float32 lanes wide
(Zen 5's server and desktop parts, Intel's AVX-512 servers: 2 × 16 × 2 (multiply, add) =
64) or 8 (Zen 4, which runs a 512-bit FMA as two 256-bit halves: 32); bf16
``vdpbf16ps`` does two products per float32 lane, twice that. For any other core the
theoretical figure is "unknown", not a guess.
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
# AMD: the model ranges of Linux's arch/x86/kernel/cpu/amd.c (X86_FEATURE_ZEN4, ZEN5)
ZEN4 = (0x19, [(0x10, 0x1F), (0x60, 0xAF)])
# Zen 5 with full 512-bit datapaths: EPYC 9005 (Turin) and Ryzen 9000 (Granite Ridge);
# the mobile Zen 5 models (0x20-0x2F, 0x60-0x7F) are left out: some of them run
# 512-bit operations as two halves
ZEN5_FULL_WIDTH = (0x1A, [(0x00, 0x1F), (0x40, 0x4F)])
# Intel (family 6): AVX-512 server cores with two 512-bit FMA units in every part
INTEL_TWO_FMA = {0x6A: "Ice Lake-SP", 0x8F: "Sapphire Rapids", 0xCF: "Emerald Rapids",
                 0xAD: "Granite Rapids"}


def _in(family, model, table) -> bool:
    fam, ranges = table
    return family == fam and any(lo <= model <= hi for lo, hi in ranges)


def flop_per_cycle(family: int | None, model: int | None, flags) -> dict | None:
    """FLOP per cycle per core of the core that ("cpu family", "model", flags) name:
    {"float32": n, "bfloat16": n (None where not known), "core": which, and why}, or
    None for a core this table does not know (the theoretical figure is then
    unknown)."""
    flags = set(flags)
    bf16 = "avx512_bf16" in flags
    if family is None or model is None:
        return None
    if _in(family, model, ZEN4):
        return {"float32": 32, "bfloat16": 64 if bf16 else None,
                "core": "Zen 4 (family 25): two FMA pipes of 8 float32 lanes (a "
                        "512-bit FMA runs as two 256-bit halves): 2 × 8 × 2 = 32 FLOP "
                        "per cycle, bf16 (vdpbf16ps, two products per lane) 64"}
    if _in(family, model, ZEN5_FULL_WIDTH) and "avx512f" in flags:
        return {"float32": 64, "bfloat16": 128 if bf16 else None,
                "core": "Zen 5 (family 26), full 512-bit datapaths: two FMA pipes of "
                        "16 float32 lanes: 2 × 16 × 2 = 64 FLOP per cycle, bf16 "
                        "(vdpbf16ps) 128"}
    if family == 6 and model in INTEL_TWO_FMA and "avx512f" in flags:
        return {"float32": 64, "bfloat16": None,
                "core": f"Intel {INTEL_TWO_FMA[model]}: two 512-bit FMA units: 2 × 16 "
                        "× 2 = 64 FLOP per cycle; bf16's rate not known here"}
    return None


def _cpuinfo() -> dict[str, str]:
    """The first core's fields of /proc/cpuinfo (empty where there is none)."""
    fields = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                break
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    return set(_cpuinfo().get("flags", "").split())


def cpu_identity() -> dict:
    """vendor, "cpu family", "model" (None where not reported) and flags."""
    info = _cpuinfo()
    number = lambda key: int(info[key]) if info.get(key, "").isdigit() else None
    return {"vendor": info.get("vendor_id"), "family": number("cpu family"),
            "model": number("model"), "flags": cpu_flags()}


CLOCK_SOURCE = ('/proc/cpuinfo\'s "cpu MHz" (under a hypervisor the nominal clock; a '
                'boosting core runs faster)')


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
    """cores × clock × FLOP per cycle, for the dtypes whose FLOP per cycle is known."""
    ghz, cpu = clock_ghz(), cpu_identity()
    table = flop_per_cycle(cpu["family"], cpu["model"], cpu["flags"])
    known = {k: v for k, v in (table or {}).items() if k != "core" and v}
    ident = f"family {cpu['family']}, model {cpu['model']}"
    out = {"cores": cores, "clock_ghz": ghz, "clock_source": CLOCK_SOURCE,
           "family": cpu["family"], "model": cpu["model"], "flop_per_cycle": known,
           "assumption": (f"{table['core']} ({ident})" if table else
                          f"unknown: no FLOP-per-cycle figure for {ident}")}
    if ghz and known:
        out["gflops"] = {k: cores * ghz * v for k, v in known.items()}
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
    th = result["theoretical"]
    for dtype, m in result["measured"].items():
        if dtype in th.get("gflops", {}):
            m["of_theoretical"] = m["gflops"] / th["gflops"][dtype]
        if dtype in th["flop_per_cycle"]:
            # the clock the measurement implies, if the kernel ran at the FMA limit
            per_cycle = th["flop_per_cycle"][dtype]
            m["implied_clock_ghz"] = m["gflops"] / (threads * per_cycle)
    return result


def report(r: dict) -> None:
    t = r["theoretical"]
    print(f"[peak] {r['method']}")
    for dtype, m in r["measured"].items():
        th = t.get("gflops", {}).get(dtype)
        theory = (f"theoretical {th:.0f} = {t['cores']} cores × {t['clock_ghz']:.2f}"
                  f" GHz × {t['flop_per_cycle'][dtype]} FLOP/cycle" if th else
                  "theoretical unknown")
        implied = (f" (implies {m['implied_clock_ghz']:.2f} GHz at that FLOP/cycle)"
                   if m.get("implied_clock_ghz") else "")
        print(f"[peak] {dtype:8}: measured {m['gflops']:7.0f} GFLOP/s; "
              f"{theory}{implied}")
    for dtype, m in r["matmul"].items():
        print(f"[peak] torch matmul {m['n']}³ {dtype}: {m['gflops']:.0f} GFLOP/s")
    print(f"[peak] FLOP/cycle: {t['assumption']}")
    print(f"[peak] clock: {t['clock_source']}")


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
