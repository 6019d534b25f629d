"""Online adaptation: fine-tune one embodiment's action head on human corrections (ROS-free).

:func:`adapt` reads top to bottom:

1. **Corrections -> training targets.** A correction is ONE human position target (D,) at
   time ``stamp_s``, paired with the observation (image, joint positions) it answered. The
   head predicts a chunk (T, D) of absolute targets for the next T control periods, so each
   correction's chunk is built from the SAME episode's human targets (:func:`correction_chunks`):
   step k is the human target at ``stamp_s + k * control_period_s``, linearly interpolated
   between the stored corrections (they are stored at ~10 Hz, control runs at 20-50 Hz),
   and padded with the episode's last human target beyond its end (the human stopped
   there; the demonstrations pad the same way). An episode is one
   ``(session_id, episode_index)``: one uninterrupted override.
2. **Replay of earlier data.** Training writes ``replay_<embodiment>.npz`` (a random sample
   of the demonstrations) next to each checkpoint; a checkpoint without one gets fresh
   expert demonstrations from the kinematic sim (slower; the log says ``replay_source:
   recorded``). Each batch is ``replay_fraction`` replay, the rest corrections drawn from
   the store's newest ``max_corrections`` (its replay buffer of older corrections).
3. **Fine-tune the action head only.** The backbone is frozen, so every example is encoded
   ONCE under ``torch.no_grad`` and the head trains on the cached features: a few hundred
   Adam steps cost seconds on one CPU core. We fine-tune the head's own weights rather than
   low-rank adapters: the head is small (<2 M parameters), LoRA's savings in memory and
   storage buy nothing here, and the saved checkpoint keeps exactly the format inference
   loads (no merge step). What LoRA's low rank would do against over-fitting a few dozen
   corrections, replay, early stopping and the acceptance test do. Adam; stops early when
   the loss on the training corrections (looked at every 10 steps) has not improved by 1 %
   for ``early_stop_patience`` steps. The normalization statistics stay the base's, so the
   token head can only express deltas within ``token_range_std`` of the demonstrations'
   spread; the log's ``out_of_range_fraction`` says how much of a correction set lies beyond.
4. **Held-out check.** About ``holdout_fraction`` of the corrections (whole episodes when
   there are two or more; otherwise the newest ones) and of the replay episodes are kept
   out of training. Action error (MAE in raw units, first step and whole chunk) is measured
   before and after. ACCEPT only if the held-out correction chunk error falls by at least
   ``min_improvement`` (relative) AND the held-out replay chunk error rises by at most
   ``tolerance`` (relative); otherwise REJECT: nothing is written and the previous version
   keeps serving.
5. **Save** an accepted head as ``<adapt_root>/<embodiment>/vNNNN/`` (model.safetensors +
   config.json via checkpoint.save_checkpoint, whose ``model_version`` names the new
   weights, plus the replay files): written to a temporary directory, then renamed.
6. **Log** every attempt as one JSON line in ``<adapt_root>/<embodiment>/adaptations.jsonl``
   (and return it).
"""
from __future__ import annotations

import dataclasses
import argparse
import json
import math
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from hybridvla_ros.model.checkpoint import (KEY_MODEL_VERSION, KEY_TRAINING, json_default, load_checkpoint,
                                            read_checkpoint_config, save_checkpoint)
from hybridvla_ros.model.policy import HybridPolicy, PolicyConfig, TokenHead
from hybridvla_ros.model.text import embed_instruction
from hybridvla_ros.model.train import (DEMO_ACTIONS, DEMO_EPISODE, DEMO_IMAGES, DEMO_INSTRUCTION, DEMO_PROPRIO,
                                       REPLAY_FILE, check_demos, demo_state, replay_path, split_episodes)
from hybridvla_ros.params.adaptation import AdaptationParams

__all__ = ["CorrectionSet", "AdaptationResult", "correction_chunks", "corrections_from_records",
           "load_corrections", "load_replay", "adapt", "version_dirs", "LOG_FILE", "LOG_FIELDS"]

