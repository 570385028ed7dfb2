"""The latent-to-real action adapter: it recovers a known code->command map, belongs to one bundle,
refuses shards without actions, and drives MuJoCo in closed loop through the policy wrapper."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from robo_genie.adapter import Adapter, AdapterError, LatentPolicy
from robo_genie.adapter.jobs import fit, offline_metrics
from robo_genie.adapter.policy import cem, frame_similarity
from robo_genie.adapter.pseudo_labels import fit_inverse_dynamics
from robo_genie.adapter.transitions import Transitions, read_transitions, state_observation
from robo_genie.cli import main
from robo_genie.datasets.shards import FrameShards, ShardWriter
from robo_genie.play import World
from robo_genie.sim.tabletop import TabletopSim
from robo_genie.sim.teleop import ArmSim


@pytest.fixture(scope="module")
def world(micro_run):
    return World.from_bundle(micro_run / "bundle", "cpu")


def _one_to_one(world, n: int = 400, seed: int = 0) -> tuple[Transitions, np.ndarray]:
    """Transitions whose command is a fixed function of the code (plus a little noise)."""
    rng = np.random.default_rng(seed)
    table = rng.normal(0, 0.02, (world.num_actions, 7)).astype(np.float32)
    table[:, 6] = np.arange(world.num_actions) % 2               # gripper: closed for odd codes
    codes = rng.integers(world.num_actions, size=n)
    actions = table[codes] + rng.normal(0, 1e-4, (n, 7)).astype(np.float32)
    features = rng.normal(size=(n, 16)).astype(np.float32)        # observations that say nothing
    return Transitions(codes, features, actions, np.arange(n) // 20), table


@pytest.mark.parametrize("kind", ["lookup", "learned"])
def test_both_kinds_recover_a_one_to_one_map_and_its_inverse(world, kind):
    train, table = _one_to_one(world)
    test, _ = _one_to_one(world, 200, seed=1)
    test.actions = table[test.codes]
    adapter = Adapter.fit(kind, train, world, ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"])
    pred = adapter.predict(np.arange(world.num_actions), test.features[:world.num_actions])
    assert np.abs(pred - table).max() < 2e-3
    m = offline_metrics(adapter, test)
    assert m["direction_cosine"] > 0.99 and m["gripper_accuracy"] == 1.0 and m["inverse_accuracy"] == 1.0
    sampled = adapter.predict(test.codes[:20], test.features[:20], sample=True, rng=np.random.default_rng(0))
    assert np.abs(sampled - table[test.codes[:20]]).max() < 1e-3          # u ~ D[a]: a real action of that code


NAMES = ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"]


def _state_flips(world, seed: int) -> tuple[Transitions, Transitions, np.ndarray]:
    """800 training and 300 test transitions whose command, per code, flips with the sign of a state
    value (as an arm's up and away can look alike from one camera); each command moves the state by
    ten times itself. The state's last change says nothing here. Also returns each code's move."""
    rng = np.random.default_rng(seed)
    moves = rng.normal(0, 0.02, (world.num_actions, 3)).astype(np.float32)

    def data(n):
        codes, state = rng.integers(world.num_actions, size=n), rng.normal(size=(n, 3)).astype(np.float32)
        actions = np.zeros((n, 7), np.float32)
        actions[:, :3] = moves[codes] * np.sign(state[:, :1])
        change = 0.1 * rng.normal(size=(n, 3)).astype(np.float32)
        return Transitions(codes, np.c_[state, change], actions, np.arange(n) // 20, "state",
                           np.c_[state + 10 * actions[:, :3], 10 * actions[:, :3]])
    return data(800), data(300), moves


def test_learned_reads_the_robot_state_where_the_command_depends_on_it(world):
    """The lookup's mean of a code's two flipped moves is no direction at all; `learned` reads the state."""
    train, test, moves = _state_flips(world, 0)
    lookup, learned = (Adapter.fit(k, train, world, NAMES) for k in ("lookup", "learned"))
    assert learned.reads_state and not lookup.reads_state
    assert offline_metrics(lookup, test)["direction_cosine"] < 0.3 < 0.6 < offline_metrics(learned, test)["direction_cosine"]
    with pytest.raises(AdapterError, match="state= with its 3 values"):
        learned.to_robot(0, np.zeros((32, 32, 3), np.uint8))
    flipped = [learned.to_robot(1, None, state=[s, 0, 0])["action"][:3] for s in (1.0, -1.0)]
    cosines = [f @ moves[1] / (np.linalg.norm(f) * np.linalg.norm(moves[1])) for f in flipped]
    assert cosines[0] > 0.5 and cosines[1] < -0.5, cosines


def test_a_fit_is_reproducible_and_its_ensemble_members_differ(world):
    """The same data and seed give the same adapter, whatever the caller's random state (the networks'
    starting weights once came from it, and two fits of one draw strayed 0.49 and 0.52 of random's
    error in replay); the ensemble's members start apart, or it would be one network five times."""
    train, _, _ = _state_flips(world, 0)
    torch.manual_seed(1)
    a = Adapter.fit("learned", train, world, NAMES, seed=3)
    caller = torch.random.get_rng_state()
    b = Adapter.fit("learned", train, world, NAMES, seed=3)
    assert torch.equal(caller, torch.random.get_rng_state())           # the caller's RNG untouched
    assert all(torch.equal(a.t[k], b.t[k]) for k in a.t)
    first, second = (m[2].weight for m in a.forward_net.members[:2])
    assert not torch.allclose(first, second)


