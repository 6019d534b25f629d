"""KinematicSim: limits, controllers, experts, camera and wrench, for the four embodiments."""

from __future__ import annotations

import math
import os
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridvla_ros.params import from_params, load_node_params
from hybridvla_ros.params.sim_robot import SimRobotParams
from hybridvla_ros.sim.kinematic import TWIST_TIMEOUT_S, KinematicSim

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "config")
EMBODIMENTS = ("franka", "aloha", "hello", "leap")
# Expert step budgets: the arms need ~1 s; the base drives 1.5 m at 0.3 m/s after turning.
EXPERT_MAX_STEPS = {"franka": 100, "aloha": 100, "hello": 250, "leap": 100}
TOL = 1e-9


def load(name: str) -> SimRobotParams:
    return from_params(SimRobotParams, load_node_params(os.path.join(CONFIG, f"{name}.yaml"), "sim_robot"),
                       "sim_robot")


PARAMS = {name: load(name) for name in EMBODIMENTS}


def limits(p: SimRobotParams) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return (np.asarray(p.position_min), np.asarray(p.position_max), np.asarray(p.max_velocity),
            np.asarray(p.max_acceleration))


def red_mask(img: np.ndarray) -> np.ndarray:
    """(H, W) bool: clearly red pixels."""
    r, g, b = (img[..., i].astype(int) for i in range(3))
    return (r > 150) & (g < 90) & (b < 90)


# ---------------------------------------------------------------- reset / determinism


@pytest.mark.parametrize("name", EMBODIMENTS)
def test_reset_is_deterministic_and_near_home(name: str) -> None:
    p = PARAMS[name]
    lo, hi, _, _ = limits(p)
    a, b = KinematicSim(p, seed=3), KinematicSim(p, seed=3)
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_array_equal(a.target, b.target)
    np.testing.assert_array_equal(a.render(), b.render())
    assert np.all(a.positions >= lo) and np.all(a.positions <= hi)
    assert np.max(np.abs(a.positions - np.asarray(p.home_position))) < 0.3
    np.testing.assert_array_equal(a.velocities, np.zeros(p.action_dim))
    a.reset(seed=4)
    assert not np.allclose(a.target, b.target)
    assert a.target.shape == (a.num_tool_points, 3)


def test_reset_does_not_rewind_time_and_noise_is_optional() -> None:
    sim = KinematicSim(PARAMS["franka"], seed=0)
    sim.step(0.1)
    sim.reset(seed=1, start_noise_rad=0.0)
    assert sim.time_s == pytest.approx(0.1)
    np.testing.assert_allclose(sim.positions, PARAMS["franka"].home_position)
    with pytest.raises(ValueError):
        sim.reset(start_noise_rad=-1.0)


def test_wrench_reads_do_not_change_the_next_target() -> None:
    a, b = KinematicSim(PARAMS["franka"], seed=5), KinematicSim(PARAMS["franka"], seed=5)
    for _ in range(10):
        a.wrench()
    a.reset()
    b.reset()
    np.testing.assert_array_equal(a.target, b.target)


# ---------------------------------------------------------------- limits under any command


@pytest.mark.parametrize("name", EMBODIMENTS)
def test_random_and_huge_commands_never_break_limits(name: str) -> None:
    p = PARAMS[name]
    lo, hi, vmax, amax = limits(p)
    sim = KinematicSim(p, seed=1)
    rng = np.random.default_rng(0)
    prev_q, prev_v = sim.positions, sim.velocities
    for i in range(400):
        kind = i % 4
        if kind == 0:
            cmd = rng.uniform(lo - 1.0, hi + 1.0)  # anywhere, partly out of range
        elif kind == 1:
            cmd = rng.choice([-1e6, 1e6], p.action_dim)  # absurd
        elif kind == 2:
            cmd = sim.positions + rng.normal(0, 1, p.action_dim) * vmax * p.control_period_s  # stream-like
        else:
            cmd = None
        if cmd is not None:
            sim.command_positions(cmd)
        dt = float(rng.choice([0.001, 0.005, 0.01, 0.02, 0.05]))
        sim.step(dt)
        q, v = sim.positions, sim.velocities
        assert np.all(q >= lo - TOL) and np.all(q <= hi + TOL)
        assert np.all(np.abs(v) <= vmax * (1 + 1e-9)), (i, v, vmax)
        # The motion itself, not only the reported velocity, respects max_velocity.
        assert np.all(np.abs(q - prev_q) <= vmax * dt * (1 + 1e-6) + 1e-12), (i, q - prev_q)
        if name != "hello":  # hello reports world-frame velocity: it turns with the heading
            assert np.all(np.abs(v - prev_v) <= amax * dt * (1 + 1e-6) + 1e-9)
        prev_q, prev_v = q, v


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.lists(st.floats(-10.0, 10.0), min_size=7, max_size=7),
                          st.floats(0.0005, 0.1)), min_size=1, max_size=15))
