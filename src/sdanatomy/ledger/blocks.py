"""Ledger rows of lecture §6.9–6.10: each block of sdanatomy.lecture.blocks against the diffusers module.

References are diffusers' own modules, never restated here:

* the real SD-1.5 submodule, where it is small enough to run in a fraction of a second
  (a ResnetBlock2D, a Transformer2DModel: ``sd15_module("unet.down_blocks.0.attentions.0")``);
* otherwise the block of :func:`narrow_unet`: diffusers' ``UNet2DConditionModel`` built from
  SD-1.5's configuration with every field kept — block types, 2 resnets per level, 8 heads,
  G = 32, ε, padding, d_ctx = 768 — except the channel widths, (32, 64, 64, 64) for
  (320, 640, 1280, 1280). diffusers' block classes are width-agnostic (every width is a
  constructor argument), so the narrow block is SD-1.5's block at another width.

Θ is seeded: matrices and kernels U(±1/√fan_in), as torch initialises them, and every vector
(biases, GroupNorm/LayerNorm γ and β) N(0, 1), so that no parameter sits at a value (γ = 1,
β = 0) that could hide a mistake. Errors are relative: max|ours − diffusers| / max|diffusers|.

Each "differs" row computes its printed reading a second way (its ``Route``): diffusers' own
submodules called in the printed order (:func:`_resnet_by_modules`,
:func:`_attention_only_by_modules`), the printed function run with its resolutions recorded,
or a count from the book's Θ shapes of SD-1.5's configuration (``lecture.unet.theta_shapes``).
"""
from __future__ import annotations

import copy
import dataclasses
import math

import torch

from sdanatomy.ledger.registry import Route, row
from sdanatomy.lecture.blocks import (ATTENTION_ONLY, CHAIN_SKIPS_ATTENTION, FILM_AFTER_NORM, NO_SILU_ON_H,
                     RESNET_SLIPS, TORCH, UNFLATTEN_Y, cross_attn_down_block_2d,
                     cross_attn_down_block_2d_printed, cross_attn_up_block_2d,
                     cross_attn_up_block_2d_printed, down_block_2d, down_block_2d_printed, feed_forward,
                     layer_norm, mid_block_2d_cross_attn, mid_block_2d_cross_attn_printed,
                     printed_resnet_theta, resnet_block_2d, resnet_block_2d_printed, transformer_2d,
                     transformer_2d_printed, up_block_2d, up_block_2d_printed)
from sdanatomy.lecture.config import UNET_CONFIG, VAE_CONFIG
from sdanatomy.lecture.layers import EPS_UNET, EPS_VAE, sub
from sdanatomy.lecture.unet import theta_shapes as unet_theta_shapes
from sdanatomy.lecture.vae_decoder import theta_shapes as vae_theta_shapes
from sdanatomy.sd15.reference import (meta, seed_parameters, reference, sd15_module, narrow_unet, NARROW_WIDTHS, NARROW_UNET_CONFIG, ResnetBlock2D, CrossAttnUpBlock2D, DownBlock2D, UpBlock2D, get_down_block)

REL = "max |ours − diffusers| / max |diffusers|"
F64_BLOCK = ("float64; sums of ≤ 6·10³ products (k²·C_in, 4·C) in another order than torch's kernels: "
             "≲ 6·10³·2⁻⁵³ ≈ 7e-13 of the output scale")
TOL_BLOCK = 1e-12
COUNT = "integers: exact"
WIDTH_AGNOSTIC = "SD-1.5's config at widths (32, 64, 64, 64)"


# --- references ------------------------------------------------------------------------------

def _theta(module) -> dict:
    return {k: v.detach() for k, v in module.state_dict().items()}


def _randn(seed, dtype, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(1000 + seed), dtype=dtype)


def _rel(Y, ref) -> float:
    return ((Y - ref).abs().max() / ref.abs().max()).item()


def _rel_states(ours, ref) -> float:
    """Relative error over an output and its skip states; inf if they do not even agree in number."""
    (Y, S), (y, s) = ours, ref
    if len(S) != len(s) or any(a.shape != b.shape for a, b in zip(S, s)):
        return math.inf
    return max([_rel(Y, y)] + [_rel(a, b) for a, b in zip(S, s)])


# --- second routes: diffusers' own modules, called in the printed order -------------------

ROUTE_BLOCK = ("float64; the same layers (torch's kernels inside diffusers' modules, the book's "
               "or torch's in the printed function) summed in other orders: ≲ 1e-13 of the output "
               "scale, which is ≲ 100 here")
ROUTE_ATOL = ROUTE_RTOL = 1e-11


def _block_route(how: str, compute) -> Route:
    return Route(compute, how=how, atol=ROUTE_ATOL, rtol=ROUTE_RTOL, why=ROUTE_BLOCK)


def _count_route(how: str, compute) -> Route:
    return Route(compute, how=how, atol=0.0, rtol=0.0, why="counts: integers, exact")


def _resnet_by_modules(m, X, h, slips):
    """Def. 6.15 as printed, by diffusers' ResnetBlock2D's own submodules in the printed wiring,
    with printed_resnet_theta's map: γ(h) = 1, β = time_emb_proj, Θ^(s) = identity where SD-1.5
    has no shortcut (so S = X)."""
    act = m.nonlinearity
    W1 = m.conv1(act(m.norm1(X)))                                       # (52)
    h_in = h if NO_SILU_ON_H in slips else act(h)                       # (53): h, as printed
    beta = m.time_emb_proj(h_in)[:, :, None, None]                      # (53) β(h)
    U2 = m.norm2(W1) + beta if FILM_AFTER_NORM in slips else m.norm2(W1 + beta)   # (54)
    W2 = m.conv2(act(U2))                                               # (55)
    S = m.conv_shortcut(X) if m.conv_shortcut is not None else X        # (56)
    return S + W2                                                       # (57)


def _attention_only_by_modules(tm, X, C):
    """(64)–(67) = (69)–(72) as printed, by diffusers: flatten, attn1, attn2, unflatten."""
    B, Ch, H, W = X.shape
    block = tm.transformer_blocks[0]
    T = X.permute(0, 2, 3, 1).reshape(B, H * W, Ch)                     # (25)
    V = block.attn2(block.attn1(T), encoder_hidden_states=C)            # (65)–(66)
    return V.reshape(B, H, W, Ch).permute(0, 3, 1, 2)                   # (26)


