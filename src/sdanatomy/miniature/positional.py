"""A positional miniature: two digits side by side, prompted "a three left of a seven".

The shipped miniature draws one centred digit, so its cross-attention has nothing to
localise and its maps are nearly flat. Here each image is 16×32 pixels, two real 16×16
digits (``digits.load_digits(16)``) side by side, and the prompt names both with their
order. The shipped VAE is reused **frozen**: it is convolutional (plus one
self-attention in its middle block), so it encodes a 16×32 image into a 4×8×16 latent
unchanged; :func:`vae_check` measures how well. A text encoder and a U-Net of the
miniature's configuration (vocabulary and ``sample_size`` adjusted) are trained by
``sdanatomy.lecture.diffusion.train_noise_estimator``, as ``train.py`` does.

The grammar is one sentence, ``a X left of a Y`` (six words, M = 8 tokens with start and
end). Its mirror "a Y right of a X" is left out on purpose: CLIP's text encoder is
causal, so the first digit word's hidden state cannot see the "left"/"right" that
follows it and could not know which half it belongs to.

``python -m sdanatomy.miniature.positional`` retrains and writes ``positional_weights/``
(with a progress bar).
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sdanatomy import sd15
from sdanatomy.lecture import diffusion
from sdanatomy.miniature import digits
from sdanatomy.miniature.digits import WORDS
from sdanatomy.sd15.reference import (AttnProcessor, CLIPTextConfig, CLIPTextModel,
                                      UNet2DConditionModel)
from sdanatomy.sd15.text_to_image import decode_latents

from . import (IMAGE_SIZE, M, SPECIALS, TEXT_ENCODER_CONFIG, UNET_CONFIG, WEIGHTS_DIR,
               EpsHat, schedule, tokenize_words)

POSITIONAL_DIR = Path(__file__).parent / "positional_weights"
HEIGHT, WIDTH = IMAGE_SIZE, 2 * IMAGE_SIZE          # 16×32 pixels
LATENT = (4, HEIGHT // 2, WIDTH // 2)               # 4×8×16
VOCAB = SPECIALS + WORDS + ("a", "left", "of")
GRAMMAR = "a {left} left of a {right}"
WORD_POSITIONS = (2, 6)      # token index of the left and of the right digit word
POS_TEXT_CONFIG = {**TEXT_ENCODER_CONFIG, "vocab_size": len(VOCAB)}
POS_UNET_CONFIG = {**UNET_CONFIG, "sample_size": LATENT[1:]}
DEFAULTS = dict(seed=0, pairs=20000, steps=1400, batch_size=64, lr=1e-3,
                cond_dropout=0.1, guidance=3.0, samples=100)


def prompt(left: int, right: int) -> str:
    """The prompt for digit ``left`` on the left and ``right`` on the right."""
    for d in (left, right):
        if not 0 <= int(d) <= 9:
            raise ValueError(f"a digit is 0…9; got {d}")
    return GRAMMAR.format(left=WORDS[int(left)], right=WORDS[int(right)])


def tokenize(prompts) -> torch.Tensor:
    """Prompts -> ids (B, M): [start, words…, end, pad…], the miniature's layout."""
    return tokenize_words(prompts, VOCAB, who="the positional miniature",
                          knows=f"sentences {GRAMMAR!r} with digits as words")


def detokenize(ids: torch.Tensor) -> str:
    """Token ids (M,) -> the prompt's words (specials dropped)."""
    return " ".join(VOCAB[int(i)] for i in ids if VOCAB[int(i)] not in SPECIALS)


def pair_dataset(n: int, *, seed: int = 0):
    """``n`` pair images (n, 1, 16, 32) in [−1, 1] drawn with ``seed`` from the 1,797
    real digits (two independent draws with replacement), their labels (n, 2) as
    (left, right) and their prompts."""
    if n < 1:
        raise ValueError(f"n must be positive; got {n}")
    images, labels = digits.load_digits(IMAGE_SIZE)
    g = torch.Generator().manual_seed(seed)
    i, j = torch.randint(len(images), (2, n), generator=g)
    pairs = torch.cat([images[i], images[j]], dim=-1)
    y = torch.stack([labels[i], labels[j]], dim=1)
    return pairs, y, [prompt(a, b) for a, b in y.tolist()]


