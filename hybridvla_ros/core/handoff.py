"""Who drives the robot: the policy, a human on the teleop override, or nobody (ROS-free).

Sits between the action buffer and the safety filter. Modes (values equal
``hybridvla_msgs/HandoffMode``):

- AUTONOMOUS: policy actions pass through.
- CONSERVATIVE: policy actions pass through, ``velocity_scale`` drops to
  ``conservative_velocity_scale`` (the safety filter applies it). Entered from
  AUTONOMOUS when the OOD score exceeds ``ood_zscore`` (a non-finite score counts
  as out of distribution); left for AUTONOMOUS once every score has been normal
  for ``conservative_exit_s``.
- PAUSED: nobody drives; the robot holds. Entered after
  ``low_confidence_chunks_to_pause`` consecutive chunks with confidence below
  ``pause_confidence`` or a reported failure (both ask for help), and when a
  human override ends ('deadman released', 'deadman timeout', 'teleop timeout').
- HUMAN_OVERRIDE: the human's command is sent. Needs the deadman held (last
  Bool true and younger than ``deadman_timeout_s``) AND a valid teleop command
  younger than ``teleop_timeout_s``; entered from any mode as soon as both hold
  (the human wins over the policy and over a pause). Losing either one holds
  the robot in PAUSED (or ESCALATED if not yet acknowledged), never the policy.
- ESCALATED: like PAUSED, but resume is refused until ``acknowledge()``, which
  leads to PAUSED. The escalation latch survives a human override.

Rules a reader may want spelled out:

- Confidence hysteresis: a chunk below ``pause_confidence`` adds one to the
  low-confidence streak, a chunk at or above ``resume_confidence`` clears it, a
  chunk in between leaves it (a policy hovering at the threshold does not
  flap). ``resume_policy()`` is refused while the newest chunk's confidence is
  below ``resume_confidence``. A non-finite confidence counts as 0.
- Escalation count: each pause the policy caused (low confidence, failure; a
  failure reported while PAUSED too) adds one to ``consecutive_pauses``; the
  pause that takes it above ``max_consecutive_pauses`` escalates instead. It
  goes back to 0 once the policy has driven for ``pause_count_reset_s`` after
  a hand-back without a new pause, and on ``acknowledge()``. Pauses caused by
  the human (deadman, teleop timeout) do not count.
- Holds: the hold target is captured once when a hold starts and kept for the
  whole hold: the measured position if one younger than ``measured_timeout_s``
  is known and ``hold_at_measured`` (position-controlled arms: a teleop target
  may be far ahead of the robot, and holding at it would keep the robot moving
  after the deadman is released), else the last commanded action (a mobile base
  whose pose target is integrated: holding there is a zero step), else the
  measured position of any age, else nothing (the safety filter's watchdog
  holds). The ``hold_at_command_joints`` (grippers) keep their last command
  in a hold at the measured position: a gripper's measured opening stops at
  the object it squeezes, so holding there would let go of it.
- Hand-back: ``resume_policy()`` asks the action buffer to restart
  (``Output.reset_action_buffer``) and keeps holding until a policy action
  comes from a chunk that arrived after the resume (when the caller passes
  chunk seqs), so no action from a chunk computed before the hand-back moves
  the robot.
- Teleop: joint positions by name (any order, a subset: missing joints keep
  their last commanded value, unknown names are ignored; a message with no
  known name is ignored entirely) or, for an ``[x, y, yaw]`` base, a body-frame
  twist integrated from the last commanded pose every control period. A
  message with a non-finite value is rejected and clears the command: the
  robot holds until the next valid one.

Deterministic: time comes in as ``now_s``. Every public method first applies
the timeouts up to ``now_s``. Outputs carry the transitions, help requests and
buffer reset that happened since the previous output; ``drain()`` collects them
after an event that returns no output. Never raises on bad input at run time.

Size: one state machine (modes, timeouts, deadman, escalation, hand-back) with its
reasons and outputs; split across files its transitions would no longer read in one place.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np

from hybridvla_ros.core.command import BaseTwist

__all__ = [
    "Mode",
    "OutputKind",
    "POLICY_MODES",
    "HandoffConfig",
    "Transition",
    "Output",
    "HandoffStateMachine",
    "OodScorer",
    "integrate_twist",
    "REASON_START",
    "REASON_HUMAN",
    "REASON_DEADMAN_RELEASED",
    "REASON_DEADMAN_TIMEOUT",
    "REASON_TELEOP_TIMEOUT",
    "REASON_LOW_CONFIDENCE",
    "REASON_FAILURE",
    "REASON_OOD",
    "REASON_OOD_CLEARED",
    "REASON_RESUMED",
    "REASON_ACKNOWLEDGED",
]


class Mode(IntEnum):
    """Who drives; values equal the hybridvla_msgs/HandoffMode constants."""

    AUTONOMOUS = 0
    PAUSED = 1
    HUMAN_OVERRIDE = 2
    ESCALATED = 3
    CONSERVATIVE = 4


class OutputKind(IntEnum):
    """What to send this period; POLICY/HUMAN/HOLD equal hybridvla_msgs/ActionStep.SOURCE_*."""

    POLICY = 0
    HUMAN = 1
    HOLD = 2
    NONE = 3  # send nothing


POLICY_MODES = frozenset({Mode.AUTONOMOUS, Mode.CONSERVATIVE})

# Reasons start with these (details may follow after ": ").
REASON_START = "start"
REASON_HUMAN = "human override"
REASON_DEADMAN_RELEASED = "deadman released"
REASON_DEADMAN_TIMEOUT = "deadman timeout"
REASON_TELEOP_TIMEOUT = "teleop timeout"
REASON_LOW_CONFIDENCE = "low confidence"
REASON_FAILURE = "failure reported"
REASON_OOD = "out of distribution"
REASON_OOD_CLEARED = "back in distribution"
REASON_RESUMED = "resumed by operator"
REASON_ACKNOWLEDGED = "acknowledged by operator"

_COUNTERS = ("pauses", "escalations", "overrides", "resumes", "acknowledges", "failures",
             "conservative_entries", "chunks", "low_confidence_chunks", "policy_forwarded",
             "policy_dropped", "policy_rejected", "human_sent", "holds_sent", "teleop_accepted",
             "teleop_rejected", "teleop_ignored", "measured_rejected", "resume_refused")


def _real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _integer(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _finite_float(value: object) -> float | None:
    """float(value) if it is a finite real number, else None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    out = float(value)
    return out if math.isfinite(out) else None


