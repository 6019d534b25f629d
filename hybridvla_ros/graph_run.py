"""One run of the node graph with a report: what ``hybridvla run``, ``hybridvla demo`` and
``hybridvla bench`` share.

The graph's nodes run as separate processes (:class:`~hybridvla_ros.launcher.GraphLauncher`);
this process listens to them over DDS (:class:`~hybridvla_ros.nodes.graph_listener.GraphListener`)
and turns what it heard into the report.

The run waits until the graph is ready (the policy's first chunk was served and a first
command came from it, not a hold), prints the startup time, then runs for the duration;
the report's rates cover the time after ready. :func:`verdict` says whether the policy
drove at all: a run in which it never did fails (``hybridvla run`` / ``demo`` exit 1).
Nodes that die are restarted by the launcher (announced on /diagnostics as
``hybridvla: launcher``); the death of the safety filter ends the run.
"""
from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from typing import Any

from hybridvla_ros.launch_description import describe_graph, safety_filter_input, validate_graph
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


READY_TIMEOUT_S = 120.0  # default: how long the policy may take to drive after the nodes start


def verdict(report: dict[str, Any]) -> str | None:
    """Why the run failed (one sentence), or None when the policy drove: it served chunks and
    commands came from them. Commands that were all holds are not a pass."""
    if report.get("chunks", 0) == 0:
        return (f"the policy never drove: no action chunk was served ({report.get('commands_sent', 0)} commands "
                "sent, all holds); the inference node's log says why")
    if report.get("policy_commands", 0) == 0:
        return (f"the policy never drove: {report['chunks']} action chunks were served, but none of the "
                f"{report.get('commands_sent', 0)} commands came from them (all holds); the action buffer's "
                "and handoff's logs say why")
    return None


def run_graph(embodiment: str, sim: bool, duration_s: float | None, checkpoint: str | None,
              params_file: str | None = None, json_path: str | None = None, log_dir: str | None = None,
              ready_timeout_s: float = READY_TIMEOUT_S, quiet: bool = False) -> dict[str, Any] | None:
    """Start the graph, wait until it is ready (at most ``ready_timeout_s`` when ``duration_s`` is
    given; open-ended runs warn then), run it for ``duration_s`` more (None: until Ctrl-C or
    SIGTERM), stop it and return the listener's report with ``startup_s`` (start to ready, NaN
    if never), the nodes' restarts and exit codes (None if interrupted before the listener
    started). Raises ParameterError for a bad parameter file (before anything starts) and
    NodeDied when a death ends the graph (the safety filter's, or a node that keeps dying)."""
    # Imported here: it needs rclpy, which `hybridvla check-config` and the in-process
    # benchmarks must not (they run where ROS 2 is not installed).
    from hybridvla_ros.nodes.graph_listener import GraphListener

    specs = describe_graph(embodiment, sim=sim, checkpoint_path=checkpoint, params_file=params_file)
    validate_graph(specs)
    params = from_params(EmbodimentParams, load_node_params(specs[0].params_file, "sync"), "sync")
    stop = {"flag": False}

    def _on_signal(signum: int, _frame: Any) -> None:
        stop["flag"] = True

    listener: Any = None

    def _on_restart(name: str, code: int, restarts: int) -> None:
        if listener is not None:
            listener.publish_diagnostic(
                "hybridvla: launcher", "warn", f"{name} restarted after exit code {code}",
                {f"{n} restarts": str(k) for n, k in launcher.restarts.items()})

    old = signal.signal(signal.SIGTERM, _on_signal)
    launcher = GraphLauncher(specs, log_dir=log_dir, on_restart=_on_restart)
    report = None
    t_start = time.monotonic()
    ready_at: float | None = None
    try:
        launcher.start()
        if not quiet:
            print(f"started {len(specs)} nodes for {embodiment}{' (simulated)' if sim else ''}: "
                  + ", ".join(s.name for s in specs) + (f"; logs in {log_dir}" if log_dir else ""))
        listener = GraphListener(params, safety_input_topic=safety_filter_input(specs))
        end: float | None = None
        waited_long = False
        while not stop["flag"] and (end is None or time.monotonic() < end):
            launcher.wait(0.2)
            if ready_at is None:
                r = listener.snapshot()
                if r.ready:
                    ready_at = r.first_policy_command_mono
                    if not quiet:
                        _print_ready(r, t_start)
                    end = None if duration_s is None else time.monotonic() + duration_s
                elif time.monotonic() - t_start > ready_timeout_s and not waited_long:
                    if duration_s is not None:
                        break  # the verdict says why
                    waited_long = True  # open-ended: say so once, keep running
                    print(f"warning: the policy has not driven {ready_timeout_s:.0f} s after start "
                          f"(chunks {len(r.chunk_info)}, commands {len(r.command_times)}, all holds)",
                          file=sys.stderr, flush=True)
        report = _report(listener, t_start)
    except KeyboardInterrupt:
        report = _report(listener, t_start) if listener else None
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
        report["node_restarts"] = dict(launcher.restarts)
        report["node_exit_codes"] = codes
        if not quiet:
            print("report:")
            print_report({k: v for k, v in report.items() if k != "node_exit_codes"})
        write_json(json_path, report)
    return report


def _print_ready(r: Any, t_start: float) -> None:
    first_chunk = r.first_chunk_mono - t_start if r.first_chunk_mono is not None else float("nan")
    print(f"ready after {r.first_policy_command_mono - t_start:.1f} s (first chunk after {first_chunk:.1f} s, "
          "then the first command from the policy)", flush=True)


def _report(listener: Any, t_start: float) -> dict[str, Any]:
    r = listener.snapshot()
    # Rates after ready (the first second skipped: the chunk seam settles), else over everything heard.
    report: dict[str, Any] = listener.report(skip_first_s=1.0, since_s=r.first_policy_command_sent)
    ready = r.first_policy_command_mono
    report["startup_s"] = ready - t_start if ready is not None else float("nan")
    return report
