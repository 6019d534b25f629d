"""The policies package: protocol, registry, transforms, our model and the sim expert as sources, PolicySlot."""
from __future__ import annotations

import dataclasses
import os
import threading

import numpy as np
import pytest
import torch

from hybridvla_ros.launch_description import default_config_dir
from hybridvla_ros.model.checkpoint import CheckpointError, model_version_of, save_checkpoint
from hybridvla_ros.model.policy import EmbodimentSpec, HybridPolicy, PolicyConfig
from hybridvla_ros.model.runner import PolicyRunner
from hybridvla_ros.params import ParameterError, from_params, load_node_params
from hybridvla_ros.params.inference import POLICY_SOURCES, InferenceParams
from hybridvla_ros.policies import (
    JointTransform,
    Policy,
    PolicyChunk,
    PolicyInputError,
    PolicyMismatch,
    PolicyObservation,
    PolicyRequirements,
    PolicySlot,
    RobotObservation,
    UnknownPolicySource,
    UpdateRefused,
    make_policy,
    policy_names,
    register_policy,
)
from hybridvla_ros.policies.builtin import BuiltinPolicy
from hybridvla_ros.policies.sim_expert import EXPERT_PLAN_TOPIC, SimExpertPolicy

FRANKA = os.path.join(default_config_dir(), "franka.yaml")
ARM = tuple(f"panda_joint{i}" for i in range(1, 8))


def franka_params(checkpoint_path: str = "/nonexistent", **overrides) -> InferenceParams:
    """config/franka.yaml's inference parameters (chunk 16, 50 Hz, state joint suction_cup)."""
    return from_params(InferenceParams, {**load_node_params(FRANKA, "inference"), "checkpoint_path": checkpoint_path,
                                         **overrides})


def _save(path: str, seed: int, spec: EmbodimentSpec) -> str:
    torch.manual_seed(seed)
    policy = HybridPolicy(PolicyConfig(embodiments=(spec,), image_size=32, conv_channels=(8, 16), d_model=32,
                                       num_heads=2, num_layers=1, ff_dim=64, token_hidden=64, flow_hidden=64,
                                       num_bins=16))
    save_checkpoint(policy, policy.config, path)
    return path


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, str]:
    """Untrained tiny franka checkpoints: ``state`` names its joints and reads suction_cup; ``plain``
    (an older one) names nothing; ``chunk8`` predicts 8 actions instead of the parameter file's 16."""
    root = tmp_path_factory.mktemp("policies")
    return {
        "state": _save(str(root / "state"), 0, EmbodimentSpec("franka", 7, 16, "coarse_to_fine", joint_names=ARM,
                                                              state_joints=("suction_cup",), control_period_s=0.02)),
        "plain": _save(str(root / "plain"), 1, EmbodimentSpec("franka", 7, 16, "coarse_to_fine")),
        "chunk8": _save(str(root / "chunk8"), 2, EmbodimentSpec("franka", 7, 8, "coarse_to_fine")),
    }


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)  # (H, W, 3)


def _robot_obs(stamp_s: float = 100.0, with_state: bool = True, task: str = "") -> RobotObservation:
    """The driver's order, an extra finger joint, and (unless ``with_state`` is False) the suction cup."""
    names = ["panda_finger_joint1", *reversed(ARM), *(["suction_cup"] if with_state else [])]
    values = [0.04, *np.linspace(0.3, -0.3, 7), *([1.0] if with_state else [])]
    return RobotObservation(stamp_s=stamp_s, joint_names=names, joint_positions=values, task=task,
                            images={"exterior": _image(), "wrist": _image()[::-1].copy()})


# --- registry

def test_both_sources_are_registered_under_the_parameter_files_names() -> None:
    assert policy_names() == ["builtin", "remote", "sim_expert"]
    assert set(policy_names(include_aliases=True)) == set(POLICY_SOURCES) == {"builtin", "checkpoint", "remote",
                                                                               "sim_expert"}
    field = {f.name: f for f in dataclasses.fields(InferenceParams)}["policy_source"]
    assert field.metadata["choices"] == POLICY_SOURCES


def test_unknown_source_is_a_clear_error_listing_the_known_ones() -> None:
    with pytest.raises(UnknownPolicySource, match=r"policy_source: unknown 'lerobot'; known: builtin, checkpoint, "
                                                  r"remote, sim_expert"):
        make_policy("lerobot", franka_params())


