"""dynamics.actions=recorded: the dynamics model trained on the shards' own action vectors (an
upper bound that tells poor LAM codes from a dynamics model that cannot be steered)."""

import shutil

import numpy as np
import pytest
import torch

from robo_genie.cli import main
from robo_genie.datasets.shards import ShardError
from robo_genie.play import World
from robo_genie.training.jobs import run_train_job
from tests.conftest import train_job


@pytest.fixture(scope="module")
def recorded_run(micro_run, sim_shards, tmp_path_factory):
    """The micro run's tokenizer and LAM, and a dynamics model on recorded actions (README:
    `train stage=dynamics ... init_from=BUNDLE model.dynamics.actions=recorded`)."""
    run = tmp_path_factory.mktemp("recorded")
    run_train_job(train_job(run, sim_shards, "dynamics", f"init_from={micro_run / 'bundle'}",
                            "model.dynamics.actions=recorded"))
    return run


def test_recorded_actions_train_a_dynamics_model_that_takes_action_vectors(recorded_run, sim_shards, tmp_path):
    world = World.from_bundle(recorded_run / "bundle", "cpu")
    assert world.recorded and world.cfg.dynamics.action_dim == 7        # the tabletop's 7-D actions
    world.reset_batch(torch.rand(2, 32, 32, 3))
    assert world.step_batch(torch.randn(2, 7)).shape == (2, 32, 32, 3)
    with pytest.raises(ValueError, match="recorded action vectors"):
        world.step(0)
    main(["eval", "controllability", f"bundle={recorded_run / 'bundle'}", f"data.path={sim_shards}",
          f"out={tmp_path}", "n_clips=4", "t=2", "ts=[1,2]", "device=cpu"])
    import json
    report = json.loads((tmp_path / "controllability.json").read_text())
    assert report["random_action_frequencies_from"] == "recorded actions of the next clip"
    assert np.isfinite(report["delta_t_psnr_matched"])


def test_recorded_actions_refuse_shards_without_actions(micro_run, tmp_path):
    from robo_genie.datasets.shards import ShardWriter
    frames_only = tmp_path / "frames_only"
    with ShardWriter(frames_only, image_size=32, fps=10.0, source="test") as w:
        for i in range(2):
            w.add(f"ep{i}", np.random.default_rng(i).integers(0, 255, (6, 32, 32, 3), dtype=np.uint8))
    run = tmp_path / "run"
    shutil.copytree(micro_run / "bundle", run / "bundle")
    with pytest.raises(ShardError, match=rf"{frames_only}: its episodes carry no `actions`"):
        run_train_job(train_job(run, frames_only, "dynamics", "model.dynamics.actions=recorded"))
