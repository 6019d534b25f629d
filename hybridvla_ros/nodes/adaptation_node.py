"""adaptation: fine-tunes the action head on human corrections, away from the control path.

A JSON request on ``correction_recorder/adapt_request`` ({"store_path", "count",
"embodiment", "session_id"}) starts :func:`hybridvla_ros.model.adaptation.adapt` on this
process's worker thread: one adaptation at a time, and requests that arrive while one runs
are coalesced into a single run after it (it reads the whole store anyway). The worker
runs at a raised nice value with one torch thread, so the inference process keeps the
CPU. Every attempt's log goes out on ``adaptation/status`` (std_msgs/String JSON); an
accepted one also puts its checkpoint directory on ``inference/model_update``, which the
inference node loads and swaps in.

The base of each adaptation is what inference reports serving on ``inference/active_model``
(so a rollback there is respected), else our own last accepted version, else
``checkpoint_path``.
"""
from __future__ import annotations

import json
import os
import threading
from typing import Any

import torch
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String

from hybridvla_ros.core.correction_store import CorrectionStoreError
from hybridvla_ros.model.adaptation import LOG_FIELDS, adapt
from hybridvla_ros.model.checkpoint import CheckpointError, json_default, read_checkpoint_config
from hybridvla_ros.model.corrections_data import load_corrections_for
from hybridvla_ros.model.replay import checkpoint_replay_or_record
from hybridvla_ros.nodes.common import load_schema, run_node
from hybridvla_ros.params import ParameterError
from hybridvla_ros.params.adaptation import AdaptationParams

LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)
STATUS_QOS = QoSProfile(depth=10, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)


class AdaptationNode(Node):
    """Publishes ``adaptation/status`` and ``inference/model_update``."""

    def __init__(self) -> None:
        super().__init__("adaptation", automatically_declare_parameters_from_overrides=True)
        self.params = p = load_schema(self, AdaptationParams)
        try:
            doc = read_checkpoint_config(p.checkpoint_path)
        except CheckpointError as exc:
            raise ParameterError(f"adaptation.checkpoint_path: {exc}") from None
        names = [e.get("name") for e in doc.get("embodiments", []) if isinstance(e, dict)]
        if p.embodiment not in names:
            raise ParameterError(f"adaptation.checkpoint_path: {p.checkpoint_path!r} has no head for "
                                 f"{p.embodiment!r} (it has {names})")
        torch.set_num_threads(p.num_threads)
        self._lock = threading.Lock()
        self._pending: dict[str, Any] | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._served: str | None = None      # what inference reports serving
        self._accepted: str | None = None    # our own newest accepted version
        self.busy = False
        self.coalesced = 0
        self.attempts = 0

        self.status_pub = self.create_publisher(String, "adaptation/status", STATUS_QOS)
        self.update_pub = self.create_publisher(String, "inference/model_update", QoSProfile(depth=5))
        self.create_subscription(String, "correction_recorder/adapt_request", self._on_request, QoSProfile(depth=10))
        self.create_subscription(String, "inference/active_model", self._on_active_model, LATCHED)
        self._worker = threading.Thread(target=self._work, name="adaptation", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"adapting the {p.embodiment} head of {p.checkpoint_path} into {p.adapt_root}/{p.embodiment} "
            f"(at most {p.steps} steps, {p.num_threads} thread(s), nice +{p.niceness})")

    # --- executor thread
    def _on_request(self, msg: String) -> None:
        try:
            request = json.loads(msg.data)
            if not isinstance(request, dict) or not isinstance(request.get("store_path"), str):
                raise ValueError("expected a JSON object with a 'store_path' string")
        except ValueError as exc:
            self.get_logger().warning(f"adapt request ignored: {exc}: {msg.data[:200]!r}")
            return
        if request.get("embodiment", self.params.embodiment) != self.params.embodiment:
            self.get_logger().warning(f"adapt request for {request.get('embodiment')!r} ignored: this node adapts "
                                   f"{self.params.embodiment!r}")
            return
        with self._lock:
            if self._pending is not None:
                self.coalesced += 1  # two requests, one run
            self._pending = request  # the newest request wins: it reads the whole store anyway
            self._wake.set()

    def _on_active_model(self, msg: String) -> None:
        try:
            path = json.loads(msg.data)["checkpoint_path"]
        except (ValueError, KeyError, TypeError):
            self.get_logger().warning(f"inference/active_model: not understood: {msg.data[:200]!r}")
            return
        with self._lock:
            self._served = str(path)

    # --- worker thread
    def _base_checkpoint(self) -> str:
        with self._lock:
            if self.params.follow_served_model and self._served:
                return self._served
            return self._accepted or self.params.checkpoint_path

    def _work(self) -> None:
        try:
            os.nice(self.params.niceness)  # Linux: this thread (and what it starts) yields the CPU to inference
        except OSError as exc:
            self.get_logger().warning(f"could not lower the adaptation thread's priority: {exc}")
        while not self._stop.is_set():
            if not self._wake.wait(timeout=0.5):
                continue
            with self._lock:
                request, self._pending = self._pending, None
                self._wake.clear()
                self.busy = request is not None
            if request is None:
                continue
            try:
                self._run(request)
            finally:
                with self._lock:
                    self.busy = False

    def _run(self, request: dict[str, Any]) -> None:
        log = self.get_logger()
        base = self._base_checkpoint()
        self.attempts += 1
        log.info(f"adaptation {self.attempts}: {request.get('count', '?')} corrections in {request['store_path']}, "
                 f"base {base}")
        try:
            corrections, store = load_corrections_for(base, request["store_path"], self.params)
            # The replay sample training stored next to the checkpoint; a checkpoint without one
            # (not written by `hybridvla train`) gets one recorded on the kinematic simulator.
            replay = checkpoint_replay_or_record(base, self.params)
            result = adapt(self.params, base, corrections, replay, store=store, request=request)
        except (CheckpointError, CorrectionStoreError, ValueError, OSError) as exc:
            entry: dict[str, Any] = {k: None for k in LOG_FIELDS}
            entry.update(embodiment=self.params.embodiment, accepted=False, reason=f"error: {exc}",
                         base_checkpoint=base, request=request)
            log.error(f"adaptation failed: {exc}")
            self.status_pub.publish(String(data=json.dumps(entry, default=json_default)))
            return
        entry = result.log
        self.status_pub.publish(String(data=json.dumps(entry, default=json_default)))
        corr = entry.get("heldout_corrections") or {}
        summary = ""
        if corr.get("before") and corr.get("after"):
            summary = (f"held-out correction error {corr['before']['chunk_mae']:.4g} -> "
                       f"{corr['after']['chunk_mae']:.4g}, {entry['steps']} steps, {entry['wall_time_s']:.1f} s")
        if not result.accepted:
            log.warning(f"adaptation rejected ({entry['reason']}); {summary}; still serving {base}")
            return
        path = str(result.checkpoint_dir.resolve()) if result.checkpoint_dir else entry["checkpoint"]
        with self._lock:
            self._accepted = path
            self._served = path  # expected; inference/active_model corrects it (rollback, failed load)
        log.info(f"adaptation accepted: version {entry['version']} at {path}; {summary}")
        self.update_pub.publish(String(data=path))

    def destroy_node(self) -> None:
        """Stop the worker; an adaptation in progress is abandoned (versions appear by rename: never half-written)."""
        self._stop.set()
        self._wake.set()
        self._worker.join(timeout=1.0)
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """Entry point of the ``adaptation_node`` executable."""
    return run_node(AdaptationNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
