"""Train one HybridPolicy on several embodiments' demonstrations (the library behind ``hybridvla train``).

One shared backbone, one head per embodiment: each step draws a batch from ONE embodiment,
going round-robin through them. The last episodes of every embodiment are held out; at the
end the policy's absolute action error on them is compared with the "hold still" baseline
(predict the current joint positions for the whole chunk), for every inference mode the
heads serve (a coarse_to_fine head: token, flow and coarse_to_fine).

:func:`train` takes the demonstrations (:mod:`hybridvla_ros.model.demo_data`), one
:class:`~hybridvla_ros.model.policy.EmbodimentSpec` per embodiment and a :class:`TrainConfig`
(optimizer, schedule, augmentation, evaluation). Before fitting it refuses demonstrations
whose scripted expert mostly failed (below ``TrainConfig.min_expert_success``; the log's
``expert`` has each embodiment's rate). With an output directory it writes the
checkpoint (model.safetensors + config.json), ``loss.png`` (:mod:`hybridvla_ros.model.plots`),
``train_log.json`` (per-step loss and embodiment, held-out errors, timings) and, per
embodiment, ``replay_<embodiment>.npz``: a random sample of its demonstrations that online
adaptation replays so old skills stay (:mod:`hybridvla_ros.model.replay`).

The command line (recording demonstrations, DAgger rounds, printing the result) is
:mod:`hybridvla_ros.cli_model`; DAgger is :mod:`hybridvla_ros.model.dagger`.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from hybridvla_ros.core.dataset_keys import DEMO_ACTIONS, DEMO_EPISODE, DEMO_PROPRIO
from hybridvla_ros.model.checkpoint import json_default, save_checkpoint
from hybridvla_ros.model.demo_data import EmbodimentData, check_demos, demo_state, expert_summary, split_episodes
from hybridvla_ros.model.plots import plot_losses
from hybridvla_ros.model.policy import (
    ACTIONS,
    CONFIDENCE,
    IMAGE,
    EmbodimentSpec,
    HybridPolicy,
    PolicyConfig,
    count_parameters,
)
from hybridvla_ros.model.replay import REPLAY_EXAMPLES, replay_path, save_replay_sample

LOSS_PLOT = "loss.png"
TRAIN_LOG = "train_log.json"
EVAL_BATCH = 256          # examples per predict() call during evaluation
TRAIN_EVAL_EXAMPLES = 512  # training examples re-scored at the end (to see over-fitting)


@dataclass(frozen=True)
class TrainConfig:
    """How :func:`train` trains (the architecture is the PolicyConfig's)."""

    # optimizer and schedule
    train_steps: int = 1500         # optimizer steps in all (round-robin over the embodiments)
    batch_size: int = 64            # examples per step, all of one embodiment
    lr: float = 3e-4                # peak AdamW learning rate
    weight_decay: float = 1e-4      # AdamW weight decay (matrices only; embeddings and biases: none)
    warmup_steps: int = 100         # linear warm-up (at most a tenth of train_steps), then cosine to 10 %
    grad_clip: float = 1.0          # gradient norm clip
    # data
    seed: int = 0                   # initialisation and batches
    holdout_fraction: float = 0.1   # last episodes of each embodiment held out for evaluation
    augment_shift_px: int = 0       # DrQ random image shift, pixels (0: none)
    min_expert_success: float = 0.5  # refuse an embodiment whose expert reached the target in fewer episodes (0: never)
    # evaluation and machine
    eval_num_samples: int = 5       # flow samples per prediction when evaluating
    threads: int | None = None      # torch threads (None: leave torch's setting)

    def __post_init__(self) -> None:
        for name in ("train_steps", "batch_size"):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"{name}: must be >= 1, got {value!r}")
        rate = self.min_expert_success
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
            raise ValueError(f"min_expert_success: must be a number in [0, 1], got {rate!r}")


@dataclass
class TrainResult:
    """What ``train`` made."""

    policy: HybridPolicy
    config: PolicyConfig
    log: dict[str, Any]
    out_dir: Path | None


