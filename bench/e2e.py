"""One end-to-end text-to-image run in this process: time and peak memory (a report).

    python bench/e2e.py diffusers|book [--size 512] [--steps 20] [--guidance 7.5]
                        [--compile] [--json PATH]

bench/run.py starts one process per path, so that each path's peak resident memory
(VmHWM) is its own: tracemalloc does not see torch's allocations.

- ``diffusers``: diffusers' ``StableDiffusionPipeline`` as it runs by default on a CPU:
  float32, eager, its own loop (UNet2DConditionModel, the DDIM scheduler, the VAE
  decode), on SD-1.5's modules with the architecture-only weights of ``sd15.load()``
  (real weights where found: the time is the same).
- ``book``: the book's CPU path, ``text_to_image(sd, ..., precision="auto")`` on the
  same modules (bf16 with channels_last where the CPU computes bf16 natively, else
  float32); ``--compile`` adds ``torch.compile`` (its compilation is inside the time).

Both use DDIM, the same prompt, guidance, steps and starting noise; the time is the
generation alone (the prompt's encoding, the loop, the decode), after the modules load.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import torch

from sdanatomy import sd15
from sdanatomy.sd15 import tokenizer
from sdanatomy.sd15.text_to_image import make_scheduler, text_to_image

PATHS = ("diffusers", "book")
PROMPT = "an astronaut riding a horse"


def max_rss_bytes() -> int:
    """This process's peak resident memory: VmHWM of /proc/self/status (Linux). Not
    ru_maxrss, which Linux carries over from the parent through fork and exec (it would
    report bench/run.py's own peak); ru_maxrss (KiB) only where /proc is missing."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def diffusers_images(sd, *, size, steps, guidance, seed=0):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=sd.vae, text_encoder=sd.text_encoder, unet=sd.unet,
        tokenizer=tokenizer.clip_tokenizer(), scheduler=make_scheduler("ddim"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    g = torch.Generator().manual_seed(seed)
    z_T = torch.randn((1, 4, size // 8, size // 8), generator=g)     # (1, 4, H/8, W/8)
    return pipe(PROMPT, num_inference_steps=steps, guidance_scale=guidance, height=size,
                width=size, latents=z_T, output_type="pt").images


def book_images(sd, *, size, steps, guidance, seed=0, compile=False):
    gen = text_to_image(sd, PROMPT, height=size, width=size, steps=steps,
                        guidance=guidance, seed=seed, device="cpu", progress=False,
                        precision="auto", compile=compile)
    return gen.images, gen.settings["why_precision"]


def run(path: str, *, size: int, steps: int, guidance: float,
        compile: bool = False) -> dict:
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}; got {path!r}")
    start = time.perf_counter()
    sd = sd15.load(device="cpu", dtype=torch.float32, verbose=False)
    result = {"path": path, "size": size, "steps": steps, "guidance": guidance,
              "weights": sd.mode, "load_seconds": time.perf_counter() - start,
              "max_rss_after_load_bytes": max_rss_bytes(),
              "threads": torch.get_num_threads(), "compile": compile}
    start = time.perf_counter()
    with torch.inference_mode():
        if path == "diffusers":
            images = diffusers_images(sd, size=size, steps=steps, guidance=guidance)
            result["precision"] = "float32, eager (StableDiffusionPipeline)"
        else:
            images, why = book_images(sd, size=size, steps=steps, guidance=guidance,
                                      compile=compile)
            result["precision"] = why + (", torch.compile" if compile else "")
    result["seconds"] = time.perf_counter() - start
    result["max_rss_bytes"] = max_rss_bytes()
    result["image_shape"] = list(images.shape)
    result["pixel_mean"] = images.float().mean().item()
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", choices=PATHS)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--compile", action="store_true", help="book: torch.compile")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    r = run(args.path, size=args.size, steps=args.steps, guidance=args.guidance,
            compile=args.compile)
    print(f"[e2e] {r['path']}: {r['steps']} steps at {r['size']}² in "
          f"{r['seconds']:.1f} s, peak memory {r['max_rss_bytes'] / 2 ** 30:.2f} GiB "
          f"({r['precision']})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=2)
    return r


if __name__ == "__main__":
    main()
    sys.exit(0)
