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
from robo_genie.models.st_transformer import STTransformer, TemporalCache


class DynamicsModel(ActionCounts):
    def __init__(self, cfg: DynamicsConfig, codebook_size: int, num_actions: int, num_spatial: int,
                 code_dim: int = 32):
        super().__init__(num_actions)
        self.cfg, self.codebook_size = cfg, codebook_size
        d = cfg.net.dim
        self.mask_id = codebook_size                       # one extra embedding row: [MASK]
        self.token_emb = nn.Embedding(codebook_size + 1, d)
        self.head = nn.Linear(d, codebook_size)
        self.action_emb = nn.Embedding(num_actions, d)
        self.net = STTransformer(d, cfg.net.depth, cfg.net.heads, num_spatial, cfg.net.mlp_ratio)

    def _action_embedding(self, actions: torch.Tensor) -> torch.Tensor:
        """actions [B, T-1] -> [B, T, 1, D]: a_{t-1} for frame t, zero for the first frame."""
        act = self.action_emb(actions)[:, :, None]
        first = act.new_zeros(act.shape[0], 1, 1, act.shape[-1])
        return torch.cat([first, act], dim=1)

    def _hidden(self, tokens: torch.Tensor, actions: torch.Tensor, window: int | None = None,
                cache: TemporalCache | None = None) -> torch.Tensor:
        """tokens [B, T, S] (mask_id where masked), actions [B, T-1] -> hidden states [B, T, S, D]."""
        return self.net(self.token_emb(tokens) + self._action_embedding(actions), window, cache)

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

    @staticmethod
    def attention_window(clip_len: int) -> int:
        """Frames a new frame attends to, itself included: a training clip's (the last is masked)."""
        return clip_len

    @torch.no_grad()
    def begin(self, tokens: torch.Tensor, actions: torch.Tensor, window: int) -> TemporalCache:
        """A rollout's cache from its frames so far, tokens [B, t, S] and actions [B, t-1]."""
        cache = TemporalCache(window)
        self._hidden(tokens, actions, window, cache)
        return cache

    def _frame_input(self, frame: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """The next frame's tokens [B, S] (mask_id where unknown), led into by action [B] -> [B, 1, S, D]."""
        return self.token_emb(frame[:, None]) + self.action_emb(action)[:, None, None]

    @torch.no_grad()
    def sample_next(self, context: torch.Tensor, actions: torch.Tensor, steps: int | None = None,
                    temperature: float | None = None, generator: torch.Generator | None = None
                    ) -> torch.Tensor:
        """The next frame's tokens [B, S] after context [B, t, S] under actions [B, t] (the last
        leads into the new frame), from scratch: the whole context attended to."""
        t = context.shape[1]
        cache = self.begin(context, actions[:, :t - 1], t + 1)
        return self.advance(cache, context[:, -1], actions[:, -1], steps, temperature, generator)

    @torch.no_grad()
    def advance(self, cache: TemporalCache, last: torch.Tensor, action: torch.Tensor, steps: int | None = None,
                temperature: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Predict the tokens [B, S] of the frame after `cache`'s (whose last frame's tokens are
        `last` [B, S]) under `action` [B], and add it to the cache.

        Each round samples every still-masked token, keeps the most confident ones (confidence
        = log-prob + annealed Gumbel noise scaled by `temperature`) on a cosine schedule and
        re-masks the rest. The change weight trains every code but the last frame's token to come
        out log(1 + change_weight) too likely (a cross-entropy weighted by w(y) is minimised by
        probabilities proportional to w(y) p(y)); sampling gives that token the amount back.
        The rounds only query the new frame; one more pass over its final tokens commits it.
        """
        steps = steps or self.cfg.maskgit_steps
        temperature = self.cfg.temperature if temperature is None else temperature
        b, s = last.shape
        frame = torch.full((b, s), self.mask_id, dtype=torch.long, device=last.device)
        keep = torch.full((b, s, 1), math.log1p(self.cfg.change_weight), device=last.device)
        for i in range(steps):
            logits = self.head(self.net.step(self._frame_input(frame, action), cache, commit=False))[:, 0].float()
            logits = logits.scatter_add(-1, last[:, :, None], keep)
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
        self.net.step(self._frame_input(frame, action), cache)
        return frame


def _gumbel(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    u = torch.rand(shape, generator=generator, device=device).clamp_(1e-9, 1 - 1e-9)
    return -torch.log(-torch.log(u))
