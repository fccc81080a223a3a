"""Actors and value operators: TorchRL parity on identical weights, interaction types, views."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.distributions as D

from funcrl import Record
from funcrl.distributions import NormalParamExtractor, TanhNormal
from funcrl.modules import (
    Actor,
    ActorCriticOperator,
    ActorCriticWrapper,
    ActorValueOperator,
    DecisionTransformerInferenceWrapper,
    Keyed,
    MultiStepActorWrapper,
    ProbabilisticActor,
    TanhModule,
    ValueOperator,
)
from funcrl.nn import Linear
from funcrl.specs import Bounded


def _torch_linear(p: dict) -> torch.nn.Linear:
    out_f, in_f = p["weight"].shape
    lin = torch.nn.Linear(in_f, out_f)
    with torch.no_grad():
        lin.weight.copy_(p["weight"])
        lin.bias.copy_(p["bias"])
    return lin


@dataclasses.dataclass(frozen=True)
class CatLinear:
    """``Linear`` over the concatenation of its inputs (a Q(s, a) head)."""

    lin: Linear

    def init(self, seed=0, **kwargs):
        return self.lin.init(seed, **kwargs)

    def __call__(self, params, *xs):
        return self.lin(params, torch.cat(xs, -1))


class _NormalWithMedian(D.Normal):
    @property
    def median(self):
        return self.loc


def _obs(batch: int = 5, dim: int = 4) -> Record:
    return Record({"observation": torch.randn(batch, dim)}, batch_ndim=1)


def _loc_scale_net(lin: Linear):
    extract = NormalParamExtractor()

    def net(p, x):
        return extract(lin(p, x))

    return Keyed(net, ["observation"], ["loc", "scale"])


def test_actor_and_value_operator_parity_with_torchrl():
    pytest.importorskip("torchrl", reason="TorchRL is the reference implementation")
    from tensordict import TensorDict
    from torchrl.data import Bounded as RefBounded
    from torchrl.modules import Actor as RefActor
    from torchrl.modules import ValueOperator as RefValueOperator

    lin = Linear(4, 3)
    params = {k: 3 * v for k, v in lin.init(0).items()}
    rec = _obs()
    td = TensorDict({"observation": rec["observation"]}, [5])
    mine = Actor(lin, spec=Bounded(-0.2, 0.2, shape=(3,)), safe=True)(params, rec)
    ref = RefActor(_torch_linear(params), spec=RefBounded(-0.2, 0.2, shape=(3,)), safe=True)(
        td.clone()
    )
    torch.testing.assert_close(mine["action"], ref["action"].detach(), rtol=1e-5, atol=1e-5)
    assert sorted(mine.keys()) == sorted(ref.keys())

    vparams = Linear(4, 1).init(1)
    v = ValueOperator(Linear(4, 1))
    assert v.out_keys == ("state_value",)
    torch.testing.assert_close(
        v(vparams, rec)["state_value"],
        RefValueOperator(_torch_linear(vparams), in_keys=["observation"])(td.clone())[
            "state_value"
        ].detach(),
    )
    q = ValueOperator(CatLinear(Linear(7, 1)), in_keys=["observation", "action"])
    assert q.out_keys == ("state_action_value",)
    out = q(Linear(7, 1).init(2), rec.set("action", torch.randn(5, 3)))
    assert out["state_action_value"].shape == (5, 1)


def test_probabilistic_actor_tanh_normal_parity_with_torchrl():
    pytest.importorskip("torchrl", reason="TorchRL is the reference implementation")
    from tensordict import TensorDict
    from tensordict.nn import NormalParamExtractor as RefExtractor
    from tensordict.nn import TensorDictModule
    from torchrl.modules import ProbabilisticActor as RefProbabilisticActor
    from torchrl.modules import TanhNormal as RefTanhNormal

    lin = Linear(4, 4)
    params = lin.init(0)
    dist_kwargs = {"low": -2.0, "high": 3.0}
    mine = ProbabilisticActor(
        _loc_scale_net(lin),
        ["loc", "scale"],
        distribution_class=TanhNormal,
        distribution_kwargs=dist_kwargs,
        return_log_prob=True,
    )
    ref = RefProbabilisticActor(
        TensorDictModule(
            torch.nn.Sequential(_torch_linear(params), RefExtractor()),
            ["observation"],
            ["loc", "scale"],
        ),
        in_keys=["loc", "scale"],
        distribution_class=RefTanhNormal,
        distribution_kwargs=dist_kwargs,
        return_log_prob=True,
    )
    rec = _obs(8)
    td = TensorDict({"observation": rec["observation"]}, [8])
    # Default (deterministic) action and its keys.
    out, ref_out = mine(params, rec), ref(td.clone())
    assert sorted(out.keys()) == sorted(ref_out.keys())
    assert "action_log_prob" in out and "sample_log_prob" not in out
    for key in ("loc", "scale", "action"):
        torch.testing.assert_close(out[key], ref_out[key].detach(), rtol=1e-5, atol=1e-5)
    # Random samples: TorchRL's log-prob of funcrl's sample matches funcrl's.
    torch.manual_seed(0)
    sampled = mine(params, rec, interaction="random")
    ref_lp = ref.log_prob(td.clone().set("action", sampled["action"]))
    torch.testing.assert_close(sampled["action_log_prob"], ref_lp.detach(), rtol=1e-5, atol=1e-5)
    assert sampled["action_log_prob"].shape == (8,)
    # The params stay in the record (cache_dist): rebuild the distribution and the log-prob.
    lp = mine.dist_from_record(sampled).log_prob(sampled["action"])
    torch.testing.assert_close(lp, sampled["action_log_prob"])
    torch.testing.assert_close(mine.log_prob(params, sampled), sampled["action_log_prob"])


def test_interaction_types_on_a_normal():
    loc, scale = torch.tensor([[0.5, -1.0]]), torch.tensor([[0.3, 2.0]])
    actor = ProbabilisticActor(
        None, ["loc", "scale"], distribution_class=D.Normal, return_log_prob=True
    )
    rec = Record({"loc": loc, "scale": scale}, batch_ndim=1)
    for how in ("deterministic", "mode", "mean"):
        torch.testing.assert_close(actor({}, rec, interaction=how)["action"], loc)
    with pytest.raises(NotImplementedError, match="Normal has no median"):
        actor({}, rec, interaction="median")
    torch.testing.assert_close(
        ProbabilisticActor(None, ["loc", "scale"], distribution_class=_NormalWithMedian)(
            {}, rec, interaction="median"
        )["action"],
        loc,
    )
    torch.manual_seed(1)
    draw = actor({}, rec, interaction="random")["action"]
    torch.manual_seed(1)
    torch.testing.assert_close(draw, loc + scale * torch.randn(1, 2))
    torch.testing.assert_close(
        actor({}, rec, interaction="random")["action_log_prob"].shape, torch.Size([1, 2])
    )
    with pytest.raises(ValueError, match="interaction must be"):
        actor({}, rec, interaction="greedy")
    with pytest.raises(KeyError, match="'scale'"):
        actor({}, Record({"loc": loc}, batch_ndim=1))
    # Default distribution: Delta.
    delta = ProbabilisticActor(None, ["param"])
    torch.testing.assert_close(delta({}, Record({"param": loc}, batch_ndim=1))["action"], loc)


def test_composite_distribution_parity_with_torchrl():
    pytest.importorskip("torchrl", reason="TorchRL is the reference implementation")
    from tensordict import TensorDict
    from tensordict.nn import CompositeDistribution, TensorDictModule
    from torchrl.modules import ProbabilisticActor as RefProbabilisticActor

    def split(p, x):
        return x[..., :3], x[..., 3:6].abs() + 0.1, x[..., 6:]

    class Split(torch.nn.Module):
        def forward(self, x):
            return split(None, x)

    keys = [
        ("params", "normal", "loc"),
        ("params", "normal", "scale"),
        ("params", "nest", "categ", "logits"),
    ]
    dmap = {"normal": D.Normal, ("nest", "categ"): D.Categorical}
    mine = ProbabilisticActor(
        Keyed(split, ["x"], keys), "params", distribution_map=dmap, return_log_prob=True
    )
    ref = RefProbabilisticActor(
        TensorDictModule(Split(), in_keys=["x"], out_keys=keys),
        in_keys=["params"],
        distribution_class=CompositeDistribution,
        distribution_kwargs={"distribution_map": dmap},
        return_log_prob=True,
    )
    x = torch.rand(6, 10)
    out = mine({}, Record({"x": x}, batch_ndim=1), interaction="mode")
    from tensordict.nn import InteractionType, set_interaction_type

    with set_interaction_type(InteractionType.MODE):
        ref_out = ref(TensorDict({"x": x}, [6]))
    assert sorted(map(str, out.keys(True, True))) == sorted(map(str, ref_out.keys(True, True)))
    for key in ("normal", ("nest", "categ"), "normal_log_prob", ("nest", "categ_log_prob")):
        torch.testing.assert_close(out[key], ref_out[key], rtol=1e-5, atol=1e-5)


def test_tanh_module_parity_with_torchrl():
    pytest.importorskip("torchrl", reason="TorchRL is the reference implementation")
    from tensordict import TensorDict
    from torchrl.data import Bounded as RefBounded
    from torchrl.modules import TanhModule as RefTanhModule

    x = torch.randn(10, 3) * 4
    low, high = torch.tensor([-2.0, 0.0, -1.0]), torch.tensor([1.0, 5.0, 1.0])
    for clamp in (False, True):
        mine = TanhModule(["x"], ["y"], spec=Bounded(low, high), clamp=clamp)
        ref = RefTanhModule(
            in_keys=["x"], out_keys=["y"], spec=RefBounded(low, high, shape=(3,)), clamp=clamp
        )
        torch.testing.assert_close(
            mine({}, Record({"x": x}, batch_ndim=1))["y"], ref(TensorDict({"x": x}, [10]))["y"]
        )
    default = TanhModule(["x"])({}, Record({"x": x}, batch_ndim=1))["x"]
    torch.testing.assert_close(default, torch.tanh(x))
    with pytest.raises(ValueError, match="does not match"):
        TanhModule(["x"], spec=Bounded(low, high), low=-3.0)


def test_actor_value_operator_views_share_params():
    common = Keyed(Linear(4, 6), ["observation"], ["hidden"])
    policy = Actor(Linear(6, 2), in_keys=["hidden"])
    value = ValueOperator(Linear(6, 1), in_keys=["hidden"])
    avo = ActorValueOperator(common, policy, value)
    params = avo.init(0)
    assert set(params) == {"common", "policy", "value"}
    rec = _obs()
    full = avo(params, rec)
    pol = avo.get_policy_operator()(params, rec)
    val = avo.get_value_operator()(params, rec)
    torch.testing.assert_close(pol["action"], full["action"])
    torch.testing.assert_close(val["state_value"], full["state_value"])
    assert "state_value" not in pol and "action" not in val
    assert avo.get_policy_head() is policy and avo.get_value_head() is value
    grads = torch.func.grad(lambda p: avo.get_value_operator()(p, rec)["state_value"].sum())(params)
    assert torch.count_nonzero(grads["policy"]["weight"]) == 0  # the value view ignores the policy

    critic = ValueOperator(CatLinear(Linear(8, 1)), in_keys=["hidden", "action"])
    aco = ActorCriticOperator(common, policy, critic)
    out = aco(aco.init(0), rec)
    assert out["state_action_value"].shape == (5, 1) and aco.get_critic_operator() is aco
    with pytest.raises(RuntimeError, match="get_critic_operator"):
        aco.get_value_operator()
    with pytest.raises(ValueError, match="state_value"):
        ActorCriticOperator(common, policy, value)

    wrapper = ActorCriticWrapper(Actor(Linear(4, 2)), ValueOperator(Linear(4, 1)))
    wp = wrapper.init(0)
    torch.testing.assert_close(
        wrapper.get_policy_operator()(wp, rec)["action"], wrapper(wp, rec)["action"]
    )
    assert "action" not in wrapper.get_value_operator()(wp, rec)


def test_multistep_actor_wrapper_matches_torchrl():
    pytest.importorskip("torchrl", reason="TorchRL is the reference implementation")
    from tensordict import TensorDict
    from tensordict.nn import TensorDictModule
    from torchrl.modules import MultiStepActorWrapper as RefWrapper

    n_steps = 3

    def chunk(p, obs):  # [B, 1] -> [B, n_steps, 2]: action t of the chunk is (obs + t, -t)
        t = torch.arange(n_steps, dtype=obs.dtype)
        return torch.stack([obs + t, -t.expand(obs.shape[0], n_steps)], -1)

    class Chunk(torch.nn.Module):
        def forward(self, obs):
            return chunk(None, obs)

    mine = MultiStepActorWrapper(Keyed(chunk, ["observation"], ["action"]), n_steps=n_steps)
    ref = RefWrapper(TensorDictModule(Chunk(), ["observation"], ["action"]), n_steps=n_steps)
    is_init = [[True, True], [False, False], [False, True], [False, False], [False, False]]
    rec = None
    td = None
    for t, flags in enumerate(is_init):
        obs = torch.full((2, 1), 10.0 * t)
        init = torch.tensor(flags).reshape(2, 1)
        rec = (
            Record({"observation": obs, "is_init": init}, batch_ndim=1)
            if rec is None
            else rec.update({"observation": obs, "is_init": init})
        )
        td = (
            TensorDict({"observation": obs, "is_init": init}, [2])
            if td is None
            else td.update({"observation": obs, "is_init": init})
        )
        rec = mine({}, rec)
        td = ref(td)
        for key in ("action", "action_orig", "counter"):
            torch.testing.assert_close(rec[key], td[key])
    # Hand check of the last step: env 0 re-planned at t=3 (counter reached 3) -> index 1 at t=4.
    torch.testing.assert_close(rec["action"][0], torch.tensor([31.0, -1.0]))


def test_decision_transformer_wrapper_masks_context():
    pytest.importorskip("torchrl", reason="TorchRL is the reference implementation")
    from tensordict import TensorDict
    from tensordict.nn import TensorDictModule
    from torchrl.modules import DecisionTransformerInferenceWrapper as RefDT

    def policy(p, obs, action, rtg):  # every output step sees the whole masked context
        return (obs.sum(-1, keepdim=True) + action.sum(-1, keepdim=True) + rtg).expand(
            *obs.shape[:-1], 2
        )

    class Policy(torch.nn.Module):
        def forward(self, obs, action, rtg):
            return policy(None, obs, action, rtg)

    keys = ["observation", "action", "return_to_go"]
    data = {
        "observation": torch.randn(2, 6, 3),
        "action": torch.randn(2, 6, 2),
        "return_to_go": torch.randn(2, 6, 1),
    }
    mine = DecisionTransformerInferenceWrapper(Keyed(policy, keys, ["action"]), inference_context=3)
    ref = RefDT(TensorDictModule(Policy(), keys, ["action"]), inference_context=3)
    out = mine({}, Record(data, batch_ndim=1))
    ref_out = ref(TensorDict({k: v.clone() for k, v in data.items()}, [2]))
    for key in keys:
        torch.testing.assert_close(out[key], ref_out[key])
    masked = mine.mask_context(Record(data, batch_ndim=1))
    # Context 3 of 6: observations 3..5 kept; actions 4..5 kept and shifted one step left.
    assert (masked["observation"][:, :3] == 0).all()
    torch.testing.assert_close(masked["observation"][:, 3:], data["observation"][:, 3:])
    torch.testing.assert_close(masked["action"][:, 3:5], data["action"][:, 4:6])
    assert (masked["action"][:, :3] == 0).all() and (masked["action"][:, 5] == 0).all()


def test_probabilistic_actor_vmap_and_compile():
    lin = Linear(4, 4)
    params = lin.init(0)
    actor = ProbabilisticActor(
        _loc_scale_net(lin), ["loc", "scale"], distribution_class=TanhNormal, return_log_prob=True
    )
    rec = _obs(6)
    det = actor(params, rec)
    vm = torch.func.vmap(lambda r: actor(params, r, interaction="random"), randomness="different")(
        rec
    )
    assert vm["action"].shape == (6, 2) and vm["action_log_prob"].shape == (6,)
    torch._dynamo.reset()
    compiled = torch.compile(lambda p, r: actor(p, r)["action"], fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(params, rec), det["action"])
