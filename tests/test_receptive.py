"""sdanatomy.receptive: the formulas of §7, their measurement by autograd, and the exact index sets."""
import math

import pytest
import torch

from sdanatomy.lecture import receptive
from sdanatomy.sd15 import receptive as sd15_receptive
from sdanatomy.lecture.config import UNET_CONFIG


# --------------------------------------------------------------------------- the formulas
def test_formulas_by_hand():
    assert [receptive.R_pure(L) for L in range(4)] == [1, 3, 5, 7]                        # (79)
    assert receptive.R_pure(4, k=5) == 17
    assert receptive.pure_condition(64) == 31.5 and receptive.pure_layers_needed(64) == 32       # (80)
    assert receptive.R_unet((1, 1)) == 1 + 2 * (1 + 2)                                    # (81)
    assert receptive.R_unet((4, 4, 4, 4)) == 121
    assert receptive.R_unet_uniform(3, 4) == 121                                          # (82)
    assert receptive.unet_levels_needed(64, 4) == 3 and receptive.unet_levels_needed(64, 2) == 4  # (83)
    assert receptive.unet_levels_needed(1, 1) == 0 and receptive.unet_condition(1, 1) == -1


@pytest.mark.parametrize("L", range(7))
@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_uniform_form_is_the_general_one(L, n):
    assert receptive.R_unet_uniform(L, n) == receptive.R_unet((n,) * (L + 1))
    assert receptive.R_encoder((n,) * (L + 1), k_down=1) == receptive.R_unet((n,) * (L + 1))
    assert receptive.R_encoder((n,) * (L + 1), k_down=3) - receptive.R_unet((n,) * (L + 1)) == 2 * (2 ** L - 1)


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_levels_needed_is_the_smallest_L_with_R_at_least_W(n):
    for W in range(1, 2000):
        L = receptive.unet_levels_needed(W, n)
        assert receptive.R_unet_uniform(L, n) >= W and (L == 0 or receptive.R_unet_uniform(L - 1, n) < W)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_levels_to_reach_against_index_sets(n):
    # the corrected reading of Theorem 7.1, brute-forced with the exact index sets (no autograd)
    for W in range(1, 90):
        brute = next(L for L in range(12) if any(
            receptive.encoder_field_1d(q, (n,) * (L + 1), width=W) == set(range(W))
            for q in range(math.ceil(W / 2 ** L))))
        assert brute == receptive.unet_levels_to_reach(W, n)
        assert receptive.unet_levels_needed(W, n) <= brute <= receptive.unet_levels_needed(W, n) + 1


def test_sd15_level_counts():
    assert sd15_receptive.sd15_level_counts(path="down") == (5, 4, 4, 4)
    assert sd15_receptive.sd15_level_counts() == (13, 11, 11, 14)
    assert receptive.R_encoder(sd15_receptive.sd15_level_counts(path="down")) == 137
    assert receptive.R_encoder(sd15_receptive.sd15_level_counts()) == 397


# --------------------------------------------------------------------------- measured vs index sets
@pytest.mark.parametrize("downsample", ["nearest", "conv", "average"])
@pytest.mark.parametrize("n", [(1, 2), (2, 1, 1), (1, 1, 1, 2)])
def test_toy_masks_are_the_exact_index_sets(downsample, n):
    L = len(n) - 1
    H, W = 2 ** L * 5, 2 ** L * 9
    net = receptive.toy_encoder(n, downsample=downsample)
    q = (2, 4)
    field = receptive.measure_receptive_field(net, (2, H, W), q)
    rows = receptive.encoder_field_1d(q[0], n, width=H, downsample=downsample)
    cols = receptive.encoder_field_1d(q[1], n, width=W, downsample=downsample)
    expected = torch.zeros(H, W, dtype=torch.bool)
    for i in rows:
        expected[i, sorted(cols)] = True                       # the product of the two index sets
    assert torch.equal(field.mask, expected)
    assert field.dense


def test_a_level_without_convs_leaves_holes():
    # n_0 = 0: the subsampler reads every other column and nothing fills the gaps
    field = receptive.measure_receptive_field(receptive.toy_encoder((0, 1)), (2, 1, 32), (0, 8))
    cols = torch.nonzero(field.mask[0]).flatten().tolist()
    assert cols == [14, 16, 18] and not field.dense and "with holes" in repr(field)


