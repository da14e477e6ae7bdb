"""Chapter 8's figures of text to image (lecture §5, §5.1, §8) and its exercise's check.

Images come from ``sdanatomy.sd15.text_to_image`` in [0, 1]; every figure shows them on
that fixed scale (vmin 0, vmax 1), never stretched to their own range.
"""
from __future__ import annotations

from typing import Sequence

import torch
from matplotlib.figure import Figure

from sdanatomy.lecture.unet import unet
from sdanatomy.sd15.reference import NARROW_UNET_CONFIG, narrow_unet
from sdanatomy.sd15.text_to_image import image_grid
from sdanatomy.sd15.wiring import skip_wiring


def image_figure(image: torch.Tensor, *, size: float = 2.0) -> Figure:
    """One RGB image (3, H, W) in [0, 1], as it is: e.g. what §5's loop returns."""
    fig = Figure(figsize=(size, size), layout="constrained")
    ax = fig.subplots()
    ax.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy(), vmin=0, vmax=1)
    ax.axis("off")
    return fig


def grid_figure(images: torch.Tensor, *, rows: int, col_labels: Sequence[str],
                xlabel: str, ylabel: str, figsize=(7.0, 3.0)) -> Figure:
    """Grey images (N, 1, H, W) in [0, 1] as a grid of ``rows`` rows, ink dark (gray_r,
    fixed scale 0–1), one tick label under each column."""
    N, _, H, W = images.shape
    cols, pad = N // rows, 2
    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.subplots()
    ax.imshow(image_grid(images, rows=rows, pad=pad)[..., 0].numpy(), cmap="gray_r",
              vmin=0, vmax=1)
    if len(col_labels) != cols:
        raise ValueError(f"{cols} columns need {cols} labels; got {len(col_labels)}")
    ax.set_xticks([c * (W + pad) + (W - 1) / 2 for c in range(cols)], col_labels,
                  fontsize=8)
    ax.set_yticks([r * (H + pad) + (H - 1) / 2 for r in range(rows)],
                  [str(r + 1) for r in range(rows)], fontsize=8)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    return fig


def settling_figure(rows: list[dict], *, levels: Sequence[float] = (0.25, 0.1),
                    cutoff: float = 2.0) -> Figure:
    """The errors of ``text_to_image.settling`` against the step i, log scale: the
    coarse band (≤ ``cutoff`` cycles per image) and the fine band of decoded x̂₀
    (eq. x0hat) relative to the final image. Dotted: ``levels``; a dot where each band
    first falls below one (``steps_to_settle``)."""
    fig = Figure(figsize=(7.0, 3.2), layout="constrained")
    ax = fig.subplots()
    bands = (("low", f"coarse (≤ {cutoff:g} cycles per image)", "C0"),
             ("high", "fine (the rest)", "C1"))
    for band, label, colour in bands:
        pts = [(r["i"], r[band]) for r in rows if r[band] > 0]    # log scale: no zeros
        ax.plot(*zip(*pts), "-", color=colour, label=label)
        for level in levels:
            first = next((r for r in rows if r[band] < level), None)
            if first is not None:
                ax.plot(first["i"], first[band], "o", color=colour, ms=5)
                ax.annotate(str(first["i"]), (first["i"], first[band]), fontsize=8,
                            xytext=(3, 4), textcoords="offset points", color=colour)
    for level in levels:
        ax.axhline(level, color="gray", ls=":", lw=1)
    ax.set(yscale="log", xlabel="step i of the loop",
           ylabel="‖band(Dec(x̂₀) − final)‖ / ‖band(final)‖")
    ax.legend(fontsize=8)
    return fig


def unet_at(H: int, W: int, *, seed: int = 0) -> dict:
    """The chapter's exercise: a latent of H × W through diffusers' U-Net and the
    book's (Def. 8.1 as SD-1.5 computes it, (85)–(91)).

    "levels": the H × W of the skips of SD-1.5's U-Net at that size, made by the down
    path in order (observed on the meta device, sd15.wiring); "shape": ε̂'s shape, and
    "error": max |book − diffusers| / max |diffusers| on SD-1.5's configuration at
    narrow widths (32, 64, 64, 64), seeded Θ, float64.
    """
    levels = []
    for s in reversed(skip_wiring(H, W)):     # production order: conv_in first
        if s.shape[1:] not in levels:
            levels.append(s.shape[1:])
    u = narrow_unet(seed)
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(1, 4, H, W, generator=g, dtype=torch.float64)
    c = torch.randn(1, 77, 768, generator=g, dtype=torch.float64)
    with torch.no_grad():
        ref = u(z, 500, encoder_hidden_states=c).sample
    theta = {k: v.detach() for k, v in u.state_dict().items()}
    eps_hat = unet(theta, z, 500, c, config=NARROW_UNET_CONFIG)
    err = ((eps_hat - ref).abs().max() / ref.abs().max()).item()
    return {"levels": levels, "shape": tuple(eps_hat.shape), "error": err}
