"""funcrl.nn core: Linear, MLP, LayerNorm, Ensemble (pure init/apply, TorchRL semantics)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from funcrl import testing, tree
from funcrl.nn import MLP, Ensemble, LayerNorm, Linear, activation_fn, make_generator

# ---------------------------------------------------------------------------- Linear


def test_linear_layout_and_output():
    lin = Linear(3, 4)
    p = lin.init(0)
    assert set(p) == {"weight", "bias"}
    testing.assert_shape(p["weight"], (4, 3))
    testing.assert_shape(p["bias"], (4,))
    x = torch.randn(5, 2, 3)
    y = lin(p, x)
    testing.assert_shape(y, (5, 2, 4))
    testing.assert_trees_all_close(y, x @ p["weight"].T + p["bias"])
    # the same tensors drive a torch.nn.Linear
    ref = torch.nn.Linear(3, 4)
    ref.load_state_dict(p)
    testing.assert_trees_all_close(y, ref(x).detach())
    assert lin.apply(p, x).shape == y.shape


def test_linear_default_init_is_torch_uniform():
    p = Linear(16, 64).init(3)
    bound = 1 / 16**0.5
    for leaf in tree.leaves(p):
        assert leaf.abs().max() <= bound
        assert leaf.abs().max() > 0.8 * bound  # really spread over the interval
    assert p["weight"].dtype == torch.float32


def test_linear_options():
    assert set(Linear(3, 2, bias=False).init(0)) == {"weight"}
    y = Linear(3, 2, bias=False)(Linear(3, 2, bias=False).init(0), torch.zeros(3))
    assert torch.equal(y, torch.zeros(2))
    z = Linear(3, 2, init_method="zeros").init(0)
    assert all(torch.equal(v, torch.zeros_like(v)) for v in z.values())
    o = Linear(8, 4, init_method="orthogonal", gain=2.0).init(0)
    testing.assert_trees_all_close(o["weight"] @ o["weight"].T, 4.0 * torch.eye(4), atol=1e-5)
    assert torch.equal(o["bias"], torch.zeros(4))
    tall = Linear(3, 6, init_method="orthogonal").init(1)["weight"]
    testing.assert_trees_all_close(tall.T @ tall, torch.eye(3), atol=1e-5)
    # Contiguous whatever QR's layout: a step's fresh params then have the strides of the ones it
    # returns, so funcrl.jit and torch.compile trace it once, not twice.
    for shape in ((8, 4), (3, 6), (5, 5)):
        w = Linear(shape[1], shape[0], init_method="orthogonal").init(0)["weight"]
        assert w.is_contiguous(), (shape, w.stride())
    assert torch.equal(Linear(3, 2, bias_init=0.5).init(0)["bias"], torch.full((2,), 0.5))
    d = Linear(3, 2).init(0, dtype=torch.float64, device="cpu")
    assert d["weight"].dtype == torch.float64
    # same seed, same numbers whatever the dtype (drawn in float64 on CPU first)
    testing.assert_trees_all_close(d, Linear(3, 2).init(0), rtol=1e-6, atol=1e-7)


def test_linear_config_errors():
    with pytest.raises(
        ValueError, match="in_features and out_features must be positive, got 0 and 2"
    ):
        Linear(0, 2)
    with pytest.raises(
        ValueError, match="init_method must be 'default', 'orthogonal' or 'zeros', got 'xavier'"
    ):
        Linear(2, 2, init_method="xavier")


def test_layer_norm():
    ln = LayerNorm(4)
    p = ln.init(0)
    assert torch.equal(p["weight"], torch.ones(4)) and torch.equal(p["bias"], torch.zeros(4))
    x = torch.randn(3, 4)
    p = {"weight": torch.arange(1.0, 5.0), "bias": torch.full((4,), 0.5)}
    ref = torch.nn.LayerNorm(4)
    ref.load_state_dict(p)
    testing.assert_trees_all_close(ln(p, x), ref(x).detach())


# ---------------------------------------------------------------------------- MLP


def test_mlp_defaults_and_shapes():
    # TorchRL's defaults: no depth and no num_cells is a single linear layer.
    assert MLP(in_features=5, out_features=2).hidden_sizes == ()
    net = MLP(in_features=5, out_features=2, depth=3)
    assert net.hidden_sizes == (32, 32, 32)
    assert net.activation == "tanh"
    p = net.init(0)
    assert len(p["layers"]) == 4 and "norms" not in p
    testing.assert_shape([lay["weight"] for lay in p["layers"]], (None, None))
    assert [tuple(lay["weight"].shape) for lay in p["layers"]] == [
        (32, 5),
        (32, 32),
        (32, 32),
        (2, 32),
    ]
    testing.assert_shape(net(p, torch.randn(7, 5)), (7, 2))
    testing.assert_shape(net(p, torch.randn(5)), (2,))
    testing.assert_shape(net(p, torch.randn(2, 3, 5)), (2, 3, 2))


def test_mlp_depth_num_cells_semantics():
    assert MLP(3, 1, depth=2).hidden_sizes == (32, 32)
    with pytest.raises(ValueError, match="depth must be given"):
        MLP(3, 1, num_cells=16)
    assert MLP(3, 1, depth=1, num_cells=8).hidden_sizes == (8,)
    assert MLP(3, 1, num_cells=[64, 16]).hidden_sizes == (64, 16)
    assert MLP(3, 1, depth=2, num_cells=(64, 16)).hidden_sizes == (64, 16)
    single = MLP(3, 4, depth=0)
    p = single.init(0)
    assert len(p["layers"]) == 1
    x = torch.randn(2, 3)
    testing.assert_trees_all_close(single(p, x), Linear(3, 4)(p["layers"][0], x))
    with pytest.raises(ValueError, match="MLP: depth=3 but num_cells has 2 entries"):
        MLP(3, 1, depth=3, num_cells=[4, 4])


def test_mlp_out_features_as_shape():
    net = MLP(4, out_features=(3, 2), depth=1, num_cells=8)
    p = net.init(0)
    assert p["layers"][-1]["weight"].shape == (6, 8)
    y = net(p, torch.randn(5, 4))
    testing.assert_shape(y, (5, 3, 2))
    assert MLP(4, [3, 2]).out_features == (3, 2)


def test_mlp_matches_hand_computation():
    net = MLP(3, 2, num_cells=[4], activation="relu")
    p = net.init(0)
    x = torch.randn(6, 3)
    h = torch.relu(x @ p["layers"][0]["weight"].T + p["layers"][0]["bias"])
    testing.assert_trees_all_close(
        net(p, x), h @ p["layers"][1]["weight"].T + p["layers"][1]["bias"]
    )


def test_mlp_activate_last_layer_and_bias_last_layer():
    net = MLP(3, 2, depth=1, num_cells=4, activate_last_layer=True, last_layer_init_scale=50.0)
    p = net.init(0)
    y = net(p, 10 * torch.randn(100, 3))
    assert y.abs().max() <= 1.0 and y.abs().min() < 1.0  # tanh on the output, often saturated
    assert (y.abs() > 0.99).float().mean() > 0.5
    nb = MLP(3, 2, depth=1, bias_last_layer=False).init(0)
    assert "bias" not in nb["layers"][-1] and "bias" in nb["layers"][0]


def test_mlp_last_layer_init_scale():
    a = MLP(3, 2, depth=1).init(4)
    b = MLP(3, 2, depth=1, last_layer_init_scale=1e-2).init(4)
    testing.assert_trees_all_close(b["layers"][-1], tree.scale(a["layers"][-1], 1e-2))
    testing.assert_trees_all_equal(b["layers"][0], a["layers"][0])


def test_mlp_layer_norm():
    net = MLP(3, 2, num_cells=[5, 6], norm="layer", activation="identity")
    p = net.init(0)
    assert [n["weight"].shape[0] for n in p["norms"]] == [5, 6]
    p["norms"][0]["bias"] = torch.full((5,), 3.0)
    x = torch.randn(4, 3)
    h0 = x @ p["layers"][0]["weight"].T + p["layers"][0]["bias"]
    h0 = F.layer_norm(h0, (5,)) + 3.0
    h1 = F.layer_norm(h0 @ p["layers"][1]["weight"].T + p["layers"][1]["bias"], (6,))
    want = h1 @ p["layers"][2]["weight"].T + p["layers"][2]["bias"]
    testing.assert_trees_all_close(net(p, x), want, atol=1e-5)


def test_mlp_dropout_train_flag():
    net = MLP(3, 2, num_cells=[64], dropout=0.5)
    p = net.init(0)
    x = torch.randn(8, 3)
    plain = MLP(3, 2, num_cells=[64])
    testing.assert_trees_all_equal(net(p, x), plain(p, x))  # eval: no dropout
    torch.manual_seed(0)
    y1 = net(p, x, train=True)
    torch.manual_seed(0)
    y2 = net(p, x, train=True)
    testing.assert_trees_all_equal(y1, y2)  # reproducible from the global seed
    assert not torch.allclose(y1, plain(p, x))


def test_mlp_config_errors_and_activations():
    with pytest.raises(ValueError, match="norm must be None or 'layer', got 'batch'"):
        MLP(3, 1, norm="batch")
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got 1.0"):
        MLP(3, 1, dropout=1.0)
    with pytest.raises(ValueError, match="unknown name 'relu6'"):
        MLP(3, 1, activation="relu6")
    with pytest.raises(TypeError, match="activation must be a name or a callable, got int"):
        activation_fn(3)
    x = torch.randn(5)
    assert torch.equal(activation_fn("ReLU")(x), torch.relu(x))
    assert torch.equal(activation_fn(torch.nn.ReLU)(x), torch.relu(x))
    assert torch.equal(activation_fn(torch.sin)(x), torch.sin(x))
    p = MLP(3, 1, depth=1, activation=torch.nn.ELU).init(0)
    testing.assert_trees_all_close(
        MLP(3, 1, depth=1, activation=torch.nn.ELU)(p, x[:3]),
        MLP(3, 1, depth=1, activation="elu")(p, x[:3]),
    )


def test_linear_wrong_input_dim_error():
    with pytest.raises(
        ValueError,
        match=r"Linear\(in_features=3, out_features=4\): input x has shape \(5, 2\), expected \[\.\.\., 3\]",
    ):
        Linear(3, 4)(Linear(3, 4).init(0), torch.zeros(5, 2))
    with pytest.raises(ValueError, match=r"input x has shape \(\), expected"):
        Linear(3, 4)(Linear(3, 4).init(0), torch.tensor(1.0))


def test_mlp_wrong_input_dim_error():
    net = MLP(4, 2)
    with pytest.raises(
        ValueError,
        match=r"MLP\(in_features=4, out_features=2\): input x has shape \(2, 3\), expected \[\.\.\., 4\]",
    ):
        net(net.init(0), torch.zeros(2, 3))


def test_nets_are_hashable_frozen_configs():
    a, b = MLP(3, 2, num_cells=[4, 4]), MLP(3, 2, num_cells=(4, 4))
    assert a == b and hash(a) == hash(b)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.depth = 5
    assert hash(Ensemble(a, 3)) == hash(Ensemble(b, 3))
    assert not any(isinstance(v, torch.Tensor) for v in dataclasses.asdict(a).values())


# ---------------------------------------------------------------------------- init and RNG


@pytest.mark.parametrize(
    "net",
    [Linear(3, 4), MLP(3, 2, norm="layer"), Ensemble(MLP(3, 2, depth=1), 3)],
    ids=["linear", "mlp", "ensemble"],
)
def test_init_reproducible_and_leaves_global_rng_alone(net):
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = net.init(0)
    b = net.init(0)
    c = net.init(1)
    assert torch.equal(torch.get_rng_state(), state)
    testing.assert_trees_all_equal(a, b)
    assert not tree.allclose(a, c)
    g1, g2 = make_generator(7), torch.Generator().manual_seed(7)
    testing.assert_trees_all_equal(net.init(g1), net.init(g2))
    testing.assert_trees_all_equal(net.init(7), net.init(torch.Generator().manual_seed(7)))
    assert torch.equal(torch.get_rng_state(), state)


def test_make_generator():
    g = torch.Generator()
    assert make_generator(g) is g
    assert torch.equal(
        torch.rand(3, generator=make_generator(None)), torch.rand(3, generator=make_generator(0))
    )
    with pytest.raises(TypeError, match="seed must be an int or a torch.Generator, got float"):
        make_generator(1.5)


# ---------------------------------------------------------------------------- TorchRL parity


def _load_into_torchrl(module, params):
    linears = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    norms = [m for m in module.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(linears) == len(params["layers"])
    with torch.no_grad():
        for m, p in zip(linears, params["layers"]):
            m.weight.copy_(p["weight"])
            if m.bias is not None:
                m.bias.copy_(p["bias"])
        for m, p in zip(norms, params.get("norms", [])):
            m.weight.copy_(p["weight"])
            m.bias.copy_(p["bias"])


@pytest.mark.torchrl
@pytest.mark.parametrize(
    "kwargs",
    [
        dict(depth=2, num_cells=16),
        dict(num_cells=[16, 8], activation="relu", activate_last_layer=True),
        dict(depth=1, num_cells=8, bias_last_layer=False, out_features=(2, 3)),
        dict(num_cells=[8, 8], norm="layer", activation="elu"),
        dict(num_cells=[32, 32], dropout=0.3, norm="layer", activation="relu"),
        dict(depth=0),
    ],
    ids=["depth", "relu_last", "shape_out", "layernorm", "dropout", "single"],
)
def test_mlp_matches_torchrl(kwargs):
    torchrl_modules = pytest.importorskip("torchrl.modules", reason="TorchRL parity is optional")
    kwargs = dict(kwargs)
    out = kwargs.pop("out_features", 2)
    ours = MLP(4, out, **kwargs)
    act = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU, "elu": torch.nn.ELU}[ours.activation]
    hidden = list(ours.hidden_sizes)
    extra = {}
    if ours.norm == "layer":
        extra = dict(
            norm_class=torch.nn.LayerNorm, norm_kwargs=[{"normalized_shape": h} for h in hidden]
        )
    theirs = torchrl_modules.MLP(
        in_features=4,
        out_features=out,
        depth=len(hidden),
        num_cells=hidden,
        activation_class=act,
        activate_last_layer=ours.activate_last_layer,
        dropout=ours.dropout,
        bias_last_layer=ours.bias_last_layer,
        **extra,
    )
    p = ours.init(0)
    _load_into_torchrl(theirs, p)
    x = torch.randn(5, 4)
    theirs.eval()
    testing.assert_trees_all_close(ours(p, x), theirs(x).detach(), atol=1e-6)
    if ours.dropout:
        # same global seed -> same dropout masks, drawn in the same order
        assert any(isinstance(m, torch.nn.Dropout) for m in theirs.modules())
        theirs.train()
        torch.manual_seed(3)
        want = theirs(x).detach()
        torch.manual_seed(3)
        testing.assert_trees_all_close(ours(p, x, train=True), want, atol=1e-6)


# ---------------------------------------------------------------------------- Ensemble


def test_ensemble_vmap_equals_loop():
    net = MLP(3, 2, num_cells=[8], norm="layer")
    ens, loop = Ensemble(net, 4), Ensemble(net, 4, mode="loop")
    p = ens.init(0)
    testing.assert_shape(p["layers"][0]["weight"], (4, 8, 3))
    x = torch.randn(5, 3)
    y = ens(p, x)
    testing.assert_shape(y, (4, 5, 2))
    testing.assert_trees_all_close(y, loop(p, x), atol=1e-6)
    for i in range(4):
        testing.assert_trees_all_close(y[i], net(tree.map(lambda t, i=i: t[i], p), x), atol=1e-6)
    # members are initialised differently
    assert not torch.allclose(p["layers"][0]["weight"][0], p["layers"][0]["weight"][1])
    # per-member inputs
    xs = torch.randn(4, 5, 3)
    e0 = Ensemble(net, 4, in_dims=0)
    testing.assert_trees_all_close(
        e0(p, xs), Ensemble(net, 4, in_dims=0, mode="loop")(p, xs), atol=1e-6
    )


def test_ensemble_passes_kwargs_and_randomness():
    net = MLP(3, 2, num_cells=[32], dropout=0.5)
    ens = Ensemble(net, 2)
    p = tree.stack([net.init(0)] * 2)  # identical members
    x = torch.randn(4, 3)
    y = ens(p, x, train=True)
    assert not torch.allclose(y[0], y[1])  # randomness="different": different masks
    same = Ensemble(net, 2, randomness="same")(p, x, train=True)
    testing.assert_trees_all_close(same[0], same[1])
    testing.assert_trees_all_close(ens(p, x)[0], ens(p, x)[1])  # eval: identical


def test_ensemble_errors():
    net = MLP(3, 2, depth=1)
    with pytest.raises(ValueError, match="num_members must be >= 1, got 0"):
        Ensemble(net, 0)
    with pytest.raises(ValueError, match="mode must be 'vmap' or 'loop', got 'map'"):
        Ensemble(net, 2, mode="map")
    with pytest.raises(ValueError, match="in_dims must be None or 0, got 1"):
        Ensemble(net, 2, in_dims=1)
    p = Ensemble(net, 3).init(0)
    with pytest.raises(
        ValueError, match="params have 3 members on their leading dim, expected num_members=2"
    ):
        Ensemble(net, 2)(p, torch.zeros(3))
    with pytest.raises(ValueError, match=r"input 0 has leading dim 2, expected num_members=3"):
        Ensemble(net, 3, in_dims=0)(p, torch.zeros(2, 3))


# ---------------------------------------------------------------------------- transforms


@testing.variants
def test_mlp_and_ensemble_in_every_variant(variant):
    net = MLP(3, (2, 2), num_cells=[8, 8], norm="layer", activation="relu")
    ens = Ensemble(MLP(3, 1, depth=1, num_cells=8), 2)
    p, pe = net.init(0), ens.init(1)

    def forward(p, pe, x):
        return net(p, x), ens(pe, x)

    x = torch.randn(4, 3)
    testing.assert_trees_all_close(variant(forward)(p, pe, x), forward(p, pe, x), atol=1e-6)


def test_grad_through_mlp_params():
    net = MLP(3, 1, num_cells=[4])
    p = net.init(0)
    x = torch.randn(6, 3)
    g = torch.func.grad(lambda p: net(p, x).pow(2).mean())(p)
    testing.assert_trees_all_equal_shapes(g, p)
    testing.assert_tree_all_finite(g)
    assert tree.global_norm(g) > 0
