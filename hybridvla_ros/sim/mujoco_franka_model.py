"""The MuJoCo model of the Franka pick-and-place scene, built in code (ROS-free).

Robot. The Panda model (meshes, inertias) of the pip package ``gymnasium-robotics``
(``kitchen_franka/franka_assets``, from vikashplus/franka), read at run time and edited
with ``mujoco.MjSpec``: its link6 / link7 frames are set exactly to the Franka DH frames
(the model's joint 6 / 7 zero differs from Franka's by -pi/2 / -pi/4: ``qpos = q +
JOINT_OFFSET_RAD``, so positions are in Franka's convention and limits of
config/franka.yaml), the fingers are replaced by a suction cup, the hand becomes its own
body under link7 so that a force/torque sensor between link7 and the hand measures the
tool's load, and every link is gravity compensated (``gravcomp``, as Franka's controller
does). Each joint has a position servo with MuJoCo Menagerie's Panda gains (kp 4500 / 2000
Nm/rad, kv 450 / 200 Nms/rad, torque limits 87 / 12 Nm). The visual meshes are decimated
to ~3k triangles per link (renders ~5x faster, same picture at 160x120); collision uses
the model's own coarse collision meshes. 2 ms physics step.

Scene. A table, the cube (free joint), the target disc (a mocap body), two lights and the
``scene`` camera; a ``suction`` weld between hand and cube, off until the cup grips.
:data:`SCENES` holds :class:`SceneConfig` presets (where cube and target are drawn, cube
colour): ``nominal`` (training) and ``shifted`` (both regions moved outside the nominal
ones, other cube colour) for distribution-shift evaluation.

The simulator that runs this model is :class:`~hybridvla_ros.sim.mujoco_franka.MujocoFrankaSim`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# First: it picks MuJoCo's headless GL backend (EGL) before mujoco is imported.
from hybridvla_ros.sim import mujoco_common as mc

# isort: split
import mujoco
import numpy as np

from hybridvla_ros.params.embodiment import EmbodimentParams

__all__ = [
    "SceneConfig",
    "SCENES",
    "ASSET_PACKAGE",
    "ASSET_PIP_NAME",
    "PHYSICS_TIMESTEP_S",
    "TABLE_TOP_Z_M",
    "CUBE_HALF_SIZE_M",
    "CUP_TOUCH_M",
    "CUBE_TOUCH_M",
    "TCP_Z_M",
    "JOINT_OFFSET_RAD",
    "SERVO_KP",
    "SERVO_KV",
    "box_corners_z",
    "build_spec",
]

ASSET_PACKAGE = "gymnasium_robotics"  # import name, located without importing it
ASSET_PIP_NAME = "gymnasium-robotics"
ASSET_SUBDIR = "envs/assets/kitchen_franka/franka_assets"

PHYSICS_TIMESTEP_S = 0.002
TABLE_TOP_Z_M = 0.0  # the robot base stands on the table top
CUBE_HALF_SIZE_M = 0.0225  # 4.5 cm cube
CUBE_MASS_KG = 0.1
TARGET_RADIUS_M = 0.03
CUP_TOUCH_M = 0.002  # the cup "touches" the cube within this distance (detected, no force: geom gap)
CUBE_TOUCH_M = 0.002  # the cube "touches" the table within this distance
FLANGE_Z_M = 0.107  # link7 origin -> flange (Franka DH)
TCP_Z_M = 0.1034  # flange -> Franka Hand TCP, where the suction cup's face is

JOINT_OFFSET_RAD = np.array([0.0, 0.0, 0.0, 0.0, 0.0, -math.pi / 2, -math.pi / 4])  # qpos - q
SERVO_KP = np.array([4500.0] * 4 + [2000.0] * 3)  # Nm/rad (MuJoCo Menagerie franka_emika_panda)
SERVO_KV = np.array([450.0] * 4 + [200.0] * 3)  # Nms/rad
_TORQUE_LIMIT_NM = np.array([87.0] * 4 + [12.0] * 3)  # Franka tau_max
_ARMATURE = 0.1  # reflected rotor inertia (kg m^2), keeps stiff servos stable at 2 ms

# Collision bits: geom a and b collide if a.contype & b.conaffinity or b.contype & a.conaffinity.
_BIT_WORLD, _BIT_ROBOT, _BIT_CUBE = 1, 2, 4

_VISUAL_MESH_CELL_M = 0.008  # decimation of the visual meshes: ~5x fewer triangles, same picture
# In front of the robot, to its right, looking down at the workspace: close enough that the
# 4.5 cm cube is several pixels wide in the policy's 96 x 96 image (the whole arm is not needed
# in view, the hand over the table is).
_CAMERA_EYE_M = (0.82, -0.32, 0.68)
_CAMERA_LOOK_AT_M = (0.48, 0.0, 0.02)
_CAMERA_FOVY_DEG = 50.0


@dataclass(frozen=True)
class SceneConfig:
    """Where a scene preset draws the cube and the target (world m) and the cube's colour."""

    name: str
    cube_xy_low_m: tuple[float, float]
    cube_xy_high_m: tuple[float, float]
    target_xy_low_m: tuple[float, float]
    target_xy_high_m: tuple[float, float]
    cube_rgba: tuple[float, float, float, float]
    cube_yaw_range_rad: float = 0.6  # cube yaw drawn from +-this

    def __post_init__(self) -> None:
        for low_name, high_name in (("cube_xy_low_m", "cube_xy_high_m"), ("target_xy_low_m", "target_xy_high_m")):
            low, high = np.asarray(getattr(self, low_name), float), np.asarray(getattr(self, high_name), float)
            if low.shape != (2,) or high.shape != (2,) or not np.all(np.isfinite(low)) \
                    or not np.all(np.isfinite(high)) or np.any(high < low):
                raise ValueError(f"SceneConfig {self.name!r}: {low_name} / {high_name} must be finite (x, y) "
                                 f"with low <= high, got {getattr(self, low_name)} / {getattr(self, high_name)}")
        rgba = np.asarray(self.cube_rgba, float)
        if rgba.shape != (4,) or np.any(rgba < 0) or np.any(rgba > 1):
            raise ValueError(f"SceneConfig {self.name!r}: cube_rgba must be 4 values in [0, 1], got {self.cube_rgba}")
        if not (math.isfinite(self.cube_yaw_range_rad) and 0 <= self.cube_yaw_range_rad <= math.pi):
            raise ValueError(f"SceneConfig {self.name!r}: cube_yaw_range_rad must be in [0, pi], "
                             f"got {self.cube_yaw_range_rad}")


