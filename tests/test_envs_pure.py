"""Pure classic-control environments against gymnasium, step for step."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import funcrl
from funcrl.envs import pure

# Random physical states inside (and a little beyond) each task's reachable region.
STATE_BOX = {
    "CartPole-v1": ([-2.3, -2.0, -0.2, -2.5], [2.3, 2.0, 0.2, 2.5]),
    "Acrobot-v1": ([-np.pi, -np.pi, -4 * np.pi, -9 * np.pi], [np.pi, np.pi, 4 * np.pi, 9 * np.pi]),
    "MountainCar-v0": ([-1.2, -0.07], [0.6, 0.07]),
    "MountainCarContinuous-v0": ([-1.2, -0.07], [0.6, 0.07]),
    "Pendulum-v1": ([-3 * np.pi, -8.0], [3 * np.pi, 8.0]),
}
# float64 physics: gymnasium computes in float64 too, but torch's vectorised sin/cos may differ
# from libm's by an ulp, so "exact" is checked to 1e-12 relative. MountainCarContinuous keeps
# its state in float32 (gymnasium's choice), so it matches to float32 rounding.
TOL = {name: dict(rtol=1e-12, atol=1e-12) for name in pure.ENVS}
TOL["MountainCarContinuous-v0"] = dict(rtol=1e-6, atol=1e-7)
# Pendulum's torque terms are float32 in gymnasium (the action's dtype): an ulp of 0.004 there.
TOL["Pendulum-v1"] = dict(rtol=1e-9, atol=1e-9)


def _random_action(env: pure.PureEnv, rng: np.random.Generator):
    spec = env.action_spec
    if isinstance(spec, funcrl.specs.Categorical):
        a = int(rng.integers(spec.n))
        return a, torch.tensor(a)
    # Beyond the bounds too: both sides clip the same way.
    a = rng.uniform(-3.0, 3.0, size=(1,)).astype(np.float32)
    return a, torch.as_tensor(a)


@pytest.mark.parametrize("name", sorted(pure.ENVS))
def test_dynamics_match_gymnasium(name):
    env = pure.make(name, dtype=torch.float64)
    gym_env = gym.make(name).unwrapped
    gym_env.reset(seed=0)
    rng = np.random.default_rng(0)
    lo, hi = STATE_BOX[name]
    for _ in range(300):
        s = rng.uniform(lo, hi)
        if name == "Acrobot-v1":
            gym_env.state = s.copy()
        elif name == "MountainCar-v0":
            gym_env.state = (np.float64(s[0]), np.float64(s[1]))
        else:
            gym_env.state = s.copy()
        if name == "CartPole-v1":
            gym_env.steps_beyond_terminated = None  # each state is a fresh transition
        state = pure.state_from_gymnasium(env, gym_env)
        a_np, a = _random_action(env, rng)
        obs, reward, terminated, truncated, _ = gym_env.step(a_np)
        physics, r, term = env.dynamics(state.physics, a)
        want = torch.as_tensor(np.asarray(gym_env.state, dtype=np.float64))
        torch.testing.assert_close(physics, want, **TOL[name])
        torch.testing.assert_close(
            env.observe(physics).float(), torch.as_tensor(obs), rtol=1e-6, atol=1e-6
        )
        torch.testing.assert_close(r, torch.tensor(float(reward), dtype=torch.float64), **TOL[name])
        assert bool(term) == terminated and not truncated


@pytest.mark.parametrize("name", sorted(pure.ENVS))
def test_episodes_follow_gymnasium(name):
    """Whole episodes from gymnasium's start state: same observations, rewards and flags,
    including the time limit."""
    env = pure.make(name, dtype=torch.float64)
    gym_env = gym.make(name)
    gym_env.reset(seed=1)
    state = pure.state_from_gymnasium(env, gym_env)
    rng = np.random.default_rng(1)
    key = funcrl.random.key(0)
    for t in range(env.max_episode_steps):
        a_np, a = _random_action(env, rng)
        obs, reward, terminated, truncated, _ = gym_env.step(a_np)
        state, next_obs, r, term, trunc = env.step(state, a, key)
        torch.testing.assert_close(next_obs.float(), torch.as_tensor(obs), rtol=1e-5, atol=1e-5)
        assert (bool(term), bool(trunc)) == (terminated, truncated), t
        torch.testing.assert_close(float(r), float(reward), rtol=1e-5, atol=1e-5)
        if terminated or truncated:
            assert int(state.t) == 0  # reset
            break
    else:  # pragma: no cover - every task ends within its limit
        raise AssertionError("episode did not end")


@pytest.mark.parametrize("name", sorted(pure.ENVS))
def test_reset_distribution_and_keys(name):
    env = pure.make(name)
    k = funcrl.random.key(3)
    s1, o1 = env.reset(k)
    s2, o2 = env.reset(k)
    assert torch.equal(s1.physics, s2.physics) and torch.equal(o1, o2)
    keys = funcrl.random.split(k, 256)
    states, obs = torch.func.vmap(env.reset)(keys)
    lo = torch.tensor(env.reset_low, dtype=env.dtype)
    hi = torch.tensor(env.reset_high, dtype=env.dtype)
    assert ((states.physics >= lo) & (states.physics <= hi)).all()
    assert states.physics.shape == (256, env.physics_size) and (states.t == 0).all()
    assert obs.shape == (256, *env.observation_spec.shape) and obs.dtype == env.dtype
    wide = hi > lo
    assert (states.physics[:, wide].std(0) > 0).all()


def test_time_limit_truncates_and_resets():
    env = pure.make("Pendulum-v1", max_episode_steps=3)
    key = funcrl.random.key(0)
    state, _ = env.reset(key)
    flags = []
    for i in range(4):
        state, _, _, term, trunc = env.step(state, torch.zeros(1), funcrl.random.fold_in(key, i))
        flags.append((bool(term), bool(trunc), int(state.t)))
    assert flags == [(False, False, 1), (False, False, 2), (False, True, 0), (False, False, 1)]


def test_terminated_is_not_truncated():
    env = pure.make("CartPole-v1", max_episode_steps=1)
    state = pure.EnvState(torch.tensor([2.39, 1.0, 0.0, 0.0]), torch.tensor(0))
    _, _, _, term, trunc = env.step(state, torch.tensor(1), funcrl.random.key(0))
    assert bool(term) and not bool(trunc)


def test_vmap_and_compile_match_eager():
    env = pure.make("CartPole-v1")
    keys = funcrl.random.split(funcrl.random.key(0), 8)
    states, _ = torch.func.vmap(env.reset)(keys)
    actions = torch.tensor([0, 1] * 4)
    step_keys = funcrl.random.split(funcrl.random.key(1), 8)
    out = torch.func.vmap(env.step)(states, actions, step_keys)
    for i in range(8):
        solo = env.step(pure.EnvState(states.physics[i], states.t[i]), actions[i], step_keys[i])
        for got, want in zip(out, solo):
            got_i = got.physics[i] if isinstance(got, pure.EnvState) else got[i]
            want_i = want.physics if isinstance(want, pure.EnvState) else want
            assert torch.equal(got_i, want_i)
    compiled = torch.compile(torch.func.vmap(env.step), fullgraph=True, backend="eager")
    cout = compiled(states, actions, step_keys)
    torch.testing.assert_close(cout[1], out[1])
    torch.testing.assert_close(cout[0].physics, out[0].physics)


@pytest.mark.parametrize(
    ("name", "action", "error", "match"),
    [
        ("CartPole-v1", torch.tensor(2), ValueError, r"CartPole-v1.step: action 2 is outside"),
        ("CartPole-v1", torch.tensor(1.0), TypeError, r"CartPole-v1.step: action must be an int"),
        (
            "CartPole-v1",
            torch.tensor([1]),
            ValueError,
            r"CartPole-v1.step: action has shape \(1,\)",
        ),
        ("Pendulum-v1", torch.tensor(1.0), ValueError, r"Pendulum-v1.step: action has shape \(\)"),
        ("Pendulum-v1", torch.tensor([1]), TypeError, r"Pendulum-v1.step: action must be a float"),
        ("Acrobot-v1", torch.tensor(-1), ValueError, r"Acrobot-v1.step: action -1 is outside"),
    ],
)
def test_bad_actions(name, action, error, match):
    env = pure.make(name)
    state, _ = env.reset(funcrl.random.key(0))
    with pytest.raises(error, match=match):
        env.step(state, action, funcrl.random.key(1))


def test_bad_construction():
    with pytest.raises(ValueError, match=r"envs.pure.make: unknown environment 'Nope'"):
        pure.make("Nope")
    with pytest.raises(ValueError, match=r"CartPole-v1: max_episode_steps must be >= 1"):
        pure.make("CartPole-v1", max_episode_steps=0)
    with pytest.raises(TypeError, match=r"CartPole-v1: dtype must be a float dtype"):
        pure.make("CartPole-v1", dtype=torch.int64)


def _categorical_policy(num_actions: int):
    def policy(params, obs, key):
        logits = obs @ params
        action = funcrl.random.categorical(key, logits)
        return action, {"logits": logits}

    return policy, torch.zeros(4, num_actions)


def test_collect_layout_and_episode_returns():
    env = pure.make("CartPole-v1")
    policy, params = _categorical_policy(2)
    state = pure.init_rollout(env, funcrl.random.key(0), 3)
    state, traj = pure.collect(policy, params, env, state, funcrl.random.key(1), 64)
    assert traj.batch_size == (64, 3)
    assert traj["observation"].shape == (64, 3, 4) and traj["action"].shape == (64, 3)
    assert traj["logits"].shape == (64, 3, 2)
    for k in ("reward", "terminated", "truncated", "done"):
        assert traj["next", k].shape == (64, 3, 1)
    done = traj["next", "done"].squeeze(-1)
    assert done.any()
    # CartPole pays 1 per step: an episode's return is its length.
    assert torch.equal(
        traj["next", "episode_return"][done], traj["next", "episode_length"][done].float()
    )
    # Within an episode, the next observation is the following step's observation.
    cont = ~done[:-1]
    torch.testing.assert_close(
        traj["next", "observation"][:-1][cont], traj["observation"][1:][cont]
    )
    # After a reset the next step starts from the new episode (a fresh, small state).
    assert (traj["observation"][1:][done[:-1]].abs() <= 0.05).all()
    assert state.observation.shape == (3, 4)


def test_collect_equals_a_loop_of_steps():
    # collect draws every step's policy key and start states before its loop; a Python loop of
    # step() calls on the same per-step keys draws them step by step. Episodes end and reset
    # within the 60 steps, so the drawn start states are used.
    env = pure.make("CartPole-v1")
    policy, params = _categorical_policy(2)
    state = pure.init_rollout(env, funcrl.random.key(0), 3)
    key = funcrl.random.key(1)
    end, traj = pure.collect(policy, params, env, state, key, 60)
    assert traj["next", "done"].sum() >= 3
    loop = state
    for t, step_key in enumerate(funcrl.random.split(key, 60)):
        loop, tr = pure.step(policy, params, env, loop, step_key)
        for k in ("observation", "action", ("next", "observation"), ("next", "done")):
            assert torch.equal(tr[k], traj[k][t]), (t, k)
    for a, b in zip(
        torch.utils._pytree.tree_leaves(tuple(loop)), torch.utils._pytree.tree_leaves(tuple(end))
    ):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", sorted(pure.ENVS))
def test_step_with_start_is_step_with_the_keys_reset(name):
    env = pure.make(name)
    rng = np.random.default_rng(0)
    for i in range(20):
        key = funcrl.random.key(i)
        state, _ = env.reset(funcrl.random.key(100 + i))
        # Near the time limit, so some steps truncate and take the start state.
        state = pure.EnvState(state.physics, state.t + int(rng.integers(0, env.max_episode_steps)))
        _, action = _random_action(env, rng)
        a = env.step(state, action, key)
        b = env.step_with_start(state, action, env.reset(key)[0])
        for x, y in zip(torch.utils._pytree.tree_leaves(a), torch.utils._pytree.tree_leaves(b)):
            assert torch.equal(x, y)
    with pytest.raises(ValueError, match=rf"{name}.step: action has shape"):
        env.step_with_start(state, torch.zeros(3), env.reset(key)[0])


def test_step_with_start_takes_the_given_start_only_where_an_episode_ends():
    # CartPole, hand-checked: env 0 is at its last step (t = 499, upright, so it truncates and
    # takes the start); env 1 is mid-episode (t = 10) and keeps its dynamics. The start state is
    # an arbitrary one (not from reset), so taking it is visible.
    env = pure.make("CartPole-v1")
    state = pure.EnvState(torch.zeros(2, 4, dtype=torch.float64), torch.tensor([499, 10]))
    start = pure.EnvState(torch.full((2, 4), 0.03125, dtype=torch.float64), torch.tensor([0, 0]))
    action = torch.tensor([1, 1])

    def run(s_phys, s_t, a, st_phys, st_t):
        return env.step_with_start(pure.EnvState(s_phys, s_t), a, pure.EnvState(st_phys, st_t))

    args = (state.physics, state.t, action, start.physics, start.t)
    for fn in (
        torch.func.vmap(run),
        torch.compile(torch.func.vmap(run), fullgraph=True, backend="aot_eager"),
    ):
        new, next_obs, reward, terminated, truncated = fn(*args)
        assert truncated.tolist() == [True, False] and terminated.tolist() == [False, False]
        assert torch.equal(new.physics[0], start.physics[0]) and int(new.t[0]) == 0
        # Env 1: one Euler step from rest pushed right: x_dot = tau * xacc, t = 11.
        dyn, _, _ = env.dynamics(state.physics[1], action[1])
        assert torch.equal(new.physics[1], dyn) and int(new.t[1]) == 11
        assert float(dyn[1]) > 0 and float(dyn[0]) == 0.0
        # The observation is the transition's, before the reset.
        assert torch.equal(next_obs[0], env.observe(env.dynamics(state.physics[0], action[0])[0]))
        assert reward.tolist() == [1.0, 1.0]


def test_collect_continues_and_is_reproducible():
    env = pure.make("Pendulum-v1")

    def policy(params, obs, key):
        return funcrl.random.uniform(key, (obs.shape[0], 1), minval=-2.0, maxval=2.0), {}

    s0 = pure.init_rollout(env, funcrl.random.key(0), 2)
    s1, a = pure.collect(policy, None, env, s0, funcrl.random.key(1), 150)
    s2, b = pure.collect(policy, None, env, s1, funcrl.random.key(2), 100)
    # 250 steps: the 200-step limit truncates once per env, at step 200.
    trunc = torch.cat([a["next", "truncated"], b["next", "truncated"]]).squeeze(-1)
    assert trunc.sum(0).tolist() == [1, 1] and bool(trunc[199].all())
    _, again = pure.collect(policy, None, env, s0, funcrl.random.key(1), 150)
    assert torch.equal(a["action"], again["action"])
    assert torch.equal(a["next", "observation"], again["next", "observation"])


def test_collect_compiles_and_vmaps_over_seeds():
    env = pure.make("CartPole-v1")
    policy, params = _categorical_policy(2)

    def run(key):
        k0, k1 = funcrl.random.split(key, 2).unbind(0)
        state = pure.init_rollout(env, k0, 2)
        return pure.collect(policy, params, env, state, k1, 16)[1]

    keys = funcrl.random.split(funcrl.random.key(0), 3)
    batched = torch.func.vmap(run)(keys)
    assert batched.batch_size[:3] == (3, 16, 2) or batched["action"].shape == (3, 16, 2)
    for i in range(3):
        solo = run(keys[i])
        assert torch.equal(batched["action"][i], solo["action"])
    compiled = torch.compile(torch.func.vmap(run), fullgraph=True, backend="aot_eager")
    got = compiled(keys)
    torch.testing.assert_close(got["next", "observation"], batched["next", "observation"])
    assert torch.equal(got["action"], batched["action"])


def test_collect_bad_input():
    env = pure.make("CartPole-v1")
    policy, params = _categorical_policy(2)
    with pytest.raises(ValueError, match=r"envs.pure.init_rollout: num_envs must be >= 1"):
        pure.init_rollout(env, funcrl.random.key(0), 0)
    state = pure.init_rollout(env, funcrl.random.key(0), 2)
    with pytest.raises(ValueError, match=r"envs.pure.collect: num_steps must be >= 1"):
        pure.collect(policy, params, env, state, funcrl.random.key(0), 0)


def test_num_actions_must_match_the_action_spec():
    import dataclasses

    from funcrl import specs

    @dataclasses.dataclass(frozen=True)
    class Forgot(pure.CartPole):  # a Categorical spec, num_actions left at CartPole's 2
        @property
        def action_spec(self):
            return specs.Categorical(3)

    with pytest.raises(TypeError, match=r"Forgot: num_actions = 2 does not match its action_spec"):
        Forgot()
    for name in pure.ENVS:
        pure.make(name)  # every shipped env agrees
