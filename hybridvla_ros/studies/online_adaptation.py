"""Study 1, online adaptation: does the deployed graph get better from corrections, without forgetting?

One graph runs throughout (separate processes, real DDS, the MuJoCo robot), with the
correction recorder and the adaptation worker as deployed. Phases:

1. measure: success of the policy ALONE (handoff never pauses, the operator never steps
   in) on ``--measure-episodes`` nominal scenes and as many shifted scenes;
2. correct: episodes on shifted scenes where the simulated operator takes over whenever
   the policy stalls (``stall_s``), streaming the scripted expert on the teleop override
   topic with the deadman held; the recorder stores those corrections and asks for an
   adaptation every ``adapt_every``; accepted head weights are swapped into inference;
   after each round the policy alone is measured again on shifted scenes (the learning
   curve: success against corrections stored and model version);
3. measure again on the same nominal and shifted scenes (same seeds as phase 1).

Writes ``online_adaptation.json`` and a learning-curve plot.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from hybridvla_ros.params.embodiment import EMBODIMENTS

ALONE = {"pause_confidence": 0.0, "resume_confidence": 0.0}


def _measure(ev: Any, scene: str, episodes: int, seed0: int, timeout_s: float) -> dict[str, Any]:
    """Success of the policy alone on ``episodes`` scenes starting at seed ``seed0``."""
    ev.set_scene(scene)
    for name, value in ALONE.items():
        ev.listener.set_parameter("handoff", name, value)
    ev.listener.set_parameter("sim_operator", "stall_s", 0.0)
    results = [ev.run_episode(timeout_s, seed=seed0 + k) for k in range(episodes)]
    return {"scene": scene, "episodes": episodes, "successes": sum(r.success for r in results),
            "success_rate": sum(r.success for r in results) / episodes,
            "final_error_m": [r.final_error_m for r in results],
            "model_version": ev.listener.snapshot().active_model.get("model_version")}


def main(argv: list[str] | None = None) -> int:
    """``hybridvla study adaptation``: returns 0 when it ran (whatever it found)."""
    from hybridvla_ros.evaluate import Evaluation

    ap = argparse.ArgumentParser(prog="hybridvla study adaptation", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--embodiment", default="franka", choices=EMBODIMENTS)
    ap.add_argument("--checkpoint", default="checkpoints/default")
    ap.add_argument("--measure-episodes", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3, help="correction rounds (a learning-curve point each)")
    ap.add_argument("--correction-episodes", type=int, default=3, help="shifted episodes with the operator per round")
    ap.add_argument("--stall-s", type=float, default=2.0,
                    help="the operator takes over after this long without progress")
    ap.add_argument("--timeout", type=float, default=15.0)
    ap.add_argument("--out", default="runs/studies/online_adaptation")
    args = ap.parse_args(argv)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.makedirs(args.out, exist_ok=True)
    store = os.path.abspath(os.path.join(args.out, "corrections.sqlite"))
    if os.path.exists(store):
        os.remove(store)  # a study starts from no corrections
    overrides = {"correction_recorder": {"store_path": store},
                 "adaptation": {"adapt_root": os.path.abspath(os.path.join(args.out, "adaptation"))}}
    t_start = time.perf_counter()
    nominal_seed, shifted_seed, train_seed = 20_000, 30_000, 40_000
    curve = []
    with Evaluation(args.embodiment, args.checkpoint, overrides=overrides,
                    log_dir=os.path.join(args.out, "logs")) as ev:
        ev.wait_until_ready()
        before = {"nominal": _measure(ev, "nominal", args.measure_episodes, nominal_seed, args.timeout),
                  "shifted": _measure(ev, "shifted", args.measure_episodes, shifted_seed, args.timeout)}
        curve.append({"corrections": 0, **before["shifted"]})
        print(f"before: nominal {before['nominal']['success_rate']:.2f}, "
              f"shifted {before['shifted']['success_rate']:.2f}", flush=True)
        for rnd in range(args.rounds):
            ev.set_scene("shifted")
            for name in ALONE:  # as deployed: the handoff may ask for help, the operator steps in on a stall
                ev.listener.set_parameter("handoff", name, {"pause_confidence": 0.3, "resume_confidence": 0.5}[name])
            ev.listener.set_parameter("sim_operator", "stall_s", float(args.stall_s))
            for k in range(args.correction_episodes):
                ev.run_episode(args.timeout, seed=train_seed + rnd * 100 + k)
            n_adapt = len(ev.listener.snapshot().adaptations)
            # let the adaptation asked for by the last corrections finish before measuring
            ev.listener.wait_for(lambda r, n=n_adapt: len(r.adaptations) > n, timeout_s=180.0)
            time.sleep(2.0)  # the accepted weights are loaded and swapped in the background
            point = _measure(ev, "shifted", args.measure_episodes, shifted_seed, args.timeout)
            snap = ev.listener.snapshot()
            point["corrections"] = snap.corrections
            point["adaptations"] = [{k: a.get(k) for k in ("accepted", "reason", "version", "corrections")}
                                    for a in snap.adaptations]
            curve.append(point)
            print(f"round {rnd + 1}: {snap.corrections} corrections, model_version {point['model_version']}, "
                  f"shifted success {point['success_rate']:.2f}", flush=True)
        after = {"nominal": _measure(ev, "nominal", args.measure_episodes, nominal_seed, args.timeout),
                 "shifted": curve[-1]}
    result = {"settings": vars(args), "before": before, "after": after, "curve": curve,
              "wall_s": time.perf_counter() - t_start}
    with open(os.path.join(args.out, "online_adaptation.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2, default=float)
    _plot(result, os.path.join(args.out, "online_adaptation.png"))
    print(f"after: nominal {after['nominal']['success_rate']:.2f}, shifted {after['shifted']['success_rate']:.2f}; "
          f"wrote {args.out}/online_adaptation.json and online_adaptation.png")
    return 0


def _plot(result: dict[str, Any], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = result["curve"]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.plot([c["corrections"] for c in curve], [c["success_rate"] for c in curve], "o-", label="shifted scenes")
    ax.plot([0, curve[-1]["corrections"]], [result["before"]["nominal"]["success_rate"],
                                            result["after"]["nominal"]["success_rate"]], "s--",
            label="original scenes (before / after)")
    ax.set_xlabel("corrections stored")
    ax.set_ylabel("success rate, policy alone")
    ax.set_ylim(-0.05, 1.05)
    ax.legend(fontsize=8)
    ax.set_title("online adaptation from operator corrections")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