def _stage_by_modules(tm, X, C, slips):
    if ATTENTION_ONLY in slips:
        return _attention_only_by_modules(tm, X, C)
    return tm(X, encoder_hidden_states=C, return_dict=False)[0]


def _recording_ops(seen: list):
    """TORCH's layers, recording the H×W of every GroupNorm input: where the resnets run."""
    def group_norm(theta, X, **kw):
        seen.append(tuple(X.shape[-2:]))
        return TORCH.group_norm(theta, X, **kw)
    return dataclasses.replace(TORCH, name="recording", group_norm=group_norm)


# --- 6.9 ResnetBlock2D (52)–(57) -----------------------------------------------------------

# Real SD-1.5 blocks: 320 → 320 (identity shortcut) and 320 → 640 (1×1 shortcut) of the U-Net.
RESNETS = ("unet.down_blocks.0.resnets.1", "unet.down_blocks.1.resnets.0")
RESNET_REF = "diffusers ResnetBlock2D: SD-1.5's down_blocks.0.resnets.1 (320→320) and .1.resnets.0 (320→640)"


def _resnet_case(path, seed, dtype, H=6, W=5):
    m = sd15_module(path, seed=seed, dtype=dtype)
    th = _theta(m)
    X = _randn(seed, dtype, 2, th["norm1.weight"].shape[0], H, W)
    h = _randn(seed + 1, dtype, 2, th["time_emb_proj.weight"].shape[1])     # d_t = 1280
    with torch.no_grad():
        ref = m(X, h)
    return th, X, h, ref


@row("(52)–(57) ResnetBlock2D", section="6.9",
            formula=r"S + \mathrm{Conv}(\mathrm{SiLU}(\mathrm{GN}(W_1 + \mathrm{Linear}(\mathrm{SiLU}(h)))))",
            reference=RESNET_REF + "; VAE decoder's up_blocks.3.resnets.0 (256→128, no h, ε = 1e-6)",
            tol=TOL_BLOCK, why_tol=F64_BLOCK, error=REL)
def _row_resnet(seed=0, dtype=torch.float64):
    err = 0.0
    for path in RESNETS:
        th, X, h, ref = _resnet_case(path, seed, dtype)
        err = max(err, _rel(resnet_block_2d(th, X, h, eps=EPS_UNET), ref))
    m = reference("vae.decoder.up_blocks.3.resnets.0", seed=seed, dtype=dtype)
    X = _randn(seed, dtype, 2, 256, 6, 5)
    with torch.no_grad():
        ref = m(X, None)
    return max(err, _rel(resnet_block_2d(_theta(m), X, None, eps=EPS_VAE), ref))


def _printed_resnet_row(slips):
    def measure(seed=0, dtype=torch.float64):
        err = math.inf
        for path in RESNETS:
            th, X, h, ref = _resnet_case(path, seed, dtype)
            Y = resnet_block_2d_printed(printed_resnet_theta(th), X, h, eps=EPS_UNET, slips=slips)
            err = min(err, _rel(Y, ref))           # the smaller of the two: the difference is in both
        return err
    return measure


def _printed_resnet_route(slips):
    def compute(seed=0, dtype=torch.float64):
        ours, theirs = [], []
        for path in RESNETS:
            m = sd15_module(path, seed=seed, dtype=dtype)
            th, X, h, _ = _resnet_case(path, seed, dtype)
            ours.append(resnet_block_2d_printed(printed_resnet_theta(th), X, h, eps=EPS_UNET,
                                                slips=slips).flatten())
            with torch.no_grad():
                theirs.append(_resnet_by_modules(m, X, h, slips).flatten())
        return torch.cat(ours), torch.cat(theirs)
    return Route(compute, how="diffusers ResnetBlock2D's own norm1, conv1, time_emb_proj, norm2, "
                              "conv2, conv_shortcut called in the printed order, both blocks",
                 atol=ROUTE_ATOL, rtol=ROUTE_RTOL, why=ROUTE_BLOCK)


PRINTED_MAP = ("Θ mapped by printed_resnet_theta: Θ^(β) = time_emb_proj, γ(h) ≡ 1, Θ^(s) = identity "
               "where SD-1.5 has no shortcut")
for _name, _slips, _formula, _note in [
    ("(52)–(57) ResnetBlock2D, as printed", RESNET_SLIPS,
     r"S + \mathrm{Conv}(\mathrm{SiLU}(\gamma(h)\odot\mathrm{GN}(W_1)+\beta(h)))",
     "SD-1.5 has one time Linear, applied to SiLU(h), whose output is added to W_1 *before* the second "
     "GroupNorm; (53)–(54) print a scale and a shift of Linear(h) *after* it, and (56) a 1×1 shortcut "
     "in every block. " + PRINTED_MAP + "; the smaller error of the two blocks."),
    ("(53)–(54) ResnetBlock2D, as printed: FiLM after GroupNorm", (FILM_AFTER_NORM,),
     r"\gamma(h)\odot\mathrm{GN}(W_1)+\beta(h)",
     "The shift enters before the norm in SD-1.5: GN(W_1 + β) subtracts the group mean of β and rescales "
     "it by the group's spread, which no FiLM γ ⊙ GN(W_1) + β after the norm reproduces. Only this "
     "reading is kept (SiLU(h) as SD-1.5). " + PRINTED_MAP + "."),
    ("(53) ResnetBlock2D, as printed: Linear(h) without SiLU", (NO_SILU_ON_H,),
     r"\beta(h) = \mathrm{Linear}(h)",
     "diffusers' ResnetBlock2D applies SiLU to the time embedding before time_emb_proj (skip_time_act="
     "False), so SD-1.5's shift is Linear(SiLU(h)). Only this reading is kept (shift before the norm, "
     "as SD-1.5). " + PRINTED_MAP + "."),
]:
    row(_name, section="6.9", formula=_formula, reference=RESNET_REF, tol=TOL_BLOCK,
        why_tol="the tolerance of the matching row", error=REL + ", the smaller of two blocks",
        verdict="differs", corrected_by="(52)–(57) ResnetBlock2D", note=_note,
        route=_printed_resnet_route(_slips))(_printed_resnet_row(_slips))


