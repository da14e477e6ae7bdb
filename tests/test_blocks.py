"""Blocks, lecture §6.9–6.10: each block against its diffusers module, the printed readings, bad input.

The ledger rows (tests/test_ledger.py) compare every block with diffusers for seeds 0–2; here:
both kernel sets, single images, the printed readings' documented failures, and bad input.
"""
import pytest
import torch
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from diffusers.models.upsampling import Upsample2D

from sdanatomy.lecture import blocks
from sdanatomy.sd15.reference import NARROW_UNET_CONFIG, narrow_unet, seed_parameters
from sdanatomy.ledger.blocks import _up_inputs
from sdanatomy.lecture.layers import sub

F64 = torch.float64
TOL = 1e-12   # float64, sums of ≤ 6·10³ products in another order than torch: ≲ 7e-13 of the output scale


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def _theta(m):
    return {k: v.detach() for k, v in m.state_dict().items()}


@pytest.fixture(scope="module")
def u():
    return narrow_unet(0, F64)


@pytest.fixture(scope="module")
def theta(u):
    return _theta(u)


def _resnet(C_in, C_out, d_t=128, eps=1e-5, seed=0):
    with torch.device("meta"):
        m = ResnetBlock2D(in_channels=C_in, out_channels=C_out, temb_channels=d_t, groups=32, eps=eps)
    return seed_parameters(m, seed, F64)


# --- ResnetBlock2D -------------------------------------------------------------------------

@pytest.mark.parametrize("C_in, C_out, d_t", [(64, 64, 128), (32, 64, 128), (64, 32, None)])
@pytest.mark.parametrize("ops", [blocks.BOOK, blocks.TORCH], ids=repr)
def test_resnet_matches_diffusers(C_in, C_out, d_t, ops):
    m = _resnet(C_in, C_out, d_t)
    X, h = _rand(2, C_in, 5, 7), (_rand(2, d_t, seed=1) if d_t else None)
    with torch.no_grad():
        ref = m(X, h)
    assert _rel(blocks.resnet_block_2d(_theta(m), X, h, ops=ops), ref) <= TOL


def test_resnet_takes_one_image_and_one_time_vector():
    m = _resnet(32, 64)
    X, h = _rand(32, 4, 3), _rand(128, seed=1)
    with torch.no_grad():
        ref = m(X[None], h[None])[0]
    assert _rel(blocks.resnet_block_2d(_theta(m), X, h), ref) <= TOL


def test_printed_resnet_with_its_own_film_parameters_is_film():
    # With γ ≠ 1 the printed block scales GN(W_1): check (54) term by term against a direct computation.
    m = _resnet(32, 32)
    th = blocks.printed_resnet_theta(_theta(m))
    th["gamma.weight"], th["gamma.bias"] = _rand(32, 128, seed=3) * 0.1, _rand(32, seed=4)
    X, h = _rand(2, 32, 4, 4), _rand(2, 128, seed=1)
    F = torch.nn.functional
    W1 = F.conv2d(F.silu(F.group_norm(X, 32, th["norm1.weight"], th["norm1.bias"], 1e-5)), th["conv1.weight"],
                  th["conv1.bias"], padding=1)
    gamma = (h @ th["gamma.weight"].T + th["gamma.bias"])[:, :, None, None]
    beta = (h @ th["beta.weight"].T + th["beta.bias"])[:, :, None, None]
    U2 = gamma * F.group_norm(W1, 32, th["norm2.weight"], th["norm2.bias"], 1e-5) + beta          # (54)
    W2 = F.conv2d(F.silu(U2), th["conv2.weight"], th["conv2.bias"], padding=1)
    S = F.conv2d(X, th["conv_shortcut.weight"], th["conv_shortcut.bias"])                          # (56)
    assert _rel(blocks.resnet_block_2d_printed(th, X, h), S + W2) <= TOL


def test_printed_resnet_without_its_slips_is_sd15():
    m = _resnet(32, 64)
    X, h = _rand(2, 32, 4, 4), _rand(2, 128, seed=1)
    with torch.no_grad():
        ref = m(X, h)
    th = blocks.printed_resnet_theta(_theta(m))
    assert _rel(blocks.resnet_block_2d_printed(th, X, h, slips=()), ref) <= TOL
    assert _rel(blocks.resnet_block_2d_printed(th, X, h), ref) > 1e-3


@pytest.mark.parametrize("change, match", [
    (dict(X=_rand(2, 16, 4, 4)), "C_in = 32"),
    (dict(h=None), "takes a time embedding h"),
    (dict(h=_rand(2, 100)), r"\(B, d_t\) = \(2, 128\)"),
    (dict(h=_rand(3, 128)), r"\(B, d_t\) = \(2, 128\)"),
    (dict(X=_rand(2, 32)), r"X ∈ R\^\(C×H×W\)"),
    (dict(drop="conv_shortcut.weight"), "needs the 1×1 shortcut"),
    (dict(drop="norm2.bias"), r"missing \['norm2.bias'\]"),
    (dict(add="extra.weight"), r"unexpected \['extra.weight'\]"),
])
def test_resnet_rejects_bad_input(change, match):
    th = _theta(_resnet(32, 64))
    X = change.get("X", _rand(2, 32, 4, 4))
    h = change["h"] if "h" in change else _rand(2, 128)
    if "drop" in change:
        th.pop(change["drop"])
    if "add" in change:
        th[change["add"]] = torch.zeros(1)
    with pytest.raises(ValueError, match=match):
        blocks.resnet_block_2d(th, X, h)


