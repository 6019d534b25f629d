"""sim_operator: a simulated person at the teleop device, for the simulated robot.

Answers the handoff's help requests the way an operator would: holds the deadman
(``teleop/deadman``, a heartbeat at the control rate), streams the scripted expert's
targets (``sim_robot/expert_action``, what a person watching the scene would do) on
``teleop/joint_command``, releases, and calls ``handoff/resume_policy``. The decisions
are in hybridvla_ros.sim.operator.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from rcl_interfaces.msg import SetParametersResult
from rclpy.client import Client
from rclpy.node import Node
from rclpy.qos import QoSProfile
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64
from std_srvs.srv import Trigger

from hybridvla_msgs.msg import HandoffMode
from hybridvla_ros.core.joints import JointIndex, JointSelectionError
from hybridvla_ros.nodes.common import load_schema, now_s, run_node
from hybridvla_ros.params.sim_operator import SimOperatorParams
from hybridvla_ros.sim.operator import OperatorConfig, ScriptedOperator


class SimOperatorNode(Node):
    """Publishes teleop/deadman and teleop/joint_command; calls the handoff's services."""

    def __init__(self) -> None:
        super().__init__("sim_operator", automatically_declare_parameters_from_overrides=True)
        self.params = p = load_schema(self, SimOperatorParams)
        self.operator = ScriptedOperator(OperatorConfig(
            reaction_s=p.reaction_s, min_help_s=p.min_help_s, max_help_s=p.max_help_s,
            done_error_m=p.done_error_m, handback_delay_s=p.handback_delay_s,
            stall_s=p.stall_s, stall_progress_m=p.stall_progress_m))
        self._mode: int | None = None
        self._expert: np.ndarray | None = None
        self._expert_index = JointIndex(p.joint_names)
        self._task_error: float | None = None
        self._was_pressing = False
        self.deadman_pub = self.create_publisher(Bool, "teleop/deadman", QoSProfile(depth=5))
        self.teleop_pub = self.create_publisher(JointState, "teleop/joint_command", QoSProfile(depth=5))
        self.create_subscription(HandoffMode, "handoff/mode", self._on_mode, QoSProfile(depth=10))
        self.create_subscription(JointState, "sim_robot/expert_action", self._on_expert, QoSProfile(depth=5))
        self.create_subscription(Float64, "sim_robot/task_error", self._on_error, QoSProfile(depth=5))
        self.resume_client: Client = self.create_client(Trigger, "handoff/resume_policy")
        self.ack_client: Client = self.create_client(Trigger, "handoff/acknowledge")
        self.create_timer(p.control_period_s, self._tick)
        for name in ("stall_s", "reaction_s"):  # declared so `ros2 param set` finds them when the file omits them
            if not self.has_parameter(name):
                self.declare_parameter(name, float(getattr(p, name)))
        self.add_on_set_parameters_callback(self._on_set_parameters)

    def _on_set_parameters(self, params: list) -> SetParametersResult:
        """``stall_s`` and ``reaction_s`` may change at run time (an evaluation switches the
        unasked takeover off while it measures the policy alone)."""
        changes = {}
        for prm in params:
            if prm.name in ("stall_s", "reaction_s"):
                if not isinstance(prm.value, (int, float)) or isinstance(prm.value, bool) or not 0 <= prm.value <= 600:
                    return SetParametersResult(successful=False, reason=f"{prm.name} must be in [0, 600] s")
                changes[prm.name] = float(prm.value)
        if changes:
            self.operator.config = dataclasses.replace(self.operator.config, **changes)
        return SetParametersResult(successful=True)

    def _on_mode(self, msg: HandoffMode) -> None:
        self._mode = int(msg.mode)

    def _on_expert(self, msg: JointState) -> None:
        try:
            self._expert = self._expert_index.select(msg.name, msg.position, finite=False, require_names=True)
        except JointSelectionError as exc:
            self._expert = None
            self.get_logger().warning(f"expert target ignored: {exc}", throttle_duration_sec=5.0)

    def _on_error(self, msg: Float64) -> None:
        self._task_error = float(msg.data)

    def _call(self, client, name: str) -> None:
        if not client.service_is_ready():
            self.get_logger().warning(f"{name} not available")
            return
        future = client.call_async(Trigger.Request())
        future.add_done_callback(lambda f: self.get_logger().info(
            f"{name}: {f.result().message if f.result() else 'no answer'}"))

    def _tick(self) -> None:
        out = self.operator.step(now_s(self), self._mode, self._expert, self._task_error)
        if out.acknowledge:
            self._call(self.ack_client, "handoff/acknowledge")
        if out.deadman or self._was_pressing:
            self.deadman_pub.publish(Bool(data=out.deadman))
        if out.deadman and not self._was_pressing:
            self.get_logger().info("operator takes over (deadman held)")
        elif self._was_pressing and not out.deadman:
            self.get_logger().info("operator releases the deadman")
        self._was_pressing = out.deadman
        if out.teleop is not None:
            js = JointState(name=list(self.params.joint_names), position=out.teleop.tolist())
            js.header.stamp = self.get_clock().now().to_msg()
            self.teleop_pub.publish(js)
        if out.resume:
            self._call(self.resume_client, "handoff/resume_policy")


def main(args: list[str] | None = None) -> int:
    """Entry point of the ``sim_operator_node`` executable."""
    return run_node(SimOperatorNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
