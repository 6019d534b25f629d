"""HybridPolicy: one shared vision-language-proprio backbone, one action head per embodiment.

Reads top to bottom:

1. ``EmbodimentSpec`` / ``PolicyConfig``: what the model is (plain frozen dataclasses; they
   go into the checkpoint's config.json).
2. ``Normalizer``: per-embodiment statistics (buffers, so they live in model.safetensors).
   Proprio is z-scored per joint. Actions are learned as DELTAS to the measured joint
   positions, ``actions - proprio``, minus their mean per (chunk step, joint), divided by one std
   per joint over the whole chunk (a std per step would blow up the first steps, where the
   delta is mostly the demonstrations' DART noise, and weight them like the far steps that
   carry the motion).
3. ``Backbone``: a small conv encoder turns the image into a GxG grid of tokens (+ learned
   2D position embeddings); a per-embodiment linear layer turns the normalized proprio (the
   commanded joints, then any observed-only state joints such as a suction cup's vacuum) into
   one token (the joint count differs per robot); a linear layer turns the instruction
   embedding into one token; a learned EMBODIMENT TOKEN is prepended. A pre-norm
   TransformerEncoder mixes them; the output at the embodiment token is the pooled feature.
4. Heads, keyed by embodiment name:
   ``TokenHead``: normalized deltas, scaled to [-1, 1], are binned; an MLP emits every
   bin's logit of the whole (T, D) chunk in one pass (parallel decoding); cross-entropy
   against soft (Gaussian) bin labels.
   ``FlowHead``: rectified flow; an MLP predicts the velocity from noise to the chunk given
   the pooled feature and time (new heads: via the predicted clean chunk); K samples are
   drawn as one batch from one backbone pass.
   ``CoarseToFineHead``: a TokenHead and a FlowHead "refiner" conditioned on the token head's
   coarse chunk; serves three modes: ``token`` (coarse only), ``coarse_to_fine`` (coarse +
   flow-sampled residual) and ``flow`` (the refiner with its condition switched off).
5. ``HybridPolicy``: ``forward(batch) -> (loss, loss_dict)`` for training and
   ``predict(batch) -> {actions, deltas, confidence}`` for inference.

A batch holds ONE embodiment (``batch[EMBODIMENT]`` is its name); the trainer alternates
embodiments between steps.

Size: about 870 lines because it is the whole network in one file, read top to bottom in
one sitting like nanoGPT's model.py; the parts only make sense together (the heads share
the backbone's feature and the normalizer's delta scale), and training, checkpoints and
export live in their own modules.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hybridvla_ros.model.text import HASH_ENCODER, INSTRUCTION_DIM, MINILM, MINILM_DIM

# ---------------------------------------------------------------- batch / output keys
IMAGE = "image"              # (B, 3, S, S) float32 RGB in [0, 1]; K cameras (EmbodimentSpec.cameras): (B, K, 3, S, S)
PROPRIO = "proprio"          # (B, D) measured joint positions, raw units (rad or m)
INSTRUCTION = "instruction"  # (B, E) instruction embedding (text.embed_instruction)
ACTIONS = "actions"          # (B, T, D) absolute position targets, raw units
EMBODIMENT = "embodiment"    # str: the one embodiment this batch belongs to
DELTAS = "deltas"            # predict(): (B, T, D) actions - proprio, raw units
CONFIDENCE = "confidence"    # predict(): (B,) in [0, 1]
STATE = "state"              # (B, E) observed-only joints (EmbodimentSpec.state_joints), raw; only when E > 0
IMAGE_TOKENS = "image_tokens"  # optional in a batch: (B, G*G, d_model) = backbone.vision(IMAGE), reused as is

HEAD_TYPES = ("token", "flow", "coarse_to_fine")
# inference modes a head of each type can serve; a coarse_to_fine head (both heads trained) serves all
# ("routed": a learned router picks token or coarse_to_fine per input; needs PolicyConfig.router)
HEAD_MODES = {"token": ("token",), "flow": ("flow",), "coarse_to_fine": ("token", "flow", "coarse_to_fine", "routed")}
# std, in bins, of the token head's soft training labels; 0 = hard labels (plain cross-entropy),
# which measured better on the default budget (franka 83 % of hold-still vs 98 % with 1.0)
TOKEN_LABEL_SIGMA_BINS = 0.0
TOKEN_DECODES = ("expectation", "argmax")
FLOW_PREDICTIONS = ("velocity", "sample")
DELTA_STD_PER = ("joint", "step_joint")
# the inference modes that can inpaint a prefix (real-time chunking): those that integrate a flow
INPAINT_MODES = ("flow", "coarse_to_fine")
INPAINT_METHODS = ("guidance", "pull", "both")  # Guidance.method


@dataclass(frozen=True)
class Guidance:
    """Real-time chunking's inpainting request (``core/rtc.py``), in a head's normalized delta space:
    the chunk should follow ``target`` (B, T, D) where ``weights`` (B, T) say (1: frozen, then the
    soft mask, 0: free). The flow integration adds the paper's guidance (Black et al. 2025, after
    Pokle et al.'s PiGDM): the vector-Jacobian product of the weighted error of the predicted clean
    chunk, its weight ``min(max_weight, (1 - t) / (t r_t^2))``, ``r_t^2 = (1 - t)^2 / (t^2 + (1 - t)^2)``."""

    target: torch.Tensor
    weights: torch.Tensor
    max_weight: float = 5.0
    # "guidance": the paper's; "pull": the predicted clean chunk is pulled to the target by the weights
    # at every step (x1_hat += W (target - x1_hat), frozen entries replaced), which works where the net
    # hardly depends on x_t (heads that predict the clean sample); "both": guidance, then the pull
    method: str = "both"

    def flat(self, repeat: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B*repeat, T*D) target and weights, example-major (each example's K samples together)."""
        B, T, D = self.target.shape
        w = self.weights.reshape(B, T, 1).expand(B, T, D)
        return (self.target.reshape(B, T * D).repeat_interleave(repeat, 0),
                w.reshape(B, T * D).repeat_interleave(repeat, 0))

    def offset(self, base: torch.Tensor) -> Guidance:
        """The same request for a flow whose sample is added to ``base`` (B, T, D): target - base."""
        return Guidance(self.target - base, self.weights, self.max_weight, self.method)


