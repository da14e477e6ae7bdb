"""The positional miniature: data, prompts, the attention-mass metric, training and the
shipped weights."""
import pytest
import torch

from sdanatomy.miniature import digits
from sdanatomy.miniature import positional as P


def test_pairs_put_the_first_named_digit_on_the_left():
    pairs, labels, prompts = P.pair_dataset(6, seed=3)
    assert pairs.shape == (6, 1, 16, 32) and labels.shape == (6, 2)
    real, real_labels = digits.load_digits(16)
    flat = real.flatten(1)
    for img, (a, b), text in zip(pairs, labels.tolist(), prompts):
        words = text.split()
        assert words[1] == digits.WORDS[a] and words[-1] == digits.WORDS[b]
        assert words[2] == "left"
        for half, label in ((img[..., :16], a), (img[..., 16:], b)):
            # each half is, pixel for pixel, a real digit of the label it is named by
            match = (flat == half.flatten()).all(1)
            assert match.any() and bool((real_labels[match] == label).all())
    again = P.pair_dataset(6, seed=3)
    assert torch.equal(again[0], pairs) and torch.equal(again[1], labels)
    assert not torch.equal(P.pair_dataset(6, seed=4)[1], labels)


def test_tokenizer_round_trip_and_layout():
    text = "a three left of a seven"
    assert P.prompt(3, 7) == text
    ids = P.tokenize(text)
    assert ids.shape == (1, 8)
    assert P.VOCAB[ids[0, 0]] == "<|startoftext|>"
    assert P.VOCAB[ids[0, 7]] == "<|endoftext|>"
    assert [P.VOCAB[ids[0, k]] for k in P.WORD_POSITIONS] == ["three", "seven"]
    assert P.detokenize(ids[0]) == text
    empty = P.tokenize("")[0].tolist()
    assert empty == [1, 2, 0, 0, 0, 0, 0, 0]          # start, end, pads


@pytest.mark.parametrize("bad", ["a three right of a seven", "a 3 left of a 7",
                                 "a <|pad|> left"])
def test_tokenizer_refuses_unknown_words(bad):
    with pytest.raises(ValueError, match="cannot encode"):
        P.tokenize(bad)


def test_tokenizer_and_prompt_refuse_bad_input():
    with pytest.raises(TypeError):
        P.tokenize([3])
    with pytest.raises(ValueError, match="at most"):
        P.tokenize("a one left of a two a")
    with pytest.raises(ValueError):
        P.prompt(3, 10)


def test_own_half_fraction_on_known_maps():
    left = torch.zeros(4, 8)
    left[:, :4] = 0.3
    assert P.own_half_fraction(left, "left").item() == 1.0
    assert P.own_half_fraction(left, "right").item() == 0.0
    uniform = torch.full((2, 3, 4, 8), 0.125)
    assert torch.equal(P.own_half_fraction(uniform, "left"), torch.full((2, 3), 0.5))
    three_to_one = torch.ones(2, 4)
    three_to_one[:, :2] = 3.0                          # mass 12 left, 4 right
    # 12/16 in float32 is exact; abs 1e-7 and rel 1e-6 leave room for the sums' rounding
    assert P.own_half_fraction(three_to_one, "left").item() == pytest.approx(
        0.75, abs=1e-7, rel=1e-6)
    with pytest.raises(ValueError):
        P.own_half_fraction(torch.ones(4, 7), "left")
    with pytest.raises(ValueError):
        P.own_half_fraction(-torch.ones(4, 8), "left")
    with pytest.raises(ValueError):
        P.own_half_fraction(torch.ones(4, 8), "top")


