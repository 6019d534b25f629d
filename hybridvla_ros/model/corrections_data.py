"""Stored human corrections as adaptation's training data: chunk targets and the held-out split.

A correction is ONE human position target (D,) at time ``stamp_s``, paired with the
observation (image, joint positions) it answered. The head predicts a chunk (T, D) of
absolute targets for the next T control periods, so each correction's chunk is built from
the SAME episode's human targets (:func:`correction_chunks`): step k is the human target
at ``stamp_s + k * control_period_s``, linearly interpolated between the stored
corrections (they are stored at ~10 Hz, control runs at 20-50 Hz), and padded with the
episode's last human target beyond its end (the human stopped there; the demonstrations
pad the same way). An episode is one ``(session_id, episode_index)``: one uninterrupted
override.

The held-out split (:func:`holdout_corrections`) keeps whole episodes out of training when
there are two or more, otherwise the newest corrections.
"""
from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hybridvla_ros.core.correction_store import CorrectionRecord, CorrectionStore, record_views, records_to_arrays
from hybridvla_ros.core.joints import select_joints
from hybridvla_ros.model.checkpoint import read_policy_config
from hybridvla_ros.params.adaptation import AdaptationParams


@dataclass
class CorrectionSet:
    """Corrections of one embodiment, stacked, with their chunk targets."""

    images: np.ndarray          # (N, S, S, 3) uint8 RGB; a policy of K cameras: (N, K, S, S, 3)
    proprio: np.ndarray         # (N, D) joint positions when the human acted
    human_action: np.ndarray    # (N, D) the human's position target
    stamp_s: np.ndarray         # (N,)
    episode: np.ndarray         # (N,) int: one id per (session, episode_index)
    instructions: list[str]     # N instruction strings
    actions: np.ndarray         # (N, T, D) chunk targets (correction_chunks)
    state: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 0)))
    # (N, E) the policy's state joints when the human acted; left out: E = 0

    def __post_init__(self) -> None:
        if self.state.size == 0 and self.state.shape[0] != len(self.proprio):
            self.state = np.zeros((len(self.proprio), 0))

    def __len__(self) -> int:
        return len(self.proprio)

    def subset(self, idx: np.ndarray) -> CorrectionSet:
        """The corrections ``idx`` (an index array), in that order."""
        return CorrectionSet(self.images[idx], self.proprio[idx], self.human_action[idx], self.stamp_s[idx],
                             self.episode[idx], [self.instructions[i] for i in idx], self.actions[idx],
                             self.state[idx])


def correction_chunks(human_action: np.ndarray, stamp_s: np.ndarray, episode: np.ndarray, chunk_size: int,
                      control_period_s: float) -> np.ndarray:
    """(N, T, D) chunk targets: ``[i, k]`` is the human target of i's episode at
    ``stamp_s[i] + k * control_period_s``, linearly interpolated between that episode's
    corrections and padded with its last one. Raises ValueError on bad shapes or values."""
    human = np.asarray(human_action, dtype=np.float64)
    stamps = np.asarray(stamp_s, dtype=np.float64)
    episode = np.asarray(episode)
    if human.ndim != 2 or stamps.shape != (len(human),) or episode.shape != (len(human),):
        raise ValueError(f"human_action (N, D), stamp_s (N,), episode (N,): got {human.shape}, {stamps.shape}, "
                         f"{episode.shape}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size: must be >= 1, got {chunk_size!r}")
    if not (math.isfinite(control_period_s) and control_period_s > 0):
        raise ValueError(f"control_period_s: must be > 0, got {control_period_s!r}")
    if not (np.isfinite(human).all() and np.isfinite(stamps).all()):
        raise ValueError("human_action/stamp_s: contain NaN or inf")
    N, D = human.shape
    out = np.empty((N, chunk_size, D))
    offsets = np.arange(chunk_size) * control_period_s                      # (T,)
    for e in np.unique(episode):
        rows = np.flatnonzero(episode == e)
        rows = rows[np.argsort(stamps[rows], kind="stable")]                # time order
        t, a = stamps[rows], human[rows]                                    # (n,), (n, D)
        query = t[:, None] + offsets[None, :]                               # (n, T)
        # np.interp holds the end values outside [t0, tn]: beyond the last correction = pad with it.
        for j in range(D):
            out[rows, :, j] = np.interp(query, t, a[:, j])
    return out


