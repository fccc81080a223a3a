"""Multi-agent RL on VMAS, in one readable file: QMIX/VDN (discrete) and MADDPG/IDDPG/MASAC
(continuous).

    pip install vmas
    python examples/multiagent.py --total-steps 150000 --out runs/multiagent   # navigation, QMIX+VDN
    python examples/multiagent.py --mixers vdn --n-agents 4 --scenario navigation
    python examples/multiagent.py --scenario balance --algos maddpg masac --out runs/balance

VMAS (Bettini et al. 2022) is a vectorized multi-agent simulator written in torch, so
``--num-envs`` worlds step together as one batch.

* ``navigation`` (discrete actions): every agent must reach its own goal (lidar to avoid the
  others); the reward is shared, the team's progress towards the goals, minus collision penalties.
  Trained with ``funcrl.qmix.loss`` (TorchRL's ``QMixerLoss``): every agent's Q values come from one
  local network shared by the agents (``MultiAgentMLP`` with ``share_params=True``), the values of
  the taken actions are mixed into ``Q_tot`` by the QMIX hypernetwork mixer (conditioned on the
  global state: all agents' observations, as TorchRL's example) or summed (VDN), with a TD(0)
  target from Polyak-averaged target nets and per-agent epsilon-greedy exploration. The team reward
  is the mean of the agents' rewards (TorchRL's example).
* ``balance`` (continuous actions): ``n_agents`` agents carry a line with a package on top to a goal
  under gravity; the shared reward is ``100 x`` the package's progress towards the goal, and ``-10``
  when the line or the package touches the floor (which ends the episode). Trained with
  ``funcrl.ddpg.loss`` (TorchRL's ``DDPGLoss``) as MADDPG (Lowe et al. 2017: decentralised actors,
  a centralised critic that sees every agent's observation and action) or IDDPG (a decentralised
  critic), or with ``funcrl.sac.loss`` as MASAC, on TorchRL's grouped keys through
  ``funcrl.multiagent.group_view`` (nets from ``funcrl.multiagent.ddpg_nets`` / ``sac_nets``, as
  TorchRL's ``sota-implementations/multiagent``). DDPG explores with Gaussian noise annealed
  linearly (TorchRL's ``AdditiveGaussianModule``); every agent learns from its own reward.

Measured on the shared 2-core CPU (seed 0, defaults, one thread): ``--scenario balance`` (MADDPG,
96k steps, 32 worlds, 2 updates per step) ran in 4 min 20 s; the deterministic team return went
from -10.2 to -3.7 (best -3.7), against -9.1 for the uniform random policy (a policy that stands
still gets about -1.5 and one that pushes straight up about +10.7: this budget learns to avoid most
falls, not yet to carry the package to the goal; DDPG runs on this task are unstable, and with
other settings collapsed back to the bounds of the actions).

Writes ``<out>/<algo>/log.csv``, ``<out>/curve.png`` (evaluation return vs environment steps for
each algorithm, with the random policy's return as a line) and ``<out>/summary.json``, and prints
the final deterministic evaluation of each algorithm next to the random policy's.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
from collections.abc import Callable

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _util  # noqa: E402

from funcrl import buffers, ddpg, optim, qmix, sac, training  # noqa: E402
from funcrl import random as frandom  # noqa: E402
from funcrl.jit import compile_step  # noqa: E402
from funcrl.multiagent import (  # noqa: E402
    MultiAgentMLP,
    VDNMixer,
    ddpg_nets,
    group_view,
    sac_nets,
    sac_target_entropy,
)
from funcrl.record import Record  # noqa: E402
from funcrl.specs import Bounded, Categorical, Unbounded  # noqa: E402

DISCRETE = ("qmix", "vdn")
CONTINUOUS = ("maddpg", "iddpg", "masac")

# Per-kind defaults of the fields left at None (the discrete ones are the QMIX/VDN settings).
DEFAULTS = {
    "discrete": dict(
        total_steps=150_000,
        num_envs=64,
        batch_size=512,
        updates_per_collect=4,
        learning_starts=10_000,
        learning_rate=5e-4,
        max_grad_norm=10.0,
        num_cells=(128, 128),
        eval_every=25_000,
        gamma=0.9,
    ),
    "continuous": dict(
        total_steps=96_000,
        num_envs=32,
        batch_size=256,
        updates_per_collect=2,
        learning_starts=3_200,
        learning_rate=1e-3,
        actor_learning_rate=1e-4,
        max_grad_norm=40.0,
        num_cells=(64, 64),
        eval_every=8_000,
        gamma=0.95,
    ),
}


@dataclasses.dataclass
class Config:
    """QMIX / VDN / MADDPG / IDDPG / MASAC on VMAS."""

    scenario: str = dataclasses.field(
        default="navigation", metadata={"help": "VMAS scenario (navigation, balance, ...)"}
    )
    n_agents: int = dataclasses.field(default=3, metadata={"help": "agents in the scenario"})
    algos: tuple[str, ...] = dataclasses.field(
        default=(),
        metadata={
            "help": "algorithms, one run each: qmix, vdn (discrete actions) or maddpg, iddpg, "
            "masac (continuous); empty: --mixers, or maddpg on balance"
        },
    )
    mixers: tuple[str, ...] = dataclasses.field(
        default=("qmix", "vdn"), metadata={"help": "mixers to train when --algos is empty"}
    )
    max_steps: int = dataclasses.field(
        default=100, metadata={"help": "episode length (truncation)"}
    )
    num_envs: int | None = dataclasses.field(
        default=None, metadata={"help": "VMAS worlds stepped together (64 discrete, 32 continuous)"}
    )
    total_steps: int | None = dataclasses.field(
        default=None,
        metadata={"help": "environment steps per run, all worlds together (150k / 96k)"},
    )
    seed: int = dataclasses.field(default=0, metadata={"help": "seed of params, RNG and worlds"})
    buffer_size: int = dataclasses.field(default=200_000, metadata={"help": "replay capacity"})
    batch_size: int | None = dataclasses.field(
        default=None, metadata={"help": "transitions per update (512 / 256)"}
    )
    updates_per_collect: int | None = dataclasses.field(
        default=None, metadata={"help": "gradient updates per vectorized env step (4 / 2)"}
    )
    learning_starts: int | None = dataclasses.field(
        default=None, metadata={"help": "environment steps before the first update (10k / 3.2k)"}
    )
    learning_rate: float | None = dataclasses.field(
        default=None, metadata={"help": "Adam step size (5e-4 / 1e-3)"}
    )
    actor_learning_rate: float | None = dataclasses.field(
        default=None,
        metadata={"help": "continuous: the actor's Adam step size (1e-4)"},
    )
    max_grad_norm: float | None = dataclasses.field(
        default=None, metadata={"help": "gradient clipping (10 / 40, TorchRL's MADDPG)"}
    )
    gamma: float | None = dataclasses.field(
        default=None, metadata={"help": "discount (0.9 as TorchRL's examples / 0.95)"}
    )
    tau: float = dataclasses.field(default=0.005, metadata={"help": "Polyak weight of the targets"})
    num_cells: tuple[int, ...] = dataclasses.field(
        default=(), metadata={"help": "hidden sizes of every net (empty: 128 128 / 64 64)"}
    )
    share_params: bool = dataclasses.field(
        default=True, metadata={"help": "continuous: one actor and critic for all agents"}
    )
    mixing_embed_dim: int = dataclasses.field(default=32, metadata={"help": "QMIX mixing width"})
    eps_init: float = dataclasses.field(default=1.0, metadata={"help": "initial epsilon"})
    eps_end: float = dataclasses.field(default=0.05, metadata={"help": "final epsilon"})
    eps_fraction: float = dataclasses.field(
        default=0.5, metadata={"help": "fraction of the run over which epsilon / sigma anneal"}
    )
    sigma_init: float = dataclasses.field(
        default=0.5, metadata={"help": "DDPG: initial std of the Gaussian action noise"}
    )
    sigma_end: float = dataclasses.field(
        default=0.1, metadata={"help": "DDPG: final std of the Gaussian action noise"}
    )
    eval_every: int | None = dataclasses.field(
        default=None, metadata={"help": "environment steps between evaluations (25k / 8k)"}
    )
    eval_envs: int = dataclasses.field(default=128, metadata={"help": "worlds per evaluation"})
    threads: int = dataclasses.field(default=1, metadata={"help": "torch intra-op threads"})
    compile: bool = dataclasses.field(
        default=False, metadata={"help": "torch.compile(fullgraph=True) the update step"}
    )
    device: str = dataclasses.field(
        default="auto",
        metadata={"help": "auto (CUDA when available, else CPU), cpu or cuda[:i]: VMAS and nets"},
    )
    cudagraphs: bool = dataclasses.field(
        default=False,
        metadata={"help": 'CUDA graphs for the update step (torch.compile mode="reduce-overhead")'},
    )
    out: str = dataclasses.field(default="runs/multiagent", metadata={"help": "output directory"})
    overwrite: bool = dataclasses.field(
        default=False, metadata={"help": "replace the logs and summary of an earlier run in <out>"}
    )
    progress: bool = dataclasses.field(default=True, metadata={"help": "show a progress bar"})

    @property
    def continuous(self) -> bool:
        return self.algos[0] in CONTINUOUS


def resolve(cfg: Config) -> Config:
    """Fills ``algos`` and the per-kind defaults of the fields left at ``None``."""
    algos = cfg.algos or (("maddpg",) if cfg.scenario == "balance" else cfg.mixers)
    unknown = [a for a in algos if a not in DISCRETE + CONTINUOUS]
    if unknown:
        raise ValueError(f"--algos: unknown {unknown}; choose from {DISCRETE + CONTINUOUS}")
    kinds = {a in CONTINUOUS for a in algos}
    if len(kinds) > 1:
        raise ValueError(
            f"--algos: {list(algos)} mixes discrete {DISCRETE} and continuous {CONTINUOUS} ones; "
            "run them separately (the action space differs)"
        )
    kind = "continuous" if kinds.pop() else "discrete"
    fill = {k: v for k, v in DEFAULTS[kind].items() if getattr(cfg, k) in (None, ())}
    return dataclasses.replace(cfg, algos=tuple(algos), **fill)


# --- the environment -----------------------------------------------------------------------------


class Vmas:
    """A VMAS batch of worlds with funcrl's layout: observations ``[N, n_agents, d]``, actions
    ``[N, n_agents]`` (integers) or ``[N, n_agents, a]`` (continuous), per-agent rewards
    ``[N, n_agents, 1]``, team flags ``[N, 1]``; finished worlds restart."""

    def __init__(self, cfg: Config, num_envs: int, seed: int):
        import vmas

        self.continuous = cfg.continuous
        self.device = _util.resolve_device(cfg.device)
        self.env = vmas.make_env(
            cfg.scenario,
            num_envs=num_envs,
            device=self.device,
            continuous_actions=self.continuous,
            max_steps=cfg.max_steps,
            terminated_truncated=True,
            seed=seed,
            n_agents=cfg.n_agents,
        )
        self.n_agents = len(self.env.agents)
        self.obs_dim = int(self.env.observation_space[0].shape[-1])
        space = self.env.action_space[0]
        if self.continuous:
            self.act_dim = int(space.shape[-1])
            self.low = torch.as_tensor(space.low, device=self.device).expand(self.n_agents, -1)
            self.high = torch.as_tensor(space.high, device=self.device).expand(self.n_agents, -1)
        else:
            self.n_actions = int(space.n)

    def reset(self) -> torch.Tensor:
        return torch.stack(self.env.reset(), dim=1)

    def step(self, action: torch.Tensor):
        """``(next_obs, rewards [N, n_agents, 1], terminated, truncated, obs_after_reset)``."""
        obs, rews, terminated, truncated, _ = self.env.step(list(action.unbind(1)))
        next_obs = torch.stack(obs, dim=1)
        rewards = torch.stack(rews, dim=1).unsqueeze(-1)
        terminated, truncated = terminated.unsqueeze(-1), truncated.unsqueeze(-1)
        obs_after = next_obs
        done = (terminated | truncated).squeeze(-1)
        if bool(done.any()):
            for i in done.nonzero().flatten().tolist():
                self.env.reset_at(i, return_observations=False)
            fresh = self.env.get_from_scenario(
                get_observations=True, get_rewards=False, get_infos=False, get_dones=False
            )[0]
            obs_after = torch.where(done[:, None, None], torch.stack(fresh, dim=1), next_obs)
        return next_obs, rewards, terminated, truncated, obs_after


def team(rewards: torch.Tensor) -> torch.Tensor:
    """The team's reward: the mean over the agents, ``[N, n_agents, 1] -> [N, 1]``."""
    return rewards.mean(1)


