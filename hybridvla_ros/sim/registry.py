"""Which simulator plays the robot: one factory for the sim node, the demo recorder and the evaluation.

Simulators are looked up by ``(physics, embodiment)`` in the table of
:mod:`hybridvla_ros.sim.base`. ``physics: kinematic`` is
:class:`~hybridvla_ros.sim.kinematic.KinematicSim` for every embodiment with a scene in
:mod:`~hybridvla_ros.sim.kinematic_scenes` (fast, no contact dynamics); ``physics:
mujoco`` is a MuJoCo scene with real contact, registered here (franka: pick and place a
cube, aloha: hand a cube from the left arm to the right arm). All implement
:class:`~hybridvla_ros.sim.base.Simulator`. MuJoCo is imported only when a MuJoCo
simulator is built, so the kinematic path works without it.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hybridvla_ros.params.embodiment import EmbodimentParams

# Imported for its registrations: every kinematic scene registers the kinematic simulator.
from hybridvla_ros.sim import kinematic_scenes  # noqa: F401
from hybridvla_ros.sim.base import Simulator, register_simulator, registered_simulators, simulator_entry

__all__ = ["SCENES", "make_sim", "state_vector"]

register_simulator("mujoco", "franka", "hybridvla_ros.sim.mujoco_franka:MujocoFrankaSim",
                   scenes=("nominal", "shifted"))
register_simulator("mujoco", "aloha", "hybridvla_ros.sim.mujoco_aloha:MujocoAlohaSim",
                   scenes=("nominal", "shifted"))

# Every scene preset name some built-in simulator has, in first-seen order.
SCENES: tuple[str, ...] = tuple(dict.fromkeys(s for e in registered_simulators() for s in e.scenes))


def make_sim(params: EmbodimentParams, image_width: int = 160, image_height: int = 120, seed: int = 0,
             physics: str = "kinematic", scene: str = "nominal") -> Simulator:
    """A simulator of ``params.embodiment`` with the given physics and scene preset.

    Raises ValueError for a ``(physics, embodiment)`` without a simulator (the message lists
    those that exist) or a scene that simulator lacks, or (from the simulator) bad sizes /
    seed; the MuJoCo simulators raise MissingAssetError naming the pip package when their
    robot model is not installed."""
    entry = simulator_entry(physics, params.embodiment)
    if scene not in entry.scenes:
        raise ValueError(f"scene: the {physics} simulator of {params.embodiment} has scenes "
                         f"{list(entry.scenes)}, got {scene!r}")
    return entry.load()(params, image_width=image_width, image_height=image_height, seed=seed, scene=scene)


def state_vector(sim: Simulator, names: Sequence[str]) -> np.ndarray:
    """(E,) float64 the simulator's observed-only joints ``names`` (a parameter file's
    ``state_joints``), in that order, from ``sim.state_joint_positions``. Raises ValueError
    naming the joints this simulator does not report."""
    reported = sim.state_joint_positions
    missing = [n for n in names if n not in reported]
    if missing:
        raise ValueError(f"state_joints: this simulator does not report {missing}; it reports {sorted(reported)}")
    return np.array([reported[n] for n in names], dtype=np.float64)
