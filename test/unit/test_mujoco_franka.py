"""MujocoFrankaSim: the expert picks and places, the wrench is physical, commands are safe,
scenes are reproducible, and a missing robot model says which package to install."""

from __future__ import annotations

import copy
import math
import os

import numpy as np
import pytest

from hybridvla_ros.launch_description import params_file_for
from hybridvla_ros.params import from_params, load_node_params
from hybridvla_ros.params.action_buffer import ActionBufferParams
from hybridvla_ros.params.safety_filter import SafetyFilterParams
from hybridvla_ros.params.sim_robot import SimRobotParams
from hybridvla_ros.sim import mujoco_common as mc
from hybridvla_ros.sim.mujoco_franka import (
    CUBE_HALF_SIZE_M,
    SCENES,
    TABLE_TOP_Z_M,
    MujocoFrankaSim,
    SceneConfig,
)
from hybridvla_ros.sim.rollout import expert_predictor, rollout

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "config")


def load(name: str) -> SimRobotParams:
    return from_params(SimRobotParams, load_node_params(os.path.join(CONFIG, f"{name}.yaml"), "sim_robot"),
                       "sim_robot")


FRANKA = load("franka")
SAFETY = from_params(SafetyFilterParams, load_node_params(params_file_for("franka"), "safety_filter"))
SAFETY_MAX_FORCE_N = SAFETY.max_force_n  # 40 N: where the safety filter latches its e-stop
LO, HI = np.asarray(FRANKA.position_min), np.asarray(FRANKA.position_max)
VMAX = np.asarray(FRANKA.max_velocity)
PERIOD_S = FRANKA.control_period_s


def run_expert(sim: MujocoFrankaSim, max_s: float) -> tuple[bool, float, float]:
    """Roll the expert out at the control rate until success or ``max_s`` of sim time:
    (success, seconds taken, largest |force| read on the way)."""
    start = sim.time_s
    max_force = 0.0
    while sim.time_s - start < max_s:
        target = sim.expert_target()
        step = np.abs(target - sim.positions)
        assert np.all(step <= 0.95 * VMAX * PERIOD_S + 1e-9), "expert step beyond its velocity budget"
        assert np.all(target >= LO) and np.all(target <= HI)
        sim.command_positions(target)
        sim.step(PERIOD_S)
        max_force = max(max_force, float(np.linalg.norm(sim.wrench()[0])))
        if sim.success():
            return True, sim.time_s - start, max_force
    return False, sim.time_s - start, max_force


# ---------------------------------------------------------------- the expert


@pytest.mark.parametrize("scene,seeds", [("nominal", range(5)), ("shifted", range(3))])
def test_expert_picks_and_places_within_12_s(scene: str, seeds: range) -> None:
    sim = MujocoFrankaSim(FRANKA, seed=0, scene=scene)
    for seed in seeds:
        sim.reset(seed=seed)
        assert sim.phase == "approach" and not sim.grasped
        ok, took_s, max_force = run_expert(sim, 12.0)
        assert ok, f"{scene} seed {seed}: task error {sim.task_error_m():.3f} m, phase {sim.phase}"
        assert took_s < 6.0
        assert not sim.grasped  # released on the target
        assert sim.task_error_m() <= 0.02
        # The expert never presses hard enough to latch the safety filter's e-stop.
        assert max_force < SAFETY_MAX_FORCE_N
        for _ in range(50):  # done stays done: the arm backs off, the cube is not picked again
            sim.command_positions(sim.expert_target())
            sim.step(PERIOD_S)
            assert sim.success() and not sim.grasped
        assert sim.phase == "done"


