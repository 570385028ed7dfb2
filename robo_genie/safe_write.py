"""Writes that fail cleanly. Every file robo_genie writes (checkpoints, shards, bundles, reports) goes
to a temporary name and is renamed into place, so an interrupted or failed write leaves the previous
version whole. `writing` turns the OSError of a failed write (a full disk, a quota, an I/O error)
into one message that says what was not written, where, and what is still intact."""

from __future__ import annotations

import errno
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from safetensors import SafetensorError


class WriteError(OSError):
    pass


@contextmanager
def writing(what: str, path: Path, intact: str, temporary: tuple[Path, ...] = ()) -> Iterator[None]:
    """Run a write; on OSError remove its temporary files and raise WriteError naming `what`
    (e.g. "checkpoint"), `path`, the reason, and `intact` (what the user still has)."""
    try:
        yield
    except WriteError:
        raise
    except (OSError, SafetensorError) as e:
        # safetensors reports a failed write as SafetensorError("... (os error 28)"), not OSError
        code = e.errno if isinstance(e, OSError) else _os_error(str(e))
        if code is None and not isinstance(e, OSError):
            raise                               # a safetensors error that is not about the disk
        for tmp in temporary:
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
        reason = ("no space left on the device" if code in (errno.ENOSPC, errno.EDQUOT)
                  else (e.strerror or str(e)) if isinstance(e, OSError) else os.strerror(code))
        raise WriteError(code, f"{what} {path} was not written: {reason}. {intact}") from e


def _os_error(message: str) -> int | None:
    match = re.search(r"os error (\d+)", message)
    return int(match.group(1)) if match else None


def write_text_atomic(path: str | Path, text: str, what: str = "file") -> None:
    """Replace `path` with `text`, or leave the old file as it was."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with writing(what, path, f"The previous {path.name}, if any, is unchanged.", (tmp,)):
        tmp.write_text(text)
        os.replace(tmp, path)
