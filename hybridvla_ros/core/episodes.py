"""Episode accounting of a closed-loop evaluation (ROS-free): what one episode did, the summary, plots.

The ROS side (:mod:`hybridvla_ros.evaluate`) hears the graph and cuts the recording into
episodes; everything that turns those numbers into results lives here, tested on its own.

Latency stages of one control decision, from the frame's stamp to the first command
derived from it (all send times are DDS source timestamps on one machine's clock):

- ``sync``: camera stamp -> synchronized observation sent (transport + waiting for joints);
- ``inference_wait``: observation sent -> chunk sent, minus the model (queueing,
  preprocessing, message building);
- ``model``: the policy's own forward time;
- ``action_path``: chunk sent -> first command from it (buffer, handoff, safety filter,
  and the wait for the next control tick).

Their sum is compared with the embodiment's latency budget (the monitor's
``latency_budget_s``, 50 ms for a 20 Hz decision rate).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

STAGES = ("sync", "inference_wait", "model", "action_path")

__all__ = ["STAGES", "EpisodeResult", "stage_latencies", "summarize", "plot_evaluation"]


@dataclass
class EpisodeResult:
    """One evaluated episode."""

    index: int
    scene: str
    reset_message: str                      # what sim_robot/reset answered (seed, scene)
    success: bool
    time_to_success_s: float                # NaN when not successful
    duration_s: float
    final_error_m: float                    # task error at the end (NaN if never heard)
    handoffs: int                           # pauses / escalations that asked the human for help
    human_override_s: float                 # time the human drove
    corrections: int                        # corrections the recorder stored in the episode
    safety_interventions: int               # commands the safety filter modified
    estops: int                             # e-stop trips
    commands: int
    control_rate_hz: float
    stage_latency_ms: dict[str, float] = field(default_factory=dict)  # p50 per stage (+ "total")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return dataclasses.asdict(self)


def stage_latencies(stage_times: Iterable[Sequence[float]]) -> dict[str, np.ndarray]:
    """Per-stage latencies (s) from (frame stamp, observation sent, chunk sent, model latency,
    first command sent) tuples; rows with a negative stage (clock noise) are dropped."""
    rows = np.asarray([tuple(r) for r in stage_times], dtype=np.float64).reshape(-1, 5)  # (N, 5)
    stamp, obs, chunk, model, cmd = rows.T
    stages = np.stack([obs - stamp, chunk - obs - model, model, cmd - chunk], axis=1)  # (N, 4)
    ok = np.all(np.isfinite(stages), axis=1) & np.all(stages >= -1e-4, axis=1)
    stages = np.clip(stages[ok], 0.0, None)
    out = {name: stages[:, i] for i, name in enumerate(STAGES)}
    out["total"] = stages.sum(axis=1)
    return out


def _p(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if values.size else math.nan


def summarize(episodes: Sequence[EpisodeResult], stage_times: Iterable[Sequence[float]],
              latency_budget_s: float, control_rate_target_hz: float) -> dict[str, Any]:
    """Totals and rates over ``episodes`` plus the latency breakdown against the budget.
    Raises ValueError for a non-positive budget or target rate."""
    if not latency_budget_s > 0 or not control_rate_target_hz > 0:
        raise ValueError(f"latency_budget_s and control_rate_target_hz must be > 0, got "
                         f"{latency_budget_s!r}, {control_rate_target_hz!r}")
    n = len(episodes)
    succ = [e for e in episodes if e.success]
    lat = stage_latencies(stage_times)
    breakdown = {}
    for name in (*STAGES, "total"):
        p50 = _p(lat[name], 50) * 1e3
        breakdown[name] = {"p50_ms": p50, "p99_ms": _p(lat[name], 99) * 1e3,
                           "budget_share_p50": p50 / (latency_budget_s * 1e3) if math.isfinite(p50) else math.nan}
    rates = np.asarray([e.control_rate_hz for e in episodes if math.isfinite(e.control_rate_hz)])
    errors = np.asarray([e.final_error_m for e in episodes if math.isfinite(e.final_error_m)])
    return {
        "episodes": n,
        "success_rate": len(succ) / n if n else math.nan,
        "successes": len(succ),
        "final_error_m_median": float(np.median(errors)) if errors.size else math.nan,
        "time_to_success_s_median": float(np.median([e.time_to_success_s for e in succ])) if succ else math.nan,
        "handoffs": sum(e.handoffs for e in episodes),
        "human_override_s": float(sum(e.human_override_s for e in episodes)),
        "corrections": sum(e.corrections for e in episodes),
        "safety_interventions": sum(e.safety_interventions for e in episodes),
        "estops": sum(e.estops for e in episodes),
        "control_rate_target_hz": control_rate_target_hz,
        "control_rate_hz_median": float(np.median(rates)) if rates.size else math.nan,
        "latency_budget_ms": latency_budget_s * 1e3,
        "latency_samples": int(lat["total"].size),
        "latency_ms": breakdown,
        "within_budget_fraction": float(np.mean(lat["total"] <= latency_budget_s)) if lat["total"].size else math.nan,
    }


def plot_evaluation(episodes: Sequence[EpisodeResult], summary: dict[str, Any], path: str, title: str = "") -> None:
    """Write a 3-panel PNG: final error per episode (success marked), time split by who drove,
    and the p50 latency of each stage stacked against the budget."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    idx = np.arange(len(episodes))
    err = np.asarray([e.final_error_m for e in episodes], dtype=float) * 1e3
    colors = ["tab:green" if e.success else "tab:red" for e in episodes]
    axes[0].bar(idx, err, color=colors)
    for ax in axes[:2]:
        ax.set_xticks(idx)
    axes[0].set_xlabel("episode")
    axes[0].set_ylabel("final task error (mm)")
    axes[0].set_title(f"success {summary['successes']}/{summary['episodes']} (green)")
    human = np.asarray([e.human_override_s for e in episodes])
    total = np.asarray([e.duration_s for e in episodes])
    axes[1].bar(idx, total - human, label="policy", color="tab:blue")
    axes[1].bar(idx, human, bottom=total - human, label="human (teleop)", color="tab:orange")
    axes[1].set_xlabel("episode")
    axes[1].set_ylabel("seconds")
    axes[1].set_title("who drove")
    axes[1].legend(fontsize=8)
    bottom = 0.0
    for name, color in zip(STAGES, ("tab:gray", "tab:purple", "tab:blue", "tab:cyan")):
        v = summary["latency_ms"][name]["p50_ms"]
        v = 0.0 if not math.isfinite(v) else v
        axes[2].bar([0], [v], bottom=bottom, label=f"{name} {v:.1f} ms", color=color, width=0.5)
        bottom += v
    axes[2].axhline(summary["latency_budget_ms"], color="k", linestyle="--",
                    label=f"budget {summary['latency_budget_ms']:.0f} ms")
    axes[2].set_xticks([])
    axes[2].set_ylabel("frame stamp -> command, p50 (ms)")
    axes[2].set_title("latency per stage")
    axes[2].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