def test_a_name_is_registered_once() -> None:
    def factory(params: InferenceParams, checkpoint_path: str) -> Policy:
        return SimExpertPolicy(params.joint_names, params.chunk_size, params.control_period_s)

    for name, aliases in (("builtin", ()), ("fresh_name", ("checkpoint",)), ("", ())):
        with pytest.raises(ValueError, match="already registered"):
            register_policy(name, aliases)(factory)
    assert policy_names() == ["builtin", "remote", "sim_expert"]


def test_both_sources_satisfy_the_protocol(ckpts) -> None:
    p = franka_params(ckpts["state"])
    for name, cls in (("builtin", BuiltinPolicy), ("checkpoint", BuiltinPolicy), ("sim_expert", SimExpertPolicy)):
        policy = make_policy(name, p)
        assert isinstance(policy, Policy) and type(policy) is cls
    assert not isinstance(object(), Policy)


# --- data types

def test_observation_and_chunk_refuse_malformed_fields() -> None:
    ok = dict(stamp_s=1.0, joint_names=("a", "b"), joint_positions=[0.0, 1.0], task="t")
    PolicyObservation(**ok)
    for change, field in ((dict(joint_positions=[0.0]), "joint_positions"),
                          (dict(joint_positions=[0.0, np.nan]), "joint_positions"),
                          (dict(joint_names=("a", "a")), "joint_names"),
                          (dict(state_joints=("s",)), "state"),
                          (dict(images={"cam": np.zeros((4, 4), np.uint8)}), "images\\['cam'\\]"),
                          (dict(images={"cam": np.zeros((4, 4, 3), np.float32)}), "images\\['cam'\\]"),
                          (dict(stamp_s=float("inf")), "stamp_s")):
        with pytest.raises(PolicyInputError, match=field):
            PolicyObservation(**{**ok, **change})
    with pytest.raises(PolicyInputError, match="no camera 'wrist'"):
        PolicyObservation(**ok).image("wrist")
    chunk = dict(actions=np.zeros((3, 2)), start_s=1.0, step_period_s=0.02, confidence=None, latency_s=0.0,
                 head_type="x", model_version=0)
    assert PolicyChunk(**chunk).chunk_length == 3 and PolicyChunk(**chunk).action_dim == 2
    for change, field in ((dict(actions=np.zeros(3)), "actions"), (dict(actions=np.full((3, 2), np.nan)), "step 0"),
                          (dict(confidence=1.5), "confidence"), (dict(step_period_s=0.0), "step_period_s"),
                          (dict(latency_s=-1.0), "latency_s")):
        with pytest.raises(ValueError, match=field):
            PolicyChunk(**{**chunk, **change})


# --- transforms

class FakePolicy:
    """A Policy whose chunks say which version answered (values = model_version + column index / 10)."""

    name = "fake"
    cameras: tuple[str, ...] = ()
    plan_topics: tuple[str, ...] = ()
    inpaints = False

    def __init__(self, model_version: int = 1, adaptable: bool = True, joint_names: tuple[str, ...] = ("a", "b"),
                 chunk_size: int = 3, state_joints: tuple[str, ...] = (), warmup_error: Exception | None = None,
                 on_warmup=None) -> None:
        self.model_version, self.adaptable = model_version, adaptable
        self.joint_names, self.state_joints = joint_names, state_joints
        self.action_dim, self.chunk_size = len(joint_names), chunk_size
        self.warmup_error, self.on_warmup = warmup_error, on_warmup
        self.warmed = 0

    def on_plan(self, topic: str, plan: PolicyChunk) -> None:
        raise ValueError(topic)

    def infer(self, obs: PolicyObservation) -> PolicyChunk:
        row = self.model_version + np.arange(self.action_dim) / 10
        return PolicyChunk(actions=np.tile(row, (self.chunk_size, 1)), start_s=obs.stamp_s, step_period_s=0.02,
                           confidence=None, latency_s=0.0, head_type="fake", model_version=self.model_version)

    def warmup(self) -> None:
        if self.on_warmup is not None:
            self.on_warmup(self)
        if self.warmup_error is not None:
            raise self.warmup_error
        self.warmed += 1

    def reset(self) -> None:
        self.warmed = 0


def test_fake_policy_is_a_policy() -> None:
    assert isinstance(FakePolicy(), Policy)


