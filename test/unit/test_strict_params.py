"""Strict parameter files: a key no schema knows stops the node and fails check-config, with a suggestion."""
from __future__ import annotations

import dataclasses
import os
import re

import pytest
import yaml

from hybridvla_ros.cli import main
from hybridvla_ros.launch_description import NodeSpec, default_config_dir, describe_graph, validate_graph
from hybridvla_ros.params import ParameterError, load_node_params
from hybridvla_ros.params.check import (
    ParameterIssue,
    check_parameter_file,
    load_node_schema,
    params_files,
    section_matches,
)
from hybridvla_ros.params.embodiment import EMBODIMENTS
from hybridvla_ros.params.registry import NODE_SCHEMAS
from hybridvla_ros.params.safety_filter import SafetyFilterParams

FRANKA = os.path.join(default_config_dir(), "franka.yaml")
SAFETY_PARAMETERS = [f.name for f in dataclasses.fields(SafetyFilterParams)]
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(SafetyFilterParams)}


def _drop_last(name: str) -> str:
    return name[:-1]


def _misspell(name: str) -> str:
    """A typo a person makes: the unit suffix left off (``watchdog_timeout``), else two letters swapped."""
    unitless = re.match(r"(.+)_(s|n|nm|hz)$", name)
    if unitless:
        return unitless.group(1)
    i = len(name) // 2
    while not (name[i].isalpha() and name[i + 1].isalpha() and name[i] != name[i + 1]):
        i += 1
    return name[:i] + name[i + 1] + name[i] + name[i + 2:]


def _franka_doc() -> dict:
    with open(FRANKA, encoding="utf-8") as f:
        return yaml.safe_load(f)


