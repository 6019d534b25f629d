"""Nodes shut down without tracebacks: what rclpy raises while a node is stopped (a message being taken
when SIGINT lands, a context shut down under the executor) ends the node quietly with code 0; the same
exception at any other time is a real failure and still shows."""
from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.ros

# A node whose timer does what rclpy does when a signal lands while it takes a message: the signal
# arrives, then take_message raises (pybind11's RuntimeError, or RCLError on a context shut down).
NODE = """
import os, signal, sys, time
import rclpy
from rclpy.node import Node
from hybridvla_ros.nodes import common

SIGNAL = {signal!r}

class Flaky(Node):
    def __init__(self):
        super().__init__("flaky")
        self.create_timer(0.05, self.tick)

    def tick(self):
        if SIGNAL:
            try:  # pybind11 turns a KeyboardInterrupt raised inside the conversion into its RuntimeError
                os.kill(os.getpid(), getattr(signal, SIGNAL))
                end = time.monotonic() + 5.0
                while rclpy.ok() and time.monotonic() < end:  # until rclpy has shut the context down
                    time.sleep(0.001)
            except KeyboardInterrupt:
                pass
        raise RuntimeError("Unable to convert call argument '0' to Python object")

sys.exit(common.run_node(Flaky, sys.argv))
"""


def _run(ros, signal_name: str | None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NODE.format(signal=signal_name)], env=ros.env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_errors_while_shutting_down_end_the_node_quietly(ros, signal_name: str) -> None:
    done = _run(ros, signal_name)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 0, done.stderr


def test_the_same_error_outside_shutdown_is_a_failure(ros) -> None:
    done = _run(ros, None)
    assert "Traceback" in done.stderr and "Unable to convert call argument" in done.stderr
    assert done.returncode == 1
