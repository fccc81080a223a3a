import pytest
import torch
from torch import nn

from funcrl import tree
from funcrl.nn import (
    MLP,
    ConvNet,
    Ensemble,
    Linear,
    TorchModule,
    from_module,
    from_torchrl,
    module_layout,
    to_module,
)


def _assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_linear_roundtrip():
    lin = nn.Linear(3, 2)
    p = from_module(lin)
    assert set(p) == {"weight", "bias"} and p["weight"] is not lin.weight
    x = torch.randn(4, 3)
    torch.testing.assert_close(Linear(3, 2)(p, x), lin(x))
    other = nn.Linear(3, 2)
    to_module(p, other)
    _assert_same_state(lin, other)


def test_sequential_maps_to_mlp_layout():
    seq = nn.Sequential(nn.Linear(3, 8), nn.LayerNorm(8), nn.ReLU(), nn.Linear(8, 2))
    assert [path for path, _ in module_layout(seq)] == [
        ("layers", 0, "weight"),
        ("layers", 0, "bias"),
        ("norms", 0, "weight"),
        ("norms", 0, "bias"),
        ("layers", 1, "weight"),
        ("layers", 1, "bias"),
    ]
    with torch.no_grad():
        seq[1].weight.uniform_()
    mlp = MLP(3, 2, num_cells=(8,), activation="relu", norm="layer")
    x = torch.randn(5, 3)
    torch.testing.assert_close(mlp(from_module(seq), x), seq(x), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("norm", [False, True])
def test_torchrl_mlp_parity_and_roundtrip(norm):
    pytest.importorskip("torchrl", reason="TorchRL parity reference")
    from torchrl.modules import MLP as RefMLP

    kw = dict(norm_class=nn.LayerNorm, norm_kwargs={"normalized_shape": 16}) if norm else {}
    ref = RefMLP(
        in_features=5,
        out_features=(2, 3),
        num_cells=[16, 16],
        activation_class=nn.ELU,
        activate_last_layer=not norm,
        **kw,
    )
    if norm:
        with torch.no_grad():
            ref[1].weight.normal_()  # non-trivial norm params
    net, params = from_torchrl(ref)
    assert isinstance(net, MLP) and net.out_shape == (2, 3) and net.activation == "elu"
    assert net.norm == ("layer" if norm else None)
    x = torch.randn(4, 7, 5)
    torch.testing.assert_close(net(params, x), ref(x), atol=1e-6, rtol=1e-6)
    # Load funcrl params (here: a fresh init) back: identical state dicts and outputs.
    fresh = net.init(3)
    other = RefMLP(
        in_features=5,
        out_features=(2, 3),
        num_cells=[16, 16],
        activation_class=nn.ELU,
        activate_last_layer=not norm,
        **kw,
    )
    to_module(fresh, other)
    torch.testing.assert_close(other(x), net(fresh, x), atol=1e-6, rtol=1e-6)
    to_module(from_module(ref), other)
    _assert_same_state(ref, other)


def test_torchrl_mlp_norm_on_activated_last_layer():
    # TorchRL norms the output layer too when it is activated; funcrl's MLP matches. The widths
    # differ (8, 8, then 6 outputs) so the output norm's size cannot pass for a hidden one.
    pytest.importorskip("torchrl", reason="TorchRL parity reference")
    from torchrl.modules import MLP as RefMLP

    def make():
        return RefMLP(
            in_features=5,
            out_features=6,
            num_cells=[8, 8],
            activation_class=nn.Tanh,
            activate_last_layer=True,
            norm_class=nn.LayerNorm,
            norm_kwargs=[{"normalized_shape": 8}, {"normalized_shape": 8}, {"normalized_shape": 6}],
        )

    ref = make()
    with torch.no_grad():
        for m in ref:
            if isinstance(m, nn.LayerNorm):
                m.weight.normal_()
                m.bias.normal_()
    net, params = from_torchrl(ref)
    assert net.norm_sizes == (8, 8, 6) and len(params["norms"]) == 3
    assert [tuple(n["weight"].shape) for n in net.init(0)["norms"]] == [(8,), (8,), (6,)]
    x = torch.randn(4, 5)
    torch.testing.assert_close(net(params, x), ref(x), atol=1e-6, rtol=1e-6)
    other = make()
    to_module(params, other)
    _assert_same_state(ref, other)
    # Params in the old layout (hidden norms only) get a clear error, not an IndexError.
    with pytest.raises(
        ValueError, match=r"MLP\(.*norm='layer'\): params\['norms'\]: expected 3 entries, got 2"
    ):
        net({**params, "norms": params["norms"][:2]}, x)


def test_torchrl_convnet_parity():
    pytest.importorskip("torchrl", reason="TorchRL parity reference")
    from torchrl.modules import ConvNet as RefConvNet

    ref = RefConvNet(in_features=3, num_cells=[4, 8], kernel_sizes=[3, 3], strides=[2, 1])
    net, params = from_torchrl(ref)
    assert isinstance(net, ConvNet) and net.aggregator == "squash"
    x = torch.randn(2, 3, 11, 11)
    torch.testing.assert_close(net(params, x), ref(x), atol=1e-6, rtol=1e-6)
    other = RefConvNet(in_features=3, num_cells=[4, 8], kernel_sizes=[3, 3], strides=[2, 1])
    to_module(params, other)
    _assert_same_state(ref, other)


def test_to_module_errors():
    lin = nn.Linear(3, 2)
    with pytest.raises(ValueError, match="'weight' has shape"):
        to_module({"weight": torch.zeros(2, 4), "bias": torch.zeros(2)}, lin)
    with pytest.raises(KeyError, match="bias"):
        to_module({"weight": torch.zeros(2, 3)}, lin)
    with pytest.raises(TypeError, match="TorchModule"):
        from_module(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)))


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(3, 8), nn.Tanh())
        self.scale = nn.Parameter(torch.tensor(2.0))
        self.register_buffer("offset", torch.tensor([0.5, -0.5]))
        self.head = nn.Linear(8, 2)

    def forward(self, x, y=None):
        out = self.head(self.body(x)) * self.scale + self.offset
        return out if y is None else out + y


