"""Genie's controllability metric, ΔtPSNR.

For held-out clips: x̂ is generated from the first frame with the LAM's inferred actions, x̂' from
the same frame with uniformly random actions. ΔtPSNR = PSNR(x_t, x̂_t) - PSNR(x_t, x̂'_t) at frame
t after the prompt. A model that ignores its actions scores 0; larger means the latent actions
steer the generation the way the real video went.
"""

from __future__ import annotations

import numpy as np
import torch
from robo_genie.datasets.shards import FrameShards
from robo_genie.eval.metrics import psnr

from robo_genie.models.lam import infer_actions_windowed
from robo_genie.play import World


def held_out_clips(data_path: str, length: int, n_clips: int, seed: int = 0) -> np.ndarray:
    """Up to n_clips clips of `length` frames, spread over the episodes (uint8 [N, T, H, W, 3])."""
    shards = FrameShards(data_path)
    eligible = [i for i, ep in enumerate(shards.episodes) if ep["length"] >= length]
    if not eligible:
        raise ValueError(f"{data_path}: no episode has the {length} frames this evaluation needs")
    rng = np.random.default_rng(seed)
    clips = []
    for k in range(n_clips):
        e = eligible[k % len(eligible)]
        start = int(rng.integers(0, shards.episodes[e]["length"] - length + 1))
        clips.append(shards.read(e, start, length))
    return np.stack(clips)


@torch.no_grad()
def rollout(world: World, first: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """first [B, H, W, 3], actions [B, t] -> generated frames [B, t, H, W, 3] (float)."""
    world.reset_batch(first)
    return torch.stack([world.step_batch(actions[:, i]) for i in range(actions.shape[1])], 1)


@torch.no_grad()
def inferred_and_random_rollouts(world: World, video: torch.Tensor, seed: int = 0
                                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """video [N, T+1, H, W, 3] float -> rollouts [N, T, H, W, 3] from its first frame under the
    LAM's inferred actions and under uniformly random actions (seeded)."""
    inferred = infer_actions_windowed(world.lam, video, world.lam_window)  # [N, T]
    g = torch.Generator().manual_seed(seed)
    random = torch.randint(0, world.num_actions, inferred.shape, generator=g).to(world.device)
    return rollout(world, video[:, 0], inferred), rollout(world, video[:, 0], random)


@torch.no_grad()
def delta_t_psnr(world: World, clips: np.ndarray, t: int = 4, seed: int = 0) -> dict:
    video = torch.from_numpy(clips).float().div(255).to(world.device)   # [N, t+1, H, W, 3]
    gen_inferred, gen_random = inferred_and_random_rollouts(world, video, seed)
    p_inf = psnr(video[:, t], gen_inferred[:, t - 1])
    p_rand = psnr(video[:, t], gen_random[:, t - 1])
    delta = p_inf - p_rand
    sem = float(delta.std() / len(delta) ** 0.5) if len(delta) > 1 else None   # standard error
    return {"delta_t_psnr": float(delta.mean()), "delta_t_psnr_sem": sem, "psnr_inferred": float(p_inf.mean()),
            "psnr_random": float(p_rand.mean()), "t": t, "n_clips": len(clips),
            "per_clip_delta": delta.tolist()}


@torch.no_grad()
def fidelity_over_time(world: World, clips: np.ndarray, ts: list[int], seed: int = 0,
                       keep_videos: bool = False) -> dict:
    """ΔtPSNR at several t, and PSNR / SSIM of the clips regenerated with the LAM-inferred actions
    at every step, from one rollout with inferred and one with random actions. keep_videos adds the
    regenerated clips (uint8, steps 1..max(ts)) under "videos" (for FVD)."""
    from robo_genie.eval.metrics import ssim
    video = torch.from_numpy(clips[:, :max(ts) + 1]).float().div(255).to(world.device)
    gen_inferred, gen_random = inferred_and_random_rollouts(world, video, seed)
    truth = video[:, 1:]
    p_inf, p_rand = psnr(truth, gen_inferred), psnr(truth, gen_random)            # [N, horizon]
    result = {
        "delta_t_psnr": {str(t): float((p_inf[:, t - 1] - p_rand[:, t - 1]).mean()) for t in ts},
        "regenerated_psnr": p_inf.mean(0).tolist(),
        "regenerated_ssim": ssim(truth, gen_inferred).mean(0).tolist(),
        "n_clips": len(clips),
    }
    if keep_videos:
        result["videos"] = (gen_inferred.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    return result
