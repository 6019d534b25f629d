"""``hybridvla eval``: N episodes of an embodiment's task through the whole ROS graph.

The graph runs as separate processes over real DDS (as ``hybridvla run`` starts it, with
the simulated robot and the simulated operator); this process listens
(:class:`~hybridvla_ros.nodes.graph_listener.GraphListener`) and drives episodes the way a test
engineer would from a terminal: ``ros2 param set /sim_robot scene ...``, then
``sim_robot/reset`` (new scene, robot at home), ``action_buffer/reset`` (drop the old
chunk), ``safety_filter/resync`` (the filter starts again from rest where the robot now
stands) and ``safety_filter/reset_estop`` when an e-stop is latched. An episode ends when
``sim_robot/task_success`` has held for ``success_hold_s`` or after ``timeout_s``.

Per episode and in total it reports success, final task error, time to success, handoffs,
human override time, corrections stored, safety interventions and e-stops, the achieved
control rate, and the latency of each stage against the budget
(:mod:`hybridvla_ros.core.episodes`); JSON and a PNG go to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Any

import numpy as np

from hybridvla_ros.core.episodes import STAGES, EpisodeResult, plot_evaluation, stage_latencies, summarize
from hybridvla_ros.core.handoff import Mode
from hybridvla_ros.core.stats import rate_and_jitter
from hybridvla_ros.launch_description import describe_graph, safety_filter_input, validate_graph
from hybridvla_ros.launcher import GraphLauncher, NodeDied
from hybridvla_ros.params import ParameterError, from_params
from hybridvla_ros.params.embodiment import EMBODIMENTS
from hybridvla_ros.params.monitor import MonitorParams
from hybridvla_ros.params.sim_robot import SimRobotParams

# policy sim_expert: the scripted expert is a feedback controller, so it is replanned often: a plan
# every 40 ms, a new chunk every 2 control periods (with 100-200 ms old plans, as a 10 Hz policy
# would run, the cup reaches the cube late and the stiff grasp trips the 40 N e-stop)
EXPERT_CHUNK_RATE_HZ = 25.0
EXPERT_RECOMPUTE_EVERY = 2
STALE_SUCCESS_S = 0.3  # ignore task_success heard this soon after a reset (a message from the last episode)
RESYNC_TIMEOUT_S = 5.0  # the longest wait for the safety filter's first command at home after a reset


class Evaluation:
    """A running graph plus a listener; episodes are run on it one after another."""

    def __init__(self, embodiment: str, checkpoint: str | None = None, params_file: str | None = None,
                 overrides: dict[str, dict[str, Any]] | None = None, log_dir: str | None = None,
                 env: dict[str, str] | None = None, domain_id: int | None = None) -> None:
        self.specs = describe_graph(embodiment, sim=True, checkpoint_path=checkpoint, params_file=params_file,
                                    overrides=overrides)
        validate_graph(self.specs)
        by_name = {s.name: s for s in self.specs}
        self.sim_params = from_params(SimRobotParams, by_name["sim_robot"].node_values(), "sim_robot")
        self.monitor_params = from_params(MonitorParams, by_name["monitor"].node_values(), "monitor")
        self.launcher = GraphLauncher(self.specs, env=env, log_dir=log_dir)
        self.listener: Any = None
        self._domain_id = domain_id
        self._scene = self.sim_params.scene
        self.episodes: list[EpisodeResult] = []
        self._windows: list[tuple[float, float]] = []  # per episode: (start, end) wall-clock seconds

    def __enter__(self) -> Evaluation:
        # Imported here: it needs rclpy, which `hybridvla eval --help` and the ROS-free parts do not.
        from hybridvla_ros.nodes.graph_listener import GraphListener

        self.launcher.start()
        self.listener = GraphListener(self.sim_params, node_name="hybridvla_eval", domain_id=self._domain_id,
                                      safety_input_topic=safety_filter_input(self.specs))
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.listener is not None:
            self.listener.close()
        self.launcher.stop()

    def wait_until_ready(self, timeout_s: float = 60.0) -> None:
        """Block until the policy drives (a chunk served and a command that came from the policy, not
        a hold) and the safety filter reports; raises RuntimeError (naming the dead node, or what is
        missing) otherwise."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            self.launcher.wait(0.2)  # raises NodeDied
            r = self.listener.snapshot()
            if r.ready and r.safety is not None:
                return
        r = self.listener.snapshot()
        raise RuntimeError(f"graph not ready after {timeout_s:.0f} s: chunks {len(r.chunk_info)}, "
                           f"commands {len(r.command_times)} ({r.policy_commands} from the policy), "
                           f"safety status {'yes' if r.safety else 'no'}")

    def set_scene(self, scene: str) -> None:
        """Switch the sim's scene preset (applies from the next reset); raises RuntimeError if refused."""
        if scene == self._scene:
            return
        ok, why = self.listener.set_parameter("sim_robot", "scene", scene)
        if not ok:
            raise RuntimeError(f"sim_robot refused scene {scene!r}: {why}")
        self._scene = scene

    def _start_at_home(self) -> None:
        """After ``sim_robot/reset`` the robot stands at home, not where the safety filter's last
        command was (which it would drive the robot back to: onto the last episode's cube after an
        e-stop there, so one e-stop cost two episodes): ``safety_filter/resync`` makes the filter
        start again from rest at the measured position, and an e-stop latched before is reset once
        a fresh wrench at home is safe. Waits until the filter's status counts the resync
        (readiness, bounded by RESYNC_TIMEOUT_S: the episode then starts anyway and says what it
        finds); never resets an e-stop after that."""
        mon = self.listener
        r0 = mon.snapshot()
        before = int(r0.safety.resyncs) if r0.safety is not None else 0
        ok, _ = mon.call_trigger("safety_filter/resync")
        deadline = time.monotonic() + RESYNC_TIMEOUT_S
        while ok and time.monotonic() < deadline:
            r = mon.snapshot()
            if r.safety is not None and int(r.safety.resyncs) > before:
                if not r.safety.estop_latched or mon.reset_estop()[0]:
                    return
            self.launcher.wait(0.05)  # raises NodeDied

    def run_episode(self, timeout_s: float, success_hold_s: float = 0.3, seed: int | None = None) -> EpisodeResult:
        """Reset the scene (with ``seed``, else the next one in sequence) and run one episode;
        returns its result."""
        mon = self.listener
        if seed is not None:
            ok, why = mon.set_parameter("sim_robot", "seed", int(seed))
            if not ok:
                raise RuntimeError(f"sim_robot refused seed {seed}: {why}")
        ok, message = mon.call_trigger("sim_robot/reset")
        if not ok:
            raise RuntimeError(f"sim_robot/reset failed: {message}")
        mon.call_trigger("action_buffer/reset")
        self._start_at_home()
        t0, wall0 = time.monotonic(), time.time()
        r0 = mon.snapshot()
        success_since: float | None = None
        first_success: float | None = None
        while True:
            self.launcher.wait(0.05)  # raises NodeDied
            now = time.monotonic()
            r = mon.snapshot()
            heard_ok = r.task_success and r.success_changes and r.success_changes[-1][0] >= t0 + STALE_SUCCESS_S
            success_since = (success_since or now) if heard_ok else None
            if heard_ok and first_success is None:
                first_success = r.success_changes[-1][0]
            if success_since is not None and now - success_since >= success_hold_s:
                break
            if now - t0 >= timeout_s:
                break
        t1, wall1 = time.monotonic(), time.time()
        r1 = mon.snapshot()
        success = success_since is not None and t1 - success_since >= success_hold_s
        s0, s1 = r0.safety, r1.safety
        times = np.asarray(r1.command_times)
        window = times[(times >= wall0) & (times <= wall1)]
        rate = rate_and_jitter(window, self.sim_params.control_period_s)["rate_hz"]
        result = EpisodeResult(
            index=len(self.episodes), scene=self._scene, reset_message=message, success=bool(success),
            time_to_success_s=(first_success - t0) if success and first_success is not None else math.nan,
            duration_s=t1 - t0,
            final_error_m=r1.task_errors[-1] if len(r1.task_errors) > len(r0.task_errors) else math.nan,
            handoffs=sum(1 for t, m in r1.modes if t >= t0 and m in (Mode.PAUSED, Mode.ESCALATED)),
            human_override_s=_time_in_mode(r1.modes, Mode.HUMAN_OVERRIDE, t0, t1),
            corrections=max(0, r1.corrections - r0.corrections),
            safety_interventions=int(s1.commands_modified - s0.commands_modified) if s0 and s1 else 0,
            estops=int(s1.estop_trips - s0.estop_trips) if s0 and s1 else 0,
            commands=int(window.size), control_rate_hz=rate,
            stage_latency_ms=_episode_stages(r1.stage_times, wall0, wall1))
        self.episodes.append(result)
        self._windows.append((wall0, wall1))
        return result

    def summary(self, episodes: list[EpisodeResult] | None = None) -> dict[str, Any]:
        """The summary of ``episodes`` (default: all run so far) with the latency breakdown."""
        eps = self.episodes if episodes is None else episodes
        windows = [self._windows[e.index] for e in eps]
        rows = [row for row in self.listener.snapshot().stage_times  # latency of these episodes only
                if any(w0 <= row[4] <= w1 for w0, w1 in windows)]
        return summarize(eps, rows, self.monitor_params.latency_budget_s, self.sim_params.control_rate_hz)


