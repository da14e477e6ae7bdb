"""sdanatomy.decoder: the VAE decoder (§6.11, §8.2, (92)–(96)) against diffusers' AutoencoderKL.decode.

Float32 tolerance. diffusers' own float32 decode of SD-1.5 (random Θ) is 2.7e-6 and 3.3e-6 of
max|x̂| away from its float64 decode at 8×8 and 12×20 latents (measured once; the float64 test below
shows the arithmetic itself agrees to ~1e-14). Two float32 computations that sum in different orders
(the book's einsum, torch's conv kernels) can differ by about twice that, and a 64×64 latent has longer
sums (attention over 4096 tokens): we allow 2e-5·max|x̂|. Observed: ≤ 5e-6·max|x̂|.
"""
import inspect
import math

import pytest
import torch
from diffusers import AutoencoderKL

from sdanatomy.lecture import vae_decoder
from sdanatomy.ledger import vae_decoder as vae_decoder_rows
from sdanatomy import ledger
from sdanatomy import miniature
from sdanatomy.lecture import config as lecture_config
from sdanatomy import sd15
from sdanatomy.lecture.blocks import BOOK, TORCH
from sdanatomy.sd15.reference import NARROW_VAE_CONFIG, narrow_vae
from sdanatomy.ledger.vae_decoder import edit_distance, executed_stages
from sdanatomy.lecture.layers import EPS_VAE, group_norm, sub
from sdanatomy.sd15.reference import meta
from sdanatomy.sd15.text_to_image import decode_latents

TOL_F32 = 2e-5    # of max|x̂|: float32 round-off, see the module docstring
TOL_F64 = 1e-12   # of max|x̂|: float64, ~30 layers of ≤ 4608-term sums in another order


