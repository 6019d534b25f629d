"""A LeRobotDataset's frames mapped onto an embodiment (hybridvla_ros.model.lerobot_data.demos_from_frames):
joints picked by feature names, chunks within episodes, and a clear error for every mismatch before training.
The frames are what ``lerobot_demos read`` hands over; reading a real dataset with LeRobot's code is the e2e
test test/e2e/test_lerobot_demos.py."""
from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from hybridvla_ros.model.demo_data import check_demos, load_embodiment
from hybridvla_ros.model.lerobot_data import demos_from_frames, feature_names
from hybridvla_ros.model.policy import EmbodimentSpec

FRANKA = load_embodiment("config", "franka")
JOINTS = list(FRANKA.joint_names)  # 7 arm joints; state joint: suction_cup
TASK = "put the cube on the red target"


def _frames(episodes: tuple[int, ...] = (5, 3), *, action_names: Any = "named", state_names: Any = "named",
            fps: int = 50, tasks: list[str] | None = None, shuffle: bool = True) -> dict[str, Any]:
    """Frames of len(episodes) episodes; action value = 100 * episode + frame + joint / 10 (joint = index in
    JOINTS), the state's joints likewise + 0.5, suction_cup = frame parity. With names, the dataset's columns
    are in another order than the file's, with an extra one."""
    n = sum(episodes)
    ep = np.concatenate([np.full(k, e) for e, k in enumerate(episodes)])
    fr = np.concatenate([np.arange(k) for k in episodes])
    base = 100.0 * ep + fr  # (N,)
    act_cols = ["gripper_extra", *JOINTS[::-1]]
    action = np.stack([np.zeros(n) if c == "gripper_extra" else base + JOINTS.index(c) / 10 for c in act_cols], 1)
    state_cols = [*JOINTS[::-1], "suction_cup", "base_x"]
    state = np.stack([(fr % 2).astype(float) if c == "suction_cup" else np.zeros(n) if c == "base_x"
                      else base + JOINTS.index(c) / 10 + 0.5 for c in state_cols], 1)
    if action_names is None:
        action = action[:, [act_cols.index(j) for j in JOINTS]]
    if state_names is None:
        state = state[:, [state_cols.index(j) for j in [*JOINTS, "suction_cup"]]]
    image = (np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, 8, 8, 3), np.uint8))
    features = {
        "action": {"dtype": "float32", "shape": [action.shape[1]],
                   "names": act_cols if action_names == "named" else action_names},
        "observation.state": {"dtype": "float32", "shape": [state.shape[1]],
                              "names": state_cols if state_names == "named" else state_names},
        "observation.images.front": {"dtype": "image", "shape": [8, 8, 3], "names": ["height", "width", "channels"]},
    }
    order = np.random.default_rng(0).permutation(n) if shuffle else np.arange(n)
    meta = {"fps": fps, "robot_type": "franka", "camera": "front", "cameras": ["front"], "features": features}
    return {"image": image[order], "state": state[order], "action": action[order], "episode_index": ep[order],
            "frame_index": fr[order], "task": np.array(tasks if tasks else [TASK] * n)[order],
            "meta": json.dumps(meta)}


def test_joints_are_picked_by_name_and_chunks_stay_within_episodes() -> None:
    demos = demos_from_frames(_frames((5, 3)), FRANKA)
    check_demos(demos, EmbodimentSpec.from_params(FRANKA))  # what training checks
    T = FRANKA.chunk_size
    assert demos["episode"].tolist() == [0] * 5 + [1] * 3
    assert demos["instruction"] == TASK and demos["embodiment"] == "franka"
    assert demos["control_period_s"] == pytest.approx(0.02)
    joint = np.arange(7) / 10
    for n, (e, f) in enumerate([(0, k) for k in range(5)] + [(1, k) for k in range(3)]):
        np.testing.assert_allclose(demos["proprio"][n], 100 * e + f + joint + 0.5, atol=1e-4)
        assert demos["state"][n].tolist() == [f % 2]
        last = 4 if e == 0 else 2
        for k in (0, 1, T - 1):  # k steps ahead, padded with the episode's last action
            np.testing.assert_allclose(demos["actions"][n, k], 100 * e + min(f + k, last) + joint, atol=1e-4)
        assert int(demos["images"][n, 0, 0, 0]) == n  # images follow their frames through the sort


def test_unnamed_features_are_taken_in_the_files_order_when_the_width_fits() -> None:
    named = demos_from_frames(_frames(action_names="named", state_names="named"), FRANKA)
    unnamed = demos_from_frames(_frames(action_names=None, state_names=None), FRANKA)
    for key in ("proprio", "state", "actions", "images", "episode"):
        np.testing.assert_array_equal(named[key], unnamed[key])


def test_lerobots_dict_of_names_is_read() -> None:
    meta = {"features": {"action": {"names": {"motors": ["a", "b"]}}, "x": {"names": None},
                         "y": {"names": {"a": ["1"], "b": ["2"]}}}}
    assert feature_names(meta, "action") == ["a", "b"]
    assert feature_names(meta, "x") is None
    assert feature_names(meta, "y") is None  # two lists: ambiguous


@pytest.mark.parametrize("change, message", [
    (dict(fps=30), "recorded at 30 fps; franka's control rate is 50 Hz"),
    (dict(action_names=["a"] * 8), "'action' has no ['panda_joint1'"),
    (dict(state_names=[f"s{i}" for i in range(9)]), "'observation.state' has no ['panda_joint1'"),
    (dict(tasks=[TASK] * 5 + ["stack the blocks"] * 3), "holds 2 tasks"),
])
def test_a_dataset_that_does_not_fit_the_embodiment_is_refused_before_training(change: dict[str, Any],
                                                                               message: str) -> None:
    with pytest.raises(ValueError, match=None) as err:
        demos_from_frames(_frames(**change), FRANKA)
    assert message in str(err.value)


