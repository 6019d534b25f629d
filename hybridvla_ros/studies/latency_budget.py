"""Study 4, latency budget: each stage's share of a 50 ms (20 Hz) decision, and what chunk
recycling and the action buffer buy in effective control rate.

The whole graph runs on the simulated robot (separate processes, real DDS), the policy
driving (handoff thresholds at 0 so it is never paused), twice, side by side in one run:

1. as configured (a chunk every ``recompute_every`` periods, the action buffer playing
   the chunk at the control rate);
2. with ``recompute_every: 1`` (inference asked for every period).

For each: the p50 of every stage from a camera frame's stamp to the first command derived
from it (:mod:`hybridvla_ros.core.episodes`) and its share of the budget; commands per
second (what the robot gets) against chunks per second (what it would get if every
command needed its own inference: a graph without recycling and buffer); and the jitter.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np

from hybridvla_ros.core.episodes import STAGES, stage_latencies
from hybridvla_ros.core.stats import rate_and_jitter
from hybridvla_ros.params.embodiment import EMBODIMENTS

BUDGET_S = 0.05  # a 20 Hz decision


def measure(embodiment: str, duration_s: float, checkpoint: str | None, recompute_every: int | None,
            log_dir: str | None = None) -> dict[str, Any]:
    """Run the graph for ``duration_s`` (after it is ready) and return the numbers of one configuration."""
    from hybridvla_ros.evaluate import Evaluation

    overrides: dict[str, dict[str, Any]] = {"handoff": {"pause_confidence": 0.0, "resume_confidence": 0.0}}
    if recompute_every is not None:
        overrides["inference"] = {"recompute_every": recompute_every}
        overrides["action_buffer"] = {"recompute_every": recompute_every}
    with Evaluation(embodiment, checkpoint, overrides=overrides, log_dir=log_dir) as ev:
        ev.wait_until_ready()
        time.sleep(1.0)
        wall0 = time.time()
        r0 = ev.listener.snapshot()
        time.sleep(duration_s)
        wall1 = time.time()
        r1 = ev.listener.snapshot()
        period = ev.sim_params.control_period_s
        configured = ev.sim_params.recompute_every if recompute_every is None else recompute_every
    times = np.asarray(r1.command_times)
    window = times[(times >= wall0) & (times <= wall1)]
    rj = rate_and_jitter(window, period)
    chunks = len(r1.chunk_info) - len(r0.chunk_info)
    lat = stage_latencies(row for row in r1.stage_times if wall0 <= row[4] <= wall1)
    stages = {}
    for name in (*STAGES, "total"):
        p50 = float(np.median(lat[name])) if lat[name].size else float("nan")
        stages[name] = {"p50_ms": p50 * 1e3, "p99_ms": float(np.percentile(lat[name], 99)) * 1e3
                        if lat[name].size else float("nan"), "share_of_budget": p50 / BUDGET_S}
    return {"recompute_every": configured, "duration_s": wall1 - wall0,
            "commands_per_s": rj["rate_hz"], "jitter_p50_ms": rj["jitter_p50_s"] * 1e3,
            "jitter_p99_ms": rj["jitter_p99_s"] * 1e3, "chunks_per_s": chunks / (wall1 - wall0),
            "latency_samples": int(lat["total"].size), "stages": stages}


def plot(result: dict[str, Any], path: str) -> None:
    """Stacked p50 stage latencies against the budget, and commands vs chunks per second."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4))
    labels = [f"recompute_every={r['recompute_every']}" for r in runs]
    for i, r in enumerate(runs):
        bottom = 0.0
        for name, color in zip(STAGES, ("tab:gray", "tab:purple", "tab:blue", "tab:cyan")):
            v = r["stages"][name]["p50_ms"]
            v = 0.0 if not np.isfinite(v) else v
            ax0.bar([i], [v], bottom=bottom, color=color, label=name if i == 0 else None, width=0.5)
            bottom += v
    ax0.axhline(BUDGET_S * 1e3, color="k", linestyle="--", label="budget 50 ms (20 Hz)")
    ax0.set_xticks(range(len(runs)), labels)
    ax0.set_ylabel("frame stamp -> first command, p50 (ms)")
    ax0.legend(fontsize=8)
    x = np.arange(len(runs))
    ax1.bar(x - 0.2, [r["commands_per_s"] for r in runs], 0.4, label="commands/s (with buffer)")
    ax1.bar(x + 0.2, [r["chunks_per_s"] for r in runs], 0.4, label="chunks/s (one command per inference)")
    ax1.set_xticks(x, labels)
    ax1.set_ylabel("Hz")
    ax1.legend(fontsize=8)
    fig.suptitle(f"{result['embodiment']}: latency budget and effective control rate")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """``hybridvla study latency``: print, write JSON and a plot."""
    ap = argparse.ArgumentParser(prog="hybridvla study latency", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--embodiment", default="franka", choices=EMBODIMENTS)
    ap.add_argument("--duration", type=float, default=20.0, help="seconds measured per configuration")
    ap.add_argument("--checkpoint", default="checkpoints/default")
    ap.add_argument("--out", default="runs/studies/latency_budget")
    args = ap.parse_args(argv)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    runs = [measure(args.embodiment, args.duration, args.checkpoint, None, os.path.join(args.out, "logs_configured")),
            measure(args.embodiment, args.duration, args.checkpoint, 1, os.path.join(args.out, "logs_every_period"))]
    result = {"embodiment": args.embodiment, "budget_ms": BUDGET_S * 1e3, "runs": runs}
    for r in runs:
        print(f"recompute_every={r['recompute_every']}: {r['commands_per_s']:.1f} commands/s from "
              f"{r['chunks_per_s']:.1f} chunks/s, jitter p50 {r['jitter_p50_ms']:.1f} ms; stage p50 (share of 50 ms): "
              + ", ".join(f"{k} {v['p50_ms']:.1f} ms ({100 * v['share_of_budget']:.0f}%)"
                          for k, v in r["stages"].items()))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "latency_budget.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    plot(result, os.path.join(args.out, "latency_budget.png"))
    print(f"wrote {args.out}/latency_budget.json and latency_budget.png")
    return 0
