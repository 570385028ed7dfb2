"""`robo-genie sim probe`: run the deformable probe for one or all scenes and write the report:
probe.json, curves.png (metrics over the horizon), one GIF per scene (physics | model | difference)
and report.html."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from robo_genie.datasets.shards import write_json_atomic
from robo_genie.eval.report import save_gif, tile, write_lab_report
from robo_genie.sim.probe import (
    METRICS,
    PhysicsClips,
    Predictor,
    counterfactual,
    gap,
    probe_clips,
    simulate_clips,
)
from robo_genie.sim.scenes import COUNTERPART, SCENES
from robo_genie.sim.teleop import BEHAVIOURS, ArmSim

PROBE_SCENES = ("cloth", "rope", "soft", "rigid", "all")


def probe_seeds(seed: int, n: int) -> list[int]:
    """Held out from `sim generate` (whose seeds are seed * 100003 + i, far below 10**9)."""
    return [10**9 + seed * 100_003 + i for i in range(n)]


def run_probe_scenes(predict: Predictor, scenes: list[str], episodes: int, horizon: int, resolution: int,
                     seed: int = 0, start: int = 0, compare_rigid: bool = True, counterfactual_episodes: int = 0,
                     progress: bool = True) -> tuple[dict, dict]:
    """The probe's numbers per scene, and the clips + predictions the pictures are made from."""
    seeds = probe_seeds(seed, episodes)
    behaviours = [BEHAVIOURS[i % len(BEHAVIOURS)] for i in range(episodes)]     # balanced
    report, shown = {}, {}
    for scene in scenes:
        sim = ArmSim(scene, resolution)
        clips = simulate_clips(scene, seeds, horizon, resolution, start, sim=sim, progress=progress,
                               behaviours=behaviours)
        entry, pred = probe_clips(predict, clips)
        shown[scene] = (clips, pred)
        if compare_rigid and scene in COUNTERPART:
            shape = COUNTERPART[scene]
            rigid = simulate_clips("rigid", seeds, horizon, resolution, start, shape=shape, progress=progress,
                                   behaviours=clips.behaviours)
            entry["rigid_counterpart"], rigid_pred = probe_clips(predict, rigid)
            entry["rigid_counterpart"]["shape"] = shape
            entry["gap_vs_rigid"] = gap(entry["model"], entry["rigid_counterpart"]["model"])
            shown[f"{scene} (rigid {shape})"] = (rigid, rigid_pred)
        if counterfactual_episodes:
            entry["counterfactual"] = counterfactual(predict, scene, probe_seeds(seed + 1, counterfactual_episodes),
                                                     horizon, resolution, progress=progress, sim=sim)
        report[scene] = entry
    return report, shown


def side_by_side_gif(clips: PhysicsClips, pred: np.ndarray, path: Path, rows: int = 4) -> None:
    """Rows = episodes; columns = physics | model | |difference| (x3); frames over the horizon."""
    n = min(rows, len(pred))
    model = np.concatenate([clips.frames[:n, :1], pred[:n]], 1)
    phys = clips.frames[:n]
    diff = np.clip(np.abs(phys.astype(np.int16) - model.astype(np.int16)) * 3, 0, 255).astype(np.uint8)
    grid = np.stack([phys, model, diff], 1)                  # [n, 3, T, S, S, 3]
    save_gif([tile(grid[:, :, t]) for t in range(grid.shape[2])], path, fps=4)


