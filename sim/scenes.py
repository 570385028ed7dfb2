"""MJCF for the robot-arm scenes: one arm, a table, one target object (deformable or rigid), two
rigid distractors and three cameras.

The scenes are built as strings from the pieces below, so the arm, table and cameras are the same
in every scene and only the target differs. Deformables are `flexcomp` (mujoco 4.0 removed
`<composite>`): cloth (dim=2), rope (dim=1), soft body (dim=3). The `rigid` scene holds rigid
counterparts of the three, of similar size (a plate, a rod, a block); each episode uses one and
parks the others off camera.

The arm is articulated (six hinges and two sliding fingers) and follows a mocap body through a weld
constraint, so a script drives it by end-effector deltas. Grasping is a `connect` constraint between
the fingertips and the nearest part of the target, switched on when the gripper closes near it
(friction grasps of a flex are fragile in MuJoCo; the constraint makes the scripted data reliable).
"""

from __future__ import annotations

SCENES = ("cloth", "rope", "soft", "rigid")
RIGID_SHAPES = ("plate", "rod", "block")           # rigid counterparts of cloth, rope, soft
COUNTERPART = {"cloth": "plate", "rope": "rod", "soft": "block"}
CAMERAS = ("front", "side", "top")
PINCH = 0.045                                      # fingertips below the hand body's origin (m)

_LINK = 'rgba=".8 .8 .82 1" contype="0" conaffinity="0"'      # arm links do not collide
_DARK = 'rgba="0.15 0.15 0.18 1"'

ARM = f"""
  <body name="base" pos="0 0.32 0">
   <geom name="pedestal" type="cylinder" size="0.05 0.05" pos="0 0 0.05" rgba="0.3 0.3 0.35 1"
         contype="0" conaffinity="0"/>
   <body name="shoulder" pos="0 0 0.1" gravcomp="1">
    <joint name="j0" axis="0 0 1" damping="2"/>
    <geom type="capsule" fromto="0 0 0 0 0 0.1" size="0.025" {_LINK}/>
    <body name="upper" pos="0 0 0.1" gravcomp="1">
     <joint name="j1" axis="1 0 0" damping="2" ref="0"/>
     <geom type="capsule" fromto="0 0 0 0 -0.24 0" size="0.022" {_LINK}/>
     <body name="fore" pos="0 -0.24 0" gravcomp="1">
      <joint name="j2" axis="1 0 0" damping="2"/>
      <geom type="capsule" fromto="0 0 0 0 -0.22 0" size="0.018" {_LINK}/>
      <body name="wrist" pos="0 -0.22 0" gravcomp="1">
       <joint name="j3" axis="1 0 0" damping="0.3"/>
       <joint name="j4" axis="0 1 0" damping="0.3"/>
       <geom type="capsule" fromto="0 0 0 0 0 -0.05" size="0.014" {_LINK}/>
       <body name="hand" pos="0 0 -0.06" gravcomp="1">
        <joint name="j5" axis="0 0 1" damping="0.3"/>
        <geom name="palm" type="box" size="0.035 0.015 0.01" {_DARK}/>
        <body name="finger_l" pos="0.025 0 -0.03" gravcomp="1">
         <joint name="finger_l" type="slide" axis="1 0 0" range="-0.02 0.005" damping="1"/>
         <geom type="box" size="0.005 0.012 0.02" {_DARK}/></body>
        <body name="finger_r" pos="-0.025 0 -0.03" gravcomp="1">
         <joint name="finger_r" type="slide" axis="-1 0 0" range="-0.02 0.005" damping="1"/>
         <geom type="box" size="0.005 0.012 0.02" {_DARK}/></body>
       </body></body></body></body></body></body>
  <body name="ee_target" mocap="true" pos="0 0 0.15"/>"""

