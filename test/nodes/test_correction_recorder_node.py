"""correction_recorder_node over real DDS: human commands stored with observation and proposal, count, adapt request."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String, UInt64

from hybridvla_msgs.msg import ActionStep, Correction, HandoffMode, Observation
from hybridvla_ros.core.correction_store import CorrectionStore
from hybridvla_ros.launch_description import NodeSpec, default_config_dir
from hybridvla_ros.params import from_params, load_node_params
from hybridvla_ros.params.correction_recorder import CorrectionRecorderParams

pytestmark = pytest.mark.ros
FRANKA = os.path.join(default_config_dir(), "franka.yaml")
LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)
S = 96  # the observation's image size, as sync publishes it
BAD_TOPICS = ("observation", "policy_action", "action_command", "handoff/mode", "corrections",
              "correction_recorder/count", "correction_recorder/failures", "correction_recorder/adapt_request")


def test_human_corrections_are_stored_counted_and_trigger_adaptation(ros, tmp_path) -> None:
    p = from_params(CorrectionRecorderParams, load_node_params(FRANKA, "correction_recorder"))
    home = np.asarray(p.home_position)
    store_path = str(tmp_path / "store" / "franka.sqlite")
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the store's directory should be")
    runner = ros.start([
        NodeSpec("correction_recorder_node", "correction_recorder", FRANKA,
                 {"store_path": store_path, "adapt_every": 5, "min_interval_s": 0.05, "image_size": S}),
        NodeSpec("correction_recorder_node", "bad_recorder", FRANKA,  # own name: own log file and process
                 {"store_path": str(blocker / "franka.sqlite")},
                 remappings=tuple((t, "/bad/" + t) for t in BAD_TOPICS)),
    ])
    n = ros.node
    obs_pub = n.create_publisher(Observation, "observation", 5)
    policy_pub = n.create_publisher(ActionStep, "policy_action", 5)
    cmd_pub = n.create_publisher(ActionStep, "action_command", 50)
    mode_pub = n.create_publisher(HandoffMode, "handoff/mode", 5)
    bad_obs_pub = n.create_publisher(Observation, "/bad/observation", 5)
    bad_cmd_pub = n.create_publisher(ActionStep, "/bad/action_command", 5)
    counts: list[int] = []
    failures: list[int] = []
    corrections: list[Correction] = []
    requests: list[dict] = []
    n.create_subscription(UInt64, "correction_recorder/count", lambda m: counts.append(m.data), LATCHED)
    n.create_subscription(UInt64, "/bad/correction_recorder/failures", lambda m: failures.append(m.data), LATCHED)
    n.create_subscription(Correction, "corrections", corrections.append, 50)
    n.create_subscription(String, "correction_recorder/adapt_request",
                          lambda m: requests.append(json.loads(m.data)), 10)
    assert ros.spin_until(lambda: counts == [0] and failures == [0], 20.0), ros.logs()
    ros.spin_for(0.3)  # let every publisher be discovered

    def observation(k: int, age_s: float = 0.0) -> Observation:
        # As sync publishes it: the arm joints, then the observed-only suction cup (holding from k = 5).
        msg = Observation(embodiment="franka", instruction=p.instruction, joint_names=list(p.observed_joints))
        msg.header.stamp = n.get_clock().now().to_msg()
        if age_s:
            t = ros.now_s() - age_s
            msg.header.stamp.sec, msg.header.stamp.nanosec = int(t), int((t % 1) * 1e9)
        image = np.full((S, S, 3), k, np.uint8)
        image[k % S, :, 0] = 255  # a row that tells the frames apart
        msg.image.height = msg.image.width = S
        msg.image.encoding, msg.image.step, msg.image.data = "rgb8", S * 3, image.tobytes()
        msg.camera_name = "exterior"
        if k % 2:  # franka.yaml's wrist camera, 48x64; sync left it out of the even frames (stale)
            wrist = type(msg.image)(height=48, width=64, encoding="rgb8", step=64 * 3,
                                    data=np.full((48, 64, 3), 200 - k, np.uint8).tobytes())
            msg.extra_camera_names, msg.extra_images = ["wrist"], [wrist]
        msg.joint_positions = [*(home + 0.01 * k).tolist(), float(k >= 5)]
        msg.joint_velocities = [0.0] * len(p.observed_joints)
        return msg

    def step(action: np.ndarray, source: int) -> ActionStep:
        msg = ActionStep(embodiment="franka", action=action.tolist(), source=source)
        msg.header.stamp = n.get_clock().now().to_msg()
        return msg

    # The policy driving on its own is not a correction.
    mode_pub.publish(HandoffMode(mode=HandoffMode.AUTONOMOUS))
    obs_pub.publish(observation(0))
    ros.spin_for(0.05)
    cmd_pub.publish(step(home, ActionStep.SOURCE_POLICY))
    ros.spin_for(0.2)

    # The human takes over: each command is stored with the frame and the proposal of its moment.
    mode_pub.publish(HandoffMode(mode=HandoffMode.HUMAN_OVERRIDE))
    sent = []
    for k in range(1, 11):
        proposal, human = home + 0.1 * k, home - 0.1 * k
        obs_pub.publish(observation(k))
        policy_pub.publish(step(proposal, ActionStep.SOURCE_POLICY))
        ros.spin_for(0.03)
        cmd_pub.publish(step(human, ActionStep.SOURCE_HUMAN))
        # A 500 Hz burst right after: the rate limit keeps only the first.
        for _ in range(3):
            cmd_pub.publish(step(human + 1.0, ActionStep.SOURCE_HUMAN))
        ros.spin_for(0.07)
        sent.append((k, proposal, human))
    # A command whose newest observation is stale is skipped.
    obs_pub.publish(observation(50, age_s=2.0))
    ros.spin_for(0.03)
    cmd_pub.publish(step(home, ActionStep.SOURCE_HUMAN))

    assert ros.spin_until(lambda: counts and counts[-1] == 10 and len(requests) == 2, 10.0), (counts, ros.logs())
    ros.spin_for(0.3)
    assert counts[-1] == 10 and counts == sorted(counts)
    assert [r["count"] for r in requests] == [5, 10]
    assert requests[-1]["store_path"] == store_path and requests[-1]["embodiment"] == "franka"
    assert len(corrections) == 10
    for msg, (k, proposal, human) in zip(corrections, sent, strict=True):
        np.testing.assert_allclose(msg.human_action, human)
        np.testing.assert_allclose(msg.proposed_action, proposal)
        np.testing.assert_allclose(msg.observation.joint_positions, [*(home + 0.01 * k), float(k >= 5)])

    # On disk, read while the recorder still runs (as the adaptation worker would).
    with CorrectionStore(store_path, replay_capacity=0) as store:
        assert store.count() == 10
        records = list(store.iter_records())
        arrays = store.load_arrays(image_size=S)
    for record, (k, proposal, human) in zip(records, sent, strict=True):
        np.testing.assert_allclose(record.human_action, human)
        np.testing.assert_allclose(record.proposed_action, proposal)
        # Stored as the observation came (every observed joint, named); adaptation picks them by name.
        np.testing.assert_allclose(record.joint_positions, [*(home + 0.01 * k), float(k >= 5)])
        assert record.image[k % S, 0, 0] == 255 and record.image[(k + 1) % S, 0, 0] == k
        # the wrist camera where the observation had it, resized like the anchor (image_size)
        assert record.camera_name == "exterior" and list(record.extra_images) == (["wrist"] if k % 2 else [])
        if k % 2:
            assert record.extra_images["wrist"].shape == (S, S, 3) and (record.extra_images["wrist"] == 200 - k).all()
        assert record.embodiment == "franka" and record.joint_names == (*p.joint_names, "suction_cup")
    assert len({r.episode_index for r in records}) == 1, "one override, one episode"
    assert arrays["images"].shape == (10, S, S, 3) and arrays["has_proposal"].all()

    # An unwritable store: failures are counted, the node keeps running.
    for k in range(3):
        bad_obs_pub.publish(observation(k))
        ros.spin_for(0.03)
        bad_cmd_pub.publish(step(home, ActionStep.SOURCE_HUMAN))
        ros.spin_for(0.15)
    assert ros.spin_until(lambda: failures and failures[-1] >= 3, 5.0), (failures, ros.logs())
    assert not runner.dead(), ros.logs()
    log = (tmp_path / "nodes" / "bad_recorder.log").read_text()
    assert "cannot create directory" in log and "not_a_dir" in log, log
