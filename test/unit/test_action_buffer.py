"""ActionBuffer: what a robot user sees of the command stream built from chunks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridvla_ros.core.action_buffer import (
    CHUNK_REJECT_REASONS,
    REASON_GRACE,
    REASON_NO_CHUNK,
    REASON_NO_FRESH,
    REASON_TIME_BACKWARDS,
    ActionBuffer,
    ActionBufferConfig,
)

PERIOD_S = 0.01
DIM = 3


def make_buffer(**overrides: object) -> ActionBuffer:
    kwargs: dict[str, object] = dict(
        control_period_s=PERIOD_S, recompute_every=5, blend_steps=0, hold_grace_s=0.02, max_chunk_age_s=1.0)
    kwargs.update(overrides)
    return ActionBuffer(ActionBufferConfig(**kwargs), action_dim=DIM)  # type: ignore[arg-type]


def ramp(n_steps: int, start: float = 0.0, slope: float = 1.0, dim: int = DIM) -> np.ndarray:
    """(T, D): action k is start + slope * k in every dim, so values reveal their index."""
    return start + slope * np.arange(n_steps, dtype=np.float64)[:, None] * np.ones((1, dim))


def times(start_s: float, n: int) -> list[float]:
    return [start_s + i * PERIOD_S for i in range(n)]


# ------------------------------------------------------------------ playback
def test_plays_chunk_at_the_index_whose_slot_contains_now() -> None:
    buf = make_buffer()
    chunk = ramp(6)
    assert buf.add_chunk(chunk, obs_stamp_s=10.0, step_period_s=PERIOD_S, now_s=10.0, seq=7) == (True, "")
    for k, now_s in enumerate(times(10.0, 6)):
        out = buf.step(now_s)
        assert not out.holding and out.reason == ""
        assert out.step_index == k and out.chunk_seq == 7
        np.testing.assert_array_equal(out.action, chunk[k])
        assert out.depth == 5 - k
        assert not out.blended
    assert buf.stats["actions_emitted"] == 6
    assert buf.stats["actions_skipped_past"] == 0


def test_mid_slot_time_picks_the_slot_that_started_last() -> None:
    buf = make_buffer()
    buf.add_chunk(ramp(6), obs_stamp_s=0.0, step_period_s=PERIOD_S, now_s=0.0)
    assert buf.step(0.0049).step_index == 0
    assert buf.step(0.0151).step_index == 1
    assert buf.step(0.0299).step_index == 2


def test_slot_boundary_survives_float_error_in_timestamps() -> None:
    # 0.1 + 0.2 style accumulation lands a hair before the boundary of slot 3.
    buf = make_buffer()
    buf.add_chunk(ramp(6), obs_stamp_s=0.0, step_period_s=0.1, now_s=0.0)
    now_s = sum([0.1] * 3) - 1e-16
    assert now_s < 0.3
    assert buf.step(now_s).step_index == 3


def test_actions_in_the_past_because_of_latency_are_skipped_and_counted_once() -> None:
    buf = make_buffer()
    chunk = ramp(10)
    # The observation is from 10.000; inference took 35 ms.
    assert buf.add_chunk(chunk, obs_stamp_s=10.0, step_period_s=PERIOD_S, now_s=10.035)[0]
    first = buf.step(10.035)
    assert first.step_index == 3
    np.testing.assert_array_equal(first.action, chunk[3])
    assert buf.stats["actions_skipped_past"] == 3
    assert buf.step(10.045).step_index == 4
    assert buf.step(10.046).step_index == 4  # same slot again: no new skip
    # A late tick jumps two slots: each skipped action counted once.
    assert buf.step(10.075).step_index == 7
    assert buf.stats["actions_skipped_past"] == 3 + 2


def test_chunk_step_period_is_independent_of_the_control_period() -> None:
    buf = make_buffer()
    buf.add_chunk(ramp(4), obs_stamp_s=0.0, step_period_s=2 * PERIOD_S, now_s=0.0)
    indices = [buf.step(t).step_index for t in times(0.0, 8)]
    assert indices == [0, 0, 1, 1, 2, 2, 3, 3]


def test_stamp_slightly_in_the_future_plays_action_zero() -> None:
    # Clock skew between the inference host and this one.
    buf = make_buffer()
    assert buf.add_chunk(ramp(4), obs_stamp_s=1.003, step_period_s=PERIOD_S, now_s=1.0)[0]
    out = buf.step(1.0)
    assert out.step_index == 0 and not out.holding


def test_returned_action_is_a_copy_and_input_is_copied() -> None:
    buf = make_buffer()
    chunk = ramp(4)
    buf.add_chunk(chunk, obs_stamp_s=0.0, step_period_s=PERIOD_S, now_s=0.0)
    chunk[:] = 99.0  # the caller reuses its buffer
    out = buf.step(0.0)
    np.testing.assert_array_equal(out.action, np.zeros(DIM))
    out.action[:] = -5.0
    np.testing.assert_array_equal(buf.step(0.0).action, np.zeros(DIM))


# ---------------------------------------------------------------- blending
def _stream(blend_steps: int) -> tuple[list[np.ndarray], list[bool]]:
    """Old chunk ramps up 0.01/period; the new one continues it but 0.5 higher."""
    buf = make_buffer(blend_steps=blend_steps, recompute_every=100)
    buf.add_chunk(ramp(40, 0.0, 0.01), obs_stamp_s=0.0, step_period_s=PERIOD_S, now_s=0.0)
    out, blended = [], []
    for i, now_s in enumerate(times(0.0, 30)):
        if i == 10:
            ok, _ = buf.add_chunk(ramp(40, 0.5 + 0.10, 0.01), obs_stamp_s=0.10, step_period_s=PERIOD_S, now_s=now_s)
            assert ok
        s = buf.step(now_s)
        out.append(s.action)
        blended.append(s.blended)
    return out, blended


def test_seam_blend_is_continuous_and_linear() -> None:
    hard, hard_blended = _stream(blend_steps=0)
    soft, soft_blended = _stream(blend_steps=4)
    max_jump_hard = max(np.abs(b - a).max() for a, b in zip(hard, hard[1:]))
    max_jump_soft = max(np.abs(b - a).max() for a, b in zip(soft, soft[1:]))
    assert max_jump_hard == pytest.approx(0.51)
    # 0.5 offset spread over 5 steps + the 0.01 ramp.
    assert max_jump_soft == pytest.approx(0.11)
    assert max_jump_soft < max_jump_hard / 4
    assert not any(hard_blended)
    assert soft_blended == [False] * 10 + [True] * 4 + [False] * 16
    for i in range(4):
        w = (i + 1) / 5
        t = 10 + i
        old, new = 0.01 * t, 0.5 + 0.01 * t
        np.testing.assert_allclose(soft[t], (1 - w) * old + w * new)
    # After the blend the new chunk plays alone.
    np.testing.assert_allclose(soft[14], 0.5 + 0.14)


def test_blend_uses_the_new_chunk_alone_where_the_old_one_ran_out() -> None:
    buf = make_buffer(blend_steps=4)
    buf.add_chunk(np.zeros((3, DIM)), obs_stamp_s=0.0, step_period_s=PERIOD_S, now_s=0.0)
    buf.step(0.0)
    buf.step(0.01)
    assert buf.add_chunk(np.ones((5, DIM)), obs_stamp_s=0.015, step_period_s=PERIOD_S, now_s=0.02)[0]
    seam = buf.step(0.02)  # old slot 2 still exists: blended
    assert seam.blended
    np.testing.assert_allclose(seam.action, 0.2)
    after = buf.step(0.03)  # old chunk has nothing for 0.03
    assert not after.blended
    np.testing.assert_array_equal(after.action, np.ones(DIM))


def test_no_blend_when_the_old_chunk_was_already_exhausted() -> None:
    buf = make_buffer(blend_steps=4, hold_grace_s=0.0)
    buf.add_chunk(np.zeros((2, DIM)), obs_stamp_s=0.0, step_period_s=PERIOD_S, now_s=0.0)
    buf.step(0.0)
    buf.step(0.01)
    assert buf.step(0.02).holding
    buf.add_chunk(np.ones((5, DIM)), obs_stamp_s=0.02, step_period_s=PERIOD_S, now_s=0.03)
    out = buf.step(0.03)
    assert not out.blended
    np.testing.assert_array_equal(out.action, np.ones(DIM))


def test_chunk_arriving_mid_blend_keeps_the_output_continuous() -> None:
    def run(blend_steps: int) -> float:
        buf = make_buffer(blend_steps=blend_steps)
        buf.add_chunk(np.zeros((50, DIM)), obs_stamp_s=0.0, step_period_s=PERIOD_S, now_s=0.0)
        outs = []
        for i, now_s in enumerate(times(0.0, 30)):
            if i in (10, 12):
                level = 1.0 if i == 10 else 2.0
                assert buf.add_chunk(np.full((50, DIM), level), obs_stamp_s=now_s - 0.005,
                                     step_period_s=PERIOD_S, now_s=now_s)[0]
            outs.append(buf.step(now_s).action)
        np.testing.assert_array_equal(outs[-1], np.full(DIM, 2.0))
        return max(float(np.abs(b - a).max()) for a, b in zip(outs, outs[1:]))

    assert run(0) == pytest.approx(1.0)
    # The second seam starts mid-fade from the faded output, not from the
    # old chunk: two unit seams, no period jumps by more than half a unit.
    assert run(4) <= 0.5 + 1e-12


# ------------------------------------------------------- recycling / recompute
def test_chunk_is_recycled_and_needs_recompute_after_recompute_every_steps() -> None:
    buf = make_buffer(recompute_every=3)
    assert buf.needs_recompute(0.0)  # nothing yet
    buf.add_chunk(ramp(8), obs_stamp_s=0.0, step_period_s=PERIOD_S, now_s=0.0, seq=1)
    flags, seqs = [], []
    for now_s in times(0.0, 5):
        flags.append(buf.needs_recompute(now_s))
        seqs.append(buf.step(now_s).chunk_seq)
    assert flags == [False, False, False, True, True]
    # The chunk keeps being used until a fresher one comes.
    assert seqs == [1] * 5
    assert buf.add_chunk(ramp(8, 1.0), obs_stamp_s=0.04, step_period_s=PERIOD_S, now_s=0.05, seq=2)[0]
    assert not buf.needs_recompute(0.05)
    assert buf.step(0.05).chunk_seq == 2


def test_needs_recompute_when_the_chunk_has_nothing_left_for_now() -> None:
    buf = make_buffer(recompute_every=50)
    buf.add_chunk(ramp(3), obs_stamp_s=0.0, step_period_s=PERIOD_S, now_s=0.0)
    assert not buf.needs_recompute(0.02)
    assert buf.needs_recompute(0.03)


def test_seq_defaults_to_counting_up() -> None:
    buf = make_buffer()
    buf.add_chunk(ramp(3), obs_stamp_s=0.0, step_period_s=PERIOD_S, now_s=0.0)
    assert buf.step(0.0).chunk_seq == 0
    buf.add_chunk(ramp(3), obs_stamp_s=0.01, step_period_s=PERIOD_S, now_s=0.01, seq=41)
    buf.add_chunk(ramp(3), obs_stamp_s=0.02, step_period_s=PERIOD_S, now_s=0.02)
    assert buf.step(0.02).chunk_seq == 42


# --------------------------------------------------------------- grace/hold
def test_before_any_chunk_the_buffer_holds() -> None:
    out = make_buffer().step(0.0)
    assert out.holding and out.action is None and out.reason == REASON_NO_CHUNK
    assert (out.chunk_seq, out.step_index, out.depth) == (-1, -1, 0)


def test_repeats_last_action_for_the_grace_time_then_holds() -> None:
    buf = make_buffer(hold_grace_s=0.02)
    chunk = ramp(3)
    buf.add_chunk(chunk, obs_stamp_s=0.0, step_period_s=PERIOD_S, now_s=0.0, seq=5)
    outs = [buf.step(t) for t in times(0.0, 7)]
    assert [o.step_index for o in outs[:3]] == [0, 1, 2]
    for o in outs[3:5]:  # 0.03 and 0.04 are within 0.02 s of the last fresh action (0.02)
        assert not o.holding and o.reason == REASON_GRACE
        np.testing.assert_array_equal(o.action, chunk[2])
        assert o.chunk_seq == 5 and o.depth == 0
    for o in outs[5:]:
        assert o.holding and o.action is None and o.reason == REASON_NO_FRESH
    stats = buf.stats
    assert (stats["actions_emitted"], stats["grace_repeats"], stats["holds"]) == (3, 2, 2)


def test_zero_grace_holds_as_soon_as_the_chunk_runs_out() -> None:
    buf = make_buffer(hold_grace_s=0.0)
    buf.add_chunk(ramp(2), obs_stamp_s=0.0, step_period_s=PERIOD_S, now_s=0.0)
    buf.step(0.0)
    buf.step(0.01)
    assert buf.step(0.02).holding


def test_fresh_chunk_after_a_hold_resumes_output() -> None:
    buf = make_buffer(hold_grace_s=0.0)
    buf.add_chunk(ramp(1), obs_stamp_s=0.0, step_period_s=PERIOD_S, now_s=0.0)
    buf.step(0.0)
    assert buf.step(0.05).holding
    assert buf.add_chunk(ramp(5, 3.0), obs_stamp_s=0.05, step_period_s=PERIOD_S, now_s=0.06)[0]
    out = buf.step(0.06)
    assert not out.holding and out.step_index == 1


# ---------------------------------------------------------------- rejection
def _current_chunk_buffer() -> ActionBuffer:
    buf = make_buffer()
    assert buf.add_chunk(ramp(20), obs_stamp_s=1.0, step_period_s=PERIOD_S, now_s=1.0, seq=1)[0]
    return buf


@pytest.mark.parametrize(
    ("key", "actions", "stamp_s", "period_s", "now_s"),
    [
        ("bad_shape", np.zeros(DIM), 1.1, PERIOD_S, 1.1),
        ("bad_shape", np.zeros((2, DIM, 1)), 1.1, PERIOD_S, 1.1),
        ("bad_shape", "not numbers", 1.1, PERIOD_S, 1.1),
        ("bad_shape", [[1.0, 2.0, 3.0], [1.0]], 1.1, PERIOD_S, 1.1),
        ("bad_shape", None, 1.1, PERIOD_S, 1.1),
        ("wrong_dim", np.zeros((5, DIM + 1)), 1.1, PERIOD_S, 1.1),
        ("empty", np.zeros((0, DIM)), 1.1, PERIOD_S, 1.1),
        ("non_finite", np.array([[0.0, np.nan, 0.0]] * 4), 1.1, PERIOD_S, 1.1),
        ("non_finite", np.array([[0.0, 0.0, np.inf]] * 4), 1.1, PERIOD_S, 1.1),
        ("bad_period", ramp(5), 1.1, 0.0, 1.1),
        ("bad_period", ramp(5), 1.1, -0.01, 1.1),
        ("bad_period", ramp(5), 1.1, math.nan, 1.1),
        ("bad_period", ramp(5), 1.1, "0.01", 1.1),
        ("bad_stamp", ramp(5), math.nan, PERIOD_S, 1.1),
        ("bad_stamp", ramp(5), 1.1, PERIOD_S, math.inf),
        ("stale", ramp(500), 1.1, PERIOD_S, 2.2),
        ("future", ramp(5), 3.0, PERIOD_S, 1.1),
        ("out_of_order", ramp(5), 1.0, PERIOD_S, 1.05),
        ("out_of_order", ramp(5), 0.99, PERIOD_S, 1.05),
        ("past", ramp(5), 1.1, PERIOD_S, 1.15),
    ],
)
def test_bad_chunks_are_rejected_with_a_reason_and_counted(
        key: str, actions: object, stamp_s: float, period_s: float, now_s: float) -> None:
    buf = _current_chunk_buffer()
    ok, reason = buf.add_chunk(actions, stamp_s, period_s, now_s)  # type: ignore[arg-type]
    assert not ok
    assert reason.startswith(f"{key}: ")
    stats = buf.stats
    assert stats[f"rejected_{key}"] == 1
    assert stats["chunks_rejected"] == 1
    assert stats["chunks_received"] == 2 and stats["chunks_accepted"] == 1
    assert sum(stats[f"rejected_{k}"] for k in CHUNK_REJECT_REASONS) == 1
    # The chunk in use is untouched.
    out = buf.step(1.05)
    assert out.chunk_seq == 1 and out.step_index == 5


def test_rejection_reasons_quote_the_bad_value() -> None:
    buf = _current_chunk_buffer()
    assert "4" in buf.add_chunk(np.zeros((5, 4)), 1.1, PERIOD_S, 1.1)[1]
    assert "-0.5" in buf.add_chunk(ramp(5), 1.1, -0.5, 1.1)[1]
    assert "actions[0, 1]" in buf.add_chunk(np.array([[0.0, np.nan, 0.0]]), 1.1, PERIOD_S, 1.1)[1]


def test_stale_limit_is_inclusive_of_max_age() -> None:
    buf = make_buffer(max_chunk_age_s=0.5)
    assert buf.add_chunk(ramp(100), obs_stamp_s=1.0, step_period_s=PERIOD_S, now_s=1.5)[0]


# ------------------------------------------------------------- time faults
def test_time_going_backwards_repeats_last_action_then_accepts_the_new_time_base() -> None:
    buf = make_buffer(hold_grace_s=0.02)
    chunk = ramp(20)
    buf.add_chunk(chunk, obs_stamp_s=100.0, step_period_s=PERIOD_S, now_s=100.0)
    buf.step(100.0)
    buf.step(100.01)
    back = buf.step(5.0)  # simulation restarted
    assert not back.holding
    assert REASON_TIME_BACKWARDS in back.reason and REASON_GRACE in back.reason
    np.testing.assert_array_equal(back.action, chunk[1])
    assert buf.stats["time_backwards"] == 1
    # Old stamps no longer block chunks on the new clock.
    assert buf.add_chunk(ramp(5, 7.0), obs_stamp_s=5.0, step_period_s=PERIOD_S, now_s=5.01)[0]
    np.testing.assert_array_equal(buf.step(5.01).action, np.full(DIM, 8.0))


def test_time_going_backwards_before_any_action_holds() -> None:
    buf = make_buffer()
    buf.step(1.0)
    out = buf.step(0.5)
    assert out.holding and out.action is None and REASON_TIME_BACKWARDS in out.reason
    assert buf.stats["time_backwards"] == 1


def test_time_going_backwards_beyond_grace_holds() -> None:
    buf = make_buffer(hold_grace_s=0.02)
    buf.add_chunk(ramp(20), obs_stamp_s=100.0, step_period_s=PERIOD_S, now_s=100.0)
    buf.step(100.0)
    assert not buf.step(5.0).holding
    assert buf.step(5.05).holding


@pytest.mark.parametrize("now_s", [math.nan, math.inf, -math.inf])
def test_non_finite_now_holds(now_s: float) -> None:
    buf = make_buffer()
    buf.add_chunk(ramp(20), obs_stamp_s=0.0, step_period_s=PERIOD_S, now_s=0.0)
    buf.step(0.0)
    out = buf.step(now_s)
    assert out.holding and out.action is None
    assert buf.stats["bad_time"] == 1
    assert buf.needs_recompute(now_s)


def test_reset_forgets_chunks_and_starts_the_next_without_blend() -> None:
    buf = make_buffer(blend_steps=4, hold_grace_s=1.0)
    buf.add_chunk(ramp(50), obs_stamp_s=1.0, step_period_s=PERIOD_S, now_s=1.0)
    buf.step(1.0)
    buf.reset()
    out = buf.step(1.01)
    assert out.holding and out.reason == REASON_NO_CHUNK  # no stale repeat after a hand-back
    assert buf.add_chunk(ramp(60, 9.0), obs_stamp_s=0.5, step_period_s=PERIOD_S, now_s=1.02)[0]
    out = buf.step(1.02)
    assert not out.blended
    np.testing.assert_allclose(out.action, 9.0 + 52)


# ------------------------------------------------------------------ config
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("control_period_s", 0.0),
        ("control_period_s", -0.01),
        ("control_period_s", math.nan),
        ("control_period_s", "0.01"),
        ("recompute_every", 0),
        ("recompute_every", 1.5),
        ("recompute_every", True),
        ("blend_steps", -1),
        ("hold_grace_s", -0.1),
        ("hold_grace_s", math.inf),
        ("max_chunk_age_s", 0.0),
    ],
)
def test_config_rejects_bad_values_naming_field_and_value(field: str, value: object) -> None:
    kwargs: dict[str, object] = dict(
        control_period_s=PERIOD_S, recompute_every=5, blend_steps=0, hold_grace_s=0.02, max_chunk_age_s=1.0)
    kwargs[field] = value
    with pytest.raises(ValueError) as info:
        ActionBufferConfig(**kwargs)  # type: ignore[arg-type]
    assert field in str(info.value) and repr(value) in str(info.value)


def test_action_dim_must_be_positive() -> None:
    cfg = ActionBufferConfig(PERIOD_S, 5, 0, 0.0, 1.0)
    with pytest.raises(ValueError, match="action_dim"):
        ActionBuffer(cfg, 0)


# ---------------------------------------------------------------- property
chunk_event = st.tuples(
    st.integers(0, 6),  # periods to wait before it arrives
    st.integers(-2, 4),  # latency in periods (negative: stamp ahead of now, or reordering)
    st.integers(0, 12),  # length (0 is invalid)
    st.sampled_from(["ok", "ok", "ok", "nan", "wrong_dim"]),
)


@settings(max_examples=100, deadline=None)
@given(events=st.lists(chunk_event, min_size=1, max_size=8), blend_steps=st.integers(0, 4),
       seed=st.integers(0, 2**16), back_jump=st.booleans())
def test_output_is_always_a_mix_of_accepted_actions(
        events: list[tuple[int, int, int, str]], blend_steps: int, seed: int, back_jump: bool) -> None:
    """Whatever arrives, each output is finite, within the range of accepted
    actions (a convex mix), and holding exactly when there is no action."""
    rng = np.random.default_rng(seed)
    buf = make_buffer(blend_steps=blend_steps, hold_grace_s=0.02)
    lo, hi = np.full(DIM, np.inf), np.full(DIM, -np.inf)
    tick = 0
    for wait, latency, n_steps, kind in events:
        for _ in range(wait):
            out = buf.step(tick * PERIOD_S)
            tick += 1
            assert out.holding == (out.action is None)
            if out.action is not None:
                assert np.isfinite(out.action).all()
                assert (out.action >= lo - 1e-12).all() and (out.action <= hi + 1e-12).all()
        actions = rng.uniform(-5, 5, size=(n_steps, DIM))
        if kind == "nan" and n_steps:
            actions[rng.integers(n_steps), rng.integers(DIM)] = np.nan
        if kind == "wrong_dim":
            actions = rng.uniform(-5, 5, size=(n_steps, DIM + 1))
        ok, reason = buf.add_chunk(actions, (tick - latency) * PERIOD_S, PERIOD_S, tick * PERIOD_S)
        assert ok == (reason == "")
        if ok:
            lo, hi = np.minimum(lo, actions.min(axis=0)), np.maximum(hi, actions.max(axis=0))
            assert kind == "ok"
        if back_jump and tick == 5:
            tick = 2
    stats = buf.stats
    assert stats["chunks_received"] == len(events)
    assert stats["chunks_received"] == stats["chunks_accepted"] + stats["chunks_rejected"]
