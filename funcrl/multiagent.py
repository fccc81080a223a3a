"""Multi-agent networks, mixers and nets factories, gathered for existing imports.

The networks and mixers live in :mod:`funcrl.nn.multiagent` (also exported by :mod:`funcrl.nn`),
the MADDPG / MASAC / MAPPO nets factories in :mod:`funcrl.objectives.multiagent`; this module re-exports
both so that ``from funcrl.multiagent import QMixer`` keeps working.
"""

from funcrl.nn.multiagent import (
    MultiAgentConvNet,
    MultiAgentMLP,
    QMixer,
    TanhDeltaActor,
    VDNMixer,
    apply_multiagent,
    group_view,
    init_multiagent,
    qmix_mix,
    vdn_mix,
)
from funcrl.objectives.multiagent import (
    agent_dims,
    ddpg_nets,
    ppo_config,
    ppo_nets,
    sac_nets,
    sac_target_entropy,
)

__all__ = [
    "MultiAgentMLP",
    "MultiAgentConvNet",
    "QMixer",
    "VDNMixer",
    "TanhDeltaActor",
    "agent_dims",
    "apply_multiagent",
    "ddpg_nets",
    "group_view",
    "init_multiagent",
    "ppo_config",
    "ppo_nets",
    "qmix_mix",
    "sac_nets",
    "sac_target_entropy",
    "vdn_mix",
]
