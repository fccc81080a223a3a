"""End-to-end environment steps per second of the SAC Pendulum loop: funcrl vs TorchRL.

Both loops do the same thing each env step: pick an action with the stochastic policy (eager,
``no_grad``), step one ``Pendulum-v1`` (gymnasium), write the transition to a replay buffer, sample
a batch and run one compiled SAC update (UTD 1, hidden 256x2, batch 256):

* funcrl: :class:`funcrl.envs.GymEnv` + :mod:`funcrl.buffers` (``add_``; ``sample`` inside the
  compiled step, as ``examples/sac.py``) + ``torch.compile(fullgraph=True)`` of the update;
* TorchRL: ``torchrl.envs.GymEnv`` (``step_and_maybe_reset``) + ``ReplayBuffer(LazyTensorStorage)``
  + ``SACLoss``/``Adam``/``SoftUpdate``, the whole update under ``torch.compile``.

After ``learning_starts`` random steps and the compile, the two loops run in interleaved rounds;
we report env steps per second (median and IQR over rounds).

    python bench/env_steps.py            # writes bench/results/env_steps.json
    python bench/env_steps.py --quick    # seconds: eager updates, tiny nets, no json
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _harness as H  # noqa: E402
from bench.update_step import GAMMA, LR, TAU, _torchrl_modules  # noqa: E402
from funcrl.jit import compile_step  # noqa: E402

ENV = "Pendulum-v1"


def funcrl_loop(
    hidden, batch, learning_starts, compiled, capacity=100_000, device="cpu", cudagraphs=False
):
    import torch

    from funcrl import buffers, envs, optim, sac
    from funcrl.training import update

    env = envs.GymEnv(ENV, device=device)  # observations arrive on the device
    nets = sac.Nets(num_cells=hidden)
    params = sac.init(0, env.observation_spec, env.action_spec, nets=nets, device=device)
    train = update(
        partial(sac.loss, nets=nets),
        optim.adam(LR, foreach=True),
        trainable=("actor", "qvalue", "log_alpha"),
        targets={"target_qvalue": "qvalue"},
        tau=TAU,
    )
    opt_state = train.init(params)

    def train_step(params, opt_state, buf):
        return train.step(params, opt_state, buffers.sample(buf, batch))

    if compiled:
        train_step = compile_step(train_step, cudagraphs=cudagraphs)
    obs = env.reset(seed=0)
    tr, _ = env.step(env.random_action())
    buf = buffers.init(capacity, tr)
    state = {"params": params, "opt": opt_state, "obs": obs, "t": 0}

    def run(n):
        for _ in range(n):
            if state["t"] < learning_starts:
                action = env.random_action()
            else:
                with torch.no_grad():
                    action = sac.policy(
                        state["params"], state["obs"]["observation"], nets=nets
                    ).sample()
            tr, state["obs"] = env.step(action)
            buffers.add_(buf, tr)
            if state["t"] >= learning_starts:
                state["params"], state["opt"], _ = train_step(state["params"], state["opt"], buf)
            state["t"] += 1

    return run


def torchrl_loop(
    hidden, batch, learning_starts, compiled, capacity=100_000, device="cpu", cudagraphs=False
):
    import torch
    from torchrl.data import LazyTensorStorage, ReplayBuffer
    from torchrl.envs import GymEnv
    from torchrl.envs.utils import ExplorationType, set_exploration_type
    from torchrl.objectives import SACLoss, SoftUpdate

    env = GymEnv(ENV, device=device)
    spec = env.action_spec
    obs_dim = env.observation_spec["observation"].shape[-1]
    actor, q, _ = _torchrl_modules(
        "sac", hidden, obs=obs_dim, act=spec.shape[-1], low=spec.space.low, high=spec.space.high
    )
    actor, q = actor.to(device), q.to(device)
    loss = SACLoss(actor, q, num_qvalue_nets=2, loss_function="smooth_l1", delay_qvalue=True)
    loss.make_value_estimator(gamma=GAMMA)
    updater = SoftUpdate(loss, tau=TAU)
    opt = torch.optim.Adam(loss.parameters(), lr=LR, foreach=True)
    rb = ReplayBuffer(storage=LazyTensorStorage(capacity, device=device), batch_size=batch)

    def update(data):
        out = loss(data)
        (out["loss_actor"] + out["loss_qvalue"] + out["loss_alpha"]).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        updater.step()
        return out.detach()

    if compiled:
        update = compile_step(update, cudagraphs=cudagraphs, fullgraph=False)
    state = {"td": env.reset(), "t": 0}

    def run(n):
        for _ in range(n):
            td = state["td"]
            if state["t"] < learning_starts:
                td["action"] = spec.rand()
            else:
                with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
                    td = actor(td)
            td, state["td"] = env.step_and_maybe_reset(td)
            rb.add(td)
            if state["t"] >= learning_starts:
                update(rb.sample())
            state["t"] += 1

    return run


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--learning-starts", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=200, help="env steps per round")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--quick", action="store_true", help="eager, tiny nets and rounds, no json")
    p.add_argument("--out", default=None)
    H.add_device_args(p)
    a = p.parse_args(argv)
    dev, graphs = H.device_from_args(a)
    H.setup_torch()
    if a.quick:
        a.hidden, a.batch, a.learning_starts, a.rounds, a.steps = [16], 16, 20, 2, 10
        a.no_compile = True
    compiled = not a.no_compile
    if compiled:
        H.prewarm_compiler()
    t0 = time.time()
    hidden = tuple(a.hidden)
    impls, meta = {}, {}
    for name, make in (("funcrl", funcrl_loop), ("torchrl", torchrl_loop)):
        try:
            run = make(hidden, a.batch, a.learning_starts, compiled, device=dev, cudagraphs=graphs)
            t = time.perf_counter()
            run(a.learning_starts)  # random actions, filling the buffer
            meta[name] = {"fill_s": time.perf_counter() - t}
            t = time.perf_counter()
            run(1)  # the first update: the compile
            meta[name]["first_update_s"] = time.perf_counter() - t
            run(5)
            impls[name] = partial(run, 1)
        except Exception as e:  # noqa: BLE001 - report and go on
            meta[name] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
        print(f"  built {name}: {meta[name]}", flush=True)
    timings = H.interleaved(impls, rounds=a.rounds, steps=a.steps)
    for name, t in timings.items():
        meta[name].update(t)
        q = t["per_step_s"]
        meta[name]["env_steps_per_s"] = {
            "median": 1.0 / q["median"],
            "q25": 1.0 / q["q75"],
            "q75": 1.0 / q["q25"],
        }
    lines = [
        f"SAC {ENV}, hidden {hidden}, batch {a.batch}, UTD 1, "
        f"{'compiled' if compiled else 'eager'} update, one thread",
        "| loop | env steps/s (IQR) | us/env step |",
        "|---|---|---|",
    ]
    for name in timings:
        s = meta[name]["env_steps_per_s"]
        lines.append(
            f"| {name} | {s['median']:.0f} ({s['q25']:.0f}-{s['q75']:.0f}) | "
            f"{H.fmt_us(meta[name]['per_step_s']['median'])} |"
        )
    if "funcrl" in timings and "torchrl" in timings:
        r = (
            meta["funcrl"]["env_steps_per_s"]["median"]
            / meta["torchrl"]["env_steps_per_s"]["median"]
        )
        lines.append(f"\nfuncrl / TorchRL env steps/s: {r:.2f}x")
    print("\n".join(lines))
    payload = {
        "env": H.environment(),
        "task": ENV,
        "device": str(dev),
        "cuda_graphs": graphs,
        "hidden": hidden,
        "batch": a.batch,
        "compiled": compiled,
        "rounds": a.rounds,
        "steps_per_round": a.steps,
        "wall_s": time.time() - t0,
        "results": meta,
        "table": "\n".join(lines),
    }
    if not a.quick:
        print("wrote", H.write_json("env_steps", payload, a.out))
    return payload


if __name__ == "__main__":
    main()
