"""Quantisers: a VQ codebook for the tokenizer's tokens, finite scalar quantisation for the LAM's
latent actions.

The codebook learns by exponential moving averages (no codebook gradients, van den Oord et al.
2017): each code drifts towards the mean of the encoder outputs assigned to it. It starts from
k-means on the first training batch, and a code whose average use falls under a threshold is
re-seeded from the current batch ("dead-code restart"), so the whole codebook stays in use.

Why not vector-quantize-pytorch (DESIGN.md's suggestion, used here until NOTES.md's eighth round)?
Its training step builds a dense [tokens, codes] one-hot matrix and a square-rooted distance
matrix: for the tiny tokenizer on a CPU (6144 tokens x 2048 codes) that was a quarter of each step.
Here the search is one matmul and the EMA statistics are a bincount and an index_add
(`robo-genie bench train` measures it; BENCHMARKS.md).

The LAM's |A| = 8 actions are FSQ (Mentzer et al. 2023) over three binary channels: an action is
the sign of each channel of the encoder's output, with nothing to initialise, re-seed or lose.
Its VQ codebook before (k-means on the first quantised batch of 24, EMA updates, codes used
under twice a batch re-seeded) made each run follow its own path: a change of 1e-7 in the
arithmetic moved a seed's NMI from 0.43 to 0.26; with FSQ the LAM found the motions at every seed
(NMI 0.56-0.66; NOTES.md, twelfth round). The rounding is vector-quantize-pytorch's FSQ, with
symmetric levels (preserve_symmetry: a binary channel splits at 0).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from robo_genie import distributed
from vector_quantize_pytorch import FSQ


@torch.no_grad()
def nearest_code(z: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Index of the nearest of `codes` [K, dim] (Euclidean) for z [..., dim] -> [...]."""
    flat = z.detach().float().reshape(-1, z.shape[-1])
    # In float32 even under bf16 autocast: nearby codes differ by less than bf16 resolves.
    with torch.autocast(device_type=flat.device.type, enabled=False):
        # |z - c|^2 = |z|^2 - 2 z.c + |c|^2, and |z|^2 is the same for every code.
        dist = torch.addmm(codes.float().pow(2).sum(-1), flat, codes.float().T, alpha=-2)
    return dist.argmin(-1).reshape(z.shape[:-1])


