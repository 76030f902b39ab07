"""Style images handed to `raypdiff generate --style-images DIR`: every image file in the folder, checked and read as
(N, 28, 28) uint8 grayscale, the frame the style zoo's conditions were embedded from."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from raypdiff.config import ConfigError

SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MIN_SIDE = 16  # smaller images carry too little of a style to resize up from


def read_style_images(folder: str | Path, size: int = 28) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    p = Path(folder)
    if not p.is_dir():
        raise ConfigError(f"--style-images: no such folder {p}")
    files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in SUFFIXES)
    if not files:
        raise ConfigError(f"--style-images {p}: no images in it (looked for {', '.join(SUFFIXES)})")
    out = []
    for f in files:
        try:
            with Image.open(f) as im:
                im.load()
                gray = im.convert("L")
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise ConfigError(f"--style-images: {f} is not a readable image ({type(e).__name__})") from None
        if min(gray.size) < MIN_SIDE:
            raise ConfigError(f"--style-images: {f} is {gray.size[0]}x{gray.size[1]} px; style images need at least "
                              f"{MIN_SIDE} px a side")
        out.append(np.asarray(gray.resize((size, size), Image.BILINEAR)))
    return np.stack(out)  # (N, size, size)