def halves(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C, H, 2W) -> its left and right halves (N, C, H, W) each."""
    if images.shape[-1] % 2:
        raise ValueError(f"an even width is needed; got {tuple(images.shape)}")
    return images.chunk(2, dim=-1)


def load_vae():
    """The shipped miniature's VAE, frozen."""
    vae = sd15.load(WEIGHTS_DIR, components=("vae",), verbose=False).vae.eval()
    vae.requires_grad_(False)
    return vae


def vae_check(vae, *, n: int = 500, seed: int = 0) -> dict:
    """Mean |x − Dec(μ(x))| (pixels in [−1, 1]) on single 16×16 digits and on 16×32
    pairs, and on the pairs' four columns around the seam."""
    pairs, _, _ = pair_dataset(n, seed=seed)
    singles = torch.cat(halves(pairs))
    out = {}
    with torch.no_grad():
        for name, x in (("single_16x16", singles), ("pair_16x32", pairs)):
            z = vae.encode(x).latent_dist.mean
            error = (vae.decode(z).sample - x).abs().mean().item()
            out[name] = dict(latent_shape=list(z.shape[1:]), mean_abs_error=error)
        # the pairs' reconstruction seen half by half, to locate any seam effect
        z = vae.encode(pairs).latent_dist.mean
        rec = vae.decode(z).sample
        seam = (rec - pairs)[..., IMAGE_SIZE - 2:IMAGE_SIZE + 2].abs().mean().item()
    out["pair_seam_4_columns_mean_abs_error"] = seam
    return out


