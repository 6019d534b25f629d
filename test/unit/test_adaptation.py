"""Online adaptation (ROS-free): chunk targets from corrections, fine-tune, accept/reject, versions, log."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch

from hybridvla_ros.core.correction_store import CorrectionRecord, CorrectionStore
from hybridvla_ros.launch_description import default_config_dir
from hybridvla_ros.model.adaptation import LOG_FIELDS, LOG_FILE, adapt, version_dirs
from hybridvla_ros.model.checkpoint import model_version_of
from hybridvla_ros.model.corrections_data import (
    CorrectionSet,
    correction_chunks,
    correction_set,
    holdout_corrections,
    load_corrections,
)
from hybridvla_ros.model.policy import EmbodimentSpec, PolicyConfig
from hybridvla_ros.model.replay import checkpoint_replay, checkpoint_replay_or_record, replay_path
from hybridvla_ros.model.runner import PolicyRunner
from hybridvla_ros.model.train import TrainConfig, train
from hybridvla_ros.params import ParameterError, from_params, load_node_params
from hybridvla_ros.params.adaptation import AdaptationParams
from hybridvla_ros.sim.corrections import RECORDED_IMAGE_SIZE, simulated_corrections
from hybridvla_ros.sim.kinematic import KinematicSim
from hybridvla_ros.sim.registry import state_vector

FRANKA = os.path.join(default_config_dir(), "franka.yaml")
SMALL = PolicyConfig(image_size=48, conv_channels=(8, 16, 32), d_model=64, num_heads=4, num_layers=1, ff_dim=128,
                     num_bins=32, token_hidden=128)


def franka_params(**overrides: object) -> AdaptationParams:
    return from_params(AdaptationParams, {**load_node_params(FRANKA, "adaptation"), **overrides}, "adaptation")


def leap_params(**overrides: object) -> AdaptationParams:
    path = os.path.join(default_config_dir(), "leap.yaml")
    return from_params(AdaptationParams, {**load_node_params(path, "adaptation"), **overrides}, "adaptation")


def sim_corrections(p: AdaptationParams, n: int, **kwargs: object) -> CorrectionSet:
    """``n`` simulated corrections (sim/corrections.py), read as adaptation reads a store's."""
    data, skipped = correction_set(simulated_corrections(p, n, **kwargs), p, RECORDED_IMAGE_SIZE, p.state_joints)
    assert skipped == 0 and len(data) == n
    return data


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory) -> str:
    """A small franka (token head) + leap (flow head) policy, briefly trained on the expert (replay files too)."""
    from hybridvla_ros.sim.demos import record_demonstrations

    torch.set_num_threads(1)
    params = [franka_params(), leap_params()]
    out = tmp_path_factory.mktemp("adapt") / "base"
    demos = [record_demonstrations(p, 3, 40, image_size=SMALL.image_size, seed=0) for p in params]
    train(demos, [EmbodimentSpec.from_params(p) for p in params], TrainConfig(train_steps=160, batch_size=16, seed=0),
          out_dir=out, policy_config=SMALL)
    return str(out)


def test_chunk_targets_interpolate_the_episodes_later_human_targets() -> None:
    # Episode 0 at 10 Hz: 0, 1, 2 (joint 0) and 0, -1, -2 (joint 1); episode 1 interleaved in time, given out of order.
    human = np.array([[0.0, 0.0], [1.0, -1.0], [2.0, -2.0], [10.0, 10.0], [11.0, 11.0]])
    stamps = np.array([0.0, 0.1, 0.2, 0.15, 0.05])
    episode = np.array([0, 0, 0, 1, 1])
    chunks = correction_chunks(human, stamps, episode, chunk_size=8, control_period_s=0.02)  # 50 Hz
    assert chunks.shape == (5, 8, 2)
    np.testing.assert_allclose(chunks[0, :, 0], [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4])
    np.testing.assert_allclose(chunks[0, :, 1], -chunks[0, :, 0])
    np.testing.assert_allclose(chunks[1, :, 0], [1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.0, 2.0])  # padded with the last
    np.testing.assert_allclose(chunks[2], np.tile([2.0, -2.0], (8, 1)))
    # Episode 1 (0.05 s: 11, 0.15 s: 10): its own targets only, in time order.
    np.testing.assert_allclose(chunks[4, :, 0], [11.0, 10.8, 10.6, 10.4, 10.2, 10.0, 10.0, 10.0])
    np.testing.assert_allclose(chunks[3, :, 0], 10.0)
    assert np.all(chunks[:, 0] == human), "step 0 is the correction itself"
    with pytest.raises(ValueError, match="control_period_s"):
        correction_chunks(human, stamps, episode, 8, 0.0)


