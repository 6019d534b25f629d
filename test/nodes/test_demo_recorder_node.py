"""demo_recorder_node over real DDS: episodes from the robot's topics, a kill -9, an unwritable root, a full disk.

This test process plays the robot (joint_states with the arm's joints shuffled among extra ones and the suction
cup on a JointState of its own, camera frames, the controller's JointTrajectory in another joint order, the
latched task) and the operator (the recorder's services). Everything waits for what the recorder says on its
status topic (frames counted, episodes saved), never for a clock.
"""
from __future__ import annotations

import json
import os
import signal
from typing import Any

import numpy as np
import pytest
from builtin_interfaces.msg import Duration
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from hybridvla_ros.core.recording import finished_episodes, read_episode
from hybridvla_ros.launch_description import NodeSpec, default_config_dir
from hybridvla_ros.params import from_params, load_node_params
from hybridvla_ros.params.embodiment import EmbodimentParams

pytestmark = pytest.mark.ros
FRANKA = os.path.join(default_config_dir(), "franka.yaml")
LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)
H, W = 48, 64
TASK = "stack the red cube on the blue one"
WRIST, WRIST_TOPIC = (24, 32), "wrist_camera/image_raw"


class Robot:
    """The robot's topics, published from the test process at 50 Hz (camera 25 Hz)."""

    def __init__(self, ros: Any, p: EmbodimentParams, prefix: str = "") -> None:
        self.ros, self.p = ros, p
        n = ros.node
        self.k = 0
        self.camera_on = True
        self.home = np.asarray(p.home_position)
        self.js_pub = n.create_publisher(JointState, prefix + p.joint_states_topic, QoSProfile(depth=10))
        self.cam_pub = n.create_publisher(Image, prefix + p.camera_topic, qos_profile_sensor_data)
        self.wrist_pub = n.create_publisher(Image, prefix + WRIST_TOPIC, qos_profile_sensor_data)
        self.cmd_pub = n.create_publisher(JointTrajectory, prefix + p.command_topic, QoSProfile(depth=10))
        self.task_pub = n.create_publisher(String, prefix + "task", LATCHED)
        self.task_pub.publish(String(data=TASK))
        self.status: list[dict] = []
        n.create_subscription(String, prefix + "demo_recorder/status", lambda m: self.status.append(json.loads(m.data)),
                              LATCHED)
        self.prefix = prefix
        n.create_timer(0.02, self._tick)

    def q(self, k: int) -> np.ndarray:
        return self.home + 0.001 * k

    def command(self, k: int) -> np.ndarray:
        return self.q(k) + 0.01 * np.arange(len(self.home))  # tells the joints apart

    def _tick(self) -> None:
        self.k += 1
        stamp = self.ros.node.get_clock().now().to_msg()
        names = [*reversed(self.p.joint_names), "panda_finger_joint1"]
        q = self.q(self.k)
        values = [*q[::-1].tolist(), 0.04]
        self.js_pub.publish(JointState(header=_header(stamp), name=names, position=values))
        self.js_pub.publish(JointState(header=_header(stamp), name=["suction_cup"], position=[float(self.k % 2)]))
        traj = JointTrajectory(header=_header(stamp), joint_names=list(reversed(self.p.joint_names)))
        traj.points = [JointTrajectoryPoint(positions=self.command(self.k)[::-1].tolist(),
                                            time_from_start=Duration(sec=0, nanosec=20_000_000))]
        self.cmd_pub.publish(traj)
        if self.camera_on and self.k % 2 == 0:
            img = np.full((H, W, 3), self.k % 256, np.uint8)
            msg = Image(header=_header(stamp), height=H, width=W, encoding="rgb8", step=W * 3, data=img.tobytes())
            self.cam_pub.publish(msg)
        if self.k % 2 == 1:  # the wrist camera: another resolution, its own timing
            img = np.full((*WRIST, 3), 255 - self.k % 256, np.uint8)
            self.wrist_pub.publish(Image(header=_header(stamp), height=WRIST[0], width=WRIST[1], encoding="rgb8",
                                         step=WRIST[1] * 3, data=img.tobytes()))

    def latest(self) -> dict:
        return self.status[-1] if self.status else {}

    def call(self, name: str, srv: Any, **fields: Any) -> Any:
        return call(self.ros, self.prefix + "demo_recorder/" + name, srv, **fields)


def call(ros: Any, name: str, srv: Any, **fields: Any) -> Any:
    """Call the service ``name`` from the test node; its answer."""
    client = ros.node.create_client(srv, name)
    assert ros.spin_until(client.service_is_ready, 30.0), f"{name} never came up\n{ros.logs()}"
    future = client.call_async(srv.Request(**fields))
    assert ros.spin_until(future.done, 30.0), f"{name} did not answer"
    ros.node.destroy_client(client)
    return future.result()


