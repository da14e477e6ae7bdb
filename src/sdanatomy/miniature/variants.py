"""The miniature lab's variants: SD-1.5's U-Net with one architectural choice taken out.

Each builder returns an ε̂ with :class:`sdanatomy.miniature.EpsHat`'s interface,
``forward(z, t, ids)``, built from the shipped ``UNET_CONFIG`` with one change, made by
one of diffusers' own configuration switches where one exists, else by a small visible
function here:

========  =========================================================================
baseline  the shipped ``UNET_CONFIG``
no_skip   forward pre-hooks give every up block zeros in place of its skip tensors
no_self   ``only_cross_attention=True``: attn1 reads the text, as attn2 does;
          diffusers leaves the mid block's self-attention alone, so
          :func:`mid_only_cross_attention` makes its attn1 a cross-attention too
no_cross  plain ``DownBlock2D``/``UpBlock2D``/``UNetMidBlock2D`` (no transformer at
          all); the prompt enters as CLIP's end-token vector, projected and added
          to the time embedding (``class_embed_type="projection"``)
no_down   one level, ``block_out_channels=(48,)``, ``layers_per_block=2``: the U-Net
          without downsampling or upsampling, attention and skips kept, parameters
          1.05 % fewer than the baseline's
film      ``resnet_time_scale_shift="scale_shift"``: (1 + γ(h)) ⊙ GN(W₁) + β(h), the
          printed (54), against SD-1.5's GN(W₁ + β(h))
head1x1   ``conv_out_kernel=1``, no GroupNorm → SiLU before it: the printed 1×1 head
half      ``block_out_channels=(16, 32)``
double    ``block_out_channels=(64, 128)``
========  =========================================================================

The text encoder is the shipped ``TEXT_ENCODER_CONFIG`` in every variant, trained
with it.
"""
from __future__ import annotations

import torch

from sdanatomy.miniature import TEXT_ENCODER_CONFIG, UNET_CONFIG, EpsHat
from sdanatomy.sd15.reference import (Attention, BasicTransformerBlock, CLIPTextConfig,
                                      CLIPTextModel, UNet2DConditionModel)

EOS_ID = TEXT_ENCODER_CONFIG["eos_token_id"]
D_TEXT = TEXT_ENCODER_CONFIG["hidden_size"]      # the context's width, 32


def zero_skips(unet: torch.nn.Module) -> list:
    """Every up block of ``unet`` receives zeros of the same shapes in place of its
    skips.

    The parameters are unchanged (the up blocks' ResnetBlock2Ds still read C_skip more
    channels), so the variant differs from the baseline only in what flows along the
    skips. Returns the hook handles.
    """

    def zeros(module, args, kwargs):
        skips = kwargs["res_hidden_states_tuple"]
        kwargs["res_hidden_states_tuple"] = tuple(torch.zeros_like(s) for s in skips)
        return args, kwargs

    return [block.register_forward_pre_hook(zeros, with_kwargs=True)
            for block in unet.up_blocks]


def mid_only_cross_attention(unet: torch.nn.Module) -> int:
    """Give the mid block's transformer blocks what ``only_cross_attention=True``
    gives the others: attn1 becomes a fresh cross-attention (queries from the pixels,
    keys and values from the text), which diffusers' switch does not reach in
    ``UNetMidBlock2DCrossAttn``. Returns the number of blocks changed."""
    changed = 0
    for block in unet.mid_block.modules():
        if isinstance(block, BasicTransformerBlock) and not block.only_cross_attention:
            old = block.attn1
            block.attn1 = Attention(query_dim=old.query_dim, heads=old.heads,
                                    dim_head=old.inner_dim // old.heads,
                                    cross_attention_dim=unet.config.cross_attention_dim,
                                    bias=old.to_q.bias is not None,
                                    upcast_attention=old.upcast_attention)
            block.only_cross_attention = True
            changed += 1
    return changed


def end_token_vector(context: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """The text encoder's output at the end token: (B, M, d) -> (B, d).

    CLIP's pooled output, read at the first ``<|endoftext|>`` (in a causal encoder the
    only token that has seen the whole prompt). transformers' ``pooler_output`` is not
    used: with eos_token_id = 2 it reads the largest token id's position instead.
    """
    is_end = ids == EOS_ID
    if not is_end.any(1).all():
        raise ValueError("every prompt needs its <|endoftext|> token (see tokenize)")
    position = is_end.int().argmax(1)                                  # (B,)
    return context[torch.arange(len(ids)), position]                   # (B, d)


class PooledEpsHat(EpsHat):
    """ε̂ for a U-Net without cross-attention: the prompt enters through the end-token
    vector, which ``class_embed_type="projection"`` maps and adds to the time
    embedding."""

    def forward(self, z, t, ids):
        context = self.context(ids)                                     # (B, M, d)
        return self.unet(z, t, encoder_hidden_states=context,
                         class_labels=end_token_vector(context, ids)).sample


def _config(**changes) -> dict:
    config = dict(UNET_CONFIG)
    config.update(changes)
    return config


CONFIGS = {
    "baseline": _config(),
    "no_skip": _config(),
    "no_self": _config(only_cross_attention=True),
    "no_cross": _config(down_block_types=("DownBlock2D",) * 2,
                        up_block_types=("UpBlock2D",) * 2,
                        mid_block_type="UNetMidBlock2D", class_embed_type="projection",
                        projection_class_embeddings_input_dim=D_TEXT),
    "no_down": _config(block_out_channels=(48,), layers_per_block=2,
                       down_block_types=("CrossAttnDownBlock2D",),
                       up_block_types=("CrossAttnUpBlock2D",)),
    "film": _config(resnet_time_scale_shift="scale_shift"),
    "head1x1": _config(conv_out_kernel=1),
    "half": _config(block_out_channels=(16, 32)),
    "double": _config(block_out_channels=(64, 128)),
}
VARIANTS = tuple(CONFIGS)


def build(name: str, *, seed: int = 0) -> EpsHat:
    """The variant ``name`` of :data:`VARIANTS`, freshly initialised from ``seed``."""
    if name not in CONFIGS:
        raise ValueError(f"unknown variant {name!r}; "
                         f"the lab knows {', '.join(VARIANTS)}")
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**CONFIGS[name])
    text_encoder = CLIPTextModel(CLIPTextConfig(**TEXT_ENCODER_CONFIG))
    if name == "no_skip":
        zero_skips(unet)
    elif name == "no_self":
        mid_only_cross_attention(unet)
    elif name == "head1x1":
        unet.conv_norm_out = None    # forward: conv_out reads the last up block as is
    cls = PooledEpsHat if name == "no_cross" else EpsHat
    return cls(unet, text_encoder)


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
