"""SIGKILL at random moments, several times, one of them inside a checkpoint write: every restart
resumes from the last complete checkpoint, and the final weights equal those of a run that was never
killed, bit for bit. The kill plan is drawn from a seeded generator and printed, so a failure can be
reproduced (ROBO_GENIE_FAULT_SEED picks another plan)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import torch
from safetensors.torch import load_file

from tests.conftest import MICRO

STEPS = 10
# The child is the CLI, with the checkpoint's optimizer-state write slowed down and announced, so
# the parent can kill it while a checkpoint is half written (model file in place, state.pt not).
CHILD = """
import sys, time
import robo_genie.training.checkpoint as checkpoint
real_save = checkpoint.torch.save
def announced_save(obj, f, *args, **kwargs):
    print(f"IN_CHECKPOINT_WRITE {obj['step']}", flush=True)
    time.sleep(0.25)
    return real_save(obj, f, *args, **kwargs)
checkpoint.torch.save = announced_save
from robo_genie.cli import main
main(sys.argv[1:])
"""


def _args(data, out) -> list[str]:
    train = [f"tokenizer.{k}" for k in ("batch_size=2", "clip_len=4", "warmup_steps=2", "log_every=1",
                                        "ckpt_every=1")]
    return ["train", "stage=tokenizer", f"data.path={data}", f"out={out}", f"steps={STEPS}", "progress=false",
            *MICRO, *train]


def _run(args: list[str], kill: tuple[int, float] | None = None) -> tuple[int, str]:
    """Run the CLI in a child; with kill=(step, delay_s), SIGKILL it `delay_s` after it starts writing
    checkpoint `step` (0 s: inside that write). Returns (exit code, output)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", CHILD, *args], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, env=env, cwd=os.getcwd())
    lines = []
    for line in child.stdout:
        lines.append(line)
        if kill and line.startswith("IN_CHECKPOINT_WRITE") and int(line.split()[1]) >= kill[0]:
            time.sleep(kill[1])
            child.kill()
            break
    child.stdout.close()
    return child.wait(timeout=120), "".join(lines)


def _weights(run) -> dict[str, torch.Tensor]:
    return load_file(str(run / "bundle" / "tokenizer.safetensors"))


def test_sigkill_at_random_moments_resumes_to_identical_weights(sim_shards, tmp_path):
    seed = int(os.environ.get("ROBO_GENIE_FAULT_SEED", "0"))
    rng = np.random.default_rng(seed)
    # three kills at increasing steps: the first inside a checkpoint write, the others after a random
    # delay (inside the next write, or in the middle of a training step)
    kill_steps = np.sort(rng.choice(np.arange(2, STEPS - 1), 3, replace=False))
    plan = [(int(kill_steps[0]), 0.0)] + [(int(s), float(rng.uniform(0.0, 0.6))) for s in kill_steps[1:]]
    print(f"kill plan (ROBO_GENIE_FAULT_SEED={seed}): {plan}")

    reference = tmp_path / "never_killed"
    code, log = _run(_args(sim_shards, reference))
    assert code == 0, log

    run = tmp_path / "killed"
    ckpts = run / "checkpoints" / "tokenizer"
    resumed_from = []
    for step, delay in plan:
        code, log = _run(_args(sim_shards, run), kill=(step, delay))
        assert code == -9, f"the child was not killed (plan {plan}):\n{log}"
        resumed_from += [int(line.split("step ")[1].split("/")[0]) for line in log.splitlines()
                         if "resuming from" in line]
        if delay == 0.0:     # killed inside the write: the half-written checkpoint is only a .tmp folder
            assert (ckpts / f"step_{step:07d}.tmp").is_dir() and not (ckpts / f"step_{step:07d}").exists()
            pointer = (ckpts / "latest.json").read_text()
            assert f"step_{step - 1:07d}" in pointer, pointer
        assert not (run / "bundle" / "tokenizer.safetensors").exists()
    code, log = _run(_args(sim_shards, run))
    assert code == 0, log
    resumed_from += [int(line.split("step ")[1].split("/")[0]) for line in log.splitlines() if "resuming from" in line]
    # each restart picked up the last complete checkpoint: never before the step of the previous kill - 1
    assert len(resumed_from) == len(plan) and resumed_from[0] == plan[0][0] - 1, (plan, resumed_from)
    a, b = _weights(reference), _weights(run)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after {len(plan)} SIGKILLs (plan {plan})"


INGEST_CHILD = """
import sys, time
import robo_genie.datasets.shards as shards
real_save = shards.save_file
def announced_save(data, path, *args, **kwargs):
    real_save(data, path, *args, **kwargs)
    print(f"IN_SHARD_WRITE {path}", flush=True)  # the .tmp file is whole; the kill lands before the rename
    time.sleep(0.5)
shards.save_file = announced_save
from robo_genie.cli import main
main(sys.argv[1:])
"""


def test_ingest_killed_in_the_middle_of_a_shard_reruns_to_every_episode_once(tmp_path):
    from PIL import Image

    from robo_genie.datasets.shards import FrameShards
    videos = tmp_path / "videos"
    for e in range(6):                               # six image-folder episodes of 5 frames
        folder = videos / f"episode_{e}"
        folder.mkdir(parents=True)
        for t in range(5):
            Image.fromarray(np.full((40, 48, 3), 20 * e + t, np.uint8)).save(folder / f"{t:03d}.png")
    out = tmp_path / "shards"
    args = ["ingest", "source=video_folder", f"path={videos}", f"out={out}", "resolution=32", "shard_frames=10",
            "progress=false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", INGEST_CHILD, *args], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, env=env)
    writes = 0
    for line in child.stdout:
        if line.startswith("IN_SHARD_WRITE"):
            writes += 1
            if writes == 2:                          # the second shard is written, not yet renamed
                child.kill()
                break
    child.stdout.close()
    assert child.wait(timeout=60) == -9
    # killed: the manifest lists the first shard only, and a half-finished shard exists only as .tmp
    killed = FrameShards(out)
    assert {e["shard"] for e in killed.episodes} == {"shard_00000.safetensors"}
    assert (out / "shard_00001.safetensors.tmp").is_file() and not (out / "shard_00001.safetensors").exists()

    subprocess.run([sys.executable, "-m", "robo_genie.cli", *args], check=True, env=env, capture_output=True)
    shards = FrameShards(out)
    names = [e["name"] for e in shards.episodes]
    assert sorted(names) == sorted(set(names)) and len(names) == 6            # every episode exactly once
    for i, ep in enumerate(shards.episodes):                                  # and each one whole
        frames = shards.read(i, 0, ep["length"])
        assert frames.shape == (5, 32, 32, 3)
        assert abs(int(frames[0].mean()) - 20 * int(ep["name"].split("_")[-1])) <= 1
