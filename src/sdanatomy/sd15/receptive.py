"""Receptive fields of the real SD-1.5 U-Net, lecture §7: switching attention and GroupNorm
statistics off, SD-1.5's per-level conv counts, the measurement of the full model, and plots.

The formulas and the measurement by autograd are in :mod:`sdanatomy.lecture.receptive`.
"""
from __future__ import annotations

import contextlib
import math
import time
from typing import Callable, Sequence

import torch
from torch import nn


from sdanatomy.lecture.config import UNET_CONFIG
from sdanatomy.sd15 import build_unet
from sdanatomy.lecture.receptive import (R_pure, pure_layers_needed, R_unet, R_unet_uniform, unet_levels_needed, _sd15_levels,
    measure_receptive_field)
from sdanatomy.sd15.reference import Transformer2DModelOutput, Transformer2DModel


# ================================================================ SD-1.5: switching parts off


@contextlib.contextmanager
def without_attention(unet: nn.Module):
    """Replace every Transformer2DModel of ``unet`` by the identity while inside the block.

    A Transformer2DModel (self-attention, cross-attention, feed-forward) is residual: it returns
    proj_out(…) + its input. The identity keeps the residual path and removes the branch, which
    is where every pixel meets every other (self-attention) and the text (cross-attention).
    """

    def identity(hidden_states, *args, return_dict=True, **kwargs):
        return Transformer2DModelOutput(sample=hidden_states) if return_dict else (hidden_states,)

    patched = [m for m in unet.modules() if isinstance(m, Transformer2DModel)]
    for m in patched:
        m.forward = identity
    try:
        yield len(patched)
    finally:
        for m in patched:
            del m.forward   # back to the class's forward


def group_norm_frozen_stats(X: torch.Tensor, *, groups: int, weight, bias, eps: float) -> torch.Tensor:
    """GroupNorm (18)–(19) with μ_g and σ_g² computed on a detached copy of X.

    Same value as GroupNorm at this X; but the statistics count as constants, so ∂Y/∂X is
    pointwise (γ_c/√(σ²+ε) on the diagonal): no pixel reaches another through μ_g, σ_g.
    (B, C, H, W) -> (B, C, H, W)
    """
    B, C = X.shape[:2]
    Xd = X.detach().reshape(B, groups, -1)                 # (B, G, C/G·H·W)
    mu = Xd.mean(-1)                                       # (18)
    var = Xd.var(-1, unbiased=False)                       # (18)
    Xg = X.reshape(B, groups, -1)
    Y = ((Xg - mu[..., None]) / torch.sqrt(var[..., None] + eps)).reshape(X.shape)   # (19)
    shape = (1, C) + (1,) * (X.dim() - 2)
    return Y * weight.reshape(shape) + bias.reshape(shape)


@contextlib.contextmanager
def frozen_groupnorm(module: nn.Module):
    """Inside the block, every nn.GroupNorm of ``module`` uses :func:`group_norm_frozen_stats`."""
    patched = [m for m in module.modules() if isinstance(m, nn.GroupNorm)]
    for m in patched:
        m.forward = (lambda gn: lambda X: group_norm_frozen_stats(
            X, groups=gn.num_groups, weight=gn.weight, bias=gn.bias, eps=gn.eps))(m)
    try:
        yield len(patched)
    finally:
        for m in patched:
            del m.forward


# SD-1.5's U-Net with every width cut down: the same blocks, kernels, strides, paddings, skips and
# level counts, so the same dependency graph, for a thousandth of the cost. (diffusers reads
# attention_head_dim as the number of heads: one head here.)
SD15_SLIM_CONFIG = {"block_out_channels": (8, 8, 8, 8), "norm_num_groups": 4,
                    "cross_attention_dim": 8, "attention_head_dim": 1}


def build_sd15_slim(*, seed: int = 0, dtype=torch.float64) -> nn.Module:
    """SD-1.5's UNet2DConditionModel, every width 8: same spatial graph as the real one."""
    return build_unet(dict(UNET_CONFIG, **SD15_SLIM_CONFIG), seed=seed, dtype=dtype, device="cpu")