def test_expert_takes_over_from_a_perturbed_state() -> None:
    sim = MujocoFrankaSim(FRANKA, seed=7)
    # Carry the cube for a while, then let "someone else" drive the arm elsewhere for 1 s.
    for _ in range(100):
        sim.command_positions(sim.expert_target())
        sim.step(PERIOD_S)
        if sim.phase == "carry":
            break
    assert sim.grasped and sim.phase == "carry"
    away = np.clip(sim.positions + np.array([0.4, -0.3, 0.2, 0.3, -0.3, 0.2, 0.5]), LO, HI)
    for _ in range(50):
        sim.command_positions(away)
        sim.step(PERIOD_S)
    ok, _, _ = run_expert(sim, 10.0)
    assert ok
    # Same from before the grasp: pushed away while descending onto the cube.
    sim.reset(seed=8)
    for _ in range(40):
        sim.command_positions(sim.expert_target())
        sim.step(PERIOD_S)
    sim.apply_external_force(np.array([0.0, 30.0, 20.0]), 0.5)
    for _ in range(50):
        sim.command_positions(np.clip(sim.positions + 0.05, LO, HI))
        sim.step(PERIOD_S)
    ok, _, _ = run_expert(sim, 10.0)
    assert ok


def test_expert_as_a_chunked_policy_passes_buffer_and_safety_filter_smoothly() -> None:
    # The graph's path: 16-step chunks rolled out on a clone, the real ActionBuffer and
    # SafetyFilter. A smooth expert is barely touched by the filter's acceleration limit.
    ab = from_params(ActionBufferParams, load_node_params(params_file_for("franka"), "action_buffer"))
    sim = MujocoFrankaSim(FRANKA, seed=1)
    result = rollout(sim, expert_predictor(sim, ab.chunk_size), ab.buffer_config(), SAFETY.safety_limits(), 12.0, 0.02)
    assert result.success and result.time_to_success_s < 6.0
    assert result.safety_modified < 0.5 * result.duration_s / PERIOD_S


def test_a_few_millimetres_off_centre_the_expert_still_goes_down_onto_the_cube() -> None:
    """The cup (17 mm radius) fits on the cube's top face (22.5 mm half width) within 5 mm of
    its centre, so there the expert goes straight down to touching (still aiming at the
    centre) instead of hovering until aligned: a learned policy a few mm off then grips
    rather than stalling above the cube."""
    sim = MujocoFrankaSim(FRANKA, seed=3)
    cube = sim.cube_position
    above = cube + np.array([0.004, 0.0, CUBE_HALF_SIZE_M + 0.012])  # 4 mm off centre, 12 mm above the top
    for _ in range(300):
        sim.command_positions(sim.reach_step(above))
        sim.step(PERIOD_S)
    tcp = sim.end_effector_positions()[0]
    assert np.linalg.norm(tcp - above) < 0.002 and not sim.grasped
    phase, goal, _speed = sim._expert_plan()
    top = cube[2] + CUBE_HALF_SIZE_M
    assert phase == "descend" and goal[2] - top < 0.003  # down to touching, not the funnel's 4 mm above it
    np.testing.assert_allclose(goal[:2], cube[:2], atol=1e-3)
    ok, _, _ = run_expert(sim, 10.0)
    assert ok


def test_phase_follows_the_state_not_a_counter() -> None:
    a, b = MujocoFrankaSim(FRANKA, seed=2), MujocoFrankaSim(FRANKA, seed=2)
    for _ in range(200):
        a.command_positions(a.expert_target())
        a.step(PERIOD_S)
        if a.grasped:
            break
    assert a.grasped and a.phase in ("lift", "carry")
    b.reset(seed=2)
    assert b.phase == "approach"  # a fresh episode starts over, whatever happened before
    a.randomize_target(seed=11)  # a new placement drops the cube: back to approaching it
    assert not a.grasped and a.phase == "approach"


# ---------------------------------------------------------------- forces


