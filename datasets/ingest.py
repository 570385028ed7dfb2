"""source -> frame shards: resample in time, centre-crop and resize, write shards atomically."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from robo_genie.datasets.shards import MANIFEST, ShardWriter, read_manifest
from robo_genie.datasets.sources import SOURCES, IngestError, RawEpisode
from robo_genie.datasets.transforms import SQUARE_POLICIES, to_square
from robo_genie.progress import progress_bar


def resample(frames: Iterator[tuple[float, np.ndarray]], fps: float | None) -> Iterator[tuple[int, np.ndarray]]:
    """Keep frames on a grid of 1/fps seconds (nearest earlier frame); all frames if fps is None.
    Yields (index of the source frame, frame), so per-step arrays can follow the same choice."""
    next_t = 0.0
    for i, (t, frame) in enumerate(frames):
        if fps is None:
            yield i, frame
            continue
        while t + 1e-6 >= next_t:      # a slow source can fill several slots with one frame
            yield i, frame
            next_t += 1.0 / fps


def _episode_arrays(ep: RawEpisode, fps: float | None, resolution: int,
                    crop: str = "center_crop") -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The resampled frames, and the recorded per-step arrays (actions, states) at the same steps."""
    picked = [(i, to_square(f, resolution, crop)) for i, f in resample(ep.frames, fps)]
    if not picked:
        raise IngestError(f"{ep.file}: no frames")
    index = np.array([i for i, _ in picked])
    per_step = {}
    for key in ("actions", "states"):
        values = getattr(ep, key)
        if values is not None:
            if len(values) <= index.max():
                raise IngestError(f"{ep.name} ({ep.file}): {len(values)} {key} for {index.max() + 1} frames")
            per_step[key] = values[index].astype(np.float32)
    return np.stack([f for _, f in picked]), per_step


class NoEpisodesError(IngestError):
    """Nothing usable came out of the source (or out of this slice of it)."""


def _input_id(path: str) -> str:
    """How the manifest names the input: a URL as given, a local path resolved."""
    return path if "://" in str(path) else str(Path(path).resolve())


def _resume(out: str, source: str, path: str, shard_frames: int) -> tuple[ShardWriter | None, set[str]]:
    """A rerun into the same out= continues where the last run stopped: the episodes its manifest
    lists (shards are written whole and the manifest after each) are not read again."""
    if not (Path(out) / MANIFEST).is_file():
        return None, set()
    manifest = read_manifest(out)
    if manifest.get("source") != source or manifest.get("extra", {}).get("input") != _input_id(path):
        raise IngestError(f"{out} already holds shards from {manifest.get('extra', {}).get('input')} "
                          f"(source={manifest.get('source')}); choose a new out=")
    done = {e["name"] for e in manifest["episodes"]} | {s["name"] for s in manifest["skipped"]}
    print(f"resuming: {len(manifest['episodes'])} episodes already in {out}")
    return ShardWriter.resume(out, manifest, shard_frames), done


