"""Soft Actor-Critic (Haarnoja et al. 2018, arXiv:1801.01290 and 1812.05905) as pure functions.

TorchRL 0.14's ``SACLoss``: version 2 (Q ensemble only, the default) and version 1 (with a state
value net ``V``, ``Config(version=1)``)::

    params = sac.init(0, obs_spec, act_spec)       # {"actor", "qvalue", "target_qvalue", "log_alpha",
                                                   #  "action_bounds"}
    losses = sac.loss(params, batch)               # loss_actor, loss_qvalue, loss_alpha, alpha, entropy
    train = funcrl.update(sac.loss, optim.adam(3e-4), trainable=("actor", "qvalue", "log_alpha"),
                          targets={"target_qvalue": "qvalue"})

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

Sampling uses the global torch RNG, in TorchRL's order (v2: next-state actions, then the actor's
actions; v1: the value loss's actions, then the actor's), so the same ``torch.manual_seed`` gives
TorchRL's draws.

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
* The action bounds of the ``TanhNormal`` live in ``params["action_bounds"]`` (from the action
  spec; ``[-1, 1]`` when absent), never trained.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import torch

from funcrl import tree
from funcrl.nn import make_generator
from funcrl.objectives.actor_critic import (
    action_bounds,
    auto_entropy,
    check_alpha,
    check_common,
    ensemble_q,
    init_ensemble,
    log_alpha_bounds,
    temperature,
)
from funcrl.objectives.common import (
    distance_loss,
    get,
    get_flag,
    init_net,
    mlp,
    priority_weights,
    require,
    spec_size,
    td0_target,
)
from funcrl.objectives.common import (
    reduce_loss as reduce,  # one reduction for every objective; the SAC family imports it here
)
from funcrl.record import Record

__all__ = [
    "Config",
    "Nets",
    "init",
    "loss",
    "project",
    "policy",
    "soft_value",
    "td0_target",
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
        target_entropy: ``H``; ``"auto"`` is ``-prod(action shape)``.
        delay_actor: v1 only: the value target uses ``params["target_actor"]``.
        delay_qvalue: use ``params["target_qvalue"]`` for targets (else the frozen online nets).
        delay_value: v1 only: the Q target uses ``params["target_value"]``.
        gamma: discount of the TD(0) target (TorchRL's value-estimator default).
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` over the batch.
        skip_done_states: the next-state actions of done rows are zero and their log-prob is 0.
        use_prioritized_weights: ``"auto"``/``True``: weight the reduction by
            ``batch["priority_weight"]`` when present; ``False``: ignore it.
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

    def __post_init__(self) -> None:
        if self.version not in (1, 2):
            raise ValueError(f"sac.Config: version must be 1 or 2, got {self.version!r}")
        check_common("sac.Config", self)
        check_alpha("sac.Config", self.alpha_init, self.min_alpha, self.max_alpha)


@dataclasses.dataclass(frozen=True)
class Nets:
    """The apply functions (``funcrl._common.mlp`` by default: a ReLU :class:`funcrl.nn.MLP`
    sized from its params, ``num_cells`` hidden units at :func:`init`).

    A field may be a plain function (then build the params yourself) or a funcrl network (it
    initialises itself in :func:`init`).

    Args:
        actor: ``(params, obs [*B, o]) -> [*B, 2 a]``, split by ``NormalParamExtractor`` into
            ``loc, scale`` of a ``TanhNormal`` on ``params["action_bounds"]``.
        qvalue: ``(params, obs, action) -> [*B, 1]`` for *one* critic; the loss vmaps it over the
            ensemble's leading dim (:class:`funcrl.nn.Ensemble`'s layout).
        value: ``(params, obs) -> [*B, 1]`` (version 1).
        num_cells: the default MLPs' hidden sizes.
        scale_mapping, scale_lb: ``NormalParamExtractor``'s arguments.
        tanh_loc: ``TanhNormal``'s ``tanh_loc``.
    """

    actor: Callable[..., torch.Tensor] = mlp
    qvalue: Callable[..., torch.Tensor] = mlp
    value: Callable[..., torch.Tensor] = mlp
    num_cells: tuple[int, ...] = (256, 256)
    scale_mapping: str = "biased_softplus_1.0"
    scale_lb: float = 1e-4
    tanh_loc: bool = False


# -- the equations ---------------------------------------------------------------------------------


def soft_value(q: torch.Tensor, log_prob: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """``V = Q - alpha log pi``: the soft state value. Shapes broadcast (``[N, *B]`` and ``[*B]``)."""
    return q - alpha * log_prob


def actor_objective(alpha: torch.Tensor, log_prob: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``alpha log pi(a|s) - Q(s, a)`` per sample, ``[*B]``."""
    return alpha * log_prob - q


