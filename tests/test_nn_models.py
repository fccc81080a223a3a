import pytest
import torch

from funcrl.nn import from_module
from funcrl.nn.models import (
    DdpgCnnActor,
    DdpgCnnQNet,
    DdpgMlpActor,
    DdpgMlpQNet,
    DistributionalDQNnet,
    DuelingCnnDQNet,
    DuelingMlpDQNet,
    dueling_combine,
)


def test_dueling_combine_hand_computed():
    v = torch.tensor([[1.0]])
    a = torch.tensor([[1.0, 2.0, 3.0]])
    torch.testing.assert_close(dueling_combine(v, a), torch.tensor([[0.0, 1.0, 2.0]]))


def test_distributional_log_softmax():
    logits = torch.randn(4, 5, 3)
    out = DistributionalDQNnet()({}, logits)
    torch.testing.assert_close(out.exp().sum(-2), torch.ones(4, 3))
    with pytest.raises(ValueError, match="atoms"):
        DistributionalDQNnet()({}, torch.randn(3))


def test_inits_and_shapes():
    actor = DdpgMlpActor(5, 2)
    p = actor.init(0)
    assert [lp["weight"].shape for lp in p["mlp"]["layers"]] == [(400, 5), (300, 400), (2, 300)]
    assert p["mlp"]["layers"][-1]["weight"].abs().max() <= 3e-3
    assert actor(p, torch.randn(7, 5)).shape == (7, 2)
    q = DdpgMlpQNet(5, 2)
    pq = q.init(0)
    assert pq["mlp1"]["layers"][0]["weight"].shape == (400, 5)
    assert pq["mlp2"]["layers"][0]["weight"].shape == (300, 402)
    assert q(pq, torch.randn(7, 5), torch.randn(7, 2)).shape == (7, 1)
    duel = DuelingMlpDQNet(6, 4)
    pd = duel.init(0)
    assert all(lp["bias"].abs().sum() == 0 for k in pd for lp in pd[k]["layers"])
    assert duel(pd, torch.randn(3, 6)).shape == (3, 4)


def test_cnn_shapes():
    x = torch.randn(2, 3, 64, 64)
    actor = DdpgCnnActor((3, 64, 64), 4)
    action, hidden = actor(actor.init(0), x)
    assert action.shape == (2, 4) and hidden.shape == (2, 64 * 6 * 6)
    q = DdpgCnnQNet((3, 64, 64), 4)
    assert q(q.init(0), x, action).shape == (2, 1)
    duel = DuelingCnnDQNet((3, 64, 64), 6)
    assert duel(duel.init(0), x).shape == (2, 6)


def _copy_into(ours_params, ref):
    from funcrl.nn import to_module

    to_module(ours_params, ref)


def test_parity_torchrl_models():
    pytest.importorskip("torchrl", reason="TorchRL parity reference")
    from torchrl.modules.models import models as m

    torch.manual_seed(0)
    obs, act, img = torch.randn(3, 5), torch.randn(3, 2), torch.randn(3, 3, 64, 64)
    cases = [
        (m.DdpgMlpActor(action_dim=2), DdpgMlpActor(5, 2), (obs,)),
        (m.DdpgMlpQNet(), DdpgMlpQNet(5, 2), (obs, act)),
        (m.DuelingMlpDQNet(out_features=4), DuelingMlpDQNet(5, 4), (obs,)),
        (m.DdpgCnnActor(action_dim=2), DdpgCnnActor((3, 64, 64), 2), (img,)),
        (m.DdpgCnnQNet(), DdpgCnnQNet((3, 64, 64), 2), (img, act)),
        (m.DuelingCnnDQNet(out_features=4), DuelingCnnDQNet((3, 64, 64), 4), (img,)),
    ]
    for ref, ours, inputs in cases:
        ref(*inputs)  # materialise lazy layers
        params = from_module(ref)
        # Same tree structure as funcrl's own init, so TorchRL weights load directly.
        init = ours.init(0)
        assert torch.utils._pytree.tree_structure(params) == torch.utils._pytree.tree_structure(
            init
        ), type(ours).__name__
        out, ref_out = ours(params, *inputs), ref(*inputs)
        for a, b in zip(
            torch.utils._pytree.tree_leaves(out),
            [ref_out] if torch.is_tensor(ref_out) else list(ref_out),
        ):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        # and funcrl params load back into TorchRL.
        _copy_into(init, ref)
        ref_out = ref(*inputs)
        out = ours(init, *inputs)
        for a, b in zip(
            torch.utils._pytree.tree_leaves(out),
            [ref_out] if torch.is_tensor(ref_out) else list(ref_out),
        ):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_vmap_ensemble_and_compile():
    from funcrl.nn import Ensemble

    ens = Ensemble(
        DuelingMlpDQNet(4, 3, feature_num_cells=(8,), feature_out=8, head_num_cells=(8,)), 2
    )
    p = ens.init(0)
    x = torch.randn(5, 4)
    y = ens(p, x)
    assert y.shape == (2, 5, 3)
    torch.testing.assert_close(y, Ensemble(ens.net, 2, mode="loop")(p, x))
    torch._dynamo.reset()
    net = ens.net
    p0 = net.init(1)
    torch.testing.assert_close(torch.compile(net, fullgraph=True)(p0, x), net(p0, x))


