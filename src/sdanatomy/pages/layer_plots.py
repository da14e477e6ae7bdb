"""Chapter 4's figures of single layers (§6.1, §6.3, §6.4), computed by the package.

* :func:`conv_window_figure`: the sliding window of Conv2d, Def. 6.1, eq. (14), on a
  one-channel image with a k×k kernel of ones. The numbers in the output grid are
  ``layers.conv2d_literal``'s; the shaded input pixels of each window are *measured*
  (∂Y_ij/∂X_rq ≠ 0, by autograd through the literal sum), and the window's frame is the
  padded range of the output-size proposition: (i−1)s + 1, …, (i−1)s + k.
* :func:`group_norm_figure`: GroupNorm, Def. 6.5, eqs. (18)–(19): the channels
  coloured by group, each group's mean ± standard deviation before and after,
  ``layers.group_norm`` beside ``torch.nn.functional.group_norm``.
* :func:`activation_figure`: SiLU (16) against ReLU, with both derivatives by autograd.

Every function returns a ``matplotlib.figure.Figure`` built without pyplot.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from sdanatomy.lecture import layers

COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728",
           "#9467bd", "#8c564b", "#e377c2", "#17becf")
PAD_GREY = (0.86, 0.86, 0.86)


def _tint(colour, amount: float = 0.3) -> tuple[float, float, float]:
    """``colour`` mixed with white: ``amount`` of the colour."""
    return tuple(1 - amount * (1 - c) for c in to_rgb(colour))


# --- §6.1 the sliding window of Conv2d (14) ----------------------------------------

@dataclass(frozen=True)
class ConvWindows:
    """A box-kernel Conv2d on a one-channel X (H, W), computed by (14) literally."""
    X: torch.Tensor        # (H, W)
    Y: torch.Tensor        # (H', W'): conv2d_literal with the k×k kernel of ones
    reads: torch.Tensor    # (H', W', H, W) bool: ∂Y_ij/∂X_rq ≠ 0, by autograd
    k: int
    stride: int
    padding: int


def conv_windows(X: torch.Tensor, *, k: int = 3, stride: int = 2,
                 padding: int = 1) -> ConvWindows:
    """Y = Conv2d^(k,k; s,s; p,p)(X), box kernel, eq. (14), and the pixels it reads.

    X: (H, W), one channel. Y and its Jacobian both come from ``layers.conv2d_literal``.
    """
    X = X.detach().to(torch.float64)
    box = {"weight": torch.ones(1, 1, k, k, dtype=X.dtype),
           "bias": torch.zeros(1, dtype=X.dtype)}

    def conv(Z):                                       # (H, W) -> (H', W')
        return layers.conv2d_literal(box, Z[None], stride=stride, padding=padding)[0]

    Y = conv(X)
    J = torch.autograd.functional.jacobian(conv, X)    # (H', W', H, W)
    return ConvWindows(X, Y, J != 0, k, stride, padding)


def _default_positions(H_out: int, W_out: int) -> list[tuple[int, int]]:
    """Outputs (1,1), (1,2), (2,1) and the last (1-based): those that exist, once."""
    wanted = [(1, 1), (1, 2), (2, 1), (H_out, W_out)]
    valid = [(i, j) for i, j in wanted if i <= H_out and j <= W_out]
    return list(dict.fromkeys(valid))


def _draw_padded_input(ax, cw: ConvWindows, i: int, j: int, colour) -> None:
    """The padded input, the pixels output (i, j) reads tinted, its window framed."""
    X, p, k, s = cw.X, cw.padding, cw.k, cw.stride
    H, W = X.shape
    image = np.full((H + 2 * p, W + 2 * p, 3), PAD_GREY)    # the padding: grey
    image[p:p + H, p:p + W] = 1.0                              # the input: white
    image[p:p + H, p:p + W][cw.reads[i - 1, j - 1].numpy()] = _tint(colour)
    ax.imshow(image, interpolation="nearest")
    for a in range(H + 2 * p):
        for b in range(W + 2 * p):
            inside = p <= a < p + H and p <= b < p + W
            text = f"{X[a - p, b - p].item():g}" if inside else "0"
            ax.text(b, a, text, ha="center", va="center", fontsize=8,
                    color="black" if inside else "0.55")
    # the window of output i, in padded positions (i−1)s + 1, …, (i−1)s + k (1-based)
    top, left = (i - 1) * s, (j - 1) * s
    ax.add_patch(Rectangle((left - 0.5, top - 0.5), k, k, fill=False,
                           edgecolor=colour, linewidth=2.2))
    ax.add_patch(Rectangle((p - 0.5, p - 0.5), W, H, fill=False,
                           edgecolor="black", linewidth=0.8, linestyle=":"))
    ax.set_title(f"$Y_{{{i},{j}}}$ = {cw.Y[i - 1, j - 1].item():g}", fontsize=10,
                 color=colour)


def _draw_output(ax, cw: ConvWindows, positions, colours) -> None:
    """The output grid Y with its numbers; the drawn positions in their colours."""
    H_out, W_out = cw.Y.shape
    image = np.ones((H_out, W_out, 3))
    for (i, j), colour in zip(positions, colours):
        image[i - 1, j - 1] = _tint(colour)
    ax.imshow(image, interpolation="nearest")
    for a in range(H_out):
        for b in range(W_out):
            ax.text(b, a, f"{cw.Y[a, b].item():g}", ha="center", va="center",
                    fontsize=11)
    for (i, j), colour in zip(positions, colours):
        ax.add_patch(Rectangle((j - 1.5, i - 1.5), 1, 1, fill=False,
                               edgecolor=colour, linewidth=2.2))


def _grid_axes(ax, rows: int, cols: int) -> None:
    ax.set_xticks(np.arange(-0.5, cols), minor=True)
    ax.set_yticks(np.arange(-0.5, rows), minor=True)
    ax.grid(which="minor", color="0.6", linewidth=0.5)
    ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)


def conv_window_figure(X: torch.Tensor, *, k: int = 3, stride: int = 2,
                       padding: int = 1, positions=None) -> Figure:
    """Conv2d's window (Def. 6.1, eq. (14)) at a few outputs, and the output grid.

    X: (H, W), one channel; the kernel is k×k ones, so each output is the sum of the
    pixels its window covers. positions: 1-based outputs (i, j) to draw, two a row; by
    default (1,1), (1,2), (2,1) and the last. The output panel on the right states the
    size of Def. 6.1, H' = ⌊(H − k + 2p)/s⌋ + 1.
    """
    cw = conv_windows(X, k=k, stride=stride, padding=padding)
    H, W = cw.X.shape
    H_out, W_out = cw.Y.shape
    if (H_out, W_out) != (layers.conv_output_size(H, k, stride, padding),
                          layers.conv_output_size(W, k, stride, padding)):
        raise AssertionError("conv2d_literal's size differs from Def. 6.1's formula")
    positions = list(positions or _default_positions(H_out, W_out))
    colours = [COLOURS[n % len(COLOURS)] for n in range(len(positions))]
    n = len(positions)
    cols, rows = min(2, n), (n + 1) // 2
    mosaic = [[f"w{r * 2 + c}" if r * 2 + c < n else "." for c in range(cols)] + ["Y"]
              for r in range(rows)]
    fig = Figure(figsize=(2.0 * cols + 2.8, 2.1 * rows + 0.45), layout="constrained")
    axd = fig.subplot_mosaic(mosaic, width_ratios=[1] * cols + [1.35])
    for m, ((i, j), colour) in enumerate(zip(positions, colours)):
        _draw_padded_input(axd[f"w{m}"], cw, i, j, colour)
        _grid_axes(axd[f"w{m}"], H + 2 * padding, W + 2 * padding)
    _draw_output(axd["Y"], cw, positions, colours)
    _grid_axes(axd["Y"], H_out, W_out)
    size = f"H′ = ⌊({H} − {k} + 2·{padding})/{stride}⌋ + 1 = {H_out}"     # Def. 6.1
    if W != H:
        size += f"\nW′ = ⌊({W} − {k} + 2·{padding})/{stride}⌋ + 1 = {W_out}"
    axd["Y"].set_title(f"output Y, {H_out}×{W_out}\n{size}", fontsize=10)
    fig.suptitle(f"{H}×{W} input with padding p = {padding} (grey zeros),"
                 + ("\n" if cols < 2 else " ")                 # one window: narrow
                 + f"{k}×{k} kernel of ones, stride s = {stride}", fontsize=10)
    return fig


# --- §6.4 GroupNorm (18)–(19) ------------------------------------------------------

def group_stats(X: torch.Tensor, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(18): μ_g and σ_g (biased) of each group of contiguous channels. X: (C, H, W)."""
    Xg = X.reshape(groups, -1)                          # (G, |S_g|)
    return Xg.mean(-1), Xg.var(-1, unbiased=False).sqrt()