def _sd15_resnets():
    """Every ResnetBlock2D of SD-1.5's U-Net and VAE decoder (meta modules: structure only)."""
    unet, vae = meta("unet"), meta("vae")
    return [m for root in (unet, vae.decoder) for m in root.modules() if isinstance(m, ResnetBlock2D)]


@row("(56) shortcut Conv1x1 only where C_in ≠ C_out", section="6.9",
            formula=r"S = \mathrm{Conv1x1}(X)\ \text{if}\ C_{in} \ne C_{out},\ S = X\ \text{else}",
            reference="the 36 ResnetBlock2D modules of SD-1.5's U-Net (22) and VAE decoder (14)", tol=0,
            why_tol=COUNT, error="blocks where (has conv_shortcut) ≠ (C_in ≠ C_out)",
     checks=("sdanatomy.lecture.blocks.resnet_block_2d",))
def _row_shortcut(seed=0, dtype=torch.float64):
    return float(sum((m.conv_shortcut is not None) != (m.in_channels != m.out_channels)
                     for m in _sd15_resnets()))


def _resnet_prefixes(shapes) -> list[str]:
    return [k.removesuffix(".norm1.weight") for k in shapes
            if ".resnets." in k and k.endswith(".norm1.weight")]


def _no_shortcut_in_config() -> int:
    """Resnets of SD-1.5's U-Net and VAE decoder whose Θ, by the book's shape tables, has no
    conv_shortcut: where (56)'s Θ^(s) has nothing to be."""
    return sum(f"{p}.conv_shortcut.weight" not in shapes
               for shapes in (unet_theta_shapes(UNET_CONFIG), vae_theta_shapes(VAE_CONFIG))
               for p in _resnet_prefixes(shapes))


@row("(56) shortcut Conv1x1 in every block, as printed", section="6.9",
            formula=r"S = \mathrm{Conv1x1}_{\Theta^{(s)}}(X)",
            reference="the 36 ResnetBlock2D modules of SD-1.5's U-Net (22) and VAE decoder (14)", tol=0,
            why_tol=COUNT, error="blocks with no Θ^(s) (conv_shortcut) in SD-1.5 (U-Net 8, VAE decoder 12)",
            verdict="differs", corrected_by="(56) shortcut Conv1x1 only where C_in ≠ C_out",
            note="(56) gives every block a learnable 1×1 conv Θ^(s). SD-1.5 has one only where the channel "
                 "count changes; elsewhere S = X, with no parameters (an identity kernel would compute the "
                 "same, but it is not in Θ: the printed Θ_ResnetBlock2D has C² + C parameters too many).",
     checks=("sdanatomy.lecture.blocks.resnet_block_2d_printed",),
     route=_count_route("the same count from the book's own Θ shapes of SD-1.5's config "
                        "(lecture.unet.theta_shapes, lecture.vae_decoder.theta_shapes): resnets "
                        "without conv_shortcut.weight",
                        lambda seed=0, dtype=torch.float64: (_row_shortcut_printed(seed, dtype),
                                                             float(_no_shortcut_in_config()))))
def _row_shortcut_printed(seed=0, dtype=torch.float64):
    return float(sum(m.conv_shortcut is None for m in _sd15_resnets()))


# --- 6.10 the transformer: (64)–(66), (69)–(72), (76)–(77) ---------------------------------

TRANSFORMER = "unet.down_blocks.0.attentions.0"
TRANSFORMER_REF = "diffusers Transformer2DModel: SD-1.5's down_blocks.0.attentions.0 (C = 320, 8 heads, d_ctx = 768)"


def _transformer_case(seed, dtype, H=6, W=5, M=77):
    m = sd15_module(TRANSFORMER, seed=seed, dtype=dtype)
    X = _randn(seed, dtype, 2, 320, H, W)
    C = _randn(seed + 1, dtype, 2, M, 768)
    with torch.no_grad():
        ref = m(X, encoder_hidden_states=C, return_dict=False)[0]
    return _theta(m), X, C, ref, m


@row("(69)–(72) attention stage = Transformer2DModel", section="6.10",
            formula=r"X + \mathrm{proj_{out}}(\mathrm{Block}(\mathrm{proj_{in}}(\mathrm{GN}(X)), C))",
            reference=TRANSFORMER_REF, tol=TOL_BLOCK, why_tol=F64_BLOCK, error=REL)
def _row_transformer(seed=0, dtype=torch.float64):
    th, X, C, ref, _ = _transformer_case(seed, dtype)
    return _rel(transformer_2d(th, X, C, heads=8), ref)


def _route_transformer_printed(seed, dtype):
    th, X, C, _, m = _transformer_case(seed, dtype)
    with torch.no_grad():
        return transformer_2d_printed(th, X, C, heads=8), _attention_only_by_modules(m, X, C)


@row("(69)–(72) attention stage, as printed: MHA_self then MHA_cross", section="6.10",
            formula=r"\mathrm{unflatten}(\mathrm{MHA_{cross}}(\mathrm{MHA_{self}}(T, T), C))",
            reference=TRANSFORMER_REF, tol=TOL_BLOCK, why_tol="the tolerance of the matching row",
            error=REL, verdict="differs", corrected_by="(69)–(72) attention stage = Transformer2DModel",
            note="SD-1.5's attention stage is a Transformer2DModel: GroupNorm (ε = 1e-6) and a 1×1 conv "
                 "proj_in, then LayerNorm → self-attention + residual, LayerNorm → cross-attention + residual, "
                 "LayerNorm → GEGLU feed-forward + residual, then a 1×1 conv proj_out and + X. The print keeps "
                 "only the two attentions (Θ^self = attn1, Θ^cross = attn2, read as corrected in §6.8).",
     route=_block_route("diffusers' attn1 and attn2 of transformer_blocks.0 called on the flattened X "
                        "and unflattened back, nothing else",
                        lambda seed=0, dtype=torch.float64: _route_transformer_printed(seed, dtype)))
def _row_transformer_printed(seed=0, dtype=torch.float64):
    th, X, C, ref, _ = _transformer_case(seed, dtype)
    return _rel(transformer_2d_printed(th, X, C, heads=8), ref)


