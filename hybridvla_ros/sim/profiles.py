"""Speed profiles every simulator's position controller and scripted expert share (numpy only).

A joint (or a tool point) approaching a stationary goal, or a position limit, goes no
faster than it can still stop on it at a given deceleration. The kinematic simulator,
the MuJoCo joint reference (:class:`~hybridvla_ros.sim.mujoco_common.JointReference`)
and the experts all use this one rule, so they brake the same way.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["brake_speed", "profile_speed", "wrap_angle"]


def wrap_angle(angle_rad: np.ndarray | float) -> np.ndarray | float:
    """Angle(s) wrapped into [-pi, pi)."""
    return (np.asarray(angle_rad) + math.pi) % (2.0 * math.pi) - math.pi


def brake_speed(dist: np.ndarray | float, amax: np.ndarray | float, dt_s: float) -> np.ndarray:
    """Largest speed for the coming step of ``dt_s`` after which braking at ``amax`` still
    stops within the remaining distance (``dist`` >= 0 before the step).

    Solves v^2 / (2 amax) = dist - v dt: the state after the step lies on the continuous
    stopping curve, so whatever the next step's length, slowing by amax * dt keeps it there
    (sqrt(x + y) >= sqrt(x)); the acceleration limit is never in conflict with a position
    limit or goal. Far away it is ~sqrt(2 amax dist); close by ~dist / dt (lands in a step)."""
    a_dt = amax * dt_s
    return np.sqrt(a_dt * a_dt + 2.0 * amax * np.maximum(dist, 0.0)) - a_dt


def profile_speed(abs_err: np.ndarray | float, vmax: np.ndarray | float, amax: np.ndarray | float,
                  dt_s: float) -> np.ndarray:
    """Fastest speed toward a stationary goal ``abs_err`` away that can still stop on it
    (at most ``vmax``)."""
    return np.minimum(vmax, brake_speed(abs_err, amax, dt_s))
