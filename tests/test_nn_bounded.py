import pytest
import torch

from funcrl import testing
from funcrl.nn import MLP, TanhBounded


def test_hand_values_and_bounds():
    # An identity-like net: one linear layer with weight 1, bias 0 on a 1-d input.
    net = MLP(1, 1)
    params = {"layers": [{"weight": torch.ones(1, 1), "bias": torch.zeros(1)}]}
    actor = TanhBounded(net, low=(-2.0,), high=(4.0,))
    x = torch.tensor([[0.0], [0.5], [100.0], [-100.0]])
    y = actor(params, x)
    # mid 1, half 3: 1 + 3 tanh(x)
    expected = 1.0 + 3.0 * torch.tanh(x)
    testing.assert_trees_all_close(y, expected)
    assert y.max() <= 4.0 and y.min() >= -2.0
    assert actor.init(0)["layers"][0]["weight"].shape == (1, 1)


def test_rejects_empty_box():
    with pytest.raises(ValueError, match="low < high"):
        TanhBounded(MLP(1, 1), low=1.0, high=1.0)


@testing.variants("eager", "vmap", "compile")
def test_variants(variant):
    actor = TanhBounded(MLP(3, 2, num_cells=(8,)), low=(-1.0, 0.0), high=(1.0, 2.0))
    params = actor.init(0)
    x = torch.randn(5, 3)
    out = variant(actor)(params, x)
    testing.assert_shape(out, (5, 2))
    testing.assert_trees_all_close(out, actor(params, x), atol=1e-6)
