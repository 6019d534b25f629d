"""core.joints: a message's joints picked by name (commanded and observed-only ones), one rule everywhere."""
from __future__ import annotations

import numpy as np
import pytest

from hybridvla_ros.core.joints import (
    DuplicateJointsError,
    JointIndex,
    JointSelectionError,
    MissingJointsError,
    select_joints,
)

ARM = ("j1", "j2", "j3")


def test_picks_wanted_joints_by_name_in_wanted_order_ignoring_others() -> None:
    names = ["extra", "j3", "suction_cup", "j1", "j2"]
    values = [float("nan"), 3.0, 1.0, 1.0, 2.0]  # NaN in a joint nobody wants is no problem
    np.testing.assert_array_equal(select_joints(names, values, ARM), [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(select_joints(names, values, ("suction_cup",)), [1.0])
    out = select_joints(names, values, ARM + ("suction_cup",))
    assert out.dtype == np.float64 and out.shape == (4,)
    np.testing.assert_array_equal(out, [1.0, 2.0, 3.0, 1.0])


def test_result_is_a_copy() -> None:
    values = np.array([1.0, 2.0, 3.0])
    out = select_joints([], values, ARM)
    out[0] = 9.0
    assert values[0] == 1.0


def test_nothing_wanted_is_an_empty_vector() -> None:
    assert select_joints(["j1"], [1.0], ()).shape == (0,)
    assert select_joints([], [], ()).shape == (0,)


def test_unnamed_values_are_in_wanted_order_only_when_the_length_matches() -> None:
    np.testing.assert_array_equal(select_joints([], [1.0, 2.0, 3.0], ARM), [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"no joint names and 4 values.*3 joints"):
        select_joints([], [1.0, 2.0, 3.0, 4.0], ARM)
    with pytest.raises(ValueError, match=r"no joint names and 2 values"):
        select_joints([], [1.0, 2.0], ARM)


def test_missing_joint_is_named() -> None:
    with pytest.raises(ValueError, match=r"missing joints \['suction_cup'\]"):
        select_joints(list(ARM), [1.0, 2.0, 3.0], ARM + ("suction_cup",))


def test_names_and_values_of_different_lengths() -> None:
    with pytest.raises(ValueError, match="3 joint names but 2 values"):
        select_joints(list(ARM), [1.0, 2.0], ARM)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_wanted_joint_is_named(bad: float) -> None:
    with pytest.raises(ValueError, match=r"NaN/Inf in joints \['j2'\]"):
        select_joints(list(ARM), [1.0, bad, 3.0], ARM)
    with pytest.raises(ValueError, match=r"NaN/Inf in joints \['j2'\]"):
        select_joints([], [1.0, bad, 3.0], ARM)


def test_wanted_joint_named_twice_is_ambiguous() -> None:
    with pytest.raises(ValueError, match=r"more than once: \['j1'\]"):
        select_joints(["j1", "j2", "j3", "j1"], [1.0, 2.0, 3.0, 4.0], ARM)
    # A duplicate nobody wants does not matter.
    np.testing.assert_array_equal(select_joints(["x", "x", *ARM], [0.0, 0.0, 1.0, 2.0, 3.0], ARM), [1, 2, 3])


@pytest.mark.parametrize("values", ["abc", [[1.0, 2.0, 3.0]], [1.0, "a", 3.0], None])
def test_values_that_are_not_numbers(values) -> None:
    with pytest.raises(ValueError):
        select_joints(list(ARM), values, ARM)


def test_errors_say_which_joints_and_are_value_errors() -> None:
    with pytest.raises(MissingJointsError) as missing:
        select_joints(["j1"], [1.0], ARM)
    assert missing.value.joints == ("j2", "j3") and isinstance(missing.value, ValueError)
    with pytest.raises(DuplicateJointsError) as dupes:
        select_joints(["j3", "j2", "j1", "j3", "j2"], [0.0] * 5, ARM)
    assert dupes.value.joints == ("j2", "j3")
    assert issubclass(DuplicateJointsError, JointSelectionError) and issubclass(JointSelectionError, ValueError)


def test_joint_index_gives_the_same_answers_as_select_joints() -> None:
    index = JointIndex(ARM)
    cases = [
        (["extra", "j3", "j1", "j2"], [9.0, 3.0, 1.0, 2.0]),
        (["x", "x", "j2", "j1", "j3"], [0.0, 0.0, 2.0, 1.0, 3.0]),  # unwanted duplicate: fine
        ([], [1.0, 2.0, 3.0]),                                       # unnamed: wanted order
    ]
    for names, values in cases:
        np.testing.assert_array_equal(index.select(names, values), select_joints(names, values, ARM))
    np.testing.assert_array_equal(index.indices(["extra", "j3", "j1", "j2"]), [2, 3, 1])


@pytest.mark.parametrize("names, values, error, match", [
    (["j1", "j2"], [1.0, 2.0], MissingJointsError, r"missing joints \['j3'\]"),
    (["j1", "j2", "j3", "j2"], [1.0, 2.0, 3.0, 4.0], DuplicateJointsError, r"more than once: \['j2'\]"),
    (["j1", "j2", "j3"], [1.0, 2.0], JointSelectionError, "3 joint names but 2 values"),
    (["j1", "j2", "j3"], [1.0, float("nan"), 3.0], JointSelectionError, r"NaN/Inf in joints \['j2'\]"),
    ([], [1.0, 2.0], JointSelectionError, "no joint names and 2 values"),
])
def test_joint_index_rejects_what_select_joints_rejects(names, values, error, match) -> None:
    index = JointIndex(ARM)
    for _ in range(2):  # the second call goes through the cache path
        with pytest.raises(error, match=match):
            index.select(names, values)
        with pytest.raises(error, match=match):
            select_joints(names, values, ARM)


def test_joint_index_caches_per_name_list_and_never_serves_a_stale_order() -> None:
    index = JointIndex(ARM)
    first = index.indices(("j1", "j2", "j3"))
    assert index.indices(["j1", "j2", "j3"]) is first  # same list: the cached array
    np.testing.assert_array_equal(index.indices(["j3", "j2", "j1"]), [2, 1, 0])
    with pytest.raises(MissingJointsError):
        index.indices(["j1", "j2"])
    with pytest.raises(DuplicateJointsError):
        index.indices(["j1", "j1", "j2", "j3"])
    assert index.indices(["j1", "j2", "j3"]) is first  # a bad list in between changes nothing
    with pytest.raises(ValueError):
        first[0] = 5  # shared: read-only
    for k in range(200):  # many distinct lists (a broken publisher): still right answers
        names = [f"other{k}", "j2", "j3", "j1"]
        np.testing.assert_array_equal(index.indices(names), [3, 1, 2])


def test_joint_index_passes_non_finite_values_through_only_when_asked() -> None:
    index = JointIndex(ARM)
    out = index.select(["j1", "j2", "j3"], [1.0, float("inf"), 3.0], finite=False)
    assert out[0] == 1.0 and np.isinf(out[1])
    values = np.array([1.0, 2.0, 3.0])
    index.select([], values)[0] = 9.0
    assert values[0] == 1.0  # a copy


def test_joint_index_wants_unique_joints() -> None:
    with pytest.raises(ValueError, match="duplicates \\['j1'\\]"):
        JointIndex(("j1", "j2", "j1"))
    with pytest.raises(JointSelectionError, match="sequence of str"):
        JointIndex(ARM).indices("j1j2j3")


def test_joint_index_can_require_names() -> None:
    """A JointState always names its joints; the nodes refuse an unnamed one rather than guess the order."""
    index = JointIndex(ARM)
    with pytest.raises(MissingJointsError, match=r"missing joints \['j1', 'j2', 'j3'\]"):
        index.select([], [1.0, 2.0, 3.0], require_names=True)
    np.testing.assert_array_equal(index.select(["j2", "j1", "j3"], [2.0, 1.0, 3.0], require_names=True), [1, 2, 3])