def latent_dataset(vae, pairs: torch.Tensor, prompts, *, seed: int):
    """One posterior sample per pair, scaled by the shipped VAE's scaling_factor."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        post = vae.encode(pairs).latent_dist
        eps = torch.randn(post.mean.shape, generator=g)
        z = diffusion.reparameterize(post.mean, post.std, eps)
        z = z * vae.config.scaling_factor
    return z, tokenize(prompts)


class CoordEpsHat(EpsHat):
    """ε̂ whose U-Net also reads two coordinate channels, x and y in [−1, 1]
    (CoordConv, Liu et al. 2018): a position signal SD-1.5's U-Net does not have, tried
    here as a way for the queries to know their half (``--coords``)."""

    def forward(self, z, t, ids):
        B, _, h, w = z.shape
        x = torch.linspace(-1, 1, w).expand(B, 1, h, w)
        y = torch.linspace(-1, 1, h)[:, None].expand(B, 1, h, w)
        return self.unet(torch.cat([z, x, y], 1), t,
                         encoder_hidden_states=self.context(ids)).sample


def _eps_class(unet):
    return CoordEpsHat if unet.config.in_channels == LATENT[0] + 2 else EpsHat


def train(latents, ids, *, seed: int, steps: int, batch_size: int, lr: float,
          cond_dropout: float, progress: bool, coords: bool = False):
    torch.manual_seed(seed)
    config = {**POS_UNET_CONFIG, "in_channels": LATENT[0] + (2 if coords else 0)}
    unet = UNet2DConditionModel(**config)
    eps_hat = _eps_class(unet)(unet, CLIPTextModel(CLIPTextConfig(**POS_TEXT_CONFIG)))
    losses = diffusion.train_noise_estimator(
        eps_hat, latents, ids, schedule=schedule(), steps=steps, batch_size=batch_size,
        lr=lr, seed=seed, cond_dropout=cond_dropout, null_cond=tokenize([""])[0],
        progress=progress)
    return eps_hat.eval(), losses


@dataclass
class Positional:
    """The trained positional miniature: its U-Net and text encoder, the shipped VAE."""
    unet: object
    text_encoder: object
    vae: object
    info: dict = field(default_factory=dict)


def load(folder: Path | str | None = None) -> Positional:
    folder = Path(folder) if folder is not None else POSITIONAL_DIR
    parts = sd15.load(folder, components=("unet", "text_encoder"), verbose=False)
    info_file = folder / "results.json"
    info = json.loads(info_file.read_text()) if info_file.is_file() else {}
    return Positional(parts.unet.eval(), parts.text_encoder.eval(), load_vae(), info)


def generate(model, prompts, *, guidance: float = 3.0, steps: int = 50, seed: int = 0):
    """Images (B, 1, 16, 32) in [−1, 1]: DDIM with SD-1.5's settings and classifier-free
    guidance in the 4×8×16 latent space, then the frozen VAE decoder."""
    ids = tokenize(prompts)
    eps = _eps_class(model.unet)(model.unet, model.text_encoder,
                                 reuse_context=True).eval()
    if guidance != 1.0:
        eps = diffusion.guided(eps, tokenize([""]), guidance)
    s = schedule()
    with torch.no_grad():
        z = diffusion.ddim_sample(eps, (len(ids), *LATENT), ids, schedule=s,
                                  num_steps=steps,
                                  generator=torch.Generator().manual_seed(seed),
                                  final_alpha_bar=s.alpha_bars[0].item(),
                                  steps_offset=1)
    return decode_latents(model, z) * 2 - 1


def judge_halves(judge, images: torch.Tensor, labels: torch.Tensor) -> dict:
    """The judge reads each 16×16 half: accuracy on the left, on the right, on both; and
    ``swapped``, the share drawn in the wrong order (left half reads the right digit and
    right half the left one, pairs of two equal digits excluded from the count)."""
    left, right = (judge.predict(h) for h in halves(images))
    ok_l, ok_r = left == labels[:, 0], right == labels[:, 1]
    swapped = ((left == labels[:, 1]) & (right == labels[:, 0])
               & (labels[:, 0] != labels[:, 1]))
    return dict(left=ok_l.float().mean().item(), right=ok_r.float().mean().item(),
                both=(ok_l & ok_r).float().mean().item(),
                swapped=swapped.float().mean().item())


def own_half_fraction(maps: torch.Tensor, half: str) -> torch.Tensor:
    """The fraction of each map's mass on its ``half`` ('left' or 'right').

    ``maps`` (..., H, W) are one token's softmax weights at each query pixel; the result
    (...) is Σ over the half's pixels / Σ over all pixels (0.5 for a uniform map).
    """
    if half not in ("left", "right"):
        raise ValueError(f"half is 'left' or 'right'; got {half!r}")
    if maps.dim() < 2 or maps.shape[-1] % 2:
        raise ValueError(f"maps (..., H, W) with an even W; got {tuple(maps.shape)}")
    if bool((maps < 0).any()):
        raise ValueError("attention weights are non-negative")
    w = maps.shape[-1] // 2
    part = maps[..., :w] if half == "left" else maps[..., w:]
    return part.sum((-2, -1)) / maps.sum((-2, -1))


def attention_record(model, prompt_text: str, *, guidance: float = 3.0, steps: int = 50,
                     seed: int = 0):
    """Generate once and record every cross-attention module's softmax weights.

    Returns (image (1, 16, 32), records): one entry per call of an ``attn2`` module, a
    dict with ``layer`` (its name) and ``probs`` (heads, M, h, w): the conditional half
    of the guided batch, each query pixel's weights over the M tokens (they sum to 1
    over the tokens).
    """
    modules = [(n, m) for n, m in model.unet.named_modules() if n.endswith("attn2")]
    originals = [(m, m.processor) for _, m in modules]
    records = []

    def recording(name, original):
        def get_attention_scores(query, key, attention_mask=None):
            probs = original(query, key, attention_mask)          # (B·heads, N, M)
            records.append((name, probs.detach()))
            return probs
        return get_attention_scores

    try:
        for name, m in modules:
            m.set_processor(AttnProcessor())                       # explicit softmax
            m.get_attention_scores = recording(name, m.get_attention_scores)
        image = generate(model, [prompt_text], guidance=guidance, steps=steps,
                         seed=seed)
    finally:
        for m, processor in originals:
            m.set_processor(processor)
            del m.get_attention_scores
    batch = 2 if guidance != 1.0 else 1
    out = []
    for name, probs in records:
        heads, n = probs.shape[0] // batch, probs.shape[1]
        h = int(round((n // 2) ** 0.5))                           # h × 2h query pixels
        cond = probs[-heads:]                                     # the prompt's half
        maps = cond.transpose(1, 2).reshape(heads, M, h, 2 * h)
        out.append(dict(layer=name, probs=maps))
    return image, out


def word_maps(records, *, size=LATENT[1:]) -> torch.Tensor:
    """Per-token maps (M, 8, 16): each record's maps averaged over heads, brought to the
    latent's full size (nearest), then averaged over layers and steps."""
    acc = [torch.nn.functional.interpolate(r["probs"].mean(0)[None], size=size,
                                           mode="nearest")[0] for r in records]
    return torch.stack(acc).mean(0)


