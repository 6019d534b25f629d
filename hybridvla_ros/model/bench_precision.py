"""``hybridvla bench-precision``: does the flow refiner buy precision over the 64-bin token chunk?

Task: the kinematic sim's reach-the-target (franka by default): place the TCP at the target,
success within ``--tolerance-mm`` (1 mm). Every episode starts from ``sim.reset(seed)`` with
seeds no demonstration used; chunks are replanned every ``recompute_every`` control periods
(the parameter file's) and their first actions executed, as the action buffer does. The score
is the TCP position error ``|sim.end_effector_positions() - sim.target|`` after ``--steps``
periods (the expert settles in about 1 s), reported as median / 90th percentile over episodes
and the fraction within the tolerance.

(a) representation bound, no learned policy in the loop: the expert's own chunk (the sim
    rolled ahead on a copy) executed as is ("expert"), encoded to the token head's bins and
    decoded ("coarse": what a perfect token head could output), and that binned chunk refined
    by the checkpoint's refiner ("refined").
(b) closed loop: the trained policy in each mode its head serves (token = coarse only,
    coarse_to_fine = coarse + refined, flow).

Writes the numbers as JSON (default runs/bench_precision.json) and prints a table.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from typing import Any

import numpy as np
import torch

from hybridvla_ros.model.policy import CoarseToFineHead
from hybridvla_ros.model.runner import PolicyRunner
from hybridvla_ros.params.config_files import default_config_dir

DEFAULT_OUT = "runs/bench_precision.json"
EPISODE_SEED_BASE = 1_000_003  # far from the demonstrations' per-episode seeds


def expert_chunk(sim: Any, chunk_size: int) -> np.ndarray:
    """(T, D) the expert's next ``chunk_size`` position targets, from a copy of ``sim`` rolled ahead."""
    ahead = copy.deepcopy(sim)
    out = np.empty((chunk_size, len(sim.positions)))
    for k in range(chunk_size):
        out[k] = ahead.expert_target()
        ahead.command_positions(out[k])
        ahead.step(ahead.control_period_s)
    return out


class ChunkCoder:
    """Bins an absolute chunk as the token head does, and refines a binned chunk with the refiner."""

    def __init__(self, runner: PolicyRunner, num_samples: int, seed: int) -> None:
        head = runner.policy.heads[runner.embodiment]
        if not isinstance(head, CoarseToFineHead):
            head_type = runner.policy.config.embodiment(runner.embodiment).head_type
            raise ValueError(f"checkpoint: {runner.embodiment!r} has a {head_type!r} head; the precision benchmark "
                             "needs a coarse_to_fine head (hybridvla train --heads coarse_to_fine)")
        self.runner, self.head = runner, head
        self.normalizer = runner.policy.normalizers[runner.embodiment]
        self.num_samples = num_samples
        self.generator = torch.Generator().manual_seed(seed)

    @torch.inference_mode()
    def code(self, image: np.ndarray, q: np.ndarray, chunk: np.ndarray, instruction: str
             ) -> tuple[np.ndarray, np.ndarray]:
        """(coarse (T, D), refined (T, D)) absolute chunks for the expert ``chunk`` (T, D) at joint positions q."""
        delta = torch.from_numpy(chunk - q[None]).float()[None]                               # (1, T, D)
        tok = self.head.token
        u = self.normalizer.normalize_delta(delta)                                            # (1, T, D)
        coarse = tok.bin_centers[tok.to_bins(u)] * tok.range_std                              # (1, T, D) bin centres
        feat = self.runner.policy.encode(self.runner.batch(image, q, instruction))            # (1, d)
        noise = torch.randn(self.num_samples, tok.T * tok.D, generator=self.generator)       # (K, T*D)
        refined, _ = self.head.refine(feat, coarse, 1.0, noise)                               # (1, T, D)
        to_abs = lambda x: q[None] + self.normalizer.denormalize_delta(x)[0].double().numpy()  # noqa: E731
        return to_abs(coarse), to_abs(refined)


def _episode(sim: Any, seed: int, steps: int, recompute_every: int, plan: Any) -> float:
    """Run one episode, replanning with ``plan(sim) -> (T, D)``; the final TCP error (m)."""
    sim.reset(seed=seed)
    chunk, k = None, 0
    for _ in range(steps):
        if chunk is None or k >= recompute_every or k >= len(chunk):
            chunk, k = plan(sim), 0
        sim.command_positions(chunk[k])
        sim.step(sim.control_period_s)
        k += 1
    return float(np.max(np.linalg.norm(sim.end_effector_positions() - sim.target, axis=1)))


def summarize(errors_m: list[float], tolerance_m: float) -> dict[str, float]:
    """Median / p90 / mean TCP error in mm and the fraction within ``tolerance_m``."""
    e = np.asarray(errors_m)
    return {"median_mm": float(np.median(e) * 1e3), "p90_mm": float(np.percentile(e, 90) * 1e3),
            "mean_mm": float(e.mean() * 1e3), "within_tolerance": float((e <= tolerance_m).mean()),
            "episodes": int(len(e))}


