"""funcrl's objectives: one module per algorithm, each following one protocol.

Every objective module (``funcrl.objectives.sac``, importable as ``funcrl.sac`` too) provides the
same six names -- ``Config``, ``Nets``, ``init``, ``loss``, ``act`` and ``trainer`` -- described in
:mod:`funcrl.objectives.protocol`. The pieces they share live in named modules here:
:mod:`~funcrl.objectives.common` (batch access and checks, reductions, distances, priorities) and
the family modules that the protocol documents.
"""

from __future__ import annotations

OBJECTIVES = (
    # off-policy
    "sac", "td3", "ddpg", "dqn", "c51", "redq", "crossq", "discrete_sac", "qmix",
    # on-policy
    "ppo", "a2c", "reinforce",
    # offline
    "iql", "discrete_iql", "td3_bc", "cql", "discrete_cql", "bc", "dt", "online_dt",
)  # fmt: skip

__all__ = ["OBJECTIVES"]
