"""Monitoring without ROS: rates and levels from synthetic event streams, task statistics, markers, image."""
from __future__ import annotations

import dataclasses
import math
import os

import numpy as np
import pytest

from hybridvla_ros.core.monitoring import (
    ESTOP_COLOUR,
    LINE_STRIP,
    MODE_COLOURS,
    TEXT_VIEW_FACING,
    EventWindow,
    GraphHealth,
    Level,
    ModeDisplay,
    MonitorConfig,
    SafetySample,
    annotate_image,
    distribution_shift,
    success_rate,
)
from hybridvla_ros.launch_description import default_config_dir
from hybridvla_ros.params import ParameterError, from_params, load_node_params
from hybridvla_ros.params.embodiment import EMBODIMENTS
from hybridvla_ros.params.monitor import MonitorParams

CONFIG = default_config_dir()
AUTONOMOUS, PAUSED, HUMAN_OVERRIDE, ESCALATED, CONSERVATIVE = range(5)


def params(embodiment: str = "franka", **overrides) -> MonitorParams:
    values = load_node_params(os.path.join(CONFIG, f"{embodiment}.yaml"), "monitor")
    # The shipped files expect every node of the full graph; these tests choose their own.
    values.pop("expected_nodes", None)
    values.update(overrides)
    return from_params(MonitorParams, values, "monitor")


def health(embodiment: str = "franka", **overrides) -> GraphHealth:
    return GraphHealth(params(embodiment, **overrides).monitor_config())


def feed(rate_hz: float, t0: float, t1: float, fn) -> float:
    """Call fn(t) at rate_hz from t0 to t1; returns the last time."""
    t = t0
    for t in np.arange(t0, t1, 1.0 / rate_hz):
        fn(float(t))
    return float(t)


# --------------------------------------------------------------------------- statistics
def test_event_window_rate_counts_only_the_window() -> None:
    w = EventWindow(window_s=2.0)
    feed(10.0, 0.0, 5.0, w.add)      # 10 Hz for 5 s
    feed(40.0, 5.0, 7.0, w.add)      # then 40 Hz: the 2 s window sees only this
    assert w.rate_hz(7.0) == pytest.approx(40.0, rel=0.02)
    assert w.silent_for(9.0) == pytest.approx(2.0 + 1 / 40, abs=0.03)
    assert math.isnan(EventWindow(1.0).rate_hz(0.0))


def test_success_rate_and_distribution_shift_statistics() -> None:
    assert success_rate([True, False, True, True]) == 0.75 and math.isnan(success_rate([]))
    mean, std = np.array([0.0, 1.0]), np.array([1.0, 2.0])
    rng = np.random.default_rng(0)
    inside = mean + std * rng.standard_normal((500, 2))
    assert distribution_shift(inside, mean, std) == pytest.approx([0.8, 0.8], abs=0.1)  # E|N(0,1)| = 0.798
    assert distribution_shift(inside + [0.0, 8.0], mean, std)[1] > 3.5


# --------------------------------------------------------------------------- sync
def test_sync_levels_from_rate_skew_and_silence() -> None:
    h = health()
    assert h.sync_status(0.0).level == Level.STALE  # expected, never heard
    t = feed(30.0, 0.0, 3.0, lambda t: h.on_observation(t, 0.002))
    st = h.sync_status(t)
    assert st.level == Level.OK and st.name == "sync" and st.diagnostic_name == "hybridvla: sync"
    assert float(dict(st.values)["observation rate (Hz)"]) == pytest.approx(30.0, rel=0.02)
    assert float(dict(st.values)["proprio skew p50 (ms)"]) == pytest.approx(2.0)

    h = health()
    t = feed(20.0, 0.0, 6.0, lambda t: h.on_observation(t, 0.002))   # 2/3 of 30 Hz
    assert h.sync_status(t).level == Level.WARN
    h = health()
    t = feed(10.0, 0.0, 6.0, lambda t: h.on_observation(t, 0.002))   # 1/3 of 30 Hz
    st = h.sync_status(t)
    assert st.level == Level.ERROR and "observation rate 10.0 Hz" in st.message

    h = health()
    t = feed(30.0, 0.0, 3.0, lambda t: h.on_observation(t, 0.010))   # skew above max_skew_s (6 ms)
    assert h.sync_status(t).level == Level.WARN and "skew" in h.sync_status(t).message
    assert h.sync_status(t + 1.0).level == Level.WARN          # still heard within stale_after_s (2 s)
    st = h.sync_status(t + 2.5)
    assert st.level == Level.STALE and "no observation for" in st.message


