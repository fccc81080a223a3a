"""Keyed modules: pure functions from ``(params, Record)`` to a new ``Record``.

TorchRL's ``TensorDictModule`` reads some keys of a TensorDict, calls a network and writes its
outputs back in place. funcrl's :class:`Keyed` does the same without mutation::

    actor = Keyed(MLP(3, 2), in_keys=["observation"], out_keys=["action"])
    params = actor.init(0)                 # the network's params, nothing else
    out = actor(params, record)            # a new Record with "action" added; `record` unchanged

Every keyed module in :mod:`funcrl.modules` follows the same protocol:

* ``init(seed=0, *, device=None, dtype=torch.float32) -> params`` (``{}`` when it has none);
* ``mod(params, record, **options) -> Record`` where ``options`` are call-time switches shared by
  all modules and forwarded untouched by :class:`Sequential`: ``interaction`` (``"deterministic"``,
  ``"mode"``, ``"mean"``, ``"median"``, ``"random"`` or ``None`` for the module's default; TorchRL's
  global ``set_interaction_type`` / ``set_exploration_type`` as an argument) and ``train``
  (dropout). A module ignores the options it does not use;
* ``in_keys`` / ``out_keys`` tuples describing what it reads and writes.

Modules are frozen dataclasses holding only static configuration, so they are constants to
``torch.compile`` and pass through ``torch.func.vmap`` / ``grad`` as closures.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from funcrl.nn.core import Module, Params, make_generator
from funcrl.record import NestedKey, Record

__all__ = [
    "Keyed",
    "Sequential",
    "VmapModule",
    "as_keys",
    "read_key",
    "spec_items",
    "spec_for",
    "INTERACTION_TYPES",
    "check_interaction",
]

INTERACTION_TYPES = ("deterministic", "mode", "mean", "median", "random")


def check_interaction(interaction: str | None, owner: str) -> None:
    """Raises a clear error when ``interaction`` is not one of :data:`INTERACTION_TYPES`."""
    if interaction is not None and interaction not in INTERACTION_TYPES:
        raise ValueError(
            f"{owner}: interaction must be None or one of {INTERACTION_TYPES}, got {interaction!r}"
        )


def _one_key(key: Any, what: str) -> NestedKey:
    if isinstance(key, str):
        return key
    if isinstance(key, tuple) and key and all(isinstance(k, str) for k in key):
        return key[0] if len(key) == 1 else key
    raise TypeError(f"{what}: keys are str or non-empty tuples of str, got {key!r}")


def as_keys(keys: NestedKey | Iterable[NestedKey] | None, what: str) -> tuple[NestedKey, ...]:
    """Normalises a key argument to a tuple of keys.

    A ``str`` is one key; a list or tuple is a sequence of keys, each a ``str`` or a tuple of
    ``str`` (a nested key). A single nested key is therefore written ``[("next", "obs")]``.
    """
    if keys is None:
        return ()
    if isinstance(keys, str):
        return (keys,)
    if isinstance(keys, (list, tuple)):
        return tuple(_one_key(k, what) for k in keys)
    raise TypeError(f"{what}: expected a key or a list of keys, got {type(keys).__name__}")


def _available(record: Record) -> list[str]:
    return sorted(map(str, record.keys(include_nested=True)))


def read_key(record: Record, key: NestedKey, owner: str) -> Any:
    """``record[key]``, raising a ``KeyError`` naming ``owner``, the key and the available keys."""
    if not isinstance(record, Record):
        raise TypeError(f"{owner}: expected a funcrl.Record, got {type(record).__name__}")
    if key not in record:
        raise KeyError(
            f"{owner}: in_key {key!r} not found in the record; available keys: {_available(record)}"
        )
    return record[key]


def spec_items(spec: Any, out_keys: tuple[NestedKey, ...], owner: str) -> tuple[tuple, ...]:
    """Normalises a spec argument to ``((key, leaf_spec), ...)``.

    ``spec`` may be ``None``, a leaf spec (it describes ``out_keys[0]``, like TorchRL's
    ``Composite(action=spec)`` wrapping), a mapping ``{key: spec}`` or a ``funcrl.specs.Composite``.
    """
    if spec is None:
        return ()
    if isinstance(spec, tuple) and all(isinstance(p, tuple) and len(p) == 2 for p in spec):
        return spec  # already normalised
    if isinstance(spec, Mapping):
        return tuple((_one_key(k, owner), s) for k, s in spec.items() if s is not None)
    if type(spec).__name__ == "Composite":
        keys = spec.keys(include_nested=True, leaves_only=True)
        return tuple((_one_key(k, owner), spec[k]) for k in keys if spec[k] is not None)
    if not out_keys:
        raise ValueError(f"{owner}: a leaf spec needs at least one out_key")
    return ((out_keys[0], spec),)


def spec_for(items: tuple[tuple, ...], key: NestedKey) -> Any:
    """The leaf spec of ``key`` in normalised ``items`` (``None`` when absent)."""
    for k, s in items:
        if k == key:
            return s
    return None


def project(record: Record, items: tuple[tuple, ...], keys: Iterable[NestedKey]) -> Record:
    """Projects the entries ``keys`` of ``record`` that have a spec onto it (``safe=True``)."""
    for key in keys:
        s = spec_for(items, key)
        if s is not None and key in record:
            record = record.set(key, s.project(record[key]))
    return record


def _init_member(module: Any, gen: torch.Generator, device: Any, dtype: torch.dtype) -> Params:
    init = getattr(module, "init", None)
    if init is None:
        return {}
    return init(gen, device=device, dtype=dtype)


def _as_record(record: Any, owner: str) -> Record:
    if not isinstance(record, Record):
        raise TypeError(f"{owner}: expected a funcrl.Record, got {type(record).__name__}")
    return record


@dataclasses.dataclass(frozen=True, eq=False)
class Keyed(Module):
    """A network read from and written to a Record (TorchRL's ``TensorDictModule``/``SafeModule``).

    ``mod(params, record)`` reads ``in_keys`` in order, calls ``net(params, *inputs)`` and writes the
    output(s) to ``out_keys``: a tuple output maps element-wise to several keys and ``"_"`` drops
    an element. Nothing is mutated; the result is a new Record.

    Args:
        net: a funcrl network (``init`` + ``__call__(params, *inputs)``) or any callable
            ``f(params, *inputs)``; without ``init`` the module has no params (``{}``).
        in_keys: keys read from the record and passed positionally (nested keys as tuples).
        out_keys: keys written, one per output of ``net``; ``"_"`` drops that output.
        spec: output spec(s): a leaf spec for ``out_keys[0]``, a mapping ``{key: spec}`` or a
            ``Composite``.
        safe: project every output that has a spec onto it (``spec.project``), as TorchRL's
            ``safe=True``. Requires a spec.
        forward_options: names of call options (e.g. ``("train",)``) forwarded to ``net`` as
            keyword arguments, so ``Sequential(...)(params, rec, train=True)`` reaches an MLP's
            dropout.

    Raises:
        KeyError: when an in_key is missing (the message lists the available keys).
        ValueError: when the number of outputs does not match ``out_keys``.
    """

    net: Callable[..., Any]
    in_keys: Any
    out_keys: Any
    spec: Any = None
    safe: bool = False
    forward_options: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        name = type(self).__name__
        object.__setattr__(self, "in_keys", as_keys(self.in_keys, f"{name}.in_keys"))
        object.__setattr__(self, "out_keys", as_keys(self.out_keys, f"{name}.out_keys"))
        object.__setattr__(self, "spec", spec_items(self.spec, self.out_keys, name))
        object.__setattr__(self, "forward_options", tuple(self.forward_options))
        if not self.out_keys:
            raise ValueError(f"{name}: out_keys must name at least one key")
        if self.safe and not self.spec:
            raise ValueError(f"{name}: safe=True requires a spec to project the outputs onto")

    def init(self, seed=0, *, device=None, dtype=torch.float32) -> Params:
        return _init_member(self.net, make_generator(seed), device, dtype)

    def __call__(self, params: Params, record: Record, **options: Any) -> Record:
        name = type(self).__name__
        record = _as_record(record, name)
        inputs = [read_key(record, k, name) for k in self.in_keys]
        kwargs = {k: options[k] for k in self.forward_options if k in options}
        out = self.net(params, *inputs, **kwargs)
        return self._write(record, out)

    def _write(self, record: Record, out: Any) -> Record:
        outs = out if isinstance(out, tuple) else (out,)
        if len(outs) != len(self.out_keys):
            raise ValueError(
                f"{type(self).__name__}: the net returned {len(outs)} output(s) but out_keys has "
                f"{len(self.out_keys)}: {list(self.out_keys)}"
            )
        for key, value in zip(self.out_keys, outs):
            if key == "_":
                continue
            if self.safe:
                s = spec_for(self.spec, key)
                if s is not None:
                    value = s.project(value)
            record = record.set(key, value)
        return record


def _in_out_keys(modules: Iterable[Any]) -> tuple[tuple[NestedKey, ...], tuple[NestedKey, ...]]:
    ins: list[NestedKey] = []
    outs: list[NestedKey] = []
    for m in modules:
        for k in getattr(m, "in_keys", ()):
            if k not in outs and k not in ins:
                ins.append(k)
        for k in getattr(m, "out_keys", ()):
            if k not in outs and k != "_":
                outs.append(k)
    return tuple(ins), tuple(outs)


@dataclasses.dataclass(frozen=True, init=False)
class Sequential(Module):
    """Keyed modules run one after the other (TorchRL's ``TensorDictSequential``/``SafeSequential``).

    ``Sequential(a, b)`` takes params as a tuple ``(params_a, params_b)``;
    ``Sequential({"trunk": a, "head": b})`` takes a dict ``{"trunk": ..., "head": ...}``. A named
    Sequential reads only its own names from the params dict, so a view over some members of a
    larger model (``get_policy_operator()``) accepts the whole model's params.

    Call options (``interaction``, ``train``, ...) are forwarded to every member.

    Attributes:
        modules: the members, in call order.
        names: the params keys of a named Sequential (``None`` for a positional one).
        in_keys: keys read from the input record (those no earlier member writes).
        out_keys: keys written by any member.
    """

    modules: tuple[Any, ...]
    names: tuple[str, ...] | None

    def __init__(self, *modules: Any) -> None:
        if len(modules) == 1 and isinstance(modules[0], Mapping):
            names = tuple(modules[0].keys())
            mods = tuple(modules[0].values())
            if not all(isinstance(n, str) for n in names):
                raise TypeError(f"Sequential: member names must be str, got {names!r}")
        else:
            names, mods = None, tuple(modules)
        if not mods:
            raise ValueError("Sequential: needs at least one module")
        for i, m in enumerate(mods):
            if not callable(m):
                raise TypeError(f"Sequential: member {i} is not callable: {m!r}")
        object.__setattr__(self, "modules", mods)
        object.__setattr__(self, "names", names)

    @property
    def in_keys(self) -> tuple[NestedKey, ...]:
        return _in_out_keys(self.modules)[0]

    @property
    def out_keys(self) -> tuple[NestedKey, ...]:
        return _in_out_keys(self.modules)[1]

    def __len__(self) -> int:
        return len(self.modules)

    def __getitem__(self, index: int | str) -> Any:
        """A member by position, or by name for a named Sequential."""
        if isinstance(index, str):
            if self.names is None or index not in self.names:
                raise KeyError(f"Sequential: no member named {index!r}; names are {self.names}")
            return self.modules[self.names.index(index)]
        return self.modules[index]

    def init(self, seed=0, *, device=None, dtype=torch.float32) -> Params:
        # One generator threaded through the members: each gets different weights from one seed.
        gen = make_generator(seed)
        ps = [_init_member(m, gen, device, dtype) for m in self.modules]
        if self.names is None:
            return tuple(ps)
        return dict(zip(self.names, ps))

    def member_params(self, params: Params) -> tuple[Params, ...]:
        """The params of each member, in order, checked against the Sequential's layout."""
        if self.names is None:
            if not isinstance(params, (tuple, list)) or len(params) != len(self.modules):
                got = len(params) if isinstance(params, (tuple, list)) else type(params).__name__
                raise ValueError(
                    f"Sequential: params must be a tuple with one entry per member "
                    f"({len(self.modules)}), got {got}"
                )
            return tuple(params)
        if not isinstance(params, Mapping):
            raise TypeError(
                f"Sequential: a named Sequential takes a dict of params with keys "
                f"{list(self.names)}, got {type(params).__name__}"
            )
        missing = [n for n in self.names if n not in params]
        if missing:
            raise KeyError(
                f"Sequential: params lack the member(s) {missing}; got keys {sorted(params)}"
            )
        return tuple(params[n] for n in self.names)

    def __call__(self, params: Params, record: Record, **options: Any) -> Record:
        record = _as_record(record, "Sequential")
        for m, p in zip(self.modules, self.member_params(params)):
            record = m(p, record, **options)
        return record


@dataclasses.dataclass(frozen=True, eq=False)
class VmapModule(Module):
    """Runs a keyed module under ``torch.func.vmap`` over one batch dim of its input Record.

    TorchRL's ``VmapModule``: the wrapped module sees records with one batch dim fewer (e.g. a
    module written for a single agent applied to ``[batch, n_agents]`` records). The params are
    shared (not vmapped); to vmap params too, use :class:`funcrl.nn.Ensemble`.

    Args:
        module: a keyed module.
        vmap_dim: the batch dim to map over (default: the last batch dim, as TorchRL).
        randomness: ``torch.func.vmap``'s randomness (``"error"``, ``"different"``, ``"same"``);
            use ``"different"`` for modules that sample.
    """

    module: Any
    vmap_dim: int | None = None
    randomness: str = "error"

    @property
    def in_keys(self) -> tuple[NestedKey, ...]:
        return tuple(self.module.in_keys)

    @property
    def out_keys(self) -> tuple[NestedKey, ...]:
        return tuple(self.module.out_keys)

    def init(self, seed=0, *, device=None, dtype=torch.float32) -> Params:
        return _init_member(self.module, make_generator(seed), device, dtype)

    def __call__(self, params: Params, record: Record, **options: Any) -> Record:
        record = _as_record(record, "VmapModule")
        bnd = record.batch_ndim
        if bnd == 0:
            raise ValueError("VmapModule: the record has no batch dimension to vmap over")
        dim = bnd - 1 if self.vmap_dim is None else self.vmap_dim
        if not -bnd <= dim < bnd:
            raise ValueError(f"VmapModule: vmap_dim={dim} out of range for batch_ndim={bnd}")
        dim = dim % bnd

        def one(rec: Record) -> Record:
            return self.module(params, rec, **options)

        return torch.func.vmap(one, in_dims=(dim,), out_dims=dim, randomness=self.randomness)(
            record
        )
