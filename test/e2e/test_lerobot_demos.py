"""Our demonstrations as a LeRobotDataset v3 and ``hybridvla train --dataset`` on one (issue 15, items 2 and 4).

The scripted expert's demonstrations on the kinematic Franka (real simulator, real recording) go through the
real CLI: ``hybridvla export-demos`` writes them with LeRobot's own code in .venv-lerobot; LeRobot's own
reader brings them back (``lerobot_demos read``) and the mapping onto the embodiment rebuilds the very
demonstration set that was recorded (PNG images are lossless); ``hybridvla train --dataset`` trains a
checkpoint from the dataset alone and says where its data came from. A dataset that does not fit the
parameter file (another control rate) and a directory that is no dataset are one-line errors before training.
Without .venv-lerobot the tests skip, except in CI (see test_lerobot_sidecar.py).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_lerobot_sidecar import _lerobot_python

from hybridvla_ros.model.checkpoint import WEIGHTS_FILE
from hybridvla_ros.model.demo_data import load_embodiment
from hybridvla_ros.model.lerobot_data import demos_from_frames, read_lerobot_frames
from hybridvla_ros.model.train import TRAIN_LOG
from hybridvla_ros.sim.demos import record_demonstrations, save_demonstrations

pytestmark = [pytest.mark.e2e, pytest.mark.lerobot]

ROOT = Path(__file__).resolve().parents[2]
EPISODES, STEPS, IMAGE = 3, 20, 32


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HYBRIDVLA_LEROBOT_PYTHON=str(_lerobot_python()))
    return subprocess.run([sys.executable, "-m", "hybridvla_ros.cli", *args], capture_output=True, text=True,
                          cwd=str(ROOT), env=env, timeout=900)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, Path]:
    tmp = tmp_path_factory.mktemp("lerobot_demos")
    params = load_embodiment(ROOT / "config", "franka", physics="kinematic")
    demos = record_demonstrations(params, EPISODES, STEPS, image_size=IMAGE, seed=3)
    path = tmp / "franka_demos.npz"
    save_demonstrations(demos, str(path))
    out = tmp / "dataset"
    done = _cli("export-demos", "--demos", str(path), "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"wrote {EPISODES * STEPS} frames in {EPISODES} episodes" in done.stdout, done.stdout
    return demos, out, tmp


def test_exported_demonstrations_read_back_as_the_same_demonstration_set(exported: tuple[dict, Path, Path]) -> None:
    demos, out, _ = exported
    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["robot_type"] == "franka" and info["fps"] == 50
    assert info["features"]["action"]["names"] == list(load_embodiment(ROOT / "config", "franka").joint_names)
    frames = read_lerobot_frames(str(out), IMAGE, python=str(_lerobot_python()))
    back = demos_from_frames(frames, load_embodiment(ROOT / "config", "franka"))
    assert back["instruction"] == demos["instruction"]
    np.testing.assert_array_equal(back["images"], demos["images"])
    np.testing.assert_array_equal(back["episode"], demos["episode"])
    for key in ("proprio", "state", "actions"):
        np.testing.assert_array_equal(back[key], np.asarray(demos[key], dtype=np.float32), err_msg=key)


@pytest.fixture(scope="module")
def trained(exported: tuple[dict, Path, Path]) -> Path:
    """``hybridvla train --dataset`` on the exported demonstrations: the checkpoint directory."""
    _, out, tmp = exported
    ckpt = tmp / "ckpt"
    done = _cli("train", "--embodiments", "franka", "--dataset", str(out), "--physics", "kinematic",
                "--train-steps", "10", "--batch-size", "16", "--image-size", str(IMAGE),
                "--instruction-encoder", "hash-3gram", "--out", str(ckpt), "--quiet")
    assert done.returncode == 0, done.stderr[-3000:]
    return ckpt


def test_train_on_a_lerobot_dataset(exported: tuple[dict, Path, Path], trained: Path) -> None:
    _, out, _ = exported
    ckpt = trained
    log = json.loads((ckpt / TRAIN_LOG).read_text())
    assert log["data"]["dataset"] == str(out) and log["data"]["camera"] == "front"
    assert log["data"]["frames"] == EPISODES * STEPS and log["data"]["episodes"] == EPISODES
    assert log["expert"] == {"franka": None}  # a user's dataset says nothing of a scripted expert
    assert (ckpt / WEIGHTS_FILE).is_file()


def test_adaptation_replays_a_lerobot_dataset(exported: tuple[dict, Path, Path], trained: Path) -> None:
    """``hybridvla adapt --replay-dataset DIR`` (adaptation.replay_dataset): the old skill replayed and checked
    on held-out episodes comes from the LeRobotDataset, read by LeRobot's code; an accepted version carries it."""
    from hybridvla_ros.core.correction_store import CorrectionStore
    from hybridvla_ros.params import from_params, load_node_params
    from hybridvla_ros.params.adaptation import AdaptationParams
    from hybridvla_ros.sim.corrections import simulated_corrections

    _, out, tmp = exported
    franka = str(ROOT / "config" / "franka.yaml")
    p = from_params(AdaptationParams, load_node_params(franka, "adaptation"), "adaptation")
    store = str(tmp / "corrections.sqlite")
    with CorrectionStore(store, replay_capacity=100) as s:
        for r in simulated_corrections(p, 30):
            s.add(r)
    root = tmp / "adapt"
    done = _cli("adapt", franka, "--store", store, "--checkpoint", str(trained), "--adapt-root", str(root),
                "--replay-dataset", str(out))
    assert done.returncode in (0, 3), done.stderr[-3000:]
    log = json.loads(done.stdout)
    samples = log["samples"]
    assert samples["replay_source"] == "dataset"
    assert samples["replay"] + samples["replay_heldout"] == EPISODES * STEPS  # all of it (under 2000 examples)
    if log["accepted"]:
        assert (Path(log["checkpoint"]) / "replay_franka.npz").is_file()
    done = _cli("adapt", franka, "--store", store, "--checkpoint", str(trained), "--adapt-root", str(root),
                "--replay-dataset", str(tmp))
    assert done.returncode == 1 and "replay: the LeRobotDataset" in done.stderr and "no LeRobotDataset at" in \
        done.stderr, done.stderr


