"""The GPU check (#18): the book on CUDA, ready to run on an NVIDIA GPU (a report).

    python bench/gpu.py [--json PATH] [--steps 50] [--size 512]
    python bench/gpu.py --dry-run       # the same code on the CPU, tiny (the tests)
    python bench/gpu.py --fetch-wheels  # here, before carrying the repository over

On CUDA it runs, in this order:

1. ``ledger``: the ledger's "matches" rows on the GPU (tensors created there; a row
   whose reference is pinned to the CPU is listed as not run), in float32 and float16.
   The ledger's own tolerances are float64's; here a row passes when its error is at
   most max(tol, 1e-3) in float32 (unit roundoff 2⁻²⁴ ≈ 6e-8, over sums of up to 10⁴
   terms of order 1) and max(tol, 5e-2) in float16 (2⁻¹¹ ≈ 5e-4, the same sums).
   Rows that report a relative error are judged alike. A report: it never fails.
2. ``unet``: the book's ``lecture.unet.unet`` against diffusers' U-Net at a 64×64
   latent in float16, both against diffusers in float32 on the same seeded Θ.
3. ``text_to_image``: 50 steps at 512² with guidance 7.5 in float16, with diffusers'
   U-Net and with the book's, each after a 2-step warm-up; CUDA-synchronised times and
   their ratio.

It needs CUDA torch and transformers. What else it lacks (diffusers, open_clip_torch for
CLIP's vocabulary, sdanatomy itself) it installs from ``bench/wheels/`` with pip,
offline, and says which. Fill that folder here with ``--fetch-wheels`` (the versions
installed here, and the project's own wheel), then carry it with the repository.

``--dry-run``: the same functions on the CPU with tiny modules (SD-1.5's classes at
small widths), a 64² image in 2 steps, bfloat16 in place of float16 (float16 on a CPU is
impractically slow), six ledger rows. Its numbers are not the check.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
WHEELS = HERE / "wheels"
# (module to import, distribution to install): what a CUDA machine may lack
NEEDED = (("diffusers", "diffusers"), ("open_clip", "open_clip_torch"),
          ("sdanatomy", "sdanatomy"))
TOL = {"float32": 1e-3, "float16": 5e-2, "bfloat16": 5e-2}


# ---------------------------------------------------------------- 0. wheels
def fetch_wheels() -> list[str]:
    """Here (network and the project's environment): the wheels of NEEDED, at the
    versions installed here, into bench/wheels/ (git-ignored: carry it over)."""
    from importlib import metadata

    WHEELS.mkdir(exist_ok=True)
    pins = [f"{d}=={metadata.version(d)}" for _, d in NEEDED if d != "sdanatomy"]
    pip = [sys.executable, "-m", "pip"]
    subprocess.run(pip + ["download", "--no-deps", "-d", str(WHEELS)] + pins,
                   check=True)
    subprocess.run(pip + ["wheel", "--no-deps", "-w", str(WHEELS), str(HERE.parent)],
                   check=True)
    names = sorted(p.name for p in WHEELS.glob("*.whl"))
    print("[wheels] in bench/wheels:", *names, sep="\n  ")
    return names


def ensure_packages() -> list[str]:
    """Install what NEEDED lists and this Python lacks, from bench/wheels/ only."""
    installed = []
    for module, dist in NEEDED:
        if importlib.util.find_spec(module) is not None:
            continue
        cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps",
               "--find-links", str(WHEELS), dist]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"{dist} is neither installed nor in {WHEELS}: run "
                               "`python bench/gpu.py --fetch-wheels` where it is\n"
                               + done.stderr)
        importlib.invalidate_caches()
        installed.append(dist)
    print("[packages] installed from bench/wheels: "
          + (", ".join(installed) or "nothing (all present)"))
    return installed


# ---------------------------------------------------------------- 1. ledger rows
def ledger_rows(device, dtypes, limit=None) -> dict:
    import torch
    from torch.overrides import TorchFunctionMode
    from torch.utils._device import _device_constructors

    from sdanatomy import ledger

    constructors = _device_constructors()

    class OnDevice(TorchFunctionMode):
        """Tensors created without a device go to ``device``; seeded draws (a CPU
        generator) are drawn on the CPU, then moved: a row's inputs are the same."""

        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func in constructors and kwargs.get("device") is None:
                g = kwargs.get("generator")
                if g is not None and g.device.type == "cpu":
                    return func(*args, **kwargs).to(device)
                kwargs["device"] = device
            return func(*args, **kwargs)

    rows = [e for e in ledger.entries() if e.verdict == "matches"][:limit]
    out = {}
    for dtype in dtypes:
        name, results = str(dtype).removeprefix("torch."), []
        for e in rows:
            tol = max(e.tol, TOL[name])
            try:
                with OnDevice():
                    err = float(e.measure(seed=0, dtype=dtype))
                results.append({"row": e.name, "error": err, "tol": tol,
                                "ok": err <= tol})
            except Exception as ex:  # noqa: BLE001 - a report: listed as not run
                why = f"{type(ex).__name__}: {ex}"[:200]
                results.append({"row": e.name, "not_run": why})
        ran = [r for r in results if "error" in r]
        out[name] = {"rows": results, "ran": len(ran), "ok": sum(r["ok"] for r in ran),
                     "not_run": len(results) - len(ran)}
        print(f"[ledger] {name}: {out[name]['ok']} of {len(ran)} rows within tolerance "
              f"on {device}, {out[name]['not_run']} not run there")
        for r in ran:
            if not r["ok"]:
                print(f"[ledger]   {r['row']}: error {r['error']:.1e} > {r['tol']:.0e}")
    return out


# ---------------------------------------------------------------- 2. the U-Net, float16
def tiny_configs() -> dict:
    """SD-1.5's classes at small widths (the dry run's modules)."""
    from sdanatomy.lecture import config

    return dict(
        unet=dict(config.UNET_CONFIG, block_out_channels=(32, 64), layers_per_block=1,
                  cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8,
                  down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")),
        vae=dict(config.VAE_CONFIG, block_out_channels=(8, 16, 16, 16),
                 layers_per_block=1, norm_num_groups=8, sample_size=64),
        text_encoder=dict(config.TEXT_ENCODER_CONFIG, hidden_size=32,
                          intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, projection_dim=32))


def unet_check(device, dtype, *, latent, tiny) -> dict:
    import torch

    from sdanatomy import sd15
    from sdanatomy.lecture.unet import unet as book_unet

    if tiny:
        module = sd15.build_unet(tiny_configs()["unet"], seed=0, device="cpu")
    else:
        module = sd15.build_unet(weights="random", seed=0, device="cpu")
    module = module.eval().to(device)
    g = torch.Generator().manual_seed(0)
    d_ctx = module.config.cross_attention_dim
    z = torch.randn(1, 4, latent, latent, generator=g).to(device)       # (1, 4, h, w)
    c = torch.randn(1, 77, d_ctx, generator=g).to(device)               # (1, M, d_ctx)
    t = torch.tensor([500], device=device)
    with torch.inference_mode():
        ref = module(z, t, encoder_hidden_states=c).sample              # float32
        torch.nn.Module.to(module, dtype=dtype)
        zz, cc = z.to(dtype), c.to(dtype)
        theirs = module(zz, t, encoder_hidden_states=cc).sample.float()
        theta, config = dict(module.state_dict()), dict(module.config)
        ours = book_unet(theta, zz, t, cc, config=config).float()
    scale = ref.abs().max().item()
    r = {"latent": latent, "dtype": str(dtype).removeprefix("torch."),
         "max_abs_ref": scale,
         "book_vs_diffusers": (ours - theirs).abs().max().item(),
         "book_vs_float32": (ours - ref).abs().max().item(),
         "diffusers_vs_float32": (theirs - ref).abs().max().item()}
    print(f"[unet] {latent}×{latent}, {r['dtype']}: max|book − diffusers| "
          f"{r['book_vs_diffusers']:.1e}; against diffusers float32: book "
          f"{r['book_vs_float32']:.1e}, diffusers {r['diffusers_vs_float32']:.1e} "
          f"(max|ε̂| {scale:.2f})")
    return r


# ---------------------------------------------------------------- 3. text to image
def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def generation(device, precision, *, size, steps, tiny) -> dict:
    from sdanatomy import sd15
    from sdanatomy.sd15.text_to_image import text_to_image

    if tiny:
        cfg = tiny_configs()
        sd = sd15.SD15(sd15.build_unet(cfg["unet"], seed=1, device="cpu"),
                       sd15.build_vae(cfg["vae"], seed=2, device="cpu"),
                       sd15.build_text_encoder(cfg["text_encoder"], seed=3,
                                               device="cpu"),
                       mode=sd15.ARCHITECTURE, source=None, note="tiny")
    else:
        sd = sd15.load(device="cpu", verbose=False)
    result = {"size": size, "steps": steps, "weights": sd.mode, "device": str(device)}
    images = {}
    for unet in ("diffusers", "book"):
        def run(n):
            return text_to_image(sd, "an astronaut riding a horse", height=size,
                                 width=size, steps=n, guidance=7.5, seed=0,
                                 device=device, precision=precision, unet=unet,
                                 progress=False)

        run(2)                                                   # warm-up: kernels
        _sync(device)
        start = time.perf_counter()
        gen = run(steps)
        _sync(device)
        result[f"{unet}_seconds"] = time.perf_counter() - start
        result["precision"] = gen.settings["why_precision"]
        images[unet] = gen.images
    ratio = result["book_seconds"] / result["diffusers_seconds"]
    result["ratio_book_over_diffusers"] = ratio
    gap = (images["book"] - images["diffusers"]).abs().max().item()
    result["max_abs_pixel_book_vs_diffusers"] = gap
    print(f"[text_to_image] {steps} steps at {size}², {result['precision']}: "
          f"diffusers' U-Net {result['diffusers_seconds']:.2f} s, the book's "
          f"{result['book_seconds']:.2f} s (ratio {ratio:.2f}); max|Δpixel| {gap:.1e}")
    return result


def _guard(name, fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - a report, whatever went wrong
        traceback.print_exc()
        print(f"[{name}] not measured: {type(e).__name__}: {e}")
        return {"skipped": f"{type(e).__name__}: {e}"}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="the CPU, tiny sizes")
    parser.add_argument("--fetch-wheels", action="store_true",
                        help="fill bench/wheels/ (here, with network)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    if args.fetch_wheels:
        return {"wheels": fetch_wheels()}
    if importlib.util.find_spec("sdanatomy") is None and (HERE.parent / "src").is_dir():
        sys.path.insert(0, str(HERE.parent / "src"))      # run from the repository
    result = {"installed_from_wheels": ensure_packages()}
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        parser.error("no CUDA device: run with --dry-run for the CPU rehearsal")
    device = torch.device("cpu" if args.dry_run else "cuda")
    half = torch.bfloat16 if args.dry_run else torch.float16
    gpu = None if args.dry_run else torch.cuda.get_device_name()
    result.update(device=str(device), dry_run=args.dry_run, torch=torch.__version__,
                  gpu=gpu)
    print(f"[gpu] {gpu or 'dry run on the CPU'}, torch {torch.__version__}")
    result["ledger"] = _guard("ledger", ledger_rows, device, (torch.float32, half),
                              limit=6 if args.dry_run else None)
    result["unet"] = _guard("unet", unet_check, device, half,
                            latent=8 if args.dry_run else 64, tiny=args.dry_run)
    size, steps = (64, 2) if args.dry_run else (args.size, args.steps)
    result["text_to_image"] = _guard("text_to_image", generation, device,
                                     "bfloat16" if args.dry_run else "float16",
                                     size=size, steps=steps, tiny=args.dry_run)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
    sys.exit(0)
