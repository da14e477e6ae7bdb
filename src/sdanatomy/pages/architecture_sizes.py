"""Sizes in and out, lecture §5.5 and Remarks 5.1–5.2: SD-1.5's U-Net and decoder, and the U-Net of 2015.

* :func:`latent_size_table` — for each latent H×W: the U-Net's level sizes, its output, the decoder's
  output, and what would happen at sizes with 8 ∤ H if diffusers did not pass the skips' sizes up;
* :func:`image_size_table` — the VAE's encoder and decoder around a latent: 8 ∤ H is lost on the way in;
* :func:`interface_table` — Remark 5.2: Θ fixes the channel counts (and the context width); H, W and
  the number M of context tokens are free;
* Ronneberger et al.'s U-Net (Remark 5.1) as a configuration: :func:`unet2015_sizes` (572 → 388 with
  unpadded convolutions), :func:`unet2015_params` (by formula), :class:`UNet2015` (the same network in
  torch, to check both), and :func:`comparison_table`, the side-by-side of Remark 5.1.

Everything runs on the meta device: shapes without values, SD-1.5's full modules in a fraction of a second.
"""
from __future__ import annotations

import copy
import re

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

from sdanatomy import sd15
from sdanatomy.ledger.registry import Table
from sdanatomy.pages.architecture import CONTEXT, _meta, conv2d_params
from sdanatomy.lecture.layers import conv_output_size
from sdanatomy.sd15.reference import BasicTransformerBlock, Downsample2D, ResnetBlock2D, Upsample2D, meta
from sdanatomy.lecture.config import UNET_CONFIG

LATENT_SIZES = ((64, 64), (96, 64), (64, 40), (63, 63), (65, 65), (65, 47), (9, 13), (7, 7), (1, 1))
IMAGE_SIZES = ((512, 512), (768, 512), (513, 513), (519, 519), (520, 520))


def _cpu_message(module: nn.Module, args, error: Exception) -> str:
    """torch's CPU error for a failing leaf layer (more telling than the meta device's), else the error."""
    if any(module.children()) or not args or not all(isinstance(a, torch.Tensor) for a in args):
        return str(error)
    layer = copy.deepcopy(module).to_empty(device="cpu")
    try:
        layer(*(torch.zeros(a.shape, dtype=a.dtype) for a in args))
    except RuntimeError as e:
        return str(e)
    return str(error)


def attempt(root: nn.Module, call):
    """Run ``call()`` (a forward through ``root``) → (result, None), or (None, (module, message)) with
    the name of the innermost module of ``root`` that was running when it failed, and torch's message."""
    names = {id(m): name for name, m in root.named_modules()}
    stack = []

    def enter(module, args):
        stack.append((module, args))

    def leave(module, args, out):     # a hook that returned something would replace the output
        stack.pop()

    hooks = [register_module_forward_pre_hook(enter), register_module_forward_hook(leave)]
    try:
        with torch.no_grad():
            return call(), None
    except RuntimeError as e:
        inside = [(m, args) for m, args in stack if id(m) in names]
        m, args = inside[-1] if inside else (root, ())
        return None, (names[id(m)] or type(root).__name__, _cpu_message(m, args, e))
    finally:
        for h in hooks:
            h.remove()


# ============================================================ §5.5: which latent sizes
def unet_levels(H: int) -> list[int]:
    """H at the U-Net's four levels as (14) predicts: each Downsample2D (k = 3, s = 2,
    p = 1) takes H to ⌈H/2⌉."""
    levels = [H]
    for _ in range(3):
        levels.append(conv_output_size(levels[-1], 3, 2, 1))
    return levels


def _fmt(shape) -> str:
    return "×".join(str(s) for s in shape)


def _outcome(y, failure) -> str:
    return _fmt(y.shape[1:]) if failure is None else f"fails in {failure[0]}: {failure[1]}"


