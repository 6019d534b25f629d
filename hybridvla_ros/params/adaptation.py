"""Parameters of ``adaptation_node`` (and of :func:`hybridvla_ros.model.adaptation.adapt`)."""
from __future__ import annotations

from dataclasses import dataclass

from hybridvla_ros.params.base import ParameterError, param
from hybridvla_ros.params.embodiment import EmbodimentParams


@dataclass(frozen=True, kw_only=True)
class AdaptationParams(EmbodimentParams):
    """Fine-tuning the action head on human corrections: data, optimizer, acceptance test."""

    # --- where
    checkpoint_path: str = param("the serving base checkpoint (as inference.checkpoint_path)", "checkpoints/default")
    adapt_root: str = param("adapted versions go to <adapt_root>/<embodiment>/vNNNN, the log to "
                            "<adapt_root>/<embodiment>/adaptations.jsonl", "runs/adaptation")
    follow_served_model: bool = param("fine-tune the checkpoint inference last reported serving (inference/"
                                      "active_model, e.g. after a rollback) instead of our own latest", True)
    # --- data
    min_corrections: int = param("skip an adaptation while the store holds fewer corrections", 20, min=2,
                                 max=1_000_000)
    max_corrections: int = param("train on at most the newest this many corrections (the store's replay buffer)",
                                 2000, min=2, max=1_000_000)
    replay_fraction: float = param("share of each batch drawn from the checkpoint's demonstration replay sample",
                                   0.5, min=0.0, max=0.95)
    replay_examples: int = param("demonstration examples recorded when the checkpoint has no replay file",
                                 400, min=10, max=100_000)
    replay_dataset: str = param("a LeRobotDataset v3 of this robot to replay instead of the checkpoint's sample "
                                "(e.g. hybridvla record's <root>/lerobot; read with LeRobot's code in .venv-lerobot); "
                                "'' = the checkpoint's", "")
    replay_camera: str = param("with replay_dataset: its camera the policy sees ('' = its only one)", "")
    holdout_fraction: float = param("share of correction episodes (and of replay episodes) held out for the "
                                    "acceptance test", 0.25, min=0.05, max=0.5)
    # --- optimizer (the action head only; the backbone stays frozen)
    steps: int = param("at most this many Adam steps", 300, min=1, max=100_000)
    lr: float = param("Adam learning rate", 1e-3, min=1e-7, max=1.0)
    batch_size: int = param("examples per step (corrections + replay)", 32, min=2, max=4096)
    early_stop_patience: int = param("stop when the correction loss has not improved by 1 % for this many steps",
                                     60, min=1, max=100_000)
    # --- acceptance
    tolerance: float = param("accept only if the held-out replay (old skill) chunk error rises by at most this "
                             "fraction", 0.10, min=0.0, max=10.0)
    min_improvement: float = param("accept only if the held-out correction chunk error falls by at least this "
                                   "fraction", 0.05, min=0.0, max=0.99)
    eval_samples: int = param("flow samples averaged per prediction in the held-out check", 5, min=1, max=64)
    # --- compute (never in the control path)
    num_threads: int = param("torch threads of the adaptation process", 1, min=1, max=64)
    niceness: int = param("added to the process's nice value so inference keeps the CPU", 10, min=0, max=19)
    seed: int = param("seed of the hold-out split, batches and flow noise", 0, min=0)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.checkpoint_path.strip():
            raise ParameterError("checkpoint_path: must not be empty")
        if not self.adapt_root.strip():
            raise ParameterError("adapt_root: must not be empty")
        if self.max_corrections < self.min_corrections:
            raise ParameterError(f"max_corrections: {self.max_corrections} is less than min_corrections "
                                 f"{self.min_corrections}")
