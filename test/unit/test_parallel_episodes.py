"""Closed-loop episodes on several processes (hybridvla_ros.sim.parallel): the same results as on one.

The evaluation (``closed_loop_episodes``, ``policy_success``) and the DAgger collection
(``record_policy_states``) run each episode on a simulator of its own with the policy's sampling
seeded per episode, so splitting them over (spawned) workers changes their wall time, not their numbers.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from hybridvla_ros.launch_description import params_file_for
from hybridvla_ros.model.dagger import record_policy_states
from hybridvla_ros.model.demo_data import load_embodiment
from hybridvla_ros.sim.parallel import run_episodes
from hybridvla_ros.sim.rollout import control_path


def _noisy(i: int) -> tuple[int, int, float, int]:
    g = torch.Generator().manual_seed(i)
    x = torch.randn(64, 64, generator=g)
    return i, os.getpid(), float((x @ x).sum()), torch.get_num_threads()


def test_run_episodes_keeps_the_order_and_the_results_and_runs_on_the_workers() -> None:
    one = run_episodes(_noisy, 7, workers=1)
    two = run_episodes(_noisy, 7, workers=2)
    assert [r[0] for r in two] == list(range(7))
    assert [r[2] for r in two] == [r[2] for r in one]
    assert {r[1] for r in one} == {os.getpid()}
    assert os.getpid() not in {r[1] for r in two}  # in the workers (one may take both slices: the first up)
    assert {r[3] for r in one + two} == {1}  # one torch thread each, also here
    assert run_episodes(_noisy, 0, workers=2) == []
    assert len(run_episodes(_noisy, 1, workers=4)) == 1  # never more workers than episodes


def _fails_on_3(i: int) -> int:
    if i == 3:
        raise RuntimeError("episode 3 broke")
    return i


def test_an_episode_that_raises_raises_here_and_bad_counts_are_refused() -> None:
    with pytest.raises(RuntimeError, match="episode 3 broke"):
        run_episodes(_fails_on_3, 5, workers=2)
    for count, workers in ((-1, 1), (2, 0), (2, True)):
        with pytest.raises(ValueError):
            run_episodes(_noisy, count, workers)


def test_the_evaluation_gives_the_same_episodes_on_two_workers(tiny_checkpoint) -> None:
    from hybridvla_ros.model.checkpoint import load_checkpoint
    from hybridvla_ros.studies.policy_quality import closed_loop_episodes

    policy, config = load_checkpoint(tiny_checkpoint)
    one = closed_loop_episodes(policy, config, "franka", episodes=3, seed=10_000, max_s=0.6, workers=1)
    two = closed_loop_episodes(policy, config, "franka", episodes=3, seed=10_000, max_s=0.6, workers=2)
    assert [e["seed"] for e in two] == [10_000, 10_001, 10_002]
    assert one == two


def test_the_dagger_collection_records_the_same_states_on_two_workers(tiny_checkpoint) -> None:
    """The policy samples (its noise is reseeded per episode), the expert labels each state."""
    from hybridvla_ros.model.checkpoint import load_checkpoint
    from hybridvla_ros.model.runner import PolicyRunner, SeededPredictor

    policy, config = load_checkpoint(tiny_checkpoint)
    params = load_embodiment("config", "franka", physics="kinematic")
    ab, limits = control_path(params_file_for("franka"))
    got = []
    for workers in (1, 2):
        seeded = SeededPredictor(policy, config, "franka", params.instruction, 5)
        got.append(record_policy_states(seeded.predict, params, ab, limits, episodes=3, max_s=0.4,
                                        image_size=config.image_size, seed=5, record_every=3, workers=workers,
                                        reseed=seeded.reseed))
    one, two = got
    assert sorted(set(two.demos["episode"].tolist())) == [0, 1, 2]
    for key in ("images", "proprio", "state", "actions", "episode"):
        np.testing.assert_array_equal(one.demos[key], two.demos[key])
    assert [r.final_error_m for r in one.results] == [r.final_error_m for r in two.results]
    # without reseeding the episodes sample on from where the one before left off: another trajectory
    runner = PolicyRunner(policy, config, "franka", seed=5)
    plain = record_policy_states(runner.predictor(params.instruction), params, ab, limits, episodes=3, max_s=0.4,
                                 image_size=config.image_size, seed=5, record_every=3)
    assert not np.array_equal(plain.demos["proprio"], one.demos["proprio"])
