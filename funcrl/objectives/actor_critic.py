"""Actor-critic plumbing shared by SAC, REDQ, CrossQ, TD3 and DDPG (and discrete SAC's temperature).

* Config checks (``check_config``): gamma, reduction, loss function, ``use_prioritized_weights``
  and the value estimator (``"td0"``, ``"td1"``, ``"td_lambda"`` with ``lmbda``).
* Default nets (``resolve``): a ``Nets`` field left at ``None`` is TorchRL's default architecture, a
  ReLU :class:`funcrl.nn.MLP` with ``num_cells`` hidden units, built from the feature sizes (the
  specs at ``init``, the batch's or observation's last dims in ``loss``/``act``; shapes are static,
  so this is free under ``torch.compile``). Each ``Nets`` class says what its fields are in
  ``ROLES``: ``"gaussian_actor"`` (``o -> 2 a``, split into a ``TanhNormal``), ``"tanh_actor"``
  (``o -> a`` through ``tanh``, a :class:`funcrl.nn.TanhBounded` on ``[-1, 1]``), ``"qvalue"``
  (``(o, a) -> 1``, a :class:`funcrl.nn.Concat` of an MLP) or ``"value"`` (``o -> 1``).
* The temperature ``alpha = exp(log_alpha)`` with TorchRL's bounds and straight-through clamp, and
  SAC's equations shared by the family (soft value, actor objective, temperature loss).
* The action bounds ``params["action_bounds"] = {"low", "high"}`` (``[*lead, a]``) and the
  ``TanhNormal`` policy on them.
* Draws: with a :mod:`funcrl.random` key every draw is explicit (split once per draw site, in a
  fixed order); with ``key=None`` the global torch RNG is used in TorchRL's order.
* Value targets: TD(0) (:func:`funcrl.values.td0_return_estimate`), TD(1) and TD(lambda) (:mod:`funcrl.values`) over a
  batch whose last batch dim is time (TorchRL's trajectory layout ``[*B, T]``).
* Critic ensembles (``N`` members stacked on a leading dim, applied with one ``vmap``).
* TorchRL interop: reading a loss module's weights (online, target, ensembles) into funcrl nets
  and params, and building TorchRL modules from funcrl nets (each objective's ``from_torchrl`` /
  ``to_torchrl``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from funcrl import tree, values
from funcrl.distributions._utils import standard_normal
from funcrl.nn import MLP, Concat, TanhBounded
from funcrl.nn.ensemble import vmap_members
from funcrl.objectives.common import (
    REDUCTIONS,
    VALUE_ESTIMATORS,
    check_loss_function,
    check_mode,
    check_observation,
    get,
    get_flag,
    in_features,
    n_step_discount,
    require,
)
from funcrl.record import Record

Params = dict[str, Any]

__all__ = [
    "check_config",
    "check_alpha",
    "check_common",
    "log_alpha_bounds",
    "clamp_log_alpha",
    "temperature",
    "auto_entropy",
    "expand_bound",
    "action_bounds",
    "bounds",
    "resolve",
    "init_nets",
    "param_dtype",
    "tanh_normal",
    "soft_value",
    "actor_objective",
    "temperature_loss",
    "project",
    "act_stochastic",
    "act_deterministic",
    "act_bounded_actor",
    "read_transitions",
    "value_target",
    "ensemble",
    "ensemble_q",
    "init_ensemble",
    "Transitions",
    "check_nets",
    "check_tanh_actor_bounds",
    # TorchRL interop
    "read_torchrl",
    "write_torchrl",
    "torchrl_estimator",
    "make_torchrl_estimator",
    "torch_module",
    "torchrl_action_dim",
    "scale_mapping_name",
    "torchrl_qvalue",
    "torchrl_tanh_normal_actor",
    "from_torchrl_tanh_normal_actor",
    "critic_from_torchrl",
    "deterministic_actor_from_torchrl",
    "deterministic_actor_to_torchrl",
]

_PRIORITY = ("auto", True, False)


def check_config(owner: str, cfg: Any) -> None:
    """Checks every actor-critic config shares: gamma, reduction, loss function, priorities and
    the value estimator (fields that a config lacks are skipped)."""
    if hasattr(cfg, "loss_function"):
        check_loss_function(cfg.loss_function, owner)
    if cfg.reduction not in REDUCTIONS:
        raise ValueError(f"{owner}: reduction must be one of {REDUCTIONS}, got {cfg.reduction!r}")
    if isinstance(cfg.gamma, bool) or not 0.0 <= float(cfg.gamma) <= 1.0:
        raise ValueError(f"{owner}: gamma must be in [0, 1], got {cfg.gamma}")
    priority = getattr(cfg, "use_prioritized_weights", "auto")
    if not (priority is True or priority is False or priority == "auto"):
        raise ValueError(
            f"{owner}: use_prioritized_weights must be one of {_PRIORITY}, got {priority!r}"
        )
    estimator = getattr(cfg, "value_estimator", "td0")
    if estimator not in VALUE_ESTIMATORS:
        raise ValueError(
            f"{owner}: value_estimator must be one of {VALUE_ESTIMATORS}, got {estimator!r}"
        )
    lmbda = getattr(cfg, "lmbda", 0.0)
    if isinstance(lmbda, bool) or not 0.0 <= float(lmbda) <= 1.0:
        raise ValueError(f"{owner}: lmbda must be in [0, 1], got {lmbda}")


def check_alpha(owner: str, alpha_init: float, min_alpha, max_alpha) -> None:
    """Validates TorchRL's temperature arguments, with clear errors."""
    if not alpha_init > 0:
        raise ValueError(f"{owner}: alpha_init must be > 0, got {alpha_init}")
    if min_alpha is not None and min_alpha < 0:
        raise ValueError(f"{owner}: min_alpha must be None or >= 0, got {min_alpha}")
    if max_alpha is not None and max_alpha <= 0:
        raise ValueError(f"{owner}: max_alpha must be None or > 0, got {max_alpha}")
    if min_alpha and max_alpha and min_alpha > max_alpha:
        raise ValueError(f"{owner}: min_alpha={min_alpha} > max_alpha={max_alpha}")


