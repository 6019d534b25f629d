"""Closed-loop episodes on several CPU cores: ``run_episodes(run_one, count, workers)``.

Evaluations and DAgger collections run many independent episodes, each a pure function of its index
(its own simulator, scene seed and policy sampling seed). With ``workers`` > 1 they are split into
contiguous slices, one per worker process, each at one torch thread; the results come back in index
order. The workers are spawned, not forked: a forked child hangs in its first MuJoCo render (the
parent's EGL context), so ``run_one`` must pickle (a module-level function or an object whose class
is importable, e.g. :class:`hybridvla_ros.model.runner.SeededPredictor`'s methods). With one worker
the episodes run here, also at one torch thread, so an episode's result does not depend on how many
workers ran: the same numbers with 1 or N (``test/unit/test_parallel_episodes.py``).
"""
from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import torch

T = TypeVar("T")

_RUN_ONE: Callable[[int], Any] | None = None  # a worker's job, set by its initializer


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """torch at one intra-op thread inside the block, the caller's setting restored after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _start_worker(run_one: Callable[[int], Any]) -> None:
    global _RUN_ONE
    torch.set_num_threads(1)
    _RUN_ONE = run_one


def _run_slice(indices: Sequence[int]) -> list[Any]:
    assert _RUN_ONE is not None, "the pool's initializer sets the job"
    return [_RUN_ONE(i) for i in indices]


def run_episodes(run_one: Callable[[int], T], count: int, workers: int = 1) -> list[T]:
    """``[run_one(0), ..., run_one(count - 1)]``, on ``workers`` spawned processes (at most one per
    episode); ValueError for a negative count or fewer than 1 worker. An exception in an episode is
    raised here."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"count must be an int >= 0, got {count!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    workers = min(workers, count)
    if workers <= 1:
        with one_torch_thread():
            return [run_one(i) for i in range(count)]
    bounds = [round(k * count / workers) for k in range(workers + 1)]
    slices = [list(range(a, b)) for a, b in zip(bounds[:-1], bounds[1:])]
    with multiprocessing.get_context("spawn").Pool(workers, initializer=_start_worker,
                                                   initargs=(run_one,)) as pool:
        parts = pool.map(_run_slice, slices, chunksize=1)
    return [r for part in parts for r in part]

