"""Drawing of the kinematic simulator's scenes with OpenCV (ROS-free).

:class:`SceneRenderer` draws a :mod:`~hybridvla_ros.sim.kinematic_scenes` scene from its
fixed camera: a static background (wall and table with a 10 cm grid for arms, a floor
with a 0.5 m grid for a mobile base) drawn once, then per frame the shadows, the robot
from forward kinematics far to near, and the red target(s) last so they are never hidden.
Nothing but the target is red, so "red pixels" means "target". Lines are drawn with
sub-pixel precision (cv2 fixed point) so that small motions change the image.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from hybridvla_ros.sim.kinematic_scenes import ArmScene, BaseScene, KinematicScene, Segment
from hybridvla_ros.sim.kinematics import ChainPose, PinholeCamera

__all__ = ["SceneRenderer"]

_SHIFT = 4  # cv2 fixed-point bits: sub-pixel drawing so small motions change the image
_SCALE = float(1 << _SHIFT)

# Colours (RGB). Nothing but the target is red, so "red pixels" means "target".
_RED = (230, 25, 25)
_RED_DARK = (120, 0, 0)
_WALL = (200, 205, 215)
_TABLE = (176, 148, 112)
_TABLE_LINE = (160, 132, 98)
_SHADOW = (105, 88, 66)
_FLOOR = (192, 192, 186)
_FLOOR_LINE = (165, 165, 160)


def _px(points: np.ndarray) -> np.ndarray:
    """(N, 2) float pixels -> int32 fixed-point coordinates for cv2's ``shift``."""
    return np.round(points * _SCALE).astype(np.int32)


def _disc_outline(centers_m: np.ndarray, radius_m: float, n: int = 16) -> np.ndarray:
    """(K, n, 3) points of horizontal circles (shadows / discs on the ground plane)."""
    ang = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    ring = np.stack([np.cos(ang), np.sin(ang), np.zeros(n)], 1) * radius_m  # (n, 3)
    return centers_m[:, None, :] + ring[None, :, :]


