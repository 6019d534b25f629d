"""The control path in one process, for studies and fast closed-loop checks (ROS-free).

``rollout`` runs one episode of a simulator with a policy the way the graph does, minus
DDS and minus the model's latency: a camera frame at ``camera_rate_hz``, a new chunk
whenever the real :class:`~hybridvla_ros.core.action_buffer.ActionBuffer` asks for one
(``recompute_every``), every command through the real
:class:`~hybridvla_ros.core.safety.SafetyFilter`, and the simulator stepped at the
control rate. The graph itself is measured by ``hybridvla eval``; this is for the many
episodes a study needs (training comparisons, learning curves) in minutes.

``delay_s`` models inference latency: a chunk answering the frame of time t enters the
buffer at t + delay_s (placed by its stamp, as the graph's buffer does), while the robot goes
on with the chunk it has. With ``rtc`` the predictor is also given ``prefix=`` a
:class:`~hybridvla_ros.core.rtc.ChunkPrefix` (the executing chunk's targets on the new chunk's
time slots, and how many of them run before the new chunk arrives), as the inference node
gives it to a policy that inpaints: real-time chunking. ``trace=True`` keeps every command sent and the chunk it came
from (seams, jerk: ``hybridvla bench-chunking``).

``expert_chunk`` turns a simulator's scripted expert into a chunk predictor (a perfect
policy): the expert is rolled out for a chunk on a copy of the simulator.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hybridvla_ros.core.action_buffer import ActionBuffer, ActionBufferConfig
from hybridvla_ros.core.rtc import ChunkPrefix, plan_prefix
from hybridvla_ros.core.safety import SafetyFilter, SafetyLimits
from hybridvla_ros.sim.base import Simulator
from hybridvla_ros.sim.registry import state_vector

# (image (H, W, 3) uint8, joint positions (D,), state joints (E,)) -> (chunk (T, D) absolute targets, confidence)
Predictor = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, float]]

__all__ = ["RolloutResult", "RolloutTrace", "rollout", "expert_chunk", "expert_predictor",
           "expert_rtc_predictor", "control_path"]


@dataclass(frozen=True)
class RolloutTrace:
    """Every control period of an episode: the command sent (NaN row when none), the buffer's action
    before the safety filter (NaN row when holding), the chunk seq and step index of that action
    (-1 when holding) and whether it was blended."""

    commands: np.ndarray
    actions: np.ndarray
    chunk_seq: np.ndarray
    step_index: np.ndarray
    blended: np.ndarray


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
    trace: RolloutTrace | None = None


def control_path(config_file: str) -> tuple[ActionBufferConfig, SafetyLimits]:
    """The action buffer's and the safety filter's settings in a parameter file: the control
    path :func:`rollout` runs, as the graph's nodes would."""
    from hybridvla_ros.params import from_params, load_node_params
    from hybridvla_ros.params.action_buffer import ActionBufferParams
    from hybridvla_ros.params.safety_filter import SafetyFilterParams

    buffer = from_params(ActionBufferParams, load_node_params(config_file, "action_buffer"), "action_buffer")
    safety = from_params(SafetyFilterParams, load_node_params(config_file, "safety_filter"), "safety_filter")
    return buffer.buffer_config(), safety.safety_limits()


def expert_chunk(sim: Simulator, chunk_size: int, *, on_clone: bool = True,
                 until_event: bool = False) -> np.ndarray:
    """(T, D) the scripted expert's next ``chunk_size`` targets, rolled out on ``sim.clone()``;
    ``sim`` is not changed. ``on_clone=False`` rolls out on ``sim`` itself (it is stepped
    ``chunk_size`` control periods, fewer when ``until_event`` cuts the chunk): for a twin the
    caller already cloned and owns, e.g. one taken on the thread that steps the simulator and
    rolled out on another (the sim node).
    ``until_event``: the chunk stops at the first change of the observed-only joints (the
    suction cup gripping or letting go) and holds the last target before it, as
    :func:`hybridvla_ros.sim.demos.chunk_indices` labels demonstrations."""
    twin = sim.clone() if on_clone else sim
    out = np.empty((chunk_size, sim.positions.size))
    start = dict(twin.state_joint_positions) if until_event else None
    for k in range(chunk_size):  # sequential: each step starts where the last one ended
        out[k] = twin.expert_target()
        twin.command_positions(out[k])
        twin.step(sim.control_period_s)
        if start is not None and twin.state_joint_positions != start:
            out[k + 1:] = out[k]
            break
    return out


