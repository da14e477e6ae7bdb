"""sdanatomy.diagrams: figures 3–4 are computed from the layers, and the files say what the layers do."""
import re
import xml.etree.ElementTree as ET

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.downsampling import Downsample1D
from diffusers.models.upsampling import Upsample1D

from sdanatomy.pages import diagrams


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def pattern(name):
    layer, n_in, n_w, _ = diagrams.FIGURES[name]
    return diagrams.weight_pattern(layer, n_in, n_w)


def test_figure3_is_a_width_2_stride_2_convolution():
    A = pattern("fig3_downsample1d")
    assert A.shape == (2, 3, 6)                                  # θ_0, θ_1; 3 outputs; 6 inputs
    assert diagrams.edges(A) == [(2 * m + u, m, (u,)) for m in range(3) for u in range(2)]


def test_figure4_is_figure3_transposed():
    A3, A4 = pattern("fig3_downsample1d"), pattern("fig4_upsample1d")
    assert A4.shape == (2, 6, 3) and torch.equal(A4, A3.transpose(1, 2))
    assert diagrams.edges(A4) == [(m // 2, m, (m % 2,)) for m in range(6)]   # y_{2i+u} = θ_u x_i


def test_1d_layers_match_torch_and_diffusers():
    theta, x6, x3 = {"weight": randn(2)}, randn(6, seed=1), randn(3, seed=2)
    # float64: each output a sum of ≤ 3 products with Σ|terms| < 1.3 here, so two
    # summation orders differ by ≤ 2·2·u·1.3 ≈ 6e-16 (u = 2⁻⁵³); rtol=0: this bound
    w = theta["weight"][None, None]
    assert torch.allclose(diagrams.downsample_1d(theta, x6),
                          F.conv1d(x6[None, None], w, stride=2)[0, 0],
                          rtol=0, atol=1e-15)         # 2 products a sum: ≤ 6e-16, above
    assert torch.allclose(diagrams.upsample_1d_transposed(theta, x3, n_out=6),
                          F.conv_transpose1d(x3[None, None], w, stride=2)[0, 0],
                          rtol=0, atol=1e-15)         # 1 product a sum: ≤ 6e-16, above
    # SD-1.5's kind, and diffusers' own 1-D classes of the figures' names
    down, up = Downsample1D(1, use_conv=True, padding=1).double(), Upsample1D(1, use_conv=True).double()
    w3 = {"weight": randn(3, seed=3)}
    with torch.no_grad():
        down.conv.weight.copy_(w3["weight"].reshape(1, 1, 3)); down.conv.bias.zero_()
        up.conv.weight.copy_(w3["weight"].reshape(1, 1, 3)); up.conv.bias.zero_()
        assert torch.allclose(diagrams.downsample_1d(w3, x6, padding=1),
                              down(x6[None, None])[0, 0],
                              rtol=0, atol=1e-15)     # 3 products a sum: ≤ 6e-16, above
        assert torch.allclose(diagrams.upsample_1d_nearest_conv(w3, x3),
                              up(x3[None, None])[0, 0],
                              rtol=0, atol=1e-15)     # 3 products a sum: ≤ 6e-16, above


def test_sd15_upsample_pattern_is_the_tied_transposed_kernel():
    A = pattern("fig4_sd15_upsample1d")
    text = diagrams.pattern_text(A).splitlines()
    assert text[1].split()[1:] == ["θ1+θ2", "·", "·"] and text[2].split()[1:] == ["θ0+θ1", "θ2", "·"]
    # every interior input reaches 4 outputs with taps θ2, θ1+θ2, θ0+θ1, θ0 (kernel 4, stride 2)
    column = [tuple(u for u in range(3) if A[u, m, 1]) for m in range(6) if A[:, m, 1].any()]
    assert column == [(2,), (1, 2), (0, 1), (0,)]


def test_pattern_is_exact_for_a_bilinear_layer():
    # J(θ) = Σ_u θ_u A_u for any θ: the pattern is the layer's whole linear structure.
    layer, n_in, n_w, _ = diagrams.FIGURES["fig4_sd15_upsample1d"]
    A, theta = pattern("fig4_sd15_upsample1d"), randn(3, seed=4)
    J = torch.autograd.functional.jacobian(lambda x: layer({"weight": theta}, x), torch.zeros(n_in, dtype=torch.float64))
    # float64, each entry a sum of ≤ 2 weights (|θ| < 2.3): one rounding a side,
    # ≤ 2u·2.5 ≈ 6e-16; 1e-15 absolute, rtol=0
    assert torch.allclose(J, torch.einsum("u,umi->mi", theta, A), rtol=0, atol=1e-15)


@pytest.mark.parametrize("name", list(diagrams.FIGURES))
def test_written_svg_is_valid_reproducible_and_coloured_by_weight(name, tmp_path):
    path, A = diagrams.write_figure(name, tmp_path)
    first = path.read_bytes()
    diagrams.write_figure(name, tmp_path)
    assert path.read_bytes() == first                              # byte-for-byte reproducible
    ET.fromstring(first)                                           # well-formed SVG
    assert _strokes_per_weight(first.decode()) == _expected_strokes(A)


@pytest.mark.parametrize("name", list(diagrams.FIGURES))
def test_book_figures_show_the_computed_pattern(name):
    # The committed files in book/figures draw exactly the edges the layer has.
    path = diagrams.figures_dir() / f"{name}.svg"
    assert path.is_file(), f"run diagrams.write_figure({name!r})"
    assert _strokes_per_weight(path.read_text()) == _expected_strokes(pattern(name))


def _strokes_per_weight(svg: str) -> dict:
    return {u: len(re.findall(rf"stroke: {c}", svg)) for u, c in enumerate(diagrams.PALETTE)
            if re.search(rf"stroke: {c}", svg)}


def _expected_strokes(A) -> dict:
    counts = {}
    for _, _, us in diagrams.edges(A):
        for u in us:
            counts[u] = counts.get(u, 0) + 1
    return {u: n + 1 for u, n in counts.items()}                  # + 1: the legend's line


def test_unknown_figure():
    with pytest.raises(ValueError, match="unknown figure"):
        diagrams.write_figure("fig9")


def test_timestep_heatmap_draws():
    from sdanatomy.lecture import embeddings
    t = torch.arange(0, 1000, 10)
    fig = diagrams.timestep_heatmap(embeddings.sinusoidal_embedding(t), t)
    assert len(fig.axes) == 2                                      # the map and its colour bar
