"""CrossQ (Bhatt et al. 2024, "CrossQ: Batch Normalization in Deep RL", ICLR) as pure functions.

TorchRL 0.14's ``CrossQLoss``: SAC without target networks. The critics carry BatchRenorm layers
and see the current and next state-action pairs in *one* joint pass, so both share the batch
statistics; the bootstrap is that pass's next-state half, detached::

    a', log pi'     ~ pi(s')                                   (frozen; actor BN in train mode)
    [Q_i(s, a_t); Q_i(s', a')] = Q_i(cat([s, a_t], [s', a']))  (BN in train mode, joint batch)
    y       = r + gamma (1 - terminated) [min_i Q_i(s', a') - alpha log pi']        (detached)
    L_Q     = sum_i l(Q_i(s, a_t), y)
    L_pi    = alpha log pi(a~|s) - min_i Q_i(s, a~)    (actor BN train mode; Q frozen, BN eval mode)
    L_alpha = -log_alpha (log pi(a~|s) + H)

The BatchRenorm running statistics live in ``params["batch_stats"] = {"actor": [...],
"qvalue": [...]}`` (one ``{"running_mean", "running_var", "steps"}`` per hidden layer; the Q ones
are stacked over the ensemble like the Q params). A loss cannot return params in its dict of
tensors, so :func:`loss_and_state` returns ``(losses, {"batch_stats": new})`` and
``funcrl.update(crossq.loss_and_state, ..., has_state=True)`` writes the new statistics into the
params after each step; :func:`loss` is the same computation returning the losses only.

The statistics move in TorchRL's order: the actor's on the next states (target action), then the
critics' on the joint batch, then the actor's on the current states (actor loss); the actor loss
evaluates the critics in eval mode with the statistics the joint pass just produced (TorchRL
updates its buffers in place, then calls ``qvalue_network.eval()``). Use :func:`policy` with
``train=False`` to act.

Draws, in TorchRL's order (next-state actions, then the actor's): with ``key`` (a
:mod:`funcrl.random` key) one sub-key per draw site, with ``key=None`` the global torch RNG.
The target is TD(0) by default; ``Config(value_estimator="td1" | "td_lambda")`` runs
:mod:`funcrl.values`' recursion over a batch of trajectories ``[*B, T]``.

Intentional differences: ``log_alpha`` is clamped straight-through (see :mod:`funcrl.sac`); the
BatchRenorm warm-up factor is capped at 1 (see :mod:`funcrl.nn.batch_renorm`); the dict also holds
``td_error`` (``[*B]``, absolute); ``separate_losses`` does not exist. The nets keep TorchRL's
BatchRenorm layout (:class:`RenormMLP`, sized at ``init`` from the specs), so ``Nets`` holds
``RenormMLP`` instances rather than plain funcrl nets: a stateful net needs ``(params, state,
*inputs, train)``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from funcrl import random, tree
from funcrl.distributions import TanhNormal
from funcrl.nn import BatchRenorm1d, Linear, activation_fn, make_generator
from funcrl.objectives.actor_critic import (
    act_stochastic,
    actor_objective,
    auto_entropy,
    bounds,
    check_alpha,
    check_common,
    param_dtype,
    project,
    read_transitions,
    soft_value,
    tanh_normal,
    temperature,
    temperature_loss,
    value_target,
)
from funcrl.objectives.actor_critic import action_bounds as spec_bounds
from funcrl.objectives.common import (
    check_batch,
    check_mode,
    check_observation,
    distance_loss,
    priority_weights,
    reduce_loss,
    require,
    spec_size,
)
from funcrl.record import Record

__all__ = [
    "Config",
    "Nets",
    "RenormMLP",
    "init",
    "loss",
    "loss_and_state",
    "act",
    "trainer",
    "policy",
    "from_torchrl",
    "to_torchrl",
]

Params = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Config:
    """``CrossQLoss``'s hyperparameters, TorchRL's names and defaults (see :class:`funcrl.sac.Config`).

    There are no target networks, hence no ``delay_*``.
    """

    num_qvalue_nets: int = 2
    loss_function: str = "smooth_l1"
    alpha_init: float = 1.0
    min_alpha: float | None = None
    max_alpha: float | None = None
    fixed_alpha: bool = False
    target_entropy: float | str = "auto"
    gamma: float = 0.99
    reduction: str = "mean"
    use_prioritized_weights: bool | str = "auto"
    value_estimator: str = "td0"
    lmbda: float = 0.95

    def __post_init__(self) -> None:
        check_common("crossq.Config", self)
        check_alpha("crossq.Config", self.alpha_init, self.min_alpha, self.max_alpha)


@dataclasses.dataclass(frozen=True)
class RenormMLP:
    """TorchRL's ``MLP(norm_class=BatchRenorm1d)``: ``Linear -> BatchRenorm1d -> activation`` per
    hidden layer, then a ``Linear``. Sizes are read from the params, so one instance serves any
    input/output width.

    Params: ``{"layers": [linear...], "norms": [{"weight", "bias"}...]}``; state: a list of
    ``BatchRenorm1d`` states. ``__call__(params, state, *inputs, train) -> (y, new_state)``
    concatenates the inputs; leading dims are flattened into the normalised batch.
    """

    num_cells: tuple[int, ...] = (256, 256)
    activation: str = "relu"
    momentum: float = 0.01
    eps: float = 1e-5
    max_r: float = 3.0
    max_d: float = 5.0
    warmup_steps: int = 10000

    def norm(self, width: int) -> BatchRenorm1d:
        return BatchRenorm1d(
            width, momentum=self.momentum, eps=self.eps, max_r=self.max_r, max_d=self.max_d,
            warmup_steps=self.warmup_steps,
        )  # fmt: skip

    def init(self, seed, in_features: int, out_features: int, *, device=None, dtype=torch.float32):
        gen = make_generator(seed)
        sizes = (in_features, *self.num_cells, out_features)
        kw = {"device": device, "dtype": dtype}
        return {
            "layers": [Linear(i, o).init(gen, **kw) for i, o in zip(sizes[:-1], sizes[1:])],
            "norms": [self.norm(h).init(gen, **kw) for h in self.num_cells],
        }

    def init_state(self, *, device=None, dtype=torch.float32) -> list[Params]:
        return [self.norm(h).init_state(device=device, dtype=dtype) for h in self.num_cells]

    def __call__(
        self, params: Params, state: Sequence[Params], *inputs: torch.Tensor, train: bool
    ) -> tuple[torch.Tensor, list[Params]]:
        x = inputs[0] if len(inputs) == 1 else torch.cat(inputs, -1)
        lead = x.shape[:-1]
        x = x.reshape(-1, x.shape[-1])
        act = activation_fn(self.activation)
        new_state = []
        for layer, norm_p, s in zip(params["layers"][:-1], params["norms"], state):
            x = F.linear(x, layer["weight"], layer["bias"])
            x, s = self.norm(x.shape[-1])(norm_p, s, x, train=train)
            x = act(x)
            new_state.append(s)
        last = params["layers"][-1]
        x = F.linear(x, last["weight"], last["bias"])
        return x.reshape(*lead, x.shape[-1]), new_state


@dataclasses.dataclass(frozen=True)
class Nets:
    """``actor(params, state, obs, train) -> ([*B, 2 a], state)`` into ``NormalParamExtractor`` and
    a ``TanhNormal`` on ``params["action_bounds"]``; ``qvalue(params, state, obs, action, train) ->
    ([*B, 1], state)`` for one critic, vmapped over the ensemble. ``None`` (the default) is
    :class:`RenormMLP` with ``num_cells`` hidden units (TorchRL's CrossQ nets; ``init(seed, in,
    out)``, ``init_state()``), sized from the specs at :func:`init` and from the params after."""

    actor: Any = None
    qvalue: Any = None
    num_cells: tuple[int, ...] = (256, 256)
    scale_mapping: str = "biased_softplus_1.0"
    scale_lb: float = 1e-4
    tanh_loc: bool = False


def _resolve(nets: Nets) -> Nets:
    """``nets`` with ``None`` fields replaced by ``RenormMLP(nets.num_cells)`` (sizes come from
    the params: a ``RenormMLP`` serves any input and output width)."""
    fill = {
        k: RenormMLP(tuple(nets.num_cells)) for k in ("actor", "qvalue") if getattr(nets, k) is None
    }
    return dataclasses.replace(nets, **fill) if fill else nets


def init(
    seed: int | torch.Generator,
    observation_spec: Any,
    action_spec: Any,
    config: Config = Config(),
    nets: Nets = Nets(),
    *,
    device=None,
    dtype=torch.float32,
) -> Params:
    """``actor``, ``qvalue`` (``N`` stacked members), ``log_alpha``, ``action_bounds`` and
    ``batch_stats`` (``{"actor": [...], "qvalue": [...]}``, running mean 0, variance 1, steps 0).
    Never touches the global RNG."""
    nets = _resolve(nets)
    owner = "crossq.init"
    obs_dim = spec_size(observation_spec, owner, "observation_spec")
    act_dim = spec_size(action_spec, owner, "action_spec")
    gen = make_generator(seed)
    kw = {"device": device, "dtype": dtype}
    n = config.num_qvalue_nets
    return {
        "actor": nets.actor.init(gen, obs_dim, 2 * act_dim, **kw),
        "qvalue": tree.stack([nets.qvalue.init(gen, obs_dim + act_dim, 1, **kw) for _ in range(n)]),
        "log_alpha": torch.tensor(math.log(config.alpha_init), **kw),
        "action_bounds": spec_bounds(action_spec, act_dim, **kw, owner=owner),
        "batch_stats": {
            "actor": nets.actor.init_state(**kw),
            "qvalue": tree.stack([nets.qvalue.init_state(**kw) for _ in range(n)]),
        },
    }


def _dist(params, loc_scale, nets, owner="crossq.loss"):
    low, high = bounds(params, owner)
    return tanh_normal(loc_scale, low, high, nets)


def policy(
    params: Params, observation: torch.Tensor, *, nets: Nets = Nets(), train: bool = False
) -> tuple[TanhNormal, list[Params]]:
    """The actor's ``TanhNormal`` at ``observation`` and the actor's new BatchRenorm state
    (unchanged when ``train=False``, the mode to act in)."""
    nets = _resolve(nets)
    out, state = nets.actor(
        params["actor"], params["batch_stats"]["actor"], observation, train=train
    )
    return _dist(params, out, nets), state


def _critics(nets, qparams, qstate, obs, action, train):
    """Every critic on the same inputs: ``([N, *B], stacked new states)``."""

    def one(p, s):
        q, s = nets.qvalue(p, s, obs, action, train=train)
        return q.squeeze(-1), s

    return torch.func.vmap(one)(qparams, qstate)


def loss_and_state(
    params: Params,
    batch: Record,
    *,
    config: Config = Config(),
    nets: Nets = Nets(),
    key: torch.Tensor | None = None,
) -> tuple[dict[str, torch.Tensor], Params]:
    """CrossQ's losses and the new BatchRenorm statistics. Samples (``key``, else the global
    torch RNG).

    Returns:
        ``(losses, {"batch_stats": {"actor": ..., "qvalue": ...}})``; ``losses`` has
        ``loss_actor``, ``loss_qvalue``, ``loss_alpha``, ``alpha``, ``entropy``, ``td_error``.
    """
    nets = _resolve(nets)
    owner = "crossq.loss"
    check_batch(batch, owner)
    require(params, ["actor", "qvalue", "log_alpha", "action_bounds", "batch_stats"], owner)
    low, _ = bounds(params, owner)
    t = read_transitions(
        batch, owner=owner, act_dim=low.shape[-1], dtype=param_dtype(params, "log_alpha")
    )
    obs, action, next_obs = t.observation, t.action, t.next_observation
    weights = priority_weights(batch, config, like=t.reward.squeeze(-1), owner=owner)
    key_next, key_actor = random.split_optional(key, 2)
    h = auto_entropy(config.target_entropy, action, batch.batch_ndim)
    log_alpha, alpha = temperature(params["log_alpha"], config)
    stats = params["batch_stats"]
    actor_p = params["actor"]

    # 1. Next actions: the frozen actor, BN in train mode (its statistics move, as in TorchRL).
    out_next, actor_state = nets.actor(
        tree.detach(actor_p), stats["actor"], next_obs.detach(), train=True
    )
    a_next, lp_next = _dist(params, out_next.detach(), nets).rsample_and_log_prob(key=key_next)
    a_next, lp_next = a_next.detach(), lp_next.detach()
    # 2. One joint critic pass over [current; next] so both halves share the batch statistics.
    b = obs.shape[0]  # the joint pass concatenates on the leading batch dim
    joint_q, q_state = _critics(
        nets, params["qvalue"], stats["qvalue"],
        torch.cat([obs, next_obs]), torch.cat([action, a_next]), True,
    )  # fmt: skip
    q, q_next = joint_q[:, :b], joint_q[:, b:]
    v_next = soft_value(q_next.min(0).values, lp_next, alpha).detach()
    y = value_target(config, batch, t, v_next, owner=owner)
    loss_q = distance_loss(q, y.expand_as(q), config.loss_function).sum(0)
    # 3. Actor: BN in train mode on the current states; critics frozen, BN in eval mode.
    out_pi, actor_state = nets.actor(actor_p, actor_state, obs, train=True)
    a_pi, lp_pi = _dist(params, out_pi, nets).rsample_and_log_prob(key=key_actor)
    q_pi, _ = _critics(nets, tree.detach(params["qvalue"]), tree.detach(q_state), obs, a_pi, False)
    loss_actor = actor_objective(alpha, lp_pi, q_pi.min(0).values)
    loss_alpha = temperature_loss(log_alpha, lp_pi.detach(), h)
    red = config.reduction
    losses = {
        "loss_actor": reduce_loss(loss_actor, red, weights),
        "loss_qvalue": reduce_loss(loss_q, red, weights),
        "loss_alpha": reduce_loss(loss_alpha, red, weights),
        "alpha": alpha,
        "entropy": -lp_pi.detach().mean(),
        "td_error": (q - y).abs().detach().max(0).values,
    }
    new_stats = tree.detach({"actor": actor_state, "qvalue": q_state})
    return losses, {"batch_stats": new_stats}


def loss(
    params: Params,
    batch: Record,
    *,
    config: Config = Config(),
    nets: Nets = Nets(),
    key: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """:func:`loss_and_state`'s losses only (the statistics update is dropped). Samples."""
    return loss_and_state(params, batch, config=config, nets=nets, key=key)[0]


