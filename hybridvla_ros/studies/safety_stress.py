"""Study 3, safety stress: random actions through the safety filter, per embodiment.

Each embodiment's filter (its own parameter file's limits) gets ``n`` requests at the
control rate, drawn as a broken policy would send them, in one of two regimes:
``jumps``, uniform over the joint range widened by ``overshoot`` on each side (far jumps,
beyond the limits), and ``noise``, the current position plus Gaussian noise of twice the
largest allowed step per joint (a jittery policy near its operating point); in both a
fraction contains a NaN and a fraction has the wrong length. The robot is taken to track every
command exactly (the measured state is the last command), so velocity and acceleration
limits act on the motion the robot really makes.

Reported per embodiment: the fraction of requests modified; per limit, the fraction of
requests it acted on and how much the requests it acted on were changed (the largest
joint change, as a fraction of that joint's range; a rejected request counts as 1); and,
checked on every command sent, the number of commands that break a limit (position outside
the range, a velocity above max_velocity or an acceleration above max_acceleration by more
than 1e-9 relative): it must be 0.
"""
from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from hybridvla_ros.core.safety import LIMIT_NAMES, SafetyFilter
from hybridvla_ros.launch_description import params_file_for
from hybridvla_ros.params import from_params, load_node_params
from hybridvla_ros.params.embodiment import EMBODIMENTS
from hybridvla_ros.params.safety_filter import SafetyFilterParams

REPORTED_LIMITS = ("position", "velocity", "acceleration", "nan", "shape")


REGIMES = ("jumps", "noise")


