"""Multi-agent networks and value mixers (TorchRL's ``torchrl.modules.models.multiagent``).

Networks: one funcrl net per agent, applied to the agent axis of the input::

    policy = MultiAgentMLP(n_agent_inputs=8, n_agent_outputs=2, n_agents=3,
                           centralized=False, share_params=True)
    params = policy.init(0)              # one MLP's params (share_params=True)
    y = policy(params, obs)              # obs [*B, 3, 8] -> y [*B, 3, 2]

``share_params=True`` keeps one parameter set and broadcasts it over the agents;
``share_params=False`` stacks ``n_agents`` independently initialised sets on a leading agent dim
and evaluates them with one ``torch.func.vmap``. ``centralized=True`` feeds every agent the inputs
of all agents (concatenated on the feature dim for the MLP, on the channels for the ConvNet); a
centralized net with shared params therefore gives the same output to every agent (a centralized
critic).

Mixers: ``mixer(params, chosen_action_value [*B, n_agents, 1], state) -> [*B, 1]``, the global
``Q_tot`` of QMIX (Rashid et al. 2018, :class:`QMixer`) and VDN (Sunehag et al. 2017,
:class:`VDNMixer`). See :mod:`funcrl.qmix` for the loss that trains them, and
:mod:`funcrl.objectives.multiagent` for the MADDPG / MASAC nets built from these.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from funcrl import tree
from funcrl._constants import filled
from funcrl.nn.conv import ConvNet
from funcrl.nn.core import (
    MLP,
    Activation,
    Linear,
    Module,
    Params,
    Seed,
    check_input,
    make_generator,
    net_name,
)
from funcrl.record import Record

__all__ = [
    "MultiAgentMLP",
    "MultiAgentConvNet",
    "QMixer",
    "VDNMixer",
    "TanhDeltaActor",
    "apply_multiagent",
    "group_view",
    "init_multiagent",
    "qmix_mix",
    "vdn_mix",
]


# --- the agent axis ------------------------------------------------------------------------------


def init_multiagent(
    net: Module,
    n_agents: int,
    share_params: bool,
    seed: Seed,
    *,
    device=None,
    dtype: torch.dtype = torch.float32,
) -> Params:
    """``net``'s params once (``share_params``) or ``n_agents`` independent draws stacked on dim 0.

    The agents draw one after another from the same generator, so every agent's parameters are
    initialised independently (TorchRL builds one ``nn.Module`` per agent).
    """
    gen = make_generator(seed)
    if share_params:
        return net.init(gen, device=device, dtype=dtype)
    return tree.stack([net.init(gen, device=device, dtype=dtype) for _ in range(n_agents)])


def apply_multiagent(
    net: Module,
    params: Params,
    x: torch.Tensor,
    *,
    n_agents: int,
    agent_dim: int,
    centralized: bool,
    share_params: bool,
    randomness: str = "different",
    **kwargs: Any,
) -> torch.Tensor:
    """Applies ``net`` per agent along ``x``'s ``agent_dim`` (TorchRL's ``MultiAgentNetBase``).

    ``agent_dim`` (negative) counts from the end of ``x``; the agent axis of the output sits at
    the same position counted from the *front* (TorchRL's rule), so a net that drops feature dims
    (a ConvNet flattening ``C, H, W``) keeps the batch dims before the agent axis in place.

    Args:
        net: the per-agent funcrl net.
        params: one param set (``share_params``) or sets stacked on a leading agent dim.
        x: ``[*B, n_agents, *features]`` with ``agent_dim = -1 - len(features)``.
        n_agents, centralized, share_params: see :class:`MultiAgentMLP`.
        randomness: ``vmap``'s randomness for nets that sample (dropout), as TorchRL's
            ``vmap_randomness``.
        **kwargs: passed to ``net`` (e.g. ``train=True``).

    Returns:
        ``[*B, n_agents, *out]``.
    """
    if x.dim() < -agent_dim or x.shape[agent_dim] != n_agents:
        raise ValueError(
            f"multi-agent net: input must have n_agents={n_agents} on dim {agent_dim}, got shape "
            f"{tuple(x.shape)}"
        )
    agent_pos = x.dim() + agent_dim  # where the agent axis goes in the output
    if centralized:
        # Full observability: the agent axis is folded into the first feature dim.
        x = x.flatten(agent_dim, agent_dim + 1)
    if share_params:
        y = net(params, x, **kwargs)
        if centralized:
            # One output for the whole team, the same for every agent.
            y = y.unsqueeze(agent_pos)
            y = y.expand(*y.shape[:agent_pos], n_agents, *y.shape[agent_pos + 1 :])
        return y
    n = tree.leaves(params)[0].shape[0] if tree.leaves(params) else n_agents
    if n != n_agents:
        raise ValueError(
            f"multi-agent net: share_params=False needs params stacked on a leading agent dim of "
            f"size n_agents={n_agents}, got {n}"
        )

    def one_agent(p: Params, xi: torch.Tensor) -> torch.Tensor:
        return net(p, xi, **kwargs)

    return torch.func.vmap(
        one_agent,
        in_dims=(0, None if centralized else agent_pos),
        out_dims=agent_pos,
        randomness=randomness,
    )(params, x)


# --- networks ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MultiAgentMLP(Module):
    """An MLP per agent (TorchRL's ``MultiAgentMLP``), built on :class:`funcrl.nn.MLP`.

    Params: one :class:`funcrl.nn.MLP` tree (``share_params=True``) or the same tree with a
    leading ``[n_agents]`` dim on every leaf.

    Args:
        n_agent_inputs: features per agent.
        n_agent_outputs: outputs per agent.
        n_agents: number of agents.
        centralized: every agent's MLP sees the inputs of all agents
            (``n_agents * n_agent_inputs`` features).
        share_params: one MLP for all agents, else one per agent.
        depth, num_cells, activation, activate_last_layer, dropout, norm, bias_last_layer,
            init_method, last_layer_init_scale: as :class:`funcrl.nn.MLP` (TorchRL's ``MLP``
            kwargs; ``activation`` is TorchRL's ``activation_class`` and accepts it, default
            tanh; ``depth=3``, ``num_cells=32`` when both are ``None``).
        vmap_randomness: ``vmap``'s randomness with dropout and unshared params.

    Shapes:
        ``__call__(params, *inputs)``: each input ``[*B, n_agents, d_i]`` (several are
        concatenated on the last dim, e.g. ``(observation, action)`` for a critic, with
        ``sum(d_i) == n_agent_inputs``) ``-> [*B, n_agents, n_agent_outputs]``.
    """

    n_agent_inputs: int
    n_agent_outputs: int
    n_agents: int
    centralized: bool
    share_params: bool
    depth: int | None = None
    num_cells: int | tuple[int, ...] | None = None
    activation: Activation = "tanh"
    activate_last_layer: bool = False
    dropout: float | None = None
    norm: str | None = None
    bias_last_layer: bool = True
    init_method: str = "default"
    last_layer_init_scale: float = 1.0
    vmap_randomness: str = "different"

    agent_dim: ClassVar[int] = -2

    def __post_init__(self) -> None:
        if isinstance(self.num_cells, list):
            object.__setattr__(self, "num_cells", tuple(self.num_cells))
        for name in ("n_agent_inputs", "n_agent_outputs", "n_agents"):
            if getattr(self, name) <= 0:
                raise ValueError(
                    f"MultiAgentMLP: {name} must be positive, got {getattr(self, name)}"
                )
        _ = self.net  # validates the MLP arguments

    @property
    def net(self) -> MLP:
        """The per-agent :class:`funcrl.nn.MLP`."""
        n_in = self.n_agent_inputs * (self.n_agents if self.centralized else 1)
        return MLP(
            in_features=n_in,
            out_features=self.n_agent_outputs,
            depth=self.depth,
            num_cells=self.num_cells,
            activation=self.activation,
            activate_last_layer=self.activate_last_layer,
            dropout=self.dropout,
            norm=self.norm,
            bias_last_layer=self.bias_last_layer,
            init_method=self.init_method,
            last_layer_init_scale=self.last_layer_init_scale,
        )

    def init(self, seed: Seed = 0, *, device=None, dtype=torch.float32) -> Params:
        return init_multiagent(
            self.net, self.n_agents, self.share_params, seed, device=device, dtype=dtype
        )

    def __call__(self, params: Params, *inputs: torch.Tensor, train: bool = False) -> torch.Tensor:
        if not inputs:
            raise TypeError("MultiAgentMLP: expected at least one input tensor")
        self.check_params(params)
        like = params["layers"][0]["weight"]
        for i, xi in enumerate(inputs):
            name = "x" if len(inputs) == 1 else f"inputs[{i}]"
            check_input(self, name, xi, (self.n_agents, None), like)
        x = inputs[0] if len(inputs) == 1 else torch.cat(inputs, dim=-1)
        name = "x" if len(inputs) == 1 else "cat(inputs, -1)"
        check_input(self, name, x, (self.n_agents, self.n_agent_inputs), like)
        return apply_multiagent(
            self.net,
            params,
            x,
            n_agents=self.n_agents,
            agent_dim=self.agent_dim,
            centralized=self.centralized,
            share_params=self.share_params,
            randomness=self.vmap_randomness,
            train=train,
        )


@dataclasses.dataclass(frozen=True)
class MultiAgentConvNet(Module):
    """A ConvNet per agent (TorchRL's ``MultiAgentConvNet``), built on :class:`funcrl.nn.ConvNet`.

    Params: one :class:`funcrl.nn.ConvNet` tree (``share_params=True``) or the same tree with a
    leading ``[n_agents]`` dim on every leaf.

    Args:
        n_agents: number of agents.
        centralized: every agent's ConvNet sees all agents' images stacked on the channels
            (``n_agents * in_features`` input channels).
        share_params: one ConvNet for all agents, else one per agent.
        in_features: channels per agent's image (TorchRL infers it lazily when ``None``; funcrl
            needs it to build parameters).
        depth, num_cells, kernel_sizes, strides, paddings, activation, norm, aggregator,
            squeeze_output: as :class:`funcrl.nn.ConvNet`, with TorchRL's ``MultiAgentConvNet``
            defaults ``kernel_sizes=5``, ``strides=2``, ``paddings=0``, ELU, 3 layers of 32.
        vmap_randomness: ``vmap``'s randomness with unshared params.

    Shapes:
        ``__call__(params, x)``: ``x [*B, n_agents, C, H, W] -> [*B, n_agents, *out]`` with
        ``out = net.output_shape((H, W))`` (``C' * H' * W'`` with the default ``"squash"``).
    """

    n_agents: int
    centralized: bool
    share_params: bool
    in_features: int
    depth: int | None = None
    num_cells: int | tuple[int, ...] | None = None
    kernel_sizes: Any = 5
    strides: Any = 2
    paddings: Any = 0
    activation: Activation = "elu"
    norm: str | None = None
    aggregator: str | None = "squash"
    squeeze_output: bool = False
    vmap_randomness: str = "different"

    agent_dim: ClassVar[int] = -4

    def __post_init__(self) -> None:
        if self.n_agents <= 0:
            raise ValueError(f"MultiAgentConvNet: n_agents must be positive, got {self.n_agents}")
        net = self.net  # validates (and freezes lists into tuples of) the ConvNet arguments
        for f in ("num_cells", "kernel_sizes", "strides", "paddings"):
            object.__setattr__(self, f, getattr(net, f))

    @property
    def net(self) -> ConvNet:
        """The per-agent :class:`funcrl.nn.ConvNet`."""
        return ConvNet(
            in_features=self.in_features * (self.n_agents if self.centralized else 1),
            depth=self.depth,
            num_cells=self.num_cells,
            kernel_sizes=self.kernel_sizes,
            strides=self.strides,
            paddings=self.paddings,
            activation=self.activation,
            norm=self.norm,
            aggregator=self.aggregator,
            squeeze_output=self.squeeze_output,
        )

    def init(self, seed: Seed = 0, *, device=None, dtype=torch.float32) -> Params:
        return init_multiagent(
            self.net, self.n_agents, self.share_params, seed, device=device, dtype=dtype
        )

    def __call__(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        self.check_params(params)
        like = params["layers"][0]["weight"]
        check_input(self, "x", x, (self.n_agents, self.in_features, None, None), like)
        return apply_multiagent(
            self.net,
            params,
            x,
            n_agents=self.n_agents,
            agent_dim=self.agent_dim,
            centralized=self.centralized,
            share_params=self.share_params,
            randomness=self.vmap_randomness,
        )


# --- grouped batches -----------------------------------------------------------------------------

_TEAM_FLAGS = ("reward", "done", "terminated", "truncated")


def group_view(
    batch: Record, group: str = "agents", expand: tuple[str, ...] = _TEAM_FLAGS
) -> Record:
    """A batch with ``group``'s per-agent entries moved to the top level, for single-agent losses.

    TorchRL keeps multi-agent data under a group (``("agents", "observation")``,
    ``("next", "agents", "reward")``); funcrl's single-agent losses read ``"observation"``,
    ``"action"``, ``("next", "reward")``, ... With per-agent tensors ``[*B, n_agents, ...]`` at
    those keys the same losses train every agent at once (MADDPG / MASAC / IPPO-style critics)::

        critic = MultiAgentMLP(d_obs + d_act, 1, n_agents, centralized=True, share_params=True)
        actor = MultiAgentMLP(d_obs, d_act, n_agents, centralized=False, share_params=True,
                              activate_last_layer=True)       # tanh: actions in [-1, 1]
        nets = ddpg.Nets(actor=actor, value=critic)
        losses = ddpg.loss(params, group_view(batch), nets=nets)

    Team-level ``("next", k)`` flags ``[*B, 1]`` for ``k`` in ``expand`` that the group does not
    have are broadcast to ``[*B, n_agents, 1]`` (what TorchRL's multi-agent examples do with
    ``done``/``terminated``). Entries outside the group (e.g. ``"state"``) are kept.

    Args:
        batch: a :class:`funcrl.Record` with ``batch[group]`` holding ``[*B, n_agents, ...]``.
        group: the group's key.
        expand: team flags to broadcast over the agents.
    """
    if group not in batch:
        raise KeyError(f"group_view: batch has no group {group!r}; it has {sorted(batch.keys())}")
    members = batch[group]
    if not isinstance(members, Record):
        raise TypeError(f"group_view: batch[{group!r}] must be a Record of per-agent entries")
    leaves = members.keys(include_nested=True, leaves_only=True)
    if not leaves:
        raise ValueError(f"group_view: batch[{group!r}] is empty")
    bnd = batch.batch_ndim
    n_agents = members[leaves[0]].shape[bnd]
    out = batch.exclude(group)
    for key in leaves:
        out = out.set(key, members[key])
    nxt = batch.get("next")
    if isinstance(nxt, Record):
        out = out.exclude(("next", group))
        grouped_next = nxt.get(group)
        if isinstance(grouped_next, Record):
            for key in grouped_next.keys(include_nested=True, leaves_only=True):
                path = key if isinstance(key, tuple) else (key,)
                out = out.set(("next", *path), grouped_next[key])
        for k in expand:
            if k in nxt and not (isinstance(grouped_next, Record) and k in grouped_next):
                flag = nxt[k]
                if flag.dim() != bnd + 1 or flag.shape[-1] != 1:
                    raise ValueError(
                        f"group_view: team flag ('next', {k!r}) must be [*B, 1], got "
                        f"{tuple(flag.shape)}"
                    )
                team = flag.unsqueeze(-2).expand(*flag.shape[:-1], n_agents, 1)
                out = out.set(("next", k), team)
    return out


# --- continuous actor-critics (MADDPG, IDDPG, MASAC) ---------------------------------------------


def _static_bound(bound: Any) -> float | tuple:
    """A spec bound as a hashable constant: one float when uniform, else nested tuples."""
    t = torch.as_tensor(bound, dtype=torch.float64)
    if t.numel() and bool((t == t.flatten()[0]).all()):
        return float(t.flatten()[0])

    def frozen(x):
        return tuple(frozen(v) for v in x) if isinstance(x, list) else float(x)

    return frozen(t.tolist())


@dataclasses.dataclass(frozen=True)
class TanhDeltaActor(Module):
    """A deterministic bounded actor: TorchRL's ``ProbabilisticActor(distribution_class=
    TanhDelta)`` over ``net``'s output, as TorchRL's MADDPG example builds it.

    ``action = mid + half * tanh(net(params, observation) + mid)`` with ``mid = (high + low) / 2``,
    ``half = (high - low) / 2`` (:class:`funcrl.distributions.TanhDelta`'s mode). Params are
    ``net``'s.

    Args:
        net: the unbounded network, e.g. a :class:`MultiAgentMLP` with ``n_agent_outputs = a``.
        low, high: the action bounds, floats or nested tuples broadcastable to the action
            (static constants, so the actor stays hashable; see :func:`ddpg_nets`).
    """

    net: Module
    low: float | tuple = -1.0
    high: float | tuple = 1.0

    def init(self, seed: Seed = 0, *, device=None, dtype=torch.float32) -> Params:
        return self.net.init(seed, device=device, dtype=dtype)

    def __call__(self, params: Params, *inputs: torch.Tensor) -> torch.Tensor:
        from funcrl.distributions import TanhDelta

        param = self.net(params, *inputs)  # the wrapped net checks its params and inputs
        low = filled(self.low, param.dtype, param.device)
        high = filled(self.high, param.dtype, param.device)
        return TanhDelta(param, low, high).mode


# --- mixers --------------------------------------------------------------------------------------


def vdn_mix(chosen_action_value: torch.Tensor) -> torch.Tensor:
    """VDN: ``Q_tot = sum_i Q_i``: ``[*B, n_agents, 1] -> [*B, 1]``."""
    return chosen_action_value.sum(-2)


def qmix_mix(
    chosen_action_value: torch.Tensor,
    w1: torch.Tensor,
    b1: torch.Tensor,
    w_final: torch.Tensor,
    v: torch.Tensor,
) -> torch.Tensor:
    """QMIX's two-layer mixing of the agents' Q values with state-conditioned weights.

    ``Q_tot = ELU(q^T |W_1| + b_1) |w_final| + V(s)``; ``|.|`` keeps every weight non-negative,
    so ``Q_tot`` is monotone non-decreasing in each agent's ``Q_i`` (ELU is increasing).

    Args:
        chosen_action_value: ``q [*B, n_agents, 1]``.
        w1: ``[*B, n_agents, embed]`` (any sign; its absolute value is used).
        b1: ``[*B, embed]``.
        w_final: ``[*B, embed]`` (its absolute value is used).
        v: ``V(s) [*B, 1]``, the state-dependent final bias.

    Returns:
        ``Q_tot [*B, 1]``.
    """
    q = chosen_action_value.squeeze(-1)
    hidden = F.elu(torch.einsum("...n,...ne->...e", q, w1.abs()) + b1)
    return (hidden * w_final.abs()).sum(-1, keepdim=True) + v


def _check_chosen_action_value(q: torch.Tensor, n_agents: int, owner: str) -> None:
    if q.dim() < 2 or tuple(q.shape[-2:]) != (n_agents, 1):
        raise ValueError(
            f"{owner}: chosen_action_value must be [*B, n_agents={n_agents}, 1], got shape "
            f"{tuple(q.shape)}"
        )


@dataclasses.dataclass(frozen=True)
class VDNMixer(Module):
    """Value-Decomposition Network mixer (TorchRL's ``VDNMixer``): ``Q_tot = sum_i Q_i``.

    Parameter-free (``init`` returns ``{}``) and takes no state.

    Shapes:
        ``__call__(params, chosen_action_value [*B, n_agents, 1]) -> [*B, 1]``.
    """

    n_agents: int

    needs_state: ClassVar[bool] = False

    def init(self, seed: Seed = 0, *, device=None, dtype=torch.float32) -> Params:
        return {}

    def __call__(
        self, params: Params, chosen_action_value: torch.Tensor, state: torch.Tensor | None = None
    ) -> torch.Tensor:
        self.check_params(params)
        if state is not None:
            raise ValueError("VDNMixer: takes no state (needs_state=False), but a state was given")
        _check_chosen_action_value(chosen_action_value, self.n_agents, "VDNMixer")
        return vdn_mix(chosen_action_value)


@dataclasses.dataclass(frozen=True)
class QMixer(Module):
    """QMIX's monotonic mixer (TorchRL's ``QMixer``): hypernetworks of the global state give the
    mixing weights (made non-negative with ``abs``) and biases, see :func:`qmix_mix`.

    Params (``torch.nn.Linear`` layouts, TorchRL's module names)::

        {"hyper_w_1": Linear(state_dim, embed * n_agents),
         "hyper_w_final": Linear(state_dim, embed),
         "hyper_b_1": Linear(state_dim, embed),
         "V": MLP(state_dim -> embed -> 1, ReLU)}        # V(s) replaces the last bias

    Args:
        state_shape: the state's shape without batch dims (flattened to ``state_dim``).
        mixing_embed_dim: width ``embed`` of the mixing layer.
        n_agents: number of agents.

    Shapes:
        ``__call__(params, chosen_action_value [*B, n_agents, 1], state [*B, *state_shape])
        -> [*B, 1]``.
    """

    state_shape: tuple[int, ...]
    mixing_embed_dim: int
    n_agents: int

    needs_state: ClassVar[bool] = True

    def __post_init__(self) -> None:
        shape = (self.state_shape,) if isinstance(self.state_shape, int) else self.state_shape
        object.__setattr__(self, "state_shape", tuple(int(s) for s in shape))
        if self.mixing_embed_dim <= 0 or self.n_agents <= 0:
            raise ValueError(
                f"QMixer: mixing_embed_dim and n_agents must be positive, got "
                f"{self.mixing_embed_dim} and {self.n_agents}"
            )

    @property
    def state_dim(self) -> int:
        return math.prod(self.state_shape)

    @property
    def hyper_w_1(self) -> Linear:
        return Linear(self.state_dim, self.mixing_embed_dim * self.n_agents)

    @property
    def hyper_w_final(self) -> Linear:
        return Linear(self.state_dim, self.mixing_embed_dim)

    @property
    def hyper_b_1(self) -> Linear:
        return Linear(self.state_dim, self.mixing_embed_dim)

    @property
    def V(self) -> MLP:  # noqa: N802  (TorchRL's name)
        return MLP(self.state_dim, 1, num_cells=(self.mixing_embed_dim,), activation="relu")

    def init(self, seed: Seed = 0, *, device=None, dtype=torch.float32) -> Params:
        gen = make_generator(seed)
        kw = {"device": device, "dtype": dtype}
        # TorchRL's construction order.
        return {
            "hyper_w_1": self.hyper_w_1.init(gen, **kw),
            "hyper_w_final": self.hyper_w_final.init(gen, **kw),
            "hyper_b_1": self.hyper_b_1.init(gen, **kw),
            "V": self.V.init(gen, **kw),
        }

    def __call__(
        self, params: Params, chosen_action_value: torch.Tensor, state: torch.Tensor
    ) -> torch.Tensor:
        self.check_params(params)
        q = chosen_action_value
        _check_chosen_action_value(q, self.n_agents, "QMixer")
        check_input(self, "chosen_action_value", q, None, params["V"]["layers"][0]["weight"])
        if state is not None:
            check_input(self, "state", state, None, params["V"]["layers"][0]["weight"])
        batch = q.shape[:-2]
        k = len(self.state_shape)
        if state is None or tuple(state.shape) != (*batch, *self.state_shape):
            got = None if state is None else tuple(state.shape)
            raise ValueError(
                f"{net_name(self)}: input state must be [*B, *state_shape] = {(*batch, *self.state_shape)} (the "
                f"batch dims of chosen_action_value), got {got}"
            )
        s = state.flatten(-k, -1) if k else state.unsqueeze(-1)
        n, e = self.n_agents, self.mixing_embed_dim
        w1 = self.hyper_w_1(params["hyper_w_1"], s).unflatten(-1, (n, e))
        b1 = self.hyper_b_1(params["hyper_b_1"], s)
        w_final = self.hyper_w_final(params["hyper_w_final"], s)
        v = self.V(params["V"], s)
        return qmix_mix(q, w1, b1, w_final, v)
