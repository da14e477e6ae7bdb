"""The VAE decoder as a function, lecture §6.11 and §8.2, Defs. 8.2–8.3, eqs. (92)–(96).

Two readings side by side, as everywhere in the book:

* :func:`vae_decoder` — what SD-1.5 runs, ``AutoencoderKL.decode(z).sample``, as a pure function
  of Θ = the VAE's ``state_dict()`` (encoder keys ignored), in numbered stages:

  1. ``post_quant_conv``, a 1×1 Conv2d C_z → C_z (AutoencoderKL, before its Decoder);
  2. ``decoder.conv_in``, a 3×3 Conv2d C_z → C_L (512 in SD-1.5);
  3. the mid block: ResnetBlock2D → single-head self-attention → ResnetBlock2D, no time input;
  4. L up blocks (UpDecoderBlock2D): layers_per_block + 1 ResnetBlock2D, then an Upsample2D
     except in the last block — so the image is 2^{L−1} times the latent, 8× in SD-1.5;
  5. the RGB head: GroupNorm → SiLU → 3×3 Conv2d (``layers.rgb_head``).

  ``decode`` does not undo the latent scaling: SD-1.5's pipeline divides the latents by
  ``scaling_factor`` = 0.18215 itself, ``vae.decode(latents / vae.config.scaling_factor)``
  (diffusers 0.42, ``StableDiffusionPipeline.__call__``), before calling it. So does
  :func:`decode_latents` here.

* :func:`vae_decoder_printed` — Def. 8.2 as printed: H_0 = ResnetBlock2D(Z, 0) (93),
  L_d levels H_ℓ = ResnetBlock2D(Upsample2D(H_{ℓ−1}), 0) (94), a Conv1x1 to RGB (95), with
  H = 2^{L_d} H_z (95)–(96). It needs parameters SD-1.5 does not have (a ResnetBlock2D from
  C_z = 4 channels with FiLM Linears, an Upsample2D in every level, a 1×1 head), so it runs
  with its own Θ (:func:`printed_theta`); the ledger rows (``sdanatomy.ledger.vae_decoder``)
  measure each place where it parts from SD-1.5.

Shapes: B batch, C_z latent channels (4), H_z × W_z the latent, H × W = 8H_z × 8W_z the image,
N = H_z·W_z tokens of the mid-block attention. There is no downsampling, so every H_z, W_z ≥ 1
decodes (Remark 5.2).
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F

from sdanatomy.lecture.config import VAE_CONFIG
from sdanatomy.lecture.attention import scaled_dot_product_attention
from sdanatomy.lecture.blocks import BOOK, TORCH, Ops, resnet_block_2d, resnet_block_2d_printed
from sdanatomy.lecture.layers import EPS_VAE, sub
from sdanatomy.lecture.notation import flatten, unflatten

__all__ = ["decoder_config", "theta_shapes", "vae_attention", "mid_block_2d", "up_decoder_block_2d",
           "vae_decoder", "decode_latents", "upsampling_factor", "stages",
           "printed_theta_shapes", "printed_theta", "vae_decoder_printed", "printed_upsampling_factor",
           "printed_stages", "influence"]

UP_BLOCK = "UpDecoderBlock2D"
# AutoencoderKL's own defaults (diffusers 0.42) for the fields a config may leave out;
# tests/test_decoder.py checks them against AutoencoderKL.__init__'s signature.
CONFIG_DEFAULTS = dict(block_out_channels=(64,), up_block_types=(UP_BLOCK,), layers_per_block=1,
                       latent_channels=4, out_channels=3, norm_num_groups=32, act_fn="silu",
                       use_post_quant_conv=True, mid_block_add_attention=True)


# --- configuration and Θ at the door --------------------------------------------------------

def decoder_config(config: Mapping = VAE_CONFIG) -> dict:
    """The decoder's hyperparameters from an AutoencoderKL config (a dict or diffusers' FrozenDict).

    Fields left out take AutoencoderKL's defaults; what the decoder cannot run is refused here.
    """
    if not isinstance(config, Mapping):
        raise TypeError(f"config is an AutoencoderKL config dict (like config.VAE_CONFIG); got {type(config).__name__}")
    cfg = {k: config.get(k, v) for k, v in CONFIG_DEFAULTS.items()}
    C = tuple(cfg["block_out_channels"])
    cfg["block_out_channels"], cfg["up_block_types"] = C, tuple(cfg["up_block_types"])
    if not C:
        raise ValueError("config: block_out_channels needs at least one width")
    ints = {"latent_channels": cfg["latent_channels"], "out_channels": cfg["out_channels"],
            "norm_num_groups": cfg["norm_num_groups"]}
    ints |= {f"block_out_channels[{i}]": c for i, c in enumerate(C)}
    for name, v in ints.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"config: {name} must be a positive integer; got {v!r}")
    lpb = cfg["layers_per_block"]
    if isinstance(lpb, bool) or not isinstance(lpb, int) or lpb < 0:
        raise ValueError(f"config: layers_per_block must be an integer ≥ 0; got {lpb!r}")
    if cfg["up_block_types"] != (UP_BLOCK,) * len(C):
        raise ValueError(f"config: the decoder runs {len(C)} × {UP_BLOCK!r}, one per block_out_channels; "
                         f"got up_block_types={cfg['up_block_types']}")
    if cfg["act_fn"] != "silu":
        raise ValueError(f"config: SD-1.5's decoder uses act_fn='silu' (16); got {cfg['act_fn']!r}")
    bad = [c for c in C if c % cfg["norm_num_groups"]]
    if bad:
        raise ValueError(f"config: GroupNorm needs G | C (Def. 6.5); norm_num_groups="
                         f"{cfg['norm_num_groups']} does not divide the widths {bad}")
    return cfg


def _key(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _resnet_shapes(prefix: str, C_in: int, C_out: int, *, shortcut: bool | None = None) -> dict:
    """Θ of a ResnetBlock2D without time input (52)–(57): its keys and shapes.

    The 1×1 shortcut (56) exists where C_in ≠ C_out (``shortcut=None``), or as told.
    """
    def k(name):
        return _key(prefix, name)

    shapes = {k("norm1.weight"): (C_in,), k("norm1.bias"): (C_in,),
              k("conv1.weight"): (C_out, C_in, 3, 3), k("conv1.bias"): (C_out,),
              k("norm2.weight"): (C_out,), k("norm2.bias"): (C_out,),
              k("conv2.weight"): (C_out, C_out, 3, 3), k("conv2.bias"): (C_out,)}
    if (C_in != C_out) if shortcut is None else shortcut:
        shapes |= {k("conv_shortcut.weight"): (C_out, C_in, 1, 1), k("conv_shortcut.bias"): (C_out,)}
    return shapes


def _attention_shapes(prefix: str, C: int) -> dict:
    shapes = {_key(prefix, "group_norm.weight"): (C,), _key(prefix, "group_norm.bias"): (C,)}
    for p in ("to_q", "to_k", "to_v", "to_out.0"):
        shapes |= {_key(prefix, f"{p}.weight"): (C, C), _key(prefix, f"{p}.bias"): (C,)}
    return shapes


def theta_shapes(config: Mapping = VAE_CONFIG) -> dict[str, tuple[int, ...]]:
    """Every key of Θ that :func:`vae_decoder` reads, with the shape ``config`` implies.

    For SD-1.5: 140 keys (post_quant_conv and the Decoder), 49,490,199 numbers.
    """
    cfg = decoder_config(config)
    C, C_z, n = cfg["block_out_channels"], cfg["latent_channels"], cfg["layers_per_block"] + 1
    shapes = {}
    if cfg["use_post_quant_conv"]:
        shapes |= {"post_quant_conv.weight": (C_z, C_z, 1, 1), "post_quant_conv.bias": (C_z,)}
    shapes |= {"decoder.conv_in.weight": (C[-1], C_z, 3, 3), "decoder.conv_in.bias": (C[-1],)}
    shapes |= _resnet_shapes("decoder.mid_block.resnets.0", C[-1], C[-1])
    if cfg["mid_block_add_attention"]:
        shapes |= _attention_shapes("decoder.mid_block.attentions.0", C[-1])
    shapes |= _resnet_shapes("decoder.mid_block.resnets.1", C[-1], C[-1])
    prev = C[-1]
    for l, c in enumerate(reversed(C)):
        for r in range(n):
            shapes |= _resnet_shapes(f"decoder.up_blocks.{l}.resnets.{r}", prev if r == 0 else c, c)
        if l < len(C) - 1:
            shapes |= {f"decoder.up_blocks.{l}.upsamplers.0.conv.weight": (c, c, 3, 3),
                       f"decoder.up_blocks.{l}.upsamplers.0.conv.bias": (c,)}
        prev = c
    shapes |= {"decoder.conv_norm_out.weight": (C[0],), "decoder.conv_norm_out.bias": (C[0],),
               "decoder.conv_out.weight": (cfg["out_channels"], C[0], 3, 3),
               "decoder.conv_out.bias": (cfg["out_channels"],)}
    return shapes


def _check_theta(theta, shapes: Mapping, where: str, X: torch.Tensor, owned=("",)) -> None:
    """Every key of ``shapes`` in Θ with its shape, and X's dtype and device; no stray keys under ``owned``."""
    if not isinstance(theta, Mapping):
        raise TypeError(f"{where}: Θ is a dict of tensors keyed as the module's state_dict; "
                        f"got {type(theta).__name__}")
    missing = [k for k in shapes if k not in theta]
    if missing:
        listed = ", ".join(f"{k!r} of shape {shapes[k]}" for k in missing[:3])
        more = f" and {len(missing) - 3} more keys" if len(missing) > 3 else ""
        raise ValueError(f"{where}: Θ is missing {listed}{more}")
    stray = [k for k in theta if k not in shapes and any(k.startswith(p) for p in owned)]
    if stray:
        raise ValueError(f"{where}: Θ has keys this configuration does not have: {stray[:3]}"
                         f"{' …' if len(stray) > 3 else ''} (was Θ built with another config?)")
    for k, shape in shapes.items():
        v = theta[k]
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"{where}: Θ[{k!r}] must be a torch.Tensor; got {type(v).__name__}")
        if tuple(v.shape) != shape:
            raise ValueError(f"{where}: Θ[{k!r}] has shape {tuple(v.shape)}; the configuration needs {shape}")
        if v.dtype != X.dtype or v.device != X.device:
            raise ValueError(f"{where}: Θ[{k!r}] is {v.dtype} on {v.device} but the input is "
                             f"{X.dtype} on {X.device}; cast Θ and the input alike")