def temperature_loss(
    log_alpha: torch.Tensor, log_prob: torch.Tensor, target_entropy: float | torch.Tensor
) -> torch.Tensor:
    """``-log_alpha (log pi + H)`` per sample; ``log_prob`` must already be detached."""
    return -log_alpha * (log_prob + target_entropy)


# -- plumbing shared by the SAC family -----------------------------------------------------------------


def project(params: Params, *, config: Any = Config()) -> Params:
    """Clamps ``params["log_alpha"]`` into ``[log min_alpha, log max_alpha]`` (TorchRL's in-place
    clamp, as a pure map to apply after an optimizer step)."""
    lo, hi = log_alpha_bounds(config.min_alpha, config.max_alpha)
    if lo is None and hi is None:
        return params
    return {**params, "log_alpha": torch.clamp(params["log_alpha"], lo, hi)}


def policy(params: Params, observation: torch.Tensor, *, nets: Nets = Nets(), actor_params=None):
    """The actor's ``TanhNormal`` at ``observation`` (``[*B, o]``), on ``params["action_bounds"]``.

    ``actor_params`` overrides ``params["actor"]`` (the loss passes frozen or target copies).
    """
    from funcrl.distributions import NormalParamExtractor, TanhNormal

    bounds = params.get("action_bounds")
    if bounds is None:
        low, high = -1.0, 1.0
    else:
        low, high = bounds["low"].detach(), bounds["high"].detach()
    p = params["actor"] if actor_params is None else actor_params
    loc, scale = NormalParamExtractor(nets.scale_mapping, nets.scale_lb)(nets.actor(p, observation))
    return TanhNormal(loc, scale, low=low, high=high, tanh_loc=nets.tanh_loc)


# -- init and loss ---------------------------------------------------------------------------------


def init(
    seed: int | torch.Generator,
    observation_spec: Any,
    action_spec: Any,
    config: Config = Config(),
    nets: Nets = Nets(),
    *,
    device=None,
    dtype=torch.float32,
) -> Params:
    """Fresh params: ``actor``, ``qvalue`` (``N`` stacked members), ``log_alpha`` (``log
    alpha_init``), ``action_bounds``, and the targets the config asks for (``target_qvalue``;
    v1: ``value``, ``target_value``, and ``target_actor`` with ``delay_actor``). Targets start as
    copies. Never touches the global RNG.
    """
    obs_dim = spec_size(observation_spec, "sac.init", "observation_spec")
    act_dim = spec_size(action_spec, "sac.init", "action_spec")
    gen = make_generator(seed)
    kw = {"device": device, "dtype": dtype}
    cells = {"num_cells": nets.num_cells, **kw}
    owner = "sac.init"
    params: Params = {
        "actor": init_net(
            nets.actor, (mlp,), in_features=obs_dim, out_features=2 * act_dim, seed=gen,
            owner=owner, **cells,
        ),
        "qvalue": init_ensemble(
            nets.qvalue, config.num_qvalue_nets, gen, in_features=obs_dim + act_dim,
            out_features=1, owner=owner, **cells,
        ),
        "log_alpha": torch.tensor(math.log(config.alpha_init), **kw),
        "action_bounds": action_bounds(action_spec, act_dim, **kw),
    }  # fmt: skip
    if config.delay_qvalue:
        params["target_qvalue"] = tree.clone(params["qvalue"])
    if config.version == 1:
        params["value"] = init_net(
            nets.value, (mlp,), in_features=obs_dim, out_features=1, seed=gen, owner=owner, **cells
        )
        if config.delay_value:
            params["target_value"] = tree.clone(params["value"])
        if config.delay_actor:
            params["target_actor"] = tree.clone(params["actor"])
    return params


def _target_q_params(params: Params, cfg: Any) -> Params:
    return tree.detach(params["target_qvalue"] if cfg.delay_qvalue else params["qvalue"])


