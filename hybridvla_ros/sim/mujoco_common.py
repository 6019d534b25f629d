"""Helpers every MuJoCo simulator of this package shares (ROS-free).

* :func:`find_package_dir` / :func:`load_asset_files`: robot models come from pip
  packages installed for their assets only (``gymnasium-robotics`` holds the Panda); the
  package is located with ``importlib.util.find_spec``, which does *not* execute it, and
  a missing package is a :class:`MissingAssetError` that names the pip package to install.
* :func:`read_stl` / :func:`cluster_decimate`: mesh vertices to hand to ``MjsMesh.uservert``
  directly. Passed through ``MjSpec.from_string(assets=...)``, ``visual/link0.stl`` and
  ``collision/link0.stl`` were resolved to the same file (the lookup goes by base name), so
  the collision shapes silently became the 20k-triangle visual ones; reading them ourselves
  avoids that, and decimated visual meshes render ~5x faster on a CPU.
* :func:`make_fast_renderer`: an offscreen renderer set up for speed on a CPU (no MSAA,
  shadows, reflections or skybox: ~10x faster at 160x120).
* :class:`JointReference`: how a position command is interpreted, the same rule as
  :class:`~hybridvla_ros.sim.kinematic.KinematicSim` (a joint trajectory controller
  receiving one point a control period ahead). It produces the reference (position,
  velocity, acceleration) that the simulated joint servos track.
* :class:`ExternalPush`: a timed ``xfrc_applied`` push at a point of a body.
* :func:`site_wrench_world` / :func:`body_inertial_wrench`: an F/T sensor reading in
  world axes, and the load a tool's own weight and motion put on it (their difference is
  the external wrench).
* small validators that raise ValueError naming the bad argument.

MuJoCo picks its OpenGL backend when it is first imported: this module sets
``MUJOCO_GL=egl`` (headless, no X server) unless the caller chose one, so import it (or a
simulator built on it) before anything else imports ``mujoco``.
"""

from __future__ import annotations

import importlib.util
import math
import numbers
import os

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402  (after the backend choice above)
import numpy as np  # noqa: E402

from hybridvla_ros.sim.profiles import brake_speed, profile_speed  # noqa: E402

__all__ = [
    "MissingAssetError",
    "find_package_dir",
    "load_asset_files",
    "read_stl",
    "cluster_decimate",
    "make_fast_renderer",
    "look_at_quat",
    "JointReference",
    "ExternalPush",
    "site_wrench_world",
    "body_inertial_wrench",
    "geom_pair_in_contact",
    "check_finite_array",
    "check_finite_number",
    "check_seed",
    "STREAM_TOLERANCE",
]

STREAM_TOLERANCE = 1.05  # a stream step may exceed one period's reach by 5 % (as KinematicSim)


class MissingAssetError(FileNotFoundError):
    """A robot model's files are not installed; the message names the pip package."""


# ------------------------------------------------------------------------------------------
# Validation
# ------------------------------------------------------------------------------------------


def check_finite_array(name: str, value: object, shape: tuple[int, ...]) -> np.ndarray:
    """``value`` as a float64 array of ``shape`` (a copy); ValueError naming ``name`` if it is
    not numeric, has another shape or holds NaN/Inf."""
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numbers of shape {shape}, got {value!r}") from None
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} has non-finite values: {arr.tolist()}")
    return arr


def check_finite_number(name: str, value: object, minimum: float | None = None,
                        strict: bool = False) -> float:
    """``value`` as a float; ValueError naming ``name`` unless it is a finite real number
    ``>= minimum`` (``> minimum`` when ``strict``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if minimum is not None and (value <= minimum if strict else value < minimum):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {minimum}, got {value!r}")
    return float(value)


def check_seed(name: str, value: object) -> int:
    """``value`` as an int >= 0; ValueError naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    return int(value)


# ------------------------------------------------------------------------------------------
# Assets
# ------------------------------------------------------------------------------------------


