"""A trained micro bundle: round trip, safe loading, the play API and CLI, controllability eval."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from robo_genie import bundle as bundle_io
from robo_genie.cli import main
from robo_genie.play import World


@pytest.fixture
def trained(micro_run):
    return micro_run / "bundle"


def test_bundle_round_trips_every_tensor(trained):
    cfg, parts = bundle_io.load_bundle(trained)
    assert cfg.image_size == 32
    for name, model in parts.items():
        saved = load_file(str(trained / f"{name}.safetensors"))
        state = model.state_dict()
        assert saved.keys() == state.keys()
        assert all(torch.equal(saved[k], state[k]) for k in saved)
    # (evaluations.json appears once an eval has run on it: a note beside the parts, outside their digests)
    assert sorted(p.name for p in trained.iterdir() if p.name != "evaluations.json") == [
        "config.yaml", "dynamics.safetensors", "lam.safetensors", "meta.json", "tokenizer.safetensors"]


def test_loading_a_bundle_cannot_run_code(trained, tmp_path):
    import shutil
    evil = tmp_path / "evil"
    shutil.copytree(trained, evil)
    marker = tmp_path / "pwned"
    (evil / "config.yaml").write_text(f"!!python/object/apply:os.system ['touch {marker}']\n")
    import yaml
    with pytest.raises(yaml.YAMLError):
        bundle_io.load_bundle(evil)
    assert not marker.exists()


def test_world_steps_return_frames_and_reject_bad_actions(trained):
    world = World.from_bundle(trained, "cpu")
    prompt = world.reset(np.random.default_rng(0).integers(0, 255, (48, 60, 3), dtype=np.uint8))
    assert prompt.shape == (32, 32, 3) and prompt.dtype == np.uint8
    frames = [world.step(a) for a in (0, 1, 3, 2, 0, 1, 1, 1, 2)]     # longer than the window
    assert all(f.shape == (32, 32, 3) and f.dtype == np.uint8 for f in frames)
    with pytest.raises(ValueError, match=r"outside \[0, 4\)"):
        world.step(4)


def test_world_play_with_rolling_caches_equals_replaying_the_rollout_from_scratch(trained):
    """Past the window, a step reuses the cached frames; undo rebuilds the caches with one full pass
    over the whole rollout. Both must give the same next frame, pixels included."""
    world = World.from_bundle(trained, "cpu")
    world.reset(np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    for a in (0, 1, 3, 2, 0, 1, 2):                  # several windows long
        world.step(a)
    stepped = world.step(3)
    assert world._cache.layers[0][0].shape[2] == world._cache.window - 1
    world.undo()                                      # rebuilt from scratch
    assert np.array_equal(world.step(3), stepped)


def test_world_is_reproducible_with_a_seed(trained):
    img = np.full((32, 32, 3), 120, np.uint8)
    runs = []
    for _ in range(2):
        w = World.from_bundle(trained, "cpu", seed=5)
        w.reset(img)
        runs.append(np.stack([w.step(a) for a in (1, 2, 3)]))
    assert np.array_equal(runs[0], runs[1])


def test_regenerate_uses_lam_actions(trained, sim_shards):
    from robo_genie.datasets.shards import FrameShards
    world = World.from_bundle(trained, "cpu")
    clip = FrameShards(sim_shards).read(0, 0, 6)
    frames, actions = world.regenerate(clip)
    assert frames.shape == (6, 32, 32, 3) and len(actions) == 5
    assert all(0 <= a < world.num_actions for a in actions)


def test_play_cli_writes_a_gif(trained, tmp_path):
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(tmp_path / "p.png")
    out = tmp_path / "roll.gif"
    main(["play", f"bundle={trained}", f"prompt={tmp_path / 'p.png'}", "actions=0,3,3,1", f"out={out}"])
    with Image.open(out) as gif:     # the prompt and 4 steps at 4 fps (GIF merges repeated frames)
        played_ms = 0
        for i in range(gif.n_frames):
            gif.seek(i)
            played_ms += gif.info["duration"]
        assert played_ms == 5 * 250 and gif.size == (32, 32)


def test_eval_controllability_cli_writes_json(trained, sim_shards, tmp_path):
    main(["eval", "controllability", f"bundle={trained}", f"data.path={sim_shards}", f"out={tmp_path}",
          "n_clips=4", "t=3"])
    report = json.loads((tmp_path / "controllability.json").read_text())
    for key in ("delta_t_psnr", "psnr_inferred", "psnr_random", "t", "n_clips"):
        assert key in report
    assert report["t"] == 3 and report["n_clips"] == 4
    assert abs(report["delta_t_psnr"] - (report["psnr_inferred"] - report["psnr_random"])) < 1e-6
    assert abs(report["inferred_minus_copy"] - (report["psnr_inferred"] - report["psnr_copy"])) < 1e-4
    assert set(report["delta_t_psnr_by_t"]) == {"1", "2", "3", "4", "8"}      # t and the default ts
    assert "prompt held still" in (tmp_path / "report.html").read_text()


def test_info_describes_a_bundle_and_its_evaluations(trained, sim_shards, tmp_path, capsys):
    import shutil
    bundle = tmp_path / "bundle"
    shutil.copytree(trained, bundle)
    bundle.joinpath("evaluations.json").unlink(missing_ok=True)
    main(["info", f"bundle={bundle}"])
    text = capsys.readouterr().out
    assert "evaluations:\n  none yet" in text and "dynamics kind=latent" in text
    main(["eval", "controllability", f"bundle={bundle}", f"data.path={sim_shards}", f"out={tmp_path / 'ev'}",
          "n_clips=4"])
    capsys.readouterr()
    main(["info", f"bundle={bundle}", "json=true"])
    d = json.loads(capsys.readouterr().out)
    measured = json.loads((tmp_path / "ev" / "controllability.json").read_text())
    assert d["evaluations"]["controllability"]["delta_t_psnr_matched"] == measured["delta_t_psnr_matched"]
    params = {p: sum(t.numel() for t in load_file(str(bundle / f"{p}.safetensors")).values()) for p in d["parts"]}
    assert {p: d["parts"][p]["parameters"] for p in d["parts"]} == params
    assert d["parts"]["tokenizer"]["data"] == str(sim_shards) and d["missing_parts"] == []
    with pytest.raises(SystemExit, match="not a world-model bundle"):
        main(["info", f"bundle={tmp_path / 'ev'}"])


def test_frequency_matched_random_actions_draw_only_the_codes_in_use():
    from robo_genie.eval.controllability import random_actions
    matched = random_actions((50, 4), 4, seed=0, frequencies=[0.0, 0.75, 0.0, 0.25])
    assert set(matched.unique().tolist()) == {1, 3} and (matched == 1).float().mean() > 0.6
    uniform = random_actions((50, 4), 4, seed=0)
    assert set(uniform.unique().tolist()) == {0, 1, 2, 3}


def test_eval_ceiling_cli_codes_counterfactual_futures_with_the_bundles_tokenizer(trained, tmp_path):
    main(["eval", "ceiling", f"bundle={trained}", f"out={tmp_path}", "n_clips=3", "t=2", "device=cpu"])
    report = json.loads((tmp_path / "ceiling.json").read_text())
    assert report["n_states"] == 3 and report["t"] == 2
    # the micro model's tokenizer is barely trained, so only the structure is checked here
    assert abs(report["delta_t_psnr_ceiling"] - (report["psnr_true_future"] - report["psnr_random_future"])) < 1e-4
    assert 0 < report["fraction_of_pixels_the_futures_differ_in"] < 1


@pytest.mark.parametrize("old_setting", ["max_frames", "action_codebook"])
def test_bundles_of_models_that_no_longer_exist_are_refused_with_advice(trained, tmp_path, old_setting):
    import shutil

    import yaml
    old = tmp_path / "old"
    shutil.copytree(trained, old)
    cfg = yaml.safe_load((old / "config.yaml").read_text())
    if old_setting == "max_frames":
        cfg["max_frames"] = 16                   # every bundle written before 2026-12-01 has it
    else:                                        # a VQ LAM, as before 2026-12-02
        cfg["lam"] = {**cfg["lam"], "code_dim": 32, "ema_decay": 0.9}
    (old / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(bundle_io.BundleError, match="older robo_genie.*robo-genie train stage=all"):
        bundle_io.load_model_config(old)
    with pytest.raises(bundle_io.BundleError, match="older robo_genie"):
        World.from_bundle(old, "cpu")


def test_a_corrupt_or_swapped_part_file_is_refused_with_a_message(trained, tmp_path):
    import pickle
    import shutil

    bad = tmp_path / "flipped"
    shutil.copytree(trained, bad)
    raw = bytearray((bad / "dynamics.safetensors").read_bytes())
    raw[-5] ^= 0xFF                                   # one byte inside the tensor data
    (bad / "dynamics.safetensors").write_bytes(bytes(raw))
    with pytest.raises(bundle_io.BundleError, match="dynamics.safetensors is not the file that was saved"):
        World.from_bundle(bad, "cpu")

    # a pickle carrying a payload in place of a part, in a bundle without checksums (older format)
    swapped, marker = tmp_path / "swapped", tmp_path / "pwned"
    shutil.copytree(trained, swapped)

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))
    (swapped / "lam.safetensors").write_bytes(pickle.dumps(Payload()))
    meta = json.loads((swapped / "meta.json").read_text())
    meta.pop("sha256")
    (swapped / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(SystemExit, match="lam.safetensors cannot be read as safetensors"):
        main(["play", f"bundle={swapped}", f"prompt={tmp_path / 'x.png'}", f"out={tmp_path / 'o.gif'}"])
    assert not marker.exists()
    with pytest.raises(SystemExit, match="is not a world-model bundle"):
        main(["play", f"bundle={tmp_path}", f"prompt={tmp_path / 'x.png'}", f"out={tmp_path / 'o.gif'}"])