class SceneRenderer:
    """The fixed camera of one scene and its drawing; ``render`` is called with the state."""

    def __init__(self, scene: KinematicScene, home: np.ndarray, position_min: np.ndarray,
                 position_max: np.ndarray, width: int, height: int) -> None:
        """Camera and background of ``scene``: a base scene's ceiling camera looks down on
        ``home`` (D,) and its floor grid spans the x / y limits ``position_min`` /
        ``position_max``; ``width`` x ``height`` pixels (already validated)."""
        self._scene = scene
        self._lo = position_min
        self._hi = position_max
        self._width, self._height = int(width), int(height)
        if isinstance(scene, BaseScene):
            # Ceiling camera over the start pose; world +x points up in the image.
            self.camera = PinholeCamera((home[0], home[1], scene.camera_height_m), (home[0], home[1], 0.0),
                                        (1.0, 0.0, 0.0), scene.vertical_fov_deg, self._width, self._height)
        else:
            self.camera = PinholeCamera(scene.camera_eye_m, scene.camera_look_at_m, (0.0, 0.0, 1.0),
                                        scene.vertical_fov_deg, self._width, self._height)
        self._background = self._draw_background()  # (H, W, 3): the static part of every frame

    def _draw_background(self) -> np.ndarray:
        """(H, W, 3) uint8: wall + table with a 10 cm grid (arms) or floor with a 0.5 m grid."""
        cam = self.camera
        scene = self._scene
        if isinstance(scene, BaseScene):
            img = np.full((self._height, self._width, 3), _FLOOR, dtype=np.uint8)
            lo, hi, step, color = self._lo[:2], self._hi[:2], 0.5, _FLOOR_LINE
        else:
            img = np.full((self._height, self._width, 3), _WALL, dtype=np.uint8)
            lo, hi = np.asarray(scene.table_low_m), np.asarray(scene.table_high_m)
            corners = np.array([[lo[0], lo[1], 0], [hi[0], lo[1], 0], [hi[0], hi[1], 0], [lo[0], hi[1], 0]])
            px, _ = cam.project(corners)
            cv2.fillPoly(img, [_px(px)], _TABLE, cv2.LINE_AA, _SHIFT)
            step, color = 0.1, _TABLE_LINE
        xs = np.arange(math.ceil(lo[0] / step) * step, hi[0] + 1e-9, step)
        ys = np.arange(math.ceil(lo[1] / step) * step, hi[1] + 1e-9, step)
        starts = np.concatenate([np.stack([xs, np.full_like(xs, lo[1])], 1),
                                 np.stack([np.full_like(ys, lo[0]), ys], 1)])  # (L, 2)
        ends = np.concatenate([np.stack([xs, np.full_like(xs, hi[1])], 1),
                               np.stack([np.full_like(ys, hi[0]), ys], 1)])
        zeros = np.zeros((len(starts), 1))
        p0, _ = cam.project(np.hstack([starts, zeros]))
        p1, _ = cam.project(np.hstack([ends, zeros]))
        for a, b in zip(_px(p0), _px(p1)):  # a few dozen lines, drawn once per sim
            cv2.line(img, tuple(a), tuple(b), color, 1, cv2.LINE_AA, _SHIFT)
        return img

    def render(self, q: np.ndarray, target: np.ndarray, poses: list[ChainPose]) -> np.ndarray:
        """(H, W, 3) uint8 RGB image of the robot at joint positions ``q`` (D,) with FK ``poses``
        (one per arm; empty for a base) and the target(s) ``target`` (K, 3)."""
        img = self._background.copy()
        if isinstance(self._scene, BaseScene):
            self._render_base(img, self._scene, q, target)
        else:
            self._render_arms(img, self._scene, q, target, poses)
        return img

    def _draw_targets(self, img: np.ndarray, target: np.ndarray, radius_m: float) -> None:
        cam = self.camera
        px, depth = cam.project(target)
        for center, z in zip(px, depth):  # K <= 2
            if z <= 0 or not np.all(np.isfinite(center)):
                continue
            r = max(2.0, cam.focal_px * radius_m / z)
            c = tuple(_px(center[None])[0])
            cv2.circle(img, c, int(round(r * _SCALE)), _RED, -1, cv2.LINE_AA, _SHIFT)
            cv2.circle(img, c, int(round(r * _SCALE)), _RED_DARK, 1, cv2.LINE_AA, _SHIFT)

    def _render_arms(self, img: np.ndarray, scene: ArmScene, q: np.ndarray, target: np.ndarray,
                     poses: list[ChainPose]) -> None:
        cam = self.camera
        # Shadows first (they lie on the table): they tell the policy how high things are.
        tools = np.stack([p.tool_m for p in poses])  # (K, 3)
        shadows = np.concatenate([_disc_outline(target * [1, 1, 0], scene.target_radius_m),
                                  _disc_outline(tools * [1, 1, 0], 0.02)])  # (2K, 16, 3)
        spx, _ = cam.project(shadows.reshape(-1, 3))
        spx = spx.reshape(shadows.shape[0], -1, 2)
        for poly in spx:  # one call each: overlapping polygons in one call would cancel out
            if np.all(np.isfinite(poly)):
                cv2.fillPoly(img, [_px(poly)], _SHADOW, cv2.LINE_AA, _SHIFT)
        # Robot: every segment with its width and colour, drawn far to near.
        segs: list[Segment] = []
        joints: list[tuple[np.ndarray, float, tuple[int, int, int]]] = []
        for arm, pose in zip(scene.arms, poses):
            pts = pose.link_points_m(arm.chain.base[:3, 3])  # (D + 2, 3)
            for a, b in zip(pts[:-1], pts[1:]):
                segs.append((a, b, arm.link_radius_m, arm.color))
            for p in pts[1:-1]:
                joints.append((p, arm.link_radius_m * 0.8, arm.joint_color))
        segs.extend(scene.hand(poses, q))
        ends = np.array([[s[0], s[1]] for s in segs]).reshape(-1, 3)  # (2S, 3)
        epx, edepth = cam.project(ends)
        epx, edepth = epx.reshape(-1, 2, 2), edepth.reshape(-1, 2)
        order = np.argsort(-edepth.mean(axis=1))
        for i in order:  # tens of primitives; each is one cv2 call
            if np.any(edepth[i] <= 0):
                continue
            width = max(1, int(round(2.0 * cam.focal_px * segs[i][2] / float(edepth[i].mean()))))
            a, b = _px(epx[i])
            cv2.line(img, tuple(a), tuple(b), segs[i][3], width, cv2.LINE_AA, _SHIFT)
        if joints:
            jpx, jdepth = cam.project(np.stack([j[0] for j in joints]))
            for (_, radius, color), c, z in zip(joints, jpx, jdepth):
                if z > 0:
                    r = max(1.0, cam.focal_px * radius / z)
                    cv2.circle(img, tuple(_px(c[None])[0]), int(round(r * _SCALE)), color, -1, cv2.LINE_AA, _SHIFT)
        self._draw_targets(img, target, scene.target_radius_m)

    def _render_base(self, img: np.ndarray, scene: BaseScene, q: np.ndarray, target: np.ndarray) -> None:
        cam = self.camera
        x, y, yaw = q
        heading = np.array([math.cos(yaw), math.sin(yaw), 0.0])
        left = np.array([-math.sin(yaw), math.cos(yaw), 0.0])
        center = np.array([x, y, 0.0])
        body = _disc_outline(center[None], scene.robot_radius_m, 24)[0]  # (24, 3)
        # Stretch's mast stands at the back-left of the base: asymmetry shows the heading too.
        mast = center - 0.08 * heading + 0.06 * left
        mast_sq = mast + np.array([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]]) * 0.04
        nose = center + heading * scene.robot_radius_m * 1.15
        target_disc = _disc_outline(target * [1, 1, 0], scene.target_radius_m, 20)[0]
        pts = np.concatenate([target_disc, body, mast_sq, center[None], nose[None]])
        px, _ = cam.project(pts)
        p = _px(px)
        t_end, b_end, m_end = 20, 44, 48
        cv2.fillPoly(img, [p[t_end:b_end]], (52, 84, 150), cv2.LINE_AA, _SHIFT)
        cv2.polylines(img, [p[t_end:b_end]], True, (25, 40, 80), 1, cv2.LINE_AA, _SHIFT)
        cv2.fillPoly(img, [p[b_end:m_end]], (30, 30, 35), cv2.LINE_AA, _SHIFT)
        cv2.line(img, tuple(p[m_end]), tuple(p[m_end + 1]), (245, 245, 245), 2, cv2.LINE_AA, _SHIFT)
        cv2.fillPoly(img, [p[:t_end]], _RED, cv2.LINE_AA, _SHIFT)
        cv2.polylines(img, [p[:t_end]], True, _RED_DARK, 1, cv2.LINE_AA, _SHIFT)
