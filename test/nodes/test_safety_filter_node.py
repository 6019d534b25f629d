"""safety_filter_node over real DDS: unreadable joint_states, limits, NaN, e-stop latch and reset, watchdog,
coming to rest within the acceleration limit when the actions stop mid-motion."""
from __future__ import annotations

import math
import os
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import WrenchStamped
from sensor_msgs.msg import JointState
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from hybridvla_msgs.msg import ActionStep, SafetyStatus
from hybridvla_ros.core.safety import REASON_NO_STATE
from hybridvla_ros.launch_description import NodeSpec, default_config_dir
from hybridvla_ros.params import from_params, load_node_params
from hybridvla_ros.params.safety_filter import SafetyFilterParams

CONFIG = default_config_dir()

pytestmark = pytest.mark.ros
FRANKA = os.path.join(CONFIG, "franka.yaml")


def test_safety_filter_node_limits_latches_and_holds(ros) -> None:
    p = from_params(SafetyFilterParams, load_node_params(FRANKA, "safety_filter"))
    home = np.asarray(p.home_position)
    ros.start([NodeSpec("safety_filter_node", "safety_filter", FRANKA)])
    n = ros.node
    js_pub = n.create_publisher(JointState, "joint_states", 10)
    act_pub = n.create_publisher(ActionStep, "action_command", 10)
    wrench_pub = n.create_publisher(WrenchStamped, p.wrench_topic, 10)
    commands: list[np.ndarray] = []
    statuses: list[SafetyStatus] = []
    n.create_subscription(JointTrajectory, p.command_topic,
                          lambda m: commands.append(np.asarray(m.points[0].positions)), 50)
    n.create_subscription(SafetyStatus, "safety_filter/status", statuses.append, 50)
    reset = n.create_client(Trigger, "safety_filter/reset_estop")

    def joint_state() -> None:
        js = JointState(name=list(reversed(p.joint_names)), position=list(reversed(home.tolist())))
        js.header.stamp = n.get_clock().now().to_msg()
        js_pub.publish(js)

    def wrench(force_n: float) -> None:
        w = WrenchStamped()
        w.header.stamp = n.get_clock().now().to_msg()
        w.wrench.force.z = force_n
        wrench_pub.publish(w)

    def act(target: np.ndarray, seconds: float) -> None:
        for _ in range(int(seconds / p.control_period_s)):
            joint_state()
            wrench(1.0)
            m = ActionStep(embodiment="franka", action=target.tolist())
            m.header.stamp = n.get_clock().now().to_msg()
            act_pub.publish(m)
            ros.spin_for(p.control_period_s)

    assert ros.spin_until(lambda: len(statuses) > 0, 20.0), ros.logs()

    # A joint_states that names a joint twice is ambiguous (core.joints): ignored, and said so. With
    # no joint state it could read, the filter commands nothing however many actions come.
    assert ros.spin_until(lambda: js_pub.get_subscription_count() > 0 and act_pub.get_subscription_count() > 0,
                          10.0)
    twice = JointState(name=[*p.joint_names, p.joint_names[0]], position=[*home.tolist(), home[0] + 0.5])
    for _ in range(25):
        twice.header.stamp = n.get_clock().now().to_msg()
        js_pub.publish(twice)
        act_pub.publish(ActionStep(embodiment="franka", action=home.tolist()))
        ros.spin_for(0.02)
    assert ros.spin_until(lambda: "named more than once" in ros.logs(), 5.0), ros.logs()
    assert commands == [] and any(s.hold_reason == REASON_NO_STATE for s in statuses)

    for _ in range(20):  # let discovery finish before counting commands
        joint_state()
        ros.spin_for(0.02)

    # A target 1 rad away on joint 1 is approached at no more than max_velocity, joint 1 only.
    far = home.copy()
    far[0] += 1.0
    commands.clear()
    act(far, 0.6)
    assert len(commands) >= 10
    cmds = np.array(commands)
    steps = np.diff(np.vstack([home, cmds]), axis=0)
    assert np.all(np.abs(steps) <= np.asarray(p.max_velocity) * p.control_period_s * (1 + 1e-6) + 1e-9)
    assert np.allclose(steps[:, 1:], 0.0, atol=1e-9), "direction of motion must be kept"
    assert cmds[-1, 0] > home[0] + 0.05

    # NaN never reaches the robot: it brakes (if still moving) and holds there.
    last = commands[-1].copy()
    commands.clear()
    act(np.full(7, math.nan), 0.1)
    assert commands and all(np.all(np.isfinite(c)) for c in commands)
    assert ros.spin_until(lambda: "nan" in statuses[-1].limits_hit or "stream" in statuses[-1].limits_hit, 2.0)
    assert ros.spin_until(lambda: len(commands) >= 2 and np.array_equal(commands[-1], commands[-2]), 3.0)
    assert np.abs(commands[-1] - last).max() <= np.max(np.asarray(p.max_velocity) ** 2
                                                       / (2 * np.asarray(p.max_acceleration))) + 0.05

    # A force spike latches the e-stop; the command holds while actions keep coming.
    for _ in range(5):
        wrench(200.0)
        ros.spin_for(0.02)
    assert ros.spin_until(lambda: statuses[-1].estop_latched, 3.0)
    commands.clear()
    for _ in range(15):
        joint_state()
        wrench(200.0)
        m = ActionStep(embodiment="franka", action=far.tolist())
        act_pub.publish(m)
        ros.spin_for(p.control_period_s)
    held = np.array(commands)
    assert len(held) > 3 and np.allclose(held, held[0], atol=1e-12)

    # Reset is refused while the force is still high, accepted once it is gone.
    assert reset.wait_for_service(timeout_sec=5.0)
    fut = reset.call_async(Trigger.Request())
    assert ros.spin_until(fut.done, 5.0)
    assert not fut.result().success
    for _ in range(5):
        wrench(0.0)
        ros.spin_for(0.02)
    fut = reset.call_async(Trigger.Request())
    assert ros.spin_until(fut.done, 5.0)
    assert fut.result().success, fut.result().message
    assert ros.spin_until(lambda: not statuses[-1].estop_latched, 2.0)
    assert statuses[-1].estop_trips == 1

    # No more actions: the watchdog holds the robot.
    commands.clear()
    for _ in range(int(2 * p.watchdog_timeout_s / 0.02) + 5):
        joint_state()
        wrench(0.0)
        ros.spin_for(0.02)
    assert statuses[-1].holding and statuses[-1].watchdog_holds >= 1
    assert "watchdog" in statuses[-1].limits_hit
    assert commands, "the watchdog must keep commanding the hold position"
    assert np.allclose(commands[-1], commands[0], atol=1e-9)


