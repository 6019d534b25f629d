"""The simulator table: every registered simulator builds and is a Simulator, unknown ones are
a clear error, MuJoCo loads only when asked for, and a new kinematic scene is one entry."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest

from hybridvla_ros.params import from_params, load_node_params
from hybridvla_ros.params.sim_robot import SimRobotParams
from hybridvla_ros.sim import Simulator, base, kinematic_scenes, make_sim, registered_simulators, state_vector
from hybridvla_ros.sim.kinematic import KinematicSim
from hybridvla_ros.sim.kinematic_scenes import Arm, ArmScene, kinematic_scene, make_kinematic_scene
from hybridvla_ros.sim.kinematics import panda_chain, rot_z, transform
from hybridvla_ros.sim.rollout import expert_chunk

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "config")
ENTRIES = [(e.physics, e.embodiment) for e in registered_simulators()]


def load(name: str) -> SimRobotParams:
    return from_params(SimRobotParams, load_node_params(os.path.join(CONFIG, f"{name}.yaml"), "sim_robot"),
                       "sim_robot")


def test_the_built_in_simulators_are_registered() -> None:
    assert sorted(ENTRIES) == sorted([("kinematic", "franka"), ("kinematic", "aloha"), ("kinematic", "hello"),
                                      ("kinematic", "leap"), ("mujoco", "franka"), ("mujoco", "aloha")])


@pytest.mark.parametrize("physics, embodiment", ENTRIES)
def test_every_registered_simulator_builds_and_is_a_simulator(physics: str, embodiment: str) -> None:
    entry = base.simulator_entry(physics, embodiment)
    p = load(embodiment)
    for scene in entry.scenes:
        sim = make_sim(p, 64, 48, seed=1, physics=physics, scene=scene)
        assert isinstance(sim, Simulator)
        assert sim.scene == scene
        assert sim.positions.shape == (p.action_dim,)
        assert sim.render().shape == (48, 64, 3)
        assert state_vector(sim, ()).shape == (0,)
        # The clone is independent: the expert rolled out on it leaves the original where it was.
        before = sim.positions
        chunk = expert_chunk(sim, 3)
        assert chunk.shape == (3, p.action_dim)
        np.testing.assert_array_equal(sim.positions, before)
    # The scene list of a MuJoCo entry is the one its module defines.
    if physics == "mujoco":
        module = __import__(entry.target.split(":")[0], fromlist=["SCENES"])
        assert tuple(module.SCENES) == entry.scenes


def test_an_unknown_combination_is_a_clear_error() -> None:
    hello = load("hello")
    with pytest.raises(ValueError, match=r"'mujoco' has simulators for \['aloha', 'franka'\] only, not 'hello'; "
                                         r"'hello' has \['kinematic'\]"):
        make_sim(hello, physics="mujoco")
    with pytest.raises(ValueError, match=r"physics: must be one of \['kinematic', 'mujoco'\], got 'bullet'"):
        make_sim(hello, physics="bullet")
    with pytest.raises(ValueError, match=r"scene: the kinematic simulator of hello has scenes \['nominal'\], "
                                         r"got 'shifted'"):
        make_sim(hello, scene="shifted")
    with pytest.raises(ValueError, match="has no kinematic scene"):
        KinematicSim(dataclasses.replace(hello, embodiment="spot"))
    with pytest.raises(ValueError, match="drives 3 joints"):
        make_kinematic_scene(dataclasses.replace(load("franka"), embodiment="hello", physics="kinematic"))


def test_a_pair_cannot_be_registered_twice_with_another_simulator() -> None:
    with pytest.raises(ValueError, match=r"\('mujoco', 'franka'\) is already"):
        base.register_simulator("mujoco", "franka", "some.module:OtherSim")
    with pytest.raises(ValueError, match="target must be 'package.module:Class'"):
        base.register_simulator("mujoco", "spot", "some.module.OtherSim")
    with pytest.raises(ValueError, match="already has a kinematic scene"):
        kinematic_scene("franka", action_dim=7)(lambda params: make_kinematic_scene(params))


def test_importing_the_package_and_the_kinematic_simulator_does_not_load_mujoco() -> None:
    code = ("import sys\nimport hybridvla_ros.sim, hybridvla_ros.sim.registry, hybridvla_ros.sim.kinematic\n"
            "assert 'mujoco' not in sys.modules, 'mujoco imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_a_new_embodiment_kinematic_scene_is_one_registered_entry(monkeypatch) -> None:
    """A Panda mounted on the other side of the table, registered from outside the engine."""
    monkeypatch.setattr(base, "_SIMULATORS", dict(base._SIMULATORS))
    monkeypatch.setattr(kinematic_scenes, "_SCENES", dict(kinematic_scenes._SCENES))

    @kinematic_scene("franka_mirrored", action_dim=7)
    def _mirrored(params: SimRobotParams) -> ArmScene:
        arm = Arm(chain=panda_chain(transform((1.0, 0.0, 0.0), rot_z(np.pi))), joints=np.arange(7),
                  tool_offset_m=np.array([0.0, 0.0, 0.1034]), target_low_m=np.array([0.35, -0.25, 0.15]),
                  target_high_m=np.array([0.65, 0.25, 0.45]), link_radius_m=0.045, color=(232, 232, 236),
                  joint_color=(70, 72, 80))
        return ArmScene(arms=[arm], camera_eye_m=(0.5, -1.2, 0.8), camera_look_at_m=(0.5, 0.0, 0.25),
                        vertical_fov_deg=55.0, table_low_m=(-0.3, -0.9), table_high_m=(1.3, 0.9),
                        extra_joints=np.arange(0), extra_goal=np.zeros(0))

    p = dataclasses.replace(load("franka"), embodiment="franka_mirrored", physics="kinematic")
    sim = make_sim(p, seed=2)
    assert isinstance(sim, KinematicSim) and ("kinematic", "franka_mirrored") in [
        (e.physics, e.embodiment) for e in registered_simulators()]
    # The base sits at x = 1 m facing -x: the tool starts on that side, and the expert reaches the target.
    assert sim.end_effector_positions()[0, 0] > 0.5
    for _ in range(100):
        sim.command_positions(sim.expert_target())
        sim.step(p.control_period_s)
    assert sim.success(0.01), sim.task_error_m()