def test_pure_cnn_field_and_extent():
    field = receptive.measure_receptive_field(receptive.pure_cnn(3), (2, 20, 20), (10, 4))
    assert field.size == (7, 7) and field.extent == {"up": 3, "down": 3, "left": 3, "right": 3}
    corner = receptive.measure_receptive_field(receptive.pure_cnn(3), (2, 20, 20), (0, 0))
    assert corner.size == (4, 4) and corner.extent == {"up": 0, "down": 3, "left": 0, "right": 3}


@receptive.single_thread()   # tiny tensors: a second thread only adds barriers
def test_batched_probes_give_the_same_fields():
    net = receptive.toy_encoder((1, 2, 1), downsample="conv")
    pixels = [(0, 0), (1, 3), (2, 5)]
    one = receptive.measure_receptive_field(net, (2, 16, 32), pixels)
    batched = receptive.measure_receptive_field(net, (2, 16, 32), pixels, batched=True)
    assert all(torch.equal(a.mask, b.mask) for a, b in zip(one, batched))


def test_dependency_matrix_matches_pixel_by_pixel():
    net = receptive.toy_encoder((1, 1), downsample="conv")
    D = receptive.dependency_matrix(net, width=12)
    for q in range(D.shape[0]):
        assert set(torch.nonzero(D[q]).flatten().tolist()) == receptive.encoder_field_1d(q, (1, 1), width=12,
                                                                                  downsample="conv")


def test_several_probes_find_what_one_probe_misses():
    # ReLU: a pixel with X < 0 has zero derivative at this input, although f depends on it
    conv = torch.nn.Conv2d(1, 1, 3, padding=1, bias=False).double()
    torch.nn.init.constant_(conv.weight, 1.0)

    def f(X):
        return conv(torch.relu(X))
    one = receptive.measure_receptive_field(f, (1, 9, 9), (4, 4), probes=1)
    many = receptive.measure_receptive_field(f, (1, 9, 9), (4, 4), probes=16)
    assert one.pixels < 9 and many.pixels == 9 and many.size == (3, 3)


# --------------------------------------------------------------------------- GroupNorm and attention
def test_frozen_groupnorm_keeps_the_value_and_cuts_the_statistics():
    gn = torch.nn.GroupNorm(4, 8).double()
    torch.nn.init.normal_(gn.weight)
    torch.nn.init.normal_(gn.bias)
    X = torch.randn(2, 8, 6, 7, dtype=torch.float64)
    reference = gn(X)
    live = receptive.measure_receptive_field(gn, (8, 6, 7), (3, 3))
    with sd15_receptive.frozen_groupnorm(gn) as count:
        frozen_value = gn(X)
        frozen = receptive.measure_receptive_field(gn, (8, 6, 7), (3, 3))
    assert count == 1
    assert (frozen_value - reference).abs().max() < 1e-12      # float64, same sums in another order
    assert live.pixels == 42 and frozen.pixels == 1            # statistics reach everything; frozen: pointwise
    assert "forward" not in vars(gn)                           # restored


@pytest.fixture(scope="module")
def slim():
    return sd15_receptive.build_sd15_slim(seed=0)


def test_slim_sd15_differs_from_sd15_in_widths_only(slim):
    def same(a, b):
        return tuple(a) == tuple(b) if isinstance(b, tuple) else a == b
    changed = {k for k in UNET_CONFIG if not same(slim.config[k], UNET_CONFIG[k])}
    assert changed == set(sd15_receptive.SD15_SLIM_CONFIG)


def test_without_attention_patches_and_restores(slim):
    from diffusers.models.transformers.transformer_2d import Transformer2DModel
    blocks = [m for m in slim.modules() if isinstance(m, Transformer2DModel)]
    X = torch.randn(1, 8, 4, 4, dtype=torch.float64)
    with sd15_receptive.without_attention(slim) as count:
        assert torch.equal(blocks[0](X, return_dict=False)[0], X)
        assert torch.equal(blocks[0](X).sample, X)
    assert count == 16 == len(blocks)                          # 6 down, 1 mid, 9 up
    assert all("forward" not in vars(b) for b in blocks)


@receptive.single_thread()   # tiny tensors: a second thread only adds barriers
def test_sd15_conv_path_is_the_exact_index_set(slim):
    W = 512
    pixels = [(4, 0), (4, 5), (4, 256), (4, 259), (4, 511)]
    fields, _ = sd15_receptive.measure_sd15(slim, (4, 8, W), pixels, attention=False, groupnorm="frozen", batched=True)
    for field in fields:
        cols = set(torch.nonzero(field.mask.any(0)).flatten().tolist())
        assert cols == receptive.sd15_field_1d(field.output[1], width=W)
        assert field.mask.all(0)[sorted(cols)].all() and field.dense
        assert field.min_abs_grad > 1e-200                     # far from float64's underflow


