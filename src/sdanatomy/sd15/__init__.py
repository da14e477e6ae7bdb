"""Stable Diffusion 1.5's components, lecture §5: the U-Net, the VAE and the CLIP text encoder.

Two modes, one set of modules (diffusers' ``UNet2DConditionModel`` and ``AutoencoderKL``,
transformers' ``CLIPTextModel``, built from SD-1.5's exact configurations):

* **real weights** — :func:`load` finds SD-1.5 weights (an explicit path, ``$SDANATOMY_WEIGHTS``,
  or the local Hugging Face cache; never the network) and reads them from ``.safetensors`` only;
* **architecture only** — without weights, the same modules with seeded random weights: every
  shape, parameter count and diagram of the book is exact, and generated images are noise.

The builders (:func:`build_unet`, :func:`build_vae`, :func:`build_text_encoder`) give either mode's
modules directly; ``weights="meta"`` gives them without storage, for diagrams and counting.
"""
from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders.single_file_utils import (
    convert_ldm_clip_checkpoint, convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint)
from huggingface_hub import try_to_load_from_cache
from safetensors import SafetensorError
from safetensors.torch import load_file
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedModel
from transformers.utils import logging as hf_logging

from sdanatomy.lecture.config import TEXT_ENCODER_CONFIG, UNET_CONFIG, VAE_CONFIG

COMPONENTS = ("unet", "vae", "text_encoder")
ENV_VAR = "SDANATOMY_WEIGHTS"
HF_REPO_IDS = ("stable-diffusion-v1-5/stable-diffusion-v1-5", "runwayml/stable-diffusion-v1-5")
REAL, ARCHITECTURE = "real weights", "architecture only"
# Per component: the safetensors names diffusers writes (plain, then the fp16 variant), the pickle
# it would otherwise write, and the key prefix of the original (LDM) single-file checkpoint.
WEIGHT_FILES = {
    "unet": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors"),
    "vae": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors"),
    "text_encoder": ("model.safetensors", "model.fp16.safetensors"),
}
PICKLE_FILES = {"unet": "diffusion_pytorch_model.bin", "vae": "diffusion_pytorch_model.bin",
                "text_encoder": "pytorch_model.bin"}
LDM_PREFIX = {"unet": "model.diffusion_model.", "vae": "first_stage_model.",
              "text_encoder": "cond_stage_model.transformer."}
PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth")
NO_PICKLES = ("only .safetensors are read (pickle files can execute code); convert it with "
              "`StableDiffusionPipeline.from_single_file(...)` (a .ckpt) or `.from_pretrained(...)` "
              "(a folder), then `.save_pretrained(out, safe_serialization=True)`, in a session you trust")


class WeightsError(ValueError):
    """Weights that cannot be read: the message names the file or folder and what is wrong."""


class WeightsNotFoundError(WeightsError, FileNotFoundError):
    """A weights path that does not exist."""


def count_parameters(module: torch.nn.Module) -> int:
    """Number of scalars in Θ (shared parameters once); works on meta modules."""
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------- building the modules
def _sd15_config(component: str) -> dict:
    # Looked up at call time, so that a test can swap in a tiny configuration.
    return {"unet": UNET_CONFIG, "vae": VAE_CONFIG, "text_encoder": TEXT_ENCODER_CONFIG}[component]


def _construct(component: str, config) -> torch.nn.Module:
    config = dict(config)
    if component == "unet":
        return UNet2DConditionModel.from_config(config)
    if component == "vae":
        return AutoencoderKL.from_config(config)
    return CLIPTextModel(CLIPTextConfig(**config))


@contextlib.contextmanager
def _parameters_on_meta():
    """Construct modules with every parameter on the meta device and every buffer real.

    Like ``torch.device("meta")``, but buffers such as CLIP's ``position_ids`` (an arange that
    checkpoints do not store) keep the values their constructor computes. This is accelerate's
    ``init_empty_weights(include_buffers=False)`` in a few lines; not thread-safe, like it.
    """
    register = torch.nn.Module.register_parameter

    def register_on_meta(module, name, param):
        register(module, name, param)
        if param is not None:
            module._parameters[name] = torch.nn.Parameter(param.to("meta"), param.requires_grad)

    torch.nn.Module.register_parameter = register_on_meta
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = register


