"""The kinematic simulator's scenes, one registered entry per embodiment (numpy only).

A scene is what :class:`~hybridvla_ros.sim.kinematic.KinematicSim` needs to know about a
robot: its arm chains (:mod:`~hybridvla_ros.sim.kinematics`), where targets are drawn,
the camera, the joints the expert drives to fixed values, and how the hand is drawn
(:class:`ArmScene`); or a mobile base on a floor (:class:`BaseScene`). The engine holds no
robot names: a new embodiment's kinematic scene is one function here, decorated with
:func:`kinematic_scene`, which also registers the kinematic simulator for it
(:func:`~hybridvla_ros.sim.base.register_simulator`).

Built in: franka (Panda), aloha (two ViperX 300 s facing each other), leap (LEAP hand on
an xArm 7), hello (Stretch's differential-drive base).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from hybridvla_ros.params.embodiment import EmbodimentParams
from hybridvla_ros.sim.base import register_simulator
from hybridvla_ros.sim.kinematics import (
    ChainPose,
    SerialChain,
    panda_chain,
    rot_z,
    transform,
    vx300s_chain,
    xarm7_chain,
)

__all__ = [
    "Arm",
    "ArmScene",
    "BaseScene",
    "KinematicScene",
    "Segment",
    "HandDrawing",
    "SceneBuilder",
    "KINEMATIC_SIM",
    "kinematic_scene",
    "kinematic_scene_names",
    "make_kinematic_scene",
]

KINEMATIC_SIM = "hybridvla_ros.sim.kinematic:KinematicSim"  # the simulator every scene here registers

# A drawn link: (start (3,) m, end (3,) m, radius m, RGB colour).
Segment = tuple[np.ndarray, np.ndarray, float, tuple[int, int, int]]
# (FK pose of every arm, (D,) joint positions) -> the hand's segments, placed with the tool frame(s).
HandDrawing = Callable[[list[ChainPose], np.ndarray], list[Segment]]


def no_hand(poses: list[ChainPose], q: np.ndarray) -> list[Segment]:
    """Nothing drawn at the tool."""
    return []


@dataclass
class Arm:
    """One serial arm inside an embodiment's joint vector."""

    chain: SerialChain
    joints: np.ndarray  # (n,) indices into the embodiment's joint vector
    tool_offset_m: np.ndarray  # (3,) tool point in the wrist (F/T sensor) frame
    target_low_m: np.ndarray  # (3,) world box the target is drawn from
    target_high_m: np.ndarray  # (3,)
    link_radius_m: float
    color: tuple[int, int, int]
    joint_color: tuple[int, int, int]


@dataclass
class ArmScene:
    """Fixed-base arm(s) on a table at z = 0, targets above it."""

    arms: list[Arm]
    camera_eye_m: tuple[float, float, float]
    camera_look_at_m: tuple[float, float, float]
    vertical_fov_deg: float
    table_low_m: tuple[float, float]  # (x, y) corner of the table top
    table_high_m: tuple[float, float]
    extra_joints: np.ndarray  # (m,) joints the expert drives to fixed values (grippers, fingers)
    extra_goal: np.ndarray  # (m,) those values
    target_radius_m: float = 0.03
    cart_speed_m_s: float = 0.5  # expert's top tool speed
    cart_accel_m_s2: float = 2.0  # expert's planned deceleration near the target
    damping: float = 0.04  # DLS damping (m): bounded steps near singularities
    null_gain_per_s: float = 2.0  # pull toward home in the null space (keeps a natural posture)
    hand: HandDrawing = field(default=no_hand)  # what to draw at the tool

    @property
    def num_tool_points(self) -> int:
        """K: one tool point per arm."""
        return len(self.arms)