def test_joint_transform_picks_by_name_and_maps_the_chunk_back_to_the_robots_order() -> None:
    robot = ("a", "b", "c")
    transform = JointTransform(robot, default_task="the parameter file's task")
    policy = FakePolicy(joint_names=("c", "a", "b"), state_joints=("s",))
    obs = transform.to_policy(RobotObservation(stamp_s=2.0, joint_names=["x", "b", "s", "a", "c"],
                                               joint_positions=[9.0, 2.0, 1.0, 1.5, 3.0]), policy)
    assert obs.joint_names == ("c", "a", "b") and obs.joint_positions.tolist() == [3.0, 1.5, 2.0]
    assert obs.state_joints == ("s",) and obs.state.tolist() == [1.0]
    assert obs.task == "the parameter file's task" and obs.stamp_s == 2.0 and not obs.images
    chunk = transform.to_robot(policy.infer(obs), policy)  # the fake's column k holds 1 + k/10: c=1.0, a=1.1, b=1.2
    np.testing.assert_allclose(chunk.actions[0], [1.1, 1.2, 1.0])
    same = FakePolicy(joint_names=robot)
    c = same.infer(obs)
    assert transform.to_robot(c, same) is c
    with pytest.raises(PolicyInputError, match=r"missing joints \['s'\]"):
        transform.to_policy(RobotObservation(stamp_s=2.0, joint_names=["a", "b", "c"], joint_positions=[1, 2, 3]),
                            policy)
    with pytest.raises(ValueError, match="joint_names"):
        transform.to_robot(FakePolicy(joint_names=("a", "b", "z")).infer(obs), FakePolicy(joint_names=("a", "b", "z")))


def test_joint_transform_hands_the_policy_the_cameras_it_reads() -> None:
    transform = JointTransform(("a", "b"), default_task="")
    policy = FakePolicy()
    policy.cameras = ("wrist",)
    obs = RobotObservation(stamp_s=1.0, joint_names=["a", "b"], joint_positions=[0, 0], task="pick",
                           images={"wrist": _image(1), "top": _image(2)})
    out = transform.to_policy(obs, policy)
    assert list(out.images) == ["wrist"] and out.task == "pick"
    with pytest.raises(PolicyInputError, match="camera 'wrist'"):
        transform.to_policy(dataclasses.replace(obs, images={"top": _image(2)}), policy)


def test_requirements_name_the_parameter_a_policy_contradicts() -> None:
    fits = PolicyRequirements("franka", ("a", "b"), state_joints=("s", "t"))
    fits.check(FakePolicy(joint_names=("b", "a"), state_joints=("s",)), "/ckpt")
    assert fits.unused_state_joints(FakePolicy(state_joints=("s",))) == ["t"]
    cases = ((FakePolicy(joint_names=("a",)), "checkpoint_path", "action_dim 1"),
             (FakePolicy(joint_names=("a", "z")), "joint_names", "'z'"),
             (FakePolicy(state_joints=("suction_cup",)), "state_joints", r"\['suction_cup'\]"))
    for policy, field, text in cases:
        with pytest.raises(PolicyMismatch, match=text) as err:
            fits.check(policy, "/ckpt")
        assert err.value.field == field
    with pytest.raises(PolicyMismatch, match="chunk_size 3"):
        dataclasses.replace(fits, chunk_size=16).check(FakePolicy(), "/ckpt")


# --- builtin: our model

def test_builtin_answers_with_the_runners_absolute_chunk_on_the_observations_time(ckpts) -> None:
    p = franka_params(ckpts["state"])
    policy = make_policy("builtin", p)
    assert (policy.joint_names, policy.state_joints, policy.cameras) == (ARM, ("suction_cup",), ("exterior",))
    assert (policy.action_dim, policy.chunk_size, policy.adaptable) == (7, 16, True)
    assert policy.model_version == model_version_of(ckpts["state"]) and policy.plan_topics == ()
    obs = JointTransform(p.joint_names, p.instruction).to_policy(_robot_obs(stamp_s=123.25), policy)
    chunk = policy.infer(obs)
    assert chunk.actions.shape == (16, 7) and np.isfinite(chunk.actions).all()
    assert (chunk.start_s, chunk.step_period_s) == (123.25, pytest.approx(0.02))
    assert chunk.model_version == policy.model_version and chunk.head_type == "coarse_to_fine"
    assert chunk.confidence is not None and 0.0 <= chunk.confidence <= 1.0 and chunk.latency_s > 0
    # The same absolute targets the runner gives for these joints, picked by name from the driver's order.
    runner = PolicyRunner.load(ckpts["state"], "franka", mode="coarse_to_fine")
    expected = runner.predict(_image(), np.linspace(-0.3, 0.3, 7), p.instruction, num_samples=p.confidence_samples,
                              state=np.array([1.0]))
    np.testing.assert_allclose(chunk.actions, expected.actions)
    # warmup and reset change nothing that follows: the second answer is that of a policy never warmed up
    policy.warmup()
    policy.reset()
    again = make_policy("builtin", p)
    again.infer(obs)
    np.testing.assert_allclose(policy.infer(obs).actions, again.infer(obs).actions)


