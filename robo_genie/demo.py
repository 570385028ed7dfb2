"""`robo-genie demo`: the whole pipeline on embedded MuJoCo data, on a CPU, in minutes.

generate tabletop video (train + held-out episodes) -> train tokenizer, LAM, dynamics (tiny)
-> evaluate on held-out episodes, against a perfect dynamics model's ceiling -> DIR/report.json,
DIR/report.html (a lab report), DIR/over_t.png, DIR/rollouts.gif, DIR/regenerated.gif.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from robo_genie import cpu_memory
from robo_genie.bundle import record_evaluation
from robo_genie.config import ModelConfig
from robo_genie.datasets.shards import write_json_atomic
from robo_genie.eval.ceiling import delta_t_psnr_ceiling
from robo_genie.eval.controllability import TS, delta_t_psnr, held_out_clips
from robo_genie.eval.jobs import headline
from robo_genie.eval.parts import lam_action_agreement, tokenizer_psnr
from robo_genie.eval.report import (controllability_rows, plot_over_t, save_gif, share_of_ceiling, tile,
                                    write_lab_report, write_rollouts_gif)
from robo_genie.play import World
from robo_genie.sim.generate import generate
from robo_genie.training.loop import resolve_device
from robo_genie.training.stages import STAGE_ORDER, train_stages

CEILING_STATES = 24         # unseen scenes per t for the ceiling (about 3 s each on 2 cores)


@contextmanager
def _timed(label: str, timings: dict):
    print(f"== {label}")
    start = time.time()
    yield
    timings[label] = round(time.time() - start, 1)


def lead_sentence(report: dict, t: int) -> str:
    dyn = report["dynamics"]
    ratio = "against" if dyn["ratio_to_ceiling"] is None else f"{dyn['ratio_to_ceiling']:.0%} of"
    return (f"Steered by the latent actions its LAM reads from real held-out clips, the world model's frame {t} "
            f"steps ahead is {dyn['delta_t_psnr_matched']:.2f} dB closer to the real one than under random latent "
            f"actions: {ratio} the {dyn['delta_t_psnr_ceiling_by_t'][str(t)]:.2f} dB that a "
            f"perfect dynamics model would gain with this tokenizer. It is {dyn['inferred_minus_copy']:+.2f} dB "
            f"against holding the prompt still, so the rollouts "
            f"{'do' if dyn['inferred_minus_copy'] > 0 else 'do not'} move the scene the way the video went.")


def demo_rows(report: dict, t: int, num_actions: int) -> list[tuple[str, str, str, str]]:
    tok, lam, dyn = report["tokenizer"], report["lam"], report["dynamics"]
    return [
        ("tokenizer PSNR, held-out frames", f"{tok['psnr']:.2f} dB", "26 dB: the gripper's edges survive",
         "how faithfully the discrete tokens redraw a frame"),
        ("LAM NMI with the scripted primitives", f"{lam['nmi']:.3f}", "0 = unrelated, 1 = one code per primitive",
         "whether the latent actions found, without labels, the motions that made the video"),
        ("latent actions in use", f"{lam['codes_used']} of {num_actions}", f"{num_actions}",
         "codes the LAM gives to at least a few held-out transitions"),
        *controllability_rows(dyn, dyn["delta_t_psnr_ceiling_by_t"][str(t)]),
        ("seconds, end to end", f"{report['seconds']:.0f}", "600 on 2 CPU cores", "data, three trainings, evaluation, pictures"),
    ]


def run_demo(cfg: DictConfig) -> dict:
    t_start = time.time()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    model_cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig), cfg.model)
    train_dir, holdout_dir = out / "data" / "train", out / "data" / "holdout"
    timings: dict[str, float] = {}

    with _timed("generate MuJoCo tabletop video", timings):
        for path, n, seed in ((train_dir, cfg.train_episodes, cfg.seed), (holdout_dir, cfg.holdout_episodes, cfg.seed + 1)):
            if not (path / "manifest.json").is_file():
                generate(path, n, cfg.episode_len, model_cfg.image_size, cfg.workers, seed, cfg.progress,
                         gripper_step=cfg.gripper_step)

    stage_cfgs = {p: cfg[p] for p in STAGE_ORDER}
    with _timed("train tokenizer, LAM, dynamics", timings):
        train_stages(STAGE_ORDER, model_cfg, stage_cfgs, str(train_dir), out, device=device, seed=cfg.seed,
                     progress=cfg.progress, pretokenize=cfg.pretokenize)

    with _timed("evaluate on held-out episodes", timings):
        world = World.from_bundle(out / "bundle", str(device), cfg.seed)
        world.maskgit_steps = cfg.maskgit_steps
        clips = held_out_clips(str(holdout_dir), max(cfg.eval_t, *TS) + 1, cfg.eval_clips, cfg.seed)
        report = {
            "tokenizer": {"psnr": tokenizer_psnr(world.tokenizer, clips[:, :cfg.eval_t + 1], device,
                                                 cfg.tokenizer.clip_len)},
            "lam": lam_action_agreement(world.lam, str(holdout_dir), world.lam_window,
                                        model_cfg.lam.num_actions, device),
            "dynamics": delta_t_psnr(world, clips, cfg.eval_t, cfg.seed),
        }

    with _timed("ceiling: a perfect dynamics model on unseen scenes", timings):
        ceiling = {str(t): delta_t_psnr_ceiling(world.tokenizer, CEILING_STATES, t, model_cfg.image_size, cfg.seed,
                                                device, cfg.gripper_step)["delta_t_psnr_ceiling"] for t in TS}
        report["dynamics"]["delta_t_psnr_ceiling_by_t"] = ceiling
        report["dynamics"]["ratio_to_ceiling"] = share_of_ceiling(report["dynamics"]["delta_t_psnr_matched"],
                                                                  ceiling[str(cfg.eval_t)])

    with _timed("render rollouts", timings):
        prompts = clips[:4, 0]
        write_rollouts_gif(world, prompts, out / "rollouts.gif", length=8)
        regen, _ = world.regenerate(clips[0])
        save_gif([tile(np.stack([[clips[0][i], regen[i]]])) for i in range(len(regen))], out / "regenerated.gif")

    report["seconds"] = round(time.time() - t_start, 1)
    report["timings"] = timings
    report["device"] = str(device)
    report["torch_threads"] = torch.get_num_threads()
    report["malloc_keeps_freed_memory"] = cpu_memory.tuned
    write_json_atomic(out / "report.json", report)
    record_evaluation(out / "bundle", "demo", out / "report.json", {
        "tokenizer_psnr": report["tokenizer"]["psnr"], "lam_nmi": report["lam"]["nmi"],
        **headline(report["dynamics"])})
    dyn = report["dynamics"]
    plot_over_t(dyn, out / "over_t.png", ceiling)
    write_lab_report(out / "report.html", "robo_genie demo", lead_sentence(report, cfg.eval_t),
                     demo_rows(report, cfg.eval_t, world.num_actions),
                     [("over_t.png", "left: ΔtPSNR over the rollout length, against a perfect dynamics model; "
                                     "right: PSNR of the rollouts against holding the prompt still"),
                      ("rollouts.gif", (f"rows: {len(prompts)} held-out prompt frames; columns: latent actions "
                                        f"0..{world.num_actions - 1}, each repeated for 8 steps")),
                      ("regenerated.gif", ("left: held-out clip; right: regenerated from its first frame with "
                                           "the LAM-inferred actions"))], report)
    print(f"\ntokenizer PSNR {report['tokenizer']['psnr']:.2f} dB | LAM NMI {report['lam']['nmi']:.3f} "
          f"({report['lam']['codes_used']} codes used) | ΔtPSNR(t={cfg.eval_t}) "
          f"{dyn['delta_t_psnr_matched']:.3f} ± {dyn['delta_t_psnr_matched_sem']:.3f} dB against "
          f"frequency-matched random actions ({dyn['delta_t_psnr']:.3f} against uniform) | rollouts "
          f"{dyn['inferred_minus_copy']:+.2f} dB over holding the prompt | {report['seconds']:.0f} s")
    print(f"report: {out / 'report.html'}")
    print(f"play it in the browser: robo-genie play ui=true bundle={out / 'bundle'} prompts={holdout_dir}")
    return report