@receptive.single_thread()   # tiny tensors: a second thread only adds barriers
def test_sd15_attention_or_groupnorm_reach_everything(slim):
    for attention, groupnorm in [(True, "frozen"), (False, "live")]:
        (field,), _ = sd15_receptive.measure_sd15(slim, (4, 8, 64), [(4, 3)], attention=attention, groupnorm=groupnorm)
        assert field.pixels == 8 * 64


@receptive.single_thread()   # tiny tensors: a second thread only adds barriers
def test_sd15_down_path(slim):
    (field,), _ = sd15_receptive.measure_sd15(slim, (4, 8, 256), [(0, 16)], attention=False, groupnorm="frozen", path="down")
    assert field.size[1] == 137 == receptive.R_encoder((5, 4, 4, 4))
    assert set(torch.nonzero(field.mask[0]).flatten().tolist()) == receptive.encoder_field_1d(
        16, (5, 4, 4, 4), width=256, downsample="conv")


# --------------------------------------------------------------------------- bad input
def _constant(X):
    return torch.zeros(1, 1, 4, 4)


@pytest.mark.parametrize("call, exc, match", [
    (lambda: receptive.R_pure(-1), ValueError, "L .* must be >= 0"),
    (lambda: receptive.R_pure(1.5), TypeError, "must be an int"),
    (lambda: receptive.R_unet([]), ValueError, "at least one level"),
    (lambda: receptive.R_unet(3), TypeError, "sequence"),
    (lambda: receptive.R_unet((1, -1)), ValueError, "n_1 must be >= 0"),
    (lambda: receptive.R_unet_uniform(2, 0), ValueError, "n .* must be >= 1"),
    (lambda: receptive.unet_condition(0, 1), ValueError, "W .* must be >= 1"),
    (lambda: receptive.pure_cnn(2, k=2), ValueError, "odd k"),
    (lambda: receptive.toy_encoder((1, 1), downsample="max"), ValueError, "downsample must be"),
    (lambda: receptive.sd15_field_1d(3, width=60), ValueError, "divisible by 8"),
    (lambda: receptive.sd15_field_1d(64, width=64), ValueError, r"\[0, 64\)"),
    (lambda: receptive.measure_receptive_field(receptive.pure_cnn(1), (2, 8, 8), (8, 0)), ValueError,
     "outside the output"),
    (lambda: receptive.measure_receptive_field(receptive.pure_cnn(1), (2, 8, 8), (0, -1)), ValueError,
     "outside the output"),
    (lambda: receptive.measure_receptive_field(receptive.pure_cnn(1), (2, 8, 8), [(0, 1.0)]), TypeError,
     "tuple \\(i, j\\) of ints"),
    (lambda: receptive.measure_receptive_field(receptive.pure_cnn(1), (3, 8, 8)), ValueError,
     "cannot take an input of shape \\(1, 3, 8, 8\\)"),
    (lambda: receptive.measure_receptive_field(receptive.pure_cnn(1), (2, 8)), ValueError, "C×H×W"),
    (lambda: receptive.measure_receptive_field(receptive.pure_cnn(1), (2, 8, 8), []), ValueError, "empty list"),
    (lambda: receptive.measure_receptive_field(_constant, (1, 4, 4)), ValueError, "does not depend on its input at all"),
    (lambda: receptive.measure_receptive_field(lambda X: 0 * X, (1, 4, 4)), ValueError, "depends on no input pixel"),
    (lambda: receptive.measure_receptive_field(lambda X: X.sum(), (1, 4, 4)), ValueError, "must return"),
    (lambda: sd15_receptive.measure_sd15(None, groupnorm="off"), ValueError, "groupnorm must be"),
])
def test_bad_input_gets_a_clear_error(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_plots_draw():
    import matplotlib
    matplotlib.use("Agg")
    fig = sd15_receptive.plot_growth(measured={"measured": [(2, 5), (4, 9)]})
    assert len(fig.axes) == 2
    field = receptive.measure_receptive_field(receptive.pure_cnn(2), (2, 9, 9))
    assert len(sd15_receptive.plot_fields({"a": field, "b": field}, log_magnitude=True).axes) == 4


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_one_more_level_than_83_always_reaches(n):
    for W in range(1, 20000, 7):
        assert receptive.unet_levels_needed(W, n) <= receptive.unet_levels_to_reach(W, n) <= receptive.unet_levels_needed(W, n) + 1