def _time_in_mode(modes: list[tuple[float, int]], mode: int, t0: float, t1: float) -> float:
    """Seconds in ``mode`` between t0 and t1 from the (time, mode) change list."""
    total = 0.0
    for i, (t, m) in enumerate(modes):
        end = modes[i + 1][0] if i + 1 < len(modes) else t1
        if m == mode:
            total += max(0.0, min(end, t1) - max(t, t0))
    return total


def _episode_stages(stage_times: list[tuple[float, ...]], wall0: float, wall1: float) -> dict[str, float]:
    rows = [row for row in stage_times if wall0 <= row[4] <= wall1]
    lat = stage_latencies(rows)
    return {name: float(np.median(lat[name]) * 1e3) if lat[name].size else math.nan for name in (*STAGES, "total")}


def run_evaluation(embodiment: str, episodes: int, scene: str = "nominal", checkpoint: str | None = None,
                   params_file: str | None = None, timeout_s: float = 20.0, seed: int = 0,
                   stall_s: float = 0.0, out_dir: str | None = None, log_dir: str | None = None,
                   progress: bool = True, overrides: dict[str, dict[str, Any]] | None = None,
                   policy: str = "checkpoint", env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``episodes`` episodes and return {"summary", "episodes", "settings"}; writes
    ``eval.json`` and ``eval.png`` to ``out_dir`` when given. ``policy`` "sim_expert" drives
    with the simulator's scripted expert through the graph instead of the checkpoint."""
    from tqdm import tqdm

    if policy not in ("checkpoint", "sim_expert"):
        raise ValueError(f"policy must be 'checkpoint' or 'sim_expert', got {policy!r}")
    extra = {k: dict(v) for k, v in (overrides or {}).items()}
    extra.setdefault("sim_robot", {}).update({"scene": scene, "seed": int(seed)})
    if policy == "sim_expert":
        extra["sim_robot"].setdefault("expert_chunk_rate_hz", EXPERT_CHUNK_RATE_HZ)
        extra.setdefault("inference", {})["policy_source"] = "sim_expert"
        for node in ("inference", "action_buffer"):
            extra.setdefault(node, {}).setdefault("recompute_every", EXPERT_RECOMPUTE_EVERY)
    extra.setdefault("sim_operator", {}).update({"stall_s": float(stall_s)})
    with Evaluation(embodiment, checkpoint, params_file, extra, log_dir, env=env) as ev:
        ev.wait_until_ready()
        bar = tqdm(range(episodes), desc=f"eval {embodiment} ({scene})", disable=not progress, dynamic_ncols=True)
        for _ in bar:
            res = ev.run_episode(timeout_s)
            done = ev.episodes
            bar.set_postfix(success=f"{sum(e.success for e in done)}/{len(done)}",
                            err_mm=f"{res.final_error_m * 1e3:.0f}")
        summary = ev.summary()
        eps = list(ev.episodes)
    result = {"summary": summary, "episodes": [e.to_dict() for e in eps],
              "settings": {"embodiment": embodiment, "scene": scene, "episodes": episodes, "timeout_s": timeout_s,
                           "seed": seed, "stall_s": stall_s, "checkpoint": checkpoint, "policy": policy,
                           "physics": ev.sim_params.physics}}
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "eval.json"), "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2, default=float)
        plot_evaluation(eps, summary, os.path.join(out_dir, "eval.png"),
                        title=f"{embodiment} ({ev.sim_params.physics}, {scene}): {episodes} episodes")
    return result


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``hybridvla eval``."""
    p = argparse.ArgumentParser(prog="hybridvla eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--embodiment", default="franka", choices=EMBODIMENTS)
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--scene", default="nominal", choices=("nominal", "shifted"))
    p.add_argument("--checkpoint", default="checkpoints/default")
    p.add_argument("--policy", default="checkpoint", choices=("checkpoint", "sim_expert"),
                   help="sim_expert: the simulator's scripted expert drives through the graph (a perfect policy)")
    p.add_argument("--params-file", default=None, help="instead of config/<embodiment>.yaml")
    p.add_argument("--timeout", type=float, default=20.0, help="seconds per episode before it counts as failed")
    p.add_argument("--seed", type=int, default=1000, help="scene seed of the first episode (then +1 each)")
    p.add_argument("--stall-s", type=float, default=0.0,
                   help="the simulated operator takes over after this long without progress (0: only when asked)")
    p.add_argument("--out", default=None,
                   help="folder for eval.json and eval.png (default runs/eval/<embodiment>_<scene>)")
    p.add_argument("--log-dir", default=None, help="each node's output to <dir>/<node>.log")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    """``hybridvla eval``: returns the exit status (2 for bad arguments or parameters)."""
    args = build_parser().parse_args(argv)
    if args.episodes < 1 or not args.timeout > 0 or args.seed < 0 or args.stall_s < 0:
        print("hybridvla eval: error: --episodes >= 1, --timeout > 0, --seed >= 0 and --stall-s >= 0 please",
              file=sys.stderr)
        return 2
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    out = args.out or os.path.join("runs", "eval", f"{args.embodiment}_{args.scene}")
    try:
        result = run_evaluation(args.embodiment, args.episodes, args.scene, args.checkpoint, args.params_file,
                                args.timeout, args.seed, args.stall_s, out, args.log_dir, not args.quiet,
                                policy=args.policy)
    except ParameterError as exc:
        print(f"error: bad parameter: {exc}", file=sys.stderr)
        return 2
    except (NodeDied, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    s = result["summary"]
    print(f"{args.embodiment} ({result['settings']['physics']}, {args.scene}): success {s['successes']}/{s['episodes']}"
          f", final error median {s['final_error_m_median'] * 1e3:.1f} mm"
          f", control rate {s['control_rate_hz_median']:.1f} Hz")
    for key in ("time_to_success_s_median", "handoffs", "human_override_s", "corrections", "safety_interventions",
                "estops", "within_budget_fraction"):
        print(f"  {key:26s} {s[key]}")
    print("  latency p50 (ms): " + ", ".join(f"{k} {v['p50_ms']:.1f}" for k, v in s["latency_ms"].items())
          + f" (budget {s['latency_budget_ms']:.0f})")
    print(f"wrote {out}/eval.json and eval.png")
    return 0
