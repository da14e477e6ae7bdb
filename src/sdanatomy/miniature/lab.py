"""The miniature lab: what each architectural choice of SD-1.5 buys, by training.

``python -m sdanatomy.miniature.lab`` trains every variant of :mod:`.variants` for a few
seeds and writes ``lab_results/results.json``. Every run trains against the **shipped
VAE, frozen**: the same latent dataset (``train.latent_dataset`` of the shipped VAE,
seed 0), the same batch, learning rate and guidance dropout as ``train.py``, the same
step budget and seeds for every variant. Then the same sampler (DDIM, 50 steps,
guidance 3, as :func:`generate`) and the same independent judge score ``--per-digit``
fresh samples per digit. Seeds run in the outer loop, so a stopped lab has every variant
at the same number of seeds in ``results.json.partial``; only a finished lab replaces
``results.json``.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import time
from pathlib import Path

import torch

from sdanatomy.lecture import diffusion
from sdanatomy.lecture.receptive import measure_receptive_field
from sdanatomy.miniature import (IMAGE_SIZE, _ddim, _decode, digits, load, prompt,
                                 schedule, tokenize)
from sdanatomy.miniature.train import DEFAULTS, latent_dataset
from sdanatomy.miniature.variants import VARIANTS, build, count_parameters
from sdanatomy.sd15.receptive import frozen_groupnorm, without_attention

RESULTS_DIR = Path(__file__).parent / "lab_results"
LATENT = IMAGE_SIZE // 2          # 8: the latent's side
SAMPLES_KEPT = 2                  # per digit, of seed 0, stored for the page
CURVE_POINTS = 50                 # the loss curve, averaged into this many windows
STEPS = 200                       # U-Net steps per run (train.py: 1500): fits the hour
PER_DIGIT = 10                    # judged samples per digit (train.py: 20)


def shipped_latents():
    """The shipped miniature and the latent dataset of its frozen VAE, as train.py
    builds it."""
    model = load()
    images, labels = digits.load_digits(IMAGE_SIZE)
    latents, ids, _ = latent_dataset(model.vae, images, labels, seed=DEFAULTS["seed"])
    return model, latents, ids


def train_variant(name: str, latents, ids, *, seed: int, steps: int, progress=False):
    """Variant ``name`` trained by (6), train.py's settings; returns (ε̂, losses)."""
    eps_hat = build(name, seed=seed)
    losses = diffusion.train_noise_estimator(
        eps_hat, latents, ids, schedule=schedule(), steps=steps,
        batch_size=DEFAULTS["batch_size"], lr=DEFAULTS["unet_lr"], seed=seed,
        cond_dropout=DEFAULTS["cond_dropout"], null_cond=tokenize([""])[0],
        progress=progress)
    return eps_hat.eval(), losses


def sample(eps_hat, model, labels, *, guidance=DEFAULTS["guidance"], seed=1234,
           ddim_steps: int = 50):
    """Images (B, 1, 16, 16) in [−1, 1]: generate's sampler and decoder, this ε̂."""
    ids = tokenize([prompt(int(y)) for y in labels])
    with torch.no_grad():
        eps = diffusion.guided(eps_hat, tokenize([""]), guidance)
        return _decode(model, _ddim(eps, ids, steps=ddim_steps, seed=seed))


def judge_samples(eps_hat, model, judge, *, per_digit: int, ddim_steps: int = 50):
    labels = torch.arange(10).repeat_interleave(per_digit)
    images = sample(eps_hat, model, labels, ddim_steps=ddim_steps)
    scores = dict(conditional_accuracy=judge.conditional_accuracy(images, labels),
                  diversity=digits.diversity(images, labels))
    return images, labels, scores


def receptive_field(eps_hat, side: int, *, t: int = 500) -> list[int]:
    """(height, width) of the central output pixel's field on a side × side latent, by
    §7's autograd tool, attention removed and GroupNorm statistics frozen: the
    convolutions' field (with either on, every output pixel of every variant depends on
    the whole input)."""
    net = copy.deepcopy(eps_hat).double()
    ids = tokenize([prompt(7)])
    with contextlib.ExitStack() as stack:
        stack.enter_context(without_attention(net.unet))
        stack.enter_context(frozen_groupnorm(net.unet))
        field = measure_receptive_field(
            lambda z: net(z, torch.full((len(z),), t), ids.expand(len(z), -1)),
            (4, side, side), probes=1)
    return list(field.size)


