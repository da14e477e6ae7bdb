"""Timestep embedding, lecture §6.7, eqs. (28)–(29): the noise level t as a vector.

(28) turns t into sinusoids of R frequencies ω_r = ω_0 β^{r−1}; (29) passes them through
a two-layer MLP. In SD-1.5 (diffusers' ``Timesteps(320, flip_sin_to_cos=True,
downscale_freq_shift=0)`` then ``TimestepEmbedding(320, 1280)``):

* R = 160, ω_0 = 1 and β = 10000^{−1/R}, so ω_r = 10000^{−(r−1)/160}, r = 1, …, 160;
* the 2R components are ordered [cos ω_1 t, …, cos ω_R t, sin ω_1 t, …, sin ω_R t] — all
  cosines, then all sines — not interleaved per frequency as (28) is printed;
* U_1 ∈ R^{1280×320}, U_2 ∈ R^{1280×1280}: d_h = d_t = 1280.

diffusers evaluates (28) in float32 whatever the model's dtype; the functions here
compute in the dtype they are given (float64 by default for a Python or integer t).
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from sdanatomy.lecture.layers import _check_theta, linear, silu, sub

R_SD15 = 160           # half of block_out_channels[0] = 320
MAX_PERIOD = 10000     # diffusers' max_period: β = MAX_PERIOD^{−1/(R − freq_shift)}


def _times(t, dtype) -> tuple[torch.Tensor, bool]:
    """t as a float vector (B,), and whether it was a scalar."""
    if isinstance(t, bool) or not isinstance(t, (int, float, torch.Tensor)):
        raise TypeError(f"TimestepEmbedding takes t ∈ R (a number, or a tensor of "
                        f"shape () or (B,)); got {type(t).__name__}")
    t = torch.as_tensor(t)
    if t.dim() > 1:
        raise ValueError(f"TimestepEmbedding takes a scalar t ∈ R or a batch of them "
                         f"(B,); got shape {tuple(t.shape)}")
    if dtype is None:
        dtype = t.dtype if t.is_floating_point() else torch.float64
    return t.to(dtype).reshape(-1), t.dim() == 0


def frequencies(R: int = R_SD15, *, omega0: float = 1.0, beta: float | None = None,
                dtype=torch.float64) -> torch.Tensor:
    """ω_r = ω_0 β^{r−1}, r = 1, …, R (Def. 6.12); SD-1.5: ω_0 = 1, β = 10000^{−1/R}."""
    if isinstance(R, bool) or not isinstance(R, int) or R < 1:
        raise ValueError(f"the embedding needs R ≥ 1 frequencies "
                         f"(2R components, (28)); got R={R!r}")
    if not omega0 > 0 or (beta is not None and not beta > 0):
        raise ValueError(f"the frequencies ω_r = ω_0 β^(r−1) need ω_0 > 0 and β > 0; "
                         f"got ω_0={omega0}, β={beta}")
    beta = MAX_PERIOD ** (-1 / R) if beta is None else beta
    r = torch.arange(1, R + 1, dtype=dtype)
    return omega0 * torch.as_tensor(beta, dtype=dtype) ** (r - 1)


def sinusoidal_embedding_as_printed(t, *, R: int = R_SD15, omega0: float = 1.0,
                                    beta: float | None = None,
                                    dtype=None) -> torch.Tensor:
    """(28) as printed: [cos ω_1 t, sin ω_1 t, …, cos ω_R t, sin ω_R t], interleaved.

    Not the order SD-1.5 uses (ledger: *differs*). t: () or (B,) -> (2R,) or (B, 2R)
    """
    t, scalar = _times(t, dtype)
    omega = frequencies(R, omega0=omega0, beta=beta, dtype=t.dtype)
    angle = t[:, None] * omega[None, :]                              # (B, R): ω_r t
    e = torch.stack([torch.cos(angle), torch.sin(angle)], dim=-1)    # (B, R, 2)
    e = e.reshape(len(t), 2 * R)                       # (28): cos ω_1t, sin ω_1t, …
    return e[0] if scalar else e


def sinusoidal_embedding(t, *, R: int = R_SD15, omega0: float = 1.0,
                         beta: float | None = None, dtype=None) -> torch.Tensor:
    """(28) in SD-1.5's order: [cos ω_1 t, …, cos ω_R t, sin ω_1 t, …, sin ω_R t].

    Mirrors diffusers' Timesteps(2R, flip_sin_to_cos=True, downscale_freq_shift=0).
    t: () or (B,) -> (2R,) or (B, 2R)
    """
    t, scalar = _times(t, dtype)
    omega = frequencies(R, omega0=omega0, beta=beta, dtype=t.dtype)
    angle = t[:, None] * omega[None, :]                              # (B, R): ω_r t
    e = torch.cat([torch.cos(angle), torch.sin(angle)], dim=-1)      # (B, 2R): cos, sin
    return e[0] if scalar else e


TIME_KEYS = ("linear_1.weight", "linear_1.bias", "linear_2.weight", "linear_2.bias")


def time_mlp(theta: Mapping, e: torch.Tensor) -> torch.Tensor:
    """The MLP of (29), U_2 SiLU(U_1 e + b_1) + b_2: diffusers' TimestepEmbedding.

    e: (…, 2R) -> (…, d_t); theta: linear_1.weight U_1 (d_h, 2R), linear_1.bias b_1
    (d_h,), linear_2.weight U_2 (d_t, d_h), linear_2.bias b_2 (d_t,)
    """
    _check_theta(theta, "TimestepEmbedding",
                 "(29): U_1, b_1 as linear_1, U_2, b_2 as linear_2", TIME_KEYS)
    h = silu(linear(sub(theta, "linear_1"), e))      # (29): SiLU(U_1 e + b_1), (…, d_h)
    return linear(sub(theta, "linear_2"), h)         # (29): U_2 h + b_2, (…, d_t)


def timestep_embedding(theta: Mapping, t, *, omega0: float = 1.0,
                       beta: float | None = None, dtype=None) -> torch.Tensor:
    """TimestepEmbedding_Θ(t), Def. 6.12, eq. (29): time_mlp(Θ, e(t)), e from (28).

    t: () or (B,) -> (d_t,) or (B, d_t); R is read off Θ: U_1 ∈ R^{d_h×2R}.
    """
    U_1 = theta.get("linear_1.weight") if isinstance(theta, Mapping) else None
    if isinstance(U_1, torch.Tensor):
        two_R = U_1.shape[-1]
        if two_R % 2:
            raise ValueError(f"TimestepEmbedding: U_1 ∈ R^(d_h×2R) needs an even "
                             f"number of columns; got {two_R}")
        dtype = U_1.dtype if dtype is None else dtype
        e = sinusoidal_embedding(t, R=two_R // 2, omega0=omega0, beta=beta,
                                 dtype=dtype)                               # (28)
        return time_mlp(theta, e)                                           # (29)
    return time_mlp(theta, torch.zeros(0))   # raises the error that names what Θ lacks


def periods(R: int = R_SD15) -> torch.Tensor:
    """The period 2π/ω_r of each frequency, in timesteps (float64)."""
    return 2 * math.pi / frequencies(R)
