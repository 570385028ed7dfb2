"""A synthetic RLDS dataset with RT-1's feature spec (fractal20220817_data 0.1.0), written by tfds
itself with the on-disk layout of the public bucket (dataset_info.json, features.json, TFRecord
shards): what the tests and `robo-genie bench data source=rlds` read.

TensorFlow is loaded in a subprocess (`make_rt1_like`): loading it into a process that holds MuJoCo's
EGL contexts (the test session) crashes."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

H, W = 256, 320                                    # RT-1's camera


def frame(episode: int, step: int) -> np.ndarray:
    """A recognisable picture: a colour per episode and a white square that moves with the step."""
    img = np.zeros((H, W, 3), np.uint8)
    img[:] = [(40 * episode) % 256, 90, (200 - 30 * episode) % 256]
    x = 40 + 24 * step
    img[100:156, x:x + 56] = 255
    return img


def _jpeg(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def rt1_features():
    import tensorflow_datasets as tfds
    F = tfds.features
    vec = lambda n, dt=np.float32: F.Tensor(shape=(n,), dtype=dt)
    return F.FeaturesDict({"steps": F.Dataset({
        "observation": F.FeaturesDict({
            "image": F.Image(shape=(H, W, 3), dtype=np.uint8, encoding_format="jpeg"),
            "natural_language_instruction": F.Text(),
            "natural_language_embedding": vec(512),
            "base_pose_tool_reached": vec(7), "gripper_closed": vec(1),
        }),
        "action": F.FeaturesDict({
            "world_vector": vec(3), "rotation_delta": vec(3), "gripper_closedness_action": vec(1),
            "base_displacement_vector": vec(2), "base_displacement_vertical_rotation": vec(1),
            "terminate_episode": vec(3, np.int32),
        }),
        "reward": F.Scalar(dtype=np.float32),
        "is_first": F.Scalar(dtype=np.bool_), "is_last": F.Scalar(dtype=np.bool_),
        "is_terminal": F.Scalar(dtype=np.bool_),
    })})


def action(episode: int, step: int) -> dict:
    return {"world_vector": np.array([0.01 * step, -0.02, 0.003 * episode], np.float32),
            "rotation_delta": np.array([0.1, 0.0, -0.1 * step], np.float32),
            "gripper_closedness_action": np.array([float(step % 2)], np.float32),
            "base_displacement_vector": np.zeros(2, np.float32),
            "base_displacement_vertical_rotation": np.zeros(1, np.float32),
            "terminate_episode": np.array([0, 1, 0], np.int32)}


def state(episode: int, step: int) -> dict:
    """RT-1's proprioception: the tool's pose (xyz, quaternion) and whether the gripper is closed."""
    return {"base_pose_tool_reached": np.array([0.5, 0.02 * step, 0.1 * episode, 1, 0, 0, 0], np.float32),
            "gripper_closed": np.array([float(step % 2)], np.float32)}


def write_rt1_like(root: str | Path, episodes: int = 3, steps: int = 5,
                   corrupt: tuple[int, int] | None = None, short: int | None = None) -> Path:
    """Returns the dataset directory (ROOT/fractal20220817_data/0.1.0). `corrupt=(episode, step)`
    stores truncated JPEG bytes there; `short=e` gives episode e a single step."""
    import tensorflow_datasets as tfds

    data = []
    for e in range(episodes):
        rows = []
        for t in range(1 if e == short else steps):
            image = _jpeg(frame(e, t))
            if corrupt == (e, t):
                image = image[: len(image) // 3]
            rows.append({"observation": {"image": image, "natural_language_instruction": f"pick object {e}",
                                         "natural_language_embedding": np.zeros(512, np.float32), **state(e, t)},
                         "action": action(e, t), "reward": 0.0, "is_first": t == 0, "is_last": t == steps - 1,
                         "is_terminal": t == steps - 1})
        data.append((f"episode_{e}", {"steps": rows}))
    tfds.dataset_builders.store_as_tfds_dataset(
        name="fractal20220817_data", version="0.1.0", features=rt1_features(), split_datasets={"train": data},
        data_dir=str(root), disable_shuffling=True)
    return Path(root) / "fractal20220817_data" / "0.1.0"


def make_rt1_like(root: str | Path, episodes: int = 3, steps: int = 5, corrupt: tuple[int, int] | None = None,
                  short: int | None = None) -> Path:
    """write_rt1_like in a fresh Python process."""
    args = [sys.executable, "-m", "robo_genie.datasets.rlds_synthetic", str(root), str(episodes), str(steps),
            ",".join(map(str, corrupt)) if corrupt else "-", str(short) if short is not None else "-"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"writing the RLDS fixture failed:\n{done.stderr[-3000:]}")
    return Path(root) / "fractal20220817_data" / "0.1.0"


if __name__ == "__main__":
    root, n, k, bad, short_ep = sys.argv[1:6]
    write_rt1_like(root, int(n), int(k), tuple(map(int, bad.split(","))) if bad != "-" else None,
                   int(short_ep) if short_ep != "-" else None)
