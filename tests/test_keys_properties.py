"""Explicit keys end to end (issue #14): vmapped populations, N-independence, compiled == eager.

A training step here is the examples' step: split the step key, sample a batch from the replay
buffer with one half and update with the other (``funcrl.training.update``'s ``key``). Tiny nets
(hidden 16), batch 8, so a 100-step loop takes about a second eagerly.

What is bitwise and what is not (CPU, MKL, one thread): a vmapped matmul is one ``bmm`` and a
``bmm`` gives every batch member the same bits whatever the batch size, so seed ``i``'s numbers do
not depend on how many seeds run beside it (tested bitwise, 100 steps). A solo *unbatched* step
runs ``mm`` instead, and MKL's ``mm`` and ``bmm`` kernels round differently for some shapes (e.g.
``[8, 3] @ [3, 16]`` or an output width of 1; square-ish shapes agree), so vmapped vs. solo agree
to float32 rounding (~1e-7 relative per matmul, ~1e-6 on params after one Adam step), not bitwise;
``test_mm_and_bmm_round_differently`` pins that cause. A second cause: torch's CPU elementwise
kernels compute whole blocks of 2 vectors (32 floats with AVX512, 16 with AVX2) with SIMD code
and the rest with scalar code, which round transcendental functions (softplus, exp, tanh) differently, so an
element's bits depend on the tensor's size: seed ``i`` is bitwise independent of ``N`` when each
seed's tensors are whole blocks (batch 32), and within ~1e-7 otherwise (batch 8). Compiled steps
reorder float arithmetic too, so they agree with eager to tolerance.
"""

from __future__ import annotations

import functools

import optree
import pytest
import torch

from funcrl import buffers, optim, sac, td3
from funcrl import random as fr
from funcrl.record import Record

OBS, ACT, BATCH, HIDDEN = 3, 1, 8, (16,)
# Floats torch's CPU elementwise kernels compute as one SIMD block (two vectors); 0 where unknown.
SIMD_BLOCK_FLOATS = {"AVX512": 32, "AVX2": 16}.get(torch.backends.cpu.get_cpu_capability(), 0)


def stack(xs):
    return optree.tree_map(lambda *t: torch.stack(t), *xs, namespace="funcrl")


def member(x, i):
    return optree.tree_map(lambda t: t[i], x, namespace="funcrl")


def make_buffer(key: torch.Tensor, n: int = 32) -> buffers.ReplayState:
    """A buffer of ``n`` random transitions drawn from ``key`` (one seed's replay)."""
    k_obs, k_act, k_rew = fr.split(key, 3)
    obs = fr.normal(k_obs, (n + 1, OBS))
    false = torch.zeros(n, 1, dtype=torch.bool)
    rec = Record(
        {
            "observation": obs[:-1],
            "action": fr.uniform(k_act, (n, ACT), minval=-1.0, maxval=1.0),
            ("next", "observation"): obs[1:],
            ("next", "reward"): fr.normal(k_rew, (n, 1)),
            ("next", "done"): false,
            ("next", "terminated"): false,
        },
        batch_ndim=1,
    )
    return buffers.add(buffers.init(64, rec[0]), rec)


@functools.cache
def algo(name: str):
    """``(init(key) -> params, trainer, step(params, state, buffer, key))`` for SAC or TD3."""
    mod = {"sac": sac, "td3": td3}[name]
    nets = mod.Nets(num_cells=HIDDEN)
    trainer = mod.trainer(optim.adam(1e-3), nets=nets)

    def init(key):
        return mod.init(key, OBS, ACT, nets=nets)

    return init, trainer, make_step(trainer, BATCH)


def make_step(trainer, batch_size: int):
    """The examples' step: sample with one half of the step key, update with the other."""

    def step(params, state, buf, key):
        k_sample, k_update = fr.split(key)
        batch = buffers.sample(buf, batch_size, key=k_sample)
        return trainer.step(params, state, batch, k_update)

    return step


def population(name: str, seed_keys: torch.Tensor):
    """Stacked params, trainer states and buffers, one per seed key."""
    init, trainer, _ = algo(name)
    ps = [init(k) for k in seed_keys]
    return (
        stack(ps),
        stack([trainer.init(p) for p in ps]),
        stack([make_buffer(k) for k in seed_keys]),
    )


def run(step, params, state, buf, seed_keys, steps):
    """``steps`` updates; step ``t`` of a seed uses ``fold_in(seed_key, t)``."""
    for t in range(steps):
        params, state, _ = step(params, state, buf, fr.fold_in(seed_keys, t))
    return params, state