# ---------------------------------------------------------------- augmentation
def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by up to ``max_shift`` pixels (edge pixels repeated), as in DrQ; (B, K, 3, H, W)
    views of K cameras are shifted each on its own."""
    if max_shift <= 0:
        return images
    if images.dim() == 5:
        return random_shift(images.flatten(0, 1), max_shift, generator).reshape(images.shape)
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


# ---------------------------------------------------------------- the experts' own success
def check_experts(demos: Sequence[Mapping[str, Any]], specs: Sequence[EmbodimentSpec],
                  min_success: float) -> dict[str, dict[str, Any] | None]:
    """Per embodiment, how its scripted expert did in its demonstrations (``expert_summary``;
    None when they do not say, e.g. DAgger states or a file recorded before it was kept).
    Raises ValueError naming the first embodiment whose expert reached the target in a
    fraction of its episodes below ``min_success``: a policy learns to fail from those."""
    out: dict[str, dict[str, Any] | None] = {}
    for d, spec in zip(demos, specs):
        summary = expert_summary(d)
        out[spec.name] = summary
        if summary is not None and summary["success_rate"] < min_success:
            tol = summary["tolerance_m"]
            raise ValueError(
                f"demonstrations for {spec.name!r}: the scripted expert reached its target in only "
                f"{summary['successes']}/{summary['episodes']} episodes (success rate {summary['success_rate']:.2f} "
                f"< min_expert_success {min_success:.2f}; median final error {summary['final_error_m_median']:.3f} m"
                + (f", tolerance {tol:.3f} m" if tol is not None else "") + "): a policy would learn to fail from "
                "them. Record longer episodes (--steps-per-episode) or fix the expert.")
    return out


def expert_lines(log: Mapping[str, Any]) -> list[str]:
    """One line per embodiment of the log's ``expert`` entry, for a training summary."""
    lines = []
    for name, summary in (log.get("expert") or {}).items():
        if summary is None:
            lines.append(f"  {name:8s} expert success: not recorded with the demonstrations")
        else:
            lines.append(f"  {name:8s} expert success {summary['successes']}/{summary['episodes']} "
                         f"({100 * summary['success_rate']:.0f} %), median final error "
                         f"{1e3 * summary['final_error_m_median']:.1f} mm")
    return lines


