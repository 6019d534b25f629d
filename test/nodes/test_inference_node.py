"""inference_node over real DDS: newest observation only, chunks stamped with the observation time."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String

from hybridvla_msgs.msg import ActionChunk, Observation
from hybridvla_ros.launch_description import NodeSpec, default_config_dir
from hybridvla_ros.params import from_params, load_node_params
from hybridvla_ros.params.inference import InferenceParams
from hybridvla_ros.sim.kinematic import KinematicSim

pytestmark = pytest.mark.ros
FRANKA = os.path.join(default_config_dir(), "franka.yaml")


def _observation(ros, p: InferenceParams, sim: KinematicSim, stamp_s: float, with_state: bool = True,
                 extra_cameras: tuple[str, ...] = ()) -> Observation:
    """The sync node's Observation: the arm joints, then (unless ``with_state`` is False) the
    parameter file's observed-only joints (franka's suction_cup) from the simulator; the image as the
    anchor camera's, and a frame of each of ``extra_cameras`` (the image upside down)."""
    rgb = sim.render()
    state = sim.state_joint_positions if with_state else {}
    msg = Observation(embodiment="franka", instruction=p.instruction, joint_names=[*p.joint_names, *state],
                      joint_positions=[*sim.positions.tolist(), *state.values()],
                      joint_velocities=[0.0] * (7 + len(state)))
    msg.header.stamp.sec = int(stamp_s)
    msg.header.stamp.nanosec = int((stamp_s % 1) * 1e9)
    msg.image.height, msg.image.width, msg.image.encoding = rgb.shape[0], rgb.shape[1], "rgb8"
    msg.image.step = rgb.shape[1] * 3
    msg.image.data = rgb.tobytes()
    msg.camera_name = p.camera_name
    for camera in extra_cameras:
        image = type(msg.image)(height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8", step=rgb.shape[1] * 3,
                                data=np.ascontiguousarray(rgb[::-1]).tobytes())
        msg.extra_camera_names.append(camera)
        msg.extra_images.append(image)
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
    chunks.clear()  # `sent` is kept: a chunk for an observation sent before this may still arrive
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
    bad.joint_positions = [float("nan")] * len(bad.joint_names)
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


# --- observed-only joints (state_joints): franka's suction cup

LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)


def _franka_yaml_without_state_joints(dest) -> str:
    """A copy of config/ whose franka.yaml lists no state_joints (an older robot setup)."""
    shutil.copytree(default_config_dir(), dest)
    path = os.path.join(dest, "franka.yaml")
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    del doc["/**"]["ros__parameters"]["state_joints"]
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(doc, f)
    return path


@pytest.fixture(scope="module")
def franka_checkpoints(tmp_path_factory) -> dict:
    """Tiny franka policies (seconds to train): ``state`` observes suction_cup (config/franka.yaml),
    ``old`` was trained before state joints existed (no state_joints in its parameter file)."""
    import torch

    from hybridvla_ros.cli_model import train_main

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("state_joints")
    old_yaml = _franka_yaml_without_state_joints(root / "config_old")
    out = {"old_yaml": old_yaml}
    for key, config_dir in (("state", default_config_dir()), ("old", os.path.dirname(old_yaml))):
        out[key] = str(root / key)
        assert train_main(["--embodiments", "franka", "--episodes", "2", "--steps-per-episode", "12",
                           "--min-expert-success", "0", "--train-steps", "12", "--batch-size", "8",
                           "--image-size", "32",
                           "--instruction-encoder", "hash-3gram", "--physics", "kinematic", "--heads", "config",
                           "--config-dir", str(config_dir), "--out", out[key], "--threads", "1", "--quiet"]) == 0
    with open(os.path.join(out["state"], "config.json"), encoding="utf-8") as f:
        assert json.load(f)["embodiments"][0]["state_joints"] == ["suction_cup"]
    with open(os.path.join(out["old"], "config.json"), encoding="utf-8") as f:
        assert not json.load(f)["embodiments"][0].get("state_joints")
    return out


def _serve(ros, p: InferenceParams, chunks: list, seconds: float, **obs_kwargs) -> int:
    """Observations at ~30 Hz for ``seconds``; returns how many chunks came back meanwhile."""
    if not hasattr(ros, "observation_pub"):  # one per test: a new publisher would need discovery again
        ros.observation_pub = ros.node.create_publisher(Observation, "observation", 10)
    pub = ros.observation_pub
    sim = KinematicSim(p, seed=3)
    sim.reset(seed=3)
    n = len(chunks)
    end = ros.now_s() + seconds
    while ros.now_s() < end:
        msg = _observation(ros, p, sim, ros.now_s(), **obs_kwargs)
        if obs_kwargs.get("with_state", True):  # the driver's order is not ours, and it has extra joints
            order = [7, 3, 0, 6, 1, 5, 2, 4]
            msg.joint_names = ["panda_finger_joint1", *(msg.joint_names[i] for i in order)]
            msg.joint_positions = [0.04, *(msg.joint_positions[i] for i in order)]
            msg.joint_velocities = [0.0] * 9
        pub.publish(msg)
        ros.spin_for(1 / 30)
    return len(chunks) - n



