"""The robot's other cameras: the nearest frame of each to the anchor camera's frame.

One camera (the embodiment's ``camera_name``) stamps every observation; the synchronizer
pairs its frames with joint state (:mod:`hybridvla_ros.core.sync`). Every other camera
(``extra_cameras``: ALOHA's cam_low and wrists, a Franka's wrist camera) runs at its own rate
and phase, so its frames are kept here, a short history per camera, and each observation takes
the nearest frame of each camera within ``max_skew_s`` of the anchor's stamp. A camera with no
frame that near (stopped, slow, or its stamps off) is left out of that observation and counted
as ``stale``: the observation still goes out, and a policy that reads that camera refuses it
(the action buffer holds) while a policy that does not goes on.

Each frame's stamp is checked against the node's clock as the synchronizer checks its inputs
(non-finite, stamped in the future, too old, not after the camera's previous frame), and a
rejected frame costs only itself. Frames are whatever the caller stores (decoded images);
numpy only, never raises on message content.
"""
from __future__ import annotations

import math
import numbers
from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

__all__ = ["CameraSetConfig", "CameraSet", "NearestFrame", "CAMERA_REJECT_REASONS"]

Frame = TypeVar("Frame")

CAMERA_REJECT_REASONS: tuple[str, ...] = ("bad_stamp", "future_stamp", "too_old", "out_of_order", "image")
_SKEW_WINDOW = 100  # observations the per-camera skew percentiles are computed over
_KEEP = 16  # frames kept per camera (half a second at 30 Hz): the anchor waits at most max_age_s for joints


@dataclass(frozen=True)
class CameraSetConfig:
    """Which cameras ride along with the anchor and how near their frames must be.

    ValueError from the constructor, naming the field, for empty or duplicate names or a time
    that is not a positive finite number.
    """

    names: tuple[str, ...]          # the extra cameras, in the embodiment file's order
    max_skew_s: float = 0.05        # a frame further than this from the anchor's stamp is not used
    max_age_s: float = 0.3          # frames older than this when they arrive are dropped (too_old)
    max_stamp_future_s: float = 0.1  # frames stamped further ahead of the node's clock are dropped
    stamp_offset_s: float = 0.0     # added to every frame's stamp (the cameras' clock's known offset)

    def __post_init__(self) -> None:
        names = (self.names,) if isinstance(self.names, str) else tuple(self.names)
        if not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
            raise ValueError(f"names: camera names must be unique non-empty strings, got {list(names)}")
        object.__setattr__(self, "names", names)
        for field in ("max_skew_s", "max_age_s", "max_stamp_future_s"):
            value = getattr(self, field)
            x = _finite(value)
            if x is None or x <= 0:
                raise ValueError(f"{field} must be finite and > 0, got {value!r}")
            object.__setattr__(self, field, x)
        offset = _finite(self.stamp_offset_s)
        if offset is None:
            raise ValueError(f"stamp_offset_s must be a finite number, got {self.stamp_offset_s!r}")
        object.__setattr__(self, "stamp_offset_s", offset)


@dataclass(frozen=True)
class NearestFrame(Generic[Frame]):
    """One extra camera's frame chosen for an observation."""

    frame: Frame
    stamp_s: float
    skew_s: float  # |frame stamp - anchor stamp|


class _Camera(Generic[Frame]):
    def __init__(self) -> None:
        self.frames: deque[tuple[float, Frame]] = deque(maxlen=_KEEP)  # (stamp, frame), stamps increasing
        self.counts: dict[str, int] = {"frames_in": 0, "accepted": 0, "used": 0, "stale": 0,
                                       **{f"rejected_{k}": 0 for k in CAMERA_REJECT_REASONS}}
        self.skews_s: deque[float] = deque(maxlen=_SKEW_WINDOW)
        self.last_arrival_s: float | None = None