def own_half_mass(records) -> dict:
    """The positional metric: for the left word, its mass on the left half; for the
    right word, on the right; per record and head (:func:`own_half_fraction`), then
    averaged over heads, layers and steps. Also per layer."""
    per_word = {}
    for key, pos, half in (("left_word", WORD_POSITIONS[0], "left"),
                           ("right_word", WORD_POSITIONS[1], "right")):
        values = [own_half_fraction(r["probs"][:, pos], half) for r in records]
        per_word[key] = torch.stack(values).mean().item()
        layers = dict.fromkeys(r["layer"] for r in records)
        per_word[key + "_per_layer"] = {
            name: torch.stack([v for r, v in zip(records, values)
                               if r["layer"] == name]).mean().item()
            for name in layers}
    per_word["mean"] = (per_word["left_word"] + per_word["right_word"]) / 2
    return per_word


def evaluate(model, *, guidance: float, samples: int, seed: int = 1234) -> dict:
    """Judged accuracy per position on ``samples`` fresh (left, right) pairs, and the
    attention metric averaged over 10 prompts (one generation each)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(10, (samples, 2), generator=g)
    prompts = [prompt(a, b) for a, b in labels.tolist()]
    images = generate(model, prompts, guidance=guidance, seed=seed)
    judge = digits.train_judge()
    masses = []
    for k in range(10):
        _, records = attention_record(model, prompt(k, (k + 3) % 10), guidance=guidance,
                                      seed=k)
        masses.append(own_half_mass(records))
    mass = {key: sum(m[key] for m in masses) / len(masses)
            for key in ("left_word", "right_word", "mean")}
    return dict(judge_accuracy_on_real=judge.accuracy, samples=samples,
                accuracy=judge_halves(judge, images, labels),
                own_half_mass=mass,
                own_half_mass_per_prompt=[m["mean"] for m in masses],
                own_half_mass_example=masses[0])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m sdanatomy.miniature.positional",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=POSITIONAL_DIR)
    for key, value in DEFAULTS.items():
        parser.add_argument("--" + key.replace("_", "-"), type=type(value),
                            default=value)
    parser.add_argument("--coords", action="store_true",
                        help="give the U-Net two coordinate channels (an experiment)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    vae = load_vae()
    pairs, labels, prompts = pair_dataset(args.pairs, seed=args.seed)
    latents, ids = latent_dataset(vae, pairs, prompts, seed=args.seed)
    eps_hat, losses = train(latents, ids, seed=args.seed, steps=args.steps,
                            batch_size=args.batch_size, lr=args.lr,
                            cond_dropout=args.cond_dropout,
                            progress=not args.no_progress, coords=args.coords)
    train_seconds = time.perf_counter() - start
    staging = args.out.with_name(args.out.name + ".partial")
    for name in ("unet", "text_encoder"):
        getattr(eps_hat, name).save_pretrained(staging / name, safe_serialization=True)
    model = load(staging)
    settings = {k: getattr(args, k) for k in (*DEFAULTS, "coords")}
    report = dict(settings=settings, grammar=GRAMMAR,
                  train_seconds=round(train_seconds, 1), torch=torch.__version__,
                  threads=torch.get_num_threads(),
                  vae=vae_check(vae), loss=[round(x, 4) for x in losses],
                  **evaluate(model, guidance=args.guidance, samples=args.samples))
    (staging / "results.json").write_text(json.dumps(report, indent=1))
    if args.out.exists():
        import shutil
        shutil.rmtree(args.out)
    staging.rename(args.out)
    acc, mass = report["accuracy"], report["own_half_mass"]
    print(f"trained in {train_seconds:.0f} s; judged left {acc['left']:.0%}, right "
          f"{acc['right']:.0%}, both {acc['both']:.0%}; mass on own half "
          f"{mass['mean']:.3f}")
    return report


if __name__ == "__main__":
    main()