def sd15_level_counts(config=None, *, path: str = "unet") -> tuple[int, ...]:
    """n_ℓ for SD-1.5: the 3×3 stride-1 convs at level ℓ on the deepest path through the network.

    path="down": conv_in, then 2 per ResnetBlock2D of each down block — (5, 4, 4, 4);
    path="unet": also the mid block (2 resnets), the up blocks (layers_per_block + 1 resnets each),
    the 3×3 conv of each Upsample2D (it runs at the finer level) and conv_out — (13, 11, 11, 14).
    """
    levels, lpb = _sd15_levels(UNET_CONFIG if config is None else config)
    n = [2 * lpb] * levels                       # down blocks
    n[0] += 1                                    # conv_in
    if path == "down":
        return tuple(n)
    if path != "unet":
        raise ValueError(f"path must be 'down' or 'unet'; got {path!r}")
    n[-1] += 2 * 2                               # mid block: two ResnetBlock2D
    for ell in range(levels):
        n[ell] += 2 * (lpb + 1)                  # up block at level ℓ
        if ell < levels - 1:
            n[ell] += 1                          # the Upsample2D from level ℓ+1 lands here
    n[0] += 1                                    # conv_out (3×3 in SD-1.5)
    return tuple(n)


def sd15_accounting(config=None) -> list[tuple[str, int]]:
    """SD-1.5's conv-path R, term by term: what (81) counts, then what it leaves out.

    Returns [(what, pixels added)], starting from (81) on the down path. Each 3×3 conv at
    level ℓ adds 2·2^ℓ; each term names where in UNet2DConditionModel those convs are.
    """
    levels, lpb = _sd15_levels(UNET_CONFIG if config is None else config)
    L = levels - 1
    down = sd15_level_counts(config, path="down")
    return [
        (f"(81), down path: conv_in + 2 convs per ResnetBlock2D, n = {down}", R_unet(down)),
        (f"the {L} Downsample2D, 3×3 stride 2: (k↓−1)·2^ℓ each", 2 * (2 ** L - 1)),
        ("mid block: 2 ResnetBlock2D at the coarsest level", 2 * 4 * 2 ** L),
        (f"up blocks: {lpb + 1} ResnetBlock2D per level", 2 * 2 * (lpb + 1) * (2 ** levels - 1)),
        (f"the {L} Upsample2D's 3×3 conv, at the finer level", 2 * (2 ** L - 1)),
        ("conv_out, 3×3 (the lecture's (90) has a 1×1 here)", 2),
        ("ResnetBlock2D shortcut (identity or 1×1), skip connections", 0),
        ("attention removed, GroupNorm frozen; t and the text have no pixel index", 0),
    ]


def sd15_down_path(unet: nn.Module, *, t: int = 500, seed: int = 0) -> Callable[[torch.Tensor], torch.Tensor]:
    """z ↦ the output of SD-1.5's last down block (the mid block's input): conv_in, then (86)."""
    p = next(unet.parameters())
    g = torch.Generator().manual_seed(seed)
    context = torch.randn(1, 77, unet.config.cross_attention_dim, generator=g, dtype=p.dtype).to(p.device)
    timestep = torch.tensor([t], device=p.device)

    def down(z):
        B = z.shape[0]
        emb = unet.time_embedding(unet.get_time_embed(sample=z, timestep=timestep.expand(B)))
        h = unet.conv_in(z)                                          # (B, 4, H, W) -> (B, 320, H, W)
        for block in unet.down_blocks:                               # (86), ℓ = 1, …, L
            if getattr(block, "has_cross_attention", False):
                h, _ = block(h, temb=emb, encoder_hidden_states=context.expand(B, -1, -1))
            else:
                h, _ = block(h, temb=emb)
        return h                                                     # (B, C, H/8, W/8)
    return down


def sd15_function(unet: nn.Module, *, t: int = 500, seed: int = 0) -> Callable[[torch.Tensor], torch.Tensor]:
    """z ↦ ε_θ(z, t, c) for a fixed timestep t and a fixed random text context c (77 × d_ctx)."""
    p = next(unet.parameters())
    g = torch.Generator().manual_seed(seed)
    context = torch.randn(1, 77, unet.config.cross_attention_dim, generator=g, dtype=p.dtype).to(p.device)
    timestep = torch.tensor([t], device=p.device)
    return lambda z: unet(z, timestep.expand(z.shape[0]), context.expand(z.shape[0], -1, -1)).sample


def measure_sd15(unet: nn.Module, latent_shape=(4, 64, 64), outputs=None, *, attention: bool = True,
                 groupnorm: str = "live", probes: int = 1, seed: int = 0, batched: bool = False,
                 path: str = "unet"):
    """Receptive fields of SD-1.5's ε_θ at ``outputs``, attention on or off, GroupNorm live or frozen.

    path="unet": the whole ε_θ(z, t, c); path="down": up to the last down block (:func:`sd15_down_path`).
    Returns (fields, seconds). Runs in the U-Net's own dtype (float32 for the full-size one).
    """
    if path not in ("unet", "down"):
        raise ValueError(f"path must be 'unet' or 'down'; got {path!r}")
    if groupnorm not in ("live", "frozen"):
        raise ValueError(f"groupnorm must be 'live' (as SD-1.5 runs) or 'frozen' (statistics held "
                         f"constant); got {groupnorm!r}")
    dtype = next(unet.parameters()).dtype
    f = (sd15_function if path == "unet" else sd15_down_path)(unet, seed=seed)
    with contextlib.ExitStack() as stack:
        if not attention:
            stack.enter_context(without_attention(unet))
        if groupnorm == "frozen":
            stack.enter_context(frozen_groupnorm(unet))
        start = time.perf_counter()
        fields = measure_receptive_field(f, latent_shape, outputs, probes=probes, seed=seed, dtype=dtype,
                                         device=next(unet.parameters()).device, batched=batched)
        seconds = time.perf_counter() - start
    return fields, seconds


