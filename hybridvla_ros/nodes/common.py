"""What every node shares: parameter loading, stamps, images, and a clean main().

Kept thin on purpose: nodes only translate messages and call the core modules.
"""
from __future__ import annotations

import array
import signal
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from sensor_msgs.msg import Image

from hybridvla_ros.params import ParameterError
from hybridvla_ros.params.check import empty_list_issues, load_node_schema, params_files

T = TypeVar("T")

# The arguments rclpy was initialised with: the node reads its --params-file paths from them
# to say which file and section an unknown key came from (rcl keeps no record of it).
_process_args: list[str] | None = None


def node_parameters(node: Node) -> dict[str, Any]:
    """All parameters the node was given (from --params-file and -p), as plain Python values."""
    out: dict[str, Any] = {}
    for name, p in node.get_parameters_by_prefix("").items():
        value = p.value
        if isinstance(value, array.array):
            value = list(value)
        out[name] = value
    return out


def load_schema(node: Node, schema: type[T]) -> T:
    """Validate the node's parameters against its schema.

    Raises ParameterError naming the field: one line per key the schema does not know
    (with its file, section and the closest known name), else the first bad value.
    """
    argv = _process_args if _process_args is not None else sys.argv
    return load_node_schema(schema, node_parameters(node), node.get_name(), argv, node.get_namespace())


def stamp_to_s(stamp: Any) -> float:
    """builtin_interfaces/Time -> seconds."""
    return stamp.sec + stamp.nanosec * 1e-9


def s_to_stamp(t_s: float, msg_stamp: Any) -> Any:
    """Fill a builtin_interfaces/Time from seconds and return it."""
    sec = int(t_s // 1)
    msg_stamp.sec = sec
    msg_stamp.nanosec = min(int(round((t_s - sec) * 1e9)), 999_999_999)
    return msg_stamp


def rgb8_image(image: np.ndarray, stamp_s: float, frame_id: str) -> Image:
    """An (H, W, 3) uint8 RGB array as a sensor_msgs/Image (rgb8) stamped ``stamp_s``."""
    out = Image()
    s_to_stamp(stamp_s, out.header.stamp)
    out.header.frame_id = frame_id
    out.height, out.width = int(image.shape[0]), int(image.shape[1])
    out.encoding = "rgb8"
    out.step = int(image.shape[1] * 3)
    out.data = np.ascontiguousarray(image).tobytes()
    return out


def now_s(node: Node) -> float:
    """The node's clock (ROS time) in seconds."""
    return node.get_clock().now().nanoseconds * 1e-9


# Set when SIGINT or SIGTERM arrived: from then on the process is shutting down.
_signalled = False


def _note_shutdown_signals() -> None:
    """Remember SIGINT / SIGTERM in ``_signalled`` (SIGINT still raises KeyboardInterrupt).

    Installed before ``rclpy.init``: rclpy's own handlers (which shut the context down) chain
    to these, so both run. Python's handler runs at the next bytecode of the main thread, which
    can be inside rclpy's conversion of a message being taken; pybind11 then turns the
    KeyboardInterrupt into a RuntimeError ('Unable to convert call argument'), and a take on
    a context already shut down raises RCLError: both are shutdown, not failures.
    """
    def on_signal(signum: int, _frame: Any) -> None:
        global _signalled
        _signalled = True
        if signum == signal.SIGINT:
            raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.signal(sig, on_signal)
        except ValueError:  # not the main thread (a test calling main() in a thread): keep rclpy's
            return
    sys.unraisablehook = _quiet_interrupted_rclpy_tasks


_default_unraisablehook = sys.unraisablehook


def _quiet_interrupted_rclpy_tasks(unraisable: Any) -> None:
    """A KeyboardInterrupt inside rclpy's ``Task.__init__`` leaves a Task without ``_exception``,
    whose ``__del__`` then prints an AttributeError traceback when it is collected (an rclpy bug,
    seen under load at SIGINT). Once shutting down, that one is not ours to report; every other
    unraisable exception goes to Python's hook."""
    obj = getattr(unraisable, "object", None)
    if (shutting_down() and isinstance(unraisable.exc_value, AttributeError)
            and getattr(obj, "__module__", "") == "rclpy.task"):
        return
    _default_unraisablehook(unraisable)


def shutting_down() -> bool:
    """True once SIGINT/SIGTERM arrived or rclpy's default context was shut down."""
    return _signalled or not rclpy.ok()


def run_node(factory: Callable[[], Node], args: list[str] | None = None) -> int:
    """Create the node, spin until Ctrl-C or shutdown, clean up; returns the exit code.

    A bad parameter file gives a one-line error per bad parameter and exit code 2, not a
    traceback. Shutting down (SIGINT, SIGTERM, the context shut down) gives no traceback
    either: the exceptions rclpy raises while an executor takes a message or a node is
    destroyed at that moment (RuntimeError and its subclasses RCLError and InvalidHandle,
    KeyboardInterrupt, ExternalShutdownException) end the node with code 0. The same
    exceptions at any other time are real failures and propagate.
    """
    global _process_args
    _process_args = list(sys.argv if args is None else args)
    _note_shutdown_signals()
    rclpy.init(args=args)
    node: Node | None = None
    code = 0
    try:
        node = factory()
        rclpy.spin(node)
    except ParameterError as exc:
        for line in str(exc).splitlines():
            print(f"[FATAL] bad parameter: {line}", file=sys.stderr, flush=True)
        code = 2
    except ValueError as exc:
        # rclpy refuses a parameter given as an empty list (its type is unknown) while making the node
        empties = empty_list_issues(params_files(_process_args)) if "PARAMETER_NOT_SET" in str(exc) else []
        if not empties:
            raise
        for issue in empties:
            print(f"[FATAL] bad parameter: {issue}", file=sys.stderr, flush=True)
        code = 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RuntimeError:
        if not shutting_down():
            raise
    finally:
        try:
            if node is not None:
                node.destroy_node()
            rclpy.try_shutdown()
        except (KeyboardInterrupt, RuntimeError):  # a second signal, or rclpy tearing down under us
            if not shutting_down():
                raise
    return code
