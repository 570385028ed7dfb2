"""A full disk (OSError ENOSPC) at each write site: checkpoint, shard, bundle, report. The previous
version stays intact and loadable, and the error says what was not written and where. Then once for
real, on a tiny tmpfs, where the machine lets the test mount one."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from robo_genie import bundle as bundle_io
from robo_genie.cli import main
from robo_genie.datasets.shards import MANIFEST, FrameShards, ShardWriter
from robo_genie.safe_write import WriteError
from robo_genie.training import checkpoint
from robo_genie.training.jobs import run_train_job
from tests.conftest import train_args, train_job


def _full_disk_after(n_ok: int, real):
    """A stand-in for a write function that succeeds n_ok times, then finds the disk full."""
    calls = {"n": 0}

    def write(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > n_ok:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)
    return write


def test_checkpoint_write_on_a_full_disk_keeps_the_previous_and_resumes(sim_shards, tmp_path, monkeypatch):
    clean = tmp_path / "clean"
    run_train_job(train_job(clean, sim_shards, "tokenizer", "tokenizer.ckpt_every=1"))
    run = tmp_path / "run"
    monkeypatch.setattr(checkpoint, "save_file", _full_disk_after(2, checkpoint.save_file))
    with pytest.raises(SystemExit) as e:
        main(["train", *train_args(run, sim_shards, "tokenizer", "tokenizer.ckpt_every=1")])
    message = str(e.value.code)
    assert "checkpoint" in message and "step_0000003" in message and "no space left" in message
    assert "step_0000002 is intact" in message
    ckpts = run / "checkpoints" / "tokenizer"
    assert not list(ckpts.glob("*.tmp")), "the half-written checkpoint was not cleaned up"
    assert json.loads((ckpts / "latest.json").read_text())["step"] == 2
    monkeypatch.undo()
    run_train_job(train_job(run, sim_shards, "tokenizer", "tokenizer.ckpt_every=1"))     # space freed: resume
    a = load_file(str(clean / "bundle" / "tokenizer.safetensors"))
    b = load_file(str(run / "bundle" / "tokenizer.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_shard_write_on_a_full_disk_keeps_the_manifest_whole(tmp_path, monkeypatch):
    from robo_genie.datasets import shards
    out = tmp_path / "shards"
    frames = np.zeros((4, 32, 32, 3), np.uint8)
    monkeypatch.setattr(shards, "save_file", _full_disk_after(1, shards.save_file))
    writer = ShardWriter(out, source="test", fps=10.0, image_size=32, shard_frames=8)
    for i in range(2):
        writer.add(f"ep{i}", frames)                # 8 frames: the first shard is written
    writer.add("ep2", frames)
    with pytest.raises(WriteError, match=r"shard .*shard_00001.safetensors was not written: no space left"):
        writer.add("ep3", frames)
    assert not list(out.glob("*.tmp"))
    assert [e["name"] for e in FrameShards(out).episodes] == ["ep0", "ep1"]     # only whole shards listed
    assert json.loads((out / MANIFEST).read_text())["episodes"][-1]["shard"] == "shard_00000.safetensors"


def test_bundle_part_write_on_a_full_disk_leaves_the_bundle_loadable(micro_run, tmp_path, monkeypatch):
    bundle = tmp_path / "bundle"
    shutil.copytree(micro_run / "bundle", bundle)
    before = {p.name: p.read_bytes() for p in bundle.iterdir()}
    cfg, parts = bundle_io.load_bundle(bundle)
    monkeypatch.setattr(bundle_io, "save_file", _full_disk_after(0, bundle_io.save_file))
    with pytest.raises(WriteError, match="bundle part dynamics .* no space left .* The bundle is unchanged"):
        bundle_io.save_part(bundle, "dynamics", parts["dynamics"], cfg, {"steps": 1})
    assert {p.name: p.read_bytes() for p in bundle.iterdir()} == before
    bundle_io.load_bundle(bundle)


def test_report_write_on_a_full_disk_keeps_the_previous_report(tmp_path, monkeypatch):
    from pathlib import Path

    from robo_genie.eval.report import write_lab_report
    page = tmp_path / "report.html"
    write_lab_report(page, "first", "", [], [], {"a": 1.0})
    monkeypatch.setattr(Path, "write_text", _full_disk_after(0, Path.write_text))
    with pytest.raises(WriteError, match="report .*report.html was not written: no space left"):
        write_lab_report(page, "second", "", [], [], {"a": 2.0})
    monkeypatch.undo()
    assert "first" in page.read_text() and not (tmp_path / "report.html.tmp").exists()


def test_a_real_full_filesystem_stops_training_with_a_message(sim_shards, tmp_path):
    """A 1.5 MiB tmpfs: the run's first checkpoints fit, a later one does not."""
    mount = tmp_path / "small_disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1536k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("this machine does not let the test mount a tmpfs (needs root); the injected cases cover it")
    try:
        with pytest.raises(SystemExit) as e:
            main(["train", *train_args(mount / "run", sim_shards, "tokenizer", "tokenizer.ckpt_every=1",
                                       steps=200)])
        message = str(e.value.code)
        assert "was not written: no space left on the device" in message, message
        ckpts = mount / "run" / "checkpoints" / "tokenizer"
        last = checkpoint.latest_checkpoint(ckpts)
        if last is not None:          # the previous checkpoint loads
            model_state = load_file(str(last / "model.safetensors"))
            assert model_state and torch.load(last / "state.pt", weights_only=True)["step"] >= 1
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)   # lazy: a closed file may linger
