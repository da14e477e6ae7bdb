"""Errata of lecture §6.9–6.11 and §8: where the printed definitions and SD-1.5 part ways.

Each erratum says what the lecture says, what SD-1.5 does (diffusers 0.42.1, SD-1.5's settings) and
what follows, and names its *ledger pair*: the "differs" row that measures the printed reading
against diffusers, and the "matches" row that proves the corrected reading equal to it. ``table()``
runs both rows, so every line of the table is re-measured whenever the chapter is executed.
"""
from __future__ import annotations

import html
from dataclasses import dataclass

import torch

from sdanatomy import ledger
from sdanatomy.ledger.registry import Result, Table, format_error


THETA_U_ROW = "(84) Θ_U = (Θ_in, Θ_TE, Θ↓, Θ^mid, Θ↑, Θ^norm, Θ^out): every parameter in one part"


@dataclass(frozen=True)
class Erratum:
    where: str            # the lecture's equations
    lecture_says: str
    sd15_does: str
    consequence: str
    differs: str          # ledger row: the printed reading against diffusers
    matches: str          # ledger row: the corrected reading against diffusers


ERRATA = (
    # --- §6.9 ResnetBlock2D -------------------------------------------------------------
    Erratum("(53)–(54)", "two Linears γ(h), β(h); FiLM after the second GroupNorm: Û₂ = γ(h) ⊙ GN(W₁) + β(h)",
            "one Linear time_emb_proj, no scale; its output is added to W₁ before the GroupNorm: "
            "U₂ = GN(W₁ + Linear(SiLU(h)))",
            "a per-channel shift before GroupNorm is partly removed with the group mean and rescaled; "
            "no FiLM after the norm reproduces it",
            "(53)–(54) ResnetBlock2D, as printed: FiLM after GroupNorm", "(52)–(57) ResnetBlock2D"),
    Erratum("(52)–(57)", "Def. 6.15 as a whole", "the corrections of (53)–(54) and (56) below, together",
            "a different function of the same Θ",
            "(52)–(57) ResnetBlock2D, as printed", "(52)–(57) ResnetBlock2D"),
    Erratum("(53)", "the Linear reads h", "the Linear reads SiLU(h)",
            "a different shift for the same Θ",
            "(53) ResnetBlock2D, as printed: Linear(h) without SiLU", "(52)–(57) ResnetBlock2D"),
    Erratum("(56)", "a 1×1 shortcut convolution S = Conv1x1(X) in every block",
            "conv_shortcut only where C_in ≠ C_out, S = X otherwise",
            "the printed Θ has C² + C parameters that 20 of SD-1.5's 36 residual blocks "
            "(U-Net and decoder) do not have",
            "(56) shortcut Conv1x1 in every block, as printed", "(56) shortcut Conv1x1 only where C_in ≠ C_out"),
    # --- §6.10 blocks --------------------------------------------------------------------
    Erratum("(59)", "every DownBlock2D ends with a Downsample2D",
            "SD-1.5's only DownBlock2D, the lowest level, has no downsampler",
            "three downsamplings, not four: the bottleneck is at ⌈H/8⌉ × ⌈W/8⌉",
            "(59) DownBlock2D ends with Downsample2D, as printed", "(58)–(59) DownBlock2D"),
    Erratum("(60)–(62)", "an up block concatenates one skip, after upsampling, then runs n residual blocks",
            "it runs n + 1 = 3 residual blocks, each after concatenating one more skip, and upsamples at the end",
            "the printed block cannot run on SD-1.5's Θ: its second residual block expects the skip's channels",
            "(60)–(62) UpBlock2D, as printed: one skip", "(60)–(62) UpBlock2D"),
    Erratum("(60)", "Upsample2D first", "Upsample2D last (none in the last up block)",
            "the residual blocks work at half the printed resolution",
            "(60) UpBlock2D upsamples first, as printed", "(60)–(62) UpBlock2D"),
    Erratum("(64)–(66), (69)–(72)", "the attention stage is flatten → MHA_self → MHA_cross → unflatten",
            "a Transformer2DModel: GroupNorm, 1×1 proj_in, three residual sub-layers (LayerNorm → self-attention, "
            "LayerNorm → cross-attention, LayerNorm → GEGLU feed-forward), 1×1 proj_out, plus the input",
            "without the residual connection the stage replaces the feature map instead of adding to it",
            "(69)–(72) attention stage, as printed: MHA_self then MHA_cross",
            "(69)–(72) attention stage = Transformer2DModel"),
    Erratum("(63)–(67)", "the mid block's attention stage as in (64)–(66)",
            "ResnetBlock2D → Transformer2DModel → ResnetBlock2D", "as above, for the bottleneck",
            "(63)–(67) mid block, as printed (with h in Res₂)", "(63)–(67) UNetMidBlock2DCrossAttn"),
    Erratum("(67)", "the second residual block reads the text context: ResnetBlock2D(A₁, C)",
            "it reads the time embedding h",
            "as printed it cannot run: (53) needs h ∈ ℝ¹²⁸⁰, C is 77 × 768",
            "(67) Res₂(A₁, C), as printed", "(63)–(67) UNetMidBlock2DCrossAttn"),
    Erratum("(68)", "the next residual block reads the previous residual block's output H_{r−1}",
            "it reads the previous transformer's output H*_{r−1}",
            "the first transformer's output would never reach the block's output",
            "(68) next resnet reads H_{r−1}, not H*_{r−1}, as printed", "(68)–(73) CrossAttnDownBlock2D"),
    Erratum("(68)–(73)", "the whole CrossAttnDownBlock2D as printed",
            "resnet → transformer, twice, then the downsampler; every stage's output is a skip",
            "a different function of the same Θ",
            "(68)–(73) CrossAttnDownBlock2D, as printed", "(68)–(73) CrossAttnDownBlock2D"),
    Erratum("(74)", "CrossAttnUpBlock2D upsamples first", "it upsamples last (not at all in the last level)",
            "as for (60)", "(74) CrossAttnUpBlock2D upsamples first, as printed", "(74)–(78) CrossAttnUpBlock2D"),
    Erratum("(77)", "Y*_r = unflatten(Y_r)", "Y*_r is the transformer's output (unflatten(V_r), as in (72))",
            "read literally, U_r and V_r are computed and discarded: the block ignores its attention",
            "(77) Y*_r = unflatten(Y_r), as printed: attention unused", "(74)–(78) CrossAttnUpBlock2D"),
    Erratum("(74)–(78)", "one skip per up block", "one skip per residual block, three per up block",
            "as for (60)–(62)", "(74)–(78) CrossAttnUpBlock2D, as printed: one skip", "(74)–(78) CrossAttnUpBlock2D"),
    # --- §8.1 the U-Net --------------------------------------------------------------------
    Erratum("(84)", "Θ_U = (Θ_TE, Θ↓_1…L, Θ^mid, Θ↑_1…L, Θ^out)",
            "also conv_in's Θ (4 → 320 channels, 3×3) and the head's GroupNorm (γ, β)",
            "12,480 of the 859,520,964 parameters belong to no printed part",
            "(84) Θ_U's parts, as printed: conv_in and conv_norm_out unlisted", THETA_U_ROW),
    Erratum("(85)", "D₀ = Z: the first down block reads the latent",
            "conv_in, a 3×3 convolution from 4 to 320 channels, comes first",
            "(86) cannot run on Z: the first residual block's Θ is for 320 channels",
            "(85) D₀ = Z, as printed: no conv_in", "(85)–(91) UNet2DConditionModel"),
    Erratum("(86)", "every one of the L = 4 levels downsamples", "three downsamplers",
            "total factor 8, not 16 — the 8 of §5.5 and of the decoder",
            "(86) every level downsamples, as printed", "(85)–(91) UNet2DConditionModel"),
    Erratum("(86)–(89)", "one skip D_ℓ per level", "12 skips: conv_in's output and every residual, "
            "transformer and downsampler output of the down path",
            "12 concatenations in the up path, not L + 1 = 5",
            "(86)–(89) one skip per level, as printed", "(85)–(91) UNet2DConditionModel"),
    Erratum("(88)–(89)", "L + 1 up blocks, Θ↑_L … Θ↑_0", "L = 4 up blocks",
            "(84) has no Θ↑_0, and the printed sizes do not meet at the concatenations",
            "(88)–(89) L + 1 up blocks, as printed", "(85)–(91) UNet2DConditionModel"),
    Erratum("(90)", "Ê = Conv1x1(U₀)", "GroupNorm → SiLU → 3×3 convolution from 320 to 4 channels",
            "another function with more parameters",
            "(90) Conv1x1 output head, as printed", "(90) output head GroupNorm → SiLU → Conv3×3"),
    # --- §6.11, §8.2 the VAE decoder --------------------------------------------------------
    Erratum("Def. 6.21, (95)", "a 1×1 convolution maps to RGB",
            "GroupNorm → SiLU → 3×3 convolution from 128 to 3 channels",
            "another function with more parameters",
            "Def. 6.21 Conv1x1 as the decoder's RGB projection",
            "Def. 6.21 RGB head of SD-1.5: Conv2d 3×3 ∘ SiLU ∘ GroupNorm"),
    Erratum("(92)–(95)", "10 stages: ResnetBlock2D, 4 × (Upsample2D, ResnetBlock2D), Conv1x1",
            "23 stages: post_quant_conv, conv_in, mid block (ResnetBlock2D, attention, ResnetBlock2D), "
            "4 up blocks of 3 ResnetBlock2D and an upsampler (not in the last), GroupNorm, SiLU, 3×3 conv",
            "another network; read literally (93) cannot even normalise the 4-channel latent with 32 groups",
            "(92)–(95) decoder stages as printed", "(92)–(96) decoder stages, as SD-1.5 runs them"),
    Erratum("(93)", "no time dependence, so h = 0 in the FiLM block",
            "the decoder's residual blocks have no time projection at all",
            "h = 0 still applies the Linears' biases: a constant affine map, foldable into norm2",
            "(93) ResnetBlock2D(·, 0): h = 0 with the FiLM Linears of Def. 6.15",
            "(93) ResnetBlock2D without time input (VAE, ε = 1e-6)"),
    Erratum("(93)", "no attention in the decoder", "one single-head self-attention in the mid block, "
            "with biases on Q, K, V and a residual connection",
            "every decoded pixel depends on every latent position, through content-dependent weights",
            "(93) Def. 6.14 MultiheadAttention (h = 1) as the VAE's attention",
            "(93) mid-block self-attention (absent from Def. 8.2)"),
    Erratum("(94)", "each level upsamples, then runs one ResnetBlock2D",
            "each up block runs three ResnetBlock2D, then upsamples (not in the last)",
            "a different function; the residual blocks work on a quarter of the pixels",
            "(94) level as printed: Upsample2D, then ResnetBlock2D",
            "(94) UpDecoderBlock2D: n ResnetBlock2D, then Upsample2D"),
    Erratum("(92), (94)–(96)", "one L_d: L_d levels Θ_ℓ^↑, each upsampling once, so H = 2^{L_d} H_z",
            "4 up blocks, of which the last does not upsample: 3 doublings, H = 2^{L_d − 1} H_z = 8 H_z "
            "with L_d = 4 up blocks",
            "no single L_d fits both: L_d = 4 gives the blocks but 16× (1024 × 1024 pixels from a "
            "64 × 64 latent), L_d = 3 gives SD-1.5's 8× (512 × 512) but one up block too few",
            "(95)–(96) one L_d for the levels and the upsamplings, as printed",
            "(95)–(96) image size H = 2^{L_d − 1} H_z"),
)


