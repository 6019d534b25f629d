"""Study 2, multi-embodiment transfer: one backbone trained on two robots against one per robot.

Same data budget: every model sees the same demonstrations of each robot (recorded once,
from the simulators the parameter files name: MuJoCo for franka and aloha) and takes the
same number of optimizer steps on each robot's data (the shared model alternates robots,
so it takes ``len(robots) x train_steps`` steps in all). Each model is then judged per
robot on (a) the held-out demonstrations (action error relative to holding still) and
(b) closed-loop episodes on fresh nominal scenes through the in-process control path
(:func:`hybridvla_ros.core.rollout.rollout`: the real action buffer and safety filter).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np

from hybridvla_ros.launch_description import params_file_for
from hybridvla_ros.params.embodiment import EMBODIMENTS
from hybridvla_ros.params.sim_robot import SimRobotParams


def sim_params(embodiment: str) -> SimRobotParams:
    """The sim_robot parameters of ``config/<embodiment>.yaml`` (physics, scene, image size)."""
    from hybridvla_ros.launch_description import default_config_dir
    from hybridvla_ros.model.train import load_embodiment

    return load_embodiment(default_config_dir(), embodiment)


def policy_success(policy: Any, config: Any, embodiment: str, episodes: int, seed: int, max_s: float,
                   scene: str = "nominal") -> dict[str, Any]:
    """Closed-loop episodes of ``policy`` on fresh scenes (seeds ``seed..seed+episodes-1``)."""
    from hybridvla_ros.core.rollout import control_path, rollout
    from hybridvla_ros.core.sims import make_sim
    from hybridvla_ros.model.runner import PolicyRunner

    p = sim_params(embodiment)
    buffer_config, limits = control_path(params_file_for(embodiment))
    predict = PolicyRunner(policy, config, embodiment, seed=seed).predictor(p.instruction)
    sim = make_sim(p, p.image_width, p.image_height, seed=seed, physics=p.physics, scene=scene)
    results = []
    for k in range(episodes):  # episodes run one after another on one simulator
        sim.reset(seed=seed + k)
        results.append(rollout(sim, predict, buffer_config, limits, max_s, p.success_tolerance_m,
                               state_joints=p.state_joints))
    return {"episodes": episodes, "success_rate": float(np.mean([r.success for r in results])),
            "final_error_m_median": float(np.median([r.final_error_m for r in results]))}


def main(argv: list[str] | None = None) -> int:
    """``hybridvla study transfer``: print, write JSON and a plot."""
    from hybridvla_ros.model.policy import EmbodimentSpec
    from hybridvla_ros.model.train import get_demos, train

    ap = argparse.ArgumentParser(prog="hybridvla study transfer", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--embodiments", nargs=2, default=["franka", "aloha"], choices=EMBODIMENTS)
    ap.add_argument("--episodes", type=int, default=40, help="demonstration episodes per robot")
    ap.add_argument("--steps-per-episode", type=int, default=250)
    ap.add_argument("--train-steps", type=int, default=1500, help="optimizer steps per robot")
    ap.add_argument("--eval-episodes", type=int, default=20, help="closed-loop episodes per robot and model")
    ap.add_argument("--max-s", type=float, default=12.0, help="seconds per closed-loop episode")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--demos", default="runs/demos", help="demonstration cache folder")
    ap.add_argument("--out", default="runs/studies/transfer")
    args = ap.parse_args(argv)
    names = list(args.embodiments)
    params = [sim_params(n) for n in names]
    demos = [get_demos(p, args.episodes, args.steps_per_episode, 96, args.seed, args.demos, True) for p in params]
    specs = [EmbodimentSpec.from_params(p) for p in params]
    runs: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    shared = train(demos, specs, train_steps=args.train_steps * len(names), seed=args.seed, progress=True)
    runs["shared"] = {"train_s": time.perf_counter() - t0, "robots": {}}
    models = {n: ("shared", shared) for n in names}
    alone = {}
    for d, s in zip(demos, specs):
        t0 = time.perf_counter()
        alone[s.name] = train([d], [s], train_steps=args.train_steps, seed=args.seed, progress=True)
        runs[f"{s.name} alone"] = {"train_s": time.perf_counter() - t0, "robots": {}}
    for name in names:
        for label, result in ((models[name][0], models[name][1]), (f"{name} alone", alone[name])):
            held = result.log["heldout"][name]
            closed = policy_success(result.policy, result.config, name, args.eval_episodes, 10_000 + args.seed,
                                    args.max_s)
            runs[label]["robots"][name] = {"heldout_error_vs_hold_still": held.get("ratio_to_baseline"),
                                           "heldout_action_mae": held.get("action_mae"), **closed}
    os.makedirs(args.out, exist_ok=True)
    result = {"settings": vars(args), "runs": runs}
    with open(os.path.join(args.out, "transfer.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2, default=float)
    for name in names:
        for label in ("shared", f"{name} alone"):
            r = runs[label]["robots"][name]
            print(f"{name:7s} {label:14s} success {r['success_rate']:.2f}  held-out error vs hold-still "
                  f"{r['heldout_error_vs_hold_still']}  final error {1e3 * r['final_error_m_median']:.0f} mm")
    _plot(runs, names, os.path.join(args.out, "transfer.png"))
    print(f"wrote {args.out}/transfer.json and transfer.png")
    return 0


def _plot(runs: dict[str, Any], names: list[str], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax_err) = plt.subplots(1, 2, figsize=(10, 3.5))
    x = np.arange(len(names))
    for axis, key, label in ((ax, "success_rate", "closed-loop success rate"),
                             (ax_err, "heldout_error_vs_hold_still", "held-out action error / hold-still")):
        axis.bar(x - 0.2, [runs["shared"]["robots"][n][key] for n in names], 0.4, label="shared backbone (both)")
        axis.bar(x + 0.2, [runs[f"{n} alone"]["robots"][n][key] for n in names], 0.4, label="trained alone")
        axis.set_xticks(x, names)
        axis.set_ylabel(label)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