def test_franka_any_command_sequence_stays_in_limits(seq: list[tuple[list[float], float]]) -> None:
    p = PARAMS["franka"]
    lo, hi, vmax, _ = limits(p)
    sim = KinematicSim(p, seed=0)
    for cmd, dt in seq:
        sim.command_positions(np.asarray(cmd))
        sim.step(dt)
        assert np.all(sim.positions >= lo - TOL) and np.all(sim.positions <= hi + TOL)
        assert np.all(np.abs(sim.velocities) <= vmax * (1 + 1e-9))


@pytest.mark.parametrize("name", EMBODIMENTS)
@pytest.mark.parametrize("bad", ["nan", "inf", "short", "long", "matrix", "text"])
def test_bad_command_is_rejected_and_state_unchanged(name: str, bad: str) -> None:
    p = PARAMS[name]
    sim = KinematicSim(p, seed=0)
    good = sim.positions + 0.01
    sim.command_positions(good)
    sim.step(0.01)
    before = (sim.positions, sim.velocities, sim.commanded_positions)
    cmd: object = {
        "nan": np.where(np.arange(p.action_dim) == 0, np.nan, good),
        "inf": np.where(np.arange(p.action_dim) == 0, np.inf, good),
        "short": good[:-1],
        "long": np.append(good, 0.0),
        "matrix": np.tile(good, (2, 1)),
        "text": ["a"] * p.action_dim,
    }[bad]
    with pytest.raises(ValueError):
        sim.command_positions(cmd)  # type: ignore[arg-type]
    after = (sim.positions, sim.velocities, sim.commanded_positions)
    for x, y in zip(before, after):
        np.testing.assert_array_equal(x, y)


def test_bad_step_rejected() -> None:
    sim = KinematicSim(PARAMS["franka"], seed=0)
    for dt in (-0.01, math.nan, math.inf):
        with pytest.raises(ValueError):
            sim.step(dt)


# ---------------------------------------------------------------- position controller


def test_large_jump_arrives_without_overshoot() -> None:
    p = PARAMS["franka"]
    sim = KinematicSim(p, seed=0)
    sim.reset(seed=0, start_noise_rad=0.0)
    goal = sim.positions
    goal[0] += 1.5  # 1.5 rad on joint 1: far more than one period's reach
    sim.command_positions(goal)
    peak = -np.inf
    for _ in range(300):
        sim.step(0.01)
        peak = max(peak, sim.positions[0])
    assert abs(sim.positions[0] - goal[0]) < 1e-6
    assert peak - goal[0] < 0.02  # time-optimal profile: no overshoot worth mentioning
    assert np.allclose(sim.velocities, 0.0)


def test_stream_of_period_steps_is_tracked_at_its_speed() -> None:
    """A feasible command stream (accelerating, then cruising at 80 % of max velocity, as the
    safety filter sends) is followed within a period, not at a crawl behind it."""
    p = PARAMS["franka"]
    sim = KinematicSim(p, seed=0)
    sim.reset(seed=0, start_noise_rad=0.0)
    period = p.control_period_s
    cruise = 0.8 * p.max_velocity[0]
    accel = 0.8 * p.max_acceleration[0]
    cmd, speed = sim.positions, 0.0
    for _ in range(60):
        speed = min(cruise, speed + accel * period)
        cmd[0] += speed * period
        sim.command_positions(cmd)
        sim.step(period)
        assert abs(cmd[0] - sim.positions[0]) < 1e-6 + cruise * period
    assert sim.velocities[0] == pytest.approx(cruise, rel=0.02)


