"""inference: newest Observation -> ActionChunk, at batch 1, never on a backlog.

The subscription keeps only the newest observation (depth 1); a timer runs the policy
every ``recompute_every`` control periods on it, if it is new and fresh. The chunk is
stamped with the observation's stamp so the action buffer can place it in time. Joints are
taken from the observation by name: ``joint_names`` as the proprio, and the observed-only
joints the checkpoint reads (``runner.state_joints``, e.g. franka's ``suction_cup``) as its
state; an observation lacking one is rejected (logged, no chunk: the action buffer holds).
The checkpoint's state joints must be listed in the parameter file's ``state_joints`` (else
exit 2 at start, or the update is refused); listed ones the checkpoint does not read are
ignored, so older checkpoints keep working.

New weights: a checkpoint directory on ``inference/model_update`` (std_msgs/String, from
the adaptation node) is loaded and warmed up on a background thread, so the timer never
waits for it; then the runner reference is swapped, and the timer, which reads that
reference once per call, answers with the new weights from its next call on
(``ActionChunk.model_version`` says which weights answered). The previous runner is kept:
``~/rollback`` (std_srvs/Trigger) swaps back to it (calling it again swaps forward). An
update that cannot be loaded is logged and ignored. What is being served is published,
latched, on ``inference/active_model`` (JSON {"checkpoint_path", "model_version"}), so the
adaptation node fine-tunes what runs, also after a rollback.

``policy_source: sim_expert`` serves the simulated robot's scripted expert instead of a
checkpoint (its plans from ``sim_robot/expert_chunk``): a perfect policy through the same
sync -> inference -> buffer -> handoff -> safety path, to show the graph does not spoil one.
"""
from __future__ import annotations

import json
import os
import threading
import time

import numpy as np
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String
from std_srvs.srv import Trigger

from hybridvla_msgs.msg import ActionChunk, Observation
from hybridvla_ros.core.image import ImageDecodeError, decode_raw
from hybridvla_ros.core.sync import select_joints
from hybridvla_ros.model.checkpoint import CheckpointError, model_version_of
from hybridvla_ros.model.runner import PolicyRunner, Prediction, load_runner
from hybridvla_ros.nodes.common import load_schema, now_s, run_node, stamp_to_s
from hybridvla_ros.params import ParameterError
from hybridvla_ros.params.inference import InferenceParams

LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)


class SimExpertSource:
    """``policy_source: sim_expert``: the simulated robot's scripted expert stands in for the model
    (a perfect policy, to show the graph does not spoil one). Same ``predict`` as PolicyRunner:
    the newest ``sim_robot/expert_chunk``, confidence 1."""

    head_type = "sim_expert"
    model_version = 0
    state_joints: tuple[str, ...] = ()  # the expert reads the simulator, not the observation
    MAX_AGE_S = 0.3  # an older plan is not used (ValueError: the observation is skipped)

    def __init__(self, action_dim: int, chunk_size: int) -> None:
        self.action_dim, self.chunk_size = action_dim, chunk_size
        self._chunk: ActionChunk | None = None
        self.stamp = None  # builtin_interfaces/Time of the chunk last returned

    def on_chunk(self, msg: ActionChunk) -> None:
        self._chunk = msg

    def predict(self, _image: np.ndarray, _q: np.ndarray, _instruction: str, num_samples: int = 1,
                state: np.ndarray | None = None) -> Prediction:
        msg = self._chunk
        if msg is None or (msg.chunk_length, msg.action_dim) != (self.chunk_size, self.action_dim):
            raise ValueError("no expert chunk of the right shape yet (is sim_robot.expert_chunk_rate_hz > 0?)")
        age_s = time.time() - stamp_to_s(msg.header.stamp)
        if age_s > self.MAX_AGE_S:
            raise ValueError(f"expert chunk is {age_s:.3f} s old")
        if self.stamp is not None and stamp_to_s(msg.header.stamp) <= stamp_to_s(self.stamp):
            raise ValueError("no new expert plan since the last chunk")  # the buffer keeps playing that one
        self.stamp = msg.header.stamp
        actions = np.asarray(msg.actions, dtype=np.float64).reshape(self.chunk_size, self.action_dim)  # (T, D)
        return Prediction(actions=actions, confidence=1.0, latency_s=0.0, head_type=self.head_type)


