"""sdanatomy.layers and .embeddings against torch and diffusers, in float64 and float32, and their errors.

Tolerances are relative to Σ|terms| of each sum (see layers_ledger): a sum of n terms in another
order differs by at most 2(n − 1)·u·Σ|terms|, u = 2⁻⁵³ (float64) or 2⁻²⁴ (float32).
"""
import math

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.downsampling import Downsample2D
from diffusers.models.embeddings import get_timestep_embedding
from diffusers.models.upsampling import Upsample2D

from sdanatomy.lecture import embeddings
from sdanatomy.lecture import layers
from sdanatomy.lecture import notation
from sdanatomy.sd15.reference import reference, meta
from sdanatomy.ledger.sizes import stack_predicted_size

DTYPES = [torch.float64, torch.float32]
U = {torch.float64: 2.0 ** -53, torch.float32: 2.0 ** -24}


def randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def sum_tol(n, dtype):
    return 2 * (n - 1) * U[dtype] + U[dtype]


def rel(Y, ref, S):
    return ((Y - ref).abs() / S).max().item()


def conv_theta(C_out, C_in, k_h, k_w, dtype, seed=1):
    return {"weight": randn(C_out, C_in, k_h, k_w, seed=seed, dtype=dtype), "bias": randn(C_out, seed=seed + 1, dtype=dtype)}


# --- 6.1 Conv2d --------------------------------------------------------------------------

