"""Bad input to every funcrl net: params of another config, missing/extra keys, stacked members,
wrong input sizes and dtypes each raise an error naming the net and the path or argument."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from funcrl import tree
from funcrl.multiagent import MultiAgentConvNet, MultiAgentMLP, QMixer, TanhDeltaActor, VDNMixer
from funcrl.nn import (
    GRU,
    LSTM,
    MLP,
    BatchRenorm1d,
    CausalTransformer,
    Concat,
    Conv3dNet,
    ConvNet,
    DdpgCnnActor,
    DdpgCnnQNet,
    DdpgMlpActor,
    DdpgMlpQNet,
    DecisionTransformer,
    DistributionalDQNnet,
    DreamerActor,
    DTActor,
    DTConfig,
    DuelingCnnDQNet,
    DuelingMlpDQNet,
    Ensemble,
    GRUCell,
    GRUModule,
    LayerNorm,
    Linear,
    LSTMCell,
    LSTMModule,
    Module,
    NoisyLinear,
    ObsDecoder,
    ObsEncoder,
    OnlineDTActor,
    RSSMPosterior,
    RSSMPrior,
    RSSMRollout,
    SquashDims,
    Squeeze2dLayer,
    SqueezeLayer,
    TanhBounded,
    TorchModule,
    from_module,
    from_torchrl,
    to_module,
)
from funcrl.record import Record

TINY = DTConfig(n_embd=8, n_layer=1, n_head=2, n_inner=16, n_positions=30)
TINY2 = DTConfig(n_embd=8, n_layer=2, n_head=2, n_inner=16, n_positions=30)
IMG = (1, 36, 36)  # the DDPG / dueling CNNs' 8-4-3 kernels, strides 4-2-1 fit this


def r(*shape: int) -> torch.Tensor:
    return torch.randn(*shape)


@dataclasses.dataclass
class Case:
    """A net, the params of another config, good inputs, and a bad-size input to name."""

    net: Any
    other: Any  # a net of another config (its params must be rejected)
    args: Callable[[], tuple]
    bad: Callable[[], tuple] | None = None  # the inputs with one wrongly sized
    bad_name: str = "x"  # the argument named by the size error
    dtype_name: str | None = "x"  # the argument named by the dtype error (None: not checked)
    owner: str | None = None  # the class named by input errors (default: param_owner)
    param_owner: str | None = None  # the class named by params errors (default: the net's)
    kwargs: dict = dataclasses.field(default_factory=dict)

    @property
    def params_name(self) -> str:
        return rf"(?:{self.param_owner or type(self.net).__name__})\(.*\)"

    @property
    def input_name(self) -> str:
        return rf"(?:{self.owner or self.param_owner or type(self.net).__name__})\(.*\)"


def _rec_gru(x):
    return Record({"embed": x}, batch_ndim=1)


_lin = torch.nn.Linear(3, 4)

CASES = {
    "Linear": Case(Linear(3, 4), Linear(3, 5), lambda: (r(2, 3),), lambda: (r(2, 4),)),
    "LayerNorm": Case(LayerNorm(4), LayerNorm(5), lambda: (r(2, 4),), lambda: (r(2, 5),)),
    "MLP": Case(
        MLP(3, 2, num_cells=(8,)), MLP(3, 2, num_cells=(6,)), lambda: (r(2, 3),), lambda: (r(2, 4),)
    ),
    "MLP-noisy": Case(
        MLP(3, 2, num_cells=(8,), layer_class="noisy"),
        MLP(3, 2, num_cells=(8,)),
        lambda: (r(2, 3),),
        lambda: (r(2, 4),),
    ),
    "NoisyLinear": Case(
        NoisyLinear(3, 4), NoisyLinear(3, 4, bias=False), lambda: (r(2, 3),), lambda: (r(2, 2),)
    ),
    "ConvNet": Case(
        ConvNet(2, num_cells=(4,)),
        ConvNet(2, num_cells=(5,)),
        lambda: (r(1, 2, 6, 6),),
        lambda: (r(1, 3, 6, 6),),
    ),
    "Conv3dNet": Case(
        Conv3dNet(2, num_cells=(4,)),
        Conv3dNet(2, num_cells=(4, 4)),
        lambda: (r(1, 2, 5, 5, 5),),
        lambda: (r(1, 1, 5, 5, 5),),
    ),
    "BatchRenorm1d": Case(
        BatchRenorm1d(4),
        BatchRenorm1d(5),
        lambda: (BatchRenorm1d(4).init_state(), r(3, 4)),
        lambda: (BatchRenorm1d(4).init_state(), r(3, 5)),
        kwargs={"train": False},
    ),
    "GRUCell": Case(
        GRUCell(3, 4),
        GRUCell(3, 5),
        lambda: (r(2, 3), r(2, 4)),
        lambda: (r(2, 3), r(2, 5)),
        bad_name="h",
    ),
    "LSTMCell": Case(
        LSTMCell(3, 4),
        LSTMCell(2, 4),
        lambda: (r(2, 3), (r(2, 4), r(2, 4))),
        lambda: (r(2, 2), (r(2, 4), r(2, 4))),
    ),
    "GRU": Case(
        GRU(3, 4),
        GRU(3, 4, num_layers=2),
        lambda: (r(2, 5, 3),),
        lambda: (r(2, 5, 3), r(2, 2, 4)),
        bad_name="h0",
    ),
    "LSTM": Case(LSTM(3, 4), LSTM(3, 4, bias=False), lambda: (r(2, 5, 3),), lambda: (r(2, 5, 2),)),
    "GRUModule": Case(
        GRUModule(3, 4),
        GRUModule(3, 5),
        lambda: (_rec_gru(r(2, 3)),),
        lambda: (_rec_gru(r(2, 2)),),
        owner="GRU",
        dtype_name=None,
    ),
    "LSTMModule": Case(
        LSTMModule(3, 4),
        LSTMModule(3, 4, num_layers=2),
        lambda: (_rec_gru(r(2, 3)),),
        lambda: (_rec_gru(r(2, 2)),),
        owner="LSTM",
        dtype_name=None,
    ),
    "Ensemble": Case(
        Ensemble(MLP(3, 2, num_cells=(8,)), 3),
        Ensemble(MLP(3, 2, num_cells=(6,)), 3),
        lambda: (r(2, 3),),
        lambda: (r(2, 4),),
        owner="Ensemble|MLP",
    ),
    "TanhBounded": Case(
        TanhBounded(MLP(3, 2, num_cells=(8,))),
        MLP(3, 2, num_cells=(6,)),
        lambda: (r(2, 3),),
        lambda: (r(2, 4),),
        param_owner="MLP",
    ),
    "Concat": Case(
        Concat(MLP(5, 1, num_cells=(8,))),
        MLP(5, 1, num_cells=(6,)),
        lambda: (r(2, 3), r(2, 2)),
        lambda: (r(2, 3), r(2, 3)),
        param_owner="MLP",
    ),
    "TorchModule": Case(
        TorchModule(_lin),
        TorchModule(torch.nn.Linear(3, 5)),
        lambda: (r(2, 3),),
        None,
        dtype_name=None,
    ),
    "DdpgMlpActor": Case(
        DdpgMlpActor(3, 2, num_cells=(8, 8)),
        DdpgMlpActor(3, 2, num_cells=(8,)),
        lambda: (r(2, 3),),
        lambda: (r(2, 4),),
        owner="DdpgMlpActor|MLP",
    ),
    "DdpgMlpQNet": Case(
        DdpgMlpQNet(3, 2, num_cells_1=8, num_cells_2=(8,)),
        DdpgMlpQNet(3, 2, num_cells_1=6, num_cells_2=(8,)),
        lambda: (r(2, 3), r(2, 2)),
        lambda: (r(2, 3), r(2, 3)),
        bad_name="action",
        dtype_name="action",
    ),
    "DdpgCnnActor": Case(
        DdpgCnnActor(IMG, 2, conv_num_cells=(2, 2, 2), mlp_num_cells=(4,)),
        DdpgCnnActor(IMG, 3, conv_num_cells=(2, 2, 2), mlp_num_cells=(4,)),
        lambda: (r(2, *IMG),),
        lambda: (r(2, 2, 36, 36),),
        owner="ConvNet",
    ),
    "DdpgCnnQNet": Case(
        DdpgCnnQNet(IMG, 2, conv_num_cells=(2, 2, 2), mlp_num_cells=(4,)),
        DdpgCnnQNet(IMG, 2, conv_num_cells=(2, 2, 3), mlp_num_cells=(4,)),
        lambda: (r(2, *IMG), r(2, 2)),
        lambda: (r(2, *IMG), r(2, 1)),
        bad_name="action",
        dtype_name="action",
    ),
    "DuelingMlpDQNet": Case(
        DuelingMlpDQNet(3, 2, feature_num_cells=(8,), feature_out=8, head_num_cells=(8,)),
        DuelingMlpDQNet(3, 2, feature_num_cells=(8,), feature_out=8, head_num_cells=(4,)),
        lambda: (r(2, 3),),
        lambda: (r(2, 4),),
        owner="MLP",
    ),
    "DuelingCnnDQNet": Case(
        DuelingCnnDQNet(IMG, 2, conv_num_cells=(2, 2, 2), head_num_cells=(4,)),
        DuelingCnnDQNet(IMG, 3, conv_num_cells=(2, 2, 2), head_num_cells=(4,)),
        lambda: (r(2, *IMG),),
        lambda: (r(2, 3, 36, 36),),
        owner="ConvNet",
    ),
    "DistributionalDQNnet": Case(
        DistributionalDQNnet(), None, lambda: (r(2, 3, 4),), dtype_name=None
    ),
    "SqueezeLayer": Case(SqueezeLayer(), None, lambda: (r(2, 1),), dtype_name=None),
    "Squeeze2dLayer": Case(Squeeze2dLayer(), None, lambda: (r(2, 1, 1),), dtype_name=None),
    "SquashDims": Case(
        SquashDims(), None, lambda: (r(2, 3, 4, 4),), lambda: (r(4, 4),), dtype_name=None
    ),
    "ObsEncoder": Case(
        ObsEncoder(channels=2, num_layers=1, in_channels=1),
        ObsEncoder(channels=3, num_layers=1, in_channels=1),
        lambda: (r(2, 1, 8, 8),),
        lambda: (r(2, 2, 8, 8),),
        bad_name="observation",
        dtype_name="observation",
    ),
    "ObsDecoder": Case(
        ObsDecoder(channels=2, num_layers=1, latent_dim=5),
        ObsDecoder(channels=2, num_layers=2, latent_dim=5),
        lambda: (r(2, 3), r(2, 2)),
        lambda: (r(2, 3), r(2, 3)),
        bad_name=re.escape("cat([state, belief])"),
        dtype_name="state",
    ),
    "RSSMPrior": Case(
        RSSMPrior(2, hidden_dim=4, rnn_hidden_dim=5, state_dim=3),
        RSSMPrior(2, hidden_dim=4, rnn_hidden_dim=6, state_dim=3),
        lambda: (r(2, 3), r(2, 5), r(2, 2)),
        lambda: (r(2, 3), r(2, 4), r(2, 2)),
        bad_name="belief",
        dtype_name="state",
    ),
    "RSSMPosterior": Case(
        RSSMPosterior(hidden_dim=4, state_dim=3, rnn_hidden_dim=5, obs_embed_dim=6),
        RSSMPosterior(hidden_dim=4, state_dim=2, rnn_hidden_dim=5, obs_embed_dim=6),
        lambda: (r(2, 5), r(2, 6)),
        lambda: (r(2, 5), r(2, 7)),
        bad_name="obs_embedding",
        dtype_name="belief",
    ),
    "RSSMRollout": Case(
        RSSMRollout(
            RSSMPrior(2, hidden_dim=4, rnn_hidden_dim=5, state_dim=3),
            RSSMPosterior(hidden_dim=4, state_dim=3, rnn_hidden_dim=5, obs_embed_dim=6),
        ),
        RSSMRollout(
            RSSMPrior(2, hidden_dim=3, rnn_hidden_dim=5, state_dim=3),
            RSSMPosterior(hidden_dim=4, state_dim=3, rnn_hidden_dim=5, obs_embed_dim=6),
        ),
        lambda: (
            Record(
                {
                    "state": r(2, 4, 3),
                    "belief": r(2, 4, 5),
                    "action": r(2, 4, 2),
                    ("next", "encoded_latents"): r(2, 4, 6),
                },
                batch_ndim=2,
            ),
        ),
        lambda: (
            Record(
                {
                    "state": r(2, 4, 3),
                    "belief": r(2, 4, 5),
                    "action": r(2, 4, 1),
                    ("next", "encoded_latents"): r(2, 4, 6),
                },
                batch_ndim=2,
            ),
        ),
        bad_name="action",
        owner="RSSMRollout|RSSMPrior",
        dtype_name=None,
    ),
    "DreamerActor": Case(
        DreamerActor(2, in_features=5, depth=1, num_cells=4),
        DreamerActor(2, in_features=5, depth=2, num_cells=4),
        lambda: (r(2, 3), r(2, 2)),
        lambda: (r(2, 3), r(2, 3)),
        bad_name=re.escape("cat([state, belief])"),
        dtype_name="state",
    ),
    "CausalTransformer": Case(
        CausalTransformer(TINY),
        CausalTransformer(TINY2),
        lambda: (r(2, 4, 8),),
        lambda: (r(2, 4, 7),),
    ),
    "DecisionTransformer": Case(
        DecisionTransformer(3, 2, TINY),
        DecisionTransformer(3, 1, TINY),
        lambda: (r(2, 4, 3), r(2, 4, 2), r(2, 4, 1)),
        lambda: (r(2, 4, 3), r(2, 4, 2), r(2, 4, 2)),
        bad_name="return_to_go",
        dtype_name="observation",
    ),
    "DTActor": Case(
        DTActor(3, 2, TINY),
        DTActor(3, 2, TINY2),
        lambda: (r(2, 4, 3), r(2, 4, 2), r(2, 4, 1)),
        lambda: (r(2, 4, 4), r(2, 4, 2), r(2, 4, 1)),
        bad_name="observation",
        dtype_name="observation",
        owner="DTActor|DecisionTransformer",
    ),
    "OnlineDTActor": Case(
        OnlineDTActor(3, 2, TINY),
        OnlineDTActor(3, 3, TINY),
        lambda: (r(2, 4, 3), r(2, 4, 2), r(2, 4, 1)),
        lambda: (r(2, 4, 3), r(2, 4, 3), r(2, 4, 1)),
        bad_name="action",
        dtype_name="observation",
        owner="OnlineDTActor|DecisionTransformer",
    ),
    "MultiAgentMLP": Case(
        MultiAgentMLP(3, 2, 4, False, False, depth=1, num_cells=8),
        MultiAgentMLP(3, 2, 4, False, True, depth=1, num_cells=8),
        lambda: (r(5, 4, 3),),
        lambda: (r(5, 4, 2),),
    ),
    "MultiAgentConvNet": Case(
        MultiAgentConvNet(3, False, True, in_features=2, num_cells=(4,)),
        MultiAgentConvNet(3, False, False, in_features=2, num_cells=(4,)),
        lambda: (r(2, 3, 2, 9, 9),),
        lambda: (r(2, 3, 1, 9, 9),),
    ),
    "QMixer": Case(
        QMixer((5,), 4, 3),
        QMixer((5,), 6, 3),
        lambda: (r(2, 3, 1), r(2, 5)),
        lambda: (r(2, 3, 1), r(2, 6)),
        bad_name="state",
        dtype_name="chosen_action_value",
    ),
    "VDNMixer": Case(VDNMixer(3), None, lambda: (r(2, 3, 1),), dtype_name=None),
    "TanhDeltaActor": Case(
        TanhDeltaActor(MultiAgentMLP(3, 2, 4, False, True, depth=1, num_cells=8)),
        MultiAgentMLP(3, 2, 4, False, True, depth=1, num_cells=6),
        lambda: (r(5, 4, 3),),
        lambda: (r(5, 4, 2),),
        param_owner="MultiAgentMLP",
    ),
}
IDS = sorted(CASES)


def _call(case: Case, params: Any, args: tuple) -> Any:
    return case.net(params, *args, **case.kwargs)


def _float64(args: tuple) -> tuple:
    return tree.map(lambda t: t.double() if t.is_floating_point() else t, args)


@pytest.mark.parametrize("key", IDS)
def test_good_params_run(key):
    case = CASES[key]
    _call(case, case.net.init(0), case.args())


@pytest.mark.parametrize("key", [k for k in IDS if CASES[k].other is not None])
def test_params_of_another_config(key):
    case = CASES[key]
    with pytest.raises(ValueError, match=rf"{case.params_name}: params\S*: expected"):
        _call(case, case.other.init(0), case.args())


@pytest.mark.parametrize("key", IDS)
def test_extra_key(key):
    case = CASES[key]
    params = {**case.net.init(0), "extra": torch.zeros(1)}
    with pytest.raises(ValueError, match=rf"{case.params_name}: params: .*unexpected \['extra'\]"):
        _call(case, params, case.args())


@pytest.mark.parametrize("key", [k for k in IDS if CASES[k].other is not None])
def test_missing_key(key):
    case = CASES[key]
    params = dict(case.net.init(0))
    dropped = sorted(params, key=str)[-1]
    del params[dropped]
    with pytest.raises(ValueError, match=rf"{case.params_name}: params: .*missing \['{dropped}'\]"):
        _call(case, params, case.args())


@pytest.mark.parametrize("key", [k for k in IDS if CASES[k].other is not None])
def test_stacked_members_are_not_accepted(key):
    # Two stacked copies (an ensemble's layout) must go through Ensemble / vmap_members.
    case = CASES[key]
    p = case.net.init(0)
    msg = rf"{case.params_name}: params\[.*extra leading dims"
    if isinstance(case.net, Ensemble):  # two stacked ensembles look like 2 members
        msg = rf"{case.params_name}: params have 2 members on their leading dim, expected"
    with pytest.raises(ValueError, match=msg):
        _call(case, tree.stack([p, p]), case.args())


@pytest.mark.parametrize("key", [k for k in IDS if CASES[k].bad is not None])
def test_wrong_input_size(key):
    case = CASES[key]
    with pytest.raises(ValueError, match=rf"{case.input_name}: input {case.bad_name} (has|must)"):
        _call(case, case.net.init(0), case.bad())


@pytest.mark.parametrize("key", [k for k in IDS if CASES[k].dtype_name is not None])
def test_wrong_input_dtype(key):
    case = CASES[key]
    msg = (
        rf"{case.input_name}: input {case.dtype_name} is torch.float64 but params are torch.float32;"
        r" cast the batch with rec.apply\(lambda t: t.to\(torch.float32\)\)"
    )
    with pytest.raises(TypeError, match=msg):
        _call(case, case.net.init(0), _float64(case.args()))


# ------------------------------------------------------------------ MLP, the examples


def test_mlp_rejects_params_of_other_sizes():
    net = MLP(3, 2, num_cells=(16, 16))
    x = r(4, 3)
    # The example: this used to return a [4, 5] output.
    with pytest.raises(
        ValueError,
        match=r"MLP\(.*num_cells=\(16, 16\)\): params\['layers'\]: "
        r"expected 3 entries, got 2",
    ):
        net(MLP(3, 5, num_cells=(8,)).init(0), x)
    with pytest.raises(
        ValueError,
        match=r"params\['layers'\]\[0\]\['weight'\]: expected shape "
        r"\(16, 3\), got \(8, 3\)",
    ):
        net(MLP(3, 2, num_cells=(8, 16)).init(0), x)
    with pytest.raises(
        ValueError,
        match=r"params\['layers'\]\[2\]\['weight'\]: expected shape "
        r"\(2, 16\), got \(5, 16\)",
    ):
        net(MLP(3, 5, num_cells=(16, 16)).init(0), x)


def test_mlp_norm_layouts_are_not_interchangeable():
    plain = MLP(3, 2, num_cells=(8,), activation="relu")
    normed = MLP(3, 2, num_cells=(8,), activation="relu", norm="layer")
    x = r(4, 3)
    with pytest.raises(ValueError, match=r"MLP\(.*\): params: .*unexpected \['norms'\]"):
        plain(normed.init(0), x)
    with pytest.raises(ValueError, match=r"MLP\(.*norm='layer'\): params: .*missing \['norms'\]"):
        normed(plain.init(0), x)


def test_linear_rejects_wrong_weight():
    lin = Linear(3, 4)
    with pytest.raises(
        ValueError,
        match=r"Linear\(in_features=3, out_features=4\): "
        r"params\['weight'\]: expected shape \(4, 3\), got "
        r"\(4, 2\)",
    ):
        lin({"weight": torch.zeros(4, 2), "bias": torch.zeros(4)}, r(1, 3))
    with pytest.raises(ValueError, match=r"params\['bias'\]: expected a floating-point tensor"):
        lin({"weight": torch.zeros(4, 3), "bias": torch.zeros(4, dtype=torch.long)}, r(1, 3))
    with pytest.raises(TypeError, match=r"Linear\(.*\): input x must be a tensor, got list"):
        lin(lin.init(0), [1.0, 2.0, 3.0])


def test_owner_prefix_names_the_caller():
    net = MLP(3, 2, num_cells=(8,))
    with pytest.raises(ValueError, match=r"^sac.loss: nets.qvalue: MLP\(.*\): params"):
        net.check_params(MLP(3, 2).init(0), owner="sac.loss: nets.qvalue")


def test_checks_hold_under_compile_and_vmap():
    net = MLP(3, 2, num_cells=(8,))
    p, bad = net.init(0), MLP(3, 2, num_cells=(6,)).init(0)
    # Inside vmap the member params have their per-member shapes and pass.
    stacked = tree.stack([p, p])
    out = torch.func.vmap(net, in_dims=(0, None))(stacked, r(4, 3))
    assert out.shape == (2, 4, 2)
    torch._dynamo.reset()
    compiled = torch.compile(net, fullgraph=True, dynamic=False)
    compiled(p, r(4, 3))
    # Dynamo re-raises the ValueError inside its own exception; the message is kept.
    with pytest.raises(Exception, match=r"MLP\(.*\): .*expected shape \(8, 3\), got \(6, 3\)"):
        compiled(bad, r(4, 3))


def test_batch_renorm_state_is_checked():
    bn = BatchRenorm1d(4)
    state = {**bn.init_state(), "steps": torch.zeros(())}
    with pytest.raises(
        ValueError,
        match=r"BatchRenorm1d\(num_features=4\): state\['steps'\]: "
        r"expected an integer/bool tensor",
    ):
        bn(bn.init(0), state, r(3, 4), train=False)
    with pytest.raises(ValueError, match=r"state\['running_mean'\]: expected shape \(4,\)"):
        bn(bn.init(0), BatchRenorm1d(5).init_state(), r(3, 4), train=False)


# ------------------------------------------------------------------ conversion


def test_from_module_checks_the_target_net():
    module = torch.nn.Linear(3, 5)
    with pytest.raises(
        ValueError,
        match=r"^from_module\(Linear\): Linear\(in_features=3, "
        r"out_features=4\): params\['weight'\]: expected shape "
        r"\(4, 3\), got \(5, 3\)",
    ):
        from_module(module, net=Linear(3, 4))
    from_module(module, net=Linear(3, 5))


def test_from_torchrl_params_fit_the_net():
    torchrl_modules = pytest.importorskip("torchrl.modules")
    net, params = from_torchrl(torchrl_modules.MLP(in_features=3, out_features=2, num_cells=[8]))
    net.check_params(params)


def test_to_module_rejects_entries_without_a_place():
    module = torch.nn.Linear(3, 4)
    params = {**from_module(module), "extra": torch.zeros(1)}
    before = module.weight.detach().clone()
    with pytest.raises(
        ValueError,
        match=r"to_module: params\['extra'\] has no counterpart in "
        r"Linear",
    ):
        to_module(tree.map(lambda t: t + 1, params), module)
    torch.testing.assert_close(module.weight.detach(), before)  # nothing written
    with pytest.raises(
        ValueError,
        match=r"to_module: 'bias' has shape \(4,\), "
        r"params\['bias'\] has \(5,\)",
    ):
        to_module({"weight": torch.zeros(4, 3), "bias": torch.zeros(5)}, module)
    torch.testing.assert_close(module.weight.detach(), before)


def test_first_check_inside_vmap_and_grad():
    # The expected layout is built outside the transforms (init draws random numbers, which
    # vmap(randomness="error") forbids).
    from funcrl.nn import core

    net = MLP(7, 3, num_cells=(5,))
    p = net.init(0)
    core._SIGNATURES.pop(net, None)
    out = torch.func.vmap(net, in_dims=(None, 0), randomness="error")(p, r(4, 2, 7))
    assert out.shape == (4, 2, 3)
    core._SIGNATURES.pop(net, None)
    grads = torch.func.grad(lambda q: net(q, r(2, 7)).sum())(p)
    assert grads["layers"][0]["weight"].shape == (5, 7)
    with pytest.raises(ValueError, match=r"MLP\(in_features=7, .*\): params\['layers'\]"):
        torch.func.vmap(net, in_dims=(None, 0))(MLP(7, 3).init(0), r(4, 2, 7))


@dataclasses.dataclass(frozen=True, eq=False)
class _IdentityHashedNet(Module):
    """A net hashed by identity holding an unhashable field, as exploration modules hold specs."""

    spec: Any

    def init(self, seed=0, *, device=None, dtype=torch.float32):
        return {"w": torch.ones(3, device=device, dtype=dtype)}

    def __call__(self, params, x):
        self.check_params(params)
        return x * params["w"]


def test_identity_hashed_nets_are_checked_without_entering_the_signature_cache():
    # Keyed by identity, such a net would keep every instance alive, and torch.compile reading
    # the cache hashes its keys field by field: torch 2.11 failed every later compiled net call
    # with "unhashable type: 'Bounded'" once an exploration module had been checked.
    from funcrl.nn import core
    from funcrl.specs import Bounded

    net = _IdentityHashedNet(Bounded(-1.0, 1.0, shape=(3,)))
    params = net.init(0)
    torch.testing.assert_close(net(params, torch.ones(3)), torch.ones(3))
    with pytest.raises(ValueError, match=r"params\['w'\]"):
        net({"w": torch.ones(4)}, torch.ones(3))
    wrapped = Concat(MLP(4, 1, num_cells=(8,)))
    wrapped(wrapped.init(0), r(2, 2), r(2, 2))
    assert all(core._keyed_by_value(key) for key in core._SIGNATURES)
    assert not core._keyed_by_value(net) and core._keyed_by_value(wrapped)
    # Its signature is kept on the instance instead, so eager calls do not rebuild it.
    assert getattr(net, core._OWN_SIGNATURE) == core._signature(params)
    calls = []
    template = type(net).param_template
    try:
        type(net).param_template = lambda self: calls.append(1) or template(self)
        net(params, torch.ones(3))
        _IdentityHashedNet(net.spec)(params, torch.ones(3))  # a new instance: built once
        assert len(calls) == 1
    finally:
        type(net).param_template = template
    torch._dynamo.reset()
    mlp = MLP(3, 2, num_cells=(8,))
    out = torch.compile(mlp, fullgraph=True, backend="eager")(mlp.init(0), r(5, 3))
    assert out.shape == (5, 2)
    compiled = torch.compile(net, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(params, torch.ones(3)), torch.ones(3))


def test_noise_layout_is_checked():
    from funcrl.nn import sample_noise

    lin = NoisyLinear(3, 4)
    with pytest.raises(
        ValueError,
        match=r"NoisyLinear\(in_features=3, out_features=4\): "
        r"noise\['epsilon_in'\]: expected shape \(3,\), got "
        r"\(4,\); draw it with funcrl.nn.sample_noise",
    ):
        lin(lin.init(0), r(2, 3), sample_noise(NoisyLinear(4, 4), 0))
    mlp = MLP(3, 2, num_cells=(8,), layer_class="noisy")
    noise = sample_noise(mlp, 0)
    mlp(mlp.init(0), r(2, 3), noise=noise)
    with pytest.raises(
        ValueError,
        match=r"MLP\(.*layer_class='noisy'\): noise\['layers'\]: "
        r"expected 2 entries, got 1",
    ):
        mlp(mlp.init(0), r(2, 3), noise={"layers": noise["layers"][:1]})
    plain = MLP(3, 2, num_cells=(8,))
    with pytest.raises(ValueError, match=r"MLP\(.*\): noise given but layer_class is not"):
        plain(plain.init(0), r(2, 3), noise=noise)
    torch._dynamo.reset()
    compiled = torch.compile(lambda p, x, n: mlp(p, x, noise=n), fullgraph=True)
    torch.testing.assert_close(
        compiled(mlp.init(0), r(2, 3) * 0, noise), mlp(mlp.init(0), r(2, 3) * 0, noise=noise)
    )


_mlp_configs = st.tuples(
    st.integers(1, 4),
    st.integers(1, 4),
    st.lists(st.integers(1, 5), max_size=2).map(tuple),
    st.sampled_from([None, "layer"]),
)


@given(_mlp_configs, _mlp_configs)
def test_mlp_accepts_exactly_its_own_layout(a, b):
    # Property: a net runs on params of an equal layout and rejects every other layout.
    net_a = MLP(a[0], a[1], num_cells=a[2], norm=a[3])
    net_b = MLP(b[0], b[1], num_cells=b[2], norm=b[3])
    same = a == b  # (an empty "norms" list is part of the layout too)
    x = r(2, a[0])
    if same:
        assert net_a(net_b.init(0), x).shape == (2, a[1])
    else:
        with pytest.raises(ValueError, match=r"^MLP\(.*\): params"):
            net_a(net_b.init(0), x)
