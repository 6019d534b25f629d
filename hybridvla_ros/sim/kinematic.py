"""A fast, deterministic kinematic simulation of every embodiment, with scripted experts.

One :class:`KinematicSim` (a :class:`~hybridvla_ros.sim.base.Simulator`) serves the ROS
``sim_robot_node`` and the demonstration recorder (:mod:`hybridvla_ros.sim.demos`). There
is no dynamics: joints are driven by a model of a position controller (this module) and
the scene is drawn with OpenCV (:mod:`~hybridvla_ros.sim.kinematic_render`) from forward
kinematics (:mod:`hybridvla_ros.sim.kinematics`, which cites the DH sources). Which robot
it is comes from its registered scene (:mod:`~hybridvla_ros.sim.kinematic_scenes`): arms
on a table, or a mobile base on a floor; no code here branches on a robot's name (the
examples in docstrings name the built-in ones).

Position controller. A command is interpreted the way a joint trajectory controller
interprets a single point one control period ahead:

* a *stream step*, a target within one period's reach (``|target - q| <=
  max_velocity * control_period``, per joint, judged when the command arrives), is
  interpolated so the joint arrives by the next control period (velocity
  ``error / time_left``). A stream of such commands (the expert's, or the safety
  filter's output) is therefore tracked without lag and at the speed it asks for;
* anything else (also a target repeated unchanged, e.g. a hold: arriving at full
  speed and then standing would break the acceleration limit and overshoot), and any
  target whose period has run out without a new command, is a *goal*: the joint takes
  the time-optimal profile toward it, never faster than it can still stop on the target
  (~``sqrt(2 * max_acceleration * |error|)``), so a large jump neither overshoots nor
  oscillates.

Both are then limited to ``max_acceleration`` and ``max_velocity``, and to the speed
from which the joint can still brake before position_min/max: a joint slows into its
limit instead of hitting it, so positions stay in the limits without ever breaking the
acceleration limit. Steps are integrated in sub-steps of at most 5 ms so the result
barely depends on how the caller slices time.

The mobile base (hello: joints ``[base_x, base_y, base_yaw]`` in the odom frame) is a
differential drive (v forward, omega yaw rate): lateral velocity does not exist.
``command_twist`` holds (v, omega) until the next twist and stops 0.5 s after the last
one (stretch_driver's cmd_vel timeout); ``command_positions`` targets are tracked by a
controller that turns toward the target point, drives there, and finally turns to the
target yaw (the same stream-step / goal rule as the joints). ``base_yaw`` is a
continuous angle clipped to its limits like any joint (the safety filter treats it
the same way), not wrapped.

Size: one class of about 470 lines: the joint and the mobile-base controllers and experts
share one simulator's state, limits and validation. The scenes
(:mod:`~hybridvla_ros.sim.kinematic_scenes`) and the drawing
(:mod:`~hybridvla_ros.sim.kinematic_render`) are their own modules.
"""

from __future__ import annotations

import copy
import math
import numbers

import numpy as np

from hybridvla_ros.params.embodiment import EmbodimentParams
from hybridvla_ros.sim.base import SimulatorFactory
from hybridvla_ros.sim.kinematic_render import SceneRenderer
from hybridvla_ros.sim.kinematic_scenes import ArmScene, BaseScene, make_kinematic_scene
from hybridvla_ros.sim.kinematics import ChainPose, PinholeCamera, dls_position_step
from hybridvla_ros.sim.profiles import brake_speed, profile_speed, wrap_angle

__all__ = ["KinematicSim", "TWIST_TIMEOUT_S", "TABLE_STIFFNESS_N_PER_M"]

TWIST_TIMEOUT_S = 0.5  # stretch_driver stops the base when cmd_vel is this old
TABLE_STIFFNESS_N_PER_M = 2000.0  # contact spring of the table against a tool point
_MAX_SUBSTEP_S = 0.005
_STREAM_TOLERANCE = 1.05  # a stream step may exceed one period's reach by 5 % (noise, rounding)
_FORCE_NOISE_N = 0.3  # std of the F/T sensor noise
_TORQUE_NOISE_NM = 0.03


