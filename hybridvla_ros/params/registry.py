"""Which schema each node of the graph validates its parameters with (node name -> schema class).

The one registry of node schemas: the graph check before start
(:func:`hybridvla_ros.launch_description.validate_graph`), ``hybridvla check-config`` and
the strict-key checks (:mod:`hybridvla_ros.params.check`, a ``/**`` key must belong to at
least one node) all read it. A new node adds its schema here.
"""
from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from hybridvla_ros.params.action_buffer import ActionBufferParams
from hybridvla_ros.params.adaptation import AdaptationParams
from hybridvla_ros.params.correction_recorder import CorrectionRecorderParams
from hybridvla_ros.params.demo_recorder import DemoRecorderParams
from hybridvla_ros.params.embodiment import EmbodimentParams
from hybridvla_ros.params.handoff import HandoffParams
from hybridvla_ros.params.inference import InferenceParams
from hybridvla_ros.params.monitor import MonitorParams
from hybridvla_ros.params.safety_filter import SafetyFilterParams
from hybridvla_ros.params.sim_operator import SimOperatorParams
from hybridvla_ros.params.sim_robot import SimRobotParams
from hybridvla_ros.params.sync import SyncParams

# In data-flow order, the order check-config reports sections in.
NODE_SCHEMAS: Mapping[str, type[EmbodimentParams]] = MappingProxyType({
    "sync": SyncParams,
    "inference": InferenceParams,
    "action_buffer": ActionBufferParams,
    "handoff": HandoffParams,
    "safety_filter": SafetyFilterParams,
    "correction_recorder": CorrectionRecorderParams,
    "adaptation": AdaptationParams,
    "monitor": MonitorParams,
    "sim_robot": SimRobotParams,
    "sim_operator": SimOperatorParams,
})

# Nodes a hybridvla command starts beside the graph (graph_nodes.TOOL_NODES): their sections belong in the
# same parameter file, and ``hybridvla check-config`` checks them with the graph's.
TOOL_SCHEMAS: Mapping[str, type[EmbodimentParams]] = MappingProxyType({
    "demo_recorder": DemoRecorderParams,
})
ALL_SCHEMAS: Mapping[str, type[EmbodimentParams]] = MappingProxyType({**NODE_SCHEMAS, **TOOL_SCHEMAS})
