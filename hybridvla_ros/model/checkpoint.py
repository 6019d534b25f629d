"""Checkpoint format: a directory with ``model.safetensors`` and ``config.json``.

* ``model.safetensors``: every tensor of ``HybridPolicy.state_dict()`` (weights and the
  per-embodiment normalization statistics), float32. Nothing is ever unpickled.
* ``config.json``::

    {
      "format_version": 1,
      "model_version": 123456789,      # crc32 of model.safetensors: names the exact weights
      "policy": {...},                 # every PolicyConfig field except embodiments (incl.
                                       # instruction_encoder + instruction_dim: the text encoder)
      "embodiments": [{"name", "action_dim", "chunk_size", "head_type", "joint_names",
                       "control_period_s", "instruction"}, ...],
      "training": {...}                # free-form summary (settings, held-out errors, time)
    }

``load_checkpoint`` checks everything it reads and raises :class:`CheckpointError` with a
message that names the file, key or tensor at fault. ``model_version`` doubles as a
checksum, so a torn write (new weights, old config or the reverse) is caught on load.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch

from hybridvla_ros.model.policy import EmbodimentSpec, HybridPolicy, PolicyConfig

__all__ = ["CheckpointError", "FORMAT_VERSION", "save_checkpoint", "load_checkpoint", "read_checkpoint_config",
           "model_version_of", "config_to_dict", "json_default"]

FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = (1,)
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"

# config.json keys
KEY_FORMAT_VERSION = "format_version"
KEY_MODEL_VERSION = "model_version"
KEY_POLICY = "policy"
KEY_EMBODIMENTS = "embodiments"
KEY_TRAINING = "training"
REQUIRED_KEYS = (KEY_FORMAT_VERSION, KEY_MODEL_VERSION, KEY_POLICY, KEY_EMBODIMENTS)
EMBODIMENT_REQUIRED_KEYS = ("name", "action_dim", "chunk_size", "head_type")
# policy keys added after format_version 1 was first written: a checkpoint without them gets the
# value every earlier checkpoint was trained with (the hashed encoder; no refiner)
ADDED_POLICY_KEYS = {"instruction_encoder": "hash-3gram", "refine_binned_fraction": 0.25,
                     "refine_uncond_fraction": 0.2, "keypoints": 0,
                     "router": False, "router_hidden": 64}


class CheckpointError(ValueError):
    """A checkpoint directory is missing, incomplete, corrupt or incompatible; the message says which part."""


# ---------------------------------------------------------------- saving
def json_default(value: Any) -> Any:
    """Let numpy scalars/arrays and tuples into config.json."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (strict JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def config_to_dict(config: PolicyConfig) -> dict[str, Any]:
    """The ``policy`` and ``embodiments`` entries of config.json."""
    policy = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name != KEY_EMBODIMENTS}
    policy["conv_channels"] = list(config.conv_channels)
    embodiments = [{**dataclasses.asdict(e), "joint_names": list(e.joint_names)} for e in config.embodiments]
    return {KEY_POLICY: policy, KEY_EMBODIMENTS: embodiments}


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def save_checkpoint(policy: HybridPolicy, config: PolicyConfig, directory: str | os.PathLike[str],
                    training: Mapping[str, Any] | None = None) -> int:
    """Write ``policy`` into ``directory`` (created if needed); return its model_version."""
    if config != policy.config:
        raise ValueError("config: differs from policy.config; save the config the policy was built with")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.detach().to("cpu", torch.float32).contiguous() for name, t in policy.state_dict().items()}
    weights = safetensors.torch.save(tensors, metadata={"format": "pt", KEY_FORMAT_VERSION: str(FORMAT_VERSION)})
    model_version = zlib.crc32(weights)
    doc = {KEY_FORMAT_VERSION: FORMAT_VERSION, KEY_MODEL_VERSION: model_version, **config_to_dict(config),
           KEY_TRAINING: _finite(json.loads(json.dumps(dict(training or {}), default=json_default)))}
    text = json.dumps(doc, indent=2, default=json_default, allow_nan=False)
    _write_atomic(directory / WEIGHTS_FILE, weights)
    _write_atomic(directory / CONFIG_FILE, (text + "\n").encode("utf-8"))
    return model_version


