"""The node graph, described once for both ``ros2 launch`` and our own runner.

``launch_ros`` cannot be installed on machines without a ROS distribution, so the list
of nodes, their parameter files, overrides and remappings is plain data here: the launch
file turns it into ``launch_ros.actions.Node``s (:meth:`NodeSpec.launch_arguments`) and
``hybridvla run`` into processes (:class:`~hybridvla_ros.launcher.GraphLauncher`).

Node deaths: every node but the safety filter is restarted (``respawn``, after
``respawn_delay_s``); the safety filter's exit ends the graph (``ends_graph``: the launch
file shuts the launch down, our runner stops every node), since no command may reach the
robot unchecked.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

import yaml

from hybridvla_ros.graph_nodes import GRAPH_NODES, PACKAGE

RESPAWN_DELAY_S = 1.0  # wait this long before restarting a node that died (ros2 launch's respawn_delay)
from hybridvla_ros.params import ParameterError, load_node_params
from hybridvla_ros.params.check import (
    ParameterIssue,
    file_sources,
    merge_node_issues,
    node_issues,
    overrides_source,
    raise_if_any,
)
from hybridvla_ros.params.config_files import default_config_dir, embodiment_names
from hybridvla_ros.params.inference import ADAPTABLE_SOURCES
from hybridvla_ros.params.registry import NODE_SCHEMAS


@dataclass(frozen=True)
class NodeSpec:
    """One node of the graph, as ``ros2 launch`` would start it."""

    executable: str                                   # console script, e.g. "sync_node"
    name: str                                         # node name, e.g. "sync"
    params_file: str                                  # the embodiment's parameter file
    parameters: dict[str, Any] = field(default_factory=dict)     # -p overrides
    remappings: tuple[tuple[str, str], ...] = ()
    package: str = PACKAGE
    respawn: bool = True                              # restarted when it dies (False: its exit ends the graph)
    respawn_delay_s: float = RESPAWN_DELAY_S

    @property
    def ends_graph(self) -> bool:
        """Its exit ends the graph (it is not restarted)."""
        return not self.respawn

    @property
    def module(self) -> str:
        """Python module that holds the node's main()."""
        return f"{self.package}.nodes.{self.executable}"

    def ros_arguments(self) -> list[str]:
        """The ``--ros-args`` part of the command line that starts this node.

        Overrides go in a second parameter file under the node's own name: rcl files
        ``-p`` values under ``/**``, and a node's own section in the first file would
        win over them. (launch_ros does the same with dict parameters.)
        """
        args = ["--ros-args", "-r", f"__node:={self.name}", "--params-file", self.params_file]
        if self.parameters:
            args += ["--params-file", self.overrides_file()]
        for src, dst in self.remappings:
            args += ["-r", f"{src}:={dst}"]
        return args

    def launch_arguments(self) -> dict[str, Any]:
        """Keyword arguments of ``launch_ros.actions.Node`` for this node (the launch file's only input)."""
        args: dict[str, Any] = {
            "package": self.package, "executable": self.executable, "name": self.name, "output": "screen",
            "parameters": [self.params_file, dict(self.parameters)] if self.parameters else [self.params_file],
            "remappings": list(self.remappings), "respawn": self.respawn,
        }
        if self.respawn:
            args["respawn_delay"] = self.respawn_delay_s
        return args

    def node_values(self) -> dict[str, Any]:
        """The parameters this node starts with: its file's ``/**`` and own sections, then the overrides."""
        values = load_node_params(self.params_file, self.name)
        values.update(self.parameters)
        return values

    def overrides_file(self) -> str:
        """Write ``parameters`` as ``<name>: ros__parameters:`` YAML in the temp dir; returns its path."""
        text = yaml.safe_dump({self.name: {"ros__parameters": dict(self.parameters)}})
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        folder = os.path.join(tempfile.gettempdir(), "hybridvla_params")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"{self.name}_{digest}.yaml")
        if not os.path.isfile(path):
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, path)
        return path


def params_file_for(embodiment: str, config_dir: str | None = None) -> str:
    """Path of ``config/<embodiment>.yaml``; raises ParameterError for an unknown robot or missing file."""
    known = embodiment_names(config_dir)  # a robot is its parameter file
    if embodiment not in known:
        raise ParameterError(f"embodiment: {embodiment!r} is not one of {list(known)}")
    path = os.path.join(config_dir or default_config_dir(), f"{embodiment}.yaml")
    if not os.path.isfile(path):
        raise ParameterError(f"embodiment: parameter file {path!r} not found")
    return path


