"""Gradient accumulation: two micro-batches of 2 clips make the optimiser step of one batch of 4 (the
same clips, the same averaged gradient), and a resumed accumulating run continues where it stopped."""

from __future__ import annotations

import pytest
from safetensors.torch import load_file

from robo_genie.training.jobs import run_train_job
from tests.conftest import train_job

STEPS = 3


def _train_lam(run, data, batch_size: int, accum: int, *extra) -> None:
    # the LAM: no EMA codebook, so its step depends on the gradient only; quantised from the first
    # step; without its balance term, a statistic of each micro-batch (as a batch norm's would be)
    run_train_job(train_job(run, data, "lam", "model.lam.continuous_warmup_steps=0", "model.lam.balance_weight=0",
                            f"steps={STEPS}", f"lam.batch_size={batch_size}", f"lam.grad_accum_steps={accum}",
                            *extra))


def _lam_run(run, data, batch_size: int, accum: int):
    _train_lam(run, data, batch_size, accum)
    return load_file(str(run / "bundle" / "lam.safetensors"))


def _losses(run) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(run / "tensorboard" / "lam"))
    events.Reload()
    return [e.value for e in events.Scalars("lam/loss")]


def test_two_micro_batches_of_two_make_the_step_of_one_batch_of_four(sim_shards, tmp_path):
    whole = _lam_run(tmp_path / "whole", sim_shards, 4, 1)
    accumulated = _lam_run(tmp_path / "accumulated", sim_shards, 2, 2)
    halves = _lam_run(tmp_path / "halves", sim_shards, 2, 1)           # what accumulation must not be
    for a, b in zip(_losses(tmp_path / "whole"), _losses(tmp_path / "accumulated")):
        assert abs(a - b) <= 1e-4 * abs(a)
    weights = [k for k in whole if whole[k].is_floating_point()]    # (the LAM's forward-pass counter aside)
    assert max(float((whole[k] - accumulated[k]).abs().max()) for k in weights) < 1e-5
    assert max(float((whole[k] - halves[k]).abs().max()) for k in weights) > 1e-4


def test_an_accumulating_run_resumes_bit_for_bit(sim_shards, tmp_path):
    straight = _lam_run(tmp_path / "straight", sim_shards, 2, 2)
    _train_lam(tmp_path / "stopped", sim_shards, 2, 2, "halt_at_step=1")
    resumed = _lam_run(tmp_path / "stopped", sim_shards, 2, 2)
    assert all(bool((straight[k] == resumed[k]).all()) for k in straight)


def test_grad_accum_steps_below_one_is_refused(sim_shards, tmp_path):
    with pytest.raises(ValueError, match="lam.grad_accum_steps=0"):
        _lam_run(tmp_path / "bad", sim_shards, 2, 0)
