"""The LeRobot sidecar serves a real LeRobot ACT policy over openpi's websocket protocol (issue 14, item 2).

A small ACT policy (one 96x96 camera, state and action dim 8, chunk 10, made-up dataset statistics) is
made and saved with LeRobot's own classes inside the LeRobot environment (.venv-lerobot, made by
scripts/setup_lerobot.sh); the sidecar serves it in its own process; this side (the ROS environment,
Python 3.11) talks to it with the websockets client and core/wire.py only. Without .venv-lerobot the
tests skip, except in CI (CI=true), where that is a failure: CI must build it from our own files.

Measured: ACT's time per chunk on the CPU (p50 of 20 requests) is printed (pytest -s) and in the README.
"""
from __future__ import annotations

import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest

from hybridvla_ros.core import wire

pytestmark = [pytest.mark.e2e, pytest.mark.lerobot]

ROOT = Path(__file__).resolve().parents[2]
LEROBOT_PY = ROOT / ".venv-lerobot" / "bin" / "python"
STARTUP_LIMIT_S = 600.0  # a failsafe for a sidecar that never comes up, not a timing: readiness is its line
CAM, H, W, DIM, CHUNK = "observation.images.front", 96, 96, 8, 10
ACTION_MEAN = np.linspace(-1.0, 1.0, DIM)

MAKE_ACT = f"""
import sys
import torch
from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot.policies.act.configuration_act import ACTConfig
from lerobot.policies.act.modeling_act import ACTPolicy
from lerobot.policies.factory import make_pre_post_processors

out = sys.argv[1]
torch.manual_seed(0)
cfg = ACTConfig(
    input_features={{"{CAM}": PolicyFeature(type=FeatureType.VISUAL, shape=(3, {H}, {W})),
                    "observation.state": PolicyFeature(type=FeatureType.STATE, shape=({DIM},))}},
    output_features={{"action": PolicyFeature(type=FeatureType.ACTION, shape=({DIM},))}},
    chunk_size={CHUNK}, n_action_steps={CHUNK}, dim_model=64, n_heads=4, dim_feedforward=128,
    n_encoder_layers=1, n_decoder_layers=1, n_vae_encoder_layers=1, latent_dim=8,
    pretrained_backbone_weights=None, device="cpu")
stats = {{
    "{CAM}": {{"mean": torch.full((3, 1, 1), 0.5), "std": torch.full((3, 1, 1), 0.25)}},
    "observation.state": {{"mean": torch.linspace(-0.5, 0.5, {DIM}), "std": torch.full(({DIM},), 0.3)}},
    "action": {{"mean": torch.linspace(-1.0, 1.0, {DIM}), "std": torch.full(({DIM},), 0.2)}},
}}
ACTPolicy(cfg).save_pretrained(out)
pre, post = make_pre_post_processors(cfg, dataset_stats=stats)
pre.save_pretrained(out)
post.save_pretrained(out)
print("made", out)
"""


