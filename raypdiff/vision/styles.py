"""Styles as data: a style is a named chain of image operations (`ops: [[op, {params}], ...]`) applied to grayscale
images, so new styles are config, not code. Images are (N, H, W) uint8 in and out."""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from raypdiff.errors import ConfigError, require

# Each op maps (N, H, W) float32 images in [0, 1] (and a seeded rng) to the same shape, clipped back to [0, 1].


def invert(x, rng):
    return 1.0 - x


def blur(x, rng, sigma: float = 1.0):
    return ndimage.gaussian_filter(x, sigma=(0, sigma, sigma))


def _sobel(x):
    return np.hypot(ndimage.sobel(x, axis=1), ndimage.sobel(x, axis=2))


def edges(x, rng):
    e = _sobel(x)
    return e / np.maximum(e.max(axis=(1, 2), keepdims=True), 1e-6)


def outline(x, rng, threshold: float = 0.3):
    return (edges(x, rng) > threshold).astype(np.float32)


def pixelate(x, rng, block: int = 4):
    n, h, w = x.shape
    hb, wb = -(-h // block), -(-w // block)
    padded = np.pad(x, ((0, 0), (0, hb * block - h), (0, wb * block - w)), mode="edge")
    means = padded.reshape(n, hb, block, wb, block).mean(axis=(2, 4))
    return np.repeat(np.repeat(means, block, 1), block, 2)[:, :h, :w]


def noise(x, rng, amount: float = 0.35):
    return x + amount * rng.uniform(-1, 1, x.shape)


def stripes(x, rng, period: int = 4, vertical: bool = False):
    idx = np.arange(x.shape[2 if vertical else 1])
    on = ((idx // max(1, period // 2)) % 2 == 0).astype(np.float32)
    return x * (on[None, None, :] if vertical else on[None, :, None])


def emboss(x, rng, strength: float = 1.0):
    kernel = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], np.float32)
    return 0.5 + strength * ndimage.convolve(x, kernel[None]) / 4


def posterize(x, rng, levels: int = 3):
    return np.round(x * (levels - 1)) / (levels - 1)


def thicken(x, rng, size: int = 3):
    return ndimage.grey_dilation(x, size=(1, size, size))


def thin(x, rng, size: int = 2):
    return ndimage.grey_erosion(x, size=(1, size, size))


def checker(x, rng, period: int = 4):
    i, j = np.indices(x.shape[1:])
    return x * (((i // period + j // period) % 2) == 0)


def solarize(x, rng, threshold: float = 0.5):
    return np.where(x > threshold, 1.0 - x, x)


def dots(x, rng, period: int = 3):
    i, j = np.indices(x.shape[1:])
    return x * ((i % period == 0) & (j % period == 0))


OPS = {f.__name__: f for f in (invert, blur, edges, outline, pixelate, noise, stripes, emboss, posterize, thicken,
                               thin, checker, solarize, dots)}


@dataclass
class StyleSpec:
    name: str
    ops: list = field(default_factory=list)  # [[op, {param: value}], ...] or [op, ...], applied in order

    def __post_init__(self):
        require(bool(self.name), "style: every style needs a name")
        require(isinstance(self.ops, list) and len(self.ops) > 0, f"style {self.name}: ops must list 1+ operations")
        self.ops = [[o, {}] if isinstance(o, str) else list(o) for o in self.ops]
        for op in self.ops:
            if len(op) != 2 or op[0] not in OPS or not isinstance(op[1], dict):
                raise ConfigError(f"style {self.name}: {op!r} is not [op, {{params}}] with op one of {sorted(OPS)}")
            allowed = list(inspect.signature(OPS[op[0]]).parameters)[2:]
            bad = [k for k in op[1] if k not in allowed]
            if bad:
                raise ConfigError(f"style {self.name}: {op[0]} has no parameter {bad[0]!r} (it takes {allowed})")


DEFAULT_STYLES = [StyleSpec(n, ops) for n, ops in [
    ("inverted", ["invert"]), ("blurred", [["blur", {"sigma": 1.2}]]), ("edges", ["edges"]), ("outline", ["outline"]),
    ("pixelated", [["pixelate", {"block": 4}]]), ("noise texture", [["noise", {"amount": 0.35}]]),
    ("stripes", [["stripes", {"period": 4}]]), ("emboss", ["emboss"]), ("posterized", [["posterize", {"levels": 3}]]),
    ("thick strokes", [["thicken", {"size": 3}]]), ("thin strokes", [["thin", {"size": 2}]]),
    ("checkered", [["checker", {"period": 4}]]), ("solarized", ["solarize"]), ("dotted", [["dots", {"period": 3}]]),
]]


def resolve_styles(entries: list) -> list[StyleSpec]:
    """Config task entries of the vision domain: built-in style names (DEFAULT_STYLES) or {name, ops} dicts."""
    builtin = {s.name: s for s in DEFAULT_STYLES}
    out = []
    for entry in entries:
        if isinstance(entry, str):
            if entry not in builtin:
                raise ConfigError(f"tasks: {entry!r} is not a built-in style (one of {sorted(builtin)}); define it as "
                                  f"{{name, ops}}")
            out.append(builtin[entry])
        elif isinstance(entry, dict):
            try:
                out.append(StyleSpec(**entry))
            except TypeError as e:
                raise ConfigError(f"tasks: style {entry.get('name')!r}: {e}") from None
        else:
            raise ConfigError(f"tasks: {entry!r} is neither a style name nor a {{name, ops}} dict")
    return out


def apply(style: StyleSpec, images: np.ndarray, seed: int = 0) -> np.ndarray:
    """(N, H, W) uint8 → (N, H, W) uint8 in the style; random ops draw from `seed`."""
    require(images.ndim == 3, f"style {style.name}: images must be (N, H, W) grayscale, got shape {images.shape}")
    rng = np.random.default_rng(seed)
    x = images.astype(np.float32) / 255.0
    for op, params in style.ops:
        x = np.clip(OPS[op](x, rng, **params), 0.0, 1.0).astype(np.float32)
    return np.round(x * 255).astype(np.uint8)
