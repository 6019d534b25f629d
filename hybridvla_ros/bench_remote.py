"""What serving a policy from another process costs: ``hybridvla bench-remote``.

Our model: ``hybridvla serve`` started in its own process and asked through the ``remote`` policy
source (openpi's websocket protocol, what an inference node with ``policy_source: remote`` does),
against the same checkpoint loaded in this process as the ``builtin`` source. The two are asked in
turn with the same observations (the order alternates, so neither always runs on a warmer cache);
each chunk from the server must equal the in-process one (same seed, same confidence samples): a
benchmark of two different computations would be no comparison, so a difference is an error.
Reported: time per chunk p50/p99 of each, the paired overhead (remote - in-process) p50/p99 and the
ratio of the medians.

A LeRobot policy (``--lerobot-policy-dir DIR``): the sidecar (``hybridvla serve-lerobot``) in the
LeRobot environment, asked with observations of the shapes its metadata gives; round trip p50/p99
and the sidecar's own model time per chunk (``policy_timing.model_ms``).

Printed, and written as JSON (``--out``). Timing lives here, not in tests: our machines are shared
and noisy; quote medians, and the ratio measured side by side in one run.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hybridvla_ros.params.config_files import default_config_dir

START_LIMIT_S = 600.0  # a failsafe for a server that never says it listens; the wait ends at that line


def percentiles(times_s: list[float]) -> dict[str, float]:
    """p50 / p99 / mean / min of ``times_s``, in milliseconds."""
    ms = np.asarray(times_s, float) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean()), "min_ms": float(ms.min()), "n": int(ms.size)}


class ServerProcess:
    """A server command in its own process; :meth:`start` returns once it printed its ``ws://`` address."""

    def __init__(self, command: list[str], log_dir: str, name: str) -> None:
        self.command, self.name = command, name
        self.log = Path(log_dir) / f"{name}.log"
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self) -> str:
        """Start the server; its ``ws://host:port`` URL. RuntimeError with its log when it exits first."""
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=log, text=True)
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, args=(self.proc, lines), daemon=True).start()
        deadline = time.monotonic() + START_LIMIT_S
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            urls = [w for w in line.split() if w.startswith("ws://")]
            if urls:
                self.url = urls[0]
                return self.url
        self.stop()
        raise RuntimeError(f"{self.name} did not start ({' '.join(self.command)}): {self.log.read_text()[-3000:]}")

    @staticmethod
    def _pump(proc: subprocess.Popen[str], lines: queue.Queue[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _observations(robot: Any, count: int, size: tuple[int, int], seed: int) -> list[Any]:
    """``count`` observations for ``robot``: a random image per camera, joints near the middle of the range."""
    from hybridvla_ros.policies.base import PolicyObservation

    rng = np.random.default_rng(seed)
    cameras = tuple(robot.cameras)  # camera_name, then extra_cameras
    out = []
    for i in range(count):
        images = {c: rng.integers(0, 255, (*size, 3), dtype=np.uint8) for c in cameras}
        q = rng.uniform(-0.3, 0.3, robot.action_dim)
        out.append(PolicyObservation(stamp_s=100.0 + i * robot.control_period_s, joint_names=robot.joint_names,
                                     joint_positions=q, task=robot.instruction, images=images,
                                     state_joints=robot.state_joints, state=np.zeros(len(robot.state_joints))))
    return out


def bench_checkpoint(checkpoint: str, embodiment: str, config_dir: str, requests: int, warmup: int, threads: int,
                     image_size: tuple[int, int], log_dir: str, runtime: str = "torch",
                     say: Callable[[str], None] = print) -> dict[str, Any]:
    """``hybridvla serve`` + the remote source against the builtin source, for one checkpoint and head."""
    import torch

    from hybridvla_ros.params import from_params, load_node_params
    from hybridvla_ros.params.inference import InferenceParams
    from hybridvla_ros.params.remote_policy import RemotePolicyParams
    from hybridvla_ros.policies.builtin import make_builtin_policy
    from hybridvla_ros.policies.remote import RemoteMapping, RemotePolicy

    torch.set_num_threads(threads)
    robot = from_params(InferenceParams, load_node_params(os.path.join(config_dir, f"{embodiment}.yaml"),
                                                          "inference"))
    robot = dataclasses.replace(robot, checkpoint_path=checkpoint, num_threads=threads, runtime=runtime)
    server = ServerProcess([sys.executable, "-m", "hybridvla_ros.serve", "--checkpoint", checkpoint, "--embodiment",
                            embodiment, "--port", "0", "--threads", str(threads), "--runtime", runtime,
                            "--confidence-samples", str(robot.confidence_samples)], log_dir, "serve")
    local = make_builtin_policy(robot, checkpoint)
    local.warmup()
    url = server.start()
    say(f"hybridvla serve at {url} ({embodiment}, {runtime}, {threads} thread(s))")
    try:
        remote_params = RemotePolicyParams(remote_url=url, remote_image_size=(), remote_deadline_s=60.0)
        remote = RemotePolicy(RemoteMapping(robot, remote_params), remote_params)
        remote.warmup()
        if remote.metadata is None:
            raise RuntimeError(f"no metadata from {url}: {server.log.read_text()[-2000:]}")
        times: dict[str, list[float]] = {"builtin": [], "remote": []}
        worst = 0.0
        for i, obs in enumerate(_observations(robot, warmup + requests, image_size, seed=0)):
            order = (("builtin", local), ("remote", remote)) if i % 2 == 0 else (("remote", remote), ("builtin", local))
            chunks = {}
            for name, policy in order:
                t0 = time.perf_counter()
                chunks[name] = policy.infer(obs)
                if i >= warmup:
                    times[name].append(time.perf_counter() - t0)
            worst = max(worst, float(np.max(np.abs(chunks["remote"].actions - chunks["builtin"].actions))))
        remote.close()
    finally:
        server.stop()
    if worst > 1e-5:
        raise RuntimeError(f"the served chunks differ from the in-process ones by up to {worst:.3g} rad: the two "
                           f"did not compute the same thing, so their times are no comparison")
    overhead = [r - b for r, b in zip(times["remote"], times["builtin"])]
    result: dict[str, Any] = {
        "checkpoint": checkpoint, "embodiment": embodiment, "runtime": runtime, "threads": threads,
        "image_size": list(image_size), "cameras": list(local.runner.cameras) or [robot.camera_name],
        "chunk_size": robot.chunk_size, "confidence_samples": robot.confidence_samples, "max_abs_diff": worst,
        "builtin": percentiles(times["builtin"]), "remote": percentiles(times["remote"]),
        "overhead": percentiles(overhead)}
    result["ratio_p50"] = result["remote"]["p50_ms"] / result["builtin"]["p50_ms"]
    return result


def bench_lerobot(policy_dir: str, requests: int, warmup: int, threads: int, log_dir: str,
                  say: Callable[[str], None] = print) -> dict[str, Any]:
    """The LeRobot sidecar serving ``policy_dir``: round trip and its model time per chunk."""
    from websockets.sync.client import connect

    from hybridvla_ros.core.wire import MAX_MESSAGE_BYTES, packb, unpackb
    from hybridvla_ros.model.lerobot_data import lerobot_python_or_say

    python = lerobot_python_or_say("hybridvla bench-remote --lerobot-policy-dir")
    if python is None:
        raise RuntimeError("the LeRobot environment is missing (bash scripts/setup_lerobot.sh)")
    server = ServerProcess([str(python), "-m", "hybridvla_ros.lerobot_sidecar", "--policy-dir", policy_dir,
                            "--port", "0", "--threads", str(threads)], log_dir, "lerobot_sidecar")
    url = server.start()
    say(f"LeRobot sidecar at {url} ({policy_dir})")
    rng = np.random.default_rng(0)
    round_trip: list[float] = []
    model: list[float] = []
    try:
        with connect(url, compression=None, max_size=MAX_MESSAGE_BYTES, ping_interval=None, proxy=None) as ws:
            first = ws.recv(timeout=60)
            meta = unpackb(first) if isinstance(first, bytes) else None
            if not isinstance(meta, dict):
                raise RuntimeError(f"no metadata dict from the sidecar: {str(first)[-300:]}")
            features = meta["input_features"]
            for i in range(warmup + requests):
                obs: dict[str, Any] = {"task": "pick the cube"}
                for key, feature in features.items():
                    shape = feature["shape"]
                    obs[key] = (rng.integers(0, 255, (*shape[1:], shape[0]), dtype=np.uint8)
                                if feature["type"] == "VISUAL" else rng.uniform(-0.3, 0.3, shape).astype(np.float32))
                t0 = time.perf_counter()
                ws.send(packb(obs))
                data = ws.recv(timeout=600)
                elapsed = time.perf_counter() - t0
                if isinstance(data, str):
                    raise RuntimeError(f"the sidecar answered an error: {data[-500:]}")
                reply = unpackb(data)
                if i >= warmup:
                    round_trip.append(elapsed)
                    model.append(reply["policy_timing"]["model_ms"] / 1e3)
    finally:
        server.stop()
    return {"policy_dir": policy_dir, "policy_type": meta["policy_type"], "threads": threads,
            "input_features": features, "action_horizon": meta["action_horizon"],
            "round_trip": percentiles(round_trip), "model": percentiles(model)}


def _line(name: str, s: dict[str, float]) -> str:
    return f"  {name:10s} p50 {s['p50_ms']:7.1f} ms  p99 {s['p99_ms']:7.1f} ms  mean {s['mean_ms']:7.1f} ms"


def report_checkpoint(ours: dict[str, Any]) -> str:
    """The lines printed for our model."""
    return "\n".join([f"our {ours['embodiment']} head ({ours['runtime']}), {ours['builtin']['n']} requests each, "
                      f"chunks identical (max |diff| {ours['max_abs_diff']:.1e}):",
                      *(_line(name, ours[name]) for name in ("builtin", "remote", "overhead")),
                      f"  remote / in-process (p50): {ours['ratio_p50']:.2f}x"])


def report_lerobot(lr: dict[str, Any]) -> str:
    """The lines printed for the LeRobot policy."""
    return "\n".join([f"LeRobot {lr['policy_type']} (horizon {lr['action_horizon']}) through the sidecar:",
                      *(_line(name, lr[name]) for name in ("round_trip", "model"))])


def build_parser() -> argparse.ArgumentParser:
    from hybridvla_ros.model.runner import RUNTIMES

    ap = argparse.ArgumentParser(prog="hybridvla bench-remote", description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="checkpoints/default", help="our checkpoint (default: checkpoints/default)")
    ap.add_argument("--no-checkpoint", action="store_true", help="measure only --lerobot-policy-dir")
    ap.add_argument("--embodiment", default="franka", help="the head asked (default: franka)")
    ap.add_argument("--config-dir", default=default_config_dir(), help="directory with <embodiment>.yaml")
    ap.add_argument("--lerobot-policy-dir", default=None, metavar="DIR", help="also a LeRobot policy directory, "
                    "served by the sidecar from .venv-lerobot")
    ap.add_argument("--requests", type=int, default=200, help="timed requests per source (default: 200)")
    ap.add_argument("--warmup", type=int, default=10, help="untimed requests first (default: 10)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of each side (default: 1)")
    ap.add_argument("--runtime", default="torch", choices=RUNTIMES, help="what runs our model, on both sides "
                    "(default: torch)")
    ap.add_argument("--image-size", type=int, nargs=2, default=(120, 160), metavar=("H", "W"),
                    help="camera image size (default: the simulated camera's 120 160)")
    ap.add_argument("--out", default="runs/bench_remote.json")
    return ap


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``hybridvla bench-remote``."""
    args = build_parser().parse_args(argv)
    if args.no_checkpoint and not args.lerobot_policy_dir:
        print("hybridvla bench-remote: --no-checkpoint leaves nothing to measure without --lerobot-policy-dir",
              file=sys.stderr)
        return 2
    if not args.no_checkpoint and not os.path.isfile(os.path.join(args.checkpoint, "config.json")):
        print(f"hybridvla bench-remote: no checkpoint at {args.checkpoint} (train one: hybridvla train --out "
              f"{args.checkpoint}; or --no-checkpoint with --lerobot-policy-dir)", file=sys.stderr)
        return 2
    result: dict[str, Any] = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                                          "load_average_start": os.getloadavg()}}
    with tempfile.TemporaryDirectory(prefix="bench_remote_") as log_dir:
        try:
            if not args.no_checkpoint:
                ours = bench_checkpoint(args.checkpoint, args.embodiment, args.config_dir, args.requests, args.warmup,
                                        args.threads, tuple(args.image_size), log_dir, args.runtime)
                result["checkpoint"] = ours
                print(report_checkpoint(ours))
            if args.lerobot_policy_dir:
                result["lerobot"] = bench_lerobot(args.lerobot_policy_dir, args.requests, args.warmup, args.threads,
                                                  log_dir)
                print(report_lerobot(result["lerobot"]))
        except (RuntimeError, ValueError, OSError) as exc:
            print(f"hybridvla bench-remote: {exc}", file=sys.stderr)
            return 1
    result["machine"]["load_average_end"] = os.getloadavg()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2, default=float)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
