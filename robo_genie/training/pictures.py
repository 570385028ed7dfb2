"""Pictures TensorBoard shows while a part trains: the tokenizer's reconstructions, and the dynamics
model's next frames under the clip's own action and under another one."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from robo_genie.eval.report import tile
from robo_genie.play import to_uint8
from robo_genie.training.loop import frames_of

ROWS = 4        # clips per picture


def tokenizer_picture(model: nn.Module, batch: dict) -> np.ndarray:
    """Rows: clips; columns: the frame, its reconstruction from the tokens."""
    video = frames_of(batch)[:ROWS, :1]
    recon = model.decode(model.encode(video)).clamp(0, 1)
    return tile(to_uint8(torch.stack([video[:, 0], recon[:, 0]], 1)))


def dynamics_picture_fn(tokenizer: nn.Module, inputs):
    """Rows: clips; columns: frame t, the true frame t+1, the model's frame t+1 under the clip's own
    action, and under the action of the next clip in the batch (if the two predictions look alike,
    the model is not following its actions)."""
    def picture(model: nn.Module, batch: dict) -> np.ndarray:
        tokens, actions = inputs(batch)
        tokens, actions = tokens[:ROWS, :2], actions[:ROWS, :1]
        other = actions.roll(1, 0)
        own = model.sample_next(tokens[:, :1], actions, generator=torch.Generator(tokens.device).manual_seed(0))
        swapped = model.sample_next(tokens[:, :1], other, generator=torch.Generator(tokens.device).manual_seed(0))
        g = tokenizer.grid
        frames = torch.stack([tokens[:, 0], tokens[:, 1], own, swapped], 1)      # [R, 4, S]
        decoded = tokenizer.decode(frames.reshape(-1, 1, g, g))[:, 0].clamp(0, 1)
        return tile(to_uint8(decoded.reshape(*frames.shape[:2], *decoded.shape[1:])))
    return picture
