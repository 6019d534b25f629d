"""``hybridvla serve``: our model served over openpi's websocket protocol, to several robots at once.

``hybridvla serve --checkpoint DIR [--embodiment franka ...] [--host 0.0.0.0] [--port 8000]``.
One machine with the accelerator serves the robots; each robot's inference node asks it with
``policy_source: remote`` (:mod:`hybridvla_ros.policies.remote`), as it would an openpi server.

The protocol (:mod:`hybridvla_ros.core.wire`): on connect the server sends a metadata dict
(``embodiments`` and, per embodiment, ``action_dim``, ``chunk_size``, ``step_period_s``,
``joint_names``, ``state_joints``, ``image_keys``, ``state_key``, ``prompt_key``; the first
embodiment's values also at the top level, as openpi clients read them). Each request is one
observation dict: ``observation/image`` (H, W, 3) uint8 RGB (a head trained on several cameras:
``observation/images/<camera>`` for each, as its metadata's ``image_keys`` list them),
``observation/state`` (D + E,) the head's ``joint_names`` then ``state_joints``, ``prompt``, and
``embodiment`` when several are served. Each reply: ``actions`` (chunk_size, D) float64 absolute
targets, ``confidence``, ``head_type``, ``model_version``, ``server_timing`` {``infer_ms``, ``batch_size``}. A request
that cannot be answered gets a text frame saying why (the connection stays open).
``GET /healthz`` answers HTTP 200.

Batching: requests from all connections go to one queue; one worker thread runs the model, and
takes every request waiting when it starts a forward, grouped by embodiment, into one batch (no
waiting to fill a batch: a lone robot is answered at batch 1, which gives exactly the in-process
builtin source's chunk for the same seed). torch batches; ONNX runtimes (a batch-1 graph) answer
a group one request after another.
"""
from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import http
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from hybridvla_ros.core.wire import MAX_MESSAGE_BYTES, WireError, packb, unpackb
from hybridvla_ros.model.policy import CONFIDENCE, DELTAS, EMBODIMENT, IMAGE, INSTRUCTION, PROPRIO, STATE
from hybridvla_ros.model.runner import RUNTIMES, ExportedRunner, PolicyRunner, load_runner
from hybridvla_ros.model.text import embed_instruction

IMAGE_KEY, STATE_KEY, PROMPT_KEY, EMBODIMENT_KEY = "observation/image", "observation/state", "prompt", "embodiment"
CAMERA_IMAGE_KEY = "observation/images/{camera}"  # one per camera, for a head that reads several


def image_keys(cameras: Sequence[str]) -> list[str]:
    """The request's image keys for a head that reads ``cameras``: ``observation/image`` for one
    camera (() ), else ``observation/images/<camera>`` for each, in that order."""
    return [CAMERA_IMAGE_KEY.format(camera=c) for c in cameras] if cameras else [IMAGE_KEY]


class RequestError(ValueError):
    """A request the server cannot answer; the text frame sent back says why."""


@dataclass(frozen=True)
class Request_:
    """One checked observation for one embodiment's head."""

    embodiment: str
    images: tuple[np.ndarray, ...]  # (H, W, 3) uint8 RGB each: one, or one per camera the head reads
    q: np.ndarray            # (D,) float64 joint positions
    state: np.ndarray        # (E,) float64 state joints
    prompt: str

    def model_images(self, runner: PolicyRunner | ExportedRunner) -> np.ndarray | tuple[np.ndarray, ...]:
        """The images as ``runner`` takes them: the one image for a one-camera head, else all of them."""
        return self.images if runner.cameras else self.images[0]


