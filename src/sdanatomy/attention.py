"""Attention as a soft dictionary, lecture §6.8: Defs. 6.13–6.14, Props. 6.1–6.2, Ex. 6.1–6.2.

ScaledDotProductAttention (30) and MultiheadAttention (31)–(33) as pure functions of their
inputs and of a parameter dict Θ whose keys are those of diffusers' ``Attention`` module
(``to_q.weight``, ``to_k.weight``, ``to_v.weight``, ``to_out.0.weight``, ``to_out.0.bias``).

The lecture multiplies from the right, ``Q = X W_Q`` with ``W_Q ∈ R^{d_in × d}``; torch's
``nn.Linear`` stores the transpose, ``weight ∈ R^{d × d_in}``, and computes ``X weight^T``.
:func:`lecture_matrices` is the one place where the two meet.

The printed definitions contain three readings that SD-1.5 does not run; each has a
function (``*_printed``) next to the corrected one, and a ledger row that measures it:

* (30) writes ``Softmax^{(√d)^{-1}}(QK^T / √d)``: with (17)'s temperature τ = 1/√d the two
  scalings cancel, and the scores enter the softmax unscaled;
* (31)–(32) name the query projection ``W_O`` (twice defined) where ``W_Q`` is meant;
* (33) has one head and no output bias; SD-1.5 runs 8 heads of width C/8 and adds ``to_out.0.bias``.

Shape alphabet (notation.SHAPE_ALPHABET): N queries, M keys/values, d head width, d_v value
width, h heads, C = d_in the token width, d_ctx the context width (768 for SD-1.5's CLIP).
"""
from __future__ import annotations

import copy
import functools
import math

import torch
import torch.nn.functional as F

from . import ledger, notation

# The three printed readings of Def. 6.14 that multihead_attention_printed can keep.
Q_FROM_W_O, ONE_HEAD, NO_OUTPUT_BIAS = "Q = X W_O", "one head", "no b_O"
PRINTED_SLIPS = (Q_FROM_W_O, ONE_HEAD, NO_OUTPUT_BIAS)
THETA_MHA_WEIGHTS = ("to_q.weight", "to_k.weight", "to_v.weight", "to_out.0.weight")
THETA_MHA_OPTIONAL = ("to_out.0.bias",)


# --- softmax with temperature (17) --------------------------------------------------------

def _softmax(x: torch.Tensor, *, tau: float = 1.0, dim: int = -1) -> torch.Tensor:
    """Softmax^{(τ)}, Def. 6.4, eq. (17): exp(x_i/τ) / Σ_j exp(x_j/τ) along ``dim``.

    A private copy of ``layers.softmax`` (three lines), so that this module does not depend on
    one written in parallel; torch.softmax subtracts the maximum first, which (17) allows.
    """
    if not (isinstance(tau, (int, float)) and not isinstance(tau, bool) and tau > 0 and math.isfinite(tau)):
        raise ValueError(f"Softmax^(τ) needs a temperature τ > 0 (Def. 6.4); got τ={tau!r}")
    return torch.softmax(x / tau, dim=dim)   # (17)


# --- ScaledDotProductAttention (30) -------------------------------------------------------

