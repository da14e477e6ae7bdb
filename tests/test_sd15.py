"""SD-1.5's components (lecture §5): exact sizes, seeded builders, and a loader that only reads.

Real weights are stood in for by a tiny diffusers-format model saved with ``save_pretrained``:
the loader has one code path, so what loads the tiny model loads SD-1.5.
"""
import hashlib
import json
import os
import pickle
import shutil
import socket
import time
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel

from sdanatomy import offline
from sdanatomy.lecture import config as lecture_config
from sdanatomy import sd15

from disk import tree_digest

TINY = sd15.TINY_CONFIGS        # the tiny folder's: SD-1.5's classes at toy widths
TINY_UNET, TINY_VAE, TINY_CLIP = TINY["unet"], TINY["vae"], TINY["text_encoder"]
BUILDERS = {"unet": sd15.build_unet, "vae": sd15.build_vae, "text_encoder": sd15.build_text_encoder}
COMMIT = "0123456789abcdef0123456789abcdef01234567"


# ---------------------------------------------------------------- fixtures and helpers
@pytest.fixture(autouse=True)
def no_network():
    """Every test here runs with the network refused: a connection attempt fails the test."""
    already = offline.network_forbidden()  # e.g. SDANATOMY_FORBID_NETWORK=1: leave it armed
    offline.forbid_network()
    yield
    if not already:
        offline.allow_network()


pytestmark = pytest.mark.usefixtures("no_local_weights")   # tests/conftest.py


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory):
    """A tiny SD-shaped diffusers folder, saved by the libraries themselves; and its state dicts."""
    root = tmp_path_factory.mktemp("tiny-sd")
    modules = sd15.write_tiny_folder(root)
    return root, {name: {k: v.clone() for k, v in m.state_dict().items()} for name, m in modules.items()}


@pytest.fixture
def tiny_copy(tiny_sd, tmp_path):
    """A private copy of the tiny folder, for the tests that damage it."""
    return Path(shutil.copytree(tiny_sd[0], tmp_path / "copy"))


def make_hf_cache(cache: Path, folder: Path, repo_id: str, components=sd15.COMPONENTS) -> Path:
    """Lay ``folder`` out as huggingface_hub does: blobs, snapshots/<commit> of symlinks, refs/main."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / COMMIT
    for file in sorted(folder.rglob("*")):
        rel = file.relative_to(folder)
        if not file.is_file() or rel.parts[0] not in components:
            continue
        blob = repo / "blobs" / hashlib.sha256(file.read_bytes()).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file, blob)
        (snapshot / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, (snapshot / rel).parent), snapshot / rel)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)  # no newline, as huggingface_hub writes it
    return snapshot


def assert_state_dicts_equal(module, saved):
    loaded = module.state_dict()
    assert loaded.keys() == saved.keys()
    for k, v in saved.items():
        assert loaded[k].dtype == v.dtype and torch.equal(loaded[k], v), k


def assert_real(sd, saved, components=sd15.COMPONENTS):
    assert sd.mode == "real weights"
    for c in sd15.COMPONENTS:
        module = getattr(sd, c)
        if c not in components:
            assert module is None
            continue
        assert not module.training
        assert_state_dicts_equal(module, saved[c])
    if "text_encoder" in components:  # a non-persistent buffer: not in the file, must still be right
        n = TINY_CLIP["max_position_embeddings"]
        assert torch.equal(sd.text_encoder.embeddings.position_ids, torch.arange(n)[None])


# ---------------------------------------------------------------- builders
def test_network_is_refused():
    with pytest.raises(offline.NetworkAccessError):
        socket.getaddrinfo("huggingface.co", 443)


def test_parameter_counts_are_sd15s():
    t = time.perf_counter()
    unet, vae, clip = (BUILDERS[c](weights="meta") for c in sd15.COMPONENTS)
    assert time.perf_counter() - t < 5, "meta builds should take well under a second"
    assert sd15.count_parameters(unet) == 859_520_964
    assert sd15.count_parameters(vae) == 83_653_863
    with torch.device("meta"):
        reference = CLIPTextModel(CLIPTextConfig(**lecture_config.TEXT_ENCODER_CONFIG))
    assert sd15.count_parameters(clip) == sd15.count_parameters(reference) == 123_060_480
    for module in (unet, vae, clip):
        assert all(t.is_meta for t in module.state_dict().values())


@pytest.mark.parametrize("component", sd15.COMPONENTS)
def test_random_build_is_deterministic(component):
    build = BUILDERS[component]
    rng = torch.get_rng_state()
    a = build(TINY[component], seed=0, device="cpu").state_dict()
    b = build(TINY[component], seed=0, device="cpu").state_dict()
    c = build(TINY[component], seed=1, device="cpu").state_dict()
    assert torch.equal(torch.get_rng_state(), rng), "the caller's random stream must be left alone"
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    d = build(TINY[component], seed=0, device="cpu", dtype=torch.float64).state_dict()
    assert all(torch.equal(a[k].double(), d[k]) for k in a if a[k].is_floating_point()), \
        "a seed gives the same Θ in every dtype (drawn in float32, then cast)"


@pytest.mark.parametrize("component", sd15.COMPONENTS)
def test_random_build_matches_normal_construction(component):
    """Same init as the constructor's: constants equal, random tensors with the same spread."""
    torch.manual_seed(0)
    normal = {"unet": lambda: UNet2DConditionModel(**TINY_UNET), "vae": lambda: AutoencoderKL(**TINY_VAE),
              "text_encoder": lambda: CLIPTextModel(CLIPTextConfig(**TINY_CLIP))}[component]()
    fast = BUILDERS[component](TINY[component], seed=0, device="cpu")
    reference = normal.state_dict()
    assert fast.state_dict().keys() == reference.keys()
    for k, v in fast.state_dict().items():
        r = reference[k]
        assert v.shape == r.shape and v.dtype == r.dtype, k
        if not r.is_floating_point() or (r == r.flatten()[0]).all():
            assert torch.equal(v, r), f"{k}: a constant (or integer) tensor must match exactly"
        elif r.numel() >= 1000:
            ratio = (v.std() / r.std()).item()
            assert 0.8 < ratio < 1.25, f"{k}: std ratio {ratio:.3f} (uninitialised or another init?)"