def act(
    params: Params,
    observation: torch.Tensor,
    *,
    config: Config = Config(),
    nets: Nets = Nets(),
    mode: str = "random",
    key: torch.Tensor | None = None,
) -> torch.Tensor:
    """As :func:`funcrl.sac.act`, with the actor's BatchRenorm in eval mode (running stats)."""
    nets = _resolve(nets)
    owner = "crossq.act"
    check_mode(owner, mode)
    require(params, ["actor", "action_bounds", "batch_stats"], owner)
    obs = check_observation(owner, observation, param_dtype(params, "actor"))
    out, _ = nets.actor(
        tree.detach(params["actor"]), params["batch_stats"]["actor"], obs, train=False
    )
    return act_stochastic(_dist(params, out, nets, owner), mode, key)


def trainer(optimizer: Any, *, config: Config = Config(), nets: Nets = Nets()):
    """:func:`funcrl.training.update` for CrossQ (no targets): ``actor``, ``qvalue`` and
    ``log_alpha`` every step, the BatchRenorm statistics written back, ``log_alpha`` projected."""
    from functools import partial

    from funcrl.training import update

    return update(
        partial(loss_and_state, config=config, nets=nets),
        optimizer,
        trainable=("actor", "qvalue", "log_alpha"),
        has_state=True,
        project=partial(project, config=config),
    )


