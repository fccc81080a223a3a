"""PureJaxRL's PPO for discrete gymnax tasks, the JAX side of ``bench/pure.py``.

Re-implemented from the published ``purejaxrl/ppo.py`` (github.com/luchris429/purejaxrl, commit
146b485): the same algorithm, network, initialisation, hyperparameters and scans (rollout scan,
GAE scan, epochs x minibatches scans, a scan over all updates), so ``jax.jit(make_train(cfg))``
compiles the whole run into one XLA program and ``jax.vmap`` trains many seeds at once. Its
``LogWrapper`` is folded in: ``returned_episode_returns`` is each env's last finished episode's
return, reported at every step (PureJaxRL's learning-curve metric).

Needs the ``bench`` extra (jax, flax, optax, distrax, gymnax).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import distrax
import flax.linen as nn
import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.linen.initializers import constant, orthogonal
from flax.training.train_state import TrainState

DEFAULTS: dict[str, Any] = {
    "LR": 2.5e-4,
    "NUM_ENVS": 4,
    "NUM_STEPS": 128,
    "TOTAL_TIMESTEPS": 500_000,
    "UPDATE_EPOCHS": 4,
    "NUM_MINIBATCHES": 4,
    "GAMMA": 0.99,
    "GAE_LAMBDA": 0.95,
    "CLIP_EPS": 0.2,
    "ENT_COEF": 0.01,
    "VF_COEF": 0.5,
    "MAX_GRAD_NORM": 0.5,
    "ACTIVATION": "tanh",
    "ENV_NAME": "CartPole-v1",
    "ANNEAL_LR": True,
}


class ActorCritic(nn.Module):
    """Separate tanh 64x64 actor and critic; orthogonal init (sqrt 2, heads 0.01 and 1)."""

    action_dim: int
    activation: str = "tanh"

    @nn.compact
    def __call__(self, x):
        act = nn.relu if self.activation == "relu" else nn.tanh

        def dense(n, scale):
            return nn.Dense(n, kernel_init=orthogonal(scale), bias_init=constant(0.0))

        h = act(dense(64, np.sqrt(2))(x))
        h = act(dense(64, np.sqrt(2))(h))
        pi = distrax.Categorical(logits=dense(self.action_dim, 0.01)(h))
        v = act(dense(64, np.sqrt(2))(x))
        v = act(dense(64, np.sqrt(2))(v))
        return pi, jnp.squeeze(dense(1, 1.0)(v), axis=-1)


class Transition(NamedTuple):
    done: jnp.ndarray
    action: jnp.ndarray
    value: jnp.ndarray
    reward: jnp.ndarray
    log_prob: jnp.ndarray
    obs: jnp.ndarray
    returned_episode_returns: jnp.ndarray


class LogState(NamedTuple):
    env_state: Any
    episode_returns: jnp.ndarray
    returned_episode_returns: jnp.ndarray


def make_train(config: dict[str, Any]):
    """``train(rng) -> {"runner_state", "metrics"}``; ``metrics`` is ``[updates, T, E]`` of
    ``returned_episode_returns``."""
    cfg = {**DEFAULTS, **config}
    num_updates = int(cfg["TOTAL_TIMESTEPS"]) // cfg["NUM_STEPS"] // cfg["NUM_ENVS"]
    batch_size = cfg["NUM_ENVS"] * cfg["NUM_STEPS"]
    env, env_params = gymnax.make(cfg["ENV_NAME"])

    def schedule(count):
        # Annealed once per update (PureJaxRL's step function of the optimizer count).
        done = count // (cfg["NUM_MINIBATCHES"] * cfg["UPDATE_EPOCHS"])
        return cfg["LR"] * (1.0 - done / num_updates)

    def env_reset(key):
        obs, state = env.reset(key, env_params)
        return obs, LogState(state, jnp.float32(0.0), jnp.float32(0.0))

    def env_step(key, state, action):
        # gymnax >= 1.0 splits PureJaxRL's ``done`` into terminated and truncated.
        obs, env_state, reward, term, trunc, _ = env.step(key, state.env_state, action, env_params)
        done = jnp.logical_or(term, trunc)
        ret = state.episode_returns + reward
        state = LogState(
            env_state,
            ret * (1 - done),
            state.returned_episode_returns * (1 - done) + ret * done,
        )
        return obs, state, reward, done

    def train(rng):
        network = ActorCritic(env.action_space(env_params).n, activation=cfg["ACTIVATION"])
        rng, k = jax.random.split(rng)
        params = network.init(k, jnp.zeros(env.observation_space(env_params).shape))
        lr = schedule if cfg["ANNEAL_LR"] else cfg["LR"]
        tx = optax.chain(optax.clip_by_global_norm(cfg["MAX_GRAD_NORM"]), optax.adam(lr, eps=1e-5))
        train_state = TrainState.create(apply_fn=network.apply, params=params, tx=tx)
        rng, k = jax.random.split(rng)
        obs, env_state = jax.vmap(env_reset)(jax.random.split(k, cfg["NUM_ENVS"]))

        def update(runner, _):
            def step(runner, _):
                train_state, env_state, last_obs, rng = runner
                rng, k_act, k_env = jax.random.split(rng, 3)
                pi, value = network.apply(train_state.params, last_obs)
                action = pi.sample(seed=k_act)
                log_prob = pi.log_prob(action)
                keys = jax.random.split(k_env, cfg["NUM_ENVS"])
                obs, env_state, reward, done = jax.vmap(env_step)(keys, env_state, action)
                tr = Transition(
                    done,
                    action,
                    value,
                    reward,
                    log_prob,
                    last_obs,
                    env_state.returned_episode_returns,
                )
                return (train_state, env_state, obs, rng), tr

            runner, traj = jax.lax.scan(step, runner, None, cfg["NUM_STEPS"])
            train_state, env_state, last_obs, rng = runner
            _, last_val = network.apply(train_state.params, last_obs)

            def gae_step(carry, tr):
                gae, next_value = carry
                nonterminal = 1 - tr.done
                delta = tr.reward + cfg["GAMMA"] * next_value * nonterminal - tr.value
                gae = delta + cfg["GAMMA"] * cfg["GAE_LAMBDA"] * nonterminal * gae
                return (gae, tr.value), gae

            _, adv = jax.lax.scan(
                gae_step, (jnp.zeros_like(last_val), last_val), traj, reverse=True, unroll=16
            )
            targets = adv + traj.value

            def loss_fn(params, tr, gae, targets):
                pi, value = network.apply(params, tr.obs)
                log_prob = pi.log_prob(tr.action)
                v_clip = tr.value + (value - tr.value).clip(-cfg["CLIP_EPS"], cfg["CLIP_EPS"])
                value_loss = (
                    0.5
                    * jnp.maximum(jnp.square(value - targets), jnp.square(v_clip - targets)).mean()
                )
                ratio = jnp.exp(log_prob - tr.log_prob)
                gae = (gae - gae.mean()) / (gae.std() + 1e-8)
                clipped = jnp.clip(ratio, 1.0 - cfg["CLIP_EPS"], 1.0 + cfg["CLIP_EPS"])
                loss_actor = -jnp.minimum(ratio * gae, clipped * gae).mean()
                entropy = pi.entropy().mean()
                total = loss_actor + cfg["VF_COEF"] * value_loss - cfg["ENT_COEF"] * entropy
                return total, (value_loss, loss_actor, entropy)

            def minibatch(train_state, batch):
                grads = jax.grad(loss_fn, has_aux=True)(train_state.params, *batch)[0]
                return train_state.apply_gradients(grads=grads), None

            def epoch(carry, _):
                train_state, rng = carry
                rng, k = jax.random.split(rng)
                perm = jax.random.permutation(k, batch_size)
                batch = jax.tree_util.tree_map(
                    lambda x: x.reshape((batch_size,) + x.shape[2:]), (traj, adv, targets)
                )
                batch = jax.tree_util.tree_map(
                    lambda x: jnp.take(x, perm, axis=0).reshape(
                        (cfg["NUM_MINIBATCHES"], -1) + x.shape[1:]
                    ),
                    batch,
                )
                train_state, _ = jax.lax.scan(minibatch, train_state, batch)
                return (train_state, rng), None

            (train_state, rng), _ = jax.lax.scan(
                epoch, (train_state, rng), None, cfg["UPDATE_EPOCHS"]
            )
            return (train_state, env_state, last_obs, rng), traj.returned_episode_returns

        rng, k = jax.random.split(rng)
        runner, metrics = jax.lax.scan(update, (train_state, env_state, obs, k), None, num_updates)
        return {"runner_state": runner, "metrics": metrics}

    return train