class CameraSet(Generic[Frame]):
    """Frames of the extra cameras, and the nearest of each to an anchor stamp."""

    def __init__(self, config: CameraSetConfig) -> None:
        self.config = config
        self._cams: dict[str, _Camera[Frame]] = {name: _Camera() for name in config.names}
        self._reported: dict[str, dict[str, int]] = {name: {} for name in config.names}

    @property
    def names(self) -> tuple[str, ...]:
        return self.config.names

    def add(self, camera: str, stamp_s: float, frame: Frame, now_s: float) -> tuple[bool, str]:
        """Keep one frame of ``camera`` (its stamp corrected by stamp_offset_s): (True, '') or
        (False, '<key>: <detail>') with key one of CAMERA_REJECT_REASONS (counted). KeyError for a camera
        not in the config (a wiring bug)."""
        cam = self._cams[camera]
        cam.counts["frames_in"] += 1
        stamp = _finite(stamp_s)
        now = _finite(now_s)
        if stamp is not None:
            stamp += self.config.stamp_offset_s
        if stamp is None or now is None:
            return self._reject(cam, "bad_stamp", f"{camera}: stamp {stamp_s!r} or clock {now_s!r} is not finite")
        cam.last_arrival_s = now
        if stamp > now + self.config.max_stamp_future_s:
            return self._reject(cam, "future_stamp", f"{camera}: frame stamped {stamp - now:.3f} s ahead of this "
                                f"node's clock (max_stamp_future_s={self.config.max_stamp_future_s})")
        if now - stamp > self.config.max_age_s:
            return self._reject(cam, "too_old", f"{camera}: frame {now - stamp:.3f} s old on arrival "
                                f"(max_age_s={self.config.max_age_s})")
        if cam.frames and cam.frames[-1][0] > now + self.config.max_stamp_future_s:
            cam.frames.clear()  # this node's clock went back past them (a sim reset): they mean nothing now
        if cam.frames and stamp <= cam.frames[-1][0]:
            return self._reject(cam, "out_of_order", f"{camera}: frame stamp {stamp!r} is not after its previous "
                                f"frame {cam.frames[-1][0]!r}")
        cam.frames.append((stamp, frame))
        cam.counts["accepted"] += 1
        return True, ""

    def drop(self, camera: str, detail: str) -> tuple[bool, str]:
        """Count a frame of ``camera`` that could not be read (a bad encoding): (False, 'image: ...')."""
        cam = self._cams[camera]
        cam.counts["frames_in"] += 1
        return self._reject(cam, "image", f"{camera}: {detail}")

    @staticmethod
    def _reject(cam: _Camera[Frame], key: str, detail: str) -> tuple[bool, str]:
        cam.counts[f"rejected_{key}"] += 1
        return False, f"{key}: {detail}"

    def nearest(self, anchor_stamp_s: float) -> dict[str, NearestFrame[Frame]]:
        """The nearest kept frame of each camera within max_skew_s of ``anchor_stamp_s``, by camera
        name in config order; a camera without one is left out and counted ``stale``."""
        out: dict[str, NearestFrame[Frame]] = {}
        anchor = _finite(anchor_stamp_s)
        for name, cam in self._cams.items():
            best: tuple[float, float, Frame] | None = None
            if anchor is not None:
                for stamp, frame in cam.frames:
                    skew = abs(stamp - anchor)
                    if best is None or skew < best[0]:
                        best = (skew, stamp, frame)
            if best is None or best[0] > self.config.max_skew_s:
                cam.counts["stale"] += 1
                continue
            cam.counts["used"] += 1
            cam.skews_s.append(best[0])
            out[name] = NearestFrame(frame=best[2], stamp_s=best[1], skew_s=best[0])
        return out

    def reset(self) -> None:
        """Forget every kept frame (the clock jumped back); keep the counters."""
        for cam in self._cams.values():
            cam.frames.clear()

    def stats(self) -> dict[str, int | float]:
        """Per camera ``<camera>_<counter>`` totals (frames_in, accepted, used, stale, rejected_<key>)
        and ``<camera>_skew_p50_s`` / ``<camera>_skew_max_s`` over its last 100 uses (NaN before)."""
        out: dict[str, int | float] = {}
        for name, cam in self._cams.items():
            out.update({f"{name}_{k}": v for k, v in cam.counts.items()})
            skews = np.fromiter(cam.skews_s, dtype=np.float64)
            out[f"{name}_skew_p50_s"] = float(np.median(skews)) if skews.size else math.nan
            out[f"{name}_skew_max_s"] = float(skews.max()) if skews.size else math.nan
        return out

    def problems(self, now_s: float) -> list[str]:
        """What went wrong per camera since the previous call, one phrase each, for the diagnostics."""
        out: list[str] = []
        now = _finite(now_s)
        for name, cam in self._cams.items():
            before = self._reported[name]
            delta = {k: v - before.get(k, 0) for k, v in cam.counts.items()}
            self._reported[name] = dict(cam.counts)
            parts = [f"{k[len('rejected_'):]} {n}" for k, n in delta.items() if k.startswith("rejected_") and n]
            if delta["stale"]:
                if cam.last_arrival_s is None:
                    why = "no frame received yet"
                elif now is not None and now - cam.last_arrival_s > 2 * self.config.max_skew_s:
                    why = f"last frame arrived {now - cam.last_arrival_s:.1f} s ago"
                else:
                    why = f"frames further than max_camera_skew_s={self.config.max_skew_s} from the anchor's"
                parts.append(f"left out of {delta['stale']} observations ({why})")
            if parts:
                out.append(f"camera {name}: {', '.join(parts)}")
        return out


def _finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    x = float(value)
    return x if math.isfinite(x) else None

