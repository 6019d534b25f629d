"""Simulated human corrections on the kinematic simulator, as the correction recorder stores them.

A scripted human takes over and steers with the scripted expert, one stored correction
every 0.1 s (the recorder's rate), each with the robot's image (96 x 96, the recorder's
size), its joints by name (the arm joints, then the parameter file's state joints) and the
human's position target. Two kinds of labels:

- ``"shifted"``: the human reaches 10 cm beside the red target (the expert on a shifted
  target; the image still shows the real one): a consistent change of behaviour that a
  fine-tuned head can learn.
- ``"noise"``: random targets around the current joint positions, unrelated to what the
  robot sees: a poisoned label set that adaptation must reject.

The adaptation benchmark (``hybridvla bench``) and the tests feed these to
:func:`hybridvla_ros.model.corrections_data.correction_set`, the same path stored
corrections take.
"""
from __future__ import annotations

import numpy as np

from hybridvla_ros.core.correction_store import CorrectionRecord
from hybridvla_ros.core.image import resize_for_policy
from hybridvla_ros.params.embodiment import EmbodimentParams
from hybridvla_ros.sim.kinematic import KinematicSim

CORRECTION_LABELS = ("shifted", "noise")
RECORDED_IMAGE_SIZE = 96        # pixels: what the recorder stores
RECORD_EVERY_S = 0.1            # one stored correction per this many seconds
TARGET_SHIFT_M = (0.0, 0.1, 0.0)  # "shifted": where the human reaches, relative to the red target
FIRST_STAMP_S = 50.0            # stamp of each episode's first correction
SESSION_ID = "sim"


def simulated_corrections(params: EmbodimentParams, n: int, labels: str = "shifted", seed: int = 100,
                          steps_per_episode: int = 40) -> list[CorrectionRecord]:
    """``n`` corrections of a simulated human on the kinematic ``params`` robot (episodes of
    ``steps_per_episode`` control steps, scenes from ``seed`` on), in recording order.
    Raises ValueError for an unknown ``labels`` or ``n`` < 1."""
    if labels not in CORRECTION_LABELS:
        raise ValueError(f"labels: one of {CORRECTION_LABELS}, got {labels!r}")
    if n < 1:
        raise ValueError(f"n: must be >= 1, got {n!r}")
    every = max(1, round(RECORD_EVERY_S / params.control_period_s))
    sim = KinematicSim(params, seed=seed)
    rng = np.random.default_rng(seed)
    noise = 3.0 * np.asarray(params.max_velocity) * params.control_period_s
    joint_names = (*params.joint_names, *sim.state_joint_positions)
    records: list[CorrectionRecord] = []
    episode = 0
    while len(records) < n:
        sim.reset(seed=seed + episode)
        for k in range(steps_per_episode):
            target = sim.target
            sim.target = target + np.array(TARGET_SHIFT_M)
            human = sim.expert_target()
            sim.target = target
            label = human if labels == "shifted" else sim.positions + rng.normal(0.0, 1.0, params.action_dim) * noise
            if k % every == 0 and len(records) < n:
                records.append(CorrectionRecord(
                    stamp_s=FIRST_STAMP_S + k * params.control_period_s, embodiment=params.embodiment,
                    instruction=params.instruction, image=resize_for_policy(sim.render(), RECORDED_IMAGE_SIZE),
                    joint_positions=np.array([*sim.positions, *sim.state_joint_positions.values()]),
                    human_action=np.asarray(label, dtype=np.float64), session_id=SESSION_ID, episode_index=episode,
                    joint_names=joint_names))
            sim.command_positions(human)
            sim.step(params.control_period_s)
        episode += 1
    return records
