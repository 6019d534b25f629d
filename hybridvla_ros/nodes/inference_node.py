"""inference: newest Observation -> ActionChunk, at batch 1, never on a backlog.

The subscription keeps only the newest observation (depth 1); a timer runs the policy
every ``recompute_every`` control periods on it, if it is new and fresh. The chunk is
stamped with the observation's stamp so the action buffer can place it in time.
"""
from __future__ import annotations

import numpy as np
from rclpy.node import Node
from rclpy.qos import QoSProfile

from hybridvla_msgs.msg import ActionChunk, Observation
from hybridvla_ros.core.image import ImageDecodeError, decode_raw
from hybridvla_ros.model.checkpoint import CheckpointError
from hybridvla_ros.model.runner import PolicyRunner
from hybridvla_ros.nodes.common import load_schema, now_s, run_node, stamp_to_s
from hybridvla_ros.params import ParameterError
from hybridvla_ros.params.inference import InferenceParams


class InferenceNode(Node):
    """Publishes ``action_chunk`` (hybridvla_msgs/ActionChunk)."""

    def __init__(self) -> None:
        super().__init__("inference", automatically_declare_parameters_from_overrides=True)
        self.params = p = load_schema(self, InferenceParams)
        try:
            self.runner = PolicyRunner.load(p.checkpoint_path, p.embodiment, num_threads=p.num_threads)
        except (CheckpointError, ValueError, FileNotFoundError) as exc:
            raise ParameterError(f"inference.checkpoint_path: {p.checkpoint_path!r}: {exc}") from None
        if self.runner.action_dim != p.action_dim:
            raise ParameterError(
                f"inference.checkpoint_path: head for {p.embodiment} has action_dim "
                f"{self.runner.action_dim}, the parameter file says {p.action_dim}")
        self._latest: Observation | None = None
        self._last_used_stamp_s = -1.0
        self._seq = 0
        self.skipped_stale = 0
        self.pub = self.create_publisher(ActionChunk, "action_chunk", QoSProfile(depth=2))
        self.create_subscription(Observation, "observation", self._on_observation, QoSProfile(depth=1))
        self.create_timer(p.recompute_every * p.control_period_s, self._tick)
        self.get_logger().info(
            f"policy {p.checkpoint_path} for {p.embodiment} ({self.runner.head_type} head, "
            f"chunk {self.runner.chunk_size}) every {p.recompute_every * p.control_period_s * 1e3:.0f} ms")

    def _on_observation(self, msg: Observation) -> None:
        self._latest = msg

    def _tick(self) -> None:
        msg = self._latest
        if msg is None:
            return
        stamp_s = stamp_to_s(msg.header.stamp)
        if stamp_s <= self._last_used_stamp_s:
            return  # nothing new: the buffer keeps recycling the last chunk
        age_s = now_s(self) - stamp_s
        if age_s > self.params.max_observation_age_s:
            self.skipped_stale += 1
            self.get_logger().warn(f"observation is {age_s:.3f} s old; not running the policy on it",
                                   throttle_duration_sec=2.0)
            return
        self._last_used_stamp_s = stamp_s
        q = np.asarray(msg.joint_positions, dtype=np.float64)
        try:
            image = decode_raw(msg.image.encoding, msg.image.height, msg.image.width, msg.image.step, msg.image.data)
            pred = self.runner.predict(image, q, msg.instruction or self.params.instruction,
                                       num_samples=self.params.confidence_samples)
        except (ImageDecodeError, ValueError) as exc:
            self.get_logger().warn(f"observation rejected: {exc}", throttle_duration_sec=2.0)
            return
        out = ActionChunk()
        out.header = msg.header
        out.embodiment = self.params.embodiment
        out.chunk_length, out.action_dim = (int(n) for n in pred.actions.shape)
        out.step_period_s = self.params.control_period_s
        out.actions = pred.actions.astype(np.float64).ravel().tolist()  # (T, D) row-major
        out.confidence = float(pred.confidence)
        out.inference_latency_s = float(pred.latency_s)
        out.head_type = pred.head_type
        out.seq = self._seq
        out.model_version = int(self.runner.model_version)
        self._seq += 1
        self.pub.publish(out)


def main(args: list[str] | None = None) -> int:
    """Entry point of the ``inference_node`` executable."""
    return run_node(InferenceNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
