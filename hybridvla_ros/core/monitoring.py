"""Graph health for the monitor node: statistics, levels and what to draw (ROS-free).

``GraphHealth`` is fed timestamped events (an observation, a chunk, a buffer or safety
status, a handoff mode, a task outcome, ...) and answers, at any time ``now``:

* ``statuses(now)``: one :class:`Status` per node of the graph (sync, inference,
  action_buffer, safety_filter, handoff, correction_recorder) and one for the task, with
  a level (OK/WARN/ERROR/STALE, the values of diagnostic_msgs/DiagnosticStatus) and
  key-values. The node turns them into a DiagnosticArray.
* ``markers(now)``: plain :class:`MarkerSpec` records (namespace, id, type, frame, pose,
  scale, colour, text, points) that the node turns into visualization_msgs/Marker.
* ``display(now)``: the mode/confidence/e-stop shown on the text marker and the image.

diagnostic_updater (the usual library for this) cannot be installed here, and its
per-topic frequency checks do not know our graph's rules (expected nodes, holds,
e-stop, handoff modes), so the few statistics it would give us are written out below.

Rules, in one place:
* Silence: a node in ``expected_nodes`` that was never heard is STALE; one that is not
  expected and was never heard is OK ("not running"); one that was heard and then fell
  silent for ``stale_after_s`` is STALE. Counters (correction_recorder, adaptation) are
  published when they change, so once heard they never go stale.
* Rates are averaged over the events of the last ``window_s`` (for the action stream:
  since the buffer last held). Below ``rate_warn_fraction`` of the expected rate: WARN;
  below ``rate_error_fraction``: ERROR.
* Inference latency: p99 above the budget is WARN (the tail costs control periods);
  p50 above ``latency_error_factor`` times the budget is ERROR (it is always late).
* Action distribution shift: z = (action - action_mean) / action_std per dimension over
  the last ``shift_window`` policy actions; the statistic is the largest per-dimension
  mean |z|. In-distribution actions stay around the training mean (score about 0.8 for
  Gaussian actions, less for a policy near home); WARN above ``shift_warn_above``.

Size: one health model of the graph (a status per node, markers, image overlay);
the per-node rules are many short pieces that read best side by side.
"""
from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum

import cv2
import numpy as np

from hybridvla_ros.core.handoff import Mode
from hybridvla_ros.core.stats import percentiles

DIAGNOSTIC_PREFIX = "hybridvla: "
NODE_NAMES: tuple[str, ...] = ("sync", "inference", "action_buffer", "safety_filter", "handoff",
                               "correction_recorder")
TASK = "task"

# Marker namespaces (one marker each, id 0).
NS_MODE, NS_DIAGNOSTICS, NS_PLANNED, NS_EXECUTED = "mode", "diagnostics", "planned", "executed"
TEXT_VIEW_FACING, LINE_STRIP = "TEXT_VIEW_FACING", "LINE_STRIP"

Colour = tuple[float, float, float, float]   # r, g, b, a in [0, 1]
Point = tuple[float, float, float]


class Level(IntEnum):
    """diagnostic_msgs/DiagnosticStatus levels."""

    OK = 0
    WARN = 1
    ERROR = 2
    STALE = 3


# For "the worst of several": an error outranks a silent node.
SEVERITY: dict[Level, int] = {Level.OK: 0, Level.WARN: 1, Level.STALE: 2, Level.ERROR: 3}


# HandoffMode.mode value -> name, from core.handoff.Mode (equal to the hybridvla_msgs/HandoffMode constants)
MODE_NAMES: dict[int, str] = {int(mode): mode.name for mode in Mode}
MODE_LEVELS: dict[str, Level] = {"AUTONOMOUS": Level.OK, "HUMAN_OVERRIDE": Level.OK, "CONSERVATIVE": Level.WARN,
                                 "PAUSED": Level.WARN, "ESCALATED": Level.ERROR}
