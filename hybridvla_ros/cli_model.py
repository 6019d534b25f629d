"""The model commands of ``hybridvla``: ``train`` and ``adapt`` (argument parsing and printing only).

    hybridvla train --embodiments franka aloha hello leap   # demonstrations -> one checkpoint
    hybridvla adapt config/franka.yaml --store runs/corrections/franka.sqlite

``hybridvla train`` records demonstrations from every robot's scripted expert on the
simulator its parameter file names (or loads them from ``--demos``, or reads one robot's
from a LeRobotDataset v3 with ``--dataset``: :mod:`hybridvla_ros.model.lerobot_data`), trains one policy
(:func:`hybridvla_ros.model.train.train`) and optionally runs DAgger rounds
(:func:`hybridvla_ros.model.dagger.dagger`). Defaults: instructions embedded by the frozen
pretrained all-MiniLM-L6-v2 (model/text.py), and coarse_to_fine heads for every
embodiment (``--heads config`` trains only the parameter file's ``head_type``), so one
checkpoint serves whichever mode ``head_type`` asks for. It writes into ``--out`` the
checkpoint, ``loss.png``, ``train_log.json`` and the replay samples.

``hybridvla adapt`` runs one adaptation (:func:`hybridvla_ros.model.adaptation.adapt`) on a
correction store, as ``adaptation_node`` does, and prints its log line; exit status 0
accepted, 3 rejected, 1 error.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import torch

from hybridvla_ros.core.dataset_keys import DEMO_EPISODE, DEMO_INSTRUCTION, DEMO_PROPRIO
from hybridvla_ros.model.adaptation import adapt
from hybridvla_ros.model.checkpoint import json_default
from hybridvla_ros.model.corrections_data import load_corrections_for
from hybridvla_ros.model.dagger import DAGGER_KEEP, DaggerConfig, dagger
from hybridvla_ros.model.demo_data import default_steps_per_episode, get_demos, load_embodiment
from hybridvla_ros.model.lerobot_data import load_lerobot_demos
from hybridvla_ros.model.policy import EmbodimentSpec, PolicyConfig
from hybridvla_ros.model.replay import checkpoint_replay_or_record
from hybridvla_ros.model.text import HASH_ENCODER, INSTRUCTION_DIM, MINILM, encoder_dim
from hybridvla_ros.model.train import TrainConfig, TrainResult, expert_lines, train
from hybridvla_ros.params import ParameterError, from_params, load_node_params
from hybridvla_ros.params.adaptation import AdaptationParams
from hybridvla_ros.params.config_files import default_config_dir
from hybridvla_ros.params.embodiment import EMBODIMENTS
from hybridvla_ros.sim.demos import CHUNK_LABELS


# ---------------------------------------------------------------- hybridvla train
def build_train_parser() -> argparse.ArgumentParser:
    """The argument parser of ``hybridvla train`` (its defaults are the training recipe)."""
    p = argparse.ArgumentParser(prog="hybridvla train",
                                description="Record (or load) demonstrations and train one hybrid policy "
                                            "for the listed embodiments.")
    p.add_argument("--embodiments", nargs="+", default=list(EMBODIMENTS), choices=EMBODIMENTS, metavar="NAME",
                   help=f"embodiments to train heads for (default: all of {', '.join(EMBODIMENTS)})")
    p.add_argument("--config-dir", default=default_config_dir(),
                   help="directory with <embodiment>.yaml (default: the package's config/)")
    # 60 x 60 (+ a 4 px DrQ shift) rather than 30 x 120: the experts settle within about 1 s (50 steps), so
    # long episodes are mostly still frames; twice the targets at the same example count closed the gap
    # between held-out and training error (franka token head 142 % vs 45 % of hold-still before, 36 % vs 38 %
    # after) and on episodes no checkpoint saw cut franka's error from 67 % to 36 % of hold-still
    p.add_argument("--episodes", type=int, default=60, help="demonstration episodes per embodiment (default: 60)")
    p.add_argument("--steps-per-episode", type=int, default=None,
                   help="control steps per episode (default: 60 on a kinematic simulator, 200 on MuJoCo; the "
                        "Stretch base's kinematic scene: 200)")
    p.add_argument("--physics", default="config", choices=("config", "kinematic"),
                   help="simulator the demonstrations come from: the parameter file's sim_robot.physics "
                        "(default) or the kinematic one for every robot (fast)")
    # 4500: study 5 (README) measured 1500 steps under-fit, the grip barely following the cube
    p.add_argument("--train-steps", type=int, default=4500,
                   help="optimizer steps in all, round-robin over the embodiments (default: 4500)")
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
    p.add_argument("--dataset", default=None, metavar="DIR",
                   help="train on this LeRobotDataset v3 (a user's own recordings, read by LeRobot's code in "
                        ".venv-lerobot) instead of the simulator's expert; one embodiment (--embodiments NAME), "
                        "joints mapped by the feature names of its parameter file; no DAgger")
    p.add_argument("--camera", default=None,
                   help="with --dataset: the camera to train on, observation.images.<camera> (default: the "
                        "dataset's only one)")
    p.add_argument("--cameras", nargs="+", default=None, metavar="NAME",
                   help="train a policy that reads these cameras of the robot together (two or more of the parameter "
                        "file's camera_name and extra_cameras, e.g. exterior wrist; every listed embodiment must "
                        "have them; with --dataset, observation.images.<name> each); default: one camera, the one "
                        "the parameter file names")
    p.add_argument("--task", default=None,
                   help="with --dataset: train on the episodes of this task (default: the dataset's only task)")
    p.add_argument("--successful-only", action="store_true",
                   help="with --dataset: only the episodes marked successful (next.success, as hybridvla record "
                        "writes it)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    p.add_argument("--workers", type=int, default=None,
                   help="processes the DAgger rounds' closed-loop episodes run on, one torch thread each; the "
                        "data do not depend on it (default: --threads)")
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
    p.add_argument("--min-expert-success", type=float, default=TrainConfig.min_expert_success,
                   help="refuse to train on an embodiment whose scripted expert reached its target in a smaller "
                        f"fraction of the demonstration episodes; 0: never (default: {TrainConfig.min_expert_success})")
    p.add_argument("--chunk-labels", default="full", choices=CHUNK_LABELS,
                   help="the expert's chunk labels: full, its next chunk_size targets (default); until_event, cut "
                        "at the next change of the state joints (the suction cup gripping or letting go) and "
                        "holding the last target before it")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _print_training(result: TrainResult, out: str, record_time_s: float) -> None:
    """The DAgger curve and each embodiment's held-out errors per inference mode, on stdout."""
    log = result.log
    for point in log.get("dagger", []):
        print(f"  dagger round {point['round']}: closed-loop success " + ", ".join(
            f"{n} {v['success_rate']:.2f} (median final error {1e3 * v['final_error_m_median']:.0f} mm)"
            for n, v in point.items() if n != "round")
            + ("  <- kept" if point["round"] == log["dagger_kept_round"] else ""))
    for line in expert_lines(log):
        print(line)
    print(f"trained {log['parameters']:,} parameters in {log['train_time_s']:.1f} s "
          f"(demonstrations {record_time_s:.1f} s); checkpoint: {out}")
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


