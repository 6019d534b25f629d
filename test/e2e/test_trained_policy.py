"""A policy trained on the expert's demonstrations places cubes on the MuJoCo Franka (issue 5).

``hybridvla train`` as a user runs it for this robot: demonstrations from the scripted
expert (with the suction cup's state, the one thing the arm's joints cannot show), the
model trained on them, then DAgger rounds in which the expert labels the states the policy
itself visits; the checkpoint is the round's policy that placed the most cubes in its own
collection. That choice is made on those episodes, so they are not counted here: the
checkpoint is run in closed loop on fresh nominal scenes no recording, DAgger round or
choice used, through the deployed control path (the real action buffer and safety
filter, MuJoCo contact physics; ``sim.rollout``, the graph minus DDS). It must place the
cube on the target in at least the stated number of those episodes.

Measured: see the README ("What the learned policy does on the MuJoCo Franka"). Before
any DAgger round the trained policy placed 0 of 20 in each of three runs, and without the
suction state 3 DAgger rounds stayed at 0 of 20, so this test fails without either.
"""
from __future__ import annotations

import json

import pytest

from hybridvla_ros.cli_model import train_main
from hybridvla_ros.model.checkpoint import load_checkpoint
from hybridvla_ros.model.train import TRAIN_LOG
from hybridvla_ros.studies.transfer import policy_success

pytestmark = [pytest.mark.e2e]

DAGGER_EPISODES = 20      # per round
EPISODES = 40             # closed-loop episodes of the checkpoint on fresh nominal scenes
EVAL_SEED = 50_000        # scene seeds no recording or DAgger round used
# Stated: at least 1 placed cube in the 40 episodes (2.5 %). Measured on the 2-core machine: see
# the README; before DAgger, 0/20 in each of three runs.
STATED_PLACED = 1
# 1500 optimizer steps, not the default 4500 (which places more, study 5): the floor was measured with
# these, and the suite stays within its time. The closed-loop episodes (DAgger's and the 40 here) run on
# 2 processes (--threads 2 gives DAgger 2 workers): the same numbers as on one, in about half the time.
RECIPE = ["--embodiments", "franka", "--train-steps", "1500", "--dagger-rounds", "2", "--dagger-episodes",
          str(DAGGER_EPISODES), "--threads", "2", "--quiet"]


def test_a_policy_trained_on_the_experts_demonstrations_places_cubes(tmp_path) -> None:
    out = tmp_path / "franka"
    assert train_main([*RECIPE, "--out", str(out), "--demos", str(tmp_path / "demos")]) == 0
    log = json.loads((out / TRAIN_LOG).read_text())
    curve = [point["franka"]["success_rate"] for point in log["dagger"]]
    policy, config = load_checkpoint(out)
    assert config.embodiment("franka").state_joints == ("suction_cup",)
    result = policy_success(policy, config, "franka", EPISODES, EVAL_SEED, max_s=8.0, workers=2)
    placed = round(result["success_rate"] * EPISODES)
    print(f"DAgger curve {curve}, kept round {log['dagger_kept_round']}; {EPISODES} fresh episodes: {result}; "
          f"placed {placed} of {EPISODES}")
    assert placed >= STATED_PLACED, (curve, result)
