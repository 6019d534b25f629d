"""A LeRobot ACT policy, served by the sidecar in its own process, drives the whole graph on the simulated
Franka over real DDS (issue 14, first test).

The policy: a small ACT that LeRobot's own ``lerobot-train`` trained (200 steps, in the LeRobot environment
.venv-lerobot) on the scripted expert's MuJoCo Franka demonstrations, recorded as ``hybridvla train`` records
them and written as a LeRobotDataset by ``hybridvla export-demos``: two 48x48 cameras, the exterior and the
wrist one (the remote mapping resizes the simulator's 120x160 frames to that; the wrist frame comes through
sync as the nearest to the exterior's), ``observation.state`` = the 7 arm joints + the suction_cup state
joint, 7 absolute joint targets, chunk 16; its normalization statistics are the dataset's, in the processor
files lerobot-train writes. The graph: every node of ``hybridvla run`` on the MuJoCo Franka (the file's
physics) with ``inference.policy_source: remote`` pointed at the sidecar; the graph itself has no adaptation
node then (a remote policy is not adapted online, issue 14 item 7). Whether the ACT does the task is not
checked (200 steps on 4 episodes): where its targets lie is.

What is checked, waiting for readiness (a first chunk, a first command), not for a clock:
1. chunks come from the sidecar and commands reach the controller at the control rate, inside the limits;
2. a wrench spike latches the e-stop (commands hold) until it is reset;
3. the sidecar killed mid-run: the buffer holds, the command stream comes to rest, no node dies, the
   inference node says why; the sidecar restarted on the same port: chunks and policy commands come back;
4. the policy made "uncertain" at run time: the graph pauses and asks for help, the simulated operator
   takes over, corrections are stored durably, and control goes back to the remote policy.
Without .venv-lerobot the test skips, except in CI (see test_lerobot_sidecar.py).

Measured (pytest -s prints it): about 41 s in all on the shared 2-core machine (load 2-5), of which about
5 s make the policy directory, 13 s until the remote ACT drives, 10 s to restart the sidecar.
"""
from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from test_lerobot_sidecar import _free_port, _lerobot_python

from hybridvla_msgs.msg import HandoffMode
from hybridvla_ros.core.correction_store import CorrectionStore
from hybridvla_ros.core.stats import rate_and_jitter
from hybridvla_ros.launch_description import default_config_dir, describe_graph
from hybridvla_ros.model.demo_data import default_steps_per_episode, demos_cache_path, get_demos, load_embodiment
from hybridvla_ros.nodes.graph_listener import GraphListener, Recording
from hybridvla_ros.params import from_params, load_node_params
from hybridvla_ros.params.safety_filter import SafetyFilterParams

pytestmark = [pytest.mark.e2e, pytest.mark.lerobot]

ROOT = Path(__file__).resolve().parents[2]
FRANKA = os.path.join(default_config_dir(), "franka.yaml")
# Failsafes for something that never happens, not timings: every wait ends at its event.
STARTUP_LIMIT_S = 300.0
EVENT_LIMIT_S = 60.0
CAMERAS = ("exterior", "wrist")  # franka.yaml's cameras: the MuJoCo Franka renders both (the wrist one on its hand)
CAM, WRIST = (f"observation.images.{c}" for c in CAMERAS)
IMAGE, STATE_DIM, ACTION_DIM, CHUNK = 48, 8, 7, 16
# The policy's training: the scripted expert's MuJoCo Franka demonstrations (as `hybridvla train` records them,
# both cameras at IMAGE x IMAGE), written as a LeRobotDataset by `hybridvla export-demos`, and `lerobot-train`
# on a small ACT. 48 px, not the model's 96: ACT's ResNet-18 costs about 0.5 s a step at 96 px on the 2-core
# machine; the test is about serving a trained LeRobot policy, not about its skill.
DEMO_EPISODES, DEMO_SEED, TRAIN_STEPS = 4, 7, 200
ACT_ARGS = ["--policy.type=act", "--policy.device=cpu", "--policy.push_to_hub=false", "--policy.dim_model=64",
            "--policy.n_heads=4", "--policy.dim_feedforward=128", "--policy.n_encoder_layers=1",
            "--policy.n_decoder_layers=1", "--policy.n_vae_encoder_layers=1", "--policy.latent_dim=8",
            f"--policy.chunk_size={CHUNK}", f"--policy.n_action_steps={CHUNK}",
            "--policy.pretrained_backbone_weights=null", "--policy.optimizer_lr=3e-4",
            "--policy.optimizer_lr_backbone=3e-4", f"--steps={TRAIN_STEPS}", "--batch_size=8", "--num_workers=0",
            "--log_freq=50", f"--save_freq={TRAIN_STEPS}", "--wandb.enable=false"]


