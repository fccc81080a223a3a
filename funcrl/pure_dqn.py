"""Whole DQN training runs on pure environments: PureJaxRL's ``dqn.py`` on PyTorch.

One iteration (``steps_per_iteration`` steps of ``num_envs`` environments, each step: an
epsilon-greedy action, the environments' step, a replay-buffer add, one gradient step on a
sampled batch once learning has started, the target network's update every
``target_update_interval`` env steps) is one pure function of ``(state, key)``; it compiles as
one graph (the steps a :func:`funcrl.envs.pure.scan`) and vmaps over seeds::

    env = funcrl.envs.pure.make("CartPole-v1")
    train = funcrl.pure_dqn.make_train(DQNTrainConfig(), env)
    out = train(funcrl.random.split(funcrl.random.key(0), 16))        # 16 seeds, vmapped
    out.metrics["episode_return"]                                      # [S, iterations]

The pieces are funcrl's own: :func:`funcrl.envs.pure.step`, :func:`funcrl.objectives.dqn.act`
(epsilon-greedy from a key), :func:`funcrl.buffers.add` / :func:`~funcrl.buffers.sample` (the
buffer is part of the state), :func:`funcrl.training.update` on :func:`funcrl.objectives.dqn.loss`
and :func:`funcrl.targets.polyak` (``tau=1``: PureJaxRL's hard copy).

Where PureJaxRL differs: its loss stops bootstrapping on ``done`` (time limits too); funcrl's
DQN loss stops only on ``terminated`` (TorchRL's convention), bootstrapping through CartPole's
500-step truncation. Its ``lax.cond`` skips the gradient step before learning starts; here the
step is always computed and kept only where learning is on (a ``torch.where``: no data-dependent
branch in the graph), which costs ``learning_starts / total_timesteps`` (2%) of extra updates.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import torch
import torch.utils._pytree as pytree

from funcrl import buffers, optim
from funcrl import random as _random
from funcrl import targets as _targets
from funcrl.envs import pure
from funcrl.objectives import dqn
from funcrl.pure_train import check_finite, check_ints, check_net, init_params_and_rollout
from funcrl.record import Record
from funcrl.training import Trainer, TrainState, update

__all__ = ["DQNTrainConfig", "DQNTrainState", "DQNTrain", "make_train"]

_OWNER = "pure_dqn.DQNTrainConfig"
# What the buffer stores of each transition: what dqn.loss reads (TD(0)).
_STORED = ("observation", "action", ("next", "observation"), ("next", "reward"))
_STORED_FLAGS = (("next", "terminated"), ("next", "done"))


@dataclasses.dataclass(frozen=True)
class DQNTrainConfig:
    """PureJaxRL's DQN settings (its ``dqn.py`` for CartPole-v1) as defaults.

    Counts in env steps (``timesteps``) are over all ``num_envs`` environments, as PureJaxRL
    counts them: one step of the environments is ``num_envs`` timesteps.

    Args:
        total_timesteps: env steps per seed.
        num_envs: environments stepped together.
        buffer_size, batch_size: the replay buffer's capacity and the sampled batch.
        epsilon_start, epsilon_finish, epsilon_anneal_time: epsilon falls linearly from start
            to finish over ``epsilon_anneal_time`` timesteps, then stays.
        target_update_interval: timesteps between target updates (a multiple of ``num_envs``).
        tau: the target update's weight of the online params (1: a hard copy).
        lr: Adam's step size; ``lr_linear_decay`` takes it linearly to 0 over the run's steps.
        learning_starts: timesteps of pure collection before the first gradient step.
        training_interval: timesteps between gradient steps (a multiple of ``num_envs``).
        gamma: discount.
        hidden: the Q-network's hidden sizes (ReLU MLP).
        steps_per_iteration: environment steps per compiled iteration (a progress-bar tick);
            ``total_timesteps // (num_envs * steps_per_iteration)`` iterations are run.
        dtype: params' float dtype.
    """

    total_timesteps: int = 500_000
    num_envs: int = 10
    buffer_size: int = 10_000
    batch_size: int = 128
    epsilon_start: float = 1.0
    epsilon_finish: float = 0.05
    epsilon_anneal_time: int = 250_000
    target_update_interval: int = 500
    tau: float = 1.0
    lr: float = 2.5e-4
    lr_linear_decay: bool = False
    learning_starts: int = 10_000
    training_interval: int = 10
    gamma: float = 0.99
    hidden: tuple[int, ...] = (120, 84)
    steps_per_iteration: int = 50
    dtype: torch.dtype = torch.float32

    def __post_init__(self) -> None:
        check_ints(
            _OWNER,
            self,
            (
                "total_timesteps",
                "num_envs",
                "buffer_size",
                "batch_size",
                "epsilon_anneal_time",
                "target_update_interval",
                "training_interval",
                "steps_per_iteration",
            ),
        )
        check_ints(_OWNER, self, ("learning_starts",), low=0)
        check_finite(_OWNER, self, ("epsilon_start", "epsilon_finish", "gamma", "tau", "lr"))
        for name in ("epsilon_start", "epsilon_finish", "gamma"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{_OWNER}: {name} must be in [0, 1], got {v}")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"{_OWNER}: tau must be in (0, 1], got {self.tau}")
        if self.lr <= 0.0:
            raise ValueError(f"{_OWNER}: lr must be > 0, got {self.lr}")
        for name in ("target_update_interval", "training_interval"):
            v = getattr(self, name)
            if v % self.num_envs:
                # Timesteps advance num_envs at a time: other values would never (or rarely) hit.
                raise ValueError(
                    f"{_OWNER}: {name}={v} is not a multiple of num_envs={self.num_envs} "
                    "(timesteps advance num_envs per environment step)"
                )
        if self.batch_size > self.buffer_size:
            raise ValueError(
                f"{_OWNER}: batch_size={self.batch_size} is larger than buffer_size="
                f"{self.buffer_size}; the buffer could never be sampled"
            )
        if self.total_timesteps < self.timesteps_per_iteration:
            raise ValueError(
                f"{_OWNER}: total_timesteps={self.total_timesteps} is less than one iteration "
                f"(num_envs x steps_per_iteration = {self.timesteps_per_iteration})"
            )
        check_net(_OWNER, self.hidden, self.dtype)

    @property
    def timesteps_per_iteration(self) -> int:
        """``num_envs * steps_per_iteration``."""
        return self.num_envs * self.steps_per_iteration

    @property
    def num_iterations(self) -> int:
        """``total_timesteps // (num_envs * steps_per_iteration)``."""
        return self.total_timesteps // self.timesteps_per_iteration


