"""Deliberate breaks: a printed reading implemented subtly wrong makes its ledger row FAIL.

A "differs" row holds when the printed reading really differs from SD-1.5 *and* its second
route (registry.Route) computes the same printed reading independently. Each test here swaps
one function for a subtly wrong version, where the row's code looks it up, and checks that

* the difference alone would still be "real" (error > tolerance: the old check would pass), and
* the row now fails, because the second route disagrees.
"""
import pytest
import torch

from sdanatomy import ledger
from sdanatomy.lecture.attention import NO_OUTPUT_BIAS
from sdanatomy.lecture.blocks import BOOK, TORCH, resnet_block_2d
from sdanatomy.lecture.layers import sub
from sdanatomy.ledger import registry
import sdanatomy.ledger.attention as attention_rows
import sdanatomy.ledger.blocks as block_rows
import sdanatomy.ledger.layers as layer_rows
import sdanatomy.ledger.sizes as size_rows
import sdanatomy.ledger.vae_decoder as decoder_rows


def _broken(name):
    """Run the row: its error must still exceed the tolerance, and the row must fail."""
    e = ledger.get(name)
    r = e.run(seed=0)
    assert e.verdict == "differs" and r.err > e.tol, f"{name}: the break should keep the difference"
    assert r.route_ok is False and not r.ok, f"{name}: its second route should catch the break"
    return r


def test_the_rows_hold_unbroken():
    for name in ("(53)–(54) ResnetBlock2D, as printed: FiLM after GroupNorm",
                 "(31)–(33) MultiheadAttention, as printed", "(14) Conv2d as printed, i·s+u−p",
                 "(60) UpBlock2D upsamples first, as printed", "(92)–(95) decoder stages as printed",
                 "(95)–(96) one L_d for the levels and the upsamplings, as printed", "(27) Concat",
                 "§5.5 every layer translation-equivariant, as printed: any shift",
                 "§6 function names, as printed: each a torch or diffusers name",
                 "§6 footnotes, as printed: diffusers' file paths",
                 "(34)–(35) soft dictionary weighs the closest key most, as printed (Ex. 6.1)"):
        assert ledger.get(name).run(seed=0).ok, name


# --- a printed block ------------------------------------------------------------------------

def test_a_printed_resnet_with_the_time_input_negated_fails(monkeypatch):
    printed = block_rows.resnet_block_2d_printed

    def negated_h(theta, X, h=None, **kw):                # β(−h) for β(h): still not SD-1.5's
        return printed(theta, X, None if h is None else -h, **kw)
    monkeypatch.setattr(block_rows, "resnet_block_2d_printed", negated_h)
    _broken("(53)–(54) ResnetBlock2D, as printed: FiLM after GroupNorm")


def test_a_printed_up_block_that_upsamples_last_fails(monkeypatch):
    def upsample_last(theta, X, S, h, *, ops=BOOK, **kw):  # one skip, but SD-1.5's order
        n = sum(k.endswith(".norm1.weight") for k in theta)
        Y = torch.cat([X, S[..., ::2, ::2]], dim=1)
        for r in range(n):
            Y = resnet_block_2d(sub(theta, f"resnets.{r}"), Y, h, ops=ops)
        return ops.upsample_2d(sub(theta, "upsamplers.0"), Y)
    monkeypatch.setattr(block_rows, "up_block_2d_printed", upsample_last)
    _broken("(60) UpBlock2D upsamples first, as printed")


# --- a printed attention ----------------------------------------------------------------------

def test_a_printed_attention_that_keeps_the_output_bias_fails(monkeypatch):
    printed = attention_rows.multihead_attention_printed

    def keeps_b_O(theta, X, C=None, *, heads=8, slips=()):
        return printed(theta, X, C, heads=heads, slips=tuple(s for s in slips if s != NO_OUTPUT_BIAS))
    monkeypatch.setattr(attention_rows, "multihead_attention_printed", keeps_b_O)
    _broken("(31)–(33) MultiheadAttention, as printed")


# --- a printed layer --------------------------------------------------------------------------

