"""QMIX (Rashid et al. 2018) and VDN (Sunehag et al. 2017): TorchRL's ``QMixerLoss``.

    params = qmix.init(0, obs_spec, act_spec, state_spec)
    # {"local_value", "mixer", "target_local_value", "target_mixer"}
    losses = qmix.loss(params, batch)                     # {"loss", "td_error"}

Each agent ``i`` has local action values ``Q_i(o_i, .)`` (one shared net, or a
:class:`funcrl.multiagent.MultiAgentMLP` with a parameter set per agent); the values of the taken
actions are mixed into a global ``Q_tot`` and trained with a DQN update on the team reward:

    Q_tot(s, a)  = mixer(Q_1(o_1, a_1), ..., Q_n(o_n, a_n); s)
    y            = r + gamma * (1 - terminated) * mixer'(max_a Q'_1(o'_1, a), ..., max_a Q'_n(o'_n, a); s')
    L            = d(Q_tot(s, a), y)

with the QMIX mixer (:class:`funcrl.multiagent.QMixer`, monotone in every ``Q_i`` so the greedy
joint action is the agents' independent greedy actions) or VDN's sum
(``Nets(mixer=VDNMixer(n_agents))``). Primes are the target nets.

Batch layout (TorchRL's grouped keys): per-agent entries under the group, global ones at the top::

    ("agents", "observation") [*B, n_agents, d]     ("next", "agents", "observation")
    ("agents", "action")      [*B, n_agents, n] one-hot or [*B, n_agents(, 1)] categorical
    "state" [*B, *state_shape]                      ("next", "state")         (QMIX only)
    ("next", "reward") [*B, 1]                      ("next", "terminated") [*B, 1]

The reward and terminated flags are the team's (TorchRL's ``QMixerLoss`` reads them at the top
level; VMAS gives per-agent rewards, which TorchRL's example averages over the agents first).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from funcrl import tree
from funcrl.multiagent import QMixer
from funcrl.nn import MLP, make_generator
from funcrl.objectives.common import (
    check_loss_function,
    distance_loss,
    get,
    get_flag,
    mlp,
    td0_target,
)
from funcrl.objectives.dqn import (
    action_space_of,
    check_action,
    chosen_action_value,
    double_q_value,
    mask_action_values,
    max_action_value,
)
from funcrl.record import NestedKey, Record

__all__ = ["Config", "Nets", "init", "loss", "trainer", "qmixer", "mixed_value"]


@dataclasses.dataclass(frozen=True)
class Config:
    """QMIX/VDN hyperparameters and batch keys (TorchRL's ``QMixerLoss`` arguments, defaults and
    ``tensor_keys``).

    Attributes:
        loss_function: ``"l2"`` (default), ``"l1"`` or ``"smooth_l1"`` between ``Q_tot`` and ``y``.
        delay_value: keep target copies ``params["target_local_value"]`` and
            ``params["target_mixer"]`` (TorchRL's default ``True``); otherwise the target uses the
            gradient-stopped online nets.
        double_dqn: select each agent's next action with the online local net and evaluate it
            with the target one (a funcrl extension; TorchRL's ``QMixerLoss`` has no double-Q).
        gamma: discount (TorchRL's default TD(0) estimator uses 0.99).
        action_space: ``"one_hot"`` (TorchRL's fallback), ``"categorical"``, ``"mult_one_hot"``,
            ``"binary"`` or a discrete spec, per agent (as :class:`funcrl.dqn.Config`).
        var_nums: group sizes of a ``"mult_one_hot"`` space.
        observation_key: per-agent observations (the local value net's input).
        action_key: per-agent actions (TorchRL's ``tensor_keys.action``).
        state_key: the global state the mixer reads (only when the mixer needs a state).
        reward_key, terminated_key: team reward and termination, read under ``"next"``.
        action_mask_key: per-agent boolean masks of valid actions ``[*B, n_agents, n]``, read at
            the key and under ``"next"`` (TorchRL's ``QValueModule(action_mask_key=...)``).
    """

    loss_function: str = "l2"
    delay_value: bool = True
    double_dqn: bool = False
    gamma: float = 0.99
    action_space: Any = "one_hot"
    var_nums: tuple[int, ...] | None = None
    observation_key: NestedKey = ("agents", "observation")
    action_key: NestedKey = ("agents", "action")
    state_key: NestedKey = "state"
    reward_key: NestedKey = "reward"
    terminated_key: NestedKey = "terminated"
    action_mask_key: NestedKey | None = None

    def __post_init__(self) -> None:
        check_loss_function(self.loss_function, "qmix.Config")
        if self.double_dqn and not self.delay_value:
            raise ValueError("qmix.Config: double_dqn=True requires delay_value=True")
        if not 0.0 <= float(self.gamma) <= 1.0:
            raise ValueError(f"qmix.Config: gamma must be in [0, 1], got {self.gamma}")
        name, var_nums = action_space_of(self.action_space)
        object.__setattr__(self, "action_space", name)
        if self.var_nums is not None:
            object.__setattr__(self, "var_nums", tuple(int(n) for n in self.var_nums))
        elif var_nums is not None:
            object.__setattr__(self, "var_nums", var_nums)
        if name == "mult_one_hot" and not self.var_nums:
            raise ValueError("qmix.Config: action_space='mult_one_hot' needs var_nums")
        for f in ("observation_key", "action_key", "state_key", "reward_key", "terminated_key"):
            v = getattr(self, f)
            if isinstance(v, list):
                object.__setattr__(self, f, tuple(v))


def _key(prefix: str, key: NestedKey) -> tuple[str, ...]:
    return (prefix, *key) if isinstance(key, tuple) else (prefix, key)


def qmixer(
    params: dict[str, Any], chosen_action_value: torch.Tensor, state: torch.Tensor
) -> torch.Tensor:
    """The default mixer of :class:`Nets`: a :class:`funcrl.multiagent.QMixer` sized from params.

    ``n_agents`` and ``mixing_embed_dim`` come from the hypernetworks' weight shapes (static, so
    free under ``torch.compile``/``vmap``); the state's dims after the batch dims of
    ``chosen_action_value`` are flattened.

    Shapes:
        ``chosen_action_value [*B, n_agents, 1]``, ``state [*B, *state_shape] -> [*B, 1]``.
    """
    embed, state_dim = params["hyper_w_final"]["weight"].shape[-2:]
    n_agents = params["hyper_w_1"]["weight"].shape[-2] // embed
    batch = chosen_action_value.shape[:-2]
    if state is None or tuple(state.shape[: len(batch)]) != tuple(batch):
        raise ValueError(
            f"qmixer: state must have the batch dims {tuple(batch)} of chosen_action_value, got "
            f"{None if state is None else tuple(state.shape)}"
        )
    state = state.reshape(*batch, -1)
    if state.shape[-1] != state_dim:
        raise ValueError(f"qmixer: state has {state.shape[-1]} features, params expect {state_dim}")
    net = QMixer(state_shape=(state_dim,), mixing_embed_dim=embed, n_agents=n_agents)
    return net(params, chosen_action_value, state)


qmixer.needs_state = True  # type: ignore[attr-defined]


@dataclasses.dataclass(frozen=True)
class Nets:
    """The local value net and the mixer.

    Attributes:
        local_value: ``(params, observation [*B, n_agents, d]) -> action values [*B, n_agents,
            n]``. The default is one ReLU :class:`funcrl.nn.MLP` shared by all agents (it
            broadcasts over the agent dim); pass a :class:`funcrl.multiagent.MultiAgentMLP` for
            per-agent parameters or a centralized input.
        mixer: ``(params, chosen_action_value [*B, n_agents, 1], state) -> [*B, 1]``. The default
            :func:`qmixer` is QMIX's; ``VDNMixer(n_agents)`` gives VDN. The loss reads the state
            only when ``mixer.needs_state`` (assumed ``True`` when absent).
        num_cells: hidden sizes of the default local value MLP.
        mixing_embed_dim: QMIX's mixing width for the default mixer (TorchRL's examples use 32).
    """

    local_value: Callable[..., torch.Tensor] = mlp
    mixer: Callable[..., torch.Tensor] = qmixer
    num_cells: tuple[int, ...] = (256, 256)
    mixing_embed_dim: int = 32


def _needs_state(mixer: Callable) -> bool:
    return bool(getattr(mixer, "needs_state", True))


def init(
    seed: int | torch.Generator,
    observation_spec: Any,
    action_spec: Any,
    state_spec: Any = None,
    config: Config = Config(),
    nets: Nets = Nets(),
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> dict[str, Any]:
    """``{"local_value", "mixer"}`` plus their target copies with ``delay_value``.

    Args:
        seed: int or ``torch.Generator`` (never the global RNG).
        observation_spec: per-agent observations, shape ``[n_agents, d]``.
        action_spec: per-agent discrete actions with ``.n`` (``Categorical(n, shape=(n_agents,))``
            or ``OneHot(n, shape=(n_agents, n))``).
        state_spec: the global state (shape ``state_shape``); needed by the default QMIX mixer.
    """
    owner = "qmix.init"
    obs_shape = tuple(getattr(observation_spec, "shape", ()))
    if len(obs_shape) < 2:
        raise ValueError(
            f"{owner}: observation_spec must have shape [n_agents, d], got {obs_shape}"
        )
    n_agents, d_obs = obs_shape[-2], obs_shape[-1]
    if config.action_space == "mult_one_hot":
        n_actions = sum(config.var_nums)
    elif hasattr(action_spec, "n"):
        n_actions = int(action_spec.n)
    else:
        raise TypeError(
            f"{owner}: action_spec must be a discrete spec with .n, got {action_spec!r}"
        )
    gen = make_generator(seed)
    kw = {"device": device, "dtype": dtype}
    if nets.local_value is mlp:
        local = MLP(d_obs, n_actions, num_cells=tuple(nets.num_cells), activation="relu")
        local_params = local.init(gen, **kw)
    elif hasattr(nets.local_value, "init"):
        local_params = nets.local_value.init(gen, **kw)
    else:
        raise TypeError(
            f"{owner}: cannot initialise params for the plain function {nets.local_value!r}; "
            "pass a funcrl network (with .init) in Nets, or build the params yourself"
        )
    if nets.mixer is qmixer:
        if state_spec is None:
            raise ValueError(f"{owner}: the default QMIX mixer needs state_spec")
        mixer = QMixer(tuple(state_spec.shape), nets.mixing_embed_dim, n_agents)
        mixer_params = mixer.init(gen, **kw)
    elif hasattr(nets.mixer, "init"):
        mixer_params = nets.mixer.init(gen, **kw)
    else:
        raise TypeError(
            f"{owner}: cannot initialise params for the plain mixer function {nets.mixer!r}"
        )
    params = {"local_value": local_params, "mixer": mixer_params}
    if config.delay_value:
        params["target_local_value"] = tree.clone(local_params)
        params["target_mixer"] = tree.clone(mixer_params)
    return params


# --- the equations -------------------------------------------------------------------------------


def mixed_value(
    mixer: Callable[..., torch.Tensor],
    mixer_params: Any,
    local_chosen_value: torch.Tensor,
    state: torch.Tensor | None,
) -> torch.Tensor:
    """``Q_tot = mixer(Q_1, ..., Q_n; s)``: ``[*B, n_agents] -> [*B]``."""
    q = local_chosen_value.unsqueeze(-1)
    out = mixer(mixer_params, q) if state is None else mixer(mixer_params, q, state)
    if tuple(out.shape) != (*q.shape[:-2], 1):
        raise ValueError(
            f"qmix: mixer returned shape {tuple(out.shape)}, expected {(*q.shape[:-2], 1)}"
        )
    return out.squeeze(-1)


# --- the loss ------------------------------------------------------------------------------------


def loss(
    params: dict[str, Any],
    batch: Record,
    *,
    config: Config = Config(),
    nets: Nets = Nets(),
) -> dict[str, torch.Tensor]:
    """The QMIX/VDN loss: ``{"loss": mean d(Q_tot, y), "td_error": (Q_tot - y)^2}``.

    Gradients flow into ``params["local_value"]`` and ``params["mixer"]`` through ``Q_tot(s, a)``
    only; ``y`` is built from gradient-stopped (target) params. ``td_error`` (``[*B, 1]``,
    detached) is the priority TorchRL writes into the input tensordict.

    Args:
        params: ``{"local_value", "mixer"}`` and, with ``delay_value``, ``"target_local_value"``
            and ``"target_mixer"``.
        batch: the keys of :class:`Config` (see the module docstring for the layout).
    """
    owner = "qmix.loss"
    space, var_nums = config.action_space, config.var_nums
    needs_state = _needs_state(nets.mixer)
    obs = get(batch, config.observation_key, owner=owner)
    next_obs = get(batch, _key("next", config.observation_key), owner=owner)
    mask = next_mask = None
    if config.action_mask_key is not None:
        mask = get(batch, config.action_mask_key, owner=owner)
        next_mask = get(batch, _key("next", config.action_mask_key), owner=owner)
    state = next_state = None
    if needs_state:
        state = get(batch, config.state_key, owner=owner)
        next_state = get(batch, _key("next", config.state_key), owner=owner)

    # Q_tot(s, a): the agents' values of their taken actions, mixed.
    q = mask_action_values(nets.local_value(params["local_value"], obs), mask)
    action = get(batch, config.action_key, owner=owner)
    check_action(action, q, config.action_space, owner="qmix.loss", key=config.action_key)
    q_taken = chosen_action_value(q, action, space)  # [*B, n_agents]
    q_tot = mixed_value(nets.mixer, params["mixer"], q_taken, state)  # [*B]

    # y: each agent's greedy next value under the target local net, mixed by the target mixer.
    if config.delay_value:
        local_next = tree.detach(params["target_local_value"])
        mixer_next = tree.detach(params["target_mixer"])
    else:
        local_next = tree.detach(params["local_value"])
        mixer_next = tree.detach(params["mixer"])
    q_next = mask_action_values(nets.local_value(local_next, next_obs), next_mask)
    if config.double_dqn:
        online = tree.detach(params["local_value"])
        q_next_online = mask_action_values(nets.local_value(online, next_obs), next_mask)
        v_next = double_q_value(q_next_online, q_next, space, var_nums)
    else:
        v_next = max_action_value(q_next, space, var_nums)
    q_tot_next = mixed_value(nets.mixer, mixer_next, v_next, next_state)  # [*B]

    reward = get(batch, _key("next", config.reward_key), owner=owner, shape=(1,))
    if reward.shape[:-1] != q_tot.shape:
        raise ValueError(
            f"{owner}: batch[{_key('next', config.reward_key)!r}] has shape "
            f"{tuple(reward.shape)}, expected the team reward {(*q_tot.shape, 1)} (average or sum "
            "per-agent rewards over the agent dim first, as TorchRL's QMIX example does)"
        )
    terminated = get_flag(batch, _key("next", config.terminated_key), owner=owner, like=reward)
    y = td0_target(reward, terminated, q_tot_next.unsqueeze(-1), config.gamma).squeeze(-1)
    y = y.detach()

    td_error = (q_tot - y).pow(2).detach().unsqueeze(-1)
    value_loss = distance_loss(q_tot, y, config.loss_function).mean()
    return {"loss": value_loss, "td_error": td_error}


def trainer(
    optimizer: Any,
    *,
    config: Config = Config(),
    nets: Nets = Nets(),
    tau: float = 0.005,
    hard_target_period: int | None = None,
):
    """``funcrl.training.update`` for QMIX/VDN: local net and mixer trained together, their targets
    Polyak-averaged with ``tau`` (TorchRL's example: ``SoftUpdate(eps=1 - tau)``), or copied
    every ``hard_target_period`` steps."""
    from functools import partial

    from funcrl.training import update

    targets = (
        {"target_local_value": "local_value", "target_mixer": "mixer"}
        if config.delay_value
        else None
    )
    return update(
        partial(loss, config=config, nets=nets),
        optimizer,
        trainable=("local_value", "mixer"),
        targets=targets,
        tau=tau,
        hard_target_period=hard_target_period,
    )