def check_common(owner: str, cfg: Any) -> None:
    """Checks shared by the SAC family's configs (:func:`check_config` plus the ensemble size and
    the target entropy)."""
    if cfg.num_qvalue_nets < 1:
        raise ValueError(f"{owner}: num_qvalue_nets must be >= 1, got {cfg.num_qvalue_nets}")
    check_config(owner, cfg)
    if not (cfg.target_entropy == "auto" or isinstance(cfg.target_entropy, (int, float))):
        raise ValueError(
            f"{owner}: target_entropy must be 'auto' or a number, got {cfg.target_entropy!r}"
        )


def log_alpha_bounds(min_alpha: float | None, max_alpha: float | None):
    """TorchRL's bounds on ``log_alpha``: ``None``/``0`` means no bound on that side."""
    lo = math.log(min_alpha) if min_alpha else None
    hi = math.log(max_alpha) if max_alpha else None
    return lo, hi


def clamp_log_alpha(
    log_alpha: torch.Tensor, min_alpha: float | None, max_alpha: float | None
) -> torch.Tensor:
    """``log_alpha`` clamped to ``[log min_alpha, log max_alpha]`` with a straight-through gradient.

    The value is the clamped one and the gradient is the identity: exactly what TorchRL's in-place
    ``log_alpha.data.clamp_`` gives its loss.
    """
    lo, hi = log_alpha_bounds(min_alpha, max_alpha)
    if lo is None and hi is None:
        return log_alpha
    clamped = torch.clamp(log_alpha.detach(), lo, hi)
    return log_alpha + (clamped - log_alpha.detach())


