"""`hybridvla run`'s process launcher: when one node dies, the whole graph stops, nothing is left behind."""
from __future__ import annotations

import os

import pytest
import yaml

from hybridvla_ros.launch_description import NodeSpec, default_config_dir
from hybridvla_ros.launcher import GraphLauncher, NodeDied

pytestmark = pytest.mark.ros


def test_a_dying_node_stops_the_graph(ros, tmp_path) -> None:
    good = os.path.join(default_config_dir(), "franka.yaml")
    with open(good, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    doc["action_buffer"]["ros__parameters"]["blend_steps"] = -3  # this node will refuse to start
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    launcher = GraphLauncher([NodeSpec("safety_filter_node", "safety_filter", good),
                              NodeSpec("action_buffer_node", "action_buffer", str(bad))],
                             env=ros.env, log_dir=str(tmp_path / "logs"))
    launcher.start()
    try:
        with pytest.raises(NodeDied, match="action_buffer exited with code 2"):
            launcher.wait(None)
    finally:
        codes = launcher.stop(timeout_s=5.0)
    assert codes["action_buffer"] == 2
    assert all(p.poll() is not None for p in launcher.procs.values()), "every node process is gone"
    # The healthy node was stopped with SIGINT and shut down cleanly.
    assert codes["safety_filter"] in (0, -2)
    assert "blend_steps" in (tmp_path / "logs" / "action_buffer.log").read_text()
