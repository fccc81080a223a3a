"""QMIX and VDN on a VMAS multi-agent task (discrete actions), in one readable file.

    pip install vmas
    python examples/multiagent.py --total-steps 150000 --out runs/multiagent
    python examples/multiagent.py --mixers vdn --n-agents 4 --scenario navigation

VMAS (Bettini et al. 2022) is a vectorized multi-agent simulator written in torch, so
``--num-envs`` worlds step together as one batch. In ``navigation`` every agent must reach its own
goal (lidar to avoid the others); the reward is shared, the team's progress towards the goals,
minus collision penalties.

The algorithm is ``funcrl.qmix.loss`` (TorchRL's ``QMixerLoss``): every agent's Q values come from
one local network shared by the agents (``funcrl.multiagent.MultiAgentMLP`` with
``share_params=True``), the values of the taken actions are mixed into ``Q_tot`` by the QMIX
hypernetwork mixer (``funcrl.multiagent.QMixer``, conditioned on the global state: here all
agents' observations, as TorchRL's example) or summed (VDN), and trained with a TD(0) target from
Polyak-averaged target nets. Exploration is per-agent epsilon-greedy, annealed linearly. The team
reward is the mean of the agents' rewards (TorchRL's example).

Writes ``<out>/<mixer>/log.csv``, ``<out>/curve.png`` (evaluation return vs environment steps for
each mixer, with the random policy's return as a line) and ``<out>/summary.json``, and prints the
final greedy evaluation of each mixer next to the random policy's.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _util  # noqa: E402

from funcrl import buffers, optim, qmix  # noqa: E402
from funcrl.multiagent import MultiAgentMLP, VDNMixer  # noqa: E402
from funcrl.record import Record  # noqa: E402
from funcrl.specs import Categorical, Unbounded  # noqa: E402


@dataclasses.dataclass
class Config:
    """QMIX / VDN on VMAS."""

    scenario: str = dataclasses.field(default="navigation", metadata={"help": "VMAS scenario"})
    n_agents: int = dataclasses.field(default=3, metadata={"help": "agents in the scenario"})
    mixers: tuple[str, ...] = dataclasses.field(
        default=("qmix", "vdn"), metadata={"help": "mixers to train, one run each: qmix, vdn"}
    )
    max_steps: int = dataclasses.field(
        default=100, metadata={"help": "episode length (truncation)"}
    )
    num_envs: int = dataclasses.field(default=64, metadata={"help": "VMAS worlds stepped together"})
    total_steps: int = dataclasses.field(
        default=150_000, metadata={"help": "environment steps per run (all worlds together)"}
    )
    seed: int = dataclasses.field(default=0, metadata={"help": "seed of params, RNG and worlds"})
    buffer_size: int = dataclasses.field(default=200_000, metadata={"help": "replay capacity"})
    batch_size: int = dataclasses.field(default=512, metadata={"help": "transitions per update"})
    updates_per_collect: int = dataclasses.field(
        default=4, metadata={"help": "gradient updates per vectorized env step"}
    )
    learning_starts: int = dataclasses.field(
        default=10_000, metadata={"help": "environment steps before the first update"}
    )
    learning_rate: float = dataclasses.field(default=5e-4, metadata={"help": "Adam step size"})
    max_grad_norm: float = dataclasses.field(default=10.0, metadata={"help": "gradient clipping"})
    gamma: float = dataclasses.field(default=0.9, metadata={"help": "discount (TorchRL's example)"})
    tau: float = dataclasses.field(default=0.005, metadata={"help": "Polyak weight of the targets"})
    num_cells: tuple[int, ...] = dataclasses.field(
        default=(128, 128), metadata={"help": "hidden sizes of the local Q network"}
    )
    mixing_embed_dim: int = dataclasses.field(default=32, metadata={"help": "QMIX mixing width"})
    eps_init: float = dataclasses.field(default=1.0, metadata={"help": "initial epsilon"})
    eps_end: float = dataclasses.field(default=0.05, metadata={"help": "final epsilon"})
    eps_fraction: float = dataclasses.field(
        default=0.5, metadata={"help": "fraction of the run over which epsilon anneals"}
    )
    eval_every: int = dataclasses.field(
        default=25_000, metadata={"help": "environment steps between greedy evaluations"}
    )
    eval_envs: int = dataclasses.field(default=128, metadata={"help": "worlds per evaluation"})
    threads: int = dataclasses.field(default=1, metadata={"help": "torch intra-op threads"})
    compile: bool = dataclasses.field(
        default=False, metadata={"help": "torch.compile(fullgraph=True) the update step"}
    )
    out: str = dataclasses.field(default="runs/multiagent", metadata={"help": "output directory"})
    progress: bool = dataclasses.field(default=True, metadata={"help": "show a progress bar"})


# --- the environment -----------------------------------------------------------------------------


class Vmas:
    """A VMAS batch of worlds with funcrl's layout: observations ``[N, n_agents, d]``, actions
    ``[N, n_agents]`` (integers), team reward and flags ``[N, 1]``; finished worlds restart."""

    def __init__(self, cfg: Config, num_envs: int, seed: int):
        import vmas

        self.env = vmas.make_env(
            cfg.scenario,
            num_envs=num_envs,
            device="cpu",
            continuous_actions=False,
            max_steps=cfg.max_steps,
            terminated_truncated=True,
            seed=seed,
            n_agents=cfg.n_agents,
        )
        self.n_agents = len(self.env.agents)
        self.n_actions = int(self.env.action_space[0].n)
        self.obs_dim = int(self.env.observation_space[0].shape[-1])

    def reset(self) -> torch.Tensor:
        return torch.stack(self.env.reset(), dim=1)

    def step(self, action: torch.Tensor):
        """``(next_obs, reward, terminated, truncated, obs_after_reset)``."""
        obs, rews, terminated, truncated, _ = self.env.step(list(action.unbind(1)))
        next_obs = torch.stack(obs, dim=1)
        reward = torch.stack(rews, dim=1).mean(1, keepdim=True)  # the team's reward
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
        return next_obs, reward, terminated, truncated, obs_after


def state_of(obs: torch.Tensor) -> torch.Tensor:
    """The mixer's global state: all agents' observations, flattened ``[N, n_agents * d]``."""
    return obs.flatten(-2)


def evaluate(cfg: Config, policy: Callable[[torch.Tensor], torch.Tensor], seed: int) -> float:
    """Mean team return of ``policy`` over one ``max_steps`` episode in each of ``eval_envs``
    worlds (rewards after a world's termination are not counted)."""
    env = Vmas(cfg, cfg.eval_envs, seed)
    obs = env.reset()
    ret = torch.zeros(cfg.eval_envs)
    alive = torch.ones(cfg.eval_envs, dtype=torch.bool)
    with torch.no_grad():
        for _ in range(cfg.max_steps):
            obs, reward, terminated, _, _ = env.step(policy(obs))
            ret += reward.squeeze(-1) * alive
            alive &= ~terminated.squeeze(-1)
    return float(ret.mean())


# --- the agent -----------------------------------------------------------------------------------


def make_nets(cfg: Config, mixer: str, n_agents: int, obs_dim: int, n_actions: int) -> qmix.Nets:
    local = MultiAgentMLP(
        obs_dim,
        n_actions,
        n_agents,
        centralized=False,
        share_params=True,
        num_cells=cfg.num_cells,
        activation="relu",
    )
    if mixer == "vdn":
        return qmix.Nets(local_value=local, mixer=VDNMixer(n_agents))
    if mixer == "qmix":
        return qmix.Nets(local_value=local, mixing_embed_dim=cfg.mixing_embed_dim)
    raise ValueError(f"--mixers: expected 'qmix' or 'vdn', got {mixer!r}")


def epsilon(cfg: Config, step: int) -> float:
    frac = min(1.0, step / max(1.0, cfg.eps_fraction * cfg.total_steps))
    return cfg.eps_init + frac * (cfg.eps_end - cfg.eps_init)


def epsilon_greedy(q: torch.Tensor, eps: float) -> torch.Tensor:
    """Each agent's greedy action, replaced by a uniform one with probability ``eps``. Samples."""
    random = torch.randint(0, q.shape[-1], q.shape[:-1])
    return torch.where(torch.rand(q.shape[:-1]) < eps, random, q.argmax(-1))


def train(cfg: Config, mixer: str) -> dict:
    torch.manual_seed(cfg.seed)
    env = Vmas(cfg, cfg.num_envs, cfg.seed)
    n, d, n_act = env.n_agents, env.obs_dim, env.n_actions
    nets = make_nets(cfg, mixer, n, d, n_act)
    loss_cfg = qmix.Config(action_space="categorical", gamma=cfg.gamma)
    params = qmix.init(
        cfg.seed,
        Unbounded(shape=(n, d)),
        Categorical(n_act, shape=(n,)),
        Unbounded(shape=(n * d,)),
        loss_cfg,
        nets,
    )
    opt = optim.chain(optim.clip_by_global_norm(cfg.max_grad_norm), optim.adam(cfg.learning_rate))
    trainer = qmix.trainer(opt, config=loss_cfg, nets=nets, tau=cfg.tau)
    opt_state = trainer.init(params)

    def update(params, opt_state, buffer):
        return trainer.step(params, opt_state, buffers.sample(buffer, cfg.batch_size))

    if cfg.compile:
        update = torch.compile(update, fullgraph=True)

    def greedy(p):
        return lambda o: nets.local_value(p["local_value"], o).argmax(-1)

    obs = env.reset()
    example = transition(obs, obs.new_zeros(obs.shape[:2], dtype=torch.long), obs, *[None] * 3)
    buffer = buffers.init(cfg.buffer_size, example)
    logger = _util.CSVLogger(
        os.path.join(cfg.out, mixer), ["step", "loss", "epsilon", "train_return", "eval_return"]
    )
    eval_seed = 1_000_000 + cfg.seed
    curve = [(0, evaluate(cfg, greedy(params), eval_seed))]
    logger.log({"step": 0, "eval_return": curve[0][1]})
    iters = cfg.total_steps // cfg.num_envs
    bar = _progress(cfg, iters, mixer)
    ep_return = torch.zeros(cfg.num_envs)
    recent: list[float] = []
    metrics: dict = {}
    timer = _util.Timer()
    for it in range(iters):
        step = (it + 1) * cfg.num_envs
        eps = epsilon(cfg, it * cfg.num_envs)
        with torch.no_grad():
            action = epsilon_greedy(nets.local_value(params["local_value"], obs), eps)
        next_obs, reward, terminated, truncated, obs_after = env.step(action)
        buffers.add_(buffer, transition(obs, action, next_obs, reward, terminated, truncated))
        ep_return += reward.squeeze(-1)
        done = (terminated | truncated).squeeze(-1)
        if bool(done.any()):
            recent = (recent + ep_return[done].tolist())[-200:]
            ep_return = torch.where(done, torch.zeros_like(ep_return), ep_return)
        obs = obs_after
        if step >= cfg.learning_starts:
            for _ in range(cfg.updates_per_collect):
                params, opt_state, metrics = update(params, opt_state, buffer)
        if step // cfg.eval_every != (step - cfg.num_envs) // cfg.eval_every or it == iters - 1:
            curve.append((step, evaluate(cfg, greedy(params), eval_seed)))
            logger.log({"step": step, "eval_return": curve[-1][1]})
        if it % 10 == 0 and recent:
            row = {"step": step, "epsilon": eps, "train_return": sum(recent) / len(recent)}
            if metrics:
                row["loss"] = metrics["loss"]
            logger.log(row)
            if bar is not None:
                bar.set_postfix(ret=f"{row['train_return']:.2f}", eval=f"{curve[-1][1]:.2f}")
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    logger.close()
    return {"curve": curve, "final": curve[-1][1], "seconds": timer.elapsed()}


def transition(obs, action, next_obs, reward, terminated, truncated) -> Record:
    """One vectorized step in ``funcrl.qmix``'s grouped layout (``None``: zeros, for the buffer's
    example record)."""
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
            ("next", "reward"): zeros if reward is None else reward,
            ("next", "terminated"): flag if terminated is None else terminated,
            ("next", "truncated"): flag if truncated is None else truncated,
        },
        batch_ndim=1,
    )


