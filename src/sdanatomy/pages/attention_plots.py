"""Chapter 6's figures (lecture §6.8): temperature, hard limit, weights, float16, maps.

Each function returns a :class:`matplotlib.figure.Figure` (no pyplot, no global state).
The numbers it draws come from the lecture's functions (``lecture.layers.softmax``,
``lecture.attention``) or from the studies the chapter runs, so that what is drawn is
what the page prints.
"""
from __future__ import annotations

import math

import torch
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from sdanatomy.lecture.attention import attention_weights, hard_limit, weights_along_ray
from sdanatomy.lecture.layers import softmax

# One fixed score vector for the temperature figure: a winner, a runner-up, a tail.
SCORES = (2.0, 1.0, 0.5, 0.0, -0.5, -1.5)
FLOAT16_MAX = 65504.0                      # the largest finite float16
FLOAT16_UNIT = 2.0 ** -11                  # float16's unit roundoff


def entropy(p: torch.Tensor) -> float:
    """H(π) = −Σ π_m ln π_m in nats (0 · ln 0 = 0): 0 for one-hot, ln M for uniform."""
    p = p[p > 0]
    return float(-(p * p.log()).sum())


def _bars(ax, p: torch.Tensor, *, xlabel: str, title: str) -> None:
    """One distribution π as bars on [0, 1], with the uniform level 1/M dotted."""
    M = p.shape[0]
    ax.bar(range(1, M + 1), p.tolist(), color="tab:blue")
    ax.axhline(1 / M, color="grey", ls=":", lw=1)
    ax.set_ylim(0, 1)
    ax.set_xticks(range(1, M + 1))
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_title(title, fontsize=9.5)
    ax.tick_params(labelsize=8.5)


# --- (17): the temperature ------------------------------------------------------------

def temperature_figure(taus=(0.25, 1.0, 4.0), scores=SCORES) -> Figure:
    """Softmax^(τ)(s), eq. (17), of one score vector s as bars, one panel per τ.

    Each panel's title gives τ, the largest weight and the entropy H (ln M for uniform);
    the dotted line is the uniform level 1/M. Small τ: towards one-hot; large τ: flat.
    """
    s = torch.tensor(scores, dtype=torch.float64)
    fig = Figure(figsize=(max(3.6, 2.4 * len(taus) + 0.5), 2.9))
    axes = fig.subplots(1, len(taus), sharey=True, squeeze=False)[0]
    for ax, tau in zip(axes, taus):
        p = softmax(s, tau=tau)                                  # (17)
        _bars(ax, p, xlabel="entry i  (score sᵢ)",
              title=f"τ = {tau:.3g}\nmax π = {p.max():.2f}, H = {entropy(p):.2f}")
        ax.set_xticks(range(1, len(s) + 1), [f"{x:g}" for x in scores])
    axes[0].set_ylabel("Softmax⁽τ⁾(s)ᵢ", fontsize=9)
    fig.tight_layout()
    return fig


# --- (51): the soft lookup turning hard -----------------------------------------------

