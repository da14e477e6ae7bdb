"""Where the miniature's cross-attention looks: one attention map per prompt token (lecture §6.8).

During one generation every cross-attention module (``attn2``) of the U-Net computes, for each of
the H·W latent pixels, softmax weights π over the M prompt tokens — the soft dictionary lookup of
§6.8 with the pixels as queries and the tokens as keys. We record those weights with diffusers'
plain ``AttnProcessor`` (the one that forms the softmax explicitly, through
``Attention.get_attention_scores``), keep the conditional half of the guided batch, and average
over heads, modules at the latent's full resolution, and sampling steps.
"""
from __future__ import annotations

import torch

from . import IMAGE_SIZE, generate, tokenize
from sdanatomy.sd15.reference import AttnProcessor


def cross_attention_maps(model, prompt: str, *, guidance: float = 3.0, steps: int = 50, seed: int = 0):
    """(image (1, 16, 16), token ids (M,), maps (M, 8, 8)): π over the prompt's tokens per latent pixel."""

    side = IMAGE_SIZE // 2
    modules = [m for name, m in model.unet.named_modules() if name.endswith("attn2")]
    records = []
    originals = [(m, m.processor) for m in modules]

    def recording(original):
        def get_attention_scores(query, key, attention_mask=None):
            probs = original(query, key, attention_mask)     # (B·heads, N, M)
            if probs.shape[1] == side * side:                # the modules at the latent's resolution
                records.append(probs.detach())
            return probs
        return get_attention_scores

    try:
        for m in modules:
            m.set_processor(AttnProcessor())                 # explicit softmax, same function
            m.get_attention_scores = recording(m.get_attention_scores)
        image = generate(model, [prompt], guidance=guidance, steps=steps, seed=seed)[0]
    finally:
        for m, processor in originals:
            m.set_processor(processor)
            del m.get_attention_scores                       # back to the class's method
    if not records:
        raise RuntimeError("no cross-attention at the latent's resolution was recorded")
    conditional = []
    for probs in records:
        heads = probs.shape[0] // (2 if guidance != 1.0 else 1)
        conditional.append(probs[-heads:].mean(0))          # the prompt's half of the guided batch
    maps = torch.stack(conditional).mean(0)                  # (N, M)
    return image, tokenize(prompt)[0], maps.T.reshape(-1, side, side)   # (N, M) -> (M, H, W)
