"""`robo-genie bench sim|data|train|play`: speed measured as JSON, with the hardware it ran on.

One module per benchmark: sim.py (MuJoCo episodes rendered per second), data.py (ingest and the
loader against what the GPUs consume), train.py (training steps, MFU), play.py (frames per second
while playing, with and without the rolling caches).
"""

from __future__ import annotations

import json
import os
import platform
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


def run_bench(cfg) -> dict:
    if cfg.what not in ("sim", "data", "train", "play"):
        raise ValueError(f"robo-genie bench: unknown benchmark {cfg.what!r}; available: sim, data, train, play")
    if cfg.what == "sim":
        from robo_genie.bench.sim import bench_sim
        result = bench_sim(cfg.scene, cfg.episodes, cfg.episode_len, cfg.resolution, list(cfg.workers), cfg.repeats)
    elif cfg.what == "train":
        from robo_genie.bench.train import bench_train
        result = bench_train(cfg)
    elif cfg.what == "play":
        from robo_genie.bench.play import bench_play
        result = bench_play(cfg)
    else:
        from robo_genie.bench.data import bench_data
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
