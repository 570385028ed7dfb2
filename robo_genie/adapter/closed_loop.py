"""The adapter in closed loop, in MuJoCo: shards written by `robo-genie sim generate` name each
episode's seed (`ep<seed>`), so the simulator can restart any held-out episode from its first state
and execute commands there.

- replay: the LAM reads a held-out episode's codes, the adapter turns each into a command for the
  current observation, MuJoCo executes it; the end-effector path is compared with the episode's.
- reach a goal: a LatentPolicy plans codes in the world model towards a goal frame of a held-out
  episode; references are random commands and an oracle that plans with real commands in MuJoCo.
"""

from __future__ import annotations

import numpy as np

from robo_genie.adapter.policy import LatentPolicy, cem, frame_similarity
from robo_genie.datasets.shards import FrameShards, ShardError


def episode_scene(shards: FrameShards, episode: int) -> tuple[str, int]:
    """(scene, simulator seed) of a MuJoCo shard episode."""
    from robo_genie.sim import generate

    extra = shards.manifest.get("extra") or {}
    name = shards.episodes[episode]["name"]
    if "scene" not in extra or not name.startswith("ep"):
        raise ShardError(f"{shards.root}: closed-loop checks need MuJoCo shards written by `robo-genie sim generate` "
                         f"(the manifest names the scene and every episode its seed); this folder's source is "
                         f"{shards.manifest.get('source')!r}")
    seed = int(name[2:])
    return generate.episode_scene(extra["scene"], seed - extra["seed"] * 100_003), seed


class Simulators:
    """One simulator per scene, at the shards' resolution (GL contexts are costly)."""

    def __init__(self, shards: FrameShards):
        self.shards, self._sims = shards, {}

    def __call__(self, scene: str):
        from robo_genie.sim import tabletop, teleop

        if scene not in self._sims:
            res = self.shards.manifest["image_size"]
            step = (self.shards.manifest.get("extra") or {}).get("gripper_step", tabletop.STEP_M)
            self._sims[scene] = (tabletop.TabletopSim(res, step) if scene == "tabletop" else teleop.ArmSim(scene, res))
        return self._sims[scene]


def _path_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b, axis=1).mean())


