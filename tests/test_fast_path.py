"""text_to_image's fast CPU path (#18): the precision chooser, "auto" the default,
float32 unchanged, bf16 close to float32, and bad input."""
import inspect

import pytest
import torch

from sdanatomy import miniature
from sdanatomy.sd15 import text_to_image as t2i
from sdanatomy.sd15.text_to_image import (BF16_MIN_PARAMS, bf16_evidence,
                                           choose_precision, cpu_has_bf16,
                                           text_to_image)

PROMPTS = [miniature.prompt(d) for d in range(10)]
SD15_UNET_PARAMS = 859_520_964      # diffusers' UNet2DConditionModel, SD-1.5's config


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


@pytest.mark.parametrize("onednn, flags, native", [
    (True, [], True),                                  # oneDNN's word suffices
    (False, ["avx512f", "avx512_bf16"], True),         # AVX-512 BF16 (Zen 4, Zen 5)
    (False, ["amx_bf16", "amx_tile"], True),           # AMX (Sapphire Rapids)
    (False, ["avx2", "avx512f", "avx512_vnni"], False),    # AVX-512 without bf16
    (False, [], False),
])
def test_bf16_evidence(onednn, flags, native):
    found, why = bf16_evidence(onednn, flags)
    assert found is native and why


@pytest.mark.parametrize("bf16, params, expected", [
    ((True, "yes"), SD15_UNET_PARAMS, torch.bfloat16),     # SD-1.5 on a bf16 CPU
    ((False, "no"), SD15_UNET_PARAMS, torch.float32),      # ... on one without
    ((True, "yes"), 792_964, torch.float32),               # the miniature: too small
    ((True, "yes"), BF16_MIN_PARAMS, torch.bfloat16),      # the rule's edge
    ((True, "yes"), None, torch.bfloat16),                 # size unknown: no size rule
])
def test_auto_on_the_cpu(bf16, params, expected):
    dtype, why = choose_precision("cpu", unet_params=params, bf16=bf16)
    assert dtype == expected and why


def test_auto_on_cuda_is_float16_at_any_size():
    for params in (792_964, SD15_UNET_PARAMS):
        assert choose_precision("cuda", unet_params=params,
                                bf16=(True, "yes"))[0] == torch.float16


@pytest.mark.parametrize("precision", ["float32", "bfloat16", "float16"])
def test_chooser_obeys_a_forced_precision(precision):
    assert choose_precision("cuda", precision)[0] == getattr(torch, precision)
    if precision != "float16":          # forced: no size rule either
        assert choose_precision("cpu", precision, unet_params=10)[0] == getattr(
            torch, precision)


def test_cpu_bf16_evidence_is_a_reason():
    native, why = cpu_has_bf16()
    assert isinstance(native, bool) and why


# ---------------------------------------------------------------- float32, bf16
def test_auto_is_the_default():
    assert inspect.signature(text_to_image).parameters["precision"].default == "auto"
    mini = miniature.load()
    default, auto = run(mini), run(mini, precision="auto")
    assert default.settings["precision"] == "auto"
    assert torch.equal(default.images, auto.images)


def test_forced_float32_is_the_plain_float32_loop_bit_for_bit():
    # dtype=float32 runs the loop without any precision handling (every module and
    # z_t in float32, contiguous): the loop the pages compare with diffusers
    mini = miniature.load()
    plain, forced = run(mini, dtype=torch.float32), run(mini, precision="float32")
    assert torch.equal(plain.images, forced.images)
    assert torch.equal(plain.latents, forced.latents)
    assert forced.settings["why_precision"] == "precision='float32' was asked for"


def test_default_on_the_miniature_is_exact_float32():
    # the miniature's 0.8 M-parameter U-Net is under BF16_MIN_PARAMS: "auto" keeps it
    # in float32 on any CPU, so the default equals float32 exactly (atol = rtol = 0)
    mini = miniature.load()
    default, f32 = run(mini), run(mini, precision="float32")
    assert default.settings["dtype"] == "float32"
    assert "gains nothing from bf16" in default.settings["why_precision"]
    assert torch.equal(default.images, f32.images)


def test_default_runs_bf16_where_auto_picks_it(monkeypatch):
    # the default's wiring when "auto" says bf16 (as for SD-1.5 on a bf16 CPU), on the
    # miniature with the size rule lifted: bf16 and channels_last, close to float32
    monkeypatch.setattr(t2i, "BF16_MIN_PARAMS", 0)
    monkeypatch.setattr(t2i, "cpu_has_bf16", lambda: (True, "said so"))
    f32 = run(miniature.load(), precision="float32")
    mini = miniature.load()
    default = run(mini)
    assert default.settings["dtype"] == "bfloat16"
    assert default.settings["why_precision"] == "bfloat16 with channels_last: said so"
    conv = mini.unet.conv_in.weight
    assert conv.dtype == torch.bfloat16
    assert conv.is_contiguous(memory_format=torch.channels_last)
    # tolerances and their reasons: as in test_bf16_stays_close_to_float32 below
    assert torch.allclose(default.images, f32.images, atol=0.1, rtol=0)
    assert (default.images - f32.images).abs().mean() < 0.01


def test_float32_after_bf16_undoes_channels_last():
    mini = miniature.load()
    run(mini, precision="bfloat16")
    run(mini, precision="float32")
    for module in (mini.unet, mini.vae):
        assert all(p.dtype == torch.float32 and p.is_contiguous()
                   for p in module.parameters())


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
    (dict(precision=None), ValueError, "precision must be one of"),
    (dict(precision="float32", dtype=torch.float32), ValueError,
     "precision or dtype, not both"),
    (dict(precision="auto", dtype=torch.float32, compile=True), ValueError,
     "leave dtype out"),
    (dict(dtype=torch.float32, compile=True), ValueError, "leave dtype out"),
    (dict(precision="auto", compile="yes"), TypeError, "compile must be True or False"),
])
def test_bad_precision(kwargs, error, match):
    with pytest.raises(error, match=match):
        run(miniature.load(), **kwargs)
