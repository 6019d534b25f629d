"""SafetyFilter: the guarantees a robot user relies on, for D = 3, 7, 14, 24."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridvla_ros.core.safety import REASON_NO_STATE, SafetyFilter, SafetyLimits

DT_S = 0.01
DIMS = (3, 7, 14, 24)
# Relative slack for float rounding in the limit checks.
REL_TOL = 1e-9


def make_limits(dim: int, seed: int = 0, **overrides: object) -> SafetyLimits:
    rng = np.random.default_rng(seed)
    kwargs: dict[str, object] = dict(
        position_min=-1.0 - rng.uniform(0.0, 1.0, dim),
        position_max=1.0 + rng.uniform(0.0, 1.0, dim),
        max_velocity=rng.uniform(0.5, 2.0, dim),
        max_acceleration=rng.uniform(2.0, 10.0, dim),
        max_force_n=50.0,
        max_torque_nm=10.0,
        watchdog_timeout_s=0.2,
    )
    kwargs.update(overrides)
    return SafetyLimits(**kwargs)  # type: ignore[arg-type]


def make_filter(dim: int, seed: int = 0, start: np.ndarray | None = None, **overrides: object) -> SafetyFilter:
    filt = SafetyFilter(make_limits(dim, seed, **overrides), DT_S)
    filt.update_measured(np.zeros(dim) if start is None else start, 0.0)
    return filt


def is_brake(reason: str) -> bool:
    return "braking" in reason


def stop_speed(dist: np.ndarray, amax: np.ndarray) -> np.ndarray:
    """Highest speed from which braking at amax, one period at a time, ends within dist
    (the documented profile, floored at amax*dt so the target is reached)."""
    adt = amax * DT_S
    dist = np.maximum(dist - 0.13 * amax * DT_S**2, 0.0)
    return np.maximum(0.5 * (np.sqrt(adt**2 + 8 * amax * dist) - adt), adt)


def largest_allowed_scale(d: np.ndarray, q0: np.ndarray, target: np.ndarray, prev_target: np.ndarray | None,
                          limits: SafetyLimits, vmax: np.ndarray) -> float:
    """The documented cap on s from velocity and stopping distance (before acceleration)."""
    amax = limits.max_acceleration
    to_bound = np.abs(np.where(d > 0, limits.position_max, limits.position_min) - q0)
    ahead = 0.0 if prev_target is None else np.maximum((target - prev_target) / DT_S * np.sign(d), 0.0)
    cap = np.minimum(vmax, np.minimum(stop_speed(to_bound, amax), ahead + stop_speed(np.abs(d) * DT_S, amax)))
    moving = d != 0
    if not moving.any():
        return 1.0
    return float(min(1.0, (cap[moving] / np.abs(d[moving])).min()))


def accel_feasible(d: np.ndarray, v0: np.ndarray, s_max: float, dv_max: np.ndarray) -> bool:
    """Brute force: is there an s in [0, s_max] with |s*d - v0| <= dv_max everywhere?"""
    s = np.linspace(0.0, s_max, 2001)[:, None]  # (S, 1)
    return bool((np.abs(s * d[None, :] - v0[None, :]) <= dv_max[None, :] * (1 - 1e-6)).all(axis=1).any())


def check_step(q: np.ndarray, q_prev: np.ndarray, v_prev: np.ndarray, limits: SafetyLimits,
               vmax: np.ndarray) -> np.ndarray:
    """Assert velocity and acceleration of one command; return its velocity."""
    v = (q - q_prev) / DT_S
    rounding = np.maximum(1.0, np.abs(q_prev)) / DT_S * 1e-15  # of q differences
    assert (np.abs(v) <= vmax * (1 + REL_TOL) + rounding).all()
    assert (np.abs(v - v_prev) <= limits.max_acceleration * DT_S * (1 + REL_TOL) + 2 * rounding).all()
    return v


# ----------------------------------------------------------------- property
STEP_KINDS = ("smooth", "smooth", "smooth", "continue", "continue", "random", "near_bound", "beyond_bound",
              "huge", "nan", "inf", "wrong_shape", "same")


def expected_brake(q: np.ndarray, v: np.ndarray, dv_max: np.ndarray, pmin: np.ndarray,
                   pmax: np.ndarray) -> np.ndarray:
    """The velocity one period of braking from ``v`` at ``q`` leaves (the filter's rule, restated)."""
    moving = np.abs(v) > 0
    if not moving.any():
        return v
    n = float((np.abs(v[moving]) / dv_max[moving]).max())  # periods the slowest joint needs
    if n <= 1.0:
        return np.zeros_like(v)
    stop = q + v * DT_S * 0.5 * (n + 1.0)
    if (stop < pmin).any() or (stop > pmax).any():
        return v - np.clip(v, -dv_max, dv_max)
    return v * (1.0 - 1.0 / n)


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**16), dim=st.sampled_from(DIMS))
def test_braking_keeps_the_direction_of_motion(seed: int, dim: int) -> None:
    """A stream that stops while moving brakes along the path: every command on the way to rest
    moves all joints in the same proportions as the last step (the tool does not swerve), no
    joint changes its velocity by more than max_acceleration, and it stops in as many periods
    as the joint slowest to stop needs."""
    rng = np.random.default_rng(seed)
    limits = make_limits(dim, seed)
    pmin, pmax = limits.position_min, limits.position_max
    dv_max = limits.max_acceleration * DT_S
    filt = SafetyFilter(limits, DT_S)
    start = 0.5 * (pmin + pmax)
    filt.update_measured(start, 0.0)
    velocity = rng.uniform(-1.0, 1.0, dim) * limits.max_velocity * 0.1  # slow: far from every bound
    q, res = start.copy(), None
    for k in range(1, 40):  # ramp up to that velocity within the limits
        q = q + velocity * DT_S * min(1.0, k / 20.0)
        res = filt.filter(q, k * DT_S)
        assert res.command is not None and not res.holding
    assert res is not None and res.command is not None
    last = res.command
    v_prev = filt.last_velocity.copy()
    direction = v_prev / np.linalg.norm(v_prev)
    periods = int(np.ceil(float((np.abs(v_prev) / dv_max).max())))
    t = 39 * DT_S
    stopped_after = None
    for i in range(periods + 3):
        t += DT_S
        out = filt.tick(t, on_schedule=True)
        assert out is not None and out.command is not None
        step = out.command - last
        v = step / DT_S
        assert np.all(np.abs(v - v_prev) <= dv_max + 1e-12)
        if np.linalg.norm(step) > 0:
            np.testing.assert_allclose(step / np.linalg.norm(step), direction, atol=1e-9)
        elif stopped_after is None:
            stopped_after = i
        last, v_prev = out.command, v
    assert stopped_after is not None and stopped_after <= periods


