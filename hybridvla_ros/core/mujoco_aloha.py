"""ALOHA bimanual cube transfer in MuJoCo: two ViperX 300 s arms, real contact, a scripted expert.

:class:`MujocoAlohaSim` has the public interface of
:class:`~hybridvla_ros.core.kinematic_sim.KinematicSim` (the sim node, the demonstration
recorder and the evaluation call the same methods), over gym-aloha's
``bimanual_viperx_transfer_cube.xml`` scene. gym-aloha is installed for its assets only
and is never imported: its folder is found with ``importlib.util.find_spec``.

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

Model changes (made in code on gym-aloha's files, never copied):

* each arm joint is a stiff PD position servo (kp, kv from the joint's inertia at home:
  ~13 Hz bandwidth, critically damped, torque-limited like the Dynamixels) on
  gravity-compensated links with a small rotor inertia, as the servos' position loop
  behaves; the model's large joint friction (30-60 Nm, which would leave a servo
  centimetres off its target) is reduced to 0.1 Nm;
* each gripper has one value (our ``left_finger``, m); the model's ``right_finger`` gets
  its negation, as in gym-aloha, and the two fingers are coupled (one linkage). Fingers
  are high-gain servos with a force limit (ALOHA's current-limited grippers): a target a
  couple of mm inside the cube squeezes it with the full force;
* a "pinch" site between each pair of fingertips (the tool points); the fast offscreen
  renderer of :mod:`~hybridvla_ros.core.mujoco_common`.

Position controller. Commands are taken as a joint trajectory controller takes one point
a control period ahead, with KinematicSim's rule (``mujoco_common.JointReference``): a
target within one period's reach is interpolated to arrive by the next period, anything
else is approached on a velocity / acceleration-limited profile that brakes into the
target and into the joint limits. That reference is the servos' setpoint at every 2 ms
physics step; the measured positions follow it within a few mrad in free motion and stay
off it where contact resists (a squeezed cube, the table, a push).

Not thread-safe: one thread steps, commands and renders.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass

# First: it picks MuJoCo's headless GL backend (EGL) before mujoco is imported.
from hybridvla_ros.core.mujoco_common import (
    ExternalPush,
    JointReference,
    check_finite_array,
    check_finite_number,
    check_seed,
    find_package_dir,
    make_fast_renderer,
)

import mujoco  # noqa: E402  (after the backend choice)
import numpy as np  # noqa: E402

from hybridvla_ros.core.kinematic_sim import _brake_speed  # noqa: E402  (the same braking rule)
from hybridvla_ros.params.embodiment import EmbodimentParams  # noqa: E402

__all__ = ["MujocoAlohaSim", "SceneConfig", "SCENES", "DEFAULT_HOLD_POINT_M", "PHASES"]

# ------------------------------------------------------------------ scene constants

DEFAULT_HOLD_POINT_M = (0.0, 0.5, 0.2)  # where the right gripper ends up holding the cube (world)
_CUBE_HALF_M = 0.02  # gym-aloha's cube: 4 cm, 50 g
_TABLE_Z_M = 0.0  # table top
_LIFTED_Z_M = 0.06  # cube centre above this: clear of the table (resting: 0.02)
_CAMERA = "top"  # our cam_high
_SCENE_FILE = "bimanual_viperx_transfer_cube.xml"
_ARMS = ("vx300s_left", "vx300s_right")
_ARM_JOINTS = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate")
_PINCH_X_M = 0.13  # pinch point on the gripper_link x axis: 2.4 cm behind the fingertips
_GRIP_FORCE_N = 6.0  # finger force limit (the grippers are current-limited)
_SERVO_OMEGA = 80.0  # rad/s, bandwidth of the arm joints' position loop
_ARMATURE = 0.02  # kg m^2 (arm joints) / kg (fingers): rotor inertia seen at the joint
_FINGER_KP = 4000.0  # N/m: a 1.5 mm error already saturates the force limit
_FINGER_MASS_KG = 0.035  # one finger link (gym-aloha's inertial)
_JOINT_FRICTION = 0.1  # Nm (N for fingers)
# Peak torque of each arm joint's servo(s) (Nm): ViperX 300 s Dynamixels, XM540-W270 ~10 Nm
# each (shoulder and elbow have two), XM430-W350 ~4 Nm on wrist_rotate. Gravity is
# compensated, so this only bounds what a servo can push against the table or the other arm.
_ARM_TORQUE_NM = {"waist": 10.0, "shoulder": 20.0, "elbow": 20.0, "forearm_roll": 10.0, "wrist_angle": 10.0,
                  "wrist_rotate": 4.0}

# What a geom touching the cube is (bit flags).
_BIT_LEFT_FINGER, _BIT_RIGHT_FINGER, _BIT_TABLE, _BIT_LEFT_GRIPPER = 1, 2, 4, 8

PHASES = ("reach", "descend", "grasp", "regrasp", "lift", "approach", "handover", "release", "done")


@dataclass(frozen=True)
class SceneConfig:
    """Where the cube starts and what it looks like."""

    cube_xy_low_m: tuple[float, float]  # (x, y) world corner of the start box
    cube_xy_high_m: tuple[float, float]
    cube_rgba: tuple[float, float, float, float]

    def __post_init__(self) -> None:
        lo, hi = np.asarray(self.cube_xy_low_m, float), np.asarray(self.cube_xy_high_m, float)
        if lo.shape != (2,) or hi.shape != (2,) or not np.all(np.isfinite(lo)) or np.any(hi < lo):
            raise ValueError(f"cube_xy_low_m/high_m must be finite (x, y) with low <= high, "
                             f"got {self.cube_xy_low_m!r}, {self.cube_xy_high_m!r}")
        rgba = np.asarray(self.cube_rgba, float)
        if rgba.shape != (4,) or np.any(rgba < 0) or np.any(rgba > 1):
            raise ValueError(f"cube_rgba must be 4 numbers in [0, 1], got {self.cube_rgba!r}")


# The left base is at (-0.469, 0.5), the right at (+0.469, 0.5), facing each other.
SCENES: dict[str, SceneConfig] = {
    # the training distribution: a red cube in a 6 x 6 cm box on the left half
    "nominal": SceneConfig((-0.13, 0.47), (-0.07, 0.53), (1.0, 0.0, 0.0, 1.0)),
    # out of distribution: farther out and to the back, a blue cube
    "shifted": SceneConfig((-0.20, 0.56), (-0.16, 0.62), (0.1, 0.35, 1.0, 1.0)),
}

# Expert tuning
_CART_SPEED_M_S = 0.35
_CART_ACCEL_M_S2 = 1.5
_ANG_SPEED_RAD_S = 2.0
_ANG_ACCEL_RAD_S2 = 5.0
_ROT_WEIGHT_M = 0.15  # 1 rad of orientation error counts like 15 cm of position error
_DLS_DAMPING = 0.03
_NULL_GAIN_PER_S = 0.3
_PICK_PITCH_RAD = math.radians(60.0)  # the left gripper points 60 deg down to pick (as ACT)
_ABOVE_M = 0.07  # approach height of the pinch point above the cube centre
_GRASP_ABOVE_CENTRE_M = 0.012  # the tilted fingertips reach 2 cm below the pinch: keep off the table
_GRASP_TOL_M = 0.01
_RIGHT_GRASP_OFFSET_M = 0.004  # right pinch this far +x of the cube centre (deep in the fingers)
_RIGHT_PREGRASP_M = 0.09  # right waits this much farther out along +x
_RIGHT_CLOSE_TOL_M = 0.01  # the right closes with its pinch this close to its grasp point
_OPEN_M = 0.057
_CLOSED_M = 0.021
_OPEN_ENOUGH_M = 0.053
_SLOW_CLOSE_BELOW_M = 0.05  # fingers close slowly from here on (they meet the cube at ~0.042)
_SLOW_CLOSE_M_S = 0.03
_TOUCH_HOLD_S = 0.05  # a contact counts for this long after it was last seen
_GRIP_MIN_M = 0.03  # a gripper closed below this holds nothing (the cube stops it at ~0.042)
_HOLD_MAX_M = 0.052  # ... and one open wider than this does not grip it
_HOLD_DIST_M = 0.04  # a held cube's centre lies this close to the pinch point (9 cm long fingers)


def _scene_path() -> str:
    """Path of gym-aloha's transfer-cube scene; MissingAssetError (a FileNotFoundError) naming
    the pip package when it is not installed."""
    path = os.path.join(find_package_dir("gym_aloha", "gym-aloha", "assets"), _SCENE_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing: reinstall the pip package 'gym-aloha' "
                                "(`pip install --no-deps gym-aloha`)")
    return path


def _rot_error(current: np.ndarray, desired: np.ndarray) -> np.ndarray:
    """(3,) world rotation vector taking ``current`` (3, 3) to ``desired`` (3, 3)."""
    quat = np.empty(4)
    mujoco.mju_mat2Quat(quat, (desired @ current.T).ravel())
    vec = np.empty(3)
    mujoco.mju_quat2Vel(vec, quat, 1.0)
    return vec


def _frame(x_axis: np.ndarray, y_hint: np.ndarray) -> np.ndarray:
    """(3, 3) rotation whose columns are x_axis, y (y_hint made orthogonal), z = x cross y."""
    x = x_axis / np.linalg.norm(x_axis)
    y = y_hint - x * float(x @ y_hint)
    y /= np.linalg.norm(y)
    return np.stack([x, y, np.cross(x, y)], axis=1)


@dataclass
class _Waypoint:
    """What the expert wants of one arm this control period."""

    pinch_m: np.ndarray  # (3,) world goal of the pinch point
    rot: np.ndarray  # (3, 3) world goal orientation of the gripper
    close: bool  # squeeze (True) or open the gripper


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
        """Load gym-aloha's scene, apply the model changes of the module docstring, map our
        joints onto it. ValueError if ``params.joint_names`` are not the model's."""
        spec = mujoco.MjSpec.from_file(_scene_path())
        spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST  # stiff servo damping
        spec.option.cone = mujoco.mjtCone.mjCONE_ELLIPTIC  # less slip in a pinch grasp
        spec.option.impratio = 10.0
        for arm in _ARMS:
            # Gravity compensation (set before compiling: MuJoCo only applies it to models
            # compiled with it) of every link, fingers included.
            stack = [spec.body(arm)]
            while stack:
                body = stack.pop()
                body.gravcomp = 1.0
                stack.extend(body.bodies)
            # The two fingers of a ViperX gripper ride one linkage: right_finger = -left_finger.
            # Without this the two force-limited finger servos let a held cube sink through
            # the grip under its weight (both saturate, nothing holds the sum in place).
            coupling = spec.add_equality()
            coupling.type = mujoco.mjtEq.mjEQ_JOINT
            coupling.name1 = f"{arm}/right_finger"
            coupling.name2 = f"{arm}/left_finger"
            coupling.data[:5] = [0.0, -1.0, 0.0, 0.0, 0.0]  # q1 = -q2
            gripper = spec.body(f"{arm}/gripper_link")
            gripper.add_site(name=f"{arm}/pinch", pos=[_PINCH_X_M, 0.0, 0.0], size=[0.005, 0.0, 0.0],
                             rgba=[0.0, 0.0, 0.0, 0.0])
        model = spec.compile()
        self.model = model
        self.data = mujoco.MjData(model)

        # Our 14 joints -> model joints, qpos / dof addresses, actuators.
        names = list(self.params.joint_names)
        self._qadr = np.empty(14, dtype=np.int64)
        self._dadr = np.empty(14, dtype=np.int64)
        self._act = np.empty(14, dtype=np.int64)
        act_of_joint = {int(model.actuator_trnid[a, 0]): a for a in range(model.nu)}
        for i, name in enumerate(names):
            jid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)
            if jid < 0:
                raise ValueError(f"params: joint_names[{i}] = {name!r} is not a joint of the ALOHA model")
            self._qadr[i] = model.jnt_qposadr[jid]
            self._dadr[i] = model.jnt_dofadr[jid]
            self._act[i] = act_of_joint[jid]
        self._fingers = np.array([i for i, n in enumerate(names) if n.endswith("/left_finger")])  # (2,)
        if self._fingers.size != 2:
            raise ValueError(f"params: joint_names need one left_finger per arm, got {names}")
        self._arm_idx = [np.array([names.index(f"{arm}/{j}") for j in _ARM_JOINTS]) for arm in _ARMS]  # 2 x (6,)
        # The mirrored finger of each gripper (model joint 'right_finger'), in our finger order.
        self._mirror_qadr, self._mirror_dadr, self._mirror_act = [], [], []
        for i in self._fingers:
            arm = names[i].split("/")[0]
            jid = model.joint(f"{arm}/right_finger").id
            self._mirror_qadr.append(int(model.jnt_qposadr[jid]))
            self._mirror_dadr.append(int(model.jnt_dofadr[jid]))
            self._mirror_act.append(act_of_joint[jid])
        self._mirror_qadr = np.array(self._mirror_qadr)
        self._mirror_dadr = np.array(self._mirror_dadr)
        self._mirror_act = np.array(self._mirror_act)
        cube_jid = model.joint("red_box_joint").id
        self._cube_qadr = int(model.jnt_qposadr[cube_jid])
        self._cube_dadr = int(model.jnt_dofadr[cube_jid])
        self._cube_geom = model.geom("red_box").id
        self._cube_body = model.body("box").id
        self._table_geom = model.geom("table").id
        self._pinch_site = np.array([model.site(f"{arm}/pinch").id for arm in _ARMS])  # (2,)
        self._gripper_body = np.array([model.body(f"{arm}/gripper_link").id for arm in _ARMS])
        self._base_xy = np.array([model.body(arm).pos[:2] for arm in _ARMS])  # (2, 2)
        self._finger_geoms = [np.array([model.geom(f"{arm}/10_left_gripper_finger").id,
                                        model.geom(f"{arm}/10_right_gripper_finger").id]) for arm in _ARMS]
        # Every body of a gripper (wrist_rotate link and its children): contact with the left
        # one is what wrench() reports and what success forbids.
        self._gripper_bodies = []
        for gb in self._gripper_body:
            bodies = {int(gb)}
            for b in range(model.nbody):
                p = b
                while p > 0:
                    if p == gb:
                        bodies.add(b)
                        break
                    p = int(model.body_parentid[p])
            self._gripper_bodies.append(np.array(sorted(bodies)))
        self._left_gripper_mask = np.zeros(model.nbody, dtype=bool)
        self._left_gripper_mask[self._gripper_bodies[0]] = True
        # What touching each geom means for the cube: bit flags, a Python list for speed.
        bits = np.zeros(model.ngeom, dtype=np.int64)
        bits[self._left_gripper_mask[model.geom_bodyid]] |= _BIT_LEFT_GRIPPER
        bits[self._finger_geoms[0]] |= _BIT_LEFT_FINGER
        bits[self._finger_geoms[1]] |= _BIT_RIGHT_FINGER
        bits[self._table_geom] |= _BIT_TABLE
        self._contact_bits: list[int] = bits.tolist()

        # Servos: stiff PD (gravity is compensated); fingers force-limited.
        all_fingers = np.concatenate([self._dadr[self._fingers], self._mirror_dadr])
        arm_dofs = np.concatenate([self._dadr[idx] for idx in self._arm_idx])
        model.dof_frictionloss[arm_dofs] = _JOINT_FRICTION
        model.dof_frictionloss[all_fingers] = _JOINT_FRICTION
        model.dof_armature[arm_dofs] = _ARMATURE
        model.dof_armature[all_fingers] = _ARMATURE
        self.data.qpos[self._qadr] = self._home
        self.data.qpos[self._mirror_qadr] = -self._home[self._fingers]
        mujoco.mj_forward(model, self.data)
        full_m = np.zeros((model.nv, model.nv))
        mujoco.mj_fullM(model, self.data, full_m)
        self._kp = np.empty(14)
        self._kv = np.empty(14)
        for i in range(14):
            a = self._act[i]
            if i in self._fingers:
                kp, kv = _FINGER_KP, 2.0 * math.sqrt(_FINGER_KP * (_FINGER_MASS_KG + _ARMATURE))
            else:
                inertia = full_m[self._dadr[i], self._dadr[i]]  # includes the armature
                kp, kv = inertia * _SERVO_OMEGA ** 2, 2.0 * inertia * _SERVO_OMEGA
            self._kp[i], self._kv[i] = kp, kv
            for act in ([a, self._mirror_act[list(self._fingers).index(i)]] if i in self._fingers else [a]):
                model.actuator_gainprm[act, 0] = kp
                model.actuator_biasprm[act, :3] = [0.0, -kp, -kv]
                model.actuator_ctrllimited[act] = 0
                limit = _GRIP_FORCE_N if i in self._fingers else _ARM_TORQUE_NM[names[i].split("/")[1]]
                model.actuator_forcelimited[act] = 1
                model.actuator_forcerange[act] = [-limit, limit]
        self._timestep = float(model.opt.timestep)

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
        self.data.qpos[a:a + 3] = [xy[0], xy[1], _TABLE_Z_M + _CUBE_HALF_M]
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
        self._push.start(force, duration_s, self.time_s, np.array([_PINCH_X_M, 0.0, 0.0]))

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
        return ([bool(flags & _BIT_LEFT_FINGER), bool(flags & _BIT_RIGHT_FINGER)], bool(flags & _BIT_TABLE),
                bool(flags & _BIT_LEFT_GRIPPER))

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
        about the cube's width (opening between _GRIP_MIN_M and _HOLD_MAX_M) and the cube
        centre is within _HOLD_DIST_M of its pinch point (between the fingers)."""
        _, table, _ = self._cube_contacts()
        touching = self._touching()
        cube = self.data.xpos[self._cube_body]
        pinch = self.data.site_xpos[self._pinch_site]  # (2, 3)
        opening = self.data.qpos[self._qadr[self._fingers]]  # (2,)
        held = [bool(touching[arm] and _GRIP_MIN_M < opening[arm] < _HOLD_MAX_M
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

    def _phase_and_grasp(self) -> tuple[str, str]:
        if self._phase_cache is not None and self._phase_cache[0] == self._state_version:
            return self._phase_cache[1], self._phase_cache[2]
        held_l, held_r, _, _ = self._holds()
        grasped = {(False, False): "none", (True, False): "left", (False, True): "right",
                   (True, True): "both"}[(held_l, held_r)]
        cube = self.cube_position
        pinch = self.end_effector_positions()
        opening = self.data.qpos[self._qadr[self._fingers]]  # (2,) m
        if self.success():
            phase = "done"
        elif held_r and not held_l:
            phase = "release"
        elif held_l and held_r:
            phase = "handover"
        elif held_l:
            phase = "approach" if np.linalg.norm(cube - self._hold_point) < 0.03 else "lift"
        else:
            grasp_point = cube + np.array([0.0, 0.0, _GRASP_ABOVE_CENTRE_M])
            dist = float(np.linalg.norm(pinch[0] - grasp_point))
            closing = _GRIP_MIN_M < opening[0] < _OPEN_ENOUGH_M
            if dist < _GRASP_TOL_M or (closing and dist < 2.0 * _GRASP_TOL_M):
                phase = "grasp"  # at the grasp point, or closing there: close
            elif opening[0] < _OPEN_ENOUGH_M and dist < 0.03:
                phase = "regrasp"  # closed on nothing, or off the grasp point: open again
            elif np.linalg.norm(pinch[0, :2] - cube[:2]) < 0.015 and pinch[0, 2] > cube[2] - 0.005:
                phase = "descend"
            else:
                phase = "reach"
        self._phase_cache = (self._state_version, phase, grasped)
        return phase, grasped

    def _left_rot(self, point: np.ndarray, pitch_rad: float = _PICK_PITCH_RAD,
                  face_yaw_rad: float | None = None) -> np.ndarray:
        """Left gripper orientation: pointing from its base toward ``point``, pitched down.
        With ``face_yaw_rad`` (the cube's yaw), the heading snaps to the cube's face
        direction nearest to that bearing, so the fingers close square on two faces."""
        d = point[:2] - self._base_xy[0]
        yaw = math.atan2(d[1], d[0])
        if face_yaw_rad is not None:
            quarter = math.pi / 2
            yaw = face_yaw_rad + quarter * round((yaw - face_yaw_rad) / quarter)
        x_axis = np.array([math.cos(pitch_rad) * math.cos(yaw), math.cos(pitch_rad) * math.sin(yaw),
                           -math.sin(pitch_rad)])
        return _frame(x_axis, np.array([-math.sin(yaw), math.cos(yaw), 0.0]))

    def _right_rot(self, point: np.ndarray) -> np.ndarray:
        """Right gripper orientation: level, pointing from its base toward ``point``, the
        fingers closing vertically (rolled 90 deg) so they pass the left gripper's fingers."""
        d = point[:2] - self._base_xy[1]
        yaw = math.atan2(d[1], d[0])
        return _frame(np.array([math.cos(yaw), math.sin(yaw), 0.0]), np.array([0.0, 0.0, 1.0]))

    def _waypoints(self) -> tuple[_Waypoint, _Waypoint]:
        """The phase machine: each arm's goal for this period, from the state only."""
        phase, _ = self._phase_and_grasp()
        cube = self.cube_position
        pinch = self.end_effector_positions()
        hold = self._hold_point
        opening = self.data.qpos[self._qadr[self._fingers]]
        right_grasp = cube + np.array([_RIGHT_GRASP_OFFSET_M, 0.0, 0.0])
        right_pre_hold = hold + np.array([_RIGHT_GRASP_OFFSET_M + _RIGHT_PREGRASP_M, 0.0, 0.0])
        right_wait = _Waypoint(right_pre_hold, self._right_rot(hold), close=False)
        retreat = hold + np.array([-0.06, 0.0, 0.10])
        if phase in ("reach", "descend", "grasp", "regrasp"):
            above = cube + np.array([0.0, 0.0, _ABOVE_M])
            grasp_point = cube + np.array([0.0, 0.0, _GRASP_ABOVE_CENTRE_M])
            cube_x = self.data.xmat[self._cube_body].reshape(3, 3)[:, 0]  # the cube's x axis, world
            rot = self._left_rot(cube, face_yaw_rad=math.atan2(cube_x[1], cube_x[0]))
            if phase == "reach":
                left = _Waypoint(above, rot, close=False)
            elif phase == "descend":
                ok = opening[0] >= _OPEN_ENOUGH_M
                left = _Waypoint(grasp_point if ok else pinch[0], rot, close=False)
            elif phase == "grasp":
                left = _Waypoint(grasp_point, rot, close=True)
            else:
                left = _Waypoint(pinch[0], rot, close=False)
            return left, right_wait
        if phase == "lift":
            # Straight up first, then over to the hold point, carrying the cube centre.
            goal = hold if cube[2] > 0.09 else np.array([cube[0], cube[1], 0.12])
            left = _Waypoint(pinch[0] + goal - cube, self._left_rot(hold), close=True)
            return left, right_wait
        if phase == "approach":
            left = _Waypoint(pinch[0] + hold - cube, self._left_rot(hold), close=True)
            lateral = np.linalg.norm((pinch[1] - right_grasp)[1:])
            if np.linalg.norm(pinch[1] - right_grasp) < _RIGHT_CLOSE_TOL_M:
                right = _Waypoint(right_grasp, self._right_rot(hold), close=True)
            elif lateral < 2.0 * _RIGHT_CLOSE_TOL_M and pinch[1, 0] > right_grasp[0] - 0.005:
                right = _Waypoint(right_grasp, self._right_rot(hold), close=False)
            else:
                right = _Waypoint(right_grasp + [_RIGHT_PREGRASP_M, 0.0, 0.0], self._right_rot(hold),
                                  close=False)
            return left, right
        if phase == "handover":
            left = _Waypoint(pinch[0], self._left_rot(hold), close=False)
            right = _Waypoint(pinch[1], self._right_rot(hold), close=True)
            return left, right
        # release / done: the right carries the cube to the hold point; the left opens, then backs out.
        right = _Waypoint(pinch[1] + hold - cube, self._right_rot(hold), close=True)
        if opening[0] < _OPEN_ENOUGH_M:
            left = _Waypoint(pinch[0], self._left_rot(hold), close=False)
        else:
            left = _Waypoint(retreat, self._left_rot(hold), close=False)
        return left, right

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
                        float(_brake_speed(np.array(dist), 0.8 * _CART_ACCEL_M_S2, period)))
            dx = err * min(1.0, speed * period / dist) if dist > 1e-9 else np.zeros(3)
            rot = _rot_error(self.data.site_xmat[site].reshape(3, 3), wp.rot)
            ang = float(np.linalg.norm(rot))
            turning = float(jacr[:, dofs] @ qvel @ rot) / ang if ang > 1e-9 else 0.0
            ang_speed = min(_ANG_SPEED_RAD_S, max(turning, 0.0) + _ANG_ACCEL_RAD_S2 * period,
                            float(_brake_speed(np.array(ang), 0.8 * _ANG_ACCEL_RAD_S2, period)))
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
                    speed = max(_SLOW_CLOSE_M_S, float(_brake_speed(np.array(zone), 0.8 * self._amax[f], period)))
                    move = -min(speed * period, step_max[f], q[f] - _CLOSED_M)
                else:
                    # Brake into the open position, accelerating from the current finger speed.
                    goal = _OPEN_M - q[f]
                    reach = float(_brake_speed(np.array(abs(goal)), 0.8 * self._amax[f], period)) * period
                    move = math.copysign(min(abs(goal), reach, step_max[f]), goal)
                move = float(np.clip(move, fv - acc_step[f], fv + acc_step[f]))
                out[f] = q[f] + float(np.clip(move, -step_max[f], step_max[f]))
        return np.clip(out, self._lo, self._hi)

    # ------------------------------------------------------------------ rendering

    def render(self) -> np.ndarray:
        """(H, W, 3) uint8 RGB image from the scene's "top" camera (our cam_high). The
        renderer (an EGL context) is created on the first call."""
        if self._renderer is None:
            self._renderer = make_fast_renderer(self.model, self._width, self._height)
        self._renderer.update_scene(self.data, camera=_CAMERA)
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
