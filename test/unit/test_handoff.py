"""HandoffStateMachine: who drives the robot, for every transition and timeout (ROS-free)."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridvla_ros.core.command import BaseTwist, pose_step_to_twist
from hybridvla_ros.core.handoff import (
    POLICY_MODES,
    HandoffConfig,
    HandoffStateMachine,
    Mode,
    OodScorer,
    Output,
    OutputKind,
    integrate_twist,
)
from hybridvla_ros.params import ParameterError, from_params, load_node_params
from hybridvla_ros.params.embodiment import EMBODIMENTS
from hybridvla_ros.params.handoff import HandoffParams

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NAMES = ("j0", "j1", "j2")
START = np.array([0.1, 0.2, 0.3])
CFG = HandoffConfig(pause_confidence=0.3, resume_confidence=0.5, low_confidence_chunks_to_pause=2,
                    max_consecutive_pauses=2, pause_count_reset_s=5.0, deadman_timeout_s=0.25,
                    teleop_timeout_s=0.25, ood_zscore=4.0, conservative_velocity_scale=0.3,
                    conservative_exit_s=1.0, measured_timeout_s=0.5, control_period_s=0.02)
A, P, H, E, C = Mode.AUTONOMOUS, Mode.PAUSED, Mode.HUMAN_OVERRIDE, Mode.ESCALATED, Mode.CONSERVATIVE
POL, HUM, HOLD, NONE = OutputKind.POLICY, OutputKind.HUMAN, OutputKind.HOLD, OutputKind.NONE


class Run:
    """A state machine plus every output and call result, driven by (t, event, *args) tuples."""

    def __init__(self, config: HandoffConfig = CFG, names: tuple[str, ...] = NAMES) -> None:
        self.sm = HandoffStateMachine(config, names)
        self.outputs: list[Output] = []
        self.results: list[tuple[bool, str]] = []

    def __call__(self, *events: tuple) -> Run:
        for t, name, *args in events:
            sm = self.sm
            if name == "policy":
                self.outputs.append(sm.on_policy_action(args[0] if args else START, t, *args[1:]))
            elif name == "chunk":
                sm.on_chunk_confidence(args[0], t, *args[1:])
            elif name == "teleop":
                self.results.append(sm.on_teleop(args[0], t))
            elif name == "deadman":
                sm.on_deadman(args[0], t)
            elif name == "ood":
                sm.on_ood_score(args[0], t)
            elif name == "fail":
                sm.on_failure(t)
            elif name == "measured":
                sm.on_measured(args[0], t)
            elif name == "ack":
                self.results.append(sm.acknowledge(t))
            elif name == "resume":
                self.results.append(sm.resume_policy(t))
            elif name == "tick":
                self.outputs.append(sm.tick(t))
            else:
                raise AssertionError(name)
            if name not in ("policy", "tick"):
                self.outputs.append(sm.drain())
        return self

    @property
    def transitions(self) -> list:
        return [tr for o in self.outputs for tr in o.transitions]

    @property
    def help_requests(self) -> list[str]:
        return [h for o in self.outputs for h in o.help_requests]


def held(t0: float, t1: float, dt: float = 0.05) -> list[tuple]:
    """Deadman heartbeats from t0 to t1."""
    return [(t, "deadman", True) for t in np.arange(t0, t1, dt)]


def teleop(t0: float, t1: float, cmd: object = None, dt: float = 0.05) -> list[tuple]:
    """Teleop commands from t0 to t1."""
    return [(t, "teleop", {"j2": 1.0} if cmd is None else cmd) for t in np.arange(t0, t1, dt)]


def override(t0: float, t1: float) -> list[tuple]:
    """A human holding the deadman and streaming teleop from t0 to t1."""
    return sorted(held(t0, t1) + teleop(t0 + 0.01, t1), key=lambda e: e[0])


LOW = [(0.1, "chunk", 0.1), (0.2, "chunk", 0.1)]  # two low chunks: a pause


def pause_resume(t: float) -> list[tuple]:
    """A low-confidence pause at t, then good chunks and a resume."""
    return [(t, "chunk", 0.1), (t + 0.1, "chunk", 0.1), (t + 0.2, "chunk", 0.9), (t + 0.3, "resume")]


# (events, expected mode, expected kind of a tick at the end, reason fragment)
TABLE = [
    ("start", [(0.0, "policy")], A, NONE, "start"),
    ("one low chunk", [(0.0, "policy"), (0.1, "chunk", 0.1)], A, NONE, "start"),
    ("two low chunks pause", [(0.0, "policy"), *LOW], P, HOLD, "low confidence"),
    ("hysteresis: a middling chunk keeps the streak", [(0.0, "policy"), (0.1, "chunk", 0.1), (0.2, "chunk", 0.4),
                                                       (0.3, "chunk", 0.1)], P, HOLD, "low confidence"),
    ("a good chunk clears the streak", [(0.0, "policy"), (0.1, "chunk", 0.1), (0.2, "chunk", 0.6),
                                        (0.3, "chunk", 0.1)], A, NONE, "start"),
    ("NaN confidence counts as low", [(0.0, "policy"), (0.1, "chunk", math.nan), (0.2, "chunk", math.nan)],
     P, HOLD, "low confidence"),
    ("deadman alone does not take over", [(0.0, "policy"), *held(0.0, 0.3)], A, NONE, "start"),
    ("teleop alone does not take over", [(0.0, "policy"), *teleop(0.0, 0.3)], A, NONE, "start"),
    ("deadman + teleop take over", [(0.0, "policy"), *override(0.0, 0.3)], H, HUM, "human override"),
    ("teleop first, then deadman", [(0.0, "policy"), (0.1, "teleop", {"j0": 0.5}), (0.2, "deadman", True)],
     H, HUM, "human override"),
    ("stale teleop + deadman: no override", [(0.0, "policy"), (0.1, "teleop", {"j0": 0.5}),
                                              (0.4, "deadman", True)], A, NONE, "start"),
    ("deadman released -> hold", [(0.0, "policy"), *override(0.0, 0.3), (0.31, "deadman", False)],
     P, HOLD, "deadman released"),
    ("deadman heartbeat stops -> hold", [(0.0, "policy"), *teleop(0.0, 0.3), (0.0, "deadman", True),
                                         *teleop(0.3, 0.6)], P, HOLD, "deadman timeout"),
    ("teleop stream stops -> hold", [(0.0, "policy"), *override(0.0, 0.3), *held(0.3, 0.7)],
     P, HOLD, "teleop timeout"),
    ("human wins over a pause", [(0.0, "policy"), *LOW, *override(0.3, 0.5)], H, HUM, "human override"),
    ("low confidence does not stop the human", [(0.0, "policy"), *override(0.0, 0.3), (0.31, "chunk", 0.0),
                                                (0.32, "chunk", 0.0)], H, HUM, "human override"),
    ("NaN teleop is rejected: hold", [(0.0, "policy"), *override(0.0, 0.3), (0.31, "teleop", {"j1": math.nan})],
     H, HOLD, "human override"),
    ("OOD -> conservative", [(0.0, "policy"), (0.1, "ood", 9.0)], C, NONE, "out of distribution"),
    ("non-finite OOD score -> conservative", [(0.0, "policy"), (0.1, "ood", math.inf)], C, NONE, "not finite"),
    ("OOD normal for exit_s -> autonomous", [(0.0, "policy"), (0.1, "ood", 9.0), (0.2, "ood", 1.0),
                                             (1.25, "ood", 1.0)], A, NONE, "back in distribution"),
    ("OOD normal shorter than exit_s", [(0.0, "policy"), (0.1, "ood", 9.0), (0.2, "ood", 1.0), (0.5, "ood", 9.0),
                                        (1.0, "ood", 1.0), (1.6, "ood", 1.0)], C, NONE, "out of distribution"),
    ("OOD while paused keeps the pause", [(0.0, "policy"), *LOW, (0.3, "ood", 9.0)], P, HOLD, "low confidence"),
    ("low confidence pauses a conservative policy", [(0.0, "policy"), (0.05, "ood", 9.0), *LOW],
     P, HOLD, "low confidence"),
    ("failure -> pause", [(0.0, "policy"), (0.1, "fail")], P, HOLD, "failure"),
    ("resume -> autonomous, holding for a fresh chunk", [(0.0, "policy"), *pause_resume(0.1)], A, HOLD,
     "resumed"),
    ("resume while OOD -> conservative", [(0.0, "policy"), (0.05, "ood", 9.0), *pause_resume(0.1)], C, HOLD,
     "resumed"),
    ("resume refused while the deadman is held", [(0.0, "policy"), *LOW, (0.3, "chunk", 0.9),
                                                  (0.35, "deadman", True), (0.4, "resume")], P, HOLD, "low"),
    ("resume refused while confidence is low", [(0.0, "policy"), *LOW, (0.3, "resume")], P, HOLD, "low"),
    ("resume after an override", [(0.0, "policy"), *override(0.0, 0.3), (0.31, "deadman", False),
                                  (0.4, "resume")], A, HOLD, "resumed"),
    ("third pause escalates (max 2)", [(0.0, "policy"), *pause_resume(0.1), *pause_resume(0.5),
                                       (0.9, "chunk", 0.1), (1.0, "chunk", 0.1)], E, HOLD, "escalated"),
    ("escalated ignores resume", [(0.0, "policy"), *pause_resume(0.1), *pause_resume(0.5), (0.9, "fail"),
                                  (1.0, "chunk", 0.9), (1.1, "resume")], E, HOLD, "escalated"),
    ("acknowledge -> paused", [(0.0, "policy"), *pause_resume(0.1), *pause_resume(0.5), (0.9, "fail"),
                               (1.1, "ack")], P, HOLD, "acknowledged"),
    ("acknowledge then resume", [(0.0, "policy"), *pause_resume(0.1), *pause_resume(0.5), (0.9, "fail"),
                                 (1.0, "chunk", 0.9), (1.1, "ack"), (1.2, "resume")], A, HOLD, "resumed"),
    ("a human may drive an escalated robot", [(0.0, "policy"), *pause_resume(0.1), *pause_resume(0.5),
                                              (0.9, "fail"), *override(1.0, 1.3)], H, HUM, "human override"),
    ("releasing it goes back to escalated", [(0.0, "policy"), *pause_resume(0.1), *pause_resume(0.5),
                                             (0.9, "fail"), *override(1.0, 1.3), (1.31, "deadman", False)],
     E, HOLD, "still escalated"),
    ("failures while paused escalate", [(0.0, "policy"), (0.1, "fail"), (0.2, "fail"), (0.3, "fail")],
     E, HOLD, "escalated"),
]


@pytest.mark.parametrize("name, events, mode, kind, reason", TABLE, ids=[row[0] for row in TABLE])
def test_transition_table(name: str, events: list[tuple], mode: Mode, kind: OutputKind, reason: str) -> None:
    run = Run()(*sorted(events, key=lambda e: e[0]))
    t_end = max(e[0] for e in events) + 0.001
    out = run.sm.tick(t_end)
    assert (run.sm.mode, out.kind) == (mode, kind), (run.sm.reason, run.transitions)
    assert reason in run.sm.reason
    assert out.mode == mode
    if kind != NONE:
        assert out.action is not None and np.all(np.isfinite(out.action))
    # Every change of mode was reported once, in order, with a reason.
    modes = [A] + [tr.mode for tr in run.transitions]
    assert all(tr.previous == prev for tr, prev in zip(run.transitions, modes))
    assert modes[-1] == mode and all(tr.reason for tr in run.transitions)


def test_policy_actions_pass_only_while_the_policy_drives() -> None:
    run = Run()((0.0, "policy", START), *LOW, (0.3, "policy", START + 1))
    first, dropped = run.outputs[0], run.outputs[-1]
    assert first.kind == POL and np.array_equal(first.action, START)
    assert dropped.kind == NONE and dropped.action is None
    assert run.sm.stats["policy_dropped"] == 1


def test_bad_policy_action_holds_and_is_never_forwarded() -> None:
    run = Run()((0.0, "policy", START), (0.02, "policy", np.array([0.0, math.nan, 0.0])),
                (0.04, "policy", np.zeros(4)))
    assert [o.kind for o in run.outputs] == [POL, HOLD, HOLD]
    assert all(np.array_equal(o.action, START) for o in run.outputs)
    assert run.sm.mode == A and run.sm.stats["policy_rejected"] == 2


def test_pause_asks_for_help_once_and_escalation_says_acknowledge() -> None:
    run = Run()((0.0, "policy"), *LOW, (0.25, "tick"), (0.3, "tick"))
    assert len(run.help_requests) == 1 and "low confidence" in run.help_requests[0]
    run((0.4, "chunk", 0.9), (0.5, "resume"), *pause_resume(0.6), (1.0, "chunk", 0.1), (1.1, "chunk", 0.1))
    assert run.sm.mode == E and run.sm.consecutive_pauses == 3
    assert len(run.help_requests) == 3 and "acknowledge" in run.help_requests[-1]


def test_human_caused_pauses_ask_for_no_help_and_do_not_count() -> None:
    run = Run()((0.0, "policy"), *override(0.0, 0.3), (0.31, "deadman", False), *override(0.4, 0.6),
                (0.61, "tick"), (0.9, "tick"))
    assert run.sm.mode == P and "timeout" in run.sm.reason
    assert run.help_requests == [] and run.sm.consecutive_pauses == 0


def test_deadman_and_teleop_timeouts_are_exact() -> None:
    run = Run()((0.0, "policy"), (0.0, "teleop", {"j0": 1.0}), (0.0, "deadman", True), (0.2, "teleop", {"j0": 1.0}))
    assert run.sm.tick(0.25).kind == HUM  # deadman exactly deadman_timeout_s old: still held
    out = run.sm.tick(0.2501)
    assert (out.kind, run.sm.reason) == (HOLD, "deadman timeout")
    run = Run()((0.0, "policy"), (0.0, "teleop", {"j0": 1.0}), *held(0.0, 0.5))
    assert run.sm.tick(0.25).kind == HUM
    assert run.sm.tick(0.2501).kind == HOLD and run.sm.reason == "teleop timeout"


def test_losing_the_human_never_returns_to_the_policy() -> None:
    for end in ([(0.31, "deadman", False)], [], held(0.3, 1.0)):
        run = Run()((0.0, "policy"), *override(0.0, 0.3), *end)
        for k in range(100):
            t = 1.0 + 0.02 * k
            assert run.sm.on_policy_action(START + 5.0, t).kind == NONE
            out = run.sm.tick(t)
            assert out.kind == HOLD and np.array_equal(out.action, run.sm.tick(t).action)
        assert run.sm.mode == P


def test_teleop_joint_state_any_order_subset_unknown_names() -> None:
    run = Run()((0.0, "policy", START), (0.01, "deadman", True),
                (0.02, "teleop", {"j2": 3.0, "gripper": 9.0, "j0": 1.0}))
    out = run.sm.tick(0.03)
    assert out.kind == HUM and np.array_equal(out.action, [1.0, START[1], 3.0])
    run((0.04, "deadman", True), (0.05, "teleop", {"j1": -1.0}))
    assert np.array_equal(run.sm.tick(0.06).action, [1.0, -1.0, 3.0])  # the others keep their last command
    ok, why = run.sm.on_teleop({"other": 1.0}, 0.07)
    assert not ok and "no known joint" in why


def test_nan_teleop_is_rejected_and_never_forwarded() -> None:
    run = Run()((0.0, "policy", START), (0.01, "deadman", True), (0.02, "teleop", {"j0": 1.0}), (0.03, "tick"))
    ok, why = run.sm.on_teleop({"j0": 2.0, "j1": math.nan}, 0.04)
    assert not ok and "rejected" in why and "j1" in why
    out = run.sm.tick(0.05)
    assert out.kind == HOLD and np.all(np.isfinite(out.action))
    ok, _ = run.sm.on_teleop({"j0": 2.0}, 0.06)
    assert ok and run.sm.tick(0.07).action[0] == 2.0


def test_hold_target_measured_if_fresh_else_last_command_and_frozen() -> None:
    measured = np.array([0.5, 0.5, 0.5])
    run = Run()((0.0, "measured", measured), (0.0, "policy", START), *LOW)
    out = run.sm.tick(0.3)
    assert np.array_equal(out.action, measured)
    run((0.35, "measured", measured + 1.0))
    assert np.array_equal(run.sm.tick(0.4).action, measured), "the hold target stays put during a hold"
    # Measured too old: the last command.
    run = Run()((0.0, "measured", measured), (0.0, "policy", START), (1.0, "chunk", 0.0), (1.1, "chunk", 0.0))
    assert np.array_equal(run.sm.tick(1.2).action, START)
    # A base (hold_at_measured false): the last command, a zero step.
    cfg = HandoffConfig(**{**CFG.__dict__, "hold_at_measured": False})
    run = Run(cfg)((0.0, "measured", measured), (0.0, "policy", START), *LOW)
    assert np.array_equal(run.sm.tick(0.25).action, START)
    # Nothing known yet: nothing to hold.
    run = Run()(*LOW)
    assert run.sm.tick(0.3).kind == NONE


def test_a_gripper_is_held_at_its_last_command_the_arm_at_its_measured_position() -> None:
    """j2 is a gripper squeezing an object: commanded 0.3, measured 0.8 (the object stops it). A
    hold keeps squeezing (0.3) while the arm joints stop where they are."""
    cfg = HandoffConfig(**{**CFG.__dict__, "hold_at_command_joints": ("j2",)})
    measured = np.array([0.5, 0.5, 0.8])
    run = Run(cfg)((0.0, "measured", measured), (0.0, "policy", START), *LOW)
    np.testing.assert_array_equal(run.sm.tick(0.3).action, [0.5, 0.5, 0.3])
    # without a command yet, the measured position is all there is
    run = Run(cfg)((0.0, "measured", measured), *LOW)
    np.testing.assert_array_equal(run.sm.tick(0.3).action, measured)
    with pytest.raises(ValueError, match="not in joint_names"):
        HandoffStateMachine(HandoffConfig(**{**CFG.__dict__, "hold_at_command_joints": ("finger",)}), NAMES)
    with pytest.raises(ValueError, match="not at run time"):
        run.sm.update_config(hold_at_command_joints=("j0",))


def test_releasing_the_deadman_stops_at_the_measured_position_not_the_human_target() -> None:
    run = Run()((0.0, "policy", START), *override(0.0, 0.3))
    run((0.29, "measured", np.array([0.1, 0.2, 0.6])), (0.3, "tick"), (0.31, "deadman", False))
    assert np.array_equal(run.sm.tick(0.32).action, [0.1, 0.2, 0.6])


def test_hand_back_resets_the_buffer_once_and_waits_for_a_fresh_chunk() -> None:
    run = Run()((0.0, "policy", START, 1), (0.05, "chunk", 0.9, 1), *LOW, (0.3, "chunk", 0.9, 2))
    ok, msg = run.sm.resume_policy(0.4)
    assert ok and "resumed" in msg
    first, second = run.sm.tick(0.42), run.sm.tick(0.44)
    assert first.reset_action_buffer and not second.reset_action_buffer
    assert first.kind == second.kind == HOLD and run.sm.mode == A
    assert run.sm.on_policy_action(START + 1, 0.45, 2).kind == NONE  # from a chunk older than the resume
    run((0.46, "chunk", 0.9, 3))
    out = run.sm.on_policy_action(START + 2, 0.47, 3)
    assert out.kind == POL and np.array_equal(out.action, START + 2)
    assert run.sm.tick(0.48).kind == NONE
    # Without chunk seqs the first action after the resume is taken.
    run = Run()((0.0, "policy"), *LOW, (0.3, "chunk", 0.9), (0.4, "resume"))
    assert run.sm.on_policy_action(START, 0.45).kind == POL


def test_resume_and_acknowledge_answers() -> None:
    run = Run()((0.0, "policy"))
    assert run.sm.resume_policy(0.1) == (True, "policy already driving (AUTONOMOUS)")
    ok, msg = run.sm.acknowledge(0.1)
    assert not ok and "nothing to acknowledge" in msg
    run(*pause_resume(0.2), *pause_resume(0.6), (1.0, "fail"))
    ok, msg = run.sm.resume_policy(1.1)
    assert not ok and "acknowledge" in msg
    assert run.sm.acknowledge(1.2)[0] and run.sm.consecutive_pauses == 0


def test_pause_count_resets_after_driving_for_the_window() -> None:
    run = Run()((0.0, "policy", START, 0), *pause_resume(0.1), (0.45, "chunk", 0.9, 5), (0.5, "policy", START, 5))
    assert run.sm.consecutive_pauses == 1
    run((5.4, "tick"))
    assert run.sm.consecutive_pauses == 1
    run((5.6, "tick"))  # 5 s after the first fresh action
    assert run.sm.consecutive_pauses == 0
    run(*pause_resume(6.0), *pause_resume(6.4), (6.8, "chunk", 0.1), (6.9, "chunk", 0.1))
    assert run.sm.mode == E  # counted from zero again: pause 1, 2, then 3 escalates


def test_a_pause_before_the_window_keeps_counting() -> None:
    run = Run()((0.0, "policy"), *pause_resume(0.1), (3.0, "policy"), *pause_resume(4.0), (6.0, "policy"))
    assert run.sm.consecutive_pauses == 2


def test_velocity_scale_follows_conservative_mode() -> None:
    run = Run()((0.0, "policy"))
    assert run.sm.velocity_scale == 1.0
    run((0.1, "ood", 5.0))
    assert run.sm.velocity_scale == pytest.approx(0.3)
    run(*override(0.2, 0.4))
    assert run.sm.velocity_scale == 1.0  # the human is not slowed down
    run((0.41, "deadman", False), (0.5, "chunk", 0.9), (0.6, "resume"))
    assert run.sm.mode == C and run.sm.velocity_scale == pytest.approx(0.3)
    run((0.7, "ood", 0.0), (1.8, "tick"))
    assert run.sm.mode == A and run.sm.velocity_scale == 1.0


def test_twist_teleop_integrates_from_the_last_command() -> None:
    names = ("base_x", "base_y", "base_yaw")
    run = Run(HandoffConfig(**{**CFG.__dict__, "hold_at_measured": False}), names)
    pose = np.array([1.0, 0.0, math.pi / 2])
    run((0.0, "policy", pose), (0.0, "deadman", True), (0.01, "teleop", BaseTwist(0.5, 0.0, 0.1)))
    out1, out2 = run.sm.tick(0.02), run.sm.tick(0.04)
    assert out1.kind == out2.kind == HUM
    # Facing +y: forward motion moves +y in the odom frame, 0.5 m/s * 0.02 s per period.
    assert out1.action == pytest.approx([1.0, 0.01, math.pi / 2 + 0.002])
    assert out2.action == pytest.approx([1.0, 0.02, math.pi / 2 + 0.004], abs=1e-4)  # yaw turned a little
    assert not run.sm.on_teleop(BaseTwist(math.nan, 0.0, 0.0), 0.05)[0]
    assert run.sm.tick(0.06).kind == HOLD
    arm_7 = HandoffStateMachine(CFG, tuple(f"j{i}" for i in range(7)))
    ok, why = arm_7.on_teleop(BaseTwist(0.1, 0.0, 0.0), 0.0)
    assert not ok and "x, y, yaw" in why


@given(st.floats(-3, 3), st.floats(-3, 3), st.floats(-math.pi, math.pi), st.floats(-1, 1), st.floats(-1, 1),
       st.floats(-2, 2))
def test_integrate_twist_inverts_pose_step_to_twist(x, y, yaw, vx, vy, wz) -> None:
    pose = np.array([x, y, yaw])
    nxt = integrate_twist(pose, BaseTwist(vx, vy, wz), 0.05)
    tw = pose_step_to_twist(pose, nxt, 0.05)
    assert (tw.linear_x_mps, tw.linear_y_mps, tw.angular_z_radps) == pytest.approx((vx, vy, wz), abs=1e-9)


def test_ood_scorer_limits_stats_and_ignored_joints() -> None:
    lo, hi = np.array([-1.0, -2.0, 0.0]), np.array([1.0, 2.0, 0.04])
    scorer = OodScorer(lo, hi, ood_zscore=4.0, limit_margin_frac=0.05)
    assert scorer.score(np.array([0.0, 0.0, 0.02])) == 0.0
    # 0.05 of the range (0.1 rad) from joint 0's upper limit: exactly the threshold.
    assert scorer.score(np.array([0.9, 0.0, 0.02])) == pytest.approx(4.0)
    assert scorer.score(np.array([0.95, 0.0, 0.02])) > 4.0
    assert scorer.score(np.array([0.0, 0.0, 0.0])) > 4.0  # gripper closed at its limit...
    ignoring = OodScorer(lo, hi, 4.0, 0.05, ignore=np.array([False, False, True]))
    assert ignoring.score(np.array([0.0, 0.0, 0.0])) == 0.0  # ...unless ignored
    stats = OodScorer(lo, hi, 4.0, 0.05, mean=np.zeros(3), std=np.array([0.1, 0.1, 1.0]))
    assert stats.score(np.array([0.5, 0.0, 0.02])) == pytest.approx(5.0)
    assert math.isinf(scorer.score(np.array([0.0, math.nan, 0.0])))
    assert math.isinf(scorer.score(np.zeros(2)))
    with pytest.raises(ValueError, match="limit_margin_frac"):
        OodScorer(lo, hi, 4.0, 0.5)


@pytest.mark.parametrize("field, value, match", [
    ("pause_confidence", 1.5, "pause_confidence"),
    ("resume_confidence", 0.2, "resume_confidence"),
    ("low_confidence_chunks_to_pause", 0, "low_confidence_chunks_to_pause"),
    ("max_consecutive_pauses", -1, "max_consecutive_pauses"),
    ("deadman_timeout_s", 0.0, "deadman_timeout_s"),
    ("teleop_timeout_s", math.nan, "teleop_timeout_s"),
    ("conservative_velocity_scale", 0.0, "conservative_velocity_scale"),
    ("conservative_exit_s", -1.0, "conservative_exit_s"),
    ("hold_at_measured", 1, "hold_at_measured"),
    ("hold_at_command_joints", "j2", "hold_at_command_joints"),
])
def test_config_rejects_bad_values(field: str, value: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        HandoffConfig(**{**CFG.__dict__, field: value})


def test_state_machine_rejects_bad_joint_names() -> None:
    with pytest.raises(ValueError, match="unique"):
        HandoffStateMachine(CFG, ("a", "a"))
    with pytest.raises(TypeError):
        HandoffStateMachine({}, NAMES)  # type: ignore[arg-type]


@pytest.mark.parametrize("embodiment", EMBODIMENTS)
def test_params_load_for_every_embodiment_and_home_is_in_distribution(embodiment: str) -> None:
    p = from_params(HandoffParams, load_node_params(os.path.join(ROOT, "config", f"{embodiment}.yaml"), "handoff"),
                    "handoff")
    assert p.resume_confidence >= p.pause_confidence
    scorer = OodScorer(np.asarray(p.position_min), np.asarray(p.position_max), p.ood_zscore,
                       p.ood_limit_margin_frac, ignore=p.ood_ignore_mask)
    assert scorer.score(np.asarray(p.home_position)) < p.ood_zscore


@pytest.mark.parametrize("changes, message", [
    ({"pause_confidence": 0.6, "resume_confidence": 0.4}, "handoff.resume_confidence: 0.4 is below"),
    ({"ood_ignore_joints": ["panda_finger"]}, "handoff.ood_ignore_joints: ['panda_finger']"),
    ({"hold_at_command_joints": ["panda_finger"]}, "handoff.hold_at_command_joints: ['panda_finger']"),
    ({"proprio_mean": [0.0] * 7}, "handoff.proprio_mean: 7 values but proprio_std has 0"),
    ({"proprio_mean": [0.0] * 3, "proprio_std": [1.0] * 3}, "handoff.proprio_mean: needs 7 values"),
    ({"deadman_timeout_s": 0.0}, "handoff.deadman_timeout_s: 0.0 is below the minimum"),
])
def test_bad_handoff_params_name_the_field(changes: dict, message: str) -> None:
    values = load_node_params(os.path.join(ROOT, "config", "franka.yaml"), "handoff")
    values.update(changes)
    with pytest.raises(ParameterError) as exc:
        from_params(HandoffParams, values, "handoff")
    assert message in str(exc.value)


# --- property test: random event sequences (weighted so that every mode is visited often)
_FINITE_OR_NAN = st.one_of(st.floats(-3, 3), st.just(math.nan))
_EVENT = st.one_of(
    st.tuples(st.just("policy"), st.one_of(
        st.lists(st.floats(-3, 3), min_size=3, max_size=3),
        st.lists(st.sampled_from([math.nan, math.inf, 0.0]), min_size=3, max_size=3),
        st.lists(st.floats(-3, 3), min_size=2, max_size=4)), st.one_of(st.none(), st.integers(0, 6))),
    st.tuples(st.just("chunk"), st.one_of(st.floats(0, 1), st.just(math.nan)), st.integers(0, 6)),
    st.tuples(st.just("teleop"), st.dictionaries(st.sampled_from(["j0", "j1", "j2"]), st.floats(-3, 3),
                                                 min_size=1, max_size=3)),
    st.tuples(st.just("teleop"), st.dictionaries(st.sampled_from(["j0", "j1", "j2", "other"]), _FINITE_OR_NAN,
                                                 max_size=4)),
    st.tuples(st.just("deadman"), st.just(True)),
    st.tuples(st.just("deadman"), st.booleans()),
    st.tuples(st.just("ood"), st.one_of(st.floats(0, 10), st.just(math.nan))),
    st.tuples(st.just("fail")),
    st.tuples(st.just("measured"), st.lists(_FINITE_OR_NAN, min_size=3, max_size=3)),
    st.tuples(st.just("ack")),
    st.tuples(st.just("resume")),
    st.tuples(st.just("tick")),
    st.tuples(st.just("tick")),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 0.15), _EVENT), max_size=80))
def test_random_events_never_give_nan_nor_the_wrong_driver(steps) -> None:
    run = Run()
    t = 0.0
    mode = A
    for dt, (name, *args) in steps:
        t += dt
        n_out = len(run.outputs)
        run((t, name, *args), (t + 0.001, "tick"))  # the node ticks at the control rate
        t += 0.001
        for out in run.outputs[n_out:]:
            if out.kind != NONE:
                assert out.action is not None and out.action.shape == (3,)
                assert np.all(np.isfinite(out.action))
            if out.kind == POL:
                assert out.mode in POLICY_MODES
            if out.kind == HUM:
                assert out.mode == H and run.sm.deadman_held(t)
            for tr in out.transitions:
                assert tr.previous == mode and tr.mode != mode and tr.reason
                if tr.previous == H:
                    assert tr.mode in (P, E), "losing the human holds; never straight back to the policy"
                if tr.previous == E:
                    assert tr.mode in (P, H)
                if tr.mode == A:
                    assert tr.previous in (P, C)
                mode = tr.mode
        assert run.sm.mode == mode
        assert (run.sm.velocity_scale < 1.0) == (mode == C)
        if run.sm.escalated:
            assert mode in (E, H)


def test_thresholds_can_change_at_run_time_and_bad_values_are_refused() -> None:
    from hybridvla_ros.core.handoff import HandoffConfig, HandoffStateMachine

    sm = HandoffStateMachine(HandoffConfig(pause_confidence=0.9, resume_confidence=0.95), ("a", "b"))
    assert sm.update_config(pause_confidence=0.1).pause_confidence == 0.1
    with pytest.raises(ValueError, match="resume_confidence"):
        sm.update_config(resume_confidence=0.05)
    assert sm.config.resume_confidence == 0.95, "a refused change leaves the old config in force"


def _msg_constants(msg_file: str, prefix: str = "") -> dict[str, int]:
    """The ``uint8 NAME=VALUE`` constants of a .msg file in msg/ (``prefix`` stripped, others skipped)."""
    import re

    out: dict[str, int] = {}
    with open(os.path.join(ROOT, "msg", msg_file), encoding="utf-8") as f:
        for line in f:
            m = re.match(r"\s*u?int\d+\s+([A-Z_][A-Z0-9_]*)\s*=\s*(\d+)", line.split("#")[0])
            if m and m.group(1).startswith(prefix):
                out[m.group(1)[len(prefix):]] = int(m.group(2))
    return out


def test_modes_and_output_kinds_equal_the_message_constants() -> None:
    """core.handoff.Mode is the one definition of the modes; the .msg files must agree with it."""
    modes = _msg_constants("HandoffMode.msg")
    assert modes and modes == {m.name: m.value for m in Mode}
    sources = _msg_constants("ActionStep.msg", prefix="SOURCE_")
    assert sources and sources == {k.name: k.value for k in OutputKind if k is not OutputKind.NONE}


def test_every_mode_name_comes_from_the_enum() -> None:
    from hybridvla_ros.core.monitoring import MODE_COLOURS, MODE_LEVELS, MODE_NAMES
    from hybridvla_ros.sim import operator

    assert MODE_NAMES == {m.value: m.name for m in Mode}
    assert set(MODE_LEVELS) == set(MODE_NAMES.values()) and set(MODE_NAMES.values()) <= set(MODE_COLOURS)
    assert (operator.MODE_AUTONOMOUS, operator.MODE_PAUSED, operator.MODE_HUMAN, operator.MODE_ESCALATED,
            operator.MODE_CONSERVATIVE) == (Mode.AUTONOMOUS, Mode.PAUSED, Mode.HUMAN_OVERRIDE, Mode.ESCALATED,
                                            Mode.CONSERVATIVE)
