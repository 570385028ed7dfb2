"""The LAM's motion input and its code vectors fitted to the training transitions' clusters."""

import json

import pytest
import torch
from robo_genie.bundle import load_part, read_meta
from robo_genie.models.lam import LatentActionModel, motion_products
from robo_genie.models.quantizer import FSQuantizer, fit_clusters


def square(offset: int, bright: bool, size: int = 16) -> torch.Tensor:
    """A 4x4 square on a plain background, moved `offset` pixels right: [H, W, 3]."""
    img = torch.full((size, size, 3), 0.2 if bright else 0.8)
    img[6:10, 4 + offset:8 + offset] = 0.9 if bright else 0.1
    return img


@pytest.mark.parametrize("bright", [True, False])
def test_motion_products_give_the_direction_whatever_the_contrast(bright):
    right = torch.stack([square(0, bright), square(1, bright)])[None]     # [1, 2, H, W, 3]
    left = torch.stack([square(1, bright), square(0, bright)])[None]
    for video, sign in ((right, -1), (left, 1)):
        products = motion_products(video)
        assert products.shape == (1, 2, 16, 16, 2) and (products[:, 0] == 0).all()
        along_x, along_y = products[0, 1, ..., 0].sum(), products[0, 1, ..., 1].sum()
        # a horizontal move: the x term carries it, with the move's sign (-dI/dt.dI/dx ~ v_x |dI/dx|^2)
        assert torch.sign(along_x) == sign and abs(along_x) > 10 * abs(along_y)


def test_fit_clusters_finds_separated_clusters_and_is_seeded():
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [0.0, -1.0], [3.0, 0.0]])
    points = torch.cat([c + 0.05 * torch.randn(200, 2, generator=gen) for c in centres])
    fitted = fit_clusters(points, 4, seed=1)
    # every true centre has a fitted one within 0.05, and the same seed gives the same centres
    assert torch.cdist(centres, fitted).min(1).values.max() < 0.05
    assert torch.equal(fitted, fit_clusters(points, 4, seed=1))


def test_unfitted_codes_label_as_fsq_rounds_and_fitted_codes_by_the_nearest_centre(micro_cfg):
    lam = LatentActionModel(micro_cfg.lam, micro_cfg.image_size).eval()
    video = torch.rand(6, 2, micro_cfg.image_size, micro_cfg.image_size, 3)
    z = lam.encode_continuous(video)
    _, rounded = FSQuantizer(list(lam.quantizer.levels))(z)
    assert torch.equal(lam.infer_actions(video), rounded)          # before fitting: FSQ's own codes
    actions = lam.continuous_actions(video).flatten(0, 1)
    sizes = lam.fit_codes(actions, seed=0)
    assert sizes.sum() == len(actions)
    expected = torch.cdist(actions, lam.code_vectors).argmin(1)
    assert torch.equal(lam.infer_actions(video).flatten(), expected)


def test_the_lam_stage_fits_its_codes_on_the_training_data(micro_run):
    bundle = micro_run / "bundle"
    info = read_meta(bundle)["parts"]["lam"]["codes_fitted"]
    lam = load_part(bundle, "lam")
    grid = FSQuantizer(list(lam.quantizer.levels)).codebook
    assert not torch.equal(lam.code_vectors, grid)                  # moved off FSQ's grid
    assert sum(info["transitions_per_code"]) == info["windows"] * 3    # micro clips of 4 frames: 3 each


def test_a_bundle_part_from_another_version_is_refused_with_the_retrain_command(micro_run, tmp_path):
    import shutil
    from robo_genie.bundle import BundleError, file_sha256
    from safetensors.torch import load_file, save_file
    bundle = tmp_path / "bundle"
    shutil.copytree(micro_run / "bundle", bundle)
    state = load_file(str(bundle / "lam.safetensors"))
    save_file({k: v for k, v in state.items() if not k.startswith("enc_motion")}, str(bundle / "lam.safetensors"))
    meta = json.loads((bundle / "meta.json").read_text())
    meta["sha256"]["lam.safetensors"] = file_sha256(bundle / "lam.safetensors")
    (bundle / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="another version of robo_genie.*robo-genie train stage=all"):
        load_part(bundle, "lam")
