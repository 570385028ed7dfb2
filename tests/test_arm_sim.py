"""The arm scenes: deformables that deform, scripted behaviours that do what they are named for,
per-pixel segmentation, and shards that carry all of it."""

import numpy as np
import pytest
from robo_genie.datasets.shards import FrameShards, ShardError
from robo_genie.sim.generate import generate
from robo_genie.sim.scenes import SCENES
from robo_genie.sim.teleop import ACTION_NAMES, BEHAVIOURS, OBJECT_NAMES, STATE_NAMES, STEP_M, ArmSim


@pytest.fixture(scope="module")
def sims():
    return {scene: ArmSim(scene, 32) for scene in SCENES}


def test_episodes_are_deterministic_in_the_seed_and_differ_between_seeds(sims):
    sim = sims["cloth"]
    a, b, c = sim.episode(5, 6), sim.episode(5, 6), sim.episode(6, 6)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.segmentation, b.segmentation)
    assert np.abs(a.frames[0].astype(int) - c.frames[0].astype(int)).mean() > 5   # colours, poses, camera
    assert a.frames.shape == (6, 32, 32, 3) and a.actions.shape == (6, len(ACTION_NAMES))
    assert a.states.shape == (6, len(STATE_NAMES)) and a.segmentation.shape == (6, 32, 32)
    assert a.objects.shape == (6, len(OBJECT_NAMES)) and a.objects[0, -1] == 0


@pytest.mark.parametrize("scene", SCENES)
def test_segmentation_marks_the_robot_and_the_target_where_they_are_drawn(sims, scene):
    sim = sims[scene]
    ep = sim.episode(11, 2)
    seg, frame = ep.segmentation[0], ep.frames[0].astype(float)
    assert (seg == 1).sum() > 10 and (seg == 2).sum() > 5
    # The pixels labelled target have the target's hue (chromaticity survives shading), not the table's.
    m = sim.model
    target_rgba = m.flex_rgba[0] if m.nflex else m.geom_rgba[m.body_geomadr[sim.rigid[sim.shape]]]
    table_rgba = m.geom_rgba[sim.table]

    def chroma(rgb):
        rgb = np.asarray(rgb, float)[..., :3]
        return rgb / rgb.sum(-1, keepdims=True).clip(1e-6)
    seen = chroma(np.median(frame[seg == 2], axis=0))
    assert np.abs(seen - chroma(target_rgba)).sum() < np.abs(seen - chroma(table_rgba)).sum()
    robot = chroma(np.median(frame[seg == 1], axis=0))               # grey links and dark fingers
    assert np.abs(robot - 1 / 3).max() < 0.1


@pytest.mark.parametrize("scene", SCENES)
def test_lift_corner_raises_part_of_the_target(sims, scene):
    ep = sims[scene].episode(3, 28, behaviour="lift_corner")
    top = ep.objects[:, OBJECT_NAMES.index("target_top")]
    assert top.max() > top[0] + 0.05
    assert ep.actions[:, 6].max() == 1.0                     # the gripper closed
    assert np.abs(ep.actions[:, :3]).max() <= STEP_M + 1e-6
    assert (ep.labels[:-1] == BEHAVIOURS.index("lift_corner")).all() and ep.labels[-1] == -1


def test_deformables_change_shape_under_a_lift_and_the_rigid_counterpart_does_not(sims):
    deformation = {scene: sims[scene].episode(3, 28, behaviour="lift_corner", shape="rod").objects[:, -1].max()
                   for scene in SCENES}
    assert deformation["rigid"] < 1e-3
    for scene in ("cloth", "rope"):                 # they hang from the lifted corner
        assert deformation[scene] > 0.01, deformation
    assert deformation["soft"] > 0.002, deformation     # a stiff soft body bends a little


@pytest.mark.parametrize("scene", ["rigid", "soft"])
def test_push_moves_the_target(sims, scene):
    xy = sims[scene].episode(8, 30, behaviour="push", shape="block").objects[:, :2]
    assert np.linalg.norm(xy[-1] - xy[0]) > 0.02


def test_generate_writes_states_segmentation_and_extra_cameras_and_resumes(tmp_path):
    out = tmp_path / "cloth"
    generate(out, episodes=2, episode_len=4, resolution=32, scene="cloth", cameras=["front", "side"], progress=False)
    shards = FrameShards(out)
    assert shards.manifest["label_names"] == list(BEHAVIOURS)
    assert shards.manifest["extra"]["state_names"] == list(STATE_NAMES)
    assert shards.read(1, key="segmentation").shape == (4, 32, 32)
    assert shards.read(1, key="states").shape == (4, len(STATE_NAMES))
    assert shards.read(1, key="objects").shape == (4, len(OBJECT_NAMES))
    side, front = shards.read(1, key="frames_side"), shards.read(1)
    assert side.shape == front.shape and not np.array_equal(side, front)
    first = shards.read(0).copy()
    # a rerun asking for more continues: the two episodes already there are kept, not redone
    generate(out, episodes=3, episode_len=4, resolution=32, scene="cloth", cameras=["front", "side"], progress=False)
    shards = FrameShards(out)
    assert [e["name"] for e in shards.episodes] == ["ep0", "ep1", "ep2"]
    assert np.array_equal(shards.read(0), first)
    with pytest.raises(ShardError, match="other settings"):
        generate(out, episodes=3, episode_len=4, resolution=32, scene="rope", progress=False)


def test_mix_cycles_through_the_arm_scenes(tmp_path):
    m = generate(tmp_path / "mix", episodes=4, episode_len=2, resolution=32, scene="mix", progress=False)
    assert m["source"] == "mujoco_mix" and len(m["episodes"]) == 4


def test_unknown_scene_and_camera_are_named():
    with pytest.raises(ValueError, match="cloth, rope, soft, rigid"):
        ArmSim("towel")
    with pytest.raises(ValueError, match="front, side, top"):
        ArmSim("cloth", cameras=("wrist",))
