"""Parallelism, applied to a single-device model from outside, in torchtitan's order: activation
checkpointing, then torch.compile (per ST block), then FSDP2 (`fully_shard` on every ST block, then
on the root).

The model code never knows it is sharded. What it shares across ranks is only its replicated
statistics (robo_genie/distributed.py); the data loader gives each rank its slice of every batch.
"""

from __future__ import annotations

import torch
from torch import nn

from robo_genie.models.st_transformer import STBlock

ACTIVATION_CHECKPOINTING = ("none", "selective", "full")


def blocks(model: nn.Module) -> list[tuple[nn.Module, str, STBlock]]:
    """(parent, attribute name, block) for every ST block of the model, in order."""
    found = []
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, STBlock):
                found.append((parent, name, child))
    return found


def parallelize(model: nn.Module, mesh, device: torch.device, activation_checkpointing: str = "none",
                compile_blocks: bool = False) -> nn.Module:
    """Shard `model` over the 1-D data-parallel `mesh` (None: one process, only AC and compile).
    bf16 parameters with float32 gradient reduction on GPUs; float32 throughout on CPUs (gloo)."""
    if activation_checkpointing not in ACTIVATION_CHECKPOINTING:
        raise ValueError(f"activation_checkpointing={activation_checkpointing!r}: choose "
                         f"{', '.join(ACTIVATION_CHECKPOINTING)}")
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
    found = blocks(model)
    for i, (parent, name, block) in enumerate(found):
        # selective: every other block recomputes its activations (half the memory saving, less cost)
        if activation_checkpointing == "full" or (activation_checkpointing == "selective" and i % 2 == 0):
            block = checkpoint_wrapper(block, preserve_rng_state=False)    # its state-dict keys stay the block's
            parent.register_module(name, block)
        if compile_blocks:
            block.compile()               # in place: parameter names (checkpoints, bundles) unchanged
    if mesh is None:
        return model
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    policy = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
              if device.type == "cuda" else MixedPrecisionPolicy())
    for parent, name, _ in found:
        fully_shard(getattr(parent, name), mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model
