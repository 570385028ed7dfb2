"""The LeRobot reader against a v3.0 dataset written by lerobot itself (tests/fixtures/README.md), and
against the same episodes laid out as v2.1 (one parquet and one mp4 per episode)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from robo_genie.datasets.ingest import ingest
from robo_genie.datasets.shards import FrameShards
from robo_genie.datasets.sources import IngestError, LeRobotSource

from robo_genie.cli import main

FIXTURE = Path(__file__).parent / "fixtures" / "lerobot_v30_tiny"
TOLERANCE = 8          # AV1 is lossy: grey levels on flat areas


def _check_against_expected(shards):
    expected = json.loads((FIXTURE / "EXPECTED.json").read_text())["frames"]
    assert [ep["length"] for ep in shards.episodes] == [12, 14, 16]
    assert shards.manifest["fps"] == 10
    for ep_index, ep in enumerate(shards.episodes):
        frames = shards.read(ep_index).astype(int)
        rows = [f for f in expected if f["episode"] == ep_index]
        for t, row in enumerate(rows):
            frame = frames[t]
            assert abs(frame[2:20, 2:62].mean() - row["background"]) <= TOLERANCE, (ep_index, t)   # above the square
            band = frame[28:36].mean(axis=(0, 2))                       # rows inside the square
            white = np.flatnonzero(band > (row["background"] + 255) / 2)      # the background gets bright too
            assert abs(white.min() - row["square_x"]) <= 1 and abs(white.max() - (row["square_x"] + 15)) <= 1, (ep_index, t)
        actions = shards.read(ep_index, key="actions")
        assert np.array_equal(actions, np.tile([1, 0, 0, 0, 0, 0, ep_index], (len(rows), 1)).astype(np.float32))
        states = shards.read(ep_index, key="states")            # observation.state: 7 copies of t
        assert np.array_equal(states, np.repeat(np.arange(len(rows), dtype=np.float32)[:, None], 7, 1))


def test_every_frame_matches_what_lerobot_wrote(tmp_path):
    ingest("lerobot", str(FIXTURE), str(tmp_path / "shards"), resolution=64, progress=False)
    _check_against_expected(FrameShards(tmp_path / "shards"))


def test_the_names_of_actions_and_state_values_reach_the_manifest(tmp_path):
    """info.json may name each value of `action` (a list) and `observation.state` (lerobot's
    {"motors": [...]} form); the shards keep both names for the adapter. Names that do not fit the
    vector's length are dropped rather than misattached."""
    root = tmp_path / "named"
    shutil.copytree(FIXTURE, root)
    info = json.loads((root / "meta" / "info.json").read_text())
    info["features"]["action"]["names"] = ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"]
    info["features"]["observation.state"]["names"] = {"motors": [f"joint{i}" for i in range(7)]}
    (root / "meta" / "info.json").write_text(json.dumps(info))
    ingest("lerobot", str(root), str(tmp_path / "shards"), resolution=64, progress=False)
    manifest = FrameShards(tmp_path / "shards").manifest
    assert manifest["action_names"][-1] == "gripper" and manifest["extra"]["state_names"][-1] == "joint6"

    info["features"]["observation.state"]["names"] = ["only", "two"]
    (root / "meta" / "info.json").write_text(json.dumps(info))
    assert LeRobotSource(root).state_names is None


