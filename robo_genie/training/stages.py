"""Train the three parts in order and collect them in a world-model bundle.

tokenizer (pixels) -> LAM (pixels) -> dynamics (tokens of the frozen tokenizer + codes of the
frozen LAM, pre-tokenised once into RUN/tokens unless pretokenize=false). Each stage resumes from
its own checkpoints, and each finished part is written to RUN/bundle as soon as it is done, so a
later stage can be (re)run alone.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch
from omegaconf import DictConfig

from robo_genie import bundle as bundle_io
from robo_genie import distributed
from robo_genie.config import StageTrainConfig
from robo_genie.datasets.loader import is_mixture
from robo_genie.datasets.pretokenize import check_token_shards
from robo_genie.datasets.pretokenize import pretokenize as pretokenize_shards
from robo_genie.datasets.shards import FrameShards, ShardError
from robo_genie.models import PARTS, build_part
from robo_genie.training.deferred_init import build_deferred
from robo_genie.training.lam_codes import fit_lam_codes
from robo_genie.training.loop import dynamics_inputs_fn, dynamics_step_fn, pixel_step, train
from robo_genie.training.pictures import dynamics_picture_fn, tokenizer_picture

STAGE_ORDER = PARTS


def stages_for(stage: str) -> tuple[str, ...]:
    if stage == "all":
        return STAGE_ORDER
    if stage not in STAGE_ORDER:
        raise ValueError(f"stage={stage!r}: expected one of all, {', '.join(STAGE_ORDER)}")
    return (stage,)


def _frozen_part(part: str, run_bundle: Path, init_from: str | None, device, model_cfg
                 ) -> tuple[torch.nn.Module, dict, Path]:
    """A trained part (from this run's bundle, else init_from), its training info and its bundle."""
    for source in (run_bundle, init_from):
        if not source or not (Path(source) / "meta.json").is_file():
            continue
        info = bundle_io.read_meta(source)["parts"].get(part)
        if info is not None:
            return bundle_io.load_part(source, part, device, model_cfg).requires_grad_(False), info, Path(source)
    raise bundle_io.BundleError(f"training dynamics needs a trained {part}: none in {run_bundle}"
                                f"{' or ' + init_from if init_from else ''}. Train it first "
                                f"(`robo-genie train stage={part} ...` with the same out=) or pass init_from=BUNDLE.")


def _tokens_complete(out: Path, source: str, bundle: Path) -> bool:
    """Whether `out` holds token shards of every episode of `source`, made with `bundle`'s parts."""
    try:
        check_token_shards(out, bundle)
        return len(FrameShards(out).episodes) == len(FrameShards(source).episodes)
    except ShardError:
        return False


def _dynamics_data(data_path: str, run_dir: Path, tok_bundle: Path, lam_bundle: Path, pretokenize: bool,
                   device, progress: bool) -> str:
    """What the dynamics stage reads: given token shards (checked against the frozen parts), or
    frame shards pre-tokenised once into RUN/tokens (pretokenize=true), or frame shards as they are
    (always for a mixture of shard folders: its members are encoded batch by batch)."""
    if is_mixture(data_path):
        return data_path
    if FrameShards(data_path).kind == "tokens":
        if tok_bundle != lam_bundle:
            raise ValueError("token shards need the tokenizer and LAM from one bundle")
        check_token_shards(data_path, tok_bundle)
        return data_path
    if not pretokenize or tok_bundle != lam_bundle:
        return data_path
    out = run_dir / "tokens"
    done = _tokens_complete(out, data_path, tok_bundle)
    if not done and distributed.is_main():      # absent, interrupted, or made with other weights: (re)write it
        shutil.rmtree(out, ignore_errors=True)
        pretokenize_shards(data_path, tok_bundle, out, device=device, progress=progress)
    distributed.barrier()                       # the other ranks read what rank 0 wrote
    return str(out)


def _same_part(bundle: str, part: str, model_cfg: DictConfig) -> bool:
    """Whether `bundle`'s trained `part` has the architecture model_cfg asks for (a new kind of
    dynamics model on a bundle's tokenizer and LAM starts from scratch)."""
    if part != "dynamics":
        return True
    try:
        return bundle_io.load_model_config(bundle).dynamics == model_cfg.dynamics
    except bundle_io.BundleError:
        return False


def _recorded_action_dim(data_path: str) -> int:
    """The length of the shards' action vectors (model.dynamics.actions=recorded)."""
    from robo_genie.datasets.loader import open_clips
    clips = open_clips(data_path, 1, require=("actions",))
    return int(clips[0]["actions"].shape[-1])


def _fresh_part(part: str, model_cfg: DictConfig, seed: int, init_from: str | None,
                tokenizer: torch.nn.Module | None) -> torch.nn.Module:
    """A part to train: init_from's weights when it has the same architecture, or seeded fresh ones;
    under torchrun those are built without storage and initialised after sharding (deferred_init.py)."""
    torch.manual_seed(seed)
    if init_from and part in bundle_io.read_meta(init_from)["parts"] and _same_part(init_from, part, model_cfg):
        model = bundle_io.load_part(init_from, part, "cpu", model_cfg).train()
        print(f"[{part}] starting from {init_from}")
    elif distributed.active():          # train_stages has joined the process group
        model = build_deferred(lambda: build_part(part, model_cfg))
    else:
        model = build_part(part, model_cfg)
    if tokenizer is not None and hasattr(model, "set_codebook"):   # latent dynamics: the codes are its state space
        model.set_codebook(tokenizer.quantizer.codebook)
    return model


def unsharded(model: torch.nn.Module, part: str, model_cfg: DictConfig) -> torch.nn.Module | None:
    """A trained part as one plain module: itself in one process; under FSDP its full state gathered
    into a fresh copy on rank 0 (every rank takes part in the gather; the others get None)."""
    if not distributed.active():
        return model
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not distributed.is_main():
        return None
    plain = build_part(part, model_cfg)
    plain.load_state_dict(state)
    return plain.eval()


def train_stages(stages: tuple[str, ...], model_cfg: DictConfig, stage_cfgs: dict[str, StageTrainConfig],
                 data_path: str, run_dir: str | Path, *, device: torch.device, seed: int = 0,
                 init_from: str | None = None, progress: bool = True, num_workers: int = 0,
                 halt_at_step: int | None = None, pretokenize: bool = True) -> dict[str, dict]:
    """Returns per-stage info ({} for a stage that halted before finishing)."""
    # Join the process group first: until then every rank is "rank 0", and the work done before
    # training (pre-tokenising, on rank 0 only) would be done by all of them at once, into one folder.
    distributed.init_from_env(device)
    run_dir = Path(run_dir)
    run_bundle = run_dir / "bundle"
    recorded = model_cfg.dynamics.actions == "recorded"
    if recorded and "dynamics" in stages and model_cfg.dynamics.action_dim == 0:
        model_cfg.dynamics.action_dim = _recorded_action_dim(data_path)
    results = {}
    for part in stages:
        cfg = stage_cfgs[part]
        if part == "lam" and cfg.steps <= model_cfg.lam.continuous_warmup_steps:
            raise ValueError(f"lam.steps={cfg.steps} must exceed model.lam.continuous_warmup_steps="
                             f"{model_cfg.lam.continuous_warmup_steps}: the actions are only "
                             f"quantised after the warm-up")
        part_data = data_path
        if part == "dynamics":
            tokenizer, tok_info, tok_bundle = _frozen_part("tokenizer", run_bundle, init_from, device, model_cfg)
            lam, lam_info, lam_bundle = _frozen_part("lam", run_bundle, init_from, device, model_cfg)
            frozen = {"tokenizer": (tokenizer, tok_info, tok_bundle), "lam": (lam, lam_info, lam_bundle)}
            step_fn = dynamics_step_fn(tokenizer, lam, lam_window=lam_info["clip_len"], recorded=recorded)
            picture = dynamics_picture_fn(tokenizer, dynamics_inputs_fn(tokenizer, lam, lam_info["clip_len"], recorded))
            # recorded actions are read with the frames: no token shards
            part_data = _dynamics_data(data_path, run_dir, tok_bundle, lam_bundle, pretokenize and not recorded,
                                       device, progress)
        else:
            step_fn, picture = pixel_step, tokenizer_picture if part == "tokenizer" else None
        model = _fresh_part(part, model_cfg, seed, init_from, tokenizer if part == "dynamics" else None)
        result = train(model, step_fn, cfg, part_data, run_dir, name=part, device=device, seed=seed,
                       progress=progress, num_workers=num_workers, halt_at_step=halt_at_step,
                       require=("actions",) if part == "dynamics" and recorded else (), picture=picture)
        if not result.finished:
            print(f"[{part}] halted at step {result.step}; rerun the same command to continue.")
            return results
        info = {"steps": result.step, "clip_len": cfg.clip_len, "data": str(part_data), "seconds": round(result.seconds, 1),
                "final_metrics": result.last_metrics, "init_from": init_from,
                "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        trained = unsharded(result.model, part, model_cfg)     # the whole model, on rank 0 (or alone)
        if part == "lam" and distributed.is_main():
            info["codes_fitted"] = fit_lam_codes(trained, part_data, cfg.clip_len, device, seed)
        if distributed.is_main():
            bundle_io.save_part(run_bundle, part, trained, model_cfg, info)
            if part == "dynamics":     # frozen parts taken from init_from join this run's bundle: it plays alone
                for name, (frozen_model, frozen_info, source) in frozen.items():
                    if source != run_bundle:
                        bundle_io.save_part(run_bundle, name, frozen_model, model_cfg, frozen_info)
        distributed.barrier()      # the next stage reads this one from the bundle, on every rank
        results[part] = info
    return results
