"""torchrun + FSDP2 on CPU (gloo), 2 processes against 1: the same losses at the same global batch,
codebooks that agree across ranks, checkpoints that resume with another number of processes
(2 -> 1 and 1 -> 2), and the dynamics stage on pre-tokenised data."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import MICRO

STEPS = 6


def _args(data, out, batch_size: int, *extra) -> list[str]:
    train = [f"tokenizer.{k}" for k in (f"batch_size={batch_size}", "clip_len=4", "warmup_steps=2", "log_every=1",
                                        "ckpt_every=3")]
    return ["train", "stage=tokenizer", f"data.path={data}", f"out={out}", f"steps={STEPS}", "progress=false",
            "device=cpu", *MICRO, *train, *extra]


def _run(args: list[str], processes: int) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
                if processes > 1 else [sys.executable])
    done = subprocess.run([*launcher, "-m", "robo_genie.cli", *args], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-30000:]
    return done.stdout + done.stderr


def _losses(run) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(run / "tensorboard" / "tokenizer"))
    events.Reload()
    return [e.value for e in events.Scalars("tokenizer/loss")]


@pytest.fixture(scope="module")
def single(sim_shards, tmp_path_factory):
    run = tmp_path_factory.mktemp("one_process")
    _run(_args(sim_shards, run, 4), 1)
    return run


def test_two_processes_match_one_at_the_same_global_batch(single, sim_shards, tmp_path):
    two = tmp_path / "two"
    log = _run(_args(sim_shards, two, 2), 2)    # 2 x 2 clips = the single run's 4, the same clips
    # the model was built without storage and initialised shard by shard, to the plain build's weights
    assert "built without weights, sharded over 2 processes" in log
    one_losses, two_losses = _losses(single), _losses(two)
    assert len(one_losses) == len(two_losses) == STEPS
    for a, b in zip(one_losses, two_losses):
        # float reordering only: a few parts in 10^4 (two independent runs differ by 10 % and more)
        assert abs(a - b) <= 3e-3 * abs(a), (one_losses, two_losses)
    # the ranks' codebooks agreed at the end (checked inside the run), and agree with one process's
    a = load_file(str(single / "bundle" / "tokenizer.safetensors"))
    b = load_file(str(two / "bundle" / "tokenizer.safetensors"))
    assert a.keys() == b.keys()
    assert torch.allclose(a["quantizer.codes"], b["quantizer.codes"], atol=1e-3)
    ckpt = two / "checkpoints" / "tokenizer" / f"step_{STEPS:07d}"
    assert (ckpt / "sharded" / "index.json").is_file() and not (ckpt / "model.safetensors").exists()
    assert not (ckpt / "sharded" / ".metadata").exists()      # DCP's pickled index is not written


@pytest.mark.parametrize("before, after", [(2, 1), (1, 2)])
def test_a_checkpoint_resumes_with_another_number_of_processes(single, sim_shards, tmp_path, before, after):
    """Sharded (2 processes) into 1, and one process's into the shards of 2, at the same global batch."""
    run = tmp_path / "run"
    _run(_args(sim_shards, run, 4 // before, "halt_at_step=3"), before)
    written = "sharded" if before > 1 else "model.safetensors"
    assert (run / "checkpoints" / "tokenizer" / "step_0000003" / written).exists()
    log = _run(_args(sim_shards, run, 4 // after), after)
    assert "resuming from" in log and "(step 3/6)" in log
    a = load_file(str(single / "bundle" / "tokenizer.safetensors"))
    b = load_file(str(run / "bundle" / "tokenizer.safetensors"))
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-3, atol=1e-4), k


@pytest.mark.parametrize("mode", ["selective", "full"])
def test_activation_checkpointing_changes_memory_not_results(mode, micro_run, sim_shards, tmp_path):
    """Recomputing the ST blocks' activations in the backward pass gives the same weights, bit for
    bit on CPU, and the same parameter names in the bundle."""
    from robo_genie.training.jobs import run_train_job
    from tests.conftest import train_job
    run_train_job(train_job(tmp_path, sim_shards, "lam", f"lam.activation_checkpointing={mode}"))
    a = load_file(str(micro_run / "bundle" / "lam.safetensors"))
    b = load_file(str(tmp_path / "bundle" / "lam.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_parallelize_refuses_an_unknown_checkpointing_mode():
    from robo_genie.training.parallelize import parallelize
    with pytest.raises(ValueError, match="activation_checkpointing='some'"):
        parallelize(torch.nn.Linear(2, 2), None, torch.device("cpu"), "some")


def test_sigterm_under_torchrun_checkpoints_every_rank_and_resumes(sim_shards, tmp_path):
    """Pre-emption: torchrun passes SIGTERM to its workers; they finish the step together, write one
    sharded checkpoint and stop; the same command resumes from it."""
    import json
    import signal
    import time
    run = tmp_path / "run"
    args = _args(sim_shards, run, 2)
    args = [a for a in args if not a.startswith("steps=")] + ["steps=100"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                                 "-m", "robo_genie.cli", *args], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    pointer = run / "checkpoints" / "tokenizer" / "latest.json"
    deadline = time.monotonic() + 300
    while not pointer.is_file():                      # the first checkpoint (step 3): training is under way
        assert launcher.poll() is None and time.monotonic() < deadline, launcher.stdout.read()
        time.sleep(0.2)
    launcher.send_signal(signal.SIGTERM)
    log = launcher.communicate(timeout=300)[0]
    stopped_at = json.loads(pointer.read_text())["step"]
    assert 3 <= stopped_at < 100, log
    assert (run / "checkpoints" / "tokenizer" / f"step_{stopped_at:07d}" / "sharded" / "index.json").is_file()
    resumed = _run(args, 2)
    assert f"(step {stopped_at}/100)" in resumed


class _Payload:
    """Unpickling this runs a shell command: what a tampered checkpoint would carry."""
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_tampered_sharded_checkpoint_is_refused_without_running_its_payload(sim_shards, tmp_path):
    import json
    import pickle
    run = tmp_path / "run"
    _run(_args(sim_shards, run, 2, "halt_at_step=3"), 2)
    shard = run / "checkpoints" / "tokenizer" / "step_0000003" / "sharded"
    marker = tmp_path / "payload_ran"
    payload = pickle.dumps(_Payload(marker))
    # a non-tensor value (an optimizer setting) now points at the payload
    index = json.loads((shard / "index.json").read_text())
    item = next(s for s in index["storage"] if index["tensors"][s["fqn"]].get("bytes"))
    (shard / "evil.distcp").write_bytes(payload)
    item.update(file="evil.distcp", start=0, length=len(payload))
    (shard / "index.json").write_text(json.dumps(index))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "robo_genie.cli", *_args(sim_shards, run, 4)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode != 0 and "is not plain data" in done.stderr and "Traceback" not in done.stderr, done.stderr
    # an index swapped for DCP's pickled .metadata is not unpickled either
    (shard / "index.json").unlink()
    (shard / ".metadata").write_bytes(payload)
    done = subprocess.run([sys.executable, "-m", "robo_genie.cli", *_args(sim_shards, run, 4)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode != 0 and "indexed by pickle" in done.stderr, done.stderr
    assert not marker.exists()


def test_the_dynamics_stage_under_two_processes_ends_where_one_does(micro_run, sim_shards, tmp_path):
    """The dynamics stage under FSDP, on the tokens rank 0 alone pre-tokenises: 2 processes end
    where 1 does at the same global batch."""
    import shutil
    runs = {}
    for processes in (1, 2):
        run = tmp_path / f"p{processes}"
        shutil.copytree(micro_run / "bundle", run / "bundle")      # its tokenizer and LAM
        (run / "bundle" / "dynamics.safetensors").unlink()
        train = [f"dynamics.{k}" for k in (f"batch_size={4 // processes}", "clip_len=4", "warmup_steps=2",
                                           "log_every=1", "ckpt_every=100")]
        log = _run(["train", "stage=dynamics", f"data.path={sim_shards}", f"out={run}", f"steps={STEPS}",
                    "progress=false", "device=cpu", *MICRO, *train], processes)
        # rank 0 alone pre-tokenises: two ranks writing one folder at once broke a CI run on 2026-12-02
        assert log.count("[pre-tokenise]") == 1, log
        runs[processes] = load_file(str(run / "bundle" / "dynamics.safetensors"))
    one, two = runs[1], runs[2]
    assert one.keys() == two.keys()
    for k in one:
        assert torch.allclose(one[k].float(), two[k].float(), atol=2e-3, rtol=1e-2), k
