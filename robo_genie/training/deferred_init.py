"""Build a model without its weights, shard it, then initialise each shard: under torchrun a large
model never exists whole on one rank.

`build_deferred(build)` runs the model's own constructor with every parameter on the meta device
(no storage) and records, in order, the in-place init calls the constructor makes on them
(`nn.init.kaiming_uniform_`, `normal_`, `zeros_`, ...). Buffers are small and stay real.
`materialise(model, device)` runs after `fully_shard`: it gives each parameter its (local) storage
and replays the recorded calls in the same order on one full parameter at a time, on the CPU, from
the same random state, keeping only this rank's shard. So the weights equal those of a plain
build at the same seed, bit for bit, for any number of processes, and the model code knows nothing
of it.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn
from torch.overrides import TorchFunctionMode


@dataclass
class _Record:
    rng_state: torch.Tensor
    calls: list = field(default_factory=list)          # ((module, attribute), function, args, kwargs)


_RECORDS: "weakref.WeakKeyDictionary[nn.Module, _Record]" = weakref.WeakKeyDictionary()


class _RecordInitCalls(TorchFunctionMode):
    """Notes every in-place call (a name ending in one `_`, or an item assignment) whose target is a meta
    tensor. torch.nn.init functions arrive whole, with their tensor as the keyword `tensor`; Tensor
    methods with it first."""

    def __init__(self):
        super().__init__()
        self.calls: list = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        target = kwargs.get("tensor", args[0] if args else None)
        in_place = name == "__setitem__" or (name.endswith("_") and not name.endswith("__"))
        if in_place and isinstance(target, torch.Tensor) and target.is_meta:
            self.calls.append((target, func, args, kwargs))
        return func(*args, **kwargs)


def _register_on_meta(original):
    def register_parameter(module: nn.Module, name: str, param):
        if param is not None and not param.is_meta:
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        original(module, name, param)
    return register_parameter


def build_deferred(build: Callable[[], nn.Module]) -> nn.Module:
    """`build()` with every parameter on the meta device; `materialise` fills them in later."""
    rng_state = torch.random.get_rng_state()
    original = nn.Module.register_parameter
    nn.Module.register_parameter = _register_on_meta(original)
    try:
        with _RecordInitCalls() as recorder:
            model = build()
    finally:
        nn.Module.register_parameter = original
    # A parameter is known by its module and attribute: wrappers (activation checkpointing) rename
    # it and fully_shard replaces the tensor, but both keep it on the same module under the same name.
    owners = {id(p): (m, n) for m in model.modules() for n, p in m.named_parameters(recurse=False)}
    record = _Record(rng_state)
    for target, func, args, kwargs in recorder.calls:
        if id(target) not in owners:
            raise RuntimeError(f"{type(model).__name__}: {func.__name__} on a meta tensor that is not one of its "
                               f"parameters; initialise parameters in place with torch.nn.init on the parameter")
        record.calls.append((owners[id(target)], func, args, kwargs))
    initialised = {id(target) for target, *_ in recorder.calls}
    if missing := [name for name, p in model.named_parameters() if id(p) not in initialised]:
        raise RuntimeError(f"{type(model).__name__}: no init call for {', '.join(missing)}; give each parameter "
                           f"its value with torch.nn.init")
    _RECORDS[model] = record
    return model


def _replay(func, args: tuple, kwargs: dict, tensor: torch.Tensor) -> None:
    """The recorded call with `tensor` where the meta parameter was."""
    if "tensor" in kwargs:
        func(*args, **{**kwargs, "tensor": tensor})
    else:
        func(tensor, *args[1:], **kwargs)


def is_deferred(model: nn.Module) -> bool:
    return model in _RECORDS


def materialise(model: nn.Module, device: torch.device) -> nn.Module:
    """Storage for every parameter of a `build_deferred` model (sharded or not) on `device`, then its
    recorded initialisation, one full parameter at a time."""
    from torch.distributed.tensor import DTensor, distribute_tensor
    record = _RECORDS.pop(model)
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    model.to_empty(device=device)
    with torch.no_grad():
        for name, b in model.named_buffers():
            b.copy_(buffers[name])
        last = {owner: i for i, (owner, *_) in enumerate(record.calls)}
        full: dict[tuple, torch.Tensor] = {}
        saved = torch.random.get_rng_state()
        torch.random.set_rng_state(record.rng_state)      # the random state the plain build started from
        try:
            for i, (owner, func, args, kwargs) in enumerate(record.calls):
                param = getattr(*owner)
                if owner not in full:
                    full[owner] = torch.empty(param.shape, dtype=param.dtype)
                _replay(func, args, kwargs, full[owner])
                if last[owner] == i:                   # its value is final: keep this rank's part only
                    value = full.pop(owner).to(device)
                    if isinstance(param, DTensor):       # every rank holds the same value: no communication
                        value = distribute_tensor(value, param.device_mesh, param.placements, src_data_rank=None)
                    param.copy_(value)
        finally:
            torch.random.set_rng_state(saved)
    return model
