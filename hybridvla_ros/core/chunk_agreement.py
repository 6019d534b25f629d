"""A confidence for policies that report none: how well successive chunks agree over the same time slots.

A policy that is sure of what to do predicts nearly the same targets for a moment in time each
time it is asked; one that is guessing changes its mind. :class:`ChunkAgreement` keeps the last
chunk (absolute targets on their time base); for the next one it takes the time slots both cover,
the previous chunk linearly interpolated at the new chunk's step times, and measures the
disagreement per slot as the largest joint difference in units of ``scale`` (per joint; e.g.
``max_velocity * period * k``: the distance the joint may move in k periods). The confidence is
``0.5 ** (mean disagreement)``: 1 when they agree exactly, 0.5 at one ``scale`` of disagreement,
towards 0 beyond. No overlap (the first chunk, or one after a gap longer than the last chunk):
no confidence (None). numpy only.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class ChunkAgreement:
    """Confidence in [0, 1] from the agreement of each chunk with the one before it.

    ``scale`` (D,): per joint, the disagreement that halves the confidence (positive, same units
    as the actions); ``min_overlap``: fewer shared slots than this give no confidence.
    """

    def __init__(self, scale: Sequence[float] | np.ndarray, min_overlap: int = 1) -> None:
        s = np.asarray(scale, dtype=np.float64).reshape(-1)
        if s.size < 1 or not np.all(np.isfinite(s)) or np.any(s <= 0):
            raise ValueError(f"scale: expected positive finite numbers, got {s.tolist()}")
        if min_overlap < 1:
            raise ValueError(f"min_overlap: must be >= 1, got {min_overlap}")
        self.scale = s
        self.min_overlap = int(min_overlap)
        self._prev: tuple[np.ndarray, float, float] | None = None  # actions (T, D), start_s, period_s
        self.last_disagreement: float | None = None  # mean over shared slots, in units of scale

    def reset(self) -> None:
        """Forget the last chunk (a new episode: the next chunk has nothing to agree with)."""
        self._prev = None
        self.last_disagreement = None

    def update(self, actions: np.ndarray, start_s: float, step_period_s: float) -> float | None:
        """Confidence of ``actions`` (T, D) (target k at ``start_s + k * step_period_s``) from its
        agreement with the previous chunk; None without enough shared slots. Keeps it for the next.
        ValueError for a malformed chunk (the previous one is kept)."""
        a = np.asarray(actions, dtype=np.float64)
        if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] != self.scale.size or not np.all(np.isfinite(a)):
            raise ValueError(f"actions: expected a finite (T, {self.scale.size}) array, got shape {a.shape}")
        if not (np.isfinite(start_s) and np.isfinite(step_period_s) and step_period_s > 0):
            raise ValueError(f"start_s {start_s!r} / step_period_s {step_period_s!r}: finite, period > 0")
        prev, self._prev = self._prev, (a.copy(), float(start_s), float(step_period_s))
        self.last_disagreement = None
        if prev is None:
            return None
        p_actions, p_start, p_period = prev
        times = start_s + np.arange(a.shape[0]) * step_period_s                       # (T,)
        p_times = p_start + np.arange(p_actions.shape[0]) * p_period                   # (T',)
        eps = 1e-9 * max(1.0, abs(start_s))
        shared = (times >= p_times[0] - eps) & (times <= p_times[-1] + eps)           # (T,)
        if int(shared.sum()) < self.min_overlap:
            return None
        t = np.clip(times[shared], p_times[0], p_times[-1])                            # (S,)
        if p_actions.shape[0] == 1:
            p_at = np.repeat(p_actions, t.size, axis=0)                                 # (S, D)
        else:
            p_at = np.stack([np.interp(t, p_times, p_actions[:, j]) for j in range(a.shape[1])], axis=1)  # (S, D)
        per_slot = np.max(np.abs(a[shared] - p_at) / self.scale, axis=1)              # (S,)
        self.last_disagreement = float(per_slot.mean())
        return float(0.5 ** self.last_disagreement)