def test_resnet_without_time_projection_rejects_h():
    th = {k: v for k, v in _theta(_resnet(32, 32)).items() if not k.startswith("time_emb_proj")}
    with pytest.raises(ValueError, match="h must be None"):
        blocks.resnet_block_2d(th, _rand(1, 32, 2, 2), _rand(1, 128))


def test_ops_must_be_an_ops():
    with pytest.raises(TypeError, match="blocks.BOOK or blocks.TORCH"):
        blocks.resnet_block_2d(_theta(_resnet(32, 32)), _rand(1, 32, 2, 2), _rand(1, 128), ops="torch")


# --- the transformer -----------------------------------------------------------------------

@pytest.mark.parametrize("ops", [blocks.BOOK, blocks.TORCH], ids=repr)
@pytest.mark.parametrize("M", [1, 77])
def test_transformer_matches_diffusers_for_any_context_length(u, theta, ops, M):
    X, C = _rand(2, 64, 3, 5), _rand(2, M, 768, seed=1)
    with torch.no_grad():
        ref = u.mid_block.attentions[0](X, encoder_hidden_states=C, return_dict=False)[0]
    assert _rel(blocks.transformer_2d(sub(theta, "mid_block.attentions.0"), X, C, ops=ops), ref) <= TOL


@pytest.mark.parametrize("C, match", [
    (_rand(2, 77, 512), "d_ctx = 768"), (_rand(3, 77, 768), "B = 2"), (_rand(2, 0, 768), "M ≥ 1"),
    (_rand(77, 768), r"\(B, M, d_ctx\)"),
])
def test_transformer_rejects_bad_context(theta, C, match):
    with pytest.raises(ValueError, match=match):
        blocks.transformer_2d(sub(theta, "mid_block.attentions.0"), _rand(2, 64, 3, 5), C)


# --- the U-Net's blocks ----------------------------------------------------------------------

def test_down_blocks_return_every_state_as_a_skip(u, theta):
    X, h, C = _rand(2, 32, 6, 5), _rand(2, 128, seed=1), _rand(2, 77, 768, seed=2)
    Y, S = blocks.cross_attn_down_block_2d(sub(theta, "down_blocks.0"), X, h, C, ops=blocks.TORCH)
    with torch.no_grad():
        y, s = u.down_blocks[0](X, h, encoder_hidden_states=C)
    assert len(S) == len(s) == 3 and Y.shape == (2, 32, 3, 3)      # H*_1, H*_2, Down(H*_2); ⌈5/2⌉ = 3
    assert all(torch.equal(a, b) for a, b in zip(S, s)) and torch.equal(Y, y)


def test_last_down_level_keeps_its_size(theta):
    X, h = _rand(2, 64, 3, 5), _rand(2, 128, seed=1)
    Y, S = blocks.down_block_2d(sub(theta, "down_blocks.3"), X, h)
    assert Y.shape == X.shape and len(S) == 2                       # no downsampler in SD-1.5's level 4


@pytest.mark.parametrize("i", [0, 1, 3])
def test_up_blocks_match_diffusers(u, theta, i):
    X, skips, h, C = _up_inputs(u, i, 0, F64)
    block = u.up_blocks[i]
    kwargs = {"encoder_hidden_states": C} if hasattr(block, "attentions") else {}
    with torch.no_grad():
        ref = block(X, skips, h, **kwargs)
    if i == 0:
        Y = blocks.up_block_2d(sub(theta, "up_blocks.0"), X, skips, h)
    else:
        Y = blocks.cross_attn_up_block_2d(sub(theta, f"up_blocks.{i}"), X, skips, h, C)
    assert _rel(Y, ref) <= TOL
    assert Y.shape[-2:] == ((6, 8) if i < 3 else (3, 4))            # the last up level does not upsample


def test_up_block_checks_its_skips(u, theta):
    X, skips, h, _ = _up_inputs(u, 0, 0, F64)
    with pytest.raises(ValueError, match="it needs 3 skips, got 2"):
        blocks.up_block_2d(sub(theta, "up_blocks.0"), X, skips[:2], h)
    with pytest.raises(ValueError, match="Concat"):
        blocks.up_block_2d(sub(theta, "up_blocks.0"), X, skips[:2] + (_rand(2, 64, 4, 4),), h)


def test_mid_block_matches_diffusers(u, theta):
    X, h, C = _rand(2, 64, 3, 5), _rand(2, 128, seed=1), _rand(2, 77, 768, seed=2)
    with torch.no_grad():
        ref = u.mid_block(X, h, encoder_hidden_states=C)
    assert _rel(blocks.mid_block_2d_cross_attn(sub(theta, "mid_block"), X, h, C), ref) <= TOL


