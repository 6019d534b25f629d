"""ALOHA bimanual cube transfer in MuJoCo: two ViperX 300 s arms, real contact, a scripted expert.

:class:`MujocoAlohaSim` is a :class:`~hybridvla_ros.sim.base.Simulator` (the sim node, the
demonstration recorder and the evaluation call the same methods as on the kinematic one),
over gym-aloha's ``bimanual_viperx_transfer_cube.xml`` scene.

Task. The cube starts on the LEFT half of the table (the scene preset draws where); the
left arm picks it, lifts it to the hold point ``target`` (world m, default (0, 0.5, 0.2):
the middle of the table, 20 cm up), the right gripper grasps it there, the left lets go
and backs off. Success: the right gripper alone holds the cube (its fingers touch it and
are closed on it; no left-gripper geom and not the table touch it), the cube is lifted
clear of the table and its centre lies within ``tolerance_m`` of ``target``.
``task_error_m()`` is the distance from the cube centre to ``target``, so success implies
an error below the tolerance. Grasping is friction between finger and cube geoms; there
are no welds. ``phase`` and ``grasped_by`` tell where the task stands, read from the state
(cube and gripper poses, finger openings, cube contacts debounced over 50 ms; no step
counter), so the expert picks up wherever a person or a policy left the robots.

The model (gym-aloha's scene with stiff joint servos, coupled force-limited grippers and
pinch sites, changed in code) is built by :mod:`~hybridvla_ros.sim.mujoco_aloha_model`;
the expert's phase machine is :mod:`~hybridvla_ros.sim.mujoco_aloha_expert`. This module
runs them: commands, physics steps, contacts, the task, the expert's IK and the camera.

Position controller. Commands are taken as a joint trajectory controller takes one point
a control period ahead, with KinematicSim's rule (``mujoco_common.JointReference``): a
target within one period's reach is interpolated to arrive by the next period, anything
else is approached on a velocity / acceleration-limited profile that brakes into the
target and into the joint limits. That reference is the servos' setpoint at every 2 ms
physics step; the measured positions follow it within a few mrad in free motion and stay
off it where contact resists (a squeezed cube, the table, a push).

Not thread-safe: one thread steps, commands and renders.

Size: one class of about 470 lines whose parts (servos, debounced contacts, the task, the
expert's IK and gripper steps, cloning) all read and write the same MuJoCo model and data;
the model and the expert's phase machine are their own modules.
"""

from __future__ import annotations

import copy
import math

# First: it picks MuJoCo's headless GL backend (EGL) before mujoco is imported.
from hybridvla_ros.sim.mujoco_common import (
    ExternalPush,
    JointReference,
    check_finite_array,
    check_finite_number,
    check_seed,
    make_fast_renderer,
)

# isort: split
import mujoco
import numpy as np

from hybridvla_ros.params.embodiment import EmbodimentParams
from hybridvla_ros.sim.base import SimulatorFactory
from hybridvla_ros.sim.mujoco_aloha_expert import (
    GRIP_MIN_M,
    PHASES,
    AlohaTaskState,
    Waypoint,
    classify_phase,
    plan_waypoints,
)
from hybridvla_ros.sim.mujoco_aloha_model import (
    BIT_LEFT_FINGER,
    BIT_LEFT_GRIPPER,
    BIT_RIGHT_FINGER,
    BIT_TABLE,
    CUBE_HALF_M,
    PINCH_X_M,
    SCENES,
    TABLE_Z_M,
    SceneConfig,
    build_aloha_model,
)
from hybridvla_ros.sim.profiles import brake_speed  # the same braking rule as every simulator

__all__ = ["MujocoAlohaSim", "SceneConfig", "SCENES", "DEFAULT_HOLD_POINT_M", "PHASES"]

