"""Ledger rows of lecture §8.1: the whole U-Net, Def. 8.1 (84)–(91), against diffusers.

The reference is diffusers' ``UNet2DConditionModel`` built from SD-1.5's configuration at narrow
widths (``sd15.reference.narrow_unet``: every field SD-1.5's but block_out_channels =
(32, 64, 64, 64); the classes are width-agnostic), seeded, in float64, so that each row runs in
well under a second. The full SD-1.5 U-Net at three latent sizes, float32, is tested in
tests/test_models.py. Where Def. 8.1 as printed cannot consume SD-1.5's Θ, the rows count what
does not fit, read off diffusers' modules or measured by hooks while they run.
"""
from __future__ import annotations

import math

import torch

from sdanatomy.ledger.registry import Route, row
from sdanatomy.lecture.blocks import BOOK, TORCH
from sdanatomy.lecture.config import UNET_CONFIG
from sdanatomy.ledger.blocks import (COUNT, F64_BLOCK, REL, ROUTE_BLOCK, TOL_BLOCK, _count_route, _rel,
                                     _randn, _theta)
from sdanatomy.lecture.layers import EPS_UNET, conv1x1, rgb_head
from sdanatomy.lecture.unet import theta_shapes, time_features, unet
from sdanatomy.sd15.reference import meta, sd15_module, narrow_unet, NARROW_UNET_CONFIG, Timesteps

SECTION = "8.1"
UNET = "(85)–(91) UNet2DConditionModel"
NARROW = "diffusers UNet2DConditionModel, SD-1.5's config at widths (32, 64, 64, 64)"
SIZES = ((16, 8), (9, 6))   # non-square; 9×6 is no multiple of 8: diffusers' upsample_size path.
# (At these widths a GroupNorm group is one channel and torch needs 2 values per group: the mid
# block, at ⌈H/8⌉×⌈W/8⌉, needs ≥ 2 pixels. SD-1.5's own widths run down to 1×1.)


def _unet_case(seed, dtype, H, W, M=7):
    u = narrow_unet(seed, dtype)
    z = _randn(seed, dtype, 2, 4, H, W)
    t = torch.tensor([3.0, 977.0])
    C = _randn(seed + 1, dtype, 2, M, 768)
    return u, z, t, C


@row(UNET, section=SECTION,
            formula=r"\mathrm{Conv}_{3\times3}(\mathrm{SiLU}(\mathrm{GN}(\mathrm{Up}(\mathrm{Mid}(\mathrm{Down}(\mathrm{Conv_{in}}(Z)))))))",
            reference=NARROW + "; 2 latents of 16×8 and of 9×6, t = 3 and 977, M = 7", tol=TOL_BLOCK,
            why_tol=F64_BLOCK, error=REL)
def _row_unet(seed=0, dtype=torch.float64):
    err = 0.0
    for H, W in SIZES:
        u, z, t, C = _unet_case(seed, dtype, H, W)
        with torch.no_grad():
            ref = u(z, t, encoder_hidden_states=C).sample
        err = max(err, _rel(unet(_theta(u), z, t, C, config=NARROW_UNET_CONFIG, ops=BOOK), ref))
    return err


@row("(85)–(91) UNet2DConditionModel, fast path: torch's kernels", section=SECTION,
            formula=r"\mathrm{unet}_{\mathrm{TORCH}} = \mathrm{UNet2DConditionModel}",
            reference=NARROW + "; lecture.unet.unet with ops=TORCH (F.conv2d, F.group_norm, "
                      "F.scaled_dot_product_attention, …); 2 latents of 16×8 and of 9×6",
            tol=TOL_BLOCK, why_tol=F64_BLOCK, error=REL)
def _row_fast(seed=0, dtype=torch.float64):
    err = 0.0
    for H, W in SIZES:
        u, z, t, C = _unet_case(seed, dtype, H, W)
        with torch.no_grad():
            ref = u(z, t, encoder_hidden_states=C).sample
        err = max(err, _rel(unet(_theta(u), z, t, C, config=NARROW_UNET_CONFIG, ops=TORCH), ref))
    return err