def state_of(obs: torch.Tensor) -> torch.Tensor:
    """The mixer's global state: all agents' observations, flattened ``[N, n_agents * d]``."""
    return obs.flatten(-2)


def evaluate(cfg: Config, policy: Callable[[torch.Tensor], torch.Tensor], seed: int) -> float:
    """Mean team return of ``policy`` over one ``max_steps`` episode in each of ``eval_envs``
    worlds (rewards after a world's termination are not counted)."""
    env = Vmas(cfg, cfg.eval_envs, seed)
    obs = env.reset()
    ret = torch.zeros(cfg.eval_envs, device=env.device)
    alive = torch.ones(cfg.eval_envs, dtype=torch.bool, device=env.device)
    with torch.no_grad():
        for _ in range(cfg.max_steps):
            obs, rewards, terminated, _, _ = env.step(policy(obs))
            ret += team(rewards).squeeze(-1) * alive
            alive &= ~terminated.squeeze(-1)
    return float(ret.mean())


def random_policy(env: Vmas) -> Callable[[torch.Tensor], torch.Tensor]:
    """Uniform actions: categorical, or uniform in the action box. Samples."""
    if env.continuous:
        return lambda o: (
            env.low + (env.high - env.low) * torch.rand(*o.shape[:2], env.act_dim, device=o.device)
        )
    return lambda o: torch.randint(0, env.n_actions, o.shape[:2], device=o.device)


