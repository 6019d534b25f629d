"""sync: cameras + joint_states (+ wrench) -> one Observation per frame of the anchor camera.

The observation carries every joint the policy observes (``observed_joints``): the
commanded ``joint_names`` in action order, then the observed-only ``state_joints`` (e.g.
franka's ``suction_cup``); a joint_states message lacking any of them is rejected, naming
it. Logic lives in hybridvla_ros.core.sync (pairing, interpolation, stamps against this
node's clock, counters) and core.image (decoding without cv_bridge, size bound); this node
only converts messages.

The robot's other cameras (``extra_cameras``, e.g. ALOHA's cam_low and wrists) ride along: each
observation carries the nearest frame of each within ``max_camera_skew_s`` of the anchor frame
(core.cameras); a camera without one is left out of that observation and counted stale.

The task (the instruction each observation carries) starts as the parameter file's
``instruction`` and follows the latched ``task`` topic (``std_msgs/String``, transient local):
the policy follows a new instruction from the next observation on, and each correction is
recorded with the task it was given under. An empty or oversized task is refused with a WARN.

Every dropped input is logged at WARN, throttled per reason, and counted; the counters,
each source's measured clock offset and the image decode time are published on
/diagnostics as ``hybridvla: sync inputs`` (WARN with what to do when something is wrong).
"""
from __future__ import annotations

import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import WrenchStamped
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import String

from hybridvla_msgs.msg import Observation
from hybridvla_ros.core.cameras import CameraSet, CameraSetConfig
from hybridvla_ros.core.image import ImageDecodeError, decode_compressed, decode_raw, resize_for_policy
from hybridvla_ros.core.monitoring import Level
from hybridvla_ros.core.sync import PENDING, ObservationSynchronizer, SyncConfig, SyncedObservation
from hybridvla_ros.nodes.common import load_schema, now_s, rgb8_image, run_node, s_to_stamp, stamp_to_s
from hybridvla_ros.params.sync import SyncParams

DIAGNOSTIC_NAME = "hybridvla: sync inputs"
LOG_EVERY_S = 5.0  # per reason: the first drop is logged at once, then at most one line per reason this often
MAX_TASK_CHARS = 2000  # an instruction, not a document: a longer one is a mistake upstream


