"""The source interface shared by every way video gets into robo_genie."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np


class IngestError(ValueError):
    """Input that cannot be ingested; the message names the file and what to do about it."""


@dataclass
class RawEpisode:
    name: str                              # unique within the source
    file: str                              # where it came from (for messages and the manifest)
    frames: Iterator[tuple[float, np.ndarray]]  # (time in seconds, HxWx3 uint8 at native size)
    fps: float | None = None               # native rate, when known
    actions: np.ndarray | None = None      # [T, A] when the source records them
    states: np.ndarray | None = None       # [T, S] the robot's proprioception, when recorded
    labels: np.ndarray | None = None       # [T] when the source records them


class Source(Protocol):
    name: str

    def episodes(self) -> Iterator[RawEpisode]: ...
