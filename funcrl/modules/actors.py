"""Actors and value operators: TorchRL's keyed policy/critic modules as pure functions.

* :class:`Actor` -- deterministic policy, ``observation -> action``.
* :class:`ProbabilisticActor` -- ``net -> distribution params -> distribution -> sample``, with
  ``return_log_prob`` and the interaction type (``"deterministic"``, ``"mode"``, ``"mean"``,
  ``"median"``, ``"random"``) chosen by a call argument instead of a global context.
* :class:`TanhModule` -- bounded deterministic output, ``tanh`` scaled to ``[low, high]``.
* :class:`ValueOperator` -- ``V(s) -> "state_value"``, ``Q(s, a) -> "state_action_value"``.
* :class:`ActorValueOperator`, :class:`ActorCriticOperator`, :class:`ActorCriticWrapper` -- a
  shared trunk with policy and value heads; ``get_policy_operator()`` etc. return views that
  take the same params dict.
* :class:`MultiStepActorWrapper` -- an actor emitting ``[*batch, n_steps, ...]`` action chunks,
  consumed one step at a time with a counter kept in the record.
* :class:`DecisionTransformerInferenceWrapper` -- masks a Decision Transformer's context to the
  last ``inference_context`` steps and keeps the last prediction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
import torch.distributions as D

from funcrl import random
from funcrl.modules.keyed import (
    Keyed,
    Sequential,
    as_keys,
    check_interaction,
    read_key,
    spec_for,
    spec_items,
)
from funcrl.nn.core import Module, Params, make_generator
from funcrl.record import NestedKey, Record

__all__ = [
    "Actor",
    "ProbabilisticActor",
    "TanhModule",
    "ValueOperator",
    "ActorValueOperator",
    "ActorCriticOperator",
    "ActorCriticWrapper",
    "MultiStepActorWrapper",
    "DecisionTransformerInferenceWrapper",
    "add_suffix",
    "dist_sample",
]


def add_suffix(key: NestedKey, suffix: str) -> NestedKey:
    """``"action" -> "action_log_prob"``, ``("agents", "action") -> ("agents", "action_log_prob")``."""
    if isinstance(key, str):
        return key + suffix
    return (*key[:-1], key[-1] + suffix)


def _replace_last(key: NestedKey, new: str) -> NestedKey:
    if isinstance(key, str):
        return new
    return (*key[:-1], new)


# ---------------------------------------------------------------------------------------- Actor


@dataclasses.dataclass(frozen=True, eq=False)
class Actor(Keyed):
    """A deterministic actor: :class:`Keyed` with TorchRL's default keys.

    Args:
        net: the policy network, ``net(params, *inputs) -> action``.
        in_keys: defaults to ``("observation",)``.
        out_keys: defaults to ``("action",)``.
        spec: the action spec (a leaf spec describes ``out_keys[0]``).
        safe: project the action onto the spec.

    Example:
        >>> actor = Actor(MLP(4, 2), spec=Bounded(-1.0, 1.0, shape=(2,)), safe=True)
        >>> out = actor(actor.init(0), Record({"observation": torch.randn(3, 4)}, batch_ndim=1))
        >>> out["action"].shape
        torch.Size([3, 2])
    """

    in_keys: Any = ("observation",)
    out_keys: Any = ("action",)


@dataclasses.dataclass(frozen=True, eq=False)
class ValueOperator(Keyed):
    """A value network with TorchRL's default keys.

    ``out_keys`` defaults to ``("state_action_value",)`` when ``"action"`` is among ``in_keys``
    (a Q-function ``Q(s, a)``) and to ``("state_value",)`` otherwise (``V(s)``).

    Shapes:
        ``record[in_keys] -> [*batch, 1]`` for the usual scalar value heads.
    """

    in_keys: Any = ("observation",)
    out_keys: Any = None

    def __post_init__(self) -> None:
        if self.out_keys is None:
            ins = as_keys(self.in_keys, "ValueOperator.in_keys")
            default = "state_action_value" if "action" in ins else "state_value"
            object.__setattr__(self, "out_keys", (default,))
        super().__post_init__()


# ---------------------------------------------------------------------------- ProbabilisticActor


def _is_real_support(dist: Any) -> bool:
    try:
        support = dist.support
    except (AttributeError, NotImplementedError):
        return True  # TorchRL falls back on "mean" when a distribution has no support
    while isinstance(support, D.constraints.independent):
        support = support.base_constraint
    return isinstance(support, D.constraints._Real)


def dist_sample(
    dist: Any,
    interaction: str,
    n_empirical_estimate: int = 1000,
    *,
    key: torch.Tensor | None = None,
) -> torch.Tensor:
    """Draws the value an actor outputs under ``interaction`` (TorchRL's ``_dist_sample``).

    * ``"deterministic"``: ``dist.deterministic_sample`` if it exists, otherwise the mean for
      real-valued distributions and the mode for the others;
    * ``"mode"`` / ``"median"`` / ``"mean"``: the property of that name; a missing mean falls
      back to the mean of ``n_empirical_estimate`` samples (this one samples);
    * ``"random"``: ``rsample()`` when the distribution has it, else ``sample()``.

    Draws come from ``key`` (a :func:`funcrl.random.key`) when given, else from the global
    torch RNG.
    """
    check_interaction(interaction, "dist_sample")
    if interaction == "deterministic":
        if hasattr(dist, "deterministic_sample"):
            return dist.deterministic_sample
        interaction = "mean" if _is_real_support(dist) else "mode"
    if interaction in ("mode", "median"):
        try:
            return getattr(dist, interaction)
        except (AttributeError, NotImplementedError) as e:
            raise NotImplementedError(
                f"{type(dist).__name__} has no {interaction}; use another interaction type"
            ) from e
    if interaction == "mean":
        try:
            return dist.mean
        except (AttributeError, NotImplementedError):
            pass
        draws = (n_empirical_estimate,)
        return _draw(dist, draws, key).mean(0)
    return _draw(dist, (), key)


def _draw(dist: Any, shape: tuple[int, ...], key: torch.Tensor | None) -> torch.Tensor:
    # key=None calls the distribution exactly as before, so torch.distributions objects work too.
    if key is None:
        return dist.rsample(shape) if dist.has_rsample else dist.sample(shape)
    return dist.rsample(shape, key=key) if dist.has_rsample else dist.sample(shape, key=key)


def _freeze_kwargs(kwargs: Mapping[str, Any] | None) -> tuple[tuple[str, Any], ...]:
    if kwargs is None:
        return ()
    if isinstance(kwargs, tuple):
        return kwargs
    return tuple(kwargs.items())


def _default_distribution() -> type:
    from funcrl.distributions import Delta

    return Delta


@dataclasses.dataclass(frozen=True, init=False, eq=False)
class ProbabilisticActor(Module):
    """A stochastic policy: ``module`` writes distribution params, the actor samples from them.

    ``actor(params, record, interaction=None)`` runs ``module(params, record)``, builds
    ``distribution_class(**{kw: record[key]}, **distribution_kwargs)`` and writes the value
    chosen by the interaction type to ``out_keys[0]`` (see :func:`dist_sample`). With
    ``return_log_prob=True`` it also writes ``dist.log_prob(sample)`` to ``log_prob_key``
    (TorchRL 0.14's default ``"action_log_prob"``: ``out_key + "_log_prob"``; TorchRL no longer
    writes ``"sample_log_prob"``).

    TorchRL's ``cache_dist`` is implicit: the distribution params stay in the returned record, so
    :meth:`dist_from_record` rebuilds the distribution that produced a stored sample (e.g. for a
    PPO ratio or KL), and :meth:`log_prob` evaluates a stored action under new params.

    Composite distributions (TorchRL's ``CompositeDistribution``): pass
    ``distribution_map={name: class}`` and ``in_keys="params"``; the params of ``name`` are the
    entries of ``record["params", name]`` (``name`` may be a nested key), each sample is written
    to ``name`` (or ``name_map[name]``) and each log-prob to ``name + "_log_prob"``.

    Args:
        module: keyed module writing the distribution params (``None``: they are already in the
            record and the actor has no params).
        in_keys: the record keys holding the params, named as the distribution's keyword
            arguments (``["loc", "scale"]``; a nested key's last element is the keyword), or a
            mapping ``{keyword: record_key}``.
        out_keys: where samples are written (default ``("action",)``, or the composite names).
        spec: the action spec (for ``safe`` projection).
        safe: project the sample onto the spec (the log-prob is that of the raw sample, as in
            TorchRL where the projection is a hook run after the module).
        distribution_class: defaults to :class:`funcrl.distributions.Delta`; any class with
            ``log_prob`` and the properties above works, including ``torch.distributions`` ones.
        distribution_kwargs: extra constructor arguments (e.g. ``{"low": -1.0, "high": 1.0}``).
        distribution_map, name_map: composite distributions (see above).
        return_log_prob: also write the log-probability of the sample.
        log_prob_key: where to write it (single distribution only).
        default_interaction: used when the call passes ``interaction=None`` (TorchRL's
            ``default_interaction_type``, ``"deterministic"``).
        n_empirical_estimate: draws for the empirical mean fallback.
    """

    module: Any
    dist_keys: tuple[tuple[str, NestedKey], ...]
    sample_keys: tuple[NestedKey, ...]
    spec: Any
    safe: bool
    distribution_class: Any
    distribution_kwargs: tuple[tuple[str, Any], ...]
    distribution_map: tuple[tuple[NestedKey, Any], ...] | None
    return_log_prob: bool
    log_prob_key: NestedKey | None
    default_interaction: str
    n_empirical_estimate: int

    def __init__(
        self,
        module: Any,
        in_keys: Any,
        out_keys: Any = None,
        *,
        spec: Any = None,
        safe: bool = False,
        distribution_class: Any = None,
        distribution_kwargs: Mapping[str, Any] | None = None,
        distribution_map: Mapping[NestedKey, Any] | None = None,
        name_map: Mapping[NestedKey, NestedKey] | None = None,
        return_log_prob: bool = False,
        log_prob_key: NestedKey | None = None,
        default_interaction: str = "deterministic",
        n_empirical_estimate: int = 1000,
    ) -> None:
        owner = "ProbabilisticActor"
        check_interaction(default_interaction, owner)
        if default_interaction is None:
            raise ValueError(f"{owner}: default_interaction cannot be None")
        if isinstance(in_keys, Mapping):
            dist_keys = tuple(
                (kw, as_keys([k], f"{owner}.in_keys")[0]) for kw, k in in_keys.items()
            )
        else:
            keys = as_keys(in_keys, f"{owner}.in_keys")
            dist_keys = tuple((k if isinstance(k, str) else k[-1], k) for k in keys)
        if not dist_keys:
            raise ValueError(f"{owner}: in_keys must name the distribution params")
        dmap = None
        if distribution_map is not None:
            if len(dist_keys) != 1:
                raise ValueError(
                    f"{owner}: a composite distribution reads one root key (e.g. 'params'), "
                    f"got in_keys={[k for _, k in dist_keys]}"
                )
            dmap = tuple((as_keys([n], owner)[0], c) for n, c in distribution_map.items())
            names = dict(name_map or {})
            default_out = tuple(names.get(n, n) for n, _ in dmap)
            if log_prob_key is not None:
                raise ValueError(
                    f"{owner}: log_prob_key is for a single distribution; a composite one writes "
                    "'<sample key>_log_prob' per sample"
                )
        else:
            default_out = ("action",)
        sample_keys = default_out if out_keys is None else as_keys(out_keys, f"{owner}.out_keys")
        if dmap is not None and len(sample_keys) != len(dmap):
            raise ValueError(
                f"{owner}: out_keys {list(sample_keys)} must have one key per distribution "
                f"in distribution_map ({len(dmap)})"
            )
        specs = spec_items(spec, sample_keys, owner)
        if safe and not specs:
            raise ValueError(f"{owner}: safe=True requires a spec")
        if dmap is None and log_prob_key is None:
            log_prob_key = add_suffix(sample_keys[0], "_log_prob")
        values = dict(
            module=module,
            dist_keys=dist_keys,
            sample_keys=sample_keys,
            spec=specs,
            safe=safe,
            distribution_class=distribution_class,
            distribution_kwargs=_freeze_kwargs(distribution_kwargs),
            distribution_map=dmap,
            return_log_prob=return_log_prob,
            log_prob_key=log_prob_key,
            default_interaction=default_interaction,
            n_empirical_estimate=n_empirical_estimate,
        )
        for k, v in values.items():
            object.__setattr__(self, k, v)

    # -- keys
    @property
    def in_keys(self) -> tuple[NestedKey, ...]:
        mod_in = tuple(getattr(self.module, "in_keys", ())) if self.module is not None else ()
        mod_out = tuple(getattr(self.module, "out_keys", ())) if self.module is not None else ()
        extra = tuple(k for _, k in self.dist_keys if k not in mod_out and k not in mod_in)
        return mod_in + extra

    @property
    def log_prob_keys(self) -> tuple[NestedKey, ...]:
        if self.distribution_map is not None:
            return tuple(add_suffix(k, "_log_prob") for k in self.sample_keys)
        return (self.log_prob_key,)

    @property
    def out_keys(self) -> tuple[NestedKey, ...]:
        mod_out = tuple(getattr(self.module, "out_keys", ())) if self.module is not None else ()
        lp = self.log_prob_keys if self.return_log_prob else ()
        return mod_out + self.sample_keys + lp

    # -- params
    def init(self, seed=0, *, device=None, dtype=torch.float32) -> Params:
        if self.module is None or not hasattr(self.module, "init"):
            return {}
        return self.module.init(make_generator(seed), device=device, dtype=dtype)

    # -- distributions
    def _build(self, cls: Any, kwargs: dict[str, Any], extra: tuple) -> Any:
        cls = _default_distribution() if cls is None else cls
        try:
            return cls(**kwargs, **dict(extra))
        except TypeError as e:
            raise TypeError(
                f"ProbabilisticActor: cannot build {getattr(cls, '__name__', cls)} from the "
                f"record entries {sorted(kwargs)} and distribution_kwargs "
                f"{sorted(k for k, _ in extra)}: {e}"
            ) from e

    def dist_from_record(self, record: Record) -> Any:
        """The distribution whose params are in ``record`` (no network call).

        Returns a distribution, or for a composite one a ``dict`` ``{name: distribution}``.
        """
        owner = "ProbabilisticActor"
        if self.distribution_map is None:
            kwargs = {kw: read_key(record, key, owner) for kw, key in self.dist_keys}
            return self._build(self.distribution_class, kwargs, self.distribution_kwargs)
        root = read_key(record, self.dist_keys[0][1], owner)
        dists = {}
        for name, cls in self.distribution_map:
            sub = read_key(root, name, owner) if isinstance(root, Record) else None
            if not isinstance(sub, Record):
                raise KeyError(
                    f"{owner}: composite params for {name!r} must be a nested Record under "
                    f"{self.dist_keys[0][1]!r}"
                )
            dists[name] = self._build(cls, dict(sub.items()), ())
        return dists

    def get_dist(self, params: Params, record: Record, **options: Any) -> Any:
        """Runs the module and returns the distribution (TorchRL's ``get_dist``)."""
        return self.dist_from_record(self._params_record(params, record, **options))

    def _params_record(self, params: Params, record: Record, **options: Any) -> Record:
        if not isinstance(record, Record):
            raise TypeError(
                f"ProbabilisticActor: expected a funcrl.Record, got {type(record).__name__}"
            )
        if self.module is None:
            return record
        return self.module(params, record, **options)

    def log_prob(self, params: Params, record: Record, **options: Any) -> Any:
        """Log-probability of the sample(s) already in ``record`` under the current params.

        Returns a tensor, or for a composite distribution a ``dict`` ``{sample_key: log_prob}``.
        """
        dist = self.get_dist(params, record, **options)
        if self.distribution_map is None:
            return dist.log_prob(read_key(record, self.sample_keys[0], "ProbabilisticActor"))
        return {
            key: dist[name].log_prob(read_key(record, key, "ProbabilisticActor"))
            for (name, _), key in zip(self.distribution_map, self.sample_keys)
        }

    def __call__(
        self,
        params: Params,
        record: Record,
        *,
        interaction: str | None = None,
        key: torch.Tensor | None = None,
        **options: Any,
    ) -> Record:
        """Writes the sample (and log-prob); draws from ``key`` when given, else the global RNG.

        A composite distribution draws its ``i``-th component from ``split(key, n)[i]``.
        """
        check_interaction(interaction, "ProbabilisticActor")
        record = self._params_record(params, record, interaction=interaction, **options)
        how = self.default_interaction if interaction is None else interaction
        dist = self.dist_from_record(record)
        if self.distribution_map is None:
            pairs = [(dist, self.sample_keys[0], self.log_prob_key)]
        else:
            pairs = [
                (dist[name], key, add_suffix(key, "_log_prob"))
                for (name, _), key in zip(self.distribution_map, self.sample_keys)
            ]
        if key is None:
            keys = [None] * len(pairs)
        elif len(pairs) == 1:
            keys = [key]
        else:
            keys = list(random.split(key, len(pairs)).unbind(0))
        for (d, out_key, lp_key), k in zip(pairs, keys):
            sample = dist_sample(d, how, self.n_empirical_estimate, key=k)
            if self.return_log_prob:
                record = record.set(lp_key, d.log_prob(sample))
            if self.safe:
                s = spec_for(self.spec, out_key)
                if s is not None:
                    sample = s.project(sample)
            record = record.set(out_key, sample)
        return record


# ------------------------------------------------------------------------------------ TanhModule


@dataclasses.dataclass(frozen=True, eq=False)
class TanhModule(Module):
    """Bounded deterministic output: ``low + (high - low) * (tanh(x) + 1) / 2``.

    The bounds come from ``low``/``high`` (floats or tensors), or from the spec's ``.low`` /
    ``.high`` (a Bounded spec), or default to ``[-1, 1]``. Given both, they must agree.

    Args:
        in_keys: keys of the unbounded inputs.
        out_keys: where to write (defaults to ``in_keys``: in place).
        spec: a leaf spec used for every out_key, or a mapping ``{out_key: spec}``.
        low, high: explicit bounds.
        clamp: clamp ``tanh(x)`` to ``[-1 + eps, 1 - eps]`` with ``eps = finfo.resolution``, so
            the output never reaches the bounds.

    Params: none (``{}``).
    """

    in_keys: Any
    out_keys: Any = None
    spec: Any = None
    low: Any = None
    high: Any = None
    clamp: bool = False

    def __post_init__(self) -> None:
        ins = as_keys(self.in_keys, "TanhModule.in_keys")
        outs = ins if self.out_keys is None else as_keys(self.out_keys, "TanhModule.out_keys")
        if len(ins) != len(outs):
            raise ValueError(
                f"TanhModule: in_keys and out_keys must have the same length, got {list(ins)} "
                f"and {list(outs)}"
            )
        if (
            self.spec is None
            or isinstance(self.spec, (Mapping, tuple))
            or (type(self.spec).__name__ == "Composite")
        ):
            items = spec_items(self.spec, outs, "TanhModule")
        else:
            items = tuple((k, self.spec) for k in outs)
        bounds = []
        for key in outs:
            leaf = spec_for(items, key)
            low = self._bound(self.low, leaf, "low", -1.0)
            high = self._bound(self.high, leaf, "high", 1.0)
            if bool((high < low).any()):
                raise ValueError(f"TanhModule: got high < low for {key!r}: {high} < {low}")
            bounds.append((key, low, high))
        object.__setattr__(self, "in_keys", ins)
        object.__setattr__(self, "out_keys", outs)
        object.__setattr__(self, "spec", items)
        object.__setattr__(self, "_bounds", tuple(bounds))

    @staticmethod
    def _bound(given: Any, leaf: Any, name: str, default: float) -> torch.Tensor:
        from_spec = None if leaf is None else getattr(leaf, name, None)
        if given is None and from_spec is None:
            return torch.tensor(default)
        if given is None:
            return torch.as_tensor(from_spec)
        given = torch.as_tensor(given)
        if from_spec is not None and bool((given != torch.as_tensor(from_spec)).any()):
            raise ValueError(
                f"TanhModule: {name}={given} does not match the spec's {name}={from_spec}"
            )
        return given

    def init(self, seed=0, *, device=None, dtype=torch.float32) -> Params:
        return {}

    def __call__(self, params: Params, record: Record, **options: Any) -> Record:
        for in_key, (out_key, low, high) in zip(self.in_keys, self._bounds):
            x = read_key(record, in_key, "TanhModule")
            t = torch.tanh(x)
            if self.clamp:
                eps = torch.finfo(t.dtype).resolution
                t = t.clamp(-1 + eps, 1 - eps)
            low = low.to(device=t.device, dtype=t.dtype)
            high = high.to(device=t.device, dtype=t.dtype)
            record = record.set(out_key, low + (high - low) * (t + 1) / 2)
        return record


# --------------------------------------------------------------------------- actor-critic combos


class ActorValueOperator(Sequential):
    """A shared trunk (``common``) feeding a policy head and a value head.

    Params: ``{"common": ..., "policy": ..., "value": ...}``. Calling it runs all three.
    ``get_policy_operator()`` and ``get_value_operator()`` are named Sequentials over
    ``common`` + one head; they accept the same params dict (each reads only its members).

    Args:
        common_operator: keyed module producing the shared features (e.g. ``"hidden"``).
        policy_operator: keyed actor reading the features.
        value_operator: keyed value module reading the features.
    """

    def __init__(self, common_operator: Any, policy_operator: Any, value_operator: Any) -> None:
        super().__init__(
            {"common": common_operator, "policy": policy_operator, "value": value_operator}
        )

    def get_policy_operator(self) -> Sequential:
        """``common -> policy``: a standalone policy (takes the whole params dict)."""
        return Sequential({"common": self["common"], "policy": self["policy"]})

    def get_value_operator(self) -> Sequential:
        """``common -> value``: a standalone value network (takes the whole params dict)."""
        return Sequential({"common": self["common"], "value": self["value"]})

    def get_policy_head(self) -> Any:
        """The policy head alone (its params are ``params["policy"]``)."""
        return self["policy"]

    def get_value_head(self) -> Any:
        """The value head alone (its params are ``params["value"]``)."""
        return self["value"]


class ActorCriticOperator(ActorValueOperator):
    """Like :class:`ActorValueOperator`, the head being a critic ``Q(s, a)`` fed the action.

    Calling it runs trunk, policy and critic (the critic reads the policy's action).
    ``get_critic_operator()`` is the whole model; ``get_value_operator()`` raises, as in TorchRL.
    """

    def __init__(self, common_operator: Any, policy_operator: Any, value_operator: Any) -> None:
        out = tuple(getattr(value_operator, "out_keys", ()))
        if out and out[0] == "state_value":
            raise ValueError(
                "ActorCriticOperator: the value head writes 'state_value'; a critic writes "
                "'state_action_value' and reads 'action'. Use ActorValueOperator for V(s)."
            )
        super().__init__(common_operator, policy_operator, value_operator)

    def get_critic_operator(self) -> ActorCriticOperator:
        """The whole ``common -> policy -> critic`` model."""
        return self

    def get_value_operator(self) -> Sequential:
        raise RuntimeError(
            "ActorCriticOperator computes Q(s, a), not a state value: use get_critic_operator()"
        )


class ActorCriticWrapper(Sequential):
    """An actor and a critic with no shared trunk.

    Params: ``{"policy": ..., "value": ...}``. ``get_policy_operator()`` /
    ``get_value_operator()`` are one-member named Sequentials that take the same params dict;
    ``get_policy_head()`` / ``get_value_head()`` are the raw modules.
    """

    def __init__(self, policy_operator: Any, value_operator: Any) -> None:
        super().__init__({"policy": policy_operator, "value": value_operator})

    def get_policy_operator(self) -> Sequential:
        return Sequential({"policy": self["policy"]})

    def get_value_operator(self) -> Sequential:
        return Sequential({"value": self["value"]})

    def get_policy_head(self) -> Any:
        return self["policy"]

    def get_value_head(self) -> Any:
        return self["value"]


# ------------------------------------------------------------------------ MultiStepActorWrapper


@dataclasses.dataclass(frozen=True, eq=False)
class MultiStepActorWrapper(Module):
    """Executes an actor's action chunks one step at a time (TorchRL's ``MultiStepActorWrapper``).

    The actor writes ``action_key`` with shape ``[*batch, n_steps, *action_shape]`` (the time
    dim right after the record's batch dims). The wrapper caches the chunk in
    ``action_key + "_orig"`` and a step counter in ``"counter"`` (beside ``init_key``), both
    ``[*batch, ...]`` entries of the record, and writes the current step's action to
    ``action_key``. A batch element re-plans (its cache is replaced by the actor's new chunk)
    where ``record[init_key]`` is True or its counter reached ``replan_interval`` (default
    ``n_steps``).

    Being pure, the wrapper calls the actor on the whole batch at every step and selects with
    ``torch.where``: no host sync, so it compiles and vmaps. TorchRL instead calls the actor
    only on the rows that re-plan. A first call without a cache uses the new chunk everywhere.

    Args:
        actor: keyed module producing the chunk(s).
        n_steps: expected chunk length (checked), ``None`` to accept any.
        action_keys: chunked keys (default: the actor's out_keys ending in ``"action"``).
        init_key: ``[*batch, 1]`` bool entry flagging the first step of an episode.
        keep_dim: keep a length-1 time dim in the emitted action.
        replan_interval: re-query every this many steps (``1 <= replan_interval <= n_steps``).
    """

    actor: Any
    n_steps: int | None = None
    action_keys: Any = None
    init_key: NestedKey = "is_init"
    keep_dim: bool = False
    replan_interval: int | None = None

    def __post_init__(self) -> None:
        if self.action_keys is None:
            keys = tuple(
                k
                for k in getattr(self.actor, "out_keys", ())
                if (k if isinstance(k, str) else k[-1]) == "action"
            )
            if not keys:
                raise ValueError(
                    "MultiStepActorWrapper: no actor out_key ends with 'action'; pass action_keys"
                )
        else:
            keys = as_keys(self.action_keys, "MultiStepActorWrapper.action_keys")
        object.__setattr__(self, "action_keys", keys)
        if self.replan_interval is not None and (
            self.replan_interval < 1
            or (self.n_steps is not None and self.replan_interval > self.n_steps)
        ):
            raise ValueError(
                f"MultiStepActorWrapper: replan_interval must be in [1, n_steps={self.n_steps}], "
                f"got {self.replan_interval}"
            )

    @property
    def counter_key(self) -> NestedKey:
        return _replace_last(self.init_key, "counter")

    def cache_key(self, action_key: NestedKey) -> NestedKey:
        return add_suffix(action_key, "_orig")

    @property
    def in_keys(self) -> tuple[NestedKey, ...]:
        return (*getattr(self.actor, "in_keys", ()), self.init_key)

    @property
    def out_keys(self) -> tuple[NestedKey, ...]:
        caches = tuple(self.cache_key(k) for k in self.action_keys)
        return (*self.action_keys, *caches, self.counter_key)

    def init(self, seed=0, *, device=None, dtype=torch.float32) -> Params:
        if not hasattr(self.actor, "init"):
            return {}
        return self.actor.init(make_generator(seed), device=device, dtype=dtype)

    def __call__(self, params: Params, record: Record, **options: Any) -> Record:
        owner = "MultiStepActorWrapper"
        is_init = read_key(record, self.init_key, owner).to(torch.bool)
        counter = record.get(self.counter_key)
        if counter is None:
            counter = is_init.to(torch.int32)
        interval = self.replan_interval if self.replan_interval is not None else self.n_steps
        replan = is_init if interval is None else is_init | (counter >= interval)
        counter = counter.masked_fill(replan, 0) + 1
        chunks = self.actor(params, record, **options)
        bnd = record.batch_ndim
        batch = record.batch_size
        for key in self.action_keys:
            chunk = read_key(chunks, key, owner)
            if chunk.ndim <= bnd:
                raise ValueError(
                    f"{owner}: the actor's {key!r} has shape {tuple(chunk.shape)}: expected a time "
                    f"dim after the batch dims {tuple(batch)}"
                )
            steps = chunk.shape[bnd]
            if self.n_steps is not None and steps != self.n_steps:
                raise ValueError(
                    f"{owner}: the actor's {key!r} has {steps} steps at dim {bnd}, expected "
                    f"n_steps={self.n_steps} (shape {tuple(chunk.shape)})"
                )
            cache_key = self.cache_key(key)
            if cache_key in record:
                cached = record[cache_key]
                where = replan.reshape(*batch, *([1] * (chunk.ndim - bnd)))
                chunk = torch.where(where, chunk, cached)
            record = record.set(cache_key, chunk)
            index = (counter - 1).to(torch.long).reshape(batch)
            if self.n_steps is None and self.replan_interval is None:
                index = index.remainder(steps)
            index = index.reshape(*batch, 1, *([1] * (chunk.ndim - bnd - 1)))
            action = chunk.gather(bnd, index.expand(*batch, 1, *chunk.shape[bnd + 1 :]))
            if not self.keep_dim:
                action = action.squeeze(bnd)
            record = record.set(key, action)
        return record.set(self.counter_key, counter)


# ------------------------------------------------------------ DecisionTransformerInferenceWrapper


@dataclasses.dataclass(frozen=True, eq=False)
class DecisionTransformerInferenceWrapper(Module):
    """Rolling-context inference for a Decision Transformer policy.

    The record holds ``observation`` ``[*batch, T, obs_dim]``, ``action`` ``[*batch, T, act_dim]``
    and ``return_to_go`` ``[*batch, T, 1]`` (the context as event dims). Entries older than the
    last ``inference_context`` steps are zeroed, the actions are shifted one step left (the
    last slot, the action to predict, is zero), the policy runs, and the returned record holds
    the last step's ``out_action_key`` ``[*batch, act_dim]`` and ``return_to_go``
    ``[*batch, 1]``, with the unmasked observation.

    Args:
        policy: keyed module reading the three keys.
        inference_context: number of most recent steps kept.
        observation_key, action_key, return_to_go_key, out_action_key: the keys.
    """

    policy: Any
    inference_context: int = 5
    observation_key: NestedKey = "observation"
    action_key: NestedKey = "action"
    return_to_go_key: NestedKey = "return_to_go"
    out_action_key: NestedKey = "action"

    def __post_init__(self) -> None:
        if self.inference_context < 1:
            raise ValueError(
                f"DecisionTransformerInferenceWrapper: inference_context must be >= 1, got "
                f"{self.inference_context}"
            )

    @property
    def in_keys(self) -> tuple[NestedKey, ...]:
        return (self.observation_key, self.action_key, self.return_to_go_key)

    @property
    def out_keys(self) -> tuple[NestedKey, ...]:
        keys = list(getattr(self.policy, "out_keys", ()))
        for k in self.in_keys:
            if k not in keys:
                keys.append(k)
        return tuple(keys)

    def init(self, seed=0, *, device=None, dtype=torch.float32) -> Params:
        if not hasattr(self.policy, "init"):
            return {}
        return self.policy.init(make_generator(seed), device=device, dtype=dtype)

    def mask_context(self, record: Record) -> Record:
        """Zeroes all but the last ``inference_context`` steps and shifts the actions left."""
        owner = "DecisionTransformerInferenceWrapper"
        obs = read_key(record, self.observation_key, owner)
        action = read_key(record, self.action_key, owner)
        rtg = read_key(record, self.return_to_go_key, owner)
        if not obs.shape[:-1] == action.shape[:-1] == rtg.shape[:-1]:
            raise ValueError(
                f"{owner}: observation {tuple(obs.shape)}, action {tuple(action.shape)} and "
                f"return_to_go {tuple(rtg.shape)} must share all dims but the last"
            )
        steps = obs.shape[-2]
        t = torch.arange(steps, device=obs.device).unsqueeze(-1)
        keep = t >= steps - self.inference_context
        # TorchRL keeps one action fewer: the last slot is the one being predicted.
        keep_action = t >= steps - (self.inference_context - 1)
        action = torch.where(keep_action, action, torch.zeros((), dtype=action.dtype))
        action = torch.cat([action[..., 1:, :], torch.zeros_like(action[..., :1, :])], dim=-2)
        return record.update(
            {
                self.observation_key: torch.where(keep, obs, torch.zeros((), dtype=obs.dtype)),
                self.action_key: action,
                self.return_to_go_key: torch.where(keep, rtg, torch.zeros((), dtype=rtg.dtype)),
            }
        )

    def __call__(self, params: Params, record: Record, **options: Any) -> Record:
        owner = "DecisionTransformerInferenceWrapper"
        obs = read_key(record, self.observation_key, owner)
        if obs.ndim < record.batch_ndim + 2:
            raise ValueError(
                f"{owner}: observation {tuple(obs.shape)} needs a context dim after the batch "
                f"dims {tuple(record.batch_size)}"
            )
        out = self.policy(params, self.mask_context(record), **options)
        out_action = read_key(out, self.out_action_key, owner)[..., -1, :]
        out_rtg = read_key(out, self.return_to_go_key, owner)[..., -1, :]
        return out.update(
            {
                self.out_action_key: out_action,
                self.return_to_go_key: out_rtg,
                self.observation_key: obs,
            }
        )