def find_package_dir(package: str, pip_name: str | None = None, relative_path: str = "") -> str:
    """Directory ``relative_path`` inside the installed Python package ``package``, found
    without importing (executing) the package.

    Raises MissingAssetError naming ``pip install <pip_name>`` (default: ``package``) when
    the package or the directory is not installed."""
    pip_name = pip_name or package
    hint = (f"the robot model comes from the pip package {pip_name!r}: install it with "
            f"`pip install {pip_name}` (its assets suffice: `pip install --no-deps {pip_name}`)")
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):  # a missing parent of a dotted name, or an empty name
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise MissingAssetError(f"Python package {package!r} is not installed; {hint}")
    path = os.path.join(locations[0], relative_path) if relative_path else locations[0]
    if not os.path.isdir(path):
        raise MissingAssetError(f"{path!r} is missing from the installed package {package!r}; {hint}")
    return path


def load_asset_files(directory: str, prefix: str = "") -> dict[str, bytes]:
    """Every file under ``directory`` as ``{prefix + relative path: bytes}`` (for the
    ``include`` / ``assets`` arguments of ``mujoco.MjSpec.from_string``)."""
    out: dict[str, bytes] = {}
    for dirpath, _, filenames in os.walk(directory):
        for filename in filenames:
            full = os.path.join(dirpath, filename)
            rel = os.path.relpath(full, directory).replace(os.sep, "/")
            with open(full, "rb") as f:
                out[prefix + rel] = f.read()
    return out


