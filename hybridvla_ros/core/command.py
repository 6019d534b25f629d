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


def plan_targets(action: np.ndarray, preview: np.ndarray | list[float], preview_period_s: float, period_s: float,
                 count: int) -> np.ndarray:
    """(n, D), n <= count: the plan's targets one ``period_s`` apart after ``action`` (D,).

    The plan is ``action`` at time 0 and row j of ``preview`` (row-major (m, D)) at
    (j + 1) * ``preview_period_s``; row k of the result is the plan at (k + 1) * ``period_s``
    (linear between the plan's targets), for times within the plan. An empty preview gives
    (0, D). Raises ValueError for a preview that is not whole rows of D finite numbers or a
    non-positive or non-finite preview period.
    """
    a = np.asarray(action, dtype=np.float64)
    dim = a.shape[0]
    flat = np.asarray(preview, dtype=np.float64).reshape(-1)
    if flat.size == 0 or count <= 0:
        return np.zeros((0, dim))
    if flat.size % dim:
        raise ValueError(f"preview has {flat.size} values, not a whole number of rows of {dim}")
    if not np.isfinite(flat).all():
        raise ValueError("preview has a non-finite value")
    if not (np.isfinite(preview_period_s) and preview_period_s > 0.0):
        raise ValueError(f"preview_period_s must be finite and > 0, got {preview_period_s!r}")
    plan = np.vstack([a[None, :], flat.reshape(-1, dim)])  # (m + 1, D)
    if abs(preview_period_s - period_s) <= 1e-6 * period_s:
        return plan[1:count + 1].copy()  # the plan's own period: its targets as they are
    horizon = (plan.shape[0] - 1) * preview_period_s
    n = min(count, int(np.floor(horizon / period_s + 1e-9)))
    if n <= 0:
        return np.zeros((0, dim))
    times = np.arange(1, n + 1) * period_s  # (n,)
    pos = times / preview_period_s  # (n,) fractional index into the plan
    lo = np.minimum(np.floor(pos).astype(np.int64), plan.shape[0] - 1)
    hi = np.minimum(lo + 1, plan.shape[0] - 1)
    w = (pos - lo)[:, None]
    return (1.0 - w) * plan[lo] + w * plan[hi]


def trajectory_velocities(previous: np.ndarray, points: np.ndarray, period_s: float) -> np.ndarray:
    """(m, D) velocities consistent with ``points`` (m, D) one ``period_s`` apart after
    ``previous`` (D,), the command before the first point: central differences, and 0 at
    the last point (a trajectory ends at rest)."""
    q = np.vstack([np.asarray(previous, dtype=np.float64)[None, :], points])  # (m + 1, D)
    v = np.zeros_like(points, dtype=np.float64)
    if points.shape[0] > 1:
        v[:-1] = (q[2:] - q[:-2]) / (2.0 * period_s)
    return v
