"""The in-process control path (buffer + safety filter + simulator) used by studies."""
from __future__ import annotations

import math

import numpy as np
import pytest

from hybridvla_ros.launch_description import params_file_for
from hybridvla_ros.params import from_params, load_node_params
from hybridvla_ros.params.action_buffer import ActionBufferParams
from hybridvla_ros.params.embodiment import EMBODIMENTS
from hybridvla_ros.params.safety_filter import SafetyFilterParams
from hybridvla_ros.sim.kinematic import KinematicSim
from hybridvla_ros.sim.rollout import expert_chunk, expert_predictor, rollout


def setup(embodiment: str, seed: int = 3):
    path = params_file_for(embodiment)
    ab = from_params(ActionBufferParams, load_node_params(path, "action_buffer"))
    sf = from_params(SafetyFilterParams, load_node_params(path, "safety_filter"))
    return KinematicSim(ab, seed=seed), ab, sf


@pytest.mark.parametrize("embodiment", EMBODIMENTS)
def test_the_expert_as_a_chunked_policy_succeeds_through_buffer_and_safety_filter(embodiment: str) -> None:
    sim, ab, sf = setup(embodiment)
    r = rollout(sim, expert_predictor(sim, ab.chunk_size), ab.buffer_config(), sf.safety_limits(), 15.0, 0.02)
    assert r.success and r.final_error_m < 0.02 and r.chunks >= 2 and r.mean_confidence == 1.0


def test_expert_chunk_leaves_the_simulator_alone() -> None:
    sim, ab, _ = setup("franka")
    before = sim.positions
    chunk = expert_chunk(sim, ab.chunk_size)
    assert chunk.shape == (ab.chunk_size, 7)
    np.testing.assert_array_equal(sim.positions, before)
    np.testing.assert_allclose(chunk[0], sim.expert_target())


def test_expert_chunk_on_a_twin_the_caller_owns_steps_that_twin() -> None:
    """on_clone=False (the sim node's worker: the twin is a snapshot) plans the same chunk
    from the twin itself, which ends a chunk ahead."""
    sim, ab, _ = setup("franka")
    twin = sim.clone()
    chunk = expert_chunk(twin, ab.chunk_size, on_clone=False)
    np.testing.assert_array_equal(chunk, expert_chunk(sim, ab.chunk_size))
    assert twin.time_s == pytest.approx(sim.time_s + ab.chunk_size * sim.control_period_s)
    assert not np.array_equal(twin.positions, sim.positions)


def test_a_policy_that_holds_still_fails_and_one_that_says_nan_is_held_safely() -> None:
    sim, ab, sf = setup("franka")
    still = rollout(sim, lambda _img, q, _state: (np.repeat(q[None], ab.chunk_size, 0), 0.9), ab.buffer_config(),
                    sf.safety_limits(), 2.0, 0.02)
    assert not still.success and math.isnan(still.time_to_success_s) and still.final_error_m > 0.02
    sim, ab, sf = setup("franka")
    start = sim.positions
    nan = rollout(sim, lambda _img, q, _state: (np.full((ab.chunk_size, 7), np.nan), 0.0), ab.buffer_config(),
                  sf.safety_limits(), 1.0, 0.02)
    assert not nan.success and nan.chunks == 0  # the buffer rejects every NaN chunk; the robot holds
    assert np.max(np.abs(sim.positions - start)) < 1e-3


def test_bad_durations_are_refused() -> None:
    sim, ab, sf = setup("franka")
    with pytest.raises(ValueError, match="max_s"):
        rollout(sim, expert_predictor(sim, 4), ab.buffer_config(), sf.safety_limits(), 0.0, 0.02)


def test_an_until_event_expert_chunk_holds_the_target_before_the_grip() -> None:
    """Rolled out from just above the cube, the expert's chunk grips part way; until_event stops
    there and holds the last target before the grip, where the full chunk lifts."""
    from hybridvla_ros.launch_description import default_config_dir
    from hybridvla_ros.model.demo_data import load_embodiment
    from hybridvla_ros.sim.registry import make_sim

    p = load_embodiment(default_config_dir(), "franka", "mujoco")
    sim = make_sim(p, 32, 24, seed=0, physics="mujoco")
    sim.reset(seed=5)
    T = p.chunk_size
    for _ in range(400):  # follow the expert until a grip lies inside the next chunk
        full = expert_chunk(sim, T)
        cut = expert_chunk(sim, T, until_event=True)
        if not np.array_equal(full, cut):
            break
        assert not sim.grasped
        sim.command_positions(full[0])
        sim.step(p.control_period_s)
    else:
        raise AssertionError("the expert never gripped")
    k = int(np.flatnonzero(np.abs(full - cut).max(axis=1) > 0)[0])
    assert 0 < k < T and np.array_equal(cut[:k], full[:k]) and np.all(cut[k:] == cut[k - 1])
