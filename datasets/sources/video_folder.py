"""A folder of robot videos: each video file (mp4/webm/mov/avi/mkv, decoded by PyAV) or each
folder of images (png/jpg, frames in name order) is one episode. Searched recursively."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image
from robo_genie.datasets.sources.base import IngestError, RawEpisode

VIDEO_EXTS = {".mp4", ".webm", ".mov", ".avi", ".mkv"}
IMAGE_EXTS = {".png", ".jpg", ".jpeg"}
DEFAULT_IMAGE_FPS = 10.0


class VideoFolderSource:
    name = "video_folder"

    def __init__(self, path: str | Path, image_fps: float | None = None):
        self.root = Path(path)
        self.image_fps = image_fps or DEFAULT_IMAGE_FPS
        if not self.root.is_dir():
            raise IngestError(f"{self.root}: no such folder; pass path= a folder of videos or image folders")

    def _items(self) -> list[Path]:
        videos = [p for p in self.root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTS]
        image_dirs = sorted({p.parent for p in self.root.rglob("*")
                             if p.is_file() and p.suffix.lower() in IMAGE_EXTS})
        items = sorted(videos) + image_dirs
        if not items:
            raise IngestError(f"{self.root}: no videos ({', '.join(sorted(VIDEO_EXTS))}) or folders of "
                              f"images ({', '.join(sorted(IMAGE_EXTS))}) found; check path=")
        return items

    def episodes(self) -> Iterator[RawEpisode]:
        for item in self._items():
            name = str(item.relative_to(self.root)) if item != self.root else item.name
            if item.is_dir():
                yield RawEpisode(name, str(item), _image_frames(item, self.image_fps), self.image_fps)
            else:
                try:
                    fps = _video_fps(item)
                except IngestError as e:       # raised when the episode is read: on_error decides
                    yield RawEpisode(name, str(item), _failing(e))
                    continue
                yield RawEpisode(name, str(item), _video_frames(item), fps)


def _failing(error: IngestError) -> Iterator[tuple[float, np.ndarray]]:
    raise error
    yield  # unreachable: makes this a generator, so the error comes when the episode is read


def _video_fps(path: Path) -> float | None:
    import av  # imported where videos are read: the rest of the CLI runs without PyAV
    try:
        with av.open(str(path)) as container:
            rate = container.streams.video[0].average_rate if container.streams.video else None
            return float(rate) if rate else None
    except av.error.FFmpegError as e:
        raise IngestError(f"{path}: not a readable video ({e}). Re-encode it (for example "
                          f"`ffmpeg -i {path.name} fixed.mp4`) or move it out of the folder.") from e


def _video_frames(path: Path) -> Iterator[tuple[float, np.ndarray]]:
    import av  # imported where videos are read: the rest of the CLI runs without PyAV
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise IngestError(f"{path}: has no video stream; remove it from the folder")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            n = 0
            for frame in container.decode(stream):
                t = float(frame.time) if frame.time is not None else n / float(stream.average_rate or 30)
                yield t, frame.to_ndarray(format="rgb24")
                n += 1
            if n == 0:
                raise IngestError(f"{path}: decoded no frames; the file is empty or truncated")
    except av.error.FFmpegError as e:
        raise IngestError(f"{path}: decoding failed ({e}); the file is corrupt or truncated. "
                          f"Re-encode it or move it out of the folder.") from e


def _image_frames(folder: Path, fps: float) -> Iterator[tuple[float, np.ndarray]]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    for i, f in enumerate(files):
        try:
            with Image.open(f) as img:
                yield i / fps, np.asarray(img.convert("RGB"))
        except OSError as e:
            raise IngestError(f"{f}: not a readable image ({e}); replace or remove it") from e
