"""Frame shards: the on-disk form of every video source.

A shard directory holds `manifest.json` (episodes, lengths, fps, source, image size, action and
label names) and `shard_NNNNN.safetensors` files of whole episodes at training resolution:
`frames` [N, H, W, 3] uint8, and when the source has them `actions` [N, A] float32 and `labels`
[N] int64 (row t describes what happened after frame t). Token shards (manifest kind "tokens",
written by pre-tokenisation) hold `tokens` [N, h, w] int16 and `latent_actions` [N] int64 instead
of frames. safetensors is read lazily (clips are
sliced without loading a whole shard) and cannot execute code. Files are written under a temporary
name and renamed, and the manifest is rewritten after every shard, so an interrupted ingest leaves
a valid dataset of the shards it finished.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file
from robo_genie.safe_write import write_text_atomic, writing

MANIFEST = "manifest.json"
FORMAT = "robo_genie.frame_shards/1"
KINDS = ("frames", "tokens")      # a kind is also the name of the per-step array every episode has


class ShardError(ValueError):
    """A frame-shard directory that cannot be read; the message names the path and the fix."""


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=1), what=path.name)


class ShardWriter:
    """Accumulates episodes and writes them as shards of about `shard_frames` frames."""

    def __init__(self, out: str | Path, *, source: str, fps: float, image_size: int,
                 shard_frames: int = 4096, action_names: list[str] | None = None,
                 label_names: list[str] | None = None, extra: dict | None = None, kind: str = "frames"):
        if kind not in KINDS:
            raise ValueError(f"shard kind {kind!r}: expected one of {', '.join(KINDS)}")
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.shard_frames = shard_frames
        self.main_key = kind
        self.manifest = {"format": FORMAT, "kind": kind, "source": source, "fps": fps, "image_size": image_size,
                         "action_names": action_names, "label_names": label_names,
                         "extra": extra or {}, "episodes": [], "skipped": []}
        self._pending: list[tuple[str, dict[str, np.ndarray]]] = []
        self._pending_frames = 0

    @classmethod
    def resume(cls, out: str | Path, manifest: dict, shard_frames: int = 4096) -> ShardWriter:
        """Append to a shard directory written earlier (new shards get new numbers)."""
        writer = cls(out, source=manifest["source"], fps=manifest["fps"], image_size=manifest["image_size"],
                     shard_frames=shard_frames, kind=manifest.get("kind", "frames"))
        writer.manifest = manifest
        return writer

    def add(self, name: str, frames: np.ndarray, actions: np.ndarray | None = None,
            labels: np.ndarray | None = None) -> None:
        size = self.manifest["image_size"]
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != (size, size, 3):
            raise ShardError(f"episode {name}: frames must be uint8 [T, {size}, {size}, 3], "
                             f"got {frames.dtype} {list(frames.shape)}")
        arrays = {"frames": frames}
        if actions is not None:
            arrays["actions"] = np.asarray(actions, np.float32)
        if labels is not None:
            arrays["labels"] = np.asarray(labels, np.int64)
        self.add_arrays(name, arrays)

    def add_arrays(self, name: str, arrays: dict[str, np.ndarray]) -> None:
        """One episode as named per-step arrays (all of the same length, the kind's main key among them)."""
        if self.main_key not in arrays:
            raise ShardError(f"episode {name}: a {self.manifest['kind']} shard needs {self.main_key!r}")
        n = len(arrays[self.main_key])
        if any(len(a) != n for a in arrays.values()):
            raise ShardError(f"episode {name}: per-step arrays of different lengths "
                             f"{ {k: len(a) for k, a in arrays.items()} }")
        self._pending.append((name, arrays))
        self._pending_frames += n
        if self._pending_frames >= self.shard_frames:
            self.flush()

    def skip(self, name: str, reason: str) -> None:
        self.manifest["skipped"].append({"name": name, "reason": reason})

    def flush(self) -> None:
        if not self._pending:
            return
        index = len({e["shard"] for e in self.manifest["episodes"]})
        shard = f"shard_{index:05d}.safetensors"
        keys = set(self._pending[0][1])
        if any(set(a) != keys for _, a in self._pending):
            raise ShardError(f"{self.out}: episodes disagree on which of actions/labels they carry")
        data = {k: np.concatenate([a[k] for _, a in self._pending]) for k in keys}
        tmp = self.out / (shard + ".tmp")
        with writing("shard", self.out / shard, f"{self.out / MANIFEST} lists only the shards written before it; "
                     f"free space and rerun the same command to continue", (tmp,)):
            save_file(data, str(tmp))
            os.replace(tmp, self.out / shard)
        start = 0
        for name, a in self._pending:
            n = len(a[self.main_key])
            self.manifest["episodes"].append({"name": name, "shard": shard, "start": start, "length": n})
            start += n
        self._pending, self._pending_frames = [], 0
        write_json_atomic(self.out / MANIFEST, self.manifest)

    def close(self) -> dict:
        self.flush()
        write_json_atomic(self.out / MANIFEST, self.manifest)
        return self.manifest

    def __enter__(self) -> ShardWriter:  # noqa: PYI034
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_manifest(root: str | Path, allow_empty: bool = False) -> dict:
    """The manifest of a shard directory; `allow_empty`: one written before its first episode (a
    run stopped early, to be resumed) is read too."""
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        raise ShardError(f"{path} not found: {root} is not a frame-shard directory. Make one with "
                         f"`robo-genie ingest source=video_folder path=VIDEOS out={root}` or "
                         f"`robo-genie sim generate out={root}`.")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise ShardError(f"{path}: unknown format {manifest.get('format')!r} (expected {FORMAT})")
    if not manifest["episodes"] and not allow_empty:
        raise ShardError(f"{path} lists no episodes: the ingest that wrote it found no usable video")
    return manifest


class FrameShards:
    """Random access to the episodes of a shard directory (lazy, fork-safe)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        self.episodes = self.manifest["episodes"]
        self.kind = self.manifest.get("kind", "frames")
        self._handles: dict[str, Any] = {}

    def __getstate__(self) -> dict:                 # DataLoader workers reopen files themselves
        return {**self.__dict__, "_handles": {}}

    def _file(self, shard: str):
        if shard not in self._handles:
            path = self.root / shard
            if not path.is_file():
                raise ShardError(f"{path} is listed in {self.root / MANIFEST} but missing")
            self._handles[shard] = safe_open(str(path), framework="np")
        return self._handles[shard]

    def has(self, key: str) -> bool:
        return key in self._file(self.episodes[0]["shard"]).keys()  # noqa: SIM118 (safe_open is no dict)

    def read(self, episode: int, start: int = 0, length: int | None = None,
             key: str = "frames") -> np.ndarray:
        ep = self.episodes[episode]
        length = ep["length"] - start if length is None else length
        begin = ep["start"] + start
        return self._file(ep["shard"]).get_slice(key)[begin:begin + length]
