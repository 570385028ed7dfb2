"""`robo-genie eval ...` jobs: load a bundle, measure, write JSON (and pictures)."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig
from robo_genie.eval.controllability import delta_t_psnr, held_out_clips

from robo_genie.play import World


def run_controllability(cfg: DictConfig) -> dict:
    world = World.from_bundle(cfg.bundle, cfg.device, cfg.seed)
    world.maskgit_steps = cfg.maskgit_steps
    clips = held_out_clips(cfg.data.path, cfg.t + 1, cfg.n_clips, cfg.seed)
    result = delta_t_psnr(world, clips, cfg.t, cfg.seed)
    result.update(bundle=str(cfg.bundle), data=str(cfg.data.path))
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "controllability.json").write_text(json.dumps(result, indent=1))
    print(f"ΔtPSNR (t={cfg.t}, {result['n_clips']} clips): {result['delta_t_psnr']:.3f} "
          f"(standard error {result['delta_t_psnr_sem']}) dB "
          f"(inferred {result['psnr_inferred']:.2f}, random {result['psnr_random']:.2f}) -> "
          f"{out / 'controllability.json'}")
    return result
