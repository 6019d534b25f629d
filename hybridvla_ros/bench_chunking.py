"""``hybridvla bench-chunking``: smoothness and success under inference latency, side by side.

On a simulated robot (MuJoCo Franka by default) through the in-process control path
(:func:`hybridvla_ros.sim.rollout.rollout`: the real action buffer and safety filter, the
simulator stepped at the control rate), each chunk enters the buffer an injected delay after
the frame it answers, while the robot goes on with the chunk it has. Three ways to join
chunks, in one run on the same episode seeds:

- ``none``: the new chunk replaces the old one at its first slot still to come;
- ``blend``: the buffer cross-fades ``blend_steps`` periods at the seam (the parameter file's);
- ``rtc``: real-time chunking: the policy is given the executing chunk's targets for the slots
  that run before the new chunk arrives (:class:`~hybridvla_ros.core.rtc.ChunkPrefix`) and makes
  its chunk agree with them (the scripted expert plans from where they leave the robot, guided
  toward the executing chunk over the rest of the overlap; our flow and coarse-to-fine heads
  inpaint), no blending.

Per policy, delay and mode: task success with a Wilson 95 % interval; the jump at the seams in
what the buffer asks for (before the safety filter: the largest joint's step between two
consecutive actions at a seam, against the same step inside chunks); jerk at the seams against
jerk inside chunks in what the robot is sent (third difference of the commands after the safety
filter, whose acceleration limit bounds it; the largest joint; medians). Command period jitter is
the graph's, measured by ``hybridvla bench`` and ``hybridvla bench-timing``, not here. Printed,
written as JSON and a plot.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import platform
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from hybridvla_ros.core.stats import wilson_interval

MODES = ("none", "blend", "rtc")
SEAM_REACH = 3  # a third difference touches 4 commands: those within 3 steps after a seam include it


def seam_jumps(actions: np.ndarray, chunk_seq: np.ndarray) -> tuple[list[float], list[float]]:
    """(steps at seams, steps inside chunks): the largest joint's |a[k] - a[k-1]| between consecutive
    actions of the buffer (NaN rows: holding, left out)."""
    a = np.asarray(actions, dtype=np.float64)
    seq = np.asarray(chunk_seq)
    if a.shape[0] < 2:
        return [], []
    step = np.abs(np.diff(a, axis=0)).max(axis=1)
    valid = np.isfinite(step) & (seq[1:] >= 0) & (seq[:-1] >= 0)
    seam = seq[1:] != seq[:-1]
    return step[valid & seam].tolist(), step[valid & ~seam].tolist()


def seam_metrics(commands: np.ndarray, chunk_seq: np.ndarray, period_s: float) -> dict[str, Any]:
    """Jerk at seams and inside chunks (the largest joint's |third difference| / period^3) and the
    largest velocity change at a seam, from an episode's commands (N, D; NaN rows: none sent) and
    the chunk each came from (-1: holding). Jerk samples that touch a NaN row or a hold are left out."""
    c = np.asarray(commands, dtype=np.float64)
    seq = np.asarray(chunk_seq)
    out: dict[str, Any] = {"seam_jerk": [], "chunk_jerk": [], "seam_dv": [], "seams": 0}
    if c.shape[0] < 4:
        return out
    seam = np.zeros(c.shape[0], bool)
    seam[1:] = (seq[1:] != seq[:-1]) & (seq[1:] >= 0) & (seq[:-1] >= 0)
    jerk = np.abs(np.diff(c, n=3, axis=0)).max(axis=1) / period_s ** 3          # (N-3,): commands k..k+3
    valid = np.isfinite(jerk) & (seq[:-3] >= 0) & (seq[3:] >= 0)
    near = np.zeros(jerk.size, bool)
    for k in np.flatnonzero(seam):
        near[max(0, k - SEAM_REACH):min(jerk.size, k)] = True                   # samples spanning k-1 -> k
    out["seam_jerk"] = jerk[valid & near].tolist()
    out["chunk_jerk"] = jerk[valid & ~near].tolist()
    v = np.diff(c, axis=0) / period_s                                           # v[k]: command k -> k+1
    for k in np.flatnonzero(seam):
        if 2 <= k < c.shape[0]:
            dv = np.abs(v[k - 1] - v[k - 2]).max()
            if np.isfinite(dv):
                out["seam_dv"].append(float(dv))
    out["seams"] = int(seam.sum())
    return out


def _median(values: list[float]) -> float:
    return float(np.median(values)) if values else math.nan


def summarize(results: list[Any], period_s: float) -> dict[str, Any]:
    """One row of the table from the rollouts of one (policy, delay, mode)."""
    pooled: dict[str, list[float]] = {"seam_jerk": [], "chunk_jerk": [], "seam_dv": [], "seam_jump": [],
                                      "chunk_step": []}
    seams = 0
    for r in results:
        jumps, steps = seam_jumps(r.trace.actions, r.trace.chunk_seq)
        pooled["seam_jump"] += jumps
        pooled["chunk_step"] += steps
        m = seam_metrics(r.trace.commands, r.trace.chunk_seq, period_s)
        for key in ("seam_jerk", "chunk_jerk", "seam_dv"):
            pooled[key] += m[key]
        seams += m["seams"]
    successes = sum(bool(r.success) for r in results)
    lo, hi = wilson_interval(successes, len(results))
    seam_j, chunk_j = _median(pooled["seam_jerk"]), _median(pooled["chunk_jerk"])
    return {"episodes": len(results), "successes": successes, "success_rate": successes / max(len(results), 1),
            "wilson95": [lo, hi], "seams": seams,
            "seam_jerk_p50": seam_j, "chunk_jerk_p50": chunk_j,
            "seam_to_chunk_jerk": seam_j / chunk_j if chunk_j > 0 else math.nan,
            "seam_dv_max": max(pooled["seam_dv"]) if pooled["seam_dv"] else math.nan,
            "seam_dv_p50": _median(pooled["seam_dv"]),
            "seam_jump_p50": _median(pooled["seam_jump"]),
            "seam_jump_max": max(pooled["seam_jump"]) if pooled["seam_jump"] else math.nan,
            "chunk_step_p50": _median(pooled["chunk_step"]),
            "final_error_m_median": _median([r.final_error_m for r in results])}


# (name, chunk size, sim -> predictor, can do rtc, cameras it reads)
_Compared = tuple[str, int, Callable[[Any], Callable[..., tuple[np.ndarray, float]]], bool, tuple[str, ...]]


def _policies(args: argparse.Namespace, sim_params: Any, chunk_size: int
              ) -> list[_Compared]:
    """(name, chunk size, sim -> predictor, can do rtc, the cameras it reads: () the scene camera) for each
    policy the run compares."""
    from hybridvla_ros.sim.rollout import expert_rtc_predictor

    out: list[_Compared] = [
        ("scripted expert", args.expert_chunk_size or chunk_size,
         lambda sim: expert_rtc_predictor(sim, args.expert_chunk_size or chunk_size), True, ())]
    if args.checkpoint:
        from hybridvla_ros.model.runner import PolicyRunner

        runner = PolicyRunner.load(args.checkpoint, sim_params.embodiment, num_threads=args.threads,
                                   seed=args.seed)

        def model(_sim: Any) -> Callable[..., tuple[np.ndarray, float]]:
            def predict(image: np.ndarray, q: np.ndarray, state: np.ndarray, prefix: Any = None
                        ) -> tuple[np.ndarray, float]:
                p = runner.predict(image, q, runner.default_instruction, num_samples=args.samples,
                                   state=state if runner.state_joints else None,
                                   prefix=prefix if runner.inpaints else None)
                return p.actions, p.confidence
            return predict

        out.append((f"model ({runner.head_type})", runner.chunk_size, model, bool(runner.inpaints), runner.cameras))
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    from hybridvla_ros.launch_description import default_config_dir, params_file_for
    from hybridvla_ros.model.demo_data import load_embodiment
    from hybridvla_ros.sim.base import render_cameras
    from hybridvla_ros.sim.registry import make_sim
    from hybridvla_ros.sim.rollout import control_path, rollout

    sim_params = load_embodiment(default_config_dir(), args.embodiment)
    physics = args.physics if args.physics != "config" else sim_params.physics
    buffer_config, limits = control_path(params_file_for(args.embodiment))
    period = buffer_config.control_period_s
    report: dict[str, Any] = {
        "benchmark": "hybridvla bench-chunking", "embodiment": args.embodiment, "physics": physics,
        "control_period_s": period, "blend_steps": buffer_config.blend_steps,
        "recompute_every": buffer_config.recompute_every, "delays_s": list(args.delays), "modes": list(args.modes),
        "episode_seeds": [args.seed_base, args.seed_base + args.episodes - 1], "max_s": args.max_s,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()}, "policies": {}}
    for name, chunk_size, make_predictor, can_rtc, cameras in _policies(args, sim_params, sim_params.chunk_size):
        rows: dict[str, dict[str, Any]] = {}
        report["policies"][name] = {"chunk_size": chunk_size, "inpaints": can_rtc, "rows": rows}
        for delay in args.delays:
            for mode in args.modes:
                key = f"{delay:g}s {mode}"
                if mode == "rtc" and not can_rtc:
                    rows[key] = {"skipped": "this policy cannot inpaint a prefix"}
                    continue
                config = dataclasses.replace(buffer_config, blend_steps=buffer_config.blend_steps
                                             if mode == "blend" else 0)
                start = time.perf_counter()
                results = []
                for i in range(args.episodes):
                    sim = make_sim(sim_params, sim_params.image_width, sim_params.image_height,
                                   seed=args.seed_base + i, physics=physics)
                    results.append(rollout(sim, make_predictor(sim), config, limits, args.max_s,
                                           sim_params.success_tolerance_m, delay_s=delay, rtc=(mode == "rtc"),
                                           trace=True, state_joints=sim_params.state_joints,
                                           render=functools.partial(render_cameras, cameras=cameras,
                                                                    anchor=sim_params.camera_name)))
                row = summarize(results, period)
                row["wall_s"] = time.perf_counter() - start
                rows[key] = row
                print(f"{name:>22s}  delay {1e3 * delay:4.0f} ms  {mode:5s}  success {row['successes']:2d}/"
                      f"{row['episodes']} [{row['wilson95'][0]:.2f}, {row['wilson95'][1]:.2f}]  asked: seam jump "
                      f"{1e3 * row['seam_jump_p50']:6.1f} (max {1e3 * row['seam_jump_max']:6.1f}) vs step "
                      f"{1e3 * row['chunk_step_p50']:5.1f} mrad; sent: seam jerk {row['seam_jerk_p50']:7.1f} vs "
                      f"{row['chunk_jerk_p50']:7.1f} (x{row['seam_to_chunk_jerk']:.2f})  ({row['wall_s']:.0f} s)",
                      flush=True)
    return report


def plot(report: dict[str, Any], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    policies = list(report["policies"])
    fig, axes = plt.subplots(2, len(policies), figsize=(5.5 * len(policies), 7), squeeze=False)
    for col, name in enumerate(policies):
        rows = report["policies"][name]["rows"]
        for mode in report["modes"]:
            xs, ratio, succ = [], [], []
            for d in report["delays_s"]:
                row = rows.get(f"{d:g}s {mode}", {})
                if "skipped" in row or not row:
                    continue
                xs.append(1e3 * d)
                ratio.append(row["seam_to_chunk_jerk"])
                succ.append(row["success_rate"])
            axes[0][col].plot(xs, ratio, marker="o", label=mode)
            axes[1][col].plot(xs, succ, marker="o", label=mode)
        axes[0][col].axhline(1.5, color="grey", lw=0.8, ls="--")
        axes[0][col].set(title=name, ylabel="seam jerk / in-chunk jerk (median)", yscale="log")
        axes[1][col].set(xlabel="injected inference delay (ms)", ylabel="task success", ylim=(-0.05, 1.05))
        axes[0][col].legend()
    fig.suptitle(f"{report['embodiment']} ({report['physics']}): chunk seams under latency")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="hybridvla bench-chunking", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--embodiment", default="franka")
    ap.add_argument("--physics", default="config", choices=("config", "kinematic", "mujoco"))
    ap.add_argument("--checkpoint", default="", help="also our model from this checkpoint directory")
    ap.add_argument("--delays", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3, 0.5],
                    help="injected inference delays (s)")
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--episodes", type=int, default=10, help="episodes per policy, delay and mode")
    ap.add_argument("--seed-base", type=int, default=70_000,
                    help="first episode seed (fresh: training and checkpoint choice use others)")
    ap.add_argument("--expert-chunk-size", type=int, default=50,
                    help="the scripted expert's chunk length (default 50: 1 s at 50 Hz, longer than the largest "
                         "delay; 0: the parameter file's chunk_size)")
    ap.add_argument("--samples", type=int, default=1, help="flow samples per chunk for the model")
    ap.add_argument("--max-s", type=float, default=12.0, help="seconds per episode")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/bench/chunking.json")
    ap.add_argument("--plot", default="runs/bench/chunking.png")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.episodes < 1 or any(not (math.isfinite(d) and d >= 0) for d in args.delays):
        raise SystemExit("hybridvla bench-chunking: error: --episodes must be >= 1 and delays finite and >= 0")
    import torch

    torch.set_num_threads(args.threads)
    report = run(args)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1, default=float)
    if args.plot:
        os.makedirs(os.path.dirname(os.path.abspath(args.plot)), exist_ok=True)
        plot(report, args.plot)
    print(f"wrote {args.out}" + (f" and {args.plot}" if args.plot else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
