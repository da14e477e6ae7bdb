"""sdanatomy.pages.layer_plots: chapter 4's figures draw what torch computes."""
import math
import re

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib.collections import PathCollection, PolyCollection
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from sdanatomy.pages import layer_plots

X5 = torch.arange(1.0, 26.0, dtype=torch.float64).reshape(5, 5)
SETTINGS = [(3, 2, 1), (3, 3, 2), (3, 1, 0), (2, 2, 0), (5, 1, 2), (1, 3, 0)]  # k, s, p


def torch_box_conv(X, k, s, p):
    """torch's Conv2d with a k×k kernel of ones: the independent reference."""
    return F.conv2d(X[None, None], torch.ones(1, 1, k, k, dtype=X.dtype),
                    stride=s, padding=p)[0, 0]


def panels(fig):
    """The output panel, and {(i, j): the window panel of output (i, j)}, by title."""
    out = next(ax for ax in fig.axes if ax.get_title().startswith("output Y"))
    windows = {}
    for ax in fig.axes:
        found = re.match(r"\$Y_\{(\d+),(\d+)\}\$", ax.get_title())
        if found:
            windows[int(found[1]), int(found[2])] = ax
    return out, windows


def window_rows(i, k, s, p, H):
    """0-based input rows of output i's window, from the chapter's proposition: the
    padded positions (i−1)s + 1, …, (i−1)s + k, less p, kept inside [1, H]."""
    return [r - 1 for r in range((i - 1) * s + 1 - p, (i - 1) * s + k + 1 - p)
            if 1 <= r <= H]


@pytest.mark.parametrize("k, s, p", SETTINGS)
def test_output_grid_shows_torchs_conv_and_the_size_formula(k, s, p):
    X = X5[:, :4] * 10 - 3                          # 5×4: rows and columns differ
    fig = layer_plots.conv_window_figure(X, k=k, stride=s, padding=p)
    assert isinstance(fig, Figure)
    Y = torch_box_conv(X, k, s, p)
    H_out = (5 - k + 2 * p) // s + 1                # Def. 6.1, by hand
    assert Y.shape[0] == H_out
    out, _ = panels(fig)
    drawn = [float(t.get_text()) for t in out.texts]   # row by row
    # sums of ≤ 25 integers below 2^53 are exact in float64: rtol=0, atol=0
    assert torch.allclose(torch.tensor(drawn, dtype=torch.float64), Y.flatten(),
                          rtol=0, atol=0)
    assert re.search(rf"H′ = [^\n]* = {H_out}$", out.get_title(), re.M)
    assert re.search(rf"W′ = [^\n]* = {Y.shape[1]}$", out.get_title(), re.M)


@pytest.mark.parametrize("k, s, p", SETTINGS)
def test_shaded_pixels_are_the_window_and_what_torch_reads(k, s, p):
    cw = layer_plots.conv_windows(X5, k=k, stride=s, padding=p)
    J = torch.autograd.functional.jacobian(lambda Z: torch_box_conv(Z, k, s, p), X5)
    assert torch.equal(cw.reads, J != 0)            # autograd through torch's conv
    for i in range(1, cw.Y.shape[0] + 1):
        for j in range(1, cw.Y.shape[1] + 1):
            expected = torch.zeros(5, 5, dtype=torch.bool)
            rows, cols = window_rows(i, k, s, p, 5), window_rows(j, k, s, p, 5)
            expected[np.ix_(rows, cols)] = True
            assert torch.equal(cw.reads[i - 1, j - 1], expected), (i, j)


def test_each_panel_frames_its_window_and_tints_what_it_reads():
    k, s, p = 3, 2, 1
    fig = layer_plots.conv_window_figure(X5, k=k, stride=s, padding=p)
    _, windows = panels(fig)
    assert sorted(windows) == [(1, 1), (1, 2), (2, 1), (3, 3)]
    for (i, j), ax in windows.items():
        frame = next(r for r in ax.patches if isinstance(r, Rectangle)
                     and r.get_linestyle() == "solid")
        top, left = frame.get_y() + 0.5, frame.get_x() + 0.5     # padded, 0-based
        assert (top, left) == ((i - 1) * s, (j - 1) * s)
        assert (frame.get_height(), frame.get_width()) == (k, k)
        image = np.asarray(ax.images[0].get_array())[p:p + 5, p:p + 5]   # input
        tinted = torch.from_numpy((image != 1.0).any(-1))
        expected = torch.zeros(5, 5, dtype=torch.bool)
        expected[np.ix_(window_rows(i, k, s, p, 5), window_rows(j, k, s, p, 5))] = True
        assert torch.equal(tinted, expected), (i, j)
        drawn = float(ax.get_title().split("=")[-1])
        assert drawn == torch_box_conv(X5, k, s, p)[i - 1, j - 1].item()   # exact sum