# ---------------------------------------------------------------- loading
def read_checkpoint_config(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Parsed config.json of a checkpoint, with its required keys and format_version checked."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory not found: '{directory}'")
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{CONFIG_FILE} not found in checkpoint directory '{directory}'")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"'{path}' is not readable JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise CheckpointError(f"'{path}': top level must be an object, got {type(doc).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in doc]
    if missing:
        raise CheckpointError(f"'{path}': missing key(s) {missing}")
    version = doc[KEY_FORMAT_VERSION]
    if version not in SUPPORTED_FORMAT_VERSIONS or isinstance(version, bool):
        raise CheckpointError(f"'{path}': format_version {version!r} is not supported "
                              f"(this code reads {list(SUPPORTED_FORMAT_VERSIONS)})")
    mv = doc[KEY_MODEL_VERSION]
    if isinstance(mv, bool) or not isinstance(mv, int) or not 0 <= mv < 2 ** 32:
        raise CheckpointError(f"'{path}': model_version must be an unsigned 32-bit integer, got {mv!r}")
    return doc


def _config_from_doc(doc: Mapping[str, Any], where: str) -> PolicyConfig:
    """PolicyConfig from config.json's ``policy`` and ``embodiments`` entries."""
    policy = doc[KEY_POLICY]
    if not isinstance(policy, dict):
        raise CheckpointError(f"{where}: 'policy' must be an object, got {policy!r}")
    fields = [f.name for f in dataclasses.fields(PolicyConfig) if f.name != KEY_EMBODIMENTS]
    policy = {**{k: v for k, v in ADDED_POLICY_KEYS.items() if k not in policy}, **policy}
    missing = [k for k in fields if k not in policy]
    if missing:
        raise CheckpointError(f"{where}: missing key(s) {['policy.' + k for k in missing]}")
    unknown = sorted(set(policy) - set(fields))
    if unknown:
        raise CheckpointError(f"{where}: unknown key(s) {['policy.' + k for k in unknown]} "
                              "(written by a newer version?)")
    entries = doc[KEY_EMBODIMENTS]
    if not isinstance(entries, list) or not entries:
        raise CheckpointError(f"{where}: 'embodiments' must be a non-empty list, got {entries!r}")
    spec_fields = {f.name for f in dataclasses.fields(EmbodimentSpec)}
    specs = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise CheckpointError(f"{where}: embodiments[{i}] must be an object, got {entry!r}")
        missing = [k for k in EMBODIMENT_REQUIRED_KEYS if k not in entry]
        if missing:
            raise CheckpointError(f"{where}: missing key(s) {[f'embodiments[{i}].{k}' for k in missing]}")
        unknown = sorted(set(entry) - spec_fields)
        if unknown:
            raise CheckpointError(f"{where}: unknown key(s) {[f'embodiments[{i}].{k}' for k in unknown]}")
        try:
            specs.append(EmbodimentSpec(**{**entry, "joint_names": tuple(entry.get("joint_names", ()))}))
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{where}: embodiments[{i}]: {exc}") from None
    try:
        return PolicyConfig(**policy, embodiments=tuple(specs))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{where}: invalid policy config: {exc}") from None


def _check_tensors(tensors: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], where: str) -> None:
    """Same names, shapes and dtypes as the model config.json describes, and finite values."""
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            more = f" and {len(missing) - 8} more" if len(missing) > 8 else ""
            parts.append(f"missing tensor(s) {missing[:8]}{more}")
        if unexpected:
            parts.append(f"unexpected tensor(s) {unexpected[:8]}"
                         + (f" and {len(unexpected) - 8} more" if len(unexpected) > 8 else ""))
        raise CheckpointError(f"{where}: {'; '.join(parts)} (does config.json match the weights?)")
    for name, ref in expected.items():
        t = tensors[name]
        if tuple(t.shape) != tuple(ref.shape):
            raise CheckpointError(f"{where}: tensor '{name}' has shape {tuple(t.shape)}, "
                                  f"config.json implies {tuple(ref.shape)}")
        if t.dtype != torch.float32:
            raise CheckpointError(f"{where}: tensor '{name}' has dtype {t.dtype}, expected torch.float32")
        if not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{where}: tensor '{name}' contains NaN or inf")
        if name.endswith("_std") and not bool((t > 0).all()):
            raise CheckpointError(f"{where}: normalization tensor '{name}' has values <= 0")


def load_checkpoint(directory: str | os.PathLike[str]) -> tuple[HybridPolicy, PolicyConfig]:
    """Load a checkpoint written by :func:`save_checkpoint`; the policy is in eval mode.

    Raises CheckpointError for a missing directory or file, unreadable JSON or safetensors,
    missing config keys, an unsupported format_version, missing/unexpected tensors, a
    tensor shape that does not match config.json, or weights that fail the checksum.
    """
    directory = Path(directory)
    doc = read_checkpoint_config(directory)
    config_path = directory / CONFIG_FILE
    config = _config_from_doc(doc, f"'{config_path}'")
    weights_path = directory / WEIGHTS_FILE
    if not weights_path.is_file():
        raise CheckpointError(f"{WEIGHTS_FILE} not found in checkpoint directory '{directory}'")
    try:
        data = weights_path.read_bytes()
        tensors = safetensors.torch.load(data)
    except Exception as exc:  # safetensors raises its own SafetensorError and others for garbage
        raise CheckpointError(f"'{weights_path}' is not a readable safetensors file: {exc}") from None
    policy = HybridPolicy(config)
    _check_tensors(tensors, policy.state_dict(), f"'{weights_path}'")
    checksum = zlib.crc32(data)
    if checksum != doc[KEY_MODEL_VERSION]:
        raise CheckpointError(f"'{weights_path}': checksum {checksum} does not match model_version "
                              f"{doc[KEY_MODEL_VERSION]} in {CONFIG_FILE} (file changed or corrupt)")
    policy.load_state_dict(tensors, strict=True)
    policy.eval()
    return policy, config


def read_policy_config(directory: str | os.PathLike[str]) -> PolicyConfig:
    """The PolicyConfig of a checkpoint (architecture and embodiments) without reading its weights.

    Raises CheckpointError as :func:`read_checkpoint_config` does, or for config entries that
    do not make a PolicyConfig.
    """
    doc = read_checkpoint_config(directory)
    return _config_from_doc(doc, f"'{Path(directory) / CONFIG_FILE}'")


def model_version_of(directory: str | os.PathLike[str]) -> int:
    """model_version from a checkpoint's config.json (cheap: does not read the weights)."""
    return int(read_checkpoint_config(directory)[KEY_MODEL_VERSION])

