"""Keyed wrapper, Sequential and VmapModule: keys, errors, safe projection, vmap, compile."""

from __future__ import annotations

import pytest
import torch

from funcrl import Record
from funcrl.modules import Keyed, Sequential, VmapModule
from funcrl.nn import MLP, Linear
from funcrl.specs import Bounded, Composite


def _torch_linear(p: dict) -> torch.nn.Linear:
    out_f, in_f = p["weight"].shape
    lin = torch.nn.Linear(in_f, out_f)
    with torch.no_grad():
        lin.weight.copy_(p["weight"])
        lin.bias.copy_(p["bias"])
    return lin


def _rec(batch: int = 3, **entries) -> Record:
    data = {"observation": torch.randn(batch, 4)}
    data.update(entries)
    return Record(data, batch_ndim=1)


def test_keyed_writes_out_key_and_leaves_input_unchanged():
    mod = Keyed(Linear(4, 2), ["observation"], ["hidden"])
    params = mod.init(0)
    rec = _rec()
    out = mod(params, rec)
    assert "hidden" not in rec
    torch.testing.assert_close(
        out["hidden"], rec["observation"] @ params["weight"].T + params["bias"]
    )
    assert out["observation"] is rec["observation"]
    assert mod.in_keys == ("observation",) and mod.out_keys == ("hidden",)


def test_keyed_tuple_outputs_and_underscore_drop():
    def net(params, x, y):
        return x + y, x - y, x * y

    mod = Keyed(net, ["a", ("nested", "b")], ["sum", "_", ("out", "prod")])
    rec = Record({"a": torch.ones(2, 3), ("nested", "b"): 2 * torch.ones(2, 3)}, batch_ndim=1)
    out = mod(mod.init(), rec)
    torch.testing.assert_close(out["sum"], 3 * torch.ones(2, 3))
    torch.testing.assert_close(out["out", "prod"], 2 * torch.ones(2, 3))
    assert "_" not in out
    assert mod.init() == {}  # a plain function has no params


def test_missing_in_key_names_key_and_available_keys():
    mod = Keyed(Linear(4, 2), ["obs"], ["action"])
    with pytest.raises(KeyError) as err:
        mod(mod.init(0), _rec())
    msg = str(err.value)
    assert "'obs'" in msg and "observation" in msg


def test_output_count_mismatch_raises():
    mod = Keyed(Linear(4, 2), ["observation"], ["a", "b"])
    with pytest.raises(ValueError, match="returned 1 output"):
        mod(mod.init(0), _rec())


def test_wrong_batch_of_output_raises():
    mod = Keyed(lambda p, x: x.sum(0), ["observation"], ["s"])
    with pytest.raises(ValueError, match="batch"):
        mod({}, _rec())


def test_safe_projects_onto_spec_and_requires_a_spec():
    spec = Bounded(-0.05, 0.05, shape=(2,))
    lin = Linear(4, 2)
    params = {"weight": torch.full((2, 4), 3.0), "bias": torch.tensor([0.0, -100.0])}
    rec = _rec(observation=torch.tensor([[1.0, 1, 1, 1], [-1, -1, -1, -1], [0, 0, 0, 0.01]]))
    safe = Keyed(lin, ["observation"], ["action"], spec=spec, safe=True)(params, rec)["action"]
    raw = Keyed(lin, ["observation"], ["action"], spec=spec)(params, rec)["action"]
    torch.testing.assert_close(safe, raw.clamp(-0.05, 0.05))
    assert bool(spec.is_in(safe)) and not bool(spec.is_in(raw))
    with pytest.raises(ValueError, match="safe=True requires a spec"):
        Keyed(lin, ["observation"], ["action"], safe=True)
    # Composite and mapping specs select the projected key.
    comp = Keyed(lin, ["observation"], ["action"], spec=Composite(action=spec), safe=True)
    torch.testing.assert_close(comp(params, rec)["action"], safe)
    mapped = Keyed(lin, ["observation"], ["action"], spec={"action": spec}, safe=True)
    torch.testing.assert_close(mapped(params, rec)["action"], safe)


def test_safe_module_parity_with_torchrl():
    pytest.importorskip("torchrl", reason="TorchRL is the reference implementation")
    from tensordict import TensorDict
    from torchrl.data import Bounded as RefBounded
    from torchrl.modules import SafeModule

    lin = Linear(4, 3)
    params = lin.init(3)
    params = {k: v * 4 for k, v in params.items()}
    rec = _rec(batch=5)
    spec = Bounded(-0.5, 0.5, shape=(3,))
    mine = Keyed(lin, ["observation"], ["out"], spec=spec, safe=True)(params, rec)
    ref_spec = RefBounded(-0.5, 0.5, shape=(3,))
    ref_mod = SafeModule(
        _torch_linear(params), in_keys=["observation"], out_keys=["out"], spec=ref_spec, safe=True
    )
    ref = ref_mod(TensorDict({"observation": rec["observation"]}, [5]))
    torch.testing.assert_close(mine["out"], ref["out"].detach(), rtol=1e-5, atol=1e-5)
    assert sorted(mine.keys()) == sorted(ref.keys())


