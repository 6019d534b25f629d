"""monitor: the graph's health on /diagnostics, markers and an annotated camera image.

Listens to every node's output (observation, action_chunk, policy_action,
action_buffer/status, safety_filter/status, handoff/mode, correction_recorder/count,
adaptation/status), the robot's joint_states (the executed path) and report_outcome
(std_msgs/Bool, True = success: a topic, so any script or operator console can report
an attempt with ``ros2 topic pub --once``). Statistics, levels and marker content live in
hybridvla_ros.core.monitoring; this node converts messages.

Publishes /diagnostics (one DiagnosticStatus ``hybridvla: <node>`` per node of the graph
plus ``hybridvla: task``), monitor/markers (MarkerArray) and monitor/image (rgb8).
"""
from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Duration
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point
from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.qos import DurabilityPolicy, QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, String, UInt64
from visualization_msgs.msg import Marker, MarkerArray

from hybridvla_msgs.msg import ActionChunk, ActionStep, BufferStatus, HandoffMode, Observation, SafetyStatus
from hybridvla_ros.core.image import ImageDecodeError, decode_raw
from hybridvla_ros.core.joints import JointIndex, JointSelectionError, MissingJointsError
from hybridvla_ros.core.monitoring import GraphHealth, MarkerSpec, SafetySample, annotate_image
from hybridvla_ros.nodes.common import load_schema, now_s, run_node, s_to_stamp
from hybridvla_ros.params.monitor import MonitorParams


def marker_msg(spec: MarkerSpec, stamp_s: float) -> Marker:
    """visualization_msgs/Marker from a MarkerSpec."""
    m = Marker()
    m.header.frame_id = spec.frame_id
    s_to_stamp(stamp_s, m.header.stamp)
    m.ns, m.id, m.type, m.action = spec.ns, spec.id, getattr(Marker, spec.type), Marker.ADD
    m.pose.position.x, m.pose.position.y, m.pose.position.z = spec.position
    o = m.pose.orientation
    o.x, o.y, o.z, o.w = spec.orientation
    m.scale.x, m.scale.y, m.scale.z = spec.scale
    m.color.r, m.color.g, m.color.b, m.color.a = spec.colour
    m.text = spec.text
    m.points = [Point(x=x, y=y, z=z) for x, y, z in spec.points]
    m.lifetime = Duration(sec=int(spec.lifetime_s), nanosec=int((spec.lifetime_s % 1.0) * 1e9))
    return m