@dataclass
class BaseScene:
    """Stretch's differential-drive base on a floor, seen from a ceiling camera."""

    camera_height_m: float = 4.0
    vertical_fov_deg: float = 48.0
    robot_radius_m: float = 0.17  # Stretch base footprint ~0.34 m
    target_radius_m: float = 0.10
    target_min_m: float = 0.4
    target_max_m: float = 1.5
    num_tool_points: int = 1
    # Seconds an episode must last for the expert to reach any target: at Stretch's 0.3 m/s and
    # 0.3 m/s^2 a target 1.5 m behind takes a half turn and a 1.5 m drive, 9.0 s (180 steps at
    # 20 Hz); 3 s episodes (60 steps) cut it off mid-way, 0/20 reached (issue 16).
    expert_time_s: float = 10.0


KinematicScene = ArmScene | BaseScene
SceneBuilder = Callable[[EmbodimentParams], KinematicScene]


@dataclass(frozen=True)
class _SceneEntry:
    action_dim: int
    build: SceneBuilder


_SCENES: dict[str, _SceneEntry] = {}


def kinematic_scene(embodiment: str, action_dim: int) -> Callable[[SceneBuilder], SceneBuilder]:
    """Decorator: register ``build(params) -> scene`` as the kinematic scene of ``embodiment``
    (which drives ``action_dim`` joints) and the kinematic simulator for it. ValueError for
    a name registered twice or an action_dim < 1."""
    if isinstance(action_dim, bool) or not isinstance(action_dim, int) or action_dim < 1:
        raise ValueError(f"kinematic_scene: action_dim must be an int >= 1, got {action_dim!r}")

    def register(build: SceneBuilder) -> SceneBuilder:
        if embodiment in _SCENES:
            raise ValueError(f"kinematic_scene: {embodiment!r} already has a kinematic scene")
        register_simulator("kinematic", embodiment, KINEMATIC_SIM)
        _SCENES[embodiment] = _SceneEntry(action_dim, build)
        return build

    return register


def kinematic_scene_names() -> tuple[str, ...]:
    """Embodiments with a kinematic scene, in registration order."""
    return tuple(_SCENES)


def make_kinematic_scene(params: EmbodimentParams) -> KinematicScene:
    """The scene of ``params.embodiment``; ValueError for an embodiment without one or an
    action_dim its scene does not drive."""
    name = params.embodiment
    entry = _SCENES.get(name)
    if entry is None:
        raise ValueError(f"embodiment {name!r} has no kinematic scene (scenes: {list(_SCENES)})")
    if params.action_dim != entry.action_dim:
        raise ValueError(f"{name}: the kinematic scene drives {entry.action_dim} joints, "
                         f"params have action_dim {params.action_dim}")
    return entry.build(params)


# ------------------------------------------------------------------------------------------
# Franka Panda
# ------------------------------------------------------------------------------------------


def _panda_hand(poses: list[ChainPose], q: np.ndarray) -> list[Segment]:
    """The Franka Hand: a bar across the flange and two fingers."""
    frame = poses[0].tool_frame
    pts_local = np.array([[0, -0.1, -0.058], [0, 0.1, -0.058], [0, -0.04, -0.058], [0, -0.04, 0.0],
                          [0, 0.04, -0.058], [0, 0.04, 0.0]])  # hand bar, two fingers (m)
    pts = pts_local @ frame[:3, :3].T + frame[:3, 3]
    return [(pts[0], pts[1], 0.025, (70, 72, 80)),
            (pts[2], pts[3], 0.01, (60, 60, 66)),
            (pts[4], pts[5], 0.01, (60, 60, 66))]


@kinematic_scene("franka", action_dim=7)
def _franka(params: EmbodimentParams) -> KinematicScene:
    arm = Arm(chain=panda_chain(), joints=np.arange(7), tool_offset_m=np.array([0.0, 0.0, 0.1034]),
              target_low_m=np.array([0.35, -0.25, 0.15]), target_high_m=np.array([0.65, 0.25, 0.45]),
              link_radius_m=0.045, color=(232, 232, 236), joint_color=(70, 72, 80))
    return ArmScene(arms=[arm], camera_eye_m=(1.3, 0.6, 0.8), camera_look_at_m=(0.32, 0.0, 0.28),
                    vertical_fov_deg=50.0, table_low_m=(-0.3, -0.9), table_high_m=(1.0, 0.9),
                    extra_joints=np.arange(0), extra_goal=np.zeros(0), hand=_panda_hand)


