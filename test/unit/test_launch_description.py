"""The one graph description that ros2 launch and `hybridvla run` share."""
from __future__ import annotations

import os
import sys

import pytest
import yaml

from hybridvla_ros.launch_description import describe_graph, params_file_for
from hybridvla_ros.launcher import GraphLauncher
from hybridvla_ros.params import ParameterError


def test_graph_with_and_without_the_simulated_robot() -> None:
    names = [s.name for s in describe_graph("franka", sim=True)]
    assert names == ["sync", "inference", "action_buffer", "handoff", "safety_filter",
                     "correction_recorder", "adaptation", "monitor", "sim_robot", "sim_operator"]
    assert "sim_robot" not in [s.name for s in describe_graph("aloha", sim=False)]
    autonomous = [s.name for s in describe_graph("leap", sim=False, human_in_loop=False)]
    assert autonomous == ["sync", "inference", "action_buffer", "safety_filter"]


def test_overrides_reach_the_named_node_only() -> None:
    specs = {s.name: s for s in describe_graph("franka", overrides={"handoff": {"pause_confidence": 0.0}})}
    assert specs["handoff"].parameters == {"pause_confidence": 0.0}
    assert specs["safety_filter"].parameters == {}
    with pytest.raises(ParameterError, match="no node named"):
        describe_graph("franka", sim=False, overrides={"sim_robot": {"seed": 1}})


def test_ros_arguments_carry_name_params_file_overrides_and_remaps() -> None:
    specs = {s.name: s for s in describe_graph("hello", sim=False, checkpoint_path="/tmp/ckpt",
                                               human_in_loop=False)}
    args = specs["inference"].ros_arguments()
    assert args[:3] == ["--ros-args", "-r", "__node:=inference"]
    assert args[args.index("--params-file") + 1].endswith(os.path.join("config", "hello.yaml"))
    files = [args[i + 1] for i, a in enumerate(args) if a == "--params-file"]
    assert len(files) == 2, "overrides come in a second, node-specific file"
    with open(files[1], encoding="utf-8") as f:
        assert yaml.safe_load(f) == {"inference": {"ros__parameters": {"checkpoint_path": "/tmp/ckpt"}}}
    # Until a handoff node sits between them, the safety filter listens to the buffer directly.
    assert "action_command:=policy_action" in specs["safety_filter"].ros_arguments()


def test_launcher_starts_each_node_as_its_own_python_module() -> None:
    spec = describe_graph("franka", sim=True)[0]
    cmd = GraphLauncher([spec]).command_for(spec)
    assert cmd[:3] == [sys.executable, "-m", "hybridvla_ros.nodes.sync_node"]


def test_unknown_embodiment_is_a_clear_error() -> None:
    with pytest.raises(ParameterError, match="'ur5' is not one of"):
        params_file_for("ur5")


