"""The shipped miniature as ONNX models, for the book's live page (``book/live.md``).

``python -m sdanatomy.miniature.export_onnx --out book/_static/live`` writes:

* ``text_encoder.onnx``: token ids (B, M) int64 -> context (B, M, 32);
* ``unet.onnx``: z (B, 4, 8, 8), t (B,) int64, context (B, M, 32) -> ε̂ (B, 4, 8, 8) and
  the softmax weights (B, heads, 64, M) of one cross-attention layer (:data:`PROBE`);
* ``decoder.onnx``: a latent z (B, 4, 8, 8) in the U-Net's scaled space -> an image
  (B, 1, 16, 16) in [0, 1]: Dec(z / scaling_factor), then (x + 1)/2 clamped, as
  ``sd15.text_to_image.decode_latents`` decodes;
* ``miniature.json``: the vocabulary (id = position), M, ᾱ_0…ᾱ_999 of SD-1.5's schedule
  in float64, the DDIM timesteps rule, and a test vector: a prompt, seed, guidance and
  step count, the initial noise PyTorch drew, ε̂ at the first step and the final image;
* ``precomputed.png``: that test vector's x̂_0 strip and final image, for a browser
  without JavaScript or WebAssembly;
* onnxruntime-web's wasm build (``ort.wasm.min.js`` and its two files), copied from
  ``web/node_modules`` (``npm ci --prefix web``): the page loads nothing from elsewhere.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import warnings
from pathlib import Path

import torch

from sdanatomy import miniature
from sdanatomy.lecture import diffusion
from sdanatomy.sd15.text_to_image import decode_latents

REPO = Path(__file__).resolve().parents[3]
ORT_DIST = REPO / "web" / "node_modules" / "onnxruntime-web" / "dist"
ORT_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs",
             "ort-wasm-simd-threaded.wasm")
# The cross-attention layer whose weights the page shows: the U-Net's last, at 8×8.
PROBE = "up_blocks.1.attentions.1.transformer_blocks.0.attn2"
OPSET = 18
TEST = dict(prompt="a handwritten seven", seed=0, guidance=3.0, steps=50)


class AttentionProbe:
    """An attention processor that runs ``inner`` (the module's own processor) unchanged
    and keeps softmax(q kᵀ / √d) per head in ``probs`` (B, heads, N, M): ε̂ stays
    bit-identical to the module's own."""

    def __init__(self, inner):
        self.inner, self.probs = inner, None

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, **kwargs):
        out = self.inner(attn, hidden_states, encoder_hidden_states, **kwargs)
        B, N, _ = hidden_states.shape
        q = attn.to_q(hidden_states).view(B, N, attn.heads, -1).transpose(1, 2)
        k = attn.to_k(encoder_hidden_states)
        k = k.view(B, k.shape[1], attn.heads, -1).transpose(1, 2)
        self.probs = (q @ k.transpose(-1, -2) * attn.scale).softmax(-1)
        return out


def probe(unet) -> AttentionProbe:
    """Set an :class:`AttentionProbe` on ``unet``'s :data:`PROBE` layer; return it."""
    attn = unet.get_submodule(PROBE)
    p = AttentionProbe(attn.processor)
    attn.set_processor(p)
    return p


class _TextEncoder(torch.nn.Module):
    def __init__(self, text_encoder):
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, ids):
        return self.text_encoder(ids).last_hidden_state