@row("(28) in the U-Net: e(t) in float32, as diffusers", section=SECTION,
            formula=r"[\cos\omega_r t,\ \sin\omega_r t],\ \omega_r = e^{-(r-1)\ln 10^4/160}",
            reference="diffusers Timesteps(320, flip_sin_to_cos=True, downscale_freq_shift=0), t = 0, …, 999",
            tol=0, why_tol="the same float32 operations in the same order: bit for bit",
            error="max abs")
def _row_time_features(seed=0, dtype=torch.float64):
    t = torch.arange(1000)
    return (time_features(t, R=160) - Timesteps(320, True, 0)(t)).abs().max().item()


# --- where Def. 8.1 as printed does not fit SD-1.5 -----------------------------------------

def _conv_in_gap(config) -> int:
    return theta_shapes(config)["down_blocks.0.resnets.0.norm1.weight"][0] - config["in_channels"]


def _levels_with_downsampler(config) -> int:
    shapes = theta_shapes(config)
    return sum(f"down_blocks.{i}.downsamplers.0.conv.weight" in shapes
               for i in range(len(config["down_block_types"])))


def _skips_in_config(config) -> int:
    """The skip states SD-1.5 keeps, from the book's Θ shapes: conv_in's output, every resnet of
    the down path and every downsampler."""
    shapes = theta_shapes(config)
    return 1 + sum(k.startswith("down_blocks.") and ((".resnets." in k and k.endswith(".norm1.weight"))
                                                      or k.endswith("downsamplers.0.conv.weight"))
                   for k in shapes)


def _up_blocks_in_config(config) -> int:
    return len({k.split(".")[1] for k in theta_shapes(config) if k.startswith("up_blocks.")})


@row("(85) D₀ = Z, as printed: no conv_in", section=SECTION, formula=r"\underline{D}_0 = \underline{Z}",
            reference="SD-1.5's U-Net (diffusers, meta): conv_in and down_blocks[0].resnets[0]", tol=0,
            why_tol=COUNT, error="channels the first down block's Θ reads − channels of Z (320 − 4)",
            verdict="differs", corrected_by=UNET,
            note="SD-1.5 first maps Z ∈ R^(4×H×W) to 320 channels with conv_in, a 3×3 Conv2d (11,840 parameters "
                 "Θ_U (84) does not list); the first ResnetBlock2D's Θ (norm1, conv1) is for 320 channels, so "
                 "(86) cannot run on D₀ = Z.",
     checks=("sdanatomy.lecture.unet.unet_printed",),
     route=_count_route("the same gap from the book's Θ shapes of SD-1.5's config "
                        "(lecture.unet.theta_shapes): C_in of down_blocks.0.resnets.0 − C of Z",
                        lambda seed=0, dtype=torch.float64: (_row_conv_in(seed, dtype),
                                                             float(_conv_in_gap(UNET_CONFIG)))))
def _row_conv_in(seed=0, dtype=torch.float64):
    u = meta("unet")
    return float(u.down_blocks[0].resnets[0].in_channels - u.conv_in.in_channels)


def _mid_input_size(seed, dtype, H, W):
    """H×W at which diffusers' mid block runs (a forward pre-hook), for a latent of H×W."""
    u, z, t, C = _unet_case(seed, dtype, H, W)
    seen = []
    hook = u.mid_block.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape[-2:])))
    try:
        with torch.no_grad():
            u(z, t, encoder_hidden_states=C)
    finally:
        hook.remove()
    return seen[0]