def ingest(source: str, path: str, out: str, *, fps: float | None = None, resolution: int = 64,
           episode_frames: int = 0, shard_frames: int = 4096, progress: bool = True,
           camera: str | None = None, on_error: str = "fail", min_frames: int = 1,
           source_options: dict | None = None, num_shards: int = 1, shard_index: int = 0,
           crop: str = "center_crop") -> dict:
    """on_error=fail stops at the first bad episode (what was written stays valid); on_error=skip
    leaves it out and lists it, with the reason, under "skipped" in the manifest. `source_options`
    go to the source's constructor (e.g. split=, fps= for rlds). With num_shards > 1 only the
    episodes i with i % num_shards == shard_index (in the source's order) are read."""
    if crop not in SQUARE_POLICIES:
        raise IngestError(f"crop={crop!r}: expected one of {', '.join(SQUARE_POLICIES)}")
    if not 0 <= shard_index < num_shards:
        raise IngestError(f"shard_index={shard_index} must be in [0, num_shards={num_shards})")
    if source not in SOURCES:
        raise IngestError(f"source={source!r} is not known; available: {', '.join(sorted(SOURCES))}")
    if on_error not in ("fail", "skip"):
        raise IngestError(f"on_error={on_error!r}: expected fail or skip")
    options = dict(source_options or {}) | ({"camera": camera} if camera else {})
    src = SOURCES[source](path, **options)
    sliced_by_source = num_shards > 1 and hasattr(src, "select_slice")
    if sliced_by_source:
        src.select_slice(num_shards, shard_index)       # the source reads only its slice
    writer, done = _resume(out, source, path, shard_frames)
    skipped: list[tuple[str, str]] = []
    try:
        for i, ep in enumerate(progress_bar(src.episodes(), desc=f"ingest {path}", unit="ep", bar=progress)):
            if not sliced_by_source and i % num_shards != shard_index:
                continue                    # another slice's episode (its frames are never decoded)
            if ep.name in done or f"{ep.name}#0" in done:
                continue                    # written (or skipped) by an earlier run into the same out=
            try:
                frames, per_step = _episode_arrays(ep, fps, resolution, crop)
                if len(frames) < min_frames:
                    raise IngestError(f"{ep.name} ({ep.file}): {len(frames)} frames, fewer than min_frames={min_frames}")
            except IngestError as e:
                if on_error == "fail":
                    raise
                print(f"skipping {ep.name}: {e}")
                skipped.append((ep.name, str(e)))
                continue
            rate = fps or ep.fps or 10.0
            if writer is None:
                extra = {"input": _input_id(path), "crop": crop}
                if getattr(src, "state_names", None):
                    extra["state_names"] = src.state_names
                writer = ShardWriter(out, source=source, fps=rate, image_size=resolution,
                                     shard_frames=shard_frames, extra=extra,
                                     action_names=getattr(src, "action_names", None))
            spans = [(0, len(frames))] if episode_frames <= 0 else \
                [(i, min(i + episode_frames, len(frames))) for i in range(0, len(frames), episode_frames)]
            for k, (a, b) in enumerate(spans):
                writer.add_arrays(ep.name if len(spans) == 1 else f"{ep.name}#{k}",
                                  {"frames": frames[a:b], **{key: v[a:b] for key, v in per_step.items()}})
    finally:
        if writer is not None:        # also on an error or Ctrl-C: keep the whole episodes read so far
            for name, reason in skipped:
                writer.skip(name, reason)
            manifest = writer.close()
    if writer is None:
        why = f" ({len(skipped)} skipped, e.g. {skipped[0][1]})" if skipped else ""
        raise NoEpisodesError(f"{path}: the source yielded no usable episodes{why}")
    return manifest


def summary(manifest: dict, out: str | Path) -> str:
    n = sum(e["length"] for e in manifest["episodes"])
    skipped = f"; skipped {len(manifest['skipped'])} (listed in manifest.json)" if manifest["skipped"] else ""
    return f"wrote {len(manifest['episodes'])} episodes ({n} frames) to {out}{skipped}"


def slice_dir(out: str | Path, index: int, total: int) -> Path:
    return Path(out) / f"slice_{index:05d}-of-{total:05d}"


def _ingest_slice(kwargs: dict) -> dict | None:
    try:
        return ingest(**kwargs)
    except NoEpisodesError:
        return None                         # a small source can leave a slice empty


def ingest_sliced(source: str, path: str, out: str, *, workers: int = 1, num_shards: int = 1,
                  shard_index: int = 0, **kwargs) -> list[dict]:
    """Ingest in `workers` processes on this machine, and/or one slice of `num_shards` machines.
    Every (machine, worker) pair owns one global slice, written to OUT/slice_KKKKK-of-NNNNN (each its
    own resumable shard folder; training reads the folder of slices as one dataset). Every machine
    must use the same `workers`. With workers=1 and num_shards=1 the shards go to OUT itself."""
    if workers < 1 or num_shards < 1:
        raise IngestError(f"workers={workers} and num_shards={num_shards} must be >= 1")
    if workers == 1 and num_shards == 1:
        return [ingest(source, path, out, **kwargs)]
    total = workers * num_shards
    jobs = [dict(kwargs, source=source, path=path, out=str(slice_dir(out, g, total)), num_shards=total,
                 shard_index=g) for g in range(shard_index * workers, (shard_index + 1) * workers)]
    if workers == 1:
        results = [_ingest_slice(jobs[0])]
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            results = list(pool.map(_ingest_slice, jobs))
    return [r for r in results if r is not None]


def job_options(cfg) -> dict:
    """The ingest_sliced settings of an `IngestJob` config shared by every source."""
    return {k: cfg[k] for k in ("workers", "num_shards", "shard_index", "fps", "resolution", "episode_frames",
                                "shard_frames", "crop", "progress", "on_error", "min_frames")}
