"""Record scripted-expert demonstrations in the simulators (the training data contract).

The simulator is the one the sim node would run for these parameters: ``physics`` and
``scene`` of a ``SimRobotParams`` (MuJoCo for franka / aloha when the parameter file says
so), else the kinematic one (:func:`hybridvla_ros.sim.registry.make_sim`).

A demonstration set is a dict (saved as one ``.npz``) with N = episodes x steps samples:

============== ===================== =====================================================
key            shape / type          meaning
============== ===================== =====================================================
images         (N, S, S, 3) uint8    RGB camera image at the step, resized to S x S with
                                     cv2.INTER_AREA (a square stretch of the whole image,
                                     exactly what the inference node does to camera frames);
               (N, K, S, S, 3)       recorded from K cameras (``cameras``), in that order
proprio        (N, D) float32        measured joint positions at the step
state          (N, E) float32        the parameter file's ``state_joints`` at the step
                                     (observed, not commanded: the Franka suction cup's
                                     vacuum, 1 holding / 0 not); E = 0 for most robots,
                                     and a file without the key loads with E = 0
actions        (N, T, D) float32     T = chunk_size; ``actions[n, k]`` is the expert's clean
                                     absolute position target commanded k control periods
                                     after step n (k = 0: the one sent at step n), padded
                                     with the episode's last target
episode        (N,) int32            episode index of the sample
embodiment     str                   params.embodiment
instruction    str                   params.instruction
control_period_s float               seconds between two steps (1 / control_rate_hz)
============== ===================== =====================================================

How the expert did, one entry per episode in episode order (optional: a file without
them loads without them, and all three come together):

==================== =============== ======================================================
expert_success       (E,) bool       the sim's ``success`` at the episode's last step
expert_final_error_m (E,) float32    its ``task_error_m`` then (m)
success_tolerance_m  float           the tolerance judged against (``params.success_tolerance_m``;
                                     NaN: the simulator's own default)
==================== =============== ======================================================

Training reads them (:func:`hybridvla_ros.model.demo_data.expert_summary`) and refuses
demonstrations whose expert mostly fails: a recording cut off before the expert arrives
teaches the way there but never the arrival.

Recovery data (DART, Laskey et al. 2017): the command actually executed is the expert's
target plus Gaussian noise of std ``action_noise * max_velocity * control_period`` per
joint, so the robot drifts off the expert's path and the labels show how to come back;
the recorded label is always the clean expert target.
"""

from __future__ import annotations

import math
import numbers
import os
import sys
import tempfile
import zipfile
from typing import Any

import numpy as np

from hybridvla_ros.core.dataset_keys import (
    DEMO_ACTIONS,
    DEMO_CONTROL_PERIOD,
    DEMO_EMBODIMENT,
    DEMO_EPISODE,
    DEMO_IMAGES,
    DEMO_INSTRUCTION,
    DEMO_KEYS,
    DEMO_PROPRIO,
    DEMO_STATE,
)
from hybridvla_ros.core.image import resize_views
from hybridvla_ros.params.embodiment import EmbodimentParams
from hybridvla_ros.sim.base import render_cameras
from hybridvla_ros.sim.registry import make_sim, state_vector

# How the expert did (optional keys, per episode; see the module docstring).
DEMO_EXPERT_SUCCESS = "expert_success"                # (E,) bool
DEMO_EXPERT_FINAL_ERROR = "expert_final_error_m"      # (E,) float32 m
DEMO_SUCCESS_TOLERANCE = "success_tolerance_m"        # float m, NaN: the simulator's default
DEMO_EXPERT_KEYS: tuple[str, ...] = (DEMO_EXPERT_SUCCESS, DEMO_EXPERT_FINAL_ERROR, DEMO_SUCCESS_TOLERANCE)
CHUNK_LABELS = ("until_event", "full")  # how a chunk's labels end (record_demonstrations)

__all__ = [
    "CHUNK_LABELS",
    "DEMO_EXPERT_FINAL_ERROR",
    "DEMO_EXPERT_KEYS",
    "DEMO_EXPERT_SUCCESS",
    "DEMO_KEYS",
    "DEMO_SUCCESS_TOLERANCE",
    "chunk_indices",
    "record_demonstrations",
    "save_demonstrations",
    "load_demonstrations",
    "validate_demonstrations",
]



