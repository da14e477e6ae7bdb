"""Ledger rows of §3: the noising process, loss (6), DDPM/DDIM steps and the VAE objective, against diffusers' schedulers and SD's VAE posterior.

The VAE rows, (7)–(11), run SD-1.5's AutoencoderKL at narrow widths, every parameter seeded:
the encoder's two outputs μ and σ (7)–(8), which parameters each depends on (9, by autograd),
encode–sample–decode (10)–(11), and the latent scaling s = 0.18215 the pipeline decodes with.
"""
from __future__ import annotations

import copy
import functools
import inspect
import math
import torch
from sdanatomy.lecture.config import SCHEDULER_CONFIG   # SD-1.5's: set_alpha_to_one=False, steps_offset=1
from sdanatomy.lecture.config import VAE_CONFIG
from sdanatomy.ledger.registry import Route, row
from sdanatomy.sd15.reference import (NARROW_VAE_CONFIG, AutoencoderKL, DDIMScheduler, DDPMScheduler,
                                      DiagonalGaussianDistribution, meta, seed_parameters)
from sdanatomy.lecture.diffusion import (Schedule, ddim_step, ddim_timesteps, ddpm_step, q_step, regularizer, reparameterize)
from sdanatomy.lecture.vae_decoder import decode_latents, vae_decoder
from sdanatomy.lecture.vae_encoder import posterior_mean_sd, sd_enc

# --- ledger rows, §3 ---------------------------------------------------------------------

def _diffusers_scheduler(kind: str, schedule_name: str):

    if kind == "ddpm":   # clip_sample=False: the latents of SD are not confined to [−1, 1]
        return DDPMScheduler(beta_schedule=schedule_name, beta_start=_STARTS[schedule_name][0],
                             beta_end=_STARTS[schedule_name][1], clip_sample=False)
    cfg = {k: v for k, v in SCHEDULER_CONFIG.items() if k not in ("skip_prk_steps", "trained_betas")}
    return DDIMScheduler(**cfg)


def _in_float64(scheduler, schedule: Schedule):
    """Give a diffusers scheduler our float64 β: the rows on the update rules then compare the rules
    alone (diffusers' float32 schedule recovers β_t = 1 − ᾱ_t/ᾱ_{t−1} only to ~1e-6/β_t)."""
    scheduler.betas = schedule.betas.clone()
    scheduler.alphas = schedule.alphas
    scheduler.alphas_cumprod = schedule.alpha_bars
    if hasattr(scheduler, "final_alpha_cumprod") and not scheduler.config.set_alpha_to_one:
        scheduler.final_alpha_cumprod = schedule.alpha_bars[0]
    return scheduler


_STARTS = {"linear": (1e-4, 0.02), "scaled_linear": (0.00085, 0.012)}
_SCHEDULES = {"linear": Schedule.linear, "scaled_linear": Schedule.scaled_linear}
F32_SCHEDULE = ("diffusers holds β and ᾱ in float32: a product of 1000 float32 factors is accurate "
                "to ≲ 1000·2⁻²⁴ ≈ 6e-5 relative")
F64_RULE = ("float64 on both sides with the same β; the step subtracts terms up to 1/√ᾱ_t ≈ 160 times "
            "larger than the result: ≲ 160·10·2⁻⁵³ ≈ 2e-13")


@row("(6) closed form of q(x_t | x_0)", section="3.1",
            formula=r"x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon",
            reference="t + 1 one-step kernels q(x_s | x_{s−1}) composed by execution (both schedules)",
            tol=1e-12, why_tol="float64, up to 1000 products: ≲ 1000·2⁻⁵³ ≈ 1e-13",
            error="max |coefficient difference|, mean and variance")
