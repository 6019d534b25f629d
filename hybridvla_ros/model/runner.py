"""PolicyRunner: what the inference node calls. numpy in, absolute action chunk out.

Loads a checkpoint, picks one embodiment's head, and turns one (image, joint positions,
instruction) observation into a :class:`Prediction`: batch 1, ``torch.inference_mode``,
the instruction embedding cached per string, the vision tokens of the last image reused when
the next (resized) image is byte-for-byte the same (a repeated camera frame skips the conv
encoder; outputs are identical either way), flow noise from the runner's own seeded
generator (same checkpoint + same seed + same calls -> same outputs).
"""
from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

from hybridvla_ros.core.image import camera_views
from hybridvla_ros.core.rtc import ChunkPrefix
from hybridvla_ros.model.checkpoint import KEY_MODEL_VERSION, load_checkpoint, read_checkpoint_config
from hybridvla_ros.model.policy import (
    CONFIDENCE,
    DELTAS,
    EMBODIMENT,
    IMAGE,
    IMAGE_TOKENS,
    INPAINT_MODES,
    INSTRUCTION,
    PROPRIO,
    STATE,
    HybridPolicy,
    PolicyConfig,
)
from hybridvla_ros.model.text import embed_instruction

INSTRUCTION_CACHE_SIZE = 32


@dataclass(frozen=True)
class Prediction:
    """One predicted action chunk."""

    actions: np.ndarray      # (T, D) float64 ABSOLUTE position targets (proprio + de-normalized delta)
    confidence: float        # in [0, 1]: token entropy or flow-sample agreement
    latency_s: float         # the model's own time (preprocessing + forward)
    head_type: str           # the inference mode that made it: "token", "flow" or "coarse_to_fine"