def test_own_half_mass_averages_records():
    # two records (layers), 2 heads, M tokens on a 2×4 grid; weights sum to 1 per pixel
    def record(name, left_share):
        probs = torch.full((2, P.M, 2, 4), 0.0)
        probs[:, 0] = 1.0                              # the start token takes the rest
        i, j = P.WORD_POSITIONS
        own, other = 0.4 * left_share, 0.4 * (1 - left_share)
        probs[:, i, :, :2], probs[:, i, :, 2:] = own, other
        probs[:, j, :, :2], probs[:, j, :, 2:] = other, own
        probs[:, 0] -= probs[:, i] + probs[:, j]
        # float32 sums of three numbers: exact to a few ulps
        assert torch.allclose(probs.sum(1), torch.ones(2, 2, 4), atol=1e-6, rtol=0)
        return dict(layer=name, probs=probs)

    out = P.own_half_mass([record("a", 1.0), record("b", 0.5)])
    # float32 ratios of sums of 0.4s and 0.2s: within a few ulps (abs 1e-6, rel 1e-6)
    tol = dict(abs=1e-6, rel=1e-6)
    assert out["left_word"] == pytest.approx(0.75, **tol)
    assert out["right_word"] == pytest.approx(0.75, **tol)
    assert out["left_word_per_layer"] == pytest.approx({"a": 1.0, "b": 0.5}, **tol)


def test_judge_halves_counts_each_position_and_swaps():
    class Reads:                               # a judge that reads the mean pixel
        def predict(self, images):
            return images.mean((1, 2, 3)).round().long()

    images = torch.zeros(4, 1, 16, 32)
    for k, (a, b) in enumerate([(1, 2), (2, 1), (3, 3), (1, 5)]):
        images[k, ..., :16], images[k, ..., 16:] = a, b
    labels = torch.tensor([[1, 2], [1, 2], [3, 3], [1, 4]])
    acc = P.judge_halves(Reads(), images, labels)
    assert acc == dict(left=0.75, right=0.5, both=0.5, swapped=0.25)


def test_tiny_training_run(tmp_path):
    vae = P.load_vae()
    pairs, _, prompts = P.pair_dataset(8, seed=0)
    z, ids = P.latent_dataset(vae, pairs, prompts, seed=0)
    assert z.shape == (8, *P.LATENT)           # the shipped VAE at 16×32: 4×8×16
    eps_hat, losses = P.train(z, ids, seed=0, steps=2, batch_size=4, lr=1e-3,
                              cond_dropout=0.5, progress=False)
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    for name in ("unet", "text_encoder"):
        getattr(eps_hat, name).save_pretrained(tmp_path / name, safe_serialization=True)
    model = P.load(tmp_path)
    images = P.generate(model, [P.prompt(1, 2)], steps=2)
    assert images.shape == (1, 1, 16, 32)


def test_coordinate_channels_reach_the_unet():
    pairs, _, prompts = P.pair_dataset(4, seed=0)
    z, ids = torch.randn(4, *P.LATENT), P.tokenize(prompts)
    eps_hat, _ = P.train(z, ids, seed=0, steps=1, batch_size=2, lr=1e-3,
                         cond_dropout=0.0, progress=False, coords=True)
    assert isinstance(eps_hat, P.CoordEpsHat)
    seen = []
    eps_hat.unet.conv_in.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    with torch.no_grad():
        eps_hat(z[:1], torch.tensor([10]), ids[:1])
    x = seen[0][0, 4]                                  # the x channel: −1 … 1 by column
    assert torch.equal(x[0], torch.linspace(-1, 1, 16)) and torch.equal(x[0], x[-1])


def test_shipped_weights_load_and_attention_sums_to_one():
    model = P.load()
    assert model.info["settings"]["steps"] == P.DEFAULTS["steps"]
    files = [f for f in P.POSITIONAL_DIR.rglob("*") if f.is_file()]
    assert sum(f.stat().st_size for f in files) < 4e6          # small enough to ship
    image, records = P.attention_record(model, P.prompt(3, 7), steps=2)
    assert image.shape == (1, 1, 16, 32)
    assert {tuple(r["probs"].shape[-2:]) for r in records} == {(8, 16), (4, 8)}
    for r in records:                          # per query pixel, over the M tokens
        # a float32 softmax over 8 tokens sums to 1 within a few ulps; 1e-5 leaves room
        assert torch.allclose(r["probs"].sum(1), torch.ones(()), atol=1e-5, rtol=0)
    assert P.word_maps(records).shape == (P.M, 8, 16)
