"""source=rlds on a tiny dataset with RT-1's exact feature spec, written by tfds with the bucket's
on-disk layout and read through the same `builder_from_directory` path a gs:// URL takes."""

import importlib.util
import json
import os

import numpy as np
import pytest

# TensorFlow itself only ever loads in subprocesses (see datasets/rlds_synthetic.py); here we only ask whether
# it is installed. CI installs the [rlds] extra and sets ROBO_GENIE_REQUIRE_RLDS, so there these
# tests cannot be skipped.
if importlib.util.find_spec("tensorflow_datasets") is None:
    if os.environ.get("ROBO_GENIE_REQUIRE_RLDS"):
        raise ImportError('ROBO_GENIE_REQUIRE_RLDS is set but tensorflow-datasets is missing: pip install -e ".[rlds]"')
    pytest.skip('the [rlds] extra is not installed: pip install -e ".[rlds]"', allow_module_level=True)

from robo_genie.datasets.ingest import ingest
from robo_genie.datasets.rlds_synthetic import action, frame, make_rt1_like, state
from robo_genie.datasets.shards import FrameShards
from robo_genie.datasets.sources import IngestError
from robo_genie.datasets.transforms import center_crop_resize

from robo_genie.cli import main

RT1_ACTION_FIELDS = {"base_displacement_vector": 2, "base_displacement_vertical_rotation": 1,
                     "gripper_closedness_action": 1, "rotation_delta": 3, "terminate_episode": 3, "world_vector": 3}


@pytest.fixture(scope="module")
def rt1(tmp_path_factory):
    return make_rt1_like(tmp_path_factory.mktemp("rlds") / "data", episodes=3, steps=5)


@pytest.fixture(scope="module")
def rt1_corrupt(tmp_path_factory):
    return make_rt1_like(tmp_path_factory.mktemp("rlds_bad") / "data", episodes=3, steps=5, corrupt=(1, 2), short=2)


def test_rt1_episodes_become_shards_with_frames_actions_and_rate(rt1, tmp_path):
    m = ingest("rlds", str(rt1), str(tmp_path / "out"), resolution=32, progress=False)
    assert [e["length"] for e in m["episodes"]] == [5, 5, 5]
    assert m["fps"] == 3.0                              # RT-1's rate, from datasets/oxe.py
    names = m["action_names"]
    assert len(names) == sum(RT1_ACTION_FIELDS.values()) and "world_vector.2" in names
    shards = FrameShards(tmp_path / "out")
    # the robot's state, which the adapter reads: RT-1's tool pose and gripper, in datasets/oxe.py's order
    assert m["extra"]["state_names"] == [*(f"base_pose_tool_reached.{i}" for i in range(7)), "gripper_closed.0"]
    for e in range(3):
        frames, actions = shards.read(e), shards.read(e, key="actions")
        s = state(e, 4)
        assert np.array_equal(shards.read(e, key="states")[4], np.r_[s["base_pose_tool_reached"], s["gripper_closed"]])
        for t in range(5):
            want = center_crop_resize(frame(e, t), 32).astype(int)
            assert np.abs(frames[t].astype(int) - want).mean() < 4        # JPEG + resize tolerance
            a = action(e, t)
            for k, n in RT1_ACTION_FIELDS.items():
                for i in range(n):
                    assert actions[t, names.index(f"{k}.{i}")] == pytest.approx(float(a[k][i]))


def test_a_corrupt_jpeg_names_the_episode_step_and_file_and_skip_keeps_the_rest(rt1_corrupt, tmp_path):
    bad = "fractal20220817_data-train.tfrecord-00000-of-00001__1"          # episode 1 of that TFRecord file
    with pytest.raises(IngestError, match=rf"{bad} step 2 \(.*fractal20220817_data-train\.tfrecord-00000"):
        ingest("rlds", str(rt1_corrupt), str(tmp_path / "fail"), resolution=32, progress=False)
    # what was written before the failure is a valid shard directory
    assert [e["name"] for e in FrameShards(tmp_path / "fail").episodes] == [bad[:-1] + "0"]
    m = ingest("rlds", str(rt1_corrupt), str(tmp_path / "skip"), resolution=32, progress=False, on_error="skip",
               min_frames=2)
    assert [e["name"] for e in m["episodes"]] == [bad[:-1] + "0"]
    reasons = {s["name"]: s["reason"] for s in m["skipped"]}
    assert "cannot be decoded" in reasons[bad]
    assert "fewer than min_frames=2" in reasons[bad[:-1] + "2"]     # the one-step episode


