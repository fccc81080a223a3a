"""Tests for funcrl.envs against hand-written gymnasium loops (CartPole-v1, Pendulum-v1)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

from funcrl import buffers, envs, specs
from funcrl.record import Record

N = 4


def manual_rollout(env_id: str, actions: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Reference: ``N`` plain gymnasium envs, env ``i`` reset with ``seed + i`` and reset (no seed)
    right after each episode end. ``actions`` is ``[T, N, ...]``."""
    T = actions.shape[0]
    out = {k: [] for k in ("obs", "next_obs", "reward", "terminated", "truncated", "reset_obs")}
    returns, lengths = [[] for _ in range(N)], [[] for _ in range(N)]
    gym_envs = [gym.make(env_id) for _ in range(N)]
    cur = [e.reset(seed=seed + i)[0] for i, e in enumerate(gym_envs)]
    ret, length = np.zeros(N), np.zeros(N, dtype=np.int64)
    for t in range(T):
        row = {k: [] for k in out}
        for i, e in enumerate(gym_envs):
            a = actions[t, i]
            obs, r, term, trunc, _ = e.step(a if a.ndim else int(a))
            row["obs"].append(cur[i])
            row["next_obs"].append(obs)
            row["reward"].append(r)
            row["terminated"].append(term)
            row["truncated"].append(trunc)
            ret[i] += r
            length[i] += 1
            if term or trunc:
                returns[i].append(ret[i])
                lengths[i].append(length[i])
                ret[i], length[i] = 0.0, 0
                obs, _ = e.reset()
            row["reset_obs"].append(obs)
            cur[i] = obs
        for k in out:
            out[k].append(np.stack(row[k]))
    res = {k: np.stack(v) for k, v in out.items()}
    res["returns"], res["lengths"] = returns, lengths
    return res


def funcrl_rollout(env: envs.VecEnv, actions: np.ndarray, seed: int) -> tuple[Record, Record]:
    obs = env.reset(seed=seed)
    assert obs["is_init"].all()
    trans, nexts = [], []
    for t in range(actions.shape[0]):
        tr, obs = env.step(torch.as_tensor(actions[t]))
        trans.append(tr)
        nexts.append(obs)
    return Record.stack(trans), Record.stack(nexts)


def check_against_manual(traj: Record, nexts: Record, ref: dict) -> None:
    f32 = lambda x: torch.as_tensor(x, dtype=torch.float32)  # noqa: E731
    assert torch.equal(traj["observation"], f32(ref["obs"]))
    assert torch.equal(traj["next", "observation"], f32(ref["next_obs"]))
    assert torch.equal(traj["next", "reward"], f32(ref["reward"])[..., None])
    term = torch.as_tensor(ref["terminated"])[..., None]
    trunc = torch.as_tensor(ref["truncated"])[..., None]
    assert torch.equal(traj["next", "terminated"], term)
    assert torch.equal(traj["next", "truncated"], trunc)
    assert torch.equal(traj["next", "done"], term | trunc)
    assert torch.equal(nexts["observation"], f32(ref["reset_obs"]))
    assert torch.equal(nexts["is_init"], term | trunc)
    # no transition crosses an episode end: the next transition starts where this one ended,
    # unless the episode ended, in which case it starts from the reset observation
    done = traj["next", "done"][:-1]
    cont = torch.where(done, nexts["observation"][:-1], traj["next", "observation"][:-1])
    assert torch.equal(traj["observation"][1:], cont)


