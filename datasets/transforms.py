"""Frame geometry: every frame becomes a size x size square. The default policy centre-crops to a
square, then resizes (the view's edges are lost, nothing is distorted); `pad` letterboxes the whole
view with black bars; `stretch` resizes without keeping the aspect ratio."""

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


SQUARE_POLICIES = ("center_crop", "pad", "stretch")


def to_square(image: np.ndarray | Image.Image, size: int, policy: str = "center_crop") -> np.ndarray:
    if policy == "center_crop":
        return center_crop_resize(image, size)
    if policy not in SQUARE_POLICIES:
        raise ValueError(f"crop={policy!r}: expected one of {', '.join(SQUARE_POLICIES)}")
    img = (image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))).convert("RGB")
    w, h = img.size
    if policy == "stretch":
        return np.array(img.resize((size, size), Image.BOX if max(w, h) > size else Image.BILINEAR), np.uint8)
    scale = size / max(w, h)                          # pad: fit the longer side, centre, black bars
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    out = Image.new("RGB", (size, size))
    out.paste(img.resize((nw, nh), Image.BOX if scale < 1 else Image.BILINEAR), ((size - nw) // 2, (size - nh) // 2))
    return np.array(out, np.uint8)


def load_image(path: str | Path, size: int) -> np.ndarray:
    path = Path(path)
    try:
        with Image.open(path) as img:
            return center_crop_resize(img, size)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read this image ({e}); give a PNG or JPEG file") from e