def _batch(X, where: str, what: str, C: int | None = None) -> tuple[torch.Tensor, bool]:
    """X (C, H, W) as a batch of one, or (B, C, H, W) as it is, checked (against C when given)."""
    if not isinstance(X, torch.Tensor):
        raise TypeError(f"{where} takes {what} as a torch.Tensor; got {type(X).__name__}")
    need = "(B, C, H, W)" if C is None else f"(B, {C}, H, W)"
    if X.dim() not in (3, 4):
        raise ValueError(f"{where} takes {what} of shape {need} or one without B; got {tuple(X.shape)}")
    if not X.is_floating_point():
        raise TypeError(f"{where} takes a floating-point {what}; got {X.dtype}")
    X4 = X[None] if X.dim() == 3 else X
    if (C is not None and X4.shape[1] != C) or min(X4.shape) < 1:
        raise ValueError(f"{where} takes {what} of shape {need} with B, H, W ≥ 1; got {tuple(X.shape)}")
    return X4, X.dim() == 3


def _check_ops(ops) -> None:
    if not isinstance(ops, Ops):
        raise TypeError(f"ops must be blocks.BOOK or blocks.TORCH (an Ops); got {ops!r}")


def _sdpa(ops: Ops):
    """(30) for ``ops``: the book's scaled_dot_product_attention, or torch's fused kernel for TORCH."""
    return F.scaled_dot_product_attention if ops is TORCH else scaled_dot_product_attention