# --- the agents ----------------------------------------------------------------------------------


@dataclasses.dataclass
class Agent:
    """What the training loop needs from an algorithm."""

    params: dict
    trainer: training.Trainer
    # (params, obs, step, key) -> action, drawing from key
    explore: Callable[[dict, torch.Tensor, int, torch.Tensor], torch.Tensor]
    act: Callable[[dict, torch.Tensor], torch.Tensor]  # deterministic (evaluation)
    transition: Callable[..., Record]
    loss_keys: tuple[str, ...]


def annealed(cfg: Config, step: int, init: float, end: float) -> float:
    frac = min(1.0, step / max(1.0, cfg.eps_fraction * cfg.total_steps))
    return init + frac * (end - init)


def epsilon_greedy(q: torch.Tensor, eps: float, key: torch.Tensor) -> torch.Tensor:
    """Each agent's greedy action, replaced by a uniform one with probability ``eps``. Samples
    from ``key``."""
    k_action, k_coin = frandom.split(key)
    random = frandom.randint(k_action, q.shape[:-1], 0, q.shape[-1])
    return torch.where(frandom.uniform(k_coin, q.shape[:-1]) < eps, random, q.argmax(-1))


def make_mixer_nets(cfg: Config, mixer: str, env: Vmas) -> qmix.Nets:
    local = MultiAgentMLP(
        env.obs_dim,
        env.n_actions,
        env.n_agents,
        centralized=False,
        share_params=True,
        num_cells=cfg.num_cells,
        activation="relu",
    )
    if mixer == "vdn":
        return qmix.Nets(local_value=local, mixer=VDNMixer(env.n_agents))
    return qmix.Nets(local_value=local, mixing_embed_dim=cfg.mixing_embed_dim)


