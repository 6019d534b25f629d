"""Episode accounting of the closed-loop evaluation: summary numbers and the latency split."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from hybridvla_ros.core.episodes import STAGES, EpisodeResult, plot_evaluation, stage_latencies, summarize


def episode(i: int, success: bool, err: float, human_s: float = 0.0, tts: float = math.nan) -> EpisodeResult:
    return EpisodeResult(index=i, scene="nominal", reset_message=f"episode {i}", success=success,
                         time_to_success_s=tts, duration_s=10.0, final_error_m=err, handoffs=int(human_s > 0),
                         human_override_s=human_s, corrections=int(human_s * 10), safety_interventions=3,
                         estops=0, commands=500, control_rate_hz=50.0)


def test_stage_latencies_split_the_frame_to_command_time() -> None:
    # frame at 0, observation sent at 4 ms, chunk at 20 ms after a 6 ms model, first command at 35 ms
    lat = stage_latencies([(0.0, 0.004, 0.020, 0.006, 0.035), (1.0, 1.003, 1.012, 0.005, 1.030)])
    assert lat["sync"] == pytest.approx([0.004, 0.003])
    assert lat["inference_wait"] == pytest.approx([0.010, 0.004])
    assert lat["model"] == pytest.approx([0.006, 0.005])
    assert lat["action_path"] == pytest.approx([0.015, 0.018])
    assert lat["total"] == pytest.approx([0.035, 0.030])


def test_rows_with_a_stage_running_backwards_are_dropped() -> None:
    lat = stage_latencies([(0.0, -0.01, 0.02, 0.005, 0.03), (0.0, 0.004, 0.02, 0.005, 0.03)])
    assert lat["total"].size == 1
    assert stage_latencies([])["total"].size == 0


def test_summary_counts_success_human_time_and_budget_share() -> None:
    eps = [episode(0, True, 0.01, tts=3.0), episode(1, False, 0.12, human_s=4.0), episode(2, True, 0.005, tts=5.0)]
    rows = [(0.0, 0.004, 0.020, 0.006, 0.035)] * 3 + [(0.0, 0.004, 0.020, 0.006, 0.070)]
    s = summarize(eps, rows, latency_budget_s=0.05, control_rate_target_hz=50.0)
    assert s["episodes"] == 3 and s["successes"] == 2 and s["success_rate"] == pytest.approx(2 / 3)
    assert s["time_to_success_s_median"] == pytest.approx(4.0)
    assert s["final_error_m_median"] == pytest.approx(0.01)
    assert s["human_override_s"] == pytest.approx(4.0) and s["handoffs"] == 1 and s["corrections"] == 40
    assert s["within_budget_fraction"] == pytest.approx(0.75)
    assert s["latency_ms"]["total"]["p50_ms"] == pytest.approx(35.0)
    assert s["latency_ms"]["total"]["budget_share_p50"] == pytest.approx(0.7)
    assert set(s["latency_ms"]) == {*STAGES, "total"}
    json.dumps(s)  # JSON-ready


def test_summary_of_nothing_is_nan_not_a_crash_and_bad_budget_is_refused() -> None:
    s = summarize([], [], 0.05, 50.0)
    assert s["episodes"] == 0 and math.isnan(s["success_rate"]) and math.isnan(s["latency_ms"]["model"]["p50_ms"])
    with pytest.raises(ValueError, match="latency_budget_s"):
        summarize([], [], 0.0, 50.0)


def test_plot_is_written(tmp_path) -> None:
    eps = [episode(0, True, 0.01, tts=3.0), episode(1, False, 0.12, human_s=4.0)]
    s = summarize(eps, [(0.0, 0.004, 0.020, 0.006, 0.035)], 0.05, 50.0)
    path = tmp_path / "eval.png"
    plot_evaluation(eps, s, str(path), title="t")
    assert path.stat().st_size > 10_000
    assert np.isfinite(s["latency_ms"]["total"]["p50_ms"])
