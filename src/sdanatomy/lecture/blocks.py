"""Blocks, lecture §6.9–6.10: ResnetBlock2D, the transformer, the U-Net's blocks.

Each block is a pure function of its Θ (a dict keyed exactly as the diffusers
module's ``state_dict()``, so ``sub(unet_theta, "down_blocks.0")`` is a block's Θ), of
its inputs, and of keyword-only hyperparameters. Two readings sit side by side:

* ``resnet_block_2d``, ``transformer_2d``, ``down_block_2d``, … compute what SD-1.5
  computes (what diffusers' module of the same name does with SD-1.5's settings);
* ``*_printed`` compute the lecture's Definitions 6.15–6.20 as printed, where they can
  be executed.

Where they part ways, a comment says so at that line; ``sdanatomy.ledger.blocks``
measures each difference against diffusers and proves each corrected function equal
to it.

Every block is built from the layers of §6 through ``ops``: ``BOOK`` (the default)
runs the book's own layers (``sdanatomy.lecture.layers``, ``…lecture.attention``),
``TORCH`` runs torch's fused kernels of the same functions (F.conv2d, F.group_norm,
F.scaled_dot_product_attention, …), which the ledger proves equal to the book's,
layer by layer (§6) and block by block (here and §8).

Shape alphabet: B batch, C channels, H, W, N = H·W tokens, M context tokens, d_ctx
context width, d_t time-embedding width, n resnets per level.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from sdanatomy.lecture import attention
from sdanatomy.lecture import layers
from sdanatomy.lecture.layers import (EPS_TRANSFORMER, EPS_UNET, _check_theta, _image,
                                      sub)
from sdanatomy.lecture.notation import flatten, unflatten

__all__ = [
    "Ops", "BOOK", "TORCH",
    "resnet_block_2d", "resnet_block_2d_printed", "printed_resnet_theta",        # 6.9
    "layer_norm", "gelu", "feed_forward", "basic_transformer_block",             # 6.10
    "transformer_2d", "transformer_2d_printed",
    "down_block_2d", "down_block_2d_printed", "up_block_2d", "up_block_2d_printed",
    "mid_block_2d_cross_attn", "mid_block_2d_cross_attn_printed",
    "cross_attn_down_block_2d", "cross_attn_down_block_2d_printed",
    "cross_attn_up_block_2d", "cross_attn_up_block_2d_printed",
]

EPS_LAYER_NORM = 1e-5   # the LayerNorms of SD-1.5's BasicTransformerBlock (norm_eps)


# --- the layers a block is built from -----------------------------------------------

@dataclass(frozen=True)
class Ops:
    """The §6 layers a block calls, each with its ``layers`` function's signature."""

    name: str
    conv2d: Callable          # (theta, X, *, stride, padding)              (14)
    group_norm: Callable      # (theta, X, *, groups, eps)                  (18)–(19)
    silu: Callable            # (u)                                         (16)
    linear: Callable          # (theta, x)                                  (15)
    layer_norm: Callable      # (theta, x, *, eps)                          not printed
    gelu: Callable            # (u)                                         not printed
    attention: Callable       # (theta, X, C, *, heads)                     (30)–(33)
    downsample_2d: Callable   # (theta, X, *, padding)                      (20)
    upsample_2d: Callable     # (theta, X, *, padding, output_size)         (23)–(24)

    def __repr__(self) -> str:
        return f"Ops({self.name!r})"


def layer_norm(theta: Mapping, x: torch.Tensor, *,
               eps: float = EPS_LAYER_NORM) -> torch.Tensor:
    """LayerNorm over the last axis (not in the lecture; SD-1.5's transformer has 3).

    y = γ ⊙ (x − μ)/√(σ² + ε) + β, with μ, σ² the mean and biased variance of the
    C entries of x. x: (…, C) -> (…, C); theta: weight γ (C,), bias β (C,). Mirrors
    torch.nn.LayerNorm(C, eps). It sits inside SD-1.5's attention stage, (69)–(72)
    corrected (:func:`transformer_2d`). Ledger: ``ledger.where("(69)")``.
    """
    _check_theta(theta, "LayerNorm", "γ as weight (C,), β as bias (C,)",
                 ("weight", "bias"))
    C = x.shape[-1]
    if theta["weight"].shape != (C,) or theta["bias"].shape != (C,):
        raise ValueError(f"LayerNorm: γ, β need shape ({C},) for tokens of width "
                         f"C = {C}; got {tuple(theta['weight'].shape)}, "
                         f"{tuple(theta['bias'].shape)}")
    mu = x.mean(dim=-1, keepdim=True)                          # μ over the C entries
    var = ((x - mu) ** 2).mean(dim=-1, keepdim=True)           # σ², biased, as (18)
    return theta["weight"] * (x - mu) / torch.sqrt(var + eps) + theta["bias"]


def gelu(u: torch.Tensor) -> torch.Tensor:
    """GELU (not in the lecture): u Φ(u), Φ(u) = ½(1 + erf(u/√2)) the normal CDF.

    The exact form (not tanh's approximation), as diffusers' GEGLU calls F.gelu.
    """
    return u * 0.5 * (1 + torch.erf(u / math.sqrt(2)))


def _torch_conv2d(theta, X, *, stride=1, padding=0):
    return F.conv2d(X, theta["weight"], theta.get("bias"), stride=stride,
                    padding=padding)


def _torch_group_norm(theta, X, *, groups=32, eps=EPS_UNET):
    return F.group_norm(X, groups, theta["weight"], theta["bias"], eps)


def _torch_linear(theta, x):
    return F.linear(x, theta["weight"], theta.get("bias"))


def _torch_layer_norm(theta, x, *, eps=EPS_LAYER_NORM):
    return F.layer_norm(x, x.shape[-1:], theta["weight"], theta["bias"], eps)


