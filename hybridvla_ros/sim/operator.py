"""A scripted human operator for the simulated robot (ROS-free).

It behaves like a person watching the robot with a teleop device: when the graph asks for
help (handoff PAUSED or ESCALATED), it reacts after ``reaction_s``, acknowledges an
escalation, holds the deadman and streams the scripted expert's targets as teleop
commands until the task is done (task error below ``done_error_m``) or ``max_help_s``
has passed; then it releases the deadman and, after ``handback_delay_s``, asks the
handoff to give control back to the policy.

With ``stall_s > 0`` it also steps in unasked, as a person watching a stuck robot would:
when the policy drives (AUTONOMOUS or CONSERVATIVE) and the task error has not fallen by
``stall_progress_m`` for ``stall_s`` seconds while above ``done_error_m``. Taking over is
just holding the deadman and streaming teleop (the handoff gives the human priority from
any mode); those are the corrections a policy that is confidently wrong most needs. A jump
of the task error by more than ``STALL_RESET_JUMP_M`` (a new episode) restarts the watch.
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np

from hybridvla_ros.core.handoff import Mode

# HandoffMode values, as the operator reads them from handoff/mode
MODE_AUTONOMOUS, MODE_PAUSED, MODE_HUMAN, MODE_ESCALATED, MODE_CONSERVATIVE = (
    Mode.AUTONOMOUS, Mode.PAUSED, Mode.HUMAN_OVERRIDE, Mode.ESCALATED, Mode.CONSERVATIVE)
STALL_RESET_JUMP_M = 0.05  # the task error rising this much at once is a new episode, not the policy


class Phase(enum.Enum):
    """What the operator is doing."""

    WATCHING = "watching"
    REACTING = "reacting"
    HELPING = "helping"
    HANDING_BACK = "handing back"


@dataclass(frozen=True)
class OperatorConfig:
    """Timing of the scripted operator."""

    reaction_s: float = 0.5          # from the help request to the deadman
    min_help_s: float = 2.0          # help at least this long (enough corrections to learn from)
    max_help_s: float = 8.0          # then give back even if the task is not done
    done_error_m: float = 0.03       # task error that counts as done
    handback_delay_s: float = 0.5    # from releasing the deadman to asking for resume_policy
    stall_s: float = 0.0             # > 0: take over unasked when the policy makes no progress this long
    stall_progress_m: float = 0.01   # what counts as progress: the task error falling by this much

    def __post_init__(self) -> None:
        for name in ("reaction_s", "min_help_s", "max_help_s", "done_error_m", "handback_delay_s", "stall_s",
                     "stall_progress_m"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name}: must be a finite number >= 0, got {value!r}")
        if self.max_help_s < self.min_help_s:
            raise ValueError(f"max_help_s: {self.max_help_s} is below min_help_s {self.min_help_s}")


@dataclass(frozen=True)
class OperatorOutput:
    """What the operator does this instant."""

    deadman: bool                     # hold the deadman (heartbeat) or not
    teleop: np.ndarray | None         # (D,) target to stream, None for nothing
    acknowledge: bool = False         # call handoff/acknowledge now
    resume: bool = False              # call handoff/resume_policy now


class ScriptedOperator:
    """Decides, from the handoff mode and the expert's target, what a person would do."""

    def __init__(self, config: OperatorConfig) -> None:
        self.config = config
        self.phase = Phase.WATCHING
        self._since_s = 0.0
        self.helps = 0
        self.stall_takeovers = 0
        self.resumes_requested = 0
        self._stalled = False                # the current help was not asked for
        self._best_error_m = math.inf        # stall watch: lowest task error since _best_s
        self._best_s = 0.0

    def _watch_progress(self, now_s: float, mode: int | None, task_error_m: float | None) -> bool:
        """True when the policy has driven without progress for stall_s (only with stall_s > 0)."""
        cfg = self.config
        if cfg.stall_s <= 0 or task_error_m is None or not math.isfinite(task_error_m) \
                or mode not in (MODE_AUTONOMOUS, MODE_CONSERVATIVE):
            self._best_error_m, self._best_s = math.inf, now_s
            return False
        if (task_error_m < self._best_error_m - cfg.stall_progress_m
                or task_error_m > self._best_error_m + STALL_RESET_JUMP_M):
            self._best_error_m, self._best_s = task_error_m, now_s
        return task_error_m > cfg.done_error_m and now_s - self._best_s >= cfg.stall_s

    def _enter(self, phase: Phase, now_s: float) -> None:
        self.phase = phase
        self._since_s = now_s

    def step(self, now_s: float, mode: int | None, expert_target: np.ndarray | None,
             task_error_m: float | None) -> OperatorOutput:
        """One decision; ``mode`` is the latest HandoffMode.mode (None before any)."""
        cfg = self.config
        elapsed = now_s - self._since_s
        if self.phase is Phase.WATCHING:
            if mode in (MODE_PAUSED, MODE_ESCALATED):
                self._stalled = False
                self._enter(Phase.REACTING, now_s)
            elif self._watch_progress(now_s, mode, task_error_m):
                self._stalled = True
                self._enter(Phase.REACTING, now_s)
            return OperatorOutput(False, None)
        if self.phase is Phase.REACTING:
            if not self._stalled and mode not in (MODE_PAUSED, MODE_ESCALATED):
                self._enter(Phase.WATCHING, now_s)
                return OperatorOutput(False, None)
            if elapsed < cfg.reaction_s:
                return OperatorOutput(False, None)
            self._enter(Phase.HELPING, now_s)
            self.helps += 1
            self.stall_takeovers += int(self._stalled)
            return OperatorOutput(True, self._target(expert_target), acknowledge=(mode == MODE_ESCALATED))
        if self.phase is Phase.HELPING:
            done = task_error_m is not None and task_error_m < cfg.done_error_m and elapsed >= cfg.min_help_s
            if done or elapsed >= cfg.max_help_s:
                self._enter(Phase.HANDING_BACK, now_s)
                return OperatorOutput(False, None)
            return OperatorOutput(True, self._target(expert_target))
        # HANDING_BACK: deadman released; ask for the hand-back once, then watch again.
        if elapsed < cfg.handback_delay_s:
            return OperatorOutput(False, None)
        self._enter(Phase.WATCHING, now_s)
        self._best_error_m, self._best_s = math.inf, now_s
        self.resumes_requested += 1
        return OperatorOutput(False, None, resume=True)

    @staticmethod
    def _target(expert_target: np.ndarray | None) -> np.ndarray | None:
        if expert_target is None:
            return None
        t = np.asarray(expert_target, dtype=np.float64)
        return t if np.all(np.isfinite(t)) else None
