"""Parameter files: every embodiment's file is valid for every node; broken ones fail clearly."""
from __future__ import annotations

import os
import textwrap

import pytest
import yaml

from hybridvla_ros.launch_description import NodeSpec, validate_graph
from hybridvla_ros.params import ParameterError, from_params, load_node_params
from hybridvla_ros.params.embodiment import EMBODIMENTS, EmbodimentParams
from hybridvla_ros.params.registry import NODE_SCHEMAS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "config")
SCHEMAS = NODE_SCHEMAS
EXPECTED = {"franka": (7, "coarse_to_fine", "trajectory_msgs/JointTrajectory"),
            "aloha": (14, "coarse_to_fine", "std_msgs/Float64MultiArray"),
            "hello": (3, "flow", "geometry_msgs/Twist"),
            "leap": (24, "coarse_to_fine", "std_msgs/Float64MultiArray")}


@pytest.mark.parametrize("embodiment", EMBODIMENTS)
@pytest.mark.parametrize("node", sorted(SCHEMAS))
def test_every_embodiment_file_is_valid_for_every_node(embodiment: str, node: str) -> None:
    p = from_params(SCHEMAS[node], load_node_params(os.path.join(CONFIG, f"{embodiment}.yaml"), node), node)
    dim, head, command_type = EXPECTED[embodiment]
    assert (p.action_dim, p.head_type, p.command_type) == (dim, head, command_type)
    assert len(p.joint_names) == dim and p.embodiment == embodiment


@pytest.mark.parametrize("embodiment", EMBODIMENTS)
def test_arrays_are_homogeneous_for_rcl(embodiment: str) -> None:
    # rcl's YAML parser rejects [0, 1.5]: every number of a double array must be written as a float.
    with open(os.path.join(CONFIG, f"{embodiment}.yaml"), encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    for section in doc.values():
        for name, value in section["ros__parameters"].items():
            if isinstance(value, list) and value and not isinstance(value[0], str):
                assert all(isinstance(v, float) for v in value), f"{embodiment}: {name} mixes ints and floats"


def _write(tmp_path, body: str) -> str:
    path = tmp_path / "robot.yaml"
    path.write_text(textwrap.dedent(body))
    return str(path)


def _franka_with(tmp_path, **changes) -> str:
    with open(os.path.join(CONFIG, "franka.yaml"), encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    for key, value in changes.items():
        section, name = key.split("__")
        section = "/**" if section == "all" else section
        if value is None:
            del doc[section]["ros__parameters"][name]
        else:
            doc[section]["ros__parameters"][name] = value
    path = tmp_path / "franka_broken.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


@pytest.mark.parametrize("changes, node, message", [
    ({"all__action_dim": None}, "sync", "sync.action_dim: missing required parameter"),
    ({"all__control_rate_hz": -5.0}, "action_buffer", "action_buffer.control_rate_hz: -5.0 is below the minimum"),
    ({"all__max_velocity": [1.0, 2.0]}, "safety_filter", "safety_filter.max_velocity: needs 7 values"),
    ({"all__head_type": "diffusion"}, "inference", "inference.head_type: 'diffusion' is not one of"),
    ({"all__position_min": [3.0] * 7}, "safety_filter", "safety_filter.position_min: panda_joint1 has min 3.0"),
    ({"safety_filter__max_force_n": "forty"}, "safety_filter",
     "safety_filter.max_force_n: expected a number, got 'forty'"),
    ({"safety_filter__max_force_n": None}, "safety_filter", "safety_filter.max_force_n: missing required parameter"),
    ({"all__recompute_every": 99}, "inference", "inference.recompute_every: 99 is more than chunk_size 16"),
    ({"all__command_type": "std_msgs/String"}, "safety_filter", "safety_filter.command_type: 'std_msgs/String'"),
    ({"all__home_position": [9.0] * 7}, "sim_robot", "sim_robot.home_position: panda_joint1=9.0 is outside"),
])
def test_broken_parameter_file_names_the_parameter(tmp_path, changes, node, message) -> None:
    path = _franka_with(tmp_path, **changes)
    with pytest.raises(ParameterError) as err:
        from_params(SCHEMAS[node], load_node_params(path, node), node)
    assert message in str(err.value)


def test_missing_file_and_bad_yaml_fail_clearly(tmp_path) -> None:
    with pytest.raises(ParameterError, match="not found"):
        load_node_params(tmp_path / "nope.yaml", "sync")
    with pytest.raises(ParameterError, match="not valid YAML"):
        load_node_params(_write(tmp_path, "a: [1, 2\n"), "sync")
    with pytest.raises(ParameterError, match="ros__parameters"):
        load_node_params(_write(tmp_path, "sync:\n  embodiment: franka\n"), "sync")


def test_node_section_overrides_the_wildcard(tmp_path) -> None:
    path = _write(tmp_path, """
        /**:
          ros__parameters: {a: 1, b: 2}
        sync:
          ros__parameters: {b: 3}
        """)
    assert load_node_params(path, "sync") == {"a": 1, "b": 3}
    assert load_node_params(path, "inference") == {"a": 1, "b": 2}


def test_validate_graph_stops_before_start_on_a_broken_file(tmp_path) -> None:
    path = _franka_with(tmp_path, safety_filter__watchdog_timeout_s=100.0)
    specs = [NodeSpec("sync_node", "sync", path), NodeSpec("safety_filter_node", "safety_filter", path)]
    with pytest.raises(ParameterError, match="safety_filter.watchdog_timeout_s: 100.0 is above the maximum"):
        validate_graph(specs)


def test_embodiment_params_control_period() -> None:
    p = from_params(EmbodimentParams, load_node_params(os.path.join(CONFIG, "hello.yaml"), "sync"))
    assert p.control_period_s == pytest.approx(0.05)
