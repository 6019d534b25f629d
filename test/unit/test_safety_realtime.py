"""SafetyFilter in real time: limits against the time that really passed (bursts, pauses),
coming to rest within the acceleration limit whenever the command stream must stop, and
counters that agree with the commands sent."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridvla_ros.core.safety import SafetyFilter, SafetyLimits, SafetyResult

DT_S = 0.02
REL_TOL = 1e-9
DIMS = (3, 7, 24)


def make_limits(dim: int, seed: int = 0, **overrides: object) -> SafetyLimits:
    rng = np.random.default_rng(seed)
    kwargs: dict[str, object] = dict(
        position_min=-2.0 - rng.uniform(0.0, 1.0, dim), position_max=2.0 + rng.uniform(0.0, 1.0, dim),
        max_velocity=rng.uniform(0.5, 2.0, dim), max_acceleration=rng.uniform(2.0, 10.0, dim),
        max_force_n=50.0, max_torque_nm=10.0, watchdog_timeout_s=0.5)
    kwargs.update(overrides)
    return SafetyLimits(**kwargs)  # type: ignore[arg-type]


def make_filter(dim: int, seed: int = 0, **overrides: object) -> SafetyFilter:
    filt = SafetyFilter(make_limits(dim, seed, **overrides), DT_S)
    filt.update_measured(np.zeros(dim), 0.0)
    return filt


class Trace:
    """Commands as sent, with their send times; checks each against the real-time limits."""

    def __init__(self, filt: SafetyFilter, start: np.ndarray) -> None:
        self.filt = filt
        self.t: list[float] = []
        self.q: list[np.ndarray] = [start.copy()]
        self.v = np.zeros_like(start)
        self.results: list[SafetyResult] = []

    def add(self, res: SafetyResult | None, now_s: float) -> SafetyResult | None:
        if res is None or res.command is None:
            return res
        limits = self.filt.limits
        vmax = limits.max_velocity * self.filt.velocity_scale
        gap = now_s - self.t[-1] if self.t else DT_S
        if gap > self.filt.resume_after_s:
            self.v = np.zeros_like(self.v)  # the robot stood still meanwhile
        h = min(gap, DT_S)
        step = res.command - self.q[-1]
        tol = 1e-12 + np.abs(self.q[-1]) * 4e-16
        assert (np.abs(step) <= vmax * h * (1 + REL_TOL) + tol).all(), (step, vmax * h)
        if h > 1e-9:
            v = step / h
            assert (np.abs(v - self.v) <= limits.max_acceleration * h * (1 + REL_TOL) + tol / h).all(), \
                (v, self.v, h)
            self.v = v
        assert (res.command >= limits.position_min).all() and (res.command <= limits.position_max).all()
        self.t.append(now_s)
        self.q.append(res.command.copy())
        self.results.append(res)
        return res


# ------------------------------------------------------------------ bursts
@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("burst", [2, 5, 12])
@pytest.mark.parametrize("every", ["burst", "period"])
def test_a_burst_never_moves_faster_than_real_time_allows(dim: int, burst: int, every: str) -> None:
    """Commands arrive in bursts (N within about 1 ms, then a gap of N periods, or N every
    period). In any window the commands move no further than max_velocity * (elapsed time +
    one period): per message limiting moved N times faster."""
    filt = make_filter(dim, seed=burst)
    limits = filt.limits
    trace = Trace(filt, np.zeros(dim))
    target = 0.9 * limits.position_max
    t = 0.0
    for _ in range(400 // burst):
        for i in range(burst):
            now = t + i * 1e-4
            trace.add(filt.filter(target, now), now)
        t += burst * DT_S if every == "burst" else DT_S
    times, qs = np.array(trace.t), np.array(trace.q[1:])
    vmax = limits.max_velocity
    for i in range(len(times)):
        reach = np.abs(qs[i:] - qs[i]) / vmax  # (M, D): seconds at full speed
        allowed = times[i:] - times[i] + DT_S  # (M,)
        assert (reach.max(axis=1) <= allowed * (1 + 1e-6) + 1e-9).all()
    if every == "period":  # the robot kept moving (no resume from rest), near full speed
        assert filt.stats["resumes_from_rest"] == 0
        travel_s = float(np.max(np.abs(qs[-1]) / vmax))  # seconds at full speed, binding joint
        assert travel_s > 0.5 * times[-1]
    # Within a burst the first command covers a period, the others only the 0.1 ms since.
    moved = np.abs(qs[burst * 10 + burst - 1] - qs[burst * 10 - 1])
    assert (moved <= vmax * (DT_S + (burst - 1) * 1e-4) * (1 + 1e-9)).all()


def test_same_send_time_twice_does_not_move() -> None:
    filt = make_filter(3)
    for k in range(30):
        first = filt.filter(np.full(3, 1.5), k * DT_S)
    again = filt.filter(np.full(3, 1.5), 29 * DT_S)
    assert first.command is not None and again.command is not None
    assert np.abs(again.command - first.command).max() <= 1e-6 * DT_S * filt.limits.max_velocity.max() + 1e-12


@settings(max_examples=120, deadline=None)
@given(dim=st.sampled_from(DIMS), seed=st.integers(0, 2**16),
       events=st.lists(st.tuples(st.sampled_from(["burst", "normal", "late", "pause", "tick", "tick"]),
                                 st.sampled_from(["far", "smooth", "bound", "nan", "same"])),
                       min_size=1, max_size=80))
def test_any_timing_keeps_every_limit_in_real_time(dim: int, seed: int, events: list[tuple[str, str]]) -> None:
    """Whatever the timing (bursts, late commands, pauses, ticks between) and the request, every
    command sent respects the bounds, |step| <= vmax * h and |dv| <= amax * h with h the time
    it really covers, starting from rest after a pause."""
    rng = np.random.default_rng(seed)
    filt = make_filter(dim, seed=seed)
    limits = filt.limits
    trace = Trace(filt, np.zeros(dim))
    t = 0.0
    for timing, kind in events:
        t += {"burst": 1e-4, "normal": DT_S, "late": 1.6 * DT_S, "pause": 4.0 * DT_S, "tick": 0.25 * DT_S}[timing]
        if timing == "tick":
            trace.add(filt.tick(t), t)
            continue
        q = trace.q[-1]
        if kind == "far":
            request = rng.uniform(limits.position_min, limits.position_max)
        elif kind == "smooth":
            request = q + rng.normal(0.0, 1.0, dim) * limits.max_velocity * DT_S
        elif kind == "bound":
            request = np.where(rng.random(dim) < 0.5, limits.position_min - 1.0, limits.position_max + 1.0)
        elif kind == "nan":
            request = q.copy()
            request[rng.integers(dim)] = np.nan
        else:
            request = q.copy()
        trace.add(filt.filter(request, t), t)


# ---------------------------------------------------------- pause and resume
@pytest.mark.parametrize("dim", DIMS)
def test_after_a_pause_motion_resumes_from_rest(dim: int) -> None:
    """A silence longer than the resume bound (no tick either: the process stalled) left the
    robot standing at the last command: the next command starts from rest there, whatever the
    joint states say (jumping onto them would be a step no velocity limit allows)."""
    filt = make_filter(dim)
    limits = filt.limits
    target = 0.9 * limits.position_max
    for k in range(40):
        last = filt.filter(target, k * DT_S).command
    assert np.abs(filt.last_velocity).max() > 0.5 * limits.max_velocity.min()
    t_last = 39 * DT_S
    filt.update_measured(last - 0.05 * np.sign(target), t_last + 2 * DT_S)
    res = filt.filter(target, t_last + filt.resume_after_s + DT_S)
    # From rest: one period can move at most amax * dt^2 (before: the old speed, vmax * dt).
    assert (np.abs(res.command - last) <= limits.max_acceleration * DT_S**2 * (1 + REL_TOL)).all()
    assert filt.stats["resumes_from_rest"] == 1
    # Standing still for a while is not a stall: not counted.
    t = t_last + filt.resume_after_s + DT_S
    for k in range(1, 200):
        filt.filter(res.command, t + k * DT_S)
    np.testing.assert_array_equal(filt.last_velocity, 0.0)
    filt.filter(target, t + 10.0)
    assert filt.stats["resumes_from_rest"] == 1


def test_a_short_delay_keeps_the_velocity_but_covers_only_one_period() -> None:
    """Late by less than the resume bound: the controller applies the command over its own
    period, so the step is still at most vmax * dt (not vmax * the delay)."""
    filt = make_filter(3)
    vmax = filt.limits.max_velocity
    for k in range(60):
        q = filt.filter(np.full(3, 2.0), k * DT_S).command
    v_before = filt.last_velocity
    res = filt.filter(np.full(3, 2.0), 59 * DT_S + 2.5 * DT_S)
    step = res.command - q
    assert (np.abs(step) <= vmax * DT_S * (1 + REL_TOL)).all()
    assert (np.abs(step / DT_S - v_before) <= filt.limits.max_acceleration * DT_S * (1 + REL_TOL)).all()
    assert np.abs(filt.last_velocity).max() > 0.5 * vmax.min()


# ------------------------------------------------------------ coming to rest
def run_until_silence(filt: SafetyFilter, target: np.ndarray, n: int, trace: Trace) -> float:
    for k in range(n):
        trace.add(filt.filter(target, k * DT_S), k * DT_S)
    return (n - 1) * DT_S


@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("watchdog_s", [0.5, 0.05])
def test_when_actions_stop_mid_motion_the_commands_come_to_rest_within_the_acceleration_limit(
        dim: int, watchdog_s: float) -> None:
    """The stream stops at speed; ticks (four per period) brake one period at a time at most at
    max deceleration until the velocity is zero, then go quiet, and the watchdog holds the rest
    point. Before, the last command was still moving and the next came only at the watchdog."""
    filt = make_filter(dim, seed=dim, watchdog_timeout_s=watchdog_s)
    limits = filt.limits
    trace = Trace(filt, np.zeros(dim))
    t_last = run_until_silence(filt, 0.9 * limits.position_max, 40, trace)
    v0 = filt.last_velocity.copy()
    assert np.abs(v0).max() > 0.5 * limits.max_velocity.min()
    n_action = len(trace.results)
    t = t_last
    while t < t_last + 1.0:
        t += 0.25 * DT_S
        trace.add(filt.tick(t), t)
    held = trace.results[n_action:]
    times = np.array(trace.t[n_action - 1:])
    assert times[1] - times[0] >= filt.late_after_s - 1e-12 and times[1] - times[0] <= filt.late_after_s + DT_S
    assert (np.diff(times[1:]) >= 0.9 * DT_S - 1e-12).all()  # at most one command per period
    qs = np.array(trace.q[n_action:])  # the last action's command, then the holds
    v = np.diff(qs, axis=0) / DT_S
    # Every hold brakes (never speeds up) within max deceleration and ends at rest.
    assert (np.abs(np.diff(np.vstack([v0, v]), axis=0)) <= limits.max_acceleration * DT_S * (1 + REL_TOL)).all()
    assert (np.abs(v[1:]) <= np.abs(v[:-1]) + 1e-12).all()
    moving = np.abs(v).max(axis=1) > 0
    stop = int(np.argmin(moving))
    assert not moving[stop:].any(), "at rest, it stays at rest"
    brake_s = float(np.max(np.abs(v0) / limits.max_acceleration))
    assert stop <= int(np.ceil(brake_s / DT_S)) + 1
    assert all(r.holding for r in held)
    assert held[0].limits_hit == (("stream",) if watchdog_s > filt.late_after_s + DT_S else ("watchdog",))
    assert held[-1].limits_hit == ("watchdog",)
    # Quiet between coming to rest and the watchdog (a controller at rest may see silence).
    if watchdog_s > brake_s + 0.1:
        # trace.t[n_action + stop]: the first hold with zero velocity (the last one braking).
        rest_at, first_watchdog = trace.t[n_action + stop], trace.t[n_action + stop + 1]
        assert held[stop].limits_hit == ("stream",) and held[stop + 1].limits_hit == ("watchdog",)
        assert first_watchdog - t_last >= watchdog_s and first_watchdog - rest_at > 2 * DT_S
    stats = filt.stats
    assert stats["stream_stops"] == 1 and stats["watchdog_trips"] == 1


def test_a_nan_burst_mid_motion_brakes_through_the_burst_and_after_it() -> None:
    filt = make_filter(7)
    limits = filt.limits
    trace = Trace(filt, np.zeros(7))
    t = run_until_silence(filt, 0.9 * limits.position_max, 40, trace)
    for _ in range(3):
        t += DT_S
        res = trace.add(filt.filter(np.full(7, np.nan), t), t)
        assert res is not None and res.limits_hit == ("nan",)
    for _ in range(200):
        t += 0.25 * DT_S
        trace.add(filt.tick(t), t)
    np.testing.assert_array_equal(filt.last_velocity, 0.0)
    assert trace.results[-1].holding


def test_the_estop_still_stops_at_once_and_holds_every_period() -> None:
    """Kept as before: a force spike stops pushing now (the command stays at the last one)."""
    filt = make_filter(3)
    for k in range(30):
        last = filt.filter(np.full(3, 2.0), k * DT_S).command
    filt.update_wrench(np.array([0.0, 0.0, 80.0]), np.zeros(3), 29 * DT_S)
    t, holds = 29 * DT_S, []
    for _ in range(40):
        t += 0.25 * DT_S
        res = filt.tick(t)
        if res is not None:
            assert res.limits_hit == ("estop",)
            holds.append(res.command)
    assert len(holds) >= 6
    for q in holds:
        np.testing.assert_array_equal(q, last)


# ----------------------------------------------------------------- counters
@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**16),
       ops=st.lists(st.sampled_from(["act", "act", "nan", "tick", "tick", "spike", "calm", "reset", "gap"]),
                    max_size=120))
def test_counters_agree_with_the_commands_sent(seed: int, ops: list[str]) -> None:
    """Every result with a command is sent; 'modified' counts each at most once."""
    rng = np.random.default_rng(seed)
    filt = make_filter(3, seed=seed, watchdog_timeout_s=0.1)
    sent = modified = 0
    t = 0.0
    for op in ops:
        t += 0.25 * DT_S
        res: SafetyResult | None = None
        if op == "act":
            res = filt.filter(rng.uniform(-3.0, 3.0, 3), t)
        elif op == "nan":
            res = filt.filter(np.full(3, np.nan), t)
        elif op == "tick":
            res = filt.tick(t)
        elif op == "spike":
            filt.update_wrench(np.array([0.0, 0.0, 99.0]), np.zeros(3), t)
        elif op == "calm":
            filt.update_wrench(np.zeros(3), np.zeros(3), t)
        elif op == "reset":
            filt.reset_estop(t)
        else:
            t += 10 * DT_S
        if res is not None and res.command is not None:
            sent += 1
            modified += int(res.modified)
    stats = filt.stats
    assert stats["commands"] == sent
    assert stats["modified"] == modified <= sent