@dataclass(frozen=True)
class HandoffConfig:
    """Thresholds and timeouts; ``__post_init__`` raises ValueError naming a bad field."""

    pause_confidence: float = 0.3  # [0, 1]: a chunk below this is low-confidence
    resume_confidence: float = 0.5  # [pause_confidence, 1]: clears the streak; needed to resume
    low_confidence_chunks_to_pause: int = 2  # >= 1 consecutive low chunks -> PAUSED
    max_consecutive_pauses: int = 3  # >= 0: the pause that makes the count exceed this escalates
    pause_count_reset_s: float = 10.0  # > 0: policy driving this long after a resume clears the count
    deadman_timeout_s: float = 0.25  # > 0: a pressed deadman older than this is released
    teleop_timeout_s: float = 0.25  # > 0: a teleop command older than this is stale
    ood_zscore: float = 4.0  # > 0: OOD score above this -> CONSERVATIVE
    conservative_velocity_scale: float = 0.3  # (0, 1]
    conservative_exit_s: float = 2.0  # >= 0: normal scores this long -> back to AUTONOMOUS
    measured_timeout_s: float = 0.5  # > 0: a measured position older than this is not used to hold
    hold_at_measured: bool = True  # hold at the measured position (arms), not the last command (bases)
    hold_at_command_joints: tuple[str, ...] = ()  # held at their last command even so (grippers)
    control_period_s: float = 0.02  # > 0: teleop twists are integrated over this

    def __post_init__(self) -> None:
        for name in ("pause_confidence", "resume_confidence"):
            v = _real(name, getattr(self, name))
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v!r}")
            object.__setattr__(self, name, v)
        if self.resume_confidence < self.pause_confidence:
            raise ValueError(f"resume_confidence {self.resume_confidence!r} must be >= "
                             f"pause_confidence {self.pause_confidence!r}")
        object.__setattr__(self, "low_confidence_chunks_to_pause",
                           _integer("low_confidence_chunks_to_pause", self.low_confidence_chunks_to_pause, 1))
        object.__setattr__(self, "max_consecutive_pauses",
                           _integer("max_consecutive_pauses", self.max_consecutive_pauses, 0))
        for name in ("pause_count_reset_s", "deadman_timeout_s", "teleop_timeout_s", "ood_zscore",
                     "measured_timeout_s", "control_period_s"):
            v = _real(name, getattr(self, name))
            if v <= 0:
                raise ValueError(f"{name} must be > 0, got {v!r}")
            object.__setattr__(self, name, v)
        scale = _real("conservative_velocity_scale", self.conservative_velocity_scale)
        if not 0.0 < scale <= 1.0:
            raise ValueError(f"conservative_velocity_scale must be in (0, 1], got {scale!r}")
        object.__setattr__(self, "conservative_velocity_scale", scale)
        exit_s = _real("conservative_exit_s", self.conservative_exit_s)
        if exit_s < 0:
            raise ValueError(f"conservative_exit_s must be >= 0, got {exit_s!r}")
        object.__setattr__(self, "conservative_exit_s", exit_s)
        if not isinstance(self.hold_at_measured, bool):
            raise ValueError(f"hold_at_measured must be true or false, got {self.hold_at_measured!r}")
        joints = self.hold_at_command_joints
        if isinstance(joints, str) or not all(isinstance(j, str) for j in joints):
            raise ValueError(f"hold_at_command_joints must be joint names, got {joints!r}")
        object.__setattr__(self, "hold_at_command_joints", tuple(joints))