def _run(sim, seed: int, policy, steps: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Reset to episode `seed` and execute `policy(frame, t) -> command` for `steps` steps. Returns
    end-effector positions [steps+1, 3] and frames."""
    frame = sim.reset(seed)
    path, frames = [sim.gripper_position()], [frame]
    for t in range(steps):
        frame = sim.apply(policy(frame, t))
        path.append(sim.gripper_position())
        frames.append(frame)
    return np.array(path), frames


def _state(sim, adapter) -> np.ndarray | None:
    """The robot's state now, for an adapter that reads it."""
    return sim.robot_state() if adapter.reads_state else None


def _commands(actions: np.ndarray):
    return lambda frame, t: actions[t]


def _through_adapter(sim, adapter, codes: np.ndarray):
    """policy(frame, t): the adapter's command for code t, from the frame the robot is in now (and
    its state now and one step earlier, for an adapter that reads them)."""
    previous = None

    def policy(frame, t):
        nonlocal previous
        state = _state(sim, adapter)
        command = adapter.to_robot(codes[t], frame, state=state, previous_state=previous)["action"]
        previous = state
        return command
    return policy


def replay(adapter, data_path: str, episodes: list[int], seed: int = 0) -> dict:
    """End-effector path error of adapter-driven replay against random commands and the true ones."""
    shards, world = FrameShards(data_path), adapter.world
    sims = Simulators(shards)
    rng = np.random.default_rng(seed)
    pool = adapter.t["sample_actions"].numpy()
    errors = {"adapter": [], "random": [], "true": []}
    for e in episodes:
        scene, sim_seed = episode_scene(shards, e)
        sim, video = sims(scene), shards.read(e)
        actions = shards.read(e, key="actions")[:len(video) - 1]
        codes = world.infer_actions(video)
        steps = len(codes)
        reference, _ = _run(sim, sim_seed, _commands(actions), steps)
        followed, _ = _run(sim, sim_seed, _through_adapter(sim, adapter, codes), steps)       # closed loop
        random_path, _ = _run(sim, sim_seed, _commands(pool[rng.integers(len(pool), size=steps)]), steps)
        # the true actions replayed: ~0 in a deterministic simulator, a check that the start state matches
        true_path, _ = _run(sim, sim_seed, _commands(actions), steps)
        errors["adapter"].append(_path_error(followed, reference))
        errors["random"].append(_path_error(random_path, reference))
        errors["true"].append(_path_error(true_path, reference))
    mean = {k: float(np.mean(v)) for k, v in errors.items()}
    return {"path_error": mean["adapter"], "random_path_error": mean["random"],
            "true_action_path_error": mean["true"], "ratio_to_random": mean["adapter"] / max(mean["random"], 1e-12),
            "path_error_sem": float(np.std(errors["adapter"], ddof=1) / np.sqrt(len(episodes))) if len(episodes) > 1
            else None, "n_episodes": len(episodes)}


def _prototypes(pool: np.ndarray, k: int = 16) -> np.ndarray:
    """Distinct real commands for the oracle to plan over: the pool's distinct rows if few (scripted
    primitives), else a spread-out subset (farthest-point sampling)."""
    distinct = np.unique(pool.round(5), axis=0)
    if len(distinct) <= k:
        return distinct
    chosen = [0]
    dist = np.linalg.norm(distinct - distinct[0], axis=1)
    for _ in range(k - 1):
        chosen.append(int(dist.argmax()))
        dist = np.minimum(dist, np.linalg.norm(distinct - distinct[chosen[-1]], axis=1))
    return distinct[chosen]


def reach_goals(adapter, data_path: str, episodes: list[int], goal_steps: int = 6, horizon: int = 2,
                population: int = 32, iterations: int = 2, success_radius: float = 0.03, seed: int = 0,
                gif_frames: list | None = None, progress=None) -> dict:
    """Success rate and final distances of the LatentPolicy, a random policy and a MuJoCo oracle.
    The goal is the frame `goal_steps` into a held-out episode; each policy gets 1.5x as many steps."""
    shards, world = FrameShards(data_path), adapter.world
    sims = Simulators(shards)
    rng = np.random.default_rng(seed)
    pool = adapter.t["sample_actions"].numpy()
    protos = _prototypes(pool)
    budget = int(np.ceil(1.5 * goal_steps))
    results = {k: {"success": [], "gripper": [], "object": []} for k in ("model", "random", "oracle")}
    for n, e in enumerate(episodes):
        scene, sim_seed = episode_scene(shards, e)
        sim = sims(scene)
        actions = shards.read(e, key="actions")
        if len(actions) <= goal_steps:
            raise ShardError(f"{data_path}: episode {e} has {len(actions)} frames; goal_steps={goal_steps} needs more")
        _, goal_frames = _run(sim, sim_seed, _commands(actions), goal_steps)
        goal, goal_ee, goal_obj = goal_frames[-1], sim.gripper_position(), sim.object_positions()
        policy = LatentPolicy(world, adapter, goal, horizon, population, iterations=iterations, seed=seed + n)

        def oracle(frame, t):
            start = sim.save_state()

            def score(seqs):
                ends = []
                for seq in seqs:
                    sim.load_state(start)
                    for i in seq:
                        end = sim.apply(protos[i])
                    ends.append(end)
                sim.load_state(start)
                return frame_similarity(np.stack(ends), goal)
            plan, _ = cem(score, len(protos), horizon, population, max(2, population // 6), iterations, rng)
            return protos[plan[0]]

        def model(frame, t):
            cmd = policy.select_action(frame, state=_state(sim, adapter)).numpy()
            if gif_frames is not None and n == 0:
                gif_frames.append((frame, policy.predicted, goal))
            return cmd

        for name, fn in (("model", model), ("random", lambda f, t: pool[rng.integers(len(pool))]), ("oracle", oracle)):
            _run(sim, sim_seed, fn, budget)
            d_ee = float(np.linalg.norm(sim.gripper_position() - goal_ee))
            results[name]["gripper"].append(d_ee)
            results[name]["object"].append(float(np.linalg.norm(sim.object_positions() - goal_obj, axis=1).mean()))
            results[name]["success"].append(float(d_ee <= success_radius))
        if progress is not None:
            progress.update()

    def summary(r):
        s = np.array(r["success"])
        return {"success_rate": float(s.mean()),
                "success_rate_sem": float(s.std(ddof=1) / np.sqrt(len(s))) if len(s) > 1 else None,
                "final_gripper_distance": float(np.mean(r["gripper"])),
                "final_object_distance": float(np.mean(r["object"]))}
    m, rnd, orc = (summary(results[k]) for k in ("model", "random", "oracle"))
    return {"success_rate": m["success_rate"], "success_rate_sem": m["success_rate_sem"],
            "random_success_rate": rnd["success_rate"], "oracle_success_rate": orc["success_rate"],
            "final_gripper_distance": m["final_gripper_distance"],
            "random_final_gripper_distance": rnd["final_gripper_distance"],
            "oracle_final_gripper_distance": orc["final_gripper_distance"],
            "final_object_distance": m["final_object_distance"],
            "random_final_object_distance": rnd["final_object_distance"],
            "oracle_final_object_distance": orc["final_object_distance"],
            "n_episodes": len(episodes), "goal_steps": goal_steps, "steps_allowed": budget,
            "success_radius_m": success_radius}
