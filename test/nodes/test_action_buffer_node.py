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
        # action k = k mrad for every joint: the value tells which slot was executed (and at 0.05 rad/s
        # the chunk is within the limits the whole-chunk check holds it to).
        actions = np.repeat(0.001 * np.arange(T, dtype=float)[:, None], D, axis=1)  # (T, D)
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
    assert first.step_index >= 3 and first.action[0] == pytest.approx(0.001 * first.step_index)
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


def _chunk_msg(p: ActionBufferParams, stamp_s: float, actions: np.ndarray, seq: int) -> ActionChunk:
    msg = ActionChunk(embodiment="franka", action_dim=p.action_dim, chunk_length=actions.shape[0],
                      step_period_s=p.control_period_s, actions=actions.ravel().tolist(), seq=seq)
    msg.header.stamp.sec = int(stamp_s)
    msg.header.stamp.nanosec = int((stamp_s % 1) * 1e9)
    return msg


def _cruise(p: ActionBufferParams, n: int, start: float) -> np.ndarray:
    """(n, D): every joint at 0.2 rad/s from ``start``, within every Franka limit."""
    return start + 0.2 * p.control_period_s * np.arange(n, dtype=float)[:, None] * np.ones((1, p.action_dim))


@pytest.mark.parametrize("mode", ["reshape", "reject"])
def test_a_chunk_that_jumps_is_reshaped_or_rejected_with_the_reason_and_steps_carry_a_preview(
        ros, mode: str) -> None:
    from diagnostic_msgs.msg import DiagnosticArray

    from hybridvla_ros.nodes.action_buffer_node import DIAGNOSTIC_NAME

    p = from_params(ActionBufferParams, load_node_params(FRANKA, "action_buffer"))
    ros.start([NodeSpec("action_buffer_node", "action_buffer", FRANKA,
                        {"chunk_check": mode, "blend_steps": 0, "preview_steps": 10})])
    steps: list[ActionStep] = []
    status: list[BufferStatus] = []
    diags: list[DiagnosticArray] = []
    ros.node.create_subscription(ActionStep, "policy_action", steps.append, 200)
    ros.node.create_subscription(BufferStatus, "action_buffer/status", status.append, 200)
    ros.node.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 50)
    pub = ros.node.create_publisher(ActionChunk, "action_chunk", 10)
    assert ros.spin_until(lambda: len(status) > 3, 20.0), ros.logs()

    # A first chunk, 4 s long: nothing is executing yet, so only the chunk itself is checked (it is fine).
    first = _cruise(p, 200, 0.0)
    t0 = ros.now_s()
    pub.publish(_chunk_msg(p, t0, first, seq=0))
    assert ros.spin_until(lambda: len(steps) >= 10, 10.0), ros.logs()
    assert status[-1].chunks_reshaped == 0 and status[-1].chunks_rejected == 0
    assert status[-1].last_chunk_check == ""
    # Each step carries the next 10 rows of the chunk after its action, at the control period.
    for s in steps[:10]:
        assert s.step_index >= 0 and list(s.action) == first[s.step_index].tolist()
        preview = np.asarray(s.preview).reshape(-1, p.action_dim)
        np.testing.assert_array_equal(preview, first[s.step_index + 1:s.step_index + 11])
        assert s.preview_period_s == pytest.approx(p.control_period_s)

    # The next chunk, one period newer, is the same motion 0.3 rad higher on joint 1: a jump from what is
    # executing in that joint alone (the others go on exactly, whichever row is executing when it arrives;
    # stamped half a period later they were 2 mrad behind, a jerk the check refused at some rows).
    dt = p.control_period_s
    jumped = _cruise(p, 200, 0.2 * dt)
    jumped[:, 0] += 0.3
    n_steps = len(steps)
    pub.publish(_chunk_msg(p, t0 + dt, jumped, seq=1))
    assert ros.spin_until(lambda: status[-1].last_chunk_check != "", 10.0), ros.logs()
    last = status[-1]
    verb = "reshaped" if mode == "reshape" else "rejected"
    assert last.last_chunk_check.startswith(f"{verb} chunk 1: "), last.last_chunk_check
    assert (last.chunks_reshaped, last.chunks_rejected) == ((1, 0) if mode == "reshape" else (0, 1))
    # The steps from the one that followed the check on (on a loaded machine the buffer may send a step
    # or two of chunk 0 between our publishing chunk 1 and its arrival).
    if mode == "reshape":
        assert ros.spin_until(lambda: any(s.chunk_seq == 1 for s in steps[n_steps:]), 10.0), ros.logs()
        n_steps = next(k for k in range(n_steps, len(steps)) if steps[k].chunk_seq == 1)
    else:
        n_steps = len(steps)
    assert ros.spin_until(lambda: len(steps) >= n_steps + 10, 10.0), ros.logs()
    before = steps[n_steps - 1]
    after = steps[n_steps:n_steps + 10]
    if mode == "reject":
        assert all(s.chunk_seq == 0 for s in after)  # the buffer keeps executing what it had
    else:
        assert all(s.chunk_seq == 1 for s in after)
        # It ramps in: joint 1 moves at most max_velocity per elapsed slot, nowhere near the 0.3 jump.
        slots = after[0].step_index + 1 - before.step_index  # chunk 1's row k is chunk 0's row k + 1
        assert abs(after[0].action[0] - before.action[0]) <= p.max_velocity[0] * p.control_period_s * slots + 1e-9
        assert after[-1].action[0] < jumped[after[-1].step_index, 0] - 0.05
    assert ros.spin_until(lambda: any(
        st.name == DIAGNOSTIC_NAME and {kv.key: kv.value for kv in st.values}.get(f"chunks_{verb}") == "1"
        for d in diags for st in d.status), 5.0), ros.logs()