def plot_curves(report: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = {"psnr": "PSNR (dB)", "ssim": "SSIM", "iou": "silhouette IoU", "boundary_px": "boundary distance (px)"}
    fig, axes = plt.subplots(1, 5, figsize=(22, 4))
    for i, (scene, entry) in enumerate(report.items()):
        colour = f"C{i}"
        for ax, k in zip(axes, METRICS):
            steps = np.arange(1, len(entry["model"]["per_step"][k]) + 1)
            ax.plot(steps, entry["model"]["per_step"][k], color=colour, label=f"{scene} model")
            ax.plot(steps, entry["still"]["per_step"][k], color=colour, ls=":", label=f"{scene} still image")
            if "rigid_counterpart" in entry:
                ax.plot(steps, entry["rigid_counterpart"]["model"]["per_step"][k], color=colour, ls="--",
                        label=f"{scene}: rigid {entry['rigid_counterpart']['shape']} model")
            ax.set_title(names[k])
            ax.set_xlabel("step")
        if "counterfactual" in entry:
            cf = entry["counterfactual"]["per_step"]
            steps = np.arange(1, len(cf["own_iou"]) + 1)
            axes[4].plot(steps, cf["own_iou"], color=colour, label=f"{scene} own branch")
            axes[4].plot(steps, cf["cross_iou"], color=colour, ls="--", label=f"{scene} other branch")
    axes[4].set_title("counterfactual: model IoU vs physics")
    axes[4].set_xlabel("step")
    axes[0].legend(fontsize=7)
    axes[4].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plain_sentence(report: dict) -> str:
    ious = {s: e["model"]["mean"]["iou"] for s, e in report.items()}
    still = {s: e["still"]["mean"]["iou"] for s, e in report.items()}
    beats = [s for s in ious if ious[s] > still[s]]
    return (f"Prompted with a physics frame and driven by the actions its LAM reads from the physics clip, the model's "
            f"object silhouettes overlap the physics ones {'better than' if beats else 'no better than'} a still "
            f"image does{' in ' + ', '.join(beats) if beats and len(beats) < len(ious) else ''}.")


def probe_rows(report: dict) -> list[tuple[str, str, str, str]]:
    rows = []
    for scene, e in report.items():
        m = e["model"]["mean"]
        rows.append((f"{scene}: silhouette IoU, model", f"{m['iou']:.3f}",
                     f"still image {e['still']['mean']['iou']:.3f}; ceiling {e['silhouette_ceiling_iou']:.3f}",
                     "overlap with the physics object over the horizon (the ceiling: the colour classifier on physics frames)"))
        rows.append((f"{scene}: PSNR, model", f"{m['psnr']:.2f} dB", f"still image {e['still']['mean']['psnr']:.2f} dB",
                     "pixel fidelity against physics"))
        if "gap_vs_rigid" in e:
            rows.append((f"{scene}: IoU minus its rigid counterpart's", f"{e['gap_vs_rigid']['mean']['iou']:+.3f}",
                         "0: deformation costs nothing", f"the {e['rigid_counterpart']['shape']} on the same seeds"))
        if "counterfactual" in e:
            cf = e["counterfactual"]
            rows.append((f"{scene}: counterfactual, own minus other branch IoU", f"{cf['own_minus_cross']:+.3f}",
                         "above 0: the model follows its actions", f"pairs {cf['pairs']}"))
    return rows


def lead_line(report: dict) -> str:
    parts = []
    for scene, e in report.items():
        s = f"{scene}: IoU {e['model']['mean']['iou']:.2f} (still image {e['still']['mean']['iou']:.2f})"
        if "gap_vs_rigid" in e:
            s += (f", rigid {e['rigid_counterpart']['shape']} {e['rigid_counterpart']['model']['mean']['iou']:.2f}"
                  f", gap {e['gap_vs_rigid']['mean']['iou']:+.2f}")
        parts.append(s)
    return "; ".join(parts)


def run_probe(cfg) -> dict:
    """The CLI job: load the bundle, probe, write the files."""
    from robo_genie.bundle import record_evaluation
    from robo_genie.sim.probe import world_predictor

    from robo_genie.play import World

    scene = cfg.scene or "all"
    if scene not in PROBE_SCENES:
        raise ValueError(f"sim probe: scene={scene!r}; available: {', '.join(PROBE_SCENES)}")
    scenes = [s for s in SCENES if s != "rigid"] if scene == "all" else [scene]
    if cfg.bundle is None:
        raise ValueError("sim probe needs bundle=PATH (a world-model bundle from `robo-genie train` or the demo)")
    t0 = time.time()
    world = World.from_bundle(cfg.bundle, device=cfg.device, seed=cfg.seed)
    predict = world_predictor(world, cfg.maskgit_steps)
    report, shown = run_probe_scenes(predict, scenes, cfg.episodes, cfg.horizon, world.image_size, cfg.seed,
                                     cfg.start, cfg.compare_rigid, cfg.counterfactual_episodes, cfg.progress)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    caption = ("metrics over the horizon: model (solid), rigid counterpart (dashed), still image (dotted); "
               "counterfactual own vs other branch")
    images = [("curves.png", caption)]
    plot_curves(report, out / "curves.png")
    for name, (clips, pred) in shown.items():
        file = name.replace(" ", "_").replace("(", "").replace(")", "") + ".gif"
        side_by_side_gif(clips, pred, out / file)
        images.append((file, f"{name}: physics | model | difference x3"))
    result = {"bundle": str(cfg.bundle), "horizon": cfg.horizon, "start": cfg.start, "episodes": cfg.episodes,
              "resolution": world.image_size, "seeds": probe_seeds(cfg.seed, cfg.episodes),
              "silhouette_method": "chromaticity distance to the object's median prompt chromaticity, "
                                   "threshold calibrated on the prompt's true segmentation",
              "scenes": report, "seconds": round(time.time() - t0, 1)}
    write_json_atomic(out / "probe.json", result)
    record_evaluation(cfg.bundle, "probe", out / "probe.json", {
        f"{scene}_iou": round(e["model"]["mean"]["iou"], 4) for scene, e in report.items()})
    write_lab_report(out / "report.html", "Deformable-object probe", plain_sentence(report) + " " + lead_line(report),
                     probe_rows(report), images, result)
    print(lead_line(report))
    print(f"wrote {out / 'probe.json'}, curves.png, {len(shown)} GIFs and report.html ({result['seconds']} s)")
    return result
