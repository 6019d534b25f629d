"""handoff_node over real DDS: policy drives, low confidence pauses, a human takes over, holds, hand-back."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from geometry_msgs.msg import Twist
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64, String
from std_srvs.srv import Trigger

from hybridvla_msgs.msg import ActionChunk, ActionStep, HandoffMode, Observation
from hybridvla_ros.launch_description import NodeSpec, default_config_dir
from hybridvla_ros.params import from_params, load_node_params
from hybridvla_ros.params.handoff import HandoffParams

pytestmark = pytest.mark.ros
FRANKA = os.path.join(default_config_dir(), "franka.yaml")
HELLO = os.path.join(default_config_dir(), "hello.yaml")


def test_policy_pause_human_override_hold_and_hand_back(ros) -> None:
    p = from_params(HandoffParams, load_node_params(FRANKA, "handoff"))
    ros.start([NodeSpec("handoff_node", "handoff", FRANKA)])
    n = ros.node
    commands: list[ActionStep] = []
    modes: list[HandoffMode] = []
    helps: list[str] = []
    scales: list[float] = []
    resets: list[float] = []

    def on_reset(_req: Trigger.Request, res: Trigger.Response) -> Trigger.Response:
        resets.append(ros.now_s())
        res.success = True
        return res

    n.create_subscription(ActionStep, "action_command", commands.append, 100)
    n.create_subscription(HandoffMode, "handoff/mode", modes.append, 50)
    n.create_subscription(String, "handoff/help_request", lambda m: helps.append(m.data), 10)
    n.create_subscription(Float64, "handoff/velocity_scale", lambda m: scales.append(m.data), 10)
    n.create_service(Trigger, "action_buffer/reset", on_reset)
    policy_pub = n.create_publisher(ActionStep, "policy_action", 10)
    chunk_pub = n.create_publisher(ActionChunk, "action_chunk", 10)
    teleop_pub = n.create_publisher(JointState, "teleop/joint_command", 10)
    deadman_pub = n.create_publisher(Bool, "teleop/deadman", 10)
    resume = n.create_client(Trigger, "handoff/resume_policy")

    home = np.asarray(p.home_position)
    seq = 0
    step = 0

    def chunk(confidence: float) -> None:
        nonlocal seq
        seq += 1
        msg = ActionChunk(embodiment="franka", action_dim=p.action_dim, chunk_length=1,
                          step_period_s=p.control_period_s, actions=home.tolist(), confidence=confidence, seq=seq)
        msg.header.stamp = n.get_clock().now().to_msg()
        chunk_pub.publish(msg)

    def stream(seconds: float, deadman: bool = False, teleop: JointState | None = None) -> None:
        """Policy actions at the control rate (joint 1 creeps up), with the human's inputs if given."""
        nonlocal step
        for _ in range(max(1, int(seconds / p.control_period_s))):
            step += 1
            action = home.copy()
            action[0] += 0.001 * step
            policy_pub.publish(ActionStep(embodiment="franka", action=action.tolist(), chunk_seq=seq,
                                          step_index=step))
            if deadman:
                deadman_pub.publish(Bool(data=True))
            if teleop is not None:
                teleop_pub.publish(teleop)
            ros.spin_for(p.control_period_s)

    def sources(msgs: list[ActionStep]) -> set[int]:
        return {m.source for m in msgs}

    assert ros.spin_until(lambda: modes and scales, 20.0), ros.logs()
    assert modes[-1].mode == HandoffMode.AUTONOMOUS and scales[-1] == 1.0

    # 1. Confident policy: its actions go through unchanged.
    chunk(0.9)
    assert ros.spin_until(lambda: (stream(0.02), len(commands) >= 5)[1], 10.0), ros.logs()
    commands.clear()
    stream(0.3)
    assert commands and sources(commands) == {ActionStep.SOURCE_POLICY}
    assert commands[-1].action[0] == pytest.approx(home[0] + 0.001 * commands[-1].step_index)
    last_policy = np.asarray(commands[-1].action)

    # 2. Low-confidence chunks: PAUSED, a help request, and the robot holds while the policy keeps talking.
    for _ in range(p.low_confidence_chunks_to_pause):
        chunk(0.1)
        ros.spin_for(0.02)
    assert ros.spin_until(lambda: modes[-1].mode == HandoffMode.PAUSED, 2.0), ros.logs()
    assert "low confidence" in modes[-1].reason and modes[-1].consecutive_failures == 1
    assert ros.spin_until(lambda: helps, 2.0) and "low confidence" in helps[0]
    commands.clear()
    stream(0.3)
    assert len(commands) >= 10 and sources(commands) == {ActionStep.SOURCE_HOLD}
    held = np.asarray(commands[-1].action)
    assert np.allclose(held, commands[0].action) and np.allclose(held, last_policy)

    # 3. Deadman held + teleop (a subset, in its own order): the human drives.
    teleop = JointState(name=["panda_joint3", "panda_joint1", "not_a_franka_joint"], position=[0.5, 0.2, 9.0])
    stream(0.3, deadman=True, teleop=teleop)
    assert ros.spin_until(lambda: modes[-1].mode == HandoffMode.HUMAN_OVERRIDE, 2.0), ros.logs()
    commands.clear()
    stream(0.3, deadman=True, teleop=teleop)
    assert len(commands) >= 10 and sources(commands) == {ActionStep.SOURCE_HUMAN}
    human = np.asarray(commands[-1].action)
    expected = held.copy()
    expected[0], expected[2] = 0.2, 0.5  # the others keep their last commanded value
    assert np.allclose(human, expected)

    # 4. The deadman stops (teleop and policy go on): HOLD, not the policy. Without joint_states the hold
    #    target is the human's last command (with them, the measured position).
    commands.clear()
    stream(0.6, teleop=teleop)
    assert modes[-1].mode == HandoffMode.PAUSED and "deadman" in modes[-1].reason
    assert ActionStep.SOURCE_POLICY not in sources(commands)
    assert commands[-1].source == ActionStep.SOURCE_HOLD and np.allclose(commands[-1].action, human)

    # 5. Explicit hand-back: the buffer is reset, then the policy drives again from a fresh chunk.
    chunk(0.9)
    ros.spin_for(0.05)
    assert resume.wait_for_service(timeout_sec=5.0)
    fut = resume.call_async(Trigger.Request())
    assert ros.spin_until(fut.done, 5.0)
    assert fut.result().success, fut.result().message
    assert ros.spin_until(lambda: modes[-1].mode == HandoffMode.AUTONOMOUS and resets, 2.0), ros.logs()
    assert modes[-1].reason == "resumed by operator"
    commands.clear()
    stream(0.1)  # actions from the chunk that was current before the hand-back do not move the robot
    assert commands and sources(commands) == {ActionStep.SOURCE_HOLD}
    chunk(0.9)
    commands.clear()
    stream(0.3)
    assert commands[-1].source == ActionStep.SOURCE_POLICY and commands[-1].chunk_seq == seq


