"""RLDS datasets (RT-1, Open X-Embodiment, a lab's own): anything `tfds.builder_from_directory` opens,
a local directory or a `gs://` path through the same code.

An RLDS episode is a record with a nested `steps` dataset; each step holds an observation dict (one
or more cameras), an action (a dict of named vectors, or one vector) and flags. The camera is chosen
by a '/'-separated key (`observation/image` by default). Images are read as their stored bytes
(tfds decoding skipped) and decoded here, so a corrupt JPEG becomes an error that names the episode,
the step and the TFRecord file instead of a TensorFlow stack trace. Actions are flattened to one
float vector per step with named fields (`world_vector.0`, ...), fields in alphabetical order. The
robot's state (proprioception), which the adapter reads, is kept where the dataset has one: the
features `state_keys=` names, concatenated in that order.

TensorFlow is needed only here, at ingest time: `pip install "robo-genie[rlds]"`.
"""

from __future__ import annotations

import io
import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image
from robo_genie.datasets.oxe import DATASETS, native_fps
from robo_genie.datasets.sources.base import IngestError, RawEpisode


def _import_tfds():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")       # TensorFlow's C++ start-up chatter
    try:
        import tensorflow as tf
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise IngestError('source=rlds needs TensorFlow Datasets: pip install "robo-genie[rlds]" '
                          f"(tensorflow-cpu + tensorflow-datasets), then run the ingest again ({e})") from None
    tf.config.set_visible_devices([], "GPU")            # ingest only decodes; keep the GPUs for torch
    tf.get_logger().setLevel("ERROR")
    return tfds


def _get(tree, key: str):
    for part in key.split("/"):
        tree = tree[part]
    return tree


def _is_vector(feat) -> bool:
    """A numeric scalar or 1-D tensor feature (an action field, a state vector)."""
    from tensorflow_datasets.core import features as F

    shape = tuple(getattr(feat, "shape", ()) or ())
    return isinstance(feat, F.Tensor) and np.issubdtype(np.dtype(feat.np_dtype), np.number) and len(shape) <= 1


def _keys(features, wanted, prefix: str = "") -> dict[str, object]:
    """Every feature under a steps feature dict for which `wanted(feature)` holds, by '/'-joined key."""
    from tensorflow_datasets.core import features as F

    out = {}
    for name, feat in features.items():
        key = f"{prefix}{name}"
        if wanted(feat):
            out[key] = feat
        elif isinstance(feat, F.FeaturesDict):
            out |= _keys(feat, wanted, key + "/")
    return out


def _length(feat) -> int:
    shape = tuple(getattr(feat, "shape", ()) or ())
    return int(shape[0]) if shape else 1


def _action_layout(action_feature) -> list[tuple[str, int]]:
    """(name, length) of each numeric action field, in the feature's order."""
    from tensorflow_datasets.core import features as F

    if isinstance(action_feature, F.FeaturesDict):
        items = sorted(action_feature.items())             # by name: one order whatever features.json says
    else:
        items = [("action", action_feature)]
    return [(name, _length(feat)) for name, feat in items if _is_vector(feat)]


def _field_names(layout: list[tuple[str, int]]) -> list[str]:
    """One name per value of a flattened (key, length) layout: the key's last part and the index."""
    return [f"{key.rsplit('/', 1)[-1]}.{i}" for key, length in layout for i in range(length)]


def _flat(step, keys: list[str]) -> np.ndarray:
    """One step's named vectors (e.g. the robot-state features), concatenated."""
    return np.concatenate([np.asarray(_get(step, k), np.float32).reshape(-1) for k in keys])


def _flat_action(action, layout: list[tuple[str, int]]) -> np.ndarray:
    """One step's action (a dict of named vectors, or one vector) as a flat float vector."""
    if not isinstance(action, dict):
        return np.asarray(action, np.float32).reshape(-1)
    return _flat(action, [name for name, _ in layout])