def _row_closed_form(seed=0, dtype=torch.float64):
    worst = 0.0
    for make in _SCHEDULES.values():
        s = make()
        # Track x_t as a linear combination of x_0 and the step noises z_0 … z_{T−1}.
        coeffs = torch.zeros(1, s.T + 1, dtype=torch.float64)
        coeffs[0, 0] = 1.0
        for t in range(s.T):
            z = torch.zeros_like(coeffs)
            z[0, t + 1] = 1.0
            coeffs = q_step(s, coeffs, [t], z)   # x_t = √(1−β_t) x_{t−1} + √β_t z_t
            a = s.alpha_bars[t]
            worst = max(worst, abs(coeffs[0, 0] - a.sqrt()).item(),
                        abs(coeffs[0, 1:].pow(2).sum() - (1 - a)).item())
    return worst


@row("(6) noise schedules", section="3.1", formula=r"\beta_t,\ \bar\alpha_t=\prod_{s\le t}(1-\beta_s)",
            reference="diffusers DDPMScheduler: 'linear' (DDPM) and 'scaled_linear' (SD-1.5)",
            tol=6e-5, why_tol=F32_SCHEDULE, error="max relative difference of β and ᾱ",
     checks=("sdanatomy.lecture.diffusion.Schedule",))
def _row_schedules(seed=0, dtype=torch.float64):
    worst = 0.0
    for name, make in _SCHEDULES.items():
        ours, theirs = make(), _diffusers_scheduler("ddpm", name)
        for a, b in ((ours.betas, theirs.betas), (ours.alpha_bars, theirs.alphas_cumprod)):
            worst = max(worst, ((a - b.double()).abs() / a).max().item())
    return worst


@row("(6) DDPM ancestral step", section="3.1",
            formula=r"x_{t-1}=\mu_t(x_t,\hat\epsilon)+\tilde\beta_t^{1/2} z",
            reference="diffusers DDPMScheduler.step (clip_sample=False), same β, same ε̂, same generator",
            tol=1e-12, why_tol=F64_RULE, error="max |diff| / max |x_{t−1}|")
