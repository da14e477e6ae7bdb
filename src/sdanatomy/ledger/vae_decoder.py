"""Ledger rows of §8.2 (Defs. 8.2–8.3, eqs. (92)–(96)): the VAE decoder against diffusers.

Imported by :mod:`sdanatomy.ledger`. References are diffusers' own modules, built from SD-1.5's
configuration on the meta device (``sd15.reference.meta``) and given seeded Θ where a row
computes: matrices and kernels U(±1/√fan_in), vectors (biases, GroupNorm γ and β) N(0, 1), so that
a swapped γ/β or a missing bias shows. Blocks are checked at SD-1.5's own widths; the whole
decoder at SD-1.5's configuration with narrower widths (:data:`NARROW_VAE_CONFIG`), because its structure —
the order of the stages, the number of blocks, ε, G, the sizes — does not depend on the widths,
and the full 49.5 M-parameter decoder takes seconds to fill with random numbers alone
(tests/test_decoder.py runs the full widths in float32 and float64).
"""
from __future__ import annotations

import copy
import dataclasses
import math

import torch

from sdanatomy.ledger.registry import Route, row
from sdanatomy.lecture.attention import multihead_attention
from sdanatomy.lecture.blocks import BOOK, TORCH, Ops, resnet_block_2d, resnet_block_2d_printed
from sdanatomy.lecture.vae_decoder import (printed_stages, printed_theta, printed_upsampling_factor, stages,
                      up_decoder_block_2d, upsampling_factor, vae_attention, vae_decoder, vae_decoder_printed)
from sdanatomy.lecture.layers import EPS_VAE, group_norm, sub, upsample_2d
from sdanatomy.lecture.notation import flatten, unflatten
from sdanatomy.sd15.reference import meta, seed_parameters, reference, narrow_vae, NARROW_VAE_CONFIG

# SD-1.5's VAE configuration with narrower widths (SD-1.5: 128, 256, 512, 512): 4 levels,
# layers_per_block = 2, G = 32, latent 4 channels, RGB out, attention in the mid block.
F64_NET = ("float64 (u = 1.1e-16): ~30 layers of sums of ≤ 4608 terms, in another order than "
           "diffusers' kernels; observed ≤ 1e-14")
F64_BLOCK = "float64: a few layers of sums of ≤ 4608 terms in another order: ≲ 1e-13 relative"
REL = "max |err| / max |ref|"
ROUTE_TOL = ("float64; the same layers by diffusers' modules and by the book's functions, sums in "
             "other orders: ≲ 1e-13 of the output scale (≲ 100 here)")
SIZES = ((1, 1), (1, 7), (3, 5), (13, 8), (64, 64), (64, 96), (97, 33))   # latent H_z × W_z


def _randn(seed, dtype, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(1000 + seed), dtype=dtype)


def _rel(Y, ref) -> float:
    return ((Y - ref).abs().max() / ref.abs().max()).item()


def _theta(module) -> dict:
    return {k: v.detach() for k, v in module.state_dict().items()}


# --- the whole decoder ------------------------------------------------------------------------

DECODER = "(92)–(96) VAE decoder 𝒟 = AutoencoderKL.decode"


@row(DECODER, section="8.2",
            formula=r"\hat X = \mathrm{conv\_out}\circ\mathrm{SiLU}\circ\mathrm{GN}\circ\mathrm{Up}_4\circ\cdots"
                    r"\circ\mathrm{Up}_1\circ\mathrm{Mid}\circ\mathrm{conv\_in}\circ\mathrm{post\_quant\_conv}(Z)",
            reference="diffusers AutoencoderKL.decode(z).sample, SD-1.5's config with widths (32, 32, 64, 64); "
                      "latent 2×4×3×5", tol=1e-12, why_tol=F64_NET, error=REL)
def _row_decoder(seed=0, dtype=torch.float64):
    vae, theta = narrow_vae(seed, dtype)
    z = _randn(seed, dtype, 2, 4, 3, 5)
    with torch.no_grad():
        ref = vae.decode(z).sample
    return max(_rel(vae_decoder(theta, z, config=NARROW_VAE_CONFIG, ops=ops), ref) for ops in (BOOK, TORCH))


