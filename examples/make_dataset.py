"""Builds offline datasets locally and deterministically, from funcrl's own SAC and DQN agents.

    python examples/make_dataset.py --kind medium --out runs/datasets/pendulum-medium
    python examples/make_dataset.py --kind expert --out runs/datasets/pendulum-expert
    python examples/make_dataset.py --kind medium-replay --out runs/datasets/pendulum-medium-replay
    python examples/make_dataset.py --kind random --out runs/datasets/pendulum-random
    python examples/make_dataset.py --kind expert-medium --out runs/datasets/pendulum-expert-medium

The recipes (D4RL's, on a gymnasium task with a continuous action box):

* ``random``: uniformly random actions.
* ``medium``: a SAC agent trained by ``examples/sac.py`` for ``--medium-steps`` steps (a policy
  part of the way to the expert's return), acting stochastically. On Pendulum-v1 SAC's training
  returns are about -1400 after 2000 steps, -900 after 3000 and near -150 after 3600 (seed 0):
  the default 3000 sits in between; ``recipe.json`` records the behaviour return it gave.
* ``expert``: the same SAC trained for ``--expert-steps``, acting stochastically.
* ``medium-replay``: the whole replay buffer of a SAC training run that makes the medium policy's
  number of gradient updates spread over ``--replay-steps`` environment steps (updates per step
  ``(medium_steps - warm-up) / (replay_steps - warm-up)``), read from its checkpoint: its random
  warm-up and every episode it collected on the way to a medium policy. Spreading the updates is
  what gives D4RL's recipe ("the replay buffer until the policy reaches medium") 50k transitions
  on a task that SAC learns in 3,000 steps.
* ``expert-medium``: half expert, half medium transitions (the Decision Transformer's mix).

With ``--env CartPole-v1`` (any task with a discrete action space) the agents are funcrl's DQN
(``examples/dqn.py``, its RL Zoo settings) and the behaviour policies are epsilon-greedy
(``--epsilon``, default 0.1):

    python examples/make_dataset.py --env CartPole-v1 --kind medium --out runs/datasets/cartpole-medium

* ``random``: uniformly random actions (a behaviour return of 22 on CartPole-v1).
* ``medium``: DQN trained for ``--dqn-medium-steps`` steps. On CartPole-v1 (seed 0) the default
  6000 gives a behaviour return of 281 over the 50000 recorded steps (greedy: 304), 59% of the
  expert's; ``recipe.json`` records it. DQN's return is not monotonic in its budget here:
  10000 steps gave 106.
* ``expert``: DQN trained for ``--dqn-expert-steps`` (50000, the example's default): a behaviour
  return of 474 (greedy: 420 over 2 episodes).
* ``medium-replay``: the medium DQN run's whole replay buffer (5862 transitions, 45 per episode);
  ``expert-medium`` as above.

The SAC runs go to ``<out>.sac-medium`` / ``<out>.sac-expert`` (the DQN ones to ``<out>.dqn/...``)
and are reused when they exist (``--policy-dir`` points at another folder). Every draw is seeded
(``--seed``); nothing is downloaded. The dataset is a Minari directory
(``funcrl.datasets.write_minari``) whose metadata description holds the recipe;
``<out>/recipe.json`` holds it too, with the behaviour policy's mean
return over the recorded episodes.
"""

from __future__ import annotations

import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _util  # noqa: E402
import dqn as dqn_example  # noqa: E402
import sac as sac_example  # noqa: E402
import torch  # noqa: E402

import funcrl  # noqa: E402
from funcrl import checkpoint, datasets, dqn, sac  # noqa: E402
from funcrl.record import Record  # noqa: E402

KINDS = ("random", "medium", "expert", "medium-replay", "expert-medium")


