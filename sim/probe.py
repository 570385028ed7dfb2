"""The deformable-object probe: how far from MuJoCo physics is a world model, step by step, on cloth,
rope and soft bodies, compared with rigid objects of similar size driven the same way?

For held-out simulated episodes the model is prompted with the first physics frame and driven by
the LAM's actions inferred from the physics clip (a `Predictor`); its frames are compared with the
physics frames at every step 1..H: PSNR, SSIM, silhouette IoU of the target object and the distance
between silhouette boundaries. Each deformable scene is paired with its rigid counterpart (same
seeds, so the same colours, poses and behaviour), and the deformable-minus-rigid gap isolates
deformation from motion. Two references bound the numbers: a still image (the prompt repeated) and
the silhouette classifier applied to the physics frames themselves (its ceiling).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from robo_genie.eval.metrics import psnr, ssim
from robo_genie.sim.silhouette import boundary_distance, fit_colour_model, iou
from robo_genie.sim.teleop import BEHAVIOURS, ArmSim
from robo_genie.progress import progress_bar

# physics clips uint8 [N, H+1, S, S, 3] -> the model's frames for steps 1..H, uint8 [N, H, S, S, 3]
Predictor = Callable[[np.ndarray], np.ndarray]
METRICS = ("psnr", "ssim", "iou", "boundary_px")
TARGET = 2                                       # the target's index in the segmentation
# Counterfactual pairs share the approach to the same corner and part after the grasp.
COUNTERFACTUAL_PAIRS = (("drag", "lift_corner"), ("lift_corner", "fold"), ("drag", "fold"))


@dataclass
class PhysicsClips:
    frames: np.ndarray              # [N, H+1, S, S, 3] uint8
    target: np.ndarray              # [N, H+1, S, S] bool: the target object's true silhouette
    seeds: list[int]
    behaviours: list[str]


def simulate_clips(scene: str, seeds: list[int], horizon: int, resolution: int, start: int = 0,
                   behaviours: list[str | None] | None = None, shape: str | None = None,
                   progress: bool = False, sim: ArmSim | None = None) -> PhysicsClips:
    sim = sim or ArmSim(scene, resolution)
    behaviours = behaviours or [None] * len(seeds)
    frames, target, names = [], [], []
    for seed, b in progress_bar(list(zip(seeds, behaviours)), desc=f"physics {scene}", unit="ep", bar=progress):
        ep = sim.episode(seed, start + horizon + 1, behaviour=b, shape=shape)
        frames.append(ep.frames[start:])
        target.append(ep.segmentation[start:] == TARGET)
        names.append(BEHAVIOURS[int(ep.labels[0])])
    return PhysicsClips(np.stack(frames), np.stack(target), list(seeds), names)


def _silhouettes(frames: np.ndarray, clips: PhysicsClips) -> np.ndarray:
    """Colour-classified silhouettes [N, H, S, S] of frames for steps 1..H (calibrated per episode on
    its prompt); episodes whose target is not visible in the prompt get all-False masks and NaN scores."""
    out = np.zeros(frames.shape[:-1], bool)
    for i in range(len(frames)):
        model = fit_colour_model(clips.frames[i, 0], clips.target[i, 0])
        if model is not None:
            out[i] = model.mask(frames[i])
    return out


def _ious(masks: np.ndarray, truths: np.ndarray) -> np.ndarray:
    """Silhouette IoU per episode and step: [N, H] from two [N, H, S, S] mask stacks."""
    return np.array([[iou(m, t) for m, t in zip(ms, ts)] for ms, ts in zip(masks, truths)])


def clip_metrics(pred: np.ndarray, clips: PhysicsClips) -> dict[str, np.ndarray]:
    """Per episode and step [N, H]: PSNR (dB), SSIM, silhouette IoU, boundary distance (px)."""
    truth = clips.frames[:, 1:]
    if pred.shape != truth.shape:
        raise ValueError(f"predicted frames {pred.shape} do not match the physics frames {truth.shape}")
    a = torch.from_numpy(pred).float() / 255
    b = torch.from_numpy(truth).float() / 255
    masks = _silhouettes(pred, clips)
    true_masks = clips.target[:, 1:]
    visible = clips.target[:, 0].any(axis=(1, 2))
    ious = _ious(masks, true_masks)
    dists = np.array([[boundary_distance(m, t) for m, t in zip(ms, ts)] for ms, ts in zip(masks, true_masks)])
    ious[~visible], dists[~visible] = np.nan, np.nan
    return {"psnr": psnr(a, b).numpy(), "ssim": ssim(a, b).numpy(), "iou": ious, "boundary_px": dists}


def summarise(metrics: dict[str, np.ndarray]) -> dict:
    """Mean over episodes per step, and over steps."""
    return {"per_step": {k: [round(float(x), 4) for x in np.nanmean(v, 0)] for k, v in metrics.items()},
            "mean": {k: round(float(np.nanmean(v)), 4) for k, v in metrics.items()}}


def still_frames(clips: PhysicsClips) -> np.ndarray:
    """The reference a frozen model scores: the prompt repeated for every step."""
    h = clips.frames.shape[1] - 1
    return np.repeat(clips.frames[:, :1], h, axis=1)


def probe_clips(predict: Predictor, clips: PhysicsClips) -> tuple[dict, np.ndarray]:
    """The model's, the still image's and the silhouette ceiling's scores on one set of clips."""
    pred = predict(clips.frames)
    ceiling = _silhouettes(clips.frames[:, 1:], clips)
    visible = clips.target[:, 0].any(axis=(1, 2))
    ceiling_iou = _ious(ceiling, clips.target[:, 1:])
    ceiling_iou[~visible] = np.nan
    report = {"model": summarise(clip_metrics(pred, clips)),
              "still": summarise(clip_metrics(still_frames(clips), clips)),
              "silhouette_ceiling_iou": round(float(np.nanmean(ceiling_iou)), 4),
              "n_episodes": len(clips.seeds), "n_visible": int(visible.sum()),
              "behaviours": {b: clips.behaviours.count(b) for b in BEHAVIOURS if b in clips.behaviours}}
    return report, pred