class _Reader:
    """The TensorFlow side, run in its own process (see RLDSSource)."""

    def __init__(self, path: str, camera: str | None, split: str, state_keys: list[str] | None):
        tfds = _import_tfds()
        self.tfds, self.path, self.split = tfds, path, split
        try:
            self.builder = tfds.builder_from_directory(path)
        except Exception as e:  # noqa: BLE001 - tfds raises OSError, ValueError or TF's own errors here
            if "://" in path:
                raise IngestError(f"{path}: could not open it ({type(e).__name__}: {str(e).splitlines()[0]}). Check "
                                  f"network access (and for gs://, credentials), or copy it once with "
                                  f"`gsutil -m cp -r {path} LOCAL_DIR` and pass path=LOCAL_DIR") from None
            raise IngestError(f"{path}: not a TFDS/RLDS dataset directory (it needs dataset_info.json and "
                              f"features.json beside the TFRecord files, e.g. .../fractal20220817_data/0.1.0): "
                              f"{type(e).__name__}: {e}") from None
        features = self.builder.info.features
        if "steps" not in features.keys():  # noqa: SIM118 (FeaturesDict has no __contains__)
            raise IngestError(f"{path}: has no 'steps' feature, so it is not RLDS (episodes of steps)")
        self.step_features = features["steps"].feature
        cameras = list(_keys(self.step_features, lambda f: isinstance(f, tfds.features.Image)))
        self.camera = camera or "observation/image"
        if self.camera not in cameras:
            raise IngestError(f"{path}: no image feature {self.camera!r}; its images are "
                              f"{', '.join(cameras) or 'none'} (choose one with image_key=...)")
        if split not in self.builder.info.splits:
            raise IngestError(f"{path}: no split {split!r}; it has {', '.join(self.builder.info.splits)}")
        self.layout = _action_layout(self.step_features["action"]) if "action" in self.step_features.keys() else []  # noqa: SIM118
        self.states = self._state_layout(state_keys)

    def _state_layout(self, wanted: list[str] | None) -> list[tuple[str, int]]:
        """(key, length) of the robot-state features to keep. By default the known dataset's
        (datasets/oxe.py), else observation/state, where the dataset has them."""
        vectors = _keys(self.step_features, _is_vector)
        if wanted is None:
            known = DATASETS.get(self.builder.info.name)
            default = list(known.state_keys) if known and known.state_keys else ["observation/state"]
            wanted = default if all(k in vectors for k in default) else []
        missing = [k for k in wanted if k not in vectors]
        if missing:
            raise IngestError(f"{self.path}: no numeric step feature {', '.join(missing)}; its vectors are "
                              f"{', '.join(vectors) or 'none'} (choose with state_keys=[...], or state_keys=[] for none)")
        return [(k, _length(vectors[k])) for k in wanted]

    def describe(self) -> dict:
        return {"name": self.builder.info.name, "camera": self.camera, "layout": self.layout, "states": self.states,
                "data_dir": str(self.builder.data_dir)}

    def _skip_decoding(self, parts: list[str]) -> dict:
        return {parts[0]: self.tfds.decode.SkipDecoding()} if len(parts) == 1 else {parts[0]: self._skip_decoding(parts[1:])}

    def episodes(self, num_shards: int = 1, shard_index: int = 0) -> Iterator[tuple]:
        """(tfds id, image bytes, actions or None, states or None) per episode."""
        # A slice is read with tfds's own split slicing, so a worker reads only its records.
        split = self.tfds.even_splits(self.split, n=num_shards)[shard_index] if num_shards > 1 else self.split
        ds = self.builder.as_dataset(split=split, decoders={"steps": self._skip_decoding(self.camera.split("/"))},
                                     shuffle_files=False, read_config=self.tfds.ReadConfig(add_tfds_id=True))
        state_keys = [k for k, _ in self.states]
        for episode in self.tfds.as_numpy(ds):
            tfds_id = episode.get("tfds_id", b"")
            tfds_id = tfds_id.decode() if isinstance(tfds_id, bytes) else str(tfds_id)
            steps = list(episode["steps"])
            images = [bytes(_get(step, self.camera)) for step in steps]
            actions = np.stack([_flat_action(s["action"], self.layout) for s in steps]) if self.layout else None
            states = np.stack([_flat(s, state_keys) for s in steps]) if state_keys else None
            yield tfds_id, images, actions, states


