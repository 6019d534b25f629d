"""Checkpoints: safetensors + config.json round trip, and clear errors for broken ones; the runner."""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest
import safetensors.torch
import torch

from hybridvla_ros.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from hybridvla_ros.model.policy import EmbodimentSpec, HybridPolicy, PolicyConfig
from hybridvla_ros.model.runner import PolicyRunner

SPECS = (EmbodimentSpec("franka", 7, 16, "token"), EmbodimentSpec("aloha", 14, 8, "flow"))


def small_config(**changes) -> PolicyConfig:
    base = dict(embodiments=SPECS, image_size=32, conv_channels=(8, 16), d_model=32, num_heads=2, num_layers=1,
                ff_dim=64, token_hidden=64, flow_hidden=64, num_bins=16)
    return PolicyConfig(**{**base, **changes})


@pytest.fixture
def ckpt(tmp_path) -> str:
    torch.manual_seed(0)
    policy = HybridPolicy(small_config())
    out = str(tmp_path / "ckpt")
    save_checkpoint(policy, policy.config, out)
    return out


def _predict(path: str, embodiment: str, dim: int):
    runner = PolicyRunner.load(path, embodiment, seed=7)
    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    return runner.predict(image, np.linspace(-0.5, 0.5, dim), "reach the target", num_samples=5)


@pytest.mark.parametrize("embodiment, dim", [("franka", 7), ("aloha", 14)])
def test_save_load_round_trip_gives_identical_actions(ckpt, tmp_path, embodiment, dim) -> None:
    a = _predict(ckpt, embodiment, dim)
    policy, config = load_checkpoint(ckpt)
    again = str(tmp_path / "again")
    save_checkpoint(policy, config, again)
    b = _predict(again, embodiment, dim)
    assert np.array_equal(a.actions, b.actions) and a.confidence == b.confidence
    assert a.actions.shape == (SPECS[0 if embodiment == "franka" else 1].chunk_size, dim)
    assert 0.0 <= a.confidence <= 1.0 and a.latency_s > 0


def test_no_pickle_anywhere(ckpt) -> None:
    assert sorted(os.listdir(ckpt)) == ["config.json", "model.safetensors"]
    with open(os.path.join(ckpt, "config.json"), encoding="utf-8") as f:
        json.load(f)


def _edit_config(path: str, fn) -> None:
    cfg = os.path.join(path, "config.json")
    with open(cfg, encoding="utf-8") as f:
        doc = json.load(f)
    fn(doc)
    with open(cfg, "w", encoding="utf-8") as f:
        json.dump(doc, f)