def test_an_unnamed_feature_of_the_wrong_width_is_refused() -> None:
    frames = _frames(action_names=None, state_names=None)
    frames["action"] = frames["action"][:, :6]
    with pytest.raises(ValueError, match="'action' has 6 unnamed dimensions; the embodiment needs 7"):
        demos_from_frames(frames, FRANKA)


def test_task_picks_its_episodes() -> None:
    frames = _frames((5, 3), tasks=[TASK] * 5 + ["stack the blocks"] * 3, shuffle=False)
    demos = demos_from_frames(frames, FRANKA, task="stack the blocks")
    assert demos["instruction"] == "stack the blocks"
    assert demos["episode"].tolist() == [0, 0, 0]
    np.testing.assert_allclose(demos["proprio"][0, 0], 100.5, atol=1e-4)  # episode 1, frame 0, joint 0
    with pytest.raises(ValueError, match="no episode with task 'open the drawer'"):
        demos_from_frames(frames, FRANKA, task="open the drawer")


def test_successful_only_keeps_the_episodes_marked_successful() -> None:
    frames = _frames((5, 3, 4), shuffle=False)
    with pytest.raises(ValueError, match="no next.success feature"):
        demos_from_frames(frames, FRANKA, successful_only=True)
    success = np.zeros(12, dtype=bool)
    success[7] = True  # the last frame of episode 1, as hybridvla record marks a success
    demos = demos_from_frames({**frames, "success": success}, FRANKA, successful_only=True)
    assert demos["episode"].tolist() == [0, 0, 0]
    np.testing.assert_allclose(demos["proprio"][0, 0], 100.5, atol=1e-4)  # episode 1, frame 0, joint 0
    assert len(demos_from_frames({**frames, "success": success}, FRANKA)["proprio"]) == 12  # the default: all
    with pytest.raises(ValueError, match="no successful episode"):
        demos_from_frames({**frames, "success": np.zeros(12, dtype=bool)}, FRANKA, successful_only=True)


def test_nan_and_empty_datasets_are_refused() -> None:
    frames = _frames()
    frames["state"] = frames["state"].copy()
    frames["state"][3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        demos_from_frames(frames, FRANKA)
    empty = {k: (v[:0] if isinstance(v, np.ndarray) else v) for k, v in _frames().items()}
    with pytest.raises(ValueError, match="no frames"):
        demos_from_frames(empty, FRANKA)


def test_train_dataset_arguments_are_checked_before_anything_runs(capsys: pytest.CaptureFixture[str],
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Any) -> None:
    from hybridvla_ros.cli_model import train_main
    assert train_main(["--camera", "wrist", "--out", str(tmp_path / "x")]) == 2
    assert "--camera, --task and --successful-only apply to --dataset only" in capsys.readouterr().err
    assert train_main(["--dataset", str(tmp_path), "--embodiments", "franka", "aloha"]) == 2
    assert "--dataset trains one robot without DAgger" in capsys.readouterr().err
    assert train_main(["--dataset", str(tmp_path), "--embodiments", "franka", "--dagger-rounds", "1"]) == 2
    capsys.readouterr()
    monkeypatch.setenv("HYBRIDVLA_LEROBOT_PYTHON", str(tmp_path / "no-such-python"))
    assert train_main(["--dataset", str(tmp_path), "--embodiments", "franka", "--quiet",
                       "--out", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert "no-such-python is missing: run `bash scripts/setup_lerobot.sh`" in err
    assert not (tmp_path / "x").exists()


def test_frames_of_several_cameras_stay_together_in_order() -> None:
    """``read --cameras exterior wrist`` hands (N, K, S, S, 3) images over: each frame keeps its views, in order."""
    import dataclasses

    frames = _frames((5, 3))
    views = np.stack([frames["image"], 255 - frames["image"]], 1)  # (N, 2, 8, 8, 3): the second view differs
    demos = demos_from_frames({**frames, "image": views}, FRANKA)
    assert demos["images"].shape == (8, 2, 8, 8, 3)
    np.testing.assert_array_equal(demos["images"][:, 1], 255 - demos["images"][:, 0])
    order = np.lexsort((frames["frame_index"], frames["episode_index"]))
    np.testing.assert_array_equal(demos["images"][:, 0], frames["image"][order])
    check_demos(demos, dataclasses.replace(EmbodimentSpec.from_params(FRANKA), cameras=("exterior", "wrist")))


def test_the_installed_command_finds_the_lerobot_environment_of_its_repository(tmp_path) -> None:
    """colcon's symlinked build puts the package at build/hybridvla_ros/hybridvla_ros -> <repo>/hybridvla_ros, and
    the installed ``hybridvla`` command imports it from there: the LeRobot environment is still the repository's
    (it was looked for beside the build directory, so ``hybridvla export-demos`` said it was missing)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "hybridvla_ros").symlink_to(repo / "hybridvla_ros")
    env = {k: v for k, v in os.environ.items() if k != "HYBRIDVLA_LEROBOT_PYTHON"}
    env["PYTHONPATH"] = str(tmp_path / "build")
    done = subprocess.run([sys.executable, "-c", "import hybridvla_ros.model.lerobot_data as m; "
                           "print(m.__file__); print(m.lerobot_python())"],
                          capture_output=True, text=True, cwd=str(tmp_path), env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    imported_from, python = done.stdout.split()
    assert imported_from.startswith(str(tmp_path / "build"))  # the package as the command imports it
    assert python == str(repo / ".venv-lerobot" / "bin" / "python")
