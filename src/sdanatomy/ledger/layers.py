"""Ledger rows of §4, §6.1–6.7 and §6.11: each layer of sdanatomy.lecture.layers against what SD-1.5 runs;
and of §6 itself: the definitions' names and footnoted file paths against the installed libraries.

References are torch's functionals, or the diffusers modules themselves: built by diffusers from
SD-1.5's own configuration (on the meta device, see :func:`reference`), the one submodule a row
needs materialised with seeded Θ. Settings such as GroupNorm's ε or Downsample2D's padding are
therefore read off the real modules, never restated here.

Sums are compared relative to Σ|terms| where possible: a sum of n terms in another order differs
by at most about 2(n − 1)·u·Σ|terms|, u = 2⁻⁵³ in float64.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import math
import re
from pathlib import Path

import torch
import torch.nn.functional as F

from sdanatomy.ledger.registry import Route, row
from sdanatomy.lecture.embeddings import sinusoidal_embedding, sinusoidal_embedding_as_printed, time_mlp
from sdanatomy.lecture.layers import (concat, conv1x1, conv2d, conv2d_as_printed, conv2d_literal, conv_output_size,
                     conv2d_parameter_count, conv2d_theta_shapes, downsample_2d, downsample_2d_asymmetric,
                     downsample_2d_average, downsample_2d_nearest, group_norm,
                     group_norm_literal, interpolate_nearest, linear, rgb_head, silu, softmax,
                     softmax_literal, upsample_2d, EPS_UNET, EPS_VAE)
from sdanatomy.sd15.reference import Timesteps, meta, narrow_unet, reference

EXACT = "indices and copies, no arithmetic: exactly equal"
REL_SUM = "max |err| / Σ|terms|"


# --- references ----------------------------------------------------------------------------

def _randn(seed, dtype, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(1000 + seed), dtype=dtype)


def _theta(module) -> dict:
    return {k: v.detach() for k, v in module.state_dict().items()}


def _rel(Y, ref, S) -> float:
    return ((Y - ref).abs() / S).max().item()


def _conv_terms(X, theta, stride, padding) -> torch.Tensor:
    """Σ|terms| of (14) per output: |b_o| + Σ |W||X|, by torch."""
    return F.conv2d(X.abs(), theta["weight"].abs(), theta["bias"].abs(), stride=stride, padding=padding)


# --- 6.1 Conv2d ----------------------------------------------------------------------------

CONV = dict(C_in=2, C_out=3, H=7, W=6, k=3, s=2, p=1)  # SD-1.5's Downsample2D shape of window, H ≠ W


def _conv_case(seed, dtype):
    c = CONV
    X = _randn(seed, dtype, c["C_in"], c["H"], c["W"])
    theta = {"weight": _randn(seed + 1, dtype, c["C_out"], c["C_in"], c["k"], c["k"]),
             "bias": _randn(seed + 2, dtype, c["C_out"])}
    ref = F.conv2d(X[None], theta["weight"], theta["bias"], stride=c["s"], padding=c["p"])[0]
    return X, theta, ref


def _conv_printed_by_torch(X, theta, s, p) -> torch.Tensor:
    """(14) as printed, by another route: torch's conv2d (0-based) on X moved by one stride.

    The print reads row i·s + u − p with 1-based i, u, r; in 0-based indices (i₀ = i − 1,
    u₀ = u − 1, r₀ = r − 1) that is row i₀·s + u₀ + s − p: torch's window, started s − p
    rows later. A zero margin P on every side holds every row the print reads.
    """
    k = theta["weight"].shape[-1]
    H_out, W_out = (conv_output_size(n, k, s, p) for n in X.shape[-2:])
    P = k + s + p
    Xz = F.pad(X[None], (P, P, P, P))                 # X's row r₀ is Xz's row r₀ + P
    o = P + s - p                                     # so Xz[o + j] is X's row j + s − p
    Y = F.conv2d(Xz[..., o:, o:], theta["weight"], theta["bias"], stride=s)
    return Y[0, :, :H_out, :W_out]


def _route_conv_as_printed(seed=0, dtype=torch.float64):
    X, theta, _ = _conv_case(seed, dtype)
    return (conv2d_as_printed(theta, X, stride=CONV["s"], padding=CONV["p"]),
            _conv_printed_by_torch(X, theta, CONV["s"], CONV["p"]))


@row("(14) Conv2d as printed, i·s+u−p", section="6.1",
            formula=r"Y_{o,i,j} = b_o + \sum_{c,u,v} W^{(o)}_{c,u,v} X_{c,\,is+u-p,\,js+v-p}",
            reference="torch.nn.functional.conv2d (k=3, s=2, p=1)", tol=1e-14,
            why_tol="the matching tolerance of the corrected row", error=REL_SUM,
            verdict="differs", corrected_by="(14) Conv2d, 1-based: (i−1)·s+u−p",
            note="With 1-based i, u (the lecture's §2 convention) torch reads input row (i−1)·s+u−p: "
                 "the printed i·s+u−p shifts every window by one stride (it is right only for a 0-based i).",
     route=Route(_route_conv_as_printed,
                 how="torch's F.conv2d on X moved by s − p rows and columns (0-based index "
                     "arithmetic) against the 1-based loops of conv2d_as_printed",
                 atol=1e-13, rtol=1e-13,
                 why="float64 sums of 19 terms in two orders: ≤ 2·18·2⁻⁵³ ≈ 4e-15 of Σ|terms| "
                     "(Σ|terms| ≲ 20 here)"))
def _row_conv_as_printed(seed=0, dtype=torch.float64):
    X, theta, ref = _conv_case(seed, dtype)
    Y = conv2d_as_printed(theta, X, stride=CONV["s"], padding=CONV["p"])
    return _rel(Y, ref, _conv_terms(X[None], theta, CONV["s"], CONV["p"])[0])


@row("(14) Conv2d, 1-based: (i−1)·s+u−p", section="6.1",
            formula=r"Y_{o,i,j} = b_o + \sum_{c,u,v} W^{(o)}_{c,u,v} X_{c,\,(i-1)s+u-p,\,(j-1)s+v-p}",
            reference="torch.nn.functional.conv2d (k=3, s=2, p=1)", tol=1e-14,
            why_tol="float64 sums of n = 19 terms in another order: ≤ 2(n−1)·2⁻⁵³ ≈ 4e-15 "
                    "of Σ|terms|",
            error=REL_SUM)
def _row_conv(seed=0, dtype=torch.float64):
    X, theta, ref = _conv_case(seed, dtype)
    S = _conv_terms(X[None], theta, CONV["s"], CONV["p"])[0]
    return max(_rel(conv2d_literal(theta, X, stride=CONV["s"], padding=CONV["p"]), ref, S),
               _rel(conv2d(theta, X, stride=CONV["s"], padding=CONV["p"]), ref, S))


@row("(14) output size H′ = ⌊(H−k+2p)/s⌋+1", section="6.1",
            formula=r"H' = \lfloor (H - k_h + 2p_h)/s_h \rfloor + 1",
            reference="shape of torch conv2d's output, H ∈ [1,16], k ∈ [1,5], s ∈ [1,4], p ∈ [0,2]",
            tol=0, why_tol="integers: exact", error="mismatched sizes")
def _row_output_size(seed=0, dtype=torch.float64):
    bad = 0
    for H in range(1, 17):
        for k in range(1, 6):
            for s in range(1, 5):
                for p in range(3):
                    X, Wk = torch.empty(1, 1, H, 1, device="meta"), torch.empty(1, 1, k, 1, device="meta")
                    try:
                        torch_H = F.conv2d(X, Wk, stride=(s, 1), padding=(p, 0)).shape[2]
                    except RuntimeError:
                        torch_H = None                     # torch refuses a kernel larger than H + 2p
                    try:
                        ours = conv_output_size(H, k, s, p)
                    except ValueError:
                        ours = None
                    bad += ours != torch_H
    return float(bad)


SD15_CONVS = {"unet": 98, "vae": 64}     # nn.Conv2d modules: the VAE's encoder and decoder together


def _sd15_convs(root: str):
    """Every nn.Conv2d of SD-1.5's U-Net or VAE (encoder and decoder), on the meta device."""
    return [m for m in meta(root).modules() if isinstance(m, torch.nn.Conv2d)]


