"""The last word before the robot: position, velocity and acceleration limits,
a force/torque e-stop latch and a watchdog, for a position-controlled robot.

The filter keeps its own last command ``q_prev`` and the velocity it implied,
``v_prev = (q_prev - q_prevprev) / h`` (h: see Real time below); the first measured joint state seeds
``q_prev`` so the first command starts where the robot is.

Per requested target ``a`` (D,), in order of priority (position > velocity >
stopping distance > acceleration):

1. Position. The target is clipped per joint into [position_min,
   position_max]. Clipping per joint (not shrinking the whole step along its
   direction) is deliberate: a policy that asks for a gripper a little beyond
   its closed limit would otherwise freeze every other joint for as long as it
   keeps asking. If ``q_prev`` itself is outside a bound (a measured start
   outside the limits) that joint may only move back toward the bounds.
   Because both ``q_prev`` and the clipped target lie in the box, every point
   on the segment between them does too, so steps 2-4 cannot leave it.
2. Velocity. The step ``d = (target - q_prev) / dt`` is scaled by ONE factor
   ``s`` in [0, 1] so every joint stays under max_velocity * velocity_scale;
   the direction of motion is kept (the end effector does not swerve).
3. Stopping distance. ``s`` is also capped so that every joint could still
   stop, braking at max_acceleration, before the bound ahead of it, and before
   the target relative to the target's own motion (its speed is estimated
   from consecutive requests). A streaming reference that the robot follows
   is never slowed by this (closing speed 0); a far, fixed target (a jump
   after a hold, the buffer's grace repeat while the robot lags) is
   approached on a braking profile instead of being overshot by up to
   v^2/(2*amax), and a bound is approached so that it is reached at rest
   rather than at full speed and then clipped (unbounded deceleration).
   Reported as 'acceleration'.
4. Acceleration. ``s`` is further restricted to the intersection over joints
   of ``|s * d_i - v_prev_i| <= max_acceleration_i * dt`` and the largest
   feasible ``s`` is taken. When the intersection is empty (e.g. the policy
   reverses direction at full speed) no scaling of the requested direction is
   reachable; the filter then brakes each joint toward zero velocity at its
   own maximum (``v = v_prev - clip(v_prev, -amax*dt, amax*dt)``) for that one
   command: the next request comes a period later, and the sooner each joint's
   velocity is small the sooner a request is feasible again.
   Braking is chosen over "closest reachable velocity" because it is the only
   choice whose outcome does not depend on the (possibly garbage) request, and
   within a few periods ``|v_prev| <= amax*dt`` makes the request feasible again.
   Thanks to step 3 the brake stays inside the bounds; it is still clipped to
   them last (position wins), which matters only for a start outside them.

Real time. Every limit holds against the time that really passed since the last
command sent, not per message: ``filter``/``tick`` take the send time ``now_s`` and a
command covers ``h = min(now_s - last_sent, dt)``. The step may be at most
``max_velocity * h`` and change the velocity by at most ``max_acceleration * h``, so a
burst of N commands inside one period moves no further than ``max_velocity`` times the
time it really took plus one period's worth; a command that comes late still covers only
dt, because the controller applies each command over its own period. The command's
velocity is ``step / h``. After a silence longer than ``resume_after_s`` (3 periods)
the controller has been holding the last point, so the robot stands there: the next
command starts from rest (velocity 0) at the last command. (Not at the measured
position: jumping the command onto it would be a step of the tracking error, up to a
braking distance, that no velocity limit allows; the controller holds the robot at the
last command, which is where a position-controlled robot at rest stands.)

Coming to rest. The command stream never stops while moving: ``tick`` (call it often,
e.g. every quarter period) brakes from the current velocity to rest along the path, one
command per period (``_brake_step``: all joints stop together in the time the slowest
needs at max deceleration, so the tool does not swerve), once no command was sent for
``late_after_s`` (1.25 periods: the input went silent, the buffer ran dry, the upstream
node died), until the velocity is zero, and then goes quiet until the watchdog, which
holds that rest point every period.
A rejected request (NaN/Inf or wrong-shape action, non-finite time) brakes the same way
and then stays: one NaN at full speed must not make the robot stop with unbounded
deceleration (a real arm's controller faults on that). The e-stop stops pushing at
once: it commands ``q_prev`` with velocity 0 (once per period from ``tick`` while no
actions come), and motion resumes acceleration-limited from there after a reset.

Trajectories. ``trajectory(targets)`` gives the points after the last command for a
controller that times them itself (a JointTrajectory, one period apart): the plan's next
targets, each limited like a real command (r = 1) on a copy of the filter's state, then
braking to rest along the path as above, so the last point is always at rest. It changes neither
the state nor the counters; the real next command for the plan's first target is its first
point. ``tick(now_s, on_schedule=True)`` serves a caller that sends once per period at its
own deadlines (a timing thread): a deadline without an action brakes at once, and at rest
the rest point goes out every period.

Counters. Every result that carries a command is meant to be sent (``tick`` returns
None rather than a second command within the same period), so ``stats['commands']`` is
the number of commands sent and ``stats['modified'] <= stats['commands']``: one count
per command at most.

Everything is plain numpy on (D,) vectors (no per-joint Python loops). Per
``filter()`` call for D = 24 on one AMD EPYC core: ~9 us following a stream,
~17 us with a random jump every period (every limit active). Never raises on
bad input at run time.

Size: the whole filter (limits, watchdog, e-stop latch, controlled stops) is one
ordered pipeline per action; keeping it in one file keeps that order visible.
"""