UNKNOWN_MODE = "UNKNOWN"
MODE_COLOURS: dict[str, Colour] = {
    "AUTONOMOUS": (0.2, 0.9, 0.2, 1.0),       # green: the policy drives
    "HUMAN_OVERRIDE": (0.3, 0.55, 1.0, 1.0),  # blue: a human drives
    "CONSERVATIVE": (1.0, 0.55, 0.0, 1.0),    # orange: policy drives with tight limits
    "PAUSED": (1.0, 0.9, 0.1, 1.0),           # yellow: waiting for help
    "ESCALATED": (0.85, 0.2, 0.85, 1.0),      # magenta: repeated failures, a human must act
    UNKNOWN_MODE: (0.7, 0.7, 0.7, 1.0),       # grey: handoff expected but silent
}
ESTOP_COLOUR: Colour = (1.0, 0.0, 0.0, 1.0)
LEVEL_COLOURS: dict[Level, Colour] = {Level.OK: (0.2, 0.9, 0.2, 1.0), Level.WARN: (1.0, 0.9, 0.1, 1.0),
                                      Level.ERROR: (1.0, 0.1, 0.1, 1.0), Level.STALE: (0.7, 0.7, 0.7, 1.0)}
PLANNED_COLOUR: Colour = (0.1, 0.8, 1.0, 1.0)
EXECUTED_COLOUR: Colour = (1.0, 0.6, 0.1, 1.0)

_MAX_EVENTS = 20_000  # bound on any window, whatever the rate


@dataclass(frozen=True)
class Status:
    """The health of one node (or the task): level, one-line message, key-values."""

    name: str
    level: Level
    message: str
    values: tuple[tuple[str, str], ...] = ()

    @property
    def diagnostic_name(self) -> str:
        """``hybridvla: <name>``, the DiagnosticStatus name."""
        return DIAGNOSTIC_PREFIX + self.name


@dataclass(frozen=True)
class MarkerSpec:
    """The content of one visualization_msgs/Marker, without ROS."""

    ns: str
    id: int
    type: str                                  # TEXT_VIEW_FACING | LINE_STRIP (Marker constant names)
    frame_id: str
    position: Point = (0.0, 0.0, 0.0)
    orientation: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 1.0)   # x, y, z, w
    scale: Point = (1.0, 1.0, 1.0)             # text: z is the letter height; line: x is the width (m)
    colour: Colour = (1.0, 1.0, 1.0, 1.0)
    text: str = ""
    points: tuple[Point, ...] = ()
    lifetime_s: float = 1.0


@dataclass(frozen=True)
class ModeDisplay:
    """Who drives, how sure the policy is, and whether the e-stop is latched."""

    mode: str
    confidence: float                          # NaN when unknown
    estop_latched: bool
    estop_reason: str
    colour: Colour

    @property
    def text(self) -> str:
        """``MODE  conf 0.82`` with an ``E-STOP: reason`` line first when latched."""
        conf = "n/a" if not math.isfinite(self.confidence) else f"{self.confidence:.2f}"
        line = f"{self.mode}  conf {conf}"
        return f"E-STOP: {self.estop_reason or 'latched'}\n{line}" if self.estop_latched else line


@dataclass(frozen=True)
class MonitorConfig:
    """Thresholds and drawing choices (see params/monitor.py for each field's meaning)."""

    embodiment: str = "franka"
    joint_names: tuple[str, ...] = ()
    control_rate_hz: float = 50.0
    recompute_every: int = 5
    expected_nodes: tuple[str, ...] = ("sync", "inference", "action_buffer", "safety_filter")
    window_s: float = 5.0
    stale_after_s: float = 2.0
    rate_warn_fraction: float = 0.8
    rate_error_fraction: float = 0.5
    camera_rate_hz: float = 30.0
    max_skew_s: float = 0.006
    latency_budget_s: float = 0.05
    latency_error_factor: float = 2.0
    confidence_warn_below: float = 0.2
    intervention_warn_fraction: float = 0.2
    success_window: int = 20
    min_outcomes: int = 5
    success_warn_below: float = 0.5
    action_mean: tuple[float, ...] = ()
    action_std: tuple[float, ...] = ()
    shift_window: int = 100
    shift_min_samples: int = 20
    shift_warn_above: float = 2.0
    frame_id: str = "base_link"
    plot_space: str = "joint"                  # joint | planar
    plot_dims: tuple[int, ...] = (0, 1, 2)
    joint_plot_frame_id: str = "monitor"
    plot_scale: float = 0.2                    # m per rad (joint space)
    plot_home: tuple[float, ...] = ()          # origin of the joint plot (the home pose)
    text_position_m: Point = (0.0, 0.0, 1.2)
    text_height_m: float = 0.08
    line_width_m: float = 0.01
    executed_history_s: float = 3.0
    max_plot_points: int = 200
    marker_lifetime_s: float = 1.0

    @property
    def expected_chunk_rate_hz(self) -> float:
        """Chunks per second the inference node should produce."""
        return self.control_rate_hz / self.recompute_every