@row("(13) Θ_Conv2d: weight (C_out, C_in, k_h, k_w), bias (C_out,)", section="6.1",
            formula=r"\Theta_{\mathrm{Conv2d}} = \{W^{(o)} \in \mathbb R^{C_{in}\times k_h\times k_w},"
                    r" b_o\}_{o=1}^{C_{out}},\ C_{out}(C_{in}k_hk_w + 1)",
            reference=f"every nn.Conv2d of SD-1.5's U-Net ({SD15_CONVS['unet']}) and VAE "
                      f"({SD15_CONVS['vae']}), diffusers on the meta device: its weight and bias "
                      "shapes, parameter count, groups, dilation",
            tol=0, why_tol="shapes and counts: integers, exact",
            error="Conv2d modules where a shape, the count, groups = 1 or dilation = 1 differs; "
                  "∞ if the modules are not as many as stated")
def _row_conv_theta(seed=0, dtype=torch.float64):
    convs = {root: _sd15_convs(root) for root in SD15_CONVS}
    if {root: len(ms) for root, ms in convs.items()} != SD15_CONVS:
        return math.inf
    bad = 0
    for m in convs["unet"] + convs["vae"]:
        C_in, C_out, (k_h, k_w) = m.in_channels, m.out_channels, m.kernel_size
        shapes = conv2d_theta_shapes(C_in, C_out, k_h, k_w)
        theirs = {"weight": tuple(m.weight.shape),
                  "bias": None if m.bias is None else tuple(m.bias.shape)}
        count = sum(p.numel() for p in m.parameters())
        bad += (theirs != shapes or count != conv2d_parameter_count(C_in, C_out, k_h, k_w)
                or m.groups != 1 or tuple(m.dilation) != (1, 1))
    return float(bad)


@row("Remark 6.1 Conv2d = convolution with the flipped kernel", section="6.1",
            formula=r"\mathrm{Conv2d}_{W}(X) = \mathrm{valid}\bigl(X * \mathrm{flip}(W)\bigr)",
            reference="true 2-D convolution by the convolution theorem (torch.fft)", tol=1e-12,
            why_tol="FFT round-off ≈ 2⁻⁵³·log₂(N)·‖X‖‖W‖, ≈ 1e-14 here", error="max abs")
def _row_flip(seed=0, dtype=torch.float64):
    X = _randn(seed, dtype, 2, 9, 8)
    Wk = _randn(seed + 1, dtype, 3, 2, 3, 3)
    k = Wk.shape[-1]
    Hf, Wf = X.shape[1] + k - 1, X.shape[2] + k - 1        # the full convolution's size
    K = Wk.flip(-2, -1)                                    # flip(W): K[u, v] = W[k−1−u, k−1−v]
    full = torch.fft.irfft2(torch.fft.rfft2(X, s=(Hf, Wf))[None] * torch.fft.rfft2(K, s=(Hf, Wf)),
                            s=(Hf, Wf)).sum(1)              # (X * K)[o] = Σ_c X_c * K_{o,c}
    valid = full[:, k - 1:X.shape[1], k - 1:X.shape[2]]
    Y = conv2d({"weight": Wk}, X, bias=False)              # cross-correlation with W itself
    return (Y - valid).abs().max().item()


# --- 6.2 Linear, 6.3 SiLU and Softmax -----------------------------------------------------

@row("(15) Linear", section="6.2", formula=r"\mathrm{Linear}(x) = Wx + b",
            reference="torch.nn.functional.linear", tol=1e-14,
            why_tol="float64 sums of n = 65 terms in another order: ≤ 2(n−1)·2⁻⁵³ ≈ 1.4e-14 "
                    "of Σ|terms|",
            error=REL_SUM)
