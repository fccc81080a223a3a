import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from funcrl.nn import BatchRenorm1d
from funcrl.nn.batch_renorm import renorm_factors, warmup_factor


def test_renorm_factors_hand_computed():
    bm = torch.tensor([1.0, 0.0, 100.0])
    bs = torch.tensor([2.0, 0.1, 1.0])
    rm = torch.tensor([0.0, 0.0, 0.0])
    rs = torch.tensor([1.0, 1.0, 1.0])
    r, d = renorm_factors(bm, bs, rm, rs, max_r=3.0, max_d=5.0)
    torch.testing.assert_close(r, torch.tensor([2.0, 1 / 3.0, 1.0]))
    torch.testing.assert_close(d, torch.tensor([1.0, 0.0, 5.0]))


def test_warmup_factor():
    s = torch.tensor([0, 5, 9, 10, 25], dtype=torch.int64)
    torch.testing.assert_close(warmup_factor(s, 10, False), torch.tensor([0.0, 0, 0, 1, 1]))
    torch.testing.assert_close(warmup_factor(s, 10, True), torch.tensor([0.0, 0.5, 0.9, 1, 1]))


def test_train_step_hand_computed():
    bn = BatchRenorm1d(1, momentum=0.5, warmup_steps=0, eps=0.0)
    params, state = bn.init(0), bn.init_state()
    state = {**state, "running_mean": torch.tensor([1.0]), "running_var": torch.tensor([4.0])}
    x = torch.tensor([[0.0], [2.0]])  # mean 1, biased var 1, unbiased var 2
    y, new = bn(params, state, x, train=True)
    # r = 1 / 2, d = (1 - 1) / 2 = 0: y = (x - 1) / 1 * 0.5
    torch.testing.assert_close(y, torch.tensor([[-0.5], [0.5]]))
    torch.testing.assert_close(new["running_mean"], torch.tensor([1.0]))
    torch.testing.assert_close(new["running_var"], torch.tensor([3.0]))
    assert int(new["steps"]) == 1
    y_eval, same = bn(params, new, x, train=False)
    torch.testing.assert_close(y_eval, (x - 1.0) / math.sqrt(3.0))
    assert same is new


