"""A LeRobotDataset v3 on disk as training demonstrations for one embodiment (``hybridvla train --dataset``).

LeRobot's own code reads the dataset in the LeRobot environment (:mod:`hybridvla_ros.lerobot_demos` ``read``,
started here as a subprocess of ``.venv-lerobot``'s python) and hands over one camera's frames resized to
the policy's image size, ``observation.state``, ``action``, episode and frame indices, each frame's task and
the features' metadata. :func:`demos_from_frames` (plain numpy, tested without LeRobot) maps them onto the
embodiment's parameter file and builds the demonstration set training reads (:mod:`hybridvla_ros.sim.demos`
has its table):

- ``fps`` must be the embodiment's control rate (a chunk step is one control period);
- ``action``: the embodiment's ``joint_names`` picked by the feature's ``names`` in the file's order (extra
  named dimensions are ignored); a feature without names must have exactly ``action_dim`` dimensions, in
  the file's joint order;
- ``observation.state``: ``joint_names`` then ``state_joints`` picked the same way (without names: exactly
  those, in that order) -> ``proprio`` and ``state``;
- ``actions[n, k]`` = the action k frames after frame n of the same episode, padded with the episode's last
  action (the recordings' convention);
- one instruction: the dataset's only task, or the one ``task`` names (its episodes only).

Anything that does not fit (missing feature or joint, wrong dimension, other fps, several tasks, NaN) is a
ValueError naming it, raised before training starts.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hybridvla_ros.core.dataset_keys import (
    DEMO_ACTIONS,
    DEMO_CONTROL_PERIOD,
    DEMO_EMBODIMENT,
    DEMO_EPISODE,
    DEMO_IMAGES,
    DEMO_INSTRUCTION,
    DEMO_PROPRIO,
    DEMO_STATE,
)

STATE, ACTION = "observation.state", "action"
FRAME_KEYS = ("image", "state", "action", "episode_index", "frame_index", "task", "meta")


def lerobot_python() -> str:
    """The LeRobot environment's python (HYBRIDVLA_LEROBOT_PYTHON, else <repo>/.venv-lerobot/bin/python). The
    repository is found from this file's real path: the installed ``hybridvla`` command imports the package
    through colcon's symlinked build directory, where the environment is not."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
    return os.environ.get("HYBRIDVLA_LEROBOT_PYTHON", os.path.join(root, ".venv-lerobot", "bin", "python"))


def lerobot_python_or_say(prog: str, why: str = "") -> str | None:
    """The LeRobot environment's python if it exists; else None, after one line on stderr that says how to make
    it (``prog: error: ... missing: run bash scripts/setup_lerobot.sh ...``, then ``why``); callers exit 2."""
    python = lerobot_python()
    if os.path.exists(python):
        return python
    print(f"{prog}: error: {python} is missing: run `bash scripts/setup_lerobot.sh` to make the LeRobot environment"
          + (f" {why}" if why else ""), file=sys.stderr)
    return None


def feature_names(meta: Mapping[str, Any], key: str) -> list[str] | None:
    """The per-dimension names of feature ``key`` (LeRobot stores a list, or a dict with one list such as
    ``{"motors": [...]}``, or None); None when there are none."""
    names = meta["features"][key].get("names")
    if isinstance(names, Mapping):
        lists = [v for v in names.values() if isinstance(v, list)]
        names = lists[0] if len(lists) == 1 else None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return None
    return names


def _pick(values: np.ndarray, names: list[str] | None, wanted: Sequence[str], key: str) -> np.ndarray:
    """(N, len(wanted)) the columns of ``values`` named ``wanted``, or all of them in order when unnamed."""
    width = values.shape[1]
    if names is not None and len(names) != width:
        names = None  # names that do not describe the columns say nothing
    if names is None:
        if width != len(wanted):
            raise ValueError(f"dataset feature {key!r} has {width} unnamed dimensions; the embodiment needs "
                             f"{len(wanted)} ({list(wanted)}) in that order")
        return values.astype(np.float32)
    missing = [w for w in wanted if w not in names]
    if missing:
        raise ValueError(f"dataset feature {key!r} has no {missing} (its names: {names}); record these joints "
                         "or train for the embodiment whose joints these are")
    return values[:, [names.index(w) for w in wanted]].astype(np.float32)


