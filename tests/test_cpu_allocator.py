"""funcrl.cpu_allocator: the caching CPU allocator reuses freed blocks, changes no value, and
puts torch's allocator back."""

from __future__ import annotations

import threading

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import funcrl
from funcrl import cpu_allocator, pure_train
from funcrl.envs import pure
from funcrl.pure_train import PPOTrainConfig, make_train

FINE_LIMIT = 256 << 10
COARSE_LIMIT = 64 << 20


@pytest.fixture(autouse=True)
def _plain_random(monkeypatch):
    # The eager draws' compiled kernels cost seconds to build in a short test process.
    monkeypatch.setattr(funcrl.random, "_FUSED_ENV", False)


def test_a_freed_block_is_handed_out_again():
    with cpu_allocator.caching():
        assert cpu_allocator.stats().active
        a = torch.empty(1000)
        ptr = a.data_ptr()
        del a
        cached = cpu_allocator.stats().cached_bytes
        assert cached >= 4000
        b = torch.empty(999)  # the same 64-byte class
        assert b.data_ptr() == ptr
        s = cpu_allocator.stats()
        assert s.hits == 1 and s.cached_bytes == cached - 4032
    s = cpu_allocator.stats()
    assert not s.active and s.cached_bytes == 0
    del b  # allocated inside, freed after: back to the system, not to a cache
    assert cpu_allocator.stats().cached_bytes == 0
    torch.empty(1000)
    assert cpu_allocator.stats().hits == 1  # torch's own allocator again


def test_max_cached_bytes_bounds_the_cache():
    with cpu_allocator.caching(max_cached_bytes=0):
        a = torch.empty(1000)
        del a
        assert cpu_allocator.stats().cached_bytes == 0
        torch.empty(1000)
        assert cpu_allocator.stats().hits == 0
    with cpu_allocator.caching(max_cached_bytes=8192):
        xs = [torch.empty(1024) for _ in range(4)]  # 4 x 4096 bytes
        del xs
        assert cpu_allocator.stats().cached_bytes == 8192


def test_blocks_over_64_mib_are_not_cached():
    with cpu_allocator.caching(max_cached_bytes=1 << 30):
        a = torch.empty((COARSE_LIMIT + 4) // 4)
        del a
        assert cpu_allocator.stats().cached_bytes == 0


def test_nested_uses_share_one_activation():
    with cpu_allocator.caching():
        with cpu_allocator.caching(max_cached_bytes=0):
            pass
        assert cpu_allocator.stats().active
        a = torch.empty(100)
        del a
        assert cpu_allocator.stats().cached_bytes > 0  # the outer limit holds
    assert not cpu_allocator.stats().active


def test_the_allocator_is_restored_after_an_error():
    with pytest.raises(KeyError), cpu_allocator.caching():
        raise KeyError("x")
    assert not cpu_allocator.stats().active


def test_values_are_unchanged():
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(128, 64, generator=g), torch.randn(64, 64, generator=g)
    outside = torch.tanh(x @ w).sum(0)
    with cpu_allocator.caching():
        for _ in range(3):
            inside = torch.tanh(x @ w).sum(0)
            assert torch.equal(inside, outside)


def test_a_pure_ppo_iteration_is_bitwise_the_same():
    cfg = PPOTrainConfig(
        total_timesteps=2 * 2 * 8, num_envs=2, num_steps=8, update_epochs=1, num_minibatches=2
    )
    algo = make_train(cfg, pure.make("CartPole-v1"))
    k_init, k_iter = funcrl.random.split(funcrl.random.key(3), 2)
    state = algo.init(k_init)
    ref_state, ref_metrics = algo.iteration(state, k_iter)
    with cpu_allocator.caching():
        for _ in range(2):  # the second run draws on blocks the first freed
            got_state, got_metrics = algo.iteration(state, k_iter)
            for a, b in zip(
                torch.utils._pytree.tree_leaves((got_state, got_metrics)),
                torch.utils._pytree.tree_leaves((ref_state, ref_metrics)),
            ):
                assert torch.equal(a, b)


def test_run_iterations_caches_on_the_cpu_only_when_compiled():
    cfg = PPOTrainConfig(
        total_timesteps=2 * 2 * 8, num_envs=2, num_steps=8, update_epochs=1, num_minibatches=2
    )
    train = make_train(cfg, pure.make("CartPole-v1"))
    key = funcrl.random.key(0)
    active = []

    def cb(i, m):
        active.append(cpu_allocator.stats().active)

    # dynamo alone (the "eager" backend): what is tested is the host loop around the call.
    cached = train(key, compile=True, backend="eager", callback=cb)
    plain = train(key, compile=True, backend="eager", callback=cb, cpu_cache=False)
    eager = train(key, compile=False, callback=cb)
    assert active == [True, True, False, False, False, False]
    assert not cpu_allocator.stats().active
    for a, b in zip(
        torch.utils._pytree.tree_leaves((cached.state, cached.metrics)),
        torch.utils._pytree.tree_leaves((plain.state, plain.metrics)),
    ):
        assert torch.equal(a, b)
    del eager
    assert pure_train.run_iterations.__kwdefaults__["cpu_cache"] is True


def test_threads_allocating_at_once():
    def work(seed, out):
        g = torch.Generator().manual_seed(seed)
        acc = torch.zeros(())
        for n in range(1, 300):
            acc += torch.randn(n, generator=g).sum() + torch.empty(n * 37).numel() * 0
        out[seed] = acc

    ref: dict[int, torch.Tensor] = {}
    for s in range(4):
        work(s, ref)
    got: dict[int, torch.Tensor] = {}
    with cpu_allocator.caching():
        threads = [threading.Thread(target=work, args=(s, got)) for s in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert {s: float(v) for s, v in got.items()} == {s: float(v) for s, v in ref.items()}


def test_out_of_memory_is_a_clear_error():
    with (
        cpu_allocator.caching(),
        pytest.raises(
            RuntimeError,
            match=r"funcrl.cpu_allocator: not enough memory: tried to "
            r"allocate 1125899906842624 bytes",
        ),  # fmt: skip
    ):
        torch.empty(1 << 50, dtype=torch.uint8)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 2 * COARSE_LIMIT))
def test_size_classes(n):
    cls, nbytes = cpu_allocator._size_class(n)
    assert nbytes >= n
    if n <= FINE_LIMIT:
        assert nbytes % 64 == 0 and nbytes - n < 64
    elif n <= COARSE_LIMIT:
        assert nbytes % 64 == 0 and nbytes <= n * 1.125
    else:
        assert cls == cpu_allocator._uncached_class() and nbytes == n
    if n > 1:  # classes grow with the size, and one class is one block size
        prev_cls, prev_bytes = cpu_allocator._size_class(n - 1)
        assert prev_cls <= cls
        assert (prev_cls == cls) == (prev_bytes == nbytes) or cls == cpu_allocator._uncached_class()


def test_a_forked_child_allocates():
    import os

    with cpu_allocator.caching():
        x = torch.ones(1000)
        pid = os.fork()
        if pid == 0:  # the child: allocate, free and reuse through the inherited cache
            ok = False
            try:
                y = torch.ones(1000) * 2
                del y
                ok = float((torch.ones(1000) + x).sum()) == 2000.0
            finally:
                os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
