"""N independent SAC agents trained at once in one process (PureJaxRL's trick, on torch.func).

    python examples/sac_seeds.py --agents 8 --env Pendulum-v1 --total-steps 15000 --out runs/seeds

Every agent has its own params, optimizer state, replay buffer and environments; nothing is shared
but the code. The per-agent update of ``examples/sac.py`` -- sample a batch, SAC losses, gradients,
Adam, Polyak targets -- is mapped over a leading agent dim with
``torch.func.vmap(step)`` over the agents' keys (each agent draws its own batch and noise from its
own key; ``randomness="error"`` proves nothing reads the global RNG) and the result is compiled
once, so N agents cost one batched graph instead of N Python loops.

Keys: one ``funcrl.random.key(seed)`` split into the streams of ``_util.run_keys``; agent
``i``'s init, exploration and update keys are child ``i`` of each stream, so agent ``i`` draws the
same numbers whatever ``--agents`` is. The checkpoint stores the root key.

State layout: every leaf of the params, the optimizer state and the buffer has a leading dim
``[N]``; one gymnasium vector env holds ``N * num_envs`` environments, agent ``i`` owning envs
``i * num_envs ... (i + 1) * num_envs - 1``.

Writes ``<out>/log.csv`` (per-agent returns), ``<out>/curve.png`` (mean over agents) and
``<out>/checkpoint.pt``; ``--resume`` continues from the checkpoint.

``--device cuda`` puts params, buffers and env tensors on the GPU (``--cudagraphs`` replays the
vmapped update as a CUDA graph). ``--distributed`` (population mode, under ``torchrun``) splits the
agents over the ranks: rank ``r`` of ``W`` trains agents ``[r N / W, (r + 1) N / W)`` with the
same seeds a one-process run gives them, with no communication but the evaluations, gathered
(``funcrl.distributed.gather``) so rank 0 logs every agent's evaluation; ``log.csv`` holds rank
0's agents' training episodes, and the checkpoint every agent's params and optimizer state
(without the buffers, so it cannot be resumed).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _offpolicy  # noqa: E402
import _util  # noqa: E402
from sac import Config as SACConfig  # noqa: E402

from funcrl import buffers, checkpoint, distributed, envs, optim, sac, tree  # noqa: E402
from funcrl import random as frandom  # noqa: E402
from funcrl.training import update  # noqa: E402


@dataclasses.dataclass
class Config(SACConfig):
    """``examples/sac.py``'s settings, applied to each agent, plus the number of agents.

    ``num_envs`` is per agent; agent ``i``'s keys are child ``i`` of each of the run's streams.
    """

    agents: int = dataclasses.field(default=8, metadata={"help": "independent agents (seeds)"})
    # On a CPU a 256-wide update is compute-bound, so batching agents saves nothing; at 64 wide it
    # is overhead-bound and vmap amortises the overhead (measured: 8 agents x 15k Pendulum steps in
    # 296 s wall on 2 shared cores, all agents >= -193). On a GPU, pass --num-cells 256 256.
    num_cells: tuple[int, ...] = dataclasses.field(
        default=(64, 64), metadata={"help": "hidden sizes of actor and critics"}
    )
    batch_size: int = dataclasses.field(default=128, metadata={"help": "transitions per update"})
    out: str = dataclasses.field(default="runs/sac_seeds", metadata={"help": "output directory"})


def main(argv: list[str] | None = None) -> dict:
    cfg = _util.parse_config(Config, argv)
    _offpolicy.set_threads(cfg.threads)
    dev = _offpolicy.device(cfg)
    rank, world = 0, 1
    if cfg.distributed:
        if cfg.resume:
            raise ValueError("--resume: not supported with --distributed (one buffer per rank)")
        rank, world = distributed.setup(device=dev)
    lead = rank == 0
    # This rank's agents (all of them in one process); n below counts only those.
    agents = distributed.shard(torch.arange(cfg.agents)).tolist()
    first, n, e = agents[0], len(agents), cfg.num_envs
    if lead:
        _util.prepare_out(cfg.out, cfg.resume, cfg.overwrite, _offpolicy.OUT_FILES)
    ckpt_path = os.path.join(cfg.out, "checkpoint.pt")

    # --- environments: one vector env of n * e, split by agent ---
    env = envs.VecEnv(cfg.env, n * e, device=dev)
    obs_spec, act_spec = env.observation_spec, env.action_spec
    root = frandom.key(cfg.seed)
    if cfg.resume and os.path.exists(ckpt_path):
        root = _util.load_checkpoint(ckpt_path).tree["key"]
    keys = _util.run_keys(root)
    # Child i of each stream belongs to agent i (of --agents, on whichever rank it lives): agent i
    # draws the same numbers for any number of agents or ranks. On the device: sampling checks it.
    agent_keys = _util.Keys(
        *(frandom.split(k, cfg.agents)[first : first + n].to(dev) for k in keys)
    )
    # The warm-up actions: one generator per rank, seeded from the env key.
    action_gen = torch.Generator().manual_seed(_util.int_seed(frandom.fold_in(keys.env, rank)))

    # --- the SAC update for one agent, as in examples/sac.py ---
    loss_cfg = sac.Config(
        gamma=cfg.gamma, alpha_init=cfg.alpha_init, loss_function=cfg.loss_function
    )
    nets = sac.Nets(num_cells=cfg.num_cells)
    trainer = update(
        functools.partial(sac.loss, config=loss_cfg, nets=nets),
        optim.adam(cfg.learning_rate),  # independent agents: nothing to average over ranks
        trainable=("actor", "qvalue", "log_alpha"),
        targets={"target_qvalue": "qvalue"},
        tau=cfg.tau,
    )

    def train_step(params, opt_state, buffer, key, update):
        # Update u of this agent: its own stream, folded with the update count.
        k_sample, k_loss = frandom.split(frandom.fold_in(key, update))
        batch = buffers.sample(buffer, cfg.batch_size, key=k_sample)
        return trainer.step(params, opt_state, batch, k_loss)

    # --- ... mapped over the agents: the whole trick is this line ---
    train_all = torch.func.vmap(train_step, in_dims=(0, 0, 0, 0, None), randomness="error")
    train_all = _offpolicy.compile_step(train_all, cfg)

    def explore(params, observation, key, step):
        return sac.policy(params, observation, nets=nets).sample(key=frandom.fold_in(key, step))

    def act(params, observation):
        return sac.policy(params, observation, nets=nets).deterministic_sample

    explore_all = torch.func.vmap(explore, in_dims=(0, 0, 0, None), randomness="error")
    act_all = torch.func.vmap(act)

    # --- stacked state: params, optimizer states, buffers, each [n, ...] ---
    params = tree.stack(
        [sac.init(agent_keys.init[i], obs_spec, act_spec, loss_cfg, nets) for i in range(n)]
    )
    opt_state = tree.stack([trainer.init(tree.map(lambda x, i=i: x[i], params)) for i in range(n)])
    params, opt_state = _util.to_device((params, opt_state), dev)
    # Sub-env j of agent i is seeded env_seed + i * e + j, on whichever rank agent i lives.
    env_seed = _util.int_seed(keys.env) + first * e
    obs = env.reset(seed=env_seed)
    example, _ = env.step(act_spec.rand((n * e,), generator=action_gen))
    obs = env.reset(seed=env_seed)
    buf = tree.stack([buffers.init(cfg.buffer_size, example[0]) for _ in range(n)])
    step, updates_done, elapsed = 0, 0.0, 0.0
    if cfg.resume:
        if not os.path.exists(ckpt_path):
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt_path}")
        like = {"params": params, "opt_state": opt_state, "buffers": [...] * n}
        like.update(dict.fromkeys(("step", "updates_done", "elapsed", "action_rng", "key"), ...))
        _util.check_resume_config(ckpt_path, checkpoint.metadata(ckpt_path), cfg)
        ck = _util.load_checkpoint(ckpt_path, like=like).tree
        params, opt_state = _util.to_device((ck["params"], ck["opt_state"]), dev)
        empty = [tree.map(lambda x, i=i: x[i], buf) for i in range(n)]
        saved = _util.to_device(ck["buffers"], dev)
        buf = tree.stack([_offpolicy.load_buffer(sd, b) for sd, b in zip(saved, empty)])
        step, updates_done, elapsed = ck["step"], ck["updates_done"], ck["elapsed"]
        action_gen.set_state(ck["action_rng"])
        obs = env.reset(seed=env_seed + 7919 * (step // e + 1))
        _util.truncate_log(os.path.join(cfg.out, "log.csv"), step)
    # Views of agent i's buffer: buffers.add_ writes through them into the stacked storage.
    views = [tree.map(lambda x, i=i: x[i], buf) for i in range(n)]

    fields = ["step", "time", "agent", "episode_return", "eval_return"]
    log = _util.CSVLogger(cfg.out, fields, resume=cfg.resume) if lead else _offpolicy._NoLog()
    running = torch.zeros(n, e, dtype=torch.float64, device=dev)
    recent = torch.full((n,), float("nan"), dtype=torch.float64, device=dev)
    timer = _util.Timer()
    bar = None
    if cfg.progress and lead:
        from tqdm import tqdm

        bar = tqdm(total=cfg.total_steps, initial=step, unit="step/agent", dynamic_ncols=True)

    def evaluate_all(params) -> torch.Tensor:
        # One vector env of n * episodes: agent i plays episodes i * k ... (i + 1) * k - 1.
        k = cfg.eval_episodes

        def policy(o):
            return act_all(params, o.reshape(n, k, -1)).reshape(n * k, -1)

        # Every rank evaluates its agents on the episodes a one-process run gives them.
        seed = 1_000_000 + 1_000 * cfg.seed + first * k
        res = envs.evaluate(policy, cfg.env, n * k, seed=seed, device=dev)
        # All ranks' agents, in agent order (a collective: every rank evaluates at the same step).
        return distributed.gather(res["return"].reshape(n, k).mean(1).to(dev))

    next_eval = _offpolicy._next_multiple(step, cfg.eval_every)
    while step < cfg.total_steps:
        if step < cfg.learning_starts:
            action = act_spec.rand((n * e,), generator=action_gen)
        else:
            with torch.no_grad():
                o = obs["observation"].reshape(n, e, -1)
                action = explore_all(params, o, agent_keys.explore, torch.tensor(step))
                action = action.reshape(n * e, -1)
        transition, obs = env.step(action)
        per_agent = transition.reshape(n, e)
        for i in range(n):
            buffers.add_(views[i], per_agent[i])
        step += e
        if step >= cfg.learning_starts:
            target = (step - cfg.learning_starts + e) * cfg.updates_per_step
            while updates_done + 1 <= target:
                t = torch.tensor(int(updates_done))  # an input: a new count never recompiles
                params, opt_state, _ = train_all(params, opt_state, buf, agent_keys.update, t)
                updates_done += 1
        running += per_agent["next", "reward"].squeeze(-1).double()
        done = per_agent["next", "done"].squeeze(-1)
        if bool(done.any()):
            for i, j in done.nonzero().tolist():
                recent[i] = running[i, j]
                log.log(
                    {
                        "step": step,
                        "time": elapsed + timer.elapsed(),
                        "agent": first + i,
                        "episode_return": float(running[i, j]),
                    }
                )
            running[done] = 0.0
        if bar is not None:
            bar.update(e)
            if step % 200 == 0:
                bar.set_postfix(ret=f"{float(recent.nanmean()):.1f}", refresh=False)
        if next_eval is not None and step >= next_eval and step < cfg.total_steps:
            with timer.paused():
                rets = evaluate_all(params)
            for i in range(cfg.agents):
                log.log(
                    {
                        "step": step,
                        "time": elapsed + timer.elapsed(),
                        "agent": i,
                        "eval_return": float(rets[i]),
                    }
                )
            next_eval = _offpolicy._next_multiple(step, cfg.eval_every)
    if bar is not None:
        bar.close()
    train_time = elapsed + timer.elapsed()
    rets = evaluate_all(params).cpu()
    for i in range(cfg.agents):
        log.log({"step": step, "time": train_time, "agent": i, "eval_return": float(rets[i])})
    log.close()
    env.close()
    state = {
        # Every agent's params and optimizer state (gathered from the ranks when distributed).
        "params": distributed.gather(params),
        "opt_state": distributed.gather(opt_state),
        "buffers": [_offpolicy.buffer_state(v) for v in views] if world == 1 else None,
        "step": step,
        "updates_done": float(updates_done),
        "elapsed": float(train_time),
        "action_rng": action_gen.get_state(),
        "key": root,
    }
    png = os.path.join(cfg.out, "curve.png")
    if world > 1:
        torch.distributed.destroy_process_group()
    if not lead:
        return {"eval_returns": rets.tolist(), "train_time": train_time, "steps": step}
    _util.save_checkpoint(ckpt_path, state, cfg)
    n = cfg.agents
    png = _util.plot_curve(log.path, png, f"SAC x{n} agents on {cfg.env}")
    print(
        f"final deterministic evaluation ({cfg.eval_episodes} episodes each) of {n} agents after "
        f"{step} steps each ({train_time:.0f} s): "
        + ", ".join(f"{r:.1f}" for r in rets.tolist())
        + f"\nmedian {float(rets.median()):.1f}, worst {float(rets.min()):.1f}\nlearning curve: {png}"
    )
    return {
        "eval_returns": rets.tolist(),
        "train_time": train_time,
        "steps": step,
        "png": png,
        "csv": log.path,
        "checkpoint": ckpt_path,
    }


if __name__ == "__main__":
    main()
