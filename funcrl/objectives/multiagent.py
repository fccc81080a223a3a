"""Multi-agent actor-critic nets: MADDPG / IDDPG, MASAC / ISAC and MAPPO / IPPO, as TorchRL's
``sota-implementations/multiagent`` builds them, on :mod:`funcrl.nn.multiagent`'s networks.

The factories return the objectives' own ``Nets`` (:class:`funcrl.ddpg.Nets`,
:class:`funcrl.sac.Nets`, :class:`funcrl.ppo.Nets`), so the multi-agent runs use the single-agent
losses unchanged on a group-viewed batch (:func:`funcrl.nn.multiagent.group_view`).
"""

from __future__ import annotations

import math
from typing import Any

from funcrl.nn.core import Activation
from funcrl.nn.multiagent import MultiAgentMLP, TanhDeltaActor, _static_bound

__all__ = ["agent_dims", "ddpg_nets", "ppo_config", "ppo_nets", "sac_nets", "sac_target_entropy"]


def agent_dims(observation_spec: Any, action_spec: Any, owner: str) -> tuple[int, int, int]:
    """``(n_agents, observation_dim, action_dim)`` from grouped specs ``[n_agents, d]`` and
    ``[n_agents, a]`` (TorchRL's ``("agents", "observation")``/``("agents", "action")`` specs)."""
    shapes = {}
    for name, spec in (("observation_spec", observation_spec), ("action_spec", action_spec)):
        shape = tuple(getattr(spec, "shape", ()) or ())
        if len(shape) != 2:
            raise ValueError(
                f"{owner}: {name} must have shape [n_agents, d] (one agent group), got {shape}"
            )
        shapes[name] = shape
    n_obs, d_obs = shapes["observation_spec"]
    n_act, d_act = shapes["action_spec"]
    if n_obs != n_act:
        raise ValueError(
            f"{owner}: observation_spec has n_agents={n_obs} but action_spec has n_agents={n_act}"
        )
    return n_obs, d_obs, d_act


def _critic(n, d_obs, d_act, centralized_critic, share_params, **mlp) -> MultiAgentMLP:
    # Q_i(s, a): the MLP sees (o_i, a_i) of its agent, or every agent's (o, a) when centralized.
    return MultiAgentMLP(
        d_obs + d_act, 1, n, centralized=centralized_critic, share_params=share_params, **mlp
    )


def ddpg_nets(
    observation_spec: Any,
    action_spec: Any,
    *,
    centralized_critic: bool = True,
    share_params: bool = True,
    depth: int | None = 2,
    num_cells: int | tuple[int, ...] = 256,
    activation: Activation = "tanh",
):
    """:class:`funcrl.ddpg.Nets` for MADDPG (``centralized_critic=True``, Lowe et al. 2017) or
    IDDPG (``False``), as TorchRL's ``sota-implementations/multiagent/maddpg_iddpg.py``.

    Actor: a decentralised :class:`MultiAgentMLP` ``o_i -> a_i`` through :class:`TanhDeltaActor`
    on the action spec's bounds. Critic: a :class:`MultiAgentMLP` ``(o, a) -> Q_i`` that sees
    every agent's observation and action when centralized. Both use ``share_params``, ``depth``
    layers of ``num_cells`` and ``activation`` (TorchRL's example: 2 x 256, tanh)::

        nets = ddpg_nets(obs_spec, act_spec)              # specs [n_agents, d], [n_agents, a]
        params = ddpg.init(0, obs_spec, act_spec, nets=nets)
        losses = ddpg.loss(params, group_view(batch), nets=nets)

    The action spec must be bounded (``.low``/``.high``).
    """
    from funcrl import ddpg

    owner = "multiagent.ddpg_nets"
    n, d_obs, d_act = agent_dims(observation_spec, action_spec, owner)
    if not (hasattr(action_spec, "low") and hasattr(action_spec, "high")):
        raise TypeError(f"{owner}: action_spec must be bounded (.low/.high), got {action_spec!r}")
    mlp = dict(depth=depth, num_cells=num_cells, activation=activation)
    policy = MultiAgentMLP(d_obs, d_act, n, centralized=False, share_params=share_params, **mlp)
    actor = TanhDeltaActor(policy, _static_bound(action_spec.low), _static_bound(action_spec.high))
    return ddpg.Nets(
        actor=actor, value=_critic(n, d_obs, d_act, centralized_critic, share_params, **mlp)
    )


