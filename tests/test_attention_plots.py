"""Chapter 6's figures (pages.attention_plots): what they draw, against closed forms."""
import math
import sys

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from sdanatomy.pages import attention_plots as ap
from sdanatomy.sd15 import attention as sd15_attention

F64 = torch.float64
# float64 weights drawn as float64 bar heights: only the softmax's own rounding (a few
# ulps of numbers ≤ 1) separates them from the closed forms below.
ATOL, RTOL = 1e-14, 1e-12


def _heights(ax):
    return np.array([p.get_height() for p in ax.patches if p.get_fill()])


@pytest.fixture(autouse=True)
def no_pyplot_figures():
    yield
    if "matplotlib.pyplot" in sys.modules:              # only if someone imported it
        assert sys.modules["matplotlib.pyplot"].get_fignums() == []


def test_entropy_of_uniform_and_one_hot():
    uniform = torch.full((6,), 1 / 6, dtype=F64)
    assert ap.entropy(uniform) == pytest.approx(math.log(6), abs=1e-15, rel=1e-15)
    assert ap.entropy(torch.tensor([0.0, 1.0, 0.0], dtype=F64)) == 0.0


def test_temperature_figure_draws_eq_17():
    s = (1.0, -0.5, 0.25, 2.0)
    taus = (0.5, 1.0, 3.0)
    fig = ap.temperature_figure(taus, scores=s)
    assert isinstance(fig, Figure) and len(fig.axes) == len(taus)
    for ax, tau in zip(fig.axes, taus):
        e = [math.exp(x / tau) for x in s]                      # (17) written out
        want = [v / sum(e) for v in e]
        np.testing.assert_allclose(_heights(ax), want, atol=ATOL, rtol=RTOL)
        assert ax.get_title().startswith(f"τ = {tau:.3g}\n")
        assert ax.get_ylim() == (0, 1)


def test_temperature_extremes_flat_and_one_hot():
    fig = ap.temperature_figure((1e-3, 1e3))
    cold, hot = (_heights(ax) for ax in fig.axes)
    M = len(ap.SCORES)
    # τ = 1e-3: the runner-up is 1 score unit behind, weight e^{-1000} = 0 in float64
    one_hot = np.eye(M)[int(np.argmax(ap.SCORES))]
    np.testing.assert_allclose(cold, one_hot, atol=1e-300, rtol=0)
    # τ = 1e3: scores/τ within ±2e-3 of each other, so every weight is 1/M within 0.4 %
    np.testing.assert_allclose(hot, np.full(M, 1 / M), atol=0, rtol=4e-3)


def test_ray_keys_satisfy_prop_6_2():
    q, K = ap.ray_keys(5)
    assert torch.equal(K[0], q)                         # k_{m*} = c q with c = 1
    assert torch.all(K[1:] @ q == 0) and K.shape == (5, 2)      # the others ⟂ q
    assert len({tuple(k) for k in K.tolist()}) == 5             # all different


@pytest.mark.parametrize("M", [2, 4, 8])
def test_ray_figure_is_the_closed_form_of_the_proof(M):
    alphas = (0.0, 1.5, 6.0)
    q, K = ap.ray_keys(M)
    fig = ap.ray_figure(alphas, q, K)
    for ax, alpha in zip(fig.axes, alphas):
        t = math.exp(-alpha / math.sqrt(2))                     # a = ⟨q, k₁⟩/√d = 1/√2
        want = [1 / (1 + (M - 1) * t)] + [t / (1 + (M - 1) * t)] * (M - 1)
        np.testing.assert_allclose(_heights(ax), want, atol=ATOL, rtol=RTOL)
        outline = [p.get_height() for p in ax.patches if not p.get_fill()]
        assert outline == [1.0] + [0.0] * (M - 1)               # the limit (51)


def test_weights_heatmap_is_row_softmax():
    g = torch.Generator().manual_seed(3)
    Q = torch.randn(4, 5, generator=g, dtype=F64)
    K = torch.randn(6, 5, generator=g, dtype=F64)
    fig = ap.weights_heatmap(Q, K)
    image = fig.axes[0].images[0]
    P = np.asarray(image.get_array())
    want = torch.softmax(Q @ K.T / math.sqrt(5), dim=-1).numpy()
    np.testing.assert_allclose(P, want, atol=ATOL, rtol=RTOL)
    np.testing.assert_allclose(P.sum(1), 1.0, atol=1e-15, rtol=0)
    assert image.get_clim() == (0, 1)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == [f"{v:.2f}" for v in want.ravel()]
    assert len(fig.axes) == 2                           # the map and its colour bar


def test_float16_figure_draws_the_study():
    rows = sd15_attention.float16_study(d=40, N=4, M=4, sigmas=(1, 64, 256), draws=3,
                                        seed=0)
    fig = ap.float16_figure(rows, d=40)
    ax_o, ax_e = fig.axes
    for ax in (ax_o, ax_e):
        verticals = [line.get_xdata() for line in ax.lines]
        xs = sorted(x[0] for x in verticals if len(x) == 2 and x[0] == x[1])
        assert xs == pytest.approx([65504 / math.sqrt(40), 65504], rel=1e-15, abs=0)
    lines = {line.get_label(): line for line in ax_e.lines
             if not line.get_label().startswith("_")}
    for order, line in lines.items():
        rs = [r for r in rows if r["order"] == order and not math.isnan(r["o_max"])]
        np.testing.assert_array_equal(line.get_xdata(), [r["max_score"] for r in rs])
        np.testing.assert_array_equal(line.get_ydata(), [r["o_max"] for r in rs])
    after = next(line for line in ax_o.lines if line.get_label() == "after")
    want = [100 * r["overflow"] for r in rows if r["order"] == "after"]
    np.testing.assert_array_equal(after.get_ydata(), want)


def test_cross_attention_figure_centres_on_uniform():
    g = torch.Generator().manual_seed(1)
    M = 8
    pi = torch.softmax(0.1 * torch.randn(64, M, generator=g), -1).T.reshape(M, 8, 8)
    image = torch.rand(1, 16, 16, generator=g)
    fig = ap.cross_attention_figure(image, [f"t{m}" for m in range(M)], pi)
    maps = [ax.images[0] for ax in fig.axes[1:M + 1]]
    for m, im in enumerate(maps):
        np.testing.assert_array_equal(np.asarray(im.get_array()), pi[m].numpy())
        assert im.norm.vmin == 0
        assert im.norm.vmax == pytest.approx(2 / M, abs=0, rel=1e-15)
    bar = fig.axes[-1]
    assert list(bar.get_yticks()) == pytest.approx([0, 1 / M, 2 / M], abs=1e-15, rel=0)
    assert "uniform" in bar.get_yticklabels()[1].get_text()
    hist = fig.axes[M + 1]
    assert sum(p.get_height() for p in hist.patches) == pi.numel()
