"""Ledger rows of §3: the noising process, loss (6), DDPM/DDIM steps and the VAE objective, against diffusers' schedulers and SD's VAE posterior."""
from __future__ import annotations

import math
import torch
from sdanatomy.lecture.config import SCHEDULER_CONFIG   # SD-1.5's: set_alpha_to_one=False, steps_offset=1
from sdanatomy.ledger.registry import row
from sdanatomy.sd15.reference import DDIMScheduler, DDPMScheduler, DiagonalGaussianDistribution
from sdanatomy.lecture.diffusion import (Schedule, ddim_step, ddim_timesteps, ddpm_step, q_step, regularizer, reparameterize)

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
