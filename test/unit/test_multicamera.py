"""A policy that reads several of the robot's cameras together (``hybridvla train --cameras exterior wrist``):
the model sees each camera, the simulators record and show each, the graph's builtin source hands it each,
and the paths that take one image so far say so instead of reading one camera silently."""
from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import torch

from hybridvla_ros.cli_model import train_main
from hybridvla_ros.launch_description import default_config_dir
from hybridvla_ros.model.adaptation import adapt
from hybridvla_ros.model.checkpoint import load_checkpoint, save_checkpoint
from hybridvla_ros.model.demo_data import EmbodimentData, check_demos, demos_cache_path, load_embodiment
from hybridvla_ros.model.policy import (
    ACTIONS,
    EMBODIMENT,
    IMAGE,
    INSTRUCTION,
    PROPRIO,
    EmbodimentSpec,
    HybridPolicy,
    PolicyConfig,
)
from hybridvla_ros.model.runner import ExportedRunner, PolicyRunner
from hybridvla_ros.model.text import HASH_ENCODER, INSTRUCTION_DIM, embed_instruction
from hybridvla_ros.model.train import random_shift
from hybridvla_ros.params import from_params, load_node_params
from hybridvla_ros.params.adaptation import AdaptationParams
from hybridvla_ros.params.inference import InferenceParams
from hybridvla_ros.policies import JointTransform, PolicyInputError, RobotObservation, make_policy
from hybridvla_ros.serve import ModelServer
from hybridvla_ros.sim.demos import record_demonstrations

ARM = tuple(f"panda_joint{i}" for i in range(1, 8))
TWO = ("exterior", "wrist")


def _config(spec: EmbodimentSpec) -> PolicyConfig:
    return PolicyConfig(embodiments=(spec,), image_size=32, conv_channels=(8, 16), d_model=32, num_heads=2,
                        num_layers=1, ff_dim=64, token_hidden=64, flow_hidden=64, num_bins=16)


def _spec(cameras: tuple[str, ...] = TWO, head_type: str = "coarse_to_fine") -> EmbodimentSpec:
    return EmbodimentSpec("franka", 7, 16, head_type, joint_names=ARM, state_joints=("suction_cup",),
                          control_period_s=0.02, cameras=cameras)


@pytest.fixture(scope="module")
def two_camera_ckpt(tmp_path_factory) -> str:
    torch.manual_seed(0)
    policy = HybridPolicy(_config(_spec()))
    path = str(tmp_path_factory.mktemp("multicam") / "ckpt")
    save_checkpoint(policy, policy.config, path)
    return path


def _image(seed: int, shape: tuple[int, int] = (48, 64)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (*shape, 3), dtype=np.uint8)


def test_a_spec_names_two_or_more_cameras_or_none() -> None:
    assert _spec(()).num_cameras == 1 and _spec().num_cameras == 2
    for bad in (("exterior",), ("wrist", "wrist"), ("exterior", "")):
        with pytest.raises(ValueError, match="cameras"):
            _spec(bad)


def test_the_checkpoint_keeps_the_cameras_and_a_one_camera_one_loads_as_before(two_camera_ckpt, tmp_path) -> None:
    _, config = load_checkpoint(two_camera_ckpt)
    assert config.embodiment("franka").cameras == TWO
    one = HybridPolicy(_config(_spec(())))
    save_checkpoint(one, one.config, str(tmp_path / "one"))
    policy, config = load_checkpoint(str(tmp_path / "one"))
    assert config.embodiment("franka").cameras == () and "franka" not in policy.backbone.camera_embed


def test_the_model_reads_every_camera_in_order_and_refuses_a_batch_with_one() -> None:
    torch.manual_seed(0)
    policy = HybridPolicy(_config(_spec()))
    policy.eval()
    g = torch.Generator().manual_seed(1)
    views = torch.rand(2, 2, 3, 32, 32, generator=g)
    base = {EMBODIMENT: "franka", PROPRIO: torch.zeros(2, 7), "state": torch.zeros(2, 1),
            INSTRUCTION: torch.zeros(2, policy.config.instruction_dim)}
    with torch.no_grad():
        feat = policy.encode({**base, IMAGE: views})
        other_wrist = views.clone()
        other_wrist[:, 1] = torch.rand(2, 3, 32, 32, generator=g)
        swapped = views.flip(1)
        assert not torch.allclose(feat, policy.encode({**base, IMAGE: other_wrist}))  # the wrist view counts
        assert not torch.allclose(feat, policy.encode({**base, IMAGE: swapped}))      # so does which is which
    with pytest.raises(ValueError, match=r"expected a tensor of shape \(2, 2, 3, 32, 32\)"):
        policy.predict({**base, IMAGE: views[:, 0]})