@row("(86) every level downsamples, as printed", section=SECTION,
            formula=r"\underline{D}_\ell = \mathrm{(X)DownBlock2D}(\underline{D}_{\ell-1}),\ \ell = 1..L",
            reference=NARROW + ", 16×8 latent: the size its mid block sees (hook)", tol=0, why_tol=COUNT,
            error="log₂(H / H_mid): printed L = 4 − diffusers'",
            verdict="differs", corrected_by=UNET,
            note="(59)/(73) end every level with Downsample2D, so (86)–(87) reach the mid block at H/2⁴. SD-1.5's "
                 "last level has no downsampler: three halvings, the mid block runs at ⌈H/8⌉×⌈W/8⌉ (8×8 for a 64×64 "
                 "latent), the factor 8 that §5.5 and the VAE's 8× use.",
     checks=("sdanatomy.lecture.unet.unet_printed",),
     route=_count_route("the same difference from the book's Θ shapes of the config "
                        "(lecture.unet.theta_shapes): L − the levels with downsamplers.0",
                        lambda seed=0, dtype=torch.float64: (
                            _row_levels(seed, dtype),
                            float(len(NARROW_UNET_CONFIG["block_out_channels"])
                                  - _levels_with_downsampler(NARROW_UNET_CONFIG)))))
def _row_levels(seed=0, dtype=torch.float64):
    H_mid, _ = _mid_input_size(seed, dtype, 16, 8)
    L = len(NARROW_UNET_CONFIG["block_out_channels"])
    return float(L - math.log2(16 / H_mid))


@row("(86)–(89) one skip per level, as printed", section=SECTION,
            formula=r"\underline{U}_{\ell-1} = \mathrm{(X)UpBlock2D}(\underline{U}_\ell,"
                    r" \underline{D}_{\ell-1}, \ldots)",
            reference=NARROW + ": the skip states its up blocks receive (hooks)", tol=0, why_tol=COUNT,
            error="skip tensors: diffusers' − printed (D_L, …, D_0: L + 1 = 5)",
            verdict="differs", corrected_by=UNET,
            note="SD-1.5 keeps 12 skip states: conv_in's output, every resnet/transformer output of the down path "
                 "(2 per level) and every downsampled map (3); each up level pops 3, one before each of its "
                 "resnets. The print passes one D_ℓ per level, D_L … D_0 with D_0 = Z (4 channels) among them.",
     checks=("sdanatomy.lecture.unet.unet_printed",),
     route=_count_route("the same difference from the book's Θ shapes of the config "
                        "(lecture.unet.theta_shapes): 1 + resnets + downsamplers of the down path, "
                        "− (L + 1)",
                        lambda seed=0, dtype=torch.float64: (
                            _row_skips(seed, dtype),
                            float(_skips_in_config(NARROW_UNET_CONFIG)
                                  - len(NARROW_UNET_CONFIG["block_out_channels"]) - 1))))
def _row_skips(seed=0, dtype=torch.float64):
    u, z, t, C = _unet_case(seed, dtype, 16, 8)
    counts = []
    hooks = [b.register_forward_pre_hook(lambda m, args, kw: counts.append(len(kw["res_hidden_states_tuple"])),
                                         with_kwargs=True) for b in u.up_blocks]
    try:
        with torch.no_grad():
            u(z, t, encoder_hidden_states=C)
    finally:
        for hk in hooks:
            hk.remove()
    L = len(NARROW_UNET_CONFIG["block_out_channels"])
    return float(sum(counts) - (L + 1))