def _fixed(values, width: int, digits: int) -> str:
    """Numbers in fixed width; a rounded −0.0 is written 0.0 (its sign is round-off)."""
    rounded = np.round(np.asarray(values, dtype=np.float64), digits) + 0.0
    return "".join(f"{v:{width}.{digits}f}" for v in rounded)


def group_stats_text(named: dict, groups: int, digits: int = 3) -> str:
    """μ_g and σ_g of (18) for each named (C, H, W) tensor, as a small table."""
    lines = [" " * 20 + "".join(f"{f'g = {g + 1}':>8}" for g in range(groups))]
    for name, Z in named.items():
        mu, sd = group_stats(Z, groups)
        lines.append(f"{name:16} μ_g" + _fixed(mu, 8, digits))
        lines.append(f"{'':16} σ_g" + _fixed(sd, 8, digits))
    return "\n".join(lines)


def channel_means_text(Y: torch.Tensor, digits: int = 2) -> str:
    """The mean of each channel of Y: (C, H, W), c = 1, …, C."""
    return _fixed(Y.mean((1, 2)), digits + 5, digits)


def _draw_groups(ax, X, groups, title, reference=None) -> None:
    """Each channel's values as a column of dots, the group's μ_g ± σ_g as a band."""
    C = X.shape[0]
    per = C // groups
    values = X.reshape(C, -1).numpy()
    jitter = np.linspace(-0.22, 0.22, values.shape[1])
    mu, sd = (t.numpy() for t in group_stats(X, groups))
    for g in range(groups):
        colour = COLOURS[g % len(COLOURS)]
        lo, hi = g * per + 1 - 0.42, (g + 1) * per + 0.42     # channels, 1-based
        ax.axvspan(lo, hi, color=_tint(colour, 0.12), lw=0)
        ax.fill_between([lo, hi], mu[g] - sd[g], mu[g] + sd[g], color=colour,
                        alpha=0.18, lw=0)
        ax.plot([lo, hi], [mu[g], mu[g]], color=colour, lw=2)
        for c in range(g * per, (g + 1) * per):
            ax.scatter(c + 1 + jitter, values[c], s=6, color=colour, alpha=0.8)
    if reference is not None:                   # torch's μ_g ± σ_g, one bar a group
        mu_ref, sd_ref = (t.numpy() for t in group_stats(reference, groups))
        centres = [(g + 0.5) * per + 0.5 for g in range(groups)]
        ax.errorbar(centres, mu_ref, yerr=sd_ref, fmt="x", color="black", capsize=4,
                    ms=7, label="F.group_norm: μ_g ± σ_g")
        ax.legend(loc="upper left", fontsize=8, framealpha=0.9)
        top = max(float(values.max()), float((mu_ref + sd_ref).max()))
        ax.set_ylim(top=top + 0.3 * (top - float(values.min())))   # room for the legend
    ax.set_xticks(range(1, C + 1))
    ax.set_xlim(0.5, C + 0.5)
    ax.set_xlabel("channel c (background: its group g(c))")
    ax.set_title(title, fontsize=10)


