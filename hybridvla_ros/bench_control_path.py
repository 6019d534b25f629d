"""``hybridvla bench``: numbers for the control path (printed, and written as JSON).

1. On the running graph (simulated robot, separate processes, real DDS), heard by a
   listener node (send times from the DDS message info; from when the policy drives, and
   a run in which it never does fails): time from a camera frame's stamp to the first
   command derived from it, minus the model's own time (p50/p99); command period jitter at the control rate
   (p50/p99); achieved control rate; inference latency.
2. In this process: safety-filter time per action and action-buffer time per step, for
   every embodiment (median and p99 over thousands of calls), and the wall time of one
   head adaptation on 50 simulated corrections (target: under 60 s on a 2-core CPU).
Timing lives here, not in tests: our machines are shared and noisy; quote medians.
The model's own benchmarks are ``hybridvla bench-model`` (:mod:`hybridvla_ros.model.bench_model`)
and ``hybridvla bench-precision`` (:mod:`hybridvla_ros.model.bench_precision`).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any

import numpy as np

from hybridvla_ros.core.action_buffer import ActionBuffer
from hybridvla_ros.core.safety import SafetyFilter
from hybridvla_ros.core.stats import percentiles
from hybridvla_ros.graph_run import run_graph, verdict
from hybridvla_ros.launch_description import params_file_for
from hybridvla_ros.params import from_params, load_node_params
from hybridvla_ros.params.action_buffer import ActionBufferParams
from hybridvla_ros.params.embodiment import EMBODIMENTS
from hybridvla_ros.params.safety_filter import SafetyFilterParams


def time_safety_filter(embodiment: str, calls: int = 5000, seed: int = 0) -> dict[str, float]:
    """Per-call time of SafetyFilter.filter on random targets around home (microseconds)."""
    p = from_params(SafetyFilterParams, load_node_params(params_file_for(embodiment), "safety_filter"))
    f = SafetyFilter(p.safety_limits(), control_period_s=p.control_period_s)
    home = np.asarray(p.home_position)
    f.update_measured(home, 0.0)
    rng = np.random.default_rng(seed)
    span = np.asarray(p.position_max) - np.asarray(p.position_min)
    targets = home + rng.normal(scale=0.05, size=(calls, p.action_dim)) * span
    samples = np.empty(calls)
    t_s = 0.0
    for i in range(calls):
        t_s += p.control_period_s
        t0 = time.perf_counter_ns()
        f.filter(targets[i], t_s)
        samples[i] = (time.perf_counter_ns() - t0) * 1e-3
    stats = percentiles(samples)
    return {"p50_us": stats["p50"], "p99_us": stats["p99"], "calls": calls}


def time_action_buffer(embodiment: str, steps: int = 5000) -> dict[str, float]:
    """Per-step time of ActionBuffer.step with a new chunk every recompute_every steps (microseconds)."""
    p = from_params(ActionBufferParams, load_node_params(params_file_for(embodiment), "action_buffer"))
    buf = ActionBuffer(p.buffer_config(), action_dim=p.action_dim)
    chunk = np.zeros((p.chunk_size, p.action_dim))
    samples = np.empty(steps)
    for i in range(steps):
        now = i * p.control_period_s
        if i % p.recompute_every == 0:
            buf.add_chunk(chunk + i, now - 0.03, p.control_period_s, now, seq=i)
        t0 = time.perf_counter_ns()
        buf.step(now)
        samples[i] = (time.perf_counter_ns() - t0) * 1e-3
    stats = percentiles(samples)
    return {"p50_us": stats["p50"], "p99_us": stats["p99"], "steps": steps}


def time_adaptation(checkpoint: str, corrections: int = 50, embodiment: str = "franka") -> dict[str, Any]:
    """Wall time of one head adaptation on ``corrections`` simulated corrections (1 torch thread, as the node)."""
    import tempfile

    import torch

    from hybridvla_ros.model.adaptation import adapt
    from hybridvla_ros.model.corrections_data import correction_set
    from hybridvla_ros.model.replay import checkpoint_replay_or_record
    from hybridvla_ros.params.adaptation import AdaptationParams
    from hybridvla_ros.sim.corrections import RECORDED_IMAGE_SIZE, simulated_corrections

    p = from_params(AdaptationParams, load_node_params(params_file_for(embodiment), "adaptation"), "adaptation")
    torch.set_num_threads(p.num_threads)
    data, _ = correction_set(simulated_corrections(p, corrections), p, RECORDED_IMAGE_SIZE, p.state_joints)
    with tempfile.TemporaryDirectory() as root:
        t0 = time.perf_counter()  # the replay sample is read (or recorded) in the timed part, as the node does
        result = adapt(p, checkpoint, data, checkpoint_replay_or_record(checkpoint, p), adapt_root=root)
        wall = time.perf_counter() - t0
    log = result.log
    return {"corrections": corrections, "wall_time_s": wall, "accepted": bool(result.accepted),
            "steps": log.get("steps"), "heldout_corrections": log.get("heldout_corrections"),
            "heldout_replay": log.get("heldout_replay")}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit code."""
    ap = argparse.ArgumentParser(prog="hybridvla bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--embodiment", default="franka", choices=EMBODIMENTS, help="robot for the graph run")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of graph run")
    ap.add_argument("--checkpoint", default="checkpoints/default")
    ap.add_argument("--out", default="runs/bench_control_path.json")
    ap.add_argument("--skip-graph", action="store_true", help="only the in-process timings")
    ap.add_argument("--skip-adaptation", action="store_true", help="do not time an adaptation")
    args = ap.parse_args(argv)

    result: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                          "processor": platform.machine()}}
    print("in-process timings (median / p99):")
    result["safety_filter_us"] = {}
    result["action_buffer_us"] = {}
    for e in EMBODIMENTS:
        sf, ab = time_safety_filter(e), time_action_buffer(e)
        result["safety_filter_us"][e] = sf
        result["action_buffer_us"][e] = ab
        print(f"  {e:<7} safety filter {sf['p50_us']:7.1f} / {sf['p99_us']:7.1f} us per action   "
              f"action buffer {ab['p50_us']:6.1f} / {ab['p99_us']:6.1f} us per step")

    if not args.skip_adaptation and os.path.isfile(os.path.join(args.checkpoint, "model.safetensors")):
        ad = time_adaptation(args.checkpoint)
        result["adaptation"] = ad
        print(f"  one adaptation on {ad['corrections']} corrections: {ad['wall_time_s']:.1f} s "
              f"({'accepted' if ad['accepted'] else 'rejected'} after {ad['steps']} steps; target < 60 s)")

    if not args.skip_graph:
        os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        print(f"graph on the simulated {args.embodiment} for {args.duration:.0f} s ...")
        report = run_graph(args.embodiment, True, args.duration, args.checkpoint, quiet=True,
                           log_dir="runs/bench_logs")
        if report is None:
            return 1
        result["graph"] = report
        why = verdict(report)
        if why:  # numbers of a graph the policy never drove are the safety filter's holds: not a benchmark
            print(f"error: {why}", file=sys.stderr)
            return 1
        keys = ["startup_s", "policy_commands", "control_rate_target_hz", "control_rate_achieved_hz",
                "command_jitter_p50_ms", "command_jitter_p99_ms", "frame_to_command_minus_model_p50_ms",
                "frame_to_command_minus_model_p99_ms", "inference_latency_p50_ms", "inference_latency_p99_ms",
                "observation_skew_p50_ms", "commands_sent"]
        for k in keys:
            v = report[k]
            print(f"  {k:<38} {v:.2f}" if isinstance(v, float) else f"  {k:<38} {v}")

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2, default=float)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