def test_what_the_second_camera_shows_is_learned() -> None:
    """The action depends only on the wrist view's brightness (the exterior view is noise): trained on two
    cameras the policy gets it, so the wrist camera reaches the output."""
    torch.manual_seed(0)
    spec = EmbodimentSpec("franka", 7, 4, "token", cameras=TWO)
    policy = HybridPolicy(_config(spec))
    g = torch.Generator().manual_seed(0)
    n = 256
    bright = (torch.rand(n, generator=g) > 0.5).float()                          # (N,)
    views = torch.rand(n, 2, 3, 32, 32, generator=g) * 0.2
    views[:, 1] += bright[:, None, None, None] * 0.7                              # the wrist view: dark or bright
    proprio = torch.zeros(n, 7)
    actions = (bright[:, None, None] * 0.5 - 0.25).expand(n, 4, 7).clone()       # (N, T, D): -0.25 or +0.25
    policy.fit_normalization("franka", proprio.numpy(), actions.numpy())
    instr = torch.from_numpy(embed_instruction("x", INSTRUCTION_DIM, HASH_ENCODER)).float().expand(n, -1)
    opt = torch.optim.AdamW(policy.parameters(), lr=3e-3)
    for _ in range(150):
        idx = torch.randint(0, n, (32,), generator=g)
        loss, _ = policy({EMBODIMENT: "franka", IMAGE: views[idx], PROPRIO: proprio[idx], INSTRUCTION: instr[idx],
                          ACTIONS: actions[idx]})
        opt.zero_grad()
        loss.backward()
        opt.step()
    policy.eval()
    with torch.no_grad():
        out = policy.predict({EMBODIMENT: "franka", IMAGE: views[:64], PROPRIO: proprio[:64], INSTRUCTION: instr[:64]})
    got = out[ACTIONS][:, :, 0].mean(1)                                            # (64,)
    assert torch.all(torch.sign(got) == torch.sign(actions[:64, 0, 0])), got


def test_each_view_is_shifted_on_its_own() -> None:
    """Both views of each example are the same picture: after the shift they differ in some examples."""
    g = torch.Generator().manual_seed(0)
    picture = torch.rand(8, 1, 3, 16, 16)
    out = random_shift(picture.expand(8, 2, 3, 16, 16).contiguous(), 3, g)
    assert out.shape == (8, 2, 3, 16, 16)
    assert sum(not torch.equal(out[b, 0], out[b, 1]) for b in range(8)) >= 4


def test_the_mujoco_franka_records_each_camera_and_training_data_batches_them(tmp_path) -> None:
    p = load_embodiment(default_config_dir(), "franka")
    demos = record_demonstrations(p, 1, 6, image_size=32, seed=3, cameras=TWO)
    images = demos["images"]
    assert images.shape == (6, 2, 32, 32, 3) and images.dtype == np.uint8
    one = record_demonstrations(p, 1, 6, image_size=32, seed=3)
    np.testing.assert_array_equal(images[:, 0], one["images"])   # the first view is the scene camera's
    assert np.abs(images[:, 1].astype(int) - images[:, 0].astype(int)).mean() > 10  # the wrist sees otherwise
    spec = dataclasses.replace(EmbodimentSpec.from_params(p), cameras=TWO)
    check_demos(demos, spec)
    with pytest.raises(ValueError, match=r"one per camera \['exterior', 'wrist'\]"):
        check_demos(one, spec)
    data = EmbodimentData(demos, spec, np.arange(6), 16, INSTRUCTION_DIM, HASH_ENCODER)
    assert data.batch(torch.tensor([0, 5]))[IMAGE].shape == (2, 2, 3, 16, 16)
    assert demos_cache_path(tmp_path, "franka", 1, 6, 32, 3, cameras=TWO) != demos_cache_path(tmp_path, "franka", 1,
                                                                                                 6, 32, 3)


