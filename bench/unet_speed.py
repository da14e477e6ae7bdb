"""Speed of the book's U-Net against diffusers', on the CPU in float32 (a script, not a test).

    python bench/unet_speed.py [--runs 5] [--json result.json]

Builds SD-1.5's U-Net with seeded random weights (seed 0, float32), feeds both functions the same
inputs — batch 1, a 4×64×64 latent, t = 500, a 1×77×768 context — warms each up once, then times
``runs`` calls of each, interleaved (diffusers, book, diffusers, book, …) so that a change in the
machine's load hits both alike. Prints the two medians, their ratio (book / diffusers: below 1 is
faster) and max|difference| of the outputs. Timings depend on the machine and its load: run it when
the machine is otherwise idle.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from sdanatomy import sd15
from sdanatomy.lecture import unet as lecture_unet


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed calls of each (default 5)")
    parser.add_argument("--json", metavar="PATH", help="also write the result as JSON to PATH")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be ≥ 1")

    unet = sd15.build_unet(weights="random", seed=0, device="cpu", dtype=torch.float32)
    theta = dict(unet.state_dict())
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1, 4, 64, 64, generator=g)
    t = torch.tensor([500])
    c = torch.randn(1, 77, 768, generator=g)

    def run_diffusers():
        return unet(z, t, encoder_hidden_states=c).sample

    def run_book():
        return lecture_unet.unet(theta, z, t, c)

    times = {"diffusers": [], "book": []}
    with torch.inference_mode():
        outputs = {"diffusers": run_diffusers(), "book": run_book()}          # warm-up
        for _ in range(args.runs):
            for name, fn in (("diffusers", run_diffusers), ("book", run_book)):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "diffusers_median_s": med["diffusers"], "book_median_s": med["book"],
        "ratio_book_over_diffusers": med["book"] / med["diffusers"],
        "max_abs_difference": (outputs["book"] - outputs["diffusers"]).abs().max().item(),
        "runs": args.runs, "times_s": times, "inputs": "batch 1, 4×64×64, t = 500, context 1×77×768, float32",
        "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
    }
    print(f"diffusers UNet2DConditionModel: median {med['diffusers']:.2f} s over {args.runs} runs")
    print(f"sdanatomy.lecture.unet.unet:     median {med['book']:.2f} s over {args.runs} runs")
    print(f"ratio book / diffusers: {result['ratio_book_over_diffusers']:.3f}   "
          f"max|difference|: {result['max_abs_difference']:.1e}   ({torch.get_num_threads()} threads)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