class InferenceNode(Node):
    """Publishes ``action_chunk`` (hybridvla_msgs/ActionChunk)."""

    def __init__(self) -> None:
        super().__init__("inference", automatically_declare_parameters_from_overrides=True)
        self.params = p = load_schema(self, InferenceParams)
        self._expert: SimExpertSource | None = None
        if p.policy_source == "sim_expert":
            self.runner = self._expert = SimExpertSource(p.action_dim, p.chunk_size)
            self.create_subscription(ActionChunk, "sim_robot/expert_chunk", self._expert.on_chunk, QoSProfile(depth=2))
        else:
            try:
                self.runner = load_runner(p.checkpoint_path, p.embodiment, p.runtime, num_threads=p.num_threads,
                                          mode=p.head_type)
            except (CheckpointError, ValueError, FileNotFoundError) as exc:
                raise ParameterError(f"inference.checkpoint_path: {p.checkpoint_path!r}: {exc}") from None
        if self.runner.action_dim != p.action_dim:
            raise ParameterError(
                f"inference.checkpoint_path: head for {p.embodiment} has action_dim "
                f"{self.runner.action_dim}, the parameter file says {p.action_dim}")
        unlisted = self._unlisted_state_joints(self.runner)
        if unlisted:
            raise ParameterError(
                f"inference.state_joints: the policy in {p.checkpoint_path!r} observes {unlisted} for "
                f"{p.embodiment}, which state_joints {list(p.state_joints)} does not list (the driver must "
                "report them in joint_states and the parameter file name them)")
        unused = [j for j in p.state_joints if j not in self.runner.state_joints]
        if unused:
            self.get_logger().info(f"state_joints {unused} are not observed by this policy (an older checkpoint?); "
                                   "serving it without them")
        self.checkpoint_path = os.path.abspath(p.checkpoint_path)
        self.previous: tuple[PolicyRunner, str] | None = None  # what ~/rollback swaps back to
        self._swap_lock = threading.Lock()   # guards runner / checkpoint_path / previous / loader state
        self._loading = False
        self._pending_update: str | None = None
        self._latest: Observation | None = None
        self._last_used_stamp_s = -1.0
        self._last_run_s = -1e9
        self._recompute_period_s = p.recompute_every * p.control_period_s
        self._seq = 0
        self.skipped_stale = 0
        self.pub = self.create_publisher(ActionChunk, "action_chunk", QoSProfile(depth=2))
        self.active_pub = self.create_publisher(String, "inference/active_model", LATCHED)
        self.create_subscription(Observation, "observation", self._on_observation, QoSProfile(depth=1))
        self.create_subscription(String, "inference/model_update", self._on_model_update, QoSProfile(depth=5))
        self.create_service(Trigger, "~/rollback", self._on_rollback)
        self.create_timer(self._recompute_period_s, self._on_timer)
        self._publish_active()
        self.get_logger().info(
            f"policy {p.checkpoint_path} for {p.embodiment} ({self.runner.head_type} head on {p.runtime}, "
            f"chunk {self.runner.chunk_size}) every {p.recompute_every * p.control_period_s * 1e3:.0f} ms")

    def _on_timer(self) -> None:
        if now_s(self) - self._last_run_s >= 0.9 * self._recompute_period_s:
            self._tick()

    def _on_observation(self, msg: Observation) -> None:
        self._latest = msg
        # Answer a fresh frame at once when a recompute is due, rather than at the next timer
        # tick: the frame does not wait up to a whole recompute period (the timer stays as a
        # fallback for frames that arrive early).
        if now_s(self) - self._last_run_s >= 0.9 * self._recompute_period_s:
            self._tick()

    def _unlisted_state_joints(self, runner: PolicyRunner) -> list[str]:
        """The runner's observed-only joints the parameter file's state_joints does not list."""
        return [j for j in getattr(runner, "state_joints", ()) if j not in self.params.state_joints]

    # --- weight swap
    def _publish_active(self) -> None:
        with self._swap_lock:
            doc = {"checkpoint_path": self.checkpoint_path, "model_version": int(self.runner.model_version)}
        self.active_pub.publish(String(data=json.dumps(doc)))

    def _on_model_update(self, msg: String) -> None:
        if self._expert is not None:
            self.get_logger().warning("model update ignored: policy_source is sim_expert", throttle_duration_sec=10.0)
            return
        path = msg.data.strip()
        if not path:
            self.get_logger().warning("model update with an empty checkpoint path ignored")
            return
        with self._swap_lock:
            if self._loading:  # one load at a time; the newest waiting update wins
                self._pending_update = path
                return
            self._loading = True
        threading.Thread(target=self._load_updates, args=(path,), name="model_update", daemon=True).start()

    def _load_updates(self, path: str) -> None:
        """Loader thread: load, check and warm up each update, then swap it in."""
        while True:
            self._load_one(os.path.abspath(path))
            with self._swap_lock:
                if self._pending_update is None:
                    self._loading = False
                    return
                path, self._pending_update = self._pending_update, None

    def _load_one(self, path: str) -> None:
        p = self.params
        log = self.get_logger()
        try:
            if model_version_of(path) == self.runner.model_version:
                log.info(f"model update {path}: already serving model_version {self.runner.model_version}")
                return
            runner = load_runner(path, p.embodiment, p.runtime, num_threads=p.num_threads, mode=p.head_type)
            if (runner.action_dim, runner.chunk_size) != (p.action_dim, p.chunk_size):
                raise ValueError(f"head for {p.embodiment} has action_dim {runner.action_dim}, chunk_size "
                                 f"{runner.chunk_size}; this node needs {p.action_dim}, {p.chunk_size}")
            unlisted = self._unlisted_state_joints(runner)
            if unlisted:
                raise ValueError(f"the policy observes state joints {unlisted} that state_joints "
                                 f"{list(p.state_joints)} does not list")
            runner.warmup(2)  # the first calls are slow: not on the timer
        except (CheckpointError, ValueError, OSError) as exc:
            log.error(f"model update {path} ignored, still serving {self.checkpoint_path} "
                      f"(model_version {self.runner.model_version}): {exc}")
            return
        with self._swap_lock:
            previous = self.previous = (self.runner, self.checkpoint_path)
            self.runner, self.checkpoint_path = runner, path
        log.info(f"now serving {path} (model_version {runner.model_version}); previous "
                 f"{previous[1]} (model_version {previous[0].model_version}) kept for ~/rollback")
        self._publish_active()

    def _on_rollback(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self._swap_lock:
            if self.previous is None:
                response.success = False
                response.message = f"no previous version; serving {self.checkpoint_path}"
                return response
            current = (self.runner, self.checkpoint_path)
            (self.runner, self.checkpoint_path), self.previous = self.previous, current
            response.success = True
            response.message = (f"now serving {self.checkpoint_path} (model_version {self.runner.model_version}); "
                                f"{current[1]} (model_version {current[0].model_version}) kept as previous")
        self.get_logger().info(f"rollback: {response.message}")
        self._publish_active()
        return response

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
            self.get_logger().warning(f"observation is {age_s:.3f} s old; not running the policy on it",
                                   throttle_duration_sec=2.0)
            return
        self._last_used_stamp_s = stamp_s
        self._last_run_s = now_s(self)
        runner = self.runner  # one reference per call: a swap takes effect between two calls
        joints = self.params.joint_names
        state_joints = tuple(runner.state_joints)
        try:
            # By name: the commanded joints, then the observed-only ones this runner reads (unnamed
            # values must be exactly those, in that order).
            observed = select_joints(msg.joint_names, msg.joint_positions, (*joints, *state_joints))
            q, state = observed[:len(joints)], observed[len(joints):]  # (D,), (E,)
            image = decode_raw(msg.image.encoding, msg.image.height, msg.image.width, msg.image.step, msg.image.data)
            pred = runner.predict(image, q, msg.instruction or self.params.instruction,
                                  num_samples=self.params.confidence_samples,
                                  state=state if state_joints else None)
        except (ImageDecodeError, ValueError) as exc:
            self.get_logger().warning(f"observation rejected: {exc}", throttle_duration_sec=2.0)
            return
        out = ActionChunk()
        out.header = msg.header
        if self._expert is not None:  # the plan starts when the expert made it, not at the frame
            out.header.stamp = self._expert.stamp
        out.embodiment = self.params.embodiment
        out.chunk_length, out.action_dim = (int(n) for n in pred.actions.shape)
        out.step_period_s = self.params.control_period_s
        out.actions = pred.actions.astype(np.float64).ravel().tolist()  # (T, D) row-major
        out.confidence = float(pred.confidence)
        out.inference_latency_s = float(pred.latency_s)
        out.head_type = pred.head_type
        out.seq = self._seq
        out.model_version = int(runner.model_version)
        self._seq += 1
        self.pub.publish(out)


def main(args: list[str] | None = None) -> int:
    """Entry point of the ``inference_node`` executable."""
    return run_node(InferenceNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
