"""Parameters of ``action_buffer_node``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from hybridvla_ros.core.action_buffer import ActionBufferConfig, ChunkLimits
from hybridvla_ros.params.base import param
from hybridvla_ros.params.embodiment import EmbodimentParams


@dataclass(frozen=True, kw_only=True)
class ActionBufferParams(EmbodimentParams):
    """Chunk -> steady command stream."""

    blend_steps: int = param("control periods over which a new chunk is cross-faded in", 3, min=0, max=100)
    hold_grace_s: float = param("repeat the last action this long after the chunk runs out, then hold", 0.1,
                                min=0.0, max=5.0)
    max_chunk_age_s: float = param("chunks answering observations older than this are rejected", 1.0,
                                   min=0.01, max=30.0)
    chunk_check: Literal["off", "reject", "reshape"] = param(
        "whole-chunk check of a new chunk as a trajectory (jump from the executing target, velocity, "
        "acceleration, jerk): reject a chunk that breaks the limits, reshape it (a ramp from the executing "
        "target that follows the chunk within the limits), or off. Off by default: the scripted expert's own "
        "chunks break the Franka's joint-2 acceleration limit by up to 20 %, and reshaping them made the MuJoCo "
        "pick-and-place 0.7 s slower", "off")
    chunk_velocity_scale: float = param("the chunk check's velocity limit as a fraction of max_velocity", 1.0,
                                        min=0.01, max=10.0)
    chunk_acceleration_scale: float = param(
        "the chunk check's acceleration limit as a fraction of max_acceleration", 1.0, min=0.01, max=10.0)
    chunk_jerk_factor: float = param(
        "the chunk check's jerk limit is this times the (scaled) max_acceleration / control period: 1 lets the "
        "acceleration change by its full limit in one period (at 50 Hz on the Franka 750 rad/s^3 for joint 1, "
        "a tenth of the 7500 rad/s^3 of Franka's datasheet); below 1 a reshape may find no feasible step",
        1.0, min=0.01, max=100.0)
    preview_steps: int = param("planned targets after the action each policy ActionStep carries (0: none)", 10,
                               min=0, max=1024)

    def chunk_limits(self) -> ChunkLimits:
        """The whole-chunk check's limits: the embodiment's, scaled; jerk from acceleration and period."""
        accel = tuple(a * self.chunk_acceleration_scale for a in self.max_acceleration)
        return ChunkLimits(max_velocity=tuple(v * self.chunk_velocity_scale for v in self.max_velocity),
                           max_acceleration=accel,
                           max_jerk=tuple(a * self.chunk_jerk_factor / self.control_period_s for a in accel))

    def buffer_config(self) -> ActionBufferConfig:
        """The core buffer's configuration from these parameters."""
        return ActionBufferConfig(control_period_s=self.control_period_s, recompute_every=self.recompute_every,
                                  blend_steps=self.blend_steps, hold_grace_s=self.hold_grace_s,
                                  max_chunk_age_s=self.max_chunk_age_s, chunk_check=self.chunk_check,
                                  chunk_limits=self.chunk_limits(), preview_steps=self.preview_steps)
