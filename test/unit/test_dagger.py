"""DAgger data: states the policy visits, labelled by the scripted expert from those states."""
from __future__ import annotations

import numpy as np
import pytest

from hybridvla_ros.launch_description import params_file_for
from hybridvla_ros.model.dagger import DaggerConfig, merge_demonstrations, record_policy_states
from hybridvla_ros.model.demo_data import load_embodiment, split_episodes
from hybridvla_ros.sim.demos import record_demonstrations, validate_demonstrations
from hybridvla_ros.sim.registry import make_sim
from hybridvla_ros.sim.rollout import control_path, expert_chunk, expert_predictor


def test_states_a_still_policy_visits_are_labelled_with_the_way_to_the_goal() -> None:
    params = load_embodiment("config", "franka", physics="kinematic")
    ab, limits = control_path(params_file_for("franka"))
    hold = lambda _img, q, _state: (np.repeat(q[None], params.chunk_size, 0), 0.5)  # noqa: E731
    states = record_policy_states(hold, params, ab, limits, episodes=2, max_s=0.4, image_size=32, seed=1,
                                  record_every=2)
    demos = validate_demonstrations(states.demos)
    n = len(demos["proprio"])
    assert n == 2 * 10  # 0.4 s at 50 Hz = 20 control steps, every 2nd recorded, 2 episodes
    assert demos["images"].shape == (n, 32, 32, 3) and demos["actions"].shape == (n, params.chunk_size, 7)
    assert demos["state"].shape == (n, 1)  # franka observes its suction cup (state_joints)
    assert sorted(set(demos["episode"].tolist())) == [0, 1] and states.success_rate == 0.0
    # the policy held still, yet every label moves: the expert's way from where the robot stands
    moves = np.abs(demos["actions"][:, -1] - demos["proprio"]).max(1)
    assert np.all(moves > 1e-3)
    # the label is exactly the expert's chunk from that state
    sim = make_sim(params, 160, 120, seed=0, physics="kinematic")
    sim.reset(seed=int(np.random.SeedSequence(1 + 1_000_003).generate_state(2)[0]))
    np.testing.assert_allclose(demos["actions"][0], expert_chunk(sim, params.chunk_size), atol=1e-5)


@pytest.mark.parametrize("embodiment", ["franka", "aloha"])
def test_states_are_labelled_on_the_physics_robots(embodiment: str) -> None:
    """DAgger on the MuJoCo robots (what `hybridvla train --dagger-rounds` and the transfer study
    run): the expert's label comes from a clone of the simulator, which ALOHA lacked."""
    params = load_embodiment("config", embodiment)
    assert params.physics == "mujoco"
    ab, limits = control_path(params_file_for(embodiment))
    hold = lambda _img, q, _state: (np.repeat(q[None], params.chunk_size, 0), 0.5)  # noqa: E731
    states = record_policy_states(hold, params, ab, limits, episodes=1, max_s=0.2, image_size=16, seed=1,
                                  record_every=5)
    demos = validate_demonstrations(states.demos)
    assert demos["actions"].shape == (2, params.chunk_size, len(params.joint_names))
    assert np.all(np.abs(demos["actions"][:, -1] - demos["proprio"]).max(1) > 1e-3)  # the expert moves on


def test_the_expert_as_policy_succeeds_and_its_episodes_stop_at_success(monkeypatch) -> None:
    import hybridvla_ros.model.dagger as dagger

    params = load_embodiment("config", "franka", physics="kinematic")
    ab, limits = control_path(params_file_for("franka"))
    made = {}

    def make_and_keep(*args, **kwargs):  # the expert predicts for the simulator the collection runs
        made["sim"] = make_sim(*args, **kwargs)
        return made["sim"]

    monkeypatch.setattr(dagger, "make_sim", make_and_keep)
    expert = lambda img, q, x: expert_predictor(made["sim"], params.chunk_size)(img, q, x)  # noqa: E731
    states = record_policy_states(expert, params, ab, limits, episodes=2, max_s=8.0, image_size=16)
    assert states.success_rate == 1.0
    assert all(r.duration_s < 8.0 for r in states.results)


def test_merge_puts_the_second_set_after_the_first_so_it_is_held_out() -> None:
    params = load_embodiment("config", "hello", physics="kinematic")
    a = record_demonstrations(params, 2, 5, image_size=16, seed=0)
    b = record_demonstrations(params, 3, 5, image_size=16, seed=1)
    merged = merge_demonstrations(a, b)
    assert len(merged["proprio"]) == 25
    assert merged["episode"].tolist() == [0] * 5 + [1] * 5 + [2] * 5 + [3] * 5 + [4] * 5
    np.testing.assert_array_equal(merged["images"][10:], b["images"])
    _train, held = split_episodes(merged["episode"], 0.2)
    assert set(merged["episode"][held].tolist()) == {4}


def test_merge_refuses_data_of_another_robot() -> None:
    a = record_demonstrations(load_embodiment("config", "hello", physics="kinematic"), 1, 3, image_size=16)
    b = record_demonstrations(load_embodiment("config", "franka", physics="kinematic"), 1, 3, image_size=16)
    with pytest.raises(ValueError, match="embodiment differs"):
        merge_demonstrations(a, b)


def test_bad_counts_are_refused() -> None:
    params = load_embodiment("config", "franka", physics="kinematic")
    ab, limits = control_path(params_file_for("franka"))
    with pytest.raises(ValueError, match="episodes"):
        record_policy_states(lambda i, q, x: (q[None], 1.0), params, ab, limits, episodes=0, max_s=1.0, image_size=16)


@pytest.mark.parametrize("fields, message", [
    ({"rounds": 1, "keep": "worst"}, "keep"),
    ({"rounds": -1}, "rounds"),
    ({"rounds": 1, "episodes": 0}, "episodes"),
])
def test_dagger_settings_are_checked(fields, message) -> None:
    with pytest.raises(ValueError, match=message):
        DaggerConfig(**fields)