LOG_FILE = "adaptations.jsonl"
VERSION_DIR = re.compile(r"^v(\d{4,})$")
KEY_ADAPTATION = "adaptation"       # config.json training entry of an adapted checkpoint
ENCODE_BATCH = 128
EVAL_BATCH = 256
RECORD_STEPS_PER_EPISODE = 100      # fallback replay recording
EARLY_STOP_MIN_GAIN = 0.01          # relative loss improvement that counts as progress
EARLY_STOP_CHECK_EVERY = 10         # steps between two looks at the training-set correction loss
LOG_FIELDS = ("time", "embodiment", "accepted", "reason", "version", "checkpoint", "model_version",
              "base_checkpoint", "base_model_version", "base_version", "samples", "steps", "early_stopped",
              "loss_before", "loss_after", "heldout_corrections", "heldout_replay", "out_of_range_fraction",
              "wall_time_s", "timings_s", "settings", "store")


# ---------------------------------------------------------------- corrections -> targets
@dataclass
class CorrectionSet:
    """Corrections of one embodiment, stacked, with their chunk targets."""

    images: np.ndarray          # (N, S, S, 3) uint8 RGB
    proprio: np.ndarray         # (N, D) joint positions when the human acted
    human_action: np.ndarray    # (N, D) the human's position target
    stamp_s: np.ndarray         # (N,)
    episode: np.ndarray         # (N,) int: one id per (session, episode_index)
    instructions: list[str]     # N instruction strings
    actions: np.ndarray         # (N, T, D) chunk targets (correction_chunks)
    state: np.ndarray | None = None  # (N, E) the policy's state joints when the human acted (None: E = 0)

    def __post_init__(self) -> None:
        if self.state is None:
            self.state = np.zeros((len(self.proprio), 0))

    def __len__(self) -> int:
        return len(self.proprio)

    def subset(self, idx: np.ndarray) -> "CorrectionSet":
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


def _observed_joints(record: Any, action_dim: int, joint_names: Sequence[str], state_joints: Sequence[str]
                     ) -> tuple[np.ndarray, np.ndarray] | None:
    """(q (D,), state (E,)) of a stored correction, picked by name from the joints it recorded
    (``joint_names`` empty: its first ``action_dim`` names); a record without names holds
    exactly the D joints in action order. None when a joint is missing."""
    from hybridvla_ros.core.sync import select_joints

    names = tuple(record.joint_names)
    if not names:
        values = np.asarray(record.joint_positions, dtype=np.float64)
        return (values, np.zeros(0)) if values.size == action_dim and not state_joints else None
    wanted = tuple(joint_names) or names[:action_dim]
    if len(wanted) != action_dim:
        return None
    try:
        values = select_joints(names, record.joint_positions, (*wanted, *state_joints))
    except ValueError:  # a joint missing (or named twice)
        return None
    return values[:action_dim], values[action_dim:]


def corrections_from_records(records: Iterable[Any], embodiment: str, action_dim: int, chunk_size: int,
                             control_period_s: float, image_size: int, default_instruction: str = "",
                             joint_names: Sequence[str] = (), state_joints: Sequence[str] = ()
                             ) -> tuple[CorrectionSet, int]:
    """CorrectionSet of the records of ``embodiment`` with ``action_dim`` joints (``joint_names``
    and ``state_joints`` picked by name from what each record observed), and how many others
    were skipped."""
    from hybridvla_ros.core.correction_store import records_to_arrays

    kept, observed, skipped = [], [], 0
    for r in records:
        joints = _observed_joints(r, action_dim, joint_names, state_joints)
        if (r.embodiment and r.embodiment != embodiment) or r.human_action.size != action_dim or joints is None:
            skipped += 1
            continue
        kept.append(dataclasses.replace(r, joint_positions=joints[0]))  # the arm joints, in action order
        observed.append(joints)
    arrays = records_to_arrays(kept, image_size)
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


