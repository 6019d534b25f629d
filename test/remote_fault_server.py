"""A policy server over openpi's protocol that misbehaves on request, for the remote source's tests.

``python test/remote_fault_server.py PORT MODE_FILE HORIZON ACTION_DIM``: serves on 127.0.0.1:PORT,
prints ``serving ws://127.0.0.1:PORT`` when listening. Before each reply it reads MODE_FILE:

- ``ok``: ``actions`` (HORIZON, ACTION_DIM) = the state's first ACTION_DIM values + 0.001 * row;
- ``slow S``: the same, after S seconds;
- ``nan``, ``shape`` (one column short), ``garbage`` (bytes that are not msgpack), ``oversized``
  (a reply of 8 MiB), ``error`` (a text frame, as openpi's server sends a traceback), ``noactions``.

Every request is appended to MODE_FILE + ".log" (one line each), so tests can count them.
:class:`FaultServer` runs it from a test.
"""
from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from typing import Any

import numpy as np
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

sys.path.insert(0, __file__.rsplit("/test/", 1)[0])
from hybridvla_ros.core.wire import packb, unpackb  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FaultServer:
    """test/remote_fault_server.py in its own process; ``mode`` sets how it answers the next requests."""

    def __init__(self, tmp_path: Any, horizon: int, dim: int) -> None:
        self.port = free_port()
        self.mode_file = str(tmp_path / "mode")
        self.horizon, self.dim = horizon, dim
        self.mode("ok")
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, str(self.port), self.mode_file, str(self.horizon),
                                      str(self.dim)], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # readiness: it prints once it listens
        assert line.startswith("serving"), line

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def mode(self, mode: str) -> None:
        with open(self.mode_file, "w") as f:
            f.write(mode)

    def requests(self, mode: str | None = None) -> int:
        """Requests answered so far (in ``mode`` only, when given)."""
        try:
            with open(self.mode_file + ".log") as f:
                return sum(1 for line in f if mode is None or line.strip() == mode)
        except FileNotFoundError:
            return 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


def main() -> None:
    port, mode_file, horizon, dim = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

    async def handle(ws: ServerConnection) -> None:
        await ws.send(packb({"action_dim": dim, "chunk_size": horizon, "server": "fault"}))
        try:
            async for message in ws:
                with open(mode_file) as f:
                    mode, *arg = f.read().split()
                with open(mode_file + ".log", "a") as f:
                    f.write(mode + "\n")
                obs = unpackb(message)
                state = np.asarray(obs["observation/state"], dtype=np.float64)
                actions = state[:dim][None, :] + 0.001 * np.arange(horizon)[:, None]  # (H, D)
                if mode == "slow":
                    await asyncio.sleep(float(arg[0]))
                if mode == "nan":
                    actions[horizon // 2, 0] = np.nan
                if mode == "shape":
                    actions = actions[:, :-1]
                if mode == "garbage":
                    await ws.send(b"\xc1\xc1 not msgpack")
                elif mode == "oversized":
                    await ws.send(packb({"actions": actions, "pad": np.zeros(8 * 1024 * 1024, dtype=np.uint8)}))
                elif mode == "error":
                    await ws.send("Traceback (most recent call last):\n  ...\nRuntimeError: CUDA out of memory")
                elif mode == "noactions":
                    await ws.send(packb({"server_timing": {"infer_ms": 1.0}}))
                else:
                    await ws.send(packb({"actions": actions, "server_timing": {"infer_ms": 1.0}}))
        except ConnectionClosed:
            pass

    async def run() -> None:
        async with serve(handle, "127.0.0.1", port, compression=None, max_size=None, ping_interval=None):
            print(f"serving ws://127.0.0.1:{port}", flush=True)
            await asyncio.Future()

    asyncio.run(run())


if __name__ == "__main__":
    main()