def _row_linear(seed=0, dtype=torch.float64):
    x = _randn(seed, dtype, 5, 64)
    theta = {"weight": _randn(seed + 1, dtype, 32, 64), "bias": _randn(seed + 2, dtype, 32)}
    S = F.linear(x.abs(), theta["weight"].abs(), theta["bias"].abs())
    return _rel(linear(theta, x), F.linear(x, theta["weight"], theta["bias"]), S)


@row("(16) SiLU", section="6.3", formula=r"\mathrm{SiLU}(u) = u\,\sigma(u),\ \sigma(u) = 1/(1+e^{-u})",
            reference="torch.nn.functional.silu", tol=1e-15,
            why_tol="float64, ≤ 4 correctly rounded or 1-ulp steps on each side: "
                    "≤ 8·2⁻⁵³ ≈ 9e-16 relative",
            error="max |err| / |SiLU(u)|")
def _row_silu(seed=0, dtype=torch.float64):
    u = _randn(seed, dtype, 4096) * 5
    ref = F.silu(u)
    return ((silu(u) - ref).abs() / ref.abs()).max().item()


@row("(17) Softmax with temperature τ", section="6.3",
            formula=r"\mathrm{Softmax}^{(\tau)}(x)_i = \exp(x_i/\tau) \big/ \textstyle\sum_j \exp(x_j/\tau)",
            reference="torch.softmax(x / τ, dim=-1), τ = √40 as in SD-1.5's first attention level",
            tol=2e-14,
            why_tol="float64: exp of |x/τ| < 3 (≤ 4·2⁻⁵³ each), a 77-term positive sum (≤ 76·2⁻⁵³), "
                    "a division, on both sides: ≈ 1.1e-14 relative", error="max |err| / softmax")
def _row_softmax(seed=0, dtype=torch.float64):
    tau = math.sqrt(40)
    x = _randn(seed, dtype, 8, 77) * 2
    ref = torch.softmax(x / tau, dim=-1)
    return max(((softmax_literal(x, tau=tau) - ref).abs() / ref).max().item(),
               ((softmax(x, tau=tau) - ref).abs() / ref).max().item())


# --- 6.4 GroupNorm --------------------------------------------------------------------------

GN_TOL = ("float64: μ_g and σ_g² are sums of |S_g| ≤ 640 terms in another order, "
          "≤ 640·2⁻⁵³ ≈ 7e-14 relative, on outputs γ·x̂ + β with |x̂| ≤ 4")


def _gn_measure(path, C, eps, seed, dtype):
    module = reference(path, seed=seed, dtype=dtype)
    X = _randn(seed, dtype, 2, C, 8, 8) * 3 + 1
    ref = module(X)
    theta = _theta(module)
    literal = group_norm_literal(theta, X[:1, :, :3, :3], groups=32, eps=eps)   # small: a loop per element
    return max((group_norm(theta, X, groups=32, eps=eps) - ref).abs().max().item(),
               (literal - module(X[:1, :, :3, :3])).abs().max().item())


@row("(18)–(19) GroupNorm, U-Net ResnetBlock2D (G=32, ε=1e-5)", section="6.4",
            formula=r"\gamma_c\,(X_{c,i,j} - \mu_{g(c)}) / \sqrt{\sigma^2_{g(c)} + \varepsilon} + \beta_c",
            reference="diffusers: unet.down_blocks[0].resnets[0].norm1 (C = 320)", tol=2e-13, why_tol=GN_TOL)
def _row_gn_unet(seed=0, dtype=torch.float64):
    return _gn_measure("unet.down_blocks.0.resnets.0.norm1", 320, EPS_UNET, seed, dtype)


@row("(18)–(19) GroupNorm, VAE decoder (G=32, ε=1e-6)", section="6.4",
            formula=r"\gamma_c\,(X_{c,i,j} - \mu_{g(c)}) / \sqrt{\sigma^2_{g(c)} + \varepsilon} + \beta_c",
            reference="diffusers: vae.decoder.conv_norm_out (C = 128)", tol=2e-13, why_tol=GN_TOL)
def _row_gn_vae(seed=0, dtype=torch.float64):
    return _gn_measure("vae.decoder.conv_norm_out", 128, EPS_VAE, seed, dtype)


# --- 6.5 Down- and upsampling ---------------------------------------------------------------

@row("(20) Downsample2D (SD-1.5: k=3, s=2, p=1)", section="6.5.1",
            formula=r"\mathrm{Conv2d}^{(3,3;\,2,2;\,1,1)}",
            reference="diffusers: unet.down_blocks[0].downsamplers[0] (Downsample2D, C = 320)", tol=1e-13,
            why_tol="float64 sums of n = 2881 terms in another order: ≤ 2(n−1)·2⁻⁵³ ≈ 6.4e-13 "
                    "worst case, ≈ √n·2⁻⁵³ in practice", error=REL_SUM)
def _row_downsample(seed=0, dtype=torch.float64):
    module = reference("unet.down_blocks.0.downsamplers.0", seed=seed, dtype=dtype)
    X = _randn(seed, dtype, 1, 320, 7, 6)
    theta = _theta(module)
    S = _conv_terms(X, {"weight": theta["conv.weight"], "bias": theta["conv.bias"]}, 2, 1)
    return _rel(downsample_2d(theta, X), module(X), S)


ENCODER_DOWN = "vae.encoder.down_blocks.0.downsamplers.0"


@row("(20) Downsample2D of SD-1.5's VAE encoder: pad (0, 1, 0, 1), then p = 0", section="6.5.1",
            formula=r"\mathrm{Conv2d}^{(3,3;\,2,2;\,0,0)} \circ \mathrm{pad}_{(0,1,0,1)}",
            reference="diffusers: " + ENCODER_DOWN + " (Downsample2D(padding=0), C = 128), H×W 7×6 "
                      "and 6×8; the encoder's three downsamplers read off the modules", tol=1e-13,
            why_tol="float64 sums of n = 1153 terms in another order: ≤ 2(n−1)·2⁻⁵³ ≈ 2.6e-13 "
                    "worst case, ≈ √n·2⁻⁵³ in practice",
            error=REL_SUM + "; ∞ if a downsampler's padding or kernel is not this one's")
