"""core.sync.select_joints: a message's joints picked by name (commanded and observed-only ones)."""
from __future__ import annotations

import numpy as np
import pytest

from hybridvla_ros.core.sync import select_joints

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