def loss(
    params: Params, batch: Record, *, config: Config = Config(), nets: Nets = Nets()
) -> dict[str, torch.Tensor]:
    """SAC's losses on a batch of transitions. Samples (global torch RNG).

    Args:
        params: from :func:`init`.
        batch: ``observation [*B, o]``, ``action [*B, a]``, ``("next", "observation")``,
            ``("next", "reward") [*B, 1]``, ``("next", "terminated") [*B, 1]`` (and ``("next",
            "done")`` with ``skip_done_states``).

    Returns:
        ``loss_actor``, ``loss_qvalue``, ``loss_alpha`` (reduced), ``alpha``, ``entropy`` (0-d,
        detached), ``td_error`` (``[*B]``, detached), and ``loss_value`` for version 1.
    """
    owner = "sac.loss"
    need = ["actor", "qvalue", "log_alpha"]
    need += ["target_qvalue"] if config.delay_qvalue else []
    if config.version == 1:
        need += ["value"] + (["target_value"] if config.delay_value else [])
        need += ["target_actor"] if config.delay_actor else []
    require(params, need, owner)
    obs = get(batch, "observation", owner=owner)
    action = get(batch, "action", owner=owner)
    next_obs = get(batch, ("next", "observation"), owner=owner)
    reward = get_flag(batch, ("next", "reward"), owner=owner, like=action[..., :1])
    terminated = get_flag(batch, ("next", "terminated"), owner=owner, like=reward).bool()
    n = config.num_qvalue_nets
    r, term = reward.squeeze(-1), terminated.squeeze(-1)
    h = auto_entropy(config.target_entropy, action, batch.batch_ndim)
    log_alpha, alpha = temperature(params["log_alpha"], config)
    weights = priority_weights(batch, config, like=r)
    red = config.reduction

    def dist(p, o):
        return policy(params, o, nets=nets, actor_params=p)

    out: dict[str, torch.Tensor] = {}
    if config.version == 2:
        # Target: a' from the current actor, frozen; Q' from the target ensemble.
        a_next, lp_next = dist(tree.detach(params["actor"]), next_obs).rsample_and_log_prob()
        if config.skip_done_states:
            done = get_flag(batch, ("next", "done"), owner=owner, like=reward).bool()
            a_next = torch.where(done, torch.zeros_like(a_next), a_next)
            lp_next = torch.where(done.squeeze(-1), torch.zeros_like(lp_next), lp_next)
        q_next = ensemble_q(nets.qvalue, _target_q_params(params, config), next_obs, a_next)
        v_next = soft_value(q_next, lp_next, alpha).min(0).values
        y = td0_target(r, term, v_next, config.gamma).detach()
        q = ensemble_q(nets.qvalue, params["qvalue"], obs, action)
        loss_q = distance_loss(q, y.expand_as(q), config.loss_function).sum(0)
        out["td_error"] = (q - y).abs().detach().max(0).values
    else:
        # Q target from the (target) value net at s'; each Q_i regresses on one chunk.
        vp = params["target_value"] if config.delay_value else params["value"]
        y = td0_target(
            r, term, nets.value(tree.detach(vp), next_obs).squeeze(-1), config.gamma
        ).detach()
        if obs.shape[0] % n:
            raise ValueError(
                f"{owner}: version 1 splits the batch into num_qvalue_nets={n} chunks; the "
                f"leading batch dim {obs.shape[0]} is not divisible by it"
            )

        def chunks(x):
            return x.reshape(n, -1, *x.shape[1:])

        q = torch.func.vmap(nets.qvalue)(params["qvalue"], chunks(obs), chunks(action)).squeeze(-1)
        loss_q = distance_loss(q, chunks(y), config.loss_function).reshape(y.shape)
        out["td_error"] = (q - chunks(y)).pow(2).detach().reshape(y.shape)
        # Value: V(s) toward min_i Q'_i(s, a~) - alpha log pi'(a~|s), a~ from the (target) actor.
        ap = params["target_actor"] if config.delay_actor else params["actor"]
        a_v, lp_v = dist(tree.detach(ap), obs.detach()).rsample_and_log_prob()
        q_v = ensemble_q(nets.qvalue, _target_q_params(params, config), obs, a_v).min(0).values
        v_target = soft_value(q_v, lp_v, alpha).detach()
        v = nets.value(params["value"], obs).squeeze(-1)
        loss_v = distance_loss(v, v_target, config.loss_function)
    # Actor: reparameterised a~ ~ pi(s); the critic is frozen.
    a_pi, lp_pi = dist(params["actor"], obs).rsample_and_log_prob()
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
