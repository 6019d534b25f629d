"""safety_filter: the last word before the robot.

Every ActionStep on ``action_command`` goes through hybridvla_ros.core.safety (NaN/Inf
rejection, joint bounds, velocity and acceleration limits that keep the direction of
motion, force/torque e-stop latch, watchdog) at once and comes out in the message type of
the embodiment's controller. The limits hold against the time since the last command sent
(a burst moves no faster than real time allows; after a silence of 3 periods motion starts
again from rest at the last command). A timer four times per period lets the filter brake
to rest within the acceleration limit when no command went out for 1.25 periods (inputs
silent, buffer dry, upstream node dead), then hold the rest point after the watchdog.
``~/reset_estop`` (std_srvs/Trigger) clears a latched e-stop; ``~/resync`` (std_srvs/Trigger)
says the robot was moved by something else (a simulator's reset, hand guiding): the filter
starts again from rest at the first joint state stamped after the call, not at its last
command, which the next command would otherwise drive the robot back to. Counters go on
``safety_filter/status`` every period and on /diagnostics once a second.

``trajectory_points`` > 1 (JointTrajectory controllers): each command carries the checked
action and the plan's next targets (the ActionStep's preview) as points one period apart,
each checked by the filter run forward on a copy of its state, then braking to rest, with
velocities consistent with the positions; the controller's own loop does the timing. An
e-stop or a filter that stands still sends a single resting point.

``timing: thread``: actions are only stored as they arrive; a dedicated thread sends one
command per control period at absolute deadlines (time.monotonic, a sleep then a short spin):
the latest action if one came since the last deadline, else the last plan's next target
(for up to watchdog_timeout_s), else the filter's braking or, at rest, its rest point
(``tick(on_schedule=True)``). Its deadlines follow the actions' arrival phase (half a period
after them, moved by at most 0.25 ms a period); it runs on SCHED_FIFO where allowed.
"""
from __future__ import annotations

import math
import os
import sys
import threading
import time

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
from hybridvla_ros.core.command import plan_targets, pose_step_to_twist, trajectory_velocities
from hybridvla_ros.core.joints import JointIndex, JointSelectionError
from hybridvla_ros.core.safety import SafetyFilter, SafetyResult
from hybridvla_ros.nodes.common import load_schema, now_s, run_node, s_to_stamp, stamp_to_s
from hybridvla_ros.params.safety_filter import SafetyFilterParams

MESSAGE_TYPES = {
    "trajectory_msgs/JointTrajectory": JointTrajectory,
    "std_msgs/Float64MultiArray": Float64MultiArray,
    "geometry_msgs/Twist": Twist,
}
# The timing thread sleeps until this long before a deadline, then spins (sleep overshoots by
# up to a scheduler tick on a loaded machine).
SPIN_S = 0.002
# Python's GIL switch interval in thread mode (default 5 ms: the timing thread could wait
# that long for the executor thread to let go).
SWITCH_INTERVAL_S = 0.0005
# Thread mode keeps its deadlines half a period after the actions' arrivals (a jitter buffer:
# an action up to half a period early or late still makes its deadline): the mean arrival phase
# (a circular mean, so arrivals that straddle a deadline are seen as such) moves the deadlines
# by at most PHASE_STEP_S per period.
PHASE_GAIN = 0.2
PHASE_STEP_S = 0.00025
PHASE_MEMORY = 0.1  # weight of the newest arrival in the mean phase


