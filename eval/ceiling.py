"""The ΔtPSNR a perfect dynamics model would reach on the demo's MuJoCo tabletop, given a tokenizer.

ΔtPSNR compares a rollout under the inferred actions with one under random actions. A dynamics
model that predicted the tokens of the true future exactly would score
    PSNR(x_t, D(E(x_t))) - PSNR(x_t, D(E(x'_t)))
where x'_t is where the scene would really be after random actions. The simulator can make both
futures from one state, so this ceiling is measured, not guessed: it says how much of the metric the
scene's motion (a gripper moving a few pixels per step) and the tokenizer leave to win.

Futures: the true one holds one scripted primitive for t steps (as the demo's episodes do, in runs
of 3-6 steps); the random one draws a primitive per step (as random latent actions do).
"""

from __future__ import annotations

import numpy as np
import torch
from robo_genie.eval.metrics import psnr


def counterfactual_futures(n_states: int, t: int, resolution: int, seed: int = 0, step_m: float | None = None
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First frames, true futures and random futures, each [n_states, H, W, 3] uint8 (`step_m`: the
    gripper's travel per step, as `sim generate gripper_step=`)."""
    from robo_genie.sim.tabletop import PRIMITIVES, STEP_M, TabletopSim

    sim = TabletopSim(resolution, step_m or STEP_M)
    rng = np.random.default_rng(seed)
    firsts, true, random = [], [], []
    for i in range(n_states):
        held = [int(rng.integers(len(PRIMITIVES)))] * t
        drawn = rng.integers(0, len(PRIMITIVES), t).tolist()
        # Scene seeds apart from those `sim generate` gives episodes (seed * 100003 + i): unseen scenes.
        first, (a, b) = sim.futures(seed * 100_003 + 50_000 + i, [held, drawn])
        firsts.append(first), true.append(a), random.append(b)
    return np.stack(firsts), np.stack(true), np.stack(random)


@torch.no_grad()
def coded(tokenizer, frames: np.ndarray, device) -> torch.Tensor:
    """Frames through the tokenizer and back, one frame at a time: [N, H, W, 3] in [0, 1]."""
    video = torch.from_numpy(frames).to(device).float().div(255)[:, None]
    return tokenizer.decode(tokenizer.encode(video)).clamp(0, 1)[:, 0]


def delta_t_psnr_ceiling(tokenizer, n_states: int = 48, t: int = 4, resolution: int = 64, seed: int = 0,
                         device: str | torch.device = "cpu", step_m: float | None = None) -> dict:
    firsts, true, random = counterfactual_futures(n_states, t, resolution, seed, step_m)
    x = torch.from_numpy(true).to(device).float().div(255)
    p_true = psnr(x, coded(tokenizer, true, device))
    p_random = psnr(x, coded(tokenizer, random, device))
    p_copy = psnr(x, coded(tokenizer, firsts, device))
    gap = p_true - p_random
    finite = torch.isfinite(gap)
    gap = gap[finite]
    moved = (np.abs(true.astype(np.int16) - random.astype(np.int16)).max(-1) > 10).mean()
    return {"delta_t_psnr_ceiling": float(gap.mean()),
            "delta_t_psnr_ceiling_sem": float(gap.std() / len(gap) ** 0.5) if len(gap) > 1 else None,
            "psnr_true_future": float(p_true[finite].mean()), "psnr_random_future": float(p_random[finite].mean()),
            "psnr_copy_prompt": float(p_copy[finite].mean()),
            "fraction_of_pixels_the_futures_differ_in": float(moved),
            "t": t, "n_states": int(finite.sum()), "seed": seed,
            "note": ("what a dynamics model that predicted the true future's tokens exactly would score, "
                     "against the tokens of the scene's real future under random primitives")}
