"""Training checkpoints that resume to the identical state.

A checkpoint is a directory `step_NNNNNNN/` holding the model (safetensors) and `state.pt`
(optimizer state, step, RNG states: tensors and plain containers only, read with
`weights_only=True`). It is written under a temporary name, fsynced, and renamed, then `latest.json`
is replaced to point at it (and fsynced with its directory), so a kill or a power loss at any moment
leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from robo_genie import distributed
from robo_genie.safe_write import writing

SHARDED = "sharded"       # the torch.distributed.checkpoint folder of a checkpoint written under torchrun


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def state_dict_for_save(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}


def fsync_path(path: Path) -> None:
    """Flush a file, or a directory's entries (renames), to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(folder: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    keep: int = 2) -> Path:
    """One process: model.safetensors + state.pt (optimizer, step, RNG). Under torchrun: every rank
    writes its shards through torch.distributed.checkpoint into `sharded/` (resumable with another
    number of processes, or in one), and rank 0 writes state.pt (step, RNG) and moves the pointer."""
    sharded = distributed.active()
    final = folder / f"step_{step:07d}"
    tmp = folder / f"step_{step:07d}.tmp"
    pointer = folder / "latest.json"
    previous = latest_checkpoint(folder)
    intact = (f"The previous checkpoint {previous} is intact: free space and rerun the same command to resume "
              f"from it" if previous else "No earlier checkpoint exists")
    with writing("checkpoint", final, intact, (tmp, pointer.with_suffix(".tmp"))):
        if distributed.is_main():
            folder.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
        distributed.barrier()
        state = {"step": step, "rng": _rng_state(), "world_size": distributed.world_size()}
        if sharded:
            import torch.distributed.checkpoint as dcp
            from torch.distributed.checkpoint.state_dict import get_state_dict
            from robo_genie.training.sharded_io import JsonIndexWriter
            model_state, optim_state = get_state_dict(model, optimizer)
            dcp.save({"model": model_state, "optim": optim_state}, storage_writer=JsonIndexWriter(tmp / SHARDED))
        else:
            from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict
            save_file(state_dict_for_save(model), str(tmp / "model.safetensors"))
            # keyed by parameter name, not position: any number of processes can load it
            state["optimizer"] = get_optimizer_state_dict(model, optimizer)
        distributed.barrier()
        if distributed.is_main():
            torch.save(state, tmp / "state.pt")
            for f in [*tmp.rglob("*"), tmp]:           # every file and folder of it, the folder last
                fsync_path(f)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            fsync_path(folder)                          # the checkpoint's name is on disk before the pointer
            pointer.with_suffix(".tmp").write_text(json.dumps({"step": step, "dir": final.name}))
            fsync_path(pointer.with_suffix(".tmp"))
            os.replace(pointer.with_suffix(".tmp"), pointer)
            fsync_path(folder)
            for old in sorted(folder.glob("step_*"))[:-keep]:   # zero-padded names sort by step
                if old != final:
                    shutil.rmtree(old, ignore_errors=True)
        distributed.barrier()
    return final


def latest_checkpoint(folder: Path) -> Path | None:
    pointer = folder / "latest.json"
    if not pointer.is_file():
        return None
    return folder / json.loads(pointer.read_text())["dir"]


def _by_name(optimizer_state: dict) -> bool:
    """Whether an optimizer state is keyed by parameter name (since 2026-12-01) or by position."""
    return all(isinstance(k, str) for k in optimizer_state.get("state", {}))


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Restore model, optimizer and RNG; return the step to continue from. A sharded checkpoint
    loads into any number of processes (torch.distributed.checkpoint reshards), one included; so
    does one process's."""
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    if (path / SHARDED).is_dir():
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
        model_state, optim_state = get_state_dict(model, optimizer)
        from robo_genie.training.sharded_io import load_sharded
        both = {"model": model_state, "optim": optim_state}
        load_sharded(both, path / SHARDED)
        set_state_dict(model, optimizer, model_state_dict=both["model"], optim_state_dict=both["optim"])
    elif _by_name(state["optimizer"]):
        # one process's checkpoint, into one process or into the shards of several
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict
        set_state_dict(model, optimizer, model_state_dict=load_file(str(path / "model.safetensors"), device="cpu"),
                       optim_state_dict=state["optimizer"], options=StateDictOptions(full_state_dict=True))
    elif distributed.active():
        raise ValueError(f"{path} was written by a single process before 2026-12-01; resume it with a single "
                         f"process (it then continues in a format any number of processes read)")
    else:
        model.load_state_dict(load_file(str(path / "model.safetensors"), device="cpu"))
        optimizer.load_state_dict(state["optimizer"])
    _set_rng_state(state["rng"])
    return int(state["step"])