# -- TorchRL interop -------------------------------------------------------------------------------


def _renorm_read(mlp: Any) -> tuple[RenormMLP, Params, list[Params]]:
    """``(RenormMLP, params, batch stats)`` of a TorchRL ``MLP(norm_class=BatchRenorm1d)``."""
    lins = [m for m in mlp if isinstance(m, torch.nn.Linear)]
    norms = [m for m in mlp if type(m).__name__ == "BatchRenorm1d"]
    if len(norms) != len(lins) - 1:
        raise TypeError(
            "crossq.from_torchrl: the nets must be TorchRL MLP(norm_class=BatchRenorm1d), "
            f"got {len(lins)} linear and {len(norms)} BatchRenorm1d layers"
        )
    activation = {torch.nn.ReLU: "relu", torch.nn.Tanh: "tanh", torch.nn.ELU: "elu"}.get(
        getattr(mlp, "activation_class", torch.nn.ReLU)
    )
    if activation is None:
        raise TypeError(f"crossq.from_torchrl: activation {mlp.activation_class} is not supported")
    n0 = norms[0]
    net = RenormMLP(
        num_cells=tuple(m.out_features for m in lins[:-1]),
        activation=activation,
        momentum=float(n0.momentum),
        eps=float(n0.eps),
        max_r=float(n0.max_r),
        max_d=float(n0.max_d),
        warmup_steps=int(n0.warmup_steps),
    )

    def c(t):
        return t.detach().clone()

    params = {
        "layers": [{"weight": c(m.weight), "bias": c(m.bias)} for m in lins],
        "norms": [{"weight": c(m.weight), "bias": c(m.bias)} for m in norms],
    }
    state = [
        {
            "running_mean": c(m.running_mean),
            "running_var": c(m.running_var),
            "steps": c(m.num_batches_tracked),
        }
        for m in norms
    ]
    return net, params, state


