"""On-policy learning benchmark: funcrl's ``examples/ppo.py`` / ``a2c.py`` against
Stable-Baselines3's PPO / A2C, same settings, same budget, same scorer.

    python bench/on_policy.py --cases a2c-cartpole                  # 3 seeds, both sides
    python bench/on_policy.py --cases ppo-pendulum --impls funcrl sb3 sb3-nosde
    python bench/on_policy.py --cases ppo-halfcheetah --total-steps 200000
    TORCHINDUCTOR_CACHE_DIR=$(mktemp -d) python bench/on_policy.py --impls funcrl-jit sb3
    python bench/on_policy.py --dry-run                             # print the runs, run nothing

Each run is a fresh single-thread subprocess (``OMP_NUM_THREADS=1``, ``torch.set_num_threads(1)``),
so imports and environment creation count in its wall time and nothing leaks between runs. Both
sides collect whole rollouts (SB3 rounds ``total_timesteps`` up to whole rollouts; funcrl is given
that same rounded budget), and both trained policies are scored by the same code,
``funcrl.envs.evaluate``: the mean return of the deterministic policy over ``--eval-episodes``
episodes with seeds ``1_000_000 + 1_000 * seed`` (observations normalised with the frozen running
statistics where the case normalises). *Training s* is each side's own clock from building the
agent to the end of training (funcrl: ``train_time`` of ``result.json``; SB3: model construction
plus ``learn``), evaluation excluded; *wall s* is the whole subprocess.

The cases and their settings (SB3 2.x's defaults where a setting is not named):

* ``ppo-cartpole``, ``ppo-acrobot``: PureJaxRL's CartPole settings, 5e5 steps: 4 envs x 128 steps,
  4 epochs x 4 minibatches (SB3 ``batch_size=128``), Adam lr 2.5e-4 annealed linearly to 0 (SB3
  anneals per rollout, funcrl per minibatch step), clip 0.2, value clip 0.2 (SB3
  ``clip_range_vf=0.2``), entropy 0.01, value weight 0.25 on the squared error (PureJaxRL's
  0.5 x 0.5; SB3 ``vf_coef=0.25`` on the MSE), gamma 0.99, GAE 0.95, grad-norm 0.5, tanh 64x64,
  orthogonal init.
* ``ppo-pendulum``: rl-baselines3-zoo ``hyperparams/ppo.yml``::

      Pendulum-v1:
        n_envs: 4
        n_timesteps: !!float 1e5
        policy: 'MlpPolicy'
        n_steps: 1024
        gae_lambda: 0.95
        gamma: 0.9
        n_epochs: 10
        ent_coef: 0.0
        learning_rate: !!float 1e-3
        clip_range: 0.2
        use_sde: True
        sde_sample_freq: 4

  with SB3's defaults ``batch_size=64`` (funcrl: 64 minibatches of 64), ``vf_coef=0.5``,
  ``max_grad_norm=0.5``, no value clip, tanh 64x64 orthogonal. funcrl has no gSDE, so SB3 runs
  twice: ``sb3`` as written and ``sb3-nosde`` (``use_sde=False``).
* ``ppo-halfcheetah``: rl-baselines3-zoo ``hyperparams/ppo.yml`` (``HalfCheetah-v3``; the zoo uses
  the same values for v4): ``normalize: true, n_envs: 1, n_timesteps: 1e6, batch_size: 64,
  n_steps: 512, gamma: 0.98, learning_rate: 2.0633e-05, ent_coef: 0.000401762, clip_range: 0.1,
  n_epochs: 20, gae_lambda: 0.92, max_grad_norm: 0.8, vf_coef: 0.58096, policy_kwargs:
  dict(log_std_init=-2, ortho_init=False, activation_fn=nn.ReLU, net_arch=[dict(pi=[256, 256],
  vf=[256, 256])])``, on ``HalfCheetah-v5``; ``normalize`` is SB3's ``VecNormalize`` (observations
  and rewards), funcrl's ``--normalize-observations --scale-rewards``; funcrl's policy is SB3's
  (``--distribution normal --state-independent-std``: a Gaussian whose std is ``exp`` of a
  parameter starting at -2, actions clipped to the bounds for the env). ``--total-steps`` runs a
  reduced budget (the table says which).
* ``a2c-cartpole``: rl-baselines3-zoo ``hyperparams/a2c.yml``: ``CartPole-v1: n_envs: 8,
  n_timesteps: 5e5, policy: 'MlpPolicy', ent_coef: 0.0`` with SB3's A2C defaults (n_steps 5,
  lr 7e-4, gamma 0.99, GAE 1.0, vf_coef 0.5, grad-norm 0.5, RMSprop alpha 0.99 eps 1e-5), which
  are ``examples/a2c.py``'s defaults.

Known differences that remain: on Pendulum funcrl's continuous policy is a ``TanhNormal`` with a
state-dependent std (SB3: a Gaussian with a state-independent log-std, actions clipped); funcrl
anneals the learning rate per gradient step, SB3 per rollout; with a value clip funcrl takes
PureJaxRL's pessimistic ``max`` of the clipped and unclipped errors, SB3 the clipped error alone.

Results: ``bench/results/on_policy.json`` (every run: seed, returns, times, load average, commit;
written atomically, merged with the runs of other cases already there) and a markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "bench", "results")
sys.path.insert(0, ROOT)

from bench import _harness as H  # noqa: E402
from bench.learning import _run  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Case:
    """One comparison.

    Args:
        script: funcrl's example, relative to the repository root.
        sb3_class: ``"PPO"`` or ``"A2C"``.
        env: gymnasium id.
        total_steps: the budget (rounded up to whole rollouts on both sides).
        num_envs, num_steps: the rollout (both sides).
        funcrl: the script's flags (names without ``--``; ``True``/``False`` for switches).
        sb3: keyword arguments of SB3's class (``learning_rate`` as ``"lin_<x>"`` for SB3's
            linear schedule from ``x`` to 0).
        sb3_variants: extra SB3 keyword arguments per SB3 implementation name.
        normalize: SB3's ``VecNormalize`` (observations and rewards).
    """

    script: str
    sb3_class: str
    env: str
    total_steps: int
    num_envs: int
    num_steps: int
    funcrl: dict[str, Any]
    sb3: dict[str, Any]
    sb3_variants: dict[str, dict[str, Any]] = dataclasses.field(default_factory=lambda: {"sb3": {}})
    normalize: bool = False

    def rollout_budget(self, total: int | None = None) -> int:
        """``total`` (default the case's) rounded up to whole rollouts, as SB3's ``learn``."""
        per = self.num_envs * self.num_steps
        return math.ceil((total or self.total_steps) / per) * per


_PUREJAXRL_FUNCRL: dict[str, Any] = {}  # examples/ppo.py's defaults are PureJaxRL's settings
_PUREJAXRL_SB3 = dict(
    n_steps=128, batch_size=128, n_epochs=4, learning_rate="lin_2.5e-4", gamma=0.99,
    gae_lambda=0.95, clip_range=0.2, clip_range_vf=0.2, ent_coef=0.01, vf_coef=0.25,
    max_grad_norm=0.5,
)  # fmt: skip

CASES: dict[str, Case] = {
    "ppo-cartpole": Case(
        "examples/ppo.py", "PPO", "CartPole-v1", 500_000, 4, 128, _PUREJAXRL_FUNCRL, _PUREJAXRL_SB3
    ),
    "ppo-acrobot": Case(
        "examples/ppo.py", "PPO", "Acrobot-v1", 500_000, 4, 128, _PUREJAXRL_FUNCRL, _PUREJAXRL_SB3
    ),
    "ppo-pendulum": Case(
        "examples/ppo.py",
        "PPO",
        "Pendulum-v1",
        100_000,
        4,
        1024,
        funcrl=dict(
            epochs=10,
            num_minibatches=64,
            learning_rate=1e-3,
            anneal_lr=False,
            gamma=0.9,
            lmbda=0.95,
            entropy_coeff=0.0,
            clip_epsilon=0.2,
            clip_value=False,
            critic_coeff=0.5,
            max_grad_norm=0.5,
        ),
        sb3=dict(
            n_steps=1024,
            batch_size=64,
            n_epochs=10,
            learning_rate=1e-3,
            gamma=0.9,
            gae_lambda=0.95,
            clip_range=0.2,
            ent_coef=0.0,
            vf_coef=0.5,
            max_grad_norm=0.5,
        ),
        sb3_variants={"sb3": dict(use_sde=True, sde_sample_freq=4), "sb3-nosde": {}},
    ),  # fmt: skip
    "ppo-halfcheetah": Case(
        "examples/ppo.py",
        "PPO",
        "HalfCheetah-v5",
        1_000_000,
        1,
        512,
        funcrl=dict(
            epochs=20,
            num_minibatches=8,
            learning_rate=2.0633e-5,
            anneal_lr=False,
            gamma=0.98,
            lmbda=0.92,
            entropy_coeff=0.000401762,
            clip_epsilon=0.1,
            clip_value=False,
            critic_coeff=0.58096,
            max_grad_norm=0.8,
            num_cells=(256, 256),
            activation="relu",
            ortho_init=False,
            init_scale=math.exp(-2.0),
            # SB3's policy: a Gaussian with a state-independent log-std, actions clipped.
            distribution="normal",
            state_independent_std=True,
            normalize_observations=True,
            scale_rewards=True,
        ),
        sb3=dict(
            n_steps=512,
            batch_size=64,
            n_epochs=20,
            learning_rate=2.0633e-5,
            gamma=0.98,
            gae_lambda=0.92,
            clip_range=0.1,
            ent_coef=0.000401762,
            vf_coef=0.58096,
            max_grad_norm=0.8,
            policy_kwargs=dict(
                log_std_init=-2,
                ortho_init=False,
                activation_fn="relu",
                net_arch=dict(pi=[256, 256], vf=[256, 256]),
            ),
        ),
        normalize=True,
    ),  # fmt: skip
    "a2c-cartpole": Case(
        "examples/a2c.py",
        "A2C",
        "CartPole-v1",
        500_000,
        8,
        5,
        funcrl={},  # examples/a2c.py's defaults are rl-zoo's CartPole-v1 A2C settings
        sb3=dict(n_steps=5, ent_coef=0.0),
    ),  # fmt: skip
}

# funcrl's variants and the example's flags for each: eager; the rollout step and one minibatch
# update compiled by torch.compile (--compile) or by funcrl.jit (--jit).
FUNCRL_FLAGS = {"funcrl": (), "funcrl-compile": ("--compile",), "funcrl-jit": ("--jit",)}
IMPLS = (*FUNCRL_FLAGS, "sb3", "sb3-nosde")


def _eval_seed(seed: int) -> int:
    # The seeds examples/_on_policy.py evaluates with, so both sides play the same episodes.
    return 1_000_000 + 1_000 * seed


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


# ------------------------------------------------------------------------------------- commands


def funcrl_command(
    case: Case, seed: int, steps: int, out: str, episodes: int, impl: str = "funcrl"
) -> list[str]:
    """The ``examples/<algo>.py`` command line of one run of funcrl variant ``impl``
    (:data:`FUNCRL_FLAGS`)."""
    cmd = [sys.executable, os.path.join(ROOT, case.script), "--env", case.env]
    cmd += ["--num-envs", str(case.num_envs), "--num-steps", str(case.num_steps)]
    cmd += ["--total-steps", str(steps), "--seed", str(seed), "--threads", "1", "--out", out]
    cmd += ["--no-progress", "--eval-every", "0", "--checkpoint-every", "0", "--overwrite"]
    cmd += ["--eval-episodes", str(episodes), "--device", "cpu"]
    cmd += FUNCRL_FLAGS[impl]
    for k, v in case.funcrl.items():
        flag = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            cmd.append(flag if v else "--no-" + k.replace("_", "-"))
        elif isinstance(v, (tuple, list)):
            cmd += [flag, *map(str, v)]
        else:
            cmd += [flag, repr(v) if isinstance(v, float) else str(v)]
    return cmd


def sb3_kwargs(case: Case, impl: str, seed: int) -> dict[str, Any]:
    """SB3's keyword arguments of one run (``learning_rate`` and ``activation_fn`` resolved)."""
    import torch
    from stable_baselines3.common.utils import LinearSchedule

    kw = {**case.sb3, **case.sb3_variants[impl]}
    lr = kw.get("learning_rate")
    if isinstance(lr, str) and lr.startswith("lin_"):
        start = float(lr[4:])
        kw["learning_rate"] = LinearSchedule(start, 0.0, 1.0)  # progress 1 -> 0 over the run
    pk = dict(kw.get("policy_kwargs", {}))
    if "activation_fn" in pk:
        pk["activation_fn"] = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh}[pk["activation_fn"]]
    if pk:
        kw["policy_kwargs"] = pk
    return {**kw, "seed": seed, "device": "cpu", "verbose": 0}


