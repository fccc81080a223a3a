"""Static-config networks: a frozen dataclass of sizes plus pure ``init`` and ``__call__``.

Every network in funcrl follows one protocol::

    net = MLP(in_features=3, out_features=2, num_cells=(64, 64), activation="relu")
    params = net.init(0)              # a plain pytree of tensors; never stored in `net`
    y = net(params, x)                # pure: same params and x, same y

A network object holds no tensors, is hashable, and is a constant to ``torch.compile``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any, Union

import torch
import torch.nn.functional as F

__all__ = [
    "Module",
    "Params",
    "Activation",
    "Linear",
    "MLP",
    "LayerNorm",
    "activation_fn",
    "make_generator",
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


class Module:
    """Base protocol of funcrl networks (subclasses are frozen dataclasses).

    Subclasses implement ``init(seed, *, device, dtype) -> params`` and
    ``__call__(params, *inputs) -> output``.
    """

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
        if x.shape[-1:] != (self.in_features,):
            raise ValueError(
                f"Linear: input x has shape {tuple(x.shape)}, expected [..., {self.in_features}]"
            )
        return F.linear(x, params["weight"], params.get("bias"))


def _orthogonal(shape: tuple[int, int], gain: float, gen: torch.Generator) -> torch.Tensor:
    rows, cols = shape
    flat = torch.randn(max(rows, cols), min(rows, cols), generator=gen, dtype=torch.float64)
    q, r = torch.linalg.qr(flat)
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
    if rows < cols:
        q = q.T
    return gain * q[:rows, :cols]


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
        self, params: Params, x: torch.Tensor, *, train: bool = False, noise: Params | None = None
    ) -> torch.Tensor:
        """Applies the MLP; ``noise`` (from ``sample_noise``) perturbs noisy layers, ``None``: mean."""
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"MLP: input x has last dim {x.shape[-1]}, expected in_features={self.in_features}"
                f" (x.shape={tuple(x.shape)})"
            )
        act = activation_fn(self.activation)
        layers = params["layers"]
        n = len(layers)
        if self.norm is not None and len(params.get("norms", ())) != len(self.norm_sizes):
            raise ValueError(
                f"MLP: params['norms'] has {len(params.get('norms', ()))} entries, expected "
                f"{len(self.norm_sizes)} (sizes {self.norm_sizes}: one per hidden layer, plus the "
                f"output layer's when activate_last_layer=True, TorchRL's layout)"
            )
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
                    x = F.dropout(x, self.dropout, training=train)
                if self.norm == "layer":
                    norm = params["norms"][i]
                    x = F.layer_norm(x, (x.shape[-1],), norm["weight"], norm["bias"])
                x = act(x)
        if len(self.out_shape) != 1:
            x = x.reshape(*x.shape[:-1], *self.out_shape)
        return x
