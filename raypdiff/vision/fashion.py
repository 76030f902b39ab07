"""Fashion-MNIST, read from the Debian package `dataset-fashion-mnist` (or any folder holding its four IDX files)."""
from __future__ import annotations

import gzip
from pathlib import Path
from typing import Literal, Optional

import numpy as np

from raypdiff.config import ConfigError

CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]
DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
          "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def _idx(path: Path, dims: int) -> np.ndarray:
    """An IDX file (big-endian header: magic 0x0000 08 <dims>, then one uint32 per dimension) as uint8."""
    raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 + 4 * dims or raw[2] != 8 or raw[3] != dims:
        raise ConfigError(f"{path}: not an IDX file of uint8 with {dims} dimension(s)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(dims))
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * dims)
    if data.size != int(np.prod(shape)):
        raise ConfigError(f"{path}: truncated ({data.size} of {int(np.prod(shape))} values)")
    return data.reshape(shape)


def _present(gz: Path) -> Path:
    """The .gz file, or an un-gzipped copy beside it."""
    for f in (gz, gz.with_suffix("")):
        if f.is_file():
            return f
    raise ConfigError(f"Fashion-MNIST not found: no {gz.name} in {gz.parent}; `apt-get install dataset-fashion-mnist` "
                      f"(Debian) or set vision.data_dir to a folder with its IDX files")


def load(split: Literal["train", "test"], root: Optional[str] = None) -> tuple[np.ndarray, np.ndarray]:
    """(N, 28, 28) uint8 images and (N,) int64 class ids of CLASSES."""
    folder = Path(root or DEBIAN_DIR)
    images, labels = (_present(folder / name) for name in _FILES[split])
    x, y = _idx(images, 3), _idx(labels, 1).astype(np.int64)
    if len(x) != len(y) or x.shape[1:] != (28, 28) or y.max(initial=0) >= len(CLASSES):
        raise ConfigError(f"{folder}: the {split} images and labels do not match Fashion-MNIST's shapes")
    return x, y
