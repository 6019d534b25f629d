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


# ------------------------------------------------- bad stamps, clocks (issue 18)


def _stream(sync: ObservationSynchronizer, t0: float, t1: float, *, joint_lag: float = 0.002,
            frame_lag: float = 0.015, camera_clock: float = 0.0, joint_clock: float = 0.0,
            frame_every: int = 3) -> list[tuple[float, SyncedObservation | None, str]]:
    """100 Hz joint_states and ~33 Hz frames from t0 to t1 (node clock), arriving ``*_lag`` after their stamp;
    each driver's clock is off the node's by ``*_clock`` (its stamps = true time + clock).
    Returns (true frame time, observation or None, reason) per frame."""
    out = []
    k = 0
    t = t0
    while t < t1:
        sync.add_joint_state(t + joint_clock, JOINTS, linear_positions(t), now_s=t + joint_lag)
        polled = sync.poll_pending(now_s=t + joint_lag)
        if polled is not None:
            out.append((polled.stamp_s, polled, "polled"))
        if k % frame_every == 1:
            ft = t - 0.004
            obs, reason = sync.add_frame(ft + camera_clock, now_s=ft + frame_lag)
            out.append((ft, obs, reason))
        k += 1
        t = t0 + 0.01 * k
    return out


def _served(frames) -> int:
    return sum(obs is not None for _, obs, _ in frames)


def test_one_future_stamped_frame_costs_one_frame() -> None:
    """Measured bug: one frame stamped 5 s ahead made every later frame out_of_order for 5 s."""
    sync = make_sync(max_skew_s=0.006, max_age_s=0.3)
    _stream(sync, 10.0, 10.5)
    served = sync.stats["observations_out"]
    obs, reason = sync.add_frame(15.5, now_s=10.5)
    assert obs is None and reason.startswith("future_stamp") and "max_stamp_future_s" in reason
    after = _stream(sync, 10.5, 11.0)
    # Every frame after the bad one is served (polled ones complete pending frames).
    assert all(obs is not None or reason == "pending" for _, obs, reason in after), after
    stats = sync.stats
    assert stats["observations_out"] - served >= len([f for f in after if f[2] != "polled"]) - 1
    assert stats["dropped_future_stamp"] == 1 and stats["dropped_out_of_order"] == 0
    assert frames_accounted_for(stats)


def test_one_future_stamped_joint_state_costs_one_sample() -> None:
    sync = make_sync(max_skew_s=0.006, max_age_s=0.3)
    _stream(sync, 10.0, 10.5)
    ok, reason = sync.add_joint_state(15.5, JOINTS, [1e6, 1e6, 1e6], now_s=10.5)
    assert not ok and reason.startswith("future_stamp")
    after = _stream(sync, 10.5, 11.0)
    frames = [f for f in after if f[2] != "polled"]
    assert _served(after) >= len(frames) - 1, after
    stats = sync.stats
    assert stats["joint_states_rejected_future_stamp"] == 1
    assert stats["joint_states_rejected_out_of_order"] == 0
    # The bad sample never reached an observation.
    assert all(o is None or np.all(o.positions < 1e5) for _, o, _ in after)


def test_a_far_past_joint_state_is_rejected_on_its_own_reason() -> None:
    sync = make_sync(max_skew_s=0.006, max_age_s=0.3)
    _stream(sync, 10.0, 10.2)
    ok, reason = sync.add_joint_state(4.0, JOINTS, [0, 0, 0], now_s=10.2)
    assert not ok and reason.startswith("too_old")
    ok, reason = sync.add_wrench(4.0, [0, 0, 0], [0, 0, 0], now_s=10.2)
    assert not ok and reason.startswith("too_old")
    ok, reason = sync.add_wrench(16.0, [0, 0, 0], [0, 0, 0], now_s=10.2)
    assert not ok and reason.startswith("future_stamp")
    stats = sync.stats
    assert stats["joint_states_rejected_too_old"] == 1 and stats["joint_states_rejected_out_of_order"] == 0
    assert stats["wrenches_rejected_too_old"] == 1 and stats["wrenches_rejected_future_stamp"] == 1