# ------------------------------------------------------------------------------------- workers


def run_funcrl(
    name: str, case: Case, seed: int, steps: int, out: str, episodes: int, impl: str = "funcrl"
) -> dict:
    """funcrl's example in a subprocess; its ``result.json`` plus wall and CPU time. Compiling
    (``funcrl-compile``, ``funcrl-jit``) counts in the training time; Inductor's on-disk cache is
    as the machine has it (``TORCHINDUCTOR_CACHE_DIR`` in the environment picks it: a fresh
    directory makes the first seed compile from scratch and the later ones load its kernels)."""
    wall, cpu = _run(funcrl_command(case, seed, steps, out, episodes, impl), 1)
    with open(os.path.join(out, "result.json")) as fh:
        res = json.load(fh)
    return {
        "eval_return": res["eval_return"],
        "eval_returns": res["eval_returns"],
        "train_s": res["train_time"],
        "steps": res["steps"],
        "wall_s": wall,
        "cpu_s": cpu,
    }


def run_sb3(
    name: str, case: Case, seed: int, steps: int, out: str, episodes: int, impl: str
) -> dict:
    """SB3 in a subprocess (this file with ``--worker``); its result plus wall and CPU time."""
    os.makedirs(out, exist_ok=True)
    spec = {"case": name, "impl": impl, "seed": seed, "steps": steps, "out": out}
    spec["episodes"] = episodes
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)]
    wall, cpu = _run(cmd, 1)
    with open(os.path.join(out, "result.json")) as fh:
        res = json.load(fh)
    return {**res, "wall_s": wall, "cpu_s": cpu}