def ray_keys(M: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Prop. 6.2's setting in R²: q = (1, 0), k₁ = q, M − 1 keys (0, ±j) ⟂ q."""
    q = torch.tensor([1.0, 0.0], dtype=torch.float64)
    others = [[0.0, (-1) ** j * (j // 2 + 1)] for j in range(M - 1)]  # (0, ±1), (0, 2)…
    return q, torch.tensor([[1.0, 0.0]] + others, dtype=torch.float64)


def ray_figure(alphas=(0.0, 2.0, 8.0), q=None, K=None) -> Figure:
    """π(α q), eq. (51), as bars over the keys, one panel per α (default: ray_keys()).

    At α = 0 the weights are uniform; as α grows they pile onto the key k_{m*} = q
    (Proposition 6.2). Each title gives α and π_{m*} = max π.
    """
    if q is None or K is None:
        q, K = ray_keys()
    P = weights_along_ray(q, K, alphas)                              # (A, M)
    limit = hard_limit(q, K)                                         # α → ∞
    fig = Figure(figsize=(max(3.6, 2.4 * len(alphas) + 0.5), 2.9))
    axes = fig.subplots(1, len(alphas), sharey=True, squeeze=False)[0]
    for ax, alpha, p in zip(axes, alphas, P):
        _bars(ax, p, xlabel="key m", title=f"α = {alpha:.3g}\nmax π = {p.max():.3f}")
        ax.bar(range(1, len(limit) + 1), limit.tolist(), fill=False, edgecolor="k",
               ls="--", lw=0.8, label="limit α → ∞")
    axes[0].legend(fontsize=8, loc="upper right")
    axes[0].set_ylabel("πₘ(α q)", fontsize=9)
    fig.tight_layout()
    return fig


# --- (35): the weights of several queries ---------------------------------------------

def weights_heatmap(Q: torch.Tensor, K: torch.Tensor) -> Figure:
    """π_m(q_n) of eq. (35) for every query (rows) and key (columns), numbers in cells.

    Colour scale 0 to 1; every row sums to 1 (Proposition 6.1). Q (N, d), K (M, d).
    """
    P = torch.stack([attention_weights(q, K) for q in Q])       # (N, M), row n: π(q_n)
    N, M = P.shape
    fig = Figure(figsize=(1.0 + 0.75 * M, 0.9 + 0.5 * N))
    ax = fig.subplots()
    im = ax.imshow(P.numpy(), cmap="Blues", vmin=0, vmax=1)
    for n in range(N):
        for m in range(M):
            v = P[n, m].item()
            ax.text(m, n, f"{v:.2f}", ha="center", va="center", fontsize=8,
                    color="white" if v > 0.5 else "black")
    ax.set_xticks(range(M), [str(m) for m in range(1, M + 1)])
    ax.set_yticks(range(N), [str(n) for n in range(1, N + 1)])
    ax.set_xlabel("key m")
    ax.set_ylabel("query n")
    fig.colorbar(im, ax=ax, label="πₘ(qₙ)  (0 to 1)", fraction=0.04)
    fig.tight_layout()
    return fig


# --- §6.8, numerical care: the float16 study ------------------------------------------

def _per_order(rows: list[dict], key: str) -> dict[str, tuple[list, list]]:
    """order -> (max|S| of each σ, rows[key]) where the value is finite."""
    out: dict = {}
    for r in rows:
        xs, ys = out.setdefault(r["order"], ([], []))
        if not math.isnan(r[key]):
            xs.append(r["max_score"])
            ys.append(r[key])
    return out


def float16_figure(rows: list[dict], d: int = 40) -> Figure:
    """sd15.attention.float16_study's rows against the largest score max|S|, log axes.

    Left: share of draws that overflow; right: the largest output error over the draws
    that did not. Dashed: max|S| = 65504/√d, where Q Kᵀ reaches float16's limit ("after"
    divides too late); solid: max|S| = 65504, where the scores themselves do.
    """
    fig = Figure(figsize=(7.6, 3.4))
    ax_o, ax_e = fig.subplots(1, 2)
    styles = {"after": "o-", "before": "s--", "q-only": "^:", "F.sdpa": "D-"}
    for order, (xs, ys) in _per_order(rows, "overflow").items():
        ax_o.plot(xs, [100 * y for y in ys], styles[order], ms=4, label=order)
    for order, (xs, ys) in _per_order(rows, "o_max").items():
        ax_e.plot(xs, ys, styles[order], ms=4, label=order)
    ax_e.axhline(FLOAT16_UNIT, color="grey", lw=0.8)
    ax_e.text(300, FLOAT16_UNIT * 0.55, "unit roundoff 2⁻¹¹", fontsize=8, color="grey",
              va="top")
    ax_e.set_yscale("log")
    for ax in (ax_o, ax_e):
        ax.set_xscale("log")
        ax.axvline(FLOAT16_MAX / math.sqrt(d), color="k", ls="--", lw=0.8)
        ax.axvline(FLOAT16_MAX, color="k", lw=0.8)
        ax.set_xlabel("largest score max|S|", fontsize=9)
        ax.tick_params(labelsize=8.5)
    top = ax_o.get_ylim()[1]
    ax_o.text(FLOAT16_MAX / math.sqrt(d) * 0.9, top * 0.5, f"65504/√{d}", fontsize=8,
              ha="right", rotation=90)
    ax_o.text(FLOAT16_MAX * 0.9, top * 0.5, "65504", fontsize=8, ha="right",
              rotation=90)
    ax_o.set_ylabel("draws that overflow (%)", fontsize=9)
    ax_e.set_ylabel("output error, worst draw", fontsize=9)
    ax_o.legend(fontsize=8.5, loc="center left")
    fig.tight_layout()
    return fig


# --- §6.8, attention to a prompt: the miniature's cross-attention maps ----------------

def cross_attention_figure(image: torch.Tensor, words: list[str],
                           pi: torch.Tensor) -> Figure:
    """The miniature's maps π (M, H, W) per token on a scale centred on the uniform 1/M.

    Colour runs linearly from 0 to 2/M, white at the uniform level 1/M (marked on the
    colour bar); the last panel is the histogram of all M·H·W weights on the same axis.
    """
    M = pi.shape[0]
    norm = Normalize(vmin=0.0, vmax=2.0 / M)
    fig = Figure(figsize=(7.8, 3.7), layout="constrained")
    axes = fig.subplots(2, math.ceil((M + 2) / 2)).ravel()
    axes[0].imshow(image[0].numpy(), cmap="gray_r")
    axes[0].set_title("image", fontsize=9)
    for ax, word, m in zip(axes[1:], words, pi):
        im = ax.imshow(m.numpy(), cmap="RdBu_r", norm=norm)
        ax.set_title(word, fontsize=8.5)
    for ax in axes[:M + 1]:
        ax.set_xticks([])
        ax.set_yticks([])
    hist = axes[M + 1]
    hist.hist(pi.flatten().numpy(), bins=40, range=(0, 2 / M), color="grey")
    hist.axvline(1 / M, color="k", ls=":", lw=1)
    hist.set_title("all weights", fontsize=9)
    hist.set_yticks([])
    hist.set_xlabel("π", fontsize=8.5, labelpad=1)
    hist.tick_params(labelsize=8)
    bar = fig.colorbar(im, ax=axes.tolist(), fraction=0.03, pad=0.02)
    bar.set_ticks([0, 1 / M, 2 / M], labels=["0", f"1/M = {1 / M:.3f}\n(uniform)",
                                              f"{2 / M:.2f}"])
    bar.ax.tick_params(labelsize=8.5)
    bar.set_label("π", fontsize=9)
    for axis in axes[M + 2:]:
        axis.set_visible(False)
    return fig
