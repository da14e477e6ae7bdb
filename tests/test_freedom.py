"""sdanatomy.freedom: one loss, one training loop, two samplers, for any architecture."""
import math

import pytest
import torch

from sdanatomy.lecture import diffusion
from sdanatomy.miniature import zoo

S = diffusion.Schedule.scaled_linear()


def test_schedules_have_the_published_endpoints():
    lin = diffusion.Schedule.linear()
    assert lin.T == 1000
    # float64: linspace's ends are β_start, β_end within a few roundings, and
    # scaled_linear's (√β)² adds two: a few u = 1.1e-16 relative, so 1e-15;
    # abs_tol=0, every β > 0
    assert math.isclose(lin.betas[0].item(), 1e-4, rel_tol=1e-15, abs_tol=0)   # linsp.
    assert math.isclose(lin.betas[-1].item(), 0.02, rel_tol=1e-15, abs_tol=0)  # linsp.
    assert math.isclose(S.betas[0].item(), 0.00085, rel_tol=1e-15, abs_tol=0)  # (√β)²
    assert math.isclose(S.betas[-1].item(), 0.012, rel_tol=1e-15, abs_tol=0)   # (√β)²


def test_q_sample_has_the_closed_form_moments():
    # Monte Carlo: x_t given x_0 has mean √ᾱ_t x_0 and variance 1 − ᾱ_t (5σ bounds for 200,000 draws).
    g = torch.Generator().manual_seed(0)
    n, t = 200_000, 300
    x0 = torch.full((n, 1), 0.7, dtype=torch.float64)
    xt = diffusion.q_sample(S, x0, torch.full((n,), t), torch.randn(n, 1, generator=g, dtype=torch.float64))
    a = S.alpha_bars[t].item()
    assert abs(xt.mean().item() - math.sqrt(a) * 0.7) < 5 * math.sqrt((1 - a) / n)
    assert abs(xt.var().item() - (1 - a)) < 5 * (1 - a) * math.sqrt(2 / n)


@pytest.mark.parametrize("make", [zoo.MLPDenoiser, zoo.UNetDenoiser], ids=["mlp", "unet"])
def test_one_training_function_for_any_architecture(make):
    torch.manual_seed(0)
    X = torch.randn(64, 1, 8, 8)
    y = torch.randint(0, 10, (64,))
    losses = diffusion.train_noise_estimator(make(), X, y, schedule=S, steps=3, batch_size=8, seed=0,
                                           cond_dropout=0.5, null_cond=zoo.NULL_LABEL)
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)


def test_training_is_deterministic_for_a_seed():
    X, y = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        runs.append(diffusion.train_noise_estimator(zoo.MLPDenoiser(), X, y, schedule=S, steps=5, batch_size=8, seed=3))
    assert runs[0] == runs[1]


def test_samplers_take_any_callable_and_are_seeded():
    eps_hat = lambda x, t, c: 0.1 * x    # not even a network
    a = diffusion.ddim_sample(eps_hat, (2, 1, 4, 4), schedule=S, num_steps=10, generator=torch.Generator().manual_seed(1))
    b = diffusion.ddim_sample(eps_hat, (2, 1, 4, 4), schedule=S, num_steps=10, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == (2, 1, 4, 4)
    small = diffusion.Schedule.linear(T=20)
    x, kept = diffusion.ddpm_sample(eps_hat, (2, 1, 4, 4), schedule=small, generator=torch.Generator().manual_seed(1),
                                  keep_every=5)
    assert [t for t, _ in kept] == [15, 10, 5, 0] and torch.isfinite(x).all()


def test_ddim_with_eta_one_matches_the_ddpm_variance():
    # σ_t of DDIM at η = 1 between consecutive steps equals DDPM's β̃_t^{1/2} (Song et al., 2021, §4.1).
    small = diffusion.Schedule.linear(T=50)
    x, eps, z = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    for t in (49, 10, 1):
        ddim = diffusion.ddim_step(small, eps, t, t - 1, x, eta=1.0, noise=z)
        ddpm = diffusion.ddpm_step(small, eps, t, x, z)
        # float64: β_t = 1 − ᾱ_t/ᾱ_{t−1} cancels (β_1 = 5e-4: u/β_1 ≈ 2e-13 relative),
        # times |x| ≤ 4: a few 1e-13 (3e-13 at most over 200 draws); 1e-12, rtol=0
        assert torch.allclose(ddim, ddpm, atol=1e-12, rtol=0)


def test_guidance_interpolates_and_extrapolates():
    eps_hat = lambda x, t, c: c.reshape(-1, 1).to(x.dtype).expand_as(x)
    g = diffusion.guided(eps_hat, torch.tensor([0.0]), 3.0)
    out = g(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), torch.tensor([1.0, 2.0]))
    assert torch.equal(out, torch.tensor([[3.0] * 3, [6.0] * 3]))


