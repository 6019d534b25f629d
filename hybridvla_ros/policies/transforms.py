"""Between the robot and a policy: what the robot reports, in the policy's terms, and back.

openpi keeps per-robot input/output transforms outside the model so the model never knows
which robot it drives; this is that seam. :class:`RobotObservation` is what the robot
reports (the sync node's Observation without ROS: every joint by the driver's name, images
by camera); a :class:`RobotTransform` turns it into the :class:`PolicyObservation` a policy
reads and turns the policy's chunk back into the robot's joint order.
:class:`JointTransform` is all our two sources need: joints picked by name
(:func:`hybridvla_ros.core.joints.select_joints`, one rule everywhere), the cameras the
policy reads, the parameter file's instruction when the observation carries none. A source
that speaks another dialect (a remote server's dict, relative actions, other gripper units)
adds its own transform here. :class:`PolicyRequirements` says whether a policy fits the
robot at all, before it is served. numpy only, ROS-free.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from hybridvla_ros.core.joints import JointSelectionError, select_joints
from hybridvla_ros.policies.base import Policy, PolicyChunk, PolicyInputError, PolicyObservation


@dataclass(frozen=True)
class RobotObservation:
    """One synchronized observation as the robot reports it: joints in the driver's order (names
    and values parallel, extra joints allowed), decoded (H, W, 3) uint8 RGB images by camera."""

    stamp_s: float
    joint_names: Sequence[str]
    joint_positions: Sequence[float]                                 # a list, an array.array or a (N,) array
    task: str = ""                                                   # "" : the parameter file's instruction
    images: Mapping[str, np.ndarray] = field(default_factory=dict)


class RobotTransform(Protocol):
    """Maps one robot's observations into a policy's terms and the policy's chunks back."""

    def to_policy(self, obs: RobotObservation, policy: Policy) -> PolicyObservation:
        """``obs`` as ``policy`` reads it; PolicyInputError when something it reads is missing or bad."""

    def to_robot(self, chunk: PolicyChunk, policy: Policy) -> PolicyChunk:
        """``chunk`` (from ``policy``) in the robot's action order; ValueError when it does not fit."""


class JointTransform:
    """The robot and the policy share joint names; only the order may differ.

    ``robot_joint_names`` is the robot's action order (the parameter file's ``joint_names``);
    ``default_task`` stands in for an observation without an instruction.
    """

    def __init__(self, robot_joint_names: Sequence[str], default_task: str) -> None:
        self.robot_joint_names = tuple(robot_joint_names)
        self.default_task = default_task

    def to_policy(self, obs: RobotObservation, policy: Policy) -> PolicyObservation:
        """The policy's joints (then its state joints) picked by name, the cameras it reads, the task."""
        joints, state_joints = tuple(policy.joint_names), tuple(policy.state_joints)
        try:
            observed = select_joints(obs.joint_names, obs.joint_positions, (*joints, *state_joints))  # (D + E,)
        except JointSelectionError as exc:
            raise PolicyInputError(str(exc)) from None
        images = {camera: self._image(obs, camera) for camera in policy.cameras}
        return PolicyObservation(stamp_s=obs.stamp_s, joint_names=joints, joint_positions=observed[:len(joints)],
                                 task=obs.task or self.default_task, images=images,
                                 state_joints=state_joints, state=observed[len(joints):])

    @staticmethod
    def _image(obs: RobotObservation, camera: str) -> np.ndarray:
        try:
            return obs.images[camera]
        except KeyError:
            raise PolicyInputError(f"images: the policy reads camera {camera!r}, the observation has "
                                   f"{sorted(obs.images)}") from None

    def to_robot(self, chunk: PolicyChunk, policy: Policy) -> PolicyChunk:
        """``chunk``'s columns reordered from the policy's joint order to the robot's (the same chunk
        when the orders agree); ValueError when the policy's joints are not the robot's."""
        names = tuple(policy.joint_names)
        if chunk.action_dim != len(names):
            raise ValueError(f"actions: {chunk.action_dim} values per action, the policy drives {len(names)} "
                             f"joints {list(names)}")
        if names == self.robot_joint_names:
            return chunk
        if sorted(names) != sorted(self.robot_joint_names):
            raise ValueError(f"joint_names: the policy drives {list(names)}, the robot {list(self.robot_joint_names)}")
        order = [names.index(n) for n in self.robot_joint_names]
        return PolicyChunk(actions=chunk.actions[:, order], start_s=chunk.start_s,  # (T, D) in the robot's order
                           step_period_s=chunk.step_period_s, confidence=chunk.confidence,
                           latency_s=chunk.latency_s, head_type=chunk.head_type, model_version=chunk.model_version)


class PolicyMismatch(ValueError):
    """A policy does not fit the robot; ``field`` is the parameter it contradicts."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class PolicyRequirements:
    """What one robot's graph needs of any policy it serves (from the parameter file).

    ``state_joints`` are the observed-only joints the driver reports; a policy may read any
    of them, not others. ``chunk_size`` None accepts any chunk length.
    """

    embodiment: str
    joint_names: tuple[str, ...]
    state_joints: tuple[str, ...] = ()
    chunk_size: int | None = None

    def check(self, policy: Policy, source: str) -> None:
        """Raise PolicyMismatch naming the parameter ``policy`` (loaded from ``source``) contradicts."""
        if policy.action_dim != len(self.joint_names):
            raise PolicyMismatch("checkpoint_path", f"head for {self.embodiment} has action_dim {policy.action_dim}, "
                                                    f"the parameter file says {len(self.joint_names)}")
        if self.chunk_size is not None and policy.chunk_size != self.chunk_size:
            raise PolicyMismatch("checkpoint_path", f"head for {self.embodiment} has chunk_size {policy.chunk_size}, "
                                                    f"the parameter file says {self.chunk_size}")
        if sorted(policy.joint_names) != sorted(self.joint_names):
            raise PolicyMismatch("joint_names", f"the policy in {source!r} drives {list(policy.joint_names)}, the "
                                                f"parameter file names {list(self.joint_names)}")
        unlisted = [j for j in policy.state_joints if j not in self.state_joints]
        if unlisted:
            raise PolicyMismatch(
                "state_joints", f"the policy in {source!r} observes {unlisted} for {self.embodiment}, which "
                                f"state_joints {list(self.state_joints)} does not list (the driver must report them "
                                "in joint_states and the parameter file name them)")

    def unused_state_joints(self, policy: Policy) -> list[str]:
        """The listed state joints ``policy`` does not read (an older checkpoint)."""
        return [j for j in self.state_joints if j not in policy.state_joints]
