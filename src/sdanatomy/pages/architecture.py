"""The architecture of SD-1.5, lecture §5: Θ counted twice, block by block.

* :func:`parameter_table` — Θ per top-level block of the U-Net or the VAE, counted twice: by formula
  from the configuration alone (k²·C_in·C_out + C_out for a Conv2d, …) and by counting the parameter
  tensors of diffusers' module (built on the meta device: shapes, no storage);
* :func:`formula_table` — each building block's count as a formula in its widths, derived by the same
  functions applied to sympy symbols;
* each returns the book's one :class:`~sdanatomy.ledger.registry.Table`.

Figures 1 and 2 (torchview, as the lecture drew them) live with the other diagrams:
:func:`sdanatomy.pages.diagrams.write_torchview_figures`. Sizes in and out (§5.5,
Remarks 5.1–5.2) live in ``sdanatomy.architecture_sizes``.
"""
from __future__ import annotations

import html
import inspect
from dataclasses import dataclass

import torch

from sdanatomy import sd15
from sdanatomy.ledger.registry import Table
from sdanatomy.sd15.reference import AutoencoderKL, UNet2DConditionModel, meta
from sdanatomy.lecture.config import UNET_CONFIG, VAE_CONFIG

PUBLISHED = {"unet": 859_520_964, "vae": 83_653_863}   # SD-1.5's published sizes: a reference
NAMES = {"unet": "U-Net", "vae": "VAE"}


def _meta(*shape, dtype=torch.float32) -> torch.Tensor:
    return torch.empty(shape, device="meta", dtype=dtype)


CONTEXT = (1, 77, 768)   # SD-1.5's text context: M = 77 tokens of width d_ctx = 768


# ============================================================ Θ counted by formula
# Plain arithmetic: numbers give a count, sympy symbols give the formula (see formula_table).

def conv2d_params(C_in, C_out, k):
    """Conv2d, Def. 6.1, (13): C_out kernels of C_in·k·k weights, one bias each."""
    return k * k * C_in * C_out + C_out


def linear_params(d_in, d_out, *, bias=True):
    """Linear, Def. 6.2: W ∈ R^{d_out×d_in} and, with bias, b ∈ R^{d_out}."""
    return d_in * d_out + (d_out if bias else 0)


def norm_params(C):
    """GroupNorm (Def. 6.5) or LayerNorm: a scale γ and a shift β per channel."""
    return 2 * C


def resnet_params(C_in, C_out, d_t=None, *, shortcut):
    """ResnetBlock2D, Def. 6.15, as SD-1.5 builds it: norm1, conv1, time_emb_proj (none
    when d_t is None, as in the VAE), norm2, conv2, and the 1×1 conv_shortcut that
    diffusers adds when C_in ≠ C_out."""
    n = (norm_params(C_in) + conv2d_params(C_in, C_out, 3)          # norm1, conv1
         + norm_params(C_out) + conv2d_params(C_out, C_out, 3))     # norm2, conv2
    if d_t is not None:
        n += linear_params(d_t, C_out)                              # time_emb_proj
    if shortcut:
        n += conv2d_params(C_in, C_out, 1)                          # conv_shortcut
    return n


def resnet_params_as_printed(C_in, C_out, d_t):
    """ResnetBlock2D with the Θ that Def. 6.15 lists: two Linear maps γ(h), β(h) for the
    affine modulation (53)–(54), and the 1×1 shortcut (56) whatever the widths.
    (SD-1.5 has neither.)"""
    return (norm_params(C_in) + conv2d_params(C_in, C_out, 3)         # norm1, conv1
            + norm_params(C_out) + conv2d_params(C_out, C_out, 3)     # norm2, conv2
            + 2 * linear_params(d_t, C_out)                           # γ(h), β(h)
            + conv2d_params(C_in, C_out, 1))                          # shortcut, always


def attention_params(d_q, d_kv, *, qkv_bias):
    """Attention (MultiheadAttention, Def. 6.14): to_q (d_q → d_q), to_k and to_v
    (d_kv → d_q), to_out.0 (d_q → d_q, always with bias).

    The heads split d_q = heads·d; they do not change the count.
    """
    return (linear_params(d_q, d_q, bias=qkv_bias)            # to_q: W_Q
            + 2 * linear_params(d_kv, d_q, bias=qkv_bias)     # to_k, to_v: W_K, W_V
            + linear_params(d_q, d_q))                        # to_out.0: W_O, b_O