# --- the blocks -----------------------------------------------------------------------------

def vae_attention(theta: Mapping, X: torch.Tensor, *, groups: int = 32, eps: float = EPS_VAE,
                  ops: Ops = BOOK) -> torch.Tensor:
    """The self-attention of the decoder's mid block (diffusers' ``Attention``: heads = 1, residual).

    Not in Def. 8.2. With T = flatten(GroupNorm(X)) ∈ R^{N×C}, N = H·W tokens:
    Y = X + unflatten( SDPA(T W_Q + b_Q, T W_K + b_K, T W_V + b_V) W_O + b_O ),
    one head of width d = C (scores divided by √C), and every projection with a bias — where
    Def. 6.14's MultiheadAttention (``attention.multihead_attention``) has none on Q, K, V.
    (b_K adds q·b_K to every score of a query, which the softmax cancels; b_V reaches the output as
    W_O b_V, since each query's weights sum to 1, and folds into b_O; b_Q adds a per-key score
    b_Q·k_m/√d, which Def. 6.14 cannot express.)

    X: (B, C, H, W) -> (B, C, H, W); theta: group_norm.{weight,bias} (C,),
    to_q / to_k / to_v / to_out.0 .{weight (C, C), bias (C,)}
    SD-1.5 runs it where (93) has its one block: in the mid block, before any upsampling.
    Ledger: ``ledger.where("(93)")``.
    """
    _check_ops(ops)
    X4, single = _batch(X, "the VAE attention", "X")
    C, H, W = X4.shape[1:]
    _check_theta(theta, _attention_shapes("", C), "the VAE attention", X4)
    U = ops.group_norm(sub(theta, "group_norm"), X4, groups=groups, eps=eps)   # (18)–(19): (B, C, H, W)
    T = flatten(U)                                                             # (B, C, H, W) -> (B, N, C)   (25)
    Q = ops.linear(sub(theta, "to_q"), T)                                      # (B, N, C): T W_Q + b_Q      (32)
    K = ops.linear(sub(theta, "to_k"), T)                                      # (B, N, C): T W_K + b_K      (32)
    V = ops.linear(sub(theta, "to_v"), T)                                      # (B, N, C): T W_V + b_V      (32)
    O = _sdpa(ops)(Q, K, V)                                                    # one head, d = C: (B, N, C)  (30)
    Y = ops.linear(sub(theta, "to_out.0"), O)                                  # O W_O + b_O: (B, N, C)      (33)
    Y = X4 + unflatten(Y, H, W)                                                # (B, N, C) -> (B, C, H, W), + X
    return Y[0] if single else Y