@dataclass(frozen=True)
class Transition:
    """One mode change and why."""

    previous: Mode
    mode: Mode
    reason: str
    now_s: float


@dataclass(frozen=True)
class Output:
    """What to send to the safety filter now, plus what happened since the last output."""

    kind: OutputKind
    action: np.ndarray | None  # (D,) finite float64 for POLICY/HUMAN/HOLD; None for NONE
    reason: str  # why this kind (the mode's reason for holds)
    mode: Mode  # mode after the call
    reset_action_buffer: bool = False  # the policy was handed back: restart the buffer from the current state
    help_requests: tuple[str, ...] = ()  # publish each: the policy paused or escalated
    transitions: tuple[Transition, ...] = ()  # mode changes since the previous output, oldest first


def integrate_twist(pose: np.ndarray, twist: BaseTwist, period_s: float) -> np.ndarray:
    """Pose ``[x_m, y_m, yaw_rad]`` after driving body-frame ``twist`` for ``period_s``.

    The inverse of core.command.pose_step_to_twist: the body-frame velocity is rotated
    into the odom frame at the starting yaw. Raises ValueError on a pose that is not 3
    finite numbers or a non-positive period.
    """
    p = np.asarray(pose, dtype=np.float64)
    if p.shape != (3,) or not np.all(np.isfinite(p)):
        raise ValueError(f"integrate_twist: pose must be 3 finite numbers [x, y, yaw], got {pose!r}")
    if not period_s > 0.0:
        raise ValueError(f"integrate_twist: period_s must be > 0, got {period_s!r}")
    c, s = math.cos(p[2]), math.sin(p[2])
    vx, vy, wz = twist.linear_x_mps, twist.linear_y_mps, twist.angular_z_radps
    return p + period_s * np.array([c * vx - s * vy, s * vx + c * vy, wz])