def load_corrections(store_path: str | os.PathLike[str], params: AdaptationParams, image_size: int,
                     state_joints: Sequence[str] = ()) -> tuple[CorrectionSet, dict[str, Any]]:
    """The newest ``params.max_corrections`` corrections of a store on disk (the recorder's
    replay buffer), as a CorrectionSet with the policy's ``state_joints``; and {path, count,
    skipped}. Raises ValueError if the store does not exist, CorrectionStoreError if it
    cannot be read."""
    from hybridvla_ros.core.correction_store import CorrectionStore

    path = os.path.abspath(os.fspath(store_path))
    if not os.path.isfile(path):  # CorrectionStore would create an empty one
        raise ValueError(f"store_path: no correction store at {path!r}")
    with CorrectionStore(path, replay_capacity=params.max_corrections) as store:
        count = store.count()
        records = store.replay_records()
    data, skipped = corrections_from_records(records, params.embodiment, params.action_dim, params.chunk_size,
                                             params.control_period_s, image_size, params.instruction,
                                             joint_names=params.joint_names, state_joints=state_joints)
    return data, {"path": path, "count": count, "skipped": skipped}


# ---------------------------------------------------------------- replay data
def load_replay(checkpoint_dir: str | os.PathLike[str], params: AdaptationParams, image_size: int,
                spec: Any) -> tuple[dict[str, Any], str]:
    """The checkpoint's replay sample for ``params.embodiment`` and where it came from:
    ``"file"``, or ``"recorded"`` (no usable file: fresh expert demonstrations from the sim)."""
    from hybridvla_ros.core.demos import load_demonstrations, record_demonstrations

    path = replay_path(checkpoint_dir, params.embodiment)
    if path.is_file():
        try:
            demos = load_demonstrations(os.fspath(path))
            check_demos(demos, spec)
            return demos, "file"
        except ValueError:
            pass  # unreadable or for another model: record instead
    episodes = max(2, math.ceil(params.replay_examples / RECORD_STEPS_PER_EPISODE))
    params = dataclasses.replace(params, state_joints=tuple(spec.state_joints))  # what the policy observes
    demos = record_demonstrations(params, episodes, RECORD_STEPS_PER_EPISODE, image_size=image_size,
                                  seed=params.seed + 7919)  # not the training seed: other episodes
    return demos, "recorded"


# ---------------------------------------------------------------- tensors and metrics
@dataclass
class _Examples:
    """Examples encoded by the frozen backbone: what the head trains and is scored on."""

    feat: torch.Tensor      # (N, d_model) pooled backbone features
    proprio: torch.Tensor   # (N, D)
    actions: torch.Tensor   # (N, T, D) absolute targets, raw units
    target: torch.Tensor    # (N, T, D) normalized deltas (what the head learns)

    def __len__(self) -> int:
        return len(self.proprio)


@torch.no_grad()
def _encode(policy: HybridPolicy, embodiment: str, images: np.ndarray, proprio: np.ndarray, actions: np.ndarray,
            instructions: Sequence[str], state: np.ndarray) -> _Examples:
    """Encode (N, S, S, 3) uint8 images + proprio + state joints (N, E) + instructions once with the
    frozen backbone."""
    from hybridvla_ros.model.policy import EMBODIMENT, IMAGE, INSTRUCTION, PROPRIO, STATE

    cfg = policy.config
    S, E = cfg.image_size, cfg.instruction_dim
    if len(images) and images.shape[1:3] != (S, S):
        import cv2
        images = np.stack([cv2.resize(im, (S, S), interpolation=cv2.INTER_AREA) for im in images])
    proprio_t = torch.as_tensor(np.asarray(proprio, dtype=np.float32))                    # (N, D)
    state_t = torch.as_tensor(np.asarray(state, dtype=np.float32).reshape(len(proprio_t), -1))  # (N, E)
    with_state = bool(policy.config.embodiment(embodiment).state_dim)
    actions_t = torch.as_tensor(np.asarray(actions, dtype=np.float32))                    # (N, T, D)
    cache = {s: torch.from_numpy(embed_instruction(s, E, cfg.instruction_encoder)) for s in set(instructions)}
    instr = torch.stack([cache[s] for s in instructions]) if len(instructions) else torch.zeros(0, E)  # (N, E)
    feats = []
    for start in range(0, len(proprio_t), ENCODE_BATCH):
        sl = slice(start, start + ENCODE_BATCH)
        image = torch.from_numpy(np.ascontiguousarray(images[sl])).permute(0, 3, 1, 2).float() / 255.0  # (B, 3, S, S)
        batch = {EMBODIMENT: embodiment, IMAGE: image, PROPRIO: proprio_t[sl], INSTRUCTION: instr[sl]}
        if with_state:
            batch[STATE] = state_t[sl]                                                    # (B, E)
        feats.append(policy.encode(batch))                                               # (B, d)
    feat = torch.cat(feats) if feats else torch.zeros(0, cfg.d_model)
    delta = actions_t - proprio_t[:, None, :]                                             # (N, T, D)
    return _Examples(feat, proprio_t, actions_t, policy.normalizers[embodiment].normalize_delta(delta))


