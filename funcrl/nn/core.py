"""Static-config networks: a frozen dataclass of sizes plus pure ``init`` and ``__call__``.

Every network in funcrl follows one protocol::

    net = MLP(in_features=3, out_features=2, num_cells=(64, 64), activation="relu")
    params = net.init(0)              # a plain pytree of tensors; never stored in `net`
    y = net(params, x)                # pure: same params and x, same y

A network object holds no tensors, is hashable, and is a constant to ``torch.compile``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, Union

import torch
import torch.nn.functional as F

from funcrl._tracing import is_tracing

__all__ = [
    "Module",
    "Params",
    "Activation",
    "Linear",
    "MLP",
    "LayerNorm",
    "activation_fn",
    "make_generator",
    "check_input",
    "net_name",
]

Params = Any  # a pytree of tensors
Activation = Union[str, Callable[[torch.Tensor], torch.Tensor]]
Seed = Union[int, torch.Generator]

_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "elu": F.elu,
    "selu": F.selu,
    "gelu": F.gelu,
    "silu": F.silu,
    "swish": F.silu,
    "mish": F.mish,
    "sigmoid": torch.sigmoid,
    "softplus": F.softplus,
    "leaky_relu": F.leaky_relu,
    "identity": lambda x: x,
    "none": lambda x: x,
}


def activation_fn(activation: Activation) -> Callable[[torch.Tensor], torch.Tensor]:
    """Resolves an activation given by name (``"relu"``, ``"tanh"``, ...) or as a callable.

    ``torch.nn.Module`` classes such as ``torch.nn.ReLU`` are accepted too (instantiated once).
    """
    if isinstance(activation, str):
        try:
            return _ACTIVATIONS[activation.lower()]
        except KeyError:
            raise ValueError(
                f"activation: unknown name {activation!r}; expected one of {sorted(_ACTIVATIONS)}"
            ) from None
    if isinstance(activation, type) and issubclass(activation, torch.nn.Module):
        return activation()
    if callable(activation):
        return activation
    raise TypeError(f"activation must be a name or a callable, got {type(activation).__name__}")


def make_generator(seed: Seed | None, device: torch.device | str | None = None) -> torch.Generator:
    """A ``torch.Generator`` from an int seed, a :func:`funcrl.random.key`, or the generator
    itself (never the global RNG).

    A key ``[k0, k1]`` seeds the generator with the 64-bit ``k0 * 2**32 + k1`` (read on the host:
    ``init`` is not traced), so ``key(s)`` and the int ``s`` give the same weights.
    """
    if isinstance(seed, torch.Generator):
        return seed
    if seed is None:
        seed = 0
    if isinstance(seed, torch.Tensor):
        from funcrl.random import _check_key

        k0, k1 = _check_key("funcrl.nn.make_generator", seed, "seed").tolist()
        seed = (k0 << 32) | k1
    if not isinstance(seed, int):
        raise TypeError(
            f"seed must be an int or a torch.Generator, got {type(seed).__name__} (or pass a "
            "funcrl.random key)"
        )
    return torch.Generator(device="cpu").manual_seed(seed)


def _uniform(
    shape: Sequence[int], bound: float, gen: torch.Generator, device, dtype
) -> torch.Tensor:
    # Sample on CPU with the CPU generator so a seed gives the same weights on every device.
    return (
        (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1)
        .mul_(bound)
        .to(device=device, dtype=dtype)
    )


def net_name(net: Any) -> str:
    """A short name for error messages: the class and the config fields that differ from their
    defaults, e.g. ``MLP(in_features=3, out_features=2, num_cells=(16, 16))``."""
    if not dataclasses.is_dataclass(net) or isinstance(net, type):
        return type(net).__name__
    parts = []
    for f in dataclasses.fields(net):
        if not f.repr:
            continue
        value = getattr(net, f.name)
        if f.default is not dataclasses.MISSING and _same(value, f.default):
            continue
        nested = dataclasses.is_dataclass(value) and not isinstance(value, type)
        shown = net_name(value) if nested else repr(value)
        parts.append(f"{f.name}={shown}")
    return f"{type(net).__name__}({', '.join(parts)})"


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # e.g. a torch.nn.Module field compared with a tensor
        return a is b


def _signature(tree: Any) -> Any:
    """The structure of a params tree with each tensor replaced by ``(shape, is_floating)``.

    Plain nested Python values, so comparing two signatures is one ``==`` in C, and pure Python on
    static shapes: ``torch.compile`` evaluates it while tracing (a guard, no graph op) and under
    ``vmap`` a leaf's shape is its per-member shape. Lists and tuples are the same container.
    """
    # Inner nodes (dicts) are the most frequent: test them first.
    if isinstance(tree, dict):
        return {k: _signature(v) for k, v in tree.items()}
    if isinstance(tree, torch.Tensor):
        return (tree.shape, tree.is_floating_point())
    if isinstance(tree, (list, tuple)):
        return [_signature(v) for v in tree]
    return tree


# Expected signature per net config: nets hashed by value (frozen ``eq`` dataclasses all the
# way down, see ``_keyed_by_value``), so equal configs share one entry.
_SIGNATURES: dict[Any, Any] = {}


def _hashed_by_fields(cls: type) -> bool:
    """Whether CPython gives instances of ``cls`` a field-wise hash (a frozen ``eq`` dataclass)."""
    params = getattr(cls, "__dataclass_params__", None)
    return params is not None and (params.unsafe_hash or (params.eq and params.frozen))


def _keyed_by_value(obj: Any) -> bool:
    """Whether ``obj`` hashes by value all the way down, so it may key :data:`_SIGNATURES`.

    An ``eq=False`` dataclass hashes by identity: as a key it would keep every instance alive
    and never be shared, and ``torch.compile`` reading the table hashes each key field by field
    (torch 2.11 for every key of a dict it reads), failing on an unhashable field such as an
    exploration module's ``Bounded`` spec. Such nets are checked without the cache.
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        if not _hashed_by_fields(type(obj)):
            return False
        return all(_keyed_by_value(getattr(obj, f.name)) for f in dataclasses.fields(obj))
    if isinstance(obj, (tuple, frozenset)):
        return all(_keyed_by_value(v) for v in obj)
    try:
        hash(obj)
    except TypeError:
        return False
    return True


