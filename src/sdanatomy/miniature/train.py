"""Retrain the miniature Stable Diffusion from scratch: ``python -m sdanatomy.miniature.train``.

Three stages, each a function of ``sdanatomy.lecture.diffusion`` that knows nothing of the networks:
the VAE by the objective (12), the scaling of its latents, and the U-Net with its text encoder by
the noise-estimation loss (6) with classifier-free-guidance dropout. Then the independent judge
scores fresh samples. Deterministic for a given seed on a given machine; about 10 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from sdanatomy.miniature import digits
from sdanatomy.lecture import diffusion
from . import (IMAGE_SIZE, TEMPLATES, TEXT_ENCODER_CONFIG, UNET_CONFIG, VAE_CONFIG, WEIGHTS_DIR, EpsHat,
               generate, prompt, schedule, tokenize)
from sdanatomy.sd15.reference import (AutoencoderKL, UNet2DConditionModel, CLIPTextConfig, CLIPTextModel)

DEFAULTS = dict(seed=0, vae_steps=400, unet_steps=1500, batch_size=128, vae_lr=1e-3, unet_lr=1e-3,
                beta=1e-3, cond_dropout=0.1, guidance=3.0, samples_per_digit=20)


def train_vae_stage(images, *, seed, steps, batch_size, lr, beta, progress):

    torch.manual_seed(seed)
    vae = AutoencoderKL(**VAE_CONFIG)

    def encoder(X):          # (7)-(8): the posterior's mean and standard deviation
        posterior = vae.encode(X).latent_dist
        return posterior.mean, posterior.std

    def decoder(z):          # (11)
        return vae.decode(z).sample

    losses = diffusion.train_vae(encoder, decoder, images, parameters=vae.parameters(), steps=steps,
                               beta=beta, batch_size=batch_size, lr=lr, seed=seed, progress=progress)
    return vae.eval(), losses


def latent_dataset(vae, images, labels, *, seed):
    """One posterior sample of every image per prompt template, scaled to unit variance as SD does."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        posterior = vae.encode(images).latent_dist
        scaling_factor = 1.0 / posterior.mean.std().item()   # SD-1.5's 0.18215 was found the same way
        latents, ids = [], []
        for k in range(len(TEMPLATES)):
            eps = torch.randn(posterior.mean.shape, generator=g)
            latents.append(diffusion.reparameterize(posterior.mean, posterior.std, eps) * scaling_factor)
            ids.append(tokenize([prompt(int(y), k) for y in labels]))
    return torch.cat(latents), torch.cat(ids), scaling_factor


def train_unet_stage(latents, ids, *, seed, steps, batch_size, lr, cond_dropout, progress):

    torch.manual_seed(seed)
    eps_hat = EpsHat(UNet2DConditionModel(**UNET_CONFIG), CLIPTextModel(CLIPTextConfig(**TEXT_ENCODER_CONFIG)))
    losses = diffusion.train_noise_estimator(
        eps_hat, latents, ids, schedule=schedule(), steps=steps, batch_size=batch_size, lr=lr, seed=seed,
        cond_dropout=cond_dropout, null_cond=tokenize([""])[0], progress=progress)
    return eps_hat.eval(), losses


def evaluate(model, *, guidance, samples_per_digit, seed=1234):
    """Conditional accuracy and diversity of fresh samples, as judged by the independent classifier."""
    judge = digits.train_judge()
    labels = torch.arange(10).repeat_interleave(samples_per_digit)
    images = generate(model, [prompt(int(y)) for y in labels], guidance=guidance, seed=seed)
    return dict(judge_accuracy_on_real=judge.accuracy, guidance=guidance, samples=len(labels),
                conditional_accuracy=judge.conditional_accuracy(images, labels),
                diversity=digits.diversity(images, labels))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m sdanatomy.miniature.train", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="folder to write (default: the shipped weights)")
    for key, value in DEFAULTS.items():
        parser.add_argument("--" + key.replace("_", "-"), type=type(value), default=value)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    progress = not args.no_progress
    start = time.perf_counter()

    images, labels = digits.load_digits(IMAGE_SIZE)
    vae, vae_losses = train_vae_stage(images, seed=args.seed, steps=args.vae_steps, batch_size=args.batch_size,
                                      lr=args.vae_lr, beta=args.beta, progress=progress)
    latents, ids, scaling_factor = latent_dataset(vae, images, labels, seed=args.seed)
    vae.register_to_config(scaling_factor=scaling_factor)
    eps_hat, unet_losses = train_unet_stage(latents, ids, seed=args.seed, steps=args.unet_steps,
                                            batch_size=args.batch_size, lr=args.unet_lr,
                                            cond_dropout=args.cond_dropout, progress=progress)
    train_seconds = time.perf_counter() - start

    # Write to a fresh folder, then swap it in: a failed run leaves the old weights untouched.
    staging = args.out.with_name(args.out.name + ".partial")
    for name, module in (("vae", vae), ("unet", eps_hat.unet), ("text_encoder", eps_hat.text_encoder)):
        module.save_pretrained(staging / name, safe_serialization=True)
    from sdanatomy import sd15
    model = sd15.load(staging, verbose=False)
    report = dict(settings={k: getattr(args, k) for k in DEFAULTS}, scaling_factor=scaling_factor,
                  train_seconds=round(train_seconds, 1), torch=torch.__version__,
                  vae_loss=[round(x, 4) for x in vae_losses], unet_loss=[round(x, 4) for x in unet_losses],
                  **evaluate(model, guidance=args.guidance, samples_per_digit=args.samples_per_digit))
    (staging / "training.json").write_text(json.dumps(report, indent=1))
    if args.out.exists():
        import shutil
        shutil.rmtree(args.out)
    staging.rename(args.out)
    print(f"trained in {train_seconds:.0f} s; conditional accuracy {report['conditional_accuracy']:.1%} "
          f"(judge on real digits {report['judge_accuracy_on_real']:.1%}), diversity {report['diversity']:.2f}; "
          f"weights in {args.out}")
    return report


if __name__ == "__main__":
    main()
