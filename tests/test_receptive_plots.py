"""Chapter 7's side-by-side figure (pages.receptive_plots): the measured fields and
what is drawn, checked against the lecture's closed forms written out here, (79) and
(82), and the downsampler's correction Σ_{ℓ<L} 2^ℓ (k↓ − 1)."""
import os
import subprocess
import sys

import numpy as np
import pytest
from matplotlib.figure import Figure

from sdanatomy.pages import receptive_plots as rp


def pure_R(convs):                     # (79): 1 + (k − 1)L with k = 3
    return 1 + 2 * convs


def down_R(L, n, k_down):              # (82) + (k↓ − 1)·2^ℓ for each level ℓ < L
    return 1 + 2 * n * (2 ** (L + 1) - 1) + (k_down - 1) * (2 ** L - 1)


@pytest.mark.parametrize("downsample,k_down",
                         [("nearest", 1), ("average", 2), ("conv", 3)])
@pytest.mark.parametrize("L,n", [(0, 1), (1, 2), (2, 1), (3, 1)])
def test_measured_fields_are_the_closed_forms(L, n, downsample, k_down):
    (p,) = rp.measure_pairs([(L, n)], downsample=downsample)
    assert p.convs == n * (L + 1)
    assert p.pure.size == (pure_R(n * (L + 1)),) * 2 and p.pure.dense
    assert p.unet.size == (down_R(L, n, k_down),) * 2 and p.unet.dense
    assert (p.R_pure, p.R_unet) == (pure_R(p.convs), down_R(L, n, k_down))


@pytest.mark.parametrize("L,n", [(0, 1), (2, 3), (4, 2)])
def test_canvas_holds_the_widest_field_and_halves_exactly(L, n):
    S = rp.canvas(L, n)
    assert S % 2 ** L == 0
    assert S >= down_R(L, n, 3) + 2 * 2 ** L


def test_figure_draws_both_masks_on_one_input():
    pairs = rp.measure_pairs([(1, 1), (2, 1)], size=rp.canvas(2, 1))
    fig = rp.fields_figure(pairs)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    for ax, p in zip(fig.axes, pairs):
        (im,) = ax.get_images()
        rgb = np.asarray(im.get_array())                       # (S, S, 3)
        orange = np.all(np.isclose(rgb, rp.PURE, atol=1e-6, rtol=0), axis=-1)
        blue = np.all(np.isclose(rgb, rp.UNET, atol=1e-6, rtol=0), axis=-1)
        # orange: the pure CNN's square; blue: the rest of the down path's square
        assert orange.sum() == pure_R(p.convs) ** 2
        assert orange.sum() + blue.sum() == down_R(p.L, p.n, 1) ** 2
        assert np.array_equal(orange, p.pure.mask.numpy())
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        R = down_R(p.L, p.n, 1)
        assert f"R = {R}, (82) {R}" in labels[0]
        assert f"R = {pure_R(p.convs)}, (79) {pure_R(p.convs)}" in labels[1]


def test_explore_is_one_panel_and_rejects_an_unknown_downsampler():
    fig = rp.explore(1, 1, "conv")
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    with pytest.raises(ValueError, match="downsample must be one of"):
        rp.measure_pairs([(1, 1)], downsample="bilinear")


def test_no_pyplot():
    code = ("import sys; import sdanatomy.pages.receptive_plots as rp; "
            "rp.explore(1, 1); print('matplotlib.pyplot' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