class ModelServer:
    """The loaded heads (one runner per embodiment) and the batched forward; no networking."""

    def __init__(self, runners: dict[str, PolicyRunner | ExportedRunner], confidence_samples: int = 5) -> None:
        if not runners:
            raise ValueError("embodiment: serve at least one")
        self.runners = runners
        self.confidence_samples = confidence_samples
        self.forwards = 0          # model calls made
        self.answered = 0          # requests answered

    def metadata(self) -> dict[str, Any]:
        """What every client is told on connect."""
        per = {name: {"action_dim": r.action_dim, "chunk_size": r.chunk_size, "step_period_s": r.control_period_s,
                      "joint_names": list(r.joint_names), "state_joints": list(r.state_joints),
                      "image_keys": image_keys(r.cameras), "cameras": list(r.cameras),
                      "state_key": STATE_KEY, "prompt_key": PROMPT_KEY,
                      "head_type": r.head_type, "model_version": r.model_version, "image_size": r.image_size}
               for name, r in self.runners.items()}
        first = next(iter(per.values()))
        return {**first, "embodiments": list(per), "per_embodiment": per, "server": "hybridvla serve"}

    def parse(self, message: object) -> Request_:
        """A request dict as a checked Request_; RequestError naming the field."""
        if not isinstance(message, dict):
            raise RequestError(f"a request is an observation dict, got {type(message).__name__}")
        name = message.get(EMBODIMENT_KEY, next(iter(self.runners)) if len(self.runners) == 1 else None)
        if name not in self.runners:
            raise RequestError(f"{EMBODIMENT_KEY}: {name!r} is not served (serving {list(self.runners)})")
        runner = self.runners[name]
        images = []
        for key in image_keys(runner.cameras):
            image = message.get(key)
            if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 \
                    or image.shape[2] != 3 or min(image.shape[:2]) < 1:
                got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
                raise RequestError(f"{key}: expected an (H, W, 3) uint8 RGB array, got {got}")
            images.append(image)
        D, E = runner.action_dim, len(runner.state_joints)
        try:
            state = np.asarray(message.get(STATE_KEY), dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise RequestError(f"{STATE_KEY}: expected {D + E} numbers") from None
        if state.shape != (D + E,) or not np.all(np.isfinite(state)):
            raise RequestError(f"{STATE_KEY}: expected {D + E} finite numbers ({list(runner.joint_names)} then "
                               f"{list(runner.state_joints)}), got {state.tolist()[:16]}")
        prompt = message.get(PROMPT_KEY, runner.default_instruction)
        if not isinstance(prompt, str):
            raise RequestError(f"{PROMPT_KEY}: expected a str, got {type(prompt).__name__}")
        return Request_(name, tuple(images), state[:D], state[D:], prompt)

    def answer(self, requests: Sequence[Request_]) -> list[dict[str, Any]]:
        """Replies for ``requests`` (one embodiment): one forward for all where the runner batches."""
        start = time.perf_counter()
        runner = self.runners[requests[0].embodiment]
        if len(requests) == 1 or not isinstance(runner, PolicyRunner):
            preds = [runner.predict(r.model_images(runner), r.q, r.prompt,
                                    num_samples=self.confidence_samples, state=r.state)
                     for r in requests]
            self.forwards += len(requests)
            out = [(p.actions, p.confidence) for p in preds]
        else:
            out = predict_batch(runner, requests, self.confidence_samples)
            self.forwards += 1
        infer_ms = (time.perf_counter() - start) * 1e3
        self.answered += len(requests)
        return [{"actions": actions, "confidence": float(confidence), "head_type": runner.head_type,
                 "model_version": runner.model_version, "embodiment": runner.embodiment,
                 "server_timing": {"infer_ms": infer_ms, "batch_size": len(requests)}}
                for actions, confidence in out]


def predict_batch(runner: PolicyRunner, requests: Sequence[Request_],
                  num_samples: int) -> list[tuple[np.ndarray, float]]:
    """One forward of ``runner``'s model for several observations: (actions (T, D), confidence) each."""
    images = [runner.image_input(r.model_images(runner))[1] for r in requests]  # ([K,] 3, S, S)
    embeddings = {p: torch.from_numpy(embed_instruction(p, runner.config.instruction_dim,
                                                        runner.config.instruction_encoder))
                  for p in {r.prompt for r in requests}}                                             # p -> (E,)
    q = np.stack([r.q for r in requests])                                                            # (B, D)
    batch: dict[str, object] = {EMBODIMENT: runner.embodiment, IMAGE: torch.stack(images),    # (B, [K,] 3, S, S)
                                PROPRIO: torch.from_numpy(q).float(),                               # (B, D)
                                INSTRUCTION: torch.stack([embeddings[r.prompt] for r in requests])}  # (B, E)
    if runner.state_joints:
        batch[STATE] = torch.from_numpy(np.stack([r.state for r in requests])).float()              # (B, E)
    with torch.inference_mode():
        out = runner.policy.predict(batch, num_samples=num_samples, generator=runner._generator,
                                    mode=runner.head_type)
    delta = out[DELTAS].double().numpy()                                                             # (B, T, D)
    confidence = out[CONFIDENCE].double().numpy()                                                    # (B,)
    return [(q[i][None, :] + delta[i], min(max(float(confidence[i]), 0.0), 1.0)) for i in range(len(requests))]


class Server:
    """The websocket side: metadata on connect, each request into the shared queue, replies back."""

    def __init__(self, model: ModelServer) -> None:
        self.model = model
        self.queue: asyncio.Queue[tuple[Request_, asyncio.Future[dict[str, Any]]]] = asyncio.Queue()
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self.metadata = packb(model.metadata())

    async def worker(self) -> None:
        """Takes what waits in the queue, one forward per embodiment, until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            items = [await self.queue.get()]
            while not self.queue.empty():
                items.append(self.queue.get_nowait())
            groups: dict[str, list[tuple[Request_, asyncio.Future[dict[str, Any]]]]] = {}
            for item in items:
                groups.setdefault(item[0].embodiment, []).append(item)
            for group in groups.values():
                try:
                    replies = await loop.run_in_executor(self.pool, self.model.answer, [r for r, _ in group])
                except Exception as exc:  # noqa: BLE001 - the model failing on one batch must not stop the server
                    for _, fut in group:
                        if not fut.done():
                            fut.set_exception(RequestError(f"the model failed: {type(exc).__name__}: {exc}"))
                    continue
                for (_, fut), reply in zip(group, replies):
                    if not fut.done():
                        fut.set_result(reply)

    async def handle(self, ws: ServerConnection) -> None:
        """One client: metadata, then request -> reply until it leaves."""
        await ws.send(self.metadata)
        loop = asyncio.get_running_loop()
        try:
            async for message in ws:
                try:
                    if isinstance(message, str):
                        raise RequestError("a request is a binary msgpack message, got a text frame")
                    request = self.model.parse(unpackb(message))
                    fut: asyncio.Future[dict[str, Any]] = loop.create_future()
                    await self.queue.put((request, fut))
                    await ws.send(packb(await fut))
                except (WireError, RequestError) as exc:
                    await ws.send(f"error: {exc}")
        except ConnectionClosed:
            pass


def healthz(connection: ServerConnection, request: Request) -> Response | None:
    """``GET /healthz``: HTTP 200; other paths go on to the websocket handshake."""
    if request.path == "/healthz":
        return connection.respond(http.HTTPStatus.OK, "OK\n")
    return None


async def run(model: ModelServer, host: str, port: int) -> None:
    """Serve until cancelled; prints the address (``serving ws://host:port``) once listening."""
    server = Server(model)
    worker = asyncio.create_task(server.worker())
    async with serve(server.handle, host, port, compression=None, max_size=MAX_MESSAGE_BYTES,
                     process_request=healthz, ping_interval=None) as ws_server:
        bound = ws_server.sockets[0].getsockname()[1] if ws_server.sockets else port
        print(f"serving ws://{host}:{bound} ({', '.join(model.runners)})", flush=True)
        try:
            await asyncio.Future()
        finally:
            worker.cancel()


def build_parser() -> argparse.ArgumentParser:
    """``hybridvla serve``'s arguments."""
    ap = argparse.ArgumentParser(prog="hybridvla serve", description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="checkpoint directory (model.safetensors, config.json)")
    ap.add_argument("--embodiment", action="append", default=None,
                    help="a head to serve (repeat for several; default: every head in the checkpoint)")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    ap.add_argument("--port", type=int, default=8000, help="port (0: any free one; the address is printed)")
    ap.add_argument("--runtime", default="torch", choices=RUNTIMES, help="torch batches requests; onnx and "
                                                                          "int8-ort answer them one by one")
    ap.add_argument("--head-type", default=None, help="inference mode (token, flow, coarse_to_fine, routed; "
                                                      "default: each head's own)")
    ap.add_argument("--seed", type=int, default=0, help="flow-noise seed (the in-process source uses 0)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--confidence-samples", type=int, default=5, help="flow samples per request for the confidence")
    return ap


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``hybridvla serve`` and ``python -m hybridvla_ros.serve``."""
    args = build_parser().parse_args(argv)
    from hybridvla_ros.model.checkpoint import read_checkpoint_config

    try:
        names = args.embodiment or [e["name"] for e in read_checkpoint_config(args.checkpoint)["embodiments"]]
        runners = {name: load_runner(args.checkpoint, name, args.runtime, num_threads=args.threads, seed=args.seed,
                                     mode=args.head_type) for name in names}
    except (ValueError, OSError, KeyError, TypeError) as exc:
        print(f"hybridvla serve: {exc}", file=sys.stderr)
        return 2
    for runner in runners.values():
        runner.warmup(2)
    try:
        asyncio.run(run(ModelServer(runners, args.confidence_samples), args.host, args.port))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
