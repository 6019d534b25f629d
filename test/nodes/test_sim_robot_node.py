"""sim_robot_node over real DDS: speaks like the robot's driver for every embodiment."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import Twist, WrenchStamped
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from hybridvla_ros.launch_description import NodeSpec, default_config_dir
from hybridvla_ros.params import from_params, load_node_params
from hybridvla_ros.params.sim_robot import SimRobotParams

pytestmark = pytest.mark.ros


@pytest.mark.parametrize("embodiment", ["franka", "aloha", "hello", "leap"])
def test_sim_robot_publishes_and_follows_commands(ros, embodiment) -> None:
    path = os.path.join(default_config_dir(), f"{embodiment}.yaml")
    p = from_params(SimRobotParams, load_node_params(path, "sim_robot"))
    ros.start([NodeSpec("sim_robot_node", "sim_robot", path)])
    n = ros.node
    states: list[tuple[float, JointState]] = []
    images: list[tuple[float, Image]] = []
    wrenches: list[WrenchStamped] = []
    n.create_subscription(JointState, p.joint_states_topic, lambda m: states.append((time.monotonic(), m)), 200)
    n.create_subscription(Image, p.camera_topic, lambda m: images.append((time.monotonic(), m)),
                           qos_profile_sensor_data)
    if p.wrench_topic:
        n.create_subscription(WrenchStamped, p.wrench_topic, wrenches.append, 200)
    extra: dict[str, list[Image]] = {c: [] for c in list(p.cameras)[1:]}  # the MuJoCo robots' other cameras
    for camera, topic in list(p.cameras.items())[1:]:
        n.create_subscription(Image, topic, extra[camera].append, qos_profile_sensor_data)
    assert ros.spin_until(lambda: len(images) > 2 and all(len(v) > 2 for v in extra.values()), 30.0), ros.logs()
    states.clear()
    images.clear()
    for frames in extra.values():
        frames.clear()
    window_s = 2.0
    ros.spin_for(window_s)
    # Every camera the parameter file names is rendered at the camera rate, each its own view.
    assert list(extra) == {"franka": ["wrist"], "aloha": ["cam_low", "cam_left_wrist", "cam_right_wrist"]}.get(
        embodiment, [])
    anchor = bytes(images[-1][1].data)
    for camera, frames in extra.items():
        rate = p.extra_camera_rate_hz
        assert 0.5 * rate * window_s <= len(frames) <= 1.25 * rate * window_s, (camera, len(frames), len(images))
        assert (frames[-1].width, frames[-1].height, frames[-1].encoding) == (p.image_width, p.image_height, "rgb8")
        assert frames[-1].header.frame_id == f"{camera}_optical_frame" and bytes(frames[-1].data) != anchor
    # ~100 Hz joint states and ~30 Hz images, joints named as the driver names them. The floors
    # are half the rate: on a busy 2-core machine ALOHA's four cameras slowed joint_states to
    # 68 Hz (the rates themselves are the benchmarks' business); the ceilings catch duplicates.
    assert 50 * window_s <= len(states) <= 115 * window_s and 15 * window_s <= len(images) <= 36 * window_s, \
        (len(states), len(images))
    # The commanded joints, then the observed-only ones (franka's MuJoCo suction cup: 0.0, not holding).
    js = states[-1][1]
    assert list(js.name) == [*p.joint_names, *p.state_joints]
    assert len(js.position) == len(js.velocity) == len(js.name)
    if embodiment == "franka":
        assert p.physics == "mujoco" and list(p.state_joints) == ["suction_cup"]
        assert list(js.position)[-1] == 0.0 and list(js.velocity)[-1] == 0.0
    else:
        assert not p.state_joints
    img = images[-1][1]
    assert (img.width, img.height, img.encoding) == (p.image_width, p.image_height, "rgb8")
    if p.wrench_topic:
        assert wrenches

    dim = len(p.joint_names)
    start = np.asarray(states[-1][1].position)[:dim]
    kind = p.command_type
    if kind == "geometry_msgs/Twist":
        pub = n.create_publisher(Twist, p.command_topic, 10)
        for _ in range(40):
            pub.publish(Twist(linear=type(Twist().linear)(x=0.2)))
            ros.spin_for(0.025)
    else:
        goal = start.copy()
        goal[0] += 0.05
        if kind == "std_msgs/Float64MultiArray":
            pub = n.create_publisher(Float64MultiArray, p.command_topic, 10)
            msg = Float64MultiArray(data=goal.tolist())
        else:
            pub = n.create_publisher(JointTrajectory, p.command_topic, 10)
            # The driver's order is not ours: the sim must match joints by name.
            order = list(reversed(range(len(goal))))
            msg = JointTrajectory(joint_names=[p.joint_names[i] for i in order],
                                  points=[JointTrajectoryPoint(positions=goal[order].tolist())])
        for _ in range(40):
            pub.publish(msg)
            ros.spin_for(0.025)
    moved = np.asarray(states[-1][1].position)[:dim] - start
    assert moved[0] > 0.02, f"{embodiment} did not move: {moved}"
    assert np.all(np.abs(moved[1:]) < 0.02)


def test_reset_starts_a_new_repeatable_episode_and_scene_is_checked(ros) -> None:
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter
    from std_msgs.msg import Bool, Float64
    from std_srvs.srv import Trigger

    path = os.path.join(default_config_dir(), "leap.yaml")
    ros.start([NodeSpec("sim_robot_node", "sim_robot", path, {"seed": 5})])
    n = ros.node
    errors: list[float] = []
    success: list[bool] = []
    n.create_subscription(Float64, "sim_robot/task_error", lambda m: errors.append(m.data), 50)
    n.create_subscription(Bool, "sim_robot/task_success", lambda m: success.append(m.data), 50)
    assert ros.spin_until(lambda: len(errors) > 3 and len(success) > 3, 30.0), ros.logs()
    assert success[-1] is False  # the hand starts away from its target

    reset = n.create_client(Trigger, "sim_robot/reset")

    def call(client, request):
        assert client.wait_for_service(timeout_sec=10.0)
        future = client.call_async(request)
        assert ros.spin_until(future.done, 10.0)
        return future.result()

    first = call(reset, Trigger.Request())
    assert first.success and "seed 6" in first.message and "scene nominal" in first.message
    ros.spin_for(0.2)
    errors.clear()
    assert ros.spin_until(lambda: len(errors) > 2, 5.0)
    error_after_first = errors[-1]
    second = call(reset, Trigger.Request())
    assert "seed 7" in second.message
    ros.spin_for(0.2)
    errors.clear()
    assert ros.spin_until(lambda: len(errors) > 2, 5.0)
    assert abs(errors[-1] - error_after_first) > 1e-4  # a new target: another episode

    # The kinematic sim has one scene: a 'shifted' request is refused, the node keeps running.
    setp = n.create_client(SetParameters, "/sim_robot/set_parameters")
    res = call(setp, SetParameters.Request(parameters=[Parameter("scene", value="shifted").to_parameter_msg()]))
    assert not res.results[0].successful and "mujoco" in res.results[0].reason
    assert "seed 8" in call(reset, Trigger.Request()).message
    # An evaluation replays chosen scenes: a new seed is the next episode's seed.
    res = call(setp, SetParameters.Request(parameters=[Parameter("seed", value=42).to_parameter_msg()]))
    assert res.results[0].successful
    assert "seed 42" in call(reset, Trigger.Request()).message
    assert "seed 43" in call(reset, Trigger.Request()).message


def test_state_joints_the_simulator_does_not_report_are_a_clear_error(ros, tmp_path) -> None:
    """aloha's MuJoCo scene has no suction cup: naming one in state_joints stops the node at start."""
    import subprocess
    import sys

    import yaml

    with open(os.path.join(default_config_dir(), "aloha.yaml"), encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    doc["/**"]["ros__parameters"]["state_joints"] = ["suction_cup"]
    path = tmp_path / "aloha_suction.yaml"
    path.write_text(yaml.safe_dump(doc))
    spec = NodeSpec("sim_robot_node", "sim_robot", str(path))
    proc = subprocess.run([sys.executable, "-m", spec.module, *spec.ros_arguments()], env=ros.env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "sim_robot.state_joints" in proc.stderr and "suction_cup" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_expert_planning_never_slows_the_sensors(ros) -> None:
    """The MuJoCo Franka with the expert planning as fast as it may (100 Hz asked, a plan
    takes 25+ ms): joint states and camera frames keep their rates while chunks come out.
    (Planned in the node's own thread, joint states fell to ~30 /s here, 12 /s on a busy
    machine.) Rates from the stamps, over a window that starts once all three streams flow."""
    from diagnostic_msgs.msg import DiagnosticArray

    from hybridvla_msgs.msg import ActionChunk
    from hybridvla_ros.nodes.sim_robot_node import PLANNER_DIAGNOSTIC_NAME

    path = os.path.join(default_config_dir(), "franka.yaml")
    p = from_params(SimRobotParams, load_node_params(path, "sim_robot"))
    assert p.physics == "mujoco"
    ros.start([NodeSpec("sim_robot_node", "sim_robot", path, {"expert_chunk_rate_hz": 100.0})])
    n = ros.node
    states: list[float] = []
    frames: list[float] = []
    chunks: list[ActionChunk] = []
    diags: list[dict[str, str]] = []

    def stamp(m) -> float:
        return m.header.stamp.sec + 1e-9 * m.header.stamp.nanosec

    def on_diag(msg: DiagnosticArray) -> None:
        diags.extend({kv.key: kv.value for kv in s.values} for s in msg.status if s.name == PLANNER_DIAGNOSTIC_NAME)

    n.create_subscription(JointState, p.joint_states_topic, lambda m: states.append(stamp(m)), 500)
    n.create_subscription(Image, p.camera_topic, lambda m: frames.append(stamp(m)), qos_profile_sensor_data)
    n.create_subscription(ActionChunk, "sim_robot/expert_chunk", chunks.append, 50)
    n.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 20)
    # Ready: the worker process is up and plans arrive (its start takes seconds).
    assert ros.spin_until(lambda: len(chunks) >= 3 and states and frames, 60.0), ros.logs()
    states.clear()
    frames.clear()
    chunks.clear()
    assert ros.spin_until(lambda: len(chunks) >= 30 and len(states) >= 2 and len(frames) >= 2, 60.0), ros.logs()
    js_rate = (len(set(states)) - 1) / (max(states) - min(states))
    frame_rate = (len(set(frames)) - 1) / (max(frames) - min(frames))
    assert js_rate >= 0.5 * p.joint_state_rate_hz, (js_rate, frame_rate)
    assert frame_rate >= 0.5 * p.camera_rate_hz, (js_rate, frame_rate)
    # Each chunk is the expert's full plan, stamped with the state it was planned from.
    c = chunks[-1]
    assert (c.chunk_length, c.action_dim, c.head_type) == (p.chunk_size, len(p.joint_names), "sim_expert")
    assert len(c.actions) == p.chunk_size * len(p.joint_names) and np.all(np.isfinite(c.actions))
    assert min(states) - 1.0 <= stamp(c) <= max(states) + 0.1
    # Ticks that found a plan still running were skipped and counted, none failed.
    assert ros.spin_until(lambda: bool(diags) and int(diags[-1]["plans_published"]) > 0, 10.0)
    assert int(diags[-1]["plans_skipped"]) > 0 and diags[-1]["plans_failed"] == "0", diags[-1]


def test_a_multi_point_trajectory_is_followed_point_by_point(ros) -> None:
    """A JointTrajectory of several points (the safety filter's ``trajectory_points`` > 1) is
    followed as a joint_trajectory_controller does, each point at its time_from_start: a plan
    that goes out and comes back moves the joint out and back (taking only the last point would
    not move it at all); one whose times go back is refused and the robot stays put."""
    path = os.path.join(default_config_dir(), "franka.yaml")
    p = from_params(SimRobotParams, load_node_params(path, "sim_robot"))
    assert p.command_type == "trajectory_msgs/JointTrajectory"
    ros.start([NodeSpec("sim_robot_node", "sim_robot", path)])
    n = ros.node
    states: list[np.ndarray] = []
    dim = len(p.joint_names)
    n.create_subscription(JointState, p.joint_states_topic,
                          lambda m: states.append(np.asarray(m.position)[:dim]), 200)
    assert ros.spin_until(lambda: len(states) > 20, 30.0), ros.logs()
    pub = n.create_publisher(JointTrajectory, p.command_topic, 10)
    assert ros.spin_until(lambda: pub.get_subscription_count() > 0, 10.0)

    def trajectory(offsets: list[float], period_s: float = 0.02, times: list[float] | None = None) -> JointTrajectory:
        start = states[-1]
        points = []
        for k, off in enumerate(offsets):
            q = start.copy()
            q[3] += off
            t = (k + 1) * period_s if times is None else times[k]
            points.append(JointTrajectoryPoint(positions=q.tolist(),
                                               time_from_start=Duration(sec=int(t), nanosec=int(round((t % 1) * 1e9)))))
        return JointTrajectory(joint_names=list(p.joint_names), points=points)

    # Refused: the times go back (the last point, 0.05 rad out, would otherwise be the target).
    start = states[-1].copy()
    pub.publish(trajectory([0.01, 0.03, 0.05], times=[0.02, 0.06, 0.04]))
    ros.spin_for(0.6)
    assert np.abs(states[-1] - start).max() < 0.005, states[-1] - start
    # Out by 0.05 rad and back to the start in 0.2 s: the joint goes out and comes back.
    start = states[-1].copy()
    out_and_back = trajectory([0.01, 0.02, 0.03, 0.04, 0.05, 0.04, 0.03, 0.02, 0.01, 0.0])
    states.clear()
    pub.publish(out_and_back)
    ros.spin_for(1.0)
    excursion = np.array([s[3] - start[3] for s in states])
    assert excursion.max() > 0.03, excursion.round(4)
    assert abs(excursion[-1]) < 0.005, excursion.round(4)
