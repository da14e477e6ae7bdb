"""The whole networks as functions, lecture §8: the conditional U-Net, Def. 8.1, (84)–(91).

``unet(theta, z, t, context)`` takes the full ``UNet2DConditionModel.state_dict()`` as Θ and
computes what ``UNet2DConditionModel(z, t, encoder_hidden_states=context).sample`` computes, as
numbered stages built from the blocks of §6.9–6.10 (``sdanatomy.lecture.blocks``):

1. time embedding h = TimestepEmbedding(t)                  (28)–(29)
2. conv_in, a 3×3 conv from C = 4 to 320 channels           not in (85)
3. down path: four levels, every intermediate kept as a skip (86)
4. mid block                                                (87)
5. up path: four levels, one skip popped before each resnet (88)–(89)
6. output head GroupNorm → SiLU → 3×3 conv                  (90) prints Conv1x1

``config`` is a dict shaped like ``config.UNET_CONFIG`` (missing keys take diffusers' defaults, as
``from_config`` does), so the same function runs the miniature (``sdanatomy.miniature.UNET_CONFIG``).
``unet_printed`` is Def. 8.1 as printed; it cannot consume SD-1.5's Θ (see its docstring and
``sdanatomy.ledger.unet``).
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from sdanatomy.lecture.config import UNET_CONFIG
from sdanatomy.lecture.blocks import (BOOK, TORCH, Ops, _check_ops, cross_attn_down_block_2d,
                     cross_attn_down_block_2d_printed, cross_attn_up_block_2d,
                     cross_attn_up_block_2d_printed, down_block_2d, down_block_2d_printed,
                     mid_block_2d_cross_attn, mid_block_2d_cross_attn_printed, up_block_2d,
                     up_block_2d_printed)
from sdanatomy.lecture.layers import conv1x1, sub

__all__ = ["unet", "unet_printed", "unet_config", "theta_shapes", "check_theta", "time_features",
           "UNET_DEFAULTS", "SD15_CONTEXT_TOKENS"]

SD15_CONTEXT_TOKENS = 77      # M: CLIP's 77 token states; the function itself takes any M ≥ 1
MAX_PERIOD = 10000            # (28): ω_r = 10000^{−(r−1)/R}

# The config keys unet() reads, with diffusers' UNet2DConditionModel defaults.
UNET_DEFAULTS = dict(
    in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    downsample_padding=1, norm_num_groups=32, norm_eps=1e-5, cross_attention_dim=1280, attention_head_dim=8,
)
# Keys that must keep SD-1.5's value (also diffusers' default): the options unet() does not implement.
UNET_FIXED = dict(
    center_input_sample=False, flip_sin_to_cos=True, freq_shift=0, mid_block_type="UNetMidBlock2DCrossAttn",
    only_cross_attention=False, mid_block_scale_factor=1, act_fn="silu", transformer_layers_per_block=1,
    reverse_transformer_layers_per_block=None, encoder_hid_dim=None, encoder_hid_dim_type=None,
    num_attention_heads=None, dual_cross_attention=False, use_linear_projection=False, class_embed_type=None,
    addition_embed_type=None, addition_time_embed_dim=None, num_class_embeds=None,
    resnet_time_scale_shift="default", resnet_skip_time_act=False, resnet_out_scale_factor=1.0,
    time_embedding_type="positional", time_embedding_dim=None, time_embedding_act_fn=None,
    timestep_post_act=None, time_cond_proj_dim=None, conv_in_kernel=3, conv_out_kernel=3,
    projection_class_embeddings_input_dim=None, attention_type="default", class_embeddings_concat=False,
    mid_block_only_cross_attention=None, cross_attention_norm=None,
)
# Keys that do not change the function at inference (dropout is off; upcasting is a no-op at ≥ float32).
UNET_IGNORED = ("sample_size", "dropout", "upcast_attention", "addition_embed_type_num_heads")
DOWN_TYPES = ("CrossAttnDownBlock2D", "DownBlock2D")
UP_TYPES = ("UpBlock2D", "CrossAttnUpBlock2D")


# --- configuration and Θ, checked at the door -------------------------------------------------

def unet_config(config: Mapping = UNET_CONFIG) -> dict:
    """The config with diffusers' defaults filled in, checked; heads as a tuple per level."""
    if not isinstance(config, Mapping):
        raise TypeError(f"config is a dict like config.UNET_CONFIG; got {type(config).__name__}")
    known = set(UNET_DEFAULTS) | set(UNET_FIXED) | set(UNET_IGNORED)
    unknown = sorted(k for k in config if k not in known and not k.startswith("_"))
    if unknown:
        raise ValueError(f"unet: unknown config keys {unknown} (UNet2DConditionModel's keys expected)")
    for k, v in UNET_FIXED.items():
        got = config.get(k, v)
        if got != v and not (isinstance(v, (int, float)) and isinstance(got, (int, float)) and float(got) == float(v)):
            raise ValueError(f"unet runs SD-1.5's U-Net family: config[{k!r}] must be {v!r} (SD-1.5's value); "
                             f"got {got!r}")
    c = {k: config.get(k, v) for k, v in UNET_DEFAULTS.items()}
    widths, L = tuple(c["block_out_channels"]), len(c["block_out_channels"])
    c["block_out_channels"] = widths
    c["down_block_types"], c["up_block_types"] = tuple(c["down_block_types"]), tuple(c["up_block_types"])
    if L < 1 or len(c["down_block_types"]) != L or len(c["up_block_types"]) != L:
        raise ValueError(f"unet: block_out_channels, down_block_types and up_block_types need one entry per "
                         f"level (L ≥ 1); got {L}, {len(c['down_block_types'])}, {len(c['up_block_types'])}")
    for kind, allowed in ((c["down_block_types"], DOWN_TYPES), (c["up_block_types"], UP_TYPES)):
        bad = [b for b in kind if b not in allowed]
        if bad:
            raise ValueError(f"unet: block types must be among {allowed}; got {bad}")
    n = c["layers_per_block"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"unet: layers_per_block is one integer n ≥ 1 (SD-1.5: 2); got {c['layers_per_block']!r}")
    heads = c["attention_head_dim"]                 # diffusers' legacy name: it is the NUMBER of heads
    heads = (heads,) * L if isinstance(heads, int) else tuple(heads)
    if len(heads) != L or any(isinstance(x, bool) or not isinstance(x, int) or x < 1 for x in heads):
        raise ValueError(f"unet: attention_head_dim (the number of heads) is an int or one per level; got "
                         f"{c['attention_head_dim']!r}")
    c["heads"] = heads
    G = c["norm_num_groups"]
    for w, nh in zip(widths, heads):
        if isinstance(w, bool) or not isinstance(w, int) or w < 1 or w % G or w % nh:
            raise ValueError(f"unet: every width must be a positive multiple of norm_num_groups = {G} "
                             f"(GroupNorm, Def. 6.5) and of its number of heads; got {w} with {nh} heads")
    if widths[0] % 2:
        raise ValueError(f"unet: the time embedding (28) has 2R = block_out_channels[0] components, an even "
                         f"number; got {widths[0]}")
    if not isinstance(c["cross_attention_dim"], int):
        raise ValueError(f"unet: cross_attention_dim is one integer d_ctx; got {c['cross_attention_dim']!r}")
    return c