# Where a net not keyed by value keeps its own signature (set once, outside any trace).
_OWN_SIGNATURE = "_funcrl_param_signature"


def _remember_signature(net: Any, sig: Any, *, replace: bool = True) -> None:
    """Records ``net``'s signature: in :data:`_SIGNATURES` when the net is keyed by value, else
    on the instance itself (an identity-hashed net, e.g. a ``TorchModule``, whose entry in a
    shared table would keep it alive and which ``torch.compile`` may fail to hash)."""
    if _keyed_by_value(net):
        if replace:
            _SIGNATURES[net] = sig
        else:
            _SIGNATURES.setdefault(net, sig)
        return
    if not replace and getattr(net, _OWN_SIGNATURE, None) is not None:
        return
    try:
        object.__setattr__(net, _OWN_SIGNATURE, sig)  # frozen dataclasses: bypass __setattr__
    except (AttributeError, TypeError):  # a net without an instance dict: not cached
        pass


def _path_str(path: tuple[Any, ...]) -> str:
    return "params" + "".join(f"[{k!r}]" for k in path)


def _kind(sig: Any) -> str:
    if isinstance(sig, dict):
        return f"a dict with keys {sorted(sig, key=str)}"
    if isinstance(sig, list):
        return f"a list/tuple of {len(sig)} entries"
    if isinstance(sig, tuple) and len(sig) == 2 and isinstance(sig[0], torch.Size):
        return f"a tensor of shape {tuple(sig[0])}"
    return repr(sig)