def test_wrench_at_rest_is_noise_around_zero() -> None:
    sim = MujocoFrankaSim(FRANKA, seed=1)
    sim.step(0.2)
    forces, torques = zip(*(sim.wrench() for _ in range(200)))
    forces, torques = np.array(forces), np.array(torques)  # (200, 3)
    assert np.all(np.abs(forces.mean(axis=0)) < 0.15)
    assert np.all(np.abs(torques.mean(axis=0)) < 0.015)
    assert 0.2 < forces.std() < 0.4  # the documented 0.3 N sensor noise


def test_pressing_into_the_table_reads_over_40_newtons() -> None:
    sim = MujocoFrankaSim(FRANKA, seed=3)
    below_table = np.array([0.45, 0.0, TABLE_TOP_Z_M - 0.05])
    peak = np.zeros(3)
    for _ in range(100):
        sim.command_positions(sim.reach_step(below_table))
        sim.step(PERIOD_S)
        force, _ = sim.wrench()
        if np.linalg.norm(force) > np.linalg.norm(peak):
            peak = force
    assert np.linalg.norm(peak) > SAFETY_MAX_FORCE_N
    assert peak[2] > 0  # the table pushes the tool up
    assert sim.end_effector_positions()[0, 2] > TABLE_TOP_Z_M - 0.01  # and the table holds


def test_push_is_felt_then_gone() -> None:
    sim = MujocoFrankaSim(FRANKA, seed=4)
    sim.step(0.1)
    tcp_before = sim.end_effector_positions()[0]
    sim.apply_external_force(np.array([50.0, 0.0, 0.0]), 0.5)
    sim.step(0.3)
    force, _ = sim.wrench()
    np.testing.assert_allclose(force, [50.0, 0.0, 0.0], atol=3.0)
    moved = sim.end_effector_positions()[0] - tcp_before
    assert 0.0 < moved[0] < 0.02  # a stiff arm yields a little along the push
    sim.step(0.5)
    assert np.linalg.norm(sim.wrench()[0]) < 2.0
    with pytest.raises(ValueError, match="duration_s"):
        sim.apply_external_force(np.array([1.0, 0.0, 0.0]), 0.0)
    with pytest.raises(ValueError, match="force"):
        sim.apply_external_force(np.array([np.nan, 0.0, 0.0]), 1.0)


# ---------------------------------------------------------------- commands and limits


def test_positions_stay_within_limits_under_random_commands() -> None:
    sim = MujocoFrankaSim(FRANKA, seed=5)
    rng = np.random.default_rng(0)
    for _ in range(150):
        sim.command_positions(rng.uniform(LO - 1.0, HI + 1.0))  # far past the limits too
        sim.step(PERIOD_S * rng.uniform(0.5, 3.0))
        assert np.all(sim.positions >= LO) and np.all(sim.positions <= HI)
        assert np.all(sim.commanded_positions >= LO) and np.all(sim.commanded_positions <= HI)
        assert np.all(np.isfinite(sim.velocities))


def test_streamed_commands_are_tracked_without_lag() -> None:
    sim = MujocoFrankaSim(FRANKA, seed=6)
    start = sim.positions
    direction = np.array([1, -1, 1, -1, 1, -1, 1])
    for k in range(1, 26):  # a ramp at 30 % of max_velocity, one point per control period
        target = start + k * 0.3 * VMAX * PERIOD_S * direction
        sim.command_positions(target)
        sim.step(PERIOD_S)
    np.testing.assert_allclose(sim.positions, target, atol=0.005)  # arrived by the next period
    np.testing.assert_allclose(np.abs(sim.velocities), 0.3 * VMAX, rtol=0.1)


