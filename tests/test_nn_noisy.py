import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from funcrl.nn import MLP, NoisyLinear, sample_noise
from funcrl.nn.noisy import noisy_weights, scale_noise


def test_scale_noise_hand_computed():
    x = torch.tensor([4.0, -9.0, 0.0, 0.25])
    torch.testing.assert_close(scale_noise(x), torch.tensor([2.0, -3.0, 0.0, 0.5]))


def test_init_matches_torchrl_rule():
    layer = NoisyLinear(16, 4, std_init=0.5)
    p = layer.init(0)
    assert set(p) == {"weight_mu", "weight_sigma", "bias_mu", "bias_sigma"}
    assert p["weight_mu"].shape == (4, 16) and p["bias_mu"].shape == (4,)
    assert p["weight_mu"].abs().max() <= 1 / math.sqrt(16)
    assert p["bias_mu"].abs().max() <= 1 / math.sqrt(16)
    torch.testing.assert_close(p["weight_sigma"], torch.full((4, 16), 0.5 / 4.0))
    torch.testing.assert_close(p["bias_sigma"], torch.full((4,), 0.5 / 2.0))
    assert set(NoisyLinear(3, 2, bias=False).init(0)) == {"weight_mu", "weight_sigma"}
    torch.testing.assert_close(layer.init(1)["weight_mu"], layer.init(1)["weight_mu"])


def test_noisy_weights_hand_computed():
    params = {
        "weight_mu": torch.zeros(2, 3),
        "weight_sigma": torch.ones(2, 3),
        "bias_mu": torch.tensor([1.0, 2.0]),
        "bias_sigma": torch.tensor([0.5, 0.5]),
    }
    noise = {"epsilon_in": torch.tensor([1.0, 2.0, 3.0]), "epsilon_out": torch.tensor([1.0, -1.0])}
    w, b = noisy_weights(params, noise)
    torch.testing.assert_close(w, torch.tensor([[1.0, 2.0, 3.0], [-1.0, -2.0, -3.0]]))
    torch.testing.assert_close(b, torch.tensor([1.5, 1.5]))
    w0, b0 = noisy_weights(params, None)
    assert w0 is params["weight_mu"] and b0 is params["bias_mu"]


def test_noise_statistics():
    layer = NoisyLinear(200, 300)
    noise = sample_noise(layer, torch.Generator().manual_seed(0))
    eps = torch.cat([noise["epsilon_in"], noise["epsilon_out"]])
    # f(z) = sign(z) sqrt|z| with z ~ N(0, 1): mean 0, E[f^2] = E|z| = sqrt(2 / pi).
    assert abs(eps.mean().item()) < 0.1
    assert abs(eps.pow(2).mean().item() - math.sqrt(2 / math.pi)) < 0.06
    # Same generator seed, same noise; the global RNG is untouched by a generator draw.
    state = torch.get_rng_state()
    again = sample_noise(layer, 0)
    torch.testing.assert_close(again["epsilon_in"], noise["epsilon_in"])
    assert torch.equal(state, torch.get_rng_state())
    torch.manual_seed(3)
    a = sample_noise(layer)
    torch.manual_seed(3)
    torch.testing.assert_close(sample_noise(layer)["epsilon_out"], a["epsilon_out"])


@settings(max_examples=15, deadline=None)
@given(n_in=st.integers(1, 6), n_out=st.integers(1, 6), seed=st.integers(0, 1000))
def test_effective_weight_is_rank_one_perturbation(n_in, n_out, seed):
    layer = NoisyLinear(n_in, n_out)
    params = layer.init(seed)
    noise = sample_noise(layer, seed)
    w, _ = noisy_weights(params, noise)
    delta = (w - params["weight_mu"]) / params["weight_sigma"]
    assert torch.linalg.matrix_rank(delta.double(), rtol=1e-4) <= 1