# --------------------------------------------------------------------------- inference
def chunks(h: GraphHealth, rate_hz: float, latency_s, confidence: float = 0.9, t1: float = 5.0) -> float:
    actions = np.zeros((16, 7))
    lat = iter(latency_s) if not np.isscalar(latency_s) else None
    return feed(rate_hz, 0.0, t1, lambda t: h.on_chunk(t, actions, next(lat) if lat else latency_s, confidence))


def test_inference_rate_latency_and_confidence_levels() -> None:
    p = params()
    expected = p.control_rate_hz / p.recompute_every  # franka: 50 / 5 = 10 Hz
    assert p.monitor_config().expected_chunk_rate_hz == expected == 10.0
    h = health()
    t = chunks(h, expected, 0.020)
    st = h.inference_status(t)
    assert st.level == Level.OK, st.message
    v = dict(st.values)
    assert float(v["latency p50 (ms)"]) == pytest.approx(20.0) and float(v["mean confidence"]) == pytest.approx(0.9)

    h = health()  # one chunk in 25 over the budget: p99 > 50 ms -> WARN, p50 fine
    t = chunks(h, expected, [0.080 if i % 25 == 0 else 0.020 for i in range(100)])
    st = h.inference_status(t)
    assert st.level == Level.WARN and "p99" in st.message

    h = health()  # always far above the budget -> ERROR
    t = chunks(h, expected, 0.150)
    assert h.inference_status(t).level == Level.ERROR

    h = health()
    t = chunks(h, expected, 0.020, confidence=0.05)
    st = h.inference_status(t)
    assert st.level == Level.WARN and "confidence" in st.message

    h = health()
    t = chunks(h, 0.7 * expected, 0.020)
    assert h.inference_status(t).level == Level.WARN
    assert h.inference_status(t + 3.0).level == Level.STALE


# --------------------------------------------------------------------------- action buffer
def test_action_buffer_levels_hold_and_rate_since_the_hold() -> None:
    h = health()
    h.on_buffer_status(0.0, True, "no chunk yet", 0, 0, 0)
    st = h.action_buffer_status(0.1)
    assert st.level == Level.WARN and "holding: no chunk yet" in st.message

    # 1 s held, then a steady 50 Hz stream: the rate counts only since the hold ended.
    feed(50.0, 0.0, 1.0, lambda t: h.on_buffer_status(t, True, "no chunk yet", 0, 0, 0))

    def step(t: float) -> None:
        h.on_policy_action(t, np.zeros(7))
        h.on_buffer_status(t, False, "", 10, 3, 1)

    t = feed(50.0, 1.0, 2.0, step)
    st = h.action_buffer_status(t)
    assert st.level == Level.OK, st.message
    v = dict(st.values)
    assert float(v["action rate (Hz)"]) == pytest.approx(50.0, rel=0.03)
    assert v["chunks rejected"] == "1" and v["depth"] == "10"

    h = health()

    def slow(t: float) -> None:
        h.on_policy_action(t, np.zeros(7))
        h.on_buffer_status(t, False, "", 10, 3, 0)

    t = feed(20.0, 0.0, 3.0, slow)   # 20 of 50 Hz
    assert h.action_buffer_status(t).level == Level.ERROR
    assert h.action_buffer_status(t + 2.5).level == Level.STALE


# --------------------------------------------------------------------------- safety filter
def safety(h: GraphHealth, t0: float, t1: float, modified_every: int = 0, **fields) -> float:
    counter = {"sent": 0, "modified": 0}

    def status(t: float) -> None:
        counter["sent"] += 1
        if modified_every and counter["sent"] % modified_every == 0:
            counter["modified"] += 1
        h.on_safety_status(t, SafetySample(commands_sent=counter["sent"], commands_modified=counter["modified"],
                                           **fields))
    return feed(50.0, t0, t1, status)


def test_safety_levels_estop_watchdog_and_interventions() -> None:
    h = health()
    t = safety(h, 0.0, 2.0, modified_every=20)   # 5 % modified
    st = h.safety_status(t)
    assert st.level == Level.OK, st.message
    assert float(dict(st.values)["interventions (window)"]) == pytest.approx(0.05, abs=0.01)

    h = health()
    t = safety(h, 0.0, 2.0, modified_every=2)    # 50 % modified > 20 %
    st = h.safety_status(t)
    assert st.level == Level.WARN and "modified" in st.message

    h = health()
    t = safety(h, 0.0, 1.0, estop_latched=True, estop_reason="force 200.0 N > 40.0 N", estop_trips=1)
    st = h.safety_status(t)
    assert st.level == Level.ERROR and "E-STOP latched: force 200.0 N" in st.message
    assert dict(st.values)["e-stop latched"] == "True"

    h = health()
    t = safety(h, 0.0, 1.0, holding=True, hold_reason="watchdog: no action", limits_hit=("watchdog",),
               watchdog_holds=3)
    assert h.safety_status(t).level == Level.WARN and "watchdog" in h.safety_status(t).message
    assert h.safety_status(t + 2.5).level == Level.STALE