@row("(69)–(72) LayerNorm inside the transformer (not in the lecture)", section="6.10",
            formula=r"\gamma\odot(x-\mu)/\sqrt{\sigma^2+\varepsilon}+\beta",
            reference="norm1-3 of SD-1.5's down_blocks.0.attentions.0.transformer_blocks.0 (nn.LayerNorm, ε = 1e-5)",
            tol=1e-13, why_tol="float64; means over C = 320 entries: ≲ 320·2⁻⁵³ ≈ 4e-14 relative", error=REL)
def _row_layer_norm(seed=0, dtype=torch.float64):
    _, _, _, _, m = _transformer_case(seed, dtype)
    block = m.transformer_blocks[0]
    T = _randn(seed, dtype, 2, 30, 320) * 3 + 1
    err = 0.0
    for norm in (block.norm1, block.norm2, block.norm3):
        with torch.no_grad():
            err = max(err, _rel(layer_norm(_theta(norm), T, eps=norm.eps), norm(T)))
    return err


@row("(69)–(72) GEGLU feed-forward (not in the lecture)", section="6.10",
            formula=r"(A \odot \mathrm{GELU}(G))\,Q^\top + q,\ [A, G] = T P^\top + p",
            reference="ff of SD-1.5's down_blocks.0.attentions.0.transformer_blocks.0 (diffusers FeedForward, GEGLU)",
            tol=TOL_BLOCK, why_tol=F64_BLOCK, error=REL)
def _row_feed_forward(seed=0, dtype=torch.float64):
    _, _, _, _, m = _transformer_case(seed, dtype)
    ff = m.transformer_blocks[0].ff
    T = _randn(seed, dtype, 2, 30, 320)
    with torch.no_grad():
        ref = ff(T)
    return _rel(feed_forward(_theta(ff), T), ref)


@row("(30)–(33) fast path: F.scaled_dot_product_attention", section="6.10",
            formula=r"\mathrm{SDPA_{torch}}(Q,K,V) = \mathrm{Softmax}(QK^\top/\sqrt d)\,V",
            reference="diffusers Attention: attn1 and attn2 of SD-1.5's down_blocks.0.attentions.0"
                      ".transformer_blocks.0 (320 wide, 8 heads, N = 30, M = 77)",
            tol=TOL_BLOCK, why_tol=F64_BLOCK, error="max |fast − diffusers| / max |diffusers|",
     checks=("sdanatomy.lecture.blocks.TORCH",))
def _row_fast_attention(seed=0, dtype=torch.float64):
    th, _, C, _, m = _transformer_case(seed, dtype)
    T = _randn(seed + 2, dtype, 2, 30, 320)
    block, err = m.transformer_blocks[0], 0.0
    for name, ctx in (("attn1", None), ("attn2", C)):
        with torch.no_grad():
            ref = getattr(block, name)(T, encoder_hidden_states=ctx)
        err = max(err, _rel(TORCH.attention(sub(th, f"transformer_blocks.0.{name}"), T, ctx, heads=8), ref))
    return err


# --- 6.10 the U-Net's blocks, on the narrow U-Net -------------------------------------------

def _narrow_inputs(seed, dtype, C_in, H, W):
    X = _randn(seed, dtype, 2, C_in, H, W)
    h = _randn(seed + 1, dtype, 2, 4 * NARROW_WIDTHS[0])                  # d_t = 4·C_0
    C = _randn(seed + 2, dtype, 2, 77, 768)                               # M = 77, d_ctx = 768
    return X, h, C


@row("(58)–(59) DownBlock2D", section="6.10",
            formula=r"(H_n,\ (H_1,\dots,H_n))\ \text{or}\ (Y,\ (H_1,\dots,H_n, Y)),\ Y = \mathrm{Down}(H_n)",
            reference="diffusers DownBlock2D: " + WIDTH_AGNOSTIC + "; SD-1.5's level 4 (no downsampler) "
                      "and the same class with a Downsample2D (get_down_block, SD-1.5's settings)",
            tol=TOL_BLOCK, why_tol=F64_BLOCK, error=REL + ", over the output and every skip state")
def _row_down(seed=0, dtype=torch.float64):
    u = narrow_unet(seed, dtype)
    X, h, _ = _narrow_inputs(seed, dtype, 64, 5, 7)
    with torch.no_grad():
        err = _rel_states(down_block_2d(sub(_theta(u), "down_blocks.3"), X, h), u.down_blocks[3](X, h))
        m = _down_block_with_downsampler(seed, dtype)
        err = max(err, _rel_states(down_block_2d(_theta(m), X[:, :32], h), m(X[:, :32], h)))
    return err


def _down_block_with_downsampler(seed, dtype):
    c = NARROW_UNET_CONFIG
    with torch.device("meta"):
        meta = get_down_block("DownBlock2D", num_layers=c["layers_per_block"], in_channels=32, out_channels=64,
                              temb_channels=4 * NARROW_WIDTHS[0], add_downsample=True,
                              resnet_eps=c["norm_eps"], resnet_act_fn=c["act_fn"],
                              resnet_groups=c["norm_num_groups"], downsample_padding=c["downsample_padding"],
                              attention_head_dim=c["attention_head_dim"])
    return seed_parameters(copy.deepcopy(meta), seed, dtype)


@row("(58)–(59) DownBlock2D, as printed, where it has a Downsample2D", section="6.10",
            formula=r"\mathrm{Downsample2D}(H_n)",
            reference="diffusers DownBlock2D with a Downsample2D (get_down_block, SD-1.5's settings, 32→64): "
                      "its output", tol=TOL_BLOCK, why_tol=F64_BLOCK, error=REL)
def _row_down_printed_output(seed=0, dtype=torch.float64):
    m = _down_block_with_downsampler(seed, dtype)
    X, h, _ = _narrow_inputs(seed, dtype, 32, 5, 7)
    with torch.no_grad():
        return _rel(down_block_2d_printed(_theta(m), X, h), m(X, h)[0])


def _down_blocks_without_down() -> int:
    shapes = unet_theta_shapes(UNET_CONFIG)
    return sum(kind == "DownBlock2D" and f"down_blocks.{i}.downsamplers.0.conv.weight" not in shapes
               for i, kind in enumerate(UNET_CONFIG["down_block_types"]))