SCENES: dict[str, SceneConfig] = {
    # Training distribution: cube to the robot's right, target to its left, +-4 cm.
    "nominal": SceneConfig("nominal", cube_xy_low_m=(0.46, -0.19), cube_xy_high_m=(0.54, -0.11),
                           target_xy_low_m=(0.46, 0.11), target_xy_high_m=(0.54, 0.19),
                           cube_rgba=(0.15, 0.35, 0.85, 1.0)),
    # Distribution shift: cube farther out and on the left, target close in on the right,
    # a yellow cube. Every position lies outside the nominal boxes, all stay reachable.
    "shifted": SceneConfig("shifted", cube_xy_low_m=(0.60, 0.02), cube_xy_high_m=(0.66, 0.10),
                           target_xy_low_m=(0.34, -0.26), target_xy_high_m=(0.40, -0.20),
                           cube_rgba=(0.90, 0.75, 0.10, 1.0)),
}


def box_corners_z(center: np.ndarray, rot: np.ndarray, half: float) -> np.ndarray:
    """(8,) heights of a cube's corners (centre (3,), rotation (3, 3))."""
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], float)  # (8, 3)
    return center[2] + half * (signs @ rot[2])


def build_spec(params: EmbodimentParams) -> mujoco.MjSpec:
    """The scene: Panda (from the installed assets) on a table, cube, target disc, camera."""
    root = mc.find_package_dir(ASSET_PACKAGE, ASSET_PIP_NAME, ASSET_SUBDIR)
    files = mc.load_asset_files(root, prefix="franka_assets/")
    include = {k: v for k, v in files.items() if k.endswith(".xml")}
    assets = {k: v for k, v in files.items() if not k.endswith(".xml")}
    xml = ('<mujoco model="franka_pick_place"><include file="franka_assets/assets.xml"/>'
           '<worldbody><include file="franka_assets/chain.xml"/></worldbody></mujoco>')
    spec = mujoco.MjSpec.from_string(xml, include=include, assets=assets)
    # Meshes as vertex arrays (see mujoco_common): visual ones decimated to render fast.
    for mesh in list(spec.meshes):
        if mesh.name.startswith("finger"):
            spec.delete(mesh)
            continue
        # The include prefixes the file with its folder: keep "visual|collision/<name>.stl".
        key = "franka_assets/meshes/" + "/".join(mesh.file.replace("\\", "/").split("/")[-2:])
        vertices, faces = _mesh_arrays(root, key, files[key], _VISUAL_MESH_CELL_M if "_viz" in mesh.name else 0.0)
        mesh.uservert = vertices.reshape(-1)
        mesh.userface = faces.reshape(-1)
        mesh.file = ""
    spec.option.timestep = PHYSICS_TIMESTEP_S
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    spec.stat.extent = 1.5

    # --- robot: exact DH frames for link6/7, joints named as the driver names them, no fingers
    links = [spec.body(f"panda0_link{i}") for i in range(8)]
    for body, quat in ((links[6], _quat_from_euler_xyz(math.pi / 2, 0.0, math.pi / 2)),
                       (links[7], _quat_from_euler_xyz(math.pi / 2, 0.0, math.pi / 4))):
        body.alt.type = mujoco.mjtOrientation.mjORIENTATION_QUAT
        body.quat = quat
    lo, hi = np.asarray(params.position_min), np.asarray(params.position_max)
    for i, name in enumerate(params.joint_names):
        joint = spec.joint(f"robot:panda0_joint{i + 1}")
        joint.name = name
        joint.range = [lo[i] + JOINT_OFFSET_RAD[i], hi[i] + JOINT_OFFSET_RAD[i]]
        joint.damping = [0.0, 0.0, 0.0]  # the servo's kv does the damping
        joint.armature = _ARMATURE
    for finger in ("panda0_leftfinger", "panda0_rightfinger"):
        spec.delete(spec.body(finger))
    hand = links[7].add_body(name="hand", pos=[0.0, 0.0, FLANGE_Z_M], quat=[0.92388, 0.0, 0.0, -0.382683])
    for geom in list(links[7].geoms):
        if geom.meshname.startswith("hand"):
            mesh, mass, is_col = geom.meshname, geom.mass, geom.contype != 0
            spec.delete(geom)
            hand.add_geom(default=spec.find_default("panda_col" if is_col else "panda_viz"),
                          type=mujoco.mjtGeom.mjGEOM_MESH, meshname=mesh, mass=mass)
    for body in links + [hand]:
        body.gravcomp = 1.0
        for geom in body.geoms:
            if geom.contype or geom.conaffinity:  # collision geom
                robot = body is not links[0] and body is not links[1]  # the base sits on the table
                geom.contype = _BIT_ROBOT if robot else 0
                geom.conaffinity = _BIT_WORLD if robot else 0
    # Suction cup: a stem from the hand to a cup whose face is the TCP.
    hand.add_geom(name="cup_stem", type=mujoco.mjtGeom.mjGEOM_CYLINDER, size=[0.008, 0.02, 0.0],
                  pos=[0.0, 0.0, 0.075], rgba=[0.25, 0.25, 0.28, 1.0], contype=0, conaffinity=0, mass=0.05)
    hand.add_geom(name="cup", type=mujoco.mjtGeom.mjGEOM_CYLINDER, size=[0.017, 0.004, 0.0],
                  pos=[0.0, 0.0, TCP_Z_M - 0.004], rgba=[0.12, 0.12, 0.14, 1.0], mass=0.05,
                  contype=_BIT_ROBOT, conaffinity=_BIT_WORLD, gap=CUP_TOUCH_M)
    # Wrist camera: beside the cup stem on the hand, looking along the tool (a camera looks along its
    # -z, the tool along the hand's +z: turned half a turn about x), tilted 20 degrees towards the cup.
    hand.add_camera(name="wrist", pos=[0.07, 0.0, 0.02], quat=_quat_from_euler_xyz(math.pi, math.radians(20), 0.0),
                    fovy=75.0)
    hand.add_site(name="tcp", pos=[0.0, 0.0, TCP_Z_M], size=[0.005, 0, 0], group=4)
    hand.add_site(name="ft_sensor", pos=[0.0, 0.0, 0.0], size=[0.01, 0, 0], group=4)
    spec.add_sensor(name="ft_force", type=mujoco.mjtSensor.mjSENS_FORCE, objtype=mujoco.mjtObj.mjOBJ_SITE,
                    objname="ft_sensor")
    spec.add_sensor(name="ft_torque", type=mujoco.mjtSensor.mjSENS_TORQUE, objtype=mujoco.mjtObj.mjOBJ_SITE,
                    objname="ft_sensor")
    for i, name in enumerate(params.joint_names):
        act = spec.add_actuator(name=name, target=name, trntype=mujoco.mjtTrn.mjTRN_JOINT)
        act.gaintype = mujoco.mjtGain.mjGAIN_FIXED
        act.biastype = mujoco.mjtBias.mjBIAS_AFFINE
        act.gainprm[0] = SERVO_KP[i]
        act.biasprm[:3] = [0.0, -SERVO_KP[i], -SERVO_KV[i]]
        act.forcelimited = mujoco.mjtLimited.mjLIMITED_TRUE
        act.forcerange = [-_TORQUE_LIMIT_NM[i], _TORQUE_LIMIT_NM[i]]
        act.ctrllimited = mujoco.mjtLimited.mjLIMITED_FALSE

    # --- world: floor, table, cube, target disc, lights, camera
    world = spec.worldbody
    world.add_geom(name="floor", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[3, 3, 0.1], pos=[0, 0, -0.75],
                   rgba=[0.55, 0.56, 0.58, 1], contype=0, conaffinity=0)
    world.add_geom(name="wall", type=mujoco.mjtGeom.mjGEOM_BOX, size=[0.02, 3, 1.5], pos=[-0.9, 0, 0.5],
                   rgba=[0.80, 0.82, 0.86, 1], contype=0, conaffinity=0)
    world.add_geom(name="wall_side", type=mujoco.mjtGeom.mjGEOM_BOX, size=[3, 0.02, 1.5], pos=[0, 1.2, 0.5],
                   rgba=[0.76, 0.78, 0.82, 1], contype=0, conaffinity=0)
    world.add_geom(name="table", type=mujoco.mjtGeom.mjGEOM_BOX, size=[0.6, 0.75, 0.02],
                   pos=[0.3, 0.0, TABLE_TOP_Z_M - 0.02], rgba=[0.69, 0.58, 0.44, 1],
                   contype=_BIT_WORLD, conaffinity=0)
    for x in (-0.25, 0.85):
        for y in (-0.7, 0.7):
            world.add_geom(type=mujoco.mjtGeom.mjGEOM_BOX, size=[0.03, 0.03, 0.355],
                           pos=[x, y, TABLE_TOP_Z_M - 0.395], rgba=[0.4, 0.33, 0.25, 1], contype=0, conaffinity=0)
    cube = world.add_body(name="cube", pos=[0.5, -0.15, TABLE_TOP_Z_M + CUBE_HALF_SIZE_M])
    cube.add_freejoint(name="cube_free")
    cube.add_geom(name="cube", type=mujoco.mjtGeom.mjGEOM_BOX, size=[CUBE_HALF_SIZE_M] * 3, mass=CUBE_MASS_KG,
                  rgba=list(SCENES["nominal"].cube_rgba), contype=_BIT_CUBE, conaffinity=_BIT_WORLD | _BIT_ROBOT,
                  friction=[1.0, 0.005, 0.0001], gap=CUBE_TOUCH_M)
    target = world.add_body(name="target", pos=[0.5, 0.15, TABLE_TOP_Z_M], mocap=True)
    target.add_geom(name="target_disc", type=mujoco.mjtGeom.mjGEOM_CYLINDER, size=[TARGET_RADIUS_M, 0.0006, 0],
                    pos=[0, 0, 0.0007], rgba=[0.9, 0.08, 0.08, 1], contype=0, conaffinity=0)
    world.add_light(name="key", type=mujoco.mjtLightType.mjLIGHT_DIRECTIONAL, dir=[-0.3, -0.2, -1.0],
                    diffuse=[0.75, 0.75, 0.75], specular=[0.2, 0.2, 0.2], castshadow=False)
    world.add_light(name="fill", type=mujoco.mjtLightType.mjLIGHT_DIRECTIONAL, dir=[-1.0, -0.5, -0.6],
                    diffuse=[0.35, 0.35, 0.35], specular=[0.0, 0.0, 0.0], castshadow=False)
    world.add_camera(name="scene", pos=list(_CAMERA_EYE_M),
                     quat=list(mc.look_at_quat(_CAMERA_EYE_M, _CAMERA_LOOK_AT_M)), fovy=_CAMERA_FOVY_DEG)
    spec.add_equality(name="suction", type=mujoco.mjtEq.mjEQ_WELD, objtype=mujoco.mjtObj.mjOBJ_BODY,
                      name1="hand", name2="cube", active=False, solref=[0.01, 1.0])
    spec.visual.headlight.ambient = [0.35, 0.35, 0.35]
    spec.visual.headlight.diffuse = [0.3, 0.3, 0.3]
    return spec


