"""Figures of chapter 2 (lecture §2 and Def. 6.11): the token order of flatten, and the
shape alphabet on real data.

* :func:`flatten_rows` and :func:`plot_flatten_order` — where each element X_{c,i,j}
  lands in flatten_{(H,W)}(X), eq. (25), measured with ``flatten_literal``;
* :func:`digit_and_latent` and :func:`plot_shape_alphabet` — a digit, its latent from
  the miniature VAE, and the latent's tokens, each titled with its shape.

Every function returns a ``matplotlib.figure.Figure`` (no pyplot, no global state).
"""
from __future__ import annotations

import torch
from matplotlib.figure import Figure

from sdanatomy import miniature
from sdanatomy.lecture import notation
from sdanatomy.miniature import digits


def flatten_rows(C: int, H: int, W: int) -> torch.Tensor:
    """(C, H, W) integer tensor: entry (c, i, j) is the 1-based row n of
    flatten_{(H,W)}(X), eq. (25), that X_{c,i,j} is written to.

    Measured, not computed from (i − 1)W + j: ``flatten_literal`` flattens a tensor of
    distinct values 0, …, CHW − 1, and each value is looked up in the result.
    """
    X = torch.arange(C * H * W).reshape(C, H, W)        # X_{c,i,j}: distinct values
    Y = notation.flatten_literal(X)                     # (HW, C), (25)
    rows = torch.empty(C * H * W, dtype=torch.long)
    rows[Y.flatten()] = torch.arange(1, H * W + 1).repeat_interleave(C)
    return rows.reshape(C, H, W)                        # 1-based token number n


def _cij(value: int, H: int, W: int) -> str:
    """'c,i,j' (1-based) of the element of arange(C·H·W).reshape(C, H, W) that holds
    ``value``."""
    c0, rest = divmod(value, H * W)
    i0, j0 = divmod(rest, W)
    return f"{c0 + 1},{i0 + 1},{j0 + 1}"


def plot_flatten_order(C: int = 2, H: int = 3, W: int = 4) -> Figure:
    """Def. 6.11, eq. (25): X ∈ R^{C×H×W}, channel by channel, each pixel coloured and
    labelled with the token n of flatten_{(H,W)}(X) it goes to; beside it the matrix
    Y = flatten(X) ∈ R^{HW×C}, each entry labelled with the (c, i, j) it came from.

    The right axis of Y gives torch's 0-based row n − 1; the title of Y says whether
    diffusers' layout X.permute(1, 2, 0).reshape(H·W, C) puts every element in the
    same place.
    """
    rows = flatten_rows(C, H, W)
    X = torch.arange(C * H * W).reshape(C, H, W)
    Y = notation.flatten_literal(X)
    same = torch.equal(Y, X.permute(1, 2, 0).reshape(H * W, C))
    fig = Figure(figsize=(min(2.2 * C + 3.0, 7.2), 3.8), layout="constrained")
    axes = fig.subplots(1, C + 1, width_ratios=[W] * C + [max(C, 1.5) * 1.4])
    style = dict(cmap="viridis", vmin=1, vmax=H * W)
    for c, ax in enumerate(axes[:C]):
        im = ax.imshow(rows[c].numpy(), **style)
        for i in range(H):
            for j in range(W):
                ax.text(j, i, int(rows[c, i, j]), ha="center", va="center",
                        color="w" if rows[c, i, j] < 0.6 * H * W else "k", fontsize=9)
        ax.set_title(f"channel c = {c + 1} of X")
        ax.set(xticks=range(W), xticklabels=range(1, W + 1), xlabel="column j",
               yticks=range(H), yticklabels=range(1, H + 1), ylabel="row i")
    ax = axes[-1]
    n_of_row = torch.arange(1, H * W + 1)[:, None].expand(H * W, C)   # (HW, C)
    ax.imshow(n_of_row.numpy(), aspect="auto", **style)
    for n in range(H * W):
        for c in range(C):
            ax.text(c, n, _cij(int(Y[n, c]), H, W), ha="center", va="center",
                    color="w" if n + 1 < 0.6 * H * W else "k", fontsize=8)
    ax.set_title("Y = flatten(X)\n" + ("= torch's layout ✓" if same else "≠ torch's ✗"),
                 fontsize=9)
    ax.set(xticks=range(C), xticklabels=range(1, C + 1), xlabel="column c",
           yticks=range(H * W), yticklabels=range(1, H * W + 1), ylabel="token n")
    right = ax.secondary_yaxis("right")
    right.set(yticks=range(H * W), yticklabels=range(H * W), ylabel="torch row n − 1")
    for a in (ax, right):
        a.tick_params(labelsize=8)
    fig.colorbar(im, ax=list(axes[:C]), location="bottom", shrink=0.8,
                 label=f"token number n = (i − 1)·W + j, from 1 to H·W = {H * W}")
    return fig


