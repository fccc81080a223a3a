"""Randomized Ensembled Double Q-learning (Chen et al. 2021, arXiv:2101.05982) as pure functions.

TorchRL 0.14's ``REDQLoss``: SAC with a large ensemble (``N = 10``) whose target takes the min over
a random subset of ``K = sub_sample_len`` target nets (``M`` in the paper)::

    a, log pi  ~ pi(s)      (reparameterised)      a', log pi' ~ pi(s')   (actor frozen)
    y          = r + gamma (1 - terminated) min_{j in K} [Q'_j(s', a') - alpha log pi']
    L_Q        = mean_{i, b} l(Q_i(s, a_t), y)
    L_pi       = mean_{i, b} [alpha log pi - Q_i(s, a)]        (mean over all N nets, Q frozen)
    L_alpha    = mean [-alpha~ (log pi + H)]   over both draws (current and next states)

with ``alpha = exp(clamp(log_alpha, log 0.1, log 10))`` and ``alpha~`` its straight-through version
(TorchRL's ``_safe_log_alpha``: clamped value, identity gradient; TorchRL REDQ never clamps the
parameter itself either). Note the differences from SAC that TorchRL has: the Q loss and the actor
loss are *means* over the ensemble (SAC sums the Q losses and takes the min for the actor), the
temperature loss multiplies ``alpha``, not ``log_alpha``, and averages over both draws.

Draws: the subset first, then one draw for the stacked current and next states (``[2, *B, a]``),
TorchRL's order; with ``key`` (a :mod:`funcrl.random` key) one sub-key per draw site in that order,
with ``key=None`` the global torch RNG. The subset is ``argsort(rand(N))[:K]``
(:func:`sample_subset`, which vmaps and compiles) where TorchRL uses ``randperm``: the subsets have
the same (uniform) law but not the same draws; the tests patch :func:`sample_subset` to compare
draw for draw.

The target is TD(0) by default; ``Config(value_estimator="td1" | "td_lambda")`` runs
:mod:`funcrl.values`' recursion over a batch of trajectories ``[*B, T]`` (see
:func:`funcrl.objectives.actor_critic.value_target`).

Intentional differences: the subset draw above; no ``gSDE``; ``separate_losses`` does not exist;
the dict also holds ``td_error`` (``[*B]``, the largest absolute TD error over the ensemble);
``priority_weight`` weights every reduction (TorchRL's REDQ ignores it).
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial
from typing import Any, ClassVar

import torch

from funcrl import random, tree
from funcrl.distributions import TanhNormal
from funcrl.nn import make_generator
from funcrl.objectives.actor_critic import (
    act_stochastic,
    auto_entropy,
    bounds,
    check_alpha,
    check_common,
    check_nets,
    clamp_log_alpha,
    ensemble_q,
    expand_bound,
    init_ensemble,
    param_dtype,
    read_transitions,
    resolve,
    soft_value,
    tanh_normal,
    value_target,
)
from funcrl.objectives.actor_critic import action_bounds as spec_bounds
from funcrl.objectives.common import (
    check_batch,
    check_mode,
    check_observation,
    distance_loss,
    in_features,
    priority_weights,
    reduce_loss,
    require,
    spec_size,
)
from funcrl.record import Record

__all__ = [
    "from_torchrl",
    "to_torchrl",
    "Config",
    "Nets",
    "init",
    "loss",
    "act",
    "trainer",
    "sample_subset",
    "redq_temperature_loss",
]

Params = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Config:
    """``REDQLoss``'s hyperparameters, TorchRL's names and defaults.

    Args:
        num_qvalue_nets: ``N``.
        sub_sample_len: ``K``, the target subset size (clipped to ``[1, N - 1]`` as TorchRL).
        loss_function, alpha_init, fixed_alpha, target_entropy, gamma, reduction: as SAC.
        min_alpha, max_alpha: alpha's clamp (TorchRL's REDQ defaults: 0.1 and 10).
        delay_qvalue: bootstrap from ``params["target_qvalue"]`` (else the frozen online nets).
        use_prioritized_weights, value_estimator, lmbda: as :class:`funcrl.sac.Config`.
    """

    num_qvalue_nets: int = 10
    sub_sample_len: int = 2
    loss_function: str = "smooth_l1"
    alpha_init: float = 1.0
    min_alpha: float = 0.1
    max_alpha: float = 10.0
    fixed_alpha: bool = False
    target_entropy: float | str = "auto"
    delay_qvalue: bool = True
    gamma: float = 0.99
    reduction: str = "mean"
    use_prioritized_weights: bool | str = "auto"
    value_estimator: str = "td0"
    lmbda: float = 0.95

    def __post_init__(self) -> None:
        check_common("redq.Config", self)
        check_alpha("redq.Config", self.alpha_init, self.min_alpha, self.max_alpha)
        if self.sub_sample_len < 1:
            raise ValueError(f"redq.Config: sub_sample_len must be >= 1, got {self.sub_sample_len}")

    @property
    def subset_size(self) -> int:
        return max(1, min(self.sub_sample_len, self.num_qvalue_nets - 1))


@dataclasses.dataclass(frozen=True)
class Nets:
    """REDQ's nets (as :class:`funcrl.sac.Nets` without ``value``): funcrl nets, ``None`` for a
    ReLU :class:`funcrl.nn.MLP` with ``num_cells`` hidden units.

    Args:
        actor: ``(params, obs) -> [*B, 2 a]``, a ``TanhNormal``'s ``loc, scale``.
        qvalue: ``(params, obs, action) -> [*B, 1]`` for one critic (vmapped over ``N``).
        num_cells, scale_mapping, scale_lb, tanh_loc: as :class:`funcrl.sac.Nets`.
    """

    ROLES: ClassVar[dict[str, str]] = {"actor": "gaussian_actor", "qvalue": "qvalue"}

    actor: Any = None
    qvalue: Any = None
    num_cells: tuple[int, ...] = (256, 256)
    scale_mapping: str = "biased_softplus_1.0"
    scale_lb: float = 1e-4
    tanh_loc: bool = False


def sample_subset(n: int, k: int, device=None, key: torch.Tensor | None = None) -> torch.Tensor:
    """``k`` distinct indices of ``range(n)``, uniformly at random: ``[k]`` int64. Samples
    (``key``, else the global torch RNG)."""
    if key is None:
        u = torch.rand(n, device=device)
    else:
        from funcrl import random

        u = random.uniform(key, (n,)).to(device)
    return u.argsort()[:k]


def redq_temperature_loss(
    log_alpha: torch.Tensor, log_prob: torch.Tensor, target_entropy: float
) -> torch.Tensor:
    """``-exp(log_alpha) (log pi + H)`` per sample; ``log_prob`` must already be detached."""
    return -log_alpha.exp() * (log_prob + target_entropy)


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
    """``actor``, ``qvalue`` (``N`` stacked members), ``target_qvalue`` (a copy, with
    ``delay_qvalue``), ``log_alpha`` and ``action_bounds``. Never touches the global RNG."""
    owner = "redq.init"
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
    return params


def loss(
    params: Params,
    batch: Record,
    *,
    config: Config = Config(),
    nets: Nets = Nets(),
    key: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """REDQ's losses. Samples (``key``, else the global torch RNG): the subset, then the actions.

    Returns:
        ``loss_actor``, ``loss_qvalue``, ``loss_alpha``, ``alpha``, ``entropy``, and TorchRL's
        detached extras ``state_action_value_actor [N, *B]``, ``action_log_prob_actor [*B]``,
        ``next.state_value [*B]``, ``target_value [*B]``; plus ``td_error [*B]`` (absolute).
    """
    owner = "redq.loss"
    check_batch(batch, owner)
    need = ["actor", "qvalue", "log_alpha", "action_bounds"]
    require(params, need + (["target_qvalue"] if config.delay_qvalue else []), owner)
    low, high = bounds(params, owner)
    t = read_transitions(
        batch, owner=owner, act_dim=low.shape[-1], dtype=param_dtype(params, "log_alpha")
    )
    obs, action, next_obs = t.observation, t.action, t.next_observation
    nets = resolve(nets, obs.shape[-1], action.shape[-1])
    h = auto_entropy(config.target_entropy, action, batch.batch_ndim)
    log_alpha = params["log_alpha"].detach() if config.fixed_alpha else params["log_alpha"]
    safe_log_alpha = clamp_log_alpha(log_alpha, config.min_alpha, config.max_alpha)
    alpha = safe_log_alpha.detach().exp()
    weights = priority_weights(batch, config, like=t.reward.squeeze(-1), owner=owner)
    key_subset, key_actions = random.split_optional(key, 2)

    # The random target subset, then one draw for [current, next] (TorchRL's order).
    n, k = config.num_qvalue_nets, config.subset_size
    if key_subset is None:
        idx = sample_subset(n, k, device=obs.device)
    else:
        idx = sample_subset(n, k, device=obs.device, key=key_subset)
    d_now = tanh_normal(nets.actor(params["actor"], obs), low, high, nets)
    d_next = tanh_normal(nets.actor(tree.detach(params["actor"]), next_obs), low, high, nets)
    loc = torch.stack([d_now.loc, d_next.loc])
    scale = torch.stack([d_now.scale, d_next.scale])
    both = TanhNormal(loc, scale, low=low, high=high)  # loc already squashed
    a_both, lp_both = both.rsample_and_log_prob(key=key_actions)
    (a_pi, a_next), (lp_pi, lp_next) = a_both.unbind(0), lp_both.unbind(0)

    q_pi = ensemble_q(nets.qvalue, tree.detach(params["qvalue"]), obs, a_pi)
    loss_actor = -soft_value(q_pi, lp_pi, alpha)
    tq = params["target_qvalue"] if config.delay_qvalue else params["qvalue"]
    tq_sub = tree.map(lambda x: x.detach()[idx], tq)
    q_next = ensemble_q(nets.qvalue, tq_sub, next_obs, a_next.detach())
    v_next = soft_value(q_next, lp_next.detach(), alpha).min(0).values
    y = value_target(config, batch, t, v_next, owner=owner)
    q = ensemble_q(nets.qvalue, params["qvalue"], obs, action)
    loss_q = distance_loss(q, y.expand_as(q), config.loss_function)
    loss_alpha = redq_temperature_loss(safe_log_alpha, lp_both.detach(), h)
    red = config.reduction

    def reduce(x):
        # The ensemble (and [current, next]) dims are averaged first, then the batch reduced,
        # so priority weights [*B] apply per sample; unweighted this is TorchRL's plain mean.
        if weights is None:
            return reduce_loss(x, red)
        return reduce_loss(x.mean(0), red, weights)

    return {
        "loss_actor": reduce(loss_actor),
        "loss_qvalue": reduce(loss_q),
        "loss_alpha": reduce(loss_alpha),
        "alpha": alpha,
        "entropy": -lp_both.detach().mean(),
        "state_action_value_actor": q_pi.detach(),
        "action_log_prob_actor": lp_pi.detach(),
        "next.state_value": v_next.detach(),
        "target_value": y,
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
) -> torch.Tensor:
    """As :func:`funcrl.sac.act`: a ``TanhNormal`` draw or its deterministic action."""
    owner = "redq.act"
    check_mode(owner, mode)
    require(params, ["actor", "action_bounds"], owner)
    low, high = bounds(params, owner)
    obs = check_observation(owner, observation, param_dtype(params, "actor"))
    nets = resolve(nets, obs.shape[-1], low.shape[-1])
    dist = tanh_normal(nets.actor(tree.detach(params["actor"]), obs), low, high, nets)
    return act_stochastic(dist, mode, key)


def trainer(optimizer: Any, *, config: Config = Config(), nets: Nets = Nets(), tau: float = 0.005):
    """:func:`funcrl.training.update` for REDQ: ``actor``, ``qvalue`` and ``log_alpha`` every
    step, Polyak ``target_qvalue`` with ``tau``. ``optimizer``: one transform or a dict per key."""
    from funcrl.training import update

    return update(
        partial(loss, config=config, nets=nets),
        optimizer,
        trainable=("actor", "qvalue", "log_alpha"),
        targets={"target_qvalue": "qvalue"} if config.delay_qvalue else None,
        tau=tau,
    )


# -- TorchRL interop -------------------------------------------------------------------------------


def from_torchrl(loss_module: Any) -> tuple[Config, Nets, Params]:
    """``(config, nets, params)`` equal to a TorchRL ``REDQLoss`` (hyperparameters, value
    estimator, nets, online and target weights, ``log_alpha``, the ``TanhNormal``'s bounds); the
    actor in TorchRL's SAC layout (see :func:`funcrl.sac.from_torchrl`). The losses are equal under
    the same seed once the subset draw is TorchRL's (see the module docstring)."""
    from funcrl.objectives.actor_critic import (
        critic_from_torchrl,
        from_torchrl_tanh_normal_actor,
        torchrl_action_dim,
        torchrl_estimator,
    )

    m = loss_module
    if m.gSDE:
        raise TypeError("redq.from_torchrl: gSDE has no funcrl equivalent")
    actor_net, actor_params, info = from_torchrl_tanh_normal_actor(m)
    qnet, qparams = critic_from_torchrl(m.qvalue_network, m.qvalue_network_params)
    act_dim = torchrl_action_dim(info["low"], actor_net, "redq.from_torchrl")
    config = Config(
        num_qvalue_nets=int(m.num_qvalue_nets),
        sub_sample_len=int(m.sub_sample_len),
        loss_function=m.loss_function,
        alpha_init=float(m.alpha_init),
        min_alpha=math.exp(float(m.min_log_alpha)),
        max_alpha=math.exp(float(m.max_log_alpha)),
        fixed_alpha=bool(m.fixed_alpha),
        target_entropy=float(m.target_entropy),
        delay_qvalue=bool(m.delay_qvalue),
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
    box = {"low": info["low"], "high": info["high"]}
    params: Params = {
        "actor": actor_params,
        "qvalue": qparams,
        "log_alpha": m.log_alpha.detach().clone(),
        "action_bounds": {
            k: expand_bound(v, act_dim, dtype=m.log_alpha.dtype) for k, v in box.items()
        },
    }
    if config.delay_qvalue:
        params["target_qvalue"] = critic_from_torchrl(
            m.qvalue_network, m.target_qvalue_network_params
        )[1]
    return config, nets, params


def to_torchrl(config: Config, nets: Nets, params: Params, observation_dim: int | None = None):
    """A TorchRL ``REDQLoss`` equal to ``loss(params, ., config=config, nets=nets)`` (weights,
    target, ``log_alpha``, bounds, value estimator). ``observation_dim`` sizes default nets."""
    from torchrl.data import Bounded
    from torchrl.objectives import REDQLoss

    from funcrl.objectives.actor_critic import (
        make_torchrl_estimator,
        torchrl_qvalue,
        torchrl_tanh_normal_actor,
        write_torchrl,
    )

    low, high = bounds(params, "redq.to_torchrl")
    if observation_dim is None:
        observation_dim = in_features(params["actor"], "redq.to_torchrl", "actor")
    nets = resolve(nets, observation_dim, low.shape[-1])
    kw = {} if config.target_entropy == "auto" else {"target_entropy": config.target_entropy}
    m = REDQLoss(
        torchrl_tanh_normal_actor(nets.actor, params["actor"], low, high, nets),
        torchrl_qvalue(nets.qvalue, tree.map(lambda x: x[0], params["qvalue"])),
        num_qvalue_nets=config.num_qvalue_nets,
        sub_sample_len=config.sub_sample_len,
        loss_function=config.loss_function,
        alpha_init=config.alpha_init,
        min_alpha=config.min_alpha,
        max_alpha=config.max_alpha,
        action_spec=Bounded(low, high, tuple(low.shape), dtype=low.dtype),
        fixed_alpha=config.fixed_alpha,
        delay_qvalue=config.delay_qvalue,
        reduction=config.reduction,
        **kw,
    )
    make_torchrl_estimator(m, config)
    qmod = m.qvalue_network
    write_torchrl(m.qvalue_network_params, qmod, qmod.module, params["qvalue"])
    if config.delay_qvalue:
        write_torchrl(m.target_qvalue_network_params, qmod, qmod.module, params["target_qvalue"])
    with torch.no_grad():
        m.log_alpha.copy_(params["log_alpha"])
    return m
