"""The spatiotemporal (ST) transformer every Genie part is built on.

A block attends over the H*W tokens of one frame (spatial), then causally over the T steps of
one spatial position (temporal), then applies one feed-forward layer. Compute and memory grow
linearly with the number of frames instead of quadratically as in full video attention.

Positions: learned embeddings in space. In time, rotary embeddings (RoPE) for the parts that play
streams frame by frame (the dynamics model, the tokenizer's decoder): temporal attention then
depends only on how many frames apart two frames are, which lets play keep a rolling cache of the
last frames' keys and values (`TemporalCache`) and drop the oldest without recomputing the rest.
The parts that only read whole windows (the tokenizer's encoder, the LAM) keep a learned embedding
per frame (`learned_frames`).

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


def rotation(positions: torch.Tensor, head_dim: int) -> torch.Tensor:
    """RoPE's rotation for frames at `positions` [L]: unit complex numbers [L, head_dim / 2],
    computed once per pass and shared by every layer."""
    half = head_dim // 2
    freqs = 10000.0 ** (-torch.arange(half, device=positions.device, dtype=torch.float32) / half)
    angles = positions.float()[:, None] * freqs
    return torch.polar(torch.ones_like(angles), angles)


def rotary(x: torch.Tensor, turn: torch.Tensor) -> torch.Tensor:
    """Rotate x [N, heads, L, head_dim] by `rotation(...)` [L, head_dim / 2] (channels paired as
    (0, 1), (2, 3), ...): the dot product of a rotated query and key depends only on the
    difference of their positions. One complex multiply: on 2 CPU cores a tenth of the time of the
    same rotation written out over real halves."""
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], x.shape[-1] // 2, 2))
    return torch.view_as_real(pairs * turn).flatten(-2).to(x.dtype)


WINDOW_FRAMES = 16      # frames a learned-position part (tokenizer encoder, LAM) has embeddings for


def banded_causal_mask(t: int, window: int, device) -> torch.Tensor:
    """[t, t] True where frame i may attend to frame j: j <= i and i - j < window."""
    i = torch.arange(t, device=device)
    gap = i[:, None] - i[None, :]
    return (gap >= 0) & (gap < window)


# Attention over this many keys or fewer is written out. The demo's clips are 1-2 frames long, so
# its temporal attention is millions of 2x2 problems, where the fused kernel's per-problem overhead
# dominates: whole training steps ran 1.08-1.27x faster on 2 CPU cores (interleaved A/B; attention
# alone was slower written out from 8 keys; NOTES.md, twelfth round).
SHORT_KEYS = 4


def _short_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool,
                     mask: torch.Tensor | None) -> torch.Tensor:
    """Softmax attention as scaled_dot_product_attention computes it (`mask`: True = may attend)."""
    scores = (q @ k.transpose(-1, -2)).float() * q.shape[-1] ** -0.5
    if causal and mask is None:
        mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(-1).to(v.dtype) @ v


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

    def project(self, x: torch.Tensor, turn: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [N, L, D] -> q, k, v [N, heads, L, head_dim], with q and k normalised (and rotated
        by `turn`, from `rotation`, for temporal attention)."""
        q, k, v = rearrange(self.qkv(x), "n l (three h d) -> three n h l d", three=3, h=self.heads)
        q, k = _norm_like(self.q_norm, q), _norm_like(self.k_norm, k)
        if turn is not None:
            q, k = rotary(q, turn), rotary(k, turn)
        return q, k, v

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
               mask: torch.Tensor | None = None) -> torch.Tensor:
        if k.shape[-2] <= SHORT_KEYS:
            y = _short_attention(q, k, v, causal, mask)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None)
        return self.out(rearrange(y, "n h l d -> n l (h d)"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [N, L, D], spatial: no positions here
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

    def forward(self, x: torch.Tensor, window: int | None = None, turn: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, tuple]:
        """Full pass over x [B, T, S, D]: each frame attends to itself and, when causal, the
        `window - 1` frames before it (all earlier frames if window is None); `turn`: the frames'
        rotary positions (None: no positions in attention). Also returns this layer's temporal
        keys/values, for a cache."""
        b, t = x.shape[:2]
        x = self._spatial(x)
        q, k, v = self.temporal.project(rearrange(self.norm_t(x), "b t s d -> (b s) t d"), turn)
        mask = banded_causal_mask(t, window, x.device) if self.temporal.causal and window and t > window else None
        x = x + rearrange(self.temporal.attend(q, k, v, self.temporal.causal, mask), "(b s) t d -> b t s d", b=b)
        return x + self.ff(self.norm_ff(x)), (k, v)

    def step(self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None, turn: torch.Tensor
             ) -> tuple[torch.Tensor, tuple]:
        """One new frame x [B, 1, S, D] (rotated by `turn`, its position's), attending to itself and
        to the cached keys/values of the frames before it. Returns its output and its own keys/values."""
        b = x.shape[0]
        x = self._spatial(x)
        q, k, v = self.temporal.project(rearrange(self.norm_t(x), "b t s d -> (b s) t d"), turn)
        keys, values = (k, v) if past is None else (torch.cat([past[0], k], 2), torch.cat([past[1], v], 2))
        x = x + rearrange(self.temporal.attend(q, keys, values), "(b s) t d -> b t s d", b=b)
        return x + self.ff(self.norm_ff(x)), (k, v)

    def _spatial(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[:2]
        s = rearrange(self.norm_s(x), "b t s d -> (b t) s d")
        return x + rearrange(self.spatial(s), "(b t) s d -> b t s d", b=b, t=t)


class TemporalCache:
    """The temporal keys/values a new frame attends to, per layer: those of the last `window - 1`
    frames. Adding a frame drops the oldest once the window is full; with rotary positions the
    others stay valid, so a play step costs the same after 1 frame or 1000."""

    def __init__(self, window: int):
        if window < 1:
            raise ValueError(f"a temporal window of {window} frames: needs at least 1")
        self.window = window
        self.layers: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.frames = 0                  # frames added so far: the next frame's position

    def add(self, layers: list[tuple[torch.Tensor, torch.Tensor]], frames: int = 1) -> None:
        """Append `frames` frames' keys/values (one (k, v) per layer, time on dim 2)."""
        keep = self.window - 1
        if self.layers is not None:
            layers = [(torch.cat([k0, k], 2), torch.cat([v0, v], 2)) for (k0, v0), (k, v) in zip(self.layers, layers)]
        self.layers = [(k[:, :, max(0, k.shape[2] - keep):], v[:, :, max(0, v.shape[2] - keep):]) for k, v in layers]
        self.frames += frames


class STTransformer(nn.Module):
    """A stack of ST blocks with learned spatial position embeddings and, in time, either rotary
    positions (default: what a part that plays frame by frame needs, with a TemporalCache) or, with
    `learned_frames=N`, a learned embedding for each of N frames: for parts that only ever read
    whole windows (the tokenizer's encoder, the LAM), where it is what they were tuned with (the
    LAM found fewer of the demo's moves with rotary positions: NMI 0.36 and 0.39 against 0.55 and
    0.49 at seeds 0 and 2, NOTES.md, eleventh round)."""

    def __init__(self, dim: int, depth: int, heads: int, num_spatial: int, mlp_ratio: float = 4.0,
                 causal: bool = True, learned_frames: int = 0):
        super().__init__()
        if not learned_frames and (dim // heads) % 2:
            raise ValueError(f"dim {dim} / heads {heads} = {dim // heads}: rotary time positions need an even head dim")
        self.head_dim = dim // heads
        self.pos_space = nn.Parameter(torch.zeros(num_spatial, dim))
        self.pos_time = nn.Parameter(torch.zeros(learned_frames, dim)) if learned_frames else None
        nn.init.normal_(self.pos_space, std=0.02)
        if self.pos_time is not None:
            nn.init.normal_(self.pos_time, std=0.02)
        self.blocks = nn.ModuleList(STBlock(dim, heads, mlp_ratio, causal) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos_space[:x.shape[2]]
        if self.pos_time is None:
            return x
        if x.shape[1] > len(self.pos_time):
            raise ValueError(f"{x.shape[1]} frames exceed the {len(self.pos_time)} this part has positions for")
        return x + self.pos_time[:x.shape[1], None]

    def forward(self, x: torch.Tensor, window: int | None = None, cache: TemporalCache | None = None
                ) -> torch.Tensor:
        """All frames at once, x [B, T, S, D]. `window`: how many frames each frame attends to,
        itself included (None: all earlier ones). `cache` (empty): filled with the keys/values the
        frame after these would attend to, to continue with `step`."""
        x = self._embed(x)
        turn = None if self.pos_time is not None else rotation(torch.arange(x.shape[1], device=x.device), self.head_dim)
        layers = []
        for block in self.blocks:
            x, kv = block(x, window, turn)
            layers.append(kv)
        if cache is not None:
            cache.add(layers, frames=x.shape[1])
        return self.norm(x)

    def step(self, x: torch.Tensor, cache: TemporalCache, commit: bool = True) -> torch.Tensor:
        """The frame after those in `cache`, x [B, 1, S, D]. The same output as a full pass over
        all frames with the cache's window. `commit`: add the frame to the cache (MaskGIT rounds
        query a frame several times and commit only its final tokens)."""
        if self.pos_time is not None:
            raise ValueError("a part with learned frame positions reads whole windows; it has no frame-by-frame step")
        x = x + self.pos_space[:x.shape[2]]
        turn = rotation(torch.full((1,), cache.frames, device=x.device), self.head_dim)
        layers = []
        for i, block in enumerate(self.blocks):
            x, kv = block.step(x, cache.layers[i] if cache.layers and cache.window > 1 else None, turn)
            layers.append(kv)
        if commit:
            cache.add(layers)
        return self.norm(x)
