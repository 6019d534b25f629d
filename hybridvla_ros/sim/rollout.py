"""The control path in one process, for studies and fast closed-loop checks (ROS-free).

``rollout`` runs one episode of a simulator with a policy the way the graph does, minus
DDS and minus the model's latency: a camera frame at ``camera_rate_hz``, a new chunk
whenever the real :class:`~hybridvla_ros.core.action_buffer.ActionBuffer` asks for one
(``recompute_every``), every command through the real
:class:`~hybridvla_ros.core.safety.SafetyFilter`, and the simulator stepped at the
control rate. The graph itself is measured by ``hybridvla eval``; this is for the many
episodes a study needs (training comparisons, learning curves) in minutes.

``expert_chunk`` turns a simulator's scripted expert into a chunk predictor (a perfect
policy): the expert is rolled out for a chunk on a copy of the simulator.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hybridvla_ros.core.action_buffer import ActionBuffer, ActionBufferConfig
from hybridvla_ros.core.safety import SafetyFilter, SafetyLimits
from hybridvla_ros.sim.base import Simulator
from hybridvla_ros.sim.registry import state_vector

# (image (H, W, 3) uint8, joint positions (D,), state joints (E,)) -> (chunk (T, D) absolute targets, confidence)
Predictor = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, float]]

__all__ = ["RolloutResult", "rollout", "expert_chunk", "expert_predictor", "control_path"]


@dataclass(frozen=True)
class RolloutResult:
    """One episode."""

    success: bool
    time_to_success_s: float     # NaN when not successful
    final_error_m: float
    min_error_m: float
    duration_s: float
    chunks: int
    safety_modified: int         # commands the safety filter changed
    mean_confidence: float


def control_path(config_file: str) -> tuple[ActionBufferConfig, SafetyLimits]:
    """The action buffer's and the safety filter's settings in a parameter file: the control
    path :func:`rollout` runs, as the graph's nodes would."""
    from hybridvla_ros.params import from_params, load_node_params
    from hybridvla_ros.params.action_buffer import ActionBufferParams
    from hybridvla_ros.params.safety_filter import SafetyFilterParams

    buffer = from_params(ActionBufferParams, load_node_params(config_file, "action_buffer"), "action_buffer")
    safety = from_params(SafetyFilterParams, load_node_params(config_file, "safety_filter"), "safety_filter")
    return buffer.buffer_config(), safety.safety_limits()


def expert_chunk(sim: Simulator, chunk_size: int, *, on_clone: bool = True) -> np.ndarray:
    """(T, D) the scripted expert's next ``chunk_size`` targets, rolled out on ``sim.clone()``;
    ``sim`` is not changed. ``on_clone=False`` rolls out on ``sim`` itself (it is stepped
    ``chunk_size`` control periods): for a twin the caller already cloned and owns, e.g. one
    taken on the thread that steps the simulator and rolled out on another (the sim node)."""
    twin = sim.clone() if on_clone else sim
    out = np.empty((chunk_size, sim.positions.size))
    for k in range(chunk_size):  # sequential: each step starts where the last one ended
        out[k] = twin.expert_target()
        twin.command_positions(out[k])
        twin.step(sim.control_period_s)
    return out


def expert_predictor(sim: Simulator, chunk_size: int) -> Predictor:
    """A perfect policy for ``sim``: ignores the observation, returns the expert's chunk, confidence 1."""
    return lambda _image, _q, _state: (expert_chunk(sim, chunk_size), 1.0)


def rollout(sim: Simulator, predict: Predictor, buffer_config: ActionBufferConfig, limits: SafetyLimits,
            max_s: float, success_tolerance_m: float, success_hold_s: float = 0.3,
            camera_rate_hz: float = 30.0, observe: Callable[[Simulator], None] | None = None,
            state_joints: tuple[str, ...] = ()) -> RolloutResult:
    """Run one episode from the simulator's current state (reset it first); returns the result.
    The predictor sees the camera frame, the joint positions and the simulator's
    ``state_joints`` (a parameter file's observed-only joints, e.g. the suction cup).
    Ends after the task has been done for ``success_hold_s`` or after ``max_s``. ``observe``,
    if given, is called with the simulator at every control step before the step's command
    is sent (DAgger records the states the policy visits this way). Raises ValueError for
    non-positive durations or rates."""
    for name, value in (("max_s", max_s), ("success_tolerance_m", success_tolerance_m),
                        ("camera_rate_hz", camera_rate_hz)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    dt = buffer_config.control_period_s
    dim = sim.positions.size
    buffer = ActionBuffer(buffer_config, action_dim=dim)
    safety = SafetyFilter(limits, control_period_s=dt)
    frame = sim.render()
    next_frame_s = 1.0 / camera_rate_hz
    t, chunks, confidences = 0.0, 0, []
    errors = [sim.task_error_m()]
    done_since: float | None = None
    first_done: float | None = None
    steps = int(math.ceil(max_s / dt))
    for _ in range(steps):  # a control loop is sequential
        if t >= next_frame_s:
            frame = sim.render()
            next_frame_s += 1.0 / camera_rate_hz
        q = sim.positions
        if observe is not None:
            observe(sim)
        if buffer.needs_recompute(t):
            actions, confidence = predict(frame, q, state_vector(sim, state_joints))
            accepted, _why = buffer.add_chunk(np.asarray(actions, dtype=np.float64), t, dt, t, seq=chunks)
            chunks += int(accepted)
            confidences.append(float(confidence))
        step = buffer.step(t)
        safety.update_measured(q, t)
        res = safety.filter(step.action if step.action is not None else q, t)
        if res.command is not None:
            sim.command_positions(res.command)
        sim.step(dt)
        t += dt
        errors.append(sim.task_error_m())
        if sim.success(success_tolerance_m):
            done_since = t if done_since is None else done_since
            first_done = t if first_done is None else first_done
            if t - done_since >= success_hold_s:
                break
        else:
            done_since = None
    success = done_since is not None and t - done_since >= success_hold_s
    time_to_success_s = first_done if success and first_done is not None else math.nan
    return RolloutResult(success=bool(success), time_to_success_s=time_to_success_s,
                         final_error_m=errors[-1], min_error_m=float(min(errors)), duration_s=t, chunks=chunks,
                         safety_modified=safety.stats["modified"],
                         mean_confidence=float(np.mean(confidences)) if confidences else math.nan)
