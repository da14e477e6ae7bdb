"""Layers, lecture §4, §6.1–6.7, §6.11: every non-attention layer of SD-1.5 as f(Θ, X).

Each definition of the lecture is a pure function ``f(theta, X, *, hyperparameters)``:

* ``theta`` is the layer's Θ, a dict of tensors keyed exactly as the torch/diffusers
  module's ``state_dict()`` (``{"weight", "bias"}`` for a Conv2d, ``{"conv.weight",
  "conv.bias"}`` for diffusers' Downsample2D/Upsample2D);
* the lecture's superscript hyperparameters (stride, padding, groups, ε, τ) are
  keyword-only;
* an image is the lecture's X ∈ R^{C×H×W} or a batch of them, (B, C, H, W).

Where a vectorised line hides the formula, a slow ``*_literal`` twin sums it term by
term with the lecture's indices, for tiny inputs. Where the lecture's formula, read
literally, is not what SD-1.5 computes, the literal reading is kept beside the corrected
one (``conv2d_as_printed``) and both are rows of the ledger
(``sdanatomy.ledger.layers``). The timestep embedding (28)–(29) lives in
``sdanatomy.lecture.embeddings``; ``scaled_dot_product_attention`` and
``multihead_attention`` (§6.8, (30)–(33)) live in ``sdanatomy.lecture.attention``.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F

from sdanatomy.lecture.notation import to_torch_index

__all__ = [
    "conv_output_size", "conv2d", "conv2d_literal", "conv2d_as_printed",      # 6.1
    "conv2d_theta_shapes", "conv2d_parameter_count",
    "linear", "silu", "softmax", "softmax_literal",                           # 6.2–6.3
    "group_norm", "group_norm_literal",                                       # 6.4
    "downsample_2d", "downsample_2d_nearest", "downsample_2d_average",        # 6.5
    "downsample_2d_asymmetric",
    "interpolate_nearest", "upsample_2d", "upsample_2d_transposed_kernel",
    "concat",                                                                 # 6.6
    "conv1x1", "rgb_head", "sub",                                             # 6.11
]

# GroupNorm's ε in SD-1.5, read off the diffusers modules (see the chapter's table):
EPS_UNET = 1e-5         # U-Net: every ResnetBlock2D and conv_norm_out (config norm_eps)
EPS_TRANSFORMER = 1e-6  # U-Net: the GroupNorm opening each Transformer2DModel (fixed)
EPS_VAE = 1e-6          # VAE decoder: every GroupNorm (fixed resnet_eps, conv_norm_out)


# --- checks at the door ---------------------------------------------------------------

def _check_theta(theta, layer: str, where: str, required, optional=()) -> None:
    if not isinstance(theta, Mapping):
        raise TypeError(f"{layer}: Θ is a dict of tensors keyed as the module's state_dict ({where}); "
                        f"got {type(theta).__name__}")
    missing = [k for k in required if k not in theta]
    unexpected = [k for k in theta if k not in required and k not in optional]
    if missing or unexpected:
        raise ValueError(f"{layer} needs Θ = {{{', '.join(required)}}} ({where}); "
                         f"missing {missing}, unexpected {unexpected}")
    for k, v in theta.items():
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"{layer}: Θ[{k!r}] must be a torch.Tensor; got {type(v).__name__}")


def _image(X, layer: str) -> tuple[torch.Tensor, bool]:
    """X ∈ R^{C×H×W} as a batch of one, or a batch (B, C, H, W) as it is; and whether it was single."""
    if not isinstance(X, torch.Tensor):
        raise TypeError(f"{layer} takes X as a torch.Tensor; got {type(X).__name__}")
    if X.dim() not in (3, 4):
        raise ValueError(f"{layer} takes X ∈ R^(C×H×W) or a batch (B, C, H, W); got shape {tuple(X.shape)}")
    return (X[None], True) if X.dim() == 3 else (X, False)


def _pair(value, name: str, layer: str, minimum: int) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < minimum for v in pair):
        raise ValueError(f"{layer}: {name} is an integer ≥ {minimum} or a pair of them; got {value!r}")
    return pair


def _same_kind(X: torch.Tensor, T: torch.Tensor, layer: str, x: str = "X", t: str = "Θ") -> None:
    """X and the parameters must share dtype and device: say so, not torch's kernel deep inside."""
    if X.dtype != T.dtype:
        raise TypeError(f"{layer}: {x} has dtype {X.dtype} but {t} holds {T.dtype}; cast one to the other")
    if X.device != T.device:
        raise ValueError(f"{layer}: {x} is on device {X.device} but {t} is on {T.device}; move one to the other")


