"""Frame geometry: centre-crop to a square, then resize (the one resize policy of the toolkit)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def center_crop_resize(image: np.ndarray | Image.Image, size: int) -> np.ndarray:
    """Any HxWx3 image -> size x size x 3 uint8 (centre square crop, then bilinear/box resize)."""
    img = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    img = img.convert("RGB")
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    img = img.crop((left, top, left + side, top + side))
    if side != size:
        img = img.resize((size, size), Image.BOX if side > size else Image.BILINEAR)
    return np.array(img, dtype=np.uint8)


def load_image(path: str | Path, size: int) -> np.ndarray:
    path = Path(path)
    try:
        with Image.open(path) as img:
            return center_crop_resize(img, size)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read this image ({e}); give a PNG or JPEG file") from e