@row("(88)–(89) L + 1 up blocks, as printed", section=SECTION,
            formula=r"\underline{U}_L = \mathrm{UpBlock2D}_{\Theta^\uparrow_L}(\underline{B}, \underline{D}_L),\ "
                    r"\underline{U}_{\ell-1} = \ldots_{\Theta^\uparrow_{\ell-1}},\ \ell = L..1",
            reference="SD-1.5's U-Net (diffusers, meta): its up blocks", tol=0, why_tol=COUNT,
            error="up-block applications printed (L + 1) − up blocks in Θ",
            verdict="differs", corrected_by=UNET,
            note="(88) applies one up block and (89) L more, with Θ^↑_{L−1} … Θ^↑_0, where (84) has Θ^↑_1 … Θ^↑_L. "
                 "(88) also concatenates Upsample2D(B), at twice B's size, with D_L, at B's size (60). SD-1.5 has "
                 "L = 4 up blocks; the first concatenates at the mid block's size and upsamples at its end.",
     checks=("sdanatomy.lecture.unet.unet_printed",),
     route=_count_route("the same difference from the book's Θ shapes of SD-1.5's config "
                        "(lecture.unet.theta_shapes): L + 1 − the up_blocks it holds",
                        lambda seed=0, dtype=torch.float64: (
                            _row_up_count(seed, dtype),
                            float(len(UNET_CONFIG["down_block_types"]) + 1
                                  - _up_blocks_in_config(UNET_CONFIG)))))
def _row_up_count(seed=0, dtype=torch.float64):
    u = meta("unet")
    return float(len(u.down_blocks) + 1 - len(u.up_blocks))


HEAD = "(90) output head GroupNorm → SiLU → Conv3×3"
HEAD_REF = "SD-1.5's conv_norm_out (G = 32, ε = 1e-5), SiLU, conv_out (3×3, 320 → 4), diffusers modules"


def _head_case(seed, dtype):
    gn = sd15_module("unet.conv_norm_out", seed=seed, dtype=dtype)
    conv = sd15_module("unet.conv_out", seed=seed, dtype=dtype)
    U0 = _randn(seed, dtype, 2, 320, 9, 7)
    with torch.no_grad():
        ref = conv(torch.nn.functional.silu(gn(U0)))
    theta = ({f"conv_norm_out.{k}": v for k, v in _theta(gn).items()}
             | {f"conv_out.{k}": v for k, v in _theta(conv).items()})
    return theta, U0, ref


@row(HEAD, section=SECTION,
            formula=r"\mathrm{Conv2d}^{(3,3;1,1;1,1)}(\mathrm{SiLU}(\mathrm{GN}(\underline{U}_0)))",
            reference=HEAD_REF, tol=1e-13,
            why_tol="float64; sums of 2,880 products (320·3·3) in another order: ≲ 2880·2⁻⁵³ ≈ 3e-13 of "
                    "Σ|terms|, well below that of the output scale",
            error=REL)
def _row_head(seed=0, dtype=torch.float64):
    theta, U0, ref = _head_case(seed, dtype)
    return _rel(rgb_head(theta, U0, eps=EPS_UNET), ref)


def _route_head_printed(seed, dtype):
    theta, U0, _ = _head_case(seed, dtype)
    conv = sd15_module("unet.conv_out", seed=seed, dtype=dtype)
    with torch.no_grad():
        centre = torch.zeros_like(conv.weight)
        centre[:, :, 1, 1] = conv.weight[:, :, 1, 1]
        conv.weight.copy_(centre)
        theirs = conv(U0)
    W = theta["conv_out.weight"][:, :, 1:2, 1:2]
    return conv1x1({"weight": W, "bias": theta["conv_out.bias"]}, U0), theirs


@row("(90) Conv1x1 output head, as printed", section=SECTION,
            formula=r"\mathrm{Conv1x1}_{\Theta^{out}}(\underline{U}_0)",
            reference=HEAD_REF, tol=1e-13, why_tol="the tolerance of the matching row", error=REL,
            verdict="differs", corrected_by=HEAD,
            note="SD-1.5's U-Net ends like the VAE decoder (Def. 6.21's remark there): GroupNorm → SiLU → a 3×3 "
                 "conv, not a Conv1x1. Θ^out mapped as closely as a 1×1 conv can: the centre tap of conv_out's "
                 "kernel and its bias, applied to U_0 itself.",
     route=Route(lambda seed=0, dtype=torch.float64: _route_head_printed(seed, dtype),
                 how="diffusers' conv_out itself, its kernel zeroed but the centre tap (padding "
                     "then reads only zeros), on U_0 without GroupNorm and SiLU",
                 atol=1e-11, rtol=1e-11, why=ROUTE_BLOCK))
