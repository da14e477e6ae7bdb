"""Attention, lecture §6.8: the functions against torch and diffusers, the printed numbers, bad input."""
import math

import pytest
import torch
import torch.nn.functional as F

from sdanatomy.lecture import attention, layers
from sdanatomy.ledger import attention as attention_rows
from sdanatomy.sd15 import attention as sd15_attention
from sdanatomy.pages import attention as attention_page
from sdanatomy.ledger import registry

F64 = torch.float64


def _rand(*shape, seed=0, scale=1.0):
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


# --- (17), (30) ---------------------------------------------------------------------------

def test_softmax_with_temperature_is_eq_17():
    x = _rand(7)
    for tau in (0.25, 1.0, 3.0):
        literal = torch.exp(x / tau) / torch.exp(x / tau).sum()   # (17) as written
        # float64, π < 1, the same x/τ on both sides: the shift by the max costs
        # ≤ u·|z − m|·π ≤ u/e; exp, the 7-term sum and the division ~9u·π: ~1e-15 at
        # worst, 3e-17 measured; rtol=0 so the bound is the stated one
        assert torch.allclose(layers.softmax(x, tau=tau), literal, rtol=0, atol=1e-15)


@pytest.mark.parametrize("tau", [0, -1.0, math.nan, math.inf, True])
def test_softmax_rejects_bad_temperature(tau):
    with pytest.raises(ValueError, match="temperature τ > 0"):
        layers.softmax(torch.zeros(3), tau=tau)


@pytest.mark.parametrize("shape_q, shape_k, shape_v", [
    ((5, 8), (7, 8), (7, 3)),                 # the lecture's matrices
    ((2, 8, 16, 40), (2, 8, 77, 40), (2, 8, 77, 40)),   # (B, h, N, d) as diffusers calls it
])
def test_sdpa_matches_torch(shape_q, shape_k, shape_v):
    Q, K, V = _rand(*shape_q, seed=1), _rand(*shape_k, seed=2), _rand(*shape_v, seed=3)
    ref = F.scaled_dot_product_attention(Q, K, V)
    assert (attention.scaled_dot_product_attention(Q, K, V) - ref).abs().max() <= 1e-13


def test_printed_sdpa_is_unscaled_attention():
    # (30) as printed = Softmax(QKᵀ)V: the temperature 1/√d undoes the division by √d.
    Q, K, V = _rand(4, 40, seed=1), _rand(6, 40, seed=2), _rand(6, 3, seed=3)
    unscaled = torch.softmax(Q @ K.T, -1) @ V
    # float64: ÷√d then ÷(1/√d) move the scores by ≤ 3u·|QKᵀ| (≤ 16), ≲ 100u relative
    # in π after exp; π·V with |V| ≤ 2.3: ≲ 3e-14 at worst, 2e-16 measured; rtol=0
    assert torch.allclose(attention.scaled_dot_product_attention_printed(Q, K, V), unscaled,
                          rtol=0, atol=1e-13)
    assert (attention.scaled_dot_product_attention_printed(Q, K, V) - F.scaled_dot_product_attention(Q, K, V)).abs().max() > 0.1


@pytest.mark.parametrize("Q, K, V, match", [
    (torch.zeros(2, 3), torch.zeros(4, 5), torch.zeros(4, 1), "same d"),
    (torch.zeros(2, 3), torch.zeros(4, 3), torch.zeros(5, 1), "same M"),
    (torch.zeros(3), torch.zeros(4, 3), torch.zeros(4, 1), "must be a matrix"),
    (torch.zeros(1, 2, 3), torch.zeros(4, 3), torch.zeros(4, 1), "same number of axes"),
    (torch.zeros(1, 2, 3), torch.zeros(2, 4, 3), torch.zeros(2, 4, 1), "leading"),
])
def test_sdpa_rejects_bad_shapes(Q, K, V, match):
    with pytest.raises(ValueError, match=match):
        attention.scaled_dot_product_attention(Q, K, V)


def test_sdpa_rejects_non_tensors():
    with pytest.raises(TypeError, match="torch.Tensor"):
        attention.scaled_dot_product_attention([[1.0]], torch.zeros(1, 1), torch.zeros(1, 1))


# --- §6.8.1: dictionary, Prop. 6.1 -------------------------------------------------------

