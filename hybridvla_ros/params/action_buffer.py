"""Parameters of ``action_buffer_node``."""
from __future__ import annotations

from dataclasses import dataclass

from hybridvla_ros.core.action_buffer import ActionBufferConfig
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

    def buffer_config(self) -> ActionBufferConfig:
        """The core buffer's configuration from these parameters."""
        return ActionBufferConfig(control_period_s=self.control_period_s, recompute_every=self.recompute_every,
                                  blend_steps=self.blend_steps, hold_grace_s=self.hold_grace_s,
                                  max_chunk_age_s=self.max_chunk_age_s)
