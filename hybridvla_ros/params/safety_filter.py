"""Parameters of ``safety_filter_node`` (the joint limits come from the embodiment section)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hybridvla_ros.core.safety import SafetyLimits
from hybridvla_ros.params.base import ParameterError, param
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
    trajectory_points: int = param(
        "JointTrajectory points per command: the checked action and the plan's next checked targets one period "
        "apart (then braking to rest, so the last point is at rest); 1: a single point", 1, min=1, max=200)
    timing: str = param(
        "when commands go out: 'event' (as each action arrives) or 'thread' (a timing thread at absolute "
        "deadlines, one per control period)", "event", choices=("event", "thread"))
    timing_rt_priority: int = param(
        "SCHED_FIFO priority of the timing thread (timing 'thread'; needs CAP_SYS_NICE, else normal "
        "priority with a warning); 0: normal scheduling", 20, min=0, max=99)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.trajectory_points > 1 and self.command_type != "trajectory_msgs/JointTrajectory":
            raise ParameterError(f"trajectory_points: {self.trajectory_points} needs command_type "
                                 f"trajectory_msgs/JointTrajectory, got {self.command_type}")

    def safety_limits(self) -> SafetyLimits:
        """The core filter's limits from these parameters (ValueError if inconsistent)."""
        return SafetyLimits(
            position_min=np.asarray(self.position_min), position_max=np.asarray(self.position_max),
            max_velocity=np.asarray(self.max_velocity), max_acceleration=np.asarray(self.max_acceleration),
            max_force_n=self.max_force_n, max_torque_nm=self.max_torque_nm,
            watchdog_timeout_s=self.watchdog_timeout_s, velocity_scale=self.velocity_scale)