@row("(59) DownBlock2D ends with Downsample2D, as printed", section="6.10",
            formula=r"\mathrm{DownBlock2D}(X, h) = \mathrm{Downsample2D}(H_n)",
            reference="SD-1.5's U-Net (diffusers, meta): its DownBlock2D modules", tol=0, why_tol=COUNT,
            error="SD-1.5 DownBlock2Ds without the Downsample2D (59) applies",
            verdict="differs", corrected_by="(58)–(59) DownBlock2D",
            note="SD-1.5's one DownBlock2D is the last, lowest level (8×8 for a 64×64 latent), and it has no "
                 "downsampler: its output keeps the input's H×W and (59) cannot run on its Θ (there is no "
                 "Θ_Down). Where a DownBlock2D has one, (59) is right (the row above). The block also hands "
                 "every H_r to the up path (skip states), which (59) does not return.",
     checks=("sdanatomy.lecture.blocks.down_block_2d_printed",),
     route=_count_route("the same count from the book's Θ shapes of SD-1.5's config "
                        "(lecture.unet.theta_shapes): DownBlock2D levels without "
                        "downsamplers.0.conv.weight",
                        lambda seed=0, dtype=torch.float64: (_row_down_printed(seed, dtype),
                                                             float(_down_blocks_without_down()))))
def _row_down_printed(seed=0, dtype=torch.float64):
    return float(sum(b.downsamplers is None for b in meta("unet").down_blocks if isinstance(b, DownBlock2D)))


def _up_inputs(u, i, seed, dtype, H=3, W=4):
    """Inputs for up_blocks[i] of the U-Net ``u``: X from below and its n skips, as the U-Net passes them.

    X has the width of what comes from below (the mid block's or the previous up block's output);
    resnet r reads that (r = 0) or resnet r − 1's output, plus one skip: the skip's width is the rest
    of resnet r's C_in. The skips are listed in the order the down path made them (resnet 0's last).
    """
    block = u.up_blocks[i]
    below = (u.mid_block if i == 0 else u.up_blocks[i - 1]).resnets[-1].out_channels
    widths = [block.resnets[r].in_channels - (below if r == 0 else block.resnets[r - 1].out_channels)
              for r in range(len(block.resnets))]
    skips = tuple(_randn(seed + 3 + r, dtype, 2, w, H, W) for r, w in enumerate(reversed(widths)))
    X, h, C = _narrow_inputs(seed, dtype, below, H, W)
    return X, skips, h, C


@row("(60)–(62) UpBlock2D", section="6.10",
            formula=r"\mathrm{Up}(Y_n),\ Y_r = \mathrm{Res}(\mathrm{Concat}(Y_{r-1}, S_{n-r+1}), h)",
            reference="diffusers UpBlock2D: " + WIDTH_AGNOSTIC + "; SD-1.5's first up level, ×2 and with "
                      "diffusers' upsample_size", tol=TOL_BLOCK, why_tol=F64_BLOCK, error=REL)
def _row_up(seed=0, dtype=torch.float64):
    u = narrow_unet(seed, dtype)
    X, skips, h, _ = _up_inputs(u, 0, seed, dtype)
    th = sub(_theta(u), "up_blocks.0")
    with torch.no_grad():
        return max(_rel(up_block_2d(th, X, skips, h), u.up_blocks[0](X, skips, h)),
                   _rel(up_block_2d(th, X, skips, h, output_size=(5, 7)),
                        u.up_blocks[0](X, skips, h, upsample_size=(5, 7))))


def _printed_channel_misfits(block) -> int:
    """Resnets of an SD-1.5 up block whose Θ cannot read the input (60)/(74) gives them.

    (60): Y_0 = Concat(Upsample(X), S) has C_x + C_S channels, then Y_r has resnet r's C_out.
    Resnet r + 1 of SD-1.5 expects C_out + C_skip (another skip). Counted from the modules' widths.
    """
    misfits = 0
    for r in range(1, len(block.resnets)):
        misfits += block.resnets[r].in_channels != block.resnets[r - 1].out_channels
    return misfits


def _misfits_in_config(kind: str) -> int:
    """Resnets r ≥ 2 of SD-1.5's up blocks of ``kind`` whose C_in, by the book's Θ shapes of the
    config (lecture.unet.theta_shapes), is not resnet r − 1's C_out: what the print feeds them."""
    shapes, bad = unet_theta_shapes(UNET_CONFIG), 0
    for i, k in enumerate(UNET_CONFIG["up_block_types"]):
        r = 1
        while k == kind and f"up_blocks.{i}.resnets.{r}.norm1.weight" in shapes:
            bad += (shapes[f"up_blocks.{i}.resnets.{r}.norm1.weight"][0]
                    != shapes[f"up_blocks.{i}.resnets.{r - 1}.conv1.weight"][0])
            r += 1
    return bad


@row("(60)–(62) UpBlock2D, as printed: one skip", section="6.10",
            formula=r"Y_0 = \mathrm{Concat}(\mathrm{Up}(X), S),\ Y_r = \mathrm{Res}(Y_{r-1}, h)",
            reference="SD-1.5's UpBlock2D (diffusers, meta): the widths its resnets read", tol=0, why_tol=COUNT,
            error="resnets whose Θ cannot read the printed Y_{r−1} (channels)",
            verdict="differs", corrected_by="(60)–(62) UpBlock2D",
            note="SD-1.5's up blocks concatenate a skip state before *each* of their n = 3 resnets (the last "
                 "made first), so resnets 2 and 3 read C + C_skip channels; (60)–(61) concatenate one skip, once, "
                 "so with SD-1.5's Θ resnet 2 gets C channels where it expects 2C and the printed block cannot run.",
     checks=("sdanatomy.lecture.blocks.up_block_2d_printed",),
     route=_count_route("the same count from the book's Θ shapes of SD-1.5's config "
                        "(lecture.unet.theta_shapes): C_in of resnet r ≠ C_out of resnet r − 1",
                        lambda seed=0, dtype=torch.float64: (_row_up_printed(seed, dtype),
                                                             float(_misfits_in_config("UpBlock2D")))))