def _resnet_shapes(prefix, C_in, C_out, d_t) -> dict:
    s = {f"{prefix}.norm1.weight": (C_in,), f"{prefix}.norm1.bias": (C_in,),
         f"{prefix}.conv1.weight": (C_out, C_in, 3, 3), f"{prefix}.conv1.bias": (C_out,),
         f"{prefix}.time_emb_proj.weight": (C_out, d_t), f"{prefix}.time_emb_proj.bias": (C_out,),
         f"{prefix}.norm2.weight": (C_out,), f"{prefix}.norm2.bias": (C_out,),
         f"{prefix}.conv2.weight": (C_out, C_out, 3, 3), f"{prefix}.conv2.bias": (C_out,)}
    if C_in != C_out:
        s |= {f"{prefix}.conv_shortcut.weight": (C_out, C_in, 1, 1), f"{prefix}.conv_shortcut.bias": (C_out,)}
    return s


def _transformer_shapes(prefix, C, d_ctx) -> dict:
    b = f"{prefix}.transformer_blocks.0"
    s = {f"{prefix}.norm.weight": (C,), f"{prefix}.norm.bias": (C,),
         f"{prefix}.proj_in.weight": (C, C, 1, 1), f"{prefix}.proj_in.bias": (C,),
         f"{prefix}.proj_out.weight": (C, C, 1, 1), f"{prefix}.proj_out.bias": (C,)}
    for i in (1, 2, 3):
        s |= {f"{b}.norm{i}.weight": (C,), f"{b}.norm{i}.bias": (C,)}
    for i, d_kv in ((1, C), (2, d_ctx)):
        s |= {f"{b}.attn{i}.to_q.weight": (C, C), f"{b}.attn{i}.to_k.weight": (C, d_kv),
              f"{b}.attn{i}.to_v.weight": (C, d_kv), f"{b}.attn{i}.to_out.0.weight": (C, C),
              f"{b}.attn{i}.to_out.0.bias": (C,)}
    s |= {f"{b}.ff.net.0.proj.weight": (8 * C, C), f"{b}.ff.net.0.proj.bias": (8 * C,),
          f"{b}.ff.net.2.weight": (C, 4 * C), f"{b}.ff.net.2.bias": (C,)}
    return s


