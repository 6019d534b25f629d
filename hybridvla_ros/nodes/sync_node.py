"""sync: camera + joint_states (+ wrench) -> one Observation per camera frame.

The observation carries every joint the policy observes (``observed_joints``): the
commanded ``joint_names`` in action order, then the observed-only ``state_joints`` (e.g.
franka's ``suction_cup``); a joint_states message lacking any of them is rejected, naming
it. Logic lives in hybridvla_ros.core.sync (pairing, interpolation) and core.image
(decoding without cv_bridge); this node only converts messages.
"""
from __future__ import annotations

import numpy as np
from geometry_msgs.msg import WrenchStamped
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, JointState

from hybridvla_msgs.msg import Observation
from hybridvla_ros.core.image import ImageDecodeError, decode_compressed, decode_raw, resize_for_policy
from hybridvla_ros.core.sync import ObservationSynchronizer, SyncConfig, SyncedObservation
from hybridvla_ros.nodes.common import load_schema, now_s, run_node, s_to_stamp, stamp_to_s
from hybridvla_ros.params.sync import SyncParams


class SyncNode(Node):
    """Publishes ``observation`` (hybridvla_msgs/Observation)."""

    def __init__(self) -> None:
        super().__init__("sync", automatically_declare_parameters_from_overrides=True)
        self.params = load_schema(self, SyncParams)
        p = self.params
        self.sync = ObservationSynchronizer(SyncConfig(
            joint_names=p.observed_joints, held_joints=tuple(p.state_joints), max_skew_s=p.max_skew_s,
            max_age_s=p.max_age_s,
            wrench_required=p.wrench_required))
        self._pending_image: tuple[float, np.ndarray, str] | None = None
        self.decode_errors = 0
        self.pub = self.create_publisher(Observation, "observation", QoSProfile(depth=2))
        if p.image_transport == "compressed":
            self.create_subscription(CompressedImage, p.camera_topic + "/compressed", self._on_compressed,
                                     qos_profile_sensor_data)
        else:
            self.create_subscription(Image, p.camera_topic, self._on_image, qos_profile_sensor_data)
        self.create_subscription(JointState, p.joint_states_topic, self._on_joint_state, QoSProfile(depth=50))
        if p.wrench_topic:
            self.create_subscription(WrenchStamped, p.wrench_topic, self._on_wrench, QoSProfile(depth=50))
        self.get_logger().info(
            f"sync for {p.embodiment}: {p.camera_topic} ({p.image_transport}) + {p.joint_states_topic}"
            + (f" + {p.wrench_topic}" if p.wrench_topic else ""))

    # --- inputs
    def _on_joint_state(self, msg: JointState) -> None:
        ok, reason = self.sync.add_joint_state(
            stamp_to_s(msg.header.stamp), list(msg.name), list(msg.position), list(msg.velocity))
        if not ok:
            self.get_logger().warning(f"joint_states rejected: {reason}", throttle_duration_sec=2.0)
            return
        if self._pending_image is not None:
            obs = self.sync.poll_pending(now_s(self))
            if obs is not None:
                self._publish(obs, self._pending_image[1], self._pending_image[2])
                self._pending_image = None

    def _on_wrench(self, msg: WrenchStamped) -> None:
        f, t = msg.wrench.force, msg.wrench.torque
        self.sync.add_wrench(stamp_to_s(msg.header.stamp), (f.x, f.y, f.z), (t.x, t.y, t.z))

    def _on_image(self, msg: Image) -> None:
        try:
            rgb = decode_raw(msg.encoding, msg.height, msg.width, msg.step, msg.data, msg.is_bigendian)
        except ImageDecodeError as exc:
            self._decode_failed(str(exc))
            return
        self._on_frame(stamp_to_s(msg.header.stamp), rgb, msg.header.frame_id)

    def _on_compressed(self, msg: CompressedImage) -> None:
        try:
            rgb = decode_compressed(msg.format, msg.data)
        except ImageDecodeError as exc:
            self._decode_failed(str(exc))
            return
        self._on_frame(stamp_to_s(msg.header.stamp), rgb, msg.header.frame_id)

    def _decode_failed(self, reason: str) -> None:
        self.decode_errors += 1
        self.get_logger().warning(f"camera frame dropped: {reason}", throttle_duration_sec=2.0)

    def _on_frame(self, stamp_s: float, rgb: np.ndarray, frame_id: str) -> None:
        image = resize_for_policy(rgb, self.params.observation_image_size)
        obs, reason = self.sync.add_frame(stamp_s, now_s(self))
        if obs is not None:
            self._publish(obs, image, frame_id)
        elif reason == "pending":
            self._pending_image = (stamp_s, image, frame_id)
        else:
            self.get_logger().debug(f"frame dropped: {reason}")

    # --- output
    def _publish(self, obs: SyncedObservation, image: np.ndarray, frame_id: str) -> None:
        p = self.params
        msg = Observation()
        s_to_stamp(obs.stamp_s, msg.header.stamp)
        msg.header.frame_id = frame_id
        msg.embodiment = p.embodiment
        msg.instruction = p.instruction
        msg.image.header = msg.header
        msg.image.height, msg.image.width = int(image.shape[0]), int(image.shape[1])
        msg.image.encoding = "rgb8"
        msg.image.step = int(image.shape[1] * 3)
        msg.image.data = np.ascontiguousarray(image).tobytes()
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


def main(args: list[str] | None = None) -> int:
    """Entry point of the ``sync_node`` executable."""
    return run_node(SyncNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
