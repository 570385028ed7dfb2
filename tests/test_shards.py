import json

import numpy as np
import pytest
from robo_genie.datasets.loader import ClipDataset, ResumableSampler
from robo_genie.datasets.shards import FrameShards, ShardError, ShardWriter


def _episode(n, value, size=16):
    frames = np.full((n, size, size, 3), value, np.uint8)
    frames[:, 0, 0, 0] = np.arange(n)                # frame index, to check ordering
    return frames


def test_shards_round_trip_episodes_actions_labels(tmp_path):
    with ShardWriter(tmp_path, source="test", fps=5.0, image_size=16, shard_frames=10,
                     action_names=["a", "b"]) as w:
        for e, n in enumerate([7, 5, 9]):
            w.add(f"ep{e}", _episode(n, 10 * e), np.full((n, 2), e, np.float32), np.arange(n))
    shards = FrameShards(tmp_path)
    assert [ep["length"] for ep in shards.episodes] == [7, 5, 9]
    assert len(list(tmp_path.glob("shard_*.safetensors"))) == 2   # 7+5 >= 10 -> flush, then 9
    assert not list(tmp_path.glob("*.tmp"))
    for e, n in enumerate([7, 5, 9]):
        frames = shards.read(e)
        assert frames.shape == (n, 16, 16, 3) and frames[0, 5, 5, 0] == 10 * e
        assert list(frames[:, 0, 0, 0]) == list(range(n))
        assert (shards.read(e, 2, 3, key="actions") == e).all()
        assert list(shards.read(e, 1, 2, key="labels")) == [1, 2]


def test_manifest_is_valid_after_every_shard(tmp_path):
    w = ShardWriter(tmp_path, source="test", fps=5.0, image_size=16, shard_frames=4)
    w.add("a", _episode(4, 1))
    # Without close(): an interrupted ingest still leaves a readable dataset of finished shards.
    assert json.loads((tmp_path / "manifest.json").read_text())["episodes"][0]["name"] == "a"
    w.add("b", _episode(2, 2))
    assert len(FrameShards(tmp_path).episodes) == 1
    w.close()
    assert len(FrameShards(tmp_path).episodes) == 2


def test_wrong_frames_are_rejected_with_the_episode_name(tmp_path):
    w = ShardWriter(tmp_path, source="test", fps=5.0, image_size=16)
    with pytest.raises(ShardError, match="episode bad"):
        w.add("bad", np.zeros((3, 8, 8, 3), np.uint8))


def test_missing_manifest_names_the_directory_and_the_fix(tmp_path):
    with pytest.raises(ShardError, match=r"manifest.json not found.*robo-genie ingest"):
        FrameShards(tmp_path)


def test_clip_dataset_windows_stay_inside_episodes(tmp_path):
    with ShardWriter(tmp_path, source="test", fps=5.0, image_size=16) as w:
        w.add("a", _episode(6, 1))
        w.add("b", _episode(3, 2))
    ds = ClipDataset(tmp_path, clip_len=4)
    assert len(ds) == 3                                # windows only in the 6-frame episode
    clips = [ds[i]["frames"] for i in range(len(ds))]
    assert all((c[:, 5, 5, 0] == 1).all() for c in clips)
    with pytest.raises(ShardError, match="no episode has 7 frames"):
        ClipDataset(tmp_path, clip_len=7)


def test_resumable_sampler_continues_the_same_stream():
    full = ResumableSampler(10, seed=3)
    it = iter(full)
    stream = [next(it) for _ in range(35)]
    resumed = iter(ResumableSampler(10, seed=3, start=17))
    assert [next(resumed) for _ in range(18)] == stream[17:]
    assert sorted(stream[:10]) == list(range(10)) and stream[:10] != stream[10:20]
