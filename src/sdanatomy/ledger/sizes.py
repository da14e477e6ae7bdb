"""Variable sizes, lecture §4 and §5: one Θ, any H×W; the channel count fixed at the interface.

* :func:`stack` — a small stack of the layers of §6 (Conv2d, GroupNorm, SiLU, Downsample2D,
  Upsample2D, Conv2d), and :func:`stack_predicted_size`, the size the formulas of §6 predict;
* :func:`sd15_sizes` — the feature-map sizes inside SD-1.5's own U-Net and VAE decoder for any
  latent size, measured on the meta device (shapes only, no arithmetic, no weights);
* §5.3: what SD-1.5's U-Net predicts (ε, read off its scheduler's configuration and its step);
* §5.5: translation equivariance, on SD-1.5's U-Net at narrow widths with circular padding:
  shifts by multiples of 2³ commute with it, others do not.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import math

import torch
import torch.nn.functional as F

from sdanatomy.ledger.diffusion import F64_RULE, _in_float64
from sdanatomy.ledger.registry import Route, row
from sdanatomy.lecture.blocks import TORCH
from sdanatomy.lecture.config import SCHEDULER_CONFIG
from sdanatomy.lecture.diffusion import Schedule, ddim_step
from sdanatomy.lecture.layers import (EPS_UNET, conv2d, conv_output_size, downsample_2d, group_norm, silu, sub,
                     upsample_2d)
from sdanatomy.lecture.unet import unet
from sdanatomy.sd15.reference import (NARROW_UNET_CONFIG, DDIMScheduler, Downsample2D,
                                      PNDMScheduler, Upsample2D, meta, narrow_unet)

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


# --- §5.3: what SD-1.5's U-Net predicts --------------------------------------------------------

PREDICTION_SCHEDULERS = {"DDIMScheduler": DDIMScheduler, "PNDMScheduler": PNDMScheduler}


@row("(6) SD-1.5's U-Net predicts ε: prediction_type 'epsilon'", section="5.3",
     formula=r"\hat x_0 = \bigl(x_t - \sqrt{1-\bar\alpha_t}\,\hat\epsilon_\theta(x_t, t)\bigr)"
             r"/\sqrt{\bar\alpha_t}",
     reference="DDIMScheduler and PNDMScheduler .from_config(SD-1.5's scheduler_config.json): "
               "prediction_type; DDIMScheduler.step's pred_original_sample and prev_sample "
               "(η = 0, same float64 β) at 3 of its 50 steps",
     tol=1e-12, why_tol=F64_RULE,
     error="max |diff| / max |diffusers| over x̂₀ and x_{t'}; ∞ if a scheduler resolves "
           "prediction_type to anything but 'epsilon'")
def _row_predicts_epsilon(seed=0, dtype=torch.float64):
    # SD-1.5's scheduler_config.json has no prediction_type: from_config fills in the default.
    for cls in PREDICTION_SCHEDULERS.values():
        if cls.from_config(SCHEDULER_CONFIG).config.prediction_type != "epsilon":
            return math.inf
    ours = Schedule.scaled_linear()
    theirs = _in_float64(DDIMScheduler.from_config(SCHEDULER_CONFIG), ours)
    theirs.set_timesteps(50)
    g = torch.Generator().manual_seed(seed)
    worst = 0.0
    for t in (int(theirs.timesteps[0]), int(theirs.timesteps[25]), int(theirs.timesteps[-1])):
        x, eps = (torch.randn(1, 4, 8, 8, generator=g, dtype=dtype) for _ in range(2))
        out = theirs.step(eps, t, x, eta=0.0)
        # the output read as ε̂: x̂₀ (a step to ᾱ = 1 lands on it), then the DDIM step itself
        x0_hat = ddim_step(ours, eps, t, -1, x, final_alpha_bar=1.0)
        x_prev = ddim_step(ours, eps, t, t - 1000 // 50, x,
                           final_alpha_bar=ours.alpha_bars[0].item())   # set_alpha_to_one=False
        for mine, ref in ((x0_hat, out.pred_original_sample), (x_prev, out.prev_sample)):
            worst = max(worst, ((mine - ref).abs().max() / ref.abs().max()).item())
    return worst


# --- §5.5: translation equivariance, measured on SD-1.5's U-Net ---------------------------------

def _circular(theta, X, *, stride=1, padding=0):
    """Conv2d (14) with circular padding: the map wraps around, so no pixel sits at a border."""
    if padding:
        X = F.pad(X, (padding,) * 4, mode="circular")
    return F.conv2d(X, theta["weight"], theta.get("bias"), stride=stride)


def _circular_downsample(theta, X, *, padding=1):
    return _circular(sub(theta, "conv"), X, stride=2, padding=padding)


def _circular_upsample(theta, X, *, padding=1, output_size=None):
    size = dict(scale_factor=2.0) if output_size is None else dict(size=tuple(output_size))
    return _circular(sub(theta, "conv"), F.interpolate(X, mode="nearest", **size), padding=padding)


# lecture.unet with torch's kernels, every padded convolution circular (the 1×1 ones have none)
CIRCULAR = dataclasses.replace(TORCH, name="torch, circular padding", conv2d=_circular,
                               downsample_2d=_circular_downsample, upsample_2d=_circular_upsample)
LATENT = (16, 16)                           # H × W: multiples of 2³, a 2 × 2 bottleneck
SHIFTS_OF_8 = ((8, 0), (0, 8), (8, 8))      # (rows, columns): multiples of 2³ = 8
OTHER_SHIFTS = ((1, 1), (2, 2), (4, 4))     # not multiples of 8
EQUIVARIANCE = "UNet2DConditionModel, SD-1.5's config at widths (32, 64, 64, 64)"


@functools.lru_cache(maxsize=2)
def _circular_unet(seed: int, dtype) -> torch.nn.Module:
    """diffusers' narrow U-Net (seeded) with every padded Conv2d switched to circular padding."""
    u = copy.deepcopy(narrow_unet(seed, dtype))
    for m in u.modules():
        if isinstance(m, torch.nn.Conv2d) and m.padding != (0, 0):
            m.padding_mode = "circular"
    return u