def _row_ddpm_step(seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    worst = 0.0
    for name, make in _SCHEDULES.items():
        ours = make()
        theirs = _in_float64(_diffusers_scheduler("ddpm", name), ours)
        for t in (999, 500, 1, 0):
            x, eps = torch.randn(2, 4, 8, 8, generator=g, dtype=dtype), torch.randn(2, 4, 8, 8, generator=g, dtype=dtype)
            state = g.get_state()
            reference = theirs.step(eps, t, x, generator=g).prev_sample
            g.set_state(state)
            noise = torch.randn(x.shape, generator=g, dtype=dtype) if t > 0 else None
            mine = ddpm_step(ours, eps, t, x, noise)
            worst = max(worst, ((mine - reference).abs().max() / reference.abs().max()).item())
    return worst


@row("(6) DDIM step, η = 0 and η = 0.5", section="3.1",
            formula=r"x_{t'}=\sqrt{\bar\alpha_{t'}}\hat x_0+\sqrt{1-\bar\alpha_{t'}-\sigma^2}\,\hat\epsilon+\sigma z",
            reference="diffusers DDIMScheduler.step, SD-1.5's scheduler settings, same β, 50 steps",
            tol=1e-12, why_tol=F64_RULE, error="max |diff| / max |x_{t'}|")
def _row_ddim_step(seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    ours = Schedule.scaled_linear()
    theirs = _in_float64(_diffusers_scheduler("ddim", "scaled_linear"), ours)
    theirs.set_timesteps(50)
    steps = ddim_timesteps(ours, 50, steps_offset=1)
    if steps != theirs.timesteps.tolist():
        return math.inf
    worst = 0.0
    for eta in (0.0, 0.5):
        for t in (steps[0], steps[25], steps[-1]):
            x, eps, z = (torch.randn(1, 4, 8, 8, generator=g, dtype=dtype) for _ in range(3))
            reference = theirs.step(eps, t, x, eta=eta, variance_noise=z).prev_sample
            mine = ddim_step(ours, eps, t, t - 1000 // 50, x, eta=eta, noise=z,
                             final_alpha_bar=ours.alpha_bars[0].item())   # set_alpha_to_one=False
            worst = max(worst, ((mine - reference).abs().max() / reference.abs().max()).item())
    return worst


@row("(10) reparameterisation", section="3.2",
            formula=r"z_\epsilon=\mu(X)+\sigma(X)\odot\epsilon",
            reference="diffusers DiagonalGaussianDistribution.sample (the SD VAE's posterior), same generator",
            tol=1e-12, why_tol="float64; diffusers forms σ = exp(½ log σ²), one rounding more")
def _row_reparameterize(seed=0, dtype=torch.float64):

    g = torch.Generator().manual_seed(seed)
    mu, log_var = torch.randn(2, 4, 8, 8, generator=g, dtype=dtype), torch.randn(2, 4, 8, 8, generator=g, dtype=dtype)
    posterior = DiagonalGaussianDistribution(torch.cat([mu, log_var], dim=1))
    state = g.get_state()
    reference = posterior.sample(generator=g)
    g.set_state(state)
    mine = reparameterize(mu, torch.exp(0.5 * log_var), torch.randn(mu.shape, generator=g, dtype=dtype))
    return (mine - reference).abs().max().item()


@row("(12) regularisation term = 2·KL", section="3.2",
            formula=r"\sum_i(\mu_i^2+\sigma_i^2-\log\sigma_i^2-1) = 2\,\mathrm{KL}(\mathcal N(\mu,\sigma^2)\Vert\mathcal N(0,I))",
            reference="2 × torch.distributions.kl_divergence, summed over components",
            tol=1e-12, why_tol="float64, a sum of 256 terms: relative error ≲ 256·2⁻⁵³", error="relative")
def _row_kl_torch(seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    mu, sigma = torch.randn(3, 4, 8, 8, generator=g, dtype=dtype), torch.rand(3, 4, 8, 8, generator=g, dtype=dtype) + 0.1
    N = torch.distributions.Normal
    kl = torch.distributions.kl_divergence(N(mu, sigma), N(torch.zeros_like(mu), torch.ones_like(sigma)))
    reference = 2 * kl.flatten(1).sum(1)
    return ((regularizer(mu, sigma) - reference).abs() / reference).max().item()


@row("(12) regularisation term = 2 × SD's VAE KL", section="3.2",
            formula=r"\sum_i(\mu_i^2+\sigma_i^2-\log\sigma_i^2-1) = 2\cdot\texttt{posterior.kl()}",
            reference="2 × diffusers DiagonalGaussianDistribution.kl()", tol=1e-12,
            why_tol="float64, a sum of 256 terms: relative error ≲ 256·2⁻⁵³", error="relative")
def _row_kl_diffusers(seed=0, dtype=torch.float64):

    g = torch.Generator().manual_seed(seed)
    mu, log_var = torch.randn(3, 4, 8, 8, generator=g, dtype=dtype), torch.randn(3, 4, 8, 8, generator=g, dtype=dtype)
    reference = 2 * DiagonalGaussianDistribution(torch.cat([mu, log_var], dim=1)).kl()
    return ((regularizer(mu, torch.exp(0.5 * log_var)) - reference).abs() / reference).max().item()


# --- (7)–(9), (11): SD-1.5's VAE, encoder and decoder, at narrow widths ---------------------

F64_NET = ("float64 (u = 1.1e-16): the decoder's ~30 layers by the book's functions against "
           "diffusers' kernels, sums of ≤ 577 terms at these widths in another order (the encoder "
           "and ε are diffusers' own on both sides); observed ≲ 5e-14")
NARROW_AE = "diffusers AutoencoderKL, SD-1.5's config at widths (32, 32, 64, 64)"
IMAGES = (2, 3, 16, 24)        # B, RGB, H, W: a latent of 2×3 after the encoder's 3 downsamplers


@functools.lru_cache(maxsize=4)
def _autoencoder(seed: int, dtype) -> torch.nn.Module:
    """SD-1.5's AutoencoderKL at narrow widths, every parameter seeded (encoder included)."""
    return seed_parameters(copy.deepcopy(meta("vae", NARROW_VAE_CONFIG)), seed, dtype)


def _images(seed, dtype) -> torch.Tensor:
    return torch.randn(*IMAGES, generator=torch.Generator().manual_seed(1000 + seed), dtype=dtype)


def _rel(Y, ref) -> float:
    return ((Y - ref).abs().max() / ref.abs().max()).item()


EXTREME_LOG_VAR = (-2000.0, -1000.0, -60.0, -30.0, 0.0, 20.0, 60.0, 1000.0, 2000.0)


@row("(7)–(8) MeanEnc, SDEnc: the two halves of SD-1.5's encoder output", section="3.2",
            formula=r"\mu(X) = \mathrm{MeanEnc}(X),\ \sigma(X) = \mathrm{SDEnc}(X) \in \mathbb R^d_{>0}",
            reference="AutoencoderKL.encode(X).latent_dist (diffusers' DiagonalGaussianDistribution): "
                      f"its mean and std; {NARROW_AE}, 2 images 3×16×24; and its std at "
                      "log σ² ∈ {±2000, ±1000, −60, −30, 0, 20, 60}",
            tol=0, why_tol="the same float64 operations in the same order (a slice; a clamp, a "
                           "halving, exp): bit for bit",
            error="max |ours − diffusers| over μ and σ; ∞ if the moments are not 2·C_z channels "
                  "or a σ is not positive and finite")
def _row_mean_sd(seed=0, dtype=torch.float64):
    vae = _autoencoder(seed, dtype)
    X = _images(seed, dtype)
    with torch.no_grad():
        moments = vae.quant_conv(vae.encoder(X))                   # (B, 2·C_z, H_z, W_z)
        posterior = vae.encode(X).latent_dist
    if moments.shape[1] != 2 * vae.config.latent_channels:
        return math.inf
    mu, sigma = posterior_mean_sd(moments)                         # (7), (8)
    err = max((mu - posterior.mean).abs().max().item(), (sigma - posterior.std).abs().max().item())
    log_var = torch.tensor(EXTREME_LOG_VAR, dtype=dtype).reshape(1, 1, 1, -1).expand(1, 4, 1, -1)
    extreme = torch.cat([torch.zeros_like(log_var), log_var], dim=1)
    sigma = sd_enc(extreme)
    if not bool(((sigma > 0) & torch.isfinite(sigma)).all()):
        return math.inf                                            # (8): σ ∈ R_{>0}
    return max(err, (sigma - DiagonalGaussianDistribution(extreme).std).abs().max().item())


# For (9): two channels in every GroupNorm group (SD-1.5's VAE has 4 to 16). With one channel a
# group, as at widths 32, a conv bias right before a GroupNorm would cancel, which SD-1.5's does not.
ETA_CONFIG = dict(NARROW_VAE_CONFIG, block_out_channels=(64, 64, 64, 64))
ETA_AE = "diffusers AutoencoderKL, SD-1.5's config at widths (64, 64, 64, 64)"
NO_DEPENDENCE = ("encoder.mid_block.attentions.0.to_k.bias",)   # q·b_K: the same for every key
ROUNDOFF = 1e-14     # of the largest gradient: a dependence cancelled exactly leaves ≲ 1e-16 of it


@functools.lru_cache(maxsize=4)
def _eta_autoencoder(seed: int, dtype) -> torch.nn.Module:
    return seed_parameters(copy.deepcopy(meta("vae", ETA_CONFIG)), seed, dtype)


@functools.lru_cache(maxsize=4)
def _dependence(seed: int, dtype) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Which entries of η (the Encoder's and quant_conv's parameters) μ and σ depend on, by
    autograd: for each parameter, elementwise (μ depends on it, σ depends on it). An entry
    counts when |∂⟨r, y⟩/∂θ| > 1e-14 of the largest such gradient for one of two random r
    (a dependence that cancels exactly, as b_K's in the softmax, leaves round-off ≲ 1e-16)."""
    vae = _eta_autoencoder(seed, dtype)
    names, params = zip(*[(f"{root}.{n}", p) for root in ("encoder", "quant_conv")
                          for n, p in getattr(vae, root).named_parameters()])
    g = torch.Generator().manual_seed(2000 + seed)
    with torch.enable_grad():
        mu, sigma = posterior_mean_sd(vae.quant_conv(vae.encoder(_images(seed, dtype))))
        found = []
        for y in (mu, sigma):
            hit = [torch.zeros_like(p, dtype=torch.bool) for p in params]
            for _ in range(2):
                grads = torch.autograd.grad((torch.randn(y.shape, generator=g, dtype=dtype) * y).sum(),
                                            params, retain_graph=True, allow_unused=True)
                grads = [torch.zeros_like(p) if d is None else d.abs() for p, d in zip(params, grads)]
                top = max(d.max().item() for d in grads)
                hit = [h | (d > ROUNDOFF * top) for h, d in zip(hit, grads)]
            found.append(hit)
    return {n: (m, s) for n, m, s in zip(names, *found)}


def _shared_entries(seed, dtype) -> tuple[int, int]:
    """(entries of η that both μ and σ depend on, entries of η)."""
    dep = _dependence(seed, dtype)
    return (sum(int((m & s).sum()) for m, s in dep.values()),
            sum(m.numel() for m, _ in dep.values()))


def _halves_stated(name: str, shape, C_z: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """The corrected statement of (9), entry by entry, as (μ depends, σ depends): quant_conv's
    first C_z output rows (weight and bias) make μ alone, its last C_z σ alone; neither reads
    the mid-block attention's b_K (it adds q·b_K to every score of a query: the softmax cancels
    it); every other parameter of the Encoder is shared."""
    both = torch.ones(shape, dtype=torch.bool)
    if name in NO_DEPENDENCE:
        return ~both, ~both
    if not name.startswith("quant_conv."):
        return both, both
    mu_rows = torch.zeros(shape, dtype=torch.bool)
    mu_rows[:C_z] = True
    return mu_rows, ~mu_rows


SPLIT = "(9) η_mean, η_SD: one Encoder, apart only in quant_conv's two halves"


@row(SPLIT, section="3.2",
            formula=r"\eta_{\mathrm{mean}} \cap \eta_{\mathrm{SD}} = \mathrm{Encoder} \setminus \{b_K\},"
                    r"\ \eta_{\mathrm{mean}} \triangle \eta_{\mathrm{SD}} = \mathrm{quant\_conv}",
            reference=f"autograd on {ETA_AE}: which entries of the Encoder's and quant_conv's "
                      "parameters μ and σ depend on (2 images 3×16×24)",
            tol=0, why_tol="counts of entries: integers, exact",
            error="entries whose measured dependence (μ, σ, both, neither) is not the stated one: "
                  "quant_conv's first 4 output rows μ alone, its last 4 σ alone, the mid-block "
                  "attention's b_K neither (the softmax cancels it), the rest both")
def _row_eta_split(seed=0, dtype=torch.float64):
    bad = 0
    for name, (m, s) in _dependence(seed, dtype).items():
        m_stated, s_stated = _halves_stated(name, m.shape)
        bad += int((m != m_stated).sum() + (s != s_stated).sum())
    return float(bad)


def _shared_closed(seed, dtype) -> int:
    enc = _eta_autoencoder(seed, dtype).encoder
    return (sum(p.numel() for p in enc.parameters())
            - sum(enc.get_parameter(n.removeprefix("encoder.")).numel() for n in NO_DEPENDENCE))


@row("(9) η = (η_mean, η_SD), as printed: two parameter sets", section="3.2",
            formula=r"\eta := (\eta_{\mathrm{mean}},\ \eta_{\mathrm{SD}}),\ "
                    r"\mathrm{MeanEnc}_{\eta_{\mathrm{mean}}},\ \mathrm{SDEnc}_{\eta_{\mathrm{SD}}}",
            reference=f"autograd on {ETA_AE}: the entries of η that both μ and σ depend on",
            tol=0, why_tol="counts of entries: integers, exact",
            error="|η_mean ∩ η_SD| / |η|: the fraction of η in both", verdict="differs",
            corrected_by=SPLIT,
            note="(7)–(9) write two encoders, each with its own parameters, and η as the pair. SD-1.5 "
                 "has one encoder whose output has 2·C_z = 8 channels: μ is the first half, log σ² "
                 "the second, so μ and σ share every parameter of the Encoder; only quant_conv's "
                 "two halves (its 1×1 output rows) are each one's own. η_mean and η_SD overlap "
                 "in all but 2·4·(8 + 1) = 72 numbers of quant_conv (and b_K, which neither reads); "
                 "η is their union, not a pair of disjoint sets.",
     route=Route(lambda seed=0, dtype=torch.float64: (_shared_entries(seed, dtype)[0],
                                                      _shared_closed(seed, dtype)),
                 how="the closed form: every entry of the Encoder but b_K (quant_conv mixes all "
                     "2·C_z channels it outputs), counted from the module, against the autograd count",
                 atol=0.0, rtol=0.0, why="counts of entries: integers, exact"))
def _row_eta_printed(seed=0, dtype=torch.float64):
    shared, total = _shared_entries(seed, dtype)
    return shared / total


@row("(11) X̂_ε = Dec(z_ε): encode, sample, decode = AutoencoderKL(X, sample_posterior=True)",
     section="3.2",
            formula=r"\hat X_\epsilon = \mathrm{Dec}_\nu(\mu(X) + \sigma(X) \odot \epsilon)",
            reference=f"{NARROW_AE}: its forward(X, sample_posterior=True, generator), 2 images "
                      "3×16×24, the same generator for ε", tol=1e-12, why_tol=F64_NET,
            error="max |ours − diffusers| / max |diffusers|")
def _row_decode_sample(seed=0, dtype=torch.float64):
    vae = _autoencoder(seed, dtype)
    X = _images(seed, dtype)
    theta = {k: v.detach() for k, v in vae.state_dict().items()}
    with torch.no_grad():
        ref = vae(X, sample_posterior=True, generator=torch.Generator().manual_seed(seed)).sample
        mu, sigma = posterior_mean_sd(vae.quant_conv(vae.encoder(X)))                 # (7)–(8)
        eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)
        X_hat = vae_decoder(theta, reparameterize(mu, sigma, eps), config=NARROW_VAE_CONFIG)  # (10)–(11)
    return _rel(X_hat, ref)


@row("(11) decoding SD-1.5's diffusion latent: Dec(x₀ / s), s = 0.18215", section="3.2",
            formula=r"\hat X = \mathrm{Dec}_\nu(x_0 / s),\ s = 0.18215",
            reference="diffusers AutoencoderKL's scaling_factor: its class default (SD-1.5's "
                      "vae/config.json has none) and the built VAE's; decode(x₀ / s) of "
                      f"{NARROW_AE}, latents 2×4×3×5", tol=1e-12, why_tol=F64_NET,
            error="max of |s_book − s_diffusers| and max |ours − diffusers| / max |diffusers|")
def _row_latent_scaling(seed=0, dtype=torch.float64):
    vae = _autoencoder(seed, dtype)
    s_class = inspect.signature(AutoencoderKL.__init__).parameters["scaling_factor"].default
    s_book = VAE_CONFIG["scaling_factor"]
    err = max(abs(s_book - s_class), abs(s_book - vae.config.scaling_factor))
    theta = {k: v.detach() for k, v in vae.state_dict().items()}
    x0 = torch.randn(2, 4, 3, 5, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    without = {k: v for k, v in NARROW_VAE_CONFIG.items() if k != "scaling_factor"}
    with torch.no_grad():
        ref = vae.decode(x0 / vae.config.scaling_factor).sample
        for config in (NARROW_VAE_CONFIG, without):         # decode_latents' own default too
            err = max(err, _rel(decode_latents(theta, x0, config=config), ref))
    return err
