"""INT8 inference kinds (model/quantize.py) and the fields of ``hybridvla bench-model``'s JSON.

No timing assertions: machines are shared and noisy; speed is the benchmark's job.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from hybridvla_ros.model import bench_model
from hybridvla_ros.model.export import VARIANT_KINDS, make_variant
from hybridvla_ros.model.policy import HEAD_MODES
from hybridvla_ros.model.quantize import (
    KEEP_FP32_PREFIX,
    quantize_onnx_dynamic,
    quantize_policy_dynamic,
    quantized_linear_names,
)
from hybridvla_ros.model.runner import PolicyRunner

INT8_KINDS = ("int8", "int8-ort")
# int8 against fp32 eager, same observation and flow noise, on absolute actions (rad / m). The
# tiny model predicts deltas of mean size ~0.04; int8 may move them by 1 % of that on average
# (measured: <= 1e-5 here, 1-3e-4 on checkpoints/default).
INT8_MEAN_ATOL = 5e-4
INT8_MAX_ATOL = 5e-3
INT8_CONFIDENCE_ATOL = 5e-3


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, train_franka_aloha) -> str:  # type: ignore[no-untyped-def]
    """coarse_to_fine heads (serving every mode), hashed instructions, 32 px images."""
    return train_franka_aloha(str(tmp_path_factory.mktemp("ckpt_int8")), 12, "--image-size", "32",
                              "--instruction-encoder", "hash-3gram")


def _observation(action_dim: int, state_dim: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), rng.normal(scale=0.1, size=action_dim),
            rng.integers(0, 2, state_dim))


@pytest.mark.parametrize("embodiment, mode", [("franka", "token"), ("franka", "coarse_to_fine"),
                                              ("aloha", "flow"), ("aloha", "coarse_to_fine")])
def test_int8_kinds_agree_with_fp32_eager(checkpoint: str, embodiment: str, mode: str) -> None:
    runner = PolicyRunner.load(checkpoint, embodiment, num_threads=1, mode=mode)
    fp32 = make_variant(runner, "fp32", seed=3)
    for kind in INT8_KINDS:
        variant = make_variant(runner, kind, seed=3)
        assert variant.kind == kind and variant.head_type == mode
        for i in range(3):
            image, q, x = _observation(runner.action_dim, len(runner.state_joints), i)
            fp32.reseed(i)
            variant.reseed(i)  # the same flow noise: differences are quantization only
            expected, expected_confidence = fp32.predict(image, q, runner.default_instruction, 5, state=x)
            actions, confidence = variant.predict(image, q, runner.default_instruction, 5, state=x)
            assert actions.shape == (runner.chunk_size, runner.action_dim) and actions.dtype == np.float64
            error = np.abs(actions - expected)
            assert error.mean() < INT8_MEAN_ATOL and error.max() < INT8_MAX_ATOL, (kind, error.mean(), error.max())
            assert abs(confidence - expected_confidence) < INT8_CONFIDENCE_ATOL, kind


def test_torch_int8_quantizes_a_copy_and_keeps_the_transformer_fp32(checkpoint: str) -> None:
    runner = PolicyRunner.load(checkpoint, "franka", num_threads=1)
    before = {k: v.clone() for k, v in runner.policy.state_dict().items()}
    names = quantized_linear_names(runner.policy)
    assert any(n.startswith("heads.franka") for n in names) and "backbone.instruction_proj" in names
    assert not any(n.startswith(KEEP_FP32_PREFIX) for n in names)
    quantized = quantize_policy_dynamic(runner.policy)
    modules = dict(quantized.named_modules())
    assert all(isinstance(modules[n], torch.ao.nn.quantized.dynamic.Linear) for n in names)
    encoder = [m for n, m in modules.items() if n.startswith(KEEP_FP32_PREFIX)]
    assert any(type(m) is nn.Linear for m in encoder)
    assert not any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in encoder)
    after = runner.policy.state_dict()  # the source model is untouched
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_int8_ort_graph_has_int8_matmuls_and_fp32_convs(checkpoint: str) -> None:
    import onnx

    fp32 = make_variant(PolicyRunner.load(checkpoint, "aloha", num_threads=1), "onnx")
    int8 = make_variant(PolicyRunner.load(checkpoint, "aloha", num_threads=1), "int8-ort")
    ops = {node.op_type for node in onnx.load_from_string(int8.model_bytes).graph.node}
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= ops, ops
    assert "Conv" in ops and "ConvInteger" not in ops and "Gemm" not in ops
    assert len(int8.model_bytes) < 0.6 * len(fp32.model_bytes)  # int8 weights: about a quarter


def test_unknown_kind_and_unquantizable_model_say_what_is_wrong(checkpoint: str) -> None:
    runner = PolicyRunner.load(checkpoint, "franka", num_threads=1)
    with pytest.raises(ValueError, match=r"kind: must be one of \[.*'int8-ort'.*\], got 'int4'"):
        make_variant(runner, "int4")
    with pytest.raises(ValueError, match="kind 'int8-ort': onnxruntime could not quantize the model"):
        quantize_onnx_dynamic(b"not an onnx model")


def _check_kind_fields(kind: str, r: dict, sampling: bool) -> None:
    for key in ("build_s", "action_mae", "error_increase_vs_fp32", "mae_vs_fp32", "max_abs_vs_fp32",
                "speedup_vs_fp32", "cpu_speedup_vs_fp32", "speedup_vs_onnx"):
        assert np.isfinite(r[key]), (kind, key)
    assert r["latency"]["p50_ms"] > 0 and r["latency"]["p99_ms"] >= r["latency"]["p50_ms"]
    assert r["latency"]["cpu_p50_ms"] > 0
    assert ("meets_int8_target" in r) == (kind in INT8_KINDS)
    assert ("confidence_cost_ratio" in r) == ("latency_1_sample" in r) == sampling
    if kind in INT8_KINDS:
        assert r["mae_vs_fp32"] < INT8_MEAN_ATOL, kind


def test_bench_model_json_has_the_documented_fields(checkpoint: str, tmp_path,  # type: ignore[no-untyped-def]
                                                    run_bench_model) -> None:
    result = run_bench_model(checkpoint, tmp_path, 3)
    assert set(result["definitions"]) >= {"action_mae", "error_increase_vs_fp32", "mae_vs_fp32",
                                          "confidence_cost_ratio", "speedup_vs_onnx"}
    assert len(result["machine"]["load_average_start"]) == 3
    assert result["targets"]["int8_speedup_min"] == 2.0
    for name in ("franka", "aloha"):
        res = result["embodiments"][name]
        assert res["head_type"] == "coarse_to_fine"
        # every mode it serves, its own first
        assert list(res["modes"]) == ["coarse_to_fine", "token", "flow", "routed"]
        assert set(res["modes"]) == set(HEAD_MODES["coarse_to_fine"])
        assert res["kinds"] == res["modes"]["coarse_to_fine"]["kinds"]
        for mode, mres in res["modes"].items():
            assert set(mres["kinds"]) == set(VARIANT_KINDS)
            assert mres["sampling"] == (mode != "token")
            assert mres["kinds"]["fp32"]["mae_vs_fp32"] == 0.0
            for kind, r in mres["kinds"].items():
                _check_kind_fields(kind, r, mres["sampling"])


def test_bench_model_measures_memory_and_narrows_modes(checkpoint: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    assert bench_model.main(["--checkpoint", checkpoint, "--embodiments", "franka", "--kinds", "fp32", "int8-ort",
                             "--modes", "coarse_to_fine", "--episodes", "1", "--steps-per-episode", "2",
                             "--iterations", "2", "--warmup", "0", "--out", str(out), "--plot", str(png)]) == 0
    franka = json.loads(out.read_text())["embodiments"]["franka"]
    assert list(franka["modes"]) == ["coarse_to_fine"]
    memory = franka["kinds"]["int8-ort"]["memory"]
    assert "error" not in memory, memory
    assert memory["peak_rss_mib"] >= memory["rss_after_load_mib"] > 0
