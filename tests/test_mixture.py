"""A mixture of shard folders (mixture.json) is sampled by weight, resumes exactly, and trains."""

import json

import numpy as np
import pytest
from conftest import train_job
from robo_genie.datasets.loader import MixtureClipDataset, WeightedResumableSampler, open_clips
from robo_genie.datasets.shards import ShardError, ShardWriter

from robo_genie.training.jobs import run_train_job


def _shards(path, episodes, value):
    with ShardWriter(path, source="test", fps=10, image_size=32) as w:
        for e in range(episodes):
            w.add(f"ep{e}", np.full((6, 32, 32, 3), value, np.uint8))


@pytest.fixture
def mixture(tmp_path):
    _shards(tmp_path / "big", 6, 10)          # 6 episodes x 3 windows of 4 frames = 18 windows
    _shards(tmp_path / "small", 2, 200)       # 6 windows
    (tmp_path / "mixture.json").write_text(json.dumps(
        {"members": [{"path": "big", "weight": 1.0}, {"path": "small", "weight": 3.0}]}))
    return tmp_path


def test_members_are_drawn_by_weight_not_by_size(mixture):
    ds = open_clips(mixture, 4)
    assert isinstance(ds, MixtureClipDataset) and len(ds) == 24
    draws = WeightedResumableSampler(ds.offsets, ds.weights, seed=0)
    it = iter(draws)
    picks = np.array([next(it) for _ in range(4000)])
    from_small = (picks >= 18).mean()
    assert abs(from_small - 0.75) < 0.03                 # weight 3 of 4, though it has 1/4 of the windows
    assert set(picks[picks >= 18]) == set(range(18, 24))  # every window of a member is reachable
    assert int(ds[20]["frames"][0, 0, 0, 0]) == 200 and int(ds[3]["frames"][0, 0, 0, 0]) == 10


def test_the_weighted_stream_resumes_at_any_position(mixture):
    ds = open_clips(mixture, 4)
    full = iter(WeightedResumableSampler(ds.offsets, ds.weights, seed=3))
    head = [next(full) for _ in range(60)]
    resumed = iter(WeightedResumableSampler(ds.offsets, ds.weights, seed=3, start=37))
    assert [next(resumed) for _ in range(23)] == head[37:]


def test_a_bad_mixture_file_is_named(tmp_path):
    (tmp_path / "mixture.json").write_text(json.dumps({"members": [{"path": "a", "weight": 0}]}))
    with pytest.raises(ShardError, match="positive weights"):
        open_clips(tmp_path, 4)


def test_all_three_stages_train_on_a_mixture(mixture, tmp_path):
    run_train_job(train_job(tmp_path / "run", mixture, "all"))       # pretokenize=true is skipped for a mixture
    for part in ("tokenizer", "lam", "dynamics"):
        assert (tmp_path / "run" / "bundle" / f"{part}.safetensors").is_file()
    assert not (tmp_path / "run" / "tokens").exists()