@settings(max_examples=150, deadline=None)
@given(dim=st.sampled_from(DIMS), seed=st.integers(0, 2**16),
       kinds=st.lists(st.sampled_from(STEP_KINDS), min_size=1, max_size=60),
       velocity_scale=st.sampled_from([1.0, 0.5]))
def test_commands_never_exceed_limits(dim: int, seed: int, kinds: list[str], velocity_scale: float) -> None:
    """Whatever the policy sends (smooth, jumping, beyond the bounds, huge, NaN,
    Inf, wrong length), every command is inside the bounds and within the
    velocity and acceleration limits; a scaled step keeps the requested
    direction; braking happens only when nothing else is feasible."""
    rng = np.random.default_rng(seed)
    limits = make_limits(dim, seed, velocity_scale=velocity_scale)
    pmin, pmax = limits.position_min, limits.position_max
    vmax = limits.max_velocity * velocity_scale
    dv_max = limits.max_acceleration * DT_S  # (D,)
    start = rng.uniform(pmin, pmax)
    filt = SafetyFilter(limits, DT_S)
    filt.update_measured(start, 0.0)
    q_prev, v_prev, prev_target = start.copy(), np.zeros(dim), None
    for k, kind in enumerate(kinds):
        if kind == "smooth":
            action = q_prev + rng.normal(0.0, 0.3, dim) * vmax * DT_S * 3
        elif kind == "continue":  # keep going as the robot moves, a little faster
            action = q_prev + 1.05 * v_prev * DT_S
        elif kind == "random":
            action = rng.uniform(pmin, pmax)
        elif kind == "near_bound":
            action = np.where(rng.random(dim) < 0.5, pmin, pmax) + rng.normal(0, 1e-3, dim)
        elif kind == "beyond_bound":
            action = q_prev.copy()
            j = rng.integers(dim)
            action[j] = pmax[j] + 1.0 if rng.random() < 0.5 else pmin[j] - 1.0
        elif kind == "huge":
            action = rng.choice([-1e300, -1e9, 1e9, 1e300], size=dim)
        elif kind in ("nan", "inf"):
            action = q_prev + rng.normal(0, 0.01, dim)
            action[rng.integers(dim)] = np.nan if kind == "nan" else rng.choice([np.inf, -np.inf])
        elif kind == "wrong_shape":
            action = np.zeros(dim + 1)
        else:
            action = q_prev.copy()
        request = action.copy()
        res = filt.filter(action, k * DT_S)
        np.testing.assert_array_equal(action, request)  # the caller's array is not touched
        q = res.command
        assert q is not None and q.shape == (dim,) and np.isfinite(q).all()
        # Position: always inside the box (the start was inside).
        assert (q >= pmin).all() and (q <= pmax).all()
        if kind in ("nan", "inf", "wrong_shape"):
            assert res.holding and res.modified
            assert res.limits_hit == (("shape",) if kind == "wrong_shape" else ("nan",))
            # A controlled stop: braking along the direction of motion (all joints stop together,
            # the slowest to stop at max deceleration; each at its own maximum near a bound),
            # never a jump to zero velocity.
            v = check_step(q, q_prev, v_prev, limits, vmax)
            assert np.all(np.abs(v) <= np.abs(v_prev) + 1e-12)
            np.testing.assert_allclose(v, expected_brake(q_prev, v_prev, dv_max, pmin, pmax), atol=1e-9)
            q_prev, v_prev, prev_target = q, v, None
            continue
        assert not res.holding
        # Velocity and acceleration: always, braking included.
        v = check_step(q, q_prev, v_prev, limits, vmax)
        target = np.clip(request, pmin, pmax)
        d = (target - q_prev) / DT_S
        if is_brake(res.reason):
            # Braking only when no scaling of the request could respect the limits.
            s_max = largest_allowed_scale(d, q_prev, target, prev_target, limits, vmax)
            assert not accel_feasible(d, v_prev, s_max, dv_max)
        if not res.modified:
            np.testing.assert_array_equal(q, request)
            assert res.limits_hit == () and res.reason == ""
        elif "position" not in res.limits_hit and not is_brake(res.reason):
            # Scaled, not bent: the step points where the policy asked.
            step, asked = q - q_prev, request - q_prev
            if np.linalg.norm(step) > 1e-12:
                cosine = step @ asked / (np.linalg.norm(step) * np.linalg.norm(asked))
                assert cosine == pytest.approx(1.0, abs=1e-9)
            assert np.linalg.norm(step) <= np.linalg.norm(asked) * (1 + REL_TOL)
        q_prev, v_prev, prev_target = q, v, target