class PolicyRunner:
    """One embodiment's view of a loaded HybridPolicy."""

    def __init__(self, policy: HybridPolicy, config: PolicyConfig, embodiment: str, model_version: int = 0,
                 seed: int = 0, mode: str | None = None) -> None:
        """``mode``: token | flow | coarse_to_fine (None: the head's type); ValueError if the head cannot serve it."""
        spec = config.embodiment(embodiment)  # ValueError naming the known embodiments
        self.policy = policy.eval()
        self.config = config
        self.embodiment = embodiment
        self.action_dim: int = spec.action_dim
        self.chunk_size: int = spec.chunk_size
        self.head_type: str = policy.check_mode(embodiment, mode)  # inference mode
        self.instruction_encoder: str = config.instruction_encoder
        self.image_size: int = config.image_size
        self.model_version: int = int(model_version)
        self.joint_names: tuple[str, ...] = spec.joint_names
        self.state_joints: tuple[str, ...] = spec.state_joints  # observed-only joints predict() needs as `state`
        self.cameras: tuple[str, ...] = spec.cameras  # () one image; else predict() takes one image per camera
        self.control_period_s: float = spec.control_period_s
        self.default_instruction: str = spec.instruction
        # real-time chunking: the flow modes inpaint a prefix (predict(prefix=...)); token and routed cannot
        self.inpaints: bool = self.head_type in INPAINT_MODES
        self.max_guidance_weight: float = 5.0  # the paper's beta; the inference node sets its parameter
        self.inpaint_method: str = "both"      # policy.INPAINT_METHODS; likewise
        self._generator = torch.Generator().manual_seed(seed)
        self._instructions: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._last_image: np.ndarray | None = None         # (S, S, 3) uint8: the last resized image
        self._last_image_tokens: torch.Tensor | None = None  # (1, G*G, d_model): its vision tokens

    @classmethod
    def load(cls, checkpoint_dir: str | os.PathLike[str], embodiment: str, num_threads: int = 1,
             seed: int = 0, mode: str | None = None, instruction_encoder: str | None = None) -> PolicyRunner:
        """Load ``checkpoint_dir`` for ``embodiment``, serving ``mode`` (None: the head's type).

        Raises CheckpointError, or ValueError if the checkpoint has no head for ``embodiment``,
        its head cannot serve ``mode``, or it was trained with another instruction encoder than
        ``instruction_encoder`` (None: use the checkpoint's). ``num_threads`` sets torch's
        intra-op threads for the whole process. The encoder's weights load on the first predict.
        """
        if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
            raise ValueError(f"num_threads: must be a positive integer, got {num_threads!r}")
        policy, config = load_checkpoint(checkpoint_dir)
        if instruction_encoder is not None and instruction_encoder != config.instruction_encoder:
            raise ValueError(f"instruction_encoder: checkpoint '{checkpoint_dir}' was trained with "
                             f"{config.instruction_encoder!r} ({config.instruction_dim}-d), "
                             f"not {instruction_encoder!r}")
        model_version = read_checkpoint_config(checkpoint_dir)[KEY_MODEL_VERSION]
        torch.set_num_threads(num_threads)
        return cls(policy, config, embodiment, model_version=model_version, seed=seed, mode=mode)

    def _instruction_embedding(self, instruction: str) -> torch.Tensor:
        """(1, E) embedding, cached per string (least recently used dropped)."""
        cached = self._instructions.get(instruction)
        if cached is None:
            cached = torch.from_numpy(embed_instruction(instruction, self.config.instruction_dim,
                                                             self.config.instruction_encoder))[None]  # (1, E)
            self._instructions[instruction] = cached
            if len(self._instructions) > INSTRUCTION_CACHE_SIZE:
                self._instructions.popitem(last=False)
        else:
            self._instructions.move_to_end(instruction)
        return cached

    def clear_vision_cache(self) -> None:
        """Forget the last image's vision tokens (call after changing the policy's weights in place)."""
        self._last_image, self._last_image_tokens = None, None

    def _vision_tokens(self, image_rgb: np.ndarray, image: torch.Tensor) -> torch.Tensor:
        """(1, n, d_model) image tokens of ``image`` (from ``image_rgb``, (S, S, 3) or (K, S, S, 3)
        uint8): the previous call's when the bytes are equal, else freshly encoded (inside
        inference_mode)."""
        if self._last_image is not None and np.array_equal(image_rgb, self._last_image):
            return self._last_image_tokens
        tokens = self.policy.backbone.image_tokens(image, self.embodiment)                  # (1, n, d)
        self._last_image, self._last_image_tokens = image_rgb.copy(), tokens
        return tokens

    def _check_inputs(self, image_rgb: np.ndarray | Sequence[np.ndarray], joint_positions: np.ndarray, instruction: str,
                      num_samples: int) -> np.ndarray:
        """Validate; return joint_positions as a (D,) float64 array."""
        for image in self._images(image_rgb):
            if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
                got = image.shape if isinstance(image, np.ndarray) else type(image).__name__
                raise ValueError(f"image_rgb: expected an (H, W, 3) array, got {got}")
            if image.dtype != np.uint8:
                raise ValueError(f"image_rgb: expected dtype uint8, got {image.dtype}")
            if image.shape[0] < 1 or image.shape[1] < 1:
                raise ValueError(f"image_rgb: empty image of shape {image.shape}")
        try:
            q = np.asarray(joint_positions, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"joint_positions: expected {self.action_dim} numbers, got {joint_positions!r}") from None
        if q.shape != (self.action_dim,):
            raise ValueError(f"joint_positions: expected shape ({self.action_dim},) for {self.embodiment!r}, "
                             f"got {q.shape}")
        if not np.isfinite(q).all():
            raise ValueError(f"joint_positions: must be finite, got {q.tolist()}")
        if not isinstance(instruction, str):
            raise ValueError(f"instruction: expected a str, got {instruction!r}")
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples: must be a positive integer, got {num_samples!r}")
        return q

    def check_state(self, state: np.ndarray | None) -> np.ndarray:
        """``state`` as an (E,) float64 array in ``state_joints`` order; ValueError when it is missing,
        has the wrong length or is not finite (None or empty is fine for a policy without state joints)."""
        E = len(self.state_joints)
        if state is None:
            if E:
                raise ValueError(f"state: {self.embodiment!r} needs its state joints {list(self.state_joints)}")
            return np.zeros(0)
        try:
            x = np.asarray(state, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise ValueError(f"state: expected {E} numbers ({list(self.state_joints)}), got {state!r}") from None
        if x.shape != (E,) or not np.isfinite(x).all():
            raise ValueError(f"state: expected {E} finite numbers ({list(self.state_joints)}), got {x.tolist()}")
        return x

    def predict(self, image_rgb: np.ndarray | Sequence[np.ndarray], joint_positions: np.ndarray, instruction: str,
                num_samples: int = 5, state: np.ndarray | None = None,
                prefix: ChunkPrefix | None = None) -> Prediction:
        """Action chunk for one observation.

        image_rgb (H, W, 3) uint8, resized to image_size with cv2.INTER_AREA if needed (a policy
        that reads K ``cameras``: K such images, a sequence or a (K, H, W, 3) array, in that order);
        joint_positions (D,); ``state`` (E,) the ``state_joints`` (required when there are
        any). ``num_samples`` flow samples (one batch) give the confidence; token heads
        ignore it. ``prefix`` (real-time chunking; only when ``inpaints``): the chunk is
        generated consistent with it (guided inpainting) and its frozen steps are its targets
        exactly. Raises ValueError on wrong shapes, dtypes or NaN, or a prefix it cannot inpaint.
        """
        start = time.perf_counter()
        q = self._check_inputs(image_rgb, joint_positions, instruction, num_samples)
        x = self.check_state(state)
        if prefix is not None:
            self._check_prefix(prefix)
        with torch.inference_mode():
            batch = self.batch(image_rgb, q, instruction, x)
            guide = {} if prefix is None else {
                "prefix": torch.from_numpy(np.array(prefix.targets, dtype=np.float32))[None],   # (1, T, D)
                "prefix_weights": torch.from_numpy(np.array(prefix.weights, dtype=np.float32))[None],  # (1, T)
                "max_guidance_weight": self.max_guidance_weight, "inpaint_method": self.inpaint_method}
            out = self.policy.predict(batch, num_samples=num_samples, generator=self._generator, mode=self.head_type,
                                      **guide)
        delta = out[DELTAS][0].double().numpy()                                   # (T, D)
        actions = q[None, :] + delta                                              # (T, D) in float64
        if prefix is not None and prefix.frozen_steps:  # they execute from the old chunk: say so exactly
            actions[:prefix.frozen_steps] = prefix.targets[:prefix.frozen_steps]
        confidence = float(out[CONFIDENCE][0])
        return Prediction(actions=actions, confidence=min(max(confidence, 0.0), 1.0),
                          latency_s=time.perf_counter() - start, head_type=self.head_type)

    def _check_prefix(self, prefix: ChunkPrefix) -> None:
        """ValueError unless this runner can inpaint ``prefix`` (its mode, its shape)."""
        if not self.inpaints:
            raise ValueError(f"prefix: the {self.head_type!r} mode cannot inpaint (real-time chunking needs "
                             f"one of {list(INPAINT_MODES)}); blend the seams in the action buffer instead")
        if prefix.targets.shape != (self.chunk_size, self.action_dim):
            raise ValueError(f"prefix: expected ({self.chunk_size}, {self.action_dim}) targets, "
                             f"got {prefix.targets.shape}")

    def reseed(self, seed: int) -> None:
        """Restart the sampling noise from ``seed`` and forget the cached image (an episode of its own)."""
        self._generator.manual_seed(int(seed))
        self._last_image = self._last_image_tokens = None

    def predictor(self, instruction: str) -> Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, float]]:
        """This runner as a :mod:`hybridvla_ros.sim.rollout` Predictor for ``instruction``:
        (image, joint positions, state joints) -> (actions (T, D), confidence)."""
        return _predictor(self, instruction)

    def _images(self, image_rgb: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
        """The observation's images, one per camera the policy reads (``cameras``, else one):
        ``image_rgb`` is one (H, W, 3) image, or for K cameras K images (a sequence, or a
        (K, H, W, 3) array) in ``cameras`` order; ValueError for another count."""
        return camera_views(image_rgb, self.cameras)

    def image_input(self, image_rgb: np.ndarray | Sequence[np.ndarray]) -> tuple[np.ndarray, torch.Tensor]:
        """One observation's images as the model reads them: (([K,] S, S, 3) uint8 resized with
        cv2.INTER_AREA, ([K,] 3, S, S) float in [0, 1]); K images for a policy that reads K
        ``cameras``, in that order (ValueError for another count)."""
        S = self.image_size
        resized = [im if im.shape[:2] == (S, S) else
                   cv2.resize(np.ascontiguousarray(im), (S, S), interpolation=cv2.INTER_AREA)  # (S, S, 3)
                   for im in self._images(image_rgb)]
        rgb = np.ascontiguousarray(resized[0] if not self.cameras else np.stack(resized))  # ([K,] S, S, 3)
        return rgb, torch.from_numpy(rgb).movedim(-1, -3).float() / 255.0  # ([K,] 3, S, S)

    def batch(self, image_rgb: np.ndarray | Sequence[np.ndarray], q: np.ndarray, instruction: str,
              state: np.ndarray | None = None) -> dict[str, object]:
        """The policy batch (B = 1) of one checked observation: each image resized to image_size,
        vision tokens reused for a repeated frame, cached instruction embedding, the state joints
        when the policy has any. Call under inference_mode."""
        image_rgb, image = self.image_input(image_rgb)
        image = image[None]  # (1, 3, S, S) / (1, K, 3, S, S)
        out: dict[str, object] = {
            EMBODIMENT: self.embodiment, IMAGE: image,
            IMAGE_TOKENS: self._vision_tokens(image_rgb, image),                       # (1, G*G, d)
            PROPRIO: torch.from_numpy(np.asarray(q, dtype=np.float64)).float()[None],  # (1, D)
            INSTRUCTION: self._instruction_embedding(instruction)}                     # (1, E)
        if self.state_joints:
            out[STATE] = torch.from_numpy(self.check_state(state)).float()[None]  # (1, E)
        return out

    def warmup(self, iterations: int = 3) -> float:
        """Run a few predictions on a blank observation (first calls are slow); return the last latency.

        The flow-noise generator is restored afterwards, so warming up does not change later outputs.
        """
        state = self._generator.get_state()
        image = np.zeros((len(self.cameras), self.image_size, self.image_size, 3) if self.cameras
                         else (self.image_size, self.image_size, 3), dtype=np.uint8)
        q = np.zeros(self.action_dim)
        latency = 0.0
        for _ in range(iterations):
            latency = self.predict(image, q, self.default_instruction,
                                   state=np.zeros(len(self.state_joints))).latency_s
        self._generator.set_state(state)
        return latency


RUNTIMES = ("torch", "onnx", "int8-ort")


class ExportedRunner:
    """PolicyRunner's interface served by an exported variant: ``onnx`` (the whole batch-1
    sampler in ONNX Runtime, fp32) or ``int8-ort`` (the same graph with int8 weight MatMuls),
    2-4x faster than torch eager at batch 1 on a CPU (``hybridvla bench-model``). The
    instruction embedding is cached per string; the vision tokens are not (the graph runs
    whole). Built from a loaded PolicyRunner, whose attributes it mirrors."""

    def __init__(self, runner: PolicyRunner, runtime: str, seed: int = 0) -> None:
        from hybridvla_ros.model.export import make_variant

        if runtime not in RUNTIMES[1:]:
            raise ValueError(f"runtime: must be one of {list(RUNTIMES)}, got {runtime!r}")
        self.base = runner
        self.runtime = runtime
        self.variant = make_variant(runner, runtime, seed=seed)  # ValueError for a mode the head cannot serve
        # PolicyRunner's attributes, spelled out so the type checker knows them
        self.embodiment: str = runner.embodiment
        self.action_dim: int = runner.action_dim
        self.chunk_size: int = runner.chunk_size
        self.head_type: str = runner.head_type
        self.image_size: int = runner.image_size
        self.model_version: int = runner.model_version
        self.joint_names: tuple[str, ...] = runner.joint_names
        self.state_joints: tuple[str, ...] = runner.state_joints
        self.cameras: tuple[str, ...] = runner.cameras
        self.control_period_s: float = runner.control_period_s
        self.default_instruction: str = runner.default_instruction
        # the exported graph is the plain sampler: no guidance inside it, so no real-time chunking
        self.inpaints: bool = False
        self.max_guidance_weight: float = runner.max_guidance_weight
        self.inpaint_method: str = runner.inpaint_method

    def predict(self, image_rgb: np.ndarray | Sequence[np.ndarray], joint_positions: np.ndarray, instruction: str,
                num_samples: int = 5, state: np.ndarray | None = None,
                prefix: ChunkPrefix | None = None) -> Prediction:
        """Same contract as PolicyRunner.predict (ValueError on wrong shapes, dtypes or NaN, and for
        any ``prefix``: the exported graph cannot inpaint)."""
        if prefix is not None:
            raise ValueError(f"prefix: the {self.runtime} runtime cannot inpaint (real-time chunking runs on "
                             "torch only); blend the seams in the action buffer instead")
        start = time.perf_counter()
        q = np.asarray(joint_positions, dtype=np.float64)
        if q.shape != (self.action_dim,) or not np.all(np.isfinite(q)):
            raise ValueError(f"joint_positions: expected {self.action_dim} finite numbers, got {q.shape}")
        x = self.base.check_state(state)
        actions, confidence = self.variant.predict(image_rgb, q, instruction, num_samples, state=x)
        return Prediction(actions=np.asarray(actions, dtype=np.float64), confidence=float(confidence),
                          latency_s=time.perf_counter() - start, head_type=self.head_type)

    def warmup(self, iterations: int = 3) -> float:
        """A few predictions on a blank observation; returns the last latency."""
        image = np.zeros((*((len(self.cameras),) if self.cameras else ()), self.image_size, self.image_size, 3),
                         dtype=np.uint8)
        latency = 0.0
        for _ in range(iterations):
            latency = self.predict(image, np.zeros(self.action_dim), self.default_instruction,
                                   state=np.zeros(len(self.state_joints))).latency_s
        return latency

    def predictor(self, instruction: str) -> Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, float]]:
        """Same as PolicyRunner.predictor."""
        return _predictor(self, instruction)


