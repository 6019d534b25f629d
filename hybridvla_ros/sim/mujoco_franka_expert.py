"""The Franka pick-and-place expert's plan: which phase the task is in and where the TCP goes next.

The expert derives everything from the state alone (held or not, cube, TCP and target
positions, hand tilt, armed), never from a counter, so it takes over from any state. Its
waypoint sits on a funnel above where the cube is (not held) or goes (held): the smaller
the horizontal error, the lower, down to touching, so the path bends smoothly from gliding
over to going down (no corners for a safety filter's acceleration limit to cut); a cube is
first lifted off the table before turning toward the target, and a TCP low beside the
cube rises first. After the release it retreats straight up. Phase names for monitoring:
unwind (hand tilted > 0.6 rad, or a joint within 0.05 rad of a limit: straight joint-space
move home), approach, descend, lift, carry, place, retreat, done. Landing is at 4 cm/s so
the expert never presses (< 5 N, far below the safety filter's 40 N).

:func:`plan_expert` is the decision (numpy only, given a :class:`FrankaTaskState`);
:class:`~hybridvla_ros.sim.mujoco_franka.MujocoFrankaSim` reads the state from MuJoCo and
turns the waypoint into a joint target with one damped least-squares IK step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hybridvla_ros.sim.mujoco_franka_model import (
    CUBE_HALF_SIZE_M,
    CUBE_TOUCH_M,
    CUP_TOUCH_M,
    TABLE_TOP_Z_M,
    box_corners_z,
)

__all__ = ["FrankaTaskState", "plan_expert", "landing_speed", "CART_SPEED_M_S", "PHASES"]

PHASES = ("unwind", "approach", "descend", "lift", "carry", "place", "retreat", "done")
CART_SPEED_M_S = 0.5  # the expert's top TCP speed
_CONTACT_SPEED_M_S = 0.04  # last centimetres before touching the cube / table
_HOVER_Z_M = TABLE_TOP_Z_M + 0.14  # TCP height for moving over the table
_SAFE_CLEARANCE_M = 0.035  # cube bottom / TCP above cube top before moving sideways
# The phase is called descend / place once the waypoint has started down the funnel and the
# TCP is within _ALIGN_TOL_M + _ALIGN_CONE * height of the axis (names for monitoring: the
# waypoint itself moves continuously).
_ALIGN_TOL_M = 0.012
_ALIGN_CONE = 0.5
_DONE_TOL_M = 0.015  # a released cube this close to the target is left alone
_FUNNEL_SLOPE = 1.0  # waypoint height above the cube / target per metre of horizontal error
# Horizontal error (m) the funnel ignores: within it the waypoint goes straight down (still
# aiming at the centre). Gripping: the 17 mm cup fits on the 22.5 mm half-width top face
# anywhere within 5 mm of the centre. Placing: the task's 20 mm tolerance.
_GRIP_DEADBAND_M = 0.005
_PLACE_DEADBAND_M = 0.01
_MAX_TILT_RAD = 0.6  # hand tilted more than this from pointing down: unwind to home first
_LIMIT_MARGIN_RAD = 0.05  # a joint this close to a limit: unwind too


@dataclass(frozen=True)
class FrankaTaskState:
    """What the expert reads (world frame, m; joints rad)."""

    tcp_m: np.ndarray  # (3,) the suction cup's face
    positions: np.ndarray  # (7,) joint positions
    position_min: np.ndarray  # (7,) joint limits
    position_max: np.ndarray  # (7,)
    tilt_rad: float  # angle between the tool axis and straight down
    cube_m: np.ndarray  # (3,) cube centre
    cube_rot: np.ndarray  # (3, 3) cube orientation
    target_m: np.ndarray  # (3,) centre of the place target on the table
    held: bool  # the suction cup holds the cube
    armed: bool  # the suction cup grips on touch (False just after a release)
    cube_resting: bool  # released, on the table, still
    task_error_m: float  # MujocoFrankaSim.task_error_m()


def landing_speed(goal_dz_m: float, gap_m: float) -> float:
    """Speed limit (m/s) going down onto a surface ``gap_m`` below: 4 cm/s for the last
    5 mm, +2.5 cm/s per cm above that; full speed when the waypoint is not below."""
    if goal_dz_m > -0.001:
        return CART_SPEED_M_S
    return _CONTACT_SPEED_M_S + 2.5 * max(0.0, gap_m - 0.005)


def plan_expert(state: FrankaTaskState) -> tuple[str, np.ndarray, float]:
    """(phase (one of PHASES), TCP waypoint (3,) m, speed limit m/s) for ``state``."""
    tcp = state.tcp_m
    q = state.positions
    if state.tilt_rad > _MAX_TILT_RAD or np.any(np.minimum(q - state.position_min, state.position_max - q)
                                               < _LIMIT_MARGIN_RAD):
        # Left in a contorted pose (or against a joint limit, where the Cartesian steps
        # below stall): straight back toward home in joint space (the Cartesian steps
        # assume the hand roughly points down and the joints are free to move).
        return "unwind", tcp.copy(), CART_SPEED_M_S
    cube = state.cube_m
    corners_z = box_corners_z(cube, state.cube_rot, CUBE_HALF_SIZE_M)
    target = state.target_m
    # Waypoints sit on a funnel above where the cube goes (or is): the closer horizontally,
    # the lower, down to touching. Moving toward a point on the funnel's axis keeps the
    # TCP above the funnel (no edge is clipped), and the path bends smoothly from gliding
    # over to going down: no corner for a safety filter's acceleration limit to cut.
    if state.held:
        bottom = float(corners_z.min() - TABLE_TOP_Z_M)
        offset = tcp - cube  # the grip's offset, kept while carrying
        xy_err = max(0.0, float(np.hypot(*(target[:2] - cube[:2]))) - _PLACE_DEADBAND_M)
        carry = _HOVER_Z_M - TABLE_TOP_Z_M - 2 * CUBE_HALF_SIZE_M  # cube bottom while carrying
        height = 0.5 * CUBE_TOUCH_M + min(carry, _FUNNEL_SLOPE * xy_err)  # cube bottom goal
        aim = target[:2]
        lifting = bottom < _SAFE_CLEARANCE_M and bottom < _FUNNEL_SLOPE * xy_err - 0.005
        if lifting:
            # Low and away from the target (below its funnel): off the table first, aiming
            # above the cube itself and turning toward the target as it rises.
            w = (bottom / _SAFE_CLEARANCE_M) ** 2
            aim = cube[:2] + w * (target[:2] - cube[:2])
        goal = np.array([aim[0] + offset[0], aim[1] + offset[1], tcp[2] + height - bottom])
        speed = landing_speed(goal[2] - tcp[2], bottom)
        if _FUNNEL_SLOPE * xy_err < carry and xy_err <= _ALIGN_TOL_M + _ALIGN_CONE * bottom:
            return "place", goal, speed
        return ("lift" if lifting else "carry"), goal, speed
    if not state.armed or state.cube_resting and state.task_error_m <= _DONE_TOL_M:
        # Straight up: away from the cube just released (not re-armed yet), or done.
        xy = cube[:2] if not state.armed else tcp[:2]
        goal = np.array([xy[0], xy[1], max(_HOVER_Z_M, tcp[2])])
        phase = "done" if tcp[2] >= _HOVER_Z_M - 0.01 else "retreat"
        return phase, goal, CART_SPEED_M_S
    top = float(corners_z.max())
    above_top = float(tcp[2] - top)
    xy_err = max(0.0, float(np.hypot(*(cube[:2] - tcp[:2]))) - _GRIP_DEADBAND_M)
    hover = max(_HOVER_Z_M, top + _SAFE_CLEARANCE_M + 0.01) - top
    if above_top < _FUNNEL_SLOPE * xy_err - 0.005 and above_top < _SAFE_CLEARANCE_M:
        # Low beside the cube (outside the funnel): up first, turning toward it as it rises.
        w = max(0.0, above_top / _SAFE_CLEARANCE_M) ** 2
        aim = tcp[:2] + w * (cube[:2] - tcp[:2])
        return "approach", np.array([aim[0], aim[1], top + hover]), CART_SPEED_M_S
    # The cup stops just inside its touch distance: it grips as the arm comes to rest,
    # instead of pressing the welded cube into the table.
    goal = np.array([cube[0], cube[1], top + 0.85 * CUP_TOUCH_M + min(hover, _FUNNEL_SLOPE * xy_err)])
    going_down = _FUNNEL_SLOPE * xy_err < hover and xy_err <= _ALIGN_TOL_M + _ALIGN_CONE * max(0.0, above_top)
    phase = "descend" if going_down else "approach"
    return phase, goal, landing_speed(goal[2] - tcp[2], above_top)
