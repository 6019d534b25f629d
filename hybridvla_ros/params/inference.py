"""Parameters of ``inference_node``."""
from __future__ import annotations

from dataclasses import dataclass

from hybridvla_ros.params.base import param
from hybridvla_ros.params.embodiment import EmbodimentParams

# The names hybridvla_ros.policies registers (with aliases), listed here so that reading the parameter
# file does not import the policies (torch); test_policies checks the two lists agree.
POLICY_SOURCES = ("builtin", "checkpoint", "sim_expert")


@dataclass(frozen=True, kw_only=True)
class InferenceParams(EmbodimentParams):
    """Policy loading and scheduling."""

    checkpoint_path: str = param("directory with model.safetensors and config.json (read by policy sources with "
                                 "weights: builtin)")
    policy_source: str = param("which policy runs (hybridvla_ros.policies registry): builtin (or its older name "
                               "checkpoint): our model from checkpoint_path; sim_expert: the simulated robot's "
                               "scripted expert (sim_robot/expert_chunk), a perfect policy to test the graph with",
                               "builtin", choices=POLICY_SOURCES)
    num_threads: int = param("torch intra-op threads", 1, min=1, max=64)
    runtime: str = param("what runs the policy: torch (eager, vision tokens reused for a repeated frame), onnx "
                         "(ONNX Runtime) or int8-ort (ONNX Runtime with int8 weights, fastest)", "torch",
                         choices=("torch", "onnx", "int8-ort"))
    max_observation_age_s: float = param("do not run on observations older than this", 0.5, min=0.01, max=10.0)
    confidence_samples: int = param("samples drawn in one batch to estimate confidence (flow heads)", 5, min=1, max=64)
