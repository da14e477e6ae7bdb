"""Bad input, catalogued: each wrong input to the public API gets a clear error that names the constraint.

Every case asserts the exception's type AND that its message names what was violated (the lecture's
constraint, the expected shape, the allowed values), never a shape or dtype error from deep inside
torch. Where the API does not do that yet, the case is marked ``xfail(strict=True)`` with the
input and what happens instead: when the module is fixed the case passes, strict xfail turns that
into a failure, and the mark must be removed.

A failed :func:`sdanatomy.sd15.load` must leave the weights on disk exactly as they were: each corrupt
file below is loaded, refused, and the folder's bytes are hashed before and after.
"""
from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from sdanatomy.lecture import blocks
from sdanatomy.lecture import vae_decoder
from sdanatomy.lecture import diffusion
from sdanatomy import ledger
from sdanatomy.ledger import registry
from sdanatomy.lecture import embeddings
from sdanatomy.lecture import layers
from sdanatomy.lecture import unet
from sdanatomy.lecture import receptive
from sdanatomy import sd15
from sdanatomy.lecture.attention import multihead_attention, scaled_dot_product_attention

from disk import tree_digest

randn = torch.randn
TINY_UNET, TINY_VAE = sd15.TINY_CONFIGS["unet"], sd15.TINY_CONFIGS["vae"]


def conv_theta(C_out=4, C_in=3, k=3, dtype=torch.float32):
    return {"weight": randn(C_out, C_in, k, k, dtype=dtype), "bias": randn(C_out, dtype=dtype)}


def norm_theta(C):
    return {"weight": torch.ones(C), "bias": torch.zeros(C)}


def _theta(shapes: dict) -> dict:
    g = torch.Generator().manual_seed(0)
    return {k: 0.1 * torch.randn(s, generator=g) for k, s in shapes.items()}


UNET_THETA = _theta(unet.theta_shapes(TINY_UNET))
VAE_THETA = _theta(vae_decoder.theta_shapes(TINY_VAE))
RESNET_THETA = {k.removeprefix("down_blocks.1.resnets.0."): v for k, v in UNET_THETA.items()
                if k.startswith("down_blocks.1.resnets.0.")}          # 32 -> 64 channels, d_t = 128
Z, CTX = randn(1, 4, 8, 8), randn(1, 5, 32)
SCHEDULE = diffusion.Schedule.linear()


def _tiny_unet(theta=UNET_THETA, z=Z, t=10, c=CTX):
    return unet.unet(theta, z, t, c, config=TINY_UNET)


def _entry(**changes):
    kwargs = dict(name="(0) test row", section="2", formula="x", reference="y",
                  measure=lambda seed=0, dtype=torch.float64: 0.0, tol=0.0, why_tol="exact")
    kwargs.update(changes)
    return registry.Entry(**kwargs)


def xfail(reason):
    return pytest.mark.xfail(strict=True, reason=reason)


