"""Recorded episodes on disk (hybridvla_ros.core.recording): whole or not at all, never overwritten."""
from __future__ import annotations

import os

import numpy as np
import pytest

from hybridvla_ros.core.recording import (
    EpisodeWriter,
    RecordingError,
    RecordingLayout,
    finished_episodes,
    read_episode,
)

LAYOUT = RecordingLayout("franka", 50, ("j1", "j2"), ("j1", "j2", "suction_cup"), ("front",))


def frame(k: int, shape: tuple[int, int] = (6, 8)) -> tuple[dict, np.ndarray, np.ndarray]:
    image = np.full((*shape, 3), k % 256, np.uint8)
    return {"front": image}, np.array([0.1 * k, -0.1 * k, float(k % 2)]), np.array([0.1 * k + 0.01, 0.5])


def record(writer: EpisodeWriter, n: int, success: bool = True, task: str = "stack") -> None:
    writer.start()
    for k in range(n):
        images, state, action = frame(k)
        writer.add_frame(images, state, action, 1_000_000_000 + k * 20_000_000, task if k < n - 1 else "other")
    writer.finish(success)


def test_a_finished_episode_reads_back_frame_for_frame(tmp_path) -> None:
    w = EpisodeWriter(tmp_path, LAYOUT, min_free_mb=0)
    record(w, 5, success=True)
    record(w, 3, success=False)
    paths = finished_episodes(tmp_path)
    assert [p.name for p in paths] == ["episode_000000", "episode_000001"]
    ep = read_episode(paths[0])
    assert len(ep) == 5 and ep.success and ep.index == 0
    for k in range(5):
        images, state, action = frame(k)
        np.testing.assert_array_equal(ep.images["front"][k], images["front"])
        np.testing.assert_allclose(ep.state[k], state, rtol=1e-6)
        np.testing.assert_allclose(ep.action[k], action, rtol=1e-6)
    assert ep.stamp_ns.tolist() == [1_000_000_000 + k * 20_000_000 for k in range(5)]
    assert ep.task == ["stack"] * 4 + ["other"]
    assert not read_episode(paths[1]).success


def test_an_unfinished_episode_is_removed_and_indices_never_repeat(tmp_path) -> None:
    w = EpisodeWriter(tmp_path, LAYOUT, min_free_mb=0)
    record(w, 2)
    w.start()  # then the process dies (kill -9): nothing finishes the episode
    images, state, action = frame(0)
    w.add_frame(images, state, action, 1, "stack")
    assert (tmp_path / "episodes" / "episode_000001.partial").is_dir()
    again = EpisodeWriter(tmp_path, LAYOUT, min_free_mb=0)
    assert again.removed_partials == ["episode_000001.partial"]
    assert again.start() == 1  # after the highest finished one
    assert [p.name for p in finished_episodes(tmp_path)] == ["episode_000000"]


def test_frames_that_do_not_fit_are_refused_and_the_episode_goes_on(tmp_path) -> None:
    w = EpisodeWriter(tmp_path, LAYOUT, min_free_mb=0)
    w.start()
    images, state, action = frame(1)
    w.add_frame(images, state, action, 1, "t")
    with pytest.raises(RecordingError, match="differs from the episode"):
        w.add_frame(frame(2, shape=(7, 8))[0], state, action, 2, "t")
    with pytest.raises(RecordingError, match="NaN"):
        w.add_frame(images, state, np.array([np.nan, 0.0]), 3, "t")
    with pytest.raises(RecordingError, match="state"):
        w.add_frame(images, state[:2], action, 4, "t")
    with pytest.raises(RecordingError, match="cameras"):
        w.add_frame({"wrist": images["front"]}, state, action, 5, "t")
    assert w.recording and w.frames == 1
    assert len(read_episode(w.finish(True))) == 1


def test_an_empty_episode_is_not_saved(tmp_path) -> None:
    w = EpisodeWriter(tmp_path, LAYOUT, min_free_mb=0)
    w.start()
    with pytest.raises(RecordingError, match="no frames"):
        w.finish(True)
    assert finished_episodes(tmp_path) == [] and not w.recording