def _row_up_printed(seed=0, dtype=torch.float64):
    return float(sum(_printed_channel_misfits(b) for b in meta("unet").up_blocks if isinstance(b, UpBlock2D)))


def _resolutions_seen(block, run) -> list[tuple[int, int]]:
    """H×W at which each resnet of ``block`` runs during ``run()`` (forward pre-hooks on diffusers)."""
    seen = []
    hooks = [r.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape[-2:])))
             for r in block.resnets]
    try:
        with torch.no_grad():
            run()
    finally:
        for hk in hooks:
            hk.remove()
    return seen


def _upsample_first_misfits(i, seed, dtype) -> float:
    """Resnets of narrow up_blocks[i] that diffusers runs at X's H×W, where (60)/(74) run them at 2H×2W."""
    u = narrow_unet(seed, dtype)
    X, skips, h, C = _up_inputs(u, i, seed, dtype)
    block = u.up_blocks[i]
    kwargs = {"encoder_hidden_states": C} if hasattr(block, "attentions") else {}
    seen = _resolutions_seen(block, lambda: block(X, skips, h, **kwargs))
    printed = tuple(2 * s for s in X.shape[-2:])
    return float(sum(s != printed for s in seen))


def _printed_resolution(i, seed, dtype) -> tuple[int, int]:
    """H×W at which the printed up block ((60) or (74)) runs its resnet, recorded while it runs
    on the part of narrow up_blocks[i]'s Θ it can consume (its first resnet, attention and
    upsampler) with the skip S at twice X's size."""
    u = narrow_unet(seed, dtype)
    X, _, h, C = _up_inputs(u, i, seed, dtype)
    block, (H, W) = u.up_blocks[i], X.shape[-2:]
    th = {k: v for k, v in sub(_theta(u), f"up_blocks.{i}").items()
          if k.startswith(("resnets.0.", "attentions.0.", "upsamplers.0."))}
    S = _randn(seed + 9, dtype, 2, block.resnets[0].in_channels - X.shape[1], 2 * H, 2 * W)
    seen = []
    if hasattr(block, "attentions"):
        cross_attn_up_block_2d_printed(th, X, S, h, C, ops=_recording_ops(seen))
    else:
        up_block_2d_printed(th, X, S, h, ops=_recording_ops(seen))
    return seen[0] if len(set(seen)) == 1 else (0, 0)


def _up_first_route(i):
    def compute(seed=0, dtype=torch.float64):
        u = narrow_unet(seed, dtype)
        X, skips, h, C = _up_inputs(u, i, seed, dtype)
        block = u.up_blocks[i]
        kwargs = {"encoder_hidden_states": C} if hasattr(block, "attentions") else {}
        seen = _resolutions_seen(block, lambda: block(X, skips, h, **kwargs))
        printed = _printed_resolution(i, seed, dtype)
        return _upsample_first_misfits(i, seed, dtype), float(sum(s != printed for s in seen))
    return _count_route("the printed block run on the part of Θ it can consume (first resnet, "
                        "upsampler), the H×W of its resnet recorded from its GroupNorm inputs, "
                        "against the H×W diffusers' resnets run at", compute)


@row("(60) UpBlock2D upsamples first, as printed", section="6.10",
            formula=r"Y_0 = \mathrm{Concat}(\mathrm{Upsample2D}(X), S)",
            reference="diffusers UpBlock2D: " + WIDTH_AGNOSTIC + " (the sizes its resnets see, by hooks)",
            tol=0, why_tol=COUNT, error="resnets run at H×W, not at the printed 2H×2W",
            verdict="differs", corrected_by="(60)–(62) UpBlock2D",
            note="diffusers' UpBlock2D runs its resnets at the input's resolution and upsamples their result "
                 "at the end; (60) upsamples X first, so every printed resnet would run at twice the size, "
                 "and the skip S would have to be at 2H×2W.",
     checks=("sdanatomy.lecture.blocks.up_block_2d_printed",), route=_up_first_route(0))
def _row_up_first(seed=0, dtype=torch.float64):
    return _upsample_first_misfits(0, seed, dtype)


# --- the mid block (63)–(67) -----------------------------------------------------------------

def _mid_case(seed, dtype):
    u = narrow_unet(seed, dtype)
    X, h, C = _narrow_inputs(seed, dtype, 64, 3, 5)
    with torch.no_grad():
        ref = u.mid_block(X, h, encoder_hidden_states=C)
    return sub(_theta(u), "mid_block"), X, h, C, ref


MID = "(63)–(67) UNetMidBlock2DCrossAttn"
MID_REF = "diffusers UNetMidBlock2DCrossAttn: " + WIDTH_AGNOSTIC


@row(MID, section="6.10", formula=r"\mathrm{Res}_2(\mathrm{Transformer2D}(\mathrm{Res}_1(X, h), C), h)",
            reference=MID_REF, tol=TOL_BLOCK, why_tol=F64_BLOCK, error=REL)
def _row_mid(seed=0, dtype=torch.float64):
    th, X, h, C, ref = _mid_case(seed, dtype)
    return _rel(mid_block_2d_cross_attn(th, X, h, C), ref)


def _route_mid_printed(seed, dtype):
    th, X, h, C, _ = _mid_case(seed, dtype)
    mid = narrow_unet(seed, dtype).mid_block
    with torch.no_grad():
        A1 = _attention_only_by_modules(mid.attentions[0], mid.resnets[0](X, h), C)
        return (mid_block_2d_cross_attn_printed(th, X, h, C, slips=(ATTENTION_ONLY,)),
                mid.resnets[1](A1, h))


def _route_mid_c(seed=0, dtype=torch.float64):
    """diffusers' own Res₂ given C as its time input: does it refuse too (1) or run (0)?"""
    _, X, h, C, _ = _mid_case(seed, dtype)
    try:
        with torch.no_grad():
            narrow_unet(seed, dtype).mid_block.resnets[1](X, C)
    except RuntimeError:
        return _row_mid_c(seed, dtype), 1.0
    return _row_mid_c(seed, dtype), 0.0