def test_substeps_do_not_change_the_result() -> None:
    p = PARAMS["aloha"]
    a, b = KinematicSim(p, seed=2), KinematicSim(p, seed=2)
    for _ in range(20):
        for sim in (a, b):
            sim.command_positions(sim.expert_target())
        a.step(0.02)
        for _ in range(4):
            b.step(0.005)
    np.testing.assert_allclose(a.positions, b.positions, atol=1e-12)
    assert a.time_s == pytest.approx(b.time_s)


# ---------------------------------------------------------------- experts


@pytest.mark.parametrize("name", EMBODIMENTS)
@pytest.mark.parametrize("seed", range(6))
def test_expert_reaches_the_target(name: str, seed: int) -> None:
    p = PARAMS[name]
    lo, hi, vmax, _ = limits(p)
    sim = KinematicSim(p, seed=seed)
    assert not sim.success()  # targets are drawn away from the start
    for _ in range(EXPERT_MAX_STEPS[name]):
        target = sim.expert_target()
        assert target.shape == (p.action_dim,)
        assert np.all(target >= lo) and np.all(target <= hi)
        assert np.all(np.abs(target - sim.positions) <= vmax * p.control_period_s * (1 + 1e-9))
        sim.command_positions(target)
        sim.step(p.control_period_s)
        if sim.success():
            break
    assert sim.task_error_m() < 0.03, sim.task_error_m()
    # ... and stays there.
    for _ in range(20):
        sim.command_positions(sim.expert_target())
        sim.step(p.control_period_s)
    assert sim.success()


def test_aloha_expert_opens_both_grippers() -> None:
    p = PARAMS["aloha"]
    sim = KinematicSim(p, seed=0)
    for _ in range(50):
        sim.command_positions(sim.expert_target())
        sim.step(p.control_period_s)
    np.testing.assert_allclose(sim.positions[[6, 13]], p.position_max[6], atol=1e-6)


def test_leap_expert_keeps_the_hand_open() -> None:
    p = PARAMS["leap"]
    sim = KinematicSim(p, seed=0)
    for _ in range(40):
        sim.command_positions(sim.expert_target())
        sim.step(p.control_period_s)
    np.testing.assert_allclose(sim.positions[7:], p.home_position[7:], atol=1e-6)


# ---------------------------------------------------------------- tool points / task


def test_tool_point_counts_and_hello_base_point() -> None:
    counts = {"franka": 1, "aloha": 2, "hello": 1, "leap": 1}
    for name, k in counts.items():
        sim = KinematicSim(PARAMS[name], seed=0)
        assert sim.end_effector_positions().shape == (k, 3)
        assert sim.target.shape == (k, 3)
    sim = KinematicSim(PARAMS["hello"], seed=0)
    x, y, _ = sim.positions
    np.testing.assert_allclose(sim.end_effector_positions(), [[x, y, 0.0]])
    assert sim.target[0, 2] == 0.0


def test_target_setter_and_success() -> None:
    sim = KinematicSim(PARAMS["franka"], seed=0)
    sim.target = sim.end_effector_positions() + [[0.0, 0.0, 0.02]]
    assert sim.task_error_m() == pytest.approx(0.02)
    assert sim.success(0.03) and not sim.success(0.01)
    with pytest.raises(ValueError):
        sim.target = np.zeros((2, 3))
    with pytest.raises(ValueError):
        sim.target = [[np.nan, 0.0, 0.0]]


# ---------------------------------------------------------------- camera