def test_learned_learns_from_unlabelled_episodes_through_how_their_state_moved(world):
    """The same state-dependent commands: two labelled episodes show too few of them, but an
    inverse-dynamics map fitted on those two labels the other 38 from their states, and the networks
    train on all 40. The unlabelled episodes' commands are never read."""
    train, test, _ = _state_flips(world, 1)
    labelled = train.subset(train.episodes < 2)
    unlabelled = train.subset(train.episodes >= 2)
    unlabelled.actions[:] = np.nan                    # a command read from here would poison the fit
    few = Adapter.fit("learned", labelled, world, NAMES)
    many = Adapter.fit("learned", labelled, world, NAMES, unlabelled=unlabelled)
    assert many.info["pseudo_labelled_transitions"] == 760 and int(many.t["code_counts"].sum()) == 40
    assert np.isfinite(many.t["sample_actions"].numpy()).all()       # the lookup keeps to real labels
    few_cos, many_cos = (offline_metrics(a, test)["direction_cosine"] for a in (few, many))
    assert many_cos > 0.6 and many_cos > few_cos + 0.3, (few_cos, many_cos)


def test_pseudo_labels_ignore_a_value_fixed_within_each_episode():
    """The tabletop gripper's depth is fixed within an episode and differs between them, so two
    labelled episodes that happen to share one show it barely varying. The inverse-dynamics map must
    not read commands from it on the other episodes, and a command that never changes (the gripper,
    always closed) stays itself."""
    rng = np.random.default_rng(0)
    parts = []
    for e, depth in enumerate([0.010, 0.012] + list(rng.uniform(-0.15, 0.15, 28))):
        moves = rng.normal(0, 0.02, (20, 3)) * [1, 0, 1]
        obs = state_observation(np.cumsum(np.r_[[[0.0, depth, 0.1]], moves], 0))
        actions = np.c_[moves, np.zeros((20, 3)), np.ones(20)].astype(np.float32)
        parts.append(Transitions(np.zeros(20, int), obs[:-1], actions, np.full(20, e), "state", obs[1:]))
    data = Transitions.concatenate(parts)
    labelled, unlabelled = data.subset(data.episodes < 2), data.subset(data.episodes >= 2)
    guessed = fit_inverse_dynamics(labelled, unlabelled)(unlabelled)
    p, t = guessed[:, :3], unlabelled.actions[:, :3]
    cosine = (p * t).sum(1) / (np.linalg.norm(p, axis=1) * np.linalg.norm(t, axis=1))
    assert cosine.mean() > 0.95 and np.allclose(guessed[:, 6], 1.0, atol=1e-4), (cosine.mean(), guessed[:, 6].min())


