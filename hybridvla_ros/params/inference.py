"""Parameters of ``inference_node``."""
from __future__ import annotations

from dataclasses import dataclass

from hybridvla_ros.params.base import ParameterError, param
from hybridvla_ros.params.embodiment import EmbodimentParams
from hybridvla_ros.params.remote_policy import RemotePolicyParams

# The names hybridvla_ros.policies registers (with aliases), listed here so that reading the parameter
# file does not import the policies (torch); test_policies checks the two lists agree.
POLICY_SOURCES = ("builtin", "checkpoint", "remote", "sim_expert")
# Those whose weights online adaptation changes (Policy.adaptable): with any other source the graph
# records corrections for offline training but starts no adaptation node.
ADAPTABLE_SOURCES = ("builtin", "checkpoint")


@dataclass(frozen=True, kw_only=True)
class InferenceParams(RemotePolicyParams, EmbodimentParams):  # the mixin first: it checks remote_*, then the rest
    """Policy loading and scheduling."""

    checkpoint_path: str = param("directory with model.safetensors and config.json (read by policy sources with "
                                 "weights: builtin)")
    policy_source: str = param("which policy runs (hybridvla_ros.policies registry): builtin (or its older name "
                               "checkpoint): our model from checkpoint_path; remote: a policy server over openpi's "
                               "websocket protocol (hybridvla serve, serve-lerobot or an openpi server; the remote_* "
                               "keys); "
                               "sim_expert: the simulated robot's scripted expert (sim_robot/expert_chunk), a perfect "
                               "policy to test the graph with",
                               "builtin", choices=POLICY_SOURCES)
    policy_camera: str = param("the camera our model (builtin) reads, one of the robot's cameras (camera_name, "
                               "extra_cameras); '': camera_name, the camera that stamps the observations", "")
    num_threads: int = param("torch intra-op threads", 1, min=1, max=64)
    runtime: str = param("what runs the policy: torch (eager, vision tokens reused for a repeated frame), onnx "
                         "(ONNX Runtime) or int8-ort (ONNX Runtime with int8 weights, fastest)", "torch",
                         choices=("torch", "onnx", "int8-ort"))
    max_observation_age_s: float = param("do not run on observations older than this", 0.5, min=0.01, max=10.0)
    confidence_samples: int = param("samples drawn in one batch to estimate confidence (flow heads)", 5, min=1, max=64)
    # real-time chunking (Black, Galliker, Levine 2025; core/rtc.py)
    real_time_chunking: bool = param("generate each chunk consistent with the steps of the last one that execute "
                                     "before it arrives (frozen from the measured delay, then a soft mask; guided "
                                     "inpainting in the flow); only policies that inpaint (builtin on torch with a "
                                     "flow or coarse_to_fine head) do it, the others keep the buffer's seam blending; "
                                     "false: chunks exactly as without it", False)
    rtc_delay_margin_s: float = param("added to the estimated observation -> publish delay when choosing the frozen "
                                      "steps (over-estimating is safe: frozen steps equal the executing chunk's)",
                                      0.02, min=0.0, max=1.0)
    rtc_delay_percentile: float = param("the delay estimate is this percentile of the recent measured delays", 90.0,
                                        min=50.0, max=100.0)
    rtc_delay_window: int = param("how many recent chunks' delays the estimate reads", 20, min=1, max=1000)
    rtc_max_guidance_weight: float = param("clip of the inpainting guidance weight (the paper's beta)", 5.0,
                                           min=0.0, max=100.0)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.policy_camera and self.policy_camera not in self.cameras:
            raise ParameterError(f"policy_camera: {self.policy_camera!r} is not one of the robot's cameras "
                                 f"{list(self.cameras)} (camera_name, extra_cameras)")

    @property
    def builtin_camera(self) -> str:
        """The camera our model reads: policy_camera, else the anchor camera."""
        return self.policy_camera or self.camera_name
