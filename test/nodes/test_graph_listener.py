"""The listener behind `hybridvla run`'s report and `hybridvla bench`, over real DDS: send times from the
message info, and 'ready' only once a command came from the policy, not a hold."""
from __future__ import annotations

import os
import threading
import time

import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.subscription import Subscription
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from hybridvla_msgs.msg import ActionChunk, ActionStep
from hybridvla_ros.launch_description import default_config_dir
from hybridvla_ros.nodes.graph_listener import GraphListener
from hybridvla_ros.params import from_params, load_node_params
from hybridvla_ros.params.embodiment import EmbodimentParams

pytestmark = pytest.mark.ros
FRANKA = os.path.join(default_config_dir(), "franka.yaml")


def _command(q: float) -> JointTrajectory:
    return JointTrajectory(joint_names=[f"j{i}" for i in range(7)],
                           points=[JointTrajectoryPoint(positions=[q] * 7)])


def test_listener_takes_send_times_and_is_ready_only_when_the_policy_drives(ros) -> None:
    p = from_params(EmbodimentParams, load_node_params(FRANKA, "sync"), "sync")
    listener = GraphListener(p, domain_id=ros.domain_id)
    try:
        # rclpy passes the message info only to callbacks that require a second argument.
        kinds = {s.topic_name.lstrip("/"): s._callback_type for s in listener.node.subscriptions}
        for topic in (p.command_topic, "action_chunk", "observation"):
            assert kinds[topic] is Subscription.CallbackType.WithMessageInfo, topic

        n = ros.node
        cmd = n.create_publisher(JointTrajectory, p.command_topic, 50)
        step = n.create_publisher(ActionStep, "action_command", 50)
        chunk = n.create_publisher(ActionChunk, "action_chunk", 50)
        assert ros.spin_until(lambda: min(x.get_subscription_count() for x in (cmd, step, chunk)) > 0, 30.0)

        # Commands heard late (the listener busy) keep the times they were sent at.
        listener._stop.set()  # pause the listener's executor; DDS queues what arrives meanwhile
        listener._thread.join()
        sent = []
        for k in range(5):
            sent.append(time.time())
            cmd.publish(_command(0.01 * k))
            time.sleep(0.02)
        time.sleep(0.5)
        listener._stop.clear()
        listener._thread = threading.Thread(target=listener._spin, daemon=True)
        listener._thread.start()
        assert listener.wait_for(lambda r: len(r.command_times) == 5, 20.0)
        r = listener.snapshot()
        assert all(abs(got - want) < 0.1 for got, want in zip(r.command_times, sent, strict=True)), \
            (r.command_times, sent)

        # Holds: commands after HOLD actions (and a chunk nobody used) are not the policy driving.
        for _ in range(5):
            step.publish(ActionStep(source=ActionStep.SOURCE_HOLD, action=[0.0] * 7))
            cmd.publish(_command(0.0))
            time.sleep(0.02)
        assert listener.wait_for(lambda r: len(r.command_times) == 10, 20.0)
        r = listener.snapshot()
        assert (r.policy_commands, r.ready) == (0, False)
        assert listener.report()["policy_commands"] == 0

        chunk.publish(ActionChunk(embodiment="franka", chunk_length=1, action_dim=7, actions=[0.0] * 7))
        assert listener.wait_for(lambda r: len(r.chunk_info) == 1, 20.0)
        assert not listener.snapshot().ready, "a chunk without a command from it is not ready"
        for _ in range(5):
            step.publish(ActionStep(source=ActionStep.SOURCE_POLICY, action=[0.0] * 7))
            time.sleep(0.005)
            cmd.publish(_command(0.1))
            time.sleep(0.02)
        assert listener.wait_for(lambda r: len(r.command_times) == 15 and r.ready, 20.0)
        r = listener.snapshot()
        assert 4 <= r.policy_commands <= 5 and r.first_policy_command_sent >= r.command_times[10] - 1e-6

        # What `hybridvla run` says on /diagnostics when the launcher restarts a node.
        diags: list[DiagnosticArray] = []
        n.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 10)
        assert ros.spin_until(lambda: listener.diag_pub.get_subscription_count() > 0, 30.0)
        listener.publish_diagnostic("hybridvla: launcher", "warn", "inference restarted after exit code -9",
                                    {"inference restarts": "1"})
        assert ros.spin_until(lambda: bool(diags), 20.0)
        status = diags[-1].status[0]
        assert (status.name, status.level, status.hardware_id) == ("hybridvla: launcher", DiagnosticStatus.WARN,
                                                                   "franka")
        assert [(kv.key, kv.value) for kv in status.values] == [("inference restarts", "1")]
    finally:
        listener.close()