# The three kinds of departure; each erratum is of exactly one (``KINDS``, keyed by its
# "differs" row). Chapter 8 states each kind once and shows its table.
OMITS = "layers the lecture omits"
WIRING = "wiring: order, skips, sampling, conditioning"
SLIPS = "notation slips"
KIND_ORDER = (OMITS, WIRING, SLIPS)
KINDS = {
    "(53)–(54) ResnetBlock2D, as printed: FiLM after GroupNorm": WIRING,
    "(52)–(57) ResnetBlock2D, as printed": WIRING,
    "(53) ResnetBlock2D, as printed: Linear(h) without SiLU": OMITS,
    "(56) shortcut Conv1x1 in every block, as printed": WIRING,
    "(59) DownBlock2D ends with Downsample2D, as printed": WIRING,
    "(60)–(62) UpBlock2D, as printed: one skip": WIRING,
    "(60) UpBlock2D upsamples first, as printed": WIRING,
    "(69)–(72) attention stage, as printed: MHA_self then MHA_cross": OMITS,
    "(63)–(67) mid block, as printed (with h in Res₂)": OMITS,
    "(67) Res₂(A₁, C), as printed": SLIPS,
    "(68) next resnet reads H_{r−1}, not H*_{r−1}, as printed": SLIPS,
    "(68)–(73) CrossAttnDownBlock2D, as printed": WIRING,
    "(74) CrossAttnUpBlock2D upsamples first, as printed": WIRING,
    "(77) Y*_r = unflatten(Y_r), as printed: attention unused": SLIPS,
    "(74)–(78) CrossAttnUpBlock2D, as printed: one skip": WIRING,
    "(84) Θ_U's parts, as printed: conv_in and conv_norm_out unlisted": OMITS,
    "(85) D₀ = Z, as printed: no conv_in": OMITS,
    "(86) every level downsamples, as printed": WIRING,
    "(86)–(89) one skip per level, as printed": WIRING,
    "(88)–(89) L + 1 up blocks, as printed": SLIPS,
    "(90) Conv1x1 output head, as printed": OMITS,
    "Def. 6.21 Conv1x1 as the decoder's RGB projection": OMITS,
    "(92)–(95) decoder stages as printed": OMITS,
    "(93) ResnetBlock2D(·, 0): h = 0 with the FiLM Linears of Def. 6.15": WIRING,
    "(93) Def. 6.14 MultiheadAttention (h = 1) as the VAE's attention": OMITS,
    "(94) level as printed: Upsample2D, then ResnetBlock2D": WIRING,
    "(95)–(96) one L_d for the levels and the upsamplings, as printed": WIRING,
}


