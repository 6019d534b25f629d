"""DAgger (Ross, Gordon and Bagnell 2011): the scripted expert labels the states the policy visits.

A policy cloned from the expert's demonstrations makes small errors, and in closed loop
they carry it into states the demonstrations never showed (on the MuJoCo Franka: 5-10
mrad per chunk, 8 cm off after a second, 0 of 10 cube placements). DAgger runs the
trained policy through the deployed control path (:func:`hybridvla_ros.sim.rollout.rollout`:
the real action buffer and safety filter), records every state it visits with the label
the scripted expert gives *from that state* (:func:`hybridvla_ros.sim.rollout.expert_chunk`,
the same "next T targets" a demonstration holds), adds them to the data and trains on.
Each round's closed-loop success is the learning curve, measured on the policy that
collected the round's data.

The recorded data use the demonstration format of :mod:`hybridvla_ros.sim.demos`, so a
round's data can be saved, replayed and trained on like demonstrations. :func:`dagger`
runs the rounds after :func:`hybridvla_ros.model.train.train` (``hybridvla train
--dagger-rounds N``).
"""
from __future__ import annotations

import dataclasses
import itertools
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hybridvla_ros.core.dataset_keys import DEMO_PROPRIO
from hybridvla_ros.core.image import resize_views
from hybridvla_ros.model.demo_data import default_steps_per_episode
from hybridvla_ros.model.policy import EmbodimentSpec
from hybridvla_ros.model.runner import SeededPredictor
from hybridvla_ros.model.train import TrainConfig, TrainResult, train, write_outputs
from hybridvla_ros.sim.base import Simulator, render_cameras
from hybridvla_ros.sim.demos import CHUNK_LABELS, validate_demonstrations
from hybridvla_ros.sim.parallel import run_episodes
from hybridvla_ros.sim.registry import make_sim, state_vector
from hybridvla_ros.sim.rollout import RolloutResult, control_path, expert_chunk, rollout

__all__ = ["PolicyStates", "record_policy_states", "merge_demonstrations", "DaggerConfig", "dagger"]

DAGGER_SEED_OFFSET = 1_000_003  # DAgger scenes are drawn from seeds the demonstrations did not use
# seconds per closed-loop DAgger episode: the kinematic experts settle within ~1.2 s, the MuJoCo tasks take ~3.5 s;
# at least as long as the demonstrations' episodes (the Stretch base: 10 s, demo_data.default_steps_per_episode)
DAGGER_EPISODE_S = {"kinematic": 6.0, "mujoco": 8.0}
DAGGER_KEEP = ("best", "last")
DAGGER_WARMUP_STEPS = 20        # learning-rate warm-up of each round's training (it continues a trained policy)
DAGGER_RECORD_EVERY = 2         # every second control step of a closed-loop episode is recorded


@dataclass
class PolicyStates:
    """One DAgger collection: the states (with expert labels) and how the episodes went."""

    demos: dict[str, Any]
    results: list[RolloutResult]

    @property
    def success_rate(self) -> float:
        return float(np.mean([r.success for r in self.results])) if self.results else float("nan")


