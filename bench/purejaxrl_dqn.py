"""PureJaxRL's DQN for discrete gymnax tasks, the JAX reference for :mod:`funcrl.pure_dqn`.

Re-implemented from the published ``purejaxrl/dqn.py`` (github.com/luchris429/purejaxrl): the
same Q-network (Dense 120 -> relu -> 84 -> relu -> n, flax's default init), hyperparameters,
epsilon schedule, ``lax.cond``-gated learning and target updates, and one ``lax.scan`` over all
environment steps, so ``jax.jit(jax.vmap(make_train(cfg)))`` trains many seeds in one XLA
program. One difference: flashbax (not installed here) is replaced by a ring buffer of
``(obs, action, reward, done, next_obs)`` transitions sampled uniformly; flashbax's flat buffer
stores time steps and samples ``(t, t + 1)`` pairs of one environment, the same transitions.
``returned_episode_returns`` (its ``LogWrapper``) is each env's last finished episode's return.

    python bench/purejaxrl_dqn.py --seeds 16        # prints the final returns and timings

Needs the ``bench`` extra (jax, flax, optax, gymnax).
"""

from __future__ import annotations

import argparse
import time
from typing import Any, NamedTuple

import flax.linen as nn
import gymnax
import jax
import jax.numpy as jnp
import optax

DEFAULTS: dict[str, Any] = {
    "NUM_ENVS": 10,
    "BUFFER_SIZE": 10_000,
    "BUFFER_BATCH_SIZE": 128,
    "TOTAL_TIMESTEPS": 500_000,
    "EPSILON_START": 1.0,
    "EPSILON_FINISH": 0.05,
    "EPSILON_ANNEAL_TIME": 250_000,
    "TARGET_UPDATE_INTERVAL": 500,
    "LR": 2.5e-4,
    "LEARNING_STARTS": 10_000,
    "TRAINING_INTERVAL": 10,
    "GAMMA": 0.99,
    "TAU": 1.0,
    "ENV_NAME": "CartPole-v1",
}


class QNetwork(nn.Module):
    action_dim: int

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(120)(x))
        x = nn.relu(nn.Dense(84)(x))
        return nn.Dense(self.action_dim)(x)


class Buffer(NamedTuple):
    obs: jnp.ndarray
    action: jnp.ndarray
    reward: jnp.ndarray
    done: jnp.ndarray
    next_obs: jnp.ndarray
    cursor: jnp.ndarray
    size: jnp.ndarray


class LogState(NamedTuple):
    env_state: Any
    episode_returns: jnp.ndarray
    returned_episode_returns: jnp.ndarray


