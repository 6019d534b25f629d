"""Safe position targets -> what the robot's controller takes (ROS-free).

The safety filter thinks in absolute position targets for every embodiment. A
position-controlled arm takes them as they are (JointTrajectory / Float64MultiArray);
a mobile base takes a velocity, so the step between two targets is turned into a
body-frame Twist here.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BaseTwist:
    """A planar body-frame velocity command."""

    linear_x_mps: float
    linear_y_mps: float
    angular_z_radps: float


def pose_step_to_twist(previous_target: np.ndarray, target: np.ndarray, period_s: float) -> BaseTwist:
    """Body-frame twist that moves a base from pose ``previous_target`` to ``target`` in ``period_s``.

    Poses are ``[x_m, y_m, yaw_rad]`` in the odom frame. The world-frame displacement is
    rotated into the base frame at the previous yaw. Raises ValueError on a non-positive
    period or poses that are not 3 finite numbers.
    """
    prev = np.asarray(previous_target, dtype=np.float64)
    nxt = np.asarray(target, dtype=np.float64)
    if prev.shape != (3,) or nxt.shape != (3,):
        raise ValueError(f"pose_step_to_twist: poses must be [x, y, yaw], got shapes {prev.shape} and {nxt.shape}")
    if not (np.all(np.isfinite(prev)) and np.all(np.isfinite(nxt))):
        raise ValueError("pose_step_to_twist: poses must be finite")
    if not period_s > 0.0:
        raise ValueError(f"pose_step_to_twist: period_s must be > 0, got {period_s!r}")
    dx, dy = (nxt[:2] - prev[:2]) / period_s
    c, s = np.cos(prev[2]), np.sin(prev[2])
    return BaseTwist(
        linear_x_mps=float(c * dx + s * dy),
        linear_y_mps=float(-s * dx + c * dy),
        angular_z_radps=float((nxt[2] - prev[2]) / period_s),
    )
