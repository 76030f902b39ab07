"""The vision domain's scorers: a small CNN trained here on real Fashion-MNIST (classes, and styles) and the Fréchet
distance in its feature space."""
from __future__ import annotations

import numpy as np
import pytest

from raypdiff.vision import classify
from raypdiff.vision.styles import DEFAULT_STYLES, apply


def test_class_classifier_learns(fmnist_test):
    x, y = fmnist_test
    model = classify.train(x[:3000], y[:3000], 10, steps=150, seed=0)
    acc = (classify.predict(model, x[5000:6000]) == y[5000:6000]).mean()
    assert acc >= 0.65  # chance 0.10; ~0.8 after 150 steps here
    padded = np.pad(x[5000:5010], ((0, 0), (2, 2), (2, 2)))  # a 32 px sample is cropped back to 28
    np.testing.assert_array_equal(classify.predict(model, padded), classify.predict(model, x[5000:5010]))


def test_style_classifier_learns(fmnist_test):
    x, _ = fmnist_test
    styles = DEFAULT_STYLES[:4]
    imgs = np.concatenate([apply(s, x[:600], seed=0) for s in styles])
    labels = np.repeat(np.arange(len(styles)), 600)
    model = classify.train(imgs, labels, len(styles), steps=80, seed=0)
    held = np.concatenate([apply(s, x[1000:1200], seed=1) for s in styles])
    assert (classify.predict(model, held) == np.repeat(np.arange(len(styles)), 200)).mean() >= 0.9


def test_frechet():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2000, 4)), rng.normal(size=(2000, 4))
    assert classify.frechet(a, a) == pytest.approx(0, abs=1e-6)
    assert classify.frechet(a, b) < 0.05  # same distribution
    shifted = classify.frechet(a, b + 1.0)  # mean shift of 1 in each of 4 dims → ~4
    assert shifted == pytest.approx(4.0, abs=0.3)
    assert classify.frechet(b + 1.0, a) == pytest.approx(shifted, rel=1e-6)
    assert classify.frechet(a, 2 * b) == pytest.approx(4 * (1 + 4 - 2 * 2), abs=0.5)  # var 1 vs 4: (1-2)^2 per dim