def train_main(argv: list[str] | None = None) -> int:
    """``hybridvla train``: returns the exit status (2 bad arguments, 1 failed, 0 done)."""
    args = build_train_parser().parse_args(argv)
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
    if args.dataset is None and (args.camera is not None or args.task is not None or args.successful_only):
        print("hybridvla train: error: --camera, --task and --successful-only apply to --dataset only",
              file=sys.stderr)
        return 2
    if args.dataset is not None and (len(names) != 1 or args.dagger_rounds):
        print("hybridvla train: error: --dataset trains one robot without DAgger (no scripted expert to label its "
              f"states): name it with --embodiments NAME (got {names}) and leave --dagger-rounds 0",
              file=sys.stderr)
        return 2
    cameras = tuple(dict.fromkeys(args.cameras or ()))
    if args.cameras is not None and (len(cameras) < 2 or args.camera is not None):
        print("hybridvla train: error: --cameras names two or more different cameras to read together (not with "
              f"--camera); got {args.cameras}", file=sys.stderr)
        return 2
    try:
        t0 = time.perf_counter()
        physics = None if args.physics == "config" else args.physics
        params = [load_embodiment(args.config_dir, n, physics) for n in names]
        for p in params:
            unknown = [c for c in cameras if c not in p.cameras]
            if unknown:
                raise ValueError(f"--cameras: {unknown} are not cameras of {p.embodiment} "
                                 f"({list(p.cameras)}: camera_name, extra_cameras)")
        demos = []
        steps_used = {}
        if args.dataset is not None:
            if progress:
                print(f"demonstrations: {params[0].embodiment} from the LeRobotDataset {args.dataset}",
                      file=sys.stderr)
            loaded, meta = load_lerobot_demos(args.dataset, params[0], args.image_size, args.camera, args.task,
                                              successful_only=args.successful_only, cameras=cameras)
            demos.append(loaded)
            dataset_log = {"dataset": str(args.dataset), "camera": meta["camera"], "fps": meta["fps"],
                           "robot_type": meta["robot_type"], "frames": len(loaded[DEMO_PROPRIO]),
                           "episodes": int(len(set(loaded[DEMO_EPISODE].tolist()))),
                           "task": loaded[DEMO_INSTRUCTION], "successful_only": bool(args.successful_only)}
            if progress:
                print(f"  {dataset_log['frames']} frames in {dataset_log['episodes']} "
                      f"{'successful ' if args.successful_only else ''}episodes, "
                      f"{'cameras ' + ', '.join(cameras) if cameras else 'camera ' + str(meta['camera'])}, "
                      f"task {loaded[DEMO_INSTRUCTION]!r}", file=sys.stderr)
        for p in params if args.dataset is None else ():
            steps = args.steps_per_episode or default_steps_per_episode(p)
            steps_used[p.embodiment] = steps
            if progress:
                print(f"demonstrations: {p.embodiment} on the {p.physics} simulator ({args.episodes} episodes x "
                      f"{steps} steps)", file=sys.stderr)
            demos.append(get_demos(p, args.episodes, steps, args.image_size, args.seed, args.demos, progress,
                                   chunk_labels=args.chunk_labels, cameras=cameras))
        record_time = time.perf_counter() - t0
        config = PolicyConfig(image_size=args.image_size, instruction_encoder=args.instruction_encoder,
                              instruction_dim=encoder_dim(args.instruction_encoder), dropout=args.dropout)
        specs = [dataclasses.replace(EmbodimentSpec.from_params(p), cameras=cameras) for p in params]
        if args.heads == "coarse_to_fine":
            specs = [dataclasses.replace(s, head_type="coarse_to_fine") for s in specs]
        if args.dataset is None:
            extra_log = {"data": {"episodes": args.episodes, "steps_per_episode": steps_used,
                                  "physics": {p.embodiment: p.physics for p in params},
                                  "chunk_labels": args.chunk_labels, "cameras": list(cameras),
                                  "config_dir": str(args.config_dir), "record_time_s": record_time}}
        else:
            extra_log = {"data": {**dataset_log, "config_dir": str(args.config_dir), "record_time_s": record_time}}
        train_config = TrainConfig(train_steps=args.train_steps, batch_size=args.batch_size, lr=args.lr,
                                   weight_decay=args.weight_decay, augment_shift_px=args.augment_shift_px,
                                   seed=args.seed, threads=args.threads,
                                   min_expert_success=args.min_expert_success)
        result = train(demos, specs, train_config, policy_config=config,
                       out_dir=None if args.dagger_rounds else args.out, progress=progress, extra_log=extra_log)
        if args.dagger_rounds:
            rounds = DaggerConfig(rounds=args.dagger_rounds, episodes=args.dagger_episodes,
                                  train_steps=args.dagger_train_steps, keep=args.dagger_keep,
                                  chunk_labels=args.chunk_labels,
                                  workers=args.workers if args.workers is not None else args.threads)
            result = dagger(result, demos, specs, params, args.config_dir, rounds, train_config, out_dir=args.out,
                            progress=progress, extra_log=extra_log)
    except (ValueError, OSError) as exc:  # ParameterError and CheckpointError are ValueErrors
        print(f"hybridvla train: error: {exc}", file=sys.stderr)
        return 1
    _print_training(result, args.out, record_time)
    return 0