def _as_v21(root: Path) -> Path:
    """The fixture's episodes in LeRobot v2.1's layout: meta/episodes.jsonl, and per episode
    data/chunk-000/episode_NNNNNN.parquet and videos/chunk-000/CAMERA/episode_NNNNNN.mp4 (H.264)."""
    import av
    import pyarrow.parquet as pq

    ingest("lerobot", str(FIXTURE), str(root / "v3_frames"), resolution=64, progress=False)
    frames = FrameShards(root / "v3_frames")
    out = root / "v21"
    info = json.loads((FIXTURE / "meta" / "info.json").read_text())
    info.update(codebase_version="v2.1", data_path="data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
                video_path="videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4")
    (out / "meta").mkdir(parents=True)
    (out / "meta" / "info.json").write_text(json.dumps(info))
    table = pq.read_table(FIXTURE / "data" / "chunk-000" / "file-000.parquet")
    listing = []
    for e in range(len(frames.episodes)):
        rows = table.filter(np.asarray(table["episode_index"].to_numpy() == e))
        (out / "data" / "chunk-000").mkdir(parents=True, exist_ok=True)
        pq.write_table(rows, out / "data" / "chunk-000" / f"episode_{e:06d}.parquet")
        video = out / "videos" / "chunk-000" / "observation.images.top" / f"episode_{e:06d}.mp4"
        video.parent.mkdir(parents=True, exist_ok=True)
        with av.open(str(video), "w") as c:
            stream = c.add_stream("libx264", rate=10, options={"crf": "10"})
            stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
            for img in frames.read(e):
                for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    c.mux(packet)
            for packet in stream.encode():
                c.mux(packet)
        listing.append(json.dumps({"episode_index": e, "tasks": ["t"], "length": rows.num_rows}))
    (out / "meta" / "episodes.jsonl").write_text("\n".join(listing) + "\n")
    return out


def test_a_v21_dataset_reads_the_same_episodes(tmp_path):
    v21 = _as_v21(tmp_path)
    ingest("lerobot", str(v21), str(tmp_path / "from_v21"), resolution=64, progress=False)
    _check_against_expected(FrameShards(tmp_path / "from_v21"))
    (v21 / "meta" / "episodes.jsonl").unlink()
    with pytest.raises(IngestError, match="episodes.jsonl not found"):
        LeRobotSource(v21)


def test_cli_ingests_and_resamples_by_time(tmp_path):
    main(["ingest", "source=lerobot", f"path={FIXTURE}", f"out={tmp_path / 's'}", "fps=5", "progress=false",
          "camera=observation.images.top"])
    shards = FrameShards(tmp_path / "s")
    assert [ep["length"] for ep in shards.episodes] == [6, 7, 8]        # every other frame at 5 fps
    assert shards.read(0, key="actions").shape == (6, 7)


def test_a_missing_camera_key_names_info_json_and_the_cameras(tmp_path):
    with pytest.raises(IngestError, match=r"info.json: no camera 'wrist'.*observation.images.top"):
        LeRobotSource(FIXTURE, camera="wrist")
    broken = tmp_path / "broken"
    shutil.copytree(FIXTURE, broken)
    info = json.loads((broken / "meta" / "info.json").read_text())
    del info["features"]["observation.images.top"]
    (broken / "meta" / "info.json").write_text(json.dumps(info))
    with pytest.raises(SystemExit, match="lists no video feature"):
        main(["ingest", "source=lerobot", f"path={broken}", f"out={tmp_path / 'x'}"])


def test_a_truncated_video_names_the_episode_and_file(tmp_path):
    broken = tmp_path / "trunc"
    shutil.copytree(FIXTURE, broken)
    video = next((broken / "videos").rglob("*.mp4"))
    data = video.read_bytes()
    video.write_bytes(data[: len(data) // 2])
    with pytest.raises(IngestError, match=r"episode \d+: .*file-000.mp4"):
        ingest("lerobot", str(broken), str(tmp_path / "out"), progress=False)


def test_export_to_lerobot_reads_back_with_the_reader(sim_shards, tmp_path):
    import torch
    from robo_genie.eval.metrics import psnr
    main(["export", "format=lerobot", f"path={sim_shards}", f"out={tmp_path / 'lr'}", "progress=false"])
    info = json.loads((tmp_path / "lr" / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["total_episodes"] == 6
    ingest("lerobot", str(tmp_path / "lr"), str(tmp_path / "back"), resolution=32, progress=False)
    original, back = FrameShards(sim_shards), FrameShards(tmp_path / "back")
    assert [e["length"] for e in back.episodes] == [e["length"] for e in original.episodes]
    for e in range(len(original.episodes)):
        assert np.array_equal(back.read(e, key="actions"), original.read(e, key="actions"))
        a, b = (torch.from_numpy(s.read(e)).float() / 255 for s in (original, back))
        assert psnr(a, b).min() > 25                    # AV1 is lossy; a misaligned frame scores far lower
    with pytest.raises(SystemExit, match="already holds a LeRobot dataset"):
        main(["export", "format=lerobot", f"path={sim_shards}", f"out={tmp_path / 'lr'}"])