@torch.no_grad()
def _head_loss(policy: HybridPolicy, embodiment: str, ex: _Examples, seed: int) -> float | None:
    """Head loss on all of ``ex`` (flow noise seeded: the same draw before and after training)."""
    if not len(ex):
        return None
    head = policy.heads[embodiment]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        total = 0.0
        for start in range(0, len(ex), EVAL_BATCH):
            sl = slice(start, start + EVAL_BATCH)
            loss, _ = head.loss(ex.feat[sl], ex.target[sl])
            total += float(loss) * len(ex.feat[sl])
    return total / len(ex)


@torch.no_grad()
def _action_errors(policy: HybridPolicy, embodiment: str, ex: _Examples, num_samples: int, seed: int
                   ) -> dict[str, float] | None:
    """First-step and whole-chunk MAE of the predicted absolute chunks (raw units)."""
    if not len(ex):
        return None
    head, norm = policy.heads[embodiment], policy.normalizers[embodiment]
    head.eval()
    generator = torch.Generator().manual_seed(seed)
    first, chunk = 0.0, 0.0
    for start in range(0, len(ex), EVAL_BATCH):
        sl = slice(start, start + EVAL_BATCH)
        delta_norm, _ = head.sample(ex.feat[sl], num_samples, generator)                 # (B, T, D)
        pred = ex.proprio[sl, None, :].double() + norm.denormalize_delta(delta_norm).double()
        err = (pred - ex.actions[sl].double()).abs()                                     # (B, T, D)
        first += float(err[:, 0].mean(-1).sum())
        chunk += float(err.mean((1, 2)).sum())
    return {"first_step_mae": first / len(ex), "chunk_mae": chunk / len(ex)}


def _out_of_range_fraction(policy: HybridPolicy, embodiment: str, ex: _Examples) -> float | None:
    """Token heads: share of target values beyond the bins (clipped to the edge bin in training)."""
    head = policy.heads[embodiment]
    head = getattr(head, "token", head)  # a coarse_to_fine head's token part clips the same way
    if not isinstance(head, TokenHead) or not len(ex):
        return None
    return float((ex.target.abs() > head.range_std).float().mean())


def _holdout_corrections(episode: np.ndarray, stamps: np.ndarray, fraction: float, seed: int
                         ) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) indices: whole random episodes until ~``fraction`` of the corrections
    are held out (one episode always trains); with one episode, the newest ``fraction``."""
    n = len(episode)
    ids = np.unique(episode)
    if len(ids) >= 2:
        rng = np.random.default_rng(seed)
        sizes = {int(e): int((episode == e).sum()) for e in ids}
        held: list[int] = []
        count, target = 0, fraction * n
        for e in rng.permutation(ids)[:-1]:  # the last one always trains
            if abs(count + sizes[int(e)] - target) < abs(count - target):
                held.append(int(e))
                count += sizes[int(e)]
        mask = np.isin(episode, held)
    else:
        order = np.argsort(stamps, kind="stable")
        mask = np.zeros(n, dtype=bool)
        mask[order[n - max(1, round(fraction * n)):]] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


# ---------------------------------------------------------------- versions and log
def version_dirs(embodiment_dir: str | os.PathLike[str]) -> dict[int, Path]:
    """{version number: directory} of the saved versions ``vNNNN`` under an embodiment's directory."""
    root = Path(embodiment_dir)
    if not root.is_dir():
        return {}
    return {int(m.group(1)): p for p in root.iterdir() if p.is_dir() and (m := VERSION_DIR.match(p.name))}