def _row_downsample_encoder(seed=0, dtype=torch.float64):
    for block in meta("vae").encoder.down_blocks:
        for d in block.downsamplers or ():
            if (d.padding, tuple(d.conv.padding), tuple(d.conv.stride), tuple(d.conv.kernel_size)) \
                    != (0, (0, 0), (2, 2), (3, 3)):
                return math.inf
    module = reference(ENCODER_DOWN, seed=seed, dtype=dtype)
    theta = _theta(module)
    conv = {"weight": theta["conv.weight"], "bias": theta["conv.bias"]}
    err = 0.0
    for H, W in ((7, 6), (6, 8)):
        X = _randn(seed, dtype, 1, 128, H, W)
        S = _conv_terms(F.pad(X, (0, 1, 0, 1)), conv, 2, 0)
        Y, ref = downsample_2d_asymmetric(theta, X), module(X)
        if Y.shape != ref.shape:
            return math.inf
        err = max(err, _rel(Y, ref, S))
    return err


@row("(21) Downsample2DNearest (0-based)", section="6.5.2",
            formula=r"Y_{c,i,j} = X_{c,2i,2j},\ 0 \le i < \lfloor H/2 \rfloor",
            reference="F.interpolate(X, scale_factor=0.5, mode='nearest'), H, W even and odd", tol=0,
            why_tol=EXACT)
def _row_nearest_pool(seed=0, dtype=torch.float64):
    err = 0.0
    for H, W in [(6, 8), (7, 9), (5, 4)]:
        X = _randn(seed, dtype, 2, 3, H, W)
        ref = F.interpolate(X, scale_factor=0.5, mode="nearest")
        err = max(err, (downsample_2d_nearest(X) - ref).abs().max().item())
    return err


@row("(22) Downsample2DAverage (0-based)", section="6.5.2",
            formula=r"Y_{c,i,j} = \tfrac14 \sum_{u,v=0}^{1} X_{c,2i+u,2j+v}",
            reference="F.avg_pool2d(X, 2) = diffusers Downsample2D(use_conv=False), H, W even and odd",
            tol=1e-15, why_tol="float64 sums of 4 terms, then ÷4 (exact): ≤ 2·3·2⁻⁵³ ≈ 7e-16 "
                               "of Σ|terms|",
            error=REL_SUM)
def _row_average_pool(seed=0, dtype=torch.float64):
    err = 0.0
    for H, W in [(6, 8), (7, 9)]:
        X = _randn(seed, dtype, 2, 3, H, W)
        err = max(err, _rel(downsample_2d_average(X), F.avg_pool2d(X, 2), F.avg_pool2d(X.abs(), 2)))
    return err


@row("(23) Interpolate ×2, nearest (0-based)", section="6.5.3",
            formula=r"Z_{c,2i+u,2j+v} = X_{c,i,j},\ u,v \in \{0,1\}",
            reference="F.interpolate(X, scale_factor=2, mode='nearest')", tol=0, why_tol=EXACT)
def _row_interpolate(seed=0, dtype=torch.float64):
    X = _randn(seed, dtype, 2, 3, 5, 4)
    return (interpolate_nearest(X) - F.interpolate(X, scale_factor=2, mode="nearest")).abs().max().item()


@row("(24) Upsample2D (SD-1.5: k=3, s=1, p=1)", section="6.5.3",
            formula=r"\mathrm{Conv2d}^{(3,3;\,1,1;\,1,1)} \circ \mathrm{Interpolate}^{(\times2)}",
            reference="diffusers: vae.decoder.up_blocks[2].upsamplers[0] (Upsample2D, C = 256)", tol=1e-13,
            why_tol="float64 sums of n = 2305 terms in another order: ≤ 2(n−1)·2⁻⁵³ ≈ 5e-13 "
                    "worst case, ≈ √n·2⁻⁵³ in practice", error=REL_SUM)
def _row_upsample(seed=0, dtype=torch.float64):
    module = reference("vae.decoder.up_blocks.2.upsamplers.0", seed=seed, dtype=dtype)
    X = _randn(seed, dtype, 1, 256, 3, 4)
    theta = _theta(module)
    Z = F.interpolate(X, scale_factor=2, mode="nearest")
    S = _conv_terms(Z, {"weight": theta["conv.weight"], "bias": theta["conv.bias"]}, 1, 1)
    return _rel(upsample_2d(theta, X), module(X), S)


# --- 6.6 Concat -----------------------------------------------------------------------------

def _concat_seen(block, X, skips, h, **kwargs) -> float:
    """max |input of resnet r − Concat(Y_{r−1}, S)| over the resnets of a diffusers up block.

    Y_{r−1} is X for r = 1, else what the block computed just before resnet r (the previous
    attention's output, or resnet's); S is the skip the block pops, the last made first.
    Forward hooks read both off the running module.
    """
    seen, before = [], {}
    prev = block.attentions if hasattr(block, "attentions") else block.resnets
    hooks = [r.register_forward_pre_hook(lambda m, args: seen.append(args[0])) for r in block.resnets]
    hooks += [m.register_forward_hook(lambda m, args, out, i=i: before.__setitem__(
        i, out[0] if isinstance(out, tuple) else getattr(out, "sample", out)))
        for i, m in enumerate(prev)]
    try:
        with torch.no_grad():
            block(X, skips, h, **kwargs)
    finally:
        for hk in hooks:
            hk.remove()
    n, err = len(block.resnets), 0.0
    for r in range(n):
        ours = concat(X if r == 0 else before[r - 1], skips[n - 1 - r])      # (27)
        if ours.shape != seen[r].shape:
            return math.inf
        err = max(err, (ours - seen[r]).abs().max().item())
    return err


