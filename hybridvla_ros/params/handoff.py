"""Parameters of ``handoff_node`` (who drives: policy, human or hold); every field has a default."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hybridvla_ros.params.base import ParameterError, param
from hybridvla_ros.params.embodiment import EmbodimentParams


@dataclass(frozen=True, kw_only=True)
class HandoffParams(EmbodimentParams):
    """Thresholds and timeouts of hybridvla_ros.core.handoff, plus the OOD score's statistics."""

    # --- confidence -> PAUSED -> ESCALATED
    pause_confidence: float = param("a chunk with confidence below this is low-confidence", 0.3, min=0.0, max=1.0)
    resume_confidence: float = param(
        "a chunk at or above this clears the low-confidence streak; resume_policy needs it (hysteresis)",
        0.5, min=0.0, max=1.0)
    low_confidence_chunks_to_pause: int = param("consecutive low-confidence chunks that pause the policy",
                                                2, min=1, max=1000)
    max_consecutive_pauses: int = param(
        "pauses (low confidence or failure) in a row allowed; the next one escalates", 3, min=0, max=1000)
    pause_count_reset_s: float = param(
        "the pause count clears after the policy drove this long after a hand-back without pausing",
        10.0, min=0.1, max=86400.0)
    # --- human override (twist_mux-like)
    deadman_timeout_s: float = param("a held deadman counts as released when no heartbeat came for this long",
                                     0.25, min=0.01, max=10.0)
    teleop_timeout_s: float = param("the human's command is stale after this long; the robot then holds",
                                    0.25, min=0.01, max=10.0)
    # --- out of distribution -> CONSERVATIVE
    ood_zscore: float = param("OOD score (z units) above which the policy drives conservatively", 4.0,
                              min=0.1, max=1000.0)
    ood_limit_margin_frac: float = param(
        "a joint closer than this fraction of its range to a limit scores above ood_zscore", 0.05,
        min=0.0, max=0.45)
    ood_ignore_joints: tuple[str, ...] = param(
        "joints left out of the OOD score (grippers, fingers that rest at a limit)", ())
    proprio_mean: tuple[float, ...] = param(
        "training mean of each joint position (the checkpoint's proprio normalizer); empty: limits only", ())
    proprio_std: tuple[float, ...] = param("training std of each joint position; empty: limits only", (),
                                           min=1e-9)
    conservative_velocity_scale: float = param("velocity_scale published in CONSERVATIVE", 0.3,
                                               min=0.01, max=1.0)
    conservative_exit_s: float = param("back to AUTONOMOUS after the OOD score was normal this long", 2.0,
                                       min=0.0, max=3600.0)
    # --- holds and publishing
    measured_timeout_s: float = param("a measured position older than this is not used as the hold target",
                                      0.5, min=0.001, max=60.0)
    hold_at_command_joints: tuple[str, ...] = param(
        "joints a hold keeps at their last command rather than the measured position: grippers, whose "
        "measured opening stops at the object they squeeze (holding there lets go)", ())
    mode_publish_rate_hz: float = param("rate of handoff/mode and handoff/velocity_scale besides every change",
                                        2.0, min=0.1, max=100.0)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.resume_confidence < self.pause_confidence:
            raise ParameterError(
                f"resume_confidence: {self.resume_confidence} is below pause_confidence {self.pause_confidence}")
        for name in ("ood_ignore_joints", "hold_at_command_joints"):
            unknown = [j for j in getattr(self, name) if j not in self.joint_names]
            if unknown:
                raise ParameterError(f"{name}: {unknown} are not in joint_names")
        if len(self.proprio_mean) != len(self.proprio_std):
            raise ParameterError(f"proprio_mean: {len(self.proprio_mean)} values but proprio_std has "
                                 f"{len(self.proprio_std)}; give both or neither")
        if self.proprio_mean and len(self.proprio_mean) != self.action_dim:
            raise ParameterError(f"proprio_mean: needs {self.action_dim} values (one per joint), "
                                 f"got {len(self.proprio_mean)}")

    @property
    def ood_ignore_mask(self) -> np.ndarray:
        """(D,) bool: True for joints left out of the OOD score."""
        return np.array([j in self.ood_ignore_joints for j in self.joint_names], dtype=bool)
