import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from funcrl import Record, tree
from funcrl.modules.lm_head import LMHeadActorValueOperator, last_hidden_state
from funcrl.nn.core import make_generator
from funcrl.nn.transformer import CausalTransformer, DTConfig

V, HID, T = 11, 8, 5


@dataclasses.dataclass(frozen=True)
class TinyLM:
    """A funcrl-style causal LM: token embedding + the GPT-2 trunk."""

    config: DTConfig = DTConfig(
        n_embd=HID,
        n_layer=1,
        n_head=2,
        n_inner=16,
        n_positions=16,
        resid_pdrop=0.0,
        attn_pdrop=0.0,
        embd_pdrop=0.0,
    )

    def init(self, seed=0, *, device=None, dtype=torch.float32):
        gen = make_generator(seed)
        return {
            "wte": torch.randn(V, HID, generator=gen).to(device=device, dtype=dtype),
            "gpt": CausalTransformer(self.config).init(gen, device=device, dtype=dtype),
        }

    def __call__(self, params, input_ids, attention_mask=None):
        mask = None if attention_mask is None else attention_mask.bool()
        return CausalTransformer(self.config)(
            params["gpt"], params["wte"][input_ids], attention_mask=mask
        )


def _record(batch=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V, (batch, T), generator=g)
    return Record({"input_ids": ids, "attention_mask": torch.ones(batch, T, dtype=torch.long)}, 1)


def test_heads_on_last_hidden_state():
    lm = TinyLM()
    op = LMHeadActorValueOperator(lm, HID, V)
    params = op.init(0)
    assert params["policy"]["weight"].shape == (V, HID) and "bias" not in params["policy"]
    assert params["value"]["weight"].shape == (1, HID)
    rec = _record()
    out = op(params, rec)
    x = lm(params["common"], rec["input_ids"])[:, -1]
    torch.testing.assert_close(out["x"], x)
    torch.testing.assert_close(out["logits"], x @ params["policy"]["weight"].T)
    torch.testing.assert_close(out["state_value"], x @ params["value"]["weight"].T)
    assert out["state_value"].shape == (3, 1)
    # deterministic (TorchRL's default): the most likely token, with its log-probability.
    torch.testing.assert_close(out["action"], out["logits"].argmax(-1))
    torch.testing.assert_close(
        out["action_log_prob"],
        F.log_softmax(out["logits"], -1).gather(-1, out["action"][:, None])[:, 0],
    )


def test_sampling_and_views_share_params():
    op = LMHeadActorValueOperator(TinyLM(), HID, V)
    params = op.init(1)
    rec = _record(batch=64)
    torch.manual_seed(0)
    a = op(params, rec, interaction="random")["action"]
    torch.manual_seed(0)
    b = op.get_policy_operator()(params, rec, interaction="random")["action"]
    torch.testing.assert_close(a, b)
    assert a.dtype == torch.int64 and ((a >= 0) & (a < V)).all()
    v = op.get_value_operator()(params, rec)
    assert "action" not in v and v["state_value"].shape == (64, 1)


def test_pretrained_params_kept_and_attention_mask_optional():
    lm = TinyLM()
    pre = lm.init(5)
    head = {"weight": torch.randn(V, HID)}
    op = LMHeadActorValueOperator(lm, HID, V)
    params = op.init(0, lm_params=pre, lm_head_params=head)
    assert params["common"] is pre and params["policy"] is head
    rec = _record().exclude("attention_mask")
    assert op(params, rec)["logits"].shape == (3, V)


def test_bad_lm_output_raises():
    op = LMHeadActorValueOperator(
        lambda p, input_ids, attention_mask=None: torch.zeros(3, T, HID + 1), HID, V
    )
    with pytest.raises(ValueError, match="hidden states"):
        op({"common": {}, "policy": op.init(0)["policy"], "value": op.init(0)["value"]}, _record())
    with pytest.raises(TypeError, match="cannot find"):
        last_hidden_state(3)


def test_grad_vmap_compile():
    op = LMHeadActorValueOperator(TinyLM(), HID, V)
    params = op.init(0)
    rec = _record()

    def loss(p):
        out = op(p, rec)
        return out["state_value"].square().mean() - out["action_log_prob"].mean()

    g = torch.func.grad(loss)(params)
    assert g["common"]["wte"].abs().sum() > 0 and g["value"]["weight"].abs().sum() > 0
    stacked = tree.stack([op.init(i) for i in range(2)])
    vals = torch.func.vmap(lambda p: op(p, rec)["state_value"])(stacked)
    torch.testing.assert_close(vals[1], op(op.init(1), rec)["state_value"], atol=1e-5, rtol=1e-5)
    torch._dynamo.reset()
    compiled = torch.compile(lambda p, r: op(p, r)["logits"], fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(params, rec), op(params, rec)["logits"])


# ------------------------------------------------------------------ parity with TorchRL


class _Trunk(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, HID)
        self.rnn = nn.GRU(HID, HID, batch_first=True)

    def forward(self, input_ids, attention_mask=None):
        x = self.emb(input_ids)
        if attention_mask is not None:
            x = x * attention_mask.unsqueeze(-1)
        return self.rnn(x)  # (hidden states, last state): TorchRL keeps the first


class _LMHeadModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.transformer = _Trunk()
        self.lm_head = nn.Linear(HID, V, bias=False)


def test_parity_with_torchrl():
    pytest.importorskip("torchrl", reason="TorchRL is the parity reference")
    from tensordict import TensorDict
    from torchrl.modules import LMHeadActorValueOperator as TorchRLOp

    torch.manual_seed(0)
    base = _LMHeadModel()
    ref = TorchRLOp(base)
    op, params = LMHeadActorValueOperator.from_lm_head_model(base)
    params["value"] = {"weight": ref.get_value_head().module.weight.detach().clone()}
    rec = _record(batch=4)
    rec = rec.set("attention_mask", torch.tensor([[0, 1, 1, 1, 1]] * 4))
    with torch.no_grad():
        td = ref(TensorDict(rec.to_dict(), [4]))
    out = op(params, rec)
    for key in ["x", "logits", "state_value", "action"]:
        torch.testing.assert_close(out[key], td[key], atol=1e-5, rtol=1e-5)
    lp_key = "action_log_prob" if "action_log_prob" in td.keys() else "sample_log_prob"
    torch.testing.assert_close(out["action_log_prob"], td[lp_key], atol=1e-5, rtol=1e-5)