def _up_case(u, i, seed, dtype, H=3, W=4):
    """X from below and the skips of diffusers' up_blocks[i], at the widths its resnets read."""
    block = u.up_blocks[i]
    below = (u.mid_block if i == 0 else u.up_blocks[i - 1]).resnets[-1].out_channels
    outs = [below] + [r.out_channels for r in block.resnets[:-1]]
    widths = [r.in_channels - c for r, c in zip(block.resnets, outs)]       # resnet r's skip
    skips = tuple(_randn(seed + 3 + r, dtype, 2, w, H, W) for r, w in enumerate(reversed(widths)))
    h = _randn(seed + 1, dtype, 2, block.resnets[0].time_emb_proj.in_features)
    return block, _randn(seed, dtype, 2, below, H, W), skips, h


@row("(27) Concat", section="6.6", formula=r"\mathrm{Concat}(A, B) = A \oplus B\ \text{(channels)}",
            reference="the input of every resnet of diffusers' UpBlock2D and CrossAttnUpBlock2D "
                      "(SD-1.5's config at widths (32, 64, 64, 64), forward hooks): the input from "
                      "below, then the skip", tol=0, why_tol=EXACT,
            error="max |Concat(Y, S) − the resnet's input|; ∞ if a shape differs")
def _row_concat(seed=0, dtype=torch.float64):
    u = narrow_unet(seed, dtype)
    err = 0.0
    for i in (0, 1):                                 # UpBlock2D, CrossAttnUpBlock2D
        block, X, skips, h = _up_case(u, i, seed, dtype)
        kwargs = {"encoder_hidden_states": _randn(seed + 2, dtype, 2, 7, 768)} if i else {}
        err = max(err, _concat_seen(block, X, skips, h, **kwargs))
    return err


# --- 6.7 Timestep embedding -----------------------------------------------------------------

T_SD15 = torch.arange(1000)            # SD-1.5's training timesteps t ∈ {0, …, 999}
TE_TOL = ("diffusers evaluates (28) in float32: ω_r = exp(−ln(10⁴)(r−1)/160) and ω_r·t carry "
          "≤ (3|ln ω_r| + 3)·2⁻²⁴ relative error, so |Δ(ω_r t)| ≤ 3·999·2⁻²⁴ ≈ 1.8e-4")


def _interleaved_literal(ts, R: int) -> list[list[float]]:
    """(28) as printed, one Python float at a time: cos ω_r t, sin ω_r t for r = 1, …, R,
    ω_r = 10000^(−(r−1)/R)."""
    out = []
    for t in ts:
        e = []
        for r in range(1, R + 1):
            omega = 10000.0 ** (-(r - 1) / R)
            e += [math.cos(omega * t), math.sin(omega * t)]
        out.append(e)
    return out


def _route_sinusoid_as_printed(seed=0, dtype=torch.float64):
    ts = T_SD15[::9]
    return (sinusoidal_embedding_as_printed(ts, R=160, dtype=torch.float64),
            torch.tensor(_interleaved_literal(ts.tolist(), 160), dtype=torch.float64))


@row("(28) sinusoidal embedding as printed (cos, sin interleaved)", section="6.7",
            formula=r"e(t) = [\cos\omega_1 t, \sin\omega_1 t, \dots, \cos\omega_R t, \sin\omega_R t]",
            reference="diffusers: unet.time_proj "
                      "(Timesteps(320, flip_sin_to_cos=True, downscale_freq_shift=0))",
            tol=2e-4, why_tol=TE_TOL, verdict="differs",
            corrected_by="(28) sinusoidal embedding, SD-1.5 order (all cos, then all sin)",
            note="SD-1.5 orders the 2R = 320 components as all cosines, then all sines; "
                 "ω_0 = 1, β = 10000^(−1/160).",
     route=Route(_route_sinusoid_as_printed,
                 how="math.cos and math.sin, one component at a time in the printed order, "
                     "ω_r = 10000^(−(r−1)/R) (t = 0, 9, …, 999)",
                 atol=1e-10, rtol=0.0,
                 why="float64; ω_r as β^(r−1) with β rounded, or as 10000^(−(r−1)/R): "
                     "≲ R·2⁻⁵³ ≈ 2e-14 relative, times ω_r t ≤ 999 rad: |Δ| ≲ 2e-11"))
def _row_sinusoid_as_printed(seed=0, dtype=torch.float64):
    ref = meta("unet").time_proj(T_SD15).to(dtype)
    return (sinusoidal_embedding_as_printed(T_SD15, R=160, dtype=dtype) - ref).abs().max().item()


@row("(28) sinusoidal embedding, SD-1.5 order (all cos, then all sin)", section="6.7",
            formula=r"e(t) = [\cos\omega_r t]_{r=1}^{R} \oplus [\sin\omega_r t]_{r=1}^{R},"
                    r"\ \omega_r = 10^{-4(r-1)/R}",
            reference="diffusers: unet.time_proj, t = 0, …, 999", tol=2e-4, why_tol=TE_TOL)
def _row_sinusoid(seed=0, dtype=torch.float64):
    ref = meta("unet").time_proj(T_SD15).to(dtype)
    return (sinusoidal_embedding(T_SD15, R=160, dtype=dtype) - ref).abs().max().item()


@row("(29) TimestepEmbedding MLP", section="6.7",
            formula=r"U_2\,\mathrm{SiLU}(U_1 e + b_1) + b_2",
            reference="diffusers: unet.time_embedding (TimestepEmbedding(320, 1280): U_1 is 1280×320, "
                      "U_2 1280×1280), the same e", tol=1e-10,
            why_tol="float64 worst case: 321-term sums (≤ 2·320·2⁻⁵³·Σ|U_1e| ≈ 1.3e-12) carried "
                    "through SiLU (Lipschitz 1.1) and Σ_k|U_2| ≤ 36: ≈ 5e-11", error="max abs")
def _row_time_mlp(seed=0, dtype=torch.float64):
    module = reference("unet.time_embedding", seed=seed, dtype=dtype)
    e = sinusoidal_embedding(_randn(seed, dtype, 4).abs() * 300, dtype=dtype)
    return (time_mlp(_theta(module), e) - module(e)).abs().max().item()