def test_builtin_reads_the_camera_policy_camera_names(ckpts) -> None:
    """franka.yaml names an exterior (the anchor) and a wrist camera: policy_camera picks the one our model reads;
    an observation without it (the wrist camera stale at sync) is refused, naming the camera."""
    p = franka_params(ckpts["state"], policy_camera="wrist")
    policy = make_policy("builtin", p)
    assert policy.cameras == ("wrist",)
    transform = JointTransform(p.joint_names, p.instruction)
    robot_obs = _robot_obs()
    runner = PolicyRunner.load(ckpts["state"], "franka", mode="coarse_to_fine")
    expected = runner.predict(robot_obs.images["wrist"], np.linspace(-0.3, 0.3, 7), p.instruction,
                              num_samples=p.confidence_samples, state=np.array([1.0]))
    np.testing.assert_allclose(policy.infer(transform.to_policy(robot_obs, policy)).actions, expected.actions)
    with pytest.raises(PolicyInputError, match="wrist"):
        transform.to_policy(dataclasses.replace(robot_obs, images={"exterior": _image()}), policy)
    with pytest.raises(ParameterError, match="policy_camera: 'hand' is not one of the robot's cameras"):
        franka_params(ckpts["state"], policy_camera="hand")


def test_builtin_refuses_bad_input(ckpts) -> None:
    p = franka_params(ckpts["state"])
    policy = make_policy("builtin", p)
    transform = JointTransform(p.joint_names, p.instruction)
    with pytest.raises(PolicyInputError, match="suction_cup"):  # the observation lacks a state joint it reads
        transform.to_policy(_robot_obs(with_state=False), policy)
    obs = transform.to_policy(_robot_obs(), policy)
    with pytest.raises(PolicyInputError, match="no camera 'exterior'"):
        policy.infer(dataclasses.replace(obs, images={}))
    with pytest.raises(PolicyInputError, match="joint_names"):
        policy.infer(dataclasses.replace(obs, joint_names=tuple(reversed(ARM))))
    with pytest.raises(PolicyInputError, match=r"images\['exterior'\]"):
        policy.infer(dataclasses.replace(obs, images={"exterior": np.zeros((0, 4, 3), np.uint8)}))
    with pytest.raises(ValueError, match="plan_topics"):
        policy.on_plan(EXPERT_PLAN_TOPIC, PolicyChunk(np.zeros((16, 7)), 0.0, 0.02, 1.0, 0.0, "x", 0))


def test_builtin_names_its_joints_from_the_parameter_file_for_an_older_checkpoint(ckpts, tmp_path) -> None:
    policy = make_policy("checkpoint", franka_params(ckpts["plain"]))
    assert policy.joint_names == ARM and policy.state_joints == ()
    with pytest.raises(CheckpointError, match="not found"):
        make_policy("builtin", franka_params(str(tmp_path / "missing")))


# --- sim expert

def _plan(start_s: float, shape: tuple[int, int] = (16, 7), step_period_s: float = 0.02) -> PolicyChunk:
    return PolicyChunk(actions=np.arange(shape[0] * shape[1], dtype=float).reshape(shape), start_s=start_s,
                       step_period_s=step_period_s, confidence=1.0, latency_s=0.0, head_type="sim_expert",
                       model_version=0)


def test_sim_expert_serves_each_fresh_plan_once() -> None:
    now = [100.0]
    expert = SimExpertPolicy(ARM, chunk_size=16, step_period_s=0.02, clock=lambda: now[0])
    assert not expert.adaptable and expert.plan_topics == (EXPERT_PLAN_TOPIC,) and expert.cameras == ()
    obs = JointTransform(ARM, "").to_policy(_robot_obs(stamp_s=100.0), expert)  # no camera, no state joint needed
    with pytest.raises(PolicyInputError, match="no expert plan yet"):
        expert.infer(obs)
    expert.on_plan(EXPERT_PLAN_TOPIC, _plan(99.95))
    chunk = expert.infer(obs)
    assert chunk.start_s == 99.95 and chunk.confidence == 1.0 and chunk.head_type == "sim_expert"
    np.testing.assert_array_equal(chunk.actions, _plan(99.95).actions)
    with pytest.raises(PolicyInputError, match="no new expert plan"):  # the buffer keeps playing that one
        expert.infer(obs)
    expert.on_plan(EXPERT_PLAN_TOPIC, _plan(99.97))
    now[0] = 99.97 + 0.31
    with pytest.raises(PolicyInputError, match="s old"):
        expert.infer(obs)
    now[0] = 99.98
    assert expert.infer(obs).start_s == 99.97
    expert.reset()
    with pytest.raises(PolicyInputError, match="no expert plan yet"):
        expert.infer(obs)


