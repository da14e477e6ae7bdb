"""Small networks of deliberately different architectures, for the demonstration of §3.

Each noise estimator has the signature ``eps_hat(x, t, c)`` and each VAE the pair
``encoder(X) -> (μ, σ)``, ``decoder(z) -> X̂``; that is all ``sdanatomy.lecture.diffusion`` ever sees.
Inputs are 8×8 grey digits (B, 1, 8, 8); conditions c are digit labels 0…9, and 10 means "none".
"""
from __future__ import annotations

import torch
from torch import nn
from sdanatomy.sd15.reference import UNet2DModel, get_timestep_embedding

NULL_LABEL = 10


def _time_features(t: torch.Tensor, width: int) -> torch.Tensor:

    return get_timestep_embedding(t, width, flip_sin_to_cos=True, downscale_freq_shift=0)


class MLPDenoiser(nn.Module):
    """ε̂ as a multilayer perceptron: the image is a vector of 64 numbers, no notion of space."""

    def __init__(self, hidden: int = 256, time_width: int = 32):
        super().__init__()
        self.time_width = time_width
        self.label = nn.Embedding(11, time_width)
        self.net = nn.Sequential(nn.Linear(64 + 2 * time_width, hidden), nn.SiLU(),
                                 nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 64))

    def forward(self, x, t, c):
        features = [x.flatten(1), _time_features(t, self.time_width).to(x.dtype), self.label(c)]
        return self.net(torch.cat(features, dim=1)).reshape(x.shape)   # (B, 64) -> (B, 1, 8, 8)


class UNetDenoiser(nn.Module):
    """ε̂ as a small convolutional U-Net: diffusers' ``UNet2DModel`` with a label embedding."""

    def __init__(self):
        super().__init__()

        # Widths 16 and 32: at 8×8 pixels this already beats the perceptron with fewer
        # parameters, and the page that trains it (ch03) runs on every test.
        self.unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(16, 32),
                                layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=8,
                                num_class_embeds=11)

    def forward(self, x, t, c):
        return self.unet(x, t, class_labels=c).sample


class MLPVAE(nn.Module):
    """Encoder and decoder as perceptrons; the latent is a vector z ∈ R^8."""

    def __init__(self, latent: int = 8, hidden: int = 128):
        super().__init__()
        self.enc = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.SiLU(), nn.Linear(hidden, 2 * latent))
        self.dec = nn.Sequential(nn.Linear(latent, hidden), nn.SiLU(), nn.Linear(hidden, 64))

    def encoder(self, X):
        mu, log_sigma = self.enc(X).chunk(2, dim=1)
        return mu, log_sigma.exp()

    def decoder(self, z):
        return self.dec(z).reshape(-1, 1, 8, 8)


class ConvVAE(nn.Module):
    """Encoder and decoder as convolutions; the latent is an image z ∈ R^{2×4×4}, like SD's."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.SiLU(),
                                 nn.Conv2d(width, width, 3, stride=2, padding=1), nn.SiLU(),
                                 nn.Conv2d(width, 4, 3, padding=1))                       # (B, 4, 4, 4)
        self.dec = nn.Sequential(nn.Conv2d(2, width, 3, padding=1), nn.SiLU(),
                                 nn.Upsample(scale_factor=2, mode="nearest"),
                                 nn.Conv2d(width, width, 3, padding=1), nn.SiLU(),
                                 nn.Conv2d(width, 1, 3, padding=1))

    def encoder(self, X):
        mu, log_sigma = self.enc(X).chunk(2, dim=1)   # (B, 2, 4, 4) each
        return mu, log_sigma.exp()

    def decoder(self, z):
        return self.dec(z)