def test_base_twist_teleop_and_out_of_distribution_slow_down(ros) -> None:
    p = from_params(HandoffParams, load_node_params(HELLO, "handoff"))
    ros.start([NodeSpec("handoff_node", "handoff", HELLO)])
    n = ros.node
    commands: list[ActionStep] = []
    modes: list[HandoffMode] = []
    scales: list[float] = []
    n.create_subscription(ActionStep, "action_command", commands.append, 100)
    n.create_subscription(HandoffMode, "handoff/mode", modes.append, 50)
    n.create_subscription(Float64, "handoff/velocity_scale", lambda m: scales.append(m.data), 10)
    policy_pub = n.create_publisher(ActionStep, "policy_action", 10)
    obs_pub = n.create_publisher(Observation, "observation", 10)
    twist_pub = n.create_publisher(Twist, "teleop/cmd_vel", 10)
    deadman_pub = n.create_publisher(Bool, "teleop/deadman", 10)
    assert ros.spin_until(lambda: modes and scales, 20.0), ros.logs()

    def observe(pose: list[float]) -> None:
        obs_pub.publish(Observation(embodiment="hello", joint_names=list(p.joint_names), joint_positions=pose))

    # Near the edge of the workspace box: out of distribution, the policy drives at a reduced speed.
    pose = [0.0, 0.0, 0.0]
    assert ros.spin_until(lambda: (policy_pub.publish(ActionStep(embodiment="hello", action=pose)),
                                   observe([2.95, 0.0, 0.0]), ros.spin_for(0.05),
                                   modes[-1].mode == HandoffMode.CONSERVATIVE)[-1], 10.0), ros.logs()
    assert "out of distribution" in modes[-1].reason
    assert ros.spin_until(lambda: scales[-1] == pytest.approx(p.conservative_velocity_scale), 2.0)
    assert commands and commands[-1].source == ActionStep.SOURCE_POLICY

    # Deadman + cmd_vel: the base pose target is integrated from the last command, one period at a time.
    twist = Twist()
    twist.linear.x = 0.2
    commands.clear()
    for _ in range(int(0.4 / p.control_period_s)):
        deadman_pub.publish(Bool(data=True))
        twist_pub.publish(twist)
        ros.spin_for(p.control_period_s)
    assert modes[-1].mode == HandoffMode.HUMAN_OVERRIDE and scales[-1] == 1.0
    human = [np.asarray(c.action) for c in commands if c.source == ActionStep.SOURCE_HUMAN]
    assert len(human) >= 3
    steps = np.diff(np.array(human), axis=0)
    assert np.allclose(steps, [0.2 * p.control_period_s, 0.0, 0.0], atol=1e-9)