def sac_nets(
    observation_spec: Any,
    action_spec: Any,
    *,
    centralized_critic: bool = True,
    share_params: bool = True,
    depth: int | None = 2,
    num_cells: int | tuple[int, ...] = 256,
    activation: Activation = "tanh",
):
    """:class:`funcrl.sac.Nets` for MASAC (``centralized_critic=True``) or ISAC (``False``), as
    TorchRL's ``sota-implementations/multiagent/sac.py``.

    Actor: a decentralised :class:`MultiAgentMLP` ``o_i -> (loc_i, scale_i)`` (``2 a`` outputs,
    split by SAC's ``NormalParamExtractor`` into a ``TanhNormal`` on ``params["action_bounds"]``).
    Critic: one :class:`MultiAgentMLP` ``(o, a) -> Q_i`` (SAC stacks ``num_qvalue_nets`` of them).
    Use with :func:`sac_target_entropy`::

        nets = sac_nets(obs_spec, act_spec)
        config = sac.Config(target_entropy=sac_target_entropy(act_spec))
        params = sac.init(0, obs_spec, act_spec, config, nets)
        losses = sac.loss(params, group_view(batch), config=config, nets=nets)
    """
    from funcrl import sac

    n, d_obs, d_act = agent_dims(observation_spec, action_spec, "multiagent.sac_nets")
    mlp = dict(depth=depth, num_cells=num_cells, activation=activation)
    actor = MultiAgentMLP(d_obs, 2 * d_act, n, centralized=False, share_params=share_params, **mlp)
    return sac.Nets(
        actor=actor, qvalue=_critic(n, d_obs, d_act, centralized_critic, share_params, **mlp)
    )


def sac_target_entropy(action_spec: Any) -> float:
    """TorchRL's ``"auto"`` target entropy for a grouped action spec ``[n_agents, a]``: ``-a``.

    SAC's ``log pi`` is per agent (``[*B, n_agents]``), so the target is one agent's action size,
    which is what TorchRL's ``SACLoss`` computes for a key under a group; funcrl's ``"auto"`` on a
    group-viewed batch would count every agent's dims (``-n_agents * a``).
    """
    shape = tuple(getattr(action_spec, "shape", ()) or ())
    if len(shape) < 2:
        raise ValueError(
            f"sac_target_entropy: action_spec must have shape [n_agents, a], got {shape}"
        )
    return -float(math.prod(shape[1:]))


