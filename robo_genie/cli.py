"""`robo-genie SUBCOMMAND [word] key=value ...`: every subcommand composes a structured config
(robo_genie.config) with Hydra overrides, so a wrong key or type fails before any work starts."""

from __future__ import annotations

import sys
from collections.abc import Callable

USAGE = """usage: robo-genie COMMAND [key=value ...]

commands:
  demo      whole pipeline on embedded MuJoCo data: generate, train, evaluate, play
            robo-genie demo out=DIR
  ingest    video (folders, LeRobot v3.0/v2.x, RLDS / Open X-Embodiment) -> frame shards; frame shards -> token shards
            robo-genie ingest source=video_folder|lerobot|rlds path=IN out=SHARDS [fps=..] [resolution=64] [workers=N]
            robo-genie ingest source=rlds dataset=rt1|bridge|... [path=LOCAL_COPY] out=SHARDS
            robo-genie ingest source=shards path=SHARDS tokenize_with=RUN/bundle out=TOKENS
  export    frame shards -> a LeRobot v3.0 dataset
            robo-genie export format=lerobot path=SHARDS out=DIR
  train     train the tokenizer, LAM and dynamics model into RUN/bundle
            robo-genie train stage=all data.path=SHARDS model=tiny out=RUN [steps=..]
  play      roll a world model out from an image under chosen latent actions
            robo-genie play bundle=RUN/bundle prompt=IMAGE actions=0,3,3,1 out=ROLLOUT.gif
            robo-genie play ui=true bundle=RUN/bundle [prompts=HELD_OUT] [adapter=A]   (a browser page)
  eval      robo-genie eval controllability bundle=RUN/bundle data.path=SHARDS out=DIR
            robo-genie eval consistency bundle=RUN/bundle prompts=SHARDS_OR_IMAGES out=DIR
            robo-genie eval ceiling bundle=RUN/bundle out=DIR   (a perfect dynamics model's ΔtPSNR, tabletop)
  adapter   map latent actions to robot commands, fitted on a few labelled episodes; judged offline and in MuJoCo
            robo-genie adapter fit bundle=RUN/bundle data.path=SHARDS_WITH_ACTIONS kind=lookup|learned labelled=0.05 out=ADAPTER
            robo-genie adapter eval adapter=ADAPTER data.path=HELD_OUT_SHARDS out=DIR
  sim       MuJoCo scenes: scripted robot video, and the deformable-object probe of a world model
            robo-genie sim generate scene=tabletop|cloth|rope|soft|rigid episodes=N workers=W out=SHARDS
            robo-genie sim probe bundle=RUN/bundle scene=all|cloth|rope|soft|rigid episodes=N horizon=H out=DIR
  info      what a bundle is: its parts and sizes, the data it was trained on, its evaluations, its config
            robo-genie info bundle=RUN/bundle [json=true]
  bench     speed, as JSON with the hardware named
            robo-genie bench sim scene=cloth episodes=16 workers=1,2 out=bench_sim.json
            robo-genie bench data out=bench_data.json
            robo-genie bench train model=tiny precisions=fp32,bf16 compile=false,true out=bench_train.json
            robo-genie bench play model=small contexts=1,4,16,40 cached=true,false out=bench_play.json

`robo-genie COMMAND --help` prints that command's config with its defaults.
"""


def compose(config_name: str, overrides: list[str], require_all: bool = True):
    from hydra import compose as hydra_compose
    from hydra import initialize
    from omegaconf import OmegaConf

    from robo_genie.config import register_configs

    register_configs()
    with initialize(version_base=None, config_path=None):
        cfg = hydra_compose(config_name=config_name, overrides=overrides)
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing and require_all:
        raise SystemExit(f"robo-genie: missing required setting(s): {', '.join(m + '=...' for m in missing)}")
    return cfg


def _demo(cfg) -> None:
    from robo_genie.demo import run_demo
    run_demo(cfg)


def _ingest(cfg) -> None:
    if cfg.on_error is None:
        cfg.on_error = "skip" if cfg.source == "rlds" else "fail"
    if cfg.source == "rlds" and (cfg.dataset or cfg.mixture):
        from robo_genie.datasets.ingest_rlds import ingest_known
        ingest_known(cfg)
        return
    if not cfg.path:
        raise SystemExit(f"robo-genie ingest source={cfg.source}: give path=INPUT")
    if cfg.source == "shards":
        if not cfg.tokenize_with:
            raise SystemExit("robo-genie ingest source=shards: give tokenize_with=BUNDLE (the bundle whose "
                             "tokenizer and LAM encode the frames)")
        from robo_genie.datasets.pretokenize import pretokenize
        manifest = pretokenize(cfg.path, cfg.tokenize_with, cfg.out, device=cfg.device, progress=cfg.progress)
        print(f"wrote tokens of {len(manifest['episodes'])} episodes to {cfg.out}")
        return
    from robo_genie.datasets.ingest import ingest_sliced, job_options, summary
    options = {"split": cfg.split, "state_keys": cfg.state_keys} if cfg.source == "rlds" else {}
    manifests = ingest_sliced(cfg.source, cfg.path, cfg.out, **job_options(cfg), source_options=options,
                              camera=cfg.image_key if cfg.source == "rlds" else cfg.camera)
    for manifest in manifests:
        print(summary(manifest, cfg.out))


def _export(cfg) -> None:
    if cfg.format != "lerobot":
        raise SystemExit(f"robo-genie export: unknown format {cfg.format!r}; available: lerobot")
    from robo_genie.datasets.export import export_lerobot
    out = export_lerobot(cfg.path, cfg.out, task=cfg.task, progress=cfg.progress)
    print(f"wrote a LeRobot v3.0 dataset to {out}")


