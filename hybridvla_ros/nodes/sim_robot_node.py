"""sim_robot: a simulated robot (kinematic, or MuJoCo physics) that talks like the real robot's driver.

Takes the controller command named in the parameter file (JointTrajectory,
Float64MultiArray or Twist; commanded joints only; a JointTrajectory of several points is
followed as a joint_trajectory_controller does, each point due at its time_from_start
after the header stamp, zero meaning now, a new one replacing the last), publishes joint_states (100 Hz: the
commanded joints, then the simulator's observed-only ones, e.g. franka's ``suction_cup``
1.0 while it holds the cube, else 0.0), a camera image (30 Hz)
showing the scene and the target, and a wrench when the robot has a F/T sensor.
``sim_robot/push`` (geometry_msgs/WrenchStamped) applies an external force for 0.3 s,
the way a person pushing the robot would; ``sim_robot/task_error`` reports the distance
from the tool to the target (m), and ``sim_robot/expert_action`` (JointState) what the
scripted expert would command next (the simulated operator follows it),
``sim_robot/task_success`` (Bool) whether the task is done (error under
``success_tolerance_m``), and with ``expert_chunk_rate_hz`` > 0 ``sim_robot/expert_chunk``
(ActionChunk) the expert's plan for the next chunk (inference's ``sim_expert`` source).
Plans are rolled out in a worker process (``sim.expert_planner``) from a snapshot of the
simulator, so the physics, the joint states and the camera keep their rates however long
a plan takes (in this process, or a thread of it, a plan holds the GIL and they did not);
a tick that finds the previous plan still running is skipped (a plan is only useful
fresh), a plan begun before a reset is dropped, and ``/diagnostics`` (``hybridvla:
sim_robot expert planner``, 1 Hz) counts plans published, skipped and failed and gives
the last plan's time.
``sim_robot/reset`` (std_srvs/Trigger) starts a new episode:
robot at home, a new scene drawn with seed ``seed + k`` for the k-th reset (so an
evaluation is repeatable); ``scene`` (nominal / shifted) and ``seed`` can be changed at
run time (``ros2 param set /sim_robot scene shifted``) and apply from the next reset.
The simulators live in hybridvla_ros.sim (``registry.make_sim``; each one a ``sim.base.Simulator``).
"""
from __future__ import annotations

import time
from concurrent.futures import Future
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Twist, WrenchStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Bool, Float64, Float64MultiArray
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from hybridvla_msgs.msg import ActionChunk
from hybridvla_ros.core.image import encode_compressed
from hybridvla_ros.core.joints import JointIndex
from hybridvla_ros.nodes.common import load_schema, now_s, rgb8_image, run_node, s_to_stamp, shutting_down, stamp_to_s
from hybridvla_ros.params import ParameterError
from hybridvla_ros.params.sim_robot import SimRobotParams
from hybridvla_ros.sim.expert_planner import ExpertPlanner
from hybridvla_ros.sim.registry import SCENES, make_sim, state_vector

PUSH_DURATION_S = 0.3
PLANNER_DIAGNOSTIC_NAME = "hybridvla: sim_robot expert planner"


