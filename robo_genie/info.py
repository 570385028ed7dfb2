"""`robo-genie info bundle=B`: what a bundle is, in a page of text (or JSON with json=true)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from omegaconf import OmegaConf

from robo_genie import bundle as bundle_io
from robo_genie.models import PARTS


def describe(path: str | Path) -> dict:
    path = Path(path)
    meta = bundle_io.read_meta(path)
    cfg = bundle_io.load_model_config(path)
    parts = {}
    for part, info in meta["parts"].items():
        file = path / f"{part}.safetensors"
        parts[part] = {"file_mib": round(file.stat().st_size / 2**20, 2) if file.is_file() else None,
                       "parameters": _parameters(file) if file.is_file() else None,
                       "steps": info.get("steps"), "clip_len": info.get("clip_len"), "data": info.get("data"),
                       "init_from": info.get("init_from"), "seconds": info.get("seconds"),
                       "saved_at": info.get("saved_at"), "final_metrics": info.get("final_metrics", {})}
    return {"bundle": str(path.resolve()), "format": meta["format"],
            "parts": parts, "missing_parts": [p for p in PARTS if p not in parts],
            "model": {"image_size": cfg.image_size, "latent_actions": cfg.lam.num_actions,
                      "tokenizer_codes": cfg.tokenizer.codebook_size, "dynamics_kind": cfg.dynamics.kind,
                      "dynamics_actions": cfg.dynamics.actions},
            "evaluations": bundle_io.read_evaluations(path),
            "config": OmegaConf.to_container(cfg, resolve=True)}


def _parameters(file: Path) -> int:
    """Parameter count from the safetensors header alone (no tensor is read)."""
    from safetensors import safe_open
    with safe_open(str(file), framework="pt") as f:
        return sum(math.prod(f.get_slice(key).get_shape()) for key in f.keys())


def format_text(d: dict) -> str:
    m = d["model"]
    lines = [f"bundle {d['bundle']} ({d['format']})",
             f"model: {m['image_size']} px frames, {m['tokenizer_codes']} tokenizer codes, {m['latent_actions']} "
             f"latent actions, dynamics kind={m['dynamics_kind']} (actions: {m['dynamics_actions']})", "", "parts:"]
    for part, p in d["parts"].items():
        metrics = ", ".join(f"{k} {v:.4g}" for k, v in p["final_metrics"].items()
                            if k in ("psnr", "mse", "codes_used", "perplexity", "token_acc"))
        lines.append(f"  {part:<10} {p['parameters'] / 1e6:8.2f} M parameters, {p['file_mib']:7.2f} MiB; "
                     f"{p['steps']} steps on {p['data']} ({p['seconds']} s, saved {p['saved_at']})")
        if p["init_from"]:
            lines.append(f"             fine-tuned from {p['init_from']}")
        if metrics:
            lines.append(f"             at the last step: {metrics}")
    if d["missing_parts"]:
        lines.append(f"  not trained yet: {', '.join(d['missing_parts'])}")
    lines += ["", "evaluations:"]
    if not d["evaluations"]:
        lines.append("  none yet (robo-genie eval controllability|consistency, sim probe, demo record them here)")
    for what, e in d["evaluations"].items():
        figures = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                            for k, v in e.items() if k not in ("report", "at"))
        lines.append(f"  {what:<16} {figures}")
        lines.append(f"  {'':<16} {e['report']} ({e['at']})")
    lines += ["", "config (config.yaml):", OmegaConf.to_yaml(OmegaConf.create(d["config"])).rstrip()]
    return "\n".join(lines)


def run_info(cfg) -> dict:
    d = describe(cfg.bundle)
    print(json.dumps(d, indent=1) if cfg.json else format_text(d))
    return d
