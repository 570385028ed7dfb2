"""`robo-genie bench play`: frames per second while playing a world model, decode included.

Each case primes a rollout with `context` frames of history, then times `timed_steps` steps (after
`warmup_steps` untimed ones) of the dynamics model and the decoder. `cached`: as `World` plays,
with rolling caches of the last frames' temporal keys/values, so a step computes only its own
frame. Uncached: every step recomputes the window's frames from scratch (the dynamics model over
the last `window - 1` frames, the decoder over the last `window`), which is what play did before
the caches. A context past the window is a sliding window: the oldest frames drop out.
"""

from __future__ import annotations

import statistics
import time

import torch
from omegaconf import OmegaConf

from robo_genie.config import ModelConfig
from robo_genie.models import build_part
from robo_genie.play import World
from robo_genie.training.loop import resolve_device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _world(cfg, device: torch.device) -> World:
    """The bundle's world model, or one with random weights of `model`'s shape."""
    if cfg.bundle:
        return World.from_bundle(cfg.bundle, str(device))
    model_cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig), cfg.model)
    torch.manual_seed(0)
    parts = {p: build_part(p, model_cfg).to(device).eval() for p in ("tokenizer", "lam", "dynamics")}
    if hasattr(parts["dynamics"], "set_codebook"):
        parts["dynamics"].set_codebook(parts["tokenizer"].quantizer.codebook)
    return World(model_cfg, parts, cfg.clip_len, 2, device)


@torch.no_grad()
def _uncached_step(world: World, action: torch.Tensor) -> torch.Tensor:
    """One step recomputed from scratch over the window (no caches)."""
    ctx = world._tokens[:, -max(world.window - 1, 1):]
    acts = torch.cat([world._actions, action[:, None]], 1)[:, -ctx.shape[1]:]
    nxt = world.dynamics.sample_next(ctx, acts, world.maskgit_steps, world.temperature, world.generator)
    world._tokens = torch.cat([world._tokens, nxt[:, None]], 1)
    world._actions = torch.cat([world._actions, action[:, None]], 1)
    recent = world._tokens[:, -world.window:]
    grid = world.image_size // world.cfg.tokenizer.patch
    return world.tokenizer.decode(recent.reshape(*recent.shape[:2], grid, grid))[:, -1]


def time_play(world: World, context: int, cached: bool, steps: int, warmup: int, prompts: int,
              device: torch.device) -> dict:
    """The median time of a step from `context` frames of history (each timed step starts from the
    same history: the world is restored after it)."""
    g = torch.Generator().manual_seed(0)
    world.reset_batch(torch.rand(prompts, world.image_size, world.image_size, 3, generator=g))
    for a in torch.randint(0, world.num_actions, (context - 1, prompts), generator=g):   # untimed history
        world.step_batch(a, decode=False)
    world.decode_latest()                             # the decoder's cache catches up, untimed
    start = world.snapshot()
    times = []
    for i, a in enumerate(torch.randint(0, world.num_actions, (warmup + steps, prompts), generator=g).to(device)):
        _sync(device)
        t0 = time.perf_counter()
        frame = world.step_batch(a) if cached else _uncached_step(world, a)
        frame.sum().item()                            # the frame is on the host's side of the timer
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
        world.restore(start)
    sec = statistics.median(times)
    return {"context_frames": context, "cached": cached, "ms_per_frame": round(sec * 1e3, 3),
            "frames_per_s": round(prompts / sec, 2)}


def bench_play(cfg) -> dict:
    device = resolve_device(cfg.device)
    world = _world(cfg, device)
    kind = world.cfg.dynamics.kind
    rounds = list(cfg.maskgit_steps) if kind == "maskgit" else [None]
    rows = []
    for steps in rounds:
        world.maskgit_steps = steps
        for cached in cfg.cached:
            for context in cfg.contexts:
                row = {"model": world.cfg.name, "kind": kind, "maskgit_steps": steps, "prompts": cfg.prompts,
                       "window": world.window, "device": str(device),
                       **time_play(world, context, cached, cfg.timed_steps, cfg.warmup_steps, cfg.prompts, device)}
                rows.append(row)
                print(f"{row['model']} {kind}{f' {steps} rounds' if steps else ''}, "
                      f"{'cached' if cached else 'uncached'}, {context} frames of context: "
                      f"{row['frames_per_s']} frames/s ({row['ms_per_frame']} ms)")
    for r in rows:       # how flat each setting's step time is over the contexts
        same = [o["ms_per_frame"] for o in rows if o["cached"] == r["cached"] and o["maskgit_steps"] == r["maskgit_steps"]]
        r["vs_fastest_context"] = round(r["ms_per_frame"] / min(same), 3)
    return {"benchmark": "play", "model": world.cfg.name, "bundle": cfg.bundle, "window": world.window,
            "warmup_steps": cfg.warmup_steps, "timed_steps": cfg.timed_steps,
            "note": "median step time after warm-up; a step = dynamics + decode of one frame per prompt",
            "results": rows}