CONV_CASES = [  # C_in, C_out, H, W, (k_h, k_w), stride, padding
    (2, 3, 7, 6, (3, 3), 2, 1), (1, 2, 5, 5, (3, 3), 1, 1), (3, 2, 6, 9, (2, 3), (2, 1), (0, 1)),
    (2, 2, 4, 4, (4, 4), 1, 0), (2, 1, 9, 8, (3, 3), 3, 2), (4, 4, 3, 3, (1, 1), 1, 0),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_conv2d_and_its_literal_twin_match_torch(case, dtype):
    C_in, C_out, H, W, (k_h, k_w), s, p = case
    X = randn(2, C_in, H, W, dtype=dtype)
    theta = conv_theta(C_out, C_in, k_h, k_w, dtype)
    ref = F.conv2d(X, theta["weight"], theta["bias"], stride=s, padding=p)
    S = F.conv2d(X.abs(), theta["weight"].abs(), theta["bias"].abs(), stride=s, padding=p)
    tol = sum_tol(C_in * k_h * k_w + 1, dtype)
    assert layers.conv2d(theta, X, stride=s, padding=p).shape == ref.shape
    assert rel(layers.conv2d(theta, X, stride=s, padding=p), ref, S) <= tol
    assert rel(layers.conv2d_literal(theta, X, stride=s, padding=p), ref, S) <= tol


def test_conv2d_takes_the_lectures_unbatched_tensor_and_no_bias():
    X, theta = randn(2, 5, 6), conv_theta(3, 2, 3, 3, torch.float64)
    assert torch.equal(layers.conv2d(theta, X, padding=1), layers.conv2d(theta, X[None], padding=1)[0])
    ref = F.conv2d(X[None], theta["weight"], padding=1)[0]
    ours = layers.conv2d({"weight": theta["weight"]}, X, padding=1, bias=False)
    # float64, 18-term sums with Σ|terms| ≤ 24: two orders differ by ≤ 2·17·u·24
    # ≈ 9e-14; rtol=0
    assert torch.allclose(ours, ref, rtol=0, atol=1e-13)


@pytest.mark.parametrize("s, p", [(1, 1), (2, 1), (2, 0)])
def test_as_printed_is_the_correct_conv_shifted_by_one_window(s, p):
    # (14) as printed reads row i·s+u−p for 1-based i: output i is the correct output i + 1.
    X, theta = randn(2, 9, 8), conv_theta(2, 2, 3, 3, torch.float64)
    printed = layers.conv2d_as_printed(theta, X, stride=s, padding=p)
    correct = layers.conv2d(theta, X, stride=s, padding=p)
    assert printed.shape == correct.shape
    # float64, 19-term sums (with bias), Σ|terms| ≤ 17: ≤ 2·18·u·17 ≈ 7e-14; rtol=0
    assert torch.allclose(printed[:, :-1, :-1], correct[:, 1:, 1:], rtol=0, atol=1e-13)
    assert (printed - correct).abs().max() > 0.1


@pytest.mark.parametrize("H, k, s, p, expected", [(64, 3, 1, 1, 64), (64, 3, 2, 1, 32), (65, 3, 2, 1, 33),
                                                  (7, 2, 2, 0, 3), (5, 5, 1, 0, 1), (1, 3, 1, 1, 1)])
def test_output_size(H, k, s, p, expected):
    assert layers.conv_output_size(H, k, s, p) == expected
    assert F.conv2d(torch.empty(1, 1, H, H, device="meta"), torch.empty(1, 1, k, k, device="meta"),
                    stride=s, padding=p).shape[-1] == expected


def test_cross_correlation_is_convolution_with_the_flipped_kernel():
    scipy_signal = pytest.importorskip("scipy.signal")
    X, Wk = randn(1, 7, 9), randn(1, 1, 3, 3, seed=1)
    Y = layers.conv2d({"weight": Wk}, X, bias=False)[0]
    x, w = X[0].numpy(), Wk[0, 0].numpy()
    convolved = scipy_signal.convolve2d(x, Wk[0, 0].flip(-2, -1).numpy(), mode="valid")
    # float64, 9-term sums with Σ|terms| ≤ 8.8: two orders differ by ≤ 2·8·u·8.8
    # ≈ 1.6e-14; rtol=0
    assert torch.allclose(Y, torch.from_numpy(convolved), rtol=0, atol=1e-13)
    correlated = scipy_signal.correlate2d(x, w, mode="valid")
    assert torch.allclose(Y, torch.from_numpy(correlated),
                          rtol=0, atol=1e-13)         # the same 9-term sums: ≤ 1.6e-14


# --- 6.2 Linear, 6.3 SiLU, Softmax ----------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_matches_torch(dtype):
    x, W, b = randn(3, 5, 64, dtype=dtype), randn(16, 64, seed=1, dtype=dtype), randn(16, seed=2, dtype=dtype)
    S = F.linear(x.abs(), W.abs(), b.abs())
    assert rel(layers.linear({"weight": W, "bias": b}, x), F.linear(x, W, b), S) <= sum_tol(65, dtype)
    assert rel(layers.linear({"weight": W}, x, bias=False), F.linear(x, W), S) <= sum_tol(65, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_silu_matches_torch(dtype):
    u = randn(4096, dtype=dtype) * 5
    assert ((layers.silu(u) - F.silu(u)).abs() / F.silu(u).abs()).max() <= 8 * U[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tau", [1.0, math.sqrt(40), 0.1])
def test_softmax_matches_torch(tau, dtype):
    x = randn(6, 77, dtype=dtype)
    ref = torch.softmax(x / tau, dim=-1)
    # exp amplifies the rounding of x/τ by |x/τ| (≤ 45 for τ = 0.1); the 77-term sum adds ≤ 76u
    bound = (2 * (x / tau).abs().max().item() + 90) * U[dtype]
    assert ((layers.softmax(x, tau=tau) - ref).abs() / ref).max() <= bound


def test_softmax_literal_overflows_where_the_shifted_form_does_not():
    x = torch.tensor([100.0, 0.0, -100.0])                  # float32: exp(100) = inf
    assert torch.isnan(layers.softmax_literal(x)).any()
    # float32: the sum rounds to 1, the entries are exp(0) = 1, e⁻¹⁰⁰ (subnormal), 0:
    # equal up to the rounding of a value ≤ 1, u = 2⁻²⁴; rtol=0 (e⁻¹⁰⁰ is subnormal)
    assert torch.allclose(layers.softmax(x), torch.softmax(x, -1),
                          rtol=0, atol=2.0 ** -24)


# --- 6.4 GroupNorm ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("C, G, eps", [(64, 32, 1e-5), (128, 32, 1e-6), (6, 1, 1e-5), (6, 6, 1e-6), (8, 2, 0.1)])
def test_group_norm_matches_torch(C, G, eps, dtype):
    module = torch.nn.GroupNorm(G, C, eps=eps).to(dtype)
    with torch.no_grad():
        module.weight.copy_(randn(C, seed=1, dtype=dtype))
        module.bias.copy_(randn(C, seed=2, dtype=dtype))
    X = randn(2, C, 5, 4, dtype=dtype) * 3 + 1
    theta = dict(module.state_dict())
    n = C // G * 20                                          # |S_g|
    tol = 10 * n * U[dtype] * (1 + theta["weight"].abs().max().item())   # sums of |S_g| terms, |x̂| ≤ 4
    assert (layers.group_norm(theta, X, groups=G, eps=eps) - module(X)).abs().max() <= tol
    assert (layers.group_norm_literal(theta, X[:1, :, :2, :2], groups=G, eps=eps)
            - module(X[:1, :, :2, :2])).abs().max() <= tol


def test_groups_are_contiguous_channels_not_strided():
    C, G = 8, 2
    X = randn(1, C, 3, 3) * torch.arange(1.0, C + 1, dtype=torch.float64)[:, None, None]
    theta = {"weight": torch.ones(C, dtype=torch.float64), "bias": torch.zeros(C, dtype=torch.float64)}
    ref = F.group_norm(X, G, eps=1e-5)
    # float64, 36-term group sums: μ, σ carry ≲ 2·36·u·|x|/σ (|x|/σ ≤ 2.9) and x̂ as
    # much again, ≲ 5e-14 at worst (2e-16 measured); rtol=0
    assert torch.allclose(layers.group_norm(theta, X, groups=G), ref,
                          rtol=0, atol=1e-13)
    strided = X[:, torch.arange(C).reshape(C // G, G).T.reshape(-1)]  # channels 0,2,4,6 | 1,3,5,7
    # the wrong grouping moves some x̂ (|x̂| ≤ 2.9) by far more than rounding: > 0.1
    # (1.7 here); rtol=0
    assert not torch.allclose(F.group_norm(strided, G, eps=1e-5),
                              ref[:, torch.arange(C).reshape(C // G, G).T.reshape(-1)],
                              rtol=0, atol=0.1)


def test_sd15_group_norm_eps_at_every_site():
    # The constants in sdanatomy.layers, against every GroupNorm diffusers builds for SD-1.5.
    unet, vae = meta("unet"), meta("vae")
    for name, m in unet.named_modules():
        if isinstance(m, torch.nn.GroupNorm):
            parent = type(unet.get_submodule(name.rpartition(".")[0])).__name__
            expected = layers.EPS_TRANSFORMER if parent == "Transformer2DModel" else layers.EPS_UNET
            assert (m.num_groups, m.eps) == (32, expected), name
    for name, m in vae.decoder.named_modules():
        if isinstance(m, torch.nn.GroupNorm):
            assert (m.num_groups, m.eps) == (32, layers.EPS_VAE), name


# --- 6.5 Down- and upsampling ---------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("H, W", [(8, 8), (7, 6), (5, 9)])
def test_downsample_2d_matches_diffusers(H, W, dtype):
    torch.manual_seed(0)
    module = Downsample2D(8, use_conv=True, padding=1, name="op").to(dtype)   # as in SD-1.5's U-Net
    X = randn(2, 8, H, W, dtype=dtype)
    theta = dict(module.state_dict())
    assert set(theta) == {"conv.weight", "conv.bias"}
    S = F.conv2d(X.abs(), theta["conv.weight"].abs(), theta["conv.bias"].abs(), stride=2, padding=1)
    Y = layers.downsample_2d(theta, X)
    assert Y.shape[-2:] == (math.ceil(H / 2), math.ceil(W / 2))
    assert rel(Y, module(X), S) <= sum_tol(8 * 9 + 1, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("output_size", [None, (9, 13), (17, 20), (20, 14)])
def test_upsample_2d_matches_diffusers(output_size, dtype):
    torch.manual_seed(0)
    module = Upsample2D(8, use_conv=True).to(dtype)
    X = randn(2, 8, 5, 7, dtype=dtype)
    theta = dict(module.state_dict())
    assert set(theta) == {"conv.weight", "conv.bias"}
    Z = F.interpolate(X, scale_factor=2.0, mode="nearest") if output_size is None else \
        F.interpolate(X, size=output_size, mode="nearest")
    S = F.conv2d(Z.abs(), theta["conv.weight"].abs(), theta["conv.bias"].abs(), padding=1)
    with torch.no_grad():
        ref = module(X, output_size=output_size)
    assert rel(layers.upsample_2d(theta, X, output_size=output_size), ref, S) <= sum_tol(8 * 9 + 1, dtype)


@pytest.mark.parametrize("n_in, n_out", [(5, 10), (9, 17), (14, 20), (7, 3), (10, 7), (3, 3), (6, 9), (33, 65)])
def test_interpolate_nearest_to_any_size_is_torchs_rule(n_in, n_out):
    X = torch.arange(float(n_in * n_in)).reshape(1, 1, n_in, n_in)
    assert torch.equal(layers.interpolate_nearest(X, size=(n_out, n_out)),
                       F.interpolate(X, size=(n_out, n_out), mode="nearest"))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("H, W", [(6, 8), (7, 9), (3, 2)])
def test_pooling_and_interpolation_match_torch(H, W, dtype):
    X = randn(2, 3, H, W, dtype=dtype)
    assert torch.equal(layers.downsample_2d_nearest(X), F.interpolate(X, scale_factor=0.5, mode="nearest"))
    # ¼ of a 4-term sum in two orders: ≤ 2·3·u·mean|x| ≤ 13u here; 32u = 8u·4
    # (|x| ≤ 4.1); rtol=0
    assert torch.allclose(layers.downsample_2d_average(X), F.avg_pool2d(X, 2),
                          rtol=0, atol=8 * U[dtype] * 4)
    assert torch.equal(layers.interpolate_nearest(X), F.interpolate(X, scale_factor=2, mode="nearest"))


def test_average_pooling_is_diffusers_downsample_without_conv():
    module = Downsample2D(3, use_conv=False).double()
    X = randn(1, 3, 6, 6)
    # float64, ¼ of a 4-term sum in two orders: ≤ 2·3·u·max mean|x| = 6u·1.45
    # ≈ 9.7e-16; rtol=0
    assert torch.allclose(layers.downsample_2d_average(X), module(X),
                          rtol=0, atol=1e-15)


@pytest.mark.parametrize("dtype", DTYPES)
def test_upsample_is_a_tied_stride_2_transposed_convolution(dtype):
    torch.manual_seed(0)
    module = Upsample2D(5, use_conv=True).to(dtype)
    X = randn(2, 5, 4, 7, dtype=dtype)
    K = layers.upsample_2d_transposed_kernel(module.conv.weight.detach())
    Y = F.conv_transpose2d(X, K, module.conv.bias.detach(), stride=2, padding=1)
    # 45-term sums (5 channels × 9 taps, taps pre-summed in K) in another order,
    # Σ|terms| ≤ 4.8: ≤ 2·45·u·4.8 ≈ 430u; 1e3·u absolute, rtol=0
    assert torch.allclose(Y, module(X), rtol=0, atol=1e3 * U[dtype])


# --- 6.6 flatten, unflatten, Concat ---------------------------------------------------------

def test_flatten_and_unflatten_are_notations():
    assert notation.flatten is notation.flatten and notation.unflatten is notation.unflatten


@pytest.mark.parametrize("dtype", DTYPES)
def test_concat_matches_torch_cat(dtype):
    A, B = randn(2, 3, 4, 5, dtype=dtype), randn(2, 6, 4, 5, seed=1, dtype=dtype)
    assert torch.equal(layers.concat(A, B), torch.cat([A, B], dim=1))
    assert torch.equal(layers.concat(A[0], B[0]), torch.cat([A[0], B[0]], dim=0))


# --- 6.7 Timestep embedding -----------------------------------------------------------------

def test_sd15_frequencies_exactly():
    omega = embeddings.frequencies(160)
    assert omega[0] == 1.0                                                   # ω_0 = 1
    beta = omega[1].item()
    # β = 10000^(−1/160): the same float64 expression, and β¹ is exact: 1e-15
    # relative; abs_tol=0 (β ≈ 0.94)
    assert math.isclose(beta, 10000 ** (-1 / 160), rel_tol=1e-15, abs_tol=0)
    # β^159 carries 159 times β's rounding, ~170u ≈ 2e-14 relative: 1e-13;
    # abs_tol=0 (ω ≈ 1.06e-4)
    assert math.isclose(omega[-1].item(), 10000 ** (-159 / 160),
                        rel_tol=1e-13, abs_tol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sinusoid_matches_diffusers_and_as_printed_is_a_permutation(dtype):
    t = torch.arange(1000)
    ref = get_timestep_embedding(t, 320, flip_sin_to_cos=True, downscale_freq_shift=0).to(dtype)
    ours = embeddings.sinusoidal_embedding(t, dtype=dtype)
    # float32 reference: |Δ(ω t)| ≤ 3·999·2⁻²⁴ (see the ledger row); ours in float32 adds as much again
    assert (ours - ref).abs().max() <= (2e-4 if dtype == torch.float64 else 4e-4)
    printed = embeddings.sinusoidal_embedding_as_printed(t, dtype=dtype)
    perm = torch.arange(320).reshape(2, 160).T.reshape(-1)                  # cos_1, sin_1, cos_2, …
    assert torch.equal(printed, ours[:, perm])
    assert (printed - ref).abs().max() > 1


def test_sd15_time_proj_settings():
    unet, _ = meta("unet"), meta("vae")
    assert (unet.time_proj.num_channels, unet.time_proj.flip_sin_to_cos, unet.time_proj.downscale_freq_shift) == (320, True, 0)
    assert tuple(unet.time_embedding.state_dict()) == embeddings.TIME_KEYS
    assert unet.time_embedding.linear_1.weight.shape == (1280, 320) and unet.time_embedding.linear_2.weight.shape == (1280, 1280)


@pytest.mark.parametrize("dtype", DTYPES)
def test_timestep_embedding_of_t_matches_diffusers(dtype):
    module = reference("unet.time_embedding", seed=0, dtype=dtype)
    proj = meta("unet").time_proj
    t = torch.tensor([0, 1, 17, 500, 999])
    with torch.no_grad():
        ref = module(proj(t).to(dtype))
    ours = embeddings.timestep_embedding(dict(module.state_dict()), t)
    # the float32 sinusoid's error Δe ≤ 2e-4 (float64) carried through |U_2|·1.1·|U_1|: a bound from Θ itself
    U1, U2 = module.linear_1.weight.detach().abs(), module.linear_2.weight.detach().abs()
    de = 2e-4 if dtype == torch.float64 else 4e-4
    bound = (U2 @ (1.1 * U1 @ torch.full((320,), de, dtype=dtype))).max().item()
    assert (ours - ref).abs().max() <= bound
    assert ours.shape == (5, 1280) and embeddings.timestep_embedding(dict(module.state_dict()), 17).shape == (1280,)


# --- 6.11 Conv1x1 and the RGB head ----------------------------------------------------------

def test_conv1x1_is_a_linear_layer_at_every_pixel():
    theta = conv_theta(3, 5, 1, 1, torch.float64)
    X = randn(2, 5, 4, 6)
    per_pixel = layers.linear({"weight": theta["weight"][:, :, 0, 0], "bias": theta["bias"]}, notation.flatten(X))
    # float64, 6-term sums (5 products and the bias), Σ|terms| ≤ 5.9: ≤ 2·5·u·5.9
    # ≈ 6.5e-15; rtol=0
    assert torch.allclose(layers.conv1x1(theta, X), notation.unflatten(per_pixel, 4, 6),
                          rtol=0, atol=1e-14)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv1x1_and_rgb_head_match_the_sd15_modules(dtype):
    post = reference("vae.post_quant_conv", dtype=dtype)
    X = randn(2, 4, 5, 6, dtype=dtype)
    theta = dict(post.state_dict())
    S = F.conv2d(X.abs(), theta["weight"].abs(), theta["bias"].abs())
    with torch.no_grad():
        assert rel(layers.conv1x1(theta, X), post(X), S) <= sum_tol(5, dtype)
    norm, out = reference("vae.decoder.conv_norm_out", dtype=dtype), reference("vae.decoder.conv_out", dtype=dtype)
    H = randn(1, 128, 6, 5, dtype=dtype)
    theta = {f"conv_norm_out.{k}": v for k, v in norm.state_dict().items()}
    theta |= {f"conv_out.{k}": v for k, v in out.state_dict().items()}
    with torch.no_grad():
        act = F.silu(norm(H))
        S = F.conv2d(act.abs(), out.weight.abs(), out.bias.abs(), padding=1)
        # GroupNorm's error (≤ 10·|S_g|·u·|γ|, |S_g| = 120) enters the 1153-term sums of the conv
        tol = sum_tol(128 * 9 + 1, dtype) + 10 * 120 * U[dtype] * norm.weight.abs().max().item()
        assert rel(layers.rgb_head(theta, H), out(act), S) <= tol


def test_rgb_head_keys_are_the_sd15_decoders():
    _, vae = meta("unet"), meta("vae")
    decoder_keys = {k for k in vae.decoder.state_dict() if k.startswith(("conv_norm_out.", "conv_out."))}
    assert decoder_keys == {"conv_norm_out.weight", "conv_norm_out.bias", "conv_out.weight", "conv_out.bias"}
    assert vae.decoder.conv_out.kernel_size == (3, 3) and vae.decoder.conv_out.padding == (1, 1)


def test_least_squares_recovers_a_true_1x1_map():
    # The sanity check behind the 'differs' row: were the map 1×1, least squares would find it exactly.
    module = reference("vae.post_quant_conv")
    X = randn(8, 4, 8, 8)
    A = torch.cat([X.permute(0, 2, 3, 1).reshape(-1, 4), torch.ones(512, 1, dtype=torch.float64)], 1)
    target = module(X).detach().permute(0, 2, 3, 1).reshape(-1, 4)
    fit = torch.linalg.lstsq(A, target).solution
    assert ((A @ fit - target).norm() / target.norm()) < 1e-12


# --- §4 variable sizes ---------------------------------------------------------------------

@pytest.mark.parametrize("H, expected", [(8, 8), (64, 64), (9, 10), (13, 14), (1, 2)])
def test_stack_predicted_size(H, expected):
    assert stack_predicted_size(H) == expected


def test_unet_block_keys_are_the_theta_keys():
    unet, _ = meta("unet"), meta("vae")
    sd = unet.state_dict()
    for prefix in ("down_blocks.0.downsamplers.0", "up_blocks.0.upsamplers.0"):
        assert {k[len(prefix) + 1:] for k in sd if k.startswith(prefix + ".")} == {"conv.weight", "conv.bias"}


# --- bad input -------------------------------------------------------------------------------

T3 = {"weight": torch.ones(2, 3, 3, 3), "bias": torch.ones(2)}
GN = {"weight": torch.ones(6), "bias": torch.ones(6)}
DOWN = {"conv.weight": torch.ones(3, 3, 3, 3), "conv.bias": torch.ones(3)}
TE = {k: v for k, v in zip(embeddings.TIME_KEYS, (torch.ones(8, 6), torch.ones(8), torch.ones(8, 8), torch.ones(8)))}


@pytest.mark.parametrize("call, exc, match", [
    # wrong rank
    (lambda: layers.conv2d(T3, torch.ones(3, 5)), ValueError, r"X ∈ R\^\(C×H×W\) or a batch"),
    (lambda: layers.group_norm(GN, torch.ones(2, 6, 3, 3, 1)), ValueError, r"R\^\(C×H×W\) or a batch"),
    (lambda: layers.linear({"weight": torch.ones(2, 3), "bias": torch.ones(2)}, torch.tensor(1.0)), ValueError, "x ∈ R\\^d_in"),
    (lambda: layers.softmax(torch.tensor(1.0)), ValueError, "x ∈ R\\^n"),
    (lambda: layers.downsample_2d_nearest(torch.ones(4, 4)), ValueError, "Downsample2DNearest takes X"),
    (lambda: layers.interpolate_nearest(torch.ones(4)), ValueError, "Interpolate takes X"),
    (lambda: layers.downsample_2d_average(torch.ones(2, 1, 4)), ValueError, r"H, W ≥ 2"),
    (lambda: embeddings.sinusoidal_embedding(torch.ones(2, 2)), ValueError, r"scalar t ∈ R or a batch"),
    (lambda: layers.conv2d({"weight": torch.ones(2, 3, 3), "bias": torch.ones(2)}, torch.ones(3, 5, 5)),
     ValueError, r"shape \(C_out, C_in, k_h, k_w\)"),
    # channel mismatch with Θ
    (lambda: layers.conv2d(T3, torch.ones(4, 5, 5)), ValueError, r"C_in = 4 channels but Θ's kernels expect C_in = 3"),
    (lambda: layers.linear({"weight": torch.ones(2, 3), "bias": torch.ones(2)}, torch.ones(4)), ValueError, "d_in = 4"),
    (lambda: layers.group_norm(GN, torch.ones(1, 12, 2, 2), groups=3), ValueError, r"γ, β ∈ R\^C need shape \(12,\)"),
    (lambda: layers.conv2d({"weight": torch.ones(2, 3, 3, 3), "bias": torch.ones(3)}, torch.ones(3, 5, 5)),
     ValueError, r"b_o for o ∈ \[1, C_out\]"),
    (lambda: layers.downsample_2d(DOWN, torch.ones(1, 4, 8, 8)), ValueError, "C_in = 4 channels"),
    (lambda: layers.concat(torch.ones(1, 2, 4, 4), torch.ones(1, 2, 4, 5)), ValueError, "agree in everything but C"),
    (lambda: embeddings.time_mlp(TE, torch.ones(5)), ValueError, "d_in = 5"),
    # G ∤ C
    (lambda: layers.group_norm(GN, torch.ones(1, 6, 2, 2), groups=4), ValueError, r"G \| C \(Def. 6.5\); got C=6, G=4"),
    (lambda: layers.group_norm(GN, torch.ones(1, 6, 2, 2), groups=0), ValueError, r"G \| C"),
    (lambda: layers.group_norm_literal(GN, torch.ones(6, 2, 2), groups=5), ValueError, r"G \| C"),
    # a kernel larger than the padded input
    (lambda: layers.conv2d(T3, torch.ones(3, 2, 5)), ValueError, r"k ≤ H \+ 2p.*k=3, H=2, p=0"),
    (lambda: layers.conv2d(T3, torch.ones(3, 1, 1), padding=0), ValueError, "no larger than the padded input"),
    (lambda: layers.conv_output_size(2, 5, 1, 1), ValueError, r"k ≤ H \+ 2p"),
    (lambda: layers.downsample_2d({"conv.weight": torch.ones(3, 3, 5, 5), "conv.bias": torch.ones(3)},
                                  torch.ones(3, 2, 2)), ValueError, r"k ≤ H \+ 2p"),
    # non-positive temperature, bad stride/padding
    (lambda: layers.softmax(torch.ones(3), tau=0.0), ValueError, "temperature τ > 0"),
    (lambda: layers.softmax_literal(torch.ones(3), tau=-1.0), ValueError, "temperature τ > 0"),
    (lambda: layers.conv2d(T3, torch.ones(3, 5, 5), stride=0), ValueError, "stride is an integer ≥ 1"),
    (lambda: layers.conv2d(T3, torch.ones(3, 5, 5), padding=-1), ValueError, "padding is an integer ≥ 0"),
    (lambda: embeddings.frequencies(0), ValueError, "R ≥ 1"),
    (lambda: embeddings.frequencies(4, beta=-1.0), ValueError, "β > 0"),
    # missing (or unexpected) keys in Θ
    (lambda: layers.conv2d({"weight": T3["weight"]}, torch.ones(3, 5, 5)), ValueError, r"missing \['bias'\]"),
    (lambda: layers.conv2d(T3 | {"extra": torch.ones(1)}, torch.ones(3, 5, 5)), ValueError, r"unexpected \['extra'\]"),
    (lambda: layers.linear({"bias": torch.ones(2)}, torch.ones(3)), ValueError, r"Linear needs Θ.*missing \['weight'\]"),
    (lambda: layers.group_norm({"weight": torch.ones(6)}, torch.ones(6, 2, 2), groups=2), ValueError, r"GroupNorm needs Θ"),
    (lambda: layers.downsample_2d(T3, torch.ones(3, 4, 4)), ValueError, r"Downsample2D needs Θ.*missing \['conv.weight'"),
    (lambda: layers.upsample_2d(T3, torch.ones(3, 4, 4)), ValueError, r"Upsample2D needs Θ"),
    (lambda: embeddings.timestep_embedding({"linear_1.weight": torch.ones(8, 6)}, 3), ValueError,
     r"TimestepEmbedding needs Θ.*missing \['linear_1.bias'"),
    (lambda: embeddings.timestep_embedding({}, 3), ValueError, r"TimestepEmbedding needs Θ"),
    (lambda: layers.rgb_head({"conv_out.weight": torch.ones(3, 4, 3, 3)}, torch.ones(4, 2, 2)), ValueError,
     r"RGB head needs Θ"),
    # not a dict, not a tensor, a kernel that is not 1×1
    (lambda: layers.conv2d([1, 2], torch.ones(3, 5, 5)), TypeError, "Θ is a dict of tensors"),
    (lambda: layers.conv2d({"weight": [1.0], "bias": torch.ones(2)}, torch.ones(3, 5, 5)), TypeError, "must be a torch.Tensor"),
    (lambda: layers.silu([1.0]), TypeError, "SiLU takes a torch.Tensor"),
    (lambda: layers.conv2d(T3, [[1.0]]), TypeError, "Conv2d takes X as a torch.Tensor"),
    (lambda: embeddings.sinusoidal_embedding("t"), TypeError, r"t ∈ R"),
    (lambda: layers.conv1x1(T3, torch.ones(3, 5, 5)), ValueError, r"1×1 kernel"),
    (lambda: layers.upsample_2d_transposed_kernel(torch.ones(2, 2, 5, 5)), ValueError, r"3×3 Upsample2D kernel"),
])
def test_bad_input_gets_a_clear_error(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