@dataclass(frozen=True)
class TrainedAct:
    policy_dir: Path
    action_low: np.ndarray   # (7,) the demonstrations' smallest and largest commanded joint targets
    action_high: np.ndarray
    first_loss: float        # lerobot-train's logged loss at its first and last log line
    last_loss: float
    seconds: float


class SidecarProcess:
    """``python -m hybridvla_ros.lerobot_sidecar`` on a fixed port; started without waiting, so the graph
    comes up meanwhile; ``wait_serving()`` waits for its "serving" line; ``kill()`` is SIGKILL (a crash)."""

    def __init__(self, policy_dir: Path, port: int, log: Path) -> None:
        self.policy_dir, self.port, self.log = policy_dir, port, log
        self.url = f"ws://127.0.0.1:{port}"
        self.proc: subprocess.Popen[str] | None = None
        self.lines: queue.Queue[str] = queue.Queue()
        self.lives = 0

    def start(self) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
        env.pop("VIRTUAL_ENV", None)
        # one torch thread: the graph's nine processes share the machine with it
        self.proc = subprocess.Popen(
            [str(_lerobot_python()), "-m", "hybridvla_ros.lerobot_sidecar", "--policy-dir", str(self.policy_dir),
             "--port", str(self.port), "--device", "cpu", "--threads", "1"],
            cwd=str(ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lives += 1
        self.lines = queue.Queue()
        threading.Thread(target=self._pump, args=(self.proc, self.lines, self.lives), daemon=True).start()

    def _pump(self, proc: subprocess.Popen[str], lines: queue.Queue[str], life: int) -> None:
        assert proc.stdout is not None
        with open(self.log, "a") as f:
            f.write(f"--- life {life}\n")
            for line in proc.stdout:
                f.write(line)
                f.flush()
                lines.put(line)
        lines.put("")  # the process ended

    def wait_serving(self) -> None:
        end = time.monotonic() + STARTUP_LIMIT_S
        while time.monotonic() < end:
            try:
                line = self.lines.get(timeout=max(0.1, end - time.monotonic()))
            except queue.Empty:
                break
            if line == "":
                assert self.proc is not None
                raise AssertionError(f"the sidecar exited ({self.proc.wait()}): {self.log.read_text()[-3000:]}")
            m = re.search(r"serving \S+ on (ws://\S+)", line)
            if m:
                assert m.group(1) == self.url, (m.group(1), self.url)
                return
        raise AssertionError(f"the sidecar did not come up: {self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def franka_act(tmp_path_factory: pytest.TempPathFactory) -> TrainedAct:
    """A LeRobot ACT that ``lerobot-train`` trained on our MuJoCo Franka demonstrations (issue 14's test)."""
    t0 = time.monotonic()
    root = tmp_path_factory.mktemp("franka_act")
    params = load_embodiment(default_config_dir(), "franka")
    steps = default_steps_per_episode(params)
    demos = get_demos(params, DEMO_EPISODES, steps, IMAGE, DEMO_SEED, root, False, cameras=CAMERAS)
    assert bool(np.all(demos["expert_success"])), demos["expert_success"]
    npz = demos_cache_path(root, "franka", DEMO_EPISODES, steps, IMAGE, DEMO_SEED, params.physics,
                           params.state_joints, cameras=CAMERAS)
    dataset = root / "dataset"
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="2")
    done = subprocess.run([sys.executable, "-m", "hybridvla_ros.cli", "export-demos", "--demos", str(npz), "--out",
                           str(dataset), "--cameras", *CAMERAS], capture_output=True, text=True, cwd=str(ROOT),
                          env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    train = root / "train"
    done = subprocess.run([str(_lerobot_python().parent / "lerobot-train"), "--dataset.repo_id=local/demos",
                           f"--dataset.root={dataset}", *ACT_ARGS, f"--output_dir={train}"],
                          capture_output=True, text=True, cwd=str(root), env=env, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    losses = [float(x) for x in re.findall(r"step:\S+ .*? loss:([0-9.]+)", done.stdout + done.stderr)]
    assert len(losses) >= 2 and losses[-1] < losses[0], (done.stdout + done.stderr)[-3000:]  # it learned something
    policy_dir = train / "checkpoints" / f"{TRAIN_STEPS:06d}" / "pretrained_model"
    for made in ("config.json", "model.safetensors", "policy_preprocessor.json", "policy_postprocessor.json"):
        assert (policy_dir / made).is_file(), sorted(str(p) for p in train.rglob("*"))
    actions = np.asarray(demos["actions"])[:, 0]  # what the expert commanded at each step, as exported
    return TrainedAct(policy_dir, actions.min(0), actions.max(0), losses[0], losses[-1], time.monotonic() - t0)


def _at_rest(r: Recording, n: int = 10) -> bool:
    """The last ``n`` commands are one and the same point."""
    if len(r.commands) < n:
        return False
    last = np.asarray(r.commands[-n:])
    return bool(np.all(np.abs(last - last[-1]) <= 1e-9))


def test_lerobot_act_drives_the_whole_graph_on_the_simulated_franka(ros, franka_act: TrainedAct) -> None:
    t_start = time.monotonic()
    p = from_params(SafetyFilterParams, load_node_params(FRANKA, "safety_filter"))
    assert p.chunk_size == CHUNK and p.action_dim == ACTION_DIM
    store = str(ros.tmp_path / "corrections.sqlite")
    sidecar = SidecarProcess(franka_act.policy_dir, _free_port(), ros.tmp_path / "sidecar.log")
    graph = describe_graph("franka", sim=True, overrides={
        "inference": {
            "policy_source": "remote", "remote_url": sidecar.url,
            "remote_cameras": list(CAMERAS), "remote_image_keys": [CAM, WRIST], "remote_image_size": [IMAGE, IMAGE],
            "remote_image_resize": "stretch",  # as the exported demonstrations have their frames
            "remote_state_key": "observation.state", "remote_prompt_key": "task", "remote_embodiment_key": "",
            # a loaded 2-core machine: a late reply is not a dead server; after a failure retry soon
            "remote_deadline_s": 5.0, "remote_connect_timeout_s": 5.0, "remote_backoff_s": [0.2, 1.0],
        },
        # The policy drives from the start (its confidence is not what this test is about, until step 4).
        "handoff": {"pause_confidence": 0.0, "resume_confidence": 0.0, "max_consecutive_pauses": 10},
        "sim_operator": {"reaction_s": 0.3, "min_help_s": 1.5, "max_help_s": 2.5},
        "correction_recorder": {"store_path": store},
    })
    assert "adaptation" not in [spec.name for spec in graph]  # no online adaptation of a remote policy
    runner = ros.start(graph)
    listener = GraphListener(p, domain_id=ros.domain_id)
    try:
        sidecar.start()  # while the graph's nodes start: the inference node retries until it serves
        sidecar.wait_serving()
        t_serving = time.monotonic()

        # 1. The remote ACT drives: chunks arrive, commands answer them at the control rate, inside the limits.
        assert listener.wait_for(lambda r: r.ready, STARTUP_LIMIT_S), ros.logs()
        t_ready = time.monotonic()
        n0 = len(listener.snapshot().command_times)
        assert listener.wait_for(lambda r: len(r.command_times) >= n0 + 150 and len(r.chunk_info) >= 10,
                                 EVENT_LIMIT_S), ros.logs()
        rec = listener.snapshot()
        rj = rate_and_jitter(rec.command_times[n0:], p.control_period_s)
        rate = 1.0 / rj["period_p50_s"]
        assert rate == pytest.approx(p.control_rate_hz, rel=0.1), f"{rate:.1f} Hz"
        # The control path never waits on the policy: a node that sent one command per chunk (0.8-1.7 s
        # each here) would be far below half the rate; the clean-clone run saw 37 Hz with ACT in the
        # sidecar sharing the 2 cores, so the rate itself is the benchmarks' business.
        assert rj["rate_hz"] >= 0.5 * p.control_rate_hz, f"long gaps: {rj['rate_hz']:.1f} Hz"
        assert rec.policy_commands >= 25, rec.policy_commands
        cmds = np.asarray(rec.commands)
        assert np.all(cmds >= np.asarray(p.position_min) - 1e-9)
        assert np.all(cmds <= np.asarray(p.position_max) + 1e-9)
        steps = np.abs(np.diff(cmds, axis=0))
        assert np.all(steps <= np.asarray(p.max_velocity) * p.control_period_s * (1 + 1e-6) + 1e-9)
        # The sidecar unnormalized with the statistics of its processor files: the targets lie where the
        # demonstrations' do (an ACT whose normalized outputs were read as joint angles would sit near 0, over
        # 1.5 rad outside them in joint 4).
        chunk_latency = [v[1] for v in rec.chunk_info.values()]
        assert np.all(cmds[-50:] >= franka_act.action_low - 0.1), (cmds[-1], franka_act.action_low)
        assert np.all(cmds[-50:] <= franka_act.action_high + 0.1), (cmds[-1], franka_act.action_high)

        # 2. A wrench spike latches the e-stop: commands hold until it is reset.
        for _ in range(25):  # pushed again every 0.2 s: the first may go out before the robot has discovered us
            listener.push((0.0, 0.0, 3 * p.max_force_n))
            if listener.wait_for(lambda r: r.safety is not None and r.safety.estop_latched, 0.2):
                break
        assert listener.wait_for(lambda r: r.safety is not None and r.safety.estop_latched, 5.0), ros.logs()
        safety = listener.snapshot().safety
        assert safety is not None and "force" in safety.estop_reason, safety
        n_latched = len(listener.snapshot().commands)
        assert listener.wait_for(lambda r: len(r.commands) >= n_latched + 15, EVENT_LIMIT_S)
        held = np.asarray(listener.snapshot().commands[n_latched + 1:])
        assert np.allclose(held, held[0], atol=1e-12), "an e-stop holds one point"
        assert listener.wait_for(lambda r: r.safety is not None and r.safety.last_force_n < p.max_force_n, 10.0)
        ok, message = listener.reset_estop(timeout_s=10.0)
        assert ok, message
        assert listener.wait_for(lambda r: r.safety is not None and not r.safety.estop_latched, 10.0)
        n_policy = listener.snapshot().policy_commands
        assert listener.wait_for(lambda r: r.policy_commands >= n_policy + 25, EVENT_LIMIT_S), ros.logs()

        # 3. The sidecar dies mid-run: the buffer holds, the commands come to rest, nothing else dies.
        n_chunks = len(listener.snapshot().chunk_info)
        inference_log = ros.tmp_path / "nodes" / "inference.log"
        log_at_kill = len(inference_log.read_text(errors="replace"))
        sidecar.kill()
        t_killed = time.monotonic()
        assert listener.wait_for(lambda r: r.buffer is not None and r.buffer.holding, EVENT_LIMIT_S), ros.logs()
        assert listener.wait_for(_at_rest, EVENT_LIMIT_S), listener.snapshot().commands[-5:]
        t_rest = time.monotonic()
        rest = listener.snapshot()
        # no chunks without a server (one being computed and one on its way may still come)
        assert len(rest.chunk_info) <= n_chunks + 2, (n_chunks, len(rest.chunk_info))
        assert not runner.dead(), ros.logs()
        # the inference node says why, after the kill (its startup lines may say "cannot connect": not
        # those; a kill between two requests is seen as "cannot connect" by the next one)
        lost = re.compile(re.escape(f"remote {sidecar.url}: ")
                          + r"(.*cannot connect|the server closed the connection|connection failed)")
        assert ros.spin_until(lambda: lost.search(inference_log.read_text(errors="replace")[log_at_kill:])
                              is not None, EVENT_LIMIT_S), inference_log.read_text(errors="replace")[-3000:]
        # The same port, a new server process: the inference node reconnects by itself.
        sidecar.start()
        sidecar.wait_serving()
        n_policy = rest.policy_commands
        assert listener.wait_for(lambda r: len(r.chunk_info) > len(rest.chunk_info) + 3
                                 and r.policy_commands >= n_policy + 25, EVENT_LIMIT_S), ros.logs()
        t_back = time.monotonic()
        assert not runner.dead(), ros.logs()

        # 4. Human in the loop with this source: the engineer makes the policy "uncertain" at run time
        # (resume first: a pause threshold above the resume threshold is refused), the graph pauses and asks
        # for help, the simulated operator takes over, its corrections are stored, and control comes back.
        for name in ("resume_confidence", "pause_confidence"):
            ok, why = listener.set_parameter("handoff", name, 1.0, timeout_s=10.0)
            assert ok, why

        def after(mode: int, since: float) -> bool:
            return any(m == mode and t >= since for t, m in listener.snapshot().modes)

        assert listener.wait_for(lambda r: any(m == HandoffMode.HUMAN_OVERRIDE for _, m in r.modes),
                                 EVENT_LIMIT_S), (listener.snapshot().modes, ros.logs())
        t_human = next(t for t, m in listener.snapshot().modes if m == HandoffMode.HUMAN_OVERRIDE)
        assert after(HandoffMode.PAUSED, t_back), "the low confidence paused the policy before the human came"
        assert listener.wait_for(lambda r: r.corrections >= 10, EVENT_LIMIT_S), (listener.snapshot().corrections,
                                                                                 ros.logs())
        for name in ("pause_confidence", "resume_confidence"):
            ok, why = listener.set_parameter("handoff", name, 0.0, timeout_s=10.0)
            assert ok, why
        assert listener.wait_for(lambda r: any(m == HandoffMode.AUTONOMOUS and t > t_human for t, m in r.modes),
                                 EVENT_LIMIT_S), (listener.snapshot().modes[-5:], ros.logs())
        # Control is back with the policy, behind the safety filter. This ACT (200 steps on 4 episodes), handed
        # the arm with the cup on the cube, sometimes presses on: 2 of 3 runs latched the e-stop on contact
        # (50 N, 107 N) 0.2 s after the hand back, as it must on a robot. Either the policy drives on, or it
        # drove and the filter stopped it for a force it made (nothing is pushed here) and holds.
        n_policy = listener.snapshot().policy_commands

        def contact_estop(r: Recording) -> bool:
            return r.safety is not None and r.safety.estop_latched

        assert listener.wait_for(lambda r: r.policy_commands >= n_policy + 25 or contact_estop(r), EVENT_LIMIT_S), \
            ros.logs()
        handed_back = listener.snapshot()
        assert handed_back.policy_commands > n_policy, "the policy drove again after the hand back"
        if contact_estop(handed_back):
            assert handed_back.safety is not None and "force" in handed_back.safety.estop_reason, handed_back.safety
            n_latched = len(handed_back.commands)
            assert listener.wait_for(lambda r: len(r.commands) >= n_latched + 15, EVENT_LIMIT_S)
            held = np.asarray(listener.snapshot().commands[n_latched + 1:])
            assert np.allclose(held, held[0], atol=1e-12), "an e-stop holds one point"
        after_hand_back = "an e-stop on contact" if contact_estop(handed_back) else "the policy drove"
        assert not runner.dead(), ros.logs()
        with CorrectionStore(store, replay_capacity=100) as s:
            assert s.count() >= 10
            arrays = s.load_arrays(image_size=32)
            assert arrays["human_action"].shape[1] == ACTION_DIM and arrays["images"].shape[1:] == (32, 32, 3)

        # The whole run, inside the limits (e-stop, outage, human and hand-back included).
        rec = listener.snapshot()
        cmds = np.asarray(rec.commands)
        assert np.all(cmds >= np.asarray(p.position_min) - 1e-9)
        assert np.all(cmds <= np.asarray(p.position_max) + 1e-9)
        steps = np.abs(np.diff(cmds, axis=0))
        assert np.all(steps <= np.asarray(p.max_velocity) * p.control_period_s * (1 + 1e-6) + 1e-9)
        confidences = [v[2] for v in rec.chunk_info.values()]
        print(f"\nLeRobot ACT trained by lerobot-train ({TRAIN_STEPS} steps, loss {franka_act.first_loss:.2f} -> "
              f"{franka_act.last_loss:.2f}; demonstrations, dataset and training {franka_act.seconds:.0f} s) "
              f"through the graph (MuJoCo Franka): sidecar serving {t_serving - t_start:.1f} s after "
              f"the start, ready {t_ready - t_start:.1f} s; {rate:.1f} Hz; {len(rec.chunk_info)} chunks, latency "
              f"p50 {np.median(chunk_latency) * 1e3:.0f} ms, confidence p50 {np.nanmedian(confidences):.2f}; at rest "
              f"{t_rest - t_killed:.1f} s after the kill, back {t_back - t_rest:.1f} s after; "
              f"{rec.corrections} corrections; after the hand back {after_hand_back}; "
              f"total {time.monotonic() - t_start:.1f} s")
    finally:
        listener.close()
        sidecar.stop()


def test_bench_remote_times_the_act_through_the_sidecar(franka_act: TrainedAct, tmp_path: Path) -> None:
    """``hybridvla bench-remote --lerobot-policy-dir``: the sidecar's round trip and its model time per chunk."""
    import json

    from hybridvla_ros import bench_remote

    out = tmp_path / "bench_remote.json"
    assert bench_remote.main(["--no-checkpoint", "--lerobot-policy-dir", str(franka_act.policy_dir), "--requests",
                              "3", "--warmup", "1", "--threads", "2", "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    act = written["lerobot"]
    assert "checkpoint" not in written
    assert act["policy_type"] == "act" and act["action_horizon"] == CHUNK
    assert set(act["input_features"]) == {CAM, WRIST, "observation.state"}
    assert act["round_trip"]["n"] == act["model"]["n"] == 3
    assert 0 < act["model"]["p50_ms"] <= act["round_trip"]["p50_ms"]