def test_a_stale_frame_does_not_replace_the_pending_one() -> None:
    sync = make_sync(max_skew_s=0.005, max_age_s=0.2)
    sync.add_joint_state(1.0, JOINTS, [0, 0, 0], now_s=1.0)
    assert sync.add_frame(1.02, now_s=1.03)[1] == "pending"
    assert sync.add_frame(0.5, now_s=1.03)[1].startswith("too_old")
    sync.add_joint_state(1.021, JOINTS, [1, 1, 1], now_s=1.04)
    assert sync.poll_pending(now_s=1.04) is not None
    assert sync.stats["dropped_superseded"] == 0


def test_a_source_clock_jump_resets_its_state_with_an_event() -> None:
    """The joint driver restarts with its clock 0.25 s back (still plausible): its samples are steadily
    out of order; once that has lasted clock_jump_after_s its history is reset and they are stored again."""
    sync = make_sync(max_skew_s=0.006, max_age_s=0.3, clock_jump_after_s=0.1)
    _stream(sync, 10.0, 10.5)
    accepted = []
    for k in range(30):
        t = 10.5 + 0.01 * k
        accepted.append(sync.add_joint_state(t - 0.25, JOINTS, linear_positions(t - 0.25), now_s=t + 0.002)[0])
    events = sync.pop_events()
    assert len(events) == 1 and events[0].startswith("joint_states clock jump"), events
    assert "0.252 s behind" in events[0] and "accepted again" in events[0]
    assert sync.pop_events() == []
    assert sync.stats["clock_jumps"] == 1
    # Stored again from about clock_jump_after_s on, not only once its stamps pass the old newest (25 samples).
    first = accepted.index(True)
    assert 10 <= first <= 13 and all(accepted[first:]), accepted


def test_a_source_far_off_the_node_clock_is_reported_once_as_a_jump() -> None:
    sync = make_sync(max_skew_s=0.006, max_age_s=0.3, clock_jump_after_s=0.5)
    _stream(sync, 10.0, 10.5)
    frames = _stream(sync, 10.5, 12.5, camera_clock=-30.0)  # the camera's driver restarted on another clock
    assert _served(frames) == 0
    events = sync.pop_events()
    assert len(events) == 1, events
    assert "camera clock jump" in events[0] and "30.0" in events[0] and "camera_stamp_offset_s: +30.0" in events[0]
    assert sync.stats["dropped_too_old"] == len(frames)


def test_a_stall_backlog_is_not_a_clock_jump() -> None:
    """After a 1 s stall, a queue of old joint_states arrives at once: too_old, but not a jump."""
    sync = make_sync(max_skew_s=0.006, max_age_s=0.3, clock_jump_after_s=0.5)
    _stream(sync, 10.0, 10.5)
    for k in range(50):
        sync.add_joint_state(10.5 + 0.01 * k, JOINTS, linear_positions(10.5 + 0.01 * k), now_s=11.5 + 0.0001 * k)
    assert sync.stats["joint_states_rejected_too_old"] > 0
    assert sync.stats["clock_jumps"] == 0 and sync.pop_events() == []


def test_the_node_clock_going_back_forgets_the_old_timeline() -> None:
    """Sim time reset: the node's clock and every driver's restart at 0."""
    sync = make_sync(max_skew_s=0.006, max_age_s=0.3)
    _stream(sync, 100.0, 100.5)
    frames = _stream(sync, 0.0, 0.5)
    events = sync.pop_events()
    assert len(events) == 1 and "this node's clock jumped back" in events[0]
    assert sync.stats["node_clock_jumps"] == 1
    requested = [f for f in frames if f[2] != "polled"]
    assert _served(frames) >= len(requested) - 1, frames


