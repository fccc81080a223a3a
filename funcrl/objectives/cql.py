"""Conservative Q-Learning (Kumar et al. 2020, arXiv:2006.04779): TorchRL 0.14's ``CQLLoss``.

    params = cql.init(0, obs_spec, act_spec)     # {"actor", "qvalue", "target_qvalue", "log_alpha",
                                                 #  "action_bounds"} (+ "log_alpha_prime")
    losses = cql.loss(params, batch, key=key)    # loss_actor, loss_actor_bc, loss_qvalue, loss_cql,
                                                 # loss_alpha (+ loss_alpha_prime), alpha, entropy
    train = cql.trainer(optim.adam(3e-4))

SAC's actor, temperature and critics (:mod:`funcrl.objectives.actor_critic`), plus a conservative
penalty on the critics. With ``R = num_random`` draws per state, ``T`` the temperature, ``w`` the
``min_q_weight`` and, for every critic ``i`` and draw ``j``::

    a' ~ pi(s')                                            (online actor, gradient-stopped)
    y     = r + gamma (1 - terminated) min_i Q'_i(s', a')  (deterministic_backup; else - alpha log pi)
    y     = r + gamma (1 - terminated) min_i max_j Q'_i(s', a'_j)                    (max_q_backup)
    L_Q   = sum_i l(Q_i(s, a), y)
    lse_i = w T logsumexp_k [Q_i(s, u_j) - log p_U,  Q_i(s', a'_j) - log pi(a'_j|s'),
                             Q_i(s, a_j) - log pi(a_j|s)] / T,   u_j ~ U(box), a_j ~ pi(s)
    L_cql = sum_i mean_{B, j}(lse_i) - w Q_i(s, a)                     (gap_i: critic i's term)
    L_cql = sum_i sg(alpha') (gap_i - lagrange_thresh)                          (with_lagrange)
    L_pi  = alpha log pi(a~|s) - min_i Q_i(s, a~)          (critics gradient-stopped)
    L_bc  = alpha log pi(a~|s) - log pi(a|s)               (``loss_actor_bc``: BC warm-up)
    L_alpha  = -log_alpha (log pi(a~|s) + H)
    L_alpha' = -alpha' / 2 sum_i (mean(L_cql_i) - lagrange_thresh),  alpha' = min(e^{log_alpha'}, 1e6)

The logsumexp runs over the three action sources of each draw and the mean over every state and
draw, the second source is evaluated at ``s'``, and the actor-sampled actions are
gradient-stopped: all exactly TorchRL 0.14's ``CQLLoss`` (the original code's logsumexp runs over
all ``3 R`` actions of a state). Draws, in TorchRL's order: ``a'`` (then ``R`` more with
``max_q_backup``), the uniform ``u``, ``a_j ~ pi(s)``, ``a'_j ~ pi(s')``, the BC actor's and the
actor's ``a~``; with ``key`` each site has its own sub-key (:mod:`funcrl.random`), with
``key=None`` the global RNG gives TorchRL's draws.

Intentional differences from TorchRL:

* ``u`` is uniform on the action box ``params["action_bounds"]`` with its density ``p_U``
  (TorchRL: always ``[-1, 1]`` and ``0.5^a``; the same on that box).
* With ``with_lagrange``, ``L_cql`` is ``alpha' (gap - lagrange_thresh)``, as in the paper and
  its code: TorchRL 0.14 trains ``alpha'`` but leaves ``L_cql`` unscaled, so its Lagrangian never
  reaches the critics (the option changes nothing but a logged loss). ``L_alpha'`` trains
  ``log_alpha_prime`` only (the gap is gradient-stopped; TorchRL's examples step it with its own
  optimizer).
* ``batch["priority_weight"]`` weights the reductions (``use_prioritized_weights``); TorchRL's
  ``CQLLoss`` ignores it. ``td_error`` (``[*B]``, absolute) is returned, not written.
* ``num_qvalue_nets`` may differ from 2 (TorchRL fixes it); the target actor of TorchRL's
  ``delay_actor`` is never read by its loss and does not exist here.
* ``log_alpha``'s bounds are a straight-through clamp with :func:`project` after each step (see
  :mod:`funcrl.sac`).
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
    check_config,
    check_nets,
    ensemble_q,
    init_ensemble,
    param_dtype,
    project,
    read_transitions,
    resolve,
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
    "project",
    "conservative_penalty",
    "from_torchrl",
    "to_torchrl",
]

Params = dict[str, Any]

# TorchRL caps alpha' so that a long-unmet gap cannot overflow it.
MAX_ALPHA_PRIME = 1e6


@dataclasses.dataclass(frozen=True)
class Config:
    """``CQLLoss``'s hyperparameters, TorchRL's names and defaults.

    Args:
        loss_function, alpha_init, min_alpha, max_alpha, fixed_alpha, target_entropy,
            delay_qvalue, gamma, reduction, use_prioritized_weights, value_estimator, lmbda: as
            :class:`funcrl.sac.Config`.
        num_qvalue_nets: critics in the ensemble (TorchRL: always 2).
        temperature: ``T`` of the conservative logsumexp.
        min_q_weight: ``w``, the weight of the conservative penalty.
        max_q_backup: bootstrap from ``max_j`` over ``num_random`` next actions.
        deterministic_backup: leave the entropy bonus out of the target (TorchRL's default).
        num_random: ``R``, actions drawn per state for the penalty.
        with_lagrange: tune ``alpha'`` (``params["log_alpha_prime"]``) towards the gap
            ``lagrange_thresh``; adds ``loss_alpha_prime``.
        lagrange_thresh: the target action gap ``tau``.
    """

    loss_function: str = "smooth_l1"
    alpha_init: float = 1.0
    min_alpha: float | None = None
    max_alpha: float | None = None
    fixed_alpha: bool = False
    target_entropy: float | str = "auto"
    delay_qvalue: bool = True
    num_qvalue_nets: int = 2
    temperature: float = 1.0
    min_q_weight: float = 1.0
    max_q_backup: bool = False
    deterministic_backup: bool = True
    num_random: int = 10
    with_lagrange: bool = False
    lagrange_thresh: float = 0.0
    gamma: float = 0.99
    reduction: str = "mean"
    use_prioritized_weights: bool | str = "auto"
    value_estimator: str = "td0"
    lmbda: float = 0.95

    def __post_init__(self) -> None:
        owner = "cql.Config"
        check_config(owner, self)
        check_alpha(owner, self.alpha_init, self.min_alpha, self.max_alpha)
        if not (self.target_entropy == "auto" or isinstance(self.target_entropy, (int, float))):
            raise ValueError(
                f"{owner}: target_entropy must be 'auto' or a number, got {self.target_entropy!r}"
            )
        for name in ("num_qvalue_nets", "num_random"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{owner}: {name} must be an int >= 1, got {v!r}")
        if isinstance(self.temperature, bool) or not float(self.temperature) > 0:
            raise ValueError(f"{owner}: temperature must be > 0, got {self.temperature!r}")
        if isinstance(self.min_q_weight, bool) or not float(self.min_q_weight) >= 0:
            raise ValueError(f"{owner}: min_q_weight must be >= 0, got {self.min_q_weight!r}")
        if not math.isfinite(float(self.lagrange_thresh)):
            raise ValueError(
                f"{owner}: lagrange_thresh must be finite, got {self.lagrange_thresh!r}"
            )


@dataclasses.dataclass(frozen=True)
class Nets:
    """As :class:`funcrl.sac.Nets` without the value net: ``actor`` (``o -> 2 a``, a
    ``TanhNormal`` on the bounds) and one critic ``qvalue`` (``(o, a) -> 1``)."""

    ROLES: ClassVar[dict[str, str]] = {"actor": "gaussian_actor", "qvalue": "qvalue"}

    actor: Any = None
    qvalue: Any = None
    num_cells: tuple[int, ...] = (256, 256)
    scale_mapping: str = "biased_softplus_1.0"
    scale_lb: float = 1e-4
    tanh_loc: bool = False


def init(
    seed: int | torch.Tensor | torch.Generator,
    observation_spec: Any,
    action_spec: Any,
    config: Config = Config(),
    nets: Nets = Nets(),
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Params:
    """Fresh params: ``actor``, ``qvalue`` (stacked members), ``target_qvalue`` (with
    ``delay_qvalue``), ``log_alpha`` (``log alpha_init``), ``action_bounds`` and, with
    ``with_lagrange``, ``log_alpha_prime`` (0, TorchRL's ``log 1``)."""
    owner = "cql.init"
    check_nets(nets, owner)
    obs_dim = spec_size(observation_spec, owner, "observation_spec")
    act_dim = spec_size(action_spec, owner, "action_spec")
    box = spec_bounds(action_spec, act_dim, device=device, dtype=dtype, owner=owner)
    nets = resolve(nets, obs_dim, act_dim)
    gen = make_generator(seed)
    kw = {"device": device, "dtype": dtype}
    params: Params = {
        "actor": nets.actor.init(gen, **kw),
        "qvalue": init_ensemble(nets.qvalue, config.num_qvalue_nets, gen, **kw),
        "log_alpha": torch.tensor(math.log(config.alpha_init), **kw),
        "action_bounds": box,
    }
    if config.delay_qvalue:
        params["target_qvalue"] = tree.clone(params["qvalue"])
    if config.with_lagrange:
        params["log_alpha_prime"] = torch.zeros((), **kw)
    return params


# -- the conservative penalty ----------------------------------------------------------------------


def _repeat(x: torch.Tensor, n: int, batch_ndim: int) -> torch.Tensor:
    """Each state ``n`` times in a row along the last batch dim (TorchRL's ``repeat_interleave``)."""
    return x.repeat_interleave(n, dim=batch_ndim - 1)


def conservative_penalty(
    q_random: torch.Tensor,
    q_next: torch.Tensor,
    q_curr: torch.Tensor,
    log_density: torch.Tensor,
    next_log_prob: torch.Tensor,
    curr_log_prob: torch.Tensor,
    q_data: torch.Tensor,
    temperature: float,
    min_q_weight: float,
) -> torch.Tensor:
    """``mean(w T logsumexp(. / T)) - w Q(s, a)`` per critic and sample: ``[N, *B]``.

    Args:
        q_random, q_next, q_curr: ``[N, *B']`` critics at the uniform, next-policy and
            policy actions (``B'`` the batch with ``num_random`` draws per state).
        log_density: ``log p_U`` of the uniform draw (0-d).
        next_log_prob, curr_log_prob: ``[*B']``, gradient-stopped.
        q_data: ``[N, *B]`` critics at the data's actions.
    """
    stacked = torch.stack(
        [q_random - log_density, q_next - next_log_prob, q_curr - curr_log_prob], -1
    )
    lse = torch.logsumexp(stacked / temperature, dim=-1) * min_q_weight * temperature
    # TorchRL averages the logsumexp over every state and draw of the batch.
    n = q_data.shape[0]
    mean_lse = lse.reshape(n, -1).mean(-1).reshape(n, *([1] * (q_data.dim() - 1)))
    return mean_lse - q_data * min_q_weight


def loss(
    params: Params,
    batch: Record,
    *,
    config: Config = Config(),
    nets: Nets = Nets(),
    key: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """CQL's losses on a batch of dataset transitions. Samples (``key``, else the global RNG).

    Args:
        params: from :func:`init`.
        batch: as :func:`funcrl.sac.loss` (``observation``, ``action``, ``("next", ...)``).
        key: a :mod:`funcrl.random` key (split into one sub-key per draw site).

    Returns:
        ``loss_actor``, ``loss_actor_bc``, ``loss_qvalue``, ``loss_cql``, ``loss_alpha`` (and
        ``loss_alpha_prime`` with ``with_lagrange``), reduced; ``alpha``, ``entropy`` (0-d,
        detached); ``td_error`` ``[*B]`` (detached).
    """
    owner = "cql.loss"
    check_batch(batch, owner)
    need = ["actor", "qvalue", "log_alpha", "action_bounds"]
    need += ["target_qvalue"] if config.delay_qvalue else []
    need += ["log_alpha_prime"] if config.with_lagrange else []
    require(params, need, owner)
    low, high = bounds(params, owner)
    t = read_transitions(
        batch, owner=owner, act_dim=low.shape[-1], dtype=param_dtype(params, "actor")
    )
    obs, action, next_obs = t.observation, t.action, t.next_observation
    nets = resolve(nets, obs.shape[-1], action.shape[-1])
    nb, r = batch.batch_ndim, config.num_random
    h = auto_entropy(config.target_entropy, action, nb)
    log_alpha, alpha = temperature(params["log_alpha"], config)
    weights = priority_weights(batch, config, like=t.reward.squeeze(-1), owner=owner)
    red = config.reduction
    k_next, k_backup, k_uniform, k_curr, k_new, k_bc, k_actor = random.split_optional(key, 7)
    actor_frozen = tree.detach(params["actor"])
    q_target = tree.detach(params["target_qvalue"] if config.delay_qvalue else params["qvalue"])

    def dist(p, o):
        return tanh_normal(nets.actor(p, o), low, high, nets)

    # Critics' target.
    a_next, lp_next = dist(actor_frozen, next_obs).rsample_and_log_prob(key=k_next)
    if config.max_q_backup:
        rep_next = _repeat(next_obs, r, nb)
        a_rep, _ = dist(actor_frozen, rep_next).rsample_and_log_prob(key=k_backup)
        q_rep = ensemble_q(nets.qvalue, q_target, rep_next, a_rep.detach())
        q_rep = q_rep.reshape(q_rep.shape[0], *obs.shape[:-1], r).max(-1).values
        next_value = q_rep.min(0).values
    else:
        next_value = ensemble_q(nets.qvalue, q_target, next_obs, a_next.detach()).min(0).values
        if not config.deterministic_backup:
            next_value = next_value - alpha * lp_next.detach()
    y = value_target(config, batch, t, next_value, owner=owner)
    qs = ensemble_q(nets.qvalue, params["qvalue"], obs, action)  # [N, *B]
    loss_q = distance_loss(qs, y.expand_as(qs), config.loss_function).sum(0)

    # Conservative penalty: push Q down at uniform and policy actions, up at the data's.
    rep_obs, rep_next = _repeat(obs, r, nb), _repeat(next_obs, r, nb)
    u = _uniform(k_uniform, rep_obs.shape[:-1] + action.shape[-1:], low, high)
    log_density = -torch.log(high - low).sum()
    a_curr, lp_curr = dist(actor_frozen, rep_obs).rsample_and_log_prob(key=k_curr)
    a_new, lp_new = dist(actor_frozen, rep_next).rsample_and_log_prob(key=k_new)
    penalty = conservative_penalty(
        ensemble_q(nets.qvalue, params["qvalue"], rep_obs, u),
        ensemble_q(nets.qvalue, params["qvalue"], rep_next, a_new.detach()),
        ensemble_q(nets.qvalue, params["qvalue"], rep_obs, a_curr.detach()),
        log_density,
        lp_new.detach(),
        lp_curr.detach(),
        qs,
        config.temperature,
        config.min_q_weight,
    )  # [N, *B]

    # Actor (and its BC warm-up variant), reparameterised; the critics are frozen.
    pi = dist(params["actor"], obs)
    _, lp_bc = pi.rsample_and_log_prob(key=k_bc)
    loss_bc = actor_objective(alpha, lp_bc, pi.log_prob(action))
    a_pi, lp_pi = pi.rsample_and_log_prob(key=k_actor)
    q_pi = ensemble_q(nets.qvalue, tree.detach(params["qvalue"]), obs, a_pi).min(0).values
    loss_cql = penalty.sum(0)
    if config.with_lagrange:
        # The paper's Lagrangian: alpha' (gap - tau) per critic, alpha' gradient-stopped here
        # (trained by loss_alpha_prime alone). TorchRL 0.14 trains alpha' but never applies it.
        alpha_prime = params["log_alpha_prime"].exp().clamp_max(MAX_ALPHA_PRIME)
        loss_cql = (alpha_prime.detach() * (penalty - config.lagrange_thresh)).sum(0)
    out = {
        "loss_actor": reduce_loss(actor_objective(alpha, lp_pi, q_pi), red, weights),
        "loss_actor_bc": reduce_loss(loss_bc, red, weights),
        "loss_qvalue": reduce_loss(loss_q, red, weights),
        "loss_cql": reduce_loss(loss_cql, red, weights),
        "loss_alpha": reduce_loss(temperature_loss(log_alpha, lp_pi.detach(), h), red, weights),
        "alpha": alpha,
        "entropy": -lp_pi.detach().mean(),
        "td_error": (qs.detach() - y).abs().max(0).values,
    }
    if config.with_lagrange:
        gaps = torch.stack([reduce_loss(p, "mean", weights) for p in penalty.detach().unbind(0)])
        out["loss_alpha_prime"] = -0.5 * (alpha_prime * (gaps - config.lagrange_thresh)).sum()
    return out


def _uniform(key: torch.Tensor | None, shape, low: torch.Tensor, high: torch.Tensor):
    """Uniform actions on ``[low, high]``: TorchRL's ``uniform_(-1, 1)`` draw mapped to the box
    (the same global-RNG draw), or :func:`funcrl.random.uniform` with a key."""
    if key is None:
        u = torch.empty(shape, dtype=low.dtype, device=low.device).uniform_(-1, 1)
    else:
        from funcrl import random

        u = random.uniform(key, shape, low.dtype, -1.0, 1.0).to(low.device)
    return low + (u + 1) * (high - low) / 2


def act(
    params: Params,
    observation: torch.Tensor,
    *,
    config: Config = Config(),
    nets: Nets = Nets(),
    mode: str = "random",
    key: torch.Tensor | None = None,
) -> torch.Tensor:
    """The action ``[*B, a]``: a ``TanhNormal`` draw (``"random"``; ``key`` or the global RNG) or
    its deterministic action (``"deterministic"``). Detached."""
    owner = "cql.act"
    check_mode(owner, mode)
    require(params, ["actor", "action_bounds"], owner)
    low, high = bounds(params, owner)
    obs = check_observation(owner, observation, param_dtype(params, "actor"))
    nets = resolve(nets, obs.shape[-1], low.shape[-1])
    dist = tanh_normal(nets.actor(tree.detach(params["actor"]), obs), low, high, nets)
    return act_stochastic(dist, mode, key)


def _without_bc(losses: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # The BC warm-up loss is a diagnostic here: training both actor losses at once is neither.
    out = dict(losses)
    out["actor_bc"] = out.pop("loss_actor_bc").detach()
    return out


def trainer(
    optimizer: Any,
    *,
    config: Config = Config(),
    nets: Nets = Nets(),
    tau: float = 0.005,
):
    """:func:`funcrl.training.update` for CQL: ``actor``, ``qvalue``, ``log_alpha`` (and
    ``log_alpha_prime``) every step on ``loss_actor + loss_qvalue + loss_cql + loss_alpha (+
    loss_alpha_prime)``, Polyak targets with ``tau``, ``log_alpha`` projected into its bounds.
    ``loss_actor_bc`` is reported as the ``actor_bc`` metric, not trained (for a BC warm-up,
    minimise it in a loop of your own)."""
    from funcrl.training import update

    def loss_fn(params, batch, key=None):
        return _without_bc(loss(params, batch, config=config, nets=nets, key=key))

    trainable = ("actor", "qvalue", "log_alpha")
    trainable += ("log_alpha_prime",) if config.with_lagrange else ()
    return update(
        loss_fn,
        optimizer,
        trainable=trainable,
        targets={"target_qvalue": "qvalue"} if config.delay_qvalue else None,
        tau=tau,
        project=partial(project, config=config),
    )


# -- TorchRL interop -------------------------------------------------------------------------------


def from_torchrl(loss_module: Any) -> tuple[Config, Nets, Params]:
    """``(config, nets, params)`` equal to a TorchRL ``CQLLoss`` (hyperparameters, value
    estimator, nets, online and target weights, ``log_alpha``, ``log_alpha_prime`` and the
    ``TanhNormal``'s bounds); the actor in TorchRL's SAC layout."""
    from funcrl.objectives.actor_critic import (
        critic_from_torchrl,
        expand_bound,
        from_torchrl_tanh_normal_actor,
        torchrl_action_dim,
        torchrl_estimator,
    )

    m = loss_module
    actor_net, actor_params, info = from_torchrl_tanh_normal_actor(m)
    qnet, qparams = critic_from_torchrl(m.qvalue_network, m.qvalue_network_params)
    act_dim = torchrl_action_dim(info["low"], actor_net, "cql.from_torchrl")
    dtype = tree.leaves(actor_params)[0].dtype
    config = Config(
        loss_function=m.loss_function,
        alpha_init=float(m.alpha_init),
        min_alpha=None if m.min_log_alpha is None else math.exp(float(m.min_log_alpha)),
        max_alpha=None if m.max_log_alpha is None else math.exp(float(m.max_log_alpha)),
        fixed_alpha=bool(m.fixed_alpha),
        target_entropy=float(m.target_entropy),
        delay_qvalue=bool(m.delay_qvalue),
        num_qvalue_nets=int(m.num_qvalue_nets),
        temperature=float(m.temperature),
        min_q_weight=float(m.min_q_weight),
        max_q_backup=bool(m.max_q_backup),
        deterministic_backup=bool(m.deterministic_backup),
        num_random=int(m.num_random),
        with_lagrange=bool(m.with_lagrange),
        lagrange_thresh=float(getattr(m, "target_action_gap", 0.0)),
        reduction=m.reduction,
        **torchrl_estimator(m),
    )
    nets = Nets(
        actor=actor_net,
        qvalue=qnet,
        scale_mapping=info["scale_mapping"],
        scale_lb=info["scale_lb"],
        tanh_loc=info["tanh_loc"],
    )
    params: Params = {
        "actor": actor_params,
        "qvalue": qparams,
        "log_alpha": m.log_alpha.detach().clone(),
        "action_bounds": {
            "low": expand_bound(info["low"], act_dim, dtype=dtype),
            "high": expand_bound(info["high"], act_dim, dtype=dtype),
        },
    }
    if config.delay_qvalue:
        params["target_qvalue"] = critic_from_torchrl(
            m.qvalue_network, m.target_qvalue_network_params
        )[1]
    if config.with_lagrange:
        params["log_alpha_prime"] = m.log_alpha_prime.detach().clone()
    return config, nets, params


def to_torchrl(config: Config, nets: Nets, params: Params, observation_dim: int | None = None):
    """A TorchRL ``CQLLoss`` equal to ``loss(params, ., config=config, nets=nets)`` under the same
    ``torch.manual_seed``: TorchRL modules built from the (resolved) nets with ``params`` copied in
    (the SAC actor layout on the ``TanhNormal``'s bounds, ``ValueOperator`` critics), the target
    critics, ``log_alpha``, ``log_alpha_prime`` and the value estimator from ``config``; on an
    action box other than ``[-1, 1]`` the conservative penalty differs (TorchRL draws its uniform
    actions on ``[-1, 1]``, see the module docstring). ``observation_dim`` sizes default nets (read
    from the actor params when ``None``)."""
    from torchrl.data import Bounded
    from torchrl.objectives import CQLLoss

    from funcrl.objectives.actor_critic import (
        make_torchrl_estimator,
        torchrl_qvalue,
        torchrl_tanh_normal_actor,
        write_torchrl,
    )
    from funcrl.objectives.common import in_features

    owner = "cql.to_torchrl"
    require(params, ["actor", "qvalue", "log_alpha", "action_bounds"], owner)
    if config.delay_qvalue:
        require(params, ["target_qvalue"], owner)
    if config.with_lagrange:
        require(params, ["log_alpha_prime"], owner)
    low, high = bounds(params, owner)
    if observation_dim is None:
        observation_dim = in_features(params["actor"], owner, "actor")
    nets = resolve(nets, observation_dim, low.shape[-1])
    kw = {} if config.target_entropy == "auto" else {"target_entropy": config.target_entropy}
    m = CQLLoss(
        torchrl_tanh_normal_actor(nets.actor, params["actor"], low, high, nets),
        torchrl_qvalue(nets.qvalue, tree.map(lambda x: x[0], params["qvalue"])),
        action_spec=Bounded(low, high, tuple(low.shape), dtype=low.dtype),
        loss_function=config.loss_function,
        alpha_init=config.alpha_init,
        min_alpha=config.min_alpha,
        max_alpha=config.max_alpha,
        fixed_alpha=config.fixed_alpha,
        delay_qvalue=config.delay_qvalue,
        temperature=config.temperature,
        min_q_weight=config.min_q_weight,
        max_q_backup=config.max_q_backup,
        deterministic_backup=config.deterministic_backup,
        num_random=config.num_random,
        with_lagrange=config.with_lagrange,
        lagrange_thresh=config.lagrange_thresh,
        reduction=config.reduction,
        scalar_output_mode="non_tensor" if config.reduction == "none" else None,
        **kw,
    )
    make_torchrl_estimator(m, config)
    qmod = m.qvalue_network
    write_torchrl(m.qvalue_network_params, qmod, qmod.module, params["qvalue"])
    if config.delay_qvalue:
        write_torchrl(m.target_qvalue_network_params, qmod, qmod.module, params["target_qvalue"])
    with torch.no_grad():
        m.log_alpha.copy_(params["log_alpha"])
        if config.with_lagrange:
            m.log_alpha_prime.copy_(params["log_alpha_prime"])
    return m
