"""Render scripted tabletop episodes into frame shards, in parallel worker processes."""

from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
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
        # A fresh process per worker (GL contexts do not fork). Unlike multiprocessing.Pool, the
        # executor fails when a worker dies instead of starting new ones forever.
        try:
            with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
                for s, ep in pool.map(_worker_episode, jobs, chunksize=4):
                    writer.add(f"ep{s}", ep.frames, ep.actions, ep.labels)
                    bar.update()
        except BrokenProcessPool as e:
            raise RuntimeError(
                "a simulation worker process died. If generate() is called from a script, put the call "
                "under `if __name__ == \"__main__\":` (workers are spawned and import the script "
                "again); otherwise run with workers=1 to see the error.") from e
    else:
        for job in jobs:
            s, ep = _worker_episode(job)
            writer.add(f"ep{s}", ep.frames, ep.actions, ep.labels)
            bar.update()
    bar.close()
    return writer.close()
