"""Train one HybridPolicy on several embodiments' demonstrations (``hybridvla train``).

One shared backbone, one head per embodiment: each step draws a batch from ONE embodiment,
going round-robin through them. The last episodes of every embodiment are held out; at the
end the policy's absolute action error on them is compared with the "hold still" baseline
(predict the current joint positions for the whole chunk), for every inference mode the
heads serve (a coarse_to_fine head: token, flow and coarse_to_fine).

Defaults: instructions embedded by the frozen pretrained all-MiniLM-L6-v2 (text.py), and
coarse_to_fine heads for every embodiment (``--heads config`` trains only the parameter
file's ``head_type``), so one checkpoint serves whichever mode ``head_type`` asks for.

Writes into ``--out``: the checkpoint (model.safetensors + config.json), ``loss.png``,
``train_log.json`` (per-step loss and embodiment, held-out errors, timings) and, per
embodiment, ``replay_<embodiment>.npz``: a random sample of its demonstrations (same
format as core/demos.py) that online adaptation replays so old skills stay.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import cv2
import numpy as np
import torch

from hybridvla_ros.model.checkpoint import json_default, save_checkpoint
from hybridvla_ros.model.policy import (ACTIONS, CONFIDENCE, EMBODIMENT, IMAGE,
                                        INSTRUCTION, PROPRIO, STATE, EmbodimentSpec, HybridPolicy, PolicyConfig,
                                        count_parameters)
from hybridvla_ros.model.text import HASH_ENCODER, INSTRUCTION_DIM, MINILM, embed_instruction, encoder_dim

# ---------------------------------------------------------------- demonstration dict keys (core/demos.py)
DEMO_IMAGES = "images"                  # (N, S, S, 3) uint8 RGB
DEMO_PROPRIO = "proprio"                # (N, D) float32 measured joint positions
DEMO_ACTIONS = "actions"                # (N, T, D) float32 absolute targets, [n, k]: k periods after step n
DEMO_EPISODE = "episode"                # (N,) int32 episode index
DEMO_EMBODIMENT = "embodiment"          # str
DEMO_INSTRUCTION = "instruction"        # str
DEMO_CONTROL_PERIOD = "control_period_s"  # float
DEMO_STATE = "state"                    # (N, E) float32 state joints; optional (absent: E = 0)
DEMO_KEYS = (DEMO_IMAGES, DEMO_PROPRIO, DEMO_ACTIONS, DEMO_EPISODE, DEMO_EMBODIMENT, DEMO_INSTRUCTION,
             DEMO_CONTROL_PERIOD)

LOSS_PLOT = "loss.png"
TRAIN_LOG = "train_log.json"
REPLAY_FILE = "replay_{embodiment}.npz"  # next to the checkpoint; see save_replay_sample
REPLAY_EXAMPLES = 2000    # demonstration examples kept per embodiment for replay during adaptation (with
#                           400 the head drifted: held-out replay error rose 30-50 %, 15 % with 2000)
EVAL_BATCH = 256          # examples per predict() call during evaluation
TRAIN_EVAL_EXAMPLES = 512  # training examples re-scored at the end (to see over-fitting)


# ---------------------------------------------------------------- data
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
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[0] != N or images.shape[3] != 3:
        raise ValueError(f"demonstrations[{DEMO_IMAGES!r}]: expected ({N}, S, S, 3) uint8, "
                         f"got {images.shape} {images.dtype}")
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


class EmbodimentData:
    """One embodiment's examples as tensors, ready to be batched."""

    def __init__(self, demos: Mapping[str, Any], spec: EmbodimentSpec, indices: np.ndarray, image_size: int,
                 instruction_dim: int, instruction_encoder: str = HASH_ENCODER) -> None:
        self.spec = spec
        images = np.asarray(demos[DEMO_IMAGES])[indices]                              # (N, S', S', 3)
        if images.shape[1:3] != (image_size, image_size):
            images = np.stack([cv2.resize(im, (image_size, image_size), interpolation=cv2.INTER_AREA)
                               for im in images]) if len(images) else images.reshape(0, image_size, image_size, 3)
        self.images = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()  # (N, 3, S, S)
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
            IMAGE: self.images[idx].float() / 255.0,                                  # (B, 3, S, S)
            PROPRIO: self.proprio[idx],                                               # (B, D)
            INSTRUCTION: self.instruction.expand(len(idx), -1),                       # (B, E)
        }
        if self.spec.state_dim:
            out[STATE] = self.state[idx]                                              # (B, E_state)
        if with_actions:
            out[ACTIONS] = self.actions[idx]                                          # (B, T, D)
        return out


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by up to ``max_shift`` pixels (edge pixels repeated), as in DrQ."""
    if max_shift <= 0:
        return images
    B, _, H, W = images.shape
    padded = torch.nn.functional.pad(images, (max_shift,) * 4, mode="replicate")   # (B, 3, H+2m, W+2m)
    dx = torch.randint(0, 2 * max_shift + 1, (B,), generator=generator)
    dy = torch.randint(0, 2 * max_shift + 1, (B,), generator=generator)
    rows = (dy[:, None] + torch.arange(H)[None])[:, None, :, None]                  # (B, 1, H, 1)
    cols = (dx[:, None] + torch.arange(W)[None])[:, None, None, :]                  # (B, 1, 1, W)
    b = torch.arange(B)[:, None, None, None]
    c = torch.arange(3)[None, :, None, None]
    return padded[b, c, rows, cols]                                                 # (B, 3, H, W)


# ---------------------------------------------------------------- evaluation
def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` (higher: more likely positive) for boolean ``labels``.

    The Mann-Whitney U statistic with tied scores given their average rank (a tie counts one
    half); NaN when one class is empty. Written here because neither scipy nor scikit-learn
    is a dependency of this package.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels, dtype=bool).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"scores/labels: shapes differ, {scores.shape} and {labels.shape}")
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    # runs of equal scores share the mean of their 1-based ranks
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], len(scores)]
    for a, b in zip(starts, ends):
        ranks[order[a:b]] = 0.5 * (a + 1 + b)
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def confidence_auroc(error: np.ndarray, confidence: np.ndarray) -> float:
    """AUROC of LOW confidence picking out HIGH error (above the median error) among examples.

    0.5: confidence says nothing about error; 1: every high-error example is less confident
    than every low-error one. NaN with fewer than two distinct errors.
    """
    error = np.asarray(error, dtype=np.float64).ravel()
    return auroc(-np.asarray(confidence, dtype=np.float64).ravel(), error > np.median(error))


@torch.no_grad()
def evaluate(policy: HybridPolicy, data: EmbodimentData, num_samples: int = 5, seed: int = 0,
             max_examples: int | None = None, mode: str | None = None) -> dict[str, float]:
    """Mean absolute error of the predicted absolute chunks against the demonstrations (raw units),
    next to the "hold still" baseline that predicts the current joint positions, and the AUROC
    of low confidence flagging the examples with above-median error (``confidence_auroc``),
    in inference ``mode`` (None: the head's type)."""
    policy.eval()
    n = len(data) if max_examples is None else min(len(data), max_examples)
    if n == 0:
        return {}
    idx_all = torch.linspace(0, len(data) - 1, n).round().long()
    generator = torch.Generator().manual_seed(seed)
    abs_err, base_err, last_err = 0.0, 0.0, 0.0
    example_err: list[np.ndarray] = []
    example_conf: list[np.ndarray] = []
    for start in range(0, n, EVAL_BATCH):
        idx = idx_all[start:start + EVAL_BATCH]
        out = policy.predict(data.batch(idx, with_actions=False), num_samples=num_samples, generator=generator,
                             mode=mode)
        target = data.actions[idx].double()                                           # (B, T, D)
        err = (out[ACTIONS].double() - target).abs()                                 # (B, T, D)
        abs_err += float(err.sum())
        last_err += float(err[:, -1].sum())
        base_err += float((target - data.proprio[idx].double()[:, None]).abs().sum())
        example_err.append(err.mean((1, 2)).numpy())                                 # (B,)
        example_conf.append(out[CONFIDENCE].double().numpy())                        # (B,)
    T, D = data.spec.chunk_size, data.spec.action_dim
    mae, baseline = abs_err / (n * T * D), base_err / (n * T * D)
    errors, confidences = np.concatenate(example_err), np.concatenate(example_conf)  # (n,), (n,)
    return {"action_mae": mae, "baseline_mae": baseline, "ratio_to_baseline": mae / max(baseline, 1e-12),
            "last_step_mae": last_err / (n * D), "mean_confidence": float(confidences.mean()),
            "confidence_auroc": confidence_auroc(errors, confidences), "examples": n}


# ---------------------------------------------------------------- training
@dataclass
class TrainResult:
    """What ``train`` made."""

    policy: HybridPolicy
    config: PolicyConfig
    log: dict[str, Any]
    out_dir: Path | None


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10 %."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def train(demos: Sequence[Mapping[str, Any]], specs: Sequence[EmbodimentSpec], *,
          out_dir: str | os.PathLike[str] | None = None, policy_config: PolicyConfig | None = None,
          train_steps: int = 1500, batch_size: int = 64, lr: float = 3e-4, weight_decay: float = 1e-4,
          warmup_steps: int = 100, grad_clip: float = 1.0, seed: int = 0, holdout_fraction: float = 0.1,
          augment_shift_px: int = 0, eval_num_samples: int = 5, threads: int | None = None,
          progress: bool = False, extra_log: Mapping[str, Any] | None = None,
          init_policy: HybridPolicy | None = None) -> TrainResult:
    """Train one policy on ``demos[i]`` (the demonstrations of ``specs[i]``).

    ``policy_config`` sets the architecture (its ``embodiments`` are replaced by ``specs``).
    ``init_policy`` continues training that policy instead (its architecture and its
    normalization statistics are kept; ``policy_config`` must be None; every spec must be
    one of its embodiments). With ``out_dir`` the checkpoint, loss.png and train_log.json are
    written there.
    """
    if len(demos) != len(specs) or not specs:
        raise ValueError(f"demos/specs: need one demonstration dict per spec, got {len(demos)} and {len(specs)}")
    for name, value in (("train_steps", train_steps), ("batch_size", batch_size)):
        if value < 1:
            raise ValueError(f"{name}: must be >= 1, got {value!r}")
    for d, spec in zip(demos, specs):
        check_demos(d, spec)
    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    if init_policy is not None:
        if policy_config is not None:
            raise ValueError("init_policy and policy_config: give one of them (the policy has its config)")
        config, policy = init_policy.config, init_policy
        for spec in specs:
            if config.embodiment(spec.name) != spec:
                raise ValueError(f"init_policy: its {spec.name!r} head is {config.embodiment(spec.name)}, not {spec}")
    else:
        config = dataclasses.replace(policy_config or PolicyConfig(), embodiments=tuple(specs))
        policy = HybridPolicy(config)

    train_data: dict[str, EmbodimentData] = {}
    held_data: dict[str, EmbodimentData] = {}
    for d, spec in zip(demos, specs):
        train_idx, held_idx = split_episodes(np.asarray(d[DEMO_EPISODE]), holdout_fraction)
        if init_policy is None:
            policy.fit_normalization(spec.name, np.asarray(d[DEMO_PROPRIO])[train_idx],
                                     np.asarray(d[DEMO_ACTIONS])[train_idx], state=demo_state(d)[train_idx])
        train_data[spec.name] = EmbodimentData(d, spec, train_idx, config.image_size, config.instruction_dim,
                                               config.instruction_encoder)
        held_data[spec.name] = EmbodimentData(d, spec, held_idx, config.image_size, config.instruction_dim,
                                              config.instruction_encoder)

    decay = [p for n, p in policy.named_parameters() if p.ndim >= 2 and "embed" not in n and "tokens" not in n]
    no_decay = [p for n, p in policy.named_parameters() if not (p.ndim >= 2 and "embed" not in n
                                                                and "tokens" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95))
    warmup = min(warmup_steps, max(1, train_steps // 10))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, train_steps, warmup))
    generator = torch.Generator().manual_seed(seed)
    names = [s.name for s in specs]
    step_embodiment: list[str] = []
    step_loss: list[float] = []

    from tqdm import tqdm  # imported here: only training needs it

    policy.train()
    t0 = time.perf_counter()
    bar = tqdm(range(train_steps), desc="train", disable=not progress, dynamic_ncols=True)
    smoothed: dict[str, float] = {}
    for step in bar:
        name = names[step % len(names)]
        data = train_data[name]
        idx = torch.randint(0, len(data), (batch_size,), generator=generator)
        batch = data.batch(idx)
        batch[IMAGE] = random_shift(batch[IMAGE], augment_shift_px, generator)
        loss, parts = policy(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), grad_clip)
        optimizer.step()
        scheduler.step()
        step_embodiment.append(name)
        step_loss.append(parts["loss"])
        smoothed[name] = parts["loss"] if name not in smoothed else 0.95 * smoothed[name] + 0.05 * parts["loss"]
        if step % 10 == 0 or step == train_steps - 1:
            bar.set_postfix({k: f"{v:.3f}" for k, v in smoothed.items()})
    bar.close()
    train_time = time.perf_counter() - t0

    t0 = time.perf_counter()
    # every mode a head serves (a coarse_to_fine head: token, flow, coarse_to_fine), held-out and train subset
    modes = {n: {m: {"heldout": evaluate(policy, held_data[n], eval_num_samples, seed, mode=m),
                     "train_subset": evaluate(policy, train_data[n], eval_num_samples, seed, TRAIN_EVAL_EXAMPLES,
                                              mode=m)}
                 for m in policy.modes(n)} for n in names}
    # the head's own mode, as before modes existed
    heldout = {n: modes[n][config.embodiment(n).head_type]["heldout"] for n in names}
    train_eval = {n: modes[n][config.embodiment(n).head_type]["train_subset"] for n in names}
    eval_time = time.perf_counter() - t0
    policy.eval()

    settings = {"train_steps": train_steps, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay,
                "warmup_steps": warmup, "grad_clip": grad_clip, "seed": seed, "holdout_fraction": holdout_fraction,
                "augment_shift_px": augment_shift_px, "eval_num_samples": eval_num_samples,
                "threads": torch.get_num_threads()}
    examples = {n: {"train": len(train_data[n]), "heldout": len(held_data[n])} for n in names}
    log: dict[str, Any] = {
        "settings": settings, **dict(extra_log or {}), "examples": examples,
        "parameters": count_parameters(policy), "train_time_s": train_time, "eval_time_s": eval_time,
        "heldout": heldout, "train_subset": train_eval, "modes": modes,
        "steps": {"embodiment": step_embodiment, "loss": step_loss},
    }
    result = TrainResult(policy=policy, config=config, log=log, out_dir=None)
    return write_outputs(result, demos, specs, out_dir, seed) if out_dir is not None else result


def _smoothed_final_loss(log: Mapping[str, Any]) -> dict[str, float]:
    """Per embodiment, the exponential moving average (0.95) of its step losses, as the progress bar shows."""
    out: dict[str, float] = {}
    for name, loss in zip(log["steps"]["embodiment"], log["steps"]["loss"]):
        out[name] = loss if name not in out else 0.95 * out[name] + 0.05 * loss
    return out


def write_outputs(result: TrainResult, demos: Sequence[Mapping[str, Any]], specs: Sequence[EmbodimentSpec],
                  out_dir: str | os.PathLike[str], seed: int) -> TrainResult:
    """Write the checkpoint, train_log.json, loss.png and the replay samples of ``result`` into
    ``out_dir``; return ``result`` with ``out_dir`` set."""
    out_path = Path(out_dir)
    log = result.log
    summary = {k: v for k, v in log.items() if k != "steps"}
    summary["final_loss"] = _smoothed_final_loss(log)
    save_checkpoint(result.policy, result.config, out_path, training=summary)
    (out_path / TRAIN_LOG).write_text(json.dumps(log, indent=1, default=json_default) + "\n", encoding="utf-8")
    plot_losses(log["steps"]["embodiment"], log["steps"]["loss"], out_path / LOSS_PLOT)
    for d, spec in zip(demos, specs):
        save_replay_sample(d, replay_path(out_path, spec.name), REPLAY_EXAMPLES, seed)
    return dataclasses.replace(result, out_dir=out_path)


def replay_path(checkpoint_dir: str | os.PathLike[str], embodiment: str) -> Path:
    """Where the replay sample of ``embodiment`` lies in a checkpoint directory."""
    return Path(checkpoint_dir) / REPLAY_FILE.format(embodiment=embodiment)


def save_replay_sample(demos: Mapping[str, Any], path: str | os.PathLike[str], max_examples: int = REPLAY_EXAMPLES,
                       seed: int = 0) -> int:
    """Save up to ``max_examples`` random examples of ``demos`` (uint8 images, episode indices
    kept) to ``path`` with core.demos.save_demonstrations (atomic); returns how many."""
    from hybridvla_ros.core.demos import save_demonstrations

    n = len(demos[DEMO_PROPRIO])
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(n, size=min(n, max_examples), replace=False))  # (M,) in recording order
    sample = {k: (np.asarray(demos[k])[idx] if k in (DEMO_IMAGES, DEMO_PROPRIO, DEMO_ACTIONS, DEMO_EPISODE)
                  else demos[k]) for k in DEMO_KEYS}
    sample[DEMO_STATE] = demo_state(demos)[idx]
    save_demonstrations(sample, os.fspath(path))
    return len(idx)


