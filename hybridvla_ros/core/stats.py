"""Small statistics for monitoring and benchmarks (ROS-free)."""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def percentiles(values: Iterable[float], qs: tuple[float, ...] = (50.0, 99.0)) -> dict[str, float]:
    """{'p50': ..., 'p99': ..., 'n': count}; NaN for each percentile when there are no values."""
    arr = np.asarray(list(values), dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    out: dict[str, float] = {"n": float(arr.size)}
    for q in qs:
        out[f"p{q:g}"] = float(np.percentile(arr, q)) if arr.size else float("nan")
    return out


def rate_and_jitter(times_s: Iterable[float], expected_period_s: float) -> dict[str, float]:
    """Achieved rate (Hz) and period jitter |dt - expected| (p50/p99, seconds) of event times."""
    t = np.sort(np.asarray(list(times_s), dtype=np.float64))
    if t.size < 2:
        return {"rate_hz": float("nan"), "jitter_p50_s": float("nan"), "jitter_p99_s": float("nan"),
                "period_p50_s": float("nan"), "n": float(t.size)}
    dt = np.diff(t)
    jitter = np.abs(dt - expected_period_s)
    return {
        "rate_hz": float((t.size - 1) / (t[-1] - t[0])),
        "period_p50_s": float(np.median(dt)),
        "jitter_p50_s": float(np.percentile(jitter, 50)),
        "jitter_p99_s": float(np.percentile(jitter, 99)),
        "n": float(t.size),
    }