def _first_difference(expected: Any, given: Any, path: tuple[Any, ...] = ()) -> str | None:
    """Where ``given`` (a params tree) first differs from the ``expected`` signature, in words."""
    where = _path_str(path)
    if isinstance(expected, dict):
        if not isinstance(given, dict):
            return f"{where}: expected {_kind(expected)}, got {type(given).__name__}"
        missing = [k for k in expected if k not in given]
        extra = [k for k in given if k not in expected]
        if missing or extra:
            return (
                f"{where}: expected keys {sorted(expected, key=str)}, got {sorted(given, key=str)}"
                f" (missing {missing}, unexpected {extra})"
            )
        for k in expected:
            diff = _first_difference(expected[k], given[k], (*path, k))
            if diff is not None:
                return diff
        return None
    if isinstance(expected, list):
        if not isinstance(given, (list, tuple)):
            return f"{where}: expected {_kind(expected)}, got {type(given).__name__}"
        if len(given) != len(expected):
            return f"{where}: expected {len(expected)} entries, got {len(given)}"
        for i, (e, g) in enumerate(zip(expected, given)):
            diff = _first_difference(e, g, (*path, i))
            if diff is not None:
                return diff
        return None
    if isinstance(expected, tuple) and len(expected) == 2 and isinstance(expected[0], torch.Size):
        shape, floating = expected
        if not isinstance(given, torch.Tensor):
            return f"{where}: expected {_kind(expected)}, got {type(given).__name__}"
        if given.shape != shape:
            hint = ""
            if given.dim() > len(shape) and given.shape[given.dim() - len(shape) :] == shape:
                hint = (
                    " (extra leading dims: stacked members go through funcrl.nn.Ensemble or "
                    "funcrl.nn.ensemble.vmap_members, which check the member count)"
                )
            return f"{where}: expected shape {tuple(shape)}, got {tuple(given.shape)}{hint}"
        if given.is_floating_point() != floating:
            kind = "a floating-point" if floating else "an integer/bool"
            return f"{where}: expected {kind} tensor, got {given.dtype}"
        return None
    if expected != given:
        return f"{where}: expected {expected!r}, got {given!r}"
    return None


def _fold(key: torch.Tensor | None, i: int) -> torch.Tensor | None:
    from funcrl import random  # lazily: funcrl.random is not needed to build a net

    return random.fold_in_optional(key, i)


def dropout(
    x: torch.Tensor, p: float, *, train: bool, key: torch.Tensor | None = None
) -> torch.Tensor:
    """Inverted dropout: zeroes each entry with probability ``p`` and scales the rest by
    ``1 / (1 - p)`` when ``train``; the identity otherwise.

    The mask comes from ``key`` (:func:`funcrl.random.bernoulli`, reproducible, vmappable) or,
    with ``key=None``, from the global torch RNG (``F.dropout``, TorchRL's draws).
    """
    if not train or p == 0:
        return x
    if key is None:
        return F.dropout(x, p, training=True)
    from funcrl import random

    keep = random.bernoulli(key, 1.0 - p, tuple(x.shape)).to(device=x.device, dtype=x.dtype)
    return x * keep / (1.0 - p)


