"""Parameters of ``correction_recorder_node``."""
from __future__ import annotations

from dataclasses import dataclass

from hybridvla_ros.params.base import ParameterError, param
from hybridvla_ros.params.embodiment import EmbodimentParams


@dataclass(frozen=True, kw_only=True)
class CorrectionRecorderParams(EmbodimentParams):
    """Where and how human corrections are stored, and when adaptation is asked for."""

    # --- storage
    store_path: str = param("SQLite file of the corrections; '{embodiment}' is replaced by the robot's name",
                            "runs/corrections/{embodiment}.sqlite")
    replay_capacity: int = param("newest corrections kept in memory for replay", 2000, min=0, max=1_000_000)
    image_size: int = param("square side (px) images are stored at; 0 keeps the observation's size",
                            96, min=0, max=1024)
    max_store_mb: float = param("size limit of the store file (MiB); 0 = no limit but the disk's", 0.0,
                                min=0.0, max=1e7)
    max_pending: int = param("corrections waiting for the disk before new ones are dropped", 64, min=1, max=10_000)
    # --- what counts as a correction
    min_interval_s: float = param("at most one stored correction per this interval (a 50 Hz human stream "
                                  "gives near-duplicates)", 0.1, min=0.0, max=60.0)
    max_observation_age_s: float = param("skip a correction whose latest observation is older than this", 0.5,
                                         min=0.01, max=10.0)
    max_proposal_age_s: float = param("a policy proposal older than this is not paired (stored as none)", 0.5,
                                      min=0.01, max=10.0)
    episode_gap_s: float = param("a pause in human commands longer than this starts a new episode", 1.0,
                                 min=0.01, max=3600.0)
    # --- adaptation
    adapt_every: int = param("publish correction_recorder/adapt_request every this many stored corrections",
                             20, min=1, max=1_000_000)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.store_path.strip():
            raise ParameterError("store_path: must not be empty")

    @property
    def resolved_store_path(self) -> str:
        """``store_path`` with ``{embodiment}`` filled in."""
        return self.store_path.replace("{embodiment}", self.embodiment)
