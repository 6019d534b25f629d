"""Parameters of ``demo_recorder_node`` (``hybridvla record``)."""
from __future__ import annotations

from dataclasses import dataclass

from hybridvla_ros.params.base import ParameterError, param
from hybridvla_ros.params.embodiment import EmbodimentParams

ACTION_SOURCES = ("auto", "command", "action_command")


@dataclass(frozen=True, kw_only=True)
class DemoRecorderParams(EmbodimentParams):
    """Where demonstrations are recorded and from which topics."""

    root: str = param("recording directory ('{embodiment}' is replaced): finished episodes in <root>/episodes, "
                      "the LeRobotDataset in <root>/lerobot", "runs/recordings/{embodiment}")
    image_transport: str = param("raw: sensor_msgs/Image on camera_topic; compressed: CompressedImage on "
                                 "<camera_topic>/compressed", "raw", choices=("raw", "compressed"))
    action_source: str = param(
        "what 'action' is: command = the robot controller's command (command_topic; what the robot was "
        "commanded), action_command = the graph's absolute targets before the safety filter (hybridvla_msgs/"
        "ActionStep); auto = command unless the controller takes a Twist (a velocity is not a position target)",
        "auto", choices=ACTION_SOURCES)
    max_age_s: float = param("a frame needs an image, joint states and a command at most this old (s)", 0.25,
                             min=0.001, max=10.0)
    future_tolerance_s: float = param("stamps further than this in the future are refused (s)", 0.05,
                                      min=0.0, max=10.0)
    min_free_mb: float = param("refuse to start an episode with less free disk space than this (MiB)", 200.0,
                               min=0.0, max=1e7)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.root.strip():
            raise ParameterError("root: must not be empty")
        if self.action_source == "command" and self.velocity_base:
            raise ParameterError("action_source: command cannot record a geometry_msgs/Twist (a velocity) as the "
                                 "action's absolute targets; use action_command or auto")
        fps = round(self.control_rate_hz)
        if abs(fps - self.control_rate_hz) > 1e-9:
            raise ParameterError(f"control_rate_hz: a recording's frame rate must be a whole number of frames per "
                                 f"second (a LeRobotDataset's fps is an integer), got {self.control_rate_hz}")

    @property
    def resolved_root(self) -> str:
        return self.root.replace("{embodiment}", self.embodiment)

    @property
    def resolved_action_source(self) -> str:
        if self.action_source != "auto":
            return self.action_source
        return "action_command" if self.velocity_base else "command"

    @property
    def fps(self) -> int:
        return int(round(self.control_rate_hz))