def theta_shapes(config: Mapping = UNET_CONFIG) -> dict:
    """Every key of the U-Net's Θ with its shape, derived from the config alone (no module built)."""
    return _shapes(unet_config(config))


def _shapes(c: dict) -> dict:
    widths, n, d_ctx = c["block_out_channels"], c["layers_per_block"], c["cross_attention_dim"]
    L = len(widths)
    d_t = 4 * widths[0]
    s = {"time_embedding.linear_1.weight": (d_t, widths[0]), "time_embedding.linear_1.bias": (d_t,),
         "time_embedding.linear_2.weight": (d_t, d_t), "time_embedding.linear_2.bias": (d_t,),
         "conv_in.weight": (widths[0], c["in_channels"], 3, 3), "conv_in.bias": (widths[0],)}
    C_prev = widths[0]
    for ell, (kind, C) in enumerate(zip(c["down_block_types"], widths)):
        for r in range(n):
            s |= _resnet_shapes(f"down_blocks.{ell}.resnets.{r}", C_prev if r == 0 else C, C, d_t)
            if kind == "CrossAttnDownBlock2D":
                s |= _transformer_shapes(f"down_blocks.{ell}.attentions.{r}", C, d_ctx)
        if ell < L - 1:
            s |= {f"down_blocks.{ell}.downsamplers.0.conv.weight": (C, C, 3, 3),
                  f"down_blocks.{ell}.downsamplers.0.conv.bias": (C,)}
        C_prev = C
    C = widths[-1]
    s |= _resnet_shapes("mid_block.resnets.0", C, C, d_t) | _resnet_shapes("mid_block.resnets.1", C, C, d_t)
    s |= _transformer_shapes("mid_block.attentions.0", C, d_ctx)
    rev = widths[::-1]
    for i, (kind, C) in enumerate(zip(c["up_block_types"], rev)):
        C_skip_last = rev[min(i + 1, L - 1)]              # the skip from the level above's start
        for r in range(n + 1):
            C_skip = C_skip_last if r == n else C
            s |= _resnet_shapes(f"up_blocks.{i}.resnets.{r}", (C_prev if r == 0 else C) + C_skip, C, d_t)
            if kind == "CrossAttnUpBlock2D":
                s |= _transformer_shapes(f"up_blocks.{i}.attentions.{r}", C, d_ctx)
        if i < L - 1:
            s |= {f"up_blocks.{i}.upsamplers.0.conv.weight": (C, C, 3, 3),
                  f"up_blocks.{i}.upsamplers.0.conv.bias": (C,)}
        C_prev = C
    s |= {"conv_norm_out.weight": (widths[0],), "conv_norm_out.bias": (widths[0],),
          "conv_out.weight": (c["out_channels"], widths[0], 3, 3), "conv_out.bias": (c["out_channels"],)}
    return s


