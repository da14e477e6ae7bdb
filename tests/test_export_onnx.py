"""The miniature's ONNX export (``sdanatomy.miniature.export_onnx``) against PyTorch.

The references are the shipped diffusers/transformers modules run by PyTorch,
diffusers' own ``DDIMScheduler`` for the schedule and timesteps, and the attention
weights recomputed here from the layer's q and k (caught by forward hooks under the
default processor).

Tolerances: both sides compute in float32 (unit roundoff 6e-8), but onnxruntime's
kernels sum the convolutions' and matmuls' terms (≤ 576 per output) in another order
than PyTorch's, through about 20 layers; the differences observed are ≤ 1e-6 on values
of size ≤ 4, so ATOL = 1e-5 and RTOL = 1e-4 leave a factor of 10 of headroom without
hiding a wrong weight or layer (those change ε̂ by 1e-2 or more). The 50-step loop
repeats such differences 50 times through a map that does not amplify them: its image is
checked to LOOP_ATOL.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sdanatomy import miniature
from sdanatomy.miniature import export_onnx
from sdanatomy.sd15.text_to_image import decode_latents

ort = pytest.importorskip("onnxruntime")

ATOL, RTOL = 1e-5, 1e-4
LOOP_ATOL = 1e-4      # pixel values in [0, 1]; observed 5e-7


@pytest.fixture(scope="module")
def model():
    return miniature.load()


@pytest.fixture(scope="module")
def exported(tmp_path_factory, model):
    out = tmp_path_factory.mktemp("live")
    export_onnx.export_models(out, model)
    meta = export_onnx.metadata(model)
    sessions = {name: ort.InferenceSession(str(out / f"{name}.onnx"),
                                           providers=["CPUExecutionProvider"])
                for name in ("text_encoder", "unet", "decoder")}
    return sessions, meta


def close(ours, ref, atol=ATOL, rtol=RTOL):
    ref = ref.detach().numpy() if isinstance(ref, torch.Tensor) else ref
    np.testing.assert_allclose(ours, ref, atol=atol, rtol=rtol)


def test_text_encoder(exported, model):
    sessions, _ = exported
    ids = miniature.tokenize(["", "a handwritten seven", "the digit 3"])
    (ctx,) = sessions["text_encoder"].run(None, {"ids": ids.numpy()})
    with torch.no_grad():
        close(ctx, model.text_encoder(ids).last_hidden_state)


@pytest.mark.parametrize("t", [1, 481, 981])
def test_unet_eps(exported, model, t):
    sessions, _ = exported
    g = torch.Generator().manual_seed(t)
    z = torch.randn(3, 4, 8, 8, generator=g)
    ids = miniature.tokenize(["", "seven", "a handwritten two"])
    with torch.no_grad():
        ctx = model.text_encoder(ids).last_hidden_state
        ref = model.unet(z, torch.full((3,), t), encoder_hidden_states=ctx).sample
    eps, probs = sessions["unet"].run(None, {"z": z.numpy(),
                                             "t": np.full(3, t, np.int64),
                                             "context": ctx.numpy()})
    close(eps, ref)
    assert probs.shape == (3, 8, 64, miniature.M)


def test_probe_leaves_eps_bit_identical(model):
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    ids = miniature.tokenize(["", "nine"])
    t = torch.tensor([500, 500])
    with torch.no_grad():
        ctx = model.text_encoder(ids).last_hidden_state
        plain = model.unet(z, t, encoder_hidden_states=ctx).sample
        probe = export_onnx.probe(model.unet)
        try:
            probed = model.unet(z, t, encoder_hidden_states=ctx).sample
        finally:
            model.unet.get_submodule(export_onnx.PROBE).set_processor(probe.inner)
    assert torch.equal(plain, probed)
    assert probe.probs.shape == (2, 8, 64, miniature.M)


def test_attention_probs_are_softmax_of_q_k(exported, model):
    """The second output against softmax(q kᵀ/√d) per head, from the layer's q and k."""
    sessions, _ = exported
    attn = model.unet.get_submodule(export_onnx.PROBE)
    seen = {}
    hooks = [attn.to_q.register_forward_hook(lambda m, i, o: seen.__setitem__("q", o)),
             attn.to_k.register_forward_hook(lambda m, i, o: seen.__setitem__("k", o))]
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    ids = miniature.tokenize(["", "a handwritten seven"])
    try:
        with torch.no_grad():
            ctx = model.text_encoder(ids).last_hidden_state
            model.unet(z, torch.tensor([700, 700]), encoder_hidden_states=ctx)
    finally:
        for h in hooks:
            h.remove()
    q, k = seen["q"].double(), seen["k"].double()          # (B, 64, C), (B, M, C)
    H = attn.heads
    d = q.shape[-1] // H
    qh = q.unflatten(-1, (H, d)).transpose(1, 2)             # (B, H, 64, d)
    kh = k.unflatten(-1, (H, d)).transpose(1, 2)             # (B, H, M, d)
    ref = torch.softmax(qh @ kh.transpose(-1, -2) / d ** 0.5, -1)
    _, probs = sessions["unet"].run(None, {"z": z.numpy(), "t": np.array([700, 700]),
                                           "context": ctx.numpy()})
    close(probs, ref)
    close(probs.sum(-1), np.ones(probs.shape[:-1]))


