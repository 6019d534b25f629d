"""action_buffer_node over real DDS: steady stream at the control rate, time placement, hold."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

from hybridvla_msgs.msg import ActionChunk, ActionStep, BufferStatus
from hybridvla_ros.launch_description import NodeSpec, default_config_dir
from hybridvla_ros.params import from_params, load_node_params
from hybridvla_ros.params.action_buffer import ActionBufferParams

pytestmark = pytest.mark.ros
FRANKA = os.path.join(default_config_dir(), "franka.yaml")


def test_chunks_become_a_steady_stream_then_a_hold(ros) -> None:
    p = from_params(ActionBufferParams, load_node_params(FRANKA, "action_buffer"))
    ros.start([NodeSpec("action_buffer_node", "action_buffer", FRANKA)])
    steps: list[tuple[float, ActionStep]] = []
    status: list[BufferStatus] = []
    ros.node.create_subscription(ActionStep, "policy_action", lambda m: steps.append((time.monotonic(), m)), 100)
    ros.node.create_subscription(BufferStatus, "action_buffer/status", status.append, 100)
    pub = ros.node.create_publisher(ActionChunk, "action_chunk", 10)
    assert ros.spin_until(lambda: len(status) > 3, 20.0), ros.logs()
    assert status[-1].holding and "no chunk" in status[-1].reason

    T, D = p.chunk_size, p.action_dim
    seq = 0

    def send(obs_age_s: float) -> np.ndarray:
        nonlocal seq
        stamp = ros.now_s() - obs_age_s
        # action k = k for every joint: the value tells which slot was executed.
        actions = np.repeat(np.arange(T, dtype=float)[:, None], D, axis=1)  # (T, D)
        msg = ActionChunk(embodiment="franka", action_dim=D, chunk_length=T, step_period_s=p.control_period_s,
                          actions=actions.ravel().tolist(), seq=seq)
        msg.header.stamp.sec = int(stamp)
        msg.header.stamp.nanosec = int((stamp % 1) * 1e9)
        pub.publish(msg)
        seq += 1
        return actions

    # A chunk answering an observation 60 ms old: its first 3 actions are already in the past.
    send(0.06)
    ros.spin_for(0.1)
    assert steps, ros.logs()
    first = steps[0][1]
    assert first.step_index >= 3 and first.action[0] == pytest.approx(first.step_index)
    steps.clear()
    # Keep feeding chunks every recompute_every periods: a steady stream at the control rate.
    t_end = time.monotonic() + 2.0
    while time.monotonic() < t_end:
        send(0.04)
        ros.spin_for(p.recompute_every * p.control_period_s)
    times = np.array([t for t, _ in steps])
    rate = (len(times) - 1) / (times[-1] - times[0])
    assert rate == pytest.approx(p.control_rate_hz, rel=0.15)
    assert all(s.source == ActionStep.SOURCE_POLICY for _, s in steps)
    # Then nothing: after the chunk runs out and the grace time, the buffer holds and says so.
    ros.spin_for(T * p.control_period_s + p.hold_grace_s + 0.3)
    n_before = len(steps)
    ros.spin_for(0.3)
    assert len(steps) == n_before, "a holding buffer publishes nothing"
    assert status[-1].holding and status[-1].reason