# ---------------------------------------------------------------- configuration
@dataclass(frozen=True)
class EmbodimentSpec:
    """One robot the policy drives: the shape of its proprio and of its action chunks."""

    name: str                                  # embodiment name (franka, aloha, ...)
    action_dim: int                            # D: joints per action (= proprio length)
    chunk_size: int                            # T: actions per predicted chunk
    head_type: str                             # "token", "flow" or "coarse_to_fine" (both: serves any mode)
    joint_names: tuple[str, ...] = ()          # action order; informational, checked by the node
    state_joints: tuple[str, ...] = ()         # observed-only joints the policy reads (batch[STATE], E of them)
    control_period_s: float = 0.0              # seconds between two actions of a chunk (0: unknown)
    instruction: str = ""                      # instruction the demonstrations were recorded with
    # the robot's cameras the policy reads, in batch[IMAGE]'s order, when it reads more than one (then
    # batch[IMAGE] is (B, K, 3, S, S)); () : one camera, (B, 3, S, S), the one the parameter file names
    cameras: tuple[str, ...] = ()
    # flow heads: what the MLP outputs. "sample": the clean chunk x1 (velocity = (x1 - x_t) / (1 - t)), which
    # it can do without copying the T*D-dim noise through its narrower hidden layers; "velocity": x1 - x0
    # directly (every checkpoint written before "sample" existed, hence the default)
    flow_prediction: str = "velocity"

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError(f"embodiment name: must be non-empty, got {self.name!r}")
        if self.action_dim < 1:
            raise ValueError(f"{self.name}.action_dim: must be >= 1, got {self.action_dim!r}")
        if self.chunk_size < 1:
            raise ValueError(f"{self.name}.chunk_size: must be >= 1, got {self.chunk_size!r}")
        if self.head_type not in HEAD_TYPES:
            raise ValueError(f"{self.name}.head_type: must be one of {list(HEAD_TYPES)}, got {self.head_type!r}")
        if self.flow_prediction not in FLOW_PREDICTIONS:
            raise ValueError(f"{self.name}.flow_prediction: must be one of {list(FLOW_PREDICTIONS)}, "
                             f"got {self.flow_prediction!r}")
        if self.joint_names and len(self.joint_names) != self.action_dim:
            raise ValueError(f"{self.name}.joint_names: {len(self.joint_names)} names for "
                             f"action_dim {self.action_dim}")
        object.__setattr__(self, "joint_names", tuple(self.joint_names))
        object.__setattr__(self, "state_joints", tuple(self.state_joints))
        object.__setattr__(self, "cameras", tuple(self.cameras))
        if len(self.cameras) == 1 or len(set(self.cameras)) != len(self.cameras) or not all(
                isinstance(n, str) and n for n in self.cameras):
            raise ValueError(f"{self.name}.cameras: must be () or 2 or more unique camera names, "
                             f"got {list(self.cameras)}")
        if len(set(self.state_joints)) != len(self.state_joints) or not all(
                isinstance(n, str) and n for n in self.state_joints):
            raise ValueError(f"{self.name}.state_joints: must be unique non-empty names, got {list(self.state_joints)}")
        if set(self.state_joints) & set(self.joint_names):
            raise ValueError(f"{self.name}.state_joints: {sorted(set(self.state_joints) & set(self.joint_names))} "
                             "are commanded joints (in joint_names)")

    @property
    def state_dim(self) -> int:
        """E: observed-only joints (batch[STATE] width)."""
        return len(self.state_joints)

    @property
    def num_cameras(self) -> int:
        """K: images per observation (1 unless ``cameras`` names several)."""
        return max(1, len(self.cameras))

    @classmethod
    def from_params(cls, params: object) -> EmbodimentSpec:
        """Build from an ``EmbodimentParams`` (any object with the same attributes); new flow heads
        predict the clean sample. The parameter file's ``head_type`` is the inference mode; the
        "routed" mode is served by a coarse_to_fine head."""
        head_type = "coarse_to_fine" if params.head_type == "routed" else params.head_type  # type: ignore[attr-defined]
        return cls(name=params.embodiment, action_dim=params.action_dim,  # type: ignore[attr-defined]
                   chunk_size=params.chunk_size, head_type=head_type,  # type: ignore[attr-defined]
                   joint_names=tuple(params.joint_names),  # type: ignore[attr-defined]
                   state_joints=tuple(getattr(params, "state_joints", ())),
                   control_period_s=1.0 / params.control_rate_hz,  # type: ignore[attr-defined]
                   instruction=params.instruction)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class PolicyConfig:
    """Hyper-parameters of HybridPolicy. Every field goes into the checkpoint's config.json."""

    # --- embodiments: one head (and proprio projection, normalizer, token) each
    embodiments: tuple[EmbodimentSpec, ...] = ()
    # --- vision: each conv (3x3, stride 2) halves the side; image_size / 2**len(conv_channels) = grid side G
    image_size: int = 96                        # S: input images are (S, S) RGB
    conv_channels: tuple[int, ...] = (16, 32, 64, 128)
    keypoints: int = 32                         # K spatial-softmax keypoints on the stride-4 feature map, fed to
                                                # the backbone as one extra image token; 0: grid tokens only
    # --- transformer (shared backbone)
    d_model: int = 128                          # token width
    num_heads: int = 4
    num_layers: int = 2
    ff_dim: int = 256                           # feed-forward width inside each layer
    dropout: float = 0.0
    # --- instruction
    instruction_dim: int = INSTRUCTION_DIM      # E: length of the instruction embedding
    instruction_encoder: str = HASH_ENCODER     # text.get_encoder name: the encoder E was trained with
    # --- token head
    num_bins: int = 64                          # bins per action dimension
    token_hidden: int = 256                     # MLP width
    token_range_std: float = 3.0                # normalized deltas in [-r, r] std map onto the bins; beyond: clipped
    token_decode: str = "expectation"           # "expectation" (probability-weighted bin centre) or "argmax"
    # --- flow head
    flow_hidden: int = 256                      # velocity MLP width
    flow_time_dim: int = 64                     # sinusoidal time embedding width
    num_flow_steps: int = 5                     # Euler steps from noise to actions at inference
    flow_train_samples: int = 4                 # noise draws per example in training (reuses the pooled feature)
    flow_confidence_scale: float = 0.5          # confidence = exp(-mean sample std / scale), std in normalized units
    # --- coarse-to-fine refiner (head_type "coarse_to_fine"): what coarse chunk it is trained on
    refine_binned_fraction: float = 0.25        # examples whose coarse input is the binned target (else: the
                                                # token head's own detached decode, what it gets at inference)
    refine_uncond_fraction: float = 0.2         # examples with the coarse input switched off (serves "flow" mode)
    router: bool = True                         # coarse_to_fine heads learn a router (serves "routed" mode)
    router_hidden: int = 64                     # its MLP width
    # --- normalization
    std_floor: float = 1e-3                     # lower bound on every std (raw units), for joints that never move

    def __post_init__(self) -> None:
        object.__setattr__(self, "embodiments", tuple(self.embodiments))
        object.__setattr__(self, "conv_channels", tuple(int(c) for c in self.conv_channels))
        names = [e.name for e in self.embodiments]
        if len(set(names)) != len(names):
            raise ValueError(f"embodiments: duplicate names in {names}")
        if not self.conv_channels or any(c < 1 for c in self.conv_channels):
            raise ValueError(f"conv_channels: needs positive channel counts, got {self.conv_channels!r}")
        stride = 2 ** len(self.conv_channels)
        if self.image_size < stride or self.image_size % stride:
            raise ValueError(f"image_size: must be a multiple of {stride} (2**len(conv_channels)), "
                             f"got {self.image_size!r}")
        if isinstance(self.keypoints, bool) or not isinstance(self.keypoints, int) or self.keypoints < 0:
            raise ValueError(f"keypoints: must be an int >= 0, got {self.keypoints!r}")
        if self.keypoints and len(self.conv_channels) < 2:
            raise ValueError("keypoints: need at least 2 conv layers (they read the stride-4 feature map)")
        if self.d_model % 4:
            raise ValueError(f"d_model: must be a multiple of 4 (2D sin/cos position embedding), got {self.d_model!r}")
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model: {self.d_model!r} is not divisible by num_heads {self.num_heads!r}")
        if self.num_layers < 1:
            raise ValueError(f"num_layers: must be >= 1, got {self.num_layers!r}")
        if self.num_bins < 2:
            raise ValueError(f"num_bins: must be >= 2, got {self.num_bins!r}")
        if self.token_decode not in TOKEN_DECODES:
            raise ValueError(f"token_decode: must be one of {list(TOKEN_DECODES)}, got {self.token_decode!r}")
        if self.flow_time_dim < 2 or self.flow_time_dim % 2:
            raise ValueError(f"flow_time_dim: must be an even number >= 2, got {self.flow_time_dim!r}")
        for name in ("num_flow_steps", "flow_train_samples", "instruction_dim", "token_hidden", "flow_hidden",
                     "ff_dim", "router_hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)!r}")
        for name in ("token_range_std", "flow_confidence_scale", "std_floor"):
            if not getattr(self, name) > 0.0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: must be in [0, 1), got {self.dropout!r}")
        for name in ("refine_binned_fraction", "refine_uncond_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}: must be in [0, 1], got {getattr(self, name)!r}")
        if not isinstance(self.instruction_encoder, str) or not self.instruction_encoder:
            raise ValueError(f"instruction_encoder: must be an encoder name, got {self.instruction_encoder!r}")
        if self.instruction_encoder == MINILM and self.instruction_dim != MINILM_DIM:
            raise ValueError(f"instruction_dim: {MINILM!r} embeds to {MINILM_DIM}, got {self.instruction_dim!r}")

    @property
    def grid_size(self) -> int:
        """G: side of the image token grid."""
        return self.image_size // 2 ** len(self.conv_channels)

    def embodiment(self, name: str) -> EmbodimentSpec:
        """The spec called ``name``; ValueError listing the known names otherwise."""
        for spec in self.embodiments:
            if spec.name == name:
                return spec
        raise ValueError(f"embodiment: no head for {name!r}; this policy has {[e.name for e in self.embodiments]}")


