"""Scripted teleop in the arm scenes: push, drag, lift a corner, fold, poke.

Each episode randomises colours, lighting, camera, and the poses of the target and distractors
(within set ranges, so prompt images differ), then runs one behaviour as a plan of fingertip
waypoints. The arm moves at most STEP_M per frame toward the next waypoint. Every step records the
RT-1-style 7-D action (xyz delta, rpy delta, gripper closedness), the robot state, the target's
position and deformation, the behaviour label, and per-pixel segmentation (0 background, 1 robot, 2 target, 3-4 distractors).

Randomness is drawn in the same order in every scene, so one seed gives the same colours, poses
and behaviour in `cloth` and in `rigid` (with the matching counterpart shape): the deformable probe
compares like with like.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from robo_genie.sim.scenes import CAMERAS, PINCH, RIGID_SHAPES, scene_xml

os.environ.setdefault("MUJOCO_GL", "egl")

BEHAVIOURS = ("push", "drag", "lift_corner", "fold", "poke")
ACTION_NAMES = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")
STATE_NAMES = ("j0", "j1", "j2", "j3", "j4", "j5", "finger_l", "finger_r", "ee_x", "ee_y", "ee_z")
# The target object per step: centre, highest point, and deformation = the largest change (m) of any
# distance between two of its points since the first frame (0 for a rigid body).
OBJECT_NAMES = ("target_x", "target_y", "target_z", "target_top", "target_deformation")
SEGMENT_NAMES = ("background", "robot", "target", "distractor0", "distractor1")
STEP_M = 0.02                       # most fingertip travel per frame
SUBSTEPS = 10                       # physics steps per frame: 0.04 s, 25 Hz
FPS = 25.0
HOVER = 0.08                        # approach height above the target's top
GRASP_REACH = 0.035                 # a closing gripper grasps what lies this close to the fingertips
WORKSPACE_LO = np.array([-0.2, -0.14, 0.005])
WORKSPACE_HI = np.array([0.2, 0.18, 0.22])
_ARM_START = {"j1": -0.69, "j2": 1.6, "j3": -0.91}   # a bent pose near the table, found by settling


@dataclass
class ArmEpisode:
    frames: np.ndarray              # [T, H, W, 3] uint8 (main camera)
    actions: np.ndarray             # [T, 7] float32: action after frame t (last row zeros)
    labels: np.ndarray              # [T] int64: behaviour index (last is -1)
    states: np.ndarray              # [T, 11] float32: joints, fingers, fingertip position
    segmentation: np.ndarray        # [T, H, W] uint8: SEGMENT_NAMES index per pixel
    objects: np.ndarray             # [T, 5] float32: OBJECT_NAMES
    views: dict[str, np.ndarray]    # frames from the other requested cameras


@dataclass
class Waypoint:
    pos: np.ndarray                 # fingertip target (m, world)
    grip: float                     # 1 closed, 0 open, held from this waypoint on
    hold: int = 0                   # extra frames to stay once reached


class ArmSim:
    """One scene and renderer (one per process: GL contexts do not fork)."""

    def __init__(self, scene: str, resolution: int = 64, cameras: tuple[str, ...] = ("front",)):
        import mujoco

        for cam in cameras:
            if cam not in CAMERAS:
                raise ValueError(f"unknown camera {cam!r}; available: {', '.join(CAMERAS)}")
        self.mj, self.scene, self.cameras = mujoco, scene, tuple(cameras)
        m = self.model = mujoco.MjModel.from_xml_string(scene_xml(scene, resolution))
        self.data = mujoco.MjData(m)
        self.renderer = mujoco.Renderer(m, resolution, resolution)
        name = lambda kind, i: mujoco.mj_id2name(m, kind, i)
        self.base = {k: getattr(m, k).copy() for k in ("geom_rgba", "flex_rgba", "cam_pos", "light_dir",
                                                         "light_diffuse")}
        self.hand = m.body("hand").id
        self.grasp_eq = m.equality("grasp").id
        self.joint_qadr = [m.jnt_qposadr[m.joint(j).id] for j in STATE_NAMES[:8]]
        self.table = m.geom("table").id
        self.distractors = [m.body(f"distractor{i}").id for i in range(2)]
        # Target parts: flex vertex bodies, or the rigid counterpart bodies.
        if m.nflex:
            # Vertex bodies, or for a trilinear soft body the 8 node bodies that carry its vertices.
            vert = m.flex_vertbodyid[: m.flex_vertnum[0]]
            nodes = m.flex_nodebodyid[m.flex_nodeadr[0]: m.flex_nodeadr[0] + m.flex_nodenum[0]]
            self.flex_bodies = np.unique(vert if (vert >= 0).all() else nodes)
            self.rigid = {}
        else:
            self.flex_bodies = np.array([], int)
            self.rigid = {s: m.body(s).id for s in RIGID_SHAPES}
        # Segmentation lookup: geom id -> class (flex pixels are handled by object type).
        base_root = m.body("base").id
        self.geom_class = np.zeros(m.ngeom, np.uint8)
        for g in range(m.ngeom):
            body = m.geom_bodyid[g]
            if m.body_rootid[body] == base_root:
                self.geom_class[g] = 1
            elif name(mujoco.mjtObj.mjOBJ_BODY, body) in RIGID_SHAPES:
                self.geom_class[g] = 2
            elif body in self.distractors:
                self.geom_class[g] = 3 + self.distractors.index(body)
        self.shape: str | None = None

    # ---- scene state -------------------------------------------------------------------------
    def _free_qadr(self, body: int) -> int:
        return self.model.jnt_qposadr[self.model.body_jntadr[body]]

    def _randomise(self, rng: np.random.Generator, shape: str | None) -> None:
        m, d, mj = self.model, self.data, self.mj
        for k, v in self.base.items():
            getattr(m, k)[:] = v
        colour = rng.uniform(0.05, 1.0, 3)
        m.geom_rgba[self.table, :3] = rng.uniform(0.25, 0.8, 3)
        for b in self.distractors:
            m.geom_rgba[m.body_geomadr[b], :3] = rng.uniform(0.05, 1.0, 3)
        for cam in range(m.ncam):
            m.cam_pos[cam] += rng.uniform(-0.03, 0.03, 3)
        m.light_dir[0] += rng.uniform(-0.3, 0.3, 3)
        m.light_diffuse[0] = rng.uniform(0.3, 0.9) * np.ones(3)
        target_xy = rng.uniform([-0.08, -0.06], [0.08, 0.08])
        yaw = rng.uniform(0, np.pi)
        distractor_xy = [rng.uniform([-0.22, 0.08], [-0.14, 0.18]), rng.uniform([0.14, 0.08], [0.22, 0.18])]
        start = rng.uniform([-0.1, -0.08, 0.12], [0.1, 0.08, 0.18])
        rigid_pick = int(rng.integers(len(RIGID_SHAPES)))

        mj.mj_resetData(m, d)
        for joint, angle in _ARM_START.items():
            d.qpos[m.jnt_qposadr[m.joint(joint).id]] = angle
        for b, xy in zip(self.distractors, distractor_xy):
            q = self._free_qadr(b)
            d.qpos[q:q + 2] = xy
        quat = [np.cos(yaw / 2), 0, 0, np.sin(yaw / 2)]
        if m.nflex:
            m.flex_rgba[0, :3] = colour
            # Vertex bodies hang off the world with slide joints: move every vertex; rotate about
            # the flex's centre in the plane.
            qadr = [self._free_qadr(b) for b in self.flex_bodies]
            pos = np.array([d.qpos[q:q + 3] for q in qadr]) + m.body_pos[self.flex_bodies]
            centre = pos.mean(0)
            c, s = np.cos(yaw), np.sin(yaw)
            rel = pos - centre
            rotated = np.stack([c * rel[:, 0] - s * rel[:, 1], s * rel[:, 0] + c * rel[:, 1], rel[:, 2]], 1)
            new = rotated + [target_xy[0], target_xy[1], centre[2]]
            for q, b, p in zip(qadr, self.flex_bodies, new):
                d.qpos[q:q + 3] = p - m.body_pos[b]
        else:
            self.shape = shape or RIGID_SHAPES[rigid_pick]
            for i, (s_name, body) in enumerate(self.rigid.items()):
                q = self._free_qadr(body)
                m.geom_rgba[m.body_geomadr[body], :3] = colour
                d.qpos[q:q + 3] = [*target_xy, m.body_pos[body][2]] if s_name == self.shape else [3.0 + i, 3.0, 0.05]
                d.qpos[q + 3:q + 7] = quat
        d.eq_active[self.grasp_eq] = 0
        d.mocap_pos[0] = start + [0, 0, PINCH]
        mj.mj_forward(m, d)
        for _ in range(600):                     # the arm reaches its start and things settle
            mj.mj_step(m, d)

    def target_points(self) -> np.ndarray:
        """World points that outline the target: flex vertices, or a rigid shape's corners/ends."""
        d = self.data
        if len(self.flex_bodies):
            return d.flexvert_xpos[: self.model.flex_vertnum[0]].copy()
        body = self.rigid[self.shape]
        size = self.model.geom_size[self.model.body_geomadr[body]]
        if self.shape == "rod":
            local = np.array([[-size[1], 0, 0], [size[1], 0, 0], [0, 0, 0]])
        else:
            local = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)]) * size
        return d.xpos[body] + local @ d.xmat[body].reshape(3, 3).T

    def fingertips(self) -> np.ndarray:
        return self.data.xpos[self.hand] + self.data.xmat[self.hand].reshape(3, 3) @ [0, 0, -PINCH]

    def _grasp(self, close: bool) -> None:
        """Closing near the target attaches its nearest part to the fingertips; opening releases."""
        m, d = self.model, self.data
        if not close:
            d.eq_active[self.grasp_eq] = 0
            return
        if d.eq_active[self.grasp_eq]:
            return
        tips = self.fingertips()
        bodies = self.flex_bodies if len(self.flex_bodies) else np.array([self.rigid[self.shape]])
        if len(self.flex_bodies):
            dist = np.linalg.norm(d.xpos[bodies] - tips, axis=1)
        else:   # distance to the rigid shape's surface, roughly: to its nearest outline point or centre
            pts = np.vstack([self.target_points(), d.xpos[bodies]])
            dist = np.array([np.linalg.norm(pts - tips, axis=1).min()])
        i = int(np.argmin(dist))
        if dist[i] > GRASP_REACH:
            return
        body = int(bodies[i])
        m.eq_obj2id[self.grasp_eq] = body
        m.eq_data[self.grasp_eq, :3] = [0, 0, -PINCH]
        # the second anchor: where the fingertips are now, in the grasped body's frame
        m.eq_data[self.grasp_eq, 3:6] = d.xmat[body].reshape(3, 3).T @ (tips - d.xpos[body])
        d.eq_active[self.grasp_eq] = 1

    # ---- behaviours --------------------------------------------------------------------------
    def plan(self, behaviour: str, rng: np.random.Generator) -> list[Waypoint]:
        pts = self.target_points()
        centre = pts.mean(0)
        top = pts[:, 2].max()
        radius = np.linalg.norm(pts[:, :2] - centre[:2], axis=1).max()
        angle = rng.uniform(0, 2 * np.pi)
        u = np.array([np.cos(angle), np.sin(angle), 0.0])
        corner = pts[np.argmax((pts[:, :2] - centre[:2]) @ u[:2] + 0.01 * pts[:, 2])]
        at = lambda xy, z: np.array([xy[0], xy[1], z])
        hover, low = top + HOVER, max(top - 0.004, 0.006)
        if behaviour == "push":
            s = centre - u * (radius + 0.04)
            return [Waypoint(at(s, hover), 1), Waypoint(at(s, 0.015), 1), Waypoint(at(centre + u * 0.06, 0.015), 1),
                    Waypoint(at(centre + u * 0.06, hover), 1)]
        if behaviour == "drag":
            end = corner + u * 0.12
            return [Waypoint(at(corner, hover), 0), Waypoint(at(corner, low), 1, hold=2),
                    Waypoint(at(end, top + 0.02), 1), Waypoint(at(end, top + 0.02), 0, hold=2),
                    Waypoint(at(end, hover), 0)]
        if behaviour == "lift_corner":
            return [Waypoint(at(corner, hover), 0), Waypoint(at(corner, low), 1, hold=2),
                    Waypoint(at(corner, top + 0.12), 1, hold=3), Waypoint(at(corner, top + 0.02), 1),
                    Waypoint(at(corner, top + 0.02), 0, hold=2), Waypoint(at(corner, hover), 0)]
        if behaviour == "fold":
            opposite = 2 * centre - corner
            return [Waypoint(at(corner, hover), 0), Waypoint(at(corner, low), 1, hold=2),
                    Waypoint(at((corner + opposite) / 2, top + 0.1), 1), Waypoint(at(opposite, top + 0.02), 1),
                    Waypoint(at(opposite, top + 0.02), 0, hold=2), Waypoint(at(opposite, hover), 0)]
        if behaviour == "poke":
            press = max(top - 0.02, 0.005)
            return [Waypoint(at(centre, hover), 1), Waypoint(at(centre, press), 1, hold=1),
                    Waypoint(at(centre, hover * 0.6), 1), Waypoint(at(centre, press), 1, hold=1),
                    Waypoint(at(centre, hover), 1)]
        raise ValueError(f"unknown behaviour {behaviour!r}; available: {', '.join(BEHAVIOURS)}")

    # ---- rendering ---------------------------------------------------------------------------
    def _render(self, camera: str) -> np.ndarray:
        self.renderer.update_scene(self.data, camera=camera)
        return self.renderer.render().copy()

    def _segment(self, camera: str) -> np.ndarray:
        r = self.renderer
        r.enable_segmentation_rendering()
        r.update_scene(self.data, camera=camera)
        seg = r.render()
        r.disable_segmentation_rendering()
        ids, types = seg[..., 0], seg[..., 1]
        out = np.zeros(ids.shape, np.uint8)
        geom = types == int(self.mj.mjtObj.mjOBJ_GEOM)
        out[geom] = self.geom_class[ids[geom]]
        out[types == int(self.mj.mjtObj.mjOBJ_FLEX)] = 2
        return out

    def _object_state(self, first: np.ndarray | None) -> tuple[list[float], np.ndarray]:
        pts = self.target_points()
        dists = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
        deformation = 0.0 if first is None else float(np.abs(dists - first).max())
        return [*pts.mean(0), pts[:, 2].max(), deformation], dists

    def _record(self, frames, segs, views, states) -> None:
        frames.append(self._render(self.cameras[0]))
        segs.append(self._segment(self.cameras[0]))
        for cam in self.cameras[1:]:
            views[cam].append(self._render(cam))
        states.append(self.robot_state())

    # ---- episodes ----------------------------------------------------------------------------
    def episode(self, seed: int, length: int, behaviour: str | None = None,
                shape: str | None = None) -> ArmEpisode:
        """Deterministic in (seed, behaviour, shape). `behaviour=None` draws one from the seed."""
        rng = np.random.default_rng(seed)
        self._randomise(rng, shape)
        drawn = BEHAVIOURS[int(rng.integers(len(BEHAVIOURS)))]
        behaviour = behaviour or drawn
        plan_rng = np.random.default_rng([seed, 1])          # the same direction for any behaviour
        waypoints = self.plan(behaviour, plan_rng)
        label = BEHAVIOURS.index(behaviour)
        frames, segs, states = [], [], []
        views = {cam: [] for cam in self.cameras[1:]}
        actions, labels = [], []
        self._record(frames, segs, views, states)
        obj, first_dists = self._object_state(None)
        objects = [obj]
        grip, held, k = 0.0, 0, 0
        for _ in range(length - 1):
            tips = self.fingertips_command()
            if k < len(waypoints):
                wp = waypoints[k]
                goal = np.clip(wp.pos, WORKSPACE_LO, WORKSPACE_HI)
                step = goal - tips
                dist = np.linalg.norm(step)
                if dist > STEP_M:
                    step *= STEP_M / dist
                elif held < wp.hold:
                    held += 1
                else:
                    k, held = k + 1, 0
                grip = wp.grip if dist <= STEP_M else grip
            else:
                step = np.zeros(3)
            self._actuate(step, grip)
            self._record(frames, segs, views, states)
            objects.append(self._object_state(first_dists)[0])
            actions.append([*step, 0.0, 0.0, 0.0, grip])
            labels.append(label)
        actions.append([0.0] * 7)
        labels.append(-1)
        return ArmEpisode(np.stack(frames), np.asarray(actions, np.float32), np.asarray(labels, np.int64),
                          np.asarray(states, np.float32), np.stack(segs), np.asarray(objects, np.float32),
                          {cam: np.stack(v) for cam, v in views.items()})

    def _actuate(self, step: np.ndarray, grip: float) -> None:
        d = self.data
        self._grasp(grip > 0.5)
        d.ctrl[:] = -0.02 * grip                           # fingers: open 0, closed -0.02 (m)
        start = d.mocap_pos[0].copy()
        for s in range(SUBSTEPS):                          # move smoothly within the frame interval
            d.mocap_pos[0] = start + step * (s + 1) / SUBSTEPS
            self.mj.mj_step(self.model, d)

    # ---- closed-loop control: a controller (the adapter, a planner) drives the arm step by step ----
    def reset(self, seed: int) -> np.ndarray:
        """Episode `seed`'s start state (the scene `episode(seed, ...)` records); its first frame."""
        self._randomise(np.random.default_rng(seed), None)
        return self._render(self.cameras[0])

    def apply(self, action: np.ndarray) -> np.ndarray:
        """Execute one 7-D command (xyz fingertip delta, at most STEP_M long and kept inside the
        workspace; gripper closedness > 0.5 closes). Returns the next frame."""
        action = np.asarray(action, float)
        step = action[:3]
        norm = np.linalg.norm(step)
        if norm > STEP_M:
            step = step * STEP_M / norm
        tips = self.fingertips_command()
        step = np.clip(tips + step, WORKSPACE_LO, WORKSPACE_HI) - tips
        self._actuate(step, float(action[6] > 0.5))
        return self._render(self.cameras[0])

    def gripper_position(self) -> np.ndarray:
        return self.fingertips_command()

    def robot_state(self) -> np.ndarray:
        """Proprioception as the shards record it (STATE_NAMES): joints, fingers, fingertip position."""
        return np.array([*(self.data.qpos[q] for q in self.joint_qadr), *self.fingertips()], np.float32)

    def object_positions(self) -> np.ndarray:
        """[1, 2]: the target's centre xy."""
        return self.target_points().mean(0)[None, :2]

    def save_state(self):
        state = self.mj.MjData(self.model)
        self.mj.mj_copyData(state, self.model, self.data)
        return state, int(self.data.eq_active[self.grasp_eq]), self.model.eq_obj2id[self.grasp_eq], \
            self.model.eq_data[self.grasp_eq].copy()

    def load_state(self, state) -> None:
        data, active, obj, eq = state
        self.mj.mj_copyData(self.data, self.model, data)
        self.data.eq_active[self.grasp_eq] = active
        self.model.eq_obj2id[self.grasp_eq], self.model.eq_data[self.grasp_eq] = obj, eq

    def fingertips_command(self) -> np.ndarray:
        """Where the commanded (mocap) fingertips are; the arm lags it by the weld's stiffness."""
        return self.data.mocap_pos[0] - [0, 0, PINCH]

