"""Build one observation per camera frame, with joint state interpolated at its stamp.

The camera runs at ~30 Hz, joint_states at ~100 Hz, an F/T sensor optionally
faster. Pairing messages 1:1 (message_filters' ApproximateTime) would throw
away most proprio samples or pair a frame with a sample up to half a joint
period away. Instead every camera frame is the anchor: the joint state is
linearly interpolated between the two samples that bracket the frame's stamp,
so the observation describes the robot at the instant the image was exposed.

Joint angles are interpolated linearly without wrapping at +-pi: the arms we
drive have joint limits, so a sample pair 10 ms apart never straddles the
wrap-around. A continuous joint that does wrap would need angular
interpolation here.

Everything is plain Python + numpy and never raises on bad message content:
bad input is rejected with a reason and counted, so a node can log it at a
throttled rate and publish the counters as diagnostics (``report``).

Stamps against this node's clock. Each source (camera, joint_states, wrench) has a
configured correction added to its stamps (``<source>_stamp_offset_s``: a driver on
another computer whose clock is off by a known constant). Given the node's clock at
arrival (``now_s``), a message stamped more than ``max_stamp_future_s`` ahead of it, or
older than it can still be useful, is dropped on its own reason (``future_stamp``,
``too_old``) and never becomes the reference later messages are ordered against: one
bad stamp costs one message. Per source, the median of (arrival - stamp) over the last
50 messages is the measured offset (transport latency plus clock disagreement), reported
with a warning beyond ``max_stamp_offset_s``. A clock jump is told from a stall by its
steadiness: a source whose messages keep being rejected by stamp with the same offset
(within 0.25 s) for ``clock_jump_after_s`` of arrival time has jumped; its state is reset
and the jump reported as an event (``pop_events``). The node's own clock going back (a
sim time reset) forgets every stored stamp that is now in its future.

Size: the synchronizer and its input checks (stamps, clocks, skew, interpolation,
counters, report) are one algorithm; the checks are most of the lines and belong next to it.
"""

from __future__ import annotations

import bisect
import math
import numbers
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hybridvla_ros.core.image import IMAGE_REJECT_REASONS
from hybridvla_ros.core.joints import DuplicateJointsError, JointIndex, MissingJointsError
from hybridvla_ros.core.monitoring import Level

__all__ = [
    "SyncConfig",
    "SyncedObservation",
    "SyncReport",
    "ObservationSynchronizer",
    "SOURCES",
    "FRAME_DROP_REASONS",
    "JOINT_REJECT_REASONS",
    "WRENCH_REJECT_REASONS",
]

# Category keys used in returned reasons ("<key>: <detail>") and in stats
# ("dropped_<key>", "joint_states_rejected_<key>", "wrenches_rejected_<key>").
# A frame refused by the image decoder is counted as dropped_image_<IMAGE_REJECT_REASONS key>.
FRAME_DROP_REASONS: tuple[str, ...] = (
    "bad_stamp",
    "future_stamp",
    "too_old",
    "out_of_order",
    "no_joint_state",
    "skew",
    "no_wrench",
    "superseded",
    *(f"image_{key}" for key in IMAGE_REJECT_REASONS),
)
JOINT_REJECT_REASONS: tuple[str, ...] = (
    "bad_stamp",
    "future_stamp",
    "too_old",
    "bad_input",
    "length_mismatch",
    "velocity_length",
    "duplicate_names",
    "missing_joints",
    "non_finite",
    "out_of_order",
    "duplicate_stamp",
)
WRENCH_REJECT_REASONS: tuple[str, ...] = (
    "bad_stamp",
    "future_stamp",
    "too_old",
    "bad_input",
    "non_finite",
    "out_of_order",
    "duplicate_stamp",
)

PENDING = "pending"

_SKEW_WINDOW = 100  # observations the skew percentiles are computed over
SOURCES: tuple[str, ...] = ("camera", "joint_states", "wrench")
_OFFSET_WINDOW = 50  # messages per source the offset median is computed over
_MIN_OFFSET_SAMPLES = 5  # fewer give no offset warning
_JUMP_SPREAD_S = 0.25  # a clock jump's messages keep their offset within this
_MIN_JUMP_MESSAGES = 3
# Reasons that say nothing is wrong (a newer frame replaced a waiting one): not warned about.
_QUIET_DROPS = frozenset({"superseded"})


