import dataclasses
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from funcrl import Record, tree
from funcrl.distributions import TanhNormal
from funcrl.modules import DecisionTransformerInferenceWrapper, Keyed, ProbabilisticActor
from funcrl.nn.transformer import (
    CausalTransformer,
    DecisionTransformer,
    DTActor,
    DTConfig,
    OnlineDTActor,
    bounded_log_std,
    causal_self_attention,
)

TINY = DTConfig(n_embd=8, n_layer=2, n_head=2, n_inner=16, n_positions=30)
NODROP = DTConfig(
    n_embd=8,
    n_layer=2,
    n_head=2,
    n_inner=16,
    n_positions=30,
    resid_pdrop=0.0,
    attn_pdrop=0.0,
    embd_pdrop=0.0,
)
S, A, T = 3, 2, 4


def _inputs(batch=(2,), steps=T, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(*batch, steps, S, generator=g),
        torch.randn(*batch, steps, A, generator=g),
        torch.randn(*batch, steps, 1, generator=g),
    )


# ------------------------------------------------------------------ shapes and init


def test_shapes_and_defaults():
    dt = DecisionTransformer(S, A, TINY)
    p = dt.init(0)
    obs, act, rtg = _inputs(batch=(2, 3))
    assert dt(p, obs, act, rtg).shape == (2, 3, T, 8)
    assert dt(p, obs[0, 0], act[0, 0], rtg[0, 0]).shape == (T, 8)  # no batch dims
    assert DTActor(S, A, TINY)(DTActor(S, A, TINY).init(0), obs, act, rtg).shape == (2, 3, T, A)
    assert DTActor.default_config().n_embd == 512 and DTActor.default_config().n_inner == 2048
    assert DTConfig().n_embd == 256 and DTConfig().n_inner == 1024
    assert p["transformer"]["h"][0]["attn"]["c_attn"]["weight"].shape == (24, 8)
    assert p["transformer"]["wpe"].shape == (30, 8)
    assert DecisionTransformer(S, A, {"n_embd": 8, "n_head": 2}).config.n_embd == 8


def test_gpt2_init_statistics():
    cfg = DTConfig(n_embd=64, n_layer=8, n_head=4, n_inner=256)
    p = CausalTransformer(cfg).init(0)
    w = p["h"][0]["mlp"]["c_fc"]["weight"]
    assert abs(w.std().item() - 0.02) < 0.002
    proj = torch.cat([b["mlp"]["c_proj"]["weight"].flatten() for b in p["h"]])
    assert abs(proj.std().item() - 0.02 / math.sqrt(16)) < 0.001
    assert (p["h"][0]["attn"]["c_attn"]["bias"] == 0).all()
    w = DTActor(S, A, TINY).init(0)["action_layer"]["weight"]  # orthogonal rows
    torch.testing.assert_close(w @ w.T, torch.eye(A), atol=1e-5, rtol=0)


def test_bad_inputs_raise():
    dt = DecisionTransformer(S, A, TINY)
    p = dt.init(0)
    obs, act, rtg = _inputs()
    with pytest.raises(
        ValueError,
        match=r"DecisionTransformer\(.*\): input action has shape \(2, 4, 1\), expected \[\.\.\., \*, 2\]",
    ):
        dt(p, obs, act[..., :1], rtg)
    with pytest.raises(ValueError, match="share"):
        dt(p, obs, act[:, :3], rtg)
    with pytest.raises(ValueError, match="exceed n_positions"):
        dt(p, *_inputs(steps=11))
    with pytest.raises(ValueError, match="must divide"):
        DTConfig(n_embd=10, n_head=4)
    dt10 = DecisionTransformer(S, A, TINY, max_ep_len=10)
    with pytest.raises(ValueError, match="timesteps"):
        dt10(dt10.init(0), obs, act, rtg)
    # Params without the timestep embedding are not this net's.
    with pytest.raises(
        ValueError, match=r"max_ep_len=10\): params: .*missing \['embed_timestep'\]"
    ):
        dt10(p, obs, act, rtg)


# ------------------------------------------------------------------ hand-checked equations


def test_attention_hand_computed_single_head():
    e = 2
    # q = k = v = x (stacked identity blocks), identity output projection.
    p = {
        "c_attn": {"weight": torch.cat([torch.eye(e)] * 3), "bias": torch.zeros(3 * e)},
        "c_proj": {"weight": torch.eye(e), "bias": torch.zeros(e)},
    }
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    out = causal_self_attention(p, x, n_head=1)
    torch.testing.assert_close(out[0], x[0])  # the first token only sees itself
    s = torch.tensor([x[1] @ x[0], x[1] @ x[1]]) / math.sqrt(e)
    w = torch.softmax(s, 0)
    torch.testing.assert_close(out[1], w[0] * x[0] + w[1] * x[1])


