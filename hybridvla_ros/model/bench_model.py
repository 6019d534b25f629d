"""``hybridvla bench-model``: batch-1 inference variants side by side (printed, JSON, plot).

For one checkpoint and each embodiment, every kind of :mod:`hybridvla_ros.model.export`
(fp32 eager, int8 dynamic quantization, bf16, onnxruntime) on the same held-out
observations (recorded fresh with ``core.demos.record_demonstrations`` and a seed the
trainer does not use):

- latency of ``predict`` (preprocessing included) at batch 1, one torch/onnxruntime
  thread, p50/p99 over ``--iterations`` calls after ``--warmup`` calls; for flow heads at
  1 sample and at ``--num-samples`` samples (the confidence estimate), and their ratio;
- action error: mean |actions - demonstrated actions| (raw units), its change relative to
  fp32, and the mean |actions - fp32 actions|. Every kind gets the same flow noise
  (the generator is reseeded per observation), so differences are numerics only;
- memory, measured in a fresh subprocess per (kind, embodiment): resident set size after
  importing torch and loading the checkpoint, and the process's PEAK RSS (getrusage
  ru_maxrss) after building the variant and running it. The peak includes the fp32 model
  the variant was built from (it is kept); the printed +MiB is RSS after running minus
  RSS after loading, the variant's extra resident memory.

Targets reported against (not asserted): int8 >= 2x faster than fp32 with < 1 % more
action error; confidence from 5 flow samples within 1.5x the time of 1 sample.
Timing lives here, not in tests: our machines are shared and noisy; quote medians.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from typing import Any

import numpy as np

INT8_SPEEDUP_TARGET = 2.0
INT8_ERROR_INCREASE_TARGET = 0.01
CONFIDENCE_COST_TARGET = 1.5


def _rss_mib() -> float:
    """Current resident set size of this process (MiB), from /proc."""
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def memory_probe(checkpoint: str, kind: str, embodiment: str, iterations: int) -> dict[str, float]:
    """Run in a fresh process: RSS after loading, peak RSS after building ``kind`` and running it."""
    from hybridvla_ros.model.export import make_variant
    from hybridvla_ros.model.runner import PolicyRunner

    runner = PolicyRunner.load(checkpoint, embodiment, num_threads=1)
    after_load = _rss_mib()
    peak_load = _peak_rss_mib()
    variant = make_variant(runner, kind)
    image = np.zeros((runner.image_size, runner.image_size, 3), dtype=np.uint8)
    q = np.zeros(runner.action_dim)
    for _ in range(iterations):
        variant.predict(image, q, runner.default_instruction, 5)
    return {"rss_after_load_mib": after_load, "peak_rss_after_load_mib": peak_load,
            "peak_rss_mib": _peak_rss_mib(), "rss_after_run_mib": _rss_mib()}


def measure_memory(checkpoint: str, kind: str, embodiment: str, iterations: int = 20) -> dict[str, Any]:
    """:func:`memory_probe` in a subprocess (so earlier variants do not count); error text on failure."""
    cmd = [sys.executable, "-m", "hybridvla_ros.model.bench_model", "--memory-probe", kind, embodiment,
           "--checkpoint", checkpoint, "--iterations", str(iterations)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"rc {proc.returncode}"}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["peak_delta_mib"] = out["peak_rss_mib"] - out["peak_rss_after_load_mib"]
    out["rss_delta_mib"] = out["rss_after_run_mib"] - out["rss_after_load_mib"]
    return out


def _latency(variant: Any, observations: list[tuple[np.ndarray, np.ndarray]], instruction: str, num_samples: int,
             iterations: int, warmup: int) -> dict[str, float]:
    """p50/p99 of predict (ms) cycling through the observations."""
    from hybridvla_ros.core.stats import percentiles

    n = len(observations)
    for i in range(warmup):
        variant.predict(*observations[i % n], instruction, num_samples)
    samples = np.empty(iterations)
    for i in range(iterations):
        image, q = observations[i % n]
        t0 = time.perf_counter_ns()
        variant.predict(image, q, instruction, num_samples)
        samples[i] = (time.perf_counter_ns() - t0) * 1e-6
    stats = percentiles(samples)
    return {"p50_ms": stats["p50"], "p99_ms": stats["p99"]}


def bench_embodiment(runner: Any, demos: dict[str, Any], kinds: list[str], num_samples: int, iterations: int,
                     warmup: int) -> dict[str, Any]:
    """Latency and action error of every kind for one embodiment (see the module docstring)."""
    from hybridvla_ros.model.export import make_variant

    images, proprio, actions = demos["images"], demos["proprio"].astype(np.float64), demos["actions"]
    instruction = str(demos["instruction"])
    observations = [(images[i], proprio[i]) for i in range(len(proprio))]
    flow = runner.head_type == "flow"
    results: dict[str, Any] = {}
    reference: np.ndarray | None = None
    for kind in kinds:
        t0 = time.perf_counter()
        variant = make_variant(runner, kind)
        build_s = time.perf_counter() - t0
        predicted = np.empty(actions.shape, dtype=np.float64)
        for i, (image, q) in enumerate(observations):
            variant.reseed(i)
            predicted[i] = variant.predict(image, q, instruction, num_samples)[0]
        if reference is None and kind == "fp32":
            reference = predicted
        r: dict[str, Any] = {"build_s": build_s,
                             "action_mae": float(np.abs(predicted - actions).mean()),
                             "latency": _latency(variant, observations, instruction, num_samples, iterations,
                                                 warmup)}
        if reference is not None:
            r["mae_vs_fp32"] = float(np.abs(predicted - reference).mean())
            r["max_abs_vs_fp32"] = float(np.abs(predicted - reference).max())
        if flow:
            r["latency_1_sample"] = _latency(variant, observations, instruction, 1, iterations, warmup)
            r["confidence_cost_ratio"] = r["latency"]["p50_ms"] / r["latency_1_sample"]["p50_ms"]
        results[kind] = r
        del variant
    if "fp32" in results:
        base = results["fp32"]
        for r in results.values():
            r["speedup_vs_fp32"] = base["latency"]["p50_ms"] / r["latency"]["p50_ms"]
            r["error_increase_vs_fp32"] = r["action_mae"] / base["action_mae"] - 1.0 if base["action_mae"] else 0.0
    return {"head_type": runner.head_type, "observations": len(observations), "num_samples": num_samples,
            "kinds": results}


def plot(result: dict[str, Any], path: str) -> None:
    """Action error vs p50 latency, one point per (kind, embodiment)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    markers = {"fp32": "o", "int8": "s", "bf16": "^", "onnx": "D"}
    for emb, res in result["embodiments"].items():
        xs, ys = [], []
        for kind, r in res["kinds"].items():
            xs.append(r["latency"]["p50_ms"])
            ys.append(r["action_mae"])
            ax.scatter(xs[-1], ys[-1], marker=markers.get(kind, "x"), s=50)
            ax.annotate(f"{emb}/{kind}", (xs[-1], ys[-1]), fontsize=7, xytext=(4, 3), textcoords="offset points")
        ax.plot(xs, ys, lw=0.5, alpha=0.4)
    ax.set_xlabel("p50 latency at batch 1, 1 thread (ms)")
    ax.set_ylabel("held-out action error, mean |a - a_demo| (raw units)")
    ax.set_title("inference variants: accuracy vs speed")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    from hybridvla_ros.model.export import VARIANT_KINDS

    ap = argparse.ArgumentParser(prog="hybridvla bench-model", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="checkpoints/default")
    ap.add_argument("--embodiments", nargs="+", default=None, help="default: every head in the checkpoint")
    ap.add_argument("--kinds", nargs="+", default=list(VARIANT_KINDS), choices=VARIANT_KINDS)
    ap.add_argument("--config-dir", default="config", help="directory with <embodiment>.yaml (default: config)")
    ap.add_argument("--episodes", type=int, default=2, help="held-out episodes recorded per embodiment (default: 2)")
    ap.add_argument("--steps-per-episode", type=int, default=40, help="control steps per held-out episode")
    ap.add_argument("--seed", type=int, default=12345, help="recording seed of the held-out episodes")
    ap.add_argument("--num-samples", type=int, default=5, help="flow samples per prediction (default: 5)")
    ap.add_argument("--iterations", type=int, default=300, help="timed predictions per kind (default: 300)")
    ap.add_argument("--warmup", type=int, default=20, help="untimed predictions first (default: 20)")
    ap.add_argument("--skip-memory", action="store_true", help="no per-variant memory subprocesses")
    ap.add_argument("--out", default="runs/bench_model.json")
    ap.add_argument("--plot", default="runs/bench_model.png")
    ap.add_argument("--memory-probe", nargs=2, metavar=("KIND", "EMBODIMENT"), help=argparse.SUPPRESS)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit code."""
    args = build_parser().parse_args(argv)
    for name in ("episodes", "steps_per_episode", "num_samples", "iterations"):
        if getattr(args, name) < 1:
            print(f"hybridvla bench-model: error: --{name.replace('_', '-')} must be >= 1", file=sys.stderr)
            return 2
    import warnings

    import torch

    warnings.filterwarnings("ignore", category=UserWarning)  # quantize_per_tensor / ONNX tracer chatter
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    torch.set_num_threads(1)
    if args.memory_probe:
        print(json.dumps(memory_probe(args.checkpoint, *args.memory_probe, iterations=args.iterations)))
        return 0

    from hybridvla_ros.core.demos import record_demonstrations
    from hybridvla_ros.model.checkpoint import load_checkpoint
    from hybridvla_ros.model.runner import PolicyRunner
    from hybridvla_ros.model.train import load_embodiment

    try:
        policy, config = load_checkpoint(args.checkpoint)
        names = args.embodiments or list(policy.embodiment_names)
        for n in names:
            config.embodiment(n)
    except (ValueError, OSError) as exc:
        print(f"hybridvla bench-model: error: {exc}", file=sys.stderr)
        return 1
    size_mib = os.path.getsize(os.path.join(args.checkpoint, "model.safetensors")) / 2**20
    result: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "processor": platform.machine(),
                    "torch": torch.__version__, "threads": 1},
        "checkpoint": {"path": args.checkpoint, "parameters": sum(p.numel() for p in policy.parameters()),
                       "model_safetensors_mib": size_mib},
        "settings": {k: getattr(args, k) for k in ("episodes", "steps_per_episode", "seed", "num_samples",
                                                   "iterations", "warmup")},
        "memory_note": "fresh subprocess per variant; rss_after_load = RSS after import torch + loading the "
                       "checkpoint; peak_rss = getrusage ru_maxrss after building the variant and running it; "
                       "peak_delta = peak_rss - peak before building (0 when loading was the peak); "
                       "rss_delta (the +MiB column) = RSS after running - RSS after loading: the variant's extra "
                       "resident memory, the fp32 model it was built from still resident",
        "targets": {"int8_speedup_min": INT8_SPEEDUP_TARGET, "int8_error_increase_max": INT8_ERROR_INCREASE_TARGET,
                    "confidence_cost_ratio_max": CONFIDENCE_COST_TARGET},
        "embodiments": {}}
    print(f"checkpoint {args.checkpoint}: {result['checkpoint']['parameters']:,} parameters, "
          f"{size_mib:.1f} MiB; batch 1, 1 thread, {args.iterations} timed calls after {args.warmup}")
    for name in names:
        runner = PolicyRunner(policy, config, name)
        demos = record_demonstrations(load_embodiment(args.config_dir, name), args.episodes, args.steps_per_episode,
                                      image_size=config.image_size, seed=args.seed)
        res = bench_embodiment(runner, demos, args.kinds, args.num_samples, args.iterations, args.warmup)
        if not args.skip_memory:
            for kind in args.kinds:
                res["kinds"][kind]["memory"] = measure_memory(args.checkpoint, kind, name)
        result["embodiments"][name] = res
        print(f"\n{name} ({res['head_type']} head, {res['observations']} held-out observations, "
              f"{args.num_samples} flow samples):")
        head = f"  {'kind':<5} {'p50 ms':>7} {'p99 ms':>7} {'speedup':>7} {'act err':>9} {'d err':>7} " \
               f"{'|a-fp32|':>9} {'peak MiB':>8} {'+MiB':>6}"
        if res["head_type"] == "flow":
            head += f" {'1-smp p50':>9} {'5/1':>5}"
        print(head)
        for kind, r in res["kinds"].items():
            mem = r.get("memory", {})
            line = (f"  {kind:<5} {r['latency']['p50_ms']:7.2f} {r['latency']['p99_ms']:7.2f} "
                    f"{r.get('speedup_vs_fp32', float('nan')):6.2f}x {r['action_mae']:9.5f} "
                    f"{100 * r.get('error_increase_vs_fp32', float('nan')):+6.2f}% "
                    f"{r.get('mae_vs_fp32', float('nan')):9.2e} "
                    f"{mem.get('peak_rss_mib', float('nan')):8.0f} {mem.get('rss_delta_mib', float('nan')):6.1f}")
            if res["head_type"] == "flow":
                line += f" {r['latency_1_sample']['p50_ms']:9.2f} {r['confidence_cost_ratio']:5.2f}"
            print(line)
            if "error" in mem:
                print(f"        memory probe failed: {mem['error']}")
        int8 = res["kinds"].get("int8")
        if int8 and "speedup_vs_fp32" in int8:
            ok = int8["speedup_vs_fp32"] >= INT8_SPEEDUP_TARGET and \
                int8["error_increase_vs_fp32"] < INT8_ERROR_INCREASE_TARGET
            print(f"  int8 target (>= {INT8_SPEEDUP_TARGET:.0f}x, < {100 * INT8_ERROR_INCREASE_TARGET:.0f} % more "
                  f"error): {'met' if ok else 'NOT met'}")
        if res["head_type"] == "flow" and "fp32" in res["kinds"]:
            ratio = res["kinds"]["fp32"]["confidence_cost_ratio"]
            print(f"  {args.num_samples}-sample confidence costs {ratio:.2f}x one sample (fp32; target "
                  f"<= {CONFIDENCE_COST_TARGET}x): {'met' if ratio <= CONFIDENCE_COST_TARGET else 'NOT met'}")
    for path in (args.out, args.plot):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2, default=float)
    plot(result, args.plot)
    print(f"\nwrote {args.out} and {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
