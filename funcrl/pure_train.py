"""Whole PPO training runs on pure environments: PureJaxRL on PyTorch.

With the environment written in torch (:mod:`funcrl.envs.pure`), one training iteration (a
rollout, GAE, epochs of shuffled minibatch updates) is one pure function of ``(state, key)``:
it compiles with ``torch.compile(fullgraph=True)`` into one graph and vmaps over seeds::

    env = funcrl.envs.pure.make("CartPole-v1")
    train = funcrl.pure_train.make_train(PPOTrainConfig(), env)
    out = train(funcrl.random.key(0))                                  # one seed
    out = train(funcrl.random.split(funcrl.random.key(0), 16))         # 16 seeds, vmapped
    out.metrics["episode_return"]                                      # [S, iterations]

The pieces are funcrl's own, not a second PPO: :func:`funcrl.envs.pure.collect` (a
``torch._higher_order_ops.scan`` under compile), :func:`funcrl.objectives.on_policy.advantages`
and :func:`funcrl.objectives.ppo.trainer` (TorchRL's ``ClipPPOLoss`` with PureJaxRL's settings:
value clipping, per-minibatch advantage normalisation, global-norm clip, Adam annealed to 0).

``train`` loops the iterations in Python (:func:`run_iterations`, shared with DQN's
:mod:`funcrl.pure_dqn`), calling the compiled (vmapped) iteration, so a progress bar can update
between them; the per-iteration metrics come back as tensors ``[S, I]``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.utils._pytree as pytree

from funcrl import _inductor, cpu_allocator, optim, tree
from funcrl import random as _random
from funcrl._small_products import SMALL_PRODUCTS
from funcrl._tracing import own_code
from funcrl._vmap import vmap_leading
from funcrl.envs import pure
from funcrl.objectives import on_policy, ppo
from funcrl.training import Trainer, TrainState

__all__ = [
    "PPOTrainConfig",
    "PPOTrainState",
    "TrainOutput",
    "PPOTrain",
    "chain_iterations",
    "default_iterations_per_call",
    "make_train",
    "run_iterations",
    "seeded_iteration",
]

_OWNER = "pure_train.PPOTrainConfig"
_TRAINABLE = ("actor", "critic")


def check_ints(owner: str, cfg: Any, names: tuple[str, ...], low: int = 1) -> None:
    """Each ``cfg.<name>`` is an int (not a bool) ``>= low``; a ``ValueError`` names it."""
    for name in names:
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ValueError(f"{owner}: {name} must be an int >= {low}, got {v!r}")


def check_finite(owner: str, cfg: Any, names: tuple[str, ...]) -> None:
    """Each ``cfg.<name>`` is a finite real number (not a bool); a ``TypeError`` names it."""
    for name in names:
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise TypeError(f"{owner}: {name} must be a finite number, got {v!r}")


def check_net(owner: str, hidden: Any, dtype: Any) -> None:
    """``hidden`` is a non-empty tuple of positive ints and ``dtype`` a float ``torch.dtype``."""
    if (
        not isinstance(hidden, tuple)
        or not hidden
        or not all(isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in hidden)
    ):
        raise ValueError(
            f"{owner}: hidden must be a non-empty tuple of positive ints, got {hidden!r}"
        )
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"{owner}: dtype must be a float torch.dtype, got {dtype!r}")


@dataclasses.dataclass(frozen=True)
class PPOTrainConfig:
    """PureJaxRL's PPO settings (its ``ppo.py`` for CartPole-v1) as defaults.

    Args:
        total_timesteps: env steps per seed; ``total_timesteps // (num_envs * num_steps)``
            iterations are run.
        num_envs, num_steps: each iteration collects ``num_envs`` x ``num_steps`` transitions.
        update_epochs, num_minibatches: passes over each rollout and minibatches per pass.
        lr: Adam's step size; ``anneal_lr`` takes it linearly to 0 over all minibatch steps.
        gamma, gae_lambda: the GAE estimator.
        clip_eps: the ratio clip, also the value clip (PureJaxRL clips both).
        ent_coef: entropy bonus weight.
        vf_coef: value loss weight; PureJaxRL's value loss is ``0.5 * max(squared errors)``,
            so the funcrl ``l2`` critic weight is ``0.5 * vf_coef``.
        max_grad_norm: global-norm gradient clip.
        hidden: hidden sizes of the separate actor and critic MLPs.
        activation: ``"tanh"`` (PureJaxRL's) or ``"relu"``.
        dtype: params' float dtype.
    """

    total_timesteps: int = 500_000
    num_envs: int = 4
    num_steps: int = 128
    update_epochs: int = 4
    num_minibatches: int = 4
    lr: float = 2.5e-4
    anneal_lr: bool = True
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_eps: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    hidden: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    dtype: torch.dtype = torch.float32

    def __post_init__(self) -> None:
        check_ints(
            _OWNER,
            self,
            ("total_timesteps", "num_envs", "num_steps", "update_epochs", "num_minibatches"),
        )
        check_finite(_OWNER, self, ("lr", "ent_coef", "vf_coef", "max_grad_norm", "clip_eps"))
        for name, low, strict in (
            ("lr", 0.0, True),
            ("max_grad_norm", 0.0, True),
            ("clip_eps", 0.0, True),
            ("vf_coef", 0.0, False),
        ):
            v = getattr(self, name)
            if v < low or (strict and v == low):
                raise ValueError(f"{_OWNER}: {name} must be {'>' if strict else '>='} 0, got {v}")
        for name in ("gamma", "gae_lambda"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise ValueError(f"{_OWNER}: {name} must be in [0, 1], got {v!r}")
        if self.clip_eps >= 1.0:
            raise ValueError(f"{_OWNER}: clip_eps must be < 1, got {self.clip_eps}")
        if self.total_timesteps < self.batch_size:
            raise ValueError(
                f"{_OWNER}: total_timesteps={self.total_timesteps} is less than one rollout "
                f"(num_envs x num_steps = {self.batch_size})"
            )
        if self.batch_size % self.num_minibatches:
            raise ValueError(
                f"{_OWNER}: a rollout of num_envs x num_steps = {self.batch_size} transitions "
                f"does not split into num_minibatches={self.num_minibatches} equal minibatches"
            )
        check_net(_OWNER, self.hidden, self.dtype)
        if self.activation not in ("tanh", "relu"):
            raise ValueError(
                f"{_OWNER}: activation must be 'tanh' or 'relu', got {self.activation!r}"
            )

    @property
    def batch_size(self) -> int:
        """Transitions per iteration: ``num_envs * num_steps``."""
        return self.num_envs * self.num_steps

    @property
    def num_updates(self) -> int:
        """Iterations per run: ``total_timesteps // (num_envs * num_steps)``."""
        return self.total_timesteps // self.batch_size


class PPOTrainState(NamedTuple):
    """Everything an iteration carries: params, the trainer's state (optimizer and update
    count), the environments' rollout state, and each environment's last finished episode's
    return ``[E]`` (0 until one finishes; PureJaxRL's ``returned_episode_returns``)."""

    params: Any
    trainer: TrainState
    rollout: pure.RolloutState
    last_return: torch.Tensor


class TrainOutput(NamedTuple):
    """``train(key)``'s result: the final state and per-iteration metrics ``[*S, I]``.

    ``metrics`` holds the trainer's averaged losses plus ``episode_return`` (the mean over
    envs of each env's last finished episode's return), ``episodes_finished`` and
    ``finished_return_sum`` (the returns of the episodes that ended in that iteration). Times
    are host wall-clock seconds: ``compile_time`` the first compiled call's (the compile and its
    ``iterations_per_call`` iterations), ``train_time`` the rest (``I - iterations_per_call``
    iterations; see :attr:`PPOTrain.__call__`). ``state`` is a
    :class:`PPOTrainState`, or a :class:`funcrl.pure_dqn.DQNTrainState` for DQN.
    """

    state: Any
    metrics: dict[str, torch.Tensor]
    compile_time: float
    train_time: float
    iterations_per_call: int = 1


def make_nets(config: PPOTrainConfig, env: pure.PureEnv) -> ppo.Nets:
    """PureJaxRL's actor-critic for ``env``: separate MLPs, orthogonal init (``sqrt 2`` hidden,
    0.01 on the policy head, 1 on the value head); categorical or tanh-normal policy."""
    from funcrl.nn import MLP

    discrete = getattr(env.action_spec, "n", None) is not None
    obs_dim = env.observation_spec.shape[-1]
    out = env.action_spec.n if discrete else 2 * env.action_spec.shape[-1]
    mlp = dict(num_cells=config.hidden, activation=config.activation, init_method="orthogonal")
    return ppo.Nets(
        actor=MLP(obs_dim, out, last_layer_init_scale=0.01, **mlp),
        critic=MLP(obs_dim, 1, **mlp),
        distribution="categorical" if discrete else "tanh_normal",
    )


def loss_config(config: PPOTrainConfig) -> ppo.Config:
    """The :class:`funcrl.objectives.ppo.Config` that reproduces PureJaxRL's loss on a
    ``[T, E]`` rollout."""
    return ppo.Config(
        clip_epsilon=config.clip_eps,
        entropy_coeff=config.ent_coef,
        critic_coeff=0.5 * config.vf_coef,
        loss_critic_type="l2",
        clip_value=True,
        normalize_advantage=True,
        gamma=config.gamma,
        lmbda=config.gae_lambda,
        time_dim=0,
    )


@dataclasses.dataclass(frozen=True)
class PPOTrain:
    """PPO on a pure environment as pure functions; built by :func:`make_train`.

    Attributes:
        config, env, nets, loss: the static configuration.
        trainer: :func:`funcrl.objectives.ppo.trainer`'s ``(init, step)``.
    """

    config: PPOTrainConfig
    env: pure.PureEnv
    nets: ppo.Nets
    loss: ppo.Config
    optimizer: optim.GradientTransformation
    trainer: Trainer

    def init(self, key: torch.Tensor) -> PPOTrainState:
        """A fresh run for one key ``[2]``: params, optimizer state, reset environments.

        Host-side (the params' init is not vmappable); :meth:`__call__` stacks one per seed.
        """
        params, rollout = init_params_and_rollout(
            ppo, key, self.env, self.loss, self.nets, self.config.dtype, self.config.num_envs
        )
        return PPOTrainState(
            params, self.trainer.init(params), rollout, torch.zeros_like(rollout.episode_return)
        )

    def policy(self, params: Any, observation: torch.Tensor, key: torch.Tensor):
        """The rollout policy for :func:`funcrl.envs.pure.collect`: ``(action, extras)`` with
        the log-prob and logits (or loc/scale) that the loss reads back."""
        entries = on_policy.explore(params, observation, nets=self.nets, key=key)
        action = entries.pop("action")
        return action, entries

    def iteration(
        self, state: PPOTrainState, key: torch.Tensor
    ) -> tuple[PPOTrainState, dict[str, torch.Tensor]]:
        """One iteration: collect ``num_steps`` x ``num_envs``, GAE, epochs of minibatch updates.

        Pure in ``(state, key)``: compiles with ``fullgraph=True`` into one graph (the rollout
        a scan) and vmaps over seeds.
        """
        cfg = self.config
        k_roll, k_train = _random.split(key, 2).unbind(0)
        rollout, traj = pure.collect(
            self.policy, state.params, self.env, state.rollout, k_roll, cfg.num_steps
        )
        params, tstate, metrics = self.update(state.params, state.trainer, traj, k_train)
        last_return, finished, ret_sum = _episode_stats(traj, state.last_return)
        metrics = {
            **metrics,
            "episode_return": last_return.mean(),
            "episodes_finished": finished,
            "finished_return_sum": ret_sum,
        }
        return PPOTrainState(params, tstate, rollout, last_return), metrics

    def update(
        self,
        params: Any,
        state: TrainState,
        rollout: Any,
        key: torch.Tensor,
    ) -> tuple[Any, TrainState, dict[str, torch.Tensor]]:
        """``ppo.trainer(...).step`` with its minibatch loop as a scan under ``torch.compile``.

        The same computation and the same draws as :func:`funcrl.objectives.ppo.trainer`'s
        ``step`` (GAE with the params before the update; per epoch a permutation and one key
        per minibatch split from ``key`` the same way; metrics the last epoch's means), but
        ``epochs x num_minibatches`` gradient steps compile as one scan body instead of that
        many unrolled copies (:func:`funcrl.envs.pure.scan`).

        Args:
            params: ``actor`` and ``critic`` params.
            state: the trainer's :class:`~funcrl.training.TrainState`.
            rollout: a trajectory ``[T, E]`` from :func:`funcrl.envs.pure.collect`.
            key: the update's key (shuffles and the loss's draws).
        """
        cfg = self.config
        epochs, mbs = cfg.update_epochs, cfg.num_minibatches
        # GAE in log2(T) rounds of shifted products, not T unrolled steps (a graph ~13% larger
        # that compiled ~10% slower) nor a [T, T] product (its cumprod and T^2 reduction were
        # ~8% of a 16-seed iteration; perf).
        rollout = on_policy.advantages(
            params,
            rollout,
            config=self.loss,
            nets=self.nets,
            owner="pure_train.update",
            method="associative",
        )
        flat = rollout.reshape(-1)
        n = flat.batch_size[0]
        index, keys = on_policy.minibatch_draws(key, epochs, mbs, n)
        trainable = {k: params[k] for k in _TRAINABLE}
        leaves, spec = tree.flatten((trainable, state.opt))
        # One buffer per dtype for the carry (params, optimizer state) and for the rollout's
        # rows: Inductor's scan allocates and wraps every carried or captured tensor anew each
        # step, so ~60 tensors crossing the loop became ~4 (and a minibatch is one gather per
        # dtype). Packing the rollout's scan the same way was measured too: no faster on one
        # seed, ~7% slower on 16 (its per-step copies), so collect carries plain tensors.
        carry0, layout = tree.pack(leaves)
        row_leaves, row_spec = pytree.tree_flatten(flat)
        rows, row_layout = tree.pack(row_leaves, batch_ndim=1)
        # The trainer's own minibatch step (its loss, gradient and optimizer update), scanned.
        minibatch = on_policy.minibatch_trainer(self.loss_fn, self.optimizer, trainable=_TRAINABLE)
        # Only what the body reads is captured (a captured tensor is one more per step).
        frozen = {k: v for k, v in params.items() if k not in _TRAINABLE}

        def body(carry, xs):
            train_params, opt_state = tree.unflatten(spec, tree.unpack(carry, layout))
            idx, k = xs
            batch = pytree.tree_unflatten(tree.unpack([r[idx] for r in rows], row_layout), row_spec)
            # A fresh step counter (the scan counts nothing): the body capturing ``state.step``
            # from outside made Inductor's compiled scan crash (a segfault, torch 2.13).
            stepped, mb_state, losses = minibatch.step(
                {**frozen, **train_params}, TrainState(opt_state, idx.new_zeros(())), batch, k
            )
            new, opt_state = {name: stepped[name] for name in _TRAINABLE}, mb_state.opt
            # Per-sample entries (td_error) are not averaged; one-element ones are.
            out = {k: v.detach().reshape(()).clone() for k, v in losses.items() if v.numel() == 1}
            # pack's buffers are fresh tensors: scan's outputs may not alias its inputs.
            return tree.pack(tree.leaves((new, opt_state)))[0], out

        carry, outs = pure.scan(body, carry0, (index, keys))
        # Copies, not views of one buffer: the next call's inputs keep their strides.
        train_params, opt_state = tree.unflatten(spec, tree.unpack(carry, layout, copy=True))
        metrics = {k: v[-mbs:].mean(0) for k, v in outs.items()}
        new_state = TrainState(opt_state, state.step + 1)
        return {**params, **train_params}, new_state, metrics

    @property
    def loss_fn(self) -> Callable[..., dict[str, torch.Tensor]]:
        """``ppo.loss`` bound to this run's config and nets."""
        return functools.partial(ppo.loss, config=self.loss, nets=self.nets)

    def __call__(
        self,
        key: torch.Tensor,
        *,
        compile: bool = True,
        backend: str = "inductor",
        progress: bool = False,
        callback: Callable[[int, dict[str, torch.Tensor]], None] | None = None,
        cpu_cache: bool = True,
        iterations_per_call: int | None = None,
    ) -> TrainOutput:
        """Trains from ``key`` (``[2]``: one seed) or ``keys [S, 2]`` (``S`` seeds, vmapped).

        Args:
            key: a :mod:`funcrl.random` key or a stack of them.
            compile: ``torch.compile(fullgraph=True)`` the (vmapped) iteration.
            backend: the compile backend (``"aot_eager"`` compiles fast, for tests).
            progress: a tqdm bar over env steps, updated between iterations.
            callback: ``callback(i, metrics)`` after iteration ``i`` (host-side; e.g. logging).
            cpu_cache: on a CPU, run the compiled iterations inside
                :func:`funcrl.cpu_allocator.caching` (freed blocks reused instead of returned to
                malloc; ~18% less time per one-seed iteration). No effect on other devices or
                without ``compile``.
            iterations_per_call: ``K`` iterations per compiled call, as one loop in the graph
                (:func:`chain_iterations`), so that what each call costs on the host (Python,
                dynamo, the graph's inputs and outputs) is paid once per ``K``; must divide
                ``config.num_updates``. The progress bar and ``callback`` advance once per
                call. ``None``: :func:`default_iterations_per_call`.

        Returns:
            :class:`TrainOutput`; metrics ``[I]`` (one seed) or ``[S, I]``.
        """
        n = self.config.num_updates
        if iterations_per_call is None:
            iterations_per_call = default_iterations_per_call(
                n,
                compile=compile,
                backend=backend,
                # A bad key is run_iterations' to report.
                device=key.device if isinstance(key, torch.Tensor) else "cpu",
            )
        return run_iterations(
            self,
            key,
            num_iterations=n,
            steps_per_iteration=self.config.batch_size,
            compile=compile,
            backend=backend,
            progress=progress,
            callback=callback,
            cpu_cache=cpu_cache,
            iterations_per_call=iterations_per_call,
            owner="pure_train.train",
        )


def init_params_and_rollout(
    objective: Any,
    key: torch.Tensor,
    env: pure.PureEnv,
    config: Any,
    nets: Any,
    dtype: torch.dtype,
    num_envs: int,
) -> tuple[Any, pure.RolloutState]:
    """``objective.init`` params and ``num_envs`` fresh episodes from one key ``[2]``, on the
    key's device (shared by PPO and DQN's ``init``)."""
    k_params, k_env = _random.split(key, 2).unbind(0)
    params = objective.init(
        k_params,
        env.observation_spec,
        env.action_spec,
        config,
        nets,
        device=key.device,
        dtype=dtype,
    )
    return params, pure.init_rollout(env, k_env, num_envs)


# The most iterations default_iterations_per_call puts in one call. At 8 a one-seed PPO call
# (CartPole, PureJaxRL's settings) is ~60 ms of work: the host's per-call costs, 1-2 ms in paired
# runs of 1 and 8 per call, are then a few percent of it, and the progress bar still moves
# several times a second.
MAX_ITERATIONS_PER_CALL = 8


def default_iterations_per_call(
    num_iterations: int, *, compile: bool = True, backend: str = "inductor", device: Any = "cpu"
) -> int:
    """The largest divisor of ``num_iterations`` up to :data:`MAX_ITERATIONS_PER_CALL` when the
    iteration is compiled by Inductor for a CPU on a torch that runs a loop inside a loop
    (``funcrl._inductor.NESTED_LOOPS``); 1 otherwise (eager, other backends, and other devices,
    where a loop inside a loop has not been run)."""
    if (
        isinstance(num_iterations, bool)
        or not isinstance(num_iterations, int)
        or num_iterations < 1
    ):
        raise ValueError(
            "pure_train.default_iterations_per_call: num_iterations must be an int >= 1, "
            f"got {num_iterations!r}"
        )
    ok = compile and backend == "inductor" and torch.device(device).type == "cpu"
    if not (ok and _inductor.NESTED_LOOPS):
        return 1
    return max(d for d in range(1, MAX_ITERATIONS_PER_CALL + 1) if num_iterations % d == 0)


def chain_iterations(
    iteration: Callable[[Any, torch.Tensor], tuple[Any, dict[str, torch.Tensor]]],
) -> Callable[[Any, torch.Tensor], tuple[Any, dict[str, torch.Tensor]]]:
    """``iteration(state, key)`` run once per key of ``keys [K, 2]``, as one loop.

    Returns ``chained(state, keys) -> (state, metrics)`` with every metric stacked ``[K, ...]``:
    the same draws and results as ``K`` calls of ``iteration`` with ``keys[0]``, ``keys[1]``,
    ... (:func:`funcrl.envs.pure.scan`; under ``torch.compile`` one ``scan`` whose body is the
    iteration, with its own rollout and update loops nested inside).
    """

    def chained(state: Any, keys: torch.Tensor) -> tuple[Any, dict[str, torch.Tensor]]:
        # funcrl.tree, not torch.utils._pytree: dynamo traces the latter's recursive unflatten
        # one inlined call per node, ~6 s of the one-seed trace for the state's ~70 nodes.
        leaves, spec = tree.flatten(state)

        def body(carry, key):
            new, metrics = iteration(tree.unflatten(spec, list(carry)), key)
            # scan's outputs may alias neither its inputs nor each other: copies.
            return tuple(x.clone() for x in tree.leaves(new)), tree.map(torch.clone, metrics)

        carry, metrics = pure.scan(body, tuple(leaves), keys)
        return tree.unflatten(spec, list(carry)), metrics

    return chained


def seeded_iteration(
    algo: Any,
    *,
    compile: bool = True,
    backend: str = "inductor",
    device: Any = "cpu",
    iterations_per_call: int = 1,
) -> Callable[[Any, torch.Tensor], tuple[Any, dict[str, torch.Tensor]]]:
    """``algo.iteration`` vmapped over a leading seed dim of ``(state, key)`` (``randomness=
    "error"``: every draw comes from the keys) and, with ``compile``, compiled as one graph.

    With ``iterations_per_call`` ``K > 1`` a call runs ``K`` iterations
    (:func:`chain_iterations`): ``(state, keys [S, K, 2]) -> (state, metrics [S, K])``.
    """
    step = algo.iteration if iterations_per_call == 1 else chain_iterations(algo.iteration)
    # vmap_leading: torch.func.vmap's batching, ~6 s cheaper for dynamo to trace (funcrl._vmap).
    fn = vmap_leading(step, randomness="error", owner="pure_train.seeded_iteration")
    if not compile:
        return fn
    options = None
    if backend == "inductor":
        _inductor.prepare()
        # scan cacheable on disk: a second process loads the iteration instead of compiling
        # it again (~8 s instead of ~80 s for one seed on a CPU).
        options = dict(_inductor.CACHEABLE_LOOPS)
    if backend == "inductor" and torch.device(device).type == "cpu":
        # The C++ wrapper: the rollout and update scans call their compiled bodies from
        # C++, not Python (an iteration is 144 such calls). Measured on one seed, same
        # shared machine: 14 ms per iteration instead of 83 ms; same compile time.
        # tanh as 2 / (1 + exp(-2x)) - 1: Sleef's tanh was ~10% of a one-seed iteration (perf);
        # the formula is within ~1e-7 of it in absolute terms (its relative error near 0,
        # pytorch#148241, does not matter for activations). 6.4 -> 6.0 ms per iteration.
        # (No C++ wrapper on a torch whose C++ wrapper cannot call a loop body.)
        # The wrapper built apart from the kernels, at -O1 instead of -O3: g++ took ~25 s of a
        # one-seed compile as one file, ~14 s as two, at the same time per iteration.
        # Weight gradients with <= 4 columns as their transpose (funcrl._small_products): MKL
        # ran the first layer's at 4-5 GFLOP/s. Alternating rounds in one process: 16 seeds
        # 96.5 -> 85.7 ms per iteration, one seed 10.35 -> 8.57 ms (medians of 10).
        options.update(
            {
                "cpp_wrapper": _inductor.CPP_WRAPPER_LOOPS,
                "cpp_wrapper_build_separate": _inductor.CPP_WRAPPER_LOOPS,
                "cpp.use_decompose_tanh": True,
                "post_grad_custom_post_pass": SMALL_PRODUCTS,
            }
        )
    # dynamic=False: a second config in the same process (another num_updates, num_envs, ...)
    # recompiles with static shapes. dynamo's automatic dynamic shapes would instead turn the
    # changed ints into SymInts, which the vmapped step cannot take (the learning-rate schedule
    # divides a batched tensor by one).
    # own_code: its own dynamo cache, or a ninth config compiled in one process would fail.
    return torch.compile(
        own_code(fn), fullgraph=True, dynamic=False, backend=backend, options=options
    )


def run_iterations(
    algo: Any,
    key: torch.Tensor,
    *,
    num_iterations: int,
    steps_per_iteration: int,
    compile: bool = True,
    backend: str = "inductor",
    progress: bool = False,
    callback: Callable[[int, dict[str, torch.Tensor]], None] | None = None,
    cpu_cache: bool = True,
    iterations_per_call: int = 1,
    owner: str = "pure_train.train",
) -> TrainOutput:
    """The host loop of a pure training run: ``algo.init`` per seed, then ``num_iterations``
    iterations of the (vmapped, compiled) ``algo.iteration(state, key)``, ``iterations_per_call``
    per call.

    Shared by PPO and DQN (:mod:`funcrl.pure_dqn`); see :meth:`PPOTrain.__call__` for the
    arguments. ``steps_per_iteration`` env steps per seed advance the progress bar.
    """
    if (
        not isinstance(key, torch.Tensor)
        or key.dtype != torch.int64
        or key.ndim not in (1, 2)
        or key.shape[-1] != 2
    ):
        got = (
            f"dtype {key.dtype} shape {list(key.shape)}"
            if isinstance(key, torch.Tensor)
            else type(key).__name__
        )
        raise ValueError(
            f"{owner}: key must be an int64 funcrl.random key [2] or a stack of "
            f"keys [S, 2], got {got}"
        )
    if not isinstance(cpu_cache, bool):
        raise TypeError(f"{owner}: cpu_cache must be a bool, got {type(cpu_cache).__name__}")
    k = iterations_per_call
    if isinstance(k, bool) or not isinstance(k, int) or k < 1 or num_iterations % k:
        raise ValueError(
            f"{owner}: iterations_per_call must be an int >= 1 that divides the run's "
            f"{num_iterations} iterations, got {k!r}"
        )
    batched = key.ndim == 2
    seeds = key if batched else key.unsqueeze(0)
    k_init, k_iter = torch.func.vmap(lambda k: _random.split(k, 2))(seeds).unbind(1)
    states = [algo.init(k) for k in k_init]
    state = pytree.tree_map(lambda *xs: torch.stack(xs).contiguous(), *states)
    fn = seeded_iteration(
        algo, compile=compile, backend=backend, device=seeds.device, iterations_per_call=k
    )
    n = num_iterations
    # keys[c] is call c's: [S, 2], one key per seed, or [S, K, 2] for K iterations per call;
    # iteration i draws from the same key either way.
    keys = torch.func.vmap(lambda key: _random.split(key, n))(k_iter)
    if k > 1:
        keys = keys.unflatten(1, (n // k, k))
    keys = keys.transpose(0, 1).contiguous()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n * steps_per_iteration, unit="step", dynamic_ncols=True)
    history: list[dict[str, torch.Tensor]] = []
    # Inductor's C++ scan loops allocate every body output each step; on a CPU the caching
    # allocator serves those from free lists instead of malloc (see funcrl.cpu_allocator).
    allocator = (
        cpu_allocator.caching()
        if cpu_cache and compile and seeds.device.type == "cpu"
        else contextlib.nullcontext()
    )
    start = time.perf_counter()
    compile_time = 0.0
    with allocator:
        for c in range(n // k):
            if compile and c >= 2:
                # From the third call on, every input is the previous call's output (same shapes,
                # dtypes and strides) or keys[c]: dynamo's guards, ~0.2 ms of a ~5 ms one-seed
                # iteration, are skipped around this call only (the callback's own compiled code
                # keeps its guards). The first two calls ran guarded, so any recompile for the
                # outputs' layout happened then, and with more than one graph dynamo still checks
                # what tells them apart.
                with torch.compiler.set_stance("default", skip_guard_eval_unsafe=True):
                    state, metrics = fn(state, keys[c])
            else:
                state, metrics = fn(state, keys[c])
            if k == 1:
                metrics = {name: v.unsqueeze(1) for name, v in metrics.items()}
            history.append(metrics)
            if c == 0:
                _synchronize(seeds.device)  # on CUDA the call returns before its kernels finish
                compile_time = time.perf_counter() - start
                start = time.perf_counter()
            if callback is not None:
                for j in range(k):
                    callback(c * k + j, {name: v[:, j] for name, v in metrics.items()})
            if bar is not None:
                bar.update(k * steps_per_iteration)
                ret = float(metrics["episode_return"][:, -1].mean())
                bar.set_postfix(ret=f"{ret:.1f}", refresh=False)
    _synchronize(seeds.device)
    train_time = time.perf_counter() - start
    if bar is not None:
        bar.close()
    stacked = {name: torch.cat([h[name] for h in history], dim=1) for name in history[0]}
    if not batched:
        state = pytree.tree_map(lambda x: x[0], state)
        stacked = {name: v[0] for name, v in stacked.items()}
    return TrainOutput(state, stacked, compile_time, train_time, k)


def _synchronize(device: torch.device) -> None:
    """Waits for ``device``'s queued kernels (CUDA only), so host timers measure the work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _episode_stats(
    traj: Any, last_return: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """From a trajectory ``[T, E]``: each env's last finished episode's return ``[E]`` (the
    previous value where none finished), the number of finished episodes and their return sum.

    Static shapes only (no ``nonzero``), so it compiles and vmaps.
    """
    done = traj["next", "done"].squeeze(-1)  # [T, E]
    ret = traj["next", "episode_return"]  # [T, E], running totals including the step
    steps = torch.arange(done.shape[0], device=done.device).unsqueeze(-1)
    last = torch.where(done, steps, -1).amax(0)  # [E], -1 where no episode ended
    at_last = ret.gather(0, last.clamp_min(0).unsqueeze(0)).squeeze(0)
    new_last = torch.where(last >= 0, at_last.to(last_return.dtype), last_return)
    finished = done.sum().to(ret.dtype)
    ret_sum = torch.where(done, ret, torch.zeros_like(ret)).sum()
    return new_last, finished, ret_sum


def make_train(config: PPOTrainConfig, env: pure.PureEnv) -> PPOTrain:
    """PPO on ``env`` with ``config``: a :class:`PPOTrain` whose ``train(key)`` runs it all.

    Args:
        config: a :class:`PPOTrainConfig` (PureJaxRL's defaults).
        env: a :class:`funcrl.envs.pure.PureEnv`, e.g. ``envs.pure.make("CartPole-v1")``.
    """
    if not isinstance(config, PPOTrainConfig):
        raise TypeError(
            f"pure_train.make_train: config must be a PPOTrainConfig, got {type(config).__name__}"
        )
    if not isinstance(env, pure.PureEnv):
        raise TypeError(
            "pure_train.make_train: env must be a funcrl.envs.pure.PureEnv (e.g. "
            f"envs.pure.make('CartPole-v1')), got {type(env).__name__}"
        )
    nets = make_nets(config, env)
    loss = loss_config(config)
    lr: Any = config.lr
    if config.anneal_lr:
        steps = config.num_updates * config.update_epochs * config.num_minibatches
        lr = optim.linear_schedule(config.lr, 0.0, steps)
    # Flattened: the clip and Adam run once over the 12 leaves concatenated, not once per leaf.
    # Paired cold compiles of one seed's iteration: 80-86 s against 90-98 s, the same time per
    # iteration (docs/results.md).
    opt = optim.flatten(
        optim.chain(optim.clip_by_global_norm(config.max_grad_norm), optim.adam(lr, eps=1e-5))
    )
    trainer = ppo.trainer(
        opt,
        config=loss,
        nets=nets,
        epochs=config.update_epochs,
        num_minibatches=config.num_minibatches,
    )
    return PPOTrain(config, env, nets, loss, opt, trainer)