@torch.no_grad()
def _renorm_write(mlp: Any, params: Params, state: list[Params]) -> None:
    lins = [m for m in mlp if isinstance(m, torch.nn.Linear)]
    norms = [m for m in mlp if type(m).__name__ == "BatchRenorm1d"]
    for m, p in zip(lins, params["layers"]):
        m.weight.copy_(p["weight"])
        m.bias.copy_(p["bias"])
    for m, p, s in zip(norms, params["norms"], state):
        m.weight.copy_(p["weight"])
        m.bias.copy_(p["bias"])
        m.running_mean.copy_(s["running_mean"])
        m.running_var.copy_(s["running_var"])
        m.num_batches_tracked.copy_(s["steps"])


def _renorm_torchrl(net: RenormMLP, in_features: int, out_features: int, dtype) -> Any:
    from torchrl.modules import MLP
    from torchrl.modules.models.batchrenorm import BatchRenorm1d as TorchRLRenorm

    classes = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "elu": torch.nn.ELU}
    if net.activation not in classes or len(set(net.num_cells)) != 1:
        raise TypeError(
            "crossq.to_torchrl: needs equal hidden sizes and a relu/tanh/elu activation "
            f"(TorchRL's MLP norm_kwargs are shared), got {net.num_cells}, {net.activation!r}"
        )
    kw = {
        "num_features": net.num_cells[0], "momentum": net.momentum, "eps": net.eps,
        "max_r": net.max_r, "max_d": net.max_d, "warmup_steps": net.warmup_steps,
    }  # fmt: skip
    return MLP(
        in_features=in_features,
        out_features=out_features,
        num_cells=list(net.num_cells),
        activation_class=classes[net.activation],
        norm_class=TorchRLRenorm,
        norm_kwargs=kw,
    ).to(dtype)