def executed_stages(vae: torch.nn.Module, z: torch.Tensor) -> list[tuple[str, str]]:
    """(module name, kind) of the stages ``vae.decode(z)`` calls, in call order, by forward hooks.

    Stages: post_quant_conv, the Decoder's conv_in, conv_norm_out, conv_act, conv_out, and every
    ResnetBlock2D, Attention and Upsample2D inside it. Works on the meta device.
    """
    kinds = {"ResnetBlock2D": "ResnetBlock2D", "Attention": "Attention", "Upsample2D": "Upsample2D"}
    top = {"post_quant_conv", "decoder.conv_in", "decoder.conv_norm_out", "decoder.conv_act", "decoder.conv_out"}
    seen, hooks = [], []
    for name, m in vae.named_modules():
        kind = kinds.get(type(m).__name__) if name.startswith("decoder.") else None
        if name in top:
            kind = "Conv{}x{}".format(*m.kernel_size) if isinstance(m, torch.nn.Conv2d) else type(m).__name__
        if kind:
            hooks.append(m.register_forward_pre_hook(lambda _, __, name=name, kind=kind: seen.append((name, kind))))
    try:
        with torch.no_grad():
            vae.decode(z)
    finally:
        for h in hooks:
            h.remove()
    return seen


def edit_distance(a, b) -> int:
    """Levenshtein distance: the fewest insertions, deletions and substitutions turning a into b."""
    d = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, d[0] = d[0], i
        for j, y in enumerate(b, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (x != y))
    return d[-1]


def _sd15_stages():
    return executed_stages(meta("vae"), torch.empty(1, 4, 8, 8, device="meta"))


STAGES = "(92)–(96) decoder stages, as SD-1.5 runs them"
RESNET_CONVS = ("conv1", "conv2", "conv_shortcut")


def executed_printed_stages(config=NARROW_VAE_CONFIG, *, seed: int = 0, dtype=torch.float64) -> list[str]:
    """The kinds of the stages :func:`vae_decoder_printed` runs, in call order, recorded while it
    runs (a 1×2 latent): each conv or Upsample2D call is traced to its Θ key, the calls of one
    ResnetBlock2D (conv1, conv2, conv_shortcut) grouped under the block's prefix."""
    theta = printed_theta(config, seed=seed, dtype=dtype)
    key = {id(v): k for k, v in theta.items()}
    calls = []                                                     # (stage, kind)

    def conv2d(th, X, **kw):
        parts = key[id(th["weight"])].split(".")[:-1]              # the conv's module path
        if parts[-1] in RESNET_CONVS:
            calls.append((".".join(parts[:-1]), "ResnetBlock2D"))
        else:
            calls.append((".".join(parts), "Conv{}x{}".format(*th["weight"].shape[-2:])))
        return TORCH.conv2d(th, X, **kw)

    def upsample_2d(th, X, **kw):
        calls.append((key[id(th["conv.weight"])].rsplit(".", 2)[0], "Upsample2D"))
        return TORCH.upsample_2d(th, X, **kw)

    ops = dataclasses.replace(TORCH, name="recording", conv2d=conv2d, upsample_2d=upsample_2d)
    with torch.no_grad():
        vae_decoder_printed(theta, torch.zeros(1, 4, 1, 2, dtype=dtype), config=config, ops=ops)
    out = []
    for stage in calls:
        if not out or out[-1] != stage:
            out.append(stage)
    return [kind for _, kind in out]


@row("(92)–(95) decoder stages as printed", section="8.2",
            formula=r"\mathrm{Res}(Z,0),\ [\mathrm{Up},\ \mathrm{Res}]\times L_d,\ \mathrm{Conv1x1}",
            reference="the modules diffusers' AutoencoderKL.decode calls (forward hooks, SD-1.5's config)",
            tol=0, why_tol="counts of blocks: integers, exact", error="edit distance between the kinds of stages",
            verdict="differs", corrected_by=STAGES,
            note="SD-1.5 runs 23 stages, Def. 8.2 has 10: before any upsampling SD-1.5 has post_quant_conv "
                 "(1×1), conv_in (3×3, 4→512) and a mid block ResnetBlock2D → self-attention → ResnetBlock2D "
                 "where (93) has one ResnetBlock2D on Z (whose GroupNorm^(32) cannot even normalise C_z = 4 "
                 "channels); each of its 4 up blocks runs 3 ResnetBlock2D and then Upsample2D, the last none; "
                 "the head is GroupNorm → SiLU → Conv 3×3, not Conv1x1.",
     route=Route(lambda seed=0, dtype=torch.float64: (
                     [k for _, k in printed_stages()], executed_printed_stages(seed=seed, dtype=dtype)),
                 how="the kinds of stages vae_decoder_printed runs, recorded call by call while it "
                     "decodes (widths (32, 32, 64, 64), L_d = 4), against printed_stages()",
                 atol=0.0, rtol=0.0, why="lists of kinds: equal or not"))