def mid_block_2d(theta: Mapping, X: torch.Tensor, *, groups: int = 32,
                 eps: float = EPS_VAE, attention: bool = True,
                 ops: Ops = BOOK) -> torch.Tensor:
    """The decoder's mid block (diffusers' UNetMidBlock2D, temb = None): Def. 6.18
    without time or text.

    A_0 = ResnetBlock2D(X), A_1 = Attention(A_0) (:func:`vae_attention`),
    Y = ResnetBlock2D(A_1). X: (B, C, H, W) -> (B, C, H, W);
    theta: resnets.0.*, attentions.0.*, resnets.1.*
    """
    _check_ops(ops)
    X4, single = _batch(X, "the VAE mid block", "X")
    C = X4.shape[1]
    shapes = _resnet_shapes("resnets.0", C, C) | _resnet_shapes("resnets.1", C, C)
    if attention:
        shapes |= _attention_shapes("attentions.0", C)
    _check_theta(theta, shapes, "the VAE mid block", X4)
    kw = dict(groups=groups, eps=eps, ops=ops)
    A0 = resnet_block_2d(sub(theta, "resnets.0"), X4, None, **kw)           # (63), no h
    A1 = vae_attention(sub(theta, "attentions.0"), A0, **kw) if attention else A0
    Y = resnet_block_2d(sub(theta, "resnets.1"), A1, None, **kw)            # (67), no h
    return Y[0] if single else Y


