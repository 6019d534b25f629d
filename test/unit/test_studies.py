"""The README's studies: numbers they report come out of real runs of our parts."""
from __future__ import annotations

import json

import pytest

from hybridvla_ros.params.embodiment import EMBODIMENTS
from hybridvla_ros.studies import main as study_main
from hybridvla_ros.studies.safety_stress import REGIMES, stress_embodiment


@pytest.mark.parametrize("regime", REGIMES)
@pytest.mark.parametrize("embodiment", EMBODIMENTS)
def test_random_actions_never_leave_the_limits(embodiment: str, regime: str) -> None:
    r = stress_embodiment(embodiment, n=300, seed=1, regime=regime)
    assert r["violations_after_filter"] == {"position": 0, "velocity": 0, "acceleration": 0}
    assert r["modified_fraction"] > 0.5  # random requests are mostly unsafe as asked
    assert r["limit_fraction"]["nan"] > 0 and r["limit_fraction"]["shape"] > 0


def test_safety_study_writes_json_and_plot(tmp_path, capsys) -> None:
    out = tmp_path / "s"
    assert study_main(["safety", "--n", "100", "--embodiments", "franka", "hello", "--out", str(out)]) == 0
    rows = json.loads((out / "safety_stress.json").read_text())
    assert {(r["embodiment"], r["regime"]) for r in rows} == {(e, g) for e in ("franka", "hello") for g in REGIMES}
    assert (out / "safety_stress.png").stat().st_size > 10_000
    assert "violations after the filter" in capsys.readouterr().out


def test_unknown_study_is_refused() -> None:
    assert study_main(["nope"]) == 2
