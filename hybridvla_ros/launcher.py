"""Start a node graph as separate processes, like ``ros2 launch`` does, without launch_ros.

Every node runs as ``python -m hybridvla_ros.nodes.<executable> --ros-args ...`` with the
same arguments the launch file gives it. :meth:`GraphLauncher.wait` supervises them:

- a node that may be restarted (``NodeSpec.respawn``: every node but the safety filter) is
  started again when it dies, with a log line naming it and its exit code and a restart
  count, after a delay that doubles with each quick death in a row (:class:`RestartPolicy`),
  so a node that dies at once is not restarted in a tight loop; after
  ``max_quick_deaths`` quick deaths in a row the launcher gives up and the graph ends
  (:class:`NodeDied`, with a sentence saying why);
- the death of a node that ends the graph (the safety filter), or a node's exit with code 2
  (its parameters are bad: restarting cannot fix that) ends the graph: :class:`NodeDied`.

Ctrl-C, SIGTERM or :meth:`GraphLauncher.stop` stop them all: SIGINT first (nodes shut
down cleanly), then SIGTERM, then SIGKILL.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import IO

from hybridvla_ros.launch_description import NodeSpec

PARAMETER_ERROR_EXIT = 2  # a node's exit code for bad parameters (nodes/common.run_node)


class NodeDied(RuntimeError):
    """A node of the graph exited and the graph cannot go on without it."""

    def __init__(self, message: str, node: str = "", code: int | None = None) -> None:
        super().__init__(message)
        self.node = node
        self.code = code


@dataclass(frozen=True)
class RestartPolicy:
    """When a node that died is started again."""

    delay_s: float = 1.0           # delay before the first restart (doubles with each quick death in a row)
    max_delay_s: float = 10.0      # the delay never exceeds this
    quick_s: float = 30.0          # a death this soon after its start is quick
    max_quick_deaths: int = 5      # give up after this many quick deaths in a row

    def __post_init__(self) -> None:
        if not (self.delay_s >= 0.0 and self.max_delay_s >= self.delay_s and self.quick_s > 0.0
                and self.max_quick_deaths >= 1):
            raise ValueError(f"RestartPolicy: bad values {self}")


class RestartTracker:
    """One node's deaths: the delay before its next restart, or None to give up."""

    def __init__(self, policy: RestartPolicy) -> None:
        self.policy = policy
        self.restarts = 0          # restarts so far
        self.quick_deaths = 0      # quick deaths in a row

    def on_death(self, ran_s: float) -> float | None:
        """The node died after running ``ran_s`` seconds: the delay before restarting it, or None."""
        p = self.policy
        self.quick_deaths = self.quick_deaths + 1 if ran_s < p.quick_s else 0
        if self.quick_deaths >= p.max_quick_deaths:
            return None
        self.restarts += 1
        return min(p.delay_s * 2.0 ** max(self.quick_deaths - 1, 0), p.max_delay_s)