def test_full_text_encoder_buffers_match_normal_construction():
    fast = sd15.build_text_encoder(device="cpu")
    normal = CLIPTextModel(CLIPTextConfig(**lecture_config.TEXT_ENCODER_CONFIG))
    fast_buffers, normal_buffers = dict(fast.named_buffers()), dict(normal.named_buffers())
    assert fast_buffers.keys() == normal_buffers.keys() and fast_buffers
    for name, b in normal_buffers.items():
        assert fast_buffers[name].dtype == b.dtype and torch.equal(fast_buffers[name], b), name


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(weights="pretrained"), ValueError, "weights must be 'random' or 'meta'"),
    (dict(dtype=torch.int64), TypeError, "floating torch.dtype"),
    (dict(dtype="float32"), TypeError, "floating torch.dtype"),
    (dict(seed=1.5), TypeError, "seed must be an int"),
    (dict(device="nonsense"), ValueError, "not a device"),
])
def test_builder_arguments_are_checked(kwargs, error, message):
    with pytest.raises(error, match=message):
        sd15.build_vae(TINY_VAE, **kwargs)


# ---------------------------------------------------------------- the tiny folder
def test_tiny_folder_holds_the_constructors_modules_as_safetensors(tiny_sd, tmp_path):
    """The reference: the libraries' own constructors after torch.manual_seed(0), in
    write_tiny_folder's documented order; the files: what save_pretrained writes."""
    root, saved = tiny_sd
    torch.manual_seed(0)
    reference = {"unet": UNet2DConditionModel(**TINY_UNET),
                 "vae": AutoencoderKL(**TINY_VAE),
                 "text_encoder": CLIPTextModel(CLIPTextConfig(**TINY_CLIP))}
    for c, module in reference.items():
        assert_state_dicts_equal(module, saved[c])
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert files == ["text_encoder/config.json", "text_encoder/model.safetensors",
                     "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                     "vae/config.json", "vae/diffusion_pytorch_model.safetensors"]
    torch.manual_seed(7)
    before = torch.rand(3)
    torch.manual_seed(7)
    sd15.write_tiny_folder(tmp_path / "again", seed=1)
    assert torch.equal(torch.rand(3), before), "the caller's random stream is untouched"


@pytest.mark.parametrize("where, kwargs, error, message", [
    ("full", {}, ValueError, "exists and is not an empty folder"),
    ("file", {}, ValueError, "exists and is not an empty folder"),
    ("new", dict(seed=0.5), TypeError, "seed must be an int"),
])
def test_tiny_folder_refuses_a_used_path_and_a_bad_seed(tmp_path, where, kwargs, error,
                                                         message):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    (tmp_path / "file").write_text("mine")
    with pytest.raises(error, match=message):
        sd15.write_tiny_folder(tmp_path / where, **kwargs)
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    assert not (tmp_path / "new").exists()
    with pytest.raises(TypeError, match="str or a Path"):
        sd15.write_tiny_folder(3)


# ---------------------------------------------------------------- loading real weights
def test_load_folder_by_path(tiny_sd, capsys):
    root, saved = tiny_sd
    before = tree_digest(root)
    sd = sd15.load(str(root), device="cpu")
    assert_real(sd, saved)
    assert sd.source == root
    assert capsys.readouterr().out == f"sdanatomy: real weights from {root} (diffusers folder)\n"
    assert tree_digest(root) == before


def test_load_folder_from_environment(tiny_sd, monkeypatch, capsys):
    root, saved = tiny_sd
    monkeypatch.setenv(sd15.ENV_VAR, str(root))
    sd = sd15.load(components=("vae", "text_encoder"), device="cpu")
    assert_real(sd, saved, ("vae", "text_encoder"))
    assert capsys.readouterr().out == f"sdanatomy: real weights from {root} (diffusers folder)\n"


def test_load_from_hugging_face_cache(tiny_sd, tmp_path, monkeypatch, capsys):
    """HF_HUB_CACHE set after huggingface_hub was imported still counts; the cache is only read."""
    root, saved = tiny_sd
    cache = tmp_path / "hf-cache"
    # The first repo id's snapshot lacks the VAE, so it is skipped for the second.
    make_hf_cache(cache, root, sd15.HF_REPO_IDS[0], components=("unet", "text_encoder"))
    snapshot = make_hf_cache(cache, root, sd15.HF_REPO_IDS[1])
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    before = tree_digest(cache)
    sd = sd15.load(device="cpu")
    assert_real(sd, saved)
    assert sd.source == snapshot
    assert capsys.readouterr().out == (
        f"sdanatomy: real weights from {snapshot} (Hugging Face cache, {sd15.HF_REPO_IDS[1]})\n")
    assert tree_digest(cache) == before


def test_cache_found_through_hf_home(tiny_sd, tmp_path, monkeypatch):
    root, saved = tiny_sd
    make_hf_cache(tmp_path / "home" / "hub", root, sd15.HF_REPO_IDS[0])
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert_real(sd15.load(components="unet", device="cpu", verbose=False), saved, ("unet",))


def test_architecture_only_without_weights(capsys):
    sd = sd15.load(components=("vae",), device="cpu", seed=3)
    assert (sd.mode, sd.source, sd.unet, sd.text_encoder) == ("architecture only", None, None, None)
    assert sd15.count_parameters(sd.vae) == 83_653_863
    assert capsys.readouterr().out == (
        "sdanatomy: architecture only (SD-1.5, seeded random weights, seed 3): "
        "images are noise\n")
    assert sd.describe().startswith("architecture only (SD-1.5, seeded random weights")
    # The same modules as the builder's, down to the last bit.
    torch.manual_seed(123)
    again = sd15.load(components="vae", device="cpu", seed=3, verbose=False).vae.state_dict()
    assert all(torch.equal(v, again[k]) for k, v in sd.vae.state_dict().items())
    assert capsys.readouterr().out == ""


def test_fp16_variant_loads_and_is_cast(tiny_copy, tiny_sd):
    saved = tiny_sd[1]
    for c, name in (("unet", "diffusion_pytorch_model"), ("text_encoder", "model")):
        plain = tiny_copy / c / f"{name}.safetensors"
        half = {k: v.half() for k, v in load_file(plain).items()}
        save_file(half, tiny_copy / c / f"{name}.fp16.safetensors")
        plain.unlink()
    sd = sd15.load(tiny_copy, components=("unet", "text_encoder"), device="cpu", dtype=torch.float64)
    for c in ("unet", "text_encoder"):
        loaded = getattr(sd, c).state_dict()
        for k, v in saved[c].items():
            expected = v.half().double() if v.is_floating_point() else v
            assert torch.equal(loaded[k], expected), k


def test_older_file_layouts_load(tiny_copy, tiny_sd):
    """SD-1.5's own files predate today's names: `text_model.` keys with a stored position_ids
    (here corrupted, as in some community checkpoints), and the VAE's query/key/value/proj_attn."""
    saved = tiny_sd[1]
    te = tiny_copy / "text_encoder" / "model.safetensors"
    old = {f"text_model.{k}": v for k, v in load_file(te).items()}
    old["text_model.embeddings.position_ids"] = torch.arange(16.0)[None] - 0.3
    save_file(old, te)
    vae = tiny_copy / "vae" / "diffusion_pytorch_model.safetensors"
    old_names = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    tensors = {}
    for k, v in load_file(vae).items():
        for new, previous in old_names.items():
            k = k.replace(f"attentions.0.{new}.", f"attentions.0.{previous}.")
        tensors[k] = v
    assert any(".query." in k for k in tensors)
    save_file(tensors, vae)
    assert_real(sd15.load(tiny_copy, components=("vae", "text_encoder"), device="cpu", verbose=False),
                saved, ("vae", "text_encoder"))


def test_single_file_checkpoint_text_encoder(tiny_sd, tmp_path, monkeypatch, capsys):
    """A real LDM conversion, for the component whose layout is a plain prefix; the SD-1.5
    configuration is swapped for the tiny one, as the converters read it."""
    root, saved = tiny_sd
    monkeypatch.setattr(sd15, "TEXT_ENCODER_CONFIG", TINY_CLIP)
    ckpt = {f"cond_stage_model.transformer.text_model.{k}": v
            for k, v in load_file(root / "text_encoder" / "model.safetensors").items()}
    ckpt["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(16)[None]
    file = tmp_path / "v1-5-tiny.safetensors"
    save_file(ckpt, file)
    sd = sd15.load(file, components=("text_encoder",), device="cpu")
    assert_real(sd, saved, ("text_encoder",))
    assert capsys.readouterr().out == f"sdanatomy: real weights from {file} (single-file checkpoint)\n"
    with pytest.raises(sd15.WeightsError,
                       match=r"v1-5-tiny.safetensors: no keys start with 'model.diffusion_model.'"):
        sd15.load(file, components=("unet", "text_encoder"), device="cpu")


# ---------------------------------------------------------------- bad input: clear errors, nothing written
def _refused(path, root, error, message, **kwargs):
    before = tree_digest(root)
    with pytest.raises(error, match=message):
        sd15.load(path, device="cpu", verbose=False, **kwargs)
    assert tree_digest(root) == before, "a failed load must leave the disk as it was"


def test_missing_path_is_named(tmp_path):
    missing = tmp_path / "no-such-folder"
    with pytest.raises(FileNotFoundError, match="no-such-folder"):
        sd15.load(missing)
    with pytest.raises(ValueError, match=r"no-such-folder \(the weights argument\): no such file or folder"):
        sd15.load(missing)


def test_missing_environment_path_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv(sd15.ENV_VAR, str(tmp_path / "gone"))
    with pytest.raises(sd15.WeightsNotFoundError, match=r"gone \(\$SDANATOMY_WEIGHTS\)"):
        sd15.load()


@pytest.mark.parametrize("damage, message", [
    (lambda r: shutil.rmtree(r / "vae"), r"copy: no vae/ subfolder"),
    (lambda r: (r / "unet" / "config.json").unlink(), r"unet: no config.json"),
    (lambda r: (r / "unet" / "diffusion_pytorch_model.safetensors").unlink(),
     r"unet: no diffusion_pytorch_model.safetensors or diffusion_pytorch_model.fp16.safetensors"),
    (lambda r: (r / "text_encoder" / "config.json").write_text("{not json"), r"config.json: not valid JSON"),
    (lambda r: (r / "vae" / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"})),
     r"vae.config.json: describes a UNet2DConditionModel, not a AutoencoderKL"),
])
def test_incomplete_folder(tiny_copy, damage, message):
    damage(tiny_copy)
    _refused(tiny_copy, tiny_copy, sd15.WeightsError, message)


@pytest.mark.parametrize("cut", [0, 5, "half"])
def test_corrupt_safetensors(tiny_copy, cut):
    file = tiny_copy / "vae" / "diffusion_pytorch_model.safetensors"
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2 if cut == "half" else cut])
    _refused(tiny_copy, tiny_copy, sd15.WeightsError,
             r"vae.diffusion_pytorch_model.safetensors: not a readable .safetensors file")


@pytest.mark.parametrize("change, message", [
    ("config", r"unet.diffusion_pytorch_model.safetensors: does not fit the unet of its configuration: "
               r".*shape mismatches"),
    ("extra", r"1 unexpected keys \(surprise\)"),
    ("drop", r"1 missing keys \(conv_in.bias\)"),
])
def test_weights_that_do_not_fit(tiny_copy, change, message):
    file = tiny_copy / "unet" / "diffusion_pytorch_model.safetensors"
    config = tiny_copy / "unet" / "config.json"
    if change == "config":
        config.write_text(json.dumps({**json.loads(config.read_text()), "cross_attention_dim": 48}))
    else:
        tensors = load_file(file)
        if change == "extra":
            tensors["surprise"] = torch.zeros(1)
        else:
            del tensors["conv_in.bias"]
        save_file(tensors, file)
    _refused(tiny_copy, tiny_copy, sd15.WeightsError, message)


@pytest.fixture
def no_unpickling(monkeypatch):
    """Pickles must be refused by name, never opened: unpickling fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("a pickle was opened")
    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)


@pytest.mark.parametrize("suffix", [".ckpt", ".bin", ".pt", ".pth"])
def test_pickle_file_is_refused(tmp_path, suffix, no_unpickling):
    file = tmp_path / f"v1-5-pruned{suffix}"
    file.write_bytes(b"\x80\x04not really a pickle")
    _refused(file, tmp_path, sd15.WeightsError,
             rf"v1-5-pruned\{suffix}: only .safetensors are read \(pickle files can execute code\); convert it with")


def test_folder_of_pickles_is_refused(tiny_copy, no_unpickling):
    unet = tiny_copy / "unet"
    (unet / "diffusion_pytorch_model.safetensors").rename(unet / "diffusion_pytorch_model.bin")
    _refused(tiny_copy, tiny_copy, sd15.WeightsError,
             r"unet.diffusion_pytorch_model.bin: only .safetensors are read \(pickle files can execute code\)")


def test_other_files_are_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    _refused(tmp_path / "notes.txt", tmp_path, sd15.WeightsError,
             r"notes.txt \(the weights argument\): expected a diffusers folder or a .safetensors file")


def test_single_file_without_ldm_prefixes(tiny_sd, tmp_path):
    file = tmp_path / "unet-only.safetensors"
    save_file(dict(tiny_sd[1]["unet"]), file)
    _refused(file, tmp_path, sd15.WeightsError,
             r"unet-only.safetensors: no keys start with 'model.diffusion_model.', so it is not an "
             r"original Stable Diffusion \(LDM\) checkpoint")


@pytest.mark.parametrize("components", [("unet", "clip"), ("decoder",), ()])
def test_unknown_components(tiny_sd, components):
    _refused(tiny_sd[0], tiny_sd[0], ValueError,
             r"components must be some of \('unet', 'vae', 'text_encoder'\)", components=components)


def test_corrupt_file_in_cache_is_reported_and_cache_untouched(tiny_copy, tmp_path, monkeypatch):
    (tiny_copy / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(b"\x00" * 16)
    cache = tmp_path / "hf-cache"
    make_hf_cache(cache, tiny_copy, sd15.HF_REPO_IDS[0])
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    _refused(None, cache, sd15.WeightsError, r"diffusion_pytorch_model.safetensors: not a readable")


def test_loader_arguments_are_checked(tiny_sd):
    with pytest.raises(TypeError, match="floating torch.dtype"):
        sd15.load(tiny_sd[0], dtype=torch.int8)
    with pytest.raises(TypeError, match="seed must be an int"):
        sd15.load(tiny_sd[0], seed="0")