def _skeleton(component: str, config) -> torch.nn.Module:
    """The module, parameters on meta (no storage, no init cost), buffers with their real values."""
    with _parameters_on_meta():
        return _construct(component, config)


def _initialise(module: torch.nn.Module) -> None:
    """Each library's own initialiser, the one its constructor runs.

    transformers: the model's ``_init_weights``; diffusers: PyTorch's default ``reset_parameters``.
    """
    if isinstance(module, PreTrainedModel):
        # Not init_weights(): construction already marked every module `_is_hf_initialized`.
        module.apply(module._init_weights)
        return
    for sub in module.modules():
        if next(sub.parameters(recurse=False), None) is None:
            continue
        if not hasattr(sub, "reset_parameters"):  # never leave a parameter as uninitialised memory
            raise RuntimeError(f"{type(sub).__name__} has parameters but no reset_parameters()")
        sub.reset_parameters()


def _to(module: torch.nn.Module, *, device, dtype) -> torch.nn.Module:
    # torch's own .to(): diffusers 0.42's override warns about "modules that should be kept in
    # float32" on every dtype cast, even when there are none (SD-1.5 has none).
    return torch.nn.Module.to(module, device=device, dtype=dtype).eval()


def _check_args(dtype, seed, device) -> torch.device:
    """Reject bad arguments at the door; the device, CUDA when there is one unless told otherwise."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype such as torch.float32; got {dtype!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int; got {seed!r}")
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"not a device: {device!r}") from e


def _build(component, config, *, seed, device, dtype, weights):
    if weights not in ("random", "meta"):
        raise ValueError(f"weights must be 'random' or 'meta' (use load() for real weights); got {weights!r}")
    device = _check_args(dtype, seed, device)
    if weights == "meta":
        with torch.device("meta"):
            return _to(_construct(component, config), device="meta", dtype=dtype)
    module = _skeleton(component, config)
    buffers = {name: b.clone() for name, b in module.named_buffers()}
    module.to_empty(device="cpu")  # storage for Θ, still uninitialised
    for p in module.parameters():
        # First touch of ~3.4 GB, on all threads: the seeded init below runs on one thread (that is
        # what makes it reproducible), and page faults would otherwise be paid there, serially.
        p.data.zero_()
    # On the CPU generator and in float32 whatever the target, so that a seed gives the same Θ on
    # every machine and device; fork_rng leaves the caller's random stream untouched.
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        _initialise(module)
    for name, b in buffers.items():
        module.get_buffer(name).copy_(b)
    return _to(module, device=device, dtype=dtype)


def build_unet(config=UNET_CONFIG, *, seed=0, device=None, dtype=torch.float32, weights="random"):
    """The SD-1.5 U-Net ε_θ(z_t, t, c), §5: z (B, 4, 64, 64), t (B,), c (B, 77, 768) -> (B, 4, 64, 64).

    ``weights="random"``: seeded default init (same seed, same Θ); ``"meta"``: no storage.
    """
    return _build("unet", config, seed=seed, device=device, dtype=dtype, weights=weights)


def build_vae(config=VAE_CONFIG, *, seed=0, device=None, dtype=torch.float32, weights="random"):
    """The SD-1.5 VAE, §5: image (B, 3, 512, 512) <-> latent (B, 4, 64, 64). Arguments as build_unet."""
    return _build("vae", config, seed=seed, device=device, dtype=dtype, weights=weights)


def build_text_encoder(config=TEXT_ENCODER_CONFIG, *, seed=0, device=None, dtype=torch.float32,
                       weights="random"):
    """CLIP ViT-L/14's text tower, §5: token ids (B, 77) -> c (B, 77, 768). Arguments as build_unet."""
    return _build("text_encoder", config, seed=seed, device=device, dtype=dtype, weights=weights)


