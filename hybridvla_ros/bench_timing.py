"""Command period jitter at the controller topic, per safety-filter timing mode (issue 17 item 5).

For each ``safety_filter.timing`` (``event``: a command as each action arrives, after the
buffer's rclpy timer and two DDS hops; ``thread``: a timing thread at absolute deadlines) the
whole simulated graph runs (kinematic physics, the scripted expert served as the policy, so
no checkpoint is needed; the adaptation node, which needs one, is left out) while ``--load``
busy processes compete for the CPUs. The listener takes each command's send time from its
DDS source timestamp; the numbers are the jitter |period - control period| p50/p99 and the
period's p1/p50/p99/max, with the gaps (> 1.5 periods) and bursts (< 0.5 period) counted,
from when the policy drives (its first second left out). Printed, and written as JSON
(``--out``). ``safety_filter.timing_rt_priority`` is ``--rt-priority`` (thread mode).
Timing lives here, not in tests: our machines are shared and noisy; quote medians.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from typing import Any

import numpy as np

from hybridvla_ros.launch_description import describe_graph, safety_filter_input, validate_graph
from hybridvla_ros.params import from_params, load_node_params
from hybridvla_ros.params.embodiment import EmbodimentParams

TIMINGS = ("event", "thread")
EXPERT_CHUNK_RATE_HZ = 5.0  # the scripted expert's plans, served as the policy


def _burn(stop_at: float) -> None:
    """A busy process until ``stop_at`` (time.time())."""
    x = 0
    while time.time() < stop_at:
        for i in range(20_000):
            x ^= i


def start_load(processes: int, seconds: float) -> list[Any]:
    """``processes`` busy-looping processes for ``seconds``."""
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_burn, args=(time.time() + seconds,), daemon=True) for _ in range(processes)]
    for p in procs:
        p.start()
    return procs


def period_stats(times_s: np.ndarray, period_s: float) -> dict[str, float]:
    """The command period's p50 / p99 / max (ms) and how many periods were over 1.5 or under
    0.5 control periods (a gap, a burst)."""
    d = np.diff(np.sort(times_s))
    if d.size == 0:
        return {"n": 0.0}
    return {"n": float(d.size), "period_p50_ms": float(np.percentile(d, 50) * 1e3),
            "period_p99_ms": float(np.percentile(d, 99) * 1e3), "period_max_ms": float(d.max() * 1e3),
            "period_p1_ms": float(np.percentile(d, 1) * 1e3),
            "gaps": float(np.count_nonzero(d > 1.5 * period_s)), "bursts": float(np.count_nonzero(d < 0.5 * period_s))}


def measure(embodiment: str, timing: str, duration_s: float, load: int, trajectory_points: int,
            log_dir: str, ready_timeout_s: float = 90.0, rt_priority: int = 20) -> dict[str, Any]:
    """One graph run with ``timing`` under ``load`` busy processes: the listener's report from
    when the policy drives (its first second left out, as ``hybridvla run``)."""
    from hybridvla_ros.launcher import GraphLauncher
    from hybridvla_ros.nodes.graph_listener import GraphListener

    with tempfile.TemporaryDirectory() as tmp:
        specs = describe_graph(embodiment, sim=True, overrides={
            "inference": {"policy_source": "sim_expert", "checkpoint_path": os.path.join(tmp, "no_weights")},
            "safety_filter": {"timing": timing, "trajectory_points": trajectory_points,
                              "timing_rt_priority": rt_priority},
            "correction_recorder": {"store_path": os.path.join(tmp, "corrections.sqlite")},
            "sim_robot": {"physics": "kinematic", "expert_chunk_rate_hz": EXPERT_CHUNK_RATE_HZ},
        })
        specs = [s for s in specs if s.name != "adaptation"]  # fine-tunes weights: needs a checkpoint, off the path
        validate_graph(specs)
        params = from_params(EmbodimentParams, load_node_params(specs[0].params_file, "sync"), "sync")
        launcher = GraphLauncher(specs, log_dir=os.path.join(log_dir, timing), log=lambda _line: None)
        listener: Any = None
        procs = start_load(load, ready_timeout_s + duration_s + 30.0)
        try:
            launcher.start()
            listener = GraphListener(params, safety_input_topic=safety_filter_input(specs))
            t0 = time.monotonic()
            while not listener.snapshot().ready:
                launcher.wait(0.2)
                if time.monotonic() - t0 > ready_timeout_s:
                    return {"timing": timing, "error": f"the policy did not drive within {ready_timeout_s:.0f} s"}
            launcher.wait(duration_s + 1.0)
            r = listener.snapshot()
            report = listener.report(skip_first_s=1.0, since_s=r.first_policy_command_sent)
            times = np.asarray(r.command_times)
            report["periods"] = period_stats(times[times >= r.first_policy_command_sent + 1.0],
                                             params.control_period_s)
        finally:
            for p in procs:
                p.terminate()
            if listener is not None:
                listener.close()
            launcher.stop()
            for p in procs:
                p.join(timeout=5.0)
    return {"timing": timing, "load_processes": load, "duration_s": duration_s,
            "trajectory_points": trajectory_points, "timing_rt_priority": rt_priority, "report": report}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit code."""
    ap = argparse.ArgumentParser(prog="hybridvla bench-timing", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--embodiment", default="franka", help="robot (simulated kinematically: the lightest)")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds per mode once the policy drives")
    ap.add_argument("--load", type=int, default=os.cpu_count() or 2, help="busy processes beside the graph")
    ap.add_argument("--timing", nargs="+", default=list(TIMINGS), choices=TIMINGS)
    ap.add_argument("--trajectory-points", type=int, default=1)
    ap.add_argument("--rt-priority", type=int, default=20,
                    help="safety_filter.timing_rt_priority (thread mode; 0: normal scheduling)")
    ap.add_argument("--out", default="runs/bench_timing.json")
    args = ap.parse_args(argv)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    result: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                          "processor": platform.machine()},
                              "embodiment": args.embodiment, "runs": []}
    failed = False
    for timing in args.timing:
        print(f"{args.embodiment}, timing {timing}, {args.load} busy processes, {args.duration:.0f} s ...")
        run = measure(args.embodiment, timing, args.duration, args.load, args.trajectory_points,
                      "runs/bench_timing_logs", rt_priority=args.rt_priority)
        result["runs"].append(run)
        if "error" in run:
            print(f"  error: {run['error']}", file=sys.stderr)
            failed = True
            continue
        r = run["report"]
        print(f"  rate {r['control_rate_achieved_hz']:.1f} / {r['control_rate_target_hz']:.0f} Hz   "
              f"jitter |period - target| p50 {r['command_jitter_p50_ms']:.2f} ms  p99 "
              f"{r['command_jitter_p99_ms']:.2f} ms   commands {r['commands_sent']}")
        per = r["periods"]
        print(f"  period p1 {per['period_p1_ms']:.2f}  p50 {per['period_p50_ms']:.2f}  p99 {per['period_p99_ms']:.2f}  "
              f"max {per['period_max_ms']:.2f} ms   gaps > 1.5 periods {per['gaps']:.0f}, "
              f"bursts < 0.5 period {per['bursts']:.0f} of {per['n']:.0f}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2, default=float)
    print(f"wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
