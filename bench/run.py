"""The book's benchmarks, measured in one run on this machine (a report: never fails).

    .venv/bin/python bench/run.py [--quick] [--out _build/status/bench.json] [--runs 3]
                                  [--skip-unet] [--skip-e2e] [--skip-figures]
                                  [--e2e-compile]

Prints, and writes as JSON for the status appendix (``pages.status.bench_table``):

1. ``peak``: the machine's floating-point peak in float32 and bf16, measured by an
   AVX-512 FMA kernel compiled at bench time (bench/peak.py; a matmul fallback without a
   compiler), beside cores × clock × FLOP per cycle. A float32 ``torch.mm`` is not the
   peak (MKL's slower path on AMD): it is reported beside it, never divided by.
2. ``unet``: one U-Net forward at a 64×64 latent (batch 1, t = 500, context 1×77×768):
   diffusers' module and the book's ``lecture.unet.unet`` on the same Θ, each in float32
   and in bf16 with channels_last (medians of ``--runs`` interleaved calls); FLOPs
   counted by ``FlopCounterMode`` on the meta device; utilisation = (FLOPs / time) / the
   measured peak of the same dtype.
3. ``profiles``: where one forward's time goes (torch.profiler, self CPU time of each
   op, grouped into conv, linear/matmul, attention, norm, other), for the four forwards;
   ``conv``: the largest convolution alone, float32 and bf16, against each peak.
4. ``e2e``: 20 steps at 512² with guidance 7.5, DDIM, architecture-only weights:
   diffusers' ``StableDiffusionPipeline`` in float32 (as it runs by default) against the
   book's CPU path (``text_to_image(precision="auto")``), one subprocess each
   (bench/e2e.py) for its own peak memory; the ratio, against the goal of 2.5×; with
   ``--e2e-compile`` also the book's path with ``torch.compile``.
5. ``figures``: the time to regenerate every figure (into a temporary folder).
6. every notebook's time and peak memory and the last ``make test``'s total (recorded
   by ``make test``; see sdanatomy.pages.status).

``--quick`` (development and tests): short peak runs, a 16×16 latent, 2 steps at 64², no
figures; its numbers are not the benchmark. Timings depend on the machine and its load:
run the full bench when the machine is otherwise idle.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

from sdanatomy import sd15
from sdanatomy.lecture import unet as lecture_unet
from sdanatomy.pages import diagrams, status

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import peak as peak_mod  # noqa: E402  (bench/peak.py, beside this file)

T, CONTEXT = 500, (1, 77, 768)
GOAL = 2.5
GROUPS = ("conv", "linear/matmul", "attention", "norm", "other")


def _load() -> list[float] | None:
    """The 1-, 5- and 15-minute load averages: other work slows every timing here."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _guard(section: str, fn, *args, **kwargs) -> dict:
    """Run one measurement; a failure is reported in its place, never raised."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - a report, whatever went wrong
        traceback.print_exc()
        print(f"[{section}] not measured: {type(e).__name__}: {e}")
        return {"skipped": f"not measured: {type(e).__name__}: {e}"}


# ---------------------------------------------------------------- 1. the peak
def peak(quick: bool) -> dict:
    r = peak_mod.measure(threads=torch.get_num_threads(), quick=quick)
    peak_mod.report(r)
    return r


# ---------------------------------------------------------------- 2. U-Net forwards
def unet_flops(latent: int) -> float:
    """FLOPs of one SD-1.5 U-Net forward (batch 1, latent×latent), counted on the meta
    device (on real CPU tensors FlopCounterMode misses SDPA's flash attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    unet = sd15.build_unet(weights="meta")
    z = torch.empty(1, 4, latent, latent, device="meta")
    c = torch.empty(CONTEXT, device="meta")
    t = torch.full((1,), T, dtype=torch.long, device="meta")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        unet(z, t, encoder_hidden_states=c)
    return float(counter.get_total_flops())


def forwards(latent: int) -> dict:
    """The four forwards of section 2 as closures: diffusers and the book, float32 and
    bf16 (channels_last), on one seeded Θ (the bf16 module is a copy)."""
    unet = sd15.build_unet(weights="random", seed=0, device="cpu", dtype=torch.float32)
    unet.eval()
    unet_bf16 = torch.nn.Module.to(copy.deepcopy(unet), torch.bfloat16)   # no warning
    unet_bf16.to(memory_format=torch.channels_last)
    theta, theta_bf16 = dict(unet.state_dict()), dict(unet_bf16.state_dict())
    config = dict(unet.config)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1, 4, latent, latent, generator=g)                   # (1, 4, h, w)
    c = torch.randn(CONTEXT, generator=g)                                # (1, M, d_ctx)
    z_bf16 = z.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    c_bf16, t = c.to(torch.bfloat16), torch.tensor([T])
    return {
        "diffusers float32": lambda: unet(z, t, encoder_hidden_states=c).sample,
        "diffusers bf16": lambda: unet_bf16(z_bf16, t,
                                            encoder_hidden_states=c_bf16).sample,
        "book float32": lambda: lecture_unet.unet(theta, z, t, c, config=config),
        "book bf16": lambda: lecture_unet.unet(theta_bf16, z_bf16, t, c_bf16,
                                               config=config),
    }