def test_store_sessions_are_separate_episodes_and_other_robots_skipped(tmp_path) -> None:
    p = franka_params()
    path = str(tmp_path / "c.sqlite")
    with CorrectionStore(path, replay_capacity=100) as store:
        for session, offset in (("a", 0.0), ("b", 5.0)):
            for i in range(3):  # both sessions use episode_index 0
                store.add(CorrectionRecord(
                    stamp_s=100.0 + 0.1 * i, embodiment="franka", instruction="", episode_index=0, session_id=session,
                    image=np.zeros((96, 96, 3), np.uint8), joint_positions=np.zeros(7),
                    human_action=np.full(7, offset + i)))
        store.add(CorrectionRecord(stamp_s=100.0, embodiment="aloha", instruction="",
                                   image=np.zeros((8, 8, 3), np.uint8),
                                   joint_positions=np.zeros(14), human_action=np.zeros(14)))
    data, info = load_corrections(path, p, image_size=48)
    assert info["count"] == 7 and info["skipped"] == 1 and len(data) == 6
    assert len(np.unique(data.episode)) == 2
    assert data.images.shape == (6, 48, 48, 3) and data.instructions[0] == p.instruction
    np.testing.assert_allclose(data.actions[2], 2.0)  # session a ends at 2: never session b's 5..7
    np.testing.assert_allclose(data.actions[3, :5, 0], [5.0, 5.2, 5.4, 5.6, 5.8])  # franka: 50 Hz
    with pytest.raises(ValueError, match="no correction store"):
        load_corrections(str(tmp_path / "missing.sqlite"), p, 48)


def test_stored_joints_are_picked_by_name_with_the_policys_state_joints(tmp_path) -> None:
    """The recorder stores the observation's joints as they came (driver order, the suction cup
    included); adaptation picks the arm joints and the state joints by name, and skips a
    record that lacks one the policy needs."""
    p = franka_params()
    names = list(p.joint_names)
    path = str(tmp_path / "c.sqlite")
    with CorrectionStore(path, replay_capacity=100) as store:
        for i in range(3):
            stored = dict(zip(names, 0.1 * np.arange(7) + i), suction_cup=float(i % 2))
            order = ["suction_cup"] + names[::-1]  # not action order
            store.add(CorrectionRecord(
                stamp_s=100.0 + 0.1 * i, embodiment="franka", instruction="", image=np.zeros((8, 8, 3), np.uint8),
                joint_positions=np.array([stored[n] for n in order]), joint_names=tuple(order),
                human_action=np.full(7, float(i))))
        store.add(CorrectionRecord(  # no suction cup: unusable for a policy that observes it
            stamp_s=101.0, embodiment="franka", instruction="", image=np.zeros((8, 8, 3), np.uint8),
            joint_positions=np.zeros(7), joint_names=tuple(names), human_action=np.zeros(7)))
    data, info = load_corrections(path, p, 16, state_joints=("suction_cup",))
    assert info["skipped"] == 1 and len(data) == 3
    np.testing.assert_allclose(data.proprio[2], 0.1 * np.arange(7) + 2)
    np.testing.assert_allclose(data.state[:, 0], [0.0, 1.0, 0.0])
    data, info = load_corrections(path, p, 16)  # a policy without state joints uses all four
    assert info["skipped"] == 0 and data.state.shape == (4, 0)