def _check_qkv(Q, K, V) -> int:
    """Shapes of (30): Q (…, N, d), K (…, M, d), V (…, M, d_v); returns d."""
    for name, T in (("Q", Q), ("K", K), ("V", V)):
        if not isinstance(T, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor; got {type(T).__name__}")
        if T.dim() < 2:
            raise ValueError(f"{name} must be a matrix (…, rows, width) (Def. 6.13); got shape {tuple(T.shape)}")
    if not Q.dim() == K.dim() == V.dim():
        raise ValueError(f"Q, K, V must have the same number of axes; got shapes "
                         f"{tuple(Q.shape)}, {tuple(K.shape)}, {tuple(V.shape)}")
    if Q.shape[-1] != K.shape[-1]:
        raise ValueError(f"(30) needs Q ∈ R^(N×d) and K ∈ R^(M×d) with the same d; "
                         f"got d={Q.shape[-1]} for Q and d={K.shape[-1]} for K")
    if K.shape[-2] != V.shape[-2]:
        raise ValueError(f"(30) needs K ∈ R^(M×d) and V ∈ R^(M×d_v) with the same M (one value per key); "
                         f"got M={K.shape[-2]} for K and M={V.shape[-2]} for V")
    if not Q.shape[:-2] == K.shape[:-2] == V.shape[:-2]:
        raise ValueError(f"Q, K, V must share their leading (batch, head) axes; got "
                         f"{tuple(Q.shape[:-2])}, {tuple(K.shape[:-2])}, {tuple(V.shape[:-2])}")
    return Q.shape[-1]


def scaled_dot_product_attention(Q: torch.Tensor, K: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """ScaledDotProductAttention, Def. 6.13, eq. (30), as PyTorch computes it.

    Q (…, N, d), K (…, M, d), V (…, M, d_v) -> (…, N, d_v):
    Softmax^{(1)}(Q K^T / √d) V, equivalently Softmax^{(√d)}(Q K^T) V.
    Mirrors torch.nn.functional.scaled_dot_product_attention (no mask, no dropout).
    """
    d = _check_qkv(Q, K, V)
    S = Q @ K.transpose(-1, -2) / math.sqrt(d)   # (…, N, d) @ (…, d, M) -> (…, N, M)   (30)
    P = _softmax(S, tau=1.0)                    # each row sums to 1: π(q_n), (35)
    return P @ V                                # (…, N, M) @ (…, M, d_v) -> (…, N, d_v)


def scaled_dot_product_attention_printed(Q: torch.Tensor, K: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """Eq. (30) exactly as printed: Softmax^{(√d)^{-1}}(Q K^T / √d) V with (17)'s temperature.

    τ = (√d)^{-1} multiplies the scores by √d again, undoing the division: this is
    Softmax(Q K^T) V, attention *without* scaling. Kept to measure the slip (ledger).
    """
    d = _check_qkv(Q, K, V)
    S = Q @ K.transpose(-1, -2) / math.sqrt(d)   # (…, N, M)
    P = _softmax(S, tau=1 / math.sqrt(d))        # (17) with τ = 1/√d: exp(S·√d) = exp(QK^T)
    return P @ V


# --- the dictionary reading, §6.8.1 -------------------------------------------------------

def _check_axes(T, name: str, axes: int) -> None:
    if not isinstance(T, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(T).__name__}")
    if T.dim() != axes:
        what = "a vector (1 axis)" if axes == 1 else "a matrix (2 axes)"
        raise ValueError(f"{name} must be {what}; got shape {tuple(T.shape)}")


def attention_weights(q: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """π(q) ∈ R^M, eq. (35): π_m(q) = exp(⟨q, k_m⟩/√d) / Σ_j exp(⟨q, k_j⟩/√d), term by term.

    q (d,), K (M, d) with rows k_m^T. The inner products are notation.inner, eq. (2).
    """
    _check_axes(q, "q", 1)
    _check_axes(K, "K", 2)
    M, d = K.shape
    if q.shape[0] != d:
        raise ValueError(f"(35) needs q and the keys k_m in the same R^d; got q ∈ R^{q.shape[0]}, k_m ∈ R^{d}")
    i = notation.to_torch_index
    s = torch.stack([notation.inner(q, K[i(m, M)]) / math.sqrt(d)      # ⟨q, k_m⟩/√d
                     for m in notation.integer_range(M)])
    e = torch.exp(s - s.max())          # the common factor exp(−max) cancels in (35)
    return e / e.sum()                  # (35)


def soft_lookup(Q: torch.Tensor, K: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """Proposition 6.1, eq. (34), literally: row n of the output is Σ_m π_m(q_n) v_m.

    Q (N, d), K (M, d), V (M, d_v) -> (N, d_v); a slow loop over queries and keys, for tiny inputs.
    """
    _check_qkv(Q, K, V)
    for name, T in (("Q", Q), ("K", K), ("V", V)):
        _check_axes(T, name, 2)
    (N, _), (M, _) = Q.shape, K.shape
    i = notation.to_torch_index
    rows = []
    for n in notation.integer_range(N):
        pi = attention_weights(Q[i(n, N)], K)                                  # (35)
        rows.append(sum(pi[i(m, M)] * V[i(m, M)] for m in notation.integer_range(M)))   # (34)
    return torch.stack(rows)


def one_hot_keys(D: dict) -> tuple[list, torch.Tensor, torch.Tensor]:
    """Example 6.1 / Remark 6.3: a Python dict {key: value} as keys K = I_M and values V.

    Returns (names, K (M, M), V (M, 1)); key m is the m-th standard basis vector e_m.
    """
    if not D:
        raise ValueError("a dictionary for attention needs at least one key (M ≥ 1)")
    names = list(D)
    K = torch.eye(len(names), dtype=torch.float64)
    V = torch.tensor([[float(D[k])] for k in names], dtype=torch.float64)
    return names, K, V


def lookup(D: dict, key, *, score: float = 50.0) -> float:
    """D[key] retrieved by attention over one-hot keys (Example 6.1, Remark 6.3).

    The query is α e_key with α = score·√d (d = M), so that its score ⟨q, k_m⟩/√d is ``score``
    against its own key and 0 against the others. As α grows π(q) becomes one-hot (Prop. 6.2)
    and the lookup exact: with score = 50 the other weights are e^{-50} ≈ 2e-22 each, below
    float64's resolution 2^-53 ≈ 1.1e-16 for any M < 10^5.
    """
    if key not in D:
        raise KeyError(key)
    if not score > 0:
        raise ValueError(f"the query's score must be > 0 to pick its key; got {score!r}")
    names, K, V = one_hot_keys(D)                                          # K (M, M), V (M, 1)
    q = score * math.sqrt(len(names)) * K[names.index(key)]                # (d,) = α e_key
    return scaled_dot_product_attention(q[None], K, V)[0, 0].item()        # (1, d) -> (1, d_v) = (1, 1)


# --- Example 6.2 and Exercise 6.1: the printed numbers ------------------------------------

# The inputs of Example 6.2 (eqs. 36–43) and Exercise 6.1 (eqs. 44–50): q, k_1, k_2, v_1, v_2.
EXAMPLE_6_2 = dict(q=(1, 0), k1=(1, 0), k2=(0, 1), v1=(2, 0), v2=(0, 3))
EXERCISE_6_1 = dict(q=(2, 1), k1=(1, 0), k2=(0, 1), v1=(1, 2), v2=(4, -1))
HALF_UNIT = 5e-9    # half a unit in the 8th decimal: a correctly rounded 8-decimal value is this close


def worked_example(inputs: dict, *, dtype=torch.float64) -> dict:
    """s_1, s_2, π_1, π_2, o_1, o_2 of a two-key example, computed by (30) and (35).

    s_m = exp(⟨q, k_m⟩/√d) are the unnormalised weights; π by attention_weights (35); o by
    scaled_dot_product_attention (30), not from π, so that the two routes check each other.
    """
    t = {k: torch.tensor(v, dtype=dtype) for k, v in inputs.items()}
    K, V = torch.stack([t["k1"], t["k2"]]), torch.stack([t["v1"], t["v2"]])   # (2, d), (2, d_v)
    d = K.shape[1]
    s = torch.exp(torch.stack([notation.inner(t["q"], k) for k in K]) / math.sqrt(d))   # (38)
    pi = attention_weights(t["q"], K)                                                    # (40)
    o = scaled_dot_product_attention(t["q"][None], K, V)[0]                              # (42)
    out = {"√d": math.sqrt(d), "1/√d": 1 / math.sqrt(d), "s_1": s[0].item(), "s_2": s[1].item(),
           "π_1": pi[0].item(), "π_2": pi[1].item(), "o_1": o[0].item(), "o_2": o[1].item()}
    return out


def exact_example(inputs: dict) -> dict:
    """The closed forms of s, π and o with SymPy (exact arithmetic), simplified."""
    import sympy as sp   # a [book] dependency: only the chapter and the tests need it

    q, k1, k2, v1, v2 = (sp.Matrix(inputs[n]) for n in ("q", "k1", "k2", "v1", "v2"))
    sqrt_d = sp.sqrt(len(inputs["q"]))
    s1, s2 = sp.exp(q.dot(k1) / sqrt_d), sp.exp(q.dot(k2) / sqrt_d)       # (38) / (45)
    pi1, pi2 = s1 / (s1 + s2), s2 / (s1 + s2)                             # (40) / (47)
    o = pi1 * v1 + pi2 * v2                                               # (42) / (49)
    return {"s_1": s1, "s_2": s2, "π_1": sp.simplify(pi1), "π_2": sp.simplify(pi2),
            "o": sp.simplify(o)}


def claims_example_6_2(dtype=torch.float64) -> list[tuple[str, float, float]]:
    """(what, printed, value): every number of Example 6.2, each against the value it claims to be."""
    c = worked_example(EXAMPLE_6_2, dtype=dtype)
    return [("1/√2 ≈ 0.70710678 (39)", 0.70710678, c["1/√d"]),
            ("e^0.70710678 ≈ 2.02811498 (39)", 2.02811498, math.exp(0.70710678)),
            ("s_1 = e^(1/√2) (39)", 2.02811498, c["s_1"]), ("s_2 = 1 (39)", 1.0, c["s_2"]),
            ("2.02811498/(2.02811498+1) ≈ 0.66976155 (41)", 0.66976155, 2.02811498 / (2.02811498 + 1)),
            ("1/(2.02811498+1) ≈ 0.33023845 (41)", 0.33023845, 1 / (2.02811498 + 1)),
            ("π_1 (41)", 0.66976155, c["π_1"]), ("π_2 (41)", 0.33023845, c["π_2"]),
            ("2 × 0.66976155 = 1.33952310 (43)", 1.33952310, 2 * 0.66976155),
            ("3 × 0.33023845 = 0.99071535 (43)", 0.99071535, 3 * 0.33023845),
            ("o_1 (43)", 1.33952310, c["o_1"]), ("o_2 (43)", 0.99071535, c["o_2"])]


def claims_exercise_6_1(dtype=torch.float64) -> list[tuple[str, float, float]]:
    """Every number of Exercise 6.1's answer but e^1.41421356 (its own rows), against its value."""
    c = worked_example(EXERCISE_6_1, dtype=dtype)
    return [("√2 ≈ 1.41421356 (46)", 1.41421356, c["√d"]),
            ("1/√2 ≈ 0.70710678 (46)", 0.70710678, c["1/√d"]),
            ("s_1 = e^√2 ≈ 4.11325038 (46)", 4.11325038, c["s_1"]),
            ("e^0.70710678 ≈ 2.02811498 (46)", 2.02811498, math.exp(0.70710678)),
            ("s_2 = e^(1/√2) (46)", 2.02811498, c["s_2"]),
            ("4.11325038/(4.11325038+2.02811498) ≈ 0.66976155 (48)", 0.66976155,
             4.11325038 / (4.11325038 + 2.02811498)),
            ("2.02811498/(4.11325038+2.02811498) ≈ 0.33023845 (48)", 0.33023845,
             2.02811498 / (4.11325038 + 2.02811498)),
            ("π_1 (48)", 0.66976155, c["π_1"]), ("π_2 (48)", 0.33023845, c["π_2"]),
            ("4 − 3 × 0.66976155 = 1.99071535 (50)", 1.99071535, 4 - 3 * 0.66976155),
            ("3 × 0.66976155 − 1 = 1.00928465 (50)", 1.00928465, 3 * 0.66976155 - 1),
            ("o_1 (50)", 1.99071535, c["o_1"]), ("o_2 (50)", 1.00928465, c["o_2"])]


# --- the hard-dictionary limit (51) -------------------------------------------------------

def weights_along_ray(q: torch.Tensor, K: torch.Tensor, alphas) -> torch.Tensor:
    """π(α q) for each α, eq. (51): (A,) alphas, q (d,), K (M, d) -> (A, M), vectorised (30)."""
    _check_axes(q, "q", 1)
    _check_axes(K, "K", 2)
    if K.shape[1] != q.shape[0]:
        raise ValueError(f"(51) needs q and the keys in the same R^d; got {q.shape[0]} and {K.shape[1]}")
    a = torch.as_tensor(alphas, dtype=q.dtype)
    S = a[:, None] * (K @ q)[None, :] / math.sqrt(q.shape[0])   # (A, M): ⟨α q, k_m⟩/√d
    return _softmax(S, tau=1.0)


def hard_limit(q: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """lim_{α→+∞} π(α q), exactly: uniform on the keys that maximise ⟨q, k_m⟩, zero elsewhere.

    This covers every case: one maximiser (the one-hot limit of (51)), ties, and q = 0.
    Scores within 1e-12 of the maximum count as tied (exact for integer data).
    """
    s = K @ q                                                  # (M,) ⟨q, k_m⟩
    top = torch.isclose(s, s.max(), rtol=1e-12, atol=1e-12)    # the argmax set, ties included
    return top.to(q.dtype) / top.sum()


def plot_hard_limit(alpha_max: float = 8.0):
    """Figure for Prop. 6.2: π_1(α q) against α for aligned, anti-aligned and tied keys.

    Returns (figure, {case: π_1 at α = alpha_max}) so that the numbers can be printed.
    """
    import matplotlib.pyplot as plt   # a [book] dependency

    q = torch.tensor([1.0, 0.0], dtype=torch.float64)
    cases = {
        "k₁ = q, k₂ ⊥ q  (Example 6.2)": torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64),
        "k₁ = −q, k₂ ⊥ q  (anti-parallel)": torch.tensor([[-1.0, 0.0], [0.0, 1.0]], dtype=torch.float64),
        "k₁, k₂ tie: ⟨q,k₁⟩ = ⟨q,k₂⟩ = 1": torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.float64),
    }
    alphas = torch.linspace(0, alpha_max, 161, dtype=torch.float64)
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ends = {}
    for (label, K), style in zip(cases.items(), ("-", "--", ":")):
        pi1 = weights_along_ray(q, K, alphas)[:, 0]
        ax.plot(alphas, pi1, style, lw=2, label=label)
        ends[label] = (pi1[-1].item(), hard_limit(q, K)[0].item())
    ax.set_xlabel("α  (query  q_α = α q)")
    ax.set_ylabel("π₁(α q)")
    ax.set_ylim(-0.03, 1.03)
    ax.axhline(0.5, color="grey", lw=0.5)
    ax.legend(loc="center right", fontsize=8)
    ax.set_title("Soft lookup turning hard (Proposition 6.2)", fontsize=10)
    fig.tight_layout()
    return fig, ends


# --- MultiheadAttention (31)–(33) ---------------------------------------------------------

def lecture_matrices(theta: dict) -> dict:
    """Θ_MHA (31) in the lecture's notation from diffusers' keys: W = weight^T, b_O = bias.

    W_Q (d_in, h·d), W_K (d_ctx, h·d), W_V (d_ctx, h·d_v), W_O (h·d_v, d_out), b_O (d_out,) or None.
    """
    if not isinstance(theta, dict):
        raise TypeError(f"Θ_MHA must be a dict of tensors keyed like diffusers' Attention; "
                        f"got {type(theta).__name__}")
    missing = [k for k in THETA_MHA_WEIGHTS if k not in theta]
    if missing:
        raise ValueError(f"Θ_MHA (31) is missing {missing}; it needs {list(THETA_MHA_WEIGHTS)} "
                         f"(and optionally {list(THETA_MHA_OPTIONAL)}), keyed as in diffusers' Attention")
    unexpected = sorted(set(theta) - set(THETA_MHA_WEIGHTS) - set(THETA_MHA_OPTIONAL))
    if unexpected:
        raise ValueError(f"Θ_MHA (31) has parameters (31)–(33) do not use: {unexpected} "
                         f"(query/key/value biases or norms are not part of SD-1.5's attention)")
    for k, v in theta.items():
        want = 1 if k.endswith("bias") else 2
        if not isinstance(v, torch.Tensor) or v.dim() != want:
            raise ValueError(f"Θ_MHA[{k!r}] must be a tensor with {want} axes; got {getattr(v, 'shape', type(v))}")
    W = {"W_Q": theta["to_q.weight"].T, "W_K": theta["to_k.weight"].T,   # (31): weight^T
         "W_V": theta["to_v.weight"].T, "W_O": theta["to_out.0.weight"].T}
    if W["W_Q"].shape[1] != W["W_K"].shape[1]:
        raise ValueError(f"W_Q and W_K must give queries and keys of one width; got "
                         f"{W['W_Q'].shape[1]} and {W['W_K'].shape[1]}")
    if W["W_K"].shape[0] != W["W_V"].shape[0]:
        raise ValueError(f"W_K and W_V both read the context C: same d_ctx; "
                         f"got {W['W_K'].shape[0]} and {W['W_V'].shape[0]}")
    if W["W_V"].shape[1] != W["W_O"].shape[0]:
        raise ValueError(f"W_O must read what W_V writes (d_v); "
                         f"got W_V {tuple(W['W_V'].shape)}, W_O {tuple(W['W_O'].shape)}")
    b = theta.get("to_out.0.bias")
    if b is not None and b.shape[0] != W["W_O"].shape[1]:
        raise ValueError(f"b_O must have d_out = {W['W_O'].shape[1]} entries; got {b.shape[0]}")
    W["b_O"] = b
    return W


def _check_tokens(X, C, W) -> torch.Tensor:
    if not isinstance(X, torch.Tensor):
        raise TypeError(f"X must be a torch.Tensor; got {type(X).__name__}")
    if C is None:
        C = X                      # self-attention: the context is the input itself
    if not isinstance(C, torch.Tensor):
        raise TypeError(f"C must be a torch.Tensor or None (self-attention); got {type(C).__name__}")
    if X.dim() < 2 or X.dim() != C.dim():
        raise ValueError(f"X (…, N, d_in) and C (…, M, d_ctx) need ≥ 2 axes and as many of each; "
                         f"got {tuple(X.shape)} and {tuple(C.shape)}")
    if X.shape[:-2] != C.shape[:-2]:
        raise ValueError(f"X and C must share their batch axes; got {tuple(X.shape[:-2])} and {tuple(C.shape[:-2])}")
    if X.shape[-1] != W["W_Q"].shape[0]:
        raise ValueError(f"W_Q ∈ R^(d_in×d) needs X with d_in = {W['W_Q'].shape[0]}; got width {X.shape[-1]}")
    if C.shape[-1] != W["W_K"].shape[0]:
        raise ValueError(f"W_K ∈ R^(d_ctx×d) needs C with d_ctx = {W['W_K'].shape[0]}; got width {C.shape[-1]}")
    return C


def _check_heads(heads: int, *widths: int) -> None:
    if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1:
        raise ValueError(f"heads must be a positive integer; got {heads!r}")
    for w in widths:
        if w % heads:
            raise ValueError(f"h heads split a width h·d into h blocks: h must divide it; got width {w}, h={heads}")


def _split_heads(T: torch.Tensor, h: int) -> torch.Tensor:
    return T.unflatten(-1, (h, -1)).transpose(-3, -2)   # (…, N, h·d) -> (…, N, h, d) -> (…, h, N, d)


def _merge_heads(T: torch.Tensor) -> torch.Tensor:
    return T.transpose(-3, -2).flatten(-2)               # (…, h, N, d_v) -> (…, N, h, d_v) -> (…, N, h·d_v)


def multihead_attention(theta: dict, X: torch.Tensor, C: torch.Tensor | None = None, *,
                        heads: int = 8) -> torch.Tensor:
    """MultiheadAttention, Def. 6.14, eqs. (31)–(33), as SD-1.5 runs it (diffusers' Attention).

    X (…, N, d_in), C (…, M, d_ctx) or None for self-attention (C = X) -> (…, N, d_out).
    Θ: to_q.weight (h·d, d_in), to_k.weight (h·d, d_ctx), to_v.weight (h·d_v, d_ctx),
    to_out.0.weight (d_out, h·d_v), to_out.0.bias (d_out,) [optional].
    Corrected against the print: W_Q in (32), h heads (SD-1.5: h = 8 at every level, head
    width d = C/8), and the output bias b_O in (33).
    """
    W = lecture_matrices(theta)
    C = _check_tokens(X, C, W)
    _check_heads(heads, W["W_Q"].shape[1], W["W_V"].shape[1])
    Q = X @ W["W_Q"]                      # (…, N, d_in) @ (d_in, h·d) -> (…, N, h·d)     (32)
    K = C @ W["W_K"]                      # (…, M, d_ctx) @ (d_ctx, h·d) -> (…, M, h·d)   (32)
    V = C @ W["W_V"]                      # (…, M, d_ctx) @ (d_ctx, h·d_v) -> (…, M, h·d_v) (32)
    # head j uses columns (j−1)d+1 … jd of W_Q, W_K (and of W_V with d_v): one (30) per head
    O = scaled_dot_product_attention(_split_heads(Q, heads), _split_heads(K, heads),
                                     _split_heads(V, heads))   # (…, h, N, d_v)          (30)
    Y = _merge_heads(O) @ W["W_O"]        # Concat_j(head_j): (…, N, h·d_v) @ (h·d_v, d_out)  (33)
    return Y if W["b_O"] is None else Y + W["b_O"]             # + b_O: to_out.0.bias


def multihead_attention_printed(theta: dict, X: torch.Tensor, C: torch.Tensor | None = None, *,
                                heads: int = 8, slips=PRINTED_SLIPS) -> torch.Tensor:
    """Def. 6.14 as printed, eqs. (31)–(33), keeping the readings named in ``slips``:

    * ``"Q = X W_O"``: (32) says Q = X W_O; the W_O of (31)/(33) (the output projection) is used;
    * ``"one head"``: (33) applies (30) once, to the full width h·d, not once per head;
    * ``"no b_O"``: (33) has no output bias.

    With all three (the default) this is the lecture's text; with a subset, each slip can be
    measured alone against diffusers (ledger rows). ``heads`` is used only without "one head".
    """
    unknown = set(slips) - set(PRINTED_SLIPS)
    if unknown:
        raise ValueError(f"slips must be among {PRINTED_SLIPS}; got {sorted(unknown)}")
    W = lecture_matrices(theta)
    C = _check_tokens(X, C, W)
    h = 1 if ONE_HEAD in slips else heads
    _check_heads(h, W["W_Q"].shape[1], W["W_V"].shape[1])
    if Q_FROM_W_O in slips:
        if W["W_O"].shape[0] != X.shape[-1] or W["W_O"].shape[1] != W["W_K"].shape[1]:
            raise ValueError(f"Q = X W_O (32, as printed) needs W_O ∈ R^(d_in×d); got {tuple(W['W_O'].shape)}")
        Q = X @ W["W_O"]                  # (32) as printed: the output projection in the query's place
    else:
        Q = X @ W["W_Q"]
    K, V = C @ W["W_K"], C @ W["W_V"]     # (32)
    O = scaled_dot_product_attention(_split_heads(Q, h), _split_heads(K, h), _split_heads(V, h))
    Y = _merge_heads(O) @ W["W_O"]        # (33)
    return Y if (NO_OUTPUT_BIAS in slips or W["b_O"] is None) else Y + W["b_O"]


# --- SD-1.5's attention modules -----------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _meta_unet():
    from . import sd15
    return sd15.build_unet(weights="meta")


def sd15_attention_modules() -> list[tuple[str, torch.nn.Module]]:
    """(name, diffusers Attention) for every attn1/attn2 of the SD-1.5 U-Net, on the meta device."""
    from diffusers.models.attention_processor import Attention
    return [(n, m) for n, m in _meta_unet().named_modules() if isinstance(m, Attention)]


def sd15_attention_table(latent: int = 64) -> list[dict]:
    """Heads, widths, projection shapes and token counts of every attention module of SD-1.5.

    Read from the U-Net built on the meta device, and from one meta forward pass at a
    ``latent``×``latent`` latent with a 77×768 context (forward hooks record X and C).
    """
    if isinstance(latent, bool) or not isinstance(latent, int) or latent < 8 or latent % 8:
        raise ValueError(f"the U-Net downsamples three times: latent must be a multiple of 8; got {latent!r}")
    unet, mods = _meta_unet(), sd15_attention_modules()
    seen = {}

    def hook(name):
        def record(module, args, kwargs, out):
            x = args[0] if args else kwargs["hidden_states"]
            seen[name] = (tuple(x.shape), kwargs.get("encoder_hidden_states"))
        return record

    handles = [m.register_forward_hook(hook(n), with_kwargs=True) for n, m in mods]
    try:
        with torch.no_grad():
            unet(torch.zeros(1, 4, latent, latent, device="meta"), torch.tensor([500], device="meta"),
                 encoder_hidden_states=torch.zeros(1, 77, 768, device="meta"))
    finally:
        for hd in handles:
            hd.remove()
    rows = []
    for name, m in mods:
        (_, N, C), ctx = seen[name]
        M = N if ctx is None else ctx.shape[1]
        side = math.isqrt(N)
        rows.append(dict(
            module=name, kind="cross" if m.is_cross_attention else "self", HW=f"{side}×{side}", N=N, C=C,
            M=M, d_ctx=m.cross_attention_dim, heads=m.heads, d=m.inner_dim // m.heads, scale=m.scale,
            to_q=tuple(m.to_q.weight.shape), to_k=tuple(m.to_k.weight.shape),
            to_v=tuple(m.to_v.weight.shape), to_out=tuple(m.to_out[0].weight.shape),
            qkv_bias=m.to_q.bias is not None, out_bias=m.to_out[0].bias is not None,
            scores=m.heads * N * M))
    return rows


def _attention_groups(rows: list[dict]) -> list[list[dict]]:
    """The modules of each block, self and cross apart, in U-Net order."""
    groups: dict = {}
    for r in rows:
        block = ".".join(r["module"].split(".")[:2]) if r["module"].startswith(("down", "up")) else "mid_block"
        groups.setdefault((block, r["kind"]), []).append(r)
    return list(groups.values())


_TABLE_HEAD = ("block", "n", "kind", "H×W", "N", "C", "M×d_ctx", "h", "d", "W_Q = W_O", "W_K, W_V",
               "scores h·N·M")


def _table_cells(rs: list[dict]) -> tuple[str, ...]:
    r = rs[0]
    block = ".".join(r["module"].split(".")[:2]) if r["module"].startswith(("down", "up")) else "mid_block"
    shape = lambda wt: "×".join(map(str, wt[::-1]))   # noqa: E731  lecture orientation: weight^T
    return (block, str(len(rs)), r["kind"], r["HW"], str(r["N"]), str(r["C"]), f"{r['M']}×{r['d_ctx']}",
            str(r["heads"]), str(r["d"]), shape(r["to_q"]), shape(r["to_k"]), f"{r['scores']:,}")


def format_attention_table(rows: list[dict]) -> str:
    """The SD-1.5 attention table as text, one line per block and kind (see AttentionTable)."""
    lines = [_TABLE_HEAD] + [_table_cells(rs) for rs in _attention_groups(rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(_TABLE_HEAD))]
    out = ["  ".join(c.rjust(w) if i >= 3 else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths))).rstrip()
           for line in lines]
    out.insert(1, "-" * len(out[0]))
    return "\n".join(out)


class AttentionTable:
    """sd15_attention_table's rows, one line per block and kind: HTML in a notebook, text elsewhere.

    Matrices in the lecture's orientation (W_Q ∈ R^{d_in × h·d} is to_q.weight transposed; in SD-1.5
    W_O has the same shape); "n" counts the modules; "scores" is h·N·M, the attention weights one
    module computes per image.
    """

    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __repr__(self) -> str:
        return format_attention_table(self.rows)

    def _repr_html_(self) -> str:
        import html
        cell = 'style="padding:0.2em 0.45em;border-bottom:1px solid #ddd;text-align:{}"'
        head = "".join(f"<th {cell.format('left' if i < 3 else 'right')}>{html.escape(h)}</th>"
                       for i, h in enumerate(_TABLE_HEAD))
        body = "".join("<tr>" + "".join(f"<td {cell.format('left' if i < 3 else 'right')}>{html.escape(c)}</td>"
                                        for i, c in enumerate(_table_cells(rs))) + "</tr>"
                       for rs in _attention_groups(self.rows))
        return ('<div style="overflow-x:auto"><table style="font-size:0.78em;border-collapse:collapse">'
                f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>")


def materialise(module: torch.nn.Module, *, seed: int = 0, dtype=torch.float64) -> torch.nn.Module:
    """A copy of a meta-device module with storage and PyTorch's default init, seeded."""
    m = torch.nn.Module.to(copy.deepcopy(module), dtype=dtype).to_empty(device="cpu")   # storage in dtype
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for sub in m.modules():
            if hasattr(sub, "reset_parameters") and next(sub.parameters(recurse=False), None) is not None:
                sub.reset_parameters()
    return m.eval()


def sd15_attention(C: int, *, cross: bool, seed: int = 0, dtype=torch.float64) -> torch.nn.Module:
    """A standalone diffusers Attention with SD-1.5's settings at a level of width C.

    SD-1.5 (attention_head_dim=8, which diffusers reads as the number of heads): 8 heads of
    width C/8; no bias on to_q/to_k/to_v, a bias on to_out.0; cross-attention reads 768-wide CLIP tokens.
    """
    from diffusers.models.attention_processor import Attention
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        m = Attention(query_dim=C, cross_attention_dim=768 if cross else None, heads=8, dim_head=C // 8,
                      bias=False, out_bias=True)
    return torch.nn.Module.to(m, dtype=dtype).eval()


# --- numerical care: scale before or after the product (course notes, "Scale before QKV") ---

FP16_ORDERS = ("after", "before", "q-only")
FP16_MAX = 65504.0   # the largest finite float16


def _fp16(x: torch.Tensor) -> torch.Tensor:
    """Round to float16 and compute on in float32: float16 *storage*, float32 *arithmetic*.

    This is how float16 matrix products run on GPUs' tensor cores and on this CPU (products
    accumulated in float32, the result rounded once); it is also ~30× faster than float16
    kernels on a CPU. Overflow appears as it would: a result above 65504 becomes inf.
    """
    return x.half().float()


def scores_float16(Q: torch.Tensor, K: torch.Tensor, *, order: str) -> torch.Tensor:
    """The scores Q K^T/√d in float16, with the scaling at one of three places, (30).

    "after": (Q K^T)/√d, the product stored in float16 before the division;
    "before": (Q d^{-1/4})(K d^{-1/4})^T, as guided-diffusion's QKVAttention ("more stable with f16");
    "q-only": (Q/√d) K^T. Q (…, N, d), K (…, M, d) -> (…, N, M): float16 values, float32 dtype.
    """
    if order not in FP16_ORDERS:
        raise ValueError(f"order must be one of {FP16_ORDERS}; got {order!r}")
    d = Q.shape[-1]
    Q, K = _fp16(Q), _fp16(K)                               # the inputs are float16 tensors
    if order == "after":
        return _fp16(_fp16(Q @ K.transpose(-1, -2)) / math.sqrt(d))     # round, divide, round
    if order == "before":
        c = d ** -0.25
        return _fp16(_fp16(Q * c) @ _fp16(K * c).transpose(-1, -2))    # scale both, then the product
    return _fp16(_fp16(Q / math.sqrt(d)) @ K.transpose(-1, -2))         # scale q only


def _softmax_times_v_float16(S: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    P = _fp16(torch.softmax(S, dim=-1))   # (…, N, M), stored in float16
    return _fp16(P @ _fp16(V))            # (…, N, d_v)


def attention_float16(Q, K, V, *, order: str) -> torch.Tensor:
    """(30) in float16: the scores by ``order``, or ``order="F.sdpa"`` for torch's fused kernel.

    For the three explicit orders, softmax and the product with V are rounded to float16 as a
    float16 forward pass stores them; "F.sdpa" calls torch.nn.functional.scaled_dot_product_attention
    on float16 tensors, which is what diffusers' AttnProcessor2_0 does in SD-1.5.
    """
    if order == "F.sdpa":
        return F.scaled_dot_product_attention(Q.half(), K.half(), V.half()).float()
    return _softmax_times_v_float16(scores_float16(Q, K, order=order), V)


def float16_study(*, d: int = 40, N: int = 32, M: int = 32, sigmas=(1, 8, 32, 64, 128),
                  draws: int = 30, seed: int = 0) -> list[dict]:
    """Attention in float16 with the scaling after, before, on q only, or fused, against float64.

    Q, K have N(0, σ²) entries, V has N(0, 1); all three are rounded to float16 first and the
    float64 reference starts from those rounded values, so only the arithmetic is compared.
    Per σ and order, over ``draws`` independent draws: the share of draws whose output is not
    finite (overflow); for the finite ones the median of max|S − S_ref| / max|S_ref| (scores;
    not available inside the fused kernel) and the median and maximum of max|O − O_ref| (outputs).
    """
    g = torch.Generator().manual_seed(seed)
    rows = []
    for sigma in sigmas:
        Q = _fp16(sigma * torch.randn(draws, N, d, generator=g))       # (draws, N, d)
        K = _fp16(sigma * torch.randn(draws, M, d, generator=g))       # (draws, M, d)
        V = _fp16(torch.randn(draws, M, d, generator=g))               # (draws, M, d_v)
        S_ref = Q.double() @ K.double().transpose(-1, -2) / math.sqrt(d)      # (draws, N, M)
        O_ref = torch.softmax(S_ref, -1) @ V.double()
        for order in FP16_ORDERS + ("F.sdpa",):
            s_err = None
            if order == "F.sdpa":
                O = attention_float16(Q, K, V, order=order)
            else:
                S = scores_float16(Q, K, order=order)
                O = _softmax_times_v_float16(S, V)
                s_err = (S.double() - S_ref).abs().flatten(1).amax(1) / S_ref.abs().flatten(1).amax(1)
            finite = torch.isfinite(O).flatten(1).all(1)                     # (draws,)
            o_err = (O.double() - O_ref).abs().flatten(1).amax(1)[finite]
            ok = bool(finite.any())
            rows.append(dict(sigma=sigma, order=order, overflow=1 - finite.double().mean().item(),
                             max_score=S_ref.abs().max().item(),
                             s_median=s_err[finite].median().item() if ok and s_err is not None else math.nan,
                             o_median=o_err.median().item() if ok else math.nan,
                             o_max=o_err.max().item() if ok else math.nan))
    return rows


def format_float16_study(rows: list[dict]) -> str:
    """The float16 study as a text table: overflow share, score error, output error."""
    def e(x):
        return "—" if math.isnan(x) else ("0" if x == 0 else f"{x:.0e}")
    lines = [f"{'σ':>4}  {'max|S|':>7}  {'order':7}  {'overflow':>8}  {'score err (median)':>18}  "
             f"{'output err (median)':>19}  {'output err (max)':>16}"]
    for r in rows:
        lines.append(f"{r['sigma']:>4}  {r['max_score']:>7.0f}  {r['order']:7}  {r['overflow']:>8.0%}  "
                     f"{e(r['s_median']):>18}  {e(r['o_median']):>19}  {e(r['o_max']):>16}")
    return "\n".join(lines)


# --- ledger rows, §6.8 and §6.8.1 ---------------------------------------------------------

F64_SDPA = "float64; sums of ≤ 64 terms in another order than torch: a few units of 2^-53"
F64_MHA = "float64; sums of ≤ 1280 products in another order than nn.Linear: ≤ 1280·2^-53 ≈ 1.4e-13"
TOL_SDPA, TOL_MHA = 1e-13, 1e-12
SD15_WIDTHS = (320, 640, 1280)        # the channel widths C of the U-Net levels with attention


def _qkv(seed, dtype, *, B=2, N=6, M=9, d=40, d_v=40, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(B, N, d, generator=g, dtype=dtype),
            scale * torch.randn(B, M, d, generator=g, dtype=dtype),
            torch.randn(B, M, d_v, generator=g, dtype=dtype))


@ledger.row("(30) ScaledDotProductAttention", section="6.8",
            formula=r"\mathrm{Softmax}(QK^\top/\sqrt d)\,V",
            reference="F.scaled_dot_product_attention (torch)", tol=TOL_SDPA, why_tol=F64_SDPA)
def _row_sdpa(seed=0, dtype=torch.float64):
    Q, K, V = _qkv(seed, dtype)   # d = 40: a head of SD-1.5's first level
    ref = F.scaled_dot_product_attention(Q, K, V)
    d = Q.shape[-1]
    tau_sqrt_d = _softmax(Q @ K.transpose(-1, -2), tau=math.sqrt(d)) @ V   # the other correct reading
    return max((scaled_dot_product_attention(Q, K, V) - ref).abs().max().item(),
               (tau_sqrt_d - ref).abs().max().item())


@ledger.row("(30) ScaledDotProductAttention, as printed", section="6.8",
            formula=r"\mathrm{Softmax}^{(1/\sqrt d)}(QK^\top/\sqrt d)\,V",
            reference="F.scaled_dot_product_attention (torch)", tol=TOL_SDPA, why_tol=F64_SDPA,
            verdict="differs", corrected_by="(30) ScaledDotProductAttention",
            note="With (17)'s temperature τ = 1/√d the two scalings cancel: the printed formula is "
                 "Softmax(QKᵀ)V, unscaled. PyTorch and SD-1.5 divide the scores by √d once.")
def _row_sdpa_printed(seed=0, dtype=torch.float64):
    Q, K, V = _qkv(seed, dtype)
    ref = F.scaled_dot_product_attention(Q, K, V)
    return (scaled_dot_product_attention_printed(Q, K, V) - ref).abs().max().item()


def _mha_error(seed, dtype, *, cross: bool, fn, C: int = 320) -> float:
    """max|fn(Θ, X, C) − diffusers Attention(X, C)| at one SD-1.5 level (width C), N = 16 tokens."""
    g = torch.Generator().manual_seed(seed)
    attn = sd15_attention(C, cross=cross, seed=seed, dtype=dtype)
    X = torch.randn(2, 16, C, generator=g, dtype=dtype)                          # (B, N, C)
    ctx = torch.randn(2, 77, 768, generator=g, dtype=dtype) if cross else None   # (B, M, d_ctx) = 77 × 768
    with torch.no_grad():
        ref = attn(X, encoder_hidden_states=ctx)
    return (fn(dict(attn.state_dict()), X, ctx) - ref).abs().max().item()


def unet_attention_errors(names=None, *, seed=0, dtype=torch.float64, N=4, M=5) -> dict:
    """max|multihead_attention − module| for attention modules of the SD-1.5 U-Net itself.

    Each module is taken from sd15.build_unet(weights="meta") (its own class, configuration and
    processor), given storage and PyTorch's default init (seeded), and fed N random tokens
    (and M random 768-wide context tokens for attn2). ``names``: all 32 when None.
    """
    g = torch.Generator().manual_seed(seed)
    errors = {}
    for k, (name, meta) in enumerate(sd15_attention_modules()):
        if names is not None and name not in names:
            continue
        attn = materialise(meta, seed=seed * 100 + k, dtype=dtype)
        X = torch.randn(1, N, attn.query_dim, generator=g, dtype=dtype)                       # (1, N, C)
        ctx = torch.randn(1, M, 768, generator=g, dtype=dtype) if attn.is_cross_attention else None
        with torch.no_grad():
            ref = attn(X, encoder_hidden_states=ctx)
            ours = multihead_attention(dict(attn.state_dict()), X, ctx, heads=attn.heads)
        errors[name] = (ours - ref).abs().max().item()
    return errors


MHA_REF = "diffusers Attention with SD-1.5's first-level settings: C = 320, 8 heads of d = 40"
MHA_SELF = "(31)–(33) MultiheadAttention, SD-1.5 self-attention"
MHA_FORMULA = r"\mathrm{Concat}_{j}(\mathrm{head}_j)\,W_O + b_O"   # head_j = SDPA(XW_Q^(j), CW_K^(j), CW_V^(j))


@ledger.row(MHA_SELF, section="6.8", formula=MHA_FORMULA, reference=MHA_REF + ", N = 16",
            tol=TOL_MHA, why_tol=F64_MHA)
def _row_mha_self(seed=0, dtype=torch.float64):
    return _mha_error(seed, dtype, cross=False, fn=multihead_attention)


@ledger.row("(31)–(33) MultiheadAttention, SD-1.5 cross-attention", section="6.8",
            formula=MHA_FORMULA,
            reference=MHA_REF + ", text context 77 × 768", tol=TOL_MHA, why_tol=F64_MHA)
def _row_mha_cross(seed=0, dtype=torch.float64):
    return _mha_error(seed, dtype, cross=True, fn=multihead_attention)


MID_BLOCK = "mid_block.attentions.0.transformer_blocks.0."


@ledger.row("(31)–(33) MultiheadAttention, the U-Net's mid-block modules", section="6.8",
            formula=MHA_FORMULA, tol=TOL_MHA, why_tol=F64_MHA,
            reference="attn1 and attn2 of the mid block of sd15.build_unet(weights='meta') (C = 1280, "
                      "8 heads of d = 160), given seeded storage")
def _row_mha_unet(seed=0, dtype=torch.float64):
    errors = unet_attention_errors((MID_BLOCK + "attn1", MID_BLOCK + "attn2"), seed=seed, dtype=dtype)
    return max(errors.values())


def _printed_row(slips):
    def measure(seed=0, dtype=torch.float64):
        return _mha_error(seed, dtype, cross=False,
                          fn=lambda theta, X, C: multihead_attention_printed(theta, X, C, slips=slips))
    return measure


for _name, _slips, _formula, _note in [
    ("(31)–(32) MultiheadAttention, as printed: Q = X W_O", (Q_FROM_W_O,), r"Q = XW_O",
     "(31) lists W_O twice and no W_Q, and (32) computes Q = X W_O; the query projection is W_Q "
     "(to_q). Read literally, the output projection W_O ∈ R^(d_v×d_out) makes the queries."),
    ("(33) MultiheadAttention, as printed: one head", (ONE_HEAD,), r"\mathrm{SDPA}(Q,K,V)\,W_O,\ h = 1",
     "(33) applies (30) once over the full width C, scaling by 1/√C. SD-1.5 splits Q, K, V into 8 heads "
     "of width d = C/8, one softmax per head, scaled by 1/√(C/8), and concatenates them."),
    ("(33) MultiheadAttention, as printed: no output bias", (NO_OUTPUT_BIAS,),
     r"\mathrm{Concat}_j(\mathrm{head}_j)\,W_O",
     "diffusers' Attention adds to_out.0.bias (out_bias=True in every SD-1.5 block): every token's "
     "output is shifted by b_O, a parameter (33) does not have."),
    ("(31)–(33) MultiheadAttention, as printed", PRINTED_SLIPS, r"\mathrm{SDPA}(XW_O, CW_K, CW_V)\,W_O",
     "All three printed readings together: Q = X W_O, one head, no output bias."),
]:
    ledger.row(_name, section="6.8", formula=_formula, reference=MHA_REF + ", N = 16", tol=TOL_MHA,
               why_tol=F64_MHA, verdict="differs", corrected_by=MHA_SELF, note=_note)(_printed_row(_slips))


# §6.8.1: the dictionary

@ledger.row("Ex. 6.1 / Rem. 6.3 dictionary lookup", section="6.8.1",
            formula=r"\textstyle\sum_m \pi_m(\alpha e_k)\,v_m = D[k]",
            reference="Python's dict D[key]", tol=1e-15,
            why_tol="float64: the other weights are < e^-50 (M−1) ≪ 2^-53, so π is one-hot to the last bit",
            error="max |lookup − D[key]| / max |value|")
def _row_dictionary(seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    dicts = [{"cat": 1, "dog": 2}]
    for M in (3, 10, 50):
        values = torch.randint(-1000, 1000, (M,), generator=g).tolist()
        dicts.append({f"key{m}": v for m, v in enumerate(values)})
    err = 0.0
    for D in dicts:
        top = max(abs(v) for v in D.values()) or 1
        err = max(err, max(abs(lookup(D, k) - v) / top for k, v in D.items()))
    return err


@ledger.row("(34)–(35) Proposition 6.1, per-query weighted sum", section="6.8.1",
            formula=r"\textstyle\sum_{m}\pi_m(q_n)\,v_m",
            reference="F.scaled_dot_product_attention (torch), the matrix form", tol=TOL_SDPA,
            why_tol=F64_SDPA)
def _row_soft_lookup(seed=0, dtype=torch.float64):
    Q, K, V = _qkv(seed, dtype, B=1, N=5, M=7, d=8, d_v=3)
    return (soft_lookup(Q[0], K[0], V[0]) - F.scaled_dot_product_attention(Q, K, V)[0]).abs().max().item()


PRINTED_TOL = "8 printed decimals: a correctly rounded value is within half a unit, 5e-9"


@ledger.row("(36)–(43) Example 6.2, every printed number", section="6.8.1",
            formula=r"s_m,\ \pi_m,\ o \text{ of Ex. 6.2}",
            reference="the lecture's 8-decimal values vs (30)/(35) in float64", tol=HALF_UNIT,
            why_tol=PRINTED_TOL, error="max |printed − computed| over 12 numbers")
def _row_example_6_2(seed=0, dtype=torch.float64):
    return max(abs(p - v) for _, p, v in claims_example_6_2(dtype))


@ledger.row("(44)–(50) Exercise 6.1, every printed number", section="6.8.1",
            formula=r"s_m,\ \pi_m,\ o \text{ of Ex. 6.1}",
            reference="the lecture's 8-decimal values vs (30)/(35) in float64", tol=HALF_UNIT,
            why_tol=PRINTED_TOL, error="max |printed − computed| over 13 numbers")
def _row_exercise_6_1(seed=0, dtype=torch.float64):
    return max(abs(p - v) for _, p, v in claims_exercise_6_1(dtype))


@ledger.row("(46) e^1.41421356 ≈ 4.11325037", section="6.8.1", formula=r"e^{1.41421356} \approx 4.11325037",
            reference="math.exp(1.41421356)", tol=HALF_UNIT, why_tol=PRINTED_TOL,
            error="|8-decimal value − exp|")
def _row_e_sqrt2_corrected(seed=0, dtype=torch.float64):
    return abs(4.11325037 - math.exp(1.41421356))


@ledger.row("(46) e^1.41421356 ≈ 4.11325038, as printed", section="6.8.1",
            formula=r"e^{1.41421356} \approx 4.11325038", reference="math.exp(1.41421356)",
            tol=HALF_UNIT, why_tol=PRINTED_TOL, error="|printed − exp|", verdict="differs",
            corrected_by="(46) e^1.41421356 ≈ 4.11325037",
            note="4.11325038 is s_1 = e^√2 correctly rounded, but e^1.41421356 = 4.1132503690…: rounding √2 "
                 "to 8 decimals (error 4.4e-9) is multiplied by e^√2 ≈ 4.1. Later numbers are unaffected.")
def _row_e_sqrt2_printed(seed=0, dtype=torch.float64):
    return abs(4.11325038 - math.exp(1.41421356))


LIMIT_TOL = "α = 1000: the other weights are < 1e-30 for these draws; float64 rounds π to the limit"


def _limit_draws(seed, dtype, *, sign: float):
    """q ∈ R^8, k_{m*} = ±c q (c ∈ [0.5, 2]), the other 4 keys ⊥ q (projected), m* at a random place."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(20):
        d, M = 8, 5
        q = torch.randn(d, generator=g, dtype=dtype)
        K = torch.randn(M, d, generator=g, dtype=dtype)
        K = K - (K @ q)[:, None] * q / (q @ q)                              # every key ⊥ q
        m_star = int(torch.randint(M, (1,), generator=g))
        c = 0.5 + 1.5 * torch.rand((), generator=g, dtype=dtype)
        K[m_star] = sign * c * q                                            # k_{m*} ∥ q
        yield q, K, m_star


def _limit_error(seed, dtype, *, signs) -> float:
    err = 0.0
    for sign in signs:
        for q, K, m_star in _limit_draws(seed, dtype, sign=sign):
            target = torch.zeros(K.shape[0], dtype=dtype)
            target[m_star] = 1.0                                            # (51) claims e_{m*}
            err = max(err, (weights_along_ray(q, K, [1000.0])[0] - target).abs().max().item())
    return err


@ledger.row("(51) hard-dictionary limit, k_{m*} = c q with c > 0", section="6.8.1",
            formula=r"\pi(\alpha q) \to e_{m^*},\ k_{m^*} = c\,q,\ c > 0",
            reference="the one-hot vector e_{m*} that (51) claims", tol=1e-15, why_tol=LIMIT_TOL,
            error="max |π(1000 q) − e_{m*}| over 20 draws")
def _row_limit(seed=0, dtype=torch.float64):
    return _limit_error(seed, dtype, signs=(1.0,))


@ledger.row("(51) hard-dictionary limit, as printed: k_{m*} ∥ q", section="6.8.1",
            formula=r"\pi(\alpha q) \to e_{m^*},\ k_{m^*} \parallel q",
            reference="the one-hot vector e_{m*} that (51) claims", tol=1e-15, why_tol=LIMIT_TOL,
            error="max |π(1000 q) − e_{m*}| over 40 draws, half with k_{m*} = −c q",
            verdict="differs", corrected_by="(51) hard-dictionary limit, k_{m*} = c q with c > 0",
            note="Parallel includes anti-parallel (and k_{m*} = 0): for k_{m*} = −c q the score of m* goes "
                 "to −∞, π_{m*}(αq) → 0 and the weight spreads evenly over the other keys. The proof's "
                 "⟨q_α, k_{m*}⟩ = α‖q‖‖k_{m*}‖ holds only for the same direction, which Remark 6.4 means.")
def _row_limit_printed(seed=0, dtype=torch.float64):
    return _limit_error(seed, dtype, signs=(1.0, -1.0))


@ledger.row("(51) ties: the limit shares the weight", section="6.8.1",
            formula=r"\pi(\alpha q) \to \mathbf 1_A/|A|",
            reference="the uniform distribution on the tied keys (exact integer scores)", tol=1e-15,
            why_tol="integer q and keys: the scores are exact; at α = 1000 the losers' weights are < e^-300",
            error="max |π(1000 q) − uniform on A| over 20 draws")
def _row_limit_ties(seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    err = 0.0
    for _ in range(20):
        q = torch.randint(-3, 4, (4,), generator=g).to(dtype)
        q[0] = float(torch.randint(1, 4, (1,), generator=g))             # q ≠ 0
        K = torch.randint(-3, 4, (6, 4), generator=g).to(dtype)
        w = torch.zeros(4, dtype=dtype)
        w[0], w[1] = q[1], -q[0]                                          # w ⊥ q, exactly
        top = int((K @ q).argmax())
        K[(top + 1) % 6] = K[top] + w                                     # a second key ties with the best
        err = max(err, (weights_along_ray(q, K, [1000.0])[0] - hard_limit(q, K)).abs().max().item())
    return err