def test_the_runner_takes_one_image_per_camera_each_at_its_own_size(two_camera_ckpt) -> None:
    runner = PolicyRunner.load(two_camera_ckpt, "franka")
    assert runner.cameras == TWO
    q, state = np.zeros(7), np.array([0.0])
    a = runner.predict([_image(0), _image(1, (120, 160))], q, "pick", state=state).actions
    b = runner.predict([_image(0), _image(2, (120, 160))], q, "pick", state=state).actions
    assert a.shape == (16, 7) and not np.allclose(a, b)
    with pytest.raises(ValueError, match=r"reads 2 cameras \['exterior', 'wrist'\], got 1 image"):
        runner.predict(_image(0), q, "pick", state=state)
    with pytest.raises(ValueError, match="dtype uint8"):
        runner.predict([_image(0), _image(1).astype(np.float32)], q, "pick", state=state)
    runner.warmup(1)


def _franka_params(checkpoint_path: str, **overrides: object) -> InferenceParams:
    path = os.path.join(default_config_dir(), "franka.yaml")
    return from_params(InferenceParams, {**load_node_params(path, "inference"), "checkpoint_path": checkpoint_path,
                                         **overrides})


def test_the_builtin_source_hands_the_policy_every_camera_it_reads(two_camera_ckpt) -> None:
    p = _franka_params(two_camera_ckpt)
    policy = make_policy("builtin", p)
    assert policy.cameras == TWO
    names = [*ARM, "suction_cup"]
    images = {"exterior": _image(0), "wrist": _image(1, (120, 160))}
    robot = RobotObservation(stamp_s=10.0, joint_names=names, joint_positions=[0.0] * 8, task="", images=images)
    transform = JointTransform(p.joint_names, p.instruction)
    chunk = policy.infer(transform.to_policy(robot, policy))
    runner = PolicyRunner.load(two_camera_ckpt, "franka")
    expected = runner.predict([images["exterior"], images["wrist"]], np.zeros(7), p.instruction,
                              num_samples=p.confidence_samples, state=np.array([0.0]))
    np.testing.assert_allclose(chunk.actions, expected.actions)
    # the wrist camera stale at sync: that observation is refused, naming it
    with pytest.raises(PolicyInputError, match="wrist"):
        transform.to_policy(dataclasses.replace(robot, images={"exterior": _image(0)}), policy)


def test_a_checkpoint_reading_cameras_the_robot_lacks_is_refused_at_load(tmp_path) -> None:
    policy = HybridPolicy(_config(_spec(("exterior", "hand"))))
    save_checkpoint(policy, policy.config, str(tmp_path / "ckpt"))
    with pytest.raises(ValueError, match=r"\['hand'\] are not this robot's cameras"):
        make_policy("builtin", _franka_params(str(tmp_path / "ckpt")))


@pytest.mark.parametrize("runtime", ["onnx", "int8-ort"])
def test_the_exported_runtimes_read_every_camera_too(two_camera_ckpt, runtime: str) -> None:
    """The ONNX graph takes the (1, K, 3, S, S) views: the same chunk as torch (int8: close), and the wrist counts."""
    runner = PolicyRunner.load(two_camera_ckpt, "franka", mode="token")
    exported = ExportedRunner(runner, runtime)
    assert exported.cameras == TWO
    q, state = np.full(7, 0.1), np.array([1.0])
    views = [_image(0), _image(1, (120, 160))]
    got = exported.predict(views, q, "pick", state=state).actions
    want = runner.predict(views, q, "pick", state=state).actions
    np.testing.assert_allclose(got, want, atol=1e-4 if runtime == "onnx" else 0.05)
    other = exported.predict([_image(0), _image(2, (120, 160))], q, "pick", state=state).actions
    assert not np.allclose(got, other)
    with pytest.raises(ValueError, match="reads 2 cameras"):
        exported.predict(_image(0), q, "pick", state=state)
    exported.warmup(1)


