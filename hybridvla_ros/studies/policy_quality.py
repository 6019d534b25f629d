"""Study 5, policy quality: does a change to the training recipe make the trained policy do its task?

Each variant is ``hybridvla train``'s recipe for one robot (demonstrations, training, DAgger
rounds; the checkpoint is the round with the best success in its own collection) plus the
variant's own arguments, trained once per training seed. Every checkpoint is then run in
closed loop on the same fresh scenes (``--eval-seed``, far from the seeds demonstrations
and DAgger rounds draw: those start at 0 and at 1,000,003) through the in-process control
path (:func:`hybridvla_ros.sim.rollout.rollout`: the real action buffer and safety filter,
MuJoCo contact physics). Reported per variant and seed: successes with a Wilson 95 %
interval, the expert phase each failure ends in (where the policy got stuck), and, on
the Franka, the tool-space error where it matters: the cup's horizontal offset from the
cube's centre when it grips and the cube's distance from the target when it lets go.
Pooled over seeds too; the scripted expert's own chunks on the same scenes and path are the
reference row. Writes ``<out>/policy_quality.json`` and a plot beside it; each run's
checkpoint and episodes are under ``<out>/<variant>_seed<N>/`` (a run whose checkpoint and
episodes on these scenes are there is reused).

Variants: ``full`` (``hybridvla train``'s defaults before this study: 1500 steps),
``until_event`` (chunk labels cut at the next suction-cup change), ``no_shift`` (no DrQ image
shift in training), ``image_128`` (the policy's image 128 x 128 instead of 96 x 96),
``demos_180`` (180 demonstrations instead of 60), ``steps_4500`` (4500 optimizer steps instead
of 1500), ``shift_1`` (a DrQ shift of 1 px instead of 4: 4 px is about 4 cm on the Franka's
table, as wide as the cube's start box), and ``steps_4500_until_event``, ``steps_4500_shift_1``
(those changes on top of 4500 steps), ``steps_4500_wrist`` (4500 steps, the policy reads the
exterior and the wrist camera together).

Besides success, each run says whether the policy localizes the cube at all: ``grip_tracking``
is the slope of the cup's grip position on the cube's across episodes (1: the grip follows the
cube; 0: one place whatever the image shows), and ``blind_grip_offset_m`` is the median grip
offset a policy gripping at one fixed place would have on these scenes.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from hybridvla_ros.core.stats import wilson_interval

# variant name -> hybridvla train arguments added to the recipe
VARIANTS: dict[str, list[str]] = {
    "full": ["--chunk-labels", "full"],
    "until_event": ["--chunk-labels", "until_event"],
    "no_shift": ["--chunk-labels", "full", "--augment-shift-px", "0"],
    "image_128": ["--chunk-labels", "full", "--image-size", "128"],
    "demos_180": ["--chunk-labels", "full", "--episodes", "180"],
    "steps_4500": ["--chunk-labels", "full", "--train-steps", "4500"],
    "shift_1": ["--chunk-labels", "full", "--augment-shift-px", "1"],
    # on top of the 4500 steps that became the default (each compared with steps_4500 on the same seeds)
    "steps_4500_until_event": ["--chunk-labels", "until_event", "--train-steps", "4500"],
    "steps_4500_shift_1": ["--chunk-labels", "full", "--train-steps", "4500", "--augment-shift-px", "1"],
    # both of the Franka's cameras: the exterior one (the arm hides the cube at the grip) and the wrist one
    "steps_4500_wrist": ["--chunk-labels", "full", "--train-steps", "4500", "--cameras", "exterior", "wrist"],
}
RECIPE = ["--train-steps", "1500", "--dagger-rounds", "2", "--dagger-episodes", "20", "--quiet"]  # as measured
EVAL_SEED = 70_000
RESULT_FILE = "policy_quality.json"
EPISODES_FILE = "episodes.json"


def closed_loop_episodes(policy: Any, config: Any, embodiment: str, episodes: int, seed: int, max_s: float,
                         scene: str = "nominal", workers: int = 1) -> list[dict[str, Any]]:
    """``episodes`` closed-loop episodes of ``policy`` (None: the scripted expert's own chunks) on
    fresh scenes ``seed .. seed + episodes - 1``: per episode success, final task error, the
    expert's phase at the end (simulators that name phases) and, where the simulator reports
    its grip (the Franka's suction cup), the cup's horizontal offset from the cube centre at
    each grip and the cube's distance from the target at each release (m). Each episode runs on
    a simulator of its own with the policy's sampling seeded per episode (SeededPredictor.reseed),
    so the episodes give the same results on ``workers`` processes as on one
    (:func:`hybridvla_ros.sim.parallel.run_episodes`)."""
    from hybridvla_ros.launch_description import default_config_dir, params_file_for
    from hybridvla_ros.model.demo_data import load_embodiment
    from hybridvla_ros.model.runner import SeededPredictor
    from hybridvla_ros.sim.parallel import run_episodes
    from hybridvla_ros.sim.rollout import control_path

    p = load_embodiment(default_config_dir(), embodiment)  # its sim_robot parameters
    buffer_config, limits = control_path(params_file_for(embodiment))
    seeded = None if policy is None else SeededPredictor(policy, config, embodiment, p.instruction, seed)
    cameras = () if policy is None else tuple(config.embodiment(embodiment).cameras)  # a multi-camera policy sees each
    return run_episodes(_EvalEpisode(seeded, p, buffer_config, limits, cameras, seed, max_s, scene), episodes, workers)


@dataclass(frozen=True)
class _EvalEpisode:
    """Episode k of :func:`closed_loop_episodes` (a class, not a closure: it pickles into a worker)."""

    policy: Any                  # a SeededPredictor, or None: the scripted expert's own chunks
    params: Any                  # the robot's sim_robot parameters
    buffer_config: Any
    limits: Any
    cameras: tuple[str, ...]
    seed: int
    max_s: float
    scene: str

    def __call__(self, k: int) -> dict[str, Any]:
        from hybridvla_ros.sim.base import render_cameras
        from hybridvla_ros.sim.registry import make_sim
        from hybridvla_ros.sim.rollout import expert_predictor, rollout

        seed, p, cameras = self.seed, self.params, self.cameras
        sim = make_sim(p, p.image_width, p.image_height, seed=seed, physics=p.physics, scene=self.scene)
        if self.policy is None:  # the reference: the scripted expert's own chunks through the same path
            predict = expert_predictor(sim, p.chunk_size)
        else:
            self.policy.reseed(k)
            predict = self.policy.predict
        sim.reset(seed=seed + k)
        grip_points: list[list[float]] = []
        releases: list[float] = []
        held = [bool(getattr(sim, "grasped", False))]
        cube_start = getattr(sim, "cube_position", None)

        def observe(s: Any) -> None:
            now = bool(getattr(s, "grasped", False))
            if now and not held[0]:
                cup, cube = s.end_effector_positions()[0][:2], s.cube_position[:2]
                grip_points.append([float(v) for v in (*cup, *cube)])
            elif held[0] and not now:
                releases.append(float(s.task_error_m()))
            held[0] = now

        r = rollout(sim, predict, self.buffer_config, self.limits, self.max_s, p.success_tolerance_m, observe=observe,
                    state_joints=p.state_joints, render=lambda s: render_cameras(s, cameras, p.camera_name))
        return {"seed": seed + k, "success": bool(r.success), "final_error_m": float(r.final_error_m),
                "time_to_success_s": None if math.isnan(r.time_to_success_s) else r.time_to_success_s,
                "end_phase": getattr(sim, "phase", None),
                "grip_offsets_m": [float(np.hypot(x - cx, y - cy)) for x, y, cx, cy in grip_points],
                "grip_points_m": grip_points,  # [cup x, cup y, cube x, cube y] at each grip
                "cube_start_m": None if cube_start is None else [float(v) for v in cube_start[:2]],
                "release_errors_m": releases, "safety_modified": int(r.safety_modified)}


def grip_tracking(episodes: list[dict[str, Any]]) -> float | None:
    """How far the cup's grip point follows the cube, pooled over x and y: the least-squares slope of
    the cup's position on the cube's across episodes, each axis about its own mean (1: the grip goes
    where the cube is; 0: one place whatever the image shows). None below 5 grips."""
    points = np.asarray([e["grip_points_m"][0] for e in episodes if e.get("grip_points_m")], float)
    if len(points) < 5:
        return None
    cup = points[:, :2] - points[:, :2].mean(0)
    cube = points[:, 2:] - points[:, 2:].mean(0)
    spread = float(np.sum(cube * cube))
    return float(np.sum(cup * cube) / spread) if spread > 0 else None


def blind_offset(episodes: list[dict[str, Any]]) -> float | None:
    """The median distance of the cubes' start positions from their mean: the grip offset of a policy
    that grips at one fixed place (the floor a policy that does not localize the cube sits near)."""
    starts = np.asarray([e["cube_start_m"] for e in episodes if e.get("cube_start_m")], float)
    if not len(starts):
        return None
    return float(np.median(np.hypot(*(starts - starts.mean(0)).T)))


def summarize(episodes: list[dict[str, Any]]) -> dict[str, Any]:
    """Successes, Wilson 95 % interval, failures by end phase, median grip offset / release error,
    how far the grip follows the cube."""
    n = len(episodes)
    wins = sum(e["success"] for e in episodes)
    low, high = wilson_interval(wins, n)
    grips = [e["grip_offsets_m"][0] for e in episodes if e["grip_offsets_m"]]
    releases = [e["release_errors_m"][0] for e in episodes if e["release_errors_m"]]
    return {"episodes": n, "successes": wins, "success_rate": wins / n if n else math.nan,
            "wilson95": [low, high],
            "failures_by_end_phase": dict(Counter(str(e["end_phase"]) for e in episodes if not e["success"])),
            "gripped": len(grips), "released": len(releases),
            "grip_offset_m_median": float(np.median(grips)) if grips else None,
            "release_error_m_median": float(np.median(releases)) if releases else None,
            "grip_tracking": grip_tracking(episodes), "blind_grip_offset_m": blind_offset(episodes),
            "final_error_m_median": float(np.median([e["final_error_m"] for e in episodes])) if n else None}


def _run_one(variant: str, train_seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Train (unless its checkpoint is there) and evaluate one variant and seed; returns its record."""
    import torch

    from hybridvla_ros.cli_model import train_main
    from hybridvla_ros.model.checkpoint import load_checkpoint
    from hybridvla_ros.model.train import TRAIN_LOG

    torch.set_num_threads(args.threads)
    run_dir = Path(args.out) / f"{variant}_seed{train_seed}"
    log_path = run_dir / TRAIN_LOG
    t0 = time.perf_counter()
    trained_before = log_path.is_file()  # then its episodes on these scenes are reused too
    if not trained_before:
        argv = ["--embodiments", args.embodiment, *RECIPE, *VARIANTS[variant], "--seed", str(train_seed),
                "--threads", str(args.threads), "--out", str(run_dir), "--demos", str(Path(args.out) / "demos")]
        if train_main(argv) != 0:
            raise RuntimeError(f"hybridvla train {' '.join(argv)} failed")
    train_s = time.perf_counter() - t0
    log = json.loads(log_path.read_text())
    t1 = time.perf_counter()
    episodes_path = run_dir / EPISODES_FILE
    episodes = json.loads(episodes_path.read_text()) if trained_before and episodes_path.is_file() else []
    if [e["seed"] for e in episodes] != [args.eval_seed + k for k in range(args.episodes)]:  # judge it
        policy, config = load_checkpoint(run_dir)
        episodes = closed_loop_episodes(policy, config, args.embodiment, args.episodes, args.eval_seed, args.max_s)
        episodes_path.write_text(json.dumps(episodes, indent=1))
    record = {"variant": variant, "train_seed": train_seed, "train_time_s": log.get("train_time_s"),
              "wall_s": {"train": train_s, "eval": time.perf_counter() - t1},
              "dagger_curve": [pt[args.embodiment]["success_rate"] for pt in log.get("dagger", [])],
              "dagger_kept_round": log.get("dagger_kept_round"), **summarize(episodes)}
    print(f"[policy] {variant} seed {train_seed}: {record['successes']}/{record['episodes']} "
          f"(Wilson {record['wilson95'][0]:.2f}-{record['wilson95'][1]:.2f}), failures end in "
          f"{record['failures_by_end_phase']}", file=sys.stderr, flush=True)
    return record


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Success with its Wilson 95 % interval, and the grip offset, per run (the expert first)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['variant']}\n{r['train_seed']}" for r in rows]
    x = np.arange(len(rows))
    rate = np.array([r["success_rate"] for r in rows])
    low, high = np.array([r["wilson95"] for r in rows]).T
    fig, (ax, ax_grip) = plt.subplots(1, 2, figsize=(11, 3.5))
    ax.bar(x, rate, yerr=np.clip([rate - low, high - rate], 0.0, None), capsize=3)  # 50/50: high 1 - 1e-16
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("placed (Wilson 95 %)")
    grip = [1e3 * (r["grip_offset_m_median"] or np.nan) for r in rows]
    ax_grip.bar(x, grip)
    ax_grip.set_ylabel("median grip offset from cube centre (mm)")
    for axis in (ax, ax_grip):
        axis.set_xticks(x, labels, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _expert_reference(args: argparse.Namespace) -> dict[str, Any]:
    """The scripted expert's own chunks on the same scenes and control path: what the judge
    reports for a policy that does the task (cached in ``<out>/expert/``)."""
    path = Path(args.out) / "expert" / EPISODES_FILE
    want = [args.eval_seed + k for k in range(args.episodes)]
    episodes = json.loads(path.read_text()) if path.is_file() else []
    if [e["seed"] for e in episodes] != want:
        episodes = closed_loop_episodes(None, None, args.embodiment, args.episodes, args.eval_seed, args.max_s)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(episodes, indent=1))
    return summarize(episodes)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="hybridvla study policy", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--embodiment", default="franka", choices=("franka", "aloha"))
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="training seeds (default: 0 1 2)")
    ap.add_argument("--episodes", type=int, default=50, help="fresh closed-loop episodes per checkpoint (50)")
    ap.add_argument("--eval-seed", type=int, default=EVAL_SEED, help=f"first fresh scene seed ({EVAL_SEED})")
    ap.add_argument("--max-s", type=float, default=8.0, help="seconds per episode (8)")
    ap.add_argument("--jobs", type=int, default=1, help="runs in parallel, each in its own process (1)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per run (default: 2 / jobs, >= 1)")
    ap.add_argument("--out", default="runs/studies/policy")
    args = ap.parse_args(argv)
    if args.episodes < 1 or args.jobs < 1 or not (math.isfinite(args.max_s) and args.max_s > 0):
        ap.error("--episodes and --jobs must be >= 1 and --max-s > 0")
    args.threads = args.threads or max(1, 2 // args.jobs)
    os.makedirs(args.out, exist_ok=True)
    combos = [(v, s) for v in args.variants for s in args.seeds]
    if args.jobs == 1:
        records = [_run_one(v, s, args) for v, s in combos]
    else:
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
            records = list(pool.map(_run_one, *zip(*combos), [args] * len(combos)))
    expert = _expert_reference(args)
    pooled = {}
    for v in args.variants:
        episodes = []
        for s in args.seeds:
            episodes += json.loads((Path(args.out) / f"{v}_seed{s}" / EPISODES_FILE).read_text())
        pooled[v] = summarize(episodes)
    result = {"embodiment": args.embodiment, "eval_seed": args.eval_seed, "episodes": args.episodes,
              "seeds": args.seeds, "recipe": RECIPE, "variants": {v: VARIANTS[v] for v in args.variants},
              "runs": records, "pooled": pooled, "expert": expert}
    path = Path(args.out) / RESULT_FILE
    path.write_text(json.dumps(result, indent=2))
    blind = expert.get("blind_grip_offset_m")
    print(f"{'variant':14s} {'seed':>4s} {'placed':>8s} {'Wilson 95 %':>13s} {'grip mm':>8s} {'tracks':>6s} "
          f"{'release mm':>10s}  failures end in   (a grip at one fixed place: "
          f"{'-' if blind is None else f'{1e3 * blind:.1f}'} mm)")
    rows = [{"variant": "expert", "train_seed": "-", **expert}] + records
    for r in rows + [{"variant": v, "train_seed": "all", **pooled[v]} for v in args.variants]:
        grip = "-" if r["grip_offset_m_median"] is None else f"{1e3 * r['grip_offset_m_median']:.1f}"
        rel = "-" if r["release_error_m_median"] is None else f"{1e3 * r['release_error_m_median']:.1f}"
        tracks = "-" if r.get("grip_tracking") is None else f"{r['grip_tracking']:.2f}"
        print(f"{r['variant']:14s} {r['train_seed']!s:>4s} {r['successes']:>3d}/{r['episodes']:<4d} "
              f"{r['wilson95'][0]:.2f}-{r['wilson95'][1]:.2f}    {grip:>8s} {tracks:>6s} {rel:>10s}  "
              f"{r['failures_by_end_phase']}")
    _plot(rows, path.with_suffix(".png"))
    print(f"wrote {path} and {path.with_suffix('.png').name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