# --------------------------------------------------------------------------- handoff, recorder
@pytest.mark.parametrize("mode, level", [(AUTONOMOUS, Level.OK), (HUMAN_OVERRIDE, Level.OK),
                                         (CONSERVATIVE, Level.WARN), (PAUSED, Level.WARN),
                                         (ESCALATED, Level.ERROR)])
def test_handoff_mode_levels(mode: int, level: Level) -> None:
    h = health(expected_nodes=["sync", "handoff"])
    h.on_handoff_mode(1.0, mode, "low confidence", 0.3, 2)
    st = h.handoff_status(1.5)
    assert st.level == level
    assert dict(st.values)["reason"] == "low confidence" and dict(st.values)["consecutive failures"] == "2"


def test_absent_nodes_are_stale_only_when_expected() -> None:
    h = health()   # default expected nodes: sync, inference, action_buffer, safety_filter
    by_name = {s.name: s for s in h.statuses(10.0)}
    assert set(by_name) == {"sync", "inference", "action_buffer", "safety_filter", "handoff",
                            "correction_recorder", "task"}
    for name in ("sync", "inference", "action_buffer", "safety_filter"):
        assert by_name[name].level == Level.STALE
    for name in ("handoff", "correction_recorder"):
        assert by_name[name].level == Level.OK and "not running" in by_name[name].message
    h = health(expected_nodes=["handoff", "correction_recorder"])
    assert h.handoff_status(10.0).level == Level.STALE
    assert h.correction_recorder_status(10.0).level == Level.STALE
    h.on_handoff_mode(10.0, AUTONOMOUS, "", 0.9, 0)
    assert h.handoff_status(10.5).level == Level.OK
    assert h.handoff_status(13.0).level == Level.STALE   # heard, then silent for > stale_after_s


def test_correction_recorder_counts_corrections_and_adaptations() -> None:
    h = health(expected_nodes=["correction_recorder"])
    h.on_correction_count(1.0, 7)
    h.on_adaptation(2.0, '{"corrections": 5, "loss": 0.1}')
    h.on_adaptation(3.0, "not json")
    st = h.correction_recorder_status(100.0)   # counters: never stale once heard
    v = dict(st.values)
    assert st.level == Level.OK and v["corrections"] == "7" and v["adaptations"] == "2"
    assert v["last adaptation"] == "not json"


# --------------------------------------------------------------------------- task
def test_success_rate_window_warns_below_threshold() -> None:
    h = health(success_window=10, min_outcomes=5, success_warn_below=0.5)
    for i, ok in enumerate([False] * 4):
        h.on_outcome(float(i), ok)
    assert h.task_status(5.0).level == Level.OK        # fewer than min_outcomes
    h.on_outcome(5.0, False)
    st = h.task_status(6.0)
    assert st.level == Level.WARN and "success rate 0%" in st.message
    for i in range(10):                                # the window slides: the failures fall out
        h.on_outcome(10.0 + i, True)
    st = h.task_status(30.0)
    assert st.level == Level.OK and dict(st.values)["success rate"] == "1.00"
    assert dict(st.values)["outcomes (total)"] == "15"


def test_distribution_shift_warns_for_shifted_actions_only() -> None:
    p = params()
    mean, std = np.asarray(p.resolved_action_mean), np.asarray(p.resolved_action_std)
    assert np.allclose(mean, p.home_position)
    assert np.allclose(std, 0.25 * (np.asarray(p.position_max) - np.asarray(p.position_min)))
    rng = np.random.default_rng(1)

    h = health()   # actions around home, spread of 0.5 training std: in distribution
    for i in range(200):
        h.on_policy_action(i * 0.02, mean + 0.5 * std * rng.standard_normal(7))
    st = h.task_status(4.0)
    assert st.level == Level.OK and float(dict(st.values)["action shift (max mean |z|)"]) < 1.0

    h = health()   # joint 2 pushed 3 training std away
    shifted = mean.copy()
    shifted[1] += 3.0 * std[1]
    for i in range(200):
        h.on_policy_action(i * 0.02, shifted + 0.1 * std * rng.standard_normal(7))
    st = h.task_status(4.0)
    assert st.level == Level.WARN and "panda_joint2" in st.message
    assert dict(st.values)["action shift dim"] == "panda_joint2"

    h = health(shift_min_samples=50)   # too few samples: no warning yet
    for i in range(10):
        h.on_policy_action(i * 0.02, shifted)
    assert h.task_status(1.0).level == Level.OK


