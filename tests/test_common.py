import pytest
import torch

from funcrl._common import reduce_loss


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