def gap(deformable: dict, rigid: dict) -> dict:
    """Deformable minus rigid, per metric (mean over steps, and per step). For PSNR, SSIM and IoU a
    negative gap means the model is further from physics on the deformable; for boundary_px, positive."""
    return {"mean": {k: round(deformable["mean"][k] - rigid["mean"][k], 4) for k in METRICS},
            "per_step": {k: [round(a - b, 4) for a, b in zip(deformable["per_step"][k], rigid["per_step"][k])]
                         for k in METRICS}}


def _crop(clips: PhysicsClips, starts: list[int], horizon: int) -> PhysicsClips:
    return PhysicsClips(np.stack([f[s:s + horizon + 1] for f, s in zip(clips.frames, starts)]),
                        np.stack([t[s:s + horizon + 1] for t, s in zip(clips.target, starts)]),
                        clips.seeds, clips.behaviours)


def counterfactual(predict: Predictor, scene: str, seeds: list[int], horizon: int, resolution: int,
                   progress: bool = False, sim: ArmSim | None = None, max_branch: int = 40) -> dict:
    """From one start state, two different action sequences: two behaviours that approach and grasp
    the same corner identically, then part (e.g. drag vs lift). The prompt is the last frame the two
    physics runs share, so both branches start from the same state. Physics diverges; does the
    model diverge the same way? `own` is the silhouette IoU of each model rollout with its own
    physics, `cross` with the other branch's physics: own > cross means the model's object follows
    the branch it was driven with."""
    sim = sim or ArmSim(scene, resolution)
    pairs = [COUNTERFACTUAL_PAIRS[i % len(COUNTERFACTUAL_PAIRS)] for i in range(len(seeds))]
    long = max_branch + horizon
    a = simulate_clips(scene, seeds, long, resolution, behaviours=[p[0] for p in pairs], sim=sim, progress=progress)
    b = simulate_clips(scene, seeds, long, resolution, behaviours=[p[1] for p in pairs], sim=sim, progress=progress)
    same = (a.frames == b.frames).all(axis=(2, 3, 4))          # [N, T]: frames still identical
    if not same[:, 0].all():
        raise RuntimeError("counterfactual branches do not start from the same frame")
    branch = [min(int(np.argmin(row)) - 1 if not row.all() else max_branch, max_branch) for row in same]
    a, b = _crop(a, branch, horizon), _crop(b, branch, horizon)
    ma, mb = _silhouettes(predict(a.frames), a), _silhouettes(predict(b.frames), a)
    ta, tb = a.target[:, 1:], b.target[:, 1:]
    visible = a.target[:, 0].any(axis=(1, 2))
    scores = {"own_iou": (_ious(ma, ta) + _ious(mb, tb)) / 2,
              "cross_iou": (_ious(ma, tb) + _ious(mb, ta)) / 2,
              "physics_divergence": 1 - _ious(ta, tb),
              "model_divergence": 1 - _ious(ma, mb)}
    for v in scores.values():
        v[~visible] = np.nan
    report = summarise(scores)
    report["final_step"] = {k: round(float(np.nanmean(v[:, -1])), 4) for k, v in scores.items()}
    report["pairs"] = [list(p) for p in pairs]
    report["branch_frame"] = branch
    report["own_minus_cross"] = round(report["final_step"]["own_iou"] - report["final_step"]["cross_iou"], 4)
    return report


def world_predictor(world, maskgit_steps: int | None = None) -> Predictor:
    """Prompt with the first physics frame, drive with the LAM's actions inferred from the clip."""
    def predict(frames: np.ndarray) -> np.ndarray:
        world.maskgit_steps = maskgit_steps
        actions = torch.tensor([world.infer_actions(clip) for clip in frames])
        world.reset_batch(torch.from_numpy(frames[:, 0]).float() / 255)
        out = [world.step_batch(actions[:, t]) for t in range(actions.shape[1])]
        return (torch.stack(out, 1).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    return predict