def _without_skip_sizes(y, failure, y_guarded) -> str:
    """What the U-Net does without forwarding the skips' sizes: torch.cat's size mismatch in words."""
    if failure is None:
        return "same output size" if y.shape == y_guarded.shape else f"output {_fmt(y.shape[1:])}"
    m = re.search(r"Expected (\d+) in dimension (\d) but got (\d+)", failure[1])
    if not m:
        return f"fails in {failure[0]}: {failure[1]}"
    up, axis, skip = m.groups()
    return f"fails in {failure[0]}: upsampled map has {up} {'rows' if axis == '2' else 'columns'}, its skip {skip}"


def latent_size_table(sizes=LATENT_SIZES) -> Table:
    """§5.5: each latent 4×H×W through SD-1.5's U-Net and VAE decoder (AutoencoderKL.decode), on meta.

    Also runs the U-Net with diffusers' forwarding of the skips' sizes switched off
    (``num_upsamplers = 0`` makes its "8 | H, W?" test always pass) to show why it is there.
    """
    unet, vae = (meta("unet"), meta("vae"))
    plain = copy.deepcopy(unet)
    plain.num_upsamplers = 0
    t, c = _meta(1, dtype=torch.int64), _meta(*CONTEXT)
    levels = {}
    hooks = [b.register_forward_hook(lambda m, a, out, i=i: levels.__setitem__(i, out[0].shape[-2:]))
             for i, b in enumerate(unet.down_blocks[:3])]
    rows = []
    try:
        for H, W in sizes:
            z = _meta(1, 4, H, W)
            levels.clear()
            y, err = attempt(unet, lambda: unet(z, t, c).sample)
            x, err_dec = attempt(vae, lambda: vae.decode(z).sample)
            path = " → ".join(_fmt(s) for s in [(H, W)] + [tuple(levels[i]) for i in sorted(levels)])
            y_plain, err_plain = attempt(plain, lambda: plain(z, t, c).sample)
            rows.append([f"4×{H}×{W}", path, _outcome(y, err), _outcome(x, err_dec),
                         "yes" if H % 8 == 0 and W % 8 == 0 else "no", _without_skip_sizes(y_plain, err_plain, y)])
    finally:
        for h in hooks:
            h.remove()
    return Table("§5.5: latent sizes through SD-1.5's U-Net and VAE decoder (measured on the meta device)",
                 ["latent", "U-Net levels (after conv_in, down_blocks.0–2)", "U-Net output", "decoder output",
                  "8 | H and W", "U-Net without the skips' sizes"], rows,
                 notes=["Downsample2D (k = 3, s = 2, p = 1): ⌊(H − 1)/2⌋ + 1 = ⌈H/2⌉ by (14). When 8 ∤ H or W, "
                        "diffusers' U-Net interpolates each Upsample2D to its skip's size "
                        "(forward_upsample_size)."])


def image_size_table(sizes=IMAGE_SIZES) -> Table:
    """Image 3×H×W → encoder → latent → decoder → image, for SD-1.5's VAE on meta."""
    _, vae = (meta("unet"), meta("vae"))
    rows = []
    for H, W in sizes:
        with torch.no_grad():
            z = vae.encode(_meta(1, 3, H, W)).latent_dist.mean
            x = vae.decode(z).sample
        rows.append([f"3×{H}×{W}", _fmt(z.shape[1:]), _fmt(x.shape[1:]),
                     "yes" if tuple(x.shape[-2:]) == (H, W) else "no"])
    return Table("The VAE around the latent: AutoencoderKL.encode, then decode (meta device)",
                 ["image", "latent", "decoded image", "same size"], rows,
                 notes=["the encoder's Downsample2D pads one row and column (bottom, right), then k = 3, s = 2, "
                        "p = 0: ⌊(H + 1 − 3)/2⌋ + 1 = ⌊H/2⌋, so rows beyond 8·⌊H/8⌋ are dropped"])


