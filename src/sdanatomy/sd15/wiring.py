"""The skip wiring of SD-1.5's U-Net, lecture §8.1, observed in diffusers' module.

Def. 8.1 passes one skip per level, D_{ℓ−1} to the up block of the same level. SD-1.5's
``UNet2DConditionModel`` keeps twelve. :func:`skip_wiring` does not take that from the
book's own ``lecture.unet`` (which would make the picture a copy of the code it checks):
it runs diffusers' module once on the meta device (shapes only) and watches it.

* forward hooks name the module that produced each tensor of the down path;
* a ``TorchFunctionMode`` sees every ``torch.cat`` the up blocks call;
* forward pre-hooks on the up path's residual blocks see what each one receives.

A residual block that receives the output of a ``cat`` whose second operand came from the
down path consumes that skip. The result is the list of :class:`Skip` in the order the up
path consumes them, each with its producer, its consumer and its shape.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.overrides import TorchFunctionMode

from sdanatomy.sd15.reference import meta

__all__ = ["Skip", "skip_wiring", "upsampling_blocks"]


@dataclass(frozen=True)
class Skip:
    producer: str                 # the down-path module whose output is kept
    consumer: str                 # the up-path ResnetBlock2D that concatenates it
    shape: tuple[int, int, int]   # (C, H, W) of the skip


class _Cats(TorchFunctionMode):
    """Records (operands, result) of every torch.cat called while the mode is active."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is torch.cat:
            self.calls.append((tuple(args[0]), out))
        return out


def _producers(unet) -> list[tuple[str, torch.nn.Module]]:
    """conv_in, then every resnet, transformer and downsampler of the down path, in order."""
    named = [("conv_in", unet.conv_in)]
    for i, block in enumerate(unet.down_blocks):
        for name, m in block.named_children():
            if name in ("resnets", "attentions", "downsamplers"):
                named += [(f"down_blocks.{i}.{name}.{j}", sub) for j, sub in enumerate(m)]
    return named


def skip_wiring(height: int = 64, width: int = 64, config=None) -> list[Skip]:
    """The skips of SD-1.5's U-Net (or ``config``'s) at a latent of height × width, in the
    order the up path consumes them: observed on diffusers' module, never assumed."""
    for name, v in (("height", height), ("width", width)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"skip_wiring: {name} must be a positive integer; got {v!r}")
    unet = meta("unet", config)
    made, handles = {}, []                          # id(tensor) -> (name, tensor)

    def keep(name):
        def hook(module, args, out):
            T = out[0] if isinstance(out, tuple) else getattr(out, "sample", out)
            made[id(T)] = (name, T)                 # the tensor is kept: its id stays unique
        return hook

    received = []                                   # (up resnet, its input tensor)
    for name, m in _producers(unet):
        handles.append(m.register_forward_hook(keep(name)))
    for i, block in enumerate(unet.up_blocks):
        for j, res in enumerate(block.resnets):
            name = f"up_blocks.{i}.resnets.{j}"
            handles.append(res.register_forward_pre_hook(
                lambda m, args, name=name: received.append((name, args[0]))))
    z = torch.empty(1, unet.config.in_channels, height, width, device="meta")
    c = torch.empty(1, 77, unet.config.cross_attention_dim, device="meta")
    try:
        with _Cats() as cats, torch.no_grad():
            unet(z, 500, c)
    finally:
        for h in handles:
            h.remove()
    cat_of = {id(out): operands for operands, out in cats.calls}
    skips = []
    for consumer, X in received:
        operands = cat_of.get(id(X), ())
        kept = [made[id(T)] for T in operands[1:] if id(T) in made]
        if len(operands) != 2 or len(kept) != 1:
            raise RuntimeError(f"skip_wiring: {consumer} does not read one concatenated skip; "
                               f"diffusers' up blocks changed")
        producer, S = kept[0]
        skips.append(Skip(producer, consumer, tuple(S.shape[1:])))
    return skips


def upsampling_blocks(config=None) -> tuple[int, ...]:
    """The indices i of diffusers' up_blocks[i] that end with an upsampler."""
    unet = meta("unet", config)
    return tuple(i for i, b in enumerate(unet.up_blocks) if b.upsamplers is not None)