def _row_stages_printed(seed=0, dtype=torch.float64):
    return float(edit_distance([k for _, k in printed_stages()], [k for _, k in _sd15_stages()]))


@row(STAGES, section="8.2",
            formula=r"\mathrm{pqc},\ \mathrm{conv\_in},\ \mathrm{Res},\ \mathrm{Attn},\ \mathrm{Res},\ "
                    r"[\mathrm{Res}^{3},\ \mathrm{Up}]\times 3,\ \mathrm{Res}^{3},\ \mathrm{GN},\ \mathrm{SiLU},\ \mathrm{conv\_out}",
            reference="the modules diffusers' AutoencoderKL.decode calls (forward hooks, SD-1.5's config)",
            tol=0, why_tol="names and kinds of blocks: exact", error="edit distance between (name, kind) lists")
def _row_stages(seed=0, dtype=torch.float64):
    return float(edit_distance(stages(), _sd15_stages()))


# --- (93): the first block, h = 0, and the attention ---------------------------------------------

RESNET = "(93) ResnetBlock2D without time input (VAE, ε = 1e-6)"
RESNET_PATH = "vae.decoder.up_blocks.2.resnets.0"   # 512 -> 256: has the 1×1 shortcut (56)


def _resnet_case(seed, dtype, d_t=512):
    """SD-1.5's ResnetBlock2D (512 → 256), X, and FiLM Linears γ, β (d_t → 256) drawn as torch draws
    an nn.Linear: weight and bias U(±1/√d_t)."""
    module = reference(RESNET_PATH, seed=seed, dtype=dtype)
    theta = _theta(module)
    X = _randn(seed, dtype, 2, 512, 4, 3)
    g = torch.Generator().manual_seed(2000 + seed)
    film = {f"{name}.{p}": (torch.rand(shape, generator=g, dtype=dtype) * 2 - 1) / math.sqrt(d_t)
            for name in ("gamma", "beta") for p, shape in (("weight", (256, d_t)), ("bias", (256,)))}
    return module, theta, X, film


def _route_resnet_h0(seed=0, dtype=torch.float64):
    m, theta, X, film = _resnet_case(seed, dtype)
    ours = resnet_block_2d_printed(theta | film, X, X.new_zeros(2, 512), groups=32, eps=EPS_VAE)
    act = m.nonlinearity
    with torch.no_grad():
        W1 = m.conv1(act(m.norm1(X)))                                            # (52)
        U2 = (film["gamma.bias"][:, None, None] * m.norm2(W1)
              + film["beta.bias"][:, None, None])                                 # (54): γ(0), β(0)
        theirs = m.conv_shortcut(X) + m.conv2(act(U2))                           # (55)–(57)
    return ours, theirs


@row("(93) ResnetBlock2D(·, 0): h = 0 with the FiLM Linears of Def. 6.15", section="8.2",
            formula=r"\hat U_2 = \gamma(\mathbf 0)\odot U_2 + \beta(\mathbf 0) = b_\gamma\odot U_2 + b_\beta",
            reference=f"diffusers ResnetBlock2D {RESNET_PATH} (temb=None)", tol=1e-12, why_tol=F64_BLOCK,
            error=REL, verdict="differs", corrected_by=RESNET,
            note="h = 0 does not switch Def. 6.15's FiLM off: γ(0) = b_γ and β(0) = b_β, the Linears' "
                 "biases, still scale and shift GroupNorm's output (here as torch initialises a Linear, "
                 "U(±1/√d_t)). The block is time-independent, but it is SD-1.5's only if b_γ = 1, b_β = 0 "
                 "or once they are folded into norm2. SD-1.5's VAE blocks have no time projection at all "
                 "(temb_channels=None): h is absent, not zero.",
     route=Route(_route_resnet_h0,
                 how="diffusers' norm1, conv1, norm2, conv2, conv_shortcut of the block, with "
                     "γ(0) = b_γ and β(0) = b_β applied after norm2, as (54) prints",
                 atol=1e-11, rtol=1e-11, why=ROUTE_TOL))
