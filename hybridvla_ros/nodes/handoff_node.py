"""handoff: decides who drives the robot: the policy, a human on the teleop override, or nobody.

Sits between the action buffer (``policy_action``) and the safety filter
(``action_command``). The rules (confidence pause, escalation, deadman and teleop
timeouts, conservative mode, hand-back) live in hybridvla_ros.core.handoff; this node
translates messages and calls it.

Policy actions are forwarded as they arrive (the action buffer already paces them at
the control rate); human commands and holds are sent by the control-rate timer, so
the safety filter gets one command per period either way. The OOD score comes from
the observation's joint positions (core.handoff.OodScorer: the largest per-joint
z-score against the training statistics when given, and against a stand-in from the
joint limits that trips near a limit).
"""
from __future__ import annotations

import numpy as np
from geometry_msgs.msg import Twist
from rcl_interfaces.msg import SetParametersResult
from rclpy.client import Client
from rclpy.node import Node
from rclpy.qos import QoSProfile
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64, String
from std_srvs.srv import Trigger

from hybridvla_msgs.msg import ActionChunk, ActionStep, HandoffMode, Observation
from hybridvla_ros.core.command import BaseTwist
from hybridvla_ros.core.handoff import (
    HandoffConfig,
    HandoffStateMachine,
    Mode,
    OodScorer,
    Output,
    OutputKind,
)
from hybridvla_ros.core.joints import JointIndex, JointSelectionError
from hybridvla_ros.nodes.common import load_schema, now_s, run_node, s_to_stamp
from hybridvla_ros.params.handoff import HandoffParams

SOURCES = {OutputKind.POLICY: ActionStep.SOURCE_POLICY, OutputKind.HUMAN: ActionStep.SOURCE_HUMAN,
           OutputKind.HOLD: ActionStep.SOURCE_HOLD}


RUNTIME_PARAMETERS = ("pause_confidence", "resume_confidence", "low_confidence_chunks_to_pause",
                      "max_consecutive_pauses", "deadman_timeout_s", "teleop_timeout_s",
                      "conservative_velocity_scale", "conservative_exit_s")


