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

When the chunk in use runs out, the last action is repeated for
``hold_grace_s`` (inference may be a little late), then the buffer holds:
it emits nothing and the safety filter's watchdog keeps the robot still.

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
    "BufferStep",
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
)

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


@dataclass(frozen=True)
class ActionBufferConfig:
    """Timing of the command stream; ``__post_init__`` raises ValueError naming a bad field."""

    control_period_s: float  # > 0
    recompute_every: int  # >= 1: periods a chunk is used before a fresher one is expected
    blend_steps: int  # >= 0: periods over which a chunk seam is cross-faded
    hold_grace_s: float  # >= 0: repeat the last action this long once fresh ones run out
    max_chunk_age_s: float  # > 0: reject chunks answering observations older than this

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


class _Chunk:
    """An accepted chunk plus how far the buffer has got through it."""

    __slots__ = ("actions", "stamp_s", "period_s", "seq", "next_unvisited", "steps_used", "fade_steps")

    def __init__(self, actions: np.ndarray, stamp_s: float, period_s: float, seq: int) -> None:
        self.actions = actions  # (T, D), read-only
        self.stamp_s = stamp_s
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
        rejected_<key> per CHUNK_REJECT_REASONS, actions_emitted, actions_skipped_past,
        grace_repeats, holds, time_backwards, bad_time (non-finite now_s in step)."""
        return dict(self._stats)

    def _reject(self, key: str, detail: str) -> tuple[bool, str]:
        self._stats["chunks_rejected"] += 1
        self._stats[f"rejected_{key}"] += 1
        return False, f"{key}: {detail}"

    def add_chunk(
        self,
        actions: np.ndarray,
        obs_stamp_s: float,
        step_period_s: float,
        now_s: float,
        seq: int | None = None,
    ) -> tuple[bool, str]:
        """Accept a (T, D) chunk of absolute targets; return (accepted, reason).

        Never raises. Rejects, with reason "<key>: <detail>" (key in
        CHUNK_REJECT_REASONS): not a 2-D numeric array, D != action_dim, T == 0,
        NaN/Inf, step_period_s not finite or <= 0, non-finite stamps, stale
        (obs_stamp_s < now_s - max_chunk_age_s), from the future (obs_stamp_s >
        now_s + max_chunk_age_s, which would otherwise block every later chunk as
        out of order), out of order (obs_stamp_s <= the chunk in use), and past
        (every slot already over). ``seq`` defaults (also when not an integer) to one
        more than the highest seq seen.
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
        if current is not None and stamp_s <= current.stamp_s:
            return self._reject(
                "out_of_order", f"obs_stamp_s={stamp_s!r} <= {current.stamp_s!r} of chunk {current.seq} in use")
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
        self._stats["chunks_accepted"] += 1

        old_has_action = current is not None and current.action_at(now_s) is not None
        if self._config.blend_steps > 0 and old_has_action:
            self._layers.append(chunk)
            # A burst of chunks faster than the blend can finish: drop the
            # oldest fading layer (its weight is the smallest anyway).
            del self._layers[:-(self._config.blend_steps + 1)]
        else:
            self._layers = [chunk]
        return True, ""

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
        self._last_seq, self._last_index = top.seq, idx
        self._last_fresh_s = now_s
        return BufferStep(action.copy(), False, "", top.seq, idx, blended, n_steps - idx - 1)

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
            return BufferStep(self._last_action.copy(), False, reason, self._last_seq, self._last_index, False, 0)
        return self._hold(hold_reason)

    def _hold(self, reason: str) -> BufferStep:
        self._stats["holds"] += 1
        return BufferStep(None, True, reason, -1, -1, False, 0)

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
