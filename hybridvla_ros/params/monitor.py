"""Parameters of ``monitor_node`` (every field has a default; the robot comes from ``/**``).

Action statistics for the distribution-shift check: ``action_mean`` and ``action_std``
are the training data's mean and standard deviation per action dimension. Left empty,
they default to ``home_position`` and ``action_std_span_fraction`` times the joint range
(``position_max - position_min``): the policy is trained on motions around home that use
a fraction of each joint's range. (The checkpoint keeps its normalization statistics in
the weights, not in config.json; copy them here when you have them.)

Markers: for arms, ``plot_dims`` (2 or 3 action dimensions, default the first three) are
drawn as a 3D curve in ``joint_plot_frame_id`` (default ``monitor``), an abstract frame
where the home pose is the origin and 1 m is ``1 / plot_scale`` rad; the node publishes
it on /tf_static relative to ``frame_id`` at ``plot_origin_m`` when tf2_msgs is
installed. For a mobile base (``plot_space`` planar, the default for a Twist
controller) the (x, y) dims are drawn as a path in ``frame_id`` (set it to ``odom``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from hybridvla_ros.core.monitoring import MonitorConfig
from hybridvla_ros.params.base import ParameterError, param
from hybridvla_ros.params.embodiment import EmbodimentParams

MONITORED_NODES = ("sync", "inference", "action_buffer", "safety_filter", "handoff", "correction_recorder")


@dataclass(frozen=True, kw_only=True)
class MonitorParams(EmbodimentParams):
    """Diagnostics, markers and the annotated image."""

    # --- publishing
    diagnostics_rate_hz: float = param("rate of /diagnostics", 1.0, min=0.1, max=50.0)
    marker_rate_hz: float = param("rate of monitor/markers", 5.0, min=0.1, max=60.0)
    image_rate_hz: float = param("max rate of monitor/image (0: no image)", 5.0, min=0.0, max=60.0)
    image_width_px: int = param("width of the annotated image (the observation is upscaled)", 384, min=64, max=1920)
    # --- the graph
    expected_nodes: tuple[str, ...] = param(
        "nodes that should be running: silence is STALE for these, 'not running' (OK) for the others",
        ("sync", "inference", "action_buffer", "safety_filter"), choices=MONITORED_NODES)
    window_s: float = param("sliding window of rates and percentiles (s)", 5.0, min=0.5, max=600.0)
    stale_after_s: float = param("a node silent this long is STALE (s)", 2.0, min=0.05, max=600.0)
    rate_warn_fraction: float = param("WARN below this fraction of an expected rate", 0.8, min=0.0, max=1.0)
    rate_error_fraction: float = param("ERROR below this fraction of an expected rate", 0.5, min=0.0, max=1.0)
    # --- sync
    camera_rate_hz: float = param("expected observation rate: the camera's frame rate", 30.0, min=0.1, max=1000.0)
    max_skew_s: float = param("WARN when the proprio skew exceeds this (sync's max_skew_s)", 0.006, min=1e-4, max=1.0)
    # --- inference
    latency_budget_s: float = param("inference latency budget: WARN when p99 is above", 0.05, min=1e-4, max=10.0)
    latency_error_factor: float = param("ERROR when latency p50 is above this times the budget", 2.0,
                                        min=1.0, max=100.0)
    confidence_warn_below: float = param("WARN when the mean chunk confidence is below", 0.2, min=0.0, max=1.0)
    # --- safety filter
    intervention_warn_fraction: float = param(
        "WARN when more than this fraction of commands were modified over the window", 0.2, min=0.0, max=1.0)
    # --- task (outcomes on report_outcome, std_msgs/Bool)
    success_window: int = param("outcomes the success rate is computed over", 20, min=1, max=10000)
    min_outcomes: int = param("outcomes needed before the success rate can WARN", 5, min=1, max=10000)
    success_warn_below: float = param("WARN when the success rate is below", 0.5, min=0.0, max=1.0)
    # --- action distribution shift
    action_mean: tuple[float, ...] = param("training mean per action dim (empty: home_position)", ())
    action_std: tuple[float, ...] = param(
        "training std per action dim (empty: action_std_span_fraction * joint range)", ())
    action_std_span_fraction: float = param("default std as a fraction of position_max - position_min",
                                            0.25, min=1e-3, max=10.0)
    shift_window: int = param("recent policy actions the shift is computed over", 100, min=1, max=100000)
    shift_min_samples: int = param("actions needed before the shift can WARN", 20, min=1, max=100000)
    shift_warn_above: float = param("WARN when the largest per-dim mean |z| is above", 2.0, min=0.0, max=100.0)
    # --- markers
    frame_id: str = param("frame of the text markers and of planar paths (odom for a mobile base)", "base_link")
    plot_space: Literal["auto", "joint", "planar"] = param(
        "planned/executed curves: joint space (arms) or planar x, y (mobile base); auto: planar for a "
        "geometry_msgs/Twist controller", "auto")
    plot_dims: tuple[int, ...] = param("action dims drawn (2 or 3; empty: first 3 for joint, 0 and 1 for planar)", (),
                                       min=0)
    joint_plot_frame_id: str = param("frame of joint-space curves", "monitor")
    plot_scale: float = param("joint-space curve scale (m per rad or m)", 0.2, min=1e-4, max=100.0)
    plot_origin_m: tuple[float, ...] = param("where the joint plot frame sits in frame_id (x, y, z)",
                                             (0.0, -0.8, 0.5))
    publish_plot_frame: bool = param("publish frame_id -> joint_plot_frame_id on /tf_static", True)
    text_position_m: tuple[float, ...] = param("position of the mode text in frame_id (x, y, z)", (0.0, 0.0, 1.2))
    text_height_m: float = param("height of the mode text (m)", 0.08, min=1e-3, max=10.0)
    line_width_m: float = param("width of the curves (m)", 0.01, min=1e-4, max=1.0)
    executed_history_s: float = param("length of the executed path (s)", 3.0, min=0.1, max=600.0)
    marker_lifetime_s: float = param("markers vanish this long after the monitor stops (s)", 1.0, min=0.0, max=60.0)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rate_error_fraction > self.rate_warn_fraction:
            raise ParameterError(f"rate_error_fraction: {self.rate_error_fraction} is above "
                                 f"rate_warn_fraction {self.rate_warn_fraction}")
        for name in ("action_mean", "action_std"):
            value = getattr(self, name)
            if value and len(value) != self.action_dim:
                raise ParameterError(f"{name}: needs {self.action_dim} values (one per joint) or none, "
                                     f"got {len(value)}")
        if self.action_std and min(self.action_std) <= 0:
            raise ParameterError(f"action_std: every value must be > 0, got {list(self.action_std)}")
        dims = self.plot_dims
        if dims and (len(dims) not in (2, 3) or len(set(dims)) != len(dims) or max(dims) >= self.action_dim):
            raise ParameterError(f"plot_dims: needs 2 or 3 distinct dims below action_dim {self.action_dim}, "
                                 f"got {list(dims)}")
        if self.resolved_plot_space == "planar" and len(self.resolved_plot_dims) != 2:
            raise ParameterError(f"plot_dims: planar plots take 2 dims (x, y), got {list(dims)}")
        if not dims and self.resolved_plot_space == "joint" and self.action_dim < 2:
            raise ParameterError("plot_dims: a joint-space plot needs 2 or more action dims")
        for name in ("plot_origin_m", "text_position_m"):
            if len(getattr(self, name)) != 3:
                raise ParameterError(f"{name}: needs 3 values (x, y, z), got {list(getattr(self, name))}")

    @property
    def resolved_plot_space(self) -> str:
        """joint or planar."""
        if self.plot_space != "auto":
            return self.plot_space
        return "planar" if self.velocity_base else "joint"

    @property
    def resolved_plot_dims(self) -> tuple[int, ...]:
        """plot_dims, or the default for the plot space."""
        if self.plot_dims:
            return self.plot_dims
        return (0, 1) if self.resolved_plot_space == "planar" else tuple(range(min(3, self.action_dim)))

    @property
    def resolved_action_mean(self) -> tuple[float, ...]:
        """action_mean, or home_position."""
        return self.action_mean or self.home_position

    @property
    def resolved_action_std(self) -> tuple[float, ...]:
        """action_std, or action_std_span_fraction times the joint range."""
        if self.action_std:
            return self.action_std
        span = np.asarray(self.position_max) - np.asarray(self.position_min)
        return tuple(float(v) for v in self.action_std_span_fraction * span)

    def monitor_config(self) -> MonitorConfig:
        """The core's thresholds and drawing choices (hybridvla_ros.core.monitoring)."""
        x, y, z = self.text_position_m
        return MonitorConfig(
            embodiment=self.embodiment, joint_names=tuple(self.joint_names), control_rate_hz=self.control_rate_hz,
            recompute_every=self.recompute_every, expected_nodes=tuple(self.expected_nodes), window_s=self.window_s,
            stale_after_s=self.stale_after_s, rate_warn_fraction=self.rate_warn_fraction,
            rate_error_fraction=self.rate_error_fraction, camera_rate_hz=self.camera_rate_hz,
            max_skew_s=self.max_skew_s, latency_budget_s=self.latency_budget_s,
            latency_error_factor=self.latency_error_factor, confidence_warn_below=self.confidence_warn_below,
            intervention_warn_fraction=self.intervention_warn_fraction, success_window=self.success_window,
            min_outcomes=self.min_outcomes, success_warn_below=self.success_warn_below,
            action_mean=self.resolved_action_mean, action_std=self.resolved_action_std,
            shift_window=self.shift_window, shift_min_samples=self.shift_min_samples,
            shift_warn_above=self.shift_warn_above, frame_id=self.frame_id, plot_space=self.resolved_plot_space,
            plot_dims=self.resolved_plot_dims, joint_plot_frame_id=self.joint_plot_frame_id,
            plot_scale=self.plot_scale, plot_home=tuple(self.home_position), text_position_m=(x, y, z),
            text_height_m=self.text_height_m, line_width_m=self.line_width_m,
            executed_history_s=self.executed_history_s, marker_lifetime_s=self.marker_lifetime_s)
