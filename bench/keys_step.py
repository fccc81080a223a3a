"""The small SAC update step drawing from explicit keys vs the same step on the global RNG.

Issue #14's speed rows: the compiled step with keys within 1.1x of the compiled step on the global
RNG, the eager step within 1.2x. Both steps are ``sac.trainer(adam)``'s ``step`` on the same
params and batch (``update_step.py``'s ``small`` size: 64x2 hidden, batch 64, 17 -> 6); the keyed
one also derives its step key each call (``key, sub = funcrl.random.split(key)``, outside the
compiled graph, as a training loop does), so its row is the whole cost of keys. One thread,
interleaved rounds (:mod:`bench._harness`); the 1-minute load average before and after is in the
results, since the machine may be shared.

    python bench/keys_step.py                  # writes bench/results/keys_step.json
    python bench/keys_step.py --quick          # eager only, few rounds, no json
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _harness as H  # noqa: E402

HIDDEN, BATCH, OBS, ACT = (64, 64), 64, 17, 6


def build(device="cpu"):
    """``(params, state, batch, step)``: SAC's trainer step and its inputs, on ``device``."""
    import torch

    from funcrl import optim, sac, tree
    from funcrl.record import Record

    g = torch.Generator().manual_seed(0)
    false = torch.zeros(BATCH, 1, dtype=torch.bool)
    batch = Record(
        {
            "observation": torch.randn(BATCH, OBS, generator=g),
            "action": torch.rand(BATCH, ACT, generator=g) * 2 - 1,
            ("next", "observation"): torch.randn(BATCH, OBS, generator=g),
            ("next", "reward"): torch.randn(BATCH, 1, generator=g),
            ("next", "done"): false,
            ("next", "terminated"): false,
        },
        batch_ndim=1,
    )
    nets = sac.Nets(num_cells=HIDDEN)
    params = tree.map(lambda x: x.to(device), sac.init(0, OBS, ACT, nets=nets))
    trainer = sac.trainer(optim.adam(3e-4), nets=nets)
    return params, trainer.init(params), batch.to(device), trainer.step


def main(argv: list[str] | None = None) -> dict:
    """Runs the rows; returns ``{"rows", "ratios", "loadavg_1m", "compile", "environment"}``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--steps", type=int, default=100)
    H.add_device_args(ap)
    args = ap.parse_args(argv)
    dev, graphs = H.device_from_args(args)
    H.setup_torch(threads=1)
    from funcrl import random as R
    from funcrl.jit import compile_step

    rounds, steps = (3, 20) if args.quick else (args.rounds, args.steps)
    params0, state0, batch, step = build(dev)
    modes = {"eager": step}
    if not args.quick:
        H.prewarm_compiler()
        modes["compiled"] = compile_step(step, cudagraphs=graphs)

    impls, cold = {}, {}
    for mode, fn in modes.items():
        # Each implementation carries its own params/state/key forward, as a training loop does.
        def make(fn=fn, keyed=False):
            box = {"params": params0, "state": state0, "key": R.key(0, device=dev)}

            def run():
                if keyed:
                    box["key"], sub = R.split(box["key"])
                    out = fn(box["params"], box["state"], batch, sub)
                else:
                    out = fn(box["params"], box["state"], batch)
                box["params"], box["state"] = out[0], out[1]

            return run

        impls[f"{mode} / global RNG"] = make()
        impls[f"{mode} / keys"] = make(keyed=True)
        for name in (f"{mode} / global RNG", f"{mode} / keys"):
            cold[name] = H.cold_call(impls[name])
    load_before = os.getloadavg()[0]
    res = H.interleaved(impls, rounds=rounds, steps=steps)
    load_after = os.getloadavg()[0]
    ratios = {
        mode: res[f"{mode} / keys"]["per_step_s"]["median"]
        / res[f"{mode} / global RNG"]["per_step_s"]["median"]
        for mode in modes
    }
    out = {
        "rows": res,
        "ratios": ratios,
        "targets": {"eager": 1.2, "compiled": 1.1},
        "loadavg_1m": {"before": load_before, "after": load_after},
        "compile": cold,
        "sizes": {"hidden": HIDDEN, "batch": BATCH, "obs": OBS, "act": ACT},
        "fused_random": R._FUSED_ENV,
        "device": str(dev),
        "cuda_graphs": graphs,
        "environment": H.environment(),
    }
    print(f"load average (1 min): {load_before:.2f} before, {load_after:.2f} after")
    print(f"{'implementation':<24}{'median us':>12}{'IQR us':>10}")
    for name, r in res.items():
        q = r["per_step_s"]
        print(f"{name:<24}{H.fmt_us(q['median']):>12}{H.fmt_us(q['iqr']):>10}")
    for mode, r in ratios.items():
        print(f"{mode}: keys / global RNG = {r:.3f}x (target <= {out['targets'][mode]}x)")
    if not args.quick:
        H.write_json("keys_step", out)
    return out


if __name__ == "__main__":
    main()
