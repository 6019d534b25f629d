"""correction_recorder: each human command, with what the robot saw and what the policy proposed, stored durably.

A command on ``action_command`` is a correction when its source is SOURCE_HUMAN, or when
the latest ``handoff/mode`` is HUMAN_OVERRIDE and the command is not a hold. It is paired
with the latest ``observation`` and ``policy_action`` and committed by
hybridvla_ros.core.correction_store on a writer thread, so a slow disk never holds up
this node's callbacks; it is counted, published on ``corrections`` and reported on
``correction_recorder/count`` only after the commit. Every ``adapt_every`` stored
corrections a JSON ``correction_recorder/adapt_request`` asks the adaptation worker to
fine-tune. A store that cannot be opened or written is logged and counted on
``correction_recorder/failures``; the node keeps running.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import String, UInt64

from hybridvla_msgs.msg import ActionStep, Correction, HandoffMode, Observation
from hybridvla_ros.core.correction_store import CorrectionRecord, CorrectionStore, CorrectionWriter
from hybridvla_ros.core.image import ImageDecodeError, decode_raw, resize_for_policy
from hybridvla_ros.nodes.common import load_schema, now_s, run_node, stamp_to_s
from hybridvla_ros.params.correction_recorder import CorrectionRecorderParams

LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)


class CorrectionRecorderNode(Node):
    """Publishes ``corrections``, ``correction_recorder/count``, ``/failures`` and ``/adapt_request``."""

    def __init__(self) -> None:
        super().__init__("correction_recorder", automatically_declare_parameters_from_overrides=True)
        self.params = p = load_schema(self, CorrectionRecorderParams)
        self.store_path = os.path.abspath(p.resolved_store_path)
        self.session_id = f"{p.embodiment}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}"
        self.skipped: dict[str, int] = {"no_observation": 0, "stale_observation": 0, "rate_limited": 0,
                                        "bad_observation": 0, "queue_full": 0}
        self._observation: Observation | None = None
        self._proposal: tuple[float, ActionStep] | None = None
        self._mode = HandoffMode.AUTONOMOUS
        self._last_stored_s = -float("inf")
        self._last_human_s = -float("inf")
        self._episode = -1

        self.corrections_pub = self.create_publisher(Correction, "corrections", QoSProfile(depth=10))
        self.count_pub = self.create_publisher(UInt64, "correction_recorder/count", LATCHED)
        self.failures_pub = self.create_publisher(UInt64, "correction_recorder/failures", LATCHED)
        self.adapt_pub = self.create_publisher(String, "correction_recorder/adapt_request", QoSProfile(depth=5))

        self.writer = CorrectionWriter(
            lambda: CorrectionStore(self.store_path, p.replay_capacity, max_store_mb=p.max_store_mb),
            on_commit=self._on_commit, on_error=self._on_error, max_pending=p.max_pending)
        if self.writer.store is None:
            self.get_logger().error(
                f"{self.writer.open_error}; corrections are NOT being stored (retrying when they arrive); "
                "control is not affected")
            self._publish_count(0)
        else:
            count = self.writer.store.count()
            self.get_logger().info(f"recording corrections to {self.store_path} ({count} already stored, "
                                   f"session {self.session_id})")
            self._publish_count(count)
        self._publish_failures()

        self.create_subscription(Observation, "observation", self._on_observation, QoSProfile(depth=2))
        self.create_subscription(ActionStep, "policy_action", self._on_policy_action, QoSProfile(depth=5))
        self.create_subscription(ActionStep, "action_command", self._on_command, QoSProfile(depth=50))
        self.create_subscription(HandoffMode, "handoff/mode", self._on_mode, QoSProfile(depth=10))

    # --- inputs (executor thread)
    def _on_observation(self, msg: Observation) -> None:
        self._observation = msg

    def _on_policy_action(self, msg: ActionStep) -> None:
        self._proposal = (now_s(self), msg)

    def _on_mode(self, msg: HandoffMode) -> None:
        if msg.mode == HandoffMode.HUMAN_OVERRIDE and self._mode != HandoffMode.HUMAN_OVERRIDE:
            self._last_human_s = -float("inf")  # a new override is a new episode
        self._mode = msg.mode

    def _is_correction(self, msg: ActionStep) -> bool:
        if msg.source == ActionStep.SOURCE_HUMAN:
            return True
        return self._mode == HandoffMode.HUMAN_OVERRIDE and msg.source != ActionStep.SOURCE_HOLD


    def _image(self, img: Image) -> np.ndarray:
        """A decoded (H, W, 3) uint8 copy of ``img``, resized to image_size when set; ImageDecodeError /
        ValueError for one that cannot be read."""
        image = decode_raw(img.encoding, img.height, img.width, img.step, img.data, img.is_bigendian)
        if self.params.image_size:
            image = resize_for_policy(image, self.params.image_size)
        return np.array(image, dtype=np.uint8, copy=True)  # the message buffer is not ours
    def _skip(self, reason: str, detail: str) -> None:
        self.skipped[reason] += 1
        self.get_logger().warning(f"correction skipped ({reason}, {self.skipped[reason]} so far): {detail}",
                               throttle_duration_sec=5.0)

    def _on_command(self, msg: ActionStep) -> None:
        if not self._is_correction(msg):
            return
        p = self.params
        t = now_s(self)
        if t - self._last_human_s > p.episode_gap_s:
            self._episode += 1
        self._last_human_s = t
        if t - self._last_stored_s < p.min_interval_s:
            self.skipped["rate_limited"] += 1
            return
        obs = self._observation
        if obs is None:
            self._skip("no_observation", "no observation received yet")
            return
        age = t - stamp_to_s(obs.header.stamp)
        if age > p.max_observation_age_s:
            self._skip("stale_observation", f"latest observation is {age:.3f} s old (max_observation_age_s="
                                            f"{p.max_observation_age_s})")
            return
        try:
            image = self._image(obs.image)
            # the robot's other cameras that had a frame for this observation (sync leaves a stale one out)
            extra = {camera: self._image(img) for camera, img in zip(obs.extra_camera_names, obs.extra_images)
                     if camera and camera != obs.camera_name}
        except (ImageDecodeError, ValueError) as exc:
            self._skip("bad_observation", f"image: {exc}")
            return
        proposed = np.zeros(0)
        if self._proposal is not None and t - self._proposal[0] <= p.max_proposal_age_s:
            proposed = np.asarray(self._proposal[1].action, dtype=np.float64)
        stamp = stamp_to_s(msg.header.stamp) or t
        w = obs.wrench
        record = CorrectionRecord(
            stamp_s=stamp, embodiment=obs.embodiment or p.embodiment, instruction=obs.instruction or p.instruction,
            image=image,  # (H, W, 3)
            joint_positions=np.asarray(obs.joint_positions, dtype=np.float64),
            human_action=np.asarray(msg.action, dtype=np.float64), proposed_action=proposed,
            session_id=self.session_id, episode_index=self._episode, joint_names=tuple(obs.joint_names),
            joint_velocities=np.asarray(obs.joint_velocities, dtype=np.float64),
            wrench=np.array([w.force.x, w.force.y, w.force.z, w.torque.x, w.torque.y, w.torque.z])
            if obs.has_wrench else np.zeros(0),
            frame_id=obs.header.frame_id, camera_name=obs.camera_name, extra_images=extra)
        if not self.writer.submit(record, (obs, msg)):
            self._skip("queue_full", f"{p.max_pending} corrections are waiting for the disk")
            self._publish_failures()
            return
        self._last_stored_s = t

    # --- writer thread
    def _on_commit(self, count: int, record: CorrectionRecord, context: Any) -> None:
        obs, command = context
        out = Correction()
        out.header = command.header
        out.observation = obs
        out.proposed_action = record.proposed_action.tolist()
        out.human_action = record.human_action.tolist()
        self.corrections_pub.publish(out)
        self._publish_count(count)
        if count % self.params.adapt_every == 0:
            request = {"store_path": self.store_path, "count": count, "embodiment": self.params.embodiment,
                       "session_id": self.session_id}
            self.adapt_pub.publish(String(data=json.dumps(request)))
            lat = np.asarray(self.writer.add_latency_s) * 1e3
            self.get_logger().info(
                f"{count} corrections stored; adaptation requested (add latency median {np.median(lat):.1f} ms, "
                f"max {lat.max():.1f} ms)")

    def _on_error(self, exc: Exception, failures: int) -> None:
        self.get_logger().error(f"correction not stored ({failures} failures so far): {exc}",
                                throttle_duration_sec=5.0)
        self._publish_failures()

    def _publish_count(self, count: int) -> None:
        self.count_pub.publish(UInt64(data=int(count)))

    def _publish_failures(self) -> None:
        self.failures_pub.publish(UInt64(data=int(self.writer.failures + self.writer.dropped)))

    def destroy_node(self) -> None:
        """Commit what is still queued before the node goes away."""
        self.writer.close()
        lat = np.asarray(self.writer.add_latency_s) * 1e3
        summary = f"{self.writer.failures} failures, skipped {self.skipped}"
        if lat.size:
            summary += (f", add latency median {np.median(lat):.1f} ms p95 {np.percentile(lat, 95):.1f} ms "
                        f"max {lat.max():.1f} ms")
        self.get_logger().info(summary)
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """Entry point of the ``correction_recorder_node`` executable."""
    return run_node(CorrectionRecorderNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
