"""Which simulator plays the robot: one factory for the sim node, the demo recorder and the evaluation.

``physics: kinematic`` is :class:`~hybridvla_ros.core.kinematic_sim.KinematicSim` (every
embodiment, fast, no contact dynamics); ``physics: mujoco`` is a MuJoCo scene with real
contact (franka: pick and place a cube, aloha: hand a cube from the left arm to the right
arm). Both have the same interface (positions, command_positions, step, render, wrench,
expert_target, task_error_m, success, ...). MuJoCo is imported only when asked for, so
the kinematic path works without it.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from hybridvla_ros.params.embodiment import EmbodimentParams

PHYSICS = ("kinematic", "mujoco")
MUJOCO_EMBODIMENTS = ("franka", "aloha")
SCENES = ("nominal", "shifted")

__all__ = ["PHYSICS", "MUJOCO_EMBODIMENTS", "SCENES", "make_sim", "state_vector"]


def make_sim(params: EmbodimentParams, image_width: int = 160, image_height: int = 120, seed: int = 0,
             physics: str = "kinematic", scene: str = "nominal") -> Any:
    """A simulator of ``params.embodiment`` with the given physics and scene preset.

    Raises ValueError for an unknown physics or scene, MuJoCo for an embodiment without a
    MuJoCo scene, or (from the simulator) bad sizes / seed; the MuJoCo simulators raise a
    clear error naming the pip package when their robot model is not installed."""
    if physics not in PHYSICS:
        raise ValueError(f"physics: must be one of {list(PHYSICS)}, got {physics!r}")
    if scene not in SCENES:
        raise ValueError(f"scene: must be one of {list(SCENES)}, got {scene!r}")
    if physics == "kinematic":
        from hybridvla_ros.core.kinematic_sim import KinematicSim
        if scene != "nominal":
            raise ValueError(f"scene: the kinematic simulator has only the 'nominal' scene, got {scene!r}")
        return KinematicSim(params, image_width=image_width, image_height=image_height, seed=seed)
    if params.embodiment == "franka":
        from hybridvla_ros.core.mujoco_franka import MujocoFrankaSim
        return MujocoFrankaSim(params, image_width=image_width, image_height=image_height, seed=seed, scene=scene)
    if params.embodiment == "aloha":
        from hybridvla_ros.core.mujoco_aloha import MujocoAlohaSim
        return MujocoAlohaSim(params, image_width=image_width, image_height=image_height, seed=seed, scene=scene)
    raise ValueError(f"physics: 'mujoco' has scenes for {list(MUJOCO_EMBODIMENTS)} only, "
                     f"not {params.embodiment!r}; use 'kinematic'")


def state_vector(sim: Any, names: Sequence[str]) -> np.ndarray:
    """(E,) float64 the simulator's observed-only joints ``names`` (a parameter file's
    ``state_joints``), in that order, from ``sim.state_joint_positions``. Raises ValueError
    naming the joints this simulator does not report."""
    reported = sim.state_joint_positions
    missing = [n for n in names if n not in reported]
    if missing:
        raise ValueError(f"state_joints: this simulator does not report {missing}; it reports {sorted(reported)}")
    return np.array([reported[n] for n in names], dtype=np.float64)