DEFAULT_HOLD_POINT_M = (0.0, 0.5, 0.2)  # where the right gripper ends up holding the cube (world)
_LIFTED_Z_M = 0.06  # cube centre above this: clear of the table (resting: 0.02)
_CAMERA = "top"  # our cam_high
# ALOHA's other cameras by their names in its data (and config/aloha.yaml) -> gym-aloha's scene cameras
_EXTRA_CAMERAS = {"cam_low": "angle", "cam_left_wrist": "left_wrist", "cam_right_wrist": "right_wrist"}

# Expert IK and grippers
_CART_SPEED_M_S = 0.35
_CART_ACCEL_M_S2 = 1.5
_ANG_SPEED_RAD_S = 2.0
_ANG_ACCEL_RAD_S2 = 5.0
_ROT_WEIGHT_M = 0.15  # 1 rad of orientation error counts like 15 cm of position error
_DLS_DAMPING = 0.03
_NULL_GAIN_PER_S = 0.3
_OPEN_M = 0.057
_CLOSED_M = 0.021
_SLOW_CLOSE_BELOW_M = 0.05  # fingers close slowly from here on (they meet the cube at ~0.042)
_SLOW_CLOSE_M_S = 0.03
_TOUCH_HOLD_S = 0.05  # a contact counts for this long after it was last seen
_HOLD_MAX_M = 0.052  # a gripper open wider than this does not grip the cube (nor below GRIP_MIN_M)
_HOLD_DIST_M = 0.04  # a held cube's centre lies this close to the pinch point (9 cm long fingers)


def _rot_error(current: np.ndarray, desired: np.ndarray) -> np.ndarray:
    """(3,) world rotation vector taking ``current`` (3, 3) to ``desired`` (3, 3)."""
    quat = np.empty(4)
    mujoco.mju_mat2Quat(quat, (desired @ current.T).ravel())
    vec = np.empty(3)
    mujoco.mju_quat2Vel(vec, quat, 1.0)
    return vec


