"""``remote``: a policy server asked over openpi's websocket protocol (``hybridvla serve``, an openpi server).

The server sends a metadata dict when the connection opens; each request is one observation
dict, each reply a dict with ``actions`` (horizon, columns) and timing; an error comes back as
a text frame (:mod:`hybridvla_ros.core.wire`: msgpack, arrays as raw bytes, nothing unpickled).
:class:`RemoteMapping` is the embodiment file's mapping (:mod:`hybridvla_ros.params.remote_policy`):
our observation -> the server's dict, its reply -> absolute targets in our joint order.

Every way a server can fail gives a :class:`RemotePolicyError` (a PolicyInputError, so the
inference node logs the sentence, publishes no chunk and the action buffer holds) and never a
chunk: no reply within ``remote_deadline_s`` (the connection is dropped: a late reply must not
answer the next request), the server gone or refusing, an error text frame, bytes that are not
a message, a reply over ``remote_max_reply_bytes`` (refused unread), no ``actions``, the wrong
shape, NaN. After a transport failure the next try waits (``remote_backoff_s``: doubling up to
its second value; requests in between fail at once without touching the network), so a dead
server sees no request storm; the first good reply resets the wait. A server that reports no
confidence gets one from the agreement of successive chunks
(:class:`hybridvla_ros.core.chunk_agreement.ChunkAgreement`).
"""
from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import cv2
import numpy as np
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from hybridvla_ros.core.chunk_agreement import ChunkAgreement
from hybridvla_ros.core.wire import WireError, packb, unpackb
from hybridvla_ros.params.embodiment import EmbodimentParams
from hybridvla_ros.params.inference import InferenceParams
from hybridvla_ros.params.remote_policy import IGNORED_COLUMN, RemotePolicyParams
from hybridvla_ros.policies.base import PolicyChunk, PolicyInputError, PolicyObservation
from hybridvla_ros.policies.registry import register_policy

HEAD_TYPE = "remote"


class RemotePolicyError(PolicyInputError):
    """The server gave no usable chunk for this observation; the message says why (the buffer holds)."""


