"""The ``hybridvla`` command: run the graph, the demo, training and benchmarks.

    hybridvla run --embodiment franka --sim --duration 30   # like ros2 launch, plus a report (1: policy never drove)
    hybridvla demo                                          # train if needed, run on the sim, report
    hybridvla train --embodiments franka aloha hello leap   # policy from the sims' scripted experts
    hybridvla adapt config/franka.yaml --store runs/corrections/franka.sqlite  # one head adaptation
    hybridvla bench                                         # control-path numbers, JSON in runs/
    hybridvla bench-model                                   # batch-1 inference variants side by side
    hybridvla bench-precision                               # 1 mm reaching: token chunk vs flow-refined
    hybridvla bench-chunking                                # seams under inference delay: none / blend / RTC
    hybridvla bench-timing                                  # command period jitter: event vs timing thread
    hybridvla bench-remote                                  # served (hybridvla serve) vs in-process time per chunk
    hybridvla serve --checkpoint runs/policy --port 8000    # our model to robots (policy_source: remote)
    hybridvla serve-lerobot --policy-dir DIR --port 8000    # a LeRobot policy, from .venv-lerobot
    hybridvla eval --embodiment franka --episodes 10        # closed-loop episodes through the graph
    hybridvla study safety                                  # the README's studies (safety, latency, ...)
    hybridvla check-config config/franka.yaml               # validate a parameter file
    hybridvla export-corrections --store runs/corrections/franka.sqlite --out corrections.mcap
    hybridvla export-corrections --store runs/corrections/franka.sqlite --format lerobot --out runs/corrections/lerobot
    hybridvla export-demos --demos runs/demos/franka_....npz --out runs/demos/franka_lerobot  # for lerobot-train
    hybridvla train --embodiments franka --dataset DIR      # from a LeRobotDataset v3 (a user's recordings)
    hybridvla record --embodiment franka --root DIR         # teleop demonstrations from the topics -> DIR/lerobot
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

from hybridvla_ros.graph_run import READY_TIMEOUT_S, run_graph, verdict
from hybridvla_ros.model.lerobot_data import lerobot_python_or_say
from hybridvla_ros.params import ParameterError
from hybridvla_ros.params.check import check_parameter_file
from hybridvla_ros.params.config_files import default_config_dir, embodiment_names
from hybridvla_ros.params.registry import ALL_SCHEMAS

DEFAULT_CHECKPOINT = "checkpoints/default"
DEFAULT_LEROBOT_REPO_ID = "local/corrections"


def _verdict_code(report: dict | None) -> int:
    """0 when the policy drove, else 1 with one sentence on stderr saying why."""
    if report is None:
        print("error: interrupted before the graph could be heard; no report", file=sys.stderr)
        return 1
    why = verdict(report)
    if why:
        print(f"error: {why}", file=sys.stderr)
        return 1
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    try:
        report = run_graph(args.embodiment, args.sim, args.duration, args.checkpoint, args.params_file, args.json,
                           args.log_dir, ready_timeout_s=args.ready_timeout)
    except ParameterError as exc:
        print(f"error: bad parameter: {exc}", file=sys.stderr)
        return 2
    except RuntimeError:  # NodeDied: run_graph has said which node and why
        return 1
    return _verdict_code(report)


def _cmd_demo(args: argparse.Namespace) -> int:
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    ckpt = args.checkpoint
    if not os.path.isfile(os.path.join(ckpt, "model.safetensors")):
        print(f"no policy at {ckpt}: training one on the simulators' scripted experts (a few minutes)")
        from hybridvla_ros.cli_model import train_main
        code = train_main(["--out", ckpt, "--train-steps", "1500"])  # the demo's quick policy, not the default's
        if code:
            return code
    try:
        report = run_graph(args.embodiment, True, args.duration, ckpt, json_path=args.json, log_dir=args.log_dir,
                           ready_timeout_s=args.ready_timeout)
    except ParameterError as exc:
        print(f"error: bad parameter: {exc}", file=sys.stderr)
        return 2
    except RuntimeError:
        return 1
    return _verdict_code(report)


def _cmd_train(argv: list[str]) -> int:
    from hybridvla_ros.cli_model import train_main
    return train_main(argv)


def _cmd_adapt(argv: list[str]) -> int:
    from hybridvla_ros.cli_model import adapt_main
    return adapt_main(argv)


def _cmd_bench(argv: list[str]) -> int:
    from hybridvla_ros import bench_control_path
    return bench_control_path.main(argv)


def _cmd_check(args: argparse.Namespace) -> int:
    """Report every error of a parameter file, each under its section; 2 if any, else 0."""
    try:
        issues = check_parameter_file(args.params_file, ALL_SCHEMAS)  # the graph's nodes and hybridvla record's
    except ParameterError as exc:
        print(f"{args.params_file}: {exc}", file=sys.stderr)
        return 2
    for issue in issues:
        print(f"{args.params_file}: {issue}", file=sys.stderr)
    if issues:
        print(f"{args.params_file}: {len(issues)} error{'s' if len(issues) > 1 else ''}", file=sys.stderr)
        return 2
    print(f"{args.params_file}: ok")
    return 0


def _cmd_export_demos(args: argparse.Namespace) -> int:
    """``export-demos``: a recorded demonstration set as a LeRobotDataset v3, written by
    hybridvla_ros/lerobot_demos.py in the LeRobot environment; joint names from the embodiment's file."""
    python = lerobot_python_or_say("hybridvla export-demos", "(the dataset is written by LeRobot's own code)")
    if python is None:
        return 2
    from hybridvla_ros.model.demo_data import load_embodiment
    from hybridvla_ros.sim.demos import load_demonstrations
    try:
        demos = load_demonstrations(args.demos)
        params = load_embodiment(args.config_dir, str(demos["embodiment"]))
    except (ValueError, OSError) as exc:
        print(f"hybridvla export-demos: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, FileNotFoundError) else 1
    cmd = [python, "-m", "hybridvla_ros.lerobot_demos", "write", "--demos", args.demos, "--out", args.out,
           "--joint-names", *params.joint_names, "--state-names", *params.state_joints, "--repo-id", args.repo_id,
           "--camera", args.camera]
    return subprocess.call(cmd + (["--cameras", *args.cameras] if args.cameras else [])
                           + (["--video"] if args.video else []))


def _cmd_export_lerobot(args: argparse.Namespace) -> int:
    """``export-corrections --format lerobot``: hybridvla_ros/lerobot_export.py in the LeRobot environment."""
    python = lerobot_python_or_say("hybridvla export-corrections",
                                   "(--format lerobot writes with LeRobot's own dataset code)")
    if python is None:
        return 2
    out = args.out if args.out is not None else "runs/corrections/lerobot"
    cmd = [python, "-m", "hybridvla_ros.lerobot_export", "--store", args.store, "--out", out,
           "--repo-id", args.repo_id]
    if args.fps is not None:
        cmd += ["--fps", str(args.fps)]
    return subprocess.call(cmd)


def _cmd_export(args: argparse.Namespace) -> int:
    if args.format == "lerobot":
        return _cmd_export_lerobot(args)
    if args.fps is not None or args.repo_id != DEFAULT_LEROBOT_REPO_ID:
        print("hybridvla export-corrections: error: --fps and --repo-id apply to --format lerobot only",
              file=sys.stderr)
        return 2
    if args.out is None:
        args.out = "runs/corrections/franka.mcap"
    from hybridvla_ros.core.correction_export import export_mcap
    from hybridvla_ros.core.correction_store import CorrectionStore, CorrectionStoreError
    if not os.path.isfile(args.store):
        print(f"error: no correction store at {args.store!r}", file=sys.stderr)
        return 2
    try:
        with CorrectionStore(args.store, replay_capacity=1) as store:
            n = export_mcap(store, args.out)
    except (CorrectionStoreError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {n} corrections to {args.out} (ROS 2 MCAP, topic /corrections, hybridvla_msgs/msg/Correction)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``hybridvla``."""
    ap = argparse.ArgumentParser(prog="hybridvla", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="start the node graph (like ros2 launch) and report on it")
    run.add_argument("--embodiment", default="franka", choices=embodiment_names())
    run.add_argument("--sim", action=argparse.BooleanOptionalAction, default=True,
                     help="start the simulated robot (default); --no-sim for a real robot")
    run.add_argument("--duration", type=float, default=None,
                     help="seconds to run once the policy drives (default: until Ctrl-C)")
    run.add_argument("--ready-timeout", type=float, default=READY_TIMEOUT_S,
                     help="with --duration: fail if the policy has not driven this many seconds after start")
    run.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT)
    run.add_argument("--params-file", default=None, help="instead of config/<embodiment>.yaml")
    run.add_argument("--json", default=None, help="write the report here")
    run.add_argument("--log-dir", default=None, help="write each node's output to <dir>/<node>.log")
    run.set_defaults(func=_cmd_run)

    demo = sub.add_parser("demo", help="train a policy if there is none, run the graph on the simulated robot")
    demo.add_argument("--embodiment", default="franka", choices=embodiment_names())
    demo.add_argument("--duration", type=float, default=30.0, help="seconds to run once the policy drives")
    demo.add_argument("--ready-timeout", type=float, default=READY_TIMEOUT_S,
                      help="fail if the policy has not driven this many seconds after start")
    demo.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT)
    demo.add_argument("--json", default="runs/demo_report.json")
    demo.add_argument("--log-dir", default="runs/demo_logs")
    demo.set_defaults(func=_cmd_demo)

    sub.add_parser("train", help="train the policy (see hybridvla train --help)", add_help=False)
    sub.add_parser("adapt", help="fine-tune a head on a correction store, as adaptation_node does "
                   "(see hybridvla adapt --help)", add_help=False)
    sub.add_parser("eval", help="N episodes of the task through the whole graph, JSON and plots "
                   "(see hybridvla eval --help)", add_help=False)
    sub.add_parser("study", help="the README's studies: safety, latency, adaptation, transfer "
                   "(see hybridvla study)", add_help=False)
    sub.add_parser("bench", help="control-path benchmark (see hybridvla bench --help)", add_help=False)
    sub.add_parser("serve", help="serve a checkpoint to robots over openpi's websocket protocol (policy_source "
                                 "remote; see hybridvla serve --help)", add_help=False)
    sub.add_parser("serve-lerobot", help="serve a LeRobot policy directory over the same protocol from the LeRobot "
                                         "environment (.venv-lerobot; see hybridvla serve-lerobot --help)",
                   add_help=False)
    sub.add_parser("bench-chunking", help="seams and success under inference delay: none / blending / real-time "
                                          "chunking (see hybridvla bench-chunking --help)", add_help=False)
    sub.add_parser("bench-timing", help="command period jitter per safety-filter timing mode under CPU load "
                                        "(see hybridvla bench-timing --help)", add_help=False)
    sub.add_parser("bench-remote", help="time per chunk served by hybridvla serve (or a LeRobot sidecar) against "
                                        "in-process (see hybridvla bench-remote --help)", add_help=False)
    sub.add_parser("bench-model", help="fp32 / int8 / bf16 / ONNX Runtime inference side by side "
                   "(see hybridvla bench-model --help)", add_help=False)
    sub.add_parser("record", help="record teleoperated demonstrations from the robot's topics into a "
                                  "LeRobotDataset v3 (see hybridvla record --help)", add_help=False)
    sub.add_parser("bench-precision", help="TCP error at 1 mm tolerance: 64-bin token chunks vs flow-refined "
                   "(see hybridvla bench-precision --help)", add_help=False)

    export = sub.add_parser("export-corrections", help="write recorded corrections as a ROS 2 MCAP file or a "
                                                       "LeRobotDataset v3 (--format lerobot)")
    export.add_argument("--store", default="runs/corrections/franka.sqlite")
    export.add_argument("--format", choices=("mcap", "lerobot"), default="mcap",
                        help="mcap: one ROS 2 MCAP file; lerobot: a LeRobotDataset v3 directory, written by "
                             "LeRobot's own code in .venv-lerobot (scripts/setup_lerobot.sh)")
    export.add_argument("--out", default=None, help="mcap: the file (default runs/corrections/franka.mcap); "
                        "lerobot: the dataset directory, which must not exist (default runs/corrections/lerobot)")
    export.add_argument("--repo-id", default=DEFAULT_LEROBOT_REPO_ID,
                        help="lerobot: the dataset's repo_id (nothing is pushed)")
    export.add_argument("--fps", type=int, default=None,
                        help="lerobot: frames per second; each episode is resampled to it (nearest stored "
                             "correction; default: from the stored stamps)")
    export.set_defaults(func=_cmd_export)

    demos = sub.add_parser("export-demos", help="write recorded demonstrations (hybridvla train --demos DIR's "
                                                 ".npz) as a LeRobotDataset v3 for lerobot-train")
    demos.add_argument("--demos", required=True, help="the demonstration set (.npz)")
    demos.add_argument("--out", required=True, help="the dataset directory, which must not exist")
    demos.add_argument("--config-dir", default=default_config_dir(),
                       help="where <embodiment>.yaml names the joints (default: the package's config/)")
    demos.add_argument("--repo-id", default="local/demos", help="the dataset's repo_id (nothing is pushed)")
    demos.add_argument("--camera", default="front", help="the image feature is observation.images.<camera>")
    demos.add_argument("--cameras", nargs="+", default=None,
                       help="a recording from several cameras (hybridvla train --cameras): their names, in that "
                            "order; one observation.images.<name> each")
    demos.add_argument("--video", action="store_true", help="AV1 video instead of lossless PNG in parquet")
    demos.set_defaults(func=_cmd_export_demos)

    check = sub.add_parser("check-config", help="validate a parameter file for every node")
    check.add_argument("params_file")
    check.set_defaults(func=_cmd_check)
    return ap


def _cmd_serve_lerobot(argv: list[str]) -> int:
    """``hybridvla serve-lerobot ARGS``: the LeRobot sidecar (hybridvla_ros/lerobot_sidecar.py) in its own
    environment, .venv-lerobot (Python >= 3.12, LeRobot and the torch it pins; scripts/setup_lerobot.sh)."""
    python = lerobot_python_or_say("hybridvla serve-lerobot")
    if python is None:
        return 2
    return subprocess.call([python, "-m", "hybridvla_ros.lerobot_sidecar", *argv])


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``hybridvla``; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "train":
        return _cmd_train(argv[1:])
    if argv and argv[0] == "adapt":
        return _cmd_adapt(argv[1:])
    if argv and argv[0] == "bench":
        return _cmd_bench(argv[1:])
    if argv and argv[0] == "study":
        from hybridvla_ros import studies
        return studies.main(argv[1:])
    if argv and argv[0] == "eval":
        from hybridvla_ros import evaluate
        return evaluate.main(argv[1:])
    if argv and argv[0] == "bench-model":
        from hybridvla_ros.model import bench_model
        return bench_model.main(argv[1:])
    if argv and argv[0] == "serve":
        from hybridvla_ros import serve
        return serve.main(argv[1:])
    if argv and argv[0] == "serve-lerobot":
        return _cmd_serve_lerobot(argv[1:])
    if argv and argv[0] == "bench-chunking":
        from hybridvla_ros import bench_chunking
        return bench_chunking.main(argv[1:])
    if argv and argv[0] == "bench-timing":
        from hybridvla_ros import bench_timing
        return bench_timing.main(argv[1:])
    if argv and argv[0] == "bench-remote":
        from hybridvla_ros import bench_remote
        return bench_remote.main(argv[1:])
    if argv and argv[0] == "record":
        from hybridvla_ros import record
        return record.main(argv[1:])
    if argv and argv[0] == "bench-precision":
        from hybridvla_ros.model import bench_precision
        return bench_precision.main(argv[1:])
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
