"""ActionBuffer's whole-chunk check (jump, velocity, acceleration, jerk; reject or reshape) and plan preview."""

from __future__ import annotations

import numpy as np
import pytest

from hybridvla_ros.core.action_buffer import (
    TRAJECTORY_CHECKS,
    ActionBuffer,
    ActionBufferConfig,
    ChunkLimits,
    check_trajectory,
    reshape_trajectory,
)

DT = 0.01
DIM = 2
V, A = 1.0, 10.0
J = A / DT  # chunk_jerk_factor 1
LIMITS = ChunkLimits(max_velocity=(V,) * DIM, max_acceleration=(A,) * DIM, max_jerk=(J,) * DIM)


def make_buffer(mode: str = "reshape", **overrides: object) -> ActionBuffer:
    kwargs: dict[str, object] = dict(control_period_s=DT, recompute_every=5, blend_steps=0, hold_grace_s=0.02,
                                     max_chunk_age_s=1.0, chunk_check=mode, chunk_limits=LIMITS, preview_steps=0)
    kwargs.update(overrides)
    return ActionBuffer(ActionBufferConfig(**kwargs), action_dim=DIM)  # type: ignore[arg-type]


def cruise(n: int, start: float = 0.0, speed: float = 0.5) -> np.ndarray:
    """(n, DIM): constant speed in every dim, within all limits."""
    return start + speed * DT * np.arange(n, dtype=np.float64)[:, None] * np.ones((1, DIM))


def from_accel(accels: list[float], v0: float = 0.0) -> np.ndarray:
    """(n + 1, DIM) positions whose second differences over DT are ``accels`` (dim 0; dim 1 still)."""
    v = v0 + DT * np.concatenate([[0.0], np.cumsum(accels)])
    x = np.concatenate([[0.0], np.cumsum(v * DT)])
    return np.stack([x, np.zeros_like(x)], axis=1)


def stream(buf: ActionBuffer, t0: float, n: int) -> np.ndarray:
    """Step n control periods from t0; (n, DIM) the actions (all must be fresh)."""
    out = []
    for k in range(n):
        step = buf.step(t0 + k * DT)
        assert step.action is not None and not step.holding
        out.append(step.action)
    return np.array(out)


def assert_within_limits(x: np.ndarray) -> None:
    v = np.diff(x, axis=0) / DT
    a = np.diff(v, axis=0) / DT
    j = np.diff(a, axis=0) / DT
    assert np.abs(v).max() <= V * (1 + 1e-6)
    assert np.abs(a).max(initial=0.0) <= A * (1 + 1e-6)
    assert np.abs(j).max(initial=0.0) <= J * (1 + 1e-6)


def start_streaming(buf: ActionBuffer) -> np.ndarray:
    """A first chunk at t=1.0 (cruising), played 5 periods; returns what was emitted."""
    ok, reason = buf.add_chunk(cruise(20), obs_stamp_s=1.0, step_period_s=DT, now_s=1.0, seq=1)
    assert ok and reason == ""
    return stream(buf, 1.0, 5)


# ------------------------------------------------------------ the checks, one by one
def test_jump_from_the_executing_target_is_found_and_quoted() -> None:
    history = cruise(3)
    plan = cruise(10, start=history[-1, 0] + 0.1)  # 0.1 in one step: 10/s > 1/s
    key, detail = check_trajectory(history, plan, DT, LIMITS, first_row=4) or ("", "")
    assert key == "jump"
    assert "row 4" in detail and "max_velocity 1" in detail


def test_velocity_along_the_chunk() -> None:
    plan = cruise(10, speed=2.0)  # 2/s > 1/s, constant: no acceleration inside
    key, detail = check_trajectory(np.empty((0, DIM)), plan, DT, LIMITS) or ("", "")
    assert key == "velocity" and "max_velocity 1" in detail and "9 of 9 steps over" in detail


