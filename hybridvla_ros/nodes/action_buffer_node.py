"""action_buffer: ActionChunks -> one ActionStep per control period.

Placement in time, seam blending, recycling, holding, the whole-chunk check
(reject or reshape a chunk that breaks the limits) and the plan preview live in
hybridvla_ros.core.action_buffer. Chunk checks are counted on action_buffer/status
and on /diagnostics (``hybridvla: action_buffer chunk checks``, once a second: WARN
while chunks were rejected or reshaped since the last one).
"""
from __future__ import annotations

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from rclpy.qos import QoSProfile
from std_srvs.srv import Trigger

from hybridvla_msgs.msg import ActionChunk, ActionStep, BufferStatus
from hybridvla_ros.core.action_buffer import TRAJECTORY_CHECKS, ActionBuffer
from hybridvla_ros.nodes.common import load_schema, now_s, run_node, s_to_stamp, stamp_to_s
from hybridvla_ros.params.action_buffer import ActionBufferParams

DIAGNOSTIC_NAME = "hybridvla: action_buffer chunk checks"
DIAGNOSTICS_PERIOD_S = 1.0


class ActionBufferNode(Node):
    """Publishes ``policy_action`` (ActionStep), ``action_buffer/status`` (BufferStatus), ``/diagnostics``."""

    def __init__(self) -> None:
        super().__init__("action_buffer", automatically_declare_parameters_from_overrides=True)
        self.params = p = load_schema(self, ActionBufferParams)
        self.buffer = ActionBuffer(p.buffer_config(), action_dim=p.action_dim)
        self.pub = self.create_publisher(ActionStep, "policy_action", QoSProfile(depth=5))
        self.status_pub = self.create_publisher(BufferStatus, "action_buffer/status", QoSProfile(depth=5))
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", QoSProfile(depth=10))
        self.create_subscription(ActionChunk, "action_chunk", self._on_chunk, QoSProfile(depth=5))
        self.create_timer(p.control_period_s, self._tick)
        self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics)
        self._checked_at_last_diag = 0  # chunks rejected + reshaped at the last diagnostics
        # Hand-back from a human: forget old chunks so the next one starts from the current state.
        self.create_service(Trigger, "~/reset", self._on_reset)
        self._was_holding = True

    def _on_reset(self, _req: Trigger.Request, res: Trigger.Response) -> Trigger.Response:
        self.buffer.reset()
        res.success, res.message = True, "action buffer cleared; waiting for a fresh chunk"
        self.get_logger().info(res.message)
        return res

    def _on_chunk(self, msg: ActionChunk) -> None:
        if msg.embodiment and msg.embodiment != self.params.embodiment:
            self.get_logger().warning(f"chunk for {msg.embodiment!r} ignored (this is {self.params.embodiment})",
                                   throttle_duration_sec=5.0)
            return
        flat = np.asarray(msg.actions, dtype=np.float64)
        if msg.action_dim == 0 or flat.size != msg.chunk_length * msg.action_dim:
            self.get_logger().warning(f"chunk rejected: {flat.size} values for {msg.chunk_length}x{msg.action_dim}",
                                      throttle_duration_sec=2.0)
            return
        actions = flat.reshape(msg.chunk_length, msg.action_dim)  # (T, D)
        ok, reason = self.buffer.add_chunk(actions, stamp_to_s(msg.header.stamp), msg.step_period_s,
                                           now_s(self), seq=msg.seq)
        if not ok:
            self.get_logger().warning(f"chunk rejected: {reason}", throttle_duration_sec=2.0)
        elif reason:
            self.get_logger().warning(reason, throttle_duration_sec=2.0)

    def _tick(self) -> None:
        t = now_s(self)
        step = self.buffer.step(t)
        if step.action is not None:
            msg = ActionStep()
            s_to_stamp(t, msg.header.stamp)
            msg.embodiment = self.params.embodiment
            msg.action = step.action.astype(np.float64).tolist()
            msg.source = ActionStep.SOURCE_POLICY
            msg.chunk_seq = max(step.chunk_seq, 0)
            msg.step_index = step.step_index
            msg.blended = step.blended
            if step.preview is not None:
                msg.preview = step.preview.astype(np.float64).ravel().tolist()
            msg.preview_period_s = self.params.control_period_s
            self.pub.publish(msg)
        if step.holding != self._was_holding:
            log = self.get_logger().warn if step.holding else self.get_logger().info
            log("holding: " + step.reason if step.holding else "streaming actions")
            self._was_holding = step.holding
        stats = self.buffer.stats
        status = BufferStatus()
        s_to_stamp(t, status.header.stamp)
        status.holding = step.holding
        status.reason = step.reason
        status.depth = max(step.depth, 0)
        status.chunks_received = stats.get("chunks_received", 0)
        status.chunks_rejected = stats.get("chunks_received", 0) - stats.get("chunks_accepted", 0)
        status.actions_emitted = stats.get("actions_emitted", 0)
        status.actions_skipped_past = stats.get("actions_skipped_past", 0)
        status.chunks_reshaped = stats.get("chunks_reshaped", 0)
        status.last_chunk_check = self.buffer.last_chunk_check
        self.status_pub.publish(status)

    def _publish_diagnostics(self) -> None:
        stats = self.buffer.stats
        checked = stats["chunks_reshaped"] + sum(stats[f"rejected_{k}"] for k in TRAJECTORY_CHECKS)
        if checked != self._checked_at_last_diag:
            level, message = DiagnosticStatus.WARN, self.buffer.last_chunk_check
        else:
            level, message = DiagnosticStatus.OK, (f"chunk_check {self.params.chunk_check}: "
                                                   f"{stats['chunks_accepted']} chunks accepted")
        self._checked_at_last_diag = checked
        keys = ("chunks_received", "chunks_accepted", "chunks_rejected", "chunks_reshaped",
                *(f"rejected_{k}" for k in TRAJECTORY_CHECKS), *(f"reshaped_{k}" for k in TRAJECTORY_CHECKS))
        out = DiagnosticArray()
        s_to_stamp(now_s(self), out.header.stamp)
        out.status.append(DiagnosticStatus(
            level=level, name=DIAGNOSTIC_NAME, message=message, hardware_id=self.params.embodiment,
            values=[KeyValue(key=k, value=str(stats[k])) for k in keys]
            + [KeyValue(key="last_chunk_check", value=self.buffer.last_chunk_check)]))
        self.diag_pub.publish(out)


def main(args: list[str] | None = None) -> int:
    """Entry point of the ``action_buffer_node`` executable."""
    return run_node(ActionBufferNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