def test_online_dt_log_std_bounds():
    assert bounded_log_std(torch.tensor(0.0)).item() == pytest.approx(-1.5)
    assert bounded_log_std(torch.tensor(50.0)).item() == pytest.approx(2.0)
    assert bounded_log_std(torch.tensor(-50.0)).item() == pytest.approx(-5.0)
    actor = OnlineDTActor(S, A, TINY)
    p = actor.init(0)
    p["action_layer_logstd"]["weight"] = torch.zeros(A, 8)
    mu, std = actor(p, *_inputs())
    torch.testing.assert_close(std, torch.full((2, T, A), math.exp(-1.5)))
    assert mu.shape == (2, T, A)
    p["action_layer_logstd"]["weight"] = torch.full((A, 8), 1e3)
    _, std = actor(p, *_inputs())
    assert (std >= math.exp(-5.0) - 1e-6).all() and (std <= math.exp(2.0) + 1e-5).all()
    with pytest.raises(ValueError, match="log_std_min < log_std_max"):
        OnlineDTActor(S, A, TINY, log_std_min=1.0, log_std_max=0.0)


# ------------------------------------------------------------------ causality


@given(t=st.integers(0, T - 1), seed=st.integers(0, 1000))
def test_output_at_t_ignores_future_and_current_action(t, seed):
    dt = DecisionTransformer(S, A, NODROP)
    p = dt.init(1)
    obs, act, rtg = _inputs(seed=seed)
    out = dt(p, obs, act, rtg)
    g = torch.Generator().manual_seed(seed + 1)
    obs2, rtg2 = obs.clone(), rtg.clone()
    obs2[:, t + 1 :] = torch.randn(obs2[:, t + 1 :].shape, generator=g)
    rtg2[:, t + 1 :] = torch.randn(rtg2[:, t + 1 :].shape, generator=g)
    act2 = act.clone()
    act2[:, t:] = torch.randn(act2[:, t:].shape, generator=g)  # a_t is what is predicted at s_t
    out2 = dt(p, obs2, act2, rtg2)
    torch.testing.assert_close(out2[:, : t + 1], out[:, : t + 1], atol=1e-5, rtol=1e-5)
    if t + 1 < T:  # and a_t does reach the next step
        out3 = dt(p, obs, act2, rtg)
        assert not torch.allclose(out3[:, t + 1], out[:, t + 1])


def test_attention_mask_hides_padded_steps():
    dt = DecisionTransformer(S, A, NODROP)
    p = dt.init(0)
    obs, act, rtg = _inputs()
    mask = torch.tensor([[False, True, True, True], [True, True, True, True]])
    out = dt(p, obs, act, rtg, attention_mask=mask)
    obs2 = obs.clone()
    obs2[0, 0] = 100.0
    out2 = dt(p, obs2, act, rtg, attention_mask=mask)
    torch.testing.assert_close(out2[0, 1:], out[0, 1:], atol=1e-5, rtol=1e-5)
    assert torch.isfinite(out).all()


def test_timestep_embeddings():
    dt = DecisionTransformer(S, A, NODROP, max_ep_len=50)
    p = dt.init(0)
    obs, act, rtg = _inputs()
    ts = torch.arange(T).expand(2, T)
    out = dt(p, obs, act, rtg, timesteps=ts)
    assert p["embed_timestep"].shape == (50, 8)
    assert not torch.allclose(out, dt(p, obs, act, rtg, timesteps=ts + 10))


# ------------------------------------------------------------------ parity with torch's layer