def interface_table() -> Table:
    """Remark 5.2: what the interfaces fix. Wrong channel counts or context width fail at the first
    layer whose Θ has that width; H, W and the number of context tokens M are free."""
    unet, vae = (meta("unet"), meta("vae"))
    t = _meta(1, dtype=torch.int64)

    def U(C=4, M=77, d_ctx=768):
        return lambda: unet(_meta(1, C, 64, 64), t, _meta(1, M, d_ctx)).sample

    def D(C=4):
        return lambda: vae.decode(_meta(1, C, 64, 64)).sample

    cases = [("U-Net", "latent 4×64×64, context 77×768", U()),
             ("U-Net", "latent 3×64×64", U(C=3)),
             ("U-Net", "latent 5×64×64", U(C=5)),
             ("U-Net", "context 77×1024 (wider tokens)", U(d_ctx=1024)),
             ("U-Net", "context 1×768 (M = 1)", U(M=1)),
             ("U-Net", "context 300×768 (M = 300)", U(M=300)),
             ("decoder", "latent 4×64×64", D()),
             ("decoder", "latent 3×64×64", D(C=3)),
             ("decoder", "latent 5×64×64", D(C=5))]
    rows = []
    for net, what, call in cases:
        y, failure = attempt(unet if net == "U-Net" else vae, call)
        rows.append([net, what, "yes" if failure is None else "no", "" if failure is None else failure[0],
                     _fmt(y.shape[1:]) if failure is None else failure[1]])
    return Table("Remark 5.2: what the interfaces fix (meta device; errors as torch reports them on the CPU)",
                 ["network", "input", "accepted", "refused by", "output, or torch's error"], rows)


# ============================================================ Remark 5.1: the U-Net of 2015
UNET2015 = dict(in_channels=1, widths=(64, 128, 256, 512, 1024), classes=2)   # Ronneberger et al., Fig. 1


def unet2015_sizes(H: int = 572, *, widths=UNET2015["widths"], in_channels=UNET2015["in_channels"],
                   classes=UNET2015["classes"]) -> list[tuple[str, int, int]]:
    """(stage, channels, size) through Ronneberger et al.'s U-Net for an H×H tile, by (14) with p = 0.

    Raises ValueError where a 2×2 max-pool meets an odd size (the paper picks tiles so that it never
    does) or a convolution would not fit.
    """
    def conv(H):                                   # 3×3, stride 1, no padding: H − 2
        return conv_output_size(H, 3, 1, 0)
    stages, skips, C = [("input", in_channels, H)], [], in_channels
    for level, C in enumerate(widths, start=1):    # contracting path
        if level > 1:
            if H % 2:
                raise ValueError(f"a 2×2 max-pool needs an even size (paper §2); got {H} before level {level}")
            H //= 2
            stages.append(("max-pool 2×2", widths[level - 2], H))
        H = conv(conv(H))
        stages.append((f"level {level}: 2 × (conv 3×3, ReLU)", C, H))
        skips.append(H)
    for level in range(len(widths) - 1, 0, -1):    # expanding path
        C = widths[level - 1]
        H = 2 * H
        stages.append(("up-conv 2×2", C, H))
        stages.append((f"crop {skips[level - 1]} → {H}, concatenate", 2 * C, H))
        H = conv(conv(H))
        stages.append((f"level {level}: 2 × (conv 3×3, ReLU)", C, H))
    stages.append(("conv 1×1", classes, H))
    return stages


def unet2015_tiles(max_H: int = 600) -> list[tuple[int, int]]:
    """(input, output) for every tile size H ≤ max_H that the 2015 network accepts."""
    tiles = []
    for H in range(1, max_H + 1):
        try:
            tiles.append((H, unet2015_sizes(H)[-1][2]))
        except ValueError:
            pass
    return tiles