class HandoffNode(Node):
    """Publishes ``action_command``, ``handoff/mode``, ``handoff/help_request``, ``handoff/velocity_scale``."""

    def __init__(self) -> None:
        super().__init__("handoff", automatically_declare_parameters_from_overrides=True)
        self.params = p = load_schema(self, HandoffParams)
        self.is_base = p.velocity_base
        self.sm = HandoffStateMachine(HandoffConfig(
            pause_confidence=p.pause_confidence, resume_confidence=p.resume_confidence,
            low_confidence_chunks_to_pause=p.low_confidence_chunks_to_pause,
            max_consecutive_pauses=p.max_consecutive_pauses, pause_count_reset_s=p.pause_count_reset_s,
            deadman_timeout_s=p.deadman_timeout_s, teleop_timeout_s=p.teleop_timeout_s,
            ood_zscore=p.ood_zscore, conservative_velocity_scale=p.conservative_velocity_scale,
            conservative_exit_s=p.conservative_exit_s, measured_timeout_s=p.measured_timeout_s,
            # A base's pose target is integrated, not measured: holding at the last target is a zero twist.
            hold_at_measured=not self.is_base, hold_at_command_joints=p.hold_at_command_joints,
            control_period_s=p.control_period_s), p.joint_names)
        self.ood = OodScorer(
            np.asarray(p.position_min), np.asarray(p.position_max), p.ood_zscore, p.ood_limit_margin_frac,
            mean=np.asarray(p.proprio_mean) if p.proprio_mean else None,
            std=np.asarray(p.proprio_std) if p.proprio_std else None, ignore=p.ood_ignore_mask)
        # Thresholds and timeouts can be tuned on a running robot (ros2 param set /handoff ...).
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._measured_index = JointIndex(p.joint_names)
        self._observation_index = JointIndex(p.joint_names)
        self._last_scale: float | None = None

        qos = QoSProfile(depth=10)
        self.cmd_pub = self.create_publisher(ActionStep, "action_command", qos)
        self.mode_pub = self.create_publisher(HandoffMode, "~/mode", qos)
        self.help_pub = self.create_publisher(String, "~/help_request", qos)
        self.scale_pub = self.create_publisher(Float64, "~/velocity_scale", qos)
        self.create_subscription(ActionStep, "policy_action", self._on_policy_action, qos)
        self.create_subscription(ActionChunk, "action_chunk", self._on_chunk, qos)
        self.create_subscription(JointState, "teleop/joint_command", self._on_teleop_joints, qos)
        if self.is_base:
            self.create_subscription(Twist, "teleop/cmd_vel", self._on_teleop_twist, qos)
        self.create_subscription(Bool, "teleop/deadman", self._on_deadman, qos)
        # Task outcomes (True = success), from a success detector or a person: a failure
        # pauses the policy and counts toward escalation, like a low-confidence pause.
        self.create_subscription(Bool, "report_outcome", self._on_outcome, qos)
        self.create_subscription(JointState, p.joint_states_topic, self._on_joint_state, QoSProfile(depth=20))
        self.create_subscription(Observation, "observation", self._on_observation, QoSProfile(depth=5))
        self.create_service(Trigger, "~/acknowledge", self._on_acknowledge)
        self.create_service(Trigger, "~/resume_policy", self._on_resume)
        self.reset_client: Client = self.create_client(Trigger, "action_buffer/reset")
        self.create_timer(p.control_period_s, self._tick)
        self.create_timer(1.0 / p.mode_publish_rate_hz, self._publish_mode)
        self._publish_mode()
        self.get_logger().info(f"handoff for {p.embodiment}: policy_action -> action_command "
                               f"(pause below confidence {p.pause_confidence:g}, escalate after "
                               f"{p.max_consecutive_pauses} pauses)")

    # --- inputs
    def _on_set_parameters(self, params: list) -> SetParametersResult:
        changes = {}
        for param in params:
            if param.name not in RUNTIME_PARAMETERS:
                return SetParametersResult(successful=False,
                                           reason=f"{param.name} cannot change while running; restart the node")
            value = param.value
            changes[param.name] = int(value) if param.name in ("low_confidence_chunks_to_pause",
                                                               "max_consecutive_pauses") else float(value)
        try:
            self.sm.update_config(**changes)
        except (ValueError, TypeError) as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        self.get_logger().info(f"handoff parameters changed: {changes}")
        return SetParametersResult(successful=True)

    def _on_policy_action(self, msg: ActionStep) -> None:
        if msg.embodiment and msg.embodiment != self.params.embodiment:
            self.get_logger().warning(f"action for {msg.embodiment!r} ignored (this is {self.params.embodiment})",
                                   throttle_duration_sec=5.0)
            return
        out = self.sm.on_policy_action(np.asarray(msg.action, dtype=np.float64), now_s(self),
                                       chunk_seq=msg.chunk_seq)
        self._apply(out, policy_msg=msg)

    def _on_chunk(self, msg: ActionChunk) -> None:
        if msg.embodiment and msg.embodiment != self.params.embodiment:
            return
        self.sm.on_chunk_confidence(float(msg.confidence), now_s(self), seq=msg.seq)
        self._apply(self.sm.drain())

    def _on_teleop_joints(self, msg: JointState) -> None:
        if len(msg.position) != len(msg.name):
            self.get_logger().warning(f"teleop JointState ignored: {len(msg.name)} names but "
                                   f"{len(msg.position)} positions", throttle_duration_sec=2.0)
            return
        ok, reason = self.sm.on_teleop(dict(zip(msg.name, msg.position)), now_s(self))
        if not ok:
            self.get_logger().warning(reason, throttle_duration_sec=2.0)
        self._apply(self.sm.drain())

    def _on_teleop_twist(self, msg: Twist) -> None:
        ok, reason = self.sm.on_teleop(BaseTwist(msg.linear.x, msg.linear.y, msg.angular.z), now_s(self))
        if not ok:
            self.get_logger().warning(reason, throttle_duration_sec=2.0)
        self._apply(self.sm.drain())

    def _on_outcome(self, msg: Bool) -> None:
        if not msg.data:
            self.sm.on_failure(now_s(self), "reported on report_outcome")
            self._apply(self.sm.drain())

    def _on_deadman(self, msg: Bool) -> None:
        self.sm.on_deadman(bool(msg.data), now_s(self))
        self._apply(self.sm.drain())

    def _on_joint_state(self, msg: JointState) -> None:
        try:  # NaN/Inf go on: the state machine rejects them itself
            q = self._measured_index.select(msg.name, msg.position, finite=False, require_names=True)
        except JointSelectionError as exc:
            self.get_logger().warning(f"joint_states ignored: {exc}", throttle_duration_sec=5.0)
            return
        self.sm.on_measured(q, now_s(self))

    def _on_observation(self, msg: Observation) -> None:
        # Unnamed joint positions are in action order. One we cannot read scores as out of distribution.
        try:
            q = self._observation_index.select(msg.joint_names, msg.joint_positions, finite=False)
        except JointSelectionError as exc:
            self.get_logger().warning(f"observation joints unreadable, scored out of distribution: {exc}",
                                      throttle_duration_sec=5.0)
            q = None
        self.sm.on_ood_score(self.ood.score(q) if q is not None else float("inf"), now_s(self))
        self._apply(self.sm.drain())

    def _on_acknowledge(self, _req: Trigger.Request, res: Trigger.Response) -> Trigger.Response:
        res.success, res.message = self.sm.acknowledge(now_s(self))
        self._log(res.success, f"acknowledge: {res.message}")
        self._apply(self.sm.drain())
        return res

    def _on_resume(self, _req: Trigger.Request, res: Trigger.Response) -> Trigger.Response:
        res.success, res.message = self.sm.resume_policy(now_s(self))
        self._log(res.success, f"resume_policy: {res.message}")
        self._apply(self.sm.drain())
        return res

    # --- outputs
    def _log(self, ok: bool, text: str) -> None:
        # rclpy fixes one severity per call site, so info and warning need their own lines.
        if ok:
            self.get_logger().info(text)
        else:
            self.get_logger().warning(text)

    def _tick(self) -> None:
        self._apply(self.sm.tick(now_s(self)))

    def _apply(self, out: Output, policy_msg: ActionStep | None = None) -> None:
        for tr in out.transitions:
            self._log(tr.mode in (Mode.AUTONOMOUS, Mode.HUMAN_OVERRIDE),
                      f"{tr.previous.name} -> {tr.mode.name}: {tr.reason}")
            self._publish_mode(tr.mode, tr.reason)
        for text in out.help_requests:
            self.get_logger().warning(f"help requested: {text}")
            self.help_pub.publish(String(data=text))
        if out.reset_action_buffer:
            self._reset_action_buffer()
        if out.kind != OutputKind.NONE and out.action is not None:
            msg = ActionStep()
            if out.kind == OutputKind.POLICY and policy_msg is not None:
                msg.header = policy_msg.header
                msg.chunk_seq, msg.step_index, msg.blended = (policy_msg.chunk_seq, policy_msg.step_index,
                                                              policy_msg.blended)
                # The plan preview describes the motion that continues `action`: it goes along only
                # when the action is forwarded unchanged; a modified action gets no preview.
                if np.array_equal(out.action, np.asarray(policy_msg.action, dtype=np.float64)):
                    msg.preview = policy_msg.preview
                    msg.preview_period_s = policy_msg.preview_period_s
            else:
                s_to_stamp(now_s(self), msg.header.stamp)
                msg.step_index = -1
            msg.embodiment = self.params.embodiment
            msg.action = out.action.tolist()
            msg.source = SOURCES[out.kind]
            self.cmd_pub.publish(msg)
        if self.sm.velocity_scale != self._last_scale:
            self._publish_scale()

    def _reset_action_buffer(self) -> None:
        # Asynchronous and best effort: the hand-back must not wait on (or fail for) the buffer.
        if not self.reset_client.service_is_ready():
            self.get_logger().warning("action_buffer/reset is not available; the next chunk may blend "
                                   "with the one before the hand-back")
            return
        self.reset_client.call_async(Trigger.Request())

    def _publish_mode(self, mode: int | None = None, reason: str | None = None) -> None:
        msg = HandoffMode()
        s_to_stamp(now_s(self), msg.header.stamp)
        msg.mode = int(self.sm.mode if mode is None else mode)
        msg.reason = self.sm.reason if reason is None else reason
        conf = self.sm.confidence
        msg.confidence = float("nan") if conf is None else float(conf)
        msg.consecutive_failures = self.sm.consecutive_pauses
        self.mode_pub.publish(msg)
        if mode is None:
            self._publish_scale()

    def _publish_scale(self) -> None:
        self._last_scale = self.sm.velocity_scale
        self.scale_pub.publish(Float64(data=self._last_scale))


def main(args: list[str] | None = None) -> int:
    """Entry point of the ``handoff_node`` executable."""
    return run_node(HandoffNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
