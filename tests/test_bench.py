"""bench/ (#18): the pieces of bench/run.py and bench/peak.py, and bench/gpu.py's CPU
dry run. Benchmarks report, they never fail: no test here asserts a time."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from sdanatomy.pages import status

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _module(name):
    spec = importlib.util.spec_from_file_location(f"sdanatomy_bench_{name}",
                                                  BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def run():
    return _module("run")


@pytest.fixture(scope="module")
def peak():
    return _module("peak")


# ---------------------------------------------------------------- the profiler's groups
@pytest.mark.parametrize("op, group", [
    ("aten::mkldnn_convolution", "conv"), ("aten::convolution", "conv"),
    ("aten::addmm", "linear/matmul"), ("aten::mm", "linear/matmul"),
    ("aten::bmm", "linear/matmul"),
    ("aten::_scaled_dot_product_flash_attention_for_cpu", "attention"),
    ("aten::_softmax", "attention"), ("aten::native_group_norm", "norm"),
    ("aten::native_layer_norm", "norm"), ("aten::silu", "other"),
    ("aten::add", "other"),
])
def test_profiler_groups(run, op, group):
    assert run.group_of(op) == group


def test_group_profile_sums_self_times(run):
    events = [SimpleNamespace(key="aten::mkldnn_convolution", self_cpu_time_total=3e6),
              SimpleNamespace(key="aten::addmm", self_cpu_time_total=1e6),
              SimpleNamespace(key="aten::conv2d", self_cpu_time_total=0.0),
              SimpleNamespace(key="aten::add", self_cpu_time_total=1e6)]
    p = run.group_profile(events)
    assert p["total_seconds"] == pytest.approx(5.0)
    assert p["seconds"]["conv"] == pytest.approx(3.0)
    assert p["share"]["conv"] == pytest.approx(0.6)
    assert p["share"]["attention"] == 0.0 and set(p["seconds"]) == set(run.GROUPS)


def test_limits_only_when_the_goal_is_missed(run):
    prof = {"seconds": dict.fromkeys(run.GROUPS, 1.0) | {"conv": 5.0}}
    prof["share"] = {k: v / 9 for k, v in prof["seconds"].items()}
    result = {"e2e": {"ratio": 2.0},
              "profiles": {"book bf16": prof, "diffusers bf16": prof}}
    assert run.limits(result)["largest_group"] == "conv"
    assert run.limits({**result, "e2e": {"ratio": 2.6}}) is None
    assert run.limits({"e2e": {"skipped": "x"}}) is None


# ---------------------------------------------------------------- the peak
ZEN4_FLAGS = {"fma", "avx2", "avx512f", "avx512_bf16"}


@pytest.mark.parametrize("family, model, flags, float32, bf16", [
    (25, 0x11, ZEN4_FLAGS, 32, 64),             # EPYC 9004 (Genoa), this book's machine
    (25, 0x61, ZEN4_FLAGS - {"avx512_bf16"}, 32, None),    # Raphael, bf16 hidden
    (26, 0x02, ZEN4_FLAGS, 64, 128),            # EPYC 9005 (Turin): full 512-bit
    (26, 0x44, ZEN4_FLAGS, 64, 128),            # Ryzen 9000 (Granite Ridge)
    (6, 0x8F, {"avx512f", "avx512_bf16", "amx_bf16"}, 64, None),   # Sapphire Rapids
])
def test_flop_per_cycle_known_cores(peak, family, model, flags, float32, bf16):
    # two FMA pipes × float32 lanes per pipe (8 on Zen 4's halves, 16 on full
    # 512-bit datapaths) × 2 (multiply, add); vdpbf16ps: two products per lane
    t = peak.flop_per_cycle(family, model, flags)
    assert (t["float32"], t["bfloat16"]) == (float32, bf16) and t["core"]


@pytest.mark.parametrize("family, model, flags", [
    (25, 0x01, {"fma", "avx2"}),                # Zen 3 (Milan): not in the table
    (26, 0x24, ZEN4_FLAGS),                     # mobile Zen 5 (Strix Point)
    (26, 0x02, {"fma", "avx2"}),                # Zen 5 with AVX-512 hidden
    (6, 0x55, {"avx512f"}),                     # Skylake-SP: one or two FMA units
    (None, None, set()),                        # no /proc/cpuinfo
])
def test_flop_per_cycle_unknown_cores(peak, family, model, flags):
    assert peak.flop_per_cycle(family, model, flags) is None


def test_theoretical_peak_is_cores_clock_flop_per_cycle(peak, monkeypatch):
    monkeypatch.setattr(peak, "clock_ghz", lambda: 2.5)
    monkeypatch.setattr(peak, "cpu_identity", lambda: dict(
        vendor="AuthenticAMD", family=25, model=0x11, flags=ZEN4_FLAGS))
    t = peak.theoretical(2)
    assert t["gflops"] == {"float32": 2 * 2.5 * 32, "bfloat16": 2 * 2.5 * 64}
    assert t["assumption"].startswith("Zen 4")
    assert "family 25, model 17" in t["assumption"]


def test_theoretical_peak_of_an_unknown_core(peak, monkeypatch):
    monkeypatch.setattr(peak, "clock_ghz", lambda: 2.5)
    monkeypatch.setattr(peak, "cpu_identity", lambda: dict(
        vendor="?", family=99, model=1, flags=set()))
    t = peak.theoretical(2)
    assert "gflops" not in t and t["flop_per_cycle"] == {}
    assert t["assumption"].startswith("unknown")


def test_quick_peak_measures_both_dtypes(peak):
    r = peak.measure(threads=1, quick=True)
    assert set(r["measured"]) == {"float32", "bfloat16"}
    assert all(m["gflops"] > 0 for m in r["measured"].values())
    assert r["method"].startswith("bench/peak.c") or r["method"].startswith("fallback")


def test_bench_table_shows_the_measured_peak_not_the_matmul(peak):
    pk = peak.measure(threads=1, quick=True)
    text = repr(status.bench_table({"peak": pk, "make_test_seconds": 1.0}))
    assert "float32 peak (measured)" in text and "bfloat16 peak (measured)" in text
    assert "(not the peak)" in text


# ---------------------------------------------------------------- the GPU check, dry
def test_gpu_dry_run(tmp_path):
    out = tmp_path / "gpu.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, str(BENCH / "gpu.py"), "--dry-run", "--json", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["dry_run"] and r["device"] == "cpu" and r["installed_from_wheels"] == []
    for dtype in ("float32", "bfloat16"):
        assert r["ledger"][dtype]["ran"] == r["ledger"][dtype]["ok"] > 0
    # same weights, same bf16 inputs: the book's U-Net and diffusers' agree to bf16's
    # rounding of the output (2⁻⁸ relative to its largest value, so atol = 2⁻⁸·max|ε̂|;
    # rtol 0: one scale for the whole map)
    u = r["unet"]
    assert u["book_vs_diffusers"] <= 2 ** -8 * u["max_abs_ref"]
    g = r["text_to_image"]
    assert {"diffusers_seconds", "book_seconds", "ratio_book_over_diffusers"} <= set(g)
    assert g["max_abs_pixel_book_vs_diffusers"] <= 2 ** -8           # pixels in [0, 1]


def test_bench_table_says_when_the_cores_boost_above_the_reported_clock():
    th = {"cores": 2, "clock_ghz": 2.6, "flop_per_cycle": {"float32": 64},
          "gflops": {"float32": 2 * 2.6 * 64}, "assumption": "two FMA pipes"}
    pk = {"measured": {"float32": {"gflops": 520.0, "implied_clock_ghz": 520 / 128}},
          "theoretical": th, "method": "kernel"}
    text = repr(status.bench_table({"peak": pk}))
    assert "theoretical 333 = 2 cores × 2.60 GHz × 64 FLOP/cycle" in text
    assert "implies 4.06 GHz" in text


def test_conv_ceiling_at_a_tiny_size(run):
    peaks = {"measured": {"float32": {"gflops": 100.0}, "bfloat16": {"gflops": 200.0}}}
    c = run.conv_ceiling(peaks, 1, 4)
    assert c["gflop"] == pytest.approx(2 * 2 * 320 * 320 * 9 * 16 / 1e9)
    assert c["peak_ratio_bf16_over_float32"] == 2.0
    for dtype in ("float32", "bfloat16"):
        peak = peaks["measured"][dtype]["gflops"]
        assert c[dtype]["of_peak"] == pytest.approx(c[dtype]["gflops"] / peak)
    text = repr(status.bench_table({"conv": c}))
    assert "largest convolution (2×320×4×4, 3×3, 320 out), bfloat16" in text