# ---------------------------------------------------------------- a tiny folder to load
# SD-1.5's three classes at toy widths (SD-1.5's own sizes live in lecture/config.py).
TINY_CONFIGS = {
    "unet": dict(block_out_channels=(32, 64), layers_per_block=1,
                 cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8,
                 down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), in_channels=4,
                 out_channels=4, sample_size=16),
    "vae": dict(block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8,
                latent_channels=4, down_block_types=("DownEncoderBlock2D",) * 2,
                up_block_types=("UpDecoderBlock2D",) * 2, sample_size=32),
    "text_encoder": dict(vocab_size=100, hidden_size=32, intermediate_size=37,
                         num_hidden_layers=2, num_attention_heads=4,
                         max_position_embeddings=16, hidden_act="quick_gelu",
                         projection_dim=32, bos_token_id=0, eos_token_id=2,
                         pad_token_id=1),
}


def write_tiny_folder(path, *, seed: int = 0) -> dict[str, torch.nn.Module]:
    """Write a tiny SD-shaped diffusers folder at ``path``; return its three modules.

    ``path/unet``, ``path/vae`` and ``path/text_encoder`` each get a ``config.json`` and
    the weights as ``.safetensors``, written by the libraries' own ``save_pretrained``:
    the layout of SD-1.5's folder, so :func:`load` reads it by the one path real weights
    take. The modules are SD-1.5's classes at :data:`TINY_CONFIGS`' toy widths (about
    6 MB of weights, written in a second, where SD-1.5's take 4 GB), built by the
    libraries' own constructors, in this order, after ``manual_seed(seed)``: the same
    seed writes the same tensors. The caller's random stream is left untouched, and
    transformers' progress bar stays off while it writes. ``path`` must not exist yet
    or be an empty folder.
    """
    _check_args(torch.float32, seed, "cpu")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or a Path; got {type(path).__name__}")
    root = Path(path)
    if root.exists() and not (root.is_dir() and not any(root.iterdir())):
        raise ValueError(f"{root}: exists and is not an empty folder; write the tiny "
                         f"model to a new or empty one")
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        modules = {c: _construct(c, TINY_CONFIGS[c]) for c in COMPONENTS}
    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()          # a bar for a 70 kB file is only noise
    try:
        for component, module in modules.items():
            module.save_pretrained(root / component, safe_serialization=True)
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()
    return modules


# ---------------------------------------------------------------- reading real weights
def _read_safetensors(file: Path) -> dict:
    try:
        return load_file(file)  # never torch.load: a pickle can run code
    except SafetensorError as e:
        raise WeightsError(f"{file}: not a readable .safetensors file (truncated or corrupt?): {e}") from e


def _fix_keys(component: str, module: torch.nn.Module, sd: dict) -> dict:
    """The renamings the libraries' own loaders apply, so that older files load too."""
    if component == "text_encoder":
        # transformers >= 5.6 flattened CLIPTextModel; files written before keep `text_model.`.
        sd = {k.removeprefix("text_model."): v for k, v in sd.items()}
    else:
        # diffusers' own fix, e.g. SD-1.5's VAE file still says query/key/value/proj_attn.
        sd = module._fix_state_dict_keys_on_load(dict(sd))
    # Non-persistent buffers (CLIP's position_ids, stored by older transformers and corrupted in
    # some community checkpoints) are the constructor's to compute, never the file's.
    non_persistent = {name for name, _ in module.named_buffers()} - set(module.state_dict())
    return {k: v for k, v in sd.items() if k not in non_persistent}


