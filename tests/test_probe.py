"""The deformable probe's metrics on constructed cases, and a tiny end-to-end run."""

import json

import numpy as np
import pytest
from PIL import Image
from robo_genie.sim.probe import clip_metrics, counterfactual, gap, probe_clips, simulate_clips, still_frames
from robo_genie.sim.silhouette import boundary_distance, fit_colour_model, iou

from robo_genie.cli import main


def _square(x, y, size=8, shape=32):
    m = np.zeros((shape, shape), bool)
    m[y:y + size, x:x + size] = True
    return m


def test_iou_and_boundary_distance_on_known_shapes():
    a = _square(4, 4)
    assert iou(a, a) == 1.0 and boundary_distance(a, a) == 0.0
    assert iou(a, _square(20, 20)) == 0.0
    assert iou(a, _square(6, 4)) == pytest.approx(48 / 80)
    # a square shifted by 3 px: boundary pixels are at most 3 px from the other boundary
    d = boundary_distance(a, _square(7, 4))
    assert 1.0 < d <= 3.0
    empty = np.zeros_like(a)
    assert iou(empty, empty) == 1.0 and boundary_distance(empty, empty) == 0.0
    assert boundary_distance(a, empty) == pytest.approx(np.hypot(32, 32))


def test_colour_model_recovers_an_object_by_its_colour_even_in_shade():
    rng = np.random.default_rng(0)
    frame = (np.array([60, 80, 120]) + rng.integers(-20, 20, (32, 32, 3))).astype(np.uint8)   # bluish table
    truth = _square(10, 12)
    frame[truth] = [200, 40, 30]
    model = fit_colour_model(frame, truth)
    assert iou(model.mask(frame), truth) == 1.0
    moved = (np.array([60, 80, 120]) + rng.integers(-20, 20, (32, 32, 3))).astype(np.uint8)
    moved[_square(14, 12)] = [120, 24, 18]                  # the same object, moved, in shade (60 %)
    assert iou(model.mask(moved), _square(14, 12)) == 1.0
    assert fit_colour_model(frame, np.zeros_like(truth)) is None


@pytest.fixture(scope="module")
def cloth_clips():
    return simulate_clips("cloth", [101, 102], horizon=6, resolution=32, start=8)


def test_a_model_that_copies_physics_scores_perfect(cloth_clips):
    report, _ = probe_clips(lambda frames: frames[:, 1:].copy(), cloth_clips)
    model = report["model"]["mean"]
    assert model["psnr"] >= 99 and model["ssim"] > 0.999
    # silhouettes: as good as the colour classifier can be on physics frames, and that is good
    assert model["iou"] == pytest.approx(report["silhouette_ceiling_iou"], abs=1e-4)
    assert report["silhouette_ceiling_iou"] > 0.7


def test_a_frozen_model_scores_exactly_as_badly_as_a_still_image(cloth_clips):
    frozen, _ = probe_clips(lambda frames: np.repeat(frames[:, :1], frames.shape[1] - 1, 1), cloth_clips)
    assert frozen["model"] == frozen["still"]
    copy, _ = probe_clips(lambda frames: frames[:, 1:].copy(), cloth_clips)
    # the clips move, so a still image is worse than physics on every metric
    assert frozen["model"]["mean"]["psnr"] < copy["model"]["mean"]["psnr"] - 3
    assert frozen["model"]["mean"]["iou"] < copy["model"]["mean"]["iou"]


def test_a_noisy_model_scores_between_copy_and_nonsense(cloth_clips):
    rng = np.random.default_rng(0)
    truth = cloth_clips.frames[:, 1:]
    noisy = np.clip(truth + rng.normal(0, 12, truth.shape), 0, 255).astype(np.uint8)
    garbage = rng.integers(0, 256, truth.shape).astype(np.uint8)
    m_noisy, m_garbage = clip_metrics(noisy, cloth_clips), clip_metrics(garbage, cloth_clips)
    assert 20 < m_noisy["psnr"].mean() < 40 and m_garbage["psnr"].mean() < 10
    assert m_noisy["iou"].mean() > m_garbage["iou"].mean() + 0.3
    assert still_frames(cloth_clips).shape == truth.shape


def test_gap_is_deformable_minus_rigid():
    d = {"mean": {"psnr": 20.0, "ssim": 0.5, "iou": 0.4, "boundary_px": 3.0},
         "per_step": {"psnr": [21, 19], "ssim": [0.6, 0.4], "iou": [0.5, 0.3], "boundary_px": [2, 4]}}
    r = {"mean": {"psnr": 22.0, "ssim": 0.5, "iou": 0.6, "boundary_px": 1.0},
         "per_step": {"psnr": [22, 22], "ssim": [0.5, 0.5], "iou": [0.7, 0.5], "boundary_px": [1, 1]}}
    g = gap(d, r)
    assert g["mean"]["iou"] == pytest.approx(-0.2) and g["mean"]["boundary_px"] == pytest.approx(2.0)
    assert g["per_step"]["psnr"] == [-1, -3]


def test_counterfactual_separates_a_model_that_follows_its_actions_from_one_that_does_not():
    seeds = [201, 202]
    follows = counterfactual(lambda f: f[:, 1:].copy(), "cloth", seeds, horizon=8, resolution=32)
    frozen = counterfactual(lambda f: np.repeat(f[:, :1], f.shape[1] - 1, 1), "cloth", seeds, horizon=8,
                            resolution=32)
    assert follows["final_step"]["physics_divergence"] > 0.2          # the branches really part
    assert follows["own_minus_cross"] > 0.15
    assert frozen["final_step"]["model_divergence"] == 0.0
    assert abs(frozen["own_minus_cross"]) < 1e-6
    assert all(b > 0 for b in follows["branch_frame"])               # prompt after the shared approach


def test_probe_end_to_end_on_a_trained_bundle_writes_every_file(micro_run, tmp_path):
    out = tmp_path / "probe"
    main(["sim", "probe", f"bundle={micro_run / 'bundle'}", "scene=cloth", "episodes=2", "horizon=3",
          "counterfactual_episodes=1", "progress=false", f"out={out}"])
    report = json.loads((out / "probe.json").read_text())
    cloth = report["scenes"]["cloth"]
    assert len(cloth["model"]["per_step"]["iou"]) == 3
    assert cloth["rigid_counterpart"]["shape"] == "plate"
    assert set(cloth["gap_vs_rigid"]["mean"]) == {"psnr", "ssim", "iou", "boundary_px"}
    assert len(cloth["counterfactual"]["per_step"]["own_iou"]) == 3
    for name in ("curves.png", "cloth.gif", "cloth_rigid_plate.gif", "report.html"):
        assert (out / name).stat().st_size > 0
    assert Image.open(out / "cloth.gif").n_frames == 4          # the prompt + 3 steps
    page = (out / "report.html").read_text()
    assert "cloth: IoU" in page                                         # the one-line summary
    assert "still image" in page and "ceiling" in page                 # each figure beside its reference
    with pytest.raises(SystemExit, match="scene"):
        main(["sim", "probe", f"bundle={micro_run / 'bundle'}", "scene=towel", f"out={out}"])