def up_decoder_block_2d(theta: Mapping, X: torch.Tensor, *, n: int, C_out: int,
                        upsample: bool, groups: int = 32, eps: float = EPS_VAE,
                        ops: Ops = BOOK) -> torch.Tensor:
    """One level of the decoder (diffusers' UpDecoderBlock2D): n ResnetBlock2D, then
    Upsample2D.

    Y_0 = X, Y_r = ResnetBlock2D(Y_{r−1}) for r = 1, …, n (Y_1 takes C_in → C_out), then
    Upsample2D^(2)(Y_n) (24) when ``upsample``: the reverse of (94)'s order. SD-1.5 has
    n = layers_per_block + 1 = 3, and no Upsample2D in its last level.
    X: (B, C_in, H, W) -> (B, C_out, 2H, 2W), or (B, C_out, H, W) without upsampling;
    theta: resnets.0 … resnets.{n−1}, upsamplers.0.conv.{weight,bias}
    """
    _check_ops(ops)
    X4, single = _batch(X, "UpDecoderBlock2D", "X")
    for name, v in (("n", n), ("C_out", C_out)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"UpDecoderBlock2D needs a positive integer {name}; "
                             f"got {v!r}")
    shapes = {}
    for r in range(n):
        C_in = X4.shape[1] if r == 0 else C_out
        shapes |= _resnet_shapes(f"resnets.{r}", C_in, C_out)
    if upsample:
        shapes |= {"upsamplers.0.conv.weight": (C_out, C_out, 3, 3),
                   "upsamplers.0.conv.bias": (C_out,)}
    _check_theta(theta, shapes, "UpDecoderBlock2D", X4)
    Y = X4
    for r in range(n):
        Y = resnet_block_2d(sub(theta, f"resnets.{r}"), Y, None, groups=groups, eps=eps,
                            ops=ops)                                     # (52)–(57)
    if upsample:
        Y = ops.upsample_2d(sub(theta, "upsamplers.0"), Y)   # (23)–(24): (B, C, 2H, 2W)
    return Y[0] if single else Y


# --- the whole decoder, as SD-1.5 runs it ---------------------------------------------

def upsampling_factor(config: Mapping = VAE_CONFIG) -> int:
    """H / H_z of :func:`vae_decoder`: 2^{L−1}, an Upsample2D in every up block but the last (8 for SD-1.5)."""
    return 2 ** (len(decoder_config(config)["block_out_channels"]) - 1)


def stages(config: Mapping = VAE_CONFIG) -> list[tuple[str, str]]:
    """The stages :func:`vae_decoder` runs, in order: (Θ prefix, kind). The ledger checks this list
    against the modules diffusers' ``AutoencoderKL.decode`` calls (forward hooks).

    Defs. 8.2–8.3, eqs. (92)–(96), corrected. Ledger: ``ledger.where("(92)")``.
    """
    cfg = decoder_config(config)
    L, n = len(cfg["block_out_channels"]), cfg["layers_per_block"] + 1
    out = [("post_quant_conv", "Conv1x1")] if cfg["use_post_quant_conv"] else []
    out += [("decoder.conv_in", "Conv3x3"), ("decoder.mid_block.resnets.0", "ResnetBlock2D")]
    if cfg["mid_block_add_attention"]:
        out += [("decoder.mid_block.attentions.0", "Attention")]
    out += [("decoder.mid_block.resnets.1", "ResnetBlock2D")]
    for l in range(L):
        out += [(f"decoder.up_blocks.{l}.resnets.{r}", "ResnetBlock2D") for r in range(n)]
        out += [(f"decoder.up_blocks.{l}.upsamplers.0", "Upsample2D")] if l < L - 1 else []
    return out + [("decoder.conv_norm_out", "GroupNorm"), ("decoder.conv_act", "SiLU"),
                  ("decoder.conv_out", "Conv3x3")]


