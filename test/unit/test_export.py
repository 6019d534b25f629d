"""Batch-1 inference variants (model/export.py) and ``hybridvla bench-model`` on a tiny checkpoint."""
from __future__ import annotations

import numpy as np
import pytest

from hybridvla_ros.model.export import VARIANT_KINDS, make_variant
from hybridvla_ros.model.runner import PolicyRunner

# Tolerances on absolute actions (rad / m), relative to the actions' spread in these tests.
ONNX_ATOL = 1e-4   # same fp32 math, another runtime: float round-off only
INT8_ATOL = 5e-2   # int8 weights and activations: quantization error, small but not round-off
BF16_ATOL = 5e-2   # 8-bit mantissa


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, train_franka_aloha) -> str:  # type: ignore[no-untyped-def]
    """Defaults: coarse_to_fine heads (serving every mode), MiniLM instructions."""
    return train_franka_aloha(str(tmp_path_factory.mktemp("ckpt")), 20)


@pytest.fixture(scope="module")
def single_head_checkpoint(tmp_path_factory: pytest.TempPathFactory, train_franka_aloha) -> str:  # type: ignore[no-untyped-def]
    """The parameter files' heads only (franka token, aloha flow), hashed instructions."""
    return train_franka_aloha(str(tmp_path_factory.mktemp("ckpt1")), 20, "--heads", "config",
                              "--instruction-encoder", "hash-3gram")


def _observation(runner: PolicyRunner, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, joint positions, state joints): franka observes its suction cup (0 or 1)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)  # not policy size: variants resize
    return image, rng.normal(scale=0.1, size=runner.action_dim), rng.integers(0, 2, len(runner.state_joints))


@pytest.mark.parametrize("heads, embodiment, mode", [
    ("single", "franka", "token"), ("single", "aloha", "flow"),
    ("c2f", "franka", "token"), ("c2f", "franka", "coarse_to_fine"), ("c2f", "aloha", "flow"),
    ("c2f", "aloha", "coarse_to_fine"), ("c2f", "franka", "routed")])
def test_variants_agree_with_fp32_eager(checkpoint: str, single_head_checkpoint: str, heads: str, embodiment: str,
                                        mode: str) -> None:
    path = checkpoint if heads == "c2f" else single_head_checkpoint
    runner = PolicyRunner.load(path, embodiment, num_threads=1, seed=7, mode=mode)
    image, q, x = _observation(runner)
    assert len(runner.state_joints) == (1 if embodiment == "franka" else 0)
    reference = runner.predict(image, q, runner.default_instruction, num_samples=5, state=x)
    tolerances = {"fp32": 1e-6, "onnx": ONNX_ATOL, "int8": INT8_ATOL, "int8-ort": INT8_ATOL, "bf16": BF16_ATOL}
    for kind in VARIANT_KINDS:
        variant = make_variant(runner, kind, seed=7)  # same seed: same flow noise as the runner, its mode
        assert variant.head_type == mode
        actions, confidence = variant.predict(image, q, runner.default_instruction, 5, state=x)
        assert actions.shape == (runner.chunk_size, runner.action_dim), kind
        assert actions.dtype == np.float64
        assert 0.0 <= confidence <= 1.0
        np.testing.assert_allclose(actions, reference.actions, atol=tolerances[kind], err_msg=kind)
        assert abs(confidence - reference.confidence) < max(10 * tolerances[kind], 1e-5), kind


@pytest.mark.parametrize("mode", ["flow", "coarse_to_fine"])
def test_onnx_flow_takes_any_sample_count(checkpoint: str, mode: str) -> None:
    runner = PolicyRunner.load(checkpoint, "aloha", num_threads=1, mode=mode)
    image, q, _ = _observation(runner, 1)
    variant = make_variant(runner, "onnx")
    one, confidence_one = variant.predict(image, q, runner.default_instruction, 1)
    many, _ = variant.predict(image, q, runner.default_instruction, 8)
    assert one.shape == many.shape == (32, 14)
    if mode == "flow":
        assert confidence_one == pytest.approx(1.0)  # one sample: no spread


def test_bad_requests_name_what_is_wrong(checkpoint: str) -> None:
    runner = PolicyRunner.load(checkpoint, "franka", num_threads=1)
    with pytest.raises(ValueError, match=r"kind: must be one of .*'fp16'"):
        make_variant(runner, "fp16")
    with pytest.raises(ValueError, match="no head for 'leap'"):
        make_variant(runner.policy, "fp32", "leap")
    with pytest.raises(ValueError, match="embodiment"):
        make_variant(runner.policy, "fp32")
    with pytest.raises(ValueError, match="runner_or_policy"):
        make_variant(object(), "fp32", "franka")
    variant = make_variant(runner, "int8")
    image, _, x = _observation(runner)
    with pytest.raises(ValueError, match=r"joint_positions: expected 7"):
        variant.predict(image, np.zeros(3), "x", 1, state=x)
    with pytest.raises(ValueError, match=r"state: expected 1"):
        variant.predict(image, np.zeros(7), "x", 1)  # the suction cup's state is missing
    with pytest.raises(ValueError, match=r"suction_cup"):
        runner.predict(image, np.zeros(7), "x")


def test_bench_model_writes_json_and_plot(checkpoint: str, tmp_path, run_bench_model) -> None:  # type: ignore[no-untyped-def]
    result = run_bench_model(checkpoint, tmp_path, 4)
    assert set(result["embodiments"]) == {"franka", "aloha"}
    aloha = result["embodiments"]["aloha"]["kinds"]
    assert set(aloha) == set(VARIANT_KINDS)
    assert aloha["fp32"]["mae_vs_fp32"] == 0.0 and aloha["onnx"]["mae_vs_fp32"] < ONNX_ATOL
    assert aloha["int8"]["latency"]["p50_ms"] > 0 and "confidence_cost_ratio" in aloha["int8"]


@pytest.mark.parametrize("runtime", ["onnx", "int8-ort"])
def test_the_node_can_serve_an_exported_runtime_with_the_runners_contract(checkpoint: str, runtime: str) -> None:
    """inference ``runtime: onnx | int8-ort``: same Prediction contract as the torch runner, same actions
    within the variant's tolerance, clear errors for bad input and an unknown runtime."""
    from hybridvla_ros.model.runner import ExportedRunner, load_runner

    torch_runner = load_runner(checkpoint, "franka", "torch", mode="coarse_to_fine")
    served = load_runner(checkpoint, "franka", runtime, mode="coarse_to_fine")
    assert isinstance(served, ExportedRunner)
    assert (served.action_dim, served.chunk_size, served.head_type) == (7, torch_runner.chunk_size, "coarse_to_fine")
    assert served.state_joints == torch_runner.state_joints == ("suction_cup",)
    image, q, _ = _observation(torch_runner)
    for held in (0.0, 1.0):  # the exported graph reads the suction cup's state as the torch runner does
        a = torch_runner.predict(image, q, "put the cube on the red target", num_samples=5, state=[held])
        b = served.predict(image, q, "put the cube on the red target", num_samples=5, state=[held])
        assert b.actions.shape == a.actions.shape and b.latency_s > 0 and 0.0 <= b.confidence <= 1.0
        np.testing.assert_allclose(b.actions, a.actions, atol=5e-3)
    with pytest.raises(ValueError, match="joint_positions"):
        served.predict(image, np.full(7, np.nan), "x", state=[0.0])
    with pytest.raises(ValueError, match="state"):
        served.predict(image, q, "x", state=[np.nan])
    with pytest.raises(ValueError, match="runtime"):
        load_runner(checkpoint, "franka", "tensorrt")