def geglu_ff_params(C, mult=4):
    """FeedForward with GEGLU: proj C → 2·mult·C (value and gate), Linear mult·C → C."""
    return linear_params(C, 2 * mult * C) + linear_params(mult * C, C)


def transformer_params(C, d_ctx):
    """Transformer2DModel with one BasicTransformerBlock, as in SD-1.5: norm, proj_in
    (1×1), [norm1, attn1 (self), norm2, attn2 (cross, keys and values from d_ctx),
    norm3, ff], proj_out (1×1)."""
    block = (norm_params(C) + attention_params(C, C, qkv_bias=False)        # attn1
             + norm_params(C) + attention_params(C, d_ctx, qkv_bias=False)  # attn2
             + norm_params(C) + geglu_ff_params(C))                         # ff
    return norm_params(C) + conv2d_params(C, C, 1) + block + conv2d_params(C, C, 1)


def resnet_theta_table() -> Table:
    """Def. 6.15's Θ of a ResnetBlock2D counted, beside SD-1.5's: the two disagree in size."""
    unet = meta("unet")
    rows = []
    for path, (C_in, C_out) in (("down_blocks.0.resnets.0", (320, 320)), ("down_blocks.1.resnets.0", (320, 640)),
                                ("mid_block.resnets.0", (1280, 1280))):
        printed = resnet_params_as_printed(C_in, C_out, 1280)
        ours = resnet_params(C_in, C_out, 1280, shortcut=C_in != C_out)
        rows.append([f"{path} ({C_in} → {C_out})", f"{printed:,}", f"{ours:,}",
                     f"{sd15.count_parameters(unet.get_submodule(path)):,}", f"{printed - ours:,}"])
    return Table("ResnetBlock2D: Θ as Def. 6.15 lists it vs. SD-1.5's (d_t = 1280)",
                 ["block", "Def. 6.15 (γ, β, shortcut always)", "SD-1.5 by formula", "SD-1.5 module", "difference"],
                 rows, notes=["SD-1.5 projects h once (time_emb_proj, a shift added before norm2: no γ) and adds "
                              "conv_shortcut only when C_in ≠ C_out"])


def vae_attention_params(C):
    """The VAE's mid-block Attention (one head): group_norm, to_q, to_k, to_v, to_out.0,
    all with bias."""
    return norm_params(C) + attention_params(C, C, qkv_bias=True)


def resample_params(C):
    """Downsample2D (3×3, stride 2) or Upsample2D (nearest ×2, 3×3): a C → C Conv2d."""
    return conv2d_params(C, C, 3)


def _config(cls, config: dict, fixed: dict) -> dict:
    """``config`` completed with the class's defaults; refuse settings the formulas do not cover."""
    defaults = {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items() if k != "self"}
    c = {**defaults, **config}
    wrong = {k: c[k] for k, v in fixed.items() if c[k] != v}
    if wrong:
        raise ValueError(f"the {cls.__name__} formulas cover SD-1.5's family only; unsupported: {wrong}")
    return c


# Settings of UNet2DConditionModel that add or reshape parameters; the formulas assume SD-1.5's values.
UNET_FIXED = dict(mid_block_type="UNetMidBlock2DCrossAttn", only_cross_attention=False,
                  transformer_layers_per_block=1, encoder_hid_dim=None, class_embed_type=None,
                  addition_embed_type=None, time_embedding_type="positional", time_embedding_dim=None,
                  time_cond_proj_dim=None, dual_cross_attention=False, num_class_embeds=None)


def _R(C_in, C_out, d_t=None, skip=0):
    name = f"R({C_in}+{skip}→{C_out})" if skip else f"R({C_in}→{C_out})"
    return name, resnet_params(C_in + skip, C_out, d_t, shortcut=C_in + skip != C_out)


