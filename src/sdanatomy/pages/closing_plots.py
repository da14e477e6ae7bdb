"""Figures of the closing chapter (lecture §10, the text encoder): the causal mask of
CLIP's text transformer, and what it does to the context C.

* :func:`causal_attention` and :func:`plot_causal_mask` — the additive mask that
  transformers' ``CLIPTextModel`` hands to its first layer, and that layer's attention
  weights (softmax, Def. 6.13), both captured from one forward pass;
* :func:`contexts`, :func:`changed_rows` and :func:`plot_row_changes` — how much each of
  the 77 rows of C changes when one word of the prompt is replaced.

Every function returns tensors or a ``matplotlib.figure.Figure`` (no pyplot).
"""
from __future__ import annotations

import torch
from matplotlib.figure import Figure

from sdanatomy.sd15 import tokenizer

SHORT = {tokenizer.BOS: "<start>", tokenizer.EOS: "<end>"}


def token_labels(ids: torch.Tensor, n: int) -> list[str]:
    """The first n tokens of one prompt's ids (77,) as text: CLIP's end-of-word mark
    '</w>' dropped, <|startoftext|> and <|endoftext|> (also the padding) shortened."""
    tokens = tokenizer.clip_tokenizer().convert_ids_to_tokens(ids[:n].tolist())
    return [SHORT.get(t, t.removesuffix("</w>")) for t in tokens]


def causal_attention(enc, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask (M, M), weights (heads, M, M)) of the first transformer layer of ``enc``
    (a transformers ``CLIPTextModel``) for one prompt's ids (1, M): the additive mask
    the layer's self-attention receives (0 where allowed, the dtype's minimum, −∞ in
    effect, where blocked) and its softmax weights, captured by a hook and by
    ``output_attentions``. Runs the eager attention (the one that builds both
    tensors) and restores the module's own implementation afterwards."""
    seen = {}
    attn = enc.encoder.layers[0].self_attn
    hook = attn.register_forward_pre_hook(
        lambda module, args, kwargs: seen.update(kwargs), with_kwargs=True)
    before = enc.config._attn_implementation
    enc.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = enc(ids, output_attentions=True)
    finally:
        hook.remove()
        enc.set_attn_implementation(before)
    return seen["attention_mask"][0, 0], out.attentions[0][0]


def plot_causal_mask(enc, prompt: str, n: int = 9) -> Figure:
    """The causal mask over the first n of a prompt's 77 tokens, labelled with the
    tokens: left, the additive mask the first layer receives (allowed or blocked);
    right, that layer's attention weights averaged over its heads, on the scale [0, 1]
    (each row sums to 1 over all 77 keys)."""
    ids = tokenizer.tokenize(prompt)                                # (1, 77)
    mask, weights = causal_attention(enc, ids)
    labels = token_labels(ids[0], n)
    fig = Figure(figsize=(7.2, 3.9), layout="constrained")
    left, right = fig.subplots(1, 2)
    blocked = (mask[:n, :n] < 0).float()
    left.imshow(blocked.numpy(), cmap="Greys", vmin=0, vmax=1.6)
    for i in range(n):
        for j in range(n):
            left.text(j, i, "−∞" if blocked[i, j] else "0", ha="center", va="center",
                      fontsize=8)
    left.set_title("additive mask in layer 1\n(0: may attend, −∞: blocked)", fontsize=9)
    A = weights.mean(0)[:n, :n]
    im = right.imshow(A.numpy(), cmap="viridis", vmin=0, vmax=1)
    heads = weights.shape[0]
    right.set_title(f"attention weights of layer 1\n(mean of its {heads} heads)",
                    fontsize=9)
    fig.colorbar(im, ax=right, label="weight (in [0, 1])", shrink=0.85)
    for ax in (left, right):
        ax.set_xticks(range(n), labels, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(n), [f"{m} {t}" for m, t in enumerate(labels)], fontsize=8)
        ax.set_xlabel("key position (attended to)", fontsize=8)
    left.set_ylabel("query position m", fontsize=8)
    return fig


def contexts(enc, prompts) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids (B, 77), C (B, 77, 768)): the prompts tokenized and encoded by ``enc``."""
    ids = tokenizer.tokenize(prompts)
    with torch.no_grad():
        return ids, enc(ids).last_hidden_state


def changed_rows(Ca: torch.Tensor, Cb: torch.Tensor) -> list[int]:
    """The positions m (0-based) where row m of two contexts (M, d) differs at all."""
    return torch.nonzero((Ca != Cb).any(dim=-1)).flatten().tolist()


def _stems(ax, m, change, same) -> None:
    m, change, same = m.numpy(), change.numpy(), same.numpy()
    ax.vlines(m[~same], 0, change[~same], color="C3", lw=1)
    ax.plot(m[~same], change[~same], "o", color="C3", ms=3, label="row changes")
    ax.plot(m[same], change[same], "o", mfc="none", color="C0", ms=5,
            label="row identical (difference exactly 0)")
    ax.set_ylim(0, 1.08 * float(change.max()) or 1.0)


def plot_row_changes(Ca, Cb, ids_a, ids_b, n_labels: int = 9) -> Figure:
    """Relative change ‖C_b[m] − C_a[m]‖ / ‖C_a[m]‖ of each row m of the context when
    the prompt of ``ids_a`` becomes that of ``ids_b``; rows that are identical bit for
    bit are open circles on zero. Left: the first n_labels positions, labelled with
    the tokens (a→b where they differ); right: all of them."""
    change = (Cb - Ca).norm(dim=-1) / Ca.norm(dim=-1)
    m = torch.arange(len(Ca))
    same = torch.ones(len(Ca), dtype=torch.bool)
    same[changed_rows(Ca, Cb)] = False
    fig = Figure(figsize=(7.2, 3.4), layout="constrained")
    near, far = fig.subplots(1, 2, sharey=True, width_ratios=[1, 2])
    k = slice(0, n_labels)
    _stems(near, m[k], change[k], same[k])
    a, b = token_labels(ids_a, n_labels), token_labels(ids_b, n_labels)
    near.set_xticks(range(n_labels), [f"{i} {s}" if s == t else f"{i} {s}→{t}"
                                      for i, (s, t) in enumerate(zip(a, b))],
                    rotation=60, ha="right", fontsize=8)
    near.set_title(f"positions 0–{n_labels - 1}, by token", fontsize=9)
    near.set_ylabel("‖ΔC[m]‖ / ‖C[m]‖")
    _stems(far, m, change, same)
    far.set_title(f"all {len(Ca)} positions", fontsize=9)
    far.set_xlabel("position m of the context (0 = start token)")
    far.legend(fontsize=8)
    return fig
