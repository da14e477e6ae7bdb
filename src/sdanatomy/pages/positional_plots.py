"""Chapter 6's figures of the positional miniature: generated pairs with their prompts,
and for one of them each digit word's cross-attention weight at every latent pixel.

Returns a :class:`matplotlib.figure.Figure` (no pyplot, no global state).
"""
from __future__ import annotations

import torch
from matplotlib.colors import Normalize, TwoSlopeNorm
from matplotlib.figure import Figure


def word_maps_figure(image: torch.Tensor, words: list[str], maps: torch.Tensor,
                     *, uniform: float | None = None) -> Figure:
    """The image (1, H, 2W) and one map (h, 2w) per word, drawn over the image's extent.

    ``maps`` (K, h, w2) are the words' weights π at each latent pixel, on one colour
    scale for all. With ``uniform`` (e.g. 1/M) the scale runs from 0 to
    max(2·uniform, the largest weight) and is white at the uniform level, as chapter 6's
    first maps; without, it runs from 0 to the largest weight. A dashed line splits each
    panel into its two halves.
    """
    if image.dim() != 3 or image.shape[0] != 1:
        raise ValueError(f"image must be (1, H, W); got {tuple(image.shape)}")
    if maps.dim() != 3 or len(words) != maps.shape[0]:
        raise ValueError(f"one (h, w) map per word: {len(words)} words, maps "
                         f"{tuple(maps.shape)}")
    H, W = image.shape[1:]
    extent = (0, W, H, 0)
    top = float(maps.max())
    if uniform is None:
        norm, cmap = Normalize(vmin=0.0, vmax=top), "magma"
    else:
        top = max(top, 2 * uniform)
        norm, cmap = TwoSlopeNorm(uniform, vmin=0.0, vmax=top), "RdBu_r"
    fig = Figure(figsize=(2.6 * (len(words) + 1) + 0.8, 2.2), layout="constrained")
    axes = fig.subplots(1, len(words) + 1)
    axes[0].imshow(image[0].numpy(), cmap="gray_r", vmin=-1, vmax=1, extent=extent)
    axes[0].set_title("generated image", fontsize=9)
    for ax, word, m in zip(axes[1:], words, maps):
        im = ax.imshow(m.numpy(), cmap=cmap, norm=norm, extent=extent,
                       interpolation="nearest")
        ax.set_title(f"π of “{word}”", fontsize=9)
    for ax in axes:
        ax.axvline(W / 2, color="tab:cyan", ls="--", lw=1)
        ax.set_xticks([])
        ax.set_yticks([])
    bar = fig.colorbar(im, ax=axes.tolist(), fraction=0.03, pad=0.02)
    if uniform is not None:
        bar.set_ticks([0.0, uniform, top],
                      labels=["0", f"{uniform:.3f} (uniform)", f"{top:.2f}"])
    bar.ax.tick_params(labelsize=8)
    bar.set_label("π", fontsize=9)
    return fig


def samples_figure(images: torch.Tensor, titles: list[str], *,
                   columns: int = 4) -> Figure:
    """Generated images (B, 1, H, W) in [−1, 1] on a grid, each titled (e.g. its prompt
    and the judge's reading of each half), a dashed line between the halves."""
    if images.dim() != 4 or images.shape[1] != 1 or len(titles) != len(images):
        raise ValueError(f"one title per image (B, 1, H, W): {len(titles)} titles, "
                         f"images {tuple(images.shape)}")
    rows = -(-len(images) // columns)
    fig = Figure(figsize=(2.3 * columns, 1.55 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    W = images.shape[-1]
    for ax, img, title in zip(axes, images, titles):
        ax.imshow(img[0].numpy(), cmap="gray_r", vmin=-1, vmax=1)
        ax.axvline(W / 2 - 0.5, color="tab:cyan", ls="--", lw=0.8)
        ax.set_title(title, fontsize=8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[len(images):]:
        ax.set_visible(False)
    return fig