def kind(err: Erratum) -> str:
    """The kind of an erratum: OMITS, WIRING or SLIPS."""
    if err.differs not in KINDS:
        raise ValueError(f"erratum {err.where} ({err.differs!r}) has no kind in KINDS")
    return KINDS[err.differs]


def check() -> list[str]:
    """Problems with the errata: a pair whose rows are missing, of the wrong verdict, or not twins."""
    names = {e.name: e for e in ledger.entries()}
    problems = []
    for err in ERRATA:
        d, m = names.get(err.differs), names.get(err.matches)
        if d is None or d.verdict != "differs":
            problems.append(f"{err.where}: {err.differs!r} is not a 'differs' row of the ledger")
        if m is None or m.verdict != "matches":
            problems.append(f"{err.where}: {err.matches!r} is not a 'matches' row of the ledger")
        if d is not None and d.corrected_by != err.matches:
            problems.append(f"{err.where}: {err.differs!r} is corrected by {d.corrected_by!r}, "
                            f"not by {err.matches!r}")
    for err in ERRATA:
        if KINDS.get(err.differs) not in KIND_ORDER:
            problems.append(f"{err.where}: {err.differs!r} has no kind among {KIND_ORDER}")
    return problems


def _pair(d: Result, m: Result) -> str:
    fe = format_error
    return (f"printed {fe(d.err)} > {fe(d.entry.tol)} {'✓' if d.ok else '✗'}; "
            f"corrected {fe(m.err)} ≤ {fe(m.entry.tol)} {'✓' if m.ok else '✗'}")


