import av
import numpy as np
import pytest
from PIL import Image
from robo_genie.datasets.ingest import ingest
from robo_genie.datasets.shards import FrameShards
from robo_genie.datasets.sources import IngestError

from robo_genie.cli import main


def _write_mp4(path, n=20, fps=10, w=96, h=64):
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for i in range(n):
            img = np.zeros((h, w, 3), np.uint8)
            img[:, :, 0] = 40 + 8 * i                  # brightness ramps with time
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def test_video_folder_ingest_resizes_and_resamples(tmp_path):
    src = tmp_path / "videos"
    src.mkdir()
    _write_mp4(src / "a.mp4", n=20, fps=10)
    seq = src / "seq1"
    seq.mkdir()
    for i in range(5):
        Image.fromarray(np.full((40, 50, 3), 30 * i, np.uint8)).save(seq / f"{i:03d}.png")
    m = ingest("video_folder", str(src), str(tmp_path / "out"), resolution=32, progress=False)
    assert [e["name"] for e in m["episodes"]] == ["a.mp4", "seq1"]
    assert [e["length"] for e in m["episodes"]] == [20, 5]
    shards = FrameShards(tmp_path / "out")
    frames = shards.read(0)
    assert frames.shape == (20, 32, 32, 3)
    assert frames[10, 16, 16, 0] > frames[2, 16, 16, 0] + 40    # time order kept
    half = ingest("video_folder", str(src), str(tmp_path / "half"), fps=5, resolution=32, progress=False)
    assert half["episodes"][0]["length"] == 10


def test_unreadable_video_names_the_file(tmp_path):
    src = tmp_path / "videos"
    src.mkdir()
    (src / "broken.mp4").write_bytes(b"this is not a video" * 100)
    with pytest.raises(IngestError, match="broken.mp4"):
        ingest("video_folder", str(src), str(tmp_path / "out"), progress=False)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_empty_folder_names_the_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(IngestError, match=r"empty: no videos"):
        ingest("video_folder", str(tmp_path / "empty"), str(tmp_path / "out"), progress=False)


def test_cli_reports_bad_input_without_a_traceback(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as e:
        main(["ingest", "source=video_folder", f"path={tmp_path / 'empty'}", f"out={tmp_path / 'o'}"])
    assert "no videos" in str(e.value.code) and "empty" in str(e.value.code)


def test_on_error_skip_leaves_bad_episodes_out_and_lists_them(tmp_path):
    src = tmp_path / "videos"
    src.mkdir()
    _write_mp4(src / "good.mp4", n=12)
    _write_mp4(src / "short.mp4", n=3)
    (src / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))      # not a video
    with pytest.raises(IngestError, match="broken.mp4"):
        ingest("video_folder", str(src), str(tmp_path / "strict"), resolution=32, progress=False)
    main(["ingest", f"path={src}", f"out={tmp_path / 'out'}", "resolution=32", "on_error=skip", "min_frames=8",
          "progress=false"])
    manifest = FrameShards(tmp_path / "out").manifest
    assert [e["name"] for e in manifest["episodes"]] == ["good.mp4"]
    reasons = {s["name"]: s["reason"] for s in manifest["skipped"]}
    assert set(reasons) == {"broken.mp4", "short.mp4"}
    assert "broken.mp4" in reasons["broken.mp4"] and "min_frames=8" in reasons["short.mp4"]


def test_on_error_skip_with_lerobot_goes_on_after_a_bad_episode(tmp_path):
    import json
    import shutil
    from pathlib import Path
    fixture = Path(__file__).parent / "fixtures" / "lerobot_v30_tiny"
    broken = tmp_path / "lr"
    shutil.copytree(fixture, broken)
    info = json.loads((broken / "meta" / "info.json").read_text())
    info["video_path"] = info["video_path"].replace("file-", "FILE-")      # metadata pointing at no video
    (broken / "meta" / "info.json").write_text(json.dumps(info))
    with pytest.raises(IngestError, match="episode 0: video .*FILE-000.mp4 .* missing"):
        ingest("lerobot", str(broken), str(tmp_path / "a"), progress=False)
    with pytest.raises(IngestError, match=r"no usable episodes \(3 skipped"):
        ingest("lerobot", str(broken), str(tmp_path / "b"), progress=False, on_error="skip")