@pytest.mark.parametrize("name", EMBODIMENTS)
def test_image_shows_the_red_target_and_follows_it(name: str) -> None:
    p = PARAMS[name]
    sim = KinematicSim(p, image_width=160, image_height=120, seed=0)
    img = sim.render()
    assert img.shape == (120, 160, 3) and img.dtype == np.uint8
    red = red_mask(img)
    for u, v in sim.project_to_image(sim.target):
        assert red[int(round(v)), int(round(u))], "the target's centre pixel is red"
    # Every red pixel belongs to a target: nothing else in the scene is red.
    ys, xs = np.nonzero(red)
    centers = sim.project_to_image(sim.target)
    dist = np.min(np.hypot(xs[:, None] - centers[None, :, 0], ys[:, None] - centers[None, :, 1]), axis=1)
    assert np.all(dist < 12)
    # Moving the target (robot unchanged) changes the image where the target was and is.
    moved = sim.target
    moved[:, 1] += 0.12 if name != "hello" else 0.6
    sim.target = moved
    img2 = sim.render()
    assert np.mean(np.abs(img2.astype(int) - img.astype(int))) > 0.2
    for u, v in sim.project_to_image(sim.target):
        assert red_mask(img2)[int(round(v)), int(round(u))]


@pytest.mark.parametrize("name", EMBODIMENTS)
def test_different_targets_give_different_images_and_the_robot_moves_in_them(name: str) -> None:
    p = PARAMS[name]
    images = []
    for seed in range(4):
        sim = KinematicSim(p, seed=seed)
        sim.reset(seed=seed, start_noise_rad=0.0)  # same robot pose, different targets
        images.append(sim.render().astype(int))
    for i in range(4):
        for j in range(i + 1, 4):
            assert np.mean(np.abs(images[i] - images[j])) > 0.1
    # The robot is drawn: moving it (same target) changes the image.
    sim = KinematicSim(p, seed=0)
    before = sim.render().astype(int)
    for _ in range(30):
        sim.command_positions(sim.expert_target())
        sim.step(p.control_period_s)
    after = sim.render().astype(int)
    assert np.mean(np.abs(after - before)) > 0.2


def test_render_size_follows_the_constructor() -> None:
    sim = KinematicSim(PARAMS["leap"], image_width=64, image_height=48, seed=0)
    assert sim.render().shape == (48, 64, 3)
    with pytest.raises(ValueError):
        KinematicSim(PARAMS["leap"], image_width=0)


@pytest.mark.parametrize("name", EMBODIMENTS)
def test_step_and_render_are_fast(name: str) -> None:
    p = PARAMS[name]
    sim = KinematicSim(p, seed=0)
    sim.render()
    n = 100
    start = time.perf_counter()
    for _ in range(n):
        sim.command_positions(sim.expert_target())
        sim.step(p.control_period_s)
        sim.render()
    per_step_ms = (time.perf_counter() - start) / n * 1e3
    assert per_step_ms < 5.0, per_step_ms


# ---------------------------------------------------------------- wrench


def test_pushing_into_the_table_raises_the_wrench() -> None:
    p = PARAMS["franka"]
    sim = KinematicSim(p, seed=0)
    force, torque = sim.wrench()
    assert force.shape == (3,) and torque.shape == (3,)
    assert np.linalg.norm(force) < 3.0  # free space: noise only
    sim.target = [[0.5, 0.0, -0.05]]  # 5 cm below the table top
    for _ in range(150):
        sim.command_positions(sim.expert_target())
        sim.step(p.control_period_s)
    force, _ = sim.wrench()
    assert sim.end_effector_positions()[0, 2] < -0.02
    assert np.linalg.norm(force) > 40.0
    assert force[2] > 40.0  # the table pushes up


@pytest.mark.parametrize("name", EMBODIMENTS)
def test_external_push_is_felt_for_its_duration(name: str) -> None:
    sim = KinematicSim(PARAMS[name], seed=0)
    sim.apply_external_force(np.array([60.0, 0.0, 0.0]), duration_s=0.2)
    sim.step(0.1)
    assert np.linalg.norm(sim.wrench()[0]) > 40.0
    sim.step(0.15)
    assert np.linalg.norm(sim.wrench()[0]) < 5.0
    with pytest.raises(ValueError):
        sim.apply_external_force(np.array([np.nan, 0.0, 0.0]), 0.1)
    with pytest.raises(ValueError):
        sim.apply_external_force(np.zeros(3), 0.0)


# ---------------------------------------------------------------- mobile base


