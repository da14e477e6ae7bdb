"""Chapter 5's figures (pages.architecture_plots): Θ per block as bars, and the sizes
through SD-1.5's U-Net measured with hooks, checked against the configuration, the
published totals and the size formula (14) written out by hand."""
import math

import pytest
from matplotlib.figure import Figure

from sdanatomy.lecture.config import UNET_CONFIG
from sdanatomy.pages import architecture, architecture_plots
from sdanatomy.sd15.reference import meta


def _bars(ax):
    return {label.get_text(): patch.get_width() * 1e6
            for label, patch in zip(ax.get_yticklabels(), ax.patches)}


def test_parameter_bars_add_up_to_the_modules():
    unet_counts = architecture.parameter_counts("unet")
    vae_counts = architecture.parameter_counts("vae")
    fig = architecture_plots.plot_parameters(unet_counts, vae_counts)
    assert isinstance(fig, Figure) and fig.canvas.manager is None      # no pyplot
    left, right = fig.axes
    unet, vae = meta("unet"), meta("vae")
    bars = _bars(left)
    assert math.isclose(sum(bars.values()), 859_520_964, rel_tol=1e-12, abs_tol=1e-3)
    for name, n in bars.items():        # each bar: Σ numel of that child of the module
        count = sum(p.numel() for p in unet.get_submodule(name).parameters())
        assert math.isclose(n, count, rel_tol=1e-12, abs_tol=1e-3), name
    bars = _bars(right)
    decode = sum(p.numel() for p in vae.decoder.parameters()) \
        + sum(p.numel() for p in vae.post_quant_conv.parameters())
    assert math.isclose(sum(bars.values()), decode, rel_tol=1e-12, abs_tol=1e-3)
    assert set(bars) == {"post_quant_conv", "conv_in", "mid_block", "conv_norm_out",
                         "conv_out", *(f"up_blocks.{i}" for i in range(4))}
    assert f"{decode:,}" in right.get_title() and "859,520,964" in left.get_title()


def test_block_width_reads_the_residual_blocks():
    unet, vae = meta("unet"), meta("vae")
    widths = UNET_CONFIG["block_out_channels"]
    for i, C in enumerate(widths):
        assert architecture_plots.block_width(unet.down_blocks[i]) == C
        assert architecture_plots.block_width(unet.up_blocks[i]) == widths[::-1][i]
    assert architecture_plots.block_width(vae.decoder.up_blocks[3]) == 128
    assert architecture_plots.block_width(unet.conv_in) is None


def _expected_stages(H, W):
    """(14) for Downsample2D (k = 3, s = 2, p = 1): ⌈H/2⌉; the up path returns to the
    skips' sizes (diffusers passes them when 8 ∤ H or W); channels from the config."""
    c = UNET_CONFIG["block_out_channels"]
    sizes = [(H, W)]
    for _ in range(3):
        sizes.append((math.ceil(sizes[-1][0] / 2), math.ceil(sizes[-1][1] / 2)))
    down = [(c[0],) + sizes[0], *[(c[i],) + sizes[i + 1] for i in range(3)],
            (c[3],) + sizes[3]]
    up = [(c[3],) + sizes[2], (c[2],) + sizes[1], (c[1],) + sizes[0],
          (c[0],) + sizes[0]]
    return [(4, H, W)] + down + [(c[3],) + sizes[3]] + up + [(4, H, W)]


@pytest.mark.parametrize("H, W", [(64, 64), (96, 64), (65, 65), (33, 50), (1, 1)])
def test_unet_stages_follow_the_size_formula(H, W):
    stages = architecture_plots.unet_stages(H, W)
    assert [s for s, _ in stages] == ["latent", *architecture_plots.STAGES]
    assert [shape for _, shape in stages] == _expected_stages(H, W)


def test_size_figure_draws_each_map_to_scale():
    sizes = ((64, 64), (33, 50))
    fig = architecture_plots.plot_unet_sizes(sizes)
    assert isinstance(fig, Figure) and fig.canvas.manager is None
    for ax, (H, W) in zip(fig.axes, sizes):
        drawn = [(p.get_height(), p.get_width()) for p in ax.patches]
        assert drawn == [(h, w) for _, h, w in _expected_stages(H, W)]