def test_hybridvla_serve_serves_every_camera_the_checkpoint_reads(two_camera_ckpt) -> None:
    """``hybridvla serve`` in its own process: its metadata names one image key per camera, the remote source
    maps the robot's cameras onto them and gets the builtin source's chunk for the same observation."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "hybridvla_ros.serve", "--checkpoint", two_camera_ckpt,
                             "--embodiment", "franka", "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("serving ws://"), line
        keys = ["observation/images/exterior", "observation/images/wrist"]
        remote = make_policy("remote", _franka_params(
            two_camera_ckpt, policy_source="remote", remote_url=line.split()[1], remote_cameras=list(TWO),
            remote_image_keys=keys, remote_image_size=[48, 64], remote_deadline_s=60.0,
            remote_connect_timeout_s=60.0))
        local = make_policy("builtin", _franka_params(two_camera_ckpt))
        remote.warmup()
        local.warmup()
        assert remote.metadata is not None and remote.metadata["image_keys"] == keys
        assert remote.metadata["cameras"] == list(TWO)
        p = _franka_params(two_camera_ckpt)
        transform = JointTransform(p.joint_names, p.instruction)
        names = [*ARM, "suction_cup"]
        for seed in range(2):
            images = {"exterior": _image(seed), "wrist": _image(10 + seed)}
            robot = RobotObservation(stamp_s=10.0 + seed, joint_names=names, joint_positions=[0.1 * seed] * 8,
                                     task="", images=images)
            got = remote.infer(transform.to_policy(robot, remote))
            want = local.infer(transform.to_policy(robot, local))
            np.testing.assert_allclose(got.actions, want.actions, atol=1e-5)
        # one camera missing from a request: a text frame naming its key, not an answer from one camera
        model = ModelServer({"franka": PolicyRunner.load(two_camera_ckpt, "franka")})
        with pytest.raises(ValueError, match="observation/images/wrist"):
            model.parse({"observation/images/exterior": _image(0), "observation/state": np.zeros(8)})
    finally:
        proc.kill()
        proc.wait()


def test_online_adaptation_fine_tunes_a_head_that_reads_two_cameras(two_camera_ckpt, tmp_path) -> None:
    """Corrections stored with both cameras (the recorder keeps each) are read with each view, a correction
    missing the wrist is skipped, and the head is fine-tuned and judged on them with a replay of both views."""
    from hybridvla_ros.core.correction_store import CorrectionStore
    from hybridvla_ros.model.corrections_data import load_corrections_for
    from hybridvla_ros.model.replay import REPLAY_RECORDED, ReplaySample, record_replay
    from hybridvla_ros.sim.corrections import simulated_corrections

    params = dataclasses.replace(
        from_params(AdaptationParams, load_node_params(os.path.join(default_config_dir(), "franka.yaml"),
                                                       "adaptation"), "adaptation"), min_corrections=10, steps=40)
    records = simulated_corrections(params, 31)
    store = str(tmp_path / "corrections.sqlite")
    with CorrectionStore(store, replay_capacity=100) as s:
        for k, r in enumerate(records):
            wrist = {} if k == 0 else {"wrist": _image(100 + k, (60, 80))}  # the first: the wrist was stale
            s.add(dataclasses.replace(r, camera_name="exterior", extra_images=wrist))
    corrections, info = load_corrections_for(two_camera_ckpt, store, params)
    assert corrections.images.shape == (30, 2, 32, 32, 3) and info["skipped"] == 1
    assert not np.array_equal(corrections.images[:, 0], corrections.images[:, 1])
    with pytest.raises(ValueError, match="does not render"):
        record_replay(params, two_camera_ckpt)  # the kinematic simulator has no wrist camera
    sim_params = load_embodiment(default_config_dir(), "franka", physics="mujoco")
    replay = ReplaySample(record_demonstrations(dataclasses.replace(sim_params, state_joints=("suction_cup",)), 2, 15,
                                                image_size=32, seed=4, cameras=TWO), REPLAY_RECORDED)
    result = adapt(params, two_camera_ckpt, corrections, replay, adapt_root=str(tmp_path / "adapt"))
    log = result.log
    assert log["samples"]["corrections"] + log["samples"]["corrections_heldout"] == 30, log
    assert log["samples"]["replay"] + log["samples"]["replay_heldout"] == 30, log
    losses = [v for key in ("loss_before", "loss_after") for v in log[key].values()]
    assert losses and all(v is not None and np.isfinite(v) for v in losses) and log["steps"] > 0, log
    assert not str(log["reason"]).startswith("error"), log
    if result.accepted:
        assert result.checkpoint_dir is not None
        _, config = load_checkpoint(str(result.checkpoint_dir))
        assert config.embodiment("franka").cameras == TWO

def test_train_cli_checks_the_cameras_before_recording(capsys) -> None:
    assert train_main(["--embodiments", "franka", "--cameras", "exterior", "--quiet"]) == 2
    assert "two or more" in capsys.readouterr().err
    assert train_main(["--embodiments", "franka", "--cameras", "exterior", "hand", "--quiet",
                       "--config-dir", default_config_dir()]) == 1
    assert "['hand'] are not cameras of franka" in capsys.readouterr().err
