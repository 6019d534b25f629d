"""Turn time-stamped action chunks into one action per control period.

The policy answers an observation taken at ``obs_stamp_s`` with a chunk of T
absolute targets; action k is the target for ``obs_stamp_s + k * step_period_s``.
By the time the chunk arrives, inference latency has already used up its first
slot(s), so the buffer indexes every chunk by wall time instead of by a
counter: at ``step(now_s)`` it emits the action whose slot contains ``now_s``
and skips (and counts) the ones whose slot has passed. A late chunk therefore
never replays stale targets and never makes the robot "catch up".

A new chunk rarely continues the old one exactly (different observation,
sampling noise), so switching chunks would put a jump into the command. For
``blend_steps`` periods after a switch the buffer cross-fades linearly from
the old chunk's action for that time to the new one's. If yet another chunk
arrives mid-fade, the fade in progress is itself the "old" side, so the output
stays continuous however fast chunks come.

Whole-chunk check (``ActionBufferConfig.chunk_check``, limits in ``ChunkLimits``):
before a chunk is accepted, what the buffer would emit with it (its rows from
the first one that will run, cross-faded in when a blend would happen) is
checked as a trajectory, finite differences at the control period over [last
emitted targets..., that plan]: the jump from the executing target (the last one
sent), then velocity, acceleration and jerk. A failing chunk is rejected
(``reject``: the buffer keeps what it has) or reshaped (``reshape``: a limited
tracker follows the plan from the executing target with a braking ramp; the
result, checked again, replaces every layer; if even it fails, rejected).
``last_chunk_check`` says why.

Every fresh step carries a preview: the next ``preview_steps`` targets of the
plan (the same fold of chunks the steps will emit), shorter at the chunk's end.

When the chunk in use runs out, the last action is repeated for
``hold_grace_s`` (inference may be a little late), then the buffer holds:
it emits nothing and the safety filter's watchdog keeps the robot still.

Size: over 520 lines because the whole-chunk check and reshaping need the
buffer's executing targets and timing; they are plain functions at the end.

Plain Python + numpy; never raises on bad chunk content: rejections come back
as ``(False, "<key>: <detail>")`` and are counted as ``rejected_<key>``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ActionBufferConfig",
    "ChunkLimits",
    "CHUNK_CHECK_MODES",
    "TRAJECTORY_CHECKS",
    "BufferStep",
    "check_trajectory",
    "reshape_trajectory",
    "ActionBuffer",
    "CHUNK_REJECT_REASONS",
    "REASON_NO_CHUNK",
    "REASON_NO_FRESH",
    "REASON_GRACE",
    "REASON_TIME_BACKWARDS",
]

# Keys of add_chunk rejections: the returned reason starts with "<key>:" and
# stats count them as "rejected_<key>".
CHUNK_REJECT_REASONS: tuple[str, ...] = (
    "bad_shape",
    "wrong_dim",
    "empty",
    "non_finite",
    "bad_period",
    "bad_stamp",
    "stale",
    "future",
    "out_of_order",
    "past",
    # whole-chunk trajectory checks (TRAJECTORY_CHECKS)
    "jump",
    "velocity",
    "acceleration",
    "jerk",
)
# What the whole-chunk check looks at, in the order it reports them.
TRAJECTORY_CHECKS: tuple[str, ...] = ("jump", "velocity", "acceleration", "jerk")
CHUNK_CHECK_MODES: tuple[str, ...] = ("off", "reject", "reshape")
# Finite differences of a chunk reshaped exactly onto a limit may exceed it by rounding.
_LIMIT_RTOL = 1e-9
# Emitted targets the check keeps: enough for jerk at the seam.
_HISTORY = 3

REASON_NO_CHUNK = "no chunk yet"
REASON_NO_FRESH = "no fresh action"
REASON_GRACE = "repeating last action (grace)"
REASON_TIME_BACKWARDS = "time went backwards"

# A now_s that falls exactly on a slot boundary must select the new slot even
# when (now - stamp) / period rounds to 2.9999999999999996.
_INDEX_EPS = 1e-9
# Grace comparisons: a grace of exactly k periods must cover k steps despite
# float error in accumulated timestamps.
_TIME_EPS_S = 1e-9


def _real(field: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{field} must be a number, got {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{field} must be finite, got {value!r}")
    return out


def _integer(field: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{field} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{field} must be >= {minimum}, got {value!r}")
    return int(value)


def _limit_vector(field: str, value: object) -> tuple[float, ...]:
    try:
        arr = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{field} must be numbers, got {value!r}") from exc
    if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"{field} must be finite numbers > 0, got {value!r}")
    return tuple(float(v) for v in arr)


@dataclass(frozen=True)
class ChunkLimits:
    """Per-dim limits a chunk must meet as a trajectory (units of the action per s, s^2, s^3).

    The jump from the executing target to the chunk's first row is held to max_velocity
    over one step period. ``__post_init__`` raises ValueError naming a bad field."""

    max_velocity: tuple[float, ...]
    max_acceleration: tuple[float, ...]
    max_jerk: tuple[float, ...]

    def __post_init__(self) -> None:
        sizes = set()
        for name in ("max_velocity", "max_acceleration", "max_jerk"):
            vec = _limit_vector(name, getattr(self, name))
            object.__setattr__(self, name, vec)
            sizes.add(len(vec))
        if len(sizes) != 1:
            raise ValueError(f"max_velocity, max_acceleration and max_jerk need the same length, got "
                             f"{len(self.max_velocity)}, {len(self.max_acceleration)}, {len(self.max_jerk)}")

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(V, A, J) as float64 arrays of shape (D,)."""
        return (np.asarray(self.max_velocity), np.asarray(self.max_acceleration), np.asarray(self.max_jerk))


