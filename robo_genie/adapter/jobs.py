"""`robo-genie adapter fit|eval`: fit an adapter on labelled shards; judge it offline and in MuJoCo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from robo_genie import bundle as bundle_io
from robo_genie.adapter.adapter import KINDS, Adapter, AdapterError
from robo_genie.adapter.transitions import Transitions, action_names, labelled_episodes, read_transitions, state_names
from robo_genie.datasets.shards import FrameShards, write_json_atomic
from robo_genie.bundle import record_evaluation
from robo_genie.progress import progress_bar

GRIPPER = "gripper"


def fit(world, data_path: str, kind: str, labelled: float, seed: int = 0,
        data: Transitions | None = None) -> Adapter:
    """An adapter fitted on a seeded `labelled` fraction of the episodes of `data_path` (`data`: their
    transitions, already read). Where the shards record the robot's state, the `learned` kind also
    trains on the other episodes, their commands read from how the state changed (pseudo_labels.py)."""
    shards = FrameShards(data_path)
    chosen = labelled_episodes(len(shards.episodes), labelled, seed)
    pseudo = kind == "learned" and shards.has("states") and len(chosen) < len(shards.episodes)
    if data is None:
        data = read_transitions(world, data_path, None if pseudo else chosen)
    is_labelled = np.isin(data.episodes, chosen)
    info = {"bundle": str(Path(world.bundle_path).resolve()), "bundle_digest": bundle_io.digest(world.bundle_path),
            "data": str(data_path), "labelled": labelled, "labelled_episodes": len(chosen), "seed": seed}
    if data.observation == "state":
        info["state_names"] = state_names(shards)
    return Adapter.fit(kind, data.subset(is_labelled), world, action_names(shards), info, seed,
                       data.subset(~is_labelled) if pseudo else None)


def offline_metrics(adapter: Adapter, data: Transitions) -> dict:
    """Per-field mean absolute error, translation-direction cosine, gripper accuracy, inverse accuracy."""
    pred = adapter.predict(data.codes, data.features)
    true = data.actions
    names = adapter.names
    out = {"mae": {n: float(np.abs(pred[:, i] - true[:, i]).mean()) for i, n in enumerate(names)}}
    if len(names) >= 3:
        moving = np.linalg.norm(true[:, :3], axis=1) > 1e-8
        p, t = pred[moving, :3], true[moving, :3]
        cos = (p * t).sum(1) / np.maximum(np.linalg.norm(p, axis=1) * np.linalg.norm(t, axis=1), 1e-12)
        out["direction_cosine"] = float(cos.mean())
        out["direction_cosine_sem"] = float(cos.std(ddof=1) / np.sqrt(len(cos))) if len(cos) > 1 else None
    if GRIPPER in names:
        g = names.index(GRIPPER)
        out["gripper_accuracy"] = float(((pred[:, g] > 0.5) == (true[:, g] > 0.5)).mean())
    out["inverse_accuracy"] = float((adapter.invert(true, data.features) == data.codes).mean())
    out["inverse_chance"] = float(np.bincount(data.codes).max() / len(data.codes))
    out["n_transitions"] = len(data)
    return out


def run_fit(cfg: DictConfig) -> Adapter:
    from robo_genie.play import World

    if not cfg.bundle or not cfg.data.path:
        raise ValueError("adapter fit needs bundle=RUN/bundle and data.path=SHARDS (shards that carry actions)")
    world = World.from_bundle(cfg.bundle, cfg.device, cfg.seed)
    adapter = fit(world, cfg.data.path, cfg.kind, cfg.labelled, cfg.seed)
    path = adapter.save(cfg.out)
    pseudo = adapter.info.get("pseudo_labelled_transitions")
    more = f", and {pseudo} more labelled from the robot's state" if pseudo else ""
    print(f"fitted a {cfg.kind} adapter on {adapter.info['labelled_episodes']} labelled episodes "
          f"({adapter.info['n_transitions']} transitions{more}) of {cfg.data.path} -> {path}")
    return adapter


def _plot_fractions(table: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for kind, rows in table.items():
        fr = [r["labelled"] * 100 for r in rows]
        axes[0].plot(fr, [r["direction_cosine"] for r in rows], "o-", label=kind)
        axes[1].plot(fr, [float(np.mean(list(r["mae"].values())[:3])) for r in rows], "o-", label=kind)
    for ax, title in zip(axes, ("translation-direction cosine (higher is better)", "xyz error, m (lower is better)")):
        ax.set_xscale("log")
        ax.set_xlabel("labelled episodes, %")
        ax.set_title(title, fontsize=9)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def run_eval(cfg: DictConfig) -> dict:
    from robo_genie.adapter.closed_loop import reach_goals, replay
    from robo_genie.eval.report import save_gif, tile, write_lab_report

    if not cfg.adapter or not cfg.data.path:
        raise ValueError("adapter eval needs adapter=ADAPTER_DIR and data.path=HELD_OUT_SHARDS")
    adapter = Adapter.load(cfg.adapter, bundle=cfg.bundle, device=cfg.device)
    world, out = adapter.world, Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    held_out = read_transitions(world, cfg.data.path)
    result = {"adapter": str(cfg.adapter), "kind": adapter.kind, "labelled": adapter.info["labelled"],
              "data": str(cfg.data.path), "offline": offline_metrics(adapter, held_out)}

    # Offline over labelled fractions, both kinds, refitted on the adapter's own training shards.
    train = read_transitions(world, adapter.info["data"])
    table = {k: [] for k in KINDS}
    for kind in KINDS:
        for f in cfg.fractions:
            a = fit(world, adapter.info["data"], kind, f, adapter.info["seed"], data=train)
            table[kind].append({"labelled": f, "labelled_episodes": a.info["labelled_episodes"],
                                **offline_metrics(a, held_out)})
    result["offline_by_fraction"] = table
    _plot_fractions(table, out / "offline_by_fraction.png")

    shards = FrameShards(cfg.data.path)
    off = result["offline"]
    lead = (f"{adapter.kind} adapter, {adapter.info['labelled']:.0%} of the episodes labelled: translation-direction "
            f"cosine {off.get('direction_cosine', float('nan')):.2f} on held-out transitions (1 = always the "
            f"right direction).")
    if "scene" in shards.manifest.get("extra", {}):          # MuJoCo shards: the simulator can replay them
        n = len(shards.episodes)
        result["replay"] = replay(adapter, cfg.data.path, list(range(min(cfg.replay_episodes, n))), cfg.seed)
        goal_eps = list(range(min(cfg.goal_episodes, n)))
        gif: list = []
        with progress_bar(total=len(goal_eps), desc="reach goals", unit="ep", bar=cfg.progress) as bar:
            result["goal"] = reach_goals(adapter, cfg.data.path, goal_eps, cfg.goal_steps, cfg.horizon,
                                         cfg.population, cfg.iterations, cfg.success_radius, cfg.seed, gif, bar)
        if gif:
            save_gif([tile(np.stack([[f, p, g]])) for f, p, g in gif], out / "closed_loop.gif", fps=2)
        rep, goal = result["replay"], result["goal"]
        lead += (f" In MuJoCo, replaying held-out episodes' latent codes through it strays "
                 f"{rep['path_error'] * 100:.1f} cm from the real path, against {rep['random_path_error'] * 100:.1f} "
                 f"cm for random commands. Planning in the world model reaches {goal['success_rate']:.0%} of the "
                 f"goals (random {goal['random_success_rate']:.0%}, an oracle planning in MuJoCo "
                 f"{goal['oracle_success_rate']:.0%}).")
    else:
        result["replay"] = result["goal"] = None
        result["closed_loop_note"] = (f"{cfg.data.path} is not MuJoCo data from `robo-genie sim generate`, so there "
                                      f"is no simulator to replay it in: offline figures only")
        lead += " " + result["closed_loop_note"] + "."
    write_json_atomic(out / "adapter_eval.json", result)
    record_evaluation(world.bundle_path, "adapter", out / "adapter_eval.json", {
        "kind": adapter.kind, "direction_cosine": off.get("direction_cosine"),
        **({"replay_path_error_m": result["replay"]["path_error"], "goal_success_rate": result["goal"]["success_rate"]}
           if result["replay"] else {})})
    write_lab_report(out / "report.html", "robo_genie adapter", lead, _rows(result),
               [("offline_by_fraction.png", "offline error over the labelled fraction, lookup vs learned")]
               + ([("closed_loop.gif", "left: MuJoCo under the adapter's commands; middle: the world model's "
                    "predicted frame at the end of its plan; right: the goal")] if result["replay"] else []),
               {k: v for k, v in result.items() if k != "offline_by_fraction"})
    print(lead)
    print(f"-> {out / 'adapter_eval.json'}, {out / 'report.html'}")
    return result


def _rows(result: dict) -> list[tuple[str, str, str, str]]:
    """The adapter's figures, each beside its reference."""
    off, rows = result["offline"], []
    if "direction_cosine" in off:
        rows.append(("translation-direction cosine", f"{off['direction_cosine']:.3f}", "0: unrelated; 1: always right",
                     "predicted against true command direction, held-out transitions"))
    if "gripper_accuracy" in off:
        rows.append(("gripper open/closed agreement", f"{off['gripper_accuracy']:.3f}", "1: always right", ""))
    rows.append(("inverse map: the code the LAM reads", f"{off['inverse_accuracy']:.3f}",
                 f"chance {off['inverse_chance']:.3f} (the commonest code)", "a command and a frame to a latent code"))
    if result["replay"]:
        rep, goal = result["replay"], result["goal"]
        rows.append(("replay: end-effector path error", f"{rep['path_error'] * 100:.1f} cm",
                     f"random commands {rep['random_path_error'] * 100:.1f} cm; true commands "
                     f"{rep['true_action_path_error'] * 100:.1f} cm", "the LAM's codes of a held-out episode, "
                     "through the adapter, executed in MuJoCo"))
        rows.append(("goal reaching: success", f"{goal['success_rate']:.2f}",
                     f"random {goal['random_success_rate']:.2f}; MuJoCo oracle {goal['oracle_success_rate']:.2f}",
                     "planning in the world model, executing through the adapter"))
    return rows


def run_adapter(cfg: DictConfig):
    jobs = {"fit": run_fit, "eval": run_eval}
    if cfg.what not in jobs:
        raise SystemExit(f"robo-genie adapter: unknown action {cfg.what!r}; available: {', '.join(jobs)}")
    if cfg.kind not in KINDS:
        raise AdapterError(f"kind={cfg.kind!r}: expected one of {', '.join(KINDS)}")
    return jobs[cfg.what](cfg)