# ---------------------------------------------------------------- normalization
class Normalizer(nn.Module):
    """Per-embodiment statistics: proprio z-score per joint, delta z-score per (step, joint),
    state z-score per state joint (only for an embodiment with state joints: older
    checkpoints have no such buffers)."""

    def __init__(self, spec: EmbodimentSpec) -> None:
        super().__init__()
        T, D = spec.chunk_size, spec.action_dim
        self.state_dim = spec.state_dim
        self.register_buffer("proprio_mean", torch.zeros(D))   # (D,)
        self.register_buffer("proprio_std", torch.ones(D))     # (D,)
        if self.state_dim:
            self.register_buffer("state_mean", torch.zeros(self.state_dim))  # (E,)
            self.register_buffer("state_std", torch.ones(self.state_dim))    # (E,)
        self.register_buffer("delta_mean", torch.zeros(T, D))  # (T, D)
        self.register_buffer("delta_std", torch.ones(T, D))    # (T, D)

    @torch.no_grad()
    def fit(self, proprio: np.ndarray, actions: np.ndarray, std_floor: float, delta_std_per: str = "joint",
            state: np.ndarray | None = None) -> None:
        """Set the statistics from demonstrations: proprio (N, D), absolute actions (N, T, D),
        state (N, E) when the embodiment has state joints.

        The delta mean is per (step, joint); the delta std per joint pooled over the chunk
        (``delta_std_per="joint"``) or per (step, joint) (``"step_joint"``).
        """
        proprio = np.asarray(proprio, dtype=np.float64)
        actions = np.asarray(actions, dtype=np.float64)
        T, D = self.delta_mean.shape
        if proprio.ndim != 2 or proprio.shape[1] != D or len(proprio) < 1:
            raise ValueError(f"proprio: expected shape (N, {D}), got {proprio.shape}")
        if actions.shape != (len(proprio), T, D):
            raise ValueError(f"actions: expected shape ({len(proprio)}, {T}, {D}), got {actions.shape}")
        if not (np.isfinite(proprio).all() and np.isfinite(actions).all()):
            raise ValueError("proprio/actions: contain NaN or inf")
        delta = actions - proprio[:, None, :]  # (N, T, D)
        self.proprio_mean.copy_(torch.from_numpy(proprio.mean(0)))
        self.proprio_std.copy_(torch.from_numpy(np.maximum(proprio.std(0), std_floor)))
        self.delta_mean.copy_(torch.from_numpy(delta.mean(0)))
        if delta_std_per not in DELTA_STD_PER:
            raise ValueError(f"delta_std_per: must be one of {list(DELTA_STD_PER)}, got {delta_std_per!r}")
        if delta_std_per == "joint":
            delta_std = np.broadcast_to((delta - delta.mean(0)).std((0, 1)), (T, D))  # (T, D), same per step
        else:
            delta_std = delta.std(0)                                                  # (T, D)
        self.delta_std.copy_(torch.from_numpy(np.maximum(delta_std, std_floor)))
        if self.state_dim:
            state = np.asarray(state if state is not None else np.zeros((0, 0)), dtype=np.float64)
            if state.shape != (len(proprio), self.state_dim) or not np.isfinite(state).all():
                raise ValueError(f"state: expected finite values of shape ({len(proprio)}, {self.state_dim}), "
                                 f"got {state.shape}")
            self.state_mean.copy_(torch.from_numpy(state.mean(0)))
            self.state_std.copy_(torch.from_numpy(np.maximum(state.std(0), std_floor)))

    def normalize_proprio(self, proprio: torch.Tensor) -> torch.Tensor:
        return (proprio - self.proprio_mean) / self.proprio_std  # (B, D)

    def normalize_observation(self, proprio: torch.Tensor, state: torch.Tensor | None) -> torch.Tensor:
        """(B, D + E) the backbone's proprio input: normalized joints, then normalized state joints."""
        if not self.state_dim:
            return self.normalize_proprio(proprio)                              # (B, D)
        state_norm = (state - self.state_mean) / self.state_std                 # (B, E)
        return torch.cat([self.normalize_proprio(proprio), state_norm.to(proprio.dtype)], -1)

    def normalize_delta(self, delta: torch.Tensor) -> torch.Tensor:
        return (delta - self.delta_mean) / self.delta_std  # (B, T, D)

    def denormalize_delta(self, delta_norm: torch.Tensor) -> torch.Tensor:
        return delta_norm * self.delta_std + self.delta_mean  # (B, T, D)


