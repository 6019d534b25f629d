"""A MuJoCo simulation of the Franka Panda picking a cube and placing it on a target (ROS-free).

:class:`MujocoFrankaSim` is a :class:`~hybridvla_ros.sim.base.Simulator` (the sim node,
the demonstration recorder and the evaluation drive it like the kinematic one), with real
contact dynamics. The model (Panda from ``gymnasium-robotics`` with a suction cup, table,
cube, target, camera; the scene presets) is built in
:mod:`~hybridvla_ros.sim.mujoco_franka_model`; the expert's plan is
:mod:`~hybridvla_ros.sim.mujoco_franka_expert`. This module runs them.

Servos. Each joint's position servo (Menagerie gains) tracks a reference with velocity,
inertia and Coriolis feed-forward (~1 mrad tracking error at full speed); positions are
in Franka's convention (``qpos = q + JOINT_OFFSET_RAD``).

Commands. ``command_positions`` is interpreted by
:class:`~hybridvla_ros.sim.mujoco_common.JointReference`, KinematicSim's rule: a target
within one control period's reach is interpolated to arrive by the next period, anything
else is approached with a velocity/acceleration-limited profile; the reference brakes into
the joint limits, never past them.

Force/torque. Force and torque sensors on a site at the flange (between link7 and the
hand). :meth:`MujocoFrankaSim.wrench` returns the *external* wrench in world axes: the
reading minus the load of the tool's own weight and motion (hand mass, COM and inertia from
the model, like Franka's end-effector load setting), plus seeded noise (0.3 N / 0.03 Nm).

Suction cup (the 7 command dimensions are the arm joints, so the gripper is automatic):

* it grips (a weld equality between hand and cube, holding their current relative pose)
  when the cup touches the cube (within 2 mm) from above (TCP above the cube's centre
  plane) and it is *armed*;
* it releases when the held cube, after being lifted more than ``MIN_LIFT_FOR_RELEASE_M``
  (2 cm) since the grip, touches the table again (set down);
* after a release it re-arms once the TCP is ``REARM_CLEARANCE_M`` (2 cm) away from the
  cube, so setting a cube down does not pick it up again.

Task. ``task_error_m`` is the horizontal distance cube centre - target centre plus the
cube's height above its resting height; ``success`` needs the cube released, resting on
the table (in contact, slower than 5 cm/s) and ``task_error_m <= tolerance_m``.

Expert. ``expert_target`` takes the waypoint of the phase the state is in and makes one
damped-least-squares IK step of the TCP (position and "hand pointing down" orientation,
MuJoCo's site Jacobian ``mj_jacSite``) with a null-space pull toward home. An episode
takes ~3.2 s (nominal) / ~3.5 s (shifted).

The simulator has no :class:`~hybridvla_ros.sim.kinematics.PinholeCamera` (``camera`` is
omitted); :meth:`MujocoFrankaSim.project_to_image` projects world points with MuJoCo's
camera instead.

Size: one class of about 480 lines whose parts (servo feed-forward, suction cup, F/T
compensation, the expert's IK step, cloning) all read and write the same MuJoCo model and
data; the model and the expert's plan are their own modules.
"""

from __future__ import annotations

import copy
import math
import time

# First: it picks MuJoCo's headless GL backend (EGL) before mujoco is imported.
from hybridvla_ros.sim import mujoco_common as mc

# isort: split
import mujoco
import numpy as np

from hybridvla_ros.params.embodiment import EmbodimentParams
from hybridvla_ros.sim.base import SimulatorFactory
from hybridvla_ros.sim.kinematics import dls_position_step
from hybridvla_ros.sim.mujoco_franka_expert import CART_SPEED_M_S, FrankaTaskState, plan_expert
from hybridvla_ros.sim.mujoco_franka_model import (
    ASSET_PACKAGE,
    ASSET_PIP_NAME,
    CUBE_HALF_SIZE_M,
    CUBE_TOUCH_M,
    CUP_TOUCH_M,
    JOINT_OFFSET_RAD,
    PHYSICS_TIMESTEP_S,
    SCENES,
    SERVO_KP,
    SERVO_KV,
    TABLE_TOP_Z_M,
    TCP_Z_M,
    SceneConfig,
    box_corners_z,
    build_spec,
)
from hybridvla_ros.sim.profiles import profile_speed

