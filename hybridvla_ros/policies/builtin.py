"""``builtin``: our model, served by :mod:`hybridvla_ros.model.runner` (torch eager, onnx or int8-ort).

The runner does the work (batch 1, cached instruction embedding, vision tokens reused for a
repeated frame); this class only states what it reads and returns, in the protocol's terms.
Registered as ``builtin``, and as ``checkpoint``, the ``policy_source`` value it had before
the policies package existed.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from hybridvla_ros.model.runner import ExportedRunner, PolicyRunner, load_runner
from hybridvla_ros.params.inference import InferenceParams
from hybridvla_ros.policies.base import DEFAULT_CAMERA, PolicyChunk, PolicyInputError, PolicyObservation
from hybridvla_ros.policies.registry import register_policy

# Warm-up predictions before an update is swapped in: the first calls after loading are slow.
WARMUP_ITERATIONS = 2


class BuiltinPolicy:
    """One embodiment's head of a loaded checkpoint, as a :class:`~hybridvla_ros.policies.base.Policy`.

    ``step_period_s``: the robot's control period (the chunk's time base); ``confidence_samples``:
    flow samples drawn in one batch for the confidence (token heads ignore it); ``joint_names``:
    the robot's joints, used when the checkpoint does not name its own (older checkpoints).
    """

    name = "builtin"
    adaptable = True
    plan_topics: tuple[str, ...] = ()

    def __init__(self, runner: PolicyRunner | ExportedRunner, step_period_s: float, confidence_samples: int = 5,
                 joint_names: Sequence[str] = (), camera: str = DEFAULT_CAMERA) -> None:
        if not step_period_s > 0:
            raise ValueError(f"step_period_s: must be positive, got {step_period_s!r}")
        self.runner = runner
        self.step_period_s = float(step_period_s)
        self.confidence_samples = int(confidence_samples)
        self.joint_names: tuple[str, ...] = tuple(runner.joint_names) or tuple(joint_names)
        if len(self.joint_names) != runner.action_dim:
            raise ValueError(f"joint_names: the checkpoint names no joints for {runner.embodiment!r}; "
                             f"{runner.action_dim} needed, got {list(joint_names)}")
        self.state_joints: tuple[str, ...] = tuple(runner.state_joints)
        # a checkpoint trained on several cameras names them (the robot's camera names); else the one
        # the parameter file says our model reads
        self.cameras: tuple[str, ...] = tuple(runner.cameras) or (camera,)
        self.action_dim: int = runner.action_dim
        self.chunk_size: int = runner.chunk_size
        self.model_version: int = int(runner.model_version)
        self.head_type: str = runner.head_type
        # real-time chunking: torch with a flow or coarse_to_fine mode; not token/routed, not onnx/int8-ort
        self.inpaints: bool = bool(runner.inpaints)

    def on_plan(self, topic: str, plan: PolicyChunk) -> None:
        """Never called: this source reads no plans (``plan_topics`` is empty); ValueError."""
        raise ValueError(f"plan_topics: the builtin policy reads no plans, got one on {topic!r}")

    def infer(self, obs: PolicyObservation) -> PolicyChunk:
        """The model's chunk for ``obs``, stamped with the observation's time; PolicyInputError for
        other joints than this policy's, a missing camera, a wrong image or NaN. When it ``inpaints``,
        ``obs.prefix`` (planned for this chunk's time base) is inpainted; otherwise it is ignored."""
        if obs.joint_names != self.joint_names or obs.state_joints != self.state_joints:
            raise PolicyInputError(f"joint_names: expected {list(self.joint_names)} and state joints "
                                   f"{list(self.state_joints)}, got {list(obs.joint_names)} and "
                                   f"{list(obs.state_joints)}")
        images = [obs.image(c) for c in self.cameras]
        prefix = obs.prefix if self.inpaints else None
        if prefix is not None and (abs(prefix.start_s - obs.stamp_s) > 1e-9
                                   or abs(prefix.step_period_s - self.step_period_s) > 1e-9):
            raise PolicyInputError(f"prefix: planned for a chunk from {prefix.start_s} every {prefix.step_period_s} "
                                   f"s; this chunk starts at {obs.stamp_s} every {self.step_period_s} s")
        try:
            # copies: torch.from_numpy warns on the observation's read-only arrays
            pred = self.runner.predict(images[0] if len(images) == 1 else images,
                                       np.array(obs.joint_positions), obs.task,
                                       num_samples=self.confidence_samples, state=np.array(obs.state),
                                       prefix=prefix)
        except ValueError as exc:
            raise PolicyInputError(str(exc)) from None
        # ONNX Runtime's confidence is not clipped like torch's; NaN means the model gives none this time
        confidence = min(max(pred.confidence, 0.0), 1.0) if math.isfinite(pred.confidence) else None
        return PolicyChunk(actions=pred.actions, start_s=obs.stamp_s, step_period_s=self.step_period_s,
                           confidence=confidence, latency_s=pred.latency_s, head_type=pred.head_type,
                           model_version=self.model_version)

    def warmup(self) -> None:
        """A few predictions on a blank observation, so the first served call is not slow."""
        self.runner.warmup(WARMUP_ITERATIONS)

    def reset(self) -> None:
        """Forget the last frame's vision tokens (outputs never depend on them: a cache)."""
        if isinstance(self.runner, PolicyRunner):
            self.runner.clear_vision_cache()


@register_policy("builtin", aliases=("checkpoint",))
def make_builtin_policy(params: InferenceParams, checkpoint_path: str) -> BuiltinPolicy:
    """Our model from ``checkpoint_path`` for ``params.embodiment`` on ``params.runtime``, serving
    ``params.head_type``; CheckpointError/ValueError/OSError naming what is wrong."""
    runner = load_runner(checkpoint_path, params.embodiment, params.runtime, num_threads=params.num_threads,
                         mode=params.head_type)
    runner.max_guidance_weight = params.rtc_max_guidance_weight
    missing = [c for c in runner.cameras if c not in params.cameras]
    if missing:
        raise ValueError(f"checkpoint '{checkpoint_path}' reads cameras {list(runner.cameras)}; {missing} are not "
                         f"this robot's cameras {list(params.cameras)} (camera_name, extra_cameras)")
    return BuiltinPolicy(runner, step_period_s=params.control_period_s,
                         confidence_samples=params.confidence_samples, joint_names=params.joint_names,
                         camera=params.builtin_camera)