def vae_decoder(theta: Mapping, z: torch.Tensor, *, config: Mapping = VAE_CONFIG,
                ops: Ops = BOOK) -> torch.Tensor:
    """The VAE decoder 𝒟 of (96) as SD-1.5 runs it: ``AutoencoderKL.decode(z).sample``.

    z: (B, C_z, H_z, W_z) or (C_z, H_z, W_z) -> (B, C_out, 2^{L−1}H_z, 2^{L−1}W_z);
    SD-1.5: (B, 4, H_z, W_z) -> (B, 3, 8H_z, 8W_z) for any H_z, W_z ≥ 1. theta: the
    AutoencoderKL's state_dict (encoder keys ignored), checked key by key against
    ``config`` first. z is the VAE's latent: the diffusion latent divided by
    ``scaling_factor`` (:func:`decode_latents`). ``ops``: BOOK or TORCH layers.
    """
    _check_ops(ops)
    cfg = decoder_config(config)
    Z, single = _batch(z, "the VAE decoder (Def. 8.2)", "the latent Z",
                       cfg["latent_channels"])
    _check_theta(theta, theta_shapes(cfg), "the VAE decoder", Z,
                 owned=("decoder.", "post_quant_conv."))
    C, G, eps = cfg["block_out_channels"], cfg["norm_num_groups"], EPS_VAE
    L, n = len(C), cfg["layers_per_block"] + 1
    dec = sub(theta, "decoder")

    # 1. post_quant_conv: a Conv1x1 (Def. 6.21) C_z -> C_z, before the Decoder proper
    X = Z
    if cfg["use_post_quant_conv"]:
        X = ops.conv2d(sub(theta, "post_quant_conv"), Z, padding=0)
    # 2. conv_in: Conv2d^(3,3; 1,1; 1,1) (14), C_z -> C_L             (B, C_L, H_z, W_z)
    X = ops.conv2d(sub(dec, "conv_in"), X, padding=1)
    # 3. mid block: ResnetBlock2D -> self-attention over H_z·W_z tokens -> ResnetBlock2D
    X = mid_block_2d(sub(dec, "mid_block"), X, groups=G, eps=eps,
                     attention=cfg["mid_block_add_attention"], ops=ops)
    # 4. up blocks at widths C_L, …, C_1: n ResnetBlock2D, then Upsample2D (not last)
    for l, c in enumerate(reversed(C)):
        X = up_decoder_block_2d(sub(dec, f"up_blocks.{l}"), X, n=n, C_out=c,
                                upsample=l < L - 1, groups=G, eps=eps, ops=ops)
    # 5. RGB head: GroupNorm -> SiLU -> Conv2d 3×3 (not (95)'s Conv1x1)
    U = ops.silu(ops.group_norm(sub(dec, "conv_norm_out"), X, groups=G, eps=eps))
    Xhat = ops.conv2d(sub(dec, "conv_out"), U, padding=1)              # (B, 3, H, W)
    return Xhat[0] if single else Xhat


def decode_latents(theta: Mapping, latents: torch.Tensor, *, config: Mapping = VAE_CONFIG,
                   ops: Ops = BOOK) -> torch.Tensor:
    """What SD-1.5's pipeline decodes: 𝒟(latents / scaling_factor), an image in about [−1, 1] (unclamped)."""
    if not isinstance(config, Mapping):
        raise TypeError(f"config is an AutoencoderKL config dict; got {type(config).__name__}")
    if not isinstance(latents, torch.Tensor):
        raise TypeError(f"latents must be a torch.Tensor; got {type(latents).__name__}")
    s = config.get("scaling_factor", 0.18215)     # AutoencoderKL's default is SD-1.5's 0.18215
    return vae_decoder(theta, latents / s, config=config, ops=ops)


# --- Def. 8.2 as printed, (92)–(96) ----------------------------------------------------------

D_T_PRINTED = 512   # width of h in the printed FiLM blocks; with h = 0 only the Linears' biases act