# ------------------------------------------------------------- basic shape
@pytest.mark.parametrize("dim", DIMS)
def test_before_joint_state_there_is_no_command(dim: int) -> None:
    filt = SafetyFilter(make_limits(dim), DT_S)
    res = filt.filter(np.zeros(dim), 0.0)
    assert res.command is None and res.holding and res.reason == REASON_NO_STATE


@pytest.mark.parametrize("dim", DIMS)
def test_first_command_starts_from_the_measured_position(dim: int) -> None:
    limits = make_limits(dim)
    measured = np.linspace(-0.5, 0.5, dim)
    filt = SafetyFilter(limits, DT_S)
    filt.update_measured(measured, 0.0)
    res = filt.filter(limits.position_max.copy(), 0.0)  # far away
    # From rest, one period can move at most amax * dt^2 (and vmax * dt).
    reach = np.minimum(limits.max_acceleration * DT_S**2, limits.max_velocity * DT_S)
    assert (np.abs(res.command - measured) <= reach * (1 + REL_TOL)).all()
    assert "acceleration" in res.limits_hit and res.modified


def test_later_joint_states_do_not_move_the_command_and_bad_ones_are_counted() -> None:
    filt = SafetyFilter(make_limits(3), DT_S)
    filt.update_measured(np.array([np.nan, 0.0, 0.0]), 0.0)
    filt.update_measured(np.zeros(4), 0.0)
    filt.update_measured("junk", 0.0)  # type: ignore[arg-type]
    assert filt.last_command is None
    assert filt.stats["measured_rejected"] == 3
    filt.update_measured(np.full(3, 0.1), 0.0)
    filt.update_measured(np.full(3, 0.5), 0.01)
    np.testing.assert_array_equal(filt.last_command, np.full(3, 0.1))
    np.testing.assert_array_equal(filt.last_measured, np.full(3, 0.5))


