"""Real-time chunking (Black, Galliker, Levine 2025): which steps of the next chunk are already
decided, and how strongly the rest should follow the chunk that is executing.

While the model computes the chunk for an observation stamped ``t0``, the robot keeps executing
the last published chunk; the new chunk reaches the action buffer about ``delay_s`` later. Its
steps whose times fall before ``t0 + delay_s`` will never execute from it: they are FROZEN to
the old chunk's targets at the same times (linear interpolation on the old chunk's time grid).
The steps after them that the old chunk still covers get a soft, exponentially decaying weight
(the paper's soft mask), the steps beyond the old chunk weight 0. A flow policy then generates
the new chunk consistent with that prefix (guided inpainting, ``model/policy.py``), so the
buffer splices it without a jump.

:class:`DelayEstimator` gives ``delay_s`` from measured observation-stamp -> publish delays
(a high percentile of the last few, so one fast call does not shrink it). Plain numpy.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

__all__ = ["ChunkPrefix", "DelayEstimator", "plan_prefix", "soft_weights", "steps_before", "targets_at"]

_EPS_S = 1e-9  # time comparisons: a step exactly at the old chunk's last slot is inside it


def steps_before(start_s: float, period_s: float, until_s: float, count: int) -> int:
    """How many of the ``count`` steps at ``start_s + i * period_s`` fall strictly before ``until_s``."""
    if not period_s > 0:
        raise ValueError(f"period_s: must be > 0, got {period_s!r}")
    if until_s <= start_s:
        return 0
    return int(min(count, math.ceil((until_s - start_s) / period_s - _EPS_S)))


def targets_at(actions: np.ndarray, start_s: float, period_s: float, times_s: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """The chunk ``actions`` (T, D) on its grid ``start_s + k * period_s``, linearly interpolated at
    ``times_s`` (N,): targets (N, D) and ``inside`` (N,) bool (times within [first, last] slot);
    times outside get the nearest end's target."""
    actions = np.asarray(actions, dtype=np.float64)
    k = (np.asarray(times_s, dtype=np.float64) - start_s) / period_s          # (N,) fractional step
    T = actions.shape[0]
    inside = (k >= -_EPS_S / period_s) & (k <= T - 1 + _EPS_S / period_s)
    k = np.clip(k, 0.0, T - 1)
    lo = np.floor(k).astype(int)
    hi = np.minimum(lo + 1, T - 1)
    frac = (k - lo)[:, None]                                                    # (N, 1)
    return (1.0 - frac) * actions[lo] + frac * actions[hi], inside


def soft_weights(frozen: int, overlap: int, count: int) -> np.ndarray:
    """(count,) the paper's soft mask: 1 for the ``frozen`` steps, then for the rest of the
    ``overlap`` with the old chunk ``c * (e^c - 1) / (e - 1)`` with ``c = (overlap - i) /
    (overlap - frozen + 1)`` (decaying from nearly 1 to nearly 0), then 0."""
    if not 0 <= frozen <= overlap <= count:
        raise ValueError(f"need 0 <= frozen <= overlap <= count, got {frozen}, {overlap}, {count}")
    w = np.zeros(count)
    w[:frozen] = 1.0
    i = np.arange(frozen, overlap)
    c = (overlap - i) / (overlap - frozen + 1.0)
    w[frozen:overlap] = c * np.expm1(c) / math.expm1(1.0)
    return w


