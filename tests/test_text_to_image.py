"""Text to image end to end (§5): the CLIP tokenizer, the loop against diffusers' own pipeline,
the miniature against its own sampler, SD-1.5's architecture at a tiny size, and bad input."""
import gc

import pytest
import torch

from sdanatomy import miniature
from sdanatomy.lecture import config
from sdanatomy import sd15
from sdanatomy.sd15 import tokenizer
from sdanatomy.sd15.text_to_image import Generation, decode_latents, settling, split_frequencies, text_to_image

# ---------------------------------------------------------------- the tokenizer

# Clean prompts (ftfy and HTML unescaping leave them unchanged): OpenAI's tokenizer is the reference.
PROMPTS = ["a photo of a cat", "An astronaut riding a horse on Mars!!", "", "  Two   spaces\tand a\nnewline ",
           "it's a dog's life, isn't it?", "1234 numbers 3.14159 and 100%", "Café crème brûlée, naïve façade",
           "photorealistic, 8k, trending on artstation, (masterpiece:1.2)", "日本の猫", "emoji 🐱🚀",
           "IT'S LOUD", "a " * 100]


def test_vocabulary_is_clips():
    vocab, merges = tokenizer.read_vocabulary()
    assert len(vocab) == 49408 and len(merges) == 48894
    assert (vocab["<|startoftext|>"], vocab["<|endoftext|>"]) == (49406, 49407)
    assert vocab["!"] == 0 and vocab["a</w>"] == 320 and vocab["cat</w>"] == 2368
    assert len(tokenizer.bytes_to_unicode()) == 256 == len(set(tokenizer.bytes_to_unicode().values()))


def test_well_known_encoding():
    # CLIP's encoding of "a photo of a cat", padded by SD-1.5 with <|endoftext|> to 77
    ids = tokenizer.tokenize("a photo of a cat")
    assert ids.shape == (1, 77) and ids.dtype == torch.long
    assert ids[0, :7].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert (ids[0, 7:] == 49407).all()
    assert tokenizer.decode(ids) == ["a photo of a cat"]


@pytest.mark.parametrize("prompt", PROMPTS, ids=range(len(PROMPTS)))
def test_tokenizer_matches_openai_reference(prompt):
    ref = tokenizer.reference_ids(prompt)            # OpenAI's SimpleTokenizer, unpadded, untruncated
    if len(ref) > 77:                               # SD-1.5 keeps 77 ids, the last one <|endoftext|>
        ref = ref[:76] + [49407]
    ours = tokenizer.tokenize(prompt)[0].tolist()
    assert ours == ref + [49407] * (77 - len(ref))


@pytest.mark.parametrize("prompt", ["&amp; html", "<|startoftext|> hi"])
def test_known_differences_from_openai(prompt):
    # OpenAI unescapes HTML entities (transformers does not); open_clip 3.3 renamed the special
    # tokens to <start_of_text>, so it splits the literal string that transformers treats as special.
    ref = tokenizer.reference_ids(prompt)
    assert tokenizer.tokenize(prompt)[0, :len(ref)].tolist() != ref


def test_tokenizer_bad_input():
    with pytest.raises(TypeError, match="a prompt is a string"):
        tokenizer.tokenize(["ok", 3])
    with pytest.raises(ValueError, match="no prompts"):
        tokenizer.tokenize([])


