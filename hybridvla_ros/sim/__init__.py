"""Simulated robots behind one :class:`Simulator` protocol (ROS-free).

- :mod:`.base`: the :class:`Simulator` protocol and the table of simulators by
  ``(physics, embodiment)``; :mod:`.registry`: :func:`make_sim` and the MuJoCo entries.
- Kinematic (every embodiment, no dynamics): :mod:`.kinematic` (controller, expert),
  :mod:`.kinematic_scenes` (one registered scene per robot), :mod:`.kinematic_render`,
  :mod:`.kinematics` (chains, camera), :mod:`.profiles` (the shared braking rule).
- MuJoCo (contact physics): :mod:`.mujoco_common`, and per robot a simulator, its model
  and its scripted expert (``mujoco_franka*``, ``mujoco_aloha*``). MuJoCo is imported only
  when one of them is built, never by importing this package.
- Using a simulator: :mod:`.demos` (expert demonstrations), :mod:`.rollout` (the control
  path in one process), :mod:`.operator` (the scripted human), :mod:`.corrections`
  (simulated human corrections).
"""
from hybridvla_ros.sim.base import Simulator, SimulatorEntry, register_simulator, registered_simulators
from hybridvla_ros.sim.registry import make_sim, state_vector

__all__ = ["Simulator", "SimulatorEntry", "register_simulator", "registered_simulators", "make_sim",
           "state_vector"]
