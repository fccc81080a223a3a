"""MAPPO and IPPO on VMAS, in one readable file: TorchRL's ``sota-implementations/multiagent/
mappo_ippo.py`` on funcrl's single-agent PPO.

    pip install vmas
    python examples/mappo.py --algo mappo --out runs/mappo          # navigation, 150k steps
    python examples/mappo.py --algo ippo --out runs/ippo --no-share-params
    python examples/mappo.py --algo mappo --out runs/mappo --resume --total-steps 300000

The algorithm is ``funcrl.ppo.loss`` (TorchRL's ``ClipPPOLoss`` on the ``("agents", ...)`` keys)
trained by ``funcrl.ppo.trainer`` on the group view of each rollout
(``funcrl.multiagent.group_view``): every agent has its own log-prob, value, GAE advantage and
clipped ratio, and the losses average over samples and agents. The nets come from
``funcrl.multiagent.ppo_nets``: a decentralised ``MultiAgentMLP`` actor ``o_i -> TanhNormal(a_i)``
and a ``MultiAgentMLP`` critic that sees every agent's observation (MAPPO, Yu et al. 2022) or only
its own (IPPO, de Witt et al. 2020); ``--share-params`` (the default) uses one actor and one critic
for all agents. Each iteration collects ``--num-envs`` x ``--num-steps`` transitions from VMAS
worlds stepped together, computes GAE with the critic frozen, then runs ``--epochs`` passes of
shuffled minibatches of ``--minibatch-size`` transitions (all agents of a transition together).

The settings are TorchRL's example's: 60 worlds x 100 steps (6000 transitions per iteration),
10 epochs of minibatches of 400, Adam 3e-4 with the global gradient norm clipped to 1.0, clip 0.2,
entropy 1e-4, no advantage normalisation, gamma 0.99, lambda 0.9, 2 x 256 tanh MLPs; the budget
is the 150k environment steps ``examples/multiagent.py`` gives QMIX (25 iterations).

The evaluation is ``examples/multiagent.py``'s, so the numbers compare with QMIX's: the mean team
return (the mean over agents of the per-agent rewards, summed over one ``--max-steps`` episode) of
the deterministic policy in ``--eval-envs`` worlds seeded ``1_000_000 + seed``, beside the uniform
random policy's on the same worlds. QMIX's navigation has discrete actions (``--no-continuous``
here gives MAPPO the same action space; TorchRL's MAPPO example uses continuous ones).

Writes ``<out>/log.csv`` (training episodes, losses, evaluations), ``<out>/curve.png``
(evaluation return vs environment steps, the random policy as a line), ``<out>/checkpoint.pt``
(params, optimizer state, counters and the root key: ``--resume`` continues the run) and
``<out>/result.json``, and prints the final evaluation next to the random policy's.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections import deque
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _util  # noqa: E402
import multiagent as vmas_example  # noqa: E402  (the VMAS env, scorer and random policy)

from funcrl import checkpoint, optim, ppo  # noqa: E402
from funcrl import random as frandom  # noqa: E402
from funcrl.multiagent import group_view, ppo_nets  # noqa: E402
from funcrl.objectives import on_policy  # noqa: E402
from funcrl.record import Record  # noqa: E402
from funcrl.specs import Bounded, Categorical, Unbounded  # noqa: E402
from funcrl.training import TrainState  # noqa: E402

ALGOS = ("mappo", "ippo")


@dataclasses.dataclass
class Config:
    """MAPPO / IPPO on VMAS with TorchRL's example settings."""

    algo: str = dataclasses.field(
        default="mappo", metadata={"help": "mappo (centralised critic) or ippo (local critic)"}
    )
    scenario: str = dataclasses.field(default="navigation", metadata={"help": "VMAS scenario"})
    n_agents: int = dataclasses.field(default=3, metadata={"help": "agents in the scenario"})
    continuous: bool = dataclasses.field(
        default=True, metadata={"help": "continuous actions (TorchRL's); --no-continuous: QMIX's"}
    )
    max_steps: int = dataclasses.field(
        default=100, metadata={"help": "episode length (truncation)"}
    )
    total_steps: int = dataclasses.field(
        default=150_000, metadata={"help": "environment steps, all worlds together"}
    )
    num_envs: int = dataclasses.field(default=60, metadata={"help": "VMAS worlds per rollout"})
    num_steps: int = dataclasses.field(
        default=100, metadata={"help": "steps per world per rollout"}
    )
    epochs: int = dataclasses.field(default=10, metadata={"help": "passes over each rollout"})
    minibatch_size: int = dataclasses.field(
        default=400, metadata={"help": "transitions per minibatch (all agents of each)"}
    )
    learning_rate: float = dataclasses.field(default=3e-4, metadata={"help": "Adam step size"})
    max_grad_norm: float = dataclasses.field(default=1.0, metadata={"help": "global-norm clip"})
    gamma: float = dataclasses.field(default=0.99, metadata={"help": "discount"})
    lmbda: float = dataclasses.field(default=0.9, metadata={"help": "GAE lambda"})
    clip_epsilon: float = dataclasses.field(default=0.2, metadata={"help": "ratio clip"})
    entropy_coeff: float = dataclasses.field(default=1e-4, metadata={"help": "entropy bonus"})
    share_params: bool = dataclasses.field(
        default=True, metadata={"help": "one actor and one critic for all agents"}
    )
    depth: int = dataclasses.field(default=2, metadata={"help": "hidden layers of every MLP"})
    num_cells: int = dataclasses.field(default=256, metadata={"help": "width of every layer"})
    eval_every: int = dataclasses.field(default=30_000, metadata={"help": "0: only at the end"})
    eval_envs: int = dataclasses.field(default=128, metadata={"help": "worlds per evaluation"})
    checkpoint_every: int = dataclasses.field(default=30_000, metadata={"help": "0: at the end"})
    seed: int = dataclasses.field(default=0, metadata={"help": "seed of params, RNG and worlds"})
    out: str = dataclasses.field(default="runs/mappo", metadata={"help": "output directory"})
    resume: bool = dataclasses.field(
        default=False, metadata={"help": "continue the run in <out> from its checkpoint"}
    )
    overwrite: bool = dataclasses.field(default=False, metadata={"help": "replace an earlier run"})
    progress: bool = dataclasses.field(default=True, metadata={"help": "progress bar"})
    threads: int = dataclasses.field(default=1, metadata={"help": "torch CPU threads"})
    compile: bool = dataclasses.field(
        default=False, metadata={"help": "torch.compile the update (fullgraph; slow to compile)"}
    )
    device: str = dataclasses.field(
        default="auto", metadata={"help": "auto (CUDA when available, else CPU), cpu or cuda[:i]"}
    )


