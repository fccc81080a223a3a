import pytest
import torch

from funcrl import Record
from funcrl.modules import Keyed
from funcrl.modules.planners import (
    CEMConfig,
    CEMPlanner,
    MPPIConfig,
    MPPIPlanner,
    WorldModelWrapper,
    _first_step_advantage,
    cem_plan,
    mppi_plan,
    rollout_scores,
    world_model_step,
)


def quadratic_step(params, target, action):
    """A static world: the state is the optimal action; reward = -|a - target|^2."""
    return target, -(action - target).square().sum(-1)


def point_mass_step(params, pos, action):
    """x' = x + a; reward -|x'|^2 (and a done flag once |x'| < 0.1)."""
    nxt = pos + action
    return nxt, -nxt.square().sum(-1, keepdim=True), nxt.norm(dim=-1) < 0.1


# ------------------------------------------------------------------ behaviour


def test_cem_finds_quadratic_optimum_batched():
    torch.manual_seed(0)
    targets = torch.tensor([[0.5, -0.3], [-0.8, 0.2], [0.0, 0.9]])
    cfg = CEMConfig(
        planning_horizon=3, optim_steps=6, num_candidates=100, top_k=10, action_shape=(2,)
    )
    action = cem_plan(quadratic_step, {}, targets, cfg, batch_ndim=1)
    assert action.shape == (3, 2)
    torch.testing.assert_close(action, targets, atol=0.05, rtol=0)


def test_cem_respects_bounds_and_plans_ahead():
    torch.manual_seed(0)
    cfg = CEMConfig(
        planning_horizon=4,
        optim_steps=6,
        num_candidates=100,
        top_k=10,
        action_shape=(1,),
        low=-1.0,
        high=1.0,
    )
    action = cem_plan(point_mass_step, {}, torch.tensor([2.5]), cfg)
    assert action.shape == (1,)
    assert -1.0 <= action.item() < -0.9  # full thrust towards the origin


def test_mppi_improves_on_random_actions():
    torch.manual_seed(0)
    target = torch.tensor([0.7, -0.4])
    cfg = MPPIConfig(
        planning_horizon=2,
        optim_steps=6,
        num_candidates=200,
        top_k=30,
        action_shape=(2,),
        temperature=5.0,
    )
    action = mppi_plan(quadratic_step, {}, target, cfg)
    planned = quadratic_step({}, target, action)[1]
    random_reward = quadratic_step({}, target, torch.randn(1000, 2))[1].mean()
    assert planned > -0.05 > random_reward


def test_rollout_scores_ignore_rewards_after_first_done():
    rewards = iter([1.0, 10.0, 100.0])
    dones = iter([False, True, False])

    def step(params, s, a):
        return s, torch.full(a.shape[:-1], next(rewards)), torch.full(a.shape[:-1], next(dones))

    score = rollout_scores(step, {}, torch.zeros(1, 1), torch.zeros(1, 3, 1))
    torch.testing.assert_close(score, torch.tensor([11.0]))  # the done step's reward counts


def test_first_step_advantage_hand_computed():
    cfg = MPPIConfig(1, 1, 2, 1, gamma=0.5, lmbda=0.9)
    states = [torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])]
    rewards = [torch.tensor([1.0, -1.0])]
    dones = [torch.tensor([False, True])]

    def value_fn(params, s):
        return 2 * s

    adv = _first_step_advantage(rewards, dones, states, {}, value_fn, cfg, torch.Size([2]))
    # A = r + gamma * V(s1) * (1 - done) - V(s0)
    torch.testing.assert_close(adv, torch.tensor([1 + 0.5 * 6 - 2, -1 - 4.0]))
    ret = _first_step_advantage(rewards, dones, states, {}, None, cfg, torch.Size([2]))
    torch.testing.assert_close(ret, torch.tensor([1.0, -1.0]))


def test_mppi_with_value_function_runs_and_prefers_high_value():
    torch.manual_seed(0)
    # Zero reward: only the value of the reached state (-|x|^2) tells good from bad.
    step = lambda p, x, a: (x + a, torch.zeros(x.shape[:-1]))  # noqa: E731
    cfg = MPPIConfig(1, 5, 200, 20, action_shape=(1,), low=-1.0, high=1.0, temperature=10.0)
    action = mppi_plan(
        step, {}, torch.tensor([0.6]), cfg, value_fn=lambda p, x: -x.square().sum(-1)
    )
    torch.testing.assert_close(action, torch.tensor([-0.6]), atol=0.1, rtol=0)


def test_bad_config_and_step_raise():
    with pytest.raises(ValueError, match="top_k=5 exceeds"):
        CEMConfig(2, 1, 4, 5)
    with pytest.raises(ValueError, match="planning_horizon must be >= 1"):
        CEMConfig(0, 1, 4, 2)
    cfg = CEMConfig(2, 1, 4, 2)
    with pytest.raises(ValueError, match="reward must be"):
        cem_plan(lambda p, s, a: (s, torch.zeros(3)), {}, torch.zeros(1), cfg)
    with pytest.raises(TypeError, match="must return"):
        cem_plan(lambda p, s, a: s, {}, torch.zeros(1), cfg)


