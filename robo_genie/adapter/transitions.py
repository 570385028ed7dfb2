"""Labelled transitions: what an adapter is fitted and judged on.

Each transition x_t -> x_{t+1} of a shard episode carries the LAM's code for it (read by the bundle's
LAM), the real action that the shards recorded, and features of the observation at t: the robot's
state (proprioception) and its change since the step before, where the shards record a state, else
the bundle's tokenizer encoder pooled to a coarse grid. On the arm scenes the state told the
`learned` adapter what the image features never did (NOTES.md, twentieth round), and its change
(how the robot was moving) added more (2026-12-07).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from robo_genie.datasets.shards import FrameShards, ShardError

FEATURE_GRID = 4            # observation features: the tokenizer's code vectors, mean-pooled to 4x4 cells


@dataclass
class Transitions:
    codes: np.ndarray           # [N] LAM codes
    features: np.ndarray        # [N, F] observation features at t
    actions: np.ndarray         # [N, A] recorded real actions
    episodes: np.ndarray        # [N] index of the episode in its shard folder
    observation: str = "image"  # what the features are: "state" (the robot's) or "image" (pooled encoder)
    next_features: np.ndarray | None = None     # [N, F] the features at t+1 (state observations only)

    def __len__(self) -> int:
        return len(self.codes)

    def _arrays(self) -> list[str]:
        return [f.name for f in fields(self) if f.name != "observation" and getattr(self, f.name) is not None]

    def subset(self, mask: np.ndarray) -> Transitions:
        return replace(self, **{n: getattr(self, n)[mask] for n in self._arrays()})

    @staticmethod
    def concatenate(parts: list[Transitions]) -> Transitions:
        return replace(parts[0], **{n: np.concatenate([getattr(p, n) for p in parts]) for n in parts[0]._arrays()})


def state_observation(states: np.ndarray) -> np.ndarray:
    """A robot's successive states [T, n] -> what an adapter reads at each step, [T, 2n]: the state and
    its change since the step before (none at the first), i.e. where the robot is and how it moves."""
    states = np.asarray(states, np.float32)
    return np.concatenate([states, np.diff(states, axis=0, prepend=states[:1])], -1)


def cell_means(z: torch.Tensor, grid: int) -> torch.Tensor:
    """Per-token vectors of square token grids [B, S, D] -> their means over grid x grid cells, [B, D, grid, grid]."""
    g = int(round(z.shape[1] ** 0.5))
    return F.adaptive_avg_pool2d(z.float().transpose(1, 2).reshape(len(z), -1, g, g), grid)


@torch.no_grad()
def observation_features(tokenizer: torch.nn.Module, frames: np.ndarray, device, batch: int = 64) -> np.ndarray:
    """uint8 frames [N, H, W, 3] -> [N, FEATURE_GRID^2 * code_dim] pooled tokenizer code vectors."""
    out = []
    for i in range(0, len(frames), batch):
        x = torch.from_numpy(frames[i:i + batch]).to(device).float().div(255)[:, None]
        z = tokenizer.encode_continuous(x)[:, 0]                         # [B, S, D]
        out.append(cell_means(z, FEATURE_GRID).flatten(1).cpu().numpy())
    return np.concatenate(out)


def require_actions(shards: FrameShards) -> None:
    if not shards.has("actions"):
        raise ShardError(f"{shards.root} has no recorded actions: an adapter needs shards that log the robot's "
                         f"commands (LeRobot's `action` column, RLDS `action`, or `robo-genie sim generate`)")


def read_transitions(world, data_path: str | Path, episodes: list[int] | None = None) -> Transitions:
    """The transitions of `episodes` (default: all) of a shard folder, with codes from `world`'s LAM."""
    shards = FrameShards(data_path)
    require_actions(shards)
    observation = "state" if shards.has("states") else "image"
    episodes = range(len(shards.episodes)) if episodes is None else episodes
    parts = []
    for e in episodes:
        video = shards.read(e)
        if len(video) < 2:
            continue
        codes = np.asarray(world.infer_actions(video))
        actions = shards.read(e, key="actions")[:len(video) - 1].astype(np.float32)
        if observation == "state":
            obs = state_observation(shards.read(e, key="states")[:len(video)])
            parts.append(Transitions(codes, obs[:-1], actions, np.full(len(codes), e), observation, obs[1:]))
        else:
            features = observation_features(world.tokenizer, video[:-1], world.device)
            parts.append(Transitions(codes, features, actions, np.full(len(codes), e), observation))
    if not parts:
        raise ShardError(f"{data_path}: no episode with two or more frames among those selected")
    return Transitions.concatenate(parts)


def labelled_episodes(n_episodes: int, fraction: float, seed: int = 0) -> list[int]:
    """A seeded choice of round(fraction * n) episodes (at least one): the labelled share of a dataset."""
    if not 0 < fraction <= 1:
        raise ValueError(f"labelled={fraction}: expected a fraction of the episodes in (0, 1]")
    k = max(1, int(round(fraction * n_episodes)))
    return sorted(np.random.default_rng(seed).permutation(n_episodes)[:k].tolist())


def action_names(shards: FrameShards) -> list[str]:
    n = shards.read(0, 0, 1, key="actions").shape[-1]
    names = shards.manifest.get("action_names") or []
    return list(names) if len(names) == n else [f"a{i}" for i in range(n)]


def state_names(shards: FrameShards) -> list[str]:
    """The names of the robot state's values, where the shards' manifest gives them."""
    return list((shards.manifest.get("extra") or {}).get("state_names", []))
