"""Text to image, end to end, lecture §5: prompt -> tokens -> c -> U-Net loop -> VAE decoder.

The whole of Stable Diffusion 1.5's sampling in one function, :func:`text_to_image`, in the order
the lecture draws it:

1. the tokenizer turns each prompt into M token ids (SD-1.5: CLIP's BPE, M = 77);
2. the CLIP text encoder turns them into the context c (B, M, d_ctx), its last hidden state;
3. from z_T ~ N(0, I) the U-Net ε̂_θ(z_t, t, c) is evaluated at each of the scheduler's timesteps,
   with classifier-free guidance: ε̃ = ε̂(z_t, t, c_∅) + w (ε̂(z_t, t, c) − ε̂(z_t, t, c_∅)),
   the unconditional and conditional halves in one batch of 2B;
4. the scheduler (DDIM by default, SD-1.5's PNDM on request) steps z_t -> z_{t_prev};
5. the VAE decoder maps z_0 / scaling_factor to pixels, (x + 1)/2 maps them to [0, 1].

The U-Net is diffusers' module (``unet="diffusers"``) or the book's pure function
``sdanatomy.lecture.unet.unet(theta, z, t, context)`` on the same Θ (``unet="book"``). The same function
runs SD-1.5 (real weights: real images; architecture only: noise) and the miniature model of
``sdanatomy.miniature`` (real digits on a CPU).

The default ``precision="auto"`` picks the machine's fast path (:func:`choose_precision`
says why): on CUDA float16; on a CPU with native bf16 (AVX-512 BF16 or AMX, as oneDNN
reports it) the U-Net and the VAE of a model of SD-1.5's size run in bfloat16 with
channels_last, the latent state and the scheduler stay in float32; elsewhere, and for
small models such as the miniature, float32. ``precision="float32"`` is the exact
float32 loop that the book's pages compare with diffusers bit for bit.
``compile=True`` adds ``torch.compile`` to the U-Net (off by default).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from sdanatomy import sd15
from sdanatomy.lecture.config import SCHEDULER_CONFIG
from sdanatomy.lecture.unet import unet as book_unet
from sdanatomy.sd15 import tokenizer
from sdanatomy.sd15.reference import DDIMScheduler, PNDMScheduler

UNETS = ("diffusers", "book")
SCHEDULERS = ("ddim", "pndm")
PRECISIONS = ("auto", "float32", "bfloat16", "float16")
# "auto" keeps a CPU U-Net of fewer parameters in float32: at such sizes bf16 costs
# accuracy for no speed (profiled on the miniature, on this book's CPU: its bf16
# convolutions gain, its bf16 group norms on channels_last and its attention lose
# more). SD-1.5's U-Net has 860 M parameters, the miniature's 0.8 M; the 10 M between
# them is a round bound, not a measured crossover.
BF16_MIN_PARAMS = 10_000_000


@dataclass
class Kept:
    """One kept step of the loop: the state z_t entering step ``i`` and the clean latent it predicts,
    x̂_0 = (z_t − √(1−ᾱ_t) ε̃) / √ᾱ_t, both (B, 4, h, w) float32 on the CPU."""
    i: int
    t: int
    z_t: torch.Tensor = field(repr=False)
    x0_hat: torch.Tensor = field(repr=False)


@dataclass
class Generation:
    """What :func:`text_to_image` returns."""
    images: torch.Tensor = field(repr=False)    # (B, C, H, W) in [0, 1], float32 on the CPU
    latents: torch.Tensor = field(repr=False)   # z_0 (B, 4, H/f, W/f), scaled latent space, float32 CPU
    timesteps: tuple[int, ...]
    kept: list[Kept] = field(default_factory=list, repr=False)
    settings: dict = field(default_factory=dict)


# ---------------------------------------------------------------- pieces of the loop
def vae_factor(vae) -> int:
    """Pixels per latent pixel: 2^(levels − 1), 8 for SD-1.5's VAE (four levels), 2 for the miniature's."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def default_tokenizer(model):
    """The tokenizer that fits a model: its own (the miniature carries its word list), else
    SD-1.5's CLIP BPE for a text encoder of CLIP's vocabulary and context length."""
    if getattr(model, "tokenizer", None) is not None:
        return model.tokenizer
    cfg = model.text_encoder.config
    if (cfg.vocab_size, cfg.max_position_embeddings) == (49408, 77):
        return tokenizer.tokenize
    raise TypeError(f"no known tokenizer for a text encoder with {cfg.vocab_size} tokens and "
                    f"{cfg.max_position_embeddings} positions: pass tokenizer=(prompts -> ids (B, M))")


