"""Latent dynamics: a causal ST-transformer that regresses the next frame's code vectors.

The state of the world is the tokenizer's grid of code vectors, one per patch. Frame t's vectors,
plus the latent action a_t that leads out of it (an embedding added to every position of frame t),
enter the transformer; its output at frame t is the change that turns frame t's vectors into
frame t+1's. Training minimises the squared error to the true next frame's code vectors; sampling
snaps each predicted vector to its nearest code, so a rollout stays made of the tokenizer's codes
and the rest of the world model (play, eval, bundles) reads tokens as it does for MaskGIT.

Why not MaskGIT here (NOTES.md, ninth round): a robot's moves are often smaller than a patch, so
the next frame's code is a code between what was here and what was next to it. Naming it among
thousands of near-duplicate codes with a cross-entropy is close to a coin toss; a vector between
two code vectors is a small, smooth regression target.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from robo_genie import distributed
from robo_genie.config import DynamicsConfig
from robo_genie.models.action_counts import ActionCounts
from robo_genie.models.quantizer import nearest_code
from robo_genie.models.st_transformer import STTransformer, TemporalCache


class LatentDynamics(ActionCounts):
    def __init__(self, cfg: DynamicsConfig, codebook_size: int, num_actions: int, num_spatial: int,
                 code_dim: int):
        super().__init__(num_actions)
        d = cfg.net.dim
        self.register_buffer("codebook", torch.zeros(codebook_size, code_dim))   # the tokenizer's codes
        self.grid = math.isqrt(num_spatial)
        # Each position reads the code vectors of its 3x3 neighbourhood: "the gripper was next to
        # me and moves my way" is then one layer's work, not a lookup by spatial attention over
        # learned absolute positions (which a CPU run does not learn: tests/test_latent_dynamics.py).
        self.code_in = nn.Linear(9 * code_dim, d)
        self.recorded = cfg.actions == "recorded"
        if cfg.actions not in ("latent", "recorded"):
            raise ValueError(f"model.dynamics.actions={cfg.actions!r}: expected latent or recorded")
        if self.recorded and cfg.action_dim <= 0:
            raise ValueError("model.dynamics.actions=recorded needs model.dynamics.action_dim (set from the shards "
                             "when training)")
        # a LAM code is an index; a recorded action a vector of real commands
        self.action_emb = nn.Linear(cfg.action_dim, d) if self.recorded else nn.Embedding(num_actions, d)
        if self.recorded:
            # Commands come in metres and radians (a 2-cm move is 0.02): standardised per field with
            # the training data's statistics, else the action is a whisper next to the frame's
            # features and the model learns to ignore it (ΔtPSNR 0.004 dB on the demo, 2026-12-01).
            self.register_buffer("action_moments", torch.zeros(3, cfg.action_dim, dtype=torch.float64))
            # bundles trained before the moments existed load with none: their actions pass unscaled
            self._register_load_state_dict_pre_hook(
                lambda sd, prefix, *a: sd.setdefault(prefix + "action_moments", torch.zeros_like(self.action_moments)))
        self.net = STTransformer(d, cfg.net.depth, cfg.net.heads, num_spatial, cfg.net.mlp_ratio)
        # The prediction is a per-position blend of the 3x3 neighbours' vectors (a move by up to a
        # patch) plus a correction; it starts as the identity blend and no correction (a copy).
        self.kernel_out = nn.Linear(d, 9)
        self.delta_out = nn.Linear(d, code_dim)
        for layer in (self.kernel_out, self.delta_out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        with torch.no_grad():
            self.kernel_out.bias[4] = 8.0

    def set_codebook(self, codebook: torch.Tensor) -> None:
        """Copy the frozen tokenizer's code vectors [V, code_dim]; a bundle's dynamics part then
        stands on its own."""
        self.codebook.copy_(codebook.detach().float())

    def _neighbours(self, vectors: torch.Tensor) -> torch.Tensor:
        """vectors [B, T, S, C] -> the 3x3 neighbourhood of every position [B, T, S, 9, C]
        (edge positions repeat the border)."""
        b, t, s, c = vectors.shape
        grid = vectors.reshape(b * t, self.grid, self.grid, c).permute(0, 3, 1, 2)
        padded = F.pad(grid, (1, 1, 1, 1), mode="replicate")
        patches = F.unfold(padded, 3)                               # [B*T, C*9, S]
        return patches.reshape(b, t, c, 9, s).permute(0, 1, 4, 3, 2)

    def _standardise(self, actions: torch.Tensor) -> torch.Tensor:
        """Recorded actions -> zero mean, unit spread per field, by the statistics seen in training
        (count, sum, sum of squares; accumulated while training, frozen in the bundle)."""
        if self.training:
            flat = actions.detach().reshape(-1, actions.shape[-1]).double()
            moments = torch.stack([torch.full_like(flat[0], len(flat)), flat.sum(0), flat.pow(2).sum(0)])
            self.action_moments += distributed.all_reduce_sum_(moments)      # the global batch's
        n, s, sq = self.action_moments.clamp_min(0)
        n = n.clamp_min(1)
        mean = s / n
        std = (sq / n - mean.pow(2)).clamp_min(0).sqrt()
        std = torch.where(std > 1e-6, std, torch.ones_like(std))       # constant fields pass through, centred
        return ((actions - mean.to(actions)) / std.to(actions))

    def _inputs(self, vectors: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Code vectors [B, T, S, code_dim] and the actions leading out of them -> the transformer's
        input [B, T, S, D] and each position's 3x3 neighbourhood [B, T, S, 9, code_dim]."""
        near = self._neighbours(vectors)
        if self.recorded:
            actions = self._standardise(actions)
        return self.code_in(near.flatten(-2)) + self.action_emb(actions)[:, :, None], near

    def _outputs(self, h: torch.Tensor, near: torch.Tensor) -> torch.Tensor:
        kernel = self.kernel_out(h).float().softmax(-1)
        return (kernel[..., None] * near).sum(-2) + self.delta_out(h).float()

    def predict(self, vectors: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Code vectors of frames 1..T [B, T, S, code_dim] and actions [B, T] (a_t leads out of
        frame t; [B, T, action_dim] floats with recorded actions) -> predicted code vectors of
        frames 2..T+1 (unsnapped). Causal: prediction t sees frames and actions <= t."""
        x, near = self._inputs(vectors, actions)
        return self._outputs(self.net(x), near)

    def forward(self, tokens: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """tokens [B, T, S], actions [B, T-1] (a_t between frames t and t+1) -> (loss, metrics)."""
        self.count(actions)
        vectors = self.codebook[tokens]
        pred = self.predict(vectors[:, :-1], actions).float()
        target = vectors[:, 1:]
        err = (pred - target).pow(2).sum(-1)                        # [B, T-1, S]
        changed = tokens[:, 1:] != tokens[:, :-1]
        with torch.no_grad():
            snapped = self.nearest(pred)
            acc = (snapped == tokens[:, 1:]).float()
        metrics = {"mse": err.mean().detach(), "token_acc": acc.mean(),
                   "changed_acc": acc[changed].mean() if changed.any() else acc.new_zeros(())}
        return err.mean(), metrics

    def nearest(self, vectors: torch.Tensor) -> torch.Tensor:
        """The nearest code to each vector [..., code_dim] -> [...]."""
        return nearest_code(vectors, self.codebook)

    @staticmethod
    def attention_window(clip_len: int) -> int:
        """Frames a new frame attends to, itself included: a training clip's inputs (all but its last frame)."""
        return max(clip_len - 1, 1)

    @torch.no_grad()
    def begin(self, tokens: torch.Tensor, actions: torch.Tensor, window: int) -> TemporalCache:
        """A rollout's cache from its frames so far, tokens [B, t, S] and actions [B, t-1]: every
        frame but the last, whose action is not known yet, goes in."""
        cache = TemporalCache(window)
        if tokens.shape[1] > 1:
            self.net(self._inputs(self.codebook[tokens[:, :-1]], actions)[0], window, cache)
        return cache

    @torch.no_grad()
    def advance(self, cache: TemporalCache, last: torch.Tensor, action: torch.Tensor, steps: int | None = None,
                temperature: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """The tokens [B, S] of the frame after `last` [B, S] (the frame after the cache's) under
        `action` [B] (or [B, action_dim]); `last` joins the cache. One pass, deterministic: `steps`,
        `temperature` and `generator` are MaskGIT's, accepted for the same call signature only."""
        x, near = self._inputs(self.codebook[last][:, None], action[:, None])
        return self.nearest(self._outputs(self.net.step(x, cache), near)[:, 0])

    @torch.no_grad()
    def sample_next(self, context: torch.Tensor, actions: torch.Tensor, steps: int | None = None,
                    temperature: float | None = None, generator: torch.Generator | None = None
                    ) -> torch.Tensor:
        """context [B, t, S] known tokens, actions [B, t] (the last one leads into the new frame)
        -> the next frame's tokens [B, S], from scratch: the whole context attended to."""
        cache = self.begin(context, actions[:, :-1], context.shape[1])
        return self.advance(cache, context[:, -1], actions[:, -1])