def _write(tmp_path, doc: dict, name: str = "franka_typo.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def _with_typo_in_safety_filter(tmp_path, name: str, typo: str) -> str:
    """franka.yaml with ``name`` written as ``typo`` in the safety_filter section."""
    doc = _franka_doc()
    section = doc["safety_filter"]["ros__parameters"]
    if name in section:  # the filter's own parameter: renamed, so the default (if any) would apply
        section[typo] = section.pop(name)
    elif name in doc["/**"]["ros__parameters"]:  # an embodiment limit: the typo sits next to the right one
        section[typo] = doc["/**"]["ros__parameters"][name]
    else:  # a parameter the file leaves at its default, meant to be set
        section[typo] = _DEFAULTS[name]
    return _write(tmp_path, doc)


def _node_load(schema: type, path: str, node: str, overrides: dict | None = None):
    """What a started node does: rcl's merged values plus the --params-file paths of its command line."""
    spec = NodeSpec(f"{node}_node", node, path, overrides or {})
    values = {**load_node_params(path, node), **(overrides or {}),
              "use_sim_time": False, "start_type_description_service": True}  # rclpy declares these itself
    argv = ["/usr/bin/python3", "-m", spec.module, *spec.ros_arguments()]
    return load_node_schema(schema, values, node, argv)


@pytest.mark.parametrize("make_typo", [_drop_last, _misspell], ids=["drop_last", "misspelling"])
@pytest.mark.parametrize("name", SAFETY_PARAMETERS)
def test_every_safety_parameter_typo_stops_the_node_with_a_suggestion(tmp_path, name, make_typo) -> None:
    typo = make_typo(name)
    assert typo not in SAFETY_PARAMETERS
    path = _with_typo_in_safety_filter(tmp_path, name, typo)
    with pytest.raises(ParameterError) as err:
        _node_load(SafetyFilterParams, path, "safety_filter")
    assert str(err.value) == (f"safety_filter.{typo}: unknown parameter ({path}, section safety_filter); "
                              f"did you mean {name}?")


@pytest.mark.parametrize("make_typo", [_drop_last, _misspell], ids=["drop_last", "misspelling"])
@pytest.mark.parametrize("name", SAFETY_PARAMETERS)
def test_every_safety_parameter_typo_fails_check_config_with_a_suggestion(tmp_path, name, make_typo) -> None:
    typo = make_typo(name)
    path = _with_typo_in_safety_filter(tmp_path, name, typo)
    expected = ParameterIssue("safety_filter", typo, f"unknown parameter ({path}, section safety_filter); "
                                                     f"did you mean {name}?")
    assert expected in check_parameter_file(path)


def test_the_issue_13_example_in_words(tmp_path, capsys) -> None:
    path = _with_typo_in_safety_filter(tmp_path, "watchdog_timeout_s", "watchdog_timeout")
    with pytest.raises(ParameterError, match=r"safety_filter\.watchdog_timeout: unknown parameter .*"
                                             r"did you mean watchdog_timeout_s\?"):
        _node_load(SafetyFilterParams, path, "safety_filter")
    assert main(["check-config", path]) == 2
    err = capsys.readouterr().err
    assert f"{path}: safety_filter.watchdog_timeout: unknown parameter" in err
    assert "did you mean watchdog_timeout_s?" in err


@pytest.mark.parametrize("node", list(NODE_SCHEMAS))
def test_a_shared_key_no_node_knows_stops_every_node(tmp_path, node) -> None:
    doc = _franka_doc()
    doc["/**"]["ros__parameters"]["max_velocty"] = [1.0] * 7
    path = _write(tmp_path, doc)
    with pytest.raises(ParameterError) as err:
        _node_load(NODE_SCHEMAS[node], path, node)
    assert str(err.value) == (f"/**.max_velocty: unknown parameter, declared by no node ({path}, section /**); "
                              "did you mean max_velocity?")


def test_a_shared_key_no_node_knows_is_reported_once_under_the_shared_section(tmp_path) -> None:
    doc = _franka_doc()
    doc["/**"]["ros__parameters"]["max_velocty"] = [1.0] * 7
    issues = check_parameter_file(_write(tmp_path, doc))
    assert [(i.section, i.name) for i in issues] == [("/**", "max_velocty")]


def test_a_shared_key_some_node_knows_is_fine_for_the_others(tmp_path) -> None:
    # max_skew_s belongs to sync and monitor; the safety filter ignores it in /**.
    doc = _franka_doc()
    doc["/**"]["ros__parameters"]["max_skew_s"] = 0.004
    path = _write(tmp_path, doc)
    assert _node_load(SafetyFilterParams, path, "safety_filter").watchdog_timeout_s == 0.2
    assert check_parameter_file(path) == []


def test_another_nodes_parameter_in_a_nodes_section_is_an_error(tmp_path) -> None:
    doc = _franka_doc()
    doc["safety_filter"]["ros__parameters"]["max_skew_s"] = 0.004
    path = _write(tmp_path, doc)
    message = f"safety_filter.max_skew_s: unknown parameter ({path}, section safety_filter); " \
              "it is a parameter of sync, monitor"
    with pytest.raises(ParameterError) as err:
        _node_load(SafetyFilterParams, path, "safety_filter")
    assert str(err.value) == message
    assert [str(i) for i in check_parameter_file(path)] == [message]


def test_every_unknown_key_of_a_node_is_one_line(tmp_path) -> None:
    doc = _franka_doc()
    section = doc["safety_filter"]["ros__parameters"]
    section["max_force"] = section.pop("max_force_n")
    section["watchdog_timeout"] = section.pop("watchdog_timeout_s")
    with pytest.raises(ParameterError) as err:
        _node_load(SafetyFilterParams, _write(tmp_path, doc), "safety_filter")
    lines = str(err.value).splitlines()
    assert [line.split(":")[0] for line in lines] == ["safety_filter.max_force", "safety_filter.watchdog_timeout"]


def test_overrides_are_checked_like_the_nodes_own_section(tmp_path) -> None:
    spec = NodeSpec("safety_filter_node", "safety_filter", FRANKA, {"watchdog_timeout": 0.05})
    with pytest.raises(ParameterError) as err:
        _node_load(SafetyFilterParams, FRANKA, "safety_filter", {"watchdog_timeout": 0.05})
    assert str(err.value) == (f"safety_filter.watchdog_timeout: unknown parameter ({spec.overrides_file()}, "
                              "section safety_filter); did you mean watchdog_timeout_s?")
    with pytest.raises(ParameterError, match=r"safety_filter\.watchdog_timeout: unknown parameter \(overrides\); "
                                             r"did you mean watchdog_timeout_s\?"):
        validate_graph([spec])
    # A key another node declares is no excuse in a node's own overrides.
    with pytest.raises(ParameterError, match=r"handoff\.seed: unknown parameter"):
        validate_graph(describe_graph("franka", overrides={"handoff": {"seed": 3}}))
    assert _node_load(SafetyFilterParams, FRANKA, "safety_filter",
                      {"watchdog_timeout_s": 0.05}).watchdog_timeout_s == 0.05


def test_a_key_from_the_command_line_is_checked_too() -> None:
    values = {**load_node_params(FRANKA, "safety_filter"), "velocity_scal": 0.5}
    argv = ["prog", "--ros-args", "--params-file", FRANKA, "-p", "velocity_scal:=0.5"]
    with pytest.raises(ParameterError) as err:
        load_node_schema(SafetyFilterParams, values, "safety_filter", argv)
    assert str(err.value) == "safety_filter.velocity_scal: unknown parameter (command line); " \
                             "did you mean velocity_scale?"


def test_ros_own_parameters_are_allowed_anywhere(tmp_path) -> None:
    doc = _franka_doc()
    doc["/**"]["ros__parameters"]["use_sim_time"] = True
    doc["safety_filter"]["ros__parameters"]["start_type_description_service"] = False
    doc["safety_filter"]["ros__parameters"]["qos_overrides"] = {
        "/action_command": {"subscription": {"depth": 5, "reliability": "reliable"}}}
    path = _write(tmp_path, doc)
    values = {**load_node_params(path, "safety_filter"), "qos_overrides./action_command.subscription.depth": 5,
              "qos_overrides./action_command.subscription.reliability": "reliable"}
    values.pop("qos_overrides")
    argv = ["prog", "--ros-args", "--params-file", path]
    assert load_node_schema(SafetyFilterParams, values, "safety_filter", argv).max_force_n == 40.0
    assert check_parameter_file(path) == []


@pytest.mark.parametrize("embodiment", EMBODIMENTS)
def test_shipped_files_pass_strict_checks(embodiment) -> None:
    path = os.path.join(default_config_dir(), f"{embodiment}.yaml")
    assert check_parameter_file(path) == []
    for node, schema in NODE_SCHEMAS.items():
        argv = ["prog", "--ros-args", "-r", f"__node:={node}", "--params-file", path]
        load_node_schema(schema, load_node_params(path, node), node, argv)
    validate_graph(describe_graph(embodiment, sim=True, checkpoint_path="/tmp/ckpt"))


def test_the_registry_has_a_schema_for_every_node_of_the_graph() -> None:
    assert [s.name for s in describe_graph("franka", sim=True)] == list(NODE_SCHEMAS)


def test_check_config_reports_every_error_under_its_section(tmp_path) -> None:
    doc = _franka_doc()
    shared = doc["/**"]["ros__parameters"]
    shared["max_velocity"] = [1.0, 2.0]                      # a bad shared value: /**, not sync.
    shared["home_postion"] = shared["home_position"]         # a shared key no node knows
    doc["safety_filter"]["ros__parameters"]["max_force_n"] = -1.0
    doc["safety_filter"]["ros__parameters"]["watchdog_timeout"] = 0.05
    doc["handoff"]["ros__parameters"]["pause_confidence"] = "low"
    doc["handof"] = {"ros__parameters": {"pause_confidence": 0.1}}   # a section that reaches no node
    path = _write(tmp_path, doc)
    got = [str(i) for i in check_parameter_file(path)]
    assert got == [
        f"/**.home_postion: unknown parameter, declared by no node ({path}, section /**); "
        "did you mean home_position?",
        "/**.max_velocity: needs 7 values (one per joint), got 2",
        "handoff.pause_confidence: expected a number, got 'low'",
        f"safety_filter.watchdog_timeout: unknown parameter ({path}, section safety_filter); "
        "did you mean watchdog_timeout_s?",
        "safety_filter.max_force_n: -1.0 is below the minimum 0.1",
        "handof: names no node (nodes: " + ", ".join(NODE_SCHEMAS) + "); did you mean handoff?",
    ]


def test_a_shared_value_only_some_nodes_refuse_names_them(tmp_path) -> None:
    doc = _franka_doc()
    doc["/**"]["ros__parameters"]["camera_rate_hz"] = 500.0   # fine for monitor, above sim_robot's 120
    del doc["sim_robot"]["ros__parameters"]["camera_rate_hz"]
    del doc["monitor"]["ros__parameters"]["camera_rate_hz"]
    assert [str(i) for i in check_parameter_file(_write(tmp_path, doc))] == [
        "/**.camera_rate_hz: 500.0 is above the maximum 120.0 (for sim_robot)"]


def test_a_missing_parameter_belongs_to_the_section_that_should_hold_it(tmp_path) -> None:
    doc = _franka_doc()
    del doc["/**"]["ros__parameters"]["action_dim"]
    del doc["safety_filter"]["ros__parameters"]["max_force_n"]
    issues = check_parameter_file(_write(tmp_path, doc))
    assert [(i.section, i.name) for i in issues] == [("/**", "action_dim"), ("safety_filter", "max_force_n")]


def test_check_config_cli_reports_several_errors_each_under_its_section(tmp_path, capsys) -> None:
    doc = _franka_doc()
    doc["/**"]["ros__parameters"]["control_rate_hz"] = -5.0
    doc["sync"]["ros__parameters"]["max_skew"] = 0.01
    doc["safety_filter"]["ros__parameters"]["watchdog_timeout"] = 0.05
    path = _write(tmp_path, doc)
    assert main(["check-config", path]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        f"{path}: /**.control_rate_hz: -5.0 is below the minimum 1.0",
        f"{path}: sync.max_skew: unknown parameter ({path}, section sync); did you mean max_skew_s?",
        f"{path}: safety_filter.watchdog_timeout: unknown parameter ({path}, section safety_filter); "
        "did you mean watchdog_timeout_s?",
        f"{path}: 3 errors",
    ]
    assert main(["check-config", FRANKA]) == 0
    assert capsys.readouterr().out.strip() == f"{FRANKA}: ok"


def test_params_files_come_from_the_ros_arguments_only() -> None:
    argv = ["prog", "--params-file", "not_ros.yaml", "--ros-args", "-r", "__node:=sync", "--params-file", "a.yaml",
            "-p", "x:=1", "--", "--params-file", "app.yaml", "--ros-args", "--params-file", "b.yaml"]
    assert params_files(argv) == ["a.yaml", "b.yaml"]


@pytest.mark.parametrize("section, fqn, applies", [
    ("/**", "/safety_filter", True), ("**", "/ns/safety_filter", True), ("safety_filter", "/safety_filter", True),
    ("/safety_filter", "/safety_filter", True), ("sync", "/safety_filter", False),
    ("/*/safety_filter", "/ns/safety_filter", True), ("/*/safety_filter", "/safety_filter", False),
])
def test_sections_apply_to_nodes_as_rcl_matches_them(section, fqn, applies) -> None:
    assert section_matches(section, fqn) is applies
