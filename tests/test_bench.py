"""`robo-genie bench` writes its figures as JSON with the hardware named (no timing assertions)."""

import json

import pytest

from robo_genie.cli import main


def test_bench_sim_writes_rates_per_worker_count_and_the_hardware(tmp_path):
    out = tmp_path / "bench.json"
    main(["bench", "sim", "scene=rope", "episodes=2", "episode_len=3", "resolution=32", "workers=[1]",
          "repeats=1", f"out={out}"])
    result = json.loads(out.read_text())
    row = result["results"][0]
    assert row["workers"] == 1 and row["episodes_per_s"] > 0
    assert row["frames_per_s"] == pytest.approx(row["episodes_per_s"] * 3, rel=0.01)
    assert result["hardware"]["cpu_count"] >= 1 and result["hardware"]["mujoco"]


def test_unknown_benchmark_is_named(tmp_path):
    with pytest.raises(SystemExit, match="available: sim"):
        main(["bench", "gpu", f"out={tmp_path / 'x.json'}"])
