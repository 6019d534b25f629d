"""A Franka driver nobody on the project wrote, on a bad day (issue 18, item 9).

The graph runs as ``hybridvla run --no-sim`` starts it (separate processes, real DDS, the
franka parameter file), without the simulated robot: this test process plays the robot.
Its driver publishes joint_states at 100 Hz with the arm's joints shuffled among extra ones
(the fingers, the suction cup's switch), on a clock 20 ms ahead with jitter (uncorrected:
within the sync's bounds); JPEG frames at 30 Hz from a camera whose clock is 250 ms behind
(corrected with ``sync.camera_stamp_offset_s``, as the README says to); a wrench at 100 Hz;
and it follows every JointTrajectory it receives as a position-controlled arm does (the
measured position is the last command, matched by joint name).

The policy needs no weights: ``inference.policy_source: sim_expert`` serves plans that this
test publishes on the expert's topic, a fast sweep around home with, now and then, a chunk
of random targets up to 0.5 rad outside the joint limits: arbitrary outputs the safety
filter must keep inside the limits. (The adaptation node, which fine-tunes weights off the
control path and needs a checkpoint, is left out; every other node of the graph runs.)

Then the driver has a bad day, one thing at a time: one frame and one joint_states stamped
5 s in the future, one of each 5 s in the past, one 4000x3000 JPEG frame, one NaN
joint_states; the action buffer is killed (kill -9) while the arm moves and the launcher
restarts it; finally joint_states go silent while the arm moves.

Checks: every command inside the position limits and each step within max_velocity * period
(the safety filter node test's tolerance); whenever the commands come to rest (one repeats
the one before) or go quiet for longer than the filter's resume bound (3 periods), the last
move was within the acceleration limit and the stream was at rest before going quiet: after
the kill, at the final silence, and anywhere else the buffer ran dry (a gap caused by the
filter's own process not running at all on a loaded machine is told apart by its status
messages stopping too, and reported); each bad message
is counted by the sync and costs observations and chunks no gap longer than MAX_STALL_S (a
5 s stall would fail); no node but the killed one died. Everything waits for readiness (a
count heard, a counter on /diagnostics), not for a clock.
"""
from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import WrenchStamped
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, JointState
from trajectory_msgs.msg import JointTrajectory

from hybridvla_msgs.msg import ActionChunk, Observation, SafetyStatus
from hybridvla_ros.core.image import encode_compressed
from hybridvla_ros.launch_description import default_config_dir, describe_graph, validate_graph
from hybridvla_ros.launcher import GraphLauncher, RestartPolicy
from hybridvla_ros.nodes.common import s_to_stamp
from hybridvla_ros.params import from_params, load_node_params
from hybridvla_ros.params.safety_filter import SafetyFilterParams
from hybridvla_ros.params.sync import SyncParams

pytestmark = [pytest.mark.ros, pytest.mark.e2e]
FRANKA = os.path.join(default_config_dir(), "franka.yaml")

# policies.sim_expert.EXPERT_PLAN_TOPIC (not imported: importing the policies imports torch)
EXPERT_PLAN_TOPIC = "sim_robot/expert_chunk"
EXTRA_JOINTS = ("panda_finger_joint1", "panda_finger_joint2")
ROBOT_CLOCK_AHEAD_S = 0.02      # the robot driver's clock, uncorrected (inside max_stamp_future_s / max_stamp_offset_s)
ROBOT_CLOCK_JITTER_S = 0.0003
CAMERA_CLOCK_BEHIND_S = 0.25    # the camera's clock, corrected by sync.camera_stamp_offset_s
BAD_STAMP_S = 5.0               # the future and past stamps of the single bad messages
MAX_STALL_S = 2.0               # the longest gap in observations / chunks one bad message may cause
FRAME_SIZE = (240, 320)         # the camera's normal frames (H, W)
HUGE_FRAME_SIZE = (3000, 4000)  # one 12 MP JPEG (sync.max_image_pixels is 4.2 MP)
SYNC_DIAGNOSTIC = "hybridvla: sync inputs"
SAFETY_DIAGNOSTIC = "hybridvla: safety_filter limits"
STEP_TOL = 1e-6  # relative, as the safety filter's node test