@pytest.mark.parametrize("dim", DIMS)
def test_small_request_passes_unchanged(dim: int) -> None:
    filt = make_filter(dim)
    action = np.full(dim, 1e-5)
    res = filt.filter(action, 0.0)
    np.testing.assert_array_equal(res.command, action)
    assert not res.modified and res.limits_hit == () and not res.holding and res.reason == ""


def test_velocity_scale_slows_the_robot() -> None:
    limits = make_limits(3)
    target = limits.position_max - 0.01  # far: both reach cruise speed
    top_speed = {}
    for scale in (1.0, 0.5):
        filt = make_filter(3, velocity_scale=scale)
        q, speed = np.zeros(3), np.zeros(3)
        for k in range(600):
            q_new = filt.filter(target, k * DT_S).command
            speed = np.maximum(speed, np.abs(q_new - q) / DT_S)
            q = q_new
        np.testing.assert_allclose(q, target)
        top_speed[scale] = speed
    # The binding joint (the one with the longest way relative to its limit) cruises at its limit.
    assert np.any(np.isclose(top_speed[1.0], limits.max_velocity))
    assert np.any(np.isclose(top_speed[0.5], 0.5 * limits.max_velocity))
    assert (top_speed[0.5] <= 0.5 * limits.max_velocity * (1 + REL_TOL)).all()


def test_one_joint_beyond_its_limit_does_not_freeze_the_others() -> None:
    # A policy closing the gripper "past closed" must not stop the arm.
    limits = make_limits(3)
    filt = make_filter(3)
    q = np.zeros(3)
    for k in range(300):
        res = filt.filter(np.array([0.3, -0.3, limits.position_min[2] - 0.5]), k * DT_S)
        q = res.command
    np.testing.assert_allclose(q[:2], [0.3, -0.3])
    assert q[2] == limits.position_min[2]
    assert "position" in res.limits_hit


def test_start_outside_bounds_only_moves_back_toward_them() -> None:
    limits = make_limits(3)
    start = np.array([limits.position_max[0] + 0.2, 0.0, limits.position_min[2] - 0.1])
    filt = make_filter(3, start=start)
    # Asking to go further out: those joints stay put, joint 1 moves.
    q = start
    for k in range(20):
        q_new = filt.filter(np.array([limits.position_max[0] + 1.0, 0.2, limits.position_min[2] - 1.0]),
                            k * DT_S).command
        assert q_new[0] <= q[0] and q_new[2] >= q[2]
        q = q_new
    assert q[0] == start[0] and q[2] == start[2] and q[1] > 0
    # Asking to come back: they move toward the box and end up inside.
    for k in range(20, 600):
        q_new = filt.filter(np.zeros(3), k * DT_S).command
        assert q_new[0] <= q[0] + 1e-15 and q_new[2] >= q[2] - 1e-15
        q = q_new
    assert (q >= limits.position_min).all() and (q <= limits.position_max).all()


@pytest.mark.parametrize("dim", DIMS)
def test_far_target_is_reached_without_overshoot(dim: int) -> None:
    # E.g. the first action after a hold is far from where the robot stands.
    limits = make_limits(dim, seed=dim)
    filt = make_filter(dim, seed=dim)
    target = 0.8 * limits.position_max * np.where(np.arange(dim) % 2 == 0, 1.0, -1.0)
    target = np.clip(target, limits.position_min + 0.1, limits.position_max - 0.1)
    q, v = np.zeros(dim), np.zeros(dim)
    for k in range(1500):
        res = filt.filter(target, k * DT_S)
        assert not is_brake(res.reason)
        # Every joint moves toward the target and never passes it.
        assert (np.sign(target - res.command) * np.sign(target) >= 0).all()
        assert (np.abs(target - res.command) <= np.abs(target - q) + 1e-15).all()
        v = check_step(res.command, q, v, limits, limits.max_velocity)
        q = res.command
    np.testing.assert_array_equal(q, target)
    assert not res.modified