@row("(63)–(67) mid block, as printed (with h in Res₂)", section="6.10",
            formula=r"\mathrm{Res}_2(\mathrm{unflatten}(\mathrm{MHA_{cross}}(\mathrm{MHA_{self}}(T,T),C)), h)",
            reference=MID_REF, tol=TOL_BLOCK, why_tol="the tolerance of the matching row", error=REL,
            verdict="differs", corrected_by=MID,
            note="Between its two resnets SD-1.5's mid block runs a whole Transformer2DModel (norms, proj_in, "
                 "residual self- and cross-attention, GEGLU feed-forward, proj_out, + input); (64)–(67) keep "
                 "only MHA_self then MHA_cross. (67)'s C in Res₂ is read as h here (next row).",
     route=_block_route("diffusers' resnets.0, attn1 and attn2 of attentions.0 (flattened tokens), "
                        "resnets.1 of the mid block, called in the printed order",
                        lambda seed=0, dtype=torch.float64: _route_mid_printed(seed, dtype)))
def _row_mid_printed(seed=0, dtype=torch.float64):
    th, X, h, C, ref = _mid_case(seed, dtype)
    return _rel(mid_block_2d_cross_attn_printed(th, X, h, C, slips=(ATTENTION_ONLY,)), ref)


@row("(67) Res₂(A₁, C), as printed", section="6.10", formula=r"\mathrm{ResnetBlock2D}(A_1, C)",
            reference=MID_REF + " (whose Res₂ takes h)", tol=0, why_tol=COUNT,
            error="printed calls that cannot run (ValueError at the door)", verdict="differs", corrected_by=MID,
            note="(67) passes the text context C ∈ R^(M×d_ctx) = R^(77×768) as the second resnet's time input, "
                 "where (53) needs h ∈ R^(d_t) (1280 in SD-1.5); diffusers passes temb, the time embedding.",
     route=_count_route("diffusers' own resnets.1 of the mid block called with C as its time input "
                        "(1 if it refuses with a RuntimeError) against the printed function's refusal",
                        _route_mid_c))
def _row_mid_c(seed=0, dtype=torch.float64):
    th, X, h, C, _ = _mid_case(seed, dtype)
    try:
        mid_block_2d_cross_attn_printed(th, X, h, C)          # both printed readings, (67) with C
    except ValueError:
        return 1.0
    return 0.0


# --- CrossAttnDownBlock2D (68)–(73), CrossAttnUpBlock2D (74)–(78) ----------------------------

XDOWN = "(68)–(73) CrossAttnDownBlock2D"
XDOWN_REF = "diffusers CrossAttnDownBlock2D: " + WIDTH_AGNOSTIC + "; SD-1.5's level 1 (32→32, downsampler)"


def _xdown_case(seed, dtype, H=6, W=5):
    u = narrow_unet(seed, dtype)
    X, h, C = _narrow_inputs(seed, dtype, 32, H, W)
    with torch.no_grad():
        ref = u.down_blocks[0](X, h, encoder_hidden_states=C)
    return sub(_theta(u), "down_blocks.0"), X, h, C, ref


def _xdown_route(slips):
    def compute(seed=0, dtype=torch.float64):
        th, X, h, C, _ = _xdown_case(seed, dtype)
        blk = narrow_unet(seed, dtype).down_blocks[0]
        with torch.no_grad():
            H = X
            for res, att in zip(blk.resnets, blk.attentions):
                H_r = res(H, h)                                           # (68)
                H_star = _stage_by_modules(att, H_r, C, slips)            # (69)–(72)
                H = H_r if CHAIN_SKIPS_ATTENTION in slips else H_star
            theirs = blk.downsamplers[0](H_star)                          # (73)
        return cross_attn_down_block_2d_printed(th, X, h, C, slips=slips), theirs
    return _block_route("diffusers' resnets, attentions (or their attn1, attn2 alone) and "
                        "downsampler of SD-1.5's first level, called in the printed order", compute)


@row(XDOWN, section="6.10",
            formula=r"H^\star_r = \mathrm{Transformer2D}(\mathrm{Res}(H^\star_{r-1}, h), C);\ "
                    r"(\mathrm{Down}(H^\star_n),\ (H^\star_1,\dots,H^\star_n,\mathrm{Down}(H^\star_n)))",
            reference=XDOWN_REF, tol=TOL_BLOCK, why_tol=F64_BLOCK,
            error=REL + ", over the output and every skip state")
def _row_xdown(seed=0, dtype=torch.float64):
    th, X, h, C, ref = _xdown_case(seed, dtype)
    return _rel_states(cross_attn_down_block_2d(th, X, h, C), ref)


@row("(68)–(73) CrossAttnDownBlock2D, as printed", section="6.10",
            formula=r"\mathrm{Down}(H^\star_n),\ H_r = \mathrm{Res}(H_{r-1}, h),\ H^\star_r = \mathrm{MHA}\ldots(H_r)",
            reference=XDOWN_REF + ": its output", tol=TOL_BLOCK, why_tol="the tolerance of the matching row",
            error=REL, verdict="differs", corrected_by=XDOWN,
            note="Two readings together: the attention stage is MHA_self then MHA_cross only (see (69)–(72)), and "
                 "(68) feeds H_{r−1}, the previous *resnet* output, to the next resnet, so H*_1 is computed and "
                 "dropped. SD-1.5 chains resnet → transformer → resnet → transformer, and keeps every H*_r as a "
                 "skip state for the up path (not part of this output's error).",
     route=_xdown_route((ATTENTION_ONLY, CHAIN_SKIPS_ATTENTION)))
def _row_xdown_printed(seed=0, dtype=torch.float64):
    th, X, h, C, ref = _xdown_case(seed, dtype)
    return _rel(cross_attn_down_block_2d_printed(th, X, h, C), ref[0])


@row("(68) next resnet reads H_{r−1}, not H*_{r−1}, as printed", section="6.10",
            formula=r"H_r = \mathrm{Res}(H_{r-1}, h)",
            reference=XDOWN_REF + ": its output", tol=TOL_BLOCK, why_tol="the tolerance of the matching row",
            error=REL, verdict="differs", corrected_by=XDOWN,
            note="Only this reading kept (the attention stage as SD-1.5 runs it): with n = 2 the first "
                 "transformer's output H*_1 never reaches the output, and the block's output changes.",
     route=_xdown_route((CHAIN_SKIPS_ATTENTION,)))