def run(checkpoint: str, embodiment: str = "franka", config_dir: str = "config", episodes: int = 20,
        steps: int = 120, tolerance_mm: float = 1.0, num_samples: int = 5, seed: int = 0,
        closed_loop: bool = True, progress: bool = False) -> dict[str, Any]:
    """The benchmark's result dict (see the module docstring). Raises ValueError / CheckpointError."""
    from hybridvla_ros.model.demo_data import load_embodiment
    from hybridvla_ros.sim.kinematic import KinematicSim
    from hybridvla_ros.sim.registry import state_vector

    params = load_embodiment(config_dir, embodiment, physics="kinematic")  # the reach task: kinematic sim
    tol = tolerance_mm * 1e-3
    base = PolicyRunner.load(checkpoint, embodiment, seed=seed)
    if base.chunk_size != params.chunk_size or base.action_dim != params.action_dim:
        raise ValueError(f"checkpoint: {embodiment!r} head has chunk {base.chunk_size} x {base.action_dim}, "
                         f"the parameter file {params.chunk_size} x {params.action_dim}")
    coder = ChunkCoder(base, num_samples, seed)
    sim = KinematicSim(params, seed=0)
    instruction = params.instruction
    seeds = [EPISODE_SEED_BASE + e for e in range(episodes)]
    every = params.recompute_every
    result: dict[str, Any] = {"checkpoint": checkpoint, "embodiment": embodiment, "episodes": episodes,
                              "steps": steps, "control_period_s": params.control_period_s,
                              "recompute_every": every, "tolerance_mm": tolerance_mm, "num_samples": num_samples,
                              "num_bins": base.config.num_bins}

    # (a) representation bound: the expert's chunks, exact / binned / binned + refined
    errors: dict[str, list[float]] = {"expert": [], "coarse": [], "refined": []}
    t0 = time.perf_counter()
    for s in seeds:
        for method in errors:
            def plan(sim: Any, method: str = method) -> np.ndarray:
                chunk = expert_chunk(sim, params.chunk_size)
                if method == "expert":
                    return chunk
                coarse, refined = coder.code(sim.render(), sim.positions, chunk, instruction)
                return coarse if method == "coarse" else refined
            errors[method].append(_episode(sim, s, steps, every, plan))
        if progress:
            print(f"[bench-precision] (a) episode {len(errors['expert'])}/{episodes}", file=sys.stderr)
    result["representation_bound"] = {m: summarize(e, tol) for m, e in errors.items()}
    result["representation_bound_time_s"] = time.perf_counter() - t0

    # (b) closed loop with the trained policy, every mode the head serves
    if closed_loop:
        closed: dict[str, Any] = {}
        t0 = time.perf_counter()
        for mode in base.policy.modes(embodiment):
            runner = PolicyRunner(base.policy, base.config, embodiment, seed=seed, mode=mode)
            errs = [_episode(sim, s, steps, every,
                             lambda sim, runner=runner: runner.predict(  # this mode's runner
                                 sim.render(), sim.positions, instruction, num_samples,
                                 state=state_vector(sim, runner.state_joints)).actions)
                    for s in seeds]
            closed[mode] = summarize(errs, tol)
            if progress:
                print(f"[bench-precision] (b) {mode} done", file=sys.stderr)
        result["closed_loop"] = closed
        result["closed_loop_time_s"] = time.perf_counter() - t0
    return result


def print_result(result: dict[str, Any]) -> None:
    """The result as a table."""
    print(f"TCP error after {result['steps']} periods on {result['embodiment']} ({result['episodes']} episodes, "
          f"{result['num_bins']} bins, tolerance {result['tolerance_mm']:g} mm):")
    sections = [("(a) expert chunks", result["representation_bound"])]
    if "closed_loop" in result:
        sections.append(("(b) closed loop", result["closed_loop"]))
    for title, rows in sections:
        print(f"  {title}")
        for name, r in rows.items():
            print(f"    {name:15s} median {r['median_mm']:8.3f} mm  p90 {r['p90_mm']:8.3f} mm  "
                  f"within {100 * r['within_tolerance']:5.1f} %")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hybridvla bench-precision", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default="checkpoints/default", help="a checkpoint with coarse_to_fine heads")
    p.add_argument("--embodiment", default="franka", help="an arm in config/ (default: franka)")
    p.add_argument("--config-dir", default=default_config_dir(), help="directory with <embodiment>.yaml (default: the "
                   "package's config/)")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--steps", type=int, default=120, help="control periods per episode (default: 120)")
    p.add_argument("--tolerance-mm", type=float, default=1.0)
    p.add_argument("--num-samples", type=int, default=5, help="flow samples per chunk (default: 5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-closed-loop", action="store_true", help="only (a), the representation bound")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"JSON result (default: {DEFAULT_OUT})")
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    """``hybridvla bench-precision``: returns the exit status."""
    args = build_parser().parse_args(argv)
    for name in ("episodes", "steps", "num_samples", "threads"):
        if getattr(args, name) < 1:
            print(f"hybridvla bench-precision: error: --{name.replace('_', '-')} must be >= 1, "
                  f"got {getattr(args, name)!r}", file=sys.stderr)
            return 2
    if not args.tolerance_mm > 0:
        print(f"hybridvla bench-precision: error: --tolerance-mm must be > 0, got {args.tolerance_mm!r}",
              file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    try:
        result = run(args.checkpoint, args.embodiment, args.config_dir, args.episodes, args.steps,
                     args.tolerance_mm, args.num_samples, args.seed, not args.no_closed_loop, not args.quiet)
    except (ValueError, OSError) as exc:  # CheckpointError / ParameterError are ValueErrors
        print(f"hybridvla bench-precision: error: {exc}", file=sys.stderr)
        return 1
    print_result(result)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
