"""The miniature Stable Diffusion: its tokenizer, its shipped weights, and its retraining command."""
import json

import pytest
import torch

from sdanatomy.miniature import digits
from sdanatomy import miniature
from sdanatomy import sd15
from sdanatomy.miniature import train as mini_train
from sdanatomy.lecture import diffusion


def test_tokenizer_lays_prompts_out_like_clip():
    ids = miniature.tokenize(["a handwritten seven", ""])
    v = {w: i for i, w in enumerate(miniature.VOCAB)}
    assert ids.shape == (2, miniature.M)
    assert ids[0].tolist() == [v["<|startoftext|>"], v["a"], v["handwritten"], v["seven"], v["<|endoftext|>"],
                               v["<|pad|>"], v["<|pad|>"], v["<|pad|>"]]
    assert ids[1, :2].tolist() == [v["<|startoftext|>"], v["<|endoftext|>"]]


@pytest.mark.parametrize("bad, exc, match", [
    ("a handwritten banana", ValueError, "cannot encode \\['banana'\\]"),
    ("one two three four five six seven", ValueError, "at most 6 words"),
    ("<|pad|>", ValueError, "cannot encode"),
    ([7], TypeError, "a prompt is a string"),
])
def test_prompts_it_cannot_encode_are_refused(bad, exc, match):
    with pytest.raises(exc, match=match):
        miniature.tokenize(bad if isinstance(bad, list) else [bad])


def test_every_training_prompt_is_encodable():
    for label in range(10):
        for k in range(len(miniature.TEMPLATES)):
            miniature.tokenize(miniature.prompt(label, k))


def test_shipped_weights_are_small_safetensors_in_diffusers_layout():
    files = sorted(p for p in miniature.WEIGHTS_DIR.rglob("*") if p.is_file())
    weights = [p for p in files if p.suffix == ".safetensors"]
    assert {p.parent.name for p in weights} == {"unet", "vae", "text_encoder"}
    assert not [p for p in files if p.suffix in (".bin", ".ckpt", ".pt", ".pth")]
    assert sum(p.stat().st_size for p in files) <= 10 * 2**20


def test_shipped_weights_load_through_the_sd15_loader():
    model = miniature.load()
    assert model.mode == sd15.REAL and model.note == "diffusers folder"
    for part, config in (("unet", miniature.UNET_CONFIG), ("vae", miniature.VAE_CONFIG)):
        module = getattr(model, part)
        for key, value in config.items():
            got = module.config[key]
            assert (tuple(got) if isinstance(got, list) else got) == value, (part, key)
    assert model.text_encoder.config.vocab_size == len(miniature.VOCAB)
    assert json.loads((miniature.WEIGHTS_DIR / "training.json").read_text())["conditional_accuracy"] >= 0.8


def test_generation_is_seeded_and_shaped():
    model = miniature.load()
    a = miniature.generate(model, ["a handwritten one", "7"], steps=5, seed=0)
    b = miniature.generate(model, ["a handwritten one", "7"], steps=5, seed=0)
    assert a.shape == (2, 1, 16, 16) and torch.equal(a, b) and a.abs().max() <= 1


def test_retrain_command_runs_end_to_end(tmp_path):
    # A few steps only: the full run (~10 minutes) is what produced the shipped weights.
    out = tmp_path / "mini"
    report = mini_train.main(["--out", str(out), "--vae-steps", "2", "--unet-steps", "2", "--batch-size", "16",
                              "--samples-per-digit", "2", "--no-progress"])
    model = miniature.load(out)
    assert model.mode == sd15.REAL and len(report["unet_loss"]) == 2
    assert not (tmp_path / "mini.partial").exists()


def test_judge_is_good_on_real_digits_and_diversity_is_one_for_the_data():
    judge = digits.train_judge()
    assert judge.accuracy > 0.95
    X, y = digits.load_digits(16)
    assert abs(digits.diversity(X, y) - 1.0) < 1e-6
    assert judge.conditional_accuracy(X, y) > 0.95      # enlarged and shrunk back, still readable


@pytest.mark.parametrize("call, match", [
    (lambda: digits.load_digits(12), "multiple of 8"),
    (lambda: digits.to_original_scale(torch.zeros(2, 3, 16, 16)), "grey images"),
    (lambda: digits.diversity(torch.zeros(2, 1, 8, 8), torch.tensor([0, 1])), "at least two images"),
])
def test_digits_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_cross_attention_maps_are_distributions_and_leave_the_model_as_it_was():
    from sdanatomy.miniature import maps

    model = miniature.load()
    processors = {n: type(m.processor) for n, m in model.unet.named_modules() if n.endswith("attn2")}
    image, tokens, pi = maps.cross_attention_maps(model, "a handwritten two", steps=5, seed=0)
    assert pi.shape == (miniature.M, 8, 8)
    # float32: each softmax row sums to 1 within M·u (M = 8, u = 2⁻²⁴); the means over
    # heads, layers and steps add a few u: 1e-5 absolute (~80u); rtol=0, the sums ≈ 1
    assert torch.allclose(pi.sum(0), torch.ones(8, 8), rtol=0, atol=1e-5)
    assert tokens.tolist() == miniature.tokenize("a handwritten two")[0].tolist()
    plain = miniature.generate(model, ["a handwritten two"], steps=5, seed=0)[0]
    assert (image - plain).abs().max() < 1e-4     # the explicit-softmax processor: the same function
    after = {n: type(m.processor) for n, m in model.unet.named_modules() if n.endswith("attn2")}
    assert after == processors and not any("get_attention_scores" in vars(m)
                                            for n, m in model.unet.named_modules() if n.endswith("attn2"))


def test_sampling_runs_the_text_encoder_once_with_the_same_numbers():
    model = miniature.load()
    calls = []
    hook = model.text_encoder.register_forward_hook(lambda *_: calls.append(1))
    try:
        x = miniature.generate(model, ["a handwritten two", "a handwritten five"], steps=5)
        assert len(calls) == 1                      # once for the run, not once per step
        # the same sampler with an estimator that encodes the prompts at every step
        eps_hat = miniature.EpsHat(model.unet, model.text_encoder).eval()
        eps_tilde = diffusion.guided(eps_hat, miniature.tokenize([""]), 3.0)
        ids = miniature.tokenize(["a handwritten two", "a handwritten five"])
        z = miniature._ddim(eps_tilde, ids, steps=5, seed=0)
        assert len(calls) == 1 + 5
    finally:
        hook.remove()
    torch.testing.assert_close(x, miniature._decode(model, z), atol=0, rtol=0)  # bitwise
