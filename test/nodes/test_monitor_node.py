"""monitor_node over real DDS: diagnostics per node with the right levels, markers and the annotated image."""
from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, UInt64
from visualization_msgs.msg import Marker, MarkerArray

from hybridvla_msgs.msg import ActionChunk, ActionStep, BufferStatus, HandoffMode, Observation, SafetyStatus
from hybridvla_ros.launch_description import NodeSpec, default_config_dir
from hybridvla_ros.params import from_params, load_node_params
from hybridvla_ros.params.monitor import MonitorParams

pytestmark = pytest.mark.ros
FRANKA = os.path.join(default_config_dir(), "franka.yaml")
OK, WARN, ERROR, STALE = 0, 1, 2, 3
NODES = ("sync", "inference", "action_buffer", "safety_filter", "handoff", "correction_recorder", "task")


def test_monitor_reports_levels_markers_and_image(ros) -> None:
    overrides = {
        "diagnostics_rate_hz": 5.0, "marker_rate_hz": 10.0, "stale_after_s": 1.0,
        "expected_nodes": ["sync", "inference", "action_buffer", "safety_filter", "handoff"],
        # The harness publishes every stream from one thread; rates are checked in the unit tests.
        "rate_warn_fraction": 0.3, "rate_error_fraction": 0.1,
    }
    p = from_params(MonitorParams, {**load_node_params(FRANKA, "monitor"), **overrides})
    ros.start([NodeSpec("monitor_node", "monitor", FRANKA, overrides)])
    n = ros.node
    diags: list[DiagnosticArray] = []
    markers: list[MarkerArray] = []
    images: list[Image] = []
    n.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 20)
    n.create_subscription(MarkerArray, "monitor/markers", markers.append, 20)
    n.create_subscription(Image, "monitor/image", images.append, 5)
    pub = {name: n.create_publisher(kind, topic, 20) for name, kind, topic in [
        ("obs", Observation, "observation"), ("js", JointState, p.joint_states_topic),
        ("chunk", ActionChunk, "action_chunk"), ("action", ActionStep, "policy_action"),
        ("buffer", BufferStatus, "action_buffer/status"), ("safety", SafetyStatus, "safety_filter/status"),
        ("mode", HandoffMode, "handoff/mode"), ("count", UInt64, "correction_recorder/count"),
        ("outcome", Bool, "report_outcome")]}

    def levels() -> dict[str, int]:
        if not diags:
            return {}
        return {s.name.removeprefix("hybridvla: "): s.level[0] for s in diags[-1].status}

    # Nothing published yet: the expected nodes are STALE, the others 'not running'.
    assert ros.spin_until(lambda: len(levels()) == len(NODES), 20.0), ros.logs()
    first = levels()
    assert set(first) == set(NODES)
    assert all(first[k] == STALE for k in ("sync", "inference", "action_buffer", "safety_filter", "handoff"))
    assert first["correction_recorder"] == OK
    assert {s.hardware_id for s in diags[-1].status} == {"franka"}

    home = np.asarray(p.home_position)
    image = np.zeros((32, 32, 3), np.uint8)
    state = {"tick": 0, "sent": 0, "estop": False, "mode": HandoffMode.AUTONOMOUS}

    def publish_tick() -> None:
        """One 10 ms tick of a healthy graph: 50 Hz streams every 2 ticks, 33 Hz every 3, 10 Hz every 10."""
        k = state["tick"]
        state["tick"] += 1
        stamp = n.get_clock().now().to_msg()
        q = home + 0.05 * np.sin(0.05 * k)
        if k % 2 == 0:
            pub["js"].publish(JointState(name=list(p.joint_names), position=q.tolist()))
            pub["action"].publish(ActionStep(embodiment="franka", action=q.tolist()))
            pub["buffer"].publish(BufferStatus(holding=False, depth=8, chunks_received=k // 10))
            state["sent"] += 1
            pub["safety"].publish(SafetyStatus(
                estop_latched=state["estop"], estop_reason="force 200.0 N > 40.0 N" if state["estop"] else "",
                commands_sent=state["sent"]))
        if k % 3 == 0:
            obs = Observation(embodiment="franka", proprio_skew_s=0.002, joint_positions=q.tolist())
            obs.header.stamp = stamp
            obs.image.height, obs.image.width, obs.image.encoding, obs.image.step = 32, 32, "rgb8", 96
            obs.image.data = image.tobytes()
            pub["obs"].publish(obs)
        if k % 10 == 0:
            chunk = home + 0.02 * np.arange(16)[:, None] * np.ones(7)  # (T, D)
            msg = ActionChunk(embodiment="franka", action_dim=7, chunk_length=16, step_period_s=0.02,
                              actions=chunk.ravel().tolist(), confidence=0.8, inference_latency_s=0.02, seq=k)
            msg.header.stamp = stamp
            pub["chunk"].publish(msg)
            pub["mode"].publish(HandoffMode(mode=state["mode"], reason="", confidence=0.8))
        if k % 50 == 0:
            pub["count"].publish(UInt64(data=3))
            pub["outcome"].publish(Bool(data=True))
        ros.spin_for(0.01)

    def feed_until(predicate: Callable[[], bool], timeout_s: float) -> bool:
        end = ros.now_s() + timeout_s
        while ros.now_s() < end:
            publish_tick()
            if predicate():
                return True
        return predicate()

    # A healthy graph: every node OK.
    healthy = {name: OK for name in NODES}
    assert feed_until(lambda: levels() == healthy, 8.0), (levels(), [
        (s.name, s.message) for s in diags[-1].status])
    status = {s.name: s for s in diags[-1].status}
    values = {kv.key: kv.value for kv in status["hybridvla: inference"].values}
    assert float(values["latency p50 (ms)"]) == pytest.approx(20.0) and values["mean confidence"] == "0.80"
    assert {kv.key: kv.value for kv in status["hybridvla: correction_recorder"].values}["corrections"] == "3"

    def latest_markers() -> dict[str, Marker]:
        return {m.ns: m for m in markers[-1].markers} if markers else {}

    assert feed_until(lambda: {"mode", "diagnostics", "planned", "executed"} <= set(latest_markers()), 3.0)
    by_ns = latest_markers()
    assert by_ns["mode"].type == Marker.TEXT_VIEW_FACING and by_ns["mode"].header.frame_id == "base_link"
    assert by_ns["mode"].text == "AUTONOMOUS  conf 0.80"
    for ns in ("planned", "executed"):
        assert by_ns[ns].type == Marker.LINE_STRIP and by_ns[ns].header.frame_id == "monitor"
    assert len(by_ns["planned"].points) == 16
    assert by_ns["planned"].points[-1].x == pytest.approx(p.plot_scale * 0.02 * 15)
    assert feed_until(lambda: bool(images), 2.0)
    assert images[-1].encoding == "rgb8" and images[-1].width == p.image_width_px

    # E-stop latched and the handoff paused: safety_filter ERROR, handoff WARN, the text says E-STOP.
    state["estop"], state["mode"] = True, HandoffMode.PAUSED
    assert feed_until(lambda: levels().get("safety_filter") == ERROR and levels().get("handoff") == WARN, 3.0), \
        levels()
    assert "E-STOP latched: force 200.0 N" in {s.name: s.message for s in diags[-1].status}["hybridvla: safety_filter"]
    assert feed_until(lambda: latest_markers().get("mode", Marker()).text.startswith("E-STOP"), 2.0)
    assert latest_markers()["mode"].color.r == 1.0 and latest_markers()["mode"].color.g == 0.0

    # Everything falls silent: STALE after stale_after_s.
    assert ros.spin_until(lambda: levels().get("sync") == STALE and levels().get("safety_filter") == STALE, 4.0), \
        levels()


def test_monitor_stops_on_sigint_under_load_without_a_traceback(ros) -> None:
    """SIGINT while messages pour in (the monitor once exited with a take_message traceback): exit code 0,
    nothing on stderr that looks like a crash. Three times, since the signal must land mid-take to hurt."""
    import threading
    import time

    n = ros.node
    obs_pub = n.create_publisher(Observation, "observation", 50)
    step_pub = n.create_publisher(ActionStep, "policy_action", 50)
    diags: list[DiagnosticArray] = []
    n.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 20)
    for trial in range(3):
        diags.clear()
        launcher = ros.start([NodeSpec("monitor_node", "monitor", FRANKA, {"diagnostics_rate_hz": 10.0})],
                             log_name=f"monitor_{trial}")
        assert ros.spin_until(lambda: bool(diags), 30.0), ros.logs()  # up and spinning
        stop = threading.Event()

        def flood(stop: threading.Event = stop) -> None:
            while not stop.is_set():
                for _ in range(10):
                    obs_pub.publish(Observation(embodiment="franka", joint_positions=[0.0] * 7))
                    step_pub.publish(ActionStep(embodiment="franka", action=[0.0] * 7))
                time.sleep(0.001)

        feeder = threading.Thread(target=flood, daemon=True)
        feeder.start()
        try:
            ros.spin_for(0.5)
            codes = launcher.stop(timeout_s=10.0)  # SIGINT first
        finally:
            stop.set()
            feeder.join()
        log = (ros.tmp_path / f"monitor_{trial}" / "monitor.log").read_text(errors="replace")
        assert "Traceback" not in log, log[-3000:]
        assert codes["monitor"] == 0, log[-3000:]
