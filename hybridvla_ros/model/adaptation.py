"""Online adaptation: fine-tune one embodiment's action head on human corrections (ROS-free).

:func:`adapt` reads top to bottom, one named step each:

1. **Data** (:func:`_encode_examples`). The caller brings the corrections (a
   :class:`~hybridvla_ros.model.corrections_data.CorrectionSet`: chunk targets built from
   the same episode's human targets, see :mod:`hybridvla_ros.model.corrections_data`) and
   the replay data (a :class:`~hybridvla_ros.model.replay.ReplaySample`: the checkpoint's
   sample of its demonstrations, or one the caller chose to record on the simulator; see
   :mod:`hybridvla_ros.model.replay`). About ``holdout_fraction`` of the corrections (whole
   episodes when there are two or more; otherwise the newest ones) and of the replay
   episodes are kept out of training. The backbone is frozen, so every example is encoded
   ONCE under ``torch.no_grad`` and the head trains on the cached features.
2. **Fine-tune the action head only** (:func:`_fine_tune_head`). Each batch is
   ``replay_fraction`` replay, the rest corrections. A few hundred Adam steps cost seconds
   on one CPU core. We fine-tune the head's own weights rather than low-rank adapters: the
   head is small (<2 M parameters), LoRA's savings in memory and storage buy nothing here,
   and the saved checkpoint keeps exactly the format inference loads (no merge step). What
   LoRA's low rank would do against over-fitting a few dozen corrections, replay, early
   stopping and the acceptance test do. Stops early when the loss on the training
   corrections (looked at every 10 steps) has not improved by 1 % for
   ``early_stop_patience`` steps. The normalization statistics stay the base's, so the
   token head can only express deltas within ``token_range_std`` of the demonstrations'
   spread; the log's ``out_of_range_fraction`` says how much of a correction set lies beyond.
3. **Evaluate and accept** (:func:`_score`, :func:`_rejection`). Action error (MAE in raw
   units, first step and whole chunk) on the held-out sets, before and after. ACCEPT only
   if the held-out correction chunk error falls by at least ``min_improvement`` (relative)
   AND the held-out replay chunk error rises by at most ``tolerance`` (relative); otherwise
   REJECT: nothing is written and the previous version keeps serving.
4. **Save** an accepted head (:func:`_save_version`) as ``<adapt_root>/<embodiment>/vNNNN/``
   (model.safetensors + config.json via checkpoint.save_checkpoint, whose
   ``model_version`` names the new weights, plus the replay files): written to a temporary
   directory, then renamed.
5. **Log** every attempt (:class:`_Attempt`) as one JSON line in
   ``<adapt_root>/<embodiment>/adaptations.jsonl`` (and return it).

The command line is ``hybridvla adapt`` (:mod:`hybridvla_ros.cli_model`); the ROS node is
``adaptation_node``.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from hybridvla_ros.core.dataset_keys import DEMO_ACTIONS, DEMO_EPISODE, DEMO_IMAGES, DEMO_INSTRUCTION, DEMO_PROPRIO
from hybridvla_ros.model.checkpoint import (
    KEY_MODEL_VERSION,
    KEY_TRAINING,
    json_default,
    load_checkpoint,
    read_checkpoint_config,
    save_checkpoint,
)
from hybridvla_ros.model.corrections_data import CorrectionSet, holdout_corrections
from hybridvla_ros.model.demo_data import check_demos, demo_state, split_episodes
from hybridvla_ros.model.policy import (
    EMBODIMENT,
    IMAGE,
    INSTRUCTION,
    PROPRIO,
    STATE,
    HybridPolicy,
    PolicyConfig,
    TokenHead,
)
from hybridvla_ros.model.replay import REPLAY_DATASET, REPLAY_FILE, REPLAY_RECORDED, ReplaySample, replay_path
from hybridvla_ros.model.text import embed_instruction
from hybridvla_ros.params.adaptation import AdaptationParams
from hybridvla_ros.sim.demos import save_demonstrations

__all__ = ["AdaptationResult", "adapt", "version_dirs", "LOG_FILE", "LOG_FIELDS"]

LOG_FILE = "adaptations.jsonl"
VERSION_DIR = re.compile(r"^v(\d{4,})$")
KEY_ADAPTATION = "adaptation"       # config.json training entry of an adapted checkpoint
ENCODE_BATCH = 128
EVAL_BATCH = 256
EARLY_STOP_MIN_GAIN = 0.01          # relative loss improvement that counts as progress
EARLY_STOP_CHECK_EVERY = 10         # steps between two looks at the training-set correction loss
LOG_FIELDS = ("time", "embodiment", "accepted", "reason", "version", "checkpoint", "model_version",
              "base_checkpoint", "base_model_version", "base_version", "samples", "steps", "early_stopped",
              "loss_before", "loss_after", "heldout_corrections", "heldout_replay", "out_of_range_fraction",
              "wall_time_s", "timings_s", "settings", "store")
SETTINGS = ("steps", "lr", "batch_size", "replay_fraction", "holdout_fraction", "tolerance", "min_improvement",
            "max_corrections", "seed")  # the parameters each log line repeats
ACCEPTED_REASON = "held-out correction error fell and held-out replay error stayed within tolerance"


# ---------------------------------------------------------------- encoded examples and metrics
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
    """Encode (N, S, S, 3) uint8 images (a head that reads K cameras: (N, K, S, S, 3)) + proprio + state
    joints (N, E) + instructions once with the frozen backbone."""
    cfg = policy.config
    S, E = cfg.image_size, cfg.instruction_dim
    if len(images) and images.shape[-3:-1] != (S, S):
        flat = images.reshape(-1, *images.shape[-3:])  # (N [* K], H, W, 3)
        images = np.stack([cv2.resize(im, (S, S), interpolation=cv2.INTER_AREA)
                           for im in flat]).reshape(*images.shape[:-3], S, S, 3)
    proprio_t = torch.as_tensor(np.asarray(proprio, dtype=np.float32))                    # (N, D)
    state_t = torch.as_tensor(np.asarray(state, dtype=np.float32).reshape(len(proprio_t), -1))  # (N, E)
    with_state = bool(policy.config.embodiment(embodiment).state_dim)
    actions_t = torch.as_tensor(np.asarray(actions, dtype=np.float32))                    # (N, T, D)
    cache = {s: torch.from_numpy(embed_instruction(s, E, cfg.instruction_encoder)) for s in set(instructions)}
    instr = torch.stack([cache[s] for s in instructions]) if len(instructions) else torch.zeros(0, E)  # (N, E)
    feats = []
    for start in range(0, len(proprio_t), ENCODE_BATCH):
        sl = slice(start, start + ENCODE_BATCH)
        image = torch.from_numpy(np.ascontiguousarray(images[sl])).movedim(-1, -3).float() / 255.0  # (B, [K,] 3, S, S)
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


# ---------------------------------------------------------------- the steps of adapt()
@dataclass
class _Data:
    """The example sets of one adaptation, encoded once by the frozen backbone."""

    corr_train: _Examples
    corr_held: _Examples
    rep_train: _Examples
    rep_held: _Examples


@dataclass
class _Scores:
    """The head measured once (before or after fine-tuning)."""

    loss: dict[str, float | None]           # head loss on the training corrections and replay
    corrections: dict[str, float] | None    # held-out correction action errors (None: none held out)
    replay: dict[str, float] | None         # held-out replay action errors (None: none held out)


def _encode_examples(policy: HybridPolicy, embodiment: str, corrections: CorrectionSet,
                     replay: Mapping[str, Any], params: AdaptationParams) -> _Data:
    """Freeze ``policy``, split corrections and replay into training and held-out examples
    and encode all four sets once."""
    c_train, c_held = holdout_corrections(corrections.episode, corrections.stamp_s, params.holdout_fraction,
                                          params.seed)
    r_train, r_held = split_episodes(np.asarray(replay[DEMO_EPISODE]), params.holdout_fraction)
    policy.eval()
    for p in policy.parameters():
        p.requires_grad_(False)

    def enc_corr(idx: np.ndarray) -> _Examples:
        c = corrections.subset(idx)
        return _encode(policy, embodiment, c.images, c.proprio, c.actions, c.instructions, c.state)

    def enc_replay(idx: np.ndarray) -> _Examples:
        return _encode(policy, embodiment, np.asarray(replay[DEMO_IMAGES])[idx],
                       np.asarray(replay[DEMO_PROPRIO])[idx], np.asarray(replay[DEMO_ACTIONS])[idx],
                       [str(replay[DEMO_INSTRUCTION])] * len(idx), demo_state(replay)[idx])

    return _Data(enc_corr(c_train), enc_corr(c_held), enc_replay(r_train), enc_replay(r_held))


def _score(policy: HybridPolicy, embodiment: str, data: _Data, params: AdaptationParams) -> _Scores:
    """Training losses and held-out action errors of the head as it is now (seeded: comparable)."""
    seed, k = params.seed, params.eval_samples
    loss = {"corrections": _head_loss(policy, embodiment, data.corr_train, seed),
            "replay": _head_loss(policy, embodiment, data.rep_train, seed)}
    return _Scores(loss, _action_errors(policy, embodiment, data.corr_held, k, seed),
                   _action_errors(policy, embodiment, data.rep_held, k, seed))


def _fine_tune_head(policy: HybridPolicy, embodiment: str, data: _Data, params: AdaptationParams
                    ) -> tuple[int, bool]:
    """Train ``embodiment``'s head on the cached features (corrections mixed with replay);
    returns (steps taken, whether it stopped early). The head is frozen again afterwards."""
    head = policy.heads[embodiment]
    corr_train, rep_train = data.corr_train, data.rep_train
    for p in head.parameters():
        p.requires_grad_(True)
    head.train()
    optimizer = torch.optim.Adam(head.parameters(), lr=params.lr)
    n_rep = min(round(params.batch_size * params.replay_fraction), params.batch_size - 1) if len(rep_train) else 0
    n_cor = params.batch_size - n_rep
    seed = params.seed
    generator = torch.Generator().manual_seed(seed)
    best, since_best, steps, early_stopped = math.inf, 0, 0, False
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
                value = _head_loss(policy, embodiment, corr_train, seed)  # whole training set, same noise each time
                assert value is not None  # corr_train is never empty (one correction episode always trains)
                if value < best * (1.0 - EARLY_STOP_MIN_GAIN):
                    best, since_best = value, 0
                else:
                    since_best += EARLY_STOP_CHECK_EVERY
                    if since_best >= params.early_stop_patience:
                        early_stopped = True
                        break
    head.eval()
    for p in head.parameters():
        p.requires_grad_(False)
    return steps, early_stopped


def _rejection(head: torch.nn.Module, before: _Scores, after: _Scores, params: AdaptationParams) -> str | None:
    """Why the fine-tuned head must not be served, or None when it is accepted."""
    if not all(bool(torch.isfinite(p).all()) for p in head.parameters()):
        return "fine-tuning diverged: the head has NaN or inf weights"
    corr_before, corr_after = before.corrections, after.corrections
    assert corr_before is not None and corr_after is not None  # min_corrections >= 2 leaves one held out
    corr_limit = corr_before["chunk_mae"] * (1.0 - params.min_improvement)
    if not corr_after["chunk_mae"] <= corr_limit:
        return (f"held-out correction error {corr_after['chunk_mae']:.5g} is not below "
                f"{corr_limit:.5g} (before {corr_before['chunk_mae']:.5g}, min_improvement "
                f"{params.min_improvement:g})")
    rep_before, rep_after = before.replay, after.replay
    if rep_before is not None and rep_after is not None:
        rep_limit = rep_before["chunk_mae"] * (1.0 + params.tolerance) + 1e-12
        if not rep_after["chunk_mae"] <= rep_limit:
            return (f"held-out replay (old skill) error rose to {rep_after['chunk_mae']:.5g}, above "
                    f"{rep_limit:.5g} (before {rep_before['chunk_mae']:.5g}, tolerance {params.tolerance:g})")
    return None


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
                  recorded_replay: Mapping[str, Any] | None) -> tuple[Path, int]:
    """Write ``vNNNN`` atomically (temp dir, then rename); returns (directory, model_version).
    Raises OSError when writing fails (nothing is left behind) or ``vNNNN`` exists."""
    final = embodiment_dir / f"v{version:04d}"
    tmp = embodiment_dir / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model_version = save_checkpoint(policy, config, tmp, training=training)
        for src in base_dir.glob(REPLAY_FILE.format(embodiment="*")):
            shutil.copy2(src, tmp / src.name)
        if recorded_replay is not None:  # the next adaptation need not record again
            save_demonstrations(dict(recorded_replay), os.fspath(replay_path(tmp, embodiment)))
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


class _Attempt:
    """One adaptation attempt's log line and timings, until the line is written."""

    def __init__(self, params: AdaptationParams, base_dir: Path, embodiment_dir: Path,
                 request: Mapping[str, Any] | None) -> None:
        self.t_start = time.perf_counter()
        self.embodiment_dir = embodiment_dir
        self.timings: dict[str, float] = {}
        self.log: dict[str, Any] = {k: None for k in LOG_FIELDS}
        self.log.update(time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), embodiment=params.embodiment,
                        accepted=False, base_checkpoint=str(base_dir.resolve()), steps=0, early_stopped=False,
                        settings={k: getattr(params, k) for k in SETTINGS})
        if request:
            self.log["request"] = dict(request)

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Add the wall time of the block to ``timings_s[name]``."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t0

    def reject(self, reason: str) -> AdaptationResult:
        """Log the attempt as rejected for ``reason``."""
        self.log.update(reason=reason, wall_time_s=time.perf_counter() - self.t_start, timings_s=self.timings)
        return AdaptationResult(False, _append_log(self.embodiment_dir, self.log))

    def accept(self, new_dir: Path, model_version: int, policy: HybridPolicy) -> AdaptationResult:
        """Log the attempt as accepted, served from ``new_dir``."""
        self.log.update(checkpoint=str(new_dir.resolve()), model_version=model_version,
                        wall_time_s=time.perf_counter() - self.t_start, timings_s=self.timings)
        return AdaptationResult(True, _append_log(self.embodiment_dir, self.log), new_dir, policy)