def _header(stamp: Any) -> Any:
    from std_msgs.msg import Header
    return Header(stamp=stamp, frame_id="base")


def params() -> EmbodimentParams:
    return from_params(EmbodimentParams, load_node_params(FRANKA, "sync"))


def test_episodes_are_recorded_from_the_topics_and_a_kill_loses_only_the_one_being_recorded(ros, tmp_path) -> None:
    p = params()
    root = tmp_path / "rec"
    launcher = ros.start([NodeSpec("demo_recorder_node", "demo_recorder", FRANKA,
                                   {"root": str(root), "min_free_mb": 0.0,
                                    "extra_cameras": [f"wrist={WRIST_TOPIC}"]})])
    robot = Robot(ros, p)
    # Ready: up, and the latched task has reached it (a clean-clone run on a busy machine started recording
    # before discovery brought the task: the first frames had the parameter file's instruction).
    assert ros.spin_until(lambda: robot.latest().get("recording") is False and robot.latest().get("task") == TASK,
                          30.0), ros.logs()

    # Episode 0: a success; the camera drops out for a while in the middle.
    assert robot.call("start_episode", Trigger).success
    assert ros.spin_until(lambda: robot.latest().get("frames", 0) >= 15, 30.0), ros.logs()
    robot.camera_on = False
    assert ros.spin_until(lambda: robot.latest()["skipped"]["stale_image"] > 0, 30.0), ros.logs()
    frames_at_drop = robot.latest()["frames"]
    robot.camera_on = True
    assert ros.spin_until(lambda: robot.latest()["frames"] >= frames_at_drop + 15, 30.0), ros.logs()
    res = robot.call("stop_episode", SetBool, data=True)
    assert res.success and "saved episode 0" in res.message, res.message

    # Episode 1: a failure. Episode 2: being recorded when the recorder is killed.
    assert robot.call("start_episode", Trigger).message == "recording episode 1"
    assert ros.spin_until(lambda: robot.latest().get("frames", 0) >= 5, 30.0)
    assert robot.call("stop_episode", SetBool, data=False).success
    assert robot.call("start_episode", Trigger).message == "recording episode 2"
    assert ros.spin_until(lambda: robot.latest().get("frames", 0) >= 5, 30.0)
    assert (root / "episodes" / "episode_000002.partial").is_dir()
    os.kill(launcher.procs["demo_recorder"].pid, signal.SIGKILL)

    # The launcher restarts it: the unfinished episode is gone, the finished ones are whole, numbering goes on
    # after them.
    robot.status.clear()

    def restarted() -> bool:
        launcher.supervise()  # restarts a dead node, as hybridvla run / ros2 launch's respawn do
        return robot.latest().get("saved", {}).get("episodes") == 2 and not robot.latest()["recording"]

    assert ros.spin_until(restarted, 60.0), ros.logs()
    assert not (root / "episodes" / "episode_000002.partial").exists()
    assert robot.call("start_episode", Trigger).message == "recording episode 2"  # after the last finished one
    assert robot.call("discard_episode", Trigger).success

    eps = [read_episode(path) for path in finished_episodes(root)]
    assert [(e.index, e.success) for e in eps] == [(0, True), (1, False)]
    ep = eps[0]
    assert ep.meta["state_names"] == [*p.joint_names, "suction_cup"] and ep.meta["fps"] == 50
    assert ep.images["exterior"].shape[1:] == (H, W, 3) and set(ep.task) == {TASK}
    assert ep.images["wrist"].shape == (len(ep), *WRIST, 3) and ep.meta["cameras"] == ["exterior", "wrist"]
    # The action is the controller's command in the parameter file's joint order (it was sent reversed).
    offsets = ep.action - ep.state[:, :7]
    np.testing.assert_allclose(np.median(offsets, axis=0), 0.01 * np.arange(7), atol=2e-3)
    # The state is the measured joints by name, then the suction cup from its own JointState.
    assert set(np.unique(ep.state[:, 7])) <= {0.0, 1.0}
    moved = ep.state[:, :7] - np.asarray(p.home_position)  # the test robot moves every joint by the same amount
    assert np.ptp(moved, axis=1).max() < 1e-5
    # One frame per control period while inputs were fresh; the camera's outage cost frames, not the episode.
    dt = np.diff(ep.stamp_ns) * 1e-9
    assert 0.015 < np.median(dt) < 0.04, np.median(dt)
    assert dt.max() > 0.25  # the gap where the camera was out
    assert np.all(np.diff(ep.stamp_ns) > 0)