# ---------------------------------------------------------------- the loop vs diffusers' pipeline
TINY_UNET = dict(config.UNET_CONFIG, block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32,
                 attention_head_dim=4, norm_num_groups=8,
                 down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
TINY_VAE = dict(config.VAE_CONFIG, block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=8,
                sample_size=64)   # four levels: SD-1.5's factor f = 8
TINY_CLIP = dict(config.TEXT_ENCODER_CONFIG, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=4, projection_dim=32)   # CLIP's 49,408 tokens and 77 positions


@pytest.fixture(scope="module")
def tiny():
    """SD-1.5's three classes with SD-1.5's vocabulary, context length and VAE scaling, small widths."""
    return sd15.SD15(sd15.build_unet(TINY_UNET, seed=1, device="cpu"), sd15.build_vae(TINY_VAE, seed=2, device="cpu"),
                     sd15.build_text_encoder(TINY_CLIP, seed=3, device="cpu"), mode=sd15.ARCHITECTURE,
                     source=None, note="tiny")


def _pipeline_images(model, prompts, *, scheduler, guidance, steps, seed, negative_prompt=""):
    from diffusers import StableDiffusionPipeline

    from sdanatomy.sd15.text_to_image import make_scheduler, vae_factor

    pipe = StableDiffusionPipeline(vae=model.vae, text_encoder=model.text_encoder, unet=model.unet,
                                   tokenizer=tokenizer.clip_tokenizer(), scheduler=make_scheduler(scheduler),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    size, f = model.vae.config.sample_size, vae_factor(model.vae)
    z_T = torch.randn((len(prompts), 4, size // f, size // f), generator=torch.Generator().manual_seed(seed))
    return pipe(prompts, negative_prompt=[negative_prompt] * len(prompts), num_inference_steps=steps,
                guidance_scale=guidance, latents=z_T, output_type="pt").images


@pytest.mark.parametrize("scheduler", ["ddim", "pndm"])
def test_loop_is_diffusers_pipeline(tiny, scheduler):
    prompts = ["a red cube", "a blue sphere on a table"]
    ours = text_to_image(tiny, prompts, negative_prompt="blurry", guidance=7.5, steps=6, seed=4,
                         scheduler=scheduler, device="cpu", precision="float32",
                         progress=False)
    theirs = _pipeline_images(tiny, prompts, scheduler=scheduler, guidance=7.5, steps=6, seed=4,
                              negative_prompt="blurry")
    assert ours.images.shape == theirs.shape == (2, 3, 64, 64)
    # float32; the pipeline encodes c and c_∅ in two batches, we in one: rounding only
    err = (ours.images - theirs).abs().max().item()
    assert err < 1e-5, err


def test_result_and_kept_states(tiny):
    gen = text_to_image(tiny, "a cat", steps=4, keep_every=2, device="cpu",
                        precision="float32", progress=False, height=32, width=48)
    assert isinstance(gen, Generation)
    assert gen.images.shape == (1, 3, 32, 48) and gen.latents.shape == (1, 4, 4, 6)
    assert 0 <= gen.images.min() and gen.images.max() <= 1
    assert gen.timesteps == (751, 501, 251, 1)              # 'leading' spacing + steps_offset 1
    assert [(k.i, k.t) for k in gen.kept] == [(0, 751), (2, 251)]
    # exact: text_to_image decodes these very latents with decode_latents, same batches
    assert torch.allclose(decode_latents(tiny, gen.latents), gen.images, rtol=0, atol=0)
    rows = settling(tiny, gen)
    assert [r["i"] for r in rows] == [0, 2] and all(r["low"] >= 0 and r["high"] >= 0 for r in rows)


def test_seed_and_guidance(tiny):
    run = lambda **kw: text_to_image(tiny, "a cat", steps=2, device="cpu",
                                     precision="float32", progress=False, **kw).images
    assert torch.equal(run(seed=5), run(seed=5))
    assert not torch.equal(run(seed=5), run(seed=6))
    # w = 1 skips the unconditional half: the same as the guided formula at w = 1
    # float32, where 1 + 1e-12 is 1: ε_∅ + (ε_c − ε_∅) and a batch of 2 instead of 1
    # differ by rounding only, through 2 U-Net steps and the VAE. Measured 9.5e-7 on 1
    # thread, 1.2e-6 on 2 or 4, so atol=1e-6 alone fails; rtol=1e-5 is the former
    # default, kept: ≤ 1.1e-5 (~180u) at a value of 1
    assert torch.allclose(run(guidance=1.0), run(guidance=1.0 + 1e-12),
                          rtol=1e-5, atol=1e-6)


def test_split_frequencies_is_a_partition():
    x = torch.randn(2, 1, 16, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    low, high = split_frequencies(x, cutoff=2.0)
    # float64 FFT of 16×12 and back: ~u·log₂192·‖x‖₂ (‖x‖₂ ≈ 14) ≈ 1e-14 per entry,
    # 7e-16 measured; 1e-12 absolute, rtol=0
    assert torch.allclose(low + high + x.mean((-2, -1), keepdim=True), x,
                          rtol=0, atol=1e-12)


# ---------------------------------------------------------------- the miniature: real digits
@pytest.fixture(scope="module")
def mini():
    return miniature.load()


def test_miniature_reproduces_its_own_sampler(mini):
    prompts = [miniature.prompt(d) for d in range(10)]
    reference = miniature.generate(mini, prompts, guidance=3.0, steps=20, seed=0)          # [−1, 1]
    gen = text_to_image(mini, prompts, guidance=3.0, steps=20, seed=0, device="cpu",
                        precision="float32", progress=False)
    assert gen.images.shape == (10, 1, 16, 16)
    # same DDIM (diffusers' float32 coefficients vs freedom's float64 ones), same z_T
    err = ((reference + 1) / 2 - gen.images).abs().max().item()
    assert err < 1e-4, err


def test_miniature_layout_first(mini):
    gen = text_to_image(mini, ["a handwritten three"] * 4, guidance=3.0, steps=20, seed=3, keep_every=4,
                        device="cpu", precision="float32", progress=False)
    rows = settling(mini, gen, cutoff=2.0)
    # §5.1: at every kept step the coarse structure is nearer to its final value than the details
    assert all(r["low"] < r["high"] for r in rows), rows


# ---------------------------------------------------------------- SD-1.5's architecture, tiny size
@pytest.fixture(scope="module")
def arch():
    model = sd15.load(device="cpu", verbose=False)   # real weights if present, else architecture only
    yield model
    del model
    gc.collect()


ARCH_RUN = dict(height=64, width=64, steps=2, seed=0, device="cpu", precision="float32",
                progress=False)


@pytest.fixture(scope="module")
def arch_run(arch):
    return text_to_image(arch, "an astronaut riding a horse", unet="diffusers", **ARCH_RUN)


def test_architecture_only_runs_at_tiny_size(arch_run):
    assert arch_run.images.shape == (1, 3, 64, 64) and arch_run.latents.shape == (1, 4, 8, 8)
    assert torch.isfinite(arch_run.images).all()


def test_book_unet_gives_the_same_images(arch, arch_run):
    book = text_to_image(arch, "an astronaut riding a horse", unet="book", **ARCH_RUN)
    # float32, the same torch kernels under both: equal here; 1e-4 allows another summation order
    err = (arch_run.images - book.images).abs().max().item()
    assert err < 1e-4, err


def test_book_unet_on_the_miniature(mini):
    kw = dict(guidance=3.0, steps=10, seed=0, device="cpu", precision="float32",
              progress=False)
    a = text_to_image(mini, ["a handwritten two", "a handwritten five"], unet="diffusers", **kw)
    b = text_to_image(mini, ["a handwritten two", "a handwritten five"], unet="book", **kw)
    err = (a.images - b.images).abs().max().item()   # as above
    assert err < 1e-4, err


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs, error, match", [
    (dict(prompts=[]), TypeError, "non-empty list"),
    (dict(prompts=["ok", 1]), TypeError, "non-empty list"),
    (dict(negative_prompt=["a", "b"]), TypeError, "one per prompt"),
    (dict(height=20), ValueError, "multiples of 8"),
    (dict(width=0), ValueError, "multiples of 8"),
    (dict(steps=0), ValueError, "steps must lie in"),
    (dict(steps=2.5), TypeError, "steps must be an int"),
    (dict(guidance=-1.0), ValueError, "guidance weight"),
    (dict(unet="mine"), ValueError, "unet must be one of"),
    (dict(scheduler="euler"), ValueError, "scheduler must be one of"),
    (dict(keep_every=-1), ValueError, "keep_every"),
    (dict(dtype=torch.float16, device="cpu"), ValueError, "float16 on the CPU"),
    (dict(dtype=torch.int32), TypeError, "floating"),
    (dict(device="gpu0"), ValueError, "not a device"),
])
def test_bad_input(tiny, kwargs, error, match):
    kw = dict(prompts="a cat", steps=1, device="cpu", progress=False, height=32, width=32)
    kw.update(kwargs)
    with pytest.raises(error, match=match):
        text_to_image(tiny, kw.pop("prompts"), **kw)


def test_bad_model_and_tokenizer(tiny):
    incomplete = sd15.SD15(tiny.unet, None, tiny.text_encoder, mode=sd15.ARCHITECTURE, source=None)
    with pytest.raises(TypeError, match="unet, a vae and a text_encoder"):
        text_to_image(incomplete, "a cat", device="cpu")
    with pytest.raises(TypeError, match="token ids"):
        text_to_image(tiny, "a cat", tokenizer=lambda p: torch.zeros(len(p), 77), steps=1, device="cpu",
                      progress=False)


def test_image_grid_places_each_image_row_by_row_with_padding():
    from sdanatomy.sd15.text_to_image import image_grid
    images = torch.arange(6, dtype=torch.float32).reshape(6, 1, 1, 1).expand(6, 1, 2, 3)
    grid = image_grid(images, rows=2, pad=1, fill=-1.0)
    assert grid.shape == (2 * 3 - 1, 3 * 4 - 1, 1)
    assert grid[0, 0, 0] == 0 and grid[0, 4, 0] == 1 and grid[3, 0, 0] == 3 and grid[4, 10, 0] == 5
    assert grid[2, 0, 0] == -1 and grid[0, 3, 0] == -1          # the padding between cells
    with pytest.raises(ValueError, match="do not fill"):
        image_grid(images, rows=4)