def unet2015_params(*, widths=UNET2015["widths"], in_channels=UNET2015["in_channels"],
                    classes=UNET2015["classes"]) -> int:
    """Θ of the 2015 U-Net by formula: Conv2d k²·C_in·C_out + C_out, (13); a 2×2 up-conv has as many."""
    n, C_prev = 0, in_channels
    for C in widths:                                                   # two 3×3 convs per level
        n += conv2d_params(C_prev, C, 3) + conv2d_params(C, C, 3)
        C_prev = C
    for C_low, C in zip(widths[:0:-1], widths[-2::-1]):               # up-conv, then 2C → C, C → C
        n += conv2d_params(C_low, C, 2) + conv2d_params(2 * C, C, 3) + conv2d_params(C, C, 3)
    return n + conv2d_params(widths[0], classes, 1)                    # the 1×1 head


class UNet2015(nn.Module):
    """Ronneberger et al.'s U-Net in torch: unpadded 3×3 convs with ReLU, 2×2 max-pool, 2×2 up-conv
    (ConvTranspose2d, stride 2) halving the channels, centre-cropped skip ⊕ upsampled, 1×1 head.
    No normalisation; the paper's dropout (no parameters) is left out. x (B, 1, H, H) -> (B, 2, H', H')."""

    def __init__(self, *, widths=UNET2015["widths"], in_channels=UNET2015["in_channels"],
                 classes=UNET2015["classes"]):
        super().__init__()

        def double_conv(C_in, C_out):
            return nn.Sequential(nn.Conv2d(C_in, C_out, 3), nn.ReLU(), nn.Conv2d(C_out, C_out, 3), nn.ReLU())
        self.down = nn.ModuleList(double_conv(C_in, C) for C_in, C in zip((in_channels,) + widths[:-1], widths))
        pairs = list(zip(widths[:0:-1], widths[-2::-1]))              # (C_low, C): 1024→512, …, 128→64
        self.up = nn.ModuleList(nn.ConvTranspose2d(C_low, C, 2, stride=2) for C_low, C in pairs)
        self.up_conv = nn.ModuleList(double_conv(2 * C, C) for C in widths[-2::-1])
        self.head = nn.Conv2d(widths[0], classes, 1)

    def forward(self, x):
        skips = []
        for level, block in enumerate(self.down):
            x = block(F.max_pool2d(x, 2) if level else x)
            skips.append(x)
        for up, block, S in zip(self.up, self.up_conv, skips[-2::-1]):
            x = up(x)                                                  # (B, C, 2h, 2w)
            top, left = (S.shape[-2] - x.shape[-2]) // 2, (S.shape[-1] - x.shape[-1]) // 2
            S = S[..., top:top + x.shape[-2], left:left + x.shape[-1]]  # crop the skip to x's size
            x = block(torch.cat([S, x], dim=1))                         # (B, 2C, 2h, 2w) -> (B, C, 2h-4, 2w-4)
        return self.head(x)


def _count(module, kinds) -> int:
    return sum(isinstance(m, kinds) for m in module.modules())