def demos_from_frames(frames: Mapping[str, Any], params: Any, task: str | None = None,
                      successful_only: bool = False) -> dict[str, Any]:
    """The demonstration set of the frames ``read`` wrote (a mapping with FRAME_KEYS, ``meta`` a JSON string or
    dict) for the embodiment ``params`` (a SimRobotParams: joint_names, state_joints, chunk_size,
    control_period_s, embodiment); ``task``: train on that task's episodes only; ``successful_only``: only the
    episodes with a ``next.success`` frame (``hybridvla record`` marks the last frame of an episode stopped as a
    success; ``frames["success"]``, absent when the dataset has no such feature). Raises ValueError."""
    meta = frames["meta"]
    meta = json.loads(str(meta)) if not isinstance(meta, Mapping) else meta
    fps, rate = int(meta["fps"]), 1.0 / float(params.control_period_s)
    if abs(fps - rate) > 1e-6 * rate:
        raise ValueError(f"the dataset is recorded at {fps} fps; {params.embodiment}'s control rate is {rate:g} Hz "
                         "(control_rate_hz of its parameter file): a chunk step is one control period, so record "
                         "(or resample) at the control rate")
    image = np.asarray(frames["image"])
    state_raw = np.asarray(frames["state"], dtype=np.float64)
    action_raw = np.asarray(frames["action"], dtype=np.float64)
    n = len(image)
    if n == 0:
        raise ValueError("the dataset has no frames")
    if state_raw.ndim != 2 or action_raw.ndim != 2 or len(state_raw) != n or len(action_raw) != n:
        raise ValueError(f"frames: {n} images but state {state_raw.shape} and action {action_raw.shape}")
    joints, extra = list(params.joint_names), list(getattr(params, "state_joints", ()))
    action = _pick(action_raw, feature_names(meta, ACTION), joints, ACTION)                  # (N, D)
    observed = _pick(state_raw, feature_names(meta, STATE), joints + extra, STATE)           # (N, D + E)
    tasks = np.asarray(frames["task"]).astype(str)
    keep = np.ones(n, dtype=bool)
    distinct = list(dict.fromkeys(tasks.tolist()))
    if task is not None:
        keep = tasks == task
        if not keep.any():
            raise ValueError(f"the dataset has no episode with task {task!r} (its tasks: {distinct})")
    elif len(distinct) != 1:
        raise ValueError(f"the dataset holds {len(distinct)} tasks ({distinct}); training takes one instruction "
                         "per robot: choose one with --task")
    instruction = task if task is not None else distinct[0]
    episode_index = np.asarray(frames["episode_index"], dtype=np.int64)
    if successful_only:
        if "success" not in frames:
            raise ValueError("the dataset has no next.success feature, so its successful episodes are unknown "
                             "(hybridvla record writes it; drop --successful-only to train on every episode)")
        won = np.unique(episode_index[np.asarray(frames["success"], dtype=bool)])
        keep &= np.isin(episode_index, won)
        if not keep.any():
            raise ValueError("the dataset has no successful episode" + (f" with task {task!r}" if task else ""))
    if not (np.isfinite(action[keep]).all() and np.isfinite(observed[keep]).all()):
        raise ValueError("the dataset's state or action contains NaN or inf")
    frame_index = np.asarray(frames["frame_index"], dtype=np.int64)
    order = np.lexsort((frame_index, episode_index))
    order = order[keep[order]]
    ep_sorted = episode_index[order]
    bounds = np.flatnonzero(np.r_[True, ep_sorted[1:] != ep_sorted[:-1], True])  # episode starts, then the end
    T, D = int(params.chunk_size), len(joints)
    actions = np.empty((len(order), T, D), dtype=np.float32)
    episode = np.empty(len(order), dtype=np.int32)
    for e, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        length = b - a
        future = np.minimum(np.arange(length)[:, None] + np.arange(T)[None, :], length - 1)  # (L, T)
        actions[a:b] = action[order[a:b]][future]
        episode[a:b] = e
    return {
        DEMO_IMAGES: np.ascontiguousarray(image[order], dtype=np.uint8),
        DEMO_PROPRIO: observed[order, :D],
        DEMO_STATE: observed[order, D:],
        DEMO_ACTIONS: actions,
        DEMO_EPISODE: episode,
        DEMO_EMBODIMENT: params.embodiment,
        DEMO_INSTRUCTION: instruction,
        DEMO_CONTROL_PERIOD: float(params.control_period_s),
    }


def read_lerobot_frames(dataset_dir: str, image_size: int, camera: str | None = None,
                        python: str | None = None, prefer_camera: str | None = None,
                        cameras: Sequence[str] = ()) -> dict[str, Any]:
    """The frames of the LeRobotDataset at ``dataset_dir`` (one camera at ``image_size``: ``camera``, else the
    dataset's only one, else ``prefer_camera`` if it has it; or each of ``cameras``, images (N, K, S, S, 3)),
    read by LeRobot's own code in the LeRobot
    environment. Raises ValueError with the reader's one-line error, OSError when the
    LeRobot environment is missing."""
    python = python or lerobot_python()
    if not os.path.exists(python):
        raise OSError(f"{python} is missing: run `bash scripts/setup_lerobot.sh` to make the LeRobot environment "
                      "(--dataset reads with LeRobot's own dataset code)")
    with tempfile.TemporaryDirectory(prefix="hybridvla-frames-") as tmp:
        out = os.path.join(tmp, "frames.npz")
        cmd = [python, "-m", "hybridvla_ros.lerobot_demos", "read", "--dataset", os.path.abspath(dataset_dir),
               "--out", out, "--image-size", str(image_size)]
        if cameras:
            cmd += ["--cameras", *cameras]
        elif camera is not None:
            cmd += ["--camera", camera]
        elif prefer_camera:
            cmd += ["--prefer-camera", prefer_camera]
        proc = subprocess.run(cmd, capture_output=True, text=True)  # the repository: setup_lerobot.sh's .pth
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
            raise ValueError(lines[-1] if lines else f"reading {dataset_dir!r} failed (exit {proc.returncode})")
        with np.load(out, allow_pickle=False) as npz:
            return {k: npz[k] for k in (*FRAME_KEYS, "success") if k in npz.files}


def load_lerobot_demos(dataset_dir: str, params: Any, image_size: int, camera: str | None = None,
                       task: str | None = None, python: str | None = None,
                       successful_only: bool = False, cameras: Sequence[str] = ()
                       ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(demonstration set, the dataset's metadata) of the LeRobotDataset at ``dataset_dir`` for ``params``;
    without ``camera``, a dataset of several cameras gives the one our model reads on the robot
    (``policy_camera`` / ``camera_name``) when it has it; ``cameras``: each of those (a multi-camera policy)."""
    prefer = getattr(params, "builtin_camera", None) or getattr(params, "camera_name", None)
    frames = read_lerobot_frames(dataset_dir, image_size, camera, python, prefer_camera=prefer, cameras=cameras)
    return demos_from_frames(frames, params, task, successful_only), json.loads(str(frames["meta"]))
