"""DAgger (Ross, Gordon and Bagnell 2011): the scripted expert labels the states the policy visits.

A policy cloned from the expert's demonstrations makes small errors, and in closed loop
they carry it into states the demonstrations never showed (on the MuJoCo Franka: 5-10
mrad per chunk, 8 cm off after a second, 0 of 10 cube placements). DAgger runs the
trained policy through the deployed control path (:func:`hybridvla_ros.core.rollout.rollout`:
the real action buffer and safety filter), records every state it visits with the label
the scripted expert gives *from that state* (:func:`hybridvla_ros.core.rollout.expert_chunk`,
the same "next T targets" a demonstration holds), adds them to the data and trains on.
Each round's closed-loop success is the learning curve, measured on the policy that
collected the round's data.

The recorded data use the demonstration format of :mod:`hybridvla_ros.core.demos`, so a
round's data can be saved, replayed and trained on like demonstrations.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from hybridvla_ros.core.demos import validate_demonstrations
from hybridvla_ros.core.image import resize_for_policy
from hybridvla_ros.core.rollout import RolloutResult, expert_chunk, rollout
from hybridvla_ros.core.sims import make_sim, state_vector

__all__ = ["PolicyStates", "record_policy_states", "merge_demonstrations"]

DAGGER_SEED_OFFSET = 1_000_003  # DAgger scenes are drawn from seeds the demonstrations did not use


@dataclass
class PolicyStates:
    """One DAgger collection: the states (with expert labels) and how the episodes went."""

    demos: dict[str, Any]
    results: list[RolloutResult]

    @property
    def success_rate(self) -> float:
        return float(np.mean([r.success for r in self.results])) if self.results else float("nan")


def record_policy_states(predict: Any, params: Any, buffer_config: Any, limits: Any, episodes: int,
                         max_s: float, image_size: int, seed: int = 0, record_every: int = 1) -> PolicyStates:
    """Run ``episodes`` closed-loop episodes of ``predict`` (a rollout Predictor: (image, q) ->
    (chunk, confidence)) on the simulator ``params`` name (SimRobotParams: physics, scene,
    image size) and record every ``record_every``-th control step: the policy's-size image,
    the joint positions and the expert's chunk from that state. Returns the data as a
    demonstration dict plus the episodes' results. Raises ValueError for non-positive counts."""
    for name, value in (("episodes", episodes), ("image_size", image_size), ("record_every", record_every)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    width, height = int(getattr(params, "image_width", 160)), int(getattr(params, "image_height", 120))
    sim = make_sim(params, width, height, seed=seed, physics=getattr(params, "physics", "kinematic"),
                   scene=getattr(params, "scene", "nominal"))
    chunk = params.chunk_size
    images: list[np.ndarray] = []
    proprio: list[np.ndarray] = []
    state: list[np.ndarray] = []
    state_joints = tuple(getattr(params, "state_joints", ()))
    actions: list[np.ndarray] = []
    episode_ids: list[int] = []
    results = []
    seeds = np.random.SeedSequence(seed + DAGGER_SEED_OFFSET).generate_state(episodes)
    for e in range(episodes):  # episodes are sequential on one simulator
        steps = itertools.count()

        def observe(s: Any, e: int = e, steps: Any = steps) -> None:
            if next(steps) % record_every == 0:
                images.append(resize_for_policy(s.render(), image_size))   # (S, S, 3) uint8
                proprio.append(np.asarray(s.positions, dtype=np.float32))  # (D,)
                state.append(state_vector(s, state_joints).astype(np.float32))  # (E,)
                actions.append(expert_chunk(s, chunk).astype(np.float32))  # (T, D)
                episode_ids.append(e)

        sim.reset(seed=int(seeds[e]))
        results.append(rollout(sim, predict, buffer_config, limits, max_s, params.success_tolerance_m,
                               observe=observe, state_joints=state_joints))
    demos = {  # every episode records its first step, so none of these is empty
        "images": np.stack(images),
        "proprio": np.stack(proprio),
        "state": np.stack(state),
        "actions": np.stack(actions),
        "episode": np.asarray(episode_ids, dtype=np.int32),
        "embodiment": params.embodiment,
        "instruction": params.instruction,
        "control_period_s": float(params.control_period_s),
    }
    return PolicyStates(demos=demos, results=results)


def merge_demonstrations(first: Mapping[str, Any], then: Mapping[str, Any]) -> dict[str, Any]:
    """One demonstration dict holding ``first``'s examples, then ``then``'s, with ``then``'s
    episodes renumbered to follow ``first``'s (so a split that holds out the LAST episodes
    holds out ``then``'s). Raises ValueError when they are of different embodiments,
    instructions, control periods or shapes."""
    a, b = validate_demonstrations(dict(first)), validate_demonstrations(dict(then))
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
