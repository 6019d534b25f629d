"""safety_filter: the last word before the robot.

Every ActionStep on ``action_command`` goes through hybridvla_ros.core.safety (NaN/Inf
rejection, joint bounds, velocity and acceleration limits that keep the direction of
motion, force/torque e-stop latch, watchdog) at once and comes out in the message type of
the embodiment's controller. The limits hold against the time since the last command sent
(a burst moves no faster than real time allows; after a silence of 3 periods motion starts
again from rest at the last command). A timer four times per period lets the filter brake
to rest within the acceleration limit when no command went out for 1.25 periods (inputs
silent, buffer dry, upstream node dead), then hold the rest point after the watchdog.
``~/reset_estop`` (std_srvs/Trigger) clears a latched e-stop. Counters go on
``safety_filter/status`` every period and on /diagnostics once a second.
"""
from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Duration
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Twist, WrenchStamped
from rclpy.node import Node
from rclpy.qos import QoSProfile
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64, Float64MultiArray
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from hybridvla_msgs.msg import ActionStep, SafetyStatus
from hybridvla_ros.core.command import pose_step_to_twist
from hybridvla_ros.core.joints import JointIndex, JointSelectionError
from hybridvla_ros.core.safety import SafetyFilter, SafetyResult
from hybridvla_ros.nodes.common import load_schema, now_s, run_node, s_to_stamp, stamp_to_s
from hybridvla_ros.params.safety_filter import SafetyFilterParams

MESSAGE_TYPES = {
    "trajectory_msgs/JointTrajectory": JointTrajectory,
    "std_msgs/Float64MultiArray": Float64MultiArray,
    "geometry_msgs/Twist": Twist,
}