def _serve(path: str, camera: str | None, split: str, state_keys: list[str] | None, queue, control) -> None:
    """Child process: describe the dataset, wait for the slice to read, then stream its episodes (the
    queue bounds memory)."""
    try:
        reader = _Reader(path, camera, split, state_keys)
        queue.put(("meta", reader.describe()))
        request = control.get()
        if request is None:
            return
        for item in reader.episodes(*request):
            queue.put(("episode", item))
        queue.put(("end", None))
    except IngestError as e:
        queue.put(("error", str(e)))
    except Exception as e:  # noqa: BLE001 - anything TensorFlow raises reaches the parent as a message
        queue.put(("error", f"{path}: reading the TFRecords failed: {type(e).__name__}: {e}"))


class RLDSSource:
    """TensorFlow runs in a child process: loading it into a process that already holds an EGL
    context (MuJoCo rendering, as in the test session or a notebook) crashed with a segfault, and a
    child also keeps TensorFlow's threads and memory out of the ingest. The parent decodes images."""

    name = "rlds"

    def __init__(self, path: str | Path, camera: str | None = None, split: str = "train",
                 fps: float | None = None, state_keys: list[str] | None = None):
        import multiprocessing as mp

        self.path, self.split = str(path), split
        ctx = mp.get_context("spawn")
        self._queue, self._control = ctx.Queue(maxsize=4), ctx.Queue()
        self._process = ctx.Process(target=_serve, args=(self.path, camera, split, None if state_keys is None else list(state_keys),
                                                              self._queue, self._control),
                                    daemon=True)
        self.slice = (1, 0)
        self._process.start()
        kind, meta = self._next()
        if kind == "error":
            self.close()
            raise IngestError(meta)
        self.camera, self.layout = meta["camera"], [tuple(x) for x in meta["layout"]]
        self.data_dir = meta["data_dir"] if "://" not in self.path else self.path
        self.fps = fps or native_fps(meta["name"])
        self.action_names = _field_names(self.layout) or None
        self.state_names = _field_names(meta["states"])

    def _next(self):
        import queue

        while True:
            try:
                return self._queue.get(timeout=5)
            except queue.Empty:
                if not self._process.is_alive():
                    raise IngestError(f"{self.path}: the TensorFlow reader process died (exit code "
                                      f"{self._process.exitcode})") from None

    def select_slice(self, num_shards: int, shard_index: int) -> None:
        """Read only slice `shard_index` of `num_shards` (ingest calls this instead of filtering)."""
        self.slice = (num_shards, shard_index)

    def close(self) -> None:
        if self._process.is_alive():
            self._process.terminate()
        self._process.join(timeout=10)

    def episodes(self) -> Iterator[RawEpisode]:
        self._control.put(self.slice)
        try:
            for i in itertools.count():
                kind, item = self._next()
                if kind == "end":
                    return
                if kind == "error":
                    raise IngestError(item)
                tfds_id, images, actions, states = item
                # tfds_id is "<file>__<index in file>": a name that stays the same whatever slice
                # reads it (resume), and the TFRecord file the episode is in.
                file = f"{self.data_dir}/{tfds_id.rsplit('__', 1)[0]}" if tfds_id else f"{self.data_dir} ({self.split}[{i}])"
                name = tfds_id or f"{self.split}_{i:06d}"
                yield RawEpisode(name=name, file=file, frames=self._frames(images, name, file), fps=self.fps,
                                 actions=actions, states=states)
        finally:
            self.close()

    def _frames(self, images: list[bytes], name: str, file: str) -> Iterator[tuple[float, np.ndarray]]:
        rate = self.fps or 1.0
        for t, raw in enumerate(images):
            try:
                img = Image.open(io.BytesIO(raw))
                img.load()
            except (OSError, ValueError, SyntaxError) as e:      # PIL's ways of saying "not an image"
                raise IngestError(f"{name} step {t} ({file}): the {self.camera} image cannot be decoded "
                                  f"({type(e).__name__}: {e}); the record is corrupt (on_error=skip leaves such "
                                  f"episodes out and lists them in the manifest)") from None
            yield t / rate, np.asarray(img.convert("RGB"))
