"""Ledger rows of lecture §6.8: (30)–(35), (51), the printed numbers, SD-1.5's modules and torch's
MultiheadAttention class loaded with their Θ.

Imported by :mod:`sdanatomy.ledger`.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F

from sdanatomy.ledger.registry import Route, row
from sdanatomy.lecture.layers import softmax
from sdanatomy.lecture.attention import (NO_OUTPUT_BIAS, ONE_HEAD, PRINTED_SLIPS, Q_FROM_W_O, scaled_dot_product_attention, scaled_dot_product_attention_printed,
    soft_lookup, lookup, HALF_UNIT, claims_example_6_2, claims_exercise_6_1, weights_along_ray,
    hard_limit, multihead_attention, multihead_attention_printed, attention_weights)
from sdanatomy.sd15.attention import sd15_attention_modules, sd15_attention
from sdanatomy.sd15.reference import seed_parameters


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


@row("(30) ScaledDotProductAttention", section="6.8",
            formula=r"\mathrm{Softmax}(QK^\top/\sqrt d)\,V",
            reference="F.scaled_dot_product_attention (torch)", tol=TOL_SDPA, why_tol=F64_SDPA)
def _row_sdpa(seed=0, dtype=torch.float64):
    Q, K, V = _qkv(seed, dtype)   # d = 40: a head of SD-1.5's first level
    ref = F.scaled_dot_product_attention(Q, K, V)
    d = Q.shape[-1]
    tau_sqrt_d = softmax(Q @ K.transpose(-1, -2), tau=math.sqrt(d)) @ V   # the other correct reading
    return max((scaled_dot_product_attention(Q, K, V) - ref).abs().max().item(),
               (tau_sqrt_d - ref).abs().max().item())


def _route_sdpa_printed(seed=0, dtype=torch.float64):
    Q, K, V = _qkv(seed, dtype)
    # (17) with τ = 1/√d: exp((s/√d)/τ) = exp(s): torch's kernel with its scale set to 1
    return scaled_dot_product_attention_printed(Q, K, V), F.scaled_dot_product_attention(Q, K, V, scale=1.0)


@row("(30) ScaledDotProductAttention, as printed", section="6.8",
            formula=r"\mathrm{Softmax}^{(1/\sqrt d)}(QK^\top/\sqrt d)\,V",
            reference="F.scaled_dot_product_attention (torch)", tol=TOL_SDPA, why_tol=F64_SDPA,
            verdict="differs", corrected_by="(30) ScaledDotProductAttention",
            note="With (17)'s temperature τ = 1/√d the two scalings cancel: the printed formula is "
                 "Softmax(QKᵀ)V, unscaled. PyTorch and SD-1.5 divide the scores by √d once.",
     route=Route(_route_sdpa_printed,
                 how="F.scaled_dot_product_attention(Q, K, V, scale=1): the printed scores "
                     "(QKᵀ/√d)/τ with τ = 1/√d, by torch's kernel",
                 atol=1e-12, rtol=1e-12,
                 why="float64; scores up to |QKᵀ| ≈ 40 go through exp in two orders: "
                     "≲ 40·2⁻⁵³ ≈ 5e-15 relative in each weight, sums of 9 terms"))
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
    processor), given storage and seeded Θ (seed_parameters), and fed N random tokens
    (and M random 768-wide context tokens for attn2). ``names``: all 32 when None.
    """
    g = torch.Generator().manual_seed(seed)
    errors = {}
    for k, (name, meta) in enumerate(sd15_attention_modules()):
        if names is not None and name not in names:
            continue
        attn = seed_parameters(copy.deepcopy(meta), seed * 100 + k, dtype)
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


@row(MHA_SELF, section="6.8", formula=MHA_FORMULA, reference=MHA_REF + ", N = 16",
            tol=TOL_MHA, why_tol=F64_MHA)
def _row_mha_self(seed=0, dtype=torch.float64):
    return _mha_error(seed, dtype, cross=False, fn=multihead_attention)


