"""torch.distributed.checkpoint storage that never unpickles: the checkpoint's index is JSON.

DCP's own FileSystemWriter indexes a sharded checkpoint in a pickled `.metadata` file, and its
reader unpickles it, and any non-tensor value, with full pickle. Here the index is
`index.json` (what each tensor is and which byte range of which file holds each of its chunks),
the tensor chunks are read by DCP itself with torch.load(weights_only=True), and non-tensor values
(optimizer settings) go through torch.load(weights_only=True) too. A file tampered to carry a
pickled payload is refused, not run.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.filesystem import _StorageInfo
from torch.distributed.checkpoint.metadata import (BytesStorageMetadata, ChunkStorageMetadata, Metadata,
                                                   MetadataIndex, StorageMeta, TensorProperties,
                                                   TensorStorageMetadata)

INDEX = "index.json"


class UntrustedCheckpoint(ValueError):
    pass


def _encode(md: Metadata) -> dict:
    tensors = {}
    for fqn, item in md.state_dict_metadata.items():
        if isinstance(item, BytesStorageMetadata):
            tensors[fqn] = {"bytes": True}
            continue
        props = item.properties
        if props.layout != torch.strided:
            raise ValueError(f"{fqn}: only strided tensors can be checkpointed, not {props.layout}")
        tensors[fqn] = {"dtype": str(props.dtype).removeprefix("torch."), "size": list(item.size),
                        "requires_grad": props.requires_grad,
                        "chunks": [[list(c.offsets), list(c.sizes)] for c in item.chunks]}
    storage = [{"fqn": idx.fqn, "offset": None if idx.offset is None else list(idx.offset), "index": idx.index,
                "file": info.relative_path, "start": info.offset, "length": info.length,
                "transforms": None if info.transform_descriptors is None else list(info.transform_descriptors)}
               for idx, info in md.storage_data.items()]
    # planner_data: each flattened name's path in the nested state dict (strings and list indices)
    return {"version": md.version, "tensors": tensors, "storage": storage,
            "paths": {k: list(v) for k, v in (md.planner_data or {}).items()}}


def _decode(d: dict, where: Path) -> Metadata:
    try:
        tensors = {}
        for fqn, t in d["tensors"].items():
            if t.get("bytes"):
                tensors[fqn] = BytesStorageMetadata()
                continue
            dtype = getattr(torch, t["dtype"])
            if not isinstance(dtype, torch.dtype):
                raise ValueError(f"unknown dtype {t['dtype']!r}")
            tensors[fqn] = TensorStorageMetadata(
                TensorProperties(dtype=dtype, requires_grad=bool(t["requires_grad"])), torch.Size(t["size"]),
                [ChunkStorageMetadata(torch.Size(o), torch.Size(s)) for o, s in t["chunks"]])
        storage = {MetadataIndex(s["fqn"], None if s["offset"] is None else torch.Size(s["offset"]), s["index"]):
                   _StorageInfo(s["file"], int(s["start"]), int(s["length"]), s["transforms"])
                   for s in d["storage"]}
        for info in storage.values():
            if Path(info.relative_path).name != info.relative_path:
                raise ValueError(f"data file {info.relative_path!r} is outside the checkpoint folder")
        return Metadata(tensors, planner_data={k: tuple(v) for k, v in d["paths"].items()},
                        storage_data=storage, storage_meta=StorageMeta(), version=d["version"])
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise UntrustedCheckpoint(f"{where}: not a valid sharded-checkpoint index ({e}); delete this "
                                  f"checkpoint folder to resume from the one before it") from None


class JsonIndexWriter(FileSystemWriter):
    def finish(self, metadata: Metadata, results) -> None:
        metadata.storage_data = {wr.index: wr.storage_data for wrs in results for wr in wrs}
        path = Path(self.path) / INDEX
        with open(path, "w") as f:    # the caller fsyncs the folder and renames it into place
            json.dump(_encode(metadata), f)


class JsonIndexReader(FileSystemReader):
    def read_metadata(self, *args, **kwargs) -> Metadata:
        path = Path(self.path) / INDEX
        if not path.is_file():
            raise UntrustedCheckpoint(f"{path.parent}: no {INDEX}; a sharded checkpoint indexed by pickle (or "
                                      f"none at all) is not loaded. Delete it to resume from the one before")
        try:
            d = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UntrustedCheckpoint(f"{path}: not JSON ({e}); delete this checkpoint folder to resume from "
                                      f"the one before it") from None
        md = _decode(d, path)
        md.storage_meta.load_id = self.load_id
        return md


class SafeLoadPlanner(DefaultLoadPlanner):
    def load_bytes(self, read_item, value: io.BytesIO) -> None:
        try:
            torch.load(value, weights_only=True)       # only tensors and plain values pass
        except Exception as e:
            raise UntrustedCheckpoint(f"sharded checkpoint value {read_item.dest_index.fqn!r} is not plain "
                                      f"data ({type(e).__name__}); refused") from None
        value.seek(0)
        super().load_bytes(read_item, value)


def load_sharded(state: dict, folder: Path) -> None:
    """dcp.load into `state` in place; a refusal is raised as itself, not inside DCP's per-rank report."""
    try:
        dcp.load(state, storage_reader=JsonIndexReader(folder), planner=SafeLoadPlanner())
    except CheckpointException as e:
        for exc, _ in e.failures.values():
            if isinstance(exc, UntrustedCheckpoint):
                raise exc from None
        raise
