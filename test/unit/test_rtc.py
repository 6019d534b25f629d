"""Real-time chunking: the frozen-prefix arithmetic (core/rtc.py) and seam continuity of our flow
and coarse-to-fine heads under a delayed model (guided inpainting, model/policy.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hybridvla_ros.core.rtc import (
    ChunkPrefix,
    DelayEstimator,
    plan_prefix,
    soft_weights,
    steps_before,
    targets_at,
)
from hybridvla_ros.model.policy import EmbodimentSpec, HybridPolicy, PolicyConfig
from hybridvla_ros.model.runner import PolicyRunner
from hybridvla_ros.policies.base import PolicyObservation
from hybridvla_ros.policies.builtin import BuiltinPolicy
from hybridvla_ros.policies.sim_expert import SimExpertPolicy

DT = 0.02


# ---------------------------------------------------------------- arithmetic
def test_steps_before_counts_slots_strictly_before() -> None:
    assert steps_before(10.0, DT, 10.0, 16) == 0
    assert steps_before(10.0, DT, 10.0 + 3 * DT, 16) == 3       # slot 3 is at the deadline: not before it
    assert steps_before(10.0, DT, 10.0 + 3.2 * DT, 16) == 4
    assert steps_before(10.0, DT, 11.0, 16) == 16                # capped at the chunk
    assert steps_before(10.0, DT, 9.0, 16) == 0


def test_targets_are_interpolated_on_the_old_grid() -> None:
    old = np.arange(8, dtype=float)[:, None] * np.array([[1.0, -2.0]])   # (8, 2): step k -> (k, -2k)
    out, inside = targets_at(old, 5.0, 0.1, np.array([5.0, 5.25, 5.7, 5.75, 4.9]))
    np.testing.assert_allclose(out, [[0, 0], [2.5, -5], [7, -14], [7, -14], [0, 0]])
    assert inside.tolist() == [True, True, True, False, False]


def test_soft_mask_is_the_papers() -> None:
    w = soft_weights(3, 10, 16)
    assert w[:3].tolist() == [1.0] * 3 and w[10:].tolist() == [0.0] * 6
    c = (10 - np.arange(3, 10)) / (10 - 3 + 1)
    np.testing.assert_allclose(w[3:10], c * (np.exp(c) - 1) / (math.e - 1))
    assert np.all(np.diff(w[2:11]) < 0), "decays from the frozen steps to the end of the overlap"
    with pytest.raises(ValueError):
        soft_weights(5, 3, 16)


def test_plan_prefix_freezes_the_steps_that_run_before_the_new_chunk_arrives() -> None:
    rng = np.random.default_rng(0)
    old = rng.normal(size=(16, 7))
    # the new observation 5 periods into the old chunk, the new chunk in the buffer 3.5 periods later
    p = plan_prefix(old, 100.0, DT, 100.0 + 5 * DT, DT, 16, 3.5 * DT)
    assert p is not None and p.frozen_steps == 4
    overlap = 11                                                  # old steps 5..15
    np.testing.assert_allclose(p.targets[:overlap], old[5:], atol=1e-12)
    np.testing.assert_allclose(p.targets[overlap:], np.repeat(old[-1:], 16 - overlap, 0))
    np.testing.assert_allclose(p.weights, soft_weights(4, overlap, 16))
    assert p.start_s == pytest.approx(100.0 + 5 * DT) and p.step_period_s == DT
    # off the grid and another period: interpolated
    q = plan_prefix(old, 100.0, DT, 100.0 + 2.5 * DT, DT / 2, 8, DT)
    assert q is not None and q.frozen_steps == 2
    np.testing.assert_allclose(q.targets[1], old[3], atol=1e-12)
    np.testing.assert_allclose(q.targets[0], 0.5 * (old[2] + old[3]), atol=1e-12)
    # a delay beyond the old chunk freezes only what it covers; no overlap: nothing to agree with
    r = plan_prefix(old, 100.0, DT, 100.0 + 14 * DT, DT, 16, 10 * DT)
    assert r is not None and r.frozen_steps == 2 and r.weights[2:].sum() == 0
    assert plan_prefix(old, 100.0, DT, 100.0 + 16 * DT, DT, 16, DT) is None
    assert plan_prefix(old, 100.0, DT, 99.0, DT, 16, DT) is None  # an observation older than the old chunk
    with pytest.raises(ValueError):
        ChunkPrefix(targets=np.zeros((4, 2)), weights=np.array([1, 0.5, 1, 0]), frozen_steps=3, start_s=0.0,
                    step_period_s=DT)


def test_delay_estimate_is_a_high_percentile_plus_the_margin() -> None:
    est = DelayEstimator(window=10, percentile=90.0, margin_s=0.01)
    assert est.estimate() is None
    for d in [0.05] * 9 + [0.2]:
        est.add(d)
    est.add(float("nan"))
    est.add(-1.0)
    assert len(est) == 10
    assert est.estimate() == pytest.approx(np.percentile([0.05] * 9 + [0.2], 90) + 0.01)
    for _ in range(10):  # the window forgets the slow call
        est.add(0.05)
    assert est.estimate() == pytest.approx(0.06)


# ---------------------------------------------------------------- seams under a delayed model
def _runner(head: str, prediction: str) -> PolicyRunner:
    """A fixed-seed untrained model: its chunks for different observations disagree a lot."""
    torch.manual_seed(0)
    spec = EmbodimentSpec("franka", 7, 16, head, flow_prediction=prediction)
    config = PolicyConfig(embodiments=(spec,), image_size=32, conv_channels=(8, 16), d_model=32, num_heads=2,
                          num_layers=1, ff_dim=64, token_hidden=64, flow_hidden=64, num_bins=16, keypoints=0)
    policy = HybridPolicy(config)
    rng = np.random.default_rng(0)
    proprio = rng.normal(size=(200, 7))
    policy.fit_normalization("franka", proprio, proprio[:, None] + 0.3 * rng.normal(size=(200, 16, 7)).cumsum(1))
    return PolicyRunner(policy, config, "franka", seed=1)


def seam_jumps(runner: PolicyRunner, delay_steps: int, rtc: bool, seams: int = 10, every: int = 5,
               seed: int = 7) -> tuple[list[float], list[float]]:
    """Successive chunks for random observations ``every`` periods apart, each arriving ``delay_steps``
    periods after its observation: the largest joint jump at the seam (the new chunk's first step after
    the delay against the old chunk's target at that time), and the largest deviation of the frozen
    steps from the old chunk."""
    rng = np.random.default_rng(seed)
    q, old, old_start = np.zeros(7), None, 0.0
    jumps: list[float] = []
    frozen_err: list[float] = []
    for s in range(seams + 1):
        t0 = s * every * DT
        image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
        q = q + 0.1 * rng.normal(size=7)
        prefix = None if old is None else plan_prefix(old, old_start, DT, t0, DT, 16, delay_steps * DT)
        actions = runner.predict(image, q, "", num_samples=3, prefix=prefix if rtc else None).actions
        if prefix is not None and old is not None:
            f = prefix.frozen_steps
            ref, _ = targets_at(old, old_start, DT, t0 + np.arange(f + 1) * DT)
            jumps.append(float(np.abs(actions[f] - ref[f]).max()))
            frozen_err.append(float(np.abs(actions[:f] - ref[:f]).max()))
        old, old_start = actions, t0
    return jumps, frozen_err


@pytest.mark.parametrize("head, prediction", [("coarse_to_fine", "velocity"), ("flow", "sample"),
                                              ("flow", "velocity")])
def test_seams_are_continuous_with_real_time_chunking(head: str, prediction: str) -> None:
    torch.set_num_threads(1)
    runner = _runner(head, prediction)
    plain, _ = seam_jumps(runner, 3, rtc=False)
    jumps, frozen_err = seam_jumps(runner, 3, rtc=True)
    assert np.median(plain) > 0.1, "the model's chunks must disagree for the test to mean anything"
    assert np.median(jumps) < 0.35 * np.median(plain), (np.median(jumps), np.median(plain))
    assert max(frozen_err) < 1e-9, "frozen steps are the old chunk's targets"


def test_modes_and_sources_that_cannot_inpaint_say_so() -> None:
    runner = _runner("coarse_to_fine", "velocity")
    assert runner.inpaints
    token = PolicyRunner(runner.policy, runner.config, "franka", mode="token")
    assert not token.inpaints
    prefix = plan_prefix(np.zeros((16, 7)), 0.0, DT, 0.0, DT, 16, 2 * DT)
    image = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="cannot inpaint"):
        token.predict(image, np.zeros(7), "", prefix=prefix)
    names = tuple(f"j{i}" for i in range(7))
    obs = PolicyObservation(stamp_s=0.0, joint_names=names, joint_positions=np.zeros(7), task="",
                            images={"camera": image}, prefix=prefix)
    source = BuiltinPolicy(token, DT, joint_names=names)
    assert not source.inpaints
    source.infer(obs)  # the prefix is ignored, no error
    assert BuiltinPolicy(runner, DT, joint_names=names).inpaints
    assert not SimExpertPolicy(names, 16, DT).inpaints
