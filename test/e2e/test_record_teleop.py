"""A teleop session on the simulated Franka recorded through the ROS topics becomes a LeRobotDataset that
LeRobot reads back frame for frame and ``hybridvla train --dataset`` trains on (issue 15, item 1).

Real processes over real DDS: the simulated Franka (``sim_robot``), the handoff and the safety filter, and the
recorder (``demo_recorder``), started from the franka parameter file. This test process is the person at the
teleop device: it holds the deadman (``teleop/deadman``) and streams a target on ``teleop/joint_command`` (the
scripted expert's, ``sim_robot/expert_action``, as a person watching the scene would), and it presses the
recorder's buttons (its services), episode by episode, resetting the scene between them. The human's commands
reach the robot through the handoff and the safety filter, and the recorder writes down what the robot was
commanded. ``hybridvla record --convert-only`` then writes the dataset with LeRobot's own code in
.venv-lerobot; LeRobot's ``LeRobotDataset`` reads it back (images, state, action, task, success) and it equals the
recorded episodes; ``hybridvla train --dataset`` trains a checkpoint from it.

franka.yaml names two cameras: the exterior one (the kinematic simulator renders it) and the wrist one, which
this simulator lacks, so this test process plays it too (frames on wrist_camera/color/image_raw at 25 Hz). The
dataset has both cameras; training takes the exterior one, the camera our model reads on the robot.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, String
from std_srvs.srv import SetBool, Trigger
from test_lerobot_sidecar import _lerobot_python

from hybridvla_ros.core.recording import finished_episodes, read_episode
from hybridvla_ros.launch_description import NodeSpec, default_config_dir
from hybridvla_ros.model.checkpoint import WEIGHTS_FILE, load_checkpoint

pytestmark = [pytest.mark.ros, pytest.mark.e2e, pytest.mark.lerobot]
ROOT = Path(__file__).resolve().parents[2]
FRANKA = os.path.join(default_config_dir(), "franka.yaml")
LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)
EPISODES, FRAMES = 3, 300  # frames per episode at most (the operator stops at success or there)

DUMP = """
import json, sys
import numpy as np
from lerobot.datasets.lerobot_dataset import LeRobotDataset
ds = LeRobotDataset("local/recording", root=sys.argv[1])
out = {k: [] for k in ("image", "state", "action", "episode_index", "success", "done", "stamp")}
tasks = []
for i in range(len(ds)):
    f = ds[i]
    out["image"].append(np.round(f["observation.images.exterior"].numpy().transpose(1, 2, 0) * 255).astype(np.uint8))
    out.setdefault("wrist", []).append(
        np.round(f["observation.images.wrist"].numpy().transpose(1, 2, 0) * 255).astype(np.uint8))
    out["state"].append(f["observation.state"].numpy())
    out["action"].append(f["action"].numpy())
    out["episode_index"].append(int(f["episode_index"]))
    out["success"].append(bool(f["next.success"].item()))
    out["done"].append(bool(f["next.done"].item()))
    out["stamp"].append(int(f["ros_stamp_ns"].item()))
    tasks.append(f["task"])
np.savez(sys.argv[2], **{k: np.array(v) for k, v in out.items()}, task=np.array(tasks))
print(json.dumps({"fps": ds.fps, "episodes": ds.num_episodes, "robot_type": ds.meta.info["robot_type"],
                  "features": sorted(ds.meta.info["features"])}))
