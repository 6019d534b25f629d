"""SafetyFilter.trajectory and core.command's plan helpers: the points a JointTrajectory
controller times itself (issue 17 item 3), each as checked as a real command, ending at rest;
and tick(on_schedule=True) for a caller that sends once per period at its own deadlines."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridvla_ros.core.command import plan_targets, trajectory_velocities
from hybridvla_ros.core.safety import SafetyFilter, SafetyLimits

DT_S = 0.01
REL_TOL = 1e-9


def make_limits(dim: int, seed: int = 0) -> SafetyLimits:
    rng = np.random.default_rng(seed)
    return SafetyLimits(position_min=-1.0 - rng.uniform(0.0, 1.0, dim), position_max=1.0 + rng.uniform(0.0, 1.0, dim),
                        max_velocity=rng.uniform(0.5, 2.0, dim), max_acceleration=rng.uniform(2.0, 10.0, dim),
                        max_force_n=50.0, max_torque_nm=10.0, watchdog_timeout_s=0.2)


def make_filter(dim: int, seed: int = 0) -> SafetyFilter:
    filt = SafetyFilter(make_limits(dim, seed), DT_S)
    filt.update_measured(np.zeros(dim), 0.0)
    return filt


def check_points(filt: SafetyFilter, q_before: np.ndarray, v_before: np.ndarray, points: np.ndarray,
                 scale: float = 1.0) -> None:
    """Every point inside the bounds, under vmax*scale and amax from the point before, and
    the last one at rest (stopping there is within the acceleration limit)."""
    lim = filt.limits
    q = np.vstack([q_before[None, :], points])
    v = np.vstack([v_before[None, :], np.diff(q, axis=0) / DT_S])  # (m + 1, D)
    tol = 1e-12
    assert (points >= lim.position_min - tol).all() and (points <= lim.position_max + tol).all()
    assert (np.abs(v[1:]) <= lim.max_velocity * scale * (1 + REL_TOL) + tol).all()
    assert (np.abs(np.diff(v, axis=0)) <= lim.max_acceleration * DT_S * (1 + REL_TOL) + tol).all()
    # The last point is at rest: its own velocity to 0 is one more step within the limit.
    assert (np.abs(v[-1]) <= lim.max_acceleration * DT_S * (1 + REL_TOL) + tol).all()


def drive(filt: SafetyFilter, dim: int, target: float, periods: int) -> float:
    t = 0.0
    for k in range(periods):
        t = k * DT_S
        filt.filter(np.full(dim, target), t)
    return t


@pytest.mark.parametrize("dim", (3, 7, 24))
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.sampled_from([1.0, 0.3]), periods=st.integers(0, 40),
       n=st.integers(0, 30), spread=st.sampled_from([0.01, 0.2, 3.0]))
def test_every_point_of_a_trajectory_satisfies_the_limits_and_the_last_is_at_rest(
        dim: int, seed: int, scale: float, periods: int, n: int, spread: float) -> None:
    rng = np.random.default_rng(seed)
    filt = make_filter(dim, seed)
    filt.set_velocity_scale(scale)
    t = drive(filt, dim, 0.9, periods)  # moving (or not yet) toward a far target
    res = filt.filter(rng.uniform(-2, 2, dim), t + DT_S)
    assert res.command is not None
    q_before, v_before = res.command, filt.last_velocity
    plan = np.cumsum(rng.normal(scale=spread, size=(n, dim)), axis=0) + res.command  # any plan, jumps too
    stats = filt.stats
    points = filt.trajectory(plan)
    check_points(filt, q_before, v_before, points, scale)
    assert points.shape[0] <= n + int(np.ceil((filt.limits.max_velocity / (filt.limits.max_acceleration * DT_S))
                                              .max())) + 2
    assert filt.stats == stats, "a trajectory is a forecast: no counter moves"
    np.testing.assert_array_equal(filt.last_command, q_before)
    np.testing.assert_array_equal(filt.last_velocity, v_before)


def test_a_feasible_plan_is_sent_as_it_is_and_the_next_real_command_matches_its_point() -> None:
    dim = 3
    filt = make_filter(dim)
    vel = np.full(dim, 0.2)  # rad/s, well inside every limit

    def ref(t_s: float) -> np.ndarray:  # accelerates at 0.4 rad/s^2 for 0.5 s, then 0.2 rad/s
        return vel * (t_s**2 / 1.0 if t_s < 0.5 else t_s - 0.25)

    t = 0.0
    for k in range(80):
        t = k * DT_S
        assert not filt.filter(ref(t), t).modified
    res = filt.filter(ref(t + DT_S), t + DT_S)
    assert not res.modified
    plan = np.array([ref(t + DT_S * (j + 2)) for j in range(5)])  # (5, D) the next five targets
    points = filt.trajectory(plan)
    np.testing.assert_allclose(points[:5], plan, atol=1e-12)
    # The plan ends moving: the points go on braking to rest (never a moving last point).
    assert points.shape[0] > 5
    steps = np.diff(points[4:], axis=0)
    assert (np.abs(np.diff(np.vstack([plan[4] - plan[3], steps]), axis=0))
            <= filt.limits.max_acceleration * DT_S**2 * (1 + REL_TOL)).all()
    # The real command for the plan's first target is the trajectory's first point.
    nxt = filt.filter(plan[0], t + 2 * DT_S)
    np.testing.assert_allclose(nxt.command, points[0], atol=1e-12)


def test_without_a_plan_the_points_brake_to_rest_and_at_rest_there_are_none() -> None:
    dim = 7
    filt = make_filter(dim)
    drive(filt, dim, 0.9, 30)
    assert np.abs(filt.last_velocity).max() > 0.1
    points = filt.trajectory()
    assert points.shape[0] >= 2
    check_points(filt, filt.last_command, filt.last_velocity, points)
    # At rest (before any motion) nothing follows the command.
    still = make_filter(dim)
    still.filter(np.zeros(dim), 0.0)
    assert still.trajectory(np.zeros((4, dim))).shape == (0, dim)


def test_a_plan_row_that_is_not_finite_or_the_wrong_shape_ends_the_plan() -> None:
    dim = 3
    filt = make_filter(dim)
    drive(filt, dim, 0.9, 30)
    q0, v0 = filt.last_command, filt.last_velocity
    good = np.full((2, dim), 0.9)
    bad = np.vstack([good, np.full((1, dim), np.nan), np.full((3, dim), 0.9)])
    braked = filt.trajectory(good)
    np.testing.assert_array_equal(filt.trajectory(bad), braked)
    check_points(filt, q0, v0, braked)
    for junk in (np.zeros((2, dim + 1)), np.zeros(dim), "junk"):
        np.testing.assert_array_equal(filt.trajectory(junk), filt.trajectory())  # type: ignore[arg-type]


def test_no_trajectory_while_the_estop_is_latched_or_before_a_joint_state() -> None:
    filt = make_filter(3)
    drive(filt, 3, 0.9, 20)
    filt.update_wrench(np.array([1e3, 0, 0]), np.zeros(3), 0.0)
    assert filt.trajectory(np.zeros((3, 3))).shape == (0, 3)
    assert SafetyFilter(make_limits(3), DT_S).trajectory(np.zeros((3, 3))).shape == (0, 3)


def test_on_schedule_tick_brakes_at_the_first_deadline_without_an_action() -> None:
    dim = 3
    filt = make_filter(dim)
    t = drive(filt, dim, 0.9, 8)  # moving, slowly enough to stop before the watchdog
    v = filt.last_velocity
    assert np.count_nonzero(v) == dim
    assert filt.tick(t + DT_S) is None, "left alone, tick waits 1.25 periods"
    res = filt.tick(t + DT_S, on_schedule=True)
    assert res is not None and res.holding and res.limits_hit == ("stream",)
    assert (np.abs(filt.last_velocity - v) <= filt.limits.max_acceleration * DT_S * (1 + REL_TOL)).all()
    assert filt.tick(t + 1.4 * DT_S, on_schedule=True) is None, "one command per period"
    k = 2
    while np.count_nonzero(filt.last_velocity):  # braking to rest, one command per deadline
        res = filt.tick(t + k * DT_S, on_schedule=True)
        assert res is not None and "stream" in res.limits_hit
        k += 1
        assert k < 15
    rest = filt.last_command
    # At rest (before the watchdog) a deadline holds the rest point: the stream stays periodic.
    assert filt.tick(t + k * DT_S) is None, "left alone, tick is quiet at rest"
    for j in range(3):
        res = filt.tick(t + (k + j) * DT_S, on_schedule=True)
        assert res is not None and res.holding and res.limits_hit == ("stream",)
        np.testing.assert_array_equal(res.command, rest)


# ------------------------------------------------------------ core.command
def test_plan_targets_takes_the_preview_as_it_is_at_the_control_period() -> None:
    action = np.array([0.0, 1.0])
    preview = np.array([[0.1, 1.1], [0.2, 1.2], [0.3, 1.3]])
    out = plan_targets(action, preview.reshape(-1), 0.02, 0.02, 2)
    np.testing.assert_array_equal(out, preview[:2])
    assert plan_targets(action, [], 0.02, 0.02, 5).shape == (0, 2)
    assert plan_targets(action, preview.reshape(-1), 0.02, 0.02, 0).shape == (0, 2)


def test_plan_targets_resamples_another_period_within_the_plan() -> None:
    action = np.zeros(1)
    preview = np.array([1.0, 2.0, 3.0, 4.0])  # targets at 0.04, 0.08, 0.12, 0.16 s
    out = plan_targets(action, preview, 0.04, 0.02, 100)
    np.testing.assert_allclose(out[:, 0], 0.5 * np.arange(1, 9))  # 0.02 .. 0.16 s, linear
    out = plan_targets(action, preview, 0.01, 0.02, 100)
    np.testing.assert_allclose(out[:, 0], [2.0, 4.0])


@pytest.mark.parametrize("preview, period, match", [
    ([1.0, 2.0, 3.0], 0.02, "whole number of rows"),
    ([1.0, float("nan")], 0.02, "non-finite"),
    ([1.0, 2.0], 0.0, "preview_period_s"),
    ([1.0, 2.0], float("nan"), "preview_period_s"),
])
def test_plan_targets_rejects_a_malformed_preview(preview: list[float], period: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        plan_targets(np.zeros(2), preview, period, 0.02, 5)


def test_trajectory_velocities_are_central_differences_ending_at_rest() -> None:
    prev = np.zeros(2)
    points = np.array([[0.1, 0.0], [0.3, 0.0], [0.4, 0.1]])
    v = trajectory_velocities(prev, points, 0.1)
    np.testing.assert_allclose(v, [[1.5, 0.0], [1.5, 0.5], [0.0, 0.0]])
    np.testing.assert_array_equal(trajectory_velocities(prev, points[:1], 0.1), np.zeros((1, 2)))
