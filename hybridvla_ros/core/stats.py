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


def wilson_interval(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval (95 % by default) of a success rate; (0, 1) when there are no trials."""
    if trials <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must be in [0, {trials}], got {successes!r}")
    p = successes / trials
    denom = 1.0 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * float(np.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))) / denom
    return max(0.0, centre - half), min(1.0, centre + half)