def _row_resnet_h0(seed=0, dtype=torch.float64):
    module, theta, X, film = _resnet_case(seed, dtype)
    with torch.no_grad():
        ref = module(X, None)
    Y = resnet_block_2d_printed(theta | film, X, X.new_zeros(2, 512), groups=32, eps=EPS_VAE)   # all of (52)–(57)
    return _rel(Y, ref)


@row(RESNET, section="8.2",
            formula=r"S + \mathrm{Conv}(\mathrm{SiLU}(\mathrm{GN}(\mathrm{Conv}(\mathrm{SiLU}(\mathrm{GN}(X))))))",
            reference=f"diffusers ResnetBlock2D {RESNET_PATH} (temb=None)", tol=1e-12, why_tol=F64_BLOCK,
            error=REL)
def _row_resnet(seed=0, dtype=torch.float64):
    module, theta, X, _ = _resnet_case(seed, dtype)
    with torch.no_grad():
        ref = module(X, None)
    return max(_rel(resnet_block_2d(theta, X, None, groups=32, eps=EPS_VAE, ops=ops), ref) for ops in (BOOK, TORCH))


@row("(93) h = 0: Def. 6.15's FiLM folds into norm2's affine", section="8.2",
            formula=r"b_\gamma\odot(g_2\odot\hat U + c_2) + b_\beta = (b_\gamma g_2)\odot\hat U + (b_\gamma c_2 + b_\beta)",
            reference=f"diffusers ResnetBlock2D {RESNET_PATH} (temb=None), norm2 ← (b_γ g₂, b_γ c₂ + b_β)",
            tol=1e-12, why_tol=F64_BLOCK, error=REL)
def _row_resnet_h0_folded(seed=0, dtype=torch.float64):
    module, theta, X, film = _resnet_case(seed, dtype)
    theta = {k: v.clone() for k, v in theta.items()}                # the printed block keeps SD-1.5's norm2
    with torch.no_grad():
        g2, c2 = module.norm2.weight.clone(), module.norm2.bias.clone()
        module.norm2.weight.copy_(film["gamma.bias"] * g2)
        module.norm2.bias.copy_(film["gamma.bias"] * c2 + film["beta.bias"])
        ref = module(X, None)
    Y = resnet_block_2d_printed(theta | film, X, X.new_zeros(2, 512), groups=32, eps=EPS_VAE)
    return _rel(Y, ref)


ATTENTION = "(93) mid-block self-attention (absent from Def. 8.2)"
ATTENTION_PATH = "vae.decoder.mid_block.attentions.0"


def _attention_case(seed, dtype):
    module = reference(ATTENTION_PATH, seed=seed, dtype=dtype)     # C = 512, one head
    X = _randn(seed, dtype, 2, 512, 3, 5)                          # N = 15 tokens
    with torch.no_grad():
        ref = module(X)
    return _theta(module), X, ref


@row(ATTENTION, section="8.2",
            formula=r"X + \mathrm{unflatten}\big(\mathrm{SDPA}(Q, K, V)\,W_O + b_O\big),"
                    r"\ Q = TW_Q + b_Q,\ K = TW_K + b_K,\ V = TW_V + b_V,"
                    r"\ T = \mathrm{flatten}(\mathrm{GN}(X))",
            reference=f"diffusers Attention {ATTENTION_PATH} (heads=1, residual_connection=True)",
            tol=1e-12, why_tol=F64_BLOCK, error=REL)
def _row_attention(seed=0, dtype=torch.float64):
    theta, X, ref = _attention_case(seed, dtype)
    return max(_rel(vae_attention(theta, X, groups=32, eps=EPS_VAE, ops=ops), ref) for ops in (BOOK, TORCH))


