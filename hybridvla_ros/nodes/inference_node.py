"""inference: newest Observation -> ActionChunk, at batch 1, never on a backlog.

The subscription keeps only the newest observation (depth 1); a timer runs the policy
every ``recompute_every`` control periods on it, if it is new and fresh. The chunk is
stamped with its time base (the observation's stamp for our model) so the action buffer
can place it in time. The node only translates: ``policy_source`` picks a
:class:`~hybridvla_ros.policies.Policy` from the registry (``builtin``/``checkpoint``: our
model on ``runtime``; ``sim_expert``: the simulated robot's scripted expert, whose plans
arrive on the topics the policy lists in ``plan_topics``); a
:class:`~hybridvla_ros.policies.JointTransform` maps the Observation into the policy's
terms (its joints by name, then the observed-only state joints it reads, e.g. franka's
``suction_cup``; an observation lacking one is rejected: logged, no chunk, the action
buffer holds) and its chunk back into the robot's joint order. A policy's state joints
must be listed in the parameter file's ``state_joints`` (else exit 2 at start, or the
update is refused); listed ones it does not read are ignored, so older checkpoints keep
working.

New weights: a checkpoint directory on ``inference/model_update`` (std_msgs/String, from
the adaptation node) goes to a :class:`~hybridvla_ros.policies.PolicySlot`, which loads,
checks and warms it up on a background thread and swaps it in between two calls
(``ActionChunk.model_version`` says which weights answered); an update that cannot be
loaded is logged and ignored, and sources that are not adaptable refuse updates.
``~/rollback`` (std_srvs/Trigger) swaps back to the previous policy (called again: forward).
What is being served is published, latched, on ``inference/active_model`` (JSON
{"checkpoint_path", "model_version"}), so the adaptation node fine-tunes what runs, also
after a rollback.

Real-time chunking (``real_time_chunking``, :mod:`hybridvla_ros.core.rtc`): the node keeps the
last chunk it published and the measured observation-stamp -> publish delays of recent chunks;
for a policy that ``inpaints`` it hands the policy the prefix the new chunk must agree with
(the old chunk's targets at the new steps' times: frozen up to ``t0 +`` a high percentile of
the delays ``+ rtc_delay_margin_s``, then a soft mask over the rest of the overlap). A policy
that cannot inpaint (another runtime or head, the expert) is told nothing and says so once at
start; the action buffer's seam blending smooths its seams. ``/diagnostics`` (``hybridvla:
inference``, once a second) carries the delay estimate and the frozen steps of the last chunk.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String
from std_srvs.srv import Trigger

from hybridvla_msgs.msg import ActionChunk, Observation
from hybridvla_ros.core.image import ImageDecodeError, decode_raw
from hybridvla_ros.core.rtc import DelayEstimator, plan_prefix
from hybridvla_ros.nodes.common import load_schema, now_s, run_node, s_to_stamp, stamp_to_s
from hybridvla_ros.params import ParameterError
from hybridvla_ros.params.inference import InferenceParams
from hybridvla_ros.policies import (
    JointTransform,
    Policy,
    PolicyChunk,
    PolicyMismatch,
    PolicyObservation,
    PolicyRequirements,
    PolicySlot,
    RobotObservation,
    ServedPolicy,
    UnknownPolicySource,
    UpdateRefused,
    get_policy_factory,
)

LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)
DIAGNOSTIC_NAME = "hybridvla: inference"


def chunk_from_msg(msg: ActionChunk) -> PolicyChunk:
    """An ActionChunk (a plan someone published) as a PolicyChunk; ValueError when malformed."""
    actions = np.asarray(msg.actions, dtype=np.float64)
    shape = (int(msg.chunk_length), int(msg.action_dim))
    if actions.size != shape[0] * shape[1]:
        raise ValueError(f"actions: {actions.size} values for chunk_length {shape[0]} x action_dim {shape[1]}")
    return PolicyChunk(actions=actions.reshape(shape), start_s=stamp_to_s(msg.header.stamp),  # (T, D)
                       step_period_s=float(msg.step_period_s), confidence=float(msg.confidence),
                       latency_s=float(msg.inference_latency_s), head_type=msg.head_type,
                       model_version=int(msg.model_version))


class InferenceNode(Node):
    """Publishes ``action_chunk`` (hybridvla_msgs/ActionChunk)."""

    def __init__(self) -> None:
        super().__init__("inference", automatically_declare_parameters_from_overrides=True)
        self._started_s = time.perf_counter()
        self.params = p = load_schema(self, InferenceParams)
        try:
            make = get_policy_factory(p.policy_source)
        except UnknownPolicySource as exc:
            raise ParameterError(f"inference.{exc}") from None
        try:
            policy = make(p, p.checkpoint_path)
        except (ValueError, OSError) as exc:
            raise ParameterError(f"inference.checkpoint_path: {p.checkpoint_path!r}: {exc}") from None
        fits = PolicyRequirements(p.embodiment, tuple(p.joint_names), tuple(p.state_joints))
        try:
            fits.check(policy, p.checkpoint_path)
        except PolicyMismatch as exc:
            raise ParameterError(f"inference.{exc.field}: {exc}") from None
        # Warm up before serving: the first call loads the instruction encoder and is slow (6.6 s
        # idle, 24 s on a loaded machine), and a chunk computed that late is thrown away as stale.
        start_s = time.perf_counter()
        policy.warmup()
        self.get_logger().info(f"policy warmed up in {time.perf_counter() - start_s:.1f} s")
        unused = fits.unused_state_joints(policy)
        if unused:
            self.get_logger().info(f"state_joints {unused} are not observed by this policy (an older checkpoint?); "
                                   "serving it without them")
        # Updates must also keep the chunk length the action buffer expects.
        update_fits = dataclasses.replace(fits, chunk_size=p.chunk_size)
        self.slot = PolicySlot(policy, p.checkpoint_path, load=lambda path: make(p, path), check=update_fits.check,
                               on_change=self._publish_active, log=self.get_logger())
        self.transform = JointTransform(p.joint_names, p.instruction)
        self._latest: Observation | None = None
        self._last_used_stamp_s = -1.0
        self._last_run_s = -1e9
        self._recompute_period_s = p.recompute_every * p.control_period_s
        self._seq = 0
        self.skipped_stale = 0
        # real-time chunking: the last published chunk (robot order) and the measured delays
        self._last_chunk: PolicyChunk | None = None
        self._delays = DelayEstimator(p.rtc_delay_window, p.rtc_delay_percentile, p.rtc_delay_margin_s)
        self._rtc_chunks = 0          # chunks answered with a prefix
        self._last_frozen_steps = 0   # frozen steps of the last prefix
        if p.real_time_chunking and not policy.inpaints:
            self.get_logger().warning(
                f"real_time_chunking: policy {p.policy_source} ({p.head_type} on {p.runtime}) cannot inpaint; its "
                "seams are left to the action buffer's blending (blend_steps)")
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", QoSProfile(depth=10))
        self.create_timer(1.0, self._publish_diagnostics)
        self.pub = self.create_publisher(ActionChunk, "action_chunk", QoSProfile(depth=2))
        self.active_pub = self.create_publisher(String, "inference/active_model", LATCHED)
        self.create_subscription(Observation, "observation", self._on_observation, QoSProfile(depth=1))
        for topic in policy.plan_topics:
            self.create_subscription(ActionChunk, topic, functools.partial(self._on_plan, topic), QoSProfile(depth=2))
        self.create_subscription(String, "inference/model_update", self._on_model_update, QoSProfile(depth=5))
        self.create_service(Trigger, "~/rollback", self._on_rollback)
        self.create_timer(self._recompute_period_s, self._on_timer)
        self._publish_active(self.slot.active)
        self.get_logger().info(
            f"policy {p.policy_source} ({p.checkpoint_path}) for {p.embodiment} on {p.runtime}, chunk "
            f"{policy.chunk_size}, every {self._recompute_period_s * 1e3:.0f} ms")

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

    def _on_plan(self, topic: str, msg: ActionChunk) -> None:
        try:
            self.slot.policy.on_plan(topic, chunk_from_msg(msg))
        except ValueError as exc:
            self.get_logger().warning(f"plan on {topic} rejected: {exc}", throttle_duration_sec=2.0)

    # --- weight swap (PolicySlot)
    def _publish_active(self, served: ServedPolicy) -> None:
        doc = {"checkpoint_path": served.checkpoint_path, "model_version": served.model_version}
        self.active_pub.publish(String(data=json.dumps(doc)))

    def _on_model_update(self, msg: String) -> None:
        try:
            self.slot.request_update(msg.data)
        except UpdateRefused as exc:
            self.get_logger().warning(str(exc), throttle_duration_sec=10.0)

    def _on_rollback(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        response.success, response.message = self.slot.rollback()
        if response.success:
            self.get_logger().info(f"rollback: {response.message}")
        return response

    # --- one inference
    def _robot_observation(self, msg: Observation, stamp_s: float, policy: Policy) -> RobotObservation:
        """The Observation without ROS; its images decoded only for the cameras the policy reads (a camera
        the observation lacks, stale at sync, is left out: the transform refuses the observation, naming it)."""
        sent = {msg.camera_name or self.params.camera_name: msg.image}
        sent.update(zip(msg.extra_camera_names, msg.extra_images))
        images: dict[str, np.ndarray] = {}
        for camera in policy.cameras:
            image = sent.get(camera)
            if image is not None:
                images[camera] = decode_raw(image.encoding, image.height, image.width, image.step,
                                            image.data)  # (H, W, 3) uint8 RGB
        return RobotObservation(stamp_s=stamp_s, joint_names=msg.joint_names, joint_positions=msg.joint_positions,
                                task=msg.instruction, images=images)

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
        policy = self.slot.policy  # one reference per call: a swap takes effect between two calls
        try:
            obs = self.transform.to_policy(self._robot_observation(msg, stamp_s, policy), policy)
            obs = self._with_prefix(obs, policy)
            chunk = self.transform.to_robot(policy.infer(obs), policy)
        except (ImageDecodeError, ValueError) as exc:
            self.get_logger().warning(f"observation rejected: {exc}", throttle_duration_sec=2.0)
            return
        out = ActionChunk()
        out.header.frame_id = msg.header.frame_id
        if chunk.start_s == stamp_s:  # it answers this observation: its exact stamp, no float round trip
            out.header.stamp = msg.header.stamp
        else:  # e.g. the expert's plan starts when the expert made it, not at the frame
            s_to_stamp(chunk.start_s, out.header.stamp)
        out.embodiment = self.params.embodiment
        out.chunk_length, out.action_dim = chunk.chunk_length, chunk.action_dim
        out.step_period_s = chunk.step_period_s
        out.actions = chunk.actions.ravel().tolist()  # (T, D) row-major
        # no confidence from the source: NaN, which the handoff reads as 0 (not confident)
        out.confidence = float("nan") if chunk.confidence is None else float(chunk.confidence)
        out.inference_latency_s = float(chunk.latency_s)
        out.head_type = chunk.head_type
        out.seq = self._seq
        out.model_version = int(chunk.model_version)
        self._seq += 1
        self.pub.publish(out)
        self._last_chunk = chunk
        self._delays.add(now_s(self) - stamp_s)  # observation stamp -> publish: what the next prefix plans with
        if self._seq == 1:  # the graph is ready once this chunk drives; say when and how fresh
            self.get_logger().info(
                f"first chunk served {time.perf_counter() - self._started_s:.1f} s after the node started, on an "
                f"observation {(now_s(self) - stamp_s) * 1e3:.0f} ms old (model {chunk.latency_s * 1e3:.0f} ms)")


    # --- real-time chunking
    def _with_prefix(self, obs: PolicyObservation, policy: Policy) -> PolicyObservation:
        """``obs`` with the prefix its chunk must agree with, when real-time chunking is on, the policy
        inpaints and the last chunk still runs at the new chunk's start; else ``obs`` unchanged."""
        last, delay_s = self._last_chunk, self._delays.estimate()
        if not (self.params.real_time_chunking and policy.inpaints) or last is None or delay_s is None:
            return obs
        order = [self.params.joint_names.index(n) for n in policy.joint_names]  # robot -> policy columns
        prefix = plan_prefix(last.actions[:, order], last.start_s, last.step_period_s, obs.stamp_s,
                             self.params.control_period_s, policy.chunk_size, delay_s)
        if prefix is None:
            return obs
        self._rtc_chunks += 1
        self._last_frozen_steps = prefix.frozen_steps
        return dataclasses.replace(obs, prefix=prefix)

    def _publish_diagnostics(self) -> None:
        policy = self.slot.policy
        on = self.params.real_time_chunking and policy.inpaints
        delay_s = self._delays.estimate()
        if self.params.real_time_chunking and not policy.inpaints:
            level, message = DiagnosticStatus.WARN, "real_time_chunking is on but this policy cannot inpaint: blending"
        else:
            level, message = DiagnosticStatus.OK, "real-time chunking" if on else "serving"
        values = {"real_time_chunking": str(on).lower(), "policy_inpaints": str(bool(policy.inpaints)).lower(),
                  "chunks": str(self._seq), "rtc_chunks": str(self._rtc_chunks),
                  "delay_estimate_ms": "nan" if delay_s is None else f"{delay_s * 1e3:.1f}",
                  "frozen_steps_last": str(self._last_frozen_steps), "skipped_stale": str(self.skipped_stale)}
        out = DiagnosticArray()
        s_to_stamp(now_s(self), out.header.stamp)
        out.status.append(DiagnosticStatus(level=level, name=DIAGNOSTIC_NAME, message=message,
                                           hardware_id=self.params.embodiment,
                                           values=[KeyValue(key=k, value=v) for k, v in values.items()]))
        self.diag_pub.publish(out)


def main(args: list[str] | None = None) -> int:
    """Entry point of the ``inference_node`` executable."""
    return run_node(InferenceNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
