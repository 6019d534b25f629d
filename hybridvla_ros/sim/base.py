"""What a simulated robot is (the :class:`Simulator` protocol) and the table of simulators.

Every simulator (:class:`~hybridvla_ros.sim.kinematic.KinematicSim`,
:class:`~hybridvla_ros.sim.mujoco_franka.MujocoFrankaSim`,
:class:`~hybridvla_ros.sim.mujoco_aloha.MujocoAlohaSim`) implements :class:`Simulator`;
the sim node, the demonstration recorder, the rollout, DAgger and the studies use only
what it declares, and never ask which simulator they hold.

Simulators are found by ``(physics, embodiment)`` in one table: :func:`register_simulator`
adds an entry naming the class as ``"module:Class"``, imported only when a simulator is
built (so MuJoCo is loaded only when a MuJoCo simulator is asked for). The built-in
entries are registered by :mod:`hybridvla_ros.sim.kinematic_scenes` (one kinematic
simulator per scene) and :mod:`hybridvla_ros.sim.registry` (the MuJoCo scenes);
:func:`~hybridvla_ros.sim.registry.make_sim` builds one.

Units and shapes: D joints (``action_dim``; rad, or m for grippers and a mobile base's
x / y), K tool points, world frame in metres, images (H, W, 3) uint8 RGB.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from hybridvla_ros.params.embodiment import EmbodimentParams

__all__ = [
    "Simulator",
    "SimulatorFactory",
    "SimulatorEntry",
    "register_simulator",
    "simulator_entry",
    "registered_simulators",
]


@runtime_checkable
class Simulator(Protocol):
    """A simulated robot and its task: command, step, observe, render, and a scripted expert.

    Deterministic given the seed of :meth:`reset`. Commands are absolute position targets
    taken as a joint trajectory controller takes one point a control period ahead. Methods
    that take values raise ValueError (state unchanged) for a wrong shape or a non-finite
    value, naming the argument."""

    # ------------------------------------------------------------------ state

    @property
    def positions(self) -> np.ndarray:
        """(D,) measured joint positions, within the limits, a copy."""
        ...

    @property
    def velocities(self) -> np.ndarray:
        """(D,) joint velocities (rad/s or m/s; a mobile base: world-frame vx, vy, yaw rate)."""
        ...

    @property
    def state_joint_positions(self) -> dict[str, float]:
        """Observed-only joints the driver reports in joint_states (e.g. ``suction_cup``: 1.0
        while it holds), by name; empty when the robot has none."""
        ...

    @property
    def time_s(self) -> float:
        """Simulated seconds since construction (reset() does not rewind it)."""
        ...

    @property
    def commanded_positions(self) -> np.ndarray:
        """(D,) the position target being tracked (the last command, clipped to the limits)."""
        ...

    @property
    def control_period_s(self) -> float:
        """Seconds between two expert / policy commands (1 / control_rate_hz)."""
        ...

    @property
    def num_tool_points(self) -> int:
        """K: the tool points :meth:`end_effector_positions` reports."""
        ...

    @property
    def target(self) -> np.ndarray:
        """(K', 3) where the task wants the tool or object (world m), a copy; K' is 1 for a
        single goal (the MuJoCo tasks) and K for per-tool targets (the kinematic arms)."""
        ...

    @target.setter
    def target(self, value: np.ndarray) -> None:
        """Place the target(s); ValueError for a wrong shape or non-finite values."""
        ...

    @property
    def scene(self) -> str:
        """Name of the scene preset reset() and randomize_target() draw from (``nominal``,
        ``shifted``, ...); set it by name, ValueError for a preset this simulator lacks."""
        ...

    @scene.setter
    def scene(self, name: str) -> None:
        ...

    # ------------------------------------------------------------------ episode and commands

    def reset(self, seed: int | None = None, start_noise_rad: float = 0.05) -> None:
        """Robot at home plus Gaussian noise of std ``start_noise_rad``, at rest, and a new
        task drawn from the scene; ``seed`` restarts the generators (None continues them).
        ValueError for a bad seed or noise."""
        ...

    def randomize_target(self, seed: int | None = None) -> None:
        """Draw a new task placement without moving the robot (``seed``: a one-off generator)."""
        ...

    def command_positions(self, target: np.ndarray) -> None:
        """Track (D,) absolute position targets; values outside the limits are clipped."""
        ...

    def command_twist(self, linear_x: float, linear_y: float, angular_z: float) -> None:
        """Mobile base velocity (m/s, rad/s); ValueError on a robot without a mobile base."""
        ...

    def apply_external_force(self, force: np.ndarray, duration_s: float) -> None:
        """Push the tool with ``force`` (3,) N (world axes) for ``duration_s`` > 0 seconds."""
        ...

    def step(self, dt_s: float) -> None:
        """Advance ``dt_s`` >= 0 simulated seconds."""
        ...

    # ------------------------------------------------------------------ task and sensors

    def end_effector_positions(self) -> np.ndarray:
        """(K, 3) tool point(s) in the world frame (m)."""
        ...

    def task_error_m(self) -> float:
        """How far the task is from done (m); 0 when it is exactly done."""
        ...

    def success(self, tolerance_m: float = ...) -> bool:
        """True when the task is done within ``tolerance_m`` (default: the simulator's own)."""
        ...

    def wrench(self) -> tuple[np.ndarray, np.ndarray]:
        """(force (3,) N, torque (3,) Nm) at the wrist, world axes."""
        ...

    def expert_target(self) -> np.ndarray:
        """(D,) the scripted expert's absolute target for the next control period, from the
        current state only: within the limits and one period's reach of the positions."""
        ...

    # ------------------------------------------------------------------ camera and copies

    def render(self, camera: str = "") -> np.ndarray:
        """(H, W, 3) uint8 RGB image from the fixed scene camera ('': the embodiment's camera_name), or
        from one of ``extra_cameras`` by name (ValueError for a camera it does not have)."""
        ...

    @property
    def extra_cameras(self) -> tuple[str, ...]:
        """The robot's other cameras it renders, by the names of the embodiment file's extra_cameras."""
        ...

    def clone(self) -> Simulator:
        """An independent copy: stepping or resetting it never changes this simulator (the
        expert is rolled out ahead on one)."""
        ...


def render_cameras(sim: Simulator, cameras: tuple[str, ...] | list[str], anchor: str) -> np.ndarray:
    """What a policy reading ``cameras`` (the robot's camera names; ``anchor`` is its camera_name,
    the simulator's scene camera) sees now: () -> the scene camera's (H, W, 3) image, else a
    (K, H, W, 3) stack in ``cameras`` order. ValueError for a camera the simulator does not render."""
    if not cameras:
        return sim.render()
    return np.stack([sim.render("" if name == anchor else name) for name in cameras])


class SimulatorFactory(Protocol):
    """What a registered simulator class is called with."""

    def __call__(self, params: EmbodimentParams, image_width: int = 160, image_height: int = 120,
                 seed: int = 0, scene: str = "nominal") -> Simulator:
        """A simulator of ``params.embodiment`` reset with ``seed`` in scene preset ``scene``."""
        ...


@dataclass(frozen=True)
class SimulatorEntry:
    """One ``(physics, embodiment)`` a simulator exists for."""

    physics: str  # "kinematic" | "mujoco" | ...
    embodiment: str  # params.embodiment
    target: str  # "package.module:Class", a SimulatorFactory, imported when a simulator is built
    scenes: tuple[str, ...] = ("nominal",)  # scene presets it has

    def load(self) -> SimulatorFactory:
        """The simulator class (imports its module). ImportError when the module or class
        is missing, with the entry named."""
        module_name, _, attr = self.target.partition(":")
        module = importlib.import_module(module_name)
        try:
            factory: SimulatorFactory = getattr(module, attr)
        except AttributeError:
            raise ImportError(f"simulator ({self.physics!r}, {self.embodiment!r}): {module_name} has no "
                              f"{attr!r}") from None
        return factory


_SIMULATORS: dict[tuple[str, str], SimulatorEntry] = {}


def register_simulator(physics: str, embodiment: str, target: str,
                       scenes: tuple[str, ...] = ("nominal",)) -> SimulatorEntry:
    """Add the simulator ``target`` (``"module:Class"``) for ``(physics, embodiment)`` and
    return its entry. ValueError for an empty name, a target without ``:``, no scenes, or a
    pair that already has a different simulator (registering the same entry twice is fine)."""
    for name, value in (("physics", physics), ("embodiment", embodiment)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"register_simulator: {name} must be a non-empty string, got {value!r}")
    module_name, sep, attr = target.partition(":") if isinstance(target, str) else ("", "", "")
    if not (module_name and sep and attr):
        raise ValueError(f"register_simulator: target must be 'package.module:Class', got {target!r}")
    scenes = tuple(scenes)
    if not scenes or not all(isinstance(s, str) and s for s in scenes):
        raise ValueError(f"register_simulator: scenes must be non-empty names, got {scenes!r}")
    entry = SimulatorEntry(physics, embodiment, target, scenes)
    existing = _SIMULATORS.get((physics, embodiment))
    if existing is not None and existing != entry:
        raise ValueError(f"register_simulator: ({physics!r}, {embodiment!r}) is already {existing.target} "
                         f"with scenes {list(existing.scenes)}")
    _SIMULATORS[(physics, embodiment)] = entry
    return entry


def registered_simulators() -> tuple[SimulatorEntry, ...]:
    """Every registered entry, in registration order."""
    return tuple(_SIMULATORS.values())


def simulator_entry(physics: str, embodiment: str) -> SimulatorEntry:
    """The entry of ``(physics, embodiment)``; ValueError listing what exists otherwise."""
    entry = _SIMULATORS.get((physics, embodiment))
    if entry is not None:
        return entry
    physics_names = sorted({p for p, _ in _SIMULATORS})
    if physics not in physics_names:
        raise ValueError(f"physics: must be one of {physics_names}, got {physics!r}")
    others = sorted(e for p, e in _SIMULATORS if p == physics)
    alternatives = sorted(p for p, e in _SIMULATORS if e == embodiment)
    hint = f"; {embodiment!r} has {alternatives}" if alternatives else ""
    raise ValueError(f"physics: {physics!r} has simulators for {others} only, not {embodiment!r}{hint}")
