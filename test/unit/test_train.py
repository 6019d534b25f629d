"""`hybridvla train`: demonstrations from the simulators' experts -> a checkpoint, a loss plot, a log."""
from __future__ import annotations

import json
import os

from hybridvla_ros.cli_model import train_main as main
from hybridvla_ros.launch_description import default_config_dir
from hybridvla_ros.model.runner import PolicyRunner

# Episodes long enough for every expert to arrive (the MuJoCo Franka's pick and place, the
# Stretch base's 1.5 m drive): training refuses demonstrations that mostly fail.
EXPERT_STEPS = 200


def test_tiny_training_run_writes_checkpoint_plot_and_log(tmp_path) -> None:
    out = tmp_path / "ckpt"
    code = main(["--embodiments", "franka", "hello", "--episodes", "3", "--steps-per-episode", str(EXPERT_STEPS),
                 "--train-steps", "40", "--batch-size", "16", "--out", str(out), "--threads", "1", "--quiet",
                 "--config-dir", default_config_dir()])
    assert code == 0
    files = set(os.listdir(out))
    assert {"model.safetensors", "config.json", "loss.png", "train_log.json"} <= files
    with open(out / "train_log.json", encoding="utf-8") as f:
        log = json.load(f)
    assert set(log["heldout"]) == {"franka", "hello"}
    # Each expert's own success in its demonstrations is in the log (and the checkpoint's summary).
    assert log["settings"]["min_expert_success"] == 0.5
    for name, tol in (("franka", 0.02), ("hello", 0.02)):
        expert = log["expert"][name]
        assert expert["episodes"] == 3 and expert["successes"] == 3 and expert["success_rate"] == 1.0
        assert 0.0 <= expert["final_error_m_median"] <= expert["final_error_m_max"] <= tol == expert["tolerance_m"]
    config = json.loads((out / "config.json").read_text())
    assert "expert" in json.dumps(config)
    # The checkpoint serves both robots, with each robot's own head.
    assert PolicyRunner.load(str(out), "franka").head_type == "coarse_to_fine"  # default: both heads
    assert PolicyRunner.load(str(out), "franka", mode="token").head_type == "token"
    assert PolicyRunner.load(str(out), "hello").action_dim == 3


def test_bad_arguments_exit_with_a_message(tmp_path, capsys) -> None:
    assert main(["--episodes", "0", "--out", str(tmp_path / "x")]) == 2
    assert "--episodes must be >= 1" in capsys.readouterr().err


def test_dagger_rounds_add_the_states_the_policy_visits_and_log_its_closed_loop_success(tmp_path) -> None:
    out = tmp_path / "ckpt"
    code = main(["--embodiments", "hello", "--physics", "kinematic", "--episodes", "3",
                 "--steps-per-episode", str(EXPERT_STEPS), "--train-steps", "20", "--batch-size", "8", "--out",
                 str(out), "--threads", "1", "--quiet", "--config-dir", default_config_dir(), "--dagger-rounds", "1",
                 "--dagger-episodes", "2", "--dagger-train-steps", "10"])
    assert code == 0
    with open(out / "train_log.json", encoding="utf-8") as f:
        log = json.load(f)
    curve = log["dagger"]
    assert [p["round"] for p in curve] == [0, 1]  # the policy that collected round 0, and the final one
    assert all(0.0 <= p["hello"]["success_rate"] <= 1.0 and p["hello"]["states"] > 0 for p in curve)
    # the checkpoint is the round with the best closed-loop success (then lower final error, then later)
    kept = max(range(2), key=lambda r: (curve[r]["hello"]["success_rate"], -curve[r]["hello"]["final_error_m_median"],
                                        r))
    assert log["dagger_kept_round"] == kept
    if kept == 1:  # the round's states joined the training data (the demonstrations' last episode stays held out)
        assert log["examples"]["hello"]["train"] == 2 * EXPERT_STEPS + curve[0]["hello"]["states"]
        assert len(log["steps"]["loss"]) == 20 + 10  # one loss curve across the rounds
    else:  # the policy trained on the demonstrations alone, before any DAgger state
        assert log["examples"]["hello"]["train"] == 2 * EXPERT_STEPS
        assert len(log["steps"]["loss"]) == 20
    assert log["examples"]["hello"]["heldout"] == EXPERT_STEPS
    assert PolicyRunner.load(str(out), "hello").action_dim == 3


def test_dagger_keeps_the_last_round_when_asked(tmp_path) -> None:
    out = tmp_path / "ckpt"
    assert main(["--embodiments", "hello", "--physics", "kinematic", "--episodes", "3",
                 "--steps-per-episode", str(EXPERT_STEPS), "--train-steps", "20", "--batch-size", "8", "--out",
                 str(out), "--threads", "1", "--quiet", "--config-dir", default_config_dir(), "--dagger-rounds", "1",
                 "--dagger-episodes", "2", "--dagger-train-steps", "10", "--dagger-keep", "last"]) == 0
    log = json.loads((out / "train_log.json").read_text())
    assert log["dagger_kept_round"] == 1
    assert log["examples"]["hello"]["train"] == 2 * EXPERT_STEPS + log["dagger"][0]["hello"]["states"]


def test_negative_dagger_rounds_are_refused(tmp_path, capsys) -> None:
    assert main(["--dagger-rounds", "-1", "--out", str(tmp_path / "x")]) == 2
    assert "--dagger-rounds must be >= 0" in capsys.readouterr().err