def _torch_attention(theta, X, C=None, *, heads=8):
    """(31)–(33) as SD-1.5 runs them, (30) by F.scaled_dot_product_attention."""
    C = X if C is None else C
    q = F.linear(X, theta["to_q.weight"])                     # (B, N, h·d)      (32)
    k = F.linear(C, theta["to_k.weight"])                     # (B, M, h·d)      (32)
    v = F.linear(C, theta["to_v.weight"])                     # (B, M, h·d_v)    (32)
    q, k, v = (T.unflatten(-1, (heads, -1)).transpose(1, 2)   # (B, h, ·, d)
               for T in (q, k, v))
    O = F.scaled_dot_product_attention(q, k, v)               # (B, h, N, d_v)   (30)
    O = O.transpose(1, 2).flatten(2)                          # (B, N, h·d_v)
    return F.linear(O, theta["to_out.0.weight"], theta.get("to_out.0.bias"))   # (33)


def _torch_downsample_2d(theta, X, *, padding=1):
    return F.conv2d(X, theta["conv.weight"], theta["conv.bias"], stride=2,
                    padding=padding)


def _torch_upsample_2d(theta, X, *, padding=1, output_size=None):
    if output_size is None:
        Z = F.interpolate(X, scale_factor=2.0, mode="nearest")
    else:
        Z = F.interpolate(X, size=tuple(output_size), mode="nearest")
    return F.conv2d(Z, theta["conv.weight"], theta["conv.bias"], padding=padding)


BOOK = Ops("book", conv2d=layers.conv2d, group_norm=layers.group_norm, silu=layers.silu,
           linear=layers.linear, layer_norm=layer_norm, gelu=gelu,
           attention=attention.multihead_attention, downsample_2d=layers.downsample_2d,
           upsample_2d=layers.upsample_2d)
TORCH = Ops("torch", conv2d=_torch_conv2d, group_norm=_torch_group_norm, silu=F.silu,
            linear=_torch_linear, layer_norm=_torch_layer_norm, gelu=F.gelu,
            attention=_torch_attention, downsample_2d=_torch_downsample_2d,
            upsample_2d=_torch_upsample_2d)


def _check_ops(ops) -> None:
    if not isinstance(ops, Ops):
        raise TypeError(f"ops must be blocks.BOOK or blocks.TORCH (an Ops); "
                        f"got {ops!r}")


# --- 6.9 ResnetBlock2D, Def. 6.15, (52)–(57) ---------------------------------------

RESNET_KEYS = ("norm1.weight", "norm1.bias", "conv1.weight", "conv1.bias",
               "norm2.weight", "norm2.bias", "conv2.weight", "conv2.bias")
RESNET_TIME_KEYS = ("time_emb_proj.weight", "time_emb_proj.bias")
RESNET_SHORTCUT_KEYS = ("conv_shortcut.weight", "conv_shortcut.bias")


def _resnet_setup(theta, X, h, time_keys, layer):
    """Check Θ, X, h of a residual block; return (X as a batch, was X single, h)."""
    _check_theta(theta, layer, "diffusers' ResnetBlock2D keys", RESNET_KEYS,
                 time_keys + RESNET_SHORTCUT_KEYS)
    X4, single = _image(X, layer)
    C_in, C_out = theta["norm1.weight"].shape[0], theta["conv1.weight"].shape[0]
    if X4.shape[1] != C_in:
        raise ValueError(f"{layer}: X has C = {X4.shape[1]} channels; its Θ (norm1, "
                         f"conv1) expects C_in = {C_in}: X ∈ R^(B×{C_in}×H×W)")
    has_time = all(k in theta for k in time_keys)
    if any(k in theta for k in time_keys) and not has_time:
        raise ValueError(f"{layer}: Θ has only part of {list(time_keys)}")
    if has_time and h is None:
        raise ValueError(f"{layer}: Θ has {time_keys[0].split('.')[0]}, so the block "
                         f"takes a time embedding h ∈ R^d_t (53); got h=None")
    if not has_time and h is not None:
        raise ValueError(f"{layer}: Θ has no time projection (a block without time "
                         f"input, as in the VAE): h must be None")
    if h is not None:
        if not isinstance(h, torch.Tensor):
            raise TypeError(f"{layer}: h is a torch.Tensor (B, d_t) or (d_t,); "
                            f"got {type(h).__name__}")
        d_t = theta[time_keys[0]].shape[1]
        h = h[None] if h.dim() == 1 else h
        if h.dim() != 2 or h.shape[1] != d_t or h.shape[0] not in (1, X4.shape[0]):
            raise ValueError(f"{layer}: h must be (B, d_t) = ({X4.shape[0]}, {d_t}) or "
                             f"({d_t},) to match X and Θ; got {tuple(h.shape)}")
    if C_in != C_out and "conv_shortcut.weight" not in theta:
        raise ValueError(f"{layer}: C_in = {C_in} ≠ C_out = {C_out} needs the 1×1 "
                         f"shortcut conv_shortcut.weight ({C_out}, {C_in}, 1, 1) (56)")
    return X4, single, h