# --------------------------------------------------------------------------- statistics
class EventWindow:
    """Timestamped values of the last ``window_s`` seconds."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._events: deque[tuple[float, float]] = deque(maxlen=_MAX_EVENTS)
        self.last_t: float | None = None
        self.count = 0

    def add(self, t: float, value: float = math.nan) -> None:
        """Record one event at time ``t`` (seconds)."""
        self._events.append((t, value))
        self.last_t = t if self.last_t is None else max(self.last_t, t)
        self.count += 1

    def _prune(self, now: float) -> None:
        while self._events and self._events[0][0] < now - self.window_s:
            self._events.popleft()

    def times(self, now: float, since: float | None = None) -> np.ndarray:
        """Event times in the window (and after ``since``)."""
        self._prune(now)
        t = np.fromiter((e[0] for e in self._events), dtype=np.float64, count=len(self._events))
        return t if since is None else t[t > since]

    def values(self, now: float) -> np.ndarray:
        """Finite values in the window."""
        self._prune(now)
        v = np.fromiter((e[1] for e in self._events), dtype=np.float64, count=len(self._events))
        return v[np.isfinite(v)]

    def rate_hz(self, now: float, since: float | None = None) -> float:
        """Events per second between the first and last event in the window; NaN below two events."""
        t = self.times(now, since)
        if t.size < 2 or t[-1] <= t[0]:
            return math.nan
        return float((t.size - 1) / (t[-1] - t[0]))

    def silent_for(self, now: float) -> float:
        """Seconds since the last event; inf if none."""
        return math.inf if self.last_t is None else now - self.last_t


def rate_level(rate_hz: float, expected_hz: float, cfg: MonitorConfig) -> Level:
    """OK, WARN below rate_warn_fraction, ERROR below rate_error_fraction of expected (NaN: OK)."""
    if not math.isfinite(rate_hz) or expected_hz <= 0:
        return Level.OK
    if rate_hz < cfg.rate_error_fraction * expected_hz:
        return Level.ERROR
    if rate_hz < cfg.rate_warn_fraction * expected_hz:
        return Level.WARN
    return Level.OK


def success_rate(outcomes: Iterable[bool]) -> float:
    """Fraction of True; NaN for no outcomes."""
    arr = np.fromiter((bool(o) for o in outcomes), dtype=bool)
    return float(arr.mean()) if arr.size else math.nan


def distribution_shift(actions: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Per-dimension mean |z| of (N, D) actions against the training mean/std; (D,), NaN if N == 0."""
    a = np.asarray(actions, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] == 0:
        return np.full(np.shape(mean), np.nan)
    z = (a - mean) / std  # (N, D)
    return np.nanmean(np.abs(z), axis=0) if np.isfinite(z).any() else np.full(np.shape(mean), np.nan)


def _f(x: float, digits: int = 2) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.{digits}f}"


def _ms(x: float) -> str:
    return _f(x * 1e3, 1)


def _status(name: str, levels_msgs: list[tuple[Level, str]], values: list[tuple[str, str]]) -> Status:
    """The worst level among ``levels_msgs``; its messages (all of that level) joined."""
    worst = max((lv for lv, _ in levels_msgs), default=Level.OK)
    msgs = [m for lv, m in levels_msgs if lv == worst and m]
    return Status(name, worst, "; ".join(msgs) if msgs else "OK", tuple(values))


@dataclass(frozen=True)
class SafetySample:
    """The fields of hybridvla_msgs/SafetyStatus the monitor uses."""

    estop_latched: bool = False
    estop_reason: str = ""
    holding: bool = False
    hold_reason: str = ""
    limits_hit: tuple[str, ...] = ()
    commands_sent: int = 0
    commands_modified: int = 0
    estop_trips: int = 0
    watchdog_holds: int = 0
    last_force_n: float = 0.0
    last_torque_nm: float = 0.0


@dataclass
class _Buffer:
    holding: bool = True
    reason: str = ""
    depth: int = 0
    chunks_received: int = 0
    chunks_rejected: int = 0


@dataclass
class _Handoff:
    mode: int = 0
    reason: str = ""
    confidence: float = math.nan
    consecutive_failures: int = 0


@dataclass
class _Chunk:
    t: float
    actions: np.ndarray          # (T, D)
    confidence: float
    model_version: int
    seq: int