def test_vae_objective_for_two_architectures():
    X = torch.randn(16, 1, 8, 8)
    for vae in (zoo.MLPVAE(), zoo.ConvVAE()):
        losses = diffusion.train_vae(vae.encoder, vae.decoder, X, parameters=vae.parameters(), steps=2,
                                   beta=1.0, batch_size=4)
        assert len(losses) == 2 and all(math.isfinite(v) for v in losses)


@pytest.mark.parametrize("call, exc, match", [
    (lambda: diffusion.q_sample(S, torch.zeros(2, 3), [0, 1000], torch.zeros(2, 3)), ValueError, r"\{0, …, 999\}"),
    (lambda: diffusion.q_sample(S, torch.zeros(2, 3), [0, -1], torch.zeros(2, 3)), ValueError, "timesteps must lie"),
    (lambda: diffusion.q_sample(S, torch.zeros(2, 3), [0.5, 1.0], torch.zeros(2, 3)), TypeError, "integers"),
    (lambda: diffusion.q_sample(S, torch.zeros(2, 3), [0, 1], torch.zeros(2, 4)), ValueError, "same shape"),
    (lambda: diffusion.q_sample(S, torch.zeros(2, 3), [0, 1, 2], torch.zeros(2, 3)), ValueError, "one timestep per example"),
    (lambda: diffusion.noise_estimation_loss(lambda x, t, c: x[:, :1], torch.zeros(2, 3), schedule=S),
     ValueError, "shape of its input"),
    (lambda: diffusion.noise_estimation_loss(lambda x, t, c: x * float("nan"), torch.zeros(2, 3), schedule=S),
     FloatingPointError, "not finite"),
    (lambda: diffusion.ddim_sample(lambda x, t, c: x[..., :1], (1, 2), schedule=S, num_steps=2), ValueError,
     "shape of its input"),
    (lambda: diffusion.ddim_sample(lambda x, t, c: x, (1, 2), schedule=S, num_steps=0), ValueError, "num_steps"),
    (lambda: diffusion.ddim_sample(lambda x, t, c: x, (1, 2), schedule=S, eta=-1.0), ValueError, "eta"),
    (lambda: diffusion.ddpm_step(S, torch.zeros(1), 1000, torch.zeros(1), torch.zeros(1)), ValueError, "timesteps"),
    (lambda: diffusion.reparameterize(torch.zeros(2), torch.zeros(2), torch.zeros(2)), ValueError, "positive"),
    (lambda: diffusion.reparameterize(torch.zeros(2), torch.ones(3), torch.zeros(2)), ValueError, "one shape"),
    (lambda: diffusion.train_noise_estimator(zoo.MLPDenoiser(), torch.zeros(4, 1, 8, 8), torch.zeros(3), schedule=S,
                                           steps=1), ValueError, "one condition per example"),
    (lambda: diffusion.train_noise_estimator(zoo.MLPDenoiser(), torch.zeros(4, 1, 8, 8), torch.zeros(4), schedule=S,
                                           steps=1, cond_dropout=0.1), ValueError, "null_cond"),
    (lambda: diffusion.Schedule(torch.tensor([0.5, 1.5])), ValueError, r"\(0, 1\)"),
])
def test_bad_input_gets_a_clear_error(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
