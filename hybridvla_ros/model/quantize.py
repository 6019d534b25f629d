"""INT8 batch-1 inference: dynamic quantization, in torch and in onnxruntime.

Both kinds quantize dynamically: int8 weights, activations quantized per call from their own
range, so no calibration set is needed and a new checkpoint quantizes in well under a second.

- ``int8`` (torch, eager): :func:`quantize_policy_dynamic`, ``torch.ao.quantization.quantize_dynamic``
  of the head MLPs and the input projections. The transformer encoder stays fp32 so it keeps
  torch's fused encoder-layer fast path; quantizing its Linears too knocks the layers off
  that path and was slower and less accurate (franka 1.75 ms against 1.67 ms). At batch 1
  eager time is mostly per-op overhead, which int8 does not remove: about 1.1-1.3x over fp32.
  torch 2.13 deprecates ``torch.ao.quantization`` in favour of torchao's ``quantize_``; on this
  model at batch 1 on the CPU torchao's ``Int8DynamicActivationInt8WeightConfig`` (0.18) was
  2.2x SLOWER than fp32 eager (tensor-subclass dispatch on every op) and still 1.5x slower under
  ``torch.compile``, so this kind stays on ``torch.ao`` while torch ships it.
- ``int8-ort``: :func:`quantize_onnx_dynamic`, applied by :class:`hybridvla_ros.model.export.OnnxInt8Variant`
  to the ``onnx`` kind's graph with every weight MatMul
  and Gemm turned into a dynamically quantized MatMul by ``onnxruntime.quantization.
  quantize_dynamic`` (ORT fuses it into ``DynamicQuantizeMatMul``, VNNI where the CPU has
  it), run by onnxruntime. Convolutions stay fp32: ORT's ``ConvInteger`` made the whole graph
  slower (1.13 ms against 0.78 ms fp32). Most of its speed-up over fp32 eager is the runtime
  (the fp32 ONNX graph alone is 2-3x); the int8 arithmetic adds about 1.3-1.4x on top. The
  benchmark prints both ratios (``speedup_vs_fp32``, ``speedup_vs_onnx``).

This module only quantizes (a policy, an ONNX graph); the inference variants that run the
results live in :mod:`hybridvla_ros.model.export`, which imports this one (never the other way).
"""
from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from hybridvla_ros.model.policy import HybridPolicy

# Linears under this module path stay fp32 (the fused transformer fast path).
KEEP_FP32_PREFIX = "backbone.encoder"
# ONNX ops onnxruntime quantizes; its quantizer rewrites Gemm as MatMul + Add first.
ORT_QUANTIZED_OPS = ("MatMul",)


def quantized_linear_names(policy: HybridPolicy) -> list[str]:
    """Names of the ``nn.Linear`` modules :func:`quantize_policy_dynamic` quantizes (all outside the encoder)."""
    return [name for name, module in policy.named_modules()
            if type(module) is nn.Linear and not name.startswith(KEEP_FP32_PREFIX)]


def quantize_policy_dynamic(policy: HybridPolicy) -> HybridPolicy:
    """A copy of ``policy`` with int8 dynamically quantized head MLPs and input projections.

    The source policy is not modified. Raises ValueError if it has no Linear to quantize.
    """
    from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

    names = quantized_linear_names(policy)
    if not names:
        raise ValueError("kind 'int8': the policy has no nn.Linear outside the transformer to quantize")
    quantized = quantize_dynamic(policy, {name: default_dynamic_qconfig for name in names},
                                 dtype=torch.qint8, inplace=False)
    return quantized.eval()


@contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """onnxruntime.quantization logs a 'consider pre-processing' warning on the root logger."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def quantize_onnx_dynamic(model_bytes: bytes, per_channel: bool = False) -> bytes:
    """``model_bytes`` (an ONNX model) with its weight MatMuls/Gemms dynamically quantized to int8.

    Weights int8 (symmetric, per tensor or ``per_channel``), activations uint8 per call.
    Raises ValueError if onnxruntime's quantization tools cannot be imported or the model
    cannot be quantized.
    """
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise ValueError("kind 'int8-ort': onnxruntime.quantization is not importable "
                         "(pip install onnx onnxruntime)") from exc
    with tempfile.TemporaryDirectory(prefix="hybridvla_int8_") as tmp:
        src, dst = os.path.join(tmp, "fp32.onnx"), os.path.join(tmp, "int8.onnx")
        with open(src, "wb") as f:
            f.write(model_bytes)
        try:
            with _quiet_root_logger():
                quantize_dynamic(src, dst, op_types_to_quantize=list(ORT_QUANTIZED_OPS), per_channel=per_channel,
                                 weight_type=QuantType.QInt8)
        except Exception as exc:  # onnxruntime raises plain Exceptions of many kinds
            raise ValueError(f"kind 'int8-ort': onnxruntime could not quantize the model: {exc}") from exc
        with open(dst, "rb") as f:
            return f.read()

