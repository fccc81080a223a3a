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

Sampling uses the global torch RNG, in TorchRL's order: the subset first, then one draw for the
stacked current and next states (``[2, *B, a]``). The subset is ``argsort(rand(N))[:K]``
(:func:`sample_subset`, which vmaps and compiles) where TorchRL uses ``randperm``: the subsets have
the same (uniform) law but not the same draws; the tests patch :func:`sample_subset` to compare
draw for draw.

Intentional differences: the subset draw above; no ``gSDE``; ``separate_losses`` does not exist;
the dict also holds ``td_error``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from funcrl import tree
from funcrl.distributions import TanhNormal
from funcrl.nn import make_generator
from funcrl.objectives import sac
from funcrl.objectives.actor_critic import (
    action_bounds,
    auto_entropy,
    check_alpha,
    check_common,
    clamp_log_alpha,
    ensemble_q,
    init_ensemble,
)
from funcrl.objectives.common import (
    distance_loss,
    get,
    get_flag,
    init_net,
    mlp,
    require,
    spec_size,
    td0_target,
)
from funcrl.objectives.sac import policy, reduce, soft_value
from funcrl.record import Record

__all__ = ["Config", "Nets", "init", "loss", "sample_subset", "redq_temperature_loss"]

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

    def __post_init__(self) -> None:
        check_common("redq.Config", self)
        check_alpha("redq.Config", self.alpha_init, self.min_alpha, self.max_alpha)
        if self.sub_sample_len < 1:
            raise ValueError(f"redq.Config: sub_sample_len must be >= 1, got {self.sub_sample_len}")

    @property
    def subset_size(self) -> int:
        return max(1, min(self.sub_sample_len, self.num_qvalue_nets - 1))


@dataclasses.dataclass(frozen=True)
class Nets(sac.Nets):
    """:class:`funcrl.sac.Nets`: the same actor and Q apply functions."""


def sample_subset(n: int, k: int, device=None) -> torch.Tensor:
    """``k`` distinct indices of ``range(n)``, uniformly at random: ``[k]`` int64. Samples."""
    return torch.rand(n, device=device).argsort()[:k]


def redq_temperature_loss(
    log_alpha: torch.Tensor, log_prob: torch.Tensor, target_entropy: float
) -> torch.Tensor:
    """``-exp(log_alpha) (log pi + H)`` per sample; ``log_prob`` must already be detached."""
    return -log_alpha.exp() * (log_prob + target_entropy)


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
    """``actor``, ``qvalue`` (``N`` stacked members), ``target_qvalue`` (a copy, with
    ``delay_qvalue``), ``log_alpha`` and ``action_bounds``. Never touches the global RNG."""
    obs_dim = spec_size(observation_spec, "redq.init", "observation_spec")
    act_dim = spec_size(action_spec, "redq.init", "action_spec")
    gen = make_generator(seed)
    kw = {"device": device, "dtype": dtype}
    cells = {"num_cells": nets.num_cells, "owner": "redq.init", **kw}
    params: Params = {
        "actor": init_net(nets.actor, (mlp,), in_features=obs_dim, out_features=2 * act_dim, seed=gen, **cells),
        "qvalue": init_ensemble(
            nets.qvalue, config.num_qvalue_nets, gen, in_features=obs_dim + act_dim, out_features=1, **cells
        ),
        "log_alpha": torch.tensor(math.log(config.alpha_init), **kw),
        "action_bounds": action_bounds(action_spec, act_dim, **kw),
    }  # fmt: skip
    if config.delay_qvalue:
        params["target_qvalue"] = tree.clone(params["qvalue"])
    return params


def loss(
    params: Params, batch: Record, *, config: Config = Config(), nets: Nets = Nets()
) -> dict[str, torch.Tensor]:
    """REDQ's losses. Samples (global torch RNG): the target subset, then the actions.

    Returns:
        ``loss_actor``, ``loss_qvalue``, ``loss_alpha``, ``alpha``, ``entropy``, and TorchRL's
        detached extras ``state_action_value_actor [N, *B]``, ``action_log_prob_actor [*B]``,
        ``next.state_value [*B]``, ``target_value [*B]``; plus ``td_error [*B]``.
    """
    owner = "redq.loss"
    require(params, ["actor", "qvalue", "log_alpha"], owner)
    if config.delay_qvalue:
        require(params, ["target_qvalue"], owner)
    obs = get(batch, "observation", owner=owner)
    action = get(batch, "action", owner=owner)
    next_obs = get(batch, ("next", "observation"), owner=owner, shape=(obs.shape[-1],))
    reward = get_flag(batch, ("next", "reward"), owner=owner, like=action[..., :1])
    terminated = get_flag(batch, ("next", "terminated"), owner=owner, like=reward).bool()
    r, term = reward.squeeze(-1), terminated.squeeze(-1)
    h = auto_entropy(config.target_entropy, action, batch.batch_ndim)
    log_alpha = params["log_alpha"].detach() if config.fixed_alpha else params["log_alpha"]
    safe_log_alpha = clamp_log_alpha(log_alpha, config.min_alpha, config.max_alpha)
    alpha = safe_log_alpha.detach().exp()

    # The random target subset, then one draw for [current, next] (TorchRL's order).
    idx = sample_subset(config.num_qvalue_nets, config.subset_size, device=obs.device)
    d_now = policy(params, obs, nets=nets)
    d_next = policy(params, next_obs, nets=nets, actor_params=tree.detach(params["actor"]))
    loc = torch.stack([d_now.loc, d_next.loc])
    scale = torch.stack([d_now.scale, d_next.scale])
    both = TanhNormal(loc, scale, low=d_now.low, high=d_now.high)  # loc already squashed
    a_both, lp_both = both.rsample_and_log_prob()
    (a_pi, a_next), (lp_pi, lp_next) = a_both.unbind(0), lp_both.unbind(0)

    q_pi = ensemble_q(nets.qvalue, tree.detach(params["qvalue"]), obs, a_pi)
    loss_actor = -soft_value(q_pi, lp_pi, alpha)
    tq = params["target_qvalue"] if config.delay_qvalue else params["qvalue"]
    tq_sub = tree.map(lambda x: x.detach()[idx], tq)
    q_next = ensemble_q(nets.qvalue, tq_sub, next_obs, a_next.detach())
    v_next = soft_value(q_next, lp_next.detach(), alpha).min(0).values
    y = td0_target(r, term, v_next, config.gamma).detach()
    q = ensemble_q(nets.qvalue, params["qvalue"], obs, action)
    loss_q = distance_loss(q, y.expand_as(q), config.loss_function)
    loss_alpha = redq_temperature_loss(safe_log_alpha, lp_both.detach(), h)
    red = config.reduction
    return {
        "loss_actor": reduce(loss_actor, red),
        "loss_qvalue": reduce(loss_q, red),
        "loss_alpha": reduce(loss_alpha, red),
        "alpha": alpha,
        "entropy": -lp_both.detach().mean(),
        "state_action_value_actor": q_pi.detach(),
        "action_log_prob_actor": lp_pi.detach(),
        "next.state_value": v_next.detach(),
        "target_value": y,
        "td_error": (q - y).pow(2).detach().max(0).values,
    }