def stress_embodiment(embodiment: str, n: int = 1000, seed: int = 0, regime: str = "jumps", overshoot: float = 0.25,
                      nan_fraction: float = 0.03, shape_fraction: float = 0.02) -> dict[str, Any]:
    """Run ``n`` random requests through ``embodiment``'s safety filter; returns the numbers
    described in the module docstring, plus the per-request change for plotting."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n!r}")
    if regime not in REGIMES:
        raise ValueError(f"regime must be one of {list(REGIMES)}, got {regime!r}")
    p = from_params(SafetyFilterParams, load_node_params(params_file_for(embodiment), "safety_filter"))
    limits = p.safety_limits()
    dt = p.control_period_s
    filt = SafetyFilter(limits, control_period_s=dt)
    lo, hi = np.asarray(p.position_min), np.asarray(p.position_max)
    span = hi - lo
    vmax = np.asarray(p.max_velocity) * limits.velocity_scale
    amax = np.asarray(p.max_acceleration)
    rng = np.random.default_rng(seed)
    q = np.asarray(p.home_position, dtype=np.float64)
    filt.update_measured(q, 0.0)
    hits = {name: 0 for name in LIMIT_NAMES}
    change_by_limit: dict[str, list[float]] = {name: [] for name in REPORTED_LIMITS}
    modified = 0
    violations = {"position": 0, "velocity": 0, "acceleration": 0}
    prev_cmd, prev_v = q.copy(), np.zeros_like(q)
    tol = 1e-9
    for i in range(n):
        t = (i + 1) * dt
        if regime == "jumps":
            request = lo - overshoot * span + rng.random(q.size) * (1.0 + 2.0 * overshoot) * span  # (D,)
        else:
            request = prev_cmd + rng.normal(0.0, 2.0, q.size) * vmax * dt  # (D,)
        roll = rng.random()
        if roll < nan_fraction:
            request[rng.integers(q.size)] = np.nan
        elif roll < nan_fraction + shape_fraction:
            request = request[:-1]
        res = filt.filter(request, t)
        cmd = res.command
        assert cmd is not None, "the filter has a measured state from the start, so it always commands"
        modified += int(res.modified)
        for name in res.limits_hit:
            hits[name] += 1
        if res.limits_hit:
            if request.shape == cmd.shape and np.all(np.isfinite(request)):
                change = float(np.max(np.abs(cmd - request) / span))
            else:
                change = 1.0  # rejected outright: the whole request replaced by a stop
            for name in res.limits_hit:
                if name in change_by_limit:
                    change_by_limit[name].append(change)
        v = (cmd - prev_cmd) / dt
        violations["position"] += int(np.any(cmd < lo - tol * span) or np.any(cmd > hi + tol * span))
        violations["velocity"] += int(np.any(np.abs(v) > vmax * (1 + 1e-6) + tol))
        violations["acceleration"] += int(np.any(np.abs(v - prev_v) / dt > amax * (1 + 1e-6) + tol))
        prev_cmd, prev_v = cmd.copy(), v
        filt.update_measured(cmd, t)  # the robot tracks the command
    return {
        "embodiment": embodiment,
        "regime": regime,
        "requests": n,
        "modified_fraction": modified / n,
        "limit_fraction": {name: hits[name] / n for name in REPORTED_LIMITS},
        "change_median_frac_of_range": {name: float(np.median(v)) if v else float("nan")
                                        for name, v in change_by_limit.items()},
        "violations_after_filter": violations,
        "changes": change_by_limit,
    }


def plot(results: list[dict[str, Any]], path: str) -> None:
    """Box plots of the change per limit (fraction of the joint range): a row per regime, a
    column per embodiment."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    regimes = list(dict.fromkeys(r["regime"] for r in results))
    cols = len(results) // len(regimes)
    fig, axes = plt.subplots(len(regimes), cols, figsize=(4 * cols, 3.4 * len(regimes)), squeeze=False)
    for ax, r in zip(axes.ravel(), results):
        names = [k for k in REPORTED_LIMITS if r["changes"][k]]
        ax.boxplot([r["changes"][k] for k in names], showfliers=False)
        ax.set_xticks(range(1, len(names) + 1), [f"{k}\n{100 * r['limit_fraction'][k]:.0f}%" for k in names],
                      fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{r['embodiment']} ({r['regime']}): {100 * r['modified_fraction']:.0f}% modified", fontsize=10)
        ax.set_ylabel("largest joint change / joint range")
    fig.suptitle("Safety stress: random actions per embodiment (box: how much a request was changed "
                 "when that limit acted; label: share of requests)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """``hybridvla study safety``: print, write JSON and a plot; returns 1 if any command broke a limit."""
    import argparse

    ap = argparse.ArgumentParser(prog="hybridvla study safety", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--embodiments", nargs="+", default=list(EMBODIMENTS), choices=EMBODIMENTS)
    ap.add_argument("--n", type=int, default=1000, help="random requests per embodiment")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/studies/safety_stress")
    args = ap.parse_args(argv)
    results = [stress_embodiment(e, args.n, args.seed, regime) for regime in REGIMES for e in args.embodiments]
    os.makedirs(args.out, exist_ok=True)
    print(f"{'embodiment':16s} {'modified':>8s} " + " ".join(f"{k:>12s}" for k in REPORTED_LIMITS)
          + "  violations after the filter")
    for r in results:
        print(f"{r['embodiment'] + ' (' + r['regime'] + ')':16s} {100 * r['modified_fraction']:7.1f}% "
              + " ".join(f"{100 * r['limit_fraction'][k]:6.1f}%/{r['change_median_frac_of_range'][k]:.2f}"
                         for k in REPORTED_LIMITS)
              + f"  {sum(r['violations_after_filter'].values())}")
    print("(per limit: share of requests it acted on / median largest change as a fraction of the joint range)")
    with open(os.path.join(args.out, "safety_stress.json"), "w", encoding="utf-8") as f:
        json.dump([{k: v for k, v in r.items() if k != "changes"} for r in results], f, indent=2)
    plot(results, os.path.join(args.out, "safety_stress.png"))
    print(f"wrote {args.out}/safety_stress.json and safety_stress.png")
    return 1 if any(sum(r["violations_after_filter"].values()) for r in results) else 0