def comparison_table() -> Table:
    """Remark 5.1, side by side: the 2015 U-Net (computed from its configuration and its torch twin)
    and SD-1.5's U-Net (measured on diffusers' module built from SD-1.5's configuration)."""
    with torch.device("meta"):
        old = UNet2015()
    unet, _ = (meta("unet"), meta("vae"))
    cfg = UNET_CONFIG
    sizes = unet2015_sizes(572)
    with torch.no_grad():
        out_old = old(_meta(1, 1, 572, 572)).shape
        out_sd = {hw: unet(_meta(1, 4, *hw), _meta(1, dtype=torch.int64), _meta(*CONTEXT)).sample.shape
                  for hw in ((64, 64), (65, 47))}
    tiles = unet2015_tiles(600)
    resnets = [m for m in unet.modules() if isinstance(m, ResnetBlock2D)]
    blocks = _count(unet, BasicTransformerBlock)
    convs_sd = _count(unet, nn.Conv2d)
    pads = sorted({m.padding for m in unet.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)})
    skips = sum(len(b.resnets) for b in unet.up_blocks)
    P, M = "paper §2, Fig. 1", "measured: diffusers' module on meta"
    rows = [
        ("task, output", f"segmentation: {UNET2015['classes']} class scores per pixel, softmax + cross-entropy",
         f"noise estimate ε̂: {cfg['out_channels']} channels, same size as the latent",
         "paper §2–3; config.UNET_CONFIG"),
        ("inputs", f"image {UNET2015['in_channels']}×572×572 only",
         f"latent {cfg['in_channels']}×H×W, timestep t, text context {CONTEXT[1]}×{CONTEXT[2]}",
         "Figure 1's inputs"),
        ("3×3 convolutions", "unpadded ('valid'): each takes 2 rows and columns off",
         "padded by 1: H×W kept" if pads == [(1, 1)] else f"paddings {pads}",
         f"{P}; seed 004 ('only uses the valid part'); {M}"),
        ("sizes", f"572×572 → {out_old[-2]}×{out_old[-1]} ({sizes[-1][2]} by (14)); "
                  f"tiles 16n + 60 only ({len(tiles)} tiles ≤ 600)",
         "; ".join(f"{h}×{w} → {_fmt(s[-2:])}" for (h, w), s in out_sd.items()) + " (any H, W ≥ 1)",
         "unet2015_sizes, UNet2015 on meta; latent_size_table"),
        ("downsampling", f"2×2 max-pool, stride 2 (×{len(UNET2015['widths']) - 1})",
         f"3×3 conv, stride 2, padding 1 (×{_count(unet, Downsample2D)})", f"{P}; {M}"),
        ("upsampling", f"2×2 up-conv halving the channels (×{len(old.up)})",
         f"nearest ×2, then 3×3 conv, channels kept (×{_count(unet, Upsample2D)})", f"{P}; {M}"),
        ("skip connections", f"{len(old.up)}: cropped, then concatenated",
         f"{skips}: concatenated uncropped, one per up-path ResnetBlock2D", f"{P}; {M}"),
        ("building block", "2 × (conv 3×3, ReLU)",
         f"ResnetBlock2D (GroupNorm, SiLU, conv 3×3, + time; residual) ×{len(resnets)}, "
         f"Transformer2DModel ×{blocks}", f"{P}; {M}"),
        ("normalisation", "none", f"GroupNorm ×{_count(unet, nn.GroupNorm)}, LayerNorm ×{_count(unet, nn.LayerNorm)}",
         f"{P}; seeds 002/004 mention none; {M}"),
        ("time input", "none", f"sinusoids (320) → MLP → d_t = 1280, added in "
                               f"{sum(r.time_emb_proj is not None for r in resnets)} ResnetBlock2D", M),
        ("text input", "none", f"cross-attention to the context in {blocks} transformer blocks", M),
        ("self-attention", "none", f"in the same {blocks} blocks, over the H·W positions", M),
        ("levels, widths", f"{len(UNET2015['widths'])}: {', '.join(map(str, UNET2015['widths']))}",
         f"{len(cfg['block_out_channels'])}: {', '.join(map(str, cfg['block_out_channels']))}",
         "Fig. 1; config.UNET_CONFIG"),
        ("convolution layers", f"{_count(old, (nn.Conv2d, nn.ConvTranspose2d))} (the paper: 23)",
         f"{convs_sd} (with the 1×1 shortcuts and attention projections)",
         "counted in UNet2015 and in diffusers' module"),
        ("parameters", f"{unet2015_params():,} (formula) = {sd15.count_parameters(old):,} (UNet2015)",
         f"{sd15.count_parameters(unet):,}", "unet2015_params; parameter_table"),
    ]
    return Table("Remark 5.1: Ronneberger et al.'s U-Net (2015) and SD-1.5's U-Net",
                 ["aspect", "Ronneberger et al. 2015", "SD-1.5 U-Net", "how we know"], rows)