# Each target's first grasp candidate names the body the `connect` constraint starts with.
TARGETS = {
    "cloth": ("""
  <flexcomp name="target" type="grid" count="7 7 1" spacing="0.022 0.022 0.022" pos="0 0.02 0.01"
            dim="2" radius="0.004" mass="0.05" rgba="0.2 0.3 0.9 1">
   <edge equality="true"/><contact selfcollide="none" condim="3"/></flexcomp>""", "target_0"),
    "rope": ("""
  <flexcomp name="target" type="grid" count="16 1 1" spacing="0.02 0.02 0.02" pos="0 0.02 0.012"
            dim="1" radius="0.01" mass="0.05" rgba="0.2 0.3 0.9 1">
   <edge equality="true"/><contact selfcollide="none" condim="3"/></flexcomp>""", "target_0"),
    "soft": ("""
  <flexcomp name="target" type="grid" count="4 4 4" spacing="0.02 0.02 0.02" pos="0 0.02 0.035"
            dim="3" radius="0.002" mass="0.1" dof="trilinear" rgba="0.2 0.3 0.9 1">
   <elasticity young="2e4" poisson="0.2" damping="0.002"/>
   <contact selfcollide="none"{internal} condim="3"/></flexcomp>""", "target_0_0_0"),
    "rigid": ("""
  <body name="plate" pos="0 0.02 0.005"><freejoint/>
   <geom name="plate" type="box" size="0.066 0.066 0.004" mass="0.05" rgba="0.2 0.3 0.9 1"/></body>
  <body name="rod" pos="3 0 0.01"><freejoint/>
   <geom name="rod" type="capsule" size="0.01 0.15" euler="0 90 0" mass="0.05" rgba="0.2 0.3 0.9 1"/></body>
  <body name="block" pos="4 0 0.03"><freejoint/>
   <geom name="block" type="box" size="0.03 0.03 0.03" mass="0.1" rgba="0.2 0.3 0.9 1"/></body>""", "plate"),
}

DISTRACTORS = """
  <body name="distractor0" pos="0.2 0.15 0.02"><freejoint/>
   <geom name="distractor0" type="box" size="0.02 0.02 0.02" mass="0.1" rgba="0.9 0.1 0.1 1"/></body>
  <body name="distractor1" pos="-0.2 0.15 0.02"><freejoint/>
   <geom name="distractor1" type="cylinder" size="0.02 0.02" mass="0.1" rgba="0.1 0.7 0.1 1"/></body>"""

CAMERA_XML = """
  <body name="look_at" pos="0 0.04 0.02"/>
  <camera name="front" pos="0 -0.27 0.33" mode="targetbody" target="look_at" fovy="45"/>
  <camera name="side" pos="0.42 -0.2 0.36" mode="targetbody" target="look_at" fovy="45"/>
  <camera name="top" pos="0 -0.02 0.62" mode="targetbody" target="look_at" fovy="50"/>"""


def _internal_attribute() -> str:
    """mujoco 3.x rejects a trilinear flex with internal collisions (on by default there) and wants
    `internal="false"`; mujoco 4.0 removed the attribute and rejects it."""
    import mujoco

    return ' internal="false"' if int(mujoco.__version__.split(".")[0]) < 4 else ""


def scene_xml(scene: str, resolution: int = 64) -> str:
    if scene not in SCENES:
        raise ValueError(f"unknown scene {scene!r}; available: {', '.join(SCENES)}")
    target, grasp_body = TARGETS[scene]
    target = target.replace("{internal}", _internal_attribute())
    size = max(resolution, 64)
    return f"""<mujoco model="robo_genie_{scene}">
 <option timestep="0.004" gravity="0 0 -9.81"/>
 <visual><global offwidth="{size}" offheight="{size}"/><quality shadowsize="0"/>
  <headlight ambient="0.3 0.3 0.3" diffuse="0.4 0.4 0.4"/></visual>
 <worldbody>
  <light name="key" pos="0.3 -0.3 1.2" dir="-0.2 0.2 -1" castshadow="false" diffuse="0.6 0.6 0.6"/>
  <geom name="table" type="plane" size="1.5 1.5 0.01" rgba="0.6 0.5 0.4 1"/>
  {ARM}
  {target}
  {DISTRACTORS}
  {CAMERA_XML}
 </worldbody>
 <equality>
  <weld name="ee" body1="hand" body2="ee_target" relpose="0 0 0 1 0 0 0" solref="0.01 1"/>
  <connect name="grasp" body1="hand" body2="{grasp_body}" anchor="0 0 -{PINCH}" active="false"/>
 </equality>
 <actuator>
  <position name="finger_l" joint="finger_l" kp="30" ctrlrange="-0.02 0.005"/>
  <position name="finger_r" joint="finger_r" kp="30" ctrlrange="-0.02 0.005"/>
 </actuator>
</mujoco>"""
