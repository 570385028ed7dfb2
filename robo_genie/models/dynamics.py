"""Dynamics model: Genie's MaskGIT transformer over video tokens, conditioned on latent actions.

Training: tokens z_1..z_T of a clip; the tokens of frames 2..T are masked with a rate drawn from
U[mask_rate_min, 1]; latent action a_{t-1} (a LAM code, an integer: no gradient reaches the LAM)
is added as an embedding to every token of frame t; cross-entropy on the masked tokens. Causal in
time, so frame t only sees frames <= t. Sampling fills one new frame in `maskgit_steps` rounds.

This is `dynamics.kind=maskgit`, the paper's model. On the demo's video the latent dynamics model
(models/latent_dynamics.py) follows its actions better and is the default (NOTES.md, ninth round).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from robo_genie.config import DynamicsConfig
from robo_genie.models.action_counts import ActionCounts
from robo_genie.models.st_transformer import STTransformer


class DynamicsModel(ActionCounts):
    def __init__(self, cfg: DynamicsConfig, codebook_size: int, num_actions: int, num_spatial: int,
                 max_frames: int, code_dim: int = 32):
        super().__init__(num_actions)
        self.cfg, self.codebook_size = cfg, codebook_size
        d = cfg.net.dim
        self.mask_id = codebook_size                       # one extra embedding row: [MASK]
        self.token_emb = nn.Embedding(codebook_size + 1, d)
        self.head = nn.Linear(d, codebook_size)
        self.action_emb = nn.Embedding(num_actions, d)
        self.net = STTransformer(d, cfg.net.depth, cfg.net.heads, num_spatial, max_frames,
                                 cfg.net.mlp_ratio)

    def _action_embedding(self, actions: torch.Tensor) -> torch.Tensor:
        """actions [B, T-1] -> [B, T, 1, D]: a_{t-1} for frame t, zero for the first frame."""
        act = self.action_emb(actions)[:, :, None]
        first = act.new_zeros(act.shape[0], 1, 1, act.shape[-1])
        return torch.cat([first, act], dim=1)

    def _hidden(self, tokens: torch.Tensor, actions: torch.Tensor, kv: list | None = None) -> torch.Tensor:
        """tokens [B, T, S] (mask_id where masked), actions [B, T-1] -> hidden states [B, T, S, D]."""
        return self.net(self.token_emb(tokens) + self._action_embedding(actions), kv=kv)

    def logits(self, tokens: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """tokens [B, T, S] (mask_id where masked), actions [B, T-1] -> logits [B, T, S, V]."""
        return self.head(self._hidden(tokens, actions))

    def forward(self, tokens: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, dict]:
        self.count(actions)
        b, t, s = tokens.shape
        rate = torch.empty(b, 1, 1, device=tokens.device).uniform_(self.cfg.mask_rate_min, 1.0)
        mask = torch.rand(b, t, s, device=tokens.device) < rate
        mask[:, 0] = False                                  # the prompt frame is always given
        hidden = self._hidden(tokens.masked_fill(mask, self.mask_id), actions)
        logits = self.head(hidden[mask])                    # logits only where there is a target
        ce = F.cross_entropy(logits.float(), tokens[mask], reduction="none")
        # Tokens that differ from the same position one frame earlier carry the action's effect;
        # most tokens are static background, which would otherwise dominate the loss.
        changed = torch.zeros_like(mask)
        changed[:, 1:] = tokens[:, 1:] != tokens[:, :-1]
        weight = 1.0 + self.cfg.change_weight * changed[mask].float()
        loss = (weight * ce).sum() / weight.sum()
        acc = (logits.argmax(-1) == tokens[mask]).float().mean()
        return loss, {"ce": ce.mean().detach(), "masked_acc": acc.detach()}

    def context_cache(self, context: torch.Tensor, actions: torch.Tensor) -> list:
        """Temporal keys/values of the known frames [B, t, S] (actions [B, t-1]), computed once:
        under the causal mask they do not depend on the frame being generated."""
        kv: list = []
        self._hidden(context, actions, kv=kv)
        return kv

    def next_frame_logits(self, frame: torch.Tensor, action: torch.Tensor, kv: list) -> torch.Tensor:
        """Logits [B, S, V] for the next frame's tokens [B, S] (mask_id where unknown), led into by
        action [B], given the context cache; equal to `logits` over the whole clip."""
        x = self.token_emb(frame[:, None]) + self.action_emb(action)[:, None, None]
        return self.head(self.net.step(x, kv))[:, 0]

    @torch.no_grad()
    def sample_next(self, context: torch.Tensor, actions: torch.Tensor, steps: int | None = None,
                    temperature: float | None = None, generator: torch.Generator | None = None
                    ) -> torch.Tensor:
        """Predict the tokens of the next frame.

        context [B, t, S] known tokens; actions [B, t] (the last one leads into the new frame).
        Each round samples every still-masked token, keeps the most confident ones (confidence
        = log-prob + annealed Gumbel noise scaled by `temperature`) on a cosine schedule and
        re-masks the rest. The change weight trains every code but the last frame's token to come
        out log(1 + change_weight) too likely (a cross-entropy weighted by w(y) is minimised by
        probabilities proportional to w(y) p(y)); sampling gives that token the amount back.
        Returns [B, S].
        """
        steps = steps or self.cfg.maskgit_steps
        temperature = self.cfg.temperature if temperature is None else temperature
        b, t, s = context.shape
        kv = self.context_cache(context, actions[:, :t - 1])
        frame = torch.full((b, s), self.mask_id, dtype=torch.long, device=context.device)
        keep = torch.full((b, s, 1), math.log1p(self.cfg.change_weight), device=context.device)
        for i in range(steps):
            logits = self.next_frame_logits(frame, actions[:, t - 1], kv).float()
            logits = logits.scatter_add(-1, context[:, -1, :, None], keep)
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