def _load_base(params: AdaptationParams, base_dir: Path, log: dict[str, Any]) -> tuple[HybridPolicy, PolicyConfig]:
    """The base checkpoint, checked against the parameters; its versions go into ``log``."""
    policy, config = load_checkpoint(base_dir)
    spec = config.embodiment(params.embodiment)
    if (spec.action_dim, spec.chunk_size) != (params.action_dim, params.chunk_size):
        raise ValueError(f"checkpoint_path: head for {params.embodiment!r} has action_dim {spec.action_dim}, "
                         f"chunk_size {spec.chunk_size}; the parameters say {params.action_dim}, {params.chunk_size}")
    log["base_model_version"] = log["model_version"] = int(read_checkpoint_config(base_dir)[KEY_MODEL_VERSION])
    log["base_version"] = _adaptation_version(base_dir)
    return policy, config


def adapt(params: AdaptationParams, base_checkpoint: str | os.PathLike[str], corrections: CorrectionSet,
          replay: ReplaySample, *, adapt_root: str | os.PathLike[str] | None = None,
          request: Mapping[str, Any] | None = None, store: Mapping[str, Any] | None = None) -> AdaptationResult:
    """Fine-tune ``params.embodiment``'s head of ``base_checkpoint`` on ``corrections`` while
    replaying ``replay``, accept or reject it, save an accepted one as a new version under
    ``adapt_root`` (default ``params.adapt_root``) and log the attempt (``store``: where the
    corrections came from, {path, count, skipped}; ``request``: what asked for it).

    Raises CheckpointError for an unloadable base, ValueError for a checkpoint without this
    embodiment's head or replay data that do not fit it. Too few corrections is not an
    error: the attempt is logged as rejected (``reason`` says why).
    """
    name = params.embodiment
    base_dir = Path(base_checkpoint)
    attempt = _Attempt(params, base_dir, Path(adapt_root if adapt_root is not None else params.adapt_root) / name,
                       request)
    log = attempt.log
    with attempt.timed("load"):
        policy, config = _load_base(params, base_dir, log)
    log["store"] = dict(store) if store is not None else {"path": None, "count": len(corrections), "skipped": 0}
    log["samples"] = {"corrections": 0, "corrections_heldout": 0, "correction_episodes": int(len(np.unique(
        corrections.episode))), "replay": 0, "replay_heldout": 0, "replay_source": None}
    if len(corrections) < params.min_corrections:
        return attempt.reject(f"too few corrections: {len(corrections)} < min_corrections {params.min_corrections}")
    check_demos(replay.demos, config.embodiment(name))
    log["samples"]["replay_source"] = replay.source

    with attempt.timed("encode"):  # 1. data
        data = _encode_examples(policy, name, corrections, replay.demos, params)
    log["samples"].update(corrections=len(data.corr_train), corrections_heldout=len(data.corr_held),
                          replay=len(data.rep_train), replay_heldout=len(data.rep_held))
    log["out_of_range_fraction"] = _out_of_range_fraction(policy, name, data.corr_train)
    with attempt.timed("evaluate"):
        before = _score(policy, name, data, params)
    with attempt.timed("train"):  # 2. fine-tune
        log["steps"], log["early_stopped"] = _fine_tune_head(policy, name, data, params)
    with attempt.timed("evaluate"):  # 3. evaluate and accept
        after = _score(policy, name, data, params)
    log.update(loss_before=before.loss, loss_after=after.loss,
               heldout_corrections={"before": before.corrections, "after": after.corrections},
               heldout_replay={"before": before.replay, "after": after.replay})
    reason = _rejection(policy.heads[name], before, after, params)
    if reason is not None:
        return attempt.reject(reason)

    with attempt.timed("save"):  # 4. save
        attempt.embodiment_dir.mkdir(parents=True, exist_ok=True)
        version = max([0, log["base_version"], *version_dirs(attempt.embodiment_dir)]) + 1
        log.update(accepted=True, version=version, reason=ACCEPTED_REASON)
        summary = {k: v for k, v in log.items() if k not in ("checkpoint", "model_version", "timings_s", "wall_time_s")}
        # a sample that is not the base checkpoint's own travels with the version
        recorded = replay.demos if replay.source in (REPLAY_RECORDED, REPLAY_DATASET) else None
        new_dir, model_version = _save_version(policy, config, attempt.embodiment_dir, version,
                                               {KEY_ADAPTATION: summary},  # save_checkpoint makes it strict JSON
                                               base_dir, name, recorded)
    return attempt.accept(new_dir, model_version, policy)  # 5. log