class SafetyFilterNode(Node):
    """Publishes the controller command on ``command_topic`` and ``safety_filter/status``."""

    def __init__(self) -> None:
        super().__init__("safety_filter", automatically_declare_parameters_from_overrides=True)
        self.params = p = load_schema(self, SafetyFilterParams)
        self.filter = SafetyFilter(p.safety_limits(), control_period_s=p.control_period_s)
        self._last_sent: np.ndarray | None = None
        self._last_result: SafetyResult | None = None
        self._last_status_s: float | None = None
        self._logged = {"stream_stops": 0, "resumes_from_rest": 0}
        self.commands_sent = 0
        self.estop_trips = 0
        self.watchdog_holds = 0
        self._last_force_n = 0.0
        self._last_torque_nm = 0.0
        self.cmd_pub = self.create_publisher(MESSAGE_TYPES[p.command_type], p.command_topic, QoSProfile(depth=5))
        self.status_pub = self.create_publisher(SafetyStatus, "safety_filter/status", QoSProfile(depth=5))
        self.create_subscription(ActionStep, "action_command", self._on_action, QoSProfile(depth=5))
        self.create_subscription(JointState, p.joint_states_topic, self._on_joint_state, QoSProfile(depth=20))
        if p.wrench_topic:
            self.create_subscription(WrenchStamped, p.wrench_topic, self._on_wrench, QoSProfile(depth=20))
        # The handoff node tightens the velocity limit in its conservative mode.
        self.create_subscription(Float64, "handoff/velocity_scale", self._on_velocity_scale, QoSProfile(depth=5))
        self.create_service(Trigger, "~/reset_estop", self._on_reset)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", QoSProfile(depth=10))
        # The filter decides when a timer command is due (never a second one within a period);
        # ticking four times per period starts braking within a quarter period of the deadline.
        self.create_timer(p.control_period_s / 4.0, self._tick)
        self.create_timer(1.0, self._publish_diagnostics)
        self._measured_index = JointIndex(p.joint_names)  # the driver's joint_states order, per name list
        self.get_logger().info(f"safety filter for {p.embodiment} -> {p.command_topic} ({p.command_type})")

    # --- inputs
    def _on_joint_state(self, msg: JointState) -> None:
        # A joint_states it cannot read (a joint missing or named twice) never reaches the filter:
        # it keeps the last good reading, and before the first one it sends no command at all.
        # NaN/Inf go on to the filter, which rejects and counts them (measured_rejected).
        try:
            positions = self._measured_index.select(msg.name, msg.position, finite=False, require_names=True)
        except JointSelectionError as exc:
            self.get_logger().warning(f"joint_states ignored: {exc}", throttle_duration_sec=5.0)
            return
        self.filter.update_measured(positions, stamp_to_s(msg.header.stamp))

    def _on_wrench(self, msg: WrenchStamped) -> None:
        f, t = msg.wrench.force, msg.wrench.torque
        force, torque = np.array([f.x, f.y, f.z]), np.array([t.x, t.y, t.z])
        self._last_force_n = float(np.linalg.norm(force))
        self._last_torque_nm = float(np.linalg.norm(torque))
        was = self.filter.estop_latched
        if self.filter.update_wrench(force, torque, stamp_to_s(msg.header.stamp)) and not was:
            self.estop_trips += 1
            self.get_logger().error(f"E-STOP latched: {self.filter.estop_reason}; call ~/reset_estop to resume")

    def _on_velocity_scale(self, msg: Float64) -> None:
        # Never looser than the parameter file allows; a bad value keeps the current scale.
        try:
            before = self.filter.velocity_scale
            self.filter.set_velocity_scale(min(float(msg.data), self.params.velocity_scale))
        except ValueError as exc:
            self.get_logger().warning(f"handoff/velocity_scale ignored: {exc}", throttle_duration_sec=5.0)
            return
        if self.filter.velocity_scale != before:
            self.get_logger().info(f"velocity scale {before:.2f} -> {self.filter.velocity_scale:.2f}")

    def _on_action(self, msg: ActionStep) -> None:
        self._send(self.filter.filter(np.asarray(msg.action, dtype=np.float64), now_s(self)))

    def _on_reset(self, _req: Trigger.Request, res: Trigger.Response) -> Trigger.Response:
        res.success, res.message = self.filter.reset_estop(now_s(self))
        (self.get_logger().info if res.success else self.get_logger().warn)(f"reset_estop: {res.message}")
        return res

    # --- outputs
    def _tick(self) -> None:
        t = now_s(self)
        # A command only where none went out for a while (the filter keeps one per period):
        # braking to rest when the stream stopped moving, e-stop and watchdog holds.
        result = self.filter.tick(t)
        if result is not None:
            if "watchdog" in result.limits_hit:
                self.watchdog_holds += 1
            self._send(result)
        if self._last_status_s is None or t - self._last_status_s >= 0.9 * self.params.control_period_s \
                or t < self._last_status_s:
            self._last_status_s = t
            self._publish_status()

    def _send(self, result: SafetyResult) -> None:
        self._last_result = result
        if result.command is None:
            return
        cmd = result.command
        p = self.params
        if p.command_type == "geometry_msgs/Twist":
            msg = Twist()
            if not result.holding and self._last_sent is not None:
                tw = pose_step_to_twist(self._last_sent, cmd, p.control_period_s)
                msg.linear.x, msg.linear.y, msg.angular.z = tw.linear_x_mps, tw.linear_y_mps, tw.angular_z_radps
        elif p.command_type == "std_msgs/Float64MultiArray":
            msg = Float64MultiArray()
            msg.data = cmd.tolist()
        else:
            msg = JointTrajectory()
            msg.joint_names = list(p.joint_names)
            point = JointTrajectoryPoint()
            point.positions = cmd.tolist()
            horizon = p.trajectory_horizon_s or p.control_period_s
            point.time_from_start = Duration(sec=int(horizon), nanosec=int((horizon % 1.0) * 1e9))
            msg.points = [point]
        self._last_sent = cmd.copy()
        self.cmd_pub.publish(msg)
        self.commands_sent += 1
        self._log_transitions(result)

    def _log_transitions(self, result: SafetyResult) -> None:
        stats = self.filter.stats
        if stats["stream_stops"] != self._logged["stream_stops"]:
            self._logged["stream_stops"] = stats["stream_stops"]
            self.get_logger().warning(f"command stream stopped while moving ({result.reason}); braking to rest "
                                      "within the acceleration limit", throttle_duration_sec=2.0)
        if stats["resumes_from_rest"] != self._logged["resumes_from_rest"]:
            self._logged["resumes_from_rest"] = stats["resumes_from_rest"]
            self.get_logger().warning(f"no command went out for more than {self.filter.resume_after_s:.3f} s while "
                                      "moving (this process stalled): the robot stopped at the last command, "
                                      "motion starts again from rest there", throttle_duration_sec=2.0)

    def _publish_diagnostics(self) -> None:
        stats = self.filter.stats
        sent, modified = self.commands_sent, int(stats["modified"])
        if self.filter.estop_latched:
            level, message = DiagnosticStatus.ERROR, f"e-stop latched: {self.filter.estop_reason}"
        elif self._last_result is not None and self._last_result.holding:
            level, message = DiagnosticStatus.WARN, f"holding: {self._last_result.reason}"
        else:
            level, message = DiagnosticStatus.OK, f"{sent} commands sent, {modified} modified"
        values = {"commands_sent": sent, "watchdog_holds": self.watchdog_holds, **stats}
        out = DiagnosticArray()
        s_to_stamp(now_s(self), out.header.stamp)
        out.status.append(DiagnosticStatus(level=level, name="hybridvla: safety_filter limits", message=message,
                                           hardware_id=self.params.embodiment,
                                           values=[KeyValue(key=k, value=str(v)) for k, v in values.items()]))
        self.diag_pub.publish(out)

    def _publish_status(self) -> None:
        status = SafetyStatus()
        s_to_stamp(now_s(self), status.header.stamp)
        status.estop_latched = self.filter.estop_latched
        status.estop_reason = self.filter.estop_reason
        r = self._last_result
        if r is not None:
            status.holding, status.hold_reason = r.holding, r.reason
            status.modified = r.modified
            status.limits_hit = list(r.limits_hit)
        stats = self.filter.stats
        status.commands_sent = self.commands_sent
        status.commands_modified = int(stats.get("modified", 0))
        status.estop_trips = self.estop_trips
        status.watchdog_holds = self.watchdog_holds
        status.last_force_n = self._last_force_n
        status.last_torque_nm = self._last_torque_nm
        self.status_pub.publish(status)


def main(args: list[str] | None = None) -> int:
    """Entry point of the ``safety_filter_node`` executable."""
    return run_node(SafetyFilterNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
