"""Convolutional stacks with TorchRL's ``ConvNet`` / ``Conv3dNet`` arguments, as pure functions.

Layer ``i`` is ``Conv -> activation -> [norm]`` (TorchRL's order), then an aggregator flattens
(``"squash"``, TorchRL's ``SquashDims``) or average-pools (``"avg_pool"``, ``AdaptiveAvgPool`` to
size 1) the spatial dims, then ``squeeze_output`` drops the singleton spatial dims::

    net = ConvNet(in_features=3, num_cells=(32, 64), kernel_sizes=(8, 4), strides=(4, 2))
    params = net.init(0)          # {"layers": [{"weight": [32, 3, 8, 8], "bias": [32]}, ...]}
    y = net(params, x)            # x: [*batch, 3, H, W] -> [*batch, 64 * H' * W']
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from funcrl.nn.core import (
    Activation,
    Module,
    Params,
    Seed,
    _uniform,
    activation_fn,
    check_input,
    make_generator,
)

__all__ = [
    "ConvNet",
    "Conv2dNet",
    "Conv3dNet",
    "SqueezeLayer",
    "Squeeze2dLayer",
    "SquashDims",
    "squeeze",
    "conv_output_size",
]

IntOrTuple = int | tuple[int, ...]


def squeeze(x: torch.Tensor, dims: Sequence[int]) -> torch.Tensor:
    """Squeezes the given negative ``dims`` in order; each must have size 1 (TorchRL's check)."""
    for dim in dims:
        if x.shape[dim] != 1:
            raise ValueError(
                f"squeeze: dims {tuple(dims)} must have size 1, got x.shape={tuple(x.shape)}"
            )
        x = x.squeeze(dim)
    return x


@dataclasses.dataclass(frozen=True)
class SqueezeLayer(Module):
    """Squeezes singleton ``dims`` (all negative); parameter-free: ``init`` returns ``{}``."""

    dims: tuple[int, ...] = (-1,)

    def __post_init__(self) -> None:
        object.__setattr__(self, "dims", tuple(self.dims))
        if any(d >= 0 for d in self.dims):
            raise ValueError(f"SqueezeLayer: dims must all be < 0, got {self.dims}")

    def init(self, seed: Seed = 0, *, device=None, dtype=torch.float32) -> Params:
        return {}

    def __call__(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        self.check_params(params)
        return squeeze(x, self.dims)


@dataclasses.dataclass(frozen=True)
class Squeeze2dLayer(SqueezeLayer):
    """Squeezes the last two (spatial) singleton dims."""

    dims: tuple[int, ...] = (-2, -1)


@dataclasses.dataclass(frozen=True)
class SquashDims(Module):
    """Flattens the last ``ndims_in`` dims into one (TorchRL's ``SquashDims``); no params."""

    ndims_in: int = 3

    def init(self, seed: Seed = 0, *, device=None, dtype=torch.float32) -> Params:
        return {}

    def __call__(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        self.check_params(params)
        check_input(self, "x", x, (None,) * self.ndims_in, None)
        return x.flatten(-self.ndims_in, -1)


def _tuple(v: Any) -> Any:
    return tuple(_tuple(e) for e in v) if isinstance(v, (list, tuple)) else v


def _ntuple(v: IntOrTuple, n: int, name: str) -> tuple[int, ...]:
    if isinstance(v, int):
        return (v,) * n
    if len(v) != n:
        raise ValueError(f"{name}: expected an int or {n} ints, got {v}")
    return tuple(v)


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a convolution along one dim: ``floor((size + 2p - k) / s) + 1``."""
    return (size + 2 * padding - kernel) // stride + 1


@dataclasses.dataclass(frozen=True)
class _ConvStack(Module):
    in_features: int
    depth: int | None = None
    num_cells: int | tuple[int, ...] | None = None
    kernel_sizes: IntOrTuple | tuple[IntOrTuple, ...] = 3
    strides: IntOrTuple | tuple[IntOrTuple, ...] = 1
    paddings: IntOrTuple | tuple[IntOrTuple, ...] = 0
    activation: Activation = "elu"
    norm: str | None = None
    bias_last_layer: bool = True
    aggregator: str | None = "squash"
    squeeze_output: bool = False

    spatial_dims: ClassVar[int] = 2

    def __post_init__(self) -> None:
        name = type(self).__name__
        for f in ("num_cells", "kernel_sizes", "strides", "paddings"):
            object.__setattr__(self, f, _tuple(getattr(self, f)))
        if self.in_features <= 0:
            raise ValueError(f"{name}: in_features must be positive, got {self.in_features}")
        if self.norm not in (None, "layer", "instance"):
            raise ValueError(f"{name}: norm must be None, 'layer' or 'instance', got {self.norm!r}")
        if self.aggregator not in (None, "squash", "avg_pool"):
            raise ValueError(
                f"{name}: aggregator must be None, 'squash' or 'avg_pool', got {self.aggregator!r}"
            )
        n = self.n_layers
        if n == 0:
            raise ValueError(f"{name}: null depth is not permitted")
        for f in ("num_cells", "kernel_sizes", "strides", "paddings"):
            v = getattr(self, f)
            if isinstance(v, tuple) and len(v) != n:
                raise ValueError(f"{name}: depth={n} but {f} has {len(v)} entries: {v}")
        activation_fn(self.activation)

    @property
    def n_layers(self) -> int:
        """Depth: ``depth``, else the length of any per-layer sequence, else 3."""
        if self.depth is not None:
            return self.depth
        for v in (self.num_cells, self.kernel_sizes, self.strides, self.paddings):
            if isinstance(v, tuple):
                return len(v)
        return 3

    def _per_layer(self, value: Any) -> tuple[Any, ...]:
        return value if isinstance(value, tuple) else (value,) * self.n_layers

    @property
    def channels(self) -> tuple[int, ...]:
        cells = 32 if self.num_cells is None else self.num_cells
        return self._per_layer(cells)

    @property
    def layer_configs(self) -> tuple[tuple[int, int, tuple, tuple, tuple, bool], ...]:
        """Per layer: ``(in, out, kernel, stride, padding, bias)`` with per-dim tuples."""
        nd = self.spatial_dims
        ins = (self.in_features, *self.channels[:-1])
        ks, ss, ps = (self._per_layer(v) for v in (self.kernel_sizes, self.strides, self.paddings))
        n = self.n_layers
        return tuple(
            (
                ins[i],
                self.channels[i],
                _ntuple(ks[i], nd, "kernel_sizes"),
                _ntuple(ss[i], nd, "strides"),
                _ntuple(ps[i], nd, "paddings"),
                self.bias_last_layer or i < n - 1,
            )
            for i in range(n)
        )

    @property
    def out_channels(self) -> int:
        return self.channels[-1]

    def output_shape(self, spatial: Sequence[int]) -> tuple[int, ...]:
        """Per-sample output shape for inputs of spatial size ``spatial`` (e.g. ``(H, W)``)."""
        spatial = tuple(spatial)
        if len(spatial) != self.spatial_dims:
            raise ValueError(
                f"{type(self).__name__}: spatial must have {self.spatial_dims} sizes, got {spatial}"
            )
        for _, _, k, s, p, _ in self.layer_configs:
            spatial = tuple(conv_output_size(*args) for args in zip(spatial, k, s, p))
        if min(spatial) <= 0:
            raise ValueError(f"{type(self).__name__}: input too small, output spatial {spatial}")
        shape = (self.out_channels, *spatial)
        if self.aggregator == "squash":
            shape = (math.prod(shape),)
        elif self.aggregator == "avg_pool":
            shape = (self.out_channels,) + (1,) * self.spatial_dims
        if self.squeeze_output:
            dims = self._squeeze_dims
            if any(shape[d] != 1 for d in dims) or len(shape) < len(dims):
                raise ValueError(
                    f"{type(self).__name__}: squeeze_output needs singleton dims {dims}, "
                    f"output shape would be {shape}"
                )
            shape = shape[: len(shape) - len(dims)]
        return shape

    def output_features(self, spatial: Sequence[int]) -> int:
        """Flat output size per sample (the ``in_features`` of an MLP head)."""
        return math.prod(self.output_shape(spatial))

    @property
    def _squeeze_dims(self) -> tuple[int, ...]:
        return tuple(range(-self.spatial_dims, 0))

    def init(self, seed: Seed = 0, *, device=None, dtype=torch.float32) -> Params:
        gen = make_generator(seed)
        layers = []
        for c_in, c_out, k, _, _, bias in self.layer_configs:
            # torch.nn.ConvNd's default: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)).
            bound = 1.0 / math.sqrt(c_in * math.prod(k))
            layer = {"weight": _uniform((c_out, c_in, *k), bound, gen, device, dtype)}
            if bias:
                layer["bias"] = _uniform((c_out,), bound, gen, device, dtype)
            layers.append(layer)
        params: dict[str, Any] = {"layers": layers}
        if self.norm is not None:
            params["norms"] = [
                {
                    "weight": torch.ones(c, device=device, dtype=dtype),
                    "bias": torch.zeros(c, device=device, dtype=dtype),
                }
                for c in self.channels
            ]
        return params

    def __call__(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        nd = self.spatial_dims
        self.check_params(params)
        # [*batch, C, *spatial]: any spatial size.
        check_input(self, "x", x, (self.in_features,) + (None,) * nd, params["layers"][0]["weight"])
        batch = x.shape[: -nd - 1]
        # Conv kernels take one batch dim: fold any number of them (none included) into one.
        x = x.reshape(-1, *x.shape[-nd - 1 :])
        conv = F.conv2d if nd == 2 else F.conv3d
        act = activation_fn(self.activation)
        for i, (p, (_, c_out, _, stride, padding, _)) in enumerate(
            zip(params["layers"], self.layer_configs)
        ):
            x = act(conv(x, p["weight"], p.get("bias"), stride=stride, padding=padding))
            if self.norm is not None:
                groups = 1 if self.norm == "layer" else c_out
                x = F.group_norm(
                    x, groups, params["norms"][i]["weight"], params["norms"][i]["bias"]
                )
        if self.aggregator == "squash":
            x = x.flatten(1)
        elif self.aggregator == "avg_pool":
            x = x.mean(dim=tuple(range(2, 2 + nd)), keepdim=True)
        x = x.reshape(*batch, *x.shape[1:])
        if self.squeeze_output:
            x = squeeze(x, self._squeeze_dims)
        return x


@dataclasses.dataclass(frozen=True)
class ConvNet(_ConvStack):
    """A 2D convolutional stack with TorchRL's ``ConvNet`` arguments and defaults.

    Params: ``{"layers": [{"weight": [out, in, kh, kw], "bias": [out]}, ...], "norms": [...]}``
    (``torch.nn.Conv2d``'s layout; ``"norms"`` only with ``norm``, ``torch.nn.GroupNorm``'s).

    Args:
        in_features: input channels ``C``.
        depth: number of conv layers (inferred from any per-layer sequence when ``None``; 3 if
            there is none).
        num_cells: output channels per layer (int or sequence). Default ``32`` per layer.
        kernel_sizes, strides, paddings: per layer (an int, or a sequence with an int or a
            ``(h, w)`` tuple per layer). Defaults ``3``, ``1``, ``0``.
        activation: after every conv (TorchRL's default ``"elu"``).
        norm: ``None``, ``"layer"`` (``GroupNorm(1, C)``) or ``"instance"`` (``GroupNorm(C, C)``),
            after the activation.
        bias_last_layer: whether the last conv has a bias (TorchRL always adds one).
        aggregator: ``"squash"`` (flatten ``C, H, W``), ``"avg_pool"`` (mean over ``H, W``,
            keeping them as size 1) or ``None``.
        squeeze_output: drop the last two dims (must be size 1; use with ``"avg_pool"``).

    Shapes:
        ``x: [*batch, C, H, W] -> [*batch, *net.output_shape((H, W))]``.
    """

    spatial_dims: ClassVar[int] = 2


Conv2dNet = ConvNet


@dataclasses.dataclass(frozen=True)
class Conv3dNet(_ConvStack):
    """A 3D convolutional stack with TorchRL's ``Conv3dNet`` arguments and defaults.

    Same arguments as :class:`ConvNet` with 3D kernels (``torch.nn.Conv3d``'s layout
    ``[out, in, kd, kh, kw]``); ``"squash"`` flattens ``C, D, H, W``, ``squeeze_output`` drops the
    last three dims.

    Shapes:
        ``x: [*batch, C, D, H, W] -> [*batch, *net.output_shape((D, H, W))]``.
    """

    spatial_dims: ClassVar[int] = 3