def gn_input(seed=0):
    g = torch.Generator().manual_seed(seed)
    offset = torch.tensor([2.0, 4.0, -1.0, -1.0, 0.0, 0.5, 6.0, 6.0])[:, None, None]
    scale = torch.tensor([1.0, 1.0, 3.0, 0.5, 0.2, 0.2, 2.0, 2.0])[:, None, None]
    return offset + scale * torch.randn(8, 4, 4, generator=g, dtype=torch.float64)


def band(ax, g):
    """The y-range of group g's μ ± σ band (the PolyCollections in drawing order)."""
    y = [c for c in ax.collections if isinstance(c, PolyCollection)][g]
    ys = y.get_paths()[0].vertices[:, 1]
    return ys.min(), ys.max()


@pytest.mark.parametrize("groups", [4, 2, 8])
def test_group_norm_figure_shows_the_group_statistics(groups):
    X, eps = gn_input(), 1e-5
    fig = layer_plots.group_norm_figure(X, groups=groups, eps=eps)
    before, after = fig.axes
    per = 8 // groups
    # float64; means and variances of ≤ 64 numbers of size ≤ 12: ≲ 1e-13 apart in any
    # order of summation: atol=1e-12, rtol=1e-12
    for g in range(groups):
        block = X[g * per:(g + 1) * per].numpy().ravel()   # S_g: contiguous channels
        mu, sd = block.mean(), block.std()                 # biased, as (18)
        assert np.allclose(band(before, g), (mu - sd, mu + sd), rtol=1e-12, atol=1e-12)
        half = math.sqrt(sd ** 2 / (sd ** 2 + eps))        # σ_g of (19)'s output
        assert np.allclose(band(after, g), (-half, half), rtol=1e-12, atol=1e-12)
    # the dots on the right are torch's GroupNorm of X, channel by channel
    ref = F.group_norm(X[None], groups, eps=eps)[0]
    dots = [c for c in after.collections if isinstance(c, PathCollection)]
    assert len(dots) == 8
    for c, d in enumerate(dots):
        # float64: ours and torch's normalise in another order, ≲ 1e-14: same tolerances
        assert np.allclose(d.get_offsets()[:, 1], ref[c].flatten().numpy(),
                           rtol=1e-12, atol=1e-12)


def test_activation_figure_draws_silu_relu_and_their_derivatives():
    fig = layer_plots.activation_figure()
    ax = fig.axes[0]
    lines = {ln.get_label(): ln for ln in ax.lines}
    u = torch.from_numpy(np.asarray(lines["SiLU"].get_xdata(), dtype=np.float64))
    sig = torch.sigmoid(u)
    expected = {"SiLU": F.silu(u), "SiLU′ (autograd)": sig * (1 + u * (1 - sig)),
                "ReLU": F.relu(u), "ReLU′ (autograd)": (u > 0).double()}
    for label, y in expected.items():
        drawn = torch.from_numpy(np.asarray(lines[label].get_ydata(), dtype=np.float64))
        # float64, |values| ≤ 5 and closed forms of a few operations: atol=rtol=1e-12
        assert torch.allclose(drawn, y, rtol=1e-12, atol=1e-12), label
    # SiLU's minimum: 1 + u(1 − σ(u)) = 0, u* = −1 − W(1/e) = −1.2784645427610738
    marker = next(ln for ln in ax.lines if ln.get_marker() == "o")
    spacing = 10 / 1000                              # the grid of u on [−5, 5]
    assert abs(marker.get_xdata()[0] + 1.2784645427610738) <= spacing / 2


def test_no_pyplot_figures_leak():
    plt.close("all")
    layer_plots.conv_window_figure(X5)
    layer_plots.group_norm_figure(gn_input())
    layer_plots.activation_figure()
    assert plt.get_fignums() == []