def test_acceleration_along_the_chunk() -> None:
    plan = from_accel([0.0, 0.0, 20.0, 20.0, 0.0, 0.0])  # 20 > 10, speeds stay under 0.4
    key, detail = check_trajectory(np.empty((0, DIM)), plan, DT, LIMITS) or ("", "")
    assert key == "acceleration" and "max_acceleration 10" in detail


def test_jerk_along_the_chunk() -> None:
    # Acceleration within +-A, but it swings from +A to -A in one period: 2A/DT > J.
    plan = from_accel([0.0, 10.0, 10.0, -10.0, -10.0, 0.0], v0=0.2)
    assert np.abs(np.diff(plan, axis=0) / DT).max() <= V
    key, detail = check_trajectory(np.empty((0, DIM)), plan, DT, LIMITS) or ("", "")
    assert key == "jerk" and "max_jerk 1000" in detail


def test_acceleration_at_the_seam_counts_the_executing_velocity() -> None:
    history = cruise(3, speed=0.5)
    plan = cruise(10, start=history[-1, 0], speed=-0.5)  # turns around in one step: 100/s^2
    key, _ = check_trajectory(history, plan, DT, LIMITS) or ("", "")
    assert key == "acceleration"
    assert check_trajectory(np.empty((0, DIM)), plan, DT, LIMITS) is None  # no seam: nothing wrong inside


# ------------------------------------------------------------ reject vs reshape in the buffer
def test_ok_chunk_is_used_bit_for_bit() -> None:
    buf = make_buffer("reshape")
    start_streaming(buf)
    nxt = cruise(20, start=0.015)  # the same motion, stamped 3 periods later: continues it exactly
    ok, reason = buf.add_chunk(nxt, obs_stamp_s=1.03, step_period_s=DT, now_s=1.045, seq=2)
    assert (ok, reason) == (True, "")
    out = stream(buf, 1.05, 10)
    np.testing.assert_array_equal(out, nxt[2:12])
    assert buf.stats["chunks_reshaped"] == 0 and buf.last_chunk_check == ""


@pytest.mark.parametrize("offset", [0.3, -0.05, 0.002])
def test_reject_mode_keeps_executing_what_it_has(offset: float) -> None:
    buf = make_buffer("reject")
    start_streaming(buf)
    ok, reason = buf.add_chunk(cruise(20, start=0.015) + offset, obs_stamp_s=1.03, step_period_s=DT, now_s=1.045, seq=2)
    assert not ok and reason.split(":")[0] in ("jump", "acceleration")
    assert buf.stats["chunks_rejected"] == 1 and buf.stats[f"rejected_{reason.split(':')[0]}"] == 1
    assert buf.last_chunk_check.startswith("rejected chunk 2: ")
    step = buf.step(1.05)
    assert step.chunk_seq == 1 and step.step_index == 5  # the old chunk goes on


@pytest.mark.parametrize("offset", [0.3, -0.05, 0.002])
def test_reshaped_seam_ramps_in_within_the_limits_and_lands_on_the_chunk(offset: float) -> None:
    buf = make_buffer("reshape")
    before = start_streaming(buf)
    new = cruise(100, start=0.015) + offset
    ok, reason = buf.add_chunk(new, obs_stamp_s=1.03, step_period_s=DT, now_s=1.045, seq=2)
    assert ok and reason.startswith("reshaped chunk 2: ")
    assert buf.stats["chunks_reshaped"] == 1 and buf.stats["chunks_rejected"] == 0
    assert buf.last_chunk_check == reason
    out = stream(buf, 1.05, 90)
    assert_within_limits(np.concatenate([before, out]))  # every step, the seam included
    # It catches up with the chunk (0.3 behind at 1/s against the chunk's 0.5/s: 0.6 s + braking).
    np.testing.assert_allclose(out[-5:], new[87:92], atol=1e-9)


