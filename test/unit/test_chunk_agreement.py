"""core/chunk_agreement.py: confidence from the disagreement of successive chunks over shared time slots."""
from __future__ import annotations

import numpy as np
import pytest

from hybridvla_ros.core.chunk_agreement import ChunkAgreement


def _line(start_s: float, period: float, steps: int, slope: float, offset: float = 0.0) -> np.ndarray:
    t = start_s + np.arange(steps) * period
    return np.stack([slope * t + offset, -slope * t], axis=1)  # (T, 2)


def test_first_chunk_has_no_confidence_then_agreement_is_one() -> None:
    agree = ChunkAgreement([0.1, 0.1])
    assert agree.update(_line(0.0, 0.02, 10, 1.0), 0.0, 0.02) is None
    # the same trajectory, asked again 4 periods later: the shared slots agree exactly
    assert agree.update(_line(0.08, 0.02, 10, 1.0), 0.08, 0.02) == pytest.approx(1.0)
    assert agree.last_disagreement == pytest.approx(0.0, abs=1e-12)


def test_disagreement_of_one_scale_halves_the_confidence_and_more_lowers_it() -> None:
    agree = ChunkAgreement([0.1, 0.2])
    agree.update(_line(0.0, 0.02, 10, 1.0), 0.0, 0.02)
    assert agree.update(_line(0.04, 0.02, 10, 1.0, offset=0.1), 0.04, 0.02) == pytest.approx(0.5)
    assert agree.update(_line(0.08, 0.02, 10, 1.0, offset=0.4), 0.08, 0.02) == pytest.approx(0.5 ** 3)


def test_only_shared_slots_count_and_periods_may_differ() -> None:
    agree = ChunkAgreement([0.1, 0.1])
    agree.update(_line(0.0, 0.02, 10, 1.0), 0.0, 0.02)            # covers 0 .. 0.18 s
    new = _line(0.1, 0.05, 10, 1.0)                                # 0.1 .. 0.55 s, same line at another period
    new[3:] += 5.0                                                 # beyond the old chunk's end: not compared
    assert agree.update(new, 0.1, 0.05) == pytest.approx(1.0)      # slots 0.10 and 0.15 agree


def test_no_overlap_gives_none_and_reset_forgets() -> None:
    agree = ChunkAgreement([0.1, 0.1], min_overlap=2)
    agree.update(_line(0.0, 0.02, 5, 1.0), 0.0, 0.02)              # 0 .. 0.08
    assert agree.update(_line(0.08, 0.02, 5, 1.0), 0.08, 0.02) is None  # one shared slot < 2
    assert agree.update(_line(1.0, 0.02, 5, 1.0), 1.0, 0.02) is None    # after a gap
    agree.reset()
    assert agree.update(_line(1.02, 0.02, 5, 1.0), 1.02, 0.02) is None


def test_malformed_input_is_refused() -> None:
    with pytest.raises(ValueError):
        ChunkAgreement([0.1, 0.0])
    agree = ChunkAgreement([0.1, 0.1])
    for bad in (np.zeros((3, 3)), np.full((3, 2), np.nan), np.zeros(2)):
        with pytest.raises(ValueError):
            agree.update(bad, 0.0, 0.02)
    with pytest.raises(ValueError):
        agree.update(np.zeros((3, 2)), 0.0, 0.0)