@pytest.mark.parametrize("dim", DIMS)
def test_bound_is_reached_at_rest_not_at_full_speed(dim: int) -> None:
    limits = make_limits(dim, seed=dim)
    filt = make_filter(dim, seed=dim)
    beyond = limits.position_max + 1.0  # the policy keeps pushing past the limit
    q, v = np.zeros(dim), np.zeros(dim)
    for k in range(1500):
        res = filt.filter(beyond, k * DT_S)
        assert not is_brake(res.reason) and "position" in res.limits_hit
        v = check_step(res.command, q, v, limits, limits.max_velocity)
        q = res.command
    np.testing.assert_array_equal(q, limits.position_max)
    np.testing.assert_array_equal(v, 0.0)


@pytest.mark.parametrize("dim", DIMS)
def test_feasible_stream_passes_unchanged(dim: int) -> None:
    """A smooth reference within the limits reaches the robot untouched: the
    filter adds no lag to a well-behaved policy."""
    limits = make_limits(dim, seed=dim)
    # |v| <= 0.4 vmax, |a| <= 0.4 amax, peak 2*amp inside position_max.
    amp = np.minimum(0.4 * np.minimum(limits.max_velocity, limits.max_acceleration), 0.45 * limits.position_max)
    filt = make_filter(dim, seed=dim)
    for k in range(1, 400):
        t = k * DT_S
        action = amp * (1.0 - np.cos(t))  # starts at rest at 0
        res = filt.filter(action, t)
        assert not res.modified, (k, res.reason)
        np.testing.assert_array_equal(res.command, action)


# ------------------------------------------------------------------- e-stop
@pytest.mark.parametrize("dim", DIMS)
def test_force_spike_latches_estop_until_reset(dim: int) -> None:
    filt = make_filter(dim)
    for k in range(10):
        q_before = filt.filter(np.full(dim, 0.5), k * DT_S).command
    assert not filt.update_wrench(np.array([1.0, 2.0, 3.0]), np.zeros(3), 0.1)
    assert filt.update_wrench(np.array([0.0, 0.0, 80.0]), np.zeros(3), 0.1)
    assert filt.estop_latched and "force" in filt.estop_reason
    for k in range(10, 20):
        res = filt.filter(np.full(dim, 0.9), k * DT_S)
        assert res.holding and res.limits_hit == ("estop",) and res.reason.startswith("estop")
        np.testing.assert_array_equal(res.command, q_before)
        assert filt.tick(k * DT_S) is None  # the action's hold went out now: one command per period
    # No action for more than a period: the tick holds, once per period.
    t_late = 19 * DT_S + filt.late_after_s
    for t in (t_late, t_late + DT_S, t_late + 2 * DT_S):
        tick = filt.tick(t)
        assert tick is not None and tick.holding and tick.limits_hit == ("estop",)
        np.testing.assert_array_equal(tick.command, q_before)
        assert filt.tick(t + 0.5 * DT_S) is None
    # Still pressing: refused.
    filt.update_wrench(np.array([0.0, 0.0, 60.0]), np.zeros(3), 0.2)
    ok, reason = filt.reset_estop(0.2)
    assert not ok and "force" in reason and filt.estop_latched
    # Force gone: the latch holds until someone resets it.
    assert not filt.update_wrench(np.zeros(3), np.zeros(3), 0.25)
    assert filt.estop_latched
    assert filt.filter(np.full(dim, 0.9), 0.25).holding
    assert filt.reset_estop(0.26) == (True, "e-stop cleared")
    assert not filt.estop_latched and filt.estop_reason == ""
    # Motion resumes from the held position, from rest: no jump.
    res = filt.filter(np.full(dim, 0.9), 0.27)
    assert not res.holding
    reach = filt.limits.max_acceleration * DT_S**2
    assert (np.abs(res.command - q_before) <= reach * (1 + REL_TOL)).all()
    assert filt.stats["estop_trips"] == 1 and filt.stats["estop_resets"] == 1


