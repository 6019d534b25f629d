"""Parameters of the ``remote`` policy source (``inference.policy_source: remote``): the server and the mapping.

A mixin of the inference node's schema: ``class InferenceParams(RemotePolicyParams, EmbodimentParams)``
gives the inference section these keys (all optional; only ``policy_source: remote`` reads them).
The mapping says how an observation becomes the server's request dict and how its reply becomes
our chunk (openpi's per-robot input/output transforms, as data):

- request: each of ``remote_cameras`` (our camera names) under the key of the same index in
  ``remote_image_keys``, resized to ``remote_image_size`` (H, W; empty: as is) with padding
  (``remote_image_resize: pad``, openpi's) or stretched (``stretch``, as exported demonstrations are);
  the state vector under ``remote_state_key``, in the order ``remote_state_layout`` names (our
  joint and state-joint names; empty: ``joint_names`` then ``state_joints``); the task text
  under ``remote_prompt_key``; the robot's name under ``remote_embodiment_key`` ('': not sent);
- reply: ``actions`` (horizon, columns); ``remote_action_joints`` names our joint of each column
  (``_``: a column we ignore, e.g. the model's padding; empty: ``joint_names`` in order); rows
  from ``remote_horizon_start``, ``chunk_size`` of them, ``remote_step_period_s`` apart;
  ``remote_relative_joints`` are deltas added to the observed position (the rest absolute);
  ``remote_scaled_joints`` are multiplied by ``remote_joint_scales`` (the state we send divided
  by it), e.g. a gripper the server measures in [0, 1] and we in metres.

Cross-checks against the robot's joints run when the source is made
(:class:`hybridvla_ros.policies.remote.RemoteMapping`), where ``joint_names`` is known.
"""
from __future__ import annotations

from dataclasses import dataclass

from hybridvla_ros.params.base import ParameterError, param

IGNORED_COLUMN = "_"
IMAGE_RESIZES = ("pad", "stretch")  # remote_image_resize


@dataclass(frozen=True, kw_only=True)
class RemotePolicyParams:
    """A policy server over openpi's websocket protocol (``hybridvla serve``, an openpi server)."""

    remote_url: str = param("policy server address (policy_source remote), e.g. ws://gpu-host:8000",
                            "ws://127.0.0.1:8000")
    remote_deadline_s: float = param("longest wait for one reply; a later one is dropped (no chunk, the buffer "
                                     "holds) and the connection made again", 1.0, min=0.01, max=60.0)
    remote_connect_timeout_s: float = param("longest wait to connect and read the server's metadata", 2.0,
                                            min=0.01, max=60.0)
    remote_backoff_s: tuple[float, ...] = param("after a failure, wait this long before the next try, doubling "
                                                "per failure up to the second value: no request storm while the "
                                                "server is down", (0.5, 8.0), min=0.0, max=600.0)
    remote_max_reply_bytes: int = param("largest reply accepted; a larger one is refused unread", 4 * 1024 * 1024,
                                        min=1024, max=256 * 1024 * 1024)
    remote_cameras: tuple[str, ...] = param("our camera names sent to the server (camera_name, extra_cameras); "
                                            "empty: camera_name alone", ())
    remote_image_keys: tuple[str, ...] = param("the server's key for each of remote_cameras (same order)",
                                               ("observation/image",))
    remote_image_size: tuple[int, ...] = param("(height, width) each image is resized to with padding (aspect "
                                               "kept, openpi's resize_with_pad); empty: sent as is", (224, 224),
                                               min=1, max=8192)
    remote_image_resize: str = param("how an image becomes remote_image_size: 'pad' (aspect kept, openpi's) or "
                                     "'stretch' (the whole image squeezed to it, as hybridvla export-demos and our "
                                     "model see it: a policy trained on those)", "pad", choices=IMAGE_RESIZES)
    remote_state_key: str = param("the server's key for the state vector", "observation/state")
    remote_state_layout: tuple[str, ...] = param("our joint / state-joint names in the server's state order; "
                                                 "empty: joint_names then state_joints", ())
    remote_prompt_key: str = param("the server's key for the task text", "prompt")
    remote_embodiment_key: str = param("the server's key for our robot's name (embodiment), which a server of "
                                       "several heads (hybridvla serve) needs; '': not sent", "embodiment")
    remote_action_joints: tuple[str, ...] = param("our joint of each column of the server's actions ('_': ignore "
                                                  "the column); empty: joint_names in order", ())
    remote_relative_joints: tuple[str, ...] = param("joints whose actions are deltas from the observed position "
                                                    "(the others are absolute targets)", ())
    remote_scaled_joints: tuple[str, ...] = param("joints whose server units differ from ours", ())
    remote_joint_scales: tuple[float, ...] = param("ours = server's * scale, one per remote_scaled_joints", ())
    remote_horizon_start: int = param("first row of the reply's horizon used", 0, min=0, max=1024)
    remote_step_period_s: float = param("seconds between two rows of the reply; 0: the control period", 0.0,
                                        min=0.0, max=10.0)
    remote_agreement_periods: float = param("confidence when the server reports none: successive chunks that "
                                            "disagree by max_velocity * control period * this get 0.5", 5.0,
                                            min=0.01, max=1000.0)

    def __post_init__(self) -> None:
        post = getattr(super(), "__post_init__", None)
        if post is not None:  # the schema this mixes into (EmbodimentParams) checks its own fields
            post()
        if not self.remote_url.startswith(("ws://", "wss://")):
            raise ParameterError(f"remote_url: {self.remote_url!r} must start with ws:// or wss://")
        if len(self.remote_backoff_s) != 2 or self.remote_backoff_s[0] > self.remote_backoff_s[1]:
            raise ParameterError(f"remote_backoff_s: expected [first, most] with first <= most, got "
                                 f"{list(self.remote_backoff_s)}")
        if len(self.remote_cameras or (None,)) != len(self.remote_image_keys):
            raise ParameterError(f"remote_cameras: {len(self.remote_cameras or (None,))} cameras but "
                                 f"remote_image_keys has {len(self.remote_image_keys)} keys")
        if self.remote_image_size and len(self.remote_image_size) != 2:
            raise ParameterError(f"remote_image_size: expected [height, width] or [], got "
                                 f"{list(self.remote_image_size)}")
        if len(self.remote_scaled_joints) != len(self.remote_joint_scales):
            raise ParameterError(f"remote_joint_scales: {len(self.remote_joint_scales)} scales for "
                                 f"{len(self.remote_scaled_joints)} remote_scaled_joints")
        if any(s == 0 for s in self.remote_joint_scales):
            raise ParameterError(f"remote_joint_scales: must not be 0, got {list(self.remote_joint_scales)}")
        keys = [*self.remote_image_keys, self.remote_state_key, self.remote_prompt_key]
        if self.remote_embodiment_key:
            keys.append(self.remote_embodiment_key)
        if not all(keys) or len(set(keys)) != len(keys):
            raise ParameterError(f"remote_image_keys / remote_state_key / remote_prompt_key / remote_embodiment_key: "
                                 f"must be non-empty and distinct, got {keys}")