def test_actions_stopping_mid_motion_bring_the_commands_to_rest_within_the_acceleration_limit(ros) -> None:
    """The action stream stops at speed (the buffer ran dry, the upstream node died): the
    commands that follow brake to rest at most at max deceleration and then hold that point.
    Before, the last command sent was still moving: a controller holding it stopped at once.
    If the filter's own process stalls for longer than its resume bound (a loaded machine), it
    rightly starts over from rest instead and says so on /diagnostics; that try is repeated."""
    p = from_params(SafetyFilterParams, load_node_params(FRANKA, "safety_filter"))
    home, vmax, amax = (np.asarray(x, dtype=np.float64) for x in (p.home_position, p.max_velocity,
                                                                 p.max_acceleration))
    dt = p.control_period_s
    ros.start([NodeSpec("safety_filter_node", "safety_filter", FRANKA)])
    n = ros.node
    js_pub = n.create_publisher(JointState, "joint_states", 10)
    act_pub = n.create_publisher(ActionStep, "action_command", 10)
    wrench_pub = n.create_publisher(WrenchStamped, p.wrench_topic, 10)
    commands: list[np.ndarray] = []
    statuses: list[SafetyStatus] = []
    diags: list[dict[str, str]] = []
    n.create_subscription(JointTrajectory, p.command_topic,
                          lambda m: commands.append(np.asarray(m.points[0].positions)), 200)
    n.create_subscription(SafetyStatus, "safety_filter/status", statuses.append, 50)

    def on_diag(msg: DiagnosticArray) -> None:
        diags.extend({kv.key: kv.value for kv in st.values} for st in msg.status
                     if st.name == "hybridvla: safety_filter limits")

    n.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    next_s = [time.monotonic()]

    def feed(action: np.ndarray | None) -> None:
        js = JointState(name=list(p.joint_names), position=home.tolist())
        js.header.stamp = n.get_clock().now().to_msg()
        js_pub.publish(js)
        w = WrenchStamped()
        w.header.stamp = js.header.stamp
        wrench_pub.publish(w)
        if action is not None:
            act_pub.publish(ActionStep(embodiment="franka", action=action.tolist()))
        next_s[0] = max(next_s[0] + dt, time.monotonic())  # one action per period, on a schedule
        ros.spin_for(next_s[0] - time.monotonic())

    def resumes() -> int:
        n_diag = len(diags)
        assert ros.spin_until(lambda: len(diags) > n_diag, 5.0), ros.logs()
        return int(diags[-1]["resumes_from_rest"])

    assert ros.spin_until(lambda: len(statuses) > 0 and act_pub.get_subscription_count() > 0
                          and js_pub.get_subscription_count() > 0, 20.0), ros.logs()
    assert ros.spin_until(lambda: feed(None) is None and "watchdog" in statuses[-1].limits_hit, 10.0), ros.logs()
    for attempt in range(4):
        before = resumes()
        # Stream toward a far target on joint 0 until the commands move at least half of max speed.
        far = home.copy()
        far[0] = home[0] + (1.5 if attempt % 2 == 0 else -1.5)
        commands.clear()

        def fast(target: np.ndarray = far) -> bool:
            feed(target)
            return len(commands) >= 2 and abs(commands[-1][0] - commands[-2][0]) > 0.5 * vmax[0] * dt

        assert ros.spin_until(fast, 10.0), (len(commands), ros.logs())
        n_moving = len(commands)
        # Stop the actions (joint states go on); wait until the commands stand still.
        assert ros.spin_until(lambda n0=n_moving: feed(None) is None and len(commands) >= n0 + 3
                              and np.array_equal(commands[-1], commands[-2])
                              and np.array_equal(commands[-2], commands[-3]), 10.0), (len(commands), ros.logs())
        if resumes() == before:
            break  # the filter ran on time throughout: check its commands
    else:
        pytest.fail("the safety filter's process stalled in every try")
    cmds = np.array(commands[n_moving - 2:])  # the last two commands from actions, then the timer's
    steps = np.diff(cmds, axis=0)  # (K, 7); steps[0] is the last action's
    assert (np.abs(steps) <= vmax * dt * (1 + 1e-6) + 1e-9).all()
    assert np.allclose(steps[:, 1:], 0.0, atol=1e-9), "braking keeps the direction (joint 0 only)"
    s0 = np.abs(steps[:, 0])
    moving = s0 > 0
    last_moving = int(np.nonzero(moving)[0][-1])
    assert not moving[last_moving + 1:].any(), "at rest it stays at rest"
    # Braking, not a sudden stop: several periods, the step shrinking by about amax*dt^2 a period
    # (a timer command covers h >= 0.9 dt of real time, so one step may exceed the one before
    # by up to that factor).
    brake, prev = s0[1:last_moving + 1], s0[:last_moving]
    assert brake.size >= int(0.5 * s0[0] / (amax[0] * dt * dt)), s0
    assert (brake <= prev / 0.9 + 1e-12).all(), s0
    if last_moving >= 2:
        assert (np.abs(np.diff(brake)) <= amax[0] * dt * dt + 0.12 * prev[1:] + 1e-9).all(), s0
    # A controller holding the final point sees at most max deceleration: the last move is <= amax*dt^2.
    assert s0[last_moving] <= amax[0] * dt * dt * (1 + 1e-6), s0
    assert int(diags[-1]["modified"]) <= int(diags[-1]["commands"])
    assert ros.spin_until(lambda: statuses[-1].commands_modified <= statuses[-1].commands_sent, 2.0)
    assert "stream stopped while moving" in ros.logs()
