"""The closing chapter's figures (pages.closing_plots): the causal mask of CLIP's text
transformer and the rows of C that a changed word reaches, on a small seeded CLIP text
model with SD-1.5's vocabulary and 77 positions, checked against attention computed by
hand and against the positions where the token ids differ."""
import math

import pytest
import torch
from matplotlib.figure import Figure

from sdanatomy import sd15
from sdanatomy.lecture.config import TEXT_ENCODER_CONFIG
from sdanatomy.pages import closing_plots
from sdanatomy.sd15 import tokenizer

SMALL = {**TEXT_ENCODER_CONFIG, "hidden_size": 32, "intermediate_size": 64,
         "num_hidden_layers": 2, "num_attention_heads": 4, "projection_dim": 32}


@pytest.fixture(scope="module")
def enc():
    return sd15.build_text_encoder(SMALL, seed=0, device="cpu", dtype=torch.float64)


def _weights_by_hand(enc, ids):
    """softmax(Q Kᵀ/√d + causal mask) of layer 1, from its own projections."""
    layer = enc.encoder.layers[0]
    X = layer.layer_norm1(enc.embeddings(ids))[0]                  # (M, d_model)
    heads, M = enc.config.num_attention_heads, X.shape[0]
    split = lambda T: T.reshape(M, heads, -1).transpose(0, 1)      # (heads, M, d)
    Q, K = split(layer.self_attn.q_proj(X)), split(layer.self_attn.k_proj(X))
    S = Q @ K.transpose(1, 2) / math.sqrt(Q.shape[-1])
    S = S.masked_fill(torch.ones(M, M, dtype=torch.bool).triu(1), -math.inf)
    return S.softmax(-1)


def test_causal_attention_is_lower_triangular_and_matches_by_hand(enc):
    ids = tokenizer.tokenize("a photo of a cat")
    mask, weights = closing_plots.causal_attention(enc, ids)
    assert enc.config._attn_implementation == "sdpa"                # restored
    later = torch.ones(77, 77, dtype=torch.bool).triu(1)            # key after query
    assert torch.equal(mask < 0, later)
    assert torch.equal(weights[:, later], torch.zeros_like(weights[:, later]))
    with torch.no_grad():
        expected = _weights_by_hand(enc, ids)
    # transformers' eager attention takes its softmax in float32 (the rest is float64):
    # weights ≤ 1 agree to a few float32 roundoffs, 2^-24 ≈ 6e-8
    torch.testing.assert_close(weights, expected, rtol=1e-6, atol=1e-6)


def test_causal_mask_figure_labels_the_tokens(enc):
    fig = closing_plots.plot_causal_mask(enc, "a photo of a cat", n=8)
    assert isinstance(fig, Figure) and fig.canvas.manager is None    # no pyplot
    left, right = fig.axes[:2]
    assert [t.get_text() for t in left.get_xticklabels()] == [
        "<start>", "a", "photo", "of", "a", "cat", "<end>", "<end>"]
    blocked = torch.as_tensor(left.images[0].get_array().data)
    assert torch.equal(blocked.bool(), torch.ones(8, 8, dtype=torch.bool).triu(1))
    drawn = torch.as_tensor(right.images[0].get_array().data)
    with torch.no_grad():
        expected = _weights_by_hand(enc, tokenizer.tokenize("a photo of a cat"))
    # the softmax in float32, as above
    torch.testing.assert_close(drawn, expected.mean(0)[:8, :8], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("other", ["a photo of a dog", "a drawing of a cat",
                                   "an oil painting"])
def test_the_rows_that_change_start_at_the_first_changed_token(enc, other):
    ids, C = closing_plots.contexts(enc, ["a photo of a cat", other])
    first = int(torch.nonzero(ids[0] != ids[1])[0])
    assert closing_plots.changed_rows(C[0], C[1]) == list(range(first, 77))


def test_row_change_figure_plots_the_relative_norms(enc):
    ids, C = closing_plots.contexts(enc, ["a photo of a cat", "a photo of a dog"])
    fig = closing_plots.plot_row_changes(C[0], C[1], ids[0], ids[1])
    assert isinstance(fig, Figure) and fig.canvas.manager is None
    far = fig.axes[1]
    changed, same = far.lines[0].get_xydata(), far.lines[1].get_xydata()
    assert same[:, 0].tolist() == [0, 1, 2, 3, 4] and not same[:, 1].any()
    expected = torch.linalg.vector_norm(C[1] - C[0], dim=-1) \
        / torch.linalg.vector_norm(C[0], dim=-1)
    assert changed[:, 0].tolist() == list(range(5, 77))
    torch.testing.assert_close(torch.as_tensor(changed[:, 1]), expected[5:],
                               rtol=1e-12, atol=0.0)
    near = fig.axes[0]
    assert [t.get_text() for t in near.get_xticklabels()][5] == "5 cat→dog"