def read_stl(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(vertices (V, 3) float64, faces (F, 3) int32) of a binary STL file's bytes, with
    coincident corners merged. ValueError if ``data`` is not a binary STL."""
    if len(data) < 84:
        raise ValueError(f"not a binary STL: {len(data)} bytes")
    count = int(np.frombuffer(data, dtype="<u4", count=1, offset=80)[0])
    if len(data) != 84 + 50 * count:
        raise ValueError(f"not a binary STL (ASCII STL is not supported): {len(data)} bytes for {count} triangles")
    record = np.dtype([("normal", "<f4", 3), ("corners", "<f4", (3, 3)), ("attribute", "<u2")])
    corners = np.frombuffer(data, dtype=record, count=count, offset=84)["corners"].reshape(-1, 3)  # (3F, 3)
    vertices, index = np.unique(corners.astype(np.float64), axis=0, return_inverse=True)
    return vertices, index.reshape(-1, 3).astype(np.int32)


def cluster_decimate(vertices: np.ndarray, faces: np.ndarray, cell_m: float) -> tuple[np.ndarray, np.ndarray]:
    """A coarser copy of a triangle mesh by vertex clustering: vertices within one ``cell_m``
    grid cell merge into their mean, triangles that collapse are dropped.

    Written here because no mesh library is a dependency, and rendering detail below a pixel
    (~1 cm at 160x120 across a table) only costs time. Returns (vertices (V', 3), faces (F', 3))."""
    cells = np.floor(np.asarray(vertices, dtype=np.float64) / cell_m).astype(np.int64)  # (V, 3)
    _, cluster, counts = np.unique(cells, axis=0, return_inverse=True, return_counts=True)
    cluster = cluster.reshape(-1)
    merged = np.zeros((counts.size, 3))
    np.add.at(merged, cluster, vertices)
    merged /= counts[:, None]
    tri = cluster[np.asarray(faces)]  # (F, 3)
    keep = (tri[:, 0] != tri[:, 1]) & (tri[:, 1] != tri[:, 2]) & (tri[:, 0] != tri[:, 2])
    tri = tri[keep]
    _, first = np.unique(np.sort(tri, axis=1), axis=0, return_index=True)  # drop duplicates
    tri = tri[np.sort(first)]
    used, remap = np.unique(tri, return_inverse=True)
    return merged[used], remap.reshape(-1, 3).astype(np.int32)


# ------------------------------------------------------------------------------------------
# Rendering
# ------------------------------------------------------------------------------------------


def make_fast_renderer(model: mujoco.MjModel, width: int, height: int) -> mujoco.Renderer:
    """An offscreen renderer of ``width x height`` without multisampling, shadows,
    reflections or skybox (a 160x120 frame: ~5 ms instead of ~50 ms on a CPU).

    Changes ``model.vis`` (offscreen buffer size, samples, shadow map) before creating the
    GL context, which reads them."""
    model.vis.quality.offsamples = 0
    model.vis.quality.shadowsize = 0
    model.vis.global_.offwidth = max(int(model.vis.global_.offwidth), int(width))
    model.vis.global_.offheight = max(int(model.vis.global_.offheight), int(height))
    renderer = mujoco.Renderer(model, height=int(height), width=int(width))
    for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION,
                 mujoco.mjtRndFlag.mjRND_SKYBOX):
        renderer.scene.flags[flag] = 0
    return renderer


def look_at_quat(eye_m: tuple[float, float, float], target_m: tuple[float, float, float],
                 up: tuple[float, float, float] = (0.0, 0.0, 1.0)) -> np.ndarray:
    """(4,) quaternion (w, x, y, z) of a MuJoCo camera at ``eye_m`` looking at ``target_m``
    (MuJoCo cameras look along their -z with +y up in the image). ValueError if degenerate."""
    forward = np.asarray(target_m, dtype=np.float64) - np.asarray(eye_m, dtype=np.float64)
    right = np.cross(forward, np.asarray(up, dtype=np.float64))
    if np.linalg.norm(forward) < 1e-9 or np.linalg.norm(right) < 1e-9:
        raise ValueError("look_at_quat: target must differ from eye and not lie along up")
    forward /= np.linalg.norm(forward)
    right /= np.linalg.norm(right)
    cam_up = np.cross(right, forward)
    mat = np.stack([right, cam_up, -forward], axis=1)  # (3, 3) columns: camera axes in world
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, mat.reshape(-1))
    return quat


# ------------------------------------------------------------------------------------------
# Position commands
# ------------------------------------------------------------------------------------------


class JointReference:
    """The reference a joint position controller tracks, from streamed position commands.

    Same rule as :class:`~hybridvla_ros.sim.kinematic.KinematicSim` (see its module
    docstring): a command within one period's reach of the reference (``|target - q_ref|
    <= STREAM_TOLERANCE * max_velocity * control_period``, per joint) is interpolated to
    arrive by the next control period (the stream's own acceleration is the sender's to
    limit: the safety filter does); any
    other command (also one that repeats the previous target unchanged), and any command
    whose period has run out, is approached time-optimally (never faster than it can still
    stop on it).
    Both are limited to max_velocity / max_acceleration and to the speed from which the
    joint can still brake before its position limits, so the reference never leaves them.

    All arrays are (D,) in the joints' units (rad, m)."""

    def __init__(self, lower: np.ndarray, upper: np.ndarray, max_velocity: np.ndarray,
                 max_acceleration: np.ndarray, control_period_s: float) -> None:
        """Limits (D,) each and the command period (s). ValueError on bad shapes / values."""
        self._lo = np.asarray(lower, dtype=np.float64).copy()
        self._hi = np.asarray(upper, dtype=np.float64).copy()
        self._vmax = np.asarray(max_velocity, dtype=np.float64).copy()
        self._amax = np.asarray(max_acceleration, dtype=np.float64).copy()
        dim = self._lo.shape
        if len(dim) != 1 or any(a.shape != dim for a in (self._hi, self._vmax, self._amax)):
            raise ValueError("JointReference: lower, upper, max_velocity, max_acceleration must all be (D,)")
        if np.any(self._hi < self._lo) or np.any(self._vmax <= 0) or np.any(self._amax <= 0):
            raise ValueError("JointReference: need lower <= upper and positive velocity / acceleration limits")
        self._period_s = check_finite_number("control_period_s", control_period_s, 0.0, strict=True)
        self.reset(np.clip(np.zeros(dim), self._lo, self._hi), 0.0)

    def reset(self, positions: np.ndarray, now_s: float) -> None:
        """Hold ``positions`` (clipped to the limits) at rest from ``now_s``."""
        self.q = np.clip(np.asarray(positions, dtype=np.float64), self._lo, self._hi)  # (D,)
        self.v = np.zeros_like(self.q)
        self.a = np.zeros_like(self.q)
        self.target = self.q.copy()
        self._cmd_time_s = float(now_s)
        self._stream = np.zeros(self.q.shape, dtype=bool)

    def command(self, target: np.ndarray, now_s: float) -> np.ndarray:
        """Take a new (D,) position target (already validated) at ``now_s``; returns it
        clipped to the limits."""
        previous = self.target
        self.target = np.clip(np.asarray(target, dtype=np.float64), self._lo, self._hi)
        self._cmd_time_s = float(now_s)
        # A target repeated unchanged (a hold, a buffer's grace repeat) is a goal, not a stream
        # step: "arrive by the next period" at full speed and then stand would need more than
        # max_acceleration, and the joint would overshoot it.
        self._stream = ((np.abs(self.target - self.q) <= self._vmax * self._period_s * STREAM_TOLERANCE)
                        & (self.target != previous))
        return self.target.copy()

    def advance(self, dt_s: float, now_s: float) -> None:
        """Move the reference over one sub-step ``dt_s`` starting at ``now_s`` (np.minimum /
        np.maximum rather than np.clip: this runs every 2 ms physics step and hundreds of times
        per expert plan, and np.clip's overhead was a third of a plan's time)."""
        q, vmax, amax = self.q, self._vmax, self._amax
        err = self.target - q
        desired = np.copysign(profile_speed(np.abs(err), vmax, amax, dt_s), err)
        time_left = self._cmd_time_s + self._period_s - now_s
        streaming = self._stream if time_left > 1e-9 and self._stream.any() else None
        if streaming is not None:
            interp = np.minimum(np.maximum(err / max(time_left, dt_s), -vmax), vmax)
            desired = np.where(streaming, interp, desired)
        desired = np.minimum(np.maximum(desired, -brake_speed(q - self._lo, amax, dt_s)),
                             brake_speed(self._hi - q, amax, dt_s))
        # A streamed joint follows its stream as commanded: the stream's acceleration between
        # periods is the sender's to limit (the safety filter does), and limiting it again per
        # sub-step would make the joint fall behind the stream, after which the next point is
        # out of reach, a goal, and is approached at full speed (a lunge into the cube).
        a_dt = amax * dt_s
        accel_limited = np.minimum(np.maximum(desired, self.v - a_dt), self.v + a_dt)
        v = accel_limited if streaming is None else np.where(streaming, desired, accel_limited)
        v = np.minimum(np.maximum(v, -vmax), vmax)
        q_new = np.minimum(np.maximum(q + v * dt_s, self._lo), self._hi)
        v = (q_new - q) / dt_s
        self.a = (v - self.v) / dt_s
        self.v = v
        self.q = q_new