def test_a_rerun_into_the_same_out_reads_only_what_is_new(tmp_path):
    src = tmp_path / "videos"
    src.mkdir()
    _write_mp4(src / "a.mp4", n=6)
    _write_mp4(src / "b.mp4", n=7)
    ingest("video_folder", str(src), str(tmp_path / "out"), resolution=32, shard_frames=1, progress=False)
    first = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").glob("shard_*.safetensors")}
    _write_mp4(src / "c.mp4", n=8)                      # the recording session went on
    m = ingest("video_folder", str(src), str(tmp_path / "out"), resolution=32, shard_frames=1, progress=False)
    assert [(e["name"], e["length"]) for e in m["episodes"]] == [("a.mp4", 6), ("b.mp4", 7), ("c.mp4", 8)]
    assert all((tmp_path / "out" / n).stat().st_mtime_ns == t for n, t in first.items())   # not rewritten
    assert FrameShards(tmp_path / "out").read(2).shape == (8, 32, 32, 3)
    with pytest.raises(IngestError, match="already holds shards from"):
        ingest("video_folder", str(tmp_path), str(tmp_path / "out"), resolution=32, progress=False)


def test_slices_over_workers_and_machines_cover_every_episode_once_and_train_as_one(tmp_path):
    from robo_genie.datasets.ingest import ingest_sliced
    from robo_genie.datasets.loader import open_clips

    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(5):
        _write_mp4(videos / f"ep{i}.mp4", n=8)
    out = tmp_path / "out"
    # two machines x two worker processes = four slices; machine 1 first, then machine 0
    for machine in (1, 0):
        ingest_sliced("video_folder", str(videos), str(out), workers=2, num_shards=2, shard_index=machine,
                      resolution=32, progress=False)
    slices = sorted(p.name for p in out.iterdir())
    assert slices == [f"slice_{k:05d}-of-00004" for k in range(4)]
    names = [e["name"] for s in slices for e in FrameShards(out / s).episodes]
    assert sorted(names) == [f"ep{i}.mp4" for i in range(5)]            # each exactly once
    clips = open_clips(out, 4)                                           # the folder of slices reads as one
    assert len(clips) == 5 * (8 - 4 + 1)
    with pytest.raises(IngestError, match="shard_index"):
        ingest_sliced("video_folder", str(videos), str(tmp_path / "x"), num_shards=2, shard_index=2)


def test_the_square_policy_is_explicit(tmp_path):
    from robo_genie.datasets.transforms import to_square

    img = np.zeros((64, 128, 3), np.uint8)           # wide: left half red, right half blue
    img[:, :64, 0] = 255
    img[:, 64:, 2] = 255
    crop = to_square(img, 32)                        # centre square: the middle, half red half blue
    assert crop[:, :15, 0].min() == 255 and crop[:, 17:, 2].min() == 255
    pad = to_square(img, 32, "pad")                  # the whole view in the middle 16 rows, black bars
    assert pad[:8].max() == 0 and pad[-8:].max() == 0 and pad[12:20, :15, 0].min() == 255
    stretch = to_square(img, 32, "stretch")          # all of it, squeezed sideways
    assert stretch[:, :15, 0].min() == 255 and stretch[0, :, :].any(axis=-1).all()
    videos = tmp_path / "v"
    videos.mkdir()
    _write_mp4(videos / "a.mp4", n=4)
    m = ingest("video_folder", str(videos), str(tmp_path / "out"), resolution=32, crop="pad", progress=False)
    assert m["extra"]["crop"] == "pad"
    assert FrameShards(tmp_path / "out").read(0)[0, :4].max() < 20      # letterbox bars (96x64 source)
    with pytest.raises(IngestError, match="crop='zoom'"):
        ingest("video_folder", str(videos), str(tmp_path / "o2"), crop="zoom", progress=False)


def test_mixed_resolutions_in_one_episode_are_each_brought_to_the_training_size(tmp_path):
    folder = tmp_path / "imgs" / "episode_a"
    folder.mkdir(parents=True)
    for i, (w, h) in enumerate([(64, 48), (200, 100), (33, 90)]):
        Image.fromarray(np.full((h, w, 3), 60 * (i + 1), np.uint8)).save(folder / f"{i:03d}.png")
    ingest("video_folder", str(tmp_path / "imgs"), str(tmp_path / "out"), resolution=32, progress=False)
    frames = FrameShards(tmp_path / "out").read(0)
    assert frames.shape == (3, 32, 32, 3)
    assert [int(f.mean()) for f in frames] == [60, 120, 180]