# ---------------------------------------------------------------- hybridvla adapt
def build_adapt_parser() -> argparse.ArgumentParser:
    """The argument parser of ``hybridvla adapt``."""
    p = argparse.ArgumentParser(prog="hybridvla adapt",
                                description="Fine-tune one embodiment's action head on a correction store.")
    p.add_argument("params_file", help="config/<embodiment>.yaml (its adaptation section is used)")
    p.add_argument("--store", required=True, help="the correction store (SQLite)")
    p.add_argument("--checkpoint", help="base checkpoint (default: adaptation.checkpoint_path)")
    p.add_argument("--adapt-root", help="output root (default: adaptation.adapt_root)")
    p.add_argument("--replay-dataset", metavar="DIR", help="replay this LeRobotDataset v3 (e.g. hybridvla record's "
                   "<root>/lerobot) instead of the checkpoint's sample (default: adaptation.replay_dataset)")
    p.add_argument("--replay-camera", help="with --replay-dataset: its camera (default: its only one)")
    return p


def adapt_main(argv: list[str] | None = None) -> int:
    """``hybridvla adapt``: one adaptation from a store; prints its log line. Returns 0 when the
    new head was accepted, 3 when rejected, 1 on an error (bad parameters, checkpoint or store)."""
    args = build_adapt_parser().parse_args(argv)
    try:
        values = load_node_params(args.params_file, "adaptation")
        if args.adapt_root:
            values["adapt_root"] = args.adapt_root
        if args.replay_dataset:
            values["replay_dataset"] = os.path.abspath(args.replay_dataset)
        if args.replay_camera:
            values["replay_camera"] = args.replay_camera
        params = from_params(AdaptationParams, values, "adaptation")
        torch.set_num_threads(params.num_threads)
        base = args.checkpoint or params.checkpoint_path
        corrections, store = load_corrections_for(base, args.store, params)
        # as adaptation_node does: a checkpoint without its replay sample gets one recorded on the simulator
        replay = checkpoint_replay_or_record(base, params)
        result = adapt(params, base, corrections, replay, store=store)
    except (ParameterError, ValueError, OSError) as exc:
        print(f"adaptation: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result.log, indent=1, default=json_default))
    return 0 if result.accepted else 3
