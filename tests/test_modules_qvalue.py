"""Q-value policies: greedy actions, chosen values, masks, distributional; parity with TorchRL."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from funcrl import Record
from funcrl.modules import (
    DistributionalQValueActor,
    QValueActor,
    QValueModule,
    chosen_action_value,
    greedy_action,
    support_expected,
)
from funcrl.nn import Linear
from funcrl.specs import Binary, Categorical, MultiOneHot, OneHot


def _torch_linear(p: dict) -> torch.nn.Linear:
    out_f, in_f = p["weight"].shape
    lin = torch.nn.Linear(in_f, out_f)
    with torch.no_grad():
        lin.weight.copy_(p["weight"])
        lin.bias.copy_(p["bias"])
    return lin


def test_greedy_action_hand_computed():
    v = torch.tensor([[1.0, 3.0, 2.0], [0.5, -1.0, 0.5]])
    assert greedy_action(v, "categorical").tolist() == [1, 0]
    # TorchRL's one-hot marks every maximum (ties included).
    assert greedy_action(v, "one_hot").tolist() == [[0, 1, 0], [1, 0, 1]]
    assert greedy_action(v, "binary").tolist() == [[1, 1, 1], [1, 0, 1]]
    mv = torch.tensor([[1.0, 2.0, 5.0, 4.0, 0.0]])
    assert greedy_action(mv, "mult_one_hot", (2, 3)).tolist() == [[0, 1, 1, 0, 0]]
    cat = greedy_action(v, "categorical")
    torch.testing.assert_close(
        chosen_action_value(v, cat, "categorical"), torch.tensor([[3.0], [0.5]])
    )
    oh = greedy_action(v, "one_hot")
    torch.testing.assert_close(chosen_action_value(v, oh, "one_hot"), torch.tensor([[3.0], [1.0]]))
    with pytest.raises(ValueError, match="var_nums"):
        greedy_action(mv, "mult_one_hot")


@given(st.integers(1, 5), st.integers(2, 6), st.integers(0, 2**31 - 1))
def test_binary_greedy_maximises_the_factorised_q(batch, n, seed):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(batch, n, generator=g)
    best = chosen_action_value(v, greedy_action(v, "binary"), "binary")
    other = torch.randint(0, 2, (batch, n), generator=g)
    assert (best >= chosen_action_value(v, other, "binary")).all()


def test_action_mask_is_respected():
    mod = QValueModule(action_space="categorical", action_mask_key="action_mask")
    v = torch.tensor([[5.0, 1.0, 2.0], [0.0, 9.0, -1.0]])
    mask = torch.tensor([[False, True, True], [True, False, True]])
    out = mod({}, Record({"action_value": v, "action_mask": mask}, batch_ndim=1))
    assert out["action"].tolist() == [2, 0]
    torch.testing.assert_close(out["chosen_action_value"], torch.tensor([[2.0], [0.0]]))
    with pytest.raises(KeyError, match="action_mask"):
        mod({}, Record({"action_value": v}, batch_ndim=1))


@pytest.mark.parametrize(
    "space, spec_fn",
    [
        ("one_hot", lambda mod: mod.OneHot(4)),
        ("categorical", lambda mod: mod.Categorical(4)),
        ("mult_one_hot", lambda mod: mod.MultiOneHot([2, 2])),
    ],
)
def test_qvalue_actor_parity_with_torchrl(space, spec_fn):
    pytest.importorskip("torchrl", reason="TorchRL is the reference implementation")
    import torchrl.data as tspecs
    from tensordict import TensorDict
    from torchrl.modules import QValueActor as RefQValueActor

    import funcrl.specs as fspecs

    lin = Linear(3, 4)
    params = lin.init(1)
    obs = torch.randn(7, 3)
    mask = torch.rand(7, 4) > 0.3
    mask[:, 0] = True
    for mask_key in (None, "action_mask"):
        mine = QValueActor(lin, spec=spec_fn(fspecs), action_mask_key=mask_key)
        if space == "mult_one_hot":  # TorchRL's QValueActor cannot pass var_nums
            from tensordict.nn import TensorDictModule, TensorDictSequential
            from torchrl.modules import QValueModule as RefQValueModule

            ref = TensorDictSequential(
                TensorDictModule(_torch_linear(params), ["observation"], ["action_value"]),
                RefQValueModule(spec=spec_fn(tspecs), var_nums=[2, 2], action_mask_key=mask_key),
            )
        else:
            ref = RefQValueActor(
                _torch_linear(params),
                spec=spec_fn(tspecs),
                in_keys=["observation"],
                action_mask_key=mask_key,
            )
        data = {"observation": obs}
        if mask_key is not None:
            data[mask_key] = mask
        out = mine(params, Record(data, batch_ndim=1))
        ref_out = ref(TensorDict(dict(data), [7]))
        assert mine.action_space == space
        for key in ("action", "action_value", "chosen_action_value"):
            torch.testing.assert_close(out[key], ref_out[key].detach(), rtol=1e-5, atol=1e-5)
        assert sorted(map(str, out.keys())) == sorted(map(str, ref_out.keys()))


def test_binary_spec_action_space_and_safe_projection():
    actor = QValueActor(Linear(3, 4), spec=Binary(4), safe=True)
    assert actor.action_space == "binary"
    params = actor.init(0)
    out = actor(params, Record({"observation": torch.randn(5, 3)}, batch_ndim=1))
    torch.testing.assert_close(out["action"], (out["action_value"] > 0).to(out["action"].dtype))
    safe = QValueActor(Linear(3, 4), spec=OneHot(4), safe=True)(
        params, Record({"observation": torch.randn(5, 3)}, batch_ndim=1)
    )
    assert safe["action"].dtype == torch.bool  # projected onto the OneHot spec (its dtype)
    with pytest.raises(ValueError, match="does not match"):
        QValueActor(Linear(3, 4), spec=OneHot(4), action_space="categorical")
    with pytest.raises(ValueError, match="action_space must be one of"):
        QValueModule(action_space="continuous")


def test_distributional_parity_with_torchrl():
    pytest.importorskip("torchrl", reason="TorchRL is the reference implementation")
    from tensordict import TensorDict
    from torchrl.data import OneHot as RefOneHot
    from torchrl.modules import DistributionalQValueActor as RefDQ

    n_atoms, n_actions = 5, 3
    support = torch.linspace(-2.0, 2.0, n_atoms)
    lin = Linear(4, n_atoms * n_actions)
    params = lin.init(2)

    def net(p, x):
        return lin(p, x).reshape(*x.shape[:-1], n_atoms, n_actions)

    class RefNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = _torch_linear(params)

        def forward(self, x):
            return self.lin(x).reshape(*x.shape[:-1], n_atoms, n_actions)

    obs = torch.randn(6, 4)
    mine = DistributionalQValueActor(net, support=support, spec=OneHot(n_actions))
    ref = RefDQ(RefNet(), support=support, spec=RefOneHot(n_actions), in_keys=["observation"])
    out = mine(params, Record({"observation": obs}, batch_ndim=1))
    ref_out = ref(TensorDict({"observation": obs}, [6]))
    torch.testing.assert_close(out["action"], ref_out["action"])
    torch.testing.assert_close(
        out["action_value"], ref_out["action_value"].detach(), rtol=1e-5, atol=1e-5
    )
    # Hand check: the greedy action maximises sum_j p_j z_j.
    q = support_expected(out["action_value"], support)
    expected = (out["action_value"].exp() * support[:, None]).sum(-2)
    torch.testing.assert_close(q, expected)
    torch.testing.assert_close(out["action"].argmax(-1), q.argmax(-1))


def test_distributional_mask_never_selects_masked_action():
    support = torch.tensor([0.0, 1.0])
    logits = torch.tensor([[[0.0, 0.0], [5.0, -5.0]]]).log_softmax(-2)  # action 0 has E[Z] ~ 1
    actor = DistributionalQValueActor(
        lambda p, x: logits.expand(x.shape[0], 2, 2),
        support=support,
        spec=Categorical(2),
        action_mask_key="mask",
        make_log_softmax=False,
    )
    rec = Record(
        {"observation": torch.zeros(1, 1), "mask": torch.tensor([[False, True]])}, batch_ndim=1
    )
    assert actor({}, rec)["action"].tolist() == [1]


def test_qvalue_actor_vmap_and_compile():
    actor = QValueActor(Linear(3, 4), spec=MultiOneHot([2, 2]), action_mask_key="mask")
    params = actor.init(0)
    rec = Record({"observation": torch.randn(6, 3), "mask": torch.rand(6, 4) > 0.2}, batch_ndim=1)
    full = actor(params, rec)
    vm = torch.func.vmap(lambda r: actor(params, r))(rec)
    for key in ("action", "chosen_action_value"):
        torch.testing.assert_close(vm[key], full[key])
    torch._dynamo.reset()
    compiled = torch.compile(lambda p, r: actor(p, r)["action"], fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(params, rec), full["action"])
