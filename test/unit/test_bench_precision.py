"""``hybridvla bench-precision`` on a tiny untrained coarse_to_fine checkpoint: runs, reports, and its
reference (the expert's own chunks) really reaches the 1 mm tolerance."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hybridvla_ros.cli import main as cli_main
from hybridvla_ros.launch_description import default_config_dir
from hybridvla_ros.model.bench_precision import expert_chunk
from hybridvla_ros.model.checkpoint import save_checkpoint
from hybridvla_ros.model.demo_data import load_embodiment
from hybridvla_ros.model.policy import EmbodimentSpec, HybridPolicy, PolicyConfig
from hybridvla_ros.sim.kinematic import KinematicSim


def _tiny(tmp_path, head_type: str) -> str:
    torch.manual_seed(0)
    params = load_embodiment(default_config_dir(), "franka", physics="kinematic")
    spec = EmbodimentSpec("franka", 7, params.chunk_size, head_type)
    policy = HybridPolicy(PolicyConfig(embodiments=(spec,), image_size=32, conv_channels=(8, 16), d_model=32,
                                       num_heads=2, num_layers=1, ff_dim=64, token_hidden=64, flow_hidden=64))
    # statistics of small expert steps, so 64 bins of +-3 std are about 1 mrad wide
    q = np.asarray(params.home_position)[None].repeat(20, 0)
    policy.fit_normalization("franka", q, q[:, None, :] + np.random.default_rng(0).normal(0, 3e-3, (20, 16, 7)))
    out = str(tmp_path / head_type)
    save_checkpoint(policy, policy.config, out)
    return out


def test_expert_chunk_is_what_the_expert_then_commands() -> None:
    sim = KinematicSim(load_embodiment(default_config_dir(), "franka", physics="kinematic"), seed=3)
    chunk = expert_chunk(sim, 4)
    for k in range(4):
        np.testing.assert_allclose(sim.expert_target(), chunk[k])
        sim.command_positions(chunk[k])
        sim.step(sim.control_period_s)


def test_bench_precision_writes_json_and_the_expert_reaches_1mm(tmp_path, capsys) -> None:
    out = tmp_path / "bp.json"
    assert cli_main(["bench-precision", "--checkpoint", _tiny(tmp_path, "coarse_to_fine"), "--episodes", "2",
                     "--steps", "60", "--out", str(out), "--quiet", "--config-dir", default_config_dir()]) == 0
    result = json.loads(out.read_text())
    bound = result["representation_bound"]
    assert set(bound) == {"expert", "coarse", "refined"}
    assert bound["expert"]["within_tolerance"] == 1.0 and bound["expert"]["median_mm"] < 1.0
    assert set(result["closed_loop"]) == {"token", "flow", "coarse_to_fine", "routed"}
    assert "median" in capsys.readouterr().out


def test_a_token_only_checkpoint_is_refused_by_name(tmp_path, capsys) -> None:
    assert cli_main(["bench-precision", "--checkpoint", _tiny(tmp_path, "token"), "--episodes", "1",
                     "--out", "", "--quiet", "--config-dir", default_config_dir()]) == 1
    assert "'franka' has a 'token' head" in capsys.readouterr().err


@pytest.mark.parametrize("flag, value", [("--episodes", "0"), ("--tolerance-mm", "-1")])
def test_bad_arguments_exit_2(flag: str, value: str, capsys) -> None:
    assert cli_main(["bench-precision", flag, value]) == 2
    assert flag in capsys.readouterr().err