def _observed_joints(record: CorrectionRecord, action_dim: int, joint_names: Sequence[str],
                     state_joints: Sequence[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """(q (D,), state (E,)) of a stored correction, picked by name from the joints it recorded
    (``joint_names`` empty: its first ``action_dim`` names); a record without names holds
    exactly the D joints in action order. None when a joint is missing."""
    names = tuple(record.joint_names)
    if not names:
        values = np.asarray(record.joint_positions, dtype=np.float64)
        return (values, np.zeros(0)) if values.size == action_dim and not state_joints else None
    wanted = tuple(joint_names) or names[:action_dim]
    if len(wanted) != action_dim:
        return None
    try:
        values = select_joints(names, record.joint_positions.tolist(), (*wanted, *state_joints))
    except ValueError:  # a joint missing (or named twice)
        return None
    return values[:action_dim], values[action_dim:]


def corrections_from_records(records: Iterable[CorrectionRecord], embodiment: str, action_dim: int,
                             chunk_size: int, control_period_s: float, image_size: int,
                             default_instruction: str = "", joint_names: Sequence[str] = (),
                             state_joints: Sequence[str] = (), cameras: Sequence[str] = ()
                             ) -> tuple[CorrectionSet, int]:
    """CorrectionSet of the records of ``embodiment`` with ``action_dim`` joints (``joint_names``
    and ``state_joints`` picked by name from what each record observed; ``cameras``: each one's
    view, for a policy that reads several), and how many others were skipped (another robot,
    a joint or a camera missing)."""
    kept, observed, skipped = [], [], 0
    for r in records:
        joints = _observed_joints(r, action_dim, joint_names, state_joints)
        if (r.embodiment and r.embodiment != embodiment) or r.human_action.size != action_dim or joints is None \
                or (cameras and record_views(r, cameras) is None):
            skipped += 1
            continue
        kept.append(dataclasses.replace(r, joint_positions=joints[0]))  # the arm joints, in action order
        observed.append(joints)
    arrays = records_to_arrays(kept, image_size, cameras)
    ids: dict[tuple[str, int], int] = {}
    episode = np.array([ids.setdefault((r.session_id, int(r.episode_index)), len(ids)) for r in kept], dtype=np.int64)
    human = arrays["human_action"].reshape(len(kept), action_dim)
    stamps = arrays["stamp_s"]
    proprio = np.array([q for q, _ in observed]).reshape(len(kept), action_dim)
    state = np.array([x for _, x in observed]).reshape(len(kept), len(state_joints))
    return CorrectionSet(
        images=arrays["images"], proprio=proprio, human_action=human,
        stamp_s=stamps, episode=episode, instructions=[r.instruction or default_instruction for r in kept],
        actions=correction_chunks(human, stamps, episode, chunk_size, control_period_s), state=state), skipped


def correction_set(records: Iterable[CorrectionRecord], params: AdaptationParams, image_size: int,
                   state_joints: Sequence[str] = (), cameras: Sequence[str] = ()) -> tuple[CorrectionSet, int]:
    """:func:`corrections_from_records` with the robot of ``params`` (its embodiment, joints,
    chunk size, control period, default instruction) and the policy's ``state_joints`` and ``cameras``."""
    return corrections_from_records(records, params.embodiment, params.action_dim, params.chunk_size,
                                    params.control_period_s, image_size, params.instruction,
                                    joint_names=params.joint_names, state_joints=state_joints, cameras=cameras)


def load_corrections(store_path: str | os.PathLike[str], params: AdaptationParams, image_size: int,
                     state_joints: Sequence[str] = (), cameras: Sequence[str] = ()
                     ) -> tuple[CorrectionSet, dict[str, Any]]:
    """The newest ``params.max_corrections`` corrections of a store on disk (the recorder's
    replay buffer), as a CorrectionSet with the policy's ``state_joints``; and {path, count,
    skipped}. Raises ValueError if the store does not exist, CorrectionStoreError if it
    cannot be read."""
    path = os.path.abspath(os.fspath(store_path))
    if not os.path.isfile(path):  # CorrectionStore would create an empty one
        raise ValueError(f"store_path: no correction store at {path!r}")
    with CorrectionStore(path, replay_capacity=params.max_corrections) as store:
        count = store.count()
        records = store.replay_records()
    data, skipped = correction_set(records, params, image_size, state_joints, cameras)
    return data, {"path": path, "count": count, "skipped": skipped}


def load_corrections_for(checkpoint_dir: str | os.PathLike[str], store_path: str | os.PathLike[str],
                         params: AdaptationParams) -> tuple[CorrectionSet, dict[str, Any]]:
    """:func:`load_corrections` at the image size and with the state joints and cameras of the
    checkpoint's head for ``params.embodiment``. Raises CheckpointError for an unreadable checkpoint
    config, ValueError for a missing store or a checkpoint without that head."""
    config = read_policy_config(checkpoint_dir)
    spec = config.embodiment(params.embodiment)
    return load_corrections(store_path, params, config.image_size, spec.state_joints, spec.cameras)


def holdout_corrections(episode: np.ndarray, stamps: np.ndarray, fraction: float, seed: int
                        ) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) indices: whole random episodes until ~``fraction`` of the corrections
    are held out (one episode always trains, at least one is held out when ``fraction`` > 0);
    with one episode, the newest ``fraction``."""
    n = len(episode)
    ids = np.unique(episode)
    if len(ids) >= 2:
        rng = np.random.default_rng(seed)
        sizes = {int(e): int((episode == e).sum()) for e in ids}
        held: list[int] = []
        count, target = 0, fraction * n
        candidates = rng.permutation(ids)[:-1]  # the last one always trains
        for e in candidates:
            if abs(count + sizes[int(e)] - target) < abs(count - target):
                held.append(int(e))
                count += sizes[int(e)]
        if not held and fraction > 0.0:
            # No episode brought the count nearer the target (9 + 1 corrections at 0.2: the 9 is
            # too many, and the 1 came last): hold out the smallest candidate, never none.
            held.append(int(min(candidates, key=lambda e: sizes[int(e)])))
        mask = np.isin(episode, held)
    else:
        order = np.argsort(stamps, kind="stable")
        mask = np.zeros(n, dtype=bool)
        mask[order[n - max(1, round(fraction * n)):]] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)
