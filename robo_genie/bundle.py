"""The world-model bundle: one directory, loadable by one call, that cannot execute code.

    bundle/
      config.yaml              the resolved model config (read with a safe YAML loader)
      tokenizer.safetensors    one file of tensors per trained part
      lam.safetensors
      dynamics.safetensors
      meta.json                format, which parts are present, how each was trained
      evaluations.json         (once evaluated) the latest headline figures of each evaluation
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from robo_genie.config import ModelConfig
from robo_genie.models import PARTS, build_part
from robo_genie.safe_write import write_text_atomic, writing
from robo_genie.training.checkpoint import state_dict_for_save

FORMAT = "robo_genie.bundle/1"


RETRAIN = "Train a new bundle with `robo-genie train stage=all data.path=SHARDS out=RUN` (or `robo-genie demo`)."


class BundleError(ValueError):
    pass


def _meta_path(path: Path) -> Path:
    return path / "meta.json"


def read_meta(path: str | Path) -> dict:
    path = Path(path)
    if not _meta_path(path).is_file():
        raise BundleError(f"{path} is not a world-model bundle (no meta.json). Train one with "
                          f"`robo-genie train stage=all data.path=SHARDS out=RUN` (it writes RUN/bundle).")
    meta = json.loads(_meta_path(path).read_text())
    if meta.get("format") != FORMAT:
        raise BundleError(f"{_meta_path(path)}: unknown format {meta.get('format')!r}; this robo_genie reads "
                          f"{FORMAT}. Retrain with `robo-genie train stage=all ...`, or load it with the robo_genie "
                          f"version that wrote it")
    return meta


def load_model_config(path: str | Path) -> DictConfig:
    """The bundle's model config, validated against the ModelConfig schema. Bundles from before the
    ST transformer's rotary time positions (2026-12-01) learned one embedding per frame, and bundles
    from before the LAM's FSQ actions (2026-12-02) carry a learnt action codebook; no current model
    has either, so they are refused with the command that trains a new one."""
    read_meta(path)                       # a folder that is not a bundle is named as such
    raw = OmegaConf.load(Path(path) / "config.yaml")
    if "max_frames" in raw:
        raise BundleError(f"{path} was trained by an older robo_genie, whose models learned a position "
                          f"embedding per frame (model.max_frames); today's use rotary time positions, which let "
                          f"play cache past frames. {RETRAIN}")
    if "code_dim" in raw.get("lam", {}):
        raise BundleError(f"{path} was trained by an older robo_genie, whose LAM learnt a codebook of latent "
                          f"actions (model.lam.code_dim); today's quantises them with fixed levels (FSQ). {RETRAIN}")
    return OmegaConf.merge(OmegaConf.structured(ModelConfig), raw)


def _same_model(a: DictConfig, b: DictConfig, part: str) -> bool:
    """Whether a part saved under config b fits a bundle written under config a: the same config,
    except that a new dynamics part may bring its own dynamics section."""
    if part == "dynamics":
        a, b = a.copy(), b.copy()
        a.dynamics = b.dynamics
    return a == b


def save_part(path: str | Path, part: str, model: torch.nn.Module, model_cfg: DictConfig,
              info: dict[str, Any]) -> None:
    """Add or replace one part of a bundle (creating the bundle if needed)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg_yaml = OmegaConf.to_yaml(model_cfg, resolve=True)
    if _meta_path(path).is_file() and not _same_model(load_model_config(path), model_cfg, part):
        raise BundleError(f"{path}/config.yaml describes a different model than the {part} being saved; "
                          f"write to a new run directory or pass init_from={path}")
    meta = read_meta(path) if _meta_path(path).is_file() else {"format": FORMAT, "parts": {}}
    # Every new file is written in full under a temporary name first; only then are they renamed
    # into place (renames need no space), so a full disk leaves the bundle as it was.
    tmp = {name: path / f"{name}.tmp" for name in (f"{part}.safetensors", "config.yaml", "meta.json")}
    with writing(f"bundle part {part}", path / f"{part}.safetensors",
                 "The bundle is unchanged, and training's last checkpoint is intact: free space and rerun the "
                 "same command", tuple(tmp.values())):
        save_file(state_dict_for_save(model), str(tmp[f"{part}.safetensors"]))
        meta["parts"][part] = info
        meta.setdefault("sha256", {})[f"{part}.safetensors"] = file_sha256(tmp[f"{part}.safetensors"])
        tmp["config.yaml"].write_text(cfg_yaml)
        tmp["meta.json"].write_text(json.dumps(meta, indent=1))
        for name, file in tmp.items():          # meta.json last: it vouches for the others
            os.replace(file, path / name)