def test_parity_with_torch_pre_ln_encoder():
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(
        8, 2, 16, dropout=0.0, activation="relu", batch_first=True, norm_first=True
    )
    ref = torch.nn.TransformerEncoder(
        layer, 2, norm=torch.nn.LayerNorm(8), enable_nested_tensor=False
    )
    net = CausalTransformer(NODROP)
    p = net.init(0)
    for blk, mod in zip(p["h"], ref.layers):
        blk["attn"]["c_attn"] = {
            "weight": mod.self_attn.in_proj_weight,
            "bias": mod.self_attn.in_proj_bias,
        }
        blk["attn"]["c_proj"] = {
            "weight": mod.self_attn.out_proj.weight,
            "bias": mod.self_attn.out_proj.bias,
        }
        blk["mlp"]["c_fc"] = {"weight": mod.linear1.weight, "bias": mod.linear1.bias}
        blk["mlp"]["c_proj"] = {"weight": mod.linear2.weight, "bias": mod.linear2.bias}
        blk["ln_1"] = {"weight": mod.norm1.weight, "bias": mod.norm1.bias}
        blk["ln_2"] = {"weight": mod.norm2.weight, "bias": mod.norm2.bias}
    p["ln_f"] = {"weight": ref.norm.weight, "bias": ref.norm.bias}
    x = torch.randn(3, 7, 8)
    mask = torch.nn.Transformer.generate_square_subsequent_mask(7)
    with torch.no_grad():
        expected = ref(x + p["wpe"][:7], mask=mask, is_causal=True)
        torch.testing.assert_close(net(p, x), expected, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------ dropout, grads, transforms


def test_dropout_only_in_train_mode_and_reproducible():
    actor = DTActor(S, A, TINY)
    p = actor.init(0)
    x = _inputs()
    torch.testing.assert_close(actor(p, *x), actor(p, *x))
    torch.manual_seed(3)
    a = actor(p, *x, train=True)
    torch.manual_seed(3)
    b = actor(p, *x, train=True)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, actor(p, *x))


def test_grad_vmap_compile():
    actor = OnlineDTActor(S, A, NODROP)
    p = actor.init(0)
    x = _inputs()

    def loss(params):
        mu, std = actor(params, *x)
        return -TanhNormal(mu, std).log_prob(torch.zeros(2, T, A).clamp(-0.5, 0.5)).mean()

    g = torch.func.grad(loss)(p)
    assert g["transformer"]["transformer"]["h"][0]["attn"]["c_attn"]["weight"].abs().sum() > 0
    stacked = tree.stack([actor.init(i) for i in range(3)])
    mu3, _ = torch.func.vmap(lambda q: actor(q, *x))(stacked)
    torch.testing.assert_close(mu3[1], actor(actor.init(1), *x)[0], atol=1e-5, rtol=1e-5)
    torch._dynamo.reset()
    compiled = torch.compile(actor, fullgraph=True, backend="aot_eager")
    mu_c, std_c = compiled(p, *x)
    mu, std = actor(p, *x)
    torch.testing.assert_close(mu_c, mu, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(std_c, std, atol=1e-5, rtol=1e-5)


def test_keyed_online_dt_with_inference_wrapper():
    net = OnlineDTActor(S, A, NODROP)
    module = Keyed(net, ["observation", "action", "return_to_go"], ["loc", "scale"])
    policy = ProbabilisticActor(
        module, ["loc", "scale"], ["action"], distribution_class=TanhNormal, return_log_prob=True
    )
    wrapper = DecisionTransformerInferenceWrapper(policy, inference_context=3)
    params = wrapper.init(0)
    obs, act, rtg = _inputs(batch=(5,))
    rec = Record({"observation": obs, "action": act, "return_to_go": rtg}, batch_ndim=1)
    out = wrapper(params, rec, interaction="deterministic")
    assert out["action"].shape == (5, A) and out["return_to_go"].shape == (5, 1)
    assert (out["action"].abs() <= 1).all()
    torch.manual_seed(0)
    sampled = wrapper(params, rec, interaction="random")
    assert torch.isfinite(sampled["action_log_prob"]).all()


# ------------------------------------------------------------------ parity with TorchRL (GPT2Model)


def _torchrl_dt_modules():
    pytest.importorskip("torchrl", reason="TorchRL's DecisionTransformer is the reference")
    pytest.importorskip(
        "transformers", reason="TorchRL's DecisionTransformer wraps transformers' GPT2Model"
    )
    from torchrl.modules import DecisionTransformer as TorchRLDT
    from torchrl.modules import DTActor as TorchRLDTActor
    from torchrl.modules import OnlineDTActor as TorchRLOnlineDTActor

    return TorchRLDT, TorchRLDTActor, TorchRLOnlineDTActor


def _trl_config(cfg: DTConfig) -> dict:
    """TorchRL's ``DecisionTransformer.DTConfig`` fields for a funcrl :class:`DTConfig`."""
    return {
        "n_embd": cfg.n_embd,
        "n_layer": cfg.n_layer,
        "n_head": cfg.n_head,
        "n_inner": cfg.n_inner,
        "activation": cfg.activation,
        "n_positions": cfg.n_positions,
        "resid_pdrop": cfg.resid_pdrop,
        "attn_pdrop": cfg.attn_pdrop,
    }


def _randomize_(module: torch.nn.Module, seed: int) -> None:
    # GPT-2 inits LayerNorms to (1, 0) and biases to 0: perturb every parameter so that a
    # swapped or transposed weight cannot hide.
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))


