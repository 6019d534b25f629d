"""sync_node over real DDS: one observation per frame, joint state interpolated at its stamp."""
from __future__ import annotations

import os
import re

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image, JointState

from hybridvla_msgs.msg import Observation
from hybridvla_ros.launch_description import NodeSpec, default_config_dir
from hybridvla_ros.params import from_params, load_node_params
from hybridvla_ros.params.sync import SyncParams

pytestmark = pytest.mark.ros
FRANKA = os.path.join(default_config_dir(), "franka.yaml")
_PUBLISHERS: dict = {}


def _stream(ros, p: SyncParams, seconds: float, image_msg, with_state: bool = True) -> int:
    """100 Hz joint states (driver order shuffled, an extra joint) and 30 Hz frames; q_i(t) = i + t,
    and the state joints (franka's suction_cup) at 1.0 unless ``with_state`` is False."""
    n = ros.node
    # Publishers are made once per test: a new one would need DDS discovery again.
    key = (id(n), p.joint_states_topic, p.camera_topic, p.image_transport)
    if key not in _PUBLISHERS:
        _PUBLISHERS.clear()
        _PUBLISHERS[key] = (
            n.create_publisher(JointState, p.joint_states_topic, 50),
            n.create_publisher(type(image_msg(0.0)), p.camera_topic + (
                "/compressed" if p.image_transport == "compressed" else ""), 10))
    js_pub, img_pub = _PUBLISHERS[key]
    state = list(p.state_joints) if with_state else []
    names = ["panda_finger_joint1", *state, *reversed(p.joint_names)]
    t0 = ros.now_s()
    next_frame = t0
    frames = 0
    while ros.now_s() - t0 < seconds:
        t = ros.now_s()
        js = JointState(name=names)
        js.header.stamp = n.get_clock().now().to_msg()
        rel = t - t0
        js.position = [0.04] + [1.0] * len(state) + [float(i + rel) for i in reversed(range(len(p.joint_names)))]
        js_pub.publish(js)
        if t >= next_frame:
            # Frames are stamped at capture, 15 ms in the past, as a camera driver would.
            msg = image_msg(t - 0.015)
            img_pub.publish(msg)
            frames += 1
            next_frame += 1 / 30
        ros.spin_for(0.01)
    return frames


def _wait_for_sync_node(ros, p: SyncParams) -> None:
    """Until the started sync node's topics are discovered (a loaded machine can take seconds)."""
    camera = p.camera_topic + ("/compressed" if p.image_transport == "compressed" else "")
    assert ros.spin_until(lambda: ros.node.count_publishers("observation") > 0
                          and ros.node.count_subscribers(p.joint_states_topic) > 0
                          and ros.node.count_subscribers(camera) > 0, 60.0), ros.logs()


def _start_with_diagnostics(ros, overrides: dict) -> tuple:  # type: ignore[no-untyped-def]
    """Start the sync node with ``overrides``; (its params, the observations, the /diagnostics arrays)."""
    from diagnostic_msgs.msg import DiagnosticArray

    p = from_params(SyncParams, load_node_params(FRANKA, "sync") | overrides)
    ros.start([NodeSpec("sync_node", "sync", FRANKA, overrides)])
    _wait_for_sync_node(ros, p)
    obs: list[Observation] = []
    diags: list[DiagnosticArray] = []
    ros.node.create_subscription(Observation, "observation", obs.append, 50)
    ros.node.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 50)
    return p, obs, diags


def _raw_bgr(ros):
    def make(stamp_s: float) -> Image:
        img = np.zeros((48, 64, 3), np.uint8)
        img[:, :, 0] = 255  # blue in BGR
        msg = Image(height=48, width=64, encoding="bgr8", step=64 * 3, data=img.tobytes())
        msg.header.stamp.sec = int(stamp_s)
        msg.header.stamp.nanosec = int((stamp_s % 1) * 1e9)
        return msg
    return make