def make_scheduler(name: str):
    """diffusers' DDIM or PNDM scheduler with SD-1.5's settings (scaled-linear β, T = 1000,
    steps_offset 1, ᾱ_final = ᾱ_0, clip_sample off: latents are not confined to [−1, 1])."""

    cfg = dict(SCHEDULER_CONFIG)
    if name == "ddim":
        return DDIMScheduler(**{k: v for k, v in cfg.items() if k != "skip_prk_steps"})
    return PNDMScheduler(**{k: v for k, v in cfg.items() if k != "clip_sample"})


def decode_latents(model, z: torch.Tensor, *, batch_size: int = 8) -> torch.Tensor:
    """Latents z (B, 4, h, w) in the U-Net's scaled space -> images (B, C, f·h, f·w) in [0, 1].

    x = Dec(z / scaling_factor) ∈ [−1, 1], then (x + 1)/2; decoded on the VAE's device and dtype,
    ``batch_size`` at a time, returned as float32 on the CPU.
    """
    vae = model.vae
    p = next(vae.parameters())
    out = []
    with torch.no_grad():
        for chunk in z.split(batch_size):
            x = vae.decode(chunk.to(p.device, p.dtype) / vae.config.scaling_factor).sample
            out.append((x.float().cpu() / 2 + 0.5).clamp(0, 1))
    return torch.cat(out)


def _book_unet(module):
    """ε̂_θ as the book's pure function of Θ = the module's state_dict, read once."""
    theta = dict(module.state_dict())
    config = dict(module.config)   # the whole config: unet() refuses options it does not implement
    return lambda z, t, c: book_unet(theta, z, t, c, config=config)


def _diffusers_unet(module):
    return lambda z, t, c: module(z, t, encoder_hidden_states=c).sample


def _check(model, prompts, negative_prompt, unet, guidance, steps, height, width, seed, keep_every, scheduler):
    if not all(getattr(model, c, None) is not None for c in sd15.COMPONENTS):
        raise TypeError("model must hold a unet, a vae and a text_encoder: sd15.load() or miniature.load()")
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise TypeError("prompts must be a string or a non-empty list of strings")
    negatives = [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) else list(negative_prompt)
    if len(negatives) != len(prompts) or not all(isinstance(p, str) for p in negatives):
        raise TypeError(f"negative_prompt must be a string or {len(prompts)} strings, one per prompt")
    if unet not in UNETS:
        raise ValueError(f"unet must be one of {UNETS}; got {unet!r}")
    if scheduler not in SCHEDULERS:
        raise ValueError(f"scheduler must be one of {SCHEDULERS}; got {scheduler!r}")
    for name, v in (("steps", steps), ("seed", seed), ("keep_every", keep_every), ("height", height), ("width", width)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} must be an int; got {v!r}")
    if not 1 <= steps <= SCHEDULER_CONFIG["num_train_timesteps"]:
        raise ValueError(f"steps must lie in 1…{SCHEDULER_CONFIG['num_train_timesteps']} (T); got {steps}")
    if keep_every < 0:
        raise ValueError(f"keep_every must be >= 0 (0 keeps nothing); got {keep_every}")
    if not isinstance(guidance, (int, float)) or isinstance(guidance, bool):
        raise TypeError(f"the guidance weight w must be a number; got {guidance!r}")
    if not guidance >= 0:
        raise ValueError(f"the guidance weight w must be a number >= 0 (w = 1: no guidance); got {guidance!r}")
    f = vae_factor(model.vae)
    if height < f or width < f or height % f or width % f:
        raise ValueError(f"height and width must be positive multiples of {f}, the VAE's downsampling "
                         f"factor (the latent is H/{f} × W/{f}); got {height}×{width}")
    return prompts, negatives


