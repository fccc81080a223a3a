"""One full off-policy update (loss, gradients, Adam, target update): funcrl vs TorchRL vs the floor.

For SAC, TD3 and DQN, three implementations with the same networks (ReLU MLPs), batch, Adam
(lr 3e-4, foreach kernels) and Polyak ``tau = 0.005``:

* ``funcrl``: ``{sac,td3,dqn}.trainer``/``funcrl.update`` step, eager and
  ``torch.compile(fullgraph=True)`` (``mode="reduce-overhead"``, i.e. CUDA graphs, on a GPU),
  and ``funcrl.jit`` (traced once, Inductor-compiled, called without dynamo's guards; its rows
  compare with the others' ``torch.compile`` step);
* ``torchrl``: ``SACLoss``/``TD3Loss``/``DQNLoss`` + ``torch.optim.Adam`` + ``SoftUpdate``, eager
  and ``torch.compile`` of the whole update (loss, backward, step, zero_grad, target update), as
  TorchRL's sota-implementations and LeanRL compile it (with CUDA graphs, as they do too:
  tensordict's ``CudaGraphModule`` around the compiled update);
* ``floor``: :mod:`bench.floor`, hand-written plain torch (eager and compiled).

TD3 updates the actor and the targets every step in all three (``policy_delay=1``) so each
step does the same work. Sizes: ``small`` (64x2 hidden, batch 64: overhead-bound) and ``standard``
(256x2, batch 256). Usage::

    python bench/update_step.py                 # all algos, both sizes, writes results json
    python bench/update_step.py --quick         # seconds: tiny rounds, no compile, no memory
    python bench/update_step.py --algos sac --sizes small --rounds 7 --steps 100
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _harness as H  # noqa: E402

SIZES = {"small": ((64, 64), 64), "standard": ((256, 256), 256)}
OBS, ACT, N_ACTIONS, DQN_OBS = 17, 6, 4, 8  # HalfCheetah-like continuous; LunarLander-like DQN
LR, TAU, GAMMA = 3e-4, 0.005, 0.99
IMPLS = ("funcrl", "torchrl", "floor")
# TorchRL first: its first compiled call changes some global state that dynamo guards on, which
# would make the steps compiled before it recompile once while being timed.
IMPLS_ORDER = ("torchrl", "funcrl", "floor")


# -- data ------------------------------------------------------------------------------------------


def make_data(algo: str, batch: int, seed: int = 0):
    """The same transitions in the three layouts: funcrl Record, TensorDict, floor tuple."""
    import torch

    g = torch.Generator().manual_seed(seed)
    obs_dim = DQN_OBS if algo == "dqn" else OBS
    obs = torch.randn(batch, obs_dim, generator=g)
    nobs = torch.randn(batch, obs_dim, generator=g)
    if algo == "dqn":
        idx = torch.randint(0, N_ACTIONS, (batch,), generator=g)
        act = torch.nn.functional.one_hot(idx, N_ACTIONS).float()
    else:
        act = torch.rand(batch, ACT, generator=g) * 2 - 1
    rew = torch.randn(batch, 1, generator=g)
    term = torch.rand(batch, 1, generator=g) < 0.05
    trunc = torch.zeros(batch, 1, dtype=torch.bool)
    nxt = {"observation": nobs, "reward": rew, "terminated": term, "truncated": trunc, "done": term}
    return {"obs": obs, "act": act, "next": nxt}


# -- builders: each returns {"run": () -> None, "fn": compiled-able fn, "args": args} --------------


# Set by main from --device / --cudagraphs (bench._harness.device_from_args).
DEVICE: str | None = None
CUDAGRAPHS: bool | None = None


def _device():
    import torch

    if DEVICE is not None:
        return DEVICE
    return "cuda" if torch.cuda.is_available() else "cpu"


def _cudagraphs() -> bool:
    return str(_device()).startswith("cuda") if CUDAGRAPHS is None else CUDAGRAPHS


def _compile(fn, fullgraph: bool):
    from funcrl.jit import compile_step

    # CUDA graphs on a GPU (torch.compile's "reduce-overhead", each call a new CUDA-graph step).
    return compile_step(fn, cudagraphs=_cudagraphs(), fullgraph=fullgraph)


def build_funcrl(algo: str, size: str, compiled: bool, jit: bool = False) -> dict[str, Any]:

    from funcrl import dqn, optim, sac, specs, td3
    from funcrl.record import Record

    hidden, batch = SIZES[size]
    d = make_data(algo, batch)
    rec = Record(
        {"observation": d["obs"], "action": d["act"], "next": dict(d["next"])}, batch_ndim=1
    )
    adam = optim.adam(LR, foreach=True)
    if algo == "sac":
        nets = sac.Nets(num_cells=hidden)
        params = sac.init(0, OBS, ACT, nets=nets)
        from funcrl.training import update

        train = update(
            partial(sac.loss, nets=nets),
            adam,
            trainable=("actor", "qvalue", "log_alpha"),
            targets={"target_qvalue": "qvalue"},
            tau=TAU,
        )
    elif algo == "td3":
        nets = td3.Nets(num_cells=hidden)
        params = td3.init(
            0, specs.Unbounded(shape=(OBS,)), specs.Bounded(-1.0, 1.0, (ACT,)), nets=nets
        )
        train = td3.trainer(adam, nets=nets, policy_delay=1, tau=TAU)
    else:
        nets = dqn.Nets(num_cells=hidden)
        params = dqn.init(0, specs.Unbounded(shape=(DQN_OBS,)), specs.OneHot(N_ACTIONS), nets=nets)
        train = dqn.trainer(adam, nets=nets, tau=TAU)
    dev = _device()
    params = {k: _to(v, dev) for k, v in params.items()}
    rec = rec.to(dev)
    opt_state = train.init(params)
    if jit:
        from funcrl.jit import jit as funcrl_jit

        step = funcrl_jit(train.step, cudagraphs=_cudagraphs())
    else:
        step = _compile(train.step, fullgraph=True) if compiled else train.step
    box = [params, opt_state]

    def run():
        box[0], box[1], _ = step(box[0], box[1], rec)

    return {"run": run, "fn": train.step, "args": lambda: (box[0], box[1], rec)}


def _to(x, dev):
    import torch

    from funcrl import tree

    return x.to(dev) if isinstance(x, torch.Tensor) else tree.map(lambda t: t.to(dev), x)


def _torchrl_modules(algo: str, hidden, obs: int = OBS, act: int = ACT, low=-1.0, high=1.0):
    import torch
    from tensordict.nn import NormalParamExtractor, TensorDictModule
    from torchrl.data import Bounded, OneHot
    from torchrl.modules import (
        MLP,
        Actor,
        ProbabilisticActor,
        QValueActor,
        TanhNormal,
        ValueOperator,
    )

    relu = dict(num_cells=list(hidden), activation_class=torch.nn.ReLU)
    if algo == "dqn":
        net = MLP(in_features=DQN_OBS, out_features=N_ACTIONS, **relu)
        return QValueActor(net, in_keys=["observation"], spec=OneHot(N_ACTIONS))
    spec = Bounded(low, high, (act,))
    q = ValueOperator(
        MLP(in_features=obs + act, out_features=1, **relu), in_keys=["observation", "action"]
    )
    if algo == "sac":
        body = torch.nn.Sequential(
            MLP(in_features=obs, out_features=2 * act, **relu),
            NormalParamExtractor(scale_mapping="biased_softplus_1.0", scale_lb=1e-4),
        )
        actor = ProbabilisticActor(
            TensorDictModule(body, in_keys=["observation"], out_keys=["loc", "scale"]),
            in_keys=["loc", "scale"],
            spec=spec,
            distribution_class=TanhNormal,
            distribution_kwargs={"low": spec.space.low, "high": spec.space.high},
        )
    else:
        body = torch.nn.Sequential(MLP(in_features=obs, out_features=act, **relu), torch.nn.Tanh())
        actor = Actor(body, in_keys=["observation"], spec=spec)
    return actor, q, spec


def build_torchrl(algo: str, size: str, compiled: bool) -> dict[str, Any]:
    import torch
    from tensordict import TensorDict
    from torchrl.objectives import DQNLoss, SACLoss, SoftUpdate, TD3Loss

    hidden, batch = SIZES[size]
    d = make_data(algo, batch)
    td = TensorDict(
        {"observation": d["obs"], "action": d["act"], "next": TensorDict(d["next"], [batch])},
        [batch],
    )
    if algo == "sac":
        actor, q, _ = _torchrl_modules(algo, hidden)
        loss = SACLoss(actor, q, num_qvalue_nets=2, loss_function="smooth_l1", delay_qvalue=True)
        keys = ("loss_actor", "loss_qvalue", "loss_alpha")
    elif algo == "td3":
        actor, q, spec = _torchrl_modules(algo, hidden)
        loss = TD3Loss(
            actor, q, action_spec=spec, num_qvalue_nets=2, loss_function="smooth_l1",
            policy_noise=0.2, noise_clip=0.5, delay_actor=True, delay_qvalue=True,
        )  # fmt: skip
        keys = ("loss_actor", "loss_qvalue")
    else:
        value = _torchrl_modules(algo, hidden)
        loss = DQNLoss(value, action_space="one-hot", loss_function="l2", delay_value=True)
        keys = ("loss",)
    loss.make_value_estimator(gamma=GAMMA)
    dev = _device()
    loss = loss.to(dev)
    td = td.to(dev)
    updater = SoftUpdate(loss, tau=TAU)
    opt = torch.optim.Adam(loss.parameters(), lr=LR, foreach=True)

    def update(data):
        out = loss(data)
        total = sum(out[k] for k in keys)
        total.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        updater.step()
        return out.detach()

    if compiled and _cudagraphs():
        step = _torchrl_cudagraphs(update)
    else:
        step = _compile(update, fullgraph=False) if compiled else update

    def run():
        step(td)

    return {"run": run, "fn": update, "args": lambda: (td,)}


def _torchrl_cudagraphs(update):
    """TorchRL's own recipe for a compiled update in CUDA graphs (its SOTA scripts): compile
    in the default mode, then capture with tensordict's ``CudaGraphModule``. Under
    ``mode="reduce-overhead"``, TorchRL's DQN loss read a tensor of an earlier replay that the
    next one had overwritten (H200, torch 2.11), since its graph breaks leave cached tensors
    in the loss module between the CUDA-graph partitions."""
    import torch
    from tensordict.nn import CudaGraphModule

    return CudaGraphModule(torch.compile(update), in_keys=[], out_keys=[], warmup=2)


def build_floor(algo: str, size: str, compiled: bool) -> dict[str, Any]:
    from bench import floor

    hidden, batch = SIZES[size]
    d = make_data(algo, batch)
    n = d["next"]
    data = (d["obs"], d["act"], n["reward"], n["observation"], n["terminated"])
    if algo == "sac":
        state, step_fn = floor.make_sac(OBS, ACT, hidden=hidden, lr=LR, gamma=GAMMA, tau=TAU)
    elif algo == "td3":
        state, step_fn = floor.make_td3(OBS, ACT, hidden=hidden, lr=LR, gamma=GAMMA, tau=TAU)
    else:
        state, step_fn = floor.make_dqn(
            DQN_OBS, N_ACTIONS, hidden=hidden, lr=LR, gamma=GAMMA, tau=TAU
        )
    dev = _device()
    if dev != "cpu":
        import torch

        state = tuple([t.to(dev) for t in s] if isinstance(s, list) else s.to(dev) for s in state)
        data = tuple(torch.as_tensor(t).to(dev) for t in data)
    step = _compile(step_fn, fullgraph=True) if compiled else step_fn
    box = [state]

    def run():
        box[0], _ = step(box[0], data)

    return {"run": run, "fn": step_fn, "args": lambda: (box[0], data)}


BUILDERS = {"funcrl": build_funcrl, "torchrl": build_torchrl, "floor": build_floor}


# -- the benchmark ---------------------------------------------------------------------------------


def bench(
    algo: str,
    size: str,
    *,
    rounds: int,
    steps: int,
    modes,
    memory: bool,
    explain: bool,
    impls_wanted=IMPLS,
):

    impls, meta, builds = {}, {}, {}
    for mode in modes:
        for impl in [i for i in IMPLS_ORDER if i in impls_wanted] if mode != "jit" else ("funcrl",):
            name = f"{impl}/{mode}"
            try:
                if mode == "jit":
                    b = build_funcrl(algo, size, False, jit=True)
                else:
                    b = BUILDERS[impl](algo, size, mode == "compiled")
                meta[name] = H.cold_call(b["run"], warmup=3)
                impls[name], builds[name] = b["run"], b
            except Exception as e:  # noqa: BLE001 - report the failure, bench the rest
                meta[name] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
            print(f"  built {algo}/{size}/{name}: {meta[name]}", flush=True)
    t0 = time.time()
    timings = H.interleaved(impls, rounds=rounds, steps=steps)
    # Wall-clock bounds of the timed phase: to tell whether other work on the machine overlapped.
    print(f"  timed from {t0:.0f} to {time.time():.0f} (unix s)", flush=True)
    for name, t in timings.items():
        meta[name].update(t)
    if memory:  # one warm step each, before explain() (which would make it recompile)
        for name, b in builds.items():
            meta[name]["memory"] = H.peak_step_memory(b["run"])
    # Last: explain() resets dynamo, which would force every step to recompile.
    for name, b in builds.items():
        if explain and name.endswith("/compiled"):
            meta[name]["explain"] = H.graph_breaks(b["fn"], *b["args"]())
    med = {n: meta[n]["per_step_s"]["median"] for n in timings}
    ratios = {}
    for mode in modes:
        f = med.get(f"funcrl/{mode}")
        if f:
            for other in ("torchrl", "floor"):
                # funcrl.jit is compared with the others' torch.compile: they have no jit.
                o = med.get(f"{other}/{'compiled' if mode == 'jit' else mode}")
                if o:
                    ratios[f"{other}_over_funcrl/{mode}"] = o / f
    if "compiled" in modes:
        fc = meta.get("funcrl/compiled", {}).get("compile_s")
        tc = meta.get("torchrl/compiled", {}).get("compile_s")
        if fc and tc:
            ratios["compile_time_funcrl_over_torchrl"] = fc / tc
    return {
        "algo": algo,
        "size": size,
        "hidden": SIZES[size][0],
        "batch": SIZES[size][1],
        "rounds": rounds,
        "steps_per_round": steps,
        "device": str(_device()),
        "cuda_graphs": _cudagraphs(),
        "results": meta,
        "ratios": ratios,
    }


def _x(r: float | None) -> str:
    return f"{r:.2f}x" if r else "n/a"


def table(runs: list[dict]) -> str:
    """A markdown table of median us/update (IQR), ratios and compile times."""
    lines = [
        "| algo | size | mode | funcrl us (IQR) | TorchRL us (IQR) | floor us (IQR) | TorchRL/funcrl | floor/funcrl |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        res = r["results"]
        for mode in ("eager", "compiled", "jit"):
            cells = []
            for impl in IMPLS:
                other_mode = "compiled" if mode == "jit" and impl != "funcrl" else mode
                m = res.get(f"{impl}/{other_mode}", {})
                q = m.get("per_step_s")
                cells.append(f"{H.fmt_us(q['median'])} ({H.fmt_us(q['iqr'])})" if q else "n/a")
            if cells[0] == "n/a" and (mode == "jit" or all(c == "n/a" for c in cells)):
                continue
            rt = r["ratios"].get(f"torchrl_over_funcrl/{mode}")
            rf = r["ratios"].get(f"floor_over_funcrl/{mode}")
            lines.append(
                f"| {r['algo']} | {r['size']} | {mode} | {' | '.join(cells)} | "
                f"{_x(rt)} | {_x(rf)} |"
            )
    comp = [
        "",
        "| algo | size | cold compile s: funcrl / TorchRL / floor (funcrl.jit) | graph breaks: funcrl / TorchRL / floor | recompiles while timing | peak tensor MiB in one step (eager; compiled): funcrl / TorchRL / floor |",
        "|---|---|---|---|---|---|",
    ]
    any_comp = False
    for r in runs:
        res = r["results"]
        if not any(k.endswith("/compiled") for k in res):
            continue
        any_comp = True
        ct, gb, rc, mem = [], [], [], []
        jm = res.get("funcrl/jit", {})
        for impl in IMPLS:
            m = res.get(f"{impl}/compiled", {})
            ct.append(f"{m['compile_s']:.1f}" if "compile_s" in m else "n/a")
            ex = m.get("explain", {})
            gb.append(str(ex.get("graph_break_count", "n/a")))
            rc.append(str(m.get("graphs_during_timing", "n/a")))
            mems = [res.get(f"{impl}/{md}", {}).get("memory", {}) for md in ("eager", "compiled")]
            mem.append(
                "; ".join(
                    f"{x['peak_tensor_mib']:.2f}" if "peak_tensor_mib" in x else "n/a" for x in mems
                )
            )
        jit_s = f" ({jm['compile_s']:.1f})" if "compile_s" in jm else ""
        comp.append(
            f"| {r['algo']} | {r['size']} | {' / '.join(ct)}{jit_s} | {' / '.join(gb)} | "
            f"{' / '.join(rc)} | {' / '.join(mem)} |"
        )
    return "\n".join(lines + (comp if any_comp else []))


def merge_saved(payload: dict, out_dir=None, name: str = "update_step") -> dict:
    """Keeps the saved runs of (algo, size) pairs this invocation did not measure, so one pair
    can be re-measured without re-running everything (each run keeps its own ``env``)."""
    path = Path(out_dir or H.RESULTS) / f"{name}.json"
    if not path.exists():
        return payload
    old = json.loads(path.read_text())
    new_keys = {(r["algo"], r["size"]) for r in payload["runs"]}
    for r in payload["runs"]:
        r.setdefault("env", payload["env"])
    kept = [
        {**r, "env": r.get("env", old.get("env"))}
        for r in old.get("runs", [])
        if (r["algo"], r["size"]) not in new_keys
    ]
    order = {
        (a, s): i for i, (a, s) in enumerate((a, s) for a in ("sac", "td3", "dqn") for s in SIZES)
    }
    runs = sorted(kept + payload["runs"], key=lambda r: order.get((r["algo"], r["size"]), 99))
    return {**payload, "runs": runs}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--algos", nargs="+", default=["sac", "td3", "dqn"])
    p.add_argument("--sizes", nargs="+", default=["small", "standard"])
    p.add_argument(
        "--modes", nargs="+", default=["eager", "compiled", "jit"],
        choices=["eager", "compiled", "jit"],
        help="jit: funcrl.jit (funcrl only; compared with the others' compiled step)",
    )  # fmt: skip
    p.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--no-explain", action="store_true")
    p.add_argument("--quick", action="store_true", help="eager only, 2 rounds x 3 steps, no json")
    p.add_argument("--out", default=None, help="results directory (default bench/results)")
    p.add_argument("--name", default="update_step", help="results file name (without .json)")
    H.add_device_args(p)
    a = p.parse_args(argv)
    global DEVICE, CUDAGRAPHS
    dev, CUDAGRAPHS = H.device_from_args(a)
    DEVICE = str(dev)
    H.setup_torch()
    H.prewarm_compiler()
    if a.quick:
        a.modes, a.rounds, a.steps, a.no_memory, a.no_explain = ["eager"], 2, 3, True, True
        a.sizes = ["small"]
    t0 = time.time()
    runs = []
    for algo in a.algos:
        for size in a.sizes:
            print(f"{algo} / {size}", flush=True)
            runs.append(
                bench(
                    algo, size, rounds=a.rounds, steps=a.steps, modes=a.modes,
                    memory=not a.no_memory, explain=not a.no_explain, impls_wanted=a.impls,
                )
            )  # fmt: skip
    payload = {"env": H.environment(), "wall_s": time.time() - t0, "runs": runs}
    print(table(runs))
    if not a.quick:
        payload = merge_saved(payload, a.out, a.name)
        print(table(payload["runs"]))
        print("wrote", H.write_json(a.name, payload, a.out))
    return payload


if __name__ == "__main__":
    main()
