"""``hybridvla record``: teleoperated demonstrations from the robot's topics into a LeRobotDataset v3.

    hybridvla record --embodiment franka [--root DIR]     # record; Ctrl-C ends, then the dataset is written
    hybridvla record --embodiment franka --convert-only   # (re)write the dataset from the recorded episodes

Starts :mod:`hybridvla_ros.nodes.demo_recorder_node` (the embodiment's parameter file, as ``ros2 run`` would)
and waits for it; episodes are started and stopped through its services (``demo_recorder/start_episode``,
``demo_recorder/stop_episode`` with ``data`` = success, ``demo_recorder/discard_episode``). When it ends
(Ctrl-C or SIGTERM) every finished episode under ``<root>/episodes`` becomes the LeRobotDataset ``<root>/lerobot``,
written by LeRobot's own code in the LeRobot environment (``python -m hybridvla_ros.lerobot_demos recording``);
``hybridvla train --dataset <root>/lerobot`` and ``lerobot-train --dataset.root=<root>/lerobot`` take it.
After a crash (kill -9, power) nothing finished is lost: ``--convert-only`` writes the dataset from the episodes.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from typing import Any

from hybridvla_ros.core.recording import finished_episodes
from hybridvla_ros.launch_description import NodeSpec, params_file_for
from hybridvla_ros.model.lerobot_data import lerobot_python_or_say
from hybridvla_ros.params import ParameterError

PROG = "hybridvla record"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    ap.add_argument("--embodiment", required=True, help="the robot (config/<embodiment>.yaml)")
    ap.add_argument("--params-file", default=None, help="parameter file (default: config/<embodiment>.yaml)")
    ap.add_argument("--root", default=None, help="recording directory (default: runs/recordings/<embodiment>)")
    ap.add_argument("--camera-name", default=None, help="observation.images.<name> (default: front)")
    ap.add_argument("--repo-id", default="local/recording", help="the dataset's repo_id (nothing is pushed)")
    ap.add_argument("--video", action="store_true", help="AV1 video instead of lossless PNG in parquet")
    what = ap.add_mutually_exclusive_group()
    what.add_argument("--convert-only", action="store_true", help="only write the dataset from recorded episodes")
    what.add_argument("--no-convert", action="store_true", help="record only; convert later with --convert-only")
    return ap


def convert(root: str, repo_id: str, video: bool) -> int:
    """Write ``<root>/lerobot`` from the recorded episodes in the LeRobot environment; the exit code."""
    python = lerobot_python_or_say(PROG, f"then `{PROG} --convert-only` (the episodes under {root}/episodes "
                                         "are kept)")
    if python is None:
        return 2
    cmd = [python, "-m", "hybridvla_ros.lerobot_demos", "recording", "--root", root, "--repo-id", repo_id]
    return subprocess.call(cmd + (["--video"] if video else []))


def _record(spec: NodeSpec) -> int:
    """Run the recorder node until it exits; SIGINT / SIGTERM are passed on so it can discard cleanly."""
    proc = subprocess.Popen([sys.executable, "-m", spec.module, *spec.ros_arguments()])

    def forward(signum: int, _frame: Any) -> None:
        if proc.poll() is None:
            proc.send_signal(signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return proc.wait()
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        params_file = args.params_file or params_file_for(args.embodiment)
    except ParameterError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    root = os.path.abspath(args.root or os.path.join("runs", "recordings", args.embodiment))
    if args.convert_only:
        return convert(root, args.repo_id, args.video)
    overrides: dict[str, Any] = {"root": root}
    if args.camera_name:
        overrides["camera_name"] = args.camera_name
    code = _record(NodeSpec("demo_recorder_node", "demo_recorder", params_file, overrides))
    if code not in (0, -signal.SIGINT, -signal.SIGTERM):
        print(f"{PROG}: error: the recorder exited with code {code}; recorded episodes stay under {root}/episodes",
              file=sys.stderr)
        return code if code > 0 else 1
    if args.no_convert:
        return 0
    if not finished_episodes(root):
        print(f"{PROG}: no finished episodes under {root}/episodes; no dataset written")
        return 0
    return convert(root, args.repo_id, args.video)


if __name__ == "__main__":
    raise SystemExit(main())