def resize_with_pad(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``image`` (H, W, 3) uint8 scaled to fit (height, width) with its aspect kept, centred on black
    (openpi's ``image_tools.resize_with_pad``); the same array when it already has that size."""
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    ratio = max(h / height, w / width)
    new_h, new_w = max(1, int(h / ratio)), max(1, int(w / ratio))
    resized = cv2.resize(np.ascontiguousarray(image), (new_w, new_h), interpolation=cv2.INTER_AREA)
    out = np.zeros((height, width, 3), dtype=np.uint8)                                  # (height, width, 3)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    out[top:top + new_h, left:left + new_w] = resized
    return out


def resize_to(image: np.ndarray, height: int, width: int, how: str) -> np.ndarray:
    """``image`` (H, W, 3) uint8 as a (height, width, 3) one: ``how`` "pad" (:func:`resize_with_pad`) or
    "stretch" (the whole image squeezed to that size with cv2.INTER_AREA, as exported demonstrations are)."""
    if how == "pad":
        return resize_with_pad(image, height, width)
    if image.shape[:2] == (height, width):
        return image
    return cv2.resize(np.ascontiguousarray(image), (width, height), interpolation=cv2.INTER_AREA)


class RemoteMapping:
    """The robot's observation as the server's request dict, the server's reply as our chunk.

    ``robot``: the parameter file's joints (``joint_names``, ``state_joints``), ``chunk_size``,
    control period and ``max_velocity`` (the agreement scale); ``remote``: the mapping keys.
    ValueError naming the parameter for a mapping that contradicts the robot.
    """

    def __init__(self, robot: EmbodimentParams, remote: RemotePolicyParams) -> None:
        self.url = remote.remote_url
        self.joint_names = tuple(robot.joint_names)
        known = set(robot.joint_names) | set(robot.state_joints)
        layout = remote.remote_state_layout or (*robot.joint_names, *robot.state_joints)
        unknown = [n for n in layout if n not in known]
        if unknown or len(set(layout)) != len(layout):
            raise ValueError(f"remote_state_layout: {list(layout)} must name each of joint_names / state_joints "
                             f"at most once (unknown: {unknown})")
        self.state_layout = tuple(layout)
        self.state_joints = tuple(n for n in robot.state_joints if n in layout)  # the observed-only joints sent
        columns = remote.remote_action_joints or tuple(robot.joint_names)
        named = [c for c in columns if c != IGNORED_COLUMN]
        if sorted(named) != sorted(robot.joint_names):
            raise ValueError(f"remote_action_joints: {list(columns)} must name every joint of joint_names "
                             f"{list(robot.joint_names)} once ('{IGNORED_COLUMN}' for a column to ignore)")
        self.columns = tuple(columns)
        self._take = np.array([self.columns.index(n) for n in robot.joint_names])  # (D,) server column per joint
        for name, joints in (("remote_relative_joints", remote.remote_relative_joints),
                             ("remote_scaled_joints", remote.remote_scaled_joints)):
            if not set(joints) <= set(robot.joint_names) | (set(robot.state_joints) if "scaled" in name else set()):
                raise ValueError(f"{name}: {list(joints)} are not all in joint_names {list(robot.joint_names)}")
        self.relative = np.array([n in remote.remote_relative_joints for n in robot.joint_names])  # (D,) bool
        scales = dict(zip(remote.remote_scaled_joints, remote.remote_joint_scales))
        self.action_scale = np.array([scales.get(n, 1.0) for n in robot.joint_names])        # (D,)
        self.state_scale = np.array([scales.get(n, 1.0) for n in self.state_layout])         # (S,)
        self.cameras = tuple(remote.remote_cameras) or (robot.camera_name,)
        unknown = [c for c in self.cameras if c not in robot.cameras]
        if unknown:
            raise ValueError(f"remote_cameras: {unknown} are not the robot's cameras {list(robot.cameras)} "
                             "(camera_name, extra_cameras)")
        self.image_keys = tuple(remote.remote_image_keys)
        self.image_size = tuple(remote.remote_image_size)
        self.image_resize = remote.remote_image_resize
        self.state_key, self.prompt_key = remote.remote_state_key, remote.remote_prompt_key
        self.embodiment_key, self.embodiment = remote.remote_embodiment_key, robot.embodiment
        self.horizon_start = remote.remote_horizon_start
        self.chunk_size = robot.chunk_size
        self.step_period_s = remote.remote_step_period_s or robot.control_period_s
        self.agreement_scale = np.asarray(robot.max_velocity) * robot.control_period_s * remote.remote_agreement_periods

    def request(self, obs: PolicyObservation) -> dict[str, Any]:
        """The server's observation dict for ``obs`` (read in this mapping's joint orders)."""
        values = dict(zip(obs.joint_names, obs.joint_positions.tolist()))
        values.update(zip(obs.state_joints, obs.state.tolist()))
        state = np.array([values[n] for n in self.state_layout]) / self.state_scale   # (S,) float64
        out: dict[str, Any] = {self.state_key: state, self.prompt_key: obs.task}
        if self.embodiment_key:
            out[self.embodiment_key] = self.embodiment
        for camera, key in zip(self.cameras, self.image_keys):
            image = obs.image(camera)                                                    # (H, W, 3) uint8
            out[key] = (resize_to(image, self.image_size[0], self.image_size[1], self.image_resize)
                        if self.image_size else np.ascontiguousarray(image))
        return out

    def actions(self, reply: object, obs: PolicyObservation) -> tuple[np.ndarray, float | None]:
        """Our (chunk_size, D) absolute targets in ``joint_names`` order from ``reply``, and the
        server's confidence (None when it gives none); RemotePolicyError saying what is wrong."""
        if not isinstance(reply, Mapping) or "actions" not in reply:
            got = sorted(map(str, reply))[:10] if isinstance(reply, Mapping) else type(reply).__name__
            raise RemotePolicyError(f"remote {self.url}: the reply has no 'actions' (got {got})")
        try:
            raw = np.asarray(reply["actions"], dtype=np.float64)
        except (TypeError, ValueError):
            raise RemotePolicyError(f"remote {self.url}: 'actions' is not an array of numbers") from None
        need = self.horizon_start + self.chunk_size
        if raw.ndim != 2 or raw.shape[1] != len(self.columns) or raw.shape[0] < need:
            raise RemotePolicyError(f"remote {self.url}: 'actions' has shape {raw.shape}, expected (>= {need}, "
                                    f"{len(self.columns)}) (remote_horizon_start + chunk_size rows, one column per "
                                    "remote_action_joints)")
        if not np.all(np.isfinite(raw)):
            row = int(np.argwhere(~np.isfinite(raw))[0, 0])
            raise RemotePolicyError(f"remote {self.url}: 'actions' is not finite at row {row}: {raw[row].tolist()}")
        rows = raw[self.horizon_start:need][:, self._take] * self.action_scale         # (T, D)
        q = np.asarray(obs.joint_positions, dtype=np.float64)                            # (D,)
        rows = np.where(self.relative[None, :], q[None, :] + rows, rows)                  # (T, D) absolute
        confidence = reply.get("confidence")
        if isinstance(confidence, (int, float, np.floating, np.integer)) and not isinstance(confidence, bool) \
                and math.isfinite(float(confidence)) and 0.0 <= float(confidence) <= 1.0:
            return rows, float(confidence)
        return rows, None


class RemotePolicy:
    """A :class:`~hybridvla_ros.policies.base.Policy` answered by a server over openpi's protocol.

    ``clock`` is what the backoff is timed by.
    """

    name = "remote"
    adaptable = False
    inpaints = False  # the server makes the chunk; PolicyObservation.prefix is not sent
    plan_topics: tuple[str, ...] = ()
    model_version = 0

    def __init__(self, mapping: RemoteMapping, remote: RemotePolicyParams,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.mapping = mapping
        self.url = remote.remote_url
        self.deadline_s = remote.remote_deadline_s
        self.connect_timeout_s = remote.remote_connect_timeout_s
        self.backoff_first_s, self.backoff_most_s = remote.remote_backoff_s
        self.max_reply_bytes = remote.remote_max_reply_bytes
        self.joint_names: tuple[str, ...] = mapping.joint_names
        self.state_joints: tuple[str, ...] = mapping.state_joints
        self.cameras: tuple[str, ...] = mapping.cameras
        self.action_dim = len(self.joint_names)
        self.chunk_size = mapping.chunk_size
        self.agreement = ChunkAgreement(mapping.agreement_scale)
        self.metadata: dict[str, Any] | None = None
        self.counters: Counter[str] = Counter()  # requests, chunks, and each failure kind
        self._clock = clock
        self._ws: ClientConnection | None = None
        self._failures = 0
        self._retry_at = -math.inf
        self._last_error = ""

    # --- connection
    def _fail(self, kind: str, message: str, transport: bool) -> RemotePolicyError:
        """Count ``kind``; after a transport failure drop the connection and back off. The error to raise."""
        self.counters[kind] += 1
        if transport:
            self._close()
            self._failures += 1
            wait = min(self.backoff_first_s * 2 ** (self._failures - 1), self.backoff_most_s)
            self._retry_at = self._clock() + wait
            message += f"; next try in {wait:.1f} s"
        self._last_error = message
        return RemotePolicyError(f"remote {self.url}: {message}")

    def _close(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            try:
                ws.close()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail in any way; it is gone either way
                pass

    def _connect(self) -> ClientConnection:
        if self._ws is not None:
            return self._ws
        wait = self._retry_at - self._clock()
        if wait > 0:
            self.counters["backoff"] += 1
            raise RemotePolicyError(f"remote {self.url}: not asked, waiting {wait:.1f} s more after: "
                                    f"{self._last_error}")
        try:
            ws = connect(self.url, compression=None, max_size=self.max_reply_bytes, open_timeout=self.connect_timeout_s,
                         close_timeout=1.0, ping_interval=None, proxy=None, legacy=True)  # a plain connection
            assert isinstance(ws, ClientConnection)
        except Exception as exc:  # noqa: BLE001 - refused, unresolvable, handshake, timeout: all "cannot connect"
            raise self._fail("connect_failed", f"cannot connect ({type(exc).__name__}: {exc})",
                             transport=True) from None
        self._ws = ws
        try:
            first = ws.recv(timeout=self.connect_timeout_s)
            if isinstance(first, str):
                raise WireError(f"a text frame: {first[-200:]!r}")
            metadata = unpackb(first, max_bytes=self.max_reply_bytes)
        except Exception as exc:  # noqa: BLE001 - no metadata, garbage, a closed socket: the server is not usable
            raise self._fail("bad_metadata", f"no metadata dict from the server ({type(exc).__name__}: {exc})",
                             transport=True) from None
        if not isinstance(metadata, dict):
            raise self._fail("bad_metadata", f"the server's metadata is a {type(metadata).__name__}, not a dict",
                             transport=True)
        action_dim = metadata.get("action_dim")
        if isinstance(action_dim, int) and action_dim != len(self.mapping.columns):
            raise self._fail("bad_metadata", f"the server's action_dim is {action_dim}, remote_action_joints names "
                                             f"{len(self.mapping.columns)} columns", transport=True)
        self.metadata = metadata
        return ws

    # --- the protocol
    def on_plan(self, topic: str, plan: PolicyChunk) -> None:
        """Never called: this source reads no plans; ValueError."""
        raise ValueError(f"plan_topics: the remote policy reads no plans, got one on {topic!r}")

    def infer(self, obs: PolicyObservation) -> PolicyChunk:
        """The server's chunk for ``obs``; RemotePolicyError (no chunk) when the server gives none in time."""
        request = packb(self.mapping.request(obs))  # a camera it needs missing: PolicyInputError from obs.image
        start = time.perf_counter()
        ws = self._connect()
        self.counters["requests"] += 1
        try:
            ws.send(request)
            data = ws.recv(timeout=max(self.deadline_s - (time.perf_counter() - start), 1e-3))
        except TimeoutError:
            raise self._fail("deadline", f"no reply within {self.deadline_s:.2f} s", transport=True) from None
        except ConnectionClosed as exc:
            reason = f"code {exc.rcvd.code}: {exc.rcvd.reason or 'no reason'}" if exc.rcvd else "no close frame"
            if exc.sent is not None and exc.sent.code == 1009:
                raise self._fail("oversized", f"the reply is over remote_max_reply_bytes {self.max_reply_bytes}",
                                 transport=True) from None
            raise self._fail("connection_lost", f"the server closed the connection ({reason})", transport=True) \
                from None
        except Exception as exc:  # noqa: BLE001 - a socket error of any kind: the connection is unusable
            raise self._fail("connection_lost", f"connection failed ({type(exc).__name__}: {exc})", transport=True) \
                from None
        latency_s = time.perf_counter() - start
        if isinstance(data, str):
            last = (data.strip().splitlines() or ["(empty)"])[-1][-300:]  # a traceback's last line names the error
            raise self._fail("server_error", f"the server answered an error: {last}", transport=True)
        try:
            reply = unpackb(data, max_bytes=self.max_reply_bytes)
            actions, confidence = self.mapping.actions(reply, obs)
        except WireError as exc:
            raise self._fail("garbage", f"the reply is not a message ({exc})", transport=False) from None
        except RemotePolicyError as exc:
            self.counters["bad_reply"] += 1
            raise exc
        self._failures, self._retry_at = 0, -math.inf
        start_s = obs.stamp_s + self.mapping.horizon_start * self.mapping.step_period_s
        agreed = self.agreement.update(actions, start_s, self.mapping.step_period_s)
        self.counters["chunks"] += 1
        return PolicyChunk(actions=actions, start_s=start_s, step_period_s=self.mapping.step_period_s,
                           confidence=agreed if confidence is None else confidence, latency_s=latency_s,
                           head_type=HEAD_TYPE, model_version=0)

    def warmup(self) -> None:
        """Connect and read the server's metadata once, if it is there (a server down is not an error
        at start: each request tries again after the backoff)."""
        try:
            self._connect()
        except RemotePolicyError:
            pass

    def reset(self) -> None:
        """A new episode: the next chunk has no previous one to agree with."""
        self.agreement.reset()

    def close(self) -> None:
        """Close the connection."""
        self._close()


def remote_params(params: EmbodimentParams) -> RemotePolicyParams:
    """The remote keys of the inference section (their defaults when the schema does not carry them)."""
    return params if isinstance(params, RemotePolicyParams) else RemotePolicyParams()


@register_policy("remote")
def make_remote_policy(params: InferenceParams, checkpoint_path: str) -> RemotePolicy:
    """A server at ``remote_url`` mapped by the ``remote_*`` keys; ``checkpoint_path`` is not read.
    ValueError naming the parameter for a mapping that contradicts the robot."""
    remote = remote_params(params)
    return RemotePolicy(RemoteMapping(params, remote), remote)

