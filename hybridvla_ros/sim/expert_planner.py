"""The scripted expert's plans in a process of their own, from compact snapshots of a simulator.

A plan (:func:`~hybridvla_ros.sim.rollout.expert_chunk`) steps a twin of the simulator
for a whole chunk: on the MuJoCo Franka about 25 ms of mostly Python, i.e. holding the
GIL. In the sim node's process that starved the sensor timers (joint states at 12 /s
instead of 100 on a busy machine), in a thread too (a planner preempted while it holds
the GIL blocks them). :class:`ExpertPlanner` rolls the plans out in one worker process
instead, so the simulator's own process only takes a snapshot (:func:`take_snapshot`,
well under a millisecond) and publishes the result.

A snapshot of a MuJoCo simulator is its integration state (``mj_getState``), the model
arrays the simulators change at run time (:data:`MUTABLE_MODEL_FIELDS`: the suction
weld's pose, the cube's colour) and its Python attributes; :func:`restore_snapshot` puts
it into a simulator built with the same arguments (the worker builds one at start), so
the plan is the one :func:`expert_chunk` would make on ``sim.clone()``. Other simulators
(the kinematic ones) are small and sent whole (a pickled clone).
"""
from __future__ import annotations

import math
import multiprocessing
import pickle
import signal
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import numpy as np

from hybridvla_ros.sim.base import Simulator

__all__ = ["MUTABLE_MODEL_FIELDS", "take_snapshot", "restore_snapshot", "ExpertPlanner"]

# The MjModel arrays a MuJoCo simulator writes after it is built (everything else in the model is fixed).
MUTABLE_MODEL_FIELDS = ("eq_data", "geom_rgba")
_NOT_PICKLED = frozenset({"model", "data", "_renderer"})
WORKER_RESTART_S = 1.0  # at most one new worker process a second (one that cannot start must not spin)


def _is_mujoco(sim: object) -> bool:
    return type(getattr(sim, "model", None)).__name__ == "MjModel" and \
        type(getattr(sim, "data", None)).__name__ == "MjData"


def take_snapshot(sim: Simulator) -> bytes:
    """The simulator's state as bytes for :func:`restore_snapshot` (``sim`` is not changed)."""
    if not _is_mujoco(sim):
        return pickle.dumps(("whole", sim.clone()), protocol=pickle.HIGHEST_PROTOCOL)
    import mujoco  # noqa: PLC0415  (a MuJoCo simulator exists, so MuJoCo is installed)

    model, data = sim.model, sim.data  # type: ignore[attr-defined]
    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    state = np.empty(mujoco.mj_stateSize(model, spec))
    mujoco.mj_getState(model, data, state, spec)
    attrs = {k: v for k, v in vars(sim).items() if k not in _NOT_PICKLED}
    fields = {name: np.array(getattr(model, name)) for name in MUTABLE_MODEL_FIELDS}
    return pickle.dumps(("mujoco", type(sim).__qualname__, attrs, state, fields), protocol=pickle.HIGHEST_PROTOCOL)


def restore_snapshot(base: Simulator | None, blob: bytes) -> Simulator:
    """A simulator in the state of ``blob``: ``base`` itself for a MuJoCo snapshot (``base``
    must be a simulator of the same class built with the same arguments; its state is
    overwritten), a new object for a whole one. Raises ValueError when ``base`` does not fit."""
    kind, *rest = pickle.loads(blob)  # noqa: S301  (our own worker's input, from our own process)
    if kind == "whole":
        return rest[0]
    name, attrs, state, fields = rest
    if base is None or type(base).__qualname__ != name or not _is_mujoco(base):
        raise ValueError(f"a {name} snapshot needs a {name} to restore into, got {type(base).__qualname__}")
    import mujoco  # noqa: PLC0415

    model, data = base.model, base.data  # type: ignore[attr-defined]
    for field, value in fields.items():
        target = getattr(model, field)
        if target.shape != value.shape:
            raise ValueError(f"snapshot's model.{field} has shape {value.shape}, the simulator's {target.shape}")
        target[...] = value
    vars(base).update(attrs)
    mujoco.mj_setState(model, data, state, mujoco.mjtState.mjSTATE_INTEGRATION)
    mujoco.mj_forward(model, data)  # positions, contacts and sensors of that state
    return base


# ---------------------------------------------------------------- the worker process

_worker_sim: Simulator | None = None


def _init_worker(make: Callable[..., Simulator], args: tuple, kwargs: dict) -> None:
    global _worker_sim
    # A Ctrl-C in a terminal reaches the whole process group: the parent stops the worker (close()).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker_sim = make(*args, **kwargs)


def _plan(blob: bytes, chunk_size: int) -> np.ndarray:
    from hybridvla_ros.sim.rollout import expert_chunk  # noqa: PLC0415  (rollout imports core: load it in the worker only)

    sim = restore_snapshot(_worker_sim, blob)
    return expert_chunk(sim, chunk_size, on_clone=False)


class ExpertPlanner:
    """One worker process that rolls the expert out on snapshots. ``make(*args, **kwargs)``
    (picklable, e.g. :func:`~hybridvla_ros.sim.registry.make_sim`) builds the worker's
    simulator: the same simulator as the one snapshots are taken of. At most one plan runs
    at a time: :meth:`submit` returns None while one is still running (or while a worker
    that died waits to be replaced: :data:`WORKER_RESTART_S`)."""

    def __init__(self, make: Callable[..., Simulator], *args: Any, **kwargs: Any) -> None:
        self._init = (make, args, kwargs)
        self._pool: ProcessPoolExecutor | None = None
        self._running: Future | None = None
        self._next_start_s = -math.inf  # time.monotonic() from which a new worker may start

    @property
    def busy(self) -> bool:
        """A plan is still running."""
        return self._running is not None and not self._running.done()

    def submit(self, sim: Simulator, chunk_size: int) -> Future | None:
        """Start planning ``chunk_size`` steps from ``sim``'s state now (snapshot taken here, on
        the caller's thread); a Future of the (T, D) chunk, or None while the last plan runs.
        The first plan also starts the worker (seconds). A worker that died is replaced on
        the next submit (the Future of a plan it was running raises BrokenProcessPool)."""
        if self.busy or (self._pool is None and time.monotonic() < self._next_start_s):
            return None
        blob = take_snapshot(sim)
        for _ in range(2):  # a worker that died (idle or planning) broke the pool: a new one, once
            if self._pool is None:
                if time.monotonic() < self._next_start_s:
                    return None
                self._next_start_s = time.monotonic() + WORKER_RESTART_S
                make, args, kwargs = self._init
                self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=_init_worker, initargs=(make, args, kwargs))
            try:
                self._running = self._pool.submit(_plan, blob, int(chunk_size))
                return self._running
            except BrokenProcessPool:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
        raise BrokenProcessPool("the expert planner's new worker process broke at once")

    def close(self) -> None:
        """Wait for a plan in flight, stop the worker."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