def _adaptation_version(checkpoint_dir: str | os.PathLike[str]) -> int:
    """The adaptation version number of a checkpoint (0: not adapted)."""
    training = read_checkpoint_config(checkpoint_dir).get(KEY_TRAINING) or {}
    info = training.get(KEY_ADAPTATION) if isinstance(training, dict) else None
    return int(info.get("version", 0)) if isinstance(info, dict) else 0


def _save_version(policy: HybridPolicy, config: PolicyConfig, embodiment_dir: Path, version: int,
                  training: dict[str, Any], base_dir: Path, embodiment: str,
                  recorded_replay: dict[str, Any] | None) -> tuple[Path, int]:
    """Write ``vNNNN`` atomically (temp dir, then rename); returns (directory, model_version)."""
    from hybridvla_ros.core.demos import save_demonstrations

    final = embodiment_dir / f"v{version:04d}"
    tmp = embodiment_dir / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model_version = save_checkpoint(policy, config, tmp, training=training)
        for src in base_dir.glob(REPLAY_FILE.format(embodiment="*")):
            shutil.copy2(src, tmp / src.name)
        if recorded_replay is not None:  # the next adaptation need not record again
            save_demonstrations(recorded_replay, os.fspath(replay_path(tmp, embodiment)))
        os.rename(tmp, final)  # fails if ``final`` exists: a version is never overwritten
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final, model_version


