"""core.cameras: the nearest frame of each extra camera to the anchor frame, stale cameras left out and counted."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridvla_ros.core.cameras import CameraSet, CameraSetConfig


def _set(**kw: float) -> CameraSet[str]:
    return CameraSet(CameraSetConfig(names=("wrist", "low"), **kw))


def test_each_observation_takes_the_nearest_frame_of_each_camera() -> None:
    cams = _set(max_skew_s=0.05)
    for k in range(10):  # wrist at 30 Hz, low at 10 Hz, out of phase with each other
        cams.add("wrist", 1.0 + k / 30, f"w{k}", now_s=1.0 + k / 30 + 0.01)
    for k in range(4):
        cams.add("low", 1.005 + k / 10, f"l{k}", now_s=1.3)
    got = cams.nearest(1.11)
    assert got["wrist"].frame == "w3" and got["wrist"].skew_s == pytest.approx(0.01)
    assert got["low"].frame == "l1" and got["low"].skew_s == pytest.approx(0.005)
    assert list(got) == ["wrist", "low"]
    stats = cams.stats()
    assert stats["wrist_used"] == stats["low_used"] == 1 and stats["wrist_stale"] == 0
    assert stats["low_skew_p50_s"] == pytest.approx(0.005)


def test_a_camera_that_stops_is_left_out_and_counted_stale_while_the_others_go_on() -> None:
    cams = _set(max_skew_s=0.05)
    assert cams.nearest(1.0) == {}  # nothing received yet: both stale
    assert "no frame received yet" in cams.problems(1.0)[0]
    for k in range(30):
        t = 1.0 + k / 30
        cams.add("wrist", t, f"w{k}", now_s=t + 0.01)
        if k < 10:
            cams.add("low", t, f"l{k}", now_s=t + 0.01)
    got = cams.nearest(1.0 + 29 / 30)
    assert set(got) == {"wrist"}
    stats = cams.stats()
    assert (stats["low_stale"], stats["wrist_stale"], stats["wrist_used"]) == (2, 1, 1)
    problems = cams.problems(2.0)
    assert problems == ["camera low: left out of 1 observations (last frame arrived 0.7 s ago)"]
    assert cams.problems(2.1) == []  # only what happened since the last report


def test_bad_stamps_cost_only_their_frame() -> None:
    cams = _set(max_skew_s=0.05, max_age_s=0.3, max_stamp_future_s=0.1)
    assert cams.add("wrist", 1.0, "a", now_s=1.01)[0]
    for stamp, key in [(math.nan, "bad_stamp"), (1.5, "future_stamp"), (0.5, "too_old"), (1.0, "out_of_order"),
                       (0.99, "out_of_order")]:
        ok, reason = cams.add("wrist", stamp, "bad", now_s=1.02)
        assert not ok and reason.startswith(key + ":"), reason
    assert cams.drop("wrist", "encoding 'yuv9' unsupported") == (False, "image: wrist: encoding 'yuv9' unsupported")
    assert cams.add("wrist", 1.03, "b", now_s=1.04)[0]
    assert cams.nearest(1.03)["wrist"].frame == "b"
    stats = cams.stats()
    assert stats["wrist_frames_in"] == 8 and stats["wrist_accepted"] == 2
    assert (stats["wrist_rejected_out_of_order"], stats["wrist_rejected_image"]) == (2, 1)
    assert "camera wrist: bad_stamp 1, future_stamp 1, too_old 1, out_of_order 2, image 1" in cams.problems(1.1)[0]
    with pytest.raises(KeyError):
        cams.add("nose", 1.1, "x", now_s=1.1)  # a wiring bug, not a message


def test_a_clock_that_goes_back_forgets_the_frames_in_its_future() -> None:
    cams = _set()
    cams.add("wrist", 100.0, "old", now_s=100.01)
    assert cams.add("wrist", 1.0, "new", now_s=1.01)[0]  # a sim reset: the node's clock went back too
    assert cams.nearest(1.0)["wrist"].frame == "new"


@pytest.mark.parametrize("field", ["max_skew_s", "max_age_s", "max_stamp_future_s"])
def test_config_refuses_bad_values(field: str) -> None:
    for bad in (0.0, -1.0, math.inf, "0.1", True):
        with pytest.raises(ValueError, match=field):
            CameraSetConfig(names=("wrist",), **{field: bad})
    with pytest.raises(ValueError, match="unique"):
        CameraSetConfig(names=("wrist", "wrist"))


@settings(max_examples=60, deadline=None)
@given(stamps=st.lists(st.floats(0.0, 10.0, allow_nan=False), min_size=1, max_size=40),
       anchor=st.floats(0.0, 10.0, allow_nan=False))
def test_the_frame_taken_is_the_nearest_kept_one_within_the_bound(stamps: list[float], anchor: float) -> None:
    cams = CameraSet[float](CameraSetConfig(names=("wrist",), max_skew_s=0.05, max_age_s=100.0))
    kept = []
    for s in stamps:
        if cams.add("wrist", s, s, now_s=10.0)[0]:
            kept.append(s)
    kept = kept[-16:]  # the history kept per camera
    got = cams.nearest(anchor)
    best = min(kept, key=lambda s: abs(s - anchor))
    if abs(best - anchor) <= 0.05:
        assert abs(got["wrist"].frame - anchor) == pytest.approx(abs(best - anchor))
    else:
        assert got == {}
    assert np.all(np.diff(kept) > 0)  # accepted frames are strictly in order


def test_a_known_clock_offset_is_added_to_every_frames_stamp() -> None:
    cams = CameraSet[str](CameraSetConfig(names=("wrist",), stamp_offset_s=0.5))
    assert cams.add("wrist", 0.5, "a", now_s=1.01)[0]  # a camera 0.5 s behind this node's clock
    assert cams.nearest(1.0)["wrist"].stamp_s == pytest.approx(1.0)
    with pytest.raises(ValueError, match="stamp_offset_s"):
        CameraSetConfig(names=("wrist",), stamp_offset_s=math.nan)
