"""After the LAM trains: its code vectors moved to the clusters of the training transitions' actions.

The LAM trains with three binary FSQ channels, so each code is an octant of its action space. Where
the data's moves do not fall one to an octant, a plane cuts a move in two and two moves share a
code. The continuous actions still form one cluster per move, and k-means finds them: on the demo's
eight-move tabletop the held-out NMI rose from 0.71 (the octants) to 0.83-0.86 at three seeds
(NOTES.md, 2026-12-03). The model keeps training as it did; only the vectors that label video move.
"""

from __future__ import annotations

import torch

from robo_genie.datasets.loader import open_clips
from robo_genie.training.loop import frames_of

MAX_WINDOWS = 8192          # training windows whose actions are clustered (all of them, for the demo)


@torch.no_grad()
def fit_lam_codes(lam: torch.nn.Module, data_path: str, clip_len: int, device, seed: int = 0,
                  batch: int = 64) -> dict:
    """Fit `lam`'s code vectors on up to MAX_WINDOWS windows of `data_path` drawn with `seed`
    -> what was fitted on, for the bundle's training info."""
    clips = open_clips(data_path, clip_len)
    picks = torch.randperm(len(clips), generator=torch.Generator().manual_seed(seed))[:MAX_WINDOWS].tolist()
    lam.eval()
    actions = []
    for i in range(0, len(picks), batch):
        video = frames_of({"frames": torch.stack([clips[j]["frames"] for j in picks[i:i + batch]])}).to(device)
        actions.append(lam.continuous_actions(video).flatten(0, 1).cpu())
    sizes = lam.fit_codes(torch.cat(actions), seed)
    return {"windows": len(picks), "transitions_per_code": sizes.tolist()}
