"""The on-policy training loop shared by the example scripts (PPO, A2C).

An algorithm script builds an :class:`Agent` (its nets, params and ``funcrl`` trainer) from a
config that subclasses :class:`OnPolicyConfig`, and hands it to :func:`train`, which does what
every on-policy method shares:

* a gymnasium vector env (``funcrl.envs.VecEnv``) stepped ``num_envs`` x ``num_steps`` per
  iteration by the behaviour policy (``funcrl.objectives.on_policy.explore``), which stores the
  log-prob and distribution params the losses read back;
* optional running observation normalisation (``RunningValueNorm``, clipped to +-10) and reward
  scaling (``on_policy.RewardScaling``), gymnasium's / SB3's ``VecNormalize`` as pure states;
* one ``trainer.step(params, state, rollout, key)`` per rollout (advantages, then epochs of
  minibatch steps);
* with ``--jit`` (``funcrl.jit``, the faster) or ``--compile`` (``torch.compile``), the rollout's
  per-step function (:class:`StepFns`) and one minibatch step are compiled and the epochs and
  minibatches looped on the host (:func:`host_loop_update`), with the same draws and results as
  the eager trainer;
* a tqdm progress bar with steps/s and the recent training return;
* a deterministic evaluation every ``eval_every`` steps and at the end (``funcrl.envs.evaluate``,
  seeds ``1_000_000 + 1_000 * seed``, disjoint from training), with the clock paused;
* ``log.csv``, ``curve.png``, ``checkpoint.pt`` and ``result.json`` in ``out``
  (``examples/_util.py``; written atomically, no pickle).

Randomness: everything is drawn from ``funcrl.random.key(seed)``, split by use
(``_util.run_keys``): the params' init, the env seeds, iteration ``i``'s actions
(``fold_in(keys.explore, i)``, step ``t`` of it ``fold_in(., t)``) and its update's minibatch
shuffles (``fold_in(keys.update, i)``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import sys
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _util  # noqa: E402

from funcrl import envs, optim  # noqa: E402
from funcrl import random as frandom  # noqa: E402
from funcrl.jit import compile_step  # noqa: E402
from funcrl.jit import jit as funcrl_jit  # noqa: E402
from funcrl.modules.value_norm import RunningValueNorm  # noqa: E402
from funcrl.nn import MLP, StateIndependentScale  # noqa: E402
from funcrl.objectives import on_policy  # noqa: E402
from funcrl.record import Record  # noqa: E402
from funcrl.training import Trainer  # noqa: E402

__all__ = [
    "OnPolicyConfig", "Agent", "make_nets", "learning_rate", "check_config", "collect",
    "StepFns", "step_fns", "host_loop_update", "train",
]  # fmt: skip

OUT_FILES = ("checkpoint.pt", "log.csv")
LOG_FIELDS = ["step", "time", "sps", "episode_return", "episode_length", "eval_return", "eval_std"]


@dataclasses.dataclass
class OnPolicyConfig:
    """The loop's settings and the hyperparameters every on-policy script shares; algorithm
    configs subclass it (overriding defaults) and add their own."""

    env: str = dataclasses.field(default="CartPole-v1", metadata={"help": "gymnasium id"})
    seed: int = dataclasses.field(default=0, metadata={"help": "seed of params, envs and shuffles"})
    total_steps: int = dataclasses.field(default=500_000, metadata={"help": "env steps"})
    num_envs: int = dataclasses.field(default=4, metadata={"help": "parallel environments"})
    num_steps: int = dataclasses.field(default=128, metadata={"help": "steps per env per rollout"})
    epochs: int = dataclasses.field(default=4, metadata={"help": "passes over each rollout"})
    num_minibatches: int = dataclasses.field(default=4, metadata={"help": "minibatches per epoch"})
    learning_rate: float = dataclasses.field(default=2.5e-4, metadata={"help": "step size"})
    anneal_lr: bool = dataclasses.field(default=True, metadata={"help": "lr linearly to 0"})
    max_grad_norm: float = dataclasses.field(default=0.5, metadata={"help": "global-norm clip"})
    gamma: float = dataclasses.field(default=0.99, metadata={"help": "discount"})
    lmbda: float = dataclasses.field(default=0.95, metadata={"help": "GAE lambda"})
    entropy_coeff: float = dataclasses.field(default=0.01, metadata={"help": "entropy bonus"})
    critic_coeff: float = dataclasses.field(
        default=0.5, metadata={"help": "weight of the squared value error"}
    )
    num_cells: tuple[int, ...] = dataclasses.field(
        default=(64, 64), metadata={"help": "hidden sizes of actor and critic"}
    )
    activation: str = dataclasses.field(default="tanh", metadata={"help": "hidden activation"})
    ortho_init: bool = dataclasses.field(
        default=True,
        metadata={"help": "orthogonal init (sqrt 2 hidden, 0.01 policy head, 1 value head)"},
    )
    init_scale: float = dataclasses.field(
        default=1.0, metadata={"help": "continuous policies: the initial action std"}
    )
    distribution: str = dataclasses.field(
        default="tanh_normal",
        metadata={
            "help": "continuous policies: tanh_normal (squashed into the action bounds) or "
            "normal (a Gaussian; its samples are clipped to the bounds for the env and stored "
            "unclipped, as SB3 does)"
        },
    )
    state_independent_std: bool = dataclasses.field(
        default=False,
        metadata={
            "help": "continuous policies: a learned std that does not depend on the observation, "
            "exp of a parameter starting at log(--init-scale) (SB3's and the PPO paper's MuJoCo "
            "policy; funcrl.nn.StateIndependentScale)"
        },
    )
    normalize_observations: bool = dataclasses.field(
        default=False, metadata={"help": "running mean/std of observations"}
    )
    scale_rewards: bool = dataclasses.field(
        default=False, metadata={"help": "rewards / running std of the discounted return"}
    )
    eval_every: int = dataclasses.field(default=50_000, metadata={"help": "0: only at the end"})
    eval_episodes: int = dataclasses.field(default=10, metadata={"help": "evaluation episodes"})
    checkpoint_every: int = dataclasses.field(default=100_000, metadata={"help": "0: at the end"})
    out: str = dataclasses.field(default="runs/on_policy", metadata={"help": "output directory"})
    overwrite: bool = dataclasses.field(default=False, metadata={"help": "replace an earlier run"})
    progress: bool = dataclasses.field(default=True, metadata={"help": "progress bar"})
    threads: int = dataclasses.field(default=1, metadata={"help": "torch CPU threads"})
    compile: bool = dataclasses.field(
        default=False,
        metadata={
            "help": "torch.compile (fullgraph) the policy step and one minibatch update, looped "
            "on the host (~50 s to compile on a CPU, then ~4x faster updates)"
        },
    )
    jit: bool = dataclasses.field(
        default=False,
        metadata={
            "help": "like --compile, with funcrl.jit in place of torch.compile: traced once per "
            "input signature, called without dynamo's guards (cheaper calls), kernels reused from "
            "Inductor's on-disk cache by later runs"
        },
    )
    device: str = dataclasses.field(
        default="auto", metadata={"help": "auto (CUDA when available, else CPU), cpu or cuda[:i]"}
    )
    cudagraphs: bool = dataclasses.field(
        default=False,
        metadata={"help": 'CUDA graphs for the update (torch.compile mode="reduce-overhead")'},
    )
    flush_denormal: bool = dataclasses.field(
        default=True,
        metadata={
            "help": "flush denormal floats to zero on the CPU while training (FTZ/DAZ, "
            "TensorFlow's default): Adam's tiny second moments otherwise slow the update ~10%%"
        },
    )


class Agent(NamedTuple):
    """What an algorithm script gives :func:`train`.

    Attributes:
        nets: the objective's ``Nets``.
        params: fresh params.
        trainer: ``funcrl.<algo>.trainer(...)``: advantages, then ``epochs`` x
            ``num_minibatches`` steps, one pure function of a rollout (the eager update).
        advantages: ``(params, rollout [E, T]) -> rollout`` with ``advantage`` and
            ``value_target`` (``on_policy.advantages`` bound to the loss config).
        minibatch_trainer: ``on_policy.minibatch_trainer(loss, optimizer)``: one gradient step
            on one minibatch, exactly ``trainer``'s; the unit ``--jit`` / ``--compile`` compile
            (its state has ``trainer``'s structure).
    """

    nets: Any
    params: Any
    trainer: Trainer
    advantages: Callable[[Any, Record], Record]
    minibatch_trainer: Trainer


def make_nets(cfg: OnPolicyConfig, observation_spec: Any, action_spec: Any) -> dict[str, Any]:
    """The ``Nets`` arguments for the env's specs: MLP actor and critic with ``cfg.num_cells`` and
    ``cfg.activation``; categorical for a discrete action space, else a ``TanhNormal`` on the
    action bounds whose std starts near ``cfg.init_scale``.

    With ``ortho_init`` (PureJaxRL's and SB3's default) every layer is orthogonal with gain
    sqrt 2, the policy head scaled by 0.01 (actions start near uniform / the mean near 0) and the
    value head by 1.
    """
    discrete = getattr(action_spec, "n", None) is not None
    obs_dim = observation_spec.shape[-1]
    out = action_spec.n if discrete else 2 * action_spec.shape[-1]
    mlp: dict[str, Any] = dict(num_cells=cfg.num_cells, activation=cfg.activation)
    head: dict[str, Any] = {}
    if cfg.ortho_init:
        mlp["init_method"] = "orthogonal"
        head["last_layer_init_scale"] = 0.01
    critic = MLP(obs_dim, 1, **mlp)
    if discrete and (cfg.state_independent_std or cfg.distribution != "tanh_normal"):
        raise ValueError(
            "--distribution and --state-independent-std are for continuous action spaces; this "
            f"env's actions are discrete ({action_spec.n})"
        )
    if discrete:
        return dict(
            actor=MLP(obs_dim, out, **mlp, **head), critic=critic, distribution="categorical"
        )
    if cfg.state_independent_std:
        a = action_spec.shape[-1]
        actor = StateIndependentScale(MLP(obs_dim, a, **mlp, **head), a, math.log(cfg.init_scale))
        # exp of the parameter is the std: it starts at cfg.init_scale.
        return dict(actor=actor, critic=critic, distribution=cfg.distribution, scale_mapping="exp")
    return dict(
        actor=MLP(obs_dim, out, **mlp, **head),
        critic=critic,
        distribution=cfg.distribution,
        # biased_softplus_b maps a zero output to std b, so the initial std is cfg.init_scale.
        scale_mapping=f"biased_softplus_{cfg.init_scale}",
    )


def learning_rate(cfg: OnPolicyConfig, updates_per_rollout: int) -> optim.ScalarOrSchedule:
    """``cfg.learning_rate``, annealed linearly to 0 over the run's gradient steps with
    ``anneal_lr`` (``updates_per_rollout`` steps per rollout)."""
    if not cfg.anneal_lr:
        return cfg.learning_rate
    iterations = cfg.total_steps // (cfg.num_envs * cfg.num_steps)
    steps = max(1, iterations * updates_per_rollout)
    return optim.linear_schedule(cfg.learning_rate, 0.0, steps)


@dataclasses.dataclass(frozen=True)
class Normalizers:
    """Optional running statistics: observations (``RunningValueNorm``) and rewards
    (``on_policy.RewardScaling``); ``None`` where switched off. Their states are pure values."""

    observation: RunningValueNorm | None
    reward: on_policy.RewardScaling | None

    def obs(self, state: dict[str, Any], x: torch.Tensor) -> torch.Tensor:
        if self.observation is None:
            return x
        return self.observation.normalize(state["observation"], x).clamp(-10.0, 10.0)


def make_normalizers(cfg: OnPolicyConfig, env: envs.VecEnv) -> tuple[Normalizers, dict[str, Any]]:
    """The run's normalizers and their initial states (``{}`` when both are off)."""
    obs_shape = tuple(env.observation_spec.shape)
    norm = Normalizers(
        RunningValueNorm(shape=obs_shape, epsilon=1e-8) if cfg.normalize_observations else None,
        on_policy.RewardScaling(gamma=cfg.gamma) if cfg.scale_rewards else None,
    )
    state: dict[str, Any] = {}
    if norm.observation is not None:
        state["observation"] = norm.observation.init()
    if norm.reward is not None:
        state["reward"] = norm.reward.init(cfg.num_envs)
    return norm, state


class StepFns(NamedTuple):
    """The pure functions a rollout step calls around the env (each compiled as one graph with
    ``--compile`` / ``--jit``).

    Attributes:
        act: ``(params, norm_state, raw_observation [E, o], rollout_key, t) -> (entries,
            observation [E, o], norm_state)``: folds the raw observation into the running
            statistics, normalises it with them (clipped to +-10) and draws the policy's entries
            (``on_policy.explore``) with key ``fold_in(rollout_key, t)``; ``t`` is a 0-d int64
            tensor, so one graph serves every step (a Python int would recompile).
        observe: ``(norm_state, (next_raw_observation [E, o], reward [E], terminated [E])) ->
            (next_observation [E, o], reward [E], norm_state)``: the transition's next observation
            normalised with the statistics its own step used, the reward scaled
            (``RewardScaling``); ``None`` when neither normaliser is on.
        observe_act: ``observe`` of step ``t - 1``'s transition, then ``act`` at step ``t``, in
            one call (one compiled call per env step instead of two): ``(params, norm_state,
            previous, raw_observation, rollout_key, t) -> ((next_observation, reward), entries,
            observation, norm_state)``; ``None`` with ``observe``.
    """

    act: Callable[..., tuple[dict[str, torch.Tensor], torch.Tensor, dict]]
    observe: Callable[..., tuple[torch.Tensor, torch.Tensor, dict]] | None
    observe_act: Callable[..., tuple] | None


def step_fns(nets: Any, norm: Normalizers) -> StepFns:
    """The :class:`StepFns` of a policy's ``nets`` and the run's normalisers."""

    def act(params, norm_state, raw_observation, rollout_key, t):
        if norm.observation is not None:
            stats = norm.observation.update(norm_state["observation"], raw_observation)
            norm_state = {**norm_state, "observation": stats}
        observation = norm.obs(norm_state, raw_observation)
        key = frandom.fold_in(rollout_key, t)
        return on_policy.explore(params, observation, nets=nets, key=key), observation, norm_state

    def observe(norm_state, previous):
        next_raw_observation, reward, terminated = previous
        next_observation = norm.obs(norm_state, next_raw_observation)
        if norm.reward is not None:
            rs, reward = norm.reward(norm_state["reward"], reward, terminated)
            norm_state = {**norm_state, "reward": rs}
        return next_observation, reward, norm_state

    def observe_act(params, norm_state, previous, raw_observation, rollout_key, t):
        next_observation, reward, norm_state = observe(norm_state, previous)
        entries, observation, norm_state = act(params, norm_state, raw_observation, rollout_key, t)
        return (next_observation, reward), entries, observation, norm_state

    if norm.observation is None and norm.reward is None:
        return StepFns(act, None, None)
    return StepFns(act, observe, observe_act)


def collect(
    env: envs.VecEnv,
    params: Any,
    fns: StepFns,
    norm_state: dict,
    obs: torch.Tensor,
    num_steps: int,
    rollout_key: torch.Tensor,
    action_bounds: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[Record, torch.Tensor, dict]:
    """``num_steps`` steps of every env under the policy.

    With ``action_bounds`` ``(low, high)`` (an unbounded Gaussian policy) the env gets each
    action clipped to them and the rollout keeps the sampled action, whose log-prob the loss
    compares (SB3's clipping).

    Per step the host makes one call (``fns.act``, or ``fns.observe_act`` finishing the previous
    transition) and one env step, keeping their tensors in lists; the rollout is stacked once at
    the end (a Record built per step cost ~0.1 ms a step).

    Returns:
        The rollout ``[E, T]`` (with the behaviour log-prob and distribution params the loss reads;
        observations normalised with the running statistics, rewards scaled, where switched on),
        the next raw observation ``[E, o]`` and the updated statistics.
    """
    ts = torch.arange(num_steps, device=obs.device).unbind()
    # The policy acts without the critic: its tensors would be flattened, checked and passed
    # into every step's compiled call for nothing.
    params = {k: v for k, v in params.items() if k != "critic"}
    steps, entries, observations, next_observations, rewards = [], [], [], [], []
    previous = None  # the last transition's raw (next observation, reward, terminated)
    for t in range(num_steps):
        if previous is None:
            out, observation, norm_state = fns.act(params, norm_state, obs, rollout_key, ts[t])
        else:
            (next_obs, reward), out, observation, norm_state = fns.observe_act(
                params, norm_state, previous, obs, rollout_key, ts[t]
            )
            next_observations.append(next_obs)
            rewards.append(reward)
        action = out["action"]
        transition, nxt = env.step(
            action if action_bounds is None else action.clamp(*action_bounds)
        )
        steps.append(transition)
        entries.append(out)
        if fns.observe is not None:
            observations.append(observation)
            previous = (
                transition["next", "observation"],
                transition["next", "reward"].squeeze(-1),
                transition["next", "terminated"].squeeze(-1),
            )
        obs = nxt["observation"]
    if previous is not None:
        next_obs, reward, norm_state = fns.observe(norm_state, previous)
        next_observations.append(next_obs)
        rewards.append(reward)
    rollout = Record.stack(steps, dim=1)
    keep = ("action",) if action_bounds is None else ()  # else: the unclipped samples
    extras = {k: torch.stack([e[k] for e in entries], dim=1) for k in entries[0] if k not in keep}
    rollout = rollout.update(extras)
    if fns.observe is not None:
        rollout = rollout.set("observation", torch.stack(observations, dim=1))
        rollout = rollout.set(("next", "observation"), torch.stack(next_observations, dim=1))
        rollout = rollout.set(("next", "reward"), torch.stack(rewards, dim=1).unsqueeze(-1))
    return rollout, obs, norm_state


def compiler(cfg: OnPolicyConfig) -> Callable[[Callable], Callable]:
    """What ``--jit`` / ``--compile`` wrap the rollout step and the minibatch step in:
    ``funcrl.jit`` (traced once per signature, called without guards) or
    ``torch.compile(fullgraph=True)``; CUDA graphs with ``--cudagraphs``."""
    if cfg.jit:
        return functools.partial(funcrl_jit, cudagraphs=cfg.cudagraphs)
    return functools.partial(compile_step, cudagraphs=cfg.cudagraphs)


def host_loop_update(
    agent: Agent,
    epochs: int,
    num_minibatches: int,
    compile_fn: Callable[[Callable], Callable] = lambda f: f,
) -> Callable:
    """``(params, state, rollout, key) -> (params, state, metrics)``, the trainer's update with
    the epochs and minibatches looped on the host around one minibatch step compiled by
    ``compile_fn`` (:func:`compiler`): advantages once with the params before the update, every
    epoch's shuffle and minibatch keys in one call (``on_policy.minibatch_draws``: the trainer's
    draws), then one call per minibatch that gathers its rows from the flattened rollout inside
    the compiled graph. One minibatch step is the graph compiled, not the whole update
    (``epochs x num_minibatches`` steps unrolled, 640 for rl-zoo's Pendulum, far too many to
    compile).

    ``state.step`` counts minibatch steps here (the eager trainer counts rollouts); ``metrics``
    averages the last epoch's one-element losses, as the trainer does.
    """

    def minibatch(params, state, flat, index, key):
        return agent.minibatch_trainer.step(params, state, flat[index], key)

    step = compile_fn(minibatch)
    draws = compile_fn(on_policy.minibatch_draws)

    def update(params, state, rollout, key):
        with torch.no_grad():
            rollout = agent.advantages(params, rollout)
        flat = rollout.reshape(-1)
        index, keys = draws(key, epochs, num_minibatches, flat.batch_size[0])
        last = (epochs - 1) * num_minibatches
        sums: dict[str, torch.Tensor] = {}
        for i in range(epochs * num_minibatches):
            params, state, losses = step(params, state, flat, index[i], keys[i])
            if i >= last:  # the metrics are the last epoch's
                for k, v in losses.items():
                    if v.numel() == 1:
                        sums[k] = sums[k] + v if k in sums else v
        return params, state, {k: v / num_minibatches for k, v in sums.items()}

    return update


def evaluate(
    cfg: OnPolicyConfig,
    params: Any,
    nets: Any,
    norm: Normalizers,
    norm_state: dict,
    action_bounds: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Deterministic returns ``[eval_episodes]`` (seeds disjoint from training), observations
    normalised with the statistics frozen at their current values, actions clipped to
    ``action_bounds`` where given."""

    def act(o):
        a = on_policy.act(params, norm.obs(norm_state, o), nets=nets, mode="deterministic")
        return a if action_bounds is None else a.clamp(*action_bounds)

    seed = 1_000_000 + 1_000 * cfg.seed
    dev = _util.resolve_device(cfg.device)
    return envs.evaluate(act, cfg.env, cfg.eval_episodes, seed=seed, device=dev)["return"]


def _save(path, cfg, params, state, norm_state: dict, step: int, elapsed: float, key) -> None:
    # The root key and the step count: every stream is fold_in(stream, iteration).
    tree = {"params": params, "opt": state.opt, "updates": state.step, "step": step, "key": key}
    tree["normalizers"] = norm_state
    _util.save_checkpoint(path, {**tree, "elapsed": elapsed}, config=cfg)


def _eval_stats(rets: torch.Tensor) -> dict[str, float]:
    std = float(rets.std()) if rets.numel() > 1 else 0.0
    return {"eval_return": float(rets.mean()), "eval_std": std}


# The on-policy settings by range (a config built in Python never met _util.check_config).
_AT_LEAST_ONE = ("num_envs", "num_steps", "epochs", "num_minibatches", "total_steps")
_NON_NEGATIVE = ("entropy_coeff", "critic_coeff", "learning_rate")
_UNIT = ("gamma", "lmbda")


def check_config(script: str, cfg: OnPolicyConfig) -> None:
    """Refuses settings that would run wrongly: counts below 1, negative weights, a discount or
    lambda outside ``[0, 1]``, an initial std that is not positive, a run shorter than one
    rollout, a rollout that does not split evenly into minibatches. The config may come from
    Python, not only from the command line, so this repeats what ``_util.check_config`` checks.

    Raises:
        ValueError: naming the script, the flag, the allowed range and the value.
    """

    def flag(name: str) -> str:
        return "--" + name.replace("_", "-")

    for name in _AT_LEAST_ONE:
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{script}: {flag(name)} must be an int >= 1, got {v!r}")
    for name in _NON_NEGATIVE:
        if not getattr(cfg, name) >= 0:  # NaN fails too
            raise ValueError(f"{script}: {flag(name)} must be >= 0, got {getattr(cfg, name)}")
    for name in _UNIT:
        if not 0 <= getattr(cfg, name) <= 1:
            raise ValueError(f"{script}: {flag(name)} must be in [0, 1], got {getattr(cfg, name)}")
    if not cfg.init_scale > 0:
        raise ValueError(f"{script}: --init-scale must be > 0, got {cfg.init_scale}")
    if cfg.distribution not in ("tanh_normal", "normal"):
        raise ValueError(
            f"{script}: --distribution must be 'tanh_normal' or 'normal', got {cfg.distribution!r}"
        )
    per_iter = cfg.num_envs * cfg.num_steps
    if cfg.total_steps < per_iter:
        raise ValueError(
            f"{script}: --total-steps {cfg.total_steps} is less than one rollout "
            f"(--num-envs x --num-steps = {per_iter})"
        )
    if per_iter % cfg.num_minibatches:
        raise ValueError(
            f"{script}: a rollout of {per_iter} steps does not split into --num-minibatches "
            f"{cfg.num_minibatches}"
        )


def train(
    cfg: OnPolicyConfig,
    make_agent: Callable[[Any, Any, Any], Agent],
    *,
    title: str,
    metrics: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Runs the on-policy loop.

    Args:
        cfg: the run's config.
        make_agent: ``(cfg, observation_spec, action_spec) -> Agent``.
        title: the algorithm's name, for the curve's title (``"PPO"``).
        metrics: the trainer's metrics logged beside each finished episode.

    Returns:
        A summary (``eval_return``, ``eval_returns``, ``train_time`` in seconds with evaluations
        and checkpoints excluded, ``steps``, paths, ``config``) and the final ``params``.
    """
    with _util.flush_denormal(cfg.flush_denormal), _util.heap_freezer() as freeze_heap:
        return _train(cfg, make_agent, freeze_heap, title=title, metrics=metrics)


def _train(
    cfg: OnPolicyConfig,
    make_agent: Callable[[Any, Any, Any], Agent],
    freeze_heap: Callable[[], None],
    *,
    title: str,
    metrics: tuple[str, ...],
) -> dict[str, Any]:
    per_iter = cfg.num_envs * cfg.num_steps
    _util.prepare_out(cfg.out, None, cfg.overwrite, OUT_FILES)
    torch.set_num_threads(cfg.threads)
    dev = _util.resolve_device(cfg.device)
    # Every draw from one key: params (make_agent), env seeds, rollouts' actions and the
    # updates' minibatch shuffles, folded with the iteration; on the device, as the rollouts.
    root = frandom.key(cfg.seed)
    keys = _util.Keys(*(k.to(dev) for k in _util.run_keys(root)))
    env = envs.VecEnv(cfg.env, cfg.num_envs, device=dev)  # rollouts arrive on the device
    agent = make_agent(cfg, env.observation_spec, env.action_spec)
    nets, params, trainer = agent.nets, agent.params, agent.trainer
    params = _util.to_device(params, dev)
    norm, norm_state = make_normalizers(cfg, env)
    norm_state = _util.to_device(norm_state, dev)
    state = trainer.init(params)
    fns, step_fn = step_fns(nets, norm), trainer.step
    bounds = None  # a Gaussian's actions are clipped to the bounds for the env
    if not nets.discrete and nets.distribution == "normal":
        bounds = (env.action_spec.low.to(dev), env.action_spec.high.to(dev))
    if cfg.compile or cfg.jit:
        compile_fn = compiler(cfg)
        fns = StepFns(*(None if f is None else compile_fn(f) for f in fns))
        step_fn = host_loop_update(agent, cfg.epochs, cfg.num_minibatches, compile_fn)
    obs = env.reset(seed=_util.int_seed(keys.env))["observation"]
    log = _util.CSVLogger(cfg.out, LOG_FIELDS + list(metrics), resume=False)
    ckpt = os.path.join(cfg.out, "checkpoint.pt")
    timer = _util.Timer()
    recent: deque[float] = deque(maxlen=20)
    bar = None
    if cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.total_steps, unit="step", dynamic_ncols=True)
    step, sps = 0, 0.0
    next_eval = cfg.eval_every or None
    next_ckpt = cfg.checkpoint_every or None
    while step + per_iter <= cfg.total_steps:
        with torch.no_grad():
            k_explore = frandom.fold_in(keys.explore, step // per_iter)
            rollout, obs, norm_state = collect(
                env, params, fns, norm_state, obs, cfg.num_steps, k_explore, bounds
            )
        k_update = frandom.fold_in(keys.update, step // per_iter)
        params, state, out = step_fn(params, state, rollout, k_update)
        if step == 0:
            freeze_heap()  # the steps are compiled now
        step += per_iter
        now = timer.elapsed()
        sps = step / max(now, 1e-9)
        episodes = env.completed_episodes()
        rets = episodes["return"].tolist()
        if rets:
            # Metrics are read (a host sync) only when an episode ended, i.e. a row is written.
            values = {k: float(out[k]) for k in metrics if k in out}
        for ret, length in zip(rets, episodes["length"].tolist()):
            recent.append(ret)
            log.log({"step": step, "time": now, "episode_return": ret, "episode_length": length,
                     **values})  # fmt: skip
        if bar is not None:
            bar.update(per_iter)
            mean = sum(recent) / len(recent) if recent else float("nan")
            bar.set_postfix(sps=f"{sps:.0f}", ret=f"{mean:.1f}", refresh=False)
        if next_eval is not None and step >= next_eval and step + per_iter <= cfg.total_steps:
            with timer.paused():
                ev = evaluate(cfg, params, nets, norm, norm_state, bounds)
            log.log({"step": step, "time": now, "sps": sps, **_eval_stats(ev)})
            next_eval += cfg.eval_every
        if next_ckpt is not None and step >= next_ckpt:
            with timer.paused():
                _save(ckpt, cfg, params, state, norm_state, step, timer.elapsed(), root)
            next_ckpt += cfg.checkpoint_every
    if bar is not None:
        bar.close()
    env.close()
    train_time = timer.elapsed()
    ev = evaluate(cfg, params, nets, norm, norm_state, bounds)
    log.log({"step": step, "time": train_time, "sps": sps, **_eval_stats(ev)})
    log.close()
    _save(ckpt, cfg, params, state, norm_state, step, train_time, root)
    png = _util.plot_curve(log.path, os.path.join(cfg.out, "curve.png"), f"{title} on {cfg.env}")
    result = {
        "eval_return": float(ev.mean()),
        "eval_returns": ev.tolist(),
        "png": png,
        "csv": log.path,
        "checkpoint": ckpt,
        "train_time": train_time,
        "steps": step,
        "config": dataclasses.asdict(cfg),
    }
    _util.write_json(os.path.join(cfg.out, "result.json"), result)
    return {**result, "params": params}
