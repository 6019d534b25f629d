"""Start a node graph as separate processes, like ``ros2 launch`` does, without launch_ros.

Every node runs as ``python -m hybridvla_ros.nodes.<executable> --ros-args ...`` with the
same arguments the launch file gives it. Ctrl-C, SIGTERM, or the death of any node stops
them all: SIGINT first (nodes shut down cleanly), then SIGTERM, then SIGKILL.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from types import TracebackType

from hybridvla_ros.launch_description import NodeSpec


class NodeDied(RuntimeError):
    """A node of the graph exited while the graph was meant to run."""


class GraphLauncher:
    """Owns the node processes of one graph; use as a context manager."""

    def __init__(self, specs: list[NodeSpec], env: dict[str, str] | None = None,
                 log_dir: str | None = None) -> None:
        self.specs = specs
        self.env = dict(os.environ if env is None else env)
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: list = []

    def command_for(self, spec: NodeSpec) -> list[str]:
        """The command line that starts ``spec``."""
        return [sys.executable, "-m", spec.module, *spec.ros_arguments()]

    def start(self) -> None:
        """Start every node; raises OSError if a process cannot be started."""
        for spec in self.specs:
            out = None
            if self.log_dir:
                os.makedirs(self.log_dir, exist_ok=True)
                out = open(os.path.join(self.log_dir, f"{spec.name}.log"), "wb")  # noqa: SIM115
                self._logs.append(out)
            self.procs[spec.name] = subprocess.Popen(
                self.command_for(spec), env=self.env, stdout=out, stderr=subprocess.STDOUT if out else None)

    def dead(self) -> dict[str, int]:
        """Nodes that have exited, with their exit codes."""
        return {name: p.returncode for name, p in self.procs.items() if p.poll() is not None}

    def wait(self, duration_s: float | None, poll_s: float = 0.1) -> None:
        """Block for ``duration_s`` (None: until a node dies); raises NodeDied if one exits."""
        end = None if duration_s is None else time.monotonic() + duration_s
        while end is None or time.monotonic() < end:
            dead = self.dead()
            if dead:
                raise NodeDied(", ".join(f"{n} exited with code {c}" for n, c in dead.items()))
            time.sleep(poll_s)

    def stop(self, timeout_s: float = 5.0) -> dict[str, int]:
        """Stop every node (SIGINT, then SIGTERM, then SIGKILL); returns exit codes."""
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            alive = [p for p in self.procs.values() if p.poll() is None]
            if not alive:
                break
            for p in alive:
                try:
                    p.send_signal(sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and any(p.poll() is None for p in alive):
                time.sleep(0.05)
        for f in self._logs:
            f.close()
        self._logs.clear()
        return {name: p.wait() for name, p in self.procs.items()}

    def __enter__(self) -> GraphLauncher:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
