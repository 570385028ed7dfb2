"""Ready-made settings for RT-1 and other Open X-Embodiment datasets (RLDS on the public bucket),
and mixtures of them for pretraining.

`robo-genie ingest source=rlds dataset=rt1 out=...` fills in the path, the camera key and the
native rate from here; `path=` overrides the location (a local copy made with `gsutil -m cp -r`).
A mixture ingests each member into its own folder under `out=` and writes `mixture.json` with the
sampling weights, which `robo-genie train data.path=OUT` reads.

Camera keys, state keys and control rates as published with the datasets (Open X-Embodiment, 2023); nothing
here is downloaded at run time.
"""

from __future__ import annotations

from dataclasses import dataclass

BUCKET = "gs://gresearch/robotics"


@dataclass(frozen=True)
class RLDSDataset:
    name: str                  # the TFDS builder name (folder on the bucket)
    version: str
    image_key: str             # the main third-person camera
    fps: float                 # control / recording rate
    note: str = ""
    state_keys: tuple[str, ...] = ()   # the robot's state, where not observation/state

    @property
    def path(self) -> str:
        return f"{BUCKET}/{self.name}/{self.version}"


DATASETS: dict[str, RLDSDataset] = {d.name: d for d in [
    RLDSDataset("fractal20220817_data", "0.1.0", "observation/image", 3.0,
                "RT-1: 256x320 JPEG; action world_vector(3), rotation_delta(3), gripper_closedness_action(1), "
                "base_displacement_vector(2), base_displacement_vertical_rotation(1), terminate_episode(3) int32",
                 ("observation/base_pose_tool_reached", "observation/gripper_closed")),
    RLDSDataset("kuka", "0.1.0", "observation/image", 10.0, "QT-Opt grasping"),
    RLDSDataset("bridge", "0.1.0", "observation/image", 5.0, "BridgeData V2 (WidowX)"),
    RLDSDataset("taco_play", "0.1.0", "observation/rgb_static", 15.0, "Franka play data"),
    RLDSDataset("jaco_play", "0.1.0", "observation/image", 10.0, "Jaco 2"),
    RLDSDataset("berkeley_cable_routing", "0.1.0", "observation/image", 10.0, "Franka cable routing"),
    RLDSDataset("language_table", "0.0.1", "observation/rgb", 10.0, "xArm pushing blocks on a table"),
]}
ALIASES = {"rt1": "fractal20220817_data", "rt-1": "fractal20220817_data"}

# Pretraining mixtures: (dataset, sampling weight). Weights need not sum to 1.
MIXTURES: dict[str, list[tuple[str, float]]] = {
    "rt1_only": [("fractal20220817_data", 1.0)],
    "oxe_manipulation": [("fractal20220817_data", 0.4), ("bridge", 0.2), ("kuka", 0.15), ("taco_play", 0.1),
                         ("jaco_play", 0.05), ("berkeley_cable_routing", 0.05), ("language_table", 0.05)],
}


def lookup(name: str) -> RLDSDataset:
    key = ALIASES.get(name.lower(), name)
    if key not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join([*ALIASES, *DATASETS])}")
    return DATASETS[key]


def native_fps(builder_name: str) -> float | None:
    d = DATASETS.get(builder_name)
    return d.fps if d else None