from __future__ import annotations

import copy
import math
import numbers
from dataclasses import dataclass

import numpy as np

__all__ = [
    "LIMIT_NAMES",
    "SafetyLimits",
    "SafetyResult",
    "SafetyFilter",
    "REASON_NO_STATE",
]

# Every name that can appear in SafetyResult.limits_hit, in reporting order.
LIMIT_NAMES: tuple[str, ...] = ("nan", "shape", "position", "velocity", "acceleration", "estop", "stream",
                                 "watchdog")

REASON_STREAM = "stream: no command for {gap:.3f} s, braking to rest"
REASON_REST = "stream: no action for this period ({gap:.3f} s since the last command), holding at rest"
# Defaults, in control periods: a tick brakes once no command was sent for LATE_PERIODS
# (then every period, a tick at least REPEAT_PERIODS after the last); a silence longer than
# RESUME_PERIODS means the robot is at rest (the controller held the last point).
LATE_PERIODS = 1.25
REPEAT_PERIODS = 0.9
RESUME_PERIODS = 3.0
# Below this fraction of a period, time is taken as this fraction (no division by zero).
MIN_PERIOD_FRACTION = 1e-6

REASON_NO_STATE = "no joint state yet"


def _positive(field: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{field} must be a number, got {value!r}")
    out = float(value)
    if not math.isfinite(out) or out <= 0:
        raise ValueError(f"{field} must be finite and > 0, got {value!r}")
    return out


def _vector(field: str, value: object) -> np.ndarray:
    """value as a read-only finite float64 (D,) copy; ValueError naming field otherwise."""
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{field} must be a sequence of numbers, got {value!r}") from None
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{field} must be a non-empty 1-D sequence, got shape {arr.shape}: {value!r}")
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{field}[{i}] must be finite, got {arr[i]!r}")
    arr.flags.writeable = False
    return arr


def _finite_real(value: object) -> bool:
    if type(value) is float:  # the common case, without the ABC check's cost
        return math.isfinite(value)
    return not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)


@dataclass(frozen=True)
class SafetyLimits:
    """Hard limits of the robot; ``__post_init__`` raises ValueError naming a bad field."""

    position_min: np.ndarray  # (D,) rad or m
    position_max: np.ndarray  # (D,)
    max_velocity: np.ndarray  # (D,) per second, > 0
    max_acceleration: np.ndarray  # (D,) per second^2, > 0
    max_force_n: float  # > 0: force norm that latches the e-stop
    max_torque_nm: float  # > 0: torque norm that latches the e-stop
    watchdog_timeout_s: float  # > 0
    velocity_scale: float = 1.0  # (0, 1]: fraction of max_velocity the policy may use

    def __post_init__(self) -> None:
        names = ("position_min", "position_max", "max_velocity", "max_acceleration")
        for name in names:
            object.__setattr__(self, name, _vector(name, getattr(self, name)))
        dof = self.position_min.shape[0]
        for name in names[1:]:
            shape = getattr(self, name).shape
            if shape != (dof,):
                raise ValueError(f"{name} has {shape[0]} values but position_min has {dof}")
        for name in ("max_velocity", "max_acceleration"):
            arr = getattr(self, name)
            if (arr <= 0).any():
                i = int(np.argmax(arr <= 0))
                raise ValueError(f"{name}[{i}] must be > 0, got {arr[i]!r}")
        bad = self.position_min >= self.position_max
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(
                f"position_min[{i}]={self.position_min[i]!r} must be < position_max[{i}]={self.position_max[i]!r}")
        for name in ("max_force_n", "max_torque_nm", "watchdog_timeout_s"):
            object.__setattr__(self, name, _positive(name, getattr(self, name)))
        scale = _positive("velocity_scale", self.velocity_scale)
        if scale > 1.0:
            raise ValueError(f"velocity_scale must be in (0, 1], got {self.velocity_scale!r}")
        object.__setattr__(self, "velocity_scale", scale)

    @property
    def dof(self) -> int:
        """D, the number of limited dimensions."""
        return int(self.position_min.shape[0])


@dataclass(frozen=True)
class SafetyResult:
    """The command for one control period and why it differs from the request."""

    command: np.ndarray | None  # (D,) position target; None before the first joint state
    modified: bool  # True if a limit changed the requested action
    limits_hit: tuple[str, ...]  # subset of LIMIT_NAMES
    holding: bool  # True when the command is a hold (estop, watchdog, rejected input)
    reason: str  # "" when the request passed unchanged