def _progress(cfg: Config, total: int, mixer: str):
    if not cfg.progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=f"{mixer} on {cfg.scenario}", unit="it", dynamic_ncols=True)


def plot(cfg: Config, results: dict, random_return: float) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for mixer, res in results.items():
        xs, ys = zip(*res["curve"])
        ax.plot(xs, ys, "o-", label=f"{mixer.upper()} (greedy)")
    ax.axhline(random_return, color="gray", ls="--", label="random policy")
    ax.set_xlabel("environment steps")
    ax.set_ylabel(f"team return ({cfg.max_steps} steps)")
    ax.set_title(f"VMAS {cfg.scenario}, {cfg.n_agents} agents (seed {cfg.seed})")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = os.path.join(cfg.out, "curve.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> dict:
    cfg = _util.parse_config(Config, argv)
    torch.set_num_threads(max(1, cfg.threads))
    os.makedirs(cfg.out, exist_ok=True)
    probe = Vmas(cfg, 1, cfg.seed)
    n_act = probe.n_actions
    torch.manual_seed(cfg.seed)
    random_return = evaluate(
        cfg, lambda o: torch.randint(0, n_act, o.shape[:2]), 1_000_000 + cfg.seed
    )
    results = {mixer: train(cfg, mixer) for mixer in cfg.mixers}
    plot(cfg, results, random_return)
    summary = {
        "random_return": random_return,
        **{f"{m}_return": r["final"] for m, r in results.items()},
        **{f"{m}_seconds": r["seconds"] for m, r in results.items()},
    }
    _util.write_json(os.path.join(cfg.out, "summary.json"), summary)
    print(
        f"{cfg.scenario} ({cfg.n_agents} agents), greedy team return after {cfg.total_steps} steps: "
        + ", ".join(f"{m.upper()} {r['final']:.3f}" for m, r in results.items())
        + f"; random policy {random_return:.3f}"
    )
    return summary


if __name__ == "__main__":
    main()
