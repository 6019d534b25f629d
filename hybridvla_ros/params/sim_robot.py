"""Parameters of ``sim_robot_node``."""
from __future__ import annotations

from dataclasses import dataclass

from hybridvla_ros.params.base import param
from hybridvla_ros.params.embodiment import EmbodimentParams


@dataclass(frozen=True, kw_only=True)
class SimRobotParams(EmbodimentParams):
    """Kinematic simulated robot."""

    joint_state_rate_hz: float = param("joint_states publish rate", 100.0, min=1.0, max=1000.0)
    camera_rate_hz: float = param("camera publish rate", 30.0, min=1.0, max=120.0)
    image_width: int = param("camera image width (px)", 160, min=16, max=1920)
    image_height: int = param("camera image height (px)", 120, min=16, max=1080)
    camera_frame_id: str = param("frame_id of the camera images", "camera_optical_frame")
    seed: int = param("random seed of the scene (target placement)", 0, min=0)
    episode_s: float = param("seconds before a new target is placed (0: never)", 0.0, min=0.0)
    publish_compressed: bool = param("also publish <camera_topic>/compressed (JPEG)", False)