def test_a_missing_camera_key_lists_the_images_there_are(rt1, tmp_path):
    with pytest.raises(IngestError, match="no image feature 'observation/wrist_image'.*observation/image"):
        ingest("rlds", str(rt1), str(tmp_path / "x"), camera="observation/wrist_image", progress=False)
    with pytest.raises(IngestError, match="not a TFDS/RLDS dataset directory"):
        ingest("rlds", str(tmp_path), str(tmp_path / "y"), progress=False)


def test_state_keys_choose_the_robot_state_and_a_missing_one_lists_the_vectors(rt1, tmp_path):
    m = ingest("rlds", str(rt1), str(tmp_path / "grip"), resolution=32, progress=False,
               source_options={"state_keys": ["observation/gripper_closed"]})
    assert m["extra"]["state_names"] == ["gripper_closed.0"]
    assert FrameShards(tmp_path / "grip").read(1, key="states")[:, 0].tolist() == [0, 1, 0, 1, 0]
    m = ingest("rlds", str(rt1), str(tmp_path / "none"), resolution=32, progress=False,
               source_options={"state_keys": []})
    assert "state_names" not in m["extra"] and not FrameShards(tmp_path / "none").has("states")
    with pytest.raises(SystemExit, match="no numeric step feature observation/state;.*observation/gripper_closed"):
        main(["ingest", "source=rlds", f"path={rt1}", f"out={tmp_path / 'x'}", "state_keys=[observation/state]"])


def test_cli_known_dataset_and_mixture_read_a_local_mirror(rt1, tmp_path):
    out = tmp_path / "rt1"
    main(["ingest", "source=rlds", "dataset=rt1", f"path={rt1}", f"out={out}", "resolution=32", "progress=false"])
    assert len(FrameShards(out).episodes) == 3
    # a mixture reads each member at MIRROR/<name>/<version>, writes it to OUT/<name>, and the weights
    mirror = rt1.parent.parent
    mix = tmp_path / "mix"
    main(["ingest", "source=rlds", "mixture=rt1_only", f"path={mirror}", f"out={mix}", "resolution=32",
          "progress=false"])
    spec = json.loads((mix / "mixture.json").read_text())
    assert spec["members"] == [{"path": "fractal20220817_data", "weight": 1.0}]
    assert len(FrameShards(mix / "fractal20220817_data").episodes) == 3
    with pytest.raises(SystemExit, match="unknown mixture"):
        main(["ingest", "source=rlds", "mixture=everything", f"out={tmp_path / 'z'}"])


def test_workers_read_disjoint_slices_of_the_tfrecords(rt1, tmp_path):
    from robo_genie.datasets.ingest import ingest_sliced
    from robo_genie.datasets.loader import open_clips

    manifests = ingest_sliced("rlds", str(rt1), str(tmp_path / "out"), workers=2, resolution=32, progress=False)
    names = sorted(e["name"] for m in manifests for e in m["episodes"])
    assert names == [f"fractal20220817_data-train.tfrecord-00000-of-00001__{i}" for i in range(3)]
    assert len(open_clips(tmp_path / "out", 4)) == 3 * 2


def test_fuzz_tfrecords_and_their_metadata(rt1, tmp_path_factory):
    """Truncated, bit-flipped and garbage TFRecords and TFDS metadata: every case ends in a clean
    ingest, a recorded skip or a one-line error (see tests/test_fuzz.py). Few cases: each one starts
    a TensorFlow reader process."""
    import shutil
    from collections import Counter

    from hypothesis import given, settings
    from hypothesis import strategies as st

    from tests.test_fuzz import SETTINGS, _report, ingest_outcome, mutate, mutations
    base = tmp_path_factory.mktemp("fuzz_rlds")
    files = sorted(p.relative_to(rt1) for p in rt1.iterdir() if p.is_file())
    outcomes, counter = Counter(), {"n": 0}

    @settings(max_examples=10, **SETTINGS)
    @given(target=st.sampled_from(files), mutation=mutations, on_error=st.sampled_from(["fail", "skip"]))
    def case(target, mutation, on_error):
        counter["n"] += 1
        root = base / f"case_{counter['n']}" / "fractal20220817_data" / "0.1.0"
        shutil.copytree(rt1, root)
        (root / target).write_bytes(mutate((root / target).read_bytes(), mutation))
        kind = "tfrecord" if ".tfrecord" in target.name else target.suffix
        outcomes[f"{kind} {ingest_outcome(['source=rlds', f'path={root}', f'on_error={on_error}'], root.parents[1] / 'out', [target.name, str(root), 'episode', 'step'])}"] += 1
        shutil.rmtree(root.parents[1])

    case()
    _report("RLDS", outcomes)
    assert sum(outcomes.values()) == counter["n"] > 0
