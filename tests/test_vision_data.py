"""The vision domain's data: Fashion-MNIST from its Debian package, and styles as data (ops tables on tiny images)."""
from __future__ import annotations

import re

import numpy as np
import pytest

from raypdiff.config import ConfigError
from raypdiff.vision import fashion
from raypdiff.vision.styles import DEFAULT_STYLES, OPS, StyleSpec, apply


def test_fashion_mnist_loads(fmnist_test):
    x, y = fmnist_test
    assert x.shape == (10000, 28, 28) and x.dtype == np.uint8 and y.dtype == np.int64
    assert y[:5].tolist() == [9, 2, 1, 1, 6]  # the official t10k order: ankle boot, pullover, trouser, trouser, shirt
    assert np.bincount(y).tolist() == [1000] * 10 and len(fashion.CLASSES) == 10


def test_fashion_mnist_missing(tmp_path):
    with pytest.raises(ConfigError, match="apt-get install dataset-fashion-mnist"):
        fashion.load("train", str(tmp_path))


def test_fashion_mnist_truncated(tmp_path):
    import gzip

    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(bytes([0, 0, 8, 3]) + (10).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + bytes(100))
    with gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + bytes(10))
    with pytest.raises(ConfigError, match="truncated"):
        fashion.load("test", str(tmp_path))


RAMP = (np.arange(16, dtype=np.float32).reshape(1, 4, 4) * 17).astype(np.uint8)  # 0, 17, ..., 255
SQUARE = np.zeros((1, 6, 6), np.uint8)
SQUARE[0, 2:4, 2:4] = 255

# (style ops, input, expected output)
OPS_CASES = [
    (["invert"], RAMP, 255 - RAMP),
    ([["posterize", {"levels": 2}]], RAMP, np.where(RAMP >= 128, 255, 0).astype(np.uint8)),
    ([["pixelate", {"block": 2}]], np.array([[[0, 255], [255, 0]]], np.uint8), np.full((1, 2, 2), 128, np.uint8)),
    ([["thicken", {"size": 3}]], SQUARE, np.pad(np.full((1, 4, 4), 255, np.uint8), ((0, 0), (1, 1), (1, 1)))),
    ([["thin", {"size": 2}]], SQUARE, np.pad(np.array([[[0, 0], [0, 255]]], np.uint8), ((0, 0), (2, 2), (2, 2)))),
    ([["stripes", {"period": 2}]], np.full((1, 4, 2), 255, np.uint8),
     np.array([[[255, 255], [0, 0], [255, 255], [0, 0]]], np.uint8)),
    ([["solarize", {"threshold": 0.5}]], np.array([[[0, 100, 200, 255]]], np.uint8),
     np.array([[[0, 100, 55, 0]]], np.uint8)),
    ([["dots", {"period": 2}]], np.full((1, 2, 2), 200, np.uint8), np.array([[[200, 0], [0, 0]]], np.uint8)),
    (["invert", "invert"], RAMP, RAMP),
]


@pytest.mark.parametrize("ops,images,expected", OPS_CASES, ids=[str(c[0]) for c in OPS_CASES])
def test_style_ops(ops, images, expected):
    np.testing.assert_array_equal(apply(StyleSpec("s", ops), images), expected)


def test_default_styles_are_distinct_and_keep_shape(fmnist_test):
    x = fmnist_test[0][:32]
    out = {s.name: apply(s, x, seed=0) for s in DEFAULT_STYLES}
    assert len(out) >= 12 and {op for s in DEFAULT_STYLES for op, _ in s.ops} == set(OPS)
    for name, img in out.items():
        assert img.shape == x.shape and img.dtype == np.uint8, name
        assert not np.array_equal(img, x), name
    names = list(out)
    for i, a in enumerate(names):  # every style differs from every other on real images
        for b in names[i + 1:]:
            assert np.abs(out[a].astype(int) - out[b].astype(int)).mean() > 2, (a, b)
    noisy = next(s for s in DEFAULT_STYLES if s.name == "noise texture")
    np.testing.assert_array_equal(apply(noisy, x, seed=1), apply(noisy, x, seed=1))  # seeded
    assert not np.array_equal(apply(noisy, x, seed=1), apply(noisy, x, seed=2))


# (ops, text the ConfigError must contain)
BAD_STYLES = [
    ([], "ops must list 1+ operations"),
    (["sepia"], "is not [op, {params}]"),
    ([["blur", {"radius": 2}]], "blur has no parameter 'radius'"),
    ([["blur", 2]], "is not [op, {params}]"),
]


@pytest.mark.parametrize("ops,match", BAD_STYLES, ids=[m for _, m in BAD_STYLES])
def test_bad_style(ops, match):
    with pytest.raises(ConfigError, match=re.escape(match)):
        StyleSpec("bad", ops)


def test_apply_refuses_colour_images():
    with pytest.raises(ConfigError, match=r"\(N, H, W\) grayscale"):
        apply(DEFAULT_STYLES[0], np.zeros((2, 4, 4, 3), np.uint8))