def group_norm_figure(X: torch.Tensor, *, groups: int = 4,
                      eps: float = layers.EPS_UNET) -> Figure:
    """GroupNorm, Def. 6.5, eqs. (18)–(19), with γ = 1, β = 0, on X: (C, H, W).

    Left: X, channels coloured by group, each group's μ_g ± σ_g of (18) as a line and a
    band. Right: ``layers.group_norm``'s output drawn the same way, and the group
    statistics of ``torch.nn.functional.group_norm``'s output as black bars.
    """
    C = X.shape[0]
    theta = {"weight": torch.ones(C, dtype=X.dtype),
             "bias": torch.zeros(C, dtype=X.dtype)}
    Y = layers.group_norm(theta, X, groups=groups, eps=eps)
    Y_ref = F.group_norm(X[None], groups, eps=eps)[0]
    fig = Figure(figsize=(7.6, 3.4))
    before, after = fig.subplots(1, 2)
    _draw_groups(before, X, groups,
                 f"before: X, C = {C} channels in G = {groups} groups")
    _draw_groups(after, Y, groups, f"after: GroupNorm (19), γ = 1, β = 0, ε = {eps:g}",
                 reference=Y_ref)
    before.set_ylabel("value $X_{c,i,j}$ (all $H W$ pixels)")
    fig.tight_layout()
    return fig


# --- §6.3 SiLU (16) and ReLU --------------------------------------------------------

def activation_curves(u: torch.Tensor) -> dict[str, torch.Tensor]:
    """SiLU (16) and ReLU at u, and their derivatives by autograd (float64)."""
    u = u.detach().to(torch.float64).requires_grad_(True)
    out = {}
    for name, f in (("SiLU", layers.silu), ("ReLU", torch.relu)):
        y = f(u)
        (dy,) = torch.autograd.grad(y.sum(), u)          # componentwise: d f(u_n)/d u_n
        out[name], out[f"{name}'"] = y.detach(), dy
    return out


def activation_figure(u: torch.Tensor | None = None) -> Figure:
    """SiLU (16) against ReLU on one axes: functions solid, derivatives dashed."""
    u = torch.linspace(-5, 5, 1001, dtype=torch.float64) if u is None else u
    curves = activation_curves(u)
    fig = Figure(figsize=(7, 3.6))
    ax = fig.subplots()
    for name, colour in (("SiLU", COLOURS[0]), ("ReLU", COLOURS[1])):
        ax.plot(u, curves[name], color=colour, lw=2, label=name)
        ax.plot(u, curves[f"{name}'"], color=colour, lw=1.5, ls="--",
                label=f"{name}′ (autograd)")
    n = int(curves["SiLU"].argmin())
    ax.plot([u[n]], [curves["SiLU"][n]], "o", color=COLOURS[0], ms=5)
    ax.annotate(f"minimum {curves['SiLU'][n]:.3f} at u = {u[n]:.2f}",
                (float(u[n]), float(curves["SiLU"][n])), xytext=(-4.9, -0.75),
                fontsize=8, arrowprops={"arrowstyle": "-", "color": "0.4"})
    ax.axhline(0, color="0.6", lw=0.6)
    ax.axvline(0, color="0.6", lw=0.6)
    ax.set_xlabel("u")
    ax.set_ylim(-1, 3)
    ax.legend(loc="upper left", fontsize=9)
    fig.tight_layout()
    return fig