# (id, call, expected exception type(s), regex the message must match)
CASES = [
    # --- layers (§6): shapes, Θ keys, hyperparameters ----------------------------------------
    ("conv2d: X is 2-D", lambda: layers.conv2d(conv_theta(), randn(3, 8)),
     ValueError, r"X ∈ R\^\(C×H×W\) or a batch \(B, C, H, W\)"),
    ("conv2d: X has the wrong C_in", lambda: layers.conv2d(conv_theta(), randn(1, 5, 8, 8)),
     ValueError, r"C_in = 5 .* C_in = 3"),
    ("conv2d: Θ lacks its bias", lambda: layers.conv2d({"weight": randn(4, 3, 3, 3)}, randn(1, 3, 8, 8)),
     ValueError, r"missing \['bias'\]"),
    ("conv2d: Θ is a list", lambda: layers.conv2d([randn(4, 3, 3, 3)], randn(1, 3, 8, 8)),
     TypeError, r"Θ is a dict of tensors"),
    ("conv2d: Θ value is a list", lambda: layers.conv2d({"weight": [[1.0]], "bias": randn(4)}, randn(1, 3, 8, 8)),
     TypeError, r"Θ\['weight'\] must be a torch\.Tensor"),
    ("conv2d: kernel larger than the padded input", lambda: layers.conv2d(conv_theta(k=9), randn(1, 3, 4, 4)),
     ValueError, r"k ≤ H \+ 2p"),
    ("conv2d: stride 0", lambda: layers.conv2d(conv_theta(), randn(1, 3, 8, 8), stride=0),
     ValueError, r"stride is an integer ≥ 1"),
    ("conv2d: negative padding", lambda: layers.conv2d(conv_theta(), randn(1, 3, 8, 8), padding=-1),
     ValueError, r"padding is an integer ≥ 0"),
    ("conv2d: X is a numpy array", lambda: layers.conv2d(conv_theta(), randn(1, 3, 8, 8).numpy()),
     TypeError, r"X as a torch\.Tensor; got ndarray"),
    ("conv2d: weight is 3-D", lambda: layers.conv2d({"weight": randn(4, 3, 3), "bias": randn(4)}, randn(1, 3, 8, 8)),
     ValueError, r"\(C_out, C_in, k_h, k_w\); got \(4, 3, 3\)"),
    ("conv2d: bias of the wrong length", lambda: layers.conv2d({"weight": randn(4, 3, 3, 3), "bias": randn(5)},
                                                              randn(1, 3, 8, 8)),
     ValueError, r"shape \(4,\); got \(5,\)"),
    pytest.param("conv2d: integer X", lambda: layers.conv2d(conv_theta(), torch.ones(1, 3, 8, 8, dtype=torch.long)),
                 (TypeError, ValueError), r"dtype"),
    pytest.param("conv2d: float64 Θ, float32 X", lambda: layers.conv2d(conv_theta(dtype=torch.float64),
                                                                      randn(1, 3, 8, 8)),
                 (TypeError, ValueError), r"dtype"),
    pytest.param("conv2d: X on meta, Θ on cpu", lambda: layers.conv2d(conv_theta(),
                                                                     torch.empty(1, 3, 8, 8, device="meta")),
                 (TypeError, ValueError), r"device"),
    ("linear: x has the wrong d_in", lambda: layers.linear({"weight": randn(4, 3), "bias": randn(4)}, randn(2, 5)),
     ValueError, r"d_in = 5 .* d_in = 3"),
    pytest.param("linear: float64 x, float32 Θ", lambda: layers.linear({"weight": randn(4, 3), "bias": randn(4)},
                                                                       randn(2, 3, dtype=torch.float64)),
                 (TypeError, ValueError), r"dtype"),
    ("softmax: temperature 0", lambda: layers.softmax(randn(3), tau=0),
     ValueError, r"temperature τ > 0"),
    ("softmax: temperature NaN", lambda: layers.softmax(randn(3), tau=float("nan")),
     ValueError, r"τ > 0"),
    ("group_norm: G does not divide C", lambda: layers.group_norm(norm_theta(10), randn(1, 10, 4, 4), groups=32),
     ValueError, r"G \| C \(Def\. 6\.5\); got C=10, G=32"),
    ("group_norm: γ of the wrong length", lambda: layers.group_norm({"weight": randn(16), "bias": randn(32)},
                                                                    randn(1, 32, 4, 4), groups=8),
     ValueError, r"need shape \(32,\)"),
    ("group_norm: a running_mean key (BatchNorm's Θ)", lambda: layers.group_norm(
        {**norm_theta(32), "running_mean": randn(32)}, randn(1, 32, 4, 4), groups=8),
     ValueError, r"unexpected \['running_mean'\]"),
    pytest.param("group_norm: ε < 0", lambda: layers.group_norm(norm_theta(32), randn(1, 32, 4, 4), groups=8, eps=-1.0),
                 ValueError, r"ε"),
    ("downsample_2d_nearest: a 1×1 image", lambda: layers.downsample_2d_nearest(randn(1, 3, 1, 1)),
     ValueError, r"H, W ≥ 2"),
    ("downsample_2d: Θ keyed as a bare Conv2d", lambda: layers.downsample_2d(conv_theta(3, 3), randn(1, 3, 8, 8)),
     ValueError, r"missing \['conv\.weight', 'conv\.bias'\]"),
    ("interpolate_nearest: size 0", lambda: layers.interpolate_nearest(randn(1, 3, 4, 4), size=(0, 4)),
     ValueError, r"size is an integer ≥ 1"),
    ("concat: heights differ", lambda: layers.concat(randn(1, 3, 4, 4), randn(1, 3, 5, 4)),
     ValueError, r"agree in everything but C"),
    pytest.param("concat: one tensor on meta", lambda: layers.concat(randn(1, 3, 4, 4),
                                                                    torch.empty(1, 3, 4, 4, device="meta")),
                 (TypeError, ValueError), r"device"),
    ("conv1x1: a 3×3 kernel", lambda: layers.conv1x1(conv_theta(), randn(1, 3, 8, 8)),
     ValueError, r"1×1 kernel"),
    ("sinusoidal_embedding: R = 0", lambda: embeddings.sinusoidal_embedding(torch.tensor([1]), R=0),
     ValueError, r"R ≥ 1"),
    ("sinusoidal_embedding: t is a string", lambda: embeddings.sinusoidal_embedding("10"),
     TypeError, r"takes t ∈ R"),
    ("scaled_dot_product_attention: K and V of different M", lambda: scaled_dot_product_attention(
        randn(2, 4, 8), randn(2, 5, 8), randn(2, 6, 8)),
     ValueError, r"the same M"),
    ("multihead_attention: 5 heads for width 12", lambda: multihead_attention(
        {"to_q.weight": randn(12, 12), "to_k.weight": randn(12, 12), "to_v.weight": randn(12, 12),
         "to_out.0.weight": randn(12, 12), "to_out.0.bias": randn(12)}, randn(1, 4, 12), heads=5),
     ValueError, r"h must divide"),
    # --- blocks, models, decoder (§6.9–6.11, §8) ---------------------------------------------
    ("resnet_block_2d: Θ lacks conv1.bias", lambda: blocks.resnet_block_2d(
        {k: v for k, v in RESNET_THETA.items() if k != "conv1.bias"}, randn(1, 32, 8, 8), randn(1, 128), groups=8),
     ValueError, r"missing \['conv1\.bias'\]"),
    ("resnet_block_2d: h of the wrong width", lambda: blocks.resnet_block_2d(
        RESNET_THETA, randn(1, 32, 8, 8), randn(1, 100), groups=8),
     ValueError, r"h must be \(B, d_t\) = \(1, 128\)"),
    ("resnet_block_2d: X with the wrong C", lambda: blocks.resnet_block_2d(
        RESNET_THETA, randn(1, 16, 8, 8), randn(1, 128), groups=8),
     ValueError, r"expects C_in = 32"),
    ("layer_norm: tokens of the wrong width", lambda: blocks.layer_norm(norm_theta(4), randn(2, 5)),
     ValueError, r"need shape \(5,\)"),
    ("unet: Θ lacks a key", lambda: _tiny_unet({k: v for k, v in UNET_THETA.items() if k != "conv_in.bias"}),
     ValueError, r"missing 1 key.*'conv_in\.bias'"),
    ("unet: Θ with a wrong shape", lambda: _tiny_unet({**UNET_THETA, "conv_in.weight": randn(32, 4, 1, 1)}),
     ValueError, r"Θ\['conv_in\.weight'\] must have shape \(32, 4, 3, 3\)"),
    ("unet: float64 z, float32 Θ", lambda: _tiny_unet(z=Z.double()),
     TypeError, r"z has dtype torch\.float64 but Θ holds torch\.float32"),
    ("unet: a 3-channel latent", lambda: _tiny_unet(z=randn(1, 3, 8, 8)),
     ValueError, r"C = 4 channels"),
    ("unet: context of the wrong width", lambda: _tiny_unet(c=randn(1, 5, 31)),
     ValueError, r"context must be \(B, M, d_ctx\) = \(1, M, 32\)"),
    ("unet: t of shape (2, 2)", lambda: _tiny_unet(t=torch.ones(2, 2)),
     ValueError, r"t must be a scalar, shape \(1,\) or shape \(B,\)"),
    pytest.param("unet: z on meta, Θ on cpu", lambda: _tiny_unet(z=Z.to("meta")),
                 (TypeError, ValueError), r"device"),
    ("vae_decoder: a 3-channel latent", lambda: vae_decoder.vae_decoder(VAE_THETA, randn(1, 3, 8, 8), config=TINY_VAE),
     ValueError, r"latent Z of shape \(B, 4, H, W\)"),
    ("vae_decoder: Θ lacks conv_out", lambda: vae_decoder.vae_decoder(
        {k: v for k, v in VAE_THETA.items() if "conv_out" not in k}, Z, config=TINY_VAE),
     ValueError, r"missing 'decoder\.conv_out\.weight'"),
    ("vae_decoder: z on meta, Θ on cpu", lambda: vae_decoder.vae_decoder(VAE_THETA, Z.to("meta"), config=TINY_VAE),
     ValueError, r"on cpu but the input is .* on meta"),
    # --- freedom (§3) -------------------------------------------------------------------------
    ("Schedule: β = 1", lambda: diffusion.Schedule(torch.tensor([0.5, 1.0])),
     ValueError, r"every beta must lie in \(0, 1\)"),
    ("Schedule: a Python list", lambda: diffusion.Schedule([0.1, 0.2]),
     ValueError, r"non-empty vector of betas"),
    ("check_t: a float timestep", lambda: SCHEDULE.check_t(torch.tensor([1.5])),
     TypeError, r"timesteps are integers"),
    ("check_t: t = T", lambda: SCHEDULE.check_t(1000),
     ValueError, r"T = 1000"),
    ("q_sample: 3 timesteps for 2 examples", lambda: diffusion.q_sample(SCHEDULE, randn(2, 3), torch.tensor([1, 2, 3]),
                                                                      randn(2, 3)),
     ValueError, r"one timestep per example"),
    ("ddim_timesteps: 0 steps", lambda: diffusion.ddim_timesteps(SCHEDULE, 0),
     ValueError, r"num_steps must lie in 1…1000"),
    ("reparameterize: σ = 0", lambda: diffusion.reparameterize(randn(3), torch.zeros(3), randn(3)),
     ValueError, r"σ\(X\) must be positive"),
    ("noise_estimation_loss: ε̂ of the wrong shape", lambda: diffusion.noise_estimation_loss(
        lambda x, t, c: x[:, :1], randn(4, 3), schedule=SCHEDULE),
     ValueError, r"shape of its input"),
    ("train_noise_estimator: cond_dropout without null_cond", lambda: diffusion.train_noise_estimator(
        torch.nn.Linear(3, 3), randn(4, 3), randn(4, 1), schedule=SCHEDULE, steps=1, cond_dropout=0.1),
     ValueError, r"null_cond"),
    # --- receptive (§7) -----------------------------------------------------------------------
    ("R_pure: L = 2.0", lambda: receptive.R_pure(2.0),
     TypeError, r"L \(number of Conv2d layers\) must be an int"),
    ("R_unet: no levels", lambda: receptive.R_unet([]),
     ValueError, r"at least one level"),
    ("R_unet: a negative count", lambda: receptive.R_unet([1, -2]),
     ValueError, r"n_1 must be >= 0"),
    ("measure_receptive_field: input shape with a batch axis", lambda: receptive.measure_receptive_field(
        lambda x: 2 * x, (1, 1, 8, 8)),
     ValueError, r"C×H×W of one input \(no batch axis\)"),
    ("measure_receptive_field: output pixel outside the output", lambda: receptive.measure_receptive_field(
        lambda x: 2 * x, (1, 8, 8), (9, 9)),
     ValueError, r"lies outside the output"),
    ("measure_receptive_field: f that ignores its input", lambda: receptive.measure_receptive_field(
        lambda x: torch.zeros(1, 1, 8, 8), (1, 8, 8)),
     ValueError, r"does not depend on its input"),
    ("toy_encoder: an unknown downsampler", lambda: receptive.toy_encoder([1, 1], downsample="bilinear"),
     ValueError, r"'nearest' \(21\), 'conv' .* or 'average' \(22\)"),
    # --- ledger -------------------------------------------------------------------------------
    ("ledger.entries: section 'six'", lambda: ledger.entries("six"),
     ValueError, r"section must look like '2' or '6\.8\.1'"),
    ("ledger.entries: a section without rows", lambda: ledger.entries("99"),
     ValueError, r"no rows for section '99'"),
    ("ledger.get: an unknown row", lambda: ledger.get("(999) nothing"),
     KeyError, r"no ledger row named"),
    ("ledger.Entry: verdict 'maybe'", lambda: _entry(verdict="maybe"),
     ValueError, r"verdict must be one of \('matches', 'differs'\)"),
    ("ledger.Entry: 'differs' without a corrected twin", lambda: _entry(verdict="differs"),
     ValueError, r"names its corrected twin"),
    ("ledger.Entry: tolerance NaN", lambda: _entry(tol=float("nan")),
     ValueError, r"tolerance must be >= 0"),
    # --- sd15 (§5): builders and the loader's arguments ----------------------------------------
    ("build_unet: weights='real'", lambda: sd15.build_unet(weights="real"),
     ValueError, r"weights must be 'random' or 'meta'"),
    ("build_unet: an integer dtype", lambda: sd15.build_unet(weights="meta", dtype=torch.int64),
     TypeError, r"floating torch\.dtype"),
    ("build_unet: device 'gpu0'", lambda: sd15.build_unet(weights="meta", device="gpu0"),
     ValueError, r"not a device: 'gpu0'"),
    ("load: a component named 'clip'", lambda: sd15.load(components=("unet", "clip")),
     ValueError, r"components must be some of"),
    ("load: a path that does not exist", lambda: sd15.load("/nonexistent/sd15-weights"),
     sd15.WeightsNotFoundError, r"no such file or folder"),
]


