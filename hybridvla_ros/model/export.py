"""Fast batch-1 inference variants of one embodiment's forward, behind one interface.

``make_variant(runner_or_policy, kind, embodiment)`` returns an :class:`InferenceVariant`
whose ``predict(image, joint_positions, instruction, num_samples) -> (actions (T, D),
confidence)`` takes the same numpy inputs as :meth:`PolicyRunner.predict`. Kinds:

- ``fp32``: the checkpoint as trained, eager PyTorch (the reference).
- ``int8``: a copy with the head MLPs and input projections dynamically quantized
  (``torch.ao.quantization.quantize_dynamic``: int8 weights, activations quantized per call);
  the convolutions and the transformer stay fp32, on torch's fused path
  (:func:`hybridvla_ros.model.quantize.quantize_policy_dynamic`).
- ``int8-ort``: the ``onnx`` graph below with its weight MatMuls dynamically quantized to int8
  by ``onnxruntime.quantization``, run by onnxruntime
  (:class:`OnnxInt8Variant`, quantized by :func:`hybridvla_ros.model.quantize.quantize_onnx_dynamic`).
- ``bf16``: a copy with backbone and head weights cast to bfloat16 (a weight cast, not
  ``torch.autocast``: at batch 1 autocast's per-op casts cost more than they save);
  normalization, the flow Euler update, the token decode and the confidence stay fp32.
  Only pays off on CPUs with native bf16 (AVX512-BF16 / AMX); the benchmark says.
- ``onnx``: the whole batch-1 sampler exported with the TorchScript ONNX exporter and run
  with onnxruntime (CPUExecutionProvider, 1 intra-op and 1 inter-op thread). The graph
  takes (image, raw proprio, instruction embedding[, noise]) and returns (raw deltas,
  confidence), normalization included. In flow and coarse_to_fine mode the noise input is
  (K, T*D) with K a dynamic axis, and the ``num_flow_steps`` Euler steps are unrolled in the
  graph (fixed at export time); token mode has no noise input. The mode (token | flow |
  coarse_to_fine, one the head serves) is fixed at export time.

All kinds share :class:`Batch1Sampler`, a batch-1 re-statement of ``HybridPolicy.predict``
that takes the flow noise as an input. The noise is drawn from the variant's own seeded
generator exactly as ``FlowHead.sample`` draws it, so with the same seed every kind sees
the same noise and differences between kinds are numerics only (``fp32`` reproduces
``PolicyRunner.predict`` to float precision).
"""
from __future__ import annotations

import copy
import io
import math
import time
import warnings
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from hybridvla_ros.core.image import camera_views
from hybridvla_ros.model.policy import CoarseToFineHead, FlowHead, HybridPolicy, PolicyConfig
from hybridvla_ros.model.quantize import quantize_onnx_dynamic, quantize_policy_dynamic
from hybridvla_ros.model.text import embed_instruction

VARIANT_KINDS = ("fp32", "int8", "bf16", "onnx", "int8-ort")
ONNX_OPSET = 17


