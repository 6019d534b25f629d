"""Parameters of ``sync_node``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from hybridvla_ros.params.base import param
from hybridvla_ros.params.embodiment import EmbodimentParams


@dataclass(frozen=True, kw_only=True)
class SyncParams(EmbodimentParams):
    """Camera + proprio synchronization."""

    image_transport: Literal["raw", "compressed"] = param(
        "subscribe to sensor_msgs/Image (raw) or <camera_topic>/compressed", "raw")
    max_skew_s: float = param(
        "max distance from a frame stamp to the joint sample used (about half the joint_states period)", 0.006,
        min=1e-4, max=1.0)
    max_age_s: float = param("frames older than this when they arrive are dropped", 0.3, min=1e-3, max=10.0)
    wrench_required: bool = param("drop frames when no recent wrench is known", False)
    observation_image_size: int = param("square size the image is resized to for the policy (px)", 96, min=16, max=1024)
