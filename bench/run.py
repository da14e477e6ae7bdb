"""The book's benchmarks, measured in one run on this machine (a report, not a test: it never fails).

    .venv/bin/python bench/run.py [--out _build/status/bench.json] [--runs 3] [--skip-unet]

Prints, and writes as JSON for the status appendix (``sdanatomy.pages.status.bench_table``):

1. the book's ``lecture.unet.unet`` against diffusers' U-Net at a 64×64 latent (bench/unet_speed.py,
   medians of ``--runs`` interleaved calls);
2. the time to regenerate every figure of the book (into a temporary folder: book/figures is
   left as it is);
3. every notebook's execution time and peak memory, and the total time of the last ``make test``
   (both recorded by ``make test``; see sdanatomy.status);
4. one U-Net forward against the machine's floating-point peak: FLOPs counted by
   ``torch.utils.flop_counter.FlopCounterMode`` on the meta device (on real CPU tensors it misses
   the flash-attention kernel of ``scaled_dot_product_attention``), the peak measured by a large
   float32 matmul, utilisation = (FLOPs / time) / peak.

Timings depend on the machine and its load: run it when the machine is otherwise idle.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

from sdanatomy import sd15
from sdanatomy.pages import diagrams, status

HERE = Path(__file__).resolve().parent
LATENT, CONTEXT, T = (1, 4, 64, 64), (1, 77, 768), 500


def _load() -> list[float] | None:
    """The 1-, 5- and 15-minute load averages: other work on the machine slows every timing here."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _guard(section: str, fn, *args, **kwargs) -> dict:
    """Run one measurement; a failure is reported in its place, never raised (benchmarks do not fail)."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - a report, whatever went wrong
        traceback.print_exc()
        print(f"[{section}] not measured: {type(e).__name__}: {e}")
        return {"skipped": f"not measured: {type(e).__name__}: {e}"}


# ---------------------------------------------------------------- 1. book vs diffusers
def unet_speed(runs: int) -> dict:
    script = HERE / "unet_speed.py"
    if not script.is_file():
        msg = "skipped: bench/unet_speed.py does not exist (yet)"
        print(f"[unet] {msg}")
        return {"skipped": msg}
    spec = importlib.util.spec_from_file_location("sdanatomy_bench_unet_speed", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    print(f"[unet] bench/unet_speed.py --runs {runs}")
    return module.main(["--runs", str(runs)])


# ---------------------------------------------------------------- 2. the figures
def figures() -> dict:
    names, start = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        for name in diagrams.FIGURES:
            diagrams.write_figure(name, out)
            names.append(name)
        if hasattr(diagrams, "write_torchview_figures"):
            names += [p.stem for p in diagrams.write_torchview_figures(out)]
    seconds = time.perf_counter() - start
    print(f"[figures] {len(names)} figures regenerated in {status.format_seconds(seconds)}")
    return {"seconds": seconds, "count": len(names), "names": names}


# ---------------------------------------------------------------- 4. FLOPs, forward, peak
def unet_flops() -> float:
    """FLOPs of one SD-1.5 U-Net forward (batch 1, 64×64), counted on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    unet = sd15.build_unet(weights="meta")
    z, c = torch.empty(LATENT, device="meta"), torch.empty(CONTEXT, device="meta")
    t = torch.full((1,), T, dtype=torch.long, device="meta")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        unet(z, t, encoder_hidden_states=c)
    return float(counter.get_total_flops())


def matmul_peak(n: int = 4096, runs: int = 5) -> tuple[float, list[float]]:
    """The machine's float32 peak in FLOP/s: the median of ``runs`` n×n @ n×n products (2n³ FLOPs each)."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    a @ b  # warm-up: threads, caches, pages
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n ** 3 / statistics.median(times), times


def diffusers_forward(runs: int) -> tuple[float, list[float]]:
    """Median time of diffusers' U-Net forward, fp32, batch 1, 64×64 (when unet_speed.py did not run)."""
    unet = sd15.build_unet(weights="random", seed=0, device="cpu", dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    z, c = torch.randn(LATENT, generator=g), torch.randn(CONTEXT, generator=g)
    t = torch.tensor([T])
    times = []
    with torch.inference_mode():
        unet(z, t, encoder_hidden_states=c)  # warm-up
        for _ in range(runs):
            start = time.perf_counter()
            unet(z, t, encoder_hidden_states=c)
            times.append(time.perf_counter() - start)
    return statistics.median(times), times


def flops(unet_result: dict, runs: int, matmul_n: int) -> dict:
    total = unet_flops()
    print(f"[flops] one U-Net forward: {total / 1e9:.1f} GFLOP (FlopCounterMode, meta device)")
    peak, mm_times = matmul_peak(matmul_n, runs=max(runs, 5))
    print(f"[flops] float32 matmul {matmul_n}³: {peak / 1e9:.0f} GFLOP/s (median of {len(mm_times)})")
    if "diffusers_median_s" in unet_result:
        forward, source = unet_result["diffusers_median_s"], "bench/unet_speed.py (diffusers)"
    else:
        forward, _ = diffusers_forward(runs)
        source = f"diffusers forward, median of {runs}"
    achieved = total / forward
    result = {"gflop_per_forward": total / 1e9, "forward_seconds": forward, "forward_source": source,
              "achieved_gflops": achieved / 1e9, "peak_gflops": peak / 1e9, "utilisation": achieved / peak,
              "matmul_n": matmul_n, "matmul_runs": len(mm_times), "matmul_times_s": mm_times}
    if "book_median_s" in unet_result:
        result["book_utilisation"] = total / unet_result["book_median_s"] / peak
    print(f"[flops] U-Net forward {forward:.2f} s = {achieved / 1e9:.0f} GFLOP/s = "
          f"{100 * result['utilisation']:.0f} % of the matmul peak")
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="JSON output (default: _build/status/bench.json)")
    parser.add_argument("--runs", type=int, default=3, help="timed U-Net calls (median; default 3)")
    parser.add_argument("--matmul", type=int, default=4096, help="matmul size n for the peak (default 4096)")
    parser.add_argument("--skip-unet", action="store_true", help="skip the U-Net timings (the slow part)")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    result = {"measured_at": status.now_utc(), "machine": status.machine(), "versions": status.versions(),
              "load_average_before": _load()}
    if args.skip_unet:
        result["unet_speed"] = {"skipped": "skipped (--skip-unet)"}
    else:
        result["unet_speed"] = _guard("unet", unet_speed, args.runs)
    result["figures"] = _guard("figures", figures)
    result["notebooks"] = (status.read(status.NOTEBOOKS_FILE) or {}).get("notebooks", {})
    result["make_test_seconds"] = status.make_test_seconds()
    if args.skip_unet:
        result["flops"] = {"skipped": "skipped (--skip-unet)"}
    else:
        result["flops"] = _guard("flops", flops, result["unet_speed"], args.runs, args.matmul)
    result["bench_seconds"] = time.perf_counter() - start
    result["load_average_after"] = _load()

    out = status._write_file(Path(args.out), result) if args.out else status.write(status.BENCH_FILE, result)
    print()
    print(repr(status.notebook_table()))
    print()
    print(repr(status.bench_table(result)))
    print(f"\nbench/run.py took {status.format_seconds(result['bench_seconds'])}; results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
