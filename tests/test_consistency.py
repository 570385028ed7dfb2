"""The consistency metrics must discriminate: a stand-in world whose code -> motion mapping is the
same for every prompt scores high; one whose mapping is shuffled per prompt scores near chance."""

import json

import numpy as np
import pytest
import torch
from robo_genie.eval import consistency as cons
from robo_genie.eval.motion import flow_signature, signature_similarity

from robo_genie.cli import main

SIZE = 32
MOVES = torch.tensor([[0, 2], [0, -2], [2, 0], [-2, 0]])       # code -> (dy, dx) in pixels


def _prompts(n: int, seed: int = 0) -> np.ndarray:
    """A coloured square on a plain background of another colour, placed at random."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, SIZE, SIZE, 3), np.uint8)
    for i in range(n):
        out[i] = rng.integers(0, 100, 3)
        y, x = rng.integers(11, 16, 2)
        out[i, y:y + 6, x:x + 6] = rng.integers(150, 256, 3)
    return out


class StandInLAM:
    """Reads the square's displacement (centroid of the pixels unlike the corner pixel)."""

    def infer_actions(self, video: torch.Tensor) -> torch.Tensor:        # [B, T, H, W, 3]
        fg = (video - video[:, :, :1, :1]).abs().sum(-1) > 0.1
        ys, xs = torch.arange(SIZE).float()[:, None], torch.arange(SIZE).float()[None, :]
        n = fg.sum((-2, -1)).clamp_min(1)
        centre = torch.stack([(fg * ys).sum((-2, -1)) / n, (fg * xs).sum((-2, -1)) / n], -1)
        step = centre[:, 1:] - centre[:, :-1]                             # [B, T-1, 2]
        return (step[:, :, None] - MOVES.float()).norm(dim=-1).argmin(-1)


class StandInWorld:
    """Moves the square by MOVES[code]; with shuffle=True each prompt gets its own permutation."""

    num_actions, image_size, lam_window, device = 4, SIZE, 2, torch.device("cpu")

    def __init__(self, shuffle: bool):
        self.shuffle, self.lam = shuffle, StandInLAM()

    def reset_batch(self, images: torch.Tensor) -> None:
        self.frames = images.clone()
        keys = (images.sum((1, 2, 3)) * 1000).long().tolist()          # a prompt's own permutation
        self.perms = torch.stack([torch.randperm(4, generator=torch.Generator().manual_seed(k)) if self.shuffle
                                  else torch.arange(4) for k in keys])

    def decode_latest(self) -> torch.Tensor:
        return self.frames

    def step_batch(self, actions: torch.Tensor) -> torch.Tensor:
        codes = self.perms[torch.arange(len(actions)), actions]
        self.frames = torch.stack([torch.roll(f, tuple(MOVES[c].tolist()), dims=(0, 1))
                                   for f, c in zip(self.frames, codes)])
        return self.frames


def _measure(world):
    prompts = _prompts(8)
    _, seqs, kinds = cons.command_sequences(4, 4, 4, seed=0)
    videos = cons.roll_out(world, prompts, seqs)
    assert videos.shape == (8, 8, 5, SIZE, SIZE, 3) and videos.dtype == np.uint8
    signatures = np.stack([[flow_signature(v) for v in row] for row in videos])
    reid = cons.reidentify(world.lam, 2, videos, seqs, 4, "cpu")
    return reid, cons.motion_agreement(signatures, kinds, 300, seed=0)


def test_a_consistent_world_scores_high():
    reid, motion = _measure(StandInWorld(shuffle=False))
    assert reid["reid_accuracy"] > 0.95
    assert min(reid["reid_accuracy_per_code"]) > 0.9
    assert motion["motion_margin"] > 0.5 and motion["p_value"] < 0.01
    assert "Consistent" in cons.verdict(reid["reid_accuracy"], 0.25, motion["motion_margin"], motion["p_value"])


def test_a_world_shuffled_per_prompt_scores_near_chance():
    reid, motion = _measure(StandInWorld(shuffle=True))
    assert reid["reid_accuracy"] < 0.5                          # chance is 0.25
    assert abs(motion["motion_margin"]) < 0.15 and motion["p_value"] > 0.05
    assert "Not consistent" in cons.verdict(reid["reid_accuracy"], 0.25, motion["motion_margin"], motion["p_value"])


