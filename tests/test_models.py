"""The whole U-Net, lecture §8.1: models.unet against UNet2DConditionModel(...).sample.

The full SD-1.5 configuration with seeded random weights, float32, at three latent sizes:
64×64 (SD-1.5's 512×512 images), 16×24 (non-square, batch 2) and 17×12 (odd, not a multiple of 8: diffusers'
``upsample_size`` path). One U-Net is built for the module (3.4 GB) and freed at its end.

Tolerance: max|ours − diffusers| ≤ 1e-4 · max|diffusers|. Both run in float32 (u = 2⁻²⁴ ≈ 6e-8);
with the same kernels in the same order they agree bit for bit (observed: 0), and a different
summation order (convolutions of up to 2560·3·3 = 23,040 terms, some 50 layers deep) stays orders of
magnitude below 1e-4 of the output scale, while any wrong layer gives errors of order 1.
"""
import gc
import inspect

import pytest
import torch
from diffusers import UNet2DConditionModel

from sdanatomy.lecture import blocks
from sdanatomy import miniature
from sdanatomy.lecture import unet as lecture_unet
from sdanatomy.lecture import config as lecture_config
from sdanatomy import sd15
from sdanatomy.sd15.reference import NARROW_UNET_CONFIG, narrow_unet

RTOL = 1e-4


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.fixture(scope="module")
def sd15_unet():
    unet = sd15.build_unet(weights="random", seed=0, device="cpu", dtype=torch.float32)
    yield unet
    del unet
    gc.collect()


@pytest.fixture(scope="module")
def theta(sd15_unet):
    return dict(sd15_unet.state_dict())        # the module's own tensors, no copy


def _inputs(B, H, W, *, M=77, d_ctx=768, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, 4, H, W, generator=g), torch.randn(B, M, d_ctx, generator=g)


@pytest.mark.parametrize("B, H, W, t", [
    (1, 64, 64, torch.tensor([500])),             # SD-1.5's own size, as in bench/unet_speed.py
    (2, 16, 24, torch.tensor([10.0, 900.0])),     # non-square, one timestep per latent
    (1, 17, 12, 999),                             # odd, no multiple of 8; t a Python int
])
def test_unet_matches_diffusers(sd15_unet, theta, B, H, W, t):
    z, c = _inputs(B, H, W)
    with torch.no_grad():
        ref = sd15_unet(z, t, encoder_hidden_states=c).sample
    eps = lecture_unet.unet(theta, z, t, c)
    assert eps.shape == ref.shape == (B, 4, H, W)
    assert _rel(eps, ref) <= RTOL, f"{_rel(eps, ref):.1e} > {RTOL} of max|ε̂| = {ref.abs().max():.3f}"


def test_unet_with_the_books_own_layers(sd15_unet, theta):
    # ops=BOOK: every conv, norm, attention by sdanatomy.layers/attention (einsum convs, explicit softmax).
    z, c = _inputs(1, 4, 6, M=5, seed=1)             # levels at 4×6, 2×3, 1×2, 1×1
    with torch.no_grad():
        ref = sd15_unet(z, 250, encoder_hidden_states=c).sample
    assert _rel(lecture_unet.unet(theta, z, 250, c, ops=blocks.BOOK), ref) <= RTOL


def test_unet_takes_one_latent_of_one_pixel(theta, sd15_unet):
    # The smallest latent SD-1.5 accepts: 1×1 (every GroupNorm group still has 10 channels).
    z, c = _inputs(1, 1, 1, M=3, seed=2)
    with torch.no_grad():
        ref = sd15_unet(z, torch.tensor(7.5), encoder_hidden_states=c).sample
    eps = lecture_unet.unet(theta, z[0], torch.tensor(7.5), c[0])
    assert eps.shape == (4, 1, 1) and _rel(eps, ref[0]) <= RTOL


def test_unet_runs_the_shipped_miniature():
    model = miniature.load()
    z, c = _inputs(2, 8, 8, M=miniature.M, d_ctx=32, seed=3)
    t = torch.tensor([100, 700])
    with torch.no_grad():
        ref = model.unet(z, t, encoder_hidden_states=c).sample
    theta = dict(model.unet.state_dict())
    assert _rel(lecture_unet.unet(theta, z, t, c, config=miniature.UNET_CONFIG), ref) <= RTOL
    assert _rel(lecture_unet.unet(theta, z, t, c, config=dict(model.unet.config)), ref) <= RTOL


# --- the configuration and Θ, derived and checked ------------------------------------------

@pytest.mark.parametrize("config", [lecture_config.UNET_CONFIG, miniature.UNET_CONFIG, NARROW_UNET_CONFIG],
                         ids=["sd15", "miniature", "narrow"])
def test_theta_shapes_are_diffusers_state_dict(config):
    meta = sd15.build_unet(config, weights="meta")
    assert lecture_unet.theta_shapes(config) == {k: tuple(v.shape) for k, v in meta.state_dict().items()}


def test_defaults_are_diffusers_defaults():
    params = inspect.signature(UNet2DConditionModel.__init__).parameters
    for k, v in (lecture_unet.UNET_DEFAULTS | lecture_unet.UNET_FIXED).items():
        assert params[k].default == v, k
    assert set(params) - {"self"} == set(lecture_unet.UNET_DEFAULTS) | set(lecture_unet.UNET_FIXED) | set(lecture_unet.UNET_IGNORED)


def test_sd15_theta_has_859_million_parameters():
    assert sum(torch.Size(s).numel() for s in lecture_unet.theta_shapes().values()) == 859_520_964


