"""Study 2, multi-embodiment transfer: one backbone trained on two robots against one per robot.

Each model is trained with ``hybridvla train``'s recipe (its encoder, image size and
augmentation, coarse-to-fine heads) and then DAgger rounds, as the README recommends for
the MuJoCo Franka. Same data budget: every model starts from the same demonstrations of
each robot (recorded once, from the simulators the parameter files name: MuJoCo for
franka and aloha), collects the same number of DAgger episodes per robot and round (each
keeps its round with the best closed-loop success, as ``hybridvla train`` does), and
takes the same number of optimizer steps per robot (the shared model alternates robots,
so it takes ``len(robots) x`` the steps in all). Each model is then judged per robot on
(a) the held-out demonstrations (action error relative to holding still) and (b)
closed-loop episodes on fresh nominal scenes, the same scenes for every model, through
the in-process control path (:func:`hybridvla_ros.sim.rollout.rollout`: the real action
buffer and safety filter). Each model's checkpoint is written under ``<out>/checkpoints/``.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np

from hybridvla_ros.params.embodiment import EMBODIMENTS
from hybridvla_ros.params.sim_robot import SimRobotParams


def sim_params(embodiment: str) -> SimRobotParams:
    """The sim_robot parameters of ``config/<embodiment>.yaml`` (physics, scene, image size)."""
    from hybridvla_ros.launch_description import default_config_dir
    from hybridvla_ros.model.demo_data import load_embodiment

    return load_embodiment(default_config_dir(), embodiment)


def policy_success(policy: Any, config: Any, embodiment: str, episodes: int, seed: int, max_s: float,
                   scene: str = "nominal", workers: int = 1) -> dict[str, Any]:
    """Closed-loop episodes of ``policy`` on fresh scenes (seeds ``seed..seed+episodes-1``, on ``workers``
    processes): the success rate and the median final error (:func:`policy_quality.closed_loop_episodes`
    has each one)."""
    from hybridvla_ros.studies.policy_quality import closed_loop_episodes

    results = closed_loop_episodes(policy, config, embodiment, episodes, seed, max_s, scene, workers)
    return {"episodes": episodes, "success_rate": float(np.mean([r["success"] for r in results])),
            "final_error_m_median": float(np.median([r["final_error_m"] for r in results]))}


def _train_with_dagger(demos: list[Any], specs: list[Any], params: list[Any], args: argparse.Namespace,
                       recipe: argparse.Namespace, out_dir: str) -> Any:
    """``hybridvla train``'s recipe on these robots: ``args.train_steps`` optimizer steps per robot,
    then ``args.dagger_rounds`` DAgger rounds (``args.dagger_episodes`` closed-loop episodes per
    robot each, then ``args.dagger_train_steps`` more steps per robot; the round with the best
    closed-loop success is kept). Writes the checkpoint to ``out_dir``; ``demos`` is not changed."""
    from hybridvla_ros.launch_description import default_config_dir
    from hybridvla_ros.model.dagger import DaggerConfig, dagger
    from hybridvla_ros.model.policy import PolicyConfig
    from hybridvla_ros.model.text import encoder_dim
    from hybridvla_ros.model.train import TrainConfig, train

    n = len(specs)
    config = PolicyConfig(image_size=recipe.image_size, instruction_encoder=recipe.instruction_encoder,
                          instruction_dim=encoder_dim(recipe.instruction_encoder), dropout=recipe.dropout)
    train_config = TrainConfig(train_steps=args.train_steps * n, batch_size=recipe.batch_size, lr=recipe.lr,
                               weight_decay=recipe.weight_decay, augment_shift_px=recipe.augment_shift_px,
                               seed=args.seed, threads=args.threads, min_expert_success=args.min_expert_success)
    result = train(list(demos), specs, train_config, policy_config=config,
                   out_dir=None if args.dagger_rounds else out_dir, progress=True)
    if args.dagger_rounds:
        rounds = DaggerConfig(rounds=args.dagger_rounds, episodes=args.dagger_episodes,
                              train_steps=args.dagger_train_steps * n, workers=args.threads)
        result = dagger(result, list(demos), specs, params, default_config_dir(), rounds, train_config,
                        out_dir=out_dir, progress=True, extra_log={})
    return result


def main(argv: list[str] | None = None) -> int:
    """``hybridvla study transfer``: print, write JSON and a plot."""
    import dataclasses

    import torch

    from hybridvla_ros.cli_model import build_train_parser
    from hybridvla_ros.model.demo_data import default_steps_per_episode, get_demos
    from hybridvla_ros.model.policy import EmbodimentSpec

    recipe = build_train_parser().parse_args([])  # hybridvla train's defaults: encoder, image size, augmentation
    ap = argparse.ArgumentParser(prog="hybridvla study transfer", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--embodiments", nargs=2, default=["franka", "aloha"], choices=EMBODIMENTS)
    ap.add_argument("--episodes", type=int, default=recipe.episodes, help="demonstration episodes per robot")
    ap.add_argument("--steps-per-episode", type=int, default=None,
                    help="control steps per demonstration episode (default: hybridvla train's)")
    ap.add_argument("--train-steps", type=int, default=recipe.train_steps, help="optimizer steps per robot")
    ap.add_argument("--min-expert-success", type=float, default=recipe.min_expert_success,
                    help="refuse robots whose scripted expert reached its target in a smaller fraction of the "
                         "demonstrations (as hybridvla train; 0: never)")
    ap.add_argument("--dagger-rounds", type=int, default=2,
                    help="DAgger rounds after training, as hybridvla train --dagger-rounds (0: none)")
    ap.add_argument("--dagger-episodes", type=int, default=recipe.dagger_episodes,
                    help="closed-loop episodes per robot and DAgger round")
    ap.add_argument("--dagger-train-steps", type=int, default=recipe.dagger_train_steps,
                    help="optimizer steps per robot after each DAgger round")
    ap.add_argument("--eval-episodes", type=int, default=20, help="closed-loop episodes per robot and model")
    ap.add_argument("--max-s", type=float, default=12.0, help="seconds per closed-loop episode")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=recipe.threads, help="torch threads")
    ap.add_argument("--demos", default="runs/demos", help="demonstration cache folder")
    ap.add_argument("--out", default="runs/studies/transfer")
    args = ap.parse_args(argv)
    for name in ("episodes", "train_steps", "dagger_episodes", "dagger_train_steps", "eval_episodes", "threads"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)!r}")
    if args.dagger_rounds < 0:
        ap.error(f"--dagger-rounds must be >= 0, got {args.dagger_rounds!r}")
    torch.set_num_threads(args.threads)
    names = list(args.embodiments)
    params = [sim_params(n) for n in names]
    demos = [get_demos(p, args.episodes, args.steps_per_episode or default_steps_per_episode(p),
                       recipe.image_size, args.seed, args.demos, True) for p in params]
    specs = [dataclasses.replace(EmbodimentSpec.from_params(p), head_type="coarse_to_fine") for p in params]
    runs: dict[str, dict[str, Any]] = {}
    models: dict[str, list[tuple[str, Any]]] = {}  # robot -> (model label, TrainResult) judged on it
    for label, idx in (("shared", list(range(len(names)))), *((f"{n} alone", [i]) for i, n in enumerate(names))):
        t0 = time.perf_counter()
        checkpoint = os.path.join(args.out, "checkpoints", label.replace(" ", "_"))
        result = _train_with_dagger([demos[i] for i in idx], [specs[i] for i in idx], [params[i] for i in idx],
                                    args, recipe, checkpoint)
        runs[label] = {"train_s": time.perf_counter() - t0, "checkpoint": checkpoint,
                       "dagger": result.log.get("dagger", []),
                       "dagger_kept_round": result.log.get("dagger_kept_round"), "robots": {}}
        for i in idx:
            models.setdefault(names[i], []).append((label, result))
    for name in names:
        for label, result in models[name]:
            held = result.log["heldout"][name]
            closed = policy_success(result.policy, result.config, name, args.eval_episodes, 10_000 + args.seed,
                                    args.max_s)
            runs[label]["robots"][name] = {"heldout_error_vs_hold_still": held.get("ratio_to_baseline"),
                                           "heldout_action_mae": held.get("action_mae"), **closed}
    os.makedirs(args.out, exist_ok=True)
    result_json = {"settings": vars(args), "runs": runs}
    with open(os.path.join(args.out, "transfer.json"), "w", encoding="utf-8") as f:
        json.dump(result_json, f, indent=2, default=float)
    for name in names:
        for label in ("shared", f"{name} alone"):
            r = runs[label]["robots"][name]
            curve = ", ".join(f"{p[name]['success_rate']:.2f}" for p in runs[label]["dagger"])
            print(f"{name:7s} {label:14s} success {r['success_rate']:.2f}  held-out error vs hold-still "
                  f"{r['heldout_error_vs_hold_still']:.3f}  final error {1e3 * r['final_error_m_median']:.0f} mm"
                  + (f"  DAgger rounds' success {curve} (kept {runs[label]['dagger_kept_round']})" if curve else ""))
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