__all__ = [
    "MujocoFrankaSim",
    "SceneConfig",
    "SCENES",
    "ASSET_PACKAGE",
    "ASSET_PIP_NAME",
    "TABLE_TOP_Z_M",
    "CUBE_HALF_SIZE_M",
    "PHYSICS_TIMESTEP_S",
    "MIN_LIFT_FOR_RELEASE_M",
    "REARM_CLEARANCE_M",
]

MIN_LIFT_FOR_RELEASE_M = 0.02
REARM_CLEARANCE_M = 0.02
SUCTION_JOINT = "suction_cup"  # joint_states name of the vacuum state (state_joints in config/franka.yaml)
_FORCE_NOISE_N = 0.3
_TORQUE_NOISE_NM = 0.03

# Expert IK step.
_CART_ACCEL_M_S2 = 2.0  # planned TCP deceleration into the waypoint
_ORIENT_GAIN_PER_S = 4.0
_ORIENT_WEIGHT_M = 0.3  # rad -> m: how much orientation error counts against position
_IK_DAMPING = 0.03
_NULL_GAIN_PER_S = 1.5


class MujocoFrankaSim:
    """Franka Panda + suction cup picking a cube onto a target in MuJoCo: command, step,
    observe, render (KinematicSim's interface; see the module docstring).

    Deterministic given ``seed``: cube / target placement and start noise come from one
    generator, sensor noise from another."""

    def __init__(self, params: EmbodimentParams, image_width: int = 160, image_height: int = 120,
                 seed: int = 0, scene: str = "nominal") -> None:
        """Build the scene and reset it with ``seed``. Raises ValueError for params that are not
        the 7-joint franka, a bad image size / seed / scene name, and MissingAssetError (naming
        the pip package) when the Panda model is not installed."""
        if getattr(params, "embodiment", None) != "franka" or getattr(params, "action_dim", None) != 7:
            raise ValueError(f"params: MujocoFrankaSim needs the franka embodiment with action_dim 7, got "
                             f"{getattr(params, 'embodiment', None)!r} with action_dim "
                             f"{getattr(params, 'action_dim', None)!r}")
        for name, value in (("image_width", image_width), ("image_height", image_height)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 8 <= value <= 4096:
                raise ValueError(f"{name} must be an int in [8, 4096], got {value!r}")
        seed = mc.check_seed("seed", seed)
        self._scene = self._scene_config(scene)
        self.params = params
        self._period_s = params.control_period_s
        self._lo = np.asarray(params.position_min, dtype=np.float64)  # (7,) rad
        self._hi = np.asarray(params.position_max, dtype=np.float64)
        self._vmax = np.asarray(params.max_velocity, dtype=np.float64)
        self._home = np.clip(np.asarray(params.home_position, dtype=np.float64), self._lo, self._hi)
        self._width, self._height = int(image_width), int(image_height)

        self.model = build_spec(params).compile()
        self.data = mujoco.MjData(self.model)
        m = self.model
        jids = [mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, n) for n in params.joint_names]
        self._qadr = m.jnt_qposadr[jids].copy()  # (7,)
        self._dadr = m.jnt_dofadr[jids].copy()  # (7,)
        cube_joint = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, "cube_free")
        self._cube_qadr = int(m.jnt_qposadr[cube_joint])
        self._cube_dadr = int(m.jnt_dofadr[cube_joint])
        self._hand_body = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "hand")
        self._cube_body = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "cube")
        self._target_mocap = int(m.body_mocapid[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "target")])
        self._tcp_site = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, "tcp")
        self._ft_site = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, "ft_sensor")
        self._cup_geom = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "cup")
        self._cube_geom = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "cube")
        self._table_geom = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "table")
        self._weld = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_EQUALITY, "suction")
        self._camera_id = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, "scene")
        self._wrist_camera_id = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, "wrist")
        self._force_adr = int(m.sensor_adr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SENSOR, "ft_force")])
        self._torque_adr = int(m.sensor_adr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SENSOR, "ft_torque")])
        self._ff_gain = SERVO_KV / SERVO_KP  # velocity feed-forward through the servo's own damping
        amax = np.asarray(params.max_acceleration, dtype=np.float64)
        self._ref = mc.JointReference(self._lo, self._hi, self._vmax, amax, self._period_s)
        self._push = mc.ExternalPush(self._hand_body)
        self._renderer: mujoco.Renderer | None = None
        self._jacp = np.zeros((3, m.nv))
        self._jacr = np.zeros((3, m.nv))
        self._acc_full = np.zeros(m.nv)
        self._tau_full = np.zeros(m.nv)
        self._pending_s = 0.0
        self._down_rot = self._tcp_rotation_at(self._home)  # (3, 3) the expert's TCP orientation
        self.reset(seed=seed)

    # ------------------------------------------------------------------ scene presets

    @staticmethod
    def _scene_config(scene: str | SceneConfig) -> SceneConfig:
        if isinstance(scene, SceneConfig):
            return scene
        if scene not in SCENES:
            raise ValueError(f"scene must be one of {list(SCENES)}, got {scene!r}")
        return SCENES[scene]

    @property
    def scene(self) -> str:
        """Name of the scene preset reset() and randomize_target() draw from; set it by name
        (or with a SceneConfig). ValueError for an unknown name."""
        return self._scene.name

    @scene.setter
    def scene(self, value: str | SceneConfig) -> None:
        self._scene = self._scene_config(value)
        self.model.geom_rgba[self._cube_geom] = self._scene.cube_rgba

    @property
    def scene_config(self) -> SceneConfig:
        """The active :class:`SceneConfig`."""
        return self._scene

    # ------------------------------------------------------------------ state

    @property
    def positions(self) -> np.ndarray:
        """(7,) measured joint positions (rad, Franka convention), clipped to the limits (MuJoCo's
        limit constraint is soft: a joint pressed into its stop may sit a hair past it)."""
        return np.clip(self.data.qpos[self._qadr] - JOINT_OFFSET_RAD, self._lo, self._hi)

    @property
    def velocities(self) -> np.ndarray:
        """(7,) joint velocities (rad/s)."""
        return self.data.qvel[self._dadr].copy()

    @property
    def time_s(self) -> float:
        """Simulated seconds since construction, whole physics steps (reset() does not rewind it)."""
        return float(self.data.time)

    @property
    def commanded_positions(self) -> np.ndarray:
        """(7,) the position target being tracked (the last command, clipped to the limits)."""
        return self._ref.target.copy()

    @property
    def control_period_s(self) -> float:
        """Seconds between two expert / policy commands (1 / control_rate_hz)."""
        return self._period_s

    @property
    def num_tool_points(self) -> int:
        """K = 1 tool point (the TCP) and one target."""
        return 1

    @property
    def target(self) -> np.ndarray:
        """(1, 3) centre of the place target on the table (world m), a copy."""
        return self.data.mocap_pos[self._target_mocap][None, :].copy()

    @target.setter
    def target(self, value: np.ndarray) -> None:
        """Place the target; ValueError unless a finite (1, 3) array. z is set to the table top."""
        arr = mc.check_finite_array("target", value, (1, 3))
        arr[0, 2] = TABLE_TOP_Z_M
        self.data.mocap_pos[self._target_mocap] = arr[0]
        mujoco.mj_kinematics(self.model, self.data)

    @property
    def cube_position(self) -> np.ndarray:
        """(3,) cube centre (world m)."""
        return self.data.xpos[self._cube_body].copy()

    @property
    def grasped(self) -> bool:
        """True while the suction cup holds the cube."""
        return self._held

    @property
    def state_joint_positions(self) -> dict[str, float]:
        """Observed, not commanded, joints the driver reports in joint_states: ``suction_cup``,
        the vacuum switch a suction tool reports (1.0 while it holds the cube, else 0.0)."""
        return {SUCTION_JOINT: 1.0 if self._held else 0.0}

    @property
    def phase(self) -> str:
        """The expert's phase for the current state (see expert_target): 'unwind', 'approach',
        'descend', 'lift', 'carry', 'place', 'retreat' or 'done'."""
        return self._expert_plan()[0]

    def info(self) -> dict[str, object]:
        """Monitoring snapshot: phase, grasped, cube / target / TCP positions (m), task error, success."""
        return {"phase": self.phase, "grasped": self._held, "suction_armed": self._armed,
                "cube_m": self.cube_position, "target_m": self.target[0], "tcp_m": self.end_effector_positions()[0],
                "task_error_m": self.task_error_m(), "success": self.success()}

    # ------------------------------------------------------------------ episode control

    def reset(self, seed: int | None = None, start_noise_rad: float = 0.05) -> None:
        """Put the robot at home_position plus Gaussian noise (std ``start_noise_rad``, clipped to
        the limits), at rest, holding that pose; suction off; draw a new cube and target
        placement from the scene. ``seed`` restarts the generators (None continues them).
        Raises ValueError for a negative/non-finite noise or a bad seed."""
        noise_std = mc.check_finite_number("start_noise_rad", start_noise_rad, 0.0)
        if seed is not None:
            seed = mc.check_seed("seed", seed)
            self._rng = np.random.default_rng(seed)
            self._sensor_rng = np.random.default_rng([seed, 1])
        q = np.clip(self._home + self._rng.normal(0.0, 1.0, 7) * noise_std, self._lo, self._hi)
        now = self.data.time
        mujoco.mj_resetData(self.model, self.data)
        self.data.time = now
        self.data.qpos[self._qadr] = q + JOINT_OFFSET_RAD
        self._ref.reset(q, now)
        self._pending_s = 0.0
        self._push = mc.ExternalPush(self._hand_body)
        self._set_suction(False)
        self._armed = True
        self._max_lift_m = 0.0
        self._set_ctrl()
        self.randomize_target()

    def randomize_target(self, seed: int | None = None) -> None:
        """Draw a new cube pose and target position from the scene without moving the robot
        (a held cube is let go first). ``seed`` uses a fresh generator instead of the sim's."""
        rng = self._rng if seed is None else np.random.default_rng(mc.check_seed("seed", seed))
        sc = self._scene
        cube_xy = rng.uniform(sc.cube_xy_low_m, sc.cube_xy_high_m)  # (2,)
        yaw = rng.uniform(-sc.cube_yaw_range_rad, sc.cube_yaw_range_rad)
        target_xy = rng.uniform(sc.target_xy_low_m, sc.target_xy_high_m)
        self._set_suction(False)
        self._armed = True
        qa, da = self._cube_qadr, self._cube_dadr
        self.data.qpos[qa:qa + 3] = [cube_xy[0], cube_xy[1], TABLE_TOP_Z_M + CUBE_HALF_SIZE_M]
        self.data.qpos[qa + 3:qa + 7] = [math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)]
        self.data.qvel[da:da + 6] = 0.0
        self.data.mocap_pos[self._target_mocap] = [target_xy[0], target_xy[1], TABLE_TOP_Z_M]
        self.model.geom_rgba[self._cube_geom] = sc.cube_rgba
        mujoco.mj_forward(self.model, self.data)

    # ------------------------------------------------------------------ commands

    def command_positions(self, target: np.ndarray) -> None:
        """Track (7,) absolute joint targets (rad); values outside the limits are clipped.
        Raises ValueError (state unchanged) for a wrong shape or a NaN/Inf value."""
        arr = mc.check_finite_array("command", target, (7,))
        self._ref.command(arr, self.data.time)

    def command_twist(self, linear_x: float, linear_y: float, angular_z: float) -> None:
        """The Panda has no mobile base: always raises ValueError (as KinematicSim does for arms)."""
        raise ValueError(f"{self.params.embodiment} has no mobile base; use command_positions")

    def apply_external_force(self, force: np.ndarray, duration_s: float) -> None:
        """Push the hand at the TCP with ``force`` (3,) N (world axes) for ``duration_s`` s
        (replaces an earlier push): a real external force, the arm yields and the wrist
        sensor feels it. Raises ValueError for a non-finite force / duration or duration <= 0."""
        self._push.start(force, duration_s, self.data.time, point_local_m=np.array([0.0, 0.0, TCP_Z_M]))

    # ------------------------------------------------------------------ time

    def step(self, dt_s: float) -> None:
        """Advance ``dt_s`` seconds in whole 2 ms physics steps (a remainder is carried to the
        next call). Raises ValueError for a negative or non-finite dt."""
        dt = mc.check_finite_number("dt_s", dt_s, 0.0)
        self._pending_s += dt
        n = int(math.floor(self._pending_s / PHYSICS_TIMESTEP_S + 1e-6))
        self._pending_s = max(0.0, self._pending_s - n * PHYSICS_TIMESTEP_S)
        m, d = self.model, self.data
        for _ in range(n):  # sequential in time
            self._ref.advance(PHYSICS_TIMESTEP_S, d.time)
            self._set_ctrl()
            self._push.apply(d, d.time)
            mujoco.mj_step(m, d)
            self._update_suction()
        if n:
            self._push.apply(d, d.time)
            mujoco.mj_forward(m, d)  # positions, contacts and sensors of the state reached

    def _set_ctrl(self) -> None:
        """Servo set-points: reference + velocity, inertia and Coriolis feed-forward (``ctrl``
        is a position for MuJoCo's affine servo, so feed-forward torque enters divided by kp;
        M and the bias forces are those of the last step)."""
        d = self.data
        self._acc_full[self._dadr] = self._ref.a
        mujoco.mj_mulM(self.model, d, self._tau_full, self._acc_full)  # (nv,) M(q) a_ref
        coriolis = d.qfrc_bias[self._dadr] - d.qfrc_gravcomp[self._dadr]  # gravity is gravcomp's
        d.ctrl[:] = (self._ref.q + JOINT_OFFSET_RAD + self._ff_gain * self._ref.v
                     + (self._tau_full[self._dadr] + coriolis) / SERVO_KP)

    # ------------------------------------------------------------------ suction cup

    def _set_suction(self, on: bool) -> None:
        d, m = self.data, self.model
        if on:
            # Weld the cube where it is: relpose = cube pose in the hand frame.
            hand_pos, cube_pos = d.xpos[self._hand_body], d.xpos[self._cube_body]
            hand_quat, cube_quat = d.xquat[self._hand_body], d.xquat[self._cube_body]
            inv = np.zeros(4)
            mujoco.mju_negQuat(inv, hand_quat)
            rel_pos = np.zeros(3)
            mujoco.mju_rotVecQuat(rel_pos, cube_pos - hand_pos, inv)
            rel_quat = np.zeros(4)
            mujoco.mju_mulQuat(rel_quat, inv, cube_quat)
            m.eq_data[self._weld, 0:3] = 0.0  # anchor: the cube's origin
            m.eq_data[self._weld, 3:6] = rel_pos
            m.eq_data[self._weld, 6:10] = rel_quat
            m.eq_data[self._weld, 10] = 1.0  # torquescale
            self._max_lift_m = 0.0
        d.eq_active[self._weld] = 1 if on else 0
        self._held = bool(on)

    def _cube_rest_height_m(self) -> float:
        """Height (m) of the cube's lowest corner above the table top."""
        rot = self.data.xmat[self._cube_body].reshape(3, 3)
        return float(box_corners_z(self.data.xpos[self._cube_body], rot, CUBE_HALF_SIZE_M).min() - TABLE_TOP_Z_M)

    def _tcp_cube_distance_m(self) -> float:
        """Distance (m) from the TCP to the cube's surface (0 inside)."""
        d = self.data
        rot = d.xmat[self._cube_body].reshape(3, 3)
        local = rot.T @ (d.site_xpos[self._tcp_site] - d.xpos[self._cube_body])
        return float(np.linalg.norm(np.maximum(np.abs(local) - CUBE_HALF_SIZE_M, 0.0)))

    def _update_suction(self) -> None:
        """The grip / release / re-arm rule of the module docstring (contacts of the last step)."""
        d = self.data
        if self._held:
            self._max_lift_m = max(self._max_lift_m, self._cube_rest_height_m())
            if self._max_lift_m > MIN_LIFT_FOR_RELEASE_M and \
                    mc.geom_pair_in_contact(d, self._cube_geom, self._table_geom, CUBE_TOUCH_M):
                self._set_suction(False)
                self._armed = False
            return
        if not self._armed:
            self._armed = self._tcp_cube_distance_m() > REARM_CLEARANCE_M
            return
        if d.site_xpos[self._tcp_site][2] > d.xpos[self._cube_body][2] and \
                mc.geom_pair_in_contact(d, self._cup_geom, self._cube_geom, CUP_TOUCH_M):
            self._set_suction(True)

    # ------------------------------------------------------------------ observation & task

    def end_effector_positions(self) -> np.ndarray:
        """(1, 3) TCP (the suction cup's face) in the world frame (m)."""
        return self.data.site_xpos[self._tcp_site][None, :].copy()

    def task_error_m(self) -> float:
        """Horizontal distance (m) cube centre - target centre, plus the cube's height above
        resting on the table (so a cube in the air is never done)."""
        cube = self.data.xpos[self._cube_body]
        horizontal = float(np.hypot(*(cube[:2] - self.data.mocap_pos[self._target_mocap][:2])))
        return horizontal + max(0.0, self._cube_rest_height_m())

    def _cube_resting(self) -> bool:
        d = self.data
        speed = float(np.linalg.norm(d.qvel[self._cube_dadr:self._cube_dadr + 3]))
        return (not self._held and speed < 0.05
                and mc.geom_pair_in_contact(d, self._cube_geom, self._table_geom, 2e-4))

    def success(self, tolerance_m: float = 0.02) -> bool:
        """True when the cube is released, resting on the table and ``task_error_m() <= tolerance_m``."""
        tol = mc.check_finite_number("tolerance_m", tolerance_m, 0.0)
        return self._cube_resting() and self.task_error_m() <= tol

    def wrench(self) -> tuple[np.ndarray, np.ndarray]:
        """(force (3,) N, torque (3,) Nm): the external wrench on the tool (hand + cup) in world
        axes, torque about the wrist F/T sensor between link7 and the hand: the sensor's
        reading compensated for the tool's weight and inertia (its mass, COM and inertia
        from the model, as one configures Franka's end-effector load), plus sensor noise
        (std 0.3 N / 0.03 Nm). ~0 at rest; pressing down on the table reads +z; a held cube
        is payload and reads its weight (~-1 N in z)."""
        d = self.data
        force, torque = mc.site_wrench_world(d, self._ft_site, self._force_adr, self._torque_adr)
        load_force, load_torque = mc.body_inertial_wrench(self.model, d, self._hand_body, d.site_xpos[self._ft_site])
        ext_force = load_force - force + self._sensor_rng.normal(0.0, _FORCE_NOISE_N, 3)
        ext_torque = load_torque - torque + self._sensor_rng.normal(0.0, _TORQUE_NOISE_NM, 3)
        return ext_force, ext_torque

    # ------------------------------------------------------------------ expert

    def _tcp_rotation_at(self, q: np.ndarray) -> np.ndarray:
        """(3, 3) TCP orientation at joint positions ``q`` (7,) (a scratch MjData)."""
        scratch = mujoco.MjData(self.model)
        scratch.qpos[self._qadr] = q + JOINT_OFFSET_RAD
        mujoco.mj_kinematics(self.model, scratch)
        return scratch.site_xmat[self._tcp_site].reshape(3, 3).copy()

    def _expert_plan(self) -> tuple[str, np.ndarray, float]:
        """(phase, TCP waypoint (3,) m, speed limit m/s) for the current state (see
        :func:`~hybridvla_ros.sim.mujoco_franka_expert.plan_expert`)."""
        d = self.data
        return plan_expert(FrankaTaskState(
            tcp_m=d.site_xpos[self._tcp_site], positions=self.positions, position_min=self._lo,
            position_max=self._hi, tilt_rad=self._tilt_rad(), cube_m=d.xpos[self._cube_body],
            cube_rot=d.xmat[self._cube_body].reshape(3, 3), target_m=d.mocap_pos[self._target_mocap],
            held=self._held, armed=self._armed, cube_resting=self._cube_resting(),
            task_error_m=self.task_error_m()))

    def reach_step(self, position_m: np.ndarray, max_speed_m_s: float = CART_SPEED_M_S) -> np.ndarray:
        """(7,) joint target for the next control period moving the TCP toward ``position_m``
        (3,) (world m) at up to ``max_speed_m_s`` with the hand pointing down: one damped
        least-squares IK step (site Jacobian) with a null-space pull toward home, within the
        limits and at most 0.95 * max_velocity * control_period from the current positions.
        Raises ValueError for a non-finite (3,) position or a speed <= 0."""
        goal = mc.check_finite_array("position_m", position_m, (3,))
        vmax = mc.check_finite_number("max_speed_m_s", max_speed_m_s, 0.0, strict=True)
        return self._ik_step(goal, vmax)

    def _ik_step(self, goal: np.ndarray, speed_limit: float) -> np.ndarray:
        m, d = self.model, self.data
        period = self._period_s
        q = self.positions
        tcp = d.site_xpos[self._tcp_site]
        err = goal - tcp
        dist = float(np.linalg.norm(err))
        speed = min(speed_limit, float(profile_speed(dist, CART_SPEED_M_S, 0.8 * _CART_ACCEL_M_S2, period)))
        dx = err * (min(speed * period, dist) / dist) if dist > 1e-9 else np.zeros(3)
        rot = d.site_xmat[self._tcp_site].reshape(3, 3)
        # Small-angle orientation error (world axes) toward the hand-down orientation.
        rot_err = 0.5 * np.cross(rot, self._down_rot, axis=0).sum(axis=1)
        dw = np.clip(_ORIENT_GAIN_PER_S * period, 0.0, 1.0) * rot_err
        mujoco.mj_jacSite(m, d, self._jacp, self._jacr, self._tcp_site)
        jac = np.vstack([self._jacp[:, self._dadr], _ORIENT_WEIGHT_M * self._jacr[:, self._dadr]])  # (6, 7)
        task = np.concatenate([dx, _ORIENT_WEIGHT_M * dw])  # (6,)
        null = _NULL_GAIN_PER_S * period * (self._home - q)
        step_max = 0.95 * self._vmax * period  # (7,)
        free = np.ones(7, dtype=bool)
        for _ in range(3):  # hold joints the step would push past a limit, then re-solve
            dq = dls_position_step(jac, task, null, _IK_DAMPING, free)
            blocked = free & ((q + dq < self._lo) | (q + dq > self._hi))
            if not blocked.any():
                break
            free &= ~blocked
        ratio = float(np.max(np.abs(dq) / step_max))
        if ratio > 1.0:
            dq /= ratio  # one factor for all joints: the TCP keeps its straight line
        return np.clip(q + dq, self._lo, self._hi)

    def expert_target(self) -> np.ndarray:
        """(7,) the scripted expert's absolute joint target for the next control period (within
        the limits, at most 0.95 * max_velocity * control_period from the current positions):
        one reach_step toward the waypoint of the phase the current state is in, or (phase
        'unwind') a straight joint-space step toward home when the hand is tilted more than
        0.6 rad from pointing down."""
        phase, goal, speed = self._expert_plan()
        q = self.positions
        if phase == "unwind":
            dq = self._home - q
            ratio = float(np.max(np.abs(dq) / (0.95 * self._vmax * self._period_s)))
            target = np.clip(q + (dq / ratio if ratio > 1.0 else dq), self._lo, self._hi)
        else:
            target = self._ik_step(goal, min(speed, CART_SPEED_M_S))
        return target

    def _tilt_rad(self) -> float:
        """Angle (rad) between the tool axis and straight down."""
        axis_z = self.data.site_xmat[self._tcp_site].reshape(3, 3)[2, 2]  # world z of the tool's z axis
        return math.acos(float(np.clip(-axis_z, -1.0, 1.0)))

    # ------------------------------------------------------------------ rendering

    extra_cameras: tuple[str, ...] = ("wrist",)  # on the hand, looking along the tool

    def render(self, camera: str = "") -> np.ndarray:
        """(H, W, 3) uint8 RGB image from the fixed scene camera, or (``camera="wrist"``) from the
        hand's camera looking along the tool; ValueError for another camera."""
        if camera not in ("", *self.extra_cameras):
            raise ValueError(f"camera: the MuJoCo Franka renders its scene camera and {list(self.extra_cameras)}, "
                             f"not {camera!r}")
        if self._renderer is None:
            self._renderer = mc.make_fast_renderer(self.model, self._width, self._height)
        self._renderer.update_scene(self.data, camera=self._wrist_camera_id if camera else self._camera_id)
        return self._renderer.render()

    def project_to_image(self, points_m: np.ndarray) -> np.ndarray:
        """(N, 2) pixel coordinates [u (column), v (row)] of world points (N, 3) in the scene
        camera; NaN for points behind it."""
        pts = np.asarray(points_m, dtype=np.float64).reshape(-1, 3)
        d = self.data
        cam_pos = d.cam_xpos[self._camera_id]
        cam_rot = d.cam_xmat[self._camera_id].reshape(3, 3)  # columns: camera x (right), y (up), z (back)
        local = (pts - cam_pos) @ cam_rot  # (N, 3)
        depth = -local[:, 2]
        focal = 0.5 * self._height / math.tan(math.radians(self.model.cam_fovy[self._camera_id]) / 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            u = (self._width - 1) / 2 + focal * local[:, 0] / depth
            v = (self._height - 1) / 2 - focal * local[:, 1] / depth
        out = np.stack([u, v], axis=1)
        out[depth <= 1e-6] = np.nan
        return out

    def clone(self) -> MujocoFrankaSim:
        """An independent copy (model, physics state, controller, generators) without the
        renderer: stepping it never changes this simulator (rollout.expert_chunk rolls the
        expert out ahead on one). ``copy.deepcopy`` does the same."""
        twin = copy.copy(self)
        twin.model = copy.deepcopy(self.model)  # the suction weld's pose lives in the model
        twin.data = mujoco.MjData(twin.model)
        mujoco.mj_copyData(twin.data, twin.model, self.data)
        twin._ref = copy.deepcopy(self._ref)
        twin._push = copy.deepcopy(self._push)
        twin._rng = copy.deepcopy(self._rng)
        twin._sensor_rng = copy.deepcopy(self._sensor_rng)
        twin._renderer = None
        twin._jacp, twin._jacr = np.zeros_like(self._jacp), np.zeros_like(self._jacr)
        twin._acc_full, twin._tau_full = np.zeros_like(self._acc_full), np.zeros_like(self._tau_full)
        return twin

    def __deepcopy__(self, memo: dict) -> MujocoFrankaSim:
        return self.clone()

    def close(self) -> None:
        """Free the renderer's GL context (render() makes a new one if called again)."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


def _timing(iterations: int = 300) -> None:
    """Print the cost of step(0.01) and of one render() (ms) on this machine."""
    import os  # noqa: PLC0415

    from hybridvla_ros.params import from_params, load_node_params  # noqa: PLC0415
    from hybridvla_ros.params.sim_robot import SimRobotParams  # noqa: PLC0415

    config = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                          "config", "franka.yaml")
    params = from_params(SimRobotParams, load_node_params(config, "sim_robot"), "sim_robot")
    sim = MujocoFrankaSim(params, seed=0)
    sim.render()
    t_step = t_render = 0.0
    for _ in range(iterations):
        sim.command_positions(sim.expert_target())
        t0 = time.perf_counter()
        sim.step(0.01)
        t1 = time.perf_counter()
        sim.render()
        t_render += time.perf_counter() - t1
        t_step += t1 - t0
    print(f"step(0.01): {1e3 * t_step / iterations:.2f} ms, render {sim._width}x{sim._height}: "
          f"{1e3 * t_render / iterations:.2f} ms (per call, mean of {iterations})")


# Registered by name (sim.registry): the type checker holds the class to the Simulator
# protocol and to the constructor make_sim calls here.
_AS_REGISTERED: SimulatorFactory = MujocoFrankaSim


if __name__ == "__main__":
    _timing()