def _params(cases):
    """pytest.param for each case, its first field as the id (xfail cases are already params)."""
    return [pytest.param(*c.values[1:], id=c.values[0], marks=c.marks) if hasattr(c, "values")
            else pytest.param(*c[1:], id=c[0]) for c in cases]


@pytest.mark.parametrize("call, error, message", _params(CASES))
def test_bad_input_is_refused_with_a_clear_message(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_the_catalogue_is_large_enough():
    assert len(CASES) >= 30


def test_identity_is_a_valid_function_to_measure():
    field = receptive.measure_receptive_field(lambda x: x, (1, 8, 8))
    assert field.size == (1, 1)


# ---------------------------------------------------------------- corrupt weight files
pytestmark = pytest.mark.usefixtures("no_local_weights")   # tests/conftest.py


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """A tiny SD-shaped diffusers folder (unet, vae, text_encoder), saved by the libraries themselves."""
    root = tmp_path_factory.mktemp("tiny-sd")
    sd15.write_tiny_folder(root)
    return root


class _Booby:
    """Unpickling this creates a file: proof that a loader ran pickle on it."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _truncate(f: Path, tmp):
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])


def _empty(f: Path, tmp):
    f.write_bytes(b"")


def _huge_header_length(f: Path, tmp):
    data = f.read_bytes()
    f.write_bytes((2 ** 40).to_bytes(8, "little") + data[8:])


def _header_not_json(f: Path, tmp):
    data = bytearray(f.read_bytes())
    n = int.from_bytes(data[:8], "little")
    data[8:8 + n] = b"\x00" * n
    f.write_bytes(bytes(data))


def _pickle_renamed(f: Path, tmp):
    with open(f, "wb") as out:
        pickle.dump({"conv_in.weight": _Booby(tmp / "UNPICKLED")}, out)


def _torch_save_renamed(f: Path, tmp):
    torch.save({"conv_in.weight": torch.zeros(1)}, f)


def _drop_a_tensor(f: Path, tmp):
    from safetensors.torch import load_file, save_file
    sd = load_file(f)
    sd.pop("conv_in.bias")
    save_file(sd, f)


def _wrong_shape(f: Path, tmp):
    from safetensors.torch import load_file, save_file
    sd = load_file(f)
    sd["conv_in.weight"] = torch.zeros(1, 1, 1, 1)
    save_file(sd, f)


def _config_not_json(f: Path, tmp):
    (f.parent / "config.json").write_text("{not json")


def _config_other_class(f: Path, tmp):
    cfg = json.loads((f.parent / "config.json").read_text())
    (f.parent / "config.json").write_text(json.dumps({**cfg, "_class_name": "AutoencoderKL"}))


def _weights_removed(f: Path, tmp):
    f.unlink()


CORRUPTIONS = [
    ("truncated", _truncate, r"not a readable \.safetensors file \(truncated or corrupt\?\)"),
    ("empty file", _empty, r"not a readable \.safetensors file"),
    ("header length of 1 TiB", _huge_header_length, r"not a readable \.safetensors file"),
    ("header that is not JSON", _header_not_json, r"not a readable \.safetensors file"),
    ("a pickle renamed .safetensors", _pickle_renamed, r"not a readable \.safetensors file"),
    ("torch.save output renamed .safetensors", _torch_save_renamed, r"not a readable \.safetensors file"),
    ("a tensor missing", _drop_a_tensor, r"1 missing keys \(conv_in\.bias\)"),
    ("a tensor of the wrong shape", _wrong_shape, r"shape mismatches \(conv_in\.weight: file \(1, 1, 1, 1\)"),
    ("config.json that is not JSON", _config_not_json, r"config\.json: not valid JSON"),
    ("config.json of another class", _config_other_class, r"describes a AutoencoderKL, not a UNet2DConditionModel"),
    ("no weights file", _weights_removed, r"no diffusion_pytorch_model\.safetensors"),
]


@pytest.mark.parametrize("damage, message", [pytest.param(d, m, id=i) for i, d, m in CORRUPTIONS])
def test_corrupt_folder_is_refused_and_left_untouched(tiny_folder, tmp_path, damage, message):
    folder = Path(shutil.copytree(tiny_folder, tmp_path / "weights"))
    damage(folder / "unet" / "diffusion_pytorch_model.safetensors", tmp_path)
    before = tree_digest(folder)
    with pytest.raises(sd15.WeightsError, match=message):
        sd15.load(folder, components=("unet",), verbose=False)
    assert tree_digest(folder) == before, "a failed load changed the weights folder"
    assert not (tmp_path / "UNPICKLED").exists(), "the loader unpickled a file"
    assert not (tmp_path / "empty-hf-cache").exists(), "a failed load wrote to the Hugging Face cache"


@pytest.mark.parametrize("damage, message", [
    pytest.param(_truncate, r"not a readable \.safetensors file", id="truncated"),
    pytest.param(_pickle_renamed, r"not a readable \.safetensors file", id="a pickle renamed .safetensors"),
    pytest.param(_header_not_json, r"not a readable \.safetensors file", id="header that is not JSON"),
])
def test_corrupt_single_file_is_refused_and_left_untouched(tiny_folder, tmp_path, damage, message):
    file = tmp_path / "sd15.safetensors"
    shutil.copyfile(tiny_folder / "unet" / "diffusion_pytorch_model.safetensors", file)
    damage(file, tmp_path)
    before = tree_digest(tmp_path)
    with pytest.raises(sd15.WeightsError, match=message):
        sd15.load(file, components=("unet",), verbose=False)
    assert tree_digest(tmp_path) == before
    assert not (tmp_path / "UNPICKLED").exists(), "the loader unpickled a file"


@pytest.mark.parametrize("suffix", [".ckpt", ".bin", ".pt", ".pth"])
def test_pickle_checkpoints_are_refused_unread(tmp_path, suffix):
    file = tmp_path / f"model{suffix}"
    with open(file, "wb") as out:
        pickle.dump(_Booby(tmp_path / "UNPICKLED"), out)
    before = tree_digest(tmp_path)
    with pytest.raises(sd15.WeightsError, match=r"only \.safetensors are read"):
        sd15.load(file, verbose=False)
    assert tree_digest(tmp_path) == before and not (tmp_path / "UNPICKLED").exists()


def test_a_folder_that_is_not_a_diffusers_folder(tmp_path):
    (tmp_path / "readme.txt").write_text("not weights")
    before = tree_digest(tmp_path)
    with pytest.raises(sd15.WeightsError, match=r"no unet/ subfolder"):
        sd15.load(tmp_path, components=("unet",), verbose=False)
    assert tree_digest(tmp_path) == before
