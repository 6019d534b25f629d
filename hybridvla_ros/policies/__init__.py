"""Policies: the declared ``Policy`` protocol and its sources, registered by name.

- :mod:`.base`: the protocol and its data (:class:`PolicyObservation` in,
  :class:`PolicyChunk` out), numpy only.
- :mod:`.transforms`: the robot's observation in a policy's terms and the chunk back
  (per-robot input/output transforms), and whether a policy fits the robot.
- :mod:`.registry`: ``register_policy`` / ``make_policy`` by name (``policy_source``).
- :mod:`.swap`: :class:`PolicySlot`, weight swap and rollback between two calls.
- sources: :mod:`.builtin` (our model: torch, onnx, int8-ort), :mod:`.sim_expert`
  (the simulated robot's scripted expert) and :mod:`.remote` (a policy server over openpi's
  websocket protocol: ``hybridvla serve``, an openpi server). Importing this package registers them.

A new source is one module here that implements the protocol and registers a factory,
its import below, its name among ``params/inference.py``'s ``policy_source`` choices, and tests.
"""
from hybridvla_ros.policies import builtin, remote, sim_expert
from hybridvla_ros.policies.base import (
    DEFAULT_CAMERA,
    Policy,
    PolicyChunk,
    PolicyInputError,
    PolicyObservation,
)
from hybridvla_ros.policies.registry import (
    UnknownPolicySource,
    get_policy_factory,
    make_policy,
    policy_names,
    register_policy,
)
from hybridvla_ros.policies.swap import PolicySlot, ServedPolicy, UpdateRefused
from hybridvla_ros.policies.transforms import (
    JointTransform,
    PolicyMismatch,
    PolicyRequirements,
    RobotObservation,
    RobotTransform,
)

__all__ = [
    "DEFAULT_CAMERA",
    "JointTransform",
    "Policy",
    "PolicyChunk",
    "PolicyInputError",
    "PolicyMismatch",
    "PolicyObservation",
    "PolicyRequirements",
    "PolicySlot",
    "RobotObservation",
    "RobotTransform",
    "ServedPolicy",
    "UnknownPolicySource",
    "UpdateRefused",
    "builtin",
    "get_policy_factory",
    "make_policy",
    "policy_names",
    "register_policy",
    "remote",
    "sim_expert",
]
