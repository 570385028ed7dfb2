"""Shared fixtures: a very small model config and small datasets made on the fly (no downloads)."""

from __future__ import annotations

import os
import sys
import types

os.environ.setdefault("MUJOCO_GL", "egl")
# Reading TensorBoard event files (EventAccumulator) imports TensorFlow when it is installed (the
# rlds extra); after MuJoCo's EGL context is up, TensorFlow's CPU-feature check segfaulted the test
# process (2026-12-01). TensorBoard's own stub reads event files without it.
sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))

import pytest
import torch
from omegaconf import OmegaConf

from robo_genie.cli import compose
from robo_genie.config import ModelConfig

# Hydra overrides that shrink `model=tiny` further, for tests on 32x32 frames.
MICRO = [
    "model.image_size=32",
    "model.tokenizer.codebook_size=64", "model.tokenizer.code_dim=8",
    "model.tokenizer.encoder.dim=32", "model.tokenizer.encoder.depth=1", "model.tokenizer.encoder.heads=2",
    "model.tokenizer.decoder.dim=32", "model.tokenizer.decoder.depth=1", "model.tokenizer.decoder.heads=2",
    "model.lam.patch=8", "model.lam.num_actions=4", "model.lam.continuous_warmup_steps=1",
    "model.lam.encoder.dim=32", "model.lam.encoder.depth=1", "model.lam.encoder.heads=2",
    "model.lam.decoder.dim=32", "model.lam.decoder.depth=1", "model.lam.decoder.heads=2",
    "model.dynamics.net.dim=32", "model.dynamics.net.depth=2", "model.dynamics.net.heads=2",
    "model.dynamics.maskgit_steps=4",
]
MICRO_TRAIN = [f"{part}.{k}" for part in ("tokenizer", "lam", "dynamics")
               for k in ("batch_size=2", "clip_len=4", "warmup_steps=2", "log_every=1", "ckpt_every=100")]


# Causality checks compare two forward passes, whose float32 rounding can differ (the same sums on
# differently aligned memory: once in 23 runs of test_models.py a difference passed 1e-6), while
# the outputs that do read the changed input move by more than 1e-4.
ROUNDING = 1e-5


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def micro_cfg():
    job = compose("train", MICRO + ["out=unused", "data.path=unused"])
    return OmegaConf.merge(OmegaConf.structured(ModelConfig), job.model)


@pytest.fixture(scope="session")
def sim_shards(tmp_path_factory):
    """Six 12-frame MuJoCo tabletop episodes at 32x32, with actions and primitive labels."""
    from robo_genie.sim.generate import generate

    out = tmp_path_factory.mktemp("sim") / "shards"
    generate(out, episodes=6, episode_len=12, resolution=32, workers=1, seed=0, progress=False)
    return out


def train_args(run_dir, data, stage, *extra, steps: int = 4) -> list[str]:
    """`robo-genie train` overrides for a micro run of `steps` steps per stage."""
    return MICRO + MICRO_TRAIN + [f"data.path={data}", f"out={run_dir}", f"stage={stage}", f"steps={steps}",
                                  "progress=false", *extra]


def train_job(run_dir, data, stage, *extra):
    return compose("train", train_args(run_dir, data, stage, *extra))


@pytest.fixture(scope="session")
def micro_run(sim_shards, tmp_path_factory):
    """One micro run of all three stages (4 steps each); tests must not modify it."""
    from robo_genie.training.jobs import run_train_job

    run = tmp_path_factory.mktemp("micro_run")
    run_train_job(train_job(run, sim_shards, "all"))
    return run