def _into_module(component, config, sd, file, *, device, dtype) -> torch.nn.Module:
    """Build from ``config`` on meta, check every key and shape of ``sd``, assign, cast, move."""
    module = _skeleton(component, config)
    sd = _fix_keys(component, module, sd)
    expected = module.state_dict()
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    wrong = [f"{k}: file {tuple(sd[k].shape)}, module {tuple(expected[k].shape)}"
             for k in expected if k in sd and sd[k].shape != expected[k].shape]
    problems = [f"{len(keys)} {what} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})"
                for what, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                                   ("shape mismatches", wrong)) if keys]
    if problems:
        raise WeightsError(f"{file}: does not fit the {component} of its configuration: "
                           + "; ".join(problems))
    module.load_state_dict(sd, strict=True, assign=True)
    return _to(module, device=device, dtype=dtype)


def _component_files(folder: Path, component: str) -> tuple[Path, Path]:
    """(config.json, safetensors file) of one component of a diffusers folder, or a clear error."""
    sub = folder / component
    if not sub.is_dir():
        raise WeightsError(f"{folder}: no {component}/ subfolder; "
                           f"a diffusers folder has {', '.join(COMPONENTS)}")
    if not (sub / "config.json").is_file():
        raise WeightsError(f"{sub}: no config.json")
    for name in WEIGHT_FILES[component]:
        if (sub / name).is_file():
            return sub / "config.json", sub / name
    if (sub / PICKLE_FILES[component]).is_file():
        raise WeightsError(f"{sub / PICKLE_FILES[component]}: {NO_PICKLES}")
    raise WeightsError(f"{sub}: no {' or '.join(WEIGHT_FILES[component])}")


