"""Progress on long work: a tqdm bar with an ETA on a terminal; elsewhere (a log file, a cluster job,
`progress=false`) one plain line per interval, so logs do not fill with carriage returns."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable

from tqdm import tqdm

LINE_INTERVAL_S = 30.0


def progress_bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str, unit: str,
                 initial: int = 0, bar: bool = True, quiet: bool = False):
    """tqdm when `bar` and stderr is a terminal, else a LineProgress with the same interface
    (update, set_postfix, close, iteration, `with`); `quiet` (ranks other than 0) prints nothing."""
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    if quiet:
        return tqdm(iterable, total=total, disable=True)
    if bar and sys.stderr.isatty():
        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, smoothing=0.1)
    return LineProgress(iterable, total=total, desc=desc, unit=unit, initial=initial)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class LineProgress:
    def __init__(self, iterable=None, *, total: int | None, desc: str, unit: str, initial: int = 0,
                 interval_s: float = LINE_INTERVAL_S, stream=None):
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n = self.start_n = initial
        self.interval_s, self.stream = interval_s, stream or sys.stderr
        self.start = self.last = time.monotonic()
        self.postfix: dict = {}
        self.closed = False

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update()
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def set_postfix(self, values: dict) -> None:
        self.postfix = dict(values)

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.interval_s:
            self.last = now
            self._line(now)

    def line(self, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        elapsed = now - self.start
        done = self.n - self.start_n
        rate = done / elapsed if elapsed > 0 else 0.0
        text = f"[{self.desc}] {self.n}"
        if self.total:
            text += f"/{self.total} {self.unit} ({self.n / self.total:.0%})"
        else:
            text += f" {self.unit}"
        text += f", {rate:.2f} {self.unit}/s, {_duration(elapsed)} elapsed"
        if self.total and rate > 0 and self.n < self.total:
            text += f", ETA {_duration((self.total - self.n) / rate)}"
        if self.postfix:
            text += ", " + ", ".join(f"{k} {v}" for k, v in self.postfix.items())
        return text

    def _line(self, now: float) -> None:
        print(self.line(now), file=self.stream, flush=True)

    def close(self) -> None:
        if not self.closed and self.n > self.start_n:
            self._line(time.monotonic())
        self.closed = True
