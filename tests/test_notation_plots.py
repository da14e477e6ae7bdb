"""Chapter 2's figures (pages.notation_plots): the token order of flatten (25) and the
shape alphabet on the miniature's data, checked against closed forms and torch."""
import pytest
import torch
from matplotlib.figure import Figure

from sdanatomy.pages import notation_plots


@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 3, 4), (3, 4, 2), (1, 5, 7)])
def test_flatten_rows_are_the_lectures_token_numbers(shape):
    C, H, W = shape
    rows = notation_plots.flatten_rows(C, H, W)
    # (25): X_{c,i,j} goes to row (i − 1)·W + j, whatever the channel (1-based i, j)
    expected = torch.tensor([[[(i - 1) * W + j for j in range(1, W + 1)]
                              for i in range(1, H + 1)]] * C)
    assert torch.equal(rows, expected)


def test_flatten_order_figure_draws_the_rows_and_the_matrix():
    C, H, W = 2, 3, 4
    fig = notation_plots.plot_flatten_order(C, H, W)
    assert isinstance(fig, Figure) and fig.canvas.manager is None      # no pyplot
    axes = [ax for ax in fig.axes if ax.images]
    assert len(axes) == C + 1
    for c in range(C):
        drawn = torch.as_tensor(axes[c].images[0].get_array().data)
        assert torch.equal(drawn.long(), torch.arange(1, H * W + 1).reshape(H, W))
    # the matrix Y: the label in row n, column c is the (c, i, j) with (i − 1)·W + j = n
    labels = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text()
              for t in axes[-1].texts}
    for n in range(H * W):
        for c in range(C):
            i, j = divmod(n, W)
            assert labels[(n, c)] == f"{c + 1},{i + 1},{j + 1}"
    assert "✓" in axes[-1].get_title()


def test_shape_alphabet_figure_shows_the_tensors_and_their_tokens():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, 16, 16, generator=g) * 2 - 1
    z = torch.randn(1, 4, 8, 8, generator=g)
    fig = notation_plots.plot_shape_alphabet(x, z)
    assert isinstance(fig, Figure) and fig.canvas.manager is None
    drawn = [torch.as_tensor(ax.images[0].get_array().data) for ax in fig.axes
             if ax.images]
    assert len(drawn) == 1 + 4 + 1
    assert torch.equal(drawn[0], x[0, 0])
    for c in range(4):
        assert torch.equal(drawn[1 + c], z[0, c])
    # the tokens as diffusers lays them out: (C, H, W) -> (H, W, C) -> (N, C)
    assert torch.equal(drawn[-1], z[0].permute(1, 2, 0).reshape(64, 4))
    titles = " ".join(sf.get_suptitle() for sf in fig.subfigs)
    for shape in ("1×1×16×16", "1×4×8×8", "64×4"):
        assert shape in titles
    with pytest.raises(ValueError, match="one image"):
        notation_plots.plot_shape_alphabet(x[0], z)


def test_digit_and_latent_shapes():
    x, z = notation_plots.digit_and_latent(0)
    assert x.shape == (1, 1, 16, 16) and z.shape == (1, 4, 8, 8)
    assert x.min() >= -1 and x.max() <= 1 and torch.isfinite(z).all()