def sub(theta: Mapping, prefix: str) -> dict:
    """The Θ of a submodule: the keys under ``prefix.``, with the prefix removed (state_dict slicing)."""
    return {k[len(prefix) + 1:]: v for k, v in theta.items() if k.startswith(prefix + ".")}


# --- 6.1 Conv2d (13)–(14) -------------------------------------------------------------

def conv_output_size(H: int, k: int, s: int, p: int) -> int:
    """H' = ⌊(H − k + 2p)/s⌋ + 1, Def. 6.1; needs a kernel that fits, k ≤ H + 2p."""
    if k > H + 2 * p:
        raise ValueError(f"Conv2d needs a kernel no larger than the padded input, "
                         f"k ≤ H + 2p (so that H' ≥ 1, Def. 6.1); "
                         f"got k={k}, H={H}, p={p}")
    return (H - k + 2 * p) // s + 1


def conv2d_theta_shapes(C_in: int, C_out: int, k_h: int, k_w: int) -> dict:
    """Θ_Conv2d, Def. 6.1, eq. (13), as the shapes of its tensors.

    {W^(o) ∈ R^(C_in×k_h×k_w), b_o ∈ R}, o = 1, …, C_out, stacked as torch stacks them:
    weight (C_out, C_in, k_h, k_w) and bias (C_out,). Ledger: ``ledger.where("(13)")``.
    """
    for name, v in (("C_in", C_in), ("C_out", C_out), ("k_h", k_h), ("k_w", k_w)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"Θ_Conv2d (13) needs a positive integer {name}; "
                             f"got {v!r}")
    return {"weight": (C_out, C_in, k_h, k_w), "bias": (C_out,)}


def conv2d_parameter_count(C_in: int, C_out: int, k_h: int, k_w: int) -> int:
    """|Θ_Conv2d| of (13): C_out kernels of C_in·k_h·k_w numbers and one bias each."""
    conv2d_theta_shapes(C_in, C_out, k_h, k_w)                 # the same checks
    return C_out * (C_in * k_h * k_w + 1)


def _conv_setup(theta, X, stride, padding, bias, layer="Conv2d"):
    """Check (13) against X; return the batch, the kernels W^(o), b, s, p, the output size, single."""
    keys = ("weight", "bias") if bias else ("weight",)
    _check_theta(theta, layer, "(13): W^(o) stacked as weight (C_out, C_in, k_h, k_w), b as bias (C_out,)",
                 keys)
    X4, single = _image(X, layer)
    Wk = theta["weight"]
    if Wk.dim() != 4:
        raise ValueError(f"{layer}: Θ['weight'] stacks W^(o) ∈ R^(C_in×k_h×k_w), "
                         f"shape (C_out, C_in, k_h, k_w); got {tuple(Wk.shape)}")
    C_out, C_in, k_h, k_w = Wk.shape
    _same_kind(X4, Wk, layer)
    b = theta["bias"] if bias else Wk.new_zeros(C_out)
    if b.shape != (C_out,):
        raise ValueError(f"{layer}: Θ['bias'] holds b_o for o ∈ [1, C_out], shape ({C_out},); "
                         f"got {tuple(b.shape)}")
    if X4.shape[1] != C_in:
        raise ValueError(f"{layer}: X has C_in = {X4.shape[1]} channels but Θ's kernels expect "
                         f"C_in = {C_in} (13)")
    (s_h, s_w), (p_h, p_w) = _pair(stride, "stride", layer, 1), _pair(padding, "padding", layer, 0)
    H, W = X4.shape[-2:]
    H_out, W_out = conv_output_size(H, k_h, s_h, p_h), conv_output_size(W, k_w, s_w, p_w)
    return X4, Wk, b, (s_h, s_w), (p_h, p_w), (H_out, W_out), single


