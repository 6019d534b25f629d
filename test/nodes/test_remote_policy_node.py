"""inference_node with ``policy_source: remote`` over real DDS, against a policy server in its own process:
chunks published from the server's replies; a NaN reply, a dead server: no chunk (the buffer holds), the
node lives on and says why; chunks again when the server answers again."""
from __future__ import annotations

import os

import numpy as np
import pytest
import remote_fault_server as fault  # test/remote_fault_server.py (test/ is on sys.path: its conftest)

from hybridvla_msgs.msg import ActionChunk, Observation
from hybridvla_ros.launch_description import NodeSpec, default_config_dir
from hybridvla_ros.params import from_params, load_node_params
from hybridvla_ros.params.inference import InferenceParams
from hybridvla_ros.sim.kinematic import KinematicSim

FRANKA = os.path.join(default_config_dir(), "franka.yaml")
pytestmark = [pytest.mark.ros]


def _observation(p: InferenceParams, sim: KinematicSim, stamp_s: float) -> Observation:
    rgb = sim.render()
    state = sim.state_joint_positions
    msg = Observation(embodiment="franka", instruction=p.instruction, joint_names=[*p.joint_names, *state],
                      joint_positions=[*sim.positions.tolist(), *state.values()],
                      joint_velocities=[0.0] * (7 + len(state)))
    msg.header.stamp.sec = int(stamp_s)
    msg.header.stamp.nanosec = int((stamp_s % 1) * 1e9)
    msg.image.height, msg.image.width, msg.image.encoding = rgb.shape[0], rgb.shape[1], "rgb8"
    msg.image.step = rgb.shape[1] * 3
    msg.image.data = rgb.tobytes()
    return msg


def test_remote_policy_drives_the_node_and_holds_on_faults(ros, tmp_path) -> None:
    p = from_params(InferenceParams, load_node_params(FRANKA, "inference"))
    server = fault.FaultServer(tmp_path, p.chunk_size, p.action_dim)
    server.start()
    try:
        overrides = {"policy_source": "remote", "remote_url": server.url, "remote_image_size": [32, 32],
                     "remote_deadline_s": 5.0, "remote_backoff_s": [0.2, 0.4]}
        ros.start([NodeSpec("inference_node", "inference", FRANKA, overrides)])
        chunks: list[ActionChunk] = []
        ros.node.create_subscription(ActionChunk, "action_chunk", chunks.append, 50)
        pub = ros.node.create_publisher(Observation, "observation", 10)
        sim = KinematicSim(p, seed=3)
        sim.reset(seed=3)
        q = sim.positions.copy()

        def send_until(predicate, timeout_s: float = 90.0) -> bool:
            return ros.spin_until(lambda: (pub.publish(_observation(p, sim, ros.now_s())), ros.spin_for(0.03))[1]
                                  is None and predicate(), timeout_s)

        # chunks from the server's replies: its actions (state + 0.001 k), stamped with the observation
        assert send_until(lambda: len(chunks) >= 3), ros.logs()
        c = chunks[-1]
        assert (c.chunk_length, c.action_dim, c.head_type) == (p.chunk_size, 7, "remote")
        actions = np.asarray(c.actions).reshape(p.chunk_size, 7)
        np.testing.assert_allclose(actions, q[None, :] + 0.001 * np.arange(p.chunk_size)[:, None], atol=1e-9)
        assert 0.0 <= c.confidence <= 1.0  # from the agreement of successive chunks (the server gives none)

        # NaN replies: no chunk while the server keeps being asked, the node says why
        server.mode("nan")
        assert send_until(lambda: server.requests("nan") >= 1)
        chunks.clear()  # a chunk made before the first NaN reply may still be on its way: not counted
        assert send_until(lambda: server.requests("nan") >= 4)
        assert chunks == []
        server.mode("ok")
        assert send_until(lambda: len(chunks) >= 1), ros.logs()

        # the server dies: no chunk, no crash; it comes back on the same port: chunks again
        server.kill()
        ros.spin_for(0.2)
        chunks.clear()
        ros.spin_until(lambda: (pub.publish(_observation(p, sim, ros.now_s())), ros.spin_for(0.03))[1] is None
                       and "cannot connect" in ros.logs(), 60.0)
        assert chunks == [] and not ros.runners[0].dead()
        server.start()
        assert send_until(lambda: len(chunks) >= 1), ros.logs()
        logs = ros.logs()
        assert "observation rejected: remote ws://" in logs and "not finite at row" in logs, logs
        assert "cannot connect" in logs or "closed the connection" in logs, logs
        assert not ros.runners[0].dead()
    finally:
        server.kill()