OUT_FILES = ("checkpoint.pt", "log.csv")
LOG_FIELDS = ["step", "time", "episode_return", "eval_return"]
METRICS = ("loss_objective", "loss_critic", "loss_entropy", "entropy", "clip_fraction", "kl_approx")


def check(cfg: Config) -> None:
    """The flags' consistency (the ranges are checked by ``_util.parse_config``)."""
    if cfg.algo not in ALGOS:
        raise ValueError(f"mappo.py: --algo must be one of {ALGOS}, got {cfg.algo!r}")
    per_iter = cfg.num_envs * cfg.num_steps
    if per_iter % cfg.minibatch_size:
        raise ValueError(
            f"mappo.py: a rollout of --num-envs x --num-steps = {per_iter} transitions does not "
            f"split into minibatches of --minibatch-size {cfg.minibatch_size}"
        )
    if cfg.total_steps < per_iter:
        raise ValueError(
            f"mappo.py: --total-steps {cfg.total_steps} is less than one rollout (--num-envs x "
            f"--num-steps = {per_iter})"
        )


def specs(env: vmas_example.Vmas) -> tuple[Any, Any]:
    """The grouped specs ``[n_agents, d]`` and ``[n_agents, a]`` (or ``[n_agents]`` actions)."""
    obs = Unbounded(shape=(env.n_agents, env.obs_dim))
    if env.continuous:
        return obs, Bounded(env.low.cpu(), env.high.cpu(), shape=(env.n_agents, env.act_dim))
    return obs, Categorical(env.n_actions, shape=(env.n_agents,))


