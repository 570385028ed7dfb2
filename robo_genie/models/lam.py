"""Latent action model (LAM): infers a discrete action between consecutive frames, unsupervised.

The encoder reads frames x_1..x_{t+1} and emits one latent action a_t per transition, quantised
to |A| codes. The decoder sees only frames x_1..x_t plus the latent actions (added to the frame
tokens) and predicts x_{t+1} in pixel space. The only path from x_{t+1} to the decoder is the
tiny action bottleneck, so the codes have to describe what changed. At inference only the
encoder and codebook are used (to label video with actions).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robo_genie.config import LAMConfig
from robo_genie.models.quantizer import Quantizer, codebook_stats
from robo_genie.models.st_transformer import STTransformer
from robo_genie.models.tokenizer import patchify, unpatchify


class LatentActionModel(nn.Module):
    def __init__(self, cfg: LAMConfig, image_size: int, max_frames: int):
        super().__init__()
        if image_size % cfg.patch:
            raise ValueError(f"image_size {image_size} is not a multiple of lam.patch {cfg.patch}")
        self.cfg = cfg
        self.grid = image_size // cfg.patch
        n, patch_dim = self.grid ** 2, 3 * cfg.patch ** 2
        enc, dec = cfg.encoder, cfg.decoder
        self.enc_in = nn.Linear(patch_dim * (2 if cfg.diff_input else 1), enc.dim)
        self.encoder = STTransformer(enc.dim, enc.depth, enc.heads, n, max_frames, enc.mlp_ratio)
        self.to_action = nn.Sequential(nn.LayerNorm(enc.dim), nn.Linear(enc.dim, cfg.code_dim))
        self.quantizer = Quantizer(cfg.code_dim, cfg.num_actions, cfg.commitment_weight,
                                   cfg.ema_decay, cfg.dead_code_threshold)
        self.dec_in = nn.Linear(patch_dim, dec.dim)
        self.action_in = nn.Linear(cfg.code_dim, dec.dim)
        self.decoder = STTransformer(dec.dim, dec.depth, dec.heads, n, max_frames, dec.mlp_ratio)
        self.dec_out = nn.Linear(dec.dim, patch_dim)

    # -- encoder ------------------------------------------------------------------------------
    def encode_continuous(self, video: torch.Tensor) -> torch.Tensor:
        """Video [B, T, H, W, 3] -> continuous actions [B, T-1, code_dim] (a_t for x_t -> x_{t+1})."""
        x = patchify(video, self.cfg.patch)
        if self.cfg.diff_input:
            diff = torch.cat([torch.zeros_like(x[:, :1]), x[:, 1:] - x[:, :-1]], dim=1)
            x = torch.cat([x, diff], dim=-1)
        h = self.encoder(self.enc_in(x))          # causal: output at frame t+1 sees frames <= t+1
        return self.to_action(h[:, 1:].mean(dim=2))

    def infer_actions(self, video: torch.Tensor) -> torch.Tensor:
        """Video [B, T, H, W, 3] -> action codes [B, T-1] in [0, |A|)."""
        _, idx, _ = self.quantizer(self.encode_continuous(video))
        return idx

    # -- decoder ------------------------------------------------------------------------------
    def decode(self, context: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Frames x_1..x_t [B, t, H, W, 3] + action vectors [B, t, code_dim] -> x_2..x_{t+1}."""
        patches = patchify(context, self.cfg.patch)
        h = self.dec_in(patches) + self.action_in(actions)[:, :, None]
        logits = self.dec_out(self.decoder(h))
        if self.cfg.residual_pixels:
            logits = logits + torch.logit(patches.float().clamp(1e-3, 1 - 1e-3)).to(logits.dtype)
        return unpatchify(torch.sigmoid(logits), self.cfg.patch, self.grid)

    def forward(self, video: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        q, idx, commit = self.quantizer(self.encode_continuous(video))
        pred = self.decode(video[:, :-1], q).float()
        target, prev = video[:, 1:].float(), video[:, :-1].float()
        err = (pred - target) ** 2
        if self.cfg.motion_weight > 0:
            moving = ((target - prev).abs().amax(dim=-1, keepdim=True) > self.cfg.motion_threshold)
            err = err * (1 + self.cfg.motion_weight * moving.float())
        mse = F.mse_loss(pred.detach(), target)
        return err.mean() + commit, {"mse": mse, "commit": commit.detach(),
                                     **codebook_stats(idx, self.cfg.num_actions)}