def make_qmix(cfg: Config, mixer: str, env: Vmas, key: torch.Tensor) -> Agent:
    """QMIX / VDN on per-agent discrete actions, team reward, global state; params from ``key``."""
    n, d, n_act = env.n_agents, env.obs_dim, env.n_actions
    nets = make_mixer_nets(cfg, mixer, env)
    loss_cfg = qmix.Config(action_space="categorical", gamma=cfg.gamma)
    params = qmix.init(
        key,
        Unbounded(shape=(n, d)),
        Categorical(n_act, shape=(n,)),
        Unbounded(shape=(n * d,)),
        loss_cfg,
        nets,
    )
    opt = optim.chain(optim.clip_by_global_norm(cfg.max_grad_norm), optim.adam(cfg.learning_rate))

    def explore(p, obs, step, key):
        q = nets.local_value(p["local_value"], obs)
        return epsilon_greedy(q, annealed(cfg, step, cfg.eps_init, cfg.eps_end), key)

    return Agent(
        params=params,
        trainer=qmix.trainer(opt, config=loss_cfg, nets=nets, tau=cfg.tau),
        explore=explore,
        act=lambda p, obs: nets.local_value(p["local_value"], obs).argmax(-1),
        transition=mixer_transition,
        loss_keys=("loss",),
    )


