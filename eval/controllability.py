"""Genie's controllability metric, ΔtPSNR, with the references that make it readable.

For held-out clips: x̂ is generated from the first frame with the LAM's inferred actions, x̂' from
the same frame with random actions. ΔtPSNR = PSNR(x_t, x̂_t) - PSNR(x_t, x̂'_t) at frame t after the
prompt. A model that ignores its actions scores 0.

Random actions are drawn two ways. Genie draws them uniformly (`delta_t_psnr`). A LAM that leaves
codes unused then inflates the score: uniform draws pick codes the dynamics model never saw, which
wreck the rollout (NOTES.md: ΔtPSNR 2.9 dB from a collapsed LAM). `delta_t_psnr_matched` draws them
from the LAM's code frequencies on the training data instead. `psnr_copy` holds the prompt still,
scored the same way: rollouts under inferred actions should beat it, or the ΔtPSNR was earned only
by random actions wrecking the rollout.
"""

from __future__ import annotations

import numpy as np
import torch
from robo_genie.datasets.shards import FrameShards
from robo_genie.eval.metrics import psnr

from robo_genie.models.lam import infer_actions_windowed
from robo_genie.play import World


TS = (1, 2, 4, 8)      # the steps after the prompt that ΔtPSNR is reported at


def held_out_clips(data_path: str, length: int, n_clips: int, seed: int = 0, key: str = "frames") -> np.ndarray:
    """Up to n_clips clips of `length` frames, spread over the episodes (uint8 [N, T, H, W, 3]);
    key="actions" gives the recorded actions of the same clips instead ([N, T, A])."""
    shards = FrameShards(data_path)
    if not shards.has(key):
        raise ValueError(f"{data_path}: its episodes carry no `{key}`")
    eligible = [i for i, ep in enumerate(shards.episodes) if ep["length"] >= length]
    if not eligible:
        raise ValueError(f"{data_path}: no episode has the {length} frames this evaluation needs; "
                         f"lower t= or give longer episodes")
    rng = np.random.default_rng(seed)
    clips = []
    for k in range(n_clips):
        e = eligible[k % len(eligible)]
        start = int(rng.integers(0, shards.episodes[e]["length"] - length + 1))
        clips.append(shards.read(e, start, length, key=key))
    return np.stack(clips)


