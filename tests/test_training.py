"""funcrl.training.update: a pure step that trains, delays, updates targets, compiles and vmaps."""

from __future__ import annotations

import pytest
import torch

from funcrl import Record, optim, targets, testing, tree
from funcrl.training import TrainState, total_loss, update

W_TRUE = torch.tensor([1.0, -2.0, 0.5])


def regression_batch(seed=0, n=32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    return Record({"x": x, "y": (x @ W_TRUE + 0.3).unsqueeze(-1)}, batch_ndim=1)


def mse_loss(params, batch):
    pred = batch["x"] @ params["w"].unsqueeze(-1) + params["b"]
    return {"loss_mse": (pred - batch["y"]).pow(2).mean(), "pred_mean": pred.mean()}


def actor_critic_loss(params, batch):
    # Two independent quadratic problems; the critic's loss reads its (constant) target.
    x = batch["x"]
    target_pred = (x @ params["target_critic"]).detach()
    return {
        "loss_actor": (x @ params["actor"] - 1.0).pow(2).mean(),
        "loss_critic": (x @ params["critic"] - batch["y"].squeeze(-1)).pow(2).mean()
        + 0.0 * target_pred.mean(),
        "td_error": target_pred.abs().mean(),
    }


def ac_params():
    return {
        "actor": torch.zeros(3),
        "critic": torch.zeros(3),
        "target_critic": torch.ones(3),
        "frozen": torch.full((2,), 7.0),
    }


def test_loss_decreases_on_tiny_regression():
    trainer = update(mse_loss, optim.adam(0.05), trainable=("w", "b"))
    params = {"w": torch.zeros(3), "b": torch.zeros(())}
    state = trainer.init(params)
    assert (
        isinstance(state, TrainState) and state.step.item() == 0 and state.step.dtype == torch.int64
    )
    batch = regression_batch()
    first = mse_loss(params, batch)["loss_mse"].item()
    losses = []
    for _ in range(150):
        params, state, metrics = trainer.step(params, state, batch)
        losses.append(metrics["loss_mse"].item())
    assert state.step.item() == 150
    assert set(metrics) == {"loss_mse", "pred_mean"}
    assert not any(m.requires_grad for m in metrics.values())
    assert losses[-1] < 1e-2 * first
    early = losses[:40]  # Adam oscillates slightly once close to the optimum
    assert all(b < a for a, b in zip(early, early[1:]))
    testing.assert_trees_all_close(params["w"], W_TRUE, atol=0.05)


def test_untrained_keys_pass_through():
    trainer = update(actor_critic_loss, optim.sgd(0.1), trainable=("actor", "critic"))
    params = ac_params()
    out, _, _ = trainer.step(params, trainer.init(params), regression_batch())
    assert out["frozen"] is params["frozen"] and out["target_critic"] is params["target_critic"]
    assert not torch.equal(out["actor"], params["actor"])
    assert torch.equal(params["actor"], torch.zeros(3))  # inputs untouched


def test_every_delays_updates_and_optimizer_state():
    opt = {"actor": optim.adam(0.1), "critic": optim.adam(0.1)}
    trainer = update(actor_critic_loss, opt, trainable=("actor", "critic"), every={"actor": 3})
    params = ac_params()
    state = trainer.init(params)
    batch = regression_batch()
    for step in range(7):
        new, new_state, _ = trainer.step(params, state, batch)
        actor_moved = not torch.equal(new["actor"], params["actor"])
        assert actor_moved == (step % 3 == 0), step
        assert not torch.equal(new["critic"], params["critic"])
        actor_count = new_state.opt.inner["actor"][0].count.item()
        assert actor_count == step // 3 + 1  # Adam's count only advances on update steps
        assert new_state.opt.inner["critic"][0].count.item() == step + 1
        params, state = new, new_state


def test_target_polyak_applied():
    trainer = update(
        actor_critic_loss,
        optim.sgd(0.1),
        trainable=("actor", "critic"),
        targets={"target_critic": "critic"},
        tau=0.1,
    )
    params = ac_params()
    state = trainer.init(params)
    for _ in range(3):
        new, state, _ = trainer.step(params, state, regression_batch())
        want = targets.polyak(params["target_critic"], new["critic"], 0.1)
        testing.assert_trees_all_close(new["target_critic"], want, rtol=1e-6, atol=1e-7)
        assert not torch.equal(new["target_critic"], params["target_critic"])
        params = new


def test_target_every_and_hard_target_period():
    kwargs = dict(trainable=("actor", "critic"), targets={"target_critic": "critic"})
    soft = update(actor_critic_loss, optim.sgd(0.1), tau=0.5, target_every=2, **kwargs)
    hard = update(actor_critic_loss, optim.sgd(0.1), hard_target_period=3, **kwargs)
    for trainer, moves in [(soft, lambda s: s % 2 == 0), (hard, lambda s: (s + 1) % 3 == 0)]:
        params = ac_params()
        state = trainer.init(params)
        for step in range(7):
            new, state, _ = trainer.step(params, state, regression_batch(step))
            moved = not torch.equal(new["target_critic"], params["target_critic"])
            assert moved == moves(step), step
            if trainer is hard and moved:
                testing.assert_trees_all_equal(new["target_critic"], new["critic"])
            params = new


def test_argument_errors():
    with pytest.raises(KeyError, match=r"every= names \['critic'\], which are not trainable"):
        update(actor_critic_loss, optim.sgd(0.1), trainable=("actor",), every={"critic": 2})
    with pytest.raises(
        KeyError, match="target 'target_critic' follows 'critic', which is not trainable"
    ):
        update(
            actor_critic_loss,
            optim.sgd(0.1),
            trainable=("actor",),
            targets={"target_critic": "critic"},
        )
    trainer = update(
        actor_critic_loss, optim.sgd(0.1), trainable=("actor", "critic"), every={"actor": 2}
    )
    params = ac_params()
    with pytest.raises(TypeError, match="every= needs a dict of optimizers"):
        trainer.step(params, trainer.init(params), regression_batch())
    t2 = update(actor_critic_loss, optim.sgd(0.1), trainable=("actor", "policy"))
    with pytest.raises(KeyError, match=r"params lack keys \['policy'\]"):
        t2.init(params)
    with pytest.raises(TypeError, match="params must be a dict, got list"):
        t2.init([params])


def test_total_loss():
    losses = {"loss_a": torch.tensor(1.0), "loss_b": torch.tensor(2.5), "alpha": torch.tensor(9.0)}
    assert total_loss(losses).item() == 3.5
    assert total_loss({"loss": torch.tensor(4.0), "entropy": torch.tensor(1.0)}).item() == 4.0
    with pytest.raises(ValueError, match=r"no 'loss' or 'loss_\*' entry in \['alpha'\]"):
        total_loss({"alpha": torch.tensor(1.0)})


def test_step_compiles_without_graph_breaks():
    trainer = update(
        actor_critic_loss,
        {
            "actor": optim.adam(0.05),
            "critic": optim.chain(optim.clip_by_global_norm(1.0), optim.adam(0.05)),
        },
        trainable=("actor", "critic"),
        targets={"target_critic": "critic"},
        every={"actor": 2},
        tau=0.05,
    )
    params = ac_params()
    state = trainer.init(params)
    batch = regression_batch()
    torch._dynamo.reset()
    # fullgraph=True raises on any graph break; the default backend (inductor) as users run it
    compiled = torch.compile(trainer.step, fullgraph=True)
    pe, se, pc, sc = params, state, params, state
    for _ in range(4):
        pe, se, me = trainer.step(pe, se, batch)
        pc, sc, mc = compiled(pc, sc, batch)
    testing.assert_trees_all_close(pc, pe, rtol=1e-5, atol=1e-6)
    testing.assert_trees_all_close(sc, se, rtol=1e-5, atol=1e-6)
    testing.assert_trees_all_close(mc, me, rtol=1e-5, atol=1e-6)


def test_step_vmapped_over_seeds_equals_loop():
    trainer = update(
        actor_critic_loss,
        {"actor": optim.adam(0.05), "critic": optim.sgd(0.1, momentum=0.9)},
        trainable=("actor", "critic"),
        targets={"target_critic": "critic"},
        every={"actor": 2},
        tau=0.2,
    )
    seeds = range(3)
    params = [tree.map(lambda x, s=s: x + s, ac_params()) for s in seeds]
    states = [trainer.init(p) for p in params]
    batches = [regression_batch(s) for s in seeds]
    bp, bs, bb = tree.stack(params), tree.stack(states), Record.stack(batches)
    vstep = torch.func.vmap(trainer.step, randomness="different")
    for _ in range(3):
        bp, bs, bm = vstep(bp, bs, bb)
        results = [trainer.step(params[i], states[i], batches[i]) for i in seeds]
        params = [r[0] for r in results]
        states = [r[1] for r in results]
    testing.assert_trees_all_close(bp, tree.stack(params), rtol=1e-5, atol=1e-6)
    testing.assert_trees_all_close(bs, tree.stack(states), rtol=1e-5, atol=1e-6)
    testing.assert_trees_all_close(bm, tree.stack([r[2] for r in results]), rtol=1e-5, atol=1e-6)
    assert bs.step.tolist() == [3, 3, 3]


def test_tensor_tau_per_seed_under_vmap():
    seeds = 2
    taus = torch.tensor([0.0, 1.0])

    def step(params, state, batch, tau):
        trainer = update(
            actor_critic_loss,
            optim.sgd(0.1),
            trainable=("actor", "critic"),
            targets={"target_critic": "critic"},
            tau=tau,
        )
        return trainer.step(params, state, batch)

    init = update(actor_critic_loss, optim.sgd(0.1), trainable=("actor", "critic")).init
    p = tree.stack([ac_params()] * seeds)
    s = tree.stack([init(ac_params())] * seeds)
    b = Record.stack([regression_batch()] * seeds)
    out, _, _ = torch.func.vmap(step)(p, s, b, taus)
    testing.assert_trees_all_equal(out["target_critic"][0], torch.ones(3))  # tau 0 keeps
    testing.assert_trees_all_close(out["target_critic"][1], out["critic"][1])  # tau 1 copies


def test_update_project_hook_keeps_params_in_bounds():
    # A loss pushing "w" up forever; project clamps it at 1 after every optimizer step.
    def loss_fn(p, batch):
        return {"loss_w": -(p["w"] * batch).sum()}

    def project(p):
        return {**p, "w": p["w"].clamp(max=1.0)}

    from funcrl import optim, training

    trainer = training.update(loss_fn, optim.sgd(0.5), trainable=("w",), project=project)
    params = {"w": torch.zeros(2)}
    state = trainer.init(params)
    for _ in range(5):
        params, state, _ = trainer.step(params, state, torch.ones(2))
    assert torch.equal(params["w"], torch.ones(2))
    # Without the hook the same steps go past the bound: 5 steps of 0.5.
    free = training.update(loss_fn, optim.sgd(0.5), trainable=("w",))
    p2, s2 = {"w": torch.zeros(2)}, None
    s2 = free.init(p2)
    for _ in range(5):
        p2, s2, _ = free.step(p2, s2, torch.ones(2))
    assert torch.allclose(p2["w"], torch.full((2,), 2.5))


def test_step_passes_key_to_the_loss_only_when_given():
    seen = []

    def noisy_loss(params, batch, key=None):
        seen.append(key)
        # The key's words shift the target: a loss that reads its key gives key-dependent grads.
        shift = 0.0 if key is None else key.to(params["w"].dtype).sum() * 1e-9
        return {"loss_w": (params["w"] - 1.0 - shift).pow(2).sum()}

    trainer = update(noisy_loss, optim.sgd(0.1), trainable=("w",))
    params = {"w": torch.zeros(2)}
    state = trainer.init(params)
    trainer.step(params, state, None)
    key = torch.tensor([0, 7], dtype=torch.int64)
    trainer.step(params, state, None, key)
    trainer.step(params, state, None, key=key)
    assert seen[0] is None and seen[1] is key and seen[2] is key
    # A loss without a key parameter still works when no key is given.
    plain = update(mse_loss, optim.sgd(0.1), trainable=("w", "b"))
    p = {"w": torch.zeros(3), "b": torch.zeros(())}
    plain.step(p, plain.init(p), regression_batch())


def test_step_with_key_compiles_and_vmaps():
    def loss_fn(params, batch, key=None):
        return {"loss_w": (params["w"] * batch - key.to(batch.dtype)).pow(2).sum()}

    trainer = update(loss_fn, optim.sgd(0.1), trainable=("w",))
    params = {"w": torch.zeros(2)}
    state = trainer.init(params)
    keys = torch.tensor([[0, 1], [0, 2]], dtype=torch.int64)
    eager = [trainer.step(params, state, torch.ones(2), k)[0]["w"] for k in keys]
    torch._dynamo.reset()
    compiled = torch.compile(trainer.step, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(params, state, torch.ones(2), keys[1])[0]["w"], eager[1])
    stacked = tree.stack([params, params])
    vstate = tree.stack([state, state])
    out = torch.func.vmap(trainer.step)(stacked, vstate, torch.ones(2, 2), keys)[0]["w"]
    torch.testing.assert_close(out, torch.stack(eager))
