"""The keys of a demonstration set (the training data contract), defined once.

A demonstration set is a dict, saved as one ``.npz``, with N samples (episodes x steps);
:mod:`hybridvla_ros.sim.demos` records and validates it, :mod:`hybridvla_ros.model`
trains on it and keeps a sample of it for replay during adaptation. Shapes and meanings
are documented in :mod:`hybridvla_ros.sim.demos`.
"""
from __future__ import annotations

DEMO_IMAGES = "images"                    # (N, S, S, 3) uint8 RGB; from K cameras (N, K, S, S, 3)
DEMO_PROPRIO = "proprio"                  # (N, D) float32 measured joint positions
DEMO_ACTIONS = "actions"                  # (N, T, D) float32 absolute targets, [n, k]: k periods after step n
DEMO_EPISODE = "episode"                  # (N,) int32 episode index
DEMO_EMBODIMENT = "embodiment"            # str
DEMO_INSTRUCTION = "instruction"          # str
DEMO_CONTROL_PERIOD = "control_period_s"  # float, seconds between two steps
DEMO_STATE = "state"                      # (N, E) float32 state joints; optional (absent: E = 0)

# Every demonstration set has these (DEMO_STATE is optional).
DEMO_KEYS: tuple[str, ...] = (DEMO_IMAGES, DEMO_PROPRIO, DEMO_ACTIONS, DEMO_EPISODE, DEMO_EMBODIMENT,
                              DEMO_INSTRUCTION, DEMO_CONTROL_PERIOD)