class _UNet(torch.nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.unet, self.probe = unet, probe(unet)

    def forward(self, z, t, context):
        eps = self.unet(z, t, encoder_hidden_states=context).sample
        return eps, self.probe.probs


class _Decoder(torch.nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, z):       # decode_latents, in one graph
        x = self.vae.decode(z / self.vae.config.scaling_factor).sample
        return (x / 2 + 0.5).clamp(0, 1)


def _export(module, args, path: Path, inputs, outputs) -> None:
    """torch.onnx's exporter (torch.export, then onnxscript), the batch axis B left free."""
    batch = torch.export.Dim("B", min=1, max=1024)
    # torch.onnx logs that torchvision's operators are not registered: we use none.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # deprecations inside torch.export, not ours
        torch.onnx.export(module.eval(), args, str(path), input_names=inputs,
                          output_names=outputs, opset_version=OPSET, dynamo=True,
                          dynamic_shapes={name: {0: batch} for name in inputs},
                          external_data=False, verbose=False)
    # The exporter notes each node's Python stack trace and module path (a third of the
    # U-Net's file): debugging aids that the browser would download and never read.
    import onnx

    graph = onnx.load(str(path))
    for node in graph.graph.node:
        node.ClearField("metadata_props")
        node.ClearField("doc_string")
    onnx.save(graph, str(path))


def export_models(out: Path, model=None) -> None:
    """Write the three ONNX models into ``out``."""
    model = model if model is not None else miniature.load()
    ids = miniature.tokenize(["", TEST["prompt"]])
    with torch.no_grad():
        context = _TextEncoder(model.text_encoder)(ids)
    z = torch.randn(2, 4, miniature.IMAGE_SIZE // 2, miniature.IMAGE_SIZE // 2)
    t = torch.tensor([981, 981])
    _export(_TextEncoder(model.text_encoder), (ids,), out / "text_encoder.onnx",
            ["ids"], ["context"])
    unet = _UNet(model.unet)
    try:
        _export(unet, (z, t, context), out / "unet.onnx", ["z", "t", "context"],
                ["eps", "probs"])
    finally:
        unet.unet.get_submodule(PROBE).set_processor(unet.probe.inner)
    _export(_Decoder(model.vae), (z,), out / "decoder.onnx", ["z"], ["image"])


def test_vector(model) -> dict:
    """The Python pipeline's run of :data:`TEST`, with the noise and ε̂ it used."""
    steps, seed, w = TEST["steps"], TEST["seed"], TEST["guidance"]
    size = miniature.IMAGE_SIZE // 2
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn((1, 4, size, size), generator=g)
    rec = miniature.trajectory(model, TEST["prompt"], guidance=w, steps=steps,
                               seed=seed)
    if not torch.equal(rec["z"][0], noise):
        raise RuntimeError("the sampler no longer draws its noise as this export does")
    eps_hat = miniature.EpsHat(model.unet, model.text_encoder).eval()
    ids = miniature.tokenize(["", TEST["prompt"]])
    t0 = int(rec["t"][0])
    with torch.no_grad():
        eps_both = eps_hat(noise.expand(2, -1, -1, -1), torch.tensor([t0, t0]), ids)
    final = (rec["final_images"] + 1) / 2
    if not torch.equal(final, decode_latents(model, rec["final"])):
        raise RuntimeError("generate's image is not decode_latents' image")

    def flat(x):
        return [float(v) for v in x.flatten()]

    return dict(**TEST, ids=ids.tolist(), noise=flat(noise),
                t=[int(v) for v in rec["t"]],
                eps_first=dict(t=t0, uncond=flat(eps_both[0]), cond=flat(eps_both[1]),
                               guided=flat(rec["eps"][0])),
                final_latent=flat(rec["final"]), final_image=flat(final),
                x0_images=[flat((x + 1) / 2) for x in rec["images"][:, 0]])


def metadata(model) -> dict:
    s = miniature.schedule()
    return dict(
        vocab=list(miniature.VOCAB), specials=list(miniature.SPECIALS), M=miniature.M,
        image_size=miniature.IMAGE_SIZE, latent_shape=[4, miniature.IMAGE_SIZE // 2,
                                                       miniature.IMAGE_SIZE // 2],
        T=s.T, alpha_bars=[float(a) for a in s.alpha_bars],
        steps_offset=1, final_alpha_bar=float(s.alpha_bars[0]),
        timesteps_rule=("k = T // steps; t_i = (steps − 1 − i)·k + steps_offset, "
                        "i = 0…steps−1"),
        probe=PROBE, heads=model.unet.get_submodule(PROBE).heads,
        scaling_factor=model.vae.config.scaling_factor,
        test=test_vector(model))


def precomputed_png(meta: dict, path: Path, *, every: int = 5, scale: int = 4) -> None:
    """The test vector's x̂_0 at every ``every``-th step, then its image, in a row."""
    from PIL import Image

    n = meta["image_size"]
    t = meta["test"]
    rows = t["x0_images"][::every] + [t["final_image"]]
    strip = torch.tensor(rows).view(len(rows), n, n)
    gap = torch.ones(len(rows), n, 2)
    row = torch.cat([torch.cat([strip, gap], -1)[i] for i in range(len(rows))], -1)
    pixels = (row.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    Image.fromarray(pixels, "L").resize((pixels.shape[1] * scale, n * scale),
                                        Image.NEAREST).save(path)


def copy_ort(out: Path, dist: Path = ORT_DIST) -> None:
    missing = [f for f in ORT_FILES if not (dist / f).is_file()]
    if missing:
        raise FileNotFoundError(f"onnxruntime-web is not installed ({missing} missing "
                                f"in {dist}): run `npm ci --prefix web` first")
    for f in ORT_FILES:
        shutil.copy2(dist / f, out / f)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sdanatomy.miniature.export_onnx",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write into")
    parser.add_argument("--ort", type=Path, default=ORT_DIST,
                        help="onnxruntime-web's dist folder (default: %(default)s)")
    parser.add_argument("--no-ort", action="store_true",
                        help="skip copying onnxruntime-web (the models and data only)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.no_ort:
        try:
            copy_ort(args.out, args.ort)
        except FileNotFoundError as e:
            parser.error(str(e))
    torch.manual_seed(0)      # the example inputs of the export; the graphs do not vary
    model = miniature.load()
    export_models(args.out, model)
    meta = metadata(model)
    precomputed_png(meta, args.out / "precomputed.png")
    # written last: a make rule can take it as the sign that the export is complete
    (args.out / "miniature.json").write_text(json.dumps(meta))
    names = ", ".join(sorted(p.name for p in args.out.iterdir()))
    print(f"wrote {names} into {args.out}")


if __name__ == "__main__":
    main()
