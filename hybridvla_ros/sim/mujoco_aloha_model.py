"""The MuJoCo model of the ALOHA cube transfer: gym-aloha's scene, changed in code (ROS-free).

:func:`build_aloha_model` loads gym-aloha's ``bimanual_viperx_transfer_cube.xml`` (gym-aloha
is installed for its assets only and is never imported: its folder is found with
``importlib.util.find_spec``) and makes these changes, never copying the files:

* each arm joint is a stiff PD position servo (kp, kv from the joint's inertia at home:
  ~13 Hz bandwidth, critically damped, torque-limited like the Dynamixels) on
  gravity-compensated links with a small rotor inertia, as the servos' position loop
  behaves; the model's large joint friction (30-60 Nm, which would leave a servo
  centimetres off its target) is reduced to 0.1 Nm;
* each gripper has one value (our ``left_finger``, m); the model's ``right_finger`` gets
  its negation, as in gym-aloha, and the two fingers are coupled (one linkage). Fingers
  are high-gain servos with a force limit (ALOHA's current-limited grippers): a target a
  couple of mm inside the cube squeezes it with the full force;
* a "pinch" site between each pair of fingertips (the tool points).

It maps ``params.joint_names`` onto the model and returns the addresses the simulator
(:class:`~hybridvla_ros.sim.mujoco_aloha.MujocoAlohaSim`) needs as an :class:`AlohaModel`.
:data:`SCENES` holds the scene presets (where the cube starts, its colour).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

# First: it picks MuJoCo's headless GL backend (EGL) before mujoco is imported.
from hybridvla_ros.sim.mujoco_common import find_package_dir

# isort: split
import mujoco
import numpy as np

from hybridvla_ros.params.embodiment import EmbodimentParams

__all__ = ["AlohaModel", "SceneConfig", "SCENES", "ARMS", "PINCH_X_M", "CUBE_HALF_M", "TABLE_Z_M",
           "BIT_LEFT_FINGER", "BIT_RIGHT_FINGER", "BIT_TABLE", "BIT_LEFT_GRIPPER", "build_aloha_model",
           "scene_path"]

CUBE_HALF_M = 0.02  # gym-aloha's cube: 4 cm, 50 g
TABLE_Z_M = 0.0  # table top
_SCENE_FILE = "bimanual_viperx_transfer_cube.xml"
ARMS = ("vx300s_left", "vx300s_right")
ARM_JOINTS = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate")
PINCH_X_M = 0.13  # pinch point on the gripper_link x axis: 2.4 cm behind the fingertips
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
BIT_LEFT_FINGER, BIT_RIGHT_FINGER, BIT_TABLE, BIT_LEFT_GRIPPER = 1, 2, 4, 8


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


def scene_path() -> str:
    """Path of gym-aloha's transfer-cube scene; MissingAssetError (a FileNotFoundError) naming
    the pip package when it is not installed."""
    path = os.path.join(find_package_dir("gym_aloha", "gym-aloha", "assets"), _SCENE_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing: reinstall the pip package 'gym-aloha' "
                                "(`pip install --no-deps gym-aloha`)")
    return path


@dataclass
class AlohaModel:
    """The compiled model, its data at home, and where our joints and the task's objects are in it.

    Index arrays are into the model's qpos / qvel / ctrl / bodies / sites; ``i`` in our
    14-joint order (``params.joint_names``)."""

    model: mujoco.MjModel
    data: mujoco.MjData
    qadr: np.ndarray  # (14,) qpos address of our joint i
    dadr: np.ndarray  # (14,) dof address of our joint i
    actuators: np.ndarray  # (14,) actuator of our joint i
    fingers: np.ndarray  # (2,) our indices of the two left_finger joints (left arm, right arm)
    arm_idx: list[np.ndarray]  # 2 x (6,) our indices of each arm's joints (waist .. wrist_rotate)
    mirror_qadr: np.ndarray  # (2,) qpos address of each gripper's mirrored right_finger
    mirror_act: np.ndarray  # (2,) its actuator
    cube_qadr: int  # the cube's free joint: qpos (7) and dof (6) addresses
    cube_dadr: int
    cube_geom: int
    cube_body: int
    pinch_site: np.ndarray  # (2,) the tool points
    gripper_body: np.ndarray  # (2,) each gripper_link
    base_xy: np.ndarray  # (2, 2) each arm's base (x, y) in the world
    left_gripper_mask: np.ndarray  # (nbody,) bool: bodies of the left gripper
    contact_bits: list[int]  # per geom: what touching it means for the cube (BIT_* flags)
    servo_kp: np.ndarray  # (14,) servo stiffness (Nm/rad or N/m)
    servo_kv: np.ndarray  # (14,) servo damping
    timestep_s: float  # physics step


def build_aloha_model(params: EmbodimentParams) -> AlohaModel:
    """Load gym-aloha's scene with the changes of the module docstring, map
    ``params.joint_names`` onto it and tune the servos at ``params.home_position``.
    ValueError if the joint names are not the model's (one left_finger per arm);
    MissingAssetError (a FileNotFoundError naming the pip package) when gym-aloha's assets
    are not installed."""
    home = np.asarray(params.home_position, dtype=np.float64)
    spec = mujoco.MjSpec.from_file(scene_path())
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST  # stiff servo damping
    spec.option.cone = mujoco.mjtCone.mjCONE_ELLIPTIC  # less slip in a pinch grasp
    spec.option.impratio = 10.0
    for arm in ARMS:
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
        gripper.add_site(name=f"{arm}/pinch", pos=[PINCH_X_M, 0.0, 0.0], size=[0.005, 0.0, 0.0],
                         rgba=[0.0, 0.0, 0.0, 0.0])
    model = spec.compile()
    data = mujoco.MjData(model)

    # Our 14 joints -> model joints, qpos / dof addresses, actuators.
    names = list(params.joint_names)
    qadr = np.empty(14, dtype=np.int64)
    dadr = np.empty(14, dtype=np.int64)
    actuators = np.empty(14, dtype=np.int64)
    act_of_joint = {int(model.actuator_trnid[a, 0]): a for a in range(model.nu)}
    for i, name in enumerate(names):
        jid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)
        if jid < 0:
            raise ValueError(f"params: joint_names[{i}] = {name!r} is not a joint of the ALOHA model")
        qadr[i] = model.jnt_qposadr[jid]
        dadr[i] = model.jnt_dofadr[jid]
        actuators[i] = act_of_joint[jid]
    fingers = np.array([i for i, n in enumerate(names) if n.endswith("/left_finger")])  # (2,)
    if fingers.size != 2:
        raise ValueError(f"params: joint_names need one left_finger per arm, got {names}")
    arm_idx = [np.array([names.index(f"{arm}/{j}") for j in ARM_JOINTS]) for arm in ARMS]  # 2 x (6,)
    # The mirrored finger of each gripper (model joint 'right_finger'), in our finger order.
    mirror_q: list[int] = []
    mirror_d: list[int] = []
    mirror_a: list[int] = []
    for i in fingers:
        arm = names[i].split("/")[0]
        jid = model.joint(f"{arm}/right_finger").id
        mirror_q.append(int(model.jnt_qposadr[jid]))
        mirror_d.append(int(model.jnt_dofadr[jid]))
        mirror_a.append(act_of_joint[jid])
    mirror_qadr = np.array(mirror_q)
    mirror_dadr = np.array(mirror_d)
    mirror_act = np.array(mirror_a)
    cube_jid = model.joint("red_box_joint").id
    cube_qadr = int(model.jnt_qposadr[cube_jid])
    cube_dadr = int(model.jnt_dofadr[cube_jid])
    cube_geom = model.geom("red_box").id
    cube_body = model.body("box").id
    table_geom = model.geom("table").id
    pinch_site = np.array([model.site(f"{arm}/pinch").id for arm in ARMS])  # (2,)
    gripper_body = np.array([model.body(f"{arm}/gripper_link").id for arm in ARMS])
    base_xy = np.array([model.body(arm).pos[:2] for arm in ARMS])  # (2, 2)
    finger_geoms = [np.array([model.geom(f"{arm}/10_left_gripper_finger").id,
                              model.geom(f"{arm}/10_right_gripper_finger").id]) for arm in ARMS]
    # Every body of a gripper (wrist_rotate link and its children): contact with the left
    # one is what wrench() reports and what success forbids.
    gripper_bodies = []
    for gb in gripper_body:
        bodies = {int(gb)}
        for b in range(model.nbody):
            p = b
            while p > 0:
                if p == gb:
                    bodies.add(b)
                    break
                p = int(model.body_parentid[p])
        gripper_bodies.append(np.array(sorted(bodies)))
    left_gripper_mask = np.zeros(model.nbody, dtype=bool)
    left_gripper_mask[gripper_bodies[0]] = True
    # What touching each geom means for the cube: bit flags, a Python list for speed.
    bits = np.zeros(model.ngeom, dtype=np.int64)
    bits[left_gripper_mask[model.geom_bodyid]] |= BIT_LEFT_GRIPPER
    bits[finger_geoms[0]] |= BIT_LEFT_FINGER
    bits[finger_geoms[1]] |= BIT_RIGHT_FINGER
    bits[table_geom] |= BIT_TABLE
    contact_bits: list[int] = bits.tolist()

    # Servos: stiff PD (gravity is compensated); fingers force-limited.
    all_fingers = np.concatenate([dadr[fingers], mirror_dadr])
    arm_dofs = np.concatenate([dadr[idx] for idx in arm_idx])
    model.dof_frictionloss[arm_dofs] = _JOINT_FRICTION
    model.dof_frictionloss[all_fingers] = _JOINT_FRICTION
    model.dof_armature[arm_dofs] = _ARMATURE
    model.dof_armature[all_fingers] = _ARMATURE
    data.qpos[qadr] = home
    data.qpos[mirror_qadr] = -home[fingers]
    mujoco.mj_forward(model, data)
    full_m = np.zeros((model.nv, model.nv))
    mujoco.mj_fullM(model, data, full_m)
    servo_kp = np.empty(14)
    servo_kv = np.empty(14)
    for i in range(14):
        a = actuators[i]
        if i in fingers:
            kp, kv = _FINGER_KP, 2.0 * math.sqrt(_FINGER_KP * (_FINGER_MASS_KG + _ARMATURE))
        else:
            inertia = full_m[dadr[i], dadr[i]]  # includes the armature
            kp, kv = inertia * _SERVO_OMEGA ** 2, 2.0 * inertia * _SERVO_OMEGA
        servo_kp[i], servo_kv[i] = kp, kv
        for act in ([a, mirror_act[list(fingers).index(i)]] if i in fingers else [a]):
            model.actuator_gainprm[act, 0] = kp
            model.actuator_biasprm[act, :3] = [0.0, -kp, -kv]
            model.actuator_ctrllimited[act] = 0
            limit = _GRIP_FORCE_N if i in fingers else _ARM_TORQUE_NM[names[i].split("/")[1]]
            model.actuator_forcelimited[act] = 1
            model.actuator_forcerange[act] = [-limit, limit]
    return AlohaModel(model=model, data=data, qadr=qadr, dadr=dadr, actuators=actuators, fingers=fingers,
                      arm_idx=arm_idx, mirror_qadr=mirror_qadr, mirror_act=mirror_act, cube_qadr=cube_qadr,
                      cube_dadr=cube_dadr, cube_geom=cube_geom, cube_body=cube_body, pinch_site=pinch_site,
                      gripper_body=gripper_body, base_xy=base_xy, left_gripper_mask=left_gripper_mask,
                      contact_bits=contact_bits, servo_kp=servo_kp, servo_kv=servo_kv,
                      timestep_s=float(model.opt.timestep))