# ---------------------------------------------------------------- backbone
def sinusoidal_2d(grid: int, dim: int) -> torch.Tensor:
    """(grid*grid, dim) fixed 2D position embedding: half the channels encode the row, half the column."""
    quarter = dim // 4
    freq = 1.0 / (100.0 ** (torch.arange(quarter) / quarter))             # (dim/4,)
    pos = torch.arange(grid, dtype=torch.float32)[:, None] * freq          # (G, dim/4)
    axis = torch.cat([pos.sin(), pos.cos()], -1)                           # (G, dim/2)
    rows = axis[:, None, :].expand(grid, grid, -1)                         # (G, G, dim/2)
    cols = axis[None, :, :].expand(grid, grid, -1)                         # (G, G, dim/2)
    return torch.cat([rows, cols], -1).reshape(grid * grid, dim)           # (G*G, dim)


_STRIDE4_LAYERS = 6  # VisionEncoder.convs[:6]: the first two (conv, norm, activation) blocks, stride 4


class VisionEncoder(nn.Module):
    """(B, 3, S, S) image in [0, 1] -> (B, G*G [+ 1], d_model) tokens with 2D position embeddings.

    Two coordinate channels (x, y in [-1, 1]) are appended to the RGB input (CoordConv), so
    the features say where in the image they are, and the grid tokens get a fixed sinusoidal
    2D embedding; both are smooth in position, which lets a target position seen in no
    training episode still map to sensible actions.

    With ``keypoints`` K > 0 one more token carries K spatial-softmax keypoints (Levine et al.
    2016, robomimic's default for behaviour cloning): K 1x1-conv maps over the stride-4
    features (S/4 x S/4), each turned into the expected image (x, y) of its softmax. A
    G x G grid (6 x 6 at 96 px) places a small object only to a cell of 16 px; the keypoints
    place it to a fraction of a pixel.
    """

    def __init__(self, config: PolicyConfig) -> None:
        super().__init__()
        S, G, d = config.image_size, config.grid_size, config.d_model
        layers: list[nn.Module] = []
        c_in = 3 + 2
        for c_out in config.conv_channels:
            layers += [nn.Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1),
                       nn.GroupNorm(math.gcd(8, c_out), c_out), nn.GELU()]
            c_in = c_out
        self.convs = nn.Sequential(*layers)
        self.proj = nn.Linear(c_in, d)
        ramp = torch.linspace(-1.0, 1.0, S)
        coords = torch.stack([ramp[None, :].expand(S, S), ramp[:, None].expand(S, S)])  # (2, S, S): x, y
        self.register_buffer("coords", coords, persistent=False)
        self.register_buffer("pos_embed", sinusoidal_2d(G, d), persistent=False)       # (G*G, d)
        self.keypoints = config.keypoints
        if self.keypoints:
            K, F = config.keypoints, S // 4
            self.keypoint_maps = nn.Conv2d(config.conv_channels[1], K, kernel_size=1)
            self.keypoint_log_temp = nn.Parameter(torch.zeros(()))                      # softmax temperature
            self.keypoint_proj = nn.Sequential(nn.Linear(2 * K, d), nn.GELU(), nn.Linear(d, d))
            ramp_f = torch.linspace(-1.0, 1.0, F)
            grid_xy = torch.stack([ramp_f[None, :].expand(F, F), ramp_f[:, None].expand(F, F)], -1)  # (F, F, 2)
            self.register_buffer("keypoint_grid", grid_xy.reshape(F * F, 2), persistent=False)    # (F*F, 2)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        B = image.shape[0]
        x = torch.cat([image * 2.0 - 1.0, self.coords.expand(B, -1, -1, -1)], 1)  # (B, 5, S, S)
        mid = self.convs[:_STRIDE4_LAYERS](x)                                    # (B, C1, S/4, S/4)
        x = self.convs[_STRIDE4_LAYERS:](mid).flatten(2).transpose(1, 2)         # (B, G*G, C)
        grid_tokens = self.proj(x) + self.pos_embed                              # (B, G*G, d)
        if not self.keypoints:
            return grid_tokens
        logits = self.keypoint_maps(mid).flatten(2) * torch.exp(self.keypoint_log_temp)  # (B, K, F*F)
        points = torch.softmax(logits, -1) @ self.keypoint_grid                  # (B, K, 2): expected (x, y)
        kp_token = self.keypoint_proj(points.flatten(1))[:, None]                # (B, 1, d)
        return torch.cat([grid_tokens, kp_token], 1)                             # (B, G*G + 1, d)