"""


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HYBRIDVLA_LEROBOT_PYTHON=str(_lerobot_python()))
    return subprocess.run([sys.executable, "-m", "hybridvla_ros.cli", *args], capture_output=True, text=True,
                          cwd=str(ROOT), env=env, timeout=900)


def test_a_teleop_session_on_the_simulated_franka_becomes_a_dataset_we_train_on(ros, tmp_path) -> None:
    lerobot = _lerobot_python()
    rec = tmp_path / "rec"
    ros.start([
        NodeSpec("sim_robot_node", "sim_robot", FRANKA, {"physics": "kinematic"}),
        NodeSpec("handoff_node", "handoff", FRANKA),
        NodeSpec("safety_filter_node", "safety_filter", FRANKA),
    ])
    # The one command a user runs beside the robot: it records until Ctrl-C, then writes the dataset.
    recorder = subprocess.Popen([sys.executable, "-m", "hybridvla_ros.cli", "record", "--embodiment", "franka",
                                 "--root", str(rec)], cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=dict(ros.env, HF_HUB_OFFLINE="1", HYBRIDVLA_LEROBOT_PYTHON=str(lerobot)))
    n = ros.node
    expert: list[JointState] = []
    success: list[bool] = []
    status: list[dict] = []
    n.create_subscription(JointState, "sim_robot/expert_action", expert.append, 5)
    n.create_subscription(Bool, "sim_robot/task_success", lambda m: success.append(m.data), 5)
    n.create_subscription(String, "demo_recorder/status", lambda m: status.append(json.loads(m.data)), LATCHED)
    deadman = n.create_publisher(Bool, "teleop/deadman", 10)
    teleop = n.create_publisher(JointState, "teleop/joint_command", 10)
    wrist = n.create_publisher(Image, "wrist_camera/color/image_raw", 10)
    ticks = [0]

    def device() -> None:  # the teleop device at 50 Hz: deadman held, the target the person steers to
        deadman.publish(Bool(data=True))
        ticks[0] += 1
        if ticks[0] % 2 == 0:  # the wrist camera at 25 Hz: a 24x32 frame that changes with time
            img = np.full((24, 32, 3), ticks[0] % 256, np.uint8)
            frame = Image(height=24, width=32, encoding="rgb8", step=96, data=img.tobytes())
            frame.header.stamp = n.get_clock().now().to_msg()
            wrist.publish(frame)
        if expert:
            msg = expert[-1]
            msg.header.stamp = n.get_clock().now().to_msg()
            teleop.publish(msg)

    n.create_timer(0.02, device)

    def call(name: str, srv: type, **fields: object) -> object:
        client = n.create_client(srv, name)
        assert ros.spin_until(client.service_is_ready, 60.0), f"{name} never came up\n{ros.logs()}"
        future = client.call_async(srv.Request(**fields))
        assert ros.spin_until(future.done, 30.0), f"{name} did not answer"
        n.destroy_client(client)
        return future.result()

    try:
        assert ros.spin_until(lambda: bool(expert) and bool(status), 60.0), ros.logs()
        for e in range(EPISODES):
            assert call("sim_robot/reset", Trigger).success
            success.clear()
            assert call("demo_recorder/start_episode", Trigger).success
            if e == 0:  # the person gives up on the first one early: a failed demonstration, kept as such
                ros.spin_until(lambda: status[-1].get("frames", 0) >= 10, 60.0)
                assert call("demo_recorder/stop_episode", SetBool, data=False).success
                continue
            ros.spin_until(lambda: (success and success[-1]) or status[-1].get("frames", 0) >= FRAMES, 120.0)
            res = call("demo_recorder/stop_episode", SetBool, data=bool(success and success[-1]))
            assert res.success, res.message
    finally:
        recorder.send_signal(signal.SIGINT)  # Ctrl-C
        output = recorder.communicate(timeout=600)[0]
    assert recorder.returncode == 0, output[-3000:]
    episodes = [read_episode(p) for p in finished_episodes(rec)]
    assert len(episodes) == EPISODES and all(len(e) >= 10 for e in episodes), [len(e) for e in episodes]
    # The robot moved under the human's commands and the recorder saw it: the arm left home.
    moved = max(float(np.abs(e.state[:, :7] - e.state[0, :7]).max()) for e in episodes)
    assert moved > 0.02, f"the arm did not move under teleop ({moved:.4f} rad)\n{ros.logs()}"

    # After Ctrl-C, LeRobot's own code wrote the dataset; --convert-only (after a crash) writes it again in place.
    frames = sum(len(e) for e in episodes)
    assert f"wrote {frames} frames in {EPISODES} episodes" in output, output[-3000:]
    done = _cli("record", "--embodiment", "franka", "--root", str(rec), "--convert-only")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"wrote {frames} frames in {EPISODES} episodes" in done.stdout, done.stdout
    print(f"recorded {[(len(e), e.success) for e in episodes]} (frames, success); {output.splitlines()[-1]}")
    dumped = subprocess.run([str(lerobot), "-c", DUMP, str(rec / "lerobot"), str(tmp_path / "dump.npz")],
                            capture_output=True, text=True, timeout=600, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert dumped.returncode == 0, dumped.stderr[-3000:]
    info = json.loads(dumped.stdout.strip().splitlines()[-1])
    assert info["fps"] == 50 and info["episodes"] == EPISODES and info["robot_type"] == "franka"
    assert {"observation.images.exterior", "observation.images.wrist", "observation.state", "action",
            "next.success"} <= set(info["features"])
    got = np.load(tmp_path / "dump.npz")
    want_image = np.concatenate([np.asarray(e.images["exterior"]) for e in episodes])
    np.testing.assert_array_equal(got["image"], want_image)
    np.testing.assert_array_equal(got["wrist"], np.concatenate([np.asarray(e.images["wrist"]) for e in episodes]))
    assert got["wrist"].shape[1:] == (24, 32, 3)
    np.testing.assert_array_equal(got["state"], np.concatenate([e.state for e in episodes]))
    np.testing.assert_array_equal(got["action"], np.concatenate([e.action for e in episodes]))
    np.testing.assert_array_equal(got["stamp"], np.concatenate([e.stamp_ns for e in episodes]))
    assert got["task"].tolist() == [t for e in episodes for t in e.task]
    ends = np.cumsum([len(e) for e in episodes]) - 1
    assert np.flatnonzero(got["done"]).tolist() == ends.tolist()
    assert [bool(got["success"][i]) for i in ends] == [e.success for e in episodes]

    # Our model trains on it: on the successful demonstrations only, when asked.
    won = [e for e in episodes if e.success]
    assert not episodes[0].success and won, [e.success for e in episodes]
    out = tmp_path / "ckpt"
    done = _cli("train", "--embodiments", "franka", "--dataset", str(rec / "lerobot"), "--successful-only",
                "--train-steps", "5", "--batch-size", "4", "--out", str(out), "--threads", "1", "--image-size", "32",
                "--instruction-encoder", "hash-3gram")
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    assert (out / WEIGHTS_FILE).is_file()
    said = f"{sum(len(e) for e in won)} frames in {len(won)} successful episodes, camera exterior"
    assert said in done.stderr, done.stderr[-2000:]
    # ... and on both cameras together: the checkpoint reads the exterior and the wrist view of each frame.
    both = tmp_path / "ckpt_both"
    done = _cli("train", "--embodiments", "franka", "--dataset", str(rec / "lerobot"), "--successful-only",
                "--cameras", "exterior", "wrist", "--train-steps", "5", "--batch-size", "4", "--out", str(both),
                "--threads", "1", "--image-size", "32", "--instruction-encoder", "hash-3gram")
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    assert f"{said[:-len('camera exterior')]}cameras exterior, wrist" in done.stderr, done.stderr[-2000:]
    _, config = load_checkpoint(str(both))
    assert config.embodiment("franka").cameras == ("exterior", "wrist")