class ForeignFrankaDriver:
    """The robot, played by the test process: sensors out, commands in, and what the graph says."""

    def __init__(self, ros: Any, p: SafetyFilterParams, seed: int = 18) -> None:
        self.p = p
        self.rng = np.random.default_rng(seed)
        self.node = Node("foreign_franka_driver", context=ros.context)
        ros.executor.add_node(self.node)
        n = self.node
        self.home = np.asarray(p.home_position, dtype=np.float64)
        self.lo, self.hi = np.asarray(p.position_min), np.asarray(p.position_max)
        # The driver's own joint order: the arm's joints shuffled among joints the graph does not command.
        names = [*p.joint_names, *p.state_joints, *EXTRA_JOINTS]
        self.names = [names[i] for i in self.rng.permutation(len(names))]
        self.q = {name: 0.0 for name in names}
        self.q.update(zip(p.joint_names, self.home.tolist()))
        self.q.update({"panda_finger_joint1": 0.04, "panda_finger_joint2": 0.04})
        self.joints_on = True
        self._last_joint_stamp = 0.0
        self._plan_seq = 0
        self._t0 = time.time()
        self.frames = [encode_compressed(self._picture(FRAME_SIZE, k))[1] for k in range(4)]
        self.huge_frame = encode_compressed(self._picture(HUGE_FRAME_SIZE, 0), quality=80)[1]
        self._frame_k = 0
        # what was heard
        self.commands: list[np.ndarray] = []   # (7,) in the parameter file's joint order
        self.command_sent: list[float] = []    # the safety filter's send time (DDS source timestamp, s)
        self.command_names_ok = True
        self.status_sent: list[float] = []     # safety_filter/status send times (s)
        self.observations: list[float] = []    # receive times (monotonic s)
        self.chunks: list[float] = []
        self.diag: dict[str, dict[str, str]] = {}   # diagnostic name -> newest values
        self.diag_message: dict[str, str] = {}

        self.js_pub = n.create_publisher(JointState, p.joint_states_topic, QoSProfile(depth=10))
        self.wrench_pub = n.create_publisher(WrenchStamped, p.wrench_topic, QoSProfile(depth=10))
        self.cam_pub = n.create_publisher(CompressedImage, p.camera_topic + "/compressed", qos_profile_sensor_data)
        self.plan_pub = n.create_publisher(ActionChunk, EXPERT_PLAN_TOPIC, QoSProfile(depth=2))
        n.create_subscription(JointTrajectory, p.command_topic, self._on_command, QoSProfile(depth=500))
        n.create_subscription(SafetyStatus, "safety_filter/status", self._on_status, QoSProfile(depth=500))
        n.create_subscription(Observation, "observation", self._on_observation, QoSProfile(depth=100))
        n.create_subscription(ActionChunk, "action_chunk", self._on_chunk, QoSProfile(depth=100))
        n.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, QoSProfile(depth=50))
        n.create_timer(0.01, self._publish_joints)
        n.create_timer(1.0 / 30.0, self._publish_frame)
        n.create_timer(0.05, self._publish_plan)

    # --- the robot's sensors
    @staticmethod
    def _picture(size: tuple[int, int], k: int) -> np.ndarray:
        h, w = size
        y, x = np.mgrid[0:h, 0:w]
        img = np.stack([(x * 255 // w + 40 * k) % 256, y * 255 // h, np.full((h, w), 90 + 30 * k)], axis=-1)
        return img.astype(np.uint8)  # (H, W, 3)

    def joint_state(self, stamp_s: float, nan: bool = False) -> JointState:
        msg = JointState(name=list(self.names), position=[self.q[name] for name in self.names],
                         velocity=[0.0] * len(self.names), effort=[0.0] * len(self.names))
        if nan:
            msg.position = [float("nan")] * len(self.names)
        s_to_stamp(stamp_s, msg.header.stamp)
        return msg

    def robot_clock(self) -> float:
        return time.time() + ROBOT_CLOCK_AHEAD_S

    def camera_clock(self) -> float:
        return time.time() - CAMERA_CLOCK_BEHIND_S

    def _publish_joints(self) -> None:
        if not self.joints_on:
            return
        stamp = self.robot_clock() + self.rng.uniform(-ROBOT_CLOCK_JITTER_S, ROBOT_CLOCK_JITTER_S)
        stamp = max(stamp, self._last_joint_stamp + 1e-4)  # a driver's own stamps do not go back
        self._last_joint_stamp = stamp
        self.js_pub.publish(self.joint_state(stamp))
        w = WrenchStamped()
        s_to_stamp(stamp, w.header.stamp)
        w.header.frame_id = "panda_hand"
        w.wrench.force.z = 2.0
        self.wrench_pub.publish(w)

    def frame(self, stamp_s: float, data: bytes) -> CompressedImage:
        msg = CompressedImage(format="rgb8; jpeg compressed bgr8", data=data)
        s_to_stamp(stamp_s, msg.header.stamp)
        msg.header.frame_id = "camera_color_optical_frame"
        return msg

    def _publish_frame(self) -> None:
        self._frame_k = (self._frame_k + 1) % len(self.frames)
        self.cam_pub.publish(self.frame(self.camera_clock(), self.frames[self._frame_k]))

    def _publish_plan(self) -> None:
        """The 'policy': a sweep around home at up to about max velocity, every 12th plan a chunk of
        random targets up to 0.5 rad beyond the joint limits."""
        p = self.p
        start = time.time()
        t = start - self._t0 + p.control_period_s * np.arange(p.chunk_size)[:, None]  # (T, 1)
        phase = np.arange(len(p.joint_names))[None, :]
        targets = self.home + 0.9 * np.sin(2.0 * np.pi * 0.4 * t + phase)  # (T, 7)
        if self._plan_seq % 12 == 11:
            targets = self.rng.uniform(self.lo - 0.5, self.hi + 0.5, size=targets.shape)
        msg = ActionChunk()
        s_to_stamp(start, msg.header.stamp)
        msg.embodiment = p.embodiment
        msg.chunk_length, msg.action_dim = targets.shape
        msg.step_period_s = p.control_period_s
        msg.actions = targets.ravel().tolist()
        msg.confidence = 1.0
        msg.head_type = "sim_expert"
        msg.seq = self._plan_seq
        self._plan_seq += 1
        self.plan_pub.publish(msg)

    # --- the robot's controller, and what the graph says
    def _on_command(self, msg: JointTrajectory, info: Any) -> None:
        positions = dict(zip(msg.joint_names, msg.points[-1].positions)) if msg.points else {}
        if set(positions) != set(self.p.joint_names):
            self.command_names_ok = False
            return
        self.q.update(positions)  # a position-controlled arm: it is where it was last told to be
        self.commands.append(np.array([positions[name] for name in self.p.joint_names]))
        stamp = info.get("source_timestamp") if info else None
        self.command_sent.append(stamp * 1e-9 if stamp else time.time())

    def _on_status(self, _msg: SafetyStatus, info: Any) -> None:
        stamp = info.get("source_timestamp") if info else None
        self.status_sent.append(stamp * 1e-9 if stamp else time.time())

    def _on_observation(self, _msg: Observation) -> None:
        self.observations.append(time.monotonic())

    def _on_chunk(self, _msg: ActionChunk) -> None:
        self.chunks.append(time.monotonic())

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name in (SYNC_DIAGNOSTIC, SAFETY_DIAGNOSTIC):
                self.diag[status.name] = {kv.key: kv.value for kv in status.values}
                self.diag_message[status.name] = status.message

    # --- helpers for the test
    def sync_count(self, key: str) -> int:
        return int(self.diag.get(SYNC_DIAGNOSTIC, {}).get(key, "0"))

    def safety_count(self, key: str) -> int:
        return int(self.diag.get(SAFETY_DIAGNOSTIC, {}).get(key, "0"))

    def moving_fast(self) -> bool:
        """The last two commands moved some joint at more than a quarter of its max velocity."""
        if len(self.commands) < 2:
            return False
        step = np.abs(self.commands[-1] - self.commands[-2])
        return bool((step > 0.25 * np.asarray(self.p.max_velocity) * self.p.control_period_s).any())


def longest_gap(times: list[float], t0: float, after: int) -> float:
    """The longest gap between consecutive receive times from the last one before ``t0`` to the
    ``after``-th one after it (t0 itself counts as the start when nothing came before)."""
    arr = np.asarray(times)
    i = int(np.searchsorted(arr, t0))
    window = np.concatenate([arr[max(i - 1, 0):i] if i else [t0], arr[i:i + after]])
    return float(np.diff(window).max())


def test_a_foreign_driver_with_bad_stamps_huge_frames_and_a_killed_node(ros) -> None:
    p = from_params(SafetyFilterParams, load_node_params(FRANKA, "safety_filter"))
    dt = p.control_period_s
    vmax, amax = np.asarray(p.max_velocity), np.asarray(p.max_acceleration)
    lo, hi = np.asarray(p.position_min), np.asarray(p.position_max)
    resume_s = 3.0 * dt  # the filter's resume bound (core.safety RESUME_PERIODS): longer quiet = the arm rested

    specs = describe_graph("franka", sim=False, overrides={
        "inference": {"policy_source": "sim_expert", "checkpoint_path": str(ros.tmp_path / "no_weights")},
        "sync": {"image_transport": "compressed", "camera_stamp_offset_s": CAMERA_CLOCK_BEHIND_S},
        "correction_recorder": {"store_path": str(ros.tmp_path / "corrections.sqlite")},
    })
    specs = [s for s in specs if s.name != "adaptation"]  # fine-tunes weights (needs a checkpoint), off the path
    validate_graph(specs)
    driver = ForeignFrankaDriver(ros, p)  # the robot is up before the graph starts
    lines: list[str] = []
    launcher = GraphLauncher(specs, env=ros.env, log_dir=str(ros.tmp_path / "logs"), restart=RestartPolicy(),
                             log=lines.append)
    ros.runners.append(launcher)  # stopped at teardown whatever happens
    t_start = time.monotonic()
    launcher.start()
    last_look = [0.0]

    def spin_until(predicate: Callable[[], bool], timeout_s: float) -> bool:
        """Drive the robot and supervise the graph until ``predicate`` holds."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if time.monotonic() - last_look[0] > 0.1:
                last_look[0] = time.monotonic()
                launcher.supervise()  # restarts a dead node; raises NodeDied if the graph ends
            if predicate():
                return True
            ros.executor.spin_once(timeout_sec=0.005)
        return predicate()

    # Ready: the policy's chunks drive the arm.
    assert spin_until(lambda: len(driver.chunks) >= 5 and driver.moving_fast(), 120.0), \
        f"the graph never drove the foreign robot\n{ros.logs()}"
    assert driver.command_names_ok, "commands must name the parameter file's joints"
    t_ready = time.monotonic()

    # One bad message at a time; each is counted by the sync and costs no stall.
    gaps: dict[str, tuple[float, float]] = {}
    future, past = BAD_STAMP_S, -BAD_STAMP_S
    injections: list[tuple[str, str, Callable[[], None]]] = [
        ("frame +5 s", "dropped_future_stamp",
         lambda: driver.cam_pub.publish(driver.frame(driver.camera_clock() + future, driver.frames[0]))),
        ("joint_states +5 s", "joint_states_rejected_future_stamp",
         lambda: driver.js_pub.publish(driver.joint_state(driver.robot_clock() + future))),
        ("frame -5 s", "dropped_too_old",
         lambda: driver.cam_pub.publish(driver.frame(driver.camera_clock() + past, driver.frames[0]))),
        ("joint_states -5 s", "joint_states_rejected_too_old",
         lambda: driver.js_pub.publish(driver.joint_state(driver.robot_clock() + past))),
        ("4000x3000 JPEG", "dropped_image_too_large",
         lambda: driver.cam_pub.publish(driver.frame(driver.camera_clock(), driver.huge_frame))),
        ("NaN joint_states", "joint_states_rejected_non_finite",
         lambda: driver.js_pub.publish(driver.joint_state(driver.robot_clock(), nan=True))),
    ]
    measured_rejected = driver.safety_count("measured_rejected")
    n_obs, n_chunks = len(driver.observations), len(driver.chunks)
    t0 = time.monotonic()  # the same measure with nothing injected, for comparison
    assert spin_until(lambda: len(driver.observations) >= n_obs + 10 and len(driver.chunks) >= n_chunks + 3, 60.0)
    gaps["nothing"] = (longest_gap(driver.observations, t0, 10), longest_gap(driver.chunks, t0, 3))
    for name, key, send in injections:
        assert spin_until(lambda: SYNC_DIAGNOSTIC in driver.diag, 10.0), ros.logs()
        before = driver.sync_count(key)
        for _attempt in range(3):  # a frame goes best effort (sensor QoS): sent again if it was lost
            t0 = time.monotonic()
            send()
            if spin_until(lambda k=key, b=before: driver.sync_count(k) > b, 5.0):
                break
        else:
            pytest.fail(f"{name}: the sync never counted it as {key}\n{ros.logs()}")
        n_obs, n_chunks = len(driver.observations), len(driver.chunks)
        assert spin_until(lambda o=n_obs, c=n_chunks: len(driver.observations) >= o + 10
                          and len(driver.chunks) >= c + 3, 60.0), f"{name}: the flow stopped\n{ros.logs()}"
        gaps[name] = (longest_gap(driver.observations, t0, 10), longest_gap(driver.chunks, t0, 3))
        assert max(gaps[name]) < MAX_STALL_S, (name, gaps)
    # The NaN reading never reached the safety filter's state (it counts it).
    assert spin_until(lambda: driver.safety_count("measured_rejected") > measured_rejected, 5.0), driver.diag
    # Clocks: the camera's known offset is corrected, the robot's 20 ms shows as measured.
    sync = driver.diag[SYNC_DIAGNOSTIC]
    bound = from_params(SyncParams, load_node_params(FRANKA, "sync"), "sync").max_stamp_offset_s
    assert float(sync["camera_stamp_offset_s"]) == pytest.approx(CAMERA_CLOCK_BEHIND_S), sync
    assert abs(float(sync["camera_offset_s"])) < bound, sync
    assert abs(float(sync["joint_states_offset_s"]) + ROBOT_CLOCK_AHEAD_S) < 0.1, sync
    assert "camera stamps are" not in driver.diag_message[SYNC_DIAGNOSTIC], driver.diag_message

    # A node dies mid-motion: the arm comes to rest, the launcher restarts the node, the policy drives again.
    assert spin_until(driver.moving_fast, 30.0), "the arm should be moving before the kill"
    n_kill = len(driver.commands)
    os.kill(launcher.procs["action_buffer"].pid, signal.SIGKILL)
    assert spin_until(lambda: launcher.restarts["action_buffer"] == 1, 30.0), ros.logs()
    t_restart = time.time()  # the new process was started just now: nothing before comes from it
    assert lines and lines[0].startswith("[launcher] action_buffer exited with code -9; restarting it"), lines
    n_restart = len(driver.commands)
    assert spin_until(lambda: len(driver.commands) > n_restart + 25 and driver.moving_fast(), 60.0), \
        f"the policy drives again after the restart\n{ros.logs()}"

    # The driver goes silent mid-motion: observations stop, the buffer runs dry, the arm comes to rest.
    assert spin_until(driver.moving_fast, 30.0), "the arm should be moving before the silence"
    n_silent = len(driver.commands)
    driver.joints_on = False
    holds_at_end = 5

    def at_rest_for(k: int) -> bool:
        c = driver.commands
        return len(c) >= n_silent + k + 1 and all(np.array_equal(c[-1], c[-1 - j]) for j in range(1, k + 1))

    assert spin_until(lambda: at_rest_for(holds_at_end), 30.0), f"no rest after the silence\n{ros.logs()}"
    t_end = time.monotonic()
    dead = launcher.dead()
    assert not dead and launcher.restarts == {s.name: int(s.name == "action_buffer") for s in specs}, \
        (dead, launcher.restarts, ros.logs())

    # --- every command, checked
    cmds = np.vstack([driver.home, *driver.commands])      # (N+1, 7); the filter starts where the arm stands
    sent = np.asarray([driver.command_sent[0] - dt, *driver.command_sent])
    assert np.all(cmds >= lo - 1e-9) and np.all(cmds <= hi + 1e-9), "a command left the joint limits"
    steps = np.diff(cmds, axis=0)  # (N, 7); steps[i - 1] moved to cmds[i]
    over = np.abs(steps) > vmax * dt * (1 + STEP_TOL) + 1e-9
    assert not over.any(), f"{int(over.any(axis=1).sum())} steps over max_velocity * period: {steps[over.any(1)][:5]}"
    # Whenever the arm came to rest (a command repeats the one before) or the stream went quiet for
    # longer than the resume bound, the last move braked within amax * dt^2 and the stream was at rest
    # before going quiet: a controller that holds the last point sees at most the acceleration limit.
    c = amax * dt * dt * (1 + STEP_TOL) + 1e-9
    zero = np.abs(steps).max(axis=1) == 0  # zero[i - 1]: cmds[i] repeats cmds[i - 1]
    bad: list[tuple[str, int, float, float]] = []
    stalled: list[tuple[int, float, float]] = []
    judged: set[int] = set()

    def held_while_moving(j: int, k: int) -> None:
        """cmds[j] moved and the controller held it until cmds[k], longer than the resume bound. If the
        filter's process ran meanwhile (a status went out while a braking command was due and the arm
        had not been held long enough to be at rest), it chose to stop while moving: a failure. If it
        did not run at all, a loaded machine stalled it: reported."""
        if j in judged:
            return
        judged.add(j)
        ran = [s for s in driver.status_sent if sent[j] + 1.5 * dt < s < sent[j] + resume_s - 0.25 * dt]
        quiet, step = float(sent[k] - sent[j]), float(np.abs(steps[j - 1]).max())
        (bad.append(("quiet while moving", j, quiet, step)) if ran else stalled.append((j, quiet, step)))

    rests = [i for i in range(2, len(cmds)) if zero[i - 1] and not zero[i - 2]]  # cmds[i - 1]: the arm stands
    for i in rests:
        j = i - 1  # the last command that moved
        if np.all(np.abs(steps[j - 1]) <= c):
            continue
        if sent[i] - sent[j] > resume_s:
            held_while_moving(j, i)
        else:
            bad.append(("stopped abruptly", j, float(sent[i] - sent[j]), float(np.abs(steps[j - 1]).max())))
    for j in np.nonzero(np.diff(sent) > resume_s)[0]:
        if j >= 1 and not zero[j - 1]:
            held_while_moving(int(j), int(j) + 1)
    assert not bad, f"the stream stopped while moving (what, index, seconds, largest last step): {bad}"
    # The kill and the silence (both while the arm moved fast) ended in a rest; the arm stands at the end.
    n_back = int(np.searchsorted(sent, t_restart))  # cmds[:n_back] were sent before the restart
    assert any(n_kill < i - 1 < n_back for i in rests), "no rest between the kill and the restart"
    assert any(i - 1 > n_silent for i in rests) and zero[-1], "no rest after the silence"

    # Said on /diagnostics and in the logs.
    assert spin_until(lambda: driver.safety_count("stream_stops") >= 1, 5.0), driver.diag
    s = driver.diag[SAFETY_DIAGNOSTIC]
    assert int(s["modified"]) <= int(s["commands_sent"]), s
    logs = {f.stem: f.read_text(errors="replace") for f in (ros.tmp_path / "logs").glob("*.log")}
    assert not [name for name, text in logs.items() if "Traceback" in text], ros.logs()
    sync_log = logs["sync"]
    for reason in ("future_stamp", "too_old", "image_too_large", "non_finite"):
        assert reason in sync_log, f"no log line for {reason}\n{sync_log[-3000:]}"
    print(f"\nforeign driver: ready after {t_ready - t_start:.1f} s, checks done after {t_end - t_start:.1f} s; "
          f"{len(driver.commands)} commands, {len(driver.observations)} observations, {len(driver.chunks)} chunks; "
          f"filter stalls {stalled}")
    for name, (g_obs, g_chunk) in gaps.items():
        print(f"  longest gap around {name:>18}: observations {g_obs * 1e3:6.0f} ms, chunks {g_chunk * 1e3:6.0f} ms")
