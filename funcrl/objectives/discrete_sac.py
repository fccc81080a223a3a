"""Discrete Soft Actor-Critic (Christodoulou 2019, arXiv:1910.07207) as pure functions.

TorchRL 0.14's ``DiscreteSACLoss``. With ``n`` actions the expectations over the policy are exact
sums, so nothing is sampled::

    y       = r + gamma (1 - terminated) sum_a pi(a|s') [min_i Q'_i(s', a) - alpha log pi(a|s')]
    L_Q     = sum_i l(Q_i(s, a_t), y)
    L_pi    = sum_a pi(a|s) [alpha log pi(a|s) - min_i Q_i(s, a)]          (Q frozen)
    L_alpha = -log_alpha (sum_a pi(a|s) log pi(a|s) + H),   H = "auto": -w log(1/n), w = 0.98

Only ``("next", "terminated")`` stops bootstrapping. Gradients never reach target params, the
critic through ``L_pi``, or ``log_alpha`` through anything but ``L_alpha``.

``config.value_estimator`` (``"td0"``, ``"td1"``, ``"td_lambda"``) replaces the TD(0) target ``y``
by TorchRL's ``make_value_estimator`` returns over a batch with a trailing time dim, the soft value
above as bootstrap. The discrete-action pieces live in :mod:`funcrl.objectives.discrete`, the
temperature in :mod:`funcrl.objectives.actor_critic`.

Intentional differences from TorchRL: ``log_alpha`` is clamped straight-through (see
:func:`funcrl.objectives.actor_critic.clamp_log_alpha`; the trainer clamps the parameter after
each step); ``skip_done_states`` masks with ``torch.where`` (same values); the dict also holds
``td_error`` ``[*B]`` (``max_i |Q_i(s, a) - y|``); ``num_actions`` is read from the actor's output
width (the ``"auto"`` target entropy needs no argument); ``separate_losses`` does not exist
(params are never shared); malformed or out-of-range actions raise (eagerly).
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial
from typing import Any

import torch

from funcrl import tree
from funcrl.objectives import discrete
from funcrl.objectives.actor_critic import (
    check_alpha,
    check_common,
    ensemble,
    init_ensemble,
    project,
    temperature,
    temperature_loss,
)
from funcrl.objectives.common import (
    check_batch,
    check_mode,
    check_observation,
    distance_loss,
    get,
    get_flag,
    priority_weights,
    reduce_loss,
    require,
    spec_size,
)
from funcrl.record import Record

__all__ = [
    "Config",
    "Nets",
    "init",
    "loss",
    "act",
    "trainer",
    "from_torchrl",
    "to_torchrl",
    "project",
    "soft_target_value",
    "expected_actor_loss",
    "chosen_q",
]

Params = dict[str, Any]
ACTION_SPACES = ("one_hot", "categorical")


@dataclasses.dataclass(frozen=True)
class Config:
    """``DiscreteSACLoss``'s hyperparameters, TorchRL's names and defaults.

    Args:
        action_space: how ``batch["action"]`` is encoded: ``"one-hot"`` ``[*B, n]`` (TorchRL's
            fallback; stored as ``"one_hot"``) or ``"categorical"`` indices ``[*B]`` or
            ``[*B, 1]``, or a ``OneHot``/``Categorical`` spec.
        num_qvalue_nets, loss_function, alpha_init, min_alpha, max_alpha, fixed_alpha, gamma,
            reduction, use_prioritized_weights: as :class:`funcrl.sac.Config`.
        target_entropy_weight: ``w`` in the ``"auto"`` target entropy ``-w log(1 / n)``.
        target_entropy: ``"auto"`` or a number.
        delay_qvalue: bootstrap from ``params["target_qvalue"]`` (else the frozen online nets).
        skip_done_states: the next-state value of done rows is 0, and the others use the raw
            log-probabilities (TorchRL's masked branch).
        value_estimator: ``"td0"`` (default), ``"td1"`` or ``"td_lambda"``; the last two read the
            batch's last batch dim as time and need ``("next", "done")``.
        lmbda: TD(lambda)'s lambda (TorchRL's default 0.95).
    """

    action_space: Any = "one-hot"
    num_qvalue_nets: int = 2
    loss_function: str = "smooth_l1"
    alpha_init: float = 1.0
    min_alpha: float | None = None
    max_alpha: float | None = None
    fixed_alpha: bool = False
    target_entropy_weight: float = 0.98
    target_entropy: float | str = "auto"
    delay_qvalue: bool = True
    gamma: float = 0.99
    reduction: str = "mean"
    skip_done_states: bool = False
    use_prioritized_weights: bool | str = "auto"
    value_estimator: str = "td0"
    lmbda: float = 0.95

    def __post_init__(self) -> None:
        owner = "discrete_sac.Config"
        name = discrete.action_space_of(self.action_space, owner=owner)
        if name not in ACTION_SPACES:
            raise ValueError(
                f"{owner}: action_space must be one of {ACTION_SPACES}, got {self.action_space!r}"
            )
        object.__setattr__(self, "action_space", name)
        check_common(owner, self)
        check_alpha(owner, self.alpha_init, self.min_alpha, self.max_alpha)
        discrete.check_prioritized(owner, self.use_prioritized_weights)
        discrete.check_value_estimator(owner, self.value_estimator, self.lmbda)


@dataclasses.dataclass(frozen=True)
class Nets:
    """``actor(params, obs [*B, o]) -> logits [*B, n]``; ``qvalue(params, obs) -> Q(s, .) [*B, n]``
    for *one* critic (vmapped over the ensemble's leading dim).

    ``None`` (the defaults) are ReLU :class:`funcrl.nn.MLP` s with ``num_cells`` hidden units,
    built by :func:`init` from the specs and by ``loss``/``act`` from the observation's feature
    size and the actor params' output width. Any funcrl nets can replace them.
    """

    actor: Any = None
    qvalue: Any = None
    num_cells: tuple[int, ...] = (256, 256)

    def resolve(self, obs_dim: int, n: int) -> Nets:
        """These nets with the defaults filled in for ``obs_dim`` features and ``n`` actions."""
        return dataclasses.replace(
            self,
            actor=discrete.default_net(self.actor, obs_dim, n, self.num_cells),
            qvalue=discrete.default_net(self.qvalue, obs_dim, n, self.num_cells),
        )


# -- the equations ---------------------------------------------------------------------------------


def soft_target_value(
    probs: torch.Tensor, log_probs: torch.Tensor, q_min: torch.Tensor, alpha: torch.Tensor
) -> torch.Tensor:
    """``sum_a pi(a) [Q(a) - alpha log pi(a)]``: ``[*B, n] -> [*B]``."""
    return (probs * (q_min - alpha * log_probs)).sum(-1)


def expected_actor_loss(
    probs: torch.Tensor, log_probs: torch.Tensor, q_min: torch.Tensor, alpha: torch.Tensor
) -> torch.Tensor:
    """``sum_a pi(a) [alpha log pi(a) - Q(a)]``: ``[*B, n] -> [*B]``."""
    return (probs * (alpha * log_probs - q_min)).sum(-1)


def chosen_q(q: torch.Tensor, action: torch.Tensor, action_space: str) -> torch.Tensor:
    """``Q_i(s, a_t)`` for every critic: ``q [N, *B, n]`` -> ``[N, *B]``."""
    space = discrete.action_space_of(action_space, owner="discrete_sac.chosen_q")
    return discrete.chosen_action_value(q, action.expand(q.shape[0], *action.shape), space)


# -- init and loss ---------------------------------------------------------------------------------


def _num_actions(action_spec: Any) -> int:
    # An int, a Categorical/OneHot spec, or gymnasium's Discrete (whose n is a NumPy int).
    n = getattr(action_spec, "n", None)
    if n is not None and not isinstance(n, bool):
        return int(n)
    return spec_size(action_spec, "discrete_sac.init", "action_spec")


def init(
    seed: Any,
    observation_spec: Any,
    action_spec: Any,
    config: Config = Config(),
    nets: Nets = Nets(),
    *,
    device=None,
    dtype=torch.float32,
) -> Params:
    """``{"actor", "qvalue", "log_alpha"}`` (+ ``"target_qvalue"``, a copy, with ``delay_qvalue``).

    ``action_spec`` is a categorical/one-hot spec with ``.n``, or the number of actions.
    ``params["qvalue"]`` stacks ``num_qvalue_nets`` independently initialised critics.
    """
    owner = "discrete_sac.init"
    obs_dim = spec_size(observation_spec, owner, "observation_spec")
    resolved = nets.resolve(obs_dim, _num_actions(action_spec))
    gen = discrete.generator(seed, owner)
    params: Params = {
        "actor": discrete.init_net(resolved.actor, gen, device, dtype, owner, "actor"),
        "qvalue": init_ensemble(
            discrete.checked_net(resolved.qvalue, owner, "qvalue"),
            config.num_qvalue_nets,
            gen,
            device=device,
            dtype=dtype,
        ),
        "log_alpha": torch.tensor(math.log(config.alpha_init), device=device, dtype=dtype),
    }
    if config.delay_qvalue:
        params["target_qvalue"] = tree.clone(params["qvalue"])
    return params


def _resolve(params: Params, obs: torch.Tensor, nets: Nets, owner: str) -> Nets:
    # The default nets' width n comes from their params (static shapes).
    if nets.actor is None:
        return nets.resolve(obs.shape[-1], discrete.out_features(params["actor"], owner, "actor"))
    if nets.qvalue is None:
        n = discrete.out_features(params["qvalue"], owner, "qvalue")
        return nets.resolve(obs.shape[-1], n)
    return nets


def loss(
    params: Params,
    batch: Record,
    *,
    config: Config = Config(),
    nets: Nets = Nets(),
    key: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Discrete SAC's losses. Deterministic (exact expectations, no sampling): ``key`` is accepted
    for the protocol and unused.

    Args:
        params: from :func:`init`.
        batch: ``observation [*B, o]``, ``action`` (one-hot ``[*B, n]`` or indices ``[*B]``/
            ``[*B, 1]``), ``("next", "observation")``, ``("next", "reward") [*B, 1]``,
            ``("next", "terminated") [*B, 1]`` (and ``("next", "done")`` with
            ``skip_done_states`` or TD(1)/TD(lambda)), optionally ``priority_weight [*B]``.

    Returns:
        ``loss_actor``, ``loss_qvalue``, ``loss_alpha``, ``alpha``, ``entropy``, ``td_error [*B]``.
    """
    owner = "discrete_sac.loss"
    batch = check_batch(batch, owner)
    require(params, ["actor", "qvalue", "log_alpha"], owner)
    if config.delay_qvalue:
        require(params, ["target_qvalue"], owner)
    dtype = discrete.float_dtype(params["actor"], owner, "actor")
    lead = tuple(batch.batch_size)
    obs = get(batch, "observation", owner=owner, dtype=dtype)
    next_obs = get(batch, ("next", "observation"), owner=owner, dtype=dtype)
    discrete.check_same_shape(owner, obs, next_obs, "observation", ("next", "observation"))
    net = _resolve(params, obs, nets, owner)
    discrete.check_net_params(net.actor, params, ("actor",), owner)
    qp = params["qvalue"]
    logits = discrete.action_values(net.actor, params["actor"], obs, lead, owner, "actor")
    n = logits.shape[-1]
    action = get(batch, "action", owner=owner)
    discrete.check_action(
        action, n, config.action_space, None, batch_shape=lead, owner=owner, key="action"
    )
    h = (
        -math.log(1.0 / n) * config.target_entropy_weight
        if config.target_entropy == "auto"
        else float(config.target_entropy)
    )
    log_alpha, alpha = temperature(params["log_alpha"], config)

    # Target: exact expectation under pi(.|s') of min_i Q'_i - alpha log pi, all frozen.
    next_logits = net.actor(tree.detach(params["actor"]), next_obs).detach()
    next_probs = torch.softmax(next_logits, -1)
    tq = tree.detach(params["target_qvalue"] if config.delay_qvalue else qp)
    q_next = ensemble(net.qvalue, tq, next_obs).min(0).values
    if config.skip_done_states:
        reward = get(batch, ("next", "reward"), owner=owner, shape=(1,), dtype=dtype)
        done = get_flag(batch, ("next", "done"), owner=owner, like=reward).bool().squeeze(-1)
        v_next = soft_target_value(next_probs, torch.log_softmax(next_logits, -1), q_next, alpha)
        v_next = torch.where(done, torch.zeros_like(v_next), v_next)
    else:
        # TorchRL: log(p) with p == 0 replaced by 1e-8.
        safe = torch.log(torch.where(next_probs == 0, 1e-8, next_probs))
        v_next = soft_target_value(next_probs, safe, q_next, alpha)
    y = discrete.bootstrap_target(config, batch, v_next, owner=owner)
    q = chosen_q(ensemble(net.qvalue, qp, obs), action, config.action_space)
    loss_q = distance_loss(q, y.expand_as(q), config.loss_function).sum(0)

    # Actor: exact expectation under pi(.|s); the critic is frozen.
    log_probs = torch.log_softmax(logits, -1)
    probs = log_probs.exp()
    q_pi = ensemble(net.qvalue, tree.detach(qp), obs).min(0).values
    loss_actor = expected_actor_loss(probs, log_probs, q_pi, alpha)
    neg_entropy = (probs * log_probs).sum(-1).detach()
    loss_alpha = temperature_loss(log_alpha, neg_entropy, h)
    weights = priority_weights(batch, config, like=loss_actor, owner=owner)
    red = config.reduction
    return {
        "loss_actor": reduce_loss(loss_actor, red, weights),
        "loss_qvalue": reduce_loss(loss_q, red, weights),
        "loss_alpha": reduce_loss(loss_alpha, red, weights),
        "alpha": alpha,
        "entropy": -neg_entropy.mean(),
        "td_error": (q - y).abs().detach().max(0).values,
    }


def act(
    params: Params,
    observation: torch.Tensor,
    *,
    config: Config = Config(),
    nets: Nets = Nets(),
    mode: str = "random",
    key: torch.Tensor | None = None,
    action_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """A sample of the categorical policy ``pi(.|s)`` (``mode="random"``) or its mode
    (``"deterministic"``, the argmax of the logits).

    Args:
        observation: ``[*B, o]``.
        action_mask: optional bool ``[*B, n]``: masked actions get probability 0 (and are never
            the mode).
        key: a :mod:`funcrl.random` key (``None``: the global RNG).

    Returns:
        one-hot ``[*B, n]`` or categorical ``[*B]`` int64 actions (``config.action_space``).
    """
    owner = "discrete_sac.act"
    check_mode(owner, mode)
    require(params, ["actor"] if nets.actor is not None else ["actor", "qvalue"], owner)
    dtype = discrete.float_dtype(params["actor"], owner, "actor")
    obs = check_observation(owner, observation, dtype)
    net = _resolve(params, obs, nets, owner)
    discrete.check_net_params(net.actor, params, ("actor",), owner)
    logits = discrete.action_values(
        net.actor, params["actor"], obs, tuple(obs.shape[:-1]), owner, "actor"
    )
    if action_mask is not None:
        logits = discrete.mask_action_values(logits, action_mask, owner=owner)
    if mode == "deterministic":
        index = logits.argmax(-1)
    else:
        index = discrete.sample_categorical(logits, key)
    if config.action_space == "categorical":
        return index
    return discrete.one_hot(index, logits.shape[-1])


def trainer(
    optimizer: Any,
    *,
    config: Config = Config(),
    nets: Nets = Nets(),
    tau: float = 0.005,
):
    """``funcrl.training.update`` for discrete SAC: actor, critics and ``log_alpha`` (frozen with
    ``fixed_alpha``) trained on the summed losses, ``log_alpha`` clamped after each step, target
    critics Polyak-averaged with ``tau`` (TorchRL's ``SoftUpdate(eps=1 - tau)``)."""
    from funcrl.training import update

    trainable = ("actor", "qvalue") if config.fixed_alpha else ("actor", "qvalue", "log_alpha")
    return update(
        partial(loss, config=config, nets=nets),
        optimizer,
        trainable=trainable,
        targets={"target_qvalue": "qvalue"} if config.delay_qvalue else None,
        tau=tau,
        project=partial(project, config=config),
    )


# --- TorchRL interop -----------------------------------------------------------------------------


def from_torchrl(loss_module: Any) -> tuple[Config, Nets, Params]:
    """``(config, nets, params)`` equivalent to a TorchRL ``DiscreteSACLoss``: the actor, the
    critic ensemble and its targets, ``log_alpha`` and the temperature bounds. The resolved
    target entropy comes back as a number (TorchRL keeps no ``"auto"``)."""
    from funcrl.nn import from_torchrl as net_from_torchrl

    owner = "discrete_sac.from_torchrl"
    actor, critic = loss_module.actor_network, loss_module.qvalue_network
    actor_inner = discrete.inner_module(actor, owner)
    critic_inner = discrete.inner_module(critic, owner)
    actor_net, _ = net_from_torchrl(actor_inner)
    critic_net, _ = net_from_torchrl(critic_inner)

    def bound(name: str) -> float | None:
        t = getattr(loss_module, name, None)
        return None if t is None else discrete.from_float32(t.exp())

    estimator, gamma, lmbda = discrete.estimator_of(loss_module, owner)
    config = Config(
        action_space=loss_module.action_space,
        num_qvalue_nets=loss_module.num_qvalue_nets,
        loss_function=loss_module.loss_function,
        alpha_init=discrete.from_float32(loss_module.alpha_init),
        min_alpha=bound("min_log_alpha"),
        max_alpha=bound("max_log_alpha"),
        fixed_alpha=loss_module.fixed_alpha,
        target_entropy=discrete.from_float32(loss_module.target_entropy),
        delay_qvalue=loss_module.delay_qvalue,
        gamma=gamma,
        reduction=loss_module.reduction,
        skip_done_states=loss_module.skip_done_states,
        use_prioritized_weights=loss_module.use_prioritized_weights,
        value_estimator=estimator,
        lmbda=lmbda,
    )
    read = discrete.read_params
    params: Params = {
        "actor": read(loss_module.actor_network_params, actor, actor_inner, actor_net),
        "qvalue": read(loss_module.qvalue_network_params, critic, critic_inner, critic_net),
        "log_alpha": loss_module.log_alpha.detach().clone(),
    }
    if config.delay_qvalue:
        td = loss_module.target_qvalue_network_params
        params["target_qvalue"] = read(td, critic, critic_inner, critic_net)
    return config, Nets(actor=actor_net, qvalue=critic_net), params


def to_torchrl(config: Config, nets: Nets, params: Params) -> Any:
    """A TorchRL ``DiscreteSACLoss`` (a ``ProbabilisticActor`` over the logits, one critic module
    for the ensemble) holding ``params``; the nets must be convertible by
    :func:`funcrl.objectives.discrete.torch_module`."""
    from tensordict.nn import TensorDictModule
    from torch.distributions import Categorical
    from torchrl.modules import OneHotCategorical, ProbabilisticActor
    from torchrl.objectives import DiscreteSACLoss

    owner = "discrete_sac.to_torchrl"
    require(params, ["actor", "qvalue", "log_alpha"], owner)
    n = discrete.out_features(params["actor"], owner, "actor") if nets.actor is None else None
    if nets.actor is None or nets.qvalue is None:
        first = params["actor"] if nets.actor is None else params["qvalue"]
        n = n or discrete.out_features(params["qvalue"], owner, "qvalue")
        nets = nets.resolve(first["layers"][0]["weight"].shape[-1], n)
    n = discrete.num_outputs(nets.actor, n, owner)
    spec = discrete.torchrl_spec(config.action_space, n)
    dist = OneHotCategorical if config.action_space == "one_hot" else Categorical
    member = tree.map(lambda x: x[0], params["qvalue"])
    actor = ProbabilisticActor(
        TensorDictModule(
            discrete.torch_module(nets.actor, params["actor"], owner),
            in_keys=["observation"],
            out_keys=["logits"],
        ),
        in_keys=["logits"],
        spec=spec,
        distribution_class=dist,
    )
    critic = TensorDictModule(
        discrete.torch_module(nets.qvalue, member, owner),
        in_keys=["observation"],
        out_keys=["action_value"],
    )
    loss_module = DiscreteSACLoss(
        actor,
        critic,
        action_space=spec,
        num_actions=n,
        num_qvalue_nets=config.num_qvalue_nets,
        loss_function=config.loss_function,
        alpha_init=config.alpha_init,
        min_alpha=config.min_alpha,
        max_alpha=config.max_alpha,
        fixed_alpha=config.fixed_alpha,
        target_entropy_weight=config.target_entropy_weight,
        target_entropy=config.target_entropy,
        delay_qvalue=config.delay_qvalue,
        reduction=config.reduction,
        skip_done_states=config.skip_done_states,
        use_prioritized_weights=config.use_prioritized_weights,
    )
    discrete.make_estimator(loss_module, config)
    inner = discrete.inner_module(critic, owner)
    write = discrete.write_params
    write(params["qvalue"], loss_module.qvalue_network_params, critic, inner, nets.qvalue)
    if config.delay_qvalue:
        td = loss_module.target_qvalue_network_params
        write(params["target_qvalue"], td, critic, inner, nets.qvalue)
    with torch.no_grad():
        loss_module.log_alpha.copy_(params["log_alpha"])
    return loss_module