def check_theta(theta: Mapping, config: Mapping = UNET_CONFIG) -> torch.dtype:
    """Every key and shape of Θ against the config, at the door; returns Θ's dtype (one for all)."""
    return _check_theta(theta, unet_config(config))


def _check_theta(theta: Mapping, c: dict) -> torch.dtype:
    if not isinstance(theta, Mapping):
        raise TypeError(f"unet: Θ is the U-Net's state_dict (a dict of tensors); got {type(theta).__name__}")
    want = _shapes(c)
    missing = [k for k in want if k not in theta]
    if missing:
        raise ValueError(f"unet: Θ is missing {len(missing)} key(s) of UNet2DConditionModel's state_dict, "
                         f"e.g. {missing[0]!r} with shape {want[missing[0]]}: {missing[:4]}")
    unexpected = sorted(k for k in theta if k not in want)
    if unexpected:
        raise ValueError(f"unet: Θ has {len(unexpected)} key(s) this config does not have: {unexpected[:4]}")
    dtypes = set()
    for k, shape in want.items():
        v = theta[k]
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"unet: Θ[{k!r}] must be a torch.Tensor; got {type(v).__name__}")
        if tuple(v.shape) != shape:
            raise ValueError(f"unet: Θ[{k!r}] must have shape {shape}; got {tuple(v.shape)}")
        dtypes.add(v.dtype)
    if len(dtypes) != 1 or not next(iter(dtypes)).is_floating_point:
        raise TypeError(f"unet: Θ must hold one floating dtype; got {sorted(map(str, dtypes))}")
    return dtypes.pop()


def _check_inputs(z, t, context, c, dtype, device):
    """z (B, C, H, W) or (C, H, W); t scalar, (1,) or (B,); context (B, M, d_ctx) or (M, d_ctx)."""
    if not isinstance(z, torch.Tensor):
        raise TypeError(f"unet: z is a torch.Tensor (B, {c['in_channels']}, H, W); got {type(z).__name__}")
    single = z.dim() == 3
    z4 = z[None] if single else z
    if z4.dim() != 4 or z4.shape[1] != c["in_channels"] or z4.shape[0] < 1 or min(z4.shape[-2:]) < 1:
        raise ValueError(f"unet: z must be a latent (B, C, H, W) with C = {c['in_channels']} channels "
                         f"(or one latent (C, H, W)); got shape {tuple(z.shape)}")
    if z4.dtype != dtype:
        raise TypeError(f"unet: z has dtype {z4.dtype} but Θ holds {dtype}; cast one to the other")
    if z4.device != device:
        raise ValueError(f"unet: z is on device {z4.device} but Θ is on {device}; move one to the other")
    B = z4.shape[0]
    if not isinstance(context, torch.Tensor):
        raise TypeError(f"unet: context is a torch.Tensor (B, M, d_ctx); got {type(context).__name__}")
    C = context[None] if (single and context.dim() == 2) else context
    d_ctx = c["cross_attention_dim"]
    if C.dim() != 3 or C.shape[0] != B or C.shape[1] < 1 or C.shape[2] != d_ctx:
        raise ValueError(f"unet: context must be (B, M, d_ctx) = ({B}, M, {d_ctx}) with any M ≥ 1 tokens "
                         f"(SD-1.5: M = {SD15_CONTEXT_TOKENS}, CLIP's token states; d_ctx = cross_attention_dim); "
                         f"got shape {tuple(context.shape)}")
    if C.dtype != dtype:
        raise TypeError(f"unet: context has dtype {C.dtype} but Θ holds {dtype}")
    if C.device != device:
        raise ValueError(f"unet: context is on device {C.device} but Θ is on {device}; move one to the other")
    if isinstance(t, bool) or not isinstance(t, (int, float, torch.Tensor)):
        raise TypeError(f"unet: t is a number or a tensor of shape (), (1,) or (B,) = ({B},); got {type(t).__name__}")
    t = torch.as_tensor(t, device=z4.device)
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"unet: t must be real; got dtype {t.dtype}")
    if t.dim() > 1 or (t.dim() == 1 and t.shape[0] not in (1, B)):
        raise ValueError(f"unet: t must be a scalar, shape (1,) or shape (B,) = ({B},) (one per latent); "
                         f"got shape {tuple(t.shape)}")
    return z4, t.reshape(-1).expand(B), C, single