def make_agent(cfg: Config, env: vmas_example.Vmas, key: torch.Tensor):
    """MAPPO's or IPPO's nets, loss config, params and trainer for the env's specs."""
    obs_spec, act_spec = specs(env)
    nets = ppo_nets(
        obs_spec,
        act_spec,
        centralized_critic=cfg.algo == "mappo",
        share_params=cfg.share_params,
        depth=cfg.depth,
        num_cells=cfg.num_cells,
    )
    # TorchRL's example: ClipPPOLoss(entropy_coeff=..., normalize_advantage=False), smooth-L1
    # critic loss of weight 1, GAE(gamma, lmbda).
    loss_cfg = ppo.Config(
        clip_epsilon=cfg.clip_epsilon,
        entropy_coeff=cfg.entropy_coeff,
        normalize_advantage=False,
        gamma=cfg.gamma,
        lmbda=cfg.lmbda,
    )
    params = ppo.init(key, obs_spec, act_spec, loss_cfg, nets)
    opt = optim.chain(optim.clip_by_global_norm(cfg.max_grad_norm), optim.adam(cfg.learning_rate))
    per_iter = cfg.num_envs * cfg.num_steps
    train = ppo.trainer(
        opt,
        config=loss_cfg,
        nets=nets,
        epochs=cfg.epochs,
        num_minibatches=per_iter // cfg.minibatch_size,
    )
    return nets, params, train


def collect(env, params, nets, obs, num_steps: int, key: torch.Tensor):
    """``num_steps`` steps of every world under the policy: a rollout ``[E, T]`` in TorchRL's
    grouped layout (per-agent entries under ``"agents"``, team flags ``[E, T, 1]``), the next
    observation, and each step's team reward ``[T, E]`` and done ``[T, E]`` for the episode log.
    Step ``t``'s actions are drawn from ``fold_in(key, t)``."""
    steps, team_rewards, dones = [], [], []
    for t in range(num_steps):
        entries = on_policy.explore(params, obs, nets=nets, key=frandom.fold_in(key, t))
        next_obs, rewards, terminated, truncated, obs_after = env.step(entries["action"])
        steps.append(
            Record(
                {
                    ("agents", "observation"): obs,
                    **{("agents", k): v for k, v in entries.items()},
                    ("next", "agents", "observation"): next_obs,
                    ("next", "agents", "reward"): rewards,
                    ("next", "terminated"): terminated,
                    ("next", "truncated"): truncated,
                    ("next", "done"): terminated | truncated,
                },
                batch_ndim=1,
            )
        )
        team_rewards.append(vmas_example.team(rewards).squeeze(-1))
        dones.append((terminated | truncated).squeeze(-1))
        obs = obs_after
    return Record.stack(steps, dim=1), obs, torch.stack(team_rewards), torch.stack(dones)


def evaluate(cfg: Config, params, nets) -> float:
    """``examples/multiagent.py``'s scorer (QMIX's 2.97 is this number) on the deterministic
    policy."""

    def act(o):
        return on_policy.act(params, o, nets=nets, mode="deterministic")

    return vmas_example.evaluate(cfg, act, 1_000_000 + cfg.seed)


def random_return(cfg: Config) -> float:
    """The uniform random policy's score on the same worlds (``examples/multiagent.py``'s)."""
    probe = vmas_example.Vmas(cfg, 1, cfg.seed)
    # The baseline (not a training run) draws from the global RNG, seeded as the QMIX example.
    torch.manual_seed(cfg.seed)
    return vmas_example.evaluate(cfg, vmas_example.random_policy(probe), 1_000_000 + cfg.seed)