def record_policy_states(predict: Any, params: Any, buffer_config: Any, limits: Any, episodes: int,
                         max_s: float, image_size: int, seed: int = 0, record_every: int = 1,
                         chunk_labels: str = "full", cameras: tuple[str, ...] = (), workers: int = 1,
                         reseed: Callable[[int], None] | None = None) -> PolicyStates:
    """Run ``episodes`` closed-loop episodes of ``predict`` (a rollout Predictor: (image, q) ->
    (chunk, confidence)) on the simulator ``params`` name (SimRobotParams: physics, scene,
    image size) and record every ``record_every``-th control step: the policy's-size image,
    the joint positions and the expert's chunk from that state (``chunk_labels`` as the
    demonstrations': "until_event" cuts it at the next suction-cup change; ``cameras``: the
    robot's cameras a multi-camera policy reads, each recorded and shown to it). Returns the data as a
    demonstration dict plus the episodes' results. Each episode runs on a simulator of its own, after
    ``reseed(episode index)`` (a policy's sampling seed), so with ``workers`` > 1 processes
    (:func:`hybridvla_ros.sim.parallel.run_episodes`; ``predict`` and ``reseed`` must then pickle, as
    :class:`hybridvla_ros.model.runner.SeededPredictor`'s methods do) the data are the same as with one.
    Raises ValueError for non-positive counts."""
    for name, value in (("episodes", episodes), ("image_size", image_size), ("record_every", record_every)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    seeds = np.random.SeedSequence(seed + DAGGER_SEED_OFFSET).generate_state(episodes)
    run_one = _DaggerEpisode(predict, reseed, params, buffer_config, limits, max_s, image_size, seed, record_every,
                             chunk_labels, tuple(cameras), tuple(int(x) for x in seeds))
    done = run_episodes(run_one, episodes, workers)
    demos = {  # every episode records its first step, so none of these is empty
        **{key: np.stack([x for rec, _ in done for x in rec[key]])
           for key in ("images", "proprio", "state", "actions")},
        "episode": np.concatenate([np.full(len(rec["proprio"]), e, dtype=np.int32)
                                   for e, (rec, _) in enumerate(done)]),
        "embodiment": params.embodiment,
        "instruction": params.instruction,
        "control_period_s": float(params.control_period_s),
    }
    return PolicyStates(demos=demos, results=[result for _, result in done])


@dataclass(frozen=True)
class _DaggerEpisode:
    """One episode of :func:`record_policy_states` (a class, not a closure: it pickles into a worker)."""

    predict: Any
    reseed: Callable[[int], None] | None
    params: Any
    buffer_config: Any
    limits: Any
    max_s: float
    image_size: int
    seed: int
    record_every: int
    chunk_labels: str
    cameras: tuple[str, ...]
    seeds: tuple[int, ...]

    def __call__(self, e: int) -> tuple[dict[str, list[np.ndarray]], RolloutResult]:
        params, cameras = self.params, self.cameras
        width, height = int(getattr(params, "image_width", 160)), int(getattr(params, "image_height", 120))
        anchor = str(getattr(params, "camera_name", ""))
        state_joints = tuple(getattr(params, "state_joints", ()))
        sim = make_sim(params, width, height, seed=self.seed, physics=getattr(params, "physics", "kinematic"),
                       scene=getattr(params, "scene", "nominal"))
        rec: dict[str, list[np.ndarray]] = {"images": [], "proprio": [], "state": [], "actions": []}
        steps = itertools.count()

        def observe(s: Simulator) -> None:
            if next(steps) % self.record_every == 0:
                view = render_cameras(s, cameras, anchor)
                rec["images"].append(resize_views(view, self.image_size))  # ([K,] S, S, 3) uint8
                rec["proprio"].append(np.asarray(s.positions, dtype=np.float32))  # (D,)
                rec["state"].append(state_vector(s, state_joints).astype(np.float32))  # (E,)
                rec["actions"].append(expert_chunk(s, params.chunk_size, until_event=self.chunk_labels == "until_event")
                                      .astype(np.float32))  # (T, D)

        if self.reseed is not None:
            self.reseed(e)
        sim.reset(seed=self.seeds[e])
        result = rollout(sim, self.predict, self.buffer_config, self.limits, self.max_s, params.success_tolerance_m,
                         observe=observe, state_joints=state_joints,
                         render=lambda s: render_cameras(s, cameras, anchor))
        return rec, result


def merge_demonstrations(first: Mapping[str, Any], then: Mapping[str, Any]) -> dict[str, Any]:
    """One demonstration dict holding ``first``'s examples, then ``then``'s, with ``then``'s
    episodes renumbered to follow ``first``'s (so a split that holds out the LAST episodes
    holds out ``then``'s). Raises ValueError when they are of different embodiments,
    instructions, control periods or shapes."""
    a: dict[str, Any] = validate_demonstrations(dict(first))
    b: dict[str, Any] = validate_demonstrations(dict(then))
    for key in ("embodiment", "instruction", "control_period_s"):
        if a[key] != b[key]:
            raise ValueError(f"merge_demonstrations: {key} differs: {a[key]!r} and {b[key]!r}")
    for key in ("images", "proprio", "state", "actions"):
        if a[key].shape[1:] != b[key].shape[1:]:
            raise ValueError(f"merge_demonstrations: {key} shapes differ: {a[key].shape} and {b[key].shape}")
    offset = int(a["episode"].max()) + 1 if len(a["episode"]) else 0
    start = int(b["episode"].min()) if len(b["episode"]) else 0
    out: dict[str, Any] = {k: np.concatenate([a[k], b[k]]) for k in ("images", "proprio", "state", "actions")}
    out["episode"] = np.concatenate([a["episode"], b["episode"] - start + offset]).astype(np.int32)
    for key in ("embodiment", "instruction", "control_period_s"):
        out[key] = a[key]
    return out


@dataclass(frozen=True)
class DaggerConfig:
    """The DAgger rounds :func:`dagger` runs."""

    rounds: int                 # rounds of collection + training (0: only measure the policy)
    episodes: int = 20          # closed-loop episodes per embodiment and round
    train_steps: int = 500      # optimizer steps after each round, all embodiments together
    keep: str = "best"          # "best": the round with the best closed-loop success; "last": the last one
    chunk_labels: str = "full"  # the expert's labels: as the demonstrations' (sim.demos.CHUNK_LABELS)
    workers: int = 1            # processes the closed-loop episodes run on (sim.parallel.run_episodes)

    def __post_init__(self) -> None:
        if self.keep not in DAGGER_KEEP:
            raise ValueError(f"keep: one of {DAGGER_KEEP}, got {self.keep!r}")
        if self.chunk_labels not in CHUNK_LABELS:
            raise ValueError(f"chunk_labels: one of {CHUNK_LABELS}, got {self.chunk_labels!r}")
        if self.rounds < 0:
            raise ValueError(f"rounds: must be >= 0, got {self.rounds!r}")
        for name in ("episodes", "train_steps", "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)!r}")


def dagger(result: TrainResult, demos: list[dict[str, Any]], specs: Sequence[EmbodimentSpec], params: Sequence[Any],
           config_dir: str | os.PathLike[str], rounds: DaggerConfig, train_config: TrainConfig, *,
           out_dir: str | os.PathLike[str] | None, progress: bool = False,
           extra_log: Mapping[str, Any] | None = None) -> TrainResult:
    """``rounds.rounds`` DAgger rounds on ``result.policy``: each runs ``rounds.episodes``
    closed-loop episodes per embodiment (``params``: SimRobotParams, in ``specs`` order; the
    control path from ``config_dir/<embodiment>.yaml``) through the deployed control path,
    adds the visited states with the expert's labels to that embodiment's data (``demos`` is
    extended in place) and trains ``rounds.train_steps`` more steps with ``train_config``'s
    optimizer settings; a last collection measures the final policy. Returns, with the
    checkpoint written to ``out_dir``, the policy of the round ``rounds.keep`` names:
    ``"last"``, or ``"best"`` (Ross et al. keep the best policy on validation: here the highest
    closed-loop success over the embodiments in the round's own collection, then the lowest
    median final error; the later round on a tie). ``log["dagger"]`` has per round and
    embodiment the closed-loop success rate and median final task error of the policy that
    collected, and ``log["dagger_kept_round"]`` the round returned."""
    seed = train_config.seed
    curve: list[dict[str, Any]] = []
    scored: list[tuple[float, float, int, TrainResult]] = []  # (success, -median error, round, result)
    paths = {p.embodiment: control_path(str(Path(config_dir) / f"{p.embodiment}.yaml")) for p in params}
    for rnd in range(rounds.rounds + 1):
        point: dict[str, Any] = {"round": rnd}
        for i, p in enumerate(params):
            policy = SeededPredictor(result.policy, result.config, p.embodiment, p.instruction, seed + rnd)
            states = record_policy_states(policy.predict, p, *paths[p.embodiment], rounds.episodes,
                                          max(DAGGER_EPISODE_S[p.physics],
                                              default_steps_per_episode(p) * p.control_period_s),
                                          result.config.image_size,
                                          seed=seed + rnd, record_every=DAGGER_RECORD_EVERY,
                                          chunk_labels=rounds.chunk_labels,
                                          cameras=result.config.embodiment(p.embodiment).cameras,
                                          workers=rounds.workers,
                                          reseed=policy.reseed)
            point[p.embodiment] = {"success_rate": states.success_rate,
                                   "final_error_m_median": float(np.median([r.final_error_m for r in states.results])),
                                   "states": len(states.demos[DEMO_PROPRIO])}
            if progress:
                print(f"dagger round {rnd}: {p.embodiment} closed-loop success {states.success_rate:.2f}, median "
                      f"final error {point[p.embodiment]['final_error_m_median']:.3f} m", file=sys.stderr, flush=True)
            if rnd < rounds.rounds:
                # the demonstrations' held-out episodes stay last
                demos[i] = merge_demonstrations(states.demos, demos[i])
        curve.append(point)
        per_robot = [point[p.embodiment] for p in params]
        scored.append((float(np.mean([r["success_rate"] for r in per_robot])),
                       -float(np.mean([r["final_error_m_median"] for r in per_robot])), rnd, result))
        if rnd == rounds.rounds:
            break
        steps = result.log["steps"]
        train_time = result.log["train_time_s"]
        round_config = dataclasses.replace(train_config, train_steps=rounds.train_steps,
                                           warmup_steps=DAGGER_WARMUP_STEPS, seed=seed + 1 + rnd)
        expert = result.log["expert"]  # the merged data no longer say how the expert did: keep the demonstrations'
        result = train(demos, specs, round_config, init_policy=result.policy, progress=progress, extra_log=extra_log)
        result.log["expert"] = expert
        result.log["steps"] = {k: steps[k] + result.log["steps"][k] for k in steps}  # one loss curve for all
        result.log["train_time_s"] += train_time
    if rounds.keep == "best":
        kept_round, result = max(scored, key=lambda item: item[:3])[2:]
    else:
        kept_round = rounds.rounds
    result.log["dagger"] = curve
    result.log["dagger_kept_round"] = kept_round
    return write_outputs(result, demos, specs, out_dir, seed) if out_dir is not None else result