class DQNTrainState(NamedTuple):
    """What an iteration carries: ``{"value", "target_value"}`` params, the trainer's state,
    the replay buffer, the environments, the timesteps so far (0-d int64) and each
    environment's last finished episode's return ``[E]``."""

    params: Any
    trainer: TrainState
    buffer: buffers.ReplayState
    rollout: pure.RolloutState
    timesteps: torch.Tensor
    last_return: torch.Tensor


def epsilon(config: DQNTrainConfig, timesteps: torch.Tensor) -> torch.Tensor:
    """PureJaxRL's schedule: linear from ``epsilon_start`` to ``epsilon_finish`` over
    ``epsilon_anneal_time`` timesteps, then flat. ``timesteps`` 0-d -> 0-d float32."""
    slope = (config.epsilon_finish - config.epsilon_start) / config.epsilon_anneal_time
    eps = slope * timesteps.to(torch.float32) + config.epsilon_start
    # Clip on the side the schedule moves towards (PureJaxRL's clip(..., finish) for a decay).
    if config.epsilon_finish <= config.epsilon_start:
        return eps.clamp_min(config.epsilon_finish)
    return eps.clamp_max(config.epsilon_finish)


@dataclasses.dataclass(frozen=True)
class DQNTrain:
    """DQN on a pure environment as pure functions; built by :func:`make_train`.

    Attributes:
        config, env, nets, loss: the static configuration.
        trainer: :func:`funcrl.training.update` on :func:`funcrl.objectives.dqn.loss`.
    """

    config: DQNTrainConfig
    env: pure.PureEnv
    nets: dqn.Nets
    loss: dqn.Config
    trainer: Trainer

    def init(self, key: torch.Tensor) -> DQNTrainState:
        """A fresh run for one key ``[2]``: params, optimizer state, an empty buffer, reset
        environments. Host-side; :meth:`__call__` stacks one per seed."""
        env, cfg = self.env, self.config
        params, rollout = init_params_and_rollout(
            dqn, key, env, self.loss, self.nets, cfg.dtype, cfg.num_envs
        )
        # One throwaway step gives the stored entries' shapes and dtypes.
        _, example = pure.step(self.policy, params, env, rollout, _random.key(0, device=key.device))
        buffer = buffers.init(cfg.buffer_size, _stored(example), key.device)
        timesteps = torch.zeros((), dtype=torch.int64, device=key.device)
        last_return = torch.zeros_like(rollout.episode_return)
        return DQNTrainState(
            params, self.trainer.init(params), buffer, rollout, timesteps, last_return
        )

    def policy(
        self,
        params: Any,
        observation: torch.Tensor,
        key: torch.Tensor,
        eps: float | torch.Tensor = 1.0,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Epsilon-greedy :func:`funcrl.objectives.dqn.act` for :func:`funcrl.envs.pure.step`."""
        action = dqn.act(
            params,
            observation,
            config=self.loss,
            nets=self.nets,
            mode="random",
            key=key,
            epsilon=eps,
        )
        return action, {}

    def env_step(
        self, state: DQNTrainState, key: torch.Tensor
    ) -> tuple[DQNTrainState, dict[str, torch.Tensor]]:
        """One step of the environments, the buffer add, the gradient step (kept once learning
        has started, every ``training_interval`` timesteps) and the target update (every
        ``target_update_interval`` timesteps): PureJaxRL's ``_update_step``. Pure."""
        cfg = self.config
        k_act, k_sample = _random.split(key, 2).unbind(0)
        eps = epsilon(cfg, state.timesteps)
        policy = functools.partial(self.policy, eps=eps)
        rollout, transition = pure.step(policy, state.params, self.env, state.rollout, k_act)
        timesteps = state.timesteps + cfg.num_envs
        buffer = buffers.add(state.buffer, _stored(transition))

        batch = buffers.sample(buffer, cfg.batch_size, key=k_sample).exclude("index")
        stepped, tstate, losses = self.trainer.step(state.params, state.trainer, batch)
        learn = (
            (buffer.size >= cfg.batch_size)
            & (timesteps > cfg.learning_starts)
            & (timesteps % cfg.training_interval == 0)
        )
        params, tstate = pytree.tree_map(
            lambda new, old: torch.where(learn, new, old),
            (stepped, tstate),
            (state.params, state.trainer),
        )
        sync = timesteps % cfg.target_update_interval == 0
        target = _targets.polyak(params["target_value"], params["value"], cfg.tau)
        params = {
            **params,
            "target_value": pytree.tree_map(
                lambda new, old: torch.where(sync, new, old), target, params["target_value"]
            ),
        }
        out = {
            "loss": torch.where(learn, losses["loss"], torch.zeros_like(losses["loss"])),
            "learned": learn.to(losses["loss"].dtype),
            "done": transition["next", "done"],
            "episode_return": transition["next", "episode_return"],
        }
        new = DQNTrainState(params, tstate, buffer, rollout, timesteps, state.last_return)
        return new, out

    def iteration(
        self, state: DQNTrainState, key: torch.Tensor
    ) -> tuple[DQNTrainState, dict[str, torch.Tensor]]:
        """``steps_per_iteration`` :meth:`env_step` as one :func:`funcrl.envs.pure.scan`.

        Returns the new state and the iteration's metrics: ``loss`` (the mean over its gradient
        steps, 0 before learning starts), ``updates`` (gradient steps taken), ``epsilon`` (at
        its end), ``episode_return`` (the mean over envs of each env's last finished episode's
        return), ``episodes_finished`` and ``finished_return_sum``.
        """
        from funcrl.pure_train import _episode_stats

        leaves, spec = pytree.tree_flatten(state)

        def body(carry, k):
            new, out = self.env_step(pytree.tree_unflatten(list(carry), spec), k)
            # scan's outputs may alias neither its inputs nor each other: copy them.
            return tuple(x.clone() for x in pytree.tree_leaves(new)), pytree.tree_map(
                torch.clone, out
            )

        keys = _random.split(key, self.config.steps_per_iteration)
        carry, outs = pure.scan(body, tuple(leaves), keys)
        new = pytree.tree_unflatten(list(carry), spec)
        traj = Record(
            {"next": {"done": outs["done"], "episode_return": outs["episode_return"]}},
            batch_ndim=2,
        )
        last_return, finished, ret_sum = _episode_stats(traj, state.last_return)
        updates = outs["learned"].sum()
        metrics = {
            "loss": outs["loss"].sum() / updates.clamp_min(1.0),
            "updates": updates,
            "epsilon": epsilon(self.config, new.timesteps),
            "episode_return": last_return.mean(),
            "episodes_finished": finished,
            "finished_return_sum": ret_sum,
        }
        return new._replace(last_return=last_return), metrics

    def __call__(
        self,
        key: torch.Tensor,
        *,
        compile: bool = True,
        backend: str = "inductor",
        progress: bool = False,
        callback: Any = None,
        cpu_cache: bool = True,
    ):
        """Trains from ``key`` (``[2]``: one seed) or ``keys [S, 2]`` (``S`` seeds, vmapped).

        Same arguments and result as :meth:`funcrl.pure_train.PPOTrain.__call__`: a
        :class:`funcrl.pure_train.TrainOutput` with metrics ``[I]`` or ``[S, I]``, but one
        iteration per compiled call (no ``iterations_per_call``): a loop over DQN's iterations
        would carry, and copy once per iteration, the whole replay buffer.
        """
        from funcrl.pure_train import run_iterations

        return run_iterations(
            self,
            key,
            num_iterations=self.config.num_iterations,
            steps_per_iteration=self.config.timesteps_per_iteration,
            compile=compile,
            backend=backend,
            progress=progress,
            callback=callback,
            cpu_cache=cpu_cache,
            owner="pure_dqn.train",
        )


def _stored(transition: Record) -> Record:
    """The entries of a transition ``[E]`` that the buffer keeps."""
    return transition.select(*_STORED, *_STORED_FLAGS)


def make_nets(config: DQNTrainConfig, env: pure.PureEnv) -> dqn.Nets:
    """PureJaxRL's Q-network: a ReLU MLP ``obs -> hidden -> n`` actions."""
    from funcrl.nn import MLP

    n = env.action_spec.n
    obs_dim = env.observation_spec.shape[-1]
    return dqn.Nets(value=MLP(obs_dim, n, num_cells=config.hidden, activation="relu"))


def make_train(config: DQNTrainConfig, env: pure.PureEnv) -> DQNTrain:
    """DQN on ``env`` with ``config``: a :class:`DQNTrain` whose ``train(key)`` runs it all.

    Args:
        config: a :class:`DQNTrainConfig` (PureJaxRL's defaults).
        env: a :class:`funcrl.envs.pure.PureEnv` with discrete actions, e.g.
            ``envs.pure.make("CartPole-v1")``.
    """
    if not isinstance(config, DQNTrainConfig):
        raise TypeError(
            f"pure_dqn.make_train: config must be a DQNTrainConfig, got {type(config).__name__}"
        )
    if not isinstance(env, pure.PureEnv):
        raise TypeError(
            "pure_dqn.make_train: env must be a funcrl.envs.pure.PureEnv (e.g. "
            f"envs.pure.make('CartPole-v1')), got {type(env).__name__}"
        )
    if getattr(env.action_spec, "n", None) is None:
        raise ValueError(
            f"pure_dqn.make_train: DQN needs discrete actions; {env.name}'s action_spec is "
            f"{type(env.action_spec).__name__} with shape {tuple(env.action_spec.shape)}"
        )
    nets = make_nets(config, env)
    loss = dqn.Config(action_space="categorical", gamma=config.gamma, delay_value=True)
    lr: Any = config.lr
    if config.lr_linear_decay:
        lr = optim.linear_schedule(config.lr, 0.0, config.total_timesteps // config.num_envs)
    trainer = update(
        functools.partial(dqn.loss, config=loss, nets=nets),
        # One Adam over the network's leaves concatenated: a smaller graph to compile, the
        # same numbers (optim.flatten).
        optim.flatten(optim.adam(lr)),
        trainable=("value",),
    )
    return DQNTrain(config, env, nets, loss, trainer)