def test_torch_module_wrapper_call_grad_and_init():
    m = _Net()
    net = TorchModule(m)
    params = net.init()
    assert set(params) == {"body.0.weight", "body.0.bias", "scale", "offset", "head.weight"} | {
        "head.bias"
    }
    x = torch.randn(4, 3)
    torch.testing.assert_close(net(params, x), m(x))
    torch.testing.assert_close(net(params, x, y=torch.ones(2)), m(x) + 1)
    grads = torch.func.grad(lambda p: net(p, x).sum())(params)
    m(x).sum().backward()
    torch.testing.assert_close(grads["head.weight"], m.head.weight.grad)
    # Seeded init: deterministic, differs from the module's, leaves the global RNG alone.
    rng = torch.get_rng_state()
    a, b = net.init(1), net.init(1)
    assert torch.equal(rng, torch.get_rng_state())
    assert tree.allclose(a, b)
    assert not torch.equal(a["head.weight"], params["head.weight"])
    assert net.init(2, dtype=torch.float64)["head.weight"].dtype == torch.float64
    # Static part hashed by identity.
    assert hash(net) == hash(net) and net != TorchModule(m) and {net: 1}[net] == 1


def test_torch_module_in_ensemble_vmap_and_compile():
    net = TorchModule(_Net())
    ens = Ensemble(net, 3)
    params = ens.init(0)
    assert params["head.weight"].shape == (3, 2, 8)
    x = torch.randn(5, 3)
    y = ens(params, x)
    y_loop = Ensemble(net, 3, mode="loop")(params, x)
    torch.testing.assert_close(y, y_loop)
    assert not torch.allclose(y[0], y[1])
    torch._dynamo.reset()
    p0 = net.init()
    compiled = torch.compile(lambda p, x: net(p, x), fullgraph=True)
    torch.testing.assert_close(compiled(p0, x), net(p0, x))


def test_from_torchrl_fallback_is_torch_module():
    seq = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    seq.eval()
    net, params = from_torchrl(seq)
    assert isinstance(net, TorchModule) and "1.running_mean" in params
    x = torch.randn(3, 2)
    torch.testing.assert_close(net(params, x), seq(x))
    to_module(params, seq, layout="flat")


def test_conv_transpose_round_trip():
    m = torch.nn.Sequential(torch.nn.ConvTranspose2d(4, 3, 5, stride=2), torch.nn.ReLU())
    params = from_module(m)
    assert set(params["layers"][0]) == {"weight", "bias"}
    assert params["layers"][0]["weight"].shape == (4, 3, 5, 5)
    m2 = torch.nn.Sequential(torch.nn.ConvTranspose2d(4, 3, 5, stride=2), torch.nn.ReLU())
    to_module(params, m2)
    for (k, a), (_, b) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k