class OodScorer:
    """Out-of-distribution score of a measured joint position, in z-score units.

    The score is the largest per-joint ``|q - mean| / std`` over the joints not
    ignored, taking the larger of two statistics:

    - training statistics ``proprio_mean`` / ``proprio_std`` when given (copy them
      from the checkpoint's proprio normalizer);
    - a stand-in from the joint limits that needs no data: mean = middle of the
      range, std chosen so that the score equals ``ood_zscore`` when a joint is
      ``limit_margin_frac`` of its range away from a limit (and exceeds it closer
      to or beyond the limit). Policies rarely see joints at their limits in
      training, and a joint near its limit is where a wrong action hurts most.

    Grippers and finger joints that rest at a limit in normal use belong in
    ``ignore``. A non-finite or wrong-length position scores ``inf``.
    """

    def __init__(self, position_min: np.ndarray, position_max: np.ndarray, ood_zscore: float,
                 limit_margin_frac: float, mean: np.ndarray | None = None, std: np.ndarray | None = None,
                 ignore: np.ndarray | None = None) -> None:
        """Raise ValueError on mismatched lengths, min >= max, a margin outside [0, 0.5) or std <= 0."""
        lo = np.asarray(position_min, dtype=np.float64)
        hi = np.asarray(position_max, dtype=np.float64)
        if lo.ndim != 1 or lo.shape != hi.shape or lo.size == 0:
            raise ValueError(f"OodScorer: position_min/max must be equal-length vectors, got {lo.shape}, {hi.shape}")
        if np.any(lo >= hi):
            raise ValueError("OodScorer: position_min must be < position_max for every joint")
        z = _real("ood_zscore", ood_zscore)
        margin = _real("limit_margin_frac", limit_margin_frac)
        if z <= 0 or not 0.0 <= margin < 0.5:
            raise ValueError(f"OodScorer: need ood_zscore > 0 and 0 <= limit_margin_frac < 0.5, got {z}, {margin}")
        rng = hi - lo  # (D,)
        self._mid = (lo + hi) / 2.0
        self._limit_std = (rng / 2.0 - margin * rng) / z  # (D,) > 0
        self._mean: np.ndarray | None = None  # (D,) training statistics, if given
        self._std: np.ndarray | None = None  # (D,)
        if mean is not None or std is not None:
            m = np.asarray(mean, dtype=np.float64)
            s = np.asarray(std, dtype=np.float64)
            if m.shape != lo.shape or s.shape != lo.shape:
                raise ValueError(f"OodScorer: mean/std need {lo.size} values, got {m.shape}, {s.shape}")
            if not (np.all(np.isfinite(m)) and np.all(np.isfinite(s)) and np.all(s > 0)):
                raise ValueError("OodScorer: mean must be finite and std finite and > 0")
            self._mean, self._std = m, s
        keep = np.ones(lo.shape, dtype=bool)
        if ignore is not None:
            keep &= ~np.asarray(ignore, dtype=bool)
        self._keep = keep

    def score(self, positions: np.ndarray) -> float:
        """Largest per-joint z (see the class docstring); inf on bad input, 0 if every joint is ignored."""
        q = np.asarray(positions, dtype=np.float64)
        if q.shape != self._mid.shape or not np.all(np.isfinite(q)):
            return math.inf
        if not self._keep.any():
            return 0.0
        z = np.abs(q - self._mid) / self._limit_std  # (D,)
        if self._mean is not None and self._std is not None:
            z = np.maximum(z, np.abs(q - self._mean) / self._std)
        return float(z[self._keep].max())


