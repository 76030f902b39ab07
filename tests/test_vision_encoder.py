"""The image condition encoder: torchvision's MobileNetV2 ImageNet weights load exactly into our copy of the network,
and its pooled features of k style images tell the styles apart; bad weights or images → one ConfigError."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from raypdiff.config import ConfigError
from raypdiff.vision.encoders import MobileNetEncoder, MobileNetV2, weights_path
from raypdiff.vision.styles import DEFAULT_STYLES, apply


@pytest.fixture(scope="module")
def encoder():
    try:
        weights_path()
    except ConfigError as e:
        pytest.skip(str(e))
    return MobileNetEncoder(size=64)


def test_weights_load_exactly():
    try:
        state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    except ConfigError as e:
        pytest.skip(str(e))
    net = MobileNetV2()
    assert set(net.state_dict()) == set(state)  # every tensor by name, nothing left over
    net.load_state_dict(state)
    assert sum(p.numel() for p in net.parameters()) == 3_504_872  # torchvision's MobileNetV2 (width 1.0)


def test_style_sets_separate(encoder, fmnist_test):
    x, _ = fmnist_test
    styles = DEFAULT_STYLES[:6]
    sets = {s.name: encoder.condition([apply(s, x[i:i + 2], seed=i) for i in range(0, 32, 2)]) for s in styles}
    assert all(c.shape == (16, 1280) and c.dtype == np.float32 for c in sets.values())
    centroids = np.stack([c[:8].mean(0) for c in sets.values()])
    hits = [(np.argmax(c[8:] @ centroids.T, 1) == i).mean() for i, c in enumerate(sets.values())]
    assert np.mean(hits) >= 0.8  # chance: 1/6


def test_encode_shapes(encoder):
    gray = encoder.encode(np.zeros((3, 28, 28), np.uint8))
    rgb = encoder.encode(np.zeros((3, 28, 28, 3), np.uint8))
    assert gray.shape == rgb.shape == (3, 1280)
    np.testing.assert_allclose(np.linalg.norm(gray, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(gray, rgb, atol=1e-5)  # grayscale is the same image in three channels


@pytest.mark.parametrize("shape", [(0, 28, 28), (28, 28), (2, 28, 28, 4)])
def test_encode_bad_images(encoder, shape):
    with pytest.raises(ConfigError, match="images must be"):
        encoder.encode(np.zeros(shape, np.uint8))


def test_bad_weights(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        MobileNetEncoder(str(tmp_path / "none.pth"))
    bad = tmp_path / "other.pth"
    torch.save({"w": torch.zeros(2)}, bad)
    with pytest.raises(ConfigError, match="not torchvision's MobileNetV2 weights"):
        MobileNetEncoder(str(bad))