def test_example_6_1_dictionary():
    D = {"cat": 1, "dog": 2}
    assert attention.lookup(D, "dog") == D["dog"] == 2 and attention.lookup(D, "cat") == D["cat"]
    with pytest.raises(KeyError):
        attention.lookup(D, "bird")
    with pytest.raises(ValueError, match="at least one key"):
        attention.one_hot_keys({})


def test_soft_lookup_is_prop_6_1():
    Q, K, V = _rand(5, 8, seed=1), _rand(7, 8, seed=2), _rand(7, 3, seed=3)
    assert (attention.soft_lookup(Q, K, V) - F.scaled_dot_product_attention(Q, K, V)).abs().max() <= 1e-13
    pi = attention.attention_weights(Q[0], K)
    assert pi.shape == (7,) and abs(pi.sum().item() - 1) < 1e-15 and (pi > 0).all()


def test_remark_6_3_one_hot_weights_pick_a_value():
    V = _rand(4, 3)
    for m in range(4):
        assert torch.equal(torch.eye(4, dtype=F64)[m] @ V, V[m])


# --- Example 6.2, Exercise 6.1 -----------------------------------------------------------

@pytest.mark.parametrize("claims", [attention.claims_example_6_2, attention.claims_exercise_6_1])
def test_every_printed_number_is_correctly_rounded(claims):
    for what, printed, value in claims():
        assert abs(printed - value) <= attention.HALF_UNIT, what
        assert round(value, 8) == printed, what   # the printed digits are the rounding of the value


def test_the_one_printed_slip_in_exercise_6_1():
    assert round(math.exp(1.41421356), 8) == 4.11325037          # not 4.11325038 as printed
    assert round(math.exp(math.sqrt(2)), 8) == 4.11325038        # which is s_1 = e^√2


def test_exact_forms_with_sympy():
    sp = pytest.importorskip("sympy")
    ex = attention.exact_example(attention.EXAMPLE_6_2)
    e = sp.exp(1 / sp.sqrt(2))
    assert sp.simplify(ex["π_1"] - e / (e + 1)) == 0 and sp.simplify(ex["π_2"] - 1 / (e + 1)) == 0   # (40)
    assert sp.simplify(ex["o"] - sp.Matrix([2 * e / (e + 1), 3 / (e + 1)])) == sp.zeros(2, 1)          # (42)
    xr = attention.exact_example(attention.EXERCISE_6_1)
    assert sp.simplify(xr["π_1"] - ex["π_1"]) == 0          # Exercise 6.1's weights are Example 6.2's
    p1 = xr["π_1"]
    assert sp.simplify(xr["o"] - sp.Matrix([4 - 3 * p1, 3 * p1 - 1])) == sp.zeros(2, 1)               # (49)
    for symbol, printed in (("π_1", 0.66976155), ("π_2", 0.33023845)):   # (48), to 30 digits first
        assert round(float(xr[symbol].evalf(30)), 8) == printed
    assert [round(float(x.evalf(30)), 8) for x in xr["o"]] == [1.99071535, 1.00928465]              # (50)


# --- Prop. 6.2 -----------------------------------------------------------------------------

def test_limit_parallel_antiparallel_and_ties():
    q = torch.tensor([1.0, 0.0], dtype=F64)
    alphas = [0.0, 1.0, 10.0, 100.0, 1000.0]
    aligned = attention.weights_along_ray(q, torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=F64), alphas)[:, 0]
    assert aligned[0] == 0.5 and (aligned.diff() >= 0).all() and aligned[-1] == 1.0
    anti = attention.weights_along_ray(q, torch.tensor([[-1.0, 0.0], [0.0, 1.0], [0.0, -2.0]], dtype=F64), [1000.0])[0]
    assert anti[0] < 1e-300
    # exact: the tied scores are 0, exp(0) = 1, 1 + 1 + e^(−707) rounds to 2: ½ exactly
    assert torch.allclose(anti[1:], torch.tensor([0.5, 0.5], dtype=F64), rtol=0, atol=0)
    tie = torch.tensor([[1.0, 0.0], [1.0, 5.0], [0.0, 1.0]], dtype=F64)
    assert torch.equal(attention.hard_limit(q, tie), torch.tensor([0.5, 0.5, 0.0], dtype=F64))
    zero_q = attention.hard_limit(torch.zeros(2, dtype=F64), tie)   # q = 0: every score 0, uniform for every α
    # exact: 1/3 in float64, one correctly rounded division on both sides
    assert torch.allclose(zero_q, torch.full((3,), 1 / 3, dtype=F64), rtol=0, atol=0)