def group_of(op: str) -> str:
    """The group of a profiler op: conv, linear/matmul, attention, norm or other."""
    name = op.lower()
    if "conv" in name:
        return "conv"
    if "attention" in name or "softmax" in name:
        return "attention"
    if "norm" in name:
        return "norm"
    if any(k in name for k in ("addmm", "matmul", "linear", "aten::mm", "bmm")):
        return "linear/matmul"
    return "other"


def group_profile(events) -> dict:
    """Self CPU seconds per group (each op's own time, without its children's: nothing
    is counted twice) from ``profiler.key_averages()``, and each group's share."""
    seconds = dict.fromkeys(GROUPS, 0.0)
    for e in events:
        seconds[group_of(e.key)] += e.self_cpu_time_total / 1e6
    total = sum(seconds.values())
    return {"seconds": seconds, "total_seconds": total,
            "share": {k: (v / total if total else 0.0) for k, v in seconds.items()}}


def profile(fn) -> dict:
    from torch.profiler import ProfilerActivity, profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return group_profile(prof.key_averages())


def unet(runs: int, latent: int, peaks: dict) -> tuple[dict, dict]:
    """Sections 2 and 3: medians, utilisation against the measured peak, profiles."""
    fns = forwards(latent)
    times = {name: [] for name in fns}
    with torch.inference_mode():
        outputs = {name: fn().float() for name, fn in fns.items()}          # warm-up
        for _ in range(runs):
            for name, fn in fns.items():                                  # interleaved
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        profiles = {name: profile(fn) for name, fn in fns.items()}
    flops = unet_flops(latent)
    result = {"latent": latent, "runs": runs, "gflop_per_forward": flops / 1e9,
              "inputs": f"batch 1, 4×{latent}×{latent}, t = {T}, context 1×77×768",
              "threads": torch.get_num_threads(), "forwards": {}}
    for name, ts in times.items():
        dtype = "bfloat16" if name.endswith("bf16") else "float32"
        med = statistics.median(ts)
        row = {"median_s": med, "times_s": ts, "achieved_gflops": flops / med / 1e9}
        p = (peaks.get("measured") or {}).get(dtype, {}).get("gflops")
        if p:
            row.update(peak_gflops=p, utilisation=flops / med / 1e9 / p)
        result["forwards"][name] = row
        use = (f" = {100 * row['utilisation']:3.0f} % of the measured {dtype} peak"
               if p else "")
        print(f"[unet] {name:17}: median {med:6.2f} s, "
              f"{row['achieved_gflops']:5.0f} GFLOP/s{use}")
    ref = outputs["diffusers float32"]
    gap = lambda name: (outputs[name] - ref).abs().max().item()
    result["max_abs_difference_book_float32"] = gap("book float32")
    result["max_abs_difference_bf16"] = gap("diffusers bf16")
    f = result["forwards"]
    ratio = f["book float32"]["median_s"] / f["diffusers float32"]["median_s"]
    result["ratio_book_over_diffusers"] = ratio
    print(f"[unet] book / diffusers (float32): {ratio:.2f}; max|book − diffusers| "
          f"{result['max_abs_difference_book_float32']:.1e}, max|bf16 − float32| "
          f"{result['max_abs_difference_bf16']:.1e}")
    for name, p in profiles.items():
        shares = ", ".join(f"{g} {100 * p['share'][g]:.0f} %" for g in GROUPS)
        print(f"[profile] {name:17}: {shares} of {p['total_seconds']:.2f} s")
    return result, profiles


