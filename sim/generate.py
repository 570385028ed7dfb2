"""Render scripted tabletop episodes into frame shards, in parallel worker processes."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

from robo_genie.datasets.shards import ShardWriter
from robo_genie.sim import tabletop
from tqdm import tqdm

_sim = None


def _worker_episode(args: tuple[int, int, int]):
    global _sim
    seed, length, resolution = args
    if _sim is None:                      # one scene + GL context per worker process
        _sim = tabletop.TabletopSim(resolution)
    return seed, _sim.episode(seed, length)


def generate(out: str | Path, episodes: int, episode_len: int = 32, resolution: int = 64,
             workers: int = 1, seed: int = 0, progress: bool = True) -> dict:
    """Write `episodes` episodes (seeds seed*100003 + i) to a shard directory at `out`."""
    jobs = [(seed * 100_003 + i, episode_len, resolution) for i in range(episodes)]
    writer = ShardWriter(out, source="mujoco_tabletop", fps=tabletop.FPS, image_size=resolution,
                         action_names=list(tabletop.ACTION_NAMES), label_names=list(tabletop.PRIMITIVES),
                         extra={"scene": "tabletop", "seed": seed})
    bar = tqdm(total=episodes, desc=f"sim -> {out}", unit="ep", disable=not progress)
    if workers > 1:
        ctx = mp.get_context("spawn")     # a fresh process per worker: GL contexts do not fork
        with ctx.Pool(workers) as pool:
            results = pool.imap(_worker_episode, jobs, chunksize=4)
            for s, ep in results:
                writer.add(f"ep{s}", ep.frames, ep.actions, ep.labels)
                bar.update()
    else:
        for job in jobs:
            s, ep = _worker_episode(job)
            writer.add(f"ep{s}", ep.frames, ep.actions, ep.labels)
            bar.update()
    bar.close()
    return writer.close()