def _row_head_printed(seed=0, dtype=torch.float64):
    theta, U0, ref = _head_case(seed, dtype)
    W = theta["conv_out.weight"][:, :, 1:2, 1:2]          # the centre tap (4, 320, 1, 1)
    return _rel(conv1x1({"weight": W, "bias": theta["conv_out.bias"]}, U0), ref)


# --- (84): the parts of Θ_U -----------------------------------------------------------------
PRINTED_PARTS = ("time_embedding.", "down_blocks.", "mid_block.", "up_blocks.", "conv_out.")
SD15_PARTS = PRINTED_PARTS + ("conv_in.", "conv_norm_out.")
THETA_U = "(84) Θ_U = (Θ_in, Θ_TE, Θ↓, Θ^mid, Θ↑, Θ^norm, Θ^out): every parameter in one part"


def _outside(counts: dict, parts) -> int:
    """Parameters (numbers) whose key lies in no part, plus those lying in more than one."""
    return sum(n * abs(sum(k.startswith(p) for p in parts) - 1) for k, n in counts.items())


def _module_counts() -> dict:
    return {k: p.numel() for k, p in meta("unet").named_parameters()}


def _config_counts() -> dict:
    return {k: math.prod(s) for k, s in theta_shapes(UNET_CONFIG).items()}


@row(THETA_U, section=SECTION,
     formula=r"\Theta_U = (\Theta_{in}, \Theta_{TE}, \{\Theta^\downarrow_\ell\}, \Theta^{mid},"
             r" \{\Theta^\uparrow_\ell\}, \Theta^{norm}, \Theta^{out})",
     reference="SD-1.5's U-Net (diffusers, meta): every named parameter, by key prefix, and "
               "the book's Θ table of the config (lecture.unet.theta_shapes)",
     tol=0, why_tol=COUNT,
     error="parameters in no part or in two, + the book's Θ table's parameters that differ "
           "from the module's (of 859,520,964)")
def _row_theta_parts(seed=0, dtype=torch.float64):
    module, book = _module_counts(), _config_counts()
    off = sum(abs(module.get(k, 0) - book.get(k, 0)) for k in module.keys() | book.keys())
    return float(_outside(module, SD15_PARTS) + off)


@row("(84) Θ_U's parts, as printed: conv_in and conv_norm_out unlisted", section=SECTION,
     formula=r"\Theta_U = (\Theta_{TE}, \{\Theta^\downarrow_\ell\}_{\ell=1}^{L}, \Theta^{mid},"
             r" \{\Theta^\uparrow_\ell\}_{\ell=1}^{L}, \Theta^{out})",
     reference="SD-1.5's U-Net (diffusers, meta): every named parameter, by key prefix",
     tol=0, why_tol=COUNT, error="parameters in no printed part (conv_in 11,840 + GroupNorm 640)",
     verdict="differs", corrected_by=THETA_U,
     note="(84) lists the time embedding, the down, mid and up blocks and the head. SD-1.5 also "
          "has conv_in (4 → 320 channels, 3×3) before the first level and the head's GroupNorm "
          "(γ, β of 320 channels) before conv_out: 12,480 parameters that no printed part holds.",
     route=_count_route("the same count from the book's Θ shapes of SD-1.5's config "
                        "(lecture.unet.theta_shapes), no module built",
                        lambda seed=0, dtype=torch.float64: (
                            _row_theta_printed(seed, dtype),
                            float(_outside(_config_counts(), PRINTED_PARTS)))))
def _row_theta_printed(seed=0, dtype=torch.float64):
    return float(_outside(_module_counts(), PRINTED_PARTS))
