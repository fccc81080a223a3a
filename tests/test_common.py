import pytest
import torch

from funcrl.objectives.common import reduce_loss


def test_reduce_loss_hand_values():
    x = torch.tensor([1.0, 2.0, 6.0])
    assert reduce_loss(x, "mean").item() == pytest.approx(3.0)
    assert reduce_loss(x, "sum").item() == pytest.approx(9.0)
    assert torch.equal(reduce_loss(x, "none"), x)
    w = torch.tensor([1.0, 0.0, 3.0])
    # Weighted mean: (1*1 + 0*2 + 3*6) / (1 + 0 + 3) = 19 / 4.
    assert reduce_loss(x, "mean", w).item() == pytest.approx(4.75)
    assert reduce_loss(x, "sum", w).item() == pytest.approx(19.0)
    assert torch.equal(reduce_loss(x, "none", w), torch.tensor([1.0, 0.0, 18.0]))


def test_reduce_loss_errors():
    with pytest.raises(ValueError, match="reduction must be one of"):
        reduce_loss(torch.ones(2), "max")
    with pytest.raises(ValueError, match=r"weights shape \(3,\) != loss shape \(2,\)"):
        reduce_loss(torch.ones(2), "mean", torch.ones(3))


def test_spec_size_integers_specs_and_errors():
    import gymnasium
    import numpy as np

    from funcrl import discrete_sac, specs
    from funcrl.objectives.common import spec_size

    assert spec_size(5, "o", "n") == 5 and spec_size(np.int64(5), "o", "n") == 5
    assert spec_size(specs.Unbounded(shape=(3,)), "o", "n") == 3
    assert spec_size(specs.Unbounded(shape=()), "o", "n") == 1  # a scalar continuous feature
    assert spec_size(specs.OneHot(4), "o", "n") == 4
    with pytest.raises(ValueError, match=r"o: n is a scalar discrete spec \(Categorical with n=4"):
        spec_size(specs.Categorical(4), "o", "n")
    with pytest.raises(TypeError, match="o: n must be an int or a spec with .shape, got a Tensor"):
        spec_size(torch.tensor(5), "o", "n")
    with pytest.raises(TypeError, match="got a bool"):
        spec_size(True, "o", "n")
    with pytest.raises(TypeError, match="got str"):
        spec_size("5", "o", "n")
    # gymnasium's Discrete has a NumPy n: the discrete SAC nets get 4 actions, not 1.
    params = discrete_sac.init(0, 3, gymnasium.spaces.Discrete(4))
    assert params["actor"]["layers"][-1]["weight"].shape[0] == 4