class MonitorNode(Node):
    """Publishes /diagnostics, ``monitor/markers`` and ``monitor/image``."""

    def __init__(self) -> None:
        super().__init__("monitor", automatically_declare_parameters_from_overrides=True)
        self.params = p = load_schema(self, MonitorParams)
        self.health = GraphHealth(p.monitor_config())
        self._joint_index = JointIndex(p.joint_names)  # the driver's joint_states order, per name list
        self._image_msg: Image | None = None
        self._image_new = False
        reliable = QoSProfile(depth=20)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", QoSProfile(depth=10))
        self.marker_pub = self.create_publisher(MarkerArray, "monitor/markers", QoSProfile(depth=2))
        self.image_pub = self.create_publisher(Image, "monitor/image", QoSProfile(depth=2))
        # Best effort where we only sample: compatible with reliable and best-effort publishers alike.
        self.create_subscription(Observation, "observation", self._on_observation, qos_profile_sensor_data)
        self.create_subscription(JointState, p.joint_states_topic, self._on_joint_state, qos_profile_sensor_data)
        self.create_subscription(ActionChunk, "action_chunk", self._on_chunk, reliable)
        self.create_subscription(ActionStep, "policy_action", self._on_policy_action, reliable)
        self.create_subscription(BufferStatus, "action_buffer/status", self._on_buffer, reliable)
        self.create_subscription(SafetyStatus, "safety_filter/status", self._on_safety, reliable)
        self.create_subscription(HandoffMode, "handoff/mode", self._on_handoff, reliable)
        self.create_subscription(UInt64, "correction_recorder/count", self._on_corrections, reliable)
        self.create_subscription(String, "adaptation/status", self._on_adaptation, reliable)
        self.create_subscription(Bool, "report_outcome", self._on_outcome, reliable)
        self.create_timer(1.0 / p.diagnostics_rate_hz, self._publish_diagnostics)
        self.create_timer(1.0 / p.marker_rate_hz, self._publish_markers)
        if p.image_rate_hz > 0:
            self.create_timer(1.0 / p.image_rate_hz, self._publish_image)
        self._tf_static_pub: Publisher | None = None
        if p.publish_plot_frame and p.resolved_plot_space == "joint":
            self._publish_plot_frame()
        self.get_logger().info(
            f"monitoring {p.embodiment}: expected nodes {list(p.expected_nodes)}, "
            f"{p.resolved_plot_space} plot of dims {list(p.resolved_plot_dims)}")

    def _publish_plot_frame(self) -> None:
        """frame_id -> joint_plot_frame_id on /tf_static, so rviz can place the joint-space curves."""
        try:
            from geometry_msgs.msg import TransformStamped
            from tf2_msgs.msg import TFMessage
        except ImportError:
            p = self.params
            self.get_logger().info(
                f"tf2_msgs is not installed: publish {p.frame_id} -> {p.joint_plot_frame_id} yourself "
                f"(tf2_ros static_transform_publisher) or use {p.joint_plot_frame_id} as rviz's fixed frame")
            return
        p = self.params
        tf = TransformStamped()
        s_to_stamp(now_s(self), tf.header.stamp)
        tf.header.frame_id, tf.child_frame_id = p.frame_id, p.joint_plot_frame_id
        tr = tf.transform.translation
        tr.x, tr.y, tr.z = p.plot_origin_m
        tf.transform.rotation.w = 1.0
        qos = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._tf_static_pub = pub = self.create_publisher(TFMessage, "/tf_static", qos)
        pub.publish(TFMessage(transforms=[tf]))

    # --- inputs
    def _on_observation(self, msg: Observation) -> None:
        self.health.on_observation(now_s(self), msg.proprio_skew_s)
        self._image_msg, self._image_new = msg.image, True

    def _on_joint_state(self, msg: JointState) -> None:
        try:
            positions = self._joint_index.select(msg.name, msg.position, finite=False, require_names=True)
        except MissingJointsError:
            return  # not this robot's joints (another driver on the topic)
        except JointSelectionError as exc:
            self.get_logger().warning(f"joint_states ignored: {exc}", throttle_duration_sec=5.0)
            return
        self.health.on_joint_positions(now_s(self), positions)

    def _on_chunk(self, msg: ActionChunk) -> None:
        flat = np.asarray(msg.actions, dtype=np.float64)
        if msg.action_dim == 0 or flat.size != msg.chunk_length * msg.action_dim:
            return
        self.health.on_chunk(now_s(self), flat.reshape(msg.chunk_length, msg.action_dim),  # (T, D)
                             msg.inference_latency_s, msg.confidence, msg.model_version, msg.seq)

    def _on_policy_action(self, msg: ActionStep) -> None:
        self.health.on_policy_action(now_s(self), msg.action)

    def _on_buffer(self, msg: BufferStatus) -> None:
        self.health.on_buffer_status(now_s(self), msg.holding, msg.reason, msg.depth, msg.chunks_received,
                                     msg.chunks_rejected)

    def _on_safety(self, msg: SafetyStatus) -> None:
        self.health.on_safety_status(now_s(self), SafetySample(
            estop_latched=msg.estop_latched, estop_reason=msg.estop_reason, holding=msg.holding,
            hold_reason=msg.hold_reason, limits_hit=tuple(msg.limits_hit), commands_sent=msg.commands_sent,
            commands_modified=msg.commands_modified, estop_trips=msg.estop_trips,
            watchdog_holds=msg.watchdog_holds, last_force_n=msg.last_force_n, last_torque_nm=msg.last_torque_nm))

    def _on_handoff(self, msg: HandoffMode) -> None:
        self.health.on_handoff_mode(now_s(self), msg.mode, msg.reason, msg.confidence, msg.consecutive_failures)

    def _on_corrections(self, msg: UInt64) -> None:
        self.health.on_correction_count(now_s(self), msg.data)

    def _on_adaptation(self, msg: String) -> None:
        self.health.on_adaptation(now_s(self), msg.data)

    def _on_outcome(self, msg: Bool) -> None:
        self.health.on_outcome(now_s(self), msg.data)

    # --- outputs
    def _publish_diagnostics(self) -> None:
        t = now_s(self)
        out = DiagnosticArray()
        s_to_stamp(t, out.header.stamp)
        for st in self.health.statuses(t):
            out.status.append(DiagnosticStatus(
                level=bytes([int(st.level)]), name=st.diagnostic_name, message=st.message,
                hardware_id=self.params.embodiment, values=[KeyValue(key=k, value=v) for k, v in st.values]))
        self.diag_pub.publish(out)

    def _publish_markers(self) -> None:
        t = now_s(self)
        self.marker_pub.publish(MarkerArray(markers=[marker_msg(m, t) for m in self.health.markers(t)]))

    def _publish_image(self) -> None:
        msg = self._image_msg
        if msg is None or not self._image_new:
            return
        self._image_new = False
        try:
            rgb = decode_raw(msg.encoding, msg.height, msg.width, msg.step, msg.data)
        except ImageDecodeError as exc:
            self.get_logger().warning(f"observation image not drawn: {exc}", throttle_duration_sec=5.0)
            return
        img = annotate_image(rgb, self.health.display(now_s(self)), self.params.image_width_px)
        out = Image()
        out.header = msg.header
        out.height, out.width = int(img.shape[0]), int(img.shape[1])
        out.encoding, out.step = "rgb8", int(img.shape[1] * 3)
        out.data = np.ascontiguousarray(img).tobytes()
        self.image_pub.publish(out)


def main(args: list[str] | None = None) -> int:
    """Entry point of the ``monitor_node`` executable."""
    return run_node(MonitorNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