def _train(cfg) -> None:
    from robo_genie.training.jobs import run_train_job
    run_train_job(cfg)


def _play(cfg) -> None:
    from robo_genie.datasets.transforms import load_image
    from robo_genie.eval.report import save_gif
    from robo_genie.play import World

    if cfg.ui:
        from robo_genie.play_ui.app import serve
        serve(cfg)
        return
    if cfg.prompt is None:
        raise SystemExit("robo-genie play: give prompt=IMAGE (and actions=0,3,3,1 out=ROLLOUT.gif), "
                         "or ui=true to play in the browser")
    world = World.from_bundle(cfg.bundle, cfg.device, cfg.seed)
    world.maskgit_steps, world.temperature = cfg.maskgit_steps, cfg.temperature
    actions = list(cfg.actions)
    if not all(0 <= a < world.num_actions for a in actions):
        raise SystemExit(f"robo-genie play: actions={actions} must lie in [0, {world.num_actions}) "
                         f"for this model")
    frames = [world.reset(load_image(cfg.prompt, world.image_size))]
    frames += [world.step(a) for a in actions]
    save_gif(frames, cfg.out, fps=cfg.fps)
    print(f"wrote {len(frames)} frames ({len(actions)} actions) to {cfg.out}")


def _eval(cfg) -> None:
    from robo_genie.eval.jobs import run_ceiling, run_consistency, run_controllability
    jobs = {"controllability": run_controllability, "consistency": run_consistency, "ceiling": run_ceiling}
    if cfg.what not in jobs:
        raise SystemExit(f"robo-genie eval: unknown evaluation {cfg.what!r}; available: {', '.join(jobs)}")
    jobs[cfg.what](cfg)


def _sim(cfg) -> None:
    if cfg.what == "probe":
        from robo_genie.sim.probe_job import run_probe
        run_probe(cfg)
        return
    if cfg.what != "generate":
        raise SystemExit(f"robo-genie sim: unknown action {cfg.what!r}; available: generate, probe")
    from robo_genie.sim.generate import generate
    m = generate(cfg.out, cfg.episodes, cfg.episode_len, cfg.resolution, cfg.workers, cfg.seed, cfg.progress,
                 scene=cfg.scene or "tabletop", cameras=list(cfg.cameras), gripper_step=cfg.gripper_step)
    print(f"wrote {len(m['episodes'])} episodes to {cfg.out}")


def _adapter(cfg) -> None:
    from robo_genie.adapter.jobs import run_adapter
    run_adapter(cfg)


def _info(cfg) -> None:
    from robo_genie.info import run_info
    run_info(cfg)


def _bench(cfg) -> None:
    from robo_genie.bench import run_bench
    run_bench(cfg)


COMMANDS: dict[str, tuple[str, Callable]] = {
    "demo": ("demo", _demo), "ingest": ("ingest", _ingest), "export": ("export", _export), "train": ("train", _train),
    "play": ("play", _play), "eval": ("eval", _eval), "sim": ("sim", _sim),
    "adapter": ("adapter", _adapter), "bench": ("bench", _bench), "info": ("info", _info),
}


def _list_keys(config_name: str) -> set[str]:
    """Top-level settings of a job that hold lists (`workers`, `actions`, ...)."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    from robo_genie.config import register_configs

    register_configs()
    node = ConfigStore.instance().load(f"{config_name}.yaml").node
    return {k for k in node if k != "defaults" and OmegaConf.is_list(node._get_node(k))}


def _list_value(override: str, list_keys: set[str] = frozenset()) -> str:
    """`actions=0,3,3,1` -> `actions=[0,3,3,1]` (Hydra would read bare commas as a sweep), and
    `workers=2` -> `workers=[2]` for a setting that holds a list."""
    key, value = override.split("=", 1)
    if value[:1] not in "[('\"" and ("," in value or key in list_keys):
        return f"{key}=[{value}]"
    return override


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        raise SystemExit(f"robo-genie: unknown command {command!r}\n\n{USAGE}")
    config_name, run = COMMANDS[command]
    words = [a for a in rest if "=" not in a and not a.startswith("-")]
    list_keys = _list_keys(config_name)
    overrides = [_list_value(a, list_keys) for a in rest if "=" in a]
    if len(words) > 1:
        raise SystemExit(f"robo-genie {command}: unexpected words {words}; settings are key=value")
    if words:
        overrides.append(f"what={words[0]}")

    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if "--help" in rest or "-h" in rest:
        print(OmegaConf.to_yaml(compose(config_name, overrides, require_all=False)))
        return
    try:
        cfg = compose(config_name, overrides)
    except (HydraException, OmegaConfBaseException) as e:
        raise SystemExit(f"robo-genie {command}: bad setting: {e}\n(`robo-genie {command} --help` lists "
                         f"the settings and their defaults)") from None
    from robo_genie.adapter.adapter import AdapterError
    from robo_genie.bundle import BundleError
    from robo_genie.cpu_memory import keep_freed_memory
    from robo_genie.datasets.shards import ShardError
    from robo_genie.datasets.sources import IngestError
    from robo_genie.safe_write import WriteError
    keep_freed_memory()
    from robo_genie import distributed
    try:
        run(cfg)
        distributed.shutdown()
    except (IngestError, ShardError, BundleError, AdapterError, WriteError, ValueError) as e:
        raise SystemExit(f"robo-genie {command}: {e}") from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
