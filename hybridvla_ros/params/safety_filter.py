"""Parameters of ``safety_filter_node`` (the joint limits come from the embodiment section)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hybridvla_ros.core.safety import SafetyLimits
from hybridvla_ros.params.base import param
from hybridvla_ros.params.embodiment import EmbodimentParams


@dataclass(frozen=True, kw_only=True)
class SafetyFilterParams(EmbodimentParams):
    """Last word before the robot."""

    max_force_n: float = param("force norm that latches the e-stop (N)", min=0.1, max=5000.0)
    max_torque_nm: float = param("torque norm that latches the e-stop (Nm)", min=0.01, max=1000.0)
    watchdog_timeout_s: float = param("hold the robot when no action came for this long", 0.2, min=0.005, max=10.0)
    velocity_scale: float = param("fraction of max_velocity the policy may use", 1.0, min=0.01, max=1.0)
    trajectory_horizon_s: float = param(
        "time_from_start of the single JointTrajectory point (JointTrajectory controllers)", 0.0, min=0.0, max=1.0)

    def safety_limits(self) -> SafetyLimits:
        """The core filter's limits from these parameters (ValueError if inconsistent)."""
        return SafetyLimits(
            position_min=np.asarray(self.position_min), position_max=np.asarray(self.position_max),
            max_velocity=np.asarray(self.max_velocity), max_acceleration=np.asarray(self.max_acceleration),
            max_force_n=self.max_force_n, max_torque_nm=self.max_torque_nm,
            watchdog_timeout_s=self.watchdog_timeout_s, velocity_scale=self.velocity_scale)