class Quantizer(nn.Module):
    def __init__(self, dim: int, codebook_size: int, commitment_weight: float, ema_decay: float,
                 dead_code_threshold: float, kmeans_iters: int = 10, eps: float = 1e-5):
        super().__init__()
        self.codebook_size, self.commitment_weight = codebook_size, commitment_weight
        self.decay, self.dead_code_threshold = ema_decay, dead_code_threshold
        self.kmeans_iters, self.eps = kmeans_iters, eps
        # Buffers, so checkpoints and bundles carry the codebook and its statistics.
        self.register_buffer("initialised", torch.tensor(False))
        self.register_buffer("codes", torch.zeros(codebook_size, dim))        # what lookup() returns
        self.register_buffer("usage", torch.ones(codebook_size))               # EMA of assignments per step
        self.register_buffer("sums", torch.zeros(codebook_size, dim))         # EMA of assigned vectors' sums

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z: [..., dim] -> (quantised z, code indices [...], commitment loss).

        In training the gradient at the output reaches z through the rotation trick, and the
        codebook is updated from this batch; in eval mode nothing changes and the loss is 0."""
        shape = z.shape[:-1]
        flat = z.float().reshape(-1, z.shape[-1])
        if self.training and not bool(self.initialised):
            # on the global batch: every rank starts from the codebook one process would
            self._kmeans_init(distributed.all_gather_cat(flat.detach()))
        idx = self.nearest(flat)
        q = self.codes[idx]
        if not self.training:
            return q.reshape(z.shape).to(z.dtype), idx.reshape(shape), z.new_zeros(())
        commit = self.commitment_weight * F.mse_loss(flat, q)
        self._ema_update(flat.detach(), idx)
        q = rotate_to(flat, q)
        return q.reshape(z.shape).to(z.dtype), idx.reshape(shape), commit

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Bundles and checkpoints written while this wrapped vector-quantize-pytorch keep loading.
        for old, new in (("initted", "initialised"), ("embed", "codes"), ("cluster_size", "usage"),
                         ("embed_avg", "sums")):
            key = f"{prefix}vq._codebook.{old}"
            if key in state_dict:
                state_dict[prefix + new] = state_dict.pop(key).reshape(getattr(self, new).shape)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def codebook(self) -> torch.Tensor:
        """The code vectors [K, dim]."""
        return self.codes

    def nearest(self, z: torch.Tensor, codes: torch.Tensor | None = None) -> torch.Tensor:
        """Index of the nearest code (Euclidean) for z [..., dim] -> [...]."""
        return nearest_code(z, self.codes if codes is None else codes)

    def lookup(self, idx: torch.Tensor) -> torch.Tensor:
        """Code indices [...] -> code vectors [..., dim]."""
        return self.codes[idx]

    # -- codebook learning ------------------------------------------------------------------
    def _batch_stats(self, flat: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """How many vectors each code was assigned, and their sum, over the global batch (summed over
        data-parallel ranks, so every rank's codebook takes the same step)."""
        counts = torch.bincount(idx, minlength=self.codebook_size).float()
        sums = torch.zeros_like(self.sums).index_add_(0, idx, flat)
        return distributed.all_reduce_sum_(counts), distributed.all_reduce_sum_(sums)

    # The codebook updates stay eager under torch.compile: they change buffers in place and
    # restart a data-dependent number of codes.
    @torch.compiler.disable
    @torch.no_grad()
    def _kmeans_init(self, flat: torch.Tensor) -> None:
        """Lloyd's k-means from codes drawn out of the (global) batch; a code left without vectors
        keeps zero usage and is restarted on the first update."""
        means, counts = lloyd(flat, _sample(flat, self.codebook_size), self.kmeans_iters)
        self.usage.copy_(counts)
        self.sums.copy_(means * counts[:, None])
        self._refresh_codes()
        self.initialised.fill_(True)

    @torch.compiler.disable
    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, idx: torch.Tensor) -> None:
        counts, sums = self._batch_stats(flat, idx)
        self.usage.lerp_(counts, 1 - self.decay)
        self.sums.lerp_(sums, 1 - self.decay)
        self._refresh_codes()
        self._restart_dead_codes(flat)

    def _refresh_codes(self) -> None:
        # codes = sums / usage, with usage Laplace-smoothed so that an unused code does not divide by 0.
        total = self.usage.sum()
        smoothed = (self.usage + self.eps) / (total + self.codebook_size * self.eps) * total
        self.codes.copy_(self.sums / smoothed[:, None])

    def _restart_dead_codes(self, flat: torch.Tensor) -> None:
        dead = (self.usage < self.dead_code_threshold).nonzero().squeeze(1)
        if dead.numel() == 0:
            return
        flat = distributed.all_gather_cat(flat)   # re-seeded from the global batch, alike on every rank
        if dead.numel() > flat.shape[0]:          # more dead codes than vectors: the rest wait a step
            dead = dead[torch.randperm(dead.numel(), device=dead.device)[:flat.shape[0]]]
        seeds = _sample(flat, dead.numel())
        self.codes[dead] = seeds
        self.usage[dead] = self.dead_code_threshold
        self.sums[dead] = seeds * self.dead_code_threshold


class FSQuantizer(nn.Module):
    def __init__(self, levels: list[int]):
        super().__init__()
        if not levels or min(levels) < 2:
            raise ValueError(f"FSQ levels {list(levels)}: need at least one channel, each with >= 2 levels")
        self.levels = list(levels)
        self.codebook_size = math.prod(self.levels)
        with torch.device("cpu"):     # built on the CPU even under a meta-device build: it reads its levels back
            self.fsq = FSQ(levels=self.levels, preserve_symmetry=True)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z [..., channels] -> (quantised z in [-1, 1], code indices [...]). Rounding passes the
        gradient straight through; there is no codebook to learn, so no auxiliary loss."""
        # the library reads inputs of 4 or more dims as channel-first images: hand it [1, N, C]
        q, idx = self.fsq(z.reshape(1, -1, z.shape[-1]))
        return q.reshape(z.shape).to(z.dtype), idx.reshape(z.shape[:-1]).long()

    @property
    def codebook(self) -> torch.Tensor:
        """The code vectors [prod(L), channels], in the order of their indices."""
        return self.fsq.implicit_codebook

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code for z [..., channels] in [-1, 1] -> [...]."""
        return nearest_code(z, self.codebook)

    def lookup(self, idx: torch.Tensor) -> torch.Tensor:
        """Code indices [...] -> code vectors [..., channels]."""
        return self.codebook[idx]