def sb3_worker(spec: dict) -> None:
    """Trains and scores SB3 inside the subprocess; writes ``<out>/result.json``."""
    import numpy as np
    import stable_baselines3
    import torch
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    from funcrl import envs

    torch.set_num_threads(1)
    case = CASES[spec["case"]]
    kw = sb3_kwargs(case, spec["impl"], spec["seed"])
    t0 = time.perf_counter()
    venv = make_vec_env(case.env, n_envs=case.num_envs, seed=spec["seed"])
    if case.normalize:
        venv = VecNormalize(venv, gamma=kw.get("gamma", 0.99))
    model = getattr(stable_baselines3, case.sb3_class)("MlpPolicy", venv, **kw)
    model.learn(total_timesteps=spec["steps"])
    train_time = time.perf_counter() - t0
    norm = venv if case.normalize else None

    def policy(obs: torch.Tensor) -> torch.Tensor:
        x = obs.numpy()
        if norm is not None:
            x = norm.normalize_obs(x)  # the frozen running statistics
        action, _ = model.predict(x, deterministic=True)
        return torch.as_tensor(np.asarray(action))

    rets = envs.evaluate(policy, case.env, spec["episodes"], seed=_eval_seed(spec["seed"]))
    result = {
        "eval_return": float(rets["return"].mean()),
        "eval_returns": rets["return"].tolist(),
        "train_s": train_time,
        "steps": int(model.num_timesteps),
    }
    H.write_text(os.path.join(spec["out"], "result.json"), json.dumps(result))


