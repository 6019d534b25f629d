"""The expert's plans in a worker process, from compact snapshots of the simulator (sim_robot's planner)."""
from __future__ import annotations

import multiprocessing
import os
import signal
import time
from concurrent.futures.process import BrokenProcessPool

import numpy as np
import pytest

from hybridvla_ros.launch_description import params_file_for
from hybridvla_ros.params import from_params, load_node_params
from hybridvla_ros.params.sim_robot import SimRobotParams
from hybridvla_ros.sim.expert_planner import ExpertPlanner, restore_snapshot, take_snapshot
from hybridvla_ros.sim.registry import make_sim
from hybridvla_ros.sim.rollout import expert_chunk


def sim_args(embodiment: str, physics: str) -> tuple[SimRobotParams, dict]:
    p = from_params(SimRobotParams, {**load_node_params(params_file_for(embodiment), "sim_robot"), "physics": physics})
    return p, {"image_width": 32, "image_height": 24, "seed": 0, "physics": physics, "scene": "nominal"}


@pytest.mark.parametrize(("embodiment", "physics", "steps"), [("franka", "mujoco", 130), ("aloha", "mujoco", 40),
                                                              ("leap", "kinematic", 20)])
def test_a_restored_snapshot_plans_exactly_what_a_clone_plans(embodiment: str, physics: str, steps: int) -> None:
    """Along an expert episode (franka: through the grasp, the cube welded to the cup), the
    plan from a snapshot restored into another simulator is the plan from sim.clone()."""
    pytest.importorskip("mujoco") if physics == "mujoco" else None
    p, kw = sim_args(embodiment, physics)
    sim, base = make_sim(p, **kw), make_sim(p, **kw)
    sim.reset(seed=3)
    base.reset(seed=9)  # another scene: the snapshot must bring everything across
    held = False
    for k in range(steps):
        if k % 10 == 0 or k == steps - 1:
            before = sim.positions
            restored = restore_snapshot(base, take_snapshot(sim))
            np.testing.assert_array_equal(expert_chunk(restored, p.chunk_size, on_clone=False),
                                          expert_chunk(sim, p.chunk_size))
            np.testing.assert_array_equal(sim.positions, before)  # taking a snapshot changes nothing
        held |= sim.state_joint_positions.get("suction_cup", 0.0) == 1.0
        sim.command_positions(sim.expert_target())
        sim.step(sim.control_period_s)
    assert held or embodiment != "franka"  # the snapshots covered a held cube


def test_a_mujoco_snapshot_needs_the_same_simulator() -> None:
    pytest.importorskip("mujoco")
    p, kw = sim_args("franka", "mujoco")
    blob = take_snapshot(make_sim(p, **kw))
    with pytest.raises(ValueError, match="MujocoFrankaSim"):
        restore_snapshot(None, blob)
    pa, kwa = sim_args("aloha", "mujoco")
    with pytest.raises(ValueError, match="MujocoFrankaSim"):
        restore_snapshot(make_sim(pa, **kwa), blob)


def submit(planner: ExpertPlanner, sim, chunk_size: int):
    """The planner's next plan, once it takes one (a dead worker is replaced at most once a second)."""
    deadline = time.monotonic() + 30.0
    while (plan := planner.submit(sim, chunk_size)) is None:
        assert time.monotonic() < deadline, "the planner took no plan"
        time.sleep(0.02)
    return plan


def kill_the_worker() -> None:
    workers = multiprocessing.active_children()
    assert len(workers) == 1
    os.kill(workers[0].pid, signal.SIGKILL)
    workers[0].join(10)


def test_the_planner_runs_one_plan_at_a_time_and_replaces_a_dead_worker() -> None:
    pytest.importorskip("mujoco")
    p, kw = sim_args("franka", "mujoco")
    sim = make_sim(p, **kw)
    planner = ExpertPlanner(make_sim, p, **kw)
    try:
        first = planner.submit(sim, p.chunk_size)
        assert first is not None and planner.busy
        assert planner.submit(sim, p.chunk_size) is None  # the last plan still runs: skipped
        np.testing.assert_array_equal(first.result(timeout=60), expert_chunk(sim, p.chunk_size))
        for _ in range(5):
            sim.command_positions(sim.expert_target())
            sim.step(sim.control_period_s)
        second = planner.submit(sim, p.chunk_size)
        assert second is not None
        np.testing.assert_array_equal(second.result(timeout=60), expert_chunk(sim, p.chunk_size))

        # A worker killed while idle: a new one (the first plan after may still go to the dead
        # one, if the pool has not noticed yet: at most that plan is lost).
        kill_the_worker()
        results = []
        for _ in range(2):
            plan = submit(planner, sim, p.chunk_size)
            try:
                results.append(plan.result(timeout=60))
                break
            except BrokenProcessPool:
                continue
        assert results, "no plan after the worker died"
        np.testing.assert_array_equal(results[0], expert_chunk(sim, p.chunk_size))
        # Killed while planning: that plan fails (BrokenProcessPool), the next one gets a new worker.
        doomed = planner.submit(sim, p.chunk_size)
        assert doomed is not None
        kill_the_worker()
        with pytest.raises(BrokenProcessPool):
            doomed.result(timeout=60)
        last = submit(planner, sim, p.chunk_size)
        np.testing.assert_array_equal(last.result(timeout=60), expert_chunk(sim, p.chunk_size))
    finally:
        planner.close()
    assert not multiprocessing.active_children()