def test_sim_expert_refuses_a_plan_of_the_wrong_shape_or_topic() -> None:
    expert = SimExpertPolicy(ARM, chunk_size=16, step_period_s=0.02, clock=lambda: 100.0)
    obs = PolicyObservation(stamp_s=100.0, joint_names=ARM, joint_positions=np.zeros(7), task="")
    for plan, text in ((_plan(99.99, (8, 7)), r"shape \(8, 7\)"), (_plan(99.99, (16, 6)), r"shape \(16, 6\)"),
                       (_plan(99.99, step_period_s=0.01), "step_period_s")):
        expert.on_plan(EXPERT_PLAN_TOPIC, plan)
        with pytest.raises(PolicyInputError, match=text):
            expert.infer(obs)
    with pytest.raises(ValueError, match="plan_topics"):
        expert.on_plan("other/topic", _plan(99.99))


# --- PolicySlot: weight swap and rollback

class ListLog:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str) -> None:
        self.lines.append(f"INFO {message}")

    def error(self, message: str) -> None:
        self.lines.append(f"ERROR {message}")

    def text(self) -> str:
        return "\n".join(self.lines)


class Loader:
    """``load(path)``: the FakePolicy registered for ``path`` (or raise its exception), after ``gate`` opens."""

    def __init__(self, policies: dict[str, FakePolicy | Exception]) -> None:
        self.policies = policies
        self.loaded: list[str] = []
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()

    def __call__(self, path: str) -> Policy:
        self.started.set()
        assert self.gate.wait(10.0)
        self.loaded.append(path)
        out = self.policies[path]
        if isinstance(out, Exception):
            raise out
        return out


def _slot(loader: Loader, active: FakePolicy | None = None, **kwargs) -> tuple[PolicySlot, ListLog, list]:
    log, changes = ListLog(), []
    slot = PolicySlot(active or FakePolicy(1), "/ckpt/v1", loader, on_change=changes.append, log=log, **kwargs)
    return slot, log, changes


def _obs() -> PolicyObservation:
    return PolicyObservation(stamp_s=1.0, joint_names=("a", "b"), joint_positions=[0.0, 0.0], task="")


def test_an_update_is_warmed_up_and_swapped_in_between_two_calls() -> None:
    served_during_warmup = []
    loader = Loader({"/ckpt/v2": FakePolicy(2, on_warmup=lambda p: served_during_warmup.append(
        slot.policy.model_version))})
    slot, log, changes = _slot(loader)
    versions: list[int] = []
    stop = threading.Event()

    def serve() -> None:  # the node's timer: one read of slot.policy per call
        while not stop.is_set():
            versions.append(int(slot.policy.infer(_obs()).actions[0, 0]))

    caller = threading.Thread(target=serve)
    caller.start()
    while not versions:
        stop.wait(0.001)
    loader.gate.clear()
    assert slot.request_update(" /ckpt/v2\n") is True and slot.busy
    assert loader.started.wait(5.0)
    n_while_loading = len(versions)
    loader.gate.set()
    assert slot.wait_idle(10.0) and not slot.busy
    n_swapped = len(versions)
    while len(versions) < n_swapped + 3:  # a few calls after the swap
        stop.wait(0.001)
    stop.set()
    caller.join()
    assert set(versions[:n_while_loading]) == {1}, "the old weights answer while the update loads"
    assert versions[-1] == 2 and versions == sorted(versions), "one swap, between two calls"
    assert served_during_warmup == [1] and slot.policy.warmed == 1
    assert (slot.active.checkpoint_path, slot.active.model_version) == ("/ckpt/v2", 2)
    assert slot.previous is not None and slot.previous.model_version == 1
    assert [c.model_version for c in changes] == [2]
    assert "now serving /ckpt/v2 (model_version 2); previous /ckpt/v1 (model_version 1) kept for ~/rollback" \
        in log.text()