def test_observation_without_a_state_joint_the_checkpoint_needs_is_rejected(ros, franka_checkpoints) -> None:
    ckpt = franka_checkpoints["state"]
    overrides = {"checkpoint_path": ckpt}
    p = from_params(InferenceParams, {**load_node_params(FRANKA, "inference"), **overrides})
    ros.start([NodeSpec("inference_node", "inference", FRANKA, overrides)])
    chunks: list[ActionChunk] = []
    ros.node.create_subscription(ActionChunk, "action_chunk", chunks.append, 50)
    # Served once the suction cup is there, picked by name from the driver's order.
    assert ros.spin_until(lambda: _serve(ros, p, chunks, 0.3) > 0 or len(chunks) > 0, 60.0), ros.logs()
    c = chunks[-1]
    assert (c.action_dim, c.chunk_length) == (7, p.chunk_size)
    assert np.all(np.isfinite(c.actions))
    # Without it: rejected, no chunk (the action buffer holds), the node lives on.
    ros.spin_for(0.3)
    chunks.clear()
    assert _serve(ros, p, chunks, 1.0, with_state=False) == 0
    ros.spin_for(0.3)
    assert not chunks and not ros.runners[0].dead()
    assert ros.spin_until(lambda: "observation rejected" in ros.logs(), 5.0), ros.logs()
    assert "suction_cup" in ros.logs().split("observation rejected", 1)[1].splitlines()[0]
    # And served again when it comes back.
    assert _serve(ros, p, chunks, 1.0) > 0


def test_our_model_reads_the_camera_policy_camera_names(ros, franka_checkpoints) -> None:
    """policy_camera: wrist (franka.yaml's extra camera): served while observations carry the wrist frame;
    one without it (the wrist camera stale at sync) is refused naming the camera, and the buffer holds."""
    overrides = {"checkpoint_path": franka_checkpoints["state"], "policy_camera": "wrist"}
    p = from_params(InferenceParams, {**load_node_params(FRANKA, "inference"), **overrides})
    ros.start([NodeSpec("inference_node", "inference", FRANKA, overrides)])
    chunks: list[ActionChunk] = []
    ros.node.create_subscription(ActionChunk, "action_chunk", chunks.append, 50)
    assert ros.spin_until(lambda: _serve(ros, p, chunks, 0.3, extra_cameras=("wrist",)) > 0 or len(chunks) > 0,
                          60.0), ros.logs()
    ros.spin_for(0.3)
    chunks.clear()
    assert _serve(ros, p, chunks, 1.0) == 0  # the exterior camera alone
    ros.spin_for(0.3)
    assert not chunks and not ros.runners[0].dead()
    assert ros.spin_until(lambda: "observation rejected" in ros.logs(), 5.0), ros.logs()
    assert "camera 'wrist'" in ros.logs().split("observation rejected", 1)[1].splitlines()[0]
    assert _serve(ros, p, chunks, 1.0, extra_cameras=("top", "wrist")) > 0


