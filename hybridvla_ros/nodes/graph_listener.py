"""A listener on a running graph: what ``hybridvla run``'s report, ``hybridvla bench``,
``hybridvla eval``, the studies and the end-to-end tests see.

It subscribes like any other ROS node (over real DDS) and turns what it hears into
numbers: commands sent and their rate and jitter, inference latency, frame-to-command
latency, safety interventions and e-stops, and the simulated task error. Rate and jitter
are the safety filter's own: each command's send time is the DDS source timestamp from
the message info (rclpy passes a ``MessageInfo`` only to callbacks whose signature requires
a second positional argument, so these callbacks require one).

Ready: the graph is ready (:attr:`Recording.ready`) once a first action chunk was heard and
a first command came from the policy (a command answering an ActionStep with source POLICY
on the safety filter's input topic), not a hold. It is not a
node of the graph (no console script, no parameter file): it runs inside the process
that started the graph, on a thread with its own rclpy context.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Twist, WrenchStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.subscription import MessageInfo
from std_msgs.msg import Bool, Float64, Float64MultiArray, String, UInt64
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from hybridvla_msgs.msg import ActionChunk, ActionStep, BufferStatus, HandoffMode, Observation, SafetyStatus
from hybridvla_ros.core.stats import percentiles, rate_and_jitter
from hybridvla_ros.params.embodiment import EmbodimentParams


@dataclass
class Recording:
    """Everything heard: commands by their send time, the rest by monotonic receive time (seconds)."""

    command_times: list[float] = field(default_factory=list)       # send times (s, system clock)
    commands: list[np.ndarray] = field(default_factory=list)          # (D,) targets or (3,) twist
    chunk_info: dict[int, tuple[float, float, float]] = field(default_factory=dict)  # seq -> (obs stamp, latency, conf)
    chunk_recv_times: list[float] = field(default_factory=list)
    first_step_of_chunk: dict[int, float] = field(default_factory=dict)   # chunk seq -> ROS time of first step
    frame_to_command_s: list[float] = field(default_factory=list)
    # per chunk: (frame stamp, observation sent, chunk sent, model latency, first command sent), seconds
    stage_times: list[tuple[float, float, float, float, float]] = field(default_factory=list)
    observation_sent: dict[float, float] = field(default_factory=dict)   # frame stamp -> observation send time
    chunk_sent: dict[int, float] = field(default_factory=dict)           # chunk seq -> send time
    task_success: bool = False
    adaptations: list[dict[str, Any]] = field(default_factory=list)   # adaptation/status entries (JSON)
    active_model: dict[str, Any] = field(default_factory=dict)        # inference/active_model (JSON)
    success_changes: list[tuple[float, bool]] = field(default_factory=list)  # (monotonic time, task_success)
    observation_skews: list[float] = field(default_factory=list)
    safety: SafetyStatus | None = None
    buffer: BufferStatus | None = None
    buffer_holds: int = 0
    task_errors: list[float] = field(default_factory=list)
    modes: list[tuple[float, int]] = field(default_factory=list)      # (monotonic time, HandoffMode.mode) changes
    corrections: int = 0
    policy_commands: int = 0                  # commands that answered a policy action (not holds)
    first_chunk_mono: float | None = None     # monotonic receive time of the first chunk
    first_policy_command_mono: float | None = None   # ... of the first command from the policy
    first_policy_command_sent: float | None = None   # send time (s, system clock) of that command

    @property
    def ready(self) -> bool:
        """The policy drives: a chunk was served and a command came from the policy, not a hold."""
        return bool(self.chunk_info) and self.policy_commands > 0


# A policy action heard on the safety filter's input is answered by the filter's next command;
# one heard longer ago than this is not paired with a command any more (a hold came instead).
POLICY_STEP_PAIRING_S = 0.5


def _sent_s(info: MessageInfo | dict[str, Any] | None) -> float:
    """The publisher's send time (DDS source timestamp, ns -> s), or now when the middleware gives none."""
    stamp = info.get("source_timestamp") if info else None
    return stamp * 1e-9 if stamp else time.time()