def rotate_to(z: torch.Tensor, q: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """The rotation trick (Fifty et al. 2024, "Restructuring vector quantization with the rotation
    trick", sec. 4.2): returns q, but the gradient at q reaches z through the rotation and scaling
    that map z onto q, held constant, rather than copied unchanged (straight-through). Where z and
    its code disagree in direction, the encoder's gradient turns with them. vector-quantize-pytorch
    does this by default; with plain straight-through the demo's tokenizer came out at 26.68 dB
    against 26.76 (one seed each, NOTES.md eighth round)."""
    z_norm = z.norm(dim=-1, keepdim=True).clamp_min(eps)
    q_norm = q.norm(dim=-1, keepdim=True).clamp_min(eps)
    u, v = (z / z_norm).detach(), (q / q_norm).detach()
    r = F.normalize(u + v, dim=-1, eps=eps)
    # (I - 2 r r^T + 2 v u^T) z: the rotation in the plane of u and v that takes u to v
    rotated = z - 2 * r * (r * z).sum(-1, keepdim=True) + 2 * v * (u * z).sum(-1, keepdim=True)
    return rotated * (q_norm / z_norm).detach()


@torch.no_grad()
def lloyd(points: torch.Tensor, means: torch.Tensor, iters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means iterations from `means` [K, dim] over points [N, dim] -> (means, how many
    points each mean was last assigned). A mean left without points stays where it was."""
    counts = torch.zeros(len(means), device=points.device)
    for _ in range(iters):
        idx = nearest_code(points, means)
        counts = torch.bincount(idx, minlength=len(means)).float()
        sums = torch.zeros_like(means).index_add_(0, idx, points)
        means = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], means)
    return means, counts


@torch.no_grad()
def fit_clusters(points: torch.Tensor, k: int, seed: int = 0, restarts: int = 10, iters: int = 50) -> torch.Tensor:
    """The centres [k, dim] of k clusters of points [N, dim]: k-means from k-means++ starts (Arthur
    and Vassilvitskii 2007), the run with the least squared distance kept. Seeded: the same points
    give the same centres."""
    points = points.float()
    gen = torch.Generator(device="cpu").manual_seed(seed)
    best, best_cost = None, float("inf")
    for _ in range(restarts):
        means = points[torch.randint(len(points), (1,), generator=gen)]
        while len(means) < k:       # each next start drawn with probability ~ squared distance
            d2 = torch.cdist(points, means).min(1).values.pow(2).cpu()
            pick = torch.multinomial(d2 + 1e-12, 1, generator=gen) if d2.sum() > 0 else torch.randint(len(points), (1,), generator=gen)
            means = torch.cat([means, points[pick.to(points.device)]])
        means, _ = lloyd(points, means, iters)
        cost = float((points - means[nearest_code(points, means)]).pow(2).sum())
        if cost < best_cost:
            best, best_cost = means, cost
    return best


def _sample(vectors: torch.Tensor, n: int) -> torch.Tensor:
    """n rows of vectors [N, dim]: distinct ones where N >= n."""
    if vectors.shape[0] >= n:
        pick = torch.randperm(vectors.shape[0], device=vectors.device)[:n]
    else:
        pick = torch.randint(0, vectors.shape[0], (n,), device=vectors.device)
    return vectors[pick]


def codebook_stats(idx: torch.Tensor, codebook_size: int) -> dict[str, float]:
    """Fraction of codes used in a batch and the perplexity of their histogram."""
    counts = torch.bincount(idx.flatten(), minlength=codebook_size).float()
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum().item()
    return {"codes_used": (counts > 0).float().mean().item(), "perplexity": math.exp(entropy)}