def test_observations_interpolate_joint_state_at_frame_stamp(ros) -> None:
    p = from_params(SyncParams, load_node_params(FRANKA, "sync"))
    ros.start([NodeSpec("sync_node", "sync", FRANKA)])
    _wait_for_sync_node(ros, p)
    obs: list[Observation] = []
    ros.node.create_subscription(Observation, "observation", obs.append, 50)
    _stream(ros, p, 1.0, _raw_bgr(ros))  # discovery
    obs.clear()
    sent = _stream(ros, p, 2.0, _raw_bgr(ros))
    ros.spin_for(0.2)
    # Nearly every frame becomes an observation (a loaded machine may delay a few past max_age_s).
    assert 0.7 * sent <= len(obs) <= sent, (sent, ros.logs())
    for o in obs:
        q = np.asarray(o.joint_positions)
        # Every observed joint: the arm in action order, then the suction cup, whatever the driver's order.
        assert list(o.joint_names) == [*p.joint_names, "suction_cup"] == list(p.observed_joints)
        assert len(o.joint_velocities) == 8 and q[7] == 1.0
        q = q[:7]
        # q_i = i + t: every joint has the same offset from its index, whatever the driver's order.
        offsets = q - np.arange(7)
        assert np.allclose(offsets, offsets[0], atol=1e-9)
        assert o.proprio_skew_s <= p.max_skew_s
        assert o.image.encoding == "rgb8" and o.image.width == p.observation_image_size
        pixel = np.frombuffer(bytes(o.image.data), np.uint8).reshape(o.image.height, o.image.width, 3)[0, 0]
        assert tuple(pixel) == (0, 0, 255)  # bgr8 blue arrives as rgb8 blue
    assert sum(o.interpolated for o in obs) >= 0.9 * len(obs)


def test_compressed_images_and_garbage_frames(ros) -> None:
    p = from_params(SyncParams, load_node_params(FRANKA, "sync") | {"image_transport": "compressed"})
    ros.start([NodeSpec("sync_node", "sync", FRANKA, {"image_transport": "compressed"})])
    _wait_for_sync_node(ros, p)
    obs: list[Observation] = []
    ros.node.create_subscription(Observation, "observation", obs.append, 50)
    ok_jpeg = cv2.imencode(".jpg", np.full((48, 64, 3), 200, np.uint8))[1].tobytes()
    frames = {"i": 0}

    def make(stamp_s: float) -> CompressedImage:
        frames["i"] += 1
        # Every other frame is garbage: the node must drop it and keep going.
        data = ok_jpeg if frames["i"] % 2 else b"not a jpeg"
        msg = CompressedImage(format="rgb8; jpeg compressed bgr8", data=data)
        msg.header.stamp.sec = int(stamp_s)
        msg.header.stamp.nanosec = int((stamp_s % 1) * 1e9)
        return msg

    _stream(ros, p, 1.0, make)
    obs.clear()
    sent = _stream(ros, p, 2.0, make)
    ros.spin_for(0.2)
    good = (sent + 1) // 2
    assert 0.6 * good <= len(obs) <= good + 1, (sent, len(obs), ros.logs())
    assert all(not r.dead() for r in ros.runners), "garbage frames must not kill the node"


def test_joint_states_without_a_state_joint_are_rejected_naming_it(ros) -> None:
    """franka observes suction_cup: joint_states lacking it give no observation, like a missing arm joint."""
    p = from_params(SyncParams, load_node_params(FRANKA, "sync"))
    ros.start([NodeSpec("sync_node", "sync", FRANKA)])
    _wait_for_sync_node(ros, p)
    obs: list[Observation] = []
    ros.node.create_subscription(Observation, "observation", obs.append, 50)
    sent = _stream(ros, p, 1.5, _raw_bgr(ros), with_state=False)
    ros.spin_for(0.2)
    assert sent > 20 and not obs
    assert ros.spin_until(lambda: "suction_cup" in ros.logs(), 5.0), ros.logs()
    log = ros.logs()
    assert "joint_states rejected: missing_joints" in log and "['suction_cup']" in log
    # The same stream with the suction cup is served (the node lived on).
    _stream(ros, p, 1.0, _raw_bgr(ros))
    ros.spin_for(0.2)
    assert obs and not ros.runners[0].dead()


# --------------------------------------------- bad stamps, clock offsets, oversized frames (issue 18)


