"""Soft Actor-Critic (Haarnoja et al. 2018, arXiv:1801.01290 and 1812.05905) as pure functions.

TorchRL 0.14's ``SACLoss``: version 2 (Q ensemble only, the default) and version 1 (with a state
value net ``V``, ``Config(version=1)``)::

    params = sac.init(0, obs_spec, act_spec)       # {"actor", "qvalue", "target_qvalue", "log_alpha",
                                                   #  "action_bounds"}
    losses = sac.loss(params, batch)               # loss_actor, loss_qvalue, loss_alpha, alpha, entropy
    train = sac.trainer(optim.adam(3e-4))          # (init, step); step(params, state, batch, key)
    action = sac.act(params, obs, mode="random", key=key)

The equations (``alpha = exp(log_alpha)``, ``H`` the target entropy, ``N`` Q nets)::

    y       = r + gamma (1 - terminated) min_i [Q'_i(s', a') - alpha log pi(a'|s')],  a' ~ pi(s')   (v2)
    y       = r + gamma (1 - terminated) V'(s')                                                   (v1)
    L_Q     = sum_i l(Q_i(s, a), y)        (v1: Q_i sees only the i-th of N chunks of the batch)
    L_V     = l(V(s), min_i Q'_i(s, a~) - alpha log pi'(a~|s))                                    (v1)
    L_pi    = alpha log pi(a~|s) - min_i Q_i(s, a~),   a~ ~ pi(s) reparameterised, Q frozen
    L_alpha = -log_alpha (log pi(a~|s) + H)

Gradients are stopped explicitly: no gradient reaches target params, the critic through the actor
loss, the actor through the targets, or ``log_alpha`` through anything but ``L_alpha``. Only
``("next", "terminated")`` stops bootstrapping (a truncated step bootstraps).

The critic target ``y`` is TD(0) by default; ``Config(value_estimator="td1" | "td_lambda", lmbda=)``
gives TorchRL's ``make_value_estimator(ValueEstimators.TD1 | TDLambda)`` over a batch of
trajectories ``[*B, T]`` (the next-state values above, then :mod:`funcrl.values`' recursion,
reset at ``("next", "done")``).

Draws: with ``key`` (a :mod:`funcrl.random` key) the loss splits it into two sub-keys, one per
draw site in TorchRL's order (v2: next-state actions, then the actor's actions; v1: the value
loss's actions, then the actor's), so the losses are bitwise reproducible; with ``key=None`` the
global torch RNG is used in that order, so the same ``torch.manual_seed`` gives TorchRL's draws.

Intentional differences from TorchRL:

* TorchRL clamps ``log_alpha`` *in place* (``min_alpha``/``max_alpha``). A pure loss cannot, so the
  loss uses a straight-through clamp: the same value and the same gradient as TorchRL, while the
  stored parameter may pass a bound and drift on (Adam keeps pushing it). :func:`project` clamps
  it back; call it after the optimizer step in a hand-written loop.
* ``skip_done_states`` masks done rows with ``torch.where`` (TorchRL drops them with a
  data-dependent index): the same values, but every row draws noise, so the draws differ.
* The loss dict also holds ``td_error`` (detached, ``[*batch]``), TorchRL's priority, which it
  writes into the input tensordict instead.
* ``separate_losses`` does not exist: actor and critic params are separate pytrees, never shared.
* The action bounds of the ``TanhNormal`` live in ``params["action_bounds"]``, never trained: the
  action spec's bounds (an ``int`` spec means ``[-1, 1]``); an unbounded spec raises at ``init``
  where TorchRL would silently use ``[-1, 1]``, and params without ``action_bounds`` raise.
* ``td_error`` is the absolute TD error ``[*B]`` in both versions (v1: of each sample's own critic).
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial
from typing import Any, ClassVar

import torch

from funcrl import random, tree
from funcrl.nn import make_generator
from funcrl.objectives.actor_critic import (
    act_stochastic,
    actor_objective,
    auto_entropy,
    bounds,
    check_alpha,
    check_common,
    check_nets,
    ensemble,
    ensemble_q,
    init_ensemble,
    param_dtype,
    project,
    read_transitions,
    resolve,
    soft_value,
    tanh_normal,
    temperature,
    temperature_loss,
    value_target,
)
from funcrl.objectives.actor_critic import action_bounds as spec_bounds
from funcrl.objectives.common import (
    check_batch,
    check_mode,
    check_observation,
    distance_loss,
    get_flag,
    in_features,
    priority_weights,
    require,
    spec_size,
)
from funcrl.objectives.common import (
    reduce_loss as reduce,  # one reduction for every objective; kept importable here
)
from funcrl.record import Record

__all__ = [
    "Config",
    "Nets",
    "init",
    "loss",
    "act",
    "trainer",
    "policy",
    "project",
    "soft_value",
    "actor_objective",
    "temperature_loss",
    "reduce",
]

Params = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Config:
    """``SACLoss``'s hyperparameters, TorchRL's names and defaults.

    Args:
        version: 2 (Q nets only) or 1 (adds a state value net; TorchRL's ``value_network=...``).
        num_qvalue_nets: ``N``, the size of the Q ensemble.
        loss_function: ``"l1"``, ``"l2"`` or ``"smooth_l1"`` for the Q (and V) regression.
        alpha_init: initial temperature.
        min_alpha, max_alpha: clamp of alpha (``None``/``0``: no bound, as TorchRL).
        fixed_alpha: keep alpha at its value: ``log_alpha`` gets no gradient.
        target_entropy: ``H``; ``"auto"`` is ``-prod(action feature shape)``.
        delay_actor: v1 only: the value target uses ``params["target_actor"]``.
        delay_qvalue: use ``params["target_qvalue"]`` for targets (else the frozen online nets).
        delay_value: v1 only: the Q target uses ``params["target_value"]``.
        gamma: discount of the value target.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` over the batch.
        skip_done_states: the next-state actions of done rows are zero and their log-prob is 0.
        use_prioritized_weights: ``"auto"``/``True``: weight the reduction by
            ``batch["priority_weight"]`` when present; ``False``: ignore it.
        value_estimator: ``"td0"``, ``"td1"`` or ``"td_lambda"`` (TorchRL's ``ValueEstimators``).
        lmbda: TD(lambda)'s lambda.
    """

    version: int = 2
    num_qvalue_nets: int = 2
    loss_function: str = "smooth_l1"
    alpha_init: float = 1.0
    min_alpha: float | None = None
    max_alpha: float | None = None
    fixed_alpha: bool = False
    target_entropy: float | str = "auto"
    delay_actor: bool = False
    delay_qvalue: bool = True
    delay_value: bool = True
    gamma: float = 0.99
    reduction: str = "mean"
    skip_done_states: bool = False
    use_prioritized_weights: bool | str = "auto"
    value_estimator: str = "td0"
    lmbda: float = 0.95

    def __post_init__(self) -> None:
        if self.version not in (1, 2):
            raise ValueError(f"sac.Config: version must be 1 or 2, got {self.version!r}")
        check_common("sac.Config", self)
        check_alpha("sac.Config", self.alpha_init, self.min_alpha, self.max_alpha)


@dataclasses.dataclass(frozen=True)
class Nets:
    """SAC's nets: funcrl nets (``init`` and ``__call__``), ``None`` for TorchRL's default, a ReLU
    :class:`funcrl.nn.MLP` with ``num_cells`` hidden units sized from the specs (``init``) or the
    batch (``loss``/``act``).

    Args:
        actor: ``(params, obs [*B, o]) -> [*B, 2 a]``, split by ``NormalParamExtractor`` into
            ``loc, scale`` of a ``TanhNormal`` on ``params["action_bounds"]``.
        qvalue: ``(params, obs, action) -> [*B, 1]`` for *one* critic (e.g.
            ``funcrl.nn.Concat(MLP(o + a, 1))``); the loss vmaps it over the ensemble's
            leading dim (:class:`funcrl.nn.Ensemble`'s layout).
        value: ``(params, obs) -> [*B, 1]`` (version 1).
        num_cells: the default MLPs' hidden sizes.
        scale_mapping, scale_lb: ``NormalParamExtractor``'s arguments.
        tanh_loc: ``TanhNormal``'s ``tanh_loc``.
    """

    ROLES: ClassVar[dict[str, str]] = {
        "actor": "gaussian_actor",
        "qvalue": "qvalue",
        "value": "value",
    }

    actor: Any = None
    qvalue: Any = None
    value: Any = None
    num_cells: tuple[int, ...] = (256, 256)
    scale_mapping: str = "biased_softplus_1.0"
    scale_lb: float = 1e-4
    tanh_loc: bool = False


# -- init, loss, act, trainer ----------------------------------------------------------------------


def init(
    seed: int | torch.Tensor | torch.Generator,
    observation_spec: Any,
    action_spec: Any,
    config: Config = Config(),
    nets: Nets = Nets(),
    *,
    device=None,
    dtype=torch.float32,
) -> Params:
    """Fresh params: ``actor``, ``qvalue`` (``N`` stacked members), ``log_alpha`` (``log
    alpha_init``), ``action_bounds`` (from the spec), and the targets the config asks for
    (``target_qvalue``; v1: ``value``, ``target_value``, and ``target_actor`` with
    ``delay_actor``). Targets start as copies. Never touches the global RNG.
    """
    owner = "sac.init"
    check_nets(nets, owner)
    obs_dim = spec_size(observation_spec, owner, "observation_spec")
    act_dim = spec_size(action_spec, owner, "action_spec")
    nets = resolve(nets, obs_dim, act_dim)
    gen = make_generator(seed)
    kw = {"device": device, "dtype": dtype}
    params: Params = {
        "actor": nets.actor.init(gen, **kw),
        "qvalue": init_ensemble(nets.qvalue, config.num_qvalue_nets, gen, **kw),
        "log_alpha": torch.tensor(math.log(config.alpha_init), **kw),
        "action_bounds": spec_bounds(action_spec, act_dim, **kw, owner=owner),
    }
    if config.delay_qvalue:
        params["target_qvalue"] = tree.clone(params["qvalue"])
    if config.version == 1:
        params["value"] = nets.value.init(gen, **kw)
        if config.delay_value:
            params["target_value"] = tree.clone(params["value"])
        if config.delay_actor:
            params["target_actor"] = tree.clone(params["actor"])
    return params


def _target_q_params(params: Params, cfg: Any) -> Params:
    return tree.detach(params["target_qvalue"] if cfg.delay_qvalue else params["qvalue"])


def loss(
    params: Params,
    batch: Record,
    *,
    config: Config = Config(),
    nets: Nets = Nets(),
    key: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """SAC's losses on a batch of transitions. Samples (``key``, else the global torch RNG).

    Args:
        params: from :func:`init`.
        batch: ``observation [*B, o]``, ``action [*B, a]``, ``("next", "observation")``,
            ``("next", "reward") [*B, 1]``, ``("next", "terminated") [*B, 1]`` (and ``("next",
            "done")`` with ``skip_done_states`` or a TD(1)/TD(lambda) estimator), all float
            entries in the params' dtype; optional ``priority_weight [*B]``.
        key: a :mod:`funcrl.random` key (two sub-keys, one per draw site).

    Returns:
        ``loss_actor``, ``loss_qvalue``, ``loss_alpha`` (reduced), ``alpha``, ``entropy`` (0-d,
        detached), ``td_error`` (``[*B]``, the absolute TD error, detached), and ``loss_value``
        for version 1.
    """
    owner = "sac.loss"
    check_batch(batch, owner)
    need = ["actor", "qvalue", "log_alpha", "action_bounds"]
    need += ["target_qvalue"] if config.delay_qvalue else []
    if config.version == 1:
        need += ["value"] + (["target_value"] if config.delay_value else [])
        need += ["target_actor"] if config.delay_actor else []
    require(params, need, owner)
    low, high = bounds(params, owner)
    t = read_transitions(
        batch, owner=owner, act_dim=low.shape[-1], dtype=param_dtype(params, "log_alpha")
    )
    obs, action, next_obs = t.observation, t.action, t.next_observation
    nets = resolve(nets, obs.shape[-1], action.shape[-1])
    n = config.num_qvalue_nets
    h = auto_entropy(config.target_entropy, action, batch.batch_ndim)
    log_alpha, alpha = temperature(params["log_alpha"], config)
    like = t.reward.squeeze(-1)
    weights = priority_weights(batch, config, like=like, owner=owner)
    red = config.reduction
    key_target, key_actor = random.split_optional(key, 2)

    def dist(p, o):
        return tanh_normal(nets.actor(p, o), low, high, nets)

    out: dict[str, torch.Tensor] = {}
    if config.version == 2:
        # Target: a' from the current actor, frozen; Q' from the target ensemble.
        a_next, lp_next = dist(tree.detach(params["actor"]), next_obs).rsample_and_log_prob(
            key=key_target
        )
        if config.skip_done_states:
            done = get_flag(batch, ("next", "done"), owner=owner, like=t.reward).bool()
            a_next = torch.where(done, torch.zeros_like(a_next), a_next)
            lp_next = torch.where(done.squeeze(-1), torch.zeros_like(lp_next), lp_next)
        q_next = ensemble_q(nets.qvalue, _target_q_params(params, config), next_obs, a_next)
        y = value_target(
            config, batch, t, soft_value(q_next, lp_next, alpha).min(0).values, owner=owner
        )
        q = ensemble_q(nets.qvalue, params["qvalue"], obs, action)
        loss_q = distance_loss(q, y.expand_as(q), config.loss_function).sum(0)
        out["td_error"] = (q - y).abs().detach().max(0).values
    else:
        # Q target from the (target) value net at s'; each Q_i regresses on one chunk.
        vp = params["target_value"] if config.delay_value else params["value"]
        y = value_target(
            config, batch, t, nets.value(tree.detach(vp), next_obs).squeeze(-1), owner=owner
        )
        if obs.shape[0] % n:
            raise ValueError(
                f"{owner}: version 1 splits the batch into num_qvalue_nets={n} chunks; the "
                f"leading batch dim {obs.shape[0]} is not divisible by it"
            )

        def chunks(x):
            return x.reshape(n, -1, *x.shape[1:])

        q = ensemble(nets.qvalue, params["qvalue"], chunks(obs), chunks(action), in_dims=0)
        q = q.squeeze(-1)
        loss_q = distance_loss(q, chunks(y), config.loss_function).reshape(y.shape)
        out["td_error"] = (q - chunks(y)).abs().detach().reshape(y.shape)
        # Value: V(s) toward min_i Q'_i(s, a~) - alpha log pi'(a~|s), a~ from the (target) actor.
        ap = params["target_actor"] if config.delay_actor else params["actor"]
        a_v, lp_v = dist(tree.detach(ap), obs.detach()).rsample_and_log_prob(key=key_target)
        q_v = ensemble_q(nets.qvalue, _target_q_params(params, config), obs, a_v).min(0).values
        v_target = soft_value(q_v, lp_v, alpha).detach()
        v = nets.value(params["value"], obs).squeeze(-1)
        loss_v = distance_loss(v, v_target, config.loss_function)
    # Actor: reparameterised a~ ~ pi(s); the critic is frozen.
    a_pi, lp_pi = dist(params["actor"], obs).rsample_and_log_prob(key=key_actor)
    q_pi = ensemble_q(nets.qvalue, tree.detach(params["qvalue"]), obs, a_pi).min(0).values
    loss_actor = actor_objective(alpha, lp_pi, q_pi)
    loss_alpha = temperature_loss(log_alpha, lp_pi.detach(), h)
    out.update(
        loss_actor=reduce(loss_actor, red, weights),
        loss_qvalue=reduce(loss_q, red, weights),
        loss_alpha=reduce(loss_alpha, red, weights),
        alpha=alpha,
        entropy=-lp_pi.detach().mean(),
    )
    if config.version == 1:
        out["loss_value"] = reduce(loss_v, red, weights)
    return out


def act(
    params: Params,
    observation: torch.Tensor,
    *,
    config: Config = Config(),
    nets: Nets = Nets(),
    mode: str = "random",
    key: torch.Tensor | None = None,
) -> torch.Tensor:
    """The action ``[*B, a]`` at ``observation [*B, o]``: a ``TanhNormal`` draw (``"random"``;
    ``key`` or the global RNG) or its deterministic action ``tanh(loc)`` mapped to the bounds
    (``"deterministic"``, TorchRL's ``InteractionType.DETERMINISTIC``). Detached."""
    check_mode("sac.act", mode)
    return act_stochastic(_policy(params, observation, nets, "sac.act"), mode, key)


def policy(params: Params, observation: torch.Tensor, *, nets: Nets = Nets()):
    """The actor's ``TanhNormal`` at ``observation [*B, o]`` on ``params["action_bounds"]`` (what
    :func:`act` samples; gradients flow to ``params["actor"]``)."""
    return _policy(params, observation, nets, "sac.policy")


def _policy(params: Params, observation: torch.Tensor, nets: Nets, owner: str):
    require(params, ["actor", "action_bounds"], owner)
    low, high = bounds(params, owner)
    obs = check_observation(owner, observation, param_dtype(params, "actor"))
    nets = resolve(nets, obs.shape[-1], low.shape[-1])
    return tanh_normal(nets.actor(params["actor"], obs), low, high, nets)


def trainer(
    optimizer: Any,
    *,
    config: Config = Config(),
    nets: Nets = Nets(),
    tau: float = 0.005,
):
    """:func:`funcrl.training.update` for SAC: ``actor``, ``qvalue``, ``log_alpha`` (and v1's
    ``value``) every step, Polyak targets with ``tau``, ``log_alpha`` projected into its bounds.

    ``optimizer`` is one transform for every trainable key or a dict of them per key. The step is
    ``step(params, state, batch, key=None)``.
    """
    from funcrl.training import update

    trainable = ("actor", "qvalue", "log_alpha") + (("value",) if config.version == 1 else ())
    targets = {"target_qvalue": "qvalue"} if config.delay_qvalue else {}
    if config.version == 1:
        targets.update({"target_value": "value"} if config.delay_value else {})
        targets.update({"target_actor": "actor"} if config.delay_actor else {})
    return update(
        partial(loss, config=config, nets=nets),
        optimizer,
        trainable=trainable,
        targets=targets or None,
        tau=tau,
        project=partial(project, config=config),
    )


# -- TorchRL interop -------------------------------------------------------------------------------


def from_torchrl(loss_module: Any) -> tuple[Config, Nets, Params]:
    """``(config, nets, params)`` equal to a TorchRL ``SACLoss`` (v1 or v2): its hyperparameters
    and value estimator, its nets as funcrl nets (:func:`funcrl.nn.from_torchrl`: an MLP stays an
    MLP, anything else becomes a ``TorchModule``), and its online and target weights, ``log_alpha``
    and the ``TanhNormal``'s bounds. ``loss(params, batch, config=, nets=)`` then equals
    ``loss_module(batch)`` under the same ``torch.manual_seed``.

    The actor must be TorchRL's SAC layout: ``ProbabilisticActor(TensorDictModule(Sequential(net,
    NormalParamExtractor())), distribution_class=TanhNormal)``; the critics ``ValueOperator`` s over
    ``["observation", "action"]``.
    """
    from funcrl.objectives.actor_critic import (
        critic_from_torchrl,
        expand_bound,
        from_torchrl_tanh_normal_actor,
        read_torchrl,
        torchrl_action_dim,
        torchrl_estimator,
    )

    m = loss_module
    actor_net, actor_params, info = from_torchrl_tanh_normal_actor(m)
    qnet, qparams = critic_from_torchrl(m.qvalue_network, m.qvalue_network_params)
    act_dim = torchrl_action_dim(info["low"], actor_net, "sac.from_torchrl")
    config = Config(
        version=m._version,
        num_qvalue_nets=int(m.num_qvalue_nets),
        loss_function=m.loss_function,
        alpha_init=float(m.alpha_init),
        min_alpha=None if m.min_log_alpha is None else math.exp(float(m.min_log_alpha)),
        max_alpha=None if m.max_log_alpha is None else math.exp(float(m.max_log_alpha)),
        fixed_alpha=bool(m.fixed_alpha),
        target_entropy=float(m.target_entropy),
        delay_actor=bool(getattr(m, "delay_actor", False)),
        delay_qvalue=bool(m.delay_qvalue),
        delay_value=bool(getattr(m, "delay_value", True)),
        reduction=m.reduction,
        skip_done_states=bool(m.skip_done_states),
        use_prioritized_weights=m.use_prioritized_weights,
        **torchrl_estimator(m),
    )
    nets = Nets(
        actor=actor_net,
        qvalue=qnet,
        scale_mapping=info["scale_mapping"],
        scale_lb=info["scale_lb"],
        tanh_loc=info["tanh_loc"],
    )
    dtype = m.log_alpha.dtype
    params: Params = {
        "actor": actor_params,
        "qvalue": qparams,
        "log_alpha": m.log_alpha.detach().clone(),
        "action_bounds": {k: expand_bound(info[k], act_dim, dtype=dtype) for k in ("low", "high")},
    }
    if config.delay_qvalue:
        params["target_qvalue"] = critic_from_torchrl(
            m.qvalue_network, m.target_qvalue_network_params
        )[1]
    if config.version == 1:
        vnet, params["value"] = read_torchrl(
            m.value_network, m.value_network_params, m.value_network.module
        )
        nets = dataclasses.replace(nets, value=vnet)
        if config.delay_value:
            params["target_value"] = read_torchrl(
                m.value_network, m.target_value_network_params, m.value_network.module
            )[1]
        if config.delay_actor:
            inner = m.actor_network.module[0].module[0]
            params["target_actor"] = read_torchrl(
                m.actor_network, m.target_actor_network_params, inner
            )[1]
    return config, nets, params


def to_torchrl(config: Config, nets: Nets, params: Params, observation_dim: int | None = None):
    """A TorchRL ``SACLoss`` equal to ``loss(params, ., config=config, nets=nets)``: TorchRL
    modules built from the (resolved) nets with ``params`` copied in, targets and ``log_alpha``
    included, the value estimator made from ``config``.

    ``observation_dim`` sizes default (``None``) nets; a net given in ``nets`` knows its sizes.
    """
    from torchrl.objectives import SACLoss

    from funcrl.objectives.actor_critic import (
        make_torchrl_estimator,
        torchrl_qvalue,
        torchrl_tanh_normal_actor,
        write_torchrl,
    )

    owner = "sac.to_torchrl"
    low, high = bounds(params, owner)
    act_dim = low.shape[-1]
    if observation_dim is None:
        observation_dim = in_features(params["actor"], "sac.to_torchrl", "actor")
    nets = resolve(nets, observation_dim, act_dim)
    actor = torchrl_tanh_normal_actor(nets.actor, params["actor"], low, high, nets)
    q0 = tree.map(lambda x: x[0], params["qvalue"])
    value = None
    if config.version == 1:
        value = _torchrl_value(nets.value, params["value"])
    from torchrl.data import Bounded

    kw = {} if config.target_entropy == "auto" else {"target_entropy": config.target_entropy}
    kw["action_spec"] = Bounded(low, high, tuple(low.shape), dtype=low.dtype)
    m = SACLoss(
        actor,
        torchrl_qvalue(nets.qvalue, q0),
        value,
        num_qvalue_nets=config.num_qvalue_nets,
        loss_function=config.loss_function,
        alpha_init=config.alpha_init,
        min_alpha=config.min_alpha,
        max_alpha=config.max_alpha,
        fixed_alpha=config.fixed_alpha,
        delay_actor=config.delay_actor,
        delay_qvalue=config.delay_qvalue,
        delay_value=config.delay_value,
        reduction=config.reduction,
        skip_done_states=config.skip_done_states,
        use_prioritized_weights=config.use_prioritized_weights,
        **kw,
    )
    make_torchrl_estimator(m, config)
    qmod = m.qvalue_network
    write_torchrl(m.qvalue_network_params, qmod, qmod.module, params["qvalue"])
    if config.delay_qvalue:
        write_torchrl(m.target_qvalue_network_params, qmod, qmod.module, params["target_qvalue"])
    if config.version == 1:
        vmod = m.value_network
        if config.delay_value:
            write_torchrl(m.target_value_network_params, vmod, vmod.module, params["target_value"])
        if config.delay_actor:
            inner = m.actor_network.module[0].module[0]
            write_torchrl(
                m.target_actor_network_params, m.actor_network, inner, params["target_actor"]
            )
    with torch.no_grad():
        m.log_alpha.copy_(params["log_alpha"])
    return m


def _torchrl_value(net: Any, params: Any) -> Any:
    from torchrl.modules import ValueOperator

    from funcrl.objectives.actor_critic import torch_module

    return ValueOperator(torch_module(net, params, "sac.to_torchrl")[0], in_keys=["observation"])
