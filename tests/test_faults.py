"""NaN/Inf losses and codebook collapse, injected into a micro training run: each is detected and
logged with its step, then handled as configured (on_fault=skip | rewind | stop)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from robo_genie.cli import main
from robo_genie.training import loop
from robo_genie.training.jobs import run_train_job
from tests.conftest import train_args, train_job


def _nan_at(calls: set[int], monkeypatch) -> None:
    """The tokenizer's loss is NaN on the given (1-based) calls of its step function."""
    real, seen = loop.pixel_step, {"n": 0}

    def poisoned(model, batch):
        seen["n"] += 1
        loss, metrics = real(model, batch)
        return (loss * float("nan"), metrics) if seen["n"] in calls else (loss, metrics)
    monkeypatch.setattr("robo_genie.training.stages.pixel_step", poisoned)


def _weights(run):
    return load_file(str(run / "bundle" / "tokenizer.safetensors"))


def test_a_nan_batch_is_skipped_and_leaves_weights_and_codebook_finite(sim_shards, tmp_path, monkeypatch, capsys):
    _nan_at({3}, monkeypatch)
    run_train_job(train_job(tmp_path, sim_shards, "tokenizer", "tokenizer.on_fault=skip"))
    assert "[tokenizer] step 3: the loss is nan; batch skipped" in capsys.readouterr().err
    weights = _weights(tmp_path)
    assert all(torch.isfinite(w.float()).all() for w in weights.values())       # EMA codebook included


def test_rewind_after_a_one_off_nan_ends_where_a_clean_run_ends(sim_shards, tmp_path, monkeypatch, capsys):
    clean = tmp_path / "clean"
    run_train_job(train_job(clean, sim_shards, "tokenizer", "tokenizer.ckpt_every=2"))
    _nan_at({3}, monkeypatch)
    faulty = tmp_path / "faulty"
    run_train_job(train_job(faulty, sim_shards, "tokenizer", "tokenizer.ckpt_every=2", "tokenizer.on_fault=rewind"))
    assert "the loss is nan; back to" in capsys.readouterr().err
    a, b = _weights(clean), _weights(faulty)
    assert all(torch.equal(a[k], b[k]) for k in a)            # the checkpoint restores everything, data order too


def test_stop_ends_with_one_line_that_names_the_step_and_the_intact_checkpoint(sim_shards, tmp_path, monkeypatch):
    _nan_at({3}, monkeypatch)
    with pytest.raises(SystemExit) as e:
        main(["train", *train_args(tmp_path, sim_shards, "tokenizer", "tokenizer.ckpt_every=2", "tokenizer.on_fault=stop")])
    message = str(e.value.code)
    assert "step 3: the loss is nan" in message and "step_0000002" in message and "\n" not in message


def test_a_run_of_nans_stops_even_under_skip(sim_shards, tmp_path, monkeypatch):
    _nan_at(set(range(1, 100)), monkeypatch)
    with pytest.raises(loop.TrainingFault, match="fault 11"):
        run_train_job(train_job(tmp_path, sim_shards, "tokenizer", "steps=20", "tokenizer.on_fault=skip"))


@pytest.mark.parametrize("on_fault", ["skip", "stop"])
def test_codebook_collapse_is_reported_or_stops(on_fault, sim_shards, tmp_path, capsys):
    # a threshold no batch can meet (all of the LAM's codes in every batch) stands in for a collapse
    job = train_job(tmp_path, sim_shards, "lam", "lam.min_codes_used=1.01", f"lam.on_fault={on_fault}",
                    "model.lam.continuous_warmup_steps=1")
    if on_fault == "stop":
        with pytest.raises(loop.TrainingFault, match="codebook collapse"):
            run_train_job(job)
    else:
        run_train_job(job)
        assert "codebook collapse" in capsys.readouterr().err
        assert (tmp_path / "bundle" / "lam.safetensors").is_file()


def test_unknown_fault_handling_is_refused(sim_shards, tmp_path):
    with pytest.raises(ValueError, match="on_fault='retry'"):
        run_train_job(train_job(tmp_path, sim_shards, "tokenizer", "tokenizer.on_fault=retry"))