def def_6_14_theta(theta: dict) -> dict:
    """The VAE attention's Θ in Def. 6.14's parameters (W_Q, W_K, W_V, W_O, b_O), as faithfully as
    they go: b_K dropped (it cancels in the softmax), b_V folded into b_O (each query's attention
    weights sum to 1, so b_V reaches the output as W_O b_V); b_Q has no slot and is dropped."""
    return {"to_q.weight": theta["to_q.weight"], "to_k.weight": theta["to_k.weight"],
            "to_v.weight": theta["to_v.weight"], "to_out.0.weight": theta["to_out.0.weight"],
            "to_out.0.bias": theta["to_out.0.bias"] + theta["to_out.0.weight"] @ theta["to_v.bias"]}


def _route_attention_mha(seed=0, dtype=torch.float64):
    theta, X, _ = _attention_case(seed, dtype)
    m = copy.deepcopy(reference(ATTENTION_PATH, seed=seed, dtype=dtype))
    with torch.no_grad():
        m.to_out[0].bias.add_(m.to_out[0].weight @ m.to_v.bias)               # b_O' = b_O + W_O b_V
        for lin in (m.to_q, m.to_k, m.to_v):
            lin.bias.zero_()                                                  # no b_Q, b_K, b_V
        theirs = m(X)
    return _attention_mha(theta, X), theirs


def _attention_mha(theta, X):
    H, W = X.shape[-2:]
    T = flatten(group_norm(sub(theta, "group_norm"), X, groups=32, eps=EPS_VAE))      # (B, N, C)
    return X + unflatten(multihead_attention(def_6_14_theta(theta), T, heads=1), H, W)  # (31)–(33), h = 1


@row("(93) Def. 6.14 MultiheadAttention (h = 1) as the VAE's attention", section="8.2",
            formula=r"X + \mathrm{unflatten}(\mathrm{MultiheadAttention}(T, T)),\ "
                    r"Q = TW_Q,\ K = TW_K,\ V = TW_V,\ b_O' = b_O + W_O b_V",
            reference=f"diffusers Attention {ATTENTION_PATH}", tol=1e-12, why_tol=F64_BLOCK, error=REL,
            verdict="differs", corrected_by=ATTENTION,
            note="The decoder's attention (not in Def. 8.2) projects with biases: Q = TW_Q + b_Q, K = TW_K + b_K, "
                 "V = TW_V + b_V. Def. 6.14 (31)–(33) has none but b_O. Mapped as well as it goes — b_K dropped "
                 "(it adds q·b_K to all scores of a query: the softmax cancels it), b_V folded into "
                 "b_O + W_O b_V (each query's weights sum to 1) — what remains is b_Q, a per-key score "
                 "b_Q·k_m/√d that Def. 6.14's Θ has no slot for.",
     checks=("sdanatomy.lecture.attention.multihead_attention",),
     route=Route(_route_attention_mha,
                 how="diffusers' own Attention (group_norm, one head, residual) given Def. 6.14's Θ: "
                     "b_Q, b_K, b_V zeroed, b_O + W_O b_V as its output bias",
                 atol=1e-11, rtol=1e-11, why=ROUTE_TOL))
def _row_attention_mha(seed=0, dtype=torch.float64):
    theta, X, ref = _attention_case(seed, dtype)
    return _rel(_attention_mha(theta, X), ref)


# --- (94): one level ---------------------------------------------------------------------------

UP_BLOCK = "(94) UpDecoderBlock2D: n ResnetBlock2D, then Upsample2D"
UP_PATH = "vae.decoder.up_blocks.2"   # 512 -> 256: three ResnetBlock2D (the first with shortcut), Upsample2D


@row("(94) level as printed: Upsample2D, then ResnetBlock2D", section="8.2",
            formula=r"H_\ell = \mathrm{ResnetBlock2D}(\mathrm{Upsample2D}^{(2)}(H_{\ell-1}))",
            reference="SD-1.5's UpDecoderBlock2D vae.decoder.up_blocks.1 cut to its first ResnetBlock2D "
                      "(the same Θ in both orders)", tol=1e-12, why_tol=F64_BLOCK, error=REL,
            verdict="differs", corrected_by=UP_BLOCK,
            note="SD-1.5's levels run their ResnetBlock2D first, at the lower resolution, and upsample last "
                 "(the reverse of (94)); Conv2d does not commute with Upsample2D, so even with one block and "
                 "the same Θ the two orders differ. SD-1.5 also runs n = layers_per_block + 1 = 3 blocks per "
                 "level, not 1, and its resnets therefore work at a quarter of the pixels (94) would use.",
     route=Route(lambda seed=0, dtype=torch.float64: _route_up_printed(seed, dtype),
                 how="the block's own Upsample2D, then its ResnetBlock2D (diffusers' modules), in "
                     "(94)'s order",
                 atol=1e-11, rtol=1e-11, why=ROUTE_TOL))