def test_bad_commands_raise_and_leave_the_state_unchanged() -> None:
    sim = MujocoFrankaSim(FRANKA, seed=0)
    good = sim.positions + 0.01
    sim.command_positions(good)
    before = (sim.commanded_positions, sim.positions, sim.time_s)
    for bad in (np.full(7, np.nan), np.r_[good[:6], np.inf], np.zeros(6), np.zeros((1, 7)), ["a"] * 7, None):
        with pytest.raises(ValueError):
            sim.command_positions(bad)
    np.testing.assert_array_equal(sim.commanded_positions, before[0])
    np.testing.assert_array_equal(sim.positions, before[1])
    assert sim.time_s == before[2]
    for bad_dt in (-0.01, math.nan, math.inf):
        with pytest.raises(ValueError, match="dt_s"):
            sim.step(bad_dt)
    with pytest.raises(ValueError, match="target"):
        sim.target = np.zeros((2, 3))
    with pytest.raises(ValueError, match="start_noise_rad"):
        sim.reset(start_noise_rad=-0.1)


def test_step_advances_whole_physics_steps() -> None:
    sim = MujocoFrankaSim(FRANKA, seed=0)
    t0 = sim.time_s
    sim.step(0.1)
    assert sim.time_s - t0 == pytest.approx(0.1)
    sim.step(0.003)
    sim.step(0.001)  # the 1 ms left over from the first call is carried
    assert sim.time_s - t0 == pytest.approx(0.104)
    sim.reset(seed=1)
    assert sim.time_s - t0 == pytest.approx(0.104)  # reset does not rewind time


def test_rejects_other_robots_and_bad_arguments() -> None:
    with pytest.raises(ValueError, match="franka"):
        MujocoFrankaSim(load("aloha"))
    with pytest.raises(ValueError, match="image_width"):
        MujocoFrankaSim(FRANKA, image_width=4)
    with pytest.raises(ValueError, match="seed"):
        MujocoFrankaSim(FRANKA, seed=-1)
    with pytest.raises(ValueError, match="scene"):
        MujocoFrankaSim(FRANKA, scene="moon")


# ---------------------------------------------------------------- scenes and rendering


def test_same_seed_same_scene_and_new_placements_keep_the_robot() -> None:
    a, b = MujocoFrankaSim(FRANKA, seed=3), MujocoFrankaSim(FRANKA, seed=3)
    np.testing.assert_array_equal(a.cube_position, b.cube_position)
    np.testing.assert_array_equal(a.target, b.target)
    np.testing.assert_array_equal(a.positions, b.positions)
    for _ in range(30):  # same seed, same commands: the same physics
        for sim in (a, b):
            sim.command_positions(sim.expert_target())
            sim.step(PERIOD_S)
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_array_equal(a.wrench()[0], b.wrench()[0])
    a.reset(seed=4)
    assert not np.allclose(a.cube_position, b.cube_position)
    q = a.positions
    a.randomize_target()
    np.testing.assert_array_equal(a.positions, q)
    assert a.target.shape == (1, 3) and a.target[0, 2] == TABLE_TOP_Z_M
    assert a.cube_position[2] == pytest.approx(TABLE_TOP_Z_M + CUBE_HALF_SIZE_M, abs=1e-3)
    a.target = np.array([[0.5, 0.0, 0.3]])
    np.testing.assert_allclose(a.target, [[0.5, 0.0, TABLE_TOP_Z_M]])


def test_clone_rolls_ahead_without_touching_the_original() -> None:
    sim = MujocoFrankaSim(FRANKA, seed=9)
    for _ in range(150):  # until the cube is held: the weld's pose must not be shared
        sim.command_positions(sim.expert_target())
        sim.step(PERIOD_S)
        if sim.grasped:
            break
    assert sim.grasped
    state = (sim.positions, sim.cube_position, sim.time_s)
    twin = copy.deepcopy(sim)
    planned = []
    for _ in range(16):
        planned.append(twin.expert_target())
        twin.command_positions(planned[-1])
        twin.step(PERIOD_S)
    np.testing.assert_array_equal(sim.positions, state[0])
    np.testing.assert_array_equal(sim.cube_position, state[1])
    assert sim.time_s == state[2] and twin.time_s > state[2]
    for target in planned:  # the original, driven the same way, follows the same path
        np.testing.assert_allclose(sim.expert_target(), target, atol=1e-9)
        sim.command_positions(target)
        sim.step(PERIOD_S)
    np.testing.assert_allclose(sim.cube_position, twin.cube_position, atol=1e-9)