def _printed_levels(cfg) -> list[tuple[int, int]]:
    """(C_in, C_out) of the ResnetBlock2D of each printed level ℓ = 1, …, L_d, one per Θ_ℓ^↑."""
    C = list(reversed(cfg["block_out_channels"]))
    return [(C[max(l - 1, 0)], C[l]) for l in range(len(C))]


def printed_upsampling_factor(config: Mapping = VAE_CONFIG) -> int:
    """H / H_z as (95)–(96) print it: 2^{L_d}, L_d the number of up levels Θ_ℓ^↑ (4 in SD-1.5: 16)."""
    return 2 ** len(decoder_config(config)["block_out_channels"])


def printed_stages(config: Mapping = VAE_CONFIG) -> list[tuple[str, str]]:
    """The stages of Def. 8.2, eqs. (92)–(95), as printed, in order: (Θ prefix, kind), as
    :func:`stages`. Ledger: ``ledger.where("(92)")``.
    """
    L_d = len(decoder_config(config)["block_out_channels"])
    out = [("in", "ResnetBlock2D")]                                                    # (93)
    for l in range(1, L_d + 1):
        out += [(f"up.{l}.upsample", "Upsample2D"), (f"up.{l}.resnet", "ResnetBlock2D")]   # (94)
    return out + [("out", "Conv1x1")]                                                  # (95)


def _film_shapes(prefix: str, C_in: int, C_out: int, d_t: int) -> dict:
    """Def. 6.15 as printed: ResnetBlock2D with FiLM Linears γ, β (d_t -> C_out) and Θ^(s) always (56)."""
    shapes = _resnet_shapes(prefix, C_in, C_out, shortcut=True)
    for name in ("gamma", "beta"):
        shapes |= {f"{prefix}.{name}.weight": (C_out, d_t), f"{prefix}.{name}.bias": (C_out,)}
    return shapes


def printed_theta_shapes(config: Mapping = VAE_CONFIG, *, d_t: int = D_T_PRINTED) -> dict:
    """Keys and shapes of Θ_Dec = (Θ^in, {Θ_Up^(ℓ), Θ_ℓ^↑}_{ℓ=1}^{L_d}, Θ^out), (92), at ``config``'s widths.

    Keys follow the lecture, ℓ 1-based: ``in.*`` (a printed ResnetBlock2D C_z → C_L, Def. 6.15,
    keys as blocks.resnet_block_2d_printed), ``up.{ℓ}.upsample.conv.*`` (Upsample2D at the width of
    H_{ℓ−1}) and ``up.{ℓ}.resnet.*`` (to the width C_ℓ of SD-1.5's ℓ-th up block), ``out.*``
    (Conv1x1 C_1 → out_channels). L_d = len(block_out_channels), one level per Θ_ℓ^↑.
    """
    cfg = decoder_config(config)
    shapes = _film_shapes("in", cfg["latent_channels"], cfg["block_out_channels"][-1], d_t)
    for l, (c_in, c_out) in enumerate(_printed_levels(cfg), start=1):
        shapes |= {f"up.{l}.upsample.conv.weight": (c_in, c_in, 3, 3), f"up.{l}.upsample.conv.bias": (c_in,)}
        shapes |= _film_shapes(f"up.{l}.resnet", c_in, c_out, d_t)
    c_1 = cfg["block_out_channels"][0]
    return shapes | {"out.weight": (cfg["out_channels"], c_1, 1, 1), "out.bias": (cfg["out_channels"],)}


def printed_theta(config: Mapping = VAE_CONFIG, *, seed: int = 0, dtype=torch.float64,
                  d_t: int = D_T_PRINTED) -> dict:
    """A seeded Θ for :func:`vae_decoder_printed`, drawn as torch initialises each layer:
    kernels, matrices and their biases U(±1/√fan_in); GroupNorm γ = 1, β = 0."""
    g = torch.Generator().manual_seed(seed)
    shapes = printed_theta_shapes(config, d_t=d_t)
    theta = {}
    for k, shape in shapes.items():
        if ".norm" in k:
            theta[k] = torch.ones(shape, dtype=dtype) if k.endswith("weight") else torch.zeros(shape, dtype=dtype)
        else:
            fan_in = math.prod(shapes[k.rsplit(".", 1)[0] + ".weight"][1:])
            theta[k] = (torch.rand(shape, generator=g, dtype=dtype) * 2 - 1) / math.sqrt(fan_in)
    return theta