def test_learned_reads_how_the_robot_was_moving(world):
    """Commands that carry on the robot's last motion (as a teleoperator's do), under codes that say
    nothing: the lookup has no direction to give, `learned` reads the state's change since the step
    before, from recorded episodes and from `previous_state=` alike."""
    rng = np.random.default_rng(0)

    def episodes(n_eps, steps=20):
        parts = []
        for e in range(n_eps):
            moves = np.repeat(rng.normal(0, 0.02, (steps // 5, 3)), 5, 0).astype(np.float32)   # held for 5 steps
            states = np.cumsum(np.r_[rng.normal(size=(1, 3)), moves], 0)
            obs, actions = state_observation(states), np.zeros((steps, 7), np.float32)
            actions[:, :3] = moves
            parts.append(Transitions(rng.integers(world.num_actions, size=steps), obs[:-1], actions,
                                     np.full(steps, e), "state", obs[1:]))
        return Transitions.concatenate(parts)
    train, test = episodes(40), episodes(15)
    lookup, learned = (Adapter.fit(k, train, world, NAMES) for k in ("lookup", "learned"))
    # the first step of each held-for-5 move follows another move: only 4 in 5 can be read
    assert offline_metrics(lookup, test)["direction_cosine"] < 0.3 < 0.6 < offline_metrics(learned, test)["direction_cosine"]
    before, now = np.zeros(3), np.array([0.0, 0.0, 0.02])
    up = learned.to_robot(0, None, state=now, previous_state=before)["action"][:3]
    assert up[2] / np.linalg.norm(up) > 0.7, up
    with pytest.raises(AdapterError, match="previous_state= with its 3 values"):
        learned.to_robot(0, None, state=now, previous_state=[0.0])


def test_adapter_round_trips_and_is_refused_with_another_bundle(world, micro_run, sim_shards, tmp_path):
    adapter = fit(world, str(sim_shards), "learned", 0.5)
    adapter.save(tmp_path / "a")
    info = json.loads((tmp_path / "a" / "adapter.json").read_text())
    assert info["kind"] == "learned" and info["action_names"][-1] == "gripper" and info["units"][0] == "m"
    assert Path(info["bundle"]).is_absolute()           # usable from any working directory
    again = Adapter.load(tmp_path / "a", device="cpu")
    frame = sim_shards_frame(sim_shards)
    now, before = FrameShards(sim_shards).read(0, 1, 2, key="states")[::-1]
    robot = [a.to_robot(1, frame, state=now, previous_state=before)["action"] for a in (again, adapter)]
    assert np.allclose(*robot, atol=1e-6)
    assert 0 <= again.to_latent(robot[0], frame, state=now, previous_state=before) < world.num_actions

    other = tmp_path / "other_bundle"
    shutil.copytree(micro_run / "bundle", other)
    state = load_file(str(other / "dynamics.safetensors"))
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first] = state[first] + 1.0
    save_file(state, str(other / "dynamics.safetensors"))
    with pytest.raises(AdapterError, match="another model") as e:
        Adapter.load(tmp_path / "a", bundle=other, device="cpu")
    assert str(other) in str(e.value) and str(micro_run / "bundle") in str(e.value)


def sim_shards_frame(sim_shards):
    from robo_genie.datasets.shards import FrameShards
    return FrameShards(sim_shards).read(0, 0, 1)[0]


def test_fit_on_shards_without_actions_names_the_folder(micro_run, tmp_path, capsys):
    bare = tmp_path / "no_actions"
    with ShardWriter(bare, source="test", fps=10, image_size=32) as w:
        w.add("ep0", np.zeros((6, 32, 32, 3), np.uint8))
    with pytest.raises(SystemExit, match=f"{bare}.*no recorded actions"):
        main(["adapter", "fit", f"bundle={micro_run / 'bundle'}", f"data.path={bare}", f"out={tmp_path / 'a'}"])
    with pytest.raises(SystemExit, match="kind='nearest'"):
        main(["adapter", "fit", f"bundle={micro_run / 'bundle'}", f"data.path={bare}", "kind=nearest",
              f"out={tmp_path / 'a'}"])


def test_simulators_restart_an_episode_and_replay_its_actions_exactly():
    for sim, ep in ((TabletopSim(32), lambda s: s.episode(7, 6)), (ArmSim("cloth", 32), lambda s: s.episode(7, 6))):
        recorded = ep(sim)
        frames = [sim.reset(7)] + [sim.apply(a) for a in recorded.actions[:-1]]
        assert np.array_equal(np.stack(frames), recorded.frames)


def test_cem_finds_the_best_sequence():
    target = np.array([3, 1, 2])
    best, score = cem(lambda s: -(s != target).sum(1).astype(float), 4, 3, population=32, elites=6, iterations=4,
                      rng=np.random.default_rng(0))
    assert np.array_equal(best, target) and score == 0


def test_the_goal_measure_prefers_a_thin_arm_nearer_its_goal():
    """Pixel by pixel, a thin bar 6 px from its goal position and one 32 px away overlap it equally
    (not at all); the planner's measure, over cells, ranks the nearer one higher."""
    def bar(x):
        frame = np.zeros((64, 64, 3), np.uint8)
        frame[20:44, x:x + 2] = 255
        return frame
    goal, candidates = bar(8), np.stack([bar(14), bar(40)])
    pixel_error = ((candidates.astype(float) - goal) ** 2).mean(axis=(1, 2, 3))
    assert pixel_error[0] == pixel_error[1]
    near, far = frame_similarity(candidates, goal)
    assert near > far


def test_latent_policy_drives_mujoco_in_closed_loop(world, micro_run, sim_shards, tmp_path):
    adapter = fit(world, str(sim_shards), "lookup", 1.0)
    sim = TabletopSim(32)
    start, goal = sim.reset(3), None
    for a in [[0.022, 0, 0, 0, 0, 0, 1]] * 3:
        goal = sim.apply(np.array(a))
    policy = LatentPolicy(world, adapter, goal, population=8, iterations=1)
    frame = sim.reset(3)
    assert np.array_equal(frame, start)
    for _ in range(3):
        command = policy.select_action(frame)
        assert command.shape == (7,) and torch.isfinite(command).all()
        frame = sim.apply(command.numpy())
        assert policy.predicted.shape == (32, 32, 3) and len(policy.plan) == policy.horizon
    # the LeRobot-style batch input gives a command too
    batch = {"observation.image": torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255}
    assert policy.select_action(batch).shape == (7,)


def test_adapter_cli_fits_and_evaluates_end_to_end(micro_run, sim_shards, tmp_path):
    out, ev = tmp_path / "adapter", tmp_path / "eval"
    main(["adapter", "fit", f"bundle={micro_run / 'bundle'}", f"data.path={sim_shards}", "kind=lookup",
          "labelled=0.5", f"out={out}"])
    main(["adapter", "eval", f"adapter={out}", f"data.path={sim_shards}", f"out={ev}", "fractions=0.5,1.0",
          "replay_episodes=2", "goal_episodes=2", "goal_steps=2", "population=8", "iterations=1", "progress=false"])
    r = json.loads((ev / "adapter_eval.json").read_text())
    for key in ("direction_cosine", "gripper_accuracy"):
        assert 0 <= r["offline"][key] <= 1
    assert r["replay"]["true_action_path_error"] < 1e-9 < r["replay"]["random_path_error"]
    assert r["goal"]["n_episodes"] == 2 and 0 <= r["goal"]["oracle_success_rate"] <= 1
    assert [row["labelled"] for row in r["offline_by_fraction"]["learned"]] == [0.5, 1.0]
    for name in ("closed_loop.gif", "report.html", "offline_by_fraction.png"):
        assert (ev / name).stat().st_size > 0
    page = (ev / "report.html").read_text()
    assert f"random commands {r['replay']['random_path_error'] * 100:.1f} cm" in page      # beside its reference


def test_read_transitions_pairs_codes_features_and_actions(world, sim_shards):
    data = read_transitions(world, str(sim_shards), [0, 2])
    assert len(data) == 2 * 11 and data.features.shape[0] == 22 and set(np.unique(data.episodes)) == {0, 2}
    assert data.codes.max() < world.num_actions and data.actions.shape == (22, 7)


def test_arm_shards_give_the_adapter_the_robot_state_in_closed_loop(world, tmp_path):
    """Arm shards record the robot's state; `learned` fitted on them reads it, and the closed loop
    hands it the simulator's state, recorded the same way (the replay of true actions stays exact)."""
    from robo_genie.adapter.closed_loop import replay
    from robo_genie.sim.generate import generate

    shards = tmp_path / "arm"
    generate(shards, episodes=4, episode_len=6, resolution=32, workers=1, seed=0, progress=False, scene="cloth")
    data = read_transitions(world, str(shards))
    assert data.observation == "state" and data.features.shape == (4 * 5, 2 * 11)     # the state and its change
    assert np.array_equal(data.next_features[:4], data.features[1:5])      # the state at t+1 of each transition
    assert np.allclose(data.features[1, 11:], data.features[1, :11] - data.features[0, :11])
    assert not data.features[0, 11:].any()                                 # at rest before the first frame
    adapter = fit(world, str(shards), "learned", 1.0)
    assert adapter.reads_state and adapter.info["state_names"][-1] == "ee_z"
    assert fit(world, str(shards), "learned", 0.25).info["pseudo_labelled_transitions"] == 3 * 5
    assert "pseudo_labelled_transitions" not in fit(world, str(shards), "lookup", 0.25).info
    r = replay(adapter, str(shards), [0, 1])
    assert r["true_action_path_error"] < 1e-9 and np.isfinite(r["path_error"])
    sim = ArmSim("cloth", 32)
    recorded = FrameShards(shards).read(0, key="states")
    sim.reset(0)
    assert np.allclose(sim.robot_state(), recorded[0], atol=1e-6)
