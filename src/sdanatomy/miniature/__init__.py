"""A miniature Stable Diffusion, trained here: SD-1.5's three classes, small enough for a CPU.

The same diffusers/transformers classes as SD-1.5 — ``AutoencoderKL``, ``UNet2DConditionModel``
with cross-attention, ``CLIPTextModel`` — sized for 16×16 grey images of handwritten digits
(scikit-learn's, enlarged from 8×8), prompted in words ("a handwritten seven"). Its weights ship
with the package as safetensors in diffusers' folder layout and load through
:func:`sdanatomy.sd15.load`, the code path SD-1.5's weights take. ``python -m
sdanatomy.miniature.train`` retrains them from scratch.

What is the same as SD-1.5 and what is not:

* the latent is 4 × (H/2) × (W/2) (SD-1.5: 4 × H/8 × W/8), scaled by the VAE's ``scaling_factor``;
* the U-Net has SD-1.5's shape: cross-attention at the higher resolution and in the middle, a
  plain level at the lowest resolution, 8 heads; the text context is M = 8 tokens of width 32
  (SD-1.5: 77 × 768);
* the text encoder is trained together with the U-Net (SD-1.5 keeps CLIP frozen), with a
  word-level vocabulary instead of CLIP's 49,408 byte-pair tokens;
* the noise schedule is SD-1.5's (scaled linear, T = 1000) and sampling is DDIM with
  classifier-free guidance, as in SD-1.5's pipeline.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from sdanatomy import sd15
from sdanatomy.sd15.text_to_image import decode_latents

from sdanatomy.lecture import diffusion
from sdanatomy.miniature.digits import WORDS

WEIGHTS_DIR = Path(__file__).parent / "weights"
IMAGE_SIZE = 16
M = 8   # context tokens (SD-1.5: 77)

VAE_CONFIG = dict(
    in_channels=1, out_channels=1, latent_channels=4, block_out_channels=(32, 64), layers_per_block=1,
    norm_num_groups=16, down_block_types=("DownEncoderBlock2D",) * 2,
    up_block_types=("UpDecoderBlock2D",) * 2, sample_size=IMAGE_SIZE,
)
UNET_CONFIG = dict(
    sample_size=IMAGE_SIZE // 2, in_channels=4, out_channels=4, block_out_channels=(32, 64),
    layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32, attention_head_dim=8,
    norm_num_groups=16,
)
SPECIALS = ("<|pad|>", "<|startoftext|>", "<|endoftext|>")
VOCAB = SPECIALS + WORDS + tuple("0123456789") + ("a", "the", "digit", "number", "handwritten")
TEXT_ENCODER_CONFIG = dict(
    vocab_size=len(VOCAB), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
    max_position_embeddings=M, hidden_act="quick_gelu", projection_dim=32,
    pad_token_id=0, bos_token_id=1, eos_token_id=2,
)
TEMPLATES = ("{word}", "{digit}", "digit {word}", "the number {word}", "a handwritten {word}", "the digit {digit}")


def prompt(label: int, template: int = 4) -> str:
    """The prompt for digit ``label`` in one of the TEMPLATES (default: "a handwritten seven")."""
    return TEMPLATES[template].format(word=WORDS[label], digit=str(label))


def tokenize(prompts) -> torch.Tensor:
    """Prompts -> token ids (B, M): [start, words…, end, pad…], as CLIP's tokenizer lays them out."""
    return tokenize_words(prompts, VOCAB, who="the miniature's text encoder",
                          knows=f"the digits as words or numerals and {', '.join(VOCAB[-5:])}")


def tokenize_words(prompts, vocab, *, who: str, knows: str) -> torch.Tensor:
    """Prompts -> ids (B, M) over a word list ``vocab`` (id = position), CLIP's layout:
    [start, words…, end, pad…]. ``who`` and ``knows`` word the error for an unknown word."""
    if isinstance(prompts, str):
        prompts = [prompts]
    index = {w: i for i, w in enumerate(vocab)}
    rows = []
    for p in prompts:
        if not isinstance(p, str):
            raise TypeError(f"a prompt is a string; got {type(p).__name__}")
        words = p.lower().split()
        unknown = [w for w in words if w not in index or w in SPECIALS]
        if unknown:
            raise ValueError(f"{who} cannot encode {unknown} in {p!r}; it knows only {knows}")
        if len(words) > M - 2:
            raise ValueError(f"a prompt has at most {M - 2} words (M = {M} tokens with start "
                             f"and end); got {p!r}")
        ids = [index["<|startoftext|>"]] + [index[w] for w in words] + [index["<|endoftext|>"]]
        rows.append(ids + [index["<|pad|>"]] * (M - len(ids)))
    return torch.tensor(rows, dtype=torch.long)


