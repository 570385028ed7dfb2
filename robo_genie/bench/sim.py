"""`robo-genie bench sim`: MuJoCo episodes rendered per second, per worker count (each count
renders the same episodes into a scratch folder; the median of `repeats` runs is reported)."""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path


def bench_sim(scene: str, episodes: int, episode_len: int, resolution: int, workers: list[int],
              repeats: int = 3) -> dict:
    from robo_genie.sim.generate import generate

    rows = []
    for w in workers:
        times = []
        for _ in range(repeats):
            scratch = Path(tempfile.mkdtemp(prefix="robo_genie_bench_"))
            try:
                t0 = time.perf_counter()
                generate(scratch / "shards", episodes, episode_len, resolution, workers=w, progress=False, scene=scene)
                times.append(time.perf_counter() - t0)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        sec = statistics.median(times)
        rows.append({"workers": w, "median_seconds": round(sec, 3), "seconds": [round(t, 3) for t in times],
                     "episodes_per_s": round(episodes / sec, 3),
                     "episodes_per_s_per_worker": round(episodes / sec / w, 3),
                     "frames_per_s": round(episodes * episode_len / sec, 1)})
    base = rows[0]["episodes_per_s"]
    for r in rows:
        r["speedup_vs_first"] = round(r["episodes_per_s"] / base, 2)
    return {"benchmark": "sim", "scene": scene, "episodes": episodes, "episode_len": episode_len,
            "resolution": resolution, "repeats": repeats,
            "note": "wall time includes starting the worker processes and writing shards", "results": rows}
