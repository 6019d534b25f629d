"""handoff_node over real DDS: the plan preview goes along with a forwarded policy step, never with a hold."""
from __future__ import annotations

import os

import numpy as np
import pytest

from hybridvla_msgs.msg import ActionChunk, ActionStep
from hybridvla_ros.launch_description import NodeSpec, default_config_dir
from hybridvla_ros.params import from_params, load_node_params
from hybridvla_ros.params.handoff import HandoffParams

pytestmark = pytest.mark.ros
FRANKA = os.path.join(default_config_dir(), "franka.yaml")


def test_policy_steps_keep_their_preview_and_holds_have_none(ros) -> None:
    p = from_params(HandoffParams, load_node_params(FRANKA, "handoff"))
    ros.start([NodeSpec("handoff_node", "handoff", FRANKA)])
    n = ros.node
    commands: list[ActionStep] = []
    n.create_subscription(ActionStep, "action_command", commands.append, 100)
    policy_pub = n.create_publisher(ActionStep, "policy_action", 10)
    chunk_pub = n.create_publisher(ActionChunk, "action_chunk", 10)
    home = np.asarray(p.home_position)

    def chunk(confidence: float, seq: int) -> None:
        msg = ActionChunk(embodiment="franka", action_dim=p.action_dim, chunk_length=1,
                          step_period_s=p.control_period_s, actions=home.tolist(), confidence=confidence, seq=seq)
        msg.header.stamp = n.get_clock().now().to_msg()
        chunk_pub.publish(msg)

    def policy_step(k: int) -> None:
        plan = home + 0.001 * np.arange(k, k + 6)[:, None]  # (6, D): the action, then 5 previewed targets
        policy_pub.publish(ActionStep(embodiment="franka", action=plan[0].tolist(), chunk_seq=1, step_index=k,
                                      preview=plan[1:].ravel().tolist(), preview_period_s=p.control_period_s))
        ros.spin_for(p.control_period_s)

    chunk(0.9, 1)
    k = 0

    def stream_until_policy() -> bool:
        nonlocal k
        k += 1
        policy_step(k)
        return any(c.source == ActionStep.SOURCE_POLICY for c in commands)

    assert ros.spin_until(stream_until_policy, 20.0), ros.logs()
    for c in (c for c in commands if c.source == ActionStep.SOURCE_POLICY):
        expected = home + 0.001 * np.arange(c.step_index + 1, c.step_index + 6)[:, None]
        np.testing.assert_array_equal(np.asarray(c.preview).reshape(5, -1), expected)
        assert c.preview_period_s == pytest.approx(p.control_period_s)

    # Low confidence pauses the policy: the robot holds, and a hold describes no plan.
    for seq in range(2, 2 + p.low_confidence_chunks_to_pause):
        chunk(0.1, seq)
        ros.spin_for(0.02)
    commands.clear()

    def stream_until_hold() -> bool:
        nonlocal k
        k += 1
        policy_step(k)
        return sum(c.source == ActionStep.SOURCE_HOLD for c in commands) >= 5

    assert ros.spin_until(stream_until_hold, 10.0), ros.logs()
    holds = [c for c in commands if c.source == ActionStep.SOURCE_HOLD]
    assert all(len(c.preview) == 0 for c in holds)