def test_sequential_tuple_and_named_params():
    a = Keyed(Linear(4, 8), ["observation"], ["hidden"])
    b = Keyed(Linear(8, 2), ["hidden"], ["action"])
    seq = Sequential(a, b)
    params = seq.init(0)
    assert isinstance(params, tuple) and len(params) == 2
    rec = _rec()
    out = seq(params, rec)
    torch.testing.assert_close(out["action"], b(params[1], a(params[0], rec))["action"])
    assert seq.in_keys == ("observation",) and seq.out_keys == ("hidden", "action")

    named = Sequential({"trunk": a, "head": b})
    nparams = named.init(0)
    assert set(nparams) == {"trunk", "head"}
    # Members draw from one generator: different layers get different weights.
    assert not torch.equal(nparams["trunk"]["weight"][:2, :4], nparams["head"]["weight"][:2, :4])
    extra = {**nparams, "other": torch.zeros(1)}  # a named view ignores other entries
    torch.testing.assert_close(named(extra, rec)["action"], named(nparams, rec)["action"])
    assert named["head"] is b and seq[0] is a

    with pytest.raises(ValueError, match="one entry per member"):
        seq(params[:1], rec)
    with pytest.raises(KeyError, match="head"):
        named({"trunk": nparams["trunk"]}, rec)


def test_forward_options_reach_the_net():
    mlp = MLP(4, 2, num_cells=(64,), dropout=0.5)
    mod = Keyed(mlp, ["observation"], ["y"], forward_options=("train",))
    params = mod.init(0)
    rec = _rec(batch=8)
    evals = mod(params, rec)["y"]
    torch.testing.assert_close(Sequential(mod)((params,), rec, train=False)["y"], evals)
    torch.manual_seed(0)
    trained = Sequential(mod)((params,), rec, train=True)["y"]
    assert not torch.allclose(trained, evals)
    # Without forward_options the option is not passed (and the MLP stays in eval mode).
    plain = Keyed(mlp, ["observation"], ["y"])
    torch.testing.assert_close(plain(params, rec, train=True)["y"], evals)


def test_vmap_module_maps_over_last_batch_dim():
    def single_agent(params, x):
        if x.ndim != 2:  # written for [batch, features]; vmap hides the agent dim
            raise AssertionError(f"expected 2 dims, got {tuple(x.shape)}")
        return x @ params["w"]

    mod = Keyed(single_agent, ["obs"], ["out"])
    params = {"w": torch.randn(4, 3)}
    rec = Record({"obs": torch.randn(5, 2, 4)}, batch_ndim=2)
    out = VmapModule(mod)(params, rec)
    torch.testing.assert_close(out["out"], rec["obs"] @ params["w"])
    assert out.batch_size == torch.Size([5, 2])
    out0 = VmapModule(mod, vmap_dim=0)(params, rec)
    torch.testing.assert_close(out0["out"], rec["obs"] @ params["w"])
    with pytest.raises(ValueError, match="no batch dimension"):
        VmapModule(mod)(params, Record({"obs": torch.randn(2, 4)}))


def test_keyed_under_vmap_and_grad():
    mod = Keyed(Linear(4, 2), ["observation"], ["action"])
    params = mod.init(0)
    rec = _rec(batch=6)
    per_sample = torch.func.vmap(lambda r: mod(params, r))(rec)
    torch.testing.assert_close(per_sample["action"], mod(params, rec)["action"])

    def loss(p):
        return mod(p, rec)["action"].pow(2).sum()

    grads = torch.func.grad(loss)(params)
    assert grads["weight"].shape == (2, 4) and torch.isfinite(grads["weight"]).all()


def test_sequential_compiles_fullgraph():
    torch._dynamo.reset()
    spec = Bounded(-1.0, 1.0, shape=(2,))
    seq = Sequential(
        Keyed(Linear(4, 8), ["observation"], ["hidden"]),
        Keyed(Linear(8, 2), ["hidden"], ["action"], spec=spec, safe=True),
    )
    params = seq.init(0)
    rec = _rec()
    compiled = torch.compile(lambda p, r: seq(p, r)["action"], fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(params, rec), seq(params, rec)["action"])