def test_a_dataset_that_does_not_fit_is_refused_before_training(exported: tuple[dict, Path, Path]) -> None:
    _, out, tmp = exported
    config = tmp / "config_25hz"
    shutil.copytree(ROOT / "config", config)
    text = (config / "franka.yaml").read_text()
    (config / "franka.yaml").write_text(text.replace("control_rate_hz: 50.0", "control_rate_hz: 25.0"))
    done = _cli("train", "--embodiments", "franka", "--dataset", str(out), "--config-dir", str(config),
                "--out", str(tmp / "never"), "--quiet")
    assert done.returncode == 1
    assert "recorded at 50 fps; franka's control rate is 25 Hz" in done.stderr, done.stderr
    assert not (tmp / "never").exists()
    done = _cli("train", "--embodiments", "franka", "--dataset", str(tmp), "--out", str(tmp / "never"), "--quiet")
    assert done.returncode == 1 and "no LeRobotDataset at" in done.stderr and "meta/info.json" in done.stderr, \
        done.stderr


def test_a_recording_from_two_cameras_exports_each_camera(tmp_path: Path) -> None:
    """``hybridvla export-demos --cameras exterior wrist``: the MuJoCo Franka's two views of each step (hybridvla
    train --cameras) become observation.images.exterior and .wrist, read back by LeRobot's code as recorded."""
    params = load_embodiment(ROOT / "config", "franka", physics="mujoco")
    demos = record_demonstrations(params, 2, 10, image_size=IMAGE, seed=5, cameras=("exterior", "wrist"))
    path = tmp_path / "two_cameras.npz"
    save_demonstrations(demos, str(path))
    done = _cli("export-demos", "--demos", str(path), "--out", str(tmp_path / "none"))
    assert done.returncode == 1 and "2 camera views per step" in done.stderr and "--cameras" in done.stderr, \
        done.stderr
    assert not (tmp_path / "none").exists()
    out = tmp_path / "dataset"
    done = _cli("export-demos", "--demos", str(path), "--out", str(out), "--cameras", "exterior", "wrist")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "cameras ['exterior', 'wrist']" in done.stdout, done.stdout
    info = json.loads((out / "meta" / "info.json").read_text())
    assert {"observation.images.exterior", "observation.images.wrist"} <= set(info["features"])
    frames = read_lerobot_frames(str(out), IMAGE, python=str(_lerobot_python()), cameras=["exterior", "wrist"])
    back = demos_from_frames(frames, params)
    assert back["images"].shape == demos["images"].shape == (20, 2, IMAGE, IMAGE, 3)
    np.testing.assert_array_equal(back["images"], demos["images"])  # PNG: lossless, each view in its place
    assert not np.array_equal(back["images"][:, 0], back["images"][:, 1])