def conv_ceiling(peaks: dict, runs: int, size: int) -> dict:
    """The U-Net's largest convolution alone (3×3, 320 -> 320 channels, batch 2 as with
    guidance, size×size): float32 as diffusers runs it (NCHW) and bf16 channels_last,
    each against its dtype's measured peak. If both reach their peaks, bf16 cannot be
    faster than the ratio of the peaks on the convolutions."""
    g = torch.Generator().manual_seed(0)
    conv = torch.nn.Conv2d(320, 320, 3, padding=1).eval()
    x = torch.randn(2, 320, size, size, generator=g)
    conv_bf16 = torch.nn.Module.to(copy.deepcopy(conv), torch.bfloat16)
    conv_bf16.to(memory_format=torch.channels_last)
    x_bf16 = x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    flops = 2 * 2 * 320 * 320 * 9 * size * size                # 2 per multiply-add
    result = {"shape": f"2×320×{size}×{size}, 3×3, 320 out", "gflop": flops / 1e9}
    with torch.inference_mode():
        for dtype, fn in (("float32", lambda: conv(x)),
                          ("bfloat16", lambda: conv_bf16(x_bf16))):
            fn()                                                               # warm-up
            times = []
            for _ in range(max(runs, 3)):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
            best = min(times)
            r = {"best_s": best, "gflops": flops / best / 1e9}
            p = (peaks.get("measured") or {}).get(dtype, {}).get("gflops")
            if p:
                r["of_peak"] = r["gflops"] / p
            result[dtype] = r
            share = f" = {100 * r['of_peak']:.0f} % of the measured peak" if p else ""
            print(f"[conv] {result['shape']}, {dtype}: {r['gflops']:.0f} GFLOP/s"
                  + share)
    m = peaks.get("measured") or {}
    if "float32" in m and "bfloat16" in m:
        ratio = m["bfloat16"]["gflops"] / m["float32"]["gflops"]
        result["peak_ratio_bf16_over_float32"] = ratio
    return result


# ---------------------------------------------------------------- 4. end to end
def e2e(size: int, steps: int, guidance: float = 7.5, compile: bool = False) -> dict:
    """One subprocess per path (bench/e2e.py): its time and its own peak memory; with
    ``compile`` a third run, the book's path with ``torch.compile`` (compilation
    included)."""
    result = {"size": size, "steps": steps, "guidance": guidance, "scheduler": "ddim",
              "goal_ratio": GOAL}
    runs = [("diffusers", "diffusers", []), ("book", "book", [])]
    if compile:
        runs.append(("book_compiled", "book", ["--compile"]))
    with tempfile.TemporaryDirectory() as folder:
        for key, path, extra in runs:
            out = Path(folder) / f"{key}.json"
            cmd = [sys.executable, str(HERE / "e2e.py"), path, "--size", str(size),
                   "--steps", str(steps), "--guidance", str(guidance),
                   "--json", str(out)] + extra
            done = subprocess.run(cmd, capture_output=True, text=True)
            print(done.stdout.strip())
            if done.returncode:
                result[key] = {"skipped": f"bench/e2e.py {path} failed: "
                                          f"{done.stderr[-2000:]}"}
                print(result[key]["skipped"])
                continue
            result[key] = json.loads(out.read_text())
    seconds = {k: v["seconds"] for k, v in result.items()
               if isinstance(v, dict) and "seconds" in v}
    if "diffusers" in seconds and "book" in seconds:
        result["ratio"] = seconds["diffusers"] / seconds["book"]
        result["goal_met"] = result["ratio"] >= GOAL
        print(f"[e2e] diffusers float32 / the book's CPU path: {result['ratio']:.2f}× "
              f"(goal {GOAL}×: {'met' if result['goal_met'] else 'not met'})")
    if "diffusers" in seconds and "book_compiled" in seconds:
        result["ratio_compiled"] = seconds["diffusers"] / seconds["book_compiled"]
        print(f"[e2e] diffusers float32 / the book's path with torch.compile: "
              f"{result['ratio_compiled']:.2f}×")
    return result


