"""The ALOHA cube-transfer expert's plan: the task phase and each arm's waypoint (numpy only).

The phase is read from the state (which grippers hold the cube, cube and pinch positions,
finger openings; no step counter), so the expert picks up wherever a person or a policy
left the robots: reach / descend / grasp / regrasp (the left arm picking), lift (left
holds, carries to the hold point), approach (the right moves in), handover (both hold:
the left opens), release (the right holds, the left backs off), done (success). Each
phase gives each arm a :class:`Waypoint`: where its pinch point goes, how the gripper is
turned, and whether it squeezes. The left gripper picks pointing 60 degrees down (as
ACT's scripted policy), square to the cube's faces; the right one is level and rolled
90 degrees so the two grippers' fingers pass each other.

:class:`~hybridvla_ros.sim.mujoco_aloha.MujocoAlohaSim` reads the :class:`AlohaTaskState`
from MuJoCo and turns the waypoints into joint targets (one IK step per arm).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["PHASES", "GRIP_MIN_M", "AlohaTaskState", "Waypoint", "classify_phase", "plan_waypoints",
           "left_rot", "right_rot", "frame"]

PHASES = ("reach", "descend", "grasp", "regrasp", "lift", "approach", "handover", "release", "done")
GRIP_MIN_M = 0.03  # a gripper closed below this holds nothing (the cube stops it at ~0.042)
PICK_PITCH_RAD = math.radians(60.0)  # the left gripper points 60 deg down to pick (as ACT)
OPEN_ENOUGH_M = 0.053  # a gripper opened this far is open (fully open: 0.057)
_ABOVE_M = 0.07  # approach height of the pinch point above the cube centre
_GRASP_ABOVE_CENTRE_M = 0.012  # the tilted fingertips reach 2 cm below the pinch: keep off the table
_GRASP_TOL_M = 0.01
_RIGHT_GRASP_OFFSET_M = 0.004  # right pinch this far +x of the cube centre (deep in the fingers)
_RIGHT_PREGRASP_M = 0.09  # right waits this much farther out along +x
_RIGHT_CLOSE_TOL_M = 0.01  # the right closes with its pinch this close to its grasp point


@dataclass(frozen=True)
class AlohaTaskState:
    """What the expert reads (world frame, m)."""

    cube_m: np.ndarray  # (3,) cube centre
    cube_x_axis: np.ndarray  # (3,) the cube's x axis
    pinch_m: np.ndarray  # (2, 3) pinch points [left, right]
    opening_m: np.ndarray  # (2,) finger openings (left_finger joints) [left, right]
    hold_m: np.ndarray  # (3,) where the right gripper must end up holding the cube centre
    base_xy: np.ndarray  # (2, 2) arm bases (x, y) [left, right]


@dataclass
class Waypoint:
    """What the expert wants of one arm this control period."""

    pinch_m: np.ndarray  # (3,) world goal of the pinch point
    rot: np.ndarray  # (3, 3) world goal orientation of the gripper
    close: bool  # squeeze (True) or open the gripper


def frame(x_axis: np.ndarray, y_hint: np.ndarray) -> np.ndarray:
    """(3, 3) rotation whose columns are x_axis, y (y_hint made orthogonal), z = x cross y."""
    x = x_axis / np.linalg.norm(x_axis)
    y = y_hint - x * float(x @ y_hint)
    y /= np.linalg.norm(y)
    return np.stack([x, y, np.cross(x, y)], axis=1)


def left_rot(base_xy: np.ndarray, point: np.ndarray, pitch_rad: float = PICK_PITCH_RAD,
             face_yaw_rad: float | None = None) -> np.ndarray:
    """Left gripper orientation: pointing from its base ``base_xy`` (2,) toward ``point``,
    pitched down. With ``face_yaw_rad`` (the cube's yaw), the heading snaps to the cube's
    face direction nearest to that bearing, so the fingers close square on two faces."""
    d = point[:2] - base_xy
    yaw = math.atan2(d[1], d[0])
    if face_yaw_rad is not None:
        quarter = math.pi / 2
        yaw = face_yaw_rad + quarter * round((yaw - face_yaw_rad) / quarter)
    x_axis = np.array([math.cos(pitch_rad) * math.cos(yaw), math.cos(pitch_rad) * math.sin(yaw),
                       -math.sin(pitch_rad)])
    return frame(x_axis, np.array([-math.sin(yaw), math.cos(yaw), 0.0]))


def right_rot(base_xy: np.ndarray, point: np.ndarray) -> np.ndarray:
    """Right gripper orientation: level, pointing from its base ``base_xy`` (2,) toward
    ``point``, the fingers closing vertically (rolled 90 deg) so they pass the left
    gripper's fingers."""
    d = point[:2] - base_xy
    yaw = math.atan2(d[1], d[0])
    return frame(np.array([math.cos(yaw), math.sin(yaw), 0.0]), np.array([0.0, 0.0, 1.0]))


def classify_phase(state: AlohaTaskState, held_left: bool, held_right: bool, succeeded: bool) -> str:
    """The task phase (one of PHASES) given which grippers hold the cube and whether the task
    is done (the simulator's debounced contact reading and success check)."""
    cube = state.cube_m
    pinch = state.pinch_m
    opening = state.opening_m
    if succeeded:
        return "done"
    if held_right and not held_left:
        return "release"
    if held_left and held_right:
        return "handover"
    if held_left:
        return "approach" if np.linalg.norm(cube - state.hold_m) < 0.03 else "lift"
    grasp_point = cube + np.array([0.0, 0.0, _GRASP_ABOVE_CENTRE_M])
    dist = float(np.linalg.norm(pinch[0] - grasp_point))
    closing = GRIP_MIN_M < opening[0] < OPEN_ENOUGH_M
    if dist < _GRASP_TOL_M or (closing and dist < 2.0 * _GRASP_TOL_M):
        return "grasp"  # at the grasp point, or closing there: close
    if opening[0] < OPEN_ENOUGH_M and dist < 0.03:
        return "regrasp"  # closed on nothing, or off the grasp point: open again
    if np.linalg.norm(pinch[0, :2] - cube[:2]) < 0.015 and pinch[0, 2] > cube[2] - 0.005:
        return "descend"
    return "reach"


def plan_waypoints(phase: str, state: AlohaTaskState) -> tuple[Waypoint, Waypoint]:
    """The phase machine: (left, right) arm goals for this control period, from the state only."""
    cube = state.cube_m
    pinch = state.pinch_m
    hold = state.hold_m
    opening = state.opening_m
    right_grasp = cube + np.array([_RIGHT_GRASP_OFFSET_M, 0.0, 0.0])
    right_pre_hold = hold + np.array([_RIGHT_GRASP_OFFSET_M + _RIGHT_PREGRASP_M, 0.0, 0.0])
    right_wait = Waypoint(right_pre_hold, right_rot(state.base_xy[1], hold), close=False)
    retreat = hold + np.array([-0.06, 0.0, 0.10])
    if phase in ("reach", "descend", "grasp", "regrasp"):
        above = cube + np.array([0.0, 0.0, _ABOVE_M])
        grasp_point = cube + np.array([0.0, 0.0, _GRASP_ABOVE_CENTRE_M])
        cube_x = state.cube_x_axis
        rot = left_rot(state.base_xy[0], cube, face_yaw_rad=math.atan2(cube_x[1], cube_x[0]))
        if phase == "reach":
            left = Waypoint(above, rot, close=False)
        elif phase == "descend":
            ok = opening[0] >= OPEN_ENOUGH_M
            left = Waypoint(grasp_point if ok else pinch[0], rot, close=False)
        elif phase == "grasp":
            left = Waypoint(grasp_point, rot, close=True)
        else:
            left = Waypoint(pinch[0], rot, close=False)
        return left, right_wait
    if phase == "lift":
        # Straight up first, then over to the hold point, carrying the cube centre.
        goal = hold if cube[2] > 0.09 else np.array([cube[0], cube[1], 0.12])
        left = Waypoint(pinch[0] + goal - cube, left_rot(state.base_xy[0], hold), close=True)
        return left, right_wait
    if phase == "approach":
        left = Waypoint(pinch[0] + hold - cube, left_rot(state.base_xy[0], hold), close=True)
        lateral = np.linalg.norm((pinch[1] - right_grasp)[1:])
        if np.linalg.norm(pinch[1] - right_grasp) < _RIGHT_CLOSE_TOL_M:
            right = Waypoint(right_grasp, right_rot(state.base_xy[1], hold), close=True)
        elif lateral < 2.0 * _RIGHT_CLOSE_TOL_M and pinch[1, 0] > right_grasp[0] - 0.005:
            right = Waypoint(right_grasp, right_rot(state.base_xy[1], hold), close=False)
        else:
            right = Waypoint(right_grasp + [_RIGHT_PREGRASP_M, 0.0, 0.0], right_rot(state.base_xy[1], hold),
                             close=False)
        return left, right
    if phase == "handover":
        left = Waypoint(pinch[0], left_rot(state.base_xy[0], hold), close=False)
        right = Waypoint(pinch[1], right_rot(state.base_xy[1], hold), close=True)
        return left, right
    # release / done: the right carries the cube to the hold point; the left opens, then backs out.
    right = Waypoint(pinch[1] + hold - cube, right_rot(state.base_xy[1], hold), close=True)
    if opening[0] < OPEN_ENOUGH_M:
        left = Waypoint(pinch[0], left_rot(state.base_xy[0], hold), close=False)
    else:
        left = Waypoint(retreat, left_rot(state.base_xy[0], hold), close=False)
    return left, right
