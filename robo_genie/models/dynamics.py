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
                 max_frames: int, code_dim: int = 32):
        super().__init__()
        self.cfg, self.codebook_size = cfg, codebook_size
        d = cfg.net.dim
        self.mask_id = codebook_size                       # one extra embedding row: [MASK]
        if cfg.token_embedding not in ("learned", "codebook"):
            raise ValueError(f"dynamics.token_embedding={cfg.token_embedding!r}: expected learned or codebook")
        if cfg.target_smoothing > 0 and cfg.token_embedding != "codebook":
            raise ValueError("dynamics.target_smoothing needs dynamics.token_embedding=codebook (the code vectors)")
        if cfg.copy_mode not in ("bonus", "blend"):
            raise ValueError(f"dynamics.copy_mode={cfg.copy_mode!r}: expected bonus or blend")
        if cfg.copy_mode == "blend" and (cfg.copy_radius is None or cfg.token_embedding != "codebook"):
            raise ValueError("dynamics.copy_mode=blend needs dynamics.copy_radius and token_embedding=codebook")
        if cfg.token_embedding == "codebook":
            # Every code is embedded as a learned projection of its tokenizer code vector, and the
            # output logits score the same embeddings (tied). Codes that decode alike start alike,
            # and copying or shifting content does not have to be learned code by code: with a
            # separate row per code, most of the 2048 rows see a handful of updates in a CPU run.
            self.register_buffer("codebook", torch.zeros(codebook_size, code_dim))
            self.code_proj = nn.Linear(code_dim, d)
            self.mask_emb = nn.Parameter(torch.randn(1, d) * 0.02)
            self.out_proj = nn.Linear(d, d)
            self.out_bias = nn.Parameter(torch.zeros(codebook_size))
        else:
            self.token_emb = nn.Embedding(codebook_size + 1, d)
            self.head = nn.Linear(d, codebook_size)
        self.action_emb = nn.Embedding(num_actions, d)
        # Frame t's token at the same position, embedded into frame t+1's input (row mask_id:
        # none, for the first frame). Then "what was next to me" is one spatial attention away,
        # rather than a spatial step in frame t followed by a temporal step. With codebook
        # embeddings it is the shared code embedding through its own linear map.
        self.prev_emb = self.prev_proj = None
        if cfg.prev_frame_input and cfg.token_embedding == "codebook":
            self.prev_proj = nn.Linear(d, d)
        elif cfg.prev_frame_input:
            self.prev_emb = nn.Embedding(codebook_size + 1, d)
        self.copy_gate = None
        if cfg.copy_radius is not None:
            r = cfg.copy_radius
            self.grid = math.isqrt(num_spatial)
            self.copy_offsets = [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1)]
            self.copy_gate = nn.Linear(d, len(self.copy_offsets))
            nn.init.zeros_(self.copy_gate.weight)
            with torch.no_grad():   # start out copying the same position
                self.copy_gate.bias.copy_(torch.tensor([2.0 if o == (0, 0) else 0.0 for o in self.copy_offsets]))
        if cfg.copy_mode == "blend":   # how sharply the blended code vector picks its nearest code
            self.blend_log_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.net = STTransformer(d, cfg.net.depth, cfg.net.heads, num_spatial, max_frames,
                                 cfg.net.mlp_ratio)

    def set_codebook(self, codebook: torch.Tensor) -> None:
        """Copy the frozen tokenizer's code vectors [V, code_dim] (token_embedding=codebook); they
        are then part of this model's state, so a bundle's dynamics part stands on its own."""
        self.codebook.copy_(codebook.detach().float())

    def _table(self) -> torch.Tensor:
        """Input embeddings of the V codes and [MASK]: [V + 1, D]."""
        if self.cfg.token_embedding == "codebook":
            return torch.cat([self.code_proj(self.codebook), self.mask_emb])
        return self.token_emb.weight

    def _logits(self, hidden: torch.Tensor, sources: torch.Tensor | None) -> torch.Tensor:
        """hidden [..., D], the previous frame's tokens around each position [..., K] (see
        `_copy_sources`) -> logits [..., V]."""
        if self.cfg.token_embedding == "codebook":
            logits = self.out_proj(hidden) @ self.code_proj(self.codebook).T + self.out_bias
        else:
            logits = self.head(hidden)
        if self.copy_gate is None:
            return logits
        if self.cfg.copy_mode == "blend":
            return logits - self._blend_distance(hidden, sources)
        # Most tokens of a robot video do not change from one frame to the next, and those that do
        # mostly take a neighbour's old token (things move): per-position logit bonuses, predicted
        # from the hidden state, for "the token that was at offset k" make copying the default
        # from the first step and turn a move into a choice among K offsets, not among V codes.
        bonus = self.copy_gate(hidden).to(logits.dtype) * (sources != self.mask_id)
        return logits.scatter_add(-1, sources.clamp(max=self.codebook_size - 1), bonus)

    def _blend_distance(self, hidden: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
        """A motion prior for moves smaller than a patch (copy_mode=blend): each position predicts a
        kernel over the previous frame's code vectors at its K offsets, as the LAM decoder resamples
        pixels; the blend lies between the codes the patch's content came from, and codes near it
        score high (scaled squared distance, subtracted from the logits) [..., V]."""
        kernel = self.copy_gate(hidden).float().masked_fill(sources == self.mask_id, -1e4).softmax(-1)
        blend = (kernel[..., None] * self.codebook[sources.clamp(max=self.codebook_size - 1)]).sum(-2)
        return self.blend_log_scale.exp() * self._code_distances(blend)

    def _code_distances(self, vectors: torch.Tensor) -> torch.Tensor:
        """Squared distances from vectors [..., code_dim] to every code: [..., V]."""
        dist = (vectors.pow(2).sum(-1, keepdim=True) - 2 * vectors @ self.codebook.T
                + self.codebook.pow(2).sum(-1))
        return dist.clamp(min=0)

    def _copy_sources(self, frames: torch.Tensor) -> torch.Tensor | None:
        """frames [B, T, S] -> the tokens at each position's K offsets in the frame before
        [B, T, S, K] (mask_id off the grid and for the first frame); None without copy_radius."""
        if self.copy_gate is None:
            return None
        return self._neighbour_tokens(self._prev_tokens(frames))

    def _neighbour_tokens(self, prev: torch.Tensor) -> torch.Tensor:
        """prev [..., S] (a frame's tokens) -> the token at each of the K offsets around every
        position [..., S, K] (mask_id off the grid)."""
        r, g = self.cfg.copy_radius, self.grid
        padded = F.pad(prev.reshape(*prev.shape[:-1], g, g), (r, r, r, r), value=self.mask_id)
        shifted = [padded[..., r + dy:r + dy + g, r + dx:r + dx + g] for dy, dx in self.copy_offsets]
        return torch.stack(shifted, -1).reshape(*prev.shape, -1)

    def _targets(self, tokens: torch.Tensor) -> torch.Tensor:
        """The cross-entropy target for true tokens [N]: the tokens themselves, or with
        target_smoothing > 0 a distribution over the codes that falls off with squared distance
        to the true code's vector (scale target_smoothing). A VQ codebook holds many near-duplicate
        codes; which of them a patch lands on is close to a coin toss, and a one-hot target makes
        that toss the thing to learn."""
        if self.cfg.target_smoothing <= 0:
            return tokens
        dist = self._code_distances(self.codebook[tokens])                     # [N, V]
        return F.softmax(-dist / self.cfg.target_smoothing, dim=-1)

    def _prev_tokens(self, known: torch.Tensor) -> torch.Tensor:
        """known [B, T, S] -> frame t-1's tokens at frame t's positions (mask_id for the first)."""
        return torch.cat([torch.full_like(known[:, :1], self.mask_id), known[:, :-1]], dim=1)

    def _action_embedding(self, actions: torch.Tensor) -> torch.Tensor:
        """actions [B, T-1] -> [B, T, 1, D]: a_{t-1} for frame t, zero for the first frame."""
        act = self.action_emb(actions)[:, :, None]
        first = act.new_zeros(act.shape[0], 1, 1, act.shape[-1])
        return torch.cat([first, act], dim=1)

    def _input(self, tokens: torch.Tensor, act: torch.Tensor, prev: torch.Tensor | None) -> torch.Tensor:
        table = self._table()
        x = F.embedding(tokens, table) + act
        if self.prev_proj is not None:
            return x + self.prev_proj(F.embedding(prev, table))
        return x if self.prev_emb is None else x + self.prev_emb(prev)

    def _hidden(self, tokens: torch.Tensor, actions: torch.Tensor, known: torch.Tensor,
                kv: list | None = None) -> torch.Tensor:
        """tokens [B, T, S] (mask_id where masked), actions [B, T-1], known [B, T, S] (the unmasked
        tokens: frame t-1 of it feeds frame t when prev_frame_input). a_{t-1} is added to every
        token of frame t (at the input, and with action_every_block at every block's input)."""
        act = self._action_embedding(actions)
        prev = self._prev_tokens(known) if self.cfg.prev_frame_input else None
        return self.net(self._input(tokens, act, prev), kv=kv,
                        cond=act if self.cfg.action_every_block else None)

    def logits(self, tokens: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """tokens [B, T, S] (mask_id where masked), actions [B, T-1] -> logits [B, T, S, V]."""
        return self._logits(self._hidden(tokens, actions, tokens), self._copy_sources(tokens))

    def forward(self, tokens: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, dict]:
        b, t, s = tokens.shape
        rate = torch.empty(b, 1, 1, device=tokens.device).uniform_(self.cfg.mask_rate_min, 1.0)
        mask = torch.rand(b, t, s, device=tokens.device) < rate
        mask[:, 0] = False                                  # the prompt frame is always given
        hidden = self._hidden(tokens.masked_fill(mask, self.mask_id), actions, tokens)
        sources = self._copy_sources(tokens)
        # logits only where there is a target: ~1/3 of the tokens
        logits = self._logits(hidden[mask], None if sources is None else sources[mask])
        ce = F.cross_entropy(logits.float(), self._targets(tokens[mask]), reduction="none")
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
        self._hidden(context, actions, context, kv=kv)
        return kv

    def next_frame_logits(self, frame: torch.Tensor, action: torch.Tensor, kv: list, last: torch.Tensor
                          ) -> torch.Tensor:
        """Logits [B, S, V] for the next frame's tokens [B, S] (mask_id where unknown), led into by
        action [B], given the context cache and the context's last frame [B, S]; equal to
        `logits` over the whole clip."""
        act = self.action_emb(action)[:, None, None]
        cond = act if self.cfg.action_every_block else None
        x = self._input(frame[:, None], act, last[:, None])
        sources = None if self.copy_gate is None else self._neighbour_tokens(last)[:, None]
        return self._logits(self.net.step(x, kv, cond), sources)[:, 0]

    @torch.no_grad()
    def sample_next(self, context: torch.Tensor, actions: torch.Tensor, steps: int | None = None,
                    temperature: float | None = None, generator: torch.Generator | None = None
                    ) -> torch.Tensor:
        """Predict the tokens of the next frame.

        context [B, t, S] known tokens; actions [B, t] (the last one leads into the new frame).
        Each round samples every still-masked token, keeps the most confident ones (confidence
        = log-prob + annealed Gumbel noise scaled by `temperature`) on a cosine schedule and
        re-masks the rest. With calibrate_sampling, the last frame's token at each position gets
        back the log(1 + change_weight) that training's change weight gave every other code.
        Returns [B, S].
        """
        steps = steps or self.cfg.maskgit_steps
        temperature = self.cfg.temperature if temperature is None else temperature
        b, t, s = context.shape
        kv = self.context_cache(context, actions[:, :t - 1])
        frame = torch.full((b, s), self.mask_id, dtype=torch.long, device=context.device)
        calibrate = self.cfg.calibrate_sampling and self.cfg.change_weight > 0
        keep = torch.full((b, s, 1), math.log1p(self.cfg.change_weight), device=context.device)
        for i in range(steps):
            logits = self.next_frame_logits(frame, actions[:, t - 1], kv, context[:, -1]).float()
            if calibrate:
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
