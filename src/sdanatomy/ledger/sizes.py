"""Variable sizes, lecture §4 and Remark 5.2: one Θ, any H×W; the channel count fixed at the interface.

* :func:`stack` — a small stack of the layers of §6 (Conv2d, GroupNorm, SiLU, Downsample2D,
  Upsample2D, Conv2d), and :func:`stack_predicted_size`, the size the formulas of §6 predict;
* :func:`sd15_sizes` — the feature-map sizes inside SD-1.5's own U-Net and VAE decoder for any
  latent size, measured on the meta device (shapes only, no arithmetic, no weights).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from sdanatomy.ledger.registry import row
from sdanatomy.lecture.layers import (EPS_UNET, conv2d, conv_output_size, downsample_2d, group_norm, silu, sub,
                     upsample_2d)
from sdanatomy.sd15.reference import meta, Downsample2D, Upsample2D

STACK_SIZES = ((8, 8), (16, 24), (12, 20), (9, 13))


def stack(theta: dict, X: torch.Tensor, *, output_size=None) -> torch.Tensor:
    """conv_in → GroupNorm → SiLU → Downsample2D → Upsample2D → conv_out, from sdanatomy.lecture.layers.

    Θ: the state_dicts of :func:`stack_modules` under their names. X: (B, 4, H, W) -> (B, 4, H'', W'')
    with H'' = 2⌈H/2⌉, or ``output_size`` when given (as diffusers' U-Net forwards it for odd sizes).
    """
    U = conv2d(sub(theta, "conv_in"), X, padding=1)                  # (B, C, H, W)
    U = silu(group_norm(sub(theta, "norm"), U, groups=32, eps=EPS_UNET))
    U = downsample_2d(sub(theta, "down"), U)                         # (B, C, ⌈H/2⌉, ⌈W/2⌉)
    U = upsample_2d(sub(theta, "up"), U, output_size=output_size)    # (B, C, 2⌈H/2⌉, 2⌈W/2⌉)
    return conv2d(sub(theta, "conv_out"), U, padding=1)              # (B, 4, …): C = 4 again


def stack_modules(seed: int = 0, dtype=torch.float64, C: int = 64) -> dict:
    """The same stack as torch and diffusers modules, seeded: the reference for :func:`stack`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mods = dict(conv_in=torch.nn.Conv2d(4, C, 3, padding=1), norm=torch.nn.GroupNorm(32, C, eps=EPS_UNET),
                    down=Downsample2D(C, use_conv=True, padding=1, name="op"), up=Upsample2D(C, use_conv=True),
                    conv_out=torch.nn.Conv2d(C, 4, 3, padding=1))
    return {k: m.to(dtype).eval() for k, m in mods.items()}


def stack_theta(modules: dict) -> dict:
    """Θ of the whole stack: each module's state_dict under its name."""
    return {f"{name}.{k}": v.detach() for name, m in modules.items() for k, v in m.state_dict().items()}


def stack_predicted_size(H: int) -> int:
    """What the formulas predict: Conv2d (k3, s1, p1) keeps H, (20) gives ⌊(H−3+2)/2⌋+1, (24) doubles."""
    return 2 * conv_output_size(conv_output_size(H, 3, 1, 1), 3, 2, 1)


@row("§4 one conv stack at many H×W, C fixed", section="4",
            formula=r"H \mapsto 2\lceil H/2 \rceil \text{ for any } H;\ C: 4 \to 4",
            reference="the same stack of torch Conv2d/GroupNorm/SiLU and diffusers Downsample2D/Upsample2D, "
                      f"H×W ∈ {{{', '.join(f'{h}×{w}' for h, w in STACK_SIZES)}}}", tol=1e-12,
            why_tol="float64: five layers of ≤ 577-term sums, each ≤ 2·577·2⁻⁵³ ≈ 1.3e-13 relative",
            error="max |err| / max |ref|; ∞ if a shape is not the predicted one")
def _row_stack(seed=0, dtype=torch.float64):
    mods = stack_modules(seed, dtype)
    theta = stack_theta(mods)
    err = 0.0
    with torch.no_grad():
        for H, W in STACK_SIZES:
            X = torch.randn(1, 4, H, W, generator=torch.Generator().manual_seed(seed), dtype=dtype)
            ref = mods["conv_out"](mods["up"](mods["down"](F.silu(mods["norm"](mods["conv_in"](X))))))
            Y = stack(theta, X)
            if Y.shape != ref.shape or Y.shape != (1, 4, stack_predicted_size(H), stack_predicted_size(W)):
                return math.inf
            err = max(err, ((Y - ref).abs().max() / ref.abs().max()).item())
    return err


def sd15_sizes(H: int, W: int) -> dict[str, tuple[int, ...]]:
    """Shapes inside SD-1.5's U-Net and VAE decoder for a latent 4×H×W, on the meta device.

    Keys: "unet.<stage>" for conv_in, each down block, the mid block, each up block and the output;
    "vae.decode" for the image. Uses the diffusers modules built from SD-1.5's configs.
    """
    unet, vae = meta("unet"), meta("vae")
    shapes, hooks = {}, []
    stages = [("conv_in", unet.conv_in)] + [(f"down_blocks.{i}", b) for i, b in enumerate(unet.down_blocks)] \
        + [("mid_block", unet.mid_block)] + [(f"up_blocks.{i}", b) for i, b in enumerate(unet.up_blocks)]
    for name, module in stages:
        def record(_, __, out, name=name):
            out = out[0] if isinstance(out, tuple) else out
            shapes[f"unet.{name}"] = tuple(out.shape[1:])
        hooks.append(module.register_forward_hook(record))
    z = torch.empty(1, 4, H, W, device="meta")
    try:
        with torch.no_grad():
            shapes["unet.output"] = tuple(unet(z, torch.tensor([500], device="meta"),
                                               torch.empty(1, 77, 768, device="meta")).sample.shape[1:])
            shapes["vae.decode"] = tuple(vae.decode(z).sample.shape[1:])
    finally:
        for h in hooks:
            h.remove()
    return shapes