def test_warmup_is_batchnorm():
    bn = BatchRenorm1d(4, warmup_steps=100)
    params, state = bn.init(0), bn.init_state()
    x = torch.randn(16, 4) * 3 + 2
    y, _ = bn(params, state, x, train=True)
    ref = torch.nn.functional.batch_norm(x, None, None, training=True, eps=bn.eps)
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("smooth", [False, True])
@pytest.mark.parametrize("shape", [(8, 3), (6, 3, 5)])
def test_parity_torchrl(smooth, shape):
    torchrl = pytest.importorskip("torchrl", reason="TorchRL parity reference")
    from torchrl.modules.models.batchrenorm import BatchRenorm1d as RefBRN

    torch.manual_seed(0)
    kw = dict(momentum=0.2, eps=1e-5, max_r=1.5, max_d=0.5, warmup_steps=3, smooth=smooth)
    ref = RefBRN(3, **kw)
    with torch.no_grad():
        ref.weight.copy_(torch.randn(3))
        ref.bias.copy_(torch.randn(3))
    bn = BatchRenorm1d(3, **kw)
    params = {"weight": ref.weight.detach().clone(), "bias": ref.bias.detach().clone()}
    state = bn.init_state()
    # warmup_steps + 1 calls: factors 0, 0, 0, 1 (or 0, 1/3, 2/3, 1 when smooth). Later, TorchRL's
    # uncapped counter makes its factor exceed 1 (see warmup_factor); funcrl caps it.
    for step in range(4):
        x = torch.randn(*shape) * (1 + step) + step
        ref.train()
        y_ref = ref(x)
        y, state = bn(params, state, x, train=True)
        torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(state["running_mean"], ref.running_mean, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(state["running_var"], ref.running_var, atol=1e-5, rtol=1e-5)
        assert int(state["steps"]) == min(int(ref.num_batches_tracked), 3)
    ref.eval()
    x = torch.randn(*shape)
    y, _ = bn(params, state, x, train=False)
    torch.testing.assert_close(y, ref(x), atol=1e-5, rtol=1e-5)
    del torchrl


def test_gradients_match_torchrl():
    pytest.importorskip("torchrl", reason="TorchRL parity reference")
    from torchrl.modules.models.batchrenorm import BatchRenorm1d as RefBRN

    torch.manual_seed(1)
    ref = RefBRN(3, warmup_steps=0, max_r=1.2, max_d=0.3)
    bn = BatchRenorm1d(3, warmup_steps=0, max_r=1.2, max_d=0.3)
    x = torch.randn(10, 3) * 2 + 1
    xr = x.clone().requires_grad_(True)
    ref(xr).pow(2).sum().backward()

    def loss(p, x):
        y, _ = bn(p, bn.init_state(), x, train=True)
        return y.pow(2).sum()

    params = bn.init(0)
    gp, gx = torch.func.grad(loss, argnums=(0, 1))(params, x)
    torch.testing.assert_close(gx, xr.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gp["weight"], ref.weight.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gp["bias"], ref.bias.grad, atol=1e-5, rtol=1e-5)


def test_steps_capped_after_warmup():
    bn = BatchRenorm1d(2, warmup_steps=2)
    params, state = bn.init(0), bn.init_state()
    for _ in range(5):
        _, state = bn(params, state, torch.randn(4, 2), train=True)
    assert int(state["steps"]) == 2


@settings(max_examples=20, deadline=None)
@given(
    n=st.integers(2, 8),
    scale=st.floats(0.01, 100.0),
    shift=st.floats(-50.0, 50.0),
)
def test_renorm_output_bounded(n, scale, shift):
    # After warm-up the output is (x - mu_B)/sigma_B * r + d with |d| <= max_d and r <= max_r,
    # so |y| <= sqrt(n - 1) * max_r + max_d whatever the input scale.
    bn = BatchRenorm1d(3, warmup_steps=0, max_r=2.0, max_d=1.0)
    x = torch.randn(n, 3, generator=torch.Generator().manual_seed(n)) * scale + shift
    y, state = bn(bn.init(0), bn.init_state(), x, train=True)
    assert torch.isfinite(y).all()
    assert (y.abs() <= math.sqrt(n - 1) * 2.0 + 1.0 + 1e-3).all()
    assert torch.isfinite(state["running_var"]).all()


def test_vmap_over_ensemble_matches_loop():
    bn = BatchRenorm1d(4, warmup_steps=1)
    params = {"weight": torch.randn(3, 4), "bias": torch.randn(3, 4)}
    state = {k: torch.stack([v] * 3) for k, v in bn.init_state().items()}
    x = torch.randn(3, 8, 4)

    def f(p, s, x):
        return bn(p, s, x, train=True)

    y, new = torch.func.vmap(f)(params, state, x)
    for i in range(3):
        yi, si = f({k: v[i] for k, v in params.items()}, {k: v[i] for k, v in state.items()}, x[i])
        torch.testing.assert_close(y[i], yi)
        torch.testing.assert_close(new["running_var"][i], si["running_var"])
        assert int(new["steps"][i]) == int(si["steps"])


def test_compile_fullgraph():
    torch._dynamo.reset()
    bn = BatchRenorm1d(3, warmup_steps=2)
    params, state = bn.init(0), bn.init_state()

    def two_steps(p, s, x):
        y, s = bn(p, s, x, train=True)
        y, s = bn(p, s, y, train=True)
        return y, s

    x = torch.randn(5, 3)
    y_c, s_c = torch.compile(two_steps, fullgraph=True)(params, state, x)
    y_e, s_e = two_steps(params, state, x)
    torch.testing.assert_close(y_c, y_e, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(s_c["running_mean"], s_e["running_mean"])
    assert int(s_c["steps"]) == int(s_e["steps"]) == 2


def test_errors():
    bn = BatchRenorm1d(3)
    with pytest.raises(ValueError, match="num_features=3"):
        bn(bn.init(0), bn.init_state(), torch.randn(4, 2), train=True)
    with pytest.raises(ValueError, match="at least 2"):
        bn(bn.init(0), bn.init_state(), torch.randn(1, 3), train=True)
    with pytest.raises(ValueError, match="max_r"):
        BatchRenorm1d(3, max_r=0.5)
