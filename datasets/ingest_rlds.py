"""Ingest a known RLDS dataset or a mixture of them (datasets/oxe.py) with their camera keys and rates.

A mixture writes one shard folder per member under `out=` plus `mixture.json` (member folders and
sampling weights), which training reads as one weighted data source.
"""

from __future__ import annotations

import json
from pathlib import Path

from robo_genie.datasets.ingest import ingest_sliced, job_options, summary
from robo_genie.datasets.loader import MIXTURE_FILE
from robo_genie.datasets.oxe import MIXTURES, lookup
from robo_genie.datasets.shards import write_json_atomic
from robo_genie.datasets.sources import IngestError


def _member_path(dataset, root: str | None) -> str:
    """The bucket path, or the same name/version under a local mirror given as path=."""
    return f"{root.rstrip('/')}/{dataset.name}/{dataset.version}" if root else dataset.path


def ingest_known(cfg) -> dict:
    if cfg.dataset and cfg.mixture:
        raise IngestError("give dataset= or mixture=, not both")
    if cfg.mixture and cfg.mixture not in MIXTURES:
        raise IngestError(f"unknown mixture {cfg.mixture!r}; known: {', '.join(MIXTURES)}")
    members = MIXTURES[cfg.mixture] if cfg.mixture else [(cfg.dataset, 1.0)]
    try:
        datasets = [(lookup(name), w) for name, w in members]
    except KeyError as e:
        raise IngestError(str(e.args[0])) from None
    out = Path(cfg.out)
    written = []
    for d, weight in datasets:
        if cfg.mixture:
            path, target = _member_path(d, cfg.path), out / d.name
        else:                       # one dataset: path= is the dataset directory itself, if given
            path, target = cfg.path or d.path, out
        print(f"{d.name}: {path} (camera {cfg.image_key or d.image_key}, {d.fps:g} Hz)")
        manifests = ingest_sliced("rlds", path, str(target), **job_options(cfg), camera=cfg.image_key or d.image_key,
                                  source_options={"split": cfg.split, "fps": d.fps, "state_keys": cfg.state_keys})
        for manifest in manifests:
            print(summary(manifest, target))
        written.append({"path": d.name, "weight": weight})
    if cfg.mixture:
        write_json_atomic(out / MIXTURE_FILE, {"mixture": cfg.mixture, "members": written})
        weights = ", ".join(f"{m['path']} x{m['weight']:g}" for m in written)
        print(f"wrote {out / MIXTURE_FILE}: {weights}")
    return json.loads((out / MIXTURE_FILE).read_text()) if cfg.mixture else {"members": written}