@dataclasses.dataclass
class Config:
    """The dataset's recipe."""

    kind: str = dataclasses.field(default="medium", metadata={"help": f"one of {KINDS}"})
    env: str = dataclasses.field(default="Pendulum-v1", metadata={"help": "gymnasium env id"})
    steps: int = dataclasses.field(
        default=50_000, metadata={"help": "transitions to record (not for medium-replay)"}
    )
    medium_steps: int = dataclasses.field(
        default=3_000, metadata={"help": "SAC training steps of the medium policy"}
    )
    expert_steps: int = dataclasses.field(
        default=15_000, metadata={"help": "SAC training steps of the expert policy"}
    )
    replay_steps: int = dataclasses.field(
        default=50_000,
        metadata={"help": "environment steps of the medium-replay training run (its buffer)"},
    )
    dqn_medium_steps: int = dataclasses.field(
        default=6_000, metadata={"help": "DQN training steps of the medium policy (discrete envs)"}
    )
    dqn_expert_steps: int = dataclasses.field(
        default=50_000, metadata={"help": "DQN training steps of the expert policy (discrete envs)"}
    )
    epsilon: float = dataclasses.field(
        default=0.1, metadata={"help": "epsilon of the DQN behaviour policies (discrete envs)"}
    )
    num_cells: tuple[int, ...] = dataclasses.field(
        default=(256, 256), metadata={"help": "hidden sizes of the SAC (or DQN) nets"}
    )
    seed: int = dataclasses.field(default=0, metadata={"help": "seed of the agents and the data"})
    policy_dir: str = dataclasses.field(
        default="", metadata={"help": "folder of the SAC runs (default: beside --out)"}
    )
    out: str = dataclasses.field(
        default="runs/datasets/pendulum-medium", metadata={"help": "dataset directory"}
    )
    overwrite: bool = dataclasses.field(
        default=False, metadata={"help": "replace an existing dataset at --out"}
    )
    progress: bool = dataclasses.field(default=True, metadata={"help": "show progress bars"})
    compile: bool = dataclasses.field(
        default=True, metadata={"help": "torch.compile the SAC update step"}
    )


