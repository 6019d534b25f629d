"""The scripted operator reacts to help requests, corrects, and hands back."""
from __future__ import annotations

import numpy as np
import pytest

from hybridvla_ros.sim.operator import (
    MODE_AUTONOMOUS,
    MODE_ESCALATED,
    MODE_HUMAN,
    MODE_PAUSED,
    OperatorConfig,
    Phase,
    ScriptedOperator,
)

TARGET = np.array([0.1, 0.2])


def run(op: ScriptedOperator, events: list[tuple[float, int, float]]) -> list:
    return [op.step(t, mode, TARGET, err) for t, mode, err in events]


def test_helps_after_reaction_time_then_hands_back_when_done() -> None:
    op = ScriptedOperator(OperatorConfig(reaction_s=0.5, min_help_s=1.0, max_help_s=5.0, handback_delay_s=0.2))
    assert not op.step(0.0, MODE_AUTONOMOUS, TARGET, 0.3).deadman
    assert not op.step(1.0, MODE_PAUSED, TARGET, 0.3).deadman      # sees the pause
    assert not op.step(1.3, MODE_PAUSED, TARGET, 0.3).deadman      # still reacting
    out = op.step(1.6, MODE_PAUSED, TARGET, 0.3)
    assert out.deadman and np.array_equal(out.teleop, TARGET) and op.phase is Phase.HELPING
    assert op.step(2.0, MODE_HUMAN, TARGET, 0.01).deadman          # done, but min_help_s not reached
    out = op.step(2.7, MODE_HUMAN, TARGET, 0.01)                     # done: releases
    assert not out.deadman and out.teleop is None and not out.resume
    assert not op.step(2.8, MODE_PAUSED, TARGET, 0.01).resume
    assert op.step(3.0, MODE_PAUSED, TARGET, 0.01).resume           # asks for the hand-back once
    assert op.phase is Phase.WATCHING and op.resumes_requested == 1


def test_gives_back_after_max_help_even_if_not_done() -> None:
    op = ScriptedOperator(OperatorConfig(reaction_s=0.0, min_help_s=0.0, max_help_s=2.0))
    op.step(0.0, MODE_PAUSED, TARGET, 0.5)
    assert op.step(0.1, MODE_PAUSED, TARGET, 0.5).deadman
    assert op.step(1.9, MODE_HUMAN, TARGET, 0.5).deadman
    assert not op.step(2.2, MODE_HUMAN, TARGET, 0.5).deadman


def test_acknowledges_an_escalation_and_never_streams_nan() -> None:
    op = ScriptedOperator(OperatorConfig(reaction_s=0.0))
    op.step(0.0, MODE_ESCALATED, TARGET, 0.5)
    out = op.step(0.1, MODE_ESCALATED, np.array([np.nan, 0.0]), 0.5)
    assert out.acknowledge and out.deadman and out.teleop is None


def test_a_pause_that_ends_before_the_reaction_is_ignored() -> None:
    op = ScriptedOperator(OperatorConfig(reaction_s=1.0))
    op.step(0.0, MODE_PAUSED, TARGET, 0.5)
    op.step(0.5, MODE_AUTONOMOUS, TARGET, 0.5)
    assert op.phase is Phase.WATCHING and op.helps == 0


def test_bad_config_names_the_field() -> None:
    with pytest.raises(ValueError, match="max_help_s"):
        OperatorConfig(min_help_s=5.0, max_help_s=1.0)


def test_takes_over_unasked_when_the_policy_stalls_and_not_while_it_progresses() -> None:
    op = ScriptedOperator(OperatorConfig(reaction_s=0.2, min_help_s=0.5, max_help_s=3.0, stall_s=2.0,
                                         stall_progress_m=0.01, done_error_m=0.02))
    # Progressing 1 cm every 0.5 s: never a takeover.
    for i in range(20):
        assert not op.step(i * 0.5, MODE_AUTONOMOUS, TARGET, 0.30 - 0.012 * i).deadman
    # Stuck at 6 cm: the watch fires 2 s after the last progress, then the reaction time.
    t0 = 10.0
    outs = [op.step(t0 + 0.1 * k, MODE_AUTONOMOUS, TARGET, 0.06) for k in range(30)]
    first = next(k for k, o in enumerate(outs) if o.deadman)
    assert 0.1 * first >= 2.0 and op.stall_takeovers == 1 and op.helps == 1
    assert np.array_equal(outs[first].teleop, TARGET)


def test_stall_watch_is_off_by_default_and_restarts_on_a_new_episode() -> None:
    op = ScriptedOperator(OperatorConfig())
    assert not any(op.step(0.1 * k, MODE_AUTONOMOUS, TARGET, 0.2).deadman for k in range(200))
    op = ScriptedOperator(OperatorConfig(reaction_s=0.0, stall_s=2.0))
    for k in range(15):                      # 1.5 s stuck ...
        assert not op.step(0.1 * k, MODE_AUTONOMOUS, TARGET, 0.1).deadman
    for k in range(15, 30):                  # ... then a reset puts the error up: the watch restarts
        assert not op.step(0.1 * k, MODE_AUTONOMOUS, TARGET, 0.4).deadman
    # Solved tasks are never "stalled".
    op = ScriptedOperator(OperatorConfig(reaction_s=0.0, stall_s=1.0, done_error_m=0.03))
    assert not any(op.step(0.1 * k, MODE_AUTONOMOUS, TARGET, 0.01).deadman for k in range(50))
