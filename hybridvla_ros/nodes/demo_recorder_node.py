"""demo_recorder: teleoperated demonstrations from the robot's topics, at the control rate, episode by episode.

``hybridvla record`` starts it (``ros2 run hybridvla_ros demo_recorder_node --ros-args --params-file
config/franka.yaml`` does the same without the conversion at the end). Works on a real robot and on our
simulators alike: it only listens.

Every control period (``control_rate_hz``, the dataset's fps) while an episode is being recorded it takes one
frame: the latest image of every camera (``camera_topic`` as ``camera_name`` and each ``extra_cameras``
name=topic; raw, or ``<topic>/compressed``; each at its own resolution),
the latest measured positions of the commanded and state joints (``joint_states_topic``, merged by name, so a
gripper on its own JointState counts), the latest commanded action and the task (the latched ``task`` topic,
else the parameter file's ``instruction``). The action is what the robot was commanded: the controller's
command on ``command_topic`` (a JointTrajectory's first point by joint name, or a Float64MultiArray in
joint order), or, with ``action_source: action_command`` (auto for a Twist-driven base), the graph's absolute
targets on ``action_command``. A frame is skipped, and counted by reason on the status topic, when an input is
missing, older than ``max_age_s``, stamped in the future, or malformed: one bad message costs at most its
frames, and nothing here can reach the robot. Periods the timer ran too late to take (a loaded machine) are
counted as ``missed_tick``; every frame keeps its ROS stamp (``ros_stamp_ns`` in the dataset).

Episodes (std_srvs services, so a teleop device's buttons, a script or ``ros2 service call`` can drive them):

- ``demo_recorder/start_episode`` (Trigger): start the next episode;
- ``demo_recorder/stop_episode`` (SetBool, ``data`` = the demonstration succeeded): commit it;
- ``demo_recorder/discard_episode`` (Trigger): drop it.

Finished episodes are committed whole by :class:`hybridvla_ros.core.recording.EpisodeWriter` (fsync, atomic
rename): a kill -9 loses at most the episode being recorded. ``demo_recorder/status`` (std_msgs/String, JSON,
latched; on every change and at 1 Hz) says whether it records, the episode and its frames, what is saved,
frames skipped by reason and the last error. An unwritable root or a full disk is an error on the log and the
status topic and the service's answer; the node keeps running and the robot is not affected.
"""
from __future__ import annotations

import functools
import json
import os
import time
from typing import Any

import numpy as np
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from hybridvla_msgs.msg import ActionStep
from hybridvla_ros.core.image import ImageDecodeError, decode_compressed, decode_raw
from hybridvla_ros.core.joints import JointIndex, JointSelectionError
from hybridvla_ros.core.recording import EpisodeWriter, RecordingError, RecordingLayout, finished_episodes, summarize
from hybridvla_ros.nodes.common import load_schema, now_s, run_node, stamp_to_s
from hybridvla_ros.params.demo_recorder import DemoRecorderParams

LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)
SKIP_REASONS = ("no_image", "stale_image", "bad_image", "no_joint_states", "stale_joint_states", "no_command",
                "stale_command", "future_stamp", "bad_frame", "missed_tick")
MAX_TASK_CHARS = 2000


