"""Serve a LeRobot policy from a local directory over openpi's websocket protocol (the LeRobot sidecar).

Runs INSIDE the LeRobot environment made by ``scripts/setup_lerobot.sh`` (Python >= 3.12, lerobot,
the torch it pins), never in the ROS 2 environment::

    .venv-lerobot/bin/python -m hybridvla_ros.lerobot_sidecar --policy-dir DIR --port 8000 [--device cpu]

The policy is loaded with LeRobot's own factory and processors, nothing from a hub:
``PreTrainedConfig.from_pretrained(DIR)``, ``get_policy_class(cfg.type).from_pretrained(DIR, config=cfg)``
and ``make_pre_post_processors(cfg, pretrained_path=DIR)`` (the normalization statistics live in the
processor files). The wire is openpi's (``hybridvla_ros/core/wire.py``: msgpack, numpy arrays as raw
bytes, nothing is ever unpickled; LeRobot's own async-inference gRPC unpickles what arrives, so it is
not used):

- on connect the server sends one metadata dict: ``policy_type``, ``input_features`` (key -> type and
  shape), ``image_keys``, ``state_key``, ``action_dim``, ``chunk_size``, ``n_action_steps``,
  ``action_horizon`` (the T of each reply), ``n_obs_steps``, ``fps`` (or None), ``device``;
- each request is one observation dict with LeRobot's feature keys: ``observation.images.<cam>`` as
  HxWx3 uint8 or CxHxW float in [0, 1] (the shape the metadata gives, no resizing here),
  ``observation.state`` (float, finite), ``task`` (text, optional); ``reset: True`` clears this
  connection's observation history (a request with only ``reset`` is answered ``{"reset": True}``);
- each reply is ``{"actions": (T, D) float32, "policy_timing": {...}, "server_timing": {...}}`` in the
  dataset's units (the postprocessor unnormalizes);
- a request that cannot be served gets one text frame with a sentence saying why; the connection and
  the server go on serving. ``GET /healthz`` answers 200.

Policies that read an observation history (Diffusion's ``n_obs_steps``) get it per connection: the
last ``n_obs_steps`` preprocessed observations, the first one repeated until there are enough (as
LeRobot's own ``populate_queues`` does). ``predict_action_chunk`` runs the model on every request.

Imports only the standard library, numpy, msgpack (through core/wire.py), websockets, torch and lerobot.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from collections import deque
from http import HTTPStatus
from pathlib import Path
from typing import Any

import numpy as np

try:
    from hybridvla_ros.core import wire
except ImportError:  # run as a file with the repository not on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from hybridvla_ros.core import wire

LOG = logging.getLogger("lerobot_sidecar")
VISUAL, STATE, ENV = "VISUAL", "STATE", "ENV"
PREPROCESSOR_FILE = "policy_preprocessor.json"


class RequestError(ValueError):
    """A request this policy cannot serve; the sentence goes back to the client as a text frame."""


def _feature_type(feature: Any) -> str:
    kind = getattr(feature, "type", "")
    return str(getattr(kind, "name", kind))


def _find_fps(policy_dir: Path) -> float | None:
    """The control rate the policy was trained at, where the checkpoint says it (LeRobot's train_config.json)."""
    path = policy_dir / "train_config.json"
    if not path.is_file():
        return None
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    for section in ("env", "dataset"):
        value = (cfg.get(section) or {}).get("fps") if isinstance(cfg.get(section), dict) else None
        if isinstance(value, (int, float)) and value > 0:
            return float(value)
    return None


class LeRobotPolicyServer:
    """One LeRobot policy, its processors and the per-connection observation history."""

    def __init__(self, policy_dir: str | Path, device: str | None = None, warmup: bool = True) -> None:
        import torch
        from lerobot.configs.policies import PreTrainedConfig
        from lerobot.policies.factory import get_policy_class, make_pre_post_processors

        self.torch = torch
        self.policy_dir = Path(policy_dir).resolve()
        if not (self.policy_dir / "config.json").is_file():
            raise FileNotFoundError(f"{self.policy_dir} is not a LeRobot policy directory (no config.json)")
        cfg = PreTrainedConfig.from_pretrained(str(self.policy_dir))
        if device:
            cfg.device = device
        self.cfg = cfg
        self.device = str(cfg.device)
        self.policy = get_policy_class(cfg.type).from_pretrained(str(self.policy_dir), config=cfg)
        self.policy.to(self.device)
        self.policy.eval()
        self.preprocessor, self.postprocessor = make_pre_post_processors(
            cfg, pretrained_path=str(self.policy_dir), **self._device_overrides())
        self.features: dict[str, tuple[str, tuple[int, ...]]] = {
            key: (_feature_type(ft), tuple(int(s) for s in ft.shape)) for key, ft in cfg.input_features.items()}
        self.image_keys = [k for k, (kind, _) in self.features.items() if kind == VISUAL]
        self.n_obs_steps = int(getattr(cfg, "n_obs_steps", 1) or 1)
        action = cfg.output_features.get("action")
        self.action_dim = int(action.shape[0]) if action is not None else None
        self.fps = _find_fps(self.policy_dir)
        self.lock = threading.Lock()  # one model: requests from several connections take turns
        self.action_horizon: int | None = None
        if warmup:
            actions, _ = self.infer(self.zero_observation(), deque(maxlen=self.n_obs_steps))
            self.action_horizon = int(actions.shape[0])

    def _device_overrides(self) -> dict[str, Any]:
        """Put the preprocessor on our device, where its saved pipeline has a device step to override."""
        try:
            steps = json.loads((self.policy_dir / PREPROCESSOR_FILE).read_text()).get("steps", [])
        except (OSError, ValueError):
            return {}
        if any(isinstance(s, dict) and s.get("registry_name") == "device_processor" for s in steps):
            return {"preprocessor_overrides": {"device_processor": {"device": self.device}}}
        return {}

    def metadata(self) -> dict[str, Any]:
        state = [k for k, (kind, _) in self.features.items() if kind == STATE]
        env = [k for k, (kind, _) in self.features.items() if kind == ENV]
        return {
            "server": "hybridvla_ros.lerobot_sidecar",
            "policy_type": str(self.cfg.type),
            "policy_dir": str(self.policy_dir),
            "input_features": {k: {"type": kind, "shape": list(shape)} for k, (kind, shape) in self.features.items()},
            "image_keys": list(self.image_keys),
            "image_format": "HxWx3 uint8, or CxHxW float32 in [0, 1], of the shape in input_features",
            "state_key": state[0] if state else None,
            "env_state_key": env[0] if env else None,
            "prompt_key": "task",
            "reset_key": "reset",
            "action_dim": self.action_dim,
            "chunk_size": getattr(self.cfg, "chunk_size", None),
            "n_action_steps": getattr(self.cfg, "n_action_steps", None),
            "action_horizon": self.action_horizon,
            "n_obs_steps": self.n_obs_steps,
            "fps": self.fps,
            "device": self.device,
        }

    def zero_observation(self) -> dict[str, Any]:
        obs: dict[str, Any] = {"task": ""}
        for key, (kind, shape) in self.features.items():
            obs[key] = np.zeros((*shape[1:], shape[0]), np.uint8) if kind == VISUAL else np.zeros(shape, np.float32)
        return obs

    # --- one request -------------------------------------------------------------------
    def to_frame(self, obs: Any) -> dict[str, Any]:
        """The request as LeRobot's inference frame: (1, ...) float tensors, images CHW in [0, 1], task text."""
        torch = self.torch
        if not isinstance(obs, dict):
            raise RequestError(f"a request must be a dict of observation keys, got {type(obs).__name__}")
        frame: dict[str, Any] = {}
        for key, (kind, shape) in self.features.items():
            if key not in obs:
                raise RequestError(f"missing observation key {key!r} (this policy reads {sorted(self.features)})")
            value = obs[key]
            if not isinstance(value, np.ndarray):
                raise RequestError(f"{key} must be an array, got {type(value).__name__}")
            if kind == VISUAL:
                tensor = self._image(key, value, shape)
            else:
                if value.dtype.kind not in "fiu" or tuple(value.shape) != shape:
                    raise RequestError(f"{key} must be a numeric array of shape {shape}, got {value.dtype} "
                                       f"{tuple(value.shape)}")
                if not np.all(np.isfinite(value)):
                    raise RequestError(f"{key} has NaN or infinite values")
                tensor = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
            frame[key] = tensor.unsqueeze(0).to(self.device)
        task = obs.get("task", obs.get("prompt", ""))
        if not isinstance(task, str):
            raise RequestError(f"task must be text, got {type(task).__name__}")
        frame["task"] = task
        frame["robot_type"] = obs.get("robot_type", "") if isinstance(obs.get("robot_type", ""), str) else ""
        return frame

    def _image(self, key: str, value: np.ndarray, shape: tuple[int, ...]) -> Any:
        torch = self.torch
        channels = shape[0]
        if value.ndim != 3:
            raise RequestError(f"{key} must be HxWx{channels} uint8 or {channels}xHxW float, got shape "
                               f"{tuple(value.shape)}")
        if value.dtype == np.uint8:
            hwc = value.shape[-1] == channels and value.shape[0] != channels
            chw = value.transpose(2, 0, 1) if hwc else value
            data = np.ascontiguousarray(chw, dtype=np.float32) / np.float32(255.0)
        elif value.dtype.kind == "f":
            hwc = value.shape[-1] == channels and value.shape[0] != channels
            data = np.ascontiguousarray(value.transpose(2, 0, 1) if hwc else value, dtype=np.float32)
            if not np.all(np.isfinite(data)):
                raise RequestError(f"{key} has NaN or infinite values")
        else:
            raise RequestError(f"{key} must be uint8 or float, got {value.dtype}")
        if tuple(data.shape) != shape:
            raise RequestError(f"{key} is {'x'.join(map(str, data.shape))} (CxHxW), the policy was trained on "
                               f"{'x'.join(map(str, shape))}: resize on the client (the metadata gives the shapes)")
        return torch.from_numpy(data)

    def infer(self, obs: Any, history: deque) -> tuple[np.ndarray, dict[str, float]]:
        """Actions (T, D) float32 for one observation; ``history`` is this connection's, updated here."""
        torch = self.torch
        t0 = time.perf_counter()
        frame = self.to_frame(obs)
        t_ready = time.perf_counter()
        with self.lock, torch.inference_mode():
            t1 = time.perf_counter()  # after any other connection's request
            batch = self.preprocessor(frame)
            if self.n_obs_steps > 1:
                batch = self._with_history(batch, history)
            t2 = time.perf_counter()
            self.policy.reset()  # empty queues: predict_action_chunk reads only this batch
            chunk = self.policy.predict_action_chunk(batch)
            t3 = time.perf_counter()
            actions = self.postprocessor(chunk)
        t4 = time.perf_counter()
        out = actions.detach().to("cpu", torch.float32).numpy()
        if out.ndim == 3:
            out = out[0]
        if out.ndim != 2:
            raise RuntimeError(f"the policy returned actions of shape {tuple(out.shape)}, expected (1, T, D)")
        if not np.all(np.isfinite(out)):
            raise RuntimeError("the policy returned NaN or infinite actions")
        timing = {"preprocess_ms": (t_ready - t0 + t2 - t1) * 1e3, "model_ms": (t3 - t2) * 1e3,
                  "postprocess_ms": (t4 - t3) * 1e3, "queue_ms": (t1 - t_ready) * 1e3, "infer_ms": (t4 - t0) * 1e3}
        return np.ascontiguousarray(out, dtype=np.float32), timing

    def _with_history(self, batch: dict[str, Any], history: deque) -> dict[str, Any]:
        """Stack the last n_obs_steps observations of each input feature along dim 1: (1, S, ...)."""
        current = {k: batch[k] for k in self.features if k in batch}
        history.append(current)
        frames = list(history)
        frames = [frames[0]] * (self.n_obs_steps - len(frames)) + frames
        out = dict(batch)
        for key in current:
            out[key] = self.torch.stack([f[key] for f in frames], dim=1)
        return out


# --- the websocket server ----------------------------------------------------------------
def _health(connection: Any, request: Any) -> Any:
    if request.path in ("/healthz", "/healthz/"):
        return connection.respond(HTTPStatus.OK, "OK\n")
    return None


def make_handler(server: LeRobotPolicyServer) -> Any:
    from websockets.exceptions import ConnectionClosed

    def handler(connection: Any) -> None:
        history: deque = deque(maxlen=server.n_obs_steps)
        peer = getattr(connection, "remote_address", None)
        LOG.info("client connected: %s", peer)
        try:
            connection.send(wire.packb(server.metadata()))
            for message in connection:
                try:
                    if isinstance(message, str):
                        raise RequestError("requests must be binary msgpack frames, got a text frame")
                    obs = wire.unpackb(message)
                    if isinstance(obs, dict) and obs.get("reset"):
                        history.clear()
                        if not any(k in obs for k in server.features):
                            connection.send(wire.packb({"reset": True}))
                            continue
                    actions, timing = server.infer(obs, history)
                    connection.send(wire.packb({"actions": actions, "policy_timing": timing,
                                                "server_timing": {"infer_ms": timing["infer_ms"]}}))
                except (RequestError, wire.WireError) as exc:
                    connection.send(f"bad request: {exc}")
                except Exception as exc:  # the policy failed on this input: say so, keep serving
                    LOG.exception("inference failed")
                    connection.send(f"inference failed: {type(exc).__name__}: {exc}")
        except ConnectionClosed:
            pass
        LOG.info("client disconnected: %s", peer)

    return handler


def serve(server: LeRobotPolicyServer, host: str, port: int) -> None:
    from websockets.sync.server import serve as ws_serve

    with ws_serve(make_handler(server), host, port, compression=None, max_size=wire.MAX_MESSAGE_BYTES,
                  process_request=_health) as ws:
        bound = ws.socket.getsockname()
        # One line the caller can wait for: the server is listening (tests and launchers read it).
        print(f"lerobot_sidecar: serving {server.cfg.type} on ws://{bound[0]}:{bound[1]}", flush=True)
        ws.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hybridvla_ros.lerobot_sidecar", description=__doc__.split("\n")[0])
    parser.add_argument("--policy-dir", required=True, help="a local LeRobot policy directory (config.json, "
                        "model.safetensors, policy_preprocessor.json, policy_postprocessor.json)")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port (printed)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: the checkpoint's, if available)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--no-warmup", action="store_true", help="skip the warm-up inference at start")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[lerobot_sidecar] %(levelname)s %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local directories only: never reach for a hub
    policy_dir = Path(args.policy_dir)
    if not (policy_dir / "config.json").is_file():
        print(f"lerobot_sidecar: {policy_dir} is not a LeRobot policy directory (no config.json)", file=sys.stderr)
        return 2
    try:
        import torch
        if args.threads > 0:
            torch.set_num_threads(args.threads)
        server = LeRobotPolicyServer(policy_dir, device=args.device, warmup=not args.no_warmup)
    except ImportError as exc:
        print(f"lerobot_sidecar: {exc}: run it with .venv-lerobot/bin/python (scripts/setup_lerobot.sh)",
              file=sys.stderr)
        return 2
    LOG.info("loaded %s from %s on %s: %s", server.cfg.type, server.policy_dir, server.device,
             json.dumps(server.metadata()))
    try:
        serve(server, args.host, args.port)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
