"""The README's studies: numbers they report come out of real runs of our parts."""
from __future__ import annotations

import json

import numpy as np
import pytest

from hybridvla_ros.params.embodiment import EMBODIMENTS
from hybridvla_ros.studies import main as study_main
from hybridvla_ros.studies.safety_stress import REGIMES, stress_embodiment


@pytest.mark.parametrize("regime", REGIMES)
@pytest.mark.parametrize("embodiment", EMBODIMENTS)
def test_random_actions_never_leave_the_limits(embodiment: str, regime: str) -> None:
    r = stress_embodiment(embodiment, n=300, seed=1, regime=regime)
    assert r["violations_after_filter"] == {"position": 0, "velocity": 0, "acceleration": 0}
    assert r["modified_fraction"] > 0.5  # random requests are mostly unsafe as asked
    assert r["limit_fraction"]["nan"] > 0 and r["limit_fraction"]["shape"] > 0


def test_safety_study_writes_json_and_plot(tmp_path, capsys) -> None:
    out = tmp_path / "s"
    assert study_main(["safety", "--n", "100", "--embodiments", "franka", "hello", "--out", str(out)]) == 0
    rows = json.loads((out / "safety_stress.json").read_text())
    assert {(r["embodiment"], r["regime"]) for r in rows} == {(e, g) for e in ("franka", "hello") for g in REGIMES}
    assert (out / "safety_stress.png").stat().st_size > 10_000
    assert "violations after the filter" in capsys.readouterr().out


def test_unknown_study_is_refused() -> None:
    assert study_main(["nope"]) == 2


def test_transfer_study_judges_a_policy_in_closed_loop_on_the_physics_robot(tiny_checkpoint) -> None:
    """The closed-loop judge of the transfer study: a trained policy driving the MuJoCo Franka through
    the real action buffer and safety filter, fresh scenes, numbers out (the tiny session policy
    is not expected to place the cube; the judge must run and report)."""
    from hybridvla_ros.model.checkpoint import load_checkpoint
    from hybridvla_ros.studies.transfer import policy_success, sim_params

    assert sim_params("franka").physics == "mujoco"
    policy, config = load_checkpoint(tiny_checkpoint)
    r = policy_success(policy, config, "franka", episodes=2, seed=10_000, max_s=1.0)
    assert r["episodes"] == 2 and 0.0 <= r["success_rate"] <= 1.0
    assert 0.0 < r["final_error_m_median"] < 1.0  # the cube is somewhere on the table


def test_transfer_study_trains_every_model_with_dagger_on_the_same_budget(tmp_path, capsys) -> None:
    """The study end to end on two fast robots: a shared model and one per robot, each trained and
    then given DAgger rounds, judged on held-out data and in closed loop; the JSON holds each
    model's DAgger curve per robot, and every model saw the same episodes per robot."""
    out = tmp_path / "transfer"
    assert study_main(["transfer", "--embodiments", "hello", "leap", "--episodes", "4", "--steps-per-episode", "20",
                       "--min-expert-success", "0", "--train-steps", "3", "--dagger-rounds", "1",
                       "--dagger-episodes", "2",
                       "--dagger-train-steps", "2", "--eval-episodes", "1", "--max-s", "0.5", "--threads", "1",
                       "--demos", str(tmp_path / "demos"), "--out", str(out)]) == 0
    runs = json.loads((out / "transfer.json").read_text())["runs"]
    assert set(runs) == {"shared", "hello alone", "leap alone"}
    assert set(runs["shared"]["robots"]) == {"hello", "leap"}
    for label, robots in (("shared", ("hello", "leap")), ("hello alone", ("hello",)), ("leap alone", ("leap",))):
        curve = runs[label]["dagger"]
        assert [p["round"] for p in curve] == [0, 1]  # the trained policy's collection, then the final one's
        for robot in robots:
            assert all(p[robot]["states"] > 0 and 0.0 <= p[robot]["success_rate"] <= 1.0 for p in curve)
            r = runs[label]["robots"][robot]
            assert r["episodes"] == 1 and r["heldout_error_vs_hold_still"] > 0
        assert runs[label]["dagger_kept_round"] in (0, 1)
        assert (out / "checkpoints" / label.replace(" ", "_") / "model.safetensors").is_file()
    assert (out / "transfer.png").stat().st_size > 10_000
    assert "DAgger rounds' success" in capsys.readouterr().out