def checkpoint_template(params: Any, state: TrainState) -> dict[str, Any]:
    return {
        "params": params,
        "opt": state.opt,
        "updates": state.step,
        "step": 0,
        "elapsed": 0.0,
        "curve": ...,
        "key": frandom.key(0),
    }


def _save(path, cfg, params, state, step, elapsed, curve, key) -> None:
    tree = {
        "params": params,
        "opt": state.opt,
        "updates": state.step,
        "step": step,
        "elapsed": float(elapsed),
        "curve": [[float(s), float(r)] for s, r in curve],
        # The root key: with the step count, every stream continues where it stopped.
        "key": key.cpu(),
    }
    _util.save_checkpoint(path, tree, config=cfg)


def plot(cfg: Config, log_path: str, random: float) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _util.read_csv(log_path)
    fig, ax = plt.subplots(figsize=(7, 4))
    train = [(r["step"], r["episode_return"]) for r in rows if "episode_return" in r]
    if train:
        xs, ys = zip(*train)
        ax.plot(xs, ys, ".", alpha=0.15, label="training episodes (stochastic)")
    ev = [(r["step"], r["eval_return"]) for r in rows if "eval_return" in r]
    if ev:
        xs, ys = zip(*ev)
        ax.plot(xs, ys, "o-", label=f"{cfg.algo.upper()} (deterministic)")
    ax.axhline(random, color="gray", ls="--", label="random policy")
    ax.set_xlabel("environment steps")
    ax.set_ylabel(f"team return ({cfg.max_steps} steps)")
    ax.set_title(
        f"{cfg.algo.upper()} on VMAS {cfg.scenario}, {cfg.n_agents} agents (seed {cfg.seed})"
    )
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = os.path.join(cfg.out, "curve.png")
    _util.save_figure(fig, path)
    return path