@pytest.mark.parametrize("plan", [
    cruise(30, speed=3.0),
    from_accel([0.0, 0.0, 40.0, 40.0, 0.0, 0.0, -40.0, -40.0] + [0.0] * 20),
    from_accel([0.0, 10.0, 10.0, -10.0, -10.0] + [0.0] * 20, v0=0.2),
    np.random.default_rng(0).normal(0.0, 0.01, (30, DIM)),
], ids=["velocity", "acceleration", "jerk", "noise"])
def test_reshaped_chunk_satisfies_every_limit_at_every_step(plan: np.ndarray) -> None:
    history = cruise(3)
    for hist in (history, history[-1:], np.empty((0, DIM))):
        assert check_trajectory(hist, plan, DT, LIMITS) is not None
        shaped = reshape_trajectory(hist, plan, DT, LIMITS)
        assert check_trajectory(hist, shaped, DT, LIMITS) is None
        assert_within_limits(np.concatenate([hist, shaped]))


def test_reshape_of_a_chunk_within_the_limits_changes_nothing() -> None:
    plan = cruise(10, start=0.015)
    np.testing.assert_allclose(reshape_trajectory(cruise(3), plan, DT, LIMITS), plan, atol=1e-12)


def test_off_takes_any_finite_chunk() -> None:
    buf = make_buffer("off", chunk_limits=None)
    start_streaming(buf)
    assert buf.add_chunk(cruise(20) + 5.0, obs_stamp_s=1.03, step_period_s=DT, now_s=1.045, seq=2) == (True, "")
    assert buf.step(1.05).action[0] == pytest.approx(5.0 + 0.5 * DT * 2)


def test_no_seam_after_a_hold() -> None:
    buf = make_buffer("reject")
    start_streaming(buf)
    for k in range(20):  # runs out, grace, holds
        buf.step(1.05 + k * DT)
    assert buf.step(1.25).holding
    # Far from the last target, but nothing is being sent: only the chunk itself is checked.
    assert buf.add_chunk(cruise(20) + 1.0, obs_stamp_s=1.25, step_period_s=DT, now_s=1.255, seq=2) == (True, "")


def test_reset_forgets_the_executing_target() -> None:
    buf = make_buffer("reject")
    start_streaming(buf)
    buf.reset()
    assert buf.add_chunk(cruise(20) + 1.0, obs_stamp_s=1.04, step_period_s=DT, now_s=1.045, seq=2) == (True, "")


def test_non_finite_chunks_stay_rejected_as_before() -> None:
    buf = make_buffer("reshape")
    bad = cruise(10)
    bad[3, 1] = np.nan
    ok, reason = buf.add_chunk(bad, obs_stamp_s=1.0, step_period_s=DT, now_s=1.0)
    assert not ok and reason.startswith("non_finite:")
    assert buf.stats["chunks_reshaped"] == 0


def test_stats_count_every_trajectory_key() -> None:
    stats = make_buffer().stats
    for key in TRAJECTORY_CHECKS:
        assert stats[f"rejected_{key}"] == 0 and stats[f"reshaped_{key}"] == 0


