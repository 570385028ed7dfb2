"""`robo-genie train`: resolve the model config, then train the requested stages."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from robo_genie import bundle as bundle_io
from robo_genie.config import ModelConfig
from robo_genie.training.loop import resolve_device
from robo_genie.training.stages import stages_for, train_stages


def resolve_model_config(job: DictConfig) -> DictConfig:
    """An existing run's bundle, then init_from, fix the architecture; else the model= preset. The
    dynamics part is the exception: a run that trains it takes model.dynamics from the command, so
    a new dynamics model can be trained on a bundle's tokenizer and LAM."""
    wanted = OmegaConf.merge(OmegaConf.structured(ModelConfig), job.model)
    for source in (Path(job.out) / "bundle", job.init_from):
        if source and (Path(source) / "meta.json").is_file():
            cfg = bundle_io.load_model_config(source)
            if "dynamics" in stages_for(job.stage) and cfg.dynamics != wanted.dynamics:
                print(f"training a dynamics model of model.dynamics as given "
                      f"(kind={wanted.dynamics.kind}, actions={wanted.dynamics.actions}) on the parts of {source}")
                cfg.dynamics = wanted.dynamics
            if cfg != wanted:
                print(f"using the model config of {source} (model={cfg.name}); "
                      f"the architecture of a run is fixed by its first stage")
            return cfg
    return wanted


def run_train_job(job: DictConfig) -> dict:
    stages = stages_for(job.stage)
    model_cfg = resolve_model_config(job)
    stage_cfgs = {}
    for part in stages:
        cfg = job[part].copy()
        if job.steps is not None:
            cfg.steps = job.steps
        stage_cfgs[part] = cfg
    results = train_stages(stages, model_cfg, stage_cfgs, job.data.path, job.out,
                           device=resolve_device(job.device), seed=job.seed, init_from=job.init_from,
                           progress=job.progress, num_workers=job.data.num_workers,
                           halt_at_step=job.halt_at_step, pretokenize=job.pretokenize)
    if len(results) == len(stages):
        print(f"bundle: {Path(job.out) / 'bundle'} (parts: {', '.join(bundle_io.read_meta(Path(job.out) / 'bundle')['parts'])})")
    return results
