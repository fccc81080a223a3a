import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from funcrl.nn import (
    Conv3dNet,
    ConvNet,
    SquashDims,
    Squeeze2dLayer,
    SqueezeLayer,
    conv_output_size,
    from_module,
    squeeze,
)


def test_conv_output_size_hand_computed():
    assert conv_output_size(84, 8, 4, 0) == 20
    assert conv_output_size(20, 4, 2, 0) == 9
    assert conv_output_size(9, 3, 1, 1) == 9


def test_defaults_and_shapes():
    net = ConvNet(in_features=3)
    assert net.n_layers == 3 and net.channels == (32, 32, 32)
    p = net.init(0)
    assert [lp["weight"].shape for lp in p["layers"]] == [(32, 3, 3, 3), (32, 32, 3, 3)] + [
        (32, 32, 3, 3)
    ]
    x = torch.randn(2, 5, 3, 10, 12)
    assert net(p, x).shape == (2, 5, 32 * 4 * 6)
    assert net.output_shape((10, 12)) == (32 * 4 * 6,)
    assert net(p, x[0, 0]).shape == (32 * 4 * 6,)  # no batch dim
    assert ConvNet(3, num_cells=(4, 5)).n_layers == 2
    assert ConvNet(3, depth=2).channels == (32, 32)
    rect = ConvNet(2, num_cells=(4,), kernel_sizes=((2, 3),))
    assert rect.init(0)["layers"][0]["weight"].shape == (4, 2, 2, 3)


def test_single_layer_hand_computed():
    net = ConvNet(1, num_cells=(1,), kernel_sizes=2, activation="identity")
    params = {"layers": [{"weight": torch.ones(1, 1, 2, 2), "bias": torch.tensor([1.0])}]}
    x = torch.arange(9.0).reshape(1, 3, 3)
    # 2x2 box sums of [[0,1,2],[3,4,5],[6,7,8]] are 8, 12, 20, 24; plus bias 1.
    torch.testing.assert_close(net(params, x), torch.tensor([9.0, 13.0, 21.0, 25.0]))


def test_squeeze_layers():
    x = torch.randn(4, 3, 1, 1)
    assert Squeeze2dLayer()({}, x).shape == (4, 3)
    assert SqueezeLayer((-1,))({}, torch.randn(2, 1)).shape == (2,)
    assert SquashDims(3)({}, torch.randn(2, 3, 4, 5)).shape == (2, 60)
    with pytest.raises(ValueError, match="size 1"):
        squeeze(torch.randn(2, 3), (-1,))
    with pytest.raises(ValueError, match="< 0"):
        SqueezeLayer((1,))


def test_avg_pool_squeeze_and_norm():
    net = ConvNet(3, num_cells=(4, 6), aggregator="avg_pool", squeeze_output=True, norm="layer")
    p = net.init(0)
    assert set(p) == {"layers", "norms"}
    x = torch.randn(7, 3, 9, 9)
    y = net(p, x)
    assert y.shape == (7, 6) and net.output_shape((9, 9)) == (6,)
    inst = ConvNet(3, num_cells=(4,), aggregator=None, norm="instance", activation="relu")
    out = inst(inst.init(0), x)
    torch.testing.assert_close(out.mean((-2, -1)), torch.zeros(7, 4), atol=1e-5, rtol=0)


@settings(max_examples=15, deadline=None)
@given(
    h=st.integers(10, 14),
    w=st.integers(10, 14),
    k=st.integers(1, 3),
    s=st.integers(1, 2),
    pad=st.integers(0, 1),
)
def test_output_shape_matches_call(h, w, k, s, pad):
    net = ConvNet(2, num_cells=(3, 4), kernel_sizes=k, strides=s, paddings=pad, aggregator=None)
    y = net(net.init(0), torch.randn(2, 2, h, w))
    assert tuple(y.shape[1:]) == net.output_shape((h, w))


@pytest.mark.parametrize("agg", ["squash", "avg_pool"])
def test_parity_torchrl_convnet(agg):
    pytest.importorskip("torchrl", reason="TorchRL parity reference")
    from torchrl.modules import ConvNet as RefConvNet

    kw = {}
    if agg == "avg_pool":
        kw = dict(
            aggregator_class=torch.nn.AdaptiveAvgPool2d,
            aggregator_kwargs={"output_size": (1, 1)},
            squeeze_output=True,
        )
    ref = RefConvNet(
        in_features=3, num_cells=[8, 16], kernel_sizes=[4, 3], strides=[2, 1], paddings=[0, 1], **kw
    )
    net = ConvNet(
        3,
        num_cells=(8, 16),
        kernel_sizes=(4, 3),
        strides=(2, 1),
        paddings=(0, 1),
        aggregator=agg,
        squeeze_output=agg == "avg_pool",
    )
    params = from_module(ref)
    x = torch.randn(2, 3, 3, 16, 16)
    torch.testing.assert_close(net(params, x), ref(x), atol=1e-6, rtol=1e-6)


def test_parity_torchrl_conv3d_and_torch_init_rule():
    pytest.importorskip("torchrl", reason="TorchRL parity reference")
    from torchrl.modules import Conv3dNet as RefConv3d

    ref = RefConv3d(in_features=2, num_cells=[4, 5], kernel_sizes=[2, 3])
    net = Conv3dNet(2, num_cells=(4, 5), kernel_sizes=(2, 3))
    x = torch.randn(3, 2, 6, 7, 8)
    torch.testing.assert_close(net(from_module(ref), x), ref(x), atol=1e-6, rtol=1e-6)
    # Same init bound as torch.nn.Conv3d: U(+-1/sqrt(fan_in)).
    w = net.init(0)["layers"][1]["weight"]
    bound = 1 / (4 * 27) ** 0.5
    assert w.abs().max() <= bound and w.abs().max() > 0.8 * bound


def test_vmap_and_compile():
    net = ConvNet(2, num_cells=(3,), kernel_sizes=3)
    params = torch.func.vmap(lambda s: net.init(0), randomness="same")(torch.arange(2))
    params = {
        "layers": [{k: v + torch.randn_like(v) * 0.1 for k, v in params["layers"][0].items()}]
    }
    x = torch.randn(4, 2, 5, 5)
    ys = torch.func.vmap(net, in_dims=(0, None))(params, x)
    for i in range(2):
        pi = {"layers": [{k: v[i] for k, v in params["layers"][0].items()}]}
        torch.testing.assert_close(ys[i], net(pi, x))
    torch._dynamo.reset()
    p0 = net.init(0)
    torch.testing.assert_close(torch.compile(net, fullgraph=True)(p0, x), net(p0, x))


def test_errors():
    net = ConvNet(3, num_cells=(4,))
    with pytest.raises(
        ValueError,
        match=r"ConvNet\(.*\): input x has shape \(2, 4, 8, 8\), expected \[\.\.\., 3, \*, \*\]",
    ):
        net(net.init(0), torch.randn(2, 4, 8, 8))
    with pytest.raises(ValueError, match="kernel_sizes"):
        ConvNet(3, num_cells=(4, 4), kernel_sizes=(3,))
    with pytest.raises(ValueError, match="aggregator"):
        ConvNet(3, aggregator="max")
    with pytest.raises(ValueError, match="too small"):
        net.output_shape((2, 2))
