"""Gymnasium's classic-control tasks as pure functions of a state tensor.

PureJaxRL's idea on PyTorch: with the environment written in the same framework as the agent, a
whole rollout is one pure function of ``(state, key)``, so it compiles into one graph and vmaps
over seeds and environments::

    env = funcrl.envs.pure.make("CartPole-v1")
    state, obs = env.reset(key)                                  # obs [4]
    state, next_obs, reward, terminated, truncated = env.step(state, action, key)
    obs = env.observe(state)                                     # what the agent sees next

    states, obs = torch.func.vmap(env.reset)(funcrl.random.split(key, 16))   # 16 envs

The dynamics are gymnasium's, operation for operation: from the same physical state and action
the next state, observation, reward and flags equal gymnasium's step: in float64 to 1e-12
(torch's vectorised sin/cos may differ from libm's by an ulp) for CartPole, Acrobot and
MountainCar; Pendulum computes its torque terms in the action's float32 as gymnasium does, which
matches to float32 rounding of those terms (1e-9); MountainCarContinuous stores its state in
float32 after each step, as gymnasium does, and matches to float32 rounding. :func:`state_from_gymnasium` builds a state
from ``gym_env.unwrapped.state``. Resets draw from :mod:`funcrl.random` with gymnasium's
distributions (not its NumPy stream, so a seed gives other start states than gymnasium's).

``step`` resets automatically: when the episode ends (``terminated`` or ``truncated``, the time
limit being gymnasium's ``max_episode_steps``) the returned ``state`` is a fresh episode's, while
``next_obs``, ``reward`` and the flags describe the transition that ended the old one, as
TorchRL's ``("next", ...)`` entries do. The agent's next input is ``env.observe(state)``.

Shapes: a state is an :class:`EnvState` of ``physics [..., n]`` and ``t [...]`` (steps taken in the
episode); every function works on unbatched states and under ``vmap``. Discrete actions are
integer tensors ``[]``; continuous ones ``[1]``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import torch

from funcrl import random, specs, tree
from funcrl._constants import filled
from funcrl.jit import can_read_values

__all__ = [
    "EnvState",
    "PureEnv",
    "CartPole",
    "Acrobot",
    "MountainCar",
    "MountainCarContinuous",
    "Pendulum",
    "make",
    "ENVS",
    "state_from_gymnasium",
    "RolloutState",
    "init_rollout",
    "collect",
    "step",
    "scan",
]


class EnvState(NamedTuple):
    """An environment's whole state: the physics (gymnasium's ``env.unwrapped.state``) and the
    number of steps taken in the current episode (for the time limit)."""

    physics: torch.Tensor
    t: torch.Tensor


@dataclasses.dataclass(frozen=True)
class PureEnv:
    """Base of the pure environments: static config only (hashable, a constant to compile).

    Subclasses define ``physics_size``, the reset box, :meth:`dynamics` and :meth:`observe`.

    Attributes:
        max_episode_steps: gymnasium's time limit.
        dtype: the dtype of the physics, observations and rewards.
    """

    max_episode_steps: int = 500
    dtype: torch.dtype = torch.float32

    name = "PureEnv"
    physics_size = 0
    reset_low: ClassVar[tuple[float, ...]] = ()
    reset_high: ClassVar[tuple[float, ...]] = ()
    # Discrete envs: the number of actions (a [] integer action); None: a [1] float action. The
    # step checks its action against this, not against a spec built on every call.
    num_actions: ClassVar[int | None] = None

    def __post_init__(self) -> None:
        if self.max_episode_steps < 1:
            raise ValueError(
                f"{self.name}: max_episode_steps must be >= 1, got {self.max_episode_steps}"
            )
        if not self.dtype.is_floating_point:
            raise TypeError(f"{self.name}: dtype must be a float dtype, got {self.dtype}")
        # num_actions and action_spec must tell the same story: the step checks actions
        # against the first, everything else reads the second.
        spec = self.action_spec
        n = spec.n if isinstance(spec, specs.Categorical) else None
        if n != self.num_actions or (n is None and tuple(spec.shape) != (1,)):
            raise TypeError(
                f"{type(self).__name__}: num_actions = {self.num_actions} does not match its "
                f"action_spec {spec} (a Categorical(n) needs num_actions = n; otherwise "
                "num_actions = None and a [1] spec)"
            )

    # -- specs --------------------------------------------------------------------------------

    @property
    def observation_spec(self) -> specs.TensorSpec:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def action_spec(self) -> specs.TensorSpec:
        """``Categorical(num_actions)`` for a discrete env; continuous envs override it."""
        if self.num_actions is None:  # pragma: no cover - every continuous env overrides
            raise NotImplementedError
        return specs.Categorical(self.num_actions)

    # -- the pure functions -------------------------------------------------------------------

    def initial_physics(self, key: torch.Tensor) -> torch.Tensor:
        """A start state drawn from gymnasium's reset distribution: ``[physics_size]``."""
        # Filled on the key's device, not copied from host memory (funcrl._constants).
        lo = filled(self.reset_low, self.dtype, key.device)
        hi = filled(self.reset_high, self.dtype, key.device)
        u = random.uniform(key, (self.physics_size,), dtype=self.dtype)
        return lo + (hi - lo) * u

    def reset(self, key: torch.Tensor) -> tuple[EnvState, torch.Tensor]:
        """``(state, observation)`` of a new episode."""
        physics = self.initial_physics(key)
        # zeros_like(key): batched wherever the key is (vmap), so a scan's carry stays uniform.
        t = torch.zeros_like(key[..., 0])
        return EnvState(physics, t), self.observe(physics)

    def dynamics(
        self, physics: torch.Tensor, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # pragma: no cover - abstract
        """One transition without time limit or reset: ``(next_physics, reward, terminated)``."""
        raise NotImplementedError

    def observe(self, physics: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """The observation of a physical state."""
        raise NotImplementedError

    def step(
        self, state: EnvState, action: torch.Tensor, key: torch.Tensor
    ) -> tuple[EnvState, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step with gymnasium's time limit and an automatic reset.

        Args:
            state: the current :class:`EnvState`.
            action: an integer ``[]`` (discrete) or ``[1]`` (continuous) tensor.
            key: draws the next episode's start state (used only when this one ends).

        Returns:
            ``(state, next_obs, reward, terminated, truncated)``: ``state`` is the next episode's
            when this one ended; ``next_obs`` is the observation the transition reached
            (``env.observe(state)`` is what to act on next); ``reward`` a 0-d float, the flags
            0-d bools (``truncated`` only when the time limit ends a non-terminal episode).
        """
        return self.step_with_start(state, action, self.reset(key)[0])

    def step_with_start(
        self, state: EnvState, action: torch.Tensor, start: EnvState
    ) -> tuple[EnvState, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`step` with the next episode's start state given: ``step(state, action, key)``
        is ``step_with_start(state, action, reset(key)[0])``.

        For loops that draw every step's start state at once, outside the loop
        (:func:`collect`). Same arguments and result as :meth:`step`, ``start`` in place of
        ``key``.
        """
        self._check_action(action)
        self._check_start(state, start)
        physics, reward, terminated = self.dynamics(state.physics, action)
        t = state.t + 1
        truncated = (t >= self.max_episode_steps) & ~terminated
        next_obs = self.observe(physics)
        done = terminated | truncated
        new = EnvState(torch.where(done, start.physics, physics), torch.where(done, start.t, t))
        return new, next_obs, reward, terminated, truncated

    # -- checks -------------------------------------------------------------------------------

    def _check_start(self, state: EnvState, start: Any) -> None:
        # torch.where would broadcast a start state of another shape into the next state.
        if not isinstance(start, EnvState):
            raise TypeError(
                f"{self.name}.step_with_start: start must be an EnvState, got {type(start).__name__}"
            )
        for field in ("physics", "t"):
            want, got = getattr(state, field), getattr(start, field)
            if (
                not isinstance(got, torch.Tensor)
                or got.shape != want.shape
                or got.dtype != want.dtype
            ):
                desc = (
                    f"shape {tuple(got.shape)} dtype {got.dtype}"
                    if isinstance(got, torch.Tensor)
                    else type(got).__name__
                )
                raise ValueError(
                    f"{self.name}.step_with_start: start.{field} must match state.{field} (shape "
                    f"{tuple(want.shape)} dtype {want.dtype}), got {desc}"
                )

    def _check_action(self, action: torch.Tensor) -> None:
        if not isinstance(action, torch.Tensor):
            raise TypeError(
                f"{self.name}.step: action must be a tensor, got {type(action).__name__}"
            )
        n = self.num_actions
        want = () if n is not None else (1,)
        if tuple(action.shape) != want:
            raise ValueError(
                f"{self.name}.step: action has shape {tuple(action.shape)}, expected {want} "
                "(vmap the step for a batch of environments)"
            )
        if n is not None:
            if action.dtype.is_floating_point or action.dtype == torch.bool:
                raise TypeError(
                    f"{self.name}.step: action must be an integer tensor, got {action.dtype}"
                )
            # A value check needs a host read: only in plain eager code.
            if can_read_values(action):
                a = int(action)
                if not 0 <= a < n:
                    raise ValueError(f"{self.name}.step: action {a} is outside [0, {n})")
        elif not action.dtype.is_floating_point:
            raise TypeError(f"{self.name}.step: action must be a float tensor, got {action.dtype}")


@dataclasses.dataclass(frozen=True)
class CartPole(PureEnv):
    """``CartPole-v1``: state ``(x, x_dot, theta, theta_dot)``, actions 0 (push left) / 1 (right),
    reward 1 every step (the terminating one too), 500 steps."""

    max_episode_steps: int = 500
    name = "CartPole-v1"
    num_actions = 2
    physics_size = 4
    reset_low = (-0.05,) * 4
    reset_high = (0.05,) * 4

    gravity = 9.8
    masscart = 1.0
    masspole = 0.1
    length = 0.5
    force_mag = 10.0
    tau = 0.02
    theta_threshold_radians = 12 * 2 * math.pi / 360
    x_threshold = 2.4

    @property
    def observation_spec(self) -> specs.TensorSpec:
        high = torch.tensor(
            [self.x_threshold * 2, math.inf, self.theta_threshold_radians * 2, math.inf]
        )
        return specs.Bounded(-high, high, shape=(4,), dtype=self.dtype)

    def dynamics(self, physics, action):
        x, x_dot, theta, theta_dot = physics.unbind(-1)
        total_mass = self.masspole + self.masscart
        polemass_length = self.masspole * self.length
        force = torch.where(action == 1, self.force_mag, -self.force_mag).to(physics.dtype)
        costheta, sintheta = torch.cos(theta), torch.sin(theta)
        temp = (force + polemass_length * torch.square(theta_dot) * sintheta) / total_mass
        thetaacc = (self.gravity * sintheta - costheta * temp) / (
            self.length * (4.0 / 3.0 - self.masspole * torch.square(costheta) / total_mass)
        )
        xacc = temp - polemass_length * thetaacc * costheta / total_mass
        # gymnasium's default "euler" integrator: positions from the old velocities.
        x = x + self.tau * x_dot
        x_dot = x_dot + self.tau * xacc
        theta = theta + self.tau * theta_dot
        theta_dot = theta_dot + self.tau * thetaacc
        nxt = torch.stack((x, x_dot, theta, theta_dot), -1)
        terminated = (
            (x < -self.x_threshold)
            | (x > self.x_threshold)
            | (theta < -self.theta_threshold_radians)
            | (theta > self.theta_threshold_radians)
        )
        return nxt, torch.ones_like(x), terminated

    def observe(self, physics):
        return physics


@dataclasses.dataclass(frozen=True)
class Acrobot(PureEnv):
    """``Acrobot-v1`` (the "book" dynamics, RK4 over ``dt = 0.2``, no torque noise): state
    ``(theta1, theta2, dtheta1, dtheta2)``, actions 0/1/2 (torque -1/0/+1), reward -1 per step
    and 0 on the terminating one, 500 steps."""

    max_episode_steps: int = 500
    name = "Acrobot-v1"
    num_actions = 3
    physics_size = 4
    reset_low = (-0.1,) * 4
    reset_high = (0.1,) * 4

    dt = 0.2
    link_length_1 = 1.0
    link_mass_1 = 1.0
    link_mass_2 = 1.0
    link_com_pos_1 = 0.5
    link_com_pos_2 = 0.5
    link_moi = 1.0
    max_vel_1 = 4 * math.pi
    max_vel_2 = 9 * math.pi

    @property
    def observation_spec(self) -> specs.TensorSpec:
        high = torch.tensor([1.0, 1.0, 1.0, 1.0, self.max_vel_1, self.max_vel_2])
        return specs.Bounded(-high, high, shape=(6,), dtype=self.dtype)

    def initial_physics(self, key):
        # gymnasium draws the start state in float32.
        return super().initial_physics(key).to(torch.float32).to(self.dtype)

    def _dsdt(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        m1, m2 = self.link_mass_1, self.link_mass_2
        l1, lc1, lc2 = self.link_length_1, self.link_com_pos_1, self.link_com_pos_2
        i1 = i2 = self.link_moi
        g = 9.8
        theta1, theta2, dtheta1, dtheta2 = s.unbind(-1)
        d1 = m1 * lc1**2 + m2 * (l1**2 + lc2**2 + 2 * l1 * lc2 * torch.cos(theta2)) + i1 + i2
        d2 = m2 * (lc2**2 + l1 * lc2 * torch.cos(theta2)) + i2
        phi2 = m2 * lc2 * g * torch.cos(theta1 + theta2 - math.pi / 2.0)
        phi1 = (
            -m2 * l1 * lc2 * dtheta2**2 * torch.sin(theta2)
            - 2 * m2 * l1 * lc2 * dtheta2 * dtheta1 * torch.sin(theta2)
            + (m1 * lc1 + m2 * l1) * g * torch.cos(theta1 - math.pi / 2)
            + phi2
        )
        ddtheta2 = (a + d2 / d1 * phi1 - m2 * l1 * lc2 * dtheta1**2 * torch.sin(theta2) - phi2) / (
            m2 * lc2**2 + i2 - d2**2 / d1
        )
        ddtheta1 = -(d2 * ddtheta2 + phi1) / d1
        return torch.stack((dtheta1, dtheta2, ddtheta1, ddtheta2), -1)

    @staticmethod
    def _wrap(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
        # gymnasium subtracts (or adds) one period at a time; two steps cover any reachable state
        # (|dtheta| * dt < 2 pi) and keep the same rounding.
        diff = hi - lo
        for _ in range(2):
            x = torch.where(x > hi, x - diff, x)
            x = torch.where(x < lo, x + diff, x)
        return x

    def dynamics(self, physics, action):
        torque = (action.to(physics.dtype) - 1.0).to(physics.dtype)
        dt, dt2 = self.dt, self.dt / 2.0
        # gymnasium's rk4 over [0, dt], the torque held constant.
        y0 = physics
        k1 = self._dsdt(y0, torque)
        k2 = self._dsdt(y0 + dt2 * k1, torque)
        k3 = self._dsdt(y0 + dt2 * k2, torque)
        k4 = self._dsdt(y0 + dt * k3, torque)
        ns = y0 + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
        t1, t2, v1, v2 = ns.unbind(-1)
        t1 = self._wrap(t1, -math.pi, math.pi)
        t2 = self._wrap(t2, -math.pi, math.pi)
        v1 = v1.clamp(-self.max_vel_1, self.max_vel_1)
        v2 = v2.clamp(-self.max_vel_2, self.max_vel_2)
        nxt = torch.stack((t1, t2, v1, v2), -1)
        terminated = -torch.cos(t1) - torch.cos(t2 + t1) > 1.0
        reward = torch.where(terminated, 0.0, -1.0).to(physics.dtype)
        return nxt, reward, terminated

    def observe(self, physics):
        t1, t2, v1, v2 = physics.unbind(-1)
        return torch.stack((torch.cos(t1), torch.sin(t1), torch.cos(t2), torch.sin(t2), v1, v2), -1)


@dataclasses.dataclass(frozen=True)
class MountainCar(PureEnv):
    """``MountainCar-v0``: state ``(position, velocity)``, actions 0/1/2 (push left/none/right),
    reward -1 per step, 200 steps."""

    max_episode_steps: int = 200
    name = "MountainCar-v0"
    num_actions = 3
    physics_size = 2
    reset_low = (-0.6, 0.0)
    reset_high = (-0.4, 0.0)

    min_position = -1.2
    max_position = 0.6
    max_speed = 0.07
    goal_position = 0.5
    goal_velocity = 0.0
    force = 0.001
    gravity = 0.0025

    @property
    def observation_spec(self) -> specs.TensorSpec:
        return specs.Bounded(
            torch.tensor([self.min_position, -self.max_speed]),
            torch.tensor([self.max_position, self.max_speed]),
            shape=(2,),
            dtype=self.dtype,
        )

    def dynamics(self, physics, action):
        position, velocity = physics.unbind(-1)
        push = (action - 1).to(physics.dtype) * self.force
        velocity = velocity + push + torch.cos(3 * position) * (-self.gravity)
        velocity = velocity.clamp(-self.max_speed, self.max_speed)
        position = (position + velocity).clamp(self.min_position, self.max_position)
        velocity = torch.where(
            (position == self.min_position) & (velocity < 0), torch.zeros_like(velocity), velocity
        )
        terminated = (position >= self.goal_position) & (velocity >= self.goal_velocity)
        return torch.stack((position, velocity), -1), -torch.ones_like(position), terminated

    def observe(self, physics):
        return physics


@dataclasses.dataclass(frozen=True)
class MountainCarContinuous(PureEnv):
    """``MountainCarContinuous-v0``: state ``(position, velocity)``, action ``[1]`` force in
    ``[-1, 1]`` (clipped), reward ``100`` on reaching the goal minus ``0.1 a^2`` (the unclipped
    action), 999 steps. gymnasium keeps this state in float32 after each step; so does this one
    (then cast to ``dtype``)."""

    max_episode_steps: int = 999
    name = "MountainCarContinuous-v0"
    physics_size = 2
    reset_low = (-0.6, 0.0)
    reset_high = (-0.4, 0.0)

    min_action = -1.0
    max_action = 1.0
    min_position = -1.2
    max_position = 0.6
    max_speed = 0.07
    goal_position = 0.45
    goal_velocity = 0.0
    power = 0.0015

    @property
    def observation_spec(self) -> specs.TensorSpec:
        return specs.Bounded(
            torch.tensor([self.min_position, -self.max_speed]),
            torch.tensor([self.max_position, self.max_speed]),
            shape=(2,),
            dtype=self.dtype,
        )

    @property
    def action_spec(self) -> specs.TensorSpec:
        return specs.Bounded(self.min_action, self.max_action, shape=(1,), dtype=self.dtype)

    def dynamics(self, physics, action):
        position, velocity = physics.unbind(-1)
        a = action[..., 0].to(physics.dtype)
        force = a.clamp(self.min_action, self.max_action)
        velocity = velocity + force * self.power - 0.0025 * torch.cos(3 * position)
        velocity = velocity.clamp(-self.max_speed, self.max_speed)
        position = (position + velocity).clamp(self.min_position, self.max_position)
        velocity = torch.where(
            (position == self.min_position) & (velocity < 0), torch.zeros_like(velocity), velocity
        )
        terminated = (position >= self.goal_position) & (velocity >= self.goal_velocity)
        reward = torch.where(terminated, 100.0, 0.0).to(physics.dtype) - a.pow(2) * 0.1
        nxt = torch.stack((position, velocity), -1).to(torch.float32).to(physics.dtype)
        return nxt, reward, terminated

    def observe(self, physics):
        return physics


@dataclasses.dataclass(frozen=True)
class Pendulum(PureEnv):
    """``Pendulum-v1``: state ``(theta, theta_dot)``, action ``[1]`` torque in ``[-2, 2]``
    (clipped), reward ``-(angle^2 + 0.1 theta_dot^2 + 0.001 u^2)``, never terminates, 200 steps."""

    max_episode_steps: int = 200
    name = "Pendulum-v1"
    physics_size = 2
    reset_low = (-math.pi, -1.0)
    reset_high = (math.pi, 1.0)

    max_speed = 8.0
    max_torque = 2.0
    dt = 0.05
    g = 10.0
    m = 1.0
    length = 1.0

    @property
    def observation_spec(self) -> specs.TensorSpec:
        high = torch.tensor([1.0, 1.0, self.max_speed])
        return specs.Bounded(-high, high, shape=(3,), dtype=self.dtype)

    @property
    def action_spec(self) -> specs.TensorSpec:
        return specs.Bounded(-self.max_torque, self.max_torque, shape=(1,), dtype=self.dtype)

    def dynamics(self, physics, action):
        th, thdot = physics.unbind(-1)
        # gymnasium computes the torque terms in the action's dtype (float32) and promotes after.
        u = action[..., 0].clamp(-self.max_torque, self.max_torque)
        # NumPy's float % is fmod plus a sign fix, which rounds differently from torch.remainder.
        period = 2 * math.pi
        m = torch.fmod(th + math.pi, period)
        angle = torch.where(m < 0, m + period, m) - math.pi
        # NumPy rounds a Python scalar to the array's dtype before multiplying; torch would keep it
        # in double, so the constants are made tensors of u's dtype.
        c_cost = filled(0.001, u.dtype, u.device)
        c_acc = filled(3.0 / (self.m * self.length**2), u.dtype, u.device)
        costs = angle**2 + 0.1 * thdot**2 + (c_cost * (u**2)).to(physics.dtype)
        g, ln, dt = self.g, self.length, self.dt
        torque_acc = (c_acc * u).to(physics.dtype)
        newthdot = thdot + (3 * g / (2 * ln) * torch.sin(th) + torque_acc) * dt
        newthdot = newthdot.clamp(-self.max_speed, self.max_speed)
        newth = th + newthdot * dt
        terminated = torch.zeros_like(th, dtype=torch.bool)
        return torch.stack((newth, newthdot), -1), -costs, terminated

    def observe(self, physics):
        th, thdot = physics.unbind(-1)
        return torch.stack((torch.cos(th), torch.sin(th), thdot), -1)


ENVS: dict[str, type[PureEnv]] = {
    "CartPole-v1": CartPole,
    "Acrobot-v1": Acrobot,
    "MountainCar-v0": MountainCar,
    "MountainCarContinuous-v0": MountainCarContinuous,
    "Pendulum-v1": Pendulum,
}


def make(name: str, **kwargs: Any) -> PureEnv:
    """The pure environment called ``name`` (gymnasium's id), e.g. ``make("CartPole-v1")``.

    ``kwargs`` set ``max_episode_steps`` and ``dtype``.
    """
    if name not in ENVS:
        raise ValueError(f"envs.pure.make: unknown environment {name!r}; known: {sorted(ENVS)}")
    return ENVS[name](**kwargs)


def state_from_gymnasium(env: PureEnv, gym_env: Any, t: int = 0) -> EnvState:
    """The :class:`EnvState` of a gymnasium environment of the same task (its
    ``unwrapped.state``), with ``t`` steps taken in the episode. For tests and for moving an
    episode between the two worlds."""
    raw = getattr(getattr(gym_env, "unwrapped", gym_env), "state", None)
    if raw is None:
        raise ValueError("envs.pure.state_from_gymnasium: the gymnasium env has no state; reset it")
    physics = torch.as_tensor([float(v) for v in raw], dtype=env.dtype)
    if physics.shape != (env.physics_size,):
        raise ValueError(
            f"envs.pure.state_from_gymnasium: {env.name} has {env.physics_size} state entries, "
            f"the gymnasium env has {physics.shape[0]}"
        )
    return EnvState(physics, torch.tensor(t, dtype=torch.int64))


class RolloutState(NamedTuple):
    """What a rollout carries between calls: the environments' states, the observations to act
    on, and each environment's running episode return and length (``[E]``)."""

    env: EnvState
    observation: torch.Tensor
    episode_return: torch.Tensor
    episode_length: torch.Tensor


def init_rollout(env: PureEnv, key: torch.Tensor, num_envs: int) -> RolloutState:
    """``num_envs`` fresh episodes (one reset key each), ready for :func:`collect`."""
    if num_envs < 1:
        raise ValueError(f"envs.pure.init_rollout: num_envs must be >= 1, got {num_envs}")
    states, obs = torch.func.vmap(env.reset)(random.split(key, num_envs))
    # Contiguous copies (vmap may return expanded tensors): the next collect's outputs are
    # contiguous, and a compiled collect would otherwise recompile on the changed strides.
    states = EnvState(states.physics.contiguous(), states.t.contiguous())
    zeros = torch.zeros_like(states.physics[:, 0])
    lengths = torch.zeros_like(states.t)
    return RolloutState(states, obs.clone(), zeros, lengths)


def scan(
    body: Callable[[tuple[torch.Tensor, ...], Any], tuple[tuple[torch.Tensor, ...], Any]],
    init: tuple[torch.Tensor, ...],
    xs: Any,
) -> tuple[tuple[torch.Tensor, ...], Any]:
    """``body`` over the leading dim of ``xs``: ``torch._higher_order_ops.scan`` under
    ``torch.compile``, a Python loop over the same body otherwise.

    Compiled, the body is one subgraph whatever the length (unrolled, 128 rollout steps or 16
    minibatch updates take minutes to compile); eagerly the loop runs under ``vmap`` (scan's
    eager path does not) and draws the same numbers.

    Args:
        body: ``body(carry, x) -> (carry, y)``; the carry a flat tuple of tensors with fixed
            shapes, dtypes and strides (scan's body may not return NamedTuples), ``y`` a pytree of
            tensors. Under compile neither may alias the inputs or each other: return copies.
        init: the first carry.
        xs: a pytree of tensors ``[L, ...]``.

    Returns:
        ``(carry, ys)``: the last carry and the outputs stacked ``[L, ...]``.
    """
    import torch.utils._pytree as pytree

    if torch.compiler.is_compiling():
        from torch._higher_order_ops import scan as _scan

        return _scan(body, init, xs)
    leaves, spec = pytree.tree_flatten(xs)
    carry, outs = init, []
    for i in range(leaves[0].shape[0]):
        carry, out = body(carry, pytree.tree_unflatten([x[i] for x in leaves], spec))
        outs.append(out)
    return carry, pytree.tree_map(lambda *ys: torch.stack(ys), *outs)


def _step_inputs(env: PureEnv, key: torch.Tensor, num_envs: int) -> tuple[torch.Tensor, EnvState]:
    """What a step's key ``[..., 2]`` draws: the policy's key ``[..., 2]`` and each of the ``E``
    environments' next start state ``[..., E, ...]`` (used where its episode ends).

    Any leading dims: :func:`collect` draws all its steps' at once, outside its loop, in one
    batched call each. That gives the same values as drawing inside the loop, and keeps the
    loop's body free of the key splits and reset draws, each of which cost a chain of small
    buffers per step in the compiled loop (Inductor stores Threefry's rounds every few ops).
    """
    lead = key.shape[:-1]
    flat = key.reshape(-1, 2)
    k_policy, k_env = torch.func.vmap(lambda k: random.split(k, 2))(flat).unbind(1)
    env_keys = torch.func.vmap(lambda k: random.split(k, num_envs))(k_env)
    start, _ = torch.func.vmap(torch.func.vmap(env.reset))(env_keys)
    start = EnvState(*(x.reshape(*lead, num_envs, *x.shape[2:]) for x in start))
    return k_policy.reshape(*lead, 2), start


def _step(
    policy: Any,
    params: Any,
    env: PureEnv,
    carry: tuple[torch.Tensor, ...],
    k_policy: torch.Tensor,
    start: EnvState,
) -> tuple[tuple[torch.Tensor, ...], dict[str, Any]]:
    """One step of ``E`` environments on a flat carry ``(physics, t, obs, ep_ret, ep_len)``,
    with the step's draws from :func:`_step_inputs`: the new carry (finished episodes reset) and
    the transition's entries (see :func:`collect`)."""
    physics, t, obs, ep_ret, ep_len = carry
    action, extras = policy(params, obs, k_policy)
    new_state, next_obs, reward, terminated, truncated = torch.func.vmap(env.step_with_start)(
        EnvState(physics, t), action, start
    )
    done = terminated | truncated
    ep_ret = ep_ret + reward
    ep_len = ep_len + 1
    out = {
        "observation": obs,
        "action": action,
        **extras,
        "next": {
            "observation": next_obs,
            "reward": reward.unsqueeze(-1),
            "terminated": terminated.unsqueeze(-1),
            "truncated": truncated.unsqueeze(-1),
            "done": done.unsqueeze(-1),
            "episode_return": ep_ret,
            "episode_length": ep_len,
        },
    }
    new_carry = (
        new_state.physics,
        new_state.t,
        torch.func.vmap(env.observe)(new_state.physics),
        torch.where(done, torch.zeros_like(ep_ret), ep_ret),
        torch.where(done, torch.zeros_like(ep_len), ep_len),
    )
    return new_carry, out


def step(
    policy: Any, params: Any, env: PureEnv, state: RolloutState, key: torch.Tensor
) -> tuple[RolloutState, Any]:
    """One step of ``E`` environments under ``policy``: :func:`collect` with ``T = 1`` and no
    time dim, for loops that interleave acting and learning (DQN's).

    Args:
        policy, params, env, state: as for :func:`collect`.
        key: this step's key (split into the policy's and the environments' keys exactly as
            :func:`collect` splits each of its per-step keys).

    Returns:
        ``(state, transition)``: the transition a :class:`funcrl.Record` ``[E]`` with
        :func:`collect`'s keys; finished episodes are reset in ``state``.
    """
    from funcrl.record import Record

    carry = (
        state.env.physics,
        state.env.t,
        state.observation,
        state.episode_return,
        state.episode_length,
    )
    k_policy, start = _step_inputs(env, key, state.observation.shape[0])
    (physics, t, obs, ep_ret, ep_len), out = _step(policy, params, env, carry, k_policy, start)
    return RolloutState(EnvState(physics, t), obs, ep_ret, ep_len), Record(out, batch_ndim=1)


def collect(
    policy: Any,
    params: Any,
    env: PureEnv,
    state: RolloutState,
    key: torch.Tensor,
    num_steps: int,
) -> tuple[RolloutState, Any]:
    """``num_steps`` steps of ``E`` environments under ``policy``, as one pure function.

    Args:
        policy: ``policy(params, observation [E, o], key) -> (action [E, ...], extras)`` where
            ``extras`` is a dict of ``[E, ...]`` tensors stored with the step (e.g.
            ``sample_log_prob``, ``state_value``).
        params: the policy's params (closed over by every step; not a scanned input).
        env: a :class:`PureEnv`.
        state: from :func:`init_rollout` or the previous call.
        key: one key for the whole rollout (split per step into policy and env keys).
        num_steps: ``T``, static.

    Returns:
        ``(state, trajectory)``: the trajectory a :class:`funcrl.Record` ``[T, E]`` with TorchRL's
        keys ``observation``, ``action``, the policy's extras, and ``("next", k)`` for
        ``observation``, ``reward`` ``[T, E, 1]``, ``terminated``, ``truncated``, ``done``
        ``[T, E, 1]`` (bool), ``episode_return`` and ``episode_length`` ``[T, E]`` (the running
        totals including this step; read them where ``done``).

    The loop is :func:`scan`: one compiled body whatever ``T``, and it vmaps over seeds.
    """

    from funcrl.record import Record

    if num_steps < 1:
        raise ValueError(f"envs.pure.collect: num_steps must be >= 1, got {num_steps}")

    def body(carry, xs):
        # The carry is a flat tuple of tensors: scan's body may not return NamedTuples.
        k_policy, start_physics, start_t = xs
        new, out = _step(policy, params, env, carry, k_policy, EnvState(start_physics, start_t))
        # scan's outputs may alias neither its inputs nor each other (nor be views): copy them.
        return tuple(x.clone() for x in new), tree.map(torch.clone, out)

    # Every step's policy key and start states, drawn before the loop (see _step_inputs).
    k_policy, start = _step_inputs(env, random.split(key, num_steps), state.observation.shape[0])
    # Contiguous: Inductor's loop copied a strided scanned input whole on every step to read
    # one row of it (the policy's keys are every other pair of a split).
    xs = tuple(x.contiguous() for x in (k_policy, *start))
    init = (
        state.env.physics,
        state.env.t,
        state.observation,
        state.episode_return,
        state.episode_length,
    )
    # Fresh contiguous copies: the carry's entries may not alias each other (CartPole's
    # observation is its physics) and their strides must match the body's outputs.
    init = tuple(x.clone(memory_format=torch.contiguous_format) for x in init)
    (physics, t, obs, ep_ret, ep_len), traj = scan(body, init, xs)
    return RolloutState(EnvState(physics, t), obs, ep_ret, ep_len), Record(traj, batch_ndim=2)