def _finite_or_none(value: Any) -> Any:
    """``value`` with every NaN/inf float replaced by None (strict JSON has none)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    return value


def _append_log(embodiment_dir: Path, entry: dict[str, Any]) -> dict[str, Any]:
    """Append ``entry`` as one strict-JSON line (fsync'd); returns it as written."""
    entry = json.loads(json.dumps(_finite_or_none(entry), default=json_default, allow_nan=False))
    embodiment_dir.mkdir(parents=True, exist_ok=True)
    with open(embodiment_dir / LOG_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return entry


# ---------------------------------------------------------------- adaptation
@dataclass
class AdaptationResult:
    """What one :func:`adapt` call did."""

    accepted: bool
    log: dict[str, Any]                       # the JSON line appended to adaptations.jsonl
    checkpoint_dir: Path | None = None        # the new version (accepted only)
    policy: HybridPolicy | None = field(default=None, repr=False)  # the fine-tuned policy (accepted only)


def adapt(params: AdaptationParams, base_checkpoint: str | os.PathLike[str], *,
          store_path: str | os.PathLike[str] | None = None, corrections: CorrectionSet | None = None,
          adapt_root: str | os.PathLike[str] | None = None, request: dict[str, Any] | None = None
          ) -> AdaptationResult:
    """Fine-tune ``params.embodiment``'s head of ``base_checkpoint`` on corrections (from
    ``store_path``, or the given CorrectionSet), accept or reject it, save an accepted one as
    a new version under ``adapt_root`` (default ``params.adapt_root``) and log the attempt.

    Raises CheckpointError for an unloadable base, ValueError for a missing store or a
    checkpoint without this embodiment's head. Too few corrections is not an error: the
    attempt is logged as rejected (``reason`` says why).
    """
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    name = params.embodiment
    embodiment_dir = Path(adapt_root if adapt_root is not None else params.adapt_root) / name
    base_dir = Path(base_checkpoint)
    log: dict[str, Any] = {k: None for k in LOG_FIELDS}
    log.update(time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), embodiment=name, accepted=False,
               base_checkpoint=str(base_dir.resolve()), steps=0, early_stopped=False,
               settings={k: getattr(params, k) for k in ("steps", "lr", "batch_size", "replay_fraction",
                                                         "holdout_fraction", "tolerance", "min_improvement",
                                                         "max_corrections", "seed")})
    if request:
        log["request"] = dict(request)

    def finish(reason: str) -> AdaptationResult:
        log["reason"] = reason
        log["wall_time_s"] = time.perf_counter() - t_start
        log["timings_s"] = timings
        return AdaptationResult(False, _append_log(embodiment_dir, log))

    # --- base model and data
    t0 = time.perf_counter()
    policy, config = load_checkpoint(base_dir)
    spec = config.embodiment(name)
    if (spec.action_dim, spec.chunk_size) != (params.action_dim, params.chunk_size):
        raise ValueError(f"checkpoint_path: head for {name!r} has action_dim {spec.action_dim}, chunk_size "
                         f"{spec.chunk_size}; the parameters say {params.action_dim}, {params.chunk_size}")
    base_doc = read_checkpoint_config(base_dir)
    log["base_model_version"] = log["model_version"] = int(base_doc[KEY_MODEL_VERSION])
    log["base_version"] = _adaptation_version(base_dir)
    if corrections is None:
        if store_path is None:
            raise ValueError("adapt: needs store_path or corrections")
        corrections, log["store"] = load_corrections(store_path, params, config.image_size, spec.state_joints)
    else:
        log["store"] = {"path": None, "count": len(corrections), "skipped": 0}
    timings["load"] = time.perf_counter() - t0
    n_corr = len(corrections)
    log["samples"] = {"corrections": 0, "corrections_heldout": 0, "correction_episodes": int(len(np.unique(
        corrections.episode))), "replay": 0, "replay_heldout": 0, "replay_source": None}
    if n_corr < params.min_corrections:
        return finish(f"too few corrections: {n_corr} < min_corrections {params.min_corrections}")

    t0 = time.perf_counter()
    replay, replay_source = load_replay(base_dir, params, config.image_size, spec)
    timings["load_replay"] = time.perf_counter() - t0
    log["samples"]["replay_source"] = replay_source

    # --- splits and encoding (once: the backbone is frozen)
    t0 = time.perf_counter()
    c_train, c_held = _holdout_corrections(corrections.episode, corrections.stamp_s, params.holdout_fraction,
                                           params.seed)
    r_train, r_held = split_episodes(np.asarray(replay[DEMO_EPISODE]), params.holdout_fraction)
    policy.eval()
    for p in policy.parameters():
        p.requires_grad_(False)

    def enc_corr(idx: np.ndarray) -> _Examples:
        c = corrections.subset(idx)
        return _encode(policy, name, c.images, c.proprio, c.actions, c.instructions, c.state)

    def enc_replay(idx: np.ndarray) -> _Examples:
        return _encode(policy, name, np.asarray(replay[DEMO_IMAGES])[idx], np.asarray(replay[DEMO_PROPRIO])[idx],
                       np.asarray(replay[DEMO_ACTIONS])[idx], [str(replay[DEMO_INSTRUCTION])] * len(idx),
                       demo_state(replay)[idx])

    corr_train, corr_held = enc_corr(c_train), enc_corr(c_held)
    rep_train, rep_held = enc_replay(r_train), enc_replay(r_held)
    timings["encode"] = time.perf_counter() - t0
    log["samples"].update(corrections=len(corr_train), corrections_heldout=len(corr_held), replay=len(rep_train),
                          replay_heldout=len(rep_held))
    log["out_of_range_fraction"] = _out_of_range_fraction(policy, name, corr_train)

    # --- before
    t0 = time.perf_counter()
    seed, k = params.seed, params.eval_samples
    loss_before = {"corrections": _head_loss(policy, name, corr_train, seed),
                   "replay": _head_loss(policy, name, rep_train, seed)}
    corr_before = _action_errors(policy, name, corr_held, k, seed)
    rep_before = _action_errors(policy, name, rep_held, k, seed)
    timings["evaluate"] = time.perf_counter() - t0

    # --- fine-tune the head on cached features
    t0 = time.perf_counter()
    head = policy.heads[name]
    for p in head.parameters():
        p.requires_grad_(True)
    head.train()
    optimizer = torch.optim.Adam(head.parameters(), lr=params.lr)
    n_rep = min(round(params.batch_size * params.replay_fraction), params.batch_size - 1) if len(rep_train) else 0
    n_cor = params.batch_size - n_rep
    generator = torch.Generator().manual_seed(seed)
    best, since_best, steps = math.inf, 0, 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # flow-matching noise
        for step in range(params.steps):
            ic = torch.randint(0, len(corr_train), (n_cor,), generator=generator)
            loss_c, _ = head.loss(corr_train.feat[ic], corr_train.target[ic])
            loss = loss_c * (n_cor / params.batch_size)
            if n_rep:
                ir = torch.randint(0, len(rep_train), (n_rep,), generator=generator)
                loss_r, _ = head.loss(rep_train.feat[ir], rep_train.target[ir])
                loss = loss + loss_r * (n_rep / params.batch_size)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)
            optimizer.step()
            steps = step + 1
            if steps % EARLY_STOP_CHECK_EVERY == 0:
                value = _head_loss(policy, name, corr_train, seed)  # the whole training set, same noise each time
                if value < best * (1.0 - EARLY_STOP_MIN_GAIN):
                    best, since_best = value, 0
                else:
                    since_best += EARLY_STOP_CHECK_EVERY
                    if since_best >= params.early_stop_patience:
                        log["early_stopped"] = True
                        break
    head.eval()
    for p in head.parameters():
        p.requires_grad_(False)
    timings["train"] = time.perf_counter() - t0
    log["steps"] = steps

    # --- after, and the decision
    t0 = time.perf_counter()
    loss_after = {"corrections": _head_loss(policy, name, corr_train, seed),
                  "replay": _head_loss(policy, name, rep_train, seed)}
    corr_after = _action_errors(policy, name, corr_held, k, seed)
    rep_after = _action_errors(policy, name, rep_held, k, seed)
    timings["evaluate"] += time.perf_counter() - t0
    log.update(loss_before=loss_before, loss_after=loss_after,
               heldout_corrections={"before": corr_before, "after": corr_after},
               heldout_replay={"before": rep_before, "after": rep_after})

    if not all(bool(torch.isfinite(p).all()) for p in head.parameters()):
        return finish("fine-tuning diverged: the head has NaN or inf weights")
    assert corr_before is not None and corr_after is not None  # min_corrections >= 2 leaves one held out
    corr_limit = corr_before["chunk_mae"] * (1.0 - params.min_improvement)
    if not corr_after["chunk_mae"] <= corr_limit:
        return finish(f"held-out correction error {corr_after['chunk_mae']:.5g} is not below "
                      f"{corr_limit:.5g} (before {corr_before['chunk_mae']:.5g}, min_improvement "
                      f"{params.min_improvement:g})")
    if rep_before is not None and rep_after is not None:
        rep_limit = rep_before["chunk_mae"] * (1.0 + params.tolerance) + 1e-12
        if not rep_after["chunk_mae"] <= rep_limit:
            return finish(f"held-out replay (old skill) error rose to {rep_after['chunk_mae']:.5g}, above "
                          f"{rep_limit:.5g} (before {rep_before['chunk_mae']:.5g}, tolerance {params.tolerance:g})")

    # --- accepted: save the new version
    t0 = time.perf_counter()
    embodiment_dir.mkdir(parents=True, exist_ok=True)
    version = max([0, log["base_version"], *version_dirs(embodiment_dir)]) + 1
    log.update(accepted=True, version=version, reason="held-out correction error fell and held-out replay error "
                                                       "stayed within tolerance")
    summary = {k: v for k, v in log.items() if k not in ("checkpoint", "model_version", "timings_s", "wall_time_s")}
    training = {KEY_ADAPTATION: summary}  # save_checkpoint makes it strict JSON
    new_dir, model_version = _save_version(policy, config, embodiment_dir, version, training, base_dir, name,
                                           replay if replay_source == "recorded" else None)
    timings["save"] = time.perf_counter() - t0
    log.update(checkpoint=str(new_dir.resolve()), model_version=model_version,
               wall_time_s=time.perf_counter() - t_start, timings_s=timings)
    return AdaptationResult(True, _append_log(embodiment_dir, log), new_dir, policy)


