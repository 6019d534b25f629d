"""Camera-anchored observation sync (hybridvla_ros.core.sync)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridvla_ros.core.sync import (
    FRAME_DROP_REASONS,
    ObservationSynchronizer,
    SyncConfig,
    SyncedObservation,
)

JOINTS = ("j1", "j2", "j3")


def make_sync(**overrides) -> ObservationSynchronizer:
    cfg = dict(joint_names=JOINTS, max_skew_s=0.02, max_age_s=0.5)
    cfg.update(overrides)
    return ObservationSynchronizer(SyncConfig(**cfg))


def linear_positions(t_s: float) -> list[float]:
    """Joint positions moving at constant, different speeds."""
    return [0.1 + 1.0 * t_s, -0.5 + 2.0 * t_s, 3.0 - 0.5 * t_s]


def frames_accounted_for(stats: dict) -> bool:
    dropped = sum(stats[f"dropped_{k}"] for k in FRAME_DROP_REASONS)
    return stats["frames_in"] == stats["observations_out"] + dropped + stats["pending"]


# ------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(joint_names=()), "joint_names"),
        (dict(joint_names=("a", "b", "a")), "joint_names"),
        (dict(joint_names=("a", "")), "joint_names"),
        (dict(joint_names="j1"), "joint_names"),
        (dict(max_skew_s=0.0), "max_skew_s"),
        (dict(max_age_s=-1.0), "max_age_s"),
        (dict(history_s=math.inf), "history_s"),
        (dict(max_wrench_age_s=math.nan), "max_wrench_age_s"),
    ],
)
def test_config_rejects_bad_values_naming_the_field(overrides: dict, field: str) -> None:
    cfg = dict(joint_names=JOINTS, max_skew_s=0.02, max_age_s=0.5)
    cfg.update(overrides)
    with pytest.raises(ValueError, match=field):
        SyncConfig(**cfg)


def test_config_stores_joint_names_as_tuple() -> None:
    cfg = SyncConfig(joint_names=["a", "b"], max_skew_s=0.01, max_age_s=0.2)  # type: ignore[arg-type]
    assert cfg.joint_names == ("a", "b")


# ------------------------------------------------------------ interpolation


def test_frame_between_two_samples_is_interpolated_exactly_for_linear_motion() -> None:
    sync = make_sync()
    for t in (1.00, 1.01):
        assert sync.add_joint_state(t, JOINTS, linear_positions(t), [1.0, 2.0, -0.5]) == (True, "")
    obs, reason = sync.add_frame(1.0033, now_s=1.02)
    assert reason == ""
    assert isinstance(obs, SyncedObservation)
    assert obs.stamp_s == 1.0033
    assert obs.interpolated
    np.testing.assert_allclose(obs.positions, linear_positions(1.0033), rtol=0, atol=1e-12)
    np.testing.assert_allclose(obs.velocities, [1.0, 2.0, -0.5], atol=1e-12)
    assert obs.skew_s == pytest.approx(0.0033)
    assert obs.positions.dtype == np.float64 and obs.positions.shape == (3,)
    assert obs.force is None and obs.torque is None


def test_held_joints_take_the_nearer_sample_not_a_blend() -> None:
    """A suction cup's vacuum switches 0 -> 1 between two samples: a frame between them reads
    0 or 1 (the nearer sample), never a half-held 0.5; the arm joints are still interpolated."""
    sync = make_sync(held_joints=("j3",))
    sync.add_joint_state(1.00, JOINTS, [0.0, 0.0, 0.0])
    sync.add_joint_state(1.01, JOINTS, [1.0, 1.0, 1.0])
    for stamp, switch in ((1.004, 0.0), (1.006, 1.0)):
        obs, _ = sync.add_frame(stamp, now_s=1.02)
        np.testing.assert_allclose(obs.positions, [(stamp - 1.0) * 100, (stamp - 1.0) * 100, switch], atol=1e-9)
    with pytest.raises(ValueError, match="held_joints"):
        SyncConfig(joint_names=JOINTS, max_skew_s=0.02, max_age_s=0.5, held_joints=("suction_cup",))


def test_skew_is_distance_to_the_nearer_bracketing_sample() -> None:
    sync = make_sync()
    sync.add_joint_state(2.00, JOINTS, linear_positions(2.00))
    sync.add_joint_state(2.01, JOINTS, linear_positions(2.01))
    obs, _ = sync.add_frame(2.008, now_s=2.02)
    assert obs is not None and obs.skew_s == pytest.approx(0.002)


def test_frame_on_a_sample_stamp_uses_it_directly() -> None:
    sync = make_sync()
    sync.add_joint_state(1.0, JOINTS, [1, 2, 3])
    sync.add_joint_state(1.01, JOINTS, [4, 5, 6])
    obs, _ = sync.add_frame(1.0, now_s=1.02)
    assert obs is not None and obs.skew_s == 0.0 and not obs.interpolated
    np.testing.assert_array_equal(obs.positions, [1, 2, 3])


def test_joints_are_matched_by_name_in_any_order_with_extra_joints() -> None:
    sync = make_sync()
    names = ["gripper", "j3", "j1", "camera_pan", "j2"]
    ok, reason = sync.add_joint_state(1.0, names, [9.0, 3.0, 1.0, math.nan, 2.0], [0.9, 0.3, 0.1, 5.0, 0.2])
    assert (ok, reason) == (True, "")  # NaN in a joint we don't use is not our problem
    obs, _ = sync.add_frame(1.001, now_s=1.01)
    assert obs is not None
    np.testing.assert_array_equal(obs.positions, [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(obs.velocities, [0.1, 0.2, 0.3])


def test_missing_velocities_become_zeros() -> None:
    sync = make_sync()
    sync.add_joint_state(1.0, JOINTS, [1, 2, 3])
    obs, _ = sync.add_frame(1.0, now_s=1.0)
    assert obs is not None
    np.testing.assert_array_equal(obs.velocities, np.zeros(3))


def test_observation_arrays_are_read_only() -> None:
    sync = make_sync()
    sync.add_joint_state(1.0, JOINTS, [1, 2, 3])
    obs, _ = sync.add_frame(1.0, now_s=1.0)
    assert obs is not None
    with pytest.raises(ValueError):
        obs.positions[0] = 0.0


# ----------------------------------------------------- joint state rejects


def test_missing_joint_is_rejected_naming_it() -> None:
    sync = make_sync()
    ok, reason = sync.add_joint_state(1.0, ["j1", "j3", "other"], [1, 3, 0])
    assert not ok
    assert reason.startswith("missing_joints")
    assert "'j2'" in reason and "'j1'" not in reason
    assert sync.stats["joint_states_rejected_missing_joints"] == 1


def test_joint_names_follow_the_one_selection_rule() -> None:
    """core.joints' rule: a configured joint named twice is rejected (naming it), a duplicate of a
    joint the robot does not use is ignored, as every other node reads joint_states."""
    sync = make_sync()
    ok, reason = sync.add_joint_state(1.0, ["j1", "j2", "j3", "j2"], [1, 2, 3, 4])
    assert not ok and reason.startswith("duplicate_names") and "'j2'" in reason and "'j1'" not in reason
    ok, _ = sync.add_joint_state(1.0, ["gripper", "j3", "gripper", "j1", "j2"], [0, 3, 0, 1, 2])
    assert ok
    assert sync.stats["joint_states_rejected_duplicate_names"] == 1


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_position_or_velocity_is_rejected(bad: float) -> None:
    sync = make_sync()
    ok, reason = sync.add_joint_state(1.0, JOINTS, [0.0, bad, 0.0])
    assert not ok and reason.startswith("non_finite") and "'j2'" in reason
    ok, reason = sync.add_joint_state(1.0, JOINTS, [0.0, 0.0, 0.0], [bad, 0.0, 0.0])
    assert not ok and reason.startswith("non_finite") and "'j1'" in reason
    assert sync.stats["joint_states_rejected_non_finite"] == 2
    assert sync.add_frame(1.0, now_s=1.0)[1].startswith("no_joint_state")


def test_out_of_order_and_duplicate_joint_stamps_are_rejected() -> None:
    sync = make_sync()
    assert sync.add_joint_state(1.0, JOINTS, [1, 1, 1])[0]
    ok, reason = sync.add_joint_state(1.0, JOINTS, [2, 2, 2])
    assert not ok and reason.startswith("duplicate_stamp")
    ok, reason = sync.add_joint_state(0.99, JOINTS, [3, 3, 3])
    assert not ok and reason.startswith("out_of_order")
    stats = sync.stats
    assert stats["joint_states_rejected_duplicate_stamp"] == 1
    assert stats["joint_states_rejected_out_of_order"] == 1
    obs, _ = sync.add_frame(1.0, now_s=1.0)
    assert obs is not None
    np.testing.assert_array_equal(obs.positions, [1, 1, 1])


@pytest.mark.parametrize(
    "names, positions, velocities, key",
    [
        (JOINTS, [1, 2], (), "length_mismatch"),
        (JOINTS, [1, 2, 3], [1, 2], "velocity_length"),
        (("j1", "j2", "j3", "j1"), [1, 2, 3, 4], (), "duplicate_names"),
        ("j1j2j3", [1, 2, 3], (), "bad_input"),
        (JOINTS, ["a", "b", "c"], (), "bad_input"),
        (JOINTS, [[1], [2], [3]], (), "bad_input"),
        ((1, 2, 3), [1, 2, 3], (), "bad_input"),
    ],
)
def test_malformed_joint_states_are_rejected_and_counted(names, positions, velocities, key: str) -> None:
    sync = make_sync()
    ok, reason = sync.add_joint_state(1.0, names, positions, velocities)
    assert not ok and reason.startswith(key), reason
    assert sync.stats[f"joint_states_rejected_{key}"] == 1
    assert sync.stats["joint_states_accepted"] == 0


def test_non_finite_joint_stamp_is_rejected() -> None:
    sync = make_sync()
    ok, reason = sync.add_joint_state(math.nan, JOINTS, [1, 2, 3])
    assert not ok and reason.startswith("bad_stamp")


# ------------------------------------------------------------ frame drops


def test_stale_frame_is_dropped_as_too_old() -> None:
    sync = make_sync(max_age_s=0.2)
    sync.add_joint_state(1.0, JOINTS, [0, 0, 0])
    obs, reason = sync.add_frame(1.0, now_s=1.25)
    assert obs is None and reason.startswith("too_old")
    assert sync.stats["dropped_too_old"] == 1


def test_out_of_order_frame_is_dropped() -> None:
    sync = make_sync()
    sync.add_joint_state(1.0, JOINTS, [0, 0, 0])
    sync.add_joint_state(1.01, JOINTS, [0, 0, 0])
    assert sync.add_frame(1.005, now_s=1.02)[0] is not None
    for stamp in (1.005, 1.001):
        obs, reason = sync.add_frame(stamp, now_s=1.02)
        assert obs is None and reason.startswith("out_of_order")
    assert sync.stats["dropped_out_of_order"] == 2


def test_frame_in_a_joint_gap_wider_than_max_skew_is_dropped() -> None:
    sync = make_sync(max_skew_s=0.01)
    sync.add_joint_state(1.0, JOINTS, [0, 0, 0])
    sync.add_joint_state(1.1, JOINTS, [1, 1, 1])  # 100 ms dropout
    obs, reason = sync.add_frame(1.05, now_s=1.11)
    assert obs is None and reason.startswith("skew")
    assert sync.stats["dropped_skew"] == 1


def test_frame_before_the_kept_history_is_dropped_as_skew() -> None:
    sync = make_sync(history_s=0.1, max_age_s=5.0)
    for k in range(100):
        sync.add_joint_state(1.0 + 0.01 * k, JOINTS, linear_positions(1.0 + 0.01 * k))
    obs, reason = sync.add_frame(1.2, now_s=2.0)
    assert obs is None and reason.startswith("skew") and "history_s" in reason


def test_frame_before_any_joint_state_is_dropped() -> None:
    sync = make_sync()
    obs, reason = sync.add_frame(1.0, now_s=1.0)
    assert obs is None and reason.startswith("no_joint_state")


@pytest.mark.parametrize("stamp, now", [(math.nan, 1.0), (1.0, math.inf), ("1.0", 1.0)])
def test_non_finite_frame_stamps_are_dropped(stamp, now) -> None:
    sync = make_sync()
    obs, reason = sync.add_frame(stamp, now_s=now)
    assert obs is None and reason.startswith("bad_stamp")


# ------------------------------------------------------- nearest / pending


def test_frame_slightly_newer_than_newest_joint_holds_it() -> None:
    sync = make_sync(max_skew_s=0.02)
    sync.add_joint_state(1.0, JOINTS, [1, 2, 3])
    obs, reason = sync.add_frame(1.015, now_s=1.03)
    assert reason == "" and obs is not None
    assert not obs.interpolated and obs.skew_s == pytest.approx(0.015)
    np.testing.assert_array_equal(obs.positions, [1, 2, 3])


def test_pending_frame_completes_when_the_next_joint_sample_arrives() -> None:
    sync = make_sync(max_skew_s=0.005)
    sync.add_joint_state(1.00, JOINTS, linear_positions(1.00))
    obs, reason = sync.add_frame(1.018, now_s=1.02)
    assert (obs, reason) == (None, "pending")
    assert sync.has_pending and sync.stats["pending"] == 1

    sync.add_joint_state(1.01, JOINTS, linear_positions(1.01))
    assert sync.poll_pending(now_s=1.021) is None  # still 8 ms ahead of the joints
    assert sync.has_pending

    sync.add_joint_state(1.02, JOINTS, linear_positions(1.02))
    obs = sync.poll_pending(now_s=1.022)
    assert obs is not None and obs.stamp_s == 1.018 and obs.interpolated
    np.testing.assert_allclose(obs.positions, linear_positions(1.018), atol=1e-12)
    assert obs.skew_s == pytest.approx(0.002)
    assert not sync.has_pending
    assert sync.poll_pending(now_s=1.03) is None
    stats = sync.stats
    assert stats["observations_out"] == 1 and frames_accounted_for(stats)


def test_newer_frame_supersedes_the_pending_one() -> None:
    sync = make_sync(max_skew_s=0.005)
    sync.add_joint_state(1.0, JOINTS, [0, 0, 0])
    assert sync.add_frame(1.02, now_s=1.03)[1] == "pending"
    assert sync.add_frame(1.05, now_s=1.06)[1] == "pending"
    stats = sync.stats
    assert stats["dropped_superseded"] == 1 and stats["pending"] == 1
    sync.add_joint_state(1.051, JOINTS, [1, 1, 1])
    obs = sync.poll_pending(now_s=1.07)
    assert obs is not None and obs.stamp_s == 1.05
    assert frames_accounted_for(sync.stats)


def test_pending_frame_expires_when_too_old() -> None:
    sync = make_sync(max_skew_s=0.005, max_age_s=0.1)
    sync.add_joint_state(1.0, JOINTS, [0, 0, 0])
    assert sync.add_frame(1.02, now_s=1.03)[1] == "pending"
    assert sync.poll_pending(now_s=1.2) is None
    stats = sync.stats
    assert not sync.has_pending and stats["dropped_too_old"] == 1 and frames_accounted_for(stats)


def test_reset_accepts_a_clock_that_jumped_back() -> None:
    sync = make_sync()
    sync.add_joint_state(100.0, JOINTS, [0, 0, 0])
    sync.add_frame(100.0, now_s=100.0)
    assert not sync.add_joint_state(1.0, JOINTS, [1, 1, 1])[0]
    sync.reset()
    assert sync.add_joint_state(1.0, JOINTS, [1, 1, 1])[0]
    obs, _ = sync.add_frame(1.0, now_s=1.0)
    assert obs is not None
    np.testing.assert_array_equal(obs.positions, [1, 1, 1])


# ------------------------------------------------------------------ wrench


def test_nearest_wrench_within_age_is_attached() -> None:
    sync = make_sync(max_wrench_age_s=0.05)
    sync.add_joint_state(1.0, JOINTS, [0, 0, 0])
    assert sync.add_wrench(0.96, [1, 1, 1], [0, 0, 0]) == (True, "")
    assert sync.add_wrench(0.998, [2, 2, 2], [0.1, 0.2, 0.3])[0]
    assert sync.add_wrench(1.01, [3, 3, 3], [0, 0, 0])[0]
    obs, _ = sync.add_frame(1.0, now_s=1.01)
    assert obs is not None and obs.force is not None and obs.torque is not None
    np.testing.assert_array_equal(obs.force, [2, 2, 2])
    np.testing.assert_array_equal(obs.torque, [0.1, 0.2, 0.3])


def test_wrench_older_than_max_age_is_not_attached() -> None:
    sync = make_sync(max_wrench_age_s=0.05)
    sync.add_joint_state(1.0, JOINTS, [0, 0, 0])
    sync.add_wrench(0.9, [1, 1, 1], [0, 0, 0])
    obs, _ = sync.add_frame(1.0, now_s=1.0)
    assert obs is not None and obs.force is None and obs.torque is None


def test_required_wrench_missing_drops_the_frame() -> None:
    sync = make_sync(wrench_required=True, max_wrench_age_s=0.05)
    sync.add_joint_state(1.0, JOINTS, [0, 0, 0])
    obs, reason = sync.add_frame(1.0, now_s=1.0)
    assert obs is None and reason.startswith("no_wrench")
    sync.add_wrench(1.01, [0, 0, 5], [0, 0, 0])
    obs, reason = sync.add_frame(1.012, now_s=1.02)
    assert obs is not None and reason == ""
    np.testing.assert_array_equal(obs.force, [0, 0, 5])


@pytest.mark.parametrize(
    "stamp, force, torque, key",
    [
        (1.0, [1, 2], [0, 0, 0], "bad_input"),
        (1.0, [1, 2, 3], None, "bad_input"),
        (1.0, [1, math.nan, 3], [0, 0, 0], "non_finite"),
        (math.inf, [1, 2, 3], [0, 0, 0], "bad_stamp"),
    ],
)
def test_bad_wrenches_are_rejected(stamp, force, torque, key: str) -> None:
    sync = make_sync()
    ok, reason = sync.add_wrench(stamp, force, torque)
    assert not ok and reason.startswith(key)
    assert sync.stats[f"wrenches_rejected_{key}"] == 1


def test_out_of_order_wrench_is_rejected() -> None:
    sync = make_sync()
    assert sync.add_wrench(1.0, [0, 0, 0], [0, 0, 0])[0]
    assert sync.add_wrench(1.0, [0, 0, 0], [0, 0, 0])[1].startswith("duplicate_stamp")
    assert sync.add_wrench(0.5, [0, 0, 0], [0, 0, 0])[1].startswith("out_of_order")


# ------------------------------------------------------------------- stats


def test_stats_report_counts_and_skew_summary() -> None:
    sync = make_sync()
    stats = sync.stats
    assert stats["frames_in"] == 0 and math.isnan(stats["skew_p50_s"])
    for k in range(11):
        sync.add_joint_state(1.0 + 0.01 * k, JOINTS, linear_positions(1.0 + 0.01 * k))
    for stamp, skew in ((1.001, 0.001), (1.023, 0.003), (1.042, 0.002)):
        obs, _ = sync.add_frame(stamp, now_s=1.1)
        assert obs is not None and obs.skew_s == pytest.approx(skew)
    sync.add_frame(1.03, now_s=1.1)  # out of order
    stats = sync.stats
    assert stats["frames_in"] == 4 and stats["observations_out"] == 3
    assert stats["dropped_out_of_order"] == 1
    assert stats["joint_states_in"] == 11 and stats["joint_states_accepted"] == 11
    assert stats["skew_p50_s"] == pytest.approx(0.002)
    assert stats["skew_max_s"] == pytest.approx(0.003)
    assert frames_accounted_for(stats)


# --------------------------------------------------------- realistic stream


def test_realistic_stream_yields_nearly_every_frame_with_small_skew() -> None:
    """100 Hz joints + 30 Hz camera, jittered stamps and transport latency, 10 s."""
    rng = np.random.default_rng(42)
    duration_s = 10.0
    events: list[tuple[float, int, str, float]] = []  # (arrival_s, seq, kind, stamp_s)

    arrival = 0.0
    for k in range(int(duration_s * 100)):
        stamp = 0.01 * k + rng.uniform(-0.0003, 0.0003)
        # DDS keeps one publisher's messages in order, so arrival is monotonic.
        arrival = max(arrival, stamp + rng.uniform(0.001, 0.015))
        events.append((arrival, len(events), "joint", stamp))
    arrival = 0.0
    for k in range(1, int(duration_s * 30)):
        stamp = k / 30.0 + rng.uniform(-0.003, 0.003)
        # Images often arrive before the joint samples that bracket them.
        arrival = max(arrival, stamp + rng.uniform(0.002, 0.040))
        events.append((arrival, len(events), "frame", stamp))
    events.sort()

    # max_skew_s at half the joint period: bracketed frames always qualify
    # (up to stamp jitter), and frames that outrun the joints wait rather
    # than hold a sample up to a full period old.
    sync = make_sync(max_skew_s=0.005, max_age_s=0.2)

    def q(t: float) -> list[float]:
        return [math.sin(t), math.cos(2 * t), 0.3 * t]

    observations: list[SyncedObservation] = []
    completed_from_pending = 0
    for arrival, _, kind, stamp in events:
        if kind == "joint":
            # Driver lists joints in its own order, plus one we don't use.
            j1, j2, j3 = q(stamp)
            ok, reason = sync.add_joint_state(stamp, ["j3", "wrist_cam_tilt", "j1", "j2"], [j3, 0.0, j1, j2])
            assert ok, reason
            obs = sync.poll_pending(now_s=arrival)
            completed_from_pending += obs is not None
        else:
            obs, reason = sync.add_frame(stamp, now_s=arrival)
            assert obs is not None or reason in ("pending",) or reason.startswith("skew"), reason
        if obs is not None:
            observations.append(obs)

    n_frames = int(duration_s * 30) - 1
    stats = sync.stats
    assert stats["frames_in"] == n_frames
    assert len(observations) == stats["observations_out"] >= 0.97 * n_frames
    assert completed_from_pending >= 10, "stream should exercise the pending path"
    skews_s = np.array([o.skew_s for o in observations])
    assert (skews_s <= 0.005).all()
    assert stats["skew_p50_s"] <= 0.004
    # Interpolated proprio tracks the true trajectory at the frame stamp.
    for o in observations:
        if o.interpolated:
            np.testing.assert_allclose(o.positions, q(o.stamp_s), atol=2e-4)
    stamps_s = [o.stamp_s for o in observations]
    assert stamps_s == sorted(stamps_s)
    assert frames_accounted_for(stats)


# ------------------------------------------------------- robustness (fuzz)

_names = st.lists(st.sampled_from(["j1", "j2", "j3", "extra", ""]) | st.text(max_size=4), max_size=6)
_numbers = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(10**400), 10**400)
_vectors = (
    st.lists(_numbers, max_size=6)
    | st.lists(st.none() | st.text(max_size=2) | st.lists(_numbers, max_size=2), max_size=4)
    | st.none()
    | st.text(max_size=4)
)
_stamps = (
    st.floats(allow_nan=True, allow_infinity=True)
    | st.integers(-(10**400), 10**400)
    | st.none()
    | st.text(max_size=3)
)
_op = st.one_of(
    st.tuples(st.just("joint"), _stamps, _names, _vectors, _vectors),
    st.tuples(st.just("frame"), _stamps, _stamps),
    st.tuples(st.just("poll"), _stamps),
    st.tuples(st.just("wrench"), _stamps, _vectors, _vectors),
    # Well-formed samples too, so the pairing paths are reached.
    st.tuples(st.just("good_joint"), st.floats(0, 10), st.permutations(["j1", "j2", "j3", "x"])),
    st.tuples(st.just("good_frame"), st.floats(0, 10), st.floats(0, 10)),
)


@settings(max_examples=150, deadline=None)
@given(ops=st.lists(_op, max_size=40), wrench_required=st.booleans())
def test_random_garbage_never_raises_and_every_frame_is_accounted(ops, wrench_required: bool) -> None:
    sync = make_sync(wrench_required=wrench_required)
    for op in ops:
        kind = op[0]
        if kind == "joint":
            result = sync.add_joint_state(op[1], op[2], op[3], op[4] if op[4] is not None else ())
        elif kind == "good_joint":
            result = sync.add_joint_state(op[1], op[2], [1.0, 2.0, 3.0, 4.0])
        elif kind == "wrench":
            result = sync.add_wrench(op[1], op[2], op[3])
        elif kind in ("frame", "good_frame"):
            obs, reason = sync.add_frame(op[1], now_s=op[2])
            result = (obs is not None, reason)
            if obs is not None:
                assert obs.positions.shape == (3,) and np.isfinite(obs.positions).all()
                assert 0.0 <= obs.skew_s <= sync.config.max_skew_s
        else:
            obs = sync.poll_pending(op[1])
            result = (obs is not None, "")
        assert isinstance(result[0], bool) and isinstance(result[1], str)
        assert result[0] or result[1] or kind == "poll"
    assert frames_accounted_for(sync.stats)
