"""One run of the node graph with a report: what ``hybridvla run``, ``hybridvla demo`` and
``hybridvla bench`` share.

The graph's nodes run as separate processes (:class:`~hybridvla_ros.launcher.GraphLauncher`);
this process listens to them over DDS (:class:`~hybridvla_ros.nodes.graph_listener.GraphListener`)
and turns what it heard into the report.
"""
from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from typing import Any

from hybridvla_ros.launch_description import describe_graph, validate_graph
from hybridvla_ros.launcher import GraphLauncher, NodeDied
from hybridvla_ros.params import from_params, load_node_params
from hybridvla_ros.params.embodiment import EmbodimentParams


def print_report(report: dict[str, Any]) -> None:
    """Print ``report`` as aligned ``key  value`` lines (floats to 3 decimals, NaN as n/a)."""
    width = max(len(k) for k in report)
    for key, value in report.items():
        if isinstance(value, float):
            value = "n/a" if math.isnan(value) else f"{value:.3f}"
        print(f"  {key:<{width}}  {value}")


def write_json(path: str | None, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` (nothing when None), creating its folder; raises OSError."""
    if not path:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, default=float)
    print(f"wrote {path}")


def run_graph(embodiment: str, sim: bool, duration_s: float | None, checkpoint: str | None,
              params_file: str | None = None, json_path: str | None = None, log_dir: str | None = None,
              warmup_s: float = 3.0, quiet: bool = False) -> dict[str, Any] | None:
    """Start the graph, run it for ``duration_s`` (None: until Ctrl-C or SIGTERM), stop it and
    return the listener's report with the nodes' exit codes (None if interrupted before the
    listener started). Raises ParameterError for a bad parameter file (before anything starts)
    and NodeDied when a node exits while the graph runs."""
    # Imported here: it needs rclpy, which `hybridvla check-config` and the in-process
    # benchmarks must not (they run where ROS 2 is not installed).
    from hybridvla_ros.nodes.graph_listener import GraphListener

    specs = describe_graph(embodiment, sim=sim, checkpoint_path=checkpoint, params_file=params_file)
    validate_graph(specs)
    params = from_params(EmbodimentParams, load_node_params(specs[0].params_file, "sync"), "sync")
    stop = {"flag": False}

    def _on_signal(signum: int, _frame: Any) -> None:
        stop["flag"] = True

    old = signal.signal(signal.SIGTERM, _on_signal)
    launcher = GraphLauncher(specs, log_dir=log_dir)
    listener = None
    report = None
    try:
        launcher.start()
        if not quiet:
            print(f"started {len(specs)} nodes for {embodiment}{' (simulated)' if sim else ''}: "
                  + ", ".join(s.name for s in specs) + (f"; logs in {log_dir}" if log_dir else ""))
        listener = GraphListener(params)
        end = None if duration_s is None else time.monotonic() + duration_s + warmup_s
        while not stop["flag"] and (end is None or time.monotonic() < end):
            launcher.wait(0.2)
        report = listener.report(skip_first_s=1.0)
    except KeyboardInterrupt:
        report = listener.report(skip_first_s=1.0) if listener else None
    except NodeDied as exc:
        print(f"error: {exc}", file=sys.stderr)
        if log_dir:
            print(f"see the node logs in {log_dir}", file=sys.stderr)
        raise
    finally:
        if listener is not None:
            listener.close()
        codes = launcher.stop()
        signal.signal(signal.SIGTERM, old)
    if report is not None:
        report["node_exit_codes"] = codes
        if not quiet:
            print("report:")
            print_report({k: v for k, v in report.items() if k != "node_exit_codes"})
        write_json(json_path, report)
    return report