def test_resync_starts_again_from_rest_where_the_robot_was_moved() -> None:
    """A simulator's reset moves the robot home behind the filter's back: without a resync the
    next commands drive it back to the last command; after one they start from rest where it
    is measured, within the limits, and an e-stop holds there instead of at the old point."""
    dim = 3
    filt = make_filter(dim)
    assert make_filter(dim).resync_to_measured()[0]  # seeded: a no-op that still works
    assert SafetyFilter(make_limits(dim), DT_S).resync_to_measured() == (False, "no joint state measured yet")
    for k in range(30):
        last = filt.filter(np.full(dim, 0.8), k * DT_S).command
    home = np.full(dim, -0.3)
    filt.update_measured(home, 30 * DT_S)  # moved home by something else
    held = filt.filter(last, 31 * DT_S).command
    np.testing.assert_allclose(held, last, atol=filt.limits.max_velocity.max() * DT_S)  # still at the old point
    assert filt.resync_to_measured() == (True, "starting again from rest at the measured position")
    res = filt.filter(np.full(dim, 0.8), 32 * DT_S)
    reach = filt.limits.max_acceleration * DT_S**2
    assert (np.abs(res.command - home) <= reach * (1 + REL_TOL)).all(), "from rest, at home"
    assert filt.update_wrench(np.array([0.0, 0.0, 80.0]), np.zeros(3), 33 * DT_S)
    filt.update_measured(np.full(dim, 0.1), 33 * DT_S)
    assert filt.resync_to_measured()[0] and filt.estop_latched, "a resync never clears an e-stop"
    np.testing.assert_array_equal(filt.filter(np.full(dim, 0.8), 34 * DT_S).command, np.full(dim, 0.1))
    assert filt.stats["resyncs"] == 2


def test_torque_spike_and_broken_sensor_latch_too() -> None:
    filt = make_filter(3)
    assert filt.update_wrench(np.zeros(3), np.array([0.0, 11.0, 0.0]), 0.0)
    assert "torque" in filt.estop_reason
    filt.update_wrench(np.zeros(3), np.zeros(3), 0.0)
    assert filt.reset_estop(0.0)[0]
    assert filt.update_wrench(np.array([np.nan, 0.0, 0.0]), np.zeros(3), 0.0)
    assert "not finite" in filt.estop_reason
    ok, reason = filt.reset_estop(0.0)  # a NaN reading cannot clear it
    assert not ok and "not finite" in reason
    filt.update_wrench(np.zeros(3), np.zeros(3), 0.0)
    assert filt.reset_estop(0.0)[0]
    assert filt.update_wrench(np.zeros(6), np.zeros(3), 0.0)
    assert "shape" in filt.estop_reason


def test_estop_keeps_the_first_cause_and_reset_needs_a_fresh_reading() -> None:
    filt = make_filter(3)
    filt.update_wrench(np.array([100.0, 0.0, 0.0]), np.zeros(3), 1.0)
    filt.update_wrench(np.zeros(3), np.array([50.0, 0.0, 0.0]), 1.01)
    assert "force" in filt.estop_reason
    filt.update_wrench(np.zeros(3), np.zeros(3), 1.02)
    ok, reason = filt.reset_estop(5.0)  # the sensor went quiet 4 s ago
    assert not ok and "old" in reason
    assert filt.reset_estop(1.05)[0]
    assert filt.reset_estop(1.06) == (True, "not latched")


def test_estop_before_joint_state_holds_without_command() -> None:
    filt = SafetyFilter(make_limits(3), DT_S)
    filt.update_wrench(np.array([100.0, 0.0, 0.0]), np.zeros(3), 0.0)
    res = filt.tick(0.0)
    assert res is not None and res.command is None and res.holding