@dataclass(frozen=True)
class ActionBufferConfig:
    """Timing of the command stream; ``__post_init__`` raises ValueError naming a bad field."""

    control_period_s: float  # > 0
    recompute_every: int  # >= 1: periods a chunk is used before a fresher one is expected
    blend_steps: int  # >= 0: periods over which a chunk seam is cross-faded
    hold_grace_s: float  # >= 0: repeat the last action this long once fresh ones run out
    max_chunk_age_s: float  # > 0: reject chunks answering observations older than this
    chunk_check: str = "off"  # CHUNK_CHECK_MODES: what to do with a chunk that breaks chunk_limits
    chunk_limits: ChunkLimits | None = None  # required unless chunk_check == "off"
    preview_steps: int = 0  # >= 0: planned targets after the action carried by each fresh step

    def __post_init__(self) -> None:
        period_s = _real("control_period_s", self.control_period_s)
        if period_s <= 0:
            raise ValueError(f"control_period_s must be > 0, got {self.control_period_s!r}")
        grace_s = _real("hold_grace_s", self.hold_grace_s)
        if grace_s < 0:
            raise ValueError(f"hold_grace_s must be >= 0, got {self.hold_grace_s!r}")
        age_s = _real("max_chunk_age_s", self.max_chunk_age_s)
        if age_s <= 0:
            raise ValueError(f"max_chunk_age_s must be > 0, got {self.max_chunk_age_s!r}")
        object.__setattr__(self, "control_period_s", period_s)
        object.__setattr__(self, "hold_grace_s", grace_s)
        object.__setattr__(self, "max_chunk_age_s", age_s)
        object.__setattr__(self, "recompute_every", _integer("recompute_every", self.recompute_every, 1))
        object.__setattr__(self, "blend_steps", _integer("blend_steps", self.blend_steps, 0))
        object.__setattr__(self, "preview_steps", _integer("preview_steps", self.preview_steps, 0))
        if self.chunk_check not in CHUNK_CHECK_MODES:
            raise ValueError(f"chunk_check must be one of {list(CHUNK_CHECK_MODES)}, got {self.chunk_check!r}")
        if self.chunk_limits is not None and not isinstance(self.chunk_limits, ChunkLimits):
            raise ValueError(f"chunk_limits must be a ChunkLimits, got {type(self.chunk_limits).__name__}")
        if self.chunk_check != "off" and self.chunk_limits is None:
            raise ValueError(f"chunk_limits is needed for chunk_check={self.chunk_check!r}")


@dataclass(frozen=True)
class BufferStep:
    """What to publish for one control period."""

    action: np.ndarray | None  # (D,) float64; None when holding
    holding: bool
    reason: str  # "" when a fresh action is emitted
    chunk_seq: int  # seq of the chunk the action came from, -1 if none
    step_index: int  # index of the action within that chunk, -1 if none
    blended: bool  # True while cross-fading a chunk seam
    depth: int  # fresh actions left in the current chunk after this one
    # (n, D): the plan's next targets after action, one per control period; n <= preview_steps,
    # shorter at the chunk's end, (0, D) when holding or repeating.
    preview: np.ndarray | None = None


