"""`robo-genie bench` writes its figures as JSON with the hardware named (no timing assertions)."""

import json

import pytest
import torch

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
    with pytest.raises(SystemExit, match="available: sim, data, train, play"):
        main(["bench", "gpu", f"out={tmp_path / 'x.json'}"])


def test_bench_data_measures_ingest_loader_and_formats_and_estimates_gpu_demand(tmp_path):
    out = tmp_path / "data.json"
    main(["bench", "data", "episodes=2", "episode_len=20", "workers=[1]", "loader_workers=[0]", "batches=2",
          "batch_size=2", "repeats=1", f"out={out}"])
    r = json.loads(out.read_text())
    assert r["ingest"][0]["frames"] == 40 and r["ingest"][0]["frames_per_s"] > 0
    assert r["loader"][0]["clips_per_s"] > 0
    formats = {f["format"]: f for f in r["storage_formats"]}
    assert formats["raw"]["bytes_per_frame"] == 64 * 64 * 3
    assert formats["JPEG q95"]["bytes_per_frame"] < formats["raw"]["bytes_per_frame"]
    dyn = r["consumption"]["robo_2p5b"]["stages"]["dynamics"]
    assert abs(dyn["parameters"] - 2.5e9) / 2.5e9 < 0.1 and dyn["tokens_per_clip"] == 16 * 16 * 16
    assert dyn["train_flops_per_clip"] == 6 * dyn["parameters"] * dyn["tokens_per_clip"]
    assert "ESTIMATE" in r["consumption_note"]
    v = r["verdict"]["small"]
    assert v["bottleneck"] == (v["loader_clips_per_s_one_rank_here"] < v["needs_clips_per_s_per_gpu (estimate)"])


def test_bench_train_times_each_part_and_precision_on_its_own_token_grid(tmp_path):
    out = tmp_path / "train.json"
    # precisions=fp32 (one value, no brackets) is read as a one-element list
    main(["bench", "train", "model.image_size=32", "parts=lam,dynamics", "precisions=fp32", "batch_size=2",
          "clip_len=3", "warmup_steps=1", "timed_steps=2", "device=cpu", f"out={out}"])
    r = json.loads(out.read_text())
    rows = {row["part"]: row for row in r["results"]}
    assert set(rows) == {"lam", "dynamics"} and r["model"] == "tiny"
    # tiny: LAM patch 8, tokenizer patch 4 -> 16 and 64 tokens per 32x32 frame
    assert rows["lam"]["tokens_per_step"] == 2 * 3 * 16
    assert rows["dynamics"]["tokens_per_step"] == 2 * 3 * 64
    for row in rows.values():
        assert len(row["step_s"]) == 2 and row["median_step_s"] > 0 and row["speedup_vs_fp32_eager"] == 1.0
        assert row["tokens_per_s"] == pytest.approx(row["tokens_per_step"] / row["median_step_s"], rel=0.01)


@pytest.mark.parametrize("kind", ["latent", "maskgit"])
def test_bench_play_times_cached_and_uncached_steps_per_context(tmp_path, kind):
    out = tmp_path / "play.json"
    main(["bench", "play", "model.image_size=32", f"model.dynamics.kind={kind}", "clip_len=4", "contexts=[1,6]",
          "maskgit_steps=[2]", "warmup_steps=1", "timed_steps=2", "device=cpu", f"out={out}"])
    r = json.loads(out.read_text())
    cases = {(row["cached"], row["context_frames"]) for row in r["results"]}
    assert cases == {(True, 1), (True, 6), (False, 1), (False, 6)} and r["window"] == 4
    for row in r["results"]:
        assert row["frames_per_s"] == pytest.approx(1e3 / row["ms_per_frame"], rel=0.01)
        assert row["maskgit_steps"] == (2 if kind == "maskgit" else None) and row["device"] == "cpu"
        assert row["vs_fastest_context"] >= 1.0


@pytest.mark.parametrize("kind", ["latent", "maskgit"])
def test_cached_play_gives_the_frames_of_recomputing_the_window(micro_cfg, kind):
    """Within the window, a cached step and a step recomputed from scratch see the same frames, so
    the same seed gives the same frame (pixels)."""
    from robo_genie.bench.play import _uncached_step
    from robo_genie.models import build_part
    from robo_genie.play import World
    micro_cfg.dynamics.kind = kind
    torch.manual_seed(0)
    parts = {p: build_part(p, micro_cfg).eval() for p in ("tokenizer", "lam", "dynamics")}
    if kind == "latent":
        parts["dynamics"].set_codebook(parts["tokenizer"].quantizer.codebook)
    world = World(micro_cfg, parts, window=5, lam_window=2, device=torch.device("cpu"))
    world.maskgit_steps = 3
    world.reset_batch(torch.rand(2, 32, 32, 3))
    for a in (0, 1, 2):
        world.step_batch(torch.tensor([a, 3 - a]))
    start, action = world.snapshot(), torch.tensor([1, 2])
    world.generator.manual_seed(7)
    cached = world.step_batch(action)
    world.restore(start)
    world.generator.manual_seed(7)
    assert torch.allclose(_uncached_step(world, action), cached, atol=1e-5)


def test_bench_train_names_an_unknown_part(tmp_path):
    with pytest.raises(SystemExit, match="unknown \\['vae'\\]"):
        main(["bench", "train", "parts=vae", "device=cpu", f"out={tmp_path / 'x.json'}"])


def test_training_step_flops_match_a_case_counted_by_hand():
    """One ST block, d=8, 2 heads, 4 spatial positions, 3 frames, batch 1 (12 tokens), forward:
    qkv 2*12*8*24 = 4608 and output 2*12*8*8 = 1536, each twice (spatial, temporal);
    feed-forward 2*12*8*32 = 6144 twice; spatial attention 3 frames x 4*4^2*8 = 1536; temporal
    attention 4 positions x 4*3^2*8 = 1152. Forward 27264 FLOPs; training (x3) 81792."""
    from robo_genie.bench.train import training_step_flops
    from robo_genie.models.st_transformer import STBlock
    block = STBlock(8, 2, 4.0, causal=True)
    flops = training_step_flops(block, lambda m, b: (m(b["x"])[0].sum(), {}), {"x": torch.randn(1, 3, 4, 8)})
    assert flops["attention"] == 3 * (1536 + 1152)
    assert flops["total"] == 81792