# --- 6.11 Conv1x1 and the decoder's RGB head -------------------------------------------------

@row("Def. 6.21 Conv1x1", section="6.11",
            formula=r"\mathrm{Conv2d}^{(1,1;\,1,1;\,0,0)}_{\Theta_{\mathrm{out}}}",
            reference="diffusers: vae.post_quant_conv (Conv2d(4, 4, 1), SD-1.5's 1×1 convolution)", tol=1e-15,
            why_tol="float64 sums of n = 5 terms: ≤ 2·4·2⁻⁵³ ≈ 9e-16 of Σ|terms|", error=REL_SUM)
def _row_conv1x1(seed=0, dtype=torch.float64):
    module = reference("vae.post_quant_conv", seed=seed, dtype=dtype)
    X = _randn(seed, dtype, 2, 4, 5, 6)
    theta = _theta(module)
    return _rel(conv1x1(theta, X), module(X), _conv_terms(X, theta, 1, 0))


def _decoder_head(seed, dtype):
    norm = reference("vae.decoder.conv_norm_out", seed=seed, dtype=dtype)
    out = reference("vae.decoder.conv_out", seed=seed + 1, dtype=dtype)
    act = meta("vae").decoder.conv_act                  # parameter-free: SiLU
    X = _randn(seed, dtype, 8, 128, 8, 8)
    theta = {f"conv_norm_out.{k}": v for k, v in _theta(norm).items()}
    theta |= {f"conv_out.{k}": v for k, v in _theta(out).items()}
    with torch.no_grad():
        return X, theta, out(act(norm(X))), act(norm(X)), out


def _best_conv1x1(seed, dtype):
    """The best 1×1 map from the head's input to its RGB output, by least squares."""
    X, _, ref, _, _ = _decoder_head(seed, dtype)
    pixels = X.permute(0, 2, 3, 1).reshape(-1, 128)                 # (B·H·W, 128): the input of a 1×1 map
    A = torch.cat([pixels, torch.ones(len(pixels), 1, dtype=dtype)], dim=1)
    target = ref.permute(0, 2, 3, 1).reshape(-1, 3)                 # (B·H·W, 3)
    fit = torch.linalg.lstsq(A, target).solution                    # the best W (3×128) and b
    return X, A, fit, target


def _route_rgb_as_conv1x1(seed=0, dtype=torch.float64):
    X, A, fit, _ = _best_conv1x1(seed, dtype)
    theta = {"weight": fit[:128].T[:, :, None, None].contiguous(), "bias": fit[128].clone()}
    B, _, H, W = X.shape
    return conv1x1(theta, X), (A @ fit).reshape(B, H, W, 3).permute(0, 3, 1, 2)


@row("Def. 6.21 Conv1x1 as the decoder's RGB projection", section="6.11",
            formula=r"\hat X = \mathrm{Conv1x1}_{\Theta_{\mathrm{out}}}(H),"
                    r"\ \text{best } \Theta_{\mathrm{out}}",
            reference="diffusers: vae.decoder conv_norm_out → conv_act → conv_out (to RGB)", tol=1e-10,
            why_tol="a map that is a 1×1 convolution is recovered by least squares over 512 pixels "
                    "(129 unknowns per colour) to float64 round-off", error="relative residual of the best fit",
            verdict="differs", corrected_by="Def. 6.21 RGB head of SD-1.5: Conv2d 3×3 ∘ SiLU ∘ GroupNorm",
            note="SD-1.5's decoder ends GroupNorm(32, ε=1e-6) → SiLU → Conv2d(128, 3, k=3, p=1); "
                 "no choice of a 1×1 Θ_out reproduces it. Its 1×1 convolutions are post_quant_conv "
                 "and the ResnetBlock2D shortcuts.",
     checks=("sdanatomy.lecture.layers.conv1x1",),
     route=Route(_route_rgb_as_conv1x1,
                 how="the fitted Θ_out run through conv1x1 (Def. 6.21, the book's Conv2d) against "
                     "the least-squares prediction A·fit it was fitted by",
                 atol=1e-12, rtol=1e-12,
                 why="float64 sums of 129 terms in two orders: ≲ 129·2⁻⁵³·Σ|terms| ≈ 1e-14·Σ|terms|"))
def _row_rgb_as_conv1x1(seed=0, dtype=torch.float64):
    _, A, fit, target = _best_conv1x1(seed, dtype)
    return ((A @ fit - target).norm() / target.norm()).item()


@row("Def. 6.21 RGB head of SD-1.5: Conv2d 3×3 ∘ SiLU ∘ GroupNorm", section="6.11",
            formula=r"\mathrm{Conv2d}^{(3,3;\,1,1;\,1,1)} \circ \mathrm{SiLU} \circ \mathrm{GroupNorm}^{(32)}",
            reference="diffusers: vae.decoder conv_norm_out → conv_act → conv_out", tol=1e-12,
            why_tol="float64: the conv's 1153-term sums, ≤ 2·1152·2⁻⁵³ ≈ 2.6e-13 of Σ|terms|, "
                    "after GroupNorm's ≤ 1e-13", error=REL_SUM)
def _row_rgb_head(seed=0, dtype=torch.float64):
    X, theta, ref, U, out = _decoder_head(seed, dtype)
    S = _conv_terms(U.abs(), _theta(out), 1, 1)
    return _rel(rgb_head(theta, X), ref, S)




# --- §6: the definitions' names and their footnotes' addresses --------------------------------
#
# The lecture gives each definition "the library class/function name" and, in a footnote, "the
# URL of the corresponding implementation". Both are looked up in the installed torch and
# diffusers (0.42.1) by name, twice: by getattr on the modules that implement SD-1.5, and by
# reading the installed source files. These are look-ups, not dependencies: sd15.reference has
# imported every diffusers module named here before any row runs.