# ------------------------------------------------------------------------------------------
# ALOHA: two ViperX 300 s
# ------------------------------------------------------------------------------------------

_ALOHA_FINGERS = (6, 13)  # the left_finger joint of each gripper (m)


def _vx300s_grippers(poses: list[ChainPose], q: np.ndarray) -> list[Segment]:
    """Both ViperX grippers, each finger at its measured opening."""
    out: list[Segment] = []
    for pose, finger in zip(poses, _ALOHA_FINGERS):
        frame = pose.tool_frame
        gap = q[finger]  # each finger sits this far from the centre line (m)
        pts_local = np.array([[-0.06, -gap, 0], [0.0, -gap, 0], [-0.06, gap, 0], [0.0, gap, 0]])
        pts = pts_local @ frame[:3, :3].T + frame[:3, 3]
        out.append((pts[0], pts[1], 0.008, (25, 25, 30)))
        out.append((pts[2], pts[3], 0.008, (25, 25, 30)))
    return out


@kinematic_scene("aloha", action_dim=14)
def _aloha(params: EmbodimentParams) -> KinematicScene:
    # ALOHA: the two follower arms face each other across the table (gym-aloha
    # bimanual scene: bases at x = -/+0.469 m); world origin at the table centre.
    arms = []
    for joints, x0, yaw, color in ((np.arange(0, 6), -0.45, 0.0, (48, 52, 64)),
                                   (np.arange(7, 13), 0.45, math.pi, (40, 60, 52))):
        sign = 1.0 if x0 < 0 else -1.0
        low = np.array([x0 + sign * 0.15, -0.15, 0.06])
        high = np.array([x0 + sign * 0.35, 0.15, 0.30])
        arms.append(Arm(chain=vx300s_chain(transform((x0, 0.0, 0.0), rot_z(yaw))), joints=joints,
                        tool_offset_m=np.array([0.1, 0.0, 0.0]),
                        target_low_m=np.minimum(low, high), target_high_m=np.maximum(low, high),
                        link_radius_m=0.022, color=color, joint_color=(20, 20, 24)))
    grippers = np.array(_ALOHA_FINGERS)
    return ArmScene(arms=arms, camera_eye_m=(0.0, -0.75, 1.2), camera_look_at_m=(0.0, 0.05, 0.05),
                    vertical_fov_deg=52.0, table_low_m=(-0.75, -0.5), table_high_m=(0.75, 0.6),
                    extra_joints=grippers, extra_goal=np.asarray(params.position_max)[grippers],
                    target_radius_m=0.035, cart_speed_m_s=0.4, hand=_vx300s_grippers)


# ------------------------------------------------------------------------------------------
# LEAP hand on an xArm 7
# ------------------------------------------------------------------------------------------

# LEAP hand drawing: finger bases (hand frame: z out of the palm, y across it, x the palm
# normal the fingers curl toward) and segment lengths (proximal, middle, distal).
_LEAP_FINGER_BASES_M = np.array([[0.0, -0.038, 0.07], [0.0, 0.0, 0.075], [0.0, 0.038, 0.07],
                                 [0.02, -0.05, 0.0]])  # index, middle, ring, thumb
_LEAP_SEGMENTS_M = np.array([[0.05, 0.037, 0.032]] * 3 + [[0.045, 0.045, 0.04]])  # (4, 3)
_LEAP_PALM_M = np.array([[0.0, -0.05, -0.01], [0.0, 0.05, -0.01], [0.0, 0.05, 0.075], [0.0, -0.05, 0.075]])
_LEAP_PALM_OFFSET_M = 0.09  # flange -> palm centre (the tool point)