class _Chunk:
    """An accepted chunk plus how far the buffer has got through it."""

    __slots__ = ("actions", "stamp_s", "period_s", "seq", "next_unvisited", "steps_used", "fade_steps",
                 "obs_stamp_s", "index_offset")

    def __init__(self, actions: np.ndarray, stamp_s: float, period_s: float, seq: int,
                 obs_stamp_s: float | None = None, index_offset: int = 0) -> None:
        self.actions = actions  # (T, D), read-only
        self.stamp_s = stamp_s  # time of row 0
        # The observation it answers (orders chunks); a reshaped plan starts later than that.
        self.obs_stamp_s = stamp_s if obs_stamp_s is None else obs_stamp_s
        self.index_offset = index_offset  # row 0 is this row of the chunk as it arrived
        self.period_s = period_s
        self.seq = seq
        self.next_unvisited = 0  # lowest index neither emitted nor counted as skipped
        self.steps_used = 0  # step() calls that emitted from this chunk
        self.fade_steps = 0  # blend periods done while fading in over older chunks

    def index_at(self, now_s: float) -> int:
        """Index of the slot containing now_s; >= 0 (see the clamp's comment)."""
        idx = math.floor((now_s - self.stamp_s) / self.period_s + _INDEX_EPS)
        # A stamp slightly ahead of now (clock skew between the inference host
        # and this one) gives a negative index; action 0 is the nearest target.
        return max(0, idx)

    def action_at(self, now_s: float) -> np.ndarray | None:
        """The action for now_s, or None when the chunk has run out."""
        idx = self.index_at(now_s)
        return self.actions[idx] if idx < self.actions.shape[0] else None