def test_plot_hard_limit():
    pytest.importorskip("matplotlib")
    import matplotlib
    matplotlib.use("Agg")
    fig, ends = attention.plot_hard_limit(alpha_max=40.0)
    values = list(ends.values())
    assert [round(v[1], 6) for v in values] == [1.0, 0.0, 0.5]
    assert all(abs(at - limit) < 1e-8 for at, limit in values)
    matplotlib.pyplot.close(fig)


# --- MultiheadAttention (31)–(33) against diffusers --------------------------------------

@pytest.mark.parametrize("C", attention_rows.SD15_WIDTHS)
@pytest.mark.parametrize("cross", [False, True])
def test_mha_matches_diffusers_at_every_width(C, cross):
    assert attention_rows._mha_error(0, F64, cross=cross, fn=attention.multihead_attention, C=C) <= attention_rows.TOL_MHA


@pytest.mark.parametrize("slips", [(attention.Q_FROM_W_O,), (attention.ONE_HEAD,), (attention.NO_OUTPUT_BIAS,), attention.PRINTED_SLIPS])
def test_each_printed_reading_really_differs(slips):
    fn = lambda theta, X, C: attention.multihead_attention_printed(theta, X, C, slips=slips)  # noqa: E731
    assert attention_rows._mha_error(0, F64, cross=True, fn=fn) > 1e-3


def test_printed_without_slips_is_the_corrected_one():
    attn = sd15_attention.sd15_attention(320, cross=True, dtype=F64)
    theta, X, C = dict(attn.state_dict()), _rand(1, 5, 320), _rand(1, 7, 768, seed=1)
    assert torch.equal(attention.multihead_attention_printed(theta, X, C, slips=()), attention.multihead_attention(theta, X, C))


def test_no_bias_differs_by_exactly_the_bias():
    attn = sd15_attention.sd15_attention(320, cross=False, dtype=F64)
    theta, X = dict(attn.state_dict()), _rand(1, 5, 320)
    diff = attention.multihead_attention(theta, X) - attention.multihead_attention_printed(theta, X, slips=(attention.NO_OUTPUT_BIAS,))
    # float64, the same Y on both sides: fl(fl(Y + b) − Y) is b within u·(|Y + b| + |b|)
    # ≤ 0.55u ≈ 6e-17 here (|Y + b| ≤ 0.49, |b| ≤ 0.056): 1e-15 absolute, rtol=0
    assert torch.allclose(diff, theta["to_out.0.bias"].expand_as(diff), rtol=0, atol=1e-15)


def test_every_attention_module_of_the_sd15_unet():
    errors = attention_rows.unet_attention_errors()
    assert len(errors) == 32 and max(errors.values()) <= attention_rows.TOL_MHA


def test_sd15_attention_table():
    rows = sd15_attention.sd15_attention_table(64)
    assert len(rows) == 32 and sum(r["kind"] == "cross" for r in rows) == 16
    for r in rows:
        assert r["heads"] == 8 and r["d"] * 8 == r["C"]
        # diffusers' scale is dim_head ** -0.5, the same float64 expression: within a
        # rounding, so 1e-15 relative (u = 1.1e-16); abs_tol=0, scale ≥ 0.079 is not ≈ 0
        assert math.isclose(r["scale"], r["d"] ** -0.5, rel_tol=1e-15, abs_tol=0)
        assert not r["qkv_bias"] and r["out_bias"]
        assert r["to_q"] == (r["C"], r["C"]) and r["to_out"] == (r["C"], r["C"])
        assert r["to_k"] == r["to_v"] == (r["C"], 768 if r["kind"] == "cross" else r["C"])
        assert r["M"] == (77 if r["kind"] == "cross" else r["N"])
        assert r["N"] in {320: (4096,), 640: (1024,), 1280: (256, 64)}[r["C"]]   # 64², 32², 16², 8²
    mid = [r for r in rows if r["module"].startswith("mid_block")]
    assert [r["N"] for r in mid] == [64, 64] and mid[0]["HW"] == "8×8"
    with pytest.raises(ValueError, match="multiple of 8"):
        sd15_attention.sd15_attention_table(60)
    table = attention_page.attention_table(rows)   # title, header, rule, 14 lines
    assert repr(table).count("\n") == 2 + 14 and table._repr_html_().count("<tr>") == 1 + 14