def expert_predictor(sim: Simulator, chunk_size: int) -> Predictor:
    """A perfect policy for ``sim``: ignores the observation, returns the expert's chunk, confidence 1."""
    return lambda _image, _q, _state: (expert_chunk(sim, chunk_size), 1.0)


def _expert_guide_weights(prefix: ChunkPrefix, chunk_size: int) -> np.ndarray:
    """(chunk_size,) 1 for the frozen steps, then a cosine from 1 to 0 over the rest of the overlap, then 0."""
    n = min(prefix.chunk_size, chunk_size)
    frozen = min(prefix.frozen_steps, n)
    positive = prefix.weights[frozen:n] > 0
    overlap = frozen + (int(np.argmin(positive)) if not positive.all() else n - frozen)
    k = np.arange(chunk_size)
    ramp = 0.5 * (1.0 + np.cos(np.pi * (k - frozen + 1) / (overlap - frozen + 1)))
    return np.where(k < frozen, 1.0, np.where(k < overlap, ramp, 0.0))


def expert_rtc_predictor(sim: Simulator, chunk_size: int) -> Callable[..., tuple[np.ndarray, float]]:
    """The scripted expert with real-time chunking: the frozen steps of the executing chunk are kept
    (commanded on a copy of the simulator), and the expert plans the rest from where they leave
    the robot, pulled toward the executing chunk over the rest of the overlap by a weight falling
    from 1 to 0 as a half cosine (:func:`_expert_guide_weights`; each step is commanded on the copy,
    so the expert's next target starts from the guided one). The guidance is the soft mask's
    analogue for a policy that is not sampled; the half cosine leaves the frozen steps with no
    change of slope, where the paper's mask (slope 2.6 at its start) made the seams rougher:
    seam jerk 2.3x the in-chunk jerk at 300 ms on the MuJoCo Franka, 1.1x with the cosine.
    Without a ``prefix`` it is :func:`expert_predictor`."""
    def predict(_image: np.ndarray, _q: np.ndarray, _state: np.ndarray,
                prefix: ChunkPrefix | None = None) -> tuple[np.ndarray, float]:
        if prefix is None or prefix.frozen_steps <= 0:
            return expert_chunk(sim, chunk_size), 1.0
        twin = sim.clone()
        weights = _expert_guide_weights(prefix, chunk_size)
        out = np.empty((chunk_size, sim.positions.size))
        for k in range(chunk_size):
            w = float(weights[k])
            out[k] = prefix.targets[k] if w >= 1.0 else (
                w * prefix.targets[k] + (1.0 - w) * twin.expert_target() if w > 0.0 else twin.expert_target())
            twin.command_positions(out[k])
            twin.step(sim.control_period_s)
        return out, 1.0
    return predict