class HandoffStateMachine:
    """The mux between policy, human and hold; see the module docstring for the rules."""

    def __init__(self, config: HandoffConfig, joint_names: tuple[str, ...] | list[str]) -> None:
        """Raise TypeError for a non-config, ValueError for empty or duplicate joint names."""
        if not isinstance(config, HandoffConfig):
            raise TypeError(f"config must be a HandoffConfig, got {type(config).__name__}")
        names = tuple(joint_names)
        if not names or len(set(names)) != len(names) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"joint_names must be unique strings, got {list(names)}")
        self._config = config
        self._names = names
        self._index = {n: i for i, n in enumerate(names)}
        self._dim = len(names)
        unknown = [j for j in config.hold_at_command_joints if j not in self._index]
        if unknown:
            raise ValueError(f"hold_at_command_joints: {unknown} are not in joint_names {list(names)}")
        self._hold_at_command = np.array([self._index[j] for j in config.hold_at_command_joints], dtype=np.int64)

        self._mode = Mode.AUTONOMOUS
        self._reason = REASON_START
        self._escalated = False  # set on escalation, cleared by acknowledge; survives an override
        self._low_streak = 0
        self._consecutive_pauses = 0
        self._driving_since: float | None = None  # policy driving since (for the count reset)
        self._confidence: float | None = None  # newest chunk's
        # Teleop and deadman
        self._deadman_pressed = False
        self._deadman_s = -math.inf
        self._teleop: tuple[np.ndarray, np.ndarray] | BaseTwist | None = None  # (indices, values) or twist
        self._teleop_s = -math.inf  # receipt time of the last valid command
        # Out of distribution
        self._ood_active = False
        self._ood_score: float | None = None
        self._ood_normal_since: float | None = None
        # Positions
        self._measured: np.ndarray | None = None
        self._measured_s = -math.inf
        self._last_commanded: np.ndarray | None = None
        self._hold_target: np.ndarray | None = None
        # Hand-back: hold until an action from a chunk received after the resume
        self._await_fresh_chunk = False
        self._fresh_seqs: set[int] = set()
        # Pending for the next output
        self._pending_transitions: list[Transition] = []
        self._pending_help: list[str] = []
        self._pending_reset = False
        self._stats = {k: 0 for k in _COUNTERS}

    def update_config(self, **changes: Any) -> HandoffConfig:
        """Change thresholds or timeouts at run time (e.g. ``ros2 param set``); returns the new config.

        The whole new config is validated first: ValueError (naming the field) leaves the
        old one in force. The mode is kept; new thresholds apply from the next event.
        """
        if "hold_at_command_joints" in changes:
            raise ValueError("hold_at_command_joints: set when the state machine is built, not at run time")
        new = dataclasses.replace(self._config, **changes)
        self._config = new
        return new

    # ------------------------------------------------------------------ state
    @property
    def config(self) -> HandoffConfig:
        """The configuration this state machine was built with."""
        return self._config

    @property
    def joint_names(self) -> tuple[str, ...]:
        """Joint names in action order."""
        return self._names

    @property
    def mode(self) -> Mode:
        """The current mode."""
        return self._mode

    @property
    def reason(self) -> str:
        """Why the current mode was entered."""
        return self._reason

    @property
    def velocity_scale(self) -> float:
        """Fraction of max velocity the safety filter should allow: < 1 only in CONSERVATIVE."""
        return self._config.conservative_velocity_scale if self._mode == Mode.CONSERVATIVE else 1.0

    @property
    def consecutive_pauses(self) -> int:
        """Pauses the policy caused since the count was last cleared."""
        return self._consecutive_pauses

    @property
    def escalated(self) -> bool:
        """True from an escalation until acknowledge(), also while a human drives."""
        return self._escalated

    @property
    def confidence(self) -> float | None:
        """The newest chunk's confidence (non-finite counted as 0), None before the first."""
        return self._confidence

    @property
    def ood_active(self) -> bool:
        """True while inputs count as out of distribution."""
        return self._ood_active

    @property
    def awaiting_fresh_chunk(self) -> bool:
        """True after a hand-back until an action from a fresh chunk arrives."""
        return self._await_fresh_chunk

    @property
    def stats(self) -> dict[str, int]:
        """A copy of the counters (pauses, escalations, overrides, resumes, teleop_rejected, ...)."""
        return dict(self._stats)

    def deadman_held(self, now_s: float) -> bool:
        """True if the last deadman message said pressed and is at most deadman_timeout_s old."""
        return self._deadman_pressed and now_s - self._deadman_s <= self._config.deadman_timeout_s

    def teleop_fresh(self, now_s: float) -> bool:
        """True if a valid teleop command at most teleop_timeout_s old is known."""
        return self._teleop is not None and now_s - self._teleop_s <= self._config.teleop_timeout_s

    # ------------------------------------------------------------------ events
    def on_chunk_confidence(self, confidence: float, now_s: float, seq: int | None = None) -> None:
        """A chunk arrived with this confidence (and seq, to recognise fresh chunks after a hand-back)."""
        self._advance(now_s)
        self._stats["chunks"] += 1
        c = _finite_float(confidence)
        c = 0.0 if c is None else c
        self._confidence = c
        if self._await_fresh_chunk and seq is not None:
            self._fresh_seqs.add(int(seq))
        cfg = self._config
        if c < cfg.pause_confidence:
            self._stats["low_confidence_chunks"] += 1
        if self._mode in POLICY_MODES:
            if c < cfg.pause_confidence:
                self._low_streak += 1
            elif c >= cfg.resume_confidence:
                self._low_streak = 0
            if self._low_streak >= cfg.low_confidence_chunks_to_pause:
                self._policy_pause(f"{REASON_LOW_CONFIDENCE}: {c:.2f} < {cfg.pause_confidence:g} "
                                   f"for {self._low_streak} chunks", now_s)
        self._advance(now_s)

    def on_failure(self, now_s: float, detail: str = "") -> None:
        """The task failed (e.g. a report_outcome topic): pause, or count toward escalation if paused."""
        self._advance(now_s)
        self._stats["failures"] += 1
        reason = REASON_FAILURE + (f": {detail}" if detail else "")
        if self._mode in POLICY_MODES:
            self._policy_pause(reason, now_s)
        elif self._mode == Mode.PAUSED:
            self._consecutive_pauses += 1
            if self._consecutive_pauses > self._config.max_consecutive_pauses:
                self._escalate(reason, now_s)
        self._advance(now_s)

    def on_ood_score(self, score: float, now_s: float) -> None:
        """The newest OOD score (z units; non-finite counts as out of distribution)."""
        self._advance(now_s)
        s = _finite_float(score)
        self._ood_score = s
        if s is None or s > self._config.ood_zscore:
            self._ood_normal_since = None
            if not self._ood_active:
                self._ood_active = True
                self._stats["conservative_entries"] += 1
            if self._mode == Mode.AUTONOMOUS:
                detail = "score not finite" if s is None else f"score {s:.2f} > {self._config.ood_zscore:g}"
                self._transition(Mode.CONSERVATIVE, f"{REASON_OOD}: {detail}", now_s)
        elif self._ood_normal_since is None:
            self._ood_normal_since = now_s
        self._advance(now_s)

    def on_measured(self, positions: np.ndarray, now_s: float) -> bool:
        """The robot's measured position in action order; returns False (ignored) if not (D,) finite."""
        self._advance(now_s)
        q = self._vector(positions)
        if q is None:
            self._stats["measured_rejected"] += 1
            return False
        self._measured, self._measured_s = q, now_s
        return True

    def on_deadman(self, pressed: bool, now_s: float) -> None:
        """A deadman heartbeat: True while held (repeat faster than deadman_timeout_s), False on release."""
        self._advance(now_s)
        if pressed is True or (isinstance(pressed, np.bool_) and bool(pressed)):
            self._deadman_pressed, self._deadman_s = True, now_s
        else:
            self._deadman_pressed = False
            if self._mode == Mode.HUMAN_OVERRIDE:
                self._end_override(REASON_DEADMAN_RELEASED, now_s)
        self._advance(now_s)

    def on_teleop(self, command: Mapping[str, float] | BaseTwist, now_s: float) -> tuple[bool, str]:
        """A teleop command: joint positions by name, or a body-frame twist for an [x, y, yaw] base.

        Returns (accepted, reason). A non-finite value rejects the message and clears
        the command (hold until the next valid one); a message without a known joint
        name is ignored.
        """
        self._advance(now_s)
        ok, reason = self._parse_teleop(command, now_s)
        self._advance(now_s)
        return ok, reason

    def on_policy_action(self, action: np.ndarray, now_s: float, chunk_seq: int | None = None) -> Output:
        """A policy action from the action buffer: forwarded (POLICY) only while the policy drives."""
        self._advance(now_s)
        if self._mode not in POLICY_MODES:
            self._stats["policy_dropped"] += 1
            return self._output(OutputKind.NONE, None, f"policy action dropped: {self._mode.name}")
        a = self._vector(action)
        if a is None:
            self._stats["policy_rejected"] += 1
            return self._hold(now_s, "policy action rejected: not a finite action of the right length")
        if self._await_fresh_chunk:
            if chunk_seq is not None and int(chunk_seq) not in self._fresh_seqs:
                self._stats["policy_dropped"] += 1
                return self._output(OutputKind.NONE, None, "policy action from a chunk older than the hand-back")
            self._await_fresh_chunk = False
            self._fresh_seqs.clear()
            self._driving_since = now_s
        self._stats["policy_forwarded"] += 1
        return self._send(OutputKind.POLICY, a, "")

    def tick(self, now_s: float) -> Output:
        """Once per control period: apply timeouts; HUMAN or HOLD to send, NONE while the policy drives."""
        self._advance(now_s)
        if self._mode in POLICY_MODES:
            if self._await_fresh_chunk:
                return self._hold(now_s, "waiting for a fresh chunk after the hand-back")
            return self._output(OutputKind.NONE, None, "policy drives")
        if self._mode == Mode.HUMAN_OVERRIDE:
            action = self._human_action()
            if action is None:
                return self._hold(now_s, "no valid teleop command")
            self._stats["human_sent"] += 1
            return self._send(OutputKind.HUMAN, action, REASON_HUMAN)
        return self._hold(now_s, self._reason)

    def resume_policy(self, now_s: float) -> tuple[bool, str]:
        """Explicit hand-back to the policy from a hold; returns (ok, message).

        Refused while escalated (acknowledge first), while the deadman is held, or while
        the newest chunk's confidence is below resume_confidence. On success the next
        output says reset_action_buffer, and the robot holds until a fresh chunk's action.
        """
        self._advance(now_s)
        cfg = self._config
        if self._escalated:
            return self._refuse("escalated: call acknowledge first")
        if self._mode in POLICY_MODES:
            return True, f"policy already driving ({self._mode.name})"
        if self.deadman_held(now_s):
            return self._refuse("deadman held: release it to hand back to the policy")
        if self._confidence is not None and self._confidence < cfg.resume_confidence:
            return self._refuse(f"policy confidence {self._confidence:.2f} < resume_confidence "
                                f"{cfg.resume_confidence:g}")
        target = Mode.CONSERVATIVE if self._ood_active else Mode.AUTONOMOUS
        self._transition(target, REASON_RESUMED, now_s)
        self._stats["resumes"] += 1
        self._low_streak = 0
        self._pending_reset = True
        self._await_fresh_chunk = True
        self._fresh_seqs.clear()
        self._driving_since = None
        return True, f"policy resumed ({target.name}); the action buffer restarts from the current state"

    def acknowledge(self, now_s: float) -> tuple[bool, str]:
        """A human acknowledged an escalation: ESCALATED -> PAUSED, count cleared; returns (ok, message)."""
        self._advance(now_s)
        if not self._escalated:
            return False, f"nothing to acknowledge ({self._mode.name})"
        self._escalated = False
        self._consecutive_pauses = 0
        self._stats["acknowledges"] += 1
        if self._mode == Mode.ESCALATED:
            self._transition(Mode.PAUSED, REASON_ACKNOWLEDGED, now_s)
        return True, "acknowledged; call resume_policy to hand back to the policy"

    def drain(self) -> Output:
        """A NONE output carrying the transitions, help requests and reset pending since the last output."""
        return self._output(OutputKind.NONE, None, "")

    # ------------------------------------------------------------------ internals
    def _vector(self, value: object) -> np.ndarray | None:
        try:
            v = np.array(value, dtype=np.float64)
        except (TypeError, ValueError):
            return None
        if v.shape != (self._dim,) or not np.all(np.isfinite(v)):
            return None
        return v

    def _refuse(self, message: str) -> tuple[bool, str]:
        self._stats["resume_refused"] += 1
        return False, message

    def _transition(self, mode: Mode, reason: str, now_s: float) -> None:
        if mode == self._mode:
            return
        self._pending_transitions.append(Transition(self._mode, mode, reason, now_s))
        if mode != self._mode and mode not in POLICY_MODES:
            self._hold_target = None  # a new hold starts where the robot is now
        if mode not in POLICY_MODES:
            self._await_fresh_chunk = False
            self._driving_since = None
        if mode == Mode.HUMAN_OVERRIDE and self._mode != Mode.HUMAN_OVERRIDE:
            self._stats["overrides"] += 1
        self._mode, self._reason = mode, reason

    def _policy_pause(self, reason: str, now_s: float) -> None:
        """The policy caused a pause: PAUSED with a help request, or ESCALATED past the limit."""
        self._consecutive_pauses += 1
        self._low_streak = 0
        if self._consecutive_pauses > self._config.max_consecutive_pauses:
            self._escalate(reason, now_s)
            return
        self._stats["pauses"] += 1
        self._transition(Mode.PAUSED, reason, now_s)
        self._pending_help.append(
            f"paused: {reason}. Take over (deadman + teleop) or call resume_policy. Consecutive pause "
            f"{self._consecutive_pauses}; more than {self._config.max_consecutive_pauses} escalates.")

    def _escalate(self, reason: str, now_s: float) -> None:
        self._escalated = True
        self._stats["escalations"] += 1
        full = (f"escalated: {reason}; {self._consecutive_pauses} consecutive pauses > "
                f"max {self._config.max_consecutive_pauses}")
        if self._mode != Mode.HUMAN_OVERRIDE:
            self._transition(Mode.ESCALATED, full, now_s)
        self._pending_help.append(f"{full}. A human must call acknowledge before the policy may resume.")

    def _end_override(self, reason: str, now_s: float) -> None:
        if self._escalated:
            self._transition(Mode.ESCALATED, f"{reason}; still escalated", now_s)
        else:
            self._transition(Mode.PAUSED, reason, now_s)

    def _advance(self, now_s: float) -> None:
        """Apply timeouts and conditions up to now_s (idempotent)."""
        cfg = self._config
        if self._mode == Mode.HUMAN_OVERRIDE:
            if not self.deadman_held(now_s):
                self._end_override(REASON_DEADMAN_RELEASED if not self._deadman_pressed
                                   else REASON_DEADMAN_TIMEOUT, now_s)
            elif now_s - self._teleop_s > cfg.teleop_timeout_s:
                self._end_override(REASON_TELEOP_TIMEOUT, now_s)
        elif self.deadman_held(now_s) and self.teleop_fresh(now_s):
            # The human wins over the policy and over any hold.
            self._transition(Mode.HUMAN_OVERRIDE, REASON_HUMAN, now_s)
        if (self._ood_active and self._ood_normal_since is not None
                and now_s - self._ood_normal_since >= cfg.conservative_exit_s):
            self._ood_active = False
            if self._mode == Mode.CONSERVATIVE:
                self._transition(Mode.AUTONOMOUS, f"{REASON_OOD_CLEARED} for {cfg.conservative_exit_s:g} s", now_s)
        if self._mode in POLICY_MODES and not self._await_fresh_chunk:
            if self._driving_since is None:
                self._driving_since = now_s
            elif self._consecutive_pauses and now_s - self._driving_since >= cfg.pause_count_reset_s:
                self._consecutive_pauses = 0

    def _parse_teleop(self, command: Mapping[str, float] | BaseTwist, now_s: float) -> tuple[bool, str]:
        if isinstance(command, BaseTwist):
            if self._dim != 3:
                self._stats["teleop_ignored"] += 1
                return False, f"twist teleop needs an [x, y, yaw] action, this one has {self._dim} values"
            values = [_finite_float(v) for v in (command.linear_x_mps, command.linear_y_mps,
                                                  command.angular_z_radps)]
            if any(v is None for v in values):
                return self._reject_teleop("twist has a non-finite value")
            self._teleop = BaseTwist(*values)  # type: ignore[arg-type]
        else:
            try:
                items = list(command.items())
            except AttributeError:
                self._stats["teleop_ignored"] += 1
                return False, f"teleop command must be a mapping or a BaseTwist, got {type(command).__name__}"
            idx: list[int] = []
            vals: list[float] = []
            for name, value in items:
                i = self._index.get(name)
                if i is None:
                    continue  # unknown names (another device's joints) are ignored
                v = _finite_float(value)
                if v is None:
                    return self._reject_teleop(f"non-finite or non-numeric value for {name}: {value!r}")
                if i in idx:
                    return self._reject_teleop(f"joint {name} listed twice")
                idx.append(i)
                vals.append(v)
            if not idx:
                self._stats["teleop_ignored"] += 1
                return False, "no known joint name in the teleop command"
            self._teleop = (np.array(idx, dtype=np.intp), np.array(vals, dtype=np.float64))
        self._teleop_s = now_s
        self._stats["teleop_accepted"] += 1
        return True, ""

    def _reject_teleop(self, why: str) -> tuple[bool, str]:
        self._teleop = None  # hold until the next valid command
        self._stats["teleop_rejected"] += 1
        return False, f"teleop rejected: {why}"

    def _human_action(self) -> np.ndarray | None:
        cmd = self._teleop
        if cmd is None:
            return None
        base = self._last_commanded if self._last_commanded is not None else self._measured
        if isinstance(cmd, BaseTwist):
            return None if base is None else integrate_twist(base, cmd, self._config.control_period_s)
        idx, vals = cmd
        if base is None:
            if idx.size != self._dim:
                return None  # a partial command needs a position to fill in the rest
            base = np.zeros(self._dim)
        out = base.copy()
        out[idx] = vals
        return out

    def _hold(self, now_s: float, reason: str) -> Output:
        if self._hold_target is None:
            cfg = self._config
            measured = self._measured
            fresh = measured is not None and now_s - self._measured_s <= cfg.measured_timeout_s
            if cfg.hold_at_measured and fresh and measured is not None:
                self._hold_target = measured.copy()
                if self._last_commanded is not None:  # grippers keep squeezing what they hold
                    self._hold_target[self._hold_at_command] = self._last_commanded[self._hold_at_command]
            elif self._last_commanded is not None:
                self._hold_target = self._last_commanded
            else:
                self._hold_target = self._measured
        if self._hold_target is None:
            return self._output(OutputKind.NONE, None, f"{reason} (no position to hold yet)")
        self._stats["holds_sent"] += 1
        out = self._output(OutputKind.HOLD, self._hold_target.copy(), reason)
        self._last_commanded = self._hold_target
        return out

    def _send(self, kind: OutputKind, action: np.ndarray, reason: str) -> Output:
        self._hold_target = None
        self._last_commanded = action
        return self._output(kind, action.copy(), reason)

    def _output(self, kind: OutputKind, action: np.ndarray | None, reason: str) -> Output:
        out = Output(kind=kind, action=action, reason=reason, mode=self._mode,
                     reset_action_buffer=self._pending_reset, help_requests=tuple(self._pending_help),
                     transitions=tuple(self._pending_transitions))
        self._pending_reset = False
        self._pending_help.clear()
        self._pending_transitions.clear()
        return out