def test_bad_handoff_parameter_stops_the_node_with_a_clear_message(ros, tmp_path) -> None:
    with open(FRANKA, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    doc["handoff"] = {"ros__parameters": {"pause_confidence": 0.6, "resume_confidence": 0.4}}
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(doc))
    spec = NodeSpec("handoff_node", "handoff", str(path))
    proc = subprocess.run([sys.executable, "-m", spec.module, *spec.ros_arguments()], env=ros.env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "handoff.resume_confidence: 0.4 is below pause_confidence 0.6" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_reported_failures_pause_and_escalate_until_acknowledged(ros) -> None:
    p = from_params(HandoffParams, load_node_params(FRANKA, "handoff"))
    ros.start([NodeSpec("handoff_node", "handoff", FRANKA, {"max_consecutive_pauses": 1})])
    n = ros.node
    modes: list[HandoffMode] = []
    n.create_subscription(HandoffMode, "handoff/mode", modes.append, 50)
    outcome = n.create_publisher(Bool, "report_outcome", 10)
    chunk_pub = n.create_publisher(ActionChunk, "action_chunk", 10)
    policy_pub = n.create_publisher(ActionStep, "policy_action", 10)
    resume = n.create_client(Trigger, "handoff/resume_policy")
    acknowledge = n.create_client(Trigger, "handoff/acknowledge")
    home = np.asarray(p.home_position)
    assert ros.spin_until(lambda: len(modes) > 0, 20.0), ros.logs()

    def drive(seconds: float) -> None:
        for i in range(int(seconds / p.control_period_s)):
            chunk_pub.publish(ActionChunk(embodiment="franka", action_dim=7, chunk_length=1, seq=1000 + i,
                                          step_period_s=p.control_period_s, actions=home.tolist(), confidence=0.9))
            policy_pub.publish(ActionStep(embodiment="franka", action=home.tolist(), chunk_seq=1000 + i))
            ros.spin_for(p.control_period_s)

    def call(client) -> bool:
        assert client.wait_for_service(timeout_sec=5.0)
        future = client.call_async(Trigger.Request())
        assert ros.spin_until(future.done, 5.0)
        return future.result().success

    drive(0.3)
    outcome.publish(Bool(data=False))
    assert ros.spin_until(lambda: modes[-1].mode == HandoffMode.PAUSED, 3.0)
    assert "report_outcome" in modes[-1].reason
    assert call(resume)
    drive(0.3)
    outcome.publish(Bool(data=True))    # a success changes nothing
    drive(0.2)
    assert modes[-1].mode == HandoffMode.AUTONOMOUS
    outcome.publish(Bool(data=False))   # the second failure in a row escalates
    assert ros.spin_until(lambda: modes[-1].mode == HandoffMode.ESCALATED, 3.0)
    assert not call(resume), "an escalation must be acknowledged first"
    assert call(acknowledge)
    assert ros.spin_until(lambda: modes[-1].mode == HandoffMode.PAUSED, 3.0)
