import numpy as np
from robo_genie.datasets.shards import FrameShards
from robo_genie.sim import tabletop


def test_episodes_are_deterministic_and_varied():
    sim = tabletop.TabletopSim(32)
    a, b, c = sim.episode(1, 6), sim.episode(1, 6), sim.episode(2, 6)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.labels, b.labels)
    assert np.abs(a.frames[0].astype(int) - c.frames[0].astype(int)).mean() > 5   # other colours/poses
    assert a.frames.shape == (6, 32, 32, 3) and a.frames.dtype == np.uint8


def test_actions_and_labels_describe_the_scripted_motion():
    sim = tabletop.TabletopSim(32)
    ep = sim.episode(3, 20)
    assert ep.labels[-1] == -1 and (ep.actions[-1] == 0).all()
    for label, action in zip(ep.labels[:-1], ep.actions[:-1]):
        direction = tabletop._DIRECTIONS[label]
        assert np.allclose(action[:3], tabletop.STEP_M * direction)
    # the gripper really moves: consecutive frames differ
    diffs = np.abs(np.diff(ep.frames.astype(int), axis=0)).sum(axis=(1, 2, 3))
    assert (diffs > 0).all()


def test_generated_shards_carry_actions_labels_and_the_robot_state(sim_shards):
    shards = FrameShards(sim_shards)
    assert len(shards.episodes) == 6 and shards.manifest["label_names"] == list(tabletop.PRIMITIVES)
    actions, states = shards.read(0, key="actions"), shards.read(0, key="states")
    assert actions.shape == (12, 7) and states.shape == (12, 3)
    assert shards.read(0).shape == (12, 32, 32, 3)
    # the state is the gripper's position: each command moves it by its xyz, from where the simulator starts
    assert np.allclose(np.diff(states, axis=0), actions[:-1, :3], atol=1e-6)
    assert shards.manifest["extra"]["state_names"] == list(tabletop.STATE_NAMES)
    sim = tabletop.TabletopSim(32)
    sim.reset(int(shards.episodes[0]["name"][2:]))
    assert np.allclose(sim.robot_state(), states[0], atol=1e-6)


def test_a_script_without_a_main_guard_fails_with_advice_instead_of_hanging(tmp_path):
    import subprocess
    import sys
    script = tmp_path / "make_data.py"
    script.write_text("from robo_genie.sim.generate import generate\n"
                      f"generate({str(tmp_path / 'out')!r}, episodes=4, episode_len=4, resolution=32, workers=2, progress=False)\n")
    done = subprocess.run([sys.executable, str(script)], check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "__main__" in done.stderr
    # the failed run left a manifest without episodes; the script, fixed as advised, resumes into it
    script.write_text("from robo_genie.sim.generate import generate\n"
                      "if __name__ == '__main__':\n"
                      f"    generate({str(tmp_path / 'out')!r}, episodes=4, episode_len=4, resolution=32, workers=2, "
                      "progress=False)\n")
    done = subprocess.run([sys.executable, str(script)], check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(FrameShards(tmp_path / "out").episodes) == 4


def test_gripper_step_scales_the_moves_and_is_recorded(tmp_path):
    from robo_genie.sim.generate import generate
    m = generate(tmp_path / "big", episodes=1, episode_len=6, resolution=32, progress=False, gripper_step=0.044)
    actions = FrameShards(tmp_path / "big").read(0, key="actions")[:-1, :3]
    assert np.allclose(np.linalg.norm(actions, axis=1), 0.044) and m["extra"]["gripper_step"] == 0.044
    default = generate(tmp_path / "default", episodes=1, episode_len=6, resolution=32, progress=False)
    assert "gripper_step" not in default["extra"]     # folders made before the setting still match
    import pytest
    with pytest.raises(ValueError, match="gripper_step"):
        generate(tmp_path / "arm", episodes=1, scene="cloth", gripper_step=0.044, progress=False)
