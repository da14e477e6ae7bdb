"""Figures of chapter 5 (lecture §5): where SD-1.5's parameters are, and the sizes
through its U-Net.

* :func:`plot_parameters` — Θ per top-level block of the U-Net and of the VAE's decode
  path, the counts of :func:`sdanatomy.pages.architecture.parameter_counts`, coloured
  by the block's channel width read from the module;
* :func:`unet_stages` and :func:`plot_unet_sizes` — channels and H × W after each
  top-level block of the U-Net, measured with forward hooks on the meta device (§5.5,
  Remark 5.2).

Every function returns a ``matplotlib.figure.Figure`` (no pyplot, no global state).
"""
from __future__ import annotations

import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from sdanatomy.pages.architecture import CONTEXT, ParameterCounts, _meta
from sdanatomy.pages.architecture_sizes import attempt
from sdanatomy.sd15.reference import meta

STAGES = ("conv_in", "down_blocks.0", "down_blocks.1", "down_blocks.2", "down_blocks.3",
          "mid_block", "up_blocks.0", "up_blocks.1", "up_blocks.2", "up_blocks.3",
          "conv_out")
WIDTH_COLOURS = {128: "#c6dbef", 256: "#9ecae1", 320: "#c7e9c0", 512: "#4292c6",
                 640: "#74c476", 1280: "#00441b"}


def block_width(module: torch.nn.Module) -> int | None:
    """The channel width C a block works at: the output width of its first residual
    block's second convolution; None for blocks without residual blocks."""
    resnets = getattr(module, "resnets", None)
    return resnets[0].conv2.out_channels if resnets else None


def decode_path(counts: ParameterCounts) -> list:
    """The rows of a VAE count that ``AutoencoderKL.decode`` runs: post_quant_conv and
    the decoder (the encoder and quant_conv only turn images into latents)."""
    return [r for r in counts.rows
            if r.block == "post_quant_conv" or r.block.startswith("decoder.")]


def _bars(ax, rows, module, total: int, title: str) -> None:
    names = [r.block.removeprefix("decoder.") for r in rows][::-1]
    counts = [r.in_module / 1e6 for r in rows][::-1]
    widths = [block_width(module.get_submodule(r.block)) for r in rows][::-1]
    colours = [WIDTH_COLOURS.get(w, "0.6") for w in widths]
    ax.barh(names, counts, color=colours, edgecolor="0.3", linewidth=0.5)
    for y, (n, r) in enumerate(zip(counts, rows[::-1])):
        ax.text(n, y, f" {r.in_module / total:.1%}" if r.in_module else " 0",
                va="center", fontsize=8)
    ax.set_xlim(0, max(counts) * 1.22)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("parameters (millions)")
    ax.tick_params(labelsize=8)


def plot_parameters(unet_counts: ParameterCounts,
                    vae_counts: ParameterCounts) -> Figure:
    """§5, the parameter table as bars: Θ per top-level block of the U-Net and of the
    VAE's decode path (counted in diffusers' meta modules), the share of each in its
    network's total printed beside the bar, the colour the block's channel width."""
    unet, vae = meta("unet"), meta("vae")
    dec = decode_path(vae_counts)
    n_dec = sum(r.in_module for r in dec)
    fig = Figure(figsize=(7.2, 4.8), layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=[1.25, 1])
    _bars(left, unet_counts.rows, unet, unet_counts.total_module,
          f"U-Net\n{unet_counts.total_module:,} parameters")
    _bars(right, dec, vae, n_dec, f"VAE decode path\n{n_dec:,} parameters")
    used = sorted({block_width(m) for m in (*unet.down_blocks, *vae.decoder.up_blocks)})
    handles = [Patch(color=WIDTH_COLOURS[w], label=f"C = {w}") for w in used]
    handles.append(Patch(color="0.6", label="no residual block"))
    fig.legend(handles=handles, loc="outside lower center", ncols=4,
               fontsize=8, title="width of the block's residual blocks",
               title_fontsize=8)
    return fig


