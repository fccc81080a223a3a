"""The on-policy family (PPO, A2C, REINFORCE): the policy head, the critic, advantages, the trainer.

Params of every on-policy objective::

    {"actor": ..., "critic": ...,           # the policy head's net and the state-value net V(s)
     "trunk": ...,                           # only with Nets(trunk=...): shared features of both
     "action_bounds": {"low", "high"},       # only for the "tanh_normal" policy, never trained
     "kl_beta": 0-d,                         # only for PPO's KL penalty (adaptive state)
     "target_critic": ...}                   # only for REINFORCE with delay_value

The policy is ``Nets.actor`` plus a distribution (``Nets.distribution``):

* ``"tanh_normal"``: :class:`~funcrl.distributions.TanhNormal` on ``params["action_bounds"]``,
  ``loc, scale`` from ``NormalParamExtractor`` (the actor outputs ``[*B, 2 a]``); no closed-form
  entropy, so the entropy bonus is Monte-Carlo (``samples_mc_entropy`` reparameterised draws).
* ``"normal"``: :class:`~funcrl.distributions.IndependentNormal` (analytic entropy and KL).
* ``"categorical"``: :class:`~funcrl.distributions.Categorical` over ``n`` logits; the action is
  the int64 index ``[*B]``.
* ``"masked_categorical"``: :class:`~funcrl.distributions.MaskedCategorical`; the bool mask
  ``[*B, n]`` is read from ``batch["action_mask"]`` (TorchRL's key).

A rollout stores, beside TorchRL's transition keys, the behaviour policy's log-prob
(``"action_log_prob"``, TorchRL 0.14's ``sample_log_prob`` key) and its distribution parameters
(``"loc"``/``"scale"`` or ``"logits"``, which PPO's KL penalty rebuilds the old policy from):
:func:`explore` returns exactly these entries.

:func:`advantages` adds ``advantage``, ``value_target`` and ``state_value`` (TorchRL's keys) to a
rollout ``[E, T]`` (``time_dim=-1``, TorchRL's layout) or ``[T, E]`` (``time_dim=0``) through
:mod:`funcrl.values`, with the critic's gradient stopped. :func:`trainer` runs epochs of shuffled
minibatches over one rollout as one pure function; :class:`KLAdaptiveLR` (TorchRL's KL-adaptive
learning rate, as an optimizer transform) and :class:`RewardScaling` (gymnasium's
``NormalizeReward``, as pure running statistics) are its optional companions.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import torch

from funcrl import random as _random
from funcrl import tree
from funcrl import values as _values
from funcrl.autodiff import grad
from funcrl.objectives.actor_critic import action_bounds
from funcrl.objectives.common import (
    LOSS_FUNCTIONS,
    REDUCTIONS,
    check_batch,
    default_net,
    distance_loss,
    get,
    out_features,
    require,
    spec_size,
)
from funcrl.record import NestedKey, Record
from funcrl.training import Trainer, TrainState, total_loss

Params = dict[str, Any]

__all__ = [
    "DISTRIBUTIONS",
    "VALUE_ESTIMATORS",
    "Nets",
    "check_config",
    "init",
    "policy",
    "state_value",
    "explore",
    "act",
    "entropy",
    "kl_divergence",
    "old_policy",
    "loss_inputs",
    "policy_log_prob",
    "behaviour_log_prob",
    "sample_shape",
    "advantages",
    "normalize_advantage",
    "critic_loss",
    "explained_variance",
    "KLAdaptiveLR",
    "RewardScaling",
    "RewardScaleState",
    "KLAdaptiveLRState",
    "minibatch_draws",
    "minibatch_trainer",
    "trainer",
]

DISTRIBUTIONS = ("tanh_normal", "normal", "categorical", "masked_categorical")
VALUE_ESTIMATORS = ("gae", "td_lambda", "td0", "td1")
_DISCRETE = ("categorical", "masked_categorical")


@dataclasses.dataclass(frozen=True)
class Nets:
    """The on-policy nets, shared by PPO, A2C and REINFORCE.

    Args:
        actor: a funcrl net ``(params, features [*B, f]) -> [*B, 2 a]`` (continuous: ``loc,
            scale`` through ``NormalParamExtractor``) or ``[*B, n]`` logits (discrete).
            ``features`` is the observation, or the trunk's output when ``trunk`` is set.
            ``None``: a ReLU :class:`funcrl.nn.MLP` with ``num_cells``, sized by :func:`init` from
            the specs and by the loss and ``act`` from the features and the params' output width.
        critic: a funcrl net ``(params, features) -> [*B, 1]``, the state value ``V(s)``;
            ``None`` as ``actor``.
        trunk: ``None`` (separate actor and critic) or a funcrl net ``(params, obs) -> [*B, f]``
            shared by both (TorchRL's ``ActorValueOperator``); it needs an ``out_features``.
        distribution: one of :data:`DISTRIBUTIONS`.
        num_cells: hidden sizes of the default (ReLU MLP) actor and critic.
        scale_mapping, scale_lb: ``NormalParamExtractor``'s arguments (continuous policies).
        tanh_loc: ``TanhNormal``/``IndependentNormal``'s ``tanh_loc``.

    Multi-agent (IPPO / MAPPO): an actor or critic with an ``n_agents`` attribute (a
    :class:`funcrl.nn.MultiAgentMLP`) makes every per-sample entry carry an agent dim after the
    batch dims: ``observation [*B, n_agents, o]``, ``action [*B, n_agents, a]``, log-probs
    ``[*B, n_agents]``, rewards, flags, values and advantages ``[*B, n_agents, 1]``
    (:attr:`agent_shape`; see :func:`funcrl.objectives.multiagent.ppo_nets`).
    """

    actor: Any = None
    critic: Any = None
    trunk: Any = None
    distribution: str = "tanh_normal"
    num_cells: tuple[int, ...] = (64, 64)
    scale_mapping: str = "biased_softplus_1.0"
    scale_lb: float = 1e-4
    tanh_loc: bool = False

    def __post_init__(self) -> None:
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(
                f"on_policy.Nets: distribution must be one of {DISTRIBUTIONS}, got "
                f"{self.distribution!r}"
            )
        if self.trunk is not None and not hasattr(self.trunk, "init"):
            raise TypeError(
                "on_policy.Nets: trunk must be a funcrl net (with .init), got "
                f"{type(self.trunk).__name__}"
            )
        n_actor = getattr(self.actor, "n_agents", None)
        n_critic = getattr(self.critic, "n_agents", None)
        if n_actor is not None and n_critic is not None and n_actor != n_critic:
            raise ValueError(
                f"on_policy.Nets: the actor has n_agents={n_actor} but the critic has "
                f"n_agents={n_critic}; both nets must be for the same agents"
            )

    @property
    def discrete(self) -> bool:
        return self.distribution in _DISCRETE

    @property
    def agent_shape(self) -> tuple[int, ...]:
        """``(n_agents,)`` when the actor or the critic is multi-agent (has ``n_agents``), else
        ``()``: the dims every per-sample entry has between the batch dims and its features."""
        n = getattr(self.actor, "n_agents", None)
        n = getattr(self.critic, "n_agents", None) if n is None else n
        return () if n is None else (int(n),)


# -- config checks ---------------------------------------------------------------------------------


def _number(owner: str, name: str, x: Any, *, low: float | None = None, strict=False) -> None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise TypeError(f"{owner}: {name} must be a number, got {type(x).__name__}")
    if low is not None and (x <= low if strict else x < low):
        raise ValueError(f"{owner}: {name} must be {'>' if strict else '>='} {low}, got {x}")


def check_config(owner: str, cfg: Any) -> None:
    """Validates the fields an on-policy ``Config`` has (those it lacks are skipped)."""
    if not 0.0 <= cfg.gamma <= 1.0:
        raise ValueError(f"{owner}: gamma must be in [0, 1], got {cfg.gamma}")
    if not 0.0 <= cfg.lmbda <= 1.0:
        raise ValueError(f"{owner}: lmbda must be in [0, 1], got {cfg.lmbda}")
    if cfg.value_estimator not in VALUE_ESTIMATORS:
        raise ValueError(
            f"{owner}: value_estimator must be one of {VALUE_ESTIMATORS}, got "
            f"{cfg.value_estimator!r}"
        )
    if cfg.time_dim not in (0, -1):
        raise ValueError(
            f"{owner}: time_dim must be 0 (rollout [T, E]) or -1 (rollout [E, T], TorchRL's), "
            f"got {cfg.time_dim!r}"
        )
    if cfg.loss_critic_type not in LOSS_FUNCTIONS:
        raise ValueError(
            f"{owner}: loss_critic_type must be one of {LOSS_FUNCTIONS}, got "
            f"{cfg.loss_critic_type!r}"
        )
    if cfg.reduction not in REDUCTIONS:
        raise ValueError(f"{owner}: reduction must be one of {REDUCTIONS}, got {cfg.reduction!r}")
    if getattr(cfg, "critic_coeff", None) is not None:
        _number(owner, "critic_coeff", cfg.critic_coeff, low=0.0)
    if getattr(cfg, "entropy_coeff", None) is not None:
        _number(owner, "entropy_coeff", cfg.entropy_coeff)
    if cfg.clip_value is not None and not isinstance(cfg.clip_value, bool):
        _number(owner, "clip_value", cfg.clip_value, low=0.0, strict=True)
    n = getattr(cfg, "samples_mc_entropy", 1)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{owner}: samples_mc_entropy must be an int >= 1, got {n!r}")
    dims = getattr(cfg, "normalize_advantage_exclude_dims", ())
    if not isinstance(dims, tuple) or not all(isinstance(d, int) for d in dims):
        raise TypeError(
            f"{owner}: normalize_advantage_exclude_dims must be a tuple of ints, got {dims!r}"
        )
    if len(set(dims)) != len(dims):
        raise ValueError(f"{owner}: normalize_advantage_exclude_dims repeats a dim: {dims}")
    key = cfg.sample_log_prob_key
    if not (isinstance(key, str) or (isinstance(key, tuple) and key)):
        raise TypeError(f"{owner}: sample_log_prob_key must be a str or tuple key, got {key!r}")


# -- init --------------------------------------------------------------------------------------------


def _num_actions(spec: Any, owner: str) -> int:
    n = getattr(spec, "n", None)
    if n is not None and not isinstance(spec, int):
        return int(n)
    return spec_size(spec, owner, "action_spec")


def init(
    seed: Any,
    observation_spec: Any,
    action_spec: Any,
    *,
    nets: Nets,
    owner: str,
    device: Any = None,
    dtype: torch.dtype = torch.float32,
) -> Params:
    """``actor``, ``critic`` (and ``trunk``, ``action_bounds``) params from the specs.

    Multi-agent nets (:attr:`Nets.agent_shape`) need grouped specs ``[n_agents, ...]``.

    A discrete policy reads the number of actions from ``action_spec.n`` (gymnasium's
    ``Discrete``, TorchRL's ``Categorical``) or an int; a continuous one the last dim of the spec.
    """
    from funcrl.nn import make_generator

    gen = make_generator(seed)
    kw = {"device": device, "dtype": dtype}
    agents = nets.agent_shape
    for name, spec in (("observation_spec", observation_spec), ("action_spec", action_spec)):
        shape = tuple(getattr(spec, "shape", ()) or ())
        if agents and shape[: len(agents)] != agents:
            raise ValueError(
                f"{owner}: {name} has shape {shape}, expected [n_agents={agents[0]}, ...]: the "
                "nets are multi-agent, so the specs must be grouped (TorchRL's "
                "('agents', ...) specs)"
            )
    features = spec_size(observation_spec, owner, "observation_spec")
    params: Params = {}
    if nets.trunk is not None:
        params["trunk"] = nets.trunk.init(gen, **kw)
        out = getattr(nets.trunk, "out_features", None)
        if not isinstance(out, int):
            raise TypeError(f"{owner}: Nets.trunk needs an int out_features, got {out!r}")
        features = out
    if nets.discrete:
        out_actor = _num_actions(action_spec, owner)
    else:
        act_dim = spec_size(action_spec, owner, "action_spec")
        out_actor = 2 * act_dim
    for name, net in (("actor", nets.actor), ("critic", nets.critic)):
        if net is not None and not hasattr(net, "init"):
            raise TypeError(
                f"{owner}: Nets.{name} must be a funcrl net (with init and __call__), got "
                f"{type(net).__name__}"
            )
    actor = default_net(nets.actor, features, out_actor, nets.num_cells)
    params["actor"] = actor.init(gen, **kw)
    params["critic"] = default_net(nets.critic, features, 1, nets.num_cells).init(gen, **kw)
    if nets.distribution == "tanh_normal":
        params["action_bounds"] = action_bounds(action_spec, act_dim, **kw)
    return params


# -- the policy and the critic ----------------------------------------------------------------------


def _actor(nets: Nets, actor_params: Any, features: torch.Tensor) -> Any:
    """The actor net: ``nets.actor``, or the default MLP sized by the features and the params'
    output width (static shapes; the net checks the rest of its params)."""
    if nets.actor is not None:
        return nets.actor
    width = out_features(actor_params, "on_policy", "actor")
    return default_net(None, features.shape[-1], width, nets.num_cells)


def _features(params: Params, observation: torch.Tensor, nets: Nets, detach_trunk: bool = False):
    if nets.trunk is None:
        return observation
    trunk = params["trunk"]
    return nets.trunk(tree.detach(trunk) if detach_trunk else trunk, observation)


def _distribution(nets: Nets, out: torch.Tensor, params: Params, mask: torch.Tensor | None):
    from funcrl.distributions import (
        Categorical,
        IndependentNormal,
        MaskedCategorical,
        NormalParamExtractor,
        TanhNormal,
    )

    if nets.distribution == "categorical":
        return Categorical(logits=out)
    if nets.distribution == "masked_categorical":
        if mask is None:
            raise KeyError(
                "on_policy.policy: the masked_categorical policy needs a bool action mask "
                "[*B, n] (batch['action_mask'] in a loss, mask= in act/explore)"
            )
        if mask.dtype != torch.bool or mask.shape != out.shape:
            raise ValueError(
                f"on_policy.policy: action_mask must be bool {tuple(out.shape)}, got "
                f"{mask.dtype} {tuple(mask.shape)}"
            )
        return MaskedCategorical(logits=out, mask=mask)
    loc, scale = NormalParamExtractor(nets.scale_mapping, nets.scale_lb)(out)
    if nets.distribution == "normal":
        return IndependentNormal(loc, scale, tanh_loc=nets.tanh_loc)
    bounds = params.get("action_bounds")
    low, high = (-1.0, 1.0) if bounds is None else (bounds["low"], bounds["high"])
    return TanhNormal(loc, scale, low=low, high=high, tanh_loc=nets.tanh_loc)


def policy(
    params: Params,
    observation: torch.Tensor,
    *,
    nets: Nets = Nets(),
    mask: torch.Tensor | None = None,
    actor_params: Any = None,
):
    """The policy's distribution at ``observation [*B, o]`` (``mask [*B, n]`` for a masked one).

    ``actor_params`` overrides ``params["actor"]`` (e.g. detached copies).
    """
    p = params["actor"] if actor_params is None else actor_params
    features = _features(params, observation, nets)
    return _distribution(nets, _actor(nets, p, features)(p, features), params, mask)


def old_policy(params: Params, batch: Record, *, nets: Nets, owner: str):
    """The behaviour policy rebuilt from the distribution params stored in ``batch`` (TorchRL's
    ``build_dist_from_params``): ``"loc"``/``"scale"`` or ``"logits"`` (plus ``"action_mask"``)."""
    from funcrl.distributions import Categorical, IndependentNormal, MaskedCategorical, TanhNormal

    if nets.discrete:
        logits = get(batch, "logits", owner=owner).detach()
        if nets.distribution == "categorical":
            return Categorical(logits=logits)
        return MaskedCategorical(logits=logits, mask=get(batch, "action_mask", owner=owner))
    loc = get(batch, "loc", owner=owner).detach()
    scale = get(batch, "scale", owner=owner, shape=tuple(loc.shape[batch.batch_ndim :])).detach()
    if nets.distribution == "normal":
        return IndependentNormal(loc, scale, tanh_loc=nets.tanh_loc)
    bounds = params.get("action_bounds")
    low, high = (-1.0, 1.0) if bounds is None else (bounds["low"], bounds["high"])
    return TanhNormal(loc, scale, low=low, high=high, tanh_loc=nets.tanh_loc)


def state_value(
    params: Params,
    observation: torch.Tensor,
    *,
    nets: Nets = Nets(),
    critic_params: Any = None,
    detach_trunk: bool = False,
) -> torch.Tensor:
    """``V(s)``: ``[*B, 1]``. ``detach_trunk`` stops the gradient into a shared trunk."""
    p = params["critic"] if critic_params is None else critic_params
    features = _features(params, observation, nets, detach_trunk)
    return default_net(nets.critic, features.shape[-1], 1, nets.num_cells)(p, features)


def explore(
    params: Params,
    observation: torch.Tensor,
    *,
    nets: Nets = Nets(),
    mask: torch.Tensor | None = None,
    key: torch.Tensor | None = None,
    sample_log_prob_key: NestedKey = "action_log_prob",
) -> dict[str, torch.Tensor]:
    """One rollout step's policy entries: ``action``, its log-prob and the distribution params.

    Returns ``{"action", sample_log_prob_key, "loc", "scale"}`` (continuous) or ``{"action",
    sample_log_prob_key, "logits"}`` (discrete), all detached: what the losses read back.
    """
    with torch.no_grad():
        features = _features(params, observation, nets)
        out = _actor(nets, params["actor"], features)(params["actor"], features)
        dist = _distribution(nets, out, params, mask)
        if nets.discrete:
            action = _draw(dist, (), key, reparameterize=False)
            lp = dist.log_prob(action)
        else:
            action, lp = _draw_and_log_prob(dist, (), key, reparameterize=False)
        entries = {"action": action, sample_log_prob_key: lp}
        if nets.discrete:
            entries["logits"] = out
        else:
            from funcrl.distributions import NormalParamExtractor

            loc, scale = NormalParamExtractor(nets.scale_mapping, nets.scale_lb)(out)
            entries.update(loc=loc, scale=scale)
        return entries


def act(
    params: Params,
    observation: torch.Tensor,
    *,
    nets: Nets = Nets(),
    mode: str = "random",
    key: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """A sampled (``mode="random"``) or the deterministic action (the distribution's
    ``deterministic_sample``: the tanh of the mean, the mean, or the most likely class)."""
    if mode not in ("random", "deterministic"):
        raise ValueError(f"act: mode must be 'random' or 'deterministic', got {mode!r}")
    if mode == "random":
        return explore(params, observation, nets=nets, mask=mask, key=key)["action"]
    with torch.no_grad():
        dist = policy(params, observation, nets=nets, mask=mask)
        return dist.mode if nets.discrete else dist.deterministic_sample


# -- sampling helpers (global RNG when key is None; funcrl.random keys otherwise) ----------------


def _draw(dist, shape: tuple[int, ...], key, *, reparameterize: bool) -> torch.Tensor:
    fn = dist.rsample if reparameterize else dist.sample
    return fn(shape) if key is None else fn(shape, key=key)


def _draw_and_log_prob(dist, shape, key, *, reparameterize: bool):
    # Score the drawn pre-image itself (TorchRL's sample_and_log_prob): no tanh re-inversion.
    if hasattr(dist, "rsample_and_log_prob"):
        kw = {} if key is None else {"key": key}
        x, lp = dist.rsample_and_log_prob(shape, **kw)
        return (x, lp) if reparameterize else (x.detach(), lp)
    x = _draw(dist, shape, key, reparameterize=reparameterize)
    return x, dist.log_prob(x)


def entropy(dist, samples: int, key: torch.Tensor | None = None) -> torch.Tensor:
    """The policy's entropy ``[*B]``: analytic where the distribution has one (normal,
    categoricals), else ``-mean log pi(a)`` over ``samples`` reparameterised draws (TanhNormal).
    """
    if hasattr(dist, "entropy"):
        return dist.entropy()
    _, lp = _draw_and_log_prob(dist, (samples,), key, reparameterize=True)
    return -lp.mean(0)


def _normal_kl(loc_p, scale_p, loc_q, scale_q, event_dims: int) -> torch.Tensor:
    var_ratio = (scale_p / scale_q).pow(2)
    t1 = ((loc_p - loc_q) / scale_q).pow(2)
    kl = 0.5 * (var_ratio + t1 - 1 - var_ratio.log())
    return kl.flatten(kl.ndim - event_dims).sum(-1) if event_dims else kl


def kl_divergence(old, new) -> torch.Tensor:
    """``KL(old || new)``: ``[*B]``.

    Analytic for two categoricals, two normals, and two TanhNormals (the KL is invariant under
    their shared bijection, so it is the KL of the pre-tanh normals: TorchRL's
    ``TransformedDistribution`` rule). Two TanhNormals must be on the same bounds, which
    :func:`policy` and :func:`old_policy` guarantee (both read ``params["action_bounds"]``);
    comparing the bound values here would cost a host sync. Every policy of :data:`DISTRIBUTIONS`
    has a closed form, so TorchRL's Monte-Carlo KL (``samples_mc_kl``) is never needed.
    """
    from funcrl.distributions import Categorical, IndependentNormal, TanhNormal

    if isinstance(old, Categorical) and isinstance(new, Categorical):
        p = old.probs
        term = p * (old.logits - new.logits)
        # Masked actions have p = 0 and logits -inf on both sides: they contribute nothing.
        return torch.where(p > 0, term, torch.zeros_like(term)).sum(-1)
    if isinstance(old, IndependentNormal) and isinstance(new, IndependentNormal):
        return _normal_kl(old.loc, old.scale, new.loc, new.scale, old.event_dim)
    same_bijection = (
        isinstance(old, TanhNormal)
        and isinstance(new, TanhNormal)
        and old.event_dims == new.event_dims
        and old.low.shape == new.low.shape
        and old.high.shape == new.high.shape
    )
    if same_bijection:
        return _normal_kl(old.loc, old.scale, new.loc, new.scale, old.event_dims)
    raise TypeError(
        f"kl_divergence: no closed form for KL({type(old).__name__} || {type(new).__name__}); "
        "the on-policy objectives build both from the same Nets.distribution"
    )


# -- the loss inputs --------------------------------------------------------------------------------


def loss_inputs(
    params: Params, batch: Record, *, config: Any, nets: Nets, owner: str
) -> tuple[Record, torch.Tensor]:
    """``(batch, advantage [*B, 1])``: the batch checked, with :func:`advantages` computed first
    when it has no ``"advantage"`` entry (TorchRL's losses call their value estimator then)."""
    check_batch(batch, owner)
    require(params, ["actor"], owner)
    if "advantage" not in batch:
        require(params, ["critic"], owner)
        batch = advantages(params, batch, config=config, nets=nets, owner=owner)
    flag_shape = sample_shape(batch, nets) + (1,)
    return batch, _flag_entry(batch, "advantage", flag_shape, owner)


def sample_shape(batch: Record, nets: Nets) -> tuple[int, ...]:
    """``(*B, *nets.agent_shape)``: one log-prob per sample (and per agent, multi-agent)."""
    return tuple(batch.batch_size) + nets.agent_shape


def _agent_entry(
    batch: Record, key: NestedKey, nets: Nets, owner: str, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """``batch[key]`` with the nets' agent dims right after the batch dims (multi-agent nets), so a
    rollout of the wrong number of agents fails here, naming the key, not inside a net."""
    x = get(batch, key, owner=owner, dtype=dtype)
    agents = nets.agent_shape
    b = batch.batch_ndim
    if agents and (x.dim() <= b + len(agents) or tuple(x.shape[b : b + len(agents)]) != agents):
        raise ValueError(
            f"{owner}: batch[{key!r}] has shape {tuple(x.shape)}, expected "
            f"{tuple(batch.batch_size) + agents + ('...',)} ([*B, n_agents, features]; the nets "
            f"are for n_agents={agents[0]})"
        )
    return x


def policy_log_prob(
    params: Params, batch: Record, *, nets: Nets, owner: str
) -> tuple[Any, torch.Tensor]:
    """``(pi_theta, log pi_theta(a) [*B])`` at the batch's ``observation`` and ``action``
    (``[*B, a]`` continuous, an integer index ``[*B]`` discrete; ``action_mask [*B, n]`` for a
    masked policy), with the action's layout checked against the policy's.

    With multi-agent nets every entry has the agent dim after ``*B`` (``log pi [*B, n_agents]``).
    """
    dtype = tree.leaves(params["actor"])[0].dtype
    obs = _agent_entry(batch, "observation", nets, owner, dtype)
    bshape = sample_shape(batch, nets)
    action = get(batch, "action", owner=owner)
    mask = None
    if nets.distribution == "masked_categorical":
        mask = get(batch, "action_mask", owner=owner)
    dist = policy(params, obs, nets=nets, mask=mask)
    if nets.discrete:
        if action.dtype.is_floating_point or action.dtype == torch.bool:
            raise TypeError(
                f"{owner}: batch['action'] must be an integer index for the {nets.distribution} "
                f"policy, got {action.dtype}"
            )
        want = bshape
    else:
        want = bshape + tuple(dist.event_shape)
    if tuple(action.shape) != want:
        raise ValueError(
            f"{owner}: batch['action'] has shape {tuple(action.shape)}, expected {want} for the "
            f"{nets.distribution} policy"
        )
    return dist, dist.log_prob(action)


def behaviour_log_prob(
    batch: Record, key: NestedKey, *, owner: str, agent_shape: tuple[int, ...] = ()
) -> torch.Tensor:
    """``batch[key]``: the behaviour policy's log-prob of the action, ``[*B, *agent_shape]``
    (``agent_shape``: :attr:`Nets.agent_shape`), detached."""
    prev = get(batch, key, owner=owner)
    want = tuple(batch.batch_size) + tuple(agent_shape)
    if tuple(prev.shape) != want:
        per = "sample and agent" if agent_shape else "sample"
        raise ValueError(
            f"{owner}: batch[{key!r}] has shape {tuple(prev.shape)}, expected {want} (one "
            f"log-prob per {per})"
        )
    return prev.detach()


# -- advantages ------------------------------------------------------------------------------------


def _value_time_dim(cfg: Any, agent_shape: tuple[int, ...] = ()) -> int:
    # Rollout batch dim -> tensor dim of a [*batch, *agents, 1] entry: -1 (the last batch dim) is
    # -2 (or -3 past an agent dim); negative, so it holds under vmap too.
    return -2 - len(agent_shape) if cfg.time_dim == -1 else 0


def advantages(
    params: Params,
    rollout: Record,
    *,
    config: Any,
    nets: Nets = Nets(),
    owner: str = "advantages",
    method: str = "scan",
) -> Record:
    """``rollout`` with ``advantage``, ``value_target`` and ``state_value`` (``[*B, 1]``) added.

    The critic runs on ``observation`` and ``("next", "observation")`` with its gradient stopped
    (``params["target_critic"]`` for the next values when ``config.delay_value``); the estimator
    is ``config.value_estimator`` from :mod:`funcrl.values` along ``config.time_dim``. Only
    ``("next", "terminated")`` stops bootstrapping; ``("next", "done")`` cuts the trajectory.

    Multi-agent GAE (TorchRL's ``MultiAgentGAE``): with multi-agent nets (:attr:`Nets.agent_shape`)
    every entry is per agent, ``[*B, n_agents, 1]``, and each agent's advantage runs along the
    time dim on its own; a team reward or done ``[*B, 1]`` is an error here (nothing is
    broadcast): :func:`funcrl.nn.multiagent.group_view` broadcasts the team flags over the agents
    first, as TorchRL's ``DoneTransform`` does.

    Args:
        rollout: ``[E, T]`` (``time_dim=-1``) or ``[T, E]`` (``time_dim=0``) transitions, or one
            trajectory ``[T]``.
        method: the recursion of :func:`funcrl.values.discounted_cumsum`: ``"scan"`` (a loop
            over T), ``"matrix"`` (one ``[T, T]`` product) or ``"associative"`` (``log2 T``
            rounds of shifted products); the last two are a few ops instead of ``T`` unrolled
            steps in a compiled graph.
    """
    if not isinstance(rollout, Record):
        raise TypeError(f"{owner}: rollout must be a funcrl.Record, got {type(rollout).__name__}")
    if rollout.batch_ndim == 0:
        raise ValueError(
            f"{owner}: rollout has no batch dims; advantages need a time dim ([E, T] or [T, E])"
        )
    dtype = tree.leaves(params["critic"])[0].dtype
    obs = _agent_entry(rollout, "observation", nets, owner, dtype)
    next_obs = get(
        rollout,
        ("next", "observation"),
        owner=owner,
        shape=obs.shape[rollout.batch_ndim :],
        dtype=dtype,
    )
    flag_shape = sample_shape(rollout, nets) + (1,)
    reward = _flag_entry(rollout, ("next", "reward"), flag_shape, owner)
    done = _flag_entry(rollout, ("next", "done"), flag_shape, owner)
    terminated = _flag_entry(rollout, ("next", "terminated"), flag_shape, owner)
    frozen = tree.detach(params["critic"])
    with torch.no_grad():
        value = state_value(params, obs, nets=nets, critic_params=frozen, detach_trunk=True)
        next_critic = frozen
        if getattr(config, "delay_value", False):
            next_critic = tree.detach(params["target_critic"])
        next_value = state_value(
            params, next_obs, nets=nets, critic_params=next_critic, detach_trunk=True
        )
    if value.shape != flag_shape:
        raise ValueError(
            f"{owner}: the critic gave {tuple(value.shape)}, expected {flag_shape} ([*B, 1], "
            "[*B, n_agents, 1] multi-agent)"
        )
    dim = _value_time_dim(config, nets.agent_shape)
    g, lam, est = config.gamma, config.lmbda, config.value_estimator
    reward = reward.to(value.dtype)
    if est == "gae":
        adv, target = _values.generalized_advantage_estimate(
            g, lam, value, next_value, reward, done, terminated, time_dim=dim, method=method
        )
    else:
        if est == "td0":
            target = _values.td0_return_estimate(g, next_value, reward, terminated)
        elif est == "td1":
            target = _values.td1_return_estimate(
                g, next_value, reward, done, terminated, time_dim=dim, method=method
            )
        else:
            target = _values.td_lambda_return_estimate(
                g, lam, next_value, reward, done, terminated, time_dim=dim, method=method
            )
        adv = target - value
    return rollout.update(
        {"advantage": adv.detach(), "value_target": target.detach(), "state_value": value}
    )


def _flag_entry(batch: Record, key: NestedKey, shape: tuple[int, ...], owner: str) -> torch.Tensor:
    x = get(batch, key, owner=owner)
    if tuple(x.shape) != shape:
        raise ValueError(
            f"{owner}: batch[{key!r}] has shape {tuple(x.shape)}, expected {shape} (TorchRL's "
            "layout: [*batch, 1], or [*batch, n_agents, 1] with multi-agent nets)"
        )
    return x


def normalize_advantage(advantage: torch.Tensor, exclude_dims: Sequence[int] = ()) -> torch.Tensor:
    """``(A - mean) / max(std, 1e-6)`` over all dims but ``exclude_dims`` (TorchRL's
    ``_standardize``: unbiased std, epsilon ``finfo(float32).resolution``).

    ``exclude_dims`` keep their entries independent (e.g. the agent dim of ``[B, n_agents, 1]``).
    """
    eps = torch.finfo(torch.float32).resolution
    nd = advantage.ndim
    excl = {d % nd for d in exclude_dims} if nd else set()
    for d in exclude_dims:
        if not -nd <= d < nd:
            raise ValueError(
                f"normalize_advantage: exclude dim {d} is out of range for an advantage of shape "
                f"{tuple(advantage.shape)}"
            )
    dims = tuple(d for d in range(nd) if d not in excl)
    if not dims:
        return advantage
    mean = advantage.mean(dim=dims, keepdim=True)
    std = advantage.std(dim=dims, keepdim=True)
    return (advantage - mean) / std.clamp_min(eps)


def critic_loss(
    params: Params,
    batch: Record,
    *,
    loss_critic_type: str,
    clip_value: float | None,
    nets: Nets,
    owner: str,
    detach_trunk: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """``(l(V(s), value_target) [*B, 1], value_clip_fraction or None, V(s) detached)``.

    With ``clip_value = c`` the loss is ``max(l(V, G), l(V_old + clip(V - V_old, -c, c),
    G))`` with ``V_old = batch["state_value"]`` (TorchRL's ``_clip_value_loss``).
    """
    obs = _agent_entry(batch, "observation", nets, owner)
    flag_shape = sample_shape(batch, nets) + (1,)
    target = _flag_entry(batch, "value_target", flag_shape, owner).detach()
    v = state_value(params, obs, nets=nets, detach_trunk=detach_trunk)
    if v.shape != target.shape:
        raise ValueError(f"{owner}: the critic gave {tuple(v.shape)}, expected {flag_shape}")
    loss = distance_loss(target, v, loss_critic_type)
    clip_fraction = None
    c = clip_value
    if c is not None:
        old = _flag_entry(batch, "state_value", flag_shape, owner).detach()
        pre = v - old
        clipped = pre.clamp(-c, c)
        clip_fraction = (pre != clipped).to(v.dtype).mean().detach()
        loss = torch.maximum(loss, distance_loss(target, old + clipped, loss_critic_type))
    return loss, clip_fraction, v.detach()


def explained_variance(target: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
    """``1 - Var(G - V) / (Var(G) + eps)`` over the leading dim (TorchRL's logged diagnostic)."""
    eps = torch.finfo(target.dtype).eps
    resid = torch.var(target - prediction, correction=0, dim=0)
    total = torch.var(target, correction=0, dim=0)
    return 1.0 - resid / (total + eps)


# -- running statistics of observations and rewards ------------------------------------------------


class RewardScaleState(NamedTuple):
    """:class:`RewardScaling`'s state: the running statistics of the discounted return (a
    :class:`~funcrl.modules.value_norm.RunningValueNorm` state) and each env's return ``[E]``."""

    stats: dict
    discounted_return: torch.Tensor


@dataclasses.dataclass(frozen=True)
class RewardScaling:
    """Gymnasium's ``NormalizeReward`` as a pure function of its state: each reward is divided by
    the running standard deviation of the discounted return.

    ``G <- gamma (1 - terminated) G + r`` per env (gymnasium's order: the step's own
    ``terminated`` cuts the carried return), the statistics fold in ``G`` exactly
    (:class:`~funcrl.modules.value_norm.RunningValueNorm`, no decay) and the scaled reward is
    ``r / sqrt(var(G) + epsilon)``. Observations need no new code: their running statistics are a
    ``RunningValueNorm(shape=observation_shape)`` (``update`` then ``normalize``).

    Example::

        scaler = RewardScaling(gamma=0.99)
        rs = scaler.init(num_envs)
        rs, scaled = scaler(rs, reward, terminated)       # [E], [E] -> state, [E]
    """

    gamma: float = 0.99
    epsilon: float = 1e-8

    def __post_init__(self) -> None:
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"RewardScaling: gamma must be in [0, 1], got {self.gamma}")
        if not self.epsilon > 0:
            raise ValueError(f"RewardScaling: epsilon must be > 0, got {self.epsilon}")

    @property
    def _norm(self):
        from funcrl.modules.value_norm import RunningValueNorm

        return RunningValueNorm(shape=(), epsilon=self.epsilon)

    def init(
        self, num_envs: int, *, device: Any = None, dtype: torch.dtype = torch.float32
    ) -> RewardScaleState:
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"RewardScaling.init: num_envs must be an int >= 1, got {num_envs!r}")
        return RewardScaleState(
            self._norm.init(device=device, dtype=dtype),
            torch.zeros(num_envs, device=device, dtype=dtype),
        )

    def __call__(
        self, state: RewardScaleState, reward: torch.Tensor, terminated: torch.Tensor
    ) -> tuple[RewardScaleState, torch.Tensor]:
        """``(new state, reward / sqrt(var(G) + epsilon))`` for one step of ``E`` envs (``[E]``)."""
        shape = tuple(state.discounted_return.shape)
        for name, x in (("reward", reward), ("terminated", terminated)):
            if tuple(x.shape) != shape:
                raise ValueError(
                    f"RewardScaling: {name} has shape {tuple(x.shape)}, expected {shape} (one per "
                    "env)"
                )
        keep = 1.0 - terminated.to(reward.dtype)
        ret = state.discounted_return * self.gamma * keep + reward
        stats = self._norm.update(state.stats, ret)
        var = stats["m2"] / stats["count"].clamp(min=1.0)
        return RewardScaleState(stats, ret), reward / (var + self.epsilon).sqrt()


# -- the trainer -----------------------------------------------------------------------------------


class KLAdaptiveLRState(NamedTuple):
    """The current learning rate of a :class:`KLAdaptiveLR` transform (a 0-d tensor)."""

    learning_rate: torch.Tensor


@dataclasses.dataclass(frozen=True)
class KLAdaptiveLR:
    """TorchRL's ``KLAdaptiveLR`` (rsl_rl's schedule) as a pure optax-style transform.

    :attr:`transform` scales the updates by ``-learning_rate`` (use it last in a chain, e.g.
    ``optim.chain(optim.clip_by_global_norm(1.0), optim.scale_by_adam(), kl_lr.transform)``); the rate
    lives in the optimizer state and :meth:`adapt` moves it from a measured KL: divided by
    ``factor`` when ``kl > 2 target_kl``, multiplied by it when ``0 < kl < target_kl / 2``,
    unchanged otherwise, then clamped to ``[min_lr, max_lr]``. :func:`trainer` calls
    :meth:`adapt` with each minibatch's ``kl_approx`` when given ``kl_adaptive_lr=``.

    Unlike TorchRL, a non-finite KL is not rejected (that check would sync with the host): it
    leaves the rate unchanged (NaN) or divides it (+inf).
    """

    learning_rate: float
    target_kl: float
    factor: float = 1.5
    min_lr: float = 1e-5
    max_lr: float = 1e-2

    def __post_init__(self) -> None:
        owner = "KLAdaptiveLR"
        if not (math.isfinite(self.target_kl) and self.target_kl > 0):
            raise ValueError(f"{owner}: target_kl must be finite and > 0, got {self.target_kl}")
        if not (math.isfinite(self.factor) and self.factor > 1.0):
            raise ValueError(f"{owner}: factor must be finite and > 1, got {self.factor}")
        if not (0 < self.min_lr <= self.max_lr and math.isfinite(self.max_lr)):
            raise ValueError(
                f"{owner}: expected 0 < min_lr <= max_lr < inf, got min_lr={self.min_lr} and "
                f"max_lr={self.max_lr}"
            )
        if not self.min_lr <= self.learning_rate <= self.max_lr:
            raise ValueError(
                f"{owner}: learning_rate must be in [min_lr, max_lr] = [{self.min_lr}, "
                f"{self.max_lr}], got {self.learning_rate}"
            )

    @property
    def transform(self):
        """The optax-style ``(init, update)`` pair: ``update`` scales by ``-learning_rate``."""
        from funcrl.optim import GradientTransformation

        def init(params: Any) -> KLAdaptiveLRState:
            first = tree.leaves(params)[0]
            return KLAdaptiveLRState(torch.tensor(self.learning_rate, device=first.device))

        def update(grads: Any, state: KLAdaptiveLRState, params: Any = None):
            lr = state.learning_rate
            return tree.map(lambda g: g * (-lr).to(g.dtype), grads), state

        return GradientTransformation(init, update)

    def new_rate(self, lr: torch.Tensor, kl: torch.Tensor) -> torch.Tensor:
        """The adapted rate for a measured KL (0-d tensors; a ``torch.where``, no host sync)."""
        kl = kl.detach().to(lr.dtype)
        up = (kl > 0) & (kl < 0.5 * self.target_kl)
        lr = torch.where(kl > 2.0 * self.target_kl, lr / self.factor, lr)
        lr = torch.where(up, lr * self.factor, lr)
        return lr.clamp(self.min_lr, self.max_lr)

    def adapt(self, opt_state: Any, kl: torch.Tensor) -> Any:
        """``opt_state`` with every :class:`KLAdaptiveLRState` in it adapted to ``kl``."""

        def walk(s: Any) -> Any:
            if isinstance(s, KLAdaptiveLRState):
                return KLAdaptiveLRState(self.new_rate(s.learning_rate, kl))
            if isinstance(s, tuple) and hasattr(s, "_fields"):
                return type(s)(*(walk(x) for x in s))
            if isinstance(s, (tuple, list)):
                return type(s)(walk(x) for x in s)
            if isinstance(s, dict):
                return {k: walk(v) for k, v in s.items()}
            return s

        return walk(opt_state)


def _permutation(key: torch.Tensor | None, n: int, device: Any) -> torch.Tensor:
    if key is None:
        return torch.randperm(n, device=device)
    return _random.permutation(key, n)


def minibatch_draws(
    key: torch.Tensor, epochs: int, num_minibatches: int, n: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`trainer`'s shuffles and minibatch keys for one update, drawn in one batched call.

    Per epoch ``e``, ``trainer`` splits ``split(key, epochs)[e]`` into a permutation key and
    ``num_minibatches`` loss keys; minibatch ``m`` takes rows ``perm[m * size:(m + 1) * size]``
    (``size = n / num_minibatches``). Threefry is elementwise, so drawing every epoch at once
    under ``vmap`` gives the same bits, and a compiled graph holds one generator, not one per
    epoch.

    Args:
        key: the update's key ``[2]``.
        epochs: passes over the rollout.
        num_minibatches: minibatches per epoch (must divide ``n``).
        n: samples in the flattened rollout.

    Returns:
        ``(index [epochs * num_minibatches, size] int64, keys [epochs * num_minibatches, 2])``
        in step order.
    """
    for name, v in (("epochs", epochs), ("num_minibatches", num_minibatches), ("n", n)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"on_policy.minibatch_draws: {name} must be an int >= 1, got {v!r}")
    if n % num_minibatches:
        raise ValueError(
            f"on_policy.minibatch_draws: n={n} samples do not split into "
            f"num_minibatches={num_minibatches} equal minibatches"
        )
    sub = torch.func.vmap(lambda k: _random.split(k, num_minibatches + 1))(
        _random.split(key, epochs)
    )
    perms = torch.func.vmap(lambda k: _random.permutation(k, n))(sub[:, 0])
    index = perms.reshape(epochs * num_minibatches, n // num_minibatches)
    return index, sub[:, 1:].reshape(epochs * num_minibatches, *key.shape)


def trainer(
    loss_fn: Callable[..., Mapping[str, torch.Tensor]],
    optimizer: Any,
    *,
    advantage_fn: Callable[[Params, Record], Record] | None,
    epochs: int = 4,
    num_minibatches: int = 4,
    trainable: Sequence[str] = ("actor", "critic"),
    state_keys: Sequence[str] = (),
    kl_adaptive_lr: KLAdaptiveLR | None = None,
) -> Trainer:
    """Epochs of shuffled minibatch updates over one rollout, as one pure function.

    ``step(params, state, rollout, key)``:

    1. ``rollout = advantage_fn(params, rollout)`` once, with the params before the update (as
       PPO does; ``None`` when the rollout already holds ``advantage`` and ``value_target``).
    2. The rollout's batch dims are flattened to ``N`` samples; for each of ``epochs`` epochs a
       permutation of ``N`` (``funcrl.random.permutation`` of a key split from ``key``; the
       global torch RNG when ``key`` is ``None``) cuts it into ``num_minibatches`` minibatches of
       ``N / num_minibatches``, each one gradient step on ``total_loss(loss_fn(params, mb,
       key=k))``.
    3. ``state_keys`` are non-trainable params the loss adapts (PPO's ``kl_beta``): after each
       minibatch ``params[k] = losses[k]``.
    4. With ``kl_adaptive_lr`` (the :class:`KLAdaptiveLR` inside ``optimizer``), the learning rate
       adapts to each minibatch's ``losses["kl_approx"]`` after its step.

    The loops are over static counts (unrolled by ``torch.compile``; 4 x 4 is fine) and the
    permutation is a tensor, so ``step`` compiles with ``fullgraph=True`` and vmaps over seeds.

    Returns:
        ``Trainer(init, step)``; ``metrics`` holds every loss entry averaged over the
        minibatches of the last epoch, detached.
    """
    for name, v in (("epochs", epochs), ("num_minibatches", num_minibatches)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"on_policy.trainer: {name} must be an int >= 1, got {v!r}")
    one = _minibatch_trainer(
        "on_policy.trainer", loss_fn, optimizer, trainable, state_keys, kl_adaptive_lr
    )

    def step(params: Params, state: TrainState, rollout: Record, key: Any = None):
        if not isinstance(rollout, Record) or rollout.batch_ndim == 0:
            raise ValueError(
                "on_policy.trainer.step: rollout must be a funcrl.Record with batch dims, got "
                f"{type(rollout).__name__}"
                + (" with batch_ndim=0" if isinstance(rollout, Record) else "")
            )
        if advantage_fn is not None:
            rollout = advantage_fn(params, rollout)
        flat = rollout.reshape(-1) if rollout.batch_ndim != 1 else rollout
        n = flat.batch_size[0]
        if n % num_minibatches:
            raise ValueError(
                f"on_policy.trainer.step: the rollout's {n} samples do not split into "
                f"num_minibatches={num_minibatches} equal minibatches"
            )
        size = n // num_minibatches
        inner = state
        metrics: dict[str, torch.Tensor] = {}
        epoch_keys = _random.split_optional(key, epochs)
        device = tree.leaves(params)[0].device
        for e in range(epochs):
            perm_key, *mb_keys = _random.split_optional(epoch_keys[e], num_minibatches + 1)
            perm = _permutation(perm_key, n, device)
            sums: dict[str, torch.Tensor] = {}
            for m in range(num_minibatches):
                mb = flat[perm[m * size : (m + 1) * size]]
                params, inner, losses = one.step(params, inner, mb, mb_keys[m])
                for k, v in losses.items():
                    # Per-sample entries (td_error, kl) are not averaged; one-element ones are.
                    if v.numel() == 1:
                        v = v.detach().reshape(())
                        sums[k] = sums[k] + v if k in sums else v
            metrics = {k: v / num_minibatches for k, v in sums.items()}
        return params, TrainState(inner.opt, state.step + 1), metrics

    return Trainer(one.init, step)


def minibatch_trainer(
    loss_fn: Callable[..., Mapping[str, torch.Tensor]],
    optimizer: Any,
    *,
    trainable: Sequence[str] = ("actor", "critic"),
    state_keys: Sequence[str] = (),
    kl_adaptive_lr: KLAdaptiveLR | None = None,
) -> Trainer:
    """One gradient step of :func:`trainer` on one minibatch, as a ``Trainer`` of its own.

    ``step(params, state, minibatch, key)`` is exactly what :func:`trainer` does per minibatch
    (the same function: the loss with ``key``, the optimizer, ``state_keys``, ``kl_adaptive_lr``)
    and counts ``state.step`` per minibatch; ``init`` is :func:`trainer`'s. A host loop that calls
    it over :func:`minibatch_draws`'s rows and keys reproduces :func:`trainer`'s update, with
    one small graph to compile instead of ``epochs x num_minibatches`` unrolled steps.

    Returns:
        ``Trainer(init, step)``; ``step`` returns the minibatch's loss dict as its metrics.
    """
    return _minibatch_trainer(
        "on_policy.minibatch_trainer", loss_fn, optimizer, trainable, state_keys, kl_adaptive_lr
    )


def _minibatch_trainer(
    owner: str,
    loss_fn: Callable[..., Mapping[str, torch.Tensor]],
    optimizer: Any,
    trainable: Sequence[str],
    state_keys: Sequence[str],
    kl_adaptive_lr: KLAdaptiveLR | None,
) -> Trainer:
    # owner: the public function whose name the errors carry.
    from funcrl.optim import apply_updates, multi_transform

    trainable = tuple(trainable)
    state_keys = tuple(state_keys)
    opt = multi_transform(optimizer) if isinstance(optimizer, Mapping) else optimizer

    def init(params: Params) -> TrainState:
        missing = [k for k in trainable if k not in params]
        if missing:
            raise KeyError(f"{owner}: params lack {missing}; they have {sorted(params)}")
        first = tree.leaves({k: params[k] for k in trainable})[0]
        return TrainState(
            opt.init({k: params[k] for k in trainable}),
            torch.zeros((), dtype=torch.int64, device=first.device),
        )

    def step(params: Params, state: TrainState, minibatch: Record, key: Any = None):
        train_params = {k: params[k] for k in trainable}

        def objective(p):
            losses = loss_fn({**params, **p}, minibatch, key=key)
            return total_loss(losses), losses

        grads, losses = grad(objective, has_aux=True)(train_params)
        updates, opt_state = opt.update(grads, state.opt, train_params)
        params = {**params, **apply_updates(train_params, updates)}
        for k in state_keys:
            params[k] = losses[k].detach()
        if kl_adaptive_lr is not None:
            opt_state = kl_adaptive_lr.adapt(opt_state, losses["kl_approx"])
        return params, TrainState(opt_state, state.step + 1), losses

    return Trainer(init, step)