def _warmup(steps: int) -> int:
    return min(1_000, steps // 4)


def sac_run(cfg: Config, level: str) -> str:
    """The SAC run of ``level`` (``"medium"``, ``"expert"`` or ``"replay"``: the medium-replay
    run), trained unless its checkpoint exists."""
    base = cfg.policy_dir or (cfg.out.rstrip("/") + ".sac")
    steps = {"medium": cfg.medium_steps, "expert": cfg.expert_steps, "replay": cfg.replay_steps}
    steps = steps[level]
    name = f"{level}-{cfg.seed}" if level != "replay" else f"replay-{steps}-{cfg.seed}"
    out = os.path.join(base, name)
    if not os.path.exists(os.path.join(out, "checkpoint.pt")):
        argv = ["--env", cfg.env, "--total-steps", str(steps), "--seed", str(cfg.seed)]
        argv += ["--out", out, "--num-cells", *map(str, cfg.num_cells), "--overwrite"]
        argv += ["--learning-starts", str(_warmup(steps))]
        if level == "replay":
            updates = cfg.medium_steps - _warmup(cfg.medium_steps)
            argv += ["--updates-per-step", repr(updates / (steps - _warmup(steps)))]
        argv += [] if cfg.progress else ["--no-progress"]
        argv += [] if cfg.compile else ["--no-compile"]
        argv += ["--eval-every", "0", "--eval-episodes", "2"]
        sac_example.main(argv)
    return out


def sac_policy(cfg: Config, run: str):
    """The run's SAC actor, acting stochastically (D4RL's behaviour policies sample)."""
    params = checkpoint.load(os.path.join(run, "checkpoint.pt")).tree["params"]
    nets = sac.Nets(num_cells=cfg.num_cells)

    def policy(obs, key):
        return sac.act(params, obs, nets=nets, mode="random", key=key)

    return policy


def random_policy(cfg: Config):
    env = funcrl.envs.GymEnv(cfg.env)
    spec = env.action_spec
    env.close()

    def policy(obs, key):
        return (
            funcrl.random.uniform(key, spec.shape, torch.float32, 0.0, 1.0) * (spec.high - spec.low)
            + spec.low
        )

    return policy


# -- discrete action spaces: funcrl's DQN agents -------------------------------------------------


def num_actions(env_id: str) -> int | None:
    """The number of actions of a discrete task, ``None`` for a continuous one."""
    env = funcrl.envs.GymEnv(env_id)
    n = getattr(env.action_spec, "n", None)
    env.close()
    return None if n is None else int(n)


def dqn_run(cfg: Config, level: str) -> str:
    """The DQN run of ``level`` (``"medium"``/``"expert"``), trained unless its checkpoint exists."""
    base = cfg.policy_dir or (cfg.out.rstrip("/") + ".dqn")
    out = os.path.join(base, f"{level}-{cfg.seed}")
    if not os.path.exists(os.path.join(out, "checkpoint.pt")):
        steps = cfg.dqn_medium_steps if level == "medium" else cfg.dqn_expert_steps
        argv = ["--env", cfg.env, "--total-steps", str(steps), "--seed", str(cfg.seed)]
        argv += ["--out", out, "--num-cells", *map(str, cfg.num_cells), "--overwrite"]
        argv += ["--learning-starts", str(min(1_000, steps // 4))]
        argv += [] if cfg.progress else ["--no-progress"]
        argv += [] if cfg.compile else ["--no-compile"]
        argv += ["--eval-every", "0", "--eval-episodes", "2"]
        dqn_example.main(argv)
    return out


def dqn_policy(cfg: Config, run: str):
    """The run's Q-network, acting epsilon-greedily with ``cfg.epsilon`` (index actions)."""
    params = checkpoint.load(os.path.join(run, "checkpoint.pt")).tree["params"]
    loss_cfg = dqn.Config(action_space="categorical")
    nets = dqn.Nets(num_cells=cfg.num_cells)

    def policy(obs, key):
        return dqn.act(
            params, obs, config=loss_cfg, nets=nets, mode="random", epsilon=cfg.epsilon, key=key
        )

    return policy


def random_discrete_policy(n: int):
    def policy(obs, key):
        return funcrl.random.randint(key, (), 0, n)

    return policy


def build_discrete(cfg: Config, n: int) -> tuple[Record, str]:
    """:func:`build` for a discrete task: DQN agents instead of SAC ones."""
    key = funcrl.random.key(cfg.seed)
    if cfg.kind == "random":
        data = datasets.record(random_discrete_policy(n), cfg.env, cfg.steps, key, seed=cfg.seed)
        return data, f"uniform random actions, {cfg.steps} steps, seed {cfg.seed}"

    def agent(level: str) -> str:
        steps = cfg.dqn_medium_steps if level == "medium" else cfg.dqn_expert_steps
        return (
            f"epsilon-greedy ({cfg.epsilon}) DQN policy after {steps} training steps "
            f"(examples/dqn.py, seed {cfg.seed}, num_cells {list(cfg.num_cells)})"
        )

    if cfg.kind in ("medium", "expert"):
        policy = dqn_policy(cfg, dqn_run(cfg, cfg.kind))
        data = datasets.record(policy, cfg.env, cfg.steps, key, seed=cfg.seed)
        return data, f"{agent(cfg.kind)}, {cfg.steps} steps"
    if cfg.kind == "medium-replay":
        run = dqn_run(cfg, "medium")
        state = checkpoint.load(os.path.join(run, "checkpoint.pt")).tree["buffer"]
        return datasets.from_buffer(state), (
            f"the replay buffer of DQN's {cfg.dqn_medium_steps}-step training run "
            f"(examples/dqn.py, seed {cfg.seed}, random warm-up included)"
        )
    if cfg.kind == "expert-medium":
        half = cfg.steps // 2
        k1, k2 = funcrl.random.split(key, 2).unbind(0)
        expert = datasets.record(
            dqn_policy(cfg, dqn_run(cfg, "expert")), cfg.env, half, k1, seed=cfg.seed
        )
        medium = datasets.record(
            dqn_policy(cfg, dqn_run(cfg, "medium")), cfg.env, half, k2, seed=cfg.seed + 1
        )
        parts = [d[: int(datasets.episode_ends(d)[-1]) + 1] for d in (expert, medium)]
        return Record.cat(parts), (
            f"{half} steps of the {agent('expert')} then {half} of the {agent('medium')}"
        )
    raise ValueError(f"make_dataset: --kind must be one of {KINDS}, got {cfg.kind!r}")


def build(cfg: Config) -> tuple[Record, str]:
    """The dataset's transitions and its recipe line."""
    key = funcrl.random.key(cfg.seed)
    if cfg.kind == "random":
        return datasets.record(random_policy(cfg), cfg.env, cfg.steps, key, seed=cfg.seed), (
            f"uniform random actions, {cfg.steps} steps, seed {cfg.seed}"
        )
    if cfg.kind in ("medium", "expert"):
        run = sac_run(cfg, cfg.kind)
        n = cfg.medium_steps if cfg.kind == "medium" else cfg.expert_steps
        data = datasets.record(sac_policy(cfg, run), cfg.env, cfg.steps, key, seed=cfg.seed)
        return data, (
            f"stochastic SAC policy after {n} training steps (examples/sac.py, seed {cfg.seed}, "
            f"num_cells {list(cfg.num_cells)}), {cfg.steps} steps"
        )
    if cfg.kind == "medium-replay":
        if cfg.replay_steps < cfg.medium_steps:
            raise ValueError(
                f"make_dataset: --replay-steps must be >= --medium-steps ({cfg.medium_steps}), "
                f"got {cfg.replay_steps}"
            )
        run = sac_run(cfg, "replay")
        state = checkpoint.load(os.path.join(run, "checkpoint.pt")).tree["buffer"]
        updates = cfg.medium_steps - _warmup(cfg.medium_steps)
        return datasets.from_buffer(state), (
            f"the replay buffer of a SAC training run of {cfg.replay_steps} steps making the "
            f"medium policy's {updates} updates (examples/sac.py, seed {cfg.seed}, random "
            "warm-up included)"
        )
    if cfg.kind == "expert-medium":
        half = cfg.steps // 2
        k1, k2 = funcrl.random.split(key, 2).unbind(0)
        expert = datasets.record(
            sac_policy(cfg, sac_run(cfg, "expert")), cfg.env, half, k1, seed=cfg.seed
        )
        medium = datasets.record(
            sac_policy(cfg, sac_run(cfg, "medium")), cfg.env, half, k2, seed=cfg.seed + 1
        )
        # Each half ends on an unfinished episode: keep whole episodes only.
        parts = [d[: int(datasets.episode_ends(d)[-1]) + 1] for d in (expert, medium)]
        return Record.cat(parts), (
            f"{half} steps of the expert SAC ({cfg.expert_steps} training steps) then {half} of "
            f"the medium one ({cfg.medium_steps}), seed {cfg.seed}"
        )
    raise ValueError(f"make_dataset: --kind must be one of {KINDS}, got {cfg.kind!r}")


def mean_return(data: Record) -> float:
    """The mean return of the recorded whole episodes."""
    ends = datasets.episode_ends(data)
    rtg = datasets.return_to_go(data)
    starts = torch.cat([torch.zeros(1, dtype=torch.long), ends[:-1] + 1])
    return float(rtg[starts].mean())


def main(argv: list[str] | None = None) -> dict:
    cfg = _util.parse_config(Config, argv)
    if cfg.kind not in KINDS:
        raise ValueError(f"make_dataset: --kind must be one of {KINDS}, got {cfg.kind!r}")
    if os.path.exists(cfg.out) and not cfg.overwrite:
        raise FileExistsError(f"--out {cfg.out} exists: pass --overwrite to replace it")
    n = num_actions(cfg.env)
    data, recipe = build(cfg) if n is None else build_discrete(cfg, n)
    ret = mean_return(data)
    datasets.write_minari(
        data,
        cfg.out,
        env_id=cfg.env,
        unfinished="drop",
        overwrite=cfg.overwrite,
        algorithm_name=f"funcrl {'SAC' if n is None else 'DQN'} ({cfg.kind})",
        author="funcrl examples/make_dataset.py",
        description=recipe,
    )
    info = {"kind": cfg.kind, "env": cfg.env, "recipe": recipe, "behaviour_return": ret}
    info["transitions"] = int(datasets.episode_ends(data)[-1]) + 1
    _util.write_json(os.path.join(cfg.out, "recipe.json"), info)
    print(f"{cfg.out}: {info['transitions']} transitions, behaviour return {ret:.1f} ({recipe})")
    return info


if __name__ == "__main__":
    main()