_MESH_CACHE: dict[tuple[str, str, float], tuple[np.ndarray, np.ndarray]] = {}


def _mesh_arrays(root: str, key: str, data: bytes, cell_m: float) -> tuple[np.ndarray, np.ndarray]:
    """(vertices (V, 3), faces (F, 3)) of one STL, decimated to ``cell_m`` if > 0 (cached:
    every simulator built in a process reuses them)."""
    cache_key = (root, key, cell_m)
    if cache_key not in _MESH_CACHE:
        vertices, faces = mc.read_stl(data)
        if cell_m > 0:
            vertices, faces = mc.cluster_decimate(vertices, faces, cell_m)
        _MESH_CACHE[cache_key] = (vertices, faces)
    return _MESH_CACHE[cache_key]


def _quat_from_euler_xyz(ax: float, ay: float, az: float) -> list[float]:
    """(w, x, y, z) of MuJoCo's default intrinsic x-y-z Euler angles (rad)."""
    quat = np.array([1.0, 0.0, 0.0, 0.0])
    for axis, angle in ((0, ax), (1, ay), (2, az)):
        q = np.zeros(4)
        q[0] = math.cos(angle / 2)
        q[1 + axis] = math.sin(angle / 2)
        out = np.zeros(4)
        mujoco.mju_mulQuat(out, quat, q)
        quat = out
    return quat.tolist()
