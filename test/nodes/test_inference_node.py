"""inference_node over real DDS: newest observation only, chunks stamped with the observation time."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from hybridvla_msgs.msg import ActionChunk, Observation
from hybridvla_ros.core.kinematic_sim import KinematicSim
from hybridvla_ros.launch_description import NodeSpec, default_config_dir
from hybridvla_ros.params import from_params, load_node_params
from hybridvla_ros.params.inference import InferenceParams

pytestmark = pytest.mark.ros
FRANKA = os.path.join(default_config_dir(), "franka.yaml")


def _observation(ros, p: InferenceParams, sim: KinematicSim, stamp_s: float) -> Observation:
    rgb = sim.render()
    msg = Observation(embodiment="franka", instruction=p.instruction, joint_names=list(p.joint_names),
                      joint_positions=sim.positions.tolist(), joint_velocities=[0.0] * 7)
    msg.header.stamp.sec = int(stamp_s)
    msg.header.stamp.nanosec = int((stamp_s % 1) * 1e9)
    msg.image.height, msg.image.width, msg.image.encoding = rgb.shape[0], rgb.shape[1], "rgb8"
    msg.image.step = rgb.shape[1] * 3
    msg.image.data = rgb.tobytes()
    return msg


@pytest.mark.parametrize("runtime, head_type", [("torch", None), ("int8-ort", None), ("torch", "routed")])
def test_chunks_answer_the_newest_observation(ros, tiny_checkpoint, runtime, head_type) -> None:
    overrides = {"checkpoint_path": tiny_checkpoint, "runtime": runtime}
    if head_type is not None:  # the parameter file's mode, overridden: the learned router
        overrides["head_type"] = head_type
    p = from_params(InferenceParams, {**load_node_params(FRANKA, "inference"), **overrides})
    ros.start([NodeSpec("inference_node", "inference", FRANKA, overrides)])
    chunks: list[ActionChunk] = []
    ros.node.create_subscription(ActionChunk, "action_chunk", chunks.append, 50)
    pub = ros.node.create_publisher(Observation, "observation", 10)
    sim = KinematicSim(p, seed=3)
    sim.reset(seed=3)
    sent: list[float] = []

    def send() -> None:
        t = ros.now_s()
        pub.publish(_observation(ros, p, sim, t))
        sent.append(t)

    assert ros.spin_until(lambda: (send(), ros.spin_for(0.03))[1] is None and len(chunks) > 0, 60.0), ros.logs()
    chunks.clear()
    sent.clear()
    # Observations at 30 Hz for ~2 s; inference runs every recompute_every periods on the newest.
    t0 = ros.now_s()
    for _ in range(60):
        send()
        ros.spin_for(1 / 30)
    elapsed = ros.now_s() - t0
    ros.spin_for(0.3)
    period = p.recompute_every * p.control_period_s
    # Never more than one chunk per period (no backlog), and most periods answered.
    assert 0.6 * elapsed / period <= len(chunks) <= (elapsed + 0.3) / period + 2
    stamps = [c.header.stamp.sec + c.header.stamp.nanosec * 1e-9 for c in chunks]
    assert all(any(abs(s - t) < 1e-6 for t in sent) for s in stamps), "stamped with an observation's time"
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps), "never a backlog, never twice"
    c = chunks[-1]
    assert (c.action_dim, c.chunk_length) == (7, p.chunk_size)
    actions = np.asarray(c.actions).reshape(c.chunk_length, c.action_dim)
    assert np.all(np.isfinite(actions))
    assert 0.0 <= c.confidence <= 1.0 and 0.0 < c.inference_latency_s < 1.0
    assert c.head_type == p.head_type
    assert c.step_period_s == pytest.approx(p.control_period_s)

    # Stale observations are not answered; NaN proprio is rejected, the node lives on.
    n = len(chunks)
    pub.publish(_observation(ros, p, sim, ros.now_s() - 5.0))
    bad = _observation(ros, p, sim, ros.now_s())
    bad.joint_positions = [float("nan")] * 7
    pub.publish(bad)
    ros.spin_for(3 * period)
    assert len(chunks) == n
    assert not ros.runners[0].dead()


def test_missing_checkpoint_is_a_clear_error(ros, tmp_path) -> None:
    spec = NodeSpec("inference_node", "inference", FRANKA, {"checkpoint_path": str(tmp_path / "nope")})
    proc = subprocess.run([sys.executable, "-m", spec.module, *spec.ros_arguments()], env=ros.env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "inference.checkpoint_path" in proc.stderr and "nope" in proc.stderr