def conv2d(theta: Mapping, X: torch.Tensor, *, stride=1, padding=0,
           bias: bool = True) -> torch.Tensor:
    """Conv2d^(k_h,k_w; s_h,s_w; p_h,p_w), Def. 6.1, eq. (14), vectorised; as F.conv2d.

    X: (B, C_in, H, W) or (C_in, H, W) -> (B, C_out, H', W')
    theta: weight (C_out, C_in, k_h, k_w), bias (C_out,)
    Zero padding, no dilation, no channel groups: the only Conv2d SD-1.5 uses.
    """
    X4, Wk, b, (s_h, s_w), (p_h, p_w), _, single = _conv_setup(
        theta, X, stride, padding, bias)
    k_h, k_w = Wk.shape[-2:]
    Xp = F.pad(X4, (p_w, p_w, p_h, p_h))        # zero padding: (B, C_in, H + 2p_h, …)
    patches = Xp.unfold(2, k_h, s_h).unfold(3, k_w, s_w)   # (B, C_in, H', W', k_h, k_w)
    # (14), 0-based: Y[o,i,j] = b_o + Σ_{c,u,v} W^(o)[c,u,v] · Xp[c, i·s_h+u, j·s_w+v]
    Y = torch.einsum("ocuv,bcijuv->boij", Wk, patches) + b[:, None, None]
    return Y[0] if single else Y


def _conv2d_loops(theta, X, stride, padding, bias, first: int) -> torch.Tensor:
    """(14) term by term, every index 1-based; window i starts at row (i − first)·s_h.

    The lecture's X has no batch axis; a batch rides along on the first axis of X4, Y.
    """
    X4, Wk, b, (s_h, s_w), (p_h, p_w), (H_out, W_out), single = _conv_setup(
        theta, X, stride, padding, bias)
    B, C_in, H, W = X4.shape
    C_out, _, k_h, k_w = Wk.shape
    Y = X4.new_empty(B, C_out, H_out, W_out)
    for o in range(1, C_out + 1):
        for i in range(1, H_out + 1):
            for j in range(1, W_out + 1):
                y = b[o - 1]                                      # b_o
                for c in range(1, C_in + 1):
                    for u in range(1, k_h + 1):
                        for v in range(1, k_w + 1):
                            r = (i - first) * s_h + u - p_h       # the row (14) reads
                            q = (j - first) * s_w + v - p_w       # and its column
                            if 1 <= r <= H and 1 <= q <= W:       # else: zero padding
                                w = Wk[o - 1, c - 1, u - 1, v - 1]      # W^(o)_{c,u,v}
                                x = X4[:, c - 1, to_torch_index(r, H),
                                       to_torch_index(q, W)]            # X_{c,r,q}
                                y = y + w * x
                Y[:, o - 1, i - 1, j - 1] = y                     # Y_{o,i,j}
    return Y[0] if single else Y


def conv2d_literal(theta: Mapping, X: torch.Tensor, *, stride=1, padding=0,
                   bias: bool = True) -> torch.Tensor:
    """(14) corrected, summed literally with the lecture's 1-based indices (tiny X):

    Y_{o,i,j} = b_o + Σ_{c=1}^{C_in} Σ_{u=1}^{k_h} Σ_{v=1}^{k_w} W^(o)_{c,u,v} X_{c,r,q}
    r = (i−1)s_h + u − p_h,  q = (j−1)s_w + v − p_w
    """
    return _conv2d_loops(theta, X, stride, padding, bias, first=1)