class GraphHealth:
    """Everything the monitor heard, and the statuses and markers derived from it."""

    def __init__(self, cfg: MonitorConfig) -> None:
        self.cfg = cfg
        w = self.cfg.window_s
        self._obs = EventWindow(w)            # value: proprio skew (s)
        self._chunks = EventWindow(w)         # value: inference latency (s)
        self._confidence = EventWindow(w)     # value: chunk confidence
        self._actions = EventWindow(w)        # policy actions (times only)
        self._buffer_t = EventWindow(w)
        self._handoff_t = EventWindow(w)
        self._safety_t: deque[tuple[float, SafetySample]] = deque(maxlen=_MAX_EVENTS)
        self._safety_last_t: float | None = None
        self._buffer = _Buffer()
        self._rate_since: float | None = None          # last time the buffer was holding
        self._handoff: _Handoff | None = None
        self._chunk: _Chunk | None = None
        self._model_version = -1
        self._corrections: int | None = None
        self._adaptations = 0
        self._last_adaptation = ""
        self._recorder_heard = False
        self._outcomes: deque[bool] = deque(maxlen=self.cfg.success_window)
        self._outcome_count = 0
        self._recent_actions: deque[np.ndarray] = deque(maxlen=self.cfg.shift_window)
        self._executed: deque[tuple[float, np.ndarray]] = deque(maxlen=_MAX_EVENTS)
        d = len(self.cfg.joint_names)
        self._mean = np.asarray(self.cfg.action_mean, dtype=np.float64) if self.cfg.action_mean else np.zeros(d)
        self._std = np.asarray(self.cfg.action_std, dtype=np.float64) if self.cfg.action_std else np.ones(d)

    # --- inputs (t: the monitor's receive time, seconds)
    def on_observation(self, t: float, proprio_skew_s: float) -> None:
        """An Observation from sync."""
        self._obs.add(t, proprio_skew_s)

    def on_chunk(self, t: float, actions: np.ndarray, latency_s: float, confidence: float,
                 model_version: int = 0, seq: int = 0) -> None:
        """An ActionChunk from inference; ``actions`` is (T, D)."""
        self._chunks.add(t, latency_s)
        self._confidence.add(t, confidence)
        self._model_version = model_version
        self._chunk = _Chunk(t, np.asarray(actions, dtype=np.float64), confidence, model_version, seq)

    def on_policy_action(self, t: float, action: Sequence[float]) -> None:
        """An ActionStep the action buffer emitted (``policy_action``)."""
        self._actions.add(t)
        a = np.asarray(action, dtype=np.float64)
        if a.shape == self._mean.shape and np.all(np.isfinite(a)):
            self._recent_actions.append(a)

    def on_buffer_status(self, t: float, holding: bool, reason: str, depth: int, chunks_received: int,
                         chunks_rejected: int) -> None:
        """A BufferStatus."""
        self._buffer_t.add(t)
        self._buffer = _Buffer(holding, reason, depth, chunks_received, chunks_rejected)
        if holding:
            self._rate_since = t

    def on_safety_status(self, t: float, sample: SafetySample) -> None:
        """A SafetyStatus."""
        self._safety_t.append((t, sample))
        self._safety_last_t = t

    def on_handoff_mode(self, t: float, mode: int, reason: str, confidence: float,
                        consecutive_failures: int) -> None:
        """A HandoffMode."""
        self._handoff_t.add(t)
        self._handoff = _Handoff(mode, reason, confidence, consecutive_failures)

    def on_correction_count(self, t: float, count: int) -> None:
        """correction_recorder/count: corrections stored so far."""
        self._corrections = int(count)
        self._recorder_heard = True

    def on_adaptation(self, t: float, text: str) -> None:
        """adaptation/status: one message per adaptation (fine-tuning run) done."""
        self._adaptations += 1
        self._last_adaptation = text
        self._recorder_heard = True

    def on_outcome(self, t: float, success: bool) -> None:
        """report_outcome: one task attempt, True for success."""
        self._outcomes.append(bool(success))
        self._outcome_count += 1

    def on_joint_positions(self, t: float, positions: Sequence[float] | np.ndarray) -> None:
        """The robot's measured joint positions (in action order): what was executed."""
        self._executed.append((t, np.asarray(positions, dtype=np.float64)))

    # --- statuses
    def _silence(self, name: str, silent_for: float, what: str) -> Status | None:
        """STALE / 'not running' status when ``name`` is silent, else None."""
        if math.isinf(silent_for):
            if name in self.cfg.expected_nodes:
                return Status(name, Level.STALE, f"no {what} yet")
            return Status(name, Level.OK, "not running (not in expected_nodes)")
        if silent_for > self.cfg.stale_after_s:
            return Status(name, Level.STALE, f"no {what} for {silent_for:.1f} s")
        return None

    def sync_status(self, now: float) -> Status:
        """Observation rate vs the camera rate, proprio skew vs max_skew_s."""
        silent = self._silence("sync", self._obs.silent_for(now), "observation")
        if silent:
            return silent
        c = self.cfg
        rate = self._obs.rate_hz(now)
        skew = self._obs.values(now)
        skew_max = float(skew.max()) if skew.size else math.nan
        skew_p50 = percentiles(skew)["p50"]
        checks = [(rate_level(rate, c.camera_rate_hz, c),
                   f"observation rate {_f(rate, 1)} Hz, expected {c.camera_rate_hz:g} Hz")]
        if math.isfinite(skew_max) and skew_max > c.max_skew_s:
            checks.append((Level.WARN, f"proprio skew {_ms(skew_max)} ms > max_skew_s {_ms(c.max_skew_s)} ms"))
        return _status("sync", checks, [
            ("observation rate (Hz)", _f(rate, 1)), ("expected camera rate (Hz)", f"{c.camera_rate_hz:g}"),
            ("proprio skew p50 (ms)", _ms(skew_p50)), ("proprio skew max (ms)", _ms(skew_max)),
            ("max_skew_s (ms)", _ms(c.max_skew_s)), ("observations", str(self._obs.count))])

    def inference_status(self, now: float) -> Status:
        """Chunk rate, latency p50/p99 vs the budget, mean confidence."""
        silent = self._silence("inference", self._chunks.silent_for(now), "action chunk")
        if silent:
            return silent
        c = self.cfg
        rate = self._chunks.rate_hz(now)
        lat = percentiles(self._chunks.values(now))
        conf = self._confidence.values(now)
        mean_conf = float(conf.mean()) if conf.size else math.nan
        budget = c.latency_budget_s
        checks = [(rate_level(rate, c.expected_chunk_rate_hz, c),
                   f"chunk rate {_f(rate, 1)} Hz, expected {c.expected_chunk_rate_hz:.3g} Hz")]
        if math.isfinite(lat["p50"]) and lat["p50"] > c.latency_error_factor * budget:
            checks.append((Level.ERROR, f"latency p50 {_ms(lat['p50'])} ms > {c.latency_error_factor:g} x budget"))
        elif math.isfinite(lat["p99"]) and lat["p99"] > budget:
            checks.append((Level.WARN, f"latency p99 {_ms(lat['p99'])} ms > budget {_ms(budget)} ms"))
        if math.isfinite(mean_conf) and mean_conf < c.confidence_warn_below:
            checks.append((Level.WARN, f"mean confidence {mean_conf:.2f} < {c.confidence_warn_below:g}"))
        return _status("inference", checks, [
            ("chunk rate (Hz)", _f(rate, 2)), ("expected chunk rate (Hz)", f"{c.expected_chunk_rate_hz:.3g}"),
            ("latency p50 (ms)", _ms(lat["p50"])), ("latency p99 (ms)", _ms(lat["p99"])),
            ("latency budget (ms)", _ms(budget)), ("mean confidence", _f(mean_conf)),
            ("model version", str(self._model_version)), ("chunks", str(self._chunks.count))])

    def action_buffer_status(self, now: float) -> Status:
        """Action rate vs control rate (since the last hold), depth, holding, rejected chunks."""
        last = min(self._buffer_t.silent_for(now), self._actions.silent_for(now))
        silent = self._silence("action_buffer", last, "buffer status or action")
        if silent:
            return silent
        c, b = self.cfg, self._buffer
        rate = self._actions.rate_hz(now, since=self._rate_since)
        if b.holding:
            checks = [(Level.WARN, f"holding: {b.reason}" if b.reason else "holding")]
        else:
            checks = [(rate_level(rate, c.control_rate_hz, c),
                       f"action rate {_f(rate, 1)} Hz, expected {c.control_rate_hz:g} Hz")]
        return _status("action_buffer", checks, [
            ("action rate (Hz)", _f(rate, 1)), ("control rate (Hz)", f"{c.control_rate_hz:g}"),
            ("depth", str(b.depth)), ("holding", str(b.holding)), ("hold reason", b.reason),
            ("chunks received", str(b.chunks_received)), ("chunks rejected", str(b.chunks_rejected))])

    def safety_status(self, now: float) -> Status:
        """E-stop (ERROR), watchdog holds (WARN), interventions over the window (WARN)."""
        silent_for = math.inf if self._safety_last_t is None else now - self._safety_last_t
        silent = self._silence("safety_filter", silent_for, "safety status")
        if silent:
            return silent
        c = self.cfg
        while self._safety_t and self._safety_t[0][0] < now - c.window_s and len(self._safety_t) > 1:
            self._safety_t.popleft()
        first, last = self._safety_t[0][1], self._safety_t[-1][1]
        sent = last.commands_sent - first.commands_sent
        modified = last.commands_modified - first.commands_modified
        fraction = modified / sent if sent > 0 else math.nan
        watchdog_new = last.watchdog_holds - first.watchdog_holds
        checks: list[tuple[Level, str]] = []
        if last.estop_latched:
            checks.append((Level.ERROR, f"E-STOP latched: {last.estop_reason or 'no reason given'}"))
        if (last.holding and "watchdog" in last.limits_hit) or watchdog_new > 0:
            checks.append((Level.WARN, f"watchdog held the robot ({watchdog_new} in {c.window_s:g} s)"))
        if math.isfinite(fraction) and fraction > c.intervention_warn_fraction:
            checks.append((Level.WARN, f"{fraction:.0%} of commands modified by the safety filter"))
        return _status("safety_filter", checks, [
            ("e-stop latched", str(last.estop_latched)), ("e-stop reason", last.estop_reason),
            ("e-stop trips", str(last.estop_trips)), ("commands sent", str(last.commands_sent)),
            ("commands modified", str(last.commands_modified)), ("interventions (window)", _f(fraction, 3)),
            ("watchdog holds", str(last.watchdog_holds)), ("holding", str(last.holding)),
            ("hold reason", last.hold_reason), ("limits hit", ",".join(last.limits_hit)),
            ("force (N)", _f(last.last_force_n, 1)), ("torque (Nm)", _f(last.last_torque_nm, 2))])

    def handoff_status(self, now: float) -> Status:
        """The mode and its reason: PAUSED/CONSERVATIVE WARN, ESCALATED ERROR."""
        silent = self._silence("handoff", self._handoff_t.silent_for(now), "handoff mode")
        if silent:
            return silent
        h = self._handoff
        assert h is not None
        name = MODE_NAMES.get(h.mode, f"mode {h.mode}")
        level = MODE_LEVELS.get(name, Level.WARN)
        msg = name + (f": {h.reason}" if h.reason else "")
        return Status("handoff", level, msg, (
            ("mode", name), ("reason", h.reason), ("confidence", _f(h.confidence)),
            ("consecutive failures", str(h.consecutive_failures))))

    def correction_recorder_status(self, now: float) -> Status:
        """Corrections recorded and adaptations done (counters: never stale once heard)."""
        if not self._recorder_heard:
            silent = self._silence("correction_recorder", math.inf, "correction count")
            assert silent is not None
            return silent
        values = [("corrections", "n/a" if self._corrections is None else str(self._corrections)),
                  ("adaptations", str(self._adaptations))]
        if self._last_adaptation:
            try:
                doc = json.loads(self._last_adaptation)
                text = json.dumps(doc, sort_keys=True) if isinstance(doc, dict) else str(doc)
            except (json.JSONDecodeError, TypeError):
                text = self._last_adaptation
            values.append(("last adaptation", text[:200]))
        return Status("correction_recorder", Level.OK,
                      f"{values[0][1]} corrections, {self._adaptations} adaptations", tuple(values))

    def shift_scores(self) -> np.ndarray:
        """Per-dimension mean |z| of the recent policy actions; (D,), NaN when none."""
        if not self._recent_actions:
            return np.full(self._mean.shape, np.nan)
        return distribution_shift(np.stack(self._recent_actions), self._mean, self._std)

    def task_status(self, now: float) -> Status:
        """Success rate over the last outcomes; distribution shift of the policy's actions."""
        c = self.cfg
        rate = success_rate(self._outcomes)
        n = len(self._outcomes)
        checks: list[tuple[Level, str]] = []
        if n >= c.min_outcomes and rate < c.success_warn_below:
            checks.append((Level.WARN, f"success rate {rate:.0%} over the last {n} < {c.success_warn_below:.0%}"))
        scores = self.shift_scores()
        score, dim_name = math.nan, ""
        if len(self._recent_actions) and np.isfinite(scores).any():
            i = int(np.nanargmax(scores))
            score = float(scores[i])
            dim_name = c.joint_names[i] if i < len(c.joint_names) else str(i)
            if len(self._recent_actions) >= c.shift_min_samples and score > c.shift_warn_above:
                checks.append((Level.WARN, f"action distribution shift: mean |z| {score:.2f} on {dim_name}"))
        msg_ok = "no outcomes reported" if n == 0 else f"success rate {rate:.0%} over the last {n}"
        st = _status(TASK, checks, [
            ("success rate", _f(rate)), ("outcomes (window)", str(n)), ("outcomes (total)", str(self._outcome_count)),
            ("action shift (max mean |z|)", _f(score)), ("action shift dim", dim_name),
            ("shift samples", str(len(self._recent_actions))), ("shift threshold", f"{c.shift_warn_above:g}")])
        return st if checks else Status(TASK, Level.OK, msg_ok, st.values)

    def statuses(self, now: float) -> list[Status]:
        """One Status per node of the graph, then the task's."""
        return [self.sync_status(now), self.inference_status(now), self.action_buffer_status(now),
                self.safety_status(now), self.handoff_status(now), self.correction_recorder_status(now),
                self.task_status(now)]

    # --- display and markers
    def display(self, now: float) -> ModeDisplay:
        """Mode (handoff's, or AUTONOMOUS when the graph has no handoff), confidence, e-stop."""
        if self._handoff is not None and self._handoff_t.silent_for(now) <= self.cfg.stale_after_s:
            mode = MODE_NAMES.get(self._handoff.mode, UNKNOWN_MODE)
        elif "handoff" in self.cfg.expected_nodes or self._handoff is not None:
            mode = UNKNOWN_MODE
        else:
            mode = "AUTONOMOUS"  # no mux in the graph: the policy drives directly
        conf = math.nan
        if self._chunk is not None:
            conf = float(self._chunk.confidence)
        elif self._handoff is not None:
            conf = float(self._handoff.confidence)
        last = self._safety_t[-1][1] if self._safety_t else None
        estop = bool(last and last.estop_latched)
        colour = ESTOP_COLOUR if estop else MODE_COLOURS.get(mode, MODE_COLOURS[UNKNOWN_MODE])
        return ModeDisplay(mode, conf, estop, last.estop_reason if last else "", colour)

    def plot_points(self, actions: np.ndarray) -> tuple[Point, ...]:
        """(N, D) actions -> marker points: planar (x, y, 0) or scaled joint dims around home."""
        c = self.cfg
        a = np.asarray(actions, dtype=np.float64)
        if a.ndim != 2 or a.shape[0] == 0 or max(c.plot_dims) >= a.shape[1]:
            return ()
        sel = a[:, list(c.plot_dims)]  # (N, 2 or 3)
        if c.plot_space == "joint":
            home = np.asarray(c.plot_home, dtype=np.float64)[list(c.plot_dims)] if c.plot_home else 0.0
            sel = c.plot_scale * (sel - home)
        if sel.shape[1] == 2:
            sel = np.hstack([sel, np.zeros((sel.shape[0], 1))])
        sel = sel[np.all(np.isfinite(sel), axis=1)]
        return tuple((float(x), float(y), float(z)) for x, y, z in sel)

    def executed_actions(self, now: float) -> np.ndarray:
        """(N, D) measured positions of the last executed_history_s, at most max_plot_points."""
        while self._executed and self._executed[0][0] < now - self.cfg.executed_history_s:
            self._executed.popleft()
        if not self._executed:
            return np.zeros((0, len(self.cfg.joint_names)))
        rows = [p for _, p in self._executed]
        step = max(1, math.ceil(len(rows) / self.cfg.max_plot_points))
        picked = rows[::step]
        if picked[-1] is not rows[-1]:
            picked.append(rows[-1])
        return np.stack(picked)

    def markers(self, now: float, statuses: list[Status] | None = None) -> list[MarkerSpec]:
        """Mode text, diagnostics text, planned chunk and executed path (line strips need 2+ points)."""
        c = self.cfg
        disp = self.display(now)
        plot_frame = c.joint_plot_frame_id if c.plot_space == "joint" else c.frame_id
        x, y, z = c.text_position_m
        out = [MarkerSpec(NS_MODE, 0, TEXT_VIEW_FACING, c.frame_id, position=(x, y, z),
                          scale=(0.0, 0.0, c.text_height_m), colour=disp.colour, text=disp.text,
                          lifetime_s=c.marker_lifetime_s)]
        sts = self.statuses(now) if statuses is None else statuses
        bad = [s for s in sts if s.level != Level.OK]
        worst = max((s.level for s in bad), key=SEVERITY.__getitem__, default=Level.OK)
        lines = [f"{s.name}: {Level(s.level).name} {s.message}" for s in bad] or ["all OK"]
        out.append(MarkerSpec(NS_DIAGNOSTICS, 0, TEXT_VIEW_FACING, c.frame_id,
                              position=(x, y, z - 2.5 * c.text_height_m - 0.6 * c.text_height_m * len(lines)),
                              scale=(0.0, 0.0, 0.6 * c.text_height_m), colour=LEVEL_COLOURS[worst],
                              text="\n".join(lines), lifetime_s=c.marker_lifetime_s))
        if self._chunk is not None:
            pts = self.plot_points(self._chunk.actions)
            if len(pts) >= 2:
                out.append(MarkerSpec(NS_PLANNED, 0, LINE_STRIP, plot_frame, scale=(c.line_width_m, 0.0, 0.0),
                                      colour=PLANNED_COLOUR, points=pts, lifetime_s=c.marker_lifetime_s))
        pts = self.plot_points(self.executed_actions(now))
        if len(pts) >= 2:
            out.append(MarkerSpec(NS_EXECUTED, 0, LINE_STRIP, plot_frame, scale=(c.line_width_m, 0.0, 0.0),
                                  colour=EXECUTED_COLOUR, points=pts, lifetime_s=c.marker_lifetime_s))
        return out