def pendulum_actions(T: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(-2, 2, size=(T, N, 1)).astype(np.float32)


def cartpole_actions(T: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, size=(T, N))


# ---------------------------------------------------------------------------- vector env


def test_pendulum_vec_truncates_at_200_with_true_final_observation():
    T = 430
    actions = pendulum_actions(T)
    env = envs.VecEnv("Pendulum-v1", N)
    assert env.autoreset_mode == AutoresetMode.SAME_STEP
    traj, nexts = funcrl_rollout(env, actions, seed=3)
    ref = manual_rollout("Pendulum-v1", actions, seed=3)
    check_against_manual(traj, nexts, ref)
    trunc = traj["next", "truncated"].squeeze(-1)
    assert trunc[199].all() and trunc[399].all() and trunc.sum() == 2 * N
    assert not traj["next", "terminated"].any()
    # the truncated transition keeps the final observation, not the reset one
    assert not torch.equal(traj["next", "observation"][199], nexts["observation"][199])
    assert traj["observation"].dtype == torch.float32 and traj["action"].dtype == torch.float32
    assert traj["next", "reward"].shape == (T, N, 1)
    eps = env.completed_episodes()
    assert eps["length"].tolist() == [200] * (2 * N)
    expected = sorted(r for rs in ref["returns"] for r in rs)
    assert np.allclose(sorted(eps["return"].tolist()), expected, rtol=1e-5)
    assert env.completed_episodes()["return"].numel() == 0  # drained
    env.close()


def test_cartpole_vec_episode_boundaries_and_returns():
    T = 150
    actions = cartpole_actions(T)
    env = envs.VecEnv("CartPole-v1", N)
    traj, nexts = funcrl_rollout(env, actions, seed=0)
    ref = manual_rollout("CartPole-v1", actions, seed=0)
    check_against_manual(traj, nexts, ref)
    assert traj["next", "terminated"].any()  # random CartPole episodes end within 150 steps
    assert traj["action"].dtype == torch.int64 and traj["action"].shape == (T, N)
    eps = env.completed_episodes()
    # episodes finish in step order across envs; compare per-env lists via their multiset
    assert sorted(eps["return"].tolist()) == sorted(r for rs in ref["returns"] for r in rs)
    assert sorted(eps["length"].tolist()) == sorted(n for ns in ref["lengths"] for n in ns)
    env.close()


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.DISABLED])
def test_user_vector_env_in_other_autoreset_modes_gives_the_same_transitions(mode):
    T = 120
    actions = cartpole_actions(T, seed=1)
    ref_traj, ref_next = funcrl_rollout(envs.VecEnv("CartPole-v1", N), actions, seed=5)
    venv = gym.make_vec(
        "CartPole-v1", N, vectorization_mode="sync", vector_kwargs={"autoreset_mode": mode}
    )
    env = envs.VecEnv(venv)
    assert env.autoreset_mode == mode
    traj, nexts = funcrl_rollout(env, actions, seed=5)
    assert ref_traj["next", "done"].any()
    assert traj.equal(ref_traj) and nexts.equal(ref_next)


@pytest.mark.parametrize(
    "env_id, actions, T",
    [("CartPole-v1", cartpole_actions, 150), ("Pendulum-v1", pendulum_actions, 430)],
)
def test_direct_sync_stepping_equals_gymnasiums_vector_step(env_id, actions, T):
    # VecEnv steps gymnasium's SyncVectorEnv's sub-envs itself (same-step autoreset); behind a
    # wrapper the same env goes through SyncVectorEnv.step: every transition, reset
    # observation and finished episode must be the same.
    acts = actions(T, seed=2)

    def make(wrap):
        venv = gym.make_vec(
            env_id, N, vectorization_mode="sync",
            vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP},
        )  # fmt: skip
        return envs.VecEnv(gym.vector.VectorWrapper(venv) if wrap else venv)

    direct, through = make(False), make(True)
    assert direct._sync_envs is not None and through._sync_envs is None
    traj, nexts = funcrl_rollout(direct, acts, seed=7)
    ref_traj, ref_nexts = funcrl_rollout(through, acts, seed=7)
    assert ref_traj["next", "done"].any()  # episodes ended (and were reset) inside the run
    assert traj.equal(ref_traj) and nexts.equal(ref_nexts)
    a, b = direct.completed_episodes(), through.completed_episodes()
    assert len(a["return"]) > 0
    assert torch.equal(a["return"], b["return"]) and torch.equal(a["length"], b["length"])


def test_vec_actions_one_hot_and_index_forms():
    env = envs.VecEnv("CartPole-v1", N, one_hot_actions=True)
    env.reset(seed=0)
    idx = torch.tensor([0, 1, 1, 0])
    tr1, _ = env.step(torch.nn.functional.one_hot(idx, 2).float())
    assert torch.equal(tr1["action"], torch.nn.functional.one_hot(idx, 2))
    tr2, _ = env.step(idx.view(N, 1))
    assert tr2["action"].shape == (N, 2) and tr2["action"].dtype == torch.int64
    assert isinstance(env.action_spec, specs.OneHot)
    with pytest.raises(ValueError, match=r"Discrete\(2\).*got \(3,\)"):
        env.step(torch.zeros(3, dtype=torch.long))
    a = env.random_action()
    assert env.action_spec.is_in(a).all() and a.shape == (N, 2)


def test_vec_specs_and_reset_errors():
    env = envs.VecEnv("Pendulum-v1", 2)
    obs_spec, act_spec = env.observation_spec, env.action_spec
    assert isinstance(obs_spec, specs.Bounded) and obs_spec.shape == (3,)
    assert obs_spec.dtype == torch.float32
    assert torch.equal(act_spec.high, torch.tensor([2.0])) and act_spec.dtype == torch.float32
    with pytest.raises(RuntimeError, match="reset"):
        env.step(torch.zeros(2, 1))
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action must have shape \(2, 1\)"):
        env.step(torch.zeros(3))
    # float64 actions are converted to the space's float32 before storage
    tr, _ = env.step(torch.zeros(2, 1, dtype=torch.float64))
    assert tr["action"].dtype == torch.float32
    with pytest.raises(ValueError, match="num_envs"):
        envs.VecEnv("Pendulum-v1")