@torch.no_grad()
def rollout(world: World, first: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """first [B, H, W, 3], actions [B, t] -> generated frames [B, t, H, W, 3] (float)."""
    world.reset_batch(first)
    return torch.stack([world.step_batch(actions[:, i]) for i in range(actions.shape[1])], 1)


def random_actions(shape, num_actions: int, seed: int, frequencies: list[float] | None = None) -> torch.Tensor:
    """Seeded random codes, uniform or drawn with the given code frequencies."""
    g = torch.Generator().manual_seed(seed)
    if frequencies is None:
        return torch.randint(0, num_actions, shape, generator=g)
    p = torch.tensor(frequencies, dtype=torch.float)
    return torch.multinomial(p / p.sum(), int(np.prod(shape)), replacement=True, generator=g).reshape(shape)


def action_frequencies(world: World, inferred: torch.Tensor) -> tuple[list[float], str]:
    """The LAM's code frequencies on the training data (recorded in the bundle by the dynamics
    stage); for an older bundle, those of the evaluated clips' inferred actions."""
    if world.action_frequencies is not None:
        return world.action_frequencies, "training data"
    counts = torch.bincount(inferred.flatten().cpu(), minlength=world.num_actions).float()
    return (counts / counts.sum()).tolist(), "evaluated clips"


def _sem(x: torch.Tensor) -> float | None:
    return float(x.std() / len(x) ** 0.5) if len(x) > 1 else None


@torch.no_grad()
def controllability_rollouts(world: World, video: torch.Tensor, seed: int = 0,
                             recorded: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """video [N, T+1, H, W, 3] float -> rollouts [N, T, H, W, 3] from its first frame under the LAM's
    inferred actions, uniform random actions and frequency-matched random actions, and the prompt
    held still (coded and decoded, as the rollouts are). For a model trained on recorded actions,
    `recorded` [N, T+1, A] are the clips' own, and both random rollouts take another clip's."""
    if world.recorded:
        if recorded is None:
            raise ValueError("this bundle's dynamics model was trained on recorded actions: evaluate it on "
                             "shards that carry actions")
        inferred = recorded[:, :video.shape[1] - 1].float().to(world.device)
        uniform = matched = inferred.roll(1, dims=0)          # a shuffled-action control
        freqs, source = [], "recorded actions of the next clip"
    else:
        inferred = infer_actions_windowed(world.lam, video, world.lam_window)      # [N, T]
        freqs, source = action_frequencies(world, inferred)
        uniform = random_actions(inferred.shape, world.num_actions, seed).to(world.device)
        matched = random_actions(inferred.shape, world.num_actions, seed + 1, freqs).to(world.device)
    world.reset_batch(video[:, 0])
    copy = world.decode_latest()[:, None].expand(-1, inferred.shape[1], -1, -1, -1)
    return {"inferred": rollout(world, video[:, 0], inferred), "uniform": rollout(world, video[:, 0], uniform),
            "matched": rollout(world, video[:, 0], matched), "copy": copy,
            "frequencies": freqs, "frequency_source": source}


@torch.no_grad()
def delta_t_psnr(world: World, clips: np.ndarray, t: int = 4, seed: int = 0,
                 ts: tuple[int, ...] = TS, recorded: np.ndarray | None = None) -> dict:
    """ΔtPSNR at t (uniform and frequency-matched random actions, with standard errors over clips),
    at each of `ts` that the clips are long enough for, and the PSNRs behind it."""
    horizon = clips.shape[1] - 1
    if horizon < t:
        raise ValueError(f"clips of {clips.shape[1]} frames cannot score t={t}")
    ts = sorted({*(s for s in ts if s <= horizon), t})
    video = torch.from_numpy(clips).float().div(255).to(world.device)       # [N, horizon+1, H, W, 3]
    r = controllability_rollouts(world, video, seed, None if recorded is None else torch.from_numpy(recorded))
    truth = video[:, 1:]
    p = {k: psnr(truth, r[k]) for k in ("inferred", "uniform", "matched", "copy")}   # each [N, horizon]
    d_uniform, d_matched = p["inferred"] - p["uniform"], p["inferred"] - p["matched"]
    at = t - 1
    result = {
        "delta_t_psnr": float(d_uniform[:, at].mean()), "delta_t_psnr_sem": _sem(d_uniform[:, at]),
        "delta_t_psnr_matched": float(d_matched[:, at].mean()), "delta_t_psnr_matched_sem": _sem(d_matched[:, at]),
        "psnr_inferred": float(p["inferred"][:, at].mean()), "psnr_random": float(p["uniform"][:, at].mean()),
        "psnr_random_matched": float(p["matched"][:, at].mean()), "psnr_copy": float(p["copy"][:, at].mean()),
        "inferred_minus_copy": float((p["inferred"] - p["copy"])[:, at].mean()),
        "inferred_minus_copy_sem": _sem((p["inferred"] - p["copy"])[:, at]),
        "delta_t_psnr_by_t": {str(s): float(d_uniform[:, s - 1].mean()) for s in ts},
        "delta_t_psnr_matched_by_t": {str(s): float(d_matched[:, s - 1].mean()) for s in ts},
        "psnr_inferred_by_t": {str(s): float(p["inferred"][:, s - 1].mean()) for s in ts},
        "psnr_copy_by_t": {str(s): float(p["copy"][:, s - 1].mean()) for s in ts},
        "random_action_frequencies": [round(f, 4) for f in r["frequencies"]],
        "random_action_frequencies_from": r["frequency_source"],
        "t": t, "n_clips": len(clips), "per_clip_delta": d_uniform[:, at].tolist(),
    }
    return result


@torch.no_grad()
def fidelity_over_time(world: World, clips: np.ndarray, ts: list[int], seed: int = 0,
                       keep_videos: bool = False) -> dict:
    """ΔtPSNR at several t, and PSNR / SSIM of the clips regenerated with the LAM-inferred actions
    at every step. keep_videos adds the regenerated clips (uint8, steps 1..max(ts)) under "videos"
    (for FVD)."""
    from robo_genie.eval.metrics import ssim
    video = torch.from_numpy(clips[:, :max(ts) + 1]).float().div(255).to(world.device)
    r = controllability_rollouts(world, video, seed)
    truth = video[:, 1:]
    p_inf, p_rand, p_matched = psnr(truth, r["inferred"]), psnr(truth, r["uniform"]), psnr(truth, r["matched"])
    result = {
        "delta_t_psnr": {str(t): float((p_inf[:, t - 1] - p_rand[:, t - 1]).mean()) for t in ts},
        "delta_t_psnr_matched": {str(t): float((p_inf[:, t - 1] - p_matched[:, t - 1]).mean()) for t in ts},
        "regenerated_psnr": p_inf.mean(0).tolist(),
        "copy_psnr": psnr(truth, r["copy"]).mean(0).tolist(),
        "regenerated_ssim": ssim(truth, r["inferred"]).mean(0).tolist(),
        "n_clips": len(clips),
    }
    if keep_videos:
        result["videos"] = (r["inferred"].clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    return result