def _predictor(runner: PolicyRunner | ExportedRunner,
               instruction: str) -> Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, float]]:
    """``runner`` as a rollout Predictor for ``instruction``."""
    def predict(image_rgb: np.ndarray, joint_positions: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, float]:
        out = runner.predict(image_rgb, joint_positions, instruction, state=state)
        return out.actions, out.confidence

    return predict


class SeededPredictor:
    """A policy as a rollout Predictor that pickles into a worker: ``predict(image, q, state)`` and
    ``reseed(episode)`` (the sampling seed of that episode of a collection seeded ``seed``). The runner
    is made in the process that predicts (a torch generator does not travel)."""

    def __init__(self, policy: Any, config: Any, embodiment: str, instruction: str, seed: int) -> None:
        self.policy, self.config, self.embodiment = policy, config, embodiment
        self.instruction, self.seed = instruction, int(seed)
        self._runner: PolicyRunner | None = None
        self._predict: Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, float]] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_runner": None, "_predict": None}

    def _get_runner(self) -> PolicyRunner:
        if self._runner is None:
            self._runner = PolicyRunner(self.policy, self.config, self.embodiment, seed=self.seed)
            self._predict = self._runner.predictor(self.instruction)
        return self._runner

    def reseed(self, episode: int) -> None:
        self._get_runner().reseed(int(np.random.SeedSequence([self.seed, episode]).generate_state(1)[0]))

    def predict(self, image: np.ndarray, q: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, float]:
        self._get_runner()
        assert self._predict is not None
        return self._predict(image, q, state)


def load_runner(checkpoint_dir: str | os.PathLike[str], embodiment: str, runtime: str = "torch",
                num_threads: int = 1, seed: int = 0, mode: str | None = None) -> PolicyRunner | ExportedRunner:
    """PolicyRunner.load, served by ``runtime`` (torch eager, or an ONNX Runtime export)."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime: must be one of {list(RUNTIMES)}, got {runtime!r}")
    runner = PolicyRunner.load(checkpoint_dir, embodiment, num_threads=num_threads, seed=seed, mode=mode)
    return runner if runtime == "torch" else ExportedRunner(runner, runtime, seed=seed)
