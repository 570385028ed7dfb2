"""Random fixed-length clips from frame shards (one folder, a mixture, or a folder of ingest
slices), in a resumable order.

The order of clips depends only on (seed, position), so training resumes at the exact batch it
stopped at: the sampler is rebuilt with `start = step * batch_size`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from robo_genie.datasets.shards import MANIFEST, FrameShards, ShardError
from torch.utils.data import DataLoader, Dataset, Sampler


class ClipDataset(Dataset):
    """Every window of `clip_len` consecutive steps inside one episode: `frames` from frame shards,
    `tokens` and `latent_actions` from token shards, plus `labels` where the data has them."""

    def __init__(self, root: str | Path, clip_len: int, require: tuple[str, ...] = ()):
        self.shards = FrameShards(root)
        self.clip_len = clip_len
        wanted = ("frames", "labels") if self.shards.kind == "frames" else ("tokens", "latent_actions", "labels")
        self.keys = [k for k in wanted if self.shards.has(k)]
        for key in require:       # arrays a stage needs beyond these (e.g. recorded actions)
            if not self.shards.has(key):
                raise ShardError(f"{root}: its episodes carry no `{key}`. Give shards that have them "
                                 f"(`robo-genie sim generate`, LeRobot or RLDS ingest keep actions) or "
                                 f"train on the LAM's codes (model.dynamics.actions=latent).")
            self.keys.append(key)
        self.index = np.array([(e, s) for e, ep in enumerate(self.shards.episodes)
                               for s in range(ep["length"] - clip_len + 1)], dtype=np.int64)
        if len(self.index) == 0:
            longest = max(ep["length"] for ep in self.shards.episodes)
            raise ShardError(f"{root}: no episode has {clip_len} frames (longest has {longest}); "
                             f"lower the clip length or ingest longer episodes")

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        e, s = (int(v) for v in self.index[i])
        return {k: torch.from_numpy(np.ascontiguousarray(self.shards.read(e, s, self.clip_len, key=k)))
                for k in self.keys}


class ResumableSampler(Sampler[int]):
    """An endless stream of shuffled indices; epoch k uses the permutation seeded by (seed, k)."""

    def __init__(self, n: int, seed: int, start: int = 0):
        self.n, self.seed, self.start = n, seed, start

    def __iter__(self) -> Iterator[int]:
        epoch, pos = divmod(self.start, self.n)
        while True:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            yield from torch.randperm(self.n, generator=g)[pos:].tolist()
            epoch, pos = epoch + 1, 0


MIXTURE_FILE = "mixture.json"


def is_mixture(root: str | Path) -> bool:
    """A mixture.json, or a folder of ingest slices without a manifest of its own."""
    root = Path(root)
    return (root / MIXTURE_FILE).is_file() or (not (root / MANIFEST).is_file() and bool(_slices(root)))


class MixtureClipDataset(Dataset):
    """Several shard folders read as one: index i runs through the members' windows one after the
    other, and WeightedResumableSampler draws members by weight. Made from a `mixture.json` (member
    folders and sampling weights, written by `robo-genie ingest source=rlds mixture=...`) or from a
    folder of ingest slices (`slice_*`, weighted by size: uniform over all windows)."""

    def __init__(self, parts: list[ClipDataset], weights: np.ndarray, where: Path):
        kinds = {p.shards.kind for p in parts}
        if len(kinds) != 1:
            raise ShardError(f"{where}: members mix shard kinds {sorted(kinds)}")
        self.parts, self.weights = parts, np.asarray(weights, float)
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])

    @classmethod
    def from_mixture(cls, root: Path, clip_len: int, require: tuple[str, ...] = ()) -> MixtureClipDataset:
        spec = json.loads((root / MIXTURE_FILE).read_text())
        members = spec.get("members") or []
        if not members or any(m.get("weight", 0) <= 0 for m in members):
            raise ShardError(f"{root / MIXTURE_FILE}: needs members with positive weights, got {members}")
        return cls([ClipDataset(root / m["path"], clip_len, require) for m in members],
                   [m["weight"] for m in members], root / MIXTURE_FILE)

    @classmethod
    def from_slices(cls, root: Path, clip_len: int, require: tuple[str, ...] = ()) -> MixtureClipDataset:
        parts = [ClipDataset(d, clip_len, require) for d in _slices(root)]
        return cls(parts, [len(p) for p in parts], root)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        part = int(np.searchsorted(self.offsets, i, side="right") - 1)
        return self.parts[part][i - int(self.offsets[part])]


def _slices(root: Path) -> list[Path]:
    return sorted(d for d in Path(root).glob("slice_*") if (d / MANIFEST).is_file())


class WeightedResumableSampler(Sampler[int]):
    """An endless stream of windows: member by weight, then a uniform window within it. Position p
    of epoch k (epochs as long as the dataset) depends only on (seed, k, p), so resuming is exact."""

    def __init__(self, offsets: np.ndarray, weights: np.ndarray, seed: int, start: int = 0):
        self.offsets, self.seed, self.start = torch.tensor(offsets), seed, start
        self.weights = torch.tensor(weights / weights.sum())
        self.n = int(offsets[-1])

    def __iter__(self) -> Iterator[int]:
        epoch, pos = divmod(self.start, self.n)
        sizes = self.offsets.diff()
        while True:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            part = torch.multinomial(self.weights, self.n, replacement=True, generator=g)
            local = (torch.rand(self.n, generator=g, dtype=torch.float64) * sizes[part]).long()
            yield from (self.offsets[part] + local)[pos:].tolist()
            epoch, pos = epoch + 1, 0


def open_clips(root: str | Path, clip_len: int, require: tuple[str, ...] = ()) -> ClipDataset | MixtureClipDataset:
    """A shard folder, or a mixture of them; `require`: arrays every episode must also carry."""
    root = Path(root)
    if (root / MIXTURE_FILE).is_file():
        return MixtureClipDataset.from_mixture(root, clip_len, require)
    if is_mixture(root):
        return MixtureClipDataset.from_slices(root, clip_len, require)
    return ClipDataset(root, clip_len, require)


class RankSlice(Sampler[int]):
    """Rank r's part of every global batch: of each run of batch_size x world positions in the
    stream, the r-th block of batch_size. Two ranks at batch 2 then see the clips one process sees
    at batch 4, in the same order."""

    def __init__(self, stream: Sampler[int], batch_size: int, rank: int, world: int):
        self.stream, self.batch_size, self.rank, self.world = stream, batch_size, rank, world

    def __iter__(self) -> Iterator[int]:
        lo, hi = self.rank * self.batch_size, (self.rank + 1) * self.batch_size
        for pos, i in enumerate(self.stream):
            if lo <= pos % (self.batch_size * self.world) < hi:
                yield i


def clip_loader(dataset: ClipDataset | MixtureClipDataset, batch_size: int, seed: int, start_batch: int = 0,
                num_workers: int = 0, rank: int = 0, world: int = 1) -> Iterator[dict[str, torch.Tensor]]:
    """Batches of `batch_size` clips (per process: rank `rank` of `world` reads its slice of each
    global batch of batch_size x world), from batch `start_batch` on."""
    start = start_batch * batch_size * world
    if isinstance(dataset, MixtureClipDataset):
        sampler = WeightedResumableSampler(dataset.offsets, dataset.weights, seed, start)
    else:
        sampler = ResumableSampler(len(dataset), seed, start)
    if world > 1:
        sampler = RankSlice(sampler, batch_size, rank, world)
    # Its own generator: a DataLoader otherwise draws a worker seed from the global RNG when it
    # starts, which would shift the training RNG stream of a resumed run.
    return iter(DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                           drop_last=True, persistent_workers=num_workers > 0,
                           generator=torch.Generator().manual_seed(seed)))