class Module:
    """Base protocol of funcrl networks (subclasses are frozen dataclasses).

    Subclasses implement ``init(seed, *, device, dtype) -> params`` and
    ``__call__(params, *inputs) -> output``, and start ``__call__`` with
    ``self.check_params(params)``: a net applies only params of its own layout.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("init")
        if init is not None:
            cls.init = _recording(init)

    def init(
        self,
        seed: Seed = 0,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Params:
        raise NotImplementedError

    def __call__(self, params: Params, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def apply(self, params: Params, *args: Any, **kwargs: Any) -> Any:
        """Same as calling the net (``apply = __call__`` would bind this base method)."""
        return self(params, *args, **kwargs)

    def param_template(self) -> Params:
        """A params tree of this net's layout (values unspecified): by default ``init`` on the
        ``meta`` device, so no memory is filled. Override when ``init`` cannot run on ``meta``."""
        return self.init(0, device="meta")

    def param_signature(self) -> Any:
        """The expected structure and leaf shapes of this net's params (computed once per config,
        or recorded by ``init``); ``None`` when unknown while tracing (see :meth:`check_params`)."""
        # Cheap, traceable tests only (no field walk per call): the instance's own entry, then
        # the shared table for classes hashed by their fields.
        sig = getattr(self, _OWN_SIGNATURE, None)
        if sig is not None:
            return sig
        if _hashed_by_fields(type(self)):
            try:
                return _SIGNATURES[self]
            except (KeyError, TypeError):  # not seen yet, or an unhashable field
                pass
        if is_tracing():
            # init cannot run inside a graph (it draws from a torch.Generator).
            return None
        sig = self._template_signature()
        _remember_signature(self, sig)
        return sig

    def _template_signature(self) -> Any:
        # A first call may come inside vmap/grad (e.g. vmap(randomness="error") forbids init's
        # draws): build the template outside every torch.func transform.
        with torch._C._DisableFuncTorch():
            return _signature(self.param_template())

    def check_params(self, params: Params, *, owner: str | None = None) -> None:
        """Raises ``ValueError`` unless ``params`` has exactly this net's tree and leaf shapes.

        The structure and shapes come from this net's own config (:meth:`param_signature`), so
        params of another config (wider layers, a LayerNorm layout, stacked ensemble members)
        are named instead of silently giving a wrong-shaped output. Pure Python on static
        shapes: cheap in eager (a few microseconds on a 3-layer MLP, about 1% of a 2x256 MLP
        forward at batch 256), no graph op under ``torch.compile``, per-member shapes under
        ``vmap``.

        The expected signature is recorded whenever ``init`` runs, or computed on first use in
        eager; a net first called inside ``torch.compile``/``funcrl.jit`` tracing whose config
        was never initialised nor called eagerly in this process is not checked (``init`` cannot
        run inside a graph).

        Args:
            params: the params given to the net.
            owner: prefixed to the message (e.g. ``"sac.loss: nets.qvalue"``).
        """
        expected = self.param_signature()
        if expected is not None and _signature(params) != expected:
            diff = _first_difference(expected, params) or "params differ"
            prefix = f"{owner}: " if owner else ""
            raise ValueError(
                f"{prefix}{net_name(self)}: {diff}; these params do not belong to this net "
                f"(build them with its init)"
            )


def _recording(init: Callable[..., Params]) -> Callable[..., Params]:
    """Wraps a net's ``init`` to record its params' signature, so a net whose params were built
    in this process is checked even when its first call is traced by ``torch.compile``."""
    if getattr(init, "_records_signature", False):
        return init

    @functools.wraps(init)
    def recording_init(self: Module, *args: Any, **kwargs: Any) -> Params:
        params = init(self, *args, **kwargs)
        if not is_tracing():
            _remember_signature(self, _signature(params), replace=False)
        return params

    recording_init._records_signature = True  # type: ignore[attr-defined]
    return recording_init


def check_input(
    net: Any,
    name: str,
    x: Any,
    trailing: int | tuple[int | None, ...] | None,
    like: torch.Tensor | None,
) -> None:
    """Checks an input of ``net`` against its config and params; raises naming net and input.

    Args:
        net: the net (named in the message).
        name: the argument's name (``"x"``, ``"observation"``, ...).
        x: the input.
        trailing: its expected trailing dims (an int: the last dim; ``None`` in a tuple: any
            size), or ``None`` to skip the shape check.
        like: a params tensor whose dtype ``x`` must have (torch would fail with a bare
            ``mat1 and mat2 must have the same dtype``), or ``None`` to skip.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{net_name(net)}: input {name} must be a tensor, got {type(x).__name__}")
    if trailing is not None:
        want = (trailing,) if isinstance(trailing, int) else trailing
        n = len(want)
        got = tuple(x.shape[x.dim() - n :]) if x.dim() >= n else None
        if got is None or any(w is not None and w != g for w, g in zip(want, got)):
            shown = ", ".join("*" if w is None else str(w) for w in want)
            raise ValueError(
                f"{net_name(net)}: input {name} has shape {tuple(x.shape)}, expected [..., {shown}]"
            )
    if like is not None and x.dtype != like.dtype:
        raise TypeError(
            f"{net_name(net)}: input {name} is {x.dtype} but params are {like.dtype}; cast the "
            f"batch with rec.apply(lambda t: t.to({like.dtype})) or init the params in {x.dtype}"
        )