def _shifted_batch(seed, dtype, shifts):
    """z and its rolls by each shift, one batch; the same t and text context for each."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(1, 4, *LATENT, generator=g, dtype=dtype)
    context = torch.randn(1, 7, 768, generator=g, dtype=dtype).expand(1 + len(shifts), -1, -1)
    Z = torch.cat([z] + [z.roll(s, dims=(2, 3)) for s in shifts])
    return Z, torch.full((len(Z),), 500.0), context


def _equivariance_gaps(out: torch.Tensor, shifts) -> torch.Tensor:
    """(UNet(roll_s z) − roll_s UNet(z)) / max |UNet(z)|, one row per shift."""
    # (torch.cat, not torch.stack: ledger.functions() would follow this module's own `stack`)
    gaps = torch.cat([out[1 + i] - out[0].roll(s, dims=(1, 2)) for i, s in enumerate(shifts)])
    return gaps.unflatten(0, (len(shifts), -1)) / out[0].abs().max()


@functools.lru_cache(maxsize=8)
def _diffusers_gaps(seed: int, dtype, shifts) -> torch.Tensor:
    Z, t, context = _shifted_batch(seed, dtype, shifts)
    with torch.no_grad():
        out = _circular_unet(seed, dtype)(Z, t, encoder_hidden_states=context).sample
    return _equivariance_gaps(out, shifts)


def _book_gaps(seed, dtype, shifts) -> torch.Tensor:
    u = _circular_unet(seed, dtype)
    theta = {k: v.detach() for k, v in u.state_dict().items()}
    Z, t, context = _shifted_batch(seed, dtype, shifts)
    out = unet(theta, Z, t, context, config=NARROW_UNET_CONFIG, ops=CIRCULAR)
    return _equivariance_gaps(out, shifts)


def _worst(gaps: torch.Tensor) -> torch.Tensor:
    return gaps.flatten(1).abs().max(dim=1).values          # one number per shift


EQUIVARIANT = "§5.5 the U-Net commutes with shifts by multiples of 8 (circular padding)"
F64_EQUIVARIANCE = ("float64: the shifted input is summed in another order only inside GroupNorm's "
                    "statistics and attention's softmax sums (≤ 768 terms), ~30 layers deep: "
                    "≲ 1e-14 relative; observed ≈ 4e-15")


@row(EQUIVARIANT, section="5.5",
     formula=r"\mathrm{UNet}(\mathrm{roll}_s Z) = \mathrm{roll}_s \mathrm{UNet}(Z),\ "
             r"s \in 8\mathbb Z^2",
     reference=f"diffusers {EQUIVARIANCE}, every padded Conv2d circular, and lecture.unet "
               f"with the same circular padding; latent 4×16×16, "
               f"s ∈ {{{', '.join(map(str, SHIFTS_OF_8))}}}",
     tol=1e-12, why_tol=F64_EQUIVARIANCE,
     error="max |UNet(roll_s Z) − roll_s UNet(Z)| / max |UNet(Z)| over the shifts, both routes")
def _row_equivariant(seed=0, dtype=torch.float64):
    return max(_worst(_diffusers_gaps(seed, dtype, SHIFTS_OF_8)).max().item(),
               _worst(_book_gaps(seed, dtype, SHIFTS_OF_8)).max().item())


def _route_equivariance_printed(seed=0, dtype=torch.float64):
    return _book_gaps(seed, dtype, OTHER_SHIFTS), _diffusers_gaps(seed, dtype, OTHER_SHIFTS)


@row("§5.5 every layer translation-equivariant, as printed: any shift", section="5.5",
     formula=r"\mathrm{UNet}(\mathrm{roll}_s Z) = \mathrm{roll}_s \mathrm{UNet}(Z)\ "
             r"\text{for every } s",
     reference=f"diffusers {EQUIVARIANCE}, every padded Conv2d circular; latent 4×16×16, "
               f"s ∈ {{{', '.join(map(str, OTHER_SHIFTS))}}}",
     tol=1e-12, why_tol=F64_EQUIVARIANCE,
     error="the smallest, over the shifts, of max |UNet(roll_s Z) − roll_s UNet(Z)| / "
           "max |UNet(Z)|: every shift breaks it",
     verdict="differs", corrected_by=EQUIVARIANT,
     note="Each convolution commutes with shifts, but a stride-2 Downsample2D only with even "
          "ones: SD-1.5's U-Net, with its three downsamplers, commutes only with shifts by "
          "multiples of 2³ = 8, and exactly so only with circular padding: SD-1.5 pads with "
          "zeros, which breaks it near the borders. GroupNorm and attention are not "
          "convolutions: they mix all positions, and commute with every permutation of them.",
     route=Route(_route_equivariance_printed,
                 how="the same gaps computed by the book's lecture.unet (torch's kernels, "
                     "every padded convolution circular) on diffusers' Θ",
                 atol=1e-12, rtol=0.0,
                 why="float64: two implementations of the same network, ≈ 5e-15 of "
                     "max |UNet(Z)| apart (the (85)–(91) rows)"))
def _row_equivariant_printed(seed=0, dtype=torch.float64):
    return _worst(_diffusers_gaps(seed, dtype, OTHER_SHIFTS)).min().item()
