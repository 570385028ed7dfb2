"""The demo end to end, shrunk: MuJoCo data -> three trainings -> evaluation -> report files."""

import json

from PIL import Image

from robo_genie.cli import main
from tests.conftest import MICRO


def test_demo_writes_report_bundle_and_pictures(tmp_path):
    small = [f"{p}.{k}" for p in ("tokenizer", "lam", "dynamics")
             for k in ("steps=3", "batch_size=2", "clip_len=4", "warmup_steps=1")]
    main(["demo", f"out={tmp_path}", "train_episodes=4", "holdout_episodes=2", "episode_len=10",
          "workers=1", "eval_clips=2", "progress=false", *MICRO, *small])
    report = json.loads((tmp_path / "report.json").read_text())
    assert isinstance(report["tokenizer"]["psnr"], float)
    assert 0.0 <= report["lam"]["nmi"] <= 1.0
    assert report["lam"]["n_transitions"] == 2 * 9          # every held-out transition is labelled
    dyn = report["dynamics"]
    assert {"delta_t_psnr", "delta_t_psnr_matched", "psnr_inferred", "psnr_random", "psnr_copy"} <= dyn.keys()
    assert set(dyn["delta_t_psnr_matched_by_t"]) == {"1", "2", "4", "8"}
    assert abs(dyn["delta_t_psnr_matched"] - (dyn["psnr_inferred"] - dyn["psnr_random_matched"])) < 1e-4
    # the random actions follow the codes the dynamics model saw in training
    assert dyn["random_action_frequencies_from"] == "training data"
    assert abs(sum(dyn["random_action_frequencies"]) - 1) < 1e-3
    assert isinstance(report["seconds"], float) and "timings" in report
    assert (tmp_path / "bundle" / "meta.json").is_file()
    with Image.open(tmp_path / "rollouts.gif") as gif:
        # prompt + 8 steps at 4 frames/s (Pillow merges identical consecutive frames, so count time)
        total_ms = 0
        for i in range(gif.n_frames):
            gif.seek(i)
            total_ms += gif.info["duration"]
        assert total_ms == 9 * 250
    # each figure beside its reference: the ceiling of a perfect dynamics model, the prompt held still
    ceiling = dyn["delta_t_psnr_ceiling_by_t"]
    assert set(ceiling) == {"1", "2", "4", "8"}
    if ceiling["4"] > 0:
        assert abs(dyn["ratio_to_ceiling"] - dyn["delta_t_psnr_matched"] / ceiling["4"]) < 1e-6
    else:           # 3 tokenizer steps can code every frame alike: then there is no gain to compare with
        assert dyn["ratio_to_ceiling"] is None
    html = (tmp_path / "report.html").read_text()
    assert "rollouts.gif" in html and "over_t.png" in html and (tmp_path / "over_t.png").stat().st_size > 5000
    assert f"ceiling {ceiling['4']:.2f} dB" in html and f"prompt held still {dyn['psnr_copy']:.2f} dB" in html
    assert "perfect dynamics model would gain" in html                   # the one plain sentence
    # the bundle remembers its evaluation, for `robo-genie info`
    evaluations = json.loads((tmp_path / "bundle" / "evaluations.json").read_text())
    assert evaluations["demo"]["delta_t_psnr_matched"] == dyn["delta_t_psnr_matched"]