class GraphListener:
    """Runs a listening node in a background thread with its own rclpy context."""

    def __init__(self, params: EmbodimentParams, node_name: str = "hybridvla_listener",
                 domain_id: int | None = None, safety_input_topic: str = "action_command") -> None:
        """``safety_input_topic``: where the safety filter takes its actions from
        (:func:`~hybridvla_ros.launch_description.safety_filter_input`; ``policy_action`` without handoff)."""
        self.params = params
        self.rec = Recording()
        self._lock = threading.Lock()
        self._pending_first_step: list[tuple[int, float]] = []   # (chunk seq, ros time of first step)
        self._pending_policy_steps: list[float] = []  # monotonic receive times of unanswered policy actions
        self._safety_input = safety_input_topic
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = Node(node_name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        n, qos = self.node, QoSProfile(depth=50)
        kind = {"trajectory_msgs/JointTrajectory": JointTrajectory, "std_msgs/Float64MultiArray": Float64MultiArray,
                "geometry_msgs/Twist": Twist}[params.command_type]
        # The safety filter's input first: when an action and its command are ready together,
        # the action is taken first and the command pairs with it.
        if safety_input_topic != "policy_action":
            n.create_subscription(ActionStep, safety_input_topic, self._on_safety_input, qos)
        n.create_subscription(ActionStep, "policy_action", self._on_step, qos)
        n.create_subscription(kind, params.command_topic, self._on_command, qos)
        n.create_subscription(ActionChunk, "action_chunk", self._on_chunk, qos)
        n.create_subscription(Observation, "observation", self._on_observation, qos)
        n.create_subscription(SafetyStatus, "safety_filter/status", self._on_safety, qos)
        n.create_subscription(BufferStatus, "action_buffer/status", self._on_buffer, qos)
        n.create_subscription(Float64, "sim_robot/task_error", self._on_task_error, qos)
        n.create_subscription(HandoffMode, "handoff/mode", self._on_mode, qos)
        n.create_subscription(UInt64, "correction_recorder/count", self._on_corrections, qos)
        n.create_subscription(Bool, "sim_robot/task_success", self._on_success, qos)
        latched = QoSProfile(depth=10, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                             reliability=ReliabilityPolicy.RELIABLE)
        n.create_subscription(String, "adaptation/status", self._on_adaptation, latched)
        n.create_subscription(String, "inference/active_model", self._on_active_model, latched)
        self.push_pub = n.create_publisher(WrenchStamped, "sim_robot/push", QoSProfile(depth=5))
        self.diag_pub = n.create_publisher(DiagnosticArray, "/diagnostics", QoSProfile(depth=10))
        self._trigger_clients: dict[str, Any] = {}  # service name -> client
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._stop = threading.Event()
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set() and self.context.ok():
            self.executor.spin_once(timeout_sec=0.05)

    def _ros_now_s(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    # --- callbacks
    def _on_command(self, msg: Any, info: MessageInfo) -> None:
        # The publisher's send time (DDS source timestamp): rate and jitter are the safety
        # filter's, not this listener's scheduling (a backlog processed late would bunch up).
        t = _sent_s(info)
        if isinstance(msg, Twist):
            value = np.array([msg.linear.x, msg.linear.y, msg.angular.z])
        elif isinstance(msg, Float64MultiArray):
            value = np.asarray(msg.data, dtype=np.float64)
        else:
            value = np.asarray(msg.points[-1].positions if msg.points else [], dtype=np.float64)
        ros_t = t
        now = time.monotonic()
        with self._lock:
            self.rec.command_times.append(t)
            self.rec.commands.append(value)
            pending = self._pending_policy_steps
            while pending and now - pending[0] > POLICY_STEP_PAIRING_S:
                pending.pop(0)
            estop = self.rec.safety is not None and self.rec.safety.estop_latched
            if pending and not estop:  # this command answers a policy action
                pending.pop(0)
                self.rec.policy_commands += 1
                if self.rec.first_policy_command_mono is None:
                    self.rec.first_policy_command_mono, self.rec.first_policy_command_sent = now, t
            # The first command after the first step of a chunk is the first derived from its frame.
            while self._pending_first_step:
                seq, _ = self._pending_first_step.pop(0)
                chunk = self.rec.chunk_info.get(seq)
                if chunk is not None:
                    obs_stamp, latency, _conf = chunk
                    self.rec.frame_to_command_s.append(ros_t - obs_stamp - latency)
                    obs_sent = self.rec.observation_sent.get(obs_stamp)
                    chunk_sent = self.rec.chunk_sent.get(seq)
                    if obs_sent is not None and chunk_sent is not None:
                        self.rec.stage_times.append((obs_stamp, obs_sent, chunk_sent, latency, ros_t))

    def _on_chunk(self, msg: ActionChunk, info: MessageInfo) -> None:
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        with self._lock:
            if self.rec.first_chunk_mono is None:
                self.rec.first_chunk_mono = time.monotonic()
            self.rec.chunk_info[msg.seq] = (stamp, msg.inference_latency_s, msg.confidence)
            self.rec.chunk_sent[msg.seq] = _sent_s(info)
            self.rec.chunk_recv_times.append(time.monotonic())

    def _on_safety_input(self, msg: ActionStep) -> None:
        if msg.source == ActionStep.SOURCE_POLICY:
            with self._lock:
                self._pending_policy_steps.append(time.monotonic())

    def _on_step(self, msg: ActionStep) -> None:
        if self._safety_input == "policy_action":
            self._on_safety_input(msg)
        with self._lock:
            if msg.chunk_seq not in self.rec.first_step_of_chunk:
                t = self._ros_now_s()
                self.rec.first_step_of_chunk[msg.chunk_seq] = t
                self._pending_first_step.append((msg.chunk_seq, t))

    def _on_observation(self, msg: Observation, info: MessageInfo) -> None:
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        with self._lock:
            self.rec.observation_skews.append(msg.proprio_skew_s)
            self.rec.observation_sent[stamp] = _sent_s(info)
            if len(self.rec.observation_sent) > 2000:  # a chunk answers a recent observation
                for key in list(self.rec.observation_sent)[:1000]:
                    del self.rec.observation_sent[key]

    def _on_safety(self, msg: SafetyStatus) -> None:
        with self._lock:
            self.rec.safety = msg

    def _on_buffer(self, msg: BufferStatus) -> None:
        with self._lock:
            if msg.holding and (self.rec.buffer is None or not self.rec.buffer.holding):
                self.rec.buffer_holds += 1
            self.rec.buffer = msg

    def _on_task_error(self, msg: Float64) -> None:
        with self._lock:
            self.rec.task_errors.append(msg.data)

    def _on_mode(self, msg: HandoffMode) -> None:
        with self._lock:
            if not self.rec.modes or self.rec.modes[-1][1] != msg.mode:
                self.rec.modes.append((time.monotonic(), int(msg.mode)))

    def _on_success(self, msg: Bool) -> None:
        with self._lock:
            if msg.data != self.rec.task_success or not self.rec.success_changes:
                self.rec.success_changes.append((time.monotonic(), bool(msg.data)))
            self.rec.task_success = bool(msg.data)

    def _on_adaptation(self, msg: String) -> None:
        try:
            entry = json.loads(msg.data)
        except json.JSONDecodeError:
            return
        with self._lock:
            self.rec.adaptations.append(entry)

    def _on_active_model(self, msg: String) -> None:
        try:
            doc = json.loads(msg.data)
        except json.JSONDecodeError:
            return
        with self._lock:
            self.rec.active_model = doc

    def _on_corrections(self, msg: UInt64) -> None:
        with self._lock:
            self.rec.corrections = int(msg.data)

    # --- actions on the graph
    def push(self, force_n: tuple[float, float, float]) -> None:
        """Push the simulated robot (sim_robot/push) with this force for a moment."""
        msg = WrenchStamped()
        msg.wrench.force.x, msg.wrench.force.y, msg.wrench.force.z = force_n
        self.push_pub.publish(msg)

    def publish_diagnostic(self, name: str, level: str, message: str, values: dict[str, str]) -> None:
        """One DiagnosticStatus on /diagnostics; ``level``: "ok", "warn" or "error"."""
        code = {"ok": DiagnosticStatus.OK, "warn": DiagnosticStatus.WARN, "error": DiagnosticStatus.ERROR}[level]
        out = DiagnosticArray()
        out.header.stamp = self.node.get_clock().now().to_msg()
        out.status.append(DiagnosticStatus(level=code, name=name, message=message,
                                           hardware_id=self.params.embodiment,
                                           values=[KeyValue(key=k, value=v) for k, v in values.items()]))
        self.diag_pub.publish(out)

    def reset_estop(self, timeout_s: float = 5.0) -> tuple[bool, str]:
        """Call safety_filter/reset_estop; returns (success, message)."""
        return self.call_trigger("safety_filter/reset_estop", timeout_s)

    def call_trigger(self, service: str, timeout_s: float = 5.0) -> tuple[bool, str]:
        """Call a std_srvs/Trigger service; returns (success, message), (False, why) when unanswered."""
        with self._lock:
            client = self._trigger_clients.get(service)
            if client is None:
                client = self._trigger_clients[service] = self.node.create_client(Trigger, service)
        if not client.wait_for_service(timeout_sec=timeout_s):
            return False, f"service {service} not available"
        return self._wait_future(client.call_async(Trigger.Request()), timeout_s,
                                 lambda res: (bool(res.success), str(res.message)))

    def set_parameter(self, node: str, name: str, value: Any, timeout_s: float = 5.0) -> tuple[bool, str]:
        """Set one parameter of a running node (``ros2 param set``); returns (success, reason)."""
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        service = f"/{node.lstrip('/')}/set_parameters"
        with self._lock:  # clients live as long as the node: destroying one under the spinning executor races
            client = self._trigger_clients.get(service)
            if client is None:
                client = self._trigger_clients[service] = self.node.create_client(SetParameters, service)
        if not client.wait_for_service(timeout_sec=timeout_s):
            return False, f"{service} not available"
        req = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()])
        return self._wait_future(client.call_async(req), timeout_s,
                                 lambda res: (bool(res.results[0].successful), str(res.results[0].reason)))

    @staticmethod
    def _wait_future(future: Any, timeout_s: float, unpack: Any) -> tuple[bool, str]:
        end = time.monotonic() + timeout_s
        while not future.done() and time.monotonic() < end:
            time.sleep(0.01)
        if not future.done():
            future.cancel()
            return False, "no answer"
        return unpack(future.result())

    def wait_for(self, predicate: Any, timeout_s: float, poll_s: float = 0.05) -> bool:
        """Wait until predicate(recording) is true; returns whether it became true in time."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            with self._lock:
                if predicate(self.rec):
                    return True
            time.sleep(poll_s)
        return False

    def snapshot(self) -> Recording:
        """A copy of the recording so far (lists copied, safe to read while spinning)."""
        with self._lock:
            r = self.rec
            return Recording(**{f.name: copy.copy(getattr(r, f.name)) for f in dataclasses.fields(r)})

    def report(self, skip_first_s: float = 0.0, since_s: float | None = None) -> dict[str, Any]:
        """Summary numbers of what was heard. Rate and jitter: of the commands sent from ``since_s``
        (send time, s; default: the first command) plus ``skip_first_s``."""
        r = self.snapshot()
        times = np.asarray(r.command_times)
        if times.size:
            start = times[0] if since_s is None else since_s
            times = times[times >= start + skip_first_s]
        rj = rate_and_jitter(times, self.params.control_period_s)
        lat = percentiles(v[1] for v in r.chunk_info.values())
        f2c = percentiles(r.frame_to_command_s)
        skew = percentiles(r.observation_skews)
        s = r.safety
        # Time in each handoff mode, from the mode changes heard (HandoffMode: 1 paused, 2 human).
        human_s = 0.0
        now = time.monotonic()
        for i, (t, mode) in enumerate(r.modes):
            end = r.modes[i + 1][0] if i + 1 < len(r.modes) else now
            if mode == HandoffMode.HUMAN_OVERRIDE:
                human_s += end - t
        return {
            "embodiment": self.params.embodiment,
            "commands_sent": len(r.command_times),
            "policy_commands": r.policy_commands,
            "control_rate_target_hz": self.params.control_rate_hz,
            "control_rate_achieved_hz": rj["rate_hz"],
            "command_jitter_p50_ms": rj["jitter_p50_s"] * 1e3,
            "command_jitter_p99_ms": rj["jitter_p99_s"] * 1e3,
            "chunks": len(r.chunk_info),
            "inference_latency_p50_ms": lat["p50"] * 1e3,
            "inference_latency_p99_ms": lat["p99"] * 1e3,
            "frame_to_command_minus_model_p50_ms": f2c["p50"] * 1e3,
            "frame_to_command_minus_model_p99_ms": f2c["p99"] * 1e3,
            "observation_skew_p50_ms": skew["p50"] * 1e3,
            "mean_confidence": float(np.mean([v[2] for v in r.chunk_info.values()])) if r.chunk_info else float("nan"),
            "safety_commands_modified": int(s.commands_modified) if s else 0,
            "safety_estop_trips": int(s.estop_trips) if s else 0,
            "safety_watchdog_holds": int(s.watchdog_holds) if s else 0,
            "estop_latched": bool(s.estop_latched) if s else False,
            "buffer_holds": r.buffer_holds,
            "handoff_pauses": sum(1 for _, m in r.modes if m in (HandoffMode.PAUSED, HandoffMode.ESCALATED)),
            "human_override_s": human_s,
            "corrections_stored": r.corrections,
            "task_error_start_m": r.task_errors[0] if r.task_errors else float("nan"),
            "task_error_final_m": r.task_errors[-1] if r.task_errors else float("nan"),
            "task_error_min_m": float(np.min(r.task_errors)) if r.task_errors else float("nan"),
        }

    def close(self) -> None:
        """Stop spinning, then destroy the node and shut the context down.

        A node destroyed while another thread spins it can crash the process (rclpy#663),
        so the node goes only once the spinning thread has ended; one that does not end
        (it cannot: spin_once waits 0.05 s) is left to the process's exit."""
        self._stop.set()
        self._thread.join(timeout=30.0)
        if self._thread.is_alive():
            return
        self.executor.remove_node(self.node)
        self.node.destroy_node()
        self.executor.shutdown()
        rclpy.try_shutdown(context=self.context)