def _device_dtype(device, dtype):
    try:
        device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"not a device: {device!r}") from e
    if dtype is None:
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype; got {dtype!r}")
    if dtype == torch.float16 and device.type == "cpu":
        raise ValueError("float16 on the CPU is extremely slow: use float32 (or bfloat16) there")
    return device, dtype


def bf16_evidence(onednn: bool, flags) -> tuple[bool, str]:
    """(native bf16, the evidence) from what the machine says: ``onednn``, whether
    oneDNN reports native bf16 (AVX-512 BF16 or AMX), and ``flags``, the CPU's
    /proc/cpuinfo flags (where oneDNN is absent, avx512_bf16 or amx_bf16 decide)."""
    if onednn:
        return True, "oneDNN reports native bf16 on this CPU"
    found = sorted({"avx512_bf16", "amx_bf16"} & set(flags))
    if found:
        return True, f"/proc/cpuinfo lists {', '.join(found)}"
    return False, ("neither oneDNN nor /proc/cpuinfo reports native bf16 (AVX-512 BF16 "
                   "or AMX)")


def cpu_has_bf16() -> tuple[bool, str]:
    """:func:`bf16_evidence` for this machine: oneDNN's own check, /proc/cpuinfo's
    flags."""
    onednn = False
    try:
        onednn = bool(torch.backends.mkldnn.is_available()
                      and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        pass
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((ln.split(":", 1)[1].split() for ln in f
                          if ln.startswith("flags")), [])
    except OSError:
        flags = []
    return bf16_evidence(onednn, flags)


def choose_precision(device, precision: str = "auto", *, unet_params: int | None = None,
                     bf16: tuple[bool, str] | None = None) -> tuple[torch.dtype, str]:
    """The U-Net's and VAE's dtype for ``precision`` on ``device``, and why.

    "auto": CUDA -> float16, as before "auto" existed and as SD-1.5 is usually run on a
    GPU, whatever the model's size; on the CPU, a U-Net of fewer than
    ``BF16_MIN_PARAMS`` parameters (``unet_params``; None: not known, no size rule) ->
    float32, since bf16 would cost accuracy for no speed; otherwise, with native bf16
    (``bf16``: (native, evidence), default :func:`cpu_has_bf16`) -> bfloat16 (about
    twice float32's speed there: half the bytes, twice the FMA rate), without it ->
    float32 (emulated bf16 is slower than float32). "float32", "bfloat16" and
    "float16" force that dtype; float16 is refused on the CPU (no fast kernels there).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}; got {precision!r}")
    device = torch.device(device)
    if precision == "float16" and device.type == "cpu":
        raise ValueError("float16 on the CPU is extremely slow: use float32 or "
                         "bfloat16 there")
    if precision != "auto":
        return getattr(torch, precision), f"precision={precision!r} was asked for"
    if device.type == "cuda":
        return torch.float16, "CUDA: float16, as SD-1.5 is usually run on a GPU"
    if device.type != "cpu":
        return torch.float32, f"{device.type}: float32 (no fast path known for it)"
    if unet_params is not None and unet_params < BF16_MIN_PARAMS:
        return torch.float32, (f"float32: a U-Net of {unet_params / 1e6:.2f} M "
                               f"parameters (under {BF16_MIN_PARAMS / 1e6:.0f} M) "
                               "gains nothing from bf16")
    native, why = cpu_has_bf16() if bf16 is None else bf16
    if native:
        return torch.bfloat16, f"bfloat16 with channels_last: {why}"
    return torch.float32, f"float32: {why}"


def _compiled(module):
    """``torch.compile`` with frozen weights."""
    import torch._inductor.config as inductor

    inductor.freezing = True      # weights as constants, folded into the kernels
    return torch.compile(module)


# ---------------------------------------------------------------- the loop
def text_to_image(model, prompts, *, negative_prompt="", tokenizer=None, unet="diffusers", guidance=7.5,
                  steps=50, height=None, width=None, seed=0, device=None, dtype=None, keep_every=0,
                  progress=True, scheduler="ddim", precision="auto",
                  compile=False) -> Generation:
    """Images for ``prompts``, §5: SD-1.5's text-to-image loop with classifier-free guidance.

    Returns a :class:`Generation`: images (B, C, H, W) in [0, 1], the final latents z_0, the
    timesteps, and the kept intermediate states; all float32 on the CPU.

    model: ``sd15.load(...)`` (SD-1.5, real weights or architecture only) or ``miniature.load()``;
        its modules are moved to ``device`` and cast to ``dtype`` in place, as a diffusers
        pipeline's ``.to()`` does.
    prompts: a string or a list of B strings; ``negative_prompt`` replaces the empty prompt c_∅.
    tokenizer: prompts -> ids (B, M); default: CLIP's BPE for SD-1.5, the word list for the miniature.
    unet: "diffusers" (the module) or "book" (``models.unet`` on the module's Θ).
    guidance: w of classifier-free guidance; w = 1 is the conditional model alone (one batch of B).
    steps: scheduler steps (U-Net calls: steps for DDIM, steps + 1 for PNDM).
    height, width: pixels, multiples of the VAE's factor f (default: the VAE's sample_size, 512 for
        SD-1.5, 16 for the miniature).
    seed: z_T is drawn from a CPU ``torch.Generator`` seeded with it, then moved to the device, so
        that a seed starts from the same noise on every device.
    device: default CUDA when available, else the CPU.
    precision: "auto" (the default: the fast path this machine supports for this model,
        :func:`choose_precision`: float16 on CUDA; on a CPU with native bf16, bfloat16
        for a U-Net of SD-1.5's size and float32 for one as small as the miniature's;
        float32 elsewhere), or "float32", "bfloat16", "float16" to force one.
        "float32" is the exact float32 loop (contiguous layout, every tensor float32)
        that the book's pages compare with diffusers bit for bit. With bfloat16 on the
        CPU the U-Net and the VAE run in bf16 with channels_last; the text encoder, the
        latent z_t, guidance and the scheduler stay in float32 (bf16's 8-bit mantissa
        would round the small steps of z_t away). ``settings["why_precision"]`` says
        why. The cast is in place: bf16 rounds the weights, so load the model again to
        get exact float32 back.
    dtype: instead of a precision, every module and z_t in this dtype (float16 is
        refused on the CPU); it outranks the default "auto" and is refused beside any
        other precision.
    compile: ``torch.compile`` the diffusers U-Net (frozen weights; the first step
        compiles: worth it for many steps only). Off by default; not with ``dtype``.
    keep_every: keep (z_t, x̂_0) every that many steps (0: none), for :func:`decode_latents`.
    scheduler: "ddim" (deterministic DDIM, η = 0) or "pndm" (SD-1.5's shipped default, PLMS).
    """
    h_default = model.vae.config.sample_size if getattr(model, "vae", None) is not None else None
    height = h_default if height is None else height
    width = h_default if width is None else width
    prompts, negatives = _check(model, prompts, negative_prompt, unet, guidance, steps, height, width, seed,
                                keep_every, scheduler)
    if not isinstance(compile, bool):
        raise TypeError(f"compile must be True or False; got {compile!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}; got {precision!r}")
    if dtype is not None and precision != "auto":
        raise ValueError("give precision or dtype, not both")
    fast = dtype is None                          # a dtype given outranks "auto"
    if compile and not fast:
        raise ValueError("compile=True belongs to the fast path: leave dtype out "
                         "(give a precision instead)")
    if not fast:
        device, dtype = _device_dtype(device, dtype)
        why, state_dtype, dtypes = f"dtype {dtype} was given", dtype, {}
    else:
        device, _ = _device_dtype(device, None)
        n_params = sum(p.numel() for p in model.unet.parameters())
        dtype, why = choose_precision(device, precision, unet_params=n_params)
        # bf16 computes the networks only: the text encoder and z_t stay float32
        state_dtype = torch.float32 if dtype == torch.bfloat16 else dtype
        dtypes = {"text_encoder": state_dtype}
    # oneDNN's bf16 convolutions read channels_last (NHWC); everything else runs
    # contiguous, which also undoes an earlier bf16 run's layout
    cpu_bf16 = device.type == "cpu" and dtype == torch.bfloat16
    fmt = torch.channels_last if cpu_bf16 else torch.contiguous_format
    for c in ("unet", "vae"):
        getattr(model, c).to(memory_format=fmt)
    for c in sd15.COMPONENTS:   # torch's own .to (diffusers' override warns on every cast)
        torch.nn.Module.to(getattr(model, c), device=device,
                           dtype=dtypes.get(c, dtype)).eval()
    tokenize = tokenizer if tokenizer is not None else default_tokenizer(model)
    B, f, w = len(prompts), vae_factor(model.vae), float(guidance)
    guided = w != 1.0
    from tqdm.auto import tqdm

    with torch.no_grad():
        # 1.-2. prompts -> ids (B, M) -> context c (B, M, d_ctx); with guidance [c_∅; c] (2B, M, d_ctx)
        ids = torch.as_tensor(tokenize((negatives if guided else []) + prompts))
        if ids.dim() != 2 or ids.dtype != torch.long:
            raise TypeError(f"the tokenizer must return token ids, a (B, M) long tensor; got {ids.dtype} "
                            f"of shape {tuple(ids.shape)}")
        ids = ids.to(device)
        context = model.text_encoder(ids).last_hidden_state
        d_ctx = context.shape[-1]
        if d_ctx != model.unet.config.cross_attention_dim:
            raise ValueError(f"the text encoder gives d_ctx = {d_ctx}, the U-Net's cross-attention "
                             f"expects {model.unet.config.cross_attention_dim}")
        if not fast:
            eps_hat = (_book_unet if unet == "book" else _diffusers_unet)(model.unet)
        else:
            module = model.unet
            if compile and unet == "diffusers":
                module = _compiled(module)
            net = (_book_unet if unet == "book" else _diffusers_unet)(module)
            c_net = context.to(dtype)                               # (2B, M, d_ctx)
            eps_hat = lambda z, t, c: net(z.to(dtype).contiguous(memory_format=fmt), t,
                                          c_net).to(state_dtype)

        # 3. z_T ~ N(0, I), (B, 4, H/f, W/f), from a CPU generator
        sched = make_scheduler(scheduler)
        sched.set_timesteps(steps, device=device)
        shape = (B, model.unet.config.in_channels, height // f, width // f)
        g = torch.Generator("cpu").manual_seed(seed)
        z = torch.randn(shape, generator=g, dtype=torch.float32)
        z = (z * sched.init_noise_sigma).to(device, state_dtype)
        alpha_bars = sched.alphas_cumprod.to(torch.float64)

        # 4. the loop: one guided ε̃ per timestep, one scheduler step
        kept = []
        timesteps = [int(t) for t in sched.timesteps]
        for i, t in enumerate(tqdm(timesteps, disable=not progress, desc="U-Net steps")):
            z_in = torch.cat([z, z]) if guided else z                                   # (2B or B, 4, h, w)
            t_in = torch.full((len(z_in),), t, dtype=torch.long, device=device)
            eps = eps_hat(sched.scale_model_input(z_in, t), t_in, context)
            if guided:
                e_uncond, e_cond = eps.chunk(2)
                eps = e_uncond + w * (e_cond - e_uncond)                                # ε̃
            if keep_every and i % keep_every == 0:
                a = alpha_bars[t].item()
                x0_hat = (z.float() - (1 - a) ** 0.5 * eps.float()) / a ** 0.5
                kept.append(Kept(i, t, z.float().cpu(), x0_hat.cpu()))
            z = sched.step(eps, t, z).prev_sample

        # 5. z_0 -> pixels in [0, 1]
        images = decode_latents(model, z)
    settings = dict(prompts=prompts, negative_prompt=negative_prompt, unet=unet, guidance=w, steps=steps,
                    height=height, width=width, seed=seed, device=str(device), dtype=str(dtype).removeprefix("torch."),
                    scheduler=scheduler, precision=precision, why_precision=why,
                    compile=compile)
    return Generation(images, z.float().cpu(), tuple(timesteps), kept, settings)


# ---------------------------------------------------------------- §5.1: layout first, details later
def split_frequencies(x: torch.Tensor, *, cutoff: float) -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, C, H, W) -> (low, high): the parts with spatial frequency 0 < |k| ≤ cutoff and |k| > cutoff,
    k in cycles per image (FFT, ideal radial mask); the mean (k = 0) goes to neither."""
    H, W = x.shape[-2:]
    ky = torch.fft.fftfreq(H, d=1 / H, dtype=torch.float64)[:, None]
    kx = torch.fft.fftfreq(W, d=1 / W, dtype=torch.float64)[None, :]
    radius = (ky ** 2 + kx ** 2).sqrt()                                  # (H, W) cycles per image
    X = torch.fft.fft2(x.double())
    band = lambda mask: torch.fft.ifft2(X * mask).real
    return band((radius > 0) & (radius <= cutoff)), band(radius > cutoff)


def settling(model, gen: Generation, *, cutoff: float = 2.0) -> list[dict]:
    """For each kept step, how far the decoded x̂_0 still is from the final image, per frequency band.

    error_band(i) = ‖band(Dec(x̂_0^{(i)}) − image)‖ / ‖band(image)‖, over the whole batch: 1 means as
    far as the band's whole content, 0 settled. "Global layout first" predicts the low band settles
    (falls towards 0) in fewer steps than the high band.
    """
    if not gen.kept:
        raise ValueError("nothing kept: run text_to_image with keep_every > 0")
    low_f, high_f = split_frequencies(gen.images, cutoff=cutoff)
    rows = []
    for k in gen.kept:
        low, high = split_frequencies(decode_latents(model, k.x0_hat) - gen.images, cutoff=cutoff)
        rows.append(dict(i=k.i, t=k.t, low=(low.norm() / low_f.norm()).item(),
                         high=(high.norm() / high_f.norm()).item()))
    return rows


def steps_to_settle(rows: list[dict], level: float) -> dict:
    """The first kept step at which each band's error of :func:`settling` falls below ``level``."""
    return {band: next((r["i"] for r in rows if r[band] < level), None) for band in ("low", "high")}


def image_grid(images: torch.Tensor, *, rows: int, pad: int = 2, fill: float = 0.0) -> torch.Tensor:
    """Images (N, C, H, W), N = rows·cols, filled row by row, ``pad`` pixels of ``fill`` between them
    -> one picture (rows·(H + pad) − pad, cols·(W + pad) − pad, C) for imshow."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise ValueError("image_grid takes images (N, C, H, W)")
    N, C, H, W = images.shape
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1 or N % rows:
        raise ValueError(f"{N} images do not fill {rows!r} rows")
    if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
        raise ValueError(f"pad is a number of pixels ≥ 0; got {pad!r}")
    cols = N // rows
    framed = torch.nn.functional.pad(images, (0, pad, 0, pad), value=fill)      # (N, C, H + pad, W + pad)
    grid = framed.reshape(rows, cols, C, H + pad, W + pad).permute(0, 3, 1, 4, 2)  # (rows, H', cols, W', C)
    grid = grid.reshape(rows * (H + pad), cols * (W + pad), C)
    return grid[: grid.shape[0] - pad, : grid.shape[1] - pad]
