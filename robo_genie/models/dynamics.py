"""Dynamics model: a MaskGIT transformer over video tokens, conditioned on latent actions.

Training: tokens z_1..z_T of a clip; the tokens of frames 2..T are masked with a rate drawn from
U[0.5, 1]; latent action a_{t-1} (a LAM code, an integer: no gradient reaches the LAM) is added
as an embedding to every token of frame t; cross-entropy on the masked tokens. Causal in time,
so frame t only sees frames <= t. Sampling fills one new frame in `maskgit_steps` rounds.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from robo_genie.config import DynamicsConfig
from robo_genie.models.st_transformer import STTransformer


class DynamicsModel(nn.Module):
    def __init__(self, cfg: DynamicsConfig, codebook_size: int, num_actions: int, num_spatial: int,
                 max_frames: int):
        super().__init__()
        self.cfg, self.codebook_size = cfg, codebook_size
        d = cfg.net.dim
        self.mask_id = codebook_size                       # one extra embedding row: [MASK]
        self.token_emb = nn.Embedding(codebook_size + 1, d)
        self.action_emb = nn.Embedding(num_actions, d)
        self.net = STTransformer(d, cfg.net.depth, cfg.net.heads, num_spatial, max_frames,
                                 cfg.net.mlp_ratio)
        self.head = nn.Linear(d, codebook_size)

    def _embed(self, tokens: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """tokens [B, T, S], actions [B, T-1]: a_{t-1} is added to every token of frame t."""
        x = self.token_emb(tokens)
        act = self.action_emb(actions)[:, :, None]
        return torch.cat([x[:, :1], x[:, 1:] + act], dim=1)

    def logits(self, tokens: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """tokens [B, T, S] (mask_id where masked), actions [B, T-1] -> logits [B, T, S, V]."""
        return self.head(self.net(self._embed(tokens, actions)))

    def forward(self, tokens: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, dict]:
        b, t, s = tokens.shape
        rate = torch.empty(b, 1, 1, device=tokens.device).uniform_(self.cfg.mask_rate_min, 1.0)
        mask = torch.rand(b, t, s, device=tokens.device) < rate
        mask[:, 0] = False                                  # the prompt frame is always given
        logits = self.logits(tokens.masked_fill(mask, self.mask_id), actions)
        ce = F.cross_entropy(logits[mask].float(), tokens[mask], reduction="none")
        # Tokens that differ from the same position one frame earlier carry the action's effect;
        # most tokens are static background, which would otherwise dominate the loss.
        changed = torch.zeros_like(mask)
        changed[:, 1:] = tokens[:, 1:] != tokens[:, :-1]
        weight = 1.0 + self.cfg.change_weight * changed[mask].float()
        loss = (weight * ce).sum() / weight.sum()
        acc = (logits[mask].argmax(-1) == tokens[mask]).float().mean()
        return loss, {"ce": ce.mean().detach(), "masked_acc": acc.detach()}

    @torch.no_grad()
    def sample_next(self, context: torch.Tensor, actions: torch.Tensor, steps: int | None = None,
                    temperature: float | None = None, generator: torch.Generator | None = None
                    ) -> torch.Tensor:
        """Predict the tokens of the next frame.

        context [B, t, S] known tokens; actions [B, t] (the last one leads into the new frame).
        Each round samples every still-masked token, keeps the most confident ones (confidence
        = log-prob + annealed Gumbel noise scaled by `temperature`) on a cosine schedule and
        re-masks the rest. Returns [B, S].
        """
        steps = steps or self.cfg.maskgit_steps
        temperature = self.cfg.temperature if temperature is None else temperature
        b, t, s = context.shape
        kv: list = []
        self.net(self._embed(context, actions[:, :t - 1]), kv=kv)   # context keys/values, once
        act = self.action_emb(actions[:, t - 1])[:, None, None]
        frame = torch.full((b, s), self.mask_id, dtype=torch.long, device=context.device)
        for i in range(steps):
            logits = self.head(self.net.step(self.token_emb(frame)[:, None] + act, kv))[:, 0].float()
            masked = frame == self.mask_id
            if self.cfg.token_temperature > 0:   # Gumbel-max: a categorical draw, vectorised
                draw = (logits / self.cfg.token_temperature + _gumbel(logits.shape, generator, logits.device)).argmax(-1)
            else:
                draw = logits.argmax(-1)
            logp = F.log_softmax(logits, -1).gather(-1, draw[..., None])[..., 0]
            progress = (i + 1) / steps
            n_masked_after = math.floor(s * math.cos(math.pi / 2 * progress))
            conf = logp + temperature * (1 - progress) * _gumbel(logp.shape, generator, logp.device)
            conf = conf.masked_fill(~masked, float("inf"))   # already-fixed tokens stay fixed
            frame = torch.where(masked, draw, frame)
            if n_masked_after > 0:
                frame = frame.scatter(1, conf.argsort(dim=-1)[:, :n_masked_after], self.mask_id)
        return frame


def _gumbel(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    u = torch.rand(shape, generator=generator, device=device).clamp_(1e-9, 1 - 1e-9)
    return -torch.log(-torch.log(u))