def make_actor_critic(cfg: Config, algo: str, env: Vmas, key: torch.Tensor) -> Agent:
    """MADDPG / IDDPG / MASAC on per-agent continuous actions and per-agent rewards; params from
    ``key``."""
    obs_spec = Unbounded(shape=(env.n_agents, env.obs_dim))
    act_spec = Bounded(env.low, env.high, shape=(env.n_agents, env.act_dim))
    net_kw = dict(
        centralized_critic=algo != "iddpg",
        share_params=cfg.share_params,
        depth=len(cfg.num_cells),
        num_cells=cfg.num_cells,
        activation="tanh",  # TorchRL's multi-agent examples
    )

    def adam(lr):
        return optim.chain(optim.clip_by_global_norm(cfg.max_grad_norm), optim.adam(lr))

    # A slower actor keeps DDPG's tanh actor from running into the bounds (where tanh saturates
    # and its gradient vanishes) before the critic has learnt what the actions do.
    actor_opt = adam(cfg.actor_learning_rate or cfg.learning_rate)
    if algo in ("maddpg", "iddpg"):
        nets = ddpg_nets(obs_spec, act_spec, **net_kw)
        loss_cfg = ddpg.Config(gamma=cfg.gamma)
        params = ddpg.init(key, obs_spec, act_spec, loss_cfg, nets)
        low, high = env.low, env.high

        def explore(p, obs, step, key):
            sigma = annealed(cfg, step, cfg.sigma_init, cfg.sigma_end)
            a = nets.actor(p["actor"], obs)
            return torch.clamp(a + sigma * frandom.normal(key, a.shape), low, high)

        return Agent(
            params=params,
            trainer=ddpg.trainer(
                {"actor": actor_opt, "value": adam(cfg.learning_rate)},
                config=loss_cfg,
                nets=nets,
                tau=cfg.tau,
            ),
            explore=explore,
            act=lambda p, obs: nets.actor(p["actor"], obs),
            transition=grouped_transition,
            loss_keys=("loss_actor", "loss_value"),
        )
    nets = sac_nets(obs_spec, act_spec, **net_kw)
    loss_cfg = sac.Config(gamma=cfg.gamma, target_entropy=sac_target_entropy(act_spec))
    params = sac.init(key, obs_spec, act_spec, loss_cfg, nets)
    trainer = training.update(
        functools.partial(sac.loss, config=loss_cfg, nets=nets),
        {
            "actor": actor_opt,
            "qvalue": adam(cfg.learning_rate),
            "log_alpha": adam(cfg.learning_rate),
        },
        trainable=("actor", "qvalue", "log_alpha"),
        targets={"target_qvalue": "qvalue"},
        tau=cfg.tau,
    )
    return Agent(
        params=params,
        trainer=trainer,
        explore=lambda p, obs, step, key: sac.policy(p, obs, nets=nets).sample(key=key),
        act=lambda p, obs: sac.policy(p, obs, nets=nets).deterministic_sample,
        transition=grouped_transition,
        loss_keys=("loss_actor", "loss_qvalue", "loss_alpha"),
    )