def _row_up_printed(seed=0, dtype=torch.float64):
    block, theta, X = _level_case(seed, dtype)
    with torch.no_grad():
        ref = block(X)                                                # ResnetBlock2D, then Upsample2D
    return _rel(_level_printed(theta, X), ref)


def _level_case(seed, dtype):
    block = copy.deepcopy(meta("vae").decoder.up_blocks[1])
    block.resnets = block.resnets[:1]                                 # n = 1: SD-1.5's class and settings
    block = seed_parameters(block, seed, dtype)
    return block, _theta(block), _randn(seed, dtype, 2, 512, 3, 4)


def _level_printed(theta, X):
    U = upsample_2d(sub(theta, "upsamplers.0"), X)                    # (94) as printed: Upsample2D first
    return resnet_block_2d(sub(theta, "resnets.0"), U, None, groups=32, eps=EPS_VAE)


def _route_up_printed(seed=0, dtype=torch.float64):
    block, theta, X = _level_case(seed, dtype)
    with torch.no_grad():
        theirs = block.resnets[0](block.upsamplers[0](X), None)      # diffusers' modules, (94)'s order
    return _level_printed(theta, X), theirs


@row(UP_BLOCK, section="8.2",
            formula=r"\mathrm{Upsample2D}^{(2)}(\mathrm{Res}_3(\mathrm{Res}_2(\mathrm{Res}_1(X))))",
            reference=f"diffusers UpDecoderBlock2D {UP_PATH}", tol=1e-12, why_tol=F64_BLOCK, error=REL)
def _row_up(seed=0, dtype=torch.float64):
    module = reference(UP_PATH, seed=seed, dtype=dtype)
    X = _randn(seed, dtype, 2, 512, 3, 4)
    with torch.no_grad():
        ref = module(X)
    return max(_rel(up_decoder_block_2d(_theta(module), X, n=3, C_out=256, upsample=True, groups=32,
                                        eps=EPS_VAE, ops=ops), ref) for ops in (BOOK, TORCH))


# --- (95)–(96): the image size ---------------------------------------------------------------

SIZE = "(95)–(96) image size H = 2^{L_d − 1} H_z"


def _sd15_sizes() -> list[tuple[int, int]]:
    """(H, W) of SD-1.5's decode at each latent size of SIZES: diffusers on the meta device."""
    vae = meta("vae")
    out = []
    with torch.no_grad():
        for H_z, W_z in SIZES:
            out.append(tuple(vae.decode(torch.empty(1, 4, H_z, W_z, device="meta")).sample.shape[-2:]))
    return out


LEVELS_PRINTED = "(95)–(96) one L_d for the levels and the upsamplings, as printed"
L_D_RANGE = range(1, 7)


def _printed_config(L_d: int) -> dict:
    """NARROW_VAE_CONFIG with L_d levels (Def. 8.2's L_d = the number of Θ_ℓ^↑), widths 32."""
    return dict(NARROW_VAE_CONFIG, block_out_channels=(32,) * L_d, up_block_types=("UpDecoderBlock2D",) * L_d)


def _printed_factors(seed, dtype) -> list[int]:
    """H / H_z of Def. 8.2 as printed, executed (vae_decoder_printed on a 1×2 latent), L_d = 1…6;
    0 where the width is not the same multiple."""
    out = []
    for L_d in L_D_RANGE:
        cfg = _printed_config(L_d)
        Y = vae_decoder_printed(printed_theta(cfg, seed=seed, dtype=dtype),
                                _randn(seed, dtype, 1, 4, 1, 2), config=cfg)
        out.append(Y.shape[-2] if Y.shape[-1] == 2 * Y.shape[-2] else 0)
    return out


