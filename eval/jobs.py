"""`robo-genie eval ...` jobs: load a bundle, measure, write JSON (and pictures)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import DictConfig
from robo_genie.bundle import record_evaluation
from robo_genie.datasets.shards import write_json_atomic
from robo_genie.eval.controllability import delta_t_psnr, held_out_clips

from robo_genie.play import World


def _save_json(out_dir: str, name: str, result: dict) -> Path:
    path = Path(out_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, result)
    return path


def run_controllability(cfg: DictConfig) -> dict:
    if not cfg.data.path:
        raise ValueError("eval controllability needs data.path=SHARDS (frame shards of held-out episodes)")
    world = World.from_bundle(cfg.bundle, cfg.device, cfg.seed)
    world.maskgit_steps = cfg.maskgit_steps
    length = max(cfg.t, *cfg.ts) + 1
    clips = held_out_clips(cfg.data.path, length, cfg.n_clips, cfg.seed)
    recorded = held_out_clips(cfg.data.path, length, cfg.n_clips, cfg.seed, key="actions") if world.recorded else None
    result = delta_t_psnr(world, clips, cfg.t, cfg.seed, tuple(cfg.ts), recorded=recorded)
    result.update(bundle=str(cfg.bundle), data=str(cfg.data.path))
    path = _save_json(cfg.out, "controllability.json", result)
    record_evaluation(cfg.bundle, "controllability", path, headline(result))
    _controllability_page(result, Path(cfg.out))
    print(summary_line(result) + f" -> {path}, {Path(cfg.out) / 'report.html'}")
    return result


def _controllability_page(result: dict, out: Path) -> None:
    from robo_genie.eval.report import controllability_rows, plot_over_t, write_lab_report
    plot_over_t(result, out / "over_t.png")
    lead = (f"Under the actions its LAM reads from the real clips, the world model's frame {result['t']} steps "
            f"ahead is {result['delta_t_psnr_matched']:.2f} dB closer to the real one than under random actions, "
            f"and {result['inferred_minus_copy']:+.2f} dB against holding the prompt still "
            f"({result['n_clips']} held-out clips). For a ceiling on the demo's tabletop, run `robo-genie eval ceiling`.")
    write_lab_report(out / "report.html", "Controllability (ΔtPSNR)", lead, controllability_rows(result),
                     [("over_t.png", "ΔtPSNR and fidelity over the rollout length")],
                     {k: v for k, v in result.items() if k != "per_clip_delta"})


def headline(r: dict) -> dict:
    """The controllability figures `robo-genie info` shows."""
    return {k: r[k] for k in ("t", "delta_t_psnr_matched", "delta_t_psnr_matched_sem", "delta_t_psnr",
                              "psnr_inferred", "psnr_copy", "inferred_minus_copy") if k in r}


def summary_line(r: dict) -> str:
    """ΔtPSNR in one line, each half beside its reference."""
    return (f"ΔtPSNR(t={r['t']}, {r['n_clips']} clips) {r['delta_t_psnr_matched']:.3f} ± "
            f"{r['delta_t_psnr_matched_sem']:.3f} dB against frequency-matched random actions "
            f"({r['delta_t_psnr']:.3f} against uniform); rollouts with inferred actions "
            f"{r['psnr_inferred']:.2f} dB, {r['inferred_minus_copy']:+.2f} dB over holding the prompt still")


def run_ceiling(cfg: DictConfig) -> dict:
    """`robo-genie eval ceiling`: the ΔtPSNR a perfect dynamics model would reach with this bundle's
    tokenizer on the embedded MuJoCo tabletop (see eval/ceiling.py)."""
    from robo_genie.eval.ceiling import delta_t_psnr_ceiling

    from robo_genie import bundle as bundle_io
    from robo_genie.training.loop import resolve_device

    device = resolve_device(cfg.device)
    model_cfg = bundle_io.load_model_config(cfg.bundle)
    tokenizer = bundle_io.load_part(cfg.bundle, "tokenizer", device, model_cfg).eval()
    result = delta_t_psnr_ceiling(tokenizer, cfg.n_clips, cfg.t, model_cfg.image_size, cfg.seed, device)
    result.update(bundle=str(cfg.bundle))
    path = _save_json(cfg.out, "ceiling.json", result)
    print(f"ΔtPSNR ceiling (t={cfg.t}, {result['n_states']} scenes): {result['delta_t_psnr_ceiling']:.3f} "
          f"(standard error {result['delta_t_psnr_ceiling_sem']}) dB: true future coded "
          f"{result['psnr_true_future']:.2f} dB, random future {result['psnr_random_future']:.2f}, "
          f"prompt held {result['psnr_copy_prompt']:.2f} -> {path}")
    return result


def consistency_rows(r: dict) -> list[tuple[str, str, str, str]]:
    reference = f"chance {r['reid_chance']:.3f}"
    if "reid_ceiling" in r:
        reference += f"; a perfect dynamics model {r['reid_ceiling']:.3f}"
    rows = [("re-identification", f"{r['reid_accuracy']:.3f}", reference,
             "how often the LAM, run on a generated transition, reads back the code that was commanded "
             "(the perfect model: real video redrawn by the tokenizer)"),
            ("motion margin", f"{r['motion_margin']:+.3f} (p = {r['p_value']:.3g})", "0: sequences indistinguishable",
             "how much more alike the motion of one sequence is across prompts than that of different sequences")]
    real = r.get("real_actions") or {}
    if "direction_agreement" in real:
        rows.append(("real-direction agreement", f"{real['direction_agreement']:.3f}",
                     f"chance {real['direction_agreement_chance']:.3f}",
                     "two prompts' rollouts of one sequence read as the same real direction by a flow probe"))
    if "nmi" in r:
        rows.append(("NMI, codes vs real directions", f"{r['nmi']:.3f}", "0 = unrelated, 1 = one code per direction",
                     "on the prompts' own video"))
    return rows


def _fvd_note(cfg: DictConfig, from_shards: bool) -> str:
    if not cfg.i3d_weights:
        return ("FVD is not computed: it needs a Kinetics-400 I3D state dict by path (i3d_weights=FILE), "
                "which cannot be downloaded here")
    if not from_shards:
        return "FVD is not computed: prompts are images, so there are no real clips to compare with"
    return ""


def run_consistency(cfg: DictConfig) -> dict:
    """`robo-genie eval consistency`: consistency.json, grid.png, grid.gif, report.html in cfg.out."""
    from robo_genie.datasets.shards import MANIFEST
    from robo_genie.eval import consistency as cons
    from robo_genie.eval.controllability import fidelity_over_time
    from robo_genie.eval.motion import flow_signature
    from robo_genie.eval.report import consistency_pictures, write_lab_report

    if not cfg.prompts:
        raise ValueError("eval consistency needs prompts=PATH: frame shards (held-out episodes) or a folder of images")
    world = World.from_bundle(cfg.bundle, cfg.device, cfg.seed)
    world.maskgit_steps = cfg.maskgit_steps
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    prompts = cons.load_prompts(cfg.prompts, cfg.n_prompts, world.image_size)
    names, sequences, kinds = cons.command_sequences(world.num_actions, cfg.length, cfg.n_random, cfg.seed)
    print(f"rolling out {len(sequences)} sequences x {len(prompts)} prompts x {cfg.length} steps")
    videos = cons.roll_out(world, prompts, sequences)
    signatures = np.stack([[flow_signature(v) for v in row] for row in videos])        # [S, P, L, 2]
    reid = cons.reidentify(world.lam, world.lam_window, videos, sequences, world.num_actions, world.device)
    motion = cons.motion_agreement(signatures, kinds, cfg.n_permutations, cfg.seed)
    report = {"verdict": cons.verdict(reid["reid_accuracy"], reid["reid_chance"], motion["motion_margin"],
                                      motion["p_value"]),
              **{k: v for k, v in reid.items() if k != "lam_readings"}, **motion,
              "n_prompts": len(prompts), "n_sequences": len(sequences), "length": cfg.length,
              "sequences": {n: s.tolist() for n, s in zip(names, sequences)},
              "motion_signature": "mean Farneback optical flow (dx, dy) over changing pixels, per step",
              "bundle": str(cfg.bundle), "prompts": str(cfg.prompts)}
    from_shards = (Path(cfg.prompts) / MANIFEST).is_file()
    if from_shards:
        report.update(cons.reidentification_ceiling(world, cfg.prompts))
        real, probe = cons.real_action_agreement(world.lam, world.lam_window, cfg.prompts, world.device)
        report["real_actions"] = real
        if "nmi" in real:
            report["nmi"] = real["nmi"]
        if probe is not None:
            report["real_actions"].update(cons.direction_agreement(probe, signatures))
        clips = held_out_clips(cfg.prompts, max(cfg.ts) + 1, cfg.n_clips, cfg.seed)
        fidelity = fidelity_over_time(world, clips, list(cfg.ts), cfg.seed, keep_videos=True)
        generated = fidelity.pop("videos")
        report["fidelity"] = fidelity
    report["fvd"], report["fvd_note"] = None, _fvd_note(cfg, from_shards)
    if cfg.i3d_weights and from_shards:
        from robo_genie.eval.fvd import fvd, load_i3d
        i3d = load_i3d(cfg.i3d_weights, world.device)
        report["fvd"] = fvd(i3d, clips[:, 1:], generated)
        report["fvd_note"] = (f"FVD between {len(clips)} held-out clips (steps 1..{max(cfg.ts)}) and their "
                              f"regenerations from LAM-inferred actions; I3D logits from {cfg.i3d_weights}, "
                              f"frames resized to 224 px. Few clips bias FVD upward: compare runs with equal n.")
    path = _save_json(cfg.out, "consistency.json", report)
    record_evaluation(cfg.bundle, "consistency", path, {k: report[k] for k in (
        "reid_accuracy", "reid_chance", "motion_margin", "p_value")})
    consistency_pictures(videos, names, out)
    write_lab_report(out / "report.html", "Latent-action consistency", report["verdict"], consistency_rows(report),
                     [("grid.png", "rows: command sequences; columns: prompts (first, middle and last frame each)"),
                      ("grid.gif", "the same rollouts, animated")],
                     {k: v for k, v in report.items() if k != "sequences"})
    print(report["verdict"])
    print(f"report: {out / 'report.html'}")
    return report
