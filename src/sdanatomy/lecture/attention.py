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

import math

import torch

from sdanatomy.lecture import notation
from sdanatomy.lecture.layers import softmax

# The three printed readings of Def. 6.14 that multihead_attention_printed can keep.
Q_FROM_W_O, ONE_HEAD, NO_OUTPUT_BIAS = "Q = X W_O", "one head", "no b_O"
PRINTED_SLIPS = (Q_FROM_W_O, ONE_HEAD, NO_OUTPUT_BIAS)
THETA_MHA_WEIGHTS = ("to_q.weight", "to_k.weight", "to_v.weight", "to_out.0.weight")
THETA_MHA_OPTIONAL = ("to_out.0.bias",)


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


def scaled_dot_product_attention(Q: torch.Tensor, K: torch.Tensor,
                                 V: torch.Tensor) -> torch.Tensor:
    """ScaledDotProductAttention, Def. 6.13, eq. (30), as PyTorch computes it.

    Q (…, N, d), K (…, M, d), V (…, M, d_v) -> (…, N, d_v):
    Softmax^{(1)}(Q K^T / √d) V, equivalently Softmax^{(√d)}(Q K^T) V.
    Mirrors torch.nn.functional.scaled_dot_product_attention (no mask, no dropout).
    """
    d = _check_qkv(Q, K, V)
    S = Q @ K.transpose(-1, -2) / math.sqrt(d)  # (…, N, d)·(…, d, M) -> (…, N, M) (30)
    P = softmax(S, tau=1.0)                     # each row sums to 1: π(q_n)      (35)
    return P @ V                                # (…, N, M)·(…, M, d_v) -> (…, N, d_v)


def scaled_dot_product_attention_printed(Q: torch.Tensor, K: torch.Tensor,
                                         V: torch.Tensor) -> torch.Tensor:
    """Eq. (30) exactly as printed: Softmax^{(√d)^{-1}}(Q K^T / √d) V, (17)'s τ.

    τ = (√d)^{-1} multiplies the scores by √d again, undoing the division: this is
    Softmax(Q K^T) V, attention *without* scaling. Kept to measure the slip (ledger).
    """
    d = _check_qkv(Q, K, V)
    S = Q @ K.transpose(-1, -2) / math.sqrt(d)  # (…, N, M)
    P = softmax(S, tau=1 / math.sqrt(d))        # (17), τ = 1/√d: exp(S·√d) = exp(QK^T)
    return P @ V


# --- the dictionary reading, §6.8.1 ---------------------------------------------------

def _check_axes(T, name: str, axes: int) -> None:
    if not isinstance(T, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(T).__name__}")
    if T.dim() != axes:
        what = "a vector (1 axis)" if axes == 1 else "a matrix (2 axes)"
        raise ValueError(f"{name} must be {what}; got shape {tuple(T.shape)}")


