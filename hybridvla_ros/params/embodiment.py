"""What every node knows about the robot: the ``/**`` section of ``config/<robot>.yaml``."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import numpy as np

from hybridvla_ros.params.base import ParameterError, param

# The robots shipped with simulators and scripted experts: the defaults of training, studies
# and benchmarks. The graph itself takes any robot that has a parameter file
# (config/<robot>.yaml, see params.config_files.embodiment_names): no list names it.
EMBODIMENTS = ("franka", "aloha", "hello", "leap")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_CAMERA_NAME = re.compile(r"^[A-Za-z0-9_]+$")
COMMAND_TYPES = (
    "trajectory_msgs/JointTrajectory",   # ros2_control joint_trajectory_controller
    "std_msgs/Float64MultiArray",        # ros2_control forward_command_controller
    "geometry_msgs/Twist",               # a mobile base's cmd_vel
)


@dataclass(frozen=True, kw_only=True)
class EmbodimentParams:
    """The robot: joints, action space, rates, limits and the driver's topics."""

    # --- identity and action space
    embodiment: str = param("robot name (its parameter file's name: config/<embodiment>.yaml); selects the policy head")
    joint_names: tuple[str, ...] = param("joints as the robot's driver names them, in action order", min_len=1)
    action_dim: int = param("length of one action (equals len(joint_names))", min=1, max=64)
    state_joints: tuple[str, ...] = param(
        "joints the driver reports in joint_states that the policy observes but does not command "
        "(e.g. a suction cup's vacuum: 1 holding, 0 not); empty: none", ())
    head_type: Literal["token", "flow", "coarse_to_fine", "routed"] = param(
        "policy head mode: token (fast, coarse), flow, coarse_to_fine (token chunk refined by flow), or routed "
        "(a learned router refines only where it helps)")
    instruction: str = param("language instruction given to the policy", "reach the target")
    # --- timing
    control_rate_hz: float = param("rate of commands to the robot", min=1.0, max=1000.0)
    chunk_size: int = param("actions per chunk the policy predicts", min=1, max=1024)
    recompute_every: int = param("control periods a chunk is recycled before the next inference", min=1)
    # --- limits from the robot's specifications (cite them in the parameter file)
    position_min: tuple[float, ...] = param("lower joint / workspace bound per action dim (rad or m)")
    position_max: tuple[float, ...] = param("upper joint / workspace bound per action dim (rad or m)")
    max_velocity: tuple[float, ...] = param("max speed per action dim (rad/s or m/s)", min=1e-6)
    max_acceleration: tuple[float, ...] = param("max acceleration per action dim (rad/s^2 or m/s^2)", min=1e-6)
    home_position: tuple[float, ...] = param("a safe start configuration (rad or m)")
    # --- the driver's interface
    camera_topic: str = param("sensor_msgs/Image topic (CompressedImage on <topic>/compressed)", "camera/image_raw")
    camera_name: str = param(
        "the name of camera_topic's camera, the anchor every observation is stamped by (policies read cameras by "
        "name; a recording's observation.images.<camera_name>)", "camera")
    extra_cameras: tuple[str, ...] = param(
        "the robot's other cameras, as name=topic (e.g. wrist=wrist_camera/color/image_raw): each observation "
        "carries the nearest frame of each (sync's max_camera_skew_s) besides camera_topic's", ())
    joint_states_topic: str = param("sensor_msgs/JointState topic", "joint_states")
    wrench_topic: str = param("geometry_msgs/WrenchStamped topic, '' if the robot has no F/T sensor", "")
    command_topic: str = param("topic of the robot's controller")
    command_type: str = param("message type the controller takes", choices=COMMAND_TYPES)

    def __post_init__(self) -> None:
        if not _NAME.match(self.embodiment):
            raise ParameterError(f"embodiment: {self.embodiment!r} must be a lower-case name "
                                 "([a-z][a-z0-9_]*, the parameter file's name)")
        if len(self.joint_names) != self.action_dim:
            raise ParameterError(
                f"joint_names: {len(self.joint_names)} names but action_dim is {self.action_dim}")
        if len(set(self.joint_names)) != len(self.joint_names):
            raise ParameterError(f"joint_names: duplicate names in {list(self.joint_names)}")
        if len(set(self.state_joints)) != len(self.state_joints) or not all(self.state_joints):
            raise ParameterError(f"state_joints: names must be non-empty and unique, got {list(self.state_joints)}")
        commanded = sorted(set(self.state_joints) & set(self.joint_names))
        if commanded:
            raise ParameterError(f"state_joints: {commanded} are commanded joints (in joint_names); "
                                 "state_joints are observed only")
        for name in ("position_min", "position_max", "max_velocity", "max_acceleration", "home_position"):
            if len(getattr(self, name)) != self.action_dim:
                raise ParameterError(
                    f"{name}: needs {self.action_dim} values (one per joint), got {len(getattr(self, name))}")
        lo, hi = np.asarray(self.position_min), np.asarray(self.position_max)
        if np.any(lo >= hi):
            i = int(np.argmax(lo >= hi))
            raise ParameterError(
                f"position_min: {self.joint_names[i]} has min {lo[i]} >= max {hi[i]}")
        home = np.asarray(self.home_position)
        if np.any(home < lo) or np.any(home > hi):
            i = int(np.argmax((home < lo) | (home > hi)))
            raise ParameterError(
                f"home_position: {self.joint_names[i]}={home[i]} is outside [{lo[i]}, {hi[i]}]")
        self._check_cameras()
        if self.recompute_every > self.chunk_size:
            raise ParameterError(
                f"recompute_every: {self.recompute_every} is more than chunk_size {self.chunk_size}; "
                "the buffer would run dry before the next chunk")

    def _check_cameras(self) -> None:
        if not _CAMERA_NAME.match(self.camera_name):
            raise ParameterError(f"camera_name: must be a plain name ([A-Za-z0-9_]+), got {self.camera_name!r}")
        names = [self.camera_name]
        for entry in self.extra_cameras:
            name, sep, topic = entry.partition("=")
            if not sep or not topic.strip() or not _CAMERA_NAME.match(name):
                raise ParameterError(f"extra_cameras: {entry!r} is not name=topic with a plain name "
                                     "([A-Za-z0-9_]+), e.g. wrist=wrist_camera/color/image_raw")
            names.append(name)
        if len(set(names)) != len(names):
            raise ParameterError(f"extra_cameras: camera names must be unique (camera_name first), got {names}")
        topics = [self.camera_topic, *(e.partition("=")[2].strip() for e in self.extra_cameras)]
        if len(set(topics)) != len(topics):
            raise ParameterError(f"extra_cameras: each camera needs its own topic, got {topics}")

    @property
    def cameras(self) -> dict[str, str]:
        """Camera name -> image topic: camera_name's (the anchor) first, then extra_cameras in order."""
        extra = (e.partition("=") for e in self.extra_cameras)
        return {self.camera_name: self.camera_topic, **{name: topic.strip() for name, _, topic in extra}}

    @property
    def velocity_base(self) -> bool:
        """Whether the controller takes a velocity (a mobile base's Twist) rather than position targets."""
        return self.command_type == "geometry_msgs/Twist"

    @property
    def observed_joints(self) -> tuple[str, ...]:
        """Every joint the policy reads from joint_states: joint_names, then state_joints."""
        return tuple(self.joint_names) + tuple(self.state_joints)

    @property
    def control_period_s(self) -> float:
        """Seconds between two commands."""
        return 1.0 / self.control_rate_hz