def ppo_nets(
    observation_spec: Any,
    action_spec: Any,
    *,
    centralized_critic: bool = True,
    share_params: bool = True,
    depth: int | None = 2,
    num_cells: int | tuple[int, ...] = 256,
    activation: Activation = "tanh",
    distribution: str | None = None,
):
    """:class:`funcrl.ppo.Nets` for MAPPO (``centralized_critic=True``, Yu et al. 2022) or IPPO
    (``False``, de Witt et al. 2020), as TorchRL's ``sota-implementations/multiagent/mappo_ippo.py``.

    Actor: a decentralised :class:`MultiAgentMLP` ``o_i -> (loc_i, scale_i)`` (``2 a`` outputs,
    a ``TanhNormal`` on ``params["action_bounds"]``, the action spec's per-agent bounds) or
    ``o_i -> logits_i`` (``n`` outputs, a categorical policy, for a discrete spec with ``.n``).
    Critic: a :class:`MultiAgentMLP` ``o -> V_i`` that sees every agent's observation when
    centralized (MAPPO; with shared params every agent gets the same value) or only its own (IPPO).
    Both use ``share_params``, ``depth`` layers of ``num_cells`` and ``activation`` (TorchRL's
    example: 2 x 256, tanh). The single-agent PPO then runs per agent (:attr:`ppo.Nets.agent_shape`:
    log-probs ``[*B, n_agents]``, values and advantages ``[*B, n_agents, 1]``)::

        nets = ppo_nets(obs_spec, act_spec)                # specs [n_agents, d], [n_agents, a]
        config = ppo_config()                              # TorchRL's MAPPOLoss defaults
        params = ppo.init(0, obs_spec, act_spec, config, nets)
        rollout = group_view(rollout)                      # [E, T]; ("agents", ...) keys lifted
        losses = ppo.loss(params, rollout, config=config, nets=nets)
        train = ppo.trainer(optim.adam(3e-4), config=config, nets=nets)

    Args:
        observation_spec: ``[n_agents, d]``.
        action_spec: ``[n_agents, a]`` bounded (continuous), or ``[n_agents]`` with ``.n``
            actions (discrete: TorchRL's ``Categorical``; the action is an index per agent).
        centralized_critic: MAPPO's critic (``True``) or IPPO's (``False``).
        share_params: one actor and one critic for all agents, else one per agent.
        depth, num_cells, activation: the MLPs' (TorchRL's ``MultiAgentMLP`` arguments).
        distribution: the policy (:data:`funcrl.objectives.on_policy.DISTRIBUTIONS`); ``None``:
            ``"categorical"`` for a spec with ``.n``, else ``"tanh_normal"`` (TorchRL's example).
    """
    from funcrl import ppo

    owner = "multiagent.ppo_nets"
    n_actions = getattr(action_spec, "n", None)
    if distribution is None:
        distribution = "tanh_normal" if n_actions is None else "categorical"
    discrete = distribution in ("categorical", "masked_categorical")
    if discrete:
        if n_actions is None:
            raise TypeError(
                f"{owner}: the {distribution} policy needs a discrete action_spec with .n, got "
                f"{action_spec!r}"
            )
        shape = tuple(getattr(action_spec, "shape", ()) or ())
        if len(shape) != 1:
            raise ValueError(
                f"{owner}: a discrete action_spec must have shape [n_agents] (one action index "
                f"per agent), got {shape}"
            )
        obs_shape = tuple(getattr(observation_spec, "shape", ()) or ())
        if len(obs_shape) != 2:
            raise ValueError(
                f"{owner}: observation_spec must have shape [n_agents, d] (one agent group), got "
                f"{obs_shape}"
            )
        n, d_obs = obs_shape
        if shape[0] != n:
            raise ValueError(
                f"{owner}: observation_spec has n_agents={n} but action_spec has "
                f"n_agents={shape[0]}"
            )
        out = int(n_actions)
    else:
        n, d_obs, d_act = agent_dims(observation_spec, action_spec, owner)
        out = 2 * d_act
    mlp = dict(depth=depth, num_cells=num_cells, activation=activation, share_params=share_params)
    return ppo.Nets(
        actor=MultiAgentMLP(d_obs, out, n, centralized=False, **mlp),
        critic=MultiAgentMLP(d_obs, 1, n, centralized=centralized_critic, **mlp),
        distribution=distribution,
    )


def ppo_config(**overrides: Any):
    """:class:`funcrl.ppo.Config` with TorchRL 0.14's ``MAPPOLoss`` / ``IPPOLoss`` defaults:
    the clip variant, ``entropy_coeff=0.01`` and the advantage standardised per agent
    (``normalize_advantage=True``, ``normalize_advantage_exclude_dims=(-2,)``: the agent dim of
    ``[*B, n_agents, 1]``); ``overrides`` replace any field. The two losses differ only by the
    critic (:func:`ppo_nets`' ``centralized_critic``). TorchRL's optional ``value_norm``
    (PopArt) is not implemented.
    """
    from funcrl import ppo

    fields = dict(
        variant="clip",
        entropy_coeff=0.01,
        normalize_advantage=True,
        normalize_advantage_exclude_dims=(-2,),
    )
    fields.update(overrides)
    return ppo.Config(**fields)