def test_explicit_action_statistics_are_used() -> None:
    p = params(action_mean=[0.0] * 7, action_std=[0.1] * 7)
    h = GraphHealth(p.monitor_config())
    for i in range(50):
        h.on_policy_action(i * 0.02, [0.5] * 7)    # 5 std from the given mean on every dim
    assert h.shift_scores() == pytest.approx([5.0] * 7)


# --------------------------------------------------------------------------- markers and image
def test_arm_markers_namespaces_frames_and_points() -> None:
    p = params()
    h = GraphHealth(p.monitor_config())
    rng = np.random.default_rng(2)
    chunk = np.asarray(p.home_position) + 0.1 * rng.standard_normal((16, 7))  # (T, D)
    h.on_chunk(1.0, chunk, 0.02, 0.82)
    for i in range(30):
        h.on_joint_positions(1.0 + i * 0.01, np.asarray(p.home_position) + 0.01 * i)
    markers = h.markers(1.3)
    by_ns = {m.ns: m for m in markers}
    assert set(by_ns) == {"mode", "diagnostics", "planned", "executed"}
    assert all(m.id == 0 and m.lifetime_s == p.marker_lifetime_s for m in markers)
    assert (by_ns["mode"].type, by_ns["mode"].frame_id) == (TEXT_VIEW_FACING, "base_link")
    assert by_ns["mode"].text == "AUTONOMOUS  conf 0.82"
    assert by_ns["mode"].colour == MODE_COLOURS["AUTONOMOUS"]
    for ns in ("planned", "executed"):
        assert by_ns[ns].type == LINE_STRIP and by_ns[ns].frame_id == "monitor"
    home = np.asarray(p.home_position)
    expected = p.plot_scale * (chunk[:, :3] - home[:3])
    assert np.allclose(np.array(by_ns["planned"].points), expected)
    assert len(by_ns["executed"].points) == 30
    assert by_ns["executed"].points[-1] == pytest.approx(tuple(p.plot_scale * 0.29 * np.ones(3)))


def test_mobile_base_markers_are_an_xy_path_in_odom() -> None:
    p = params("hello", frame_id="odom")
    assert p.resolved_plot_space == "planar" and p.resolved_plot_dims == (0, 1)
    h = GraphHealth(p.monitor_config())
    chunk = np.stack([np.linspace(0, 1.5, 16), np.linspace(0, -0.5, 16), np.zeros(16)], axis=1)  # (T, 3)
    h.on_chunk(0.0, chunk, 0.02, 0.5)
    by_ns = {m.ns: m for m in h.markers(0.1)}
    assert "executed" not in by_ns   # nothing executed yet: no line strip with < 2 points
    planned = by_ns["planned"]
    assert planned.frame_id == "odom" and by_ns["mode"].frame_id == "odom"
    assert np.allclose(np.array(planned.points), np.column_stack([chunk[:, 0], chunk[:, 1], np.zeros(16)]))


@pytest.mark.parametrize("mode", [AUTONOMOUS, PAUSED, HUMAN_OVERRIDE, ESCALATED, CONSERVATIVE])
def test_mode_text_colour_per_mode_and_estop(mode: int) -> None:
    h = health(expected_nodes=["handoff"])
    h.on_handoff_mode(0.0, mode, "", 0.4, 0)
    disp = h.display(0.5)
    names = ["AUTONOMOUS", "PAUSED", "HUMAN_OVERRIDE", "ESCALATED", "CONSERVATIVE"]
    assert disp.mode == names[mode] and disp.colour == MODE_COLOURS[names[mode]]
    assert disp.text == f"{names[mode]}  conf 0.40"
    h.on_safety_status(0.6, SafetySample(estop_latched=True, estop_reason="force"))
    mode_marker = next(m for m in h.markers(0.7) if m.ns == "mode")
    assert mode_marker.colour == ESTOP_COLOUR and mode_marker.text.startswith("E-STOP: force\n")
    assert h.display(3.0).mode == "UNKNOWN"   # handoff expected but silent since


