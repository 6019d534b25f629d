"""adaptation_node + inference_node over real DDS: corrections -> accepted version -> swapped in -> rolled back."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String
from std_srvs.srv import Trigger

from hybridvla_msgs.msg import ActionChunk, Observation
from hybridvla_ros.core.correction_store import CorrectionRecord, CorrectionStore
from hybridvla_ros.core.image import resize_for_policy
from hybridvla_ros.launch_description import NodeSpec, default_config_dir
from hybridvla_ros.model.checkpoint import model_version_of
from hybridvla_ros.params import from_params, load_node_params
from hybridvla_ros.params.adaptation import AdaptationParams
from hybridvla_ros.sim.kinematic import KinematicSim

pytestmark = pytest.mark.ros
FRANKA = os.path.join(default_config_dir(), "franka.yaml")
LATCHED = QoSProfile(depth=10, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)


def fill_store(path: str, p: AdaptationParams, n: int, seed: int = 100) -> None:
    """``n`` corrections, one per 0.1 s, of a human reaching 10 cm beside the red target."""
    sim = KinematicSim(p, seed=seed)
    every = round(0.1 / p.control_period_s)
    with CorrectionStore(path, replay_capacity=100) as store:
        episode = 0
        while store.count() < n:
            sim.reset(seed=seed + episode)
            for k in range(40):
                target = sim.target
                sim.target = target + np.array([0.0, 0.1, 0.0])
                human = sim.expert_target()
                sim.target = target
                if k % every == 0 and store.count() < n:
                    store.add(CorrectionRecord(
                        stamp_s=1000.0 + 10 * episode + k * p.control_period_s, embodiment="franka",
                        instruction=p.instruction, image=resize_for_policy(sim.render(), 96),
                        joint_positions=np.array([*sim.positions, *sim.state_joint_positions.values()]),
                        human_action=human, session_id="test", episode_index=episode,
                        joint_names=(*p.joint_names, *sim.state_joint_positions)))  # as the recorder stores them
                sim.command_positions(human)
                sim.step(p.control_period_s)
            episode += 1


def observation(ros, p: AdaptationParams, sim: KinematicSim) -> Observation:
    rgb = sim.render()
    state = sim.state_joint_positions  # franka's suction cup: the sync node carries it after the arm joints
    msg = Observation(embodiment="franka", instruction=p.instruction, joint_names=[*p.joint_names, *state],
                      joint_positions=[*sim.positions.tolist(), *state.values()],
                      joint_velocities=[0.0] * (p.action_dim + len(state)))
    msg.header.stamp = ros.node.get_clock().now().to_msg()
    msg.image.height, msg.image.width, msg.image.encoding = rgb.shape[0], rgb.shape[1], "rgb8"
    msg.image.step = rgb.shape[1] * 3
    msg.image.data = rgb.tobytes()
    return msg


def test_corrections_become_a_served_version_and_roll_back(ros, tiny_checkpoint, tmp_path) -> None:
    p = from_params(AdaptationParams, load_node_params(FRANKA, "adaptation"))
    store_path = str(tmp_path / "franka.sqlite")
    fill_store(store_path, p, 40)
    adapt_root = tmp_path / "adapt"
    ros.start([
        NodeSpec("inference_node", "inference", FRANKA, {"checkpoint_path": tiny_checkpoint}),
        NodeSpec("adaptation_node", "adaptation", FRANKA,
                 {"checkpoint_path": tiny_checkpoint, "adapt_root": str(adapt_root), "steps": 150,
                  # these corrections contradict the tiny policy's training data; with half of each batch
                  # replayed the held-out replay error rose 18 % (> the 10 % allowed) once training kept
                  # all 480 of its examples for replay instead of 400
                  "replay_fraction": 0.75, "min_corrections": 20, "seed": 0}),
    ])
    n = ros.node
    chunks: list[ActionChunk] = []
    statuses: list[dict] = []
    updates: list[str] = []
    active: list[dict] = []
    n.create_subscription(ActionChunk, "action_chunk", chunks.append, 50)
    n.create_subscription(String, "adaptation/status", lambda m: statuses.append(json.loads(m.data)), LATCHED)
    n.create_subscription(String, "inference/model_update", lambda m: updates.append(m.data), 10)
    n.create_subscription(String, "inference/active_model", lambda m: active.append(json.loads(m.data)), LATCHED)
    obs_pub = n.create_publisher(Observation, "observation", 2)
    request_pub = n.create_publisher(String, "correction_recorder/adapt_request", 10)
    update_pub = n.create_publisher(String, "inference/model_update", 10)
    rollback = n.create_client(Trigger, "inference/rollback")
    sim = KinematicSim(p, seed=7)

    def run_until(predicate, timeout_s: float) -> bool:
        def step() -> bool:
            obs_pub.publish(observation(ros, p, sim))
            ros.spin_for(0.05)
            return predicate()
        return ros.spin_until(step, timeout_s)

    base_version = model_version_of(tiny_checkpoint)
    assert run_until(lambda: len(chunks) > 0 and request_pub.get_subscription_count() > 0, 60.0), ros.logs()
    assert chunks[-1].model_version == base_version

    # A bad update is ignored: inference keeps serving the base.
    update_pub.publish(String(data=str(tmp_path / "no_such_checkpoint")))
    assert rollback.wait_for_service(timeout_sec=5.0)
    fut = rollback.call_async(Trigger.Request())
    assert ros.spin_until(fut.done, 5.0) and not fut.result().success, "nothing to roll back to yet"

    # One request starts an adaptation; two more while it runs are coalesced into one more run.
    def request(count: int) -> None:
        request_pub.publish(String(data=json.dumps({"store_path": store_path, "count": count, "embodiment": "franka",
                                                    "session_id": "test"})))

    request(40)
    ros.spin_for(0.5)
    request(41)
    request(42)
    assert run_until(lambda: len(statuses) > 0, 60.0), ros.logs()
    status = statuses[0]
    assert status["accepted"], status["reason"]
    assert status["version"] == 1 and status["samples"]["corrections"] + status["samples"]["corrections_heldout"] == 40
    assert status["heldout_corrections"]["after"]["chunk_mae"] < status["heldout_corrections"]["before"]["chunk_mae"]
    v1 = status["model_version"]
    assert v1 == model_version_of(status["checkpoint"]) != base_version
    assert run_until(lambda: status["checkpoint"] in updates, 5.0)

    # Inference swaps the new weights in between two calls; the chunks say which version answered.
    assert run_until(lambda: chunks[-1].model_version == v1, 20.0), ros.logs()
    seen = [c.model_version for c in chunks]
    assert set(seen[:seen.index(v1)]) == {base_version}

    # The coalesced run fine-tunes what is served (v1).
    assert run_until(lambda: len(statuses) > 1, 60.0), ros.logs()
    second = statuses[1]
    assert second["base_version"] == 1 and second["base_model_version"] == v1
    serving, previous = (second["model_version"], v1) if second["accepted"] else (v1, base_version)
    assert run_until(lambda: chunks[-1].model_version == serving and active and
                     active[-1]["model_version"] == serving, 20.0), ros.logs()

    # Rollback: back to the version served before.
    fut = rollback.call_async(Trigger.Request())
    assert ros.spin_until(fut.done, 5.0) and fut.result().success, fut.result().message
    n_before = len(chunks)
    assert run_until(lambda: len(chunks) > n_before + 2 and chunks[-1].model_version == previous, 10.0)
    assert run_until(lambda: active[-1]["model_version"] == previous, 5.0)
    assert len(statuses) == 2, "three requests, two adaptations"
    assert not ros.runners[0].dead(), ros.logs()
    log_lines = (adapt_root / "franka" / "adaptations.jsonl").read_text().splitlines()
    assert [json.loads(line)["accepted"] for line in log_lines] == [True, second["accepted"]]


def test_missing_base_checkpoint_is_a_clear_error(ros, tmp_path) -> None:
    spec = NodeSpec("adaptation_node", "adaptation", FRANKA, {"checkpoint_path": str(tmp_path / "nope")})
    proc = subprocess.run([sys.executable, "-m", spec.module, *spec.ros_arguments()], env=ros.env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "adaptation.checkpoint_path" in proc.stderr and "nope" in proc.stderr