def test_parity_torchrl_given_same_epsilon():
    pytest.importorskip("torchrl", reason="TorchRL parity reference")
    from torchrl.envs.utils import ExplorationType, set_exploration_type
    from torchrl.modules import NoisyLinear as RefNoisy

    torch.manual_seed(0)
    ref = RefNoisy(5, 3, std_init=0.3)
    layer = NoisyLinear(5, 3, std_init=0.3)
    params = {k: v.detach().clone() for k, v in ref.named_parameters()}
    noise = sample_noise(layer, 7)
    with torch.no_grad():
        ref.weight_epsilon.copy_(torch.outer(noise["epsilon_out"], noise["epsilon_in"]))
        ref.bias_epsilon.copy_(noise["epsilon_out"])
    x = torch.randn(4, 5)
    with set_exploration_type(ExplorationType.RANDOM):
        torch.testing.assert_close(layer(params, x, noise), ref(x), atol=1e-6, rtol=1e-6)
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        torch.testing.assert_close(layer(params, x), ref(x), atol=1e-6, rtol=1e-6)
    # TorchRL's own reset_noise draws f(randn(in)) then f(randn(out)) from the global RNG.
    torch.manual_seed(11)
    ref.reset_noise()
    torch.manual_seed(11)
    mine = sample_noise(layer)
    torch.testing.assert_close(ref.bias_epsilon, mine["epsilon_out"])
    torch.testing.assert_close(
        ref.weight_epsilon, torch.outer(mine["epsilon_out"], mine["epsilon_in"])
    )


def test_noisy_mlp_and_grad():
    mlp = MLP(4, 2, num_cells=(8,), layer_class="noisy", std_init=0.4)
    params = mlp.init(0)
    assert set(params["layers"][0]) == {"weight_mu", "weight_sigma", "bias_mu", "bias_sigma"}
    noise = sample_noise(mlp, 0)
    assert [n["epsilon_in"].shape[0] for n in noise["layers"]] == [4, 8]
    x = torch.randn(3, 4)
    y = mlp(params, x, noise=noise)
    y_mean = mlp(params, x)
    assert not torch.allclose(y, y_mean)
    manual = torch.tanh(NoisyLinear(4, 8)(params["layers"][0], x, noise["layers"][0]))
    manual = NoisyLinear(8, 2)(params["layers"][1], manual, noise["layers"][1])
    torch.testing.assert_close(y, manual)
    grads = torch.func.grad(lambda p: mlp(p, x, noise=noise).sum())(params)
    assert grads["layers"][0]["weight_sigma"].abs().sum() > 0
    with pytest.raises(TypeError, match="noisy"):
        sample_noise(MLP(4, 2))


def test_noisy_mlp_parity_torchrl():
    pytest.importorskip("torchrl", reason="TorchRL parity reference")
    from torchrl.envs.utils import ExplorationType, set_exploration_type
    from torchrl.modules import MLP as RefMLP
    from torchrl.modules import NoisyLinear as RefNoisy

    from funcrl.nn import from_module

    ref = RefMLP(in_features=4, out_features=2, num_cells=[8], layer_class=RefNoisy)
    mlp = MLP(4, 2, num_cells=(8,), layer_class="noisy")
    params = from_module(ref)
    noise = sample_noise(mlp, 3)
    with torch.no_grad():
        for lin, n in zip([ref[0], ref[2]], noise["layers"]):
            lin.weight_epsilon.copy_(torch.outer(n["epsilon_out"], n["epsilon_in"]))
            lin.bias_epsilon.copy_(n["epsilon_out"])
    x = torch.randn(5, 4)
    with set_exploration_type(ExplorationType.RANDOM):
        torch.testing.assert_close(mlp(params, x, noise=noise), ref(x), atol=1e-6, rtol=1e-6)


def test_vmap_different_noise_and_compile():
    layer = NoisyLinear(3, 2)
    params = layer.init(0)
    x = torch.randn(4, 3)

    def f(p, x):
        return layer(p, x, sample_noise(layer))

    ys = torch.func.vmap(f, in_dims=(None, 0), randomness="different")(params, x.expand(2, 4, 3))
    assert not torch.allclose(ys[0], ys[1])
    torch._dynamo.reset()
    torch.manual_seed(0)
    y_c = torch.compile(lambda p, x, n: layer(p, x, n), fullgraph=True)(
        params, x, sample_noise(layer, 1)
    )
    torch.testing.assert_close(y_c, layer(params, x, sample_noise(layer, 1)))


def test_bad_input():
    with pytest.raises(ValueError, match="in_features=3"):
        NoisyLinear(3, 2)(NoisyLinear(3, 2).init(0), torch.randn(2, 4))
    with pytest.raises(TypeError, match="NoisyLinear"):
        sample_noise(object())
