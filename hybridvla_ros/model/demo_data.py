"""Demonstration data for training: checked, split by episode, batched as tensors, recorded or cached.

A demonstration set is the dict :mod:`hybridvla_ros.sim.demos` records and saves (its
docstring has the table of keys). Here it is checked against the policy's embodiment
(:func:`check_demos`), split into training and held-out episodes (:func:`split_episodes`)
and turned into tensors the training loop draws batches from (:class:`EmbodimentData`).
:func:`get_demos` records a set from the simulator a parameter file names, or loads it
from a cache folder; :func:`default_steps_per_episode` is how long its episodes are unless
asked, and :func:`expert_summary` how often the expert reached its target in them.
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from hybridvla_ros.core.dataset_keys import (
    DEMO_ACTIONS,
    DEMO_EMBODIMENT,
    DEMO_EPISODE,
    DEMO_IMAGES,
    DEMO_INSTRUCTION,
    DEMO_KEYS,
    DEMO_PROPRIO,
    DEMO_STATE,
)
from hybridvla_ros.model.policy import ACTIONS, EMBODIMENT, IMAGE, INSTRUCTION, PROPRIO, STATE, EmbodimentSpec
from hybridvla_ros.model.text import HASH_ENCODER, embed_instruction
from hybridvla_ros.params import from_params, load_node_params
from hybridvla_ros.params.sim_robot import SimRobotParams
from hybridvla_ros.sim.demos import (
    DEMO_EXPERT_FINAL_ERROR,
    DEMO_EXPERT_KEYS,
    DEMO_EXPERT_SUCCESS,
    DEMO_SUCCESS_TOLERANCE,
    load_demonstrations,
    record_demonstrations,
    save_demonstrations,
)
from hybridvla_ros.sim.kinematic_scenes import make_kinematic_scene

# Control steps per demonstration episode when none is asked for: the kinematic arm experts
# settle in ~50 steps; the MuJoCo pick-and-place / hand-over tasks take ~3.5 s (175). A
# kinematic scene that needs longer says so (``expert_time_s``: the Stretch base, 10 s):
# default_steps_per_episode.
DEFAULT_STEPS_PER_EPISODE = {"kinematic": 60, "mujoco": 200}


def default_steps_per_episode(params: Any) -> int:
    """Control steps per demonstration episode for ``params`` (its ``physics``, kinematic when
    it has none): DEFAULT_STEPS_PER_EPISODE, or more when the kinematic scene's expert needs
    longer to reach every target (its ``expert_time_s`` at ``params.control_period_s``).
    Raises ValueError for an unknown physics or an embodiment without a kinematic scene."""
    physics = getattr(params, "physics", "kinematic")
    if physics not in DEFAULT_STEPS_PER_EPISODE:
        raise ValueError(f"physics {physics!r}: no default episode length (known: {list(DEFAULT_STEPS_PER_EPISODE)})")
    steps = DEFAULT_STEPS_PER_EPISODE[physics]
    if physics == "kinematic":
        expert_s = float(getattr(make_kinematic_scene(params), "expert_time_s", 0.0))
        steps = max(steps, math.ceil(expert_s / params.control_period_s - 1e-9))
    return steps


def expert_summary(demos: Mapping[str, Any]) -> dict[str, Any] | None:
    """How the scripted expert did in ``demos``: episodes, successes, success_rate,
    final_error_m_median / _max and tolerance_m (None: the simulator's default); None for
    demonstrations recorded without the outcome (older files, DAgger states)."""
    if not all(k in demos for k in DEMO_EXPERT_KEYS):
        return None
    success = np.asarray(demos[DEMO_EXPERT_SUCCESS], dtype=bool)
    error = np.asarray(demos[DEMO_EXPERT_FINAL_ERROR], dtype=np.float64)
    if success.size == 0:
        return None
    tol = float(np.asarray(demos[DEMO_SUCCESS_TOLERANCE]))
    return {"episodes": int(success.size), "successes": int(success.sum()),
            "success_rate": float(success.mean()), "final_error_m_median": float(np.median(error)),
            "final_error_m_max": float(error.max()), "tolerance_m": None if math.isnan(tol) else tol}


# ---------------------------------------------------------------- checks and splits
def demo_state(demos: Mapping[str, Any]) -> np.ndarray:
    """(N, E) float32 the demonstrations' state joints ((N, 0) for a recording without them)."""
    if DEMO_STATE in demos:
        return np.asarray(demos[DEMO_STATE], dtype=np.float32)
    return np.zeros((len(demos[DEMO_PROPRIO]), 0), dtype=np.float32)


def check_demos(demos: Mapping[str, Any], spec: EmbodimentSpec) -> None:
    """Raise ValueError naming the key if ``demos`` does not fit ``spec``."""
    missing = [k for k in DEMO_KEYS if k not in demos]
    if missing:
        raise ValueError(f"demonstrations for {spec.name!r}: missing key(s) {missing}")
    if demos[DEMO_EMBODIMENT] != spec.name:
        raise ValueError(f"demonstrations: embodiment is {demos[DEMO_EMBODIMENT]!r}, expected {spec.name!r}")
    images, proprio, actions = demos[DEMO_IMAGES], demos[DEMO_PROPRIO], demos[DEMO_ACTIONS]
    N, T, D = len(proprio), spec.chunk_size, spec.action_dim
    if N < 1:
        raise ValueError(f"demonstrations for {spec.name!r}: {DEMO_PROPRIO!r} is empty")
    views = () if spec.num_cameras == 1 else (spec.num_cameras,)
    if images.dtype != np.uint8 or images.ndim != 4 + len(views) or images.shape[0] != N \
            or images.shape[1:1 + len(views)] != views or images.shape[-1] != 3:
        cams = f" (one per camera {list(spec.cameras)})" if views else ""
        raise ValueError(f"demonstrations[{DEMO_IMAGES!r}]: expected ({', '.join(map(str, (N, *views)))}, S, S, 3) "
                         f"uint8{cams}, got {images.shape} {images.dtype}")
    if proprio.shape != (N, D):
        raise ValueError(f"demonstrations[{DEMO_PROPRIO!r}]: expected ({N}, {D}), got {proprio.shape}")
    if actions.shape != (N, T, D):
        raise ValueError(f"demonstrations[{DEMO_ACTIONS!r}]: expected ({N}, {T}, {D}) "
                         f"(chunk_size {T}, action_dim {D}), got {actions.shape}")
    if np.shape(demos[DEMO_EPISODE]) != (N,):
        raise ValueError(f"demonstrations[{DEMO_EPISODE!r}]: expected ({N},), got {np.shape(demos[DEMO_EPISODE])}")
    if not (np.isfinite(proprio).all() and np.isfinite(actions).all()):
        raise ValueError(f"demonstrations for {spec.name!r}: proprio/actions contain NaN or inf")
    state = demo_state(demos)
    if state.shape != (N, spec.state_dim):
        raise ValueError(f"demonstrations[{DEMO_STATE!r}]: expected ({N}, {spec.state_dim}) for state joints "
                         f"{list(spec.state_joints)}, got {state.shape} (recorded with other state_joints? "
                         "record them again)")
    if not np.isfinite(state).all():
        raise ValueError(f"demonstrations for {spec.name!r}: state contains NaN or inf")


def split_episodes(episode: np.ndarray, holdout_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) example indices: the last ``holdout_fraction`` of episodes (at least one,
    if there are two or more) are held out."""
    ids = np.unique(episode)
    n_hold = 0
    if len(ids) >= 2 and holdout_fraction > 0.0:
        n_hold = min(len(ids) - 1, max(1, round(holdout_fraction * len(ids))))
    held = np.isin(episode, ids[len(ids) - n_hold:]) if n_hold else np.zeros(len(episode), dtype=bool)
    return np.flatnonzero(~held), np.flatnonzero(held)


# ---------------------------------------------------------------- tensors
class EmbodimentData:
    """One embodiment's examples as tensors, ready to be batched."""

    def __init__(self, demos: Mapping[str, Any], spec: EmbodimentSpec, indices: np.ndarray, image_size: int,
                 instruction_dim: int, instruction_encoder: str = HASH_ENCODER) -> None:
        self.spec = spec
        images = np.asarray(demos[DEMO_IMAGES])[indices]                              # (N, [K,] S', S', 3)
        if images.shape[-3:-1] != (image_size, image_size):
            flat = images.reshape(-1, *images.shape[-3:])
            flat = np.stack([cv2.resize(im, (image_size, image_size), interpolation=cv2.INTER_AREA)
                             for im in flat]) if len(flat) else flat.reshape(0, image_size, image_size, 3)
            images = flat.reshape(*images.shape[:-3], image_size, image_size, 3)
        # (N, [K,] 3, S, S)
        self.images = torch.from_numpy(np.ascontiguousarray(images)).movedim(-1, -3).contiguous()
        self.proprio = torch.from_numpy(np.asarray(demos[DEMO_PROPRIO], dtype=np.float32)[indices])   # (N, D)
        self.actions = torch.from_numpy(np.asarray(demos[DEMO_ACTIONS], dtype=np.float32)[indices])   # (N, T, D)
        self.state = torch.from_numpy(demo_state(demos)[indices])                                     # (N, E)
        self.instruction = torch.from_numpy(embed_instruction(str(demos[DEMO_INSTRUCTION]), instruction_dim,
                                                              instruction_encoder))  # (E,)

    def __len__(self) -> int:
        return len(self.proprio)

    def batch(self, idx: torch.Tensor, with_actions: bool = True) -> dict[str, Any]:
        """Policy batch of the examples ``idx``."""
        out: dict[str, Any] = {
            EMBODIMENT: self.spec.name,
            IMAGE: self.images[idx].float() / 255.0,                                  # (B, [K,] 3, S, S)
            PROPRIO: self.proprio[idx],                                               # (B, D)
            INSTRUCTION: self.instruction.expand(len(idx), -1),                       # (B, E)
        }
        if self.spec.state_dim:
            out[STATE] = self.state[idx]                                              # (B, E_state)
        if with_actions:
            out[ACTIONS] = self.actions[idx]                                          # (B, T, D)
        return out


# ---------------------------------------------------------------- recording and caching
def load_embodiment(config_dir: str | os.PathLike[str], name: str, physics: str | None = None) -> SimRobotParams:
    """SimRobotParams of ``config_dir/<name>.yaml``: the robot as every node knows it plus the
    simulator its demonstrations come from (``physics``: the file's choice unless given).
    Raises ParameterError (a ValueError) for a missing or invalid file."""
    path = Path(config_dir) / f"{name}.yaml"
    values = load_node_params(path, "sim_robot")
    if physics is not None:
        values["physics"] = physics
    return from_params(SimRobotParams, values, "sim_robot")


def demos_cache_path(demos_dir: str | os.PathLike[str], name: str, episodes: int, steps_per_episode: int,
                     image_size: int, seed: int, physics: str = "kinematic", state_joints: Sequence[str] = (),
                     chunk_labels: str = "full", cameras: Sequence[str] = ()) -> Path:
    """Where a recording with these settings is cached."""
    state = "".join(f"_{j}" for j in state_joints)
    labels = "" if chunk_labels == "full" else f"_{chunk_labels}"
    cams = "".join(f"_cam-{c}" for c in cameras)
    return (Path(demos_dir) / f"{name}_{physics}{state}_ep{episodes}_steps{steps_per_episode}_img{image_size}"
                              f"{cams}_seed{seed}{labels}.npz")


def get_demos(params: Any, episodes: int, steps_per_episode: int, image_size: int, seed: int,
              demos_dir: str | os.PathLike[str] | None, progress: bool, chunk_labels: str = "full",
              cameras: Sequence[str] = ()) -> dict[str, Any]:
    """Demonstrations for ``params``: loaded from the cache in ``demos_dir`` when a recording with
    these settings is there, else recorded on the simulator ``params`` names (and cached when
    ``demos_dir`` is given; a cached file without the expert's outcome, written before it was
    recorded, is recorded again); ``chunk_labels`` and ``cameras`` as in :func:`record_demonstrations`.
    Raises ValueError for bad counts, OSError when the cache fails."""
    path = None
    if demos_dir is not None:
        path = demos_cache_path(demos_dir, params.embodiment, episodes, steps_per_episode, image_size, seed,
                                getattr(params, "physics", "kinematic"), getattr(params, "state_joints", ()),
                                chunk_labels, cameras)
        if path.is_file():
            cached = load_demonstrations(str(path))
            if expert_summary(cached) is not None:
                return cached
    demos = record_demonstrations(params, episodes, steps_per_episode, image_size=image_size, seed=seed,
                                  progress=progress, chunk_labels=chunk_labels, cameras=tuple(cameras))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_demonstrations(demos, str(path))
    return demos
