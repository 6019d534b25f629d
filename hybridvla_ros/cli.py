"""The ``hybridvla`` command: run the graph, the demo, training and benchmarks.

    hybridvla run --embodiment franka --sim --duration 30   # like ros2 launch, plus a report
    hybridvla demo                                          # train if needed, run on the sim, report
    hybridvla train --embodiments franka aloha hello leap   # policy from the sims' scripted experts
    hybridvla bench                                         # control-path numbers, JSON in runs/
    hybridvla bench-model                                   # batch-1 inference variants side by side
    hybridvla bench-precision                               # 1 mm reaching: token chunk vs flow-refined
    hybridvla eval --embodiment franka --episodes 10        # closed-loop episodes through the graph
    hybridvla study safety                                  # the README's studies (safety, latency, ...)
    hybridvla check-config config/franka.yaml               # validate a parameter file
    hybridvla export-corrections --store runs/corrections/franka.sqlite --out corrections.mcap
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from typing import Any

from hybridvla_ros.launch_description import describe_graph, params_file_for, validate_graph
from hybridvla_ros.params import ParameterError, from_params, load_node_params
from hybridvla_ros.params.embodiment import EMBODIMENTS, EmbodimentParams

DEFAULT_CHECKPOINT = "checkpoints/default"


def _print_report(report: dict[str, Any]) -> None:
    width = max(len(k) for k in report)
    for key, value in report.items():
        if isinstance(value, float):
            value = "n/a" if math.isnan(value) else f"{value:.3f}"
        print(f"  {key:<{width}}  {value}")


def _write_json(path: str | None, data: dict[str, Any]) -> None:
    if not path:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, default=float)
    print(f"wrote {path}")


def run_graph(embodiment: str, sim: bool, duration_s: float | None, checkpoint: str | None,
              params_file: str | None = None, json_path: str | None = None, log_dir: str | None = None,
              warmup_s: float = 3.0, quiet: bool = False) -> dict[str, Any] | None:
    """Start the graph, run it for ``duration_s`` (None: until Ctrl-C), and return the report."""
    from hybridvla_ros.monitor import GraphMonitor
    from hybridvla_ros.runner import GraphRunner, NodeDied

    specs = describe_graph(embodiment, sim=sim, checkpoint_path=checkpoint, params_file=params_file)
    validate_graph(specs)
    params = from_params(EmbodimentParams, load_node_params(specs[0].params_file, "sync"), "sync")
    stop = {"flag": False}

    def _on_signal(signum: int, _frame: Any) -> None:
        stop["flag"] = True

    old = signal.signal(signal.SIGTERM, _on_signal)
    runner = GraphRunner(specs, log_dir=log_dir)
    monitor = None
    report = None
    try:
        runner.start()
        if not quiet:
            print(f"started {len(specs)} nodes for {embodiment}{' (simulated)' if sim else ''}: "
                  + ", ".join(s.name for s in specs) + (f"; logs in {log_dir}" if log_dir else ""))
        monitor = GraphMonitor(params)
        end = None if duration_s is None else time.monotonic() + duration_s + warmup_s
        while not stop["flag"] and (end is None or time.monotonic() < end):
            runner.wait(0.2)
        report = monitor.report(skip_first_s=1.0)
    except KeyboardInterrupt:
        report = monitor.report(skip_first_s=1.0) if monitor else None
    except NodeDied as exc:
        print(f"error: {exc}", file=sys.stderr)
        if log_dir:
            print(f"see the node logs in {log_dir}", file=sys.stderr)
        raise
    finally:
        if monitor is not None:
            monitor.close()
        codes = runner.stop()
        signal.signal(signal.SIGTERM, old)
    if report is not None:
        report["node_exit_codes"] = codes
        if not quiet:
            print("report:")
            _print_report({k: v for k, v in report.items() if k != "node_exit_codes"})
        _write_json(json_path, report)
    return report


def _cmd_run(args: argparse.Namespace) -> int:
    try:
        run_graph(args.embodiment, args.sim, args.duration, args.checkpoint, args.params_file, args.json, args.log_dir)
    except ParameterError as exc:
        print(f"error: bad parameter: {exc}", file=sys.stderr)
        return 2
    except RuntimeError:
        return 1
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    ckpt = args.checkpoint
    if not os.path.isfile(os.path.join(ckpt, "model.safetensors")):
        print(f"no policy at {ckpt}: training one on the simulators' scripted experts (a few minutes)")
        from hybridvla_ros.model import train
        code = train.main(["--out", ckpt])
        if code:
            return code
    try:
        report = run_graph(args.embodiment, True, args.duration, ckpt, json_path=args.json, log_dir=args.log_dir)
    except ParameterError as exc:
        print(f"error: bad parameter: {exc}", file=sys.stderr)
        return 2
    except RuntimeError:
        return 1
    return 0 if report and report["commands_sent"] > 0 else 1


def _cmd_train(argv: list[str]) -> int:
    from hybridvla_ros.model import train
    return train.main(argv)


def _cmd_bench(argv: list[str]) -> int:
    from hybridvla_ros import bench
    return bench.main(argv)


def _cmd_check(args: argparse.Namespace) -> int:
    from hybridvla_ros.launch_description import NodeSpec
    specs = [NodeSpec(f"{n}_node", n, args.params_file)
             for n in ("sync", "inference", "action_buffer", "handoff", "safety_filter", "correction_recorder",
                       "adaptation", "monitor", "sim_robot", "sim_operator")]
    try:
        validate_graph(specs)
    except ParameterError as exc:
        print(f"{args.params_file}: {exc}", file=sys.stderr)
        return 2
    print(f"{args.params_file}: ok")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from hybridvla_ros.core.correction_store import CorrectionStore, CorrectionStoreError, export_mcap
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
    run.add_argument("--embodiment", default="franka", choices=EMBODIMENTS)
    run.add_argument("--sim", action=argparse.BooleanOptionalAction, default=True,
                     help="start the simulated robot (default); --no-sim for a real robot")
    run.add_argument("--duration", type=float, default=None, help="seconds to run (default: until Ctrl-C)")
    run.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT)
    run.add_argument("--params-file", default=None, help="instead of config/<embodiment>.yaml")
    run.add_argument("--json", default=None, help="write the report here")
    run.add_argument("--log-dir", default=None, help="write each node's output to <dir>/<node>.log")
    run.set_defaults(func=_cmd_run)

    demo = sub.add_parser("demo", help="train a policy if there is none, run the graph on the simulated robot")
    demo.add_argument("--embodiment", default="franka", choices=EMBODIMENTS)
    demo.add_argument("--duration", type=float, default=30.0)
    demo.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT)
    demo.add_argument("--json", default="runs/demo_report.json")
    demo.add_argument("--log-dir", default="runs/demo_logs")
    demo.set_defaults(func=_cmd_demo)

    sub.add_parser("train", help="train the policy (see hybridvla train --help)", add_help=False)
    sub.add_parser("eval", help="N episodes of the task through the whole graph, JSON and plots "
                   "(see hybridvla eval --help)", add_help=False)
    sub.add_parser("study", help="the README's studies: safety, latency, adaptation, transfer "
                   "(see hybridvla study)", add_help=False)
    sub.add_parser("bench", help="control-path benchmark (see hybridvla bench --help)", add_help=False)
    sub.add_parser("bench-model", help="fp32 / int8 / bf16 / ONNX Runtime inference side by side "
                   "(see hybridvla bench-model --help)", add_help=False)
    sub.add_parser("bench-precision", help="TCP error at 1 mm tolerance: 64-bin token chunks vs flow-refined "
                   "(see hybridvla bench-precision --help)", add_help=False)

    export = sub.add_parser("export-corrections", help="write recorded corrections as a ROS 2 MCAP file")
    export.add_argument("--store", default="runs/corrections/franka.sqlite")
    export.add_argument("--out", default="runs/corrections/franka.mcap")
    export.set_defaults(func=_cmd_export)

    check = sub.add_parser("check-config", help="validate a parameter file for every node")
    check.add_argument("params_file")
    check.set_defaults(func=_cmd_check)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``hybridvla``; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "train":
        return _cmd_train(argv[1:])
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
    if argv and argv[0] == "bench-precision":
        from hybridvla_ros.model import bench_precision
        return bench_precision.main(argv[1:])
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
