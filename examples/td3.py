"""Twin Delayed DDPG (TD3) on a gymnasium task, in one readable file.

    python examples/td3.py --env Pendulum-v1 --total-steps 20000 --out runs/td3
    python examples/td3.py --env HalfCheetah-v5 --total-steps 1000000 --learning-starts 25000

The algorithm is ``funcrl.td3.loss`` (TorchRL's ``TD3Loss``: twin critics, clipped double-Q
target at a smoothed target action) trained by ``funcrl.td3.trainer`` (Adam; the actor and the
Polyak targets move every ``policy_delay`` critic steps). One update step is a single pure
function compiled with ``torch.compile(fullgraph=True)``. Exploration adds Gaussian noise to the
deterministic action (``funcrl.modules.exploration.AdditiveGaussian``). The collection loop,
evaluation, logging and checkpoints live in ``examples/_offpolicy.py``.

Noise scales are fractions of the action box's half-width (CleanRL's convention), so the same
settings fit ``[-1, 1]`` and ``[-2, 2]`` boxes.

Writes ``<out>/log.csv``, ``<out>/curve.png`` and ``<out>/checkpoint.pt``, and prints the final
deterministic evaluation (the mean over ``--eval-episodes`` episodes of the actor's action).
"""

from __future__ import annotations

import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _offpolicy  # noqa: E402
import _util  # noqa: E402

from funcrl import optim, td3  # noqa: E402
from funcrl.modules.exploration import AdditiveGaussian  # noqa: E402
from funcrl.nn import MLP, TanhBounded  # noqa: E402
from funcrl.record import Record  # noqa: E402


@dataclasses.dataclass
class Config(_offpolicy.OffPolicyConfig):
    """TD3: the loop's settings (env, steps, buffer, evaluation, output) plus these."""

    total_steps: int = dataclasses.field(
        default=20_000, metadata={"help": "environment steps (all envs together)"}
    )
    out: str = dataclasses.field(default="runs/td3", metadata={"help": "output directory"})
    learning_rate: float = dataclasses.field(
        default=1e-3, metadata={"help": "Adam step size of actor and critics"}
    )
    gamma: float = dataclasses.field(default=0.99, metadata={"help": "discount"})
    tau: float = dataclasses.field(default=0.005, metadata={"help": "Polyak weight of the targets"})
    num_cells: tuple[int, ...] = dataclasses.field(
        default=(256, 256), metadata={"help": "hidden sizes of actor and critics"}
    )
    policy_delay: int = dataclasses.field(
        default=2, metadata={"help": "critic steps per actor and target step"}
    )
    exploration_noise: float = dataclasses.field(
        default=0.1, metadata={"help": "std of the exploration noise (x half-width of the box)"}
    )
    policy_noise: float = dataclasses.field(
        default=0.2, metadata={"help": "std of the target smoothing noise (x half-width)"}
    )
    noise_clip: float = dataclasses.field(
        default=0.5, metadata={"help": "clip of the target smoothing noise (x half-width)"}
    )
    loss_function: str = dataclasses.field(
        default="l2", metadata={"help": "critic regression: l2, smooth_l1 (TorchRL's) or l1"}
    )


def make_agent(cfg: Config, observation_spec, action_spec) -> _offpolicy.Agent:
    """TD3's params, optimizer state, compiled update step and policies."""
    low, high = action_spec.low.reshape(-1), action_spec.high.reshape(-1)
    half = float(((high - low) / 2).mean())
    loss_cfg = td3.Config(
        gamma=cfg.gamma,
        policy_noise=cfg.policy_noise * half,
        noise_clip=cfg.noise_clip * half,
        loss_function=cfg.loss_function,
    )
    d_obs, d_act = observation_spec.shape[-1], low.numel()
    actor = TanhBounded(
        MLP(d_obs, d_act, num_cells=cfg.num_cells, activation="relu"),
        tuple(low.tolist()),
        tuple(high.tolist()),
    )
    nets = td3.Nets(actor=actor, num_cells=cfg.num_cells)
    params = td3.init(_util.run_keys(cfg.seed).init, observation_spec, action_spec, loss_cfg, nets)
    trainer = td3.trainer(
        _offpolicy.optimizer(cfg, optim.adam(cfg.learning_rate)),
        config=loss_cfg,
        nets=nets,
        policy_delay=cfg.policy_delay,
        tau=cfg.tau,
    )

    train_step = _offpolicy.update_step(trainer.step, cfg)

    # Constant noise scale: sigma_init == sigma_end, so the schedule state never moves.
    noise = AdditiveGaussian(
        action_spec, sigma_init=cfg.exploration_noise, sigma_end=cfg.exploration_noise, std=half
    )
    noise_state = noise.init()

    def act(params, observation):
        return nets.actor(params["actor"], observation)

    def explore(params, observation, key):
        record = Record({"action": act(params, observation)}, batch_ndim=1)
        return noise(noise_state, record, key=key)["action"]

    return _offpolicy.Agent(params, trainer.init(params), train_step, explore, act)


def main(argv: list[str] | None = None) -> dict:
    cfg = _util.parse_config(Config, argv)
    _offpolicy.set_threads(cfg.threads)
    env = _offpolicy.make_env(cfg)
    agent = make_agent(cfg, env.observation_spec, env.action_spec)
    result = _offpolicy.train(
        cfg,
        agent,
        env,
        title=f"TD3 on {cfg.env} (seed {cfg.seed})",
        metric_keys=("loss_qvalue", "loss_actor"),
    )
    env.close()
    print(_offpolicy.summary_line(result))
    return result


if __name__ == "__main__":
    main()