def curve(losses: list[float], points: int = CURVE_POINTS) -> list[float]:
    """The losses averaged over ``points`` equal windows (the curve a page draws)."""
    chunks = torch.tensor(losses).tensor_split(min(points, len(losses)))
    return [round(c.mean().item(), 4) for c in chunks]


def run(variants=VARIANTS, seeds=(0, 1, 2), steps=STEPS, out=RESULTS_DIR,
        progress=True, per_digit: int = PER_DIGIT, ddim_steps: int = 50) -> dict:
    """Train, judge and measure every variant for every seed; write
    ``out/results.json``."""
    from tqdm.auto import tqdm

    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; "
                         f"the lab knows {', '.join(VARIANTS)}")
    start = time.perf_counter()
    model, latents, ids = shipped_latents()
    judge = digits.train_judge()
    settings = dict(steps=steps, seeds=list(seeds), batch_size=DEFAULTS["batch_size"],
                    lr=DEFAULTS["unet_lr"], cond_dropout=DEFAULTS["cond_dropout"],
                    guidance=DEFAULTS["guidance"], samples_per_digit=per_digit,
                    ddim_steps=ddim_steps, vae="shipped, frozen",
                    latent_dataset_seed=DEFAULTS["seed"])
    results = dict(settings=settings, torch=torch.__version__,
                   threads=torch.get_num_threads(),
                   judge_accuracy_on_real=judge.accuracy,
                   variants={})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    partial = out / "results.json.partial"
    bar = tqdm(total=len(seeds) * len(variants), desc="lab runs", disable=not progress)
    for seed in seeds:                     # seeds outside: a stopped lab stays balanced
        for name in variants:
            bar.set_postfix_str(f"{name}, seed {seed}")
            t0 = time.perf_counter()
            eps_hat, losses = train_variant(name, latents, ids, seed=seed, steps=steps)
            train_seconds = time.perf_counter() - t0
            images, labels, scores = judge_samples(eps_hat, model, judge,
                                                   per_digit=per_digit,
                                                   ddim_steps=ddim_steps)
            entry = results["variants"].setdefault(name, dict(
                unet_parameters=count_parameters(eps_hat.unet),
                text_encoder_parameters=count_parameters(eps_hat.text_encoder),
                receptive_field={str(LATENT): receptive_field(eps_hat, LATENT),
                                 "64": receptive_field(eps_hat, 64)},
                runs=[]))
            entry["runs"].append(dict(seed=seed, train_seconds=round(train_seconds, 1),
                                      loss_curve=curve(losses), **scores))
            if seed == seeds[0]:           # SAMPLES_KEPT per digit, 0…255 grey levels
                keep = torch.cat([torch.nonzero(labels == d).flatten()[:SAMPLES_KEPT]
                                  for d in range(10)])
                grey = ((images[keep, 0] + 1) * 127.5).round().clamp(0, 255)
                entry["samples"] = dict(labels=labels[keep].tolist(),
                                        images=grey.to(torch.uint8).tolist())
            results["wall_seconds"] = round(time.perf_counter() - start, 1)
            partial.write_text(json.dumps(results))
            bar.update()
    bar.close()
    partial.replace(out / "results.json")  # only a finished lab replaces the results
    return results


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m sdanatomy.miniature.lab",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=STEPS, help="U-Net steps per run")
    parser.add_argument("--per-digit", type=int, default=PER_DIGIT,
                        help="judged samples per digit")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS),
                        choices=VARIANTS)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be at least 1; got {args.steps}")
    if args.per_digit < 2:
        parser.error(f"--per-digit must be at least 2 (diversity compares pairs); "
                     f"got {args.per_digit}")
    results = run(args.variants, args.seeds, args.steps, args.out, not args.no_progress,
                  args.per_digit)
    print(f"lab done in {results['wall_seconds']:.0f} s; "
          f"results in {args.out / 'results.json'}")
    return results


if __name__ == "__main__":
    main()