def load_part(path: str | Path, part: str, device: str | torch.device = "cpu",
              model_cfg: DictConfig | None = None) -> torch.nn.Module:
    path = Path(path)
    meta = read_meta(path)
    if part not in meta["parts"]:
        raise BundleError(f"{path} has no trained {part} (it has: {', '.join(meta['parts']) or 'nothing'}); "
                          f"train it with `robo-genie train stage={part} ...`")
    model_cfg = model_cfg if model_cfg is not None else load_model_config(path)
    model = build_part(part, model_cfg)
    file = path / f"{part}.safetensors"
    expected = meta.get("sha256", {}).get(file.name)     # (bundles written before 2026-12-01 have none)
    if expected is not None and file_sha256(file) != expected:
        raise BundleError(f"{file} is not the file that was saved (its sha256 differs from meta.json's): it is "
                          f"corrupt or was replaced. Copy the bundle again, or retrain the {part}.")
    try:
        state = load_file(str(file), device="cpu")
    except (SafetensorError, OSError) as e:
        raise BundleError(f"{file} cannot be read as safetensors ({e}); robo_genie never loads pickles. "
                          f"Copy the bundle again, or retrain the {part}.") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        # e.g. a LAM from before it read motion products and fitted its code vectors (2026-12-03)
        first = str(e).splitlines()[1].strip() if "\n" in str(e) else str(e)
        raise BundleError(f"{file} was written by another version of robo_genie, whose {part} differs from "
                          f"this version's ({first}). {RETRAIN}") from None
    return model.to(device).eval()


def load_bundle(path: str | Path, device: str | torch.device = "cpu",
                parts: tuple[str, ...] = PARTS) -> tuple[DictConfig, dict[str, torch.nn.Module]]:
    """Load the model config and the requested parts (all three by default)."""
    cfg = load_model_config(path)
    return cfg, {p: load_part(path, p, device, cfg) for p in parts}


EVALUATIONS = "evaluations.json"


def record_evaluation(path: str | Path, what: str, report: str | Path, headline: dict[str, Any]) -> None:
    """Note an evaluation's headline figures in the bundle (`evaluations.json`, latest per kind), so that
    `robo-genie info` can show them. The part files and their digests are untouched."""
    evaluations = read_evaluations(path)
    evaluations[what] = {"report": str(Path(report).resolve()), "at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                         **headline}
    write_text_atomic(Path(path) / EVALUATIONS, json.dumps(evaluations, indent=1), "evaluation record")


def read_evaluations(path: str | Path) -> dict:
    file = Path(path) / EVALUATIONS
    try:
        return json.loads(file.read_text()) if file.is_file() else {}
    except json.JSONDecodeError:
        return {}                           # a damaged note is replaced, never fatal to an eval


def file_sha256(file: Path, h=None) -> str:
    """Hex sha256 of a file, streamed (part files run to gigabytes); `h` to extend a running hash."""
    h = h or hashlib.sha256()
    with open(file, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def digest(path: str | Path) -> str:
    """sha256 over the bundle's config and part files: what an adapter records of the bundle it was
    fitted on, so that it is not used with another."""
    path = Path(path)
    meta = read_meta(path)
    h = hashlib.sha256()
    for name in ["config.yaml", *(f"{p}.safetensors" for p in sorted(meta["parts"]))]:
        h.update(name.encode())
        file_sha256(path / name, h)
    return h.hexdigest()
