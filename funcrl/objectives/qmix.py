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
``config.value_estimator`` (``"td0"``, ``"td1"``, ``"td_lambda"``) computes ``y`` as TorchRL's
``make_value_estimator`` does, over a batch with a trailing time dim. The discrete-action pieces
live in :mod:`funcrl.objectives.discrete`.

Intentional differences from TorchRL 0.14: ``td_error`` is ``|Q_tot - y|`` ``[*B]`` (TorchRL writes
``(Q_tot - y)^2`` as ``[*B, 1]``); ``reduction`` and ``use_prioritized_weights`` exist (TorchRL's
``QMixerLoss`` always takes the unweighted mean); ``double_dqn`` is a funcrl extension;
malformed or out-of-range actions raise (eagerly).
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any

import torch

from funcrl import tree
from funcrl.multiagent import QMixer, VDNMixer
from funcrl.objectives import discrete
from funcrl.objectives.common import (
    check_batch,
    check_loss_function,
    check_mode,
    check_observation,
    check_reduction,
    distance_loss,
    get,
    priority_weights,
    reduce_loss,
    require,
)
from funcrl.objectives.discrete import (
    chosen_action_value,
    double_q_value,
    mask_action_values,
    max_action_value,
)
from funcrl.record import NestedKey, Record

__all__ = [
    "Config",
    "Nets",
    "init",
    "loss",
    "act",
    "trainer",
    "from_torchrl",
    "to_torchrl",
    "mixed_value",
]


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
        reward_key, terminated_key, done_key: team reward and flags, read under ``"next"``
            (``done`` only by TD(1)/TD(lambda)).
        action_mask_key: per-agent boolean masks of valid actions ``[*B, n_agents, n]``, read at
            the key and under ``"next"`` (TorchRL's ``QValueModule(action_mask_key=...)``).
        reduction: ``"mean"`` (TorchRL's), ``"sum"`` or ``"none"``.
        use_prioritized_weights: ``"auto"``/``True`` weight the loss by
            ``batch["priority_weight"] [*B]`` when present; ``False`` ignores it.
        value_estimator: ``"td0"`` (default), ``"td1"`` or ``"td_lambda"``.
        lmbda: TD(lambda)'s lambda (TorchRL's default 0.95).
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
    done_key: NestedKey = "done"
    action_mask_key: NestedKey | None = None
    reduction: str = "mean"
    use_prioritized_weights: bool | str = "auto"
    value_estimator: str = "td0"
    lmbda: float = 0.95

    def __post_init__(self) -> None:
        owner = "qmix.Config"
        check_loss_function(self.loss_function, owner)
        check_reduction(self.reduction, owner)
        if self.double_dqn and not self.delay_value:
            raise ValueError(f"{owner}: double_dqn=True requires delay_value=True")
        if not 0.0 <= float(self.gamma) <= 1.0:
            raise ValueError(f"{owner}: gamma must be in [0, 1], got {self.gamma}")
        name, var_nums = discrete.check_action_space(owner, self.action_space, self.var_nums)
        object.__setattr__(self, "action_space", name)
        object.__setattr__(self, "var_nums", var_nums)
        discrete.check_prioritized(owner, self.use_prioritized_weights)
        discrete.check_value_estimator(owner, self.value_estimator, self.lmbda)
        for f in (
            "observation_key",
            "action_key",
            "state_key",
            "reward_key",
            "terminated_key",
            "done_key",
            "action_mask_key",
        ):
            v = getattr(self, f)
            if isinstance(v, list):
                object.__setattr__(self, f, tuple(v))


def _key(prefix: str, key: NestedKey) -> tuple[str, ...]:
    return (prefix, *key) if isinstance(key, tuple) else (prefix, key)


@dataclasses.dataclass(frozen=True)
class Nets:
    """The local value net and the mixer.

    Attributes:
        local_value: ``(params, observation [*B, n_agents, d]) -> action values [*B, n_agents,
            n]``. ``None`` (the default) is one ReLU :class:`funcrl.nn.MLP` with ``num_cells``
            hidden units shared by all agents (it broadcasts over the agent dim), sized from the
            specs by :func:`init` and from the observation and the params' width by ``loss``;
            pass a :class:`funcrl.multiagent.MultiAgentMLP` for per-agent parameters or a
            centralized input.
        mixer: ``(params, chosen_action_value [*B, n_agents, 1], state) -> [*B, 1]``. ``None``
            (the default) is QMIX's :class:`funcrl.multiagent.QMixer` with ``mixing_embed_dim``,
            sized from the state spec / the batch's state; ``VDNMixer(n_agents)`` gives VDN.
            The loss reads the state only when ``mixer.needs_state`` (assumed ``True`` when
            absent).
        num_cells: hidden sizes of the default local value MLP.
        mixing_embed_dim: QMIX's mixing width for the default mixer (TorchRL's examples use 32).
    """

    local_value: Any = None
    mixer: Any = None
    num_cells: tuple[int, ...] = (256, 256)
    mixing_embed_dim: int = 32

    def resolve(
        self, obs_dim: int, n_actions: int, n_agents: int, state_shape: tuple[int, ...] | None
    ) -> Nets:
        """These nets with the defaults filled in (the mixer needs ``state_shape`` then)."""
        mixer = self.mixer
        if mixer is None:
            if state_shape is None:
                raise ValueError("qmix: the default QMIX mixer needs state_spec (the state shape)")
            mixer = QMixer(tuple(state_shape), self.mixing_embed_dim, n_agents)
        local = discrete.default_net(self.local_value, obs_dim, n_actions, self.num_cells)
        return dataclasses.replace(self, local_value=local, mixer=mixer)


def _needs_state(mixer: Any) -> bool:
    return mixer is None or bool(getattr(mixer, "needs_state", True))


def init(
    seed: Any,
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
        seed: int, :mod:`funcrl.random` key or ``torch.Generator`` (never the global RNG).
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
    state_shape = None if state_spec is None else tuple(state_spec.shape)
    try:
        resolved = nets.resolve(d_obs, n_actions, n_agents, state_shape)
    except ValueError as e:
        raise ValueError(f"{owner}: {e}") from None
    gen = discrete.generator(seed, owner)
    local = discrete.init_net(resolved.local_value, gen, device, dtype, owner, "local_value")
    mixer = discrete.init_net(resolved.mixer, gen, device, dtype, owner, "mixer")
    params = {"local_value": local, "mixer": mixer}
    if config.delay_value:
        params["target_local_value"] = tree.clone(local)
        params["target_mixer"] = tree.clone(mixer)
    return params


# --- the equations -------------------------------------------------------------------------------


def mixed_value(
    mixer: Any,
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


def _resolve(
    params: dict[str, Any], obs: torch.Tensor, state: torch.Tensor | None, lead, nets: Nets
) -> Nets:
    n = 0
    if nets.local_value is None:
        n = discrete.out_features(params["local_value"], "qmix", "local_value")
    state_shape = None if state is None else tuple(state.shape[len(lead) :])
    return nets.resolve(obs.shape[-1], n, obs.shape[-2], state_shape)


def loss(
    params: dict[str, Any],
    batch: Record,
    *,
    config: Config = Config(),
    nets: Nets = Nets(),
    key: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The QMIX/VDN loss: ``{"loss": reduced d(Q_tot, y), "td_error": |Q_tot - y| [*B]}``.

    Gradients flow into ``params["local_value"]`` and ``params["mixer"]`` through ``Q_tot(s, a)``
    only; ``y`` is built from gradient-stopped (target) params. Nothing is sampled: ``key`` is
    accepted for the protocol and unused.

    Args:
        params: ``{"local_value", "mixer"}`` and, with ``delay_value``, ``"target_local_value"``
            and ``"target_mixer"``.
        batch: the keys of :class:`Config` (see the module docstring for the layout), optionally
            ``priority_weight [*B]``.
    """
    owner = "qmix.loss"
    batch = check_batch(batch, owner)
    names = ["local_value", "mixer"]
    require(params, names + [f"target_{k}" for k in names] if config.delay_value else names, owner)
    space, var_nums = config.action_space, config.var_nums
    dtype = discrete.float_dtype(params["local_value"], owner, "local_value")
    lead = tuple(batch.batch_size)
    obs = get(batch, config.observation_key, owner=owner, dtype=dtype)
    next_key = _key("next", config.observation_key)
    next_obs = get(batch, next_key, owner=owner, dtype=dtype)
    if obs.dim() < len(lead) + 2:
        raise ValueError(
            f"{owner}: batch[{config.observation_key!r}] has shape {tuple(obs.shape)}, expected "
            f"{(*lead, 'n_agents', 'd')}"
        )
    discrete.check_same_shape(owner, obs, next_obs, config.observation_key, next_key)
    n_agents = obs.shape[len(lead)]
    state = next_state = None
    if _needs_state(nets.mixer):
        state = get(batch, config.state_key, owner=owner, dtype=dtype)
        next_state = get(batch, _key("next", config.state_key), owner=owner, dtype=dtype)
        discrete.check_same_shape(
            owner, state, next_state, config.state_key, _key("next", config.state_key)
        )
    net = _resolve(params, obs, state, lead, nets)
    discrete.check_net_params(net.local_value, params, ("local_value", "target_local_value"), owner)
    discrete.check_net_params(net.mixer, params, ("mixer", "target_mixer"), owner)

    # Q_tot(s, a): the agents' values of their taken actions, mixed.
    agents = (*lead, n_agents)
    q = discrete.action_values(
        net.local_value, params["local_value"], obs, agents, owner, "local_value"
    )
    mask = next_mask = None
    if config.action_mask_key is not None:
        n = q.shape[-1]
        mask = get(batch, config.action_mask_key, owner=owner, shape=(n,))
        next_mask = get(batch, _key("next", config.action_mask_key), owner=owner, shape=(n,))
    q = mask_action_values(q, mask, owner=owner)
    action = get(batch, config.action_key, owner=owner)
    discrete.check_action(
        action, q.shape[-1], space, var_nums, batch_shape=agents, owner=owner, key=config.action_key
    )
    q_taken = chosen_action_value(q, action, space)  # [*B, n_agents]
    q_tot = mixed_value(net.mixer, params["mixer"], q_taken, state)  # [*B]

    # y: each agent's greedy next value under the target local net, mixed by the target mixer.
    if config.delay_value:
        local_next = tree.detach(params["target_local_value"])
        mixer_next = tree.detach(params["target_mixer"])
    else:
        local_next = tree.detach(params["local_value"])
        mixer_next = tree.detach(params["mixer"])
    q_next = mask_action_values(net.local_value(local_next, next_obs), next_mask, owner=owner)
    if config.double_dqn:
        online = tree.detach(params["local_value"])
        q_next_online = mask_action_values(
            net.local_value(online, next_obs), next_mask, owner=owner
        )
        v_next = double_q_value(q_next_online, q_next, space, var_nums)
    else:
        v_next = max_action_value(q_next, space, var_nums)
    q_tot_next = mixed_value(net.mixer, mixer_next, v_next, next_state)  # [*B]
    reward_key = _key("next", config.reward_key)
    reward = get(batch, reward_key, owner=owner, dtype=dtype)
    if tuple(reward.shape) != (*lead, 1):
        raise ValueError(
            f"{owner}: batch[{reward_key!r}] has shape {tuple(reward.shape)}, expected the team "
            f"reward {(*lead, 1)} (average or sum per-agent rewards over the agent dim first, as "
            "TorchRL's QMIX example does)"
        )
    y = discrete.bootstrap_target(
        config,
        batch,
        q_tot_next,
        owner=owner,
        reward_key=reward_key,
        done_key=_key("next", config.done_key),
        terminated_key=_key("next", config.terminated_key),
    )

    weights = priority_weights(batch, config, like=q_tot, owner=owner)
    value_loss = reduce_loss(
        distance_loss(q_tot, y, config.loss_function), config.reduction, weights
    )
    return {"loss": value_loss, "td_error": (q_tot - y).abs().detach()}


def act(
    params: dict[str, Any],
    observation: torch.Tensor,
    *,
    config: Config = Config(),
    nets: Nets = Nets(),
    mode: str = "random",
    key: torch.Tensor | None = None,
    epsilon: float | torch.Tensor = 0.1,
    action_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Every agent's greedy (``mode="deterministic"``) or epsilon-greedy (``"random"``) action on
    its local values; the mixer is monotone, so these maximise ``Q_tot`` jointly.

    Args:
        observation: ``[*B, n_agents, d]``.
        epsilon: per-agent exploration probability in random mode (default 0.1).
        action_mask: bool ``[*B, n_agents, n]`` (required when ``config.action_mask_key`` is
            set): only allowed actions are picked or drawn.
        key: a :mod:`funcrl.random` key (``None``: the global RNG).

    Returns:
        ``[*B, n_agents, ...]`` actions in ``config.action_space``'s layout, int64.
    """
    owner = "qmix.act"
    check_mode(owner, mode)
    require(params, ["local_value"], owner)
    dtype = discrete.float_dtype(params["local_value"], owner, "local_value")
    obs = check_observation(owner, observation, dtype)
    if obs.dim() < 2:
        raise ValueError(f"{owner}: observation must be [*B, n_agents, d], got {tuple(obs.shape)}")
    local = nets.local_value
    if local is None:
        n = discrete.out_features(params["local_value"], owner, "local_value")
        local = discrete.default_net(None, obs.shape[-1], n, nets.num_cells)
    discrete.check_net_params(local, params, ("local_value",), owner)
    q = discrete.action_values(
        local, params["local_value"], obs, tuple(obs.shape[:-1]), owner, "local_value"
    )
    return discrete.act_on_values(
        q, config, action_mask, mode=mode, epsilon=epsilon, key=key, owner=owner
    )


def trainer(
    optimizer: Any,
    *,
    config: Config = Config(),
    nets: Nets = Nets(),
    tau: float = 0.005,
    hard_target_period: int | None = None,
):
    """``funcrl.training.update`` for QMIX/VDN: local net and mixer trained together (the mixer
    only if it has params: VDN's has none), their targets Polyak-averaged with ``tau`` (TorchRL's
    example: ``SoftUpdate(eps=1 - tau)``), or copied every ``hard_target_period`` steps."""
    from funcrl.training import update

    # A parameter-free mixer (VDN's sum) has nothing to train; an empty dict among the trainable
    # params would also break torch.compile's pytree flattening.
    mixes = nets.mixer is None or bool(tree.leaves(nets.mixer.init(0)))
    trainable = ("local_value", "mixer") if mixes else ("local_value",)
    targets = None
    if config.delay_value:
        targets = {"target_local_value": "local_value"}
        if mixes:
            targets["target_mixer"] = "mixer"
    return update(
        partial(loss, config=config, nets=nets),
        optimizer,
        trainable=trainable,
        targets=targets,
        tau=tau,
        hard_target_period=hard_target_period,
    )


# --- TorchRL interop -----------------------------------------------------------------------------


def _mixer_from_torchrl(module: Any, owner: str) -> Any:
    name = type(module).__name__
    if name == "QMixer":
        return QMixer(tuple(module.state_shape), module.embed_dim, module.n_agents)
    if name == "VDNMixer":
        return VDNMixer(module.n_agents)
    from funcrl.nn import TorchModule

    return TorchModule(module)


def _mixer_to_torchrl(mixer: Any, params: Any, owner: str) -> torch.nn.Module:
    from torchrl.modules.models.multiagent import QMixer as TorchRLQMixer
    from torchrl.modules.models.multiagent import VDNMixer as TorchRLVDNMixer

    from funcrl.nn import to_module

    if isinstance(mixer, VDNMixer):
        return TorchRLVDNMixer(mixer.n_agents, device="cpu")
    if isinstance(mixer, QMixer):
        dtype = discrete.float_dtype(params, owner, "mixer")
        module = TorchRLQMixer(mixer.state_shape, mixer.mixing_embed_dim, mixer.n_agents, "cpu")
        return to_module(params, module.to(dtype))
    return discrete.torch_module(mixer, params, owner)


def from_torchrl(loss_module: Any) -> tuple[Config, Nets, dict[str, Any]]:
    """``(config, nets, params)`` equivalent to a TorchRL ``QMixerLoss``: the local value net, the
    mixer (TorchRL's ``QMixer``/``VDNMixer`` become funcrl's), their targets, the batch keys and
    the value estimator."""
    from funcrl.nn import from_torchrl as net_from_torchrl

    owner = "qmix.from_torchrl"
    local_wrapper, mixer_wrapper = loss_module.local_value_network, loss_module.mixer_network
    local_inner = discrete.inner_module(local_wrapper, owner)
    mixer_inner = mixer_wrapper.module
    local_net, _ = net_from_torchrl(local_inner)
    mixer_net = _mixer_from_torchrl(mixer_inner, owner)
    head = next(m for m in local_wrapper.modules() if type(m).__name__ == "QValueModule")
    keys = loss_module.tensor_keys
    estimator, gamma, lmbda = discrete.estimator_of(loss_module, owner)
    state_keys = [k for k in mixer_wrapper.in_keys if k != keys.local_value]
    config = Config(
        loss_function=loss_module.loss_function,
        delay_value=loss_module.delay_value,
        gamma=gamma,
        action_space=loss_module.action_space,
        var_nums=getattr(head, "var_nums", None),
        observation_key=tuple(local_wrapper.in_keys)[0],
        action_key=keys.action,
        state_key=state_keys[0] if state_keys else "state",
        reward_key=keys.reward,
        terminated_key=keys.terminated,
        done_key=keys.done,
        action_mask_key=head.action_mask_key,
        value_estimator=estimator,
        lmbda=lmbda,
    )
    read = discrete.read_params
    params = {
        "local_value": read(
            loss_module.local_value_network_params, local_wrapper, local_inner, local_net
        ),
        "mixer": read(loss_module.mixer_network_params, mixer_wrapper, mixer_inner, mixer_net),
    }
    if config.delay_value:
        params["target_local_value"] = read(
            loss_module.target_local_value_network_params, local_wrapper, local_inner, local_net
        )
        params["target_mixer"] = read(
            loss_module.target_mixer_network_params, mixer_wrapper, mixer_inner, mixer_net
        )
    return config, Nets(local_value=local_net, mixer=mixer_net), params


def to_torchrl(
    config: Config, nets: Nets, params: dict[str, Any], *, num_actions: int | None = None
) -> Any:
    """A TorchRL ``QMixerLoss`` (``QValueActor``-style local net on ``config.observation_key``,
    the mixer on the chosen values and the state) holding ``params``. The mixer must be explicit
    (``nets.mixer``): a default QMIX mixer's state shape is not in its params' static config."""
    from tensordict.nn import TensorDictModule
    from torchrl.modules import QValueModule, SafeSequential
    from torchrl.objectives.multiagent import QMixerLoss

    owner = "qmix.to_torchrl"
    require(params, ["local_value", "mixer"], owner)
    if nets.mixer is None:
        raise ValueError(f"{owner}: pass the mixer in nets (QMixer(state_shape, ...) or VDNMixer)")
    local = params["local_value"]
    if nets.local_value is None:
        n = discrete.out_features(local, owner, "local_value")
        nets = dataclasses.replace(
            nets,
            local_value=discrete.default_net(
                None, local["layers"][0]["weight"].shape[-1], n, nets.num_cells
            ),
        )
    net = nets.local_value
    n = discrete.num_outputs(net, num_actions, owner)
    group = config.observation_key[:-1] if isinstance(config.observation_key, tuple) else ()
    value_key = (*group, "action_value")
    chosen_key = (*group, "chosen_action_value")
    local_wrapper = SafeSequential(
        TensorDictModule(
            discrete.torch_module(net, local, owner),
            in_keys=[config.observation_key],
            out_keys=[value_key],
        ),
        QValueModule(
            action_value_key=value_key,
            out_keys=[config.action_key, value_key, chosen_key],
            action_space=config.action_space,
            var_nums=list(config.var_nums) if config.var_nums else None,
            action_mask_key=config.action_mask_key,
        ),
    )
    mixer_in = [chosen_key] + ([config.state_key] if _needs_state(nets.mixer) else [])
    mixer_wrapper = TensorDictModule(
        _mixer_to_torchrl(nets.mixer, params["mixer"], owner),
        in_keys=mixer_in,
        out_keys=["chosen_action_value"],
    )
    loss_module = QMixerLoss(
        local_wrapper,
        mixer_wrapper,
        loss_function=config.loss_function,
        delay_value=config.delay_value,
        action_space=discrete.torchrl_spec(config.action_space, n, config.var_nums),
    )
    loss_module.set_keys(
        action_value=value_key,
        local_value=chosen_key,
        action=config.action_key,
        reward=config.reward_key,
        terminated=config.terminated_key,
        done=config.done_key,
    )
    discrete.make_estimator(loss_module, config)
    if config.delay_value:
        require(params, ["target_local_value", "target_mixer"], owner)
        local_inner = discrete.inner_module(local_wrapper, owner)
        write = discrete.write_params
        td = loss_module.target_local_value_network_params
        write(params["target_local_value"], td, local_wrapper, local_inner, net)
        td = loss_module.target_mixer_network_params
        write(params["target_mixer"], td, mixer_wrapper, mixer_wrapper.module, nets.mixer)
    return loss_module