def _leap_hand(poses: list[ChainPose], q: np.ndarray) -> list[Segment]:
    """Palm and fingers of the LEAP hand; each finger bends with its joint values."""
    pose = poses[0]
    flange = pose.tool_frame.copy()
    flange[:3, 3] = pose.tool_m - flange[:3, :3] @ np.array([0.0, 0.0, _LEAP_PALM_OFFSET_M])
    hand = q[7:]  # (17,) index/middle/ring (side, fwd, pip, dip) x3, thumb x4, palm
    fingers = hand[:16].reshape(4, 4)  # (finger, joint)
    side = fingers[:, 0].copy()
    curl = np.cumsum(fingers[:, 1:], axis=1)  # (4, 3) cumulative bend of each segment
    curl[3] += hand[16] * 0.5  # the powered palm joint cups the thumb toward the fingers
    # Unbent direction of each finger in the hand frame: out of the palm (+z), spread
    # sideways by the MCP side joint; the thumb starts pointing sideways (-y) and its
    # first joint swings it toward +z.
    base_dir = np.stack([np.zeros(4), np.sin(side), np.cos(side)], 1)  # (4, 3)
    base_dir[3] = [0.0, -math.cos(side[3]), math.sin(side[3])]
    normal = np.array([1.0, 0.0, 0.0])  # fingers curl toward the palm normal
    dirs = (np.cos(curl)[..., None] * base_dir[:, None, :]
            + np.sin(curl)[..., None] * normal[None, None, :])  # (4, 3, 3)
    pts = _LEAP_FINGER_BASES_M[:, None, :] + np.concatenate(
        [np.zeros((4, 1, 3)), np.cumsum(_LEAP_SEGMENTS_M[..., None] * dirs, axis=1)], axis=1)  # (4, 4, 3)
    world = pts.reshape(-1, 3) @ flange[:3, :3].T + flange[:3, 3]
    world = world.reshape(4, 4, 3)
    palm = _LEAP_PALM_M @ flange[:3, :3].T + flange[:3, 3]
    dark = (38, 38, 42)
    out: list[Segment] = [(palm[0], palm[2], 0.03, dark), (palm[1], palm[3], 0.03, dark)]
    for f in range(4):
        for k in range(3):
            out.append((world[f, k], world[f, k + 1], 0.009, (55, 55, 60) if k % 2 else (30, 30, 34)))
    return out


@kinematic_scene("leap", action_dim=24)
def _leap(params: EmbodimentParams) -> KinematicScene:
    # LEAP hand on the xArm 7 flange; the tool point is the palm centre ~9 cm out.
    arm = Arm(chain=xarm7_chain(transform((0.0, 0.0, _LEAP_PALM_OFFSET_M))), joints=np.arange(7),
              tool_offset_m=np.array([0.0, 0.0, _LEAP_PALM_OFFSET_M]),
              target_low_m=np.array([0.30, -0.25, 0.15]), target_high_m=np.array([0.55, 0.25, 0.40]),
              link_radius_m=0.045, color=(222, 224, 228), joint_color=(90, 92, 100))
    hand = np.arange(7, params.action_dim)
    return ArmScene(arms=[arm], camera_eye_m=(1.3, 0.6, 0.8), camera_look_at_m=(0.32, 0.0, 0.28),
                    vertical_fov_deg=50.0, table_low_m=(-0.3, -0.9), table_high_m=(1.0, 0.9),
                    extra_joints=hand, extra_goal=np.asarray(params.home_position)[hand], hand=_leap_hand)


# ------------------------------------------------------------------------------------------
# Hello Robot Stretch: the mobile base
# ------------------------------------------------------------------------------------------


@kinematic_scene("hello", action_dim=3)
def _hello(params: EmbodimentParams) -> KinematicScene:
    return BaseScene()