def resnet_block_2d(theta: Mapping, X: torch.Tensor, h: torch.Tensor | None = None, *,
                    groups: int = 32, eps: float = EPS_UNET,
                    ops: Ops = BOOK) -> torch.Tensor:
    """ResnetBlock2D as SD-1.5 runs it: Def. 6.15, (52)–(57), corrected. Mirrors
    diffusers' ResnetBlock2D (time_embedding_norm="default", dropout off).

    X: (B, C_in, H, W) or (C_in, H, W) -> (B, C_out, H, W); h: (B, d_t), (d_t,) or None.
    Θ: norm1, conv1, time_emb_proj (when the block takes h), norm2, conv2, and
    conv_shortcut only where C_in ≠ C_out. SD-1.5: k = 3, G = 32, ε = 1e-5 (U-Net), 1e-6
    (VAE). Against the print: one shift Linear(SiLU(h)) added *before* the second norm,
    no scale γ(h); S = X where C_in = C_out. h = None: the VAE's block (no time input,
    where (93)–(94) set h = 0). Ledger: ``ledger.where("(52)")``.
    """
    _check_ops(ops)
    X4, single, h = _resnet_setup(theta, X, h, RESNET_TIME_KEYS, "ResnetBlock2D")
    p = theta["conv1.weight"].shape[-1] // 2                # k = 3 -> p = 1: H×W kept
    U1 = ops.group_norm(sub(theta, "norm1"), X4, groups=groups, eps=eps)      # (52)
    V1 = ops.silu(U1)                                                         # (52)
    W1 = ops.conv2d(sub(theta, "conv1"), V1, padding=p)                       # (52)
    if h is not None:
        # (53)–(54) as SD-1.5 has them: one Linear on SiLU(h), a shift before the norm
        beta = ops.linear(sub(theta, "time_emb_proj"), ops.silu(h))   # (B, C_out)
        W1 = W1 + beta[:, :, None, None]                              # every pixel
    U2 = ops.group_norm(sub(theta, "norm2"), W1, groups=groups, eps=eps)      # (54)
    V2 = ops.silu(U2)                                                         # (55)
    W2 = ops.conv2d(sub(theta, "conv2"), V2, padding=p)                       # (55)
    if "conv_shortcut.weight" in theta:
        S = ops.conv2d(sub(theta, "conv_shortcut"), X4)          # (56) C_in ≠ C_out
    else:
        S = X4                                                   # (56) SD-1.5: S = X
    Y = S + W2                                                                # (57)
    return Y[0] if single else Y


# The printed Def. 6.15's three readings that resnet_block_2d_printed can keep.
FILM_AFTER_NORM = "FiLM after GN"
NO_SILU_ON_H = "Linear(h) without SiLU"
SHORTCUT_ALWAYS = "1×1 shortcut always"
RESNET_SLIPS = (FILM_AFTER_NORM, NO_SILU_ON_H, SHORTCUT_ALWAYS)
PRINTED_TIME_KEYS = ("gamma.weight", "gamma.bias", "beta.weight", "beta.bias")


def printed_resnet_theta(theta: Mapping) -> dict:
    """SD-1.5's ResnetBlock2D Θ in Def. 6.15's parameters, as faithfully as they map.

    Θ^(1)_Conv2d, Θ^(2)_Conv2d, Θ^(1)_GN, Θ^(2)_GN are SD-1.5's own; Θ^(β)_Linear =
    time_emb_proj (SD-1.5's only time projection, a shift); Θ^(γ)_Linear = (0, 1), so
    γ(h) = 1 (SD-1.5 has no scale); Θ^(s)_Conv2d = SD-1.5's conv_shortcut, or the
    identity 1×1 kernel where it has none. Keys: those of resnet_block_2d, plus gamma.*,
    beta.* (for time_emb_proj.*) and conv_shortcut.*.
    """
    _check_theta(theta, "ResnetBlock2D", "diffusers' ResnetBlock2D keys", RESNET_KEYS,
                 RESNET_TIME_KEYS + RESNET_SHORTCUT_KEYS)
    out = {k: v for k, v in theta.items() if not k.startswith("time_emb_proj.")}
    if "time_emb_proj.weight" in theta:
        Wt, bt = theta["time_emb_proj.weight"], theta["time_emb_proj.bias"]
        out |= {"gamma.weight": torch.zeros_like(Wt), "gamma.bias": torch.ones_like(bt),
                "beta.weight": Wt, "beta.bias": bt}
    if "conv_shortcut.weight" not in theta:
        C = theta["conv1.weight"].shape[1]
        Wk = theta["conv1.weight"]
        eye = torch.eye(C, dtype=Wk.dtype, device=Wk.device)[:, :, None, None]
        out |= {"conv_shortcut.weight": eye, "conv_shortcut.bias": Wk.new_zeros(C)}
    return out


def resnet_block_2d_printed(theta: Mapping, X: torch.Tensor,
                            h: torch.Tensor | None = None, *, groups: int = 32,
                            eps: float = EPS_UNET, slips=RESNET_SLIPS,
                            ops: Ops = BOOK) -> torch.Tensor:
    """Def. 6.15, (52)–(57), as printed, keeping the readings named in ``slips``:
    FILM_AFTER_NORM, (54) Û_2 = γ(h) ⊙ GN(W_1) + β(h) (else β(h) is added before the
    norm, as SD-1.5 does); NO_SILU_ON_H, (53) the Linears read h (else SiLU(h));
    SHORTCUT_ALWAYS, (56) S = Conv1x1(X) in every block (Θ^(s) required).
    Θ: resnet_block_2d's keys with gamma.*, beta.* (d_t -> C_out); printed_resnet_theta
    maps SD-1.5's Θ to it. Ledger: ``ledger.where("(52)")``."""
    _check_ops(ops)
    _check_slips(slips, RESNET_SLIPS)
    layer = "ResnetBlock2D (printed)"
    X4, single, h = _resnet_setup(theta, X, h, PRINTED_TIME_KEYS, layer)
    if SHORTCUT_ALWAYS in slips and "conv_shortcut.weight" not in theta:
        raise ValueError(f"{layer}: (56) needs Θ^(s) = conv_shortcut.{{weight,bias}} "
                         f"in every block; see printed_resnet_theta")
    p = theta["conv1.weight"].shape[-1] // 2

    def GN(name, Y):                                          # (18)–(19)
        return ops.group_norm(sub(theta, name), Y, groups=groups, eps=eps)

    W1 = ops.conv2d(sub(theta, "conv1"), ops.silu(GN("norm1", X4)), padding=p)  # (52)
    if h is not None:
        h_in = h if NO_SILU_ON_H in slips else ops.silu(h)            # (53) reads h
        gamma = ops.linear(sub(theta, "gamma"), h_in)[:, :, None, None]        # (53)
        beta = ops.linear(sub(theta, "beta"), h_in)[:, :, None, None]          # (53)
    if h is not None and FILM_AFTER_NORM in slips:
        U2_hat = gamma * GN("norm2", W1) + beta                   # (54) FiLM after GN
    elif h is not None:
        U2_hat = GN("norm2", W1 + beta)                           # SD-1.5's order
    else:
        U2_hat = GN("norm2", W1)                                  # no h: (54) = GN
    W2 = ops.conv2d(sub(theta, "conv2"), ops.silu(U2_hat), padding=p)          # (55)
    if SHORTCUT_ALWAYS in slips or "conv_shortcut.weight" in theta:
        S = ops.conv2d(sub(theta, "conv_shortcut"), X4)                        # (56)
    else:
        S = X4
    Y = S + W2                                                                 # (57)
    return Y[0] if single else Y