def test_state_independent_scale_output_and_gradient():
    from funcrl.nn import MLP, StateIndependentScale

    net = StateIndependentScale(MLP(3, 2, num_cells=(8,)), 2, init_value=-2.0)
    p = net.init(0)
    torch.testing.assert_close(p["scale"], torch.full((2,), -2.0))
    x = torch.randn(5, 4, 3)
    out = net(p, x)
    assert out.shape == (5, 4, 4)
    torch.testing.assert_close(out[..., :2], MLP(3, 2, num_cells=(8,))(p["net"], x))
    torch.testing.assert_close(out[..., 2:], torch.full((5, 4, 2), -2.0))  # input-independent
    g = torch.func.grad(lambda s: net({**p, "scale": s}, x)[..., 2:].sum())(p["scale"])
    torch.testing.assert_close(g, torch.full((2,), 20.0))  # one per sample: 5 x 4


def test_state_independent_scale_is_sb3s_diagonal_gaussian():
    # SB3's continuous policy: Normal(action_net(latent), exp(log_std)), log_std a parameter
    # (log_std_init); with scale_mapping="exp" the same log-prob and entropy.
    from stable_baselines3.common.distributions import DiagGaussianDistribution

    from funcrl.distributions import IndependentNormal, NormalParamExtractor
    from funcrl.nn import MLP, StateIndependentScale

    torch.manual_seed(0)
    net = StateIndependentScale(MLP(3, 2, num_cells=(8,)), 2, init_value=-2.0)
    p = {**net.init(1), "scale": torch.tensor([-2.0, -0.5])}
    x, a = torch.randn(6, 3), torch.randn(6, 2)
    loc, scale = NormalParamExtractor("exp", 1e-4)(net(p, x))
    ours = IndependentNormal(loc, scale)
    ref = DiagGaussianDistribution(2).proba_distribution(loc, p["scale"])
    torch.testing.assert_close(ours.log_prob(a), ref.log_prob(a))
    torch.testing.assert_close(ours.entropy(), ref.entropy())


def test_state_independent_scale_rejects_bad_config_and_output():
    from funcrl.nn import MLP, StateIndependentScale

    with pytest.raises(ValueError, match="StateIndependentScale: action_dim must be >= 1, got 0"):
        StateIndependentScale(MLP(3, 2), 0)
    with pytest.raises(TypeError, match="StateIndependentScale: action_dim must be an int"):
        StateIndependentScale(MLP(3, 2), 2.0)
    with pytest.raises(TypeError, match="StateIndependentScale: net must be a funcrl net"):
        StateIndependentScale(torch.nn.Linear(3, 2), 2)
    net = StateIndependentScale(MLP(3, 3, num_cells=(4,)), 2)
    p = {"net": MLP(3, 3, num_cells=(4,)).init(0), "scale": torch.zeros(2)}
    with pytest.raises(ValueError, match="StateIndependentScale"):
        net(p, torch.randn(2, 3))


@pytest.mark.parametrize("mapping", ["exp", "softplus", "biased_softplus_1.0"])
def test_state_independent_scale_matches_tensordicts_module(mapping):
    # tensordict.nn.AddStateIndependentNormalScale (TorchRL's): (loc, mapping(param).clamp_min(lb)).
    from tensordict.nn import AddStateIndependentNormalScale

    from funcrl.distributions import NormalParamExtractor
    from funcrl.nn import MLP, StateIndependentScale

    net = StateIndependentScale(MLP(3, 2, num_cells=(8,)), 2, init_value=-0.7)
    p = net.init(2)
    ref = AddStateIndependentNormalScale(2, scale_mapping=mapping, scale_lb=1e-4, init_value=-0.7)
    x = torch.randn(5, 3)
    loc, scale = NormalParamExtractor(mapping, 1e-4)(net(p, x))
    want_loc, want_scale = ref(MLP(3, 2, num_cells=(8,))(p["net"], x))
    torch.testing.assert_close(loc, want_loc)
    torch.testing.assert_close(scale, want_scale)


def test_state_independent_scale_vmaps_over_members_and_compiles():
    from funcrl import tree
    from funcrl.nn import MLP, StateIndependentScale

    net = StateIndependentScale(MLP(3, 2, num_cells=(8,)), 2, init_value=-1.0)
    members = [{**net.init(s), "scale": torch.full((2,), float(s))} for s in (0, 1, 2)]
    x = torch.randn(4, 3)
    batched = torch.func.vmap(net, in_dims=(0, None))(tree.stack(members), x)
    for s, p in enumerate(members):
        torch.testing.assert_close(batched[s], net(p, x))
    torch._dynamo.reset()
    compiled = torch.compile(net, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(members[1], x), net(members[1], x))
