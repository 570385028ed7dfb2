"""End to end: train a micro model for a few steps, stop, resume, and get bit-identical weights."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from robo_genie.training import loop
from robo_genie.training.jobs import run_train_job
from tests.conftest import train_job as _job


def _weights(run_dir, part):
    return load_file(str(run_dir / "bundle" / f"{part}.safetensors"))


def _assert_identical(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"


@pytest.fixture
def straight_run(micro_run):
    return micro_run


def test_stage_all_writes_a_complete_bundle(straight_run):
    from robo_genie.bundle import read_meta
    meta = read_meta(straight_run / "bundle")
    assert set(meta["parts"]) == {"tokenizer", "lam", "dynamics"}
    assert [meta["parts"][p]["steps"] for p in ("tokenizer", "lam", "dynamics")] == [4, 4, 4]
    assert (straight_run / "tensorboard" / "dynamics").is_dir()


@pytest.mark.parametrize("stage", ["tokenizer", "lam"])
def test_halt_and_resume_is_bit_identical(stage, straight_run, sim_shards, tmp_path):
    run_train_job(_job(tmp_path, sim_shards, stage, "halt_at_step=2"))
    assert not (tmp_path / "bundle" / f"{stage}.safetensors").exists()
    run_train_job(_job(tmp_path, sim_shards, stage))            # same command again: resumes at 2
    _assert_identical(_weights(tmp_path, stage), _weights(straight_run, stage))


def test_interrupted_dynamics_resumes_bit_identical(straight_run, sim_shards, tmp_path, monkeypatch):
    """A real SIGINT in the middle of the third step: the step finishes, a checkpoint is saved, the
    run stops; rerunning continues to the same weights as an uninterrupted run (and the same data
    order: the loader resumes at the batch it stopped at)."""
    import os
    import shutil
    import signal
    shutil.copytree(straight_run / "bundle", tmp_path / "bundle")    # tokenizer + LAM as before
    for part in ("dynamics",):
        (tmp_path / "bundle" / f"{part}.safetensors").unlink()
    real = loop.dynamics_step_fn
    calls = {"n": 0}

    def interrupting(tokenizer, lam, lam_window, **options):
        step = real(tokenizer, lam, lam_window, **options)

        def wrapped(model, batch):
            calls["n"] += 1
            if calls["n"] == 3:                     # Ctrl-C arrives during this step
                os.kill(os.getpid(), signal.SIGINT)
            return step(model, batch)
        return wrapped

    monkeypatch.setattr(loop, "dynamics_step_fn", interrupting)
    monkeypatch.setattr("robo_genie.training.stages.dynamics_step_fn", interrupting)
    with pytest.raises(KeyboardInterrupt):
        run_train_job(_job(tmp_path, sim_shards, "dynamics"))
    assert (tmp_path / "checkpoints" / "dynamics" / "step_0000003").is_dir()
    monkeypatch.undo()
    run_train_job(_job(tmp_path, sim_shards, "dynamics"))
    _assert_identical(_weights(tmp_path, "dynamics"), _weights(straight_run, "dynamics"))


def test_dynamics_without_a_tokenizer_says_what_to_train(sim_shards, tmp_path):
    from robo_genie.bundle import BundleError
    with pytest.raises(BundleError, match="needs a trained tokenizer"):
        run_train_job(_job(tmp_path, sim_shards, "dynamics"))


def test_fine_tune_from_a_bundle_starts_from_its_weights(straight_run, sim_shards, tmp_path):
    run_train_job(_job(tmp_path, sim_shards, "tokenizer", f"init_from={straight_run / 'bundle'}",
                       "tokenizer.lr=0.0", "tokenizer.weight_decay=0.0"))
    # lr 0: the weights stay those of the bundle it started from (the EMA codebook moves on)
    a, b = _weights(tmp_path, "tokenizer"), _weights(straight_run, "tokenizer")
    assert a.keys() == b.keys() and bool(a["quantizer.initialised"])
    for k in a:
        if k.split(".")[-1] not in ("codes", "usage", "sums"):
            assert torch.equal(a[k], b[k]), k


def test_checkpoint_files_and_their_folder_reach_the_disk_before_the_pointer_moves(tmp_path, monkeypatch):
    import os

    from robo_genie.training import checkpoint

    events = []
    real_fsync, real_replace = checkpoint.fsync_path, os.replace
    monkeypatch.setattr(checkpoint, "fsync_path", lambda p: (events.append(("fsync", Path(p).name)), real_fsync(p)))
    monkeypatch.setattr(checkpoint.os, "replace",
                        lambda a, b: (events.append(("replace", Path(b).name)), real_replace(a, b)))
    model = torch.nn.Linear(2, 2)
    checkpoint.save_checkpoint(tmp_path, 3, model, torch.optim.SGD(model.parameters(), lr=0.1))
    pointer = events.index(("replace", "latest.json"))
    synced = {name for kind, name in events[:pointer] if kind == "fsync"}
    assert {"model.safetensors", "state.pt", "step_0000003.tmp", tmp_path.name, "latest.tmp"} <= synced
    assert events.index(("replace", "step_0000003")) < pointer
    assert events[-1] == ("fsync", tmp_path.name)


def test_tensorboard_gets_reconstructions_and_dynamics_samples(micro_run):
    """Beside the scalars, the tokenizer logs reconstructions and the dynamics model its next frames
    (own action vs another clip's), as images at each checkpoint."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    for part, columns, last_step in (("tokenizer", 2, 4), ("dynamics", 4, 4)):
        events = EventAccumulator(str(micro_run / "tensorboard" / part), size_guidance={"images": 0})
        events.Reload()
        assert f"{part}/samples" in events.Tags()["images"]
        image = events.Images(f"{part}/samples")[-1]
        assert image.step == last_step
        # tile(): a row per clip of the batch (2 here), 32 px frames, 2 px gutters, upscaled 2x
        assert image.width == 2 * (columns * 34 + 2) and image.height == 2 * (2 * 34 + 2)