# --- the transformer of §6.10: (64)–(66), (69)–(71), (76)–(77) -----------------------

def _count(theta: Mapping, prefix: str, key: str) -> int:
    """How many submodules ``prefix.{i}`` (i = 0, 1, …) Θ holds (by ``.key``)."""
    n = 0
    while f"{prefix}.{n}.{key}" in theta:
        n += 1
    return n


def _check_context(C, T_batch: int, d_ctx: int, layer: str) -> None:
    if not isinstance(C, torch.Tensor):
        raise TypeError(f"{layer}: the context C is a torch.Tensor (B, M, d_ctx); "
                        f"got {type(C).__name__}")
    if C.dim() != 3 or C.shape[-1] != d_ctx or C.shape[0] != T_batch or C.shape[1] < 1:
        raise ValueError(f"{layer}: the context C must be (B, M, d_ctx) with "
                         f"B = {T_batch}, M ≥ 1 tokens and d_ctx = {d_ctx} (to_k, to_v "
                         f"read it); "
                         f"got {tuple(C.shape)}")


def feed_forward(theta: Mapping, T: torch.Tensor, *, ops: Ops = BOOK) -> torch.Tensor:
    """The GEGLU feed-forward of SD-1.5's transformer (not in the lecture). Mirrors
    diffusers' FeedForward(activation_fn="geglu", mult=4).

    [A, G] = T P^T + p (one Linear to 2·4C, split in halves);
    FF(T) = (A ⊙ GELU(G)) Q^T + q. T: (…, C) -> (…, C);
    theta: net.0.proj.{weight (8C, C), bias}, net.2.{weight (C, 4C), bias}.
    Inside SD-1.5's attention stage, (69)–(72) corrected (:func:`transformer_2d`).
    Ledger: ``ledger.where("(69)")``.
    """
    _check_ops(ops)
    _check_theta(theta, "FeedForward",
                 "diffusers' FeedForward: GEGLU net.0.proj, Linear net.2",
                 ("net.0.proj.weight", "net.0.proj.bias", "net.2.weight",
                           "net.2.bias"))
    P = ops.linear(sub(theta, "net.0.proj"), T)               # (…, C) -> (…, 2·4C)
    A, G = P.chunk(2, dim=-1)                                 # values, gates: (…, 4C)
    return ops.linear(sub(theta, "net.2"), A * ops.gelu(G))   # (…, 4C) -> (…, C)


def basic_transformer_block(theta: Mapping, T: torch.Tensor, C: torch.Tensor, *,
                            heads: int = 8, eps: float = EPS_LAYER_NORM,
                            ops: Ops = BOOK) -> torch.Tensor:
    """One BasicTransformerBlock of SD-1.5 (pre-norm, three residual branches):

    T ← T + MHA_self(LN_1(T)),  T ← T + MHA_cross(LN_2(T), C),  T ← T + FF(LN_3(T)).
    T: (B, N, C_t), C: (B, M, d_ctx) -> (B, N, C_t). Θ: norm1-3, attn1, attn2, ff.
    The lecture's (65)–(66) are the two MHA calls alone, each on the previous output.
    """
    def LN(i, T):                                             # LayerNorm i = 1, 2, 3
        return ops.layer_norm(sub(theta, f"norm{i}"), T, eps=eps)

    T = T + ops.attention(sub(theta, "attn1"), LN(1, T), None, heads=heads)   # (65)
    T = T + ops.attention(sub(theta, "attn2"), LN(2, T), C, heads=heads)      # (66)
    T = T + feed_forward(sub(theta, "ff"), LN(3, T), ops=ops)                 # FF
    return T                                                  # (B, N, C_t)


TRANSFORMER_BLOCK_KEYS = tuple(
    [f"norm{i}.{p}" for i in (1, 2, 3) for p in ("weight", "bias")]
    + [f"attn{i}.{m}.weight" for i in (1, 2)
       for m in ("to_q", "to_k", "to_v", "to_out.0")]
    + ["attn1.to_out.0.bias", "attn2.to_out.0.bias",
       "ff.net.0.proj.weight", "ff.net.0.proj.bias", "ff.net.2.weight",
       "ff.net.2.bias"])
TRANSFORMER_KEYS = ("norm.weight", "norm.bias", "proj_in.weight", "proj_in.bias",
                    "proj_out.weight", "proj_out.bias")


def _transformer_setup(theta, X, C, layer) -> tuple[int, int]:
    n = _count(theta, "transformer_blocks", "norm1.weight")
    blocks_keys = tuple(f"transformer_blocks.{j}.{k}"
                        for j in range(n) for k in TRANSFORMER_BLOCK_KEYS)
    _check_theta(theta, layer, "diffusers' Transformer2DModel keys "
                 "(use_linear_projection=False)", TRANSFORMER_KEYS + blocks_keys)
    if n == 0:
        raise ValueError(f"{layer}: Θ has no transformer_blocks.0.*")
    if theta["proj_in.weight"].dim() != 4:
        raise ValueError(f"{layer}: proj_in must be SD-1.5's 1×1 Conv2d (C, C, 1, 1); "
                         f"got {tuple(theta['proj_in.weight'].shape)} (a Linear "
                         f"projection is SD-2's)")
    X4, _ = _image(X, layer)
    if X4.dim() != 4 or X.dim() != 4:
        raise ValueError(f"{layer}: X is a batch (B, C, H, W); got {tuple(X.shape)}")
    if X.shape[1] != theta["norm.weight"].shape[0]:
        raise ValueError(f"{layer}: X has C = {X.shape[1]} channels; Θ (norm, proj_in) "
                         f"expects {theta['norm.weight'].shape[0]}")
    d_ctx = theta["transformer_blocks.0.attn2.to_k.weight"].shape[1]
    _check_context(C, X.shape[0], d_ctx, layer)
    return n, X.shape[1]


