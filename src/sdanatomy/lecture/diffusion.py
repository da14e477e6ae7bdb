"""Architectural freedom, lecture §3: training and sampling never look inside the network.

Everything here takes the networks as plain callables — a noise estimator ``eps_hat(x, t, c)``,
an encoder ``encoder(X) -> (mu, sigma)`` and a decoder ``decoder(z)`` — and never asks what they
are made of. The same functions train an MLP, a small U-Net and SD-1.5's own classes.

* the DDPM forward process q(x_t | x_0) and the noise-estimation loss (6) (§3.1);
* DDPM ancestral sampling and DDIM sampling (any η), step for step what diffusers'
  ``DDPMScheduler`` and ``DDIMScheduler`` compute (§3.1);
* the VAE objective (7)–(12) with the reparameterisation (10)–(11) (§3.2).

Timesteps are 0-based as in diffusers: t ∈ {0, …, T−1}, ᾱ_t = Π_{s=0}^{t} (1 − β_s).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


NoiseEstimator = Callable[[torch.Tensor, torch.Tensor, object], torch.Tensor]


# --- the noise schedule and the forward process q(x_t | x_0) ----------------------------

@dataclass(frozen=True)
class Schedule:
    """β_0, …, β_{T−1} and what follows from them, in float64.

    The noise schedule of §3.1, eq. (6): the ζ⁽ⁱ⁾ of (6) are noised with its ᾱ_t (q_sample).
    Ledger: ``ledger.where("(6)")``.
    """

    betas: torch.Tensor

    def __post_init__(self):
        b = self.betas
        if not (isinstance(b, torch.Tensor) and b.dim() == 1 and len(b) > 0):
            raise ValueError("a schedule is a non-empty vector of betas")
        if not bool(((b > 0) & (b < 1)).all()):
            raise ValueError("every beta must lie in (0, 1)")
        object.__setattr__(self, "betas", b.to(torch.float64))

    @classmethod
    def linear(cls, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> "Schedule":
        """DDPM's schedule (Ho et al., 2020): β linear from 1e-4 to 0.02 over T = 1000 steps."""
        return cls(torch.linspace(beta_start, beta_end, T, dtype=torch.float64))

    @classmethod
    def scaled_linear(cls, T: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> "Schedule":
        """SD-1.5's schedule: √β linear from √0.00085 to √0.012 over T = 1000 steps."""
        return cls(torch.linspace(beta_start ** 0.5, beta_end ** 0.5, T, dtype=torch.float64) ** 2)

    @property
    def T(self) -> int:
        return len(self.betas)

    @property
    def alphas(self) -> torch.Tensor:
        return 1 - self.betas

    @property
    def alpha_bars(self) -> torch.Tensor:
        return torch.cumprod(self.alphas, 0)   # ᾱ_t = Π_{s ≤ t} α_s

    def check_t(self, t) -> torch.Tensor:
        """t as a long tensor, or a ValueError if any timestep is outside {0, …, T−1}."""
        t = torch.as_tensor(t)
        if t.is_floating_point() or t.is_complex():
            raise TypeError(f"timesteps are integers in {{0, …, {self.T - 1}}}; got dtype {t.dtype}")
        if bool((t < 0).any() or (t >= self.T).any()):
            raise ValueError(f"timesteps must lie in {{0, …, {self.T - 1}}} (the schedule has T = {self.T}); "
                             f"got {t.min().item()}…{t.max().item()}")
        return t.long()


def _per_example(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A (B,) vector of schedule values, shaped to broadcast against x (B, …), in x's dtype."""
    return v.to(device=x.device, dtype=x.dtype).reshape(-1, *([1] * (x.dim() - 1)))


def q_sample(schedule: Schedule, x0: torch.Tensor, t,
             eps: torch.Tensor) -> torch.Tensor:
    """x_t ~ q(x_t | x_0) in closed form: x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε.

    x0, eps: (B, …); t: (B,)
    """
    if x0.shape != eps.shape:
        raise ValueError(f"x0 and eps must have the same shape; "
                         f"got {tuple(x0.shape)} and {tuple(eps.shape)}")
    t = schedule.check_t(t).reshape(-1)
    if len(t) != x0.shape[0]:
        raise ValueError(f"one timestep per example: {len(t)} timesteps for a batch of "
                         f"{x0.shape[0]}")
    a = schedule.alpha_bars[t]
    return _per_example(a.sqrt(), x0) * x0 + _per_example((1 - a).sqrt(), x0) * eps


def q_step(schedule: Schedule, x_prev: torch.Tensor, t, eps: torch.Tensor) -> torch.Tensor:
    """One forward step, x_t ~ q(x_t | x_{t−1}): x_t = √(1 − β_t) x_{t−1} + √β_t ε.

    §3.1, eq. (6): composed over steps 0, …, t it gives q_sample's closed form, the ζ⁽ⁱ⁾ of (6).
    Ledger: ``ledger.where("(6)")``.
    """
    t = schedule.check_t(t).reshape(-1)
    b = schedule.betas[t]
    return _per_example((1 - b).sqrt(), x_prev) * x_prev + _per_example(b.sqrt(), x_prev) * eps


# --- the noise-estimation loss (6) and the one training loop ----------------------------

def noise_estimation_loss(eps_hat: NoiseEstimator, x0: torch.Tensor, c=None, *,
                          schedule: Schedule,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """(6) on one batch: the mean over i of ‖ε⁽ⁱ⁾ − ε̂_θ(ζ⁽ⁱ⁾, c⁽ⁱ⁾, t⁽ⁱ⁾)‖².

    ζ⁽ⁱ⁾ = q_sample(x0⁽ⁱ⁾, t⁽ⁱ⁾, ε⁽ⁱ⁾), t uniform on {0, …, T−1}, ε standard normal.
    The lecture sums over the m examples; the mean divides by m, which changes the
    scale of the objective but not its minimiser.
    """
    B = x0.shape[0]
    t = torch.randint(0, schedule.T, (B,), generator=generator,
                      device="cpu").to(x0.device)                     # t⁽ⁱ⁾
    eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype,
                      device="cpu").to(x0.device)                     # ε⁽ⁱ⁾
    zeta = q_sample(schedule, x0, t, eps)          # ζ = √ᾱ_t x_0 + √(1 − ᾱ_t) ε
    prediction = eps_hat(zeta, t, c)               # the network, called: nothing more
    if prediction.shape != eps.shape:
        raise ValueError(f"the noise estimator must return the shape of its input "
                         f"{tuple(eps.shape)}; got {tuple(prediction.shape)}")
    loss = (eps - prediction).pow(2).flatten(1).sum(1).mean()   # (6), batch mean
    if not torch.isfinite(loss):
        raise FloatingPointError(f"the noise-estimation loss is not finite "
                                 f"({loss.item()}): "
                                 "lower the learning rate or check the data")
    return loss


def _batches(n: int, batch_size: int, steps: int, generator: torch.Generator):
    for _ in range(steps):
        yield torch.randint(0, n, (batch_size,), generator=generator)


def train_noise_estimator(eps_hat: NoiseEstimator, data: torch.Tensor, cond=None, *, schedule: Schedule,
                          steps: int, batch_size: int = 128, lr: float = 1e-3, seed: int = 0,
                          parameters=None, cond_dropout: float = 0.0, null_cond=None,
                          progress: bool = False) -> list[float]:
    """Minimise (6) by Adam over ``parameters`` (default: ``eps_hat.parameters()``); returns the losses.

    ``cond`` holds one condition per example (a tensor indexed like ``data``), or None.
    ``cond_dropout`` replaces each condition by ``null_cond`` with that probability, which trains
    the unconditional estimator that classifier-free guidance needs (Ho & Salimans, 2021).
    """
    if cond is not None and len(cond) != len(data):
        raise ValueError(f"one condition per example: {len(cond)} conditions for {len(data)} examples")
    if cond_dropout and null_cond is None:
        raise ValueError("cond_dropout needs null_cond, the condition that stands for 'no condition'")
    from tqdm.auto import tqdm

    g = torch.Generator().manual_seed(seed)
    params = list(eps_hat.parameters() if parameters is None else parameters)
    optimiser = torch.optim.Adam(params, lr=lr)
    losses = []
    for idx in tqdm(_batches(len(data), batch_size, steps, g), total=steps, disable=not progress,
                    desc="training ε̂", mininterval=1.0):
        c = None
        if cond is not None:
            c = cond[idx].clone()
            if cond_dropout:
                drop = torch.rand(batch_size, generator=g) < cond_dropout
                c[drop] = null_cond
        loss = noise_estimation_loss(eps_hat, data[idx], c, schedule=schedule, generator=g)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    return losses


# --- sampling: DDPM and DDIM, for any ε̂ -------------------------------------------------

def _checked_eps(eps_hat, x, t, c):
    eps = eps_hat(x, torch.full((x.shape[0],), int(t), dtype=torch.long, device=x.device), c)
    if eps.shape != x.shape:
        raise ValueError(f"the noise estimator must return the shape of its input {tuple(x.shape)}; "
                         f"got {tuple(eps.shape)}")
    return eps


def ddpm_step(schedule: Schedule, eps: torch.Tensor, t: int, x: torch.Tensor,
              noise: torch.Tensor | None):
    """One ancestral step x_t -> x_{t−1} (Ho et al., 2020), 'fixed small' variance β̃_t.

    x̂_0 = (x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t,
    μ = √ᾱ_{t−1} β_t/(1−ᾱ_t) x̂_0 + √α_t (1−ᾱ_{t−1})/(1−ᾱ_t) x_t,
    x_{t−1} = μ + √β̃_t z with β̃_t = (1−ᾱ_{t−1})/(1−ᾱ_t) β_t; no noise at t = 0.

    §3.1, eq. (6): a sequential algorithm that the ε̂_θ trained by (6) is inserted into.
    Ledger: ``ledger.where("(6)")``.
    """
    t = int(schedule.check_t(t))
    a_t = schedule.alpha_bars[t]
    if t > 0:
        a_prev = schedule.alpha_bars[t - 1]                                # ᾱ_{t−1}
    else:
        a_prev = torch.ones((), dtype=torch.float64)
    beta_t = 1 - a_t / a_prev
    x0_hat = (x - (1 - a_t).sqrt().item() * eps) / a_t.sqrt().item()       # x̂_0
    c_x0 = (a_prev.sqrt() * beta_t / (1 - a_t)).item()             # of x̂_0 in μ
    c_xt = ((1 - beta_t).sqrt() * (1 - a_prev) / (1 - a_t)).item()   # of x_t in μ
    mean = c_x0 * x0_hat + c_xt * x                                        # μ
    if t == 0:
        return mean
    variance = ((1 - a_prev) / (1 - a_t) * beta_t).clamp(min=1e-20)        # β̃_t
    return mean + variance.sqrt().item() * noise


def ddpm_sample(eps_hat: NoiseEstimator, shape, c=None, *, schedule: Schedule,
                generator: torch.Generator | None = None,
                x_T: torch.Tensor | None = None, keep_every: int = 0,
                dtype=torch.float32, device="cpu"):
    """Ancestral sampling from x_T ~ N(0, I) through all T steps.

    Returns x_0, or (x_0, [(t, x_t), …]) when ``keep_every`` > 0 (the intermediate
    states every ``keep_every`` steps).
    """
    if x_T is None:
        x = torch.randn(shape, generator=generator, dtype=dtype).to(device)
    else:
        x = x_T
    kept = []
    with torch.no_grad():
        for t in reversed(range(schedule.T)):
            if keep_every and t % keep_every == 0:
                kept.append((t, x.clone()))
            eps = _checked_eps(eps_hat, x, t, c)
            noise = None
            if t > 0:
                noise = torch.randn(x.shape, generator=generator,
                                    dtype=x.dtype).to(device)
            x = ddpm_step(schedule, eps, t, x, noise)
    return (x, kept) if keep_every else x


def ddim_timesteps(schedule: Schedule, num_steps: int, steps_offset: int = 0) -> list[int]:
    """diffusers' 'leading' spacing: 0, k, 2k, … with k = T // num_steps, reversed, plus the offset."""
    if not 1 <= num_steps <= schedule.T:
        raise ValueError(f"num_steps must lie in 1…{schedule.T}; got {num_steps}")
    k = schedule.T // num_steps
    return [i * k + steps_offset for i in reversed(range(num_steps))]


def ddim_step(schedule: Schedule, eps: torch.Tensor, t: int, t_prev: int,
              x: torch.Tensor, *, eta: float = 0.0, noise: torch.Tensor | None = None,
              final_alpha_bar: float = 1.0):
    """One DDIM step x_t -> x_{t_prev} (Song et al., 2021); η = 0 is deterministic.

    x̂_0 = (x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t,  σ = η √((1−ᾱ_prev)/(1−ᾱ_t)) √(1 − ᾱ_t/ᾱ_prev),
    x_prev = √ᾱ_prev x̂_0 + √(1 − ᾱ_prev − σ²) ε̂ + σ z; η = 1 is DDPM-like.
    ᾱ_prev = ``final_alpha_bar`` when t_prev < 0.

    §3.1, eq. (6): a sequential algorithm that the ε̂_θ trained by (6) is inserted into.
    Ledger: ``ledger.where("(6)")``.
    """
    a_t = schedule.alpha_bars[int(schedule.check_t(t))]
    if t_prev >= 0:
        a_prev = schedule.alpha_bars[t_prev]
    else:
        a_prev = torch.tensor(final_alpha_bar, dtype=torch.float64)
    x0_hat = (x - (1 - a_t).sqrt().item() * eps) / a_t.sqrt().item()       # x̂_0
    sigma = eta * ((1 - a_prev) / (1 - a_t)).sqrt() * (1 - a_t / a_prev).sqrt()
    x_prev = (a_prev.sqrt().item() * x0_hat
              + (1 - a_prev - sigma ** 2).sqrt().item() * eps)
    if eta > 0:
        if noise is None:
            raise ValueError("a DDIM step with eta > 0 needs noise")
        x_prev = x_prev + sigma.item() * noise
    return x_prev


def ddim_sample(eps_hat: NoiseEstimator, shape, c=None, *, schedule: Schedule,
                num_steps: int = 50, eta: float = 0.0,
                generator: torch.Generator | None = None,
                x_T: torch.Tensor | None = None, final_alpha_bar: float = 1.0,
                steps_offset: int = 0, keep_every: int = 0,
                dtype=torch.float32, device="cpu"):
    """DDIM sampling over ``num_steps`` of the T timesteps.

    Returns x_0, or (x_0, [(t, x_t), …]) when ``keep_every`` > 0.
    """
    if eta < 0:
        raise ValueError(f"eta must be >= 0; got {eta}")
    if x_T is None:
        x = torch.randn(shape, generator=generator, dtype=dtype).to(device)
    else:
        x = x_T
    steps = ddim_timesteps(schedule, num_steps, steps_offset)
    kept = []
    with torch.no_grad():
        for i, t in enumerate(steps):
            if keep_every and i % keep_every == 0:
                kept.append((t, x.clone()))
            eps = _checked_eps(eps_hat, x, t, c)
            noise = None
            if eta > 0:
                noise = torch.randn(x.shape, generator=generator,
                                    dtype=x.dtype).to(device)
            x = ddim_step(schedule, eps, t, t - schedule.T // num_steps, x, eta=eta,
                          noise=noise, final_alpha_bar=final_alpha_bar)
    return (x, kept) if keep_every else x


def guided(eps_hat: NoiseEstimator, null_c, w: float) -> NoiseEstimator:
    """Classifier-free guidance (Ho & Salimans, 2021): ε̃ = ε̂(x, t, ∅) + w (ε̂(x, t, c) − ε̂(x, t, ∅))."""

    def eps_tilde(x, t, c):
        null = null_c.expand(len(x), *null_c.shape[1:]) if isinstance(null_c, torch.Tensor) else null_c
        both = eps_hat(torch.cat([x, x]), torch.cat([t, t]), torch.cat([null, c]))
        e_uncond, e_cond = both.chunk(2)
        return e_uncond + w * (e_cond - e_uncond)

    return eps_tilde


# --- the VAE objective (7)-(12) ----------------------------------------------------------

def reparameterize(mu: torch.Tensor, sigma: torch.Tensor,
                   eps: torch.Tensor) -> torch.Tensor:
    """(10): z_ε = μ(X) + σ(X) ⊙ ε."""
    if not (mu.shape == sigma.shape == eps.shape):
        raise ValueError(f"μ, σ and ε must have one shape; got {tuple(mu.shape)}, "
                         f"{tuple(sigma.shape)}, {tuple(eps.shape)}")
    if not bool((sigma > 0).all()):
        raise ValueError("σ(X) must be positive in every component, (8)")
    return mu + sigma * eps


def regularizer(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The regularisation term of (12), per example: Σ_i (μ_i² + σ_i² − log σ_i² − 1).

    It is twice KL(N(μ, diag σ²) ‖ N(0, I)); the lecture's β absorbs the factor 2.
    """
    return (mu ** 2 + sigma ** 2 - torch.log(sigma ** 2) - 1).flatten(1).sum(1)


def vae_objective(encoder: Callable, decoder: Callable, X: torch.Tensor, *, beta: float,
                  generator: torch.Generator | None = None):
    """(12) on a batch, the expectation over ε estimated with one sample per image.

    ``encoder(X) -> (μ, σ)`` is (7)–(8), ``decoder(z)`` is Dec_ν of (11); ℓ is the
    squared error summed over pixels. Returns (loss, reconstruction, regularisation),
    batch means.
    """
    mu, sigma = encoder(X)
    eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype,
                      device="cpu").to(mu.device)
    X_hat = decoder(reparameterize(mu, sigma, eps))        # (10)–(11)
    if X_hat.shape != X.shape:
        raise ValueError(f"the decoder must return the input's shape {tuple(X.shape)}; "
                         f"got {tuple(X_hat.shape)}")
    reconstruction = (X - X_hat).pow(2).flatten(1).sum(1).mean()   # E_ε[ℓ(X, X̂_ε)]
    regularisation = regularizer(mu, sigma).mean()   # Σ_i (μ_i² + σ_i² − log σ_i² − 1)
    loss = reconstruction + beta * regularisation                  # (12)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"the VAE objective is not finite ({loss.item()})")
    return loss, reconstruction, regularisation


def train_vae(encoder: Callable, decoder: Callable, data: torch.Tensor, *, parameters, steps: int,
              beta: float, batch_size: int = 128, lr: float = 1e-3, seed: int = 0,
              progress: bool = False) -> list[float]:
    """Minimise (12) by Adam over ``parameters``; returns the losses. Knows nothing of the networks."""
    from tqdm.auto import tqdm

    g = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(list(parameters), lr=lr)
    losses = []
    for idx in tqdm(_batches(len(data), batch_size, steps, g), total=steps, disable=not progress,
                    desc="training the VAE", mininterval=1.0):
        loss, _, _ = vae_objective(encoder, decoder, data[idx], beta=beta, generator=g)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    return losses