# --- the printed readings: where they cannot run on SD-1.5's Θ --------------------------------

def test_printed_down_block_needs_a_downsampler_sd15_lacks(theta):
    with pytest.raises(ValueError, match="has no Θ_Down"):
        blocks.down_block_2d_printed(sub(theta, "down_blocks.3"), _rand(2, 64, 3, 5), _rand(2, 128))


def test_printed_up_block_cannot_read_sd15_theta(theta):
    # (60): Concat(Upsample(X), S) feeds resnet 1 rightly (2C channels); resnet 2 then gets C, expects 2C.
    X, S = _rand(2, 64, 3, 5), _rand(2, 64, 6, 10)
    with pytest.raises(ValueError, match="C = 64 channels; its Θ .* expects C_in = 128"):
        blocks.up_block_2d_printed(sub(theta, "up_blocks.0"), X, S, _rand(2, 128))


def test_printed_mid_block_feeds_c_to_a_resnet(theta):
    X, h, C = _rand(2, 64, 3, 5), _rand(2, 128, seed=1), _rand(2, 77, 768, seed=2)
    with pytest.raises(ValueError, match=r"\(B, d_t\)"):
        blocks.mid_block_2d_cross_attn_printed(sub(theta, "mid_block"), X, h, C)


def _printed_up_theta(C_x=64, C_s=32, C_out=32, d_t=128):
    """A Θ shaped for Def. 6.20 as printed: Upsample2D(C_x), resnets (C_x + C_s → C, C → C), 2 transformers."""
    with torch.device("meta"):
        parts = {"upsamplers.0": Upsample2D(C_x, use_conv=True),
                 "resnets.0": ResnetBlock2D(in_channels=C_x + C_s, out_channels=C_out, temb_channels=d_t),
                 "resnets.1": ResnetBlock2D(in_channels=C_out, out_channels=C_out, temb_channels=d_t)}
        for r in (0, 1):
            parts[f"attentions.{r}"] = Transformer2DModel(8, C_out // 8, in_channels=C_out, cross_attention_dim=768)
    theta = {}
    for seed, (prefix, m) in enumerate(parts.items()):
        theta |= {f"{prefix}.{k}": v for k, v in _theta(seed_parameters(m, seed, F64)).items()}
    return theta


def test_printed_cross_attn_up_block_ignores_its_attention():
    # (77) Y*_r = unflatten(Y_r): read literally, the block's output does not depend on Θ_MHA at all.
    theta = _printed_up_theta()
    X, S, h, C = _rand(2, 64, 3, 4), _rand(2, 32, 6, 8, seed=1), _rand(2, 128, seed=2), _rand(2, 77, 768, seed=3)
    Y = blocks.cross_attn_up_block_2d_printed(theta, X, S, h, C)
    other = {k: (v * 2 if k.startswith("attentions.") else v) for k, v in theta.items()}
    assert Y.shape == (2, 32, 6, 8) and torch.equal(Y, blocks.cross_attn_up_block_2d_printed(other, X, S, h, C))
    no_attention = {k: v for k, v in theta.items() if not k.startswith("attentions.")}
    assert torch.equal(Y, blocks.up_block_2d_printed(no_attention, X, S, h))
    # Without the (77) reading the attention stages do count:
    assert not torch.equal(Y, blocks.cross_attn_up_block_2d_printed(theta, X, S, h, C,
                                                                     slips=(blocks.ATTENTION_ONLY,)))


def test_printed_cross_attn_down_block_drops_the_first_attention(u, theta):
    # (68): the next resnet reads H_1, not H*_1, so the first transformer has no effect on the output.
    th = sub(theta, "down_blocks.0")
    X, h, C = _rand(2, 32, 6, 5), _rand(2, 128, seed=1), _rand(2, 77, 768, seed=2)
    other = {k: (v * 2 if k.startswith("attentions.0.") else v) for k, v in th.items()}
    for slips in [(blocks.CHAIN_SKIPS_ATTENTION,), blocks.DOWN_SLIPS]:
        assert torch.equal(blocks.cross_attn_down_block_2d_printed(th, X, h, C, slips=slips),
                           blocks.cross_attn_down_block_2d_printed(other, X, h, C, slips=slips))


def test_unknown_slips_are_rejected():
    X = _rand(1, 32, 2, 2)
    with pytest.raises(ValueError, match="slips must be among"):
        blocks.resnet_block_2d_printed({}, X, None, slips=("typo",))
    with pytest.raises(ValueError, match="slips must be among"):
        blocks.mid_block_2d_cross_attn_printed({}, X, None, None, slips=("typo",))


def test_narrow_reference_keeps_sd15_settings():
    # The ledger's narrow U-Net: SD-1.5's configuration in every field but the widths.
    from sdanatomy.lecture import config
    assert {k: v for k, v in NARROW_UNET_CONFIG.items() if k != "block_out_channels"} == \
        {k: v for k, v in config.UNET_CONFIG.items() if k != "block_out_channels"}
