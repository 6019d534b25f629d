"""PolicyRunner reuses the vision tokens of a repeated camera frame, with unchanged outputs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hybridvla_ros.model.checkpoint import save_checkpoint
from hybridvla_ros.model.policy import EmbodimentSpec, HybridPolicy, PolicyConfig
from hybridvla_ros.model.runner import PolicyRunner

SPECS = (EmbodimentSpec("franka", 7, 16, "token"), EmbodimentSpec("aloha", 14, 8, "flow"))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> str:
    torch.manual_seed(0)
    policy = HybridPolicy(PolicyConfig(embodiments=SPECS, image_size=32, conv_channels=(8, 16), d_model=32,
                                       num_heads=2, num_layers=1, ff_dim=64, token_hidden=64, flow_hidden=64,
                                       num_bins=16))
    out = str(tmp_path_factory.mktemp("ckpt") / "ckpt")
    save_checkpoint(policy, policy.config, out)
    return out


def _counting_runner(path: str, embodiment: str) -> tuple[PolicyRunner, list[int]]:
    runner = PolicyRunner.load(path, embodiment, seed=3)
    calls = [0]
    runner.policy.backbone.vision.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return runner, calls


@pytest.mark.parametrize("embodiment, dim", [("franka", 7), ("aloha", 14)])
def test_repeated_frame_skips_the_vision_encoder_with_identical_actions(ckpt, embodiment, dim) -> None:
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    other = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    observations = [(frame, 0.1), (frame.copy(), 0.1), (frame, -0.2), (other, 0.1), (frame, 0.1)]
    cached, cached_calls = _counting_runner(ckpt, embodiment)
    fresh, fresh_calls = _counting_runner(ckpt, embodiment)
    for image, q in observations:
        a = cached.predict(image, np.full(dim, q), "reach the target", num_samples=3)
        fresh.clear_vision_cache()
        b = fresh.predict(image, np.full(dim, q), "reach the target", num_samples=3)
        assert np.array_equal(a.actions, b.actions) and a.confidence == b.confidence
    assert fresh_calls[0] == len(observations)
    assert cached_calls[0] == 3  # frame, other, frame: only a changed image is encoded again


def test_instruction_is_embedded_once_per_string_with_the_checkpoints_encoder(tmp_path) -> None:
    from hybridvla_ros.model.text import HASH_ENCODER, MINILM, MINILM_DIM, get_encoder

    torch.manual_seed(0)
    policy = HybridPolicy(PolicyConfig(embodiments=SPECS[:1], image_size=32, conv_channels=(8, 16), d_model=32,
                                       num_heads=2, num_layers=1, ff_dim=64, token_hidden=64, flow_hidden=64,
                                       num_bins=16, instruction_encoder=MINILM, instruction_dim=MINILM_DIM))
    save_checkpoint(policy, policy.config, tmp_path / "ckpt")
    runner = PolicyRunner.load(tmp_path / "ckpt", "franka")
    encoder = get_encoder(MINILM)
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    before = encoder.calls
    for instruction in ["reach the target", "reach the target", "touch the goal", "reach the target"]:
        runner.predict(image, np.zeros(7), instruction)
    assert encoder.calls - before == 2  # two distinct strings
    # the same checkpoint asked for with another encoder: refused, naming both
    with pytest.raises(ValueError, match=r"trained with 'all-MiniLM-L6-v2' \(384-d\), not 'hash-3gram'"):
        PolicyRunner.load(tmp_path / "ckpt", "franka", instruction_encoder=HASH_ENCODER)