@pytest.mark.parametrize("change, match", [
    (lambda t: t.pop("to_k.weight"), "missing"),
    (lambda t: t.update({"to_q.bias": torch.zeros(320)}), "do not use"),
    (lambda t: t.update({"to_out.0.bias": torch.zeros(3)}), "d_out"),
    (lambda t: t.update({"to_v.weight": torch.zeros(320, 5)}), "same d_ctx"),
])
def test_mha_rejects_bad_theta(change, match):
    theta = dict(sd15_attention.sd15_attention(320, cross=False).state_dict())
    change(theta)
    with pytest.raises(ValueError, match=match):
        attention.multihead_attention(theta, torch.zeros(1, 4, 320))


def test_mha_rejects_bad_input():
    theta = dict(sd15_attention.sd15_attention(320, cross=True).state_dict())
    X, C = torch.zeros(1, 4, 320), torch.zeros(1, 77, 768)
    with pytest.raises(ValueError, match="h must divide"):
        attention.multihead_attention(theta, X, C, heads=7)
    with pytest.raises(ValueError, match="positive integer"):
        attention.multihead_attention(theta, X, C, heads=0)
    with pytest.raises(ValueError, match="d_in = 320"):
        attention.multihead_attention(theta, torch.zeros(1, 4, 321), C)
    with pytest.raises(ValueError, match="d_ctx = 768"):
        attention.multihead_attention(theta, X, torch.zeros(1, 77, 512))
    with pytest.raises(ValueError, match="batch axes"):
        attention.multihead_attention(theta, X, torch.zeros(2, 77, 768))
    with pytest.raises(TypeError, match="dict"):
        attention.multihead_attention([("to_q.weight", 1)], X, C)
    with pytest.raises(ValueError, match="slips must be among"):
        attention.multihead_attention_printed(theta, X, C, slips=("typo",))


# --- float16 ------------------------------------------------------------------------------

def test_scaling_first_avoids_an_overflow_of_the_product():
    d = 40
    q = torch.full((1, d), 50.0)   # ⟨q, q⟩ = 100 000 > 65 504, but ⟨q, q⟩/√d ≈ 15 811 is a float16
    after = sd15_attention.scores_float16(q, q, order="after")
    assert torch.isinf(after).all()
    for order in ("before", "q-only"):
        assert torch.isfinite(sd15_attention.scores_float16(q, q, order=order)).all()
    assert torch.isfinite(sd15_attention.attention_float16(q[None], q[None], q[None], order="F.sdpa")).all()
    with pytest.raises(ValueError, match="order must be one of"):
        sd15_attention.scores_float16(q, q, order="sideways")


def test_float16_emulation_is_float16_arithmetic():
    # float16 storage + float32 arithmetic agrees with torch's float16 kernels to one float16 ulp
    Q, K = _rand(3, 16, 40, seed=1, scale=4).half(), _rand(3, 16, 40, seed=2, scale=4).half()
    native = (Q @ K.transpose(-1, -2)).float()
    emulated = sd15_attention._fp16(Q.float() @ K.float().transpose(-1, -2))
    ulp = torch.finfo(torch.float16).eps * native.abs().clamp(min=1)
    assert ((native - emulated).abs() <= ulp).all()


def test_einsum_is_the_same_product():
    # the course notes credit einsum with fewer rounding errors; on the CPU it is the same kernel's result
    Q, K = _rand(3, 16, 40, seed=1, scale=4).half(), _rand(3, 16, 40, seed=2, scale=4).half()
    assert torch.equal(torch.einsum("bnd,bmd->bnm", Q, K), Q @ K.transpose(-1, -2))


def test_float16_study_shape_and_findings():
    rows = sd15_attention.float16_study(sigmas=(1, 64), draws=8)
    by = {(r["sigma"], r["order"]): r for r in rows}
    assert len(rows) == 8
    assert by[(64, "after")]["overflow"] == 1.0 and by[(64, "before")]["overflow"] == 0.0
    assert all(by[(1, o)]["s_median"] < 1e-3 for o in sd15_attention.FP16_ORDERS)   # all at float16's rounding unit


# --- ledger --------------------------------------------------------------------------------

def test_rows_registered():
    names = [e.name for e in registry._REGISTRY.values() if e.section in ("6.8", "6.8.1")]
    assert len(names) == 21 and any(n.startswith("(51)") for n in names)
    for e in registry._REGISTRY.values():
        if e.section in ("6.8", "6.8.1") and e.verdict == "differs":
            assert registry._REGISTRY[e.corrected_by].verdict == "matches"