def describe_graph(embodiment: str = "franka", sim: bool = True, config_dir: str | None = None,
                   checkpoint_path: str | None = None, params_file: str | None = None,
                   human_in_loop: bool = True,
                   overrides: dict[str, dict[str, Any]] | None = None) -> list[NodeSpec]:
    """The nodes for one robot, in data-flow order (those of :data:`~hybridvla_ros.graph_nodes.GRAPH_NODES`
    that run with this ``sim`` and ``human_in_loop``).

    sync -> inference -> action_buffer -> handoff -> safety_filter -> robot, with the
    correction_recorder, the adaptation worker (it feeds new head weights to inference)
    and the monitor listening (and, when ``sim``, sim_robot as the robot and sim_operator as
    the person at the teleop device). Without ``human_in_loop`` the safety filter listens to
    the action buffer directly (``action_command`` remapped to ``policy_action``) and there is no handoff,
    recorder or monitor. A policy source that adaptation cannot change (``remote``, ``sim_expert``:
    not in ``ADAPTABLE_SOURCES``) gets no adaptation node; its corrections are still recorded.
    ``overrides`` maps a node name to parameters that replace the file's values. Topics are
    relative, so a namespace applies to all of them.
    """
    path = params_file or params_file_for(embodiment, config_dir)
    extra = {k: dict(v) for k, v in (overrides or {}).items()}
    if checkpoint_path:
        extra.setdefault("inference", {})["checkpoint_path"] = checkpoint_path
        if human_in_loop:
            extra.setdefault("adaptation", {})["checkpoint_path"] = checkpoint_path

    def spec(executable: str, name: str, remappings: tuple[tuple[str, str], ...], ends_graph: bool) -> NodeSpec:
        return NodeSpec(executable, name, path, extra.get(name, {}), remappings, respawn=not ends_graph)

    source = extra.get("inference", {}).get("policy_source")
    if source is None:
        source = load_node_params(path, "inference").get("policy_source", "builtin")
    nodes: list[NodeSpec] = []
    for node in GRAPH_NODES:
        if (node.sim_only and not sim) or (node.human_in_loop_only and not human_in_loop):
            continue
        if node.name == "adaptation" and source not in ADAPTABLE_SOURCES:
            extra.pop("adaptation", None)  # e.g. the checkpoint_path given to every node that reads one
            continue
        remappings: tuple[tuple[str, str], ...] = ()
        if node.name == "safety_filter" and not human_in_loop:  # no handoff between them
            remappings = (("action_command", "policy_action"),)
        nodes.append(spec(node.executable, node.name, remappings, node.ends_graph))
    unknown = set(extra) - {n.name for n in nodes}
    if unknown:
        raise ParameterError(f"overrides: no node named {sorted(unknown)} in this graph")
    return nodes


def safety_filter_input(nodes: list[NodeSpec]) -> str:
    """The topic the safety filter takes its actions from: ``action_command`` (from handoff), or what
    the graph remaps it to (``policy_action`` without a human in the loop)."""
    for spec in nodes:
        if spec.name == "safety_filter":
            return dict(spec.remappings).get("action_command", "action_command")
    return "action_command"


def validate_graph(nodes: list[NodeSpec]) -> None:
    """Check every node's parameters (file sections and overrides) before anything starts.

    Unknown keys (see :mod:`hybridvla_ros.params.check`) and bad values of every node, each
    once. Raises ParameterError with one line per problem, each naming its section
    (``/**`` or the node) and parameter.
    """
    per_node: dict[str, list[ParameterIssue]] = {}
    for spec in nodes:
        if spec.name not in NODE_SCHEMAS:
            raise ParameterError(f"{spec.name}: no parameter schema for this node; known: {list(NODE_SCHEMAS)}")
        sources = file_sources(spec.params_file, spec.name) + overrides_source(spec.name, spec.parameters)
        per_node[spec.name] = node_issues(NODE_SCHEMAS[spec.name], spec.name, sources)
    raise_if_any(merge_node_issues(per_node))