def test_shifted_scene_is_outside_the_nominal_ranges() -> None:
    nominal = SCENES["nominal"]
    sim = MujocoFrankaSim(FRANKA, seed=0, scene="shifted")
    assert sim.scene == "shifted"
    for seed in range(10):
        sim.reset(seed=seed)
        cube, target = sim.cube_position[:2], sim.target[0, :2]
        assert not (np.all(cube >= nominal.cube_xy_low_m) and np.all(cube <= nominal.cube_xy_high_m))
        assert not (np.all(target >= nominal.target_xy_low_m) and np.all(target <= nominal.target_xy_high_m))
    assert SCENES["shifted"].cube_rgba != nominal.cube_rgba
    sim.scene = "nominal"
    sim.reset(seed=0)
    cube = sim.cube_position[:2]
    assert np.all(cube >= nominal.cube_xy_low_m) and np.all(cube <= nominal.cube_xy_high_m)
    with pytest.raises(ValueError, match="scene"):
        sim.scene = "moon"
    with pytest.raises(ValueError, match="cube_xy"):
        SceneConfig("bad", (0.5, 0.0), (0.4, 0.1), (0.4, 0.1), (0.5, 0.2), (0, 0, 1, 1))


def test_render_shows_the_scene_and_changes_when_the_arm_moves() -> None:
    sim = MujocoFrankaSim(FRANKA, image_width=160, image_height=120, seed=0)
    first = sim.render()
    assert first.shape == (120, 160, 3) and first.dtype == np.uint8
    r, g, b = (first[..., i].astype(int) for i in range(3))
    red = (r > 150) & (g < 80) & (b < 80)
    assert red.sum() >= 4  # the target disc is visible
    u, v = sim.project_to_image(sim.target)[0]
    ys, xs = np.nonzero(red)
    assert abs(xs.mean() - u) < 4 and abs(ys.mean() - v) < 4
    np.testing.assert_array_equal(sim.render(), first)  # same state, same picture
    for _ in range(15):
        sim.command_positions(sim.expert_target())
        sim.step(PERIOD_S)
    assert np.abs(sim.render().astype(int) - first.astype(int)).sum() > 1000
    sim.close()


# ---------------------------------------------------------------- assets


def test_missing_asset_package_names_the_pip_package() -> None:
    with pytest.raises(mc.MissingAssetError, match="pip install no-such-robot-assets"):
        mc.find_package_dir("no_such_robot_assets_pkg", "no-such-robot-assets", "meshes")
    with pytest.raises(mc.MissingAssetError, match="no_such_parent"):
        mc.find_package_dir("no_such_parent.child")
    with pytest.raises(mc.MissingAssetError, match="missing"):
        mc.find_package_dir("hybridvla_ros", "hybridvla-ros", "no/such/folder")


def test_mesh_helpers_read_and_coarsen_stl() -> None:
    root = mc.find_package_dir("gymnasium_robotics", "gymnasium-robotics", "envs/assets/kitchen_franka/franka_assets")
    with open(os.path.join(root, "meshes", "visual", "link0.stl"), "rb") as f:
        vertices, faces = mc.read_stl(f.read())
    coarse_v, coarse_f = mc.cluster_decimate(vertices, faces, 0.008)
    assert len(coarse_f) < len(faces) / 4 and coarse_f.max() < len(coarse_v)
    # Same object: the bounding box moves by less than one cell.
    np.testing.assert_allclose(coarse_v.min(axis=0), vertices.min(axis=0), atol=0.008)
    np.testing.assert_allclose(coarse_v.max(axis=0), vertices.max(axis=0), atol=0.008)
    with pytest.raises(ValueError, match="STL"):
        mc.read_stl(b"solid ascii\nendsolid\n" * 10)
