"""Runs every benchmark (``make bench``) and writes ``bench/results/*.json`` and
``bench/results/README_table.md``, the tables for ``docs/results.md``.

Each script runs in its own process (a clean dynamo cache and an honest peak RSS), one after the
other, with one intra-op thread. ``--quick`` runs each for a few seconds (the smoke test's mode);
other arguments are passed to no script: run a script directly to change its settings.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = {
    "update_step": ["update_step.py"],
    "vmap_seeds": ["vmap_seeds.py"],
    "env_steps": ["env_steps.py"],
}


def run(name: str, extra: list[str]) -> int:
    cmd = [sys.executable, str(HERE / SCRIPTS[name][0]), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    print(f"== {name}: {' '.join(cmd)}", flush=True)
    t0 = time.time()
    rc = subprocess.call(cmd, env=env)
    print(f"== {name}: exit {rc} in {time.time() - t0:.0f} s", flush=True)
    return rc


def tables(results: Path = HERE / "results") -> str:
    """The markdown tables of the latest results json files."""
    sys.path.insert(0, str(HERE.parent))
    from bench.update_step import table

    out = []
    up = results / "update_step.json"
    if up.exists():
        d = json.loads(up.read_text())
        e = d["env"]
        out.append(
            f"### Update step (CPU, {e['threads']} thread, torch {e['torch']}, TorchRL "
            f"{e['torchrl']}; median us per update over rounds, IQR in brackets)\n"
        )
        out.append(table(d["runs"]))
    for f in sorted(results.glob("vmap_seeds_*.json")):
        out.append("\n### vmapped seeds\n\n" + json.loads(f.read_text())["table"])
    es = results / "env_steps.json"
    if es.exists():
        out.append("\n### End to end\n\n" + json.loads(es.read_text())["table"])
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--only", nargs="+", choices=sorted(SCRIPTS), default=list(SCRIPTS))
    p.add_argument("--quick", action="store_true", help="each script in seconds, no json")
    p.add_argument("--tables", action="store_true", help="only print the tables of saved results")
    a = p.parse_args(argv)
    if a.tables:
        print(tables())
        return 0
    rcs = [run(n, ["--quick"] if a.quick else []) for n in a.only]
    if not a.quick:
        md = tables()
        from funcrl.checkpoint import atomic_write

        atomic_write(HERE / "results" / "README_table.md", md.encode())
        print(md)
    return max(rcs)


if __name__ == "__main__":
    sys.exit(main())