def test_consistent_corrections_are_learned_saved_and_logged(small_checkpoint, tmp_path) -> None:
    torch.set_num_threads(1)
    p = franka_params(adapt_root=str(tmp_path / "adapt"))
    result = adapt(p, small_checkpoint, sim_corrections(p, 50), checkpoint_replay(small_checkpoint, "franka"))
    log = result.log
    assert result.accepted, log["reason"]
    assert set(LOG_FIELDS) <= set(log)
    assert log["loss_after"]["corrections"] < log["loss_before"]["corrections"]
    before, after = log["heldout_corrections"]["before"], log["heldout_corrections"]["after"]
    assert after["chunk_mae"] < (1 - p.min_improvement) * before["chunk_mae"]
    replay = log["heldout_replay"]
    assert replay["after"]["chunk_mae"] <= (1 + p.tolerance) * replay["before"]["chunk_mae"]
    assert log["samples"]["corrections"] + log["samples"]["corrections_heldout"] == 50
    assert log["samples"]["replay"] > 0 and log["samples"]["replay_heldout"] > 0
    assert log["samples"]["replay_source"] == "file"
    assert 0 < log["steps"] <= p.steps and log["wall_time_s"] > 0

    # A new version on disk, atomically named, with the replay file, loadable, answering differently.
    new_dir = tmp_path / "adapt" / "franka" / "v0001"
    assert result.checkpoint_dir == new_dir and log["version"] == 1
    assert {"model.safetensors", "config.json", "replay_franka.npz"} <= set(os.listdir(new_dir))
    assert not [n for n in os.listdir(new_dir.parent) if n.startswith(".")], "no temp dir left"
    assert log["model_version"] == model_version_of(new_dir) != model_version_of(small_checkpoint)
    lines = (new_dir.parent / LOG_FILE).read_text().splitlines()
    assert json.loads(lines[-1]) == json.loads(json.dumps(log))
    base = PolicyRunner.load(small_checkpoint, "franka", num_threads=1)
    new = PolicyRunner.load(new_dir, "franka", num_threads=1)
    assert new.model_version == log["model_version"]
    sim = KinematicSim(p, seed=999)
    image, q = sim.render(), sim.positions
    x = state_vector(sim, p.state_joints)  # franka observes its suction cup (never on in the kinematic sim)
    a, b = base.predict(image, q, p.instruction, state=x).actions, new.predict(image, q, p.instruction, state=x).actions
    assert np.abs(a - b).max() > 1e-4

    # The next adaptation builds on the new version and gets the next number.
    again = adapt(p, new_dir, sim_corrections(p, 30, seed=300), checkpoint_replay(new_dir, "franka"))
    assert again.log["base_version"] == 1 and again.log["base_model_version"] == log["model_version"]
    if again.accepted:
        assert again.checkpoint_dir == new_dir.parent / "v0002"
    assert len((new_dir.parent / LOG_FILE).read_text().splitlines()) == 2


def test_poisoned_corrections_are_rejected_and_nothing_is_written(small_checkpoint, tmp_path) -> None:
    torch.set_num_threads(1)
    p = franka_params(adapt_root=str(tmp_path / "adapt"))
    result = adapt(p, small_checkpoint, sim_corrections(p, 50, labels="noise"),
                   checkpoint_replay(small_checkpoint, "franka"))
    log = result.log
    assert not result.accepted and result.checkpoint_dir is None
    assert log["version"] is None and log["model_version"] == model_version_of(small_checkpoint)
    assert "held-out" in log["reason"]
    assert log["loss_after"]["corrections"] < log["loss_before"]["corrections"], "it did fit the noise"
    assert version_dirs(tmp_path / "adapt" / "franka") == {}
    assert not [n for n in os.listdir(tmp_path / "adapt" / "franka") if n != LOG_FILE]
    assert json.loads((tmp_path / "adapt" / "franka" / LOG_FILE).read_text())["accepted"] is False


def test_too_few_corrections_and_replay_fallback(small_checkpoint, tmp_path) -> None:
    torch.set_num_threads(1)
    p = franka_params(adapt_root=str(tmp_path / "adapt"), min_corrections=20, replay_examples=10, steps=20)
    few = adapt(p, small_checkpoint, sim_corrections(p, 10), checkpoint_replay(small_checkpoint, "franka"))
    assert not few.accepted and "too few corrections" in few.log["reason"] and few.log["steps"] == 0
    assert set(LOG_FIELDS) <= set(few.log)

    # A checkpoint without its replay sample: the caller (as adaptation_node does) has fresh expert
    # demonstrations recorded instead; adapt itself never runs a simulator.
    bare = tmp_path / "bare"
    shutil.copytree(small_checkpoint, bare)
    os.remove(replay_path(bare, "franka"))
    with pytest.raises(ValueError, match="no replay sample"):
        checkpoint_replay(bare, "franka")
    result = adapt(p, bare, sim_corrections(p, 30), checkpoint_replay_or_record(bare, p))
    assert result.log["samples"]["replay_source"] == "recorded" and result.log["samples"]["replay"] > 0
    if result.accepted:  # the recorded sample travels with the new version
        assert replay_path(result.checkpoint_dir, "franka").is_file()


def test_replay_data_for_another_robot_is_refused(small_checkpoint, tmp_path) -> None:
    p = franka_params(adapt_root=str(tmp_path / "adapt"), min_corrections=20)
    with pytest.raises(ValueError, match="embodiment is 'leap', expected 'franka'"):
        adapt(p, small_checkpoint, sim_corrections(p, 20), checkpoint_replay(small_checkpoint, "leap"))