def transformer_2d(theta: Mapping, X: torch.Tensor, C: torch.Tensor, *, heads: int = 8,
                   groups: int = 32, eps: float = EPS_TRANSFORMER,
                   ops: Ops = BOOK) -> torch.Tensor:
    """The attention stage of §6.10 as SD-1.5 runs it: diffusers' Transformer2DModel
    (continuous input, use_linear_projection=False, one BasicTransformerBlock).

    X: (B, C, H, W), C: (B, M, d_ctx), any M ≥ 1 -> (B, C, H, W). SD-1.5: G = 32,
    ε = 1e-6 (hard-coded in diffusers), 8 heads of width C/8, d_ctx = 768, M = 77.
    Θ: norm.*, proj_in.* (1×1 conv), transformer_blocks.{j}.*, proj_out.* (1×1 conv).
    (69)–(72) corrected (the same stage is printed as (64)–(67) and (76)–(77)).
    Ledger: ``ledger.where("(69)")``.
    """
    _check_ops(ops)
    n, _ = _transformer_setup(theta, X, C, "Transformer2DModel")
    B, _, H, W = X.shape
    U = ops.group_norm(sub(theta, "norm"), X, groups=groups, eps=eps)   # (B, C, H, W)
    U = ops.conv2d(sub(theta, "proj_in"), U)                            # 1×1 conv
    T = flatten(U)                                           # -> (B, N, C)       (25)
    for j in range(n):                                       # SD-1.5: n = 1
        T = basic_transformer_block(sub(theta, f"transformer_blocks.{j}"), T, C,
                                    heads=heads, ops=ops)
    U = unflatten(T, H, W)                                   # -> (B, C, H, W)    (26)
    return ops.conv2d(sub(theta, "proj_out"), U) + X         # 1×1 conv, + X: residual


def transformer_2d_printed(theta: Mapping, X: torch.Tensor, C: torch.Tensor, *,
                           heads: int = 8, ops: Ops = BOOK) -> torch.Tensor:
    """The attention stage as printed, (64)–(67) = (69)–(72) = (76)–(77): flatten →
    MHA_self → MHA_cross → unflatten, and nothing else.

    With SD-1.5's Θ of a Transformer2DModel, Θ^self_MHA = transformer_blocks.0.attn1 and
    Θ^cross_MHA = transformer_blocks.0.attn2; (31)–(33) are read as corrected in §6.8
    (W_Q, 8 heads, output bias), so that only this stage's own reading is measured.
    Unused, because the print has no place for them: the GroupNorm, proj_in, the three
    LayerNorms, the feed-forward, proj_out, and all four residual connections.
    X: (B, C, H, W) -> (B, C, H, W).
    """
    _check_ops(ops)
    _transformer_setup(theta, X, C, "Transformer2DModel (printed)")
    _, _, H, W = X.shape
    A = sub(theta, "transformer_blocks.0")
    T = flatten(X)                                                     # (64) (B, N, C)
    U = ops.attention(sub(A, "attn1"), T, T, heads=heads)              # (65) self
    V = ops.attention(sub(A, "attn2"), U, C, heads=heads)              # (66) cross
    return unflatten(V, H, W)                                          # (67)


# --- 6.10 the U-Net's blocks -------------------------------------------------------
# Skip states: a down block returns (Y, skips), the tuple of every tensor the up path
# will concatenate; an up block takes them in the order they were made and pops from
# the end.

def _n_resnets(theta, layer) -> int:
    n = _count(theta, "resnets", "norm1.weight")
    if n == 0:
        raise ValueError(f"{layer}: Θ has no resnets.0.* (diffusers' block keys)")
    return n


def _check_block_keys(theta, layer, prefixes) -> None:
    """Every key of a block's Θ belongs to one of its submodules."""
    if not isinstance(theta, Mapping):
        raise TypeError(f"{layer}: Θ is a dict of tensors keyed as the block's "
                        f"state_dict; got {type(theta).__name__}")
    stray = [k for k in theta if not k.startswith(prefixes)]
    if stray:
        raise ValueError(f"{layer}: Θ has keys outside {list(prefixes)}: {stray[:5]}")


def _levels(theta, h, C, heads, groups, eps, ops):
    """Res(r, Y) and Att(r, Y): the r-th ResnetBlock2D and Transformer2DModel of a level
    (r = 1, …, n), bound to the level's Θ, h, C and hyperparameters."""
    def res(r, Y):
        return resnet_block_2d(sub(theta, f"resnets.{r - 1}"), Y, h, groups=groups,
                               eps=eps, ops=ops)

    def att(r, Y):
        return transformer_2d(sub(theta, f"attentions.{r - 1}"), Y, C, heads=heads,
                              groups=groups, ops=ops)
    return res, att


def down_block_2d(theta: Mapping, X: torch.Tensor, h: torch.Tensor, *, groups: int = 32,
                  eps: float = EPS_UNET, padding: int = 1, ops: Ops = BOOK):
    """DownBlock2D as SD-1.5 runs it, Def. 6.16, (58)–(59), corrected. Mirrors
    diffusers' DownBlock2D.

    X: (B, C_in, H, W), h: (B, d_t) -> (Y, skips): Y (B, C, ⌈H/2⌉, ⌈W/2⌉) with a
    downsampler, (B, C, H, W) without; skips = (H_1, …, H_n[, Y]). Θ: resnets.{r}.*,
    downsamplers.0.conv.* (optional). SD-1.5's only DownBlock2D is its last level
    (n = 2), and it has no downsampler. Ledger: ``ledger.where("(58)")``.
    """
    _check_ops(ops)
    _check_block_keys(theta, "DownBlock2D", ("resnets.", "downsamplers.0."))
    n = _n_resnets(theta, "DownBlock2D")
    res, _ = _levels(theta, h, None, None, groups, eps, ops)
    H_r, skips = X, ()                                                  # (58) H_0 = X
    for r in range(1, n + 1):
        H_r = res(r, H_r)                                               # (58)
        skips += (H_r,)                                                 # H_r: a skip
    if "downsamplers.0.conv.weight" in theta:                  # SD-1.5: not at level 4
        H_r = ops.downsample_2d(sub(theta, "downsamplers.0"), H_r,
                                padding=padding)                        # (59)
        skips += (H_r,)                                                 # so is Y
    return H_r, skips