def attention_weights(q: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """π(q) ∈ R^M, eq. (35), term by term: π_m(q) = exp(s_m) / Σ_j exp(s_j).

    s_m = ⟨q, k_m⟩/√d; q (d,), K (M, d) with rows k_m^T.
    The inner products are notation.inner, eq. (2).
    """
    _check_axes(q, "q", 1)
    _check_axes(K, "K", 2)
    M, d = K.shape
    if q.shape[0] != d:
        raise ValueError(f"(35) needs q and the keys k_m in the same R^d; "
                         f"got q ∈ R^{q.shape[0]}, k_m ∈ R^{d}")
    i = notation.to_torch_index
    s = torch.stack([notation.inner(q, K[i(m, M)]) / math.sqrt(d)    # ⟨q, k_m⟩/√d
                     for m in notation.integer_range(M)])
    e = torch.exp(s - s.max())          # the common factor exp(−max) cancels in (35)
    return e / e.sum()                  # (35)


def soft_lookup(Q: torch.Tensor, K: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """Proposition 6.1, eq. (34), literally: row n of the output is Σ_m π_m(q_n) v_m.

    Q (N, d), K (M, d), V (M, d_v) -> (N, d_v); a slow loop over queries and keys,
    for tiny inputs.
    """
    _check_qkv(Q, K, V)
    for name, T in (("Q", Q), ("K", K), ("V", V)):
        _check_axes(T, name, 2)
    (N, _), (M, _) = Q.shape, K.shape
    i = notation.to_torch_index
    rows = []
    for n in notation.integer_range(N):
        pi = attention_weights(Q[i(n, N)], K)                                 # (35)
        rows.append(sum(pi[i(m, M)] * V[i(m, M)]                               # (34)
                        for m in notation.integer_range(M)))
    return torch.stack(rows)


def one_hot_keys(D: dict) -> tuple[list, torch.Tensor, torch.Tensor]:
    """Example 6.1 / Remark 6.3: a Python dict {key: value} as keys K = I_M, values V.

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

    The query is α e_key with α = score·√d (d = M), so that its score ⟨q, k_m⟩/√d is
    ``score`` against its own key and 0 against the others. As α grows π(q) becomes
    one-hot (Prop. 6.2) and the lookup exact: with score = 50 the other weights are
    e^{-50} ≈ 2e-22 each, below float64's resolution 2^-53 ≈ 1.1e-16 for any M < 10^5.
    """
    if key not in D:
        raise KeyError(key)
    if not score > 0:
        raise ValueError(f"the query's score must be > 0 to pick its key; "
                         f"got {score!r}")
    names, K, V = one_hot_keys(D)                               # K (M, M), V (M, 1)
    q = score * math.sqrt(len(names)) * K[names.index(key)]     # (d,) = α e_key
    return scaled_dot_product_attention(q[None], K, V)[0, 0].item()   # (1, d) -> (1, 1)


# --- Example 6.2 and Exercise 6.1: the printed numbers --------------------------------

# The inputs of Example 6.2 (eqs. 36–43) and Exercise 6.1 (eqs. 44–50): q, k_1, k_2, v_1, v_2.
EXAMPLE_6_2 = dict(q=(1, 0), k1=(1, 0), k2=(0, 1), v1=(2, 0), v2=(0, 3))
EXERCISE_6_1 = dict(q=(2, 1), k1=(1, 0), k2=(0, 1), v1=(1, 2), v2=(4, -1))
HALF_UNIT = 5e-9    # half a unit in the 8th decimal: a correctly rounded 8-decimal value is this close


def worked_example(inputs: dict, *, dtype=torch.float64) -> dict:
    """s_1, s_2, π_1, π_2, o_1, o_2 of a two-key example, computed by (30) and (35).

    s_m = exp(⟨q, k_m⟩/√d) are the unnormalised weights; π by attention_weights (35); o by
    scaled_dot_product_attention (30), not from π, so that the two routes check each other.
    Two such examples are printed: Example 6.2, eqs. (36)–(43), and Exercise 6.1, eqs. (44)–(50).
    Ledger: ``ledger.where("(46)")``.
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
    """(what, printed, value): every number of Example 6.2, each against the value it claims to be.

    Example 6.2 is eqs. (36)–(43) of §6.8.1. Ledger: ``ledger.where("(36)")``.
    """
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
    """Every number of Exercise 6.1's answer but e^1.41421356 (its own rows), against its value.

    Exercise 6.1's answer is eqs. (44)–(50) of §6.8.1. Ledger: ``ledger.where("(44)")``.
    """
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
    """π(α q) for each α, eq. (51): (A,) alphas, q (d,), K (M, d) -> (A, M), by (30)."""
    _check_axes(q, "q", 1)
    _check_axes(K, "K", 2)
    if K.shape[1] != q.shape[0]:
        raise ValueError(f"(51) needs q and the keys in the same R^d; "
                         f"got {q.shape[0]} and {K.shape[1]}")
    a = torch.as_tensor(alphas, dtype=q.dtype)
    S = a[:, None] * (K @ q)[None, :] / math.sqrt(q.shape[0])   # (A, M): ⟨α q, k_m⟩/√d
    return softmax(S, tau=1.0)


def hard_limit(q: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """lim_{α→+∞} π(α q) exactly: uniform on the keys maximising ⟨q, k_m⟩, 0 elsewhere.

    This covers every case: one maximiser (the one-hot limit of (51)), ties, and q = 0.
    Scores within 1e-12 of the maximum count as tied (exact for integer data).
    """
    s = K @ q                                                # (M,) ⟨q, k_m⟩
    top = torch.isclose(s, s.max(), rtol=1e-12, atol=1e-12)  # the argmax set, with ties
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


def multihead_attention(theta: dict, X: torch.Tensor, C: torch.Tensor | None = None,
                        *, heads: int = 8) -> torch.Tensor:
    """MultiheadAttention, Def. 6.14, eqs. (31)–(33), as SD-1.5 runs it (diffusers).

    X (…, N, d_in), C (…, M, d_ctx) or None for self-attention (C = X) -> (…, N, d_out).
    Θ: to_q.weight (h·d, d_in), to_k.weight (h·d, d_ctx), to_v.weight (h·d_v, d_ctx),
    to_out.0.weight (d_out, h·d_v), to_out.0.bias (d_out,) [optional].
    Corrected against the print: W_Q in (32), h heads (SD-1.5: h = 8 at every level,
    head width d = C/8), and the output bias b_O in (33).
    With h = 1 it is the core of the VAE decoder's mid-block attention (rows (93)),
    which adds biases to Q, K, V (vae_decoder.vae_attention).
    Ledger: ``ledger.where("(31)")``.
    """
    W = lecture_matrices(theta)
    C = _check_tokens(X, C, W)
    _check_heads(heads, W["W_Q"].shape[1], W["W_V"].shape[1])
    Q = X @ W["W_Q"]          # (…, N, d_in) @ (d_in, h·d) -> (…, N, h·d)          (32)
    K = C @ W["W_K"]          # (…, M, d_ctx) @ (d_ctx, h·d) -> (…, M, h·d)        (32)
    V = C @ W["W_V"]          # (…, M, d_ctx) @ (d_ctx, h·d_v) -> (…, M, h·d_v)    (32)
    # head j uses columns (j−1)d+1 … jd of W_Q, W_K (and of W_V with d_v): one (30) each
    O = scaled_dot_product_attention(_split_heads(Q, heads), _split_heads(K, heads),
                                     _split_heads(V, heads))   # (…, h, N, d_v)    (30)
    Y = _merge_heads(O) @ W["W_O"]   # [head_1 … head_h] W_O: (…, N, d_out)        (33)
    return Y if W["b_O"] is None else Y + W["b_O"]      # + b_O (to_out.0.bias)    (33)


def multihead_attention_printed(theta: dict, X: torch.Tensor,
                                C: torch.Tensor | None = None, *, heads: int = 8,
                                slips=PRINTED_SLIPS) -> torch.Tensor:
    """Def. 6.14 as printed, eqs. (31)–(33), keeping the readings named in ``slips``:

    * ``"Q = X W_O"``: (32) says Q = X W_O; the W_O of (31)/(33), the output projection;
    * ``"one head"``: (33) applies (30) once, to the full width h·d, not once per head;
    * ``"no b_O"``: (33) has no output bias.

    With all three (the default) this is the lecture's text; with a subset, each slip
    can be measured alone against diffusers (ledger rows). ``heads`` counts only
    without "one head".
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
            raise ValueError(f"Q = X W_O (32, as printed) needs W_O ∈ R^(d_in×d); "
                             f"got {tuple(W['W_O'].shape)}")
        Q = X @ W["W_O"]          # (32) as printed: the output projection as W_Q
    else:
        Q = X @ W["W_Q"]
    K, V = C @ W["W_K"], C @ W["W_V"]     # (32)
    O = scaled_dot_product_attention(_split_heads(Q, h), _split_heads(K, h),
                                     _split_heads(V, h))          # (30), h times
    Y = _merge_heads(O) @ W["W_O"]        # (33)
    return Y if (NO_OUTPUT_BIAS in slips or W["b_O"] is None) else Y + W["b_O"]