def test_a_full_device_loses_only_the_episode_being_written(tmp_path) -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full (Linux)")
    w = EpisodeWriter(tmp_path, LAYOUT, min_free_mb=0)
    record(w, 2)
    index = w.start()
    partial = tmp_path / "episodes" / f"episode_{index:06d}.partial"
    os.symlink("/dev/full", partial / "front.rgb")  # every write to it fails with ENOSPC, as on a full disk
    images, state, action = frame(0, shape=(100, 100))  # larger than the write buffer: written at once
    with pytest.raises(RecordingError, match="episode 1 lost.*No space left"):
        w.add_frame(images, state, action, 1, "t")
    assert not w.recording and not partial.exists()
    assert [p.name for p in finished_episodes(tmp_path)] == ["episode_000000"]
    assert w.start() == 2  # the recorder goes on with the next episode


def test_too_little_free_space_or_an_unwritable_root_is_a_clear_error(tmp_path) -> None:
    w = EpisodeWriter(tmp_path, LAYOUT, min_free_mb=1e9)
    with pytest.raises(RecordingError, match="MiB free"):
        w.start()
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(RecordingError, match="cannot record under"):
        EpisodeWriter(blocker, LAYOUT)


def test_a_layout_needs_plain_camera_names_and_an_integer_rate() -> None:
    with pytest.raises(RecordingError, match="plain names"):
        RecordingLayout("franka", 50, ("j1",), ("j1",), ("front/left",))
    with pytest.raises(RecordingError, match="fps"):
        RecordingLayout("franka", 0, ("j1",), ("j1",), ("front",))


def test_the_recorder_parameters_are_checked() -> None:
    from hybridvla_ros.params import ParameterError, from_params, load_node_params
    from hybridvla_ros.params.config_files import default_config_dir
    from hybridvla_ros.params.demo_recorder import DemoRecorderParams

    def load(robot: str, **change: object) -> DemoRecorderParams:
        values = load_node_params(os.path.join(default_config_dir(), f"{robot}.yaml"), "demo_recorder")
        return from_params(DemoRecorderParams, {**values, **change}, "demo_recorder")

    # franka.yaml names its cameras for every node (the /** section): the exterior one stamps, the wrist one rides
    assert load("franka").cameras == {"exterior": "camera/color/image_raw", "wrist": "wrist_camera/color/image_raw"}
    p = load("franka", camera_name="front", extra_cameras=["wrist=wrist_camera/image_raw"])
    assert p.cameras == {"front": "camera/color/image_raw", "wrist": "wrist_camera/image_raw"}
    assert list(load("aloha").cameras) == ["cam_high", "cam_low", "cam_left_wrist", "cam_right_wrist"]
    assert p.resolved_action_source == "command" and p.fps == 50
    assert load("hello").resolved_action_source == "action_command"  # its controller takes a Twist
    for change, why in [({"extra_cameras": ["wrist"]}, "name=topic"), ({"extra_cameras": ["exterior=x"]}, "unique"),
                        ({"extra_cameras": ["top=camera/color/image_raw"]}, "its own topic"),
                        ({"extra_cameras": ["wr/ist=x"]}, "plain name"), ({"control_rate_hz": 29.97}, "whole number"),
                        ({"camera_name": "front camera"}, "plain name")]:
        with pytest.raises(ParameterError, match=why):
            load("franka", **change)
    with pytest.raises(ParameterError, match="Twist"):
        load("hello", action_source="command")


def test_check_config_takes_the_recorders_section_and_catches_its_typos(tmp_path, capsys) -> None:
    from hybridvla_ros.cli import main
    from hybridvla_ros.params.config_files import default_config_dir

    text = open(os.path.join(default_config_dir(), "franka.yaml"), encoding="utf-8").read()
    good = tmp_path / "franka.yaml"
    good.write_text(text + '\ndemo_recorder:\n  ros__parameters:\n    extra_cameras: ["wrist=wrist/image_raw"]\n')
    assert main(["check-config", str(good)]) == 0
    bad = tmp_path / "typo.yaml"
    bad.write_text(text + "\ndemo_recorder:\n  ros__parameters:\n    extra_camera: []\n")
    assert main(["check-config", str(bad)]) == 2
    assert "demo_recorder.extra_camera: unknown parameter" in capsys.readouterr().err
