"""Chapter 7's side-by-side figure: a pure CNN against a U-Net's down path with as many
3×3 convolutions (lecture §7.1–7.2), both fields measured by autograd.

For L downsamplings and n convolutions per level, the down path
``toy_encoder((n,) * (L + 1))`` has n(L + 1) stride-1 convolutions; the pure CNN
``pure_cnn(n(L + 1))`` gets exactly as many. Their fields follow (79) and (82), and (82)
corrected by the downsampler's kernel k↓ (the chapter's eq-receptive-corrected). The
slider of the chapter and its static figure both draw :func:`fields_figure`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from matplotlib.figure import Figure
from matplotlib.patches import Patch

from sdanatomy.lecture.receptive import (R_encoder, R_pure, ReceptiveField,
                                         measure_receptive_field, pure_cnn,
                                         single_thread, toy_encoder)

K_DOWN = {"nearest": 1, "average": 2, "conv": 3}   # k↓: (21), (22), SD-1.5's Def. 6.6
PURE, UNET = (0.97, 0.55, 0.20), (0.62, 0.78, 0.90)  # orange, light blue


@dataclass(frozen=True)
class Pair:
    """Both networks for one (L, n): the measured fields and the formulas' R."""

    L: int
    n: int
    downsample: str
    pure: ReceptiveField         # pure_cnn(n(L + 1)), central output pixel
    unet: ReceptiveField         # toy_encoder((n,) * (L + 1)), central output pixel
    R_pure: int                  # (79) with n(L + 1) layers
    R_unet: int                  # (82), + Σ_{ℓ<L} 2^ℓ (k↓ − 1) for k↓ > 1

    @property
    def convs(self) -> int:
        return self.n * (self.L + 1)

    @property
    def formula(self) -> str:
        return "(82)" if self.downsample == "nearest" else "(81) corr."

    def __str__(self) -> str:
        return (f"L = {self.L}, n = {self.n} ({self.convs} convs), {self.downsample}: "
                f"pure CNN R = {self.pure.size[1]}, (79) {self.R_pure}; "
                f"U-Net R = {self.unet.size[1]}, {self.formula} {self.R_unet}")


def canvas(L: int, n: int) -> int:
    """Side of a square input that holds the widest field of (L, n) (k↓ = 3) with a
    margin of two level-L pixels on each side: a multiple of 2^L, so every
    downsampler halves it exactly."""
    R = R_encoder((n,) * (L + 1), k_down=3)
    return 2 ** L * (-(-R // 2 ** L) + 2)


@single_thread()    # 2-channel toys: a second thread only adds barriers
def measure_pairs(cases: Sequence[tuple[int, int]], *, downsample: str = "nearest",
                  size: int | None = None) -> list[Pair]:
    """For each (L, n), measure both networks' central output pixel on one S × S input
    (S = ``size``, default :func:`canvas` of that case), two random probes each."""
    if downsample not in K_DOWN:
        raise ValueError(f"downsample must be one of {tuple(K_DOWN)}; "
                         f"got {downsample!r}")
    pairs = []
    for L, n in cases:
        counts = (n,) * (L + 1)                       # n_ℓ = n on every level
        S = size or canvas(L, n)
        shape = (2, S, S)
        pure = measure_receptive_field(pure_cnn(n * (L + 1)), shape)
        down = toy_encoder(counts, downsample=downsample)
        unet = measure_receptive_field(down, shape)
        pairs.append(Pair(L, n, downsample, pure, unet, R_pure(n * (L + 1)),
                          R_encoder(counts, k_down=K_DOWN[downsample])))
    return pairs


def fields_figure(pairs: Sequence[Pair], *, panel: float = 2.4) -> Figure:
    """One panel per (L, n): the U-Net's field (light blue) with the pure CNN's field
    (orange) drawn over it, on the same input; red cross: the U-Net's output pixel.
    The legend gives each measured R beside (79) and (82)."""
    fig = Figure(figsize=(panel * len(pairs), panel + 1.0), layout="constrained")
    axes = fig.subplots(1, len(pairs), squeeze=False)[0]
    for ax, p in zip(axes, pairs):
        rgb = torch.ones(*p.unet.mask.shape, 3)                 # (H, W, 3), white
        rgb[p.unet.mask] = torch.tensor(UNET)
        rgb[p.pure.mask] = torch.tensor(PURE)                    # drawn on top
        ax.imshow(rgb.numpy(), interpolation="nearest")
        ax.plot(p.unet.anchor[1], p.unet.anchor[0], "r+", ms=8, mew=1.5)
        ax.set_title(f"L = {p.L}, n = {p.n}, {p.downsample}\n{p.convs} convs each",
                     fontsize=9)
        ax.set_xlabel("input column", fontsize=9)
        ax.set_ylabel("input row", fontsize=9)
        ax.tick_params(labelsize=8)
        handles = [Patch(color=UNET, label=f"down path: R = {p.unet.size[1]}, "
                                           f"{p.formula} {p.R_unet}"),
                   Patch(color=PURE, label=f"pure CNN: R = {p.pure.size[1]}, "
                                           f"(79) {p.R_pure}")]
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.16),
                  fontsize=8.5, frameon=False, handlelength=1.2)
    return fig


def explore(L: int = 2, n: int = 2, downsample: str = "nearest") -> Figure:
    """The slider's figure: :func:`fields_figure` for one (L, n), on its own canvas."""
    return fields_figure(measure_pairs([(L, n)], downsample=downsample), panel=4.0)