# ------------------------------------------------------------------------------------------
# External push and force/torque sensing
# ------------------------------------------------------------------------------------------


class ExternalPush:
    """A constant force (N, world axes) at a point of one body for a while, through
    ``data.xfrc_applied`` (a real external force: the robot yields and its sensors feel it)."""

    def __init__(self, body_id: int) -> None:
        """No push yet on body ``body_id``."""
        self.body_id = int(body_id)
        self.force_n = np.zeros(3)
        self.until_s = -math.inf
        self._point_local = np.zeros(3)

    def start(self, force_n: np.ndarray, duration_s: float, now_s: float,
              point_local_m: np.ndarray | None = None) -> None:
        """Push with ``force_n`` (3,) from ``now_s`` for ``duration_s`` (replacing an earlier
        push), at ``point_local_m`` (3,) in the body frame (default: the body origin).
        ValueError for a non-finite force or a duration <= 0."""
        self.force_n = check_finite_array("force", force_n, (3,))
        duration = check_finite_number("duration_s", duration_s, 0.0, strict=True)
        self.until_s = float(now_s) + duration
        self._point_local = np.zeros(3) if point_local_m is None else np.asarray(point_local_m, dtype=np.float64)

    def active(self, now_s: float) -> bool:
        """True while the push lasts."""
        return now_s < self.until_s

    def apply(self, data: mujoco.MjData, now_s: float) -> None:
        """Write the push (or zero once it is over) into ``data.xfrc_applied``; xfrc_applied
        acts at the body's centre of mass, so the torque of the offset point is added."""
        frc = data.xfrc_applied[self.body_id]  # (6,) view: force, torque about the COM
        if not self.active(now_s):
            frc[:] = 0.0
            return
        point = data.xpos[self.body_id] + data.xmat[self.body_id].reshape(3, 3) @ self._point_local
        frc[:3] = self.force_n
        frc[3:] = np.cross(point - data.xipos[self.body_id], self.force_n)