def down_block_2d_printed(theta: Mapping, X: torch.Tensor, h: torch.Tensor, *,
                          groups: int = 32, eps: float = EPS_UNET, padding: int = 1,
                          ops: Ops = BOOK) -> torch.Tensor:
    """Def. 6.16, (58)–(59), as printed: n ResnetBlock2D, then Downsample2D; one output.

    Needs Θ_Down (downsamplers.0.conv.*): SD-1.5's only DownBlock2D has none
    (ValueError).
    """
    _check_ops(ops)
    _check_block_keys(theta, "DownBlock2D (printed)", ("resnets.", "downsamplers.0."))
    if "downsamplers.0.conv.weight" not in theta:
        raise ValueError("DownBlock2D (printed): (59) ends with Downsample2D, but Θ "
                         "has no Θ_Down (downsamplers.0.conv.*); SD-1.5's DownBlock2D, "
                         "the last level, has none")
    n = _n_resnets(theta, "DownBlock2D (printed)")
    res, _ = _levels(theta, h, None, None, groups, eps, ops)
    H_r = X                                                             # (58) H_0 = X
    for r in range(1, n + 1):
        H_r = res(r, H_r)                                               # (58)
    return ops.downsample_2d(sub(theta, "downsamplers.0"), H_r, padding=padding)  # (59)


def _check_skips(skips, n, layer) -> tuple:
    if not isinstance(skips, (tuple, list)) or not all(isinstance(s, torch.Tensor)
                                                         for s in skips):
        raise TypeError(f"{layer}: skips is a tuple of tensors (B, C_s, H, W); "
                        f"got {type(skips).__name__}")
    if len(skips) != n:
        raise ValueError(f"{layer}: its {n} resnets each concatenate one skip state: "
                         f"it needs {n} skips, got {len(skips)}")
    return tuple(skips)


def _concat_skip(Y, S, layer):
    if Y.shape[0] != S.shape[0] or Y.shape[-2:] != S.shape[-2:]:
        raise ValueError(f"{layer}: Concat (27) joins the input from below and a skip "
                         f"of the same batch and size H×W; got {tuple(Y.shape)} and "
                         f"{tuple(S.shape)}")
    return torch.cat([Y, S], dim=1)                             # (27): Y first, then S


def up_block_2d(theta: Mapping, X: torch.Tensor, skips, h: torch.Tensor, *,
                groups: int = 32, eps: float = EPS_UNET,
                output_size: tuple[int, int] | None = None,
                ops: Ops = BOOK) -> torch.Tensor:
    """UpBlock2D as SD-1.5 runs it, Def. 6.17 corrected. Mirrors diffusers' UpBlock2D.

    X: (B, C_x, H, W), skips: n tensors (B, C_s, H, W) in the order the down path made
    them, h: (B, d_t) -> (B, C, 2H, 2W) with an upsampler (or ``output_size``),
    (B, C, H, W) without. Against (60)–(62): a skip is concatenated before *each*
    resnet (the last made first), and the upsampling comes *after* the resnets.
    Θ: resnets.{0..n−1}.*, upsamplers.0.conv.* (optional).
    """
    _check_ops(ops)
    _check_block_keys(theta, "UpBlock2D", ("resnets.", "upsamplers.0."))
    n = _n_resnets(theta, "UpBlock2D")
    skips = _check_skips(skips, n, "UpBlock2D")
    res, _ = _levels(theta, h, None, None, groups, eps, ops)
    Y_r = X
    for r in range(1, n + 1):
        Y_r = _concat_skip(Y_r, skips[n - r], "UpBlock2D")       # (60), once per resnet
        Y_r = res(r, Y_r)                                        # (61)
    if "upsamplers.0.conv.weight" in theta:                      # SD-1.5: not level 1
        Y_r = ops.upsample_2d(sub(theta, "upsamplers.0"), Y_r,
                              output_size=output_size)           # (24), at the end
    return Y_r                                                   # (62)


def up_block_2d_printed(theta: Mapping, X: torch.Tensor, S: torch.Tensor,
                        h: torch.Tensor, *, groups: int = 32, eps: float = EPS_UNET,
                        ops: Ops = BOOK) -> torch.Tensor:
    """Def. 6.17, (60)–(62), as printed: Y_0 = Concat(Upsample2D(X), S), then n resnets.

    One skip S at twice X's resolution. With SD-1.5's Θ the second resnet already fails:
    it expects the input from below *and* another skip (2·C channels), and gets C
    (ValueError at the door).
    """
    layer = "UpBlock2D (printed)"
    _check_ops(ops)
    _check_block_keys(theta, layer, ("resnets.", "upsamplers.0."))
    if "upsamplers.0.conv.weight" not in theta:
        raise ValueError(f"{layer}: (60) starts with Upsample2D, but Θ has no Θ_Up "
                         f"(upsamplers.0.conv.*); SD-1.5's last up level has none")
    n = _n_resnets(theta, layer)
    res, _ = _levels(theta, h, None, None, groups, eps, ops)
    Y_r = _concat_skip(ops.upsample_2d(sub(theta, "upsamplers.0"), X), S, layer)  # (60)
    for r in range(1, n + 1):
        Y_r = res(r, Y_r)                                                   # (61)
    return Y_r                                                              # (62)


