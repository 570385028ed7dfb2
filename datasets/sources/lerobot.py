"""A LeRobot dataset root. v3.0: `meta/info.json`, per-episode metadata in `meta/episodes/*.parquet`,
frame rows (timestamps, actions, states) in `data/*.parquet`, and each camera's frames in mp4 files
shared by many episodes (an episode is the span from_timestamp..to_timestamp of its file).
v2.0/v2.1: episodes listed in `meta/episodes.jsonl`, one parquet file and one mp4 per episode and
camera (paths from info.json's templates, chunked by `chunks_size`).

Read with pyarrow + PyAV, not the `lerobot` library: no lerobot release installs beside the
torch this project runs on (DESIGN.md). Frames are matched to the data rows by timestamp.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from robo_genie.datasets.sources.base import IngestError, RawEpisode


# Per-frame vectors kept beside the frames: the command, and the robot's proprioception (which the
# adapter's `learned` kind reads).
VECTOR_COLUMNS = ("action", "observation.state")


class LeRobotSource:
    name = "lerobot"

    def __init__(self, path: str | Path, camera: str | None = None):
        self.root = Path(path)
        info_path = self.root / "meta" / "info.json"
        if not info_path.is_file():
            raise IngestError(f"{info_path} not found: {self.root} is not a LeRobot dataset root")
        try:
            self.info = json.loads(info_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise IngestError(f"{info_path}: not valid JSON ({e}); restore it from the dataset's source") from None
        try:
            self._read_metadata(info_path, camera)
        except IngestError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
            raise IngestError(f"{info_path} (or the episode metadata beside it) is not LeRobot metadata this reader "
                              f"understands ({type(e).__name__}: {e}); restore it from the dataset's source") from None

    def _read_metadata(self, info_path: Path, camera: str | None) -> None:
        if not isinstance(self.info, dict):
            raise TypeError("info.json holds no JSON object")
        version = str(self.info.get("codebase_version", ""))
        if not version.startswith(("v3", "v2")):
            raise IngestError(f"{info_path}: codebase_version {version!r}; this reader takes LeRobot v2.x and v3.x "
                              f"(convert older datasets with lerobot's conversion scripts)")
        self.v2 = version.startswith("v2")
        videos = [k for k, f in self.info["features"].items() if f.get("dtype") == "video"]
        if not videos:
            raise IngestError(f"{info_path}: lists no video feature (dtype 'video'); nothing to ingest")
        self.camera = camera or videos[0]
        if self.camera not in videos:
            raise IngestError(f"{info_path}: no camera {self.camera!r}; its cameras are {', '.join(videos)} "
                              f"(choose one with camera=...)")
        self.fps = float(self.info["fps"])
        self.action_names, self.state_names = (_value_names(self.info["features"].get(c)) for c in VECTOR_COLUMNS)
        self.episode_rows = self._v2_rows() if self.v2 else self._v3_rows()

    def _v3_rows(self) -> list[dict]:
        """Per episode: its data file, video file and start time in that video."""
        files = sorted((self.root / "meta" / "episodes").rglob("*.parquet"))
        if not files:
            raise IngestError(f"{self.root / 'meta' / 'episodes'}: no episode metadata (*.parquet)")
        rows: list[dict] = []
        for f in files:
            rows.extend(_read_parquet(f, "episode metadata").to_pylist())
        key = f"videos/{self.camera}"
        fmt = self.info["video_path"].format
        return [{"episode_index": r["episode_index"],
                 "data_file": self.root / self.info["data_path"].format(chunk_index=r["data/chunk_index"],
                                                                       file_index=r["data/file_index"]),
                 "video_file": self.root / fmt(video_key=self.camera, chunk_index=r[f"{key}/chunk_index"],
                                               file_index=r[f"{key}/file_index"]),
                 "from_timestamp": float(r[f"{key}/from_timestamp"])}
                for r in sorted(rows, key=lambda r: r["episode_index"])]

    def _v2_rows(self) -> list[dict]:
        listing = self.root / "meta" / "episodes.jsonl"
        if not listing.is_file():
            raise IngestError(f"{listing} not found: a LeRobot v2 dataset lists its episodes there")
        try:
            episodes = [json.loads(line) for line in listing.read_text().splitlines() if line.strip()]
        except json.JSONDecodeError as e:
            raise IngestError(f"{listing}: not JSON lines ({e})") from None
        chunk = int(self.info.get("chunks_size", 1000))
        rows = []
        for ep in sorted(episodes, key=lambda r: r["episode_index"]):
            e = int(ep["episode_index"])
            names = {"episode_chunk": e // chunk, "episode_index": e}
            rows.append({"episode_index": e,
                         "data_file": self.root / self.info["data_path"].format(**names),
                         "video_file": self.root / self.info["video_path"].format(video_key=self.camera, **names),
                         "from_timestamp": 0.0})
        return rows

    def episodes(self) -> Iterator[RawEpisode]:
        tables: dict[Path, dict[str, np.ndarray]] = {}     # a data file holds many episodes: read it once
        for row in self.episode_rows:
            e = row["episode_index"]
            data_file = row["data_file"]
            if data_file not in tables:
                if not data_file.is_file():
                    raise IngestError(f"episode {e}: {data_file} is listed in the metadata but missing")
                columns = ["episode_index", "frame_index", "timestamp"]
                columns += [c for c in VECTOR_COLUMNS if c in self.info["features"]]
                table = _read_parquet(data_file, f"episode {e}", columns)
                tables[data_file] = {c: np.asarray(table[c].to_pylist() if c in VECTOR_COLUMNS else table[c].to_numpy())
                                     for c in columns}
            data = tables[data_file]
            rows = np.flatnonzero(data["episode_index"] == e)
            rows = rows[np.argsort(data["frame_index"][rows], kind="stable")]
            timestamps = data["timestamp"][rows].astype(np.float64)
            actions, states = (data[c][rows].astype(np.float32) if c in data else None for c in VECTOR_COLUMNS)
            video, start = row["video_file"], row["from_timestamp"]
            # Decoded when the episode is read, so that a bad episode can be skipped (on_error=skip).
            frames = _lazy_frames(video, start, timestamps, 0.5 / self.fps, f"episode {e}")
            yield RawEpisode(f"episode_{e:06d}", str(video), frames, self.fps, actions, states)


def _value_names(feature: dict | None) -> list[str] | None:
    """The names of a vector feature's values as info.json gives them (a list, or lerobot's
    {"motors": [...]}), where there is one per value; else None."""
    if not feature:
        return None
    names, shape = feature.get("names"), feature.get("shape") or [None]
    if isinstance(names, dict) and len(names) == 1:
        names = next(iter(names.values()))
    if isinstance(names, list) and len(names) == shape[0] and all(isinstance(n, str) for n in names):
        return names
    return None


def _read_parquet(path: Path, what: str, columns: list[str] | None = None):
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as e:
        raise IngestError(f"{what}: {path} cannot be read as parquet ({e}); the file is corrupt or truncated, or "
                          f"lacks the columns {columns}") from None


def _lazy_frames(video: Path, start: float, timestamps: np.ndarray, tolerance: float, what: str
                 ) -> Iterator[tuple[float, np.ndarray]]:
    yield from zip(timestamps.tolist(), _frames_at(video, start + timestamps, tolerance, what))


def _frames_at(path: Path, times: np.ndarray, tolerance: float, what: str) -> list[np.ndarray]:
    """The decoded frames of `path` nearest to each of `times` (seconds); an error names the file when
    one is further than `tolerance` away (a truncated video, or metadata that does not match it)."""
    import av  # imported where videos are read: the rest of the CLI runs without PyAV
    if not path.is_file():
        raise IngestError(f"{what}: video {path} is listed in the metadata but missing")
    got_t, got = [], []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            first = max(0.0, float(times.min()) - 1.0)
            container.seek(int(first / stream.time_base), stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                t = float(frame.time)
                if t > times.max() + tolerance:
                    break
                if t >= times.min() - tolerance:
                    got_t.append(t)
                    got.append(frame.to_ndarray(format="rgb24"))
    except av.error.FFmpegError as e:
        raise IngestError(f"{what}: decoding {path} failed ({e}); the file is corrupt or truncated") from e
    if not got:
        raise IngestError(f"{what}: {path} has no frames between {times.min():.3f} s and {times.max():.3f} s "
                          f"(truncated video?)")
    got_t = np.array(got_t)
    nearest = np.abs(got_t[None, :] - times[:, None]).argmin(axis=1)
    off = np.abs(got_t[nearest] - times)
    if (off > tolerance).any():
        bad = float(times[off.argmax()])
        raise IngestError(f"{what}: {path} has no frame within {tolerance * 1000:.0f} ms of {bad:.3f} s "
                          f"(truncated video, or timestamps that do not match it)")
    return [got[i] for i in nearest]