def test_one_load_at_a_time_and_the_newest_waiting_update_wins() -> None:
    loader = Loader({f"/ckpt/v{i}": FakePolicy(i) for i in range(2, 6)})
    slot, _, changes = _slot(loader)
    loader.gate.clear()
    assert slot.request_update("/ckpt/v2") is True
    assert loader.started.wait(5.0)
    assert [slot.request_update(f"/ckpt/v{i}") for i in (3, 4, 5)] == [False, False, False]
    loader.gate.set()
    assert slot.wait_idle(10.0)
    assert loader.loaded == ["/ckpt/v2", "/ckpt/v5"]
    assert slot.active.model_version == 5 and [c.model_version for c in changes] == [2, 5]
    assert slot.previous is not None and slot.previous.model_version == 2


def test_a_bad_update_is_refused_and_the_served_policy_stays() -> None:
    loader = Loader({"/ckpt/broken": CheckpointError("model.safetensors: truncated"),
                     "/ckpt/state": FakePolicy(3, state_joints=("suction_cup",)),
                     "/ckpt/short": FakePolicy(4, chunk_size=2),
                     "/ckpt/warmup": FakePolicy(5, warmup_error=RuntimeError("onnx session died")),
                     "/ckpt/same": FakePolicy(1),
                     "/ckpt/good": FakePolicy(6)})
    fits = PolicyRequirements("fake", ("a", "b"), state_joints=(), chunk_size=3)
    slot, log, changes = _slot(loader, check=fits.check)
    for path, reason in (("/ckpt/broken", "truncated"), ("/ckpt/state", "suction_cup"), ("/ckpt/short", "chunk_size 2"),
                         ("/ckpt/warmup", "onnx session died")):
        slot.request_update(path)
        assert slot.wait_idle(10.0)
        assert slot.active.model_version == 1 and slot.previous is None
        assert log.lines[-1].startswith(f"ERROR model update {path} ignored, still serving /ckpt/v1 (model_version 1)")
        assert reason in log.lines[-1]
    slot.request_update("/ckpt/same")
    assert slot.wait_idle(10.0)
    assert log.lines[-1] == "INFO model update /ckpt/same: already serving model_version 1" and slot.previous is None
    assert not changes
    slot.request_update("/ckpt/good")  # the loader is not stuck after failures
    assert slot.wait_idle(10.0) and slot.active.model_version == 6


def test_rollback_swaps_back_and_again_forward() -> None:
    loader = Loader({"/ckpt/v2": FakePolicy(2)})
    slot, _, changes = _slot(loader)
    ok, message = slot.rollback()
    assert not ok and message == "no previous version; serving /ckpt/v1" and not changes
    slot.request_update("/ckpt/v2")
    assert slot.wait_idle(10.0)
    ok, message = slot.rollback()
    assert ok and slot.active.model_version == 1 and slot.policy.model_version == 1
    assert message == "now serving /ckpt/v1 (model_version 1); /ckpt/v2 (model_version 2) kept as previous"
    ok, _ = slot.rollback()
    assert ok and slot.active.checkpoint_path == "/ckpt/v2" and slot.previous.checkpoint_path == "/ckpt/v1"
    assert [c.model_version for c in changes] == [2, 1, 2]


def test_a_source_that_cannot_be_adapted_refuses_updates() -> None:
    loader = Loader({"/ckpt/v2": FakePolicy(2)})
    slot, _, _ = _slot(loader, active=FakePolicy(0, adaptable=False))
    with pytest.raises(UpdateRefused, match="'fake' is not adaptable"):
        slot.request_update("/ckpt/v2")
    slot, _, _ = _slot(loader)
    with pytest.raises(UpdateRefused, match="empty checkpoint path"):
        slot.request_update("  ")
    assert not loader.loaded and not slot.busy


def test_a_failing_report_is_logged_and_the_swap_stands() -> None:
    loader = Loader({"/ckpt/v2": FakePolicy(2)})
    log = ListLog()

    def report(_served) -> None:
        raise RuntimeError("publisher gone")

    slot = PolicySlot(FakePolicy(1), "/ckpt/v1", loader, on_change=report, log=log)
    slot.request_update("/ckpt/v2")
    assert slot.wait_idle(10.0) and slot.active.model_version == 2
    assert "reporting it failed: publisher gone" in log.text()
    assert slot.rollback()[0] and slot.active.model_version == 1
