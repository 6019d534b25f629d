"""``hybridvla study <name>``: the studies whose results the README quotes.

- ``safety``: random actions through every embodiment's safety filter (study 3);
- ``latency``: each stage's share of the 50 ms budget and what recycling buys (study 4);
- ``adaptation``: online adaptation on shifted scenes, before / after, no forgetting (study 1);
- ``transfer``: one backbone on two robots against one per robot, same data (study 2).
- ``policy``: training recipes compared by closed-loop success on the same fresh scenes (study 5).
"""
from __future__ import annotations

import importlib
import sys

STUDIES = {"safety": "safety_stress", "latency": "latency_budget", "adaptation": "online_adaptation",
           "transfer": "transfer", "policy": "policy_quality"}


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``hybridvla study <name> ...``; returns the study's exit status (2: unknown name)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in STUDIES:
        print(__doc__, file=sys.stderr)
        print(f"hybridvla study: error: choose one of {sorted(STUDIES)}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"hybridvla_ros.studies.{STUDIES[argv[0]]}")
    return int(module.main(argv[1:]))