def vmapped(name: str):
    _, _, step = algo(name)
    return torch.func.vmap(
        lambda p, s, b, k, t: step(p, s, b, fr.fold_in(k, t)), in_dims=(0, 0, 0, 0, None)
    )


def run_population(name, seed_keys, steps, fn=None):
    params, state, buf = population(name, seed_keys)
    fn = fn or vmapped(name)
    for t in range(steps):
        params, state, _ = fn(params, state, buf, seed_keys, torch.tensor(t))
    return params, state


def assert_trees(a, b, *, bitwise: bool, rtol: float = 0.0, atol: float = 0.0):
    la, treedef_a = optree.tree_flatten(a, namespace="funcrl")
    lb, treedef_b = optree.tree_flatten(b, namespace="funcrl")
    assert treedef_a == treedef_b
    for x, y in zip(la, lb):
        if bitwise:
            assert torch.equal(x, y), float((x.double() - y.double()).abs().max())
        else:
            torch.testing.assert_close(x, y, rtol=rtol, atol=atol)


def test_mm_and_bmm_round_differently():
    # The reason solo and vmapped steps are not bitwise equal: vmap batches mm into bmm, which
    # gives the same bits for every batch size, while mm itself takes another MKL kernel.
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(3, 8, 3, generator=g), torch.randn(3, 3, 16, generator=g)
    v = torch.func.vmap(torch.mm)(x, w)
    assert torch.equal(v, torch.bmm(x, w))
    assert torch.equal(v[1:2], torch.func.vmap(torch.mm)(x[1:2], w[1:2]))
    solo = torch.stack([x[i] @ w[i] for i in range(3)])
    torch.testing.assert_close(solo, v, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["sac", "td3"])
def test_vmapped_update_over_keys_equals_solo_updates(name):
    init, trainer, step = algo(name)
    keys = fr.split(fr.key(0), 3)
    params, state, buf = population(name, keys)
    step_keys = torch.stack([fr.fold_in(k, 0) for k in keys])
    out = torch.func.vmap(step)(params, state, buf, step_keys)
    for i in range(3):
        p, s, b = init(keys[i]), trainer.init(init(keys[i])), make_buffer(keys[i])
        # A population of one: the same kernels as a population of three (bmm), bitwise where
        # its [B, 1] tensors (8 or 24 floats) are all below one SIMD block (AVX512's 32 floats:
        # scalar code for both; see the N-independence test). With AVX2's 16-float blocks the
        # population of three runs its first 16 floats as SIMD code: equal to float32 rounding.
        one = torch.func.vmap(step)(*(stack([x]) for x in (p, s, b)), step_keys[i : i + 1])
        bitwise = 3 * BATCH < SIMD_BLOCK_FLOATS
        assert_trees(member(one, 0), member(out, i), bitwise=bitwise, rtol=1e-5, atol=1e-6)
        # Unbatched: mm instead of bmm (see the module docstring), float32 rounding only.
        solo = step(p, s, b, step_keys[i])
        assert_trees(solo, member(out, i), bitwise=False, rtol=1e-5, atol=1e-6)
    # Different seeds really differ (the test would pass trivially otherwise).
    w = out[0]["qvalue"]["layers"][0]["weight"]
    assert not torch.equal(w[0], w[1])


def test_elementwise_bits_depend_on_position_in_the_tensor():
    # Why N-independence needs per-seed sizes that are multiples of 32: torch's CPU elementwise
    # kernels run the SIMD path (SLEEF) on whole blocks of 2 vectors (32 floats with AVX512) and
    # scalar libm code on the rest, and the two round transcendental functions differently.
    x = torch.linspace(-3.0, 3.0, 64)
    f = torch.nn.functional.softplus
    assert torch.equal(f(x)[:32], f(x[:32].clone()))  # same path for every element
    if torch.backends.cpu.get_cpu_capability() == "AVX512":
        assert not torch.equal(f(x)[:16], f(x[:16].clone()))  # 16 elements: all scalar