class ActionBuffer:
    """Chunk buffer with time-indexed playback, seam blending, grace and hold."""

    def __init__(self, config: ActionBufferConfig, action_dim: int) -> None:
        """Raise TypeError for a non-config ``config``, ValueError for ``action_dim`` < 1."""
        if not isinstance(config, ActionBufferConfig):
            raise TypeError(f"config must be an ActionBufferConfig, got {type(config).__name__}")
        self._config = config
        self._action_dim = _integer("action_dim", action_dim, 1)
        limits = config.chunk_limits
        if limits is not None and len(limits.max_velocity) != self._action_dim:
            raise ValueError(f"chunk_limits have {len(limits.max_velocity)} values per limit, "
                             f"action_dim is {self._action_dim}")
        # The emitted targets (fresh or grace, newest last) and when the newest went out:
        # the executing motion a new chunk is checked against. Cleared by a hold.
        self._history: list[np.ndarray] = []
        self._history_s: float | None = None
        self._last_check = ""
        # Oldest first; the last one is the chunk in use, earlier ones are still
        # fading out under it. At most blend_steps + 1 long.
        self._layers: list[_Chunk] = []
        self._last_action: np.ndarray | None = None  # (D,)
        self._last_seq = -1
        self._last_index = -1
        self._last_fresh_s: float | None = None  # starts the grace period
        self._last_now_s: float | None = None
        self._next_auto_seq = 0
        self._stats: dict[str, int] = {
            "chunks_received": 0,
            "chunks_accepted": 0,
            "chunks_rejected": 0,
            **{f"rejected_{key}": 0 for key in CHUNK_REJECT_REASONS},
            "chunks_reshaped": 0,
            **{f"reshaped_{key}": 0 for key in TRAJECTORY_CHECKS},
            "actions_emitted": 0,
            "actions_skipped_past": 0,
            "grace_repeats": 0,
            "holds": 0,
            "time_backwards": 0,
            "bad_time": 0,
        }

    @property
    def config(self) -> ActionBufferConfig:
        """The configuration this buffer was built with."""
        return self._config

    @property
    def action_dim(self) -> int:
        """D, the length of one action."""
        return self._action_dim

    @property
    def stats(self) -> dict[str, int]:
        """A copy of the counters: chunks_received, chunks_accepted, chunks_rejected,
        rejected_<key> per CHUNK_REJECT_REASONS, chunks_reshaped, reshaped_<key> per
        TRAJECTORY_CHECKS, actions_emitted, actions_skipped_past, grace_repeats, holds,
        time_backwards, bad_time (non-finite now_s in step)."""
        return dict(self._stats)

    @property
    def last_chunk_check(self) -> str:
        """Why the last chunk the whole-chunk check rejected or reshaped was ("" if none yet)."""
        return self._last_check

    def _reject(self, key: str, detail: str) -> tuple[bool, str]:
        self._stats["chunks_rejected"] += 1
        self._stats[f"rejected_{key}"] += 1
        return False, f"{key}: {detail}"

    def _executing(self, now_s: float) -> tuple[np.ndarray, float]:
        """((h, D) the targets sent most recently, oldest first, h <= 3; the time the next step
        is expected). h == 0 when nothing is being sent (before the first action, after a hold):
        then a chunk has no seam to check."""
        if self._history and self._history_s is not None:
            return np.array(self._history), max(self._history_s + self._config.control_period_s, now_s)
        return np.empty((0, self._action_dim)), now_s

    def _emitted(self, layers: list[_Chunk], fades: list[int], next_s: float) -> np.ndarray:
        """(K, D) what step() will emit from next_s on, one row per control period, until the
        top layer runs out, if nothing else arrives (fades: each layer's fade count now)."""
        top = layers[-1]
        rows = []
        k = 0
        while True:
            t = next_s + k * self._config.control_period_s
            if top.action_at(t) is None:
                break
            rows.append(self._fold_pure(layers, [f + k for f in fades], t))
            k += 1
        return np.array(rows, dtype=np.float64).reshape(-1, self._action_dim)

    def _fold_pure(self, layers: list[_Chunk], fades: list[int], t: float) -> np.ndarray:
        """The cross-fade _fold computes at t when each layer above the first has done fades[j]
        blend periods; changes nothing."""
        n_blend = self._config.blend_steps
        out: np.ndarray | None = layers[0].action_at(t)
        for layer, fade in zip(layers[1:], fades[1:]):
            new = layer.action_at(t)
            if fade >= n_blend:
                out = new  # faded in completely by then: the layers below are gone
                continue
            if new is None:
                continue
            if out is None:
                out = new
                continue
            w = (fade + 1) / (n_blend + 1)
            out = (1.0 - w) * out + w * new
        assert out is not None  # the top layer has an action at t (checked by the callers)
        return np.asarray(out, dtype=np.float64)

    def _check_chunk(self, chunk: _Chunk, now_s: float, blend: bool) -> tuple[bool, str, _Chunk | None]:
        """Whole-chunk check per config.chunk_check of what the buffer will emit with this chunk
        (cross-faded in when ``blend``): (accepted, reason, the reshaped plan that replaces every
        layer, or None to take the chunk as it is)."""
        limits = self._config.chunk_limits
        if self._config.chunk_check == "off" or limits is None:
            return True, "", None
        history, next_s = self._executing(now_s)
        if chunk.action_at(next_s) is None:
            return True, "", None  # nothing of it will run; the past check let it through for the record
        if blend:
            layers = (self._layers + [chunk])[-(self._config.blend_steps + 1):]
            fades = [layer.fade_steps for layer in layers[:-1]] + [0]
        else:
            layers, fades = [chunk], [0]
        first = chunk.index_at(next_s)
        period_s = self._config.control_period_s
        plan = self._emitted(layers, fades, next_s)
        violation = check_trajectory(history, plan, period_s, limits, first_row=first)
        if violation is None:
            return True, "", None
        key, detail = violation
        if self._config.chunk_check == "reject":
            self._last_check = f"rejected chunk {chunk.seq}: {key}: {detail}"
            ok, reason = self._reject(key, detail)
            return ok, reason, None
        reshaped = reshape_trajectory(history, plan, period_s, limits)
        again = check_trajectory(history, reshaped, period_s, limits, first_row=first)
        if again is not None:
            detail = f"{detail}; reshaping could not meet the limits ({again[0]}: {again[1]})"
            self._last_check = f"rejected chunk {chunk.seq}: {key}: {detail}"
            ok, reason = self._reject(key, detail)
            return ok, reason, None
        reshaped.flags.writeable = False
        # One row per control period from next_s; a step a little early still gets row 0.
        out = _Chunk(reshaped, next_s - 0.5 * period_s, period_s, chunk.seq, obs_stamp_s=chunk.obs_stamp_s,
                     index_offset=first)
        self._stats["chunks_reshaped"] += 1
        self._stats[f"reshaped_{key}"] += 1
        self._last_check = f"reshaped chunk {chunk.seq}: {key}: {detail}"
        return True, self._last_check, out

    def add_chunk(
        self,
        actions: np.ndarray,
        obs_stamp_s: float,
        step_period_s: float,
        now_s: float,
        seq: int | None = None,
    ) -> tuple[bool, str]:
        """Accept a (T, D) chunk of absolute targets; return (accepted, reason).

        reason is "" for a chunk accepted as it is, "reshaped chunk <seq>: <key>: <detail>"
        for one the whole-chunk check reshaped (key in TRAJECTORY_CHECKS).

        Never raises. Rejects, with reason "<key>: <detail>" (key in
        CHUNK_REJECT_REASONS): not a 2-D numeric array, D != action_dim, T == 0,
        NaN/Inf, step_period_s not finite or <= 0, non-finite stamps, stale
        (obs_stamp_s < now_s - max_chunk_age_s), from the future (obs_stamp_s >
        now_s + max_chunk_age_s, which would otherwise block every later chunk as
        out of order), out of order (obs_stamp_s <= the chunk in use), and past
        (every slot already over), and (chunk_check "reject", or "reshape" that cannot
        meet the limits) a trajectory check: jump, velocity, acceleration, jerk. ``seq``
        defaults (also when not an integer) to one more than the highest seq seen.
        """
        self._stats["chunks_received"] += 1
        try:
            # A copy: the caller may reuse its message buffer.
            arr = np.array(actions, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            return self._reject("bad_shape", f"actions are not a numeric array ({exc})")
        if arr.ndim != 2:
            return self._reject("bad_shape", f"actions must be (T, D), got shape {arr.shape}")
        n_steps, dim = arr.shape
        if dim != self._action_dim:
            return self._reject("wrong_dim", f"action dim {dim} != action_dim {self._action_dim}")
        if n_steps == 0:
            return self._reject("empty", "chunk has 0 actions")
        finite = np.isfinite(arr)
        if not finite.all():
            row, col = np.argwhere(~finite)[0]
            return self._reject(
                "non_finite",
                f"{int((~finite).sum())} non-finite values, first actions[{row}, {col}]={arr[row, col]!r}")
        if (isinstance(step_period_s, bool) or not isinstance(step_period_s, numbers.Real)
                or not math.isfinite(step_period_s) or step_period_s <= 0):
            return self._reject("bad_period", f"step_period_s must be finite and > 0, got {step_period_s!r}")
        for name, value in (("obs_stamp_s", obs_stamp_s), ("now_s", now_s)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                return self._reject("bad_stamp", f"{name} must be a finite number, got {value!r}")
        stamp_s, period_s, now_s = float(obs_stamp_s), float(step_period_s), float(now_s)
        max_age_s = self._config.max_chunk_age_s
        if stamp_s < now_s - max_age_s:
            return self._reject(
                "stale", f"obs_stamp_s={stamp_s!r} is {now_s - stamp_s:.3f} s old (max_chunk_age_s={max_age_s})")
        if stamp_s > now_s + max_age_s:
            return self._reject(
                "future", f"obs_stamp_s={stamp_s!r} is {stamp_s - now_s:.3f} s ahead of now_s={now_s!r}")
        current = self._layers[-1] if self._layers else None
        if current is not None and stamp_s <= current.obs_stamp_s:
            return self._reject(
                "out_of_order", f"obs_stamp_s={stamp_s!r} <= {current.obs_stamp_s!r} of chunk {current.seq} in use")
        # seq only labels output for diagnostics; a malformed one is not worth losing a chunk over.
        valid_seq = isinstance(seq, numbers.Integral) and not isinstance(seq, bool)
        chunk_seq = int(seq) if valid_seq else self._next_auto_seq
        arr.flags.writeable = False
        chunk = _Chunk(arr, stamp_s, period_s, chunk_seq)
        if chunk.index_at(now_s) >= n_steps:
            return self._reject(
                "past", f"all {n_steps} slots ended by now_s={now_s!r} (obs_stamp_s={stamp_s!r}, "
                        f"step_period_s={period_s!r})")
        self._next_auto_seq = max(self._next_auto_seq, chunk_seq + 1)
        old_has_action = current is not None and current.action_at(now_s) is not None
        blend = self._config.blend_steps > 0 and old_has_action
        ok, check_reason, reshaped = self._check_chunk(chunk, now_s, blend)
        if not ok:
            return False, check_reason
        self._stats["chunks_accepted"] += 1

        if reshaped is not None:
            self._layers = [reshaped]  # the cross-fade is part of the reshaped plan
        elif blend:
            self._layers.append(chunk)
            # A burst of chunks faster than the blend can finish: drop the
            # oldest fading layer (its weight is the smallest anyway).
            del self._layers[:-(self._config.blend_steps + 1)]
        else:
            self._layers = [chunk]
        return True, check_reason

    def step(self, now_s: float) -> BufferStep:
        """The action for the control period starting at now_s; never raises.

        Fresh action: holding False, reason "". No action for now: the last one
        repeated while within hold_grace_s of the last fresh action (reason
        REASON_GRACE, holding False), then holding True with action None (reason
        REASON_NO_CHUNK before any chunk, else REASON_NO_FRESH). A now_s earlier
        than the previous one, or not finite, drops the chunks (their stamps no
        longer mean anything on this clock) and restarts grace on the new time.
        """
        if isinstance(now_s, bool) or not isinstance(now_s, numbers.Real) or not math.isfinite(now_s):
            self._stats["bad_time"] += 1
            self._layers = []
            self._last_fresh_s = None  # no usable time: no grace either
            return self._hold(f"bad time: now_s={now_s!r} is not finite")
        now_s = float(now_s)
        if self._last_now_s is not None and now_s < self._last_now_s:
            # Sim reset or bag loop: the old chunks' stamps are on a different
            # time base. The inference node resends within a recompute period;
            # until then the grace repeat keeps the robot where it was going.
            self._stats["time_backwards"] += 1
            self._layers = []
            if self._last_fresh_s is not None:
                self._last_fresh_s = now_s
            self._last_now_s = now_s
            return self._no_fresh(now_s, f"{REASON_TIME_BACKWARDS}: {REASON_NO_FRESH}", prefix=REASON_TIME_BACKWARDS)
        self._last_now_s = now_s

        if not self._layers:
            return self._no_fresh(now_s, REASON_NO_CHUNK)
        top = self._layers[-1]
        n_steps = top.actions.shape[0]
        idx = top.index_at(now_s)
        self._count_skipped(top, min(idx, n_steps))
        if idx >= n_steps:
            return self._no_fresh(now_s, REASON_NO_FRESH)
        top.next_unvisited = max(top.next_unvisited, idx + 1)

        blended = False
        if len(self._layers) == 1:
            action = top.actions[idx].copy()
        else:
            action, blended = self._fold(now_s)
        top.steps_used += 1
        self._stats["actions_emitted"] += 1
        self._last_action = action
        self._last_seq, self._last_index = top.seq, idx + top.index_offset
        self._last_fresh_s = now_s
        self._remember(action, now_s)
        return BufferStep(action.copy(), False, "", top.seq, idx + top.index_offset, blended, n_steps - idx - 1,
                          self._preview(now_s))

    def _remember(self, action: np.ndarray, now_s: float) -> None:
        self._history.append(action.copy())
        del self._history[:-_HISTORY]
        self._history_s = now_s

    def _preview(self, now_s: float) -> np.ndarray:
        """(n, D) what the next n <= preview_steps steps will emit if nothing new arrives (the same
        fold as step(), without changing any state); ends where the chunk in use runs out."""
        n_max = self._config.preview_steps
        out = np.empty((0, self._action_dim))
        if n_max == 0 or not self._layers:
            return out
        rows = []
        for k in range(1, n_max + 1):
            t = now_s + k * self._config.control_period_s
            if self._layers[-1].action_at(t) is None:
                break
            # _fold has already advanced the fade counts for now: k steps ahead they are k - 1 more.
            rows.append(self._fold_pure(self._layers, [layer.fade_steps + k - 1 for layer in self._layers], t))
        return np.array(rows, dtype=np.float64).reshape(-1, self._action_dim) if rows else out

    def _count_skipped(self, chunk: _Chunk, upto: int) -> None:
        if upto > chunk.next_unvisited:
            self._stats["actions_skipped_past"] += upto - chunk.next_unvisited
            chunk.next_unvisited = upto

    def _fold(self, now_s: float) -> tuple[np.ndarray, bool]:
        """Cross-fade the layers oldest to newest; return (action (D,), blended)."""
        n_blend = self._config.blend_steps
        out: np.ndarray | None = self._layers[0].action_at(now_s)
        blended = False
        for layer in self._layers[1:]:
            new = layer.action_at(now_s)
            if new is None:
                # A short middle chunk ran out: the older side carries on alone.
                continue
            if out is None:
                out = new
                continue
            w = (layer.fade_steps + 1) / (n_blend + 1)
            out = (1.0 - w) * out + w * new
            blended = True
        for layer in self._layers[1:]:
            layer.fade_steps += 1
        # A layer that has faded in completely hides everything below it.
        for j in range(len(self._layers) - 1, 0, -1):
            if self._layers[j].fade_steps >= n_blend:
                del self._layers[:j]
                break
        assert out is not None  # the top layer has an action (checked by step)
        return np.array(out, dtype=np.float64), blended

    def _no_fresh(self, now_s: float, hold_reason: str, prefix: str = "") -> BufferStep:
        """Repeat the last action within grace, else hold with hold_reason."""
        if (self._last_action is not None and self._last_fresh_s is not None
                and now_s - self._last_fresh_s <= self._config.hold_grace_s + _TIME_EPS_S):
            self._stats["grace_repeats"] += 1
            reason = f"{prefix}: {REASON_GRACE}" if prefix else REASON_GRACE
            self._remember(self._last_action, now_s)
            return BufferStep(self._last_action.copy(), False, reason, self._last_seq, self._last_index, False, 0,
                              np.empty((0, self._action_dim)))
        return self._hold(hold_reason)

    def _hold(self, reason: str) -> BufferStep:
        self._stats["holds"] += 1
        # Nothing goes out: the safety filter brings the robot to rest somewhere we do not know.
        self._history = []
        self._history_s = None
        return BufferStep(None, True, reason, -1, -1, False, 0, np.empty((0, self._action_dim)))

    def needs_recompute(self, now_s: float) -> bool:
        """True when there is no chunk, the chunk in use has been emitted from for
        >= recompute_every periods, or it has no action left for now_s."""
        if not self._layers:
            return True
        top = self._layers[-1]
        if top.steps_used >= self._config.recompute_every:
            return True
        if isinstance(now_s, bool) or not isinstance(now_s, numbers.Real) or not math.isfinite(now_s):
            return True
        return top.index_at(float(now_s)) >= top.actions.shape[0]

    def reset(self) -> None:
        """Forget all chunks, the last action and the time base (a clean hand-back:
        the next chunk starts without a blend and nothing stale is repeated).
        Counters and the automatic seq keep counting."""
        self._layers = []
        self._last_action = None
        self._last_seq = -1
        self._last_index = -1
        self._last_fresh_s = None
        self._last_now_s = None
        self._history = []
        self._history_s = None


# ------------------------------------------------------------ whole-chunk check
_ORDER_NAMES = {"velocity": "max_velocity", "acceleration": "max_acceleration", "jerk": "max_jerk"}


def check_trajectory(history: np.ndarray, plan: np.ndarray, period_s: float, limits: ChunkLimits,
                     first_row: int = 0) -> tuple[str, str] | None:
    """The first limit a plan breaks, as (key, detail), or None when it keeps them all.

    ``history`` (h, D), h <= 3: the targets sent last, oldest first (h == 0: no seam);
    ``plan`` (m, D): the targets that will run next, one per ``period_s``, plan[0] being
    chunk row ``first_row`` (for the message). Finite differences over history + plan
    that touch at least one plan row: "jump" (history[-1] -> plan[0] over one period,
    against max_velocity), then "velocity", "acceleration", "jerk" (the worst of each
    is reported; keys in that order).
    """
    v_max, a_max, j_max = limits.arrays()
    x = np.concatenate([np.asarray(history, dtype=np.float64).reshape(-1, plan.shape[1]), plan])
    h = x.shape[0] - plan.shape[0]
    derivs = [x]
    for _ in range(3):
        derivs.append(np.diff(derivs[-1], axis=0) / period_s)
    # derivs[o][i - o] is the o-th difference ending at x[i].
    checks = (("jump", 1, v_max, h, h), ("velocity", 1, v_max, max(1, h + 1), None),
              ("acceleration", 2, a_max, max(2, h), None), ("jerk", 3, j_max, max(3, h), None))
    for key, order, limit, lo, hi in checks:
        end = x.shape[0] - 1 if hi is None else hi
        if h == 0 and key == "jump" or lo > end:
            continue
        vals = derivs[order][lo - order:end - order + 1]  # rows ending at x[lo..end]
        ratio = np.abs(vals) / limit
        if not np.any(ratio > 1.0 + _LIMIT_RTOL):
            continue
        i, d = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
        n_over = int(np.any(ratio > 1.0 + _LIMIT_RTOL, axis=1).sum())
        value, lim = float(vals[i, d]), float(limit[d])
        if key == "jump":
            return key, (f"dim {d} is {float(x[h, d] - x[h - 1, d]):+.4g} from the executing target at row "
                         f"{first_row}, {abs(value):.4g}/s over one {period_s:g} s step > max_velocity {lim:.4g}")
        row = first_row + lo + int(i) - h
        return key, (f"dim {d} at row {row}: {abs(value):.4g} > {_ORDER_NAMES[key]} {lim:.4g} "
                     f"({n_over} of {vals.shape[0]} steps over)")
    return None


def reshape_trajectory(history: np.ndarray, plan: np.ndarray, period_s: float, limits: ChunkLimits,
                       brake_fraction: float = 0.5) -> np.ndarray:
    """(m, D): ``plan`` followed from ``history`` (as in check_trajectory) within the limits.

    Step by step, per dim: aim at the plan's row (its own velocity plus a catch-up that
    brakes with ``brake_fraction`` of max_acceleration, so a seam jump becomes a ramp that
    lands on the plan instead of overshooting it), then clip the step to what jerk,
    acceleration and velocity allow from the previous targets. A plan within the limits
    and without a seam comes out unchanged (up to rounding); the result is within the
    limits whenever the history is (check it again: a history that already breaks them
    may leave no feasible step).
    """
    v_max, a_max, j_max = limits.arrays()
    plan = np.asarray(plan, dtype=np.float64)
    xs = [np.asarray(r, dtype=np.float64) for r in np.asarray(history, dtype=np.float64).reshape(-1, plan.shape[1])]
    out = np.empty_like(plan)
    dt = period_s
    brake = brake_fraction * a_max
    for k in range(plan.shape[0]):
        target = plan[k]
        if not xs:
            out[k] = target  # no seam: the first row is where the plan starts
            xs.append(target)
            continue
        if k >= 1:
            v_plan = (plan[k] - plan[k - 1]) / dt
        elif plan.shape[0] > 1:
            v_plan = (plan[1] - plan[0]) / dt
        else:
            v_plan = np.zeros_like(target)
        prev = xs[-1]
        offset = prev - (target - v_plan * dt)  # how far ahead of the plan's previous row we are
        mag = np.abs(offset)
        catch_up = -np.sign(offset) * np.minimum(mag / dt, np.sqrt(2.0 * brake * mag))
        v_want = v_plan + catch_up
        v_lo, v_hi = -v_max, v_max.copy()
        if len(xs) >= 2:
            v_prev = (xs[-1] - xs[-2]) / dt
            a_lo, a_hi = -a_max, a_max.copy()
            if len(xs) >= 3:
                a_prev = (xs[-1] - 2.0 * xs[-2] + xs[-3]) / dt ** 2
                a_lo = np.maximum(a_lo, a_prev - j_max * dt)
                a_hi = np.minimum(a_hi, a_prev + j_max * dt)
                # Only an over-limit history empties the range: stay as close to it as jerk allows.
                a_lo, a_hi = np.minimum(a_lo, a_hi), np.maximum(a_lo, a_hi)
            v_lo = np.maximum(v_lo, v_prev + a_lo * dt)
            v_hi = np.minimum(v_hi, v_prev + a_hi * dt)
            v_lo, v_hi = np.minimum(v_lo, v_hi), np.maximum(v_lo, v_hi)
        v = np.clip(v_want, v_lo, v_hi)
        out[k] = prev + v * dt
        xs.append(out[k])
    return out
