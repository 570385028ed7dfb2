"""`robo-genie bench ...`: speed measured as JSON, with the hardware it ran on.

bench data: see robo_genie/bench_data.py. bench train: see robo_genie/bench_train.py.

bench sim: MuJoCo episodes rendered per second, per worker count (each count renders the same
episodes into a scratch folder; the median of `repeats` runs is reported).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path


def hardware() -> dict:
    import mujoco
    import torch

    from robo_genie import cpu_memory

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "mujoco": mujoco.__version__, "mujoco_gl": os.environ.get("MUJOCO_GL"),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "malloc_keeps_freed_memory": cpu_memory.tuned}
    return info


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


def run_bench(cfg) -> dict:
    if cfg.what not in ("sim", "data", "train"):
        raise ValueError(f"robo-genie bench: unknown benchmark {cfg.what!r}; available: sim, data, train")
    if cfg.what == "sim":
        result = bench_sim(cfg.scene, cfg.episodes, cfg.episode_len, cfg.resolution, list(cfg.workers), cfg.repeats)
    elif cfg.what == "train":
        from robo_genie.bench_train import bench_train
        result = bench_train(cfg)
    else:
        from robo_genie.bench_data import bench_data
        result = bench_data(cfg)
    result["hardware"] = hardware()
    result["date"] = time.strftime("%Y-%m-%d")
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    if cfg.what == "sim":
        for r in result["results"]:
            print(f"{cfg.scene}: {r['workers']} worker(s): {r['episodes_per_s']} episodes/s "
                  f"({r['episodes_per_s_per_worker']} per worker, {r['frames_per_s']} frames/s)")
    elif cfg.what == "data":
        for r in result["ingest"]:
            print(f"ingest: {r['workers']} worker(s): {r['frames_per_s']} frames/s ({r['frames_per_s_per_worker']} per worker)")
        for r in result["loader"]:
            print(f"loader: {r['loader_workers']} DataLoader worker(s): {r['clips_per_s']} clips/s of {cfg.clip_len} frames")
        for name, v in result["verdict"].items():
            print(f"{name}: needs ~{v['needs_clips_per_s_per_gpu (estimate)']} clips/s per H100 (estimate); "
                  f"one loader here gives {v['loader_clips_per_s_one_rank_here']} ({v['headroom_per_rank']}x)")
    print(f"wrote {out}")
    return result
