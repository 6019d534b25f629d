"""Weight swap and rollback for a served policy, outside the node that serves it.

:class:`PolicySlot` holds the policy being served and the checkpoint it came from. An update
(a checkpoint directory, from the adaptation node) is loaded, checked against the robot and
warmed up on a background thread, so the caller's inference never waits for it; then the
reference is swapped. A caller that reads :attr:`PolicySlot.policy` once per call gets the
new weights from its next call on, never half of each. One load runs at a time; updates that
arrive meanwhile wait, and only the newest waiting one is loaded. An update that cannot be
loaded, does not fit or fails its warm-up is logged and dropped: the served policy stays.
The previous policy is kept: :meth:`PolicySlot.rollback` swaps back to it (and, called again,
forward). Sources that are not ``adaptable`` (the simulated expert) refuse updates.
ROS-free; the node passes its logger and a callback that publishes what is served.
"""
from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from hybridvla_ros.policies.base import Policy


class SlotLogger(Protocol):
    """Where the slot reports loads, refusals and swaps (an rclpy logger or a ``logging.Logger``)."""

    def info(self, message: str, /) -> object: ...

    def error(self, message: str, /) -> object: ...


class UpdateRefused(ValueError):
    """An update that is not even loaded: the source is not adaptable, or the path is empty."""


@dataclass(frozen=True)
class ServedPolicy:
    """A policy and the checkpoint directory it was loaded from (absolute)."""

    policy: Policy
    checkpoint_path: str

    @property
    def model_version(self) -> int:
        """The policy's model_version."""
        return int(self.policy.model_version)

    def describe(self) -> str:
        """``<path> (model_version <n>)``, for log lines and service answers."""
        return f"{self.checkpoint_path} (model_version {self.model_version})"


def _no_check(policy: Policy, source: str) -> None:
    """Accept every update (a caller without requirements)."""


class PolicySlot:
    """The served policy, its swap-in updates and rollback.

    ``load(path)`` makes a policy from a checkpoint directory (raising on failure);
    ``check(policy, path)`` raises when it does not fit the robot (e.g.
    :meth:`~hybridvla_ros.policies.transforms.PolicyRequirements.check`); ``on_change(served)``
    is called after every swap and rollback (from the loader thread for swaps).
    """

    def __init__(self, policy: Policy, checkpoint_path: str, load: Callable[[str], Policy],
                 check: Callable[[Policy, str], None] = _no_check,
                 on_change: Callable[[ServedPolicy], None] | None = None, log: SlotLogger | None = None) -> None:
        self._active = ServedPolicy(policy, os.path.abspath(checkpoint_path))
        self._previous: ServedPolicy | None = None  # what rollback() swaps back to
        self._load = load
        self._check = check
        self._on_change = on_change
        self._log: SlotLogger = log if log is not None else logging.getLogger(__name__)
        self._lock = threading.Lock()  # guards _active / _previous / _loading / _pending
        self._loading = False
        self._pending: str | None = None
        self._idle = threading.Event()
        self._idle.set()

    @property
    def policy(self) -> Policy:
        """The policy to call now; read it once per call so a swap lands between two calls."""
        return self._active.policy

    @property
    def active(self) -> ServedPolicy:
        """What is served now."""
        return self._active

    @property
    def previous(self) -> ServedPolicy | None:
        """What :meth:`rollback` would swap back to (None before the first swap)."""
        return self._previous

    @property
    def busy(self) -> bool:
        """Whether an update is being loaded or waits to be."""
        return not self._idle.is_set()

    def wait_idle(self, timeout_s: float | None = None) -> bool:
        """Block until no update is loading or waiting (or ``timeout_s`` passed); returns whether idle."""
        return self._idle.wait(timeout_s)

    def request_update(self, checkpoint_path: str) -> bool:
        """Load ``checkpoint_path`` in the background and swap it in if it fits.

        Returns True when its load starts now, False when it waits behind the load in progress
        (replacing any update that was waiting). Raises UpdateRefused for an empty path or a
        source that is not adaptable.
        """
        path = checkpoint_path.strip()
        if not path:
            raise UpdateRefused("model update with an empty checkpoint path ignored")
        policy = self._active.policy
        if not policy.adaptable:
            raise UpdateRefused(f"model update ignored: policy source {policy.name!r} is not adaptable")
        with self._lock:
            if self._loading:  # one load at a time; the newest waiting update wins
                self._pending = path
                return False
            self._loading = True
            self._idle.clear()
        threading.Thread(target=self._load_updates, args=(path,), name="model_update", daemon=True).start()
        return True

    def _load_updates(self, path: str) -> None:
        """Loader thread: load, check and warm up each update, then swap it in."""
        while True:
            try:
                self._load_one(os.path.abspath(path))
            except BaseException:
                self._finish_loading()  # a dead loader must not block every later update
                raise
            with self._lock:
                if self._pending is None:
                    self._loading = False
                    self._idle.set()
                    return
                path, self._pending = self._pending, None

    def _finish_loading(self) -> None:
        with self._lock:
            self._loading, self._pending = False, None
            self._idle.set()

    def _load_one(self, path: str) -> None:
        try:
            policy = self._load(path)
            current = self._active
            if policy.model_version == current.model_version:
                self._log.info(f"model update {path}: already serving model_version {current.model_version}")
                return
            self._check(policy, path)
            policy.warmup()  # the first calls are slow: not on the caller's time
        except Exception as exc:  # whatever breaks an update, the served policy stays
            self._log.error(f"model update {path} ignored, still serving {self._active.describe()}: {exc}")
            return
        with self._lock:
            previous = self._previous = self._active
            active = self._active = ServedPolicy(policy, path)
        self._log.info(f"now serving {active.describe()}; previous {previous.describe()} kept for ~/rollback")
        self._changed(active)

    def _changed(self, active: ServedPolicy) -> None:
        """Tell the owner what is served now; a failing callback is logged (the swap stands)."""
        if self._on_change is None:
            return
        try:
            self._on_change(active)
        except Exception as exc:  # e.g. a publisher gone at shutdown
            self._log.error(f"now serving {active.describe()}, but reporting it failed: {exc}")

    def rollback(self) -> tuple[bool, str]:
        """Swap back to the previous policy (called again: forward); returns (success, message)."""
        with self._lock:
            if self._previous is None:
                return False, f"no previous version; serving {self._active.checkpoint_path}"
            current = self._active
            self._active, self._previous = self._previous, current
            active = self._active
        self._changed(active)
        return True, f"now serving {active.describe()}; {current.describe()} kept as previous"
