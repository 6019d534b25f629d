"""Parameters of ``sim_operator_node`` (the simulated human)."""
from __future__ import annotations

from dataclasses import dataclass

from hybridvla_ros.params.base import param
from hybridvla_ros.params.embodiment import EmbodimentParams


@dataclass(frozen=True, kw_only=True)
class SimOperatorParams(EmbodimentParams):
    """Timing of the scripted operator (see sim/operator.py)."""

    reaction_s: float = param("from a help request to pressing the deadman", 0.5, min=0.0, max=60.0)
    min_help_s: float = param("help at least this long", 2.0, min=0.0, max=600.0)
    max_help_s: float = param("then hand back even if the task is not done", 8.0, min=0.0, max=600.0)
    done_error_m: float = param("task error that counts as done (m)", 0.03, min=0.0, max=10.0)
    handback_delay_s: float = param("from releasing the deadman to asking for resume_policy", 0.5, min=0.0, max=60.0)
    stall_s: float = param("take over unasked after the policy made no progress this long (0: only when asked)",
                           0.0, min=0.0, max=600.0)
    stall_progress_m: float = param("progress: the task error falling by this much (m)", 0.01, min=0.0, max=10.0)