def plot_losses(step_embodiment: Sequence[str], step_loss: Sequence[float], path: str | os.PathLike[str]) -> None:
    """Loss per embodiment against step (raw and smoothed), log scale, into a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    emb = np.asarray(step_embodiment)
    loss = np.asarray(step_loss, dtype=np.float64)
    for i, name in enumerate(dict.fromkeys(step_embodiment)):
        steps = np.flatnonzero(emb == name)
        y = loss[steps]
        window = max(1, min(25, len(y) // 10))
        smooth = np.convolve(y, np.ones(window) / window, mode="valid")              # (len - window + 1,)
        color = f"C{i}"
        ax.plot(steps, y, color=color, alpha=0.2, linewidth=0.8)
        ax.plot(steps[window - 1:], smooth, color=color, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (token: cross-entropy, flow: velocity MSE)")
    ax.set_title("HybridPolicy training loss")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ---------------------------------------------------------------- command line
# Control steps per demonstration episode when --steps-per-episode is not given: the kinematic
# experts settle in ~50 steps; the MuJoCo pick-and-place / hand-over tasks take ~3.5 s (175).
DEFAULT_STEPS_PER_EPISODE = {"kinematic": 60, "mujoco": 200}


def load_embodiment(config_dir: str | os.PathLike[str], name: str, physics: str | None = None) -> Any:
    """SimRobotParams of ``config_dir/<name>.yaml``: the robot as every node knows it plus the
    simulator its demonstrations come from (``physics``: the file's choice unless given)."""
    from hybridvla_ros.params import from_params, load_node_params
    from hybridvla_ros.params.sim_robot import SimRobotParams

    path = Path(config_dir) / f"{name}.yaml"
    values = load_node_params(path, "sim_robot")
    if physics is not None:
        values["physics"] = physics
    return from_params(SimRobotParams, values, "sim_robot")


def demos_cache_path(demos_dir: str | os.PathLike[str], name: str, episodes: int, steps_per_episode: int,
                     image_size: int, seed: int, physics: str = "kinematic", state_joints: Sequence[str] = ()) -> Path:
    """Where a recording with these settings is cached."""
    state = "".join(f"_{j}" for j in state_joints)
    return Path(demos_dir) / f"{name}_{physics}{state}_ep{episodes}_steps{steps_per_episode}_img{image_size}_seed{seed}.npz"


def get_demos(params: Any, episodes: int, steps_per_episode: int, image_size: int, seed: int,
              demos_dir: str | os.PathLike[str] | None, progress: bool) -> dict[str, Any]:
    """Record demonstrations for ``params``, or load them from the cache in ``demos_dir``."""
    from hybridvla_ros.core.demos import load_demonstrations, record_demonstrations, save_demonstrations

    path = None
    if demos_dir is not None:
        path = demos_cache_path(demos_dir, params.embodiment, episodes, steps_per_episode, image_size, seed,
                                getattr(params, "physics", "kinematic"), getattr(params, "state_joints", ()))
        if path.is_file():
            return load_demonstrations(path)
    demos = record_demonstrations(params, episodes, steps_per_episode, image_size=image_size, seed=seed,
                                  progress=progress)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_demonstrations(demos, path)
    return demos


def build_parser() -> argparse.ArgumentParser:
    from hybridvla_ros.params.embodiment import EMBODIMENTS

    p = argparse.ArgumentParser(prog="hybridvla train",
                                description="Record (or load) demonstrations and train one hybrid policy "
                                            "for the listed embodiments.")
    p.add_argument("--embodiments", nargs="+", default=list(EMBODIMENTS), choices=EMBODIMENTS, metavar="NAME",
                   help=f"embodiments to train heads for (default: all of {', '.join(EMBODIMENTS)})")
    p.add_argument("--config-dir", default="config", help="directory with <embodiment>.yaml (default: config)")
    # 60 x 60 (+ a 4 px DrQ shift) rather than 30 x 120: the experts settle within about 1 s (50 steps), so
    # long episodes are mostly still frames; twice the targets at the same example count closed the gap
    # between held-out and training error (franka token head 142 % vs 45 % of hold-still before, 36 % vs 38 %
    # after) and on episodes no checkpoint saw cut franka's error from 67 % to 36 % of hold-still
    p.add_argument("--episodes", type=int, default=60, help="demonstration episodes per embodiment (default: 60)")
    p.add_argument("--steps-per-episode", type=int, default=None,
                   help="control steps per episode (default: 60 on a kinematic simulator, 200 on MuJoCo)")
    p.add_argument("--physics", default="config", choices=("config", "kinematic"),
                   help="simulator the demonstrations come from: the parameter file's sim_robot.physics "
                        "(default) or the kinematic one for every robot (fast)")
    p.add_argument("--train-steps", type=int, default=1500, help="optimizer steps in all (default: 1500)")
    p.add_argument("--batch-size", type=int, default=64, help="examples per step (default: 64)")
    p.add_argument("--lr", type=float, default=3e-4, help="peak AdamW learning rate (default: 3e-4)")
    p.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay (default: 1e-4)")
    p.add_argument("--dropout", type=float, default=PolicyConfig.dropout,
                   help=f"transformer dropout (default: {PolicyConfig.dropout})")
    p.add_argument("--augment-shift-px", type=int, default=4,
                   help="DrQ random image shift in training, pixels; 0: none (default: 4)")
    p.add_argument("--seed", type=int, default=0, help="seed of recording, initialisation and batches (default: 0)")
    p.add_argument("--out", default="checkpoints/default", help="checkpoint directory (default: checkpoints/default)")
    p.add_argument("--demos", default=None, metavar="DIR",
                   help="cache recorded demonstrations as .npz here and reuse them (default: record every time)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    p.add_argument("--image-size", type=int, default=PolicyConfig.image_size,
                   help=f"policy image size in pixels (default: {PolicyConfig.image_size})")
    p.add_argument("--heads", default="coarse_to_fine", choices=("coarse_to_fine", "config"),
                   help="coarse_to_fine: token head + flow refiner for every embodiment, serving any head_type "
                        "(default); config: only the head_type of each parameter file")
    p.add_argument("--instruction-encoder", default=MINILM, metavar="NAME",
                   help=f"{MINILM!r} (default, pretrained, frozen), {HASH_ENCODER!r} (hashed char 3-grams, "
                        f"{INSTRUCTION_DIM}-d) or 'dir:<sentence-transformers model dir>'")
    p.add_argument("--dagger-rounds", type=int, default=0,
                   help="DAgger rounds after training: run the policy in closed loop on the simulator, label the "
                        "states it visits with the scripted expert, train on (default: 0, none)")
    p.add_argument("--dagger-episodes", type=int, default=20,
                   help="closed-loop episodes per embodiment and DAgger round (default: 20)")
    p.add_argument("--dagger-train-steps", type=int, default=500,
                   help="optimizer steps after each DAgger round, all embodiments together (default: 500)")
    p.add_argument("--dagger-keep", default="best", choices=DAGGER_KEEP,
                   help="the checkpoint DAgger writes: the round's policy with the best closed-loop success in its "
                        "own collection (default; then the lower median final error, then the later round) or "
                        "the last round's")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


# seconds per closed-loop DAgger episode: the kinematic experts settle within ~1.2 s, the MuJoCo tasks take ~3.5 s
DAGGER_EPISODE_S = {"kinematic": 6.0, "mujoco": 8.0}
DAGGER_KEEP = ("best", "last")


def dagger(result: TrainResult, demos: list[dict[str, Any]], specs: Sequence[EmbodimentSpec], params: Sequence[Any],
           config_dir: str | os.PathLike[str], rounds: int, episodes: int, train_steps: int, *, out_dir: str | None,
           batch_size: int, lr: float, weight_decay: float, augment_shift_px: int, seed: int, threads: int,
           progress: bool, extra_log: Mapping[str, Any], keep: str = "best") -> TrainResult:
    """``rounds`` DAgger rounds on ``result.policy`` (model/dagger.py): each runs ``episodes``
    closed-loop episodes per embodiment through the deployed control path, adds the visited
    states with the expert's labels to that embodiment's data and trains ``train_steps``
    more steps; a last collection measures the final policy. Returns, with the checkpoint
    written to ``out_dir``, the policy of the round ``keep`` names: ``"last"``, or ``"best"``
    (Ross et al. keep the best policy on validation: here the highest closed-loop success
    over the embodiments in the round's own collection, then the lowest median final error;
    the later round on a tie). ``log["dagger"]`` has per round and embodiment the closed-loop
    success rate and median final task error of the policy that collected, and
    ``log["dagger_kept_round"]`` the round returned."""
    if keep not in DAGGER_KEEP:
        raise ValueError(f"keep: one of {DAGGER_KEEP}, got {keep!r}")
    from hybridvla_ros.core.rollout import control_path
    from hybridvla_ros.model.dagger import merge_demonstrations, record_policy_states
    from hybridvla_ros.model.runner import PolicyRunner

    curve: list[dict[str, Any]] = []
    scored: list[tuple[float, float, int, TrainResult]] = []  # (success, -median error, round, result)
    paths = {p.embodiment: control_path(str(Path(config_dir) / f"{p.embodiment}.yaml")) for p in params}
    for rnd in range(rounds + 1):
        point: dict[str, Any] = {"round": rnd}
        for i, p in enumerate(params):
            runner = PolicyRunner(result.policy, result.config, p.embodiment, seed=seed + rnd)
            predict = runner.predictor(p.instruction)
            states = record_policy_states(predict, p, *paths[p.embodiment], episodes,
                                          DAGGER_EPISODE_S[p.physics], result.config.image_size,
                                          seed=seed + rnd, record_every=2)
            point[p.embodiment] = {"success_rate": states.success_rate,
                                   "final_error_m_median": float(np.median([r.final_error_m for r in states.results])),
                                   "states": len(states.demos[DEMO_PROPRIO])}
            if progress:
                print(f"dagger round {rnd}: {p.embodiment} closed-loop success {states.success_rate:.2f}, median "
                      f"final error {point[p.embodiment]['final_error_m_median']:.3f} m", file=sys.stderr, flush=True)
            if rnd < rounds:
                demos[i] = merge_demonstrations(states.demos, demos[i])  # the demonstrations' held-out episodes stay last
        curve.append(point)
        per_robot = [point[p.embodiment] for p in params]
        scored.append((float(np.mean([r["success_rate"] for r in per_robot])),
                       -float(np.mean([r["final_error_m_median"] for r in per_robot])), rnd, result))
        if rnd == rounds:
            break
        steps = result.log["steps"]
        train_time = result.log["train_time_s"]
        result = train(demos, specs, out_dir=None, train_steps=train_steps, batch_size=batch_size, lr=lr,
                       weight_decay=weight_decay, warmup_steps=20, seed=seed + 1 + rnd,
                       augment_shift_px=augment_shift_px, threads=threads, progress=progress,
                       extra_log=extra_log, init_policy=result.policy)
        result.log["steps"] = {k: steps[k] + result.log["steps"][k] for k in steps}  # one loss curve for all
        result.log["train_time_s"] += train_time
    if keep == "best":
        kept_round, result = max(scored, key=lambda item: item[:3])[2:]
    else:
        kept_round = rounds
    result.log["dagger"] = curve
    result.log["dagger_kept_round"] = kept_round
    return write_outputs(result, demos, specs, out_dir, seed) if out_dir is not None else result


def main(argv: list[str] | None = None) -> int:
    """``hybridvla train``: returns the exit status."""
    args = build_parser().parse_args(argv)
    for name in ("episodes", "steps_per_episode", "train_steps", "batch_size", "threads", "dagger_episodes",
                 "dagger_train_steps"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            print(f"hybridvla train: error: --{name.replace('_', '-')} must be >= 1, got {getattr(args, name)!r}",
                  file=sys.stderr)
            return 2
    if args.dagger_rounds < 0:
        print(f"hybridvla train: error: --dagger-rounds must be >= 0, got {args.dagger_rounds!r}", file=sys.stderr)
        return 2
    progress = not args.quiet
    torch.set_num_threads(args.threads)
    names = list(dict.fromkeys(args.embodiments))
    try:
        t0 = time.perf_counter()
        physics = None if args.physics == "config" else args.physics
        params = [load_embodiment(args.config_dir, n, physics) for n in names]
        demos = []
        steps_used = {}
        for p in params:
            steps = args.steps_per_episode or DEFAULT_STEPS_PER_EPISODE[p.physics]
            steps_used[p.embodiment] = steps
            if progress:
                print(f"demonstrations: {p.embodiment} on the {p.physics} simulator ({args.episodes} episodes x "
                      f"{steps} steps)", file=sys.stderr)
            demos.append(get_demos(p, args.episodes, steps, args.image_size, args.seed, args.demos, progress))
        record_time = time.perf_counter() - t0
        config = PolicyConfig(image_size=args.image_size, instruction_encoder=args.instruction_encoder,
                              instruction_dim=encoder_dim(args.instruction_encoder), dropout=args.dropout)
        specs = [EmbodimentSpec.from_params(p) for p in params]
        if args.heads == "coarse_to_fine":
            specs = [dataclasses.replace(s, head_type="coarse_to_fine") for s in specs]
        extra_log = {"data": {"episodes": args.episodes, "steps_per_episode": steps_used,
                              "physics": {p.embodiment: p.physics for p in params},
                              "config_dir": str(args.config_dir), "record_time_s": record_time}}
        result = train(demos, specs, out_dir=None if args.dagger_rounds else args.out,
                       policy_config=config, train_steps=args.train_steps, batch_size=args.batch_size,
                       lr=args.lr, weight_decay=args.weight_decay, augment_shift_px=args.augment_shift_px,
                       seed=args.seed, threads=args.threads, progress=progress, extra_log=extra_log)
        if args.dagger_rounds:
            result = dagger(result, demos, specs, params, args.config_dir, args.dagger_rounds, args.dagger_episodes,
                            args.dagger_train_steps, out_dir=args.out, batch_size=args.batch_size, lr=args.lr,
                            weight_decay=args.weight_decay, augment_shift_px=args.augment_shift_px, seed=args.seed,
                            threads=args.threads, progress=progress, extra_log=extra_log, keep=args.dagger_keep)
    except (ValueError, OSError) as exc:  # ParameterError and CheckpointError are ValueErrors
        print(f"hybridvla train: error: {exc}", file=sys.stderr)
        return 1
    log = result.log
    for point in log.get("dagger", []):
        print(f"  dagger round {point['round']}: closed-loop success " + ", ".join(
            f"{n} {v['success_rate']:.2f} (median final error {1e3 * v['final_error_m_median']:.0f} mm)"
            for n, v in point.items() if n != "round")
            + ("  <- kept" if point["round"] == log["dagger_kept_round"] else ""))
    print(f"trained {log['parameters']:,} parameters in {log['train_time_s']:.1f} s "
          f"(demonstrations {record_time:.1f} s); checkpoint: {args.out}")
    for name, per_mode in log["modes"].items():
        for mode, both in per_mode.items():
            m, tr = both["heldout"], both["train_subset"]
            if m:
                print(f"  {name:8s} {mode:14s} held-out action error {m['action_mae']:.4f} vs hold-still "
                      f"{m['baseline_mae']:.4f} ({100 * m['ratio_to_baseline']:.0f} %; train "
                      f"{100 * tr['ratio_to_baseline']:.0f} %), confidence {m['mean_confidence']:.2f}, "
                      f"AUROC(low confidence -> high error) {m['confidence_auroc']:.2f}")
            else:
                print(f"  {name:8s} no held-out episodes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