def test_broken_checkpoints_name_what_is_wrong(ckpt, tmp_path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(str(tmp_path / "missing"))
    weights = os.path.join(ckpt, "model.safetensors")
    original = open(weights, "rb").read()
    with open(weights, "wb") as f:
        f.write(original[: len(original) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_checkpoint(ckpt)
    with open(weights, "wb") as f:
        f.write(original)
    _edit_config(ckpt, lambda d: d.pop("embodiments"))
    with pytest.raises(CheckpointError, match="missing key"):
        load_checkpoint(ckpt)


def test_wrong_format_version_and_shape_mismatch(ckpt, tmp_path) -> None:
    _edit_config(ckpt, lambda d: d.update(format_version=99))
    with pytest.raises(CheckpointError, match="format_version 99"):
        load_checkpoint(ckpt)
    _edit_config(ckpt, lambda d: d.update(format_version=1))
    # Weights of another architecture under this config: the tensor and both shapes are named.
    other = HybridPolicy(small_config(d_model=64))
    safetensors.torch.save_file({k: v.contiguous() for k, v in other.state_dict().items()},
                                os.path.join(ckpt, "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"tensor '.*' has shape"):
        load_checkpoint(ckpt)


def test_runner_rejects_bad_inputs_and_unknown_embodiments(ckpt) -> None:
    runner = PolicyRunner.load(ckpt, "franka")
    image = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="joint_positions"):
        runner.predict(image, np.full(7, np.nan), "reach")
    with pytest.raises(ValueError, match="joint_positions"):
        runner.predict(image, np.zeros(3), "reach")
    with pytest.raises(ValueError, match="image_rgb"):
        runner.predict(np.zeros((32, 32), np.uint8), np.zeros(7), "reach")
    with pytest.raises(ValueError, match="leap"):
        PolicyRunner.load(ckpt, "leap")


def test_coarse_to_fine_checkpoint_serves_every_mode_and_a_token_head_refuses_refining(tmp_path) -> None:
    torch.manual_seed(0)
    specs = (EmbodimentSpec("franka", 7, 16, "coarse_to_fine"), EmbodimentSpec("aloha", 14, 8, "token"))
    policy = HybridPolicy(small_config(embodiments=specs))
    out = str(tmp_path / "c2f")
    save_checkpoint(policy, policy.config, out)
    with open(os.path.join(out, "config.json"), encoding="utf-8") as f:
        doc = json.load(f)
    assert doc["embodiments"][0]["head_type"] == "coarse_to_fine"
    assert doc["policy"]["instruction_encoder"] == "hash-3gram" and doc["policy"]["instruction_dim"] == 256
    image = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    actions = {}
    for mode in ("token", "flow", "coarse_to_fine"):
        pred = PolicyRunner.load(out, "franka", seed=1, mode=mode).predict(image, np.zeros(7), "reach", 4)
        assert pred.head_type == mode and pred.actions.shape == (16, 7) and 0 <= pred.confidence <= 1
        actions[mode] = pred.actions
    assert not np.allclose(actions["token"], actions["coarse_to_fine"])
    with pytest.raises(ValueError, match=r"head_type: 'aloha' has a 'token' head.*not 'coarse_to_fine'"):
        PolicyRunner.load(out, "aloha", mode="coarse_to_fine")


def test_checkpoint_from_before_the_encoder_key_loads_with_the_hashed_encoder(ckpt) -> None:
    a = _predict(ckpt, "franka", 7)
    _edit_config(ckpt, lambda d: [d["policy"].pop(k) for k in
                                  ("instruction_encoder", "refine_binned_fraction", "refine_uncond_fraction")])
    _, config = load_checkpoint(ckpt)
    assert config.instruction_encoder == "hash-3gram"
    assert np.array_equal(_predict(ckpt, "franka", 7).actions, a.actions)


def test_checkpoint_from_before_keypoints_loads_without_them(tmp_path) -> None:
    torch.manual_seed(0)
    policy = HybridPolicy(dataclasses.replace(small_config(), keypoints=0))
    out = str(tmp_path / "old")
    save_checkpoint(policy, policy.config, out)
    a = _predict(out, "franka", 7)
    _edit_config(out, lambda d: d["policy"].pop("keypoints"))
    _, config = load_checkpoint(out)
    assert config.keypoints == 0
    assert np.array_equal(_predict(out, "franka", 7).actions, a.actions)


def test_checkpoint_from_before_the_router_serves_every_mode_but_routed(tmp_path) -> None:
    torch.manual_seed(0)
    specs = (EmbodimentSpec("franka", 7, 16, "coarse_to_fine"),)
    policy = HybridPolicy(dataclasses.replace(small_config(), embodiments=specs, router=False))
    out = str(tmp_path / "old")
    save_checkpoint(policy, policy.config, out)
    _edit_config(out, lambda d: [d["policy"].pop(k) for k in ("router", "router_hidden")])
    loaded, config = load_checkpoint(out)
    assert config.router is False and loaded.modes("franka") == ("token", "flow", "coarse_to_fine")
    with pytest.raises(ValueError, match="trained without a router"):
        PolicyRunner.load(out, "franka", mode="routed")
    assert PolicyRunner.load(out, "franka", mode="coarse_to_fine").head_type == "coarse_to_fine"