def vae_decoder_printed(theta: Mapping, z: torch.Tensor, *,
                        config: Mapping = VAE_CONFIG, eps: float = EPS_VAE,
                        ops: Ops = BOOK) -> torch.Tensor:
    """Def. 8.2, (93)–(95), as printed, with h = 0 in every FiLM ResnetBlock2D:

    H_0 = ResnetBlock2D_{Θ^in}(Z, 0)                                              (93)
    H_ℓ = ResnetBlock2D_{Θ_ℓ^↑}(Upsample2D^(2)(H_{ℓ−1}), 0),  ℓ = 1, …, L_d         (94)
    X̂ = Conv1x1_{Θ^out}(H_{L_d}),  H = 2^{L_d} H_z,  W = 2^{L_d} W_z               (95)

    z: (B, C_z, H_z, W_z) -> (B, 3, 2^{L_d}H_z, 2^{L_d}W_z); Θ: printed_theta_shapes.
    (93) normalises Z itself: GroupNorm^(G) over C_z = 4 channels needs G | 4, so the
    first block uses G = gcd(norm_num_groups, C_z) (4 for SD-1.5, whose G = 32 ∤ 4).
    """
    _check_ops(ops)
    cfg = decoder_config(config)
    Z, single = _batch(z, "Def. 8.2 as printed", "the latent Z",
                       cfg["latent_channels"])
    if not isinstance(theta, Mapping) or not isinstance(theta.get("in.gamma.weight"),
                                                        torch.Tensor) \
            or theta["in.gamma.weight"].dim() != 2:
        raise ValueError("Def. 8.2 as printed needs Θ keyed as "
                         "printed_theta_shapes(config): in.*, up.ℓ.*, out.*")
    d_t = theta["in.gamma.weight"].shape[1]
    _check_theta(theta, printed_theta_shapes(cfg, d_t=d_t), "Def. 8.2 as printed", Z)
    G = cfg["norm_num_groups"]
    h = Z.new_zeros(Z.shape[0], d_t)                # (93): "no time dependence: h = 0"
    H = resnet_block_2d_printed(sub(theta, "in"), Z, h, groups=math.gcd(G, Z.shape[1]),
                                eps=eps, ops=ops)                                # (93)
    for l in range(1, len(cfg["block_out_channels"]) + 1):
        U = ops.upsample_2d(sub(theta, f"up.{l}.upsample"), H)               # (24): ×2
        H = resnet_block_2d_printed(sub(theta, f"up.{l}.resnet"), U, h, groups=G,
                                    eps=eps, ops=ops)                        # (94)
    Xhat = ops.conv2d(sub(theta, "out"), H, padding=0)     # (95) Conv1x1: (B, 3, H, W)
    return Xhat[0] if single else Xhat


# --- how far a latent reaches --------------------------------------------------------

def influence(decode, z: torch.Tensor, *, pixel=(0, 0)) -> torch.Tensor:
    """How much each latent position moves one image pixel: Σ_c |∂(Σ_k X̂_{k,i,j}) / ∂Z_{c,·,·}|, by autograd.

    ``decode``: z -> image, e.g. ``lambda z: vae_decoder(theta, z, config=...)``; z: (1, C_z, H_z, W_z).
    Returns (H_z, W_z). An exact 0 means no path from that latent position to pixel (i, j).
    """
    if not isinstance(z, torch.Tensor) or z.dim() != 4 or z.shape[0] != 1:
        raise ValueError(f"influence takes one latent (1, C_z, H_z, W_z); got {getattr(z, 'shape', type(z))}")
    z = z.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        decode(z)[0, :, pixel[0], pixel[1]].sum().backward()
    return z.grad[0].abs().sum(dim=0)
