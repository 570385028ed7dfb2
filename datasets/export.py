"""Frame shards -> a LeRobot v3.0 dataset (MuJoCo episodes, ingested video, generated rollouts).

Written as lerobot 0.4 lays it out: `meta/info.json`, `meta/episodes/chunk-000/file-000.parquet`
(one row per episode, with its span of the shared video), `meta/tasks.parquet`,
`data/chunk-000/file-000.parquet` (one row per frame) and one AV1 mp4 per camera holding every
episode back to back. Small exports (everything in one file of each kind); lerobot splits large
datasets over several files, which the reader in sources/lerobot.py also handles.
"""

from __future__ import annotations

import json
import os
from fractions import Fraction
from pathlib import Path

import av
import pyarrow as pa
import pyarrow.parquet as pq
from robo_genie.datasets.shards import FrameShards
from robo_genie.progress import progress_bar

CAMERA = "observation.images.main"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"


def export_lerobot(shards_path: str | Path, out: str | Path, *, task: str = "robo_genie episode",
                   progress: bool = True) -> Path:
    shards = FrameShards(shards_path)
    if shards.kind != "frames":
        raise ValueError(f"{shards_path}: export reads frame shards, this is a {shards.kind} shard directory")
    out = Path(out)
    if (out / "meta" / "info.json").exists():
        raise ValueError(f"{out} already holds a LeRobot dataset; choose a new out=")
    fps = float(shards.manifest["fps"])
    size = int(shards.manifest["image_size"])
    has_actions = shards.has("actions")
    video_file = out / VIDEO_PATH.format(video_key=CAMERA, chunk_index=0, file_index=0)
    video_file.parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("SVT_LOG", "1")            # the AV1 encoder's banner: errors only
    rows: dict[str, list] = {k: [] for k in ("timestamp", "frame_index", "episode_index", "index", "task_index")}
    if has_actions:
        rows["action"] = []
    episodes: list[dict] = []
    index = 0
    with av.open(str(video_file), "w") as container:
        rate = Fraction(fps).limit_denominator(1000)
        stream = container.add_stream("libsvtav1", rate=rate)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for e, ep in enumerate(progress_bar(shards.episodes, desc="export", unit="ep", bar=progress)):
            frames = shards.read(e)
            start = index / fps
            for t, frame in enumerate(frames):
                video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
                video_frame.pts = index
                video_frame.time_base = 1 / rate
                container.mux(stream.encode(video_frame))
                rows["timestamp"].append(t / fps)
                rows["frame_index"].append(t)
                rows["episode_index"].append(e)
                rows["index"].append(index)
                rows["task_index"].append(0)
                index += 1
            if has_actions:
                rows["action"].extend(shards.read(e, key="actions").tolist())
            episodes.append({"episode_index": e, "tasks": [task], "length": len(frames),
                             "data/chunk_index": 0, "data/file_index": 0,
                             "dataset_from_index": index - len(frames), "dataset_to_index": index,
                             f"videos/{CAMERA}/chunk_index": 0, f"videos/{CAMERA}/file_index": 0,
                             f"videos/{CAMERA}/from_timestamp": start,
                             f"videos/{CAMERA}/to_timestamp": index / fps,
                             "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0,
                             "source_name": ep["name"]})
        container.mux(stream.encode(None))
    data_file = out / DATA_PATH.format(chunk_index=0, file_index=0)
    data_file.parent.mkdir(parents=True, exist_ok=True)
    columns = {k: pa.array(v, pa.float32() if k == "timestamp" else pa.int64()) for k, v in rows.items() if k != "action"}
    if has_actions:
        width = len(rows["action"][0])
        columns = {"action": pa.array(rows["action"], pa.list_(pa.float32(), width)), **columns}
    pq.write_table(pa.table(columns), data_file)
    (out / "meta" / "episodes" / "chunk-000").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(episodes), out / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    pq.write_table(pa.table({"task_index": [0], "task": [task]}), out / "meta" / "tasks.parquet")
    features = {CAMERA: {"dtype": "video", "shape": [size, size, 3], "names": ["height", "width", "channels"],
                         "info": {"video.height": size, "video.width": size, "video.codec": "av1",
                                  "video.pix_fmt": "yuv420p", "video.fps": fps, "video.channels": 3,
                                  "has_audio": False}},
                **({"action": {"dtype": "float32", "shape": [width],
                               "names": shards.manifest.get("action_names")}} if has_actions else {}),
                **{k: {"dtype": "float32" if k == "timestamp" else "int64", "shape": [1], "names": None}
                   for k in ("timestamp", "frame_index", "episode_index", "index", "task_index")}}
    info = {"codebase_version": "v3.0", "robot_type": "robo_genie", "total_episodes": len(episodes),
            "total_frames": index, "total_tasks": 1, "chunks_size": 1000, "fps": fps,
            "splits": {"train": f"0:{len(episodes)}"}, "data_path": DATA_PATH, "video_path": VIDEO_PATH,
            "features": features}
    (out / "meta" / "info.json").write_text(json.dumps(info, indent=4))
    return out
