"""A node given a broken parameter file stops at start with a message naming the parameter."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from hybridvla_ros.launch_description import NodeSpec, default_config_dir

CONFIG = default_config_dir()

pytestmark = pytest.mark.ros


@pytest.mark.parametrize("node, section, name, value, expected", [
    ("safety_filter", "safety_filter", "max_force_n", -1.0, "safety_filter.max_force_n: -1.0 is below the minimum"),
    ("action_buffer", "/**", "max_velocity", [1.0, 1.0], "action_buffer.max_velocity: needs 7 values"),
    ("sync", "/**", "joint_names", None, "sync.joint_names: missing required parameter"),
    # rclpy cannot type an empty list: it used to crash the node with a traceback about PARAMETER_NOT_SET
    ("sync", "/**", "extra_cameras", [], "/**.extra_cameras: an empty list ([]) cannot be given to a ROS 2 node"),
])
def test_node_exits_with_clear_message(ros, tmp_path, node, section, name, value, expected) -> None:
    with open(os.path.join(CONFIG, "franka.yaml"), encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    if value is None:
        del doc[section]["ros__parameters"][name]
    else:
        doc[section]["ros__parameters"][name] = value
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(doc))
    spec = NodeSpec(f"{node}_node", node, str(path))
    proc = subprocess.run([sys.executable, "-m", spec.module, *spec.ros_arguments()], env=ros.env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("where", ["file", "overrides"])
def test_a_misspelt_safety_parameter_stops_the_node_and_names_the_right_one(ros, tmp_path, where) -> None:
    # The issue-13 defect: `watchdog_timeout` (the name ends in _s) used to leave the 0.2 s default in force.
    with open(os.path.join(CONFIG, "franka.yaml"), encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    section = doc["safety_filter"]["ros__parameters"]
    del section["watchdog_timeout_s"]
    if where == "file":
        section["watchdog_timeout"] = 0.05
        path = tmp_path / "typo.yaml"
        path.write_text(yaml.safe_dump(doc))
        spec = NodeSpec("safety_filter_node", "safety_filter", str(path))
        source = f"({path}, section safety_filter)"
    else:
        path = tmp_path / "base.yaml"
        path.write_text(yaml.safe_dump(doc))
        spec = NodeSpec("safety_filter_node", "safety_filter", str(path), {"watchdog_timeout": 0.05})
        source = f"({spec.overrides_file()}, section safety_filter)"
    proc = subprocess.run([sys.executable, "-m", spec.module, *spec.ros_arguments()], env=ros.env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert (f"[FATAL] bad parameter: safety_filter.watchdog_timeout: unknown parameter {source}; "
            "did you mean watchdog_timeout_s?") in proc.stderr
    assert "Traceback" not in proc.stderr
