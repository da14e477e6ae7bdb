"""How close bf16 stays to float32 on the miniature (a report): chapter 8's 40 digits.

    python bench/miniature_bf16.py [--steps 50] [--rows 4] [--json PATH]

Generates "a handwritten zero" … "nine", ``rows`` seeds each, with ``text_to_image``
in float32 (``precision="float32"``) and in bf16 (``precision="bfloat16"``: U-Net and
VAE in bf16 with channels_last, z_t and the scheduler in float32), from a fresh
``miniature.load()`` each (the cast is in place). Prints the judge's conditional
accuracy (its reading equals the digit asked for) for both, and the maximum and mean
|bf16 − float32| over the pixels in [0, 1].
"""
from __future__ import annotations

import argparse
import json

import torch

from sdanatomy import miniature
from sdanatomy.miniature import digits
from sdanatomy.sd15.text_to_image import text_to_image


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    asked = torch.arange(10).repeat(args.rows)                      # (rows·10,)
    prompts = [miniature.prompt(int(d)) for d in asked]
    judge = digits.train_judge()
    images, result = {}, {"steps": args.steps, "images": len(prompts), "guidance": 3.0}
    for precision in ("float32", "bfloat16"):
        gen = text_to_image(miniature.load(), prompts, guidance=3.0, steps=args.steps,
                            seed=0, progress=False, precision=precision)
        images[precision] = gen.images
        read = judge.predict(gen.images * 2 - 1)              # the judge reads [−1, 1]
        result[f"accuracy_{precision}"] = (read == asked).float().mean().item()
    diff = (images["bfloat16"] - images["float32"]).abs()
    result.update(max_abs_pixel=diff.max().item(), mean_abs_pixel=diff.mean().item())
    print(f"judge's conditional accuracy: float32 {result['accuracy_float32']:.3f}, "
          f"bf16 {result['accuracy_bfloat16']:.3f} ({len(prompts)} images, "
          f"{args.steps} steps)")
    print(f"|bf16 − float32| over the pixels in [0, 1]: max "
          f"{result['max_abs_pixel']:.3f}, mean {result['mean_abs_pixel']:.4f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