def test_an_unwritable_root_and_a_full_disk_are_clear_errors_and_the_recorder_keeps_running(ros, tmp_path) -> None:
    p = params()
    blocker = tmp_path / "a_file"
    blocker.write_text("a file where the recording directory should be")
    topics = [p.joint_states_topic, p.camera_topic, p.command_topic, "task", "demo_recorder/status",
              "demo_recorder/start_episode", "demo_recorder/stop_episode", "demo_recorder/discard_episode"]
    ros.start([
        NodeSpec("demo_recorder_node", "demo_recorder", FRANKA, {"root": str(blocker / "rec")},
                 remappings=tuple((t, "/bad/" + t) for t in topics)),
        NodeSpec("demo_recorder_node", "full_recorder", FRANKA, {"root": str(tmp_path / "rec"), "min_free_mb": 1e7},
                 remappings=tuple((t, "/full/" + t) for t in topics)),
    ])
    bad, full = Robot(ros, p, "/bad/"), Robot(ros, p, "/full/")
    assert ros.spin_until(lambda: "cannot record under" in bad.latest().get("error", ""), 30.0), ros.logs()
    for _ in range(2):  # refused each time, and it answers again: the node is alive
        res = bad.call("start_episode", Trigger)
        assert not res.success and "cannot record under" in res.message and "Not a directory" in res.message
        res = full.call("start_episode", Trigger)
        assert not res.success and "MiB free" in res.message and "min_free_mb" in res.message, res.message
    assert not full.call("stop_episode", SetBool, data=True).success
    assert ros.spin_until(lambda: "MiB free" in full.latest().get("error", ""), 10.0)
    assert finished_episodes(tmp_path / "rec") == []


@pytest.mark.parametrize("embodiment", ["aloha", "hello"])
def test_a_forward_command_controller_and_a_mobile_base_are_recorded_in_the_action_space(ros, tmp_path,
                                                                                        embodiment: str) -> None:
    """ALOHA's controller takes a Float64MultiArray in joint order; the Stretch base takes a Twist, a velocity, so
    its action is the graph's absolute (x, y, yaw) target on action_command (action_source: auto)."""
    from std_msgs.msg import Float64MultiArray

    from hybridvla_msgs.msg import ActionStep

    config = os.path.join(default_config_dir(), f"{embodiment}.yaml")
    p = from_params(EmbodimentParams, load_node_params(config, "sync"))
    root = tmp_path / "rec"
    ros.start([NodeSpec("demo_recorder_node", "demo_recorder", config, {"root": str(root), "min_free_mb": 0.0})])
    n = ros.node
    status: list[dict] = []
    n.create_subscription(String, "demo_recorder/status", lambda m: status.append(json.loads(m.data)), LATCHED)
    js_pub = n.create_publisher(JointState, p.joint_states_topic, QoSProfile(depth=10))
    cam_pubs = [n.create_publisher(Image, t, qos_profile_sensor_data) for t in p.cameras.values()]  # ALOHA: four
    twist_base = p.command_type == "geometry_msgs/Twist"
    cmd_pub = (n.create_publisher(ActionStep, "action_command", QoSProfile(depth=10)) if twist_base
               else n.create_publisher(Float64MultiArray, p.command_topic, QoSProfile(depth=10)))
    target = np.asarray(p.home_position) + 0.01 * np.arange(p.action_dim)

    def tick() -> None:
        stamp = n.get_clock().now().to_msg()
        names = [*p.joint_names, *p.state_joints]
        js_pub.publish(JointState(header=_header(stamp), name=names, position=[0.5] * len(names)))
        img = np.zeros((H, W, 3), np.uint8)
        for cam_pub in cam_pubs:
            cam_pub.publish(Image(header=_header(stamp), height=H, width=W, encoding="rgb8", step=W * 3,
                                  data=img.tobytes()))
        if twist_base:
            cmd_pub.publish(ActionStep(header=_header(stamp), embodiment=embodiment, action=target.tolist()))
        else:
            cmd_pub.publish(Float64MultiArray(data=target.tolist()))

    n.create_timer(1.0 / p.control_rate_hz, tick)
    assert ros.spin_until(lambda: bool(status), 30.0), ros.logs()
    assert call(ros, "demo_recorder/start_episode", Trigger).success
    assert ros.spin_until(lambda: status[-1].get("frames", 0) >= 5, 30.0), ros.logs()
    assert call(ros, "demo_recorder/stop_episode", SetBool, data=True).success
    (ep,) = [read_episode(path) for path in finished_episodes(root)]
    assert ep.meta["fps"] == round(p.control_rate_hz) and ep.action.shape[1] == p.action_dim
    assert ep.meta["cameras"] == list(p.cameras) == (
        ["cam_high", "cam_low", "cam_left_wrist", "cam_right_wrist"] if embodiment == "aloha" else ["head"])
    np.testing.assert_allclose(ep.action, np.broadcast_to(target, ep.action.shape), rtol=1e-6)
    np.testing.assert_allclose(ep.state, 0.5)
