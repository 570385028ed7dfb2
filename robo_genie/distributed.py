"""torch.distributed for data-parallel training under torchrun; every helper is a no-op in a single
process, so the same code runs on a laptop and on a cluster.

    torchrun --nproc_per_node=N -m robo_genie.cli train ...

Rank r of W reads the r-th slice of every global batch (datasets/loader.py), FSDP2 shards the
parameters (training/parallelize.py), and the few replicated statistics that the forward pass
updates (EMA codebooks, action counts) are summed over ranks here, so every rank keeps the same.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def init_from_env(device: torch.device):
    """Under torchrun (WORLD_SIZE > 1): join the process group (NCCL on GPUs, gloo on CPUs) and return
    a 1-D device mesh over all ranks; otherwise None."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from torch.distributed.device_mesh import init_device_mesh
    if not active():
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if dist.get_rank() != 0:          # one voice: rank 0 reports; errors still reach stderr
            sys.stdout = open(os.devnull, "w")
    return init_device_mesh(device.type, (dist.get_world_size(),))


def shutdown() -> None:
    """Leave the process group once a command has finished on every rank, and end the process there.
    Gloo's worker threads can still hold tensors when the interpreter tears down, which aborted
    finished runs ("terminate called without an active exception"; in CI on 2026-12-01 without
    the group destroyed, and on 2026-12-07 with it), so a rank exits without that teardown: its
    files are written and closed by now."""
    if active():
        dist.barrier()
        dist.destroy_process_group()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def barrier() -> None:
    if active():
        dist.barrier()


def _scalar(value: float) -> torch.Tensor:
    """A one-element tensor where the backend can reduce it (NCCL: on the GPU)."""
    t = torch.tensor([float(value)], dtype=torch.float64)
    return t.cuda() if dist.get_backend() == "nccl" else t


def any_rank(flag: bool) -> bool:
    """Whether `flag` holds on any rank (so that every rank takes the same branch: a stop, a skip)."""
    if not active():
        return flag
    t = _scalar(flag)
    dist.all_reduce(t)
    return bool(t.item() > 0)


def all_reduce_sum_(t: torch.Tensor) -> torch.Tensor:
    if active():
        dist.all_reduce(t)
    return t


def all_gather_cat(t: torch.Tensor) -> torch.Tensor:
    """Every rank's t (same shape on all) concatenated along dim 0, in rank order: the global batch."""
    if not active():
        return t
    parts = [torch.empty_like(t) for _ in range(world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def mean(value: float) -> float:
    """The mean of a scalar over ranks (for logging: the global batch's loss)."""
    if not active():
        return value
    t = _scalar(value)
    dist.all_reduce(t)
    return float(t.item()) / world_size()


def check_replicated(module: torch.nn.Module) -> None:
    """Raise if a buffer (a codebook, a count) differs between ranks: they must stay in step."""
    if not active():
        return
    for name, b in module.named_buffers():
        mine = _scalar(b.detach().double().sum())
        everyone = [torch.empty_like(mine) for _ in range(world_size())]
        dist.all_gather(everyone, mine)
        if not all(torch.allclose(e, everyone[0], rtol=1e-6, atol=1e-6) for e in everyone):
            raise RuntimeError(f"buffer {name} differs across ranks ({[float(e) for e in everyone]})")