class Backbone(nn.Module):
    """Shared encoder: [embodiment, proprio, instruction, image tokens] -> pooled (B, d_model)."""

    def __init__(self, config: PolicyConfig) -> None:
        super().__init__()
        d = config.d_model
        self.vision = VisionEncoder(config)
        self.embodiment_tokens = nn.ParameterDict(
            {e.name: nn.Parameter(torch.randn(d) * 0.02) for e in config.embodiments})
        self.proprio_proj = nn.ModuleDict({e.name: nn.Linear(e.action_dim + e.state_dim, d)
                                           for e in config.embodiments})
        self.instruction_proj = nn.Linear(config.instruction_dim, d)
        # an embodiment that reads K > 1 cameras: a learned embedding per camera, added to its image tokens
        # (the vision encoder is shared by all cameras; the transformer tells them apart by this)
        self.camera_embed = nn.ParameterDict({e.name: nn.Parameter(torch.randn(e.num_cameras, d) * 0.02)
                                              for e in config.embodiments if e.num_cameras > 1})
        layer = nn.TransformerEncoderLayer(d, config.num_heads, config.ff_dim, config.dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, config.num_layers, norm=nn.LayerNorm(d),
                                             enable_nested_tensor=False)

    def image_tokens(self, image: torch.Tensor, embodiment: str) -> torch.Tensor:
        """(B, 3, S, S) -> vision(image) (B, n, d); (B, K, 3, S, S), K cameras -> each camera's tokens
        plus its camera embedding, concatenated (B, K * n, d)."""
        if image.dim() == 4:
            return self.vision(image)                                    # (B, n, d)
        B, K = image.shape[:2]
        tokens = self.vision(image.flatten(0, 1))                        # (B*K, n, d)
        tokens = tokens.reshape(B, K, tokens.shape[1], -1) + self.camera_embed[embodiment][None, :, None]
        return tokens.flatten(1, 2)                                      # (B, K*n, d)

    def forward(self, image: torch.Tensor, proprio_norm: torch.Tensor, instruction: torch.Tensor,
                embodiment: str, image_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled feature (B, d); ``image_tokens`` (B, n, d), if given, stands in for
        ``image_tokens(image)`` (a caller that saw the same image before can skip the conv encoder)."""
        B = image.shape[0]
        emb_tok = self.embodiment_tokens[embodiment].expand(B, 1, -1)    # (B, 1, d)
        prop_tok = self.proprio_proj[embodiment](proprio_norm)[:, None]  # (B, 1, d)
        instr_tok = self.instruction_proj(instruction)[:, None]          # (B, 1, d)
        img_tok = self.image_tokens(image, embodiment) if image_tokens is None else image_tokens  # (B, n, d)
        tokens = torch.cat([emb_tok, prop_tok, instr_tok, img_tok], 1)   # (B, 3 + G*G, d)
        out = self.encoder(tokens)                                       # (B, 3 + G*G, d)
        return out[:, 0]                                                 # (B, d): at the embodiment token


# ---------------------------------------------------------------- heads
class TokenHead(nn.Module):
    """Discretized actions, all (T, D) bins' logits from one MLP pass."""

    def __init__(self, config: PolicyConfig, spec: EmbodimentSpec) -> None:
        super().__init__()
        self.T, self.D, self.num_bins = spec.chunk_size, spec.action_dim, config.num_bins
        self.range_std = config.token_range_std
        self.decode_rule = config.token_decode
        h = config.token_hidden
        self.mlp = nn.Sequential(nn.Linear(config.d_model, h), nn.GELU(), nn.Linear(h, h), nn.GELU(),
                                 nn.Linear(h, self.T * self.D * self.num_bins))
        # bin i covers [-1, 1] at -1 + 2i/(num_bins-1); derived, not saved
        self.register_buffer("bin_centers", torch.linspace(-1.0, 1.0, self.num_bins), persistent=False)

    def logits(self, feat: torch.Tensor) -> torch.Tensor:
        return self.mlp(feat).reshape(-1, self.T, self.D, self.num_bins)  # (B, T, D, num_bins)

    def to_bins(self, target: torch.Tensor) -> torch.Tensor:
        """Normalized deltas (B, T, D) -> bin indices (B, T, D) int64."""
        u = (target / self.range_std).clamp(-1.0, 1.0)
        return torch.round((u + 1.0) * 0.5 * (self.num_bins - 1)).long()

    def loss(self, feat: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        logits = self.logits(feat)                                      # (B, T, D, num_bins)
        bins = self.to_bins(target)                                     # (B, T, D)
        if TOKEN_LABEL_SIGMA_BINS > 0:
            # soft labels: a Gaussian over the bins around the exact (unrounded) target, so a near
            # miss costs less than a far one
            u = (target / self.range_std).clamp(-1.0, 1.0)                  # (B, T, D)
            width = 2.0 / (self.num_bins - 1)
            soft = (-0.5 * ((self.bin_centers - u[..., None]) / (TOKEN_LABEL_SIGMA_BINS * width)) ** 2).softmax(-1)
            # KL(soft || predicted) = cross-entropy minus the labels' own entropy: same gradient, 0 at best
            ce = F.kl_div(logits.log_softmax(-1), soft, reduction="none").sum(-1).mean()
        else:
            ce = F.cross_entropy(logits.reshape(-1, self.num_bins), bins.reshape(-1))
        acc = (logits.argmax(-1) == bins).float().mean()
        return ce, {"token_ce": ce.item(), "token_bin_acc": acc.item()}

    def sample(self, feat: torch.Tensor, num_samples: int, generator: torch.Generator | None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalized deltas (B, T, D) and confidence (B,) = 1 - mean normalized entropy."""
        del num_samples, generator  # deterministic decoding
        return self.decode(self.logits(feat))

    def decode(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, T, D, num_bins) -> normalized deltas (B, T, D), confidence (B,); computed in fp32."""
        probs = logits.float().softmax(-1)                              # (B, T, D, num_bins)
        if self.decode_rule == "argmax":
            u = self.bin_centers[probs.argmax(-1)]                      # (B, T, D)
        else:
            u = (probs * self.bin_centers).sum(-1)                      # (B, T, D)
        entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1)       # (B, T, D)
        confidence = 1.0 - entropy.mean((1, 2)) / math.log(self.num_bins)
        return u * self.range_std, confidence.clamp(0.0, 1.0)


def sinusoidal_embedding(t: torch.Tensor, dim: int, min_period: float = 4e-3, max_period: float = 4.0
                         ) -> torch.Tensor:
    """(B,) times in [0, 1] -> (B, dim) sin/cos features with periods spread geometrically."""
    half = dim // 2
    fraction = torch.linspace(0.0, 1.0, half, device=t.device, dtype=t.dtype)
    period = min_period * (max_period / min_period) ** fraction        # (half,)
    angle = t[:, None] * (2.0 * math.pi / period)                       # (B, half)
    return torch.cat([angle.sin(), angle.cos()], -1)                    # (B, dim)


class FlowHead(nn.Module):
    """Rectified flow: x_t = (1 - t) x0 + t x1, noise x0 -> chunk x1, velocity target x1 - x0."""

    def __init__(self, config: PolicyConfig, spec: EmbodimentSpec, cond_dim: int = 0) -> None:
        """``cond_dim``: extra conditioning appended to the pooled feature (the refiner's coarse chunk)."""
        super().__init__()
        self.T, self.D = spec.chunk_size, spec.action_dim
        self.time_dim = config.flow_time_dim
        self.num_steps = config.num_flow_steps
        self.train_samples = config.flow_train_samples
        self.confidence_scale = config.flow_confidence_scale
        self.predicts_sample = spec.flow_prediction == "sample"
        n, h = self.T * self.D, config.flow_hidden
        self.net = nn.Sequential(nn.Linear(config.d_model + cond_dim + self.time_dim + n, h), nn.GELU(),
                                 nn.Linear(h, h), nn.GELU(), nn.Linear(h, h), nn.GELU(), nn.Linear(h, n))

    def velocity(self, feat: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """feat (B, d [+ cond_dim]), t (B,), x (B, T*D) -> velocity (B, T*D)."""
        out = self.net(torch.cat([feat, sinusoidal_embedding(t, self.time_dim), x], -1))
        if not self.predicts_sample:
            return out
        # the straight path through x_t that ends at the predicted chunk; Euler never evaluates t = 1
        return (out - x) / (1.0 - t[:, None]).clamp_min(1e-3)

    def loss(self, feat: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        B, K = feat.shape[0], self.train_samples
        feat = feat.repeat_interleave(K, 0)                                  # (B*K, d)
        x1 = target.reshape(B, self.T * self.D).repeat_interleave(K, 0)      # (B*K, T*D)
        x0 = torch.randn_like(x1)
        t = torch.rand(B * K, device=x1.device, dtype=x1.dtype)
        xt = (1.0 - t[:, None]) * x0 + t[:, None] * x1                       # (B*K, T*D)
        if self.predicts_sample:
            net_in = torch.cat([feat, sinusoidal_embedding(t, self.time_dim), xt], -1)
            mse = F.mse_loss(self.net(net_in), x1)
        else:
            mse = F.mse_loss(self.velocity(feat, t, xt), x1 - x0)
        return mse, {"flow_mse": mse.item()}

    def sample(self, feat: torch.Tensor, num_samples: int, generator: torch.Generator | None,
               guide: Guidance | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean of K Euler-integrated samples (B, T, D) and confidence (B,) from their spread.

        The K samples share the pooled feature (one backbone pass) and run as one batch.
        With K = 1 there is no spread and the confidence is 1. ``guide``: real-time chunking.
        """
        B, K = feat.shape[0], num_samples
        x = torch.randn(B * K, self.T * self.D, generator=generator, device=feat.device, dtype=feat.dtype)
        return self.integrate(feat, x, guide)

    def integrate(self, feat: torch.Tensor, noise: torch.Tensor, guide: Guidance | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """``sample`` from given noise (B*K, T*D), example-major: mean (B, T, D), confidence (B,);
        with ``guide``, every Euler step is guided toward its target (real-time chunking)."""
        B = feat.shape[0]
        K = noise.shape[0] // B
        feat = feat.repeat_interleave(K, 0)                                  # (B*K, d)
        x = noise
        dt = 1.0 / self.num_steps
        target, weights = guide.flat(K) if guide is not None else (None, None)  # (B*K, T*D) each
        for i in range(self.num_steps):
            t = torch.full((B * K,), i * dt, device=feat.device, dtype=feat.dtype)
            if guide is None or target is None or weights is None:
                x = x + dt * self.velocity(feat, t, x)                       # (B*K, T*D)
                continue
            tau = i * dt
            if guide.method == "pull":
                v = self.velocity(feat, t, x)
            else:
                v = self.guided_velocity(feat, t, x, target, weights, tau, guide.max_weight)
            if guide.method != "guidance":  # the straight path to the pulled clean chunk
                x1_hat = x + (1.0 - tau) * v
                v = (x1_hat + weights * (target - x1_hat) - x) / (1.0 - tau)
            x = x + dt * v                                                   # (B*K, T*D)
        x = x.reshape(B, K, self.T, self.D)                                  # (B, K, T, D)
        spread = x.std(1, unbiased=False).mean((1, 2))                       # (B,)
        confidence = torch.exp(-spread / self.confidence_scale)
        return x.mean(1), confidence.clamp(0.0, 1.0)


    def guided_velocity(self, feat: torch.Tensor, t: torch.Tensor, x: torch.Tensor, target: torch.Tensor,
                        weights: torch.Tensor, tau: float, max_weight: float) -> torch.Tensor:
        """The velocity at (t, x) plus the guidance toward ``target`` (B, T*D) under ``weights`` (B, T*D):
        ``v + min(max_weight, (1 - t) / (t r_t^2)) * J^T (W (target - x1_hat))`` with ``x1_hat = x + (1 - t) v``
        (one vector-Jacobian product through the velocity net; gradients on inside inference_mode)."""
        with torch.inference_mode(False), torch.enable_grad():
            xg = x.detach().clone().requires_grad_(True)
            v = self.velocity(feat.detach().clone(), t.clone(), xg)         # (B, T*D)
            x1_hat = xg + (1.0 - t.clone()[:, None]) * v
            err = (target.clone() - x1_hat.detach()) * weights.clone()      # (B, T*D)
            (vjp,) = torch.autograd.grad(x1_hat, xg, grad_outputs=err)
        r2 = (1.0 - tau) ** 2 / (tau ** 2 + (1.0 - tau) ** 2)
        weight = max_weight if tau <= 0.0 else min(max_weight, (1.0 - tau) / (tau * r2))
        return (v.detach() + weight * vjp).to(x.dtype)


class CoarseToFineHead(nn.Module):
    """A TokenHead's coarse chunk, refined by a FlowHead that sees it and samples the residual.

    The refiner is conditioned on [coarse chunk (T*D, normalized deltas), 1] appended to the
    pooled feature and learns ``target - coarse`` by rectified flow. In training its coarse
    input is the token head's own (detached) expectation decode, what it meets at inference,
    for most examples: binned ground truth would teach it that the coarse chunk is never off
    by more than half a bin, while on held-out data the token head is off by much more. A
    ``refine_binned_fraction`` of examples get the binned target instead (so it also learns the
    sub-bin residual of a right coarse chunk), and ``refine_uncond_fraction`` get the condition
    switched off ([0, ..., 0, 0], residual = whole chunk): that refiner is a plain flow head,
    so one checkpoint serves all of ``HEAD_MODES["coarse_to_fine"]``.
    """

    def __init__(self, config: PolicyConfig, spec: EmbodimentSpec) -> None:
        super().__init__()
        self.T, self.D = spec.chunk_size, spec.action_dim
        self.token = TokenHead(config, spec)
        # the refiner predicts the clean residual (not the velocity): the residual is small next to the
        # unit noise, and a velocity net leaves noise behind in it (measured: refined chunks were worse
        # than the coarse ones on held-out data, 48 % vs 36 % of hold-still for franka)
        self.flow = FlowHead(config, dataclasses.replace(spec, flow_prediction="sample"),
                             cond_dim=self.T * self.D + 1)
        self.binned_fraction = config.refine_binned_fraction
        self.uncond_fraction = config.refine_uncond_fraction
        self.num_steps = self.flow.num_steps
        self.confidence_scale = self.flow.confidence_scale
        # router: [pooled feature (detached), token confidence] -> logit of "refining makes this chunk better"
        self.router = (nn.Sequential(nn.Linear(config.d_model + 1, config.router_hidden), nn.GELU(),
                                     nn.Linear(config.router_hidden, 1)) if config.router else None)

    def route_logit(self, feat: torch.Tensor, token_conf: torch.Tensor) -> torch.Tensor:
        """(B,) router logit; > 0: refine. Its input is detached: the router never moves the backbone."""
        assert self.router is not None
        return self.router(torch.cat([feat.detach(), token_conf.detach().to(feat.dtype)[:, None]], -1))[:, 0]

    @staticmethod
    def condition(coarse: torch.Tensor, on: torch.Tensor) -> torch.Tensor:
        """Refiner condition (B, T*D + 1) from coarse (B, T, D) and on (B,) in {0, 1}."""
        B = coarse.shape[0]
        return torch.cat([coarse.reshape(B, -1) * on[:, None], on[:, None]], -1)

    def loss(self, feat: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        ce, parts = self.token.loss(feat, target)
        B = feat.shape[0]
        with torch.no_grad():
            coarse, _ = self.token.decode(self.token.logits(feat))                    # (B, T, D)
            binned = self.token.bin_centers[self.token.to_bins(target)] * self.token.range_std  # (B, T, D)
            use_binned = torch.rand(B, device=feat.device) < self.binned_fraction
            coarse = torch.where(use_binned[:, None, None], binned, coarse)
            on = (torch.rand(B, device=feat.device) >= self.uncond_fraction).to(feat.dtype)  # (B,)
        cond = self.condition(coarse, on)                                             # (B, T*D + 1)
        residual = target - coarse * on[:, None, None]                                # (B, T, D)
        mse, flow_parts = self.flow.loss(torch.cat([feat, cond], -1), residual)
        if self.router is None:
            return ce + mse, {**parts, **flow_parts}
        # the router learns, per example, whether the refined chunk is closer to the target than the
        # token head's own decode (what inference would otherwise send); one noise draw, no gradient
        with torch.no_grad():
            decoded, token_conf = self.token.decode(self.token.logits(feat))          # (B, T, D), (B,)
            noise = torch.randn(B, self.T * self.D, device=feat.device, dtype=feat.dtype)
            refined, _ = self.refine(feat, decoded, 1.0, noise)                       # (B, T, D)
            better = ((refined - target).abs().mean((1, 2)) < (decoded - target).abs().mean((1, 2))).to(feat.dtype)
        bce = F.binary_cross_entropy_with_logits(self.route_logit(feat, token_conf), better)
        return ce + mse + bce, {**parts, **flow_parts, "router_bce": bce.item(), "refine_better": better.mean().item()}

    def refine(self, feat: torch.Tensor, coarse: torch.Tensor, on: float, noise: torch.Tensor,
               guide: Guidance | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """coarse (B, T, D) + mean refiner residual from noise (B*K, T*D); confidence (B,) from its spread.
        ``guide`` (on the whole chunk) guides the residual toward its target less the coarse chunk."""
        B = feat.shape[0]
        cond = self.condition(coarse, torch.full((B,), on, dtype=feat.dtype, device=feat.device))
        residual_guide = guide.offset(coarse * on) if guide is not None else None
        residual, confidence = self.flow.integrate(torch.cat([feat, cond], -1), noise,
                                                   residual_guide)  # (B, T, D), (B,)
        return coarse * on + residual, confidence

    def sample(self, feat: torch.Tensor, num_samples: int, generator: torch.Generator | None,
               mode: str = "coarse_to_fine", guide: Guidance | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalized deltas (B, T, D) and confidence (B,) in ``mode`` (one of HEAD_MODES["coarse_to_fine"]).

        coarse_to_fine: confidence = sqrt(token confidence * refined-sample confidence). routed: per
        example, the router's choice of token or coarse_to_fine (with that mode's confidence); a
        batch the router sends wholly to the token head skips the flow integration.
        ``guide`` (flow and coarse_to_fine modes; real-time chunking): the coarse chunk is first pulled
        to the guide's target by its weights (frozen steps: replaced), then the refinement is guided.
        """
        coarse, token_conf = self.token.decode(self.token.logits(feat))               # (B, T, D), (B,)
        if mode == "token":
            return coarse, token_conf
        B, K = feat.shape[0], num_samples
        noise = torch.randn(B * K, self.T * self.D, generator=generator, device=feat.device, dtype=feat.dtype)
        if mode == "flow":
            return self.refine(feat, torch.zeros_like(coarse), 0.0, noise, guide)
        if guide is not None and mode == "coarse_to_fine":
            w = guide.weights[..., None].to(coarse.dtype)                             # (B, T, 1)
            coarse = coarse + w * (guide.target.to(coarse.dtype) - coarse)
            refined, flow_conf = self.refine(feat, coarse, 1.0, noise, guide)
            return refined, (token_conf * flow_conf).sqrt()
        if mode == "routed":
            refine = self.route_logit(feat, token_conf) > 0                           # (B,)
            if not bool(refine.any()):  # the router's saving: no flow integration at all
                return coarse, token_conf
            refined, flow_conf = self.refine(feat, coarse, 1.0, noise)
            return (torch.where(refine[:, None, None], refined, coarse),
                    torch.where(refine, (token_conf * flow_conf).sqrt(), token_conf))
        refined, flow_conf = self.refine(feat, coarse, 1.0, noise)
        return refined, (token_conf * flow_conf).sqrt()


# ---------------------------------------------------------------- policy
class HybridPolicy(nn.Module):
    """Shared backbone + per-embodiment normalizer and head."""

    def __init__(self, config: PolicyConfig) -> None:
        super().__init__()
        if not config.embodiments:
            raise ValueError("embodiments: a policy needs at least one embodiment, got ()")
        self.config = config
        self.backbone = Backbone(config)
        head_class = {"token": TokenHead, "flow": FlowHead, "coarse_to_fine": CoarseToFineHead}
        self.heads = nn.ModuleDict({e.name: head_class[e.head_type](config, e) for e in config.embodiments})
        self.normalizers = nn.ModuleDict({e.name: Normalizer(e) for e in config.embodiments})

    @property
    def embodiment_names(self) -> tuple[str, ...]:
        return tuple(e.name for e in self.config.embodiments)

    def fit_normalization(self, embodiment: str, proprio: np.ndarray, actions: np.ndarray,
                          state: np.ndarray | None = None) -> None:
        """Set ``embodiment``'s statistics from its demonstrations (N, D) and (N, T, D), and its
        state joints' (N, E) when it has any.

        Flow heads that predict the clean chunk (``flow_prediction="sample"``) get one delta
        std per joint (the first chunk steps, mostly recording noise, would otherwise be
        blown up to the scale of the far steps); the default keeps one per (step, joint).
        With the default training budget, the sample mode for aloha/leap helped them (aloha
        94-111 % of hold-still against 132 %) but the shared backbone then served franka
        worse (98-142 % against 83 %), so it is an option, not the default, for now.
        """
        spec = self.config.embodiment(embodiment)
        per = "joint" if spec.flow_prediction == "sample" else "step_joint"
        self.normalizers[embodiment].fit(proprio, actions, self.config.std_floor, delta_std_per=per, state=state)

    def _check_batch(self, batch: Mapping[str, object], with_actions: bool) -> EmbodimentSpec:
        """Validate keys and shapes; return the batch's embodiment spec."""
        keys = (EMBODIMENT, IMAGE, PROPRIO, INSTRUCTION) + ((ACTIONS,) if with_actions else ())
        missing = [k for k in keys if k not in batch]
        if missing:
            raise ValueError(f"batch: missing keys {missing} (has {sorted(batch)})")
        name = batch[EMBODIMENT]
        if not isinstance(name, str):
            raise ValueError(f"batch[{EMBODIMENT!r}]: expected one embodiment name (str), got {name!r}")
        spec = self.config.embodiment(name)
        S, D, T, E = self.config.image_size, spec.action_dim, spec.chunk_size, self.config.instruction_dim
        B = batch[IMAGE].shape[0]  # type: ignore[attr-defined]
        image_shape = (B, 3, S, S) if spec.num_cameras == 1 else (B, spec.num_cameras, 3, S, S)
        expected: dict[str, tuple[int, ...]] = {IMAGE: image_shape, PROPRIO: (B, D), INSTRUCTION: (B, E)}
        if spec.state_dim:
            if STATE not in batch:
                raise ValueError(f"batch: missing key {STATE!r}: {name!r} observes state joints "
                                 f"{list(spec.state_joints)}")
            expected[STATE] = (B, spec.state_dim)
        if with_actions:
            expected[ACTIONS] = (B, T, D)
        for key, shape in expected.items():
            value = batch[key]
            if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape:
                got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise ValueError(f"batch[{key!r}]: expected a tensor of shape {shape} for {name!r}, got {got}")
        return spec

    def encode(self, batch: Mapping[str, object]) -> torch.Tensor:
        """Pooled backbone feature (B, d_model) of a (checked) batch; uses batch[IMAGE_TOKENS] if present."""
        name: str = batch[EMBODIMENT]  # type: ignore[assignment]
        proprio_norm = self.normalizers[name].normalize_observation(batch[PROPRIO], batch.get(STATE))  # (B, D + E)
        return self.backbone(batch[IMAGE], proprio_norm, batch[INSTRUCTION], name,
                             image_tokens=batch.get(IMAGE_TOKENS))

    def forward(self, batch: Mapping[str, object]) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss of one single-embodiment batch, and its parts as floats."""
        spec = self._check_batch(batch, with_actions=True)
        feat = self.encode(batch)                                                  # (B, d)
        delta = cast(torch.Tensor, batch[ACTIONS]) - cast(torch.Tensor, batch[PROPRIO])[:, None, :]  # (B, T, D)
        target = self.normalizers[spec.name].normalize_delta(delta)                # (B, T, D)
        loss, parts = self.heads[spec.name].loss(feat, target)
        return loss, {"loss": loss.item(), **parts}

    def modes(self, embodiment: str) -> tuple[str, ...]:
        """The inference modes ``embodiment``'s head serves (HEAD_MODES, less "routed" without a router)."""
        spec = self.config.embodiment(embodiment)
        return tuple(m for m in HEAD_MODES[spec.head_type] if m != "routed" or self.config.router)

    def check_mode(self, embodiment: str, mode: str | None) -> str:
        """The inference mode to use for ``embodiment`` (None: its head_type); ValueError if its head
        cannot serve ``mode``."""
        spec = self.config.embodiment(embodiment)
        if mode is None:
            return spec.head_type
        if mode == "routed" and spec.head_type == "coarse_to_fine" and not self.config.router:
            raise ValueError(f"head_type: {embodiment!r}'s coarse_to_fine head was trained without a router, so it "
                             "serves token, flow or coarse_to_fine, not 'routed'")
        if mode not in HEAD_MODES[spec.head_type]:
            raise ValueError(f"head_type: {embodiment!r} has a {spec.head_type!r} head, which serves "
                             f"{list(HEAD_MODES[spec.head_type])}, not {mode!r} (train it with head_type "
                             f"'coarse_to_fine' to serve every mode)")
        return mode

    @torch.no_grad()
    def predict(self, batch: Mapping[str, object], num_samples: int = 1,
                generator: torch.Generator | None = None, mode: str | None = None,
                prefix: torch.Tensor | None = None, prefix_weights: torch.Tensor | None = None,
                max_guidance_weight: float = 5.0, inpaint_method: str = "both") -> dict[str, torch.Tensor]:
        """Action chunks for a single-embodiment batch (no ACTIONS key needed).

        Returns ACTIONS (B, T, D) absolute targets, DELTAS (B, T, D) = ACTIONS - proprio and
        CONFIDENCE (B,). Flow sampling draws ``num_samples`` noise samples (from ``generator``
        if given, for reproducible output) and averages them; token decoding ignores both.
        ``mode`` (token | flow | coarse_to_fine; None: the head's type) must be one the head serves.
        ``prefix`` (B, T, D) absolute targets and ``prefix_weights`` (B, T): real-time chunking's
        inpainting (:class:`Guidance`, in the head's normalized delta space); ValueError for a mode
        that cannot inpaint (token, routed).
        """
        if num_samples < 1:
            raise ValueError(f"num_samples: must be >= 1, got {num_samples!r}")
        spec = self._check_batch(batch, with_actions=False)
        mode = self.check_mode(spec.name, mode)
        guide = None
        if prefix is not None:
            guide = self.guidance(spec, mode, batch, prefix, prefix_weights, max_guidance_weight, inpaint_method)
        feat = self.encode(batch)                                                   # (B, d)
        head = self.heads[spec.name]
        if isinstance(head, CoarseToFineHead):
            delta_norm, confidence = head.sample(feat, num_samples, generator, mode, guide)  # (B, T, D), (B,)
        elif isinstance(head, FlowHead):
            delta_norm, confidence = head.sample(feat, num_samples, generator, guide)  # (B, T, D), (B,)
        else:
            delta_norm, confidence = head.sample(feat, num_samples, generator)        # (B, T, D), (B,)
        delta = self.normalizers[spec.name].denormalize_delta(delta_norm)           # (B, T, D)
        return {ACTIONS: cast(torch.Tensor, batch[PROPRIO])[:, None, :] + delta, DELTAS: delta, CONFIDENCE: confidence}


    def guidance(self, spec: EmbodimentSpec, mode: str, batch: Mapping[str, object], prefix: torch.Tensor,
                 weights: torch.Tensor | None, max_weight: float, method: str = "both") -> Guidance:
        """The absolute ``prefix`` (B, T, D) as a :class:`Guidance` in the head's normalized delta space
        (relative to the batch's proprio, the normalizer's delta statistics); ValueError when ``mode``
        cannot inpaint or a shape is wrong."""
        if mode not in INPAINT_MODES:
            raise ValueError(f"prefix: the {mode!r} mode cannot inpaint (real-time chunking needs one of "
                             f"{list(INPAINT_MODES)})")
        proprio = cast(torch.Tensor, batch[PROPRIO])                                 # (B, D)
        B, T, D = proprio.shape[0], spec.chunk_size, spec.action_dim
        if tuple(prefix.shape) != (B, T, D) or weights is None or tuple(weights.shape) != (B, T):
            got = (tuple(prefix.shape), None if weights is None else tuple(weights.shape))
            raise ValueError(f"prefix/prefix_weights: expected shapes {(B, T, D)} and {(B, T)}, got {got}")
        if not max_weight >= 0.0:
            raise ValueError(f"max_guidance_weight: must be >= 0, got {max_weight!r}")
        if method not in INPAINT_METHODS:
            raise ValueError(f"inpaint_method: must be one of {list(INPAINT_METHODS)}, got {method!r}")
        target = self.normalizers[spec.name].normalize_delta(prefix.to(proprio.dtype) - proprio[:, None, :])
        return Guidance(target, weights.to(proprio.dtype), float(max_weight), method)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