@dataclass(frozen=True)
class ChunkPrefix:
    """What the next chunk (``count`` steps from ``start_s``, ``step_period_s`` apart) should agree
    with: ``targets`` (T, D) absolute, the old chunk's at each step's time (rows with weight 0 hold
    its last target and mean nothing), ``weights`` (T,) in [0, 1], and ``frozen_steps``: the
    leading steps (weight 1) that execute from the old chunk before the new one arrives."""

    targets: np.ndarray
    weights: np.ndarray
    frozen_steps: int
    start_s: float
    step_period_s: float

    def __post_init__(self) -> None:
        targets = np.array(self.targets, dtype=np.float64)
        weights = np.array(self.weights, dtype=np.float64).reshape(-1)
        if targets.ndim != 2 or targets.shape[0] != weights.shape[0] or targets.shape[0] < 1:
            raise ValueError(f"targets/weights: expected (T, D) and (T,), got {targets.shape} and {weights.shape}")
        if not (np.isfinite(targets).all() and np.isfinite(weights).all()) or weights.min() < 0 or weights.max() > 1:
            raise ValueError("targets/weights: must be finite, weights in [0, 1]")
        if not 0 <= self.frozen_steps <= targets.shape[0] or not np.all(weights[:self.frozen_steps] == 1.0):
            raise ValueError(f"frozen_steps: {self.frozen_steps!r} must be in [0, T] with weight 1")
        if not (math.isfinite(self.start_s) and self.step_period_s > 0):
            raise ValueError(f"start_s/step_period_s: got {self.start_s!r}, {self.step_period_s!r}")
        targets.flags.writeable = False
        weights.flags.writeable = False
        object.__setattr__(self, "targets", targets)
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "frozen_steps", int(self.frozen_steps))

    @property
    def chunk_size(self) -> int:
        return int(self.targets.shape[0])


def plan_prefix(old_actions: np.ndarray, old_start_s: float, old_period_s: float, start_s: float,
                period_s: float, chunk_size: int, delay_s: float) -> ChunkPrefix | None:
    """The prefix for a chunk of ``chunk_size`` steps from ``start_s`` (``period_s`` apart) that will
    be in the buffer ``delay_s`` after ``start_s``, while ``old_actions`` (T_old, D) from
    ``old_start_s`` execute; None when the two chunks do not overlap in time (nothing to agree with)."""
    if chunk_size < 1 or not period_s > 0 or not old_period_s > 0 or not math.isfinite(delay_s):
        raise ValueError(f"chunk_size/period_s/old_period_s/delay_s: got {chunk_size!r}, {period_s!r}, "
                         f"{old_period_s!r}, {delay_s!r}")
    times = start_s + np.arange(chunk_size) * period_s                          # (T,)
    targets, inside = targets_at(old_actions, old_start_s, old_period_s, times)
    overlap = int(np.argmin(inside)) if not inside.all() else chunk_size        # leading steps inside
    if overlap == 0:
        return None
    frozen = min(steps_before(start_s, period_s, start_s + max(delay_s, 0.0), chunk_size), overlap)
    return ChunkPrefix(targets=targets, weights=soft_weights(frozen, overlap, chunk_size), frozen_steps=frozen,
                       start_s=float(start_s), step_period_s=float(period_s))


class DelayEstimator:
    """A high ``percentile`` of the last ``window`` measured delays (seconds) plus ``margin_s``."""

    def __init__(self, window: int = 20, percentile: float = 90.0, margin_s: float = 0.0) -> None:
        if window < 1 or not 0.0 <= percentile <= 100.0 or not margin_s >= 0.0:
            raise ValueError(f"window/percentile/margin_s: got {window!r}, {percentile!r}, {margin_s!r}")
        self._samples: deque[float] = deque(maxlen=int(window))
        self.percentile = float(percentile)
        self.margin_s = float(margin_s)

    def add(self, delay_s: float) -> None:
        """Record one delay; a non-finite or negative one (clock trouble) is ignored."""
        if math.isfinite(delay_s) and delay_s >= 0.0:
            self._samples.append(float(delay_s))

    def __len__(self) -> int:
        return len(self._samples)

    def estimate(self) -> float | None:
        """The delay to plan with, or None before the first measurement."""
        if not self._samples:
            return None
        return float(np.percentile(np.fromiter(self._samples, float), self.percentile)) + self.margin_s