def test_transfer_study_refuses_a_negative_dagger_round_count() -> None:
    with pytest.raises(SystemExit) as exc:
        study_main(["transfer", "--dagger-rounds", "-1"])
    assert exc.value.code == 2


def test_policy_study_judges_a_checkpoint_on_fresh_scenes_and_summarizes_with_intervals(tiny_checkpoint,
                                                                                         tmp_path) -> None:
    """The policy-quality study's judge: a checkpoint in closed loop on the MuJoCo Franka, each
    episode's outcome, end phase and grip / release errors; the summary has Wilson intervals
    and the failures counted by the phase they ended in."""
    from hybridvla_ros.model.checkpoint import load_checkpoint
    from hybridvla_ros.studies.policy_quality import closed_loop_episodes, summarize

    policy, config = load_checkpoint(tiny_checkpoint)
    episodes = closed_loop_episodes(policy, config, "franka", episodes=2, seed=10_000, max_s=0.5)
    assert [e["seed"] for e in episodes] == [10_000, 10_001]
    from hybridvla_ros.sim.mujoco_franka_expert import PHASES
    assert all(e["end_phase"] in PHASES and 0.0 < e["final_error_m"] < 1.0 for e in episodes)
    s = summarize(episodes)
    assert s["episodes"] == 2 and s["successes"] == sum(e["success"] for e in episodes)
    assert sum(s["failures_by_end_phase"].values()) == 2 - s["successes"]
    expert = closed_loop_episodes(None, None, "franka", episodes=1, seed=10_000, max_s=8.0)[0]
    assert expert["success"] and expert["end_phase"] in ("retreat", "done"), expert  # it does the task
    assert len(expert["grip_offsets_m"]) == 1 and expert["grip_offsets_m"][0] < 0.005  # aims at the centre
    cup_x, cup_y, cube_x, cube_y = expert["grip_points_m"][0]
    assert np.hypot(cup_x - cube_x, cup_y - cube_y) == pytest.approx(expert["grip_offsets_m"][0])
    assert np.hypot(cube_x - expert["cube_start_m"][0], cube_y - expert["cube_start_m"][1]) < 0.005
    made = [{"success": k < 45, "final_error_m": 0.01, "end_phase": "done" if k < 45 else "descend",
             "grip_offsets_m": [0.002], "release_errors_m": [0.01] if k < 45 else []} for k in range(50)]
    s = summarize(made)
    assert s["successes"] == 45 and s["failures_by_end_phase"] == {"descend": 5}
    assert 0.78 < s["wilson95"][0] < 0.80 and 0.95 < s["wilson95"][1] < 0.97  # 45/50: 0.787-0.957
    assert s["gripped"] == 50 and s["released"] == 45 and s["grip_offset_m_median"] == 0.002
    # Does the grip follow the cube? A cup that goes where the cube is tracks it (1), one that grips at
    # one place whatever the scene does not (0); with cubes spread over a box, that one place is
    # on average the blind offset away.
    from hybridvla_ros.studies.policy_quality import blind_offset, grip_tracking
    cubes = np.random.default_rng(0).uniform([0.46, -0.19], [0.54, -0.11], (50, 2))
    follows = [{"grip_points_m": [[*(c + 0.003), *c]], "cube_start_m": list(c)} for c in cubes]
    fixed = [{"grip_points_m": [[0.5, -0.15, *c]], "cube_start_m": list(c)} for c in cubes]
    assert grip_tracking(follows) == pytest.approx(1.0) and grip_tracking(fixed) == pytest.approx(0.0, abs=1e-12)
    assert grip_tracking(follows[:4]) is None  # too few grips to say
    assert 0.02 < blind_offset(fixed) < 0.035  # an 8 cm box: about 3 cm from its middle
    from hybridvla_ros.studies.policy_quality import _plot
    all_placed = summarize([{**m, "success": True} for m in made])  # Wilson's high end: 1 - 1e-16
    _plot([{"variant": "expert", "train_seed": "-", **all_placed}, {"variant": "v", "train_seed": 0, **s}],
          tmp_path / "policy.png")
    assert (tmp_path / "policy.png").stat().st_size > 0