class SyncNode(Node):
    """Publishes ``observation`` (hybridvla_msgs/Observation) and ``/diagnostics``."""

    def __init__(self) -> None:
        super().__init__("sync", automatically_declare_parameters_from_overrides=True)
        self.params = load_schema(self, SyncParams)
        p = self.params
        self.sync = ObservationSynchronizer(SyncConfig(
            joint_names=p.observed_joints, held_joints=tuple(p.state_joints), max_skew_s=p.max_skew_s,
            max_age_s=p.max_age_s, wrench_required=p.wrench_required, **p.sync_config_fields()))
        self.extra = CameraSet[np.ndarray](CameraSetConfig(
            names=tuple(p.cameras)[1:], max_skew_s=p.max_camera_skew_s, max_age_s=p.max_age_s,
            max_stamp_future_s=p.max_stamp_future_s, stamp_offset_s=p.camera_stamp_offset_s))
        self._pending_image: tuple[float, np.ndarray, str] | None = None
        self._logged_at: dict[str, float] = {}  # reason -> monotonic time of its last log line
        self._unlogged: dict[str, int] = {}  # reason -> drops since its last log line
        self._decode_max_s = 0.0  # slowest decode since the last diagnostics
        self.pub = self.create_publisher(Observation, "observation", QoSProfile(depth=2))
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", QoSProfile(depth=10))
        if p.image_transport == "compressed":
            self.create_subscription(CompressedImage, p.camera_topic + "/compressed", self._on_image,
                                     qos_profile_sensor_data)
        else:
            self.create_subscription(Image, p.camera_topic, self._on_image, qos_profile_sensor_data)
        for camera, topic in list(p.cameras.items())[1:]:
            if p.image_transport == "compressed":
                self.create_subscription(CompressedImage, topic + "/compressed",
                                         lambda msg, c=camera: self._on_extra_image(c, msg),
                                         qos_profile_sensor_data)
            else:
                self.create_subscription(Image, topic, lambda msg, c=camera: self._on_extra_image(c, msg),
                                         qos_profile_sensor_data)
        self.create_subscription(JointState, p.joint_states_topic, self._on_joint_state, QoSProfile(depth=50))
        if p.wrench_topic:
            self.create_subscription(WrenchStamped, p.wrench_topic, self._on_wrench, QoSProfile(depth=50))
        self.task = p.instruction
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                             reliability=ReliabilityPolicy.RELIABLE)
        self.create_subscription(String, "task", self._on_task, latched)
        self.create_timer(1.0 / p.diagnostics_rate_hz, self._publish_diagnostics)
        self.get_logger().info(
            f"sync for {p.embodiment}: " + ", ".join(f"{t} ({c})" for c, t in p.cameras.items())
            + f" ({p.image_transport}) + {p.joint_states_topic}"
            + (f" + {p.wrench_topic}" if p.wrench_topic else ""))

    # --- logging
    def _warn(self, what: str, reason: str) -> None:
        """One WARN line per reason key at most every LOG_EVERY_S, saying how many were not logged."""
        key = what + ":" + reason.split(":", 1)[0]
        t = time.monotonic()
        last = self._logged_at.get(key)
        if last is not None and t - last < LOG_EVERY_S:
            self._unlogged[key] = self._unlogged.get(key, 0) + 1
            return
        more = self._unlogged.pop(key, 0)
        self._logged_at[key] = t
        suffix = f" (and {more} more since the last such line)" if more else ""
        self.get_logger().warning(f"{what}: {reason}{suffix}")

    def _log_events(self) -> None:
        for event in self.sync.pop_events():
            self.get_logger().warning(event)

    # --- inputs
    def _on_task(self, msg: String) -> None:
        text = msg.data.strip()
        if not text or len(text) > MAX_TASK_CHARS:
            self.get_logger().warning(
                f"task refused ({'empty' if not text else f'{len(text)} characters, max {MAX_TASK_CHARS}'}); "
                f"still: {self.task!r}")
            return
        if text != self.task:
            self.get_logger().info(f"task: {text!r} (was {self.task!r})")
            self.task = text

    def _on_joint_state(self, msg: JointState) -> None:
        ok, reason = self.sync.add_joint_state(
            stamp_to_s(msg.header.stamp), list(msg.name), list(msg.position), list(msg.velocity), now_s(self))
        self._log_events()
        if not ok:
            self._warn("joint_states rejected", reason)
            return
        if self._pending_image is not None:
            obs = self.sync.poll_pending(now_s(self))
            if obs is not None:
                self._publish(obs, self._pending_image[1], self._pending_image[2])
                self._pending_image = None
            elif not self.sync.has_pending:
                self._pending_image = None

    def _on_wrench(self, msg: WrenchStamped) -> None:
        f, t = msg.wrench.force, msg.wrench.torque
        ok, reason = self.sync.add_wrench(
            stamp_to_s(msg.header.stamp), (f.x, f.y, f.z), (t.x, t.y, t.z), now_s(self))
        self._log_events()
        if not ok:
            self._warn("wrench rejected", reason)

    def _decode(self, msg: Image | CompressedImage) -> np.ndarray:
        """(H, W, 3) uint8 RGB of a raw or compressed frame; ImageDecodeError for one that cannot be read."""
        if isinstance(msg, CompressedImage):
            return decode_compressed(msg.format, msg.data, max_pixels=self.params.max_image_pixels)
        return decode_raw(msg.encoding, msg.height, msg.width, msg.step, msg.data, msg.is_bigendian,
                          max_pixels=self.params.max_image_pixels)

    def _on_image(self, msg: Image | CompressedImage) -> None:
        arrival = now_s(self)
        start = time.perf_counter()
        try:
            rgb = self._decode(msg)
        except ImageDecodeError as exc:
            self._decode_failed(exc)
            return
        self._on_frame(stamp_to_s(msg.header.stamp), arrival, rgb, msg.header.frame_id, start)

    def _on_extra_image(self, camera: str, msg: Image | CompressedImage) -> None:
        arrival = now_s(self)
        start = time.perf_counter()
        try:
            rgb = self._decode(msg)
        except ImageDecodeError as exc:
            self._warn(f"camera {camera} frame dropped", self.extra.drop(camera, str(exc))[1])
            return
        self._on_extra_frame(camera, stamp_to_s(msg.header.stamp), arrival, rgb, start)

    def _on_extra_frame(self, camera: str, stamp_s: float, arrival_s: float, rgb: np.ndarray, start: float) -> None:
        image = resize_for_policy(rgb, self.params.observation_image_size)
        self._decode_max_s = max(self._decode_max_s, time.perf_counter() - start)
        ok, reason = self.extra.add(camera, stamp_s, image, arrival_s)
        if not ok:
            self._warn(f"camera {camera} frame dropped", reason)

    def _decode_failed(self, exc: ImageDecodeError) -> None:
        _, reason = self.sync.drop_frame(f"image_{exc.reason}", str(exc))
        self._warn("camera frame dropped", reason)

    def _on_frame(self, stamp_s: float, arrival_s: float, rgb: np.ndarray, frame_id: str, start: float) -> None:
        image = resize_for_policy(rgb, self.params.observation_image_size)
        self._decode_max_s = max(self._decode_max_s, time.perf_counter() - start)
        # Stamps are judged against the arrival time, before decoding took its share.
        obs, reason = self.sync.add_frame(stamp_s, arrival_s)
        self._log_events()
        if obs is not None:
            self._pending_image = None
            self._publish(obs, image, frame_id)
        elif reason == PENDING:
            self._pending_image = (stamp_s, image, frame_id)
        else:
            if not self.sync.has_pending:
                self._pending_image = None
            self._warn("camera frame dropped", reason)

    # --- output
    def _publish(self, obs: SyncedObservation, image: np.ndarray, frame_id: str) -> None:
        p = self.params
        msg = Observation()
        s_to_stamp(obs.stamp_s, msg.header.stamp)
        msg.header.frame_id = frame_id
        msg.embodiment = p.embodiment
        msg.instruction = self.task
        msg.image = rgb8_image(image, obs.stamp_s, frame_id)
        msg.image.data = np.ascontiguousarray(image).tobytes()
        msg.camera_name = p.camera_name
        for camera, near in self.extra.nearest(obs.stamp_s).items():
            msg.extra_camera_names.append(camera)
            msg.extra_images.append(rgb8_image(near.frame, near.stamp_s, camera))
        msg.joint_names = list(p.observed_joints)  # commanded joints, then observed-only ones
        msg.joint_positions = obs.positions.astype(np.float64).tolist()
        msg.joint_velocities = obs.velocities.astype(np.float64).tolist()
        msg.has_wrench = obs.force is not None
        if obs.force is not None and obs.torque is not None:
            f, t = msg.wrench.force, msg.wrench.torque
            f.x, f.y, f.z = (float(v) for v in obs.force)
            t.x, t.y, t.z = (float(v) for v in obs.torque)
        msg.proprio_skew_s = float(obs.skew_s)
        msg.interpolated = bool(obs.interpolated)
        self.pub.publish(msg)

    def _publish_diagnostics(self) -> None:
        t = now_s(self)
        report = self.sync.report(t)
        values = [KeyValue(key=k, value=v) for k, v in report.values]
        level, message = report.level, report.message
        problems = self.extra.problems(t)
        if problems:
            level, message = max(level, Level.WARN), message + "; " + "; ".join(problems)
        values += [KeyValue(key=k, value=str(v) if isinstance(v, int) else f"{v:.6f}")
                   for k, v in self.extra.stats().items()]
        values.append(KeyValue(key="decode_max_ms", value=f"{self._decode_max_s * 1e3:.2f}"))
        values.append(KeyValue(key="max_image_pixels", value=str(self.params.max_image_pixels)))
        self._decode_max_s = 0.0
        out = DiagnosticArray()
        s_to_stamp(t, out.header.stamp)
        out.status.append(DiagnosticStatus(
            level=bytes([int(level)]), name=DIAGNOSTIC_NAME, message=message,
            hardware_id=self.params.embodiment, values=values))
        self.diag_pub.publish(out)


def main(args: list[str] | None = None) -> int:
    """Entry point of the ``sync_node`` executable."""
    return run_node(SyncNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