# ------------------------------------------------------------------------------------- report


def summarize(runs: list[dict]) -> list[dict]:
    """Per (case, impl): per-seed returns and training seconds, their medians, and the training
    time relative to each SB3 variant's median."""
    rows = []
    for case, impl in sorted({(r["case"], r["impl"]) for r in runs}):
        rs = sorted((r for r in runs if r["case"] == case and r["impl"] == impl), key=_seed)
        rows.append(
            {
                "case": case,
                "env": rs[0]["env"],
                "impl": impl,
                "steps": rs[0]["steps"],
                "seeds": [r["seed"] for r in rs],
                "returns": [r["eval_return"] for r in rs],
                "train_s": [r["train_s"] for r in rs],
                "return_median": statistics.median(r["eval_return"] for r in rs),
                "train_s_median": statistics.median(r["train_s"] for r in rs),
                "wall_s_median": statistics.median(r["wall_s"] for r in rs),
            }
        )
    for row in rows:
        for ref in rows:
            if ref["case"] == row["case"] and ref["impl"].startswith("sb3"):
                row[f"train_vs_{ref['impl']}"] = row["train_s_median"] / ref["train_s_median"]
    return rows


def _seed(run: dict) -> int:
    return run["seed"]


def markdown(rows: list[dict]) -> str:
    lines = [
        "| case | env | steps | impl | eval return per seed | median | training s per seed | "
        "median | vs SB3 | wall s (median) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rets = ", ".join(f"{x:.1f}" for x in r["returns"])
        secs = ", ".join(f"{x:.0f}" for x in r["train_s"])
        ratios = [f"{v:.2f}x {k[9:]}" for k, v in r.items() if k.startswith("train_vs_")]
        lines.append(
            f"| {r['case']} | {r['env']} | {r['steps']} | {r['impl']} | {rets} | "
            f"{r['return_median']:.1f} | {secs} | {r['train_s_median']:.0f} | "
            f"{'; '.join(ratios) or '-'} | {r['wall_s_median']:.0f} |"
        )
    return "\n".join(lines)


def plan(args: argparse.Namespace) -> list[tuple[str, Case, int, str, int]]:
    """``(case name, case, seed, impl, steps)`` of every run asked for, in run order; an SB3
    variant a case does not define is left out."""
    runs = []
    for name in args.cases:
        case = CASES[name]
        steps = case.rollout_budget(args.total_steps)
        for seed in args.seeds:
            for impl in args.impls:
                if impl.startswith("funcrl") or impl in case.sb3_variants:
                    runs.append((name, case, seed, impl, steps))
    return runs


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=sorted(CASES))
    p.add_argument("--impls", nargs="+", default=["funcrl", "sb3", "sb3-nosde"], choices=IMPLS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument(
        "--total-steps", type=int, default=None, help="override the cases' budgets (reduced runs)"
    )
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--out", default=os.path.join(RESULTS, "on_policy.json"))
    p.add_argument("--dry-run", action="store_true", help="print the runs' commands, run nothing")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker is not None:
        sb3_worker(json.loads(args.worker))
        return {}
    if args.total_steps is not None and args.total_steps < 1:
        p.error(f"--total-steps must be >= 1, got {args.total_steps}")
    if args.eval_episodes < 1:
        p.error(f"--eval-episodes must be >= 1, got {args.eval_episodes}")
    todo = plan(args)
    runs_dir = os.path.join(ROOT, "runs", "bench_on_policy")  # runs/ is git-ignored
    if args.dry_run:
        for name, case, seed, impl, steps in todo:
            out = os.path.join(runs_dir, f"{name}_{impl}_seed{seed}")
            what = (
                " ".join(funcrl_command(case, seed, steps, out, args.eval_episodes, impl))
                if impl.startswith("funcrl")
                else f"{case.sb3_class}({case.env!r}, {case.sb3 | case.sb3_variants[impl]})"
            )
            print(f"{name} {impl} seed {seed} ({steps} steps): {what}")
        return {"planned": [(n, s, i, st) for n, _, s, i, st in todo]}
    report: dict[str, Any] = {"runs": []}
    if os.path.exists(args.out):  # keep the other cases' runs: cases are run one at a time
        with open(args.out) as fh:
            report = json.load(fh)
    commit = _git_commit()
    for name, case, seed, impl, steps in todo:
        out = os.path.join(runs_dir, f"{name}_{impl}_seed{seed}")
        load_before = os.getloadavg()
        if impl.startswith("funcrl"):
            res = run_funcrl(name, case, seed, steps, out, args.eval_episodes, impl)
        else:
            res = run_sb3(name, case, seed, steps, out, args.eval_episodes, impl)
        row = {"case": name, "env": case.env, "impl": impl, "seed": seed, **res}
        row.update(commit=commit, loadavg_before=load_before, loadavg_after=os.getloadavg())
        row["date"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        report["runs"] = [
            r
            for r in report["runs"]
            if (r["case"], r["impl"], r["seed"], r["steps"]) != (name, impl, seed, row["steps"])
        ] + [row]
        report["machine"] = {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "threads": 1,
        }
        report["settings"] = {n: dataclasses.asdict(c) for n, c in CASES.items()}
        report["summary"] = summarize(report["runs"])
        H.write_text(args.out, json.dumps(report, indent=2))  # after every run: nothing is lost
        print(
            f"{name} {impl} seed {seed}: return {res['eval_return']:.1f}, training "
            f"{res['train_s']:.1f} s, wall {res['wall_s']:.1f} s, load {load_before[0]:.2f}",
            flush=True,
        )
    print(markdown(report.get("summary", [])))
    print(f"results: {args.out}")
    return report


if __name__ == "__main__":
    main()
