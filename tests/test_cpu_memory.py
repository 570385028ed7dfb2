"""robo_genie.cpu_memory: freed large blocks are reused instead of being faulted in again."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# Allocates, fills (touches every page) and frees a 64 MiB tensor over and over, as a training step
# does with its activations, and prints the minor page faults of ten rounds once the heap has
# settled (its first rounds may still grow it). In a fresh interpreter: malloc settings are process-wide.
_SCRIPT = """
import resource, sys
import torch
from robo_genie.cpu_memory import keep_freed_memory
print(keep_freed_memory())
for _ in range(30):
    torch.ones(16 * 2**20)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    torch.ones(16 * 2**20)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(env_extra: dict) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, check=True,
                         env={**os.environ, **env_extra}, timeout=120).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's (Linux)")
def test_freed_blocks_are_reused_not_faulted_in_again():
    tuned, faults = _faults({})
    default, default_faults = _faults({"ROBO_GENIE_DEFAULT_MALLOC": "1"})
    assert (tuned, default) == ("True", "False")
    pages = 10 * 64 * 2**20 // 4096                     # what faulting every page in again would cost
    assert default_faults > pages // 2                  # glibc's default: each round maps fresh pages
    assert faults < pages // 10