@pytest.mark.parametrize("batch", [32, 8])
def test_seed_trajectory_does_not_depend_on_population_size(batch):
    # Seed i's key is child i of one root key: split's child i is the same for every count.
    root = fr.key(42)
    assert torch.equal(fr.split(root, 2), fr.split(root, 4)[:2])
    _, trainer, _ = algo("sac")
    step = make_step(trainer, batch)
    fn = torch.func.vmap(
        lambda p, s, b, k, t: step(p, s, b, fr.fold_in(k, t)), in_dims=(0, 0, 0, 0, None)
    )
    p2, s2 = run_population("sac", fr.split(root, 2), 100, fn)
    p4, s4 = run_population("sac", fr.split(root, 4), 100, fn)
    for i in (0, 1):
        # Batch 32: every per-seed elementwise op covers whole SIMD blocks, so seed i's bits are
        # the same with 2 or 4 seeds. Batch 8: [8, 1] tensors (16 or 32 floats in all) take the
        # scalar or the SIMD path depending on N: ulp differences, ~6e-8 after 100 steps.
        bitwise = batch % 32 == 0
        assert_trees(
            member((p2, s2), i), member((p4, s4), i), bitwise=bitwise, rtol=1e-4, atol=1e-6
        )
    assert int(s4.step[3]) == 100
    # The seeds trained apart: seed 0 and seed 1 ended somewhere else.
    assert not torch.equal(
        p4["actor"]["layers"][0]["weight"][0], p4["actor"]["layers"][0]["weight"][1]
    )


def test_compiled_vmapped_sac_matches_solo_and_eager_over_100_steps():
    # One compile (aot_eager: the captured aten graph, seconds rather than inductor's minutes on
    # a small CI machine) serves both checks.
    torch._dynamo.reset()
    init, trainer, step = algo("sac")
    keys = fr.split(fr.key(1), 3)
    fn = torch.compile(vmapped("sac"), fullgraph=True, backend="aot_eager")
    params, state, buf = population("sac", keys)
    out = fn(params, state, buf, keys, torch.tensor(0))
    for i in range(3):
        p = init(keys[i])
        solo = step(p, trainer.init(p), make_buffer(keys[i]), fr.fold_in(keys[i], 0))
        assert_trees(solo, member(out, i), bitwise=False, rtol=1e-5, atol=1e-6)
    compiled = run_population("sac", keys, 100, fn)
    eager = run_population("sac", keys, 100)
    assert int(compiled[1].step[0]) == 100
    # 100 Adam steps of float32 rounding differences: agreement to ~1e-4 is what survives.
    assert_trees(eager, compiled, bitwise=False, rtol=1e-4, atol=1e-5)


def test_jitted_vmapped_td3_matches_solo_updates():
    # funcrl.jit's traced graph (TD3's delayed actor is a torch.where on the step counter).
    from funcrl.jit import jit

    init, trainer, step = algo("td3")
    keys = fr.split(fr.key(2), 3)
    fn = jit(vmapped("td3"), backend="eager")
    params, state, buf = population("td3", keys)
    for t in range(2):  # step 0 moves the actor, step 1 does not
        params, state, _ = fn(params, state, buf, keys, torch.tensor(t))
    for i in range(3):
        p = init(keys[i])
        p, s = run(step, p, trainer.init(p), make_buffer(keys[i]), keys[i], 2)
        assert_trees((p, s), member((params, state), i), bitwise=False, rtol=1e-5, atol=1e-6)
    assert len(fn.cache) == 1


def test_kernel_runs_under_grad_with_an_ordinary_key(monkeypatch):
    # A loss's key is an ordinary tensor under grad: its draws run as funcrl.random's compiled
    # kernel (outside the transform) rather than ~150 transformed ops, with the same bits.
    monkeypatch.setattr(fr, "_FUSED_ENV", True)  # conftest turns the kernel off elsewhere
    k = fr.key(4)
    seen = []

    def f(x, key=k):  # the trainer's pattern: the loss closes over the step key
        seen.append(fr.fused_enabled(key, 12))
        return (x * fr.normal(key, (12,))).sum()

    g = torch.func.grad(f)(torch.ones(12))
    gv = torch.func.vmap(torch.func.grad(f))(torch.ones(2, 12))
    gb = torch.func.vmap(torch.func.grad(f))(torch.ones(2, 12), torch.stack([k, k]))
    # A batched key takes the plain ops; so does a key passed *through* grad, which wraps it.
    assert seen == [True, True, False]
    monkeypatch.setattr(fr, "_FUSED_ENV", False)
    plain = fr.normal(k, (12,))
    assert torch.equal(g, plain) and torch.equal(gv, plain.expand(2, 12))
    assert torch.equal(gb, plain.expand(2, 12))