class SafetyFilter:
    """Stateful limiter between the policy and a position-controlled robot."""

    def __init__(self, limits: SafetyLimits, control_period_s: float, *, late_after_s: float | None = None,
                 resume_after_s: float | None = None) -> None:
        """Raise TypeError for a non-SafetyLimits ``limits``, ValueError for a bad period.

        ``late_after_s`` (default 1.25 periods, at least one period): silence after which
        ``tick`` starts braking; ``resume_after_s`` (default 3 periods, at least
        ``late_after_s``): silence after which the robot is taken to be at rest."""
        if not isinstance(limits, SafetyLimits):
            raise TypeError(f"limits must be a SafetyLimits, got {type(limits).__name__}")
        self._limits = limits
        self._dt_s = _positive("control_period_s", control_period_s)
        self._late_s = LATE_PERIODS * self._dt_s if late_after_s is None else _positive("late_after_s", late_after_s)
        if self._late_s < self._dt_s:
            raise ValueError(f"late_after_s must be >= control_period_s {self._dt_s}, got {late_after_s!r}")
        self._resume_s = (max(RESUME_PERIODS * self._dt_s, self._late_s) if resume_after_s is None
                          else _positive("resume_after_s", resume_after_s))
        if self._resume_s < self._late_s:
            raise ValueError(f"resume_after_s must be >= late_after_s {self._late_s}, got {resume_after_s!r}")
        self._repeat_s = REPEAT_PERIODS * self._dt_s
        self._h_min_s = MIN_PERIOD_FRACTION * self._dt_s
        self._dof = limits.dof
        self._pmin = limits.position_min  # (D,)
        self._pmax = limits.position_max  # (D,)
        self._velocity_scale = limits.velocity_scale
        self._derive_limits()
        self._zeros = np.zeros(self._dof)
        self._zeros.flags.writeable = False

        self._q_prev: np.ndarray | None = None  # (D,) last command
        self._inside = False  # q_prev within [position_min, position_max]
        self._vstep = self._zeros  # (D,) v_prev * dt: the last command's velocity as a step of one period
        self._prev_target: np.ndarray | None = None  # (D,) last clipped request, to tell its speed
        self._tracking = False  # the last command was exactly the (clipped) request
        self._far_from_bounds = False  # q_prev beyond braking distance (at vmax) of every bound
        self._last_measured: np.ndarray | None = None  # (D,)
        self._last_sent_s: float | None = None  # when the last command was sent
        self._last_from_tick = False  # the last command came from tick() (a hold), not from an action
        self._last_filter_s: float | None = None
        self._watch_ref_s: float | None = None  # watchdog start before any filter()
        self._watchdog_active = False

        self._estop = False
        self._estop_reason = ""
        self._wrench_issue: str | None = None  # None: last wrench fine; else why not
        self._wrench_stamp_s: float | None = None
        self._last_force_n = math.nan
        self._last_torque_nm = math.nan

        self._stats: dict[str, int] = {
            "commands": 0,
            "modified": 0,
            **{name: 0 for name in LIMIT_NAMES},
            "holds": 0,
            "rejected": 0,
            "measured_rejected": 0,
            "estop_trips": 0,
            "estop_resets": 0,
            "resyncs": 0,
            "watchdog_trips": 0,
            "stream_stops": 0,
            "resumes_from_rest": 0,
        }

    def _derive_limits(self) -> None:
        """Per-period limit constants from the limits and the current velocity scale."""
        limits = self._limits
        # The limits are kept in per-period displacement units (rad or m per
        # control period): one step of the robot is compared directly, which
        # saves a numpy call per quantity on the hot path.
        self._vmax = limits.max_velocity * self._velocity_scale  # (D,) per second
        self._step_max = self._vmax * self._dt_s  # (D,) largest step
        self._inv_step_max = 1.0 / self._step_max  # (D,)
        self._step_change_max = limits.max_acceleration * self._dt_s**2  # (D,) largest change of step
        # _stop_step's constants. c/8 is the most the closed-form braking
        # distance can be short by (c = a*dt^2); 0.005c more absorbs rounding.
        c = self._step_change_max
        self._stop_offset = 0.005 * c  # (D,)
        self._stop_floor = 1.125 * c  # (D,) gives a step of exactly c
        self._stop_two_c = 2.0 * c  # (D,)
        self._stop_half_c = 0.5 * c  # (D,)
        brake_dist = (self._vmax**2 / (2.0 * limits.max_acceleration)  # (D,)
                      + self._step_max + 0.13 * c)
        self._far_lo = self._pmin + brake_dist  # (D,)
        self._far_hi = self._pmax - brake_dist  # (D,)

    def set_velocity_scale(self, scale: float) -> None:
        """Use ``scale`` (0, 1] of max_velocity from now on (conservative mode uses < 1).

        Never above the configured limits' own velocity_scale. Raises ValueError outside (0, 1].
        """
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and 0.0 < scale <= 1.0):
            raise ValueError(f"velocity_scale must be in (0, 1], got {scale!r}")
        new = min(float(scale), self._limits.velocity_scale)
        if new != self._velocity_scale:
            self._velocity_scale = new
            self._derive_limits()

    @property
    def velocity_scale(self) -> float:
        """Fraction of max_velocity in force."""
        return self._velocity_scale

    # ------------------------------------------------------------------ state
    @property
    def limits(self) -> SafetyLimits:
        """The limits this filter enforces."""
        return self._limits

    @property
    def control_period_s(self) -> float:
        """dt, the period one command covers."""
        return self._dt_s

    @property
    def late_after_s(self) -> float:
        """Silence after which tick() brakes to rest."""
        return self._late_s

    @property
    def resume_after_s(self) -> float:
        """Silence after which the next command starts from rest at the measured position."""
        return self._resume_s

    @property
    def last_velocity(self) -> np.ndarray:
        """(D,) velocity of the last command (per second; zeros at rest)."""
        return self._vstep / self._dt_s

    @property
    def estop_latched(self) -> bool:
        """True from a bad wrench until reset_estop() succeeds."""
        return self._estop

    @property
    def estop_reason(self) -> str:
        """Why the e-stop latched ("" when not latched)."""
        return self._estop_reason

    @property
    def last_command(self) -> np.ndarray | None:
        """(D,) copy of the last command (the seeded measured position before any), or None."""
        return None if self._q_prev is None else self._q_prev.copy()

    @property
    def last_measured(self) -> np.ndarray | None:
        """(D,) copy of the last valid measured joint positions, or None."""
        return None if self._last_measured is None else self._last_measured.copy()

    @property
    def last_force_n(self) -> float:
        """Norm of the last force reading (NaN if none or broken)."""
        return self._last_force_n

    @property
    def last_torque_nm(self) -> float:
        """Norm of the last torque reading (NaN if none or broken)."""
        return self._last_torque_nm

    @property
    def stats(self) -> dict[str, int]:
        """A copy of the counters: commands (results carrying a command: the commands sent),
        modified (at most one per command), one per LIMIT_NAMES entry (results that hit it),
        holds, rejected (bad actions), measured_rejected, estop_trips, estop_resets, resyncs,
        watchdog_trips, stream_stops (times tick() started braking a stream that went silent
        while moving), resumes_from_rest (commands after a silence > resume_after_s that found
        the last command moving: the stream stalled and the robot stopped meanwhile)."""
        return dict(self._stats)

    # ----------------------------------------------------------------- inputs
    def update_measured(self, positions: np.ndarray, stamp_s: float) -> None:
        """Record measured joint positions (D,); the first valid one seeds the
        command state. Wrong shape or NaN/Inf are ignored and counted."""
        try:
            q = np.array(positions, dtype=np.float64)
        except (TypeError, ValueError):
            self._stats["measured_rejected"] += 1
            return
        if q.shape != (self._dof,) or not np.isfinite(q).all():
            self._stats["measured_rejected"] += 1
            return
        self._last_measured = q
        if self._q_prev is None:
            self._inside = False  # unknown until _set_q looks
            self._set_q(q.copy())
            self._rest()

    def update_wrench(self, force: np.ndarray, torque: np.ndarray, stamp_s: float) -> bool:
        """Check one F/T reading (3,), (3,); return True if it is unsafe, which
        latches the e-stop (over max_force_n / max_torque_nm, NaN/Inf, or wrong
        shape: a broken sensor is not a safe sensor). The first cause is kept."""
        issue: str | None = None
        try:
            f = np.asarray(force, dtype=np.float64)
            t = np.asarray(torque, dtype=np.float64)
        except (TypeError, ValueError):
            f = t = np.full(3, np.nan)
            issue = "wrench is not numeric"
        if issue is None and (f.shape != (3,) or t.shape != (3,)):
            issue = f"wrench has wrong shape: force {f.shape}, torque {t.shape} (want (3,), (3,))"
            f = t = np.full(3, np.nan)
        force_n = math.sqrt(float(f @ f))
        torque_nm = math.sqrt(float(t @ t))
        if issue is None and not (math.isfinite(force_n) and math.isfinite(torque_nm)):
            issue = f"wrench is not finite: force={f.tolist()!r}, torque={t.tolist()!r}"
        if issue is None and force_n > self._limits.max_force_n:
            issue = f"force {force_n:.3g} N > max_force_n {self._limits.max_force_n:.3g} N"
        if issue is None and torque_nm > self._limits.max_torque_nm:
            issue = f"torque {torque_nm:.3g} Nm > max_torque_nm {self._limits.max_torque_nm:.3g} Nm"
        self._last_force_n, self._last_torque_nm = force_n, torque_nm
        self._wrench_issue = issue
        self._wrench_stamp_s = float(stamp_s) if _finite_real(stamp_s) else None
        if issue is None:
            return False
        if not self._estop:
            self._estop = True
            self._estop_reason = issue
            self._stats["estop_trips"] += 1
        return True

    def reset_estop(self, now_s: float) -> tuple[bool, str]:
        """Clear the e-stop; return (cleared, reason). Refused while the last wrench
        is over a limit or broken, or when it is older than watchdog_timeout_s
        (a sensor that went quiet after the spike proves nothing)."""
        if not self._estop:
            return True, "not latched"
        if self._wrench_issue is not None:
            return False, f"refused: last wrench still unsafe ({self._wrench_issue})"
        if self._wrench_stamp_s is None or not _finite_real(now_s):
            return False, f"refused: cannot tell the wrench's age (stamp {self._wrench_stamp_s!r}, now_s {now_s!r})"
        age_s = float(now_s) - self._wrench_stamp_s
        if age_s > self._limits.watchdog_timeout_s:
            return False, (f"refused: last wrench is {age_s:.3f} s old "
                           f"(> watchdog_timeout_s {self._limits.watchdog_timeout_s}); need a fresh reading")
        self._estop = False
        self._estop_reason = ""
        self._rest()  # resume from rest at q_prev
        self._stats["estop_resets"] += 1
        return True, "e-stop cleared"

    def resync_to_measured(self) -> tuple[bool, str]:
        """The robot was moved by something else (a simulator's reset, hand guiding, another
        controller): start again from rest at the last measured position instead of the last
        command, which the next command would otherwise drive it back to. An e-stop stays
        latched (its hold is then where the robot stands). Returns (done, reason)."""
        if self._last_measured is None:
            return False, "no joint state measured yet"
        self._inside = False  # _set_q looks again
        self._set_q(self._last_measured.copy())
        self._rest()
        self._stats["resyncs"] += 1
        return True, "starting again from rest at the measured position"

    # ---------------------------------------------------------------- outputs
    def _rest(self) -> None:
        """The robot stands at q_prev: zero velocity, no moving reference."""
        self._vstep = self._zeros
        self._prev_target = None
        self._tracking = False

    def _set_q(self, q: np.ndarray) -> None:
        self._q_prev = q
        # count_nonzero instead of .all()/.any(): ~5x cheaper on (D,) bool arrays.
        self._far_from_bounds = (np.count_nonzero(q < self._far_lo) + np.count_nonzero(q > self._far_hi)) == 0
        # Once inside, every command is clipped into the bounds: it stays inside.
        if not self._inside:
            self._inside = self._far_from_bounds or (
                np.count_nonzero(q < self._pmin) + np.count_nonzero(q > self._pmax)) == 0

    # ------------------------------------------------------------- real time
    def _begin(self, now_s: float) -> float:
        """Start a command sent at ``now_s``: return r = h / dt in (0, 1], where h is the time
        it covers, min(time since the last command, dt). After a silence longer than
        resume_after_s the robot is at rest: start from rest."""
        last = self._last_sent_s
        if last is None:
            return 1.0
        gap = now_s - last
        if gap > self._resume_s:
            self._resume()
            return 1.0
        if gap < 0.0 or gap >= self._dt_s * (1.0 - 1e-9):
            return 1.0  # a clock that went back: the elapsed time is unknown, take one period
        return max(gap, self._h_min_s) / self._dt_s

    def _resume(self) -> None:
        """The controller has held the last command for a while: the robot stands there."""
        if np.count_nonzero(self._vstep):
            self._stats["resumes_from_rest"] += 1  # the stream stalled while moving
        self._rest()

    def _sent(self, now_s: float, from_tick: bool) -> None:
        self._stats["commands"] += 1
        if math.isfinite(now_s):
            self._last_sent_s = now_s
            self._last_from_tick = from_tick

    def _per_period(self, r: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(previous velocity as a step of h, largest step, largest change of step) for h = r*dt."""
        if r == 1.0:
            return self._vstep, self._step_max, self._step_change_max
        return self._vstep * r, self._step_max * r, self._step_change_max * (r * r)

    # ---------------------------------------------------------------- outputs
    def _hold(self, limit: str, reason: str, now_s: float, *, brake: bool, r: float = 1.0,
              from_tick: bool = False, rejected: bool = False) -> SafetyResult:
        """A hold (None before a joint state). ``brake``: one period of braking from the current
        velocity at max deceleration, then standing (a controlled stop); else stand at q_prev
        at once (the e-stop)."""
        self._stats["holds"] += 1
        self._stats[limit] += 1
        if rejected:
            self._stats["rejected"] += 1
        if self._q_prev is None:
            self._rest()
            return SafetyResult(None, True, (limit,), True, reason)
        if brake and np.count_nonzero(self._vstep):
            step0, step_max, c = self._per_period(r)
            step = self._brake_step(self._q_prev, step0, c)  # (D,) one period of braking
            np.minimum(np.maximum(step, -step_max, out=step), step_max, out=step)
            q = self._q_prev + step
            if self._inside:  # position wins (step 3 kept the braking distance inside the bounds)
                q = np.minimum(np.maximum(q, self._pmin), self._pmax)
            diff = q - self._q_prev
            self._vstep = diff if r == 1.0 else diff / r
            self._prev_target = None
            self._tracking = False
            self._set_q(q)
        else:
            self._rest()
        self._sent(now_s, from_tick)
        self._stats["modified"] += 1
        assert self._q_prev is not None
        return SafetyResult(self._q_prev.copy(), True, (limit,), True, reason)

    def filter(self, action: np.ndarray, now_s: float) -> SafetyResult:
        """Turn one requested position target (D,) into the command sent at ``now_s`` (the
        send time; limits hold against the time since the last command); never raises.
        Holds (holding True) for NaN/Inf or wrong-shape input, a latched e-stop or a
        non-finite now_s; command None before the first joint state."""
        if self._q_prev is None:
            self._stats["holds"] += 1
            return SafetyResult(None, False, (), True, REASON_NO_STATE)
        if not _finite_real(now_s):
            return self._hold("nan", f"nan: now_s={now_s!r} is not finite", math.nan, brake=True, rejected=True)
        now_s = float(now_s)
        self._last_filter_s = now_s
        self._watchdog_active = False
        r = self._begin(now_s)
        if self._estop:
            return self._estop_hold(now_s)
        try:
            a = np.asarray(action, dtype=np.float64)  # (D,)
        except (TypeError, ValueError):
            return self._hold("shape", f"shape: action is not numeric ({type(action).__name__})", now_s,
                              brake=True, r=r, rejected=True)
        if a.shape != (self._dof,):
            return self._hold("shape", f"shape: action shape {a.shape} != ({self._dof},)", now_s,
                              brake=True, r=r, rejected=True)
        # One reduction instead of isfinite + count; a sum that overflows
        # (entries ~1e308) is rechecked element-wise.
        if not math.isfinite(np.add.reduce(a)) and np.count_nonzero(np.isfinite(a)) != self._dof:
            i = int(np.argmax(~np.isfinite(a)))
            return self._hold("nan", f"nan: action[{i}]={a[i]!r} is not finite", now_s, brake=True, r=r,
                              rejected=True)
        result = self._limit(a, r)
        self._sent(now_s, False)
        return result

    def _estop_hold(self, now_s: float, from_tick: bool = False) -> SafetyResult:
        return self._hold("estop", f"estop: {self._estop_reason}", now_s, brake=False, from_tick=from_tick)

    def _stop_step(self, dist: np.ndarray) -> np.ndarray:
        """(D,): largest step from which braking at max_acceleration, one period
        at a time, ends within dist (D,) >= 0; never below c = a*dt^2.

        Discrete-time form of v <= sqrt(2*a*r), with c = a*dt^2: taking step x
        now and then x - c, x - 2c, ... covers x^2/(2c) + x/2 when x is a
        multiple of c, and up to c/8 more otherwise. Solving
        x^2/(2c) + x/2 = r - 0.13c (c/8 of slack plus a rounding margin) gives
        x = sqrt(2c * (r - 0.005c)) - c/2; the max() folds in the floor x >= c.
        Following the profile shrinks the step by at most c per period, so it
        is always acceleration-feasible; the floor lets the last periods creep
        onto the target instead of stopping short of it.
        """
        y = np.maximum(dist - self._stop_offset, self._stop_floor)
        return np.sqrt(self._stop_two_c * y) - self._stop_half_c

    def _stop_ratio(self, target: np.ndarray, q0: np.ndarray, delta: np.ndarray, abs_delta: np.ndarray,
                    lower: np.ndarray, upper: np.ndarray, r: float) -> float:
        """max over joints of |delta_i| / (largest step of h = r*dt from which joint i can
        still stop in time, before the target and before the bound ahead). The braking
        profile is the one of full periods (the longer braking distance), scaled to h."""
        cap: np.ndarray | None = None
        if not self._tracking:
            # On the streaming reference the closing speed is 0: nothing to check.
            cap = self._stop_step(abs_delta)  # (D,)
            if r != 1.0:
                cap *= r
            if self._prev_target is not None:
                # A reference moving away ahead of the robot may be followed
                # at its own speed: only the closing speed must be stoppable.
                cap += np.maximum((target - self._prev_target) * np.sign(delta), 0.0)
        # Without a moving reference the target (inside the bounds) is nearer
        # than the bound ahead, so its limit is the tighter one.
        if not self._far_from_bounds and self._prev_target is not None:
            to_bound = np.abs(np.where(delta > 0, upper, lower) - q0)  # (D,)
            bound_cap = self._stop_step(to_bound)
            if r != 1.0:
                bound_cap *= r
            cap = bound_cap if cap is None else np.minimum(cap, bound_cap)
        if cap is None:
            return 0.0
        return float((abs_delta / cap).max())  # cap >= a*dt^2*r > 0

    def _brake_step(self, q: np.ndarray, step0: np.ndarray, change_max: np.ndarray) -> np.ndarray:
        """(D,) the next step when braking from step ``step0`` (the last step, per period) at
        ``q``, changing no joint's step by more than ``change_max`` (D,).

        Along the direction of motion: every joint's step shrinks by the same fraction, the
        one the joint that needs longest to stop allows, so all joints come to rest together
        and the tool keeps to its path (braking each joint at its own maximum stops the quick
        joints first and the slow one swings the tool off the path: on the Franka the
        shoulder alone carried the cup 2 mm down into the cube it was landing on). The
        stopping time is the same; the quick joints brake more gently and so go further.
        Where that further way would cross a position bound (near a bound, inside them), each
        joint brakes at its own maximum instead, which step 3 keeps inside the bounds."""
        abs0 = np.abs(step0)
        moving = abs0 > 0.0
        if np.count_nonzero(moving) == 0:
            return step0.copy()
        periods = abs0[moving] / change_max[moving]  # periods each moving joint needs to stop
        n = float(periods.max())
        if n <= 1.0:
            return np.zeros_like(step0)  # every joint stops within this period
        step = step0 * (1.0 - 1.0 / n)
        if self._inside:
            # Steps shrink linearly to zero over n periods: the rest point (n + 1) / 2 steps on.
            stop = q + step0 * (0.5 * (n + 1.0))
            if np.count_nonzero(stop < self._pmin) + np.count_nonzero(stop > self._pmax):
                return step0 - np.minimum(np.maximum(step0, -change_max), change_max)
        return step

    def _limit(self, a: np.ndarray, r: float) -> SafetyResult:
        """The command for request ``a`` covering h = r*dt (the caller counts it as sent)."""
        q0 = self._q_prev  # (D,)
        assert q0 is not None
        step0, step_max, change_max = self._per_period(r)  # (D,) each, for this command's h
        if self._inside:
            lower, upper = self._pmin, self._pmax
        else:
            # A joint outside its bound may only come back toward it.
            lower, upper = np.minimum(self._pmin, q0), np.maximum(self._pmax, q0)
        target = np.maximum(a, lower)
        np.minimum(target, upper, out=target)  # (D,)
        hit_position = bool(np.count_nonzero(target != a) > 0)

        delta = target - q0  # (D,) the step asked for
        abs_delta = np.abs(delta)
        ratio_v = float((abs_delta * self._inv_step_max).max())
        if r != 1.0:
            ratio_v /= r
        # Stopping distance: approach the bound ahead, and the target relative
        # to its own motion, no faster than max deceleration can stop. Without
        # it a far target (a jump after a hold, a grace repeat while the robot
        # lags) is overshot by up to v^2/(2a), and a bound is hit at full speed
        # and then clipped, i.e. stopped with unbounded deceleration.
        ratio_stop = self._stop_ratio(target, q0, delta, abs_delta, lower, upper, r)
        s_max = 1.0 / max(1.0, ratio_v, ratio_stop)
        hit_velocity = ratio_v > 1.0 and ratio_v >= ratio_stop
        hit_accel = ratio_stop > 1.0 and ratio_stop > ratio_v
        brake = False
        tracking = False
        if self._tracking and np.count_nonzero(np.abs(delta * s_max - step0) > change_max) == 0:
            # Streaming: a cheap check that the step is reachable as it is.
            s = s_max
        else:
            s, brake = self._accel_scale(delta, abs_delta, step0, s_max, change_max)
            hit_accel = hit_accel or brake or s < s_max

        if brake:
            # One period of braking, each joint at its own maximum (module docstring, step 4).
            step = step0 - np.minimum(np.maximum(step0, -change_max), change_max)
            np.minimum(np.maximum(step, -step_max, out=step), step_max, out=step)
            q = q0 + step
        elif s == 1.0:
            q = target  # exactly what was asked (after position clipping), already inside
            tracking = True
        else:
            q = q0 + s * delta
        if not tracking:
            # Rounding (q0 + s*delta may overshoot the target by an ulp) and
            # the brake path: position wins over everything.
            clipped = np.maximum(q, lower)
            np.minimum(clipped, upper, out=clipped)
            if brake and np.count_nonzero(clipped != q) > 0:
                hit_position = True
            q = clipped

        diff = q - q0
        self._vstep = diff if r == 1.0 else diff / r
        self._prev_target = target
        self._tracking = tracking
        self._set_q(q)
        hits = tuple(name for name, hit in (("position", hit_position), ("velocity", hit_velocity),
                                            ("acceleration", hit_accel)) if hit)
        for name in hits:
            self._stats[name] += 1
        if hits:
            self._stats["modified"] += 1
        if brake:
            reason = "acceleration: request unreachable, braking at max deceleration"
        elif hits:
            reason = "limited: " + ", ".join(hits)
        else:
            reason = ""
        return SafetyResult(q.copy(), bool(hits), hits, False, reason)

    def _accel_scale(self, delta: np.ndarray, abs_delta: np.ndarray, step0: np.ndarray,
                     s_max: float, c: np.ndarray) -> tuple[float, bool]:
        """Largest s in [0, s_max] with |s*delta - step0| <= c (= a*h^2) in every dim;
        (s, False), or (0.0, True) when no such s exists (brake)."""
        any_still = np.count_nonzero(delta) != self._dof
        if any_still:
            still = delta == 0  # (D,)
            if np.count_nonzero(np.abs(step0[still]) > c[still]) > 0:
                return 0.0, True  # a joint asked to stay can't stop within one period
            # Avoid 0-division; those dims are unbounded (set below).
            delta = np.where(still, 1.0, delta)
            abs_delta = np.where(still, 1.0, abs_delta)
        center = step0 / delta  # (D,) s that repeats the last step
        half = c / abs_delta  # (D,) allowed deviation in s
        lo_i = center - half
        hi_i = center + half
        if any_still:
            lo_i[still] = -np.inf
            hi_i[still] = np.inf
        lo = max(0.0, float(lo_i.max()))
        hi = min(s_max, float(hi_i.min()))
        # The stopping profile sits exactly on the deceleration limit, so
        # rounding can make the interval empty by ~1e-16: not worth a brake.
        if lo > hi + 1e-12:
            return 0.0, True
        return max(0.0, hi), False

    # ------------------------------------------------------------ trajectories
    def trajectory(self, targets: np.ndarray | None = None) -> np.ndarray:
        """(m, D) the points after the last command, one period apart, for a controller that
        times them itself (a JointTrajectory): each row of ``targets`` (n, D) (the plan's next
        targets, one per period) goes through the same limits as a real command (position
        bounds, velocity and acceleration from the point before, the velocity scale in force),
        each covering one full period, on a copy of the filter's state; then the points brake
        at max deceleration until the velocity is zero, so the last point is at rest. Points
        that would only repeat the one before at the end are left out (m = 0: the last command
        is already at rest). A malformed or non-finite ``targets`` row ends the plan there
        (the points brake to rest from the row before). Changes neither the filter's state nor
        its counters; empty before a joint state and while the e-stop is latched."""
        if self._q_prev is None or self._estop:
            return np.zeros((0, self._dof))
        sim = self._clone()
        rows: list[np.ndarray] = []
        if targets is not None:
            try:
                plan = np.asarray(targets, dtype=np.float64)
            except (TypeError, ValueError):
                plan = np.zeros((0, self._dof))
            if plan.ndim != 2 or plan.shape[1] != self._dof:
                plan = np.zeros((0, self._dof))
            for row in plan:
                if np.count_nonzero(np.isfinite(row)) != self._dof:
                    break
                sim._limit(row, 1.0)
                assert sim._q_prev is not None
                rows.append(sim._q_prev)
        # Brake to rest: every period the step shrinks by at most a*dt^2 per joint; bounded
        # by the number of periods braking from max_velocity takes.
        c = self._step_change_max
        for _ in range(int(np.ceil(float((self._step_max / c).max()))) + 2):
            step0 = sim._vstep
            if np.count_nonzero(step0) == 0:
                break
            q_prev = sim._q_prev
            assert q_prev is not None
            step = sim._brake_step(q_prev, step0, c)
            q = q_prev + step
            if sim._inside:
                q = np.minimum(np.maximum(q, self._pmin), self._pmax)
            sim._vstep = q - q_prev
            sim._set_q(q)
            if np.count_nonzero(sim._vstep):
                rows.append(q)
        while rows and np.array_equal(rows[-1], rows[-2] if len(rows) > 1 else self._q_prev):
            rows.pop()  # standing still at the end: the point before is the rest point
        return np.array(rows).reshape(len(rows), self._dof)

    def _clone(self) -> SafetyFilter:
        """A copy whose commands do not touch this filter (arrays are replaced, never written)."""
        sim = copy.copy(self)
        sim._stats = dict(self._stats)
        return sim

    def tick(self, now_s: float, *, on_schedule: bool = False) -> SafetyResult | None:
        """Call often (every period or faster). Returns a command only when none was sent for
        late_after_s (after a command from tick: for most of a period), so there is at most
        one per period; otherwise None. ``on_schedule``: the caller calls once per period at
        its own deadlines and had no action for this one: due when none went out for half a
        period (braking starts at the first deadline without an action), and at rest the rest
        point is held every period (the stream stays periodic; counted as 'stream').
        When due: while the e-stop is latched, its hold; while the last command was moving,
        one period of braking at max deceleration ('stream', or 'watchdog' past the timeout);
        at rest, None until no action was filtered for
        > watchdog_timeout_s, then a hold at the rest point ('watchdog'). Before the first joint
        state only an e-stop holds (command None). A non-finite now_s holds (braking, counted as
        'watchdog')."""
        if not _finite_real(now_s):
            return self._hold("watchdog", f"watchdog: now_s={now_s!r} is not finite", math.nan, brake=True,
                              from_tick=True)
        now_s = float(now_s)
        last = self._last_sent_s
        gap = None if last is None else now_s - last
        due_s = 0.5 * self._dt_s if on_schedule else self._repeat_s if self._last_from_tick else self._late_s
        if gap is not None and gap < due_s:
            return None  # a command went out less than a period ago (or the clock went back)
        if self._estop:
            return self._estop_hold(now_s, from_tick=True)
        if self._q_prev is None:
            return None  # nothing to command before a joint state (filter() says so per action)
        ref_s = self._last_filter_s if self._last_filter_s is not None else self._watch_ref_s
        if ref_s is None:
            self._watch_ref_s = now_s  # the watchdog runs from the first tick
            return None
        age_s = now_s - ref_s
        watchdog = age_s > self._limits.watchdog_timeout_s
        resting = gap is not None and gap > self._resume_s  # the controller held the last point
        moving = not resting and np.count_nonzero(self._vstep) > 0
        if not (moving or watchdog):
            if on_schedule and gap is not None:  # a periodic stream: the rest point, every period
                return self._hold("stream", REASON_REST.format(gap=gap), now_s, brake=True, from_tick=True)
            return None  # at rest: quiet until the watchdog
        if watchdog and not self._watchdog_active:
            self._watchdog_active = True
            self._stats["watchdog_trips"] += 1
        r = self._begin(now_s)
        if moving and not self._last_from_tick:
            self._stats["stream_stops"] += 1
        if watchdog:
            limit, reason = "watchdog", (f"watchdog: no action for {age_s:.3f} s "
                                         f"(> {self._limits.watchdog_timeout_s} s)")
        else:
            limit, reason = "stream", REASON_STREAM.format(gap=gap if gap is not None else math.nan)
        return self._hold(limit, reason, now_s, brake=True, r=r, from_tick=True)
