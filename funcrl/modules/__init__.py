"""Keyed modules: actors, value operators, Q-value policies, exploration, value normalisers.

Every module maps ``(params, Record) -> Record`` (see :mod:`funcrl.modules.keyed`).
"""

from funcrl.modules.actors import (
    Actor,
    ActorCriticOperator,
    ActorCriticWrapper,
    ActorValueOperator,
    DecisionTransformerInferenceWrapper,
    MultiStepActorWrapper,
    ProbabilisticActor,
    TanhModule,
    ValueOperator,
    dist_sample,
)
from funcrl.modules.exploration import (
    AdditiveGaussian,
    ConsistentDropout,
    EGreedy,
    OrnsteinUhlenbeck,
    linear_annealing,
    ou_increment,
    ou_sigma,
    random_action,
)
from funcrl.modules.keyed import INTERACTION_TYPES, Keyed, Sequential, VmapModule
from funcrl.modules.lm_head import LastHiddenState, LMHeadActorValueOperator, last_hidden_state
from funcrl.modules.planners import (
    CEMConfig,
    CEMPlanner,
    MPPIConfig,
    MPPIPlanner,
    WorldModelWrapper,
    cem_plan,
    mppi_plan,
    rollout_scores,
    world_model_step,
)
from funcrl.modules.qvalue import (
    ACTION_SPACES,
    DistributionalQValueActor,
    DistributionalQValueModule,
    QValueActor,
    QValueModule,
    chosen_action_value,
    greedy_action,
    mask_action_values,
    support_expected,
)
from funcrl.modules.value_norm import (
    PopArtValueNorm,
    RunningValueNorm,
    popart_preserve,
    popart_update,
)

# TorchRL's names, for readers coming from it.
SafeModule = Keyed
TensorDictModule = Keyed
SafeSequential = Sequential
TensorDictSequential = Sequential
SafeProbabilisticActor = ProbabilisticActor
AdditiveGaussianModule = AdditiveGaussian
EGreedyModule = EGreedy
OrnsteinUhlenbeckProcessModule = OrnsteinUhlenbeck
ConsistentDropoutModule = ConsistentDropout

__all__ = [
    "LastHiddenState",
    "LMHeadActorValueOperator",
    "last_hidden_state",
    "CEMConfig",
    "CEMPlanner",
    "MPPIConfig",
    "MPPIPlanner",
    "WorldModelWrapper",
    "cem_plan",
    "mppi_plan",
    "rollout_scores",
    "world_model_step",
    "ACTION_SPACES",
    "INTERACTION_TYPES",
    "Actor",
    "ActorCriticOperator",
    "ActorCriticWrapper",
    "ActorValueOperator",
    "AdditiveGaussian",
    "AdditiveGaussianModule",
    "ConsistentDropout",
    "ConsistentDropoutModule",
    "DecisionTransformerInferenceWrapper",
    "DistributionalQValueActor",
    "DistributionalQValueModule",
    "EGreedy",
    "EGreedyModule",
    "Keyed",
    "MultiStepActorWrapper",
    "OrnsteinUhlenbeck",
    "OrnsteinUhlenbeckProcessModule",
    "PopArtValueNorm",
    "ProbabilisticActor",
    "QValueActor",
    "QValueModule",
    "RunningValueNorm",
    "SafeModule",
    "SafeProbabilisticActor",
    "SafeSequential",
    "Sequential",
    "TanhModule",
    "TensorDictModule",
    "TensorDictSequential",
    "ValueOperator",
    "VmapModule",
    "chosen_action_value",
    "dist_sample",
    "greedy_action",
    "linear_annealing",
    "mask_action_values",
    "ou_increment",
    "ou_sigma",
    "popart_preserve",
    "popart_update",
    "random_action",
    "support_expected",
]
