"""Scoring images of the vision domain: a small CNN trained here (on Fashion-MNIST's classes, or on styles), its
accuracy, and two distances in its feature space: Fréchet (FID's formula) and the kernel distance (KID's), neither on
Inception features."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


class SmallCNN(nn.Module):
    """(B, 1, 28, 28) → (B, classes) logits; `features` gives the (B, 128) layer the Fréchet distance reads."""

    def __init__(self, classes: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 32, 14, 14)
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 64, 7, 7)
            nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU())
        self.head = nn.Linear(128, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def crop28(images: np.ndarray) -> np.ndarray:
    """(N, S, S) → the centred (N, 28, 28): generated 32 px samples back to Fashion-MNIST's frame."""
    off = (images.shape[-1] - 28) // 2
    return images[:, off:off + 28, off:off + 28]


def _tensor(images: np.ndarray) -> torch.Tensor:
    return torch.tensor(crop28(images), dtype=torch.float32)[:, None] / 255.0  # (N, 1, 28, 28)


def train(images: np.ndarray, labels: np.ndarray, classes: int, steps: int = 1500, batch_size: int = 128,
          lr: float = 1e-3, seed: int = 0) -> SmallCNN:
    """AdamW on random batches of (N, 28, 28) uint8 images and their class ids."""
    torch.manual_seed(seed)
    model, x, y = SmallCNN(classes), _tensor(images), torch.as_tensor(labels, dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (min(batch_size, len(x)),), generator=gen)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return model.eval()


@torch.no_grad()
def _run(model: SmallCNN, images: np.ndarray, fn) -> np.ndarray:
    x = _tensor(images)
    return torch.cat([fn(x[i:i + 512]) for i in range(0, len(x), 512)]).numpy()


def predict(model: SmallCNN, images: np.ndarray) -> np.ndarray:
    return _run(model, images, model).argmax(1)  # (N,)


def features(model: SmallCNN, images: np.ndarray) -> np.ndarray:
    return _run(model, images, model.features)  # (N, 128)


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two (N, D) feature sets:
    |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))."""
    from scipy import linalg

    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root, _ = linalg.sqrtm(s_a @ s_b, disp=False)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * root.real))


def cubic_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """KID's kernel between (N, D) and (M, D) features: (a·b / D + 1)^3, in float64 → (N, M)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a @ b.T / a.shape[1] + 1.0) ** 3


def off_diagonal_mean(k: np.ndarray) -> float:
    """The mean of a square kernel matrix without its diagonal (a set's kernel with itself, pairs of distinct rows)."""
    n = len(k)
    return float((k.sum() - np.trace(k)) / (n * (n - 1)))


def kid(a: np.ndarray, b: np.ndarray) -> float:
    """Kernel distance between two (N, D) feature sets: the unbiased MMD² under the cubic kernel (Bińkowski et al.,
    2018). Unbiased at every set size, unlike the Fréchet distance, so subsets of the sets estimate the same value."""
    return float(off_diagonal_mean(cubic_kernel(a, a)) + off_diagonal_mean(cubic_kernel(b, b))
                 - 2 * cubic_kernel(a, b).mean())