# The printed readings of Defs. 6.18–6.20 that the *_printed functions below can keep.
ATTENTION_ONLY = "attention = MHA_self, MHA_cross"     # (64)–(67), (69)–(72), (76)–(77)
CHAIN_SKIPS_ATTENTION = "H_r, not H*_r, feeds the next resnet"   # (68)+(72); (75)+(77)
RES2_TAKES_C = "Res₂(A₁, C)"                            # (67)
UNFLATTEN_Y = "Y*_r = unflatten(Y_r)"                   # (77)


def _attention_stage(theta, X, C, heads, groups, ops, slips):
    if ATTENTION_ONLY in slips:
        return transformer_2d_printed(theta, X, C, heads=heads, ops=ops)   # as printed
    return transformer_2d(theta, X, C, heads=heads, groups=groups, ops=ops)  # SD-1.5


def mid_block_2d_cross_attn(theta: Mapping, X: torch.Tensor, h: torch.Tensor,
                            C: torch.Tensor, *, heads: int = 8, groups: int = 32,
                            eps: float = EPS_UNET, ops: Ops = BOOK) -> torch.Tensor:
    """The mid block as SD-1.5 runs it, Def. 6.18 corrected. Mirrors diffusers'
    UNetMidBlock2DCrossAttn.

    X: (B, C, H, W), h: (B, d_t), C: (B, M, d_ctx) -> (B, C, H, W).
    A_0 = Res_1(X, h), A_1 = Transformer2D(A_0, C), output Res_2(A_1, h): the attention
    stage (64)–(66) is a whole Transformer2DModel, and Res_2 takes h ((67) prints C).
    Θ: resnets.0.*, attentions.0.*, resnets.1.*.
    """
    _check_ops(ops)
    _check_block_keys(theta, "UNetMidBlock2DCrossAttn", ("resnets.", "attentions."))
    n = _n_resnets(theta, "UNetMidBlock2DCrossAttn")
    res, att = _levels(theta, h, C, heads, groups, eps, ops)
    A = res(1, X)                                                   # (63)
    for r in range(2, n + 1):                                       # SD-1.5: n = 2
        A = att(r - 1, A)                                           # (64)–(66)
        A = res(r, A)                                               # (67), with h
    return A


MID_SLIPS = (ATTENTION_ONLY, RES2_TAKES_C)


def _check_slips(slips, allowed) -> None:
    if set(slips) - set(allowed):
        raise ValueError(f"slips must be among {allowed}; "
                         f"got {sorted(set(slips) - set(allowed))}")


def mid_block_2d_cross_attn_printed(theta: Mapping, X: torch.Tensor, h: torch.Tensor,
                                    C: torch.Tensor, *, heads: int = 8,
                                    groups: int = 32, eps: float = EPS_UNET,
                                    slips=MID_SLIPS,
                                    ops: Ops = BOOK) -> torch.Tensor:
    """Def. 6.18, (63)–(67), as printed, keeping the readings in ``slips``:

    * ``ATTENTION_ONLY``: (64)–(67) flatten → MHA_self → MHA_cross → unflatten, no
      norms, no feed-forward, no residuals (see transformer_2d_printed);
    * ``RES2_TAKES_C``: (67) Res_2(A_1, C), the context where (53) needs h ∈ R^d_t:
      ValueError.
    """
    _check_ops(ops)
    _check_slips(slips, MID_SLIPS)
    _check_block_keys(theta, "UNetMidBlock2DCrossAttn (printed)",
                      ("resnets.", "attentions."))
    res, _ = _levels(theta, h, C, heads, groups, eps, ops)
    A0 = res(1, X)                                                           # (63)
    A1 = _attention_stage(sub(theta, "attentions.0"), A0, C, heads, groups, ops,
                          slips)                                             # (64)–(67)
    h2 = C if RES2_TAKES_C in slips else h                                   # (67): C
    return resnet_block_2d(sub(theta, "resnets.1"), A1, h2, groups=groups, eps=eps,
                           ops=ops)                                          # (67)


def cross_attn_down_block_2d(theta: Mapping, X: torch.Tensor, h: torch.Tensor,
                             C: torch.Tensor, *, heads: int = 8, groups: int = 32,
                             eps: float = EPS_UNET, padding: int = 1, ops: Ops = BOOK):
    """CrossAttnDownBlock2D as SD-1.5 runs it, Def. 6.19 corrected. Mirrors diffusers.

    X: (B, C_in, H, W), h: (B, d_t), C: (B, M, d_ctx) -> (Y, skips): Y (B, C, ⌈H/2⌉,
    ⌈W/2⌉) with a downsampler (SD-1.5: levels 1–3 all have one); skips = (H*_1, …,
    H*_n, Y). Against (68)–(73): H_r = Res(H*_{r−1}) (the attention output feeds the
    next resnet), the attention stage is a Transformer2DModel, and every H*_r is a skip.
    Θ: resnets.{r}.*, attentions.{r}.*, downsamplers.0.conv.*.
    """
    _check_ops(ops)
    _check_block_keys(theta, "CrossAttnDownBlock2D",
                      ("resnets.", "attentions.", "downsamplers.0."))
    n = _n_resnets(theta, "CrossAttnDownBlock2D")
    res, att = _levels(theta, h, C, heads, groups, eps, ops)
    H_r, skips = X, ()                                               # H*_0 = X
    for r in range(1, n + 1):
        H_r = res(r, H_r)                                            # (68)
        H_r = att(r, H_r)                                            # (69)–(72): H*_r
        skips += (H_r,)
    if "downsamplers.0.conv.weight" in theta:
        H_r = ops.downsample_2d(sub(theta, "downsamplers.0"), H_r,
                                padding=padding)                     # (73)
        skips += (H_r,)
    return H_r, skips


DOWN_SLIPS = (ATTENTION_ONLY, CHAIN_SKIPS_ATTENTION)