def randn(*shape, seed=1, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def rel(Y, ref):
    return ((Y - ref).abs().max() / ref.abs().max()).item()


@pytest.fixture(scope="module")
def sd15_vae():
    vae = sd15.build_vae(weights="random", seed=0, device="cpu")            # float32, SD-1.5's config
    yield vae, {k: v.detach() for k, v in vae.state_dict().items()}
    del vae


@pytest.fixture(scope="module")
def mini():
    model = miniature.load()
    vae = model.vae.eval()
    return vae, {k: v.detach() for k, v in vae.state_dict().items()}


@pytest.fixture(scope="module")
def meta_theta():
    return dict(meta("vae").state_dict())


# --- SD-1.5, full configuration, seeded random Θ -----------------------------------------------

def test_sd15_decoder_at_64x64_matches_diffusers(sd15_vae):
    vae, theta = sd15_vae
    z = randn(1, 4, 64, 64)
    with torch.no_grad():
        ref = vae.decode(z).sample                                          # one forward each: heavy
        # torch's kernels at this size (the book's einsum convolutions take ~3 min here on 2 cores);
        # the book's own layers are compared at the other shapes and in float64 below.
        Y = vae_decoder.vae_decoder(theta, z, ops=TORCH)
    assert Y.shape == ref.shape == (1, 3, 512, 512)
    assert rel(Y, ref) <= TOL_F32


@pytest.mark.parametrize("shape, ops", [((2, 4, 8, 8), (BOOK,)), ((1, 4, 12, 20), (BOOK, TORCH)), ((1, 4, 1, 1), (BOOK,))],
                         ids=str)
def test_sd15_decoder_matches_diffusers_at_other_shapes(sd15_vae, shape, ops):
    vae, theta = sd15_vae
    z = randn(*shape)
    with torch.no_grad():
        ref = vae.decode(z).sample
        for o in ops:
            Y = vae_decoder.vae_decoder(theta, z, ops=o)
            assert Y.shape == ref.shape == (shape[0], 3, 8 * shape[2], 8 * shape[3])
            assert rel(Y, ref) <= TOL_F32, o


def test_sd15_decoder_in_float64_agrees_to_round_off():
    vae = sd15.build_vae(weights="random", seed=0, device="cpu", dtype=torch.float64)
    theta = {k: v.detach() for k, v in vae.state_dict().items()}
    z = randn(1, 4, 5, 7, dtype=torch.float64)                          # non-square, odd
    with torch.no_grad():
        ref = vae.decode(z).sample
    assert rel(vae_decoder.vae_decoder(theta, z), ref) <= TOL_F64
    del vae, theta


def test_single_latent_without_batch_axis(mini):
    vae, theta = mini
    z = randn(4, 3, 5)
    with torch.no_grad():
        ref = vae.decode(z[None]).sample[0]
    Y = vae_decoder.vae_decoder(theta, z, config=miniature.VAE_CONFIG)
    assert Y.shape == ref.shape == (1, 6, 10) and rel(Y, ref) <= TOL_F32


# --- the miniature, shipped weights ------------------------------------------------------------

@pytest.mark.parametrize("ops", [BOOK, TORCH], ids=str)
@pytest.mark.parametrize("shape", [(3, 4, 8, 8), (1, 4, 3, 5), (1, 4, 1, 1)], ids=str)
def test_miniature_decoder_matches_diffusers(mini, shape, ops):
    vae, theta = mini
    z = randn(*shape)
    with torch.no_grad():
        ref = vae.decode(z).sample
    Y = vae_decoder.vae_decoder(theta, z, config=miniature.VAE_CONFIG, ops=ops)
    assert Y.shape == ref.shape == (shape[0], 1, 2 * shape[2], 2 * shape[3])
    assert rel(Y, ref) <= TOL_F32


def test_decode_latents_divides_by_the_scaling_factor_as_the_pipeline_does(mini):
    vae, theta = mini
    latents = randn(2, 4, 8, 8)
    with torch.no_grad():
        ref = vae.decode(latents / vae.config.scaling_factor).sample        # StableDiffusionPipeline's call
    Y = vae_decoder.decode_latents(theta, latents, config=vae.config)
    assert rel(Y, ref) <= TOL_F32
    # the pipeline's decode of modules: images in [0, 1], i.e. (clamp(X̂, −1, 1) + 1) / 2
    assert rel(Y.clamp(-1, 1), decode_latents(miniature.load(), latents) * 2 - 1) <= TOL_F32
    assert lecture_config.VAE_CONFIG["scaling_factor"] == 0.18215


# --- structure: keys, stages, sizes ------------------------------------------------------------

@pytest.mark.parametrize("config", [lecture_config.VAE_CONFIG, miniature.VAE_CONFIG, NARROW_VAE_CONFIG], ids=["sd15", "miniature", "narrow"])
def test_theta_shapes_are_the_decoder_keys_of_the_state_dict(config):
    vae = sd15.build_vae(config, weights="meta")
    want = {k: tuple(v.shape) for k, v in vae.state_dict().items()
            if k.startswith(("decoder.", "post_quant_conv."))}
    assert vae_decoder.theta_shapes(config) == want


def test_sd15_decoder_parameter_count():
    assert sum(math.prod(s) for s in vae_decoder.theta_shapes().values()) == 49_490_199
    assert len(vae_decoder.theta_shapes()) == 140


def test_config_defaults_are_autoencoderkl_defaults():
    params = inspect.signature(AutoencoderKL.__init__).parameters
    for k, v in vae_decoder.CONFIG_DEFAULTS.items():
        assert params[k].default == v, k


@pytest.mark.parametrize("config", [lecture_config.VAE_CONFIG, miniature.VAE_CONFIG,
                                    dict(NARROW_VAE_CONFIG, mid_block_add_attention=False, use_post_quant_conv=False,
                                         layers_per_block=0)], ids=["sd15", "miniature", "variant"])
def test_stages_are_what_diffusers_calls(config):
    vae = sd15.build_vae(config, weights="meta")
    assert vae_decoder.stages(config) == executed_stages(vae, torch.empty(1, 4, 3, 2, device="meta"))


def test_printed_stages_against_sd15():
    printed, sd = vae_decoder.printed_stages(), vae_decoder.stages()
    assert (len(printed), len(sd)) == (10, 23)
    assert edit_distance([k for _, k in printed], [k for _, k in sd]) == 15


def test_decoder_variants_without_attention_or_post_quant_conv_match_diffusers():
    config = dict(NARROW_VAE_CONFIG, mid_block_add_attention=False, use_post_quant_conv=False, layers_per_block=1)
    vae = sd15.build_vae(config, seed=3, device="cpu", dtype=torch.float64)
    theta = {k: v.detach() for k, v in vae.state_dict().items()}
    z = randn(2, 4, 2, 3, dtype=torch.float64)
    with torch.no_grad():
        ref = vae.decode(z).sample
    assert rel(vae_decoder.vae_decoder(theta, z, config=config), ref) <= TOL_F64


@pytest.mark.parametrize("H_z, W_z", [(1, 1), (1, 2), (5, 3), (7, 13), (64, 64), (33, 97)])
def test_any_latent_size_decodes_to_eight_times_it(meta_theta, H_z, W_z):
    """§5.5 / Remark 5.2 for the decoder: no downsampling, so every H_z, W_z ≥ 1; H = 8H_z, W = 8W_z."""
    z = torch.empty(2, 4, H_z, W_z, device="meta")
    with torch.no_grad():
        ref = meta("vae").decode(z).sample.shape
    assert vae_decoder.vae_decoder(meta_theta, z).shape == ref == (2, 3, 8 * H_z, 8 * W_z)
    assert vae_decoder.upsampling_factor() == 8 and vae_decoder.printed_upsampling_factor() == 16


def test_printed_decoder_runs_and_gives_sixteen_times_the_latent():
    theta = vae_decoder.printed_theta(NARROW_VAE_CONFIG, seed=0)
    Y = vae_decoder.vae_decoder_printed(theta, randn(2, 4, 2, 3, dtype=torch.float64), config=NARROW_VAE_CONFIG)
    assert Y.shape == (2, 3, 32, 48) and torch.isfinite(Y).all()
    assert vae_decoder.printed_theta_shapes(NARROW_VAE_CONFIG) == {k: tuple(v.shape) for k, v in theta.items()}


def test_printed_first_block_cannot_normalise_four_channels_with_32_groups():
    """(93) puts a ResnetBlock2D, GroupNorm^(32) first, on Z itself: 32 does not divide C_z = 4."""
    Z = randn(1, 4, 3, 3, dtype=torch.float64)
    theta = {"weight": torch.ones(4, dtype=torch.float64), "bias": torch.zeros(4, dtype=torch.float64)}
    with pytest.raises(ValueError, match="G | C"):
        group_norm(theta, Z, groups=32, eps=EPS_VAE)


def test_compare_with_diffusers_reports_each_shape(mini):
    rows = vae_decoder_rows.compare_with_diffusers(mini[0], [(1, 4, 2, 3), (2, 4, 4, 4)])
    assert [r["image"] for r in rows] == [(1, 1, 4, 6), (2, 1, 8, 8)]
    assert all(r["same shape"] and r["error"] <= TOL_F32 for r in rows)


def test_every_latent_position_moves_every_pixel_printed_or_not():
    """§5.1 calls the decoder local; it is not: GroupNorm's μ, σ² (18) span all of H×W, and SD-1.5's
    mid block adds a global attention. A plain convolution, by contrast, has exact zeros beyond its reach."""
    vae, theta = narrow_vae(seed=0)
    z = randn(1, 4, 1, 8, dtype=torch.float64)
    sd = vae_decoder.influence(lambda z: vae_decoder.vae_decoder(theta, z, config=NARROW_VAE_CONFIG), z)
    pt = vae_decoder.printed_theta(NARROW_VAE_CONFIG)
    printed = vae_decoder.influence(lambda z: vae_decoder.vae_decoder_printed(pt, z, config=NARROW_VAE_CONFIG), z)
    assert sd.shape == printed.shape == (1, 8) and (sd > 0).all() and (printed > 0).all()
    conv = vae_decoder.influence(lambda z: torch.nn.functional.conv2d(z, torch.ones(3, 4, 3, 3, dtype=z.dtype), padding=1), z)
    assert (conv[0, :2] > 0).all() and (conv[0, 2:] == 0).all()


# --- the attention block -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def attention_case():
    vae, theta = narrow_vae(seed=0)
    A = sub(theta, "decoder.mid_block.attentions.0")                       # C = 64
    return vae.decoder.mid_block.attentions[0], A, randn(2, 64, 3, 5, dtype=torch.float64)


def test_vae_attention_matches_the_module(attention_case):
    module, A, X = attention_case
    with torch.no_grad():
        ref = module(X)
    for ops in (BOOK, TORCH):
        assert rel(vae_decoder.vae_attention(A, X, ops=ops), ref) <= TOL_F64


def test_key_bias_cancels_value_bias_folds_into_the_output_bias_query_bias_stays(attention_case):
    _, A, X = attention_case
    Y = vae_decoder.vae_attention(A, X)
    zero = lambda name: {name: torch.zeros_like(A[name])}  # noqa: E731
    assert rel(vae_decoder.vae_attention(A | zero("to_k.bias"), X), Y) <= 1e-13            # cancels in the softmax
    folded = zero("to_v.bias") | {"to_out.0.bias": A["to_out.0.bias"] + A["to_out.0.weight"] @ A["to_v.bias"]}
    assert rel(vae_decoder.vae_attention(A | folded, X), Y) <= 1e-13                       # Σ_m P_nm = 1
    assert rel(vae_decoder.vae_attention(A | zero("to_q.bias"), X), Y) > 1e-3              # a per-key score


def test_mid_and_up_blocks_match_the_modules():
    vae, theta = narrow_vae(seed=1)
    X = randn(2, 64, 3, 4, dtype=torch.float64)
    with torch.no_grad():
        mid = vae.decoder.mid_block(X)
        up = vae.decoder.up_blocks[2](X)                                      # 64 -> 32, with Upsample2D
        last = vae.decoder.up_blocks[3](randn(2, 32, 3, 4, dtype=torch.float64))
    assert rel(vae_decoder.mid_block_2d(sub(theta, "decoder.mid_block"), X), mid) <= TOL_F64
    assert rel(vae_decoder.up_decoder_block_2d(sub(theta, "decoder.up_blocks.2"), X, n=3, C_out=32, upsample=True), up) <= TOL_F64
    assert rel(vae_decoder.up_decoder_block_2d(sub(theta, "decoder.up_blocks.3"), randn(2, 32, 3, 4, dtype=torch.float64),
                                           n=3, C_out=32, upsample=False), last) <= TOL_F64


# --- the ledger rows of §8.2 -------------------------------------------------------------------

@pytest.mark.parametrize("entry", [e for e in ledger.entries() if e.section == "8.2"], ids=lambda e: e.name)
def test_ledger_rows_hold_for_three_seeds(entry):
    for seed in (0, 1, 2):
        r = entry.run(seed=seed)
        assert r.ok, f"{entry.name}, seed {seed}: {r.err:.1e} vs {entry.tol:.0e} ({entry.why_tol})"


def test_every_differs_row_has_its_matching_twin():
    rows = {e.name: e for e in ledger.entries() if e.section == "8.2"}
    assert len(rows) == 12
    for e in rows.values():
        if e.verdict == "differs":
            assert rows[e.corrected_by].verdict == "matches"


# --- bad input ---------------------------------------------------------------------------------

def _mini_call(theta, z, **kw):
    return vae_decoder.vae_decoder(theta, z, config=kw.pop("config", miniature.VAE_CONFIG), **kw)


@pytest.mark.parametrize("z, error, match", [
    (torch.zeros(1, 3, 8, 8), ValueError, r"\(B, 4, H, W\)"),                 # 3 channels, C_z = 4
    (torch.zeros(1, 5, 8, 8), ValueError, r"\(B, 4, H, W\)"),
    (torch.zeros(4, 8), ValueError, r"\(B, 4, H, W\)"),                       # wrong number of axes
    (torch.zeros(1, 1, 4, 8, 8), ValueError, r"\(B, 4, H, W\)"),
    (torch.zeros(1, 4, 0, 8), ValueError, "H, W ≥ 1"),
    (torch.zeros(1, 4, 8, 8, dtype=torch.long), TypeError, "floating-point"),
    ([[0.0] * 8] * 4, TypeError, "torch.Tensor"),
    (None, TypeError, "torch.Tensor"),
])
def test_bad_latents_are_refused(mini, z, error, match):
    with pytest.raises(error, match=match):
        _mini_call(mini[1], z)


def test_missing_key_names_it_and_its_shape(meta_theta):
    theta = {k: v for k, v in meta_theta.items() if k != "decoder.mid_block.attentions.0.to_q.weight"}
    with pytest.raises(ValueError, match=r"missing 'decoder\.mid_block\.attentions\.0\.to_q\.weight' of shape \(512, 512\)"):
        vae_decoder.vae_decoder(theta, torch.empty(1, 4, 8, 8, device="meta"))


def test_misshapen_key_names_it_and_the_expected_shape(meta_theta):
    theta = meta_theta | {"decoder.conv_in.weight": torch.empty(512, 3, 3, 3, device="meta")}
    with pytest.raises(ValueError, match=r"'decoder\.conv_in\.weight'.*\(512, 3, 3, 3\).*\(512, 4, 3, 3\)"):
        vae_decoder.vae_decoder(theta, torch.empty(1, 4, 8, 8, device="meta"))


def test_theta_of_another_configuration_is_refused(mini, meta_theta):
    with pytest.raises(ValueError, match="missing"):                          # SD-1.5's Θ, miniature config
        vae_decoder.vae_decoder(meta_theta, torch.empty(1, 4, 8, 8, device="meta"), config=miniature.VAE_CONFIG)
    stray = mini[1] | {"decoder.up_blocks.0.resnets.2.norm1.weight": torch.ones(64)}
    with pytest.raises(ValueError, match="does not have"):
        _mini_call(stray, randn(1, 4, 8, 8))


def test_theta_dtype_and_type_must_match(mini):
    _, theta = mini
    with pytest.raises(ValueError, match="float64"):
        _mini_call(theta | {"decoder.conv_out.bias": theta["decoder.conv_out.bias"].double()}, randn(1, 4, 2, 2))
    with pytest.raises(TypeError, match="torch.Tensor"):
        _mini_call(theta | {"decoder.conv_out.bias": [0.0]}, randn(1, 4, 2, 2))
    with pytest.raises(TypeError, match="dict of tensors"):
        _mini_call(list(theta.items()), randn(1, 4, 2, 2))


@pytest.mark.parametrize("config, error, match", [
    (dict(miniature.VAE_CONFIG, act_fn="relu"), ValueError, "silu"),
    (dict(miniature.VAE_CONFIG, up_block_types=("UpDecoderBlock2D",)), ValueError, "up_block_types"),
    (dict(miniature.VAE_CONFIG, norm_num_groups=24), ValueError, "G | C"),
    (dict(miniature.VAE_CONFIG, block_out_channels=()), ValueError, "at least one"),
    (dict(miniature.VAE_CONFIG, layers_per_block=-1), ValueError, "layers_per_block"),
    (dict(miniature.VAE_CONFIG, latent_channels=0), ValueError, "latent_channels"),
    ("sd15", TypeError, "config"),
])
def test_bad_configs_are_refused(mini, config, error, match):
    with pytest.raises(error, match=match):
        _mini_call(mini[1], randn(1, 4, 2, 2), config=config)


def test_bad_ops_and_block_arguments_are_refused(mini):
    _, theta = mini
    with pytest.raises(TypeError, match="ops"):
        _mini_call(theta, randn(1, 4, 2, 2), ops="torch")
    with pytest.raises(ValueError, match="positive integer n"):
        vae_decoder.up_decoder_block_2d(sub(theta, "decoder.up_blocks.0"), randn(1, 64, 2, 2), n=0, C_out=64, upsample=True)
    with pytest.raises(ValueError, match="missing"):
        vae_decoder.vae_attention(sub(theta, "decoder.mid_block.resnets.0"), randn(1, 64, 2, 2))
    with pytest.raises(ValueError, match="printed_theta_shapes"):
        vae_decoder.vae_decoder_printed(theta, randn(1, 4, 2, 2), config=miniature.VAE_CONFIG)


def test_a_failed_call_changes_nothing(mini):
    _, theta = mini
    bad = {k: v.clone() for k, v in theta.items()}
    bad["decoder.conv_out.weight"] = torch.zeros(1, 32, 1, 1)                 # the last key read, misshapen
    before = {k: v.clone() for k, v in bad.items()}
    z = randn(1, 4, 3, 3)
    z0 = z.clone()
    with pytest.raises(ValueError, match="conv_out"):
        _mini_call(bad, z)
    assert bad.keys() == before.keys() and all(torch.equal(bad[k], before[k]) for k in bad)
    assert torch.equal(z, z0)
    # and the good Θ still decodes as before
    assert rel(_mini_call(theta, z), _mini_call(theta, z0)) == 0
