"""source -> frame shards: resample in time, centre-crop and resize, write shards atomically."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from robo_genie.datasets.shards import ShardWriter
from robo_genie.datasets.sources import SOURCES, IngestError, RawEpisode
from robo_genie.datasets.transforms import center_crop_resize
from tqdm import tqdm


def resample(frames: Iterator[tuple[float, np.ndarray]], fps: float | None) -> Iterator[np.ndarray]:
    """Keep frames on a grid of 1/fps seconds (nearest earlier frame); all frames if fps is None."""
    next_t = 0.0
    for t, frame in frames:
        if fps is None:
            yield frame
            continue
        while t + 1e-6 >= next_t:      # a slow source can fill several slots with one frame
            yield frame
            next_t += 1.0 / fps


def _episode_arrays(ep: RawEpisode, fps: float | None, resolution: int) -> np.ndarray:
    frames = [center_crop_resize(f, resolution) for f in resample(ep.frames, fps)]
    if not frames:
        raise IngestError(f"{ep.file}: no frames")
    return np.stack(frames)


def ingest(source: str, path: str, out: str, *, fps: float | None = None, resolution: int = 64,
           episode_frames: int = 0, shard_frames: int = 4096, progress: bool = True) -> dict:
    if source not in SOURCES:
        raise IngestError(f"source={source!r} is not known; available: {', '.join(sorted(SOURCES))}")
    src = SOURCES[source](path)
    writer = None
    for ep in tqdm(src.episodes(), desc=f"ingest {path}", unit="ep", disable=not progress):
        frames = _episode_arrays(ep, fps, resolution)
        rate = fps or ep.fps or 10.0
        if writer is None:
            writer = ShardWriter(out, source=source, fps=rate, image_size=resolution,
                                 shard_frames=shard_frames, extra={"input": str(Path(path).resolve())})
        chunks = [frames] if episode_frames <= 0 else \
            [frames[i:i + episode_frames] for i in range(0, len(frames), episode_frames)]
        for k, chunk in enumerate(chunks):
            writer.add(ep.name if len(chunks) == 1 else f"{ep.name}#{k}", chunk)
    if writer is None:
        raise IngestError(f"{path}: the source yielded no episodes")
    return writer.close()
