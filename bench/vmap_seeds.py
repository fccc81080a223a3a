"""Many SAC agents at once: ``torch.compile(torch.func.vmap(step))`` over 1, 4, 16 and 64 seeds.

Every seed has its own params (``sac.init(seed)``), optimizer state and batch; one compiled,
vmapped update trains them all (``randomness="different"``: each seed draws its own noise).
The number to read is the time per agent (one vmapped update / number of seeds), against one
agent updated alone: eager (``optim.adam(foreach=True)``, the fast eager path) and compiled.

    python bench/vmap_seeds.py                  # small nets (64x2, batch 64), writes results json
    python bench/vmap_seeds.py --size standard --seeds 1 4 16
    python bench/vmap_seeds.py --quick          # seconds: eager vmap, 1 and 2 seeds, no json
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _harness as H  # noqa: E402
from bench import update_step  # noqa: E402
from bench.update_step import ACT, LR, OBS, SIZES, TAU, build_funcrl, make_data  # noqa: E402


def build_vmapped(n_seeds: int, size: str, compiled: bool, device="cpu", cudagraphs=False):
    """One update of ``n_seeds`` SAC agents, vmapped (and compiled)."""
    import torch

    from funcrl import optim, sac, tree
    from funcrl.jit import compile_step
    from funcrl.record import Record
    from funcrl.training import update

    hidden, batch = SIZES[size]
    nets = sac.Nets(num_cells=hidden)
    # Per-leaf Adam: the foreach kernels have no vmap batching rule, the plain ops do.
    train = update(
        partial(sac.loss, nets=nets),
        optim.adam(LR),
        trainable=("actor", "qvalue", "log_alpha"),
        targets={"target_qvalue": "qvalue"},
        tau=TAU,
    )
    params = tree.stack([sac.init(s, OBS, ACT, nets=nets) for s in range(n_seeds)])
    opt_state = tree.stack([train.init(sac.init(s, OBS, ACT, nets=nets)) for s in range(n_seeds)])
    datas = [make_data("sac", batch, seed=s) for s in range(n_seeds)]
    stacked = {
        "observation": torch.stack([d["obs"] for d in datas]),
        "action": torch.stack([d["act"] for d in datas]),
        "next": {k: torch.stack([d["next"][k] for d in datas]) for k in datas[0]["next"]},
    }
    # [S, B] batch dims: vmap over the seeds leaves each seed a [B]-batched Record.
    rec = Record(stacked, batch_ndim=2)
    params, opt_state, rec = tree.map(lambda x: x.to(device), (params, opt_state, rec))
    step = torch.func.vmap(train.step, in_dims=(0, 0, 0), randomness="different")
    if compiled:
        step = compile_step(step, cudagraphs=cudagraphs)
    box = [params, opt_state]

    def run():
        box[0], box[1], _ = step(box[0], box[1], rec)

    return run


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 4, 16, 64])
    p.add_argument("--size", default="small", choices=sorted(SIZES))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--quick", action="store_true", help="eager vmap of 1 and 2 seeds, no json")
    p.add_argument("--out", default=None)
    H.add_device_args(p)
    a = p.parse_args(argv)
    dev, graphs = H.device_from_args(a)
    # The single-agent rows come from bench.update_step's builders: same device and graphs.
    update_step.DEVICE, update_step.CUDAGRAPHS = str(dev), graphs
    H.setup_torch()
    compiled = not a.quick
    if a.quick:
        a.seeds, a.rounds, a.steps = [1, 2], 2, 2
    else:
        H.prewarm_compiler()
    t0 = time.time()
    impls, meta = {}, {}
    for name, mode in (("single/eager", False), ("single/compiled", True)):
        if mode and not compiled:
            continue
        run = build_funcrl("sac", a.size, mode)["run"]
        meta[name] = H.cold_call(run, warmup=3)
        impls[name] = run
    for n in a.seeds:
        name = f"vmap{n}/{'compiled' if compiled else 'eager'}"
        try:
            run = build_vmapped(n, a.size, compiled, dev, graphs)
            meta[name] = H.cold_call(run, warmup=3)
            impls[name] = run
        except Exception as e:  # noqa: BLE001 - report and go on
            meta[name] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
        print(f"  built {name}: {meta[name]}", flush=True)
    timings = H.interleaved(impls, rounds=a.rounds, steps=a.steps)
    eager = timings.get("single/eager", {}).get("per_step_s", {}).get("median")
    single_c = timings.get("single/compiled", {}).get("per_step_s", {}).get("median")
    rows = []
    for name, t in timings.items():
        meta[name].update(t)
        n = int(name[4:].split("/")[0]) if name.startswith("vmap") else 1
        per_agent = t["per_step_s"]["median"] / n
        meta[name]["seeds"] = n
        meta[name]["per_agent_s"] = per_agent
        meta[name]["per_agent_over_one_eager"] = per_agent / eager if eager else None
        meta[name]["per_agent_over_one_compiled"] = per_agent / single_c if single_c else None
        rows.append((name, n, t["per_step_s"], per_agent))
    lines = [
        f"SAC {a.size} ({SIZES[a.size][0]} hidden, batch {SIZES[a.size][1]}), one thread",
        "| run | seeds | us/update (IQR) | us/agent | agent time / one eager agent | "
        "/ one compiled agent |",
        "|---|---|---|---|---|---|",
    ]
    for name, n, q, per_agent in rows:
        re_ = f"{per_agent / eager:.2f}" if eager else "n/a"
        rc = f"{per_agent / single_c:.2f}" if single_c else "n/a"
        lines.append(
            f"| {name} | {n} | {H.fmt_us(q['median'])} ({H.fmt_us(q['iqr'])}) | "
            f"{H.fmt_us(per_agent)} | {re_} | {rc} |"
        )
    print("\n".join(lines))
    payload = {
        "env": H.environment(),
        "device": str(dev),
        "cuda_graphs": graphs,
        "size": a.size,
        "hidden": SIZES[a.size][0],
        "batch": SIZES[a.size][1],
        "rounds": a.rounds,
        "steps_per_round": a.steps,
        "wall_s": time.time() - t0,
        "results": meta,
        "table": "\n".join(lines),
    }
    if not a.quick:
        print("wrote", H.write_json(f"vmap_seeds_{a.size}", payload, a.out))
    return payload


if __name__ == "__main__":
    main()
