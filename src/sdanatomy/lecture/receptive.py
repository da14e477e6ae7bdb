"""Receptive fields, lecture §7: why the U-Net reaches the whole image shallowly.

Three things live here, each checked against the others:

* the lecture's formulas, literally — R_pure(L) (79), the full-width condition (80), R_unet (81)
  and its uniform form (82), and Theorem 7.1's bound on the number of levels (83);
* the **measurement**: :func:`measure_receptive_field` finds, by autograd, the exact set of input
  pixels on which chosen output pixels depend (the dependency mask, its bounding box and its
  extent in each direction);
* an **exact prediction from the architecture alone**, by index arithmetic on sets
  (:func:`conv_1d`, :func:`upsample_1d`, :func:`sd15_field_1d`): what each layer's index map
  makes reachable, with no weights at all.

Toy networks built to the lecture's assumptions (:func:`pure_cnn`, :func:`toy_encoder`) and the
real SD-1.5 U-Net (with its self-attention and GroupNorm statistics switched off by
:func:`without_attention` and :func:`frozen_groupnorm`, or left as they are) are what we measure.

Conventions: pixel coordinates are torch's 0-based ``(i, j)`` = (row, column); an interval
``(a, b)`` includes both ends; the one-dimensional receptive field R is the number of input
columns (or rows) from the leftmost to the rightmost one the output depends on.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from sdanatomy.lecture.config import UNET_CONFIG


# ================================================================ §7.1: a pure CNN, (79)–(80)


def _check_int(x, name: str, *, low: int = 0) -> int:
    if isinstance(x, bool) or not isinstance(x, int):
        raise TypeError(f"{name} must be an int; got {type(x).__name__} {x!r}")
    if x < low:
        raise ValueError(f"{name} must be >= {low}; got {x}")
    return x


def R_pure(L: int, *, k: int = 3) -> int:
    """(79): the receptive field of L stacked k×k Conv2d, R = 1 + (k−1)L.

    Stride 1 and padding (k−1)/2, so that every layer keeps the size.
    """
    _check_int(L, "L (number of Conv2d layers)")
    _check_int(k, "k (kernel size)", low=1)
    return 1 + (k - 1) * L   # (79)


def pure_condition(W: int) -> float:
    """(80): R_pure(L) ≥ W  ⟺  L ≥ (W − 1)/2 (k = 3). Returns the bound (W − 1)/2."""
    _check_int(W, "W (image width)", low=1)
    return (W - 1) / 2   # (80)


def pure_layers_needed(W: int) -> int:
    """The smallest integer L satisfying (80): ⌈(W − 1)/2⌉."""
    return math.ceil(pure_condition(W))


# ================================================================ §7.2: a U-Net, (81)–(83)


def _check_counts(n: Sequence[int]) -> tuple[int, ...]:
    if isinstance(n, (int, bool)) or not isinstance(n, Iterable):
        raise TypeError(f"n must be a sequence (n_0, …, n_L) of per-level conv counts; got {n!r}")
    n = tuple(n)
    if not n:
        raise ValueError("n must list at least one level, (n_0, …, n_L) with L ≥ 0")
    for ell, n_ell in enumerate(n):
        _check_int(n_ell, f"n_{ell}")
    return n


def R_unet(n: Sequence[int], *, k: int = 3) -> int:
    """(81): R_unet = 1 + Σ_{ℓ=0}^{L} 2^ℓ (k−1) n_ℓ for conv counts n = (n_0, …, n_L).

    Level ℓ is the resolution after ℓ stride-2 downsamplings (L of them, so L + 1
    levels); one step at level ℓ spans 2^ℓ pixels of the input. Counts the stride-1
    convs only.
    """
    n = _check_counts(n)
    _check_int(k, "k (kernel size)", low=1)
    return 1 + sum(2 ** ell * (k - 1) * n_ell for ell, n_ell in enumerate(n))  # (81)


def R_unet_uniform(L: int, n: int) -> int:
    """(82): R_unet = 1 + 2n(2^{L+1} − 1), (81) with k = 3 and n_ℓ = n on all levels."""
    _check_int(L, "L (number of downsamplings)")
    _check_int(n, "n (convs per level)", low=1)
    return 1 + 2 * n * (2 ** (L + 1) - 1)   # (82)


def unet_condition(W: int, n: int) -> float:
    """(83): Theorem 7.1's bound log₂((W − 1)/(2n) + 1) − 1 on the number of levels."""
    _check_int(W, "W (image width)", low=1)
    _check_int(n, "n (convs per level)", low=1)
    return math.log2((W - 1) / (2 * n) + 1) - 1   # (83)