class KinematicSim:
    """Kinematic robot + scene for one embodiment: command, step, observe, render.

    Deterministic given ``seed``: targets and start noise come from one generator,
    sensor noise from another, so reading the wrench never changes the next target."""

    # Episode state, set by reset() (which __init__ calls).
    _rng: np.random.Generator  # targets and start noise
    _sensor_rng: np.random.Generator  # F/T sensor noise
    _target: np.ndarray  # (K, 3) world m
    _cmd: np.ndarray  # (D,) the position target being tracked
    _cmd_time_s: float  # when it arrived
    _stream: np.ndarray  # (D,) bool: the command is a stream step (see the module docstring)
    _base_mode: str  # hello: "position" or "twist"
    _twist: np.ndarray  # (2,) hello: commanded (forward m/s, yaw rate rad/s)
    _twist_time_s: float
    _push_force_n: np.ndarray  # (3,) an external push at the tool point
    _push_until_s: float

    def __init__(self, params: EmbodimentParams, image_width: int = 160, image_height: int = 120,
                 seed: int = 0, scene: str = "nominal") -> None:
        """Build the scene of ``params.embodiment`` and reset it with ``seed``.
        Raises ValueError for an unknown embodiment, an action_dim its scene does not have,
        a bad image size / seed, or a scene preset other than ``nominal`` (the only one)."""
        for name, value in (("image_width", image_width), ("image_height", image_height)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 8 <= value <= 4096:
                raise ValueError(f"{name} must be an int in [8, 4096], got {value!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        self._check_scene(scene)
        self.params = params
        self._scene = make_kinematic_scene(params)
        self._is_base = isinstance(self._scene, BaseScene)
        self._arms = self._scene.arms if isinstance(self._scene, ArmScene) else []
        self._period_s = params.control_period_s
        self._lo = np.asarray(params.position_min, dtype=np.float64)  # (D,)
        self._hi = np.asarray(params.position_max, dtype=np.float64)
        self._vmax = np.asarray(params.max_velocity, dtype=np.float64)
        self._amax = np.asarray(params.max_acceleration, dtype=np.float64)
        self._home = np.asarray(params.home_position, dtype=np.float64)
        self._dim = params.action_dim
        self._state_joints = tuple(getattr(params, "state_joints", ()))
        self._width, self._height = int(image_width), int(image_height)
        self._renderer = SceneRenderer(self._scene, self._home, self._lo, self._hi, self._width, self._height)
        self._time_s = 0.0
        self._q = self._home.copy()
        self._v = np.zeros(self._dim)
        self._base_speed = np.zeros(2)  # hello: (forward m/s, yaw rate rad/s)
        self._fk_cache: tuple[int, list[ChainPose]] | None = None
        self._state_version = 0
        self.reset(seed=seed)

    # ------------------------------------------------------------------ properties

    @property
    def positions(self) -> np.ndarray:
        """(D,) measured joint positions (rad or m), a copy."""
        return self._q.copy()

    @property
    def velocities(self) -> np.ndarray:
        """(D,) joint velocities (rad/s or m/s); hello: world-frame (vx, vy, yaw rate)."""
        if self._is_base:
            yaw = self._q[2]
            v, w = self._base_speed
            return np.array([v * math.cos(yaw), v * math.sin(yaw), w])
        return self._v.copy()

    @property
    def state_joint_positions(self) -> dict[str, float]:
        """Observed, not commanded, joints reported in joint_states: the parameter file's
        ``state_joints``, all 0.0 (the kinematic tasks grasp nothing, so a suction cup
        named there never holds)."""
        return {name: 0.0 for name in self._state_joints}

    @property
    def time_s(self) -> float:
        """Simulated seconds since construction (reset() does not rewind it)."""
        return self._time_s

    @property
    def commanded_positions(self) -> np.ndarray:
        """(D,) the position target being tracked (the last command, clipped to the limits)."""
        return self._cmd.copy()

    @property
    def control_period_s(self) -> float:
        """Seconds between two expert / policy commands (1 / control_rate_hz)."""
        return self._period_s

    @property
    def num_tool_points(self) -> int:
        """K: tool points (and targets): 2 for aloha, 1 otherwise."""
        return self._scene.num_tool_points

    @property
    def camera(self) -> PinholeCamera:
        """The fixed scene camera (for projecting world points into the image)."""
        return self._renderer.camera

    @property
    def target(self) -> np.ndarray:
        """(K, 3) where the tool point(s) must go (world frame, m), a copy."""
        return self._target.copy()

    @target.setter
    def target(self, value: np.ndarray) -> None:
        """Place the target(s); ValueError unless a finite (K, 3) array (hello: z is set to 0)."""
        arr = np.array(value, dtype=np.float64)
        k = self.num_tool_points
        if arr.shape != (k, 3) or not np.all(np.isfinite(arr)):
            raise ValueError(f"target must be a finite ({k}, 3) array, got shape {arr.shape}")
        if self._is_base:
            arr[:, 2] = 0.0
        self._target = arr

    @property
    def scene(self) -> str:
        """The scene preset: always ``nominal`` (the kinematic tasks have one); setting any
        other name raises ValueError."""
        return "nominal"

    @scene.setter
    def scene(self, name: str) -> None:
        self._check_scene(name)

    @staticmethod
    def _check_scene(name: object) -> None:
        if name != "nominal":
            raise ValueError(f"scene: the kinematic simulator has only the 'nominal' scene, got {name!r}")

    # ------------------------------------------------------------------ episode control

    def reset(self, seed: int | None = None, start_noise_rad: float = 0.05) -> None:
        """Put the robot at home_position plus Gaussian noise (std ``start_noise_rad``, scaled
        down for joints whose range is small, e.g. grippers; clipped to the limits), at rest,
        holding that pose, and draw a new random target. ``seed`` restarts the generators
        (None continues them). Raises ValueError for a negative/non-finite noise or bad seed."""
        if isinstance(start_noise_rad, bool) or not isinstance(start_noise_rad, numbers.Real) \
                or not math.isfinite(start_noise_rad) or start_noise_rad < 0:
            raise ValueError(f"start_noise_rad must be a finite number >= 0, got {start_noise_rad!r}")
        if seed is not None:
            if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
                raise ValueError(f"seed must be an int >= 0, got {seed!r}")
            self._rng = np.random.default_rng(int(seed))
            self._sensor_rng = np.random.default_rng([int(seed), 1])
        # A 0.05 rad jitter is nothing for an arm joint but most of a 36 mm gripper stroke.
        noise_scale = np.minimum(1.0, 0.1 * (self._hi - self._lo))  # (D,)
        noise = self._rng.normal(0.0, 1.0, self._dim) * start_noise_rad * noise_scale
        self._q = np.clip(self._home + noise, self._lo, self._hi)
        self._v = np.zeros(self._dim)
        self._base_speed = np.zeros(2)
        self._cmd = self._q.copy()
        self._cmd_time_s = self._time_s
        self._stream = np.zeros(self._dim, dtype=bool)  # hold = goal at the current pose
        self._base_mode = "position"
        self._twist = np.zeros(2)
        self._twist_time_s = -math.inf
        self._push_force_n = np.zeros(3)
        self._push_until_s = -math.inf
        self._touch()
        self.randomize_target()

    def randomize_target(self, seed: int | None = None) -> None:
        """Draw new target(s) without moving the robot (``seed`` restarts the generator)."""
        rng = self._rng if seed is None else np.random.default_rng(seed)
        scene = self._scene
        if isinstance(scene, BaseScene):
            # A point on the floor 0.4-1.5 m from the start (uniform over the annulus).
            radius = math.sqrt(rng.uniform(scene.target_min_m ** 2, scene.target_max_m ** 2))
            bearing = rng.uniform(-math.pi, math.pi)
            xy = self._home[:2] + radius * np.array([math.cos(bearing), math.sin(bearing)])
            xy = np.clip(xy, self._lo[:2] + scene.robot_radius_m, self._hi[:2] - scene.robot_radius_m)
            self._target = np.array([[xy[0], xy[1], 0.0]])
        else:
            low = np.stack([a.target_low_m for a in scene.arms])  # (K, 3)
            high = np.stack([a.target_high_m for a in scene.arms])
            self._target = rng.uniform(low, high)

    # ------------------------------------------------------------------ commands

    def command_positions(self, target: np.ndarray) -> None:
        """Track (D,) absolute position targets (rad or m; hello: odom pose x, y, yaw) from a
        position controller; values outside the limits are clipped to them. Raises ValueError
        (state unchanged) for a wrong shape or a NaN/Inf value."""
        try:
            arr = np.array(target, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"command must be {self._dim} numbers, got {target!r}") from None
        if arr.shape != (self._dim,):
            raise ValueError(f"command must have shape ({self._dim},), got {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"command has non-finite values: {arr.tolist()}")
        previous = self._cmd
        self._cmd = np.clip(arr, self._lo, self._hi)
        self._cmd_time_s = self._time_s
        reach = self._vmax * self._period_s * _STREAM_TOLERANCE
        if self._is_base:
            self._base_mode = "position"
            rho = float(np.hypot(*(self._cmd[:2] - self._q[:2])))
            lin_reach = min(reach[0], reach[1])
            self._stream = np.array([rho <= lin_reach, rho <= lin_reach,
                                     abs(self._cmd[2] - self._q[2]) <= reach[2]])
        else:
            # a target repeated unchanged (a hold) is a goal: see the module docstring
            self._stream = (np.abs(self._cmd - self._q) <= reach) & (self._cmd != previous)

    def command_twist(self, linear_x: float, linear_y: float, angular_z: float) -> None:
        """Mobile base velocity (m/s, rad/s), held until the next twist, dropped after
        TWIST_TIMEOUT_S without one. ``linear_y`` is ignored (differential drive, as Stretch).
        Speeds beyond max_velocity are clipped. Raises ValueError (state unchanged) for a
        non-base embodiment or a non-finite value."""
        if not self._is_base:
            raise ValueError(f"{self.params.embodiment} has no mobile base; use command_positions")
        values: list[float] = []
        for name, value in (("linear_x", linear_x), ("linear_y", linear_y), ("angular_z", angular_z)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
            values.append(float(value))
        v_lim = min(self._vmax[0], self._vmax[1])
        self._twist = np.array([np.clip(values[0], -v_lim, v_lim),
                                np.clip(values[2], -self._vmax[2], self._vmax[2])])
        self._twist_time_s = self._time_s
        self._base_mode = "twist"

    def apply_external_force(self, force: np.ndarray, duration_s: float) -> None:
        """Add a push (3,) N at the tool point (aloha: the left gripper's), felt by the wrist
        sensor for ``duration_s`` (it replaces an earlier push; the kinematic robot is not
        moved by it).
        Raises ValueError for a non-finite force / duration or duration <= 0."""
        arr = np.array(force, dtype=np.float64)
        if arr.shape != (3,) or not np.all(np.isfinite(arr)):
            raise ValueError(f"force must be a finite (3,) array, got {force!r}")
        if isinstance(duration_s, bool) or not isinstance(duration_s, numbers.Real) \
                or not math.isfinite(duration_s) or duration_s <= 0:
            raise ValueError(f"duration_s must be a finite number > 0, got {duration_s!r}")
        self._push_force_n = arr
        self._push_until_s = self._time_s + float(duration_s)

    # ------------------------------------------------------------------ time

    def step(self, dt_s: float) -> None:
        """Advance ``dt_s`` seconds (sub-stepped at <= 5 ms). Raises ValueError for a
        negative or non-finite dt."""
        if isinstance(dt_s, bool) or not isinstance(dt_s, numbers.Real) or not math.isfinite(dt_s) or dt_s < 0:
            raise ValueError(f"dt_s must be a finite number >= 0, got {dt_s!r}")
        if dt_s == 0:
            return
        n = max(1, math.ceil(dt_s / _MAX_SUBSTEP_S - 1e-9))
        sub = dt_s / n
        for _ in range(n):  # sequential in time
            if self._is_base:
                self._substep_base(sub)
            else:
                self._substep_joints(sub)
            self._time_s += sub
        self._touch()

    def _substep_joints(self, dt: float) -> None:
        err = self._cmd - self._q  # (D,)
        desired = np.sign(err) * profile_speed(np.abs(err), self._vmax, self._amax, dt)
        time_left = self._cmd_time_s + self._period_s - self._time_s
        if time_left > 1e-9:
            interp = np.clip(err / max(time_left, dt), -self._vmax, self._vmax)
            desired = np.where(self._stream, interp, desired)
        # Never faster than allows braking before a position limit: the joint stops at the
        # limit instead of hitting it (an infinite deceleration).
        desired = np.clip(desired, -brake_speed(self._q - self._lo, self._amax, dt),
                          brake_speed(self._hi - self._q, self._amax, dt))
        self._v = np.clip(np.clip(desired, self._v - self._amax * dt, self._v + self._amax * dt),
                          -self._vmax, self._vmax)
        q = np.clip(self._q + self._v * dt, self._lo, self._hi)
        # Braking makes this a no-op up to rounding; if a limit still cuts the step short,
        # report the motion that happened.
        self._v = (q - self._q) / dt
        self._q = q

    def _substep_base(self, dt: float) -> None:
        x, y, yaw = self._q
        v_lim = min(self._vmax[0], self._vmax[1])
        w_lim = self._vmax[2]
        a_lin = min(self._amax[0], self._amax[1])
        a_ang = self._amax[2]
        if self._base_mode == "twist":
            fresh = self._time_s - self._twist_time_s < TWIST_TIMEOUT_S
            v_des, w_des = self._twist if fresh else (0.0, 0.0)
        else:
            v_des, w_des = self._base_tracking(dt, v_lim, w_lim, a_lin, a_ang)
        # The yaw joint brakes into its limits like an arm joint (spinning in place for turns
        # would otherwise hit +-2 pi at full speed); the walls of the x/y box are a hard stop.
        w_des = float(np.clip(w_des, -brake_speed(yaw - self._lo[2], a_ang, dt),
                              brake_speed(self._hi[2] - yaw, a_ang, dt)))
        v_prev, w_prev = self._base_speed
        v = float(np.clip(np.clip(v_des, v_prev - a_lin * dt, v_prev + a_lin * dt), -v_lim, v_lim))
        w = float(np.clip(np.clip(w_des, w_prev - a_ang * dt, w_prev + a_ang * dt), -w_lim, w_lim))
        mid_yaw = yaw + 0.5 * w * dt  # midpoint heading: exact for constant (v, w) to 2nd order
        q = np.array([x + v * math.cos(mid_yaw) * dt, y + v * math.sin(mid_yaw) * dt, yaw + w * dt])
        clipped = (q < self._lo) | (q > self._hi)
        if clipped[0] or clipped[1]:
            v = 0.0  # against the edge of the workspace: stop rather than slide along it
        if clipped[2]:
            w = 0.0
        self._q = np.clip(q, self._lo, self._hi)
        self._base_speed = np.array([v, w])

    def _base_tracking(self, dt: float, v_lim: float, w_lim: float, a_lin: float,
                       a_ang: float) -> tuple[float, float]:
        """(v, w) the pose controller asks for: see the module docstring."""
        x, y, yaw = self._q
        dx, dy = self._cmd[0] - x, self._cmd[1] - y
        yaw_err = self._cmd[2] - yaw  # a joint: no wrapping, the commanded angle is the angle
        c, s = math.cos(yaw), math.sin(yaw)
        along, lateral = dx * c + dy * s, -dx * s + dy * c
        rho = math.hypot(dx, dy)
        time_left = self._cmd_time_s + self._period_s - self._time_s
        in_period = time_left > 1e-9
        lin_stream = in_period and bool(self._stream[0])
        pos_tol_m = 0.02  # closer than this the bearing is noise: align the yaw instead
        if lin_stream:
            # One period's step: arrive by the next command; lateral error is not drivable.
            v_des = along / max(time_left, dt)
            heading_goal = None
        elif rho > pos_tol_m:
            bearing = math.atan2(lateral, along)
            backwards = abs(bearing) > math.pi / 2 and rho < 0.3  # back up a little, don't turn around
            heading_err = float(wrap_angle(bearing - math.pi)) if backwards else bearing
            # Drive only while roughly facing the target; cos(2a) fades it out by 45 degrees.
            gate = max(0.0, math.cos(2.0 * heading_err)) if abs(heading_err) < math.pi / 4 else 0.0
            v_des = (-1.0 if backwards else 1.0) * float(profile_speed(rho, v_lim, a_lin, dt)) * gate
            heading_goal = heading_err
        else:
            v_des = math.copysign(float(profile_speed(abs(along), v_lim, a_lin, dt)), along)
            heading_goal = None
        if in_period and bool(self._stream[2]):
            w_des = yaw_err / max(time_left, dt)
        else:
            err = yaw_err if heading_goal is None else heading_goal
            w_des = math.copysign(float(profile_speed(abs(err), w_lim, a_ang, dt)), err)
        return v_des, w_des

    # ------------------------------------------------------------------ kinematics & task

    def _touch(self) -> None:
        self._state_version += 1

    def _arm_poses(self) -> list[ChainPose]:
        """FK of every arm at the current positions (cached until the state changes)."""
        if self._fk_cache is None or self._fk_cache[0] != self._state_version:
            poses = [a.chain.forward(self._q[a.joints]) for a in self._arms]
            self._fk_cache = (self._state_version, poses)
        return self._fk_cache[1]

    def end_effector_positions(self) -> np.ndarray:
        """(K, 3) tool point(s) in the world frame (m): franka TCP, both aloha pinch points,
        the leap palm, hello's base (x, y, 0)."""
        if self._is_base:
            return np.array([[self._q[0], self._q[1], 0.0]])
        return np.stack([p.tool_m for p in self._arm_poses()])

    def task_error_m(self) -> float:
        """Largest distance (m) between a tool point and its target."""
        return float(np.max(np.linalg.norm(self.end_effector_positions() - self._target, axis=1)))

    def success(self, tolerance_m: float = 0.03) -> bool:
        """True when every tool point is within ``tolerance_m`` of its target."""
        return self.task_error_m() <= tolerance_m

    def wrench(self) -> tuple[np.ndarray, np.ndarray]:
        """(force (3,) N, torque (3,) Nm) at the wrist F/T sensor, world axes: the table
        pushing back on a tool point below z = 0 (a TABLE_STIFFNESS_N_PER_M spring; aloha sums
        both arms), plus an active external push, plus sensor noise. Hello: push + noise."""
        force = np.zeros(3)
        torque = np.zeros(3)
        push_active = self._time_s < self._push_until_s
        if not self._is_base:
            poses = self._arm_poses()
            tools = np.stack([p.tool_m for p in poses])  # (K, 3)
            wrists = np.stack([p.tool_m - p.tool_frame[:3, :3] @ a.tool_offset_m
                               for p, a in zip(poses, self._arms)])  # (K, 3)
            contact = np.zeros_like(tools)
            contact[:, 2] = TABLE_STIFFNESS_N_PER_M * np.maximum(0.0, -tools[:, 2])
            if push_active:
                contact[0] += self._push_force_n
            force = contact.sum(axis=0)
            torque = np.cross(tools - wrists, contact).sum(axis=0)
        elif push_active:
            force = self._push_force_n.copy()
        force = force + self._sensor_rng.normal(0.0, _FORCE_NOISE_N, 3)
        torque = torque + self._sensor_rng.normal(0.0, _TORQUE_NOISE_NM, 3)
        return force, torque

    # ------------------------------------------------------------------ expert

    def expert_target(self) -> np.ndarray:
        """(D,) the scripted expert's absolute position target for the next control period:
        within the limits and at most max_velocity * control_period from the current positions.
        Arms: damped-least-squares IK step of the tool point(s) toward the target(s) with a
        null-space pull toward home; grippers open, LEAP fingers to home. Hello: turn toward
        the target, then drive (pure pursuit); returns the next pose [x, y, yaw]."""
        scene = self._scene
        if isinstance(scene, BaseScene):
            return self._expert_base()
        q = self._q
        step_max = 0.95 * self._vmax * self._period_s  # (D,) margin below the stream reach
        out = q.copy()
        for arm, pose, goal in zip(scene.arms, self._arm_poses(), self._target):  # K <= 2 arms
            err = goal - pose.tool_m
            dist = float(np.linalg.norm(err))
            speed = float(profile_speed(dist, scene.cart_speed_m_s, 0.8 * scene.cart_accel_m_s2, self._period_s))
            dx = err * (speed * self._period_s / dist) if dist > 1e-9 else np.zeros(3)
            idx = arm.joints
            null = scene.null_gain_per_s * self._period_s * (self._home[idx] - q[idx])
            jac = pose.position_jacobian()
            lo, hi = self._lo[idx], self._hi[idx]
            free = np.ones(idx.size, dtype=bool)
            for _ in range(3):  # hold joints the step would push past a limit, then re-solve
                dq = dls_position_step(jac, dx, null, scene.damping, free)
                blocked = free & ((q[idx] + dq < lo) | (q[idx] + dq > hi))
                if not blocked.any():
                    break
                free &= ~blocked
            # One factor for all joints of the arm: keeps the tool moving in a straight line.
            ratio = float(np.max(np.abs(dq) / step_max[idx]))
            if ratio > 1.0:
                dq /= ratio
            out[idx] = q[idx] + dq
        extra = scene.extra_joints
        if extra.size:
            out[extra] = q[extra] + np.clip(scene.extra_goal - q[extra], -step_max[extra], step_max[extra])
        return np.clip(out, self._lo, self._hi)

    def _expert_base(self) -> np.ndarray:
        """Next pose target of the base expert (turn, then pure-pursuit drive)."""
        x, y, yaw = self._q
        goal = self._target[0, :2]
        dx, dy = goal[0] - x, goal[1] - y
        rho = math.hypot(dx, dy)
        if rho < 0.005:
            return np.clip(self._q.copy(), self._lo, self._hi)
        period = self._period_s
        v_lim = 0.95 * min(self._vmax[0], self._vmax[1])
        w_lim = 0.95 * self._vmax[2]
        a_lin = 0.8 * min(self._amax[0], self._amax[1])  # plan below the limits so the base keeps up
        a_ang = 0.8 * self._amax[2]
        heading_err = float(wrap_angle(math.atan2(dy, dx) - yaw))
        along = rho * math.cos(heading_err)
        if rho > 0.05:
            w = math.copysign(float(profile_speed(abs(heading_err), w_lim, a_ang, period)), heading_err)
        else:
            w = 0.0  # last few cm: the bearing swings wildly, just roll onto the point
        gate = max(0.0, math.cos(2.0 * heading_err)) if abs(heading_err) < math.pi / 4 else 0.0
        v = min(float(profile_speed(rho, v_lim, a_lin, period)), max(along, 0.0) / period) * gate
        mid_yaw = yaw + 0.5 * w * period
        nxt = np.array([x + v * period * math.cos(mid_yaw), y + v * period * math.sin(mid_yaw), yaw + w * period])
        return np.clip(nxt, self._lo, self._hi)

    # ------------------------------------------------------------------ rendering

    def project_to_image(self, points_m: np.ndarray) -> np.ndarray:
        """(N, 2) pixel coordinates [u (column), v (row)] of world points (N, 3); NaN if behind
        the camera."""
        return self._renderer.camera.project(np.asarray(points_m, dtype=np.float64).reshape(-1, 3))[0]

    extra_cameras: tuple[str, ...] = ()  # the fixed camera only

    def render(self, camera: str = "") -> np.ndarray:
        """(H, W, 3) uint8 RGB image from the fixed camera: background, shadows of the
        target(s) and tool point(s) on the table, the robot from FK, and the red target(s)
        drawn last so they are never hidden. ValueError for any other ``camera``."""
        if camera:
            raise ValueError(f"camera: the kinematic simulator renders its fixed camera only, not {camera!r}")
        return self._renderer.render(self._q, self._target, [] if self._is_base else self._arm_poses())

    # ------------------------------------------------------------------ copies

    def clone(self) -> KinematicSim:
        """An independent copy (state, generators, scene): stepping or resetting it never
        changes this simulator. ``copy.deepcopy`` does the same."""
        return copy.deepcopy(self)

# Registered by name (sim.registry): the type checker holds the class to the Simulator
# protocol and to the constructor make_sim calls here.
_AS_REGISTERED: SimulatorFactory = KinematicSim