# ---------------------------------------------------------------- training
def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10 %."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def train(demos: Sequence[Mapping[str, Any]], specs: Sequence[EmbodimentSpec], config: TrainConfig | None = None,
          *, policy_config: PolicyConfig | None = None, init_policy: HybridPolicy | None = None,
          out_dir: str | os.PathLike[str] | None = None, progress: bool = False,
          extra_log: Mapping[str, Any] | None = None) -> TrainResult:
    """Train one policy on ``demos[i]`` (the demonstrations of ``specs[i]``) as ``config`` says
    (None: TrainConfig's defaults).

    ``policy_config`` sets the architecture (its ``embodiments`` are replaced by ``specs``).
    ``init_policy`` continues training that policy instead (its architecture and its
    normalization statistics are kept; ``policy_config`` must be None; every spec must be
    one of its embodiments). With ``out_dir`` the checkpoint, loss.png, train_log.json and the
    replay samples are written there. ``extra_log`` entries join the log. Raises ValueError
    for demonstrations that do not fit their spec, inconsistent arguments, or demonstrations
    whose expert succeeded in fewer than ``config.min_expert_success`` of its episodes
    (:func:`check_experts`; before anything is fitted).
    """
    cfg = config if config is not None else TrainConfig()
    if len(demos) != len(specs) or not specs:
        raise ValueError(f"demos/specs: need one demonstration dict per spec, got {len(demos)} and {len(specs)}")
    for d, spec in zip(demos, specs):
        check_demos(d, spec)
    experts = check_experts(demos, specs, cfg.min_expert_success)
    if progress:
        print("\n".join(["demonstrations:", *expert_lines({"expert": experts})]), file=sys.stderr, flush=True)
    train_steps, batch_size, seed, holdout_fraction = cfg.train_steps, cfg.batch_size, cfg.seed, cfg.holdout_fraction
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(seed)
    if init_policy is not None:
        if policy_config is not None:
            raise ValueError("init_policy and policy_config: give one of them (the policy has its config)")
        policy_cfg, policy = init_policy.config, init_policy
        for spec in specs:
            if policy_cfg.embodiment(spec.name) != spec:
                raise ValueError(f"init_policy: its {spec.name!r} head is {policy_cfg.embodiment(spec.name)}, "
                                 f"not {spec}")
    else:
        policy_cfg = dataclasses.replace(policy_config or PolicyConfig(), embodiments=tuple(specs))
        policy = HybridPolicy(policy_cfg)

    train_data: dict[str, EmbodimentData] = {}
    held_data: dict[str, EmbodimentData] = {}
    for d, spec in zip(demos, specs):
        train_idx, held_idx = split_episodes(np.asarray(d[DEMO_EPISODE]), holdout_fraction)
        if init_policy is None:
            policy.fit_normalization(spec.name, np.asarray(d[DEMO_PROPRIO])[train_idx],
                                     np.asarray(d[DEMO_ACTIONS])[train_idx], state=demo_state(d)[train_idx])
        train_data[spec.name] = EmbodimentData(d, spec, train_idx, policy_cfg.image_size, policy_cfg.instruction_dim,
                                               policy_cfg.instruction_encoder)
        held_data[spec.name] = EmbodimentData(d, spec, held_idx, policy_cfg.image_size, policy_cfg.instruction_dim,
                                              policy_cfg.instruction_encoder)

    decay = [p for n, p in policy.named_parameters() if p.ndim >= 2 and "embed" not in n and "tokens" not in n]
    no_decay = [p for n, p in policy.named_parameters() if not (p.ndim >= 2 and "embed" not in n
                                                                and "tokens" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    warmup = min(cfg.warmup_steps, max(1, train_steps // 10))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, train_steps, warmup))
    generator = torch.Generator().manual_seed(seed)
    names = [s.name for s in specs]
    step_embodiment: list[str] = []
    step_loss: list[float] = []

    policy.train()
    t0 = time.perf_counter()
    bar = tqdm(range(train_steps), desc="train", disable=not progress, dynamic_ncols=True)
    smoothed: dict[str, float] = {}
    for step in bar:
        name = names[step % len(names)]
        data = train_data[name]
        idx = torch.randint(0, len(data), (batch_size,), generator=generator)
        batch = data.batch(idx)
        batch[IMAGE] = random_shift(batch[IMAGE], cfg.augment_shift_px, generator)
        loss, parts = policy(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.grad_clip)
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
    modes = {n: {m: {"heldout": evaluate(policy, held_data[n], cfg.eval_num_samples, seed, mode=m),
                     "train_subset": evaluate(policy, train_data[n], cfg.eval_num_samples, seed, TRAIN_EVAL_EXAMPLES,
                                              mode=m)}
                 for m in policy.modes(n)} for n in names}
    # the head's own mode, as before modes existed
    heldout = {n: modes[n][policy_cfg.embodiment(n).head_type]["heldout"] for n in names}
    train_eval = {n: modes[n][policy_cfg.embodiment(n).head_type]["train_subset"] for n in names}
    eval_time = time.perf_counter() - t0
    policy.eval()

    settings = {"train_steps": train_steps, "batch_size": batch_size, "lr": cfg.lr, "weight_decay": cfg.weight_decay,
                "warmup_steps": warmup, "grad_clip": cfg.grad_clip, "seed": seed, "holdout_fraction": holdout_fraction,
                "augment_shift_px": cfg.augment_shift_px, "eval_num_samples": cfg.eval_num_samples,
                "min_expert_success": cfg.min_expert_success, "threads": torch.get_num_threads()}
    examples = {n: {"train": len(train_data[n]), "heldout": len(held_data[n])} for n in names}
    log: dict[str, Any] = {
        "settings": settings, **dict(extra_log or {}), "expert": experts, "examples": examples,
        "parameters": count_parameters(policy), "train_time_s": train_time, "eval_time_s": eval_time,
        "heldout": heldout, "train_subset": train_eval, "modes": modes,
        "steps": {"embodiment": step_embodiment, "loss": step_loss},
    }
    result = TrainResult(policy=policy, config=policy_cfg, log=log, out_dir=None)
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
    ``out_dir``; return ``result`` with ``out_dir`` set. Raises OSError when writing fails."""
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