@row(LEVELS_PRINTED, section="8.2",
            formula=r"H = 2^{L_d} H_z,\ L_d = |\{\Theta^\uparrow_\ell\}|:\ \text{one upsampling per level}",
            reference="diffusers AutoencoderKL (SD-1.5's config, meta device): its up blocks and "
                      "decode's output size; Def. 8.2 executed for L_d = 1…6 (widths 32)",
            tol=0, why_tol="counts and log₂ of sizes: integers, exact",
            error="min over L_d of |L_d − up blocks| + |log₂(H/H_z) printed − log₂(H/H_z) SD-1.5|",
            verdict="differs", corrected_by=SIZE,
            note="Def. 8.2 gives each of its L_d levels Θ_ℓ^↑ one Upsample2D (94), so one number counts "
                 "both the up blocks and the doublings. SD-1.5 has 4 up blocks, and the last has no "
                 "Upsample2D: 3 doublings, 8× (512 from 64). L_d = 4 fits the blocks but gives 16× "
                 "(1024 from 64); L_d = 3 gives 8× but one up block too few. No L_d fits both.",
     checks=("sdanatomy.lecture.vae_decoder.printed_upsampling_factor",),
     route=Route(lambda seed=0, dtype=torch.float64: (
                     _printed_factors(seed, dtype),
                     [printed_upsampling_factor(_printed_config(L_d)) for L_d in L_D_RANGE]),
                 how="the closed form 2^{L_d} (printed_upsampling_factor) against the size "
                     "vae_decoder_printed returns, L_d = 1…6",
                 atol=0.0, rtol=0.0, why="sizes: integers, exact"))
def _row_size_printed(seed=0, dtype=torch.float64):
    blocks = len(meta("vae").decoder.up_blocks)                        # SD-1.5: 4
    factor = dict(zip(SIZES, _sd15_sizes()))[(1, 1)][0]                 # SD-1.5: 8
    return float(min(abs(L_d - blocks) + (abs(math.log2(f) - math.log2(factor)) if f > 0 else math.inf)
                     for L_d, f in zip(L_D_RANGE, _printed_factors(seed, dtype))))


@row(SIZE, section="8.2",
            formula=r"H = 2^{L_d-1} H_z = 8H_z,\ W = 8W_z\ \text{for any } H_z, W_z \ge 1",
            reference="diffusers AutoencoderKL.decode's output size (SD-1.5's config, meta device), "
                      f"latents {', '.join(f'{h}×{w}' for h, w in SIZES)}", tol=0,
            why_tol="sizes: integers, exact", error="number of latent sizes where a size differs")
def _row_size(seed=0, dtype=torch.float64):
    theta = {k: v for k, v in meta("vae").state_dict().items()}        # meta: shapes, no arithmetic
    bad = 0
    for (H_z, W_z), sd in zip(SIZES, _sd15_sizes()):
        ours = tuple(vae_decoder(theta, torch.empty(1, 4, H_z, W_z, device="meta")).shape[-2:])
        formula = (upsampling_factor() * H_z, upsampling_factor() * W_z)
        bad += not (ours == sd == formula)
    return float(bad)


# --- the chapter's check at many sizes ---------------------------------------------------------------------

def compare_with_diffusers(vae: torch.nn.Module, shapes, *, ops: Ops = BOOK, seed: int = 0) -> list[dict]:
    """:func:`vae_decoder` against ``vae.decode(z).sample`` (the same Θ) at each latent (B, C_z, H_z, W_z).

    Returns one dict per shape: latent and image shapes, and the error max|𝒟(z) − decode(z)| / max|decode(z)|.
    """
    if not isinstance(vae, torch.nn.Module) or not hasattr(vae, "decode"):
        raise TypeError(f"vae must be a diffusers AutoencoderKL; got {type(vae).__name__}")
    theta = {k: v.detach() for k, v in vae.state_dict().items()}
    p = next(vae.parameters())
    out = []
    for shape in shapes:
        z = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=p.dtype).to(p.device)
        with torch.no_grad():
            ref = vae.decode(z).sample
            Y = vae_decoder(theta, z, config=vae.config, ops=ops)
        out.append({"latent": tuple(z.shape), "image": tuple(Y.shape), "same shape": Y.shape == ref.shape,
                    "error": ((Y - ref).abs().max() / ref.abs().max()).item()})
    return out