def _log_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class GraphLauncher:
    """Owns the node processes of one graph; use as a context manager.

    ``on_restart(name, exit_code, restarts)`` is called after each restart (``hybridvla run``
    publishes it on /diagnostics); ``log`` takes the launcher's lines (default: stderr).
    """

    def __init__(self, specs: list[NodeSpec], env: dict[str, str] | None = None,
                 log_dir: str | None = None, restart: RestartPolicy | None = None,
                 log: Callable[[str], None] = _log_stderr,
                 on_restart: Callable[[str, int, int], None] | None = None) -> None:
        self.specs = specs
        self.env = dict(os.environ if env is None else env)
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.log_dir = log_dir
        self.restart_policy = restart or RestartPolicy()
        self.log = log
        self.on_restart = on_restart
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.restarts: dict[str, int] = {s.name: 0 for s in specs}
        self._specs = {s.name: s for s in specs}
        self._trackers = {s.name: RestartTracker(self.restart_policy) for s in specs}
        self._started_at: dict[str, float] = {}
        self._due: dict[str, tuple[float, int]] = {}   # name -> (monotonic restart time, exit code)
        self._logs: dict[str, IO[bytes]] = {}
        self._stopping = False

    def command_for(self, spec: NodeSpec) -> list[str]:
        """The command line that starts ``spec``."""
        return [sys.executable, "-m", spec.module, *spec.ros_arguments()]

    def _spawn(self, spec: NodeSpec) -> None:
        out = None
        if self.log_dir:
            os.makedirs(self.log_dir, exist_ok=True)
            old = self._logs.pop(spec.name, None)
            if old is not None:
                old.close()
            # a restarted node appends to its log: the first life's output stays readable
            out = open(os.path.join(self.log_dir, f"{spec.name}.log"),  # noqa: SIM115
                       "ab" if spec.name in self.procs else "wb")
            self._logs[spec.name] = out
        self.procs[spec.name] = subprocess.Popen(
            self.command_for(spec), env=self.env, stdout=out, stderr=subprocess.STDOUT if out else None)
        self._started_at[spec.name] = time.monotonic()

    def start(self) -> None:
        """Start every node; raises OSError if a process cannot be started."""
        for spec in self.specs:
            self._spawn(spec)

    def dead(self) -> dict[str, int]:
        """Nodes whose process has exited (and is not restarted yet), with their exit codes."""
        return {name: p.returncode for name, p in self.procs.items() if p.poll() is not None}

    def supervise(self) -> None:
        """One look at the nodes: schedule restarts of those that died, start those that are due.

        Raises NodeDied when a death ends the graph: a node that is not restarted (the safety
        filter), a node with bad parameters, or one that died too often right after starting.
        """
        if self._stopping:
            return
        now = time.monotonic()
        for name, code in self.dead().items():
            if name in self._due:
                continue
            spec = self._specs[name]
            if spec.ends_graph:
                raise NodeDied(f"{name} exited with code {code}; the graph ends with it "
                               "(it is not restarted: no command may reach the robot unchecked)", name, code)
            if code == PARAMETER_ERROR_EXIT:
                raise NodeDied(f"{name} exited with code {code} (bad parameters); restarting cannot fix "
                               "that, so the graph ends", name, code)
            tracker = self._trackers[name]
            delay = tracker.on_death(now - self._started_at[name])
            if delay is None:
                p = self.restart_policy
                raise NodeDied(f"{name} died {p.max_quick_deaths} times in a row within {p.quick_s:.0f} s of "
                               f"starting (last exit code {code}); giving up, so the graph ends", name, code)
            self.log(f"[launcher] {name} exited with code {code}; restarting it in {delay:.1f} s "
                     f"(restart {tracker.restarts})")
            self._due[name] = (now + delay, code)
        for name, (at, code) in list(self._due.items()):
            if now >= at:
                del self._due[name]
                self._spawn(self._specs[name])
                self.restarts[name] = self._trackers[name].restarts
                self.log(f"[launcher] {name} restarted (pid {self.procs[name].pid}, "
                         f"restart {self.restarts[name]})")
                if self.on_restart is not None:
                    self.on_restart(name, code, self.restarts[name])

    def wait(self, duration_s: float | None, poll_s: float = 0.1) -> None:
        """Supervise for ``duration_s`` (None: until a death ends the graph); raises NodeDied then."""
        end = None if duration_s is None else time.monotonic() + duration_s
        while True:
            self.supervise()
            if end is not None and time.monotonic() >= end:
                return
            time.sleep(poll_s if end is None else max(0.0, min(poll_s, end - time.monotonic())))

    def stop(self, timeout_s: float = 5.0) -> dict[str, int]:
        """Stop every node (SIGINT, then SIGTERM, then SIGKILL); returns exit codes."""
        self._stopping = True
        self._due.clear()
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
        for f in self._logs.values():
            f.close()
        self._logs.clear()
        return {name: p.wait() for name, p in self.procs.items()}

    def __enter__(self) -> GraphLauncher:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
