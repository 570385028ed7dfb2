"""Render scripted episodes into frame shards, in parallel worker processes.

Scenes: `tabletop` (the demo's mocap gripper and direction primitives), the arm scenes of
`robo_genie.sim.scenes` (cloth, rope, soft, rigid) with scripted behaviours and segmentation, and
`mix` (the four arm scenes in turn). Every scene records the robot's state beside its commands.
A rerun into the same `out=` with the same settings continues where the last one stopped (shards
are whole files and the manifest is rewritten after each).
"""

from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
from robo_genie.datasets.shards import MANIFEST, ShardError, ShardWriter, read_manifest
from robo_genie.sim import tabletop, teleop
from robo_genie.sim.scenes import SCENES
from robo_genie.progress import progress_bar

ALL_SCENES = ("tabletop", *SCENES, "mix")      # mix: episode i is arm scene SCENES[i % 4]
_sims: dict = {}


def episode_scene(scene: str, index: int) -> str:
    """The scene that episode `index` of a `scene` folder was rendered in (a mix cycles the arm scenes)."""
    return SCENES[index % len(SCENES)] if scene == "mix" else scene


def _simulator(scene: str, resolution: int, cameras: tuple[str, ...], gripper_step: float):
    key = (scene, resolution, cameras, gripper_step)
    if key not in _sims:                  # one scene + GL context per worker process
        _sims[key] = (tabletop.TabletopSim(resolution, gripper_step) if scene == "tabletop"
                      else teleop.ArmSim(scene, resolution, cameras))
    return _sims[key]


def render_episode(args: tuple) -> tuple[int, dict[str, np.ndarray]]:
    """One episode as the named per-step arrays a shard stores."""
    scene, seed, length, resolution, cameras, gripper_step = args
    sim = _simulator(scene, resolution, cameras, gripper_step)
    ep = sim.episode(seed, length)
    arrays = {"frames": ep.frames, "actions": ep.actions, "labels": ep.labels, "states": ep.states}
    if scene != "tabletop":
        arrays |= {"objects": ep.objects, "segmentation": ep.segmentation}
        arrays |= {f"frames_{cam}": v for cam, v in ep.views.items()}
    return seed, arrays


def _spec(scene: str, seed: int, cameras: tuple[str, ...], gripper_step: float) -> dict:
    if scene == "tabletop":
        extra = {"scene": "tabletop", "seed": seed, "state_names": list(tabletop.STATE_NAMES)}
        if gripper_step != tabletop.STEP_M:       # recorded only when not the default
            extra["gripper_step"] = gripper_step
        return {"action_names": list(tabletop.ACTION_NAMES), "label_names": list(tabletop.PRIMITIVES),
                "extra": extra, "fps": tabletop.FPS}
    return {"action_names": list(teleop.ACTION_NAMES), "label_names": list(teleop.BEHAVIOURS),
            "fps": teleop.FPS,
            "extra": {"scene": scene, "seed": seed, "cameras": list(cameras),
                      "state_names": list(teleop.STATE_NAMES), "object_names": list(teleop.OBJECT_NAMES),
                      "segmentation_names": list(teleop.SEGMENT_NAMES)}}


def _open_writer(out: Path, scene: str, resolution: int, seed: int, cameras: tuple[str, ...], gripper_step: float):
    spec = _spec(scene, seed, cameras, gripper_step)
    if (out / MANIFEST).is_file():
        manifest = read_manifest(out, allow_empty=True)     # stopped before its first episode: resume too
        if manifest.get("extra") != spec["extra"] or manifest.get("image_size") != resolution:
            raise ShardError(f"{out} holds episodes generated with other settings "
                             f"({manifest.get('extra')}, {manifest.get('image_size')} px); choose a new out=")
        return ShardWriter.resume(out, manifest), {e["name"] for e in manifest["episodes"]}
    return ShardWriter(out, source=f"mujoco_{scene}", image_size=resolution, **spec), set()


def generate(out: str | Path, episodes: int, episode_len: int = 32, resolution: int = 64,
             workers: int = 1, seed: int = 0, progress: bool = True, scene: str = "tabletop",
             cameras: tuple[str, ...] | list[str] = ("front",), gripper_step: float | None = None) -> dict:
    """Write `episodes` episodes (seeds seed*100003 + i) of `scene` to a shard directory at `out`.
    `gripper_step`: the tabletop gripper's travel per step in metres (default 0.022, 2-3 px at 64 px)."""
    if scene not in ALL_SCENES:
        raise ValueError(f"unknown scene {scene!r}; available: {', '.join(ALL_SCENES)}")
    cameras = tuple(cameras)
    if scene == "tabletop" and cameras != ("front",):
        raise ValueError("the tabletop scene has one camera (front); the arm scenes have front, side, top")
    if gripper_step is not None and scene != "tabletop":
        raise ValueError("gripper_step is a setting of the tabletop scene; the arm scenes move by teleop waypoints")
    gripper_step = tabletop.STEP_M if gripper_step is None else float(gripper_step)
    if not 0 < gripper_step <= 0.1:
        raise ValueError(f"gripper_step={gripper_step}: expected metres per step in (0, 0.1]")
    out = Path(out)
    writer, done = _open_writer(out, scene, resolution, seed, cameras, gripper_step)
    jobs = [(episode_scene(scene, i), seed * 100_003 + i, episode_len, resolution,
             cameras, gripper_step) for i in range(episodes)]
    jobs = [j for j in jobs if f"ep{j[1]}" not in done]
    bar = progress_bar(total=episodes, initial=episodes - len(jobs), desc=f"sim {scene} -> {out}", unit="ep",
                       bar=progress)
    try:
        if workers > 1 and jobs:
            # A fresh process per worker (GL contexts do not fork). Unlike multiprocessing.Pool, the
            # executor fails when a worker dies instead of starting new ones forever.
            try:
                with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
                    for s, arrays in pool.map(render_episode, jobs, chunksize=2):
                        writer.add_arrays(f"ep{s}", arrays)
                        bar.update()
            except BrokenProcessPool as e:
                raise RuntimeError(
                    "a simulation worker process died. If generate() is called from a script, put the call "
                    "under `if __name__ == \"__main__\":` (workers are spawned and import the script "
                    "again); otherwise run with workers=1 to see the error.") from e
        else:
            for job in jobs:
                s, arrays = render_episode(job)
                writer.add_arrays(f"ep{s}", arrays)
                bar.update()
    finally:                              # what was rendered before an interruption is kept
        bar.close()
        manifest = writer.close()
    return manifest