def conv2d_as_printed(theta: Mapping, X: torch.Tensor, *, stride=1, padding=0,
                      bias: bool = True) -> torch.Tensor:
    """(14) exactly as printed, every index 1-based as in §2: input row i·s_h + u − p_h.

    Not what torch computes: window i starts one stride too late (ledger: *differs*).
    """
    return _conv2d_loops(theta, X, stride, padding, bias, first=0)


# --- 6.2 Linear (15), 6.3 SiLU (16) and Softmax (17) ----------------------------------

def linear(theta: Mapping, x: torch.Tensor, *, bias: bool = True) -> torch.Tensor:
    """Linear, Def. 6.2, eq. (15): y = W x + b. Mirrors torch.nn.functional.linear.

    x: (…, d_in) -> (…, d_out); theta: weight (d_out, d_in), bias (d_out,)
    """
    _check_theta(theta, "Linear", "(15): W as weight (d_out, d_in), b as bias (d_out,)",
                 ("weight", "bias") if bias else ("weight",))
    W = theta["weight"]
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"Linear takes x as a torch.Tensor; got {type(x).__name__}")
    if x.dim() < 1 or W.dim() != 2:
        raise ValueError(f"Linear maps x ∈ R^d_in with W ∈ R^(d_out×d_in); "
                         f"got x {tuple(x.shape)}, W {tuple(W.shape)}")
    if x.shape[-1] != W.shape[1]:
        raise ValueError(f"Linear: x has d_in = {x.shape[-1]} but W ∈ R^(d_out×d_in) "
                         f"has d_in = {W.shape[1]} (15)")
    _same_kind(x, W, "Linear", "x")
    b = theta["bias"] if bias else W.new_zeros(W.shape[0])
    if b.shape != W.shape[:1]:
        raise ValueError(f"Linear: b ∈ R^d_out needs shape ({W.shape[0]},); "
                         f"got {tuple(b.shape)} (15)")
    y = x @ W.T + b                         # (15): y = W x + b, for each row x of x
    return y


def silu(u: torch.Tensor) -> torch.Tensor:
    """SiLU, Def. 6.3, eq. (16): u σ(u), σ(u) = 1/(1 + e^{−u}). Mirrors F.silu.

    Componentwise: u of any shape -> the same shape.
    """
    if not isinstance(u, torch.Tensor):
        raise TypeError(f"SiLU takes a torch.Tensor; got {type(u).__name__}")
    sigma = 1 / (1 + torch.exp(-u))                           # (16): σ(u)
    return u * sigma


def _check_softmax(x, tau) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"Softmax takes x as a torch.Tensor; got {type(x).__name__}")
    if x.dim() < 1:
        raise ValueError("Softmax takes x ∈ R^n (the last axis), got a scalar")
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not 0 < tau < math.inf:
        raise ValueError(f"Softmax needs a temperature τ > 0, a finite real (Def. 6.4); got τ={tau!r}")


def softmax_literal(x: torch.Tensor, *, tau: float = 1.0) -> torch.Tensor:
    """(17) as printed: exp(x_i/τ) / Σ_j exp(x_j/τ) over the last axis. Overflows."""
    _check_softmax(x, tau)
    e = torch.exp(x / tau)
    return e / e.sum(dim=-1, keepdim=True)


def softmax(x: torch.Tensor, *, tau: float = 1.0) -> torch.Tensor:
    """Softmax^(τ), Def. 6.4, eq. (17), over the last axis (torch.softmax(x / τ, -1)).

    Computed as (17) with m = max_j x_j/τ subtracted first: the same value (the ratio is
    shift invariant) without overflow.
    """
    _check_softmax(x, tau)
    z = x / tau
    e = torch.exp(z - z.amax(dim=-1, keepdim=True))           # exp(x_i/τ − m) ≤ 1
    return e / e.sum(dim=-1, keepdim=True)                    # (17)


