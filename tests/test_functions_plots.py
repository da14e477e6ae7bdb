"""Chapter 8's figures and its exercise's check (pages.functions_plots): what is drawn
is the data passed in, on the fixed scale [0, 1]; the exercise's level sizes are ⌈·/2⌉
written out here, and the book's U-Net equals diffusers' at an odd latent size."""
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from sdanatomy.pages import functions_plots as fp


def test_image_figure_shows_the_image_as_it_is():
    img = torch.rand(3, 8, 6, generator=torch.Generator().manual_seed(0))
    fig = fp.image_figure(img)
    (im,) = fig.axes[0].get_images()
    assert np.allclose(np.asarray(im.get_array()), img.permute(1, 2, 0).numpy(),
                       atol=0, rtol=0)
    assert im.get_clim() == (0, 1)


def test_grid_figure_puts_image_k_at_row_k_div_cols_and_labels_columns():
    rows, cols, H, W, pad = 2, 3, 5, 4, 2
    imgs = torch.rand(rows * cols, 1, H, W, generator=torch.Generator().manual_seed(1))
    fig = fp.grid_figure(imgs, rows=rows, col_labels=["a", "b", "c"], xlabel="x",
                         ylabel="y")
    ax = fig.axes[0]
    (im,) = ax.get_images()
    A = np.asarray(im.get_array())
    assert im.get_clim() == (0, 1) and im.get_cmap().name == "gray_r"
    for k in range(rows * cols):
        r, c = divmod(k, cols)
        block = A[r * (H + pad): r * (H + pad) + H, c * (W + pad): c * (W + pad) + W]
        assert np.array_equal(block, imgs[k, 0].numpy())
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    centres = [c * (W + pad) + (W - 1) / 2 for c in range(cols)]
    assert np.allclose(ax.get_xticks(), centres, atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="3 columns need 3 labels"):
        fp.grid_figure(imgs, rows=rows, col_labels=["a"], xlabel="x", ylabel="y")


def test_settling_figure_marks_the_first_step_below_each_level():
    # coarse = 0.5·0.9^i, fine = 0.8·0.93^i: the first i below a level, in closed form
    rows = [dict(i=i, t=999 - 20 * i, low=0.5 * 0.9 ** i, high=0.8 * 0.93 ** i)
            for i in range(50)]
    first = lambda a, q, level: math.floor(math.log(level / a) / math.log(q)) + 1
    fig = fp.settling_figure(rows, levels=(0.25, 0.1))
    ax = fig.axes[0]
    curves = [l for l in ax.get_lines() if l.get_linestyle() == "-"]
    for curve, band in zip(curves, ("low", "high")):
        ys = [r[band] for r in rows]
        assert np.allclose(curve.get_ydata(), ys, atol=0, rtol=1e-12)
    dots = sorted(l.get_xdata()[0] for l in ax.get_lines() if l.get_marker() == "o")
    expected = sorted([first(0.5, 0.9, 0.25), first(0.5, 0.9, 0.1),
                       first(0.8, 0.93, 0.25), first(0.8, 0.93, 0.1)])
    assert dots == expected
    assert ax.get_yscale() == "log"


def test_unet_at_an_odd_size():
    H, W = 9, 13
    r = fp.unet_at(H, W)
    levels = [(H, W)]
    for _ in range(3):                    # three downsamplers, each ⌈·/2⌉
        levels.append(tuple(math.ceil(s / 2) for s in levels[-1]))
    assert r["levels"] == levels == [(9, 13), (5, 7), (3, 4), (2, 2)]
    assert r["shape"] == (1, 4, H, W)
    # float64, the same kernels in the same order: round-off at most, ≲ 1e-15 relative
    assert r["error"] <= 1e-12


def test_no_pyplot():
    code = ("import sys, torch; import sdanatomy.pages.functions_plots as fp; "
            "fp.image_figure(torch.zeros(3, 2, 2)); "
            "print('matplotlib.pyplot' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