def mixer_transition(obs, action, next_obs, rewards, terminated, truncated) -> Record:
    """One vectorized step in ``funcrl.qmix``'s layout: team reward, global state (``None``:
    zeros, for the buffer's example record)."""
    n_env = obs.shape[0]
    zeros = obs.new_zeros(n_env, 1)
    flag = torch.zeros(n_env, 1, dtype=torch.bool)
    return Record(
        {
            ("agents", "observation"): obs,
            ("agents", "action"): action,
            "state": state_of(obs),
            ("next", "agents", "observation"): next_obs,
            ("next", "state"): state_of(next_obs),
            ("next", "reward"): zeros if rewards is None else team(rewards),
            ("next", "terminated"): flag if terminated is None else terminated,
            ("next", "truncated"): flag if truncated is None else truncated,
        },
        batch_ndim=1,
    )


def grouped_transition(obs, action, next_obs, rewards, terminated, truncated) -> Record:
    """One vectorized step in TorchRL's grouped layout: per-agent rewards under the group, team
    flags at the top (``group_view`` broadcasts them over the agents)."""
    n_env, n = obs.shape[:2]
    flag = torch.zeros(n_env, 1, dtype=torch.bool)
    rewards = obs.new_zeros(n_env, n, 1) if rewards is None else rewards
    return Record(
        {
            ("agents", "observation"): obs,
            ("agents", "action"): action,
            ("next", "agents", "observation"): next_obs,
            ("next", "agents", "reward"): rewards,
            ("next", "terminated"): flag if terminated is None else terminated,
            ("next", "truncated"): flag if truncated is None else truncated,
        },
        batch_ndim=1,
    )


# --- training ------------------------------------------------------------------------------------


def train(cfg: Config, algo: str) -> dict:
    # Every draw from one key (_util.run_keys streams): params, environments,
    # exploration (fold_in by environment step), updates (fold_in by update count).
    keys = _util.run_keys(frandom.key(cfg.seed))
    env = Vmas(cfg, cfg.num_envs, _util.int_seed(keys.env))
    # Keys on the env's device, where the buffer and the params live (sampling checks it).
    keys = _util.Keys(*(k.to(env.device) for k in keys))
    make = make_actor_critic if cfg.continuous else make_qmix
    agent = make(cfg, algo, env, keys.init)
    trainer = agent.trainer
    params = _util.to_device(agent.params, env.device)
    opt_state = trainer.init(params)
    flatten = group_view if cfg.continuous else (lambda b: b)  # qmix reads the group itself

    def update(params, opt_state, buffer, key):
        k_sample, k_loss = frandom.split(key)
        batch = flatten(buffers.sample(buffer, cfg.batch_size, key=k_sample))
        return trainer.step(params, opt_state, batch, k_loss)

    if cfg.compile:
        update = compile_step(update, cudagraphs=cfg.cudagraphs)  # CUDA graphs

    obs = env.reset()
    with torch.no_grad():
        example_action = agent.act(params, obs)
    buffer = buffers.init(cfg.buffer_size, agent.transition(obs, example_action, obs, *[None] * 3))
    logger = _util.CSVLogger(
        os.path.join(cfg.out, algo), ["step", *agent.loss_keys, "train_return", "eval_return"]
    )
    eval_seed = 1_000_000 + cfg.seed

    def evaluation(p):
        return evaluate(cfg, lambda o: agent.act(p, o), eval_seed)

    curve = [(0, evaluation(params))]
    logger.log({"step": 0, "eval_return": curve[0][1]})
    iters = cfg.total_steps // cfg.num_envs
    bar = _progress(cfg, iters, algo)
    ep_return = torch.zeros(cfg.num_envs, device=env.device)
    recent: list[float] = []
    metrics: dict = {}
    timer = _util.Timer()
    updates = 0
    for it in range(iters):
        step = (it + 1) * cfg.num_envs
        with torch.no_grad():
            env_step = it * cfg.num_envs
            action = agent.explore(params, obs, env_step, frandom.fold_in(keys.explore, env_step))
        next_obs, rewards, terminated, truncated, obs_after = env.step(action)
        buffers.add_(
            buffer, agent.transition(obs, action, next_obs, rewards, terminated, truncated)
        )
        ep_return += team(rewards).squeeze(-1)
        done = (terminated | truncated).squeeze(-1)
        if bool(done.any()):
            recent = (recent + ep_return[done].tolist())[-200:]
            ep_return = torch.where(done, torch.zeros_like(ep_return), ep_return)
        obs = obs_after
        if step >= cfg.learning_starts:
            for _ in range(cfg.updates_per_collect):
                key = frandom.fold_in(keys.update, updates)
                params, opt_state, metrics = update(params, opt_state, buffer, key)
                updates += 1
        if step // cfg.eval_every != (step - cfg.num_envs) // cfg.eval_every or it == iters - 1:
            curve.append((step, evaluation(params)))
            logger.log({"step": step, "eval_return": curve[-1][1]})
        if it % 10 == 0 and recent:
            row = {"step": step, "train_return": sum(recent) / len(recent)}
            row.update({k: metrics[k] for k in agent.loss_keys if k in metrics})
            logger.log(row)
            if bar is not None:
                bar.set_postfix(ret=f"{row['train_return']:.2f}", eval=f"{curve[-1][1]:.2f}")
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    logger.close()
    return {
        "curve": curve,
        "final": curve[-1][1],
        "best": max(r for _, r in curve),
        "seconds": timer.elapsed(),
    }


