"""A real dataset that ships inside a package, and an independent judge of generated digits.

scikit-learn's handwritten digits (1,797 images of 8×8 pixels, 17 grey levels, from the UCI
collection) are small enough to train diffusion models on two CPU cores in minutes. The judge
is a classifier trained on *real* digits only, never on generated ones, so its verdict on a
generated image is independent of the model that made it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def load_digits(size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 1, size, size) in [−1, 1] (float32) and labels (N,) from ``sklearn.datasets``.

    ``size`` > 8 enlarges the 8×8 originals by bilinear interpolation (smooth strokes, no new detail).
    """
    from sklearn.datasets import load_digits as sklearn_digits

    if size < 8 or size % 8:
        raise ValueError(f"size must be a multiple of 8 (the originals are 8×8); got {size}")
    bunch = sklearn_digits()
    X = torch.tensor(bunch.images, dtype=torch.float32)[:, None] / 8.0 - 1.0   # 0…16 -> −1…1
    if size != 8:
        X = F.interpolate(X, size=(size, size), mode="bilinear", align_corners=False).clamp(-1, 1)
    return X, torch.tensor(bunch.target, dtype=torch.long)


def to_original_scale(images: torch.Tensor) -> torch.Tensor:
    """Images in [−1, 1] of any multiple of 8 pixels -> (N, 64) in the originals' 0…16 scale."""
    if images.dim() != 4 or images.shape[1] != 1 or images.shape[-1] % 8 or images.shape[-2] % 8:
        raise ValueError(f"expected grey images (N, 1, 8k, 8k); got {tuple(images.shape)}")
    small = F.adaptive_avg_pool2d(images.float(), (8, 8))        # area average back to 8×8
    return ((small.clamp(-1, 1) + 1.0) * 8.0).flatten(1)


@dataclass
class Judge:
    """A support-vector classifier of real 8×8 digits; ``accuracy`` is on real digits it never saw."""

    model: object
    accuracy: float

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(self.model.predict(to_original_scale(images).numpy()), dtype=torch.long)

    def conditional_accuracy(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        """The fraction of images that the judge reads as the digit they were generated for."""
        return (self.predict(images) == labels).float().mean().item()


def train_judge(seed: int = 0) -> Judge:
    """Train the judge on half the real digits and measure it on the other half (seconds)."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split
    from sklearn.svm import SVC

    bunch = sklearn_digits()
    X_train, X_test, y_train, y_test = train_test_split(
        bunch.data, bunch.target, test_size=0.5, random_state=seed, stratify=bunch.target)
    model = SVC(gamma=0.001, C=10.0).fit(X_train, y_train)
    return Judge(model, float((model.predict(X_test) == y_test).mean()))


def diversity(images: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean distance between two generated images of the same digit, relative to the same figure
    for real digits (1.0: as varied as the data; near 0: the same image again and again)."""
    real, real_labels = load_digits(images.shape[-1])

    def spread(X, y):
        per_digit = []
        for d in y.unique():
            V = X[y == d].flatten(1)
            if len(V) > 1:
                D = torch.cdist(V, V)
                per_digit.append(D.sum() / (len(V) * (len(V) - 1)))
        if not per_digit:
            raise ValueError("diversity needs at least two images of one digit")
        return torch.stack(per_digit).mean()

    return (spread(images.float(), labels) / spread(real, real_labels)).item()