def test_the_replay_sample_keeps_up_to_2000_examples_with_their_episodes_and_state(tmp_path) -> None:
    """Adaptation replays this sample to keep the old skill; 400 examples let the head drift (README, study 1)."""
    import numpy as np

    from hybridvla_ros.model.replay import REPLAY_EXAMPLES, save_replay_sample
    from hybridvla_ros.sim.demos import load_demonstrations

    assert REPLAY_EXAMPLES == 2000
    n, d, t = 2500, 7, 4
    demos = {"images": np.zeros((n, 8, 8, 3), np.uint8),
             "proprio": np.arange(n * d, dtype=np.float32).reshape(n, d),
             "actions": np.zeros((n, t, d), np.float32), "episode": (np.arange(n) // 100).astype(np.int32),
             "state": (np.arange(n) % 2).astype(np.float32)[:, None], "embodiment": "franka",
             "instruction": "place the cube", "control_period_s": 0.02}
    assert save_replay_sample(demos, tmp_path / "big.npz") == REPLAY_EXAMPLES
    sample = load_demonstrations(str(tmp_path / "big.npz"))
    rows = (sample["proprio"][:, 0] / d).astype(int)  # which demonstration step each example is
    assert len(rows) == REPLAY_EXAMPLES == len(set(rows)) and np.all(np.diff(rows) > 0)  # distinct, in order
    np.testing.assert_array_equal(sample["episode"], rows // 100)
    np.testing.assert_array_equal(sample["state"][:, 0], rows % 2)
    small = {k: (v[:300] if isinstance(v, np.ndarray) else v) for k, v in demos.items()}
    assert save_replay_sample(small, tmp_path / "small.npz") == 300  # fewer than the cap: all of them


# ---------------------------------------------------------------- the experts' own success


def test_training_refuses_demonstrations_whose_expert_mostly_fails(tmp_path, capsys) -> None:
    """The Stretch base needs up to 9 s to reach its target: 60-step (3 s) episodes never get there
    (issue 16: every Hello model had learned from such data). The CLI stops before training
    with exit status 1 and a message naming the robot and its expert's success rate."""
    out = tmp_path / "ckpt"
    code = main(["--embodiments", "franka", "hello", "--physics", "kinematic", "--episodes", "2",
                 "--steps-per-episode", "60", "--train-steps", "5", "--batch-size", "4", "--out", str(out),
                 "--threads", "1", "--quiet", "--config-dir", default_config_dir()])
    err = capsys.readouterr().err
    assert code == 1
    assert "hybridvla train: error:" in err and "'hello'" in err and "0/2 episodes" in err, err
    assert "success rate 0.00" in err and "min_expert_success 0.50" in err and "franka" not in err, err
    assert not out.exists()  # nothing was trained or written


def _tiny_demos(successes: list[bool] | None):
    """Two kinematic franka demonstrations of 5 steps (the expert is still on its way) with the
    expert's outcome replaced by ``successes`` (None: recorded without it, as DAgger states are)."""
    import numpy as np

    from hybridvla_ros.model.demo_data import load_embodiment
    from hybridvla_ros.model.policy import EmbodimentSpec
    from hybridvla_ros.sim.demos import DEMO_EXPERT_KEYS, DEMO_EXPERT_SUCCESS, record_demonstrations

    params = load_embodiment(default_config_dir(), "franka", "kinematic")
    demos = record_demonstrations(params, len(successes or [0, 0]), 5, image_size=16, seed=3)
    assert not demos[DEMO_EXPERT_SUCCESS].any()  # 5 steps: not there yet, and the recording says so
    if successes is None:
        demos = {k: v for k, v in demos.items() if k not in DEMO_EXPERT_KEYS}
    else:
        demos[DEMO_EXPERT_SUCCESS] = np.array(successes)
    return demos, EmbodimentSpec.from_params(params)


def test_train_checks_each_experts_success_rate_against_the_config() -> None:
    import pytest

    from hybridvla_ros.model.policy import PolicyConfig
    from hybridvla_ros.model.train import TrainConfig, expert_lines, train

    small = PolicyConfig(image_size=16, conv_channels=(8, 8), keypoints=0, d_model=16, num_heads=2, num_layers=1,
                         ff_dim=16, token_hidden=16, flow_hidden=16)
    demos, spec = _tiny_demos([False, False])
    with pytest.raises(ValueError, match=r"'franka'.*only 0/2 episodes \(success rate 0\.00 < min_expert_success"):
        train([demos], [spec], TrainConfig(train_steps=1, batch_size=2), policy_config=small)
    # A threshold of 0 never refuses; the log still tells the truth.
    log = train([demos], [spec], TrainConfig(train_steps=1, batch_size=2, min_expert_success=0.0),
                policy_config=small).log
    assert log["expert"]["franka"]["success_rate"] == 0.0 and log["expert"]["franka"]["episodes"] == 2
    assert "franka   expert success 0/2 (0 %)" in expert_lines(log)[0]
    # At the threshold: trains.
    demos, spec = _tiny_demos([True, False])
    log = train([demos], [spec], TrainConfig(train_steps=1, batch_size=2), policy_config=small).log
    assert log["expert"]["franka"]["successes"] == 1 and log["expert"]["franka"]["success_rate"] == 0.5
    with pytest.raises(ValueError, match="0.50 < min_expert_success 0.60"):
        train([demos], [spec], TrainConfig(train_steps=1, batch_size=2, min_expert_success=0.6), policy_config=small)
    # Demonstrations that do not say how the expert did (DAgger states, older files) are not refused.
    demos, spec = _tiny_demos(None)
    log = train([demos], [spec], TrainConfig(train_steps=1, batch_size=2), policy_config=small).log
    assert log["expert"] == {"franka": None}
    assert "not recorded" in expert_lines(log)[0]
    for bad in (-0.1, 1.5, float("nan"), True):
        with pytest.raises(ValueError, match="min_expert_success"):
            TrainConfig(min_expert_success=bad)