def rollout(sim: Simulator, predict: Predictor | Callable[..., tuple[np.ndarray, float]],
            buffer_config: ActionBufferConfig, limits: SafetyLimits,
            max_s: float, success_tolerance_m: float, success_hold_s: float = 0.3,
            camera_rate_hz: float = 30.0, observe: Callable[[Simulator], None] | None = None,
            state_joints: tuple[str, ...] = (), delay_s: float = 0.0, rtc: bool = False,
            trace: bool = False, render: Callable[[Simulator], np.ndarray] | None = None) -> RolloutResult:
    """Run one episode from the simulator's current state (reset it first); returns the result.
    The predictor sees the camera frame, the joint positions and the simulator's
    ``state_joints`` (a parameter file's observed-only joints, e.g. the suction cup).
    Ends after the task has been done for ``success_hold_s`` or after ``max_s``. ``observe``,
    if given, is called with the simulator at every control step before the step's command
    is sent (DAgger records the states the policy visits this way). ``delay_s``: a chunk enters
    the buffer this long after the frame it answers; with ``rtc`` the predictor is called with
    ``prefix=`` a ChunkPrefix (None when no chunk overlaps the new one). ``render`` takes the
    camera frame the predictor sees (default ``sim.render()``; a multi-camera policy's:
    :func:`hybridvla_ros.sim.base.render_cameras`). Raises ValueError for
    non-positive durations or rates."""
    for name, value in (("max_s", max_s), ("success_tolerance_m", success_tolerance_m),
                        ("camera_rate_hz", camera_rate_hz)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    if not (isinstance(delay_s, (int, float)) and math.isfinite(delay_s) and delay_s >= 0):
        raise ValueError(f"delay_s must be a finite number >= 0, got {delay_s!r}")
    dt = buffer_config.control_period_s
    dim = sim.positions.size
    buffer = ActionBuffer(buffer_config, action_dim=dim)
    safety = SafetyFilter(limits, control_period_s=dt)
    take_frame: Callable[[Simulator], np.ndarray] = render if render is not None else (lambda s: s.render())
    frame = take_frame(sim)
    next_frame_s = 1.0 / camera_rate_hz
    t, chunks, confidences = 0.0, 0, []
    errors = [sim.task_error_m()]
    done_since: float | None = None
    first_done: float | None = None
    steps = int(math.ceil(max_s / dt))
    call: Callable[..., tuple[np.ndarray, float]] = predict
    pending: tuple[float, float, np.ndarray] | None = None  # (enters the buffer at, stamp, chunk)
    last_chunk: tuple[float, np.ndarray] | None = None
    sent: list[np.ndarray] = []
    asked: list[np.ndarray] = []
    seqs: list[tuple[int, int, bool]] = []
    for _ in range(steps):  # a control loop is sequential
        if t >= next_frame_s:
            frame = take_frame(sim)
            next_frame_s += 1.0 / camera_rate_hz
        q = sim.positions
        if observe is not None:
            observe(sim)
        if pending is None and buffer.needs_recompute(t):
            state = state_vector(sim, state_joints)
            if rtc:
                prefix = None if last_chunk is None else plan_prefix(
                    last_chunk[1], last_chunk[0], dt, t, dt, last_chunk[1].shape[0], delay_s)
                actions, confidence = call(frame, q, state, prefix=prefix)
            else:
                actions, confidence = predict(frame, q, state)
            pending = (t + delay_s - 1e-9, t, np.asarray(actions, dtype=np.float64))
            confidences.append(float(confidence))
        if pending is not None and t >= pending[0]:
            _, stamp, actions = pending
            accepted, _why = buffer.add_chunk(actions, stamp, dt, t, seq=chunks)
            if accepted:
                last_chunk = (stamp, actions)
            chunks += int(accepted)
            pending = None
        step = buffer.step(t)
        safety.update_measured(q, t)
        res = safety.filter(step.action if step.action is not None else q, t)
        if trace:
            sent.append(res.command if res.command is not None else np.full(dim, np.nan))
            asked.append(step.action if step.action is not None else np.full(dim, np.nan))
            seqs.append((step.chunk_seq if step.action is not None else -1,
                         step.step_index if step.action is not None else -1, step.blended))
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
                         mean_confidence=float(np.mean(confidences)) if confidences else math.nan,
                         trace=_trace(sent, asked, seqs, dim) if trace else None)


def _trace(sent: list[np.ndarray], asked: list[np.ndarray], seqs: list[tuple[int, int, bool]],
           dim: int) -> RolloutTrace:
    info = np.array(seqs, dtype=np.int64).reshape(-1, 3)
    return RolloutTrace(commands=np.array(sent, dtype=np.float64).reshape(-1, dim),
                        actions=np.array(asked, dtype=np.float64).reshape(-1, dim), chunk_seq=info[:, 0],
                        step_index=info[:, 1], blended=info[:, 2].astype(bool))