def _progress(cfg: Config, total: int, algo: str):
    if not cfg.progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=f"{algo} on {cfg.scenario}", unit="it", dynamic_ncols=True)


def plot(cfg: Config, results: dict, random_return: float) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    how = "deterministic" if cfg.continuous else "greedy"
    for algo, res in results.items():
        xs, ys = zip(*res["curve"])
        ax.plot(xs, ys, "o-", label=f"{algo.upper()} ({how})")
    ax.axhline(random_return, color="gray", ls="--", label="random policy")
    ax.set_xlabel("environment steps")
    ax.set_ylabel(f"team return ({cfg.max_steps} steps)")
    ax.set_title(f"VMAS {cfg.scenario}, {cfg.n_agents} agents (seed {cfg.seed})")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = os.path.join(cfg.out, "curve.png")
    _util.save_figure(fig, path)
    return path


def main(argv: list[str] | None = None) -> dict:
    cfg = resolve(_util.parse_config(Config, argv))
    torch.set_num_threads(max(1, cfg.threads))
    logs = tuple(os.path.join(a, "log.csv") for a in cfg.algos)
    _util.prepare_out(cfg.out, None, cfg.overwrite, ("summary.json", *logs))
    probe = Vmas(cfg, 1, cfg.seed)
    # The uniform-random baseline (not a training run) draws from the global RNG.
    torch.manual_seed(cfg.seed)
    random_return = evaluate(cfg, random_policy(probe), 1_000_000 + cfg.seed)
    results = {algo: train(cfg, algo) for algo in cfg.algos}
    plot(cfg, results, random_return)
    summary = {
        "random_return": random_return,
        **{f"{a}_return": r["final"] for a, r in results.items()},
        **{f"{a}_best": r["best"] for a, r in results.items()},
        **{f"{a}_seconds": r["seconds"] for a, r in results.items()},
        **{f"{a}_curve": r["curve"] for a, r in results.items()},
    }
    _util.write_json(os.path.join(cfg.out, "summary.json"), summary)
    how = "deterministic" if cfg.continuous else "greedy"
    print(
        f"{cfg.scenario} ({cfg.n_agents} agents), {how} team return after {cfg.total_steps} "
        "steps: "
        + ", ".join(f"{a.upper()} {r['final']:.3f}" for a, r in results.items())
        + f"; random policy {random_return:.3f}"
    )
    return summary


if __name__ == "__main__":
    main()