# ---------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    """``python -m hybridvla_ros.model.adaptation``: one adaptation from a store; prints its log line."""
    from hybridvla_ros.params import ParameterError, from_params, load_node_params

    p = argparse.ArgumentParser(prog="python -m hybridvla_ros.model.adaptation",
                                description="Fine-tune one embodiment's action head on a correction store.")
    p.add_argument("params_file", help="config/<embodiment>.yaml (its adaptation section is used)")
    p.add_argument("--store", required=True, help="the correction store (SQLite)")
    p.add_argument("--checkpoint", help="base checkpoint (default: adaptation.checkpoint_path)")
    p.add_argument("--adapt-root", help="output root (default: adaptation.adapt_root)")
    args = p.parse_args(argv)
    try:
        values = load_node_params(args.params_file, "adaptation")
        if args.adapt_root:
            values["adapt_root"] = args.adapt_root
        params = from_params(AdaptationParams, values, "adaptation")
        torch.set_num_threads(params.num_threads)
        result = adapt(params, args.checkpoint or params.checkpoint_path, store_path=args.store)
    except (ParameterError, ValueError, OSError) as exc:
        print(f"adaptation: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result.log, indent=1, default=json_default))
    return 0 if result.accepted else 3


if __name__ == "__main__":
    sys.exit(main())


def sim_corrections(p: AdaptationParams, n: int, labels: str = "shifted", seed: int = 100,
                    steps_per_episode: int = 40) -> CorrectionSet:
    """``n`` simulated corrections (for tests and the benchmark), as the recorder stores them (one every 0.1 s) from a simulated human.

    "shifted": the human reaches 10 cm beside the red target (the expert on a shifted
    target; the image still shows the real one); "noise": random targets around the
    current joint positions, unrelated to what the robot sees (a poisoned label set).
    """
    from hybridvla_ros.core.image import resize_for_policy
    from hybridvla_ros.core.kinematic_sim import KinematicSim

    every = max(1, round(0.1 / p.control_period_s))
    sim = KinematicSim(p, seed=seed)
    rng = np.random.default_rng(seed)
    noise = 3.0 * np.asarray(p.max_velocity) * p.control_period_s
    rows: list[tuple] = []
    episode = 0
    while len(rows) < n:
        sim.reset(seed=seed + episode)
        for k in range(steps_per_episode):
            target = sim.target
            sim.target = target + np.array([0.0, 0.1, 0.0])
            human = sim.expert_target()
            sim.target = target
            label = human if labels == "shifted" else sim.positions + rng.normal(0.0, 1.0, p.action_dim) * noise
            if k % every == 0 and len(rows) < n:
                rows.append((resize_for_policy(sim.render(), 96), sim.positions, label, 50.0 + k * p.control_period_s,
                             episode))
            sim.command_positions(human)
            sim.step(p.control_period_s)
        episode += 1
    images, proprio, human_action, stamps, episodes = (np.array(v) for v in zip(*rows))
    return CorrectionSet(images, proprio, human_action, stamps, episodes, [p.instruction] * len(rows),
                         correction_chunks(human_action, stamps, episodes, p.chunk_size, p.control_period_s),
                         state=np.zeros((len(rows), len(p.state_joints))))  # a kinematic sim's tool never holds