def unet_parts(config=None) -> list[tuple[str, list[tuple[str, int]]]]:
    """Θ of the U-Net per top-level block from its configuration alone: [(block, [(term, count), …])].

    R(C_in→C_out): ResnetBlock2D (C_in+C_skip after a concatenation); T(C): Transformer2DModel;
    Down(C), Up(C): Downsample2D, Upsample2D. Mirrors UNet2DConditionModel.__init__'s channel bookkeeping.
    """
    c = _config(UNet2DConditionModel, config or UNET_CONFIG, UNET_FIXED)
    widths, n, d_ctx = tuple(c["block_out_channels"]), c["layers_per_block"], c["cross_attention_dim"]
    heads = c["num_attention_heads"] or c["attention_head_dim"]   # diffusers' name for the number of heads
    if not isinstance(n, int) or any(C % heads for C in widths):
        raise ValueError(f"expects an int layers_per_block and heads | every width; got {n!r}, {heads} heads, {widths}")
    d_t = 4 * widths[0]                                            # time_embed_dim
    k_in, k_out = c["conv_in_kernel"], c["conv_out_kernel"]

    def T(C):
        return f"T({C})", transformer_params(C, d_ctx)

    parts = [("time_proj", []),                                    # the sinusoids (28): no Θ
             ("time_embedding", [(f"Linear({widths[0]}→{d_t})", linear_params(widths[0], d_t)),
                                 (f"Linear({d_t}→{d_t})", linear_params(d_t, d_t))]),
             ("conv_in", [(f"Conv{k_in}×{k_in}({c['in_channels']}→{widths[0]})",
                           conv2d_params(c["in_channels"], widths[0], k_in))])]
    # 1. down path: level i takes widths[i-1] channels to widths[i]; all but the last halve H, W
    C_out = widths[0]
    for i, kind in enumerate(c["down_block_types"]):
        if kind not in ("CrossAttnDownBlock2D", "DownBlock2D"):
            raise ValueError(f"unsupported down block {kind!r}")
        C_in, C_out = C_out, widths[i]
        terms = []
        for j in range(n):
            terms.append(_R(C_in if j == 0 else C_out, C_out, d_t))
            if kind == "CrossAttnDownBlock2D":
                terms.append(T(C_out))
        if i < len(widths) - 1:
            terms.append((f"Down({C_out})", resample_params(C_out)))
        parts.append((f"down_blocks.{i}", terms))
    # 2. the bottleneck
    C = widths[-1]
    parts.append(("mid_block", [_R(C, C, d_t), T(C), _R(C, C, d_t)]))
    # 3. up path: n+1 resnets, each fed the block below (or the previous resnet) ⊕ one skip
    rev = widths[::-1]
    C_out = rev[0]
    for i, kind in enumerate(c["up_block_types"]):
        if kind not in ("CrossAttnUpBlock2D", "UpBlock2D"):
            raise ValueError(f"unsupported up block {kind!r}")
        C_prev, C_out = C_out, rev[i]
        C_skip_last = rev[min(i + 1, len(rev) - 1)]               # the skip from the level above
        terms = []
        for j in range(n + 1):
            terms.append(_R(C_prev if j == 0 else C_out, C_out, d_t, skip=C_skip_last if j == n else C_out))
            if kind == "CrossAttnUpBlock2D":
                terms.append(T(C_out))
        if i < len(rev) - 1:
            terms.append((f"Up({C_out})", resample_params(C_out)))
        parts.append((f"up_blocks.{i}", terms))
    # 4. output head
    parts += [("conv_norm_out", [(f"GroupNorm({widths[0]})", norm_params(widths[0]))]),
              ("conv_out", [(f"Conv{k_out}×{k_out}({widths[0]}→{c['out_channels']})",
                             conv2d_params(widths[0], c["out_channels"], k_out))])]
    return parts


VAE_FIXED = dict(use_quant_conv=True, use_post_quant_conv=True, mid_block_add_attention=True)