# ================================================================ plots


def plot_growth(*, W: int = 64, ns: Sequence[int] = (1, 2, 4), max_L: int = 8, measured=None,
                figsize: tuple[float, float] = (7.2, 3.9)):
    """R against depth (left) and the depth needed to reach a width W (right), log scales.

    Left: R_pure (79) and R_unet (82) for n convs per level, against the number of 3×3 convs on
    the path (L for a pure CNN, n(L + 1) for a U-Net with L downsamplings); ``measured`` adds points
    {label: [(convs, R), ...]}. The width W of SD-1.5's latent is marked on both panels.
    """
    from matplotlib.figure import Figure   # not pyplot: the caller decides where it is shown

    fig = Figure(figsize=figsize, layout="constrained")
    a, b = fig.subplots(1, 2)
    D = range(1, max(ns) * (max_L + 1) + 1)
    a.plot(D, [R_pure(L) for L in D], "k-", label="pure CNN, (79)")
    for n in ns:
        a.plot([n * (L + 1) for L in range(max_L + 1)], [R_unet_uniform(L, n) for L in range(max_L + 1)],
               "o-", ms=4, label=f"U-Net, n = {n}, (82)")
    for label, pts in (measured or {}).items():
        a.plot(*zip(*pts), "x", ms=8, mew=2, label=label)
    a.axhline(W, color="gray", ls="--")
    a.text(D[-1], W * 1.15, f"W = {W} (SD-1.5 latent)", ha="right", color="gray")
    a.set(yscale="log", xlabel="3×3 convs on the path", ylabel="receptive field R (pixels)",
          title="R grows linearly in a pure CNN,\nexponentially across levels")
    a.legend(fontsize=7, loc="lower right")
    Ws = [2 ** e for e in range(1, 13)]
    b.plot(Ws, [pure_layers_needed(w) for w in Ws], "k-", label="pure CNN: ⌈(W−1)/2⌉ convs, (80)")
    for n in ns:
        b.plot(Ws, [n * (unet_levels_needed(w, n) + 1) for w in Ws], "o-", ms=4,
               label=f"U-Net, n = {n}: n(L+1) convs, L from (83)")
    b.axvline(W, color="gray", ls="--")
    b.set(xscale="log", yscale="log", xlabel="image width W", ylabel="3×3 convs needed for R ≥ W",
          title="O(W) against O(log W)")
    b.legend(fontsize=7)
    return fig


def plot_fields(panels: dict, *, log_magnitude: bool = False, ncols: int | None = None,
                panel_size: tuple[float, float] = (3.8, 3.2)):
    """Dependency masks (or log₁₀ of the gradient magnitudes) of measured fields, one panel each.

    panels: {title: ReceptiveField}. The output pixel's anchor is marked with a red cross.
    """
    from matplotlib.figure import Figure

    ncols = ncols or len(panels)
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(panel_size[0] * ncols, panel_size[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, (title, field) in zip(axes.flat, panels.items()):
        H, W = field.mask.shape
        aspect = "equal" if max(H, W) <= 4 * min(H, W) else "auto"    # squares square, strips stretched
        if log_magnitude:
            m = field.magnitude.double()
            img = torch.where(m > 0, m.clamp_min(1e-300).log10(), torch.full_like(m, float("nan")))
            im = ax.imshow(img.numpy(), cmap="viridis", interpolation="nearest", aspect=aspect)
            fig.colorbar(im, ax=ax, fraction=0.046, label="log₁₀ |∂s/∂X|")
        else:
            ax.imshow(field.mask.numpy(), cmap="Blues", vmin=0, vmax=1.3, interpolation="nearest",
                      aspect=aspect)
        ax.plot(field.anchor[1], field.anchor[0], "r+", ms=10, mew=2)
        h, w = field.size
        ax.set_title(f"{title}\n{h}×{w}, {field.pixels} pixels", fontsize=9)
        ax.set_xlabel("input column")
        ax.set_ylabel("input row")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    return fig

