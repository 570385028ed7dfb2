"""Object silhouettes and how far apart two of them are.

Ground truth comes from MuJoCo's segmentation. A generated frame has none, so the object is found by
colour: its colour is read from the prompt frame (median over its true pixels) and the colour
distance threshold is the most tolerant one that (nearly) best reproduces the true silhouette on
that same prompt frame
(a per-episode calibration, since colours and lighting are randomised). Applied to the physics
frames, the same classifier gives the ceiling the probe can reach (`silhouette_ceiling`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

_THRESHOLDS = np.linspace(0.005, 0.15, 30)      # candidate chromaticity distances


def chromaticity(frames: np.ndarray) -> np.ndarray:
    x = frames.astype(np.float32)
    return x / x.sum(-1, keepdims=True).clip(1.0)


@dataclass
class ColourModel:
    colour: np.ndarray              # [3] chromaticity, sums to 1
    threshold: float

    def mask(self, frames: np.ndarray) -> np.ndarray:
        """uint8 [..., H, W, 3] -> bool [..., H, W]."""
        return np.linalg.norm(chromaticity(frames) - self.colour, axis=-1) <= self.threshold


def fit_colour_model(frame: np.ndarray, truth: np.ndarray) -> ColourModel | None:
    """Calibrate on one frame and its true mask; None when the object is not visible in it."""
    if truth.sum() == 0:
        return None
    chroma = chromaticity(frame)
    colour = np.median(chroma[truth], axis=0)
    dist = np.linalg.norm(chroma - colour, axis=-1)
    scores = np.array([iou(dist <= t, truth) for t in _THRESHOLDS])
    # the most tolerant threshold that is (nearly) as good as the best: generated frames are blurrier
    # and shaded differently than the prompt they are compared with
    return ColourModel(colour, float(_THRESHOLDS[np.flatnonzero(scores >= scores.max() - 0.02).max()]))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two masks; 1 when both are empty (they agree there is nothing)."""
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def _boundary(mask: np.ndarray) -> np.ndarray:
    m = mask.astype(np.uint8)
    return (m - cv2.erode(m, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0)) > 0


def boundary_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Average symmetric distance (pixels) between the boundaries of two masks: the mean, over the
    boundary pixels of each, of the distance to the nearest boundary pixel of the other. 0 when both
    are empty; the image diagonal when only one is (the object vanished or appeared)."""
    ba, bb = _boundary(a), _boundary(b)
    if not ba.any() and not bb.any():
        return 0.0
    if not ba.any() or not bb.any():
        return float(np.hypot(*a.shape))
    # distance from every pixel to the nearest boundary pixel of the other mask
    to_b = cv2.distanceTransform((~bb).astype(np.uint8), cv2.DIST_L2, 5)
    to_a = cv2.distanceTransform((~ba).astype(np.uint8), cv2.DIST_L2, 5)
    return float((to_b[ba].sum() + to_a[bb].sum()) / (ba.sum() + bb.sum()))