def _linear(m: torch.nn.Linear) -> dict:
    return {"weight": m.weight.detach().clone(), "bias": m.bias.detach().clone()}


def _conv1d(m: torch.nn.Module) -> dict:
    # transformers' Conv1D stores the weight as [in, out]: nn.Linear's transpose.
    return {"weight": m.weight.detach().T.clone(), "bias": m.bias.detach().clone()}


def _ln(m: torch.nn.LayerNorm) -> dict:
    return {"weight": m.weight.detach().clone(), "bias": m.bias.detach().clone()}


def _dt_params_from_torchrl(dt: torch.nn.Module) -> dict:
    """funcrl :class:`DecisionTransformer` params holding a TorchRL ``DecisionTransformer``'s
    weights (GPT2Model's unused token embedding ``wte`` is dropped)."""
    gpt = dt.transformer
    blocks = [
        {
            "ln_1": _ln(b.ln_1),
            "attn": {"c_attn": _conv1d(b.attn.c_attn), "c_proj": _conv1d(b.attn.c_proj)},
            "ln_2": _ln(b.ln_2),
            "mlp": {"c_fc": _conv1d(b.mlp.c_fc), "c_proj": _conv1d(b.mlp.c_proj)},
        }
        for b in gpt.h
    ]
    return {
        "transformer": {
            "wpe": gpt.wpe.weight.detach().clone(),
            "h": blocks,
            "ln_f": _ln(gpt.ln_f),
        },
        "embed_return": _linear(dt.embed_return),
        "embed_state": _linear(dt.embed_state),
        "embed_action": _linear(dt.embed_action),
        "embed_ln": _ln(dt.embed_ln),
    }


