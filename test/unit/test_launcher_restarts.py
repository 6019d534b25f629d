"""`hybridvla run`'s process supervision: which deaths restart a node (with a backoff) and which end the graph.

Real processes, no ROS: each "node" is a Python one-liner that exits with a chosen code.
"""
from __future__ import annotations

import sys

import pytest

from hybridvla_ros.launch_description import NodeSpec
from hybridvla_ros.launcher import GraphLauncher, NodeDied, RestartPolicy, RestartTracker

FAST = RestartPolicy(delay_s=0.01, max_delay_s=0.04, quick_s=30.0, max_quick_deaths=3)


class ScriptLauncher(GraphLauncher):
    """Runs ``exit_codes[name]`` as the node's exit code (None: sleeps until stopped)."""

    def __init__(self, specs: list[NodeSpec], exit_codes: dict[str, int | None], **kwargs) -> None:
        super().__init__(specs, **kwargs)
        self.exit_codes = exit_codes

    def command_for(self, spec: NodeSpec) -> list[str]:
        code = self.exit_codes[spec.name]
        body = "import time; time.sleep(60)" if code is None else f"import sys; sys.exit({code})"
        return [sys.executable, "-c", body]


def _spec(name: str, respawn: bool = True) -> NodeSpec:
    return NodeSpec(f"{name}_node", name, "unused.yaml", respawn=respawn)


def test_backoff_doubles_with_quick_deaths_and_gives_up() -> None:
    t = RestartTracker(RestartPolicy(delay_s=1.0, max_delay_s=5.0, quick_s=10.0, max_quick_deaths=5))
    assert [t.on_death(0.5) for _ in range(4)] == [1.0, 2.0, 4.0, 5.0]  # capped at max_delay_s
    assert t.on_death(0.5) is None, "the fifth quick death in a row: give up"
    t = RestartTracker(RestartPolicy(delay_s=1.0, max_delay_s=5.0, quick_s=10.0, max_quick_deaths=3))
    assert [t.on_death(1.0), t.on_death(1.0)] == [1.0, 2.0]
    assert t.on_death(60.0) == 1.0, "a node that ran a while and died starts over at the first delay"
    assert (t.on_death(1.0), t.restarts) == (1.0, 4)
    with pytest.raises(ValueError):
        RestartPolicy(delay_s=2.0, max_delay_s=1.0)


def test_a_dying_node_is_restarted_with_a_log_line_then_given_up() -> None:
    lines: list[str] = []
    restarted: list[tuple[str, int, int]] = []
    launcher = ScriptLauncher([_spec("safety_filter", respawn=False), _spec("inference")],
                              {"safety_filter": None, "inference": 7}, restart=FAST, log=lines.append,
                              on_restart=lambda *a: restarted.append(a))
    launcher.start()
    try:
        with pytest.raises(NodeDied) as err:
            launcher.wait(60.0, poll_s=0.01)
    finally:
        launcher.stop(timeout_s=2.0)
    assert err.value.node == "inference" and err.value.code == 7
    assert str(err.value) == ("inference died 3 times in a row within 30 s of starting (last exit code 7); "
                              "giving up, so the graph ends")
    assert launcher.restarts == {"safety_filter": 0, "inference": 2}
    assert restarted == [("inference", 7, 1), ("inference", 7, 2)]
    assert lines[0] == "[launcher] inference exited with code 7; restarting it in 0.0 s (restart 1)"
    assert lines[1].startswith("[launcher] inference restarted (pid ") and lines[1].endswith("restart 1)")
    assert "restarting it in 0.0 s (restart 2)" in lines[2], "the second delay is twice the first"


def test_the_safety_filter_death_and_bad_parameters_end_the_graph_at_once() -> None:
    launcher = ScriptLauncher([_spec("safety_filter", respawn=False), _spec("inference")],
                              {"safety_filter": -9 % 256, "inference": None}, restart=FAST, log=lambda _: None)
    launcher.start()
    try:
        with pytest.raises(NodeDied, match=r"safety_filter exited with code 247; the graph ends with it"):
            launcher.wait(60.0, poll_s=0.01)
    finally:
        codes = launcher.stop(timeout_s=2.0)
    assert launcher.restarts == {"safety_filter": 0, "inference": 0}
    assert codes["inference"] != 0, "the other node was stopped"

    launcher = ScriptLauncher([_spec("action_buffer")], {"action_buffer": 2}, restart=FAST, log=lambda _: None)
    launcher.start()
    try:
        with pytest.raises(NodeDied, match=r"action_buffer exited with code 2 \(bad parameters\); restarting "
                                           "cannot fix that"):
            launcher.wait(60.0, poll_s=0.01)
    finally:
        launcher.stop(timeout_s=2.0)
    assert launcher.restarts == {"action_buffer": 0}


def test_nothing_is_restarted_once_stopping() -> None:
    launcher = ScriptLauncher([_spec("monitor")], {"monitor": None}, restart=FAST, log=lambda _: None)
    launcher.start()
    codes = launcher.stop(timeout_s=2.0)
    launcher.wait(0.05)  # a node that exited because it was stopped is not a death
    assert launcher.restarts == {"monitor": 0} and codes["monitor"] != 0
    assert launcher.procs["monitor"].poll() is not None
