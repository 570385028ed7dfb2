"""Keep freed CPU memory inside the process, so training steps stop page-faulting.

glibc hands large blocks (from 128 KiB, rising to 32 MiB) to mmap and returns them to the kernel
on free. A training step allocates and frees the same large activations and temporaries each
time, so every step faulted them in again, page by page: 130k minor faults and 0.26 s of kernel
time per tiny-tokenizer step on 2 CPU cores, which made the step 1.3x slower (BENCHMARKS.md).
With mmap off and no trimming of the heap, freed blocks are reused. The process keeps its peak
footprint, which is what a training run reaches anyway. The arithmetic is unchanged, so results
are bit-identical.
"""

from __future__ import annotations

import ctypes
import os
import sys

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4     # glibc's mallopt parameters (malloc.h)
OPT_OUT = "ROBO_GENIE_DEFAULT_MALLOC"                        # set to 1 to leave malloc as it is
tuned = False                                                # whether keep_freed_memory() took effect


def keep_freed_memory() -> bool:
    """Tune glibc's malloc for repeated large allocations; False where that is not possible
    (not Linux with glibc, or opted out through the environment)."""
    if not sys.platform.startswith("linux") or os.environ.get(OPT_OUT) == "1":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):      # musl and other C libraries: nothing to tune
        return False
    global tuned
    tuned = all(mallopt(param, value) == 1 for param, value in
                ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2 ** 30), (_M_TOP_PAD, 256 * 2 ** 20)))
    return tuned