def site_wrench_world(data: mujoco.MjData, site_id: int, force_adr: int,
                      torque_adr: int) -> tuple[np.ndarray, np.ndarray]:
    """(force (3,) N, torque (3,) Nm) of a MuJoCo force + torque sensor pair on ``site_id``,
    rotated from the site frame into world axes: the wrench the parent side exerts on the
    child side (the bodies below the site), torque about the site. A tool hanging at rest
    reads its weight's support, +m*g upward."""
    rot = data.site_xmat[site_id].reshape(3, 3)  # site -> world
    return rot @ data.sensordata[force_adr:force_adr + 3], rot @ data.sensordata[torque_adr:torque_adr + 3]


def body_inertial_wrench(model: mujoco.MjModel, data: mujoco.MjData, body_id: int,
                         point_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(force (3,) N, torque (3,) Nm, world axes, torque about ``point_m`` (3,)) a single rigid
    body needs for its current motion *and* to carry its weight: ``m (a - g)`` and
    ``I alpha + w x I w + (com - point) x m (a - g)``. Subtracting a wrist sensor's reading
    (:func:`site_wrench_world`) from it leaves the external wrench on the body, the way a
    model-based F/T compensation (tool mass, COM and inertia) does. Needs
    ``mj_rnePostConstraint`` to have run (``mj_forward`` does when the model has force sensors)."""
    acc = np.zeros(6)
    mujoco.mj_objectAcceleration(model, data, mujoco.mjtObj.mjOBJ_BODY, body_id, acc, 0)  # (rot, lin) at COM
    vel = np.zeros(6)
    mujoco.mj_objectVelocity(model, data, mujoco.mjtObj.mjOBJ_BODY, body_id, vel, 0)
    mass = float(model.body_mass[body_id])
    rot = data.ximat[body_id].reshape(3, 3)  # principal inertia axes -> world
    inertia = rot @ np.diag(model.body_inertia[body_id]) @ rot.T  # (3, 3) kg m^2, world
    omega, alpha = vel[:3], acc[:3]
    force = mass * acc[3:]  # MuJoCo's accelerations carry -gravity: a body at rest reads +g
    torque = inertia @ alpha + np.cross(omega, inertia @ omega) + np.cross(data.xipos[body_id] - point_m, force)
    return force, torque


def geom_pair_in_contact(data: mujoco.MjData, geom_a: int, geom_b: int, max_dist_m: float = math.inf) -> bool:
    """True if the current contact list holds the pair (``geom_a``, ``geom_b``) in either
    order with distance ``<= max_dist_m`` (negative: penetrating; a geom's ``gap`` reports
    contacts up to that far apart, without force, so "touching within 2 mm" is a test)."""
    n = data.ncon
    if n == 0:
        return False
    pairs = data.contact.geom[:n]  # (n, 2)
    hit = ((pairs[:, 0] == geom_a) & (pairs[:, 1] == geom_b)) | ((pairs[:, 0] == geom_b) & (pairs[:, 1] == geom_a))
    if not hit.any():
        return False
    return bool(np.any(data.contact.dist[:n][hit] <= max_dist_m))
