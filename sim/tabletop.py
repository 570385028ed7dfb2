"""The embedded default data: a MuJoCo tabletop with a gripper driven by scripted motion primitives.

Every episode randomises colours, object and cloth poses, lighting and camera within set ranges,
so that prompt images differ. The gripper (a mocap body, so it pushes objects kinematically)
moves by a few pixels per step along one of eight primitives, each held for a few steps: left,
right, up, down and the four diagonals between them, in the plane that faces the camera. Every
step records the RT-1-style 7-D action (xyz delta, rpy delta, gripper), the primitive's label and
the robot's state: the gripper's position, as a real arm reports its tool pose.

Why that plane: a move towards the camera's far side and a move up both carry the gripper up the
picture, and a LAM reading one camera cannot tell them apart. The scene used to have those two
(forward/back and up/down), and its LAM gave each pair one code, which capped every measure of
the codes (NOTES.md, 2026-12-02 and 2026-12-03). Eight moves the camera can tell apart give the
eight latent actions eight things to name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")

PRIMITIVES = ("left", "right", "up", "down", "up-left", "up-right", "down-left", "down-right")
_R = 2 ** -0.5
_DIRECTIONS = np.array([[-1, 0, 0], [1, 0, 0], [0, 0, 1], [0, 0, -1],
                        [-_R, 0, _R], [_R, 0, _R], [-_R, 0, -_R], [_R, 0, -_R]], float)   # unit length
STEP_M = 0.022                      # gripper travel per step (about 2-3 px at 64x64)
WORKSPACE_LO = np.array([-0.18, -0.16, 0.04])
WORKSPACE_HI = np.array([0.18, 0.16, 0.18])
SUBSTEPS = 10                       # physics steps per recorded frame (0.04 s, 25 Hz)
FPS = 25.0
ACTION_NAMES = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")
STATE_NAMES = ("ee_x", "ee_y", "ee_z")


@dataclass
class Episode:
    frames: np.ndarray              # [T, H, W, 3] uint8
    actions: np.ndarray             # [T, 7] float32: action taken after frame t (last row zeros)
    labels: np.ndarray              # [T] int64: primitive after frame t (last is -1)
    states: np.ndarray              # [T, 3] float32: the gripper's position at frame t (STATE_NAMES)


def load_model():
    import mujoco

    xml = resources.files("robo_genie.sim").joinpath("assets/tabletop.xml").read_text()
    return mujoco.MjModel.from_xml_string(xml)


class TabletopSim:
    """One process's scene and renderer; `episode(seed)` is deterministic in the seed."""

    def __init__(self, resolution: int = 64, step_m: float = STEP_M):
        import mujoco

        self.step_m = step_m                    # gripper travel per step
        self.mj = mujoco
        self.model = load_model()
        self.data = mujoco.MjData(self.model)
        self.renderer = mujoco.Renderer(self.model, resolution, resolution)
        m = self.model
        self.base = {k: getattr(m, k).copy() for k in ("geom_rgba", "flex_rgba", "cam_pos", "light_dir",
                                                         "light_diffuse")}
        self.object_geoms = [mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, f"obj{i}") for i in range(3)]
        self.table_geom = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "table")
        self.object_qadr = [m.jnt_qposadr[m.body_jntadr[m.geom_bodyid[g]]] for g in self.object_geoms]

    def _randomise(self, rng: np.random.Generator) -> None:
        m, d = self.model, self.data
        for k, v in self.base.items():
            getattr(m, k)[:] = v
        m.geom_rgba[self.table_geom, :3] = rng.uniform(0.25, 0.8, 3)
        for g in self.object_geoms:
            m.geom_rgba[g, :3] = rng.uniform(0.05, 1.0, 3)
        m.flex_rgba[0, :3] = rng.uniform(0.05, 1.0, 3)
        m.cam_pos[0] += rng.uniform(-0.03, 0.03, 3)
        m.light_dir[0] += rng.uniform(-0.3, 0.3, 3)
        m.light_diffuse[0] = rng.uniform(0.3, 0.9) * np.ones(3)
        self.mj.mj_resetData(m, d)
        for qadr in self.object_qadr:           # objects scattered on the table, random yaw
            d.qpos[qadr:qadr + 2] = rng.uniform([-0.2, -0.15], [0.2, 0.2])
            yaw = rng.uniform(0, np.pi)
            d.qpos[qadr + 3:qadr + 7] = [np.cos(yaw / 2), 0, 0, np.sin(yaw / 2)]
        # The cloth's vertices are slide-jointed bodies, the last qpos entries (see the MJCF).
        n_vert = 3 * m.flex_vertnum[0]
        d.qpos[m.nq - n_vert:] += np.tile([*rng.uniform([-0.1, -0.08], [0.1, 0.1]), 0.0], n_vert // 3)
        d.mocap_pos[0] = rng.uniform(WORKSPACE_LO, WORKSPACE_HI)
        self.mj.mj_forward(m, d)
        for _ in range(25):                      # let things settle before the first frame
            self.mj.mj_step(m, d)

    def _render(self) -> np.ndarray:
        self.renderer.update_scene(self.data, camera="front")
        return self.renderer.render().copy()

    def _move(self, delta: np.ndarray) -> None:
        pos = self.data.mocap_pos[0].copy()
        for k in range(SUBSTEPS):            # move smoothly within the frame interval
            self.data.mocap_pos[0] = pos + delta * (k + 1) / SUBSTEPS
            self.mj.mj_step(self.model, self.data)

    # -- closed-loop control: a controller (the adapter, a planner) drives the scene step by step --
    def reset(self, seed: int) -> np.ndarray:
        """Episode `seed`'s start state (the same scene `episode(seed, ...)` records); its first frame."""
        self._randomise(np.random.default_rng(seed))
        return self._render()

    def apply(self, action: np.ndarray) -> np.ndarray:
        """Execute one 7-D command (only xyz moves the mocap gripper; each axis is clipped to one step,
        and a move that would leave the workspace holds still). Returns the next frame."""
        delta = np.clip(np.asarray(action, float)[:3], -self.step_m, self.step_m)
        self._move(delta if _inside(self.data.mocap_pos[0] + delta) else np.zeros(3))
        return self._render()

    def gripper_position(self) -> np.ndarray:
        return self.data.mocap_pos[0].copy()

    def robot_state(self) -> np.ndarray:
        """Proprioception as the shards record it (STATE_NAMES)."""
        return self.gripper_position().astype(np.float32)

    def object_positions(self) -> np.ndarray:
        """[3, 2]: the table objects' xy."""
        return np.array([self.data.qpos[q:q + 2] for q in self.object_qadr])

    def save_state(self):
        state = self.mj.MjData(self.model)
        self.mj.mj_copyData(state, self.model, self.data)
        return state

    def load_state(self, state) -> None:
        self.mj.mj_copyData(self.data, self.model, state)

    def futures(self, seed: int, sequences: list[list[int]]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Episode `seed`'s first frame, and the frame reached from that same state after each
        sequence of primitives (indices into PRIMITIVES; a step that would leave the workspace holds
        still): counterfactual futures of one scene."""
        first = self.reset(seed)
        start, ends = self.save_state(), []
        for seq in sequences:
            self.load_state(start)
            frame = first
            for prim in seq:
                frame = self.apply(self.step_m * _DIRECTIONS[prim])
            ends.append(frame)
        return first, ends

    def episode(self, seed: int, length: int) -> Episode:
        rng = np.random.default_rng(seed)
        self._randomise(rng)
        frames, actions, labels, states = [self._render()], [], [], [self.robot_state()]
        prim, left = 0, 0
        for _ in range(length - 1):
            pos = self.data.mocap_pos[0].copy()
            if left == 0 or not _inside(pos + self.step_m * _DIRECTIONS[prim]):
                options = [p for p in range(len(PRIMITIVES)) if _inside(pos + self.step_m * _DIRECTIONS[p])]
                prim, left = int(rng.choice(options)), int(rng.integers(3, 7))
            delta = self.step_m * _DIRECTIONS[prim]
            self._move(delta)
            frames.append(self._render())
            states.append(self.robot_state())
            actions.append([*delta, 0.0, 0.0, 0.0, 1.0])
            labels.append(prim)
            left -= 1
        actions.append([0.0] * 7)
        labels.append(-1)
        return Episode(np.stack(frames), np.asarray(actions, np.float32), np.asarray(labels, np.int64), np.stack(states))


def _inside(p: np.ndarray) -> bool:
    return bool(np.all(p >= WORKSPACE_LO) and np.all(p <= WORKSPACE_HI))
