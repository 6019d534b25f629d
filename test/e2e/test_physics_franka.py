"""The whole graph on the MuJoCo Franka: a perfect policy still does the task through it.

The scripted expert is served as the policy (inference ``policy_source: sim_expert``): its
chunks go the same way a model's do (sync -> inference -> action buffer -> handoff ->
safety filter -> the simulated robot's JointTrajectory controller), separate processes
over real DDS, with contact physics. If the graph spoiled a good policy (late or dropped
chunks, a seam that jerks, a safety filter that cuts too much), the cube would not end up
on the target.
"""
from __future__ import annotations

import math

import pytest

from hybridvla_ros.evaluate import EXPERT_CHUNK_RATE_HZ, EXPERT_RECOMPUTE_EVERY, Evaluation

pytestmark = [pytest.mark.ros, pytest.mark.e2e, pytest.mark.realtime]


def test_the_expert_places_the_cube_through_the_whole_graph(ros, tiny_checkpoint) -> None:
    overrides = {
        "sim_robot": {"physics": "mujoco", "expert_chunk_rate_hz": EXPERT_CHUNK_RATE_HZ},
        # the expert is a feedback controller: replanned every 2 periods from 25 Hz plans
        "inference": {"policy_source": "sim_expert", "recompute_every": EXPERT_RECOMPUTE_EVERY},
        "action_buffer": {"recompute_every": EXPERT_RECOMPUTE_EVERY},
        "correction_recorder": {"store_path": str(ros.tmp_path / "corrections.sqlite")},
        "adaptation": {"adapt_root": str(ros.tmp_path / "adaptation")},
    }
    with Evaluation("franka", tiny_checkpoint, overrides=overrides, env=ros.env, domain_id=ros.domain_id,
                    log_dir=str(ros.tmp_path / "logs")) as ev:
        ev.wait_until_ready(90.0)
        episodes = [ev.run_episode(timeout_s=20.0, seed=100 + k) for k in range(3)]
        summary = ev.summary()
    logs = "\n".join(f"{e}" for e in episodes)
    # Stated rate: at least 2 of 3. Seen: with two busy processes beside the graph on 2 cores, the
    # command stream stalls often and the safety filter brakes; braking each joint at its own
    # maximum swung the cup into the cube at the grasp (40-100 N, e-stop) in 5 of 8 episodes;
    # braking along the path, 1 of 8 (the open problem of plan latency against a stiff contact).
    # An e-stop used to cost the next episode too: after the reset the filter drove the robot back
    # to the pressing pose and reset_estop was refused (now the evaluation resyncs the filter).
    done = [e for e in episodes if e.success]
    assert len(done) >= 2, logs
    assert all(e.final_error_m < 0.02 and e.time_to_success_s < 15.0 for e in done), logs
    assert summary["estops"] <= 1 and summary["handoffs"] == 0 and summary["human_override_s"] == 0.0, summary
    # The robot got its commands at the control rate the whole time.
    assert all(math.isclose(e.control_rate_hz, 50.0, rel_tol=0.1) for e in done), logs