def test_decoder(exported, model):
    sessions, _ = exported
    z = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    (image,) = sessions["decoder"].run(None, {"z": z.numpy()})
    close(image, decode_latents(model, z))


def test_schedule_and_timesteps_are_diffusers(exported):
    from diffusers import DDIMScheduler

    _, meta = exported
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012,
                          beta_schedule="scaled_linear", steps_offset=1,
                          set_alpha_to_one=False, clip_sample=False)
    # diffusers keeps ᾱ in float32: the float64 ᾱ agree to float32's rounding
    close(np.array(meta["alpha_bars"]), sched.alphas_cumprod.double(),
          atol=0, rtol=1e-6)
    assert meta["final_alpha_bar"] == meta["alpha_bars"][0]
    assert meta["steps_offset"] == 1
    sched.set_timesteps(meta["test"]["steps"])
    assert meta["test"]["t"] == sched.timesteps.tolist()


def test_vocabulary_and_test_vector(exported, model):
    _, meta = exported
    assert meta["vocab"] == list(miniature.VOCAB)
    test = meta["test"]
    assert test["ids"] == miniature.tokenize(["", test["prompt"]]).tolist()
    g = torch.Generator().manual_seed(test["seed"])
    assert test["noise"] == torch.randn(1, 4, 8, 8, generator=g).flatten().tolist()
    image = miniature.generate(model, test["prompt"], guidance=test["guidance"],
                               steps=test["steps"], seed=test["seed"])
    assert test["final_image"] == ((image + 1) / 2).flatten().tolist()
    json.dumps(meta)      # what the export writes


def test_the_js_loop_in_numpy_reaches_pythons_image(exported):
    """The page's loop (book/_static/live_ddim.js) in numpy, on the ONNX models."""
    sessions, meta = exported
    test, ab = meta["test"], np.array(meta["alpha_bars"])
    (ctx,) = sessions["text_encoder"].run(None, {"ids": np.array(test["ids"])})
    z = np.array(test["noise"], np.float32).reshape(4, 8, 8)
    k = meta["T"] // test["steps"]
    for t in test["t"]:
        (e, _) = sessions["unet"].run(None, {"z": np.stack([z, z]),
                                             "t": np.array([t, t]), "context": ctx})
        eps = e[0] + np.float32(test["guidance"]) * (e[1] - e[0])
        a = ab[t]
        a_prev = ab[t - k] if t - k >= 0 else meta["final_alpha_bar"]
        x0 = (z - np.sqrt(1 - a) * eps) / np.sqrt(a)
        z = (np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev) * eps).astype(np.float32)
    (image,) = sessions["decoder"].run(None, {"z": z[None]})
    close(image.ravel(), np.array(test["final_image"]), atol=LOOP_ATOL, rtol=0)


def test_copy_ort_copies_the_wasm_build_only(tmp_path):
    dist, out = tmp_path / "dist", tmp_path / "out"
    dist.mkdir()
    out.mkdir()
    for name in export_onnx.ORT_FILES + ("ort.webgpu.min.js", "ort.all.min.js"):
        (dist / name).write_text(name)
    export_onnx.copy_ort(out, dist)
    assert sorted(p.name for p in out.iterdir()) == sorted(export_onnx.ORT_FILES)
    (dist / "ort.wasm.min.js").unlink()
    with pytest.raises(FileNotFoundError, match="npm ci --prefix web"):
        export_onnx.copy_ort(out, dist)