def from_torchrl(loss_module: Any) -> tuple[Config, Nets, Params]:
    """``(config, nets, params)`` equal to a TorchRL ``CrossQLoss`` whose actor is TorchRL's SAC
    layout around an ``MLP(norm_class=BatchRenorm1d)`` and whose critics are ``ValueOperator`` s of
    such MLPs: weights, BatchRenorm statistics (``params["batch_stats"]``), ``log_alpha``, bounds
    and hyperparameters."""
    from funcrl.objectives.actor_critic import expand_bound, scale_mapping_name, torchrl_estimator

    m = loss_module
    actor = m.actor_network
    body, dist = actor.module[0].module, actor.module[1]
    kw = dist.distribution_kwargs
    with m.actor_network_params.to_module(actor):
        actor_net, actor_params, actor_state = _renorm_read(body[0])
    qmod = m.qvalue_network
    members = []
    for i in range(m.qvalue_network_params.shape[0]):
        with m.qvalue_network_params[i].to_module(qmod):
            members.append(_renorm_read(qmod.module))
    low = torch.as_tensor(kw.get("low", -1.0))
    act_dim = low.shape[-1] if low.dim() else actor_params["layers"][-1]["weight"].shape[0] // 2
    dtype = m.log_alpha.dtype
    config = Config(
        num_qvalue_nets=int(m.num_qvalue_nets),
        loss_function=m.loss_function,
        alpha_init=float(m.alpha_init),
        min_alpha=None if m.min_log_alpha is None else math.exp(float(m.min_log_alpha)),
        max_alpha=None if m.max_log_alpha is None else math.exp(float(m.max_log_alpha)),
        fixed_alpha=bool(m.fixed_alpha),
        target_entropy=float(m.target_entropy),
        reduction=m.reduction,
        **torchrl_estimator(m),
    )
    nets = Nets(
        actor=actor_net,
        qvalue=members[0][0],
        scale_mapping=scale_mapping_name(body[-1].scale_mapping),
        scale_lb=float(body[-1].scale_lb),
        tanh_loc=bool(kw.get("tanh_loc", False)),
    )
    params: Params = {
        "actor": actor_params,
        "qvalue": tree.stack([p for _, p, _ in members]),
        "log_alpha": m.log_alpha.detach().clone(),
        "action_bounds": {
            "low": expand_bound(kw.get("low", -1.0), act_dim, dtype=dtype),
            "high": expand_bound(kw.get("high", 1.0), act_dim, dtype=dtype),
        },
        "batch_stats": {
            "actor": actor_state,
            "qvalue": tree.stack([s for _, _, s in members]),
        },
    }
    return config, nets, params