def temperature(log_alpha: torch.Tensor, cfg: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log_alpha for L_alpha, alpha)``: clamped; ``alpha`` detached, ``log_alpha`` frozen if
    ``fixed_alpha``."""
    if cfg.fixed_alpha:
        log_alpha = log_alpha.detach()
    log_alpha = clamp_log_alpha(log_alpha, cfg.min_alpha, cfg.max_alpha)
    return log_alpha, log_alpha.detach().exp()


def auto_entropy(target_entropy: float | str, action: torch.Tensor, batch_ndim: int) -> float:
    """``-prod(action feature shape)`` for ``"auto"`` (TorchRL), else the given number.

    ``batch_ndim`` must be the batch's (``check_batch`` guarantees at least one), so a ``[B, a]``
    action gives ``-a``, never ``-B a``.
    """
    if target_entropy == "auto":
        return -float(math.prod(action.shape[batch_ndim:]))
    return float(target_entropy)


# -- action bounds ---------------------------------------------------------------------------------


def expand_bound(bound: Any, act_dim: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """A spec's bound as a tensor ``[*lead, a]``: a scalar becomes ``[a]``; leading dims (the
    agents of a multi-agent spec ``[n_agents, a]``) are kept."""
    bound = torch.as_tensor(bound, dtype=dtype).to(device)
    lead = bound.shape[:-1] if bound.dim() else ()
    return bound.expand(*lead, act_dim).clone()


def action_bounds(
    action_spec: Any, act_dim: int, device=None, dtype=torch.float32, *, owner: str = "init"
) -> Params:
    """``{"low", "high"}`` tensors ``[*lead, a]`` from the action spec (host-side, at init).

    A bounded spec gives its ``low``/``high`` (a multi-agent spec keeps its ``[n_agents, a]``). An
    ``int`` spec is the box ``[-1, 1]^a`` (TorchRL's ``TanhNormal`` default). A spec without
    finite bounds (TorchRL's ``Unbounded``, an infinite gymnasium ``Box``) raises: every
    actor-critic here squashes its actions into the box (``TanhNormal``, ``tanh``, clipped noise),
    and an infinite box has no squashing; TorchRL would silently use ``[-1, 1]``.

    Raises:
        ValueError: naming ``owner`` when the spec is unbounded or a bound is not finite.
    """
    if isinstance(action_spec, int):
        low, high = -torch.ones(act_dim), torch.ones(act_dim)
    else:
        low, high = getattr(action_spec, "low", None), getattr(action_spec, "high", None)
        if low is None or high is None:
            raise ValueError(
                f"{owner}: action_spec {type(action_spec).__name__} has no low/high bounds; the "
                "actor squashes actions into a box: pass a bounded spec (or an int for [-1, 1])"
            )
    low = expand_bound(low, act_dim, device, dtype)
    high = expand_bound(high, act_dim, device, dtype)
    if not (bool(torch.isfinite(low).all()) and bool(torch.isfinite(high).all())):
        raise ValueError(
            f"{owner}: action_spec bounds must be finite, got low={low.tolist()}, "
            f"high={high.tolist()}; the actor squashes actions into [low, high]"
        )
    if not bool((low < high).all()):
        raise ValueError(
            f"{owner}: action_spec needs low < high, got low={low.tolist()}, high={high.tolist()}"
        )
    return {"low": low, "high": high}


def bounds(params: Params, owner: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(low, high)`` from ``params["action_bounds"]``, detached (never trained).

    Raises:
        KeyError: naming ``owner`` when ``params`` has no ``action_bounds`` (no silent default).
    """
    b = params.get("action_bounds") if isinstance(params, Mapping) else None
    if b is None or "low" not in b or "high" not in b:
        raise KeyError(
            f"{owner}: params lack 'action_bounds' ({{'low': [a], 'high': [a]}}); init puts them "
            "there from the action spec"
        )
    return b["low"].detach(), b["high"].detach()


# -- default nets ----------------------------------------------------------------------------------


def _default(role: str, obs_dim: int, act_dim: int, num_cells: tuple[int, ...]) -> Any:
    cells = {"num_cells": tuple(num_cells), "activation": "relu"}
    if role == "gaussian_actor":
        return MLP(obs_dim, 2 * act_dim, **cells)
    if role == "tanh_actor":
        return TanhBounded(MLP(obs_dim, act_dim, **cells), -1.0, 1.0)
    if role == "qvalue":
        return Concat(MLP(obs_dim + act_dim, 1, **cells))
    if role == "value":
        return MLP(obs_dim, 1, **cells)
    raise ValueError(f"resolve: unknown role {role!r}")


def resolve(nets: Any, obs_dim: int, act_dim: int) -> Any:
    """``nets`` with every field left at ``None`` replaced by its default net for these sizes.

    ``type(nets).ROLES`` maps field names to roles (see the module docstring); the default is a
    ReLU MLP with ``nets.num_cells``. Pure Python on static sizes: free under compile and vmap.
    """
    fill = {
        name: _default(role, obs_dim, act_dim, nets.num_cells)
        for name, role in type(nets).ROLES.items()
        if getattr(nets, name) is None
    }
    return dataclasses.replace(nets, **fill) if fill else nets


def check_nets(nets: Any, owner: str) -> None:
    """Every ``ROLES`` field is ``None`` or a funcrl net (``init`` and ``__call__``)."""
    for name in type(nets).ROLES:
        net = getattr(nets, name)
        if net is not None and not (callable(getattr(net, "init", None)) and callable(net)):
            raise TypeError(
                f"{owner}: Nets.{name} must be a funcrl net (with init and __call__) or None for "
                f"the default MLP, got {net!r}; wrap a torch module in funcrl.nn.TorchModule"
            )


def init_nets(nets: Any, gen: torch.Generator, device, dtype) -> Params:
    """``{field: net.init(gen)}`` for every ``ROLES`` field of resolved ``nets``, in field order."""
    return {
        name: getattr(nets, name).init(gen, device=device, dtype=dtype) for name in type(nets).ROLES
    }


def param_dtype(params: Params, name: str) -> torch.dtype:
    """The float dtype of ``params[name]`` (the dtype every float batch entry must have)."""
    return tree.leaves(params[name])[0].dtype


# -- draws -----------------------------------------------------------------------------------------


# -- the SAC family's policy and equations ---------------------------------------------------------


def tanh_normal(actor_out: torch.Tensor, low: torch.Tensor, high: torch.Tensor, nets: Any):
    """The ``TanhNormal`` on ``[low, high]`` from an actor's ``[*B, 2 a]`` output, split by
    ``NormalParamExtractor(nets.scale_mapping, nets.scale_lb)`` (TorchRL's SAC actor)."""
    from funcrl.distributions import NormalParamExtractor, TanhNormal

    loc, scale = NormalParamExtractor(nets.scale_mapping, nets.scale_lb)(actor_out)
    return TanhNormal(loc, scale, low=low, high=high, tanh_loc=nets.tanh_loc)


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


def project(params: Params, *, config: Any) -> Params:
    """Clamps ``params["log_alpha"]`` into ``[log min_alpha, log max_alpha]`` (TorchRL's in-place
    clamp, as a pure map to apply after an optimizer step)."""
    lo, hi = log_alpha_bounds(config.min_alpha, config.max_alpha)
    if lo is None and hi is None:
        return params
    return {**params, "log_alpha": torch.clamp(params["log_alpha"], lo, hi)}


# -- act -------------------------------------------------------------------------------------------


def act_stochastic(dist: Any, mode: str, key: torch.Tensor | None) -> torch.Tensor:
    """A ``TanhNormal``'s action: a draw (``"random"``) or ``tanh`` of its location mapped to the
    bounds (``"deterministic"``, TorchRL's ``InteractionType.DETERMINISTIC``)."""
    if mode == "deterministic":
        return dist.deterministic_sample.detach()
    return dist.rsample_and_log_prob(key=key)[0].detach()


def act_bounded_actor(
    owner: str,
    params: Params,
    observation: torch.Tensor,
    nets: Any,
    mode: str,
    key: torch.Tensor | None,
    noise_scale: float,
) -> torch.Tensor:
    """``act`` of a deterministic actor on ``params["action_bounds"]`` (DDPG, TD3, TD3+BC):
    ``mu(s)``, plus clipped Gaussian exploration noise in ``"random"`` mode. Detached."""
    check_mode(owner, mode)
    require(params, ["actor", "action_bounds"], owner)
    low, high = bounds(params, owner)
    obs = check_observation(owner, observation, param_dtype(params, "actor"))
    nets = resolve(nets, obs.shape[-1], low.shape[-1])
    action = nets.actor(tree.detach(params["actor"]), obs).detach()
    return act_deterministic(action, low, high, mode, key, noise_scale)


def act_deterministic(
    action: torch.Tensor,
    low: torch.Tensor,
    high: torch.Tensor,
    mode: str,
    key: torch.Tensor | None,
    noise_scale: float,
) -> torch.Tensor:
    """A deterministic actor's action; ``"random"`` adds Gaussian noise with standard deviation
    ``noise_scale * (high - low) / 2`` (0.1 of the half-range, the TD3 paper's ``0.1 max_action``)
    and clips to ``[low, high]``."""
    if mode == "deterministic":
        return action
    sigma = noise_scale * (high - low) / 2
    return torch.clamp(action + sigma * standard_normal(action.shape, action, key), low, high)


# -- batches and value targets ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Transitions:
    """The checked ``[*B, ...]`` entries of an actor-critic batch (TorchRL's keys)."""

    observation: torch.Tensor
    action: torch.Tensor
    next_observation: torch.Tensor
    reward: torch.Tensor  # [*B, 1] (or [*B, *lead, 1] for a multi-agent group view)
    terminated: torch.Tensor  # bool, like reward


def read_transitions(batch: Record, *, owner: str, act_dim: int, dtype: torch.dtype) -> Transitions:
    """Reads and checks a transition batch: every float entry has the params' ``dtype``, the
    action ends in ``act_dim`` (from ``params["action_bounds"]``), the next observation matches
    the observation, reward and terminated are ``[*action lead, 1]``."""
    obs = get(batch, "observation", owner=owner, shape=(None,), dtype=dtype)
    action = get(batch, "action", owner=owner, shape=(act_dim,), dtype=dtype)
    next_obs = get(batch, ("next", "observation"), owner=owner, shape=(obs.shape[-1],), dtype=dtype)
    if next_obs.shape != obs.shape:
        raise ValueError(
            f"{owner}: batch[('next', 'observation')] has shape {tuple(next_obs.shape)}, expected "
            f"{tuple(obs.shape)} (the observation's)"
        )
    reward = get_flag(batch, ("next", "reward"), owner=owner, like=action[..., :1])
    if reward.dtype != dtype:
        get(batch, ("next", "reward"), owner=owner, dtype=dtype)  # raises naming the key
    terminated = get_flag(batch, ("next", "terminated"), owner=owner, like=reward).bool()
    return Transitions(obs, action, next_obs, reward, terminated)


def value_target(
    cfg: Any, batch: Record, t: Transitions, next_value: torch.Tensor, *, owner: str
) -> torch.Tensor:
    """The detached critic target ``[*B]`` from ``next_value = V(s') [*B]`` (gradient-stopped).

    ``cfg.value_estimator``: ``"td0"`` is ``r + gamma (1 - terminated) V(s')`` (``gamma ** n``
    for n-step transitions with ``steps_to_next_obs``, as TorchRL); ``"td1"`` and
    ``"td_lambda"`` (``cfg.lmbda``) run TorchRL's recursions of :mod:`funcrl.values` over the last
    batch dim as time (a batch of trajectories ``[*B, T]``), resetting at ``("next", "done")``.
    """
    r, term = t.reward.squeeze(-1), t.terminated.squeeze(-1)
    next_value = next_value.detach()
    if cfg.value_estimator == "td0":
        gamma = n_step_discount(batch, cfg.gamma, r, owner=owner)
        return values.td0_return_estimate(gamma, next_value, r, term).detach()
    done = get_flag(batch, ("next", "done"), owner=owner, like=t.reward).bool()
    lmbda = 1.0 if cfg.value_estimator == "td1" else cfg.lmbda
    g = values.td_lambda_return_estimate(
        cfg.gamma,
        lmbda,
        next_value.unsqueeze(-1),
        t.reward,
        done,
        t.terminated,
        time_dim=batch.batch_ndim - 1 - t.reward.dim(),
    )
    return g.squeeze(-1).detach()


# -- critic ensembles ------------------------------------------------------------------------------


def ensemble(
    apply: Callable, params: Params, *inputs: torch.Tensor, in_dims: int | None = None
) -> torch.Tensor:
    """``apply`` for every member of stacked ``params`` (leading dim ``N``), inputs shared
    (``in_dims=None``, :class:`funcrl.nn.Ensemble`'s vmap mode) or split on their leading dim
    (``in_dims=0``). Returns ``[N, *B, ...]``."""
    return vmap_members(apply, params, *inputs, in_dims=in_dims)


def ensemble_q(apply: Callable, qparams: Params, obs: torch.Tensor, action: torch.Tensor):
    """``Q_i(s, a)`` for every member: ``[N, *B]``."""
    return ensemble(apply, qparams, obs, action).squeeze(-1)


def init_ensemble(
    net: Any, n: int, gen: torch.Generator, *, device=None, dtype=torch.float32
) -> Params:
    """``n`` independently initialised members of ``net`` stacked on a leading dim."""
    return tree.stack([net.init(gen, device=device, dtype=dtype) for _ in range(n)])


def check_tanh_actor_bounds(nets: Any, box: Params, owner: str) -> None:
    """The default deterministic actor, ``TanhBounded(MLP)`` on ``[-1, 1]``, only fits that box;
    say so at ``init`` (host-side) instead of training an actor that cannot reach the bounds."""
    if nets.actor is not None:
        return
    low, high = box["low"], box["high"]
    if not (bool((low == -1).all()) and bool((high == 1).all())):
        raise ValueError(
            f"{owner}: the default actor is tanh(MLP) with actions in [-1, 1], but the action spec "
            f"has low={low.tolist()}, high={high.tolist()}; pass Nets(actor=funcrl.nn.TanhBounded("
            "funcrl.nn.MLP(obs_dim, act_dim, num_cells=...), low, high)) or rescale the actions"
        )


# -- TorchRL interop -------------------------------------------------------------------------------
# A TorchRL loss module holds its weights as TensorDicts beside the modules (online, target, a
# leading [N] dim for ensembles). Reading: load one TensorDict into its module and convert the
# module (funcrl.nn.from_torchrl). Writing: build TorchRL modules from the funcrl nets and copy
# the params in (funcrl.nn.to_module), then copy targets into the loss's target TensorDicts.

_ESTIMATORS = {"TD0Estimator": "td0", "TD1Estimator": "td1", "TDLambdaEstimator": "td_lambda"}


def read_torchrl(module: Any, params_td: Any, inner: Any) -> tuple[Any, Any]:
    """``(funcrl net, params)`` of ``inner`` (a submodule of ``module``) with ``params_td`` (a
    loss module's TensorDict of ``module``'s weights) loaded; a leading ensemble dim is stacked."""
    from funcrl.nn import from_torchrl

    if params_td.batch_size:
        members = [read_torchrl(module, params_td[i], inner) for i in range(params_td.shape[0])]
        return members[0][0], tree.stack([p for _, p in members])
    with params_td.to_module(module):
        return from_torchrl(inner)


def write_torchrl(params_td: Any, module: Any, inner: Any, params: Any) -> None:
    """Copies funcrl ``params`` of ``inner`` into a loss module's TensorDict ``params_td`` of
    ``module`` (member by member when ``params_td`` has an ensemble dim)."""
    from funcrl.nn import to_module

    if params_td.batch_size:
        for i in range(params_td.shape[0]):
            write_torchrl(params_td[i], module, inner, tree.map(lambda x, i=i: x[i], params))
        return
    with params_td.to_module(module):
        to_module(params, inner)


def torchrl_estimator(loss_module: Any) -> dict[str, Any]:
    """``{"gamma", "value_estimator", "lmbda"}`` of a TorchRL loss's value estimator."""
    est = loss_module._value_estimator
    name = type(est).__name__
    if name not in _ESTIMATORS:
        raise TypeError(f"from_torchrl: value estimator {name} has no funcrl equivalent")
    out = {"gamma": float(est.gamma), "value_estimator": _ESTIMATORS[name]}
    if name == "TDLambdaEstimator":
        out["lmbda"] = float(est.lmbda)
    return out


def make_torchrl_estimator(loss_module: Any, cfg: Any) -> None:
    """``loss_module.make_value_estimator`` for ``cfg.value_estimator``, ``gamma``, ``lmbda``."""
    from torchrl.objectives import ValueEstimators

    kind = {"td0": ValueEstimators.TD0, "td1": ValueEstimators.TD1}.get(
        cfg.value_estimator, ValueEstimators.TDLambda
    )
    kw = {"lmbda": cfg.lmbda} if cfg.value_estimator == "td_lambda" else {}
    loss_module.make_value_estimator(kind, gamma=cfg.gamma, **kw)


def torch_module(net: Any, params: Any, owner: str) -> tuple[Any, Any]:
    """``(module, inner)``: a ``torch.nn.Module`` computing funcrl ``net`` with ``params`` copied
    in, and its submodule whose :func:`funcrl.nn.from_module` layout ``params`` is (to write
    targets or ensemble members later). ``net``: an :class:`MLP` without norms, a
    :class:`funcrl.nn.TorchModule`, a :class:`Concat` of one, or ``TanhBounded`` on ``[-1, 1]``.
    """
    from torch import nn
    from torchrl.modules import MLP as TorchRLMLP

    from funcrl.nn import TorchModule, to_module

    if isinstance(net, Concat):
        return torch_module(net.net, params, owner)
    if isinstance(net, TanhBounded) and net.low == -1.0 and net.high == 1.0:
        _, inner = torch_module(net.net, params, owner)
        return nn.Sequential(inner, nn.Tanh()), inner
    if isinstance(net, TorchModule):
        to_module(params, net.module, layout="flat")
        return net.module, net.module
    if isinstance(net, MLP) and net.norm is None and net.layer_class == "linear":
        classes = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "gelu": nn.GELU}
        if net.activation not in classes:
            raise TypeError(
                f"{owner}: MLP activation {net.activation!r} has no TorchRL module here"
            )
        module = TorchRLMLP(
            in_features=net.in_features,
            out_features=net.out_features,
            num_cells=list(net.num_cells),
            depth=net.depth,
            activation_class=classes[net.activation],
            activate_last_layer=net.activate_last_layer,
            bias_last_layer=net.bias_last_layer,
        )
        to_module(params, module)
        return module, module
    raise TypeError(
        f"{owner}: cannot build a TorchRL module for {type(net).__name__}; use a plain MLP, "
        "TanhBounded(MLP) on [-1, 1] or a funcrl.nn.TorchModule"
    )


def torchrl_tanh_normal_actor(net: Any, params: Any, low: torch.Tensor, high: torch.Tensor, nets):
    """TorchRL's SAC actor: ``ProbabilisticActor(TensorDictModule(Sequential(net,
    NormalParamExtractor)), TanhNormal on [low, high])`` with ``params`` copied into ``net``."""
    from tensordict.nn import NormalParamExtractor, TensorDictModule
    from torchrl.modules import ProbabilisticActor
    from torchrl.modules import TanhNormal as TorchRLTanhNormal

    body, _ = torch_module(net, params, "to_torchrl")
    seq = torch.nn.Sequential(body, NormalParamExtractor(nets.scale_mapping, nets.scale_lb))
    return ProbabilisticActor(
        TensorDictModule(seq, in_keys=["observation"], out_keys=["loc", "scale"]),
        in_keys=["loc", "scale"],
        distribution_class=TorchRLTanhNormal,
        distribution_kwargs={"low": low, "high": high, "tanh_loc": nets.tanh_loc},
    )


def torchrl_qvalue(net: Any, params: Any) -> Any:
    """``ValueOperator(module, in_keys=["observation", "action"])`` with one member's params."""
    from torchrl.modules import ValueOperator

    module, _ = torch_module(net, params, "to_torchrl")
    return ValueOperator(module, in_keys=["observation", "action"])


def from_torchrl_tanh_normal_actor(loss_module: Any) -> tuple[Any, Any, dict[str, Any]]:
    """``(actor net, actor params, {"scale_mapping", "scale_lb", "tanh_loc", "low", "high"})``
    from a TorchRL ``ProbabilisticActor`` of a ``Sequential(net, NormalParamExtractor)`` and a
    ``TanhNormal``."""
    from tensordict.nn import NormalParamExtractor

    actor = loss_module.actor_network
    body = actor.module[0].module
    dist = actor.module[1]
    if dist.distribution_class.__name__ != "TanhNormal":
        raise TypeError(
            f"from_torchrl: the actor's distribution is {dist.distribution_class.__name__}, "
            "expected TanhNormal"
        )
    if not (isinstance(body, torch.nn.Sequential) and isinstance(body[-1], NormalParamExtractor)):
        raise TypeError(
            "from_torchrl: the actor must be Sequential(net, NormalParamExtractor()) (TorchRL's "
            f"SAC layout), got {type(body).__name__}"
        )
    inner = body[0] if len(body) == 2 else torch.nn.Sequential(*list(body)[:-1])
    net, params = read_torchrl(actor, loss_module.actor_network_params, inner)
    kw = dist.distribution_kwargs
    info = {
        "scale_mapping": scale_mapping_name(body[-1].scale_mapping),
        "scale_lb": float(body[-1].scale_lb),
        "tanh_loc": bool(kw.get("tanh_loc", False)),
        "low": torch.as_tensor(kw.get("low", -1.0)),
        "high": torch.as_tensor(kw.get("high", 1.0)),
    }
    return net, params, info


def scale_mapping_name(m: Any) -> str:
    """The funcrl name of a tensordict ``NormalParamExtractor``'s scale mapping module."""
    import torch.nn.functional as F

    if type(m).__name__ == "biased_softplus":
        bias = float(F.softplus(torch.as_tensor(m.bias)) + m.min_val)
        name = f"biased_softplus_{round(bias, 6)}"
        return name if m.min_val == 0.01 else f"{name}_{m.min_val}"  # 0.01: tensordict's default
    names = {F.softplus: "softplus", torch.exp: "exp", torch.nn.functional.relu: "relu"}
    if m in names:
        return names[m]
    raise TypeError(f"from_torchrl: NormalParamExtractor scale mapping {m!r} is not supported")


def critic_from_torchrl(module: Any, params_td: Any) -> tuple[Any, Any]:
    """``(Concat(net), params)`` of a TorchRL ``ValueOperator`` over ``observation, action``."""
    if list(module.in_keys) != ["observation", "action"]:
        raise TypeError(
            f"from_torchrl: the critic's in_keys are {module.in_keys}, expected "
            "['observation', 'action']"
        )
    net, params = read_torchrl(module, params_td, module.module)
    return Concat(net), params


def torchrl_action_dim(low: torch.Tensor, actor_net: Any, owner: str) -> int:
    """The action size: the ``TanhNormal``'s bound's last dim, else half the actor's output."""
    if low.dim():
        return int(low.shape[-1])
    out = getattr(actor_net, "out_features", None)
    if isinstance(out, int):
        return out // 2
    raise TypeError(f"{owner}: cannot read the action size (scalar bounds, actor without sizes)")


def deterministic_actor_from_torchrl(module: Any, params_td: Any) -> tuple[Any, Any]:
    """``(net, params)`` of a TorchRL deterministic actor ``TensorDictModule(net, ["observation"],
    ["action"])``: ``Sequential(MLP, Tanh)`` becomes ``TanhBounded(MLP)`` on ``[-1, 1]``, any
    other module a net of :func:`funcrl.nn.from_torchrl` (a ``TorchModule`` at worst)."""
    if list(module.in_keys) != ["observation"]:
        raise TypeError(
            f"from_torchrl: the actor's in_keys are {module.in_keys}, expected ['observation']"
        )
    body = module.module
    if (
        isinstance(body, torch.nn.Sequential)
        and len(body) == 2
        and isinstance(body[1], torch.nn.Tanh)
        and type(body[0]).__name__ == "MLP"
    ):
        net, params = read_torchrl(module, params_td, body[0])
        return TanhBounded(net, -1.0, 1.0), params
    return read_torchrl(module, params_td, body)


def deterministic_actor_to_torchrl(net: Any, params: Any) -> tuple[Any, Any]:
    """``(TensorDictModule(module, ["observation"], ["action"]), inner)`` for a funcrl actor."""
    from tensordict.nn import TensorDictModule

    module, inner = torch_module(net, params, "to_torchrl")
    return TensorDictModule(module, in_keys=["observation"], out_keys=["action"]), inner


def td3_from_torchrl(m: Any) -> tuple[dict[str, Any], Any, Any, dict[str, Any]]:
    """A TorchRL ``TD3Loss``-shaped module (``TD3Loss``, ``TD3BCLoss``) read as ``(config fields,
    actor, qvalue, params)``: TD3's hyperparameters and value estimator, the actor
    (``Sequential(MLP, Tanh)`` becomes ``TanhBounded(MLP)``) and critic as funcrl nets, online and
    target weights, and ``action_bounds`` from ``min_action`` / ``max_action``."""
    actor, actor_params = deterministic_actor_from_torchrl(m.actor_network, m.actor_network_params)
    qnet, qparams = critic_from_torchrl(m.qvalue_network, m.qvalue_network_params)
    fields = {
        "policy_noise": float(m.policy_noise),
        "noise_clip": float(m.noise_clip),
        "loss_function": m.loss_function,
        "delay_actor": bool(m.delay_actor),
        "delay_qvalue": bool(m.delay_qvalue),
        "num_qvalue_nets": int(m.num_qvalue_nets),
        "reduction": m.reduction,
        "use_prioritized_weights": m.use_prioritized_weights,
        **torchrl_estimator(m),
    }
    params: dict[str, Any] = {
        "actor": actor_params,
        "qvalue": qparams,
        "action_bounds": {"low": m.min_action.clone(), "high": m.max_action.clone()},
    }
    if fields["delay_actor"]:
        params["target_actor"] = deterministic_actor_from_torchrl(
            m.actor_network, m.target_actor_network_params
        )[1]
    if fields["delay_qvalue"]:
        params["target_qvalue"] = critic_from_torchrl(
            m.qvalue_network, m.target_qvalue_network_params
        )[1]
    return fields, actor, qnet, params


def td3_to_torchrl(
    loss_cls: Any,
    config: Any,
    nets: Any,
    params: Mapping[str, Any],
    *,
    observation_dim: int | None,
    owner: str,
    **extra: Any,
) -> Any:
    """The inverse of :func:`td3_from_torchrl`: a ``loss_cls`` (``TD3Loss``, ``TD3BCLoss``) with
    the actor, critics, targets, action bounds and value estimator of ``config``/``params`` copied
    in; ``extra`` are ``loss_cls``'s own arguments (TD3+BC's ``alpha``). ``observation_dim`` sizes
    default nets (read from the actor's params when ``None``)."""
    from torchrl.data import Bounded

    require(
        params,
        ["actor", "qvalue", "action_bounds"]
        + (["target_actor"] if config.delay_actor else [])
        + (["target_qvalue"] if config.delay_qvalue else []),
        owner,
    )
    low, high = bounds(params, owner)
    if observation_dim is None:
        observation_dim = in_features(params["actor"], owner, "actor")
    nets = resolve(nets, observation_dim, low.shape[-1])
    actor, inner = deterministic_actor_to_torchrl(nets.actor, params["actor"])
    m = loss_cls(
        actor,
        torchrl_qvalue(nets.qvalue, tree.map(lambda x: x[0], params["qvalue"])),
        action_spec=Bounded(low, high, tuple(low.shape), dtype=low.dtype),
        num_qvalue_nets=config.num_qvalue_nets,
        policy_noise=config.policy_noise,
        noise_clip=config.noise_clip,
        loss_function=config.loss_function,
        delay_actor=config.delay_actor,
        delay_qvalue=config.delay_qvalue,
        reduction=config.reduction,
        use_prioritized_weights=config.use_prioritized_weights,
        **extra,
    )
    make_torchrl_estimator(m, config)
    qmod = m.qvalue_network
    write_torchrl(m.qvalue_network_params, qmod, qmod.module, params["qvalue"])
    if config.delay_qvalue:
        write_torchrl(m.target_qvalue_network_params, qmod, qmod.module, params["target_qvalue"])
    if config.delay_actor:
        write_torchrl(m.target_actor_network_params, m.actor_network, inner, params["target_actor"])
    return m


# --- TD3's equations (td3, td3_bc) ---------------------------------------------------------------


def target_policy_smoothing(
    action: torch.Tensor,
    noise: torch.Tensor,
    policy_noise: float,
    noise_clip: float,
    low: torch.Tensor,
    high: torch.Tensor,
) -> torch.Tensor:
    """``clip(a + clip(sigma * eps, -c, c), low, high)`` with ``eps`` a standard normal draw."""
    smoothing = (noise * policy_noise).clamp(-noise_clip, noise_clip)
    return torch.clamp(action + smoothing, low, high)


def clipped_double_q(next_qs: torch.Tensor) -> torch.Tensor:
    """``min_i Q'_i``: ``[num_qvalue_nets, *B] -> [*B]``."""
    return next_qs.min(0).values
