"""Parameters of ``sim_robot_node``."""
from __future__ import annotations

from dataclasses import dataclass

from hybridvla_ros.params.base import ParameterError, param
from hybridvla_ros.params.embodiment import EmbodimentParams


@dataclass(frozen=True, kw_only=True)
class SimRobotParams(EmbodimentParams):
    """The simulated robot: kinematic (every embodiment) or MuJoCo physics (franka, aloha)."""

    physics: str = param("simulator: kinematic (fast, no contact dynamics) or mujoco (franka, aloha)", "kinematic",
                         choices=("kinematic", "mujoco"))
    scene: str = param("scene preset: nominal (the training distribution) or shifted (mujoco only)", "nominal",
                       choices=("nominal", "shifted"))
    success_tolerance_m: float = param("task error (m) under which the task counts as done", 0.02,
                                       min=0.0001, max=1.0)

    joint_state_rate_hz: float = param("joint_states publish rate", 100.0, min=1.0, max=1000.0)
    camera_rate_hz: float = param("camera publish rate", 30.0, min=1.0, max=120.0)
    extra_camera_rate_hz: float = param("publish rate of each of the extra_cameras the simulator renders (one "
                                        "render per tick, in turn; each takes 2-7 ms of this node's thread)", 30.0,
                                        min=1.0, max=120.0)
    image_width: int = param("camera image width (px)", 160, min=16, max=1920)
    image_height: int = param("camera image height (px)", 120, min=16, max=1080)
    camera_frame_id: str = param("frame_id of the camera images", "camera_optical_frame")
    seed: int = param("random seed of the scene; episode k of a run uses seed + k", 0, min=0)
    episode_s: float = param("seconds before a new target is placed (0: never)", 0.0, min=0.0)
    publish_compressed: bool = param("also publish <camera_topic>/compressed (JPEG)", False)
    expert_chunk_rate_hz: float = param("publish the scripted expert's next chunk on sim_robot/expert_chunk at this "
                                        "rate (0: never; for inference policy_source sim_expert)", 0.0,
                                        min=0.0, max=100.0)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.physics == "mujoco" and self.embodiment not in ("franka", "aloha"):
            raise ParameterError(f"physics: 'mujoco' has scenes for franka and aloha only, not {self.embodiment!r}")
        if self.scene != "nominal" and self.physics != "mujoco":
            raise ParameterError(f"scene: {self.scene!r} needs physics 'mujoco' (the kinematic sim has one scene)")