# --- 6.4 GroupNorm (18)–(19) ----------------------------------------------------------

def _group_norm_setup(theta, X, groups, eps=EPS_UNET):
    _check_theta(theta, "GroupNorm", "Def. 6.5: γ as weight (C,), β as bias (C,)", ("weight", "bias"))
    X4, single = _image(X, "GroupNorm")
    C = X4.shape[1]
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1 or C % groups:
        raise ValueError(f"GroupNorm needs G | C (Def. 6.5); got C={C}, G={groups}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        raise ValueError(f"GroupNorm needs ε > 0 (Def. 6.5: it keeps √(σ_g² + ε) away from 0); got ε={eps!r}")
    gamma, beta = theta["weight"], theta["bias"]
    if gamma.shape != (C,) or beta.shape != (C,):
        raise ValueError(f"GroupNorm: γ, β ∈ R^C need shape ({C},) for X with C = {C} channels; "
                         f"got {tuple(gamma.shape)}, {tuple(beta.shape)}")
    return X4, gamma, beta, single


def group_norm(theta: Mapping, X: torch.Tensor, *, groups: int = 32,
               eps: float = EPS_UNET) -> torch.Tensor:
    """GroupNorm^(G), Def. 6.5, eqs. (18)–(19). Mirrors torch.nn.GroupNorm(G, C, eps).

    X: (B, C, H, W) or (C, H, W) -> same shape; theta: weight γ (C,), bias β (C,).
    Group g holds the contiguous channels (g−1)·C/G + 1, …, g·C/G.
    ε: U-Net 1e-5, VAE 1e-6.
    """
    X4, gamma, beta, single = _group_norm_setup(theta, X, groups, eps)
    B, C, H, W = X4.shape
    Xg = X4.reshape(B, groups, C // groups * H * W)       # (B, G, |S_g|): the groups
    mu = Xg.mean(dim=-1, keepdim=True)                    # (18): μ_g
    var = ((Xg - mu) ** 2).mean(dim=-1, keepdim=True)     # (18): σ_g², biased (1/|S_g|)
    Xhat = ((Xg - mu) / torch.sqrt(var + eps)).reshape(B, C, H, W)
    Y = gamma[:, None, None] * Xhat + beta[:, None, None]     # (19)
    return Y[0] if single else Y


def group_norm_literal(theta: Mapping, X: torch.Tensor, *, groups: int = 32,
                       eps: float = EPS_UNET) -> torch.Tensor:
    """(18)–(19) term by term with 1-based c, i, j (tiny inputs).

    S_g = {(c, i, j) : g(c) = g}, g(c) = ⌈c·G/C⌉.
    """
    X4, gamma, beta, single = _group_norm_setup(theta, X, groups, eps)
    B, C, H, W = X4.shape
    g_of = {c: -(-c * groups // C) for c in range(1, C + 1)}  # g(c) = ⌈c·G/C⌉
    Y = torch.empty_like(X4)
    for n in range(B):
        Xn = X4[n]                                            # image n of the batch
        for g in range(1, groups + 1):
            S = [(c, i, j) for c in range(1, C + 1) if g_of[c] == g
                 for i in range(1, H + 1) for j in range(1, W + 1)]
            # (18): μ_g and σ_g², the mean and the biased variance over S_g
            mu = sum(Xn[c - 1, i - 1, j - 1] for c, i, j in S) / len(S)
            var = sum((Xn[c - 1, i - 1, j - 1] - mu) ** 2 for c, i, j in S) / len(S)
            sd = torch.sqrt(var + eps)
            for c, i, j in S:                                 # (19)
                x = Xn[c - 1, i - 1, j - 1]
                Y[n, c - 1, i - 1, j - 1] = gamma[c - 1] * (x - mu) / sd + beta[c - 1]
    return Y[0] if single else Y


# --- 6.5 Down- and upsampling (20)–(24) -----------------------------------------------

def downsample_2d(theta: Mapping, X: torch.Tensor, *, padding: int = 1) -> torch.Tensor:
    """Downsample2D^(2), Def. 6.6, eq. (20): Conv2d^(k,k; 2,2; p,p). Mirrors diffusers'.

    SD-1.5's U-Net: k = 3 (from Θ), p = 1 (downsample_padding): H' = ⌈H/2⌉.
    X: (B, C, H, W) -> (B, C, ⌈H/2⌉, ⌈W/2⌉)
    theta: conv.weight (C, C, 3, 3), conv.bias (C,)
    """
    _check_theta(theta, "Downsample2D",
                 "(20): diffusers' Downsample2D holds the Conv2d as conv",
                 ("conv.weight", "conv.bias"))
    return conv2d(sub(theta, "conv"), X, stride=2, padding=padding)   # (20)


def downsample_2d_asymmetric(theta: Mapping, X: torch.Tensor) -> torch.Tensor:
    """Downsample2D of SD-1.5's VAE encoder: one zero row at the bottom and one zero
    column at the right, then (20) with p = 0: Conv2d^(3,3; 2,2; 0,0)(pad(X)).

    Mirrors diffusers' Downsample2D(padding=0), which pads (0, 1, 0, 1) itself: not the
    symmetric (p_h, p_w) of (14). X: (B, C, H, W) -> (B, C, ⌊H/2⌋, ⌊W/2⌋)
    theta: conv.weight (C, C, 3, 3), conv.bias (C,). Ledger: ``ledger.where("(20)")``.
    """
    _check_theta(theta, "Downsample2D (VAE encoder)",
                 "(20): diffusers' Downsample2D holds the Conv2d as conv",
                 ("conv.weight", "conv.bias"))
    X4, single = _image(X, "Downsample2D (VAE encoder)")
    Xp = F.pad(X4, (0, 1, 0, 1))                  # left 0, right 1, top 0, bottom 1
    Y = conv2d(sub(theta, "conv"), Xp, stride=2, padding=0)            # (20), p = 0
    return Y[0] if single else Y


def _halved(X, layer) -> tuple[torch.Tensor, bool, int, int]:
    X4, single = _image(X, layer)
    H2, W2 = X4.shape[-2] // 2, X4.shape[-1] // 2
    if H2 < 1 or W2 < 1:
        raise ValueError(f"{layer} needs H, W ≥ 2 so that the output C×⌊H/2⌋×⌊W/2⌋ is not empty; "
                         f"got H×W = {X4.shape[-2]}×{X4.shape[-1]}")
    return X4, single, H2, W2


def downsample_2d_nearest(X: torch.Tensor) -> torch.Tensor:
    """Downsample2DNearest, Def. 6.7, eq. (21), 0-based: Y_{c,i,j} = X_{c,2i,2j}.

    X: (B, C, H, W) -> (B, C, ⌊H/2⌋, ⌊W/2⌋), 0 ≤ i < ⌊H/2⌋; no Θ.
    """
    X4, single, H2, W2 = _halved(X, "Downsample2DNearest")
    Y = X4[..., 0:2 * H2:2, 0:2 * W2:2]                      # (21): rows 2i, columns 2j
    return Y[0] if single else Y


def downsample_2d_average(X: torch.Tensor) -> torch.Tensor:
    """Downsample2DAverage, Def. 6.8, eq. (22), 0-based:

    Y_{c,i,j} = ¼ Σ_{u,v ∈ {0,1}} X_{c,2i+u,2j+v}.
    X: (B, C, H, W) -> (B, C, ⌊H/2⌋, ⌊W/2⌋); no Θ. It is Downsample2D(use_conv=False).
    """
    X4, single, H2, W2 = _halved(X, "Downsample2DAverage")
    Y = sum(X4[..., u:2 * H2:2, v:2 * W2:2] for u in (0, 1) for v in (0, 1)) / 4  # (22)
    return Y[0] if single else Y


def _nearest_source(n_in: int, n_out: int) -> torch.Tensor:
    """The input index torch's nearest mode reads for each output index (ATen's nearest_idx).

    ×2 is exact, i ↦ ⌊i/2⌋ (23); any other size uses the float32 scale n_in/n_out, as ATen does.
    """
    i = torch.arange(n_out)
    if n_out == 2 * n_in:
        return i // 2
    scale = torch.tensor(n_in, dtype=torch.float32) / n_out
    return torch.floor(i.to(torch.float32) * scale).long().clamp(max=n_in - 1)


def interpolate_nearest(X: torch.Tensor, *,
                        size: tuple[int, int] | None = None) -> torch.Tensor:
    """Interpolate^(×2, nearest), Def. 6.9, eq. (23), 0-based:

    Z_{c,2i+u,2j+v} = X_{c,i,j}, u, v ∈ {0, 1}; X: (B, C, H, W) -> (B, C, 2H, 2W).
    Mirrors F.interpolate(X, scale_factor=2, mode="nearest"). ``size=(H_out, W_out)``
    (beyond the lecture) is diffusers' ``upsample_size`` when 8 ∤ H or W, as in
    F.interpolate(X, size=size, mode="nearest").
    """
    X4, single = _image(X, "Interpolate")
    H, W = X4.shape[-2:]
    if size is None:
        Z = X4.new_empty(*X4.shape[:2], 2 * H, 2 * W)
        for u in (0, 1):
            for v in (0, 1):
                Z[..., u::2, v::2] = X4            # (23): Z[2i+u, 2j+v] = X[i, j]
    else:
        H_out, W_out = _pair(size, "size", "Interpolate", 1)
        Z = X4[..., _nearest_source(H, H_out), :][..., _nearest_source(W, W_out)]
    return Z[0] if single else Z


def upsample_2d(theta: Mapping, X: torch.Tensor, *, padding: int = 1,
                output_size: tuple[int, int] | None = None) -> torch.Tensor:
    """Upsample2D^(2), Def. 6.10, eq. (24): Conv2d^(k,k; 1,1; p,p) ∘ Interpolate^(×2).

    Mirrors diffusers' Upsample2D(use_conv=True); SD-1.5: k = 3 (from Θ), p = 1, in the
    U-Net and the VAE decoder. X: (B, C, H, W) -> (B, C, 2H, 2W);
    theta: conv.weight (C, C, 3, 3), conv.bias (C,)
    """
    _check_theta(theta, "Upsample2D",
                 "(24): diffusers' Upsample2D holds the Conv2d as conv",
                 ("conv.weight", "conv.bias"))
    Z = interpolate_nearest(X, size=output_size)                # (23): (B, C, 2H, 2W)
    return conv2d(sub(theta, "conv"), Z, stride=1, padding=padding)   # (24)


def upsample_2d_transposed_kernel(Wk: torch.Tensor) -> torch.Tensor:
    """Upsample2D (24) with k = 3, p = 1 as one stride-2 transposed convolution (k = 4, p = 1).

    Z = Interpolate(X) repeats each x_i at 2i and 2i + 1, so x_i meets kernel tap u of the 3-tap
    convolution at output 2i + 1 − u and 2i + 2 − u: output 2i − 1 + a collects the taps S(a),
    S = ({2}, {1, 2}, {0, 1}, {0}) (0-based). Returns K (C_in, C_out, 4, 4) for F.conv_transpose2d:
    K[c, o, a, b] = Σ_{u ∈ S(a), v ∈ S(b)} W[o, c, u, v]: 16 taps tied to 9 weights.
    """
    if not isinstance(Wk, torch.Tensor) or Wk.dim() != 4 or Wk.shape[-2:] != (3, 3):
        raise ValueError(f"the tied transposed kernel is for SD-1.5's 3×3 Upsample2D kernel "
                         f"(C_out, C_in, 3, 3); got {getattr(Wk, 'shape', type(Wk))}")
    S = ((2,), (1, 2), (0, 1), (0,))
    rows = [torch.stack([Wk[:, :, list(S[a])][:, :, :, list(S[b])].sum(dim=(-2, -1)) for b in range(4)], dim=-1)
            for a in range(4)]
    K = torch.stack(rows, dim=-2)                             # (C_out, C_in, 4, 4)
    return K.transpose(0, 1)                                  # conv_transpose2d wants (C_in, C_out, 4, 4)


# --- 6.6 Concat (27); flatten (25) and unflatten (26) live in sdanatomy.lecture.notatio

def concat(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """Concat, Def. 6.11, eq. (27): A ⊕ B along the channel axis.

    (C_A, H, W), (C_B, H, W) -> (C_A + C_B, H, W), or the same with a batch axis first.
    diffusers' up blocks call torch.cat([X, S], dim=1): the input from below, the skip.
    """
    A4, single_a = _image(A, "Concat")
    B4, single_b = _image(B, "Concat")
    if (single_a != single_b or A4.shape[0] != B4.shape[0]
            or A4.shape[-2:] != B4.shape[-2:]):
        raise ValueError(f"Concat (27) joins tensors that agree in everything but C "
                         f"(batch, H, W); got {tuple(A.shape)} and {tuple(B.shape)}")
    _same_kind(B4, A4, "Concat", "B", "A")
    Y = torch.cat([A4, B4], dim=1)                # (27): channels of A, then those of B
    return Y[0] if single_a else Y


# --- 6.11 Conv1x1 (Def. 6.21) and the RGB head SD-1.5 really has ----------------------

def conv1x1(theta: Mapping, X: torch.Tensor) -> torch.Tensor:
    """Conv1x1 := Conv2d^(1,1; 1,1; 0,0), Def. 6.21: one Linear (15) at every pixel.

    X: (B, C_in, H, W) -> (B, C_out, H, W)
    theta: weight (C_out, C_in, 1, 1), bias (C_out,)
    The printed output head of the U-Net, (90), and of the VAE decoder, (95).
    Ledger: ``ledger.where("(90)")``.
    """
    Wk = theta.get("weight") if isinstance(theta, Mapping) else None
    if isinstance(Wk, torch.Tensor) and Wk.shape[-2:] != (1, 1):
        raise ValueError(f"Conv1x1 (Def. 6.21) needs a 1×1 kernel; "
                         f"got k = {tuple(Wk.shape[-2:])}")
    return conv2d(theta, X, stride=1, padding=0)


def rgb_head(theta: Mapping, X: torch.Tensor, *, groups: int = 32, eps: float = EPS_VAE) -> torch.Tensor:
    """The VAE decoder's last map to RGB as SD-1.5 has it (not Def. 6.21's Conv1x1):

    X̂ = Conv2d^(3,3; 1,1; 1,1)(SiLU(GroupNorm^(32), ε=1e-6 (X))):
    diffusers' Decoder.conv_norm_out → conv_act → conv_out.
    X: (B, 128, H, W) -> (B, 3, H, W); theta: conv_norm_out.{weight,bias}, conv_out.{weight,bias}
    It is (95) corrected; with ε = 1e-5 the same map is the U-Net's output head, (90) corrected
    (``unet.unet`` computes it inline, 320 -> 4 channels). Ledger: ``ledger.where("(90)")``.
    """
    _check_theta(theta, "RGB head", "diffusers' Decoder: conv_norm_out, conv_out",
                 ("conv_norm_out.weight", "conv_norm_out.bias", "conv_out.weight", "conv_out.bias"))
    U = group_norm(sub(theta, "conv_norm_out"), X, groups=groups, eps=eps)   # (18)–(19)
    return conv2d(sub(theta, "conv_out"), silu(U), stride=1, padding=1)      # (16), (14)