@dataclasses.dataclass(frozen=True)
class Linear(Module):
    """``y = x @ W.T + b`` with ``torch.nn.Linear``'s parameter layout and default init.

    Params: ``{"weight": [out, in], "bias": [out]}`` (no ``"bias"`` when ``bias=False``).

    Args:
        in_features: input size.
        out_features: output size.
        bias: whether the layer has a bias.
        init_method: ``"default"`` (``torch.nn.Linear``'s U(-1/sqrt(in), 1/sqrt(in))),
            ``"orthogonal"`` (weights orthogonal with ``gain``, bias zero) or ``"zeros"``.
        gain: gain of the orthogonal init.
        bias_init: a constant for the bias instead of the default draw (``None`` keeps the default).
    """

    in_features: int
    out_features: int
    bias: bool = True
    init_method: str = "default"
    gain: float = 1.0
    bias_init: float | None = None

    def __post_init__(self) -> None:
        if self.in_features <= 0 or self.out_features <= 0:
            raise ValueError(
                f"Linear: in_features and out_features must be positive, got "
                f"{self.in_features} and {self.out_features}"
            )
        if self.init_method not in ("default", "orthogonal", "zeros"):
            raise ValueError(
                f"Linear: init_method must be 'default', 'orthogonal' or 'zeros', "
                f"got {self.init_method!r}"
            )

    def init(self, seed: Seed = 0, *, device=None, dtype=torch.float32) -> Params:
        gen = make_generator(seed)
        shape = (self.out_features, self.in_features)
        bound = 1.0 / math.sqrt(self.in_features)
        if self.init_method == "default":
            weight = _uniform(shape, bound, gen, device, dtype)
            bias = _uniform((self.out_features,), bound, gen, device, dtype)
        elif self.init_method == "orthogonal":
            weight = _orthogonal(shape, self.gain, gen).to(device=device, dtype=dtype)
            bias = torch.zeros(self.out_features, device=device, dtype=dtype)
        else:
            weight = torch.zeros(shape, device=device, dtype=dtype)
            bias = torch.zeros(self.out_features, device=device, dtype=dtype)
        if self.bias_init is not None:
            bias = torch.full_like(bias, self.bias_init)
        return {"weight": weight, "bias": bias} if self.bias else {"weight": weight}

    def __call__(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        self.check_params(params)
        check_input(self, "x", x, self.in_features, params["weight"])
        return F.linear(x, params["weight"], params.get("bias"))


def _orthogonal(shape: tuple[int, int], gain: float, gen: torch.Generator) -> torch.Tensor:
    rows, cols = shape
    flat = torch.randn(max(rows, cols), min(rows, cols), generator=gen, dtype=torch.float64)
    q, r = torch.linalg.qr(flat)
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
    if rows < cols:
        q = q.T
    # LAPACK's Q is column-major: without the copy the weight would have transposed strides, and
    # funcrl.jit / torch.compile would trace a step twice (once for the fresh params, once for
    # the contiguous ones every update returns).
    return (gain * q[:rows, :cols]).contiguous()


@dataclasses.dataclass(frozen=True)
class LayerNorm(Module):
    """Layer normalisation over the last dimension; params ``{"weight": [n], "bias": [n]}``."""

    normalized_shape: int
    eps: float = 1e-5

    def init(self, seed: Seed = 0, *, device=None, dtype=torch.float32) -> Params:
        n = self.normalized_shape
        return {
            "weight": torch.ones(n, device=device, dtype=dtype),
            "bias": torch.zeros(n, device=device, dtype=dtype),
        }

    def __call__(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        self.check_params(params)
        check_input(self, "x", x, self.normalized_shape, params["weight"])
        return F.layer_norm(x, (self.normalized_shape,), params["weight"], params["bias"], self.eps)


def _as_shape(x: int | Sequence[int]) -> tuple[int, ...]:
    return (x,) if isinstance(x, int) else tuple(x)


@dataclasses.dataclass(frozen=True)
class MLP(Module):
    """A multi-layer perceptron with TorchRL's ``MLP`` arguments.

    Layer ``i`` is ``Linear -> [Dropout] -> [LayerNorm] -> activation``, TorchRL's order; the last
    layer is a bare ``Linear`` unless ``activate_last_layer``, which gives it the whole sequence
    (its norm included, as in TorchRL).

    Params: ``{"layers": [linear_0, ..., linear_depth], "norms": [norm_0, ...]}`` (``"norms"``
    only with ``norm="layer"``: one per hidden layer, plus the output layer's when
    ``activate_last_layer``), each ``linear_i`` in ``torch.nn.Linear``'s layout.

    Args:
        in_features: input size (the last dim of ``x``).
        out_features: output size, an int or a shape (the output is reshaped to ``[..., *shape]``).
        depth: number of hidden layers; inferred from ``num_cells`` when it is a sequence.
        num_cells: hidden width (int, repeated ``depth`` times; ``depth`` is then required) or a
            sequence of widths. As in TorchRL: with neither ``depth`` nor ``num_cells`` the MLP is a
            single linear layer; with ``depth`` alone each hidden layer has 32 cells.
        activation: name or callable (TorchRL's default is ``"tanh"``).
        activate_last_layer: apply the activation after the output layer too.
        dropout: dropout probability on each hidden linear output (``None``: no dropout). Dropout
            draws from the global torch RNG and is only active when called with ``train=True``.
        norm: ``None`` or ``"layer"`` (LayerNorm after each activated linear layer).
        bias_last_layer: whether the output layer has a bias.
        init_method: the init of every linear layer (see :class:`Linear`).
        last_layer_init_scale: multiplies the output layer's initial weights and bias (e.g. 1e-2
            for near-zero initial policies).

    Shapes:
        ``x: [*batch, in_features] -> [*batch, *out_features]``.
    """

    in_features: int
    out_features: int | tuple[int, ...]
    depth: int | None = None
    num_cells: int | tuple[int, ...] | None = None
    activation: Activation = "tanh"
    activate_last_layer: bool = False
    dropout: float | None = None
    norm: str | None = None
    bias_last_layer: bool = True
    init_method: str = "default"
    last_layer_init_scale: float = 1.0
    layer_class: str = "linear"
    std_init: float = 0.5

    def __post_init__(self) -> None:
        # Lists are unhashable: keep the config a compile-time constant.
        if isinstance(self.num_cells, list):
            object.__setattr__(self, "num_cells", tuple(self.num_cells))
        if isinstance(self.out_features, list):
            object.__setattr__(self, "out_features", tuple(self.out_features))
        if self.norm not in (None, "layer"):
            raise ValueError(f"MLP: norm must be None or 'layer', got {self.norm!r}")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"MLP: dropout must be in [0, 1), got {self.dropout}")
        if isinstance(self.num_cells, int) and self.depth is None:
            raise ValueError(
                f"MLP: num_cells={self.num_cells} is an int, so depth must be given too"
            )
        hidden = self.hidden_sizes
        if (
            isinstance(self.num_cells, tuple)
            and self.depth is not None
            and len(hidden) != self.depth
        ):
            raise ValueError(
                f"MLP: depth={self.depth} but num_cells has {len(self.num_cells)} entries"
            )
        activation_fn(self.activation)
        if self.layer_class not in ("linear", "noisy"):
            raise ValueError(
                f"MLP: layer_class must be 'linear' or 'noisy', got {self.layer_class!r}"
            )

    @property
    def hidden_sizes(self) -> tuple[int, ...]:
        if isinstance(self.num_cells, tuple):
            return self.num_cells
        if self.depth is None:
            return ()
        cells = 32 if self.num_cells is None else self.num_cells
        return (cells,) * self.depth

    @property
    def out_shape(self) -> tuple[int, ...]:
        return _as_shape(self.out_features)

    @property
    def norm_sizes(self) -> tuple[int, ...]:
        """Feature sizes of the LayerNorms (``()`` without ``norm``)."""
        if self.norm is None:
            return ()
        last = (math.prod(self.out_shape),) if self.activate_last_layer else ()
        return (*self.hidden_sizes, *last)

    @property
    def layers(self) -> tuple[Linear, ...]:
        sizes = (self.in_features, *self.hidden_sizes, math.prod(self.out_shape))
        n = len(sizes) - 1
        if self.layer_class == "noisy":
            from funcrl.nn.noisy import NoisyLinear

            return tuple(
                NoisyLinear(
                    sizes[i], sizes[i + 1], self.bias_last_layer or i < n - 1, self.std_init
                )
                for i in range(n)
            )
        return tuple(
            Linear(
                sizes[i],
                sizes[i + 1],
                bias=self.bias_last_layer or i < n - 1,
                init_method=self.init_method,
                gain=math.sqrt(2.0) if self.init_method == "orthogonal" and i < n - 1 else 1.0,
            )
            for i in range(n)
        )

    def init(self, seed: Seed = 0, *, device=None, dtype=torch.float32) -> Params:
        gen = make_generator(seed)
        layers = [lin.init(gen, device=device, dtype=dtype) for lin in self.layers]
        if self.last_layer_init_scale != 1.0:
            layers[-1] = {k: v * self.last_layer_init_scale for k, v in layers[-1].items()}
        params: dict[str, Any] = {"layers": layers}
        if self.norm == "layer":
            params["norms"] = [
                LayerNorm(h).init(gen, device=device, dtype=dtype) for h in self.norm_sizes
            ]
        return params

    @property
    def noise_layers(self) -> dict[str, Any]:
        """The noisy layers, for ``funcrl.nn.sample_noise(mlp)`` (``layer_class="noisy"`` only)."""
        if self.layer_class != "noisy":
            raise TypeError("MLP: noise_layers needs layer_class='noisy'")
        return {"layers": list(self.layers)}

    def __call__(
        self,
        params: Params,
        x: torch.Tensor,
        *,
        train: bool = False,
        noise: Params | None = None,
        key: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Applies the MLP; ``noise`` (from ``sample_noise``) perturbs noisy layers, ``None``: mean.
        With ``dropout`` and ``train=True``, ``key`` draws the masks (one ``fold_in`` per layer;
        ``None``: the global RNG)."""
        self.check_params(params)
        layers = params["layers"]
        weight = "weight_mu" if self.layer_class == "noisy" else "weight"
        check_input(self, "x", x, self.in_features, layers[0][weight])
        if noise is not None:
            from funcrl.nn.noisy import check_noise

            if self.layer_class != "noisy":
                raise ValueError(f"{net_name(self)}: noise given but layer_class is not 'noisy'")
            check_noise(self, noise)
        act = activation_fn(self.activation)
        n = len(layers)
        for i, p in enumerate(layers):
            if self.layer_class == "noisy":
                from funcrl.nn.noisy import noisy_weights

                w, b = noisy_weights(p, None if noise is None else noise["layers"][i])
                x = F.linear(x, w, b)
            else:
                x = F.linear(x, p["weight"], p.get("bias"))
            if i < n - 1 or self.activate_last_layer:
                # TorchRL's order (and DroQ's): Linear -> Dropout -> Norm -> activation.
                if self.dropout:
                    x = dropout(x, self.dropout, train=train, key=_fold(key, i))
                if self.norm == "layer":
                    norm = params["norms"][i]
                    x = F.layer_norm(x, (x.shape[-1],), norm["weight"], norm["bias"])
                x = act(x)
        if len(self.out_shape) != 1:
            x = x.reshape(*x.shape[:-1], *self.out_shape)
        return x