def vae_parts(config=None) -> list[tuple[str, list[tuple[str, int]]]]:
    """Θ of AutoencoderKL per block, decoder side first (in the order decode() runs), then the encoder.

    R(C_in→C_out): ResnetBlock2D without time input; A(C): the mid block's one-head Attention.
    """
    c = _config(AutoencoderKL, config or VAE_CONFIG, VAE_FIXED)
    widths, n, L = tuple(c["block_out_channels"]), c["layers_per_block"], c["latent_channels"]
    if len(c["down_block_types"]) != len(widths) or set(c["down_block_types"]) != {"DownEncoderBlock2D"} \
            or len(c["up_block_types"]) != len(widths) or set(c["up_block_types"]) != {"UpDecoderBlock2D"}:
        raise ValueError("expects one DownEncoderBlock2D and one UpDecoderBlock2D per width")

    def conv(C_in, C_out, k):
        return f"Conv{k}×{k}({C_in}→{C_out})", conv2d_params(C_in, C_out, k)

    def mid(C):
        return [_R(C, C), (f"A({C})", vae_attention_params(C)), _R(C, C)]

    parts = [("post_quant_conv", [conv(L, L, 1)]),
             ("decoder.conv_in", [conv(L, widths[-1], 3)]),
             ("decoder.mid_block", mid(widths[-1]))]
    rev = widths[::-1]
    C_out = rev[0]
    for i in range(len(rev)):                                      # n+1 resnets, then Up but on the last
        C_in, C_out = C_out, rev[i]
        terms = [_R(C_in if j == 0 else C_out, C_out) for j in range(n + 1)]
        if i < len(rev) - 1:
            terms.append((f"Up({C_out})", resample_params(C_out)))
        parts.append((f"decoder.up_blocks.{i}", terms))
    parts += [("decoder.conv_norm_out", [(f"GroupNorm({widths[0]})", norm_params(widths[0]))]),
              ("decoder.conv_out", [conv(widths[0], c["out_channels"], 3)])]
    # the encoder: image → 2L channels (mean and log-variance), then quant_conv
    enc = [conv(c["in_channels"], widths[0], 3)]
    C_out = widths[0]
    for i in range(len(widths)):
        C_in, C_out = C_out, widths[i]
        enc += [_R(C_in if j == 0 else C_out, C_out) for j in range(n)]
        if i < len(widths) - 1:
            enc.append((f"Down({C_out})", resample_params(C_out)))
    enc += mid(widths[-1]) + [(f"GroupNorm({widths[-1]})", norm_params(widths[-1])), conv(widths[-1], 2 * L, 3)]
    parts += [("encoder", enc), ("quant_conv", [conv(2 * L, 2 * L, 1)])]
    return parts


def composition(terms) -> str:
    """'2·R(320→320) + 2·T(320) + Down(320)': the terms, equal ones merged, in order of appearance."""
    counts = {}
    for name, _ in terms:
        counts[name] = counts.get(name, 0) + 1
    return " + ".join(f"{k}·{name}" if k > 1 else name for name, k in counts.items()) or "—"


@dataclass(frozen=True)
class ParameterRow:
    block: str
    composition: str
    by_formula: int      # from the configuration alone
    in_module: int       # Σ numel of the module's parameter tensors

    @property
    def equal(self) -> bool:
        return self.by_formula == self.in_module


@dataclass(frozen=True)
class ParameterCounts:
    """Θ per top-level block of one module, by formula and by counting; its totals."""

    component: str
    rows: tuple[ParameterRow, ...]
    whole_module: int            # Σ numel of every parameter of the module
    published: int | None        # SD-1.5's published size, for SD-1.5's own configuration

    @property
    def total_formula(self) -> int:
        return sum(r.by_formula for r in self.rows)

    @property
    def total_module(self) -> int:
        return sum(r.in_module for r in self.rows)

    @property
    def all_equal(self) -> bool:
        return (all(r.equal for r in self.rows)
                and self.total_formula == self.total_module == self.whole_module)


def parameter_counts(component: str = "unet", config=None) -> ParameterCounts:
    """Θ of SD-1.5's U-Net (``"unet"``) or VAE (``"vae"``) per block, counted by formula and in the
    module. ``config`` (a dict like UNET_CONFIG / VAE_CONFIG) counts another member of the family,
    e.g. the miniature; the published total is given for SD-1.5's own configuration only.
    """
    if component not in ("unet", "vae"):
        raise ValueError(f"component must be 'unet' or 'vae'; got {component!r}")
    parts = (unet_parts if component == "unet" else vae_parts)(config)
    module = meta(component, config)
    rows = tuple(ParameterRow(name, composition(terms), sum(n for _, n in terms),
                              sd15.count_parameters(module.get_submodule(name)))
                 for name, terms in parts)
    published = PUBLISHED[component] if config is None else None
    return ParameterCounts(component, rows, sd15.count_parameters(module), published)