def time_features(t: torch.Tensor, *, R: int) -> torch.Tensor:
    """(28) in SD-1.5's order [cos ω_1 t, …, cos ω_R t, sin ω_1 t, …, sin ω_R t], ω_r = 10000^{−(r−1)/R},
    evaluated as diffusers' Timesteps evaluates it: in float32, ω_r = exp(−(r−1)·ln(10000)/R).

    t: (B,) -> (B, 2R) float32. The same function as embeddings.sinusoidal_embedding; this float32
    route is what SD-1.5 runs whatever the model's dtype, and what unet() must match.
    """
    r = torch.arange(R, dtype=torch.float32, device=t.device)        # r − 1 = 0, …, R − 1
    omega = torch.exp(-math.log(MAX_PERIOD) * r / R)                  # (R,)  ω_r
    angle = t.float()[:, None] * omega[None, :]                       # (B, R) ω_r t
    return torch.cat([torch.cos(angle), torch.sin(angle)], dim=-1)    # (B, 2R): cosines, then sines


# --- the U-Net (85)–(91) ----------------------------------------------------------------------

def _setup(theta, z, t, context, config, ops):
    """The checks at the door of unet(): config, Θ (every key and shape), the inputs."""
    _check_ops(ops)
    c = unet_config(config)
    dtype, device = _check_theta(theta, c), theta["conv_in.weight"].device
    return (c,) + _check_inputs(z, t, context, c, dtype, device)