def _duration(seconds: float) -> Duration:
    return Duration(sec=int(seconds), nanosec=int(round((seconds % 1.0) * 1e9)) % 1_000_000_000)


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
        # The robot was moved by something else (a simulator reset): start again from rest where
        # the first joint state stamped after the call measures it.
        self.create_service(Trigger, "~/resync", self._on_resync)
        self._resync_after_s: float | None = None
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", QoSProfile(depth=10))
        # The filter decides when a timer command is due (never a second one within a period);
        # ticking four times per period starts braking within a quarter period of the deadline.
        self.create_timer(p.control_period_s / 4.0, self._tick)
        self.create_timer(1.0, self._publish_diagnostics)
        self._measured_index = JointIndex(p.joint_names)  # the driver's joint_states order, per name list
        self.preview_rejected = 0
        self.deadlines_missed = 0
        # Thread mode: the latest request (action, plan targets, sequence number) and the timing thread.
        self._lock = threading.RLock()
        self._request: tuple[np.ndarray, np.ndarray, int, float] | None = None
        self._request_seq = 0
        self._used_seq = 0
        self._plan_left: np.ndarray = np.zeros((0, p.action_dim))
        self._stop = threading.Event()
        self._next_deadline: float | None = None  # monotonic, the timing thread's next deadline
        self._phase = np.zeros(2)  # mean (cos, sin) of the arrivals' phase before their deadline
        self._thread: threading.Thread | None = None
        if p.timing == "thread":
            sys.setswitchinterval(SWITCH_INTERVAL_S)
            # The executor thread just below the timing thread: it holds the GIL the timing thread
            # needs (descheduled with it by a loaded machine, it would delay every deadline).
            self._set_priority(p.timing_rt_priority - 1, "executor thread")
            self._thread = threading.Thread(target=self._timing_loop, name="safety_filter_timing", daemon=True)
            self._thread.start()
        self.get_logger().info(f"safety filter for {p.embodiment} -> {p.command_topic} ({p.command_type}, "
                               f"{p.trajectory_points} point(s), timing {p.timing})")

    def destroy_node(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)
        super().destroy_node()

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
        stamp = stamp_to_s(msg.header.stamp)
        with self._lock:
            self.filter.update_measured(positions, stamp)
            if self._resync_after_s is not None and stamp >= self._resync_after_s:
                self._resync_after_s = None
                done, why = self.filter.resync_to_measured()
                self.get_logger().info(f"resync: {why}")

    def _on_wrench(self, msg: WrenchStamped) -> None:
        f, t = msg.wrench.force, msg.wrench.torque
        force, torque = np.array([f.x, f.y, f.z]), np.array([t.x, t.y, t.z])
        self._last_force_n = float(np.linalg.norm(force))
        self._last_torque_nm = float(np.linalg.norm(torque))
        with self._lock:
            was = self.filter.estop_latched
            tripped = self.filter.update_wrench(force, torque, stamp_to_s(msg.header.stamp)) and not was
        if tripped:
            self.estop_trips += 1
            self.get_logger().error(f"E-STOP latched: {self.filter.estop_reason}; call ~/reset_estop to resume")

    def _on_velocity_scale(self, msg: Float64) -> None:
        # Never looser than the parameter file allows; a bad value keeps the current scale.
        try:
            with self._lock:
                before = self.filter.velocity_scale
                self.filter.set_velocity_scale(min(float(msg.data), self.params.velocity_scale))
        except ValueError as exc:
            self.get_logger().warning(f"handoff/velocity_scale ignored: {exc}", throttle_duration_sec=5.0)
            return
        if self.filter.velocity_scale != before:
            self.get_logger().info(f"velocity scale {before:.2f} -> {self.filter.velocity_scale:.2f}")

    def _on_action(self, msg: ActionStep) -> None:
        action = np.asarray(msg.action, dtype=np.float64)
        plan = self._plan(action, msg)
        if self._thread is not None:
            arrival = time.monotonic()
            with self._lock:  # the timing thread sends it at its next deadline
                self._request_seq += 1
                self._request = (action, plan, self._request_seq, arrival)
                if self._next_deadline is not None:
                    dt = self.params.control_period_s
                    angle = 2.0 * math.pi * (((self._next_deadline - arrival) % dt) / dt)
                    self._phase += PHASE_MEMORY * (np.array([math.cos(angle), math.sin(angle)]) - self._phase)
            return
        with self._lock:
            self._send(self.filter.filter(action, now_s(self)), plan)

    def _plan(self, action: np.ndarray, msg: ActionStep) -> np.ndarray:
        """(n, D) the plan's next targets one control period apart from the message's preview
        (as many as a command's points, or the timing thread's bridging, can use)."""
        p = self.params
        count = p.trajectory_points - 1
        if self._thread is not None:
            count = max(count, int(p.watchdog_timeout_s / p.control_period_s))
        if count <= 0 or len(msg.preview) == 0 or action.shape != (p.action_dim,) or not np.isfinite(action).all():
            return np.zeros((0, p.action_dim))
        try:
            return plan_targets(action, np.asarray(msg.preview, dtype=np.float64), msg.preview_period_s,
                                p.control_period_s, count)
        except ValueError as exc:
            self.preview_rejected += 1
            self.get_logger().warning(f"preview ignored (the points brake to rest instead): {exc}",
                                      throttle_duration_sec=5.0)
            return np.zeros((0, p.action_dim))

    def _on_resync(self, _req: Trigger.Request, res: Trigger.Response) -> Trigger.Response:
        with self._lock:
            self._resync_after_s = now_s(self)
        res.success, res.message = True, "starting again from rest at the next joint state measured"
        return res

    def _on_reset(self, _req: Trigger.Request, res: Trigger.Response) -> Trigger.Response:
        with self._lock:
            res.success, res.message = self.filter.reset_estop(now_s(self))
        (self.get_logger().info if res.success else self.get_logger().warn)(f"reset_estop: {res.message}")
        return res

    # --- outputs
    def _tick(self) -> None:
        t = now_s(self)
        status = None
        with self._lock:
            # A command only where none went out for a while (the filter keeps one per period):
            # braking to rest when the stream stopped moving, e-stop and watchdog holds. In
            # thread mode the timing thread does this at its deadlines.
            result = None if self._thread is not None else self.filter.tick(t)
            if result is not None:
                self._send_tick(result)
            if self._last_status_s is None or t - self._last_status_s >= 0.9 * self.params.control_period_s \
                    or t < self._last_status_s:
                self._last_status_s = t
                status = self._status()
        if status is not None:  # published outside the lock: the timing thread need not wait for it
            self.status_pub.publish(status)

    def _send_tick(self, result: SafetyResult) -> None:
        if "watchdog" in result.limits_hit:
            self.watchdog_holds += 1
        self._send(result)

    # --- the timing thread (timing: thread)
    def _set_priority(self, prio: int, what: str) -> None:
        """The calling thread on SCHED_FIFO at ``prio`` (needs CAP_SYS_NICE; said if refused)."""
        if prio <= 0:
            return
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(prio))  # 0: the calling thread (Linux)
            self.get_logger().info(f"{what} on SCHED_FIFO priority {prio}")
        except (AttributeError, OSError) as exc:
            self.get_logger().warning(f"{what} at normal priority (SCHED_FIFO {prio} refused: {exc}); "
                                      "on a loaded machine the command period may jitter")

    def _timing_loop(self) -> None:
        self._set_priority(self.params.timing_rt_priority, "timing thread")
        dt = self.params.control_period_s
        deadline = time.monotonic() + dt
        self._next_deadline = deadline
        while not self._stop.is_set():
            ahead = deadline - time.monotonic() - SPIN_S
            if ahead > 0.0 and self._stop.wait(ahead):
                return
            while time.monotonic() < deadline:
                pass  # the last SPIN_S: sleep would overshoot
            try:
                self._on_deadline()
            except Exception as exc:  # noqa: BLE001 - the command stream must go on
                if self._stop.is_set() or not self.context.ok():
                    return  # shutting down (context gone): end quietly
                self.get_logger().error(f"timing thread: {type(exc).__name__}: {exc}", throttle_duration_sec=2.0)
            deadline += dt + self._phase_shift(dt)
            late = time.monotonic() - deadline
            if late > 0.0:  # stalled past the next deadline: skip the missed ones, keep the phase
                missed = math.ceil(late / dt)
                self.deadlines_missed += missed
                deadline += missed * dt
            self._next_deadline = deadline

    def _phase_shift(self, dt: float) -> float:
        """How far to move the next deadline so that actions arrive half a period before theirs."""
        with self._lock:
            c, s = self._phase
            if c * c + s * s < 0.25:
                return 0.0  # no steady arrival phase (no actions, or scattered): keep the grid
            ahead = (math.atan2(s, c) % (2.0 * math.pi)) / (2.0 * math.pi) * dt  # arrival -> deadline
            shift = float(np.clip(PHASE_GAIN * (0.5 * dt - ahead), -PHASE_STEP_S, PHASE_STEP_S))
            # The arrivals seen so far are now that much further ahead of the moved deadlines: with
            # no new ones the estimate reaches half a period and the grid stops moving.
            turn = 2.0 * math.pi * shift / dt
            self._phase = np.array([c * math.cos(turn) - s * math.sin(turn), c * math.sin(turn) + s * math.cos(turn)])
        return shift

    def _on_deadline(self) -> None:
        """One command for this deadline: the latest action, else the plan's next target, else braking."""
        with self._lock:
            t = now_s(self)
            req = self._request
            result: SafetyResult | None
            if req is not None and req[2] != self._used_seq:
                action, plan, self._used_seq, _ = req
                self._plan_left = plan
                result = self.filter.filter(action, t)
            elif (req is not None and self._plan_left.shape[0] > 0
                  and time.monotonic() - req[3] <= self.params.watchdog_timeout_s):
                # No action for this deadline (it comes late, or not at all): the plan goes on.
                action, plan = self._plan_left[0], self._plan_left[1:]
                self._plan_left = plan
                result = self.filter.filter(action, t)
            else:
                self._plan_left = self._plan_left[:0]
                result = self.filter.tick(t, on_schedule=True)
                if result is not None:
                    self._send_tick(result)
                return
            self._send(result, plan)

    def _send(self, result: SafetyResult, plan: np.ndarray | None = None) -> None:
        """Publish ``result``'s command (called right after the filter made it, under the lock);
        ``plan``: the plan's next targets, for a multi-point JointTrajectory."""
        self._last_result = result
        if result.command is None:
            return
        cmd = result.command
        p = self.params
        if p.velocity_base:
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
            horizon = p.trajectory_horizon_s or p.control_period_s
            if p.trajectory_points > 1:
                msg.points = self._points(result, cmd, plan, horizon)
            else:
                point = JointTrajectoryPoint()
                point.positions = cmd.tolist()
                point.time_from_start = _duration(horizon)
                msg.points = [point]
        self._last_sent = cmd.copy()
        self.cmd_pub.publish(msg)
        self.commands_sent += 1
        self._log_transitions(result)

    def _points(self, result: SafetyResult, cmd: np.ndarray, plan: np.ndarray | None,
                horizon: float) -> list[JointTrajectoryPoint]:
        """The checked command, then the filter's checked continuation one period apart: the plan's
        targets (not for a hold), then braking to rest. A single resting point for an e-stop."""
        p = self.params
        if "estop" in result.limits_hit:
            points = cmd[None, :]
        else:
            use = None if result.holding or plan is None else plan[:p.trajectory_points - 1]
            points = np.vstack([cmd[None, :], self.filter.trajectory(use)])
        previous = cmd if self._last_sent is None else self._last_sent
        velocities = trajectory_velocities(previous, points, p.control_period_s)
        out = []
        for k in range(points.shape[0]):
            point = JointTrajectoryPoint()
            point.positions = points[k].tolist()
            point.velocities = velocities[k].tolist()
            point.time_from_start = _duration(horizon + k * p.control_period_s)
            out.append(point)
        return out

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
        with self._lock:
            stats = self.filter.stats
        sent, modified = self.commands_sent, int(stats["modified"])
        if self.filter.estop_latched:
            level, message = DiagnosticStatus.ERROR, f"e-stop latched: {self.filter.estop_reason}"
        elif self._last_result is not None and self._last_result.holding:
            level, message = DiagnosticStatus.WARN, f"holding: {self._last_result.reason}"
        else:
            level, message = DiagnosticStatus.OK, f"{sent} commands sent, {modified} modified"
        values = {"commands_sent": sent, "watchdog_holds": self.watchdog_holds,
                  "preview_rejected": self.preview_rejected, "deadlines_missed": self.deadlines_missed, **stats}
        out = DiagnosticArray()
        s_to_stamp(now_s(self), out.header.stamp)
        out.status.append(DiagnosticStatus(level=level, name="hybridvla: safety_filter limits", message=message,
                                           hardware_id=self.params.embodiment,
                                           values=[KeyValue(key=k, value=str(v)) for k, v in values.items()]))
        self.diag_pub.publish(out)

    def _status(self) -> SafetyStatus:
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
        status.resyncs = int(stats.get("resyncs", 0))
        status.last_force_n = self._last_force_n
        status.last_torque_nm = self._last_torque_nm
        return status


def main(args: list[str] | None = None) -> int:
    """Entry point of the ``safety_filter_node`` executable."""
    return run_node(SafetyFilterNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
