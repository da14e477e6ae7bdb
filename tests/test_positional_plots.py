"""The positional miniature's figure: what it draws is the data it was given."""
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from sdanatomy.pages import positional_plots


def _data():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 16, 32, generator=g) * 2 - 1
    maps = torch.rand(2, 8, 16, generator=g) * 0.3
    return image, maps


def test_word_maps_figure_draws_the_given_maps():
    image, maps = _data()
    fig = positional_plots.word_maps_figure(image, ["three", "seven"], maps,
                                            uniform=0.125)
    assert isinstance(fig, Figure)
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 3
    np.testing.assert_array_equal(panels[0].images[0].get_array(), image[0].numpy())
    for ax, m, word in zip(panels[1:], maps, ["three", "seven"]):
        np.testing.assert_array_equal(ax.images[0].get_array(), m.numpy())
        assert word in ax.get_title()
        assert ax.images[0].get_extent() == [0, 32, 16, 0]        # the image's pixels
        # white at the uniform level, up to twice it or the largest weight
        assert ax.images[0].norm.vcenter == 0.125
        assert ax.images[0].norm.vmax == max(float(maps.max()), 0.25)
    for ax in panels:                                             # the halves' border
        assert any(list(line.get_xdata()) == [16.0, 16.0] for line in ax.lines)


def test_word_maps_figure_refuses_mismatched_input():
    image, maps = _data()
    plain = positional_plots.word_maps_figure(image, ["three", "seven"], maps)
    assert plain.axes[1].images[0].norm.vmax == float(maps.max())
    with pytest.raises(ValueError, match="one"):
        positional_plots.word_maps_figure(image, ["three"], maps)
    with pytest.raises(ValueError, match="image"):
        positional_plots.word_maps_figure(image[0], ["three", "seven"], maps)


def test_samples_figure_draws_each_image_with_its_title():
    g = torch.Generator().manual_seed(1)
    images = torch.rand(5, 1, 16, 32, generator=g) * 2 - 1
    titles = [f"prompt {k}" for k in range(5)]
    fig = positional_plots.samples_figure(images, titles, columns=3)
    shown = [ax for ax in fig.axes if ax.get_visible() and ax.images]
    assert len(shown) == 5
    for ax, img, title in zip(shown, images, titles):
        np.testing.assert_array_equal(ax.images[0].get_array(), img[0].numpy())
        assert ax.get_title() == title
    with pytest.raises(ValueError, match="one title"):
        positional_plots.samples_figure(images, titles[:2])