def train(cfg: Config) -> dict[str, Any]:
    """Trains MAPPO / IPPO and returns a summary (``eval_return``, ``random_return``, ...)."""
    check(cfg)
    _util.prepare_out(cfg.out, cfg.resume, cfg.overwrite, OUT_FILES)
    torch.set_num_threads(cfg.threads)
    per_iter = cfg.num_envs * cfg.num_steps
    # Every draw from one key: params, worlds, rollouts' actions and the minibatch shuffles,
    # the last two folded with the iteration.
    root = frandom.key(cfg.seed)
    keys = _util.run_keys(root)
    env = vmas_example.Vmas(cfg, cfg.num_envs, _util.int_seed(keys.env))
    dev = env.device
    nets, params, trainer = make_agent(cfg, env, keys.init)
    params = _util.to_device(params, dev)
    state = trainer.init(params)
    ckpt = os.path.join(cfg.out, "checkpoint.pt")
    step, elapsed, curve = 0, 0.0, []
    if cfg.resume:
        if not os.path.exists(ckpt):
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt}")
        _util.check_resume_config(ckpt, checkpoint.metadata(ckpt), cfg)
        ck = _util.load_checkpoint(ckpt, like=checkpoint_template(params, state)).tree
        params = _util.to_device(ck["params"], dev)
        state = TrainState(_util.to_device(ck["opt"], dev), ck["updates"].to(dev))
        step, elapsed, curve = ck["step"], ck["elapsed"], [tuple(c) for c in ck["curve"]]
        root = ck["key"]
        keys = _util.run_keys(root)
        _util.truncate_log(os.path.join(cfg.out, "log.csv"), step)
        # New worlds, seeded apart from the first ones (VMAS's state is not saved).
        env = vmas_example.Vmas(cfg, cfg.num_envs, _util.int_seed(keys.env) + 7919 * step)
    keys = _util.Keys(*(k.to(dev) for k in keys))
    step_fn = torch.compile(trainer.step, fullgraph=True) if cfg.compile else trainer.step
    log = _util.CSVLogger(cfg.out, LOG_FIELDS + list(METRICS), resume=cfg.resume)
    if not curve:
        curve.append((0, evaluate(cfg, params, nets)))
        log.log({"step": 0, "time": 0.0, "eval_return": curve[0][1]})
    timer = _util.Timer()
    bar = None
    if cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.total_steps, initial=step, unit="step", dynamic_ncols=True)
    obs = env.reset()
    ep_return = torch.zeros(cfg.num_envs, device=dev)
    recent: deque[float] = deque(maxlen=60)
    next_eval = (step // cfg.eval_every + 1) * cfg.eval_every if cfg.eval_every else None
    next_ckpt = (step // cfg.checkpoint_every + 1) * cfg.checkpoint_every
    next_ckpt = next_ckpt if cfg.checkpoint_every else None
    while step + per_iter <= cfg.total_steps:
        it = step // per_iter
        with torch.no_grad():
            rollout, obs, rewards, dones = collect(
                env, params, nets, obs, cfg.num_steps, frandom.fold_in(keys.explore, it)
            )
        params, state, metrics = step_fn(
            params, state, group_view(rollout), frandom.fold_in(keys.update, it)
        )
        step += per_iter
        now = elapsed + timer.elapsed()
        finished = []
        for r, d in zip(rewards, dones):  # per step: add the reward, then close finished episodes
            ep_return += r
            finished += ep_return[d].tolist()
            ep_return = torch.where(d, torch.zeros_like(ep_return), ep_return)
        recent.extend(finished)
        row = {"step": step, "time": now, **{k: float(metrics[k]) for k in METRICS}}
        for ret in finished:
            log.log({**row, "episode_return": ret})
        if not finished:
            log.log(row)
        if bar is not None:
            bar.update(per_iter)
            mean = sum(recent) / len(recent) if recent else float("nan")
            bar.set_postfix(ret=f"{mean:.2f}", eval=f"{curve[-1][1]:.2f}", refresh=False)
        last = step + per_iter > cfg.total_steps
        if next_eval is not None and step >= next_eval and not last:
            with timer.paused():
                curve.append((step, evaluate(cfg, params, nets)))
            log.log({"step": step, "time": now, "eval_return": curve[-1][1]})
            next_eval += cfg.eval_every
        if next_ckpt is not None and step >= next_ckpt and not last:
            with timer.paused():
                _save(ckpt, cfg, params, state, step, elapsed + timer.elapsed(), curve, root)
            next_ckpt += cfg.checkpoint_every
    if bar is not None:
        bar.close()
    train_time = elapsed + timer.elapsed()
    if not curve or curve[-1][0] != step:
        curve.append((step, evaluate(cfg, params, nets)))
        log.log({"step": step, "time": train_time, "eval_return": curve[-1][1]})
    log.close()
    _save(ckpt, cfg, params, state, step, train_time, curve, root)
    random = random_return(cfg)
    png = plot(cfg, log.path, random)
    result = {
        "algo": cfg.algo,
        "eval_return": curve[-1][1],
        "best_return": max(r for _, r in curve),
        "random_return": random,
        "curve": curve,
        "train_time": train_time,
        "steps": step,
        "png": png,
        "csv": log.path,
        "checkpoint": ckpt,
        "config": dataclasses.asdict(cfg),
    }
    _util.write_json(os.path.join(cfg.out, "result.json"), result)
    return {**result, "params": params}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    cfg = _util.parse_config(Config, argv)
    result = train(cfg)
    print(
        f"{cfg.algo.upper()} on {cfg.scenario} ({cfg.n_agents} agents), deterministic team return "
        f"after {result['steps']} steps: {result['eval_return']:.3f} (best "
        f"{result['best_return']:.3f}); random policy {result['random_return']:.3f}; "
        f"{result['train_time']:.0f} s"
    )
    return result


if __name__ == "__main__":
    main()
