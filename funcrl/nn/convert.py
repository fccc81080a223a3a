"""Weights both ways between ``torch.nn`` / TorchRL modules and funcrl parameter pytrees.

:func:`from_module` reads a module's parameters into funcrl's layout (so a TorchRL ``MLP`` becomes
the ``{"layers": [...]}`` tree that :class:`funcrl.nn.MLP` takes), :func:`to_module` writes such a
tree back, and :func:`from_torchrl` also returns the matching funcrl net. Anything else can run
as is through :class:`TorchModule`, which calls the module with ``torch.func.functional_call``::

    net, params = from_torchrl(torchrl.modules.MLP(in_features=3, out_features=2, num_cells=[8]))
    y = net(params, x)                       # == the TorchRL module's output
    to_module(params, torchrl_mlp)           # load (e.g. trained) params back

    wrapped = TorchModule(any_module)        # params: {"0.weight": ..., "running_mean": ...}
    y = wrapped(wrapped.init(), x)
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch
from torch import nn

from funcrl.nn.core import MLP, Module, Params, Seed, make_generator

__all__ = ["from_module", "to_module", "from_torchrl", "TorchModule", "module_layout"]

Path = tuple[Any, ...]

_LAYER_TYPES: tuple[type, ...] = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)
_NORM_TYPES: tuple[type, ...] = (nn.LayerNorm, nn.GroupNorm)


class _Unsupported(TypeError):
    pass


def _torchrl_types() -> dict[str, type]:
    try:
        from torchrl.modules import NoisyLinear
        from torchrl.modules.models.batchrenorm import BatchRenorm1d
    except ImportError:  # TorchRL is optional
        return {}
    return {"noisy": NoisyLinear, "batch_renorm": BatchRenorm1d}


def _own_params(module: nn.Module) -> list[str]:
    return [name for name, p in module.named_parameters(recurse=False) if p is not None]


def _leaf_layout(module: nn.Module) -> list[tuple[Path, str]] | None:
    """Layout of a module whose parameters are all its own (a layer), or ``None``."""
    trl = _torchrl_types()
    if "noisy" in trl and isinstance(module, trl["noisy"]):
        names = ["weight_mu", "weight_sigma", "bias_mu", "bias_sigma"]
    elif isinstance(module, (*_LAYER_TYPES, *_NORM_TYPES)) or (
        "batch_renorm" in trl and isinstance(module, trl["batch_renorm"])
    ):
        names = ["weight", "bias"]
    elif isinstance(module, (nn.GRUCell, nn.LSTMCell)):
        names = ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]
    elif isinstance(module, (nn.GRU, nn.LSTM)):
        if module.bidirectional or getattr(module, "proj_size", 0):
            raise _Unsupported(f"{type(module).__name__}: bidirectional/proj_size not supported")
        return [
            (("layers", k, name), f"{name}_l{k}")
            for k in range(module.num_layers)
            for name in ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]
            if getattr(module, f"{name}_l{k}", None) is not None
        ]
    else:
        return None
    return [((n,), n) for n in names if getattr(module, n, None) is not None]


def _is_layer(m: nn.Module) -> bool:
    trl = _torchrl_types()
    return isinstance(m, _LAYER_TYPES) or ("noisy" in trl and isinstance(m, trl["noisy"]))


def _layout(module: nn.Module) -> list[tuple[Path, str]]:
    """``(funcrl path, state_dict name)`` for every parameter of ``module``."""
    leaf = _leaf_layout(module)
    if leaf is not None:
        return leaf
    if _own_params(module):
        raise _Unsupported(
            f"{type(module).__name__} has its own parameters {_own_params(module)} and no funcrl "
            f"layout"
        )
    children = [(n, c) for n, c in module.named_children() if any(True for _ in c.parameters())]
    if isinstance(module, nn.Sequential) and all(
        _is_layer(c) or isinstance(c, _NORM_TYPES) for _, c in children
    ):
        # An MLP / conv stack: linear or conv layers -> "layers"[k], a norm after layer k ->
        # "norms"[k] (funcrl's MLP and ConvNet layout).
        out: list[tuple[Path, str]] = []
        n_layers = 0
        for name, child in children:
            if _is_layer(child):
                key, idx = "layers", n_layers
                n_layers += 1
            else:
                key, idx = "norms", n_layers - 1
            out += [((key, idx, *p), f"{name}.{s}") for p, s in _leaf_layout(child)]
        return out
    out = []
    for name, child in children:
        out += [((name, *p), f"{name}.{s}") for p, s in _layout(child)]
    return out


def module_layout(module: nn.Module) -> list[tuple[Path, str]]:
    """The funcrl path of each parameter of ``module``, as ``(path, state_dict name)`` pairs.

    Raises:
        TypeError: when some part of ``module`` has no funcrl layout (use ``layout="flat"`` or
            :class:`TorchModule` for those).
    """
    try:
        return _layout(module)
    except _Unsupported as err:
        raise TypeError(
            f"from_module: no funcrl layout for {type(module).__name__} ({err}); use "
            f"layout='flat' or funcrl.nn.TorchModule(module)"
        ) from None


def _set(tree: Any, path: Path, value: Any) -> Any:
    head, rest = path[0], path[1:]
    if tree is None:
        tree = [] if isinstance(head, int) else {}
    if isinstance(head, int):
        while len(tree) <= head:
            tree.append(None)
    elif head not in tree:
        tree[head] = None
    tree[head] = value if not rest else _set(tree[head], rest, value)
    return tree


def _get(tree: Any, path: Path, what: str) -> Any:
    for i, key in enumerate(path):
        try:
            tree = tree[key]
        except (KeyError, IndexError, TypeError) as err:
            raise KeyError(
                f"to_module: params have no entry {path[: i + 1]} (needed for {what})"
            ) from err
    return tree


def _flat_state(module: nn.Module) -> dict[str, torch.Tensor]:
    state = dict(module.named_parameters())
    state.update({k: b for k, b in module.named_buffers() if b is not None})
    return state


def from_module(module: nn.Module, *, layout: str = "funcrl", net: Module | None = None) -> Params:
    """Copies ``module``'s weights into a funcrl pytree (detached clones).

    Layouts (``layout="funcrl"``):
      - ``Linear``, ``ConvNd``, ``LayerNorm``, ``GroupNorm``, TorchRL ``BatchRenorm1d``:
        ``{"weight", "bias"}``; TorchRL ``NoisyLinear``: ``{"weight_mu", "weight_sigma", "bias_mu",
        "bias_sigma"}``; ``GRUCell``/``LSTMCell``: ``{"weight_ih", "weight_hh", "bias_ih",
        "bias_hh"}``; ``GRU``/``LSTM``: ``{"layers": [cell params per layer]}``.
      - a ``Sequential`` of such layers and parameter-free modules (TorchRL's ``MLP``,
        ``ConvNet``, ``Conv3dNet``): ``{"layers": [...], "norms": [...]}``.
      - any other module: ``{child_name: child layout}`` (TorchRL's DDPG / dueling nets map onto
        :mod:`funcrl.nn.models` this way).

    ``layout="flat"`` gives ``{state_dict name: tensor}`` with buffers too (:class:`TorchModule`'s
    params). Buffers (running statistics, noise) are not part of the funcrl layout.

    With ``net``, the result is checked against ``net``'s own layout
    (:meth:`funcrl.nn.Module.check_params`): a module of another shape raises ``ValueError``
    naming the first differing path instead of giving params that ``net`` would reject later.
    """
    if layout == "flat":
        tree: Any = {k: v.detach().clone() for k, v in _flat_state(module).items()}
    elif layout == "funcrl":
        state = module.state_dict(keep_vars=True)
        tree = None
        for path, name in module_layout(module):
            tree = _set(tree, path, state[name].detach().clone())
        tree = {} if tree is None else tree
    else:
        raise ValueError(f"from_module: layout must be 'funcrl' or 'flat', got {layout!r}")
    if net is not None:
        net.check_params(tree, owner=f"from_module({type(module).__name__})")
    return tree


@torch.no_grad()
def to_module(params: Params, module: nn.Module, *, layout: str = "funcrl") -> nn.Module:
    """Writes ``params`` (as :func:`from_module` lays them out) into ``module`` in place.

    Returns ``module``. Raises ``KeyError`` for a missing entry and ``ValueError`` for a shape
    mismatch or an entry of ``params`` the module has no place for, each naming the parameter or
    path; nothing is written unless every entry matches.
    """
    state = _flat_state(module)
    if layout == "flat":
        pairs = [((name,), name) for name in params]
    elif layout == "funcrl":
        pairs = module_layout(module)
    else:
        raise ValueError(f"to_module: layout must be 'funcrl' or 'flat', got {layout!r}")
    if layout == "funcrl":
        expected = {tuple(path) for path, _ in pairs}
        for path in _leaf_paths(params):
            if path not in expected:
                raise ValueError(
                    f"to_module: params{''.join(f'[{k!r}]' for k in path)} has no counterpart in "
                    f"{type(module).__name__} (its layout: {sorted(map(list, expected), key=str)})"
                )
    writes = []
    for path, name in pairs:
        if name not in state:
            raise KeyError(
                f"to_module: {type(module).__name__} has no parameter or buffer {name!r}"
            )
        value = _get(params, path, name)
        target = state[name]
        if value.shape != target.shape:
            raise ValueError(
                f"to_module: {name!r} has shape {tuple(target.shape)}, params{list(path)} has "
                f"{tuple(value.shape)}"
            )
        writes.append((target, value))
    for target, value in writes:
        target.copy_(value)
    return module


def _leaf_paths(tree: Any, path: Path = ()) -> list[Path]:
    """Paths of the leaves of a params tree (dicts and lists/tuples), in order."""
    if isinstance(tree, dict):
        return [p for k, v in tree.items() for p in _leaf_paths(v, (*path, k))]
    if isinstance(tree, (list, tuple)):
        return [p for i, v in enumerate(tree) for p in _leaf_paths(v, (*path, i))]
    return [path]


_ACTIVATION_NAMES = {
    nn.ReLU: "relu",
    nn.Tanh: "tanh",
    nn.ELU: "elu",
    nn.SELU: "selu",
    nn.GELU: "gelu",
    nn.SiLU: "silu",
    nn.Mish: "mish",
    nn.Sigmoid: "sigmoid",
    nn.Softplus: "softplus",
    nn.LeakyReLU: "leaky_relu",
    nn.Identity: "identity",
}


def _activation(cls: Any, kwargs: Any) -> Any:
    if isinstance(kwargs, list):
        if any(k != kwargs[0] for k in kwargs):
            raise TypeError("from_torchrl: per-layer activation_kwargs are not supported")
        kwargs = kwargs[0] if kwargs else None
    if kwargs:
        return cls(**kwargs)  # an instance: hashable, callable
    if cls in _ACTIVATION_NAMES:
        return _ACTIVATION_NAMES[cls]
    return cls


def _torchrl_mlp_config(m: Any) -> MLP:
    trl = _torchrl_types()
    if m.in_features is None:
        raise TypeError("from_torchrl: the MLP has no in_features (lazy); run it once first")
    if m.single_bias_last_layer:
        raise TypeError("from_torchrl: single_bias_last_layer=True has no funcrl equivalent")
    norm = None
    if m.norm_class is not None:
        if m.norm_class is not nn.LayerNorm:
            raise TypeError(f"from_torchrl: MLP norm_class {m.norm_class} is not supported")
        norm = "layer"
    layer_class, std_init = "linear", 0.5
    if "noisy" in trl and isinstance(m[0], trl["noisy"]):
        layer_class, std_init = "noisy", m[0].std_init
    elif not isinstance(m[0], nn.Linear):
        raise TypeError(f"from_torchrl: MLP layer_class {type(m[0]).__name__} is not supported")
    out = m.out_features
    return MLP(
        in_features=int(m.in_features),
        out_features=out if isinstance(out, int) else tuple(out),
        num_cells=tuple(m.num_cells),
        activation=_activation(m.activation_class, m.activation_kwargs),
        activate_last_layer=m.activate_last_layer,
        dropout=m.dropout,
        norm=norm,
        bias_last_layer=m.bias_last_layer,
        layer_class=layer_class,
        std_init=std_init,
    )


def _torchrl_conv_config(m: Any, cls: type) -> Module:
    if m.in_features is None:
        raise TypeError("from_torchrl: the ConvNet has no in_features (lazy); run it once first")
    nd = cls.spatial_dims
    agg_cls = m.aggregator_class
    if agg_cls is None:
        aggregator = None
    elif agg_cls.__name__ == "SquashDims" and m.aggregator_kwargs.get("ndims_in") == nd + 1:
        aggregator = "squash"
    elif (
        agg_cls in (nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
        and tuple(_as_tuple(m.aggregator_kwargs.get("output_size", 1), nd)) == (1,) * nd
    ):
        aggregator = "avg_pool"
    else:
        raise TypeError(f"from_torchrl: aggregator {agg_cls} {m.aggregator_kwargs} not supported")
    norm = None
    if m.norm_class is not None:
        groups = m.norm_kwargs.get("num_groups") if isinstance(m.norm_kwargs, dict) else None
        if m.norm_class is not nn.GroupNorm or groups not in (1,) + tuple(m.num_cells[:1]):
            raise TypeError("from_torchrl: only GroupNorm norms (1 or C groups) are supported")
        norm = "layer" if groups == 1 else "instance"
    return cls(
        in_features=int(m.in_features),
        num_cells=tuple(m.num_cells),
        kernel_sizes=tuple(m.kernel_sizes),
        strides=tuple(m.strides),
        paddings=tuple(m.paddings),
        activation=_activation(m.activation_class, m.activation_kwargs),
        norm=norm,
        bias_last_layer=True,  # TorchRL's ConvNet gives every conv a bias
        aggregator=aggregator,
        squeeze_output=m.squeeze_output,
    )


def _as_tuple(v: Any, n: int) -> tuple:
    return (v,) * n if isinstance(v, int) else tuple(v)


def from_torchrl(module: nn.Module) -> tuple[Module, Params]:
    """``(funcrl net, params)`` equivalent to a TorchRL ``MLP``, ``ConvNet``, ``Conv3dNet``,
    ``MultiAgentMLP``, ``MultiAgentConvNet``, ``QMixer``, ``VDNMixer`` or a ``torch.nn.Linear``;
    anything else becomes ``(TorchModule(module), flat params)``.

    ``net(params, x)`` then matches ``module(x)`` (TorchRL's eval-mode behaviour for noisy layers,
    i.e. ``noise=None``).
    """
    from funcrl.nn.conv import Conv3dNet, ConvNet
    from funcrl.nn.core import Linear
    from funcrl.nn.noisy import NoisyLinear

    name = type(module).__name__
    mod = type(module).__module__
    trl = _torchrl_types()
    if mod.startswith("torchrl") and name == "MLP":
        net: Module = _torchrl_mlp_config(module)
    elif mod.startswith("torchrl") and name in ("ConvNet", "Conv3dNet"):
        net = _torchrl_conv_config(module, ConvNet if name == "ConvNet" else Conv3dNet)
    elif "noisy" in trl and isinstance(module, trl["noisy"]):
        net = NoisyLinear(
            module.in_features, module.out_features, module.bias_mu is not None, module.std_init
        )
    elif type(module) is nn.Linear:
        net = Linear(module.in_features, module.out_features, bias=module.bias is not None)
    elif mod.startswith("torchrl") and name in ("MultiAgentMLP", "MultiAgentConvNet"):
        return _torchrl_multiagent(module, name)
    elif mod.startswith("torchrl") and name in ("QMixer", "VDNMixer"):
        return _torchrl_mixer(module, name)
    else:
        wrapped = TorchModule(module)
        return wrapped, wrapped.init()
    return net, from_module(module, net=net)


def _sequential_params(flat: dict[str, torch.Tensor]) -> Params:
    """TorchRL's flat ``Sequential`` names (``"0.weight"``, ``"2.bias"``, ...) -> ``{"layers":
    [...]}`` in index order (activations own no params)."""
    layers: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in flat.items():
        index, _, leaf = key.partition(".")
        layers.setdefault(int(index), {})[leaf] = value.detach().clone()
    return {"layers": [layers[i] for i in sorted(layers)]}


def _torchrl_multiagent(module: nn.Module, name: str) -> tuple[Module, Params]:
    from funcrl.nn.multiagent import MultiAgentConvNet, MultiAgentMLP

    common = {
        "centralized": module.centralized,
        "share_params": module.share_params,
        "activation": module.activation_class,
    }
    if name == "MultiAgentMLP":
        net: Module = MultiAgentMLP(
            module.n_agent_inputs,
            module.n_agent_outputs,
            module.n_agents,
            depth=module.depth,
            num_cells=module.num_cells,
            **common,
        )
    else:
        net = MultiAgentConvNet(
            module.n_agents,
            in_features=module.in_features,
            num_cells=module.num_cells,
            kernel_sizes=module.kernel_sizes,
            strides=module.strides,
            paddings=module.paddings,
            **common,
        )
    flat = dict(module.params.flatten_keys(".").items())
    params = _sequential_params(flat)
    net.check_params(params, owner=f"from_torchrl({name})")
    return net, params


def _torchrl_mixer(module: nn.Module, name: str) -> tuple[Module, Params]:
    from funcrl.nn.multiagent import QMixer, VDNMixer

    if name == "VDNMixer":
        return VDNMixer(module.n_agents), {}
    net = QMixer(tuple(module.state_shape), module.embed_dim, module.n_agents)
    state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    params: Params = {
        k: {leaf: state[f"{k}.{leaf}"] for leaf in ("weight", "bias")}
        for k in ("hyper_w_1", "hyper_w_final", "hyper_b_1")
    }
    params["V"] = _sequential_params({k[2:]: v for k, v in state.items() if k.startswith("V.")})
    net.check_params(params, owner=f"from_torchrl({name})")
    return net, params


@dataclasses.dataclass(frozen=True, eq=False)
class TorchModule(Module):
    """Any ``torch.nn.Module`` as a funcrl net: the module is the static part, its parameters and
    buffers (``{state_dict name: tensor}``) are the params.

    ``net(params, *args, **kwargs)`` is ``torch.func.functional_call(module, params, args,
    kwargs)``, so it works under ``grad``, ``vmap`` (e.g. in :class:`funcrl.nn.Ensemble`) and
    ``torch.compile``. Hashing and equality are by identity of the wrapper. The module's own
    tensors are never read by a call; a module that updates buffers in place (e.g. BatchNorm in
    train mode) writes into the ``params`` passed to it.

    Args:
        module: the module; its train/eval mode is part of the static config.
    """

    module: nn.Module

    def init(self, seed: Seed | None = None, *, device=None, dtype=None) -> Params:
        """The module's current weights (``seed=None``) or a fresh init from ``seed``.

        A seed re-runs every submodule's ``reset_parameters`` on a copy, under a forked RNG seeded
        from it, so the global RNG is left as it was.
        """
        module = self.module
        if seed is not None:
            if isinstance(seed, torch.Generator) or not isinstance(seed, int):
                gen = make_generator(seed)
                seed = int(torch.randint(0, 2**62, (), generator=gen))
            module = copy.deepcopy(module)
            cuda = [t.device.index or 0 for t in module.parameters() if t.device.type == "cuda"][:1]
            with torch.random.fork_rng(devices=cuda):
                torch.manual_seed(seed)
                for sub in module.modules():
                    reset = getattr(sub, "reset_parameters", None)
                    if callable(reset):
                        reset()
        params = from_module(module, layout="flat")

        def cast(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=device, dtype=dtype if t.is_floating_point() else None)

        return {k: cast(v) for k, v in params.items()}

    def param_template(self) -> Params:
        """The module's own ``{state_dict name: tensor}`` (only their shapes are read)."""
        return {k: v.detach() for k, v in _flat_state(self.module).items()}

    def __call__(self, params: Params, *args: Any, **kwargs: Any) -> Any:
        # functional_call would fall back to the module's own tensors for a missing name and
        # broadcast nothing: check the names and shapes first. Inputs are the module's business.
        self.check_params(params)
        return torch.func.functional_call(self.module, params, args, kwargs)
