"""PopArt and running value normalisers: hand-computed stats, TorchRL parity, output preservation."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from funcrl.modules import PopArtValueNorm, RunningValueNorm, popart_preserve, popart_update
from funcrl.nn import Linear


def test_popart_hand_computed():
    vn = PopArtValueNorm(shape=1, beta=0.5, epsilon=1e-8)
    s = vn.update(vn.init(), torch.tensor([[1.0], [3.0]]))  # batch mean 2, mean sq 5
    torch.testing.assert_close(s["running_mean"], torch.tensor([1.0]))
    torch.testing.assert_close(s["debiasing_term"], torch.tensor(0.5))
    mean, std = vn.mean_std(s)
    torch.testing.assert_close(mean, torch.tensor([2.0]))
    torch.testing.assert_close(std, torch.tensor([1.0]))  # 5 - 4
    s = vn.update(s, torch.tensor([[4.0], [4.0]]))  # m = 0.5*1 + 0.5*4, d = 0.75
    mean, _ = vn.mean_std(s)
    torch.testing.assert_close(mean, torch.tensor([2.5 / 0.75]))
    torch.testing.assert_close(
        vn.denormalize(s, vn.normalize(s, torch.tensor([7.0]))), torch.tensor([7.0])
    )


def test_running_hand_computed():
    vn = RunningValueNorm(shape=1)
    s = vn.update(vn.init(), torch.tensor([[1.0], [3.0]]))
    s = vn.update(s, torch.tensor([[5.0], [7.0], [9.0]]))
    data = torch.tensor([1.0, 3.0, 5.0, 7.0, 9.0])
    torch.testing.assert_close(s["mean"], data.mean().reshape(1))
    torch.testing.assert_close(vn.var(s), data.var(unbiased=False).reshape(1))
    assert float(s["count"]) == 5.0


@pytest.mark.parametrize("cls", ["PopArtValueNorm", "RunningValueNorm"])
def test_parity_with_torchrl(cls):
    pytest.importorskip("torchrl", reason="TorchRL is the reference implementation")
    import torchrl.modules as ref_mod

    import funcrl.modules as mine_mod

    kwargs = {"shape": 2, "beta": 0.9} if cls == "PopArtValueNorm" else {"shape": 2}
    mine, ref = getattr(mine_mod, cls)(**kwargs), getattr(ref_mod, cls)(**kwargs)
    state = mine.init()
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        target = torch.randn(16, 3, 2, generator=g) * 4 + 1
        state = mine.update(state, target)
        ref.update(target)
    x = torch.randn(5, 2, generator=g)
    torch.testing.assert_close(mine.normalize(state, x), ref.normalize(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mine.denormalize(state, x), ref.denormalize(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mine.scale(state), ref.scale(), rtol=1e-5, atol=1e-5)


def test_shape_mismatch_raises():
    vn = PopArtValueNorm(shape=1)
    with pytest.raises(ValueError, match="expected"):
        vn.update(vn.init(), torch.zeros(4, 2))


@given(st.integers(0, 2**31 - 1), st.floats(0.1, 0.99))
def test_popart_preserves_denormalised_outputs(seed, beta):
    g = torch.Generator().manual_seed(seed)
    vn = PopArtValueNorm(shape=1, beta=beta)
    head = Linear(8, 1)
    layer = {k: v.double() for k, v in head.init(seed).items()}
    state = vn.init(dtype=torch.float64)
    state = vn.update(state, torch.randn(32, 1, generator=g, dtype=torch.float64))
    h = torch.randn(10, 8, generator=g, dtype=torch.float64)
    before = vn.denormalize(state, head(layer, h))
    target = torch.randn(32, 1, generator=g, dtype=torch.float64) * 30 + 10
    new_state, new_layer = popart_update(vn, state, layer, target)
    after = vn.denormalize(new_state, head(new_layer, h))
    torch.testing.assert_close(after, before, rtol=1e-10, atol=1e-10)
    assert not torch.allclose(new_state["running_mean"], state["running_mean"])


def test_popart_preserve_multi_output_and_errors():
    vn = RunningValueNorm(shape=3)
    layer = Linear(4, 3).init(0)
    s0 = vn.update(vn.init(), torch.randn(20, 3))
    s1 = vn.update(s0, torch.randn(20, 3) * 5 + 2)
    h = torch.randn(6, 4)
    new = popart_preserve(layer, vn.mean_std(s0), vn.mean_std(s1))
    torch.testing.assert_close(
        vn.denormalize(s1, Linear(4, 3)(new, h)),
        vn.denormalize(s0, Linear(4, 3)(layer, h)),
        rtol=1e-5,
        atol=1e-5,
    )
    with pytest.raises(ValueError, match="outputs"):
        popart_preserve(Linear(4, 2).init(0), vn.mean_std(s0), vn.mean_std(s1))


def test_update_is_pure_under_vmap_and_compile():
    vn = PopArtValueNorm(shape=1, beta=0.9)
    targets = torch.randn(4, 16, 1)  # 4 independent normalisers (e.g. seeds)
    states = torch.func.vmap(lambda t: vn.update(vn.init(), t))(targets)
    for i in range(4):
        torch.testing.assert_close(
            states["running_mean"][i], vn.update(vn.init(), targets[i])["running_mean"]
        )
    torch._dynamo.reset()
    step = torch.compile(
        lambda s, t: vn.normalize(vn.update(s, t), t), fullgraph=True, backend="eager"
    )
    s = vn.init()
    torch.testing.assert_close(
        step(s, targets[0]), vn.normalize(vn.update(s, targets[0]), targets[0])
    )
