"""text_to_image's fast CPU path (#18): the precision chooser, float32 unchanged, bf16
close to float32, and bad input."""
import pytest
import torch

from sdanatomy import miniature
from sdanatomy.sd15 import text_to_image as t2i
from sdanatomy.sd15.text_to_image import choose_precision, cpu_has_bf16, text_to_image

PROMPTS = [miniature.prompt(d) for d in range(10)]


def run(model, **kw):
    return text_to_image(model, PROMPTS, guidance=3.0, steps=6, seed=0, device="cpu",
                         progress=False, **kw)


# ---------------------------------------------------------------- the chooser
def test_chooser_follows_the_cpu(monkeypatch):
    monkeypatch.setattr(t2i, "cpu_has_bf16", lambda: (True, "said so"))
    assert choose_precision("cpu") == (torch.bfloat16,
                                       "bfloat16 with channels_last: said so")
    monkeypatch.setattr(t2i, "cpu_has_bf16", lambda: (False, "no bf16"))
    assert choose_precision("cpu") == (torch.float32, "float32: no bf16")
    assert choose_precision("cuda")[0] == torch.float16     # no GPU needed to decide
    assert choose_precision("meta")[0] == torch.float32


@pytest.mark.parametrize("precision", ["float32", "bfloat16", "float16"])
def test_chooser_obeys_a_forced_precision(precision):
    assert choose_precision("cuda", precision)[0] == getattr(torch, precision)


def test_cpu_bf16_evidence_is_a_reason():
    native, why = cpu_has_bf16()
    assert isinstance(native, bool) and why


# ---------------------------------------------------------------- float32, bf16
def test_forced_float32_is_the_default_loop_bit_for_bit():
    mini = miniature.load()
    default, forced = run(mini), run(mini, precision="float32")
    assert torch.equal(default.images, forced.images)
    assert torch.equal(default.latents, forced.latents)
    assert forced.settings["why_precision"] == "precision='float32' was asked for"


def test_an_explicit_dtype_outranks_auto():
    mini = miniature.load()
    default = run(mini)
    auto = run(mini, precision="auto", dtype=torch.float32)
    assert torch.equal(default.images, auto.images)
    assert auto.settings["why_precision"].startswith("dtype")


def test_bf16_stays_close_to_float32():
    f32 = run(miniature.load(), precision="float32")
    bf16 = run(miniature.load(), precision="bfloat16")     # fresh: the cast is in place
    assert bf16.images.dtype == bf16.latents.dtype == torch.float32
    diff = (bf16.images - f32.images).abs()
    # Pixels lie in [0, 1], an absolute scale, so rtol = 0. bf16 keeps 8 significant
    # bits (relative rounding 2^-9 ≈ 0.002 per weight and activation); through the
    # U-Net's and the VAE's layers and 6 steps the errors add up to a few hundredths at
    # the worst pixel (0.026 measured at 10 steps) and a few thousandths on average:
    # atol 0.1 at the worst pixel and 0.01 on average leave room for other CPUs'
    # kernels and still catch a wrong dtype or layout (differences of order 1).
    assert torch.allclose(bf16.images, f32.images, atol=0.1, rtol=0), diff.max()
    assert diff.mean() < 0.01, diff.mean()


def test_book_unet_runs_the_bf16_path():
    ours = run(miniature.load(), precision="bfloat16", unet="book")
    theirs = run(miniature.load(), precision="bfloat16")
    # same weights, same bf16 inputs: the book's layers and diffusers' modules round
    # alike here; allow bf16's rounding of one pass (2^-8 on pixels <= 1), rtol 0 as
    # above
    assert torch.allclose(ours.images, theirs.images, atol=2 ** -8, rtol=0)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs, error, match", [
    (dict(precision="half"), ValueError, "precision must be one of"),
    (dict(precision=16), ValueError, "precision must be one of"),
    (dict(precision="float16"), ValueError, "float16 on the CPU"),
    (dict(precision="bfloat16", dtype=torch.float32), ValueError,
     "precision or dtype, not both"),
    (dict(precision="auto", dtype=torch.float32, compile=True), ValueError,
     "give a precision"),
    (dict(compile=True), ValueError, "give a precision"),
    (dict(precision="auto", compile="yes"), TypeError, "compile must be True or False"),
])
def test_bad_precision(kwargs, error, match):
    with pytest.raises(error, match=match):
        run(miniature.load(), **kwargs)