def _sync_inputs(diags: list) -> list:
    """Every 'hybridvla: sync inputs' status received, oldest first."""
    return [s for d in diags for s in d.status if s.name == "hybridvla: sync inputs"]


def _stamped(stamp_s: float, msg):
    msg.header.stamp.sec = int(stamp_s // 1)
    msg.header.stamp.nanosec = int(round((stamp_s % 1) * 1e9)) % 1_000_000_000
    return msg


def test_a_future_stamped_frame_costs_one_message_and_every_drop_is_on_diagnostics(ros) -> None:
    """Measured bug: one frame stamped 5 s ahead stopped all observations for ~5 s. Now it costs that frame;
    the drop, a future joint_states and a 4000x3000 frame are logged at WARN and counted on /diagnostics."""
    from diagnostic_msgs.msg import DiagnosticStatus

    p, obs, diags = _start_with_diagnostics(ros, {"diagnostics_rate_hz": 5.0})
    make = _raw_bgr(ros)
    _stream(ros, p, 1.0, make)  # discovery
    js_pub, img_pub = next(iter(_PUBLISHERS.values()))

    def received(key: str) -> int:
        statuses = _sync_inputs(diags)
        return int(dict((kv.key, kv.value) for kv in statuses[-1].values)[key]) if statuses else 0

    # Sent until the node has counted it (a best-effort frame may be lost on the way): one frame 5 s ahead,
    # one joint_states 5 s ahead, one 4000x3000 frame.
    def send_bad() -> None:
        now = ros.now_s()
        if received("dropped_future_stamp") == 0:
            img_pub.publish(make(now + 5.0))
        if received("joint_states_rejected_future_stamp") == 0:
            js = _stamped(now + 5.0, JointState(name=["panda_finger_joint1", "suction_cup", *p.joint_names]))
            js.position = [0.0] * (2 + len(p.joint_names))
            js_pub.publish(js)
        if received("dropped_image_too_large") == 0:
            img_pub.publish(_stamped(now, Image(height=3000, width=4000, encoding="rgb8", step=12000)))

    def all_counted() -> bool:
        return (received("dropped_future_stamp") > 0 and received("joint_states_rejected_future_stamp") > 0
                and received("dropped_image_too_large") > 0)

    for _ in range(20):
        send_bad()
        before = len(obs)
        # Frames from the same publisher arrive in order: those after the bad one must be served at once.
        sent = _stream(ros, p, 0.5, make)
        ros.spin_for(0.2)
        assert len(obs) - before >= 0.6 * sent, (sent, len(obs) - before, ros.logs())
        if ros.spin_until(all_counted, 1.0):
            break
    assert all_counted(), ros.logs()
    # One of each: the good stream behind them was never dropped as out of order or skewed by them.
    assert received("dropped_future_stamp") == 1 and received("joint_states_rejected_future_stamp") == 1
    assert received("dropped_out_of_order") == 0 and received("joint_states_rejected_out_of_order") == 0
    assert received("dropped_image_too_large") == 1
    statuses = _sync_inputs(diags)
    values = dict((kv.key, kv.value) for kv in statuses[-1].values)
    # The measured offset of each source (arrival - stamp): small and positive on one machine.
    assert 0.0 < float(values["camera_offset_s"]) < p.max_age_s, values
    assert -p.max_stamp_future_s < float(values["joint_states_offset_s"]) < p.max_age_s, values
    assert values["max_image_pixels"] == str(p.max_image_pixels)
    warned = [s for s in statuses if s.level == DiagnosticStatus.WARN]
    assert any("frames dropped:" in s.message and "future_stamp 1" in s.message for s in warned), \
        [s.message for s in statuses]
    assert any("image_too_large 1" in s.message for s in warned)
    # Each reason gets a WARN log line, not a debug one.
    assert ros.spin_until(lambda: "camera frame dropped: future_stamp" in ros.logs()
                          and "camera frame dropped: image_too_large" in ros.logs()
                          and "joint_states rejected: future_stamp" in ros.logs(), 5.0), ros.logs()
    assert "4000x3000" in ros.logs() and "[WARN]" in ros.logs()
    assert not ros.runners[0].dead()


def test_a_camera_clock_offset_is_measured_warned_and_corrected_by_parameter(ros) -> None:
    """The camera's clock is 0.5 s behind: camera_stamp_offset_s 0.3 corrects part of it; the rest (0.2 s, past
    max_stamp_offset_s) is measured and reported WARN with the value that would correct it all."""
    from diagnostic_msgs.msg import DiagnosticStatus

    p, obs, diags = _start_with_diagnostics(
        ros, {"camera_stamp_offset_s": 0.3, "max_age_s": 1.0, "diagnostics_rate_hz": 5.0})
    plain = _raw_bgr(ros)
    stamps: list[float] = []

    def behind(stamp_s: float) -> Image:
        stamps.append(stamp_s - 0.5)
        return plain(stamp_s - 0.5)

    _stream(ros, p, 1.0, behind)
    sent = _stream(ros, p, 1.5, behind)
    assert ros.spin_until(lambda: len(obs) >= 0.6 * sent, 5.0), (sent, len(obs), ros.logs())
    # Observations are stamped on the node's clock: the camera's stamp plus the configured 0.3 s.
    sent_stamps = np.asarray(stamps)
    for o in obs:
        t = o.header.stamp.sec + o.header.stamp.nanosec * 1e-9
        assert np.min(np.abs(sent_stamps + 0.3 - t)) < 1e-6

    def warned() -> DiagnosticStatus | None:
        for s in reversed(_sync_inputs(diags)):
            if s.level == DiagnosticStatus.WARN and "camera stamps are" in s.message:
                return s
        return None

    assert ros.spin_until(lambda: warned() is not None, 5.0), [s.message for s in _sync_inputs(diags)]
    status = warned()
    assert status is not None
    values = dict((kv.key, kv.value) for kv in status.values)
    assert values["camera_stamp_offset_s"] == "0.300000"
    residual = float(values["camera_offset_s"])  # 0.2 s of clock plus the 15 ms capture delay and transport
    assert 0.2 < residual < 0.2 + p.max_age_s
    assert "behind their arrival" in status.message
    # The value that would correct it all: 0.3 + the residual (0.5 s and the delay).
    assert re.search(r"set camera_stamp_offset_s: \+0\.[5-9]\d\d", status.message), status.message


def test_the_task_topic_changes_the_instruction_each_observation_carries(ros) -> None:
    """Issue 14, item 5: the task on a latched topic. A task published before the node starts reaches it
    (transient local) and every observation carries it instead of the file's instruction; a new task
    takes over; an empty one is refused with a WARN and the current one stays."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from std_msgs.msg import String

    latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)
    task_pub = ros.node.create_publisher(String, "task", latched)
    task_pub.publish(String(data="pick the red cube"))  # before the sync node exists
    p, obs, _ = _start_with_diagnostics(ros, {})
    assert p.instruction != "pick the red cube"
    make = _raw_bgr(ros)
    assert ros.spin_until(lambda: "task: 'pick the red cube'" in ros.logs(), 30.0), ros.logs()
    _stream(ros, p, 1.0, make)
    assert obs and all(o.instruction == "pick the red cube" for o in obs), ros.logs()
    task_pub.publish(String(data="  put the cube in the bowl "))
    assert ros.spin_until(lambda: "task: 'put the cube in the bowl'" in ros.logs(), 30.0), ros.logs()
    obs.clear()
    _stream(ros, p, 1.0, make)
    assert obs and all(o.instruction == "put the cube in the bowl" for o in obs)
    task_pub.publish(String(data="   "))
    assert ros.spin_until(lambda: "task refused (empty)" in ros.logs(), 30.0), ros.logs()
    obs.clear()
    _stream(ros, p, 0.5, make)
    assert obs and all(o.instruction == "put the cube in the bowl" for o in obs)


def _solid(color: tuple[int, int, int], stamp_s: float, size: tuple[int, int] = (48, 64)) -> Image:
    img = np.empty((*size, 3), np.uint8)
    img[:] = color
    msg = Image(height=size[0], width=size[1], encoding="rgb8", step=size[1] * 3, data=img.tobytes())
    msg.header.stamp.sec = int(stamp_s)
    msg.header.stamp.nanosec = int((stamp_s % 1) * 1e9)
    return msg


def test_several_cameras_at_their_own_rates_and_one_that_stops(ros) -> None:
    """franka.yaml's exterior camera stamps each observation; a wrist camera at half its rate and a top camera
    that stops after 1.5 s ride along: each observation carries the nearest frame of each camera within
    max_camera_skew_s, the stopped camera is left out (observations go on) and counted on /diagnostics."""
    overrides = {"extra_cameras": ["wrist=wrist_camera/color/image_raw", "top=top_camera/image_raw"],
                 "max_camera_skew_s": 0.1}
    p, obs, diags = _start_with_diagnostics(ros, overrides)
    n = ros.node
    js_pub = n.create_publisher(JointState, p.joint_states_topic, 50)
    pubs = {c: n.create_publisher(Image, t, 10) for c, t in p.cameras.items()}
    colors = {"exterior": (255, 0, 0), "wrist": (0, 255, 0), "top": (0, 0, 255)}
    rates = {"exterior": 30.0, "wrist": 15.0, "top": 30.0}
    assert ros.spin_until(lambda: all(n.count_subscribers(t) > 0 for t in p.cameras.values()), 60.0), ros.logs()
    sent: dict[str, list[float]] = {c: [] for c in p.cameras}

    def stream(seconds: float, stop_top_after_s: float) -> None:
        t0 = ros.now_s()
        due = {c: t0 + 0.013 * i for i, c in enumerate(p.cameras)}  # out of phase
        while (t := ros.now_s()) - t0 < seconds:
            js = JointState(name=[*p.joint_names, "suction_cup"], position=[0.0] * 8)
            js.header.stamp = n.get_clock().now().to_msg()
            js_pub.publish(js)
            for camera, pub in pubs.items():
                if t >= due[camera] and not (camera == "top" and t - t0 > stop_top_after_s):
                    pub.publish(_solid(colors[camera], t - 0.01))  # stamped at capture, 10 ms ago
                    sent[camera].append(t - 0.01)
                    due[camera] += 1.0 / rates[camera]
            ros.spin_for(0.01)

    stream(1.0, 10.0)  # discovery; everything runs
    obs.clear()
    stream(1.5, 10.0)
    both = list(obs)
    obs.clear()
    diags.clear()
    stream(2.0, 0.0)  # the top camera has stopped
    ros.spin_for(0.3)
    after = [o for o in obs if "top" not in o.extra_camera_names]
    assert len(both) >= 0.6 * 45 and len(after) >= 0.6 * 60, (len(both), len(after), ros.logs())
    for o in both + after:
        assert o.camera_name == "exterior" and len(o.extra_images) == len(o.extra_camera_names)
        stamp = o.header.stamp.sec + o.header.stamp.nanosec * 1e-9
        for camera, image in zip(o.extra_camera_names, o.extra_images):
            t = image.header.stamp.sec + image.header.stamp.nanosec * 1e-9
            assert abs(t - stamp) <= 0.1 + 1e-6 and min(abs(np.array(sent[camera]) - t)) < 1e-6
            assert (image.encoding, image.width, image.height) == ("rgb8", 96, 96)
            pixel = np.frombuffer(bytes(image.data), np.uint8).reshape(96, 96, 3)[0, 0]
            assert tuple(pixel) == colors[camera], camera
    # While all ran, nearly every observation had all three; after the stop, none has the top camera.
    assert sum(list(o.extra_camera_names) == ["wrist", "top"] for o in both) >= 0.9 * len(both)
    assert all("wrist" in o.extra_camera_names for o in after[3:])
    assert len(obs) - len(after) <= 8  # the top camera's last frames serve a few observations at most

    def top_stale(d) -> int:  # type: ignore[no-untyped-def]
        for status in d.status:
            values = {kv.key: kv.value for kv in status.values}
            if "top_stale" in values and "camera top: left out of" in status.message:
                assert status.level == bytes([1]) and "last frame arrived" in status.message, status.message
                return int(values["top_stale"])
        return 0

    assert ros.spin_until(lambda: any(top_stale(d) > 0 for d in diags), 10.0), ros.logs()
