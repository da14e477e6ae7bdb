"""The VAE encoder's two outputs, lecture §3.2, (7)–(9), as SD-1.5 has them.

The lecture writes two encoders, MeanEnc_{η_mean} (7) and SDEnc_{η_SD} (8), and the
encoder's parameters as the pair η = (η_mean, η_SD) (9). SD-1.5's AutoencoderKL has one
encoder: its Encoder and the 1×1 ``quant_conv`` after it output 2·C_z channels, the
*moments*; μ is the first C_z of them and log σ² the last C_z. So MeanEnc and SDEnc are
the two halves of one network's output, and they share every parameter but the two
halves of quant_conv (``sdanatomy.ledger.diffusion`` measures it by autograd).

Shape alphabet: B batch, C_z latent channels (4 in SD-1.5), H_z, W_z the latent's size.
"""
from __future__ import annotations

import torch

__all__ = ["LOGVAR_CLAMP", "mean_enc", "sd_enc", "posterior_mean_sd"]

# diffusers' DiagonalGaussianDistribution clamps log σ² to this range before exp(½ ·).
LOGVAR_CLAMP = (-30.0, 20.0)


def _halves(moments: torch.Tensor, latent_channels: int):
    if not isinstance(moments, torch.Tensor) or not moments.is_floating_point():
        raise TypeError(f"the moments are a floating-point torch.Tensor "
                        f"(B, 2·C_z, H_z, W_z); got {type(moments).__name__}")
    if moments.dim() != 4 or moments.shape[1] != 2 * latent_channels:
        raise ValueError(f"the encoder's moments are (B, 2·C_z, H_z, W_z) with "
                         f"C_z = {latent_channels}: μ, then log σ²; "
                         f"got {tuple(moments.shape)}")
    return moments[:, :latent_channels], moments[:, latent_channels:]


def mean_enc(moments: torch.Tensor, *, latent_channels: int = 4) -> torch.Tensor:
    """μ(X) = MeanEnc(X), (7): the first C_z channels of the moments.

    moments = quant_conv(Encoder(X)): (B, 2·C_z, H_z, W_z) -> (B, C_z, H_z, W_z).
    Ledger: ``ledger.where("(7)")``.
    """
    mu, _ = _halves(moments, latent_channels)
    return mu


def sd_enc(moments: torch.Tensor, *, latent_channels: int = 4) -> torch.Tensor:
    """σ(X) = SDEnc(X), (8): exp(½ log σ²) of the last C_z channels of the moments.

    log σ² is clamped to [−30, 20] first, as diffusers does; the lecture has no clamp:
    it asks only σ > 0. Without the clamp σ = exp(½ log σ²) is 0 below log σ² ≈ −1490
    and ∞ above ≈ 1420 in float64 (float32: below ≈ −208, above ≈ 177); with it σ
    stays in [e^−15, e^10], positive and finite.
    (B, 2·C_z, H_z, W_z) -> (B, C_z, H_z, W_z). Ledger: ``ledger.where("(8)")``.
    """
    _, log_var = _halves(moments, latent_channels)
    return torch.exp(0.5 * log_var.clamp(*LOGVAR_CLAMP))


def posterior_mean_sd(moments: torch.Tensor, *, latent_channels: int = 4):
    """(μ, σ) of (7)–(8) from the encoder's moments, as (10) uses them."""
    return (mean_enc(moments, latent_channels=latent_channels),
            sd_enc(moments, latent_channels=latent_channels))