class DemoRecorderNode(Node):
    """Records episodes from the robot's topics; services under ``demo_recorder/``, status on its ``status``."""

    def __init__(self) -> None:
        super().__init__("demo_recorder", automatically_declare_parameters_from_overrides=True)
        self.params = p = load_schema(self, DemoRecorderParams)
        self.root = os.path.abspath(p.resolved_root)
        self.cameras = p.cameras
        self.layout = RecordingLayout(p.embodiment, p.fps, tuple(p.joint_names), tuple(p.observed_joints),
                                      tuple(self.cameras))
        self.source = p.resolved_action_source
        self.task = p.instruction
        self.skipped = dict.fromkeys(SKIP_REASONS, 0)
        self._last_tick_s: float | None = None
        self.last_error = ""
        self.last_saved = ""
        self._images: dict[str, tuple[float, Any]] = {}  # camera -> (stamp s, message), decoded per frame taken
        self._joints: dict[str, tuple[float, float]] = {}  # name -> (stamp s, position)
        self._command: tuple[float, np.ndarray] | None = None  # (stamp s, action (D,))
        self._command_index = JointIndex(p.joint_names)
        self.writer: EpisodeWriter | None = None
        self._saved = {"episodes": 0, "frames": 0, "successes": 0}
        self._open_writer()

        self.status_pub = self.create_publisher(String, "demo_recorder/status", LATCHED)
        for cam, topic in self.cameras.items():
            if p.image_transport == "compressed":
                self.create_subscription(CompressedImage, topic + "/compressed", functools.partial(self._on_image, cam),
                                         qos_profile_sensor_data)
            else:
                self.create_subscription(Image, topic, functools.partial(self._on_image, cam), qos_profile_sensor_data)
        self.create_subscription(JointState, p.joint_states_topic, self._on_joint_state, QoSProfile(depth=50))
        if self.source == "action_command":
            self.create_subscription(ActionStep, "action_command", self._on_action_step, QoSProfile(depth=20))
        elif p.command_type == "trajectory_msgs/JointTrajectory":
            self.create_subscription(JointTrajectory, p.command_topic, self._on_trajectory, QoSProfile(depth=20))
        else:
            self.create_subscription(Float64MultiArray, p.command_topic, self._on_array, QoSProfile(depth=20))
        self.create_subscription(String, "task", self._on_task, LATCHED)
        self.create_service(Trigger, "demo_recorder/start_episode", self._on_start)
        self.create_service(SetBool, "demo_recorder/stop_episode", self._on_stop)
        self.create_service(Trigger, "demo_recorder/discard_episode", self._on_discard)
        self.create_timer(1.0 / p.fps, self._on_tick)
        self.create_timer(1.0, self._publish_status)
        self._publish_status()
        self.get_logger().info(
            f"recording {p.embodiment} at {p.fps} fps to {self.root}: "
            + ", ".join(f"{t} as observation.images.{c}" for c, t in self.cameras.items())
            + f" ({p.image_transport}), {p.joint_states_topic}, action from "
            f"{'action_command' if self.source == 'action_command' else p.command_topic}; "
            "call demo_recorder/start_episode to begin")

    # --- the writer
    def _open_writer(self) -> bool:
        if self.writer is not None:
            return True
        try:
            self.writer = EpisodeWriter(self.root, self.layout, self.params.min_free_mb)
        except RecordingError as exc:
            self._error(f"{exc}; nothing is recorded until it is fixed (retried at the next start_episode); "
                        "the robot is not affected")
            return False
        self._saved = summarize(finished_episodes(self.root))  # then counted as episodes are saved
        if self.writer.removed_partials:
            self.get_logger().warning(f"removed unfinished episodes of an earlier run: {self.writer.removed_partials}")
        return True

    def _error(self, message: str) -> None:
        self.last_error = message
        self.get_logger().error(message)

    # --- inputs (executor thread)
    def _on_image(self, camera: str, msg: Image | CompressedImage) -> None:
        self._images[camera] = (stamp_to_s(msg.header.stamp), msg)

    def _on_joint_state(self, msg: JointState) -> None:
        stamp = stamp_to_s(msg.header.stamp)
        if len(msg.position) != len(msg.name):
            self._skip("bad_frame", f"joint_states with {len(msg.name)} names and {len(msg.position)} positions")
            return
        for name, value in zip(msg.name, msg.position):
            old = self._joints.get(name)
            if old is None or stamp >= old[0]:  # an out-of-order message does not replace a newer one
                self._joints[name] = (stamp, float(value))

    def _take_command(self, stamp: float, action: np.ndarray) -> None:
        if action.shape != (self.params.action_dim,) or not np.isfinite(action).all():
            self._skip("bad_frame", f"command {action.round(4).tolist()} is not {self.params.action_dim} finite "
                                    "numbers")
            return
        if self._command is None or stamp >= self._command[0]:
            self._command = (stamp, action)

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        if not msg.points:
            return
        try:
            action = self._command_index.select(msg.joint_names, msg.points[0].positions, finite=False,
                                                require_names=True)
        except JointSelectionError as exc:
            self._skip("bad_frame", f"command: {exc}")
            return
        self._take_command(stamp_to_s(msg.header.stamp) or now_s(self), action)

    def _on_array(self, msg: Float64MultiArray) -> None:
        self._take_command(now_s(self), np.asarray(msg.data, dtype=np.float64))  # no header: its arrival

    def _on_action_step(self, msg: ActionStep) -> None:
        self._take_command(stamp_to_s(msg.header.stamp) or now_s(self), np.asarray(msg.action, dtype=np.float64))

    def _on_task(self, msg: String) -> None:
        text = msg.data.strip()
        if text and len(text) <= MAX_TASK_CHARS and text != self.task:
            self.get_logger().info(f"task: {text!r} (was {self.task!r})")
            self.task = text

    # --- frames
    def _skip(self, reason: str, detail: str) -> None:
        self.skipped[reason] += 1
        if self.writer is not None and self.writer.recording:
            self.get_logger().warning(f"frame skipped ({reason}, {self.skipped[reason]} so far): {detail}",
                                      throttle_duration_sec=5.0)

    def _fresh(self, what: str, stamp: float, t: float, source: str = "") -> bool:
        p = self.params
        source = source or what
        if stamp > t + p.future_tolerance_s:
            self._skip("future_stamp", f"{source} stamped {stamp - t:.3f} s in the future")
            return False
        if t - stamp > p.max_age_s:
            self._skip(f"stale_{what}", f"latest {source} is {t - stamp:.3f} s old (max_age_s {p.max_age_s})")
            return False
        return True

    def _on_tick(self) -> None:
        w = self.writer
        if w is None or not w.recording:
            return
        t = now_s(self)
        if self._last_tick_s is not None:  # a loaded machine runs the timer late: periods without a frame
            self.skipped["missed_tick"] += max(int(round((t - self._last_tick_s) * self.params.fps)) - 1, 0)
        self._last_tick_s = t
        for cam, topic in self.cameras.items():
            if cam not in self._images:
                return self._skip("no_image", f"nothing on {topic} yet")
            if not self._fresh("image", self._images[cam][0], t, topic):
                return
        wanted = self.layout.state_names
        missing = [n for n in wanted if n not in self._joints]
        if missing:
            return self._skip("no_joint_states", f"no position yet for {missing}")
        oldest = min(self._joints[n][0] for n in wanted)
        if not self._fresh("joint_states", oldest, t):
            return
        if self._command is None:
            return self._skip("no_command", "no command yet")
        if not self._fresh("command", self._command[0], t):
            return
        images = {}
        for cam, (_, msg) in self._images.items():
            try:
                if isinstance(msg, CompressedImage):
                    images[cam] = decode_compressed(msg.format, msg.data)
                else:
                    images[cam] = np.array(decode_raw(msg.encoding, msg.height, msg.width, msg.step, msg.data,
                                                      msg.is_bigendian), dtype=np.uint8, copy=True)
            except ImageDecodeError as exc:
                return self._skip("bad_image", f"{self.cameras[cam]}: {exc}")
        state = np.array([self._joints[n][1] for n in wanted])
        try:
            w.add_frame(images, state, self._command[1], int(round(t * 1e9)), self.task)
        except RecordingError as exc:
            if w.recording:  # a frame that does not fit: the episode goes on
                return self._skip("bad_frame", str(exc))
            self._error(str(exc))  # the write failed: the episode is gone, the node goes on
            self._publish_status()

    # --- services
    def _on_start(self, _req: Trigger.Request, res: Trigger.Response) -> Trigger.Response:
        if not self._open_writer():
            res.success, res.message = False, self.last_error
            return res
        assert self.writer is not None
        try:
            index = self.writer.start()
        except RecordingError as exc:
            self._error(str(exc))
            res.success, res.message = False, str(exc)
            return res
        self.skipped = dict.fromkeys(SKIP_REASONS, 0)
        self._last_tick_s = None
        self.last_error = ""
        res.success, res.message = True, f"recording episode {index}"
        self.get_logger().info(res.message)
        self._publish_status()
        return res

    def _on_stop(self, req: SetBool.Request, res: SetBool.Response) -> SetBool.Response:
        w = self.writer
        if w is None or not w.recording:
            res.success, res.message = False, "no episode is being recorded"
            return res
        frames, index = w.frames, w.episode_index
        try:
            path = w.finish(bool(req.data))
        except RecordingError as exc:
            self._error(str(exc))
            res.success, res.message = False, str(exc)
        else:
            skipped = {k: v for k, v in self.skipped.items() if v}
            self.last_saved = str(path)
            self._saved["episodes"] += 1
            self._saved["frames"] += frames
            self._saved["successes"] += bool(req.data)
            res.success = True
            res.message = (f"saved episode {index}: {frames} frames, {'success' if req.data else 'failure'}"
                           + (f", skipped {skipped}" if skipped else "") + f" -> {path}")
            self.get_logger().info(res.message)
        self._publish_status()
        return res

    def _on_discard(self, _req: Trigger.Request, res: Trigger.Response) -> Trigger.Response:
        index = None if self.writer is None else self.writer.discard()
        res.success = index is not None
        res.message = f"discarded episode {index}" if index is not None else "no episode is being recorded"
        self._publish_status()
        return res

    # --- status
    def status(self) -> dict[str, Any]:
        w = self.writer
        saved = dict(self._saved)
        return {"recording": bool(w and w.recording), "episode": None if w is None else w.episode_index,
                "frames": 0 if w is None else w.frames, "saved": saved, "last_saved": self.last_saved,
                "skipped": dict(self.skipped), "error": self.last_error, "root": self.root,
                "task": self.task, "stamp": time.time()}

    def _publish_status(self) -> None:
        msg = String()
        msg.data = json.dumps(self.status())
        self.status_pub.publish(msg)

    def destroy_node(self) -> None:
        if self.writer is not None and self.writer.recording:
            self.get_logger().warning(f"shutting down while recording episode {self.writer.episode_index}: "
                                      "it is discarded (stop_episode saves an episode)")
            self.writer.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    return run_node(DemoRecorderNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