def test_checkpoint_state_joints_the_parameter_file_lacks_are_a_clear_error(ros, franka_checkpoints) -> None:
    spec = NodeSpec("inference_node", "inference", franka_checkpoints["old_yaml"],
                    {"checkpoint_path": franka_checkpoints["state"]})
    proc = subprocess.run([sys.executable, "-m", spec.module, *spec.ros_arguments()], env=ros.env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "inference.state_joints" in proc.stderr and "suction_cup" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_older_checkpoint_is_served_and_swapped_for_one_with_state_joints(ros, franka_checkpoints) -> None:
    """Parameters list suction_cup, the checkpoint does not read it: served (one info line). An update
    to a checkpoint that reads it swaps in, and from then on the suction cup is needed."""
    overrides = {"checkpoint_path": franka_checkpoints["old"]}
    p = from_params(InferenceParams, {**load_node_params(FRANKA, "inference"), **overrides})
    ros.start([NodeSpec("inference_node", "inference", FRANKA, overrides)])
    chunks: list[ActionChunk] = []
    active: list[dict] = []
    ros.node.create_subscription(ActionChunk, "action_chunk", chunks.append, 50)
    ros.node.create_subscription(String, "inference/active_model", lambda m: active.append(json.loads(m.data)),
                                 LATCHED)
    update = ros.node.create_publisher(String, "inference/model_update", 10)
    assert ros.spin_until(lambda: _serve(ros, p, chunks, 0.3, with_state=False) > 0 or len(chunks) > 0,
                          60.0), ros.logs()
    assert "not observed by this policy" in ros.logs() and "suction_cup" in ros.logs()
    assert active and active[-1]["checkpoint_path"] == os.path.abspath(franka_checkpoints["old"])

    update.publish(String(data=franka_checkpoints["state"]))
    assert ros.spin_until(lambda: active[-1]["checkpoint_path"] == os.path.abspath(franka_checkpoints["state"]),
                          30.0), ros.logs()
    new_version = active[-1]["model_version"]
    ros.spin_for(0.3)
    chunks.clear()
    assert _serve(ros, p, chunks, 1.0, with_state=False) == 0, "the new policy needs the suction cup"
    assert _serve(ros, p, chunks, 1.0) > 0
    assert chunks[-1].model_version == new_version
    assert not ros.runners[0].dead()


def test_update_to_a_checkpoint_with_unlisted_state_joints_is_refused(ros, franka_checkpoints) -> None:
    overrides = {"checkpoint_path": franka_checkpoints["old"]}
    p = from_params(InferenceParams, {**load_node_params(franka_checkpoints["old_yaml"], "inference"), **overrides})
    ros.start([NodeSpec("inference_node", "inference", franka_checkpoints["old_yaml"], overrides)])
    chunks: list[ActionChunk] = []
    ros.node.create_subscription(ActionChunk, "action_chunk", chunks.append, 50)
    update = ros.node.create_publisher(String, "inference/model_update", 10)
    assert ros.spin_until(lambda: _serve(ros, p, chunks, 0.3, with_state=False) > 0 or len(chunks) > 0,
                          60.0), ros.logs()
    old_version = chunks[-1].model_version
    assert ros.spin_until(lambda: (update.publish(String(data=franka_checkpoints["state"])), ros.spin_for(0.2))[1]
                          is None and "ignored, still serving" in ros.logs(), 20.0), ros.logs()
    assert "suction_cup" in ros.logs().split("ignored, still serving", 1)[1]
    chunks.clear()
    assert _serve(ros, p, chunks, 1.0, with_state=False) > 0
    assert {c.model_version for c in chunks} == {old_version}


def test_sim_expert_serves_the_plans_it_reads_and_refuses_updates(ros, tmp_path) -> None:
    """policy_source sim_expert: each new plan on sim_robot/expert_chunk answers an observation, on the plan's
    own time base; a malformed plan is dropped with a warning; weight updates are refused."""
    overrides = {"checkpoint_path": str(tmp_path / "unused"), "policy_source": "sim_expert"}
    p = from_params(InferenceParams, {**load_node_params(FRANKA, "inference"), **overrides})
    ros.start([NodeSpec("inference_node", "inference", FRANKA, overrides)])
    chunks: list[ActionChunk] = []
    active: list[dict] = []
    ros.node.create_subscription(ActionChunk, "action_chunk", chunks.append, 50)
    ros.node.create_subscription(String, "inference/active_model", lambda m: active.append(json.loads(m.data)),
                                 LATCHED)
    plan_pub = ros.node.create_publisher(ActionChunk, "sim_robot/expert_chunk", 10)
    obs_pub = ros.node.create_publisher(Observation, "observation", 10)
    update = ros.node.create_publisher(String, "inference/model_update", 10)
    sim = KinematicSim(p, seed=3)
    sim.reset(seed=3)
    plans: dict[float, np.ndarray] = {}

    def plan_and_observe(size: int | None = None) -> None:
        t = ros.now_s() - 0.01
        plan = ActionChunk(embodiment="franka", chunk_length=p.chunk_size, action_dim=7,
                           step_period_s=p.control_period_s, confidence=1.0, head_type="sim_expert")
        plan.header.stamp.sec, plan.header.stamp.nanosec = int(t), int((t % 1) * 1e9)
        actions = sim.positions[None, :] + np.linspace(0.0, 0.1, p.chunk_size)[:, None]  # (T, 7)
        plan.actions = actions.ravel().tolist()[:size]
        plan_pub.publish(plan)
        plans[plan.header.stamp.sec + plan.header.stamp.nanosec * 1e-9] = actions
        ros.spin_for(0.02)
        obs_pub.publish(_observation(ros, p, sim, ros.now_s()))
        ros.spin_for(0.05)

    assert ros.spin_until(lambda: (plan_and_observe(), len(chunks) > 2)[1], 60.0), ros.logs()
    c = chunks[-1]
    stamp = c.header.stamp.sec + c.header.stamp.nanosec * 1e-9
    answered = [s for s in plans if abs(s - stamp) < 1e-6]
    assert answered, "stamped with the plan's time, not the frame's"
    np.testing.assert_allclose(np.asarray(c.actions).reshape(p.chunk_size, 7), plans[answered[0]])
    assert (c.head_type, c.confidence, c.model_version) == ("sim_expert", 1.0, 0)
    assert c.step_period_s == pytest.approx(p.control_period_s)
    assert active and active[-1]["model_version"] == 0

    ros.spin_for(0.5)  # every good plan answered or too old (sim_expert's MAX_AGE_S is 0.3 s)
    n = len(chunks)
    plan_and_observe(size=5)  # 5 values for a (16, 7) plan
    assert ros.spin_until(lambda: "plan on sim_robot/expert_chunk rejected" in ros.logs(), 5.0), ros.logs()
    update.publish(String(data=str(tmp_path / "some_checkpoint")))
    assert ros.spin_until(lambda: "is not adaptable" in ros.logs(), 5.0), ros.logs()
    assert len(chunks) == n and not ros.runners[0].dead()
    plan_and_observe()
    assert ros.spin_until(lambda: len(chunks) > n, 5.0), ros.logs()


# --- real-time chunking (issue 17 item 1)

def test_real_time_chunking_freezes_the_steps_that_run_before_the_next_chunk(ros, franka_checkpoints) -> None:
    """Observations stamped LAG_S in the past (an injected delay): with real_time_chunking each chunk's
    first steps, those that run before it can be in the buffer, are the previous chunk's targets."""
    from diagnostic_msgs.msg import DiagnosticArray

    from hybridvla_ros.core.rtc import targets_at

    lag_s = 0.12
    overrides = {"checkpoint_path": franka_checkpoints["state"], "real_time_chunking": True}
    p = from_params(InferenceParams, {**load_node_params(FRANKA, "inference"), **overrides})
    ros.start([NodeSpec("inference_node", "inference", FRANKA, overrides)])
    chunks: list[ActionChunk] = []
    diags: list[dict] = []
    ros.node.create_subscription(ActionChunk, "action_chunk", chunks.append, 50)
    ros.node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: diags.extend(
        {kv.key: kv.value for kv in s.values} for s in m.status if s.name == "hybridvla: inference"), 10)
    pub = ros.node.create_publisher(Observation, "observation", 10)
    sim = KinematicSim(p, seed=3)
    sim.reset(seed=3)

    def send() -> None:
        pub.publish(_observation(ros, p, sim, ros.now_s() - lag_s))

    assert ros.spin_until(lambda: (send(), ros.spin_for(0.03))[1] is None and len(chunks) > 0, 60.0), ros.logs()
    assert ros.spin_until(lambda: (send(), ros.spin_for(1 / 30))[1] is None and len(chunks) >= 20, 90.0), ros.logs()
    assert ros.spin_until(lambda: any(d.get("rtc_chunks", "0") != "0" for d in diags), 10.0), ros.logs()

    def stamp(c: ActionChunk) -> float:
        return c.header.stamp.sec + c.header.stamp.nanosec * 1e-9

    frozen = math.ceil(lag_s / p.control_period_s)  # at least these run from the old chunk
    checked = 0
    for old, new in zip(chunks, chunks[1:]):
        if new.seq != old.seq + 1:
            continue
        a_old = np.asarray(old.actions).reshape(old.chunk_length, old.action_dim)
        a_new = np.asarray(new.actions).reshape(new.chunk_length, new.action_dim)
        times = stamp(new) + np.arange(frozen) * new.step_period_s
        ref, inside = targets_at(a_old, stamp(old), old.step_period_s, times)
        if not inside.all():  # a busy machine skipped observations: the old chunk ended before these steps
            continue
        np.testing.assert_allclose(a_new[:frozen], ref, atol=1e-6, err_msg=f"chunk {new.seq}")
        checked += 1
    assert checked >= 5, [c.seq for c in chunks]
    last = diags[-1]
    assert last["real_time_chunking"] == "true" and last["policy_inpaints"] == "true"
    assert int(last["frozen_steps_last"]) >= frozen and float(last["delay_estimate_ms"]) >= lag_s * 1e3
    assert not ros.runners[0].dead()
