"""The replay sample: demonstrations kept next to a checkpoint so adaptation does not forget them.

Training writes ``replay_<embodiment>.npz`` (a random sample of each embodiment's
demonstrations, the format of :mod:`hybridvla_ros.sim.demos`) into the checkpoint
directory (:func:`save_replay_sample`); online adaptation replays it in every batch and
checks on its held-out episodes that the old skill stays. An adapted version carries the
sample on.

Adaptation is given its replay data (:class:`ReplaySample`) by its caller:
:func:`checkpoint_replay` reads the checkpoint's own sample; :func:`record_replay` records
fresh expert demonstrations on the kinematic simulator for a checkpoint that has none
(slower, and what the log's ``replay_source: recorded`` says);
:func:`checkpoint_replay_or_record` is the one, else the other. With ``adaptation.replay_dataset`` set,
:func:`dataset_replay` replays a LeRobotDataset v3 instead (``replay_source: dataset``): the demonstrations a
user recorded with ``hybridvla record`` (or any LeRobot dataset of the robot), read by LeRobot's own code in
.venv-lerobot and mapped onto the embodiment as ``hybridvla train --dataset`` maps them.
"""
from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hybridvla_ros.core.dataset_keys import DEMO_ACTIONS, DEMO_EPISODE, DEMO_IMAGES, DEMO_KEYS, DEMO_PROPRIO, DEMO_STATE
from hybridvla_ros.model.checkpoint import read_policy_config
from hybridvla_ros.model.demo_data import check_demos, demo_state
from hybridvla_ros.params.adaptation import AdaptationParams
from hybridvla_ros.sim.demos import load_demonstrations, record_demonstrations, save_demonstrations

REPLAY_FILE = "replay_{embodiment}.npz"  # next to the checkpoint
REPLAY_EXAMPLES = 2000    # demonstration examples kept per embodiment for replay during adaptation (with
#                           400 the head drifted: held-out replay error rose 30-50 %, 15 % with 2000)
REPLAY_FROM_FILE = "file"           # ReplaySample.source: the checkpoint's replay_<embodiment>.npz
REPLAY_RECORDED = "recorded"        # ReplaySample.source: recorded by record_replay
REPLAY_DATASET = "dataset"          # ReplaySample.source: read from adaptation.replay_dataset
RECORD_STEPS_PER_EPISODE = 100      # control steps per episode of a recorded replay sample
RECORD_SEED_OFFSET = 7919           # recorded replay uses other episodes than training (params.seed + this)


@dataclass(frozen=True)
class ReplaySample:
    """Demonstrations an adaptation replays, and where they came from (logged as ``replay_source``)."""

    demos: Mapping[str, Any]    # the demonstration dict (sim/demos.py format)
    source: str                 # REPLAY_FROM_FILE, REPLAY_RECORDED or REPLAY_DATASET


def replay_path(checkpoint_dir: str | os.PathLike[str], embodiment: str) -> Path:
    """Where the replay sample of ``embodiment`` lies in a checkpoint directory."""
    return Path(checkpoint_dir) / REPLAY_FILE.format(embodiment=embodiment)


def save_replay_sample(demos: Mapping[str, Any], path: str | os.PathLike[str], max_examples: int = REPLAY_EXAMPLES,
                       seed: int = 0) -> int:
    """Save up to ``max_examples`` random examples of ``demos`` (uint8 images, episode indices
    kept) to ``path`` with sim.demos.save_demonstrations (atomic); returns how many."""
    sample = sample_examples(demos, max_examples, seed)
    save_demonstrations(sample, os.fspath(path))
    return len(sample[DEMO_PROPRIO])


def sample_examples(demos: Mapping[str, Any], max_examples: int, seed: int = 0) -> dict[str, Any]:
    """Up to ``max_examples`` random examples of ``demos``, in recording order, episode indices kept."""
    n = len(demos[DEMO_PROPRIO])
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(n, size=min(n, max_examples), replace=False))  # (M,) in recording order
    sample = {k: (np.asarray(demos[k])[idx] if k in (DEMO_IMAGES, DEMO_PROPRIO, DEMO_ACTIONS, DEMO_EPISODE)
                  else demos[k]) for k in DEMO_KEYS}
    sample[DEMO_STATE] = demo_state(demos)[idx]
    return sample


