"""funcrl.autodiff.grad: the eager fast path against torch.func.grad, and where it must not apply."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from funcrl import Record, autodiff, sac, tree
from funcrl.nn import MLP, Ensemble
from funcrl.nn.ensemble import vmap_members


def _sac_setup(seed=0, batch=16):
    params = sac.init(seed, 5, 2, nets=sac.Nets(num_cells=(16, 16)))
    g = torch.Generator().manual_seed(seed)
    rec = Record(
        {
            "observation": torch.randn(batch, 5, generator=g),
            "action": torch.rand(batch, 2, generator=g) * 2 - 1,
            "next": {
                "observation": torch.randn(batch, 5, generator=g),
                "reward": torch.randn(batch, 1, generator=g),
                "terminated": torch.rand(batch, 1, generator=g) < 0.2,
            },
        },
        batch_ndim=1,
    )
    keys = ("actor", "qvalue", "log_alpha")
    nets = sac.Nets(num_cells=(16, 16))

    def objective(p, batch):
        losses = sac.loss({**params, **p}, batch, nets=nets)
        total = losses["loss_actor"] + losses["loss_qvalue"] + losses["loss_alpha"]
        return total, losses

    return {k: params[k] for k in keys}, rec, objective


def test_fast_path_equals_torch_func_grad_bitwise():
    p, rec, objective = _sac_setup()
    assert autodiff.uses_fast_path(tree.leaves(p))
    torch.manual_seed(3)
    g_fast, aux_fast = autodiff.grad(objective, has_aux=True)(p, rec)
    torch.manual_seed(3)
    g_ref, aux_ref = torch.func.grad(objective, has_aux=True)(p, rec)
    assert tree.same_structure(g_fast, g_ref)
    for a, b in zip(tree.leaves(g_fast), tree.leaves(g_ref)):
        assert torch.equal(a, b)
    for k in aux_ref:
        assert torch.equal(aux_fast[k], aux_ref[k]), k
        assert not aux_fast[k].requires_grad
    # The caller's params are untouched: no grad flag, no .grad.
    assert all(not t.requires_grad and t.grad is None for t in tree.leaves(p))


def test_unused_leaves_get_zero_gradients_and_outer_no_grad_is_ignored():
    params = {"used": torch.tensor([1.0, 2.0]), "unused": torch.ones(3)}

    def f(p):
        return (p["used"] ** 2).sum()

    with torch.no_grad():
        g = autodiff.grad(f)(params)
    assert torch.equal(g["used"], torch.tensor([2.0, 4.0]))
    assert torch.equal(g["unused"], torch.zeros(3))
    # A loss that depends on no param at all: zeros everywhere, like torch.func.grad.
    g = autodiff.grad(lambda p: torch.tensor(1.0))(params)
    assert all(torch.equal(t, torch.zeros_like(t)) for t in tree.leaves(g))


def test_errors_name_the_problem():
    params = {"w": torch.ones(3)}
    with pytest.raises(ValueError, match="0-d tensor loss, got \\(3,\\)"):
        autodiff.grad(lambda p: p["w"] * 2)(params)
    with pytest.raises(TypeError, match="must return \\(loss, aux\\)"):
        autodiff.grad(lambda p: p["w"].sum(), has_aux=True)(params)


def test_falls_back_to_torch_func_grad_under_vmap():
    # vmap over seeds: each seed's gradient equals the unbatched one.
    w = torch.randn(4, 3)
    x = torch.randn(4, 3)

    def f(p, x):
        return (p["w"] * x).pow(2).sum()

    batched = torch.func.vmap(autodiff.grad(f))({"w": w}, x)
    for i in range(4):
        assert torch.allclose(batched["w"][i], autodiff.grad(f)({"w": w[i]}, x[i])["w"])
    assert torch.allclose(batched["w"], 2 * w * x * x)


def test_falls_back_when_params_require_grad_so_meta_gradients_flow():
    # Differentiating through one SGD step (a meta-gradient) needs the inner grad in the graph.
    w = torch.tensor([1.0, -2.0], requires_grad=True)
    assert not autodiff.uses_fast_path([w])

    def inner(p):
        return (p["w"] ** 3).sum()

    g = autodiff.grad(inner)({"w": w})
    w_new = w - 0.1 * g["w"]
    (meta,) = torch.autograd.grad(w_new.sum(), w)
    # d/dw (w - 0.1 * 3 w^2) = 1 - 0.6 w
    assert torch.allclose(meta, 1 - 0.6 * w.detach())


def test_compiles_fullgraph():
    p, rec, objective = _sac_setup(batch=8)
    fn = torch.compile(autodiff.grad(objective, has_aux=True), fullgraph=True, backend="eager")
    torch.manual_seed(0)
    g_c, _ = fn(p, rec)
    torch.manual_seed(0)
    g_e, _ = autodiff.grad(objective, has_aux=True)(p, rec)
    assert tree.allclose(g_c, g_e, rtol=1e-5, atol=1e-6)


def test_vmap_members_equals_torch_func_vmap():
    net = MLP(3, 2, num_cells=(8,))
    stacked = Ensemble(net, 4).init(0)
    x = torch.randn(5, 3)
    ref = torch.func.vmap(net, in_dims=(0, None))(stacked, x)
    assert torch.equal(vmap_members(net, stacked, x), ref)
    xs = torch.randn(4, 5, 3)
    ref0 = torch.func.vmap(net)(stacked, xs)
    assert torch.equal(vmap_members(net, stacked, xs, in_dims=0), ref0)
    # Nested: vmapped members inside a vmap over seeds.
    seeds = tree.stack([stacked, stacked])
    out = torch.func.vmap(partial(vmap_members, net))(seeds, torch.stack([x, x]))
    assert torch.equal(out[0], ref) and torch.equal(out[1], ref)


def test_foreach_paths_fall_back_under_vmap():
    # Adam(foreach=True) and Polyak take torch._foreach_* kernels, which vmap cannot batch; under
    # vmap they must take the per-leaf path and give each seed its unbatched result.
    from funcrl import optim, targets

    net = MLP(3, 2, num_cells=(4,))
    seeds = tree.stack([net.init(s) for s in range(3)])
    grads = tree.map(lambda t: torch.randn_like(t), seeds)
    opt = optim.adam(1e-2, foreach=True)

    def one(p, g, target):
        upd, st = opt.update(g, opt.init(p), p)
        new = optim.apply_updates(p, upd)
        return new, targets.polyak(target, new, 0.1)

    targets_ = tree.map(lambda t: t * 0.5, seeds)
    batched = torch.func.vmap(one)(seeds, grads, targets_)
    for i in range(3):
        pick = lambda t, i=i: t[i]  # noqa: E731
        ref = one(tree.map(pick, seeds), tree.map(pick, grads), tree.map(pick, targets_))
        assert tree.allclose(tree.map(pick, batched), ref, rtol=1e-6, atol=1e-7)
    assert not tree.any_batched(seeds)
