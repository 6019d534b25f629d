"""``sim_expert``: the simulated robot's scripted expert stands in for the model.

A perfect policy through the same sync -> inference -> buffer -> handoff -> safety path, to
show the graph does not spoil one. The expert reads the simulator, not the observation: the
simulated robot publishes its plan for the next chunk on ``sim_robot/expert_chunk``
(``sim_robot.expert_chunk_rate_hz`` > 0), which this source declares in ``plan_topics``; the
inference node hands each plan to ``on_plan`` and each ``infer`` answers with the newest one,
if it is fresh and new. Its weights cannot be adapted.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from hybridvla_ros.params.inference import InferenceParams
from hybridvla_ros.policies.base import PolicyChunk, PolicyInputError, PolicyObservation
from hybridvla_ros.policies.registry import register_policy

EXPERT_PLAN_TOPIC = "sim_robot/expert_chunk"
HEAD_TYPE = "sim_expert"


class SimExpertPolicy:
    """Serves the newest expert plan; ``clock`` gives the time plans' ages are measured against
    (seconds, the plans' clock: wall time unless the graph runs on simulated time)."""

    name = "sim_expert"
    adaptable = False
    inpaints = False  # a plan is what the expert made; PolicyObservation.prefix is ignored
    cameras: tuple[str, ...] = ()
    state_joints: tuple[str, ...] = ()  # the expert reads the simulator, not the observation
    model_version = 0
    plan_topics: tuple[str, ...] = (EXPERT_PLAN_TOPIC,)
    MAX_AGE_S = 0.3  # an older plan is not used: the robot has moved on since it was made

    def __init__(self, joint_names: Sequence[str], chunk_size: int, step_period_s: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.joint_names: tuple[str, ...] = tuple(joint_names)
        self.action_dim = len(self.joint_names)
        self.chunk_size = int(chunk_size)
        self.step_period_s = float(step_period_s)
        self._clock = clock
        self._plan: PolicyChunk | None = None
        self._last_start_s: float | None = None  # the plan last answered with

    def on_plan(self, topic: str, plan: PolicyChunk) -> None:
        """Keep ``plan`` as the newest (checked when it is used); ValueError for a topic not in plan_topics."""
        if topic not in self.plan_topics:
            raise ValueError(f"plan_topics: the sim expert reads {list(self.plan_topics)}, got a plan on {topic!r}")
        self._plan = plan

    def infer(self, obs: PolicyObservation) -> PolicyChunk:
        """The newest plan, on its own time base (it starts when the expert made it, not at the frame).

        PolicyInputError when there is no plan, it has the wrong shape or step period, it is older
        than MAX_AGE_S, or it was already answered with (the buffer keeps playing that one)."""
        plan = self._plan
        if plan is None:
            raise PolicyInputError(f"no expert plan yet on {EXPERT_PLAN_TOPIC} "
                                   "(is sim_robot.expert_chunk_rate_hz > 0?)")
        if plan.actions.shape != (self.chunk_size, self.action_dim):
            raise PolicyInputError(f"expert plan has shape {plan.actions.shape}; this robot needs "
                                   f"({self.chunk_size}, {self.action_dim}) (chunk_size, action_dim)")
        if abs(plan.step_period_s - self.step_period_s) > 1e-9:
            raise PolicyInputError(f"expert plan has step_period_s {plan.step_period_s}; this robot's control "
                                   f"period is {self.step_period_s} s")
        age_s = self._clock() - plan.start_s
        if age_s > self.MAX_AGE_S:
            raise PolicyInputError(f"expert plan is {age_s:.3f} s old (more than {self.MAX_AGE_S} s)")
        if self._last_start_s is not None and plan.start_s <= self._last_start_s:
            raise PolicyInputError("no new expert plan since the last chunk")
        self._last_start_s = plan.start_s
        return PolicyChunk(actions=plan.actions, start_s=plan.start_s, step_period_s=self.step_period_s,
                           confidence=1.0, latency_s=0.0, head_type=HEAD_TYPE, model_version=self.model_version)

    def warmup(self) -> None:
        """Nothing to warm: a plan is copied, not computed."""

    def reset(self) -> None:
        """Forget the plans seen so far: the next ``infer`` waits for a new one."""
        self._plan, self._last_start_s = None, None


@register_policy("sim_expert")
def make_sim_expert_policy(params: InferenceParams, checkpoint_path: str) -> SimExpertPolicy:
    """The simulated expert for ``params``' robot (``checkpoint_path`` is not read: it has no weights)."""
    return SimExpertPolicy(params.joint_names, params.chunk_size, params.control_period_s)
