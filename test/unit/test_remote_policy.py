"""policies/remote.py against real server processes: the mapping, every fault a hold with a clear error,
backoff while the server is down, recovery, and the round trip through ``hybridvla serve``."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator

import cv2
import numpy as np
import pytest
import remote_fault_server as fault  # test/remote_fault_server.py (test/ is on sys.path: its conftest)

from hybridvla_ros.launch_description import default_config_dir
from hybridvla_ros.params import from_params, load_node_params
from hybridvla_ros.params.base import ParameterError
from hybridvla_ros.params.inference import InferenceParams
from hybridvla_ros.params.remote_policy import RemotePolicyParams
from hybridvla_ros.policies.base import PolicyObservation
from hybridvla_ros.policies.remote import RemoteMapping, RemotePolicy, RemotePolicyError, resize_with_pad

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FaultServer, _free_port = fault.FaultServer, fault.free_port
FRANKA = os.path.join(default_config_dir(), "franka.yaml")


def _robot() -> InferenceParams:
    return from_params(InferenceParams, load_node_params(FRANKA, "inference"))


def _obs(robot: InferenceParams, stamp_s: float = 100.0, q: float = 0.1, size: tuple[int, int] = (48, 64),
         seed: int = 0) -> PolicyObservation:
    image = np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)
    return PolicyObservation(stamp_s=stamp_s, joint_names=robot.joint_names,
                             joint_positions=np.full(robot.action_dim, q) + np.arange(robot.action_dim) * 0.01,
                             task="pick the cube", images={robot.camera_name: image}, state_joints=robot.state_joints,
                             state=np.ones(len(robot.state_joints)))


@pytest.fixture
def fault_server(tmp_path) -> Iterator[FaultServer]:
    robot = _robot()
    server = FaultServer(tmp_path, robot.chunk_size + 2, robot.action_dim + 1)  # one padding column
    server.start()
    try:
        yield server
    finally:
        server.kill()


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _policy(url: str, clock: FakeClock | None = None, **remote: object) -> RemotePolicy:
    robot = _robot()
    defaults: dict[str, object] = {"remote_url": url, "remote_image_size": (), "remote_deadline_s": 5.0,
                                   "remote_action_joints": (*robot.joint_names, "_"), "remote_backoff_s": (1.0, 4.0)}
    params = RemotePolicyParams(**{**defaults, **remote})  # type: ignore[arg-type]
    return RemotePolicy(RemoteMapping(robot, params), params, clock=clock or FakeClock())


# --- the mapping, without a server
def test_request_follows_the_mapping() -> None:
    robot = _robot()
    remote = RemotePolicyParams(remote_image_keys=("cam/high",), remote_image_size=(32, 32), remote_prompt_key="task",
                                remote_state_layout=("suction_cup", *reversed(robot.joint_names)),
                                remote_scaled_joints=("suction_cup",), remote_joint_scales=(2.0,))
    mapping = RemoteMapping(robot, remote)
    obs = _obs(robot, size=(48, 64))
    req = mapping.request(obs)
    assert set(req) == {"cam/high", "observation/state", "task", "embodiment"} and req["task"] == "pick the cube"
    assert req["embodiment"] == "franka" and "embodiment" not in RemoteMapping(
        robot, RemotePolicyParams(remote_embodiment_key="")).request(obs)
    assert req["cam/high"].shape == (32, 32, 3) and req["cam/high"].dtype == np.uint8
    np.testing.assert_allclose(req["observation/state"], [0.5, *obs.joint_positions[::-1]])
    assert mapping.state_joints == ("suction_cup",)


def test_resize_with_pad_keeps_the_aspect() -> None:
    image = np.full((40, 80, 3), 200, dtype=np.uint8)
    out = resize_with_pad(image, 20, 20)
    assert out.shape == (20, 20, 3)
    assert (out[:5] == 0).all() and (out[-5:] == 0).all() and (out[5:15] == 200).all()
    assert resize_with_pad(image, 40, 80) is image


def test_stretch_sends_the_whole_image_as_exported_demonstrations_have_it() -> None:
    """``remote_image_resize: stretch``: a policy trained on `hybridvla export-demos` data (each frame squeezed to
    a square, as our model sees it) gets its frames the same way, not letterboxed."""
    robot = _robot()
    obs = _obs(robot, size=(120, 160))
    camera = obs.image(robot.camera_name)
    stretched = RemoteMapping(robot, RemotePolicyParams(remote_image_size=(48, 48), remote_image_resize="stretch"))
    got = stretched.request(obs)["observation/image"]
    np.testing.assert_array_equal(got, cv2.resize(camera, (48, 48), interpolation=cv2.INTER_AREA))
    padded = RemoteMapping(robot, RemotePolicyParams(remote_image_size=(48, 48))).request(obs)["observation/image"]
    assert (padded[:6] == 0).all() and not (got[:6] == 0).all()  # the default pads (openpi's resize_with_pad)
    with pytest.raises(ParameterError, match="remote_image_resize"):
        from_params(RemotePolicyParams, {"remote_image_resize": "crop"})


def test_reply_maps_back_relative_scaled_reordered_and_from_the_horizon_start() -> None:
    robot = _robot()
    joints = robot.joint_names
    columns = ("_", *reversed(joints))
    remote = RemotePolicyParams(remote_action_joints=columns, remote_relative_joints=joints[:2],
                                remote_scaled_joints=(joints[6],), remote_joint_scales=(0.5,), remote_horizon_start=2,
                                remote_step_period_s=0.05)
    mapping = RemoteMapping(robot, remote)
    obs = _obs(robot)
    T = robot.chunk_size
    raw = np.arange((T + 3) * 8, dtype=np.float64).reshape(T + 3, 8)  # (T + 3, 8): padding column first, reversed
    actions, confidence = mapping.actions({"actions": raw}, obs)
    assert actions.shape == (T, 7) and confidence is None
    expected = raw[2:2 + T, 1:][:, ::-1].copy()
    expected[:, :2] += obs.joint_positions[:2]
    expected[:, 6] *= 0.5
    np.testing.assert_allclose(actions, expected)
    assert mapping.actions({"actions": raw, "confidence": 0.7}, obs)[1] == 0.7
    assert mapping.actions({"actions": raw, "confidence": float("nan")}, obs)[1] is None


@pytest.mark.parametrize("reply, says", [
    ({"server_timing": {}}, "no 'actions'"), ([1, 2], "no 'actions'"), ({"actions": "x"}, "not an array"),
    ({"actions": np.zeros((40, 7))}, "shape"), ({"actions": np.zeros((2, 8))}, "shape"),
    ({"actions": np.zeros(8)}, "shape"), ({"actions": np.full((40, 8), np.inf)}, "not finite at row 0")])
def test_bad_replies_say_what_is_wrong(reply: object, says: str) -> None:
    robot = _robot()
    mapping = RemoteMapping(robot, RemotePolicyParams(remote_action_joints=(*robot.joint_names, "_")))
    with pytest.raises(RemotePolicyError, match=says):
        mapping.actions(reply, _obs(robot))


def test_a_mapping_that_contradicts_the_robot_is_refused() -> None:
    robot = _robot()
    with pytest.raises(ValueError, match="remote_action_joints"):
        RemoteMapping(robot, RemotePolicyParams(remote_action_joints=robot.joint_names[:6]))
    with pytest.raises(ValueError, match="remote_state_layout"):
        RemoteMapping(robot, RemotePolicyParams(remote_state_layout=("elbow",)))
    with pytest.raises(ValueError, match="remote_relative_joints"):
        RemoteMapping(robot, RemotePolicyParams(remote_relative_joints=("suction_cup",)))
    for bad in ({"remote_url": "http://x"}, {"remote_image_keys": ("a", "b")}, {"remote_image_size": (1,)},
                {"remote_scaled_joints": ("a",)}, {"remote_backoff_s": (4.0, 1.0)}, {"remote_state_key": "prompt"}):
        with pytest.raises(ParameterError):
            RemotePolicyParams(**bad)  # type: ignore[arg-type]


# --- a real server process with faults injected
def test_faults_hold_with_a_clear_error_and_the_server_recovers(fault_server: FaultServer) -> None:
    robot = _robot()
    clock = FakeClock()
    policy = _policy(fault_server.url, clock, remote_deadline_s=1.0)
    policy.warmup()
    assert policy.metadata is not None and policy.metadata["server"] == "fault"
    obs = _obs(robot)
    chunk = policy.infer(obs)
    assert chunk.actions.shape == (robot.chunk_size, 7) and chunk.head_type == "remote"
    np.testing.assert_allclose(chunk.actions[:, 0], obs.joint_positions[0] + 0.001 * np.arange(robot.chunk_size))
    assert chunk.start_s == obs.stamp_s and chunk.confidence is None  # nothing to agree with yet
    # the same plan asked again a period later: successive chunks agree -> confident
    again = policy.infer(_obs(robot, stamp_s=obs.stamp_s + robot.control_period_s))
    assert again.confidence is not None and again.confidence > 0.9
    faults = {"nan": "not finite at row", "shape": "shape", "garbage": "not a message",
              "noactions": "no 'actions'", "oversized": "over remote_max_reply_bytes",
              "error": "answered an error: .*CUDA out of memory", "slow 3": "no reply within 1.00 s"}
    for mode, says in faults.items():
        fault_server.mode(mode)
        with pytest.raises(RemotePolicyError, match=says):
            policy.infer(obs)
        fault_server.mode("ok")
        clock.t += 100.0  # past any backoff
        assert policy.infer(obs).actions.shape == (robot.chunk_size, 7), mode  # recovered
    assert policy.counters["chunks"] == 2 + len(faults)
    for kind in ("bad_reply", "garbage", "oversized", "server_error", "deadline"):
        assert policy.counters[kind] >= 1, kind


def test_a_dead_server_is_not_stormed_and_a_restarted_one_is_used(fault_server: FaultServer) -> None:
    robot = _robot()
    clock = FakeClock()
    policy = _policy(fault_server.url, clock)
    obs = _obs(robot)
    policy.infer(obs)
    fault_server.kill()
    with pytest.raises(RemotePolicyError, match="closed the connection|connection failed"):
        policy.infer(obs)
    # while backing off, requests fail at once without connecting
    for _ in range(20):
        with pytest.raises(RemotePolicyError, match="not asked, waiting"):
            policy.infer(obs)
    assert policy.counters["connect_failed"] == 0 and policy.counters["backoff"] == 20
    clock.t += 1.0  # first wait: 1 s; the server is still down -> connect fails, the wait doubles
    with pytest.raises(RemotePolicyError, match="cannot connect.*next try in 2.0 s"):
        policy.infer(obs)
    fault_server.start()  # restarted on the same port
    with pytest.raises(RemotePolicyError, match="not asked"):
        policy.infer(obs)
    clock.t += 2.0
    assert policy.infer(obs).actions.shape == (robot.chunk_size, 7)
    before = fault_server.requests()
    assert policy.infer(obs) is not None and fault_server.requests() == before + 1


def test_no_server_at_start_is_not_an_error_for_warmup() -> None:
    policy = _policy(f"ws://127.0.0.1:{_free_port()}")
    policy.warmup()  # nothing listens: no exception, the next request waits for the backoff
    with pytest.raises(RemotePolicyError, match="not asked"):
        policy.infer(_obs(_robot()))


# --- hybridvla serve
@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory, train_franka_aloha) -> str:
    return train_franka_aloha(str(tmp_path_factory.mktemp("serve") / "ckpt"), 20)


def _serve(checkpoint: str, *extra: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "hybridvla_ros.serve", "--checkpoint", checkpoint, "--port", "0",
                             *extra], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("serving ws://"), line
    return proc, line.split()[1]


def test_remote_against_serve_gives_the_builtin_chunk(small_checkpoint: str) -> None:
    from urllib.request import urlopen

    from hybridvla_ros.policies.builtin import make_builtin_policy

    robot = _robot()
    proc, url = _serve(small_checkpoint, "--embodiment", "franka")
    try:
        with urlopen(url.replace("ws://", "http://") + "/healthz") as resp:
            assert resp.status == 200
        import dataclasses
        local = make_builtin_policy(dataclasses.replace(robot, checkpoint_path=small_checkpoint), small_checkpoint)
        local.warmup()
        remote = _policy(url, remote_action_joints=())
        remote.warmup()
        assert remote.metadata is not None and remote.metadata["embodiments"] == ["franka"]
        assert remote.metadata["joint_names"] == list(robot.joint_names) and remote.metadata["chunk_size"] == 16
        for i in range(3):
            obs = _obs(robot, stamp_s=100.0 + i, q=0.1 * i, size=(120, 160), seed=i)
            want, got = local.infer(obs), remote.infer(obs)
            np.testing.assert_allclose(got.actions, want.actions, atol=1e-6)
            assert got.confidence == pytest.approx(want.confidence, abs=1e-6)
            assert got.start_s == want.start_s and got.step_period_s == want.step_period_s
    finally:
        proc.kill()
        proc.wait()


def test_serve_answers_several_clients_at_once(small_checkpoint: str) -> None:
    robot = _robot()
    proc, url = _serve(small_checkpoint)
    try:
        results: list[object] = []

        def client(seed: int) -> None:
            policy = _policy(url, remote_deadline_s=60.0, remote_action_joints=())
            try:
                for i in range(4):
                    results.append(policy.infer(_obs(robot, stamp_s=100.0 + i, seed=seed)).actions.shape)
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                results.append(exc)

        threads = [threading.Thread(target=client, args=(s,)) for s in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == [(robot.chunk_size, 7)] * 12
    finally:
        proc.kill()
        proc.wait()


def test_batched_forward_matches_one_by_one(small_checkpoint: str) -> None:
    """A batch of requests gives each the chunk it gets alone (token mode: no flow noise)."""
    from hybridvla_ros.model.runner import load_runner
    from hybridvla_ros.serve import ModelServer

    runner = load_runner(small_checkpoint, "franka", mode="token")
    model = ModelServer({"franka": runner})
    robot = _robot()
    requests = [model.parse({"observation/image": _obs(robot, seed=i).images[robot.camera_name],
                             "observation/state": np.r_[np.full(7, 0.1 * i), 1.0], "prompt": f"task {i % 2}"})
                for i in range(3)]
    batched = model.answer(requests)
    assert model.forwards == 1 and [r["server_timing"]["batch_size"] for r in batched] == [3, 3, 3]
    for request, reply in zip(requests, batched):
        alone = model.answer([request])[0]
        np.testing.assert_allclose(reply["actions"], alone["actions"], atol=1e-5)
    with pytest.raises(ValueError, match="observation/state"):
        model.parse({"observation/image": requests[0].images[0], "observation/state": np.zeros(3)})
    with pytest.raises(ValueError, match="embodiment"):
        model.parse({"embodiment": "leap"})


# --- hybridvla bench-remote
def test_bench_remote_times_the_same_chunks_served_and_in_process(small_checkpoint: str, tmp_path) -> None:
    """The benchmark's two sides compute the same chunks (else it refuses to compare them), and it writes
    both sides' timings and their ratio."""
    import json

    from hybridvla_ros import cli

    out = tmp_path / "bench_remote.json"
    assert cli.main(["bench-remote", "--checkpoint", small_checkpoint, "--requests", "4", "--warmup", "1",
                     "--out", str(out)]) == 0
    ours = json.loads(out.read_text())["checkpoint"]
    assert ours["embodiment"] == "franka" and ours["runtime"] == "torch" and ours["max_abs_diff"] < 1e-5
    for side in ("builtin", "remote", "overhead"):
        assert ours[side]["n"] == 4
    assert ours["builtin"]["p50_ms"] > 0 and ours["remote"]["min_ms"] > 0
    assert ours["ratio_p50"] == pytest.approx(ours["remote"]["p50_ms"] / ours["builtin"]["p50_ms"])


def test_bench_remote_says_what_is_missing(tmp_path, capsys) -> None:
    from hybridvla_ros import cli

    assert cli.main(["bench-remote", "--checkpoint", str(tmp_path / "none"), "--out", str(tmp_path / "b.json")]) == 2
    assert "no checkpoint at" in capsys.readouterr().err
    assert cli.main(["bench-remote", "--no-checkpoint"]) == 2
    assert "--lerobot-policy-dir" in capsys.readouterr().err
    assert not (tmp_path / "b.json").exists()