def test_unet_at_any_size_keeps_the_size():
    # ⌈H/2⌉ three times down, back up to each skip's size (float64, narrow widths). At these widths
    # a GroupNorm group is one channel, and torch needs two values per group: mid block ≥ 2 pixels.
    u = narrow_unet(0, torch.float64)
    theta = {k: v.detach() for k, v in u.state_dict().items()}
    for H, W in [(9, 3), (3, 17), (10, 26)]:
        z, c = (x.double() for x in _inputs(1, H, W, M=2))
        with torch.no_grad():
            ref = u(z, 1, encoder_hidden_states=c).sample
        eps = lecture_unet.unet(theta, z, 1, c, config=NARROW_UNET_CONFIG)
        assert eps.shape == (1, 4, H, W) and _rel(eps, ref) <= 1e-12


# --- bad input ------------------------------------------------------------------------------

@pytest.mark.parametrize("z, t, c, error, match", [
    (torch.zeros(1, 3, 8, 8), 1, torch.zeros(1, 77, 768), ValueError, r"C = 4 channels"),
    (torch.zeros(8, 8), 1, torch.zeros(1, 77, 768), ValueError, r"\(B, C, H, W\)"),
    (torch.zeros(1, 4, 8, 8), 1, torch.zeros(1, 77, 1024), ValueError, r"\(B, M, d_ctx\) = \(1, M, 768\)"),
    (torch.zeros(1, 4, 8, 8), 1, torch.zeros(2, 77, 768), ValueError, r"\(1, M, 768\)"),
    (torch.zeros(1, 4, 8, 8), 1, torch.zeros(1, 0, 768), ValueError, "M ≥ 1 tokens .*SD-1.5: M = 77"),
    (torch.zeros(2, 4, 8, 8), torch.zeros(3), torch.zeros(2, 77, 768), ValueError, r"shape \(B,\) = \(2,\)"),
    (torch.zeros(1, 4, 8, 8), torch.zeros(1, 1), torch.zeros(1, 77, 768), ValueError, r"scalar, shape \(1,\)"),
    (torch.zeros(1, 4, 8, 8), "500", torch.zeros(1, 77, 768), TypeError, "t is a number"),
    (torch.zeros(1, 4, 8, 8), True, torch.zeros(1, 77, 768), TypeError, "t is a number"),
    (torch.zeros(1, 4, 8, 8, dtype=torch.float64), 1, torch.zeros(1, 77, 768), TypeError, "dtype"),
    ([[0.0]], 1, torch.zeros(1, 77, 768), TypeError, "z is a torch.Tensor"),
])
def test_unet_rejects_bad_input(theta, z, t, c, error, match):
    with pytest.raises(error, match=match):
        lecture_unet.unet(theta, z, t, c)


def _edited(theta, drop=None, reshape=None, add=None):
    th = dict(theta)
    if drop:
        th.pop(drop)
    if reshape:
        th[reshape] = torch.zeros(3)
    if add:
        th[add] = torch.zeros(1)
    return th


@pytest.mark.parametrize("edit, match", [
    (dict(drop="conv_in.weight"), r"missing 1 key.*'conv_in.weight' with shape \(320, 4, 3, 3\)"),
    (dict(drop="mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight"), r"shape \(1280, 768\)"),
    (dict(reshape="up_blocks.1.resnets.2.conv_shortcut.weight"),
     r"Θ\['up_blocks.1.resnets.2.conv_shortcut.weight'\] must have shape \(1280, 1920, 1, 1\); got \(3,\)"),
    (dict(add="down_blocks.3.downsamplers.0.conv.weight"), "this config does not have"),
])
def test_unet_rejects_bad_theta(theta, edit, match):
    z, c = _inputs(1, 8, 8)
    with pytest.raises(ValueError, match=match):
        lecture_unet.unet(_edited(theta, **edit), z, 1, c)


def test_unet_rejects_configs_it_does_not_implement(theta):
    z, c = _inputs(1, 8, 8)
    with pytest.raises(ValueError, match="use_linear_projection.* must be False"):
        lecture_unet.unet(theta, z, 1, c, config=dict(lecture_config.UNET_CONFIG, use_linear_projection=True))
    with pytest.raises(ValueError, match="unknown config keys"):
        lecture_unet.unet(theta, z, 1, c, config=dict(lecture_config.UNET_CONFIG, upcast=True))
    with pytest.raises(TypeError, match="blocks.BOOK or blocks.TORCH"):
        lecture_unet.unet(theta, z, 1, c, ops=None)


def test_printed_unet_cannot_consume_sd15_theta(theta):
    # (85) D_0 = Z: the first resnet of level 1 receives Z's 4 channels where its Θ expects 320.
    z, c = _inputs(1, 8, 8)
    with pytest.raises(ValueError, match="C = 4 channels; its Θ .* expects C_in = 320"):
        lecture_unet.unet_printed(theta, z, 1, c)


def test_time_features_are_eq_28_in_float32():
    # The same function as embeddings.sinusoidal_embedding (float64), evaluated in float32 as SD-1.5 does:
    # angles ω_r t ≤ 999 carry rounding of ≲ ulp(999) ≈ 6e-5 (exp, the product) plus ω_r's own ≲ 2e-5.
    from sdanatomy.lecture import embeddings
    t = torch.arange(1000)
    e32 = lecture_unet.time_features(t, R=160)
    assert e32.dtype == torch.float32 and e32.shape == (1000, 320)
    assert (e32.double() - embeddings.sinusoidal_embedding(t.double(), R=160)).abs().max() <= 2e-4
