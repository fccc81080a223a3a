"""Decision Transformer from a fixed dataset, conditioned on a target return and evaluated online.

    python examples/make_dataset.py --kind expert-medium --out runs/datasets/pendulum-expert-medium
    python examples/dt.py --dataset runs/datasets/pendulum-expert-medium --out runs/dt

The algorithm is ``funcrl.dt.loss`` (TorchRL's ``DTLoss``: the actions a ``funcrl.nn.DTActor``
predicts over ``--context`` steps of (return-to-go, observation, action), regressed on the data's)
trained by ``funcrl.dt.trainer`` (AdamW, gradient clipping). The dataset becomes segments of
``--context`` steps inside one episode (``funcrl.datasets.segments``, returns-to-go divided by
``--rtg-scale``); one update samples segments and takes a compiled step. At evaluation the
transformer reads the last ``--context`` steps of the episode and the return still to collect,
starting from the dataset's best episode return (or ``--target-return``).
"""

from __future__ import annotations

import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _offline  # noqa: E402
import _offpolicy  # noqa: E402
import _util  # noqa: E402
import gymnasium  # noqa: E402
import torch  # noqa: E402

from funcrl import buffers, datasets, dt, envs, optim  # noqa: E402
from funcrl import random as funcrl_random  # noqa: E402
from funcrl.nn import DTConfig  # noqa: E402


@dataclasses.dataclass
class Config(_offline.OfflineConfig):
    """DT: the loop's settings plus these (defaults: TorchRL's offline DT example's, smaller)."""

    out: str = dataclasses.field(default="runs/dt", metadata={"help": "output directory"})
    dataset: str = dataclasses.field(
        default="runs/datasets/pendulum-expert-medium",
        metadata={"help": "Minari dataset directory (examples/make_dataset.py builds one)"},
    )
    total_steps: int = dataclasses.field(default=20_000, metadata={"help": "gradient updates"})
    batch_size: int = dataclasses.field(default=64, metadata={"help": "segments per update"})
    learning_rate: float = dataclasses.field(default=1e-4, metadata={"help": "AdamW step size"})
    weight_decay: float = dataclasses.field(default=1e-4, metadata={"help": "AdamW decay"})
    context: int = dataclasses.field(default=20, metadata={"help": "steps the transformer reads"})
    n_embd: int = dataclasses.field(default=128, metadata={"help": "transformer width"})
    n_layer: int = dataclasses.field(default=3, metadata={"help": "transformer blocks"})
    n_head: int = dataclasses.field(default=1, metadata={"help": "attention heads"})
    rtg_scale: float = dataclasses.field(
        default=1000.0, metadata={"help": "returns-to-go are divided by this"}
    )
    target_from_dataset: bool = dataclasses.field(
        default=True, metadata={"help": "condition on the dataset's best episode return"}
    )
    target_return: float = dataclasses.field(
        default=0.0, metadata={"help": "return to condition on with --no-target-from-dataset"}
    )
    normalize_obs: bool = dataclasses.field(
        default=False,
        metadata={"help": "standardise observations by the dataset's mean and std (train and act)"},
    )


def best_return(data) -> float:
    """The best whole-episode return of the dataset."""
    ends = datasets.episode_ends(data)
    starts = torch.cat([torch.zeros(1, dtype=torch.long), ends[:-1] + 1])
    return float(datasets.return_to_go(data)[starts].max())


def rollout(
    cfg: Config,
    nets: dt.Nets,
    params,
    target: float,
    seed: int,
    obs_stats: datasets.ObservationStats | None = None,
) -> float:
    """One episode conditioned on ``target``: the transformer reads the last ``--context`` steps
    (observations standardised by ``obs_stats`` when given)."""
    env = gymnasium.make(cfg.env)
    obs, _ = env.reset(seed=seed)
    k, total, done = cfg.context, 0.0, False
    obs_h, act_h, rtg_h = [], [], []
    act_dim = int(params["action_bounds"]["low"].shape[-1])
    while not done:
        o = torch.as_tensor(obs, dtype=torch.float32)
        obs_h.append(o if obs_stats is None else obs_stats(o))
        act_h.append(torch.zeros(act_dim))  # the current action: never read (causal mask)
        rtg_h.append(torch.tensor([(target - total) / cfg.rtg_scale]))
        o, a, r = (torch.stack(h[-k:]) for h in (obs_h, act_h, rtg_h))
        action = dt.act(params, o, nets=nets, mode="deterministic", action=a, return_to_go=r)[-1]
        act_h[-1] = action
        obs, reward, term, trunc, _ = env.step(action.numpy())
        total += float(reward)
        done = term or trunc
    env.close()
    return total


def make_agent(
    cfg: Config, target: float, obs_stats: datasets.ObservationStats | None = None
) -> tuple[_offline.Agent, dt.Nets]:
    """DT's params, optimizer state, compiled update and online evaluation."""
    tc = DTConfig(
        n_embd=cfg.n_embd,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        n_inner=4 * cfg.n_embd,
        n_positions=3 * cfg.context,
    )
    nets = dt.Nets(transformer_config=tc)
    env = envs.GymEnv(cfg.env)
    params = dt.init(
        _util.run_keys(cfg.seed).init, env.observation_spec, env.action_spec, nets=nets
    )
    env.close()
    opt = optim.chain(
        optim.clip_by_global_norm(0.25),
        optim.adamw(cfg.learning_rate, weight_decay=cfg.weight_decay),
    )
    trainer = dt.trainer(opt, nets=nets)

    def step(params, opt_state, buffer, key):
        # The buffer stores whole segments [context, ...]: time becomes the second batch dim.
        k_sample, k_loss = funcrl_random.split(key)
        batch = buffers.sample(buffer, cfg.batch_size, key=k_sample).exclude("index")
        batch = batch.apply(lambda t: t, batch_ndim=2)
        return trainer.step(params, opt_state, batch, k_loss)

    def evaluate(params):
        seed = 1_000_000 + 1_000 * cfg.seed
        with torch.no_grad():
            rets = [
                rollout(cfg, nets, params, target, seed + i, obs_stats)
                for i in range(cfg.eval_episodes)
            ]
        return torch.tensor(rets, dtype=torch.float64)

    agent = _offline.Agent(
        params, trainer.init(params), _offpolicy.compile_step(step, cfg), evaluate, obs_stats
    )
    return agent, nets


def main(argv: list[str] | None = None) -> dict:
    cfg = _util.parse_config(Config, argv)
    _offpolicy.set_threads(cfg.threads)
    data, obs_stats = _offline.normalize(cfg, _offline.load_dataset(cfg))
    target = best_return(data) if cfg.target_from_dataset else cfg.target_return
    segs = datasets.segments(data, cfg.context, stride=1, scale=cfg.rtg_scale)
    segs = segs.select("observation", "action", "return_to_go").apply(lambda t: t, batch_ndim=1)
    agent, _ = make_agent(cfg, target, obs_stats)
    result = _offline.train(
        cfg,
        agent,
        datasets.to_buffer(segs),
        title=f"Decision Transformer on {os.path.basename(cfg.dataset)}, target {target:.0f}",
        metric_keys=("loss",),
    )
    result["target_return"] = target
    print(_offline.summary_line(result) + f"\ntarget return: {target:.1f}")
    return result


if __name__ == "__main__":
    main()