# ------------------------------------------------------------------ records, keyed, transforms


def _linear_world_model():
    transition = Keyed(
        lambda p, x, a: x + a * p["gain"], ["hidden_observation", "action"], ["hidden_observation"]
    )
    reward = Keyed(
        lambda p, x: -x.square().sum(-1, keepdim=True), ["hidden_observation"], ["reward"]
    )
    return WorldModelWrapper(transition, reward)


def test_keyed_planners_on_world_model_record():
    torch.manual_seed(0)
    wm = _linear_world_model()
    params = {"transition_model": {"gain": torch.tensor(1.0)}, "reward_model": {}}
    step = world_model_step(wm)
    rec = Record({"hidden_observation": torch.tensor([[0.5, -0.5], [-0.2, 0.3]])}, batch_ndim=1)
    cfg = CEMConfig(2, 6, 100, 10, action_shape=(2,))
    out = CEMPlanner(step, cfg)(params, rec)
    assert out["action"].shape == (2, 2)
    torch.testing.assert_close(out["action"], -rec["hidden_observation"], atol=0.1, rtol=0)
    mcfg = MPPIConfig(2, 6, 100, 20, action_shape=(2,), temperature=10.0)
    out = MPPIPlanner(step, mcfg)(params, rec)
    torch.testing.assert_close(out["action"], -rec["hidden_observation"], atol=0.15, rtol=0)
    assert CEMPlanner(step, cfg).init(0) == {}


def test_vmap_over_states_and_compile():
    cfg = CEMConfig(2, 3, 32, 4, action_shape=(2,))
    targets = torch.randn(5, 2)
    torch.manual_seed(0)
    out = torch.func.vmap(lambda t: cem_plan(quadratic_step, {}, t, cfg), randomness="different")(
        targets
    )
    assert out.shape == (5, 2)
    torch._dynamo.reset()
    compiled = torch.compile(
        lambda t: cem_plan(quadratic_step, {}, t, cfg, batch_ndim=1),
        fullgraph=True,
        backend="aot_eager",
    )
    torch.manual_seed(1)
    a = compiled(targets)
    torch.manual_seed(1)
    b = cem_plan(quadratic_step, {}, targets, cfg, batch_ndim=1)
    torch.testing.assert_close(a, b)


# ------------------------------------------------------------------ parity with TorchRL


def test_cem_parity_with_torchrl_model_based_env():
    pytest.importorskip("torchrl", reason="TorchRL is the parity reference")
    from tensordict import TensorDict
    from tensordict.nn import TensorDictModule
    from torchrl.data import Composite, Unbounded
    from torchrl.envs.model_based import ModelBasedEnvBase
    from torchrl.modules import CEMPlanner as TorchRLCEM
    from torchrl.modules import WorldModelWrapper as TorchRLWorldModel

    torch.manual_seed(0)
    lin_t, lin_r = torch.nn.Linear(5, 4), torch.nn.Linear(4, 1)

    class Transition(torch.nn.Module):
        def forward(self, x, a):
            return torch.tanh(lin_t(torch.cat([x, a], -1)))

    class MBEnv(ModelBasedEnvBase):
        def __init__(self, world_model):
            super().__init__(world_model)
            self.observation_spec = Composite(hidden_observation=Unbounded((4,)))
            self.state_spec = Composite(hidden_observation=Unbounded((4,)))
            self.action_spec = Unbounded((1,))
            self.reward_spec = Unbounded((1,))

        def _reset(self, tensordict=None):
            return TensorDict({"hidden_observation": torch.zeros(4)}, [])

    world_model = TorchRLWorldModel(
        TensorDictModule(Transition(), ["hidden_observation", "action"], ["hidden_observation"]),
        TensorDictModule(lin_r, ["hidden_observation"], ["reward"]),
    )
    env = MBEnv(world_model)
    planner = TorchRLCEM(env, planning_horizon=3, optim_steps=4, num_candidates=16, top_k=4)
    x0 = torch.randn(4)
    torch.manual_seed(7)
    with torch.no_grad():
        ref = planner(TensorDict({"hidden_observation": x0}, []))["action"]

    def step(p, x, a):
        nxt = torch.tanh(torch.nn.functional.linear(torch.cat([x, a], -1), *p["t"]))
        return nxt, torch.nn.functional.linear(nxt, *p["r"])

    params = {
        "t": (lin_t.weight.detach(), lin_t.bias.detach()),
        "r": (lin_r.weight.detach(), lin_r.bias.detach()),
    }
    torch.manual_seed(7)
    ours = cem_plan(step, params, x0, CEMConfig(3, 4, 16, 4, action_shape=(1,)))
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
