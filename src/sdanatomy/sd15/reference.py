"""The reference modules the checks compare against: SD-1.5's own diffusers modules, seeded.

* :func:`meta` — the one builder of SD-1.5's modules on the meta device (shapes, no storage),
  cached per configuration, for counting, diagrams and cutting out submodules;
* :func:`seed_parameters` — storage and seeded Θ for a meta module: the one seeder of Θ that
  every check uses (the full-size builders of :mod:`sdanatomy.sd15` run each library's own init);
* :func:`reference` — one submodule of SD-1.5 ("unet.<name>" or "vae.<name>") with seeded Θ;
* :func:`narrow_unet`, :func:`narrow_vae` — SD-1.5's configurations at narrower widths, where a
  check needs a whole network in float64;
* the diffusers classes the ledger's rows and the pages build directly, imported here once:
  nothing outside :mod:`sdanatomy.sd15` imports diffusers or transformers.
"""
from __future__ import annotations

import copy
import functools
import json
import math

import torch
from diffusers import (  # noqa: F401
    AutoencoderKL, DDIMScheduler, DDPMScheduler, PNDMScheduler, UNet2DConditionModel, UNet2DModel)
from diffusers.models.attention import BasicTransformerBlock  # noqa: F401
from diffusers.models.attention_processor import Attention, AttnProcessor  # noqa: F401
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution  # noqa: F401
from diffusers.models.downsampling import Downsample2D  # noqa: F401
from diffusers.models.embeddings import Timesteps, get_timestep_embedding  # noqa: F401
from diffusers.models.modeling_outputs import Transformer2DModelOutput  # noqa: F401
from diffusers.models.resnet import ResnetBlock2D  # noqa: F401
from diffusers.models.transformers.transformer_2d import Transformer2DModel  # noqa: F401
from diffusers.models.unets.unet_2d_blocks import (  # noqa: F401
    CrossAttnUpBlock2D, DownBlock2D, UpBlock2D, get_down_block)
from diffusers.models.upsampling import Upsample2D  # noqa: F401
from transformers import CLIPTextConfig, CLIPTextModel  # noqa: F401

from sdanatomy.lecture.config import UNET_CONFIG, VAE_CONFIG
from sdanatomy.sd15 import build_unet, build_vae

NARROW_WIDTHS = (32, 64, 64, 64)   # SD-1.5: (320, 640, 1280, 1280)
NARROW_UNET_CONFIG = dict(UNET_CONFIG, block_out_channels=NARROW_WIDTHS)
NARROW_VAE_CONFIG = dict(VAE_CONFIG, block_out_channels=(32, 32, 64, 64))
_BUILDERS = {"unet": (build_unet, UNET_CONFIG), "vae": (build_vae, VAE_CONFIG)}


_META: dict[tuple[str, str], torch.nn.Module] = {}


def meta(component: str = "unet", config=None) -> torch.nn.Module:
    """SD-1.5's U-Net or VAE (or another configuration of the family) as diffusers builds it, on the
    meta device: shapes, no storage. Built once per configuration and shared: copy before changing it.
    """
    if component not in _BUILDERS:
        raise ValueError(f"component must be one of {tuple(_BUILDERS)}; got {component!r}")
    build, default = _BUILDERS[component]
    config = default if config is None else config
    key = (component, json.dumps(dict(config), sort_keys=True, default=list))
    if key not in _META:
        _META[key] = build(config, weights="meta")
    return _META[key]


def seed_parameters(module: torch.nn.Module, seed: int, dtype) -> torch.nn.Module:
    """Storage and seeded Θ for a meta module (in place): kernels and matrices U(±1/√fan_in) as torch
    initialises them, vectors (biases, γ, β) N(0, 1), drawn in the order of the sorted names.

    N(0, 1) for γ and β, not torch's γ = 1, β = 0: a check must see every parameter act.
    """
    # torch's own .to(): diffusers 0.42's override warns about "modules that should be kept in
    # float32" on every dtype cast, even when there are none.
    module = torch.nn.Module.to(module.to_empty(device="cpu"), dtype=dtype).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(module.named_parameters()):
            if p.dim() > 1:
                bound = 1 / math.sqrt(p[0].numel())
                p.copy_(torch.rand(p.shape, generator=g, dtype=dtype) * 2 * bound - bound)
            else:
                p.copy_(torch.randn(p.shape, generator=g, dtype=dtype))
    return module


def reference(path: str, *, seed: int = 0, dtype=torch.float64) -> torch.nn.Module:
    """One submodule of SD-1.5 ("unet.<name>" or "vae.<name>"), with seeded Θ: matrices and kernels
    U(±1/√fan_in) as torch initialises them, vectors (biases, γ, β) N(0, 1)."""
    root, _, name = path.partition(".")
    return seed_parameters(copy.deepcopy(meta(root).get_submodule(name)), seed, dtype)


def sd15_module(path: str, *, seed: int = 0, dtype=torch.float64) -> torch.nn.Module:
    """One submodule of the real SD-1.5 U-Net ("unet.<name>"), with seeded Θ (:func:`seed_parameters`)."""
    root, _, name = path.partition(".")
    if root != "unet":
        raise ValueError(f"sd15_module reads the U-Net ('unet.<name>'); got {path!r}")
    return seed_parameters(copy.deepcopy(meta("unet").get_submodule(name)), seed, dtype)


@functools.lru_cache(maxsize=4)
def narrow_unet(seed: int = 0, dtype=torch.float64) -> torch.nn.Module:
    """diffusers' UNet2DConditionModel of SD-1.5's config at widths (32, 64, 64, 64), seeded Θ."""
    return seed_parameters(copy.deepcopy(meta("unet", NARROW_UNET_CONFIG)), seed, dtype)


def narrow_vae(seed: int = 0, dtype=torch.float64):
    """The AutoencoderKL of :data:`NARROW_VAE_CONFIG` with seeded post_quant_conv and Decoder (the
    encoder stays on meta: ``decode`` never reads it). Returns (module, its Θ)."""
    vae = copy.deepcopy(meta("vae", NARROW_VAE_CONFIG))
    for name in ("post_quant_conv", "decoder"):
        seed_parameters(vae.get_submodule(name), seed, dtype)
    theta = {k: v.detach() for k, v in vae.state_dict().items()
             if not k.startswith(("encoder.", "quant_conv."))}
    return vae.eval(), theta