def test_a_new_robot_is_its_parameter_file(tmp_path) -> None:
    """A robot the package has never heard of needs only its parameter file: the graph is described
    and every node's section validates (names checked, not looked up in a list in the code)."""
    from hybridvla_ros.launch_description import default_config_dir, validate_graph

    with open(os.path.join(default_config_dir(), "franka.yaml"), encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    doc["/**"]["ros__parameters"]["embodiment"] = "ur5"
    (tmp_path / "ur5.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    specs = describe_graph("ur5", sim=False, config_dir=str(tmp_path))
    assert specs[0].params_file == str(tmp_path / "ur5.yaml")
    validate_graph(specs)
    doc["/**"]["ros__parameters"]["embodiment"] = "UR 5"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    with pytest.raises(ParameterError, match="embodiment: 'UR 5' must be a lower-case name"):
        validate_graph(describe_graph("bad", sim=False, config_dir=str(tmp_path)))


def test_nodes_never_use_the_warn_alias() -> None:
    """rclpy's deprecated ``warn`` forwards to ``warning``, so every ``warn`` call in a process shares
    ONE throttle context: two call sites with different throttle periods crash the node
    ('Requested logging filters cannot be changed between calls')."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[2] / "hybridvla_ros"
    offenders = [f"{path.name}:{i}" for path in root.rglob("*.py")
                 for i, line in enumerate(path.read_text().splitlines(), 1)
                 if re.search(r"\b(get_logger\(\)|log|logger)\.warn\(", line)]
    assert offenders == []


def test_one_node_list_for_setup_launch_schemas_and_node_modules(monkeypatch) -> None:
    """hybridvla_ros.graph_nodes is the node list: setup.py's console scripts, the launch description,
    the parameter schemas and the node modules all agree with it."""
    import pathlib
    import runpy

    import setuptools

    from hybridvla_ros.graph_nodes import GRAPH_NODES, NODE_NAMES, TOOL_NODES
    from hybridvla_ros.params.registry import NODE_SCHEMAS

    root = pathlib.Path(__file__).resolve().parents[2]
    # Plain data: it runs on its own, with nothing of the package imported (as setup.py reads it).
    alone = runpy.run_path(str(root / "hybridvla_ros" / "graph_nodes.py"))
    assert alone["NODE_NAMES"] == NODE_NAMES and len(set(NODE_NAMES)) == len(NODE_NAMES) == 10

    captured: dict = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kwargs: captured.update(kwargs))
    monkeypatch.chdir(root)
    runpy.run_path(str(root / "setup.py"), run_name="__main__")
    scripts = dict(line.replace(" ", "").split("=") for line in captured["entry_points"]["console_scripts"])
    assert scripts.pop("hybridvla") == "hybridvla_ros.cli:main"
    names = [*NODE_NAMES, *(n.name for n in TOOL_NODES)]
    assert scripts == {f"{n}_node": f"hybridvla_ros.nodes.{n}_node:main" for n in names}

    node_files = {p.stem for p in (root / "hybridvla_ros" / "nodes").glob("*_node.py")}
    assert node_files == {n.executable for n in (*GRAPH_NODES, *TOOL_NODES)}, "a node module without an entry"
    for node in (*GRAPH_NODES, *TOOL_NODES):
        text = (root / "hybridvla_ros" / "nodes" / f"{node.executable}.py").read_text()
        assert "\ndef main(" in text, f"{node.executable} has no main()"

    assert tuple(NODE_SCHEMAS) == NODE_NAMES
    full = describe_graph("franka", sim=True)
    assert [(s.name, s.executable, s.module) for s in full] == [(n.name, n.executable, n.module) for n in GRAPH_NODES]


def test_every_node_but_the_safety_filter_is_respawned() -> None:
    """ros2 launch and our runner restart a node that dies, except the safety filter, whose exit ends the graph."""
    from hybridvla_ros.launch_description import RESPAWN_DELAY_S, safety_filter_input

    for human_in_loop in (True, False):
        specs = describe_graph("franka", sim=True, human_in_loop=human_in_loop)
        assert {s.name for s in specs if not s.respawn} == {"safety_filter"}
        assert [s.name for s in specs if s.ends_graph] == ["safety_filter"]
        for s in specs:
            args = s.launch_arguments()
            assert args["respawn"] is s.respawn
            assert args.get("respawn_delay") == (RESPAWN_DELAY_S if s.respawn else None)
            assert (args["package"], args["executable"], args["name"]) == ("hybridvla_ros", s.executable, s.name)
            assert args["remappings"] == list(s.remappings)
    assert safety_filter_input(describe_graph("franka", sim=True)) == "action_command"
    assert safety_filter_input(describe_graph("franka", sim=False, human_in_loop=False)) == "policy_action"
    spec = describe_graph("franka", overrides={"handoff": {"pause_confidence": 0.5}})[3]
    assert spec.launch_arguments()["parameters"] == [spec.params_file, {"pause_confidence": 0.5}]


def test_launch_file_respawns_nodes_and_shuts_down_with_the_safety_filter(monkeypatch) -> None:
    """The launch file itself, with stand-ins for launch and launch_ros (not installable here): each node
    gets launch_arguments(), and only the safety filter's exit is tied to a Shutdown."""
    import collections
    import pathlib
    import runpy
    import types

    made: dict[str, list] = collections.defaultdict(list)

    def recorder(kind: str):
        class Action:
            def __init__(self, *args, **kwargs) -> None:
                self.args, self.kwargs = args, kwargs
                made[kind].append(self)
        return Action

    class Config:
        values = {"embodiment": "aloha", "sim": "true", "checkpoint_path": "", "params_file": ""}

        def __init__(self, name: str) -> None:
            self.name = name

        def perform(self, _context) -> str:
            return self.values[self.name]

    fakes = {
        "launch": {"LaunchDescription": recorder("LaunchDescription")},
        "launch.actions": {"DeclareLaunchArgument": recorder("Declare"), "OpaqueFunction": recorder("Opaque"),
                           "RegisterEventHandler": recorder("Register"), "Shutdown": recorder("Shutdown")},
        "launch.event_handlers": {"OnProcessExit": recorder("OnProcessExit")},
        "launch.substitutions": {"LaunchConfiguration": Config},
        "launch_ros": {}, "launch_ros.actions": {"Node": recorder("Node")},
    }
    for name, attrs in fakes.items():
        monkeypatch.setitem(sys.modules, name, types.SimpleNamespace(**attrs))
    path = pathlib.Path(__file__).resolve().parents[2] / "launch" / "hybridvla.launch.py"
    module = runpy.run_path(str(path))
    actions = module["_nodes"](None)
    specs = describe_graph("aloha", sim=True)
    assert [n.kwargs for n in made["Node"]] == [s.launch_arguments() for s in specs]
    assert len(made["OnProcessExit"]) == 1 and len(actions) == len(specs) + 1
    handler = made["OnProcessExit"][0].kwargs
    assert handler["target_action"].kwargs["name"] == "safety_filter"
    assert handler["on_exit"] == made["Shutdown"] and "safety_filter exited" in made["Shutdown"][0].kwargs["reason"]


@pytest.mark.parametrize("source, adapts", [("builtin", True), ("checkpoint", True), ("remote", False),
                                            ("sim_expert", False)])
def test_only_an_adaptable_policy_source_gets_an_adaptation_node(source: str, adapts: bool) -> None:
    """Issue 14, item 7: with a policy adaptation cannot change, corrections are recorded for offline
    training and no adaptation node is started (it would die without a checkpoint of ours)."""
    nodes = describe_graph("franka", sim=True, checkpoint_path="/tmp/ckpt",
                           overrides={"inference": {"policy_source": source}})
    names = [n.name for n in nodes]
    assert ("adaptation" in names) == adapts and "correction_recorder" in names


def test_adaptable_sources_agree_with_the_policies_own_declaration() -> None:
    from hybridvla_ros.params.inference import ADAPTABLE_SOURCES
    from hybridvla_ros.policies.builtin import BuiltinPolicy
    from hybridvla_ros.policies.remote import RemotePolicy
    from hybridvla_ros.policies.sim_expert import SimExpertPolicy

    declared = {"builtin": BuiltinPolicy.adaptable, "remote": RemotePolicy.adaptable,
                "sim_expert": SimExpertPolicy.adaptable}
    assert {name for name, adaptable in declared.items() if adaptable} == set(ADAPTABLE_SOURCES) - {"checkpoint"}