@row("(31)–(33) MultiheadAttention, SD-1.5 cross-attention", section="6.8",
            formula=MHA_FORMULA,
            reference=MHA_REF + ", text context 77 × 768", tol=TOL_MHA, why_tol=F64_MHA)
def _row_mha_cross(seed=0, dtype=torch.float64):
    return _mha_error(seed, dtype, cross=True, fn=multihead_attention)


MID_BLOCK = "mid_block.attentions.0.transformer_blocks.0."


@row("(31)–(33) MultiheadAttention, the U-Net's mid-block modules", section="6.8",
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


def printed_attention_module(attn, slips):
    """A copy of a diffusers Attention rewired to compute (31)–(33) as printed, by diffusers'
    own processor: Q = X W_O sets to_q to to_out.0's weight; one head sets heads = 1 (the
    processor then splits nothing and scales by 1/√C); no b_O zeroes to_out.0's bias."""
    m = copy.deepcopy(attn)
    with torch.no_grad():
        if Q_FROM_W_O in slips:
            m.to_q.weight.copy_(m.to_out[0].weight)            # Q = X W_O, W_O = to_out.0.weightᵀ
        if NO_OUTPUT_BIAS in slips:
            m.to_out[0].bias.zero_()
    if ONE_HEAD in slips:
        m.heads = 1
    return m


def _printed_route(slips):
    def compute(seed=0, dtype=torch.float64):
        g = torch.Generator().manual_seed(seed)
        attn = sd15_attention(320, cross=False, seed=seed, dtype=dtype)
        X = torch.randn(2, 16, 320, generator=g, dtype=dtype)
        with torch.no_grad():
            independent = printed_attention_module(attn, slips)(X)
        return multihead_attention_printed(dict(attn.state_dict()), X, None, slips=slips), independent
    return compute


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
    row(_name, section="6.8", formula=_formula, reference=MHA_REF + ", N = 16", tol=TOL_MHA,
        why_tol=F64_MHA, verdict="differs", corrected_by=MHA_SELF, note=_note,
        route=Route(_printed_route(_slips),
                    how="diffusers' Attention (AttnProcessor2_0) rewired as printed: to_q ← "
                        "to_out.0's weight, heads ← 1, to_out.0's bias ← 0, as the slips say",
                    atol=1e-12, rtol=1e-12, why=F64_MHA))(_printed_row(_slips))


# §6.8.1: the dictionary

@row("Ex. 6.1 / Rem. 6.3 dictionary lookup", section="6.8.1",
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


@row("(34)–(35) Proposition 6.1, per-query weighted sum", section="6.8.1",
            formula=r"\textstyle\sum_{m}\pi_m(q_n)\,v_m",
            reference="F.scaled_dot_product_attention (torch), the matrix form", tol=TOL_SDPA,
            why_tol=F64_SDPA)
def _row_soft_lookup(seed=0, dtype=torch.float64):
    Q, K, V = _qkv(seed, dtype, B=1, N=5, M=7, d=8, d_v=3)
    return (soft_lookup(Q[0], K[0], V[0]) - F.scaled_dot_product_attention(Q, K, V)[0]).abs().max().item()


PRINTED_TOL = "8 printed decimals: a correctly rounded value is within half a unit, 5e-9"


@row("(36)–(43) Example 6.2, every printed number", section="6.8.1",
            formula=r"s_m,\ \pi_m,\ o \text{ of Ex. 6.2}",
            reference="the lecture's 8-decimal values vs (30)/(35) in float64", tol=HALF_UNIT,
            why_tol=PRINTED_TOL, error="max |printed − computed| over 12 numbers")
def _row_example_6_2(seed=0, dtype=torch.float64):
    return max(abs(p - v) for _, p, v in claims_example_6_2(dtype))


@row("(44)–(50) Exercise 6.1, every printed number", section="6.8.1",
            formula=r"s_m,\ \pi_m,\ o \text{ of Ex. 6.1}",
            reference="the lecture's 8-decimal values vs (30)/(35) in float64", tol=HALF_UNIT,
            why_tol=PRINTED_TOL, error="max |printed − computed| over 13 numbers")
def _row_exercise_6_1(seed=0, dtype=torch.float64):
    return max(abs(p - v) for _, p, v in claims_exercise_6_1(dtype))


@row("(46) e^1.41421356 ≈ 4.11325037", section="6.8.1", formula=r"e^{1.41421356} \approx 4.11325037",
            reference="math.exp(1.41421356)", tol=HALF_UNIT, why_tol=PRINTED_TOL,
            error="|8-decimal value − exp|",
     checks=("sdanatomy.lecture.attention.worked_example",))
def _row_e_sqrt2_corrected(seed=0, dtype=torch.float64):
    return abs(4.11325037 - math.exp(1.41421356))


def _printed_s1() -> float:
    """The value (46) prints for e^1.41421356, as the package holds the lecture's numbers."""
    return next(p for what, p, _ in claims_exercise_6_1() if what.startswith("s_1 = e^√2"))


def _route_e_sqrt2_printed(seed=0, dtype=torch.float64):
    # the printed number, and e^√2 itself rounded to 8 decimals: the print rounds e^√2, not e^1.41421356
    return _printed_s1(), round(math.exp(math.sqrt(2)), 8)


@row("(46) e^1.41421356 ≈ 4.11325038, as printed", section="6.8.1",
            formula=r"e^{1.41421356} \approx 4.11325038", reference="math.exp(1.41421356)",
            tol=HALF_UNIT, why_tol=PRINTED_TOL, error="|printed − exp|", verdict="differs",
            corrected_by="(46) e^1.41421356 ≈ 4.11325037",
            note="4.11325038 is s_1 = e^√2 correctly rounded, but e^1.41421356 = 4.1132503690…: rounding √2 "
                 "to 8 decimals (error 4.4e-9) is multiplied by e^√2 ≈ 4.1. Later numbers are unaffected.",
     checks=("sdanatomy.lecture.attention.worked_example",),
     route=Route(_route_e_sqrt2_printed,
                 how="the printed s_1 of claims_exercise_6_1 against round(e^√2, 8) (math.exp, math.sqrt)",
                 atol=1e-12, rtol=0.0,
                 why="two 8-decimal numbers in float64: equal up to their representation, < 1e-15"))
def _row_e_sqrt2_printed(seed=0, dtype=torch.float64):
    return abs(_printed_s1() - math.exp(1.41421356))


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


@row("(51) hard-dictionary limit, k_{m*} = c q with c > 0", section="6.8.1",
            formula=r"\pi(\alpha q) \to e_{m^*},\ k_{m^*} = c\,q,\ c > 0",
            reference="the one-hot vector e_{m*} that (51) claims", tol=1e-15, why_tol=LIMIT_TOL,
            error="max |π(1000 q) − e_{m*}| over 20 draws")
def _row_limit(seed=0, dtype=torch.float64):
    return _limit_error(seed, dtype, signs=(1.0,))


def _route_limit_printed(seed=0, dtype=torch.float64):
    ours, torchs = [], []
    for sign in (1.0, -1.0):
        for q, K, _ in _limit_draws(seed, dtype, sign=sign):
            ours.append(weights_along_ray(q, K, [1000.0])[0])
            torchs.append(torch.softmax(1000.0 * (K @ q) / math.sqrt(q.shape[0]), dim=-1))
    return torch.stack(ours), torch.stack(torchs)


@row("(51) hard-dictionary limit, as printed: k_{m*} ∥ q", section="6.8.1",
            formula=r"\pi(\alpha q) \to e_{m^*},\ k_{m^*} \parallel q",
            reference="the one-hot vector e_{m*} that (51) claims", tol=1e-15, why_tol=LIMIT_TOL,
            error="max |π(1000 q) − e_{m*}| over 40 draws, half with k_{m*} = −c q",
            verdict="differs", corrected_by="(51) hard-dictionary limit, k_{m*} = c q with c > 0",
            note="Parallel includes anti-parallel (and k_{m*} = 0): for k_{m*} = −c q the score of m* goes "
                 "to −∞, π_{m*}(αq) → 0 and the weight spreads evenly over the other keys. The proof's "
                 "⟨q_α, k_{m*}⟩ = α‖q‖‖k_{m*}‖ holds only for the same direction, which Remark 6.4 means.",
     route=Route(_route_limit_printed,
                 how="torch.softmax(1000·Kq/√d) on the same 40 draws against weights_along_ray "
                     "(the book's (35) with (17))",
                 atol=1e-15, rtol=1e-12,
                 why="float64 weights in [0, 1] by two softmax routines: a few units of 2⁻⁵³"))
def _row_limit_printed(seed=0, dtype=torch.float64):
    return _limit_error(seed, dtype, signs=(1.0, -1.0))


@row("(51) ties: the limit shares the weight", section="6.8.1",
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


# --- §6.8: torch's own MultiheadAttention class, loaded with SD-1.5's Θ -----------------------

def torch_multihead_attention(attn) -> torch.nn.MultiheadAttention:
    """torch.nn.MultiheadAttention holding a diffusers Attention's Θ: to_q, to_k, to_v as its
    in-projections (with zero biases: SD-1.5's have none), to_out.0 as out_proj."""
    C, d_ctx = attn.to_q.in_features, attn.to_k.in_features
    sd = attn.state_dict()
    dtype = sd["to_q.weight"].dtype
    mha = torch.nn.MultiheadAttention(C, attn.heads, bias=True, kdim=d_ctx, vdim=d_ctx,
                                      batch_first=True, dtype=dtype).eval()
    with torch.no_grad():
        if mha._qkv_same_embed_dim:                  # self-attention: one stacked in-projection
            mha.in_proj_weight.copy_(torch.cat([sd["to_q.weight"], sd["to_k.weight"],
                                                sd["to_v.weight"]]))
        else:                                        # cross-attention: keys of width 768
            mha.q_proj_weight.copy_(sd["to_q.weight"])
            mha.k_proj_weight.copy_(sd["to_k.weight"])
            mha.v_proj_weight.copy_(sd["to_v.weight"])
        mha.in_proj_bias.zero_()
        mha.out_proj.weight.copy_(sd["to_out.0.weight"])
        mha.out_proj.bias.copy_(sd["to_out.0.bias"])
    return mha


@row("(31)–(33) torch.nn.MultiheadAttention, with SD-1.5's attn1 and attn2 Θ", section="6.8",
     formula=r"\texttt{nn.MultiheadAttention}(X, C, C)\ =\ \mathrm{Concat}_{j}(\mathrm{head}_j)"
             r"\,W_O + b_O",
     reference=MHA_REF + "; nn.MultiheadAttention(320, 8, kdim = vdim = 320 or 768, "
               "batch_first=True) with the same Θ, zero in-projection biases; N = 16, "
               "text context 77 × 768",
     tol=TOL_MHA, why_tol=F64_MHA,
     error="max abs over |torch's class − diffusers| and |multihead_attention − torch's class|")
def _row_torch_mha(seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    err = 0.0
    for cross in (False, True):
        attn = sd15_attention(320, cross=cross, seed=seed, dtype=dtype)
        X = torch.randn(2, 16, 320, generator=g, dtype=dtype)
        ctx = torch.randn(2, 77, 768, generator=g, dtype=dtype) if cross else X
        with torch.no_grad():
            ref = attn(X, encoder_hidden_states=ctx if cross else None)
            theirs = torch_multihead_attention(attn)(X, ctx, ctx, need_weights=False)[0]
        ours = multihead_attention(dict(attn.state_dict()), X, ctx if cross else None)
        err = max(err, (theirs - ref).abs().max().item(), (ours - theirs).abs().max().item())
    return err


# --- §6.8.1: "closest": the weights follow inner products, not distances -----------------------

NEAR_FAR_Q = (1.0, 0.0)
NEAR_FAR_K = ((1.0, 0.0), (3.0, 0.0))      # k₁ = q (distance 0), k₂ = 3q (distance 2)
INNER = "(35) π(q) weighs keys by inner product ⟨q, k_m⟩, not by distance"


def _near_far(dtype):
    return torch.tensor(NEAR_FAR_Q, dtype=dtype), torch.tensor(NEAR_FAR_K, dtype=dtype)


def _inner_product_draws(seed, dtype):
    """q and 6 keys of unequal norms in R^8, 20 draws; and the example of k₁ = q, k₂ = 3q."""
    g = torch.Generator().manual_seed(seed)
    draws = [_near_far(dtype)]
    for _ in range(20):
        q = torch.randn(8, generator=g, dtype=dtype)
        K = torch.randn(6, 8, generator=g, dtype=dtype) * (0.5 + 2 * torch.rand(6, 1, generator=g,
                                                                              dtype=dtype))
        draws.append((q, K))
    return draws


@row(INNER, section="6.8.1",
     formula=r"\log\pi_m(q) - \log\pi_{m'}(q) = \langle q, k_m - k_{m'}\rangle/\sqrt d",
     reference="the inner products ⟨q, k_m⟩ (torch.mv), 20 draws of 6 keys of unequal norms in "
               "R^8, and k₁ = q = (1, 0), k₂ = (3, 0)",
     tol=1e-13,
     why_tol="float64: log of softmax weights for scores |s| ≲ 10, each side a few roundings of "
             "|s|: ≲ 10·8·2⁻⁵³ ≈ 1e-14",
     error="max |log π_m − log π_1 − ⟨q, k_m − k_1⟩/√d| over the draws")
def _row_inner_product(seed=0, dtype=torch.float64):
    err = 0.0
    for q, K in _inner_product_draws(seed, dtype):
        pi = attention_weights(q, K)                                  # (35)
        s = torch.mv(K, q) / math.sqrt(q.shape[0])
        err = max(err, ((pi.log() - pi[0].log()) - (s - s[0])).abs().max().item())
    return err


def _route_closest_printed(seed=0, dtype=torch.float64):
    q, K = _near_far(dtype)
    a = math.sqrt(2.0)        # (⟨q, k₂⟩ − ⟨q, k₁⟩)/√d = (3 − 1)/√2
    return attention_weights(q, K), [1 / (1 + math.exp(a)), math.exp(a) / (1 + math.exp(a))]


@row("(34)–(35) soft dictionary weighs the closest key most, as printed (Ex. 6.1)",
     section="6.8.1",
     formula=r"\|q - k_1\| < \|q - k_2\| \Rightarrow \pi_1(q) > \pi_2(q)",
     reference="(35) for q = (1, 0), k₁ = (1, 0) (distance 0), k₂ = (3, 0) (distance 2)",
     tol=1e-13, why_tol="the matching tolerance of the corrected row",
     error="π₂(q) − π₁(q): the farther key's weight minus the closer key's (≤ 0 if the closest "
           "weighed most)",
     verdict="differs", corrected_by=INNER,
     note="Attention weighs by inner product: k₂ = 3q is farther from q than k₁ = q but has the "
          "larger score, π = (0.196, 0.804). Distance and inner product rank keys alike only "
          "when the keys have equal norms, ‖q − k‖² = ‖q‖² + ‖k‖² − 2⟨q, k⟩.",
     route=Route(_route_closest_printed,
                 how="the closed form π = (1, e^√2)/(1 + e^√2), from the scores 1/√2 and 3/√2 "
                     "(math.exp)",
                 atol=1e-15, rtol=1e-14,
                 why="float64 weights in (0, 1): exp, a sum and a division on each side, a few "
                     "units of 2⁻⁵³"))
def _row_closest_printed(seed=0, dtype=torch.float64):
    pi = attention_weights(*_near_far(dtype))
    return (pi[1] - pi[0]).item()