def test_vec_seeding_is_reproducible():
    actions = pendulum_actions(20)
    a, _ = funcrl_rollout(envs.VecEnv("Pendulum-v1", N), actions, seed=11)
    b, _ = funcrl_rollout(envs.VecEnv("Pendulum-v1", N), actions, seed=11)
    c, _ = funcrl_rollout(envs.VecEnv("Pendulum-v1", N), actions, seed=12)
    assert a.equal(b) and not a.equal(c)


def test_transitions_feed_the_replay_buffer_and_n_step():
    env = envs.VecEnv("CartPole-v1", N)
    obs = env.reset(seed=0)
    tr, _ = env.step(torch.zeros(N, dtype=torch.long))
    state = buffers.init(1000, tr)
    traj = []
    torch.manual_seed(0)
    for _ in range(60):
        tr, obs = env.step(env.random_action())
        state = buffers.add_(state, tr)
        traj.append(tr)
    assert state.size.item() == 60 * N
    batch = buffers.sample(state, 32)
    assert batch["next", "done"].shape == (32, 1)
    nstep = buffers.n_step(Record.stack(traj, dim=1), n=3, gamma=0.99)  # [N, T]
    assert nstep.batch_size == torch.Size([N, 60])


# ---------------------------------------------------------------------------- single env


def test_gymenv_cartpole_matches_gymnasium_and_accepts_action_forms():
    env = envs.GymEnv("CartPole-v1")
    ref = gym.make("CartPole-v1")
    obs = env.reset(seed=4)
    ref_obs, _ = ref.reset(seed=4)
    assert torch.equal(obs["observation"], torch.as_tensor(ref_obs))
    assert obs["is_init"].tolist() == [True]
    rng = np.random.default_rng(0)
    forms = [
        lambda a: a,  # python int
        lambda a: torch.tensor(a),
        lambda a: torch.tensor([a]),
        lambda a: torch.nn.functional.one_hot(torch.tensor(a), 2).float(),
    ]
    ret, ended = 0.0, False
    for t in range(200):
        a = int(rng.integers(0, 2))
        tr, obs = env.step(forms[t % 4](a))
        r_obs, r, term, trunc, _ = ref.step(a)
        assert tr.batch_size == torch.Size([])
        assert tr["action"].dtype == torch.int64 and tr["action"].shape == ()
        assert tr["action"].item() == a
        assert torch.equal(tr["next", "observation"], torch.as_tensor(r_obs))
        assert tr["next", "reward"].tolist() == [r]
        assert tr["next", "terminated"].tolist() == [term]
        assert tr["next", "done"].tolist() == [term or trunc]
        ret += r
        if term or trunc:
            r_obs, _ = ref.reset()
            assert torch.equal(obs["observation"], torch.as_tensor(r_obs))
            assert obs["is_init"].item()
            eps = env.completed_episodes()
            assert eps["return"].tolist() == [ret] and eps["length"].tolist() == [int(ret)]
            ret, ended = 0.0, True
    assert ended
    assert isinstance(env.action_spec, specs.Categorical) and env.action_spec.n == 2
    env.close()


def test_gymenv_pendulum_truncation():
    env = envs.GymEnv("Pendulum-v1")
    env.reset(seed=0)
    for t in range(200):
        tr, obs = env.step(torch.ones(1))
        assert tr["next", "truncated"].item() == (t == 199)
    assert not tr["next", "terminated"].item() and tr["next", "done"].item()
    assert not torch.equal(tr["next", "observation"], obs["observation"])
    assert env.completed_episodes()["length"].tolist() == [200]


# ---------------------------------------------------------------------------- evaluation


def test_evaluate_is_deterministic_and_matches_a_manual_loop():
    def policy(obs: torch.Tensor) -> torch.Tensor:
        # a deterministic controller: push in the direction the pole falls
        return (obs[:, 2] + 0.5 * obs[:, 3] > 0).long()

    out = envs.evaluate(policy, "CartPole-v1", episodes=3, seed=10)
    again = envs.evaluate(policy, "CartPole-v1", episodes=3, seed=10)
    assert torch.equal(out["return"], again["return"])
    for i in range(3):
        e = gym.make("CartPole-v1")
        obs, _ = e.reset(seed=10 + i)
        total, n, done = 0.0, 0, False
        while not done:
            a = int(policy(torch.as_tensor(obs)[None])[0])
            obs, r, term, trunc, _ = e.step(a)
            total, n, done = total + r, n + 1, term or trunc
        assert out["return"][i].item() == total and out["length"][i].item() == n
    assert out["return"].dtype == torch.float64 and out["length"].dtype == torch.int64


def test_evaluate_pendulum_runs_full_episodes():
    out = envs.evaluate(lambda o: torch.zeros(o.shape[0], 1), "Pendulum-v1", episodes=2, seed=0)
    assert out["length"].tolist() == [200, 200]
    with pytest.raises(ValueError, match="episodes"):
        envs.evaluate(lambda o: o, "Pendulum-v1", episodes=0)