def test_a_printed_conv_with_a_flipped_kernel_fails(monkeypatch):
    printed = layer_rows.conv2d_as_printed

    def flipped(theta, X, **kw):
        return printed(dict(theta, weight=theta["weight"].flip(-1)), X, **kw)
    monkeypatch.setattr(layer_rows, "conv2d_as_printed", flipped)
    _broken("(14) Conv2d as printed, i·s+u−p")


# --- structure and size -------------------------------------------------------------------------

def test_printed_stages_without_the_head_fail(monkeypatch):
    printed = decoder_rows.printed_stages
    monkeypatch.setattr(decoder_rows, "printed_stages", lambda *a, **k: printed(*a, **k)[:-1])
    _broken("(92)–(95) decoder stages as printed")


def test_a_printed_size_formula_off_by_one_level_fails(monkeypatch):
    printed = decoder_rows.printed_upsampling_factor
    monkeypatch.setattr(decoder_rows, "printed_upsampling_factor", lambda config: printed(config) // 2)
    _broken("(95)–(96) one L_d for the levels and the upsamplings, as printed")


def test_a_printed_decoder_that_skips_an_upsampling_fails(monkeypatch):
    printed = decoder_rows.vae_decoder_printed

    def one_short(theta, z, **kw):                        # the last level does not upsample
        Y = printed(theta, z, **kw)
        return Y[..., ::2, ::2]
    monkeypatch.setattr(decoder_rows, "vae_decoder_printed", one_short)
    e = ledger.get("(95)–(96) one L_d for the levels and the upsamplings, as printed")
    assert not e.run(seed=0).ok


# --- a printed claim in prose -------------------------------------------------------------------

def test_equivariance_through_a_zero_padded_book_unet_fails(monkeypatch):
    # The book's route pads with zeros where diffusers' module pads circularly.
    monkeypatch.setattr(size_rows, "CIRCULAR", TORCH)
    _broken("§5.5 every layer translation-equivariant, as printed: any shift")


def test_a_name_lookup_blind_to_snake_case_fails(monkeypatch):
    # getattr with the printed spelling only: Interpolate, Concat, ScaledDotProductAttention
    # go missing too, where the source files have interpolate, concat, scaled_dot_product_attention.
    monkeypatch.setattr(layer_rows, "_spellings", lambda name: (name,))
    _broken("§6 function names, as printed: each a torch or diffusers name")


def test_a_path_lookup_that_drops_models_fails(monkeypatch):
    monkeypatch.setattr(layer_rows, "_module_of",
                        lambda path: "diffusers." + path.removesuffix(".py").split("/")[-1])
    _broken("§6 footnotes, as printed: diffusers' file paths")


def test_soft_dictionary_weights_without_the_scaling_fail(monkeypatch):
    def unscaled(q, K):                                  # Softmax(Kq): no 1/√d
        return torch.softmax(K @ q, dim=-1)
    monkeypatch.setattr(attention_rows, "attention_weights", unscaled)
    _broken("(34)–(35) soft dictionary weighs the closest key most, as printed (Ex. 6.1)")


# --- a matching row that could not fail before: (27) ----------------------------------------------

def test_concat_in_the_wrong_order_fails(monkeypatch):
    monkeypatch.setattr(layer_rows, "concat", lambda A, B: torch.cat([B, A], dim=1))
    r = ledger.get("(27) Concat").run(seed=0)
    assert not r.ok


# --- every "differs" row has its second route -----------------------------------------------------

def test_every_differs_row_has_a_second_route():
    differs = [e for e in ledger.entries() if e.verdict == "differs"]
    missing = [e.name for e in differs if not isinstance(e.route, registry.Route)]
    assert differs and missing == []


def test_a_differs_row_without_a_second_route_is_refused_at_registration():
    before = dict(registry._REGISTRY)
    with pytest.raises(ValueError, match="second route"):
        registry.row("(0) no route", section="2", formula="x", reference="y", tol=0.0, why_tol="t",
                      verdict="differs", corrected_by="(2) inner product",
                      note="n")(lambda seed=0, dtype=torch.float64: 1.0)
    assert registry._REGISTRY == before