# ----------------------------------------------------------------- watchdog
@pytest.mark.parametrize("dim", DIMS)
def test_watchdog_holds_after_timeout(dim: int) -> None:
    filt = make_filter(dim)
    for k in range(20):
        last = filt.filter(np.full(dim, 0.5), k * DT_S).command
        assert filt.tick(k * DT_S) is None
    t_last = 19 * DT_S
    assert filt.tick(t_last + 0.15) is None
    for t in (t_last + 0.21, t_last + 0.3, t_last + 1.0):
        res = filt.tick(t)
        assert res is not None and res.holding and res.limits_hit == ("watchdog",)
        np.testing.assert_array_equal(res.command, last)
    stats = filt.stats
    assert stats["watchdog_trips"] == 1 and stats["watchdog"] == 3
    # Actions return: the robot starts again from rest, without a jump.
    res = filt.filter(np.full(dim, 0.9), t_last + 1.01)
    reach = filt.limits.max_acceleration * DT_S**2
    assert (np.abs(res.command - last) <= reach * (1 + REL_TOL)).all()
    assert filt.tick(t_last + 1.02) is None


def test_watchdog_runs_from_the_first_tick_when_no_action_ever_came() -> None:
    filt = make_filter(3)
    assert filt.tick(10.0) is None
    assert filt.tick(10.1) is None
    res = filt.tick(10.25)
    assert res is not None and res.limits_hit == ("watchdog",)
    np.testing.assert_array_equal(res.command, np.zeros(3))


@pytest.mark.parametrize("now_s", [math.nan, math.inf])
def test_non_finite_time_holds(now_s: float) -> None:
    filt = make_filter(3)
    res = filt.filter(np.full(3, 0.001), now_s)
    assert res.holding and res.limits_hit == ("nan",)
    tick = filt.tick(now_s)
    assert tick is not None and tick.holding


# ------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("field", "value", "quoted"),
    [
        ("position_min", [0.0, 2.0, 0.0], "2.0"),  # min >= max in dim 1
        ("position_max", [1.0, 1.0], "2"),  # wrong length
        ("max_velocity", [1.0, -0.5, 1.0], "-0.5"),
        ("max_velocity", [1.0, np.nan, 1.0], "nan"),
        ("max_acceleration", [1.0, 0.0, 1.0], "0.0"),
        ("max_acceleration", "fast", "fast"),
        ("max_force_n", 0.0, "0.0"),
        ("max_torque_nm", -1.0, "-1.0"),
        ("watchdog_timeout_s", math.inf, "inf"),
        ("velocity_scale", 1.5, "1.5"),
        ("velocity_scale", 0.0, "0.0"),
    ],
)
def test_limits_reject_bad_values_naming_the_field(field: str, value: object, quoted: str) -> None:
    kwargs: dict[str, object] = dict(
        position_min=[-1.0, -1.0, -1.0], position_max=[1.0, 1.0, 1.0], max_velocity=[1.0, 1.0, 1.0],
        max_acceleration=[5.0, 5.0, 5.0], max_force_n=50.0, max_torque_nm=10.0, watchdog_timeout_s=0.2)
    kwargs[field] = value
    with pytest.raises(ValueError) as info:
        SafetyLimits(**kwargs)  # type: ignore[arg-type]
    assert field in str(info.value) and quoted in str(info.value)


def test_limits_are_read_only_float_arrays() -> None:
    limits = SafetyLimits([-1, -1], [1, 1], [1, 1], [5, 5], 50, 10, 0.2)
    assert limits.position_min.dtype == np.float64 and limits.dof == 2
    with pytest.raises(ValueError):
        limits.position_min[0] = 5.0


def test_control_period_must_be_positive() -> None:
    with pytest.raises(ValueError, match="control_period_s"):
        SafetyFilter(make_limits(3), 0.0)


# ---------------------------------------------------------------- speed
def test_filter_is_fast_for_24_dims() -> None:
    """Budget is 50 us on a slow CPU; this guards against per-joint Python loops
    with a margin that a loaded CI machine still meets."""
    dim = 24
    filt = make_filter(dim)
    rng = np.random.default_rng(0)
    smooth = [np.sin(0.01 * k + np.arange(dim)) * 0.01 for k in range(500)]
    worst = [rng.uniform(-3, 3, dim) for _ in range(500)]  # every limit, braking
    per_call_us = []
    for actions in (smooth, worst):
        best = math.inf
        for _ in range(3):
            t0 = time.perf_counter()
            for k, a in enumerate(actions):
                filt.filter(a, k * DT_S)
            best = min(best, (time.perf_counter() - t0) / len(actions) * 1e6)
        per_call_us.append(best)
    assert max(per_call_us) < 150.0, per_call_us