@pytest.mark.parametrize("kwargs, match", [
    (dict(chunk_check="clamp"), "chunk_check"),
    (dict(chunk_check="reject", chunk_limits=None), "chunk_limits"),
    (dict(preview_steps=-1), "preview_steps"),
])
def test_config_rejects_bad_check_settings(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_buffer(**kwargs)


def test_limits_must_match_action_dim_and_be_positive() -> None:
    with pytest.raises(ValueError, match="action_dim"):
        ActionBuffer(ActionBufferConfig(control_period_s=DT, recompute_every=1, blend_steps=0, hold_grace_s=0.0,
                                        max_chunk_age_s=1.0, chunk_check="reject", chunk_limits=LIMITS),
                     action_dim=3)
    with pytest.raises(ValueError, match="max_jerk"):
        ChunkLimits(max_velocity=(1.0,), max_acceleration=(1.0,), max_jerk=(0.0,))


# ------------------------------------------------------------ preview
def test_preview_is_the_next_rows_and_shorter_at_the_chunk_end() -> None:
    buf = make_buffer(preview_steps=4)
    chunk = cruise(8)
    buf.add_chunk(chunk, obs_stamp_s=1.0, step_period_s=DT, now_s=1.0)
    lengths = []
    for k in range(8):
        step = buf.step(1.0 + k * DT)
        assert step.preview is not None and step.preview.shape[1] == DIM
        np.testing.assert_array_equal(step.preview, chunk[k + 1:k + 5])
        lengths.append(step.preview.shape[0])
    assert lengths == [4, 4, 4, 4, 3, 2, 1, 0]
    grace = buf.step(1.08)
    assert grace.reason and grace.preview is not None and grace.preview.shape == (0, DIM)


def test_no_preview_when_preview_steps_is_zero() -> None:
    buf = make_buffer(preview_steps=0)
    buf.add_chunk(cruise(8), obs_stamp_s=1.0, step_period_s=DT, now_s=1.0)
    step = buf.step(1.0)
    assert step.preview is not None and step.preview.shape == (0, DIM)


def test_preview_while_blending_is_what_the_next_steps_emit() -> None:
    buf = make_buffer("off", chunk_limits=None, blend_steps=3, preview_steps=6)
    buf.add_chunk(cruise(30), obs_stamp_s=1.0, step_period_s=DT, now_s=1.0)
    stream(buf, 1.0, 3)
    buf.add_chunk(cruise(30, start=0.05), obs_stamp_s=1.02, step_period_s=DT, now_s=1.025)
    steps = [buf.step(1.03 + k * DT) for k in range(12)]
    for k in range(5):
        preview = steps[k].preview
        assert preview is not None and preview.shape == (6, DIM)
        np.testing.assert_allclose(preview, [s.action for s in steps[k + 1:k + 7]], atol=1e-12)
    assert steps[0].blended


def test_params_give_limits_from_the_embodiment_and_jerk_from_acceleration_over_period() -> None:
    import dataclasses
    import os

    from hybridvla_ros.launch_description import default_config_dir
    from hybridvla_ros.params import from_params, load_node_params
    from hybridvla_ros.params.action_buffer import ActionBufferParams

    p = from_params(ActionBufferParams, load_node_params(os.path.join(default_config_dir(), "franka.yaml"),
                                                         "action_buffer"))
    assert p.chunk_check == "off" and p.preview_steps == 10
    p = dataclasses.replace(p, chunk_check="reshape", chunk_velocity_scale=0.5, chunk_acceleration_scale=0.8,
                            chunk_jerk_factor=2.0)
    cfg = p.buffer_config()
    assert cfg.chunk_check == "reshape" and cfg.preview_steps == 10 and cfg.chunk_limits is not None
    np.testing.assert_allclose(cfg.chunk_limits.max_velocity, 0.5 * np.asarray(p.max_velocity))
    np.testing.assert_allclose(cfg.chunk_limits.max_acceleration, 0.8 * np.asarray(p.max_acceleration))
    np.testing.assert_allclose(cfg.chunk_limits.max_jerk, 2.0 * 0.8 * np.asarray(p.max_acceleration) * 50.0)


def test_a_blended_seam_is_checked_as_emitted_and_a_reshape_replaces_the_fade() -> None:
    buf = make_buffer("reshape", blend_steps=3)
    before = start_streaming(buf)
    new = cruise(60, start=0.015) + 0.1  # 0.1 above the executing motion: too much even spread over 4 steps
    ok, reason = buf.add_chunk(new, obs_stamp_s=1.03, step_period_s=DT, now_s=1.045, seq=2)
    assert ok and reason.startswith("reshaped chunk 2: ")
    out = stream(buf, 1.05, 50)
    assert_within_limits(np.concatenate([before, out]))
    steps = [buf.step(1.55 + k * DT) for k in range(3)]
    assert [s.step_index for s in steps] == [52, 53, 54]  # rows of the chunk as it arrived