PRINTED_NAMES = (                      # Defs. 6.1–6.21 and 8.1–8.3, as printed
    "Conv2d", "Linear", "SiLU", "Softmax", "GroupNorm", "Downsample2D", "Downsample2DNearest",
    "Downsample2DAverage", "Interpolate", "Upsample2D", "flatten", "unflatten", "Concat",
    "TimestepEmbedding", "ScaledDotProductAttention", "MultiheadAttention", "ResnetBlock2D",
    "DownBlock2D", "UpBlock2D", "CrossAttentionMidBlock2D", "CrossAttentionDownBlock2D",
    "CrossAttentionUpBlock2D", "Conv1x1", "UNet2DConditionModel", "Decoder", "AutoencoderKL")
# The library's names for the printed names that it does not have.
CORRECTED_NAMES = {
    "Downsample2DNearest": "torch.nn.functional.interpolate",    # scale ½, nearest: row (21)
    "Downsample2DAverage": "torch.nn.functional.avg_pool2d",     # Downsample2D(use_conv=False)
    "CrossAttentionMidBlock2D": "diffusers.models.unets.unet_2d_blocks.UNetMidBlock2DCrossAttn",
    "CrossAttentionDownBlock2D": "diffusers.models.unets.unet_2d_blocks.CrossAttnDownBlock2D",
    "CrossAttentionUpBlock2D": "diffusers.models.unets.unet_2d_blocks.CrossAttnUpBlock2D",
    "Conv1x1": "torch.nn.Conv2d",                                # kernel_size=1
}
NAMESPACES = ("torch", "torch.nn", "torch.nn.functional", "diffusers.models.embeddings",
              "diffusers.models.resnet", "diffusers.models.downsampling",
              "diffusers.models.upsampling", "diffusers.models.attention_processor",
              "diffusers.models.unets.unet_2d_blocks", "diffusers.models.unets.unet_2d_condition",
              "diffusers.models.autoencoders.autoencoder_kl", "diffusers.models.autoencoders.vae")
# The diffusers classes of §6 and §8 that SD-1.5's own module trees instantiate.
SD15_CLASSES = ("TimestepEmbedding", "ResnetBlock2D", "Downsample2D", "Upsample2D", "DownBlock2D",
                "UpBlock2D", "UNetMidBlock2DCrossAttn", "CrossAttnDownBlock2D",
                "CrossAttnUpBlock2D", "UNet2DConditionModel", "Decoder", "AutoencoderKL")
RENAMED = ("sdanatomy.lecture.layers.downsample_2d_nearest",
           "sdanatomy.lecture.layers.downsample_2d_average", "sdanatomy.lecture.layers.conv1x1",
           "sdanatomy.lecture.blocks.mid_block_2d_cross_attn",
           "sdanatomy.lecture.blocks.cross_attn_down_block_2d",
           "sdanatomy.lecture.blocks.cross_attn_up_block_2d")
COUNTS = "names and paths: exact"


def _spellings(name: str) -> tuple[str, str]:
    """A printed name as a class and as a function: ScaledDotProductAttention,
    scaled_dot_product_attention."""
    return name, re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def has_name(name: str) -> bool:
    """getattr: some module of :data:`NAMESPACES` has the name (a qualified name: its module)."""
    module, _, attr = name.rpartition(".")
    spaces = (module,) if module else NAMESPACES
    return any(hasattr(importlib.import_module(m), s) for m in spaces for s in _spellings(attr))


def missing_names(names=PRINTED_NAMES) -> list[str]:
    """The names that no module of :data:`NAMESPACES` has, by getattr."""
    return [n for n in names if not has_name(n)]


def _key(name: str) -> str:
    return name.replace("_", "").casefold()


@functools.lru_cache(maxsize=1)
def defined_in_source() -> frozenset[str]:
    """Every top-level class, def and assignment in the installed source of diffusers' models
    and of torch.nn's modules, torch.nn.functional and torch's C functions (their stubs), read
    as text; keys without case or underscores."""
    torch_dir = Path(importlib.util.find_spec("torch").origin).parent
    diffusers_dir = Path(importlib.util.find_spec("diffusers").origin).parent
    files = [*sorted((diffusers_dir / "models").rglob("*.py")),
             *sorted((torch_dir / "nn" / "modules").glob("*.py")),
             torch_dir / "nn" / "functional.py", torch_dir / "_C" / "_VariableFunctions.pyi"]
    top = re.compile(r"^(?:class\s+|def\s+)?(\w+)(?=\s*[(:=])", re.M)
    return frozenset(_key(n) for f in files for n in top.findall(f.read_text()))


def _route_names_printed(seed=0, dtype=torch.float64):
    source = defined_in_source()
    return missing_names(), [n for n in PRINTED_NAMES if _key(n) not in source]


NAMES = "§6 function names, corrected: the library's own"


@row(NAMES, section="6",
     formula=r"\mathrm{UNetMidBlock2DCrossAttn},\ \mathrm{CrossAttn\{Down,Up\}Block2D},\ "
             r"\mathrm{interpolate},\ \mathrm{avg\_pool2d},\ \mathrm{Conv2d}^{(1,1)}",
     reference="getattr on torch, torch.nn, torch.nn.functional and the diffusers modules of "
               "SD-1.5's classes; the class names in SD-1.5's U-Net and VAE module trees "
               "(meta device)",
     tol=0, why_tol=COUNTS,
     error="the corrected names (26) that do not resolve, plus the 12 diffusers classes of §6 "
           "and §8 absent from SD-1.5's module trees",
     checks=RENAMED)
def _row_names(seed=0, dtype=torch.float64):
    names = [CORRECTED_NAMES.get(n, n) for n in PRINTED_NAMES]
    trees = {type(m).__name__ for c in ("unet", "vae") for m in meta(c).modules()}
    return len(missing_names(names)) + sum(c not in trees for c in SD15_CLASSES)