def unet(theta: Mapping, z: torch.Tensor, t, context: torch.Tensor, *,
         config: Mapping = UNET_CONFIG, ops: Ops = TORCH) -> torch.Tensor:
    """UNet2DConditionModel_Θ(Z, t, C), Def. 8.1, (85)–(91), corrected. Θ: the whole
    state_dict(); z: (B, 4, H, W), any H, W; t: number or (B,); context: (B, M, 768).
    ops: TORCH (torch's kernels) or BOOK (the book's). Ledger: ledger.where("(85)")."""
    c, Z, t, C, single = _setup(theta, z, t, context, config, ops)   # checks first
    n, heads, L = c["layers_per_block"], c["heads"], len(c["block_out_channels"])
    kw = dict(groups=c["norm_num_groups"], eps=c["norm_eps"], ops=ops)   # every block's
    # 1. time: h = TimestepEmbedding(t) (28)–(29); e(t) in float32, as in diffusers
    e = time_features(t, R=c["block_out_channels"][0] // 2).to(Z.dtype)       # (B, 2R)
    h = ops.linear(sub(theta, "time_embedding.linear_2"),
                   ops.silu(ops.linear(sub(theta, "time_embedding.linear_1"), e)))
    # 2. conv_in: the lecture's (85) starts the down path at Z itself
    D = ops.conv2d(sub(theta, "conv_in"), Z, padding=1)               # (B, C_1, H, W)
    # 3. down path (86): every resnet/transformer output and downsampled map is a skip
    skips, down = (D,), dict(kw, padding=c["downsample_padding"])
    for ell, kind in enumerate(c["down_block_types"]):
        Th = sub(theta, f"down_blocks.{ell}")
        if kind == "CrossAttnDownBlock2D":
            D, S = cross_attn_down_block_2d(Th, D, h, C, heads=heads[ell], **down)
        else:
            D, S = down_block_2d(Th, D, h, **down)
        skips += S                                  # SD-1.5: 1 + 3 + 3 + 3 + 2 = 12
    # 4. mid block (87), at the lowest resolution (⌈H/8⌉ × ⌈W/8⌉ in SD-1.5)
    U = mid_block_2d_cross_attn(sub(theta, "mid_block"), D, h, C, heads=heads[-1], **kw)
    # 5. up path (88)–(89): level i pops n + 1 skips, one per resnet; upsamples last
    for i, kind in enumerate(c["up_block_types"]):
        S, skips = skips[-(n + 1):], skips[:-(n + 1)]
        size = tuple(skips[-1].shape[-2:]) if i < L - 1 else None  # next skip's H, W
        Th = sub(theta, f"up_blocks.{i}")
        if kind == "CrossAttnUpBlock2D":
            U = cross_attn_up_block_2d(Th, U, S, h, C, heads=heads[L - 1 - i],
                                       output_size=size, **kw)
        else:
            U = up_block_2d(Th, U, S, h, output_size=size, **kw)
    # 6. output head (90) as SD-1.5 has it: GroupNorm → SiLU → 3×3 conv, not a Conv1x1
    U = ops.silu(ops.group_norm(sub(theta, "conv_norm_out"), U, groups=kw["groups"],
                                eps=kw["eps"]))
    E = ops.conv2d(sub(theta, "conv_out"), U, padding=1)            # (91) (B, 4, H, W)
    return E[0] if single else E


def unet_printed(theta: Mapping, z: torch.Tensor, t, context: torch.Tensor, *,
                 config: Mapping = UNET_CONFIG, ops: Ops = BOOK) -> torch.Tensor:
    """Def. 8.1, (85)–(91), as printed, with the printed blocks of §6.10.

    D_0 = Z; D_ℓ = (CrossAttention)DownBlock2D(D_{ℓ−1}) for ℓ = 1, …, L (each ends with
    Downsample2D); B = Mid(D_L); U_L = UpBlock2D(B, D_L); U_{ℓ−1} =
    (CrossAttention)UpBlock2D(U_ℓ, D_{ℓ−1}) for ℓ = L, …, 1; Ê = Conv1x1(U_0). Against
    SD-1.5's Θ this cannot run: (85) has no conv_in, so the first resnet gets C = 4
    channels where its Θ expects 320 (ValueError, naming the block); further on it would
    also need a Θ_Down at the last level, one skip per level (SD-1.5 keeps 12), L + 1 up
    blocks (SD-1.5 has L) and a 1×1 head (SD-1.5's is GroupNorm → SiLU → 3×3).
    """
    c = unet_config(config)
    dtype, device = _check_theta(theta, c), theta["conv_in.weight"].device
    Z, t, C, _ = _check_inputs(z, t, context, c, dtype, device)
    heads, L = c["heads"], len(c["block_out_channels"])
    kw = dict(groups=c["norm_num_groups"], eps=c["norm_eps"], ops=ops)
    e = time_features(t, R=c["block_out_channels"][0] // 2).to(dtype)
    h = ops.linear(sub(theta, "time_embedding.linear_2"),             # (29)
                   ops.silu(ops.linear(sub(theta, "time_embedding.linear_1"), e)))
    D = [Z]                                                           # (85) D_0 = Z
    for ell, kind in enumerate(c["down_block_types"], start=1):       # (86)
        Th = sub(theta, f"down_blocks.{ell - 1}")
        if kind == "CrossAttnDownBlock2D":
            D.append(cross_attn_down_block_2d_printed(Th, D[-1], h, C,
                                                      heads=heads[ell - 1], **kw))
        else:
            D.append(down_block_2d_printed(Th, D[-1], h, **kw))
    B = mid_block_2d_cross_attn_printed(sub(theta, "mid_block"), D[L], h, C,
                                        heads=heads[-1], **kw)       # (87)
    # The lecture's level ℓ (1 = full resolution) is diffusers' up_blocks[L − ℓ].
    U = up_block_2d_printed(sub(theta, "up_blocks.0"), B, D[L], h, **kw)  # (88) Θ^↑_L
    for ell in range(L, 0, -1):                                       # (89) Θ^↑_{ℓ−1}
        i = L - (ell - 1)
        if i >= L:
            raise ValueError(f"unet_printed: (89) at ℓ = {ell} needs Θ^↑_{ell - 1}, "
                             f"which (84) does not list (SD-1.5 has {L} up blocks; "
                             f"(88)–(89) apply {L + 1})")
        Th = sub(theta, f"up_blocks.{i}")
        if c["up_block_types"][i] == "CrossAttnUpBlock2D":
            U = cross_attn_up_block_2d_printed(Th, U, D[ell - 1], h, C,
                                               heads=heads[L - 1 - i], **kw)
        else:
            U = up_block_2d_printed(Th, U, D[ell - 1], h, **kw)
    return conv1x1(sub(theta, "conv_out"), U)                         # (90)