def digit_and_latent(index: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Digit ``index`` of scikit-learn's set at the miniature's size, x (1, 1, 16, 16)
    in [−1, 1], and its latent z (1, 4, 8, 8): the mean of the shipped miniature VAE's
    posterior (no sampling noise), times the VAE's scaling factor as in training."""
    images, _ = digits.load_digits(miniature.IMAGE_SIZE)
    x = images[index:index + 1]                                    # (B, C, H, W)
    vae = miniature.load().vae
    with torch.no_grad():
        posterior = vae.encode(x).latent_dist
        z = posterior.mean * vae.config.scaling_factor          # (B, 4, H/2, W/2)
    return x, z


def plot_shape_alphabet(x: torch.Tensor, z: torch.Tensor) -> Figure:
    """The shape alphabet of §2 on data: an image x (B, C, H, W), the C = 4 channels of
    its latent z (B, C, H, W), and the latent's tokens flatten(z[0]) (N, C) with
    N = H·W, eq. (25). Grey levels of x in [−1, 1]; the latent and its tokens share one
    symmetric colour scale."""
    if x.dim() != 4 or z.dim() != 4 or x.shape[0] != 1 or z.shape[0] != 1:
        raise ValueError(f"expects one image (1, C, H, W) and its latent (1, C, H, W); "
                         f"got {tuple(x.shape)} and {tuple(z.shape)}")
    C = z.shape[1]
    T = notation.flatten(z[0])                                     # (C, H, W) -> (N, C)
    fig = Figure(figsize=(7.2, 3.3), layout="constrained")
    left, middle, right = fig.subfigures(1, 3, width_ratios=[1.3, 4.2, 1.1])
    ax = left.subplots()
    im_x = ax.imshow(x[0, 0].numpy(), cmap="gray", vmin=-1, vmax=1)
    left.suptitle(f"image x\nB×C×H×W\n= {'×'.join(map(str, x.shape))}", fontsize=10)
    left.colorbar(im_x, ax=ax, location="bottom", ticks=[-1, 0, 1], label="grey level")
    vmax = float(z.abs().max())
    style = dict(cmap="RdBu_r", vmin=-vmax, vmax=vmax)
    axes = middle.subplots(1, C)
    for c, ax_c in enumerate(axes):
        im_z = ax_c.imshow(z[0, c].numpy(), **style)
        ax_c.set_title(f"c = {c + 1}: z[0, {c}]", fontsize=9)
    middle.suptitle(f"its latent z, channel by channel\n\n"
                    f"B×C×H×W = {'×'.join(map(str, z.shape))}", fontsize=10)
    middle.colorbar(im_z, ax=list(axes), location="bottom", shrink=0.7,
                    label="latent value (one symmetric scale, shared with the tokens)")
    ax_t = right.subplots()
    ax_t.imshow(T.numpy(), aspect="auto", interpolation="nearest", **style)
    N = T.shape[0]
    right.suptitle(f"its tokens\nflatten(z[0])\nN×C = {N}×{C}", fontsize=10)
    ax_t.set(xticks=range(C), xticklabels=range(1, C + 1), xlabel="channel c",
             yticks=[0, N // 2 - 1, N - 1], yticklabels=[1, N // 2, N])
    ax_t.set_ylabel("token n", labelpad=-2)
    for a in [ax, *axes]:
        a.set(xticks=[], yticks=[])
    return fig
