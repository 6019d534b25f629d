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
throttled rate and publish the counters as diagnostics.

Size: the synchronizer and its input checks (stamps, skew, interpolation, counters)
are one algorithm; the checks are most of the lines and belong next to it.
"""

from __future__ import annotations

import bisect
import math
import numbers
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hybridvla_ros.core.joints import DuplicateJointsError, JointIndex, MissingJointsError

__all__ = [
    "SyncConfig",
    "SyncedObservation",
    "ObservationSynchronizer",
    "FRAME_DROP_REASONS",
    "JOINT_REJECT_REASONS",
    "WRENCH_REJECT_REASONS",
]

# Category keys used in returned reasons ("<key>: <detail>") and in stats
# ("dropped_<key>", "joint_states_rejected_<key>", "wrenches_rejected_<key>").
FRAME_DROP_REASONS: tuple[str, ...] = (
    "bad_stamp",
    "too_old",
    "out_of_order",
    "no_joint_state",
    "skew",
    "no_wrench",
    "superseded",
)
JOINT_REJECT_REASONS: tuple[str, ...] = (
    "bad_stamp",
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
    "bad_input",
    "non_finite",
    "out_of_order",
    "duplicate_stamp",
)

PENDING = "pending"

_SKEW_WINDOW = 100  # observations the skew percentiles are computed over


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
        for field in ("max_skew_s", "max_age_s", "history_s", "max_wrench_age_s"):
            object.__setattr__(self, field, _positive_finite(field, getattr(self, field)))
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

        self._counts: dict[str, int] = {
            "frames_in": 0,
            "observations_out": 0,
            "joint_states_in": 0,
            "joint_states_accepted": 0,
            "wrenches_in": 0,
            "wrenches_accepted": 0,
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
        """
        self._counts["joint_states_in"] += 1
        stamp = _finite_stamp(stamp_s)
        if stamp is None:
            return self._reject_joint("bad_stamp", f"stamp_s must be a finite number, got {_short(stamp_s)}")
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
                return self._reject_joint(
                    "out_of_order", f"stamp_s {stamp!r} is older than the newest sample {newest!r}"
                )
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

    def add_wrench(self, stamp_s: float, force: Sequence[float], torque: Sequence[float]) -> tuple[bool, str]:
        """Store one force/torque sample.

        Returns (True, '') when stored, else (False, '<key>: <detail>') with
        key one of WRENCH_REJECT_REASONS, counted in stats. Never raises.
        Rejects: non-finite stamp, force or torque not 3 numbers, NaN/Inf,
        stamps <= the newest stored one.
        """
        self._counts["wrenches_in"] += 1
        stamp = _finite_stamp(stamp_s)
        if stamp is None:
            return self._reject_wrench("bad_stamp", f"stamp_s must be a finite number, got {_short(stamp_s)}")
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
                return self._reject_wrench(
                    "out_of_order", f"stamp_s {stamp!r} is older than the newest wrench {newest!r}"
                )
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
        with key one of FRAME_DROP_REASONS: bad_stamp, too_old
        (stamp < now - max_age_s), out_of_order (stamp <= previous frame's),
        no_joint_state, skew, no_wrench (only when wrench_required).
        Never raises.
        """
        self._counts["frames_in"] += 1
        stamp = _finite_stamp(stamp_s)
        now = _finite_stamp(now_s)
        if stamp is None or now is None:
            return self._drop(
                "bad_stamp",
                f"stamp_s and now_s must be finite numbers, got {_short(stamp_s)}, {_short(now_s)}",
            )
        last = self._last_frame_stamp_s
        if last is not None and stamp <= last:
            return self._drop(
                "out_of_order", f"frame stamp {stamp!r} is not after the previous frame {last!r}"
            )
        self._last_frame_stamp_s = stamp
        if self._pending_stamp_s is not None:
            # The policy wants the latest view; an older frame still waiting
            # for proprio is worth less than this one.
            self._pending_stamp_s = None
            self._drop("superseded", "a newer frame arrived while this one was pending")
        age = now - stamp
        if age > self._config.max_age_s:
            return self._drop(
                "too_old", f"frame stamp {stamp!r} is {age:.3f} s old (max_age_s={self._config.max_age_s})"
            )
        obs, reason = self._pair(stamp)
        if reason == PENDING:
            self._pending_stamp_s = stamp
        return obs, reason

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
        now = _finite_stamp(now_s)
        if now is None:
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
        if self._pending_stamp_s is not None:
            self._pending_stamp_s = None
            self._drop("superseded", "synchronizer reset while a frame was pending")

    @property
    def stats(self) -> dict[str, int | float]:
        """Counters and skew summary for diagnostics.

        Keys: frames_in, observations_out, pending (0/1), dropped_<key> for
        each FRAME_DROP_REASONS key, joint_states_in, joint_states_accepted,
        joint_states_rejected_<key>, wrenches_in, wrenches_accepted,
        wrenches_rejected_<key>, and skew_p50_s / skew_max_s over the last
        100 observations (NaN before the first). Every frame_in ends up in
        exactly one of observations_out, a dropped_<key>, or pending.
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
        return out
