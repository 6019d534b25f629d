"""Forward kinematics, position Jacobians and a pinhole camera for the kinematic simulator.

The arms are serial chains of revolute joints. Every joint is described the same
way, ``T_i = T_{i-1} @ pre_i @ Rot_axis_i(q_i)``: a fixed transform from the previous
joint frame to this joint's frame, then a rotation about one principal axis of that
frame. Both Denavit-Hartenberg conventions fit this form (modified DH:
``pre = RotX(alpha_{i-1}) TransX(a_{i-1})``, rotation about z, then ``TransZ(d_i)``
folded into the next joint's ``pre``), and so does a URDF chain whose joints rotate
about x/y/z of their own frames (the ViperX).

Kinematic sources (cited per chain below):

* Franka Emika Panda: Franka Control Interface documentation, "Robot and interface
  specifications", Denavit-Hartenberg parameters (modified/Craig convention) of the
  Panda, flange d = 0.107 m and Franka Hand TCP d = 0.1034 m
  (https://frankaemika.github.io/docs/control_parameters.html).
* UFACTORY xArm 7: UFACTORY docs, "Kinematic and Dynamic Parameters of xArm 7",
  modified D-H parameters (d: 267, 0, 293, 0, 342.5, 0, 97 mm; a: 0, 0, 0, 52.5,
  77.5, 0, 76 mm; alpha: 0, -pi/2, pi/2, pi/2, pi/2, pi/2, -pi/2).
* Interbotix ViperX 300 6DOF (vx300s): interbotix_xsarm_descriptions
  urdf/vx300s.urdf.xacro, as kept in the MuJoCo Menagerie / LeRobot vx300s.xml:
  waist at z 0.079, shoulder +0.04805 (y axis), elbow at (0.05955, 0, 0.3),
  forearm roll +0.2 (x axis), wrist angle +0.1, wrist rotate +0.069744 (x axis),
  pinch point +0.1 along the gripper.

Everything is numpy on small arrays. The only Python loop is the prefix product
over joints in :meth:`SerialChain.forward` (a chain product is inherently
sequential; it is D <= 7 matmuls of 4x4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ChainPose",
    "SerialChain",
    "PinholeCamera",
    "panda_chain",
    "xarm7_chain",
    "vx300s_chain",
    "dls_position_step",
    "rot_z",
    "transform",
]

_AXIS_INDEX = {"x": 0, "y": 1, "z": 2}


def rot_x(angle_rad: float) -> np.ndarray:
    """(4, 4) homogeneous rotation about x."""
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    return np.array([[1, 0, 0, 0], [0, c, -s, 0], [0, s, c, 0], [0, 0, 0, 1]], dtype=np.float64)


def rot_z(angle_rad: float) -> np.ndarray:
    """(4, 4) homogeneous rotation about z."""
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    return np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=np.float64)


def transform(xyz_m: tuple[float, float, float] = (0.0, 0.0, 0.0),
              rotation: np.ndarray | None = None) -> np.ndarray:
    """(4, 4) homogeneous transform: ``rotation`` (4x4 or 3x3, default identity), then translation."""
    out = np.eye(4)
    if rotation is not None:
        out[:3, :3] = np.asarray(rotation, dtype=np.float64)[:3, :3]
    out[:3, 3] = xyz_m
    return out


@dataclass(frozen=True)
class ChainPose:
    """Result of :meth:`SerialChain.forward` for one joint configuration (world frame)."""

    frames: np.ndarray  # (D, 4, 4) joint frames after each joint's rotation
    origins_m: np.ndarray  # (D, 3) joint positions
    axes: np.ndarray  # (D, 3) unit rotation axes
    tool_frame: np.ndarray  # (4, 4) tool (TCP / pinch point / palm) frame
    tool_m: np.ndarray  # (3,) tool point

    def position_jacobian(self) -> np.ndarray:
        """(3, D) d(tool point)/dq of revolute joints: axis_i x (tool - origin_i)."""
        return np.cross(self.axes, self.tool_m[None, :] - self.origins_m).T  # (3, D)

    def link_points_m(self, base_m: np.ndarray) -> np.ndarray:
        """(D + 2, 3) points to draw the links through: base, every joint, tool."""
        return np.vstack([base_m[None, :], self.origins_m, self.tool_m[None, :]])


class SerialChain:
    """A serial chain of revolute joints (see the module docstring for the convention)."""

    def __init__(self, pre: list[np.ndarray], axes: str, tool: np.ndarray,
                 base: np.ndarray | None = None) -> None:
        """``pre``: D fixed (4, 4) transforms; ``axes``: D letters of x/y/z; ``tool``: (4, 4)
        from the last joint frame; ``base``: (4, 4) world pose of the chain's base.
        Raises ValueError if the lengths disagree or an axis letter is unknown."""
        if len(pre) != len(axes):
            raise ValueError(f"{len(pre)} fixed transforms but {len(axes)} axes")
        if any(a not in _AXIS_INDEX for a in axes):
            raise ValueError(f"axes must be letters of 'xyz', got {axes!r}")
        self.num_joints = len(axes)
        self.base = np.eye(4) if base is None else np.asarray(base, dtype=np.float64)
        self._pre = np.stack(pre).astype(np.float64)  # (D, 4, 4)
        self._axis_idx = np.array([_AXIS_INDEX[a] for a in axes])  # (D,)
        self._axes_local = np.eye(3)[self._axis_idx]  # (D, 3)
        self._tool = np.asarray(tool, dtype=np.float64)
        # Index arrays that place cos/sin into a batch of rotation matrices about x, y or z:
        # the two "other" axes (i, j) of each joint in right-handed order.
        self._i = (self._axis_idx + 1) % 3
        self._j = (self._axis_idx + 2) % 3

    def _rotations(self, q: np.ndarray) -> np.ndarray:
        """(D, 4, 4) rotations Rot_axis_i(q_i), built for all joints at once."""
        d = self.num_joints
        c, s = np.cos(q), np.sin(q)
        rot = np.zeros((d, 4, 4))
        idx = np.arange(d)
        rot[idx, self._axis_idx, self._axis_idx] = 1.0
        rot[:, 3, 3] = 1.0
        rot[idx, self._i, self._i] = c
        rot[idx, self._j, self._j] = c
        rot[idx, self._i, self._j] = -s
        rot[idx, self._j, self._i] = s
        return rot

    def forward(self, q: np.ndarray) -> ChainPose:
        """World-frame joint frames, axes and tool point for joint angles ``q`` (D,) in rad."""
        local = self._pre @ self._rotations(np.asarray(q, dtype=np.float64))  # (D, 4, 4)
        frames = np.empty_like(local)
        current = self.base
        for i in range(self.num_joints):  # sequential by nature (prefix product)
            current = current @ local[i]
            frames[i] = current
        tool_frame = current @ self._tool
        axes = np.einsum("dij,dj->di", frames[:, :3, :3], self._axes_local)  # (D, 3)
        return ChainPose(frames=frames, origins_m=frames[:, :3, 3].copy(), axes=axes,
                         tool_frame=tool_frame, tool_m=tool_frame[:3, 3].copy())


def _mdh_chain(a_m: list[float], d_m: list[float], alpha_rad: list[float], tool: np.ndarray,
               base: np.ndarray | None = None) -> SerialChain:
    """Chain from modified (Craig) DH rows ``(a_{i-1}, alpha_{i-1}, d_i)``.

    ``T_i = RotX(alpha_{i-1}) TransX(a_{i-1}) RotZ(q_i) TransZ(d_i)``; the ``TransZ(d_i)``
    after the rotation commutes with it (both about/along z), so it is applied before.
    """
    pre = [rot_x(al) @ transform((a, 0.0, 0.0)) @ transform((0.0, 0.0, d))
           for a, d, al in zip(a_m, d_m, alpha_rad)]
    return SerialChain(pre, "z" * len(pre), tool, base)


def panda_chain(base: np.ndarray | None = None) -> SerialChain:
    """Franka Emika Panda to the Franka Hand TCP (Franka docs, modified DH; see module doc)."""
    h = math.pi / 2
    a = [0.0, 0.0, 0.0, 0.0825, -0.0825, 0.0, 0.088]
    d = [0.333, 0.0, 0.316, 0.0, 0.384, 0.0, 0.0]
    alpha = [0.0, -h, h, h, -h, h, h]
    # Flange d = 0.107, then the hand's TCP 0.1034 further along z (rotated -pi/4 about z,
    # irrelevant for a point).
    tool = transform((0.0, 0.0, 0.107 + 0.1034)) @ rot_z(-math.pi / 4)
    return _mdh_chain(a, d, alpha, tool, base)


def xarm7_chain(tool: np.ndarray, base: np.ndarray | None = None) -> SerialChain:
    """UFACTORY xArm 7 to ``tool`` given in the flange frame (UFACTORY modified DH)."""
    h = math.pi / 2
    a = [0.0, 0.0, 0.0, 0.0525, 0.0775, 0.0, 0.076]
    d = [0.267, 0.0, 0.293, 0.0, 0.3425, 0.0, 0.097]
    alpha = [0.0, -h, h, h, h, h, -h]
    return _mdh_chain(a, d, alpha, tool, base)


def vx300s_chain(base: np.ndarray | None = None) -> SerialChain:
    """Interbotix ViperX 300 6DOF to the pinch point between the fingers (vx300s URDF)."""
    pre = [
        transform((0.0, 0.0, 0.079)),        # waist (z)
        transform((0.0, 0.0, 0.04805)),      # shoulder (y)
        transform((0.05955, 0.0, 0.3)),      # elbow (y)
        transform((0.2, 0.0, 0.0)),          # forearm roll (x)
        transform((0.1, 0.0, 0.0)),          # wrist angle (y)
        transform((0.069744, 0.0, 0.0)),     # wrist rotate (x)
    ]
    return SerialChain(pre, "zyyxyx", transform((0.1, 0.0, 0.0)), base)


def dls_position_step(jacobian: np.ndarray, dx_m: np.ndarray, null_step: np.ndarray,
                      damping: float, free: np.ndarray | None = None) -> np.ndarray:
    """(D,) joint step moving the tool by ``dx_m`` (3,), plus ``null_step`` (D,) projected
    into the Jacobian's (damped) null space so it does not disturb the tool point.
    Joints where ``free`` (D,) bool is False are held (their step is 0).

    Damped least squares, ``J^T (J J^T + damping^2 I)^-1``: near a singularity it trades
    a little accuracy for bounded joint steps instead of blowing up."""
    jac = np.asarray(jacobian, dtype=np.float64)  # (3, D)
    mask = np.ones(jac.shape[1]) if free is None else np.asarray(free, dtype=np.float64)  # (D,)
    jac = jac * mask[None, :]  # a held joint contributes nothing to the tool motion
    jjt = jac @ jac.T + (damping ** 2) * np.eye(jac.shape[0])
    pinv = jac.T @ np.linalg.inv(jjt)  # (D, 3)
    null_proj = np.eye(jac.shape[1]) - pinv @ jac  # (D, D)
    return (pinv @ dx_m + null_proj @ (np.asarray(null_step) * mask)) * mask


class PinholeCamera:
    """A fixed pinhole camera (OpenCV optical convention: x right, y down, z forward)."""

    def __init__(self, eye_m: tuple[float, float, float], look_at_m: tuple[float, float, float],
                 up: tuple[float, float, float], vertical_fov_deg: float, width: int, height: int) -> None:
        """Camera at ``eye_m`` looking at ``look_at_m``; ``up`` is the world direction that
        appears upward in the image. Raises ValueError for a degenerate view."""
        eye = np.asarray(eye_m, dtype=np.float64)
        forward = np.asarray(look_at_m, dtype=np.float64) - eye
        norm = np.linalg.norm(forward)
        right = np.cross(forward, np.asarray(up, dtype=np.float64))
        if norm < 1e-9 or np.linalg.norm(right) < 1e-9:
            raise ValueError("camera: look_at must differ from eye and not be parallel to up")
        forward /= norm
        right /= np.linalg.norm(right)
        down = np.cross(forward, right)
        self.eye_m = eye
        self.rotation = np.stack([right, down, forward])  # (3, 3) world -> camera
        self.width, self.height = int(width), int(height)
        self.focal_px = 0.5 * height / math.tan(math.radians(vertical_fov_deg) / 2.0)
        self.center_px = np.array([(width - 1) / 2.0, (height - 1) / 2.0])

    def to_camera(self, points_m: np.ndarray) -> np.ndarray:
        """(N, 3) camera-frame coordinates of world points (N, 3)."""
        return (np.asarray(points_m, dtype=np.float64) - self.eye_m) @ self.rotation.T

    def project(self, points_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(pixels (N, 2) float [u, v], depth (N,) m) of world points (N, 3).

        Points at or behind the camera get depth <= 0 and NaN pixels."""
        cam = self.to_camera(points_m)  # (N, 3)
        depth = cam[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            px = self.focal_px * cam[:, :2] / depth[:, None] + self.center_px
        px[depth <= 1e-6] = np.nan
        return px, depth
