"""Ledger rows of lecture §7: (79)–(83) and Theorem 7.1 against measured receptive fields.

Imported by :mod:`sdanatomy.ledger`.
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import torch
from torch import nn

from sdanatomy.ledger.registry import Route, row
from sdanatomy.lecture.receptive import (R_pure, pure_layers_needed, R_unet, R_unet_uniform, unet_condition, unet_levels_needed,
    unet_levels_to_reach, R_encoder, single_thread, pure_cnn, toy_encoder, measure_receptive_field,
    dependency_matrix, smallest_reaching_L, encoder_field_1d, interval)
from sdanatomy.sd15.receptive import (build_sd15_slim, sd15_level_counts, measure_sd15)


# ================================================================ ledger rows, §7

EXACT = "pixel counts and level counts are integers: exact"
# Per-level conv counts of the toy down paths: several L, uneven and even counts.
TOY_COUNTS = ((1,), (1, 1), (2, 1, 3), (1, 1, 1, 1), (3, 2, 1, 2), (2, 2, 2, 2, 2))
_K_DOWN = {"nearest": 1, "average": 2, "conv": 3}


@single_thread()
def measure_encoder_R(n: Sequence[int], *, downsample: str = "nearest", seed: int = 0, dtype=torch.float64) -> int:
    """Measured R of a :func:`toy_encoder`'s central output pixel, on a strip wide enough not to clip."""
    L = len(n) - 1
    R = R_encoder(n, k_down=3)                   # the widest of the three: the strip must hold it
    width = 2 ** L * (-(-R // 2 ** L) + 2)
    net = toy_encoder(n, downsample=downsample, seed=seed, dtype=dtype)
    return measure_receptive_field(net, (2, 2 ** L if downsample == "average" else 1, width),
                                   probes=1, seed=seed, dtype=dtype).size[1]


@functools.lru_cache(maxsize=2)
def _slim(seed, dtype) -> nn.Module:
    return build_sd15_slim(seed=seed, dtype=dtype)


def _sd15_down_R(seed, dtype) -> int:
    unet = _slim(seed, dtype)
    (field,), _ = measure_sd15(unet, (4, 8, 256), [(0, 16)], attention=False, groupnorm="frozen",
                               seed=seed, path="down")
    return field.size[1]


@row("(79) pure-CNN receptive field", section="7.1", formula=r"R_{\mathrm{pure}}(L) = 1 + (k-1)L = 1 + 2L",
            reference="autograd dependency mask of L × [nn.Conv2d(3, stride 1, padding 1), SiLU], L = 1…16",
            tol=0, why_tol=EXACT, error="max |R_pure − R_measured| (pixels)")
@single_thread()
def _row_R_pure(seed=0, dtype=torch.float64):
    err = 0
    for L in range(1, 17):
        field = measure_receptive_field(pure_cnn(L, seed=seed, dtype=dtype), (2, 1, 64), probes=1,
                                        seed=seed, dtype=dtype)
        err = max(err, abs(R_pure(L) - field.size[1]))
    return float(err)


@row("(80) full-width condition, pure CNN", section="7.1", formula=r"L \ge \frac{W-1}{2}",
            reference="brute force: smallest L for which some output column of the measured Conv2d stack "
                      "depends on all W input columns, W = 1…24", tol=0, why_tol=EXACT,
            error="number of widths W where they disagree")
@single_thread()
def _row_pure_condition(seed=0, dtype=torch.float64):
    deepest = pure_cnn(12, seed=seed, dtype=dtype)        # L layers: its first L [Conv2d, SiLU] pairs

    def build(L):
        return deepest[:2 * L] if L else None
    return float(sum(smallest_reaching_L(W, build, max_L=12) != pure_layers_needed(W) for W in range(1, 25)))


@row("(81) U-Net receptive field, Downsample2DNearest", section="7.2",
            formula=r"R_{\mathrm{unet}} = 1 + \sum_{\ell=0}^{L} 2^{\ell}(k-1)\,n_\ell",
            reference="autograd mask of the toy down path: level ℓ = 0…L runs n_ℓ × [Conv2d(3, 1, 1), SiLU], "
                      "Downsample2DNearest (21) between levels; six (n_0, …, n_L), L ≤ 4",
            tol=0, why_tol=EXACT, error="max |R_unet − R_measured| (pixels)")
@single_thread()
def _row_R_unet_nearest(seed=0, dtype=torch.float64):
    return float(max(abs(R_unet(n) - measure_encoder_R(n, downsample="nearest", seed=seed, dtype=dtype))
                     for n in TOY_COUNTS))


def _nearest_field_width(n) -> int:
    """The width of the exact index set (81) models: column q of a down path with n_ℓ stride-1
    3-convs per level and Downsample2DNearest between levels, by index arithmetic
    (encoder_field_1d), on a strip wide enough not to clip."""
    L = len(n) - 1
    width = 2 ** L * (-(-R_encoder(n) // 2 ** L) + 2)
    lo, hi = interval(encoder_field_1d(width // 2 ** (L + 1), n, width=width, downsample="nearest"))
    return hi - lo + 1


def _route_R_unet_conv(seed=0, dtype=torch.float64):
    counts = [n for n in TOY_COUNTS if len(n) > 1] + [sd15_level_counts(path="down")]
    return [R_unet(n) for n in counts], [_nearest_field_width(n) for n in counts]


@row("(81) U-Net receptive field, SD-1.5's Downsample2D", section="7.2",
            formula=r"R_{\mathrm{unet}} = 1 + \sum_{\ell=0}^{L} 2^{\ell}(k-1)\,n_\ell",
            reference="autograd masks of the toy down path with Downsample2D = Conv2d(3, stride 2, padding 1) "
                      "between levels (L ≥ 1), and of SD-1.5's own down path (conv_in + 4 down blocks, "
                      "n = (5, 4, 4, 4), conv path)",
            tol=0, why_tol=EXACT, verdict="differs",
            corrected_by="(81) corrected for the downsampler's kernel",
            note="SD-1.5's Downsample2D is a 3×3 conv: it widens the field by 2^(ℓ+1) pixels at each level, "
                 "2(2^L − 1) in all, which (81) leaves out (SD-1.5's down path: 137 pixels, not 123).",
            error="min over the networks of |R_unet − R_measured| (pixels)",
     route=Route(_route_R_unet_conv,
                 how="the width of the exact 1-D index set of the same down paths with "
                     "Downsample2DNearest, the path (81) counts (lecture.receptive.encoder_field_1d)",
                 atol=0.0, rtol=0.0, why="pixel counts: integers, exact"))
@single_thread()
def _row_R_unet_conv(seed=0, dtype=torch.float64):
    errs = [abs(R_unet(n) - measure_encoder_R(n, downsample="conv", seed=seed, dtype=dtype))
            for n in TOY_COUNTS if len(n) > 1]
    errs.append(abs(R_unet(sd15_level_counts(path="down")) - _sd15_down_R(seed, dtype)))
    return float(min(errs))


@row("(81) corrected for the downsampler's kernel", section="7.2",
            formula=r"R = R_{\mathrm{unet}} + \sum_{\ell=0}^{L-1} 2^{\ell}(k_{\downarrow}-1)",
            reference="autograd masks of the toy down paths with Downsample2DNearest (k↓ = 1), AvgPool2d(2) "
                      "(k↓ = 2, (22)) and Conv2d(3, 2, 1) (k↓ = 3), and of SD-1.5's down path (k↓ = 3)",
            tol=0, why_tol=EXACT, error="max |R − R_measured| (pixels)")
@single_thread()
def _row_R_encoder(seed=0, dtype=torch.float64):
    err = max(abs(R_encoder(n, k_down=_K_DOWN[d]) - measure_encoder_R(n, downsample=d, seed=seed, dtype=dtype))
              for d in _K_DOWN for n in TOY_COUNTS)
    return float(max(err, abs(R_encoder(sd15_level_counts(path="down")) - _sd15_down_R(seed, dtype))))


@row("(82) U-Net receptive field, n_ℓ = n", section="7.2",
            formula=r"R_{\mathrm{unet}} = 1 + 2n\,(2^{L+1} - 1)",
            reference="autograd mask of the toy down path (Downsample2DNearest), L = 0…4, n = 1…3; and sympy: "
                      "Σ_{ℓ=0}^{L} 2^ℓ = 2^{L+1} − 1",
            tol=0, why_tol=EXACT, error="max |R_unet − R_measured| (pixels); +1 if the sum identity fails")
@single_thread()
def _row_R_unet_uniform(seed=0, dtype=torch.float64):
    import sympy
    ell, L_ = sympy.symbols("ell L", integer=True, nonnegative=True)
    identity = sympy.simplify(sympy.summation(2 ** ell, (ell, 0, L_)) - (2 ** (L_ + 1) - 1)) == 0
    err = max(abs(R_unet_uniform(L, n) - measure_encoder_R((n,) * (L + 1), downsample="nearest", seed=seed, dtype=dtype))
              for L in range(5) for n in (1, 2, 3))
    return float(err + (not identity))


@row("(83) Theorem 7.1: levels needed for R_unet ≥ W", section="7.2",
            formula=r"L \ge \log_2\!\left(\frac{W-1}{2n}+1\right) - 1",
            reference="brute force over W = 1…4000, n = 1, 2, 3: the smallest L whose measured R (toy down path, "
                      "Downsample2DNearest, L = 0…10) is ≥ W",
            tol=0, why_tol=EXACT, error="number of (W, n) where (83)'s smallest L differs")
@single_thread()
def _row_theorem(seed=0, dtype=torch.float64):
    measured = {(L, n): measure_encoder_R((n,) * (L + 1), downsample="nearest", seed=seed, dtype=dtype)
                for L in range(11) for n in (1, 2, 3)}
    bad = 0
    for n in (1, 2, 3):
        for W in range(1, 4001):
            brute = min(L for L in range(11) if measured[L, n] >= W)
            bad += brute != unet_levels_needed(W, n)
    return float(bad)


@row("(83) Theorem 7.1: proof steps", section="7.2",
            formula=r"(82) \ge W \iff 2^{L+1} \ge \tfrac{W-1}{2n}+1 \iff (83)",
            reference="exact rational arithmetic (fractions) on W ≤ 1024, n ≤ 6, L ≤ 11, the last step in float "
                      "as (83) is computed; sympy: 1 + 2n(2^{L+1}−1) − W = 2n(2^{L+1} − ((W−1)/(2n) + 1))",
            tol=0, why_tol="truth values: exact", error="grid points where a step changes the truth value; "
                                                         "+1 if the sympy identity fails")
@single_thread()
def _row_theorem_proof(seed=0, dtype=torch.float64):
    import sympy
    from fractions import Fraction
    n_, L_, W_ = sympy.symbols("n L W", positive=True)
    identity = sympy.simplify((1 + 2 * n_ * (2 ** (L_ + 1) - 1) - W_)
                              - 2 * n_ * (2 ** (L_ + 1) - ((W_ - 1) / (2 * n_) + 1))) == 0
    bad = 0
    for n in range(1, 7):
        for W in range(1, 1025):
            x = Fraction(W - 1, 2 * n) + 1
            for L in range(12):
                step0 = 1 + 2 * n * (2 ** (L + 1) - 1) >= W           # R_unet ≥ W with (82)
                step1 = 2 ** (L + 1) >= x                              # the proof's middle step
                step2 = L + 1 >= math.log2(x)                          # after log₂
                step3 = L >= unet_condition(W, n)                      # (83)
                bad += not (step0 == step1 == step2 == step3)
    return float(bad + (not identity))


@functools.lru_cache(maxsize=64)
def _toy_encoder_cached(n, L, seed, dtype) -> nn.Module:
    return toy_encoder((n,) * (L + 1), downsample="nearest", seed=seed, dtype=dtype)


def _reaches(n, L, W, seed, dtype) -> bool:
    """Brute force: does some output pixel of the (n, …, n) toy down path depend on all W columns?"""
    net = _toy_encoder_cached(n, L, seed, dtype)
    return bool(dependency_matrix(net, width=W, dtype=dtype, seed=seed).all(dim=1).any())


def _route_theorem_reach(seed=0, dtype=torch.float64):
    grid = [(n, W) for n in (1, 2) for W in range(1, 65)]
    brute = [next(L for L in range(12) if R_unet_uniform(L, n) >= W) for n, W in grid]
    return [unet_levels_needed(W, n) for n, W in grid], brute


@row("(83) Theorem 7.1: R_unet ≥ W lets an output pixel reach all W columns", section="7.2",
            formula=r"L \ge \log_2\!\left(\frac{W-1}{2n}+1\right) - 1 \Rightarrow \text{reach}",
            reference="brute force: does some output pixel of the measured toy down path (Downsample2DNearest, "
                      "(83)'s smallest L) depend on all W input columns? W = 1…64, n = 1, 2",
            tol=0, why_tol=EXACT, verdict="differs",
            corrected_by="(83) corrected: an output pixel reaches all W columns",
            note="R_unet ≥ W is necessary, not sufficient: output pixels sit on every 2^L-th input column, so a "
                 "field [2^L q − h, 2^L q + h] may miss an edge (n = 1, W = 7: R = 7, no pixel sees all 7). One more "
                 "level always suffices: O(log W) stands.",
            error="number of (W, n) where (83)'s L leaves every output pixel short",
     route=Route(_route_theorem_reach,
                 how="the smallest integer L with 1 + 2n(2^{L+1} − 1) ≥ W, by search in integers, "
                     "against (83)'s log₂ bound rounded up (unet_levels_needed), W = 1…64, n = 1, 2",
                 atol=0.0, rtol=0.0, why="levels: integers, exact"))
@single_thread()
def _row_theorem_reach(seed=0, dtype=torch.float64):
    return float(sum(not _reaches(n, unet_levels_needed(W, n), W, seed, dtype)
                     for n in (1, 2) for W in range(1, 65)))


@row("(83) corrected: an output pixel reaches all W columns", section="7.2",
            formula=r"\min\{L : 2^L \lceil (W-1-h_L)^+/2^L \rceil \le h_L\}",
            reference="brute force: the smallest L for which some output pixel of the measured toy down path "
                      "(Downsample2DNearest) depends on all W columns, W = 1…64, n = 1, 2",
            tol=0, why_tol=EXACT, error="number of (W, n) where they disagree")
@single_thread()
def _row_theorem_reach_corrected(seed=0, dtype=torch.float64):
    bad = 0
    for n in (1, 2):
        for W in range(1, 65):
            brute = next(L for L in range(10) if _reaches(n, L, W, seed, dtype))
            bad += brute != unet_levels_to_reach(W, n)
    return float(bad)


@row("(81) corrected, counted over SD-1.5's whole conv path", section="7.2",
            formula=r"R = 397 \text{ for } n = (13, 11, 11, 14),\ k_{\downarrow} = 3",
            reference="autograd masks of SD-1.5's UNet2DConditionModel (widths cut to 8; attention → identity, "
                      "GroupNorm statistics frozen), output columns 224…231 of a 4×8×448 latent: their mean width",
            tol=0, why_tol="the mean of eight integers, exact in float64",
            error="|mean measured R − formula| (pixels)")
@single_thread()
def _row_sd15_whole(seed=0, dtype=torch.float64):
    unet = _slim(seed, dtype)
    fields, _ = measure_sd15(unet, (4, 8, 448), [(4, p) for p in range(224, 232)], attention=False,
                             groupnorm="frozen", seed=seed, batched=True)
    mean = sum(f.size[1] for f in fields) / len(fields)
    return abs(mean - R_encoder(sd15_level_counts(path="unet")))