def cross_attn_down_block_2d_printed(theta: Mapping, X: torch.Tensor, h: torch.Tensor,
                                     C: torch.Tensor, *, heads: int = 8,
                                     groups: int = 32, eps: float = EPS_UNET,
                                     padding: int = 1, slips=DOWN_SLIPS,
                                     ops: Ops = BOOK) -> torch.Tensor:
    """Def. 6.19, (68)–(73), as printed, keeping the readings in ``slips``:

    * ``ATTENTION_ONLY``: (69)–(72) flatten → MHA_self → MHA_cross → unflatten;
    * ``CHAIN_SKIPS_ATTENTION``: (68) H_r = Res(H_{r−1}): the next resnet reads the
      resnet's output, so H*_r is used only for r = n, in (73).
    One output, Downsample2D(H*_n) (73); no skip states. Needs Θ_Down.
    """
    layer = "CrossAttnDownBlock2D (printed)"
    _check_ops(ops)
    _check_slips(slips, DOWN_SLIPS)
    _check_block_keys(theta, layer, ("resnets.", "attentions.", "downsamplers.0."))
    if "downsamplers.0.conv.weight" not in theta:
        raise ValueError(f"{layer}: (73) needs Θ_Down (downsamplers.0.conv.*)")
    n = _n_resnets(theta, layer)
    res, _ = _levels(theta, h, C, heads, groups, eps, ops)
    H_r = X                                                           # H_0 = X
    for r in range(1, n + 1):
        H_r = res(r, H_r)                                             # (68)
        H_star = _attention_stage(sub(theta, f"attentions.{r - 1}"), H_r, C, heads,
                                  groups, ops, slips)                 # (69)–(72)
        if CHAIN_SKIPS_ATTENTION not in slips:
            H_r = H_star                                              # SD-1.5's chain
    return ops.downsample_2d(sub(theta, "downsamplers.0"), H_star,
                             padding=padding)                         # (73)


def cross_attn_up_block_2d(theta: Mapping, X: torch.Tensor, skips, h: torch.Tensor,
                           C: torch.Tensor, *, heads: int = 8, groups: int = 32,
                           eps: float = EPS_UNET,
                           output_size: tuple[int, int] | None = None,
                           ops: Ops = BOOK) -> torch.Tensor:
    """CrossAttnUpBlock2D as SD-1.5 runs it, Def. 6.20 corrected. Mirrors diffusers.

    X: (B, C_x, H, W), skips: n tensors (B, C_s, H, W) in the order the down path made
    them, h: (B, d_t), C: (B, M, d_ctx) -> (B, C, 2H, 2W) with an upsampler, (B, C, H,
    W) without (the last level). Against (74)–(78): one skip is concatenated before
    each resnet, each resnet is followed by a Transformer2DModel whose output feeds the
    next step, and the upsampling comes last. Θ: resnets.{r}.*, attentions.{r}.*,
    upsamplers.0.conv.* (optional).
    """
    layer = "CrossAttnUpBlock2D"
    _check_ops(ops)
    _check_block_keys(theta, layer, ("resnets.", "attentions.", "upsamplers.0."))
    n = _n_resnets(theta, layer)
    skips = _check_skips(skips, n, layer)
    res, att = _levels(theta, h, C, heads, groups, eps, ops)
    Y_r = X
    for r in range(1, n + 1):
        Y_r = _concat_skip(Y_r, skips[n - r], layer)           # (74), before each res
        Y_r = res(r, Y_r)                                      # (75)
        Y_r = att(r, Y_r)                                      # (76)–(77): Y*_r
    if "upsamplers.0.conv.weight" in theta:
        Y_r = ops.upsample_2d(sub(theta, "upsamplers.0"), Y_r,
                              output_size=output_size)         # at the end
    return Y_r                                                 # (78)


UP_SLIPS = (ATTENTION_ONLY, CHAIN_SKIPS_ATTENTION, UNFLATTEN_Y)


def cross_attn_up_block_2d_printed(theta: Mapping, X: torch.Tensor, S: torch.Tensor,
                                   h: torch.Tensor, C: torch.Tensor, *, heads: int = 8,
                                   groups: int = 32, eps: float = EPS_UNET,
                                   slips=UP_SLIPS, ops: Ops = BOOK) -> torch.Tensor:
    """Def. 6.20, (74)–(78), as printed, keeping the readings in ``slips``:

    * (74) Y_0 = Concat(Upsample2D(X), S): upsample first, one skip S;
    * ``ATTENTION_ONLY``: (76)–(77) MHA_self, MHA_cross without norms, FF or residuals;
    * ``CHAIN_SKIPS_ATTENTION``: (75) Y_r = Res(Y_{r−1}) reads the resnet output;
    * ``UNFLATTEN_Y``: (77) Y*_r = unflatten(Y_r), the resnet output itself: V_r is
      never used (read as the identity: Y_r is already C×H×W).
    Output Y*_n (78). Needs Θ_Up; with SD-1.5's Θ the second resnet fails (channels).
    """
    layer = "CrossAttnUpBlock2D (printed)"
    _check_ops(ops)
    _check_slips(slips, UP_SLIPS)
    _check_block_keys(theta, layer, ("resnets.", "attentions.", "upsamplers.0."))
    if "upsamplers.0.conv.weight" not in theta:
        raise ValueError(f"{layer}: (74) starts with Upsample2D, but Θ has no Θ_Up "
                         f"(upsamplers.0.conv.*); SD-1.5's last up level has none")
    n = _n_resnets(theta, layer)
    res, _ = _levels(theta, h, C, heads, groups, eps, ops)
    Y_r = _concat_skip(ops.upsample_2d(sub(theta, "upsamplers.0"), X), S, layer)  # (74)
    for r in range(1, n + 1):
        Y_r = res(r, Y_r)                                                    # (75)
        if UNFLATTEN_Y in slips:
            Y_star = Y_r                                                     # (77)
        else:
            Y_star = _attention_stage(sub(theta, f"attentions.{r - 1}"), Y_r, C,
                                      heads, groups, ops, slips)             # (76)–(77)
        if CHAIN_SKIPS_ATTENTION not in slips:
            Y_r = Y_star
    return Y_star                                                            # (78)