class MujocoAlohaSim:
    """ALOHA cube transfer in MuJoCo: command, step, observe, render (the KinematicSim API).

    Deterministic given ``seed``: the cube placement and start noise come from one
    generator, and MuJoCo is deterministic on one machine.

    A gripper commanded to the opening it measures exerts no grip force (a position servo
    at its setpoint): to keep holding the cube, command it a little more closed, as the
    expert does."""

    def __init__(self, params: EmbodimentParams, image_width: int = 160, image_height: int = 120,
                 seed: int = 0, scene: str = "nominal") -> None:
        """Load the scene, map ``params.joint_names`` onto it and reset with ``seed``.
        Raises ValueError for params that are not aloha with 14 joints, joint names the model
        lacks, a bad image size / seed or an unknown scene; MissingAssetError (a
        FileNotFoundError naming the pip package) when gym-aloha's assets are not installed."""
        if params.embodiment != "aloha" or params.action_dim != 14:
            raise ValueError(f"params: MujocoAlohaSim needs embodiment 'aloha' with action_dim 14, got "
                             f"{params.embodiment!r} with action_dim {params.action_dim}")
        for name, value in (("image_width", image_width), ("image_height", image_height)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 8 <= value <= 4096:
                raise ValueError(f"{name} must be an int in [8, 4096], got {value!r}")
        check_seed("seed", seed)
        if not isinstance(scene, str) or scene not in SCENES:
            raise ValueError(f"scene must be one of {list(SCENES)}, got {scene!r}")
        self.params = params
        self._scene_name = scene
        self._width, self._height = int(image_width), int(image_height)
        self._period_s = params.control_period_s
        self._lo = np.asarray(params.position_min, dtype=np.float64)  # (14,)
        self._hi = np.asarray(params.position_max, dtype=np.float64)
        self._vmax = np.asarray(params.max_velocity, dtype=np.float64)
        self._amax = np.asarray(params.max_acceleration, dtype=np.float64)
        self._home = np.asarray(params.home_position, dtype=np.float64)
        self._build_model()
        self._renderer: mujoco.Renderer | None = None
        self._hold_point = np.asarray(DEFAULT_HOLD_POINT_M, dtype=np.float64)  # (3,)
        self._pending_s = 0.0
        self._ref = JointReference(self._lo, self._hi, self._vmax, self._amax, self._period_s)
        self._push = ExternalPush(int(self._gripper_body[0]))
        self._phase_cache: tuple[int, str, str] | None = None
        self._state_version = 0
        self._rng = np.random.default_rng(int(seed))
        self.reset(seed=seed)

    # ------------------------------------------------------------------ model

    def _build_model(self) -> None:
        """Build the model (:func:`~hybridvla_ros.sim.mujoco_aloha_model.build_aloha_model`) and
        keep the addresses this simulator uses. ValueError if ``params.joint_names`` are not
        the model's."""
        built = build_aloha_model(self.params)
        self.model, self.data = built.model, built.data
        self._qadr, self._dadr, self._act = built.qadr, built.dadr, built.actuators
        self._fingers, self._arm_idx = built.fingers, built.arm_idx
        self._mirror_qadr, self._mirror_act = built.mirror_qadr, built.mirror_act
        self._cube_qadr, self._cube_dadr = built.cube_qadr, built.cube_dadr
        self._cube_geom, self._cube_body = built.cube_geom, built.cube_body
        self._pinch_site, self._gripper_body, self._base_xy = built.pinch_site, built.gripper_body, built.base_xy
        self._left_gripper_mask, self._contact_bits = built.left_gripper_mask, built.contact_bits
        self._kp, self._kv = built.servo_kp, built.servo_kv
        self._timestep = built.timestep_s

    # ------------------------------------------------------------------ properties

    @property
    def positions(self) -> np.ndarray:
        """(14,) measured joint positions (rad; grippers: left_finger, m), a copy. Clipped to
        the limits: MuJoCo's soft joint limits give by a few mrad when a joint runs into them."""
        return np.clip(self.data.qpos[self._qadr], self._lo, self._hi)

    @property
    def velocities(self) -> np.ndarray:
        """(14,) measured joint velocities (rad/s or m/s)."""
        return self.data.qvel[self._dadr].copy()

    @property
    def state_joint_positions(self) -> dict[str, float]:
        """Observed, not commanded, joints reported in joint_states: none on this robot."""
        return {}

    @property
    def time_s(self) -> float:
        """Simulated seconds since construction (reset() does not rewind it)."""
        return float(self.data.time)

    @property
    def commanded_positions(self) -> np.ndarray:
        """(14,) the position target being tracked (the last command, clipped to the limits)."""
        return self._cmd.copy()

    @property
    def control_period_s(self) -> float:
        """Seconds between two expert / policy commands (1 / control_rate_hz)."""
        return self._period_s

    @property
    def num_tool_points(self) -> int:
        """2: the left and the right gripper's pinch points."""
        return 2

    @property
    def target(self) -> np.ndarray:
        """(1, 3) the handover hold point (world, m): where the right gripper must end up
        holding the cube centre. The left arm brings the cube there for the handover."""
        return self._hold_point[None].copy()

    @target.setter
    def target(self, value: np.ndarray) -> None:
        """Move the hold point; ValueError unless a finite (1, 3) or (3,) array."""
        try:
            arr = np.array(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"target must be a finite (1, 3) array, got {value!r}") from None
        if arr.shape not in ((1, 3), (3,)) or not np.all(np.isfinite(arr)):
            raise ValueError(f"target must be a finite (1, 3) array, got shape {arr.shape}: {value!r}")
        self._hold_point = arr.reshape(3)
        self._touch()

    @property
    def scene(self) -> str:
        """Name of the scene preset (a key of SCENES) that reset() and randomize_target() draw from."""
        return self._scene_name

    @scene.setter
    def scene(self, name: str) -> None:
        """Select a preset for the next cube placement; ValueError for an unknown name."""
        if not isinstance(name, str) or name not in SCENES:
            raise ValueError(f"scene must be one of {list(SCENES)}, got {name!r}")
        self._scene_name = name

    @property
    def scene_config(self) -> SceneConfig:
        """The current scene preset."""
        return SCENES[self._scene_name]

    @property
    def cube_position(self) -> np.ndarray:
        """(3,) world position of the cube centre (m)."""
        return self.data.xpos[self._cube_body].copy()

    @property
    def phase(self) -> str:
        """Task phase read from the state (one of PHASES): reach / descend / grasp / regrasp
        (left picking), lift (left holds, carries to the hold point), approach (right moves in),
        handover (both hold: left opens), release (right holds, left retreats), done (success)."""
        return self._phase_and_grasp()[0]

    @property
    def grasped_by(self) -> str:
        """'none', 'left', 'right' or 'both': which grippers hold the cube (see _holds)."""
        return self._phase_and_grasp()[1]

    # ------------------------------------------------------------------ episode control

    def reset(self, seed: int | None = None, start_noise_rad: float = 0.05) -> None:
        """Robots at home_position plus Gaussian noise (std ``start_noise_rad``, scaled down for
        the grippers; clipped to the limits), at rest, holding that pose; the cube at a new
        place drawn from the current scene. ``seed`` restarts the generator (None continues).
        Raises ValueError for a negative/non-finite noise or a bad seed."""
        check_finite_number("start_noise_rad", start_noise_rad, 0.0)
        if seed is not None:
            self._rng = np.random.default_rng(check_seed("seed", seed))
        noise_scale = np.minimum(1.0, 0.1 * (self._hi - self._lo))  # (14,) grippers: 36 mm stroke
        noise = self._rng.normal(0.0, 1.0, 14) * start_noise_rad * noise_scale
        q = np.clip(self._home + noise, self._lo, self._hi)
        time_s = self.data.time
        mujoco.mj_resetData(self.model, self.data)
        self.data.time = time_s
        self.data.qpos[self._qadr] = q
        self.data.qpos[self._mirror_qadr] = -q[self._fingers]
        self._ref.reset(q, self.time_s)  # the servos' setpoint: hold this pose
        self._cmd = q.copy()
        self._push = ExternalPush(int(self._gripper_body[0]))
        self._pending_s = 0.0
        self._last_touch_s = np.full(3, -math.inf)  # [left fingers, right fingers, left gripper]
        self._write_ctrl()
        self.randomize_target()

    def randomize_target(self, seed: int | None = None) -> None:
        """Put the cube, at rest and square to the table, at a new place drawn from the
        scene's start box, without moving the robots (``seed``: a one-off generator)."""
        rng = self._rng if seed is None else np.random.default_rng(check_seed("seed", seed))
        cfg = SCENES[self._scene_name]
        xy = rng.uniform(cfg.cube_xy_low_m, cfg.cube_xy_high_m)  # (2,)
        a = self._cube_qadr
        self.data.qpos[a:a + 3] = [xy[0], xy[1], TABLE_Z_M + CUBE_HALF_M]
        self.data.qpos[a + 3:a + 7] = [1.0, 0.0, 0.0, 0.0]
        self.data.qvel[self._cube_dadr:self._cube_dadr + 6] = 0.0
        self.model.geom_rgba[self._cube_geom] = cfg.cube_rgba
        mujoco.mj_forward(self.model, self.data)
        self._last_touch_s[:] = -math.inf
        self._record_touch()
        self._touch()

    # ------------------------------------------------------------------ commands

    def command_positions(self, target: np.ndarray) -> None:
        """Track (14,) absolute position targets (rad; grippers m); values outside the limits
        are clipped to them. Raises ValueError (state unchanged) for a wrong shape or a
        NaN/Inf value."""
        arr = check_finite_array("target", target, (14,))
        self._cmd = self._ref.command(arr, self.time_s)

    def command_twist(self, linear_x: float, linear_y: float, angular_z: float) -> None:
        """ALOHA has no mobile base: always raises ValueError (as KinematicSim does for arms)."""
        raise ValueError(f"{self.params.embodiment} has no mobile base; use command_positions")

    def apply_external_force(self, force: np.ndarray, duration_s: float) -> None:
        """Push the left gripper's pinch point with ``force`` (3,) N (world axes) for
        ``duration_s`` seconds (replaces an earlier push); the arm yields to it as its servos
        allow. Raises ValueError for a non-finite force / duration or duration <= 0."""
        self._push.start(force, duration_s, self.time_s, np.array([PINCH_X_M, 0.0, 0.0]))

    # ------------------------------------------------------------------ time

    def step(self, dt_s: float) -> None:
        """Advance ``dt_s`` seconds in whole physics steps (2 ms): a remainder is carried to
        the next call, so time never drifts. Raises ValueError for a negative or non-finite dt."""
        self._pending_s += check_finite_number("dt_s", dt_s, 0.0)
        n = int(math.floor(self._pending_s / self._timestep + 1e-6))
        if n <= 0:
            return
        self._pending_s = max(0.0, self._pending_s - n * self._timestep)
        for _ in range(n):  # sequential in time
            self._ref.advance(self._timestep, self.data.time)
            self._write_ctrl()
            self._push.apply(self.data, self.data.time)
            mujoco.mj_step(self.model, self.data)
            self._record_touch()
        self._push.apply(self.data, self.data.time)  # zero once over
        mujoco.mj_forward(self.model, self.data)  # positions, sites and contacts of the new state
        self._record_touch()
        self._touch()

    def _write_ctrl(self) -> None:
        # kp (q_ref - q) + kv (v_ref - qdot) from a position actuator with damping kv:
        # shift the setpoint by kv / kp * v_ref.
        ctrl = self._ref.q + self._kv / self._kp * self._ref.v  # (14,)
        self.data.ctrl[self._act] = ctrl
        self.data.ctrl[self._mirror_act] = -ctrl[self._fingers]

    # ------------------------------------------------------------------ observation & task

    def _touch(self) -> None:
        self._state_version += 1

    def end_effector_positions(self) -> np.ndarray:
        """(2, 3) world pinch points (m) between the left and the right gripper's fingertips."""
        return self.data.site_xpos[self._pinch_site].copy()

    def _cube_contacts(self) -> tuple[list[bool], bool, bool]:
        """Whether a finger of each gripper touches the cube ([left, right]), whether the
        cube touches the table, whether it touches any left-gripper geom."""
        flags = 0
        cube = self._cube_geom
        bits = self._contact_bits
        # A plain loop over a list of a few dozen pairs: ~1 us, against ~60 us for numpy on
        # such tiny arrays, and it runs at every physics step.
        for g1, g2 in self.data.contact.geom[:self.data.ncon].tolist():
            if g1 == cube:
                flags |= bits[g2]
            elif g2 == cube:
                flags |= bits[g1]
        return ([bool(flags & BIT_LEFT_FINGER), bool(flags & BIT_RIGHT_FINGER)], bool(flags & BIT_TABLE),
                bool(flags & BIT_LEFT_GRIPPER))

    def _record_touch(self) -> None:
        """Remember when the cube last touched each gripper's fingers and the left gripper."""
        fingers, _, left_any = self._cube_contacts()
        now = self.data.time
        for k, touching in enumerate((fingers[0], fingers[1], left_any)):
            if touching:
                self._last_touch_s[k] = now

    def _touching(self) -> np.ndarray:
        """(3,) bool: the cube touched [left fingers, right fingers, left gripper] within the
        last _TOUCH_HOLD_S. Contacts between the mesh fingers and the box blink in and out
        from one physics step to the next during a steady grip; this is the debounced
        contact a real tactile or current sensor would report."""
        return self.data.time - self._last_touch_s <= _TOUCH_HOLD_S

    def _holds(self) -> tuple[bool, bool, bool, bool]:
        """(left holds, right holds, cube on table, cube touches the left gripper).

        A gripper holds the cube when its fingers touch it (debounced), they are closed to
        about the cube's width (opening between GRIP_MIN_M and _HOLD_MAX_M) and the cube
        centre is within _HOLD_DIST_M of its pinch point (between the fingers)."""
        _, table, _ = self._cube_contacts()
        touching = self._touching()
        cube = self.data.xpos[self._cube_body]
        pinch = self.data.site_xpos[self._pinch_site]  # (2, 3)
        opening = self.data.qpos[self._qadr[self._fingers]]  # (2,)
        held = [bool(touching[arm] and GRIP_MIN_M < opening[arm] < _HOLD_MAX_M
                     and float(np.linalg.norm(cube - pinch[arm])) < _HOLD_DIST_M) for arm in (0, 1)]
        return held[0], held[1], table, bool(touching[2])

    def task_error_m(self) -> float:
        """Distance (m) from the cube centre to the hold point ``target``."""
        return float(np.linalg.norm(self.cube_position - self._hold_point))

    def success(self, tolerance_m: float = 0.03) -> bool:
        """True when the right gripper alone holds the cube (its fingers touch it and are closed
        on it), no left-gripper geom and not the table touch it, it is lifted clear of
        the table and its centre lies within ``tolerance_m`` of ``target``."""
        check_finite_number("tolerance_m", tolerance_m, 0.0)
        _, held_r, table, left_any = self._holds()
        return (held_r and not left_any and not table
                and self.cube_position[2] > _LIFTED_Z_M and self.task_error_m() <= tolerance_m)

    def wrench(self) -> tuple[np.ndarray, np.ndarray]:
        """(force (3,) N, torque (3,) Nm about the left gripper_link origin, world axes): the
        contact force on the left gripper from everything else (cube, table, other arm) plus an
        active push. ALOHA has no F/T sensor; this is the ideal wrist reading, without noise."""
        force = np.zeros(3)
        torque = np.zeros(3)
        origin = self.data.xpos[self._gripper_body[0]]
        n = self.data.ncon
        contact = self.data.contact
        inside = self._left_gripper_mask[self.model.geom_bodyid[contact.geom[:n]]]  # (n, 2)
        f6 = np.zeros(6)
        for k in np.flatnonzero(inside[:, 0] != inside[:, 1]):  # the few contacts of the gripper
            mujoco.mj_contactForce(self.model, self.data, int(k), f6)
            f_world = contact.frame[k].reshape(3, 3).T @ f6[:3]  # force of geom1 on geom2
            if inside[k, 0]:
                f_world = -f_world
            force += f_world
            torque += np.cross(contact.pos[k] - origin, f_world)
        if self._push.active(self.data.time):
            force += self._push.force_n
            torque += np.cross(self.data.site_xpos[self._pinch_site[0]] - origin, self._push.force_n)
        return force, torque

    # ------------------------------------------------------------------ expert

    def _task_state(self) -> AlohaTaskState:
        """What the expert reads from the simulation (see mujoco_aloha_expert)."""
        d = self.data
        return AlohaTaskState(cube_m=self.cube_position, cube_x_axis=d.xmat[self._cube_body].reshape(3, 3)[:, 0],
                              pinch_m=self.end_effector_positions(), opening_m=d.qpos[self._qadr[self._fingers]],
                              hold_m=self._hold_point, base_xy=self._base_xy)

    def _phase_and_grasp(self) -> tuple[str, str]:
        if self._phase_cache is not None and self._phase_cache[0] == self._state_version:
            return self._phase_cache[1], self._phase_cache[2]
        held_l, held_r, _, _ = self._holds()
        grasped = {(False, False): "none", (True, False): "left", (False, True): "right",
                   (True, True): "both"}[(held_l, held_r)]
        phase = classify_phase(self._task_state(), held_l, held_r, self.success())
        self._phase_cache = (self._state_version, phase, grasped)
        return phase, grasped

    def _waypoints(self) -> tuple[Waypoint, Waypoint]:
        """Each arm's goal for this period, from the state only (the phase machine)."""
        phase, _ = self._phase_and_grasp()
        return plan_waypoints(phase, self._task_state())

    def expert_target(self) -> np.ndarray:
        """(14,) the scripted expert's absolute joint target for the next control period:
        within the limits and at most 0.95 * max_velocity * control_period from the current
        positions. Each arm takes a damped least-squares IK step of its pinch site (position
        and orientation, MuJoCo's site Jacobian) toward the waypoint of the phase read from
        the state, with a null-space pull toward home, on a Cartesian profile that accelerates
        at 1.5 m/s^2 (5 rad/s^2) and brakes into the waypoint: the joint accelerations this
        asks for stay within max_acceleration in >99 % of periods (brief peaks of a few times
        it at phase changes, which the position controller then limits). A gripper opens, or
        closes slowly near the cube and then squeezes one step inside it (the grip force)."""
        q = self.positions
        v = self.velocities
        held = self._holds()[:2]
        touching = self._touching()
        period = self._period_s
        step_max = 0.95 * self._vmax * period  # (14,)
        acc_step = self._amax * period * period  # (14,) one period's velocity change, times the period
        out = q.copy()
        jacp = np.zeros((3, self.model.nv))
        jacr = np.zeros((3, self.model.nv))
        for arm, wp in enumerate(self._waypoints()):
            idx = self._arm_idx[arm]  # (6,) ours
            dofs = self._dadr[idx]
            site = self._pinch_site[arm]
            mujoco.mj_jacSite(self.model, self.data, jacp, jacr, site)
            jac = np.vstack([jacp[:, dofs], _ROT_WEIGHT_M * jacr[:, dofs]])  # (6, 6)
            # Cartesian speed profile: accelerate from the gripper's current speed, brake into
            # the waypoint (position and orientation alike), so the joints see smooth steps.
            qvel = self.data.qvel[dofs]
            err = wp.pinch_m - self.data.site_xpos[site]
            dist = float(np.linalg.norm(err))
            along = float(jacp[:, dofs] @ qvel @ err) / dist if dist > 1e-9 else 0.0
            speed = min(_CART_SPEED_M_S, max(along, 0.0) + _CART_ACCEL_M_S2 * period,
                        float(brake_speed(np.array(dist), 0.8 * _CART_ACCEL_M_S2, period)))
            dx = err * min(1.0, speed * period / dist) if dist > 1e-9 else np.zeros(3)
            rot = _rot_error(self.data.site_xmat[site].reshape(3, 3), wp.rot)
            ang = float(np.linalg.norm(rot))
            turning = float(jacr[:, dofs] @ qvel @ rot) / ang if ang > 1e-9 else 0.0
            ang_speed = min(_ANG_SPEED_RAD_S, max(turning, 0.0) + _ANG_ACCEL_RAD_S2 * period,
                            float(brake_speed(np.array(ang), 0.8 * _ANG_ACCEL_RAD_S2, period)))
            dr = rot * min(1.0, ang_speed * period / ang) if ang > 1e-9 else np.zeros(3)
            task = np.concatenate([dx, _ROT_WEIGHT_M * dr])  # (6,)
            jjt = jac @ jac.T + _DLS_DAMPING ** 2 * np.eye(6)
            pinv = jac.T @ np.linalg.inv(jjt)  # (6, 6) damped pseudo-inverse
            null = _NULL_GAIN_PER_S * period * (self._home[idx] - q[idx])
            dq = pinv @ task + (np.eye(6) - pinv @ jac) @ null
            # One factor for the arm keeps the gripper on its straight line.
            ratio = float(np.max(np.abs(dq) / step_max[idx]))
            if ratio > 1.0:
                dq /= ratio
            out[idx] = q[idx] + np.clip(dq, -step_max[idx], step_max[idx])
            f = self._fingers[arm]
            fv = v[f] * period  # the finger's motion over the last period, m
            if wp.close and (held[arm] or touching[arm]):
                out[f] = q[f] - step_max[f]  # a step inside the cube: saturates the grip force
            else:
                if wp.close:
                    # Slow down to _SLOW_CLOSE_M_S before the fingers can meet the cube: a fast
                    # finger's setpoint would run on past the contact (acceleration-limited) and
                    # swing back out of it, dropping the grip for a moment.
                    zone = max(q[f] - _SLOW_CLOSE_BELOW_M, 0.0)
                    speed = max(_SLOW_CLOSE_M_S, float(brake_speed(np.array(zone), 0.8 * self._amax[f], period)))
                    move = -min(speed * period, step_max[f], q[f] - _CLOSED_M)
                else:
                    # Brake into the open position, accelerating from the current finger speed.
                    goal = _OPEN_M - q[f]
                    reach = float(brake_speed(np.array(abs(goal)), 0.8 * self._amax[f], period)) * period
                    move = math.copysign(min(abs(goal), reach, step_max[f]), goal)
                move = float(np.clip(move, fv - acc_step[f], fv + acc_step[f]))
                out[f] = q[f] + float(np.clip(move, -step_max[f], step_max[f]))
        return np.clip(out, self._lo, self._hi)

    # ------------------------------------------------------------------ rendering

    extra_cameras: tuple[str, ...] = tuple(_EXTRA_CAMERAS)

    def render(self, camera: str = "") -> np.ndarray:
        """(H, W, 3) uint8 RGB image from the scene's "top" camera (our cam_high), or from one of
        ``extra_cameras`` (ALOHA's cam_low and wrist cameras); ValueError for another. The
        renderer (an EGL context) is created on the first call."""
        if camera and camera not in _EXTRA_CAMERAS:
            raise ValueError(f"camera: the MuJoCo ALOHA renders cam_high and {list(_EXTRA_CAMERAS)}, not {camera!r}")
        if self._renderer is None:
            self._renderer = make_fast_renderer(self.model, self._width, self._height)
        self._renderer.update_scene(self.data, camera=_EXTRA_CAMERAS[camera] if camera else _CAMERA)
        return self._renderer.render()

    def clone(self) -> MujocoAlohaSim:
        """An independent copy (model, physics state, controller, contact memory, generators)
        without the renderer: stepping or resetting it never changes this simulator
        (rollout.expert_chunk rolls the expert out ahead on one, DAgger labels states with
        it). ``copy.deepcopy`` does the same."""
        twin = copy.copy(self)
        twin.model = copy.deepcopy(self.model)  # reset() recolours the cube in the model
        twin.data = mujoco.MjData(twin.model)
        mujoco.mj_copyData(twin.data, twin.model, self.data)
        twin._ref = copy.deepcopy(self._ref)
        twin._push = copy.deepcopy(self._push)
        twin._rng = copy.deepcopy(self._rng)
        twin._cmd = self._cmd.copy()
        twin._hold_point = self._hold_point.copy()
        twin._last_touch_s = self._last_touch_s.copy()  # updated in place while stepping
        twin._renderer = None
        return twin

    def __deepcopy__(self, memo: dict) -> MujocoAlohaSim:
        return self.clone()

    def close(self) -> None:
        """Free the renderer's GL context (the sim stays usable; render() makes a new one)."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

# Registered by name (sim.registry): the type checker holds the class to the Simulator
# protocol and to the constructor make_sim calls here.
_AS_REGISTERED: SimulatorFactory = MujocoAlohaSim
