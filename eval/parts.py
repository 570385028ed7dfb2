"""Held-out measurements of the individual parts: tokenizer reconstruction, LAM action recovery."""

from __future__ import annotations

import numpy as np
import torch
from robo_genie.datasets.shards import FrameShards
from robo_genie.eval.metrics import normalized_mutual_info, psnr

from robo_genie.models.lam import infer_actions_windowed


@torch.no_grad()
def tokenizer_psnr(tokenizer: torch.nn.Module, clips: np.ndarray, device, window: int, batch: int = 8) -> float:
    """Mean per-frame PSNR (dB) of encode -> decode over uint8 clips [N, T, H, W, 3].

    Frame t is coded together with the frames before it in a window of `window` frames (the clip
    length the tokenizer was trained on), as pre-tokenisation and the world model use it."""
    scores = []
    for i in range(0, len(clips), batch):
        video = torch.from_numpy(clips[i:i + batch]).float().div(255).to(device)
        recon = torch.stack([tokenizer.decode(tokenizer.encode(video[:, max(0, t - window + 1):t + 1]))[:, -1]
                             for t in range(video.shape[1])], dim=1)
        scores.append(psnr(recon, video).flatten().cpu())
    return float(torch.cat(scores).mean())


@torch.no_grad()
def lam_action_agreement(lam: torch.nn.Module, data_path: str, window: int, num_actions: int,
                         device) -> dict:
    """NMI between the LAM's codes and the recorded labels (e.g. scripted motion primitives),
    over every labelled transition of every episode, plus the code-by-label contingency table."""
    shards = FrameShards(data_path)
    if not shards.has("labels"):
        raise ValueError(f"{data_path}: has no per-step labels to compare the LAM's codes with")
    codes, labels = [], []
    for e in range(len(shards.episodes)):
        video = torch.from_numpy(shards.read(e)).float().div(255).to(device)
        codes.append(infer_actions_windowed(lam, video, window).cpu().numpy())
        labels.append(shards.read(e, key="labels")[:-1])
    codes, labels = np.concatenate(codes), np.concatenate(labels)
    keep = labels >= 0
    codes, labels = codes[keep], labels[keep]
    names = shards.manifest.get("label_names") or [str(i) for i in range(labels.max() + 1)]
    table = np.zeros((num_actions, len(names)), dtype=int)
    np.add.at(table, (codes, labels), 1)
    return {"nmi": normalized_mutual_info(codes, labels), "n_transitions": len(codes),
            "codes_used": int((table.sum(1) > 0).sum()), "label_names": list(names),
            "contingency": table.tolist()}
