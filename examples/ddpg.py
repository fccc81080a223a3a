"""Deep Deterministic Policy Gradient (DDPG) on a gymnasium task, in one readable file.

    python examples/ddpg.py --env Pendulum-v1 --total-steps 20000 --out runs/ddpg
    python examples/ddpg.py --env HalfCheetah-v5 --total-steps 1000000 --learning-starts 25000

The algorithm is ``funcrl.ddpg.loss`` (TorchRL's ``DDPGLoss``: one critic regressed on the TD(0)
target of the target actor-critic, the actor ascending the critic) trained by
``funcrl.ddpg.trainer`` (Adam on both nets every step, Polyak targets). One update step is a single
pure function compiled with ``torch.compile(fullgraph=True)``. Exploration adds Gaussian noise to
the deterministic action (``funcrl.modules.exploration.AdditiveGaussian``, as TorchRL's DDPG
example). The collection loop, evaluation, logging and checkpoints live in
``examples/_offpolicy.py``.

The exploration noise is a fraction of the action box's half-width (CleanRL's convention), so the
same setting fits ``[-1, 1]`` and ``[-2, 2]`` boxes.

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

from funcrl import ddpg, optim  # noqa: E402
from funcrl.modules.exploration import AdditiveGaussian  # noqa: E402
from funcrl.nn import MLP, TanhBounded  # noqa: E402
from funcrl.record import Record  # noqa: E402


@dataclasses.dataclass
class Config(_offpolicy.OffPolicyConfig):
    """DDPG: the loop's settings (env, steps, buffer, evaluation, output) plus these."""

    total_steps: int = dataclasses.field(
        default=20_000, metadata={"help": "environment steps (all envs together)"}
    )
    out: str = dataclasses.field(default="runs/ddpg", metadata={"help": "output directory"})
    learning_rate: float = dataclasses.field(
        default=1e-3, metadata={"help": "Adam step size of actor and critic"}
    )
    gamma: float = dataclasses.field(default=0.99, metadata={"help": "discount"})
    tau: float = dataclasses.field(default=0.005, metadata={"help": "Polyak weight of the targets"})
    num_cells: tuple[int, ...] = dataclasses.field(
        default=(256, 256), metadata={"help": "hidden sizes of actor and critic"}
    )
    exploration_noise: float = dataclasses.field(
        default=0.1, metadata={"help": "std of the exploration noise (x half-width of the box)"}
    )
    delay_actor: bool = dataclasses.field(
        default=True,
        metadata={
            "help": "bootstrap from a Polyak target actor (TorchRL's default: the online one)"
        },
    )
    loss_function: str = dataclasses.field(
        default="l2", metadata={"help": "critic regression: l2 (TorchRL's), smooth_l1 or l1"}
    )


def make_agent(cfg: Config, observation_spec, action_spec) -> _offpolicy.Agent:
    """DDPG's params, optimizer state, compiled update step and policies."""
    low, high = action_spec.low.reshape(-1), action_spec.high.reshape(-1)
    half = float(((high - low) / 2).mean())
    loss_cfg = ddpg.Config(
        gamma=cfg.gamma, delay_actor=cfg.delay_actor, loss_function=cfg.loss_function
    )
    d_obs, d_act = observation_spec.shape[-1], low.numel()
    actor = TanhBounded(
        MLP(d_obs, d_act, num_cells=cfg.num_cells, activation="relu"),
        tuple(low.tolist()),
        tuple(high.tolist()),
    )
    nets = ddpg.Nets(actor=actor, num_cells=cfg.num_cells)
    params = ddpg.init(_util.run_keys(cfg.seed).init, observation_spec, action_spec, loss_cfg, nets)
    trainer = ddpg.trainer(
        _offpolicy.optimizer(cfg, optim.adam(cfg.learning_rate)),
        config=loss_cfg,
        nets=nets,
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
        title=f"DDPG on {cfg.env} (seed {cfg.seed})",
        metric_keys=("loss_value", "loss_actor"),
    )
    env.close()
    print(_offpolicy.summary_line(result))
    return result


if __name__ == "__main__":
    main()