def checkpoint_replay(checkpoint_dir: str | os.PathLike[str], embodiment: str) -> ReplaySample:
    """The replay sample stored in ``checkpoint_dir`` for ``embodiment`` (source ``"file"``).

    Raises ValueError (naming the file) when there is none, or it is unreadable or does not
    fit the checkpoint's head for ``embodiment``; CheckpointError for an unreadable config.
    """
    spec = read_policy_config(checkpoint_dir).embodiment(embodiment)
    path = replay_path(checkpoint_dir, embodiment)
    if not path.is_file():
        raise ValueError(f"replay: no replay sample {str(path)!r} in the checkpoint")
    try:
        demos = load_demonstrations(os.fspath(path))
        check_demos(demos, spec)
    except ValueError as exc:
        raise ValueError(f"replay: {str(path)!r} is not usable for this checkpoint: {exc}") from None
    return ReplaySample(demos, REPLAY_FROM_FILE)


def record_replay(params: AdaptationParams, checkpoint_dir: str | os.PathLike[str]) -> ReplaySample:
    """Fresh scripted-expert demonstrations of ``params``' robot on the kinematic simulator, about
    ``params.replay_examples`` examples, at the checkpoint's image size and with its head's
    state joints (source ``"recorded"``). Takes seconds; raises CheckpointError for an
    unreadable checkpoint config, ValueError for a checkpoint without this embodiment."""
    config = read_policy_config(checkpoint_dir)
    spec = config.embodiment(params.embodiment)
    if spec.cameras:
        raise ValueError(f"replay: the {params.embodiment!r} head reads cameras {list(spec.cameras)}, which the "
                         "kinematic simulator does not render; keep the replay sample hybridvla train stores in "
                         "the checkpoint, or set adaptation.replay_dataset")
    episodes = max(2, math.ceil(params.replay_examples / RECORD_STEPS_PER_EPISODE))
    robot = dataclasses.replace(params, state_joints=tuple(spec.state_joints))  # what the policy observes
    demos = record_demonstrations(robot, episodes, RECORD_STEPS_PER_EPISODE, image_size=config.image_size,
                                  seed=params.seed + RECORD_SEED_OFFSET)  # not the training seed: other episodes
    return ReplaySample(demos, REPLAY_RECORDED)


def dataset_replay(params: AdaptationParams, checkpoint_dir: str | os.PathLike[str],
                   python: str | None = None) -> ReplaySample:
    """Up to REPLAY_EXAMPLES random examples of the LeRobotDataset ``params.replay_dataset`` (camera
    ``params.replay_camera`` or its only one; each camera of a head that reads several), at the checkpoint's
    image size and with its head's state joints (source ``"dataset"``). Raises ValueError naming the dataset
    for one that cannot be read or does not fit the robot or the head, OSError when the LeRobot environment
    is missing."""
    from hybridvla_ros.model.lerobot_data import load_lerobot_demos
    config = read_policy_config(checkpoint_dir)
    spec = config.embodiment(params.embodiment)
    robot = dataclasses.replace(params, state_joints=tuple(spec.state_joints))  # what the policy observes
    where = f"replay: the LeRobotDataset {params.replay_dataset!r}"
    try:
        demos, _ = load_lerobot_demos(params.replay_dataset, robot, config.image_size,
                                      None if spec.cameras else params.replay_camera or None, python=python,
                                      cameras=spec.cameras)
        check_demos(demos, spec)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    except OSError as exc:
        raise OSError(f"{where}: {exc}") from None
    return ReplaySample(sample_examples(demos, REPLAY_EXAMPLES, params.seed), REPLAY_DATASET)


def checkpoint_replay_or_record(checkpoint_dir: str | os.PathLike[str], params: AdaptationParams) -> ReplaySample:
    """:func:`dataset_replay` when ``params.replay_dataset`` is set (its errors are errors: the user asked for
    it); else :func:`checkpoint_replay`, or :func:`record_replay` (runs the kinematic simulator) when the
    checkpoint has no usable sample. Raises as those do."""
    if params.replay_dataset:
        return dataset_replay(params, checkpoint_dir)
    try:
        return checkpoint_replay(checkpoint_dir, params.embodiment)
    except ValueError:  # none, unreadable or for another model: record one instead
        return record_replay(params, checkpoint_dir)
