"""`robo-genie bench data`: is the data path fast enough for the GPUs?

Measures, on this machine: ingest frames/s per worker (synthetic 320x256 episodes as mp4 files, or
as an RLDS dataset with RT-1's spec with source=rlds; decoded, centre-cropped and resized), loader clips/s (16-frame clips from frame shards, batches as
configured, with DataLoader workers), and per-frame size and decode speed of three storage formats
(raw uint8, as the shards store frames; PNG; JPEG). Compares the loader with what the `small` and
`robo_2p5b` configs consume per second on one H100, ESTIMATED from FLOPs (6 x parameters x tokens
per clip, at an assumed model-FLOPs utilisation of the H100's dense bf16 peak): no H100 measured it.
"""

from __future__ import annotations

import io
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

H100_BF16_DENSE_FLOPS = 989e12     # NVIDIA H100 SXM datasheet, dense bf16
ASSUMED_MFU = 0.4


def _write_videos(folder: Path, episodes: int, frames: int, size=(256, 320)) -> None:
    import av

    h, w = size
    rng = np.random.default_rng(0)
    for e in range(episodes):
        with av.open(str(folder / f"ep{e:03d}.mp4"), "w") as c:
            s = c.add_stream("mpeg4", rate=10)
            s.width, s.height, s.pix_fmt = w, h, "yuv420p"
            base = rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
            for t in range(frames):
                img = np.roll(base, 4 * t, axis=1)          # textured scene panning: real decode work
                for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    c.mux(p)
            for p in s.encode():
                c.mux(p)


def bench_ingest(source: str, data: Path, scratch: Path, workers: list[int], resolution: int,
                 repeats: int) -> list[dict]:
    from robo_genie.datasets.ingest import ingest_sliced

    n_frames = None
    rows = []
    for w in workers:
        times = []
        for r in range(repeats):
            out = scratch / f"ingest_w{w}_{r}"
            t0 = time.perf_counter()
            manifests = ingest_sliced(source, str(data), str(out), workers=w, resolution=resolution,
                                      progress=False)
            times.append(time.perf_counter() - t0)
            n_frames = sum(e["length"] for m in manifests for e in m["episodes"])
        sec = statistics.median(times)
        rows.append({"workers": w, "median_seconds": round(sec, 3), "frames": n_frames,
                     "frames_per_s": round(n_frames / sec, 1), "frames_per_s_per_worker": round(n_frames / sec / w, 1)})
    return rows


def bench_loader(shards: Path, clip_len: int, batch_size: int, loader_workers: list[int], batches: int,
                 repeats: int) -> list[dict]:
    from robo_genie.datasets.loader import clip_loader, open_clips

    dataset = open_clips(shards, clip_len)
    rows = []
    for nw in loader_workers:
        rates = []
        for r in range(repeats):
            it = clip_loader(dataset, batch_size, seed=r, num_workers=nw)
            for _ in range(3):                                  # warm-up: worker start, page cache
                next(it)
            t0 = time.perf_counter()
            for _ in range(batches):
                batch = next(it)
            rates.append(batches * batch_size / (time.perf_counter() - t0))
            del it
        assert batch["frames"].shape[1] == clip_len
        rows.append({"loader_workers": nw, "clips_per_s": round(statistics.median(rates), 1),
                     "clips_per_s_runs": [round(x, 1) for x in rates]})
    return rows


def bench_formats(frames: np.ndarray, repeats: int) -> list[dict]:
    """Per-frame bytes and single-core decode rate of raw uint8 / PNG / JPEG q95."""
    from PIL import Image

    def encode(img, fmt):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
        return buf.getvalue()

    rows = []
    for fmt in ("raw", "PNG", "JPEG"):
        blobs = [f.tobytes() for f in frames] if fmt == "raw" else [encode(f, fmt) for f in frames]
        shape = frames.shape[1:]
        rates = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for b in blobs:
                if fmt == "raw":
                    np.frombuffer(b, np.uint8).reshape(shape).copy()
                else:
                    np.asarray(Image.open(io.BytesIO(b)).convert("RGB"))
            rates.append(len(blobs) / (time.perf_counter() - t0))
        rows.append({"format": fmt if fmt != "JPEG" else "JPEG q95", "bytes_per_frame": int(np.mean([len(b) for b in blobs])),
                     "decode_frames_per_s_one_core": round(statistics.median(rates), 1)})
    return rows