class Batch1Sampler(nn.Module):
    """One embodiment's predict for batch 1: (image, proprio, instruction, noise) -> (delta, confidence).

    image (1, 3, S, S) in [0, 1] ((1, K, 3, S, S) for an embodiment that reads K cameras);
    proprio (1, D + E) raw: the D joints, then the embodiment's
    E state joints (E = 0 for most); instruction (1, E); noise (K, T*D)
    in flow and coarse_to_fine mode (ignored in token mode). Returns delta (1, T, D) raw units
    (actions = proprio + delta) and confidence (1,). Mirrors ``HybridPolicy.predict`` in
    ``mode`` (None: the head's type). With ``compute_dtype`` bf16 the backbone and head
    (already cast by the caller) run in bf16; normalization, the Euler update, the softmax
    decode and the confidence stay fp32.
    """

    def __init__(self, policy: HybridPolicy, embodiment: str, compute_dtype: torch.dtype = torch.float32,
                 mode: str | None = None) -> None:
        super().__init__()
        self.mode = policy.check_mode(embodiment, mode)
        self.backbone = policy.backbone
        self.head = policy.heads[embodiment]
        self.normalizer = policy.normalizers[embodiment]
        self.embodiment = embodiment
        self.action_dim = policy.config.embodiment(embodiment).action_dim
        self.is_flow = self.mode != "token"
        self.dtype = compute_dtype

    def _integrate(self, head: FlowHead, feat: torch.Tensor, noise: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """FlowHead.integrate for one example: feat (1, d'), noise (K, T*D) -> mean (1, T, D), confidence (1,)."""
        dt_ = self.dtype
        K = noise.shape[0]
        feat_k = feat.expand(K, -1)                                                      # (K, d')
        x = noise                                                                        # (K, T*D) fp32
        dt = 1.0 / head.num_steps
        for i in range(head.num_steps):  # unrolled in the ONNX graph
            t = torch.full_like(x[:, 0], i * dt)                                         # (K,)
            x = x + dt * head.velocity(feat_k, t.to(dt_), x.to(dt_)).float()             # (K, T*D)
        x = x.reshape(1, K, head.T, head.D)                                              # (1, K, T, D)
        spread = x.std(1, unbiased=False).mean((1, 2))                                   # (1,)
        confidence = torch.exp(-spread / head.confidence_scale).clamp(0.0, 1.0)
        return x.mean(1), confidence

    def forward(self, image: torch.Tensor, proprio: torch.Tensor, instruction: torch.Tensor,
                noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        dt_ = self.dtype
        D = self.action_dim
        state = proprio[:, D:] if self.normalizer.state_dim else None                    # (1, E)
        proprio_norm = self.normalizer.normalize_observation(proprio[:, :D], state)      # (1, D + E)
        feat = self.backbone(image.to(dt_), proprio_norm.to(dt_), instruction.to(dt_), self.embodiment)  # (1, d)
        head = self.head
        if isinstance(head, CoarseToFineHead):
            coarse, token_conf = _token_decode(head.token, head.token.logits(feat).float())  # (1, T, D), (1,)
            if self.mode == "token":
                delta_norm, confidence = coarse, token_conf
            elif self.mode == "routed":  # both, then the router's pick: one graph with no data-dependent branch
                assert noise is not None
                cond = head.condition(coarse, torch.ones_like(token_conf))                # (1, T*D + 1)
                residual, flow_conf = self._integrate(head.flow, torch.cat([feat, cond.to(dt_)], -1), noise)
                refine = head.route_logit(feat, token_conf.to(dt_)).float() > 0          # (1,)
                delta_norm = torch.where(refine[:, None, None], coarse + residual, coarse)
                confidence = torch.where(refine, (token_conf * flow_conf).sqrt(), token_conf)
            else:
                assert noise is not None
                on = 1.0 if self.mode == "coarse_to_fine" else 0.0
                cond = head.condition(coarse * on, torch.full_like(token_conf, on))         # (1, T*D + 1)
                residual, flow_conf = self._integrate(head.flow, torch.cat([feat, cond.to(dt_)], -1), noise)
                delta_norm = coarse * on + residual                                      # (1, T, D)
                confidence = (token_conf * flow_conf).sqrt() if on else flow_conf
        elif self.is_flow:
            assert noise is not None and isinstance(head, FlowHead)
            delta_norm, confidence = self._integrate(head, feat, noise)                  # (1, T, D), (1,)
        else:
            delta_norm, confidence = _token_decode(head, head.logits(feat).float())     # (1, T, D), (1,)
        return self.normalizer.denormalize_delta(delta_norm), confidence


def _token_decode(head: nn.Module, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """TokenHead.sample from its logits (B, T, D, bins), in fp32."""
    probs = logits.softmax(-1)                                                           # (B, T, D, bins)
    if head.decode_rule == "argmax":
        u = head.bin_centers[probs.argmax(-1)]                                           # (B, T, D)
    else:
        u = (probs * head.bin_centers).sum(-1)                                           # (B, T, D)
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1)                            # (B, T, D)
    confidence = 1.0 - entropy.mean((1, 2)) / math.log(head.num_bins)
    return u * head.range_std, confidence.clamp(0.0, 1.0)


class InferenceVariant:
    """Batch-1 predictor for one embodiment; subclasses supply ``_run``."""

    kind = "?"

    def __init__(self, policy: HybridPolicy, embodiment: str, seed: int = 0, mode: str | None = None) -> None:
        spec = policy.config.embodiment(embodiment)  # ValueError naming the known embodiments
        self.config: PolicyConfig = policy.config
        self.embodiment = embodiment
        self.head_type = policy.check_mode(embodiment, mode)  # the inference mode: token | flow | coarse_to_fine
        self.action_dim = spec.action_dim
        self.state_dim = spec.state_dim
        self.chunk_size = spec.chunk_size
        self.cameras = spec.cameras  # (): one image; else one per camera, in this order
        self.image_size = policy.config.image_size
        self._generator = torch.Generator().manual_seed(seed)
        self._instructions: dict[str, torch.Tensor] = {}

    def reseed(self, seed: int) -> None:
        """Restart the flow-noise generator (the benchmark gives every kind the same noise)."""
        self._generator.manual_seed(seed)

    def _inputs(self, image_rgb: Any, joint_positions: Any, instruction: str, num_samples: int,
                state: Any = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, np.ndarray]:
        views = camera_views(image_rgb, self.cameras)
        for view in views:
            if not isinstance(view, np.ndarray) or view.ndim != 3 or view.shape[2] != 3 or view.dtype != np.uint8:
                got = f"{view.shape} {view.dtype}" if isinstance(view, np.ndarray) else type(view).__name__
                raise ValueError(f"image_rgb: expected an (H, W, 3) uint8 array, got {got}")
        q = np.asarray(joint_positions, dtype=np.float64)
        if q.shape != (self.action_dim,) or not np.isfinite(q).all():
            raise ValueError(f"joint_positions: expected {self.action_dim} finite numbers for "
                             f"{self.embodiment!r}, got shape {q.shape}")
        x = np.asarray(state if state is not None else (), dtype=np.float64).reshape(-1)
        if x.shape != (self.state_dim,) or not np.isfinite(x).all():
            raise ValueError(f"state: expected {self.state_dim} finite numbers for {self.embodiment!r}, "
                             f"got shape {x.shape}")
        if not isinstance(instruction, str):
            raise ValueError(f"instruction: expected a str, got {instruction!r}")
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples: must be a positive integer, got {num_samples!r}")
        S = self.image_size
        views = [v if v.shape[:2] == (S, S) else cv2.resize(np.ascontiguousarray(v), (S, S),
                                                            interpolation=cv2.INTER_AREA) for v in views]
        rgb = np.ascontiguousarray(views[0] if not self.cameras else np.stack(views))          # ([K,] S, S, 3)
        image = torch.from_numpy(rgb).movedim(-1, -3)[None].float() / 255.0                 # (1, [K,] 3, S, S)
        emb = self._instructions.get(instruction)
        if emb is None:
            emb = torch.from_numpy(embed_instruction(instruction, self.config.instruction_dim,
                                                     self.config.instruction_encoder))[None]  # (1, E)
            if len(self._instructions) >= 32:
                self._instructions.clear()
            self._instructions[instruction] = emb
        noise = None
        if self.head_type != "token":  # drawn as FlowHead.sample draws it, so fp32 == PolicyRunner
            noise = torch.randn(num_samples, self.chunk_size * self.action_dim, generator=self._generator)
        return image, torch.from_numpy(np.concatenate([q, x])).float()[None], emb, noise, q  # proprio (1, D + E)

    def _run(self, image: torch.Tensor, proprio: torch.Tensor, instruction: torch.Tensor,
             noise: torch.Tensor | None) -> tuple[np.ndarray, float]:
        raise NotImplementedError

    def predict(self, image_rgb: Any, joint_positions: Any, instruction: str, num_samples: int = 5,
                state: Any = None) -> tuple[np.ndarray, float]:
        """(T, D) float64 absolute action targets and confidence in [0, 1] for one observation
        (``image_rgb``: one (H, W, 3) uint8 image, or one per camera for a policy that reads several);
        ``state`` (E,) the embodiment's state joints (None when it has none).

        Raises ValueError on a wrong image, joint vector, state, instruction or sample count.
        """
        image, proprio, emb, noise, q = self._inputs(image_rgb, joint_positions, instruction, num_samples, state)
        delta, confidence = self._run(image, proprio, emb, noise)
        return q[None, :] + delta.astype(np.float64), min(max(float(confidence), 0.0), 1.0)


class TorchVariant(InferenceVariant):
    """fp32 / int8 / bf16: a Batch1Sampler run eagerly under ``torch.inference_mode``."""

    def __init__(self, policy: HybridPolicy, embodiment: str, kind: str, seed: int = 0,
                 mode: str | None = None) -> None:
        super().__init__(policy, embodiment, seed, mode)
        self.kind = kind
        policy = policy.eval()
        if kind == "int8":
            policy = quantize_policy_dynamic(policy)  # a copy; the transformer stays fp32 on its fused path
        dtype = torch.float32
        if kind == "bf16":  # a copy with backbone and heads in bf16; the normalizers stay fp32
            policy = copy.deepcopy(policy)
            policy.backbone.to(torch.bfloat16)
            policy.heads.to(torch.bfloat16)
            dtype = torch.bfloat16
        self.sampler = Batch1Sampler(policy, embodiment, dtype, mode=self.head_type).eval()

    def _run(self, image: torch.Tensor, proprio: torch.Tensor, instruction: torch.Tensor,
             noise: torch.Tensor | None) -> tuple[np.ndarray, float]:
        with torch.inference_mode():
            delta, confidence = self.sampler(image, proprio, instruction, noise)
        return delta[0].numpy(), float(confidence[0])


def export_onnx(policy: HybridPolicy, embodiment: str, mode: str | None = None) -> bytes:
    """The embodiment's Batch1Sampler in ``mode`` as an ONNX model (bytes); see the module docstring."""
    sampler = Batch1Sampler(policy.eval(), embodiment, mode=mode).eval()
    spec = policy.config.embodiment(embodiment)
    S, E = policy.config.image_size, policy.config.instruction_dim
    image = torch.rand(1, 3, S, S) if not spec.cameras else torch.rand(1, len(spec.cameras), 3, S, S)
    args: tuple[torch.Tensor, ...] = (image, torch.zeros(1, spec.action_dim + spec.state_dim), torch.zeros(1, E))
    names = ["image", "proprio", "instruction"]
    dynamic: dict[str, dict[int, str]] = {}
    if sampler.is_flow:
        args += (torch.randn(2, spec.chunk_size * spec.action_dim),)
        names.append("noise")
        dynamic["noise"] = {0: "num_samples"}
    # Grad enabled on purpose: the fused encoder-layer / attention fast paths (no ONNX ops)
    # are only taken without grad, so tracing records the plain ops instead.
    buf = io.BytesIO()
    with torch.enable_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings on shape checks that are constant at batch 1
        torch.onnx.export(sampler, args, buf, input_names=names, output_names=["delta", "confidence"],
                          dynamic_axes=dynamic or None, opset_version=ONNX_OPSET, dynamo=False)
    return buf.getvalue()


class OnnxVariant(InferenceVariant):
    """The exported Batch1Sampler run by onnxruntime on the CPU with one thread."""

    kind = "onnx"

    def __init__(self, policy: HybridPolicy, embodiment: str, seed: int = 0, mode: str | None = None) -> None:
        super().__init__(policy, embodiment, seed, mode)
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - requirements/python.txt installs it
            raise ValueError("kind 'onnx': onnxruntime is not installed (pip install onnx onnxruntime)") from exc
        t0 = time.perf_counter()
        self.model_bytes = export_onnx(policy, embodiment, self.head_type)
        self.export_time_s = time.perf_counter() - t0
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self.session = ort.InferenceSession(self.model_bytes, options, providers=["CPUExecutionProvider"])

    def _run(self, image: torch.Tensor, proprio: torch.Tensor, instruction: torch.Tensor,
             noise: torch.Tensor | None) -> tuple[np.ndarray, float]:
        feed = {"image": image.numpy(), "proprio": proprio.numpy(), "instruction": instruction.numpy()}
        if noise is not None:
            feed["noise"] = noise.numpy()
        delta, confidence = self.session.run(None, feed)
        return delta[0], float(confidence[0])


class OnnxInt8Variant(OnnxVariant):
    """The ``onnx`` kind's graph, weight MatMuls quantized to int8, run by onnxruntime (same session options)."""

    kind = "int8-ort"

    def __init__(self, policy: HybridPolicy, embodiment: str, seed: int = 0, mode: str | None = None,
                 per_channel: bool = False) -> None:
        super().__init__(policy, embodiment, seed, mode)
        import onnxruntime as ort

        t0 = time.perf_counter()
        self.model_bytes = quantize_onnx_dynamic(self.model_bytes, per_channel)
        self.quantize_time_s = time.perf_counter() - t0
        fp32_session = self.session
        self.session = ort.InferenceSession(self.model_bytes, fp32_session.get_session_options(),
                                            providers=fp32_session.get_providers())


def make_variant(runner_or_policy: Any, kind: str, embodiment: str | None = None, seed: int = 0,
                 mode: str | None = None) -> InferenceVariant:
    """A batch-1 predictor of ``kind`` (one of VARIANT_KINDS) for ``embodiment`` in ``mode``.

    ``runner_or_policy`` is a PolicyRunner (``embodiment`` and ``mode`` default to its own) or a
    HybridPolicy (``mode`` defaults to the head's type). The source model is not modified
    (int8 quantizes a copy). Raises ValueError for an unknown kind, a missing or unknown
    embodiment, a mode the head cannot serve, or another object.
    """
    if kind not in VARIANT_KINDS:
        raise ValueError(f"kind: must be one of {list(VARIANT_KINDS)}, got {kind!r}")
    if isinstance(runner_or_policy, HybridPolicy):
        policy = runner_or_policy
    elif isinstance(getattr(runner_or_policy, "policy", None), HybridPolicy):
        policy = runner_or_policy.policy
        embodiment = embodiment if embodiment is not None else getattr(runner_or_policy, "embodiment", None)
        if mode is None and embodiment == getattr(runner_or_policy, "embodiment", None):
            mode = getattr(runner_or_policy, "head_type", None)
    else:
        raise ValueError(f"runner_or_policy: expected a PolicyRunner or HybridPolicy, "
                         f"got {type(runner_or_policy).__name__}")
    if not isinstance(embodiment, str):
        raise ValueError(f"embodiment: name one of {list(policy.embodiment_names)}, got {embodiment!r}")
    policy.check_mode(embodiment, mode)
    if kind == "int8-ort":
        return OnnxInt8Variant(policy, embodiment, seed, mode)
    if kind == "onnx":
        return OnnxVariant(policy, embodiment, seed, mode)
    return TorchVariant(policy, embodiment, kind, seed, mode)
