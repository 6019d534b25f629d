"""The hybridvla command: config checks and the corrections export, as a user runs them."""
from __future__ import annotations

import os

import numpy as np
import yaml

from hybridvla_ros.cli import main
from hybridvla_ros.core.correction_store import CorrectionRecord, CorrectionStore
from hybridvla_ros.launch_description import default_config_dir


def test_check_config_accepts_shipped_files_and_names_a_bad_parameter(tmp_path, capsys) -> None:
    for robot in ("franka", "aloha", "hello", "leap"):
        assert main(["check-config", os.path.join(default_config_dir(), f"{robot}.yaml")]) == 0
    with open(os.path.join(default_config_dir(), "aloha.yaml"), encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    doc["handoff"]["ros__parameters"]["deadman_timeout_s"] = -1.0
    bad = tmp_path / "aloha_bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    assert main(["check-config", str(bad)]) == 2
    assert "handoff.deadman_timeout_s" in capsys.readouterr().err
    doc["handoff"]["ros__parameters"]["deadman_timeout_s"] = 0.25
    doc["/**"]["ros__parameters"]["extra_cameras"] = []  # a node given it would not start (rclpy)
    bad.write_text(yaml.safe_dump(doc))
    assert main(["check-config", str(bad)]) == 2
    assert "/**.extra_cameras: an empty list ([]) cannot be given to a ROS 2 node" in capsys.readouterr().err


def test_export_corrections_writes_an_mcap_file(tmp_path, capsys) -> None:
    store_path = str(tmp_path / "c.sqlite")
    with CorrectionStore(store_path, replay_capacity=10) as store:
        for i in range(3):
            store.add(CorrectionRecord(stamp_s=100.0 + i, embodiment="franka", instruction="reach",
                                       image=np.zeros((8, 8, 3), np.uint8), joint_positions=np.zeros(7),
                                       human_action=np.full(7, 0.1 * i)))
    out = str(tmp_path / "c.mcap")
    assert main(["export-corrections", "--store", store_path, "--out", out]) == 0
    assert "wrote 3 corrections" in capsys.readouterr().out
    assert os.path.getsize(out) > 0
    assert main(["export-corrections", "--store", str(tmp_path / "missing.sqlite"), "--out", out]) == 2


def _report(chunks: int, policy_commands: int, commands: int = 500) -> dict:
    return {"chunks": chunks, "policy_commands": policy_commands, "commands_sent": commands}


def test_run_and_demo_fail_when_the_policy_never_drove(tmp_path, monkeypatch, capsys) -> None:
    """Hold commands are not a pass: 0 chunks, or chunks but no command from them, exit 1 with a sentence."""
    from hybridvla_ros import cli

    reports: list = []
    calls: list[dict] = []

    def fake_run_graph(*args, **kwargs):
        calls.append(kwargs)
        return reports[-1]

    monkeypatch.setattr(cli, "run_graph", fake_run_graph)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "model.safetensors").write_bytes(b"")
    for command in (["run", "--embodiment", "aloha", "--duration", "30", "--ready-timeout", "45"],
                    ["demo", "--checkpoint", str(ckpt), "--json", "", "--log-dir", ""]):
        reports.append(_report(0, 0))
        assert main(command) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert err == ["error: the policy never drove: no action chunk was served (500 commands sent, all holds); "
                       "the inference node's log says why"]
        reports.append(_report(12, 0))
        assert main(command) == 1
        assert "12 action chunks were served, but none of the 500 commands came from them" in capsys.readouterr().err
        reports.append(_report(12, 300))
        assert main(command) == 0
        assert capsys.readouterr().err == ""
        reports.append(None)  # interrupted before the graph was heard
        assert main(command) == 1
        assert "no report" in capsys.readouterr().err
    assert calls[0]["ready_timeout_s"] == 45.0


def test_the_commands_that_need_lerobot_say_how_to_make_its_environment(tmp_path, capsys, monkeypatch) -> None:
    """Without .venv-lerobot each command that runs LeRobot's code exits 2 with the command to make it, and
    runs nothing (record keeps its episodes for --convert-only)."""
    from hybridvla_ros.record import main as record_main

    monkeypatch.setenv("HYBRIDVLA_LEROBOT_PYTHON", str(tmp_path / "no-python"))
    store = str(tmp_path / "c.sqlite")
    CorrectionStore(store, 1).close()
    for prog, run in [
        ("hybridvla export-demos", lambda: main(["export-demos", "--demos", "x.npz", "--out", str(tmp_path / "d")])),
        ("hybridvla export-corrections", lambda: main(["export-corrections", "--store", store, "--format", "lerobot",
                                                        "--out", str(tmp_path / "e")])),
        ("hybridvla serve-lerobot", lambda: main(["serve-lerobot", "--policy-dir", str(tmp_path)])),
        ("hybridvla record", lambda: record_main(["--embodiment", "franka", "--root", str(tmp_path / "r"),
                                                  "--convert-only"])),
    ]:
        assert run() == 2, prog
        err = capsys.readouterr().err
        assert err.startswith(f"{prog}: error: {tmp_path / 'no-python'} is missing: run `bash "
                              "scripts/setup_lerobot.sh` to make the LeRobot environment"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.sqlite"]


def test_the_commands_find_the_robots_files_from_any_directory(tmp_path, monkeypatch) -> None:
    """``hybridvla train``, ``export-demos`` and the model benchmarks read <embodiment>.yaml from the package's
    config/ by default, not from a ``config`` folder under wherever the command is run (which said "no such
    file" outside the repository)."""
    from hybridvla_ros import bench_remote
    from hybridvla_ros.cli import build_parser
    from hybridvla_ros.cli_model import build_train_parser
    from hybridvla_ros.model import bench_model, bench_precision

    monkeypatch.chdir(tmp_path)
    for config_dir in (build_train_parser().parse_args([]).config_dir,
                       build_parser().parse_args(["export-demos", "--demos", "d.npz", "--out", "o"]).config_dir,
                       bench_model.build_parser().parse_args([]).config_dir,
                       bench_precision.build_parser().parse_args([]).config_dir,
                       bench_remote.build_parser().parse_args([]).config_dir):
        assert config_dir == default_config_dir()
        assert os.path.isfile(os.path.join(config_dir, "franka.yaml"))
