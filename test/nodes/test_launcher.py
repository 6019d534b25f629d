"""`hybridvla run`'s process launcher over real DDS: a node with bad parameters stops the graph, a killed
node is restarted and the policy drives again, the safety filter's death ends the graph; nothing is left behind."""
from __future__ import annotations

import os
import time

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


def test_a_killed_node_comes_back_and_the_safety_filters_death_ends_the_graph(ros) -> None:
    """kill -9 the action buffer: the launcher restarts it and the policy's commands resume; kill -9
    the safety filter: the graph ends (nothing may command the robot without it)."""
    import signal as _signal

    from hybridvla_ros.launch_description import describe_graph, safety_filter_input
    from hybridvla_ros.launcher import RestartPolicy
    from hybridvla_ros.nodes.graph_listener import GraphListener
    from hybridvla_ros.params import from_params, load_node_params
    from hybridvla_ros.params.embodiment import EmbodimentParams

    franka = os.path.join(default_config_dir(), "franka.yaml")
    specs = describe_graph("franka", sim=True, human_in_loop=False, overrides={
        "sim_robot": {"physics": "kinematic", "expert_chunk_rate_hz": 10.0},
        "inference": {"policy_source": "sim_expert", "checkpoint_path": str(ros.tmp_path / "unused")}})
    lines: list[str] = []
    launcher = GraphLauncher(specs, env=ros.env, log_dir=str(ros.tmp_path / "logs"),
                             restart=RestartPolicy(delay_s=0.5), log=lines.append)
    ros.runners.append(launcher)  # stopped at teardown whatever happens
    launcher.start()
    p = from_params(EmbodimentParams, load_node_params(franka, "sync"), "sync")
    listener = GraphListener(p, domain_id=ros.domain_id, safety_input_topic=safety_filter_input(specs))

    def supervise_until(predicate, timeout_s: float) -> bool:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            launcher.wait(0.1)
            if predicate(listener.snapshot()):
                return True
        return False

    try:
        assert supervise_until(lambda r: r.ready, 120.0), ros.logs()
        old_pid = launcher.procs["action_buffer"].pid
        os.kill(old_pid, _signal.SIGKILL)
        assert supervise_until(lambda r: launcher.restarts["action_buffer"] == 1, 30.0), ros.logs()
        assert launcher.procs["action_buffer"].pid != old_pid
        assert lines[0] == "[launcher] action_buffer exited with code -9; restarting it in 0.5 s (restart 1)"
        n = listener.snapshot().policy_commands
        assert supervise_until(lambda r: r.policy_commands > n + 25, 120.0), "the policy drives again\n" + ros.logs()
        assert not launcher.dead() and launcher.restarts == {s.name: int(s.name == "action_buffer") for s in specs}

        os.kill(launcher.procs["safety_filter"].pid, _signal.SIGKILL)
        with pytest.raises(NodeDied, match="safety_filter exited with code -9; the graph ends with it"):
            launcher.wait(30.0)
    finally:
        codes = launcher.stop(timeout_s=5.0)
        listener.close()
    assert codes["safety_filter"] == -9 and launcher.restarts["safety_filter"] == 0
    assert all(p.poll() is not None for p in launcher.procs.values()), "every node process is gone"