# --------------------------------------------------------------------------- image
def _rgb255(colour: Colour) -> tuple[int, int, int]:
    """Colour -> an RGB 0-255 tuple for cv2 drawing on an RGB image."""
    return tuple(int(round(255 * v)) for v in colour[:3])  # type: ignore[return-value]


def annotate_image(rgb: np.ndarray, display: ModeDisplay, width_px: int = 384) -> np.ndarray:
    """The observation image upscaled to ``width_px`` with mode/confidence and an e-stop banner.

    Returns a new (H, W, 3) uint8 RGB array; raises ValueError if ``rgb`` is not (H, W, 3) uint8.
    """
    img = np.asarray(rgb)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"annotate_image: expected (H, W, 3) uint8, got {img.shape} {img.dtype}")
    h, w = img.shape[:2]
    out_w = max(int(width_px), 64)
    out_h = max(int(round(h * out_w / w)), 64)
    out = cv2.resize(img, (out_w, out_h), interpolation=cv2.INTER_NEAREST)
    font, scale, thick = cv2.FONT_HERSHEY_SIMPLEX, out_w / 640.0, max(1, out_w // 320)
    bar_h = int(28 * out_w / 384)
    cv2.rectangle(out, (0, 0), (out_w, bar_h), (0, 0, 0), -1)
    conf = display.confidence
    conf_txt = "n/a" if not math.isfinite(conf) else f"{conf:.2f}"
    cv2.putText(out, f"{display.mode}  conf {conf_txt}", (6, int(bar_h * 0.72)), font, scale,
                _rgb255(MODE_COLOURS.get(display.mode, MODE_COLOURS[UNKNOWN_MODE])), thick, cv2.LINE_AA)
    if math.isfinite(conf):  # confidence bar along the bottom of the top bar
        cv2.rectangle(out, (0, bar_h - 3), (int(out_w * min(max(conf, 0.0), 1.0)), bar_h), (255, 255, 255), -1)
    if display.estop_latched:
        top = out_h - 2 * bar_h
        cv2.rectangle(out, (0, top), (out_w, out_h), _rgb255(ESTOP_COLOUR), -1)
        text = f"E-STOP: {display.estop_reason or 'latched'}"
        cv2.putText(out, text[:60], (6, top + int(bar_h * 1.2)), font, scale, (255, 255, 255), thick, cv2.LINE_AA)
    return out
