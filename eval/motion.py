"""What moved, and which way: a motion signature of a video from dense optical flow.

Per transition, the signature is the mean optical flow (dx, dy in pixels, OpenCV's Farneback) over
the pixels that changed. Flow measures displacement, so the same motion gives the same signature
on a red gripper over a blue table and on a grey one over wood, which pixel differences do not.
Averaging only where the frame changed keeps the static background (most of a robot scene) from
pulling every signature towards zero. A transition where nothing changed has signature (0, 0).
"""

from __future__ import annotations

import cv2
import numpy as np

CHANGE_THRESHOLD = 12        # grey levels (of 255): a pixel with a smaller change counts as static


def flow_signature(video: np.ndarray) -> np.ndarray:
    """uint8 [T+1, H, W, 3] -> [T, 2]: mean (dx, dy) flow over the changing pixels per transition."""
    grey = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in video]
    out = np.zeros((len(video) - 1, 2), np.float32)
    for t in range(len(video) - 1):
        changed = np.abs(grey[t + 1].astype(np.int16) - grey[t].astype(np.int16)) > CHANGE_THRESHOLD
        if not changed.any():
            continue
        # Small images: two pyramid levels, a 9-px window, enough for moves of a few pixels.
        flow = cv2.calcOpticalFlowFarneback(grey[t], grey[t + 1], None, 0.5, 2, 9, 3, 5, 1.1, 0)
        out[t] = flow[changed].mean(axis=0)
    return out


def signature_similarity(a: np.ndarray, b: np.ndarray, eps: float = 1e-3) -> np.ndarray:
    """Similarity of signatures [..., T, 2] in [0, 1]: 1 - |a - b| / (|a| + |b|).

    1 for the same motion (and for two still videos), 0 for opposite motions; unlike a cosine it
    also tells a 1-px move from a 5-px one, and is defined when nothing moved."""
    a, b = a.reshape(*a.shape[:-2], -1), b.reshape(*b.shape[:-2], -1)
    dist = np.linalg.norm(a - b, axis=-1)
    scale = np.linalg.norm(a, axis=-1) + np.linalg.norm(b, axis=-1)
    return np.where(scale < eps, 1.0, 1.0 - dist / np.maximum(scale, eps))
