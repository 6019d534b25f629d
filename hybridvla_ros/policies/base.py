"""The ``Policy`` protocol: one declared interface for every source of action chunks.

A policy sees an observation already in its own terms (its joints in its order, its state
joints, its cameras by name, the task text) and answers one chunk of absolute targets on a
time base. Mapping the robot's observation to those terms and the chunk back to the robot's
joint order is the job of :mod:`hybridvla_ros.policies.transforms` (openpi's per-robot
input/output transforms), so a policy never knows which robot it drives and the node never
asks which kind of policy it holds. numpy only, ROS-free.

Sources that need more than observations say so in data, not by their type: a policy may
read plans published by someone else (the simulated expert reads the simulated robot's
``sim_robot/expert_chunk``); it names those streams in ``plan_topics`` and receives each
plan through ``on_plan``. Later fields join :class:`PolicyObservation` with defaults, so
existing sources keep working: ``prefix`` is real-time chunking's request (the steps of the
executing chunk the answer must agree with, :class:`hybridvla_ros.core.rtc.ChunkPrefix`); a
source that can honour it says ``inpaints = True``, every other source ignores it (the action
buffer's seam blending smooths its seams).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from hybridvla_ros.core.rtc import ChunkPrefix

# The camera name of the Observation message's one image, until the embodiment files name their cameras.
DEFAULT_CAMERA = "camera"


class PolicyInputError(ValueError):
    """An observation (or a plan) a policy cannot answer; the message names the field.

    The inference node logs it and skips that observation: no chunk, the action buffer holds.
    """


def _vector(name: str, values: object, length: int) -> np.ndarray:
    """``values`` as a read-only (length,) finite float64 array; PolicyInputError naming ``name`` otherwise."""
    try:
        arr = np.array(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise PolicyInputError(f"{name}: expected {length} numbers, got {values!r}") from None
    if arr.shape != (length,):
        raise PolicyInputError(f"{name}: expected {length} values, got {arr.size}")
    if not np.isfinite(arr).all():
        raise PolicyInputError(f"{name}: must be finite, got {arr.tolist()}")
    arr.flags.writeable = False
    return arr


def _real(name: str, value: object) -> float:
    """``value`` as a finite float; ValueError naming ``name`` otherwise."""
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        x = math.nan
    if not math.isfinite(x):
        raise ValueError(f"{name}: must be a finite number, got {value!r}")
    return x


def _names(name: str, values: Sequence[str]) -> tuple[str, ...]:
    """``values`` as a tuple of unique non-empty names; PolicyInputError otherwise."""
    if isinstance(values, (str, bytes)):
        raise PolicyInputError(f"{name}: expected a sequence of names, got {values!r}")
    out = tuple(values)
    if not all(isinstance(n, str) and n for n in out) or len(set(out)) != len(out):
        raise PolicyInputError(f"{name}: names must be unique non-empty strings, got {list(out)}")
    return out


@dataclass(frozen=True)
class PolicyObservation:
    """One observation in the policy's terms.

    ``joint_positions`` (D,) are the policy's ``joint_names`` in that order; ``state`` (E,)
    its ``state_joints`` (observed, not commanded: franka's suction cup), in that order;
    ``images`` (H, W, 3) uint8 RGB by camera name. Constructing one with mismatched lengths,
    NaN, or a malformed image raises PolicyInputError naming the field.
    """

    stamp_s: float                          # when it was observed (the anchor camera frame's stamp)
    joint_names: tuple[str, ...]
    joint_positions: np.ndarray             # (D,) float64, rad or m
    task: str                               # the instruction, e.g. "pick the cube"
    images: Mapping[str, np.ndarray] = field(default_factory=dict)  # camera -> (H, W, 3) uint8 RGB
    state_joints: tuple[str, ...] = ()
    state: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (E,) float64, each joint's own unit
    # real-time chunking: what the answer must agree with, in the policy's joint order (None: nothing);
    # only sources that declare ``inpaints`` read it
    prefix: ChunkPrefix | None = None

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "stamp_s", _real("stamp_s", self.stamp_s))
        except ValueError as exc:
            raise PolicyInputError(str(exc)) from None
        if self.prefix is not None and not isinstance(self.prefix, ChunkPrefix):
            raise PolicyInputError(f"prefix: expected a ChunkPrefix or None, got {type(self.prefix).__name__}")
        if not isinstance(self.task, str):
            raise PolicyInputError(f"task: expected a str, got {self.task!r}")
        names = _names("joint_names", self.joint_names)
        state_names = _names("state_joints", self.state_joints)
        object.__setattr__(self, "joint_names", names)
        object.__setattr__(self, "state_joints", state_names)
        object.__setattr__(self, "joint_positions", _vector("joint_positions", self.joint_positions, len(names)))
        object.__setattr__(self, "state", _vector("state", self.state, len(state_names)))
        for camera, image in self.images.items():
            if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
                got = image.shape if isinstance(image, np.ndarray) else type(image).__name__
                raise PolicyInputError(f"images[{camera!r}]: expected an (H, W, 3) array, got {got}")
            if image.dtype != np.uint8 or image.shape[0] < 1 or image.shape[1] < 1:
                raise PolicyInputError(f"images[{camera!r}]: expected non-empty uint8, got {image.dtype} "
                                       f"{image.shape}")

    def image(self, camera: str) -> np.ndarray:
        """The (H, W, 3) uint8 image of ``camera``; PolicyInputError naming the cameras there are."""
        try:
            return self.images[camera]
        except KeyError:
            raise PolicyInputError(f"images: no camera {camera!r} (have {sorted(self.images)})") from None


@dataclass(frozen=True)
class PolicyChunk:
    """One chunk of absolute targets on its time base: action k is the target for
    ``start_s + k * step_period_s``. Constructing one with a malformed field raises ValueError."""

    actions: np.ndarray          # (T, D) float64 ABSOLUTE position targets, in the policy's joint order
    start_s: float               # when action 0 applies (the observation it answers, or the plan's stamp)
    step_period_s: float         # seconds between two actions
    confidence: float | None     # in [0, 1]; None when the source gives none
    latency_s: float             # the source's own time for this chunk
    head_type: str               # what made it: the model's inference mode (token, flow, ...) or the source's name
    model_version: int           # which weights answered (0 for sources without versions)

    def __post_init__(self) -> None:
        try:
            actions = np.array(self.actions, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"actions: expected a (T, D) array of numbers, got {type(self.actions).__name__}") \
                from None
        if actions.ndim != 2 or actions.shape[0] < 1 or actions.shape[1] < 1:
            raise ValueError(f"actions: expected a non-empty (T, D) array, got shape {actions.shape}")
        if not np.isfinite(actions).all():
            step = int(np.argwhere(~np.isfinite(actions))[0, 0])
            raise ValueError(f"actions: not finite at step {step}: {actions[step].tolist()}")
        actions.flags.writeable = False
        object.__setattr__(self, "actions", actions)
        start_s, step_period_s = _real("start_s", self.start_s), _real("step_period_s", self.step_period_s)
        latency_s = _real("latency_s", self.latency_s)
        confidence = None if self.confidence is None else _real("confidence", self.confidence)
        if step_period_s <= 0:
            raise ValueError(f"step_period_s: must be a positive number of seconds, got {self.step_period_s!r}")
        if latency_s < 0:
            raise ValueError(f"latency_s: must be >= 0, got {self.latency_s!r}")
        if confidence is not None and not 0.0 <= confidence <= 1.0:
            raise ValueError(f"confidence: must be in [0, 1] or None, got {self.confidence!r}")
        for name, value in (("start_s", start_s), ("step_period_s", step_period_s), ("latency_s", latency_s),
                            ("confidence", confidence)):
            object.__setattr__(self, name, value)

    @property
    def chunk_length(self) -> int:
        """T: actions in the chunk."""
        return int(self.actions.shape[0])

    @property
    def action_dim(self) -> int:
        """D: values per action."""
        return int(self.actions.shape[1])


@runtime_checkable
class Policy(Protocol):
    """A source of action chunks: our model, the simulated expert, (later) a remote server.

    ``infer`` raises PolicyInputError (a ValueError) for an observation it cannot answer; the
    caller skips that observation. Attributes are read once per call by the caller; a source
    whose weights change (``adaptable``) is swapped whole by
    :class:`hybridvla_ros.policies.swap.PolicySlot`, never changed in place.
    """

    @property
    def name(self) -> str:
        """The registry name of this source (``builtin``, ``sim_expert``)."""

    @property
    def cameras(self) -> tuple[str, ...]:
        """Camera names ``infer`` reads from ``PolicyObservation.images`` (empty: none)."""

    @property
    def joint_names(self) -> tuple[str, ...]:
        """The commanded joints, in the order of the proprio it reads and of the actions it returns."""

    @property
    def state_joints(self) -> tuple[str, ...]:
        """Observed-only joints it reads as ``PolicyObservation.state`` (empty: none)."""

    @property
    def action_dim(self) -> int:
        """D: values per action (len(joint_names))."""

    @property
    def chunk_size(self) -> int:
        """T: actions per chunk."""

    @property
    def adaptable(self) -> bool:
        """Whether its weights can be fine-tuned and swapped (our model: yes; the sim expert: no)."""

    @property
    def model_version(self) -> int:
        """Which weights it serves (0 for sources without versions)."""

    @property
    def inpaints(self) -> bool:
        """Whether ``infer`` honours ``PolicyObservation.prefix`` (real-time chunking: the chunk is
        generated consistent with the steps that execute before it arrives, its frozen steps equal to
        the prefix's). False: the prefix is ignored and the action buffer blends the seams."""

    @property
    def plan_topics(self) -> tuple[str, ...]:
        """Streams of plans (ActionChunk topics) it reads besides observations; empty for most sources."""

    def on_plan(self, topic: str, plan: PolicyChunk) -> None:
        """Take the newest plan from ``topic`` (one of ``plan_topics``); ValueError for any other topic."""

    def infer(self, obs: PolicyObservation) -> PolicyChunk:
        """The chunk answering ``obs``; PolicyInputError when it cannot be answered."""

    def warmup(self) -> None:
        """Make the next ``infer`` fast (first calls are slow); changes no later output."""

    def reset(self) -> None:
        """Forget what earlier calls left behind (a new episode begins)."""