class EpsHat(torch.nn.Module):
    """ε̂_θ(z, t, c) of the miniature: the text encoder turns token ids c (B, M) into the context
    (B, M, 32) that the U-Net's cross-attention reads — the signature freedom's functions expect."""

    def __init__(self, unet, text_encoder, *, reuse_context: bool = False):
        super().__init__()
        self.unet, self.text_encoder = unet, text_encoder
        # A sampler asks for the same prompts at every step: with reuse_context the text
        # encoder runs once per sampling run (same numbers, fewer forwards). Only for
        # frozen weights: training changes the encoder between calls.
        self.reuse_context, self._last = reuse_context, None

    def context(self, ids: torch.Tensor) -> torch.Tensor:
        if self._last is not None and torch.equal(self._last[0], ids):
            return self._last[1]
        C = self.text_encoder(ids).last_hidden_state          # (B, M) -> (B, M, d_ctx)
        if self.reuse_context and not torch.is_grad_enabled():
            self._last = (ids.clone(), C)
        return C

    def forward(self, z, t, ids):
        return self.unet(z, t, encoder_hidden_states=self.context(ids)).sample


def schedule() -> diffusion.Schedule:
    return diffusion.Schedule.scaled_linear()   # SD-1.5's


def load(folder: Path | str | None = None, *, device="cpu"):
    """The shipped (or a retrained) miniature, through the loader SD-1.5's weights take."""

    folder = Path(folder) if folder is not None else WEIGHTS_DIR
    model = sd15.load(folder, device=device, verbose=False)
    info_file = folder / "training.json"
    model.info = json.loads(info_file.read_text()) if info_file.is_file() else {}
    model.tokenizer = tokenize
    return model


def _guided_eps(model, guidance: float):
    """ε̃ of classifier-free guidance for the miniature (at w = 1, ε̂ conditioned)."""
    eps_hat = EpsHat(model.unet, model.text_encoder, reuse_context=True).eval()
    if guidance == 1.0:
        return eps_hat
    return diffusion.guided(eps_hat, tokenize([""]), guidance)


def _ddim(eps, ids, *, steps: int, seed: int, keep_every: int = 0):
    """DDIM in latent space with SD-1.5's settings (steps_offset 1, ᾱ_final = ᾱ_0)."""
    g = torch.Generator().manual_seed(seed)
    shape = (len(ids), 4, IMAGE_SIZE // 2, IMAGE_SIZE // 2)
    s = schedule()
    return diffusion.ddim_sample(eps, shape, ids, schedule=s, num_steps=steps,
                                 generator=g, final_alpha_bar=s.alpha_bars[0].item(),
                                 steps_offset=1, keep_every=keep_every)


def _decode(model, latents):
    return decode_latents(model, latents) * 2 - 1     # [0, 1] -> [−1, 1]


def generate(model, prompts, *, guidance: float = 3.0, steps: int = 50, seed: int = 0,
             keep_every: int = 0):
    """Images (B, 1, 16, 16) in [−1, 1] for ``prompts``: DDIM in latent space with
    classifier-free guidance, then the VAE decoder — SD-1.5's text-to-image loop in
    miniature. With ``keep_every``, also the decoded intermediate states
    [(t, images), …]."""
    ids = tokenize(prompts)
    result = _ddim(_guided_eps(model, guidance), ids, steps=steps, seed=seed,
                   keep_every=keep_every)
    if keep_every:
        z, kept = result
        return _decode(model, z), [(t, _decode(model, x)) for t, x in kept]
    return _decode(model, result)


def trajectory(model, prompts, *, guidance: float = 3.0, steps: int = 50,
               seed: int = 0):
    """What :func:`generate` holds and predicts at each DDIM step, for an animation.

    Runs generate's sampler (same noise, same result) and records, at each of the
    ``steps`` timesteps t, the latent z_t it holds, the guided estimate ε̃ and the clean
    latent it predicts, x̂_0 = (z_t − √(1−ᾱ_t) ε̃)/√ᾱ_t: the x̂_0 line of
    ``diffusion.ddim_step``. Returns a dict: ``t`` (S,) timesteps; ``z``, ``eps``,
    ``x0`` (S, B, 4, 8, 8) latents; ``final`` (B, 4, 8, 8), the sampler's output;
    ``images`` (S, B, 1, 16, 16), x̂_0 decoded, and ``final_images`` (B, 1, 16, 16),
    generate's images; both in [−1, 1].
    """
    eps_tilde, records = _guided_eps(model, guidance), []

    def observed(z, t, ids):                # ε̃, called once per step by the sampler
        eps = eps_tilde(z, t, ids)
        records.append((int(t[0]), z.clone(), eps.clone()))
        return eps

    final = _ddim(observed, tokenize(prompts), steps=steps, seed=seed)
    a = schedule().alpha_bars
    t = torch.tensor([r[0] for r in records])                             # (S,)
    z = torch.stack([r[1] for r in records])                          # (S, B, 4, h, w)
    eps = torch.stack([r[2] for r in records])
    x0 = torch.stack([(z_t - (1 - a[t_]).sqrt().item() * e) / a[t_].sqrt().item()
                      for t_, z_t, e in records])                        # x̂_0 per step
    images = _decode(model, x0.flatten(0, 1)).unflatten(0, x0.shape[:2])
    return dict(t=t, z=z, eps=eps, x0=x0, final=final, images=images,
                final_images=_decode(model, final))