def _finite(field: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{field} must be a finite number, got {value!r}")
    return float(value)


def _positive_finite(field: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{field} must be a number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{field} must be finite and > 0, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class SyncConfig:
    """How joint state, wrench and camera frames are paired.

    Raises ValueError from the constructor, naming the field, when
    ``joint_names`` is empty / has duplicates / non-string or empty entries,
    or when a time is not a positive finite number. A list of joint names is
    stored as a tuple.
    """

    joint_names: tuple[str, ...]  # the embodiment's joints, in action order
    max_skew_s: float  # max distance from the frame stamp to the nearest joint sample used
    max_age_s: float  # frames older than now - max_age_s are dropped
    history_s: float = 2.0  # proprio / wrench kept, measured back from the newest sample
    wrench_required: bool = False
    max_wrench_age_s: float = 0.1  # max |wrench stamp - frame stamp|
    # joints (of joint_names) given the nearer sample's value instead of an interpolated one:
    # a switch such as a suction cup's vacuum (0 / 1) never reads half on
    held_joints: tuple[str, ...] = ()
    # messages stamped further ahead of the node's clock at arrival are dropped (future_stamp)
    max_stamp_future_s: float = 0.1
    # added to each source's stamps: a driver whose clock is known to be off by a constant
    camera_stamp_offset_s: float = 0.0
    joint_states_stamp_offset_s: float = 0.0
    wrench_stamp_offset_s: float = 0.0
    # a source whose median (arrival - stamp) is beyond +-this is warned about in the report
    max_stamp_offset_s: float = 0.15
    # a source rejected by stamp with a steady offset for this long (arrival time) has jumped clocks
    clock_jump_after_s: float = 0.5

    def __post_init__(self) -> None:
        names = self.joint_names
        if isinstance(names, str) or not isinstance(names, Sequence):
            raise ValueError(f"joint_names must be a sequence of str, got {_short(names)}")
        names = tuple(names)
        if not names:
            raise ValueError("joint_names must not be empty, got ()")
        for name in names:
            if not isinstance(name, str) or not name:
                raise ValueError(
                    f"joint_names entries must be non-empty str, got {name!r} in {_short(names)}"
                )
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"joint_names must be unique, got duplicates {dupes!r}")
        object.__setattr__(self, "joint_names", names)
        for field in ("max_skew_s", "max_age_s", "history_s", "max_wrench_age_s", "max_stamp_future_s",
                      "max_stamp_offset_s", "clock_jump_after_s"):
            object.__setattr__(self, field, _positive_finite(field, getattr(self, field)))
        for source in SOURCES:
            field = f"{source}_stamp_offset_s"
            object.__setattr__(self, field, _finite(field, getattr(self, field)))
        if not isinstance(self.wrench_required, bool):
            raise ValueError(f"wrench_required must be a bool, got {self.wrench_required!r}")
        held = tuple(self.held_joints) if not isinstance(self.held_joints, str) else (self.held_joints,)
        unknown = [n for n in held if n not in names]
        if unknown:
            raise ValueError(f"held_joints must be among joint_names, got {unknown!r}")
        object.__setattr__(self, "held_joints", held)


@dataclass(frozen=True)
class SyncedObservation:
    """Proprio (and optional wrench) at the instant a camera frame was stamped.

    Arrays are read-only so an observation can be shared between consumers.
    """

    stamp_s: float  # the camera frame's stamp
    positions: np.ndarray  # (D,) float64, in config.joint_names order
    velocities: np.ndarray  # (D,) float64, zeros where the driver sends none
    skew_s: float  # distance from stamp_s to the nearest joint sample used
    interpolated: bool  # True when two samples bracketed stamp_s
    force: np.ndarray | None  # (3,) nearest wrench within max_wrench_age_s, else None
    torque: np.ndarray | None  # (3,)


@dataclass(frozen=True)
class SyncReport:
    """What the synchronizer has to say since the previous report (a DiagnosticStatus's content)."""

    level: Level  # OK, or WARN when a source's offset is beyond the bound, a clock jumped or inputs were dropped
    message: str  # one line: observations made, then each problem with what to do about it
    values: tuple[tuple[str, str], ...]  # counters (totals), measured and configured offsets


class _SourceClock:
    """One source's stamps against the node's clock: its correction, measured offset and jump detection."""

    def __init__(self, name: str, correction_s: float, max_past_s: float) -> None:
        self.name = name
        self.correction_s = correction_s  # added to the source's stamps
        self.max_past_s = max_past_s  # older (after correction) than now - this is too_old
        self.lags_s: deque[float] = deque(maxlen=_OFFSET_WINDOW)  # arrival - corrected stamp
        self._run_s: deque[float] = deque(maxlen=_OFFSET_WINDOW)  # lags of consecutive stamp rejects
        self._run_start_s: float | None = None  # arrival of the run's first message
        self._run_lo_s = self._run_hi_s = 0.0
        self._settled_lag_s: float | None = None  # the last jump reported, while its rejects go on

    def median_lag_s(self) -> float:
        """Median of (arrival - corrected stamp) over the recent messages; NaN before the first."""
        return float(np.median(np.fromiter(self.lags_s, dtype=np.float64))) if self.lags_s else math.nan

    def accepted(self) -> None:
        """A message passed the stamp checks: any run of rejects is over."""
        self._run_s.clear()
        self._run_start_s = None
        self._settled_lag_s = None

    def rejected(self, now_s: float, lag_s: float, jump_after_s: float) -> float | None:
        """A message was rejected by its stamp; returns the jump (its median lag) when this completes one."""
        if self._settled_lag_s is not None and abs(lag_s - self._settled_lag_s) <= _JUMP_SPREAD_S:
            return None  # the jump already reported goes on
        start = self._run_start_s
        if (start is None or now_s < start
                or max(self._run_hi_s, lag_s) - min(self._run_lo_s, lag_s) > _JUMP_SPREAD_S):
            # A new run: a backlog after a stall arrives at once with falling lags and never
            # spans jump_after_s of arrival time at one offset; a jumped clock does.
            self._run_s.clear()
            self._run_start_s = start = now_s
            self._run_lo_s = self._run_hi_s = lag_s
        self._run_lo_s, self._run_hi_s = min(self._run_lo_s, lag_s), max(self._run_hi_s, lag_s)
        self._run_s.append(lag_s)
        if now_s - start < jump_after_s or len(self._run_s) < _MIN_JUMP_MESSAGES:
            return None
        jump = float(np.median(np.fromiter(self._run_s, dtype=np.float64)))
        self.lags_s.clear()
        self.lags_s.extend(self._run_s)  # the offset estimate follows the new clock at once
        self._run_s.clear()
        self._run_start_s = None
        self._settled_lag_s = jump
        return jump

    def forget(self) -> None:
        """The node's clock jumped: offsets measured against it mean nothing now."""
        self.lags_s.clear()
        self.accepted()


def _short(value: object, limit: int = 80) -> str:
    """repr() cut to ``limit`` chars: reasons end up in logs at message rate."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def _finite_stamp(value: object) -> float | None:
    """``value`` as a float if it is a finite real number, else None."""
    # Strings would convert via float(); a stamp is never legitimately text.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    try:
        stamp = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return stamp if math.isfinite(stamp) else None


def _float_vector(values: object) -> np.ndarray | None:
    """``values`` as a 1-D float64 array, or None if it is not a flat numeric sequence."""
    if isinstance(values, (str, bytes)):
        return None
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        return None
    if arr.ndim != 1:
        return None
    return arr


class ObservationSynchronizer:
    """Pairs each camera frame with joint state (and wrench) interpolated at its stamp.

    Feed it from the node's callbacks: ``add_joint_state`` for every
    joint_states message (then ``poll_pending``), ``add_wrench`` for every
    wrench, ``add_frame`` for every image. All stamps and ``now_s`` are in
    seconds on the same clock. Not thread-safe: call it from one callback
    group or guard it with a lock.

    No method raises on message content; rejects and drops are returned as
    ``(False | None, "<key>: <detail>")`` and counted in ``stats``.
    """

    def __init__(self, config: SyncConfig):
        """Create an empty synchronizer. Raises TypeError if ``config`` is not a SyncConfig."""
        if not isinstance(config, SyncConfig):
            raise TypeError(f"config must be a SyncConfig, got {type(config).__name__!r}")
        self._config = config
        self._dim = len(config.joint_names)
        self._joint_index = {name: i for i, name in enumerate(config.joint_names)}
        self._held = np.array([self._joint_index[n] for n in config.held_joints], dtype=np.intp)  # (H,)
        # Where each configured joint sits in a joint_states name list (core.joints' rule).
        self._message_index = JointIndex(config.joint_names)

        # Parallel lists, sorted by stamp: bisect needs random access.
        self._joint_stamps_s: list[float] = []
        self._joint_pos: list[np.ndarray] = []  # each (D,)
        self._joint_vel: list[np.ndarray] = []  # each (D,)
        self._wrench_stamps_s: list[float] = []
        self._wrench_ft: list[np.ndarray] = []  # each (6,): force then torque

        self._last_frame_stamp_s: float | None = None
        self._pending_stamp_s: float | None = None
        self._skews_s: deque[float] = deque(maxlen=_SKEW_WINDOW)

        c = config
        self._clocks: dict[str, _SourceClock] = {
            "camera": _SourceClock("camera", c.camera_stamp_offset_s, c.max_age_s),
            # A joint sample or wrench older than this can only be paired with a frame too old to use.
            "joint_states": _SourceClock("joint_states", c.joint_states_stamp_offset_s, c.max_age_s + c.max_skew_s),
            "wrench": _SourceClock("wrench", c.wrench_stamp_offset_s, c.max_age_s + c.max_wrench_age_s),
        }
        self._last_now_s: float | None = None
        self._events: list[str] = []
        self._reported: dict[str, int] = {}
        self._reported_at_s: float | None = None

        self._counts: dict[str, int] = {
            "frames_in": 0,
            "observations_out": 0,
            "joint_states_in": 0,
            "joint_states_accepted": 0,
            "wrenches_in": 0,
            "wrenches_accepted": 0,
            "clock_jumps": 0,  # a source's clock jumped (its state was reset)
            "node_clock_jumps": 0,  # this node's clock went back (stored stamps in its future forgotten)
        }
        for key in FRAME_DROP_REASONS:
            self._counts[f"dropped_{key}"] = 0
        for key in JOINT_REJECT_REASONS:
            self._counts[f"joint_states_rejected_{key}"] = 0
        for key in WRENCH_REJECT_REASONS:
            self._counts[f"wrenches_rejected_{key}"] = 0

    @property
    def config(self) -> SyncConfig:
        """The configuration this synchronizer was built with."""
        return self._config

    @property
    def has_pending(self) -> bool:
        """True while a frame waits for a joint sample newer than its stamp."""
        return self._pending_stamp_s is not None

    # ------------------------------------------------------------------ clocks

    def pop_events(self) -> list[str]:
        """Clock jumps found since the last call, one line each (for the node to log), oldest first."""
        events, self._events = self._events, []
        return events

    def _observe_now(self, now: float) -> None:
        """Track the node's clock; when it goes back, forget what is stamped in its new future."""
        last = self._last_now_s
        self._last_now_s = now
        if last is None or now >= last - self._config.max_stamp_future_s:
            return
        horizon = now + self._config.max_stamp_future_s
        forgotten = []
        for what, stamps, payloads in (("joint samples", self._joint_stamps_s, (self._joint_pos, self._joint_vel)),
                                       ("wrenches", self._wrench_stamps_s, (self._wrench_ft,))):
            k = bisect.bisect_right(stamps, horizon)
            if k < len(stamps):
                forgotten.append(f"{len(stamps) - k} {what}")
                del stamps[k:]
                for payload in payloads:
                    del payload[k:]
        if self._last_frame_stamp_s is not None and self._last_frame_stamp_s > horizon:
            self._last_frame_stamp_s = None
            forgotten.append("the frame order")
        if self._pending_stamp_s is not None and self._pending_stamp_s > horizon:
            self._pending_stamp_s = None
            self._drop("superseded", "the node's clock jumped back while a frame was pending")
            forgotten.append("a pending frame")
        for clock in self._clocks.values():
            clock.forget()
        self._counts["node_clock_jumps"] += 1
        self._events.append(
            f"this node's clock jumped back {last - now:.3f} s (from {last:.3f} to {now:.3f}: a sim time reset?); "
            f"forgot what was stamped after it: {', '.join(forgotten) or 'nothing'}")

    def _now(self, now_s: object) -> float | None:
        """``now_s`` as a float, tracked as the node's clock, or None if it is not a finite number."""
        now = _finite_stamp(now_s)
        if now is not None:
            self._observe_now(now)
        return now

    def _check_stamp(self, source: str, stamp: float, now: float | None) -> tuple[float, str, str]:
        """The corrected stamp, and ('', '') or the reject (key, detail) when it is implausible at ``now``."""
        clock = self._clocks[source]
        stamp = stamp + clock.correction_s
        if now is None:
            return stamp, "", ""
        lag = now - stamp
        clock.lags_s.append(lag)
        future = self._config.max_stamp_future_s
        if lag < -future:
            return stamp, "future_stamp", (
                f"{source} stamp {stamp!r} is {-lag:.3f} s ahead of this node's clock {now!r} "
                f"(max_stamp_future_s={future})")
        if lag > clock.max_past_s:
            return stamp, "too_old", (
                f"{source} stamp {stamp!r} is {lag:.3f} s old at arrival (max {clock.max_past_s:.3f} s)")
        return stamp, "", ""

    def _admit_stamp(self, source: str, stamp_s: object, now_s: object,
                     now_required: bool = False) -> tuple[float, float | None, str, str]:
        """(corrected stamp, now, reject key, detail): key '' when the stamp may be used. Non-finite
        numbers are 'bad_stamp'; implausible stamps at ``now_s`` count towards a clock jump."""
        stamp = _finite_stamp(stamp_s)
        now = self._now(now_s) if now_s is not None or now_required else None
        if stamp is None or ((now_s is not None or now_required) and now is None):
            return 0.0, None, "bad_stamp", (
                f"stamp_s and now_s must be finite numbers, got {_short(stamp_s)}, {_short(now_s)}")
        stamp, key, detail = self._check_stamp(source, stamp, now)
        if key:
            self._stamp_rejected(source, stamp, now)
        return stamp, now, key, detail

    def _stamp_rejected(self, source: str, stamp: float, now: float | None) -> None:
        """Count a stamp-based reject towards a clock jump of ``source``; reset it when one is found."""
        if now is None:
            return
        clock = self._clocks[source]
        jump = clock.rejected(now, now - stamp, self._config.clock_jump_after_s)
        if jump is None:
            return
        self._counts["clock_jumps"] += 1
        self._reset_source(source)
        where = f"{abs(jump):.3f} s {'behind' if jump > 0 else 'ahead of'} this node's clock"
        if -self._config.max_stamp_future_s <= jump <= clock.max_past_s:
            after = "its messages are accepted again"
        else:
            after = (f"its messages stay dropped until their stamps fit; if {source}'s clock is off on "
                     f"purpose, set {source}_stamp_offset_s: {clock.correction_s + jump:+.3f}")
        self._events.append(
            f"{source} clock jump: its stamps have been {where} for {self._config.clock_jump_after_s} s; "
            f"its state is reset and {after}")

    def _reset_source(self, source: str) -> None:
        if source == "joint_states":
            self._joint_stamps_s.clear()
            self._joint_pos.clear()
            self._joint_vel.clear()
        elif source == "wrench":
            self._wrench_stamps_s.clear()
            self._wrench_ft.clear()
        else:
            self._last_frame_stamp_s = None
            if self._pending_stamp_s is not None:
                self._pending_stamp_s = None
                self._drop("superseded", "the camera's clock jumped while a frame was pending")

    # ------------------------------------------------------------------ joints

    def _reject_joint(self, key: str, detail: str) -> tuple[bool, str]:
        self._counts[f"joint_states_rejected_{key}"] += 1
        return False, f"{key}: {detail}"

    def _order_for(self, names: tuple[str, ...]) -> np.ndarray | tuple[str, str]:
        """Indices into the message that give config order, or the reject (key, detail)."""
        try:
            return self._message_index.indices(names)
        except MissingJointsError as exc:
            return ("missing_joints", f"joint_states lacks configured joints {list(exc.joints)!r}")
        except DuplicateJointsError as exc:
            return ("duplicate_names", f"joint names appear more than once: {list(exc.joints)!r}")

    def add_joint_state(
        self,
        stamp_s: float,
        names: Sequence[str],
        positions: Sequence[float],
        velocities: Sequence[float] = (),
        now_s: float | None = None,
    ) -> tuple[bool, str]:
        """Store one joint_states sample, reordered to ``config.joint_names``.

        Returns (True, '') when stored, else (False, '<key>: <detail>') with
        key one of JOINT_REJECT_REASONS, counted in stats. Never raises.
        Rejects: non-finite stamp, names/positions length mismatch, non-empty
        velocities of another length, a configured joint named twice or
        missing (named in the reason; the rule of core.joints), NaN/Inf in a
        configured joint's position or velocity, and stamps <= the newest
        stored one. Joints not in the config are ignored, including their
        values and duplicates. Empty velocities are stored as zeros.

        ``stamp_s`` is corrected by ``joint_states_stamp_offset_s``. With
        ``now_s`` (the node's clock at arrival) a stamp more than
        max_stamp_future_s ahead of it ('future_stamp') or older than
        max_age_s + max_skew_s ('too_old') is rejected before it can become
        the newest sample, and the offset and clock jumps are tracked.
        """
        self._counts["joint_states_in"] += 1
        stamp, now, key, detail = self._admit_stamp("joint_states", stamp_s, now_s)
        if key:
            return self._reject_joint(key, detail)
        if isinstance(names, (str, bytes)):
            return self._reject_joint("bad_input", f"names must be a sequence of str, got {_short(names)}")
        try:
            name_tuple = tuple(names)
        except TypeError:
            return self._reject_joint("bad_input", f"names must be a sequence of str, got {_short(names)}")
        if not all(isinstance(n, str) for n in name_tuple):
            bad = next(n for n in name_tuple if not isinstance(n, str))
            return self._reject_joint("bad_input", f"names must all be str, got {_short(bad)}")
        pos = _float_vector(positions)
        if pos is None:
            return self._reject_joint(
                "bad_input", f"positions must be a flat list of numbers, got {_short(positions)}"
            )
        vel = _float_vector(velocities)
        if vel is None:
            return self._reject_joint(
                "bad_input", f"velocities must be a flat list of numbers, got {_short(velocities)}"
            )
        if pos.size != len(name_tuple):
            return self._reject_joint(
                "length_mismatch", f"{len(name_tuple)} names but {pos.size} positions"
            )
        if vel.size not in (0, len(name_tuple)):
            return self._reject_joint(
                "velocity_length", f"{len(name_tuple)} names but {vel.size} velocities"
            )
        order = self._order_for(name_tuple)
        if isinstance(order, tuple):
            return self._reject_joint(*order)
        pos = pos[order]  # (D,)
        vel = vel[order] if vel.size else np.zeros(self._dim)  # (D,)
        if not (np.isfinite(pos).all() and np.isfinite(vel).all()):
            bad_joints = [
                n
                for n, p, v in zip(self._config.joint_names, pos, vel)
                if not (math.isfinite(p) and math.isfinite(v))
            ]
            return self._reject_joint("non_finite", f"NaN/Inf in position or velocity of {_short(bad_joints)}")
        if self._joint_stamps_s:
            newest = self._joint_stamps_s[-1]
            if stamp == newest:
                return self._reject_joint("duplicate_stamp", f"stamp_s {stamp!r} already stored")
            if stamp < newest:
                self._stamp_rejected("joint_states", stamp, now)
                return self._reject_joint(
                    "out_of_order", f"stamp_s {stamp!r} is older than the newest sample {newest!r}"
                )
        self._clocks["joint_states"].accepted()
        self._joint_stamps_s.append(stamp)
        self._joint_pos.append(_readonly(pos))
        self._joint_vel.append(_readonly(vel))
        self._prune(self._joint_stamps_s, self._joint_pos, self._joint_vel)
        self._counts["joint_states_accepted"] += 1
        return True, ""

    def _prune(self, stamps: list[float], *payloads: list[np.ndarray]) -> None:
        # Keep everything newer than newest - history_s, plus one sample
        # before that so a frame right at the edge still has a bracket.
        cutoff = stamps[-1] - self._config.history_s
        k = bisect.bisect_left(stamps, cutoff) - 1
        if k > 0:
            del stamps[:k]
            for p in payloads:
                del p[:k]

    # ------------------------------------------------------------------ wrench

    def _reject_wrench(self, key: str, detail: str) -> tuple[bool, str]:
        self._counts[f"wrenches_rejected_{key}"] += 1
        return False, f"{key}: {detail}"

    def add_wrench(
        self, stamp_s: float, force: Sequence[float], torque: Sequence[float], now_s: float | None = None
    ) -> tuple[bool, str]:
        """Store one force/torque sample.

        Returns (True, '') when stored, else (False, '<key>: <detail>') with
        key one of WRENCH_REJECT_REASONS, counted in stats. Never raises.
        Rejects: non-finite stamp, force or torque not 3 numbers, NaN/Inf,
        stamps <= the newest stored one, and with ``now_s`` stamps more than
        max_stamp_future_s ahead of it or older than max_age_s + max_wrench_age_s.
        ``stamp_s`` is corrected by ``wrench_stamp_offset_s``.
        """
        self._counts["wrenches_in"] += 1
        stamp, now, key, detail = self._admit_stamp("wrench", stamp_s, now_s)
        if key:
            return self._reject_wrench(key, detail)
        f = _float_vector(force)
        t = _float_vector(torque)
        if f is None or f.size != 3:
            return self._reject_wrench("bad_input", f"force must be 3 numbers, got {_short(force)}")
        if t is None or t.size != 3:
            return self._reject_wrench("bad_input", f"torque must be 3 numbers, got {_short(torque)}")
        ft = np.concatenate([f, t])  # (6,)
        if not np.isfinite(ft).all():
            return self._reject_wrench(
                "non_finite", f"NaN/Inf in force {f.tolist()!r} or torque {t.tolist()!r}"
            )
        if self._wrench_stamps_s:
            newest = self._wrench_stamps_s[-1]
            if stamp == newest:
                return self._reject_wrench("duplicate_stamp", f"stamp_s {stamp!r} already stored")
            if stamp < newest:
                self._stamp_rejected("wrench", stamp, now)
                return self._reject_wrench(
                    "out_of_order", f"stamp_s {stamp!r} is older than the newest wrench {newest!r}"
                )
        self._clocks["wrench"].accepted()
        self._wrench_stamps_s.append(stamp)
        self._wrench_ft.append(_readonly(ft))
        self._prune(self._wrench_stamps_s, self._wrench_ft)
        self._counts["wrenches_accepted"] += 1
        return True, ""

    def _nearest_wrench(self, stamp: float) -> np.ndarray | None:
        stamps = self._wrench_stamps_s
        if not stamps:
            return None
        i = bisect.bisect_left(stamps, stamp)
        candidates = [j for j in (i - 1, i) if 0 <= j < len(stamps)]
        j = min(candidates, key=lambda c: abs(stamps[c] - stamp))
        if abs(stamps[j] - stamp) > self._config.max_wrench_age_s:
            return None
        return self._wrench_ft[j]

    # ------------------------------------------------------------------ frames

    def _drop(self, key: str, detail: str) -> tuple[None, str]:
        self._counts[f"dropped_{key}"] += 1
        return None, f"{key}: {detail}"

    def _pair(self, stamp: float) -> tuple[SyncedObservation | None, str]:
        """Pair a frame already checked for age and order. Counts drops, not 'pending'."""
        stamps = self._joint_stamps_s
        if not stamps:
            return self._drop("no_joint_state", "no joint_states sample received yet")
        max_skew = self._config.max_skew_s
        i = bisect.bisect_right(stamps, stamp)  # stamps[i-1] <= stamp < stamps[i]
        interpolated = False
        if i == len(stamps):
            skew = stamp - stamps[-1]
            if skew > max_skew:
                # Joint samples newer than the frame are probably in flight;
                # poll_pending retries once they arrive.
                return None, PENDING
            # Hold the newest sample rather than extrapolate: extrapolation
            # amplifies velocity noise, while holding bounds the error by
            # max_skew_s times the joint speed.
            pos, vel = self._joint_pos[-1], self._joint_vel[-1]
        elif i == 0:
            skew = stamps[0] - stamp
            if skew > max_skew:
                return self._drop(
                    "skew",
                    f"frame stamp {stamp!r} is {skew:.4f} s before the oldest joint sample kept "
                    f"(max_skew_s={max_skew}); history_s={self._config.history_s} may be too short",
                )
            pos, vel = self._joint_pos[0], self._joint_vel[0]
        else:
            t0, t1 = stamps[i - 1], stamps[i]
            skew = min(stamp - t0, t1 - stamp)
            if skew > max_skew:
                return self._drop(
                    "skew",
                    f"nearest joint sample is {skew:.4f} s from frame stamp {stamp!r} "
                    f"(gap {t0!r}..{t1!r}, max_skew_s={max_skew})",
                )
            if stamp == t0:
                pos, vel = self._joint_pos[i - 1], self._joint_vel[i - 1]
            else:
                alpha = (stamp - t0) / (t1 - t0)
                p0, p1 = self._joint_pos[i - 1], self._joint_pos[i]
                v0, v1 = self._joint_vel[i - 1], self._joint_vel[i]
                pos = p0 + alpha * (p1 - p0)  # (D,)
                pos[self._held] = (p0 if alpha < 0.5 else p1)[self._held]  # switches: the nearer sample
                pos = _readonly(pos)
                vel = _readonly(v0 + alpha * (v1 - v0))  # (D,)
                interpolated = True

        force = torque = None
        ft = self._nearest_wrench(stamp)
        if ft is not None:
            force, torque = ft[:3], ft[3:]
        elif self._config.wrench_required:
            return self._drop(
                "no_wrench",
                f"no wrench within max_wrench_age_s={self._config.max_wrench_age_s} of frame stamp {stamp!r}",
            )

        self._counts["observations_out"] += 1
        self._skews_s.append(skew)
        return (
            SyncedObservation(
                stamp_s=stamp,
                positions=pos,
                velocities=vel,
                skew_s=skew,
                interpolated=interpolated,
                force=force,
                torque=torque,
            ),
            "",
        )

    def add_frame(self, stamp_s: float, now_s: float) -> tuple[SyncedObservation | None, str]:
        """Try to build the observation for a camera frame stamped ``stamp_s``.

        Returns (obs, '') when joint samples bracket the stamp within
        max_skew_s (linear interpolation, skew = distance to the nearer
        sample) or the nearest sample is within max_skew_s (held, not
        extrapolated). Returns (None, 'pending') when the frame is newer than
        the newest joint sample by more than max_skew_s: it is kept (only the
        newest pending frame; an older one is dropped as 'superseded') and
        completed by ``poll_pending``. Otherwise returns (None, '<key>: <detail>')
        with key one of FRAME_DROP_REASONS: bad_stamp, future_stamp (stamp >
        now + max_stamp_future_s), too_old (stamp < now - max_age_s),
        out_of_order (stamp <= previous frame's), no_joint_state, skew,
        no_wrench (only when wrench_required). A frame dropped for its stamp
        changes nothing else: it neither sets the frame order nor replaces
        the pending frame. ``stamp_s`` is corrected by camera_stamp_offset_s;
        ``now_s`` is the node's clock when the frame arrived. Never raises.
        """
        self._counts["frames_in"] += 1
        stamp, now, key, detail = self._admit_stamp("camera", stamp_s, now_s, now_required=True)
        if key:
            return self._drop(key, detail)
        last = self._last_frame_stamp_s
        if last is not None and stamp <= last:
            self._stamp_rejected("camera", stamp, now)
            return self._drop(
                "out_of_order", f"frame stamp {stamp!r} is not after the previous frame {last!r}"
            )
        self._clocks["camera"].accepted()
        self._last_frame_stamp_s = stamp
        if self._pending_stamp_s is not None:
            # The policy wants the latest view; an older frame still waiting
            # for proprio is worth less than this one.
            self._pending_stamp_s = None
            self._drop("superseded", "a newer frame arrived while this one was pending")
        obs, reason = self._pair(stamp)
        if reason == PENDING:
            self._pending_stamp_s = stamp
        return obs, reason

    def drop_frame(self, key: str, detail: str) -> tuple[None, str]:
        """Count a frame the node could not even read (``key`` an image_* of FRAME_DROP_REASONS).

        Returns (None, '<key>: <detail>') like ``add_frame``; an unknown key is
        counted as image_malformed. Never raises.
        """
        self._counts["frames_in"] += 1
        if key not in FRAME_DROP_REASONS or not key.startswith("image_"):
            key = "image_malformed"
        return self._drop(key, detail)

    def poll_pending(self, now_s: float) -> SyncedObservation | None:
        """Retry the pending frame; call after each accepted ``add_joint_state``.

        Returns the observation once a joint sample has arrived close enough
        to the frame, else None. The frame stays pending while joints still
        lag it, and is dropped (counted) when it becomes older than
        now - max_age_s or the new samples leave it with too much skew.
        Never raises.
        """
        stamp = self._pending_stamp_s
        if stamp is None:
            return None
        now = self._now(now_s)
        if now is None or self._pending_stamp_s is None:  # (the clock went back past the frame)
            return None
        if now - stamp > self._config.max_age_s:
            self._pending_stamp_s = None
            self._drop("too_old", f"pending frame {stamp!r} expired at now {now!r}")
            return None
        obs, reason = self._pair(stamp)
        if reason != PENDING:
            self._pending_stamp_s = None
        return obs

    def reset(self) -> None:
        """Forget all samples, the pending frame and the frame order; keep the counters.

        Call it when the clock jumps backwards (bag loop, sim reset): every
        later message would otherwise be rejected as out of order.
        """
        self._joint_stamps_s.clear()
        self._joint_pos.clear()
        self._joint_vel.clear()
        self._wrench_stamps_s.clear()
        self._wrench_ft.clear()
        self._last_frame_stamp_s = None
        self._last_now_s = None
        for clock in self._clocks.values():
            clock.forget()
        if self._pending_stamp_s is not None:
            self._pending_stamp_s = None
            self._drop("superseded", "synchronizer reset while a frame was pending")

    @property
    def stats(self) -> dict[str, int | float]:
        """Counters and skew summary for diagnostics.

        Keys: frames_in, observations_out, pending (0/1), dropped_<key> for
        each FRAME_DROP_REASONS key, joint_states_in, joint_states_accepted,
        joint_states_rejected_<key>, wrenches_in, wrenches_accepted,
        wrenches_rejected_<key>, clock_jumps, node_clock_jumps, skew_p50_s /
        skew_max_s over the last 100 observations (NaN before the first), and
        <source>_offset_s for each of SOURCES: the median of (arrival -
        corrected stamp) over its last 50 messages given with now_s (NaN
        before the first). Every frame_in ends up in exactly one of
        observations_out, a dropped_<key>, or pending.
        """
        out: dict[str, int | float] = dict(self._counts)
        out["pending"] = int(self._pending_stamp_s is not None)
        if self._skews_s:
            skews = np.fromiter(self._skews_s, dtype=np.float64)
            out["skew_p50_s"] = float(np.median(skews))
            out["skew_max_s"] = float(skews.max())
        else:
            out["skew_p50_s"] = math.nan
            out["skew_max_s"] = math.nan
        for source, clock in self._clocks.items():
            out[f"{source}_offset_s"] = clock.median_lag_s()
        return out

    def report(self, now_s: float) -> SyncReport:
        """Level, message and values for /diagnostics; the message covers what happened since the last report.

        WARN when a source's measured offset is beyond +-max_stamp_offset_s
        (with the correction to set if its clock is off), when a clock jumped,
        or when frames, joint_states or wrenches were dropped (by reason;
        superseded frames are normal and not warned about). Never raises.
        """
        stats = self.stats
        counts = {k: int(v) for k, v in stats.items() if isinstance(v, int)}
        now = _finite_stamp(now_s)
        since = self._reported
        delta = {k: v - since.get(k, 0) for k, v in counts.items()}
        period = "" if now is None or self._reported_at_s is None else f" in the last {now - self._reported_at_s:.1f} s"
        self._reported, self._reported_at_s = counts, now

        problems: list[str] = []
        bound = self._config.max_stamp_offset_s
        for source, clock in self._clocks.items():
            lag = clock.median_lag_s()
            if len(clock.lags_s) < _MIN_OFFSET_SAMPLES or abs(lag) <= bound:
                continue
            side = "behind" if lag > 0 else "ahead of"
            dropped = ""
            if lag > clock.max_past_s:
                dropped = " (so they are dropped as too_old)"
            elif lag < -self._config.max_stamp_future_s:
                dropped = " (so they are dropped as future_stamp)"
            problems.append(
                f"{source} stamps are {abs(lag):.3f} s {side} their arrival (median of {len(clock.lags_s)}, "
                f"max_stamp_offset_s={bound}){dropped}: a slow link, or a clock that is off; "
                f"if it is the clock, set {source}_stamp_offset_s: {clock.correction_s + lag:+.3f}")
        jumps = delta["clock_jumps"] + delta["node_clock_jumps"]
        if jumps:
            problems.append(f"{jumps} clock jump(s), state reset (see the log)")
        for label, prefix in (("frames dropped", "dropped_"), ("joint_states rejected", "joint_states_rejected_"),
                              ("wrenches rejected", "wrenches_rejected_")):
            parts = [f"{k[len(prefix):]} {n}" for k, n in delta.items()
                     if k.startswith(prefix) and n > 0 and k[len(prefix):] not in _QUIET_DROPS]
            if parts:
                problems.append(f"{label}: {', '.join(parts)}")
        message = f"{delta['observations_out']} observations{period}"
        if problems:
            message += "; " + "; ".join(problems)
        values: list[tuple[str, str]] = [("observations_since_last_report", str(delta["observations_out"]))]
        for key, value in stats.items():
            values.append((key, str(value) if isinstance(value, int) else f"{value:.6f}"))
        for source, clock in self._clocks.items():
            values.append((f"{source}_stamp_offset_s", f"{clock.correction_s:.6f}"))
        return SyncReport(level=Level.WARN if problems else Level.OK, message=message, values=tuple(values))