def make_train(config: dict[str, Any]):
    """``train(rng) -> {"runner_state", "metrics"}``; ``metrics["returns"]`` is ``[steps]``
    (the mean over envs of ``returned_episode_returns`` after each environment step)."""
    cfg = {**DEFAULTS, **config}
    num_steps = int(cfg["TOTAL_TIMESTEPS"]) // cfg["NUM_ENVS"]
    env, env_params = gymnax.make(cfg["ENV_NAME"])
    n_envs, cap = cfg["NUM_ENVS"], cfg["BUFFER_SIZE"]

    def env_reset(key):
        obs, state = env.reset(key, env_params)
        return obs, LogState(state, jnp.float32(0.0), jnp.float32(0.0))

    def env_step(key, state, action):
        obs, env_state, reward, term, trunc, _ = env.step(key, state.env_state, action, env_params)
        done = jnp.logical_or(term, trunc)
        ret = state.episode_returns + reward
        state = LogState(
            env_state, ret * (1 - done), state.returned_episode_returns * (1 - done) + ret * done
        )
        return obs, state, reward, done

    def train(rng):
        network = QNetwork(env.action_space(env_params).n)
        rng, k = jax.random.split(rng)
        obs, env_state = jax.vmap(env_reset)(jax.random.split(k, n_envs))
        obs_shape = env.observation_space(env_params).shape
        buffer = Buffer(
            jnp.zeros((cap, *obs_shape)),
            jnp.zeros((cap,), jnp.int32),
            jnp.zeros((cap,)),
            jnp.zeros((cap,)),
            jnp.zeros((cap, *obs_shape)),
            jnp.int32(0),
            jnp.int32(0),
        )
        rng, k = jax.random.split(rng)
        params = network.init(k, jnp.zeros(obs_shape))
        tx = optax.adam(learning_rate=cfg["LR"])
        opt_state = tx.init(params)
        carry = (params, params, opt_state, buffer, env_state, obs, jnp.int32(0), rng)

        def eps_greedy(rng, q, t):
            k_a, k_e = jax.random.split(rng, 2)
            slope = (cfg["EPSILON_FINISH"] - cfg["EPSILON_START"]) / cfg["EPSILON_ANNEAL_TIME"]
            eps = jnp.clip(slope * t + cfg["EPSILON_START"], cfg["EPSILON_FINISH"])
            greedy = jnp.argmax(q, axis=-1)
            rand = jax.random.randint(k_a, greedy.shape, 0, q.shape[-1])
            return jnp.where(jax.random.uniform(k_e, greedy.shape) < eps, rand, greedy)

        def learn(params, target, opt_state, buffer, rng):
            idx = jax.random.randint(rng, (cfg["BUFFER_BATCH_SIZE"],), 0, buffer.size)
            b = jax.tree_util.tree_map(lambda x: x[idx], buffer[:5])
            q_next = network.apply(target, b[4]).max(-1)
            y = b[2] + (1 - b[3]) * cfg["GAMMA"] * q_next

            def loss_fn(p):
                q = network.apply(p, b[0])
                chosen = jnp.take_along_axis(q, b[1][:, None], axis=-1).squeeze(-1)
                return jnp.mean((chosen - y) ** 2)

            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        def step(carry, _):
            params, target, opt_state, buffer, env_state, last_obs, t, rng = carry
            rng, k_a, k_s, k_l = jax.random.split(rng, 4)
            action = eps_greedy(k_a, network.apply(params, last_obs), t)
            obs, env_state, reward, done = jax.vmap(env_step)(
                jax.random.split(k_s, n_envs), env_state, action
            )
            t = t + n_envs
            # gymnax auto-resets: the true next observation of a finished episode is gone, as
            # in PureJaxRL (whose target ignores it: done stops bootstrapping).
            slots = (buffer.cursor + jnp.arange(n_envs)) % cap
            buffer = Buffer(
                buffer.obs.at[slots].set(last_obs),
                buffer.action.at[slots].set(action),
                buffer.reward.at[slots].set(reward),
                buffer.done.at[slots].set(done.astype(jnp.float32)),
                buffer.next_obs.at[slots].set(obs),
                (buffer.cursor + n_envs) % cap,
                jnp.minimum(buffer.size + n_envs, cap),
            )
            is_learn = (
                (buffer.size >= cfg["BUFFER_BATCH_SIZE"])
                & (t > cfg["LEARNING_STARTS"])
                & (t % cfg["TRAINING_INTERVAL"] == 0)
            )
            params, opt_state, loss = jax.lax.cond(
                is_learn,
                lambda: learn(params, target, opt_state, buffer, k_l),
                lambda: (params, opt_state, jnp.float32(0.0)),
            )
            target = jax.lax.cond(
                t % cfg["TARGET_UPDATE_INTERVAL"] == 0,
                lambda: optax.incremental_update(params, target, cfg["TAU"]),
                lambda: target,
            )
            metrics = {"loss": loss, "returns": env_state.returned_episode_returns.mean()}
            return (params, target, opt_state, buffer, env_state, obs, t, rng), metrics

        carry, metrics = jax.lax.scan(step, carry, None, num_steps)
        return {"runner_state": carry, "metrics": metrics}

    return train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=16)
    ap.add_argument("--total-steps", type=int, default=500_000)
    args = ap.parse_args()
    train = jax.vmap(make_train({"TOTAL_TIMESTEPS": args.total_steps}))
    keys = jax.random.split(jax.random.PRNGKey(0), args.seeds)
    t = time.perf_counter()
    compiled = jax.jit(train).lower(keys).compile()
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    out = jax.block_until_ready(compiled(keys))
    train_s = time.perf_counter() - t
    # The final return: the mean over the last 5,000 env steps per env (10 x 500), as
    # funcrl.pure_dqn's last 10 iterations of 50 steps.
    final = out["metrics"]["returns"][:, -500:].mean(-1)
    print("final returns", [round(float(x), 1) for x in final])
    print(
        f"median {float(jnp.median(final)):.1f} min {float(final.min()):.1f}; compile "
        f"{compile_s:.1f} s, train {train_s:.1f} s"
    )


if __name__ == "__main__":
    main()