def consumption_estimates(clip_len: int) -> dict:
    """Clips/s each stage of `small` and `robo_2p5b` eats on one H100 (estimate from FLOPs)."""
    from omegaconf import OmegaConf

    from robo_genie.config import MODEL_PRESETS
    from robo_genie.models import build_part

    out = {}
    for name in ("small", "robo_2p5b"):
        cfg = OmegaConf.structured(MODEL_PRESETS[name])
        stages = {}
        for part in ("tokenizer", "lam", "dynamics"):
            with torch.device("meta"):
                params = sum(p.numel() for p in build_part(part, cfg).parameters())
            patch = cfg.lam.patch if part == "lam" else cfg.tokenizer.patch
            tokens = (cfg.image_size // patch) ** 2 * clip_len
            flops = 6 * params * tokens
            per_gpu = ASSUMED_MFU * H100_BF16_DENSE_FLOPS / flops
            stages[part] = {"parameters": params, "tokens_per_clip": tokens, "train_flops_per_clip": flops,
                            "clips_per_s_one_h100": round(per_gpu, 1), "clips_per_s_8_gpus": round(8 * per_gpu, 1)}
        out[name] = {"image_size": cfg.image_size, "stages": stages,
                     "hungriest_stage": max(stages, key=lambda k: stages[k]["clips_per_s_8_gpus"]),
                     "max_clips_per_s_8_gpus": max(s["clips_per_s_8_gpus"] for s in stages.values())}
    return out


def bench_data(cfg) -> dict:
    scratch = Path(tempfile.mkdtemp(prefix="robo_genie_bench_data_"))
    try:
        if cfg.source == "rlds":
            from robo_genie.datasets.rlds_synthetic import make_rt1_like
            data = make_rt1_like(scratch / "rlds", cfg.episodes, cfg.episode_len)
            described = "RLDS with RT-1's feature spec: 256x320 JPEG q95 per step, in TFRecords"
        elif cfg.source == "video_folder":
            data = scratch / "videos"
            data.mkdir()
            _write_videos(data, cfg.episodes, cfg.episode_len)
            described = "mpeg4 320x256 at 10 fps, textured panning scene"
        else:
            raise ValueError(f"bench data: source={cfg.source!r}; available: video_folder, rlds")
        ingest = bench_ingest(cfg.source, data, scratch, list(cfg.workers), cfg.resolution, cfg.repeats)
        shards = scratch / "ingest_w1_0"
        loader = bench_loader(shards, cfg.clip_len, cfg.batch_size, list(cfg.loader_workers), cfg.batches, cfg.repeats)
        from robo_genie.datasets.shards import FrameShards
        s = FrameShards(shards)
        sample = np.concatenate([s.read(i) for i in range(len(s.episodes))])[:256]
        formats = bench_formats(sample, cfg.repeats)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    need = consumption_estimates(cfg.clip_len)
    # Under torchrun every GPU rank runs its own loader, so one rank's need is compared with one
    # loader process here; a node needs 8 of them (and 8+ cores).
    best = max(loader, key=lambda r: r["clips_per_s"])
    verdict = {}
    for name, n in need.items():
        per_gpu = max(s["clips_per_s_one_h100"] for s in n["stages"].values())
        verdict[name] = {"needs_clips_per_s_per_gpu (estimate)": per_gpu,
                         "needs_clips_per_s_8_gpus (estimate)": n["max_clips_per_s_8_gpus"],
                         "loader_clips_per_s_one_rank_here": best["clips_per_s"],
                         "headroom_per_rank": round(best["clips_per_s"] / per_gpu, 2),
                         "bottleneck": best["clips_per_s"] < per_gpu}
    return {"benchmark": "data", "clip_len": cfg.clip_len, "batch_size": cfg.batch_size,
            "resolution": cfg.resolution, "episodes": cfg.episodes, "episode_len": cfg.episode_len,
            "source": cfg.source, "source_data": described, "ingest": ingest, "loader": loader,
            "storage_formats": formats, "consumption": need,
            "consumption_note": f"ESTIMATE: 6 x parameters x tokens per clip, at {ASSUMED_MFU:.0%} of the H100's "
                                f"{H100_BF16_DENSE_FLOPS / 1e12:.0f} TFLOPS dense bf16; attention FLOPs left out",
            "verdict": verdict}