def _row_xdown_chain(seed=0, dtype=torch.float64):
    th, X, h, C, ref = _xdown_case(seed, dtype)
    return _rel(cross_attn_down_block_2d_printed(th, X, h, C, slips=(CHAIN_SKIPS_ATTENTION,)), ref[0])


XUP = "(74)–(78) CrossAttnUpBlock2D"


@row(XUP, section="6.10",
            formula=r"Y^\star_r = \mathrm{Transformer2D}(\mathrm{Res}(\mathrm{Concat}(Y^\star_{r-1}, S_{n-r+1}),"
                    r" h), C)",
            reference="diffusers CrossAttnUpBlock2D: " + WIDTH_AGNOSTIC + "; SD-1.5's levels 2 (upsampler) and "
                      "4 (the last: none)", tol=TOL_BLOCK, why_tol=F64_BLOCK, error=REL)
def _row_xup(seed=0, dtype=torch.float64):
    u = narrow_unet(seed, dtype)
    th = _theta(u)
    err = 0.0
    for i in (1, 3):
        X, skips, h, C = _up_inputs(u, i, seed, dtype)
        with torch.no_grad():
            ref = u.up_blocks[i](X, skips, h, encoder_hidden_states=C)
        err = max(err, _rel(cross_attn_up_block_2d(sub(th, f"up_blocks.{i}"), X, skips, h, C), ref))
    return err


@row("(74)–(78) CrossAttnUpBlock2D, as printed: one skip", section="6.10",
            formula=r"Y_0 = \mathrm{Concat}(\mathrm{Up}(X), S),\ Y_r = \mathrm{Res}(Y_{r-1}, h)",
            reference="SD-1.5's CrossAttnUpBlock2D modules (diffusers, meta): the widths their resnets read",
            tol=0, why_tol=COUNT, error="resnets whose Θ cannot read the printed Y_{r−1} (channels)",
            verdict="differs", corrected_by=XUP,
            note="As for UpBlock2D: SD-1.5 concatenates a skip before each of the 3 resnets of each of its 3 "
                 "CrossAttnUpBlock2Ds; (74)–(75) concatenate one, so resnets 2 and 3 of every block get too "
                 "few channels for their Θ (6 resnets in all).",
     checks=("sdanatomy.lecture.blocks.cross_attn_up_block_2d_printed",),
     route=_count_route("the same count from the book's Θ shapes of SD-1.5's config "
                        "(lecture.unet.theta_shapes): C_in of resnet r ≠ C_out of resnet r − 1",
                        lambda seed=0, dtype=torch.float64: (
                            _row_xup_printed(seed, dtype), float(_misfits_in_config("CrossAttnUpBlock2D")))))
def _row_xup_printed(seed=0, dtype=torch.float64):
    return float(sum(_printed_channel_misfits(b) for b in meta("unet").up_blocks
                     if isinstance(b, CrossAttnUpBlock2D)))


@row("(74) CrossAttnUpBlock2D upsamples first, as printed", section="6.10",
            formula=r"Y_0 = \mathrm{Concat}(\mathrm{Upsample2D}(X), S)",
            reference="diffusers CrossAttnUpBlock2D: " + WIDTH_AGNOSTIC + ", level 2 (the sizes its resnets "
                      "see, by hooks)", tol=0, why_tol=COUNT, error="resnets run at H×W, not at the printed 2H×2W",
            verdict="differs", corrected_by=XUP,
            note="As for UpBlock2D: the resnets and transformers run at the input's resolution, the "
                 "Upsample2D comes last (and the last level, up_blocks.3, has none).",
     checks=("sdanatomy.lecture.blocks.cross_attn_up_block_2d_printed",), route=_up_first_route(1))
def _row_xup_first(seed=0, dtype=torch.float64):
    return _upsample_first_misfits(1, seed, dtype)


def _route_xup_unflatten(seed, dtype):
    u = narrow_unet(seed, dtype)
    X, _, h, C = _up_inputs(u, 1, seed, dtype)
    block, (H, W) = u.up_blocks[1], X.shape[-2:]
    th = {k: v for k, v in sub(_theta(u), "up_blocks.1").items()
          if k.startswith(("resnets.0.", "attentions.0.", "upsamplers.0."))}
    S = _randn(seed + 9, dtype, 2, block.resnets[0].in_channels - X.shape[1], 2 * H, 2 * W)
    with torch.no_grad():
        theirs = block.resnets[0](torch.cat([block.upsamplers[0](X), S], dim=1), h)   # (74)–(75)
    return cross_attn_up_block_2d_printed(th, X, S, h, C, slips=(UNFLATTEN_Y,)), theirs


@row("(77) Y*_r = unflatten(Y_r), as printed: attention unused", section="6.10",
            formula=r"\underline{Y}^\star_r = \mathrm{unflatten}(\underline{Y}_r)",
            reference="diffusers Transformer2DModel: up_blocks.3.attentions.0, " + WIDTH_AGNOSTIC, tol=TOL_BLOCK,
            why_tol="the tolerance of the matching row",
            error="max |Y_r − Transformer2D(Y_r)| / max |Transformer2D(Y_r)|", verdict="differs", corrected_by=XUP,
            note="(77) unflattens Y_r, the resnet's output (already C×H×W), where (72) has V_r: read literally, "
                 "U_r and V_r are computed and never used, and the block is UpBlock2D. SD-1.5's Y*_r is the "
                 "transformer's output, which differs from Y_r.",
     checks=("sdanatomy.lecture.blocks.cross_attn_up_block_2d_printed",),
     route=_block_route("diffusers' upsampler and first resnet of up_blocks.1 in the printed "
                        "order, no attention, against cross_attn_up_block_2d_printed reading (77) "
                        "alone on that part of the block's Θ",
                        lambda seed=0, dtype=torch.float64: _route_xup_unflatten(seed, dtype)))
def _row_xup_unflatten(seed=0, dtype=torch.float64):
    u = narrow_unet(seed, dtype)
    m = u.up_blocks[3].attentions[0]
    X, _, C = _narrow_inputs(seed, dtype, 32, 6, 5)
    with torch.no_grad():
        ref = m(X, encoder_hidden_states=C, return_dict=False)[0]
    return _rel(X, ref)                                      # the printed Y*_r is Y_r itself
