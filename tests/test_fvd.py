"""FVD: the Fréchet distance itself, I3D weight loading, and FVD in the consistency report when an
I3D file is given (here a randomly initialised one: real Kinetics weights cannot be downloaded)."""

import json

import numpy as np
import pytest
import torch
from robo_genie.eval.fvd import I3D, frechet_distance, fvd, load_i3d

from robo_genie.cli import main


def test_frechet_distance_of_known_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20000, 3)) * [1, 2, 3]
    b = rng.normal(size=(20000, 3)) * [2, 2, 1] + [1, 0, 0]
    # diagonal covariances: |mu_a - mu_b|^2 + sum (sigma_a - sigma_b)^2
    assert frechet_distance(a, b) == pytest.approx(1 + 1 + 0 + 4, rel=0.03)
    assert abs(frechet_distance(a, a)) < 1e-6


@pytest.fixture(scope="module")
def i3d_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("i3d") / "i3d_random.pt"
    torch.save(I3D().state_dict(), path)
    return path


def test_fvd_is_zero_for_the_same_videos_and_grows_with_distortion(i3d_file):
    model = load_i3d(i3d_file)
    rng = np.random.default_rng(1)
    real = rng.integers(0, 256, (6, 8, 32, 32, 3)).astype(np.uint8)

    def noisy(sigma):
        return np.clip(real + rng.normal(0, sigma, real.shape), 0, 255).astype(np.uint8)
    same, small, large = fvd(model, real, real, 64), fvd(model, real, noisy(10), 64), fvd(model, real, noisy(80), 64)
    assert abs(same) < 1e-6 and 0 < small < large


def test_weights_load_from_pt_or_safetensors_and_a_wrong_file_is_named(i3d_file, tmp_path):
    from safetensors.torch import save_file
    state = torch.load(i3d_file, weights_only=True)
    save_file(state, str(tmp_path / "i3d.safetensors"))
    a, b = load_i3d(i3d_file), load_i3d(tmp_path / "i3d.safetensors")
    assert torch.equal(a.logits.conv3d.weight, b.logits.conv3d.weight)
    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an Inception-I3D state dict.*missing"):
        load_i3d(tmp_path / "other.pt")
    with pytest.raises(ValueError, match="no such file"):
        load_i3d(tmp_path / "absent.pt")


def test_consistency_report_has_fvd_when_i3d_weights_are_given(micro_run, sim_shards, i3d_file, tmp_path):
    out = tmp_path / "cons"
    main(["eval", "consistency", f"bundle={micro_run / 'bundle'}", f"prompts={sim_shards}", f"out={out}",
          "n_prompts=3", "length=2", "n_random=1", "n_permutations=20", "ts=[1,3]", "n_clips=4", "device=cpu",
          f"i3d_weights={i3d_file}"])
    report = json.loads((out / "consistency.json").read_text())
    assert isinstance(report["fvd"], float) and report["fvd"] >= 0
    assert "4 held-out clips" in report["fvd_note"]