def unet_stages(H: int, W: int) -> list[tuple[str, tuple[int, int, int] | None]]:
    """[(stage, (C, H, W) of its output)] for a latent 1×4×H×W through SD-1.5's U-Net,
    measured with forward hooks on the meta device; a stage that never ran (the forward
    failed before it) has None. A down block's output is its first returned tensor."""
    unet = meta("unet")
    shapes: dict[str, tuple[int, int, int]] = {}

    def record(name):
        def hook(module, args, out):
            t = out[0] if isinstance(out, tuple) else out
            shapes[name] = tuple(t.shape[1:])
        return hook

    hooks = [unet.get_submodule(s).register_forward_hook(record(s)) for s in STAGES]
    try:
        z, t, c = _meta(1, 4, H, W), _meta(1, dtype=torch.int64), _meta(*CONTEXT)
        attempt(unet, lambda: unet(z, t, c).sample)
    finally:
        for h in hooks:
            h.remove()
    return [("latent", (4, H, W))] + [(s, shapes.get(s)) for s in STAGES]


def _short(stage: str) -> str:
    if stage == "latent":
        return "input"
    return (stage.replace("down_blocks.", "down ").replace("up_blocks.", "up ")
            .replace("mid_block", "mid").replace("_", " "))


def _draw_stages(ax, stages, slot: float) -> None:
    """One row of the size figure: each stage's map as a W × H rectangle to scale."""
    top = max(s[1] for _, s in stages if s)
    for k, (stage, shape) in enumerate(stages):
        xc = k * slot
        if shape is None:
            ax.text(xc, 0, "—", ha="center", va="center")
            continue
        C, H, W = shape
        ax.add_patch(Rectangle((xc - W / 2, -H / 2), W, H, edgecolor="0.2", lw=0.6,
                               facecolor=WIDTH_COLOURS.get(C, "0.75")))
        ax.text(xc, top / 2 + 4, str(C), ha="center", va="bottom", fontsize=8)
        ax.text(xc, -top / 2 - 4, f"{H}×{W}", ha="center", va="top", fontsize=8)


def plot_unet_sizes(sizes=((64, 64), (96, 64))) -> Figure:
    """§5.5 and Remark 5.2: for each latent 4×H×W (one row each), the map after every
    top-level block of SD-1.5's U-Net drawn to scale, W wide and H tall, labelled with
    its channels C above and H×W below; measured by :func:`unet_stages`. The channels
    are the same in every row; H and W halve on the way down and come back up."""
    runs = [((H, W), unet_stages(H, W)) for H, W in sizes]
    top = max(s[1] for _, st in runs for _, s in st if s)
    slot = max(s[2] for _, st in runs for _, s in st if s) + 28
    names = [_short(s) for s, _ in runs[0][1]]
    fig = Figure(figsize=(7.2, 0.7 + 0.9 * len(runs) * (top + 40) / 136),
                 layout="constrained")
    axes = fig.subplots(len(runs), 1, squeeze=False)[:, 0]
    for ax, ((H, W), stages) in zip(axes, runs):
        _draw_stages(ax, stages, slot)
        ax.set_xlim(-slot / 2, slot * (len(stages) - 0.5))
        ax.set_ylim(-top / 2 - 20, top / 2 + 20)
        ax.set_aspect("equal")
        ax.set_yticks([])
        ax.set_ylabel(f"latent\n4×{H}×{W}", fontsize=9, rotation=0, ha="right",
                      va="center")
        ax.set_xticks([k * slot for k in range(len(names))], labels=[])
        ax.tick_params(length=0)
        for side in ("top", "right", "left", "bottom"):
            ax.spines[side].set_visible(False)
    axes[-1].set_xticks([k * slot for k in range(len(names))], labels=names,
                        fontsize=8)
    axes[-1].set_xlabel("output of …", fontsize=9)
    fig.suptitle("each map to scale: its channels C above it, H × W below",
                 fontsize=9)
    return fig
