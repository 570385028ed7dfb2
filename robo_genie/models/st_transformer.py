"""The spatiotemporal (ST) transformer every Genie part is built on.

A block attends over the H*W tokens of one frame (spatial), then causally over the T steps of
one spatial position (temporal), then applies one feed-forward layer. Compute and memory grow
linearly with the number of frames instead of quadratically as in full video attention.

Tensors are laid out [batch, time, space, dim] throughout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


def _norm_like(norm: nn.RMSNorm, x: torch.Tensor) -> torch.Tensor:
    """RMSNorm with its weight in x's dtype: under bf16 autocast q and k are bf16, and a float32
    weight makes torch fall back from its fused kernel."""
    return F.rms_norm(x, norm.normalized_shape, norm.weight.to(x.dtype), norm.eps)


class Attention(nn.Module):
    """Multi-head self-attention with QK-norm (RMSNorm on queries and keys, for stable bf16)."""

    def __init__(self, dim: int, heads: int, causal: bool):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads, self.causal = heads, causal
        head_dim = dim // heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_norm = nn.RMSNorm(head_dim)
        self.k_norm = nn.RMSNorm(head_dim)
        self.out = nn.Linear(dim, dim, bias=False)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [N, L, D] -> q, k, v [N, heads, L, head_dim], with q and k normalised."""
        q, k, v = rearrange(self.qkv(x), "n l (three h d) -> three n h l d", three=3, h=self.heads)
        return _norm_like(self.q_norm, q), _norm_like(self.k_norm, k), v

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
        y = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return self.out(rearrange(y, "n h l d -> n l (h d)"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [N, L, D]
        return self.attend(*self.project(x), causal=self.causal)


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, ratio: float):
        hidden = int(dim * ratio)
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


class STBlock(nn.Module):
    """Spatial attention -> causal temporal attention -> one feed-forward (no FFW after spatial)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, causal: bool = True):
        super().__init__()
        self.norm_s = nn.LayerNorm(dim)
        self.spatial = Attention(dim, heads, causal=False)
        self.norm_t = nn.LayerNorm(dim)
        self.temporal = Attention(dim, heads, causal=causal)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, mlp_ratio)

    def forward(self, x: torch.Tensor, kv: list | None = None) -> torch.Tensor:  # x: [B, T, S, D]
        """Full causal pass. If `kv` is a list, this layer's temporal keys/values are appended to it."""
        b = x.shape[0]
        x = self._spatial(x)
        q, k, v = self.temporal.project(rearrange(self.norm_t(x), "b t s d -> (b s) t d"))
        if kv is not None:
            kv.append((k, v))
        x = x + rearrange(self.temporal.attend(q, k, v, self.temporal.causal), "(b s) t d -> b t s d", b=b)
        return x + self.ff(self.norm_ff(x))

    def step(self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """One new frame x [B, 1, S, D] attending to cached keys/values of the frames before it.

        Under the causal mask earlier frames never depend on later ones, so their keys/values
        can be computed once and reused for every MaskGIT round of the new frame."""
        b = x.shape[0]
        x = self._spatial(x)
        q, k, v = self.temporal.project(rearrange(self.norm_t(x), "b t s d -> (b s) t d"))
        k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        x = x + rearrange(self.temporal.attend(q, k, v, causal=False), "(b s) t d -> b t s d", b=b)
        return x + self.ff(self.norm_ff(x))

    def _spatial(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[:2]
        s = rearrange(self.norm_s(x), "b t s d -> (b t) s d")
        return x + rearrange(self.spatial(s), "(b t) s d -> b t s d", b=b, t=t)


class STTransformer(nn.Module):
    """A stack of ST blocks with learned spatial and temporal position embeddings."""

    def __init__(self, dim: int, depth: int, heads: int, num_spatial: int, max_frames: int,
                 mlp_ratio: float = 4.0, causal: bool = True):
        super().__init__()
        self.pos_space = nn.Parameter(torch.zeros(num_spatial, dim))
        self.pos_time = nn.Parameter(torch.zeros(max_frames, dim))
        nn.init.normal_(self.pos_space, std=0.02)
        nn.init.normal_(self.pos_time, std=0.02)
        self.blocks = nn.ModuleList(STBlock(dim, heads, mlp_ratio, causal) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def _embed(self, x: torch.Tensor, t0: int) -> torch.Tensor:
        t, s = x.shape[1], x.shape[2]
        if t0 + t > self.pos_time.shape[0]:
            raise ValueError(f"{t0 + t} frames exceed the model's max_frames={self.pos_time.shape[0]}")
        return x + self.pos_space[:s] + self.pos_time[t0:t0 + t, None]

    def forward(self, x: torch.Tensor, kv: list | None = None) -> torch.Tensor:  # x: [B, T, S, D]
        """All frames at once; with `kv=[]`, also collects every layer's temporal keys/values."""
        x = self._embed(x, 0)
        for block in self.blocks:
            x = block(x, kv)
        return self.norm(x)

    def step(self, x: torch.Tensor, kv: list) -> torch.Tensor:
        """The frame after those whose keys/values are in `kv` (from `forward(..., kv=[])`)."""
        x = self._embed(x, kv[0][0].shape[2])
        for block, past in zip(self.blocks, kv):
            x = block.step(x, past)
        return self.norm(x)