def test_colours_differ_per_mode() -> None:
    colours = list(MODE_COLOURS.values()) + [ESTOP_COLOUR]
    assert len(set(colours)) == len(colours)


def test_diagnostics_text_marker_lists_what_is_wrong() -> None:
    h = health()
    h.on_safety_status(0.0, SafetySample(estop_latched=True, estop_reason="force"))
    diag = next(m for m in h.markers(0.5) if m.ns == "diagnostics")
    assert "safety_filter: ERROR E-STOP latched: force" in diag.text and "sync: STALE" in diag.text
    assert diag.colour[:3] == (1.0, 0.1, 0.1)


def test_annotated_image_has_mode_bar_and_estop_banner() -> None:
    rgb = np.full((96, 96, 3), 128, np.uint8)
    ok = annotate_image(rgb, ModeDisplay("AUTONOMOUS", 0.8, False, "", MODE_COLOURS["AUTONOMOUS"]), 384)
    assert ok.shape == (384, 384, 3) and ok.dtype == np.uint8
    assert np.all(ok[-20:, :, :] == 128)                         # no banner
    assert np.any(ok[:20, :, 1] > 200)                           # green text in the top bar
    stop = annotate_image(rgb, ModeDisplay("AUTONOMOUS", 0.8, True, "force", ESTOP_COLOUR), 384)
    bottom = stop[-10:, -40:, :].reshape(-1, 3)
    assert np.all(bottom == [255, 0, 0])                         # red e-stop banner
    with pytest.raises(ValueError, match="expected"):
        annotate_image(np.zeros((4, 4), np.uint8), ModeDisplay("X", 0.0, False, "", (1.0, 1.0, 1.0, 1.0)))


# --------------------------------------------------------------------------- parameters
@pytest.mark.parametrize("embodiment", EMBODIMENTS)
def test_every_embodiment_file_is_valid_for_the_monitor(embodiment: str) -> None:
    p = params(embodiment)
    cfg = p.monitor_config()
    assert len(cfg.action_mean) == len(cfg.action_std) == p.action_dim
    assert all(s > 0 for s in cfg.action_std)
    assert cfg.plot_space == ("planar" if embodiment == "hello" else "joint")
    assert all(d < p.action_dim for d in cfg.plot_dims)


@pytest.mark.parametrize("override, expected", [
    ({"action_std": [1.0, 1.0]}, "monitor.action_std: needs 7 values"),
    ({"action_std": [0.0] * 7}, "monitor.action_std: every value must be > 0"),
    ({"plot_dims": [0, 9]}, "monitor.plot_dims: needs 2 or 3 distinct dims below action_dim 7"),
    ({"plot_space": "planar", "plot_dims": [0, 1, 2]}, "monitor.plot_dims: planar plots take 2 dims"),
    ({"expected_nodes": ["sync", "planner"]}, "monitor.expected_nodes: 'planner' is not one of"),
    ({"rate_error_fraction": 0.9}, "monitor.rate_error_fraction: 0.9 is above rate_warn_fraction 0.8"),
    ({"latency_budget_s": -1.0}, "monitor.latency_budget_s: -1.0 is below the minimum"),
])
def test_bad_monitor_parameters_name_the_field(override: dict, expected: str) -> None:
    with pytest.raises(ParameterError) as info:
        params(**override)
    assert expected in str(info.value)


def test_config_defaults_match_the_schema() -> None:
    # MonitorConfig's own defaults (for tests and tools) are the schema's.
    p, cfg = params(), MonitorConfig()
    for f in dataclasses.fields(MonitorConfig):
        if hasattr(p, f.name) and f.name not in ("embodiment", "joint_names", "control_rate_hz",
                                                 "recompute_every", "action_mean", "action_std",
                                                 "plot_dims", "plot_space", "text_position_m"):
            assert getattr(cfg, f.name) == getattr(p, f.name), f.name


def test_rviz_config_opens_the_monitor_topics() -> None:
    import yaml

    with open(os.path.join(CONFIG, "hybridvla.rviz"), encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    displays = {d["Class"]: d for d in doc["Visualization Manager"]["Displays"]}
    markers = displays["rviz_default_plugins/MarkerArray"]
    assert markers["Topic"]["Value"] == "/monitor/markers"
    assert set(markers["Namespaces"]) == {"mode", "diagnostics", "planned", "executed"}
    assert displays["rviz_default_plugins/Image"]["Topic"]["Value"] == "/monitor/image"
    assert doc["Visualization Manager"]["Global Options"]["Fixed Frame"] == params().frame_id