def test_hello_twist_ignores_linear_y_and_drives_forward() -> None:
    p = PARAMS["hello"]
    sim = KinematicSim(p, seed=0)
    sim.reset(seed=0, start_noise_rad=0.0)
    for _ in range(20):  # 2 s of a steady twist at 10 Hz
        sim.command_twist(0.2, 0.25, 0.0)
        sim.step(0.1)
    x, y, yaw = sim.positions
    assert abs(y) < 1e-9 and abs(yaw) < 1e-9  # no lateral motion at all
    assert x > 0.25
    np.testing.assert_allclose(sim.velocities, [0.2, 0.0, 0.0], atol=1e-9)


def test_hello_stops_after_the_twist_timeout() -> None:
    p = PARAMS["hello"]
    sim = KinematicSim(p, seed=0)
    sim.command_twist(0.3, 0.0, 0.5)
    sim.step(TWIST_TIMEOUT_S - 0.05)
    assert np.linalg.norm(sim.velocities) > 0.1  # still driving just before the timeout
    sim.step(0.05 + p.max_velocity[0] / p.max_acceleration[0] + 0.1)  # timeout + braking
    assert np.allclose(sim.velocities, 0.0)
    still = sim.positions
    sim.step(1.0)
    np.testing.assert_array_equal(sim.positions, still)


def test_hello_twist_is_clipped_and_validated() -> None:
    p = PARAMS["hello"]
    sim = KinematicSim(p, seed=0)
    for _ in range(30):
        sim.command_twist(5.0, 0.0, -9.0)
        sim.step(0.1)
    speed = math.hypot(*sim.velocities[:2])
    assert speed == pytest.approx(p.max_velocity[0])
    assert sim.velocities[2] == pytest.approx(-p.max_velocity[2])
    with pytest.raises(ValueError):
        sim.command_twist(math.nan, 0.0, 0.0)
    with pytest.raises(ValueError):
        KinematicSim(PARAMS["franka"], seed=0).command_twist(0.1, 0.0, 0.0)


def test_hello_position_targets_turn_and_drive_there() -> None:
    p = PARAMS["hello"]
    sim = KinematicSim(p, seed=0)
    sim.reset(seed=0, start_noise_rad=0.0)
    sim.command_positions(np.array([0.0, 1.0, 0.5]))  # a goal to the left: turn, drive, turn
    for _ in range(300):
        sim.step(0.05)
    x, y, yaw = sim.positions
    assert math.hypot(x, y - 1.0) < 0.03
    assert yaw == pytest.approx(0.5, abs=1e-3)
    assert np.allclose(sim.velocities, 0.0)


@pytest.mark.parametrize("bearing", [0.0, math.pi / 2, -math.pi / 2, math.pi, -math.pi + 1e-3, 2.5])
def test_hello_expert_reaches_the_farthest_targets_within_the_scenes_episode_time(bearing: float) -> None:
    """Issue 16: the Stretch base needs a half turn and a 1.5 m drive at 0.3 m/s for the
    farthest target behind it (about 9 s); the scene's ``expert_time_s`` (what demonstration
    episodes last) covers that, so recorded episodes end at the target. 3 s did not."""
    from hybridvla_ros.sim.kinematic_scenes import BaseScene, make_kinematic_scene

    p = PARAMS["hello"]
    scene = make_kinematic_scene(p)
    assert isinstance(scene, BaseScene)
    steps = math.ceil(scene.expert_time_s / p.control_period_s)
    sim = KinematicSim(p, seed=0)
    sim.reset(seed=0, start_noise_rad=0.0)
    r = scene.target_max_m
    sim.target = np.array([[r * math.cos(bearing), r * math.sin(bearing), 0.0]])
    arrived = None
    for k in range(steps):
        sim.command_positions(sim.expert_target())
        sim.step(p.control_period_s)
        if arrived is None and sim.success(p.success_tolerance_m):
            arrived = k + 1
    assert sim.success(p.success_tolerance_m), sim.task_error_m()  # there at the end of the episode
    assert arrived is not None and arrived > 3.0 / p.control_period_s  # and it does take longer than 3 s
