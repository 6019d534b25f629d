"""The confidence AUROC of the held-out report: right on hand-made cases."""
from __future__ import annotations

import math

import numpy as np
import pytest

from hybridvla_ros.model.train import auroc, confidence_auroc


def test_auroc_perfect_and_inverted() -> None:
    labels = np.array([False, False, True, True])
    assert auroc(np.array([0.1, 0.2, 0.8, 0.9]), labels) == 1.0
    assert auroc(np.array([0.9, 0.8, 0.2, 0.1]), labels) == 0.0


def test_auroc_ties_count_one_half() -> None:
    assert auroc(np.zeros(6), np.array([0, 1, 0, 1, 1, 0], dtype=bool)) == 0.5
    # positives {0.5, 0.9} vs negatives {0.5, 0.1}: pairs 0.5/0.5 (tie), 0.5>0.1, 0.9>0.5, 0.9>0.1 -> 3.5 / 4
    assert auroc(np.array([0.5, 0.9, 0.5, 0.1]), np.array([True, True, False, False])) == pytest.approx(3.5 / 4)


def test_auroc_of_unrelated_scores_is_about_one_half() -> None:
    rng = np.random.default_rng(0)
    assert auroc(rng.normal(size=20000), rng.random(20000) < 0.3) == pytest.approx(0.5, abs=0.02)


def test_auroc_matches_pair_counting() -> None:
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 5, 60).astype(float)  # many ties
    labels = rng.random(60) < 0.4
    pos, neg = scores[labels], scores[~labels]
    pairs = (pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()
    assert auroc(scores, labels) == pytest.approx(pairs / (len(pos) * len(neg)))


def test_auroc_is_nan_with_one_class_and_rejects_mismatched_shapes() -> None:
    assert math.isnan(auroc(np.array([0.1, 0.2]), np.array([True, True])))
    with pytest.raises(ValueError, match="shapes"):
        auroc(np.zeros(3), np.zeros(2, dtype=bool))


def test_confidence_auroc_low_confidence_flags_high_error() -> None:
    error = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    assert confidence_auroc(error, 1.0 - error) == 1.0      # less confident where the error is larger
    assert confidence_auroc(error, error) == 0.0            # confident exactly where it is wrong
    assert confidence_auroc(error, np.full(6, 0.7)) == 0.5  # one confidence for all: no information