@row("§6 function names, as printed: each a torch or diffusers name", section="6",
     formula=r"\mathrm{CrossAttentionMidBlock2D},\ \mathrm{Downsample2DNearest},\ "
             r"\mathrm{Conv1x1},\ \dots",
     reference="getattr on torch, torch.nn, torch.nn.functional and the diffusers modules of "
               "SD-1.5's classes, as a class or a function (ScaledDotProductAttention: "
               "scaled_dot_product_attention)",
     tol=0, why_tol=COUNTS, error=f"printed names (of {len(PRINTED_NAMES)}) found nowhere",
     verdict="differs", corrected_by=NAMES,
     note="Six of the 26 names are no library's: CrossAttentionMidBlock2D is diffusers' "
          "UNetMidBlock2DCrossAttn, CrossAttentionDown/UpBlock2D are CrossAttnDown/UpBlock2D; "
          "Downsample2DNearest and Downsample2DAverage are F.interpolate (scale ½, nearest) and "
          "F.avg_pool2d; Conv1x1 is a Conv2d with kernel 1. torch's MultiheadAttention exists, "
          "but SD-1.5 instantiates diffusers' Attention.",
     checks=RENAMED,
     route=Route(_route_names_printed,
                 how="the top-level class, def and assignment names read from the installed source "
                     "files of diffusers.models, torch.nn.modules, torch.nn.functional and torch's "
                     "C-function stubs, up to case and underscores",
                 atol=0.0, rtol=0.0, why="lists of names: equal"))
def _row_names_printed(seed=0, dtype=torch.float64):
    return len(missing_names())


# The footnotes' diffusers addresses, under src/diffusers/, and where diffusers 0.42.1 has them.
FOOTNOTE_PATHS = {
    "models/embeddings.py": "models/embeddings.py",                     # Def. 6.12
    "models/unet_2d_condition.py": "models/unets/unet_2d_condition.py",  # Def. 6.12
    "models/attn_processor.py": "models/attention_processor.py",        # Def. 6.14, (69)–(72)
    "models/resnet.py": "models/resnet.py",                             # Def. 6.15
    "models/unet_2d_blocks.py": "models/unets/unet_2d_blocks.py",       # Defs. 6.16–6.20
    "models/autoencoder_kl.py": "models/autoencoders/autoencoder_kl.py",  # Def. 8.3
}
DECODER_PATH = "models/autoencoders/vae.py"     # the Decoder that autoencoder_kl.py imports
IMPLEMENTED = ("sdanatomy.lecture.embeddings.timestep_embedding",
               "sdanatomy.lecture.attention.multihead_attention",
               "sdanatomy.lecture.blocks.resnet_block_2d", "sdanatomy.lecture.blocks.down_block_2d",
               "sdanatomy.lecture.unet.unet", "sdanatomy.lecture.vae_decoder.vae_decoder")


def _module_of(path: str) -> str:
    return "diffusers." + path.removesuffix(".py").replace("/", ".")


def missing_paths(paths) -> list[str]:
    """The paths under src/diffusers/ that name no module of the installed diffusers (find_spec)."""
    return [p for p in paths if importlib.util.find_spec(_module_of(p)) is None]


def _footnoted_classes() -> dict[str, tuple]:
    """Each corrected path and the SD-1.5 classes its footnote points to."""
    unet, vae = meta("unet"), meta("vae")
    return {
        "models/embeddings.py": (type(unet.time_embedding), Timesteps),
        "models/unets/unet_2d_condition.py": (type(unet),),
        "models/attention_processor.py": (
            type(unet.mid_block.attentions[0].transformer_blocks[0].attn2),
            type(unet.mid_block.attentions[0].transformer_blocks[0].attn2.processor)),
        "models/resnet.py": (type(unet.mid_block.resnets[0]),),
        "models/unets/unet_2d_blocks.py": tuple({type(b) for b in (*unet.down_blocks,
                                                                   unet.mid_block,
                                                                   *unet.up_blocks)}),
        "models/autoencoders/autoencoder_kl.py": (type(vae),),
        DECODER_PATH: (type(vae.decoder),),
    }


def _route_paths_printed(seed=0, dtype=torch.float64):
    root = Path(importlib.util.find_spec("diffusers").origin).parent
    return missing_paths(FOOTNOTE_PATHS), [p for p in FOOTNOTE_PATHS if not (root / p).is_file()]


PATHS = "§6 footnotes, corrected: diffusers 0.42.1's files"


@row(PATHS, section="6",
     formula=r"\texttt{models/unets/unet\_2d\_blocks.py},\ "
             r"\texttt{models/attention\_processor.py},\ \dots",
     reference="importlib.util.find_spec in the installed diffusers 0.42.1, and the __module__ of "
               "the classes SD-1.5's U-Net and VAE instantiate (meta device)",
     tol=0, why_tol=COUNTS,
     error="corrected paths (7) that are no module, plus footnoted classes of SD-1.5 defined "
           "elsewhere",
     checks=IMPLEMENTED)
def _row_paths(seed=0, dtype=torch.float64):
    classes = _footnoted_classes()
    return len(missing_paths(classes)) + sum(c.__module__ != _module_of(p)
                                             for p, cs in classes.items() for c in cs)


@row("§6 footnotes, as printed: diffusers' file paths", section="6",
     formula=r"\texttt{models/unet\_2d\_blocks.py},\ \texttt{models/attn\_processor.py},\ \dots",
     reference="importlib.util.find_spec in the installed diffusers 0.42.1",
     tol=0, why_tol=COUNTS, error=f"printed paths (of {len(FOOTNOTE_PATHS)}) that are no module",
     verdict="differs", corrected_by=PATHS,
     note="embeddings.py and resnet.py are where the footnotes say; unet_2d_condition.py and "
          "unet_2d_blocks.py moved to models/unets/, autoencoder_kl.py to models/autoencoders/ "
          "(and the Decoder it 'includes' is defined in models/autoencoders/vae.py); "
          "attn_processor.py is attention_processor.py.",
     checks=IMPLEMENTED,
     route=Route(_route_paths_printed,
                 how="the same paths as files under the installed diffusers package folder "
                     "(pathlib), not through the import system",
                 atol=0.0, rtol=0.0, why="lists of paths: equal"))
def _row_paths_printed(seed=0, dtype=torch.float64):
    return len(missing_paths(FOOTNOTE_PATHS))
