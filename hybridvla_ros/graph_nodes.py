"""The nodes of the graph, defined once: names, executables, and when each one runs.

``setup.py`` reads this file with :func:`runpy.run_path` to make one console script per
node, in colcon's build environment, where the package's own dependencies (rclpy, numpy,
yaml) may be missing: so it is plain data and imports only the standard library.
:func:`hybridvla_ros.launch_description.describe_graph` builds the launch description
(``ros2 launch`` and ``hybridvla run``) from it, and which nodes are restarted when they
die (all but those that end the graph: the safety filter); the parameter schemas are registered per
node name in :mod:`hybridvla_ros.params.registry`. A test checks that all of them agree.
"""
from __future__ import annotations

from typing import NamedTuple

PACKAGE = "hybridvla_ros"


class GraphNode(NamedTuple):
    """One node of the graph (its name is also its section in the parameter file)."""

    name: str                         # e.g. "sync"
    sim_only: bool = False            # runs only with the simulated robot
    human_in_loop_only: bool = False  # runs only with a human in the loop (handoff, corrections)
    ends_graph: bool = False          # its exit ends the graph; every other node is restarted when it dies

    @property
    def executable(self) -> str:
        """The console script, e.g. ``sync_node``."""
        return f"{self.name}_node"

    @property
    def module(self) -> str:
        """The Python module whose ``main()`` the console script calls."""
        return f"{PACKAGE}.nodes.{self.executable}"


# In data-flow order, the order they are launched in.
GRAPH_NODES: tuple[GraphNode, ...] = (
    GraphNode("sync"),
    GraphNode("inference"),
    GraphNode("action_buffer"),
    GraphNode("handoff", human_in_loop_only=True),
    GraphNode("safety_filter", ends_graph=True),  # the last word on every command: never run without it
    GraphNode("correction_recorder", human_in_loop_only=True),
    GraphNode("adaptation", human_in_loop_only=True),
    GraphNode("monitor", human_in_loop_only=True),
    GraphNode("sim_robot", sim_only=True),
    GraphNode("sim_operator", sim_only=True, human_in_loop_only=True),
)

NODE_NAMES: tuple[str, ...] = tuple(node.name for node in GRAPH_NODES)

# Nodes a ``hybridvla`` command starts on its own, beside a running graph (not launched with it).
TOOL_NODES: tuple[GraphNode, ...] = (
    GraphNode("demo_recorder"),  # hybridvla record: teleoperated demonstrations -> LeRobotDataset
)


def console_scripts() -> list[str]:
    """setuptools ``console_scripts`` entries, one per node: ``sync_node = hybridvla_ros.nodes.sync_node:main``."""
    return [f"{node.executable} = {node.module}:main" for node in (*GRAPH_NODES, *TOOL_NODES)]