def test_stamp_offset_corrects_a_known_clock_offset() -> None:
    """A camera whose clock is 0.8 s behind: every frame too_old, until camera_stamp_offset_s says so."""
    plain = make_sync(max_skew_s=0.006, max_age_s=0.3)
    frames = _stream(plain, 10.0, 11.0, camera_clock=-0.8)
    assert _served(frames) == 0 and plain.stats["dropped_too_old"] == len(frames)
    assert plain.stats["camera_offset_s"] == pytest.approx(0.815, abs=1e-6)
    report = plain.report(11.0)
    assert report.level == 1 and "camera stamps are 0.815 s behind" in report.message
    assert "camera_stamp_offset_s: +0.815" in report.message and "too_old" in report.message

    fixed = make_sync(max_skew_s=0.006, max_age_s=0.3, camera_stamp_offset_s=0.8)
    frames = _stream(fixed, 10.0, 11.0, camera_clock=-0.8)
    requested = [f for f in frames if f[2] != "polled"]
    assert _served(frames) >= len(requested) - 1
    obs = [o for _, o, _ in frames if o is not None]
    # The observation is stamped on the node's clock, with joint state interpolated there.
    for o in obs:
        np.testing.assert_allclose(o.positions, linear_positions(o.stamp_s), atol=1e-9)
    assert fixed.stats["camera_offset_s"] == pytest.approx(0.015, abs=1e-6)
    report = fixed.report(11.0)
    assert report.level == 0, report.message
    assert ("camera_stamp_offset_s", "0.800000") in report.values


def test_offset_estimate_is_a_robust_median_per_source() -> None:
    sync = make_sync(max_skew_s=0.006, max_age_s=0.3)
    _stream(sync, 10.0, 11.0, joint_lag=0.003, frame_lag=0.040)
    # One wild stamp does not move the median.
    sync.add_joint_state(20.0, JOINTS, [0, 0, 0], now_s=11.0)
    stats = sync.stats
    assert stats["joint_states_offset_s"] == pytest.approx(0.003, abs=1e-6)
    assert stats["camera_offset_s"] == pytest.approx(0.040, abs=1e-6)
    assert math.isnan(stats["wrench_offset_s"])


def test_offset_beyond_the_bound_is_a_warning_not_silence() -> None:
    """Stamps ahead of the node's clock (a driver's clock 50 ms ahead) are served, and warned about past the bound."""
    sync = make_sync(max_skew_s=0.006, max_age_s=0.3, max_stamp_offset_s=0.03)
    frames = _stream(sync, 10.0, 11.0, joint_clock=0.05, camera_clock=0.05)
    assert _served(frames) > 0
    report = sync.report(11.0)
    assert report.level == 1
    assert "joint_states stamps are 0.048 s ahead of their arrival" in report.message
    assert "joint_states_stamp_offset_s: -0.048" in report.message


def test_report_counts_drops_by_reason_since_the_last_report() -> None:
    sync = make_sync(max_skew_s=0.006, max_age_s=0.3)
    _stream(sync, 10.0, 10.5)
    first = sync.report(10.5)
    assert first.level == 0 and first.message.startswith(f"{sync.stats['observations_out']} observations")
    sync.add_frame(99.0, now_s=10.5)
    sync.drop_frame("image_too_large", "4000x3000")
    sync.drop_frame("nonsense", "x")
    sync.add_joint_state(99.0, JOINTS, [0, 0, 0], now_s=10.5)
    _stream(sync, 10.5, 11.5)
    report = sync.report(11.5)
    assert report.level == 1
    assert "in the last 1.0 s" in report.message
    assert "frames dropped: future_stamp 1, image_malformed 1, image_too_large 1" in report.message
    assert "joint_states rejected: future_stamp 1" in report.message
    values = dict(report.values)
    assert values["dropped_future_stamp"] == "1" and values["dropped_image_too_large"] == "1"
    assert values["joint_states_rejected_future_stamp"] == "1"
    assert float(values["camera_offset_s"]) == pytest.approx(0.015)
    assert frames_accounted_for(sync.stats)
    # Nothing new: back to OK.
    _stream(sync, 11.5, 12.0)
    assert sync.report(12.0).level == 0


def test_report_never_raises_on_a_bad_clock() -> None:
    sync = make_sync()
    report = sync.report(math.nan)
    assert report.level == 0 and report.message == "0 observations"


@pytest.mark.parametrize("field, value", [("max_stamp_future_s", 0.0), ("camera_stamp_offset_s", math.inf),
                                          ("joint_states_stamp_offset_s", "1"), ("clock_jump_after_s", -1.0),
                                          ("max_stamp_offset_s", math.nan)])
def test_clock_config_is_validated(field: str, value) -> None:
    with pytest.raises(ValueError, match=field):
        SyncConfig(joint_names=JOINTS, max_skew_s=0.02, max_age_s=0.5, **{field: value})