def limits(result: dict) -> dict | None:
    """Where the e2e ratio falls short of the goal: the bf16 U-Net forward's profile."""
    e, profiles = result.get("e2e") or {}, result.get("profiles") or {}
    p = profiles.get("diffusers bf16") or profiles.get("book bf16")
    if "ratio" not in e or e["ratio"] >= GOAL or not p or "seconds" not in p:
        return None
    top = max(GROUPS, key=lambda g: p["seconds"][g])
    note = (f"the ratio {e['ratio']:.2f}× is short of {GOAL}×; in the bf16 U-Net "
            f"forward the largest share of time is {top} "
            f"({100 * p['share'][top]:.0f} %)")
    c = result.get("conv") or {}
    if "peak_ratio_bf16_over_float32" in c and "of_peak" in c.get("bfloat16", {}):
        f32 = c["float32"].get("of_peak", float("nan"))
        note += (f"; the largest convolution runs at {100 * f32:.0f} % of the float32 "
                 f"peak and {100 * c['bfloat16']['of_peak']:.0f} % of the bf16 peak, "
                 f"and the bf16 peak is {c['peak_ratio_bf16_over_float32']:.2f}× the "
                 "float32 one: on compute-bound convolutions bf16 gains at most that")
    return {"largest_group": top, "share": p["share"][top], "profile": "diffusers bf16",
            "note": note}


# ---------------------------------------------------------------- 5. the figures
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="small sizes, few steps (development; not the benchmark)")
    parser.add_argument("--out", default=None,
                        help="JSON output (default: _build/status/bench.json)")
    parser.add_argument("--runs", type=int, default=None,
                        help="timed U-Net calls (median; default 3, quick 1)")
    parser.add_argument("--skip-unet", action="store_true", help="skip sections 2, 3")
    parser.add_argument("--skip-e2e", action="store_true", help="skip section 4")
    parser.add_argument("--skip-figures", action="store_true", help="skip section 5")
    parser.add_argument("--e2e-compile", action="store_true",
                        help="section 4 also with torch.compile (minutes more)")
    args = parser.parse_args(argv)
    runs = args.runs or (1 if args.quick else 3)
    latent, size, steps = (16, 64, 2) if args.quick else (64, 512, 20)

    start = time.perf_counter()
    result = {"measured_at": status.now_utc(), "machine": status.machine(),
              "versions": status.versions(), "quick": args.quick,
              "load_average_before": _load()}
    result["peak"] = _guard("peak", peak, args.quick)
    if args.skip_unet:
        result["unet"] = result["profiles"] = {"skipped": "skipped (--skip-unet)"}
    else:
        got = _guard("unet", unet, runs, latent, result["peak"])
        result["unet"], result["profiles"] = (got if isinstance(got, tuple)
                                              else (got, got))
    result["conv"] = _guard("conv", conv_ceiling, result["peak"], runs, latent)
    result["e2e"] = ({"skipped": "skipped (--skip-e2e)"} if args.skip_e2e
                     else _guard("e2e", e2e, size, steps, compile=args.e2e_compile))
    result["e2e_limits"] = limits(result)
    if args.skip_figures or args.quick:
        result["figures"] = {"skipped": "skipped (--quick or --skip-figures)"}
    else:
        result["figures"] = _guard("figures", figures)
    result["notebooks"] = (status.read(status.NOTEBOOKS_FILE) or {}).get("notebooks", {})
    result["make_test_seconds"] = status.make_test_seconds()
    result["bench_seconds"] = time.perf_counter() - start
    result["load_average_after"] = _load()

    out = (status._write_file(Path(args.out), result) if args.out
           else status.write(status.BENCH_FILE, result))
    print()
    print(repr(status.bench_table(result)))
    print(f"\nbench/run.py took {status.format_seconds(result['bench_seconds'])}; "
          f"results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