def _load_folder(folder: Path, components, *, device, dtype) -> dict:
    files = {c: _component_files(folder, c) for c in components}  # check all before reading any
    modules = {}
    for c, (config_file, weights_file) in files.items():
        try:
            config = json.loads(config_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise WeightsError(f"{config_file}: not valid JSON: {e}") from e
        expected_class = {"unet": "UNet2DConditionModel", "vae": "AutoencoderKL"}.get(c)
        if expected_class and config.get("_class_name", expected_class) != expected_class:
            raise WeightsError(f"{config_file}: describes a {config['_class_name']}, not a {expected_class}")
        sd = _read_safetensors(weights_file)
        modules[c] = _into_module(c, config, sd, weights_file, device=device, dtype=dtype)
    return modules


def _load_single_file(file: Path, components, *, device, dtype) -> dict:
    """An original Stable Diffusion (LDM) checkpoint, renamed by diffusers' own converters."""
    ckpt = _read_safetensors(file)
    for c in components:
        if not any(k.startswith(LDM_PREFIX[c]) for k in ckpt):
            raise WeightsError(f"{file}: no keys start with {LDM_PREFIX[c]!r}, so it is not an original "
                               f"Stable Diffusion (LDM) checkpoint holding the {c}")
    modules = {}
    for c in components:
        config = _sd15_config(c)
        if c == "unet":  # the EMA weights when the file has both: they are the ones to sample with
            sd = convert_ldm_unet_checkpoint(ckpt, config, extract_ema=True)
        elif c == "vae":
            sd = convert_ldm_vae_checkpoint(ckpt, config)
        else:
            sd = convert_ldm_clip_checkpoint(ckpt)
        modules[c] = _into_module(c, config, sd, file, device=device, dtype=dtype)
    return modules


def _hf_cache_dir() -> str | None:
    # huggingface_hub reads these variables once, at import; read them again now.
    for var, sub in (("HF_HUB_CACHE", ""), ("HUGGINGFACE_HUB_CACHE", ""), ("HF_HOME", "hub")):
        if os.environ.get(var):
            return os.path.join(os.path.expanduser(os.environ[var]), sub)
    return None  # huggingface_hub's default


def _cached_snapshot(repo_id: str, components) -> Path | None:
    """The cached snapshot of ``repo_id`` holding config and safetensors of every component; read only."""
    snapshot, cache = None, _hf_cache_dir()
    for c in components:
        found = [try_to_load_from_cache(repo_id, f"{c}/{name}", cache_dir=cache)
                 for name in ("config.json",) + WEIGHT_FILES[c]]
        if not isinstance(found[0], str) or not any(isinstance(f, str) for f in found[1:]):
            return None
        snapshot = Path(found[0]).parent.parent
    return snapshot


def _weights_path(value, origin: str) -> tuple[Path, str]:
    path = Path(value).expanduser()
    if not path.exists():
        raise WeightsNotFoundError(f"{path} ({origin}): no such file or folder")
    if path.is_dir():
        return path, "diffusers folder"
    if path.suffix in PICKLE_SUFFIXES:
        raise WeightsError(f"{path}: {NO_PICKLES}")
    if path.suffix != ".safetensors":
        raise WeightsError(f"{path} ({origin}): expected a diffusers folder or a .safetensors file")
    return path, "single-file checkpoint"


@dataclass
class SD15:
    """The loaded components (None where not requested) and where their weights came from."""
    unet: UNet2DConditionModel | None = field(repr=False)  # repr: the mode, not 1 B parameters
    vae: AutoencoderKL | None = field(repr=False)
    text_encoder: CLIPTextModel | None = field(repr=False)
    mode: str                   # "real weights" or "architecture only"
    source: Path | None         # the folder or file read, None without weights
    note: str = ""              # how it was read, or the seed
    tokenizer: object = field(default=None, repr=False)  # prompts -> ids (B, M); None: CLIP's BPE

    def describe(self) -> str:
        if self.mode == REAL:
            return f"{REAL} from {self.source} ({self.note})"
        # one line that fits a page's column (≤ 88 characters with load's "sdanatomy: ")
        return (f"{ARCHITECTURE} (SD-1.5, seeded random weights, {self.note}): "
                "images are noise")


def find_weights(weights=None, *, components=COMPONENTS) -> tuple[Path, str] | None:
    """Where :func:`load` reads SD-1.5's weights from, (path, how), or None (architecture only).

    Order: ``weights``, then ``$SDANATOMY_WEIGHTS``, then the local Hugging Face cache. Nothing is read;
    a path that cannot hold weights raises WeightsError.
    """
    # 1. an explicit path, then the environment variable
    if weights is not None:
        return _weights_path(weights, "the weights argument")
    if os.environ.get(ENV_VAR):
        return _weights_path(os.environ[ENV_VAR], f"${ENV_VAR}")
    # 2. the local Hugging Face cache
    for repo_id in HF_REPO_IDS:
        snapshot = _cached_snapshot(repo_id, components)
        if snapshot is not None:
            return snapshot, f"Hugging Face cache, {repo_id}"
    return None


def load(weights=None, *, components=COMPONENTS, device=None, dtype=torch.float32, seed=0,
         verbose=True) -> SD15:
    """SD-1.5's components, §5, from the first source found, never from the network.

    Order: ``weights`` (a diffusers folder or an LDM ``.safetensors`` file), ``$SDANATOMY_WEIGHTS``
    (the same), the local Hugging Face cache (``HF_REPO_IDS``), else architecture only.
    """
    components = (components,) if isinstance(components, str) else tuple(components)
    unknown = [c for c in components if c not in COMPONENTS]
    if unknown or not components:
        raise ValueError(f"components must be some of {COMPONENTS}; got {components!r}")
    device = _check_args(dtype, seed, device)
    found = find_weights(weights, components=components)
    # read them, or build the architecture
    if found is not None:
        path, note = found
        read = _load_single_file if note == "single-file checkpoint" else _load_folder
        modules = read(path, components, device=device, dtype=dtype)
        result = SD15(**{c: modules.get(c) for c in COMPONENTS}, mode=REAL, source=path, note=note)
    else:
        modules = {c: _build(c, _sd15_config(c), seed=seed, device=device, dtype=dtype, weights="random")
                   for c in components}
        result = SD15(**{c: modules.get(c) for c in COMPONENTS}, mode=ARCHITECTURE, source=None,
                      note=f"seed {seed}")
    if verbose:
        print(f"sdanatomy: {result.describe()}")
    return result


# §5's loop, prompt → tokenizer → text encoder → U-Net with guidance → scheduler → VAE decoder,
# lives in its own module; it is part of what "SD-1.5" offers, so it is reachable from here too.