def unet_levels_needed(W: int, n: int) -> int:
    """The smallest integer L ≥ 0 satisfying (83)."""
    return max(0, math.ceil(unet_condition(W, n)))


def unet_levels_to_reach(W: int, n: int) -> int:
    """Smallest L for which a pixel of the (81)-exact down path reads all W columns.

    Corrected reading of Theorem 7.1. With Downsample2DNearest, output pixel q of level
    L sits on input column 2^L·q and sees [2^L q − h_L, 2^L q + h_L], with
    h_L = (R_unet − 1)/2 = n(2^{L+1} − 1). It covers [0, W − 1] iff a multiple of 2^L
    lies in [W − 1 − h_L, h_L]: R_unet ≥ W (83) is necessary, and sufficient only when
    the 2^L grid hits that interval.
    """
    _check_int(W, "W (image width)", low=1)
    _check_int(n, "n (convs per level)", low=1)
    L = 0
    while True:
        h = n * (2 ** (L + 1) - 1)
        first = 2 ** L * max(0, -(-(W - 1 - h) // 2 ** L))   # first 2^L·q ≥ W − 1 − h
        if first <= h:
            return L
        L += 1


def R_encoder(n: Sequence[int], *, k: int = 3, k_down: int = 3) -> int:
    """(81) corrected for a downsampler of kernel k_down: + Σ_{ℓ<L} 2^ℓ (k_down − 1).

    The stride-2 downsampler from level ℓ to ℓ + 1 reads k_down neighbours at level ℓ,
    so it widens the field by (k_down − 1)·2^ℓ input pixels, as a stride-1 conv there
    would. k_down = 1 (Downsample2DNearest, (21)) gives back (81); k_down = 3 is
    SD-1.5's Downsample2D; k_down = 2 is average pooling (22).
    """
    n = _check_counts(n)
    _check_int(k_down, "k_down (downsampler kernel size)", low=1)
    L = len(n) - 1
    return R_unet(n, k=k) + sum(2 ** ell * (k_down - 1) for ell in range(L))


# ================================================================ exact prediction: index sets


def conv_1d(S: Iterable[int], *, n_in: int, k: int = 3, s: int = 1, p: int = 1) -> set[int]:
    """Input indices that outputs S of a Conv2d (along one axis) read: torch's index map, (14) with 0-based u.

    Output i reads input i·s + u − p for u = 0, …, k−1 (0-based u); indices outside [0, n_in)
    are the zero padding and depend on nothing.
    """
    return {i * s + u - p for i in S for u in range(k) if 0 <= i * s + u - p < n_in}


def upsample_1d(S: Iterable[int]) -> set[int]:
    """Input indices that outputs S of Interpolate(×2, nearest) read, by (23): Z_{2i+u} = X_i."""
    return {i // 2 for i in S}


def subsample_1d(S: Iterable[int]) -> set[int]:
    """Input indices that outputs S of Downsample2DNearest read, by (21): Y_i = X_{2i}."""
    return {2 * i for i in S}


def interval(S: Iterable[int]) -> tuple[int, int]:
    """(min, max) of a non-empty index set."""
    S = list(S)
    if not S:
        raise ValueError("an empty index set has no interval")
    return min(S), max(S)


def encoder_field_1d(q: int, n: Sequence[int], *, width: int, downsample: str = "nearest") -> set[int]:
    """Exact input columns on which column q of a :func:`toy_encoder`'s output depends."""
    n = _check_counts(n)
    L = len(n) - 1
    widths = [width]
    for _ in range(L):
        widths.append(_down_size(widths[-1], downsample))
    S = {q}
    for ell in range(L, -1, -1):
        for _ in range(n[ell]):
            S = conv_1d(S, n_in=widths[ell])
        if ell > 0:   # the downsampler from level ℓ−1 to ℓ
            if downsample == "nearest":
                S = subsample_1d(S)
            elif downsample == "conv":
                S = conv_1d(S, n_in=widths[ell - 1], k=3, s=2, p=1)
            else:
                S = conv_1d(S, n_in=widths[ell - 1], k=2, s=2, p=0)
    return S


def _sd15_levels(config) -> tuple[int, int]:
    """(number of levels, layers_per_block) of a UNet2DConditionModel configuration."""
    levels = len(config["down_block_types"])
    lpb = config["layers_per_block"]
    if not isinstance(lpb, int):
        raise ValueError("sd15_field_1d supports one layers_per_block for every level, as SD-1.5 has")
    return levels, lpb


def sd15_field_1d(p: int, *, width: int, config=None) -> set[int]:
    """Exact input columns on which output column p of SD-1.5's U-Net depends through its conv path.

    Index arithmetic only, following UNet2DConditionModel.forward stage by stage, backwards from
    the output: conv_out, the up blocks (their Upsample2D = nearest ×2 then a 3×3 conv, and per
    resnet a concatenated skip), the mid block, the down blocks (their 3×3 stride-2 Downsample2D),
    conv_in. A ResnetBlock2D's field is that of its two 3×3 convs (its shortcut, identity or 1×1,
    reads a subset). Attention is left out (the conv path) and GroupNorm counts as pointwise.
    """
    config = UNET_CONFIG if config is None else config
    levels, lpb = _sd15_levels(config)
    _check_int(width, "width", low=1)
    if width % 2 ** (levels - 1):
        raise ValueError(f"the U-Net's {levels - 1} downsamplings need a width divisible by "
                         f"{2 ** (levels - 1)}; got {width}")
    if not 0 <= p < width:
        raise ValueError(f"output column p must lie in [0, {width}); got {p}")
    widths = [width // 2 ** ell for ell in range(levels)]   # level ℓ's width

    def resnet(S, ell):                                    # (52)–(57): conv1, then conv2
        return conv_1d(conv_1d(S, n_in=widths[ell]), n_in=widths[ell])

    # The skip tensors in forward order, as UNet2DConditionModel collects down_block_res_samples:
    # conv_in's output, then per down block each resnet's output and its downsampler's output.
    n_skips = 1 + levels * lpb + (levels - 1)
    need = [set() for _ in range(n_skips)]                 # what the up path reads of each skip
    # 5. post-process: GroupNorm, SiLU (pointwise here), conv_out (3×3)
    S = conv_1d({p}, n_in=widths[0])
    # 4. up blocks, last (finest) first; up block b works at level ℓ = levels−1−b, its resnet r
    #    reads cat(h, skip), the skip popped from the end of the list, and it ends with Upsample2D
    for b in reversed(range(levels)):
        ell = levels - 1 - b
        if ell > 0:                                        # (24): nearest ×2, then a 3×3 conv
            S = upsample_1d(conv_1d(S, n_in=widths[ell - 1]))
        for r in reversed(range(lpb + 1)):
            S = resnet(S, ell)
            need[n_skips - 1 - b * (lpb + 1) - r] |= S    # the concatenated skip's share
    # 3. mid block: resnet, (attention), resnet
    S = resnet(resnet(S, levels - 1), levels - 1)
    # 2. down blocks, backwards; where a skip tensor was made, what the up path reads of it joins
    t = n_skips - 1
    S |= need[t]
    for ell in reversed(range(levels)):
        if ell < levels - 1:                               # Downsample2D: Conv2d(3, stride 2, padding 1)
            S = conv_1d(S, n_in=widths[ell], k=3, s=2, p=1)
            t -= 1
            S |= need[t]
        for _ in range(lpb):
            S = resnet(S, ell)
            t -= 1
            S |= need[t]
    assert t == 0, "every skip tensor is visited once"
    # 1. conv_in (3×3)
    return conv_1d(S, n_in=widths[0])


# ================================================================ the networks we measure


@contextlib.contextmanager
def single_thread():
    """Run torch on one thread inside the block (or the decorated function), then restore.

    The toy networks and the slim SD-1.5 copy work on tensors so small that splitting each op
    across threads costs more than it gains, and on a busy machine every thread barrier can
    wait for a descheduled core: one thread is faster and its time does not depend on the load.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)




def _down_size(w: int, downsample: str) -> int:
    if downsample == "nearest":
        return (w + 1) // 2            # x[..., ::2]: ⌈w/2⌉, = ⌊w/2⌋ of (21) for even w
    if downsample == "conv":
        return (w - 1) // 2 + 1        # Conv2d(3, stride 2, padding 1)
    if downsample == "average":
        return w // 2                  # AvgPool2d(2)
    raise ValueError(f"downsample must be 'nearest' (21), 'conv' (Def. 6.6, SD-1.5) or 'average' (22); "
                     f"got {downsample!r}")


class Subsample(nn.Module):
    """Downsample2DNearest, Def. 6.7, (21): Y_{c,i,j} = X_{c,2i,2j} (0-based)."""

    def forward(self, x):
        return x[..., ::2, ::2]   # (B, C, H, W) -> (B, C, ⌈H/2⌉, ⌈W/2⌉)


def _seeded(build: Callable[[], nn.Module], seed: int, dtype: torch.dtype) -> nn.Module:
    # fork_rng: a seed gives the same weights whatever the caller did before
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build().to(dtype).eval()


def pure_cnn(L: int, *, channels: int = 2, k: int = 3, seed: int = 0, dtype=torch.float64) -> nn.Module:
    """§7.1's network: L × [Conv2d(k, stride 1, padding (k−1)/2), SiLU], random weights.

    (B, channels, H, W) -> (B, channels, H, W)
    """
    _check_int(L, "L (number of Conv2d layers)", low=1)
    if k % 2 == 0:
        raise ValueError(f"§7.1 keeps the size with padding (k−1)/2, which needs an odd k; got k={k}")

    def build():
        layers = []
        for _ in range(L):
            layers += [nn.Conv2d(channels, channels, k, stride=1, padding=(k - 1) // 2), nn.SiLU()]
        return nn.Sequential(*layers)
    return _seeded(build, seed, dtype)


def toy_encoder(n: Sequence[int], *, downsample: str = "nearest", channels: int = 2, seed: int = 0,
                dtype=torch.float64) -> nn.Module:
    """§7.2's down path: level ℓ = 0, …, L runs n_ℓ × [Conv2d(3, 1, 1), SiLU]; L downsamplers between.

    downsample: "nearest" — Downsample2DNearest (21), the network for which (81) is exact;
    "conv" — Downsample2D (Def. 6.6) as SD-1.5 builds it, Conv2d(3, stride 2, padding 1);
    "average" — average pooling (22). (B, C, H, W) -> (B, C, H/2^L, W/2^L) for H, W multiples of 2^L.
    """
    n = _check_counts(n)
    _down_size(2, downsample)   # validates the name

    def build():
        layers = []
        for ell, n_ell in enumerate(n):
            if ell > 0:
                layers.append({"nearest": Subsample(),
                               "conv": nn.Conv2d(channels, channels, 3, stride=2, padding=1),
                               "average": nn.AvgPool2d(2)}[downsample])
            for _ in range(n_ell):
                layers += [nn.Conv2d(channels, channels, 3, stride=1, padding=1), nn.SiLU()]
        return nn.Sequential(*layers)
    return _seeded(build, seed, dtype)


# ================================================================ measuring by autograd


@dataclass(frozen=True)
class ReceptiveField:
    """The input pixels on which output pixel ``output`` depends, as measured.

    mask: (H, W) bool; rows, cols: the bounding box (inclusive); anchor: the input pixel the
    output pixel sits on (its coordinates times the input/output size ratio); extent: how far the
    field reaches from the anchor upwards, downwards, to the left and to the right.
    """

    output: tuple[int, int]
    mask: torch.Tensor
    anchor: tuple[int, int]
    min_abs_grad: float      # the smallest nonzero |∂y/∂x| seen: its margin above underflow
    magnitude: torch.Tensor  # (H, W): max over probes and input channels of |∂s/∂X|

    @property
    def rows(self) -> tuple[int, int]:
        return interval(torch.nonzero(self.mask.any(1)).flatten().tolist())

    @property
    def cols(self) -> tuple[int, int]:
        return interval(torch.nonzero(self.mask.any(0)).flatten().tolist())

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the bounding box: the R of (79)/(81) along each axis."""
        (t, b), (l, r) = self.rows, self.cols
        return b - t + 1, r - l + 1

    @property
    def extent(self) -> dict[str, int]:
        (t, b), (l, r) = self.rows, self.cols
        i, j = self.anchor
        return {"up": i - t, "down": b - i, "left": j - l, "right": r - j}

    @property
    def pixels(self) -> int:
        return int(self.mask.sum())

    @property
    def dense(self) -> bool:
        """Whether the mask fills its bounding box (no holes)."""
        h, w = self.size
        return self.pixels == h * w

    def __repr__(self) -> str:
        (t, b), (l, r) = self.rows, self.cols
        h, w = self.size
        e = self.extent
        return (f"field of {self.output}: {h}×{w}, rows {t}..{b} × cols {l}..{r}; "
                f"reach ↑{e['up']} ↓{e['down']} ←{e['left']} →{e['right']}; "
                f"{self.pixels} pixels{'' if self.dense else ', with holes'}")


def _check_shape(input_shape) -> tuple[int, int, int]:
    if not isinstance(input_shape, (tuple, list, torch.Size)) or len(input_shape) != 3:
        raise ValueError(f"input_shape is the lecture's C×H×W of one input (no batch axis); got {input_shape!r}")
    for name, x in zip("CHW", input_shape):
        _check_int(x, f"input_shape's {name}", low=1)
    return tuple(input_shape)


def _check_pixel(ij) -> tuple[int, int]:
    if not (isinstance(ij, tuple) and len(ij) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in ij)):
        raise TypeError(f"an output pixel is a tuple (i, j) of ints; got {ij!r}")
    return ij


def _check_outputs(outputs) -> tuple[bool, list | None]:
    """(one pixel asked for?, the pixels asked for, or None for the central one)."""
    single = outputs is None or (isinstance(outputs, tuple) and len(outputs) == 2
                                 and all(isinstance(v, int) for v in outputs))
    given = None if outputs is None else [_check_pixel(outputs)] if single else \
        [_check_pixel(ij) for ij in outputs]
    if given == []:
        raise ValueError("outputs is an empty list: "
                         "name at least one output pixel (i, j)")
    return single, given


def _forward(f: Callable[[torch.Tensor], torch.Tensor], X: torch.Tensor):
    """Y = f(X) with autograd on; refuses a Y that is not (P, C', H', W') or not X's."""
    P = X.shape[0]
    try:
        with torch.enable_grad():
            Y = f(X)
    except (RuntimeError, ValueError, IndexError, TypeError) as e:
        raise ValueError(f"f cannot take an input of shape {tuple(X.shape)}: {e}") \
            from e
    if not isinstance(Y, torch.Tensor) or Y.dim() != 4 or Y.shape[0] != P:
        got = tuple(Y.shape) if isinstance(Y, torch.Tensor) else type(Y).__name__
        raise ValueError(f"f must return ({P}, C', H', W') for an input of batch {P}; "
                         f"got {got}")
    if not Y.requires_grad:    # (the identity returns X itself: a leaf, but X's)
        raise ValueError("f's output does not depend on its input at all "
                         "(no autograd path from X to Y)")
    return Y


def _output_pixels(given, out_hw: tuple[int, int]) -> list[tuple[int, int]]:
    """The pixels asked for (default: the central one), checked to lie in the output."""
    pixels = given or [(out_hw[0] // 2, out_hw[1] // 2)]
    for ij in pixels:
        if not (0 <= ij[0] < out_hw[0] and 0 <= ij[1] < out_hw[1]):
            raise ValueError(f"output pixel {ij} lies outside the output, whose pixels "
                             f"are (i, j) with 0 ≤ i < {out_hw[0]}, "
                             f"0 ≤ j < {out_hw[1]}")
    return pixels


def _probe(f, x: torch.Tensor, given, P: int, g: torch.Generator, device):
    """One probe at the input x (1, C, H, W): (pixels, (H', W'), gradients).

    For each pixel (i, j), max over c of |∂s/∂X[c]|, (H, W), or None where autograd
    finds no path; s = Σ_{c'} r_{c'} Y[c', i, j] with random r_{c'} ∈ [0.5, 1.5).
    With P > 1, copy m of x is seeded at pixel m.
    """
    X = x.repeat(P, 1, 1, 1).to(device).requires_grad_(True)       # (P, C, H, W)
    Y = _forward(f, X)                                              # (P, C', H', W')
    pixels = _output_pixels(given, tuple(Y.shape[2:]))
    r = torch.rand(Y.shape[1], generator=g, dtype=x.dtype).to(device) + 0.5   # r_{c'}
    if P > 1:                  # one backward: copy m of the input is seeded at pixel m
        s = sum((r * Y[m, :, i, j]).sum() for m, (i, j) in enumerate(pixels))
        (G,) = torch.autograd.grad(s, X, allow_unused=True)
        grads = [None if G is None else G[m] for m in range(P)]
    else:                      # one backward per pixel, the graph kept between them
        grads = []
        for m, (i, j) in enumerate(pixels):
            s = (r * Y[0, :, i, j]).sum()
            (G,) = torch.autograd.grad(s, X, retain_graph=m < len(pixels) - 1,
                                       allow_unused=True)
            grads.append(None if G is None else G[0])
    return pixels, tuple(Y.shape[2:]), [       # (C, H, W) -> (H, W)
        None if G is None else G.detach().abs().amax(0).cpu().to(x.dtype)
        for G in grads]


# Why measure_receptive_field is exact and robust. ∂s/∂X[c, u, v] ≠ 0 proves that s
# depends on pixel (u, v), so the mask never holds too much. It could hold too little
# only by accident: (a) a derivative that vanishes at this particular input (a dead ReLU;
# SiLU' = 0 at u ≈ −1.28) — a second random input removes that, hence several probes,
# whose masks are joined; (b) terms cancelling in a sum — with random weights, random
# inputs and random positive channel weights r_{c'} that has probability zero, and where
# weights do cancel identically, f really does not depend on the pixel; (c) the product
# of many small factors at the far edge of a field underflowing to 0 — float64 (the
# default) reaches 1e−308, and ``min_abs_grad`` reports the smallest nonzero value seen.
# Cost: one forward per probe and one backward per output pixel, the graph kept between
# them; ``batched=True`` instead copies the input once per output pixel into the batch
# axis and seeds copy m at pixel m: one forward and one backward for all pixels, exact
# when f treats the samples of a batch independently (eval mode), and cheaper where
# per-call overhead dominates.

def measure_receptive_field(f: Callable[[torch.Tensor], torch.Tensor], input_shape,
                            outputs=None, *, probes: int = 2, seed: int = 0,
                            dtype=torch.float64, device="cpu", batched: bool = False):
    """The exact receptive field of output pixels of f, by autograd.

    f: (B, C, H, W) -> (B, C', H', W'), input_shape = (C, H, W); outputs: a pixel
    (i, j) of the output, 0-based, or a list of them (default: the central one). For
    each, the mask is {(u, v) : ∂s/∂X[c, u, v] ≠ 0 for some c}, s = Σ_{c'} r_{c'}
    Y[c', i, j], joined over ``probes`` random inputs X. Returns a ReceptiveField (a
    list for a list of pixels). ``batched=True``: one backward for all the pixels.
    """
    C, H, W = _check_shape(input_shape)
    single, given = _check_outputs(outputs)
    _check_int(probes, "probes", low=1)
    P = len(given) if batched and given else 1
    n = len(given) if given else 1
    masks = [torch.zeros(H, W, dtype=torch.bool) for _ in range(n)]
    mags = [torch.zeros(H, W, dtype=dtype) for _ in range(n)]    # max |∂s/∂X| seen
    smallest = [math.inf] * n                                    # min nonzero |∂s/∂X|
    g = torch.Generator().manual_seed(seed)
    for _ in range(probes):
        x = torch.randn(1, C, H, W, generator=g, dtype=dtype)   # a random input X
        pixels, out_hw, grads = _probe(f, x, given, P, g, device)
        for m, a in enumerate(grads):                            # a = |∂s/∂X|: (H, W)
            if a is None:
                continue
            masks[m] |= a > 0                     # (u, v) where some ∂s/∂X[c, u, v] ≠ 0
            mags[m] = torch.maximum(mags[m], a)
            if (a > 0).any():
                smallest[m] = min(smallest[m], a[a > 0].min().item())
    fields = []
    for m, (i, j) in enumerate(pixels):
        if not masks[m].any():
            raise ValueError(f"output pixel {(i, j)} depends on no input pixel: "
                             f"f's output does not depend on its input there")
        anchor = (i * H // out_hw[0], j * W // out_hw[1])    # (i, j) on the input grid
        fields.append(ReceptiveField((i, j), masks[m], anchor, smallest[m], mags[m]))
    return fields[0] if single else fields


@single_thread()
def dependency_matrix(net: Callable[[torch.Tensor], torch.Tensor], *, width: int,
                      channels: int = 2, height: int = 1, seed: int = 0,
                      dtype=torch.float64) -> torch.Tensor:
    """D[q, u] = (output column q depends on input column u), for all q, by autograd.

    One forward and one backward: the input is copied once per output column into the
    batch axis and copy q seeds the gradient at column q only, which is exact for any f
    that treats the samples of a batch independently (every network of this chapter in
    eval mode). (height, width) input strip -> (W_out, width) bool.
    """
    _check_int(width, "width", low=1)
    g = torch.Generator().manual_seed(seed)
    X1 = torch.randn(1, channels, height, width, generator=g, dtype=dtype)
    with torch.no_grad():
        W_out = net(X1).shape[-1]
    X = X1.repeat(W_out, 1, 1, 1).requires_grad_(True)      # (W_out, C, height, width)
    Y = net(X)                                               # (W_out, C', H', W_out)
    r = torch.rand(Y.shape[1], generator=g, dtype=dtype) + 0.5
    q = torch.arange(W_out)
    s = (r[None, :, None] * Y[q, :, :, q]).sum()        # copy q seeds output column q
    (grad,) = torch.autograd.grad(s, X)
    D = grad.abs().amax(dim=(1, 2)) > 0   # (W_out, C, height, width) -> (W_out, width)
    return D


@single_thread()
def smallest_reaching_L(W: int, build: Callable[[int], Callable], *, height: int = 1,
                        max_L: int = 64) -> int:
    """Brute force: the smallest L for which an output column of build(L) reads all W.

    build(L) returns the network with L layers (or levels); build(0) may return None
    for the identity, which reaches everything only when W = 1.
    """
    for L in range(max_L + 1):
        net = build(L)
        if net is None:
            if W == 1:
                return 0
            continue
        if dependency_matrix(net, width=W, height=height).all(dim=1).any():
            return L
    raise ValueError(f"no L ≤ {max_L} reaches all {W} columns")