def _positive_int(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def chunk_indices(steps: int, chunk: int, state: np.ndarray | None = None) -> np.ndarray:
    """(steps, chunk) indices into one episode's per-step labels: ``[n, k]`` is step ``n + k``,
    the episode's last step where that runs past its end, and, given the episode's
    observed-only joints ``state`` (steps, E), the last step before the first one whose
    state differs from step ``n``'s where that comes first (``until_event`` labels: a chunk
    does not promise what happens after the suction cup grips or lets go)."""
    future = np.minimum(np.arange(steps)[:, None] + np.arange(chunk)[None, :], steps - 1)  # (S, T)
    if state is None or state.size == 0:
        return future
    changed = np.flatnonzero(np.any(state[1:] != state[:-1], axis=1)) + 1  # steps whose state differs from the last
    # the first change after step n: changed[searchsorted(changed, n, 'right')], else none (steps)
    nxt = np.append(changed, steps)[np.searchsorted(changed, np.arange(steps), side="right")]  # (S,)
    return np.minimum(future, (nxt - 1)[:, None])


def record_demonstrations(params: EmbodimentParams, num_episodes: int, steps_per_episode: int,
                          image_size: int = 96, seed: int = 0, action_noise: float = 0.02,
                          progress: bool = False, drift_std_rad: float = 0.0,
                          drift_tau_steps: float = 10.0,
                          chunk_labels: str = "full",
                          cameras: tuple[str, ...] = ()) -> dict[str, np.ndarray | str | float]:
    """Roll out the simulator's scripted expert at ``params.control_rate_hz`` and return the
    demonstration dict described in the module docstring (N = num_episodes * steps_per_episode).

    Each episode resets the sim with its own seed drawn from ``seed`` (same arguments, same
    data). The camera renders at ``params.image_width x image_height`` when the params carry
    them (SimRobotParams), else 160 x 120, as the sim node publishes. Raises ValueError for
    non-positive counts/sizes, a negative seed or a negative/non-finite ``action_noise``.

    ``drift_std_rad`` > 0 adds a slowly varying offset to every executed command as well (an
    Ornstein-Uhlenbeck process per joint, time constant ``drift_tau_steps`` control periods,
    that standard deviation): white DART noise is cancelled by the expert at once, so the
    data barely leave its path; a drift carries the robot off it for a while and the labels
    show the way back (on the MuJoCo Franka 0.003 rad was the only data change that gave a
    trained policy any successes). Labels stay the clean expert targets.

    ``chunk_labels``: ``"full"``, each chunk is the expert's next T targets; ``"until_event"``,
    a chunk stops at the next change of the observed-only joints (the Franka's suction cup
    gripping or letting go) and holds the last target before it (:func:`chunk_indices`): a
    policy that lags a little then keeps going for the grip instead of following the
    recorded lift without the cube.

    ``cameras``: () records the scene camera; two or more of the robot's camera names
    (``params.camera_name`` and its extra cameras) record each, images (N, K, S, S, 3).

    Each episode's outcome is judged at its last step against ``params.success_tolerance_m``
    (SimRobotParams; other params: the simulator's default) and returned under the
    ``expert_*`` keys."""
    episodes = _positive_int("num_episodes", num_episodes)
    steps = _positive_int("steps_per_episode", steps_per_episode)
    size = _positive_int("image_size", image_size, 8)
    seed = _positive_int("seed", seed, 0)
    if chunk_labels not in CHUNK_LABELS:
        raise ValueError(f"chunk_labels must be one of {CHUNK_LABELS}, got {chunk_labels!r}")
    if isinstance(action_noise, bool) or not isinstance(action_noise, numbers.Real) \
            or not math.isfinite(action_noise) or action_noise < 0:
        raise ValueError(f"action_noise must be a finite number >= 0, got {action_noise!r}")
    for name, value, low in (("drift_std_rad", drift_std_rad, 0.0), ("drift_tau_steps", drift_tau_steps, 1.0)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < low:
            raise ValueError(f"{name} must be a finite number >= {low}, got {value!r}")
    keep = 1.0 - 1.0 / float(drift_tau_steps)                 # OU: o <- keep * o + kick * N(0, 1)
    kick = float(drift_std_rad) * math.sqrt(1.0 - keep * keep)  # stationary std = drift_std_rad

    sim = make_sim(params, int(getattr(params, "image_width", 160)), int(getattr(params, "image_height", 120)),
                   seed=seed, physics=getattr(params, "physics", "kinematic"),
                   scene=getattr(params, "scene", "nominal"))
    period_s = params.control_period_s
    dim, chunk = params.action_dim, params.chunk_size
    lo, hi = np.asarray(params.position_min), np.asarray(params.position_max)
    noise_std = action_noise * np.asarray(params.max_velocity) * period_s  # (D,)
    seq = np.random.SeedSequence(seed)
    episode_seeds = seq.generate_state(episodes)  # (E,) uint32, independent per episode
    noise_rng = np.random.default_rng(seq.spawn(1)[0])

    n_total = episodes * steps
    cameras = tuple(cameras)
    anchor = str(getattr(params, "camera_name", ""))
    images = np.empty((n_total, *((len(cameras),) if cameras else ()), size, size, 3), dtype=np.uint8)
    proprio = np.empty((n_total, dim), dtype=np.float32)
    state_joints = tuple(getattr(params, "state_joints", ()))
    state = np.empty((n_total, len(state_joints)), dtype=np.float32)
    labels = np.empty((episodes, steps, dim), dtype=np.float64)  # clean expert targets
    tolerance = getattr(params, "success_tolerance_m", None)
    final_error = np.empty(episodes, dtype=np.float32)
    success = np.empty(episodes, dtype=bool)
    for e in range(episodes):
        sim.reset(seed=int(episode_seeds[e]))
        drift = np.zeros(dim)  # (D,)
        for k in range(steps):  # a rollout is sequential
            n = e * steps + k
            images[n] = resize_views(render_cameras(sim, cameras, anchor), size)
            proprio[n] = sim.positions
            state[n] = state_vector(sim, state_joints)
            target = sim.expert_target()
            labels[e, k] = target
            if kick > 0.0:
                drift = keep * drift + kick * noise_rng.normal(0.0, 1.0, dim)
            executed = np.clip(target + drift + noise_rng.normal(0.0, 1.0, dim) * noise_std, lo, hi)
            sim.command_positions(executed)
            sim.step(period_s)
        final_error[e] = sim.task_error_m()
        success[e] = sim.success(float(tolerance)) if tolerance is not None else sim.success()
        if progress:
            print(f"[demos] {params.embodiment}: episode {e + 1}/{episodes}, "
                  f"final task error {final_error[e]:.3f} m ({'reached' if success[e] else 'NOT reached'})",
                  file=sys.stderr, flush=True)

    # actions[e, k, j] = labels[e, min(k + j, steps - 1)]: future targets, last one repeated
    # (until_event: also cut at the next state change).
    per_episode = state.reshape(episodes, steps, -1)
    actions = np.stack([labels[e][chunk_indices(steps, chunk, per_episode[e] if chunk_labels == "until_event"
                                                else None)] for e in range(episodes)])
    actions = actions.reshape(n_total, chunk, dim).astype(np.float32)  # (N, T, D)
    return {
        DEMO_IMAGES: images,
        DEMO_PROPRIO: proprio,
        DEMO_STATE: state,
        DEMO_ACTIONS: actions,
        DEMO_EPISODE: np.repeat(np.arange(episodes, dtype=np.int32), steps),
        DEMO_EMBODIMENT: params.embodiment,
        DEMO_INSTRUCTION: params.instruction,
        DEMO_CONTROL_PERIOD: float(period_s),
        DEMO_EXPERT_SUCCESS: success,
        DEMO_EXPERT_FINAL_ERROR: final_error,
        DEMO_SUCCESS_TOLERANCE: float(tolerance) if tolerance is not None else math.nan,
    }


def _validate_expert_outcome(demos: dict, episodes: int) -> dict[str, np.ndarray | float]:
    """The optional ``expert_*`` keys of ``demos`` checked and normalized ({} when absent);
    ValueError when only some are there or one has a bad shape / value."""
    present = [k for k in DEMO_EXPERT_KEYS if k in demos]
    if not present:
        return {}
    if len(present) != len(DEMO_EXPERT_KEYS):
        raise ValueError(f"demonstrations: {present} without {[k for k in DEMO_EXPERT_KEYS if k not in present]} "
                         "(the expert's outcome keys come together)")
    success = np.asarray(demos[DEMO_EXPERT_SUCCESS])
    if success.shape != (episodes,) or success.dtype != np.bool_:
        raise ValueError(f"demonstrations: {DEMO_EXPERT_SUCCESS} must be ({episodes},) bool (one per episode), "
                         f"got {success.shape} {success.dtype}")
    error = np.asarray(demos[DEMO_EXPERT_FINAL_ERROR])
    if error.shape != (episodes,) or not np.issubdtype(error.dtype, np.floating) \
            or not np.all(np.isfinite(error)) or np.any(error < 0):
        raise ValueError(f"demonstrations: {DEMO_EXPERT_FINAL_ERROR} must be ({episodes},) finite floats >= 0, "
                         f"got {error.shape} {error.dtype}")
    tol = demos[DEMO_SUCCESS_TOLERANCE]
    tol = tol.item() if isinstance(tol, np.ndarray) and tol.ndim == 0 else tol
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) \
            or not (math.isnan(float(tol)) or 0.0 <= float(tol) < math.inf):
        raise ValueError(f"demonstrations: {DEMO_SUCCESS_TOLERANCE} must be a number >= 0 or NaN, got {tol!r}")
    return {DEMO_EXPERT_SUCCESS: success, DEMO_EXPERT_FINAL_ERROR: error.astype(np.float32, copy=False),
            DEMO_SUCCESS_TOLERANCE: float(tol)}


def validate_demonstrations(demos: dict) -> dict[str, np.ndarray | str | float]:
    """Return ``demos`` with every key checked and normalized to the documented dtypes
    (arrays are not copied when already right). Raises ValueError naming the first missing
    key, bad shape, bad dtype or non-finite value."""
    missing = [k for k in DEMO_KEYS if k not in demos]
    if missing:
        raise ValueError(f"demonstrations: missing keys {missing} (need {list(DEMO_KEYS)})")
    images = np.asarray(demos[DEMO_IMAGES])
    if images.ndim not in (4, 5) or images.shape[-1] != 3 or images.shape[-3] != images.shape[-2] \
            or images.dtype != np.uint8:
        raise ValueError(f"demonstrations: images must be (N, S, S, 3) or, from K cameras, (N, K, S, S, 3) uint8, "
                         f"got {images.shape} {images.dtype}")
    n = images.shape[0]
    out: dict[str, np.ndarray | str | float] = {DEMO_IMAGES: images}
    numeric: dict[str, np.ndarray] = {}
    for key, ndim in ((DEMO_PROPRIO, 2), (DEMO_ACTIONS, 3)):
        arr = np.asarray(demos[key])
        if arr.ndim != ndim or arr.shape[0] != n or not np.issubdtype(arr.dtype, np.number):
            want = "(N, D)" if ndim == 2 else "(N, T, D)"
            raise ValueError(f"demonstrations: {key} must be numeric {want} with N = {n}, got {arr.shape} {arr.dtype}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"demonstrations: {key} has non-finite values")
        numeric[key] = arr.astype(np.float32, copy=False)
    out.update(numeric)
    actions, proprio = numeric[DEMO_ACTIONS], numeric[DEMO_PROPRIO]
    if actions.shape[2] != proprio.shape[1] or actions.shape[1] < 1:
        raise ValueError(f"demonstrations: actions {actions.shape} do not match proprio "
                         f"{proprio.shape} (need (N, T>=1, D))")
    episode = np.asarray(demos[DEMO_EPISODE])
    if episode.shape != (n,) or not np.issubdtype(episode.dtype, np.integer):
        raise ValueError(f"demonstrations: episode must be ({n},) integers, got {episode.shape} {episode.dtype}")
    out[DEMO_EPISODE] = episode.astype(np.int32, copy=False)
    state = np.asarray(demos[DEMO_STATE]) if DEMO_STATE in demos else np.zeros((n, 0), np.float32)
    if state.ndim != 2 or state.shape[0] != n or not np.issubdtype(state.dtype, np.number) \
            or not np.all(np.isfinite(state)):
        raise ValueError(f"demonstrations: state must be finite numeric (N, E) with N = {n}, "
                         f"got {state.shape} {state.dtype}")
    out[DEMO_STATE] = state.astype(np.float32, copy=False)
    for key in (DEMO_EMBODIMENT, DEMO_INSTRUCTION):
        value = demos[key]
        value = value.item() if isinstance(value, np.ndarray) and value.ndim == 0 else value
        if not isinstance(value, str):
            raise ValueError(f"demonstrations: {key} must be a string, got {value!r}")
        out[key] = value
    period = demos[DEMO_CONTROL_PERIOD]
    period = period.item() if isinstance(period, np.ndarray) and period.ndim == 0 else period
    if isinstance(period, bool) or not isinstance(period, numbers.Real) or not math.isfinite(period) or period <= 0:
        raise ValueError(f"demonstrations: control_period_s must be a number > 0, got {period!r}")
    out[DEMO_CONTROL_PERIOD] = float(period)
    out.update(_validate_expert_outcome(demos, len(np.unique(out[DEMO_EPISODE]))))
    return out


def save_demonstrations(demos: dict, path: str) -> None:
    """Write ``demos`` (validated first) to ``path`` exactly (no '.npz' appended) as a compressed
    .npz, atomically: a crash never leaves a half-written file under ``path``. Creates missing
    parent directories. Raises ValueError for invalid demos, OSError if it cannot write."""
    data = validate_demonstrations(demos)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".demos-", suffix=".npz.tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            arrays: dict[str, Any] = {k: (np.asarray(v) if not isinstance(v, np.ndarray) else v)
                                      for k, v in data.items()}
            np.savez_compressed(f, **arrays)
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; a data file is for others to read
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_demonstrations(path: str) -> dict[str, np.ndarray | str | float]:
    """Read a file written by :func:`save_demonstrations` into the documented dict.
    Raises FileNotFoundError if ``path`` does not exist, ValueError if it is not an .npz or
    a key is missing / has a bad shape or dtype."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"demonstrations file not found: {path!r}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            raw = {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ValueError(f"demonstrations file {path!r} is not a readable .npz: {exc}") from None
    try:
        return validate_demonstrations(raw)
    except ValueError as exc:
        raise ValueError(f"{path!r}: {exc}") from None
