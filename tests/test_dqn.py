"""DQN / Double DQN: equations by hand, TorchRL parity, compile, vmap, properties."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from funcrl import Record, dqn, optim, specs, tree
from funcrl.testing import assert_trees_all_close

os.environ.setdefault("RL_WARNINGS", "False")
B, D, HID = 16, 3, (32, 32)
NETS = dqn.Nets(num_cells=HID)
SPACES = {
    "one_hot": specs.OneHot(4),
    "categorical": specs.Categorical(4),
    "mult_one_hot": specs.MultiOneHot([2, 3]),
}


def make_batch(space, n_act, *, seed=0, dtype=torch.float64, mask=False, batch=(B,)):
    g = torch.Generator().manual_seed(seed)
    data = {
        "observation": torch.randn(*batch, D, generator=g, dtype=dtype),
        "next": {
            "observation": torch.randn(*batch, D, generator=g, dtype=dtype),
            "reward": torch.randn(*batch, 1, generator=g, dtype=dtype),
            "terminated": torch.rand(*batch, 1, generator=g) < 0.3,
            "truncated": torch.rand(*batch, 1, generator=g) < 0.3,
        },
    }
    data["next"]["done"] = data["next"]["terminated"] | data["next"]["truncated"]
    idx = torch.randint(0, 4, batch, generator=g)
    if space == "categorical":
        data["action"] = idx
    elif space == "one_hot":
        data["action"] = torch.nn.functional.one_hot(idx, 4)
    elif space == "mult_one_hot":
        a = torch.nn.functional.one_hot(torch.randint(0, 2, batch, generator=g), 2)
        b = torch.nn.functional.one_hot(torch.randint(0, 3, batch, generator=g), 3)
        data["action"] = torch.cat([a, b], -1)
    else:  # binary
        data["action"] = (torch.rand(*batch, n_act, generator=g) < 0.5).long()
    if mask:
        m = torch.rand(*batch, n_act, generator=g) < 0.7
        m[..., 0] = True  # at least one valid action
        if space == "categorical":
            m.scatter_(-1, idx.unsqueeze(-1), True)
        else:
            m |= data["action"].bool()
        data["action_mask"] = m
        nm = torch.rand(*batch, n_act, generator=g) < 0.5
        nm[..., 1] = True
        data["next"]["action_mask"] = nm
    return Record(data, batch_ndim=len(batch))


def perturbed(p, scale=0.1, seed=1):
    g = torch.Generator().manual_seed(seed)
    return tree.map(lambda t: t + scale * torch.randn(t.shape, generator=g, dtype=t.dtype), p)


# --- equations by hand ---------------------------------------------------------------------------


def test_chosen_greedy_max_by_hand():
    q = torch.tensor([[1.0, 3.0, 2.0], [-1.0, -2.0, 0.5]])
    assert torch.equal(
        dqn.chosen_action_value(q, torch.tensor([2, 0]), "categorical"), torch.tensor([2.0, -1.0])
    )
    assert torch.equal(
        dqn.chosen_action_value(q, torch.tensor([[1], [2]]), "categorical"),
        torch.tensor([3.0, 0.5]),
    )
    onehot = torch.tensor([[0, 1, 0], [1, 0, 0]])
    assert torch.equal(dqn.chosen_action_value(q, onehot, "one_hot"), torch.tensor([3.0, -1.0]))
    assert torch.equal(dqn.greedy_action(q, "categorical"), torch.tensor([1, 2]))
    assert torch.equal(dqn.max_action_value(q, "one_hot"), torch.tensor([3.0, 0.5]))
    # multi-one-hot: groups [2, 1]; Q(s, a) = max of group 1 + max of group 2
    assert torch.equal(dqn.max_action_value(q, "mult_one_hot", (2, 1)), torch.tensor([5.0, -0.5]))
    # binary: each bit is set where its value is positive
    assert torch.equal(dqn.greedy_action(q, "binary"), torch.tensor([[1.0, 1, 1], [0, 0, 1]]))
    assert torch.equal(dqn.max_action_value(q, "binary"), torch.tensor([6.0, 0.5]))


def test_double_q_and_mask_by_hand():
    q_online = torch.tensor([[1.0, 5.0, 2.0]])
    q_target = torch.tensor([[10.0, -1.0, 3.0]])
    # online picks action 1; the target evaluates it: -1 (plain max would give 10)
    assert torch.equal(dqn.double_q_value(q_online, q_target, "one_hot"), torch.tensor([-1.0]))
    masked = dqn.mask_action_values(q_online, torch.tensor([[True, False, True]]))
    assert torch.equal(dqn.greedy_action(masked, "categorical"), torch.tensor([2]))
    with pytest.raises(ValueError, match="action mask has shape"):
        dqn.mask_action_values(q_online, torch.tensor([True, False]))


def test_loss_by_hand_single_transition():
    # A linear Q-net: Q(s) = W s, so every number is easy to check.
    w = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    wt = torch.tensor([[0.5, 0.0], [0.0, 1.0]])
    params = {"value": {"w": w}, "target_value": {"w": wt}}
    nets = dqn.Nets(value=lambda p, x: x @ p["w"].T)
    batch = Record(
        {
            "observation": torch.tensor([[1.0, 1.0]]),
            "action": torch.tensor([[0, 1]]),
            "next": {
                "observation": torch.tensor([[4.0, 1.0]]),
                "reward": torch.tensor([[1.0]]),
                "terminated": torch.tensor([[False]]),
            },
        },
        batch_ndim=1,
    )
    cfg = dqn.Config(gamma=0.5)
    # Q(s, a=1) = 2; target Q(s') = [2, 1] -> max 2; y = 1 + 0.5 * 2 = 2; loss 0.
    out = dqn.loss(params, batch, config=cfg, nets=nets)
    assert out["loss"].item() == pytest.approx(0.0)
    # Double DQN: online Q(s') = [4, 2] picks a=0, target value 2: same here. Change the target:
    params["target_value"] = {"w": torch.tensor([[0.0, 0.0], [0.0, 3.0]])}
    plain = dqn.loss(params, batch, config=cfg, nets=nets)["loss"]  # max target = 3 -> y = 2.5
    double = dqn.loss(params, batch, config=dqn.Config(gamma=0.5, double_dqn=True), nets=nets)
    assert plain.item() == pytest.approx(0.25)
    assert double["loss"].item() == pytest.approx(1.0)  # target picks a=0 -> 0 -> y = 1
    assert double["td_error"].shape == (1,)
    assert double["td_error"].item() == pytest.approx(1.0)  # |Q - y| = |2 - 1|


# --- terminated vs truncated ---------------------------------------------------------------------


@settings(max_examples=20, deadline=None)
@given(terminated=st.booleans(), truncated=st.booleans(), r=st.floats(-5, 5))
def test_only_terminated_stops_bootstrap(terminated, truncated, r):
    nets = dqn.Nets(value=lambda p, x: x @ p["w"].T)
    params = {"value": {"w": torch.eye(2)}, "target_value": {"w": 2 * torch.eye(2)}}
    batch = Record(
        {
            "observation": torch.tensor([[1.0, 0.0]]),
            "action": torch.tensor([[1, 0]]),
            "next": {
                "observation": torch.tensor([[0.0, 3.0]]),
                "reward": torch.tensor([[r]]),
                "terminated": torch.tensor([[terminated]]),
                "truncated": torch.tensor([[truncated]]),
                "done": torch.tensor([[terminated or truncated]]),
            },
        },
        batch_ndim=1,
    )
    out = dqn.loss(params, batch, config=dqn.Config(gamma=0.9), nets=nets)
    y = r + (0.0 if terminated else 0.9 * 6.0)
    assert out["td_error"].item() == pytest.approx(abs(1.0 - y), rel=1e-5, abs=1e-5)


# --- TorchRL parity ------------------------------------------------------------------------------


def _torch_mlp(p):
    from torch import nn

    mods = []
    for i, layer in enumerate(p["layers"]):
        lin = nn.Linear(layer["weight"].shape[1], layer["weight"].shape[0], dtype=torch.float64)
        with torch.no_grad():
            lin.weight.copy_(layer["weight"])
            lin.bias.copy_(layer["bias"])
        mods += [lin] + ([nn.ReLU()] if i < len(p["layers"]) - 1 else [])
    return nn.Sequential(*mods)


def _load(td, p):
    # TorchRL nests the Sequential's params as (..., "<index>", "weight"|"bias").
    for k in td.keys(True, True):
        td.get(k).data.copy_(p["layers"][int(k[-2]) // 2][k[-1]])


def _grads_tree(td, grads, like):
    out = tree.zeros_like(like)
    for k, g in zip(td.keys(True, True), grads):
        out["layers"][int(k[-2]) // 2][k[-1]] = g
    return out


@pytest.mark.parametrize(
    "space,double,mask,loss_function",
    [
        ("one_hot", False, False, "l2"),
        ("one_hot", True, False, "smooth_l1"),
        ("categorical", False, False, "l1"),
        ("categorical", True, True, "l2"),
        ("one_hot", False, True, "l2"),
        ("mult_one_hot", False, False, "l2"),
        ("mult_one_hot", True, False, "l2"),
    ],
)
def test_parity_with_torchrl(space, double, mask, loss_function):
    pytest.importorskip("torchrl", reason="TorchRL is the reference implementation")
    from tensordict.nn import TensorDictModule, TensorDictSequential
    from torchrl.data import Categorical, MultiOneHot, OneHot
    from torchrl.modules import QValueActor
    from torchrl.modules.tensordict_module.actors import QValueModule
    from torchrl.objectives import DQNLoss

    spec = SPACES[space]
    n_act = 5 if space == "mult_one_hot" else 4
    cfg = dqn.Config(
        loss_function=loss_function,
        double_dqn=double,
        action_space=spec,
        action_mask_key="action_mask" if mask else None,
    )
    params = dqn.init(0, specs.Unbounded(shape=(D,)), spec, cfg, NETS, dtype=torch.float64)
    params["target_value"] = perturbed(params["target_value"])
    batch = make_batch(space, n_act, mask=mask)

    mask_key = "action_mask" if mask else None
    if space == "mult_one_hot":
        tr_spec = MultiOneHot([2, 3])
        actor = TensorDictSequential(
            TensorDictModule(_torch_mlp(params["value"]), ["observation"], ["action_value"]),
            QValueModule(action_space="mult_one_hot", var_nums=[2, 3], spec=tr_spec),
        )
    else:
        tr_spec = OneHot(4) if space == "one_hot" else Categorical(4)
        actor = QValueActor(
            _torch_mlp(params["value"]),
            in_keys=["observation"],
            spec=tr_spec,
            action_mask_key=mask_key,
        )
    ref = DQNLoss(actor, loss_function=loss_function, double_dqn=double, action_space=tr_spec)
    _load(ref.target_value_network_params, params["target_value"])
    td = batch.to_tensordict()
    ref_out = ref(td)
    online = list(ref.value_network_params.values(True, True))
    ref_grads = torch.autograd.grad(ref_out["loss"], online)

    def f(v):
        out = dqn.loss({**params, "value": v}, batch, config=cfg, nets=NETS)
        return out["loss"], out

    grads, out = torch.func.grad(f, has_aux=True)(params["value"])
    torch.testing.assert_close(out["loss"], ref_out["loss"], rtol=1e-5, atol=1e-5)
    # TorchRL writes (Q - y)^2 as [*B, 1]; funcrl returns |Q - y| as [*B].
    torch.testing.assert_close(
        out["td_error"], td["td_error"].squeeze(-1).sqrt(), rtol=1e-5, atol=1e-5
    )
    assert_trees_all_close(
        grads, _grads_tree(ref.value_network_params, ref_grads, grads), rtol=1e-5, atol=1e-5
    )


# --- errors --------------------------------------------------------------------------------------


def test_config_and_batch_errors():
    with pytest.raises(ValueError, match="double_dqn=True requires delay_value=True"):
        dqn.Config(double_dqn=True, delay_value=False)
    with pytest.raises(ValueError, match="loss_function"):
        dqn.Config(loss_function="huber")
    with pytest.raises(ValueError, match="var_nums"):
        dqn.Config(action_space="mult_one_hot")
    with pytest.raises(ValueError, match="action_space"):
        dqn.Config(action_space="multi_categorical")
    assert dqn.Config(action_space="one-hot").action_space == "one_hot"
    assert dqn.Config(action_space=specs.MultiOneHot([2, 3])).var_nums == (2, 3)
    with pytest.raises(ValueError, match="config.action_space"):
        dqn.init(0, specs.Unbounded(shape=(D,)), specs.Categorical(4), dqn.Config())
    params = dqn.init(0, specs.Unbounded(shape=(D,)), specs.OneHot(4), nets=NETS)
    batch = make_batch("one_hot", 4, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"batch\['action'\] has shape"):
        dqn.loss(params, batch.set("action", batch["action"][:, :3]), nets=NETS)
    with pytest.raises(KeyError, match="terminated"):
        dqn.loss(params, batch.exclude(("next", "terminated")), nets=NETS)
    with pytest.raises(ValueError, match="reward"):
        dqn.loss(params, batch.set(("next", "reward"), batch["next", "reward"][:, 0]), nets=NETS)
    with pytest.raises(TypeError, match="plain function"):
        dqn.init(
            0, specs.Unbounded(shape=(D,)), specs.OneHot(4), nets=dqn.Nets(value=lambda p, x: x)
        )


def test_no_target_and_binary_and_batch_dims():
    cfg = dqn.Config(delay_value=False, action_space="binary")
    params = dqn.init(0, specs.Unbounded(shape=(D,)), specs.Binary(4), cfg, NETS)
    assert set(params) == {"value"}
    batch = make_batch("binary", 4, dtype=torch.float32, batch=(2, 3))
    out = dqn.loss(params, batch, config=cfg, nets=NETS)
    assert out["loss"].shape == () and out["td_error"].shape == (2, 3)
    grads = torch.func.grad(lambda v: dqn.loss({"value": v}, batch, config=cfg, nets=NETS)["loss"])(
        params["value"]
    )
    assert all(torch.isfinite(g).all() for g in tree.leaves(grads))


# --- compile and vmap ----------------------------------------------------------------------------


def _setup(seed, cfg):
    params = dqn.init(seed, specs.Unbounded(shape=(D,)), specs.OneHot(4), cfg, NETS)
    train = dqn.trainer(optim.adam(1e-3), config=cfg, nets=NETS, hard_target_period=5)
    return params, train


def test_step_compiles_fullgraph_without_recompiles():
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    cfg = dqn.Config(double_dqn=True)
    params, train = _setup(0, cfg)
    state = train.init(params)
    counter = CompileCounterWithBackend("aot_eager")
    step = torch.compile(train.step, backend=counter, fullgraph=True)
    eager_params, eager_state = params, state
    for i in range(20):
        batch = make_batch("one_hot", 4, seed=i, dtype=torch.float32)
        params, state, metrics = step(params, state, batch)
        eager_params, eager_state, _ = train.step(eager_params, eager_state, batch)
    assert counter.frame_count == 1, f"recompiled: {counter.frame_count} frames"
    assert_trees_all_close(params, eager_params, rtol=1e-4, atol=1e-5)
    # The hard update copied the online net at step 20.
    assert_trees_all_close(params["target_value"], params["value"])


def test_step_vmaps_over_seeds():
    cfg = dqn.Config()
    runs = [_setup(s, cfg) for s in range(3)]
    train = runs[0][1]
    ps = [p for p, _ in runs]
    states = [train.init(p) for p in ps]
    batches = [make_batch("one_hot", 4, seed=10 + s, dtype=torch.float32) for s in range(3)]
    v_step = torch.func.vmap(train.step, randomness="different")
    vp, vs, vm = v_step(tree.stack(ps), tree.stack(states), Record.stack(batches))
    for s in range(3):
        p1, _, m1 = train.step(ps[s], states[s], batches[s])
        assert_trees_all_close(tree.map(lambda t, s=s: t[s], vp), p1, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(vm["loss"][s], m1["loss"])


@pytest.mark.parametrize("estimator", ["td1", "td_lambda"])
def test_value_estimator_parity_with_torchrl(estimator):
    """TD(1)/TD(lambda) over [B, T] trajectories: loss, |td| and gradients equal TorchRL's
    ``make_value_estimator`` (float64, weights copied)."""
    pytest.importorskip("torchrl", reason="TorchRL is the reference implementation")
    from torchrl.data import OneHot
    from torchrl.modules import QValueActor
    from torchrl.objectives import DQNLoss, ValueEstimators

    cfg = dqn.Config(value_estimator=estimator, lmbda=0.8, gamma=0.9)
    params = dqn.init(
        0, specs.Unbounded(shape=(D,)), specs.OneHot(4), cfg, NETS, dtype=torch.float64
    )
    params["target_value"] = perturbed(params["target_value"])
    batch = make_batch("one_hot", 4, batch=(3, 6))
    actor = QValueActor(_torch_mlp(params["value"]), in_keys=["observation"], spec=OneHot(4))
    ref = DQNLoss(actor, action_space=OneHot(4))
    kind = ValueEstimators.TD1 if estimator == "td1" else ValueEstimators.TDLambda
    kw = {"gamma": 0.9} if estimator == "td1" else {"gamma": 0.9, "lmbda": 0.8}
    ref.make_value_estimator(kind, **kw)
    _load(ref.target_value_network_params, params["target_value"])
    td = batch.to_tensordict()
    ref_out = ref(td)
    ref_grads = torch.autograd.grad(
        ref_out["loss"], list(ref.value_network_params.values(True, True))
    )

    def f(v):
        out = dqn.loss({**params, "value": v}, batch, config=cfg, nets=NETS)
        return out["loss"], out

    grads, out = torch.func.grad(f, has_aux=True)(params["value"])
    torch.testing.assert_close(out["loss"], ref_out["loss"], rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(out["td_error"], td["td_error"].squeeze(-1).sqrt())
    assert_trees_all_close(
        grads, _grads_tree(ref.value_network_params, ref_grads, grads), rtol=1e-6, atol=1e-8
    )
    # Not TD(0): the same batch under TD(0) gives another loss.
    td0 = dqn.loss(params, batch, config=dqn.Config(gamma=0.9), nets=NETS)["loss"]
    assert not torch.allclose(td0, out["loss"])


# --- acting --------------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    space=st.sampled_from(["one_hot", "categorical", "mult_one_hot"]),
    epsilon=st.sampled_from([0.0, 0.3, 1.0]),
)
def test_epsilon_greedy_draws_only_allowed_actions(seed, space, epsilon):
    import funcrl
    from funcrl.objectives import discrete

    g = torch.Generator().manual_seed(seed)
    var_nums = (2, 3) if space == "mult_one_hot" else None
    n = 5
    # 12 rows: draws of < 64 numbers stay off funcrl.random's compiled kernel (a slow first call).
    q = torch.randn(12, n, generator=g)
    mask = torch.rand(12, n, generator=g) < 0.5
    mask[:, 0] = True
    mask[:, 2] = True  # every group keeps an allowed action
    key = funcrl.random.key(seed)
    a = discrete.epsilon_greedy(q, space, var_nums, mask, epsilon=epsilon, key=key)
    assert torch.equal(
        a, discrete.epsilon_greedy(q, space, var_nums, mask, epsilon=epsilon, key=key)
    )
    chosen = torch.nn.functional.one_hot(a, n).bool() if space == "categorical" else a.bool()
    assert not (chosen & ~mask).any(), "a masked action was drawn"
    discrete.check_action(a, n, space, var_nums, batch_shape=(12,), owner="t")
    greedy = discrete.greedy_action(discrete.mask_action_values(q, mask), space, var_nums)
    if epsilon == 0.0:
        assert torch.equal(a, greedy)


def test_act_modes_by_hand():
    import funcrl

    # Q(s) = W s with W = I: the greedy action is the largest feature; a mask removes it.
    nets = dqn.Nets(value=funcrl.nn.MLP(3, 3, depth=0))
    params = {"value": {"layers": [{"weight": torch.eye(3), "bias": torch.zeros(3)}]}}
    obs = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 1.0]])
    cfg = dqn.Config(action_space="categorical")
    greedy = dqn.act(params, obs, config=cfg, nets=nets, mode="deterministic")
    assert greedy.tolist() == [1, 0]
    mask = torch.tensor([[True, False, True], [False, True, True]])
    masked = dqn.act(params, obs, config=cfg, nets=nets, mode="deterministic", action_mask=mask)
    assert masked.tolist() == [2, 2]
    # epsilon = 0: random mode is greedy; epsilon = 1: uniform over the allowed actions.
    key = funcrl.random.key(0)
    assert dqn.act(params, obs, config=cfg, nets=nets, key=key, epsilon=0.0).tolist() == [1, 0]
    many = obs.repeat(10, 1)
    draws = dqn.act(
        params, many, config=cfg, nets=nets, key=key, epsilon=1.0, action_mask=mask.repeat(10, 1)
    ).reshape(10, 2)
    assert set(draws[:, 0].tolist()) == {0, 2} and set(draws[:, 1].tolist()) == {1, 2}
    one_hot = dqn.act(params, obs, nets=nets, mode="deterministic")
    assert one_hot.tolist() == [[0, 1, 0], [1, 0, 0]] and one_hot.dtype == torch.int64
    # The global RNG path (key=None) draws from torch's RNG.
    torch.manual_seed(0)
    a = dqn.act(params, many, config=cfg, nets=nets, epsilon=1.0)
    torch.manual_seed(0)
    assert torch.equal(a, dqn.act(params, many, config=cfg, nets=nets, epsilon=1.0))


@pytest.mark.parametrize("kind", ["dueling", "torch_module"])
def test_any_funcrl_net_works(kind):
    """A dueling net or a wrapped torch module is a Q-network like the default MLP: init, loss
    (with gradients), act and a trainer step."""
    import funcrl

    if kind == "dueling":
        net = funcrl.nn.DuelingMlpDQNet(
            D, 4, feature_num_cells=(8,), feature_out=8, head_num_cells=(8,)
        )
    else:
        net = funcrl.nn.TorchModule(
            torch.nn.Sequential(torch.nn.Linear(D, 8), torch.nn.Tanh(), torch.nn.Linear(8, 4))
        )
    nets = dqn.Nets(value=net)
    cfg = dqn.Config(double_dqn=True)
    params = dqn.init(0, specs.Unbounded(shape=(D,)), specs.OneHot(4), cfg, nets)
    batch = make_batch("one_hot", 4, dtype=torch.float32)
    out = dqn.loss(params, batch, config=cfg, nets=nets)
    assert out["loss"].shape == () and out["td_error"].shape == (B,)
    action = dqn.act(params, batch["observation"], config=cfg, nets=nets, mode="deterministic")
    assert action.shape == (B, 4) and bool((action.sum(-1) == 1).all())
    train = dqn.trainer(optim.adam(1e-3), config=cfg, nets=nets)
    new, _, metrics = train.step(params, train.init(params), batch)
    assert not torch.equal(tree.leaves(new["value"])[0], tree.leaves(params["value"])[0])
