"""Parameters of ``sync_node``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from hybridvla_ros.params.base import param
from hybridvla_ros.params.embodiment import EmbodimentParams

_DAY_S = 86400.0


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
    max_camera_skew_s: float = param(
        "an extra camera's frame further than this from the anchor frame's stamp is not used: that camera is "
        "left out of the observation and counted stale (30 Hz cameras out of phase: up to 17 ms apart)", 0.05,
        min=1e-3, max=1.0)
    # --- stamps and clocks
    max_stamp_future_s: float = param(
        "a frame, joint_states or wrench stamped more than this ahead of this node's clock is dropped "
        "(future_stamp) and never becomes the reference later messages are ordered against", 0.1, min=1e-3, max=10.0)
    camera_stamp_offset_s: float = param(
        "added to the camera's stamps: its clock's known offset from this node's (a camera 0.5 s behind: 0.5)", 0.0,
        min=-_DAY_S, max=_DAY_S)
    joint_states_stamp_offset_s: float = param(
        "added to joint_states stamps: the robot driver's clock's known offset from this node's", 0.0,
        min=-_DAY_S, max=_DAY_S)
    wrench_stamp_offset_s: float = param(
        "added to wrench stamps: the F/T driver's clock's known offset from this node's", 0.0,
        min=-_DAY_S, max=_DAY_S)
    max_stamp_offset_s: float = param(
        "a source whose median (arrival - stamp) over its last 50 messages is beyond +-this is reported WARN on "
        "/diagnostics, with the <source>_stamp_offset_s that would correct it", 0.15, min=1e-3, max=60.0)
    clock_jump_after_s: float = param(
        "a source whose messages are rejected by stamp, steadily offset, for this long has jumped clocks "
        "(a driver restart, a sim time reset): its state is reset with a log line", 0.5, min=0.05, max=60.0)
    # --- frames
    max_image_pixels: int = param(
        "frames with more pixels are dropped (image_too_large) before decoding; a compressed frame's size is "
        "read from its header", 4_194_304, min=1, max=1_000_000_000)
    diagnostics_rate_hz: float = param(
        "rate of the sync's counters and clock offsets on /diagnostics ('hybridvla: sync inputs')", 1.0,
        min=0.1, max=50.0)

    def sync_config_fields(self) -> dict[str, float]:
        """The stamp and clock fields of core.sync.SyncConfig, from these parameters."""
        return {name: getattr(self, name) for name in (
            "max_stamp_future_s", "camera_stamp_offset_s", "joint_states_stamp_offset_s", "wrench_stamp_offset_s",
            "max_stamp_offset_s", "clock_jump_after_s")}