def to_torchrl(config: Config, nets: Nets, params: Params):
    """A TorchRL ``CrossQLoss`` equal to ``loss_and_state(params, ., config=config, nets=nets)``
    (weights, BatchRenorm statistics, ``log_alpha``, bounds, value estimator)."""
    nets = _resolve(nets)
    from tensordict.nn import NormalParamExtractor, TensorDictModule
    from torchrl.data import Bounded
    from torchrl.modules import ProbabilisticActor, ValueOperator
    from torchrl.modules import TanhNormal as TorchRLTanhNormal
    from torchrl.objectives import CrossQLoss

    from funcrl.objectives.actor_critic import make_torchrl_estimator

    low, high = bounds(params, "crossq.to_torchrl")
    dtype = params["log_alpha"].dtype
    a_layers = params["actor"]["layers"]
    body = _renorm_torchrl(
        nets.actor, a_layers[0]["weight"].shape[-1], a_layers[-1]["weight"].shape[0], dtype
    )
    _renorm_write(body, params["actor"], params["batch_stats"]["actor"])
    actor = ProbabilisticActor(
        TensorDictModule(
            torch.nn.Sequential(body, NormalParamExtractor(nets.scale_mapping, nets.scale_lb)),
            in_keys=["observation"],
            out_keys=["loc", "scale"],
        ),
        in_keys=["loc", "scale"],
        distribution_class=TorchRLTanhNormal,
        distribution_kwargs={"low": low, "high": high, "tanh_loc": nets.tanh_loc},
    )
    q_layers = params["qvalue"]["layers"]
    qbody = _renorm_torchrl(
        nets.qvalue, q_layers[0]["weight"].shape[-1], q_layers[-1]["weight"].shape[-2], dtype
    )
    kw = {} if config.target_entropy == "auto" else {"target_entropy": config.target_entropy}
    m = CrossQLoss(
        actor,
        ValueOperator(qbody, in_keys=["observation", "action"]),
        num_qvalue_nets=config.num_qvalue_nets,
        loss_function=config.loss_function,
        alpha_init=config.alpha_init,
        min_alpha=config.min_alpha,
        max_alpha=config.max_alpha,
        action_spec=Bounded(low, high, tuple(low.shape), dtype=low.dtype),
        fixed_alpha=config.fixed_alpha,
        reduction=config.reduction,
        **kw,
    )
    make_torchrl_estimator(m, config)
    qmod = m.qvalue_network
    for i in range(config.num_qvalue_nets):
        member = tree.map(lambda x, i=i: x[i], (params["qvalue"], params["batch_stats"]["qvalue"]))
        with m.qvalue_network_params[i].to_module(qmod):
            _renorm_write(qmod.module, *member)
    with torch.no_grad():
        m.log_alpha.copy_(params["log_alpha"])
    return m
