"""Model-predictive planners over a learned world model, as pure functions.

TorchRL's ``CEMPlanner`` and ``MPPIPlanner`` roll candidate action sequences through a
``ModelBasedEnv``; funcrl's roll them through a *step function*::

    step(params, state, action) -> (next_state, reward)            # or
    step(params, state, action) -> (next_state, reward, done)

``state`` is a tensor, any pytree of tensors or a :class:`funcrl.Record` whose leaves have
``batch_ndim`` leading batch dims (a Record's own ``batch_ndim`` by default, 0 otherwise);
``action`` is ``[*batch, N, *action_shape]`` and ``reward`` / ``done`` are ``[*batch, N]`` or
``[*batch, N, 1]``, ``N`` being the candidates, which the planner inserts as a new dim right
after the batch dims of every state leaf. Each optimisation step samples ``N`` action
sequences from ``N(mean, std)`` (from ``key=`` when given, step ``i`` from ``fold_in(key, i)``;
else the global torch RNG, and under ``vmap`` use ``randomness="different"``),
clamps them to ``[low, high]``, rolls them out for the full horizon, scores them (rewards after
the first ``done`` are ignored, as TorchRL) and refits ``mean, std``:

* CEM (Botev et al., 2013): mean and (unbiased) std of the ``top_k`` best sequences.
* MPPI (Williams et al., 2017): weights ``w = softmax(temperature * A)`` over the ``top_k`` best
  first-step advantages ``A``; ``mean = sum w a``, ``std = sqrt(sum w (a - mean)^2)``.

The planner returns the first action of the final mean, ``[*batch, *action_shape]``::

    cfg = CEMConfig(planning_horizon=10, optim_steps=5, num_candidates=100, top_k=10,
                    action_shape=(2,), low=-1.0, high=1.0)
    action = cem_plan(step, params, state, cfg)

:class:`CEMPlanner` / :class:`MPPIPlanner` are the keyed versions (``(params, record) -> record``
with ``"action"`` set); :func:`world_model_step` turns a keyed world model into a step function.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from funcrl import random, tree
from funcrl.modules.keyed import Sequential, read_key
from funcrl.nn.core import Module, Params
from funcrl.record import NestedKey, Record
from funcrl.values import td_lambda_advantage_estimate

__all__ = [
    "CEMConfig",
    "MPPIConfig",
    "cem_plan",
    "mppi_plan",
    "rollout_scores",
    "CEMPlanner",
    "MPPIPlanner",
    "world_model_step",
    "WorldModelWrapper",
]

StepFn = Callable[..., tuple]


@dataclasses.dataclass(frozen=True)
class CEMConfig:
    """Static configuration of :func:`cem_plan` (TorchRL's ``CEMPlanner`` arguments).

    Args:
        planning_horizon: length ``H`` of the simulated action sequences.
        optim_steps: number of refits of the sampling distribution.
        num_candidates: ``N`` sequences sampled per step.
        top_k: ``K`` best sequences kept for the refit.
        action_shape: shape of one action. Default ``(1,)``.
        low, high: bounds the sampled actions are clamped to (``None``: unbounded), TorchRL's
            ``action_spec.project``.
        init_mean, init_std: initial sampling distribution (TorchRL: 0 and 1).
    """

    planning_horizon: int
    optim_steps: int
    num_candidates: int
    top_k: int
    action_shape: tuple[int, ...] = (1,)
    low: float | None = None
    high: float | None = None
    init_mean: float = 0.0
    init_std: float = 1.0

    def __post_init__(self) -> None:
        name = type(self).__name__
        object.__setattr__(self, "action_shape", tuple(self.action_shape))
        for f in ("planning_horizon", "optim_steps", "num_candidates", "top_k"):
            if getattr(self, f) < 1:
                raise ValueError(f"{name}: {f} must be >= 1, got {getattr(self, f)}")
        if self.top_k > self.num_candidates:
            raise ValueError(
                f"{name}: top_k={self.top_k} exceeds num_candidates={self.num_candidates}"
            )
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError(f"{name}: low={self.low} > high={self.high}")


@dataclasses.dataclass(frozen=True)
class MPPIConfig(CEMConfig):
    """Static configuration of :func:`mppi_plan` (TorchRL's ``MPPIPlanner`` arguments).

    Adds ``temperature`` (multiplies the advantages inside the exponential, as TorchRL: larger
    is greedier; default 1.0), and ``gamma`` / ``lmbda`` of the TD(lambda) advantage used when a
    value function is given (defaults 0.99 / 0.95).
    """

    temperature: float = 1.0
    gamma: float = 0.99
    lmbda: float = 0.95


def _state_batch_ndim(state: Any, batch_ndim: int | None) -> int:
    if batch_ndim is not None:
        return batch_ndim
    return state.batch_ndim if isinstance(state, Record) else 0


def _expand_candidates(state: Any, bnd: int, n: int) -> Any:
    """Inserts a candidate dim of size ``n`` after the ``bnd`` batch dims of every leaf."""

    def expand(x: torch.Tensor) -> torch.Tensor:
        x = x.unsqueeze(bnd)
        shape = list(x.shape)
        shape[bnd] = n
        return x.expand(shape)

    return tree.map(expand, state)


def _as_lead(x: torch.Tensor, lead: torch.Size, what: str) -> torch.Tensor:
    if x.shape == lead:
        return x
    if x.shape == (*lead, 1):
        return x.squeeze(-1)
    raise ValueError(
        f"planner: the step function's {what} must be [*batch, N] or [*batch, N, 1] = "
        f"{tuple(lead)} (+ (1,)), got {tuple(x.shape)}"
    )


def _unpack(out: Any) -> tuple[Any, torch.Tensor, torch.Tensor | None]:
    if not isinstance(out, tuple) or len(out) not in (2, 3):
        raise TypeError(
            "planner: step(params, state, action) must return (next_state, reward) or "
            "(next_state, reward, done)"
        )
    return (out[0], out[1], None) if len(out) == 2 else out


def _rollout(
    step: StepFn, params: Params, state: Any, actions: torch.Tensor, bnd: int
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[Any]]:
    """Rolls ``actions [*batch, N, H, *A]`` through ``step``.

    Returns per step: rewards ``[*batch, N]`` with post-done rewards zeroed, done flags
    ``[*batch, N]`` (bool), and the states ``s_0 .. s_H``.
    """
    lead = actions.shape[: bnd + 1]
    rewards, dones, states = [], [], [state]
    alive = torch.ones(lead, dtype=torch.bool, device=actions.device)
    for t in range(actions.shape[bnd + 1]):
        state, reward, done = _unpack(step(params, state, actions.select(bnd + 1, t)))
        reward = _as_lead(reward, lead, "reward")
        # TorchRL keeps the reward of the first done step and ignores those after it.
        rewards.append(torch.where(alive, reward, torch.zeros_like(reward)))
        if done is None:
            done = torch.zeros(lead, dtype=torch.bool, device=actions.device)
        else:
            done = _as_lead(done, lead, "done").to(torch.bool)
        alive = alive & ~done
        dones.append(done)
        states.append(state)
    return rewards, dones, states


def rollout_scores(
    step: StepFn, params: Params, state: Any, actions: torch.Tensor, *, batch_ndim: int = 0
) -> torch.Tensor:
    """Sum of rewards of each action sequence (post-done rewards ignored), ``[*batch, N]``.

    ``state`` must already have the candidate dim (see the module docstring); ``actions`` is
    ``[*batch, N, H, *action_shape]``.
    """
    rewards, _, _ = _rollout(step, params, state, actions, batch_ndim)
    return torch.stack(rewards, dim=-1).sum(-1)


def _sample_actions(
    mean: torch.Tensor,
    std: torch.Tensor,
    config: CEMConfig,
    bnd: int,
    key: torch.Tensor | None = None,
) -> torch.Tensor:
    """``N`` sequences ``[*batch, N, H, *A]`` from ``N(mean, std)``, clamped. Samples.

    From ``key`` when given (:func:`funcrl.random.normal`), else the global torch RNG.
    """
    shape = (*mean.shape[:bnd], config.num_candidates, *mean.shape[bnd:])
    if key is None:
        eps = torch.randn(shape, dtype=mean.dtype, device=mean.device)
    else:
        eps = random.normal(key, shape, mean.dtype).to(mean.device)
    actions = mean.unsqueeze(bnd) + std.unsqueeze(bnd) * eps
    if config.low is not None or config.high is not None:
        actions = actions.clamp(config.low, config.high)
    return actions


def _gather_top(actions: torch.Tensor, idx: torch.Tensor, bnd: int) -> torch.Tensor:
    """``actions [*batch, N, H, *A]`` at candidates ``idx [*batch, K]`` -> ``[*batch, K, H, *A]``."""
    event = actions.shape[bnd + 1 :]
    index = idx.reshape(*idx.shape, *([1] * len(event))).expand(*idx.shape, *event)
    return actions.gather(bnd, index)


def _init_stats(state: Any, config: CEMConfig, bnd: int) -> tuple[torch.Tensor, torch.Tensor]:
    leaves = tree.leaves(state)
    if not leaves:
        raise ValueError("planner: state has no tensor leaves")
    leaf = next((x for x in leaves if x.is_floating_point()), leaves[0])
    dtype = leaf.dtype if leaf.is_floating_point() else torch.get_default_dtype()
    shape = (*leaf.shape[:bnd], config.planning_horizon, *config.action_shape)
    mean = torch.full(shape, config.init_mean, dtype=dtype, device=leaf.device)
    return mean, torch.full_like(mean, config.init_std)


def cem_plan(
    step: StepFn,
    params: Params,
    state: Any,
    config: CEMConfig,
    *,
    batch_ndim: int | None = None,
    key: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy-method planning (TorchRL's ``CEMPlanner.planning``). Samples.

    Args:
        step: ``step(params, state, action) -> (next_state, reward[, done])``.
        params: the world model's params, passed to ``step`` untouched.
        state: the current state (tensor, pytree or Record) with ``batch_ndim`` batch dims.
        config: a :class:`CEMConfig`.
        batch_ndim: batch dims of ``state``'s leaves (default: a Record's, else 0).
        key: a :func:`funcrl.random.key`; iteration ``i`` draws from ``fold_in(key, i)``.
            ``None``: the global torch RNG (TorchRL's draws).

    Returns:
        The first action of the final mean sequence, ``[*batch, *action_shape]``.
    """
    bnd = _state_batch_ndim(state, batch_ndim)
    candidates = _expand_candidates(state, bnd, config.num_candidates)
    mean, std = _init_stats(state, config, bnd)
    for i in range(config.optim_steps):
        sub = None if key is None else random.fold_in(key, i)
        actions = _sample_actions(mean, std, config, bnd, sub)
        scores = rollout_scores(step, params, candidates, actions, batch_ndim=bnd)
        top = _gather_top(actions, scores.topk(config.top_k, dim=bnd).indices, bnd)
        mean, std = top.mean(dim=bnd), top.std(dim=bnd)
    return mean.select(bnd, 0)


def _first_step_advantage(
    rewards: list[torch.Tensor],
    dones: list[torch.Tensor],
    states: list[Any],
    params: Params,
    value_fn: Callable[[Params, Any], torch.Tensor] | None,
    config: MPPIConfig,
    lead: torch.Size,
) -> torch.Tensor:
    """``A_0 = G^lambda_0 - V(s_0)`` (``[*batch, N]``), or the return when ``value_fn`` is None."""
    reward = torch.stack(rewards, dim=-1)
    if value_fn is None:
        return reward.sum(-1)
    values = [_as_lead(value_fn(params, s), lead, "value") for s in states]
    value = torch.stack(values[:-1], dim=-1).unsqueeze(-1)
    next_value = torch.stack(values[1:], dim=-1).unsqueeze(-1)
    done = torch.stack(dones, dim=-1).unsqueeze(-1)
    # A model's done ends the imagined trajectory and stops bootstrapping (it is a termination).
    adv = td_lambda_advantage_estimate(
        config.gamma,
        config.lmbda,
        value,
        next_value,
        reward.unsqueeze(-1),
        done,
        done,
        time_dim=-2,
    )
    return adv[..., 0, 0]


def mppi_plan(
    step: StepFn,
    params: Params,
    state: Any,
    config: MPPIConfig,
    *,
    value_fn: Callable[[Params, Any], torch.Tensor] | None = None,
    batch_ndim: int | None = None,
    key: torch.Tensor | None = None,
) -> torch.Tensor:
    """Model-predictive path-integral planning (TorchRL's ``MPPIPlanner.planning``). Samples.

    Candidates are ranked by their first-step TD(lambda) advantage ``G^lambda_0 - V(s_0)``
    (TorchRL's ``advantage_module``, here ``value_fn(params, state) -> [*batch, N(, 1)]`` with
    ``config.gamma`` / ``config.lmbda``), or by their return when ``value_fn`` is None. The top
    ``K`` are averaged with weights ``softmax(temperature * A)`` (TorchRL's ``exp(temperature *
    A) / sum``, computed stably).

    Args: as :func:`cem_plan` (including ``key``), plus ``value_fn``, which receives the
    world-model ``params``.

    Returns:
        ``[*batch, *action_shape]``.
    """
    bnd = _state_batch_ndim(state, batch_ndim)
    candidates = _expand_candidates(state, bnd, config.num_candidates)
    mean, std = _init_stats(state, config, bnd)
    for i in range(config.optim_steps):
        sub = None if key is None else random.fold_in(key, i)
        actions = _sample_actions(mean, std, config, bnd, sub)
        lead = actions.shape[: bnd + 1]
        rewards, dones, states = _rollout(step, params, candidates, actions, bnd)
        adv = _first_step_advantage(rewards, dones, states, params, value_fn, config, lead)
        top_adv, idx = adv.topk(config.top_k, dim=bnd)
        top = _gather_top(actions, idx, bnd)
        w = torch.softmax(config.temperature * top_adv, dim=bnd)
        w = w.reshape(*w.shape, *([1] * (top.ndim - w.ndim)))
        mean = (w * top).sum(bnd)
        std = (w * (top - mean.unsqueeze(bnd)).square()).sum(bnd).sqrt()
    return mean.select(bnd, 0)


class WorldModelWrapper(Sequential):
    """A transition model followed by a reward model (TorchRL's ``WorldModelWrapper``).

    A named :class:`funcrl.modules.Sequential` of two keyed modules; params
    ``{"transition_model": ..., "reward_model": ...}``. Calling it runs both; with
    :func:`world_model_step` it is the model the planners roll out.

    Args:
        transition_model: keyed module producing the next world state.
        reward_model: keyed module reading the world state and writing a reward.
    """

    def __init__(self, transition_model: Any, reward_model: Any) -> None:
        super().__init__({"transition_model": transition_model, "reward_model": reward_model})

    def get_transition_model_operator(self) -> Sequential:
        """The transition model alone (takes the whole params dict)."""
        return Sequential({"transition_model": self["transition_model"]})

    def get_reward_operator(self) -> Sequential:
        """The reward model alone (takes the whole params dict)."""
        return Sequential({"reward_model": self["reward_model"]})


def world_model_step(
    world_model: Any,
    *,
    action_key: NestedKey = "action",
    reward_key: NestedKey = "reward",
    done_key: NestedKey | None = None,
) -> StepFn:
    """A step function from a keyed world model (e.g. a :class:`WorldModelWrapper`).

    ``step(params, record, action)`` writes ``action`` to ``action_key``, runs
    ``world_model(params, record)`` and returns ``(output record, output[reward_key],
    output[done_key] or None)``: the world model writes the next world state over the current
    one, as TorchRL's ``ModelBasedEnvBase`` does.
    """

    def step(params: Params, record: Record, action: torch.Tensor) -> tuple:
        out = world_model(params, record.set(action_key, action))
        reward = read_key(out, reward_key, "world_model_step")
        done = None if done_key is None else read_key(out, done_key, "world_model_step")
        return out, reward, done

    return step


@dataclasses.dataclass(frozen=True, eq=False)
class CEMPlanner(Module):
    """CEM as a keyed policy: ``(params, record) -> record`` with ``action_key`` set.

    Args:
        step: the world-model step function over Records (see :func:`world_model_step`).
        config: a :class:`CEMConfig`.
        action_key: where the planned action is written. Default ``"action"``.

    ``params`` are the world model's; ``init`` returns ``{}`` (the planner has none).
    """

    step: StepFn
    config: CEMConfig
    action_key: NestedKey = "action"

    @property
    def out_keys(self) -> tuple[NestedKey, ...]:
        return (self.action_key,)

    def init(self, seed=0, *, device=None, dtype=torch.float32) -> Params:
        return {}

    def plan(self, params: Params, state: Any, **kwargs: Any) -> torch.Tensor:
        return cem_plan(self.step, params, state, self.config, **kwargs)

    def __call__(
        self, params: Params, record: Record, *, key: torch.Tensor | None = None, **options: Any
    ) -> Record:
        return record.set(self.action_key, self.plan(params, record, key=key))


@dataclasses.dataclass(frozen=True, eq=False)
class MPPIPlanner(Module):
    """MPPI as a keyed policy; as :class:`CEMPlanner` with an :class:`MPPIConfig` and an
    optional ``value_fn(params, record) -> [*batch, N(, 1)]`` for the TD(lambda) advantage."""

    step: StepFn
    config: MPPIConfig
    value_fn: Callable[[Params, Any], torch.Tensor] | None = None
    action_key: NestedKey = "action"

    @property
    def out_keys(self) -> tuple[NestedKey, ...]:
        return (self.action_key,)

    def init(self, seed=0, *, device=None, dtype=torch.float32) -> Params:
        return {}

    def plan(self, params: Params, state: Any, **kwargs: Any) -> torch.Tensor:
        return mppi_plan(self.step, params, state, self.config, value_fn=self.value_fn, **kwargs)

    def __call__(
        self, params: Params, record: Record, *, key: torch.Tensor | None = None, **options: Any
    ) -> Record:
        return record.set(self.action_key, self.plan(params, record, key=key))
