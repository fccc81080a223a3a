"""Online Decision Transformer (Zheng et al. 2022, arXiv:2202.05607): TorchRL 0.14's
``OnlineDTLoss``.

    nets = online_dt.Nets(transformer_config=funcrl.nn.DTConfig(n_embd=128, n_layer=3, n_head=1))
    params = online_dt.init(0, obs_spec, act_spec, nets=nets)  # {"actor", "log_alpha", "action_bounds"}
    losses = online_dt.loss(params, batch, nets=nets, key=key)
    # loss_log_likelihood, loss_entropy, loss_alpha, alpha, entropy

The actor (:class:`funcrl.nn.OnlineDTActor`) gives ``(mu, sigma)`` of a ``TanhNormal`` policy at
every step of a context; the loss is the negative log-likelihood of the data's actions with a
learned entropy temperature ``alpha = exp(log_alpha)``::

    H_t       = -mean_k log pi(a~_k | context_t),  a~_k ~ pi (k < samples_mc_entropy, reparameterised)
    L_ll      = -log pi(a_t | context_t)
    L_H       = -alpha H_t                          (alpha gradient-stopped)
    L_alpha   = alpha (H_t - H_target)              (H_t gradient-stopped; TorchRL's form: alpha,
                                                     not log alpha)

Batches as :mod:`funcrl.objectives.dt`: ``observation``, ``action``, ``return_to_go`` over
``[*B, T]``. Draws: the entropy's samples (``key``, else the global RNG in TorchRL's order).

Intentional differences from TorchRL: the transformer's dropout is off unless
``Config(dropout=True)``; ``log_alpha``'s bounds are a straight-through clamp (:func:`project`
after a step, as :mod:`funcrl.sac`); ``batch["priority_weight"]`` (``[*B, T]``) weights the
reductions; ``td_error`` (``[*B, T]``) is the mean absolute error of the policy's mode.
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial
from typing import Any, ClassVar

import torch

from funcrl import tree
from funcrl.distributions import TanhNormal
from funcrl.nn import OnlineDTActor, make_generator
from funcrl.objectives.actor_critic import (
    act_stochastic,
    auto_entropy,
    bounds,
    check_alpha,
    check_nets,
    param_dtype,
    project,
    temperature,
)
from funcrl.objectives.actor_critic import action_bounds as spec_bounds
from funcrl.objectives.common import (
    check_batch,
    check_mode,
    check_observation,
    check_reduction,
    priority_weights,
    reduce_loss,
    require,
    spec_size,
)
from funcrl.objectives.offline import check_context, check_priority_flag, read_sequences
from funcrl.record import Record

__all__ = ["Config", "Nets", "init", "loss", "act", "trainer", "policy", "project"]

Params = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Config:
    """``OnlineDTLoss``'s arguments, TorchRL's names and defaults.

    Args:
        alpha_init, min_alpha, max_alpha, fixed_alpha: the temperature (as
            :class:`funcrl.sac.Config`).
        target_entropy: ``H_target``; ``"auto"`` is ``-a``.
        samples_mc_entropy: samples of the Monte-Carlo entropy estimate.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (``[*B, T]``).
        use_prioritized_weights: weight the reductions by ``batch["priority_weight"]``.
        dropout: run the transformer's dropout in the loss (global RNG).
    """

    alpha_init: float = 1.0
    min_alpha: float | None = None
    max_alpha: float | None = None
    fixed_alpha: bool = False
    target_entropy: float | str = "auto"
    samples_mc_entropy: int = 1
    reduction: str = "mean"
    use_prioritized_weights: bool | str = "auto"
    dropout: bool = False

    def __post_init__(self) -> None:
        owner = "online_dt.Config"
        check_alpha(owner, self.alpha_init, self.min_alpha, self.max_alpha)
        check_reduction(self.reduction, owner)
        check_priority_flag(owner, self.use_prioritized_weights)
        if not (self.target_entropy == "auto" or isinstance(self.target_entropy, (int, float))):
            raise ValueError(
                f"{owner}: target_entropy must be 'auto' or a number, got {self.target_entropy!r}"
            )
        n = self.samples_mc_entropy
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"{owner}: samples_mc_entropy must be an int >= 1, got {n!r}")


@dataclasses.dataclass(frozen=True)
class Nets:
    """``actor``: ``(params, observation, action, return_to_go) -> (loc, scale)`` each
    ``[*B, T, a]``; ``None`` for :class:`funcrl.nn.OnlineDTActor` with ``transformer_config``
    (``None``: TorchRL's default). ``tanh_loc``: the ``TanhNormal``'s."""

    ROLES: ClassVar[dict[str, str]] = {"actor": "online_dt_actor"}

    actor: Any = None
    transformer_config: Any = None
    tanh_loc: bool = False


def _resolve(nets: Nets, obs_dim: int, act_dim: int) -> Nets:
    if nets.actor is not None:
        return nets
    cfg = nets.transformer_config or OnlineDTActor.default_config()
    return dataclasses.replace(nets, actor=OnlineDTActor(obs_dim, act_dim, cfg))


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
    """Fresh params: ``actor``, ``log_alpha`` (``log alpha_init``) and ``action_bounds``."""
    owner = "online_dt.init"
    check_nets(nets, owner)
    obs_dim = spec_size(observation_spec, owner, "observation_spec")
    act_dim = spec_size(action_spec, owner, "action_spec")
    box = spec_bounds(action_spec, act_dim, device=device, dtype=dtype, owner=owner)
    nets = _resolve(nets, obs_dim, act_dim)
    return {
        "actor": nets.actor.init(make_generator(seed), device=device, dtype=dtype),
        "log_alpha": torch.tensor(math.log(config.alpha_init), device=device, dtype=dtype),
        "action_bounds": box,
    }


def policy(
    params: Params,
    observation: torch.Tensor,
    action: torch.Tensor,
    return_to_go: torch.Tensor,
    *,
    nets: Nets = Nets(),
    train: bool = False,
) -> TanhNormal:
    """The policy ``TanhNormal`` ``[*B, T]`` over a context, on ``params["action_bounds"]``."""
    low, high = bounds(params, "online_dt.policy")
    nets = _resolve(nets, observation.shape[-1], low.shape[-1])
    kw = {"train": True} if train else {}
    loc, scale = nets.actor(params["actor"], observation, action, return_to_go, **kw)
    return TanhNormal(loc, scale, low=low, high=high, tanh_loc=nets.tanh_loc)


def loss(
    params: Params,
    batch: Record,
    *,
    config: Config = Config(),
    nets: Nets = Nets(),
    key: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """``loss_log_likelihood``, ``loss_entropy``, ``loss_alpha`` (reduced), ``alpha``,
    ``entropy`` (0-d, detached) and ``td_error`` ``[*B, T]`` on trajectory segments."""
    owner = "online_dt.loss"
    check_batch(batch, owner)
    require(params, ["actor", "log_alpha", "action_bounds"], owner)
    low, _ = bounds(params, owner)
    obs, action, rtg = read_sequences(
        batch, owner=owner, act_dim=low.shape[-1], dtype=param_dtype(params, "actor")
    )
    weights = priority_weights(batch, config, like=action[..., 0], owner=owner)
    red = config.reduction
    log_alpha, alpha = temperature(params["log_alpha"], config)
    h_target = auto_entropy(config.target_entropy, action, batch.batch_ndim)
    dist = policy(params, obs, action, rtg, nets=nets, train=config.dropout)
    log_likelihood = dist.log_prob(action.detach())
    _, lp = dist.rsample_and_log_prob((config.samples_mc_entropy,), key=key)
    entropy = -lp.mean(0)
    loss_alpha = log_alpha.exp() * (entropy - h_target).detach()
    return {
        "loss_log_likelihood": reduce_loss(-log_likelihood, red, weights),
        "loss_entropy": reduce_loss(-alpha * entropy, red, weights),
        "loss_alpha": reduce_loss(loss_alpha, red, weights),
        "alpha": alpha,
        "entropy": entropy.detach().mean(),
        "td_error": (dist.deterministic_sample.detach() - action).abs().mean(-1),
    }


def act(
    params: Params,
    observation: torch.Tensor,
    *,
    config: Config = Config(),
    nets: Nets = Nets(),
    mode: str = "random",
    key: torch.Tensor | None = None,
    action: torch.Tensor | None = None,
    return_to_go: torch.Tensor | None = None,
) -> torch.Tensor:
    """The actions ``[*B, T, a]`` over a context (as :func:`funcrl.dt.act`): draws of the
    ``TanhNormal`` (``"random"``) or its deterministic action. Detached."""
    owner = "online_dt.act"
    check_mode(owner, mode)
    require(params, ["actor", "action_bounds"], owner)
    low, _ = bounds(params, owner)
    obs = check_observation(owner, observation, param_dtype(params, "actor"))
    check_context(owner, obs, action, return_to_go, low.shape[-1])
    dist = policy(tree.detach(params), obs, action, return_to_go, nets=nets)
    return act_stochastic(dist, mode, key)


def trainer(optimizer: Any, *, config: Config = Config(), nets: Nets = Nets()):
    """:func:`funcrl.training.update` for the Online DT: ``actor`` and ``log_alpha`` every step,
    ``log_alpha`` projected into its bounds."""
    from funcrl.training import update

    return update(
        partial(loss, config=config, nets=nets),
        optimizer,
        trainable=("actor", "log_alpha"),
        project=partial(project, config=config),
    )