def parameter_table(component: str = "unet", config=None) -> Table:
    """:func:`parameter_counts` as the chapter shows it: one row a block, the totals last."""
    c = parameter_counts(component, config)
    cells = [[r.block, r.composition, f"{r.by_formula:,}", f"{r.in_module:,}", "✓" if r.equal else "✗"]
             for r in c.rows]
    cells.append(["total", "", f"{c.total_formula:,}", f"{c.total_module:,}",
                  "✓" if c.total_formula == c.total_module else "✗"])
    notes = [f"whole module: {c.whole_module:,} parameters"
             + ("" if c.published is None
                else f"; published size of SD-1.5's {NAMES[component]}: {c.published:,}")]
    return Table(f"Θ of the {NAMES[component]} per block: by formula vs. counted in the module",
                 ["block", "built from", "by formula", "in the module", "equal"], cells, notes=notes,
                 ok=c.all_equal)


def formula_table() -> Table:
    """Each building block's parameter count as a formula in its widths, derived by the functions above
    applied to sympy symbols (the same code that counts SD-1.5), with SD-1.5's value of one instance."""
    import sympy as sp
    C, C_in, C_out, d_in, d_out, d_t, d_ctx, k = sp.symbols("C C_in C_out d_in d_out d_t d_ctx k", positive=True)
    entries = [
        ("Conv2d k×k (C_in → C_out)", conv2d_params(C_in, C_out, k), "conv_in", conv2d_params(4, 320, 3)),
        ("Linear (d_in → d_out)", linear_params(d_in, d_out), "time_embedding.linear_1", linear_params(320, 1280)),
        ("GroupNorm, LayerNorm (C)", norm_params(C), "conv_norm_out", norm_params(320)),
        ("ResnetBlock2D (C → C, time d_t)", resnet_params(C, C, d_t, shortcut=False),
         "down_blocks.0.resnets.0", resnet_params(320, 320, 1280, shortcut=False)),
        ("ResnetBlock2D (C_in → C_out ≠ C_in, time d_t)", resnet_params(C_in, C_out, d_t, shortcut=True),
         "down_blocks.1.resnets.0", resnet_params(320, 640, 1280, shortcut=True)),
        ("ResnetBlock2D, VAE (C_in → C_out ≠ C_in, no time)", resnet_params(C_in, C_out, shortcut=True),
         "decoder.up_blocks.2.resnets.0", resnet_params(512, 256, shortcut=True)),
        ("Transformer2DModel (C, context width d_ctx)", transformer_params(C, d_ctx),
         "down_blocks.0.attentions.0", transformer_params(320, 768)),
        ("Downsample2D, Upsample2D (C)", resample_params(C), "down_blocks.0.downsamplers.0", resample_params(320)),
        ("Attention, VAE mid block (C)", vae_attention_params(C), "decoder.mid_block.attentions.0",
         vae_attention_params(512)),
    ]
    def text(e):
        return str(sp.expand(e)).replace("**2", "²").replace("*", "·")
    tex_names = {C_in: r"C_{\text{in}}", C_out: r"C_{\text{out}}", d_in: r"d_{\text{in}}",
                 d_out: r"d_{\text{out}}", d_ctx: r"d_{\text{ctx}}"}
    rows = [[name, text(e), f"{n:,}", where] for name, e, where, n in entries]
    # \small: the longest formula (ResnetBlock2D with shortcut) then fits the text column
    html_rows = [[html.escape(name),
                  html.escape(f"\\(\\small {sp.latex(sp.expand(e), symbol_names=tex_names)}\\)"),
                  f"{n:,}", html.escape(where)]
                 for name, e, where, n in entries]
    return Table("Parameters of each building block, as a formula",
                 ["block", "parameters", "SD-1.5: count", "SD-1.5: e.g."], rows, html_rows=html_rows,
                 notes=["heads do not enter: they split the width C = heads·d without adding weights"])