def _trl_inputs(batch, steps, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(
        torch.randn(*batch, steps, d, generator=g, dtype=torch.float64).to(dtype) for d in (S, A, 1)
    )


_PARITY_CFGS = {
    "relu": NODROP,
    "gelu-default-inner": dataclasses.replace(NODROP, activation="gelu", n_inner=None),
    "tanh-1layer-4heads": dataclasses.replace(NODROP, activation="tanh", n_layer=1, n_head=4),
    "gelu_new": dataclasses.replace(NODROP, activation="gelu_new"),  # GPT-2's default
}


@pytest.mark.torchrl
@pytest.mark.parametrize("name", sorted(_PARITY_CFGS))
@pytest.mark.parametrize(
    "dtype,batch",
    [(torch.float32, (3,)), (torch.float64, (3,)), (torch.float32, (2, 3)), (torch.float64, ())],
)
def test_decision_transformer_matches_torchrl(name, dtype, batch):
    TorchRLDT, _, _ = _torchrl_dt_modules()
    cfg = _PARITY_CFGS[name]
    torch.manual_seed(0)
    ref = TorchRLDT(S, A, _trl_config(cfg)).to(dtype).eval()
    _randomize_(ref, 1)
    params = _dt_params_from_torchrl(ref)
    obs, act, rtg = _trl_inputs(batch, T, dtype)
    with torch.no_grad():
        expected = ref(obs, act, rtg)
    out = DecisionTransformer(S, A, cfg)(params, obs, act, rtg)
    assert out.shape == expected.shape == (*batch, T, cfg.n_embd)
    atol = 1e-5 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(out, expected, atol=atol, rtol=0)


@pytest.mark.torchrl
def test_decision_transformer_grads_match_torchrl():
    TorchRLDT, _, _ = _torchrl_dt_modules()
    torch.manual_seed(0)
    ref = TorchRLDT(S, A, _trl_config(NODROP)).double().eval()
    _randomize_(ref, 2)
    params = _dt_params_from_torchrl(ref)
    obs, act, rtg = _trl_inputs((3,), T, torch.float64, seed=1)
    dt = DecisionTransformer(S, A, NODROP)

    def loss(p):  # a non-symmetric scalar, so that every output coordinate matters
        out = dt(p, obs, act, rtg)
        return (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum()

    grads = torch.func.grad(loss)(params)
    out = ref(obs, act, rtg)
    ref.zero_grad()
    (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
    gpt = ref.transformer
    g = grads["transformer"]
    pairs = {
        "wpe": (g["wpe"], gpt.wpe.weight.grad),
        "ln_f.weight": (g["ln_f"]["weight"], gpt.ln_f.weight.grad),
        "embed_state.weight": (grads["embed_state"]["weight"], ref.embed_state.weight.grad),
        "embed_return.bias": (grads["embed_return"]["bias"], ref.embed_return.bias.grad),
        "embed_action.weight": (grads["embed_action"]["weight"], ref.embed_action.weight.grad),
        "embed_ln.weight": (grads["embed_ln"]["weight"], ref.embed_ln.weight.grad),
    }
    for i, blk in enumerate(gpt.h):
        pairs[f"h.{i}.attn.c_attn.weight"] = (
            g["h"][i]["attn"]["c_attn"]["weight"],
            blk.attn.c_attn.weight.grad.T,
        )
        pairs[f"h.{i}.attn.c_proj.bias"] = (
            g["h"][i]["attn"]["c_proj"]["bias"],
            blk.attn.c_proj.bias.grad,
        )
        pairs[f"h.{i}.mlp.c_fc.weight"] = (
            g["h"][i]["mlp"]["c_fc"]["weight"],
            blk.mlp.c_fc.weight.grad.T,
        )
        pairs[f"h.{i}.mlp.c_proj.weight"] = (
            g["h"][i]["mlp"]["c_proj"]["weight"],
            blk.mlp.c_proj.weight.grad.T,
        )
        pairs[f"h.{i}.ln_1.bias"] = (g["h"][i]["ln_1"]["bias"], blk.ln_1.bias.grad)
        pairs[f"h.{i}.ln_2.weight"] = (g["h"][i]["ln_2"]["weight"], blk.ln_2.weight.grad)
    # Positions past 3T get no gradient in either.
    assert (gpt.wpe.weight.grad[3 * T :] == 0).all()
    for key, (got, want) in pairs.items():
        assert want.abs().sum() > 0, key
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-8, msg=key)


@pytest.mark.torchrl
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dt_actor_matches_torchrl(dtype):
    _, TorchRLDTActor, _ = _torchrl_dt_modules()
    torch.manual_seed(0)
    ref = TorchRLDTActor(S, A, _trl_config(NODROP)).to(dtype).eval()
    _randomize_(ref, 3)
    params = {
        "transformer": _dt_params_from_torchrl(ref.transformer),
        "action_layer": _linear(ref.action_layer),
    }
    obs, act, rtg = _trl_inputs((3,), T, dtype, seed=2)
    with torch.no_grad():
        expected = ref(obs, act, rtg)
    out = DTActor(S, A, NODROP)(params, obs, act, rtg)
    assert out.shape == (3, T, A)
    atol = 1e-5 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(out, expected, atol=atol, rtol=0)


@pytest.mark.torchrl
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_online_dt_actor_matches_torchrl(dtype):
    _, _, TorchRLOnlineDTActor = _torchrl_dt_modules()
    torch.manual_seed(0)
    ref = TorchRLOnlineDTActor(S, A, _trl_config(NODROP)).to(dtype).eval()
    _randomize_(ref, 4)
    params = {
        "transformer": _dt_params_from_torchrl(ref.transformer),
        "action_layer_mean": _linear(ref.action_layer_mean),
        "action_layer_logstd": _linear(ref.action_layer_logstd),
    }
    obs, act, rtg = _trl_inputs((3,), T, dtype, seed=3)
    actor = OnlineDTActor(S, A, NODROP)
    assert (actor.log_std_min, actor.log_std_max) == (ref.log_std_min, ref.log_std_max)
    mu_ref, std_ref = ref(obs, act, rtg)
    mu, std = actor(params, obs, act, rtg)
    atol = 1e-5 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(mu, mu_ref.detach(), atol=atol, rtol=0)
    torch.testing.assert_close(std, std_ref.detach(), atol=atol, rtol=0)
    # Gradients through both heads and the trunk.
    (mu_ref.sum() + std_ref.sum()).backward()

    def loss(p):
        m, s = actor(p, obs, act, rtg)
        return m.sum() + s.sum()

    g = torch.func.grad(loss)(params)
    gtol = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 1e-10, "rtol": 1e-8}
    torch.testing.assert_close(
        g["action_layer_logstd"]["weight"], ref.action_layer_logstd.weight.grad, **gtol
    )
    torch.testing.assert_close(
        g["action_layer_mean"]["bias"], ref.action_layer_mean.bias.grad, **gtol
    )
    torch.testing.assert_close(
        g["transformer"]["transformer"]["h"][0]["attn"]["c_attn"]["weight"],
        ref.transformer.transformer.h[0].attn.c_attn.weight.grad.T,
        **gtol,
    )
    torch.testing.assert_close(
        g["transformer"]["embed_state"]["weight"], ref.transformer.embed_state.weight.grad, **gtol
    )