def _lerobot_python() -> Path:
    from conftest import wait_for_lerobot_env

    failed = wait_for_lerobot_env()
    if failed:
        pytest.fail(failed)
    if LEROBOT_PY.exists():
        return LEROBOT_PY
    why = f"{LEROBOT_PY} is missing: run scripts/setup_lerobot.sh to make the LeRobot environment"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"in CI the LeRobot environment must be built: {why}")
    pytest.skip(why)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Sidecar:
    """The sidecar process; ``url`` once it printed that it serves."""

    def __init__(self, policy_dir: Path, log: Path) -> None:
        port = _free_port()
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
        env.pop("VIRTUAL_ENV", None)
        self.proc = subprocess.Popen(
            [str(_lerobot_python()), "-m", "hybridvla_ros.lerobot_sidecar", "--policy-dir", str(policy_dir),
             "--port", str(port), "--device", "cpu", "--threads", "2"],
            cwd=str(ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.log = log
        threading.Thread(target=self._pump, daemon=True).start()
        self.url = self._wait_serving()
        self.port = port

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        with open(self.log, "w") as f:
            for line in self.proc.stdout:
                f.write(line)
                f.flush()
                self.lines.put(line)
        self.lines.put("")  # the process ended

    def _wait_serving(self) -> str:
        end = time.monotonic() + STARTUP_LIMIT_S
        while time.monotonic() < end:
            line = self.lines.get(timeout=max(0.1, end - time.monotonic()))
            if line == "":
                raise AssertionError(f"the sidecar exited ({self.proc.wait()}): {self.log.read_text()[-3000:]}")
            m = re.search(r"serving \S+ on (ws://\S+)", line)
            if m:
                return m.group(1)
        raise AssertionError(f"the sidecar did not come up: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def make_policy_dir(tmp_path_factory: pytest.TempPathFactory, name: str, script_text: str) -> Path:
    """A LeRobot policy directory made by ``script_text`` (run with the LeRobot environment's Python,
    the output directory as its argument); its config and processor files checked."""
    py = _lerobot_python()
    out = tmp_path_factory.mktemp(name) / "policy"
    script = out.parent / "make_policy.py"
    script.write_text(script_text)
    done = subprocess.run([str(py), str(script), str(out)], capture_output=True, text=True, cwd=str(ROOT),
                          env=dict(os.environ, HF_HUB_OFFLINE="1"), timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    for made in ("config.json", "policy_preprocessor.json", "policy_postprocessor.json"):
        assert (out / made).is_file(), made
    return out


@pytest.fixture(scope="module")
def act_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_policy_dir(tmp_path_factory, "act", MAKE_ACT)


@pytest.fixture(scope="module")
def sidecar(act_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sidecar]:
    proc = Sidecar(act_dir, tmp_path_factory.mktemp("sidecar") / "sidecar.log")
    yield proc
    proc.stop()


def _connect(url: str) -> Any:
    from websockets.sync.client import connect

    return connect(url, compression=None, max_size=wire.MAX_MESSAGE_BYTES, open_timeout=60)


def _ask(ws: Any, request: dict) -> Any:
    ws.send(wire.packb(request))
    reply = ws.recv(timeout=120)
    return reply if isinstance(reply, str) else wire.unpackb(reply)


def _observation(seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    return {CAM: rng.integers(0, 256, (H, W, 3), dtype=np.uint8),
            "observation.state": rng.normal(0.0, 0.3, DIM).astype(np.float32), "task": "pick up the cube"}


def test_metadata_actions_determinism_and_timing(sidecar: Sidecar) -> None:
    with _connect(sidecar.url) as ws:
        meta = wire.unpackb(ws.recv(timeout=60))
        assert meta["policy_type"] == "act"
        assert meta["image_keys"] == [CAM] and meta["state_key"] == "observation.state"
        assert meta["input_features"][CAM] == {"type": "VISUAL", "shape": [3, H, W]}
        assert meta["input_features"]["observation.state"] == {"type": "STATE", "shape": [DIM]}
        assert (meta["action_dim"], meta["chunk_size"], meta["n_action_steps"]) == (DIM, CHUNK, CHUNK)
        assert meta["action_horizon"] == CHUNK and meta["n_obs_steps"] == 1
        assert "fps" in meta

        obs = _observation(0)
        first = _ask(ws, obs)
        assert isinstance(first, dict), first
        actions = first["actions"]
        assert actions.shape == (CHUNK, DIM) and actions.dtype == np.float32 and np.all(np.isfinite(actions))
        # unnormalized with the processor's statistics: a fresh ACT's outputs sit near the action mean
        assert np.all(np.abs(actions.mean(axis=0) - ACTION_MEAN) < 1.0), actions
        assert {"preprocess_ms", "model_ms", "postprocess_ms", "infer_ms"} <= set(first["policy_timing"])
        # eval mode (no dropout, ACT's VAE latent is zero at inference): the same request, the same actions
        again = _ask(ws, obs)
        np.testing.assert_array_equal(again["actions"], actions)
        # the same image as CxHxW float in [0, 1] is the same observation
        as_float = dict(obs, **{CAM: obs[CAM].transpose(2, 0, 1).astype(np.float32) / 255.0})
        np.testing.assert_allclose(_ask(ws, as_float)["actions"], actions, atol=1e-5)
        # another observation, other actions: the model runs on each request
        assert not np.allclose(_ask(ws, _observation(1))["actions"], actions)
        # reset clears the history and is acknowledged
        assert _ask(ws, {"reset": True}) == {"reset": True}

        times = []
        for i in range(20):
            t0 = time.perf_counter()
            reply = _ask(ws, _observation(100 + i))
            times.append(time.perf_counter() - t0)
            assert isinstance(reply, dict) and reply["actions"].shape == (CHUNK, DIM)
        model_ms = reply["policy_timing"]["model_ms"]
        p50, p90 = np.percentile(times, 50) * 1e3, np.percentile(times, 90) * 1e3
        print(f"\nACT ({H}x{W} camera, state/action {DIM}, chunk {CHUNK}) on the CPU, 2 threads: "
              f"round trip p50 {p50:.1f} ms, p90 {p90:.1f} ms over 20 requests (last model_ms {model_ms:.1f})")


@pytest.mark.parametrize("bad, says", [
    ({"observation.state": np.zeros(DIM, np.float32)}, "missing observation key"),
    ({CAM: np.zeros((H, W, 3), np.uint8), "observation.state": np.zeros(3, np.float32)}, "observation.state"),
    ({CAM: np.zeros((H, W, 3), np.uint8), "observation.state": np.full(DIM, np.nan, np.float32)}, "NaN"),
    ({CAM: np.zeros((480, 640, 3), np.uint8), "observation.state": np.zeros(DIM, np.float32)}, "resize"),
    ({CAM: np.zeros((H, W, 3), np.uint8), "observation.state": np.zeros(DIM, np.float32), "task": 3}, "task"),
    ([1, 2, 3], "must be a dict"),
])
def test_a_bad_request_gets_an_error_frame_and_the_server_goes_on(sidecar: Sidecar, bad: Any, says: str) -> None:
    with _connect(sidecar.url) as ws:
        wire.unpackb(ws.recv(timeout=60))
        reply = _ask(ws, bad)
        assert isinstance(reply, str) and says in reply, reply
        assert isinstance(_ask(ws, _observation(2)), dict)  # the same connection still serves


def test_garbage_bytes_and_text_frames_get_error_frames(sidecar: Sidecar) -> None:
    with _connect(sidecar.url) as ws:
        wire.unpackb(ws.recv(timeout=60))
        ws.send(b"\xc1\xff garbage, not msgpack")
        assert "not a msgpack message" in ws.recv(timeout=60)
        ws.send("a text frame")
        assert "binary" in ws.recv(timeout=60)
        # an array that claims more bytes than it carries is refused, not read past its end
        short = {b"__ndarray__": True, b"data": b"\0" * 4, b"dtype": "<f4", b"shape": [DIM]}
        ws.send(msgpack.packb({"observation.state": short}, use_bin_type=True))
        assert "bytes" in ws.recv(timeout=60)
        # and an object array (what pickle would carry) is refused before anything is decoded
        pickled = {b"__ndarray__": True, b"data": b"\x80\x04N.", b"dtype": "|O", b"shape": [1]}
        ws.send(msgpack.packb({"observation.state": pickled}, use_bin_type=True))
        assert "not numeric" in ws.recv(timeout=60)
        assert isinstance(_ask(ws, _observation(3)), dict)
    with _connect(sidecar.url) as ws:  # and a new connection is served too
        assert wire.unpackb(ws.recv(timeout=60))["policy_type"] == "act"
        assert isinstance(_ask(ws, _observation(4)), dict)
    assert sidecar.proc.poll() is None


def test_healthz(sidecar: Sidecar) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{sidecar.port}/healthz", timeout=60) as r:
        assert r.status == 200


def test_a_directory_that_is_not_a_policy_is_refused_in_one_line(tmp_path: Path) -> None:
    py = _lerobot_python()
    done = subprocess.run([str(py), "-m", "hybridvla_ros.lerobot_sidecar", "--policy-dir", str(tmp_path),
                           "--port", "0"], capture_output=True, text=True, cwd=str(ROOT), timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 2
    assert "is not a LeRobot policy directory" in done.stderr and len(done.stderr.strip().splitlines()) == 1


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-s", "-q"]))