def test_simulated_corrections_read_back_from_a_store_as_they_were_made(tmp_path) -> None:
    """sim/corrections.py makes what the recorder stores: written to a store and read back
    (PNG images, joints by name), they are the same training data."""
    p = franka_params()
    records = simulated_corrections(p, 12)
    path = str(tmp_path / "c.sqlite")
    with CorrectionStore(path, replay_capacity=100) as store:
        for r in records:
            store.add(r)
    stored, info = load_corrections(path, p, RECORDED_IMAGE_SIZE, p.state_joints)
    direct = sim_corrections(p, 12)
    assert info["count"] == 12 and info["skipped"] == 0
    for name in ("images", "proprio", "human_action", "stamp_s", "episode", "actions", "state"):
        np.testing.assert_array_equal(getattr(stored, name), getattr(direct, name), err_msg=name)
    assert len(np.unique(direct.episode)) == 2  # 40-step episodes at 50 Hz: one correction per 0.1 s, 8 each
    with pytest.raises(ValueError, match="labels"):
        simulated_corrections(p, 3, labels="shifty")


def test_hybridvla_adapt_runs_one_adaptation_on_a_store(small_checkpoint, tmp_path, capsys) -> None:
    """The command line does what adaptation_node does: corrections from the store, the checkpoint's
    replay sample, one attempt logged; exit 0 accepted, 3 rejected, 1 error."""
    from hybridvla_ros.cli import main

    torch.set_num_threads(1)
    p = franka_params()
    path = str(tmp_path / "c.sqlite")
    with CorrectionStore(path, replay_capacity=100) as store:
        for r in simulated_corrections(p, 30):
            store.add(r)
    root = tmp_path / "adapt"
    code = main(["adapt", FRANKA, "--store", path, "--checkpoint", small_checkpoint, "--adapt-root", str(root)])
    log = json.loads(capsys.readouterr().out)
    assert code == (0 if log["accepted"] else 3)
    assert log["store"]["path"] == path and log["store"]["count"] == 30
    assert log["samples"]["replay_source"] == "file"
    assert len((root / "franka" / LOG_FILE).read_text().splitlines()) == 1
    assert main(["adapt", FRANKA, "--store", str(tmp_path / "missing.sqlite"), "--checkpoint", small_checkpoint,
                 "--adapt-root", str(root)]) == 1
    assert "no correction store" in capsys.readouterr().err


def test_coarse_to_fine_head_adaptation_runs_and_decides(small_checkpoint, tmp_path) -> None:
    torch.set_num_threads(1)
    p = leap_params(adapt_root=str(tmp_path / "adapt"), steps=60)
    assert p.head_type == "coarse_to_fine"
    result = adapt(p, small_checkpoint, sim_corrections(p, 30), checkpoint_replay(small_checkpoint, "leap"))
    log = result.log
    assert set(LOG_FIELDS) <= set(log) and log["steps"] > 0
    assert 0.0 <= log["out_of_range_fraction"] <= 1.0  # the token part's bins are checked
    assert log["loss_after"]["corrections"] < log["loss_before"]["corrections"]
    written = version_dirs(tmp_path / "adapt" / "leap")
    assert (result.accepted and list(written) == [1]) or (not result.accepted and written == {})


@pytest.mark.parametrize("changes, message", [
    ({"replay_fraction": 1.5}, "adaptation.replay_fraction"),
    ({"min_corrections": 50, "max_corrections": 10}, "adaptation.max_corrections"),
    ({"adapt_root": " "}, "adaptation.adapt_root"),
    ({"steps": "many"}, "adaptation.steps"),
])
def test_broken_adaptation_parameters_name_the_parameter(changes, message) -> None:
    with pytest.raises(ParameterError, match=message):
        franka_params(**changes)


@pytest.mark.parametrize("sizes", [(9, 1), (1, 9), (5, 5), (8, 2), (2, 8), (3, 3, 3), (20, 1, 1)])
@pytest.mark.parametrize("seed", range(8))
def test_every_split_of_two_or_more_episodes_holds_one_out_and_trains_on_one(sizes, seed) -> None:
    # Found by issue 16: two episodes of 9 + 1, 5 + 5 or 8 + 2 corrections could give an empty
    # held-out split, and adaptation then failed with "cannot reshape array of size 0".
    episode = np.concatenate([np.full(n, k) for k, n in enumerate(sizes)])
    stamps = np.arange(len(episode), dtype=np.float64)
    train, held = holdout_corrections(episode, stamps, 0.2, seed)
    assert len(held) > 0 and len(train) > 0
    assert sorted(np.concatenate([train, held]).tolist()) == list(range(len(episode)))
    assert not set(episode[train]) & set(episode[held])  # whole episodes
