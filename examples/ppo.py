"""PPO on a gymnasium task with PureJaxRL's settings, in one readable file.

    python examples/ppo.py --env CartPole-v1 --total-steps 500000 --out runs/ppo_cartpole
    python examples/ppo.py --env Acrobot-v1 --out runs/ppo_acrobot
    python examples/ppo.py --env Pendulum-v1 --total-steps 1000000 --out runs/ppo_pendulum

The algorithm is ``funcrl.ppo.loss`` (TorchRL's ``ClipPPOLoss``) trained by ``funcrl.ppo.trainer``:
each iteration collects ``--num-envs`` x ``--num-steps`` transitions from a gymnasium vector env,
then one pure function computes GAE with the critic frozen and runs ``--epochs`` x
``--num-minibatches`` shuffled minibatch steps (clip 0.2, entropy 0.01, value clip, advantages
normalised per minibatch, global-norm clip 0.5, Adam with the learning rate annealed to 0). The
defaults are PureJaxRL's CartPole settings: 4 envs x 128 steps, 4 x 4 minibatches, lr 2.5e-4,
tanh 64x64 networks with orthogonal init.

Writes ``<out>/log.csv``, ``<out>/curve.png``, ``<out>/checkpoint.pt`` and ``<out>/result.json``,
and prints the final deterministic evaluation (the mean over ``--eval-episodes`` episodes).
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

from funcrl import envs, optim, ppo  # noqa: E402
from funcrl.modules.value_norm import RunningValueNorm  # noqa: E402
from funcrl.nn import MLP  # noqa: E402
from funcrl.objectives import on_policy  # noqa: E402
from funcrl.record import Record  # noqa: E402


@dataclasses.dataclass
class Config:
    """PPO: the loop's settings and PureJaxRL's hyperparameters."""

    env: str = dataclasses.field(default="CartPole-v1", metadata={"help": "gymnasium id"})
    seed: int = dataclasses.field(default=0, metadata={"help": "seed of params, envs and shuffles"})
    total_steps: int = dataclasses.field(default=500_000, metadata={"help": "env steps"})
    num_envs: int = dataclasses.field(default=4, metadata={"help": "parallel environments"})
    num_steps: int = dataclasses.field(default=128, metadata={"help": "steps per env per rollout"})
    epochs: int = dataclasses.field(default=4, metadata={"help": "passes over each rollout"})
    num_minibatches: int = dataclasses.field(default=4, metadata={"help": "minibatches per epoch"})
    learning_rate: float = dataclasses.field(default=2.5e-4, metadata={"help": "Adam step size"})
    anneal_lr: bool = dataclasses.field(default=True, metadata={"help": "lr linearly to 0"})
    max_grad_norm: float = dataclasses.field(default=0.5, metadata={"help": "global-norm clip"})
    gamma: float = dataclasses.field(default=0.99, metadata={"help": "discount"})
    lmbda: float = dataclasses.field(default=0.95, metadata={"help": "GAE lambda"})
    clip_epsilon: float = dataclasses.field(default=0.2, metadata={"help": "ratio clip"})
    entropy_coeff: float = dataclasses.field(default=0.01, metadata={"help": "entropy bonus"})
    critic_coeff: float = dataclasses.field(
        default=0.25, metadata={"help": "weight of the squared value error (PureJaxRL's 0.5 x 0.5)"}
    )
    num_cells: tuple[int, ...] = dataclasses.field(
        default=(64, 64), metadata={"help": "hidden sizes of actor and critic (tanh)"}
    )
    normalize_observations: bool = dataclasses.field(
        default=False, metadata={"help": "running mean/std of observations (PureJaxRL's MuJoCo)"}
    )
    scale_rewards: bool = dataclasses.field(
        default=False, metadata={"help": "rewards / running std of the discounted return"}
    )
    eval_every: int = dataclasses.field(default=50_000, metadata={"help": "0: only at the end"})
    eval_episodes: int = dataclasses.field(default=10, metadata={"help": "evaluation episodes"})
    checkpoint_every: int = dataclasses.field(default=100_000, metadata={"help": "0: at the end"})
    out: str = dataclasses.field(default="runs/ppo", metadata={"help": "output directory"})
    overwrite: bool = dataclasses.field(default=False, metadata={"help": "replace an earlier run"})
    progress: bool = dataclasses.field(default=True, metadata={"help": "progress bar"})
    threads: int = dataclasses.field(default=1, metadata={"help": "torch CPU threads"})
    compile: bool = dataclasses.field(
        default=False, metadata={"help": "torch.compile the update (fullgraph; slow to compile)"}
    )


OUT_FILES = ("checkpoint.pt", "log.csv")
LOG_FIELDS = ["step", "time", "sps", "episode_return", "episode_length", "eval_return", "eval_std"]
METRICS = ("loss_objective", "loss_critic", "entropy", "clip_fraction", "kl_approx")


def make_agent(cfg: Config, observation_spec: Any, action_spec: Any):
    """PPO's nets, loss config, params and trainer for the env's specs."""
    discrete = getattr(action_spec, "n", None) is not None
    obs_dim = observation_spec.shape[-1]
    out = action_spec.n if discrete else 2 * action_spec.shape[-1]
    # PureJaxRL: orthogonal init (sqrt 2 hidden), policy head scaled by 0.01, value head by 1.
    mlp = dict(num_cells=cfg.num_cells, activation="tanh", init_method="orthogonal")
    nets = ppo.Nets(
        actor=MLP(obs_dim, out, last_layer_init_scale=0.01, **mlp),
        critic=MLP(obs_dim, 1, **mlp),
        distribution="categorical" if discrete else "tanh_normal",
    )
    loss_cfg = ppo.Config(
        clip_epsilon=cfg.clip_epsilon,
        entropy_coeff=cfg.entropy_coeff,
        critic_coeff=cfg.critic_coeff,
        loss_critic_type="l2",
        clip_value=True,
        normalize_advantage=True,
        gamma=cfg.gamma,
        lmbda=cfg.lmbda,
    )
    params = ppo.init(cfg.seed, observation_spec, action_spec, loss_cfg, nets)
    iterations = cfg.total_steps // (cfg.num_envs * cfg.num_steps)
    lr = cfg.learning_rate
    if cfg.anneal_lr:
        lr = optim.linear_schedule(lr, 0.0, max(1, iterations * cfg.epochs * cfg.num_minibatches))
    opt = optim.chain(optim.clip_by_global_norm(cfg.max_grad_norm), optim.adam(lr, eps=1e-5))
    train = ppo.trainer(
        opt, config=loss_cfg, nets=nets, epochs=cfg.epochs, num_minibatches=cfg.num_minibatches
    )
    return nets, loss_cfg, params, train


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


def collect(env, params, nets, norm: Normalizers, norm_state: dict, obs, num_steps: int):
    """``num_steps`` steps of every env under the policy: a rollout ``[E, T]`` with the
    behaviour log-prob and distribution params the loss reads (observations normalised with the
    running statistics, rewards scaled, where switched on), the next raw observation and the
    updated statistics."""
    steps = []
    for _ in range(num_steps):
        if norm.observation is not None:
            norm_state = {
                **norm_state,
                "observation": norm.observation.update(norm_state["observation"], obs),
            }
        entries = on_policy.explore(params, norm.obs(norm_state, obs), nets=nets)
        transition, nxt = env.step(entries["action"])
        extras = {k: v for k, v in entries.items() if k != "action"}
        transition = transition.update(extras)
        if norm.observation is not None:
            for key in ("observation", ("next", "observation")):
                transition = transition.set(key, norm.obs(norm_state, transition[key]))
        if norm.reward is not None:
            reward = transition["next", "reward"].squeeze(-1)
            terminated = transition["next", "terminated"].squeeze(-1)
            rs, scaled = norm.reward(norm_state["reward"], reward, terminated)
            norm_state = {**norm_state, "reward": rs}
            transition = transition.set(("next", "reward"), scaled.unsqueeze(-1))
        steps.append(transition)
        obs = nxt["observation"]
    return Record.stack(steps, dim=1), obs, norm_state


def make_normalizers(cfg: Config, env: envs.VecEnv) -> tuple[Normalizers, dict[str, Any]]:
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


def evaluate(cfg: Config, params: Any, nets: Any, norm: Normalizers, norm_state: dict):
    """Deterministic returns over ``cfg.eval_episodes`` episodes (seeds disjoint from training),
    observations normalised with the statistics frozen at their current values."""

    def act(o):
        return on_policy.act(params, norm.obs(norm_state, o), nets=nets, mode="deterministic")

    seed = 1_000_000 + 1_000 * cfg.seed
    return envs.evaluate(act, cfg.env, cfg.eval_episodes, seed=seed)["return"]


def _save(path, cfg: Config, params, state, norm_state: dict, step: int, elapsed: float) -> None:
    tree = {"params": params, "opt": state.opt, "updates": state.step, "step": step}
    tree["normalizers"] = norm_state
    _util.save_checkpoint(path, {**tree, "elapsed": elapsed}, config=cfg)


def train(cfg: Config) -> dict[str, Any]:
    """Runs PPO and returns a summary (``eval_return``, ``train_time``, paths, final params)."""
    per_iter = cfg.num_envs * cfg.num_steps
    if cfg.total_steps < per_iter:
        raise ValueError(
            f"ppo.py: --total-steps {cfg.total_steps} is less than one rollout "
            f"(--num-envs x --num-steps = {per_iter})"
        )
    if per_iter % cfg.num_minibatches:
        raise ValueError(
            f"ppo.py: a rollout of {per_iter} steps does not split into --num-minibatches "
            f"{cfg.num_minibatches}"
        )
    _util.prepare_out(cfg.out, None, cfg.overwrite, OUT_FILES)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    env = envs.VecEnv(cfg.env, cfg.num_envs)
    nets, _, params, trainer = make_agent(cfg, env.observation_spec, env.action_spec)
    norm, norm_state = make_normalizers(cfg, env)
    state = trainer.init(params)
    step_fn = torch.compile(trainer.step, fullgraph=True) if cfg.compile else trainer.step
    obs = env.reset(seed=cfg.seed)["observation"]
    log = _util.CSVLogger(cfg.out, LOG_FIELDS + list(METRICS), resume=False)
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
            rollout, obs, norm_state = collect(
                env, params, nets, norm, norm_state, obs, cfg.num_steps
            )
        params, state, metrics = step_fn(params, state, rollout)
        step += per_iter
        now = timer.elapsed()
        sps = step / max(now, 1e-9)
        episodes = env.completed_episodes()
        for ret, length in zip(episodes["return"].tolist(), episodes["length"].tolist()):
            recent.append(ret)
            row = {"step": step, "time": now, "episode_return": ret, "episode_length": length}
            row.update({k: float(metrics[k]) for k in METRICS if k in metrics})
            log.log(row)
        if bar is not None:
            bar.update(per_iter)
            mean = sum(recent) / len(recent) if recent else float("nan")
            bar.set_postfix(sps=f"{sps:.0f}", ret=f"{mean:.1f}", refresh=False)
        if next_eval is not None and step >= next_eval and step + per_iter <= cfg.total_steps:
            with timer.paused():
                rets = evaluate(cfg, params, nets, norm, norm_state)
            log.log({"step": step, "time": now, "sps": sps, **_eval_stats(rets)})
            next_eval += cfg.eval_every
        if next_ckpt is not None and step >= next_ckpt:
            with timer.paused():
                _save(ckpt, cfg, params, state, norm_state, step, timer.elapsed())
            next_ckpt += cfg.checkpoint_every
    if bar is not None:
        bar.close()
    env.close()
    train_time = timer.elapsed()
    rets = evaluate(cfg, params, nets, norm, norm_state)
    log.log({"step": step, "time": train_time, "sps": sps, **_eval_stats(rets)})
    log.close()
    _save(ckpt, cfg, params, state, norm_state, step, train_time)
    png = _util.plot_curve(log.path, os.path.join(cfg.out, "curve.png"), f"PPO on {cfg.env}")
    result = {
        "eval_return": float(rets.mean()),
        "eval_returns": rets.tolist(),
        "png": png,
        "csv": log.path,
        "checkpoint": ckpt,
        "train_time": train_time,
        "steps": step,
        "config": dataclasses.asdict(cfg),
    }
    _util.write_json(os.path.join(cfg.out, "result.json"), result)
    return {**result, "params": params}


def _eval_stats(rets: torch.Tensor) -> dict[str, float]:
    std = float(rets.std()) if rets.numel() > 1 else 0.0
    return {"eval_return": float(rets.mean()), "eval_std": std}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    cfg = _util.parse_config(Config, argv)
    result = train(cfg)
    print(
        f"PPO {cfg.env}: eval return {result['eval_return']:.1f} after {result['steps']} steps "
        f"in {result['train_time']:.0f} s"
    )
    return result


if __name__ == "__main__":
    main()