class SimRobotNode(Node):
    """The simulated robot's driver."""

    def __init__(self) -> None:
        super().__init__("sim_robot", automatically_declare_parameters_from_overrides=True)
        self.params = p = load_schema(self, SimRobotParams)
        sim_args: dict[str, Any] = {"image_width": p.image_width, "image_height": p.image_height, "seed": p.seed,
                                    "physics": p.physics, "scene": p.scene}
        self.sim = make_sim(p, **sim_args)
        self.sim.reset(seed=p.seed)
        try:  # the parameter file's observed-only joints must be ones this simulator reports
            state_vector(self.sim, p.state_joints)
        except ValueError as exc:
            raise ParameterError(f"sim_robot.{exc} ({p.embodiment}, physics {p.physics})") from None
        self._command_index = JointIndex(p.joint_names)  # the controller command's joint order, per name list
        # A multi-point JointTrajectory being followed: (start s, times from start (n,), targets (n, D)),
        # and the index of the point last commanded.
        self._trajectory: tuple[float, np.ndarray, np.ndarray] | None = None
        self._trajectory_index = -1
        # Commands not yet applied, with their arrival (s): the next physics tick applies each
        # one at its arrival time (see _advance).
        self._pending: list[tuple[float, JointTrajectory | Float64MultiArray | Twist]] = []
        self._scene = p.scene
        self._resets = 0
        self._last_step_s = now_s(self)
        self._episode_start_s = self._last_step_s
        self._episode = 0
        self.commands_received = 0
        self.commands_rejected = 0
        self.js_pub = self.create_publisher(JointState, p.joint_states_topic, QoSProfile(depth=20))
        self.image_pub = self.create_publisher(Image, p.camera_topic, qos_profile_sensor_data)
        self.compressed_pub = (self.create_publisher(CompressedImage, p.camera_topic + "/compressed",
                                                     qos_profile_sensor_data) if p.publish_compressed else None)
        # The robot's other cameras the simulator renders (extra_cameras it lacks are named in the log).
        extra = list(p.cameras.items())[1:]
        self.extra_image_pubs = {c: self.create_publisher(Image, t, qos_profile_sensor_data)
                                 for c, t in extra if c in self.sim.extra_cameras}
        missing = [c for c, _ in extra if c not in self.sim.extra_cameras]
        if missing:
            self.get_logger().warning(f"extra_cameras {missing}: the {p.physics} simulator of {p.embodiment} does "
                                      f"not render them (it has {list(self.sim.extra_cameras)}); not published")
        self.wrench_pub = (self.create_publisher(WrenchStamped, p.wrench_topic, QoSProfile(depth=20))
                           if p.wrench_topic else None)
        self.error_pub = self.create_publisher(Float64, "sim_robot/task_error", QoSProfile(depth=5))
        self.success_pub = self.create_publisher(Bool, "sim_robot/task_success", QoSProfile(depth=5))
        # What the scripted expert would command next: the simulated operator's eyes and hands.
        self.expert_pub = self.create_publisher(JointState, "sim_robot/expert_action", QoSProfile(depth=5))
        kind = {"trajectory_msgs/JointTrajectory": JointTrajectory, "std_msgs/Float64MultiArray": Float64MultiArray,
                "geometry_msgs/Twist": Twist}[p.command_type]
        self.create_subscription(kind, p.command_topic, self._on_command, QoSProfile(depth=10))
        self.create_subscription(WrenchStamped, "sim_robot/push", self._on_push, QoSProfile(depth=5))
        self.create_service(Trigger, "sim_robot/reset", self._on_reset)
        for name in ("scene", "seed"):  # declared so `ros2 param set` finds them when the file omits them
            if not self.has_parameter(name):
                self.declare_parameter(name, getattr(p, name))
        self._next_seed = p.seed + 1
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.create_timer(1.0 / p.joint_state_rate_hz, self._on_physics_tick)
        self.create_timer(1.0 / p.camera_rate_hz, self._on_camera_tick)
        if self.extra_image_pubs:  # one camera per tick, in turn: no tick blocks the physics for several renders
            self._extra_turn = 0
            self._extra_order = tuple(self.extra_image_pubs)
            self.create_timer(1.0 / (p.extra_camera_rate_hz * len(self.extra_image_pubs)), self._on_extra_camera_tick)
        self.create_timer(p.control_period_s, self._on_expert_tick)
        # The expert's plans: rolled out in a worker process (sensors never wait for them).
        self.plans_published = 0
        self.plans_skipped = 0   # ticks that found the previous plan still running
        self.plans_dropped = 0   # plans begun before a reset
        self.plans_failed = 0
        self._failed_reported = 0
        self._last_plan_s = 0.0
        self._planner: ExpertPlanner | None = None
        if p.expert_chunk_rate_hz > 0:
            self.chunk_pub = self.create_publisher(ActionChunk, "sim_robot/expert_chunk", QoSProfile(depth=2))
            self._planner = ExpertPlanner(make_sim, p, **sim_args)  # the same simulator, in the worker
            self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", QoSProfile(depth=10))
            self.create_timer(1.0 / p.expert_chunk_rate_hz, self._on_expert_chunk_tick)
            self.create_timer(1.0, self._publish_diagnostics)
        self.get_logger().info(f"simulated {p.embodiment} ({p.physics}, scene {p.scene}): {p.command_topic} "
                               f"({p.command_type}) in, {p.joint_states_topic} / {p.camera_topic} out")

    def _on_set_parameters(self, params: list) -> SetParametersResult:
        """Only ``scene`` and ``seed`` may change at run time (they apply from the next reset:
        a new ``seed`` is the seed of the next episode, then +1 per episode)."""
        for prm in params:
            if prm.name == "seed":
                if not isinstance(prm.value, int) or isinstance(prm.value, bool) or prm.value < 0:
                    return SetParametersResult(successful=False, reason=f"seed must be an int >= 0, got {prm.value!r}")
                self._next_seed = int(prm.value)
                continue
            if prm.name != "scene":
                continue
            if prm.value not in SCENES or (prm.value != "nominal" and self.params.physics != "mujoco"):
                return SetParametersResult(successful=False,
                                           reason=f"scene must be one of {list(SCENES)} (non-nominal needs "
                                                  f"physics mujoco), got {prm.value!r}")
            self._scene = str(prm.value)
        return SetParametersResult(successful=True)

    def _on_reset(self, _req: Trigger.Request, res: Trigger.Response) -> Trigger.Response:
        """New episode: robot at home, scene drawn from the current preset with seed + k."""
        self._resets += 1
        seed, self._next_seed = self._next_seed, self._next_seed + 1
        self.sim.scene = self._scene
        self.sim.reset(seed=seed)
        self._trajectory = None  # the robot is back home: a trajectory or command sent before is void
        self._pending.clear()
        self._episode_start_s = now_s(self)
        res.success = True
        res.message = f"episode {self._resets}: seed {seed}, scene {self._scene}"
        self.get_logger().info(res.message)
        return res

    def _on_command(self, msg: JointTrajectory | Float64MultiArray | Twist) -> None:
        """Take the command in at its arrival time; the next physics tick applies it there."""
        self._pending.append((now_s(self), msg))

    def _apply_command(self, msg: JointTrajectory | Float64MultiArray | Twist, arrived_s: float) -> None:
        try:
            if isinstance(msg, Twist):
                self.sim.command_twist(msg.linear.x, msg.linear.y, msg.angular.z)
            elif isinstance(msg, Float64MultiArray):
                self.sim.command_positions(np.asarray(msg.data, dtype=np.float64))
            else:
                self._take_trajectory(msg, arrived_s)
            self.commands_received += 1
        except (ValueError, IndexError) as exc:
            self.commands_rejected += 1
            self.get_logger().warning(f"command rejected: {exc}", throttle_duration_sec=2.0)

    def _take_trajectory(self, msg: JointTrajectory, arrived_s: float) -> None:
        """Follow ``msg`` as a joint_trajectory_controller does: it replaces the one before;
        each point is due ``time_from_start`` after the header stamp (zero: now), and the
        point due next is the target (one period apart, points stream like single commands).
        Raises ValueError (nothing changed) for no points, unknown or missing joints, NaN /
        Inf or times that go back."""
        if not msg.points:
            raise ValueError("JointTrajectory without points")
        targets = np.stack([self._command_index.select(msg.joint_names, pt.positions, finite=False,
                                                       require_names=True) for pt in msg.points])
        if not np.isfinite(targets).all():
            raise ValueError("JointTrajectory with a NaN or Inf position")
        times = np.array([pt.time_from_start.sec + 1e-9 * pt.time_from_start.nanosec for pt in msg.points])
        if np.any(np.diff(times) < 0.0):
            raise ValueError(f"JointTrajectory point times go back: {times.round(4).tolist()}")
        stamp = stamp_to_s(msg.header.stamp)
        if len(msg.points) == 1:
            self._trajectory = None
            self.sim.command_positions(targets[0])
            return
        self._trajectory = (stamp if stamp > 0.0 else arrived_s, times, targets)
        self._trajectory_index = -1
        self._follow_trajectory(arrived_s)

    def _follow_trajectory(self, t: float) -> None:
        """Command the point of the trajectory being followed that is due next after ``t`` (the
        last point once all are due), each point once."""
        if self._trajectory is None:
            return
        start, times, targets = self._trajectory
        k = min(int(np.searchsorted(start + times, t, side="right")), len(times) - 1)
        if k != self._trajectory_index:
            self._trajectory_index = k
            self.sim.command_positions(targets[k])

    def _next_due_s(self, t: float) -> float | None:
        """When the trajectory being followed next changes its target after ``t`` (None: never)."""
        if self._trajectory is None:
            return None
        start, times, _ = self._trajectory
        due = start + times[:-1]
        later = due[due > t]
        return float(later[0]) if later.size else None

    def _advance(self, start_s: float, end_s: float) -> None:
        """Step the simulator from ``start_s`` to ``end_s`` (this process's clock), applying each
        pending command at its arrival and each trajectory point when it falls due.

        A real controller has its own clock; this node shares two cores with the graph, and under
        load its ticks come 30-40 ms apart instead of 10. Applied at the tick, the commands of a
        late tick would land at once (the first overwritten, the second two periods out, taken as
        a goal and approached at full speed): a lunge no real controller makes."""
        cursor = start_s
        while True:
            while self._pending and self._pending[0][0] <= cursor:
                arrived, msg = self._pending.pop(0)
                self._apply_command(msg, max(arrived, cursor))
            self._follow_trajectory(cursor)
            if cursor >= end_s:
                return
            nxt = end_s
            if self._pending:
                nxt = min(nxt, self._pending[0][0])
            due = self._next_due_s(cursor)
            if due is not None:
                nxt = min(nxt, due)
            self.sim.step(nxt - cursor)
            cursor = nxt

    def _on_push(self, msg: WrenchStamped) -> None:
        f = msg.wrench.force
        self.sim.apply_external_force(np.array([f.x, f.y, f.z]), PUSH_DURATION_S)

    def _on_physics_tick(self) -> None:
        t = now_s(self)
        dt = min(max(t - self._last_step_s, 0.0), 0.1)  # a stalled process must not teleport the robot
        self._last_step_s = t
        self._advance(t - dt, t)
        js = JointState()
        s_to_stamp(t, js.header.stamp)
        # The commanded joints, then the observed-only ones (a suction cup's vacuum switch) as
        # the driver reports them: names and positions, velocity 0.
        state = self.sim.state_joint_positions
        js.name = [*self.params.joint_names, *state]
        js.position = [*self.sim.positions.astype(np.float64).tolist(), *(float(v) for v in state.values())]
        js.velocity = [*self.sim.velocities.astype(np.float64).tolist(), *([0.0] * len(state))]
        self.js_pub.publish(js)
        if self.wrench_pub is not None:
            force, torque = self.sim.wrench()
            w = WrenchStamped()
            w.header.stamp = js.header.stamp
            w.header.frame_id = "tool0"
            w.wrench.force.x, w.wrench.force.y, w.wrench.force.z = (float(v) for v in force)
            w.wrench.torque.x, w.wrench.torque.y, w.wrench.torque.z = (float(v) for v in torque)
            self.wrench_pub.publish(w)
        if self.params.episode_s > 0 and t - self._episode_start_s > self.params.episode_s:
            self._episode += 1
            self._episode_start_s = t
            self.sim.randomize_target(seed=self.params.seed + self._episode)

    def _on_expert_tick(self) -> None:
        js = JointState(name=list(self.params.joint_names), position=self.sim.expert_target().tolist())
        js.header.stamp = self.get_clock().now().to_msg()
        self.expert_pub.publish(js)

    def _on_expert_chunk_tick(self) -> None:
        """Start the expert's next plan from a snapshot of the simulator, unless one is still
        running. The plan starts (its stamp) when the physics last advanced to, not now: on a
        busy machine that can be tens of milliseconds earlier, and a plan stamped now would be
        executed that much later than the expert meant."""
        if self._planner is None:
            return
        t, resets, started = self._last_step_s, self._resets, time.perf_counter()
        try:
            plan = self._planner.submit(self.sim, self.params.chunk_size)  # the snapshot is taken here
        except Exception as exc:  # noqa: BLE001  (the planner must never stop the sensors)
            self.plans_failed += 1
            self.get_logger().error(f"expert plan not started: {exc!r}", throttle_duration_sec=5.0)
            return
        if plan is None:
            self.plans_skipped += 1
            return
        plan.add_done_callback(lambda f: self._on_plan_done(f, t, resets, started))

    def _on_plan_done(self, plan: Future, t: float, resets: int, started: float) -> None:
        """(The planner's callback thread.) Publish the chunk planned from the state at ``t``
        (its stamp), unless it failed or a reset came in between."""
        self._last_plan_s = time.perf_counter() - started
        if plan.cancelled():
            return
        exc = plan.exception()
        if exc is not None:
            self.plans_failed += 1
            if not shutting_down():
                self.get_logger().error(f"expert plan failed: {exc!r}", throttle_duration_sec=5.0)
            return
        if resets != self._resets:  # a plan of the previous episode
            self.plans_dropped += 1
            return
        p = self.params
        chunk = plan.result()  # (T, D)
        msg = ActionChunk()
        s_to_stamp(t, msg.header.stamp)
        msg.embodiment = p.embodiment
        msg.chunk_length, msg.action_dim = (int(n) for n in chunk.shape)
        msg.step_period_s = p.control_period_s
        msg.actions = chunk.ravel().tolist()  # (T, D) row-major
        msg.confidence = 1.0
        msg.head_type = "sim_expert"
        try:
            self.chunk_pub.publish(msg)
        except RuntimeError:  # the node is going down under the callback
            if not shutting_down():
                raise
            return
        self.plans_published += 1

    def _publish_diagnostics(self) -> None:
        t = now_s(self)
        values = [KeyValue(key=k, value=str(v)) for k, v in (
            ("plans_published", self.plans_published), ("plans_skipped", self.plans_skipped),
            ("plans_dropped_at_reset", self.plans_dropped), ("plans_failed", self.plans_failed),
            ("last_plan_ms", f"{self._last_plan_s * 1e3:.1f}"),  # snapshot to result, the worker's start included
            ("expert_chunk_rate_hz", self.params.expert_chunk_rate_hz))]
        level, message = DiagnosticStatus.OK, "planning in a worker process"
        if self.plans_failed > self._failed_reported:
            level, message = DiagnosticStatus.ERROR, "expert plans failed since the last report: see the node's log"
        self._failed_reported = self.plans_failed
        out = DiagnosticArray()
        s_to_stamp(t, out.header.stamp)
        out.status.append(DiagnosticStatus(level=level, name=PLANNER_DIAGNOSTIC_NAME, message=message,
                                           hardware_id=self.params.embodiment, values=values))
        self.diag_pub.publish(out)

    def destroy_node(self) -> None:
        """Let a plan in flight finish (it publishes while the node still exists), stop the
        planner, free the renderer's GL context while EGL is still up (left to the garbage
        collector at exit, it is freed after EGL and prints a traceback), then stop."""
        if self._planner is not None:
            self._planner.close()
        close = getattr(self.sim, "close", None)  # the MuJoCo simulators' (not in the Simulator protocol)
        if callable(close):
            close()
        super().destroy_node()

    def _image(self, camera: str, frame_id: str) -> tuple[Image, np.ndarray]:
        """One frame of ``camera`` ('': the fixed scene camera), stamped when it was rendered."""
        t = now_s(self)
        rgb = self.sim.render(camera)  # (H, W, 3) uint8
        return rgb8_image(rgb, t, frame_id), rgb

    def _on_extra_camera_tick(self) -> None:
        camera = self._extra_order[self._extra_turn % len(self._extra_order)]
        self._extra_turn += 1
        self.extra_image_pubs[camera].publish(self._image(camera, f"{camera}_optical_frame")[0])

    def _on_camera_tick(self) -> None:
        msg, rgb = self._image("", self.params.camera_frame_id)
        self.image_pub.publish(msg)
        if self.compressed_pub is not None:
            cmsg = CompressedImage()
            cmsg.header = msg.header
            cmsg.format, data = encode_compressed(rgb, "jpeg")
            cmsg.data = data
            self.compressed_pub.publish(cmsg)
        self.error_pub.publish(Float64(data=float(self.sim.task_error_m())))
        self.success_pub.publish(Bool(data=bool(self.sim.success(self.params.success_tolerance_m))))


def main(args: list[str] | None = None) -> int:
    """Entry point of the ``sim_robot_node`` executable."""
    return run_node(SimRobotNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