class StandInTokenizer:
    """Codes each pixel as one token (its 8-bit colour); `still` redraws every frame as the clip's first."""

    def __init__(self, still: bool):
        self.still, self.quantizer = still, self

    def encode(self, video: torch.Tensor) -> torch.Tensor:                  # [B, T, H, W, 3] -> [B, T, H, W]
        rgb = (video * 255).round().long()
        return rgb[..., 0] * 65536 + rgb[..., 1] * 256 + rgb[..., 2]

    def lookup(self, tokens: torch.Tensor) -> torch.Tensor:                 # [..., S] -> [..., S, 3]
        return torch.stack([tokens // 65536, tokens // 256 % 256, tokens % 256], -1).float() / 255

    def decode_codes(self, codes: torch.Tensor, window: int) -> torch.Tensor:
        video = codes.reshape(*codes.shape[:2], SIZE, SIZE, 3)
        return video[:, :1].expand_as(video) if self.still else video


@pytest.mark.parametrize("still,expected", [(False, 1.0), (True, 0.25)])
def test_the_reidentification_ceiling_reads_the_redrawn_video(tmp_path, still, expected):
    """A tokenizer that redraws faithfully leaves the LAM reading its own codes (ceiling 1); one that
    freezes the picture leaves it one code of four (0.25)."""
    from robo_genie.datasets.shards import ShardWriter
    rng = np.random.default_rng(0)
    with ShardWriter(tmp_path / "moving", source="test", fps=10, image_size=SIZE) as w:
        for e in range(4):
            frames = [_prompts(1, seed=e)[0]]
            for code in rng.permutation(np.repeat(np.arange(4), 3)):
                frames.append(np.roll(frames[-1], tuple(MOVES[code].tolist()), axis=(0, 1)))
            w.add(f"ep{e}", np.stack(frames))
    world = StandInWorld(shuffle=False)
    world.tokenizer, world.window = StandInTokenizer(still), 2
    out = cons.reidentification_ceiling(world, tmp_path / "moving")
    assert out["reid_ceiling"] == pytest.approx(expected)
    assert out["reid_ceiling_transitions_per_code"] == [12, 12, 12, 12]


def test_flow_signature_reads_direction_and_size_of_a_move():
    video = np.repeat(_prompts(1), 3, axis=0)
    video[1] = np.roll(video[0], 2, axis=1)                    # 2 px right
    video[2] = video[1]                                        # then still
    sig = flow_signature(video)
    assert sig[0, 0] > 1.0 and abs(sig[0, 1]) < 0.5 and np.allclose(sig[1], 0)
    assert signature_similarity(sig, sig) == pytest.approx(1.0)
    assert signature_similarity(sig, -sig) == pytest.approx(0.0, abs=1e-6)


def test_action_directions_take_the_dominant_axis_and_mark_still_steps():
    acts = np.array([[0.02, 0.001, 0, 0], [0, -0.03, 0, 1], [0, 0, 0.02, 0], [0, 0, -0.02, 0], [1e-5, 0, 0, 0]])
    assert [cons.DIRECTIONS[d] for d in cons.action_directions(acts)] == ["+x", "-y", "+z", "-z", "still"]


def test_eval_consistency_cli_writes_every_file(micro_run, sim_shards, tmp_path):
    out = tmp_path / "cons"
    main(["eval", "consistency", f"bundle={micro_run / 'bundle'}", f"prompts={sim_shards}", f"out={out}",
          "n_prompts=3", "length=3", "n_random=2", "n_permutations=50", "ts=[1,3]", "n_clips=4", "device=cpu"])
    report = json.loads((out / "consistency.json").read_text())
    for key in ("reid_accuracy", "reid_accuracy_per_code", "motion_same", "motion_different", "motion_margin",
                "p_value", "nmi", "n_prompts", "n_sequences", "verdict"):
        assert key in report, key
    assert report["n_prompts"] == 3 and report["n_sequences"] == 4 + 2       # micro |A| = 4
    assert 0 <= report["reid_accuracy"] <= 1 and 0 < report["p_value"] <= 1
    assert set(report["fidelity"]["delta_t_psnr"]) == {"1", "3"}
    assert report["fvd"] is None and "I3D" in report["fvd_note"]         # no weights given: no number
    for name in ("grid.png", "grid.gif", "report.html"):
        assert (out / name).stat().st_size > 0
    page = (out / "report.html").read_text()
    assert report["verdict"] in page
    assert f"chance {report['reid_chance']:.3f}" in page                # beside its references
    assert 0 <= report["reid_ceiling"] <= 1 and f"a perfect dynamics model {report['reid_ceiling']:.3f}" in page


def test_eval_consistency_takes_a_folder_of_images_and_names_a_bad_path(micro_run, tmp_path):
    from PIL import Image
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, img in enumerate(_prompts(2)):
        Image.fromarray(np.kron(img, np.ones((3, 3, 1), np.uint8))).save(folder / f"{i}.png")   # any size
    main(["eval", "consistency", f"bundle={micro_run / 'bundle'}", f"prompts={folder}", f"out={tmp_path / 'o'}",
          "length=2", "n_random=1", "n_permutations=20", "device=cpu"])
    report = json.loads((tmp_path / "o" / "consistency.json").read_text())
    assert report["n_prompts"] == 2 and "nmi" not in report        # photos carry no actions
    with pytest.raises(SystemExit, match="not found"):
        main(["eval", "consistency", f"bundle={micro_run / 'bundle'}", f"prompts={tmp_path / 'nope'}",
              f"out={tmp_path / 'o2'}"])


def test_direction_agreement_is_judged_against_its_chance_level():
    probe = cons.CentroidProbe().fit(np.array([[2.0, 0], [-2.0, 0], [0, 2.0], [0, -2.0]]), np.array([1, 2, 3, 4]))
    moves = np.array([[2.0, 0], [-2.0, 0], [0, 2.0], [0, -2.0]])
    same = np.repeat(moves[:, None, None], 6, axis=1).repeat(3, axis=2)          # sequence s: move s, every prompt
    rng = np.random.default_rng(0)
    scrambled = moves[rng.integers(0, 4, (4, 6))][:, :, None].repeat(3, axis=2)
    still = np.zeros((4, 6, 3, 2))
    good, bad, frozen = (cons.direction_agreement(probe, x) for x in (same, scrambled, still))
    assert good["direction_agreement"] == 1.0 and good["direction_agreement_chance"] == 0.25
    assert bad["direction_agreement"] < 0.5
    assert frozen["direction_agreement"] == 1.0 and frozen["direction_agreement_chance"] == 1.0
