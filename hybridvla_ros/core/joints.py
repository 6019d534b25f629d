"""Picking a robot's joints out of a message by name: the one rule every node and library uses.

A JointState (``name`` / ``position``) or an Observation (``joint_names`` /
``joint_positions``) lists joints in the driver's order, often with joints we do not drive.
The rule, everywhere:

- every wanted joint must be named (a missing one is an error naming it);
- a wanted joint named more than once is ambiguous, an error (a duplicate of a joint
  nobody wants does not matter);
- names and values must be the same length; values must be numbers;
- :func:`select_joints` also refuses NaN/Inf in a wanted joint (one that is not wanted may
  hold anything).

:class:`JointIndex` keeps the index list per name tuple for the nodes that read
joint_states at 100 Hz; it raises the same errors as :func:`select_joints`.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "JointSelectionError",
    "MissingJointsError",
    "DuplicateJointsError",
    "JointIndex",
    "select_joints",
]

# A publisher cycling through many name lists is broken; the cache must not grow without bound.
_CACHE_MAX = 64


class JointSelectionError(ValueError):
    """A message's joints cannot be picked by name (the message says why)."""


class MissingJointsError(JointSelectionError):
    """Wanted joints the message does not name; ``joints`` lists them in wanted order."""

    def __init__(self, joints: Sequence[str], names: Sequence[str]) -> None:
        self.joints = tuple(joints)
        super().__init__(f"missing joints {list(self.joints)} (have {list(names)})")


class DuplicateJointsError(JointSelectionError):
    """Wanted joints the message names more than once; ``joints`` lists them sorted."""

    def __init__(self, joints: Sequence[str]) -> None:
        self.joints = tuple(joints)
        super().__init__(f"joints named more than once: {list(self.joints)}")


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _indices(names: tuple[str, ...], wanted: tuple[str, ...]) -> np.ndarray:
    """(len(wanted),) intp: where each wanted joint sits in ``names``. Raises MissingJointsError
    (checked first) or DuplicateJointsError."""
    index: dict[str, int] = {}
    dupes: set[str] = set()
    for i, n in enumerate(names):
        if n in index:
            dupes.add(n)
        index[n] = i
    missing = [n for n in wanted if n not in index]
    if missing:
        raise MissingJointsError(missing, names)
    ambiguous = sorted(dupes & set(wanted))
    if ambiguous:
        raise DuplicateJointsError(ambiguous)
    return np.array([index[n] for n in wanted], dtype=np.intp)


def _values(names: tuple[str, ...], values: object, wanted: tuple[str, ...]) -> np.ndarray:
    """``values`` as a 1-D float64 array of len(names) (len(wanted) when unnamed); raises
    JointSelectionError naming what is wrong."""
    if isinstance(values, (str, bytes)):
        raise JointSelectionError(f"joint values must be a flat list of numbers, got {_short(values)}")
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise JointSelectionError(f"joint values must be a flat list of numbers, got {_short(values)}") from None
    if arr.ndim != 1:
        raise JointSelectionError(f"joint values must be a flat list of numbers, got {_short(values)}")
    if not names:
        if arr.size != len(wanted):
            raise JointSelectionError(f"no joint names and {arr.size} values; unnamed values must be the "
                                      f"{len(wanted)} joints {list(wanted)} in that order")
    elif arr.size != len(names):
        raise JointSelectionError(f"{len(names)} joint names but {arr.size} values")
    return arr


def _check_finite(wanted: tuple[str, ...], out: np.ndarray) -> np.ndarray:
    bad = [n for n, v in zip(wanted, out) if not math.isfinite(v)]
    if bad:
        raise JointSelectionError(f"NaN/Inf in joints {bad}")
    return out


def _name_tuple(names: Sequence[str]) -> tuple[str, ...]:
    if isinstance(names, (str, bytes)):
        raise JointSelectionError(f"joint names must be a sequence of str, got {_short(names)}")
    return tuple(names)


def select_joints(names: Sequence[str], values: Sequence[float], wanted: Sequence[str]) -> np.ndarray:
    """(len(wanted),) float64: the ``wanted`` joints' values picked from a message by name.

    ``names`` / ``values`` are a message's parallel joint lists (an Observation's
    ``joint_names`` / ``joint_positions``, a JointState's ``name`` / ``position``); joints
    not wanted are ignored, values included. Empty ``names`` means the values are
    already in ``wanted`` order, accepted only when there are exactly len(wanted) of them.
    Raises JointSelectionError (a ValueError) naming the problem: names and values of
    different lengths, a wanted joint missing (all of them named, MissingJointsError) or
    named more than once (DuplicateJointsError), values that are not numbers, NaN/Inf in a
    wanted joint (named).
    """
    if isinstance(values, (str, bytes)) or isinstance(names, (str, bytes)):
        raise JointSelectionError(f"names and values must be sequences, got {_short(names)}, {_short(values)}")
    wanted_t, names_t = tuple(wanted), tuple(names)
    arr = _values(names_t, values, wanted_t)
    if not names_t:
        return _check_finite(wanted_t, arr.copy())
    return _check_finite(wanted_t, arr[_indices(names_t, wanted_t)])


class JointIndex:
    """The wanted joints' positions in a message's name list, remembered per name list.

    Drivers send the same names in the same order at every message, so the lookup is done
    once per distinct list (a bounded cache). Same rule and errors as
    :func:`select_joints`.
    """

    def __init__(self, wanted: Sequence[str]) -> None:
        """Pick ``wanted`` (in this order). Raises ValueError if ``wanted`` names a joint twice."""
        self.wanted: tuple[str, ...] = _name_tuple(wanted)
        dupes = sorted({n for n in self.wanted if self.wanted.count(n) > 1})
        if dupes:
            raise ValueError(f"wanted joints must be unique, got duplicates {dupes!r}")
        self._cache: dict[tuple[str, ...], np.ndarray] = {}

    def indices(self, names: Sequence[str]) -> np.ndarray:
        """(len(wanted),) intp, read-only: where each wanted joint sits in ``names``.

        Raises MissingJointsError or DuplicateJointsError (JointSelectionError, ValueError).
        """
        key = _name_tuple(names)
        cached = self._cache.get(key)
        if cached is None:
            cached = _indices(key, self.wanted)  # raises; a bad list is not cached (it is rare and cheap)
            cached.setflags(write=False)
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[key] = cached
        return cached

    def select(self, names: Sequence[str], values: Sequence[float], *, finite: bool = True,
               require_names: bool = False) -> np.ndarray:
        """(len(wanted),) float64, a copy: the wanted joints' values, as :func:`select_joints`.

        Empty ``names`` means the values are in wanted order, unless ``require_names`` (a
        sensor_msgs/JointState always names its joints: an unnamed one is refused as missing
        them all). With ``finite=False``, NaN/Inf pass through (for a consumer that rejects
        and counts them itself). Raises JointSelectionError.
        """
        names_t = _name_tuple(names)
        if require_names and not names_t:
            raise MissingJointsError(self.wanted, names_t)
        arr = _values(names_t, values, self.wanted)
        out = arr.copy() if not names_t else arr[self.indices(names_t)]
        return _check_finite(self.wanted, out) if finite else out