def test_velocity_scale_can_be_tightened_at_run_time() -> None:
    """Conservative mode: after a short deceleration, steps stay within the scaled velocity."""
    from hybridvla_ros.core.safety import SafetyFilter, SafetyLimits

    d, dt = 3, 0.02
    limits = SafetyLimits(position_min=-np.full(d, 10.0), position_max=np.full(d, 10.0),
                          max_velocity=np.ones(d), max_acceleration=np.full(d, 20.0),
                          max_force_n=10.0, max_torque_nm=1.0, watchdog_timeout_s=1.0)
    f = SafetyFilter(limits, dt)
    f.update_measured(np.zeros(d), 0.0)
    target = np.array([5.0, 0.0, 0.0])
    commands = [f.filter(target, i * dt).command for i in range(1, 40)]
    assert np.diff(np.array(commands)[:, 0])[-1] == pytest.approx(1.0 * dt)
    f.set_velocity_scale(0.3)
    assert f.velocity_scale == 0.3
    commands = [f.filter(target, (40 + i) * dt).command for i in range(40)]
    steps = np.abs(np.diff(np.array(commands)[:, 0]))
    assert np.all(np.diff(steps[:5]) <= 1e-12), "slows down, does not jump"
    assert np.all(steps[10:] <= 0.3 * dt + 1e-12)
    with pytest.raises(ValueError, match="velocity_scale"):
        f.set_velocity_scale(0.0)


# ------------------------------------------------ ramp-in and holds (issue 17)
@pytest.mark.parametrize("dim", DIMS)
def test_a_first_command_far_from_the_measured_position_ramps_in_within_the_limits(dim: int) -> None:
    """The robot stands at the measured position; the first request is far away. The commands
    start there at rest, accelerate and cruise within the limits and stop on the target."""
    limits = make_limits(dim, seed=3)
    measured = 0.5 * limits.position_min
    filt = SafetyFilter(limits, DT_S)
    filt.update_measured(measured, 0.0)
    target = 0.5 * limits.position_max
    q_prev, v_prev = measured, np.zeros(dim)
    for k in range(2000):
        q = filt.filter(target, k * DT_S).command
        v_prev = check_step(q, q_prev, v_prev, limits, limits.max_velocity)
        # Never past the target (approached on a braking profile).
        assert ((q - target) * np.sign(target - measured) <= 1e-12).all()
        q_prev = q
        if np.array_equal(q, target):
            break
    else:
        pytest.fail("never reached the target")
    assert filt.stats["commands"] > 10, "a far target takes many periods: it was not jumped to"


@pytest.mark.parametrize("dim", (3, 7))
def test_a_hold_request_while_moving_brakes_within_the_limit_and_rests_at_the_hold(dim: int) -> None:
    """The handoff asks to hold at the measured position, which lags behind a moving command:
    the commands brake within the acceleration limit (no sudden stop, no jump back), turn
    back within the limits and come to rest on the hold target."""
    limits = make_limits(dim, seed=5)
    filt = make_filter(dim, seed=5)
    far = 0.9 * limits.position_max
    q_prev, v_prev = np.zeros(dim), np.zeros(dim)
    t = 0.0
    for k in range(40):  # moving fast toward far
        t = k * DT_S
        q = filt.filter(far, t).command
        v_prev = check_step(q, q_prev, v_prev, limits, limits.max_velocity)
        q_prev = q
    assert np.abs(v_prev).max() > 0.3
    hold = q_prev - 0.3 * v_prev * DT_S * 5  # the measured position, a little behind the command
    for k in range(40, 1000):
        t = k * DT_S
        q = filt.filter(hold, t).command
        v_prev = check_step(q, q_prev, v_prev, limits, limits.max_velocity)
        q_prev = q
        if np.array_equal(q, hold):
            break
    else:
        pytest.fail("never came to rest on the hold target")
    # At rest: the last step stops within the acceleration limit; ticks stay quiet.
    assert (np.abs(v_prev) <= limits.max_acceleration * DT_S * (1 + REL_TOL)).all()
    assert filt.filter(hold, t + DT_S).command.tolist() == hold.tolist()