def table(*, kind: str | None = None, seed: int = 0,
          dtype: torch.dtype = torch.float64) -> Table:
    """Every erratum (or those of one ``kind``) with its ledger pair run (a row that serves
    several errata is run once)."""
    if kind is not None and kind not in KIND_ORDER:
        raise ValueError(f"kind must be one of {KIND_ORDER}; got {kind!r}")
    problems = check()
    if problems:
        raise ValueError("errata and ledger disagree: " + "; ".join(problems))
    chosen = [err for err in ERRATA if kind is None or KINDS[err.differs] == kind]
    results: dict[str, Result] = {}
    for name in {n for err in chosen for n in (err.differs, err.matches)}:
        results[name] = ledger.get(name).run(seed=seed, dtype=dtype)
    pairs = [(err, results[err.differs], results[err.matches]) for err in chosen]
    ok = sum(d.ok and m.ok for _, d, m in pairs)
    esc = html.escape
    rows = [[err.where, err.lecture_says, err.sd15_does, err.consequence, _pair(d, m)]
            for err, d, m in pairs]
    html_rows = [[esc(err.where), esc(err.lecture_says), esc(err.sd15_does), esc(err.consequence),
                  f"<small>differs: {esc(err.differs)}<br>matches: {esc(err.matches)}<br>"
                  f"{esc(_pair(d, m))}</small>"] for err, d, m in pairs]
    what = "Errata of §6.9–6.11 and §8" if kind is None else f"Errata, {kind}"
    return Table(f"{what}: {len(pairs)} entries; {ok}/{len(pairs)} ledger pairs hold",
                 ["lecture", "the lecture says", "SD-1.5 does", "consequence", "ledger pair (measured now)"],
                 rows, html_rows=html_rows, ok=ok == len(pairs))
